/* radam.h: Rectified Adam (Liu et al. 2019).
 *
 * torch.optim.RAdam (its single-tensor form; decoupled decay as in torch 2.x), per element, at step t:
 *   g = -g if maximize;  L2: g = g + weight_decay * p;  decoupled: p = p * (1 - lr * weight_decay)
 *   m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g^2
 *   rho_inf = 2 / (1 - beta2) - 1;     rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)
 *   rho_t > 5 (variance is tractable):
 *     r = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
 *     p = p - lr * m / (1 - beta1^t) * sqrt(1 - beta2^t) / (sqrt(v) + eps) * r
 *         (eps inside: sqrt(1 - beta2^t) / sqrt(v + eps))
 *   otherwise (the first steps): p = p - lr * m / (1 - beta1^t)
 * Rounded as torch 1.13's CPU kernels round (docs/FIDELITY.md): m and v are
 * fused multiply-adds (m = fma(g, 1 - beta1, round(beta1 * m)),
 * v = fma(round((1 - beta2) * g), g, round(beta2 * v))); torch computes
 * sqrt(1 - beta2^t) / denom as denom.reciprocal() * sqrt(1 - beta2^t), and
 * p - ((m^ * lr) * adaptive) * r with each product rounded.
 * Slots: 0 exp_avg, 1 exp_avg_sq.
 */
#ifndef OPTIM_RULE_RADAM_H
#define OPTIM_RULE_RADAM_H
#include "rule.h"

#define OPTIM__RADAM_V_RECT 4u
#define OPTIM__RADAM_NVARIANTS 8

#define OPTIM__RADAM_K(X) \
    X(beta1) X(one_minus_beta1) \
    X(beta2) X(one_minus_beta2) \
    X(bc1) /* 1 - beta1^t */ \
    X(bc2_sqrt) /* sqrt(1 - beta2^t) */ \
    X(lr) \
    X(rect) \
    X(eps)

OPTIM_INLINE unsigned optim__radam_reads(unsigned V)
{
    (void)V;
    return 3u;
}
OPTIM_INLINE unsigned optim__radam_writes(unsigned V)
{
    (void)V;
    return 3u;
}

#endif

#ifdef OPTIM__MATH
OPTIM_INLINE void OPTIM__T(optim__radam_elem)(R *p, R g, R *s, const optim__kc *c, const OPTIM__KR(radam) *k,
                                    unsigned V)
{
    R pi = *p;
    R d = optim__grad(g, pi, c, V);
    R m = optim__fma(d, k->one_minus_beta1, s[0] * k->beta1);
    R v = optim__fma(k->one_minus_beta2 * d, d, s[1] * k->beta2);
    R mhat = m / k->bc1;
    s[0] = m;
    s[1] = v;
    pi = pi * c->decay;
    if (V & OPTIM__RADAM_V_RECT) {
        R adaptive = ((R)1 / optim__rms(v, k->eps, V & OPTIM__V_EPSIN)) * k->bc2_sqrt;
        *p = pi - mhat * k->lr * adaptive * k->rect;
    } else {
        *p = pi - mhat * k->lr;
    }
}

/* One complex element (complex_list.h), as torch 1.13 computes RAdam on complex
 * tensors: v += (1 - beta2) g * g is the complex square; sqrt(v) the principal
 * complex root, eps added to its real part; sqrt(1 - beta2^t) / denom and the
 * product with m^ complex. Real scalings act on both parts. */
