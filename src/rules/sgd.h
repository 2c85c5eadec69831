/* sgd.h: stochastic gradient descent with momentum, dampening and Nesterov.
 *
 * torch.optim.SGD (and the seeds' w <- w - eps * g), per element:
 *   g  = -g if maximize;  g = g + weight_decay * p
 *   if momentum != 0:
 *       b = g                                  first step with momentum
 *       b = momentum * b + (1 - dampening) * g  later steps
 *       g = g + momentum * b   if nesterov,  else g = b
 *   p = p - lr * g
 * Rounded as torch 1.13's CPU kernels round (docs/FIDELITY.md): each
 * add(x, alpha=a) is one fused multiply-add, so
 *   b = fma(g, 1 - dampening, round(b * momentum));  g = fma(b, momentum, g);
 *   p = fma(g, -lr, p).
 * Slot 0: momentum_buffer (only with momentum; filled from the first gradient).
 */
#ifndef OPTIM_RULE_SGD_H
#define OPTIM_RULE_SGD_H
#include "rule.h"

#define OPTIM__SGD_V_MOM 4u   /* momentum != 0 */
#define OPTIM__SGD_V_FIRST 8u /* the buffer is not initialized yet: b = g */
#define OPTIM__SGD_V_NEST 16u /* Nesterov */
#define OPTIM__SGD_NVARIANTS 32

#define OPTIM__SGD_K(X) \
    X(momentum) \
    X(one_minus_dampening) \
    X(neg_lr)

OPTIM_INLINE unsigned optim__sgd_reads(unsigned V)
{
    return (V & OPTIM__SGD_V_MOM) && !(V & OPTIM__SGD_V_FIRST) ? 1u : 0u;
}
OPTIM_INLINE unsigned optim__sgd_writes(unsigned V)
{
    return (V & OPTIM__SGD_V_MOM) ? 1u : 0u;
}

#endif

#ifdef OPTIM__MATH
OPTIM_INLINE void OPTIM__T(optim__sgd_elem)(R *p, R g, R *s, const optim__kc *c, const OPTIM__KR(sgd) *k,
                                  unsigned V)
{
    R pi = *p;
    R d = optim__grad(g, pi, c, V);
    if (V & OPTIM__SGD_V_MOM) {
        R b = (V & OPTIM__SGD_V_FIRST) ? d
                                          : optim__fma(d, k->one_minus_dampening, s[0] * k->momentum);
        s[0] = b;
        d = (V & OPTIM__SGD_V_NEST) ? optim__fma(b, k->momentum, d) : b;
    }
    *p = optim__fma(d, k->neg_lr, pi);
}
#endif

#if defined(OPTIM__RULE_HOST) && !defined(OPTIM_RULE_SGD_HOST)
#define OPTIM_RULE_SGD_HOST

static void optim__sgd_defaults(optim_hparams *hp)
{
    /* torch requires lr; 1e-3 is a neutral value so that a default group is valid. */
    hp->lr = 1e-3;
}

static int optim__sgd_check(const optim_hparams *hp, optim_error *err)
{
    OPTIM__FAIL_IF(hp->nesterov && !(hp->momentum > 0), err, OPTIM_EINVAL,
                   "sgd: nesterov = 1 requires momentum > 0 (momentum = %.10g)", hp->momentum);
    OPTIM__FAIL_IF(hp->nesterov && hp->dampening != 0, err, OPTIM_EINVAL,
                   "sgd: nesterov = 1 requires dampening = 0 (dampening = %.10g)", hp->dampening);
    return OPTIM_OK;
}

static unsigned optim__sgd_slots(const optim_hparams *hp)
{
    return hp->momentum != 0 ? 1u : 0u;
}

static void optim__sgd_prepare(const optim_hparams *hp, const optim__step_in *in, optim_state *st,
                               optim__kcommon *c, union optim__ku *u)
{
    optim__sgd_k *k = &u->sgd;
    (void)st;
    k->momentum = hp->momentum;
    k->one_minus_dampening = 1.0 - hp->dampening;
    k->neg_lr = -in->lr;
    if (hp->momentum != 0) {
        c->variant |= OPTIM__SGD_V_MOM;
        if (!(st->initialized & 1u)) c->variant |= OPTIM__SGD_V_FIRST;
        if (hp->nesterov) c->variant |= OPTIM__SGD_V_NEST;
    }
}

static void optim__sgd_finish(const optim_hparams *hp, optim_state *st)
{
    if (hp->momentum != 0) st->initialized |= 1u;
}

/* A sparse step is the dense step's math on the rows present (torch's
 * param.add_(sparse, alpha=-lr) is the same fused multiply-add, applied
 * entry by entry to an uncoalesced gradient: so are repeated rows here,
 * sparse_in_order). torch
 * refuses weight decay with a sparse gradient (add(sparse, dense)); its
 * momentum buffer, a sparse tensor there, decays every row it ever held at
 * every step, which is no longer O(rows present): refused here. */
static int optim__sgd_sparse(const optim_hparams *hp, optim_error *err)
{
    OPTIM__FAIL_IF(hp->weight_decay != 0, err, OPTIM_EUNSUPPORTED,
                   "sgd: weight_decay = %.10g is not compatible with sparse gradients (as in torch)",
                   hp->weight_decay);
    OPTIM__FAIL_IF(hp->momentum != 0, err, OPTIM_EUNSUPPORTED,
                   "sgd: momentum = %.10g with a sparse gradient: the buffer decays every row at every step; "
                   "step with the dense gradient",
                   hp->momentum);
    return OPTIM_OK;
}

/* Step statistics: the per-tensor values of this step's constants (rules.h). */
static void optim__sgd_stats(const optim__kcommon *c, const union optim__ku *u, optim__kstats *out)
{
    (void)c;
    out->effective_lr = -u->sgd.neg_lr; /* lr */
}

static const optim__rule_def optim__sgd_def = {
    .id = OPTIM_SGD, .name = "sgd", .torch_name = "SGD",
    .uses = OPTIM__USES(LR) | OPTIM__USES(MOMENTUM) | OPTIM__USES(DAMPENING) | OPTIM__USES(NESTEROV) |
            OPTIM__USES(WEIGHT_DECAY) | OPTIM__USES(MAXIMIZE),
    .nslots = 1, .slot_names = {"momentum_buffer"}, .lazy_slots = 1u, .has_step = 0,
    .defaults = optim__sgd_defaults, .check = optim__sgd_check, .slots = optim__sgd_slots,
    .prepare = optim__sgd_prepare, .finish = optim__sgd_finish, .sparse = optim__sgd_sparse,
    .sparse_in_order = 1, .stats = optim__sgd_stats};
#endif
