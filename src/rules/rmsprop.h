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
 */
#ifndef OPTIM_RULE_RMSPROP_MATH
#define OPTIM_RULE_RMSPROP_MATH
#include "rule.h"

#define OPTIM__RMSPROP_V_CENTERED 4u
#define OPTIM__RMSPROP_V_MOM 8u
#define OPTIM__RMSPROP_VARIANTS 16u

typedef struct optim__rmsprop_k {
    float alpha, one_minus_alpha;
    float eps;
    float momentum;
    float neg_lr;
} optim__rmsprop_k;

OPTIM_INLINE unsigned optim__rmsprop_reads(unsigned V)
{
    return 1u | ((V & OPTIM__RMSPROP_V_MOM) ? 2u : 0u) | ((V & OPTIM__RMSPROP_V_CENTERED) ? 4u : 0u);
}
OPTIM_INLINE unsigned optim__rmsprop_writes(unsigned V)
{
    return optim__rmsprop_reads(V);
}

OPTIM_INLINE void optim__rmsprop_elem(float *p, float g, float *s, const optim__kcommon *c,
                                      const optim__rmsprop_k *k, unsigned V)
{
    float pi = *p;
    float d = optim__grad(g, pi, c, V);
    float sq = fmaf(k->one_minus_alpha * d, d, s[0] * k->alpha);
    float v = sq, avg;
    s[0] = sq;
    if (V & OPTIM__RMSPROP_V_CENTERED) {
        float ga = fmaf(d, k->one_minus_alpha, s[2] * k->alpha);
        s[2] = ga;
        v = fmaf(-ga, ga, sq);
    }
    avg = optim__rms(v, k->eps, V & OPTIM__V_EPSIN);
    if (V & OPTIM__RMSPROP_V_MOM) {
        float b = s[1] * k->momentum + d / avg;
        s[1] = b;
        *p = fmaf(b, k->neg_lr, pi);
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
    k->alpha = (float)hp->alpha;
    k->one_minus_alpha = (float)(1.0 - hp->alpha);
    k->eps = (float)hp->eps;
    k->momentum = (float)hp->momentum;
    k->neg_lr = (float)-in->lr;
    if (hp->centered) c->variant |= OPTIM__RMSPROP_V_CENTERED;
    if (hp->momentum > 0) c->variant |= OPTIM__RMSPROP_V_MOM;
}

static const optim__rule_def optim__rmsprop_def = {
    OPTIM_RMSPROP, "rmsprop", "RMSprop",
    OPTIM__USES(LR) | OPTIM__USES(ALPHA) | OPTIM__USES(EPS) | OPTIM__USES(EPS_PLACEMENT) |
        OPTIM__USES(WEIGHT_DECAY) | OPTIM__USES(MOMENTUM) | OPTIM__USES(CENTERED) | OPTIM__USES(MAXIMIZE),
    3, {"square_avg", "momentum_buffer", "grad_avg"}, 0u, 1,
    optim__rmsprop_defaults, NULL, optim__rmsprop_slots, NULL, optim__rmsprop_prepare, NULL};
#endif
