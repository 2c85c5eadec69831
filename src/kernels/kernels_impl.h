/* kernels_impl.h: the body of every update kernel, written once and compiled
 * once per CPU path by kernels_<isa>.c, which defines OPTIM__KERNELS_NAME
 * (the table's name) and OPTIM__KERNELS_ISA before including this file. The
 * compiler vectorises each loop for the flags of that file (-mavx2,
 * -mavx512f, ...; the scalar file forbids vectorisation). Because the math is
 * plain IEEE arithmetic without contraction (fused multiply-adds only where a
 * rule writes fmaf, one rounding on every path), every path computes the
 * same bits as the scalar one.
 *
 * Each rule's loop is instantiated once per variant (see rules/rule.h): the
 * variant is a compile-time constant in each instance, so options cost no
 * branches and untouched slots cost no memory traffic.
 */
#include "kernels.h"

#if !defined(OPTIM__KERNELS_NAME) || !defined(OPTIM__KERNELS_ISA)
#  error "define OPTIM__KERNELS_NAME and OPTIM__KERNELS_ISA before including kernels_impl.h"
#endif

/* A hint that the loops' arrays do not alias (they are restrict already).
 * Clang vectorises these loops by itself at -O3; forcing it with a pragma
 * only produces warnings where it must not (the scalar path, sanitizers). */
#if defined(__GNUC__) && !defined(__clang__)
#  define OPTIM__VECTORIZE _Pragma("GCC ivdep")
#else
#  define OPTIM__VECTORIZE
#endif

/* Load the slots the variant reads, apply the element math, store the slots
 * it writes. s[] is a local array the compiler keeps in registers. */
#define OPTIM__DEFINE_LOOP(rule)                                                                              \
    OPTIM_INLINE void optim__##rule##_loop(size_t n, float *restrict p, const float *restrict g,              \
                                           float *restrict s0, float *restrict s1, float *restrict s2,        \
                                           float *restrict s3, const optim__k *restrict kp, const unsigned V) \
    {                                                                                                         \
        const optim__kcommon c = kp->c;                                                                       \
        const optim__##rule##_k k = kp->u.rule;                                                               \
        const unsigned rd = optim__##rule##_reads(V), wr = optim__##rule##_writes(V);                         \
        OPTIM__VECTORIZE                                                                                      \
        for (size_t i = 0; i < n; i++) {                                                                      \
            float s[OPTIM_MAX_SLOTS] = {0.0f, 0.0f, 0.0f, 0.0f};                                              \
            float pi = p[i];                                                                                  \
            if (rd & 1u) s[0] = s0[i];                                                                        \
            if (rd & 2u) s[1] = s1[i];                                                                        \
            if (rd & 4u) s[2] = s2[i];                                                                        \
            if (rd & 8u) s[3] = s3[i];                                                                        \
            optim__##rule##_elem(&pi, g[i], s, &c, &k, V);                                                    \
            p[i] = pi;                                                                                        \
            if (wr & 1u) s0[i] = s[0];                                                                        \
            if (wr & 2u) s1[i] = s[1];                                                                        \
            if (wr & 4u) s2[i] = s[2];                                                                        \
            if (wr & 8u) s3[i] = s[3];                                                                        \
        }                                                                                                     \
    }

#define OPTIM__CASE(rule, v) \
    case (v): optim__##rule##_loop(n, p, g, s[0], s[1], s[2], s[3], k, (v)); break;
#define OPTIM__CASES4(rule, b) \
    OPTIM__CASE(rule, (b) + 0) OPTIM__CASE(rule, (b) + 1) OPTIM__CASE(rule, (b) + 2) OPTIM__CASE(rule, (b) + 3)
#define OPTIM__CASES8(rule, b) OPTIM__CASES4(rule, b) OPTIM__CASES4(rule, (b) + 4)
#define OPTIM__CASES16(rule, b) OPTIM__CASES8(rule, b) OPTIM__CASES8(rule, (b) + 8)
#define OPTIM__CASES32(rule, b) OPTIM__CASES16(rule, b) OPTIM__CASES16(rule, (b) + 16)

