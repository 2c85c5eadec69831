/* bench_kernels.c: the ceilings of `optim bench`, and copy and triad.
 *
 * A rule's ceiling is a kernel with exactly its memory streams (the
 * parameter and each state array read and written, the gradient read) and
 * trivial arithmetic: x = x*a + g*b. It must be compiled like the library's
 * kernels for the path being measured, or the comparison would measure the
 * compiler: each kernel here is stamped out once per CPU path with that
 * path's instruction set (target attributes: -mavx2 -mfma, -mavx512f/vl/dq
 * with 512-bit vectors, no vectorisation for scalar), mirroring the flags
 * CMakeLists.txt gives src/kernels/kernels_<isa>.c. It must also be split
 * across threads the way optim_step splits a step (one parallel region over
 * the concatenation of all tensors, equal contiguous shares, boundaries on
 * 64-byte lines), or a model of many tensors would be measured against a
 * differently balanced loop. Threads and ISA are the only things these
 * kernels share with the library; their code is independent of it.
 */
#include "bench.h"

#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#  include <omp.h>
#endif

/* ---- Per-path instances -------------------------------------------------------- */

#if defined(__GNUC__) && !defined(__clang__)
#  define BENCH_GCC 1
#endif
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#  define BENCH_X86 1
#endif
#if defined(__aarch64__)
#  define BENCH_ARM64 1
#endif

/* A plain copy loop must stay a loop: compilers turn it into a memcpy call,
 * and glibc's memcpy switches to non-temporal stores for large sizes, which
 * would measure another kernel than the one named. */
#if defined(BENCH_GCC)
#  define BENCH_LOOP_NOT_MEMCPY __attribute__((optimize("no-tree-loop-distribute-patterns")))
#elif defined(__clang__)
#  define BENCH_LOOP_NOT_MEMCPY __attribute__((no_builtin("memcpy")))
#else
#  define BENCH_LOOP_NOT_MEMCPY
#endif

/* The scalar path: no vectorisation, as the library's kernels_scalar.c
 * (compiled with -fno-tree-vectorize / -fno-vectorize). */
#if defined(BENCH_GCC)
#  define BENCH_ATTR_SCALAR __attribute__((optimize("no-tree-vectorize", "no-tree-slp-vectorize")))
#  define BENCH_PRAGMA_SCALAR
#elif defined(__clang__)
#  define BENCH_ATTR_SCALAR
#  define BENCH_PRAGMA_SCALAR _Pragma("clang loop vectorize(disable) interleave(disable)")
#else
#  define BENCH_ATTR_SCALAR
#  define BENCH_PRAGMA_SCALAR
#endif

typedef void (*bench_rmw_fn)(size_t n, float *const *x, const float *g, float a, float b);
typedef float (*bench_sum_fn)(size_t n, const float *g);
typedef void (*bench_copy_fn)(size_t n, float *dst, const float *src);
typedef void (*bench_triad_fn)(size_t n, float *a, const float *b, const float *c, float s);

typedef void (*bench_trmw_fn)(size_t n, float *const *x, const void *g, uint16_t *w, int g16, float a, float b);
typedef void (*bench_rmwq_fn)(size_t n, float *p, uint16_t *p16, const float *g, const uint16_t *g16,
                              uint8_t *const *q, uint16_t *w16, float a, float b, uint8_t m);

typedef float (*bench_rmwr_fn)(size_t n, float *const *x, const float *g, const float *r, float a, float b);

typedef struct bench_kset {
    bench_rmw_fn rmw[BENCH_MAX_RMW]; /* rmw[k-1]: k read-modify-write streams */
    bench_trmw_fn trmw[BENCH_MAX_RMW + 1][BENCH_MAX_RMW + 1]; /* [k32][k16]: with 16-bit streams */
    bench_rmwq_fn rmwq[BENCH_MAX_RMW]; /* rmwq[k-1]: the parameter and k - 1 byte arrays (int8 state) */
    bench_rmwr_fn rmwr[3]; /* rmwr[k]: k read-modify-write streams and two read-only ones (k = 0: a sum) */
    bench_sum_fn sum;
    bench_copy_fn copy;
    bench_triad_fn triad;
} bench_kset;

/* One loop body per stream count; K is a constant in each instance, so
 * unused streams cost nothing. g*b is shared by the streams, as a rule's
 * gradient is. */
