/* adadelta.h: AdaDelta, with optional heavy-ball momentum on its update.
 *
 * torch.optim.Adadelta (and the seeds' AdaDelta with eps inside, the default), per element:
 *   g     = -g if maximize;  g = g + weight_decay * p
 *   sq    = rho * sq + (1 - rho) * g^2                    E[g^2]
 *   delta = RMS(acc) / RMS(sq) * g,  RMS(x) = sqrt(x + eps)   (eps outside: sqrt(x) + eps)
 *   acc   = rho * acc + (1 - rho) * delta^2               E[dw^2]
 *   momentum == 0: p = p - lr * delta                       (torch; lr = 1 is the seeds' rule)
 *   momentum  > 0: b = momentum * b + delta;  p = p - lr * b
 * The momentum option is an optim extension (default 0, off): heavy-ball
 * momentum applied to AdaDelta's unit-consistent update; acc still tracks
 * the squared delta, not the momentum step.
 * Rounded as torch 1.13's CPU kernels round (docs/FIDELITY.md): addcmul_ and
 * add_(x, alpha=a) are each one fused multiply-add, so
 *   sq = fma((1 - rho) * g, g, round(rho * sq));  acc = fma((1 - rho) * delta, delta, round(rho * acc));
 *   p = fma(delta, -lr, p);  delta = round(round(RMS(acc) / RMS(sq)) * g).
 * With momentum (no torch counterpart), as buf.mul_(momentum).add_(delta)
 * would: b = round(momentum * b) + delta, p = fma(b, -lr, p).
 * Slots: 0 square_avg, 1 acc_delta, 2 momentum_buffer (momentum > 0).
 */
#ifndef OPTIM_RULE_ADADELTA_H
#define OPTIM_RULE_ADADELTA_H
#include "rule.h"

#define OPTIM__ADADELTA_V_MOM 4u
#define OPTIM__ADADELTA_NVARIANTS 8

#define OPTIM__ADADELTA_K(X) \
    X(rho) X(one_minus_rho) \
    X(eps) \
    X(momentum) \
    X(neg_lr)

OPTIM_INLINE unsigned optim__adadelta_reads(unsigned V)
{
    return 3u | ((V & OPTIM__ADADELTA_V_MOM) ? 4u : 0u);
}
OPTIM_INLINE unsigned optim__adadelta_writes(unsigned V)
{
    return optim__adadelta_reads(V);
}

#endif

#ifdef OPTIM__MATH
OPTIM_INLINE void OPTIM__T(optim__adadelta_elem)(R *p, R g, R *s, const optim__kc *c,
                                       const OPTIM__KR(adadelta) *k, unsigned V)
{
    const unsigned epsin = V & OPTIM__V_EPSIN;
    R pi = *p;
    R d = optim__grad(g, pi, c, V);
    R sq = optim__fma(k->one_minus_rho * d, d, s[0] * k->rho);
    R delta = optim__rms(s[1], k->eps, epsin) / optim__rms(sq, k->eps, epsin) * d;
    s[0] = sq;
    s[1] = optim__fma(k->one_minus_rho * delta, delta, s[1] * k->rho);
    if (V & OPTIM__ADADELTA_V_MOM) {
        R b = s[2] * k->momentum + delta;
        s[2] = b;
        *p = optim__fma(b, k->neg_lr, pi);
    } else {
        *p = optim__fma(delta, k->neg_lr, pi);
    }
}
#endif

#if defined(OPTIM__RULE_HOST) && !defined(OPTIM_RULE_ADADELTA_HOST)
#define OPTIM_RULE_ADADELTA_HOST

static void optim__adadelta_defaults(optim_hparams *hp)
{
    hp->lr = 1.0;
    hp->rho = 0.9;
    hp->eps = 1e-6;
    hp->eps_placement = OPTIM_EPS_INSIDE;
}

static unsigned optim__adadelta_slots(const optim_hparams *hp)
{
    return 3u | (hp->momentum > 0 ? 4u : 0u);
}

static void optim__adadelta_prepare(const optim_hparams *hp, const optim__step_in *in, optim_state *st,
                                    optim__kcommon *c, union optim__ku *u)
{
    optim__adadelta_k *k = &u->adadelta;
    (void)st;
    k->rho = hp->rho;
    k->one_minus_rho = 1.0 - hp->rho;
    k->eps = hp->eps;
    k->momentum = hp->momentum;
    k->neg_lr = -in->lr;
    if (hp->momentum > 0) c->variant |= OPTIM__ADADELTA_V_MOM;
}

/* Step statistics: the per-tensor values of this step's constants (rules.h). */
static void optim__adadelta_stats(const optim__kcommon *c, const union optim__ku *u, optim__kstats *out)
{
    (void)c;
    out->effective_lr = -u->adadelta.neg_lr; /* lr */
}

static const optim__rule_def optim__adadelta_def = {
    .id = OPTIM_ADADELTA, .name = "adadelta", .torch_name = "Adadelta",
    .uses = OPTIM__USES(LR) | OPTIM__USES(RHO) | OPTIM__USES(EPS) | OPTIM__USES(EPS_PLACEMENT) |
            OPTIM__USES(WEIGHT_DECAY) | OPTIM__USES(MOMENTUM) | OPTIM__USES(MAXIMIZE),
    .nslots = 3, .slot_names = {"square_avg", "acc_delta", "momentum_buffer"},
    .slot_kinds = {OPTIM__SLOT_POSITIVE, OPTIM__SLOT_NONNEG, OPTIM__SLOT_SIGNED}, .has_step = 1,
    .defaults = optim__adadelta_defaults, .slots = optim__adadelta_slots, .prepare = optim__adadelta_prepare, .stats = optim__adadelta_stats};
#endif
