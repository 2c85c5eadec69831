/* adam.h: Adam and AdamW (one set of math; AdamW is Adam with decoupled decay).
 *
 * torch.optim.Adam / AdamW, per element, at step t:
 *   g = -g if maximize
 *   Adam (L2):        g = g + weight_decay * p
 *   AdamW (decoupled): p = p * (1 - lr * weight_decay)
 *   m = beta1 * m + (1 - beta1) * g                       (the seeds' s)
 *   v = beta2 * v + (1 - beta2) * g^2                     (the seeds' r)
 *   amsgrad: vmax = max(vmax, v); v' = vmax, else v' = v
 *   with bias correction (default): m^ = m / (1 - beta1^t), v^ = v' / (1 - beta2^t)
 *   without:                         m^ = m, v^ = v'
 *   p = p - lr * m^ / (sqrt(v^) + eps)                     eps outside (torch, the seeds' Adam)
 *   p = p - lr * m^ / sqrt(v^ + eps)                       eps inside
 * Computed as torch does: denom = sqrt(v') / sqrt(1 - beta2^t) + eps and
 * p = p + (-lr / (1 - beta1^t)) * m / denom.
 * Rounded as torch 1.13's CPU kernels round (docs/FIDELITY.md): add_(g, alpha)
 * and addcmul_ are each one fused multiply-add,
 *   m = fma(g, 1 - beta1, round(beta1 * m));  v = fma(round((1 - beta2) * g), g, round(beta2 * v));
 * everything else rounds operation by operation (AdamW's p * (1 - lr * wd)
 * is rounded before the addcdiv_ adds to it).
 * Slots: 0 exp_avg, 1 exp_avg_sq, 2 max_exp_avg_sq (amsgrad).
 */
#ifndef OPTIM_RULE_ADAM_H
#define OPTIM_RULE_ADAM_H
#include "rule.h"

#define OPTIM__ADAM_V_AMS 4u
#define OPTIM__ADAM_NVARIANTS 8

#define OPTIM__ADAM_K(X)                            \
    X(beta1) X(one_minus_beta1)                     \
    X(beta2) X(one_minus_beta2)                     \
    X(bc2)      /* 1 - beta2^t (1 without bias correction) */ \
    X(bc2_sqrt) /* sqrt(1 - beta2^t) */             \
    X(neg_step) /* -lr / (1 - beta1^t) */           \
    X(eps)

OPTIM_INLINE unsigned optim__adam_reads(unsigned V)
{
    return 3u | ((V & OPTIM__ADAM_V_AMS) ? 4u : 0u);
}
OPTIM_INLINE unsigned optim__adam_writes(unsigned V)
{
    return optim__adam_reads(V);
}
#endif

#ifdef OPTIM__MATH
OPTIM_INLINE void OPTIM__T(optim__adam_elem)(R *p, R g, R *s, const optim__kc *c, const OPTIM__KR(adam) *k,
                                             unsigned V)
{
    R pi = *p;
    R d = optim__grad(g, pi, c, V);
    R m = optim__fma(d, k->one_minus_beta1, s[0] * k->beta1);
    R v = optim__fma(k->one_minus_beta2 * d, d, s[1] * k->beta2);
    R denom;
    s[0] = m;
    s[1] = v;
    if (V & OPTIM__ADAM_V_AMS) {
        v = optim__max_nan(s[2], v);
        s[2] = v;
    }
    if (V & OPTIM__V_EPSIN)
        denom = optim__sqrt(v / k->bc2 + k->eps);
    else
        denom = optim__sqrt(v) / k->bc2_sqrt + k->eps;
    *p = pi * c->decay + (k->neg_step * m) / denom;
}
#endif

#if defined(OPTIM__RULE_HOST) && !defined(OPTIM_RULE_ADAM_HOST)
#define OPTIM_RULE_ADAM_HOST

