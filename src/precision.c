/* precision.c: the optimizer's reduced-precision options (optim_precision.h):
 * fp32 master weights, stochastic rounding's seed and keys, and loss scaling
 * (torch.cuda.amp.GradScaler's update, fused into the step). The element
 * conversions themselves are storage descriptors in src/kernels/. */
#include "optim_internal.h"

#include <math.h>
#include <string.h>

#define OPTIM__E(o) (&(o)->err)
#define OPTIM__EC(o) (&((optim *)(o))->err) /* getters report in the handle, as optim.c's */

/* ---- Master weights and stochastic rounding ---------------------------------- */

void optim__master_sync(const optim *o, optim__param *pa)
{
    /* Widened exactly by the path's own descriptor of the parameter's type. */
    if (pa->n > 0 && pa->p) o->kt->storage[pa->pdt][OPTIM__CT_F32]->load(pa->master, pa->p, 0, pa->n, NULL);
}

void optim__param_task(const optim *o, size_t i, optim__task *t)
{
    const optim__param *pa = &o->params[i];
    if (pa->master) t->p = pa->master;
    /* Cannot fail: optim_add_param and optim_set_isa checked it against the path. */
    (void)optim__task_prec(o->kt, t, pa->pdt, pa->sdt, pa->flags, pa->p);
}

static int optim__check_index(const optim *o, const char *fn, size_t i)
{
    OPTIM__FAIL_IF(i >= o->nparams, OPTIM__EC(o), OPTIM_ERANGE, "%s: param %zu does not exist (%zu params)", fn, i,
                   o->nparams);
    return OPTIM_OK;
}

int optim_param_get_flags(const optim *o, size_t i, unsigned *flags)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(!flags, OPTIM__EC(o), OPTIM_ENULL, "optim_param_get_flags: flags is NULL");
    OPTIM__FORWARD(optim__check_index(o, "optim_param_get_flags", i));
    *flags = o->params[i].flags;
    return optim__ok(OPTIM__EC(o));
}

static int optim__check_master(optim *o, const char *fn, size_t i)
{
    OPTIM__FORWARD(optim__check_index(o, fn, i));
    OPTIM__FAIL_IF(!o->params[i].master, OPTIM__E(o), OPTIM_EINVAL,
                   "%s: param %zu '%s' (%s) has no master copy (add it with OPTIM_PARAM_MASTER)", fn, i,
                   o->params[i].name, optim_dtype_name(o->params[i].pdt));
    return OPTIM_OK;
}

int optim_param_master_data(optim *o, size_t i, float **master)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(!master, OPTIM__E(o), OPTIM_ENULL, "optim_param_master_data: master is NULL");
    OPTIM__FORWARD(optim__check_master(o, "optim_param_master_data", i));
    *master = o->params[i].master;
    return optim__ok(OPTIM__E(o));
}

int optim_param_master_sync(optim *o, size_t i)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__sam_guard(o, "optim_param_master_sync"));
    OPTIM__FORWARD(optim__check_master(o, "optim_param_master_sync", i));
    optim__master_sync(o, &o->params[i]);
    return optim__ok(OPTIM__E(o));
}

int optim_set_seed(optim *o, uint64_t seed)
{
    if (!o) return OPTIM_ENULL;
    o->seed = seed;
    return optim__ok(OPTIM__E(o));
}

uint64_t optim_get_seed(const optim *o)
{
    return o ? o->seed : 0;
}

/* ---- Loss scaling ----------------------------------------------------------------- */

void optim_loss_scale_defaults(optim_loss_scale *ls)
{
    if (!ls) return;
    ls->mode = OPTIM_LOSS_SCALE_DYNAMIC;
    ls->init_scale = 65536.0;
    ls->growth_factor = 2.0;
    ls->backoff_factor = 0.5;
    ls->growth_interval = 2000;
}

/* A scale as torch keeps it: a float32 value (torch.full((1,), init_scale, dtype=float32)). */
static double optim__f32(double x)
{
    return (double)(float)x;
}

