/* kernels_impl.h: the body of every kernel, written once and compiled once
 * per CPU path by kernels_<isa>.c, which defines OPTIM__KERNELS_NAME (the
 * table's name) and OPTIM__KERNELS_ISA before including this file. The
 * compiler vectorises each loop for the flags of that file (-mavx2,
 * -mavx512f, ...; the scalar file forbids vectorisation). Because the math is
 * plain IEEE arithmetic without contraction (fused multiply-adds only where a
 * rule writes optim__fma, one rounding on every path), every path computes the
 * same bits as the scalar one.
 *
 * kernels_math.h holds the loops of one compute type; it is included here
 * once for float and once for double, and the path's table is assembled from
 * both: loop instances per rule, compute type and variant (rule_list.h
 * drives it), storage descriptors per element type, reductions per gradient
 * type, and SAM's and clipping's float32 utilities.
 */
#include "convert.h"
#include "quant8.h"
#include "kernels.h"

#include <string.h>
#if defined(__AVX2__) || defined(__AVX512F__)
#  include <immintrin.h>
#endif
/* The avx512 file also builds the avx512bf16 table: the same loops, with
 * bfloat16 stores through AVX-512 BF16 (functions of that target only). */
#if defined(OPTIM__KERNELS_NAME_BF16)
#  define OPTIM__HW_BF16_TARGET __attribute__((target("avx512f,avx512vl,avx512bw,avx512bf16")))
#endif

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

/* OPTIM__REP_<N>(M, x): M(x, 0) M(x, 1) ... M(x, N-1), for N a power of two
 * up to 64 (a rule's variant count). */
#define OPTIM__REP_1(M, x) M(x, 0)
#define OPTIM__REP_2(M, x) M(x, 0) M(x, 1)
#define OPTIM__REP_4(M, x) M(x, 0) M(x, 1) M(x, 2) M(x, 3)
#define OPTIM__REP_8(M, x) OPTIM__REP_4(M, x) M(x, 4) M(x, 5) M(x, 6) M(x, 7)
#define OPTIM__REP_16(M, x) \
    OPTIM__REP_8(M, x) M(x, 8) M(x, 9) M(x, 10) M(x, 11) M(x, 12) M(x, 13) M(x, 14) M(x, 15)
#define OPTIM__REP_32(M, x)                                                                                   \
    OPTIM__REP_16(M, x) M(x, 16) M(x, 17) M(x, 18) M(x, 19) M(x, 20) M(x, 21) M(x, 22) M(x, 23) M(x, 24)      \
    M(x, 25) M(x, 26) M(x, 27) M(x, 28) M(x, 29) M(x, 30) M(x, 31)
#define OPTIM__REP_64(M, x)                                                                                   \
    OPTIM__REP_32(M, x) M(x, 32) M(x, 33) M(x, 34) M(x, 35) M(x, 36) M(x, 37) M(x, 38) M(x, 39) M(x, 40)      \
    M(x, 41) M(x, 42) M(x, 43) M(x, 44) M(x, 45) M(x, 46) M(x, 47) M(x, 48) M(x, 49) M(x, 50) M(x, 51)        \
    M(x, 52) M(x, 53) M(x, 54) M(x, 55) M(x, 56) M(x, 57) M(x, 58) M(x, 59) M(x, 60) M(x, 61) M(x, 62) M(x, 63)

/* Whether this path has fused step-statistics loops for float32
 * (kernels_math.h's OPTIM__SLOOP_DEF; kernels_avx2.c and kernels_avx512.c set
 * it): elsewhere the statistics are measured through copies, same bits. */
#if !defined(OPTIM__STATS_FUSED)
#  define OPTIM__STATS_FUSED 0
#endif

/* The lanes of the reductions (kernels_math.h). */
#define OPTIM__LANES 16

