/* ckpt_match.c: the checkpoint API (optim_checkpoint.h) over the format
 * (ckpt_format.c) and the file I/O (ckpt_file.c): a save encodes the
 * optimizer into memory or into a file replaced atomically; a load decodes
 * and checks the bytes into a plan, matches the plan against the optimizer
 * (rule, groups, every parameter by name or position, sizes, shapes; memory
 * for the state arrays it lacks), and only then commits it, which cannot
 * fail. State memory is never freed by a load (a binding may hold views of
 * it): a slot the checkpoint lacks is reset. */
#include "ckpt_file.h"
#include "ckpt_format.h"

#include <math.h>
#include <stdio.h>

/* ---- Saving ------------------------------------------------------------------- */

static int ck_produce(void *pctx, optim__ck_emit emit, void *ectx)
{
    const optim *o = (const optim *)pctx;
    return optim__ck_encode(o, optim__ck_size(o), emit, ectx);
}

int optim__save_buffer_ops(optim *o, void **data, size_t *size, const optim__ck_ops *ops)
{
    uint64_t total;
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__sam_guard(o, "optim_save_buffer"));
    OPTIM__FAIL_IF(!data || !size, &o->err, OPTIM_ENULL, "optim_save_buffer: %s is NULL", !data ? "data" : "size");
    *data = NULL;
    total = optim__ck_size(o);
    OPTIM__FAIL_IF(total > SIZE_MAX, &o->err, OPTIM_ENOMEM, "optim_save_buffer: %llu bytes do not fit in memory",
                   (unsigned long long)total);
    *data = optim__ck_malloc(ops, (size_t)total);
    OPTIM__FAIL_IF(!*data, &o->err, OPTIM_ENOMEM, "optim_save_buffer: out of memory for %llu bytes",
                   (unsigned long long)total);
    optim__ck_encode_mem(o, total, (unsigned char *)*data);
    *size = (size_t)total;
    return optim__ok(&o->err);
}

int optim__save_ops(optim *o, const char *path, const optim__ck_ops *ops)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__sam_guard(o, "optim_save"));
    OPTIM__FAIL_IF(!path || !*path, &o->err, OPTIM_ENULL, "optim_save: path is %s", path ? "empty" : "NULL");
    OPTIM__FORWARD(optim__ck_file_replace(path, "optim_save", optim__ck_size(o), ck_produce, o, ops, &o->err));
    return optim__ok(&o->err);
}

int optim_save_buffer(optim *o, void **data, size_t *size)
{
    return optim__save_buffer_ops(o, data, size, &optim__ck_default_ops);
}

int optim_save(optim *o, const char *path)
{
    return optim__save_ops(o, path, &optim__ck_default_ops);
}

/* ---- Matching and committing ------------------------------------------------ */

/* How a decoded plan lands in an optimizer: target[j] is the optimizer's
 * index of the plan's param j; fresh holds state arrays allocated for slots
 * the optimizer lacks (installed by the commit, freed otherwise). */
typedef struct ck_match_plan {
    size_t *target;
    float *(*fresh)[OPTIM_MAX_SLOTS];
    unsigned char *taken; /* the optimizer's param i is matched already */
    optim__param *ema_fresh; /* per plan param: the EMA arrays (ema, ema_stash) allocated for it, or NULLs */
} ck_match_plan;

static void ck_match_free(ck_match_plan *m, size_t nparams)
{
    size_t j;
    int s;
    if (m->fresh)
        for (j = 0; j < nparams; j++)
            for (s = 0; s < OPTIM_MAX_SLOTS; s++) optim__free_floats(m->fresh[j][s]);
    if (m->ema_fresh)
        for (j = 0; j < nparams; j++) optim__ema_free(&m->ema_fresh[j]);
    free(m->ema_fresh);
    free(m->target);
    free(m->fresh);
    free(m->taken);
    memset(m, 0, sizeof *m);
}

/* The optimizer's param of the plan's param pp, by name; o->nparams if none. */
static size_t ck_find_name(const optim *o, const optim__ck_param_plan *pp)
{
    size_t i;
    /* Names are few (a model's tensors); a linear search per name keeps this simple. */
    for (i = 0; i < o->nparams; i++)
        if (strlen(o->params[i].name) == pp->name_len && memcmp(o->params[i].name, pp->name, pp->name_len) == 0)
            return i;
    return o->nparams;
}

