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
static struct {
    uintptr_t alo, ahi, lo, hi;
} pf_arr[OPTIM__NSTREAMS + 1];
static long pf_in, pf_out, pf_elsewhere;
static uintptr_t pf_bad_at;

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
    if (ema) optim__range_update_ema(kt, &t, from, to);
    else optim__range_update(kt, &t, from, to);
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
     * statistics) inside one: the average's prefetch crosses its spans' ends, never its range's. */
    for (r = 0; r < 2; r++)
        for (ty = 0; ty < 4; ty++)
            for (si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
                for (stats = 0; stats < 2; stats++)
                    for (split = 0; split < 3; split++) {
                        static const optim_dtype ety[][3] = {{OPTIM_FLOAT32, OPTIM_FLOAT32, OPTIM_FLOAT32},
                                                             {OPTIM_FLOAT64, OPTIM_FLOAT64, OPTIM_FLOAT64},
                                                             {OPTIM_FLOAT32, OPTIM_BFLOAT16, OPTIM_FLOAT32},
                                                             {OPTIM_BFLOAT16, OPTIM_BFLOAT16, OPTIM_FLOAT32}};
                        const int rule = r ? OPTIM_ADAM : OPTIM_SGD;
                        const size_t n = sizes[si], mid = split == 1 ? 2 * OPTIM__RBLOCK : 10007;
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
    printf("  %ld passes: %ld prefetched ranges inside the range of their call, %ld outside, %ld in scratch "
           "arrays\n",
           calls, pf_in, pf_out, pf_elsewhere);
    ASSERT(calls > 0);
    ASSERT(pf_in > 0); /* the prefetch ran */
    ASSERT_INT(pf_out, ==, 0);
    return 0;
}