/* Software prefetch in the update loops (kernels_math.h): the loops run in
 * blocks of OPTIM__PF_BLOCK bytes (the fused statistics loops: four groups of
 * 16 elements, and single groups at a range's end), and before each block, the
 * cache lines of each stream the variant touches are prefetched,
 * OPTIM__PF_BYTES ahead in the plain loops and OPTIM__SPF_BYTES ahead in the
 * fused ones. One core's out-of-order window reaches fewer lines ahead the
 * more arithmetic a line carries: without it, on a Xeon (Sapphire Rapids,
 * one core at about 27 GB/s) Adam ran at 0.85 of its same-traffic ceiling at
 * 64M and most rules below 0.9; with it, 0.93-1.08 (docs/PERFORMANCE.md,
 * "Software prefetch"). 2 KiB ran the plain loops as 1 KiB did (4 KiB
 * slowed Adam's); the fused loops, with more instructions per line, gain
 * from 3 KiB: plain SGD with step statistics took 7-10 % longer than without
 * at 64M with 2 KiB and one group a prefetch, -0 to +2 % with 3 KiB and
 * blocks (docs/STATS.md, "Cost").
 * A range of at most OPTIM__PF_MIN bytes per stream (likely in cache) is one
 * block, with only the one prefetch before it: blocks cost a few percent
 * there. So calls on short ranges barely prefetch: the chunked path's (a
 * chunk of OPTIM__CHUNK elements a call: bfloat16/float16 gradients, masters,
 * 16-bit or int8 state). 16 KiB: the update under an EMA of the weights runs
 * in spans of OPTIM__RBLOCK elements (32 KiB of float32, ema_run.c), which
 * are blocked. Nothing past a range's end is prefetched (the fused
 * loops are told how far the range goes past their block: optim__sloop_fn's
 * npf; tests/test_prefetch.c checks every prefetched line). A hint only: no
 * value depends on it. The write hint (rw = 1) is a prefetchw only where the
 * compiler targets PRFCHW; these builds emit prefetcht0 for both. */
#define OPTIM__PF_BYTES 2048
#define OPTIM__SPF_BYTES 3072
#define OPTIM__PF_BLOCK 256
#define OPTIM__PF_MIN (16 * 1024)
/* The prefetch of the nb bytes at x (rw: 1 for a write); a file that
 * includes this one may define its own first (tests/test_prefetch.c checks
 * every prefetched range against the range of its call). */
#if defined(OPTIM__PF_LINES)
#elif defined(__GNUC__)
#  define OPTIM__PF_LINES(x, nb, rw)                                                                  \
      do {                                                                                            \
          size_t q_;                                                                                  \
          for (q_ = 0; q_ < (nb); q_ += 64)                                                           \
              __builtin_prefetch((const char *)(x) + q_, rw, 3);                                      \
      } while (0)
#else
#  define OPTIM__PF_LINES(x, nb, rw) ((void)(x))
#endif
/* The lines of the nb bytes from element i + d of the streams in mask rw:
 * the slots in bits 0-3 (the variant's reads | writes), p in OPTIM__PF_P, g
 * in OPTIM__PF_G; d = dist bytes of an element; none past element n. */
#define OPTIM__PF_P 16u
#define OPTIM__PF_G 32u
#define OPTIM__PREFETCH_N(i, n, nb, dist, p, g, s0, s1, s2, s3, rw)                                    \
    do {                                                                                              \
        const size_t d_ = (dist) / sizeof *(p);                                                       \
        if ((i) + d_ + (nb) / sizeof *(p) <= (n)) {                                                   \
            if ((rw) & OPTIM__PF_P) OPTIM__PF_LINES((p) + (i) + d_, nb, 1);                           \
            if ((rw) & OPTIM__PF_G) OPTIM__PF_LINES((g) + (i) + d_, nb, 0);                           \
            if ((rw) & 1u) OPTIM__PF_LINES((s0) + (i) + d_, nb, 1);                                   \
            if ((rw) & 2u) OPTIM__PF_LINES((s1) + (i) + d_, nb, 1);                                   \
            if ((rw) & 4u) OPTIM__PF_LINES((s2) + (i) + d_, nb, 1);                                   \
            if ((rw) & 8u) OPTIM__PF_LINES((s3) + (i) + d_, nb, 1);                                   \
        }                                                                                             \
    } while (0)
/* The lines of the nb bytes from element i + d of the one stream x (the
 * average of the EMA of the weights), d = dist bytes of an element; none
 * past element n. */
#define OPTIM__PREFETCH_1(i, n, nb, dist, x, rw)                                                        \
    do {                                                                                              \
        const size_t d_ = (dist) / sizeof *(x);                                                       \
        if ((i) + d_ + (nb) / sizeof *(x) <= (n)) OPTIM__PF_LINES((x) + (i) + d_, nb, rw);            \
    } while (0)
/* A block of the plain loops and of the fused loops (OPTIM__PF_BLOCK bytes):
 * p, g and the slots in rw. */
#define OPTIM__PREFETCH(i, n, p, g, s0, s1, s2, s3, rw)                                                \
    OPTIM__PREFETCH_N(i, n, OPTIM__PF_BLOCK, OPTIM__PF_BYTES, p, g, s0, s1, s2, s3,                    \
                      (rw) | OPTIM__PF_P | OPTIM__PF_G)
