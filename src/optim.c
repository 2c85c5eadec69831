/* optim.c: the optimizer object: groups, parameters, owned state, settings.
 * One step is in step.c. */
#include "optim_internal.h"
#include "clip_internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OPTIM__E(o) (&(o)->err)
/* The read-only getters take a const handle but still report their errors in
 * it, as every other call does: the handle's error record is the one part a
 * getter may write. The object itself is never const (optim_create allocates
 * it), so writing through the cast is well defined. */
#define OPTIM__EC(o) (&((optim *)(o))->err)

/* ---- Lifetime -------------------------------------------------------------- */

/* Elements of slot s of parameter pa (its rule's length for its shape), and
 * the bytes allocated for it. A slot the shape leaves empty (Adafactor's
 * factors of a vector, its variance of a matrix) is not allocated: its
 * pointer stays NULL; the slots of a 0-element parameter are allocated (one
 * aligned line, never read), as for every rule. */
static size_t optim__pa_slot_len(const optim *o, const optim__param *pa, int s)
{
    return optim__slot_len(o->rule, s, pa->n, pa->dims ? pa->ndim : 0, pa->dims);
}
static int optim__pa_slot_empty(const optim *o, const optim__param *pa, int s)
{
    return pa->n > 0 && optim__pa_slot_len(o, pa, s) == 0;
}
static size_t optim__pa_slot_alloc(const optim *o, const optim__param *pa, int s)
{
    return optim__slot_bytes(optim__pa_slot_len(o, pa, s), pa->sdt);
}

int optim_create(optim **out, optim_rule rule)
{
    optim *o;
    if (!out) return OPTIM_ENULL;
    *out = NULL;
    if (!optim__rule(rule)) return OPTIM_EINVAL;
    o = (optim *)calloc(1, sizeof *o);
    if (!o) return OPTIM_ENOMEM;
    o->rule = rule;
    o->kt = optim__kernels_get(OPTIM_ISA_AUTO);
    o->threads = 0;
    o->nonfinite = OPTIM_NONFINITE_PROPAGATE;
    o->clip_norm_type = 2.0;
    o->last_norm = NAN;
    o->ls.mode = OPTIM_LOSS_SCALE_OFF;
    o->ls_scale = 1.0;
    *out = o;
    return OPTIM_OK;
}

static void optim__param_free_state(optim__param *pa)
{
    int s;
    for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
        optim__free_floats(pa->st.slot[s]);
        pa->st.slot[s] = NULL;
    }
    optim__free_floats(pa->master);
    pa->master = NULL;
}

void optim_free(optim *o)
{
    size_t i;
    if (!o) return;
    optim__sam_detach_all(o); /* SAM objects over o outlive it safely */
    for (i = 0; i < o->nparams; i++) {
        optim__param_free_state(&o->params[i]);
        optim__ema_free(&o->params[i]);
        free(o->params[i].name);
        free(o->params[i].dims);
    }
    free(o->params);
    optim__schedules_free(o);
    free(o->groups);
    free(o->tasks);
    free(o->ks);
    free(o->next);
    free(o->spans);
    free(o->partials);
    free(o->rpartials);
    free(o->spartials);
    free(o->bad);
    optim__free_floats(o->muon_scratch);
    free(o);
}

const char *optim_errmsg(const optim *o)
{
    if (!o) return "optim: the handle is NULL (optim_create failed or was not called)";
    return o->err.message;
}

int optim_errcode(const optim *o)
{
    return o ? o->err.code : OPTIM_ENULL;
}

optim_rule optim_get_rule(const optim *o)
{
    return o ? o->rule : (optim_rule)0;
}

/* ---- Groups ---------------------------------------------------------------- */

/* Check hp for use in o (valid, o's rule). */
static int optim__check_hp(optim *o, const char *fn, const optim_hparams *hp)
{
    OPTIM__FAIL_IF(!hp, OPTIM__E(o), OPTIM_ENULL, "%s: hp is NULL", fn);
    OPTIM__FAIL_IF(hp->rule != o->rule, OPTIM__E(o), OPTIM_EINVAL,
                   "%s: hp->rule = %d (%s) but this optimizer's rule is %s", fn, (int)hp->rule,
                   optim_rule_name(hp->rule) ? optim_rule_name(hp->rule) : "not a rule", optim_rule_name(o->rule));
    return optim__hparams_check(hp, OPTIM__E(o));
}

int optim_add_group(optim *o, const optim_hparams *hp, size_t *group)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__sam_guard(o, "optim_add_group"));
    OPTIM__FORWARD(optim__ck_fits_group(o, "optim_add_group"));
    OPTIM__FORWARD(optim__check_hp(o, "optim_add_group", hp));
    if (o->ngroups == o->cap_groups) {
        size_t cap = o->cap_groups ? o->cap_groups * 2 : 4;
        optim__group *gs = (optim__group *)realloc(o->groups, cap * sizeof *gs);
        OPTIM__FAIL_IF(!gs, OPTIM__E(o), OPTIM_ENOMEM, "optim_add_group: out of memory for %zu groups", cap);
        o->groups = gs;
        o->cap_groups = cap;
    }
    memset(&o->groups[o->ngroups], 0, sizeof o->groups[o->ngroups]);
    o->groups[o->ngroups].hp = *hp;
    optim__group_complete(&o->groups[o->ngroups].hp);
    if (group) *group = o->ngroups;
    o->ngroups++;
    return optim__ok(OPTIM__E(o));
}

size_t optim_group_count(const optim *o)
{
    return o ? o->ngroups : 0;
}

static int optim__check_group(optim *o, const char *fn, size_t g)
{
    OPTIM__FAIL_IF(g >= o->ngroups, OPTIM__E(o), OPTIM_ERANGE, "%s: group %zu does not exist (%zu groups)", fn, g,
                   o->ngroups);
    return OPTIM_OK;
}

/* The checks of the read-only getters: a NULL out-pointer, an index out of
 * range; the message goes into the handle like every other error. */
static int optim__check_get(const optim *o, const char *fn, const void *out, const char *out_name, size_t i,
                            size_t count, const char *what)
{
    OPTIM__FAIL_IF(!out, OPTIM__EC(o), OPTIM_ENULL, "%s: %s is NULL", fn, out_name);
    OPTIM__FAIL_IF(i >= count, OPTIM__EC(o), OPTIM_ERANGE, "%s: %s %zu does not exist (%zu %ss)", fn, what, i,
                   count, what);
    return optim__ok(OPTIM__EC(o));
}

int optim_group_get(const optim *o, size_t g, optim_hparams *hp)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__check_get(o, "optim_group_get", hp, "hp", g, o->ngroups, "group"));
    *hp = o->groups[g].hp;
    return OPTIM_OK;
}

/* Allocate, for every parameter of group g, the slots `hp` needs that it
 * does not have yet, and fill them with their initial values. All or nothing:
 * on failure the slots this call allocated are freed again. */