/* Match the plan's params to o's and allocate the slots o lacks. */
static int ck_match(optim *o, const optim__ck_plan *pl, optim_match match, const char *what,
                    const optim__ck_ops *ops, ck_match_plan *m)
{
    size_t i, j;
    int s;
    memset(m, 0, sizeof *m);
    OPTIM__FAIL_IF(pl->rule != o->rule, &o->err, OPTIM_EMISMATCH,
                   "%s: the checkpoint is of rule %s, this optimizer's rule is %s", what, optim_rule_name(pl->rule),
                   optim_rule_name(o->rule));
    OPTIM__FAIL_IF(pl->ngroups != o->ngroups, &o->err, OPTIM_EMISMATCH, "%s: has %zu groups, the optimizer %zu", what,
                   pl->ngroups, o->ngroups);
    OPTIM__FAIL_IF(pl->nparams != o->nparams, &o->err, OPTIM_EMISMATCH, "%s: has %zu params, the optimizer %zu", what,
                   pl->nparams, o->nparams);
    m->target = (size_t *)optim__ck_calloc(ops, o->nparams, sizeof *m->target);
    m->fresh = m->target ? (float *(*)[OPTIM_MAX_SLOTS])optim__ck_calloc(ops, o->nparams, sizeof *m->fresh) : NULL;
    m->taken = m->fresh ? (unsigned char *)optim__ck_calloc(ops, o->nparams, 1) : NULL;
    OPTIM__FAIL_IF(!m->taken, &o->err, OPTIM_ENOMEM, "%s: out of memory for matching %zu params", what, o->nparams);
    for (j = 0; j < pl->nparams; j++) {
        const optim__ck_param_plan *pp = &pl->params[j];
        const optim__param *pa;
        if (match == OPTIM_MATCH_POSITION) {
            i = j;
        } else {
            i = ck_find_name(o, pp);
            OPTIM__FAIL_IF(i == o->nparams, &o->err, OPTIM_EMISMATCH,
                           "%s: param '%.*s' of the checkpoint is not a param of the optimizer", what,
                           (int)(pp->name_len < 200 ? pp->name_len : 200), pp->name);
            OPTIM__FAIL_IF(m->taken[i], &o->err, OPTIM_EMISMATCH,
                           "%s: two params are named '%s' (in the checkpoint or the optimizer): match by position "
                           "instead",
                           what, o->params[i].name);
        }
        pa = &o->params[i];
        m->taken[i] = 1;
        m->target[j] = i;
        OPTIM__FAIL_IF(pa->n != pp->n, &o->err, OPTIM_EMISMATCH,
                       "%s: param %zu '%s' has %zu elements in the optimizer, %zu in the checkpoint", what, i, pa->name,
                       pa->n, pp->n);
        /* Shapes: compared when both sides were given one; the default [n]
         * (never given, or a format-1 file) matches any shape of n elements. */
        if (pa->dims && pp->shape_given) {
            size_t k;
            int same = pa->ndim == pp->ndim;
            for (k = 0; same && k < pa->ndim; k++) same = (uint64_t)pa->dims[k] == optim__ck_dim(pp, k);
            if (!same) {
                char a[96], b[96];
                return optim__fail(&o->err, OPTIM_EMISMATCH,
                                   "%s: param %zu '%s' has shape %s in the optimizer, %s in the checkpoint", what, i,
                                   pa->name, optim__ck_shape_text(a, sizeof a, pa->ndim, pa->dims, NULL),
                                   optim__ck_shape_text(b, sizeof b, pp->ndim, NULL, pp));
            }
        }
        /* A rule whose slots follow the shape (Adafactor: row_var and col_var over the last two dimensions):
         * each saved slot's length must be the optimizer's for its shape (given, or none: [n]). */
        for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
            const size_t want = optim__slot_len(o->rule, s, pa->n, pa->dims ? pa->ndim : 0, pa->dims);
            if (!((pp->mask >> s) & 1u) || want == pp->len[s]) continue;
            {
                char a[96], b[96];
                return optim__fail(&o->err, OPTIM_EMISMATCH,
                                   "%s: param %zu '%s': its %s state '%s' holds %zu elements in the checkpoint (shape "
                                   "%s), %zu for its shape %s in the optimizer (set the shape the state was saved "
                                   "with: optim_param_set_shape)",
                                   what, i, pa->name, optim_rule_name(o->rule), optim_rule_slot_name(o->rule, s),
                                   pp->len[s], pp->shape_given ? optim__ck_shape_text(b, sizeof b, pp->ndim, NULL, pp)
                                                               : "none given",
                                   want, pa->dims ? optim__ck_shape_text(a, sizeof a, pa->ndim, pa->dims, NULL)
                                                  : "none given");
            }
        }
        OPTIM__FAIL_IF(pa->group != pp->group, &o->err, OPTIM_EMISMATCH,
                       "%s: param %zu '%s' is in group %zu in the optimizer, %zu in the checkpoint", what, i, pa->name,
                       pa->group, pp->group);
        /* float32, bfloat16, float16 and int8_block state convert into each
         * other (widened exactly, rounded to nearest even, dequantized or
         * quantized); float64 state is float64's. */
        OPTIM__FAIL_IF(pp->mask && pa->sdt != pp->dtype && (pa->sdt == OPTIM_FLOAT64 || pp->dtype == OPTIM_FLOAT64),
                       &o->err, OPTIM_EMISMATCH,
                       "%s: param %zu '%s' has %s state in the optimizer, %s in the checkpoint", what, i, pa->name,
                       optim_dtype_name(pa->sdt), optim_dtype_name(pp->dtype));
    }
    /* A master in the file needs one in the optimizer (dropping it would lose the parameter's precision);
     * an optimizer's master the file lacks is re-initialised from the parameter's memory. */
    for (j = 0; j < pl->nparams; j++)
        OPTIM__FAIL_IF(pl->masters && pl->masters[j] && !o->params[m->target[j]].master, &o->err, OPTIM_EMISMATCH,
                       "%s: the checkpoint holds an fp32 master of param %zu '%s', which has none in the optimizer "
                       "(add it with OPTIM_PARAM_MASTER)",
                       what, m->target[j], o->params[m->target[j]].name);
    /* The EMA (optim_ema.h): each average of the parameter's compute type; a swapped file's set-aside values
     * of its 16-bit type, exactly when the parameter has one; memory for the averages the optimizer lacks. */
    if (pl->has_ema) {
        m->ema_fresh = (optim__param *)optim__ck_calloc(ops, pl->nparams ? pl->nparams : 1, sizeof *m->ema_fresh);
        OPTIM__FAIL_IF(!m->ema_fresh, &o->err, OPTIM_ENOMEM, "%s: out of memory for matching %zu EMA records", what,
                       pl->nparams);
    }
    for (j = 0; pl->has_ema && j < pl->nparams; j++) {
        const optim__param *pa = &o->params[m->target[j]];
        const optim_dtype et = pa->ct == OPTIM__CT_F64 ? OPTIM_FLOAT64 : OPTIM_FLOAT32;
        const int half = pa->pdt == OPTIM_BFLOAT16 || pa->pdt == OPTIM_FLOAT16;
        OPTIM__FAIL_IF(pl->ema_dtype[j] != et, &o->err, OPTIM_EMISMATCH,
                       "%s: param %zu '%s' keeps a %s EMA in the optimizer, %s in the checkpoint", what, m->target[j],
                       pa->name, optim_dtype_name(et), optim_dtype_name(pl->ema_dtype[j]));
        OPTIM__FAIL_IF(pl->ema_swapped && (half ? pl->ema_stash_dtype[j] != pa->pdt : pl->ema_stash[j] != NULL),
                       &o->err, OPTIM_EMISMATCH,
                       "%s: param %zu '%s' (%s) and the swapped EMA of the checkpoint (set-aside value %s) differ",
                       what, m->target[j], pa->name, optim_dtype_name(pa->pdt),
                       pl->ema_stash[j] ? optim_dtype_name(pl->ema_stash_dtype[j]) : "none");
        if (pa->ema) continue;
        m->ema_fresh[j].n = pa->n;
        m->ema_fresh[j].ct = pa->ct;
        m->ema_fresh[j].pdt = pa->pdt;
        m->ema_fresh[j].ema = optim__ck_alloc_elems(ops, pa->n ? pa->n : 1, et);
        m->ema_fresh[j].ema_stash = half ? optim__ck_alloc_elems(ops, pa->n ? pa->n : 1, pa->pdt) : NULL;
        OPTIM__FAIL_IF(!m->ema_fresh[j].ema || (half && !m->ema_fresh[j].ema_stash), &o->err, OPTIM_ENOMEM,
                       "%s: param %zu '%s': out of memory for its EMA of %zu elements", what, m->target[j], pa->name,
                       pa->n);
    }
    for (j = 0; j < pl->nparams; j++) {
        const optim__ck_param_plan *pp = &pl->params[j];
        for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
            if (!((pp->mask >> s) & 1u) || o->params[m->target[j]].st.slot[s]) continue;
            if (pp->len[s] == 0 && pp->n > 0) continue; /* empty for this shape (Adafactor): never allocated */
            const optim_dtype sdt = o->params[m->target[j]].sdt;
            m->fresh[j][s] = optim__ck_alloc_elems(ops, pp->len[s], sdt);
            OPTIM__FAIL_IF(!m->fresh[j][s], &o->err, OPTIM_ENOMEM,
                           "%s: param %zu '%s': out of memory for %zu %s of state '%s'", what, m->target[j],
                           o->params[m->target[j]].name, pp->n,
                           sdt == OPTIM_FLOAT64 ? "doubles" : sdt == OPTIM_FLOAT32 ? "floats" : sdt == OPTIM_INT8_BLOCK ? "codes" : "halves",
                           optim_rule_slot_name(o->rule, s));
        }
    }
    return OPTIM_OK;
}

