/* adafactor.h: Adafactor (Shazeer & Stern 2018, "Adafactor: Adaptive
 * Learning Rates with Sublinear Memory Cost") as torch 2.x's
 * torch.optim.Adafactor computes it (torch/optim/_adafactor.py,
 * _single_tensor_adafactor), per tensor at step t:
 *   g = -g if maximize
 *   w = t^beta2_decay                         (1 - beta2_t)
 *   rho = min(lr, 1 / sqrt(t))
 *   alpha = max(eps2, ||p|| / sqrt(n)) * rho  (p before the decay)
 *   p = p * (1 - lr * weight_decay)           (only where weight_decay != 0)
 *   shape (..., R, C), two or more dimensions (factored, batched over the leading ones):
 *       row_var = lerp(row_var, ||g||_row^2 / C, w)        (..., R, 1)
 *       col_var = lerp(col_var, ||g||_col^2 / R, w)        (..., 1, C)
 *       v = (row_var * col_var) / max(mean(row_var over R), eps1)
 *   0 or 1 dimension (or no shape given):
 *       variance = lerp(variance, g * g, w); v = variance
 *   u = (1 / sqrt(max(v, eps1^2))) * g
 *   p = p + u * (-alpha / max(1, ||u|| / (sqrt(n) * d)))    (add_ with alpha: one fma)
 * eps1 defaults to the machine epsilon of the compute type (eps_auto = 1,
 * torch's eps=(None, ...)). lerp(a, b, w) as torch 2.x's CPU kernel rounds it:
 * fma(w, b - a, a) for |w| < 0.5, else fma(w - 1, b - a, b).
 *
 * The step is not element-wise: three reductions over the tensor (its row
 * and column sums of g^2, ||p||, then ||u|| from the updated state) come
 * before the update, so the kernels run Adafactor in its own passes
 * (src/kernels/factored_run.c, docs/DESIGN.md "Adafactor's factored state"):
 *   A: ||p||^2 per 8192-element block; the state update (variance element by
 *      element; row_var row by row; col_var column block by column block);
 *   B: ||u||^2 per block, from the state as stored;
 *   host: alpha and the clip denominator -> `coef` (the trust hook);
 *   C: the update, u recomputed with B's operations (the same bits).
 * The element functions below are the math of those passes, written once.
 * Slots: 0 row_var (B*R elements), 1 col_var (B*C), 2 variance (n); a
 * factored parameter holds slots 0 and 1 (slot 2 empty), any other slot 2
 * (slots 0 and 1 empty): optim__adafactor_slot_len.
 */
#ifndef OPTIM_RULE_ADAFACTOR_H
#define OPTIM_RULE_ADAFACTOR_H
#include "rule.h"

#include <float.h>

/* No variant bits of its own (decay is a factor, maximize and clipping are gscale). */
#define OPTIM__ADAFACTOR_NVARIANTS 1

#define OPTIM__ADAFACTOR_K(X)                                   \
    X(w)        /* t^beta2_decay, the lerp weight */             \
    X(w1)       /* w - 1 */                                      \
    X(eps1)     /* explicit eps1 (eps_auto = 0) */               \
    X(eps1sq)   /* eps1 * eps1, in double as torch's Python */    \
    X(eps_auto) /* 1: eps1 is the compute type's machine eps */  \
    X(rho)      /* min(lr, 1 / sqrt(t)) */                       \
    X(coef)     /* -alpha / denom, set after pass B (trust hook) */

/* Pass C of an unfactored tensor runs the generic loop: it reads variance. */
OPTIM_INLINE unsigned optim__adafactor_reads(unsigned V)
{
    (void)V;
    return 4u;
}
OPTIM_INLINE unsigned optim__adafactor_writes(unsigned V)
{
    (void)V;
    return 0u;
}
#endif

#ifdef OPTIM__MATH
/* torch 2.x's lerp on CPU (fused multiply-add of the weight and the difference). */
OPTIM_INLINE R OPTIM__T(optim__adafactor_lerp)(R a, R b, const OPTIM__KR(adafactor) *k)
{
    R diff = b - a;
    return optim__fabs(k->w) < (R)0.5 ? optim__fma(k->w, diff, a) : optim__fma(k->w1, diff, b);
}

