/* lars.h: LARS, Layer-wise Adaptive Rate Scaling (You et al. 2017, "Large
 * Batch Training of Convolutional Networks"), as timm's Lars
 * (timm/optim/lars.py: SGD with the LARS/LARC scaling of apex's LARC)
 * computes it, per tensor:
 *   g = -g if maximize                        (an optim extra)
 *   where weight_decay != 0 or always_adapt:
 *       r = trust_coeff * ||p|| / (||g|| + ||p|| * weight_decay + eps),
 *           1 where ||p|| or ||g|| is 0 (or NaN: torch.where's false branch)
 *       r = min(r / lr, 1) with trust_clip (LARC)
 *       g = (g + weight_decay * p) * r           (with weight_decay = 0 too, as timm)
 *   if momentum != 0:
 *       b = g                                   first step
 *       b = momentum * b + (1 - dampening) * g  later steps
 *       g = g + momentum * b   if nesterov,  else g = b
 *   p = p - lr * g
 * ||g|| is the norm of the gradient as the rule sees it (after maximize,
 * clipping and loss scaling), without the decay. Two passes (rule.h): pass 1
 * sums p^2 and g^2 over the tensor (reads p and g, writes nothing), pass 2 is
 * the update with the ratio as a constant; without adaptation pass 1 is
 * skipped and LARS is SGD.
 * Rounded as torch's CPU ops: g + wd * p, the momentum's add and p - lr * g
 * are one fused multiply-add each (add with alpha), as in sgd.h.
 * Slot 0: momentum_buffer (only with momentum; filled from the first gradient).
 */
#ifndef OPTIM_RULE_LARS_H
#define OPTIM_RULE_LARS_H
#include "rule.h"

#define OPTIM__LARS_V_MOM 4u   /* momentum != 0 */
#define OPTIM__LARS_V_FIRST 8u /* the buffer is not initialized yet: b = g */
#define OPTIM__LARS_V_NEST 16u /* Nesterov */
#define OPTIM__LARS_NVARIANTS 32

#define OPTIM__LARS_K(X)         \
    X(momentum)                  \
    X(one_minus_dampening)       \
    X(ratio) /* the trust ratio (1 without adaptation) */ \
    X(neg_lr)

OPTIM_INLINE unsigned optim__lars_reads(unsigned V)
{
    return (V & OPTIM__LARS_V_MOM) && !(V & OPTIM__LARS_V_FIRST) ? 1u : 0u;
}
OPTIM_INLINE unsigned optim__lars_writes(unsigned V)
{
    return (V & OPTIM__LARS_V_MOM) ? 1u : 0u;
}
OPTIM_INLINE unsigned optim__lars_pre_reads(unsigned V)
{
    (void)V;
    return 0u;
}
OPTIM_INLINE unsigned optim__lars_pre_writes(unsigned V)
{
    (void)V;
    return 0u;
}
OPTIM_INLINE unsigned optim__lars_red_reads(unsigned V)
{
    (void)V;
    return 0u;
}
#endif

#ifdef OPTIM__MATH
/* No state update precedes the norms (never called: prepare never asks for it). */
OPTIM_INLINE void OPTIM__T(optim__lars_pre)(R p, R g, R *s, const optim__kc *c, const OPTIM__KR(lars) *k,
                                            unsigned V)
{
    (void)p, (void)g, (void)s, (void)c, (void)k, (void)V;
}

OPTIM_INLINE void OPTIM__T(optim__lars_red)(R p, R g, const R *s, const optim__kc *c, const OPTIM__KR(lars) *k,
                                            unsigned V, R *x)
{
    (void)s, (void)k;
    x[0] = p;
    x[1] = optim__grad(g, p, c, V & ~OPTIM__V_L2);
}

OPTIM_INLINE void OPTIM__T(optim__lars_elem)(R *p, R g, R *s, const optim__kc *c, const OPTIM__KR(lars) *k,
                                             unsigned V)
{
    R pi = *p;
    R d = optim__grad(g, pi, c, V) * k->ratio;
    if (V & OPTIM__LARS_V_MOM) {
        R b = (V & OPTIM__LARS_V_FIRST) ? d : optim__fma(d, k->one_minus_dampening, s[0] * k->momentum);
        s[0] = b;
        d = (V & OPTIM__LARS_V_NEST) ? optim__fma(b, k->momentum, d) : b;
    }
    *p = optim__fma(d, k->neg_lr, pi);
}
#endif