static void optim__adam_defaults(optim_hparams *hp)
{
    hp->lr = 1e-3;
    hp->beta1 = 0.9;
    hp->beta2 = 0.999;
    hp->eps = 1e-8;
    hp->bias_correction = 1;
}

static void optim__adamw_defaults(optim_hparams *hp)
{
    optim__adam_defaults(hp);
    hp->weight_decay = 1e-2;
    hp->decoupled_weight_decay = 1;
}

static int optim__adamw_check(const optim_hparams *hp, optim_error *err)
{
    OPTIM__FAIL_IF(!hp->decoupled_weight_decay, err, OPTIM_EINVAL,
                   "adamw: decoupled_weight_decay = 0 is not AdamW; use rule adam for L2 weight decay");
    return OPTIM_OK;
}

static unsigned optim__adam_slots(const optim_hparams *hp)
{
    return 3u | (hp->amsgrad ? 4u : 0u);
}

static void optim__adam_prepare(const optim_hparams *hp, const optim__step_in *in, optim_state *st,
                                optim__kcommon *c, union optim__ku *u)
{
    optim__adam_k *k = &u->adam;
    double t = (double)st->step;
    double bc1 = hp->bias_correction ? 1.0 - pow(hp->beta1, t) : 1.0;
    double bc2 = hp->bias_correction ? 1.0 - pow(hp->beta2, t) : 1.0;
    k->beta1 = hp->beta1;
    k->one_minus_beta1 = 1.0 - hp->beta1;
    k->beta2 = hp->beta2;
    k->one_minus_beta2 = 1.0 - hp->beta2;
    k->bc2 = bc2;
    k->bc2_sqrt = sqrt(bc2);
    k->neg_step = -(in->lr / bc1);
    k->eps = hp->eps;
    if (hp->amsgrad) c->variant |= OPTIM__ADAM_V_AMS;
}

#define OPTIM__ADAM_USES                                                                                  \
    (OPTIM__USES(LR) | OPTIM__USES(BETA1) | OPTIM__USES(BETA2) | OPTIM__USES(EPS) |                       \
     OPTIM__USES(EPS_PLACEMENT) | OPTIM__USES(WEIGHT_DECAY) | OPTIM__USES(DECOUPLED_WEIGHT_DECAY) |      \
     OPTIM__USES(AMSGRAD) | OPTIM__USES(BIAS_CORRECTION) | OPTIM__USES(MAXIMIZE))

/* Step statistics: the per-tensor values of this step's constants (rules.h). */
static void optim__adam_stats(const optim__kcommon *c, const union optim__ku *u, optim__kstats *out)
{
    (void)c;
    out->effective_lr = -u->adam.neg_step * u->adam.bc2_sqrt; /* lr sqrt(1 - beta2^t) / (1 - beta1^t) */
}

static const optim__rule_def optim__adam_def = {
    .id = OPTIM_ADAM, .name = "adam", .torch_name = "Adam", .uses = OPTIM__ADAM_USES,
    .nslots = 3, .slot_names = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
    .slot_kinds = {OPTIM__SLOT_SIGNED, OPTIM__SLOT_POSITIVE, OPTIM__SLOT_POSITIVE}, .has_step = 1,
    .defaults = optim__adam_defaults, .slots = optim__adam_slots, .prepare = optim__adam_prepare, .stats = optim__adam_stats};

static const optim__rule_def optim__adamw_def = {
    .id = OPTIM_ADAMW, .name = "adamw", .torch_name = "AdamW", .uses = OPTIM__ADAM_USES,
    .nslots = 3, .slot_names = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
    .slot_kinds = {OPTIM__SLOT_SIGNED, OPTIM__SLOT_POSITIVE, OPTIM__SLOT_POSITIVE}, .has_step = 1,
    .defaults = optim__adamw_defaults, .check = optim__adamw_check, .slots = optim__adam_slots,
    .prepare = optim__adam_prepare, .stats = optim__adam_stats};
#endif
