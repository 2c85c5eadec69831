/* factored_run.c: Adafactor's passes over the tensors of a step
 * (src/rules/adafactor.h; the loops in kernels_factored.h).
 *
 * Pass A updates the second-moment state and sums p^2 per 8192-element
 * block; pass B sums u^2 per block from the state as stored; the host turns
 * each tensor's sums into its step size (the rule's trust hook); pass C, a
 * range function for optim__run, writes the parameters. Every sum runs over
 * a span fixed by the shape and the blocks (a block, a row, a row's segment
 * inside a block, a column of a batch), each on one thread, and the spans'
 * sums are added in a fixed order: the same bits for any thread count and
 * CPU path. A tensor is factored (task fcols != 0) over its last two
 * dimensions, batched over the leading ones: rows r = e / C of the
 * concatenated batches, row factor row_var[r], column factor
 * col_var[(e / (R C)) C + e % C]. */
#include "kernels.h"

#include <string.h>

#ifdef _OPENMP
#  include <omp.h>
#endif

/* Rows per work item of the row pass. */
#define OPTIM__AF_ROWS 64

static size_t optim__af_es(const optim__task *t)
{
    return t->sto[OPTIM__SP]->size;
}

static const optim__factored_fns *optim__af_fns(const optim__kernels *kt, const optim__task *t)
{
    return &kt->factored[t->sto[OPTIM__SP]->ctype];
}

/* Element r of a row_var slot, widened to double (exact). */
static double optim__af_row(const optim__task *t, size_t r)
{
    return t->sto[OPTIM__SP]->ctype == OPTIM__CT_F64 ? ((const double *)t->s[0])[r]
                                                      : (double)((const float *)t->s[0])[r];
}

/* The spans of elements [from, to) of a factored task: one call of fn per
 * row segment, with the batch's clamped mean row factor (computed once per
 * batch met: a pure function of the state, whatever the range). */
typedef struct optim__af_seg {
    size_t e, len, row, batch, col;
    double rm;
} optim__af_seg;

static int optim__af_next(const optim__kernels *kt, const optim__task *t, optim__af_seg *sg, size_t to)
{
    const size_t C = t->fcols, RC = t->frows * t->fcols;
    size_t e = sg->e + sg->len, b;
    if (e >= to) return 0;
    sg->e = e;
    sg->row = e / C;
    sg->col = e % C;
    sg->len = C - sg->col < to - e ? C - sg->col : to - e;
    b = e / RC;
    if (b != sg->batch) {
        sg->batch = b;
        sg->rm = optim__af_fns(kt, t)->rmean(t->frows, (const char *)t->s[0] + b * t->frows * optim__af_es(t),
                                             (const optim__k *)t->k);
    }
    return 1;
}

static void optim__af_seg_start(optim__af_seg *sg, size_t from)
{
    sg->e = from;
    sg->len = 0;
    sg->batch = (size_t)-1;
    sg->rm = 0.0;
}

/* Pass A (pass 0) or B (pass 1) of block b. */
static void optim__af_block(const optim__kernels *kt, const optim__task *tasks, size_t count, size_t b,
                            double *partials, int pass)
{
    const optim__task *t = &tasks[optim__find_block(tasks, count, b)];
    const optim__factored_fns *f = optim__af_fns(kt, t);
    const optim__k *k = (const optim__k *)t->k;
    const size_t off = (b - t->bstart) * OPTIM__RBLOCK, es = optim__af_es(t);
    const size_t len = t->n - off < OPTIM__RBLOCK ? t->n - off : OPTIM__RBLOCK;
    const char *p = (const char *)t->p, *g = (const char *)t->g;
    if (pass == 0) {
        int bad = 0;
        partials[2 * b] = kt->reduce[t->sto[OPTIM__SP]->dtype](len, t->p, off, NULL, 0.0f, OPTIM__NORM_L2, 2.0, &bad);
        if (!t->fcols) f->var(len, g + off * es, (char *)t->s[2] + off * es, k);
        return;
    }
    if (!t->fcols) {
        partials[2 * b + 1] = f->usq(len, p + off * es, g + off * es, (const char *)t->s[2] + off * es, 0.0, NULL,
                                     0.0, k);
    } else {
        optim__af_seg sg;
        double sum = 0.0;
        optim__af_seg_start(&sg, off);
        while (optim__af_next(kt, t, &sg, off + len))
            sum += f->usq(sg.len, p + sg.e * es, g + sg.e * es, NULL, optim__af_row(t, sg.row),
                          (const char *)t->s[1] + (sg.batch * t->fcols + sg.col) * es, sg.rm, k);
        partials[2 * b + 1] = sum;
    }
}

static void optim__af_blocks(const optim__kernels *kt, const optim__task *tasks, size_t count, size_t nblocks,
                             double *partials, int threads, int pass)
{
    int nt = optim__threads_for(nblocks * OPTIM__RBLOCK, threads);
    if (nt <= 1) {
        size_t b;
        for (b = 0; b < nblocks; b++) optim__af_block(kt, tasks, count, b, partials, pass);
        return;
    }
#ifdef _OPENMP
    {
        long b, nb = (long)nblocks;
#pragma omp parallel for schedule(static) num_threads(nt)
        for (b = 0; b < nb; b++) optim__af_block(kt, tasks, count, (size_t)b, partials, pass);
    }
#endif
}

/* Work item i of a factored task's row pass (kind 0: OPTIM__AF_ROWS rows)
 * or column pass (kind 1: OPTIM__AF_COLS columns of one batch). */