static int optim__grow_slots(optim *o, size_t g, const optim_hparams *hp)
{
    unsigned need = optim_hparams_slots(hp);
    size_t i;
    int s;
    for (i = 0; i < o->nparams; i++) {
        optim__param *pa = &o->params[i];
        pa->fresh = 0;
        if (pa->group != g || pa->deferred) continue; /* deferred state gets the slots it needs when allocated */
        for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
            if (!((need >> s) & 1u) || pa->st.slot[s] || optim__pa_slot_empty(o, pa, s)) continue;
            pa->st.slot[s] = (float *)optim__alloc_elems(optim__pa_slot_alloc(o, pa, s), 1);
            if (!pa->st.slot[s]) {
                size_t j;
                for (j = 0; j <= i; j++) {
                    int t;
                    for (t = 0; t < OPTIM_MAX_SLOTS; t++) {
                        if (!((o->params[j].fresh >> t) & 1u)) continue;
                        optim__free_floats(o->params[j].st.slot[t]);
                        o->params[j].st.slot[t] = NULL;
                    }
                    o->params[j].fresh = 0;
                }
                return optim__fail(OPTIM__E(o), OPTIM_ENOMEM,
                                   "optim_group_set: out of memory for %zu %s of state '%s' of param %zu '%s'",
                                   pa->n, "elements",
                                   optim_rule_slot_name(o->rule, s), i, pa->name);
            }
            pa->fresh |= 1u << s;
        }
    }
    for (i = 0; i < o->nparams; i++) {
        optim__param *pa = &o->params[i];
        if (!pa->fresh) continue;
        pa->st.initialized &= ~pa->fresh;
        optim__state_fill(hp, pa->n, pa->dims ? pa->ndim : 0, pa->dims, &pa->st, pa->fresh, pa->sdt);
        pa->fresh = 0;
    }
    return OPTIM_OK;
}

/* The loop instance parameter `pa` would run at its next step under hp (its
 * state as it is now, the clipping as set): an error naming the variant and
 * types if the kernels have none, so that an options change nobody generated
 * a loop for is refused when it is made, not found by a step. */
static int optim__check_next_loop(optim *o, const char *fn, const optim__param *pa, const optim_hparams *hp)
{
    optim_state st = pa->st;
    optim__step_in in;
    optim__k k;
    if (st.step == INT64_MAX) return OPTIM_OK; /* the step refuses it anyway */
    in.lr = hp->lr;
    in.gscale = 1.0;
    in.gclip = o->clip_value > 0 ? o->clip_value : INFINITY;
    in.quantized = pa->sdt == OPTIM_INT8_BLOCK;
    in.eps_type = 0.0;
    optim__prepare(hp, &in, &st, &k);
    if (pa->flags & OPTIM_PARAM_COMPLEX) k.c.variant |= OPTIM__V_COMPLEX;
    OPTIM__FAIL_IF(!optim__loop_get(o->kt, o->rule, pa->ct, k.c.variant, NULL, NULL), OPTIM__E(o),
                   OPTIM_EUNSUPPORTED,
                   "%s: the %s path has no %s loop for variant 0x%x (%s parameters, %s gradients) of param '%s'", fn,
                   optim_isa_name(o->kt->isa), optim_rule_name(o->rule), k.c.variant, optim_dtype_name(pa->pdt),
                   optim_dtype_name(pa->gdt), pa->name);
    return OPTIM_OK;
}

static int optim__group_commit(optim *o, size_t g, const char *fn, optim_hparams *hp)
{
    size_t i;
    OPTIM__FORWARD(optim__check_hp(o, fn, hp));
    optim__group_complete(hp);
    for (i = 0; i < o->nparams; i++)
        if (o->params[i].group == g) OPTIM__FORWARD(optim__check_next_loop(o, fn, &o->params[i], hp));
    OPTIM__FORWARD(optim__grow_slots(o, g, hp));
    o->groups[g].hp = *hp;
    return optim__ok(OPTIM__E(o));
}

int optim_group_set(optim *o, size_t g, const optim_hparams *hp)
{
    optim_hparams copy;
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__check_group(o, "optim_group_set", g));
    OPTIM__FAIL_IF(!hp, OPTIM__E(o), OPTIM_ENULL, "optim_group_set: hp is NULL");
    copy = *hp;
    return optim__group_commit(o, g, "optim_group_set", &copy);
}

int optim_group_set_hparams(optim *o, size_t g, size_t count, const optim_hparam *ids, const double *values)
{
    optim_hparams hp;
    size_t i;
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__check_group(o, "optim_group_set_hparams", g));
    OPTIM__FAIL_IF(count > 0 && (!ids || !values), OPTIM__E(o), OPTIM_ENULL, "optim_group_set_hparams: %s is NULL",
                   !ids ? "ids" : "values");
    hp = o->groups[g].hp;
    for (i = 0; i < count; i++) OPTIM__FORWARD(optim_hparams_set(&hp, ids[i], values[i], OPTIM__E(o)));
    return optim__group_commit(o, g, "optim_group_set_hparams", &hp);
}

int optim_group_set_hparam(optim *o, size_t g, optim_hparam id, double value)
{
    return optim_group_set_hparams(o, g, 1, &id, &value);
}

int optim_group_get_hparam(const optim *o, size_t g, optim_hparam id, double *value)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__check_get(o, "optim_group_get_hparam", value, "value", g, o->ngroups, "group"));
    return optim_hparams_get(&o->groups[g].hp, id, value, OPTIM__EC(o));
}

/* ---- Parameters ------------------------------------------------------------- */


/* Does p (pb bytes) or g (gb bytes) collide with the memory of any parameter but `skip`? */
static int optim__check_disjoint_one(optim *o, const char *fn, size_t skip, const void *p, size_t pb, const void *g,
                                     size_t gb)
{
    size_t j;
    OPTIM__FAIL_IF(optim__overlap_bytes(p, pb, g, gb), OPTIM__E(o), OPTIM_EOVERLAP, "%s: param and grad overlap", fn);
    for (j = 0; j < o->nparams; j++) {
        const optim__param *q = &o->params[j];
        size_t qp = OPTIM__BYTES(q->n, q->pdt), qg = OPTIM__BYTES(q->n, q->gdt);
        if (j == skip) continue;
        OPTIM__FAIL_IF(optim__overlap_bytes(p, pb, q->p, qp), OPTIM__E(o), OPTIM_EOVERLAP,
                       "%s: param overlaps the memory of param %zu '%s'", fn, j, q->name);
        OPTIM__FAIL_IF(optim__overlap_bytes(p, pb, q->g, qg), OPTIM__E(o), OPTIM_EOVERLAP,
                       "%s: param overlaps the gradient of param %zu '%s'", fn, j, q->name);
        OPTIM__FAIL_IF(optim__overlap_bytes(g, gb, q->p, qp), OPTIM__E(o), OPTIM_EOVERLAP,
                       "%s: grad overlaps the memory of param %zu '%s'", fn, j, q->name);
    }
    return OPTIM_OK;
}

int optim__check_align(optim *o, const char *fn, const char *what, const void *x, optim_dtype dtype,
                              size_t i, const char *name)
{
    size_t size = optim_dtype_size(dtype);
    /* Every type, float32 too: the typed calls take void pointers, and a binding
     * passes addresses as integers (torch.frombuffer makes a float32 tensor at
     * any byte offset); the kernels load elements of their type. */
    OPTIM__FAIL_IF(x && (uintptr_t)x % size != 0, OPTIM__E(o), OPTIM_EINVAL,
                   "%s: the %s of param %zu '%s' at %p is not aligned to %zu bytes (%s)", fn, what, i,
                   name ? name : "", x, size, optim_dtype_name(dtype));
    return OPTIM_OK;
}

