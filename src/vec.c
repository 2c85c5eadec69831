/* vec.c: vector operations over arrays the caller owns (include/optim_vec.h)
 * and L-BFGS's two-loop recursion built from them. The loops are kernels
 * (src/kernels/kernels_vec.h, vec_run.c); this file validates, lays the
 * segments out as tasks and combines the dot products' block partials in
 * block order. */
#include "common.h"
#include "kernels/kernels.h"
#include "optim_vec.h"
#include "vec_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The tasks of one call over count segments, and the partials of a reduction. */
typedef struct optim__vjob {
    optim__ctype ct;
    size_t count, total, nblocks;
    optim__task *tasks;
    double *partials;
    unsigned char *bad;
    optim__vec_k k;
} optim__vjob;

static void optim__vjob_free(optim__vjob *j)
{
    free(j->tasks);
    free(j->partials);
    free(j->bad);
}

static int optim__vcheck_dtype(const char *fn, optim_dtype dtype, int threads, optim_error *err)
{
    OPTIM__FAIL_IF(dtype != OPTIM_FLOAT32 && dtype != OPTIM_FLOAT64, err, OPTIM_EUNSUPPORTED,
                   "%s: dtype = %d is not supported (the vector operations take OPTIM_FLOAT32 (0) or "
                   "OPTIM_FLOAT64 (1))",
                   fn, (int)dtype);
    OPTIM__FAIL_IF(threads < 0 || threads > OPTIM_MAX_THREADS, err, OPTIM_EINVAL,
                   "%s: threads = %d is outside 0..OPTIM_MAX_THREADS (%d)", fn, threads, OPTIM_MAX_THREADS);
    return OPTIM_OK;
}

/* Check one operand's segments: the array of pointers given, each segment
 * aligned, NULL only when empty. */
static int optim__vcheck_arrays(const char *fn, const char *name, size_t count, const void *const *a,
                                const size_t *n, size_t es, optim_error *err)
{
    size_t i;
    OPTIM__FAIL_IF(count > 0 && !a, err, OPTIM_ENULL, "%s: %s is NULL", fn, name);
    for (i = 0; i < count; i++) {
        /* n[i] * es must not wrap around (the overlap checks and the kernels' ends use it) */
        OPTIM__FAIL_IF(n[i] > (size_t)PTRDIFF_MAX / es, err, OPTIM_EINVAL,
                       "%s: n[%zu] = %zu elements of %zu bytes: more than an array can hold (PTRDIFF_MAX bytes)", fn,
                       i, n[i], es);
        OPTIM__FAIL_IF(!a[i] && n[i] > 0, err, OPTIM_ENULL, "%s: %s[%zu] is NULL but n[%zu] = %zu", fn, name, i, i,
                       n[i]);
        OPTIM__FAIL_IF(a[i] && (uintptr_t)a[i] % es != 0, err, OPTIM_EINVAL,
                       "%s: %s[%zu] at %p is not aligned to %zu bytes (its element size)", fn, name, i, a[i], es);
    }
    return OPTIM_OK;
}

/* One segment's bytes [lo, hi) and its index, for the overlap checks. */
typedef struct optim__span {
    uintptr_t lo, hi;
    size_t i;
} optim__span;

