/* parallel.c: one step over many tensors in one parallel region.
 *
 * The tensors of a step are seen as one long concatenation of elements; each
 * thread takes one contiguous, equal share of it and walks the tensors that
 * share covers. Share boundaries are moved down to a multiple of the
 * tensor's split alignment (task.align): 16 elements for tensors updated in
 * place, so that threads do not write the same cache line of a
 * 64-byte-aligned array (state always is; torch's tensors are too), a whole
 * chunk for tensors the chunked path converts (streams.c). There is one
 * fork/join per step, not one per tensor, and a model of hundreds of small
 * tensors balances as well as one big tensor. The update is element-wise, so
 * the split cannot change any result. */
#include "kernels.h"

#include <math.h>

#ifdef _OPENMP
#  include <omp.h>
#endif

/* Below this many elements a step runs on the caller's thread: waking other
 * threads costs more than it saves. */
#define OPTIM__PAR_MIN ((size_t)1 << 15)

/* Index of the first task whose elements reach past position x (tasks are
 * sorted by start); count if none. */
static size_t optim__find(const optim__task *tasks, size_t count, size_t x)
{
    size_t a = 0, b = count;
    while (a < b) {
        size_t mid = a + (b - a) / 2;
        if (tasks[mid].start + tasks[mid].n <= x)
            a = mid + 1;
        else
            b = mid;
    }
    return a;
}

/* Move a share boundary down to a multiple of the split alignment of the
 * tensor it falls in. A pure function of x, so neighbours agree on it. */
static size_t optim__split_point(const optim__task *tasks, size_t count, size_t x)
{
    size_t a = optim__find(tasks, count, x), align;
    if (a == count || x <= tasks[a].start) return x;
    if (tasks[a].rows) {
        /* A sparse gradient: at the start of a row, and of the first of its
         * repeats (SGD's repeated rows are applied in order by one thread). */
        const optim__task *t = &tasks[a];
        size_t r = (x - t->start) / t->row_len;
        while (r > 0 && t->rows[r - 1] == t->rows[r]) r--;
        return t->start + r * t->row_len;
    }
    align = tasks[a].align ? tasks[a].align : 1;
    return tasks[a].start + (x - tasks[a].start) / align * align;
}

/* Process elements [lo, hi) of the concatenation. */
static void optim__run_range(const optim__kernels *kt, optim__range_fn fn, const optim__task *tasks, size_t count,
                             size_t lo, size_t hi)
{
    size_t a;
    if (lo >= hi) return;
    a = optim__find(tasks, count, lo);
    for (; a < count && tasks[a].start < hi; a++) {
        const optim__task *t = &tasks[a];
        size_t from, to;
        if (t->n == 0) continue;
        from = lo > t->start ? lo - t->start : 0;
        to = hi < t->start + t->n ? hi - t->start : t->n;
        if (from >= to) continue;
        fn(kt, t, from, to);
    }
}

int optim__threads_for(size_t work, int threads)
{
    int nt = 1;
#ifdef _OPENMP
    nt = threads > 0 ? threads : omp_get_max_threads();
    if (nt > OPTIM_MAX_THREADS) nt = OPTIM_MAX_THREADS;
    if (nt > 1 && work / (size_t)nt < OPTIM__PAR_MIN / 2) {
        size_t fit = work / (OPTIM__PAR_MIN / 2);
        nt = fit < 2 ? 1 : (int)(fit < (size_t)nt ? fit : (size_t)nt);
    }
    if (nt > 1) {
        /* Never more than OpenMP may create, nor more than the CPUs it sees: a
         * request past what the system can create makes libgomp end the
         * process. Asked only where more than one thread would run:
         * omp_get_num_procs() is a system call (the process's CPU affinity)
         * in libgomp, a large part of a small step's time. Every bound is a
         * minimum, so the order of the bounds does not change the count. */
        int limit = omp_get_thread_limit(), procs = omp_get_num_procs();
        if (limit > 0 && nt > limit) nt = limit;
        if (procs > 0 && nt > procs) nt = procs;
    }
    if (nt < 1) nt = 1;
#else
    (void)work;
    (void)threads;
#endif
    return nt;
}