static int optim__reserve_params(optim *o)
{
    size_t cap;
    optim__param *ps;
    optim__task *ts;
    optim__k *ks;
    optim_state *nx;
    optim__span *sp;
    if (o->nparams < o->cap_params) return OPTIM_OK;
    cap = o->cap_params ? o->cap_params * 2 : 16;
    ps = (optim__param *)realloc(o->params, cap * sizeof *ps);
    if (!ps) return OPTIM_ENOMEM;
    o->params = ps;
    ts = (optim__task *)realloc(o->tasks, cap * sizeof *ts);
    if (!ts) return OPTIM_ENOMEM;
    o->tasks = ts;
    ks = (optim__k *)realloc(o->ks, cap * sizeof *ks);
    if (!ks) return OPTIM_ENOMEM;
    o->ks = ks;
    nx = (optim_state *)realloc(o->next, cap * sizeof *nx);
    if (!nx) return OPTIM_ENOMEM;
    o->next = nx;
    sp = (optim__span *)realloc(o->spans, 2 * cap * sizeof *sp);
    if (!sp) return OPTIM_ENOMEM;
    o->spans = sp;
    o->cap_params = cap;
    return OPTIM_OK;
}

/* Room for the reduction partials of all parameters plus `more` blocks. */
static int optim__reserve_blocks(optim *o, size_t more)
{
    size_t need = more, i, cap;
    double *pa;
    unsigned char *bd;
    for (i = 0; i < o->nparams; i++) need += OPTIM__NBLOCKS(o->params[i].n);
    if (need <= o->cap_blocks) return OPTIM_OK;
    cap = need + need / 2 + 16;
    pa = (double *)realloc(o->partials, cap * sizeof *pa);
    if (!pa) return OPTIM_ENOMEM;
    o->partials = pa;
    bd = (unsigned char *)realloc(o->bad, cap);
    if (!bd) return OPTIM_ENOMEM;
    o->bad = bd;
    pa = (double *)realloc(o->rpartials, 2 * cap * sizeof *pa);
    if (!pa) return OPTIM_ENOMEM;
    o->rpartials = pa;
    pa = (double *)realloc(o->spartials, OPTIM__NSTAT * cap * sizeof *pa);
    if (!pa) return OPTIM_ENOMEM;
    o->spartials = pa;
    o->cap_blocks = cap;
    return OPTIM_OK;
}