static int optim__span_cmp(const void *a, const void *b)
{
    const optim__span *x = (const optim__span *)a, *y = (const optim__span *)b;
    if (x->lo != y->lo) return x->lo < y->lo ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* A written operand w (segments of es bytes) must not overlap any segment of
 * w or r but its own segment of r when `same_ok` and the two are equal. In
 * O(count log count), not pair by pair (a model of 20000 parameter tensors
 * took seconds a call): w's segments sorted by address overlap iff two
 * neighbours do; then each segment of r is checked against the last of
 * them that starts before it ends (they are disjoint by then, so no earlier
 * one can reach it). */
static int optim__vcheck_writes(const char *fn, const char *wname, const char *rname, size_t count,
                                const void *const *w, const void *const *r, const size_t *n, size_t es,
                                int same_ok, optim_error *err)
{
    optim__span *s;
    size_t m = 0, i, k;
    if (count < 2 && !r) return OPTIM_OK;
    s = (optim__span *)malloc((count ? count : 1) * sizeof *s);
    OPTIM__FAIL_IF(!s, err, OPTIM_ENOMEM, "%s: out of memory for the overlap check of %zu segments", fn, count);
    for (i = 0; i < count; i++) {
        if (!n[i]) continue;
        s[m].lo = (uintptr_t)w[i];
        s[m].hi = s[m].lo + n[i] * es;
        s[m].i = i;
        m++;
    }
    qsort(s, m, sizeof *s, optim__span_cmp);
    for (k = 1; k < m; k++) {
        if (s[k].lo < s[k - 1].hi) {
            size_t a = s[k - 1].i < s[k].i ? s[k - 1].i : s[k].i, b = s[k - 1].i ^ s[k].i ^ a;
            free(s);
            return optim__fail(err, OPTIM_EOVERLAP, "%s: %s[%zu] overlaps %s[%zu]", fn, wname, a, wname, b);
        }
    }
    for (k = 0; r && k < count; k++) {
        uintptr_t lo = (uintptr_t)r[k], hi = lo + n[k] * es;
        size_t a = 0, b = m; /* the first span that starts at or after hi: s[b - 1] is the candidate */
        if (!n[k] || (same_ok && r[k] == w[k])) continue;
        while (a < b) {
            size_t mid = a + (b - a) / 2;
            if (s[mid].lo < hi) a = mid + 1;
            else b = mid;
        }
        if (b > 0 && s[b - 1].hi > lo) {
            i = s[b - 1].i;
            free(s);
            return optim__fail(err, OPTIM_EOVERLAP, "%s: %s[%zu] overlaps %s[%zu]%s", fn, wname, i, rname, k,
                               same_ok && k == i ? " (only the very same array may be both)" : "");
        }
    }
    free(s);
    return OPTIM_OK;
}

/* Lay out the tasks: p = y (written), g = x, s[0] = y (read, dot products). */
static int optim__vjob_init(optim__vjob *j, const char *fn, optim_dtype dtype, size_t count, const void *const *x,
                            const void *const *y, const size_t *n, int reduce, optim_error *err)
{
    size_t i;
    memset(j, 0, sizeof *j);
    j->ct = dtype == OPTIM_FLOAT64 ? OPTIM__CT_F64 : OPTIM__CT_F32;
    j->count = count;
    j->tasks = (optim__task *)calloc(count ? count : 1, sizeof *j->tasks);
    OPTIM__FAIL_IF(!j->tasks, err, OPTIM_ENOMEM, "%s: out of memory for %zu segments", fn, count);
    for (i = 0; i < count; i++) {
        optim__task *t = &j->tasks[i];
        if (x[i] && n[i] > SIZE_MAX - j->total) { /* the same array may be given many times: the total may wrap */
            optim__vjob_free(j);
            return optim__fail(err, OPTIM_EINVAL, "%s: n[%zu] = %zu brings the total past SIZE_MAX elements", fn, i,
                               n[i]);
        }
        t->g = x[i];
        t->p = y ? (void *)(uintptr_t)y[i] : NULL;
        t->s[0] = t->p;
        t->gtype = dtype;
        t->n = x[i] ? n[i] : 0;
        t->start = j->total;
        t->bstart = j->nblocks;
        t->align = 16;
        t->k = &j->k;
        j->total += t->n;
        j->nblocks += OPTIM__NBLOCKS(t->n);
    }
    if (reduce) {
        j->partials = (double *)malloc((j->nblocks ? j->nblocks : 1) * sizeof(double));
        j->bad = (unsigned char *)malloc(j->nblocks ? j->nblocks : 1);
        if (!j->partials || !j->bad) {
            optim__vjob_free(j);
            return optim__fail(err, OPTIM_ENOMEM, "%s: out of memory for %zu blocks", fn, j->nblocks);
        }
    }
    return OPTIM_OK;
}

static double optim__vjob_dot(const optim__kernels *kt, optim__vjob *j, int threads)
{
    double s = 0.0;
    size_t b;
    optim__vdot_run(kt, j->ct, j->tasks, j->count, j->nblocks, j->partials, threads);
    for (b = 0; b < j->nblocks; b++) s += j->partials[b];
    return s;
}

int optim__vec_dot_isa(optim_isa isa, optim_dtype dtype, size_t count, const void *const *x, const void *const *y,
                       const size_t *n, int threads, double *out, optim_error *err)
{
    const optim__kernels *kt = optim__kernels_get(isa);
    static const char fn[] = "optim_vec_dot";
    optim__vjob j;
    size_t es = dtype == OPTIM_FLOAT64 ? 8 : 4;
    OPTIM__FAIL_IF(!kt, err, OPTIM_EUNSUPPORTED, "%s: the CPU path %d is not available", fn, (int)isa);
    OPTIM__FAIL_IF(!out, err, OPTIM_ENULL, "%s: out is NULL", fn);
    OPTIM__FORWARD(optim__vcheck_dtype(fn, dtype, threads, err));
    OPTIM__FAIL_IF(count > 0 && !n, err, OPTIM_ENULL, "%s: n is NULL", fn);
    OPTIM__FORWARD(optim__vcheck_arrays(fn, "x", count, x, n, es, err));
    OPTIM__FORWARD(optim__vcheck_arrays(fn, "y", count, y, n, es, err));
    OPTIM__FORWARD(optim__vjob_init(&j, fn, dtype, count, x, y, n, 1, err));
    *out = optim__vjob_dot(kt, &j, threads);
    optim__vjob_free(&j);
    return optim__ok(err);
}

static int optim__vec_elementwise(optim_isa isa, const char *fn, optim__range_fn pass, int same_ok,
                                  optim_dtype dtype, size_t count, double a, const void *const *x, void *const *y, const size_t *n, int threads,
                                  optim_error *err)
{
    const optim__kernels *kt = optim__kernels_get(isa);
    optim__vjob j;
    size_t es = dtype == OPTIM_FLOAT64 ? 8 : 4;
    OPTIM__FAIL_IF(!kt, err, OPTIM_EUNSUPPORTED, "%s: the CPU path %d is not available", fn, (int)isa);
    OPTIM__FORWARD(optim__vcheck_dtype(fn, dtype, threads, err));
    OPTIM__FAIL_IF(count > 0 && !n, err, OPTIM_ENULL, "%s: n is NULL", fn);
    OPTIM__FORWARD(optim__vcheck_arrays(fn, "x", count, x, n, es, err));
    OPTIM__FORWARD(optim__vcheck_arrays(fn, "y", count, (const void *const *)y, n, es, err));
    OPTIM__FORWARD(optim__vcheck_writes(fn, "y", "x", count, (const void *const *)y, x, n, es, same_ok, err));
    OPTIM__FORWARD(optim__vjob_init(&j, fn, dtype, count, x, (const void *const *)y, n, 0, err));
    j.k.a = a;
    j.k.ct = j.ct;
    optim__run(kt, pass, j.tasks, j.count, j.total, threads);
    optim__vjob_free(&j);
    return optim__ok(err);
}

int optim__vec_axpy_isa(optim_isa isa, optim_dtype dtype, size_t count, double a, const void *const *x,
                        void *const *y, const size_t *n, int threads, optim_error *err)
{
    return optim__vec_elementwise(isa, "optim_vec_axpy", optim__range_vaxpy, 0, dtype, count, a, x, y, n, threads,
                                  err);
}

int optim__vec_scale_isa(optim_isa isa, optim_dtype dtype, size_t count, double a, const void *const *x,
                         void *const *y, const size_t *n, int threads, optim_error *err)
{
    return optim__vec_elementwise(isa, "optim_vec_scale", optim__range_vscale, 1, dtype, count, a, x, y, n, threads,
                                  err);
}

int optim__vec_norm_isa(optim_isa isa, optim_dtype dtype, size_t count, const void *const *x, const size_t *n,
                        double norm_type, int threads, double *out, optim_error *err)
{
    static const char fn[] = "optim_vec_norm";
    const optim__kernels *kt = optim__kernels_get(isa);
    optim__vjob j;
    optim__norm kind;
    size_t es = dtype == OPTIM_FLOAT64 ? 8 : 4;
    OPTIM__FAIL_IF(!kt, err, OPTIM_EUNSUPPORTED, "%s: the CPU path %d is not available", fn, (int)isa);
    OPTIM__FAIL_IF(!out, err, OPTIM_ENULL, "%s: out is NULL", fn);
    OPTIM__FORWARD(optim__vcheck_dtype(fn, dtype, threads, err));
    OPTIM__FAIL_IF(!(norm_type > 0), err, OPTIM_EINVAL,
                   "%s: norm_type = %.10g must be > 0 or INFINITY (orders 0 and below are not norms)", fn, norm_type);
    OPTIM__FAIL_IF(count > 0 && !n, err, OPTIM_ENULL, "%s: n is NULL", fn);
    OPTIM__FORWARD(optim__vcheck_arrays(fn, "x", count, x, n, es, err));
    OPTIM__FORWARD(optim__vjob_init(&j, fn, dtype, count, x, NULL, n, 1, err));
    kind = optim__norm_kind(norm_type);
    optim__reduce_run(kt, j.tasks, j.count, j.nblocks, kind, norm_type, j.partials,
                      j.bad, threads);
    *out = optim__norm_finish(j.partials, j.nblocks, kind, norm_type);
    optim__vjob_free(&j);
    return optim__ok(err);
}

/* ---- L-BFGS's two-loop recursion ------------------------------------------------ */

/* v rounded to the element type (torch's 0-dim tensors hold it so), and a
 * product and a difference in the element type (float arithmetic for
 * float32: one rounding, as torch's 0-dim float32 tensors). */
static double optim__vround(optim__ctype ct, double v)
{
    return ct == OPTIM__CT_F64 ? v : (double)(float)v;
}

static double optim__vmul(optim__ctype ct, double a, double b)
{
    return ct == OPTIM__CT_F64 ? a * b : (double)((float)a * (float)b);
}

static double optim__vsub(optim__ctype ct, double a, double b)
{
    return ct == OPTIM__CT_F64 ? a - b : (double)((float)a - (float)b);
}

int optim__lbfgs_direction_isa(optim_isa isa, optim_dtype dtype, size_t n, size_t m, const void *const *dirs,
                               const void *const *stps, const double *ro, double h_diag, const void *g, void *d,
                               double *al, int threads, optim_error *err)
{
    static const char fn[] = "optim_lbfgs_direction";
    const optim__kernels *kt = optim__kernels_get(isa);
    size_t es = dtype == OPTIM_FLOAT64 ? 8 : 4, j;
    const void *one[1];
    optim__vjob job;
    OPTIM__FAIL_IF(!kt, err, OPTIM_EUNSUPPORTED, "%s: the CPU path %d is not available", fn, (int)isa);
    OPTIM__FORWARD(optim__vcheck_dtype(fn, dtype, threads, err));
    OPTIM__FAIL_IF(m > 0 && (!dirs || !stps || !ro || !al), err, OPTIM_ENULL, "%s: %s is NULL (m = %zu)", fn,
                   !dirs ? "dirs" : !stps ? "stps" : !ro ? "ro" : "al", m);
    OPTIM__FAIL_IF(n > 0 && (!g || !d), err, OPTIM_ENULL, "%s: %s is NULL (n = %zu)", fn, !g ? "g" : "d", n);
    OPTIM__FAIL_IF(n > (size_t)PTRDIFF_MAX / es, err, OPTIM_EINVAL,
                   "%s: n = %zu elements of %zu bytes: more than an array can hold (PTRDIFF_MAX bytes)", fn, n, es);
    if (n == 0) {
        for (j = 0; j < m; j++) al[j] = 0.0; /* every dot product of no elements is 0 */
        return optim__ok(err);
    }
    one[0] = g;
    OPTIM__FORWARD(optim__vcheck_arrays(fn, "g", 1, one, &n, es, err));
    one[0] = d;
    OPTIM__FORWARD(optim__vcheck_arrays(fn, "d", 1, one, &n, es, err));
    OPTIM__FAIL_IF(optim__overlap_bytes(d, n * es, g, n * es), err, OPTIM_EOVERLAP, "%s: d overlaps g", fn);
    for (j = 0; j < m; j++) {
        OPTIM__FAIL_IF(!dirs[j] || !stps[j], err, OPTIM_ENULL, "%s: %s[%zu] is NULL", fn, !dirs[j] ? "dirs" : "stps",
                       j);
        OPTIM__FAIL_IF((uintptr_t)dirs[j] % es || (uintptr_t)stps[j] % es, err, OPTIM_EINVAL,
                       "%s: %s[%zu] at %p is not aligned to %zu bytes (its element size)", fn,
                       (uintptr_t)dirs[j] % es ? "dirs" : "stps", j,
                       (uintptr_t)dirs[j] % es ? dirs[j] : stps[j], es);
        OPTIM__FAIL_IF(optim__overlap_bytes(d, n * es, dirs[j], n * es), err, OPTIM_EOVERLAP,
                       "%s: d overlaps dirs[%zu]", fn, j);
        OPTIM__FAIL_IF(optim__overlap_bytes(d, n * es, stps[j], n * es), err, OPTIM_EOVERLAP,
                       "%s: d overlaps stps[%zu]", fn, j);
    }
    /* One task over n elements, re-aimed for each operation (g: x, p/s[0]: d). */
    OPTIM__FORWARD(optim__vjob_init(&job, fn, dtype, 1, &g, (const void *const *)&d, &n, 1, err));
    job.k.ct = job.ct;
    /* q = -g, kept in d */
    job.k.a = -1.0;
    optim__run(kt, optim__range_vscale, job.tasks, 1, job.total, threads);
    for (j = m; j-- > 0;) {
        job.tasks[0].g = stps[j]; /* s_j . q */
        al[j] = optim__vmul(job.ct, optim__vround(job.ct, optim__vjob_dot(kt, &job, threads)), ro[j]);
        job.tasks[0].g = dirs[j]; /* q += -al[j] y_j */
        job.k.a = -al[j];
        optim__run(kt, optim__range_vaxpy, job.tasks, 1, job.total, threads);
    }
    /* d = h_diag q */
    job.tasks[0].g = d;
    job.k.a = h_diag;
    optim__run(kt, optim__range_vscale, job.tasks, 1, job.total, threads);
    for (j = 0; j < m; j++) {
        double be;
        job.tasks[0].g = dirs[j]; /* y_j . d */
        be = optim__vmul(job.ct, optim__vround(job.ct, optim__vjob_dot(kt, &job, threads)), ro[j]);
        job.tasks[0].g = stps[j]; /* d += (al[j] - be) s_j */
        job.k.a = optim__vsub(job.ct, al[j], be);
        optim__run(kt, optim__range_vaxpy, job.tasks, 1, job.total, threads);
    }
    optim__vjob_free(&job);
    return optim__ok(err);
}

/* ---- The public functions: the default path ------------------------------------- */

int optim_vec_dot(optim_dtype dtype, size_t count, const void *const *x, const void *const *y, const size_t *n,
                  int threads, double *out, optim_error *err)
{
    return optim__vec_dot_isa(OPTIM_ISA_AUTO, dtype, count, x, y, n, threads, out, err);
}

int optim_vec_axpy(optim_dtype dtype, size_t count, double a, const void *const *x, void *const *y, const size_t *n,
                   int threads, optim_error *err)
{
    return optim__vec_axpy_isa(OPTIM_ISA_AUTO, dtype, count, a, x, y, n, threads, err);
}

int optim_vec_scale(optim_dtype dtype, size_t count, double a, const void *const *x, void *const *y, const size_t *n,
                    int threads, optim_error *err)
{
    return optim__vec_scale_isa(OPTIM_ISA_AUTO, dtype, count, a, x, y, n, threads, err);
}

int optim_vec_norm(optim_dtype dtype, size_t count, const void *const *x, const size_t *n, double norm_type,
                   int threads, double *out, optim_error *err)
{
    return optim__vec_norm_isa(OPTIM_ISA_AUTO, dtype, count, x, n, norm_type, threads, out, err);
}

int optim_lbfgs_direction(optim_dtype dtype, size_t n, size_t m, const void *const *dirs, const void *const *stps,
                          const double *ro, double h_diag, const void *g, void *d, double *al, int threads,
                          optim_error *err)
{
    return optim__lbfgs_direction_isa(OPTIM_ISA_AUTO, dtype, n, m, dirs, stps, ro, h_diag, g, d, al, threads, err);
}
