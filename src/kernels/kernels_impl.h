/* kernels_impl.h: the body of every update kernel, written once and compiled
 * once per CPU path by kernels_<isa>.c, which defines OPTIM__KERNELS_NAME
 * (the table's name) and OPTIM__KERNELS_ISA before including this file. The
 * compiler vectorises each loop for the flags of that file (-mavx2,
 * -mavx512f, ...; the scalar file forbids vectorisation). Because the math is
 * plain IEEE arithmetic without contraction, every path computes the same
 * bits as the scalar one.
 *
 * Each rule's loop is instantiated once per variant (see rules/rule.h): the
 * variant is a compile-time constant in each instance, so options cost no
 * branches and untouched slots cost no memory traffic.
 */
#include "kernels.h"

#if !defined(OPTIM__KERNELS_NAME) || !defined(OPTIM__KERNELS_ISA)
#  error "define OPTIM__KERNELS_NAME and OPTIM__KERNELS_ISA before including kernels_impl.h"
#endif

#if defined(__clang__)
#  define OPTIM__VECTORIZE _Pragma("clang loop vectorize(enable) interleave(enable)")
#elif defined(__GNUC__)
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
 * CASES##ncases instantiates variants 0..ncases-1; the assertion keeps that in
 * step with the rule's variant count. */
#define OPTIM__DEFINE_BLOCK(rule, nvariants, ncases)                                                          \
    OPTIM__DEFINE_LOOP(rule)                                                                                  \
    _Static_assert((nvariants) == (ncases), #rule ": loop instances must cover every variant");               \
    static void optim__##rule##_block(size_t n, float *p, const float *g, float *const *s, const optim__k *k) \
    {                                                                                                         \
        switch (k->c.variant) {                                                                               \
            OPTIM__CASES##ncases(rule, 0)                                                                     \
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
};