/* The block function of a rule: pick the loop instance for the variant.
 * CASES##ncases instantiates variants 0..ncases-1, each also with the clamp
 * of fused value clipping (OPTIM__V_CLAMP); the assertion keeps that in step
 * with the rule's variant count. */
#define OPTIM__DEFINE_BLOCK(rule, nvariants, ncases)                                                          \
    OPTIM__DEFINE_LOOP(rule)                                                                                  \
    _Static_assert((nvariants) == (ncases), #rule ": loop instances must cover every variant");               \
    static void optim__##rule##_block(size_t n, float *p, const float *g, float *const *s, const optim__k *k) \
    {                                                                                                         \
        switch (k->c.variant) {                                                                               \
            OPTIM__CASES##ncases(rule, 0)                                                                     \
            OPTIM__CASES##ncases(rule, OPTIM__V_CLAMP)                                                        \
        default: break;                                                                                       \
        }                                                                                                     \
    }

OPTIM__DEFINE_BLOCK(sgd, OPTIM__SGD_VARIANTS, 32)
OPTIM__DEFINE_BLOCK(adagrad, OPTIM__ADAGRAD_VARIANTS, 4)
OPTIM__DEFINE_BLOCK(rmsprop, OPTIM__RMSPROP_VARIANTS, 16)
OPTIM__DEFINE_BLOCK(adadelta, OPTIM__ADADELTA_VARIANTS, 8)
OPTIM__DEFINE_BLOCK(adam, OPTIM__ADAM_VARIANTS, 8)
OPTIM__DEFINE_BLOCK(radam, OPTIM__RADAM_VARIANTS, 8)
OPTIM__DEFINE_BLOCK(nadam, OPTIM__NADAM_VARIANTS, 4)
OPTIM__DEFINE_BLOCK(adabound, OPTIM__ADABOUND_VARIANTS, 8)

/* ---- Reductions -------------------------------------------------------------
 * 16 double lanes, element i of a block always in lane i % 16, lanes combined
 * in a fixed tree: the same bits on every path (the scalar path runs the
 * same order lane by lane). x*x of a float is exact in double, so a sum of
 * squares is non-finite only if an element is; `nf` catches NaN/Inf for the
 * other norms (x - x is NaN exactly for them). */
#define OPTIM__LANES 16

OPTIM_INLINE double optim__lane(double acc, double d, const optim__norm kind, double p)
{
    switch (kind) {
    case OPTIM__NORM_L1: return acc + d;
    case OPTIM__NORM_L2: return acc + d * d;
    case OPTIM__NORM_INF: return (d != d || d > acc) ? d : acc;
    default: return acc + pow(d, p);
    }
}

OPTIM_INLINE double optim__reduce_loop(size_t n, const float *restrict g, const float *restrict w, float eta,
                                       const optim__norm kind, double p, const int adaptive, int *bad)
{
    double acc[OPTIM__LANES];
    float nf[OPTIM__LANES];
    size_t i = 0, j;
    for (j = 0; j < OPTIM__LANES; j++) {
        acc[j] = 0.0;
        nf[j] = 0.0f;
    }
    for (; i + OPTIM__LANES <= n; i += OPTIM__LANES) {
        OPTIM__VECTORIZE
        for (j = 0; j < OPTIM__LANES; j++) {
            float x = adaptive ? (fabsf(w[i + j]) + eta) * g[i + j] : g[i + j];
            nf[j] = nf[j] + (x - x);
            acc[j] = optim__lane(acc[j], fabs((double)x), kind, p);
        }
    }
    for (j = 0; i + j < n; j++) {
        float x = adaptive ? (fabsf(w[i + j]) + eta) * g[i + j] : g[i + j];
        nf[j] = nf[j] + (x - x);
        acc[j] = optim__lane(acc[j], fabs((double)x), kind, p);
    }
    for (j = 0; j < OPTIM__LANES; j++)
        if (nf[j] != 0.0f) *bad = 1;
    /* Fixed tree: 16 -> 8 -> 4 -> 2 -> 1. */
    for (j = OPTIM__LANES / 2; j > 0; j /= 2) {
        size_t l;
        for (l = 0; l < j; l++)
            acc[l] = kind == OPTIM__NORM_INF ? optim__lane(acc[l], acc[l + j], kind, p) : acc[l] + acc[l + j];
    }
    return acc[0];
}

static double optim__reduce(size_t n, const float *g, const float *w, float eta, optim__norm kind, double p, int *bad)
{
    /* One instance per (kind, adaptive), with both as constants. */
#define OPTIM__R(K)                                                                    \
    case K:                                                                            \
        return w ? optim__reduce_loop(n, g, w, eta, K, p, 1, bad)                      \
                 : optim__reduce_loop(n, g, NULL, eta, K, p, 0, bad);
    switch (kind) {
        OPTIM__R(OPTIM__NORM_L1)
        OPTIM__R(OPTIM__NORM_L2)
        OPTIM__R(OPTIM__NORM_INF)
        OPTIM__R(OPTIM__NORM_LP)
    }
#undef OPTIM__R
    return 0.0;
}

/* ---- SAM's ascent step and restore ---------------------------------------------- */

OPTIM_INLINE void optim__sam_loop(size_t n, float *restrict w, const float *restrict g, float *restrict saved,
                                  const optim__k *restrict kp, const unsigned V)
{
    const optim__sam_k k = kp->u.sam;
    OPTIM__VECTORIZE
    for (size_t i = 0; i < n; i++) {
        float wi = w[i];
        saved[i] = wi;
        w[i] = optim__sam_elem(wi, g[i], &k, V);
    }
}

static void optim__sam_perturb(size_t n, float *p, const float *g, float *const *s, const optim__k *k)
{
#define OPTIM__S(v) \
    case (v): optim__sam_loop(n, p, g, s[0], k, (v)); break;
    switch (k->c.variant) {
        OPTIM__S(0)
        OPTIM__S(OPTIM__SAM_V_ADAPTIVE)
        OPTIM__S(OPTIM__SAM_V_PINF)
        OPTIM__S(OPTIM__SAM_V_PINF | OPTIM__SAM_V_ADAPTIVE)
        OPTIM__S(OPTIM__SAM_V_PGEN)
        OPTIM__S(OPTIM__SAM_V_PGEN | OPTIM__SAM_V_ADAPTIVE)
    default: break;
    }
#undef OPTIM__S
}

static void optim__copy_back(size_t n, float *p, const float *g, float *const *s, const optim__k *k)
{
    const float *restrict src = s[0];
    float *restrict dst = p;
    (void)g;
    (void)k;
    OPTIM__VECTORIZE
    for (size_t i = 0; i < n; i++) dst[i] = src[i];
}

static void optim__scale(size_t n, float *p, const float *g, float *const *s, const optim__k *k)
{
    float *restrict x = p;
    const float a = k->u.util.a;
    (void)g;
    (void)s;
    OPTIM__VECTORIZE
    for (size_t i = 0; i < n; i++) x[i] = x[i] * a;
}

static void optim__clamp_fn(size_t n, float *p, const float *g, float *const *s, const optim__k *k)
{
    float *restrict x = p;
    const float lo = k->u.util.a, hi = k->u.util.b;
    (void)g;
    (void)s;
    OPTIM__VECTORIZE
    for (size_t i = 0; i < n; i++) x[i] = optim__clamp(x[i], lo, hi);
}

const optim__kernels OPTIM__KERNELS_NAME = {
    OPTIM__KERNELS_ISA,
    {
        NULL,
        optim__sgd_block,      /* OPTIM_SGD */
        optim__adagrad_block,  /* OPTIM_ADAGRAD */
        optim__rmsprop_block,  /* OPTIM_RMSPROP */
        optim__adadelta_block, /* OPTIM_ADADELTA */
        optim__adam_block,     /* OPTIM_ADAM */
        optim__adam_block,     /* OPTIM_ADAMW: the same math, decoupled decay */
        optim__radam_block,    /* OPTIM_RADAM */
        optim__nadam_block,    /* OPTIM_NADAM */
        optim__adabound_block, /* OPTIM_ADABOUND */
    },
    optim__reduce,
    optim__sam_perturb,
    optim__copy_back,
    optim__scale,
    optim__clamp_fn,
};
