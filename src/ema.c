/* ema.c: the EMA of the weights (include/optim_ema.h): its settings, its
 * memory, its part in a step (the constants and the tasks' EMA stream
 * before the update pass; the parameters that pass did not cover after it)
 * and the swap for evaluation. The loops are in src/kernels/kernels_ema.h,
 * their passes in src/kernels/ema_run.c. */
#include "optim_internal.h"
#include "optim_ema.h"

#include <math.h>
#include <string.h>

#define OPTIM__E(o) (&(o)->err)
#define OPTIM__EC(o) (&((optim *)(uintptr_t)(o))->err)

static int optim__ema_sf(optim_rule r)
{
    return r == OPTIM_SGD_SCHEDULE_FREE || r == OPTIM_ADAMW_SCHEDULE_FREE;
}

/* Bytes of one element of parameter pa's average: its compute type's. */
static size_t optim__ema_esize(const optim__param *pa)
{
    return pa->ct == OPTIM__CT_F64 ? sizeof(double) : sizeof(float);
}

/* Does pa need a stash for the swap (a 16-bit parameter, or a master's 16-bit copy)? */
static int optim__ema_needs_stash(const optim__param *pa)
{
    return pa->pdt == OPTIM_BFLOAT16 || pa->pdt == OPTIM_FLOAT16;
}

void optim__ema_free(optim__param *pa)
{
    optim__free_floats((float *)pa->ema);
    optim__free_floats((float *)pa->ema_stash);
    pa->ema = NULL;
    pa->ema_stash = NULL;
}

/* The average as the parameter is now: its master, or its value widened exactly (0 without memory). */
static void optim__ema_init(const optim *o, optim__param *pa)
{
    const size_t es = optim__ema_esize(pa);
    if (pa->n == 0) return;
    if (pa->master)
        memcpy(pa->ema, pa->master, pa->n * sizeof(float));
    else if (!pa->p)
        memset(pa->ema, 0, pa->n * es);
    else if (pa->pdt == OPTIM_FLOAT32 || pa->pdt == OPTIM_FLOAT64)
        memcpy(pa->ema, pa->p, pa->n * es);
    else
        o->kt->storage[pa->pdt][OPTIM__CT_F32]->load(pa->ema, pa->p, 0, pa->n, NULL);
}

int optim__ema_alloc(optim *o, const char *fn, optim__param *pa)
{
    pa->ema = optim__alloc_elems(pa->n ? pa->n : 1, optim__ema_esize(pa));
    pa->ema_stash = optim__ema_needs_stash(pa) ? optim__alloc_elems(pa->n ? pa->n : 1, 2) : NULL;
    if (!pa->ema || (optim__ema_needs_stash(pa) && !pa->ema_stash)) {
        optim__ema_free(pa);
        return optim__fail(OPTIM__E(o), OPTIM_ENOMEM, "%s: out of memory for the EMA of %zu elements of '%s'", fn,
                           pa->n, pa->name ? pa->name : "param");
    }
    optim__ema_init(o, pa);
    return OPTIM_OK;
}

int optim_set_ema(optim *o, double decay, int warmup)
{
    size_t i;
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(!(decay >= 0.0 && decay < 1.0), OPTIM__E(o), OPTIM_EINVAL,
                   "optim_set_ema: decay = %.10g must be in [0, 1)", decay);
    OPTIM__FAIL_IF(warmup != 0 && warmup != 1, OPTIM__E(o), OPTIM_EINVAL,
                   "optim_set_ema: warmup = %d must be 0 or 1", warmup);
    OPTIM__FAIL_IF(optim__ema_sf(o->rule), OPTIM__E(o), OPTIM_EUNSUPPORTED,
                   "optim_set_ema: %s averages its iterates already (optim_schedule_free_eval puts the average x "
                   "in the parameters); an EMA of its y is not supported",
                   optim_rule_name(o->rule));
    OPTIM__FAIL_IF(o->ema_swapped, OPTIM__E(o), OPTIM_ESTATE,
                   "optim_set_ema: the parameters hold the EMA (optim_ema_swap); swap back first");
    OPTIM__FORWARD(optim__sam_guard(o, "optim_set_ema"));
    if (!o->ema_on) {
        for (i = 0; i < o->nparams; i++) {
            if (o->params[i].ema) {
                optim__ema_init(o, &o->params[i]);
                continue;
            }
            if (optim__ema_alloc(o, "optim_set_ema", &o->params[i]) != OPTIM_OK) {
                const int rc = o->err.code;
                size_t j;
                for (j = 0; j < i; j++) optim__ema_free(&o->params[j]);
                return rc;
            }
        }
        for (i = 0; i < o->nparams; i++) o->params[i].ema_start = 0;
        o->ema_count = 0;
        o->ema_on = 1;
    }
    o->ema_decay = decay;
    o->ema_warmup = warmup;
    return optim__ok(OPTIM__E(o));
}