/* eps1 and eps1^2 in R. */
OPTIM_INLINE R OPTIM__T(optim__adafactor_eps1)(const OPTIM__KR(adafactor) *k)
{
#if OPTIM__R_F64
    return k->eps_auto != 0 ? (R)DBL_EPSILON : k->eps1;
#else
    return k->eps_auto != 0 ? (R)FLT_EPSILON : k->eps1;
#endif
}
OPTIM_INLINE R OPTIM__T(optim__adafactor_eps1sq)(const OPTIM__KR(adafactor) *k)
{
#if OPTIM__R_F64
    return k->eps_auto != 0 ? (R)(DBL_EPSILON * DBL_EPSILON) : k->eps1sq;
#else
    return k->eps_auto != 0 ? (R)((double)FLT_EPSILON * (double)FLT_EPSILON) : k->eps1sq;
#endif
}

/* A row's or column's mean of g^2 from its sum (torch: vector_norm(g).square_().div_(count)). */
OPTIM_INLINE R OPTIM__T(optim__adafactor_mean_sq)(double sum, size_t count)
{
    R nrm = (R)sqrt(sum);
    return (nrm * nrm) / (R)count;
}

/* The variance estimate of a factored element: (row * col) / rmean (rmean already clamped). */
OPTIM_INLINE R OPTIM__T(optim__adafactor_vhat)(R row, R col, R rmean)
{
    return (row * col) / rmean;
}

/* The unclipped update of one element: rsqrt(max(v, eps1^2)) * g. */
OPTIM_INLINE R OPTIM__T(optim__adafactor_u)(R v, R d, const OPTIM__KR(adafactor) *k)
{
    R e = OPTIM__T(optim__adafactor_eps1sq)(k);
    R m = v < e ? e : v; /* clamp_(min=): a NaN v stays NaN */
    return ((R)1 / optim__sqrt(m)) * d;
}

/* The parameter: decay, then add_(u, alpha=coef). */
OPTIM_INLINE R OPTIM__T(optim__adafactor_p)(R p, R u, const optim__kc *c, const OPTIM__KR(adafactor) *k)
{
    return optim__fma(u, k->coef, p * c->decay);
}

/* Pass C of an unfactored tensor (the generic loop; slot 2 variance, read only). */
OPTIM_INLINE void OPTIM__T(optim__adafactor_elem)(R *p, R g, R *s, const optim__kc *c,
                                                  const OPTIM__KR(adafactor) *k, unsigned V)
{
    R d = optim__grad(g, *p, c, V);
    *p = OPTIM__T(optim__adafactor_p)(*p, OPTIM__T(optim__adafactor_u)(s[2], d, k), c, k);
}
#endif

#if defined(OPTIM__RULE_HOST) && !defined(OPTIM_RULE_ADAFACTOR_HOST)
#define OPTIM_RULE_ADAFACTOR_HOST

static void optim__adafactor_defaults(optim_hparams *hp)
{
    /* torch 2.x: lr 1e-2, beta2_decay -0.8, eps (None, 1e-3), d 1.0, weight_decay 0. */
    hp->lr = 1e-2;
    hp->beta2_decay = -0.8;
    hp->eps_auto = 1;
    hp->eps2 = 1e-3;
    hp->clip_threshold = 1.0;
}

static int optim__adafactor_check(const optim_hparams *hp, optim_error *err)
{
    /* eps1 would be ignored with eps_auto: refused, so that no setting is silently dropped. */
    OPTIM__FAIL_IF(hp->eps_auto && hp->eps1 != 0, err, OPTIM_EINVAL,
                   "adafactor: eps1 = %.10g is ignored with eps_auto = 1 (eps1 is then the dtype's machine "
                   "epsilon); set eps_auto = 0 to use it",
                   hp->eps1);
    return OPTIM_OK;
}

static unsigned optim__adafactor_slots(const optim_hparams *hp)
{
    (void)hp;
    return 7u; /* all three; their lengths depend on the shape (optim__adafactor_slot_len) */
}

/* Elements of slot s of a parameter of n elements and shape dims[ndim]
 * (ndim 0: no shape given, [n]): row_var B*R and col_var B*C for two or
 * more dimensions (B the product of the leading ones), else variance n. */
