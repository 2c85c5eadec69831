/* nadam.h: NAdam, Adam with Nesterov momentum and a momentum schedule (Dozat 2016).
 *
 * torch.optim.NAdam (the multi-tensor form of torch 1.13, which is the form of
 * torch >= 2.0; 1.13's single-tensor form multiplies mu in twice, a bug
 * fixed upstream), per element, at step t:
 *   g = -g if maximize;  L2: g = g + weight_decay * p;  decoupled: p = p * (1 - lr * weight_decay)
 *   mu_t = beta1 (1 - 0.5 * 0.96^(t * momentum_decay));  mu_{t+1} likewise
 *   P_t  = mu_1 * ... * mu_t   (state mu_product)
 *   m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g^2
 *   denom = sqrt(v) / sqrt(1 - beta2^t) + eps      (eps inside: sqrt(v / (1 - beta2^t) + eps))
 *   p = p - lr (1 - mu_t) / (1 - P_t) * g / denom - lr mu_{t+1} / (1 - P_t mu_{t+1}) * m / denom
 * Rounded as torch 1.13's multi-tensor path rounds (docs/FIDELITY.md): m and
 * v are fused multiply-adds (m = fma(g, 1 - beta1, round(beta1 * m)),
 * v = fma(round((1 - beta2) * g), g, round(beta2 * v))); P_t is kept rounded
 * to float32 as torch's float32 tensor keeps it, whatever the parameters'
 * type (P_t = round32(P_{t-1} * round32(mu_t))); the two step sizes are
 * computed in double from it, as torch's Python computes them.
 * Slots: 0 exp_avg, 1 exp_avg_sq; scalar state mu_product.
 */
#ifndef OPTIM_RULE_NADAM_H
#define OPTIM_RULE_NADAM_H
#include "rule.h"

#define OPTIM__NADAM_NVARIANTS 4

#define OPTIM__NADAM_K(X) \
    X(beta1) X(one_minus_beta1) \
    X(beta2) X(one_minus_beta2) \
    X(bc2) /* 1 - beta2^t (eps inside) */ \
    X(bc2_sqrt) /* sqrt(1 - beta2^t) */ \
    X(coef_g) /* -lr (1 - mu_t) / (1 - P_t) */ \
    X(coef_m) /* -lr mu_{t+1} / (1 - P_t mu_{t+1}) */ \
    X(eps)

OPTIM_INLINE unsigned optim__nadam_reads(unsigned V)
{
    (void)V;
    return 3u;
}
OPTIM_INLINE unsigned optim__nadam_writes(unsigned V)
{
    (void)V;
    return 3u;
}

#endif

#ifdef OPTIM__MATH
OPTIM_INLINE void OPTIM__T(optim__nadam_elem)(R *p, R g, R *s, const optim__kc *c, const OPTIM__KR(nadam) *k,
                                    unsigned V)
{
    R pi = *p;
    R d = optim__grad(g, pi, c, V);
    R m = optim__fma(d, k->one_minus_beta1, s[0] * k->beta1);
    R v = optim__fma(k->one_minus_beta2 * d, d, s[1] * k->beta2);
    R denom = (V & OPTIM__V_EPSIN) ? optim__sqrt(v / k->bc2 + k->eps) : optim__sqrt(v) / k->bc2_sqrt + k->eps;
    s[0] = m;
    s[1] = v;
    pi = pi * c->decay;
    pi = pi + (k->coef_g * d) / denom;
    *p = pi + (k->coef_m * m) / denom;
}

/* One complex element (complex_list.h), as torch 1.13's multi-tensor NAdam
 * computes on complex tensors: the complex square into v, its principal
 * complex root (divided by sqrt(1 - beta2^t), eps added to the real part),
 * and the two complex divisions. Real scalings act on both parts. */
