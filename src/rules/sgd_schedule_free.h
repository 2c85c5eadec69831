/* sgd_schedule_free.h: schedule-free SGD (Defazio et al. 2024, "The Road
 * Less Scheduled"), as the authors' SGDScheduleFree computes it
 * (facebookresearch/schedule_free, schedulefree/sgd_schedulefree.py at
 * 59ed9b662d5ec5799aded7390b2482758423653c, its foreach branch). The
 * parameter holds y while training; z is the SGD sequence, x the average
 * (x itself is never stored: eval() moves p to it). Per step k (from 0):
 *   lr_k = lr * (k + 1) / warmup_steps while k < warmup_steps, else lr
 *   lr_max = max(lr_k, lr_max);  weight = (k + 1)^r * lr_max^weight_lr_power
 *   weight_sum += weight;  ckp1 = weight / weight_sum (0 if weight_sum = 0)
 * (per parameter here; the reference keeps them per group: the same numbers
 * while every parameter of a group has a gradient at every step), and per element:
 *   z = p                                  first step (the reference's clone)
 *   g = g + weight_decay * y               (at y)
 *   y = lerp(y, z, ckp1)
 *   y = y + lr_k (momentum (1 - ckp1) - 1) g
 *   z = z - lr_k g
 * Rounded as torch 1.13's CPU kernels round: add(alpha) a fused multiply-add,
 * lerp as rule_math.h's optim__lerp.
 * The train/eval switch (optim_schedule_free_train/_eval, the variant
 * OPTIM__SGDSF_V_SWITCH, src/schedule_free.c): p = lerp(p, z, w) with
 * w = 1 - momentum (to y) or 1 - 1 / momentum (to x); the gradient unused.
 * Slot 0: z (filled from p at the first step: lazy).
 */
#ifndef OPTIM_RULE_SGD_SCHEDULE_FREE_H
#define OPTIM_RULE_SGD_SCHEDULE_FREE_H
#include "rule.h"

#define OPTIM__SGDSF_V_FIRST 4u  /* z is not initialized: z = p first */
#define OPTIM__SGDSF_V_SWITCH 8u /* the train/eval switch: p = lerp(p, z, ckp1), nothing else */
#define OPTIM__SGD_SCHEDULE_FREE_NVARIANTS 16

/* ckp1 and lerp_hi are the switch's weight too (the same fields in both
 * schedule-free rules: src/schedule_free.c fills them). */
#define OPTIM__SGD_SCHEDULE_FREE_K(X) \
    X(ckp1) X(lerp_hi) /* 1 when |ckp1| >= 0.5 (optim__lerp) */ \
    X(coef) /* lr_k (momentum (1 - ckp1) - 1) */ \
    X(neg_lr) /* -lr_k */

OPTIM_INLINE unsigned optim__sgd_schedule_free_reads(unsigned V)
{
    return (V & OPTIM__SGDSF_V_FIRST) ? 0u : 1u;
}
OPTIM_INLINE unsigned optim__sgd_schedule_free_writes(unsigned V)
{
    return (V & OPTIM__SGDSF_V_SWITCH) ? 0u : 1u;
}
#endif

#ifdef OPTIM__MATH
OPTIM_INLINE void OPTIM__T(optim__sgd_schedule_free_elem)(R *p, R g, R *s, const optim__kc *c,
                                                          const OPTIM__KR(sgd_schedule_free) *k, unsigned V)
{
    R y = *p, z, d;
    if (V & OPTIM__SGDSF_V_SWITCH) {
        *p = optim__lerp(y, s[0], k->ckp1, k->lerp_hi);
        return;
    }
    z = (V & OPTIM__SGDSF_V_FIRST) ? y : s[0];
    d = optim__grad(g, y, c, V);
    y = optim__lerp(y, z, k->ckp1, k->lerp_hi);
    *p = optim__fma(d, k->coef, y);
    s[0] = optim__fma(d, k->neg_lr, z);
}
#endif

#if defined(OPTIM__RULE_HOST) && !defined(OPTIM_RULE_SGD_SCHEDULE_FREE_HOST)
#define OPTIM_RULE_SGD_SCHEDULE_FREE_HOST
#include "schedule_free_host.h"

static void optim__sgd_schedule_free_defaults(optim_hparams *hp)
{
    /* The reference's: lr 1.0, momentum 0.9, weight_decay 0, warmup_steps 0, r 0, weight_lr_power 2. */
    hp->lr = 1.0;
    hp->momentum = 0.9;
    hp->weight_lr_power = 2.0;
}

static int optim__sgd_schedule_free_check(const optim_hparams *hp, optim_error *err)
{
    return optim__sf_check("sgd_schedule_free", hp, hp->momentum, "momentum", err);
}

static unsigned optim__sgd_schedule_free_slots(const optim_hparams *hp)
{
    (void)hp;
    return 1u;
}

static void optim__sgd_schedule_free_prepare(const optim_hparams *hp, const optim__step_in *in, optim_state *st,
                                             optim__kcommon *c, union optim__ku *u)
{
    optim__sgd_schedule_free_k *k = &u->sgd_schedule_free;
    double lr;
    const double ckp1 = optim__sf_scalars(hp, in->lr, st, &lr);
    /* weight_decay is L2 at y: optim__prepare set OPTIM__V_L2 (decoupled_weight_decay is 0). */
    k->ckp1 = ckp1;
    k->lerp_hi = fabs((double)(float)ckp1) >= 0.5 ? 1.0 : 0.0;
    k->coef = lr * (hp->momentum * (1.0 - ckp1) - 1.0);
    k->neg_lr = -lr;
    if (!(st->initialized & 1u)) c->variant |= OPTIM__SGDSF_V_FIRST;
}

static void optim__sgd_schedule_free_finish(const optim_hparams *hp, optim_state *st)
{
    (void)hp;
    st->initialized |= 1u;
}

/* Step statistics (include/optim_stats.h): the effective lr is the scalar step of the update (the warmed-up lr, the step of z). */
static void optim__sgd_schedule_free_stats(const optim__kcommon *c, const union optim__ku *u, optim__kstats *out)
{
    (void)c;
    out->effective_lr = -u->sgd_schedule_free.neg_lr;
}

static const optim__rule_def optim__sgd_schedule_free_def = {
    .id = OPTIM_SGD_SCHEDULE_FREE, .name = "sgd_schedule_free", .torch_name = "SGDScheduleFree",
    .uses = OPTIM__USES(LR) | OPTIM__USES(MOMENTUM) | OPTIM__USES(WEIGHT_DECAY) | OPTIM__USES(WARMUP_STEPS) |
            OPTIM__USES(R) | OPTIM__USES(WEIGHT_LR_POWER),
    .nslots = 1, .slot_names = {"z"}, .slot_kinds = {OPTIM__SLOT_SIGNED}, .lazy_slots = 1u, .has_step = 0,
    .defaults = optim__sgd_schedule_free_defaults, .check = optim__sgd_schedule_free_check,
    .slots = optim__sgd_schedule_free_slots, .prepare = optim__sgd_schedule_free_prepare,
    .finish = optim__sgd_schedule_free_finish, .stats = optim__sgd_schedule_free_stats};
#endif