static size_t optim__adafactor_slot_len(int s, size_t n, size_t ndim, const int64_t *dims)
{
    size_t b = 1, i;
    if (ndim < 2) return s == 2 ? n : 0;
    if (s == 2) return 0;
    for (i = 0; i + 2 < ndim; i++) b *= (size_t)dims[i];
    return b * (size_t)dims[s == 0 ? ndim - 2 : ndim - 1];
}

static void optim__adafactor_prepare(const optim_hparams *hp, const optim__step_in *in, optim_state *st,
                                     optim__kcommon *c, union optim__ku *u)
{
    optim__adafactor_k *k = &u->adafactor;
    const double t = (double)st->step;
    k->w = pow(t, hp->beta2_decay);
    k->w1 = k->w - 1.0;
    k->eps1 = hp->eps1;
    k->eps1sq = hp->eps1 * hp->eps1;
    k->eps_auto = hp->eps_auto ? 1.0 : 0.0;
    if (hp->eps_auto && in->eps_type > 0.0) {
        /* The group's epsilon (optim__step_in): torch's eps1 once resolved, squared in double as its Python. */
        k->eps1 = in->eps_type;
        k->eps1sq = in->eps_type * in->eps_type;
        k->eps_auto = 0.0;
    }
    k->rho = 1.0 / pow(t, 0.5);
    k->rho = in->lr < k->rho ? in->lr : k->rho; /* Python's min(lr, x) */
    k->coef = 0.0; /* set by the trust hook after pass B */
    c->reduce = OPTIM__RED_FACTORED;
    /* Decoupled decay, as torch's param.mul_(1 - lr * weight_decay); never L2. */
    c->variant &= ~OPTIM__V_L2;
    c->decay = hp->weight_decay != 0 ? 1.0 - in->lr * hp->weight_decay : 1.0;
}

/* The trust hook, after passes A and B: sq[0] = ||p||^2 (before the
 * decay), sq[1] = ||u||^2, over in->n elements. torch: alpha = max(eps2,
 * ||p|| / sqrt(n)) * rho, denom = max(1, ||u|| / (sqrt(n) * d)),
 * p.add_(u, alpha=-alpha / denom); in double, as torch's Python floats. */
static void optim__adafactor_trust(const optim_hparams *hp, const optim__step_in *in, const double sq[2],
                                   optim__kcommon *c, union optim__ku *u)
{
    const double rootn = sqrt((double)in->n);
    const double prms = sqrt(sq[0]) / rootn, urms = sqrt(sq[1]) / (rootn * hp->clip_threshold);
    /* Python's max(a, x) is x only where x > a: a NaN norm gives eps2, and 1. */
    const double alpha = (prms > hp->eps2 ? prms : hp->eps2) * u->adafactor.rho;
    const double denom = urms > 1.0 ? urms : 1.0;
    (void)c;
    u->adafactor.coef = -alpha / denom;
}

/* Step statistics: the scalar the update u = g / sqrt(v) is multiplied by,
 * alpha / denom (rho times the parameter's RMS floored at eps2, over the
 * clipping denominator); trust_ratio NaN, as every rule but LAMB's and LARS's. */
static void optim__adafactor_stats(const optim__kcommon *c, const union optim__ku *u, optim__kstats *out)
{
    (void)c;
    out->effective_lr = -u->adafactor.coef;
}

static const optim__rule_def optim__adafactor_def = {
    .id = OPTIM_ADAFACTOR, .name = "adafactor", .torch_name = "Adafactor",
    .uses = OPTIM__USES(LR) | OPTIM__USES(BETA2_DECAY) | OPTIM__USES(EPS1) | OPTIM__USES(EPS_AUTO) |
            OPTIM__USES(EPS2) | OPTIM__USES(CLIP_THRESHOLD) | OPTIM__USES(WEIGHT_DECAY) | OPTIM__USES(MAXIMIZE),
    .nslots = 3, .slot_names = {"row_var", "col_var", "variance"},
    .slot_kinds = {OPTIM__SLOT_POSITIVE, OPTIM__SLOT_POSITIVE, OPTIM__SLOT_POSITIVE}, .has_step = 1,
    .defaults = optim__adafactor_defaults, .check = optim__adafactor_check, .slots = optim__adafactor_slots,
    .prepare = optim__adafactor_prepare, .trust = optim__adafactor_trust, .slot_len = optim__adafactor_slot_len,
    .stats = optim__adafactor_stats};
#endif
