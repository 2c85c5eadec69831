/* step.c: one step of the optimizer object: the tasks of a step, the
 * rebinding of every parameter's memory with its checks, the gradient
 * pre-pass (clipping's norm, non-finite checks), each parameter's constants
 * and loop, and the parallel update. */
#include "optim_internal.h"
#include "clip_internal.h"

#include <float.h>
#include <math.h>
#include <string.h>

#define OPTIM__E(o) (&(o)->err)

/* Sort spans by start (heapsort: in place, no allocation in a step). */
static int optim__span_less(const optim__span *a, const optim__span *b)
{
    return a->lo < b->lo || (a->lo == b->lo && a->hi < b->hi);
}

static void optim__span_sift(optim__span *v, size_t root, size_t n)
{
    for (;;) {
        size_t child = 2 * root + 1;
        optim__span tmp;
        if (child >= n) return;
        if (child + 1 < n && optim__span_less(&v[child], &v[child + 1])) child++;
        if (!optim__span_less(&v[root], &v[child])) return;
        tmp = v[root];
        v[root] = v[child];
        v[child] = tmp;
        root = child;
    }
}

static void optim__span_sort(optim__span *v, size_t n)
{
    size_t i;
    if (n < 2) return;
    for (i = n / 2; i-- > 0;) optim__span_sift(v, i, n);
    for (i = n - 1; i > 0; i--) {
        optim__span tmp = v[0];
        v[0] = v[i];
        v[i] = tmp;
        optim__span_sift(v, 0, i);
    }
}

/* Check that no parameter shares memory with another parameter or with any
 * gradient, for the pointers in params/grads (gradients may share memory with
 * each other: they are only read). O(n log n). */
static int optim__check_all_disjoint(optim *o, const char *fn, const optim__ptrs *ptrs)
{
    size_t i, m = 0;
    const optim__span *far_p = NULL, *far_g = NULL;
    for (i = 0; i < o->nparams; i++) {
        size_t bytes = OPTIM__BYTES(o->params[i].n, o->params[i].pdt);
        const void *p = optim__ptrs_p(ptrs, i), *g = optim__ptrs_g(ptrs, i);
        if (bytes == 0) continue;
        o->spans[m].lo = (uintptr_t)p;
        o->spans[m].hi = (uintptr_t)p + bytes;
        o->spans[m].param = i;
        o->spans[m].is_param = 1;
        m++;
        if (g) {
            o->spans[m].lo = (uintptr_t)g;
            o->spans[m].hi = (uintptr_t)g + OPTIM__BYTES(o->params[i].n, o->params[i].gdt);
            o->spans[m].param = i;
            o->spans[m].is_param = 0;
            m++;
        }
    }
    optim__span_sort(o->spans, m);
    for (i = 0; i < m; i++) {
        const optim__span *x = &o->spans[i];
        const optim__span *hit = NULL;
        if (far_p && far_p->hi > x->lo) hit = far_p;
        else if (x->is_param && far_g && far_g->hi > x->lo) hit = far_g;
        if (hit) {
            return optim__fail(OPTIM__E(o), OPTIM_EOVERLAP,
                               "%s: the %s of param %zu '%s' overlaps the %s of param %zu '%s'", fn,
                               hit->is_param ? "memory" : "gradient", hit->param, o->params[hit->param].name,
                               x->is_param ? "memory" : "gradient", x->param, o->params[x->param].name);
        }
        if (x->is_param) {
            if (!far_p || x->hi > far_p->hi) far_p = x;
        } else {
            if (!far_g || x->hi > far_g->hi) far_g = x;
        }
    }
    return OPTIM_OK;
}

