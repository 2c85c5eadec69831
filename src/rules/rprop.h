/* rprop.h: resilient backpropagation (Riedmiller & Braun 1993), as torch.optim.Rprop.
 *
 * torch 1.13's Rprop, per element (no weight decay):
 *   g  = -g if maximize
 *   f  = etaplus if g * prev > 0, etaminus if g * prev < 0, 1 if it is 0
 *        (sign(grad.mul(prev)), then the three masked fills, in torch's order)
 *   step_size = clamp(step_size * f, step_size_min, step_size_max)
 *   g' = 0 where f == etaminus (the sign flipped: no step, forget the gradient), else g
 *   p  = p - sign(g') * step_size                       (param.addcmul_(grad.sign(), step_size, value=-1))
 *   prev = g'
 * etaplus and etaminus are written into a tensor of the parameters' dtype,
 * so they are compared and multiplied in it (c(x) of docs/FIDELITY.md); the
 * addcmul_ is one fused multiply-add of -sign(g') (exact) and step_size.
 * torch 1.13's sign(NaN) is 0 (on every path and size): a NaN g * prev gives
 * f = 1, and a NaN g' moves p by 0, so a NaN gradient element leaves p and
 * step_size as they were and only prev becomes NaN (until the next finite
 * gradient replaces it); optim computes the same (optim__sign0).
 * Slots: 0 prev (zero at the start), 1 step_size (lr at the start).
 */
#ifndef OPTIM_RULE_RPROP_H
#define OPTIM_RULE_RPROP_H
#include "rule.h"

#define OPTIM__RPROP_NVARIANTS 1

#define OPTIM__RPROP_K(X)           \
    X(etaminus) X(etaplus)          \
    X(step_size_min) X(step_size_max)

OPTIM_INLINE unsigned optim__rprop_reads(unsigned V)
{
    (void)V;
    return 3u;
}
OPTIM_INLINE unsigned optim__rprop_writes(unsigned V)
{
    (void)V;
    return 3u;
}
#endif

#ifdef OPTIM__MATH
OPTIM_INLINE void OPTIM__T(optim__rprop_elem)(R *p, R g, R *s, const optim__kc *c, const OPTIM__KR(rprop) *k,
                                              unsigned V)
{
    R d = optim__grad(g, *p, c, V);
    R x = d * s[0];
    R f = x > 0 ? k->etaplus : (x < 0 ? k->etaminus : (R)1);
    R ss = optim__clamp(s[1] * f, k->step_size_min, k->step_size_max);
    R dz = f == k->etaminus ? (R)0 : d;
    s[1] = ss;
    s[0] = dz;
    *p = optim__fma(-optim__sign0(dz), ss, *p);
}
#endif

#if defined(OPTIM__RULE_HOST) && !defined(OPTIM_RULE_RPROP_HOST)
#define OPTIM_RULE_RPROP_HOST

static void optim__rprop_defaults(optim_hparams *hp)
{
    hp->lr = 1e-2;
    hp->etaminus = 0.5;
    hp->etaplus = 1.2;
    hp->step_size_min = 1e-6;
    hp->step_size_max = 50;
}

static unsigned optim__rprop_slots(const optim_hparams *hp)
{
    (void)hp;
    return 3u;
}

/* step_size starts at lr (grad.new().resize_as_(grad).fill_(group['lr'])); prev at 0. */
static double optim__rprop_initial(const optim_hparams *hp, int slot)
{
    return slot == 1 ? hp->lr : 0.0;
}

static void optim__rprop_prepare(const optim_hparams *hp, const optim__step_in *in, optim_state *st,
                                 optim__kcommon *c, union optim__ku *u)
{
    optim__rprop_k *k = &u->rprop;
    (void)in;
    (void)st;
    (void)c;
    k->etaminus = hp->etaminus;
    k->etaplus = hp->etaplus;
    k->step_size_min = hp->step_size_min;
    k->step_size_max = hp->step_size_max;
}

static const optim__rule_def optim__rprop_def = {
    .id = OPTIM_RPROP, .name = "rprop", .torch_name = "Rprop",
    .uses = OPTIM__USES(LR) | OPTIM__USES(ETAMINUS) | OPTIM__USES(ETAPLUS) | OPTIM__USES(STEP_SIZE_MIN) |
            OPTIM__USES(STEP_SIZE_MAX) | OPTIM__USES(MAXIMIZE),
    .nslots = 2, .slot_names = {"prev", "step_size"},
    .slot_kinds = {OPTIM__SLOT_SIGNED, OPTIM__SLOT_POSITIVE}, .has_step = 1, /* a step size stored as 0 would never grow */
    .defaults = optim__rprop_defaults, .slots = optim__rprop_slots, .initial = optim__rprop_initial,
    .prepare = optim__rprop_prepare};
#endif