void optim__run(const optim__kernels *kt, optim__range_fn fn, const optim__task *tasks, size_t count, size_t total,
                int threads)
{
    int nt = optim__threads_for(total, threads);
    if (nt <= 1) {
        optim__run_range(kt, fn, tasks, count, 0, total);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
    {
        size_t t = (size_t)omp_get_thread_num(), k = (size_t)omp_get_num_threads();
        size_t lo = t == 0 ? 0 : optim__split_point(tasks, count, total / k * t);
        size_t hi = t + 1 == k ? total : optim__split_point(tasks, count, total / k * (t + 1));
        optim__run_range(kt, fn, tasks, count, lo, hi);
    }
#endif
}

/* ---- SAM's and clipping's passes (float32 arrays) ----------------------------------------- */

void optim__range_sam_perturb(const optim__kernels *kt, const optim__task *t, size_t from, size_t to)
{
    const optim__sam_k *k = (const optim__sam_k *)t->k;
    /* sam.c chose the variant among the generated ones. */
    kt->sam_perturb[k->variant](to - from, (float *)t->p + from, (const float *)t->g + from, (float *)t->s[0] + from,
                                k);
}

void optim__range_copy_back(const optim__kernels *kt, const optim__task *t, size_t from, size_t to)
{
    kt->copy(to - from, (float *)t->p + from, (const float *)t->s[0] + from);
}

void optim__range_scale(const optim__kernels *kt, const optim__task *t, size_t from, size_t to)
{
    kt->scale(to - from, (float *)t->p + from, (const optim__util_k *)t->k);
}

void optim__range_clamp(const optim__kernels *kt, const optim__task *t, size_t from, size_t to)
{
    kt->clamp(to - from, (float *)t->p + from, (const optim__util_k *)t->k);
}

/* ---- Reductions ------------------------------------------------------------------ */

size_t optim__find_block(const optim__task *tasks, size_t count, size_t b)
{
    size_t a = 0, z = count;
    while (a < z) {
        size_t mid = a + (z - a) / 2;
        if (tasks[mid].bstart + OPTIM__NBLOCKS(tasks[mid].n) <= b)
            a = mid + 1;
        else
            z = mid;
    }
    return a;
}

static void optim__reduce_block(const optim__kernels *kt, const optim__task *tasks, size_t count, size_t b,
                                optim__norm kind, double p, double *partials, unsigned char *bad)
{
    size_t a = optim__find_block(tasks, count, b);
    const optim__task *t = &tasks[a];
    size_t off = (b - t->bstart) * OPTIM__RBLOCK;
    size_t len = t->n - off < OPTIM__RBLOCK ? t->n - off : OPTIM__RBLOCK;
    int flag = 0;
    partials[b] = kt->reduce[t->gtype](len, t->g, off, t->w ? t->w + off : NULL, t->eta, kind, p, &flag);
    bad[b] = (unsigned char)flag;
}

void optim__reduce_run(const optim__kernels *kt, const optim__task *tasks, size_t count, size_t nblocks,
                       optim__norm kind, double p, double *partials, unsigned char *bad, int threads)
{
    int nt = optim__threads_for(nblocks * OPTIM__RBLOCK, threads);
    if (nt <= 1) {
        size_t b;
        for (b = 0; b < nblocks; b++) optim__reduce_block(kt, tasks, count, b, kind, p, partials, bad);
        return;
    }
#ifdef _OPENMP
    {
        long b, nb = (long)nblocks;
#pragma omp parallel for schedule(static) num_threads(nt)
        for (b = 0; b < nb; b++)
            optim__reduce_block(kt, tasks, count, (size_t)b, kind, p, partials, bad);
    }
#endif
}

/* Pass 1 of a rule with a per-tensor reduction: block b of the tasks. */
static void optim__reduce_rule_one(const optim__task *tasks, size_t count, size_t b, double *partials)
{
    const optim__task *t = &tasks[optim__find_block(tasks, count, b)];
    const size_t off = (b - t->bstart) * OPTIM__RBLOCK;
    const size_t len = t->n - off < OPTIM__RBLOCK ? t->n - off : OPTIM__RBLOCK;
    partials[2 * b] = partials[2 * b + 1] = 0.0;
    if (t->pre || t->red) optim__reduce_rule_block(t, off, len, &partials[2 * b]);
}

void optim__reduce_rule_run(const optim__task *tasks, size_t count, size_t nblocks, double *partials, int threads)
{
    int nt = optim__threads_for(nblocks * OPTIM__RBLOCK, threads);
    if (nt <= 1) {
        size_t b;
        for (b = 0; b < nblocks; b++) optim__reduce_rule_one(tasks, count, b, partials);
        return;
    }
#ifdef _OPENMP
    {
        long b, nb = (long)nblocks;
#pragma omp parallel for schedule(static) num_threads(nt)
        for (b = 0; b < nb; b++) optim__reduce_rule_one(tasks, count, (size_t)b, partials);
    }
#endif
}

double optim__norm_finish(const double *partials, size_t nblocks, optim__norm kind, double p)
{
    double acc = 0.0;
    size_t b;
    for (b = 0; b < nblocks; b++) {
        if (kind == OPTIM__NORM_INF)
            acc = (partials[b] != partials[b] || partials[b] > acc) ? partials[b] : acc;
        else
            acc += partials[b];
    }
    switch (kind) {
    case OPTIM__NORM_L2: return sqrt(acc);
    case OPTIM__NORM_LP: return pow(acc, 1.0 / p);
    default: return acc;
    }
}

optim__norm optim__norm_kind(double p)
{
    if (isinf(p)) return OPTIM__NORM_INF;
    if (p == 1.0) return OPTIM__NORM_L1;
    if (p == 2.0) return OPTIM__NORM_L2;
    return OPTIM__NORM_LP;
}