size_t optim__build_tasks(optim *o, size_t *nblocks)
{
    size_t i, total = 0, blocks = 0;
    for (i = 0; i < o->nparams; i++) {
        const optim__param *pa = &o->params[i];
        optim__task *t = &o->tasks[i];
        int s;
        const optim_sparse_grad *sg = o->sparse ? o->sparse[i] : NULL;
        t->start = total;
        t->bstart = blocks;
        t->n = pa->g ? pa->n : 0;
        t->p = pa->p;
        t->g = pa->g;
        if (sg) {
            t->n = sg->nrows * sg->row_len; /* <= n: optim_step_sparse checked the rows */
            t->g = sg->values;
        }
        for (s = 0; s < OPTIM_MAX_SLOTS; s++) t->s[s] = pa->st.slot[s];
        /* Cannot fail: optim_add_param and optim_set_isa checked the types against the path. */
        (void)optim__task_storage(o->kt, t, pa->master ? OPTIM_FLOAT32 : pa->pdt, pa->gdt, pa->sdt,
                                  optim__rule(o->rule)->slot_kinds);
        optim__param_task(o, i, t); /* a master (then p is the master), stochastic rounding */
        if (sg) {
            t->rows = sg->rows;
            t->row_len = sg->row_len;
        }
        t->loop = NULL;
        t->pre = NULL;
        t->red = NULL;
        t->pre_reads = t->pre_writes = t->red_reads = 0;
        t->spart = NULL; /* optim__stats_begin sets it in a step with statistics */
        t->sloop = NULL;
        t->ema = NULL;   /* optim__ema_begin sets it in a step with an EMA */
        t->ek = NULL;
        t->k = &o->ks[i];
        t->frows = t->fcols = 0;
        if (o->rule == OPTIM_ADAFACTOR && pa->dims && pa->ndim >= 2 && t->n > 0) {
            t->frows = (size_t)pa->dims[pa->ndim - 2];
            t->fcols = (size_t)pa->dims[pa->ndim - 1];
        }
        t->w = NULL;
        t->eta = 0.0f;
        total += t->n;
        blocks += OPTIM__NBLOCKS(t->n);
    }
    *nblocks = blocks;
    return total;
}

size_t optim__param_of_block(const optim *o, size_t b)
{
    size_t i;
    for (i = 0; i < o->nparams; i++)
        if (b < o->tasks[i].bstart + OPTIM__NBLOCKS(o->tasks[i].n)) return i;
    return o->nparams;
}

int optim__norm_all(optim *o, size_t nblocks, optim__norm kind, double p, double *norm, size_t *bad_param,
                    const char **bad_name, optim_error *err)
{
    const double *partials = o->partials;
    const unsigned char *bad = o->bad;
    size_t b;
    *bad_param = 0;
    *bad_name = NULL;
    if (o->ext.combine) {
        optim_error e;
        int rc;
        e.code = OPTIM_OK;
        e.message[0] = '\0';
        rc = o->ext.combine(o->ext.ctx, o->partials, o->bad, nblocks, &partials, &bad, &nblocks, &e);
        if (rc != OPTIM_OK) return optim__fail(err, rc, "%s", e.message);
    }
    *norm = optim__norm_finish(partials, nblocks, kind, p);
    for (b = 0; b < nblocks && !bad[b]; b++) continue;
    if (b == nblocks) return OPTIM_OK;
    if (o->ext.combine) {
        o->ext.name_block(o->ext.ctx, b, bad_param, bad_name);
        if (!*bad_name) *bad_name = "?";
    } else {
        *bad_param = optim__param_of_block(o, b);
        *bad_name = o->params[*bad_param].name;
    }
    return OPTIM_OK;
}

int optim__ext_set_hooks(optim *o, const optim_ext_hooks *hooks)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(hooks && hooks->combine && !hooks->name_block, OPTIM__E(o), OPTIM_ENULL,
                   "optim__ext_set_hooks: combine without name_block");
    if (hooks && hooks->combine)
        o->ext = *hooks;
    else
        memset(&o->ext, 0, sizeof o->ext);
    return optim__ok(OPTIM__E(o));
}

int optim__ext_set_sr_origin(optim *o, size_t i, uint64_t param, uint64_t first)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(i >= o->nparams, OPTIM__E(o), OPTIM_ERANGE,
                   "optim__ext_set_sr_origin: param %zu does not exist (%zu params)", i, o->nparams);
    /* The kernels draw a chunk's 512 random numbers under one key (src/kernels/convert.h). */
    OPTIM__FAIL_IF(first % 512 != 0, OPTIM__E(o), OPTIM_EINVAL,
                   "optim__ext_set_sr_origin: first = %llu is not a multiple of 512", (unsigned long long)first);
    /* Element first + k of the model's parameter draws element k's numbers: past 2^64 the index would wrap
     * and the slice's last elements draw the numbers of the parameter's first ones. */
    OPTIM__FAIL_IF(first > UINT64_MAX - (uint64_t)o->params[i].n, OPTIM__E(o), OPTIM_EINVAL,
                   "optim__ext_set_sr_origin: first = %llu: param %zu's %zu elements would pass element 2^64 - 1",
                   (unsigned long long)first, i, o->params[i].n);
    o->params[i].sr_param = param;
    o->params[i].sr_first = first;
    return optim__ok(OPTIM__E(o));
}

