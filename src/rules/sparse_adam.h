/* sparse_adam.h: SparseAdam, the lazy Adam of torch.optim.SparseAdam.
 *
 * Only the rows present in a sparse gradient (optim_sparse.h) are touched:
 * their moments and parameters are updated, every other row keeps every
 * byte. The step counter is the parameter's, counted at every step it has
 * a gradient (empty or not), as torch 1.13 counts it. Per element of a
 * present row, at step t, torch 1.13's _functional.sparse_adam:
 *   g  = -g if maximize
 *   um = (g - m) * (1 - beta1)             grad_values.sub(old).mul_(1 - beta1)
 *   m  = m + um                            exp_avg.add_(sparse(um))
 *   uv = (g * g - v) * (1 - beta2)         grad_values.pow(2).sub_(old).mul_(1 - beta2)
 *   v  = v + uv                            exp_avg_sq.add_(sparse(uv))
 *   numer = um + m_old  (= m, the same rounding);  denom = sqrt(uv + v_old) + eps (= sqrt(v) + eps)
 *   p  = p + (-step_size) * (numer / denom)   step_size = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
 * Every operation rounds on its own (torch adds a sparse tensor with alpha 1,
 * so nothing is fused); -step_size is computed in double and rounded to the
 * compute type, as torch multiplies a float32 tensor by a Python float.
 * Slots: 0 exp_avg, 1 exp_avg_sq. A dense step on it is refused by name
 * (torch: "SparseAdam does not support dense gradients").
 */
#ifndef OPTIM_RULE_SPARSE_ADAM_H
#define OPTIM_RULE_SPARSE_ADAM_H
#include "rule.h"

#define OPTIM__SPARSE_ADAM_NVARIANTS 1

#define OPTIM__SPARSE_ADAM_K(X) \
    X(one_minus_beta1)          \
    X(one_minus_beta2)          \
    X(neg_step_size) /* -(lr * sqrt(1 - beta2^t) / (1 - beta1^t)) */ \
    X(eps)

OPTIM_INLINE unsigned optim__sparse_adam_reads(unsigned V)
{
    (void)V;
    return 3u;
}
OPTIM_INLINE unsigned optim__sparse_adam_writes(unsigned V)
{
    (void)V;
    return 3u;
}

#endif

#ifdef OPTIM__MATH
OPTIM_INLINE void OPTIM__T(optim__sparse_adam_elem)(R *p, R g, R *s, const optim__kc *c,
                                                    const OPTIM__KR(sparse_adam) *k, unsigned V)
{
    R pi = *p;
    R d = optim__grad(g, pi, c, V);
    R m0 = s[0], v0 = s[1];
    R um = (d - m0) * k->one_minus_beta1;
    R uv = (d * d - v0) * k->one_minus_beta2;
    R numer = um + m0;
    R denom = optim__sqrt(uv + v0) + k->eps;
    s[0] = m0 + um;
    s[1] = v0 + uv;
    *p = pi + k->neg_step_size * (numer / denom);
}
#endif

#if defined(OPTIM__RULE_HOST) && !defined(OPTIM_RULE_SPARSE_ADAM_HOST)
#define OPTIM_RULE_SPARSE_ADAM_HOST

static void optim__sparse_adam_defaults(optim_hparams *hp)
{
    hp->lr = 1e-3;
    hp->beta1 = 0.9;
    hp->beta2 = 0.999;
    hp->eps = 1e-8;
}

static unsigned optim__sparse_adam_slots(const optim_hparams *hp)
{
    (void)hp;
    return 3u;
}

static void optim__sparse_adam_prepare(const optim_hparams *hp, const optim__step_in *in, optim_state *st,
                                       optim__kcommon *c, union optim__ku *u)
{
    optim__sparse_adam_k *k = &u->sparse_adam;
    const double t = (double)st->step;
    const double bc1 = 1.0 - pow(hp->beta1, t), bc2 = 1.0 - pow(hp->beta2, t);
    (void)c;
    k->one_minus_beta1 = 1.0 - hp->beta1;
    k->one_minus_beta2 = 1.0 - hp->beta2;
    k->neg_step_size = -(in->lr * sqrt(bc2) / bc1); /* torch: lr * math.sqrt(bc2) / bc1, left to right */
    k->eps = hp->eps;
}

static int optim__sparse_adam_sparse(const optim_hparams *hp, optim_error *err)
{
    (void)hp;
    (void)err;
    return OPTIM_OK;
}

/* Step statistics: the per-tensor values of this step's constants (rules.h). */
static void optim__sparse_adam_stats(const optim__kcommon *c, const union optim__ku *u, optim__kstats *out)
{
    (void)c;
    out->effective_lr = -u->sparse_adam.neg_step_size; /* lr sqrt(1 - beta2^t) / (1 - beta1^t) */
}

static const optim__rule_def optim__sparse_adam_def = {
    .id = OPTIM_SPARSE_ADAM, .name = "sparse_adam", .torch_name = "SparseAdam",
    .uses = OPTIM__USES(LR) | OPTIM__USES(BETA1) | OPTIM__USES(BETA2) | OPTIM__USES(EPS) | OPTIM__USES(MAXIMIZE),
    .nslots = 2, .slot_names = {"exp_avg", "exp_avg_sq"},
    .slot_kinds = {OPTIM__SLOT_SIGNED, OPTIM__SLOT_POSITIVE}, .has_step = 1,
    .defaults = optim__sparse_adam_defaults, .slots = optim__sparse_adam_slots,
    .prepare = optim__sparse_adam_prepare, .sparse = optim__sparse_adam_sparse, .sparse_only = 1, .stats = optim__sparse_adam_stats};
#endif
