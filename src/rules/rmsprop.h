/* rmsprop.h: RMSProp, plain or centered, with optional momentum.
 *
 * torch.optim.RMSprop, per element:
 *   g   = -g if maximize;  g = g + weight_decay * p
 *   sq  = alpha * sq + (1 - alpha) * g^2
 *   centered:  ga = alpha * ga + (1 - alpha) * g;  v = sq - ga^2
 *   otherwise: v = sq
 *   avg = sqrt(v) + eps  (torch)   or   sqrt(v + eps)  (eps inside: the seeds' and TensorFlow's form)
 *   momentum > 0: b = momentum * b + g / avg;  p = p - lr * b
 *   otherwise:    p = p - lr * g / avg
 * Rounded as torch 1.13's CPU kernels round (docs/FIDELITY.md): addcmul_ and
 * add_(x, alpha=a) are each one fused multiply-add, so
 *   sq = fma((1 - alpha) * g, g, round(alpha * sq));  ga = fma(g, 1 - alpha, round(alpha * ga));
 *   v = fma(-ga, ga, sq);  b = round(momentum * b) + round(g / avg);  p = fma(b, -lr, p);
 * addcdiv_ (no momentum) rounds -lr * g, the quotient and the sum separately.
 * Slots: 0 square_avg, 1 momentum_buffer (momentum > 0), 2 grad_avg (centered).
 *
 * Centered with OPTIM_INT8_BLOCK state (variant OPTIM__RMSPROP_V_FLOOR): sq and
 * ga are quantized apart, each to a relative step of 2^-3, so sq - ga^2 is
 * not resolved below about sq / 16: for an element whose gradient varies
 * less it is a difference of rounding errors, often below 0 (sqrt: NaN) or
 * near 0 (an update of g / eps). There v = max(v, sq / 16), the codes'
 * resolution (a NaN v stays NaN): the step is then at most about 4 lr.
 * float32, float64 and half state keep torch's loop above, without the max
 * (docs/PRECISION.md).
 */
#ifndef OPTIM_RULE_RMSPROP_H
#define OPTIM_RULE_RMSPROP_H
#include "rule.h"

#define OPTIM__RMSPROP_V_CENTERED 4u
#define OPTIM__RMSPROP_V_MOM 8u
#define OPTIM__RMSPROP_V_FLOOR 16u /* centered, int8_block state: v = max(v, sq / 16) */
#define OPTIM__RMSPROP_NVARIANTS 32

#define OPTIM__RMSPROP_K(X) \
    X(alpha) X(one_minus_alpha) \
    X(eps) \
    X(momentum) \
    X(neg_lr)

OPTIM_INLINE unsigned optim__rmsprop_reads(unsigned V)
{
    return 1u | ((V & OPTIM__RMSPROP_V_MOM) ? 2u : 0u) | ((V & OPTIM__RMSPROP_V_CENTERED) ? 4u : 0u);
}
OPTIM_INLINE unsigned optim__rmsprop_writes(unsigned V)
{
    return optim__rmsprop_reads(V);
}

#endif

#ifdef OPTIM__MATH
OPTIM_INLINE void OPTIM__T(optim__rmsprop_elem)(R *p, R g, R *s, const optim__kc *c,
                                      const OPTIM__KR(rmsprop) *k, unsigned V)
{
    R pi = *p;
    R d = optim__grad(g, pi, c, V);
    R sq = optim__fma(k->one_minus_alpha * d, d, s[0] * k->alpha);
    R v = sq, avg;
    s[0] = sq;
    if (V & OPTIM__RMSPROP_V_CENTERED) {
        R ga = optim__fma(d, k->one_minus_alpha, s[2] * k->alpha);
        s[2] = ga;
        v = optim__fma(-ga, ga, sq);
        if (V & OPTIM__RMSPROP_V_FLOOR) v = optim__max_nan(v, sq * (R)0.0625);
    }
    avg = optim__rms(v, k->eps, V & OPTIM__V_EPSIN);
    if (V & OPTIM__RMSPROP_V_MOM) {
        R b = s[1] * k->momentum + d / avg;
        s[1] = b;
        *p = optim__fma(b, k->neg_lr, pi);
    } else {
        *p = pi + (k->neg_lr * d) / avg;
    }
}
#endif

#if defined(OPTIM__RULE_HOST) && !defined(OPTIM_RULE_RMSPROP_HOST)
#define OPTIM_RULE_RMSPROP_HOST

static void optim__rmsprop_defaults(optim_hparams *hp)
{
    hp->lr = 1e-2;
    hp->alpha = 0.99;
    hp->eps = 1e-8;
}

static unsigned optim__rmsprop_slots(const optim_hparams *hp)
{
    return 1u | (hp->momentum > 0 ? 2u : 0u) | (hp->centered ? 4u : 0u);
}

static void optim__rmsprop_prepare(const optim_hparams *hp, const optim__step_in *in, optim_state *st,
                                   optim__kcommon *c, union optim__ku *u)
{
    optim__rmsprop_k *k = &u->rmsprop;
    (void)st;
    k->alpha = hp->alpha;
    k->one_minus_alpha = 1.0 - hp->alpha;
    k->eps = hp->eps;
    k->momentum = hp->momentum;
    k->neg_lr = -in->lr;
    if (hp->centered) c->variant |= OPTIM__RMSPROP_V_CENTERED;
    if (hp->centered && in->quantized) c->variant |= OPTIM__RMSPROP_V_FLOOR;
    if (hp->momentum > 0) c->variant |= OPTIM__RMSPROP_V_MOM;
}

/* Step statistics: the per-tensor values of this step's constants (rules.h). */
static void optim__rmsprop_stats(const optim__kcommon *c, const union optim__ku *u, optim__kstats *out)
{
    (void)c;
    out->effective_lr = -u->rmsprop.neg_lr; /* lr */
}

static const optim__rule_def optim__rmsprop_def = {
    .id = OPTIM_RMSPROP, .name = "rmsprop", .torch_name = "RMSprop",
    .uses = OPTIM__USES(LR) | OPTIM__USES(ALPHA) | OPTIM__USES(EPS) | OPTIM__USES(EPS_PLACEMENT) |
            OPTIM__USES(WEIGHT_DECAY) | OPTIM__USES(MOMENTUM) | OPTIM__USES(CENTERED) | OPTIM__USES(MAXIMIZE),
    .nslots = 3, .slot_names = {"square_avg", "momentum_buffer", "grad_avg"},
    .slot_kinds = {OPTIM__SLOT_POSITIVE, OPTIM__SLOT_SIGNED, OPTIM__SLOT_SIGNED}, .has_step = 1,
    .defaults = optim__rmsprop_defaults, .slots = optim__rmsprop_slots, .prepare = optim__rmsprop_prepare, .stats = optim__rmsprop_stats};
#endif
