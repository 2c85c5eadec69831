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
#ifndef OPTIM_RULE_ADABOUND_H
#define OPTIM_RULE_ADABOUND_H
#include "rule.h"

#define OPTIM__ADABOUND_V_AMS 4u
#define OPTIM__ADABOUND_NVARIANTS 8

#define OPTIM__ADABOUND_K(X) \
    X(beta1) X(one_minus_beta1) \
    X(beta2) X(one_minus_beta2) \
    X(step_size) \
    X(lower) X(upper) \
    X(eps)

OPTIM_INLINE unsigned optim__adabound_reads(unsigned V)
{
    return 3u | ((V & OPTIM__ADABOUND_V_AMS) ? 4u : 0u);
}
OPTIM_INLINE unsigned optim__adabound_writes(unsigned V)
{
    return optim__adabound_reads(V);
}

#endif

#ifdef OPTIM__MATH
OPTIM_INLINE void OPTIM__T(optim__adabound_elem)(R *p, R g, R *s, const optim__kc *c,
                                       const OPTIM__KR(adabound) *k, unsigned V)
{
    R pi = *p;
    R d = optim__grad(g, pi, c, V);
    R m = optim__fma(d, k->one_minus_beta1, s[0] * k->beta1);
    R v = optim__fma(k->one_minus_beta2 * d, d, s[1] * k->beta2);
    R denom, step;
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

/* Step statistics (rule_list.h's OPTIM__CLAMP_LIST): did the bounds clamp the
 * step size, from the state the element function left (v, or its running
 * maximum with AMSGrad)? A NaN step size is not counted. */
OPTIM_INLINE int OPTIM__T(optim__adabound_clamped)(const R *s, const OPTIM__KR(adabound) *k, unsigned V)
{
    const R v = (V & OPTIM__ADABOUND_V_AMS) ? s[2] : s[1];
    const R r = k->step_size / optim__rms(v, k->eps, V & OPTIM__V_EPSIN);
    return r < k->lower || r > k->upper;
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
    k->beta1 = hp->beta1;
    k->one_minus_beta1 = 1.0 - hp->beta1;
    k->beta2 = hp->beta2;
    k->one_minus_beta2 = 1.0 - hp->beta2;
    k->step_size = in->lr * sqrt(bc2) / bc1;
    k->lower = fl * (1.0 - 1.0 / (hp->gamma * t + 1.0));
    k->upper = fl * (1.0 + 1.0 / (hp->gamma * t));
    k->eps = hp->eps;
    if (hp->amsgrad) c->variant |= OPTIM__ADABOUND_V_AMS;
}

/* A group's bounds are relative to the lr it was created with (the
 * reference's base_lr): an unset initial_lr takes the group's lr when the
 * group is created or its hyperparameters are replaced. */
static void optim__adabound_group(optim_hparams *hp)
{
    if (hp->initial_lr == 0) hp->initial_lr = hp->lr;
}

/* Step statistics: the per-tensor values of this step's constants (rules.h). */
static void optim__adabound_stats(const optim__kcommon *c, const union optim__ku *u, optim__kstats *out)
{
    (void)c;
    out->effective_lr = u->adabound.step_size; /* lr sqrt(1 - beta2^t) / (1 - beta1^t), before the bounds */
}

static const optim__rule_def optim__adabound_def = {
    .id = OPTIM_ADABOUND, .name = "adabound", .torch_name = "AdaBound",
    .uses = OPTIM__USES(LR) | OPTIM__USES(BETA1) | OPTIM__USES(BETA2) | OPTIM__USES(FINAL_LR) | OPTIM__USES(GAMMA) |
            OPTIM__USES(EPS) | OPTIM__USES(EPS_PLACEMENT) | OPTIM__USES(WEIGHT_DECAY) | OPTIM__USES(AMSGRAD) |
            OPTIM__USES(BIAS_CORRECTION) | OPTIM__USES(INITIAL_LR) | OPTIM__USES(MAXIMIZE),
    .nslots = 3, .slot_names = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
    .slot_kinds = {OPTIM__SLOT_SIGNED, OPTIM__SLOT_POSITIVE, OPTIM__SLOT_POSITIVE}, .has_step = 1,
    .defaults = optim__adabound_defaults, .check = optim__adabound_check, .slots = optim__adabound_slots,
    .prepare = optim__adabound_prepare, .group = optim__adabound_group, .stats = optim__adabound_stats};
#endif