#define OPTIM__PREFETCH_SBLOCK(i, n, p, g, s0, s1, s2, s3, rw)                                         \
    OPTIM__PREFETCH_N(i, n, OPTIM__PF_BLOCK, OPTIM__SPF_BYTES, p, g, s0, s1, s2, s3,                   \
                      (rw) | OPTIM__PF_P | OPTIM__PF_G)

OPTIM_INLINE double optim__lane(double acc, double d, const optim__norm kind, double p)
{
    switch (kind) {
    case OPTIM__NORM_L1: return acc + d;
    case OPTIM__NORM_L2: return acc + d * d;
    case OPTIM__NORM_INF: return (d != d || d > acc) ? d : acc;
    default: return acc + pow(d, p);
    }
}

/* ---- The two compute types ---------------------------------------------------------- */

#define R float
#define OPTIM__RS f32
#define OPTIM__R_F64 0
#include "kernels_math.h"
#include "kernels_vec.h"
#include "kernels_ema.h"
#include "kernels_factored.h"
#undef R
#undef OPTIM__RS
#undef OPTIM__R_F64

#define R double
#define OPTIM__RS f64
#define OPTIM__R_F64 1
#include "kernels_math.h"
#include "kernels_vec.h"
#include "kernels_ema.h"
#include "kernels_factored.h"
#undef R
#undef OPTIM__RS
#undef OPTIM__R_F64

/* ---- The path's table ------------------------------------------------------------------ */

#define OPTIM__NV(math) ((unsigned)(sizeof optim__##math##_fns_f32 / sizeof optim__##math##_fns_f32[0] / 2))
#if OPTIM__STATS_FUSED
#  define OPTIM__SFNS_F32(math) optim__##math##_sfns_f32
#else
#  define OPTIM__SFNS_F32(math) NULL
#endif
/* float64 has no fused statistics instances (kernels_math.h): sfns NULL. */
#define OPTIM__LOOPS(value, math)                                                                            \
    [value] = {                                                                                              \
        [OPTIM__CT_F32] = {OPTIM__NV(math), optim__##math##_fns_f32, optim__##math##_reads, optim__##math##_writes, \
                           OPTIM__SFNS_F32(math)},                                                           \
        [OPTIM__CT_F64] = {OPTIM__NV(math), optim__##math##_fns_f64, optim__##math##_reads, optim__##math##_writes, \
                           NULL},                                                                            \
    },