#define BENCH_RMW_FN(sfx, ATTR, PRAGMA, K)                                                               \
    ATTR static void bench_rmw##K##_##sfx(size_t n, float *const *x, const float *g_, float a, float b)  \
    {                                                                                                    \
        float *restrict x0 = x[0];                                                                       \
        float *restrict x1 = (K) > 1 ? x[1] : NULL;                                                      \
        float *restrict x2 = (K) > 2 ? x[2] : NULL;                                                      \
        float *restrict x3 = (K) > 3 ? x[3] : NULL;                                                      \
        float *restrict x4 = (K) > 4 ? x[4] : NULL;                                                      \
        const float *restrict g = g_;                                                                    \
        PRAGMA                                                                                           \
        for (size_t i = 0; i < n; i++) {                                                                 \
            float d = g[i] * b;                                                                          \
            x0[i] = x0[i] * a + d;                                                                       \
            if ((K) > 1) x1[i] = x1[i] * a + d;                                                          \
            if ((K) > 2) x2[i] = x2[i] * a + d;                                                          \
            if ((K) > 3) x3[i] = x3[i] * a + d;                                                          \
            if ((K) > 4) x4[i] = x4[i] * a + d;                                                          \
        }                                                                                                \
    }

/* A pass of a rule with a per-tensor reduction: K read-modify-write streams
 * and two read-only ones (g and r). K = 0 sums g + r in 64 lanes (as
 * bench_sum), so that the reads are not dropped. */
#define BENCH_RMWR_FN(sfx, ATTR, PRAGMA, K)                                                              \
    ATTR static float bench_rmwr##K##_##sfx(size_t n, float *const *x, const float *g_, const float *r_,  \
                                            float a, float b)                                            \
    {                                                                                                    \
        const float *restrict g = g_;                                                                    \
        const float *restrict r = r_;                                                                    \
        if ((K) == 0) {                                                                                  \
            float acc[64] = {0.0f}, s = 0.0f;                                                            \
            size_t i = 0, j;                                                                             \
            (void)x;                                                                                     \
            (void)a;                                                                                     \
            (void)b;                                                                                     \
            for (; i + 64 <= n; i += 64) {                                                               \
                PRAGMA                                                                                   \
                for (j = 0; j < 64; j++) acc[j] += g[i + j] + r[i + j];                                  \
            }                                                                                            \
            for (; i < n; i++) acc[0] += g[i] + r[i];                                                    \
            for (j = 0; j < 64; j++) s += acc[j];                                                        \
            return s;                                                                                    \
        } else {                                                                                         \
            float *restrict x0 = x[0];                                                                   \
            float *restrict x1 = (K) > 1 ? x[1] : NULL;                                                  \
            PRAGMA                                                                                       \
            for (size_t i = 0; i < n; i++) {                                                             \
                float d = (g[i] + r[i]) * b;                                                             \
                x0[i] = x0[i] * a + d;                                                                   \
                if ((K) > 1) x1[i] = x1[i] * a + d;                                                      \
            }                                                                                            \
            return 0.0f;                                                                                 \
        }                                                                                                \
    }

/* 16-bit streams: the upper half of a float (bfloat16's layout; float16
 * streams move the same bytes), widened by a shift and truncated back. */
static inline float bench_h2f(uint16_t h)
{
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}
static inline uint16_t bench_f2h(float f)
{
    union { uint32_t u; float f; } v;
    v.f = f;
    return (uint16_t)(v.u >> 16);
}

/* One loop per (K32, K16), G16 and W16 constants in each of its four loops. */
#define BENCH_TRMW_LOOP(PRAGMA, K32, K16, G16, W16)                                                      \
    PRAGMA                                                                                               \
    for (size_t i = 0; i < n; i++) {                                                                     \
        float d = ((G16) ? bench_h2f(gh[i]) : gf[i]) * b;                                                \
        if ((K32) > 0) f0[i] = f0[i] * a + d;                                                            \
        if ((K32) > 1) f1[i] = f1[i] * a + d;                                                            \
        if ((K32) > 2) f2[i] = f2[i] * a + d;                                                            \
        if ((K32) > 3) f3[i] = f3[i] * a + d;                                                            \
        if ((K32) > 4) f4[i] = f4[i] * a + d;                                                            \
        if ((K16) > 0) h0[i] = bench_f2h(bench_h2f(h0[i]) * a + d);                                      \
        if ((K16) > 1) h1[i] = bench_f2h(bench_h2f(h1[i]) * a + d);                                      \
        if ((K16) > 2) h2[i] = bench_f2h(bench_h2f(h2[i]) * a + d);                                      \
        if ((K16) > 3) h3[i] = bench_f2h(bench_h2f(h3[i]) * a + d);                                      \
        if ((K16) > 4) h4[i] = bench_f2h(bench_h2f(h4[i]) * a + d);                                      \
        if ((W16) && (K32) > 0) w[i] = bench_f2h(f0[i]);                                                 \
    }