/* Install the plan: cannot fail. */
static void ck_commit(optim *o, optim__ck_plan *pl, ck_match_plan *m)
{
    size_t i, j;
    int s;
    for (i = 0; i < pl->ngroups; i++) {
        optim__group *g = &o->groups[i];
        g->hp = pl->groups[i].hp;
        optim_schedule_free(g->sched);
        g->sched = pl->groups[i].sched;
        g->sched_t = pl->groups[i].sched_t;
        pl->groups[i].sched = NULL;
    }
    for (j = 0; j < pl->nparams; j++) {
        const optim__ck_param_plan *pp = &pl->params[j];
        optim__param *pa = &o->params[m->target[j]];
        for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
            if (((pp->mask >> s) & 1u) && pp->len[s] == 0 && pp->n > 0) {
                /* A slot this shape leaves empty (Adafactor): nothing to read, nothing allocated. */
            } else if ((pp->mask >> s) & 1u) {
                if (!pa->st.slot[s]) {
                    pa->st.slot[s] = m->fresh[j][s];
                    m->fresh[j][s] = NULL;
                }
                optim__ck_read_elems_as(pa->st.slot[s], pa->sdt, pp->data[s], pp->len[s], pp->dtype,
                                        optim__rule(o->rule)->slot_kinds[s]);
            } else if (pa->st.slot[s]) {
                /* Not allocated when saved (the saved options do not need it): reset
                 * it as a fresh allocation would be, but keep the memory, which
                 * bindings may be viewing. */
                optim__slot_reset(&o->groups[pa->group].hp,
                                  optim__slot_len(o->rule, s, pa->n, pa->dims ? pa->ndim : 0, pa->dims), &pa->st, s,
                                  pa->sdt);
            }
        }
        pa->st.step = pp->step;
        pa->st.mu_product = pp->mu_product;
        pa->st.lr_max = pl->sf ? pl->sf[2 * j] : -1.0;
        pa->st.weight_sum = pl->sf ? pl->sf[2 * j + 1] : 0.0;
        pa->st.initialized = (pa->st.initialized & ~pp->mask) | pp->initialized;
        /* The file holds every slot its options need (the reader checks it;
         * deferred state is written as fresh state), so state deferred by
         * optim_set_defer_state is allocated now. */
        pa->deferred = 0;
        if (pa->master) {
            if (pl->masters && pl->masters[j])
                optim__ck_read_elems(pa->master, pl->masters[j], pa->n, OPTIM_FLOAT32);
            else
                optim__master_sync(o, pa);
        }
    }
    /* Reduced precision: the file's, or the defaults without a PREC section. */
    o->seed = pl->seed;
    if (pl->has_prec && pl->ls.mode != OPTIM_LOSS_SCALE_OFF) {
        o->ls = pl->ls;
        o->ls_scale = pl->ls_scale;
        o->ls_tracker = pl->ls_tracker;
    } else {
        memset(&o->ls, 0, sizeof o->ls);
        o->ls.mode = OPTIM_LOSS_SCALE_OFF;
        o->ls_scale = 1.0;
        o->ls_tracker = 0;
    }
    o->sf_eval = pl->has_sf ? pl->sf_eval : 0;
    /* The EMA (include/optim_ema.h, "Loading"): the file's, turned on with its settings; a file without one
     * leaves the optimizer's settings and restarts its averages (count 0: the next step copies), or leaves it
     * off, as optim.torch's load_state_dict does with a state dict without one. */
    for (j = 0; j < pl->nparams; j++) {
        optim__param *pa = &o->params[m->target[j]];
        if (!pl->has_ema) continue;
        if (!pa->ema) {
            pa->ema = m->ema_fresh[j].ema;
            pa->ema_stash = m->ema_fresh[j].ema_stash;
            m->ema_fresh[j].ema = m->ema_fresh[j].ema_stash = NULL;
        }
        optim__ck_read_elems(pa->ema, pl->ema[j], pa->n, pl->ema_dtype[j]);
        pa->ema_start = pl->ema_counts ? pl->ema_count - pl->ema_counts[j] : 0;
        if (pl->ema_stash[j]) optim__ck_read_elems(pa->ema_stash, pl->ema_stash[j], pa->n, pl->ema_stash_dtype[j]);
    }
    if (pl->has_ema) {
        o->ema_on = 1;
        o->ema_decay = pl->ema_decay;
        o->ema_warmup = pl->ema_warmup;
        o->ema_count = pl->ema_count;
        o->ema_swapped = pl->ema_swapped;
    } else {
        /* On: its averages restart; off: it stays off (a load while swapped was refused). */
        for (j = 0; j < o->nparams; j++) o->params[j].ema_start = 0;
        o->ema_count = 0;
    }
    o->steps = pl->steps;
    o->skipped = pl->skipped;
    o->nonfinite = pl->nonfinite;
    o->clip_max_norm = pl->clip_max_norm;
    o->clip_norm_type = pl->clip_norm_type;
    o->clip_value = pl->clip_value;
    o->last_skipped = 0;
    o->last_norm = NAN;
}