#if defined(OPTIM__RULE_HOST) && !defined(OPTIM_RULE_LARS_HOST)
#define OPTIM_RULE_LARS_HOST

static void optim__lars_defaults(optim_hparams *hp)
{
    /* timm's Lars: lr 1.0, momentum 0, dampening 0, weight_decay 0, trust_coeff 1e-3, eps 1e-8. */
    hp->lr = 1.0;
    hp->trust_coeff = 1e-3;
    hp->eps = 1e-8;
}

static int optim__lars_check(const optim_hparams *hp, optim_error *err)
{
    OPTIM__FAIL_IF(hp->nesterov && !(hp->momentum > 0), err, OPTIM_EINVAL,
                   "lars: nesterov = 1 requires momentum > 0 (momentum = %.10g)", hp->momentum);
    OPTIM__FAIL_IF(hp->nesterov && hp->dampening != 0, err, OPTIM_EINVAL,
                   "lars: nesterov = 1 requires dampening = 0 (dampening = %.10g)", hp->dampening);
    return OPTIM_OK;
}

static unsigned optim__lars_slots(const optim_hparams *hp)
{
    return hp->momentum != 0 ? 1u : 0u;
}

static void optim__lars_prepare(const optim_hparams *hp, const optim__step_in *in, optim_state *st,
                                optim__kcommon *c, union optim__ku *u)
{
    optim__lars_k *k = &u->lars;
    k->momentum = hp->momentum;
    k->one_minus_dampening = 1.0 - hp->dampening;
    k->ratio = 1.0;
    k->neg_lr = -in->lr;
    if (hp->momentum != 0) {
        c->variant |= OPTIM__LARS_V_MOM;
        if (!(st->initialized & 1u)) c->variant |= OPTIM__LARS_V_FIRST;
        if (hp->nesterov) c->variant |= OPTIM__LARS_V_NEST;
    }
    if (hp->weight_decay != 0 || hp->always_adapt) {
        /* timm adds weight_decay * p whenever it adapts, 0 * p too (an infinite p then gives NaN, as there). */
        c->variant |= OPTIM__V_L2;
        c->reduce = OPTIM__RED_NORMS;
    }
}

static void optim__lars_trust(const optim_hparams *hp, const optim__step_in *in, const double sq[2],
                              optim__kcommon *c, union optim__ku *u)
{
    const double wn = sqrt(sq[0]), gn = sqrt(sq[1]);
    double r = (wn > 0 && gn > 0) ? hp->trust_coeff * wn / (gn + wn * hp->weight_decay + hp->eps) : 1.0;
    (void)c;
    if (hp->trust_clip) {
        r = r / in->lr; /* lr = 0: inf (or NaN for r = 0), then clamped as torch.clamp(max=1) */
        if (r > 1.0) r = 1.0;
    }
    u->lars.ratio = r;
}

static void optim__lars_finish(const optim_hparams *hp, optim_state *st)
{
    if (hp->momentum != 0) st->initialized |= 1u;
}

/* Step statistics: the per-tensor values of this step's constants (rules.h). */
static void optim__lars_stats(const optim__kcommon *c, const union optim__ku *u, optim__kstats *out)
{
    (void)c;
    out->trust_ratio = u->lars.ratio;
    out->effective_lr = -u->lars.neg_lr * u->lars.ratio; /* lr times the trust ratio */
}

static const optim__rule_def optim__lars_def = {
    .id = OPTIM_LARS, .name = "lars", .torch_name = "Lars",
    .uses = OPTIM__USES(LR) | OPTIM__USES(MOMENTUM) | OPTIM__USES(DAMPENING) | OPTIM__USES(NESTEROV) |
            OPTIM__USES(WEIGHT_DECAY) | OPTIM__USES(TRUST_COEFF) | OPTIM__USES(EPS) | OPTIM__USES(TRUST_CLIP) |
            OPTIM__USES(ALWAYS_ADAPT) | OPTIM__USES(MAXIMIZE),
    .nslots = 1, .slot_names = {"momentum_buffer"}, .lazy_slots = 1u, .has_step = 0,
    .defaults = optim__lars_defaults, .check = optim__lars_check, .slots = optim__lars_slots,
    .prepare = optim__lars_prepare, .trust = optim__lars_trust, .finish = optim__lars_finish, .stats = optim__lars_stats};
#endif
