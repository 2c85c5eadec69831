/* muon.h: Muon, MomentUm Orthogonalized by Newton-Schulz (Keller Jordan
 * 2024, github KellerJordan/Muon), as torch.optim.Muon (torch >= 2.9,
 * torch/optim/_muon.py, _single_tensor_muon) computes it, for a 2-D
 * parameter P of rows x cols at each step:
 *   B = lerp(B, G, 1 - momentum)              the momentum buffer, B_0 = 0
 *   U = lerp(G, B, momentum) if nesterov, else B
 *   X = U / max(||U||_F, eps)
 *   ns_steps times:  A = X X^T,  X = a X + (b A + c A A) X     (rows <= cols)
 *                    A = X^T X,  X = a X + X (b A + c A A)     (rows > cols:
 *                    the same iteration on X^T, written without a transpose)
 *   P = P * (1 - lr * weight_decay)           decoupled weight decay
 *   P = P - adjusted_lr * X,  adjusted_lr = lr * sqrt(max(1, rows / cols))
 *       ("original") or lr * 0.2 * sqrt(max(rows, cols)) ("match_rms_adamw")
 * lerp(s, e, w) is torch's: s + w (e - s) when |w| < 0.5, else
 * e - (e - s)(1 - w). docs/rules/muon.md says where this differs from torch
 * (float32 iteration, not bfloat16) and from the reference.
 *
 * The element-wise parts are this rule's loops, in two phases chosen by a
 * variant bit; the norm and the matrix products are not element-wise, and
 * src/muon.c runs a step of a Muon parameter as
 *   phase 1 (loop, APPLY clear): B and U (U into the step's scratch matrix,
 *            handed to the loop as slot 1: the state has one slot, B);
 *   ||U|| (a fixed-order block reduction), X = U / max(||U||, eps) (a
 *            kernel), the Newton-Schulz iterations (liboptim_muon's hook:
 *            OpenBLAS sgemm, src/optim_muon_ext.h);
 *   phase 2 (loop, APPLY set): P from X.
 * Slot 0: momentum_buffer (zero at the start). No step counter in torch's
 * state; ours counts steps (as every rule's) and torch has none to compare.
 */
#ifndef OPTIM_RULE_MUON_H
#define OPTIM_RULE_MUON_H
#include "rule.h"

#define OPTIM__MUON_V_NESTEROV 1u /* U = lerp(G, B, momentum) (else U = B) */
#define OPTIM__MUON_V_APPLY 2u    /* phase 2: P = P * decay - adjusted_lr * X (X in slot 1) */
#define OPTIM__MUON_NVARIANTS 4

#define OPTIM__MUON_K(X)                                              \
    X(w) X(one_minus_w)   /* the buffer's lerp weight 1 - momentum, and 1 - it */ \
    X(w_small)            /* 1 if |1 - momentum| < 0.5 (torch's first form) */     \
    X(mu) X(one_minus_mu) /* nesterov's lerp weight momentum, and 1 - it */        \
    X(mu_small)           /* 1 if |momentum| < 0.5 */                              \
    X(neg_lr)             /* -adjusted lr (src/muon.c folds in the shape's factor) */

/* Phase 1 reads B, writes B and U (slot 1, the scratch); phase 2 reads X (slot 1). */
OPTIM_INLINE unsigned optim__muon_reads(unsigned V)
{
    return (V & OPTIM__MUON_V_APPLY) ? 2u : 1u;
}
OPTIM_INLINE unsigned optim__muon_writes(unsigned V)
{
    return (V & OPTIM__MUON_V_APPLY) ? 0u : 3u;
}

/* The factor of the learning rate for a rows x cols parameter (torch's _adjust_lr). */
OPTIM_INLINE double optim__muon_lr_factor(const optim_hparams *hp, double rows, double cols)
{
    if (hp->adjust_lr == OPTIM_MUON_ADJUST_MATCH_RMS_ADAMW) return 0.2 * sqrt(rows > cols ? rows : cols);
    return sqrt(rows / cols > 1.0 ? rows / cols : 1.0);
}
#endif

#ifdef OPTIM__MATH
/* torch's lerp(s, e, w) with the form chosen on the host (small: |w| < 0.5). */
OPTIM_INLINE R OPTIM__T(optim__muon_lerp)(R s, R e, R w, R one_minus_w, R small)
{
    R a = s + w * (e - s);
    R b = e - (e - s) * one_minus_w;
    return small != (R)0 ? a : b;
}

