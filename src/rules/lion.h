/* lion.h: Lion, EvoLved Sign Momentum (Chen et al. 2023, "Symbolic Discovery
 * of Optimization Algorithms"), as the authors' PyTorch reference
 * (google/automl lion/lion_pytorch.py) computes it, per element:
 *   g = -g if maximize                      (an optim extra)
 *   decoupled (default, the reference):  p = p * (1 - lr * weight_decay)
 *   coupled (decoupled_weight_decay = 0, an optim extra): g = g + weight_decay * p
 *   c = m * beta1 + g * (1 - beta1)         the interpolation whose sign is the step
 *   p = p - lr * sign(c)
 *   m = m * beta2 + (1 - beta2) * g         the momentum, with the other beta
 * sign(0) = 0. A NaN c gives a NaN parameter (the library's policy: a NaN
 * gradient element poisons that element); torch 1.13's sign(NaN) is 0.
 * Slot 0: exp_avg (zero at the start). No step counter (the reference keeps none).
 */
#ifndef OPTIM_RULE_LION_H
#define OPTIM_RULE_LION_H
#include "rule.h"

/* No bits of its own: only OPTIM__V_L2 (coupled decay). */
#define OPTIM__LION_NVARIANTS 2

#define OPTIM__LION_K(X)          \
    X(beta1) X(one_minus_beta1)   \
    X(beta2) X(one_minus_beta2)   \
    X(neg_lr)

OPTIM_INLINE unsigned optim__lion_reads(unsigned V)
{
    (void)V;
    return 1u;
}
OPTIM_INLINE unsigned optim__lion_writes(unsigned V)
{
    (void)V;
    return 1u;
}
#endif

#ifdef OPTIM__MATH
OPTIM_INLINE void OPTIM__T(optim__lion_elem)(R *p, R g, R *s, const optim__kc *c, const OPTIM__KR(lion) *k,
                                             unsigned V)
{
    R pi = *p;
    R d = optim__grad(g, pi, c, V);
    R u = s[0] * k->beta1 + d * k->one_minus_beta1;
    s[0] = s[0] * k->beta2 + k->one_minus_beta2 * d;
    *p = pi * c->decay + k->neg_lr * optim__sign(u);
}
#endif

#if defined(OPTIM__RULE_HOST) && !defined(OPTIM_RULE_LION_HOST)
#define OPTIM_RULE_LION_HOST

static void optim__lion_defaults(optim_hparams *hp)
{
    /* The reference's: lr 1e-4, betas (0.9, 0.99), weight_decay 0, decoupled. */
    hp->lr = 1e-4;
    hp->beta1 = 0.9;
    hp->beta2 = 0.99;
    hp->decoupled_weight_decay = 1;
}

static unsigned optim__lion_slots(const optim_hparams *hp)
{
    (void)hp;
    return 1u;
}

static void optim__lion_prepare(const optim_hparams *hp, const optim__step_in *in, optim_state *st,
                                optim__kcommon *c, union optim__ku *u)
{
    optim__lion_k *k = &u->lion;
    (void)st;
    (void)c;
    k->beta1 = hp->beta1;
    k->one_minus_beta1 = 1.0 - hp->beta1;
    k->beta2 = hp->beta2;
    k->one_minus_beta2 = 1.0 - hp->beta2;
    k->neg_lr = -in->lr;
}

/* Step statistics: the per-tensor values of this step's constants (rules.h). */
static void optim__lion_stats(const optim__kcommon *c, const union optim__ku *u, optim__kstats *out)
{
    (void)c;
    out->effective_lr = -u->lion.neg_lr; /* lr */
}

static const optim__rule_def optim__lion_def = {
    .id = OPTIM_LION, .name = "lion", .torch_name = "Lion",
    .uses = OPTIM__USES(LR) | OPTIM__USES(BETA1) | OPTIM__USES(BETA2) | OPTIM__USES(WEIGHT_DECAY) |
            OPTIM__USES(DECOUPLED_WEIGHT_DECAY) | OPTIM__USES(MAXIMIZE),
    .nslots = 1, .slot_names = {"exp_avg"}, .has_step = 0,
    .defaults = optim__lion_defaults, .slots = optim__lion_slots, .prepare = optim__lion_prepare, .stats = optim__lion_stats};
#endif
