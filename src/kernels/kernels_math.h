/* kernels_math.h: every loop of one compute type. kernels_impl.h includes it
 * once per compute type, with R, OPTIM__RS and OPTIM__R_F64 defined (see
 * rules/rule_math.h); no include guard. From the rule list it generates, for
 * each rule with its own math:
 *   - its constants in R and their rounding from the host's doubles,
 *   - one loop over arrays of R (load the slots the variant reads, the
 *     element math, store what it writes),
 *   - one instance per variant, with and without the value-clipping clamp,
 *     the variant a compile-time constant in each (no branches, no traffic
 *     for untouched slots),
 *   - the table of those instances, indexed by variant;
 * and the storage descriptors, reductions and utilities of this type. */
#include "../rules/rule_math.h"
#include "../rules/complex_math.h"
#include "../rules/complex_list.h"

/* ---- Constants in R --------------------------------------------------------------- */

#define OPTIM__KR_DEF(ID, value, name)                                                                  \
    typedef struct {                                                                                    \
        OPTIM__##ID##_K(OPTIM__FIELD_R)                                                                 \
    } OPTIM__KR(name);                                                                                  \
    OPTIM_INLINE OPTIM__KR(name) OPTIM__T(optim__##name##_kr_from)(const optim__##name##_k *h)          \
    {                                                                                                   \
        OPTIM__KR(name) k;                                                                              \
        OPTIM__##ID##_K(OPTIM__FIELD_TO_R)                                                              \
        return k;                                                                                       \
    }
OPTIM__RULE_LIST(OPTIM__KR_DEF, OPTIM__LIST_NOTHING)
#undef OPTIM__KR_DEF

/* ---- The element math of every rule, in R ----------------------------------------- */

#define OPTIM__MATH
#include "optim_rule_headers.h" /* generated from rule_list.h */
#include "../rules/sam.h"
#undef OPTIM__MATH

/* ---- One loop per rule ---------------------------------------------------------------
 * Every stored value goes through optim__canon: a NaN result has the same
 * bits on every path (see rule_math.h). */
#define OPTIM__LOOP_DEF(ID, value, name)                                                                \
    OPTIM_INLINE void OPTIM__T(optim__##name##_one)(R *restrict p, const R *restrict g, R *restrict s0, \
                                                    R *restrict s1, R *restrict s2, R *restrict s3,     \
                                                    size_t i, const optim__kc *c,                       \
                                                    const OPTIM__KR(name) *k, const unsigned V)         \
    {                                                                                                   \
        const unsigned rd = optim__##name##_reads(V), wr = optim__##name##_writes(V);                   \
        R s[OPTIM_MAX_SLOTS] = {0, 0, 0, 0};                                                            \
        R pi = p[i];                                                                                    \
        if (rd & 1u) s[0] = s0[i];                                                                      \
        if (rd & 2u) s[1] = s1[i];                                                                      \
        if (rd & 4u) s[2] = s2[i];                                                                      \
        if (rd & 8u) s[3] = s3[i];                                                                      \
        OPTIM__T(optim__##name##_elem)(&pi, g[i], s, c, k, V);                                          \
        p[i] = optim__canon(pi);                                                                        \
        if (wr & 1u) s0[i] = optim__canon(s[0]);                                                        \
        if (wr & 2u) s1[i] = optim__canon(s[1]);                                                        \
        if (wr & 4u) s2[i] = optim__canon(s[2]);                                                        \
        if (wr & 8u) s3[i] = optim__canon(s[3]);                                                        \
    }                                                                                                   \
    /* Blocks of OPTIM__PF_BLOCK bytes, each after the prefetch of the lines 2 KiB ahead (kernels_impl.h); \
     * one block where a range is short (OPTIM__PF_MIN). */                                            \
    OPTIM_INLINE void OPTIM__T(optim__##name##_loop)(size_t n, R *restrict p, const R *restrict g,      \
                                                     R *restrict s0, R *restrict s1, R *restrict s2,    \
                                                     R *restrict s3, const optim__k *restrict kp,       \
                                                     const unsigned V)                                  \
    {                                                                                                   \
        const optim__kc c = OPTIM__T(optim__kc_from)(&kp->c);                                           \
        const OPTIM__KR(name) k = OPTIM__T(optim__##name##_kr_from)(&kp->u.name);                       \
        const unsigned rw = optim__##name##_reads(V) | optim__##name##_writes(V);                       \
        const size_t bl = n * sizeof(R) <= OPTIM__PF_MIN ? n : OPTIM__PF_BLOCK / sizeof(R);             \
        size_t b, e, i;                                                                                 \
        for (b = 0; b < n; b = e) {                                                                     \
            e = n - b < bl ? n : b + bl;                                                                \
            OPTIM__PREFETCH(b, n, p, g, s0, s1, s2, s3, rw);                                            \
            OPTIM__VECTORIZE                                                                            \
            for (i = b; i < e; i++) OPTIM__T(optim__##name##_one)(p, g, s0, s1, s2, s3, i, &c, &k, V);  \
        }                                                                                               \
    }
OPTIM__RULE_LIST(OPTIM__LOOP_DEF, OPTIM__LIST_NOTHING)
#undef OPTIM__LOOP_DEF

/* ---- One instance per variant, and their table -------------------------------------- */

#define OPTIM__INST(name, v)                                                                            \
    static void OPTIM__T(optim__##name##_v##v)(size_t n, void *p, const void *g, void *const *s,          \
                                               const optim__k *k)                                       \
    {                                                                                                   \
        OPTIM__T(optim__##name##_loop)(n, (R *)p, (const R *)g, (R *)s[0], (R *)s[1], (R *)s[2],        \
                                       (R *)s[3], k, v##u);                                             \
    }                                                                                                   \
    static void OPTIM__T(optim__##name##_c##v)(size_t n, void *p, const void *g, void *const *s,          \
                                               const optim__k *k)                                       \
    {                                                                                                   \
        OPTIM__T(optim__##name##_loop)(n, (R *)p, (const R *)g, (R *)s[0], (R *)s[1], (R *)s[2],        \
                                       (R *)s[3], k, OPTIM__V_CLAMP | v##u);                            \
    }
#define OPTIM__INST_FN_V(name, v) OPTIM__T(optim__##name##_v##v),
#define OPTIM__INST_FN_C(name, v) OPTIM__T(optim__##name##_c##v),
/* OPTIM__REP_<N> stamps M(x, 0) .. M(x, N-1): N is the rule's
 * OPTIM__<ID>_NVARIANTS, so every variant it declares has an instance. */
#define OPTIM__INSTANCES(ID, value, name)                                                               \
    OPTIM__CAT(OPTIM__REP, OPTIM__##ID##_NVARIANTS)(OPTIM__INST, name)                                  \
    static const optim__loop_fn OPTIM__T(optim__##name##_fns)[2 * OPTIM__##ID##_NVARIANTS] = {          \
        OPTIM__CAT(OPTIM__REP, OPTIM__##ID##_NVARIANTS)(OPTIM__INST_FN_V, name)                         \
        OPTIM__CAT(OPTIM__REP, OPTIM__##ID##_NVARIANTS)(OPTIM__INST_FN_C, name)};
OPTIM__RULE_LIST(OPTIM__INSTANCES, OPTIM__LIST_NOTHING)
#undef OPTIM__INSTANCES
#undef OPTIM__INST
#undef OPTIM__INST_FN_V
#undef OPTIM__INST_FN_C

/* ---- Complex parameters: one loop over (re, im) pairs per rule of complex_list.h -------
 * n is even and p, g, s point at a pair's real part: a complex parameter has
 * an even number of elements and its thread split points fall on multiples of
 * 16 (parallel.c). GCC's vectorisers turn a complex product's
 * (ac - bd, ad + bc) into a fused vfmaddsub even under -ffp-contract=off,
 * which rounds once where the scalar path rounds twice: these loops are built
 * without vectorisation (one pair at a time on every path), so every path
 * computes the same bits (tests/test_complex.c: complex_rules_every_path). */
#if defined(__GNUC__) && !defined(__clang__)
#  pragma GCC push_options
#  pragma GCC optimize("no-tree-vectorize", "no-tree-slp-vectorize")
#endif
#define OPTIM__CLOOP_DEF(ID, name)                                                                      \
    OPTIM_INLINE void OPTIM__T(optim__##name##_cloop)(size_t n, R *restrict p, const R *restrict g,     \
                                                      R *restrict s0, R *restrict s1,                   \
                                                      const optim__k *restrict kp, const unsigned V)    \
    {                                                                                                   \
        const optim__kc c = OPTIM__T(optim__kc_from)(&kp->c);                                           \
        const OPTIM__KR(name) k = OPTIM__T(optim__##name##_kr_from)(&kp->u.name);                       \
        for (size_t i = 0; i + 1 < n; i += 2) {                                                         \
            R pz[2], gz[2], s[2][2];                                                                    \
            pz[0] = p[i];                                                                               \
            pz[1] = p[i + 1];                                                                           \
            gz[0] = g[i];                                                                               \
            gz[1] = g[i + 1];                                                                           \
            s[0][0] = s0[i];                                                                            \
            s[0][1] = s0[i + 1];                                                                        \
            s[1][0] = s1[i];                                                                            \
            s[1][1] = s1[i + 1];                                                                        \
            OPTIM__T(optim__##name##_celem)(pz, gz, s, &c, &k, V);                                      \
            p[i] = optim__canon(pz[0]);                                                                 \
            p[i + 1] = optim__canon(pz[1]);                                                             \
            s0[i] = optim__canon(s[0][0]);                                                              \
            s0[i + 1] = optim__canon(s[0][1]);                                                          \
            s1[i] = optim__canon(s[1][0]);                                                              \
            s1[i + 1] = optim__canon(s[1][1]);                                                          \
        }                                                                                               \
    }
OPTIM__COMPLEX_RULE_LIST(OPTIM__CLOOP_DEF)
#undef OPTIM__CLOOP_DEF

/* The complex rules read and write slots 0 and 1 in every variant (both are
 * moments): each instance passes those two. */
#define OPTIM__CINST(name, v)                                                                           \
    static void OPTIM__T(optim__##name##_cv##v)(size_t n, void *p, const void *g, void *const *s,         \
                                                const optim__k *k)                                      \
    {                                                                                                   \
        OPTIM__T(optim__##name##_cloop)(n, (R *)p, (const R *)g, (R *)s[0], (R *)s[1], k, v##u);        \
    }                                                                                                   \
    static void OPTIM__T(optim__##name##_cc##v)(size_t n, void *p, const void *g, void *const *s,         \
                                                const optim__k *k)                                      \
    {                                                                                                   \
        OPTIM__T(optim__##name##_cloop)(n, (R *)p, (const R *)g, (R *)s[0], (R *)s[1], k,               \
                                        OPTIM__V_CLAMP | v##u);                                         \
    }
#define OPTIM__CINST_FN_V(name, v) OPTIM__T(optim__##name##_cv##v),
#define OPTIM__CINST_FN_C(name, v) OPTIM__T(optim__##name##_cc##v),
#define OPTIM__CINSTANCES(ID, name)                                                                     \
    OPTIM__CAT(OPTIM__REP, OPTIM__##ID##_NVARIANTS)(OPTIM__CINST, name)                                 \
    static const optim__loop_fn OPTIM__T(optim__##name##_cfns)[2 * OPTIM__##ID##_NVARIANTS] = {         \
        OPTIM__CAT(OPTIM__REP, OPTIM__##ID##_NVARIANTS)(OPTIM__CINST_FN_V, name)                        \
        OPTIM__CAT(OPTIM__REP, OPTIM__##ID##_NVARIANTS)(OPTIM__CINST_FN_C, name)};
OPTIM__COMPLEX_RULE_LIST(OPTIM__CINSTANCES)
#undef OPTIM__CINSTANCES
#undef OPTIM__CINST
#undef OPTIM__CINST_FN_V
#undef OPTIM__CINST_FN_C
#if defined(__GNUC__) && !defined(__clang__)
#  pragma GCC pop_options
#endif
/* ---- Pass 1 of the rules with a per-tensor reduction (rule.h) -----------------------------
 * pre: the rule's state update before its norms, as an update loop that
 * writes only slots. red: the squares of its two values per element into
 * 16 double lanes each, element i in lane i % 16 (n is a multiple of 16 but
 * at a block's end; blocks and chunks start at multiples of 16), so the sums
 * do not depend on the CPU path. */
#define OPTIM__RLOOP_DEF(ID, name)                                                                      \
    OPTIM_INLINE void OPTIM__T(optim__##name##_preone)(const R *restrict p, const R *restrict g,         \
                                                       R *restrict s0, R *restrict s1, R *restrict s2,  \
                                                       R *restrict s3, size_t i, const optim__kc *c,    \
                                                       const OPTIM__KR(name) *k, const unsigned V)      \
    {                                                                                                   \
        const unsigned rd = optim__##name##_pre_reads(V), wr = optim__##name##_pre_writes(V);           \
        R s[OPTIM_MAX_SLOTS] = {0, 0, 0, 0};                                                            \
        if (rd & 1u) s[0] = s0[i];                                                                      \
        if (rd & 2u) s[1] = s1[i];                                                                      \
        if (rd & 4u) s[2] = s2[i];                                                                      \
        if (rd & 8u) s[3] = s3[i];                                                                      \
        OPTIM__T(optim__##name##_pre)(p[i], g[i], s, c, k, V);                                          \
        if (wr & 1u) s0[i] = optim__canon(s[0]);                                                        \
        if (wr & 2u) s1[i] = optim__canon(s[1]);                                                        \
        if (wr & 4u) s2[i] = optim__canon(s[2]);                                                        \
        if (wr & 8u) s3[i] = optim__canon(s[3]);                                                        \
    }                                                                                                   \
    /* Blocks of OPTIM__PF_BLOCK bytes as the plain loops', prefetching g and the slots pre touches     \
     * (p is red's: pre reads it only for weight decay, which these rules keep out of pre). */          \
    OPTIM_INLINE void OPTIM__T(optim__##name##_preloop)(size_t n, const R *restrict p, const R *restrict g, \
                                                        R *restrict s0, R *restrict s1, R *restrict s2, \
                                                        R *restrict s3, const optim__k *restrict kp,    \
                                                        const unsigned V)                               \
    {                                                                                                   \
        const optim__kc c = OPTIM__T(optim__kc_from)(&kp->c);                                           \
        const OPTIM__KR(name) k = OPTIM__T(optim__##name##_kr_from)(&kp->u.name);                       \
        const unsigned rw = optim__##name##_pre_reads(V) | optim__##name##_pre_writes(V) | OPTIM__PF_G; \
        const size_t bl = n * sizeof(R) <= OPTIM__PF_MIN ? n : OPTIM__PF_BLOCK / sizeof(R);             \
        size_t b, e, i;                                                                                 \
        for (b = 0; b < n; b = e) {                                                                     \
            e = n - b < bl ? n : b + bl;                                                                \
            OPTIM__PREFETCH_N(b, n, OPTIM__PF_BLOCK, OPTIM__PF_BYTES, p, g, s0, s1, s2, s3, rw);        \
            OPTIM__VECTORIZE                                                                            \
            for (i = b; i < e; i++) OPTIM__T(optim__##name##_preone)(p, g, s0, s1, s2, s3, i, &c, &k, V); \
        }                                                                                               \
    }                                                                                                   \
    OPTIM_INLINE void OPTIM__T(optim__##name##_redone)(const R *restrict p, const R *restrict g,         \
                                                       R *const *restrict sl, size_t i,                 \
                                                       const optim__kc *c, const OPTIM__KR(name) *k,    \
                                                       const unsigned V, double *restrict a0,           \
                                                       double *restrict a1)                             \
    {                                                                                                   \
        const unsigned rd = optim__##name##_red_reads(V);                                               \
        R s[OPTIM_MAX_SLOTS] = {0, 0, 0, 0}, x[2];                                                      \
        if (rd & 1u) s[0] = sl[0][i];                                                                   \
        if (rd & 2u) s[1] = sl[1][i];                                                                   \
        if (rd & 4u) s[2] = sl[2][i];                                                                   \
        if (rd & 8u) s[3] = sl[3][i];                                                                   \
        OPTIM__T(optim__##name##_red)(p[i], g ? g[i] : (R)0, s, c, k, V, x);                            \
        *a0 += (double)x[0] * (double)x[0];                                                             \
        *a1 += (double)x[1] * (double)x[1];                                                             \
    }                                                                                                   \
    /* Blocks of OPTIM__PF_BLOCK bytes (whole groups of OPTIM__LANES), each after the prefetch of p, g  \
     * and the slots red reads (those pre just wrote are in cache: the prefetch costs little there). */ \
    OPTIM_INLINE void OPTIM__T(optim__##name##_redloop)(size_t n, const R *restrict p, const R *restrict g, \
                                                        R *const *sl, const optim__k *restrict kp,      \
                                                        const unsigned V, double *restrict acc)         \
    {                                                                                                   \
        const optim__kc c = OPTIM__T(optim__kc_from)(&kp->c);                                           \
        const OPTIM__KR(name) k = OPTIM__T(optim__##name##_kr_from)(&kp->u.name);                       \
        const unsigned rw = optim__##name##_red_reads(V) | OPTIM__PF_P | (g ? OPTIM__PF_G : 0u);        \
        const size_t bl = n * sizeof(R) <= OPTIM__PF_MIN ? n : OPTIM__PF_BLOCK / sizeof(R);             \
        size_t b, e, i = 0, j;                                                                          \
        _Static_assert(OPTIM__PF_BLOCK / sizeof(R) % OPTIM__LANES == 0, "blocks of whole groups");      \
        for (b = 0; b + OPTIM__LANES <= n; b = e) {                                                     \
            e = n - b < bl ? n : b + bl;                                                                \
            OPTIM__PREFETCH_N(b, n, OPTIM__PF_BLOCK, OPTIM__PF_BYTES, p, g, sl[0], sl[1], sl[2], sl[3], rw); \
            for (i = b; i + OPTIM__LANES <= e; i += OPTIM__LANES)                                       \
                for (j = 0; j < OPTIM__LANES; j++)                                                      \
                    OPTIM__T(optim__##name##_redone)(p, g, sl, i + j, &c, &k, V, &acc[j],               \
                                                     &acc[OPTIM__LANES + j]);                           \
            if (i < e) break;                                                                           \
        }                                                                                               \
        for (j = 0; i + j < n; j++)                                                                     \
            OPTIM__T(optim__##name##_redone)(p, g, sl, i + j, &c, &k, V, &acc[j], &acc[OPTIM__LANES + j]); \
    }                                                                                                   \
    /* pre and red in one pass over direct arrays (the task's own memory in the compute type): element  \
     * i's state moves, is stored, and red takes it as stored (optim__canon), as red after pre reads it \
     * back: the same slots and the same sums, lane by lane, bit for bit. One pass keeps pre's streams  \
     * in flight while red computes (LAMB's u: a square root and three divisions an element). */        \
    OPTIM_INLINE void OPTIM__T(optim__##name##_bothone)(const R *restrict p, const R *restrict g,        \
                                                        R *const *restrict sl, size_t i,                \
                                                        const optim__kc *c, const OPTIM__KR(name) *k,   \
                                                        const unsigned V, double *restrict a0,          \
                                                        double *restrict a1)                            \
    {                                                                                                   \
        const unsigned wr = optim__##name##_pre_writes(V);                                              \
        const unsigned ld = optim__##name##_pre_reads(V) | (optim__##name##_red_reads(V) & ~wr);        \
        R s[OPTIM_MAX_SLOTS] = {0, 0, 0, 0}, x[2];                                                      \
        if (ld & 1u) s[0] = sl[0][i];                                                                   \
        if (ld & 2u) s[1] = sl[1][i];                                                                   \
        if (ld & 4u) s[2] = sl[2][i];                                                                   \
        if (ld & 8u) s[3] = sl[3][i];                                                                   \
        OPTIM__T(optim__##name##_pre)(p[i], g[i], s, c, k, V);                                          \
        if (wr & 1u) sl[0][i] = s[0] = optim__canon(s[0]);                                              \
        if (wr & 2u) sl[1][i] = s[1] = optim__canon(s[1]);                                              \
        if (wr & 4u) sl[2][i] = s[2] = optim__canon(s[2]);                                              \
        if (wr & 8u) sl[3][i] = s[3] = optim__canon(s[3]);                                              \
        OPTIM__T(optim__##name##_red)(p[i], g[i], s, c, k, V, x);                                       \
        *a0 += (double)x[0] * (double)x[0];                                                             \
        *a1 += (double)x[1] * (double)x[1];                                                             \
    }                                                                                                   \
    OPTIM_INLINE void OPTIM__T(optim__##name##_bothloop)(size_t n, const R *restrict p, const R *restrict g, \
                                                         R *const *sl, const optim__k *restrict kp,     \
                                                         const unsigned V, double *restrict acc)        \
    {                                                                                                   \
        const optim__kc c = OPTIM__T(optim__kc_from)(&kp->c);                                           \
        const OPTIM__KR(name) k = OPTIM__T(optim__##name##_kr_from)(&kp->u.name);                       \
        const unsigned rw = optim__##name##_pre_reads(V) | optim__##name##_pre_writes(V) |              \
                            optim__##name##_red_reads(V) | OPTIM__PF_P | OPTIM__PF_G;                   \
        const size_t bl = n * sizeof(R) <= OPTIM__PF_MIN ? n : OPTIM__PF_BLOCK / sizeof(R);             \
        size_t b, e, i = 0, j;                                                                          \
        for (b = 0; b + OPTIM__LANES <= n; b = e) {                                                     \
            e = n - b < bl ? n : b + bl;                                                                \
            OPTIM__PREFETCH_N(b, n, OPTIM__PF_BLOCK, OPTIM__PF_BYTES, p, g, sl[0], sl[1], sl[2], sl[3], rw); \
            for (i = b; i + OPTIM__LANES <= e; i += OPTIM__LANES)                                       \
                for (j = 0; j < OPTIM__LANES; j++)                                                      \
                    OPTIM__T(optim__##name##_bothone)(p, g, sl, i + j, &c, &k, V, &acc[j],              \
                                                      &acc[OPTIM__LANES + j]);                          \
            if (i < e) break;                                                                           \
        }                                                                                               \
        for (j = 0; i + j < n; j++)                                                                     \
            OPTIM__T(optim__##name##_bothone)(p, g, sl, i + j, &c, &k, V, &acc[j], &acc[OPTIM__LANES + j]); \
    }
OPTIM__REDUCE_LIST(OPTIM__RLOOP_DEF)
#undef OPTIM__RLOOP_DEF

#define OPTIM__RINST(name, v)                                                                           \
    static void OPTIM__T(optim__##name##_pv##v)(size_t n, void *p, const void *g, void *const *s,         \
                                                const optim__k *k)                                      \
    {                                                                                                   \
        OPTIM__T(optim__##name##_preloop)(n, (const R *)p, (const R *)g, (R *)s[0], (R *)s[1], (R *)s[2], \
                                          (R *)s[3], k, v##u);                                          \
    }                                                                                                   \
    static void OPTIM__T(optim__##name##_pc##v)(size_t n, void *p, const void *g, void *const *s,         \
                                                const optim__k *k)                                      \
    {                                                                                                   \
        OPTIM__T(optim__##name##_preloop)(n, (const R *)p, (const R *)g, (R *)s[0], (R *)s[1], (R *)s[2], \
                                          (R *)s[3], k, OPTIM__V_CLAMP | v##u);                         \
    }                                                                                                   \
    static void OPTIM__T(optim__##name##_rv##v)(size_t n, const void *p, const void *g, void *const *s,   \
                                                const optim__k *k, double *acc)                         \
    {                                                                                                   \
        OPTIM__T(optim__##name##_redloop)(n, (const R *)p, (const R *)g, (R *const *)s, k, v##u, acc);  \
    }                                                                                                   \
    static void OPTIM__T(optim__##name##_rc##v)(size_t n, const void *p, const void *g, void *const *s,   \
                                                const optim__k *k, double *acc)                         \
    {                                                                                                   \
        OPTIM__T(optim__##name##_redloop)(n, (const R *)p, (const R *)g, (R *const *)s, k,              \
                                          OPTIM__V_CLAMP | v##u, acc);                                  \
    }                                                                                                   \
    static void OPTIM__T(optim__##name##_bv##v)(size_t n, const void *p, const void *g, void *const *s,   \
                                                const optim__k *k, double *acc)                         \
    {                                                                                                   \
        OPTIM__T(optim__##name##_bothloop)(n, (const R *)p, (const R *)g, (R *const *)s, k, v##u, acc); \
    }                                                                                                   \
    static void OPTIM__T(optim__##name##_bc##v)(size_t n, const void *p, const void *g, void *const *s,   \
                                                const optim__k *k, double *acc)                         \
    {                                                                                                   \
        OPTIM__T(optim__##name##_bothloop)(n, (const R *)p, (const R *)g, (R *const *)s, k,             \
                                           OPTIM__V_CLAMP | v##u, acc);                                 \
    }
#define OPTIM__RINST_PV(name, v) OPTIM__T(optim__##name##_pv##v),
#define OPTIM__RINST_PC(name, v) OPTIM__T(optim__##name##_pc##v),
#define OPTIM__RINST_RV(name, v) OPTIM__T(optim__##name##_rv##v),
#define OPTIM__RINST_RC(name, v) OPTIM__T(optim__##name##_rc##v),
#define OPTIM__RINST_BV(name, v) OPTIM__T(optim__##name##_bv##v),
#define OPTIM__RINST_BC(name, v) OPTIM__T(optim__##name##_bc##v),
#define OPTIM__RINSTANCES(ID, name)                                                                     \
    OPTIM__CAT(OPTIM__REP, OPTIM__##ID##_NVARIANTS)(OPTIM__RINST, name)                                 \
    static const optim__loop_fn OPTIM__T(optim__##name##_pre_fns)[2 * OPTIM__##ID##_NVARIANTS] = {      \
        OPTIM__CAT(OPTIM__REP, OPTIM__##ID##_NVARIANTS)(OPTIM__RINST_PV, name)                          \
        OPTIM__CAT(OPTIM__REP, OPTIM__##ID##_NVARIANTS)(OPTIM__RINST_PC, name)};                        \
    static const optim__red_fn OPTIM__T(optim__##name##_red_fns)[2 * OPTIM__##ID##_NVARIANTS] = {       \
        OPTIM__CAT(OPTIM__REP, OPTIM__##ID##_NVARIANTS)(OPTIM__RINST_RV, name)                          \
        OPTIM__CAT(OPTIM__REP, OPTIM__##ID##_NVARIANTS)(OPTIM__RINST_RC, name)};                        \
    static const optim__red_fn OPTIM__T(optim__##name##_both_fns)[2 * OPTIM__##ID##_NVARIANTS] = {      \
        OPTIM__CAT(OPTIM__REP, OPTIM__##ID##_NVARIANTS)(OPTIM__RINST_BV, name)                          \
        OPTIM__CAT(OPTIM__REP, OPTIM__##ID##_NVARIANTS)(OPTIM__RINST_BC, name)};
OPTIM__REDUCE_LIST(OPTIM__RINSTANCES)
#undef OPTIM__RINSTANCES
#undef OPTIM__RINST
#undef OPTIM__RINST_PV
#undef OPTIM__RINST_PC
#undef OPTIM__RINST_RV
#undef OPTIM__RINST_RC

/* ---- Step statistics (include/optim_stats.h) -------------------------------------------
 * Lanes in R: element i of a chunk (a call) in lane i % 16, summed in element
 * order per lane, in R, over the chunk (32 elements per lane at most), then
 * each lane added to its double lane of the block (acc), which the caller
 * folds by a fixed tree at the block's end. IEEE arithmetic without
 * contraction, and the lanes are those of the scalar path: every path gives
 * the same bits. The fused loops (optim__sloop_fn) and the copies' function
 * (optim__stats_fn) run the same lanes and the same arithmetic. */

/* A rule's clamp (rule_list.h's OPTIM__CLAMP_LIST), chosen by the type of
 * its constants: optim__<name>_clamped for the listed rules, else none. */
OPTIM_INLINE int OPTIM__T(optim__no_clamped)(const R *s, const void *k, unsigned V)
{
    (void)s;
    (void)k;
    (void)V;
    return 0;
}
#define OPTIM__CLAMPED_FN(ID, name) const OPTIM__KR(name) * : OPTIM__T(optim__##name##_clamped),
#define OPTIM__CLAMPED_HAS(ID, name) const OPTIM__KR(name) * : 1,
#define OPTIM__RULE_CLAMPED(kp) _Generic((kp), OPTIM__CLAMP_LIST(OPTIM__CLAMPED_FN) default: OPTIM__T(optim__no_clamped))
#define OPTIM__RULE_CLAMPS(kp) _Generic((kp), OPTIM__CLAMP_LIST(OPTIM__CLAMPED_HAS) default: 0)

/* The lanes of one chunk. The largest |u| is kept as the bits of |u|, an
 * unsigned integer: for a value without sign the integer order is the
 * order of the values, and a NaN (every NaN, with its sign cleared) is above
 * infinity, so an integer maximum is a maximum in which a NaN sticks (one
 * instruction, where a float maximum with NaN needs three). */
#if OPTIM__R_F64
typedef uint64_t OPTIM__T(optim__rbits);
#else
typedef uint32_t OPTIM__T(optim__rbits);
#endif
typedef struct {
    R g[OPTIM__LANES], u[OPTIM__LANES], p[OPTIM__LANES], c[OPTIM__LANES];
    OPTIM__T(optim__rbits) m[OPTIM__LANES];
} OPTIM__T(optim__slanes);

/* A chunk's lanes added to the block's double lanes (acc[16 v + lane],
 * OPTIM__NSTAT's order; the largest |u|: taken, a NaN sticks), then zeroed
 * (kernels.h's optim__sflush_fn): the task's sflush, and the fused loops at
 * each chunk's end. Out of line: once per 512 elements, and one copy per
 * path instead of one in every fused instance (a quarter of the kernels'
 * text when it was inlined). */
__attribute__((noinline)) static void OPTIM__T(optim__sflush)(void *lanesv, double *restrict acc)
{
    OPTIM__T(optim__slanes) *restrict l = (OPTIM__T(optim__slanes) *)lanesv;
    size_t j;
    OPTIM__VECTORIZE
    for (j = 0; j < OPTIM__LANES; j++) {
        R mr;
        double m;
        memcpy(&mr, &l->m[j], sizeof mr); /* the bits of |u| */
        m = (double)mr;
        acc[j] += (double)l->g[j];
        acc[OPTIM__LANES + j] += (double)l->u[j];
        acc[2 * OPTIM__LANES + j] += (double)l->p[j];
        acc[3 * OPTIM__LANES + j] = (m != m || m > acc[3 * OPTIM__LANES + j]) ? m : acc[3 * OPTIM__LANES + j];
        acc[4 * OPTIM__LANES + j] += (double)l->c[j];
    }
    memset(l, 0, sizeof *l);
}

/* Element i's values into lane j, in two parts: before the rule's math, the
 * raw gradient gr (clamped by value clipping) and the parameter p0; after
 * it, the update u = p1 - p0 and whether the element was clamped (value
 * clipping, or the rule's own clamp: cl). The squares are added by one fused
 * multiply-add each (one rounding). Measuring the gradient and the parameter
 * first keeps them in registers where they were loaded for the rule (AVX2
 * has 16 vector registers: otherwise the gradient is loaded again after the
 * parameter's store, which can wait on it). */
OPTIM_INLINE void OPTIM__T(optim__slane_in)(OPTIM__T(optim__slanes) *restrict l, size_t j, R p0, R gr,
                                            const optim__kc *c, const unsigned V)
{
    const R gc = (V & OPTIM__V_CLAMP) ? optim__clamp(gr, -c->gclip, c->gclip) : gr;
    l->g[j] = optim__fma(gc, gc, l->g[j]);
    l->p[j] = optim__fma(p0, p0, l->p[j]);
}

OPTIM_INLINE void OPTIM__T(optim__slane_out)(OPTIM__T(optim__slanes) *restrict l, size_t j, R p0, R p1, R gr,
                                             int cl, const optim__kc *c, const unsigned V, const int counts)
{
    const R u = p1 - p0, au = optim__fabs(u);
    OPTIM__T(optim__rbits) bu;
    memcpy(&bu, &au, sizeof bu);
    l->u[j] = optim__fma(u, u, l->u[j]);
    l->m[j] = bu > l->m[j] ? bu : l->m[j];
    if (counts) l->c[j] += ((V & OPTIM__V_CLAMP) && (gr > c->gclip || gr < -c->gclip)) || cl ? (R)1 : (R)0;
}

/* Fused instances only where they pay and are cheap to build: float32
 * (the compute type of float32, bfloat16 and float16 parameters) on the
 * vector paths (OPTIM__STATS_FUSED, set by kernels_avx2.c and
 * kernels_avx512.c). float64 and the scalar path measure through copies
 * (optim__stats below): the same lanes and arithmetic, so the same bits; a
 * fused instance would only make them faster, at another set of loop
 * instances to compile (docs/STATS.md). */
#if OPTIM__STATS_FUSED && !OPTIM__R_F64
/* The fused loops: each rule's loop (the same element function, loads and
 * stores as OPTIM__LOOP_DEF's) with its element's statistics in registers.
 * Groups of 16 elements, element j of a group in lane j, run four at a time
 * (a block of OPTIM__PF_BLOCK bytes with one prefetch before it) and one at a
 * time where less than a block is left: only at the end of a call's range
 * (its chunks and blocks are multiples of a block), where nothing is left
 * to prefetch. */
#define OPTIM__SBLOCK (OPTIM__PF_BLOCK / sizeof(R))
#define OPTIM__SLOOP_DEF(ID, value, name)                                                               \
    OPTIM_INLINE void OPTIM__T(optim__##name##_sone)(R *restrict p, const R *restrict g, R *restrict s0, \
                                                     R *restrict s1, R *restrict s2, R *restrict s3,    \
                                                     size_t i, const optim__kc *c,                      \
                                                     const OPTIM__KR(name) *k, const unsigned V,        \
                                                     OPTIM__T(optim__slanes) *restrict l, size_t j)     \
    {                                                                                                   \
        const unsigned rd = optim__##name##_reads(V), wr = optim__##name##_writes(V);                   \
        const int counts = (V & OPTIM__V_CLAMP) || OPTIM__RULE_CLAMPS(k);                               \
        R s[OPTIM_MAX_SLOTS] = {0, 0, 0, 0};                                                            \
        const R p0 = p[i], gi = g[i];                                                                   \
        R pi = p0;                                                                                      \
        OPTIM__T(optim__slane_in)(l, j, p0, gi, c, V);                                                  \
        if (rd & 1u) s[0] = s0[i];                                                                      \
        if (rd & 2u) s[1] = s1[i];                                                                      \
        if (rd & 4u) s[2] = s2[i];                                                                      \
        if (rd & 8u) s[3] = s3[i];                                                                      \
        OPTIM__T(optim__##name##_elem)(&pi, gi, s, c, k, V);                                            \
        pi = optim__canon(pi);                                                                          \
        p[i] = pi;                                                                                      \
        if (wr & 1u) s0[i] = optim__canon(s[0]);                                                        \
        if (wr & 2u) s1[i] = optim__canon(s[1]);                                                        \
        if (wr & 4u) s2[i] = optim__canon(s[2]);                                                        \
        if (wr & 8u) s3[i] = optim__canon(s[3]);                                                        \
        OPTIM__T(optim__slane_out)(l, j, p0, pi, gi, counts ? OPTIM__RULE_CLAMPED(k)(s, k, V) : 0, c, V, \
                                   counts);                                                             \
    }                                                                                                   \
    OPTIM_INLINE void OPTIM__T(optim__##name##_sloop)(size_t n, size_t npf, R *restrict p,              \
                                                      const R *restrict g,                              \
                                                      R *restrict s0, R *restrict s1, R *restrict s2,   \
                                                      R *restrict s3, const optim__k *restrict kp,      \
                                                      const unsigned V, void *restrict lanes,           \
                                                      double *restrict acc)                             \
    {                                                                                                   \
        const optim__kc c = OPTIM__T(optim__kc_from)(&kp->c);                                           \
        const OPTIM__KR(name) k = OPTIM__T(optim__##name##_kr_from)(&kp->u.name);                       \
        const unsigned rw = optim__##name##_reads(V) | optim__##name##_writes(V);                       \
        OPTIM__T(optim__slanes) l;                                                                      \
        size_t i = 0, e, j, q;                                                                          \
        memcpy(&l, lanes, sizeof l);                                                                    \
        while (i < n) {                                                                                 \
            e = n - i < OPTIM__CHUNK ? n : i + OPTIM__CHUNK;                                            \
            for (; i + OPTIM__SBLOCK <= e; i += OPTIM__SBLOCK) {                                        \
                OPTIM__PREFETCH_SBLOCK(i, npf, p, g, s0, s1, s2, s3, rw);                               \
                for (q = 0; q < OPTIM__SBLOCK; q += OPTIM__LANES) {                                     \
                    OPTIM__VECTORIZE                                                                    \
                    for (j = 0; j < OPTIM__LANES; j++)                                                  \
                        OPTIM__T(optim__##name##_sone)(p, g, s0, s1, s2, s3, i + q + j, &c, &k, V, &l, j); \
                }                                                                                       \
            }                                                                                           \
            for (; i < e; i += OPTIM__LANES) {                                                          \
                OPTIM__VECTORIZE                                                                        \
                for (j = 0; j < OPTIM__LANES; j++)                                                      \
                    OPTIM__T(optim__##name##_sone)(p, g, s0, s1, s2, s3, i + j, &c, &k, V, &l, j);      \
            }                                                                                           \
            if (e % OPTIM__CHUNK == 0) OPTIM__T(optim__sflush)(&l, acc);                                \
        }                                                                                               \
        memcpy(lanes, &l, sizeof l);                                                                    \
    }
OPTIM__RULE_LIST(OPTIM__SLOOP_DEF, OPTIM__LIST_NOTHING)
#undef OPTIM__SLOOP_DEF
#undef OPTIM__SBLOCK

#define OPTIM__SINST(name, v)                                                                           \
    static void OPTIM__T(optim__##name##_sv##v)(size_t n, size_t npf, void *p, const void *g,           \
                                                void *const *s, const optim__k *k, void *lanes,         \
                                                double *acc)                                            \
    {                                                                                                   \
        OPTIM__T(optim__##name##_sloop)(n, npf, (R *)p, (const R *)g, (R *)s[0], (R *)s[1], (R *)s[2],  \
                                        (R *)s[3], k, v##u, lanes, acc);                                \
    }                                                                                                   \
    static void OPTIM__T(optim__##name##_sc##v)(size_t n, size_t npf, void *p, const void *g,           \
                                                void *const *s, const optim__k *k, void *lanes,         \
                                                double *acc)                                            \
    {                                                                                                   \
        OPTIM__T(optim__##name##_sloop)(n, npf, (R *)p, (const R *)g, (R *)s[0], (R *)s[1], (R *)s[2],  \
                                        (R *)s[3], k, OPTIM__V_CLAMP | v##u, lanes, acc);               \
    }
#define OPTIM__SINST_FN_V(name, v) OPTIM__T(optim__##name##_sv##v),
#define OPTIM__SINST_FN_C(name, v) OPTIM__T(optim__##name##_sc##v),
#define OPTIM__SINSTANCES(ID, value, name)                                                              \
    OPTIM__CAT(OPTIM__REP, OPTIM__##ID##_NVARIANTS)(OPTIM__SINST, name)                                 \
    static const optim__sloop_fn OPTIM__T(optim__##name##_sfns)[2 * OPTIM__##ID##_NVARIANTS] = {        \
        OPTIM__CAT(OPTIM__REP, OPTIM__##ID##_NVARIANTS)(OPTIM__SINST_FN_V, name)                        \
        OPTIM__CAT(OPTIM__REP, OPTIM__##ID##_NVARIANTS)(OPTIM__SINST_FN_C, name)};
OPTIM__RULE_LIST(OPTIM__SINSTANCES, OPTIM__LIST_NOTHING)
#undef OPTIM__SINSTANCES
#undef OPTIM__SINST
#undef OPTIM__SINST_FN_V
#undef OPTIM__SINST_FN_C

#endif /* OPTIM__STATS_FUSED && !OPTIM__R_F64 */

/* The statistics of a chunk from copies (kernels.h's optim__stats_fn), the
 * lanes of the fused loops: value clipping (V) and the rule's clamp flags
 * (hascl: cl given) are constants of each instance, so that the common case
 * (neither: nothing counted) vectorises to the five sums and the maximum. */
OPTIM_INLINE void OPTIM__T(optim__stats_run)(size_t n, const R *restrict p0, const R *restrict p1,
                                             const R *restrict g, const unsigned char *restrict cl,
                                             const optim__kc *c, const unsigned V, const int hascl,
                                             OPTIM__T(optim__slanes) *restrict l)
{
    const int counts = hascl || (V & OPTIM__V_CLAMP);
    size_t i = 0, j;
    for (; i + OPTIM__LANES <= n; i += OPTIM__LANES) {
        OPTIM__VECTORIZE
        for (j = 0; j < OPTIM__LANES; j++) {
            OPTIM__T(optim__slane_in)(l, j, p0[i + j], g[i + j], c, V);
            OPTIM__T(optim__slane_out)(l, j, p0[i + j], p1[i + j], g[i + j], hascl ? cl[i + j] : 0, c, V, counts);
        }
    }
    for (j = 0; i + j < n; j++) {
        OPTIM__T(optim__slane_in)(l, j, p0[i + j], g[i + j], c, V);
        OPTIM__T(optim__slane_out)(l, j, p0[i + j], p1[i + j], g[i + j], hascl ? cl[i + j] : 0, c, V, counts);
    }
}

static void OPTIM__T(optim__stats)(size_t n, const void *p0v, const void *p1v, const void *gv,
                                   const unsigned char *cl, const optim__k *kp, void *restrict lanes)
{
    const R *p0 = (const R *)p0v, *p1 = (const R *)p1v, *g = (const R *)gv;
    const optim__kc c = OPTIM__T(optim__kc_from)(&kp->c);
    OPTIM__T(optim__slanes) l;
    memcpy(&l, lanes, sizeof l);
    if (kp->c.variant & OPTIM__V_CLAMP) {
        if (cl) OPTIM__T(optim__stats_run)(n, p0, p1, g, cl, &c, OPTIM__V_CLAMP, 1, &l);
        else OPTIM__T(optim__stats_run)(n, p0, p1, g, NULL, &c, OPTIM__V_CLAMP, 0, &l);
    } else {
        if (cl) OPTIM__T(optim__stats_run)(n, p0, p1, g, cl, &c, 0u, 1, &l);
        else OPTIM__T(optim__stats_run)(n, p0, p1, g, NULL, &c, 0u, 0, &l);
    }
    memcpy(lanes, &l, sizeof l);
}

/* The clamp flags of the rules of OPTIM__CLAMP_LIST (kernels.h's
 * optim__clampflag_fn): the slots the variant writes, as the loop left them. */
#define OPTIM__CLAMPFLAG_DEF(ID, name)                                                                  \
    static void OPTIM__T(optim__##name##_clampflag)(size_t n, void *const *sl, const optim__k *kp,        \
                                                    unsigned char *cl)                                  \
    {                                                                                                   \
        const OPTIM__KR(name) k = OPTIM__T(optim__##name##_kr_from)(&kp->u.name);                       \
        const unsigned V = kp->c.variant & ~OPTIM__V_CLAMP;                                             \
        const unsigned wr = optim__##name##_writes(V);                                                  \
        size_t i;                                                                                       \
        int j;                                                                                          \
        for (i = 0; i < n; i++) {                                                                       \
            R s[OPTIM_MAX_SLOTS] = {0, 0, 0, 0};                                                        \
            for (j = 0; j < OPTIM_MAX_SLOTS; j++)                                                       \
                if ((wr >> j) & 1u) s[j] = ((const R *)sl[j])[i];                                       \
            cl[i] = (unsigned char)OPTIM__T(optim__##name##_clamped)(s, &k, V);                         \
        }                                                                                               \
    }
OPTIM__CLAMP_LIST(OPTIM__CLAMPFLAG_DEF)
#undef OPTIM__CLAMPFLAG_DEF

/* ---- Storage of this compute type held as itself (float32 in float, float64 in double) --- */

static void OPTIM__T(optim__load_same)(void *restrict dst, const void *restrict base, size_t off, size_t n,
                                       const void *ctx)
{
    (void)ctx;
    memcpy(dst, (const R *)base + off, n * sizeof(R));
}

static void OPTIM__T(optim__store_same)(void *restrict base, size_t off, size_t n, const void *restrict src,
                                        const void *ctx)
{
    (void)ctx;
    memcpy((R *)base + off, src, n * sizeof(R));
}

static const optim__storage OPTIM__T(optim__storage_same) = {
    OPTIM__R_F64 ? OPTIM_FLOAT64 : OPTIM_FLOAT32, OPTIM__R_F64 ? OPTIM__CT_F64 : OPTIM__CT_F32, sizeof(R), 1,
    OPTIM__T(optim__load_same), OPTIM__T(optim__store_same)};

/* ---- Reductions over gradients of this type -------------------------------------------
 * 16 double lanes, element i of a block always in lane i % 16, lanes combined
 * in a fixed tree: the same bits on every path (the scalar path runs the
 * same order lane by lane). x*x of a float is exact in double, so a sum of
 * squares of floats is non-finite only if an element is; `nf` catches
 * NaN/Inf for the other norms (x - x is NaN exactly for them). */

/* Accumulate x[0..n) = g, or (|w| + eta) g, into the lanes: element i into
 * lane i % 16 (callers keep n a multiple of 16 but at the end of a block).
 * The lanes live in local arrays and each group is three loops of 16: so
 * GCC vectorises the double lanes (written as one loop over acc, they
 * compiled to scalar conversions and adds, and fused clipping's norm pass
 * ran at a third of memory speed on a Xeon: docs/PERFORMANCE.md). */
OPTIM_INLINE void OPTIM__T(optim__reduce_acc)(double *restrict acc, R *restrict nf, size_t n, const R *restrict g,
                                              const R *restrict w, R eta, const optim__norm kind, double p,
                                              const int adaptive)
{
    const size_t bl = n * sizeof(R) <= OPTIM__PF_MIN ? n : OPTIM__PF_BLOCK / sizeof(R);
    size_t i = 0, j, b, e;
    double a[OPTIM__LANES];
    R f[OPTIM__LANES];
    for (j = 0; j < OPTIM__LANES; j++) {
        a[j] = acc[j];
        f[j] = nf[j];
    }
    /* Blocks of OPTIM__PF_BLOCK bytes (whole groups), each after the prefetch of g (and w) 2 KiB ahead, as the
     * update loops. On the Xeon at 64M the norm's pass took 1.75 times the ceiling's read of the same array
     * without it, 1.46 with it (4 and 8 KiB ahead did no better): adam:clip=1 0.85-0.88 -> 0.88-0.90. */
    for (b = 0; b + OPTIM__LANES <= n; b = e) {
        e = n - b < bl ? n : b + bl;
        OPTIM__PREFETCH_1(b, n, OPTIM__PF_BLOCK, OPTIM__PF_BYTES, g, 0);
        if (adaptive) OPTIM__PREFETCH_1(b, n, OPTIM__PF_BLOCK, OPTIM__PF_BYTES, w, 0);
        for (i = b; i + OPTIM__LANES <= e; i += OPTIM__LANES) {
            R x[OPTIM__LANES];
            if (adaptive)
                for (j = 0; j < OPTIM__LANES; j++) x[j] = (optim__fabs(w[i + j]) + eta) * g[i + j];
            else
                for (j = 0; j < OPTIM__LANES; j++) x[j] = g[i + j];
            for (j = 0; j < OPTIM__LANES; j++) f[j] = f[j] + (x[j] - x[j]);
            for (j = 0; j < OPTIM__LANES; j++) a[j] = optim__lane(a[j], fabs((double)x[j]), kind, p);
        }
        if (i < e) break;
    }
    for (j = 0; j < OPTIM__LANES; j++) {
        acc[j] = a[j];
        nf[j] = f[j];
    }
    for (j = 0; i + j < n; j++) {
        R x = adaptive ? (optim__fabs(w[i + j]) + eta) * g[i + j] : g[i + j];
        nf[j] = nf[j] + (x - x);
        acc[j] = optim__lane(acc[j], fabs((double)x), kind, p);
    }
}

/* The partial of the lanes (fixed tree: 16 -> 8 -> 4 -> 2 -> 1); *bad = 1 if
 * a lane saw a NaN or Inf. */
OPTIM_INLINE double OPTIM__T(optim__reduce_end)(double *acc, const R *nf, const optim__norm kind, double p, int *bad)
{
    size_t j;
    for (j = 0; j < OPTIM__LANES; j++)
        if (nf[j] != 0) *bad = 1;
    for (j = OPTIM__LANES / 2; j > 0; j /= 2) {
        size_t l;
        for (l = 0; l < j; l++)
            acc[l] = kind == OPTIM__NORM_INF ? optim__lane(acc[l], acc[l + j], kind, p) : acc[l] + acc[l + j];
    }
    return acc[0];
}

OPTIM_INLINE double OPTIM__T(optim__reduce_loop)(size_t n, const R *restrict g, const R *restrict w, R eta,
                                                 const optim__norm kind, double p, const int adaptive, int *bad)
{
    double acc[OPTIM__LANES];
    R nf[OPTIM__LANES];
    size_t j;
    for (j = 0; j < OPTIM__LANES; j++) {
        acc[j] = 0.0;
        nf[j] = 0;
    }
    OPTIM__T(optim__reduce_acc)(acc, nf, n, g, w, eta, kind, p, adaptive);
    return OPTIM__T(optim__reduce_end)(acc, nf, kind, p, bad);
}

/* Gradients held as R. ASAM's weights exist for float32 only (SAM refuses
 * other parameters). */
static double OPTIM__T(optim__reduce_same)(size_t n, const void *gv, size_t off, const float *w, float eta,
                                           optim__norm kind, double p, int *bad)
{
    const R *g = (const R *)gv + off;
    /* One instance per (kind, adaptive), with both as constants. */
#if OPTIM__R_F64
#  define OPTIM__R_ADAPTIVE(K) (void)w, (void)eta, OPTIM__T(optim__reduce_loop)(n, g, NULL, 0, K, p, 0, bad)
#else
#  define OPTIM__R_ADAPTIVE(K) \
    w ? OPTIM__T(optim__reduce_loop)(n, g, w, eta, K, p, 1, bad) : OPTIM__T(optim__reduce_loop)(n, g, NULL, 0, K, p, 0, bad)
#endif
    switch (kind) {
    case OPTIM__NORM_L1: return OPTIM__R_ADAPTIVE(OPTIM__NORM_L1);
    case OPTIM__NORM_L2: return OPTIM__R_ADAPTIVE(OPTIM__NORM_L2);
    case OPTIM__NORM_INF: return OPTIM__R_ADAPTIVE(OPTIM__NORM_INF);
    case OPTIM__NORM_LP: return OPTIM__R_ADAPTIVE(OPTIM__NORM_LP);
    }
#undef OPTIM__R_ADAPTIVE
    return 0.0;
}

#if !OPTIM__R_F64
/* ---- bfloat16 and float16, converted to float ---------------------------------------- */
#  include "convert_simd.h" /* the vector paths' bfloat16 loops */

#  define OPTIM__HALF_STORAGE(type, dtype)                                                               \
    static void optim__load_##type(void *restrict dst, const void *restrict base, size_t off, size_t n,   \
                                   const void *ctx)                                                      \
    {                                                                                                     \
        float *restrict d = (float *)dst;                                                                 \
        const uint16_t *restrict s = (const uint16_t *)base + off;                                        \
        size_t i = optim__##type##_load_vec(d, s, n);                                                     \
        (void)ctx;                                                                                        \
        OPTIM__VECTORIZE                                                                                  \
        for (; i < n; i++) d[i] = optim__##type##_to_f32(s[i]);                                           \
    }                                                                                                     \
    static void optim__store_##type(void *restrict base, size_t off, size_t n, const void *restrict src,  \
                                    const void *ctx)                                                     \
    {                                                                                                     \
        uint16_t *restrict d = (uint16_t *)base + off;                                                    \
        const float *restrict s = (const float *)src;                                                     \
        size_t i = optim__##type##_store_vec(d, s, n);                                                    \
        (void)ctx;                                                                                        \
        OPTIM__VECTORIZE                                                                                  \
        for (; i < n; i++) d[i] = optim__f32_to_##type(s[i]);                                             \
    }                                                                                                     \
    static const optim__storage optim__storage_##type = {dtype, OPTIM__CT_F32, 2, 0, optim__load_##type,  \
                                                         optim__store_##type};                            \
    /* Gradients of this type: each chunk converted, then the float lanes; the                            \
     * chunks are multiples of 16, so element i stays in lane i % 16. */                                  \
    static double optim__reduce_##type(size_t n, const void *g, size_t off, const float *w, float eta,    \
                                       optim__norm kind, double p, int *bad)                              \
    {                                                                                                     \
        double acc[OPTIM__LANES];                                                                         \
        float nf[OPTIM__LANES], buf[OPTIM__CHUNK];                                                        \
        size_t j, c;                                                                                      \
        (void)w;                                                                                          \
        (void)eta;                                                                                        \
        for (j = 0; j < OPTIM__LANES; j++) {                                                              \
            acc[j] = 0.0;                                                                                 \
            nf[j] = 0;                                                                                    \
        }                                                                                                 \
        for (c = 0; c < n; c += OPTIM__CHUNK) {                                                           \
            size_t len = n - c < OPTIM__CHUNK ? n - c : OPTIM__CHUNK;                                     \
            optim__load_##type(buf, g, off + c, len, NULL);                                               \
            switch (kind) {                                                                               \
            case OPTIM__NORM_L1: optim__reduce_acc_f32(acc, nf, len, buf, NULL, 0, OPTIM__NORM_L1, p, 0); break; \
            case OPTIM__NORM_L2: optim__reduce_acc_f32(acc, nf, len, buf, NULL, 0, OPTIM__NORM_L2, p, 0); break; \
            case OPTIM__NORM_INF: optim__reduce_acc_f32(acc, nf, len, buf, NULL, 0, OPTIM__NORM_INF, p, 0); break; \
            case OPTIM__NORM_LP: optim__reduce_acc_f32(acc, nf, len, buf, NULL, 0, OPTIM__NORM_LP, p, 0); break; \
            }                                                                                             \
        }                                                                                                 \
        return optim__reduce_end_f32(acc, nf, kind, p, bad);                                              \
    }
OPTIM__HALF_STORAGE(bf16, OPTIM_BFLOAT16)
OPTIM__HALF_STORAGE(f16, OPTIM_FLOAT16)
#  undef OPTIM__HALF_STORAGE

/* ---- float16 through the hardware's conversions (F16C on avx2, AVX-512F on avx512) -------------
 * vcvtph2ps widens exactly, as optim__f16_to_f32 (a signaling NaN comes out
 * quiet with its payload, as the formula's multiplication makes it).
 * vcvtps2ph rounds to nearest even and keeps subnormals, as
 * optim__f32_to_f16, but a NaN keeps its payload: fixed up to torch's
 * sign | 0x7e00. conversions_hw_edges holds every path to the formulas'
 * bits (every float16, and float32 edge values). */
#  if defined(__AVX512F__) || defined(__F16C__)
#    define OPTIM__HW_F16 1
static void optim__load_f16_hw(void *restrict dst, const void *restrict base, size_t off, size_t n, const void *ctx)
{
    float *restrict d = (float *)dst;
    const uint16_t *restrict s = (const uint16_t *)base + off;
    size_t i = 0;
    (void)ctx;
#    if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(d + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + i))));
#    else
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
#    endif
    for (; i < n; i++) d[i] = optim__f16_to_f32(s[i]);
}

static void optim__store_f16_hw(void *restrict base, size_t off, size_t n, const void *restrict src, const void *ctx)
{
    uint16_t *restrict d = (uint16_t *)base + off;
    const float *restrict s = (const float *)src;
    size_t i = 0;
    (void)ctx;
#    if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) {
        const __m512 x = _mm512_loadu_ps(s + i);
        const __m512i u = _mm512_castps_si512(x);
        const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
        const __m512i hw = _mm512_cvtepu16_epi32(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        const __m512i fix = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x8000)),
                                            _mm512_set1_epi32(0x7e00));
        _mm256_storeu_si256((__m256i *)(d + i), _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(hw, nan, fix)));
    }
#    else
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(s + i);
        const __m256i u = _mm256_castps_si256(x);
        const __m256i nan32 = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
        const __m128i hw = _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m256i fix32 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x8000)),
                                              _mm256_set1_epi32(0x7e00));
        const __m128i fix = _mm_packus_epi32(_mm256_castsi256_si128(fix32), _mm256_extracti128_si256(fix32, 1));
        const __m128i nan = _mm_packs_epi32(_mm256_castsi256_si128(nan32), _mm256_extracti128_si256(nan32, 1));
        _mm_storeu_si128((__m128i *)(d + i), _mm_blendv_epi8(hw, fix, nan));
    }
#    endif
    for (; i < n; i++) d[i] = optim__f32_to_f16(s[i]);
}

static const optim__storage optim__storage_f16_hw = {OPTIM_FLOAT16, OPTIM__CT_F32, 2, 0, optim__load_f16_hw,
                                                     optim__store_f16_hw};
#  endif

/* ---- bfloat16 through AVX-512 BF16 (the avx512bf16 table only) ---------------------------------
 * vcvtne2ps2bf16 rounds to nearest even, as optim__f32_to_bf16, but flushes
 * float32 subnormal inputs to a signed zero and keeps a NaN's sign and
 * payload (quieted): NaN lanes are set to torch's 0x7fc0, and a vector
 * holding a nonzero subnormal is converted by the formula instead (rare:
 * below 2^-126). */
#  if defined(OPTIM__HW_BF16_TARGET)
OPTIM__HW_BF16_TARGET static void optim__store_bf16_hw(void *restrict base, size_t off, size_t n,
                                                       const void *restrict src, const void *ctx)
{
    uint16_t *restrict d = (uint16_t *)base + off;
    const float *restrict s = (const float *)src;
    const __m512i expo = _mm512_set1_epi32(0x7f800000), mant = _mm512_set1_epi32(0x007fffff);
    size_t i = 0, j;
    (void)ctx;
    for (; i + 32 <= n; i += 32) {
        const __m512 a = _mm512_loadu_ps(s + i), b = _mm512_loadu_ps(s + i + 16);
        const __m512i ua = _mm512_castps_si512(a), ub = _mm512_castps_si512(b);
        const __mmask16 suba = _mm512_testn_epi32_mask(ua, expo) & _mm512_test_epi32_mask(ua, mant);
        const __mmask16 subb = _mm512_testn_epi32_mask(ub, expo) & _mm512_test_epi32_mask(ub, mant);
        const __mmask32 nan = (__mmask32)_mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q) |
                              ((__mmask32)_mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q) << 16);
        __m512i r;
        if (suba | subb) {
            for (j = 0; j < 32; j++) d[i + j] = optim__f32_to_bf16(s[i + j]);
            continue;
        }
        r = (__m512i)_mm512_cvtne2ps_pbh(b, a); /* elements 0..15 from a (the second operand), 16..31 from b */
        _mm512_storeu_si512((void *)(d + i), _mm512_mask_mov_epi16(r, nan, _mm512_set1_epi16(0x7fc0)));
    }
    for (; i < n; i++) d[i] = optim__f32_to_bf16(s[i]);
}

static const optim__storage optim__storage_bf16_hw = {OPTIM_BFLOAT16, OPTIM__CT_F32, 2, 0, optim__load_bf16,
                                                      optim__store_bf16_hw};
#  endif

/* ---- bfloat16 with stochastic rounding ------------------------------------------------------------
 * Loaded exactly; stored by optim__f32_to_bf16_sr with the random bits of
 * each element's index under the stream's key for this step (ctx: its
 * optim__sr_ctx, the key of optim__sr_key and the index of the task's
 * element 0 in its tensor). Plain integer arithmetic, the same bits on
 * every path: intrinsics on avx2 and avx512 (convert_simd.h), vectorised by
 * the compiler elsewhere. */
static void optim__store_bf16_sr(void *restrict base, size_t off, size_t n, const void *restrict src, const void *ctx)
{
    uint16_t *restrict d = (uint16_t *)base + off;
    const float *restrict s = (const float *)src;
    const optim__sr_ctx *k = (const optim__sr_ctx *)ctx;
    const uint64_t e = (uint64_t)off + k->first; /* the element's index in the whole tensor */
    const uint32_t ck = optim__sr_chunk_key(k->key, e >> 32);
    const uint32_t lo = (uint32_t)e;
    size_t i = optim__bf16_sr_store_vec(d, s, n, lo, ck);
    OPTIM__VECTORIZE
    for (; i < n; i++) d[i] = optim__f32_to_bf16_sr(s[i], optim__sr_bits(lo + (uint32_t)i, ck));
}

static const optim__storage optim__storage_bf16_sr = {OPTIM_BFLOAT16, OPTIM__CT_F32, 2, 0, optim__load_bf16,
                                                      optim__store_bf16_sr};
/* ---- OPTIM_INT8_BLOCK: 8-bit block-quantized state (quant8.h), in float ------------------
 * ctx is the slot's block scales; off and n are multiples of the block but at
 * a tensor's end (chunks and thread split points are multiples of
 * OPTIM__CHUNK), so a block is loaded and stored whole, by one thread. One
 * descriptor per slot kind: the signed code, the unsigned one, the unsigned
 * one that never stores a positive value as 0. */
#  include "quant8_simd.h"
#  define OPTIM__Q8_STORAGE(kind, K)                                                                       \
    static void optim__load_q8##kind(void *restrict dst, const void *restrict base, size_t off, size_t n,   \
                                     const void *ctx)                                                      \
    {                                                                                                       \
        float *restrict d = (float *)dst;                                                                   \
        const uint8_t *restrict c = (const uint8_t *)base + off;                                            \
        const float *restrict sc = (const float *)ctx + off / OPTIM__Q8_BLOCK;                              \
        for (size_t b = 0; b < n; b += OPTIM__Q8_BLOCK) {                                                   \
            const size_t len = n - b < OPTIM__Q8_BLOCK ? n - b : OPTIM__Q8_BLOCK;                           \
            optim__q8_dec_block(d + b, c + b, len, sc[b / OPTIM__Q8_BLOCK], K);                             \
        }                                                                                                   \
    }                                                                                                       \
    static void optim__store_q8##kind(void *restrict base, size_t off, size_t n, const void *restrict src,  \
                                      const void *ctx)                                                     \
    {                                                                                                       \
        uint8_t *restrict c = (uint8_t *)base + off;                                                        \
        float *restrict sc = (float *)(uintptr_t)ctx + off / OPTIM__Q8_BLOCK;                               \
        const float *restrict s = (const float *)src;                                                       \
        for (size_t b = 0; b < n; b += OPTIM__Q8_BLOCK) {                                                   \
            const size_t len = n - b < OPTIM__Q8_BLOCK ? n - b : OPTIM__Q8_BLOCK;                           \
            int nonfinite;                                                                                  \
            const float A = optim__q8_absmax_block(s + b, len, &nonfinite), r = 1.0f / A;                   \
            sc[b / OPTIM__Q8_BLOCK] = A;                                                                    \
            optim__q8_enc_block(c + b, s + b, len, r, K, nonfinite);                                        \
        }                                                                                                   \
    }                                                                                                       \
    static const optim__storage optim__storage_q8##kind = {OPTIM_INT8_BLOCK, OPTIM__CT_F32, 1, 0,           \
                                                           optim__load_q8##kind, optim__store_q8##kind};
OPTIM__Q8_STORAGE(s, OPTIM__SLOT_SIGNED)
OPTIM__Q8_STORAGE(n, OPTIM__SLOT_NONNEG)
OPTIM__Q8_STORAGE(p, OPTIM__SLOT_POSITIVE)
#  undef OPTIM__Q8_STORAGE

/* With stochastic rounding of the codes (OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING): ctx is an optim__q8sr_ctx
 * (the scales and the slot's optim__sr_ctx this step). Loaded as above; each block's scale as above, its codes by
 * quant8.h's stochastic encoders with the 20 random bits of each element's index in the tensor (convert.h's
 * stream: the bits do not depend on the path or the thread split), in AVX2/AVX-512 intrinsics on those paths
 * (quant8_simd.h, the same operations). */
#  define OPTIM__Q8SR_STORAGE(kind, K)                                                                     \
    static void optim__load_q8sr##kind(void *restrict dst, const void *restrict base, size_t off, size_t n, \
                                       const void *ctx)                                                    \
    {                                                                                                       \
        optim__load_q8##kind(dst, base, off, n, ((const optim__q8sr_ctx *)ctx)->scales);                    \
    }                                                                                                       \
    static void optim__store_q8sr##kind(void *restrict base, size_t off, size_t n, const void *restrict src, \
                                        const void *ctx)                                                   \
    {                                                                                                       \
        const optim__q8sr_ctx *q = (const optim__q8sr_ctx *)ctx;                                            \
        uint8_t *restrict c = (uint8_t *)base + off;                                                        \
        float *restrict sc = (float *)q->scales + off / OPTIM__Q8_BLOCK;                                    \
        const float *restrict s = (const float *)src;                                                       \
        const uint64_t e = (uint64_t)off + q->sr->first; /* the element's index in the whole tensor */      \
        const uint32_t ck = optim__sr_chunk_key(q->sr->key, e >> 32);                                       \
        const uint32_t lo = (uint32_t)e;                                                                    \
        for (size_t b = 0; b < n; b += OPTIM__Q8_BLOCK) {                                                   \
            const size_t len = n - b < OPTIM__Q8_BLOCK ? n - b : OPTIM__Q8_BLOCK;                           \
            int nonfinite;                                                                                  \
            const float A = optim__q8_absmax_block(s + b, len, &nonfinite), r = 1.0f / A;                   \
            sc[b / OPTIM__Q8_BLOCK] = A;                                                                    \
            optim__q8_enc_sr_block(c + b, s + b, len, r, K, nonfinite, lo + (uint32_t)b, ck);               \
        }                                                                                                   \
    }                                                                                                       \
    static const optim__storage optim__storage_q8sr##kind = {OPTIM_INT8_BLOCK, OPTIM__CT_F32, 1, 0,         \
                                                             optim__load_q8sr##kind, optim__store_q8sr##kind};
OPTIM__Q8SR_STORAGE(s, OPTIM__SLOT_SIGNED)
OPTIM__Q8SR_STORAGE(n, OPTIM__SLOT_NONNEG)
OPTIM__Q8SR_STORAGE(p, OPTIM__SLOT_POSITIVE)
#  undef OPTIM__Q8SR_STORAGE

/* ---- SAM's ascent step and the gradient utilities (float32) ------------------------------ */

OPTIM_INLINE void optim__sam_loop(size_t n, float *restrict w, const float *restrict g, float *restrict saved,
                                  const optim__sam_k *restrict kp, const unsigned V)
{
    const optim__sam_k k = *kp;
    OPTIM__VECTORIZE
    for (size_t i = 0; i < n; i++) {
        float wi = w[i];
        saved[i] = wi;
        w[i] = optim__canon(optim__sam_elem_f32(wi, g[i], &k, V));
    }
}

#  define OPTIM__SAM_INST(x, v)                                                                          \
    static void optim__sam_v##v(size_t n, float *w, const float *g, float *saved, const optim__sam_k *k) \
    {                                                                                                     \
        optim__sam_loop(n, w, g, saved, k, v##u);                                                         \
    }
#  define OPTIM__SAM_FN(x, v) optim__sam_v##v,
OPTIM__CAT(OPTIM__REP, OPTIM__SAM_NVARIANTS)(OPTIM__SAM_INST, x)

static void optim__copy(size_t n, float *dst, const float *src)
{
    float *restrict d = dst;
    const float *restrict s = src;
    OPTIM__VECTORIZE
    for (size_t i = 0; i < n; i++) d[i] = s[i];
}

static void optim__scale(size_t n, float *x, const optim__util_k *k)
{
    float *restrict v = x;
    const float a = k->a;
    OPTIM__VECTORIZE
    for (size_t i = 0; i < n; i++) v[i] = optim__canon(v[i] * a);
}

static void optim__clamp_fn(size_t n, float *x, const optim__util_k *k)
{
    float *restrict v = x;
    const float lo = k->a, hi = k->b;
    OPTIM__VECTORIZE
    for (size_t i = 0; i < n; i++) v[i] = optim__clamp(v[i], lo, hi);
}
#endif