int optim__ext_set_counters(optim *o, int64_t steps, int64_t skipped)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(steps < 0 || skipped < 0, OPTIM__E(o), OPTIM_EINVAL,
                   "optim__ext_set_counters: steps = %lld and skipped = %lld must be >= 0", (long long)steps,
                   (long long)skipped);
    o->steps = steps;
    o->skipped = skipped;
    return optim__ok(OPTIM__E(o));
}

/* The read of the gradients before the update, when clipping or a
 * non-finite policy asks for it: one pass computing the clip norm and
 * finding NaN/Inf together (over every rank's blocks when an extension
 * combines them, src/optim_ext.h). Sets *gscale to the clip factor (1 if
 * none). Returns OPTIM_OK, or 1 when the step must be skipped (*rc then
 * holds what optim_step returns). */
static int optim__prepass(optim *o, size_t nblocks, double *gscale, int *rc)
{
    optim__norm kind = optim__norm_kind(o->clip_max_norm > 0 ? o->clip_norm_type : 2.0);
    double p = o->clip_norm_type, norm;
    size_t bad_i, j;
    const char *bad_name;
    int all64 = 1;
    *gscale = 1.0;
    optim__reduce_run(o->kt, o->tasks, o->nparams, nblocks, kind, p, o->partials, o->bad, o->threads);
    *rc = optim__norm_all(o, nblocks, kind, p, &norm, &bad_i, &bad_name, OPTIM__E(o));
    if (*rc != OPTIM_OK) return 1;
    norm *= optim__ls_inv(o); /* the norm of the unscaled gradients (exact for a power-of-two scale) */
    o->last_norm = norm;
    if (o->ls.mode == OPTIM_LOSS_SCALE_DYNAMIC && bad_name) {
        /* An overflow under dynamic loss scaling: skipped, whatever the non-finite policy; the scale backs off. */
        optim__skip_step(o);
        optim__ls_update(o, 1);
        *rc = optim__ok(OPTIM__E(o));
        return 1;
    }
    if (o->nonfinite != OPTIM_NONFINITE_PROPAGATE && bad_name) {
        optim__skip_step(o);
        if (o->nonfinite == OPTIM_NONFINITE_ERROR)
            *rc = optim__fail(OPTIM__E(o), OPTIM_ENONFINITE,
                              "optim_step: the gradient of param %zu '%s' holds NaN or Inf; step skipped", bad_i,
                              bad_name);
        else
            *rc = optim__ok(OPTIM__E(o));
        return 1;
    }
    if (o->clip_max_norm > 0) {
        for (j = 0; j < o->nparams; j++)
            if (o->tasks[j].n > 0 && o->params[j].gdt != OPTIM_FLOAT64) all64 = 0;
        if (all64) {
            /* Every gradient float64: torch's float64 norm and factor. */
            *gscale = optim__clip_factor64(norm, o->clip_max_norm);
        } else {
            /* torch's float32 norm (inf where its float32 sum overflows) and factor
             * min(1, max_norm / (norm + 1e-6)) in torch's float32 operations, as
             * optim_clip_grad_norm (src/clip.c). A NaN norm gives a NaN factor, as in torch. */
            o->last_norm = optim__clip_total_norm(norm, p);
            *gscale = optim__clip_factor(o->last_norm, o->clip_max_norm);
        }
    }
    return OPTIM_OK;
}

/* Pass 1 of a rule with a per-tensor reduction (LAMB, LARS: rule.h), after
 * every check: each tensor's pre and sums, block by block; then each
 * tensor's two sums, its blocks' partials added in block order, into its
 * constants by the rule's trust hook. */
