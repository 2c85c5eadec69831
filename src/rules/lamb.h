/* lamb.h: LAMB, Layer-wise Adaptive Moments for Batch training (You et al.
 * 2019, "Large Batch Optimization for Deep Learning: Training BERT in 76
 * minutes"), as timm's Lamb (timm/optim/lamb.py, the NVLAMB form of apex's
 * FusedLAMB) computes it, per tensor at step t:
 *   g = -g if maximize                        (an optim extra)
 *   m = beta1 * m + (1 - beta1) * g           (timm's grad_averaging = True)
 *   v = beta2 * v + (1 - beta2) * g^2
 *   u = (m / bc1) / (sqrt(v) / sqrt(bc2) + eps)   bc = 1 - beta^t, or 1 without bias correction
 *   u = u + weight_decay * p                  (decay added to the update, not the moments)
 *   where weight_decay != 0 or always_adapt:
 *       r = ||p|| / ||u||, 1 where either norm is 0 (or NaN: torch.where's false branch)
 *       r = min(r, 1) with trust_clip (LAMBC)
 *       u = u * r
 *   p = p - lr * u
 * Two passes (rule.h, "Rules with a per-tensor reduction"): pass 1 updates m
 * and v (pre) and sums p^2 and u^2 over the tensor from the stored moments
 * (red); pass 2 recomputes u from the stored m, v and p, with the same
 * operations (so the same bits as the u pass 1 measured), and writes p.
 * Recomputing costs reading m and v twice (4 reads + 2 writes, then 3 reads +
 * 1 write: 10 streams against Adam's 7) and no memory; keeping u in a slot
 * would cost n more floats and the same traffic (docs/rules/lamb.md).
 * Rounded as torch's CPU ops: m = fma(g, 1 - beta1, round(beta1 * m)),
 * v = fma(round((1 - beta2) * g), g, round(beta2 * v)), u + wd * p and
 * p - lr * u one fused multiply-add each (add_ with alpha).
 * Slots: 0 exp_avg, 1 exp_avg_sq.
 */
#ifndef OPTIM_RULE_LAMB_H
#define OPTIM_RULE_LAMB_H
#include "rule.h"

/* Bit OPTIM__V_L2 means "weight_decay * p added to the update" here (LAMB's
 * decay never enters the gradient). */
#define OPTIM__LAMB_NVARIANTS 2

#define OPTIM__LAMB_K(X)                    \
    X(beta1) X(beta3) /* 1 - beta1 */       \
    X(beta2) X(one_minus_beta2)             \
    X(bc1)      /* 1 - beta1^t (1 without bias correction) */ \
    X(bc2_sqrt) /* sqrt(1 - beta2^t) */     \
    X(eps)                                  \
    X(ratio)    /* the trust ratio (1 without adaptation) */ \
    X(neg_lr)

/* Pass 2 reads the moments pass 1 stored, and writes only p. */
OPTIM_INLINE unsigned optim__lamb_reads(unsigned V)
{
    (void)V;
    return 3u;
}
OPTIM_INLINE unsigned optim__lamb_writes(unsigned V)
{
    (void)V;
    return 0u;
}
OPTIM_INLINE unsigned optim__lamb_pre_reads(unsigned V)
{
    (void)V;
    return 3u;
}
OPTIM_INLINE unsigned optim__lamb_pre_writes(unsigned V)
{
    (void)V;
    return 3u;
}
OPTIM_INLINE unsigned optim__lamb_red_reads(unsigned V)
{
    (void)V;
    return 3u;
}
#endif

#ifdef OPTIM__MATH
/* The update from the stored moments, computed alike by both passes. */
OPTIM_INLINE R OPTIM__T(optim__lamb_u)(R p, const R *s, const optim__kc *c, const OPTIM__KR(lamb) *k, unsigned V)
{
    R u = (s[0] / k->bc1) / (optim__sqrt(s[1]) / k->bc2_sqrt + k->eps);
    if (V & OPTIM__V_L2) u = optim__fma(c->wd, p, u);
    return u;
}

OPTIM_INLINE void OPTIM__T(optim__lamb_pre)(R p, R g, R *s, const optim__kc *c, const OPTIM__KR(lamb) *k,
                                            unsigned V)
{
    R d = optim__grad(g, p, c, V & ~OPTIM__V_L2);
    s[0] = optim__fma(d, k->beta3, s[0] * k->beta1);
    s[1] = optim__fma(k->one_minus_beta2 * d, d, s[1] * k->beta2);
}

