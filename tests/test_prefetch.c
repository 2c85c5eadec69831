/* test_prefetch.c: white-box, the software prefetch of the update loops
 * (kernels_impl.h, OPTIM__PREFETCH) never reaches outside the range a call
 * runs on. A prefetch never faults and changes no value, so no test of
 * results (nor ASan, which does not look at prefetches) can see one that
 * runs past a range's end, into another thread's range or past an array:
 * this file compiles its own copy of the kernels (kernels_impl.h, with the
 * fused statistics loops) whose OPTIM__PF_LINES reports each prefetched
 * range instead, and runs it through the library's update pass
 * (streams.c's optim__range_update: direct, chunked, with statistics in
 * place and chunked; ema_run.c's optim__range_update_ema: the update and
 * the EMA of the weights span by span) on guarded arrays. */
#include "test.h"
#include "typed.h" /* T_SAMPLE */

#include <stddef.h>

static void test_pf_lines(const void *x, size_t nb);
#define OPTIM__PF_LINES(x, nb, rw) test_pf_lines((const void *)(x), (size_t)(nb))
#define OPTIM__KERNELS_NAME test_pf_kernels
#define OPTIM__KERNELS_ISA OPTIM_ISA_SCALAR
#define OPTIM__STATS_FUSED 1
#if defined(__GNUC__) && !defined(__clang__)
#  pragma GCC optimize("O1") /* addresses only: a quicker build of this copy */
#endif
#include "kernels/kernels_impl.h"

#include "rules/rules.h"

#define PF_GUARD 4096 /* bytes before and after each array */

/* Each stream's array (with its guards) and the part of it the call in
 * progress may touch; the last, the EMA of the weights'. */
#define PF_EMA OPTIM__NSTREAMS
_Static_assert(33 * OPTIM__RBLOCK * sizeof(float) > OPTIM__EMA_PF_MIN && 282628 - 10007 > OPTIM__EMA_PF_MIN / sizeof(float),
               "the EMA cases' ranges are long enough for the average to prefetch");
static struct {
    uintptr_t alo, ahi, lo, hi;
} pf_arr[OPTIM__NSTREAMS + 1];
static long pf_in, pf_out, pf_elsewhere;
static uintptr_t pf_bad_at;
/* With an EMA: when pf_seed is not 0, the parameter, the gradient and the average start from seeded values, the
 * same element for element whatever the call's range, and the call's range of the average is copied to pf_ema_out
 * (the averages of split ranges put together, bit for bit the whole range's). */
static uint64_t pf_seed;
static void *pf_ema_out;
static long pf_ema_stray; /* elements of the average outside the call's range (or guard bytes) it changed */
/* When not 0, pf_case runs pass 1 of a rule with a per-tensor reduction (these OPTIM__RED_* bits) block by block
 * over its range instead of the update, each block's call held to its block. */
static unsigned pf_reduce;

/* The seeded starting value of element i of stream j. */
static double pf_value(int j, size_t i)
{
    test_rng rng = {pf_seed ^ ((uint64_t)j << 56) ^ ((uint64_t)i * 0x100000001b3ull)};
    return 4.0 * test_rng_uniform(&rng) - 2.0;
}

static void test_pf_lines(const void *x, size_t nb)
{
    const uintptr_t a = (uintptr_t)x, b = a + nb;
    int j;
    for (j = 0; j <= PF_EMA; j++) {
        if (!pf_arr[j].alo || a >= pf_arr[j].ahi || b <= pf_arr[j].alo) continue;
        if (a < pf_arr[j].lo || b > pf_arr[j].hi) {
            if (!pf_out) pf_bad_at = a;
            pf_out++;
        } else {
            pf_in++;
        }
        return;
    }
    pf_elsewhere++; /* a scratch array of the chunked path */
}

/* One update pass of rule r (variant v) over [from, to) of n elements in the given types, every stream
 * guarded; with statistics (the fused loops) when stats; with the EMA of the weights (averaged in the compute
 * type, guarded too) when ema. 0, or 1 with a message. */