static int optim__add_param(optim *o, const char *fn, size_t g, void *param, optim_dtype pdt, const void *grad,
                            optim_dtype gdt, size_t n, int sdt, unsigned flags, const char *name, size_t *index)
{
    optim__param pa;
    optim__task probe;
    const optim_hparams *hp;
    optim_dtype ppdt;
    unsigned need;
    int s;
    OPTIM__FORWARD(optim__sam_guard(o, fn));
    OPTIM__FAIL_IF(o->ema_swapped, OPTIM__E(o), OPTIM_ESTATE,
                   "%s: the parameters hold the EMA (optim_ema_swap); swap back first", fn);
    OPTIM__FORWARD(optim__check_group(o, fn, g));
    OPTIM__FORWARD(optim__ck_fits_param(o, fn, name, n));
    memset(&pa, 0, sizeof pa);
    OPTIM__FAIL_IF(flags & ~(OPTIM_PARAM_MASTER | OPTIM_PARAM_STOCHASTIC_ROUNDING | OPTIM_PARAM_COMPLEX |
                             OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING),
                   OPTIM__E(o), OPTIM_EINVAL,
                   "%s: flags = 0x%x has bits that are no storage option (OPTIM_PARAM_MASTER 0x1, "
                   "OPTIM_PARAM_STOCHASTIC_ROUNDING 0x2, OPTIM_PARAM_COMPLEX 0x4, "
                   "OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING 0x8)",
                   fn, flags);
    if (flags & OPTIM_PARAM_COMPLEX) {
        OPTIM__FAIL_IF(!optim__loop_get(o->kt, o->rule, OPTIM__CT_F32, OPTIM__V_COMPLEX, NULL, NULL), OPTIM__E(o),
                       OPTIM_EUNSUPPORTED,
                       "%s: OPTIM_PARAM_COMPLEX: %s has no complex arithmetic (torch.optim steps its complex "
                       "parameters as their real view: add it without the flag)",
                       fn, optim_rule_name(o->rule));
        OPTIM__FAIL_IF(flags & (OPTIM_PARAM_MASTER | OPTIM_PARAM_STOCHASTIC_ROUNDING |
                                OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING),
                       OPTIM__E(o), OPTIM_EINVAL,
                       "%s: OPTIM_PARAM_COMPLEX does not go with a master or stochastic rounding (flags = 0x%x)", fn,
                       flags);
        OPTIM__FAIL_IF((pdt != OPTIM_FLOAT32 && pdt != OPTIM_FLOAT64) || gdt != pdt || (sdt >= 0 && sdt != (int)pdt),
                       OPTIM__E(o), OPTIM_EINVAL,
                       "%s: OPTIM_PARAM_COMPLEX needs float32 or float64 pairs with gradient and state of the same "
                       "type (%s parameter, %s gradient)",
                       fn, optim_dtype_name(pdt) ? optim_dtype_name(pdt) : "unknown",
                       optim_dtype_name(gdt) ? optim_dtype_name(gdt) : "unknown");
        OPTIM__FAIL_IF(n % 2 != 0, OPTIM__E(o), OPTIM_EINVAL,
                       "%s: OPTIM_PARAM_COMPLEX: n = %zu is odd (n counts the real and imaginary parts)", fn, n);
    }
    /* With a master the math runs on a float32 parameter: its gradient and state types are a float32's. */
    OPTIM__FAIL_IF((flags & OPTIM_PARAM_MASTER) && pdt != OPTIM_BFLOAT16 && pdt != OPTIM_FLOAT16, OPTIM__E(o),
                   OPTIM_EINVAL, "%s: OPTIM_PARAM_MASTER is for bfloat16 and float16 parameters, not %s", fn,
                   optim_dtype_name(pdt) ? optim_dtype_name(pdt) : "an unknown type");
    ppdt = (flags & OPTIM_PARAM_MASTER) ? OPTIM_FLOAT32 : pdt;
    OPTIM__FORWARD(optim__dtypes(fn, ppdt, gdt, &pa.ct, &pa.sdt, OPTIM__E(o)));
    if (sdt >= 0) {
        OPTIM__FORWARD(optim__state_dtype_ok(fn, ppdt, (optim_dtype)sdt, OPTIM__E(o)));
        pa.sdt = (optim_dtype)sdt;
    }
    OPTIM__FAIL_IF((flags & OPTIM_PARAM_STOCHASTIC_ROUNDING) &&
                       !((pdt == OPTIM_BFLOAT16 && !(flags & OPTIM_PARAM_MASTER)) || pa.sdt == OPTIM_BFLOAT16),
                   OPTIM__E(o), OPTIM_EINVAL,
                   "%s: OPTIM_PARAM_STOCHASTIC_ROUNDING rounds a bfloat16 parameter without a master and bfloat16 "
                   "state; this one has %s memory%s and %s state: nothing to round stochastically",
                   fn, optim_dtype_name(pdt), (flags & OPTIM_PARAM_MASTER) ? " with a master" : "",
                   optim_dtype_name(pa.sdt));
    /* Stochastic codes (branch q8sr): int8_block state only. */
    OPTIM__FAIL_IF((flags & OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING) && pa.sdt != OPTIM_INT8_BLOCK, OPTIM__E(o),
                   OPTIM_EINVAL,
                   "%s: OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING rounds int8_block state's codes; this %s parameter "
                   "has %s state",
                   fn, optim_dtype_name(pdt), optim_dtype_name(pa.sdt));
    memset(&probe, 0, sizeof probe);
    OPTIM__FAIL_IF(optim__task_storage(o->kt, &probe, ppdt, gdt, pa.sdt, optim__rule(o->rule)->slot_kinds) != 0 ||
                       optim__task_prec(o->kt, &probe, pdt, pa.sdt, flags, param) != 0,
                   OPTIM__E(o), OPTIM_EUNSUPPORTED, "%s: the %s path has no storage for %s parameters with %s gradients",
                   fn, optim_isa_name(o->kt->isa), optim_dtype_name(pdt), optim_dtype_name(gdt));
    /* Adafactor's passes (src/kernels/factored_run.c) run on direct memory only. */
    OPTIM__FAIL_IF(o->rule == OPTIM_ADAFACTOR && ((pdt != OPTIM_FLOAT32 && pdt != OPTIM_FLOAT64) || gdt != pdt ||
                                                  pa.sdt != pdt || flags != 0),
                   OPTIM__E(o), OPTIM_EUNSUPPORTED,
                   "%s: adafactor takes float32 or float64 parameters with gradients and state of the same type and "
                   "no storage flags; not %s parameters, %s gradients, %s state, flags 0x%x",
                   fn, optim_dtype_name(pdt), optim_dtype_name(gdt), optim_dtype_name(pa.sdt), flags);
    OPTIM__FAIL_IF(!param && n > 0, OPTIM__E(o), OPTIM_ENULL, "%s: param is NULL (n = %zu)", fn, n);
    OPTIM__FAIL_IF(n > SIZE_MAX / 8, OPTIM__E(o), OPTIM_EINVAL, "%s: n = %zu elements is too many", fn, n);
    OPTIM__FORWARD(optim__check_align(o, fn, "memory", param, pdt, o->nparams, name));
    OPTIM__FORWARD(optim__check_align(o, fn, "gradient", grad, gdt, o->nparams, name));
    OPTIM__FORWARD(optim__check_disjoint_one(o, fn, (size_t)-1, param, OPTIM__BYTES(n, pdt), grad,
                                             OPTIM__BYTES(n, gdt)));
    OPTIM__FAIL_IF(optim__reserve_params(o) != OPTIM_OK, OPTIM__E(o), OPTIM_ENOMEM,
                   "%s: out of memory for %zu parameters", fn, o->nparams + 1);
    OPTIM__FAIL_IF(optim__reserve_blocks(o, OPTIM__NBLOCKS(n)) != OPTIM_OK, OPTIM__E(o), OPTIM_ENOMEM,
                   "%s: out of memory for the gradient-norm partials", fn);

    pa.p = param;
    pa.g = grad;
    pa.pdt = pdt;
    pa.gdt = gdt;
    pa.n = n;
    pa.group = g;
    pa.flags = flags;
    pa.sr_param = (uint64_t)o->nparams;
    pa.sr_first = 0;
    if (name) {
        size_t len = strlen(name);
        pa.name = (char *)malloc(len + 1);
        if (pa.name) memcpy(pa.name, name, len + 1);
    } else {
        char buf[32];
        snprintf(buf, sizeof buf, "param%zu", o->nparams);
        pa.name = (char *)malloc(strlen(buf) + 1);
        if (pa.name) strcpy(pa.name, buf);
    }
    OPTIM__FAIL_IF(!pa.name, OPTIM__E(o), OPTIM_ENOMEM, "%s: out of memory for the name", fn);

    hp = &o->groups[g].hp;
    pa.st.step = 0;
    pa.st.mu_product = 1.0;
    pa.st.lr_max = -1.0;
    pa.st.weight_sum = 0.0;
    if (optim__check_next_loop(o, fn, &pa, hp) != OPTIM_OK) {
        free(pa.name);
        return o->err.code;
    }
    need = o->defer_state ? 0u : optim_hparams_slots(hp);
    pa.deferred = o->defer_state;
    for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
        if (!((need >> s) & 1u) || optim__pa_slot_empty(o, &pa, s)) continue;
        pa.st.slot[s] = (float *)optim__alloc_elems(optim__pa_slot_alloc(o, &pa, s), 1);
        if (!pa.st.slot[s]) {
            optim__param_free_state(&pa);
            free(pa.name);
            return optim__fail(OPTIM__E(o), OPTIM_ENOMEM, "%s: out of memory for %zu %s of state '%s' of '%s'", fn,
                               n, "elements", optim_rule_slot_name(o->rule, s),
                               name ? name : "param");
        }
    }
    optim__state_fill(hp, n, 0, NULL, &pa.st, need, pa.sdt);
    if (flags & OPTIM_PARAM_MASTER) {
        /* The master is state (allocated now even when the slots are deferred): the parameter's value, widened. */
        pa.master = optim__alloc_floats(n);
        if (!pa.master) {
            optim__param_free_state(&pa);
            free(pa.name);
            return optim__fail(OPTIM__E(o), OPTIM_ENOMEM, "%s: out of memory for the %zu-float master of '%s'", fn,
                               n, name ? name : "param");
        }
        optim__master_sync(o, &pa);
    }
    /* include/optim_ema.h: its first average (the next step's) copies it, and its warm-up counts from there:
     * as an AveragedModel made for it then. */
    pa.ema_start = o->ema_count;
    if (o->ema_on && optim__ema_alloc(o, fn, &pa) != OPTIM_OK) {
        optim__param_free_state(&pa);
        free(pa.name);
        return o->err.code;
    }

    o->params[o->nparams] = pa;
    if (index) *index = o->nparams;
    o->nparams++;
    return optim__ok(OPTIM__E(o));
}

int optim_add_param(optim *o, size_t g, float *param, const float *grad, size_t n, const char *name, size_t *index)
{
    if (!o) return OPTIM_ENULL;
    return optim__add_param(o, "optim_add_param", g, param, OPTIM_FLOAT32, grad, OPTIM_FLOAT32, n, -1, 0, name,
                            index);
}

int optim_add_param_typed(optim *o, size_t g, void *param, optim_dtype param_dtype, const void *grad,
                          optim_dtype grad_dtype, size_t n, const char *name, size_t *index)
{
    if (!o) return OPTIM_ENULL;
    return optim__add_param(o, "optim_add_param_typed", g, param, param_dtype, grad, grad_dtype, n, -1, 0, name,
                            index);
}

int optim_add_param_ex(optim *o, size_t g, void *param, optim_dtype param_dtype, const void *grad,
                       optim_dtype grad_dtype, size_t n, optim_dtype state_dtype, unsigned flags, const char *name,
                       size_t *index)
{
    if (!o) return OPTIM_ENULL;
    return optim__add_param(o, "optim_add_param_ex", g, param, param_dtype, grad, grad_dtype, n, (int)state_dtype,
                            flags, name, index);
}

int optim_param_get_dtypes(const optim *o, size_t i, optim_dtype *param_dtype, optim_dtype *grad_dtype,
                           optim_dtype *state_dtype)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(i >= o->nparams, OPTIM__EC(o), OPTIM_ERANGE,
                   "optim_param_get_dtypes: param %zu does not exist (%zu params)", i, o->nparams);
    if (param_dtype) *param_dtype = o->params[i].pdt;
    if (grad_dtype) *grad_dtype = o->params[i].gdt;
    if (state_dtype) *state_dtype = o->params[i].sdt;
    return optim__ok(OPTIM__EC(o));
}