OPTIM_INLINE void OPTIM__T(optim__lamb_red)(R p, R g, const R *s, const optim__kc *c, const OPTIM__KR(lamb) *k,
                                            unsigned V, R *x)
{
    (void)g;
    x[0] = p;
    x[1] = OPTIM__T(optim__lamb_u)(p, s, c, k, V);
}

OPTIM_INLINE void OPTIM__T(optim__lamb_elem)(R *p, R g, R *s, const optim__kc *c, const OPTIM__KR(lamb) *k,
                                             unsigned V)
{
    R pi = *p;
    R u = OPTIM__T(optim__lamb_u)(pi, s, c, k, V);
    (void)g;
    *p = optim__fma(u * k->ratio, k->neg_lr, pi);
}
#endif

#if defined(OPTIM__RULE_HOST) && !defined(OPTIM_RULE_LAMB_HOST)
#define OPTIM_RULE_LAMB_HOST

static void optim__lamb_defaults(optim_hparams *hp)
{
    /* timm's Lamb: lr 1e-3, betas (0.9, 0.999), eps 1e-6, weight_decay 0.01, bias correction. */
    hp->lr = 1e-3;
    hp->beta1 = 0.9;
    hp->beta2 = 0.999;
    hp->eps = 1e-6;
    hp->weight_decay = 1e-2;
    hp->bias_correction = 1;
}

static unsigned optim__lamb_slots(const optim_hparams *hp)
{
    (void)hp;
    return 3u;
}

static void optim__lamb_prepare(const optim_hparams *hp, const optim__step_in *in, optim_state *st,
                                optim__kcommon *c, union optim__ku *u)
{
    optim__lamb_k *k = &u->lamb;
    const double t = (double)st->step;
    const double bc2 = hp->bias_correction ? 1.0 - pow(hp->beta2, t) : 1.0;
    k->beta1 = hp->beta1;
    k->beta3 = 1.0 - hp->beta1;
    k->beta2 = hp->beta2;
    k->one_minus_beta2 = 1.0 - hp->beta2;
    k->bc1 = hp->bias_correction ? 1.0 - pow(hp->beta1, t) : 1.0;
    k->bc2_sqrt = sqrt(bc2);
    k->eps = hp->eps;
    k->ratio = 1.0;
    k->neg_lr = -in->lr;
    /* The moments always move in pass 1; the norms only where the ratio applies. */
    c->reduce = OPTIM__RED_PRE | (hp->weight_decay != 0 || hp->always_adapt ? OPTIM__RED_NORMS : 0u);
}

static void optim__lamb_trust(const optim_hparams *hp, const optim__step_in *in, const double sq[2],
                              optim__kcommon *c, union optim__ku *u)
{
    const double wn = sqrt(sq[0]), un = sqrt(sq[1]);
    /* timm: where(w_norm > 0, where(u_norm > 0, w_norm / u_norm, 1), 1): NaN norms give 1. */
    double r = (wn > 0 && un > 0) ? wn / un : 1.0;
    (void)in;
    (void)c;
    if (hp->trust_clip && r > 1.0) r = 1.0; /* torch.clamp(max=1): a NaN ratio (inf / inf) stays NaN */
    u->lamb.ratio = r;
}

/* Step statistics: the per-tensor values of this step's constants (rules.h). */
static void optim__lamb_stats(const optim__kcommon *c, const union optim__ku *u, optim__kstats *out)
{
    (void)c;
    out->trust_ratio = u->lamb.ratio;
    out->effective_lr = -u->lamb.neg_lr * u->lamb.ratio; /* lr times the trust ratio */
}

static const optim__rule_def optim__lamb_def = {
    .id = OPTIM_LAMB, .name = "lamb", .torch_name = "Lamb",
    .uses = OPTIM__USES(LR) | OPTIM__USES(BETA1) | OPTIM__USES(BETA2) | OPTIM__USES(EPS) |
            OPTIM__USES(WEIGHT_DECAY) | OPTIM__USES(BIAS_CORRECTION) | OPTIM__USES(TRUST_CLIP) |
            OPTIM__USES(ALWAYS_ADAPT) | OPTIM__USES(MAXIMIZE),
    .nslots = 2, .slot_names = {"exp_avg", "exp_avg_sq"},
    .slot_kinds = {OPTIM__SLOT_SIGNED, OPTIM__SLOT_POSITIVE}, .has_step = 1,
    .defaults = optim__lamb_defaults, .slots = optim__lamb_slots, .prepare = optim__lamb_prepare,
    .trust = optim__lamb_trust, .stats = optim__lamb_stats};
#endif
