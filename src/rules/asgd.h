/* asgd.h: averaged SGD (Polyak & Juditsky 1992), as torch.optim.ASGD.
 *
 * torch 1.13's single-tensor ASGD, per element, at step t, with eta and mu
 * the values the previous step left (eta = lr and mu = 1 at the first):
 *   g  = -g if maximize;  g = g + weight_decay * p        (grad.add(param, alpha=wd))
 *   p  = p * (1 - lambd * eta)                             (param.mul_)
 *   p  = p - eta * g                                       (param.add_(grad, alpha=-eta))
 *   ax = mu != 1 ? ax + (p - ax) * mu : p                  (the average)
 * and then, per parameter, eta = lr / (1 + lambd * lr * t)^alpha and
 * mu = 1 / max(1, t - t0), each rounded to float32 (torch keeps them in
 * 0-dim float32 tensors whatever the parameters' dtype).
 * Rounded as torch's CPU kernels round (docs/FIDELITY.md): add_ with alpha is
 * one fused multiply-add, p = fma(g, -eta, round(p * (1 - lambd * eta)));
 * the average rounds p - ax, the product and the sum separately.
 * Slot 0: ax (zero at the start). Scalar state: eta, kept in the state's
 * mu_product field (NAdam's; no rule has both); mu is a function of t and t0
 * (torch computes it from them at the end of each step), computed in prepare.
 */
#ifndef OPTIM_RULE_ASGD_H
#define OPTIM_RULE_ASGD_H
#include "rule.h"

#define OPTIM__ASGD_V_AVG 2u /* mu != 1: average (else ax = p) */
#define OPTIM__ASGD_NVARIANTS 4

#define OPTIM__ASGD_K(X)                                     \
    X(decay)   /* 1 - lambd * eta */                         \
    X(neg_eta) /* -eta */                                    \
    X(mu)

OPTIM_INLINE unsigned optim__asgd_reads(unsigned V)
{
    return (V & OPTIM__ASGD_V_AVG) ? 1u : 0u;
}
OPTIM_INLINE unsigned optim__asgd_writes(unsigned V)
{
    (void)V;
    return 1u;
}
#endif

#ifdef OPTIM__MATH
OPTIM_INLINE void OPTIM__T(optim__asgd_elem)(R *p, R g, R *s, const optim__kc *c, const OPTIM__KR(asgd) *k,
                                             unsigned V)
{
    R pi = *p;
    R d = optim__grad(g, pi, c, V);
    R pn = optim__fma(d, k->neg_eta, pi * k->decay);
    *p = pn;
    if (V & OPTIM__ASGD_V_AVG)
        s[0] = s[0] + (pn - s[0]) * k->mu;
    else
        s[0] = pn;
}
#endif

#if defined(OPTIM__RULE_HOST) && !defined(OPTIM_RULE_ASGD_HOST)
#define OPTIM_RULE_ASGD_HOST

static void optim__asgd_defaults(optim_hparams *hp)
{
    hp->lr = 1e-2;
    hp->lambd = 1e-4;
    hp->alpha = 0.75;
    hp->t0 = 1e6;
}

static unsigned optim__asgd_slots(const optim_hparams *hp)
{
    (void)hp;
    return 1u;
}

/* mu after step t: torch.tensor(1 / max(1, t - t0)), a float32. */
static double optim__asgd_mu(const optim_hparams *hp, int64_t t)
{
    const double x = (double)t - hp->t0;
    return (double)(float)(1.0 / (x > 1.0 ? x : 1.0));
}

static void optim__asgd_prepare(const optim_hparams *hp, const optim__step_in *in, optim_state *st,
                                optim__kcommon *c, union optim__ku *u)
{
    optim__asgd_k *k = &u->asgd;
    const double t = (double)st->step;
    /* The first step's eta is torch.tensor(group['lr']): the lr of that step, in float32. */
    const double eta = st->step == 1 ? (double)(float)in->lr : st->mu_product;
    const double mu = st->step == 1 ? 1.0 : optim__asgd_mu(hp, st->step - 1);
    k->decay = 1.0 - hp->lambd * eta;
    k->neg_eta = -eta;
    k->mu = mu;
    if (mu != 1.0) c->variant |= OPTIM__ASGD_V_AVG;
    /* new_eta = torch.tensor(lr / math.pow(1 + lambd * lr * step, alpha)) */
    st->mu_product = (double)(float)(in->lr / pow(1.0 + hp->lambd * in->lr * t, hp->alpha));
}

/* Step statistics: the per-tensor values of this step's constants (rules.h). */
static void optim__asgd_stats(const optim__kcommon *c, const union optim__ku *u, optim__kstats *out)
{
    (void)c;
    out->effective_lr = -u->asgd.neg_eta; /* eta */
}

static const optim__rule_def optim__asgd_def = {
    .id = OPTIM_ASGD, .name = "asgd", .torch_name = "ASGD",
    .uses = OPTIM__USES(LR) | OPTIM__USES(LAMBD) | OPTIM__USES(ALPHA) | OPTIM__USES(T0) |
            OPTIM__USES(WEIGHT_DECAY) | OPTIM__USES(MAXIMIZE),
    .nslots = 1, .slot_names = {"ax"}, .has_step = 1,
    .defaults = optim__asgd_defaults, .slots = optim__asgd_slots, .prepare = optim__asgd_prepare, .stats = optim__asgd_stats};
#endif