size_t optim_param_count(const optim *o)
{
    return o ? o->nparams : 0;
}

static int optim__check_param(optim *o, const char *fn, size_t i)
{
    OPTIM__FAIL_IF(i >= o->nparams, OPTIM__E(o), OPTIM_ERANGE, "%s: param %zu does not exist (%zu params)", fn, i,
                   o->nparams);
    return OPTIM_OK;
}

int optim__check_float32(optim *o, const char *fn, size_t i, const char *instead)
{
    const optim__param *pa = &o->params[i];
    OPTIM__FAIL_IF(pa->pdt != OPTIM_FLOAT32 || pa->gdt != OPTIM_FLOAT32, OPTIM__E(o), OPTIM_EINVAL,
                   "%s: param %zu '%s' has %s memory and %s gradients, not float32: use %s", fn, i, pa->name,
                   optim_dtype_name(pa->pdt), optim_dtype_name(pa->gdt), instead);
    return OPTIM_OK;
}

static int optim__set_data(optim *o, const char *fn, size_t i, void *param, const void *grad)
{
    const optim__param *pa = &o->params[i];
    OPTIM__FAIL_IF(!param && pa->n > 0, OPTIM__E(o), OPTIM_ENULL, "%s: param is NULL for param %zu '%s'", fn, i,
                   pa->name);
    OPTIM__FORWARD(optim__check_align(o, fn, "memory", param, pa->pdt, i, pa->name));
    OPTIM__FORWARD(optim__check_align(o, fn, "gradient", grad, pa->gdt, i, pa->name));
    OPTIM__FORWARD(optim__check_disjoint_one(o, fn, i, param, OPTIM__BYTES(pa->n, pa->pdt), grad,
                                             OPTIM__BYTES(pa->n, pa->gdt)));
    o->params[i].p = param;
    o->params[i].g = grad;
    return optim__ok(OPTIM__E(o));
}

int optim_set_param_ptrs(optim *o, size_t i, float *param, const float *grad)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__check_param(o, "optim_set_param_ptrs", i));
    OPTIM__FORWARD(optim__check_float32(o, "optim_set_param_ptrs", i, "optim_set_param_data"));
    return optim__set_data(o, "optim_set_param_ptrs", i, param, grad);
}

int optim_set_grad(optim *o, size_t i, const float *grad)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__check_param(o, "optim_set_grad", i));
    OPTIM__FORWARD(optim__check_float32(o, "optim_set_grad", i, "optim_set_grad_data"));
    return optim__set_data(o, "optim_set_param_ptrs", i, o->params[i].p, grad);
}

int optim_set_param_data(optim *o, size_t i, void *param, const void *grad)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__check_param(o, "optim_set_param_data", i));
    return optim__set_data(o, "optim_set_param_data", i, param, grad);
}

int optim_set_grad_data(optim *o, size_t i, const void *grad)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__check_param(o, "optim_set_grad_data", i));
    return optim__set_data(o, "optim_set_grad_data", i, o->params[i].p, grad);
}

int optim_rebind(optim *o, size_t count, void *const *params, const void *const *grads)
{
    optim__ptrs x = {params, grads, NULL, NULL, 0};
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__rebind(o, "optim_rebind", count, &x));
    return optim__ok(OPTIM__E(o));
}

int optim_param_get_info(const optim *o, size_t i, optim_param_info *info)
{
    const optim__param *pa;
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__check_get(o, "optim_param_get_info", info, "info", i, o->nparams, "param"));
    pa = &o->params[i];
    info->name = pa->name;
    info->group = pa->group;
    info->n = pa->n;
    info->param = (float *)pa->p; /* of the parameter's types (optim.h) */
    info->grad = (const float *)pa->g;
    info->step = pa->st.step;
    return OPTIM_OK;
}

/* A rule whose slot lengths depend on the shape (Adafactor): the slots of
 * parameter i held now, reallocated at the lengths of shape dims[ndim] and
 * filled as fresh state. Only before its first step (its state would be
 * lost); all or nothing. */
/* "(2, 3, 4)" of a shape (dims NULL: the default [n]), cut short with "..." if it does not fit. */
static void optim__shape_text(char *out, size_t size, size_t ndim, const int64_t *dims, size_t n)
{
    size_t k, len;
    if (!dims) {
        snprintf(out, size, "(%zu) (none given)", n);
        return;
    }
    snprintf(out, size, "(");
    for (k = 0; k < ndim; k++) {
        len = strlen(out);
        snprintf(out + len, size - len, "%s%lld", k ? ", " : "", (long long)dims[k]);
    }
    len = strlen(out);
    snprintf(out + len, size - len, ")");
    if (strlen(out) + 1 >= size && size > 4) snprintf(out + size - 4, 4, "...");
}

/* Is (ndim, dims) parameter pa's shape now ([n] when none was given)? */
static int optim__same_shape(const optim__param *pa, size_t ndim, const int64_t *dims)
{
    if (!pa->dims) return ndim == 1 && dims[0] == (int64_t)pa->n;
    return ndim == pa->ndim && (ndim == 0 || memcmp(dims, pa->dims, ndim * sizeof *dims) == 0);
}

static int optim__reshape_state(optim *o, const char *fn, size_t i, size_t ndim, const int64_t *dims)
{
    optim__param *pa = &o->params[i];
    float *fresh[OPTIM_MAX_SLOTS] = {NULL, NULL, NULL, NULL};
    unsigned need = pa->deferred ? 0u : optim_hparams_slots(&o->groups[pa->group].hp);
    int s, changed = 0;
    if (pa->st.step > 0 && !optim__same_shape(pa, ndim, dims)) {
        /* The state follows the shape (Adafactor's factors): after a step it is laid out for the old one, and a
         * new shape, even one with the same slot lengths (leading dimensions regrouped), would reinterpret it. */
        char old_s[160], new_s[160];
        optim__shape_text(old_s, sizeof old_s, pa->ndim, pa->dims, pa->n);
        optim__shape_text(new_s, sizeof new_s, ndim, dims, pa->n);
        return optim__fail(OPTIM__E(o), OPTIM_ESTATE,
                           "%s: param %zu '%s' has taken %lld %s steps with shape %s: its state is laid out for it, "
                           "and shape %s would reinterpret it (set the shape before the first step, or "
                           "optim_param_reset_state first); nothing changed",
                           fn, i, pa->name, (long long)pa->st.step, optim_rule_name(o->rule), old_s, new_s);
    }
    for (s = 0; s < OPTIM_MAX_SLOTS; s++)
        if (((need >> s) & 1u) && optim__slot_len(o->rule, s, pa->n, ndim, dims) != optim__pa_slot_len(o, pa, s))
            changed = 1;
    if (!changed) return OPTIM_OK;
    OPTIM__FAIL_IF(pa->st.step > 0, OPTIM__E(o), OPTIM_ESTATE,
                   "%s: param %zu '%s' has taken %lld %s steps: a new shape would change its state's shape (set "
                   "the shape before the first step, or optim_param_reset_state first)",
                   fn, i, pa->name, (long long)pa->st.step, optim_rule_name(o->rule));
    for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
        size_t len = optim__slot_len(o->rule, s, pa->n, ndim, dims);
        if (!((need >> s) & 1u) || (len == 0 && pa->n > 0)) continue;
        fresh[s] = (float *)optim__alloc_elems(optim__slot_bytes(len, pa->sdt), 1);
        if (!fresh[s]) {
            int t;
            for (t = 0; t < s; t++) optim__free_floats(fresh[t]);
            return optim__fail(OPTIM__E(o), OPTIM_ENOMEM, "%s: out of memory for %zu elements of state '%s' of "
                               "param %zu '%s'", fn, len, optim_rule_slot_name(o->rule, s), i, pa->name);
        }
    }
    for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
        if (!((need >> s) & 1u)) continue;
        optim__free_floats(pa->st.slot[s]);
        pa->st.slot[s] = fresh[s];
    }
    optim__state_fill(&o->groups[pa->group].hp, pa->n, ndim, dims, &pa->st, need, pa->sdt);
    return OPTIM_OK;
}

