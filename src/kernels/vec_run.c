/* vec_run.c: the passes of the vector operations (include/optim_vec.h) over
 * many arrays: element-wise passes through optim__run (any split gives the
 * same bits), dot products as fixed blocks whose partials are summed in
 * block order by the caller (the same bits for any thread count). */
#include "kernels.h"

#ifdef _OPENMP
#  include <omp.h>
#endif

static size_t optim__vsize(optim__ctype ct)
{
    return ct == OPTIM__CT_F64 ? sizeof(double) : sizeof(float);
}

void optim__range_vaxpy(const optim__kernels *kt, const optim__task *t, size_t from, size_t to)
{
    const optim__vec_k *k = (const optim__vec_k *)t->k;
    size_t es = optim__vsize(k->ct);
    kt->vec[k->ct].axpy(to - from, k->a, (const char *)t->g + from * es, (char *)t->p + from * es);
}

void optim__range_vscale(const optim__kernels *kt, const optim__task *t, size_t from, size_t to)
{
    const optim__vec_k *k = (const optim__vec_k *)t->k;
    size_t es = optim__vsize(k->ct);
    kt->vec[k->ct].scale(to - from, k->a, (const char *)t->g + from * es, (char *)t->p + from * es);
}

static void optim__vdot_block(const optim__kernels *kt, optim__ctype ct, const optim__task *tasks, size_t count,
                              size_t b, double *partials)
{
    const optim__task *t = &tasks[optim__find_block(tasks, count, b)];
    size_t off = (b - t->bstart) * OPTIM__RBLOCK, es = optim__vsize(ct);
    size_t len = t->n - off < OPTIM__RBLOCK ? t->n - off : OPTIM__RBLOCK;
    partials[b] = kt->vec[ct].dot(len, (const char *)t->g + off * es, (const char *)t->s[0] + off * es);
}

void optim__vdot_run(const optim__kernels *kt, optim__ctype ct, const optim__task *tasks, size_t count,
                     size_t nblocks, double *partials, int threads)
{
    int nt = optim__threads_for(nblocks * OPTIM__RBLOCK, threads);
    if (nt <= 1) {
        size_t b;
        for (b = 0; b < nblocks; b++) optim__vdot_block(kt, ct, tasks, count, b, partials);
        return;
    }
#ifdef _OPENMP
    {
        long b, nb = (long)nblocks;
#pragma omp parallel for schedule(static) num_threads(nt)
        for (b = 0; b < nb; b++) optim__vdot_block(kt, ct, tasks, count, (size_t)b, partials);
    }
#endif
}