/* ---- Loading ------------------------------------------------------------------ */

int optim__load_buffer_ops(optim *o, const void *data, size_t size, optim_match match, const char *what,
                           const optim__ck_ops *ops)
{
    optim__ck_plan pl;
    ck_match_plan m;
    int rc;
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__sam_guard(o, "optim_load_buffer"));
    OPTIM__FAIL_IF(o->ema_swapped, &o->err, OPTIM_ESTATE,
                   "optim_load: the parameters hold the EMA (optim_ema_swap); swap back before loading (the values "
                   "set aside would be lost); nothing changed");
    if (!what) what = "buffer";
    OPTIM__FAIL_IF(!data && size > 0, &o->err, OPTIM_ENULL, "optim_load_buffer: data is NULL");
    OPTIM__FAIL_IF(match != OPTIM_MATCH_NAME && match != OPTIM_MATCH_POSITION, &o->err, OPTIM_EINVAL,
                   "optim_load: match = %d is not OPTIM_MATCH_NAME or OPTIM_MATCH_POSITION", (int)match);
    memset(&m, 0, sizeof m);
    rc = optim__ck_decode((const unsigned char *)data, size, what, ops, &pl, &o->err);
    if (rc == OPTIM_OK) rc = ck_match(o, &pl, match, what, ops, &m);
    if (rc == OPTIM_OK) {
        ck_commit(o, &pl, &m);
        optim__ok(&o->err);
    }
    ck_match_free(&m, pl.nparams);
    optim__ck_plan_free(&pl);
    return rc;
}