static void optim__af_item(const optim__kernels *kt, const optim__task *t, size_t i, int kind)
{
    const optim__factored_fns *f = optim__af_fns(kt, t);
    const optim__k *k = (const optim__k *)t->k;
    const size_t es = optim__af_es(t), C = t->fcols, R = t->frows, rows = t->n / C;
    const char *g = (const char *)t->g;
    if (kind == 0) {
        size_t r0 = i * OPTIM__AF_ROWS, nr = rows - r0 < OPTIM__AF_ROWS ? rows - r0 : OPTIM__AF_ROWS;
        f->rows(nr, C, g + r0 * C * es, (char *)t->s[0] + r0 * es, k);
    } else {
        size_t per = (C + OPTIM__AF_COLS - 1) / OPTIM__AF_COLS, b = i / per, j0 = (i % per) * OPTIM__AF_COLS;
        size_t nc = C - j0 < OPTIM__AF_COLS ? C - j0 : OPTIM__AF_COLS;
        f->cols(R, C, nc, g + (b * R * C + j0) * es, (char *)t->s[1] + (b * C + j0) * es, k);
    }
}

static void optim__af_items(const optim__kernels *kt, const optim__task *t, int kind, int threads)
{
    const size_t C = t->fcols, rows = t->n / C;
    const size_t items = kind == 0 ? (rows + OPTIM__AF_ROWS - 1) / OPTIM__AF_ROWS
                                   : (rows / t->frows) * ((C + OPTIM__AF_COLS - 1) / OPTIM__AF_COLS);
    int nt = optim__threads_for(t->n, threads);
    if (nt <= 1 || items < 2) {
        size_t i;
        for (i = 0; i < items; i++) optim__af_item(kt, t, i, kind);
        return;
    }
#ifdef _OPENMP
    {
        long i, ni = (long)items;
#pragma omp parallel for schedule(static) num_threads(nt)
        for (i = 0; i < ni; i++) optim__af_item(kt, t, (size_t)i, kind);
    }
#endif
}

void optim__factored_run(const optim__kernels *kt, const optim__task *tasks, size_t count, size_t nblocks,
                         double *partials, int threads)
{
    size_t i;
    /* A: ||p||^2 (before anything writes p) and the variance of unfactored tensors, block by block ... */
    optim__af_blocks(kt, tasks, count, nblocks, partials, threads, 0);
    /* ... the row and column factors of the factored ones ... */
    for (i = 0; i < count; i++) {
        if (tasks[i].n == 0 || !tasks[i].fcols) continue;
        optim__af_items(kt, &tasks[i], 0, threads);
        optim__af_items(kt, &tasks[i], 1, threads);
    }
    /* B: ||u||^2 from the state as stored. */
    optim__af_blocks(kt, tasks, count, nblocks, partials, threads, 1);
}

/* Pass C over elements [from, to) of a factored task: row segment by row segment. */
static void optim__af_update(const optim__kernels *kt, const optim__task *t, size_t from, size_t to)
{
    const optim__factored_fns *f = optim__af_fns(kt, t);
    const size_t es = optim__af_es(t);
    char *p = (char *)t->p;
    const char *g = (const char *)t->g;
    optim__af_seg sg;
    optim__af_seg_start(&sg, from);
    while (optim__af_next(kt, t, &sg, to))
        f->upd(sg.len, p + sg.e * es, g + sg.e * es, optim__af_row(t, sg.row),
               (const char *)t->s[1] + (sg.batch * t->fcols + sg.col) * es, sg.rm, (const optim__k *)t->k);
}

/* Pass C of a factored task with statistics (t->spart set; `from` a multiple
 * of OPTIM__RBLOCK, as the step aligns a task's split with statistics): the
 * segments chunk by chunk, each chunk's parameter copied before its update
 * and measured after it, as streams.c measures the generic loop (direct
 * memory: the update measured is the one stored). No element is clamped by
 * the rule (the update's clipping by d scales the whole tensor). */
static void optim__af_range_stats(const optim__kernels *kt, const optim__task *t, size_t from, size_t to)
{
    _Alignas(64) double p0[OPTIM__CHUNK];
    double acc[OPTIM__NSTAT * 16];
    _Alignas(64) double lanes[OPTIM__SLANES_BYTES / sizeof(double)];
    const size_t es = optim__af_es(t);
    char *p = (char *)t->p;
    const char *g = (const char *)t->g;
    size_t c, j;
    memset(lanes, 0, sizeof lanes);
    for (c = from; c < to; c += OPTIM__CHUNK) {
        const size_t len = to - c < OPTIM__CHUNK ? to - c : OPTIM__CHUNK;
        if (c == from || c % OPTIM__RBLOCK == 0)
            for (j = 0; j < OPTIM__NSTAT * 16; j++) acc[j] = 0.0;
        memcpy(p0, p + c * es, len * es);
        optim__af_update(kt, t, c, c + len);
        t->stats(len, p0, p + c * es, g + c * es, NULL, (const optim__k *)t->k, lanes);
        t->sflush(lanes, acc);
        if (c + len == to || (c + len) % OPTIM__RBLOCK == 0)
            optim__stats_fold(acc, t->spart + OPTIM__NSTAT * (c / OPTIM__RBLOCK));
    }
}

void optim__range_factored(const optim__kernels *kt, const optim__task *t, size_t from, size_t to)
{
    if (t->ema && t->fcols)
        optim__range_then_ema(kt, t, from, to, optim__range_factored); /* include/optim_ema.h */
    else if (!t->fcols)
        optim__range_update(kt, t, from, to);
    else if (t->spart)
        optim__af_range_stats(kt, t, from, to);
    else
        optim__af_update(kt, t, from, to);
}
