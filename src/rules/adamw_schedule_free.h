/* adamw_schedule_free.h: schedule-free AdamW (Defazio et al. 2024, "The Road
 * Less Scheduled"), as the authors' AdamWScheduleFree computes it
 * (facebookresearch/schedule_free, schedulefree/adamw_schedulefree.py at
 * 59ed9b662d5ec5799aded7390b2482758423653c, its foreach branch; the later
 * inner_momentum, default 0, is not here). The scalars lr_k, lr_max,
 * weight_sum and ckp1 as in sgd_schedule_free.h (schedule_free_host.h); per
 * element, at step t = k + 1:
 *   z = p                                          first step (the reference's clone)
 *   v = beta2 v + (1 - beta2) g^2
 *   gn = g / (sqrt(v / (1 - beta2^t)) + eps)
 *   gn = gn + weight_decay * y                     (at y; its own variant bit)
 *   y = lerp(y, z, ckp1)
 *   y = y + lr_k (beta1 (1 - ckp1) - 1) gn
 *   z = z - lr_k gn
 * Rounded as torch 1.13's CPU kernels round: addcmul and add(alpha) fused
 * multiply-adds, the rest operation by operation, lerp as optim__lerp.
 * The train/eval switch: p = lerp(p, z, w), w = 1 - beta1 (to y) or
 * 1 - 1 / beta1 (to x), the variant OPTIM__ADAMWSF_V_SWITCH.
 * Slots: 0 z (lazy: from p at the first step), 1 exp_avg_sq.
 */
#ifndef OPTIM_RULE_ADAMW_SCHEDULE_FREE_H
#define OPTIM_RULE_ADAMW_SCHEDULE_FREE_H
#include "rule.h"

#define OPTIM__ADAMWSF_V_FIRST 4u  /* z is not initialized: z = p first */
#define OPTIM__ADAMWSF_V_SWITCH 8u /* the train/eval switch: p = lerp(p, z, ckp1), nothing else */
#define OPTIM__ADAMWSF_V_WD 16u    /* weight_decay != 0: gn = gn + weight_decay * y */
#define OPTIM__ADAMW_SCHEDULE_FREE_NVARIANTS 32

#define OPTIM__ADAMW_SCHEDULE_FREE_K(X) \
    X(ckp1) X(lerp_hi) /* as in sgd_schedule_free.h (the switch fills them) */ \
    X(coef) /* lr_k (beta1 (1 - ckp1) - 1) */ \
    X(neg_lr) /* -lr_k */ \
    X(beta2) X(one_minus_beta2) \
    X(bc2) /* 1 - beta2^t */ \
    X(eps)

OPTIM_INLINE unsigned optim__adamw_schedule_free_reads(unsigned V)
{
    if (V & OPTIM__ADAMWSF_V_SWITCH) return 1u;
    return (V & OPTIM__ADAMWSF_V_FIRST) ? 2u : 3u;
}
OPTIM_INLINE unsigned optim__adamw_schedule_free_writes(unsigned V)
{
    return (V & OPTIM__ADAMWSF_V_SWITCH) ? 0u : 3u;
}
#endif

#ifdef OPTIM__MATH
OPTIM_INLINE void OPTIM__T(optim__adamw_schedule_free_elem)(R *p, R g, R *s, const optim__kc *c,
                                                            const OPTIM__KR(adamw_schedule_free) *k, unsigned V)
{
    R y = *p, z, d, v, gn;
    if (V & OPTIM__ADAMWSF_V_SWITCH) {
        *p = optim__lerp(y, s[0], k->ckp1, k->lerp_hi);
        return;
    }
    z = (V & OPTIM__ADAMWSF_V_FIRST) ? y : s[0];
    d = optim__grad(g, y, c, V);
    v = optim__fma(k->one_minus_beta2 * d, d, s[1] * k->beta2);
    s[1] = v;
    gn = d / (optim__sqrt(v / k->bc2) + k->eps);
    if (V & OPTIM__ADAMWSF_V_WD) gn = optim__fma(y, c->wd, gn);
    y = optim__lerp(y, z, k->ckp1, k->lerp_hi);
    *p = optim__fma(gn, k->coef, y);
    s[0] = optim__fma(gn, k->neg_lr, z);
}
#endif