OPTIM_INLINE void OPTIM__T(optim__nadam_celem)(R *p, const R *g, R (*s)[2], const optim__kc *c,
                                               const OPTIM__KR(nadam) *k, unsigned V)
{
    R dr = optim__grad(g[0], p[0], c, V), di = optim__grad(g[1], p[1], c, V);
    R mr = optim__fma(dr, k->one_minus_beta1, s[0][0] * k->beta1);
    R mi = optim__fma(di, k->one_minus_beta1, s[0][1] * k->beta1);
    R qr, qi, vr, vi, er, ei, xr, xi, pr = p[0] * c->decay, pim = p[1] * c->decay;
    OPTIM__T(optim__cmul)(&qr, &qi, k->one_minus_beta2 * dr, k->one_minus_beta2 * di, dr, di);
    vr = s[1][0] * k->beta2 + qr;
    vi = s[1][1] * k->beta2 + qi;
    if (V & OPTIM__V_EPSIN) {
        OPTIM__T(optim__csqrt)(&er, &ei, vr / k->bc2 + k->eps, vi / k->bc2);
    } else {
        OPTIM__T(optim__csqrt)(&er, &ei, vr, vi);
        er = er / k->bc2_sqrt + k->eps;
        ei = ei / k->bc2_sqrt;
    }
    s[0][0] = mr;
    s[0][1] = mi;
    s[1][0] = vr;
    s[1][1] = vi;
    OPTIM__T(optim__cdiv)(&xr, &xi, k->coef_g * dr, k->coef_g * di, er, ei);
    pr = pr + xr;
    pim = pim + xi;
    OPTIM__T(optim__cdiv)(&xr, &xi, k->coef_m * mr, k->coef_m * mi, er, ei);
    p[0] = pr + xr;
    p[1] = pim + xi;
}
#endif

#if defined(OPTIM__RULE_HOST) && !defined(OPTIM_RULE_NADAM_HOST)
#define OPTIM_RULE_NADAM_HOST

static void optim__nadam_defaults(optim_hparams *hp)
{
    hp->lr = 2e-3;
    hp->beta1 = 0.9;
    hp->beta2 = 0.999;
    hp->eps = 1e-8;
    hp->momentum_decay = 4e-3;
}

static unsigned optim__nadam_slots(const optim_hparams *hp)
{
    (void)hp;
    return 3u;
}

/* Step statistics: the per-tensor values of this step's constants (rules.h). */
static void optim__nadam_stats(const optim__kcommon *c, const union optim__ku *u, optim__kstats *out)
{
    (void)c;
    out->effective_lr = -(u->nadam.coef_g + u->nadam.coef_m) * u->nadam.bc2_sqrt; /* (|coef_g| + |coef_m|) sqrt(1 - beta2^t) */
}

static void optim__nadam_prepare(const optim_hparams *hp, const optim__step_in *in, optim_state *st,
                                 optim__kcommon *c, union optim__ku *u)
{
    optim__nadam_k *k = &u->nadam;
    double t = (double)st->step;
    double mu = hp->beta1 * (1.0 - 0.5 * pow(0.96, t * hp->momentum_decay));
    double mu_next = hp->beta1 * (1.0 - 0.5 * pow(0.96, (t + 1.0) * hp->momentum_decay));
    double bc2 = 1.0 - pow(hp->beta2, t);
    /* torch's mu_product is a float32 tensor (whatever the parameters'
     * dtype): mu_product.mul_(mu) rounds mu and the product to float. */
    const double mup = (double)((float)st->mu_product * (float)mu);
    (void)c;
    st->mu_product = mup;
    k->beta1 = hp->beta1;
    k->one_minus_beta1 = 1.0 - hp->beta1;
    k->beta2 = hp->beta2;
    k->one_minus_beta2 = 1.0 - hp->beta2;
    k->bc2 = bc2;
    k->bc2_sqrt = sqrt(bc2);
    k->coef_g = (in->lr * (1.0 - mu) / (1.0 - mup)) * -1.0;
    k->coef_m = (in->lr * mu_next / (1.0 - mup * mu_next)) * -1.0;
    k->eps = hp->eps;
}

static const optim__rule_def optim__nadam_def = {
    .id = OPTIM_NADAM, .name = "nadam", .torch_name = "NAdam",
    .uses = OPTIM__USES(LR) | OPTIM__USES(BETA1) | OPTIM__USES(BETA2) | OPTIM__USES(EPS) |
            OPTIM__USES(EPS_PLACEMENT) | OPTIM__USES(WEIGHT_DECAY) | OPTIM__USES(DECOUPLED_WEIGHT_DECAY) |
            OPTIM__USES(MOMENTUM_DECAY) | OPTIM__USES(MAXIMIZE),
    .nslots = 2, .slot_names = {"exp_avg", "exp_avg_sq"},
    .slot_kinds = {OPTIM__SLOT_SIGNED, OPTIM__SLOT_POSITIVE}, .has_step = 1,
    .defaults = optim__nadam_defaults, .slots = optim__nadam_slots, .prepare = optim__nadam_prepare, .stats = optim__nadam_stats};
#endif