static void optim__reduce_pass(optim *o, size_t nblocks, optim__step_in *in, int factored)
{
    size_t i, b;
    if (factored)
        optim__factored_run(o->kt, o->tasks, o->nparams, nblocks, o->rpartials, o->threads);
    else
        optim__reduce_rule_run(o->tasks, o->nparams, nblocks, o->rpartials, o->threads);
    for (i = 0; i < o->nparams; i++) {
        const optim__task *t = &o->tasks[i];
        double sq[2] = {0.0, 0.0};
        if (!t->red && !(o->ks[i].c.reduce & OPTIM__RED_FACTORED)) continue;
        if (t->n == 0) continue;
        for (b = t->bstart; b < t->bstart + OPTIM__NBLOCKS(t->n); b++) {
            sq[0] += o->rpartials[2 * b];
            sq[1] += o->rpartials[2 * b + 1];
        }
        in->lr = optim__group_lr(&o->groups[o->params[i].group]);
        in->n = t->n;
        optim__trust(&o->groups[o->params[i].group].hp, in, sq, &o->ks[i]);
    }
}

int optim__step(optim *o)
{
    size_t i, total, nblocks;
    int reduce = 0, factored = 0;
    optim__step_in in;
    /* With extension hooks (src/optim_ext.h) a rank owning no tensor still steps: it takes part in the combine. */
    OPTIM__FAIL_IF(o->nparams == 0 && !o->ext.combine, OPTIM__E(o), OPTIM_ESTATE,
                   "optim_step: the optimizer has no parameters");
    OPTIM__FAIL_IF(o->sf_eval, OPTIM__E(o), OPTIM_ESTATE,
                   "optim_step: the %s optimizer is in eval mode (the parameters hold x); call "
                   "optim_schedule_free_train first (the reference refuses a step in eval mode too); nothing changed",
                   optim_rule_name(o->rule));
    OPTIM__FAIL_IF(o->ema_swapped, OPTIM__E(o), OPTIM_ESTATE,
                   "optim_step: the parameters hold the EMA (optim_ema_swap); swap back before stepping; nothing "
                   "changed");
    OPTIM__FORWARD(optim__state_ensure(o, "optim_step", 0, o->nparams)); /* optim_set_defer_state */
    for (i = 0; i < o->nparams; i++) {
        OPTIM__FAIL_IF(optim__has_grad(o, i) && o->params[i].st.step == INT64_MAX, OPTIM__E(o), OPTIM_ESTATE,
                       "optim_step: the step counter of param %zu '%s' is at its maximum", i, o->params[i].name);
        /* torch: "SparseAdam does not support dense gradients, please consider Adam instead". */
        OPTIM__FAIL_IF(o->params[i].g && optim__rule(o->rule)->sparse_only, OPTIM__E(o), OPTIM_EUNSUPPORTED,
                       "optim_step: param %zu '%s' has a dense gradient, and %s takes sparse gradients only "
                       "(optim_step_sparse; adam for dense ones); nothing changed",
                       i, o->params[i].name, optim_rule_name(o->rule));
    }
    total = optim__build_tasks(o, &nblocks);
    if (o->rule == OPTIM_MUON) OPTIM__FORWARD(optim__muon_check(o)); /* src/muon.c */
    optim__stats_begin(o);
    in.gscale = 1.0;
    in.n = 0;
    /* The bound clamps exactly as torch.clamp(g, -v, v) with v a Python float: the kernels round it to the
     * compute type (torch compares a float32 gradient with v rounded to float32, a float64 one with v). */
    in.gclip = o->clip_value > 0 ? o->clip_value : INFINITY;
    o->last_skipped = 0;
    o->last_norm = NAN;
    if (o->clip_max_norm > 0 || o->nonfinite != OPTIM_NONFINITE_PROPAGATE || o->ls.mode == OPTIM_LOSS_SCALE_DYNAMIC) {
        int rc = OPTIM_OK;
        if (optim__prepass(o, nblocks, &in.gscale, &rc)) return rc;
    }
    in.gscale *= optim__ls_inv(o); /* loss scaling's unscale, with the clip factor (1 without) */
    /* Value clipping clamps the unscaled gradient (GradScaler's unscale_ before clip_grad_value_): the kernels
     * clamp the raw one, scaled by the loss scale, at v * scale (exact for a power-of-two scale; an infinite
     * bound clamps nothing, as no finite unscaled gradient then exceeds v). */
    if (o->clip_value > 0 && optim__ls_inv(o) != 1.0) in.gclip = o->clip_value / optim__ls_inv(o);
    in.eps_type = 0.0;
    if (o->rule == OPTIM_ADAFACTOR) {
        /* eps1 = None: torch 2.x's _single_tensor_adafactor sets it from the first parameter of the group's
         * list (those with a gradient, in the group's order) and keeps it for the others. */
        for (i = 0; i < o->ngroups; i++) o->groups[i].eps_first = 0.0;
        for (i = 0; i < o->nparams; i++) {
            optim__group *gr = &o->groups[o->params[i].group];
            if (optim__has_grad(o, i) && gr->eps_first == 0.0)
                gr->eps_first = o->params[i].ct == OPTIM__CT_F64 ? DBL_EPSILON : (double)FLT_EPSILON;
        }
    }
    /* Each parameter's constants and loop, on a copy of its state: a variant
     * without a loop instance is refused here, before anything changed. */
    for (i = 0; i < o->nparams; i++) {
        optim__param *pa = &o->params[i];
        const optim_hparams *hp = &o->groups[pa->group].hp;
        optim__task *t = &o->tasks[i];
        if (!optim__has_grad(o, i)) continue;
        in.lr = optim__group_lr(&o->groups[pa->group]);
        in.quantized = pa->sdt == OPTIM_INT8_BLOCK;
        if (o->rule == OPTIM_ADAFACTOR) in.eps_type = o->groups[pa->group].eps_first;
        o->next[i] = pa->st;
        optim__prepare(hp, &in, &o->next[i], &o->ks[i]);
        if (pa->flags & OPTIM_PARAM_COMPLEX) o->ks[i].c.variant |= OPTIM__V_COMPLEX;
        if (t->rows || (o->sparse && o->sparse[i])) o->ks[i].c.variant |= optim__rule(o->rule)->sparse_variant;
        t->loop = optim__loop_get(o->kt, o->rule, pa->ct, o->ks[i].c.variant, &t->reads, &t->writes);
        OPTIM__FAIL_IF(!t->loop, OPTIM__E(o), OPTIM_EUNSUPPORTED,
                       "optim_step: the %s path has no %s loop for variant 0x%x (%s parameters, %s gradients) of "
                       "param %zu '%s'; nothing changed",
                       optim_isa_name(o->kt->isa), optim_rule_name(o->rule), o->ks[i].c.variant,
                       optim_dtype_name(pa->pdt), optim_dtype_name(pa->gdt), i, pa->name);
        /* With statistics: the fused instance of the same variant (NULL: measured through copies). */
        t->sloop = t->spart && !o->stats_copies ? optim__sloop_get(o->kt, o->rule, pa->ct, o->ks[i].c.variant)
                                                 : NULL;
        OPTIM__FAIL_IF(optim__rloops_get(o->kt, o->rule, pa->ct, o->ks[i].c.variant,
                                         o->ks[i].c.reduce & ~OPTIM__RED_FACTORED, t) != 0,
                       OPTIM__E(o), OPTIM_EUNSUPPORTED,
                       "optim_step: the %s path has no %s reduction pass for variant 0x%x of param %zu '%s'; "
                       "nothing changed",
                       optim_isa_name(o->kt->isa), optim_rule_name(o->rule), o->ks[i].c.variant, i, pa->name);
        if (o->ks[i].c.reduce) reduce = 1;
        if (o->ks[i].c.reduce & OPTIM__RED_FACTORED) factored = 1;
    }
    /* A sharded run (liboptim_mpi) holds pieces of tensors: per-tensor norms would need every rank's pieces. */
    OPTIM__FAIL_IF(reduce && o->ext.combine && !o->ext.whole_tensors, OPTIM__E(o), OPTIM_EUNSUPPORTED,
                   "optim_step: %s's per-tensor reductions are not supported on a sharded optimizer "
                   "(liboptim_mpi); nothing changed",
                   optim_rule_name(o->rule));
    for (i = 0; i < o->nparams; i++) {
        optim__param *pa = &o->params[i];
        if (!optim__has_grad(o, i)) continue;
        pa->st.step = o->next[i].step;
        pa->st.mu_product = o->next[i].mu_product;
        pa->st.lr_max = o->next[i].lr_max;
        pa->st.weight_sum = o->next[i].weight_sum;
        /* Stochastic rounding's keys: (seed, parameter, the step it now takes, stream). */
        if (pa->flags & (OPTIM_PARAM_STOCHASTIC_ROUNDING | OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING))
            optim__task_sr_keys(&o->tasks[i], o->seed, pa->sr_param, pa->st.step, pa->sr_first);
    }
    if (reduce) optim__reduce_pass(o, nblocks, &in, factored);
    optim__ema_begin(o); /* include/optim_ema.h: each dense task's EMA stream */
    if (o->rule == OPTIM_MUON)
        optim__muon_run(o); /* two passes around the matrix products, parameter by parameter */
    else
        optim__run(o->kt, factored ? optim__range_factored : optim__range_update, o->tasks, o->nparams, total,
                   o->threads);
    for (i = 0; i < o->nparams; i++) {
        optim__param *pa = &o->params[i];
        if (optim__has_grad(o, i)) optim__finish(&o->groups[pa->group].hp, &pa->st);
    }
    if (o->steps < INT64_MAX) o->steps++; /* saturates: a loaded counter may be at the top */
    optim__stats_end(o);
    optim__ema_end(o); /* the parameters the update pass did not average; the count */
    optim__ls_update(o, 0);
    optim__schedules_advance(o);
    return optim__ok(OPTIM__E(o));
}