int optim_param_set_shape(optim *o, size_t i, size_t ndim, const int64_t *dims)
{
    static const char fn[] = "optim_param_set_shape";
    uint64_t prod = 1;
    int64_t *copy;
    size_t k;
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__check_param(o, fn, i));
    OPTIM__FAIL_IF(ndim > OPTIM_MAX_NDIM, OPTIM__E(o), OPTIM_EINVAL, "%s: ndim = %zu for param %zu '%s' (at most %d)",
                   fn, ndim, i, o->params[i].name, OPTIM_MAX_NDIM);
    OPTIM__FAIL_IF(ndim > 0 && !dims, OPTIM__E(o), OPTIM_ENULL, "%s: dims is NULL (ndim = %zu)", fn, ndim);
    for (k = 0; k < ndim; k++) {
        OPTIM__FAIL_IF(dims[k] < 0, OPTIM__E(o), OPTIM_EINVAL, "%s: dims[%zu] = %lld for param %zu '%s' (must be >= 0)",
                       fn, k, (long long)dims[k], i, o->params[i].name);
        /* Saturate: any product past n (which fits in size_t) is wrong anyway. */
        prod = dims[k] != 0 && prod > UINT64_MAX / (uint64_t)dims[k] ? UINT64_MAX : prod * (uint64_t)dims[k];
    }
    OPTIM__FAIL_IF(prod != (uint64_t)o->params[i].n, OPTIM__E(o), OPTIM_EINVAL,
                   "%s: a shape of %zu dimensions with %llu%s elements for param %zu '%s' of %zu elements", fn, ndim,
                   (unsigned long long)prod, prod == UINT64_MAX ? " or more" : "", i, o->params[i].name,
                   o->params[i].n);
    /* Muon steps 2-D parameters with a scratch matrix: sized now, so that steps never allocate. */
    if (o->rule == OPTIM_MUON && ndim == 2) OPTIM__FORWARD(optim__muon_reserve(o, fn, (size_t)dims[0], (size_t)dims[1]));
    copy = (int64_t *)malloc((ndim ? ndim : 1) * sizeof *copy);
    OPTIM__FAIL_IF(!copy, OPTIM__E(o), OPTIM_ENOMEM, "%s: out of memory", fn);
    if (ndim) memcpy(copy, dims, ndim * sizeof *copy);
    if (optim__rule(o->rule)->slot_len) {
        int rc = optim__reshape_state(o, fn, i, ndim, copy);
        if (rc != OPTIM_OK) {
            free(copy);
            return rc;
        }
    }
    free(o->params[i].dims);
    o->params[i].dims = copy;
    o->params[i].ndim = ndim;
    return optim__ok(OPTIM__E(o));
}

int optim_param_get_shape(const optim *o, size_t i, size_t *ndim, int64_t *dims, int *given)
{
    const optim__param *pa;
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__check_get(o, "optim_param_get_shape", ndim, "ndim", i, o->nparams, "param"));
    pa = &o->params[i];
    *ndim = pa->dims ? pa->ndim : 1;
    if (dims) {
        if (pa->dims)
            memcpy(dims, pa->dims, pa->ndim * sizeof *dims);
        else
            dims[0] = (int64_t)pa->n;
    }
    if (given) *given = pa->dims != NULL;
    return OPTIM_OK;
}

/* ---- State access ----------------------------------------------------------- */

static int optim__state_slot(optim *o, const char *fn, size_t i, int s, void **data, optim_dtype *dtype,
                             int *initialized)
{
    OPTIM__FORWARD(optim__check_param(o, fn, i));
    OPTIM__FAIL_IF(!data, OPTIM__E(o), OPTIM_ENULL, "%s: data is NULL", fn);
    OPTIM__FAIL_IF(s < 0 || s >= optim_rule_slot_count(o->rule), OPTIM__E(o), OPTIM_ERANGE,
                   "%s: slot %d does not exist (%s has %d)", fn, s, optim_rule_name(o->rule),
                   optim_rule_slot_count(o->rule));
    OPTIM__FORWARD(optim__state_ensure(o, fn, i, i + 1));
    *data = o->params[i].st.slot[s];
    if (dtype) *dtype = o->params[i].sdt;
    if (initialized) *initialized = (int)((o->params[i].st.initialized >> s) & 1u);
    return optim__ok(OPTIM__E(o));
}

int optim_state_slot(optim *o, size_t i, int s, float **data, int *initialized)
{
    void *d = NULL;
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__check_param(o, "optim_state_slot", i));
    OPTIM__FAIL_IF(o->params[i].sdt != OPTIM_FLOAT32, OPTIM__E(o), OPTIM_EUNSUPPORTED,
                   "optim_state_slot: the state of param %zu '%s' is %s, not float32: use optim_state_slot_data", i,
                   o->params[i].name, optim_dtype_name(o->params[i].sdt));
    OPTIM__FORWARD(optim__state_slot(o, "optim_state_slot", i, s, data ? &d : NULL, NULL, initialized));
    *data = (float *)d;
    return OPTIM_OK;
}

int optim_state_slot_data(optim *o, size_t i, int s, void **data, optim_dtype *dtype, int *initialized)
{
    if (!o) return OPTIM_ENULL;
    return optim__state_slot(o, "optim_state_slot_data", i, s, data, dtype, initialized);
}

int optim_state_slot_len(const optim *o, size_t i, int s, size_t *len)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__check_get(o, "optim_state_slot_len", len, "len", i, o->nparams, "param"));
    OPTIM__FAIL_IF(s < 0 || s >= optim_rule_slot_count(o->rule), OPTIM__EC(o), OPTIM_ERANGE,
                   "optim_state_slot_len: slot %d does not exist (%s has %d)", s, optim_rule_name(o->rule),
                   optim_rule_slot_count(o->rule));
    *len = optim__pa_slot_len(o, &o->params[i], s);
    return OPTIM_OK;
}