static int pf_case(int r, unsigned v, optim_dtype pdt, optim_dtype gdt, optim_dtype sdt, size_t n, size_t from,
                   size_t to, int stats, int ema, long *calls)
{
    const optim__kernels *kt = &test_pf_kernels;
    const optim__ctype ct = pdt == OPTIM_FLOAT64 ? OPTIM__CT_F64 : OPTIM__CT_F32;
    optim__task t;
    optim__k k;
    char *mem[OPTIM__NSTREAMS + 1] = {NULL};
    const optim__ema_k ek = {0.9, 0.1, 0};
    double *spart = NULL;
    const optim_dtype types[OPTIM__NSTREAMS] = {pdt, gdt, sdt, sdt, sdt, sdt};
    int j, rc = 0;
    memset(&t, 0, sizeof t);
    memset(&k, 0, sizeof k);
    memset(pf_arr, 0, sizeof pf_arr);
    for (j = 0; j < 2 + OPTIM_MAX_SLOTS; j++) {
        const size_t bytes = n * optim_dtype_size(types[j]);
        const size_t es = optim_dtype_size(types[j]);
        mem[j] = calloc(bytes + 2 * PF_GUARD, 1);
        if (!mem[j]) {
            rc = 1;
            goto out;
        }
        pf_arr[j].alo = (uintptr_t)mem[j];
        pf_arr[j].ahi = (uintptr_t)mem[j] + bytes + 2 * PF_GUARD;
        pf_arr[j].lo = (uintptr_t)mem[j] + PF_GUARD + from * es;
        pf_arr[j].hi = (uintptr_t)mem[j] + PF_GUARD + to * es;
    }
    if (ema) {
        const size_t es = ct == OPTIM__CT_F64 ? sizeof(double) : sizeof(float);
        mem[PF_EMA] = calloc(n * es + 2 * PF_GUARD, 1);
        if (!mem[PF_EMA]) {
            rc = 1;
            goto out;
        }
        pf_arr[PF_EMA].alo = (uintptr_t)mem[PF_EMA];
        pf_arr[PF_EMA].ahi = (uintptr_t)mem[PF_EMA] + n * es + 2 * PF_GUARD;
        pf_arr[PF_EMA].lo = (uintptr_t)mem[PF_EMA] + PF_GUARD + from * es;
        pf_arr[PF_EMA].hi = (uintptr_t)mem[PF_EMA] + PF_GUARD + to * es;
        t.ema = mem[PF_EMA] + PF_GUARD;
        t.ek = &ek;
        if (pf_seed) {
            const optim_dtype edt = ct == OPTIM__CT_F64 ? OPTIM_FLOAT64 : OPTIM_FLOAT32;
            size_t i;
            for (i = 0; i < n; i++) {
                t_set(pdt, mem[0] + PF_GUARD, i, pf_value(0, i));
                t_set(gdt, mem[1] + PF_GUARD, i, pf_value(1, i));
                t_set(edt, mem[PF_EMA] + PF_GUARD, i, pf_value(PF_EMA, i));
            }
        }
    }
    t.p = mem[0] + PF_GUARD;
    t.g = mem[1] + PF_GUARD;
    for (j = 0; j < OPTIM_MAX_SLOTS; j++) t.s[j] = mem[2 + j] + PF_GUARD;
    t.n = n;
    k.c.variant = v;
    t.k = &k;
    t.loop = optim__loop_get(kt, (optim_rule)r, ct, v, &t.reads, &t.writes);
    if (!t.loop || optim__task_storage(kt, &t, pdt, gdt, sdt, NULL) != 0) {
        fprintf(stderr, "%s variant 0x%x: no loop or storage\n", optim_rule_name((optim_rule)r), v);
        rc = 1;
        goto out;
    }
    if (stats) {
        spart = calloc(OPTIM__NSTAT * OPTIM__NBLOCKS(n), sizeof(double));
        if (!spart) {
            rc = 1;
            goto out;
        }
        t.spart = spart;
        t.stats = kt->stats[ct];
        t.sflush = kt->sflush[ct];
        t.clampflag = kt->clampflag[r][ct];
        t.sloop = optim__sloop_get(kt, (optim_rule)r, ct, v);
    }
    if (pf_reduce) {
        size_t off;
        if (optim__rloops_get(kt, (optim_rule)r, ct, v, pf_reduce, &t) != 0) {
            fprintf(stderr, "%s variant 0x%x: no pass-1 loops\n", optim_rule_name((optim_rule)r), v);
            rc = 1;
            goto out;
        }
        for (off = from; off < to; off += OPTIM__RBLOCK) {
            const size_t len = to - off < OPTIM__RBLOCK ? to - off : OPTIM__RBLOCK;
            double sums[2];
            for (j = 0; j < 2 + OPTIM_MAX_SLOTS; j++) {
                const size_t es = optim_dtype_size(types[j]);
                pf_arr[j].lo = (uintptr_t)mem[j] + PF_GUARD + off * es;
                pf_arr[j].hi = (uintptr_t)mem[j] + PF_GUARD + (off + len) * es;
            }
            optim__reduce_rule_block(&t, off, len, sums);
        }
    } else if (ema) {
        optim__range_update_ema(kt, &t, from, to);
    } else {
        optim__range_update(kt, &t, from, to);
    }
    if (ema && pf_seed) {
        const optim_dtype edt = ct == OPTIM__CT_F64 ? OPTIM_FLOAT64 : OPTIM_FLOAT32;
        const size_t es = optim_dtype_size(edt);
        size_t i;
        if (pf_ema_out) memcpy((char *)pf_ema_out + from * es, mem[PF_EMA] + PF_GUARD + from * es, (to - from) * es);
        for (i = 0; i < n; i++)
            if ((i < from || i >= to) &&
                t_get(edt, mem[PF_EMA] + PF_GUARD, i) !=
                    (edt == OPTIM_FLOAT64 ? pf_value(PF_EMA, i) : (double)(float)pf_value(PF_EMA, i)))
                pf_ema_stray++;
        for (i = 0; i < PF_GUARD; i++)
            if (mem[PF_EMA][i] || mem[PF_EMA][PF_GUARD + n * es + i]) pf_ema_stray++;
    }
    (*calls)++;
out:
    for (j = 0; j <= PF_EMA; j++) free(mem[j]);
    free(spart);
    memset(pf_arr, 0, sizeof pf_arr);
    return rc;
}