#define BENCH_TRMW_FN(sfx, ATTR, PRAGMA, K32, K16)                                                       \
    ATTR static void bench_trmw##K32##_##K16##_##sfx(size_t n, float *const *x, const void *g_, uint16_t *w_, \
                                                      int g16, float a, float b)                        \
    {                                                                                                    \
        float *restrict f0 = (K32) > 0 ? x[0] : NULL;                                                    \
        float *restrict f1 = (K32) > 1 ? x[1] : NULL;                                                    \
        float *restrict f2 = (K32) > 2 ? x[2] : NULL;                                                    \
        float *restrict f3 = (K32) > 3 ? x[3] : NULL;                                                    \
        float *restrict f4 = (K32) > 4 ? x[4] : NULL;                                                    \
        uint16_t *restrict h0 = (K16) > 0 ? (uint16_t *)(void *)x[(K32)] : NULL;                          \
        uint16_t *restrict h1 = (K16) > 1 ? (uint16_t *)(void *)x[(K32) + 1] : NULL;                      \
        uint16_t *restrict h2 = (K16) > 2 ? (uint16_t *)(void *)x[(K32) + 2] : NULL;                      \
        uint16_t *restrict h3 = (K16) > 3 ? (uint16_t *)(void *)x[(K32) + 3] : NULL;                      \
        uint16_t *restrict h4 = (K16) > 4 ? (uint16_t *)(void *)x[(K32) + 4] : NULL;                      \
        uint16_t *restrict w = w_;                                                                       \
        const float *restrict gf = (const float *)g_;                                                    \
        const uint16_t *restrict gh = (const uint16_t *)g_;                                              \
        (void)f1; (void)f2; (void)f3; (void)f4; (void)h0; (void)h1; (void)h2; (void)h3; (void)h4;        \
        if (g16 && w) {                                                                                  \
            BENCH_TRMW_LOOP(PRAGMA, K32, K16, 1, 1)                                                      \
        } else if (g16) {                                                                                \
            BENCH_TRMW_LOOP(PRAGMA, K32, K16, 1, 0)                                                      \
        } else if (w) {                                                                                  \
            BENCH_TRMW_LOOP(PRAGMA, K32, K16, 0, 1)                                                      \
        } else {                                                                                         \
            BENCH_TRMW_LOOP(PRAGMA, K32, K16, 0, 0)                                                      \
        }                                                                                                \
    }
#define BENCH_TRMW_ALL(sfx, ATTR, PRAGMA)                                                                \
    BENCH_TRMW_FN(sfx, ATTR, PRAGMA, 0, 1) BENCH_TRMW_FN(sfx, ATTR, PRAGMA, 0, 2)                        \
    BENCH_TRMW_FN(sfx, ATTR, PRAGMA, 0, 3) BENCH_TRMW_FN(sfx, ATTR, PRAGMA, 0, 4)                        \
    BENCH_TRMW_FN(sfx, ATTR, PRAGMA, 0, 5) BENCH_TRMW_FN(sfx, ATTR, PRAGMA, 1, 0)                        \
    BENCH_TRMW_FN(sfx, ATTR, PRAGMA, 1, 1) BENCH_TRMW_FN(sfx, ATTR, PRAGMA, 1, 2)                        \
    BENCH_TRMW_FN(sfx, ATTR, PRAGMA, 1, 3) BENCH_TRMW_FN(sfx, ATTR, PRAGMA, 1, 4)                        \
    BENCH_TRMW_FN(sfx, ATTR, PRAGMA, 2, 0) BENCH_TRMW_FN(sfx, ATTR, PRAGMA, 2, 1)                        \
    BENCH_TRMW_FN(sfx, ATTR, PRAGMA, 2, 2) BENCH_TRMW_FN(sfx, ATTR, PRAGMA, 2, 3)                        \
    BENCH_TRMW_FN(sfx, ATTR, PRAGMA, 3, 0) BENCH_TRMW_FN(sfx, ATTR, PRAGMA, 3, 1)                        \
    BENCH_TRMW_FN(sfx, ATTR, PRAGMA, 3, 2) BENCH_TRMW_FN(sfx, ATTR, PRAGMA, 4, 0)                        \
    BENCH_TRMW_FN(sfx, ATTR, PRAGMA, 4, 1) BENCH_TRMW_FN(sfx, ATTR, PRAGMA, 5, 0)
