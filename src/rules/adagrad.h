/* adagrad.h: AdaGrad.
 *
 * torch.optim.Adagrad, per element, at step t:
 *   g   = -g if maximize;  g = g + weight_decay * p
 *   clr = lr / (1 + (t - 1) * lr_decay)
 *   sum = sum + g * g
 *   p   = p - clr * g / (sqrt(sum) + eps)       eps outside (torch)
 *   p   = p - clr * g / sqrt(sum + eps)         eps inside (the seeds' form)
 * Rounded as torch 1.13's CPU kernels round (docs/FIDELITY.md): state_sum.addcmul_(g, g)
 * is one fused multiply-add, sum = fma(g, g, sum); param.addcdiv_ rounds
 * -clr * g, the quotient and the sum separately.
 * Slot 0: sum, starting at initial_accumulator_value.
 */
#ifndef OPTIM_RULE_ADAGRAD_H
#define OPTIM_RULE_ADAGRAD_H
#include "rule.h"

/* A sparse step (optim_sparse.h), rounded as torch 1.13's sparse path:
 * state_sum.add_(sparse(g.pow(2))) rounds g*g and the sum apart, and
 * param.add_(sparse(g / std), alpha=-clr) is one fused multiply-add. */
#define OPTIM__ADAGRAD_V_SPARSE 4u
#define OPTIM__ADAGRAD_NVARIANTS 8

#define OPTIM__ADAGRAD_K(X) \
    X(neg_clr) \
    X(eps)

OPTIM_INLINE unsigned optim__adagrad_reads(unsigned V)
{
    (void)V;
    return 1u;
}
OPTIM_INLINE unsigned optim__adagrad_writes(unsigned V)
{
    (void)V;
    return 1u;
}

#endif

#ifdef OPTIM__MATH
OPTIM_INLINE void OPTIM__T(optim__adagrad_elem)(R *p, R g, R *s, const optim__kc *c,
                                      const OPTIM__KR(adagrad) *k, unsigned V)
{
    R pi = *p;
    R d = optim__grad(g, pi, c, V);
    if (V & OPTIM__ADAGRAD_V_SPARSE) {
        R sum = s[0] + d * d;
        s[0] = sum;
        *p = optim__fma(k->neg_clr, d / optim__rms(sum, k->eps, V & OPTIM__V_EPSIN), pi);
    } else {
        R sum = optim__fma(d, d, s[0]);
        s[0] = sum;
        *p = pi + (k->neg_clr * d) / optim__rms(sum, k->eps, V & OPTIM__V_EPSIN);
    }
}
#endif

#if defined(OPTIM__RULE_HOST) && !defined(OPTIM_RULE_ADAGRAD_HOST)
#define OPTIM_RULE_ADAGRAD_HOST

static void optim__adagrad_defaults(optim_hparams *hp)
{
    hp->lr = 1e-2;
    hp->eps = 1e-10;
}

static unsigned optim__adagrad_slots(const optim_hparams *hp)
{
    (void)hp;
    return 1u;
}

static double optim__adagrad_initial(const optim_hparams *hp, int slot)
{
    (void)slot;
    return hp->initial_accumulator_value;
}

/* torch 1.13: "weight_decay option is not compatible with sparse gradients". */
static int optim__adagrad_sparse(const optim_hparams *hp, optim_error *err)
{
    OPTIM__FAIL_IF(hp->weight_decay != 0, err, OPTIM_EUNSUPPORTED,
                   "adagrad: weight_decay = %.10g is not compatible with sparse gradients (as in torch)",
                   hp->weight_decay);
    return OPTIM_OK;
}

/* Step statistics: the per-tensor values of this step's constants (rules.h). */
static void optim__adagrad_stats(const optim__kcommon *c, const union optim__ku *u, optim__kstats *out)
{
    (void)c;
    out->effective_lr = -u->adagrad.neg_clr; /* lr / (1 + (t - 1) lr_decay) */
}

static void optim__adagrad_prepare(const optim_hparams *hp, const optim__step_in *in, optim_state *st,
                                   optim__kcommon *c, union optim__ku *u)
{
    optim__adagrad_k *k = &u->adagrad;
    (void)c;
    k->neg_clr = -(in->lr / (1.0 + (double)(st->step - 1) * hp->lr_decay));
    k->eps = hp->eps;
}

static const optim__rule_def optim__adagrad_def = {
    .id = OPTIM_ADAGRAD, .name = "adagrad", .torch_name = "Adagrad",
    .uses = OPTIM__USES(LR) | OPTIM__USES(LR_DECAY) | OPTIM__USES(WEIGHT_DECAY) |
            OPTIM__USES(INITIAL_ACCUMULATOR_VALUE) | OPTIM__USES(EPS) | OPTIM__USES(EPS_PLACEMENT) |
            OPTIM__USES(MAXIMIZE),
    .nslots = 1, .slot_names = {"sum"},
    .slot_kinds = {OPTIM__SLOT_POSITIVE}, .has_step = 1,
    .defaults = optim__adagrad_defaults, .slots = optim__adagrad_slots, .initial = optim__adagrad_initial,
    .prepare = optim__adagrad_prepare, .sparse = optim__adagrad_sparse,
    .sparse_variant = OPTIM__ADAGRAD_V_SPARSE, .stats = optim__adagrad_stats};
#endif