/* optim_state_slot_read_f32 (write = 0) and optim_state_slot_write_f32. */
static int optim__state_slot_f32(optim *o, const char *fn, size_t i, int s, float *dst, const float *src)
{
    void *d = NULL;
    const optim__param *pa;
    OPTIM__FORWARD(optim__check_param(o, fn, i));
    OPTIM__FAIL_IF(!dst && !src, OPTIM__E(o), OPTIM_ENULL, "%s: dst is NULL", fn);
    pa = &o->params[i];
    OPTIM__FAIL_IF(pa->sdt == OPTIM_FLOAT64, OPTIM__E(o), OPTIM_EUNSUPPORTED,
                   "%s: the state of param %zu '%s' is float64: use optim_state_slot_data", fn, i, pa->name);
    OPTIM__FORWARD(optim__state_slot(o, fn, i, s, &d, NULL, NULL));
    OPTIM__FAIL_IF(!d, OPTIM__E(o), OPTIM_ESTATE, "%s: slot %d (%s) of param %zu '%s' is not allocated", fn, s,
                   optim_rule_slot_name(o->rule, s), i, pa->name);
    if (src)
        optim__slot_from_f32(d, src, optim__pa_slot_len(o, pa, s), pa->sdt, optim__rule(o->rule)->slot_kinds[s]);
    else
        optim__slot_to_f32(dst, d, optim__pa_slot_len(o, pa, s), pa->sdt, optim__rule(o->rule)->slot_kinds[s]);
    return optim__ok(OPTIM__E(o));
}

int optim_state_slot_read_f32(optim *o, size_t i, int s, float *dst)
{
    if (!o) return OPTIM_ENULL;
    return optim__state_slot_f32(o, "optim_state_slot_read_f32", i, s, dst, NULL);
}

int optim_state_slot_write_f32(optim *o, size_t i, int s, const float *src)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(!src, OPTIM__E(o), OPTIM_ENULL, "optim_state_slot_write_f32: src is NULL");
    return optim__state_slot_f32(o, "optim_state_slot_write_f32", i, s, NULL, src);
}

int optim_state_set_initialized(optim *o, size_t i, int s, int initialized)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__check_param(o, "optim_state_set_initialized", i));
    OPTIM__FAIL_IF(s < 0 || s >= optim_rule_slot_count(o->rule), OPTIM__E(o), OPTIM_ERANGE,
                   "optim_state_set_initialized: slot %d does not exist (%s has %d)", s, optim_rule_name(o->rule),
                   optim_rule_slot_count(o->rule));
    OPTIM__FORWARD(optim__state_ensure(o, "optim_state_set_initialized", i, i + 1));
    OPTIM__FAIL_IF(!o->params[i].st.slot[s], OPTIM__E(o), OPTIM_ESTATE,
                   "optim_state_set_initialized: slot %d (%s) of param %zu is not allocated", s,
                   optim_rule_slot_name(o->rule, s), i);
    if (initialized)
        o->params[i].st.initialized |= 1u << s;
    else
        o->params[i].st.initialized &= ~(1u << s);
    return optim__ok(OPTIM__E(o));
}

int optim_param_get_step(const optim *o, size_t i, int64_t *step)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__check_get(o, "optim_param_get_step", step, "step", i, o->nparams, "param"));
    *step = o->params[i].st.step;
    return OPTIM_OK;
}

int optim_param_set_step(optim *o, size_t i, int64_t step)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__check_param(o, "optim_param_set_step", i));
    OPTIM__FAIL_IF(step < 0, OPTIM__E(o), OPTIM_EINVAL, "optim_param_set_step: step = %lld is negative",
                   (long long)step);
    o->params[i].st.step = step;
    return optim__ok(OPTIM__E(o));
}

int optim_param_get_mu_product(const optim *o, size_t i, double *mu_product)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__check_get(o, "optim_param_get_mu_product", mu_product, "mu_product", i, o->nparams,
                                    "param"));
    *mu_product = o->params[i].st.mu_product;
    return OPTIM_OK;
}

int optim_param_set_mu_product(optim *o, size_t i, double mu_product)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__check_param(o, "optim_param_set_mu_product", i));
    /* ASGD keeps its eta (a step size, any finite value >= 0) here; NAdam a product of factors in [0, 1]. */
    if (o->rule == OPTIM_ASGD)
        OPTIM__FAIL_IF(!(mu_product >= 0 && mu_product <= DBL_MAX), OPTIM__E(o), OPTIM_EINVAL,
                       "optim_param_set_mu_product: ASGD's eta = %.10g is not a finite number >= 0", mu_product);
    else
        OPTIM__FAIL_IF(!(mu_product >= 0 && mu_product <= 1), OPTIM__E(o), OPTIM_EINVAL,
                       "optim_param_set_mu_product: mu_product = %.10g is outside [0, 1]", mu_product);
    o->params[i].st.mu_product = mu_product;
    return optim__ok(OPTIM__E(o));
}

int optim_param_reset_state(optim *o, size_t i)
{
    optim__param *pa;
    unsigned held = 0;
    int s;
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__check_param(o, "optim_param_reset_state", i));
    pa = &o->params[i];
    pa->st.step = 0;
    pa->st.mu_product = 1.0;
    pa->st.lr_max = -1.0;
    pa->st.weight_sum = 0.0;
    pa->st.initialized = 0;
    /* The slots it holds (state deferred by optim_set_defer_state holds none:
     * it is fresh state not allocated yet). */
    for (s = 0; s < OPTIM_MAX_SLOTS; s++)
        if (pa->st.slot[s]) held |= 1u << s;
    optim__state_fill(&o->groups[pa->group].hp, pa->n, pa->dims ? pa->ndim : 0, pa->dims, &pa->st, held, pa->sdt);
    if (pa->master) optim__master_sync(o, pa); /* fresh, as when added: from the parameter's memory */
    return optim__ok(OPTIM__E(o));
}

/* ---- Deferred state ---------------------------------------------------------- */

int optim_set_defer_state(optim *o, int defer)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(defer != 0 && defer != 1, OPTIM__E(o), OPTIM_EINVAL, "optim_set_defer_state: defer = %d (0 or 1)",
                   defer);
    o->defer_state = defer;
    return optim__ok(OPTIM__E(o));
}

int optim_get_defer_state(const optim *o)
{
    return o ? o->defer_state : 0;
}

int optim__state_ensure(optim *o, const char *fn, size_t first, size_t last)
{
    size_t i, j;
    int s;
    for (i = first; i < last; i++) {
        optim__param *pa = &o->params[i];
        unsigned need;
        if (!pa->deferred) continue;
        need = optim_hparams_slots(&o->groups[pa->group].hp);
        pa->fresh = 0;
        for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
            if (!((need >> s) & 1u) || pa->st.slot[s]) continue; /* optim_load may have filled some */
            if (optim__pa_slot_empty(o, pa, s)) { /* none for this shape: ready, as add_param's fill leaves it */
                pa->fresh |= 1u << s;
                continue;
            }
            pa->st.slot[s] = (float *)optim__alloc_elems(optim__pa_slot_alloc(o, pa, s), 1);
            if (!pa->st.slot[s]) {
                for (j = first; j <= i; j++) {
                    int t;
                    for (t = 0; t < OPTIM_MAX_SLOTS; t++)
                        if ((o->params[j].fresh >> t) & 1u) {
                            optim__free_floats(o->params[j].st.slot[t]);
                            o->params[j].st.slot[t] = NULL;
                        }
                    o->params[j].fresh = 0;
                }
                return optim__fail(OPTIM__E(o), OPTIM_ENOMEM,
                                   "%s: out of memory for %zu %s of state '%s' of param %zu '%s' (its state was "
                                   "deferred by optim_set_defer_state; nothing was changed)",
                                   fn, pa->n, pa->sdt == OPTIM_FLOAT64 ? "doubles" : "floats",
                                   optim_rule_slot_name(o->rule, s), i, pa->name);
            }
            pa->fresh |= 1u << s;
        }
    }
    for (i = first; i < last; i++) {
        optim__param *pa = &o->params[i];
        if (!pa->deferred) continue;
        optim__state_fill(&o->groups[pa->group].hp, pa->n, pa->dims ? pa->ndim : 0, pa->dims, &pa->st, pa->fresh,
                          pa->sdt);
        pa->fresh = 0;
        pa->deferred = 0;
    }
    return OPTIM_OK;
}