int optim_ema_off(optim *o)
{
    size_t i;
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(o->ema_swapped, OPTIM__E(o), OPTIM_ESTATE,
                   "optim_ema_off: the parameters hold the EMA (optim_ema_swap); swap back first");
    for (i = 0; i < o->nparams; i++) optim__ema_free(&o->params[i]);
    o->ema_on = 0;
    o->ema_decay = 0.0;
    o->ema_warmup = 0;
    o->ema_count = 0;
    return optim__ok(OPTIM__E(o));
}

int optim_get_ema(const optim *o, int *on, double *decay, int *warmup, int64_t *count, int *swapped)
{
    if (!o) return OPTIM_ENULL;
    if (on) *on = o->ema_on;
    if (decay) *decay = o->ema_on ? o->ema_decay : 0.0;
    if (warmup) *warmup = o->ema_on ? o->ema_warmup : 0;
    if (count) *count = o->ema_on ? o->ema_count : 0;
    if (swapped) *swapped = o->ema_swapped;
    return optim__ok(OPTIM__EC(o));
}

int optim_ema_set_count(optim *o, int64_t count)
{
    size_t i;
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(!o->ema_on, OPTIM__E(o), OPTIM_ESTATE, "optim_ema_set_count: the EMA is off (optim_set_ema)");
    OPTIM__FAIL_IF(count < 0, OPTIM__E(o), OPTIM_EINVAL, "optim_ema_set_count: count = %lld must be >= 0",
                   (long long)count);
    for (i = 0; i < o->nparams; i++) o->params[i].ema_start = 0;
    o->ema_count = count;
    return optim__ok(OPTIM__E(o));
}

int optim_ema_param_count(const optim *o, size_t i, int64_t *count)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(!count, OPTIM__EC(o), OPTIM_ENULL, "optim_ema_param_count: count is NULL");
    OPTIM__FAIL_IF(!o->ema_on, OPTIM__EC(o), OPTIM_ESTATE, "optim_ema_param_count: the EMA is off (optim_set_ema)");
    OPTIM__FAIL_IF(i >= o->nparams, OPTIM__EC(o), OPTIM_ERANGE, "optim_ema_param_count: param %zu does not exist "
                   "(%zu params)", i, o->nparams);
    *count = o->ema_count - o->params[i].ema_start;
    return optim__ok(OPTIM__EC(o));
}

int optim_ema_set_param_count(optim *o, size_t i, int64_t count)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(!o->ema_on, OPTIM__E(o), OPTIM_ESTATE, "optim_ema_set_param_count: the EMA is off (optim_set_ema)");
    OPTIM__FAIL_IF(i >= o->nparams, OPTIM__E(o), OPTIM_ERANGE, "optim_ema_set_param_count: param %zu does not exist "
                   "(%zu params)", i, o->nparams);
    OPTIM__FAIL_IF(count < 0 || count > o->ema_count, OPTIM__E(o), OPTIM_EINVAL,
                   "optim_ema_set_param_count: count = %lld for param %zu '%s' must be in [0, %lld] (the "
                   "optimizer's count, optim_ema_set_count)",
                   (long long)count, i, o->params[i].name ? o->params[i].name : "param", (long long)o->ema_count);
    o->params[i].ema_start = o->ema_count - count;
    return optim__ok(OPTIM__E(o));
}

static int optim__ema_check_param(optim *o, const char *fn, size_t i)
{
    OPTIM__FAIL_IF(!o->ema_on, OPTIM__E(o), OPTIM_ESTATE, "%s: the EMA is off (optim_set_ema)", fn);
    OPTIM__FAIL_IF(o->ema_swapped, OPTIM__E(o), OPTIM_ESTATE,
                   "%s: the parameters hold the EMA (optim_ema_swap); swap back first", fn);
    OPTIM__FAIL_IF(i >= o->nparams, OPTIM__E(o), OPTIM_ERANGE, "%s: param %zu does not exist (%zu params)", fn, i,
                   o->nparams);
    return OPTIM_OK;
}

