/* clip.c: gradient norms and clipping over arrays the caller owns, as
 * torch.nn.utils.clip_grad_norm_ / clip_grad_value_. The reductions and the
 * in-place updates are kernels (src/kernels/); this file validates and
 * drives them. */
#include "clip_internal.h"
#include "common.h"
#include "kernels/kernels.h"
#include "optim_clip.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The smallest double that rounds to +inf as a float: FLT_MAX + half an ulp
 * (FLT_MAX's last bit is odd, so the tie rounds up). */
#define OPTIM__F32_OVERFLOW 0x1.ffffffp+127

/* (float)x, with the saturation IEEE gives (C leaves an out-of-range
 * conversion undefined). NaN stays NaN. */
static float optim__to_float(double x)
{
    if (x >= OPTIM__F32_OVERFLOW) return INFINITY;
    if (x <= -OPTIM__F32_OVERFLOW) return -INFINITY;
    return (float)x;
}

double optim__clip_total_norm(double norm, double p)
{
    double sum;
    if (!(norm < OPTIM__F32_OVERFLOW)) return norm >= OPTIM__F32_OVERFLOW ? INFINITY : norm; /* NaN stays */
    /* p = 1: the sum is the norm; inf: a max of floats, always in range; p < 1: the sum is below the norm. */
    if (isinf(p) || p <= 1.0) return norm;
    sum = p == 2.0 ? norm * norm : pow(norm, p);
    return sum >= OPTIM__F32_OVERFLOW ? INFINITY : norm;
}

float optim__clip_factor(double norm, double max_norm)
{
    /* torch: clip_coef = max_norm / (total_norm + 1e-6) with total_norm a float32
     * tensor, which Tensor.__rtruediv__ computes as reciprocal() * max_norm, each in
     * float32; then clamp(max=1.0). The same operations in the same order, in float. */
    const float n = optim__to_float(norm), eps = (float)1e-6, m = optim__to_float(max_norm);
    const float r = 1.0f / (n + eps), c = r * m;
    return c >= 1.0f ? 1.0f : c; /* NaN stays NaN */
}

double optim__clip_factor64(double norm, double max_norm)
{
    const double r = 1.0 / (norm + 1e-6), c = r * max_norm;
    return c >= 1.0 ? 1.0 : c; /* NaN stays NaN */
}

/* Scratch for one call: tasks over the arrays and the reduction partials. */
typedef struct optim__clip_job {
    size_t count;
    optim__task *tasks;
    double *partials;
    unsigned char *bad;
    size_t total, nblocks;
    optim__util_k k;
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
    /* A binding passes addresses as integers: a float array at an odd address
     * would be loaded as floats it cannot hold (UB; UBSan stops there). */
    for (i = 0; i < count; i++)
        OPTIM__FAIL_IF(grads[i] && (uintptr_t)grads[i] % sizeof(float) != 0, err, OPTIM_EINVAL,
                       "%s: grads[%zu] at %p is not aligned to %zu bytes (float32)", fn, i, (const void *)grads[i],
                       sizeof(float));
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
        t->gtype = OPTIM_FLOAT32;
        t->n = grads[i] ? n[i] : 0;
        t->start = j->total;
        t->bstart = j->nblocks;
        t->align = 16;
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
    /* Any p > 0: the reductions sum |g|^p in double for any p (p in (0, 1) too,
     * which torch accepts); 0 (torch counts non-zero elements) and negative
     * orders are not norms. */
    OPTIM__FAIL_IF(!(norm_type > 0), err, OPTIM_EINVAL,
                   "%s: norm_type = %.10g must be > 0 or INFINITY (orders 0 and below are not norms)", fn, norm_type);
    OPTIM__FAIL_IF(threads < 0 || threads > OPTIM_MAX_THREADS, err, OPTIM_EINVAL,
                   "%s: threads = %d is outside 0..OPTIM_MAX_THREADS (%d)", fn, threads, OPTIM_MAX_THREADS);
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
    static const char fn[] = "optim_clip_grad_norm";
    optim__clip_job j;
    double exact, norm;
    float coef;
    OPTIM__FAIL_IF(!(max_norm >= 0), err, OPTIM_EINVAL,
                   "%s: max_norm = %.10g must be a number >= 0 (INFINITY: no clipping, as torch's factor min(1, inf))",
                   fn, max_norm);
    OPTIM__FORWARD(optim__check_common(fn, norm_type, threads, err));
    OPTIM__FORWARD(optim__clip_job_init(&j, fn, count, (const float *const *)grads, n, err));
    exact = optim__job_norm(&j, norm_type, threads);
    norm = optim__clip_total_norm(exact, norm_type);
    if (total_norm) *total_norm = norm;
    if (error_if_nonfinite && !isfinite(norm)) {
        optim__clip_job_free(&j);
        if (isfinite(exact))
            return optim__fail(err, OPTIM_ENONFINITE,
                               "%s: the total norm of order %.10g of the gradients is %.10g, beyond float32's range "
                               "(torch's float32 norm is inf); gradients left unchanged",
                               fn, norm_type, exact);
        return optim__fail(err, OPTIM_ENONFINITE,
                           "%s: the total norm of order %.10g of the gradients is %.10g; gradients left unchanged", fn,
                           norm_type, norm);
    }
    coef = optim__clip_factor(norm, max_norm);
    if (!(coef >= 1.0f)) {
        j.k.a = coef;
        optim__run(optim__kernels_get(OPTIM_ISA_AUTO), optim__range_scale, j.tasks, j.count, j.total, threads);
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
    OPTIM__FAIL_IF(threads < 0 || threads > OPTIM_MAX_THREADS, err, OPTIM_EINVAL,
                   "optim_clip_grad_value: threads = %d is outside 0..OPTIM_MAX_THREADS (%d)", threads,
                   OPTIM_MAX_THREADS);
    OPTIM__FORWARD(optim__clip_job_init(&j, "optim_clip_grad_value", count, (const float *const *)grads, n, err));
    j.k.a = (float)-clip_value;
    j.k.b = (float)clip_value;
    optim__run(optim__kernels_get(OPTIM_ISA_AUTO), optim__range_clamp, j.tasks, j.count, j.total, threads);
    optim__clip_job_free(&j);
    return optim__ok(err);
}