/* Every rule and variant (with and without value clipping's bit), float32 and float64 in memory, float32
 * parameters with bfloat16 gradients and with bfloat16 state (the chunked path), statistics off and on
 * (the fused loops, in place and chunked), whole tensors and a split in two at a block (a thread's range,
 * past which nothing may be prefetched either), lengths past 16 KiB per stream (OPTIM__PF_MIN) that end anywhere in a
 * prefetch block: every prefetched line lies in the range the call runs on. */
TEST_IMPL(prefetch_stays_in_range)
{
    static const size_t sizes[] = {40013, 40060, 3 * 8192 + 17};
    static const size_t ema_sizes[] = {280013, 280060}; /* past OPTIM__EMA_PF_MIN of float32 */
    static const optim_dtype tys[][3] = {{OPTIM_FLOAT32, OPTIM_FLOAT32, OPTIM_FLOAT32},
                                         {OPTIM_FLOAT64, OPTIM_FLOAT64, OPTIM_FLOAT64},
                                         {OPTIM_FLOAT32, OPTIM_BFLOAT16, OPTIM_FLOAT32},
                                         {OPTIM_FLOAT32, OPTIM_FLOAT32, OPTIM_BFLOAT16}};
    long calls = 0;
    size_t si, ty;
    int r, stats, split;
    pf_in = pf_out = pf_elsewhere = 0;
    for (r = 1; r <= OPTIM_RULE_COUNT; r++) {
        const optim__loops *l;
        unsigned v, clamp;
        if (!optim_rule_name((optim_rule)r)) continue;
        l = &test_pf_kernels.loops[r][OPTIM__CT_F32];
        if (!l->fns) continue;
        for (v = 0; v < l->nvariants; v++)
            for (clamp = 0; clamp < 2; clamp++)
                for (ty = 0; ty < sizeof tys / sizeof tys[0]; ty++)
                    for (si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
                        for (stats = 0; stats < 2; stats++)
                            for (split = 0; split < 2; split++) {
                                const size_t n = sizes[si], mid = 2 * OPTIM__RBLOCK;
                                const unsigned var = v | (clamp ? OPTIM__V_CLAMP : 0u);
                                long before = pf_out;
                                int rc;
                                /* Variants by turns of size, type and split: every combination over the rules. */
                                if ((v + si + ty + (size_t)split) % 2 && v > 1) continue;
                                /* Under a sanitizer: variant 0 and every T_SAMPLE-th, two sizes. */
                                if (T_SAMPLE > 1 && (v % T_SAMPLE != 0 || si == 1)) continue;
                                if (r == OPTIM_ADAFACTOR && ty >= 2) continue; /* float32/float64 memory only */
                                if (split) {
                                    rc = pf_case(r, var, tys[ty][0], tys[ty][1], tys[ty][2], n, 0, mid, stats, 0, &calls);
                                    if (!rc)
                                        rc = pf_case(r, var, tys[ty][0], tys[ty][1], tys[ty][2], n, mid, n, stats,
                                                     0, &calls);
                                } else {
                                    rc = pf_case(r, var, tys[ty][0], tys[ty][1], tys[ty][2], n, 0, n, stats, 0, &calls);
                                }
                                if (rc) FAIL("%s: the case could not run", optim_rule_name((optim_rule)r));
                                if (pf_out != before) {
                                    fprintf(stderr,
                                            "%s variant 0x%x, %s/%s/%s, %zu elements%s, statistics %s: %ld "
                                            "prefetches outside the range\n",
                                            optim_rule_name((optim_rule)r), var, optim_dtype_name(tys[ty][0]),
                                            optim_dtype_name(tys[ty][1]), optim_dtype_name(tys[ty][2]), n,
                                            split ? " split at 16384" : "", stats ? "on" : "off", pf_out - before);
                                }
                            }
    }
    /* The update with the EMA of the weights (SGD and Adam, variant 0): float32, float64, a bfloat16 gradient,
     * bfloat16 parameters (averaged chunk by chunk); statistics off and on; whole, split at a block and (without
     * statistics) inside one, each a range long enough for the average to prefetch (kernels.h's
     * OPTIM__EMA_PF_MIN: 1 MiB) before a range's end that is not the tensor's and from a range's start that is
     * not a span's: the average's prefetch crosses its spans' ends, never its range's. */
    for (r = 0; r < 2; r++)
        for (ty = 0; ty < 4; ty++)
            for (si = 0; si < sizeof ema_sizes / sizeof ema_sizes[0]; si++)
                for (stats = 0; stats < 2; stats++)
                    for (split = 0; split < 3; split++) {
                        static const optim_dtype ety[][3] = {{OPTIM_FLOAT32, OPTIM_FLOAT32, OPTIM_FLOAT32},
                                                             {OPTIM_FLOAT64, OPTIM_FLOAT64, OPTIM_FLOAT64},
                                                             {OPTIM_FLOAT32, OPTIM_BFLOAT16, OPTIM_FLOAT32},
                                                             {OPTIM_BFLOAT16, OPTIM_BFLOAT16, OPTIM_FLOAT32}};
                        const int rule = r ? OPTIM_ADAM : OPTIM_SGD;
                        const size_t n = ema_sizes[si], mid = split == 1 ? 33 * OPTIM__RBLOCK : 270007;
                        long before = pf_out;
                        int rc;
                        if (split == 2 && stats) continue; /* with statistics a range starts at a block */
                        if (split) {
                            rc = pf_case(rule, 0, ety[ty][0], ety[ty][1], ety[ty][2], n, 0, mid, stats, 1, &calls);
                            if (!rc)
                                rc = pf_case(rule, 0, ety[ty][0], ety[ty][1], ety[ty][2], n, mid, n, stats, 1, &calls);
                        } else {
                            rc = pf_case(rule, 0, ety[ty][0], ety[ty][1], ety[ty][2], n, 0, n, stats, 1, &calls);
                        }
                        if (rc) FAIL("%s with an EMA: the case could not run", optim_rule_name((optim_rule)rule));
                        if (pf_out != before)
                            fprintf(stderr,
                                    "%s with an EMA, %s/%s/%s, %zu elements, split at %zu, statistics %s: %ld "
                                    "prefetches outside the range\n",
                                    optim_rule_name((optim_rule)rule), optim_dtype_name(ety[ty][0]),
                                    optim_dtype_name(ety[ty][1]), optim_dtype_name(ety[ty][2]), n, split ? mid : 0,
                                    stats ? "on" : "off", pf_out - before);
                    }
    /* Pass 1 of LAMB and LARS (pre, red, and both in one loop), every variant with and without value clipping, the
     * four kinds of memory, block by block (a call a block: one thread's, however the blocks are shared). */
    for (r = 0; r < 2; r++)
        for (ty = 0; ty < sizeof tys / sizeof tys[0]; ty++)
            for (si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
                const int rule = r ? OPTIM_LARS : OPTIM_LAMB;
                const unsigned nv = test_pf_kernels.rloops[rule][OPTIM__CT_F32].nvariants;
                unsigned v, red;
                for (v = 0; v < 2 * nv; v++)
                    for (red = 1; red <= (OPTIM__RED_PRE | OPTIM__RED_NORMS); red++) {
                        const unsigned var = v % nv | (v >= nv ? OPTIM__V_CLAMP : 0u);
                        long before = pf_out;
                        if (T_SAMPLE > 1 && si == 1) continue;
                        pf_reduce = red;
                        if (pf_case(rule, var, tys[ty][0], tys[ty][1], tys[ty][2], sizes[si], 0, sizes[si], 0, 0,
                                    &calls))
                            FAIL("%s's pass 1: the case could not run", optim_rule_name((optim_rule)rule));
                        pf_reduce = 0;
                        if (pf_out != before)
                            fprintf(stderr,
                                    "%s's pass 1 (reduce 0x%x) variant 0x%x, %s/%s/%s, %zu elements: %ld prefetches "
                                    "outside the block\n",
                                    optim_rule_name((optim_rule)rule), red, var, optim_dtype_name(tys[ty][0]),
                                    optim_dtype_name(tys[ty][1]), optim_dtype_name(tys[ty][2]), sizes[si],
                                    pf_out - before);
                    }
            }
    /* The gradient norm's blocks (fused norm clipping, SAM's and ASAM's norms): float32 with and without ASAM's
     * weights, float64, every kind of norm, a call a block as optim__reduce_run makes them. */
    for (ty = 0; ty < 3; ty++)
        for (si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            static const optim__norm kinds[] = {OPTIM__NORM_L1, OPTIM__NORM_L2, OPTIM__NORM_INF, OPTIM__NORM_LP};
            const optim_dtype gdt = ty == 2 ? OPTIM_FLOAT64 : OPTIM_FLOAT32;
            const size_t n = sizes[si], es = optim_dtype_size(gdt);
            char *gm = calloc(n * es + 2 * PF_GUARD, 1), *wm = calloc(n * sizeof(float) + 2 * PF_GUARD, 1);
            size_t ki, off;
            long before = pf_out;
            if (!gm || !wm) {
                free(gm);
                free(wm);
                FAIL("out of memory");
            }
            memset(pf_arr, 0, sizeof pf_arr);
            pf_arr[0].alo = (uintptr_t)gm;
            pf_arr[0].ahi = (uintptr_t)gm + n * es + 2 * PF_GUARD;
            pf_arr[1].alo = (uintptr_t)wm;
            pf_arr[1].ahi = (uintptr_t)wm + n * sizeof(float) + 2 * PF_GUARD;
            for (ki = 0; ki < sizeof kinds / sizeof kinds[0]; ki++)
                for (off = 0; off < n; off += OPTIM__RBLOCK) {
                    const size_t len = n - off < OPTIM__RBLOCK ? n - off : OPTIM__RBLOCK;
                    int bad = 0;
                    pf_arr[0].lo = (uintptr_t)gm + PF_GUARD + off * es;
                    pf_arr[0].hi = (uintptr_t)gm + PF_GUARD + (off + len) * es;
                    pf_arr[1].lo = (uintptr_t)wm + PF_GUARD + off * sizeof(float);
                    pf_arr[1].hi = (uintptr_t)wm + PF_GUARD + (off + len) * sizeof(float);
                    (void)test_pf_kernels.reduce[gdt](len, gm + PF_GUARD, off,
                                                      ty == 1 ? (const float *)(wm + PF_GUARD) + off : NULL, 0.01f,
                                                      kinds[ki], 3.0, &bad);
                    calls++;
                }
            memset(pf_arr, 0, sizeof pf_arr);
            free(gm);
            free(wm);
            if (pf_out != before)
                fprintf(stderr, "the norm of %s%s gradients, %zu elements: %ld prefetches outside the block\n",
                        optim_dtype_name(gdt), ty == 1 ? " (ASAM's weights)" : "", n, pf_out - before);
        }
    printf("  %ld passes: %ld prefetched ranges inside the range of their call, %ld outside, %ld in scratch "
           "arrays\n",
           calls, pf_in, pf_out, pf_elsewhere);
    ASSERT(calls > 0);
    ASSERT(pf_in > 0); /* the prefetch ran */
    ASSERT_INT(pf_out, ==, 0);
    return 0;
}

/* The update with the EMA of the weights over ranges cut anywhere (as 2 threads cut a tensor without step
 * statistics: at any multiple of 16 elements, or none, here): from seeded values, the average of the ranges put
 * together is bit for bit the whole range's, and no call changes the average outside its range. Cuts that leave
 * spans of more than OPTIM__PF_MIN bytes whose length is not a multiple of a prefetch block (kernels_ema.h's
 * blocks), at a range's start and at its end; SGD and Adam, float32, float64, a bfloat16 gradient, bfloat16
 * parameters; statistics off, and on (cut at a block). Needs no second CPU. */
TEST_IMPL(ema_split_anywhere)
{
    static const size_t sizes[] = {300013, 3 * 8192 + 17};
    /* Cut lists, 0-terminated (a cut past a size: not that size): 10007 leaves [10007, 16384) (6377 elements)
     * at the start of a range long enough for the average to prefetch (kernels.h's OPTIM__EMA_PF_MIN: 1 MiB,
     * 262144 float32), 282628 leaves [278528, 282628) (4100) at the end of one; 20484 leaves [16384, 20484) in a
     * short range. */
    static const size_t cuts[][3] = {{10007, 0, 0}, {282628, 0, 0}, {16336, 0, 0}, {10007, 282628, 0},
                                     {20484, 0, 0}, {2 * OPTIM__RBLOCK, 0, 0}};
    static const optim_dtype ety[][3] = {{OPTIM_FLOAT32, OPTIM_FLOAT32, OPTIM_FLOAT32},
                                         {OPTIM_FLOAT64, OPTIM_FLOAT64, OPTIM_FLOAT64},
                                         {OPTIM_FLOAT32, OPTIM_BFLOAT16, OPTIM_FLOAT32},
                                         {OPTIM_BFLOAT16, OPTIM_BFLOAT16, OPTIM_FLOAT32}};
    const uint64_t seed = test_seed();
    long calls = 0, cases = 0, finite = 0;
    size_t r, ty, si, ci, i;
    int stats;
    printf("  seed %" PRIu64 "\n", seed);
    pf_in = pf_out = pf_elsewhere = pf_ema_stray = 0;
    for (r = 0; r < 2; r++)
        for (ty = 0; ty < sizeof ety / sizeof ety[0]; ty++)
            for (si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
                for (stats = 0; stats < 2; stats++)
                    for (ci = 0; ci < sizeof cuts / sizeof cuts[0]; ci++) {
                        const int rule = r ? OPTIM_ADAM : OPTIM_SGD;
                        const size_t n = sizes[si], es = ety[ty][0] == OPTIM_FLOAT64 ? 8 : 4;
                        const optim_dtype edt = es == 8 ? OPTIM_FLOAT64 : OPTIM_FLOAT32;
                        unsigned char *whole = malloc(n * es), *parts = malloc(n * es);
                        size_t from = 0, k;
                        long stray = pf_ema_stray;
                        if (!whole || !parts) FAIL("out of memory");
                        if ((stats && cuts[ci][0] % OPTIM__RBLOCK) /* with statistics a range starts at a block */
                            || cuts[ci][0] >= n || cuts[ci][1] >= n) {
                            free(whole);
                            free(parts);
                            continue;
                        }
                        pf_seed = seed ^ ((uint64_t)(r * 64 + ty * 8 + si) << 32) ^ 0x5eedull;
                        pf_ema_out = whole;
                        if (pf_case(rule, 0, ety[ty][0], ety[ty][1], ety[ty][2], n, 0, n, stats, 1, &calls))
                            FAIL("%s with an EMA: the case could not run", optim_rule_name((optim_rule)rule));
                        pf_ema_out = parts;
                        for (k = 0; k <= 3; k++) {
                            const size_t to = k < 3 && cuts[ci][k] ? cuts[ci][k] : n;
                            if (pf_case(rule, 0, ety[ty][0], ety[ty][1], ety[ty][2], n, from, to, stats, 1, &calls))
                                FAIL("%s with an EMA: the case could not run", optim_rule_name((optim_rule)rule));
                            from = to;
                            if (to == n) break;
                        }
                        pf_ema_out = NULL;
                        for (i = 0; i < n; i++)
                            if (t_get(edt, whole, i) == t_get(edt, whole, i)) finite++;
                        for (i = 0; i < n; i++)
                            if (memcmp(whole + i * es, parts + i * es, es) != 0)
                                FAIL("seed %" PRIu64 ": %s with an EMA, %s/%s/%s, %zu elements, cut at %zu %zu, "
                                     "statistics %s: element %zu's average %.17g, %.17g over the whole range",
                                     seed, optim_rule_name((optim_rule)rule), optim_dtype_name(ety[ty][0]),
                                     optim_dtype_name(ety[ty][1]), optim_dtype_name(ety[ty][2]), n, cuts[ci][0],
                                     cuts[ci][1], stats ? "on" : "off", i, t_get(edt, parts, i), t_get(edt, whole, i));
                        if (pf_ema_stray != stray)
                            FAIL("seed %" PRIu64 ": %s with an EMA, %s/%s/%s, %zu elements, cut at %zu %zu, "
                                 "statistics %s: %ld elements of the average outside a call's range changed",
                                 seed, optim_rule_name((optim_rule)rule), optim_dtype_name(ety[ty][0]),
                                 optim_dtype_name(ety[ty][1]), optim_dtype_name(ety[ty][2]), n, cuts[ci][0],
                                 cuts[ci][1], stats ? "on" : "off", pf_ema_stray - stray);
                        cases++;
                        free(whole);
                        free(parts);
                    }
    pf_seed = 0;
    printf("  %ld cases (%ld passes): the averages of cut ranges bit for bit the whole range's (%ld finite), "
           "none written outside its call's range; %ld prefetches outside\n",
           cases, calls, finite, pf_out);
    ASSERT(finite > 0);
    ASSERT_INT(pf_out, ==, 0);
    return 0;
}