#if defined(OPTIM__RULE_HOST) && !defined(OPTIM_RULE_ADAMW_SCHEDULE_FREE_HOST)
#define OPTIM_RULE_ADAMW_SCHEDULE_FREE_HOST
#include "schedule_free_host.h"

static void optim__adamw_schedule_free_defaults(optim_hparams *hp)
{
    /* The reference's: lr 0.0025, betas (0.9, 0.999), eps 1e-8, weight_decay 0, warmup_steps 0, r 0,
     * weight_lr_power 2. */
    hp->lr = 0.0025;
    hp->beta1 = 0.9;
    hp->beta2 = 0.999;
    hp->eps = 1e-8;
    hp->weight_lr_power = 2.0;
}

static int optim__adamw_schedule_free_check(const optim_hparams *hp, optim_error *err)
{
    return optim__sf_check("adamw_schedule_free", hp, hp->beta1, "beta1", err);
}

static unsigned optim__adamw_schedule_free_slots(const optim_hparams *hp)
{
    (void)hp;
    return 3u;
}

static void optim__adamw_schedule_free_prepare(const optim_hparams *hp, const optim__step_in *in, optim_state *st,
                                               optim__kcommon *c, union optim__ku *u)
{
    optim__adamw_schedule_free_k *k = &u->adamw_schedule_free;
    double lr;
    const double ckp1 = optim__sf_scalars(hp, in->lr, st, &lr);
    k->ckp1 = ckp1;
    k->lerp_hi = fabs((double)(float)ckp1) >= 0.5 ? 1.0 : 0.0;
    k->coef = lr * (hp->beta1 * (1.0 - ckp1) - 1.0);
    k->neg_lr = -lr;
    k->beta2 = hp->beta2;
    k->one_minus_beta2 = 1.0 - hp->beta2;
    k->bc2 = 1.0 - pow(hp->beta2, (double)st->step);
    k->eps = hp->eps;
    /* Weight decay is added to the normalized gradient, not to g: not the shared L2 bit. */
    c->variant &= ~OPTIM__V_L2;
    if (hp->weight_decay != 0) c->variant |= OPTIM__ADAMWSF_V_WD;
    if (!(st->initialized & 1u)) c->variant |= OPTIM__ADAMWSF_V_FIRST;
}

static void optim__adamw_schedule_free_finish(const optim_hparams *hp, optim_state *st)
{
    (void)hp;
    st->initialized |= 1u;
}

/* Step statistics (include/optim_stats.h): the effective lr is the scalar step of the update (the warmed-up lr, the step of z). */
static void optim__adamw_schedule_free_stats(const optim__kcommon *c, const union optim__ku *u, optim__kstats *out)
{
    (void)c;
    out->effective_lr = -u->adamw_schedule_free.neg_lr;
}

static const optim__rule_def optim__adamw_schedule_free_def = {
    .id = OPTIM_ADAMW_SCHEDULE_FREE, .name = "adamw_schedule_free", .torch_name = "AdamWScheduleFree",
    .uses = OPTIM__USES(LR) | OPTIM__USES(BETA1) | OPTIM__USES(BETA2) | OPTIM__USES(EPS) |
            OPTIM__USES(WEIGHT_DECAY) | OPTIM__USES(WARMUP_STEPS) | OPTIM__USES(R) | OPTIM__USES(WEIGHT_LR_POWER),
    .nslots = 2, .slot_names = {"z", "exp_avg_sq"}, .slot_kinds = {OPTIM__SLOT_SIGNED, OPTIM__SLOT_POSITIVE},
    .lazy_slots = 1u, .has_step = 0,
    .defaults = optim__adamw_schedule_free_defaults, .check = optim__adamw_schedule_free_check,
    .slots = optim__adamw_schedule_free_slots, .prepare = optim__adamw_schedule_free_prepare,
    .finish = optim__adamw_schedule_free_finish, .stats = optim__adamw_schedule_free_stats};
#endif