int optim__load_ops(optim *o, const char *path, optim_match match, const optim__ck_ops *ops)
{
    unsigned char *data;
    size_t size;
    int rc;
    if (!o) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__sam_guard(o, "optim_load"));
    OPTIM__FAIL_IF(!path || !*path, &o->err, OPTIM_ENULL, "optim_load: path is %s", path ? "empty" : "NULL");
    OPTIM__FORWARD(optim__ck_file_read(path, &data, &size, ops, &o->err));
    rc = optim__load_buffer_ops(o, data, size, match, path, ops);
    free(data);
    return rc;
}

int optim_load_buffer(optim *o, const void *data, size_t size, optim_match match, const char *what)
{
    return optim__load_buffer_ops(o, data, size, match, what, &optim__ck_default_ops);
}

int optim_load(optim *o, const char *path, optim_match match)
{
    return optim__load_ops(o, path, match, &optim__ck_default_ops);
}

int optim_checkpoint_info_read(const char *path, optim_checkpoint_info *info, optim_error *err)
{
    unsigned char *data;
    size_t size;
    optim__ck_plan pl;
    int rc;
    OPTIM__FAIL_IF(!path || !info, err, OPTIM_ENULL, "optim_checkpoint_info_read: %s is NULL", !path ? "path" : "info");
    OPTIM__FORWARD(optim__ck_file_read(path, &data, &size, &optim__ck_default_ops, err));
    rc = optim__ck_decode(data, size, path, &optim__ck_default_ops, &pl, err);
    if (rc == OPTIM_OK) {
        memset(info, 0, sizeof *info);
        info->format = pl.format;
        info->rule = pl.rule;
        info->groups = pl.ngroups;
        info->params = pl.nparams;
        info->steps = pl.steps;
        info->state_floats = pl.state_floats;
        memcpy(info->library, pl.library, sizeof info->library);
        optim__ok(err);
    }
    optim__ck_plan_free(&pl);
    free(data);
    return rc;
}