OPTIM_INLINE void OPTIM__T(optim__radam_celem)(R *p, const R *g, R (*s)[2], const optim__kc *c,
                                               const OPTIM__KR(radam) *k, unsigned V)
{
    R dr = optim__grad(g[0], p[0], c, V), di = optim__grad(g[1], p[1], c, V);
    R mr = optim__fma(dr, k->one_minus_beta1, s[0][0] * k->beta1);
    R mi = optim__fma(di, k->one_minus_beta1, s[0][1] * k->beta1);
    R qr, qi, vr, vi, pr = p[0] * c->decay, pim = p[1] * c->decay;
    OPTIM__T(optim__cmul)(&qr, &qi, k->one_minus_beta2 * dr, k->one_minus_beta2 * di, dr, di);
    vr = s[1][0] * k->beta2 + qr;
    vi = s[1][1] * k->beta2 + qi;
    s[0][0] = mr;
    s[0][1] = mi;
    s[1][0] = vr;
    s[1][1] = vi;
    if (V & OPTIM__RADAM_V_RECT) {
        R er, ei, ar, ai, ur, ui;
        if (V & OPTIM__V_EPSIN) {
            OPTIM__T(optim__csqrt)(&er, &ei, vr + k->eps, vi);
        } else {
            OPTIM__T(optim__csqrt)(&er, &ei, vr, vi);
            er = er + k->eps;
        }
        OPTIM__T(optim__cdiv)(&ar, &ai, (R)1, (R)0, er, ei);
        OPTIM__T(optim__cmul)(&ur, &ui, mr / k->bc1 * k->lr, mi / k->bc1 * k->lr, ar * k->bc2_sqrt,
                              ai * k->bc2_sqrt);
        p[0] = pr - ur * k->rect;
        p[1] = pim - ui * k->rect;
    } else {
        p[0] = pr - mr / k->bc1 * k->lr;
        p[1] = pim - mi / k->bc1 * k->lr;
    }
}
#endif

#if defined(OPTIM__RULE_HOST) && !defined(OPTIM_RULE_RADAM_HOST)
#define OPTIM_RULE_RADAM_HOST

static void optim__radam_defaults(optim_hparams *hp)
{
    hp->lr = 1e-3;
    hp->beta1 = 0.9;
    hp->beta2 = 0.999;
    hp->eps = 1e-8;
}

static unsigned optim__radam_slots(const optim_hparams *hp)
{
    (void)hp;
    return 3u;
}

static void optim__radam_prepare(const optim_hparams *hp, const optim__step_in *in, optim_state *st,
                                 optim__kcommon *c, union optim__ku *u)
{
    optim__radam_k *k = &u->radam;
    double t = (double)st->step;
    double b2t = pow(hp->beta2, t);
    double bc2 = 1.0 - b2t;
    double rho_inf = 2.0 / (1.0 - hp->beta2) - 1.0;
    double rho_t = rho_inf - 2.0 * t * b2t / bc2;
    k->beta1 = hp->beta1;
    k->one_minus_beta1 = 1.0 - hp->beta1;
    k->beta2 = hp->beta2;
    k->one_minus_beta2 = 1.0 - hp->beta2;
    k->bc1 = 1.0 - pow(hp->beta1, t);
    k->bc2_sqrt = sqrt(bc2);
    k->lr = in->lr;
    k->eps = hp->eps;
    k->rect = 0.0;
    if (rho_t > 5.0) {
        k->rect = sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t));
        c->variant |= OPTIM__RADAM_V_RECT;
    }
}

/* Step statistics: the per-tensor values of this step's constants (rules.h). */
static void optim__radam_stats(const optim__kcommon *c, const union optim__ku *u, optim__kstats *out)
{
    out->rectified = (c->variant & OPTIM__RADAM_V_RECT) != 0;
    /* rectified: lr r_t sqrt(1 - beta2^t) / (1 - beta1^t); else lr / (1 - beta1^t) */
    out->effective_lr = out->rectified ? u->radam.lr * u->radam.rect * u->radam.bc2_sqrt / u->radam.bc1 : u->radam.lr / u->radam.bc1;
}

static const optim__rule_def optim__radam_def = {
    .id = OPTIM_RADAM, .name = "radam", .torch_name = "RAdam",
    .uses = OPTIM__USES(LR) | OPTIM__USES(BETA1) | OPTIM__USES(BETA2) | OPTIM__USES(EPS) |
            OPTIM__USES(EPS_PLACEMENT) | OPTIM__USES(WEIGHT_DECAY) | OPTIM__USES(DECOUPLED_WEIGHT_DECAY) |
            OPTIM__USES(MAXIMIZE),
    .nslots = 2, .slot_names = {"exp_avg", "exp_avg_sq"},
    .slot_kinds = {OPTIM__SLOT_SIGNED, OPTIM__SLOT_POSITIVE}, .has_step = 1,
    .defaults = optim__radam_defaults, .slots = optim__radam_slots, .prepare = optim__radam_prepare, .stats = optim__radam_stats};
#endif
