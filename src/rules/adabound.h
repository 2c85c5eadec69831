/* adabound.h: AdaBound and AMSBound (Luo et al. 2019, "Adaptive Gradient
 * Methods with Dynamic Bound of Learning Rate").
 *
 * As the authors' reference implementation (adabound.AdaBound), per element, at step t:
 *   g = -g if maximize (optim extension);  g = g + weight_decay * p
 *   m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g^2
 *   amsbound: vmax = max(vmax, v), v' = vmax, else v' = v
 *   denom = sqrt(v') + eps                     (eps inside: sqrt(v' + eps))
 *   step  = lr * sqrt(1 - beta2^t) / (1 - beta1^t)     (lr without bias correction)
 *   fl    = final_lr * lr / initial_lr         (so lr schedules move the bounds too)
 *   lower = fl * (1 - 1 / (gamma t + 1));  upper = fl * (1 + 1 / (gamma t))
 *   p = p - clamp(step / denom, lower, upper) * m
 * Rounded as the reference implementation rounds on torch 1.13's CPU path
 * (docs/FIDELITY.md): its weight decay grad.add(wd, p), exp_avg's
 * add_(1 - beta1, g) and exp_avg_sq's addcmul_ are each one fused
 * multiply-add (m = fma(g, 1 - beta1, round(beta1 * m)),
 * v = fma(round((1 - beta2) * g), g, round(beta2 * v))); the rest rounds
 * operation by operation.
 * Slots: 0 exp_avg, 1 exp_avg_sq, 2 max_exp_avg_sq (amsbound).
 */
#ifndef OPTIM_RULE_ADABOUND_MATH
#define OPTIM_RULE_ADABOUND_MATH
#include "rule.h"

#define OPTIM__ADABOUND_V_AMS 4u
#define OPTIM__ADABOUND_VARIANTS 8u

typedef struct optim__adabound_k {
    float beta1, one_minus_beta1;
    float beta2, one_minus_beta2;
    float step_size;
    float lower, upper;
    float eps;
} optim__adabound_k;

OPTIM_INLINE unsigned optim__adabound_reads(unsigned V)
{
    return 3u | ((V & OPTIM__ADABOUND_V_AMS) ? 4u : 0u);
}
OPTIM_INLINE unsigned optim__adabound_writes(unsigned V)
{
    return optim__adabound_reads(V);
}

OPTIM_INLINE void optim__adabound_elem(float *p, float g, float *s, const optim__kcommon *c,
                                       const optim__adabound_k *k, unsigned V)
{
    float pi = *p;
    float d = optim__grad(g, pi, c, V);
    float m = fmaf(d, k->one_minus_beta1, s[0] * k->beta1);
    float v = fmaf(k->one_minus_beta2 * d, d, s[1] * k->beta2);
    float denom, step;
    s[0] = m;
    s[1] = v;
    if (V & OPTIM__ADABOUND_V_AMS) {
        v = optim__max_nan(s[2], v);
        s[2] = v;
    }
    denom = optim__rms(v, k->eps, V & OPTIM__V_EPSIN);
    step = optim__clamp(k->step_size / denom, k->lower, k->upper) * m;
    *p = pi - step;
}
#endif

#if defined(OPTIM__RULE_HOST) && !defined(OPTIM_RULE_ADABOUND_HOST)
#define OPTIM_RULE_ADABOUND_HOST

static void optim__adabound_defaults(optim_hparams *hp)
{
    hp->lr = 1e-3;
    hp->beta1 = 0.9;
    hp->beta2 = 0.999;
    hp->final_lr = 0.1;
    hp->gamma = 1e-3;
    hp->eps = 1e-8;
    hp->bias_correction = 1;
}

static int optim__adabound_check(const optim_hparams *hp, optim_error *err)
{
    OPTIM__FAIL_IF(hp->initial_lr == 0 && hp->lr == 0, err, OPTIM_EINVAL,
                   "adabound: lr = 0 with initial_lr = 0: the bounds scale final_lr by lr / initial_lr, "
                   "so one of them must be > 0");
    return OPTIM_OK;
}

static unsigned optim__adabound_slots(const optim_hparams *hp)
{
    return 3u | (hp->amsgrad ? 4u : 0u);
}

static void optim__adabound_prepare(const optim_hparams *hp, const optim__step_in *in, optim_state *st,
                                    optim__kcommon *c, union optim__ku *u)
{
    optim__adabound_k *k = &u->adabound;
    double t = (double)st->step;
    double bc1 = hp->bias_correction ? 1.0 - pow(hp->beta1, t) : 1.0;
    double bc2 = hp->bias_correction ? 1.0 - pow(hp->beta2, t) : 1.0;
    double base = hp->initial_lr > 0 ? hp->initial_lr : hp->lr;
    double fl = hp->final_lr * in->lr / base;
    k->beta1 = (float)hp->beta1;
    k->one_minus_beta1 = (float)(1.0 - hp->beta1);
    k->beta2 = (float)hp->beta2;
    k->one_minus_beta2 = (float)(1.0 - hp->beta2);
    k->step_size = (float)(in->lr * sqrt(bc2) / bc1);
    k->lower = (float)(fl * (1.0 - 1.0 / (hp->gamma * t + 1.0)));
    k->upper = (float)(fl * (1.0 + 1.0 / (hp->gamma * t)));
    k->eps = (float)hp->eps;
    if (hp->amsgrad) c->variant |= OPTIM__ADABOUND_V_AMS;
}

static const optim__rule_def optim__adabound_def = {
    OPTIM_ADABOUND, "adabound", "AdaBound",
    OPTIM__USES(LR) | OPTIM__USES(BETA1) | OPTIM__USES(BETA2) | OPTIM__USES(FINAL_LR) | OPTIM__USES(GAMMA) |
        OPTIM__USES(EPS) | OPTIM__USES(EPS_PLACEMENT) | OPTIM__USES(WEIGHT_DECAY) | OPTIM__USES(AMSGRAD) |
        OPTIM__USES(BIAS_CORRECTION) | OPTIM__USES(INITIAL_LR) | OPTIM__USES(MAXIMIZE),
    3, {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}, 0u, 1,
    optim__adabound_defaults, optim__adabound_check, optim__adabound_slots, NULL, optim__adabound_prepare, NULL};
#endif
