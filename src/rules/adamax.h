/* adamax.h: AdaMax (Kingma & Ba 2015, section 7.1), as torch.optim.Adamax.
 *
 * torch 1.13's Adamax, per element, at step t:
 *   g = -g if maximize;  g = g + weight_decay * p          (grad.add(param, alpha=wd))
 *   m = beta1 * m + (1 - beta1) * g                         (exp_avg)
 *   u = max(beta2 * u, |g| + eps)                           (exp_inf: torch.amax of the two)
 *   p = p - (lr / (1 - beta1^t)) * m / u
 * Rounded as torch 1.13's CPU kernels round (docs/FIDELITY.md): add_(g, alpha)
 * is one fused multiply-add, m = fma(g, 1 - beta1, round(beta1 * m));
 * exp_inf.mul_(beta2), grad.abs().add_(eps) and the addcdiv_ round operation
 * by operation; a NaN on either side of the max gives NaN (torch.amax).
 * Slots: 0 exp_avg, 1 exp_inf (both zero at the start).
 */
#ifndef OPTIM_RULE_ADAMAX_H
#define OPTIM_RULE_ADAMAX_H
#include "rule.h"

/* No bits of its own: only OPTIM__V_L2. */
#define OPTIM__ADAMAX_NVARIANTS 2

#define OPTIM__ADAMAX_K(X)          \
    X(beta1) X(one_minus_beta1)     \
    X(beta2)                        \
    X(neg_clr) /* -lr / (1 - beta1^t) */ \
    X(eps)

OPTIM_INLINE unsigned optim__adamax_reads(unsigned V)
{
    (void)V;
    return 3u;
}
OPTIM_INLINE unsigned optim__adamax_writes(unsigned V)
{
    (void)V;
    return 3u;
}
#endif

#ifdef OPTIM__MATH
OPTIM_INLINE void OPTIM__T(optim__adamax_elem)(R *p, R g, R *s, const optim__kc *c, const OPTIM__KR(adamax) *k,
                                               unsigned V)
{
    R pi = *p;
    R d = optim__grad(g, pi, c, V);
    R m = optim__fma(d, k->one_minus_beta1, s[0] * k->beta1);
    R u = optim__max_nan(s[1] * k->beta2, optim__fabs(d) + k->eps);
    s[0] = m;
    s[1] = u;
    *p = pi + (k->neg_clr * m) / u;
}
#endif

#if defined(OPTIM__RULE_HOST) && !defined(OPTIM_RULE_ADAMAX_HOST)
#define OPTIM_RULE_ADAMAX_HOST

static void optim__adamax_defaults(optim_hparams *hp)
{
    hp->lr = 2e-3;
    hp->beta1 = 0.9;
    hp->beta2 = 0.999;
    hp->eps = 1e-8;
}

static unsigned optim__adamax_slots(const optim_hparams *hp)
{
    (void)hp;
    return 3u;
}

static void optim__adamax_prepare(const optim_hparams *hp, const optim__step_in *in, optim_state *st,
                                  optim__kcommon *c, union optim__ku *u)
{
    optim__adamax_k *k = &u->adamax;
    (void)c;
    k->beta1 = hp->beta1;
    k->one_minus_beta1 = 1.0 - hp->beta1;
    k->beta2 = hp->beta2;
    /* bias_correction = 1 - beta1 ** step; clr = lr / bias_correction; value=-clr */
    k->neg_clr = -(in->lr / (1.0 - pow(hp->beta1, (double)st->step)));
    k->eps = hp->eps;
}

/* Step statistics: the per-tensor values of this step's constants (rules.h). */
static void optim__adamax_stats(const optim__kcommon *c, const union optim__ku *u, optim__kstats *out)
{
    (void)c;
    out->effective_lr = -u->adamax.neg_clr; /* lr / (1 - beta1^t) */
}

static const optim__rule_def optim__adamax_def = {
    .id = OPTIM_ADAMAX, .name = "adamax", .torch_name = "Adamax",
    .uses = OPTIM__USES(LR) | OPTIM__USES(BETA1) | OPTIM__USES(BETA2) | OPTIM__USES(EPS) |
            OPTIM__USES(WEIGHT_DECAY) | OPTIM__USES(MAXIMIZE),
    .nslots = 2, .slot_names = {"exp_avg", "exp_inf"},
    .slot_kinds = {OPTIM__SLOT_SIGNED, OPTIM__SLOT_POSITIVE}, .has_step = 1,
    .defaults = optim__adamax_defaults, .slots = optim__adamax_slots, .prepare = optim__adamax_prepare, .stats = optim__adamax_stats};
#endif