int optim_step(optim *o)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__sam_guard(o, "optim_step"));
    return optim__step(o);
}

int optim__rebind(optim *o, const char *fn, size_t count, const optim__ptrs *x)
{
    size_t i;
    int changed = 0;
    OPTIM__FAIL_IF(count != o->nparams, OPTIM__E(o), OPTIM_ESIZE, "%s: count = %zu but the optimizer has %zu params",
                   fn, count, o->nparams);
    OPTIM__FAIL_IF(count > 0 && !optim__ptrs_given(x, 1), OPTIM__E(o), OPTIM_ENULL, "%s: params is NULL", fn);
    OPTIM__FAIL_IF(count > 0 && !optim__ptrs_given(x, 0), OPTIM__E(o), OPTIM_ENULL, "%s: grads is NULL", fn);
    for (i = 0; i < count; i++) {
        const optim__param *pa = &o->params[i];
        void *p = optim__ptrs_p(x, i);
        const void *g = optim__ptrs_g(x, i);
        OPTIM__FAIL_IF(!p && pa->n > 0, OPTIM__E(o), OPTIM_ENULL, "%s: params[%zu] ('%s') is NULL", fn, i, pa->name);
        if (x->floats) OPTIM__FORWARD(optim__check_float32(o, fn, i, "optim_step_with_data"));
        OPTIM__FORWARD(optim__check_align(o, fn, "memory", p, pa->pdt, i, pa->name));
        OPTIM__FORWARD(optim__check_align(o, fn, "gradient", g, pa->gdt, i, pa->name));
        if (p != pa->p || g != pa->g) changed = 1;
    }
    if (changed) {
        OPTIM__FORWARD(optim__check_all_disjoint(o, fn, x));
        for (i = 0; i < count; i++) {
            o->params[i].p = optim__ptrs_p(x, i);
            o->params[i].g = optim__ptrs_g(x, i);
        }
    }
    return OPTIM_OK;
}

int optim_step_with(optim *o, size_t count, float *const *params, const float *const *grads)
{
    optim__ptrs x = {NULL, NULL, params, grads, 1};
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__sam_guard(o, "optim_step_with"));
    OPTIM__FORWARD(optim__rebind(o, "optim_step_with", count, &x));
    return optim__step(o);
}

int optim_step_with_data(optim *o, size_t count, void *const *params, const void *const *grads)
{
    optim__ptrs x = {params, grads, NULL, NULL, 0};
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__sam_guard(o, "optim_step_with_data"));
    OPTIM__FORWARD(optim__rebind(o, "optim_step_with_data", count, &x));
    return optim__step(o);
}

int64_t optim_step_count(const optim *o)
{
    return o ? o->steps : 0;
}