int optim_ema_read(optim *o, size_t i, void *dst, optim_dtype *dtype)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__ema_check_param(o, "optim_ema_read", i));
    if (dtype) *dtype = o->params[i].ct == OPTIM__CT_F64 ? OPTIM_FLOAT64 : OPTIM_FLOAT32;
    if (dst && o->params[i].n) memcpy(dst, o->params[i].ema, o->params[i].n * optim__ema_esize(&o->params[i]));
    return optim__ok(OPTIM__E(o));
}

int optim_ema_write(optim *o, size_t i, const void *src)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__ema_check_param(o, "optim_ema_write", i));
    OPTIM__FAIL_IF(!src && o->params[i].n, OPTIM__E(o), OPTIM_ENULL, "optim_ema_write: src is NULL");
    if (o->params[i].n) memcpy(o->params[i].ema, src, o->params[i].n * optim__ema_esize(&o->params[i]));
    return optim__ok(OPTIM__E(o));
}

/* ---- In a step ------------------------------------------------------------------------ */

void optim__ema_begin(optim *o)
{
    size_t i;
    if (!o->ema_on) return;
    for (i = 0; i < o->nparams; i++) {
        optim__param *pa = &o->params[i];
        optim__task *t = &o->tasks[i];
        const int covered = optim__has_grad(o, i) && !(o->sparse && o->sparse[i]) && t->n > 0;
        /* n: this parameter's averages before this one (the first copies it). */
        const int64_t n = o->ema_count - pa->ema_start;
        double d = o->ema_decay;
        if (o->ema_warmup) {
            const double w = (1.0 + (double)n) / (10.0 + (double)n);
            d = w < d ? w : d;
        }
        pa->ema_k.d = d;
        pa->ema_k.omd = 1.0 - d;
        pa->ema_k.copy = n == 0;
        t->ema = covered ? pa->ema : NULL;
        t->ek = &pa->ema_k;
    }
}

/* Parameter i's task for an EMA pass of its whole memory (the average alone, or the swap). */
static void optim__ema_task(optim *o, size_t i, optim__task *t, size_t start)
{
    const optim__param *pa = &o->params[i];
    memset(t, 0, sizeof *t);
    t->start = start;
    t->n = pa->p || pa->master ? pa->n : 0;
    t->align = 16;
    t->p = pa->master ? (void *)pa->master : pa->p;
    t->ema = pa->ema;
    t->ek = &pa->ema_k;
    /* Plain descriptors (rounded to nearest even): the swap's stores are not a step's. */
    t->sto[OPTIM__SP] = pa->master ? o->kt->storage[OPTIM_FLOAT32][OPTIM__CT_F32] : o->kt->storage[pa->pdt][pa->ct];
    if (pa->master) {
        t->copy = pa->p;
        t->sto[OPTIM__SC] = o->kt->storage[pa->pdt][OPTIM__CT_F32];
    }
    t->s[0] = pa->ema_stash;
}

void optim__ema_end(optim *o)
{
    size_t i, total = 0;
    if (!o->ema_on) return;
    /* The parameters the update pass did not average (no gradient this step, a sparse one): their whole memory. */
    for (i = 0; i < o->nparams; i++) {
        optim__task *t = &o->tasks[i];
        const int covered = optim__has_grad(o, i) && !(o->sparse && o->sparse[i]) && t->n > 0;
        optim__ema_task(o, i, t, total);
        if (covered) t->n = 0;
        total += t->n;
    }
    if (total) optim__run(o->kt, optim__range_ema, o->tasks, o->nparams, total, o->threads);
    if (o->ema_count < INT64_MAX) o->ema_count++;
}

/* ---- The swap ----------------------------------------------------------------------------- */

int optim_ema_swap(optim *o)
{
    size_t i, total = 0;
    int in;
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(!o->ema_on, OPTIM__E(o), OPTIM_ESTATE, "optim_ema_swap: the EMA is off (optim_set_ema)");
    OPTIM__FORWARD(optim__sam_guard(o, "optim_ema_swap"));
    in = !o->ema_swapped;
    for (i = 0; i < o->nparams; i++) {
        optim__task *t = &o->tasks[i];
        optim__ema_task(o, i, t, total);
        t->k = &in;
        total += t->n;
    }
    if (total) optim__run(o->kt, optim__range_ema_swap, o->tasks, o->nparams, total, o->threads);
    o->ema_swapped = in;
    return optim__ok(OPTIM__E(o));
}