#define BENCH_TRMW_TABLE(sfx)                                                                            \
    {                                                                                                    \
        {NULL, bench_trmw0_1_##sfx, bench_trmw0_2_##sfx, bench_trmw0_3_##sfx, bench_trmw0_4_##sfx,        \
         bench_trmw0_5_##sfx},                                                                           \
        {bench_trmw1_0_##sfx, bench_trmw1_1_##sfx, bench_trmw1_2_##sfx, bench_trmw1_3_##sfx,              \
         bench_trmw1_4_##sfx, NULL},                                                                     \
        {bench_trmw2_0_##sfx, bench_trmw2_1_##sfx, bench_trmw2_2_##sfx, bench_trmw2_3_##sfx, NULL, NULL}, \
        {bench_trmw3_0_##sfx, bench_trmw3_1_##sfx, bench_trmw3_2_##sfx, NULL, NULL, NULL},                \
        {bench_trmw4_0_##sfx, bench_trmw4_1_##sfx, NULL, NULL, NULL, NULL},                               \
        {bench_trmw5_0_##sfx, NULL, NULL, NULL, NULL, NULL},                                              \
    }

/* The int8 state cases' ceiling: a float parameter (or a bfloat16 one, p16,
 * with a bfloat16 gradient), a float or bfloat16 gradient (widened exactly: a
 * shift), and K - 1 byte arrays. */
#define BENCH_RMWQ_FN(sfx, ATTR, PRAGMA, K)                                                              \
    ATTR static void bench_rmwq##K##_##sfx(size_t n, float *p_, uint16_t *p16_, const float *g_,         \
                                          const uint16_t *g16_, uint8_t *const *q, uint16_t *w16, float a, \
                                          float b, uint8_t m)                                            \
    {                                                                                                    \
        float *restrict p = p_;                                                                          \
        uint16_t *restrict w = w16;                                                                      \
        uint8_t *restrict q0 = (K) > 1 ? q[0] : NULL;                                                    \
        uint8_t *restrict q1 = (K) > 2 ? q[1] : NULL;                                                    \
        uint8_t *restrict q2 = (K) > 3 ? q[2] : NULL;                                                    \
        uint8_t *restrict q3 = (K) > 4 ? q[3] : NULL;                                                    \
        if (g16_ && p16_) { /* bfloat16 parameter and gradient (truncated back: the bytes, not RNE) */ \
            const uint16_t *restrict g = g16_;                                                           \
            uint16_t *restrict ph = p16_;                                                                \
            PRAGMA                                                                                       \
            for (size_t i = 0; i < n; i++) {                                                             \
                uint32_t u = (uint32_t)g[i] << 16, v = (uint32_t)ph[i] << 16;                            \
                float gf, pf;                                                                            \
                memcpy(&gf, &u, 4);                                                                      \
                memcpy(&pf, &v, 4);                                                                      \
                pf = pf * a + gf * b;                                                                    \
                memcpy(&v, &pf, 4);                                                                      \
                ph[i] = (uint16_t)(v >> 16);                                                             \
                if ((K) > 1) q0[i] = (uint8_t)(q0[i] ^ m);                                               \
                if ((K) > 2) q1[i] = (uint8_t)(q1[i] ^ m);                                               \
                if ((K) > 3) q2[i] = (uint8_t)(q2[i] ^ m);                                               \
                if ((K) > 4) q3[i] = (uint8_t)(q3[i] ^ m);                                               \
            }                                                                                            \
        } else if (g16_ && w) { /* the offload step: also the 16-bit parameter copy, written */         \
            const uint16_t *restrict g = g16_;                                                           \
            PRAGMA                                                                                       \
            for (size_t i = 0; i < n; i++) {                                                             \
                uint32_t u = (uint32_t)g[i] << 16;                                                       \
                float gf;                                                                                \
                memcpy(&gf, &u, 4);                                                                      \
                p[i] = p[i] * a + gf * b;                                                                \
                memcpy(&u, &p[i], 4);                                                                    \
                w[i] = (uint16_t)(u >> 16);                                                              \
                if ((K) > 1) q0[i] = (uint8_t)(q0[i] ^ m);                                               \
                if ((K) > 2) q1[i] = (uint8_t)(q1[i] ^ m);                                               \
                if ((K) > 3) q2[i] = (uint8_t)(q2[i] ^ m);                                               \
                if ((K) > 4) q3[i] = (uint8_t)(q3[i] ^ m);                                               \
            }                                                                                            \
        } else if (g16_) {                                                                               \
            const uint16_t *restrict g = g16_;                                                           \
            PRAGMA                                                                                       \
            for (size_t i = 0; i < n; i++) {                                                             \
                uint32_t u = (uint32_t)g[i] << 16;                                                       \
                float gf;                                                                                \
                memcpy(&gf, &u, 4);                                                                      \
                p[i] = p[i] * a + gf * b;                                                                \
                if ((K) > 1) q0[i] = (uint8_t)(q0[i] ^ m);                                               \
                if ((K) > 2) q1[i] = (uint8_t)(q1[i] ^ m);                                               \
                if ((K) > 3) q2[i] = (uint8_t)(q2[i] ^ m);                                               \
                if ((K) > 4) q3[i] = (uint8_t)(q3[i] ^ m);                                               \
            }                                                                                            \
        } else {                                                                                         \
            const float *restrict g = g_;                                                                \
            PRAGMA                                                                                       \
            for (size_t i = 0; i < n; i++) {                                                             \
                p[i] = p[i] * a + g[i] * b;                                                              \
                if ((K) > 1) q0[i] = (uint8_t)(q0[i] ^ m);                                               \
                if ((K) > 2) q1[i] = (uint8_t)(q1[i] ^ m);                                               \
                if ((K) > 3) q2[i] = (uint8_t)(q2[i] ^ m);                                               \
                if ((K) > 4) q3[i] = (uint8_t)(q3[i] ^ m);                                               \
            }                                                                                            \
        }                                                                                                \
    }

#define BENCH_INSTANCES(sfx, ATTR, PRAGMA)                                                               \
    BENCH_TRMW_ALL(sfx, ATTR, PRAGMA)                                                                    \
    BENCH_RMWR_FN(sfx, ATTR, PRAGMA, 0)                                                                  \
    BENCH_RMWR_FN(sfx, ATTR, PRAGMA, 1)                                                                  \
    BENCH_RMWR_FN(sfx, ATTR, PRAGMA, 2)                                                                  \
    BENCH_RMWQ_FN(sfx, ATTR, PRAGMA, 1)                                                                  \
    BENCH_RMWQ_FN(sfx, ATTR, PRAGMA, 2)                                                                  \
    BENCH_RMWQ_FN(sfx, ATTR, PRAGMA, 3)                                                                  \
    BENCH_RMWQ_FN(sfx, ATTR, PRAGMA, 4)                                                                  \
    BENCH_RMWQ_FN(sfx, ATTR, PRAGMA, 5)                                                                  \
    BENCH_RMW_FN(sfx, ATTR, PRAGMA, 1)                                                                   \
    BENCH_RMW_FN(sfx, ATTR, PRAGMA, 2)                                                                   \
    BENCH_RMW_FN(sfx, ATTR, PRAGMA, 3)                                                                   \
    BENCH_RMW_FN(sfx, ATTR, PRAGMA, 4)                                                                   \
    BENCH_RMW_FN(sfx, ATTR, PRAGMA, 5)                                                                   \
    /* 64 lanes: four vectors of 16 (eight of 8) in flight, so that the adds'         \
     * latency does not bound a read at memory speed. */                                                 \
    ATTR static float bench_sum_##sfx(size_t n, const float *g_)                                         \
    {                                                                                                    \
        const float *restrict g = g_;                                                                    \
        float acc[64] = {0.0f}, s = 0.0f;                                                                \
        size_t i = 0, j;                                                                                 \
        for (; i + 64 <= n; i += 64) {                                                                   \
            PRAGMA                                                                                       \
            for (j = 0; j < 64; j++) acc[j] += g[i + j];                                                 \
        }                                                                                                \
        for (; i < n; i++) acc[0] += g[i];                                                               \
        for (j = 0; j < 64; j++) s += acc[j];                                                            \
        return s;                                                                                        \
    }                                                                                                    \
    ATTR BENCH_LOOP_NOT_MEMCPY static void bench_copy_##sfx(size_t n, float *dst_, const float *src_)    \
    {                                                                                                    \
        float *restrict dst = dst_;                                                                      \
        const float *restrict src = src_;                                                                \
        PRAGMA                                                                                           \
        for (size_t i = 0; i < n; i++) dst[i] = src[i];                                                  \
    }                                                                                                    \
    ATTR static void bench_triad_##sfx(size_t n, float *a_, const float *b_, const float *c_, float s)   \
    {                                                                                                    \
        float *restrict a = a_;                                                                          \
        const float *restrict b = b_;                                                                    \
        const float *restrict c = c_;                                                                    \
        PRAGMA                                                                                           \
        for (size_t i = 0; i < n; i++) a[i] = b[i] + s * c[i];                                           \
    }                                                                                                    \
    static const bench_kset bench_kset_##sfx = {                                                         \
        {bench_rmw1_##sfx, bench_rmw2_##sfx, bench_rmw3_##sfx, bench_rmw4_##sfx, bench_rmw5_##sfx},      \
        BENCH_TRMW_TABLE(sfx),                                                                           \
        {bench_rmwq1_##sfx, bench_rmwq2_##sfx, bench_rmwq3_##sfx, bench_rmwq4_##sfx, bench_rmwq5_##sfx}, \
        {bench_rmwr0_##sfx, bench_rmwr1_##sfx, bench_rmwr2_##sfx},                                       \
        bench_sum_##sfx,                                                                                 \
        bench_copy_##sfx,                                                                                \
        bench_triad_##sfx,                                                                               \
    };

BENCH_INSTANCES(scalar, BENCH_ATTR_SCALAR, BENCH_PRAGMA_SCALAR)
#if defined(BENCH_X86)
BENCH_INSTANCES(avx2, __attribute__((target("avx2,fma"))), )
#  if defined(__clang__)
/* clang: min_vector_width plays the part of -mprefer-vector-width=512. */
BENCH_INSTANCES(avx512, __attribute__((target("avx2,fma,avx512f,avx512vl,avx512dq"), min_vector_width(512))), )
#  else
BENCH_INSTANCES(avx512, __attribute__((target("avx2,fma,avx512f,avx512vl,avx512dq,prefer-vector-width=512"))), )
#  endif
#endif
#if defined(BENCH_ARM64)
/* AArch64 compilers vectorise with Advanced SIMD by default, as for the
 * library's kernels_neon.c. */
BENCH_INSTANCES(neon, , )
#endif

static const bench_kset *bench_kset_for(optim_isa isa)
{
    switch (isa) {
    case OPTIM_ISA_SCALAR: return &bench_kset_scalar;
#if defined(BENCH_X86)
    case OPTIM_ISA_AVX2: return &bench_kset_avx2;
    case OPTIM_ISA_AVX512:
    case OPTIM_ISA_AVX512BF16: return &bench_kset_avx512; /* the same loops: only conversions differ */
#endif
#if defined(BENCH_ARM64)
    case OPTIM_ISA_NEON: return &bench_kset_neon;
#endif
    default: return NULL;
    }
}

int bench_kernels_have(optim_isa isa)
{
    return bench_kset_for(isa) != NULL;
}

/* ---- Threads: the library's split ---------------------------------------------- */

/* The library runs steps below 2^15 elements per pair of threads on fewer
 * threads (src/kernels/parallel.c): waking a thread costs more than it
 * saves. The ceiling follows the same rule so both use the same threads. */
#define BENCH_PAR_MIN ((size_t)1 << 15)
/* Share boundaries fall on multiples of 16 floats within a tensor. */
#define BENCH_SPLIT_ALIGN 16

int bench_threads_for(size_t work, int threads)
{
    int nt = 1;
#ifdef _OPENMP
    nt = threads > 0 ? threads : omp_get_max_threads();
    if (nt > 1 && work / (size_t)nt < BENCH_PAR_MIN / 2) {
        size_t fit = work / (BENCH_PAR_MIN / 2);
        nt = fit < 2 ? 1 : (int)(fit < (size_t)nt ? fit : (size_t)nt);
    }
#else
    (void)work;
    (void)threads;
#endif
    return nt;
}

/* Index of the first span reaching past position x of the concatenation. */
static size_t bench_find(const bench_span *s, size_t count, size_t x)
{
    size_t lo = 0, hi = count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s[mid].start + s[mid].n <= x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static size_t bench_split_point(const bench_span *s, size_t count, size_t x)
{
    size_t a = bench_find(s, count, x);
    if (a == count || x <= s[a].start) return x;
    return s[a].start + (x - s[a].start) / BENCH_SPLIT_ALIGN * BENCH_SPLIT_ALIGN;
}

static void bench_rmw_range(bench_rmw_fn fn, int k, const bench_span *spans, size_t count, size_t lo, size_t hi,
                            float a, float b)
{
    size_t i;
    if (lo >= hi) return;
    for (i = bench_find(spans, count, lo); i < count && spans[i].start < hi; i++) {
        const bench_span *sp = &spans[i];
        size_t from = lo > sp->start ? lo - sp->start : 0;
        size_t to = hi < sp->start + sp->n ? hi - sp->start : sp->n;
        float *x[BENCH_MAX_RMW] = {NULL, NULL, NULL, NULL, NULL};
        int j;
        if (from >= to) continue;
        for (j = 0; j < k; j++) x[j] = sp->x[j] + from;
        fn(to - from, x, sp->g + from, a, b);
    }
}

void bench_rmw(optim_isa isa, int k, const bench_span *spans, size_t count, size_t total, int threads, float a,
               float b)
{
    const bench_kset *ks = bench_kset_for(isa);
    bench_rmw_fn fn;
    int nt;
    if (!ks || k < 1 || k > BENCH_MAX_RMW) abort(); /* the caller checked both */
    fn = ks->rmw[k - 1];
    nt = bench_threads_for(total, threads);
    if (nt <= 1) {
        bench_rmw_range(fn, k, spans, count, 0, total, a, b);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
    {
        size_t t = (size_t)omp_get_thread_num(), nth = (size_t)omp_get_num_threads();
        size_t lo = t == 0 ? 0 : bench_split_point(spans, count, total / nth * t);
        size_t hi = t + 1 == nth ? total : bench_split_point(spans, count, total / nth * (t + 1));
        bench_rmw_range(fn, k, spans, count, lo, hi, a, b);
    }
#endif
}

static void bench_trmw_range(bench_trmw_fn fn, int k32, int k16, int g16, const bench_span *spans, size_t count,
                             size_t lo, size_t hi, float a, float b)
{
    size_t i;
    if (lo >= hi) return;
    for (i = bench_find(spans, count, lo); i < count && spans[i].start < hi; i++) {
        const bench_span *sp = &spans[i];
        size_t from = lo > sp->start ? lo - sp->start : 0;
        size_t to = hi < sp->start + sp->n ? hi - sp->start : sp->n;
        float *x[BENCH_MAX_RMW] = {NULL, NULL, NULL, NULL, NULL};
        int j;
        if (from >= to) continue;
        for (j = 0; j < k32; j++) x[j] = sp->x[j] + from;
        for (j = k32; j < k32 + k16; j++) x[j] = (float *)(void *)((uint16_t *)(void *)sp->x[j] + from);
        fn(to - from, x, g16 ? (const void *)((const uint16_t *)(const void *)sp->g + from) : (const void *)(sp->g + from),
           sp->w16 ? sp->w16 + from : NULL, g16, a, b);
    }
}

void bench_rmw_typed(optim_isa isa, int k32, int k16, int g16, const bench_span *spans, size_t count, size_t total,
                     int threads, float a, float b)
{
    const bench_kset *ks = bench_kset_for(isa);
    bench_trmw_fn fn;
    int nt;
    if (!ks || k32 < 0 || k16 < 0 || k32 + k16 < 1 || k32 + k16 > BENCH_MAX_RMW) abort(); /* the caller checked */
    fn = ks->trmw[k32][k16];
    nt = bench_threads_for(total, threads);
    if (nt <= 1) {
        bench_trmw_range(fn, k32, k16, g16, spans, count, 0, total, a, b);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
    {
        size_t t = (size_t)omp_get_thread_num(), nth = (size_t)omp_get_num_threads();
        size_t lo = t == 0 ? 0 : bench_split_point(spans, count, total / nth * t);
        size_t hi = t + 1 == nth ? total : bench_split_point(spans, count, total / nth * (t + 1));
        bench_trmw_range(fn, k32, k16, g16, spans, count, lo, hi, a, b);
    }
#endif
}

static void bench_rmwq_range(bench_rmwq_fn fn, int k, const bench_span *spans, size_t count, size_t lo, size_t hi,
                             float a, float b, uint8_t m)
{
    size_t i;
    if (lo >= hi) return;
    for (i = bench_find(spans, count, lo); i < count && spans[i].start < hi; i++) {
        const bench_span *sp = &spans[i];
        size_t from = lo > sp->start ? lo - sp->start : 0;
        size_t to = hi < sp->start + sp->n ? hi - sp->start : sp->n;
        uint8_t *q[OPTIM_MAX_SLOTS] = {NULL, NULL, NULL, NULL};
        int j;
        if (from >= to) continue;
        for (j = 0; j + 1 < k; j++) q[j] = sp->q[j] ? sp->q[j] + from : NULL;
        fn(to - from, sp->x[0] ? sp->x[0] + from : NULL, sp->p16 ? sp->p16 + from : NULL, sp->g ? sp->g + from : NULL,
           sp->g16 ? sp->g16 + from : NULL, q,
           sp->w16 && sp->g16 ? sp->w16 + from : NULL, a, b, m);
    }
}

void bench_rmw_q8(optim_isa isa, int k, const bench_span *spans, size_t count, size_t total, int threads, float a,
                  float b, uint8_t m)
{
    const bench_kset *ks = bench_kset_for(isa);
    bench_rmwq_fn fn;
    int nt;
    if (!ks || k < 1 || k > BENCH_MAX_RMW) abort(); /* the caller checked both */
    fn = ks->rmwq[k - 1];
    nt = bench_threads_for(total, threads);
    if (nt <= 1) {
        bench_rmwq_range(fn, k, spans, count, 0, total, a, b, m);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
    {
        size_t t = (size_t)omp_get_thread_num(), nth = (size_t)omp_get_num_threads();
        size_t lo = t == 0 ? 0 : bench_split_point(spans, count, total / nth * t);
        size_t hi = t + 1 == nth ? total : bench_split_point(spans, count, total / nth * (t + 1));
        bench_rmwq_range(fn, k, spans, count, lo, hi, a, b, m);
    }
#endif
}

static float bench_rmwr_range(bench_rmwr_fn fn, int k, const bench_span *spans, size_t count, size_t lo, size_t hi,
                              float a, float b)
{
    float s = 0.0f;
    size_t i;
    if (lo >= hi) return s;
    for (i = bench_find(spans, count, lo); i < count && spans[i].start < hi; i++) {
        const bench_span *sp = &spans[i];
        size_t from = lo > sp->start ? lo - sp->start : 0;
        size_t to = hi < sp->start + sp->n ? hi - sp->start : sp->n;
        float *x[BENCH_MAX_RMW] = {NULL, NULL, NULL, NULL, NULL};
        int j;
        if (from >= to) continue;
        for (j = 0; j < k; j++) x[j] = sp->x[j] + from;
        s += fn(to - from, x, sp->g + from, sp->r + from, a, b);
    }
    return s;
}

float bench_rmw_read(optim_isa isa, int k, const bench_span *spans, size_t count, size_t total, int threads, float a,
                     float b)
{
    const bench_kset *ks = bench_kset_for(isa);
    bench_rmwr_fn fn;
    float s = 0.0f;
    int nt;
    if (!ks || k < 0 || k > 2) abort(); /* the caller checked both */
    fn = ks->rmwr[k];
    nt = bench_threads_for(total, threads);
    if (nt <= 1) return bench_rmwr_range(fn, k, spans, count, 0, total, a, b);
#ifdef _OPENMP
#pragma omp parallel num_threads(nt) reduction(+ : s)
    {
        size_t t = (size_t)omp_get_thread_num(), nth = (size_t)omp_get_num_threads();
        size_t lo = t == 0 ? 0 : bench_split_point(spans, count, total / nth * t);
        size_t hi = t + 1 == nth ? total : bench_split_point(spans, count, total / nth * (t + 1));
        s += bench_rmwr_range(fn, k, spans, count, lo, hi, a, b);
    }
#endif
    return s;
}

static float bench_read_range(bench_sum_fn fn, const bench_span *spans, size_t count, size_t lo, size_t hi)
{
    float s = 0.0f;
    size_t i;
    if (lo >= hi) return s;
    for (i = bench_find(spans, count, lo); i < count && spans[i].start < hi; i++) {
        const bench_span *sp = &spans[i];
        size_t from = lo > sp->start ? lo - sp->start : 0;
        size_t to = hi < sp->start + sp->n ? hi - sp->start : sp->n;
        if (from < to) s += fn(to - from, sp->g + from);
    }
    return s;
}

float bench_read(optim_isa isa, const bench_span *spans, size_t count, size_t total, int threads)
{
    const bench_kset *ks = bench_kset_for(isa);
    float s = 0.0f;
    int nt;
    if (!ks) abort();
    nt = bench_threads_for(total, threads);
    if (nt <= 1) return bench_read_range(ks->sum, spans, count, 0, total);
#ifdef _OPENMP
#pragma omp parallel num_threads(nt) reduction(+ : s)
    {
        size_t t = (size_t)omp_get_thread_num(), nth = (size_t)omp_get_num_threads();
        size_t lo = t == 0 ? 0 : bench_split_point(spans, count, total / nth * t);
        size_t hi = t + 1 == nth ? total : bench_split_point(spans, count, total / nth * (t + 1));
        s += bench_read_range(ks->sum, spans, count, lo, hi);
    }
#endif
    return s;
}

/* Share [lo, hi) of thread t of nt over n elements, on 16-float boundaries. */
static void bench_share(size_t n, size_t t, size_t nt, size_t *lo, size_t *hi)
{
    *lo = t == 0 ? 0 : n / nt * t / BENCH_SPLIT_ALIGN * BENCH_SPLIT_ALIGN;
    *hi = t + 1 == nt ? n : n / nt * (t + 1) / BENCH_SPLIT_ALIGN * BENCH_SPLIT_ALIGN;
}

void bench_copy(optim_isa isa, size_t n, float *dst, const float *src, int threads)
{
    const bench_kset *ks = bench_kset_for(isa);
    int nt;
    if (!ks) abort();
    nt = bench_threads_for(n, threads);
    if (nt <= 1) {
        ks->copy(n, dst, src);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
    {
        size_t lo, hi;
        bench_share(n, (size_t)omp_get_thread_num(), (size_t)omp_get_num_threads(), &lo, &hi);
        if (hi > lo) ks->copy(hi - lo, dst + lo, src + lo);
    }
#endif
}

void bench_triad(optim_isa isa, size_t n, float *a, const float *b, const float *c, float s, int threads)
{
    const bench_kset *ks = bench_kset_for(isa);
    int nt;
    if (!ks) abort();
    nt = bench_threads_for(n, threads);
    if (nt <= 1) {
        ks->triad(n, a, b, c, s);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
    {
        size_t lo, hi;
        bench_share(n, (size_t)omp_get_thread_num(), (size_t)omp_get_num_threads(), &lo, &hi);
        if (hi > lo) ks->triad(hi - lo, a + lo, b + lo, c + lo, s);
    }
#endif
}

/* ---- Data ------------------------------------------------------------------------- */

/* Elements per independently seeded chunk of bench_fill. */
#define BENCH_FILL_CHUNK ((size_t)1 << 16)

static uint64_t bench_splitmix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void bench_fill(float *x, size_t n, uint64_t seed, float lo, float hi)
{
    long c, nchunks = (long)((n + BENCH_FILL_CHUNK - 1) / BENCH_FILL_CHUNK);
    const float scale = (hi - lo) / 16777216.0f;
    /* Each chunk has its own stream, so the values do not depend on which
     * thread fills them; threads also spread the first touch of the pages. */
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
    for (c = 0; c < nchunks; c++) {
        uint64_t s = bench_splitmix(seed * 0x100000001b3ull + (uint64_t)c);
        size_t i = (size_t)c * BENCH_FILL_CHUNK, end = i + BENCH_FILL_CHUNK < n ? i + BENCH_FILL_CHUNK : n;
        for (; i < end; i++) {
            /* xorshift64*, top 24 bits: a float in [0, 2^24) exactly. */
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            x[i] = lo + (float)((s * 0x2545f4914f6cdd1dull) >> 40) * scale;
        }
    }
}