OPTIM_INLINE void OPTIM__T(optim__muon_elem)(R *p, R g, R *s, const optim__kc *c, const OPTIM__KR(muon) *k,
                                             unsigned V)
{
    if (V & OPTIM__MUON_V_APPLY) {
        /* torch: param.mul_(1 - lr * wd); param.add_(update, alpha=-adjusted_lr) (one rounding: fma). */
        *p = optim__fma(s[1], k->neg_lr, *p * c->decay);
    } else {
        R d = optim__grad(g, *p, c, V & OPTIM__V_CLAMP);
        R b = OPTIM__T(optim__muon_lerp)(s[0], d, k->w, k->one_minus_w, k->w_small);
        s[0] = b;
        s[1] = (V & OPTIM__MUON_V_NESTEROV) ? OPTIM__T(optim__muon_lerp)(d, b, k->mu, k->one_minus_mu, k->mu_small)
                                           : b;
    }
}
#endif

#if defined(OPTIM__RULE_HOST) && !defined(OPTIM_RULE_MUON_HOST)
#define OPTIM_RULE_MUON_HOST

static void optim__muon_defaults(optim_hparams *hp)
{
    /* torch.optim.Muon's: lr 1e-3, weight_decay 0.1, momentum 0.95, nesterov, eps 1e-7, 5 steps of
     * (3.4445, -4.7750, 2.0315), adjust_lr_fn None (= "original"). */
    hp->lr = 1e-3;
    hp->weight_decay = 0.1;
    hp->momentum = 0.95;
    hp->nesterov = 1;
    hp->eps = 1e-7;
    hp->ns_steps = 5;
    hp->ns_a = 3.4445;
    hp->ns_b = -4.7750;
    hp->ns_c = 2.0315;
    hp->adjust_lr = OPTIM_MUON_ADJUST_ORIGINAL;
}

static unsigned optim__muon_slots(const optim_hparams *hp)
{
    (void)hp;
    return 1u;
}

static void optim__muon_prepare(const optim_hparams *hp, const optim__step_in *in, optim_state *st,
                                optim__kcommon *c, union optim__ku *u)
{
    optim__muon_k *k = &u->muon;
    (void)st;
    /* Decoupled decay always (torch's Muon has no coupled form), and phase 1's variant. */
    c->variant &= OPTIM__V_CLAMP;
    c->decay = 1.0 - in->lr * hp->weight_decay;
    if (hp->nesterov) c->variant |= OPTIM__MUON_V_NESTEROV;
    k->w = 1.0 - hp->momentum;
    k->one_minus_w = 1.0 - k->w;
    k->w_small = fabs(k->w) < 0.5 ? 1.0 : 0.0;
    k->mu = hp->momentum;
    k->one_minus_mu = 1.0 - hp->momentum;
    k->mu_small = fabs(hp->momentum) < 0.5 ? 1.0 : 0.0;
    k->neg_lr = -in->lr; /* times the shape's factor, optim__muon_lr_factor, in src/muon.c */
}

/* Step statistics (include/optim_stats.h): the effective lr is the scalar step of the update (the shape-adjusted lr, set by src/muon.c before the apply pass). */
static void optim__muon_stats(const optim__kcommon *c, const union optim__ku *u, optim__kstats *out)
{
    (void)c;
    out->effective_lr = -u->muon.neg_lr;
}

static const optim__rule_def optim__muon_def = {
    .id = OPTIM_MUON, .name = "muon", .torch_name = "Muon",
    .uses = OPTIM__USES(LR) | OPTIM__USES(WEIGHT_DECAY) | OPTIM__USES(MOMENTUM) | OPTIM__USES(NESTEROV) |
            OPTIM__USES(EPS) | OPTIM__USES(NS_STEPS) | OPTIM__USES(NS_A) | OPTIM__USES(NS_B) | OPTIM__USES(NS_C) |
            OPTIM__USES(ADJUST_LR),
    .nslots = 1, .slot_names = {"momentum_buffer"}, .slot_kinds = {OPTIM__SLOT_SIGNED}, .has_step = 0,
    .defaults = optim__muon_defaults, .slots = optim__muon_slots, .prepare = optim__muon_prepare, .stats = optim__muon_stats};
#endif