int optim_param_state_bytes(const optim *o, size_t i, size_t *bytes)
{
    int s;
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__check_get(o, "optim_param_state_bytes", bytes, "bytes", i, o->nparams, "param"));
    *bytes = 0;
    for (s = 0; s < OPTIM_MAX_SLOTS; s++)
        if (o->params[i].st.slot[s])
            *bytes += optim__slot_bytes(optim__pa_slot_len(o, &o->params[i], s), o->params[i].sdt);
    if (o->params[i].master) *bytes += OPTIM__BYTES(o->params[i].n, OPTIM_FLOAT32); /* the fp32 master copy */
    return OPTIM_OK;
}

size_t optim_state_bytes(const optim *o)
{
    size_t i, total = 0, b;
    if (!o) return 0;
    for (i = 0; i < o->nparams; i++)
        if (optim_param_state_bytes(o, i, &b) == OPTIM_OK) total += b;
    return total;
}

/* ---- Execution settings ----------------------------------------------------- */

int optim_set_threads(optim *o, int threads)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(threads < 0, OPTIM__E(o), OPTIM_EINVAL, "optim_set_threads: threads = %d is negative", threads);
    OPTIM__FAIL_IF(threads > OPTIM_MAX_THREADS, OPTIM__E(o), OPTIM_EINVAL,
                   "optim_set_threads: threads = %d is above OPTIM_MAX_THREADS (%d)", threads, OPTIM_MAX_THREADS);
    o->threads = threads;
    return optim__ok(OPTIM__E(o));
}

int optim_get_threads(const optim *o)
{
    return o ? o->threads : 0;
}

int optim_set_isa(optim *o, optim_isa isa)
{
    const optim__kernels *kt;
    size_t i;
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(!optim_isa_name(isa), OPTIM__E(o), OPTIM_EINVAL, "optim_set_isa: isa = %d is not a path",
                   (int)isa);
    kt = optim__kernels_get(isa);
    OPTIM__FAIL_IF(!kt, OPTIM__E(o), OPTIM_EUNSUPPORTED,
                   "optim_set_isa: the %s path is not available (not in this build, or not on this CPU)",
                   optim_isa_name(isa));
    for (i = 0; i < o->nparams; i++) {
        const optim__param *pa = &o->params[i];
        optim__task probe;
        memset(&probe, 0, sizeof probe);
        OPTIM__FAIL_IF(optim__task_storage(kt, &probe, pa->master ? OPTIM_FLOAT32 : pa->pdt, pa->gdt, pa->sdt,
                                           optim__rule(o->rule)->slot_kinds) != 0 ||
                           optim__task_prec(kt, &probe, pa->pdt, pa->sdt, pa->flags, pa->p) != 0,
                       OPTIM__E(o),
                       OPTIM_EUNSUPPORTED, "optim_set_isa: the %s path has no storage for %s parameters with %s "
                       "gradients (param %zu '%s')",
                       optim_isa_name(isa), optim_dtype_name(pa->pdt), optim_dtype_name(pa->gdt), i, pa->name);
    }
    o->kt = kt;
    return optim__ok(OPTIM__E(o));
}

optim_isa optim_get_isa(const optim *o)
{
    return o ? o->kt->isa : OPTIM_ISA_AUTO;
}

/* ---- Gradient checks -------------------------------------------------------------- */

int optim_set_nonfinite(optim *o, optim_nonfinite policy)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(policy != OPTIM_NONFINITE_PROPAGATE && policy != OPTIM_NONFINITE_SKIP &&
                       policy != OPTIM_NONFINITE_ERROR,
                   OPTIM__E(o), OPTIM_EINVAL, "optim_set_nonfinite: policy = %d is not a policy (0, 1, 2)",
                   (int)policy);
    o->nonfinite = policy;
    return optim__ok(OPTIM__E(o));
}

optim_nonfinite optim_get_nonfinite(const optim *o)
{
    return o ? o->nonfinite : OPTIM_NONFINITE_PROPAGATE;
}

int optim_last_step_skipped(const optim *o)
{
    return o ? o->last_skipped : 0;
}

int64_t optim_skipped_steps(const optim *o)
{
    return o ? o->skipped : 0;
}

/* Fused norm and value clipping are not combined (the order would be the
 * caller's choice): the one check both setters make, naming both values. */
static int optim__check_one_clip(optim *o, const char *fn, double max_norm, double clip_value)
{
    OPTIM__FAIL_IF(max_norm > 0 && clip_value > 0, OPTIM__E(o), OPTIM_EINVAL,
                   "%s: max_norm = %.10g and clip_value = %.10g: norm and value clipping cannot be fused together "
                   "(which comes first is the caller's choice); turn one off, or clip with the functions of "
                   "optim_clip.h before the step",
                   fn, max_norm, clip_value);
    return OPTIM_OK;
}

int optim_set_clip_grad_norm(optim *o, double max_norm, double norm_type)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(!(max_norm >= 0) || isinf(max_norm), OPTIM__E(o), OPTIM_EINVAL,
                   "optim_set_clip_grad_norm: max_norm = %.10g must be a finite number >= 0 (0 turns clipping off)",
                   max_norm);
    OPTIM__FAIL_IF(!(norm_type > 0), OPTIM__E(o), OPTIM_EINVAL,
                   "optim_set_clip_grad_norm: norm_type = %.10g must be > 0 or INFINITY (as optim_clip_grad_norm)",
                   norm_type);
    OPTIM__FORWARD(optim__check_one_clip(o, "optim_set_clip_grad_norm", max_norm, o->clip_value));
    o->clip_max_norm = max_norm;
    o->clip_norm_type = norm_type;
    return optim__ok(OPTIM__E(o));
}

int optim_set_clip_grad_value(optim *o, double clip_value)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(!(clip_value >= 0) || isinf(clip_value), OPTIM__E(o), OPTIM_EINVAL,
                   "optim_set_clip_grad_value: clip_value = %.10g must be a finite number >= 0 (0 turns it off)",
                   clip_value);
    OPTIM__FORWARD(optim__check_one_clip(o, "optim_set_clip_grad_value", o->clip_max_norm, clip_value));
    {
        /* The clamp is a variant bit: every parameter's next loop must exist with it. */
        double old = o->clip_value;
        size_t i;
        o->clip_value = clip_value;
        for (i = 0; i < o->nparams; i++) {
            int rc = optim__check_next_loop(o, "optim_set_clip_grad_value", &o->params[i],
                                            &o->groups[o->params[i].group].hp);
            if (rc != OPTIM_OK) {
                o->clip_value = old;
                return rc;
            }
        }
    }
    return optim__ok(OPTIM__E(o));
}

double optim_get_clip_grad_value(const optim *o)
{
    return o ? o->clip_value : 0.0;
}

int optim_get_clip_grad_norm(const optim *o, double *max_norm, double *norm_type)
{
    if (!o) return OPTIM_ENULL;
    if (max_norm) *max_norm = o->clip_max_norm;
    if (norm_type) *norm_type = o->clip_norm_type;
    return OPTIM_OK;
}

double optim_last_grad_norm(const optim *o)
{
    return o ? o->last_norm : NAN;
}
