/* clip.c: gradient norms and clipping over arrays the caller owns, as
 * torch.nn.utils.clip_grad_norm_ / clip_grad_value_. The reductions and the
 * in-place updates are kernels (src/kernels/); this file validates and
 * drives them. */
#include "common.h"
#include "kernels/kernels.h"
#include "optim_clip.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Scratch for one call: tasks over the arrays and the reduction partials. */
typedef struct optim__clip_job {
    size_t count;
    optim__task *tasks;
    double *partials;
    unsigned char *bad;
    size_t total, nblocks;
    optim__k k;
} optim__clip_job;

static void optim__clip_job_free(optim__clip_job *j)
{
    free(j->tasks);
    free(j->partials);
    free(j->bad);
}

static int optim__clip_job_init(optim__clip_job *j, const char *fn, size_t count, const float *const *grads,
                                const size_t *n, optim_error *err)
{
    size_t i, k;
    memset(j, 0, sizeof *j);
    OPTIM__FAIL_IF(count > 0 && (!grads || !n), err, OPTIM_ENULL, "%s: %s is NULL", fn, !grads ? "grads" : "n");
    for (i = 1; i < count; i++) {
        /* Scaling an array in place twice would be wrong: refuse overlaps. */
        if (!grads[i]) continue;
        for (k = 0; k < i; k++)
            OPTIM__FAIL_IF(optim__overlap(grads[i], n[i], grads[k], n[k]), err, OPTIM_EOVERLAP,
                           "%s: grads[%zu] overlaps grads[%zu]", fn, i, k);
    }
    j->count = count;
    j->tasks = (optim__task *)calloc(count ? count : 1, sizeof *j->tasks);
    OPTIM__FAIL_IF(!j->tasks, err, OPTIM_ENOMEM, "%s: out of memory for %zu arrays", fn, count);
    for (i = 0; i < count; i++) {
        optim__task *t = &j->tasks[i];
        t->p = (float *)(uintptr_t)grads[i]; /* the in-place kernels write through p */
        t->g = grads[i];
        t->n = grads[i] ? n[i] : 0;
        t->start = j->total;
        t->bstart = j->nblocks;
        t->k = &j->k;
        j->total += t->n;
        j->nblocks += OPTIM__NBLOCKS(t->n);
    }
    j->partials = (double *)malloc((j->nblocks ? j->nblocks : 1) * sizeof(double));
    j->bad = (unsigned char *)malloc(j->nblocks ? j->nblocks : 1);
    if (!j->partials || !j->bad) {
        optim__clip_job_free(j);
        return optim__fail(err, OPTIM_ENOMEM, "%s: out of memory", fn);
    }
    return OPTIM_OK;
}

static double optim__job_norm(optim__clip_job *j, double norm_type, int threads)
{
    optim__norm kind = optim__norm_kind(norm_type);
    optim__reduce_run(optim__kernels_get(OPTIM_ISA_AUTO), j->tasks, j->count, j->nblocks, kind, norm_type, j->partials,
                      j->bad, threads);
    return optim__norm_finish(j->partials, j->nblocks, kind, norm_type);
}

static int optim__check_common(const char *fn, double norm_type, int threads, optim_error *err)
{
    OPTIM__FAIL_IF(!(norm_type >= 1), err, OPTIM_EINVAL, "%s: norm_type = %.10g must be >= 1 or INFINITY", fn,
                   norm_type);
    OPTIM__FAIL_IF(threads < 0, err, OPTIM_EINVAL, "%s: threads = %d is negative", fn, threads);
    return OPTIM_OK;
}

int optim_grad_norm(size_t count, const float *const *grads, const size_t *n, double norm_type, int threads,
                    double *total_norm, optim_error *err)
{
    optim__clip_job j;
    OPTIM__FAIL_IF(!total_norm, err, OPTIM_ENULL, "optim_grad_norm: total_norm is NULL");
    OPTIM__FORWARD(optim__check_common("optim_grad_norm", norm_type, threads, err));
    OPTIM__FORWARD(optim__clip_job_init(&j, "optim_grad_norm", count, grads, n, err));
    *total_norm = optim__job_norm(&j, norm_type, threads);
    optim__clip_job_free(&j);
    return optim__ok(err);
}

int optim_clip_grad_norm(size_t count, float *const *grads, const size_t *n, double max_norm, double norm_type,
                         int error_if_nonfinite, int threads, double *total_norm, optim_error *err)
{
    optim__clip_job j;
    double norm, coef;
    OPTIM__FAIL_IF(!(max_norm >= 0) || isinf(max_norm), err, OPTIM_EINVAL,
                   "optim_clip_grad_norm: max_norm = %.10g must be a finite number >= 0", max_norm);
    OPTIM__FORWARD(optim__check_common("optim_clip_grad_norm", norm_type, threads, err));
    OPTIM__FORWARD(optim__clip_job_init(&j, "optim_clip_grad_norm", count, (const float *const *)grads, n, err));
    norm = optim__job_norm(&j, norm_type, threads);
    if (total_norm) *total_norm = norm;
    if (error_if_nonfinite && !isfinite(norm)) {
        optim__clip_job_free(&j);
        return optim__fail(err, OPTIM_ENONFINITE,
                           "optim_clip_grad_norm: the total norm of order %.10g of the gradients is %.10g; "
                           "gradients left unchanged",
                           norm_type, norm);
    }
    /* torch: clip_coef = max_norm / (total_norm + 1e-6), clamped to at most 1 (a NaN norm gives NaN). */
    coef = max_norm / (norm + 1e-6);
    if (!(coef >= 1.0)) {
        j.k.u.util.a = (float)coef;
        optim__run_fn(optim__kernels_get(OPTIM_ISA_AUTO)->scale, j.tasks, j.count, j.total, threads);
    }
    optim__clip_job_free(&j);
    return optim__ok(err);
}

int optim_clip_grad_value(size_t count, float *const *grads, const size_t *n, double clip_value, int threads,
                          optim_error *err)
{
    optim__clip_job j;
    OPTIM__FAIL_IF(!(clip_value >= 0) || isinf(clip_value), err, OPTIM_EINVAL,
                   "optim_clip_grad_value: clip_value = %.10g must be a finite number >= 0", clip_value);
    OPTIM__FAIL_IF(threads < 0, err, OPTIM_EINVAL, "optim_clip_grad_value: threads = %d is negative", threads);
    OPTIM__FORWARD(optim__clip_job_init(&j, "optim_clip_grad_value", count, (const float *const *)grads, n, err));
    j.k.u.util.a = (float)-clip_value;
    j.k.u.util.b = (float)clip_value;
    optim__run_fn(optim__kernels_get(OPTIM_ISA_AUTO)->clamp, j.tasks, j.count, j.total, threads);
    optim__clip_job_free(&j);
    return optim__ok(err);
}