#define OPTIM__CNV(math) ((unsigned)(sizeof optim__##math##_cfns_f32 / sizeof optim__##math##_cfns_f32[0] / 2))
#define OPTIM__CLOOPS(ID, name)                                                                              \
    [OPTIM_##ID] = {                                                                                         \
        [OPTIM__CT_F32] = {OPTIM__CNV(name), optim__##name##_cfns_f32, optim__##name##_reads, optim__##name##_writes}, \
        [OPTIM__CT_F64] = {OPTIM__CNV(name), optim__##name##_cfns_f64, optim__##name##_reads, optim__##name##_writes}, \
    },
#define OPTIM__LOOPS_RULE(ID, value, name) OPTIM__LOOPS(value, name)
#define OPTIM__LOOPS_ALIAS(ID, value, name, math) OPTIM__LOOPS(value, math)

#define OPTIM__RLOOPS(ID, name)                                                                              \
    [OPTIM_##ID] = {                                                                                         \
        [OPTIM__CT_F32] = {OPTIM__NV(name), optim__##name##_pre_fns_f32, optim__##name##_red_fns_f32,          \
                           optim__##name##_both_fns_f32, optim__##name##_pre_reads,                            \
                           optim__##name##_pre_writes, optim__##name##_red_reads},                             \
        [OPTIM__CT_F64] = {OPTIM__NV(name), optim__##name##_pre_fns_f64, optim__##name##_red_fns_f64,          \
                           optim__##name##_both_fns_f64, optim__##name##_pre_reads,                            \
                           optim__##name##_pre_writes, optim__##name##_red_reads},                             \
    },

#define OPTIM__CLAMPFLAGS(ID, name)                                                                          \
    [OPTIM_##ID] = {[OPTIM__CT_F32] = optim__##name##_clampflag_f32, [OPTIM__CT_F64] = optim__##name##_clampflag_f64},

#if defined(OPTIM__HW_F16)
#  define OPTIM__STORAGE_F16 optim__storage_f16_hw
#else
#  define OPTIM__STORAGE_F16 optim__storage_f16
#endif

#define OPTIM__TABLE(table_isa, bf16_storage)                                                               \
    {                                                                                                       \
        .isa = table_isa,                                                                                   \
        .loops = {OPTIM__RULE_LIST(OPTIM__LOOPS_RULE, OPTIM__LOOPS_ALIAS)},                                 \
        .cloops = {OPTIM__COMPLEX_RULE_LIST(OPTIM__CLOOPS)},                                                \
        .rloops = {OPTIM__REDUCE_LIST(OPTIM__RLOOPS)},                                                      \
        .storage =                                                                                          \
            {                                                                                               \
                [OPTIM_FLOAT32] = {[OPTIM__CT_F32] = &optim__storage_same_f32},                             \
                [OPTIM_FLOAT64] = {[OPTIM__CT_F64] = &optim__storage_same_f64},                             \
                [OPTIM_BFLOAT16] = {[OPTIM__CT_F32] = &bf16_storage},                                       \
                [OPTIM_FLOAT16] = {[OPTIM__CT_F32] = &OPTIM__STORAGE_F16},                                  \
                [OPTIM_INT8_BLOCK] = {[OPTIM__CT_F32] = &optim__storage_q8s},                               \
            },                                                                                              \
        .bf16_sr = &optim__storage_bf16_sr,                                                                 \
        .q8 = {[OPTIM__SLOT_SIGNED] = &optim__storage_q8s, [OPTIM__SLOT_NONNEG] = &optim__storage_q8n,      \
               [OPTIM__SLOT_POSITIVE] = &optim__storage_q8p},                                               \
        .q8sr = {[OPTIM__SLOT_SIGNED] = &optim__storage_q8srs, [OPTIM__SLOT_NONNEG] = &optim__storage_q8srn,  \
                 [OPTIM__SLOT_POSITIVE] = &optim__storage_q8srp},                                           \
        .reduce =                                                                                           \
            {                                                                                               \
                [OPTIM_FLOAT32] = optim__reduce_same_f32,                                                   \
                [OPTIM_FLOAT64] = optim__reduce_same_f64,                                                   \
                [OPTIM_BFLOAT16] = optim__reduce_bf16,                                                      \
                [OPTIM_FLOAT16] = optim__reduce_f16,                                                        \
            },                                                                                              \
        .sam_perturb = {OPTIM__CAT(OPTIM__REP, OPTIM__SAM_NVARIANTS)(OPTIM__SAM_FN, x)},                    \
        .copy = optim__copy,                                                                                \
        .scale = optim__scale,                                                                              \
        .clamp = optim__clamp_fn,                                                                           \
        .vec = {[OPTIM__CT_F32] = {optim__vdot_f32, optim__vaxpy_f32, optim__vscale_f32},                   \
                [OPTIM__CT_F64] = {optim__vdot_f64, optim__vaxpy_f64, optim__vscale_f64}},                  \
        .factored = {[OPTIM__CT_F32] = {optim__af_var_f32, optim__af_rows_f32, optim__af_cols_f32,         \
                                        optim__af_rmean_f32, optim__af_usq_f32, optim__af_upd_f32},        \
                     [OPTIM__CT_F64] = {optim__af_var_f64, optim__af_rows_f64, optim__af_cols_f64,         \
                                        optim__af_rmean_f64, optim__af_usq_f64, optim__af_upd_f64}},       \
        .stats = {[OPTIM__CT_F32] = optim__stats_f32, [OPTIM__CT_F64] = optim__stats_f64},                  \
        .sflush = {[OPTIM__CT_F32] = optim__sflush_f32, [OPTIM__CT_F64] = optim__sflush_f64},               \
        .clampflag = {OPTIM__CLAMP_LIST(OPTIM__CLAMPFLAGS)},                                                \
        .ema = {[OPTIM__CT_F32] = optim__ema_f32, [OPTIM__CT_F64] = optim__ema_f64},                        \
        .ema_swap = {[OPTIM__CT_F32] = optim__ema_swap_f32, [OPTIM__CT_F64] = optim__ema_swap_f64},         \
    }

const optim__kernels OPTIM__KERNELS_NAME = OPTIM__TABLE(OPTIM__KERNELS_ISA, optim__storage_bf16);
#if defined(OPTIM__KERNELS_NAME_BF16)
const optim__kernels OPTIM__KERNELS_NAME_BF16 = OPTIM__TABLE(OPTIM_ISA_AVX512BF16, optim__storage_bf16_hw);
#endif