static int optim__ls_check(optim *o, const char *fn, const optim_loss_scale *ls)
{
    OPTIM__FAIL_IF(ls->mode != OPTIM_LOSS_SCALE_OFF && ls->mode != OPTIM_LOSS_SCALE_STATIC &&
                       ls->mode != OPTIM_LOSS_SCALE_DYNAMIC,
                   OPTIM__E(o), OPTIM_EINVAL, "%s: mode = %d is not a loss scale mode (0 off, 1 static, 2 dynamic)", fn,
                   (int)ls->mode);
    if (ls->mode == OPTIM_LOSS_SCALE_OFF) return OPTIM_OK;
    OPTIM__FAIL_IF(!(ls->init_scale > 0) || !isfinite(optim__f32(ls->init_scale)) || optim__f32(ls->init_scale) == 0,
                   OPTIM__E(o), OPTIM_EINVAL,
                   "%s: init_scale = %.10g must be > 0 and finite as a float32", fn, ls->init_scale);
    if (ls->mode != OPTIM_LOSS_SCALE_DYNAMIC) return OPTIM_OK;
    OPTIM__FAIL_IF(!(ls->growth_factor > 1) || isinf(ls->growth_factor), OPTIM__E(o), OPTIM_EINVAL,
                   "%s: growth_factor = %.10g must be > 1 and finite", fn, ls->growth_factor);
    OPTIM__FAIL_IF(!(ls->backoff_factor > 0 && ls->backoff_factor < 1), OPTIM__E(o), OPTIM_EINVAL,
                   "%s: backoff_factor = %.10g must be in (0, 1)", fn, ls->backoff_factor);
    OPTIM__FAIL_IF(ls->growth_interval < 1 || ls->growth_interval > INT32_MAX, OPTIM__E(o), OPTIM_EINVAL,
                   "%s: growth_interval = %lld must be in [1, 2^31 - 1]", fn, (long long)ls->growth_interval);
    return OPTIM_OK;
}

int optim_set_loss_scale(optim *o, const optim_loss_scale *ls)
{
    optim_loss_scale off;
    if (!o) return OPTIM_ENULL;
    memset(&off, 0, sizeof off);
    off.mode = OPTIM_LOSS_SCALE_OFF;
    if (!ls) ls = &off;
    OPTIM__FORWARD(optim__ls_check(o, "optim_set_loss_scale", ls));
    o->ls = ls->mode == OPTIM_LOSS_SCALE_OFF ? off : *ls;
    o->ls_scale = ls->mode == OPTIM_LOSS_SCALE_OFF ? 1.0 : optim__f32(ls->init_scale);
    o->ls_tracker = 0;
    return optim__ok(OPTIM__E(o));
}

int optim_get_loss_scale(const optim *o, optim_loss_scale *ls, double *scale, int64_t *growth_tracker)
{
    if (!o) return OPTIM_ENULL;
    if (ls) *ls = o->ls;
    if (scale) *scale = o->ls_scale;
    if (growth_tracker) *growth_tracker = o->ls_tracker;
    return optim__ok(OPTIM__EC(o));
}

double optim_loss_scale_value(const optim *o)
{
    return o ? o->ls_scale : 1.0;
}

int optim_set_loss_scale_state(optim *o, double scale, int64_t growth_tracker)
{
    static const char fn[] = "optim_set_loss_scale_state";
    int64_t top;
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(o->ls.mode == OPTIM_LOSS_SCALE_OFF, OPTIM__E(o), OPTIM_ESTATE,
                   "%s: loss scaling is off (optim_set_loss_scale first)", fn);
    OPTIM__FAIL_IF(!(scale > 0) || !isfinite(optim__f32(scale)) || optim__f32(scale) == 0, OPTIM__E(o), OPTIM_EINVAL,
                   "%s: scale = %.10g must be > 0 and finite as a float32", fn, scale);
    top = o->ls.mode == OPTIM_LOSS_SCALE_DYNAMIC ? o->ls.growth_interval : 1;
    OPTIM__FAIL_IF(growth_tracker < 0 || growth_tracker >= top, OPTIM__E(o), OPTIM_EINVAL,
                   "%s: growth_tracker = %lld must be in [0, %lld)", fn, (long long)growth_tracker, (long long)top);
    o->ls_scale = optim__f32(scale);
    o->ls_tracker = growth_tracker;
    return optim__ok(OPTIM__E(o));
}

double optim__ls_inv(const optim *o)
{
    /* GradScaler: inv_scale = self._scale.double().reciprocal().float() */
    return o->ls.mode == OPTIM_LOSS_SCALE_OFF ? 1.0 : optim__f32(1.0 / o->ls_scale);
}

void optim__ls_update(optim *o, int overflow)
{
    /* torch's _amp_update_scale_ (aten/src/ATen/native/cuda/AmpKernels.cu, 1.13): the float32 scale times a
     * double factor, stored back as float32; growth only to a finite scale. */
    if (o->ls.mode != OPTIM_LOSS_SCALE_DYNAMIC) return;
    if (overflow) {
        o->ls_scale = optim__f32(o->ls_scale * o->ls.backoff_factor);
        o->ls_tracker = 0;
    } else if (o->ls_tracker + 1 == o->ls.growth_interval) {
        const double grown = optim__f32(o->ls_scale * o->ls.growth_factor);
        if (isfinite(grown)) o->ls_scale = grown;
        o->ls_tracker = 0;
    } else {
        o->ls_tracker++;
    }
}
