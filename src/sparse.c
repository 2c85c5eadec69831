/* sparse.c: steps with sparse (row-indexed) gradients (optim_sparse.h): the
 * checks of every descriptor before anything changes, then the ordinary step
 * (src/step.c), whose tasks for those parameters run over the rows present
 * only (src/kernels/streams.c, optim__update_rows). */
#include "optim_internal.h"

#include <string.h>

#define OPTIM__E(o) (&(o)->err)

optim_sparse_support optim_rule_sparse(optim_rule rule)
{
    const optim__rule_def *r = optim__rule(rule);
    if (!r || !r->sparse) return OPTIM_SPARSE_NO;
    return r->sparse_only ? OPTIM_SPARSE_ONLY : OPTIM_SPARSE_YES;
}

/* Do [a, a + an) and [b, b + bn) share a byte? */
static int optim__bytes_overlap(const void *a, size_t an, const void *b, size_t bn)
{
    const uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return an > 0 && bn > 0 && x < y + bn && y < x + an;
}

/* Check the sparse gradient sg of parameter i, whose memory will be p. */
static int optim__sparse_check(optim *o, const char *fn, size_t i, const optim__ptrs *x, const optim_sparse_grad *sg)
{
    const optim__param *pa = &o->params[i];
    const optim__rule_def *r = optim__rule(o->rule);
    const size_t size = optim_dtype_size(pa->gdt);
    size_t nrow_total, k, j;
    OPTIM__FAIL_IF(optim__ptrs_g(x, i) != NULL, OPTIM__E(o), OPTIM_EINVAL,
                   "%s: param %zu '%s' has both a dense gradient (grads[%zu]) and a sparse one (sparse[%zu])", fn, i,
                   pa->name, i, i);
    OPTIM__FAIL_IF(!r->sparse, OPTIM__E(o), OPTIM_EUNSUPPORTED,
                   "%s: param %zu '%s' has a sparse gradient, and %s does not support sparse gradients (sgd, adagrad "
                   "and sparse_adam do); nothing changed",
                   fn, i, pa->name, r->name);
    {
        optim_error e;
        e.code = OPTIM_OK;
        e.message[0] = '\0';
        if (r->sparse(&o->groups[pa->group].hp, &e) != OPTIM_OK)
            return optim__fail(OPTIM__E(o), e.code, "%s: param %zu '%s' (group %zu): %s; nothing changed", fn, i,
                               pa->name, pa->group, e.message);
    }
    OPTIM__FAIL_IF(pa->master || (pa->flags & OPTIM_PARAM_STOCHASTIC_ROUNDING) || pa->gdt != pa->pdt ||
                       pa->sdt != pa->pdt || (pa->pdt != OPTIM_FLOAT32 && pa->pdt != OPTIM_FLOAT64),
                   OPTIM__E(o), OPTIM_EUNSUPPORTED,
                   "%s: param %zu '%s' (%s, %s gradients, %s state%s%s): sparse gradients are stepped for float32 or "
                   "float64 parameters with gradients and state of their type only",
                   fn, i, pa->name, optim_dtype_name(pa->pdt), optim_dtype_name(pa->gdt), optim_dtype_name(pa->sdt),
                   pa->master ? ", an fp32 master" : "",
                   (pa->flags & OPTIM_PARAM_STOCHASTIC_ROUNDING) ? ", stochastic rounding" : "");
    OPTIM__FAIL_IF(sg->row_len == 0, OPTIM__E(o), OPTIM_EINVAL, "%s: sparse[%zu] (param '%s'): row_len = 0", fn, i,
                   pa->name);
    OPTIM__FAIL_IF(pa->n % sg->row_len != 0, OPTIM__E(o), OPTIM_EINVAL,
                   "%s: sparse[%zu] (param '%s'): row_len = %zu does not divide its %zu elements", fn, i, pa->name,
                   sg->row_len, pa->n);
    nrow_total = pa->n / sg->row_len;
    /* Strictly increasing rows are at most nrow_total; SGD's repeated rows may be more (an uncoalesced
     * gradient), but never more entries than memory can hold (the byte counts below stay exact). */
    OPTIM__FAIL_IF(!r->sparse_in_order && sg->nrows > nrow_total, OPTIM__E(o), OPTIM_EINVAL,
                   "%s: sparse[%zu] (param '%s'): nrows = %zu, more than its %zu rows of %zu", fn, i, pa->name,
                   sg->nrows, nrow_total, sg->row_len);
    /* SGD's repeated rows may be more than nrow_total (an uncoalesced gradient), never more than a size_t
     * counts in bytes (the byte counts below stay exact). */
    OPTIM__FAIL_IF(sg->nrows > SIZE_MAX / sizeof(int64_t) || sg->nrows > SIZE_MAX / size / sg->row_len,
                   OPTIM__E(o), OPTIM_EINVAL, "%s: sparse[%zu] (param '%s'): nrows = %zu rows of %zu elements: "
                   "their size overflows size_t", fn, i, pa->name, sg->nrows, sg->row_len);
    if (sg->nrows == 0) return OPTIM_OK;
    OPTIM__FAIL_IF(!sg->rows || !sg->values, OPTIM__E(o), OPTIM_ENULL, "%s: sparse[%zu] (param '%s'): %s is NULL with "
                   "nrows = %zu", fn, i, pa->name, !sg->rows ? "rows" : "values", sg->nrows);
    OPTIM__FAIL_IF((uintptr_t)sg->rows % _Alignof(int64_t) != 0, OPTIM__E(o), OPTIM_EINVAL,
                   "%s: sparse[%zu] (param '%s'): rows %p is not aligned to 8 bytes", fn, i, pa->name,
                   (const void *)sg->rows);
    OPTIM__FORWARD(optim__check_align(o, fn, "sparse values", sg->values, pa->gdt, i, pa->name));
    for (k = 0; k < sg->nrows; k++) {
        const int64_t row = sg->rows[k];
        OPTIM__FAIL_IF(row < 0 || (uint64_t)row >= (uint64_t)nrow_total, OPTIM__E(o), OPTIM_EINVAL,
                       "%s: sparse[%zu] (param '%s'): rows[%zu] = %lld is out of range [0, %zu)", fn, i, pa->name, k,
                       (long long)row, nrow_total);
        OPTIM__FAIL_IF(k > 0 && (row < sg->rows[k - 1] || (row == sg->rows[k - 1] && !r->sparse_in_order)),
                       OPTIM__E(o), OPTIM_EINVAL,
                       "%s: sparse[%zu] (param '%s'): rows[%zu] = %lld is not above rows[%zu] = %lld (rows must be "
                       "%s: coalesce the gradient)",
                       fn, i, pa->name, k, (long long)row, k - 1, (long long)sg->rows[k - 1],
                       r->sparse_in_order ? "in non-decreasing order for sgd" : "strictly increasing");
    }
    /* What the step reads must not be memory it writes. */
    for (j = 0; j < o->nparams; j++) {
        const void *p = optim__ptrs_p(x, j);
        const size_t pbytes = OPTIM__BYTES(o->params[j].n, o->params[j].pdt);
        OPTIM__FAIL_IF(optim__bytes_overlap(sg->values, sg->nrows * sg->row_len * size, p, pbytes) ||
                           optim__bytes_overlap(sg->rows, sg->nrows * sizeof(int64_t), p, pbytes),
                       OPTIM__E(o), OPTIM_EOVERLAP, "%s: the sparse %s of param %zu '%s' overlaps the memory of param "
                       "%zu '%s'", fn, optim__bytes_overlap(sg->values, sg->nrows * sg->row_len * size, p, pbytes)
                                           ? "values" : "rows", i, pa->name, j, o->params[j].name);
    }
    return OPTIM_OK;
}

int optim_step_sparse(optim *o, size_t count, void *const *params, const void *const *grads,
                      const optim_sparse_grad *const *sparse)
{
    static const char fn[] = "optim_step_sparse";
    optim__ptrs x = {params, grads, NULL, NULL, 0};
    size_t i;
    int rc;
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__sam_guard(o, fn));
    OPTIM__FAIL_IF(count != o->nparams, OPTIM__E(o), OPTIM_ESIZE, "%s: count = %zu but the optimizer has %zu params",
                   fn, count, o->nparams);
    OPTIM__FAIL_IF(count > 0 && (!params || !grads), OPTIM__E(o), OPTIM_ENULL, "%s: %s is NULL", fn,
                   !params ? "params" : "grads");
    if (sparse)
        for (i = 0; i < count; i++)
            if (sparse[i]) OPTIM__FORWARD(optim__sparse_check(o, fn, i, &x, sparse[i]));
    OPTIM__FORWARD(optim__rebind(o, fn, count, &x));
    o->sparse = sparse;
    rc = optim__step(o);
    o->sparse = NULL;
    return rc;
}
