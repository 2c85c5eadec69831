/* update.c: the stateless level of the API: one rule on one array whose
 * state the caller owns. */
#include "common.h"
#include "kernels/kernels.h"

#include <math.h>

int optim_state_init_typed(const optim_hparams *hp, size_t n, optim_dtype state_dtype, optim_state *st,
                           optim_error *err)
{
    unsigned need;
    size_t size = optim_dtype_size(state_dtype);
    int s;
    OPTIM__FAIL_IF(!hp || !st, err, OPTIM_ENULL, "optim_state_init: %s is NULL", !hp ? "hp" : "st");
    OPTIM__FORWARD(optim__hparams_check(hp, err));
    OPTIM__FAIL_IF(state_dtype != OPTIM_FLOAT32 && state_dtype != OPTIM_FLOAT64, err, OPTIM_EUNSUPPORTED,
                   "optim_state_init: state of type %s (%d) is not supported (float32, or float64 for float64 "
                   "parameters)",
                   optim_dtype_name(state_dtype) ? optim_dtype_name(state_dtype) : "?", (int)state_dtype);
    OPTIM__FAIL_IF(n > SIZE_MAX / 8, err, OPTIM_EINVAL, "optim_state_init: n = %zu elements is too many", n);
    need = optim_hparams_slots(hp);
    for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
        int t;
        if (!((need >> s) & 1u) || n == 0) continue;
        OPTIM__FAIL_IF(!st->slot[s], err, OPTIM_ENULL, "optim_state_init: %s needs slot %d (%s) but st->slot[%d] is NULL",
                       optim_rule_name(hp->rule), s, optim_rule_slot_name(hp->rule, s), s);
        OPTIM__FAIL_IF((uintptr_t)st->slot[s] % size, err, OPTIM_EINVAL,
                       "optim_state_init: slot %d (%s) is not aligned to %zu bytes (%s)", s,
                       optim_rule_slot_name(hp->rule, s), size, optim_dtype_name(state_dtype));
        for (t = 0; t < s; t++)
            OPTIM__FAIL_IF(((need >> t) & 1u) && optim__overlap_bytes(st->slot[s], n * size, st->slot[t], n * size),
                           err, OPTIM_EOVERLAP, "optim_state_init: slot %d (%s) overlaps slot %d (%s)", s,
                           optim_rule_slot_name(hp->rule, s), t, optim_rule_slot_name(hp->rule, t));
    }
    st->step = 0;
    st->mu_product = 1.0;
    st->lr_max = -1.0;
    st->weight_sum = 0.0;
    st->initialized = 0;
    if (n > 0) {
        for (s = 0; s < OPTIM_MAX_SLOTS; s++) /* n elements each (the caller's arrays; Adafactor's factors stay 0) */
            if ((need >> s) & 1u) optim__slot_reset(hp, n, st, s, state_dtype);
    } else /* nothing to fill: every needed slot but the lazy ones is ready */
        st->initialized = need & ~optim__rule(hp->rule)->lazy_slots;
    return optim__ok(err);
}

int optim_state_init(const optim_hparams *hp, size_t n, optim_state *st, optim_error *err)
{
    return optim_state_init_typed(hp, n, OPTIM_FLOAT32, st, err);
}

static int optim__update(const char *fn, const optim_hparams *hp, size_t n, void *p, optim_dtype pdt, const void *g,
                         optim_dtype gdt, optim_state *st, optim_error *err)
{
    const optim__kernels *kt;
    const char *rule;
    optim__step_in in;
    optim__task task;
    optim__ctype ct;
    optim_dtype sdt;
    optim_state next;
    optim__k k;
    unsigned need, lazy;
    size_t psize, gsize, ssize;
    int s, t;

    OPTIM__FAIL_IF(!hp || !st, err, OPTIM_ENULL, "%s: %s is NULL", fn, !hp ? "hp" : "st");
    OPTIM__FORWARD(optim__hparams_check(hp, err));
    OPTIM__FORWARD(optim__dtypes(fn, pdt, gdt, &ct, &sdt, err));
    OPTIM__FAIL_IF(n > SIZE_MAX / 8, err, OPTIM_EINVAL, "%s: n = %zu elements is too many", fn, n);
    rule = optim_rule_name(hp->rule);
    OPTIM__FAIL_IF(optim__rule(hp->rule)->sparse_only, err, OPTIM_EUNSUPPORTED,
                   "%s: %s takes sparse gradients only (optim_sparse.h: optim_step_sparse); use adam for dense ones",
                   fn, rule);
    OPTIM__FAIL_IF(hp->rule == OPTIM_MUON, err, OPTIM_EUNSUPPORTED,
                   "%s: muon orthogonalises a whole matrix with liboptim_muon's matrix products; the stateless update "
                   "has no shape nor hook: use an optimizer object (optim_muon.h)", fn);
    need = optim_hparams_slots(hp);
    lazy = optim__rule(hp->rule)->lazy_slots;
    psize = optim_dtype_size(pdt);
    gsize = optim_dtype_size(gdt);
    ssize = optim_dtype_size(sdt);
    if (n > 0) {
        OPTIM__FAIL_IF(!p || !g, err, OPTIM_ENULL, "%s: %s is NULL", fn, !p ? "p" : "g");
        /* Every type, float32 too (the typed call takes void pointers). */
        OPTIM__FAIL_IF((uintptr_t)p % psize || (uintptr_t)g % gsize, err, OPTIM_EINVAL,
                       "%s: %s is not aligned to its element size", fn, (uintptr_t)p % psize ? "p" : "g");
        OPTIM__FAIL_IF(optim__overlap_bytes(p, n * psize, g, n * gsize), err, OPTIM_EOVERLAP, "%s: p and g overlap", fn);
        for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
            if (!((need >> s) & 1u)) continue;
            OPTIM__FAIL_IF(!st->slot[s], err, OPTIM_ENULL, "%s: %s needs slot %d (%s) but st->slot[%d] is NULL", fn,
                           rule, s, optim_rule_slot_name(hp->rule, s), s);
            OPTIM__FAIL_IF((uintptr_t)st->slot[s] % ssize, err, OPTIM_EINVAL,
                           "%s: slot %d (%s) is not aligned to %zu bytes (%s)", fn, s,
                           optim_rule_slot_name(hp->rule, s), ssize, optim_dtype_name(sdt));
            OPTIM__FAIL_IF(!((lazy >> s) & 1u) && !((st->initialized >> s) & 1u), err, OPTIM_ESTATE,
                           "%s: %s slot %d (%s) is not initialized (call optim_state_init)", fn, rule, s,
                           optim_rule_slot_name(hp->rule, s));
            OPTIM__FAIL_IF(optim__overlap_bytes(st->slot[s], n * ssize, p, n * psize) ||
                               optim__overlap_bytes(st->slot[s], n * ssize, g, n * gsize),
                           err, OPTIM_EOVERLAP, "%s: slot %d (%s) overlaps p or g", fn, s,
                           optim_rule_slot_name(hp->rule, s));
            for (t = 0; t < s; t++)
                OPTIM__FAIL_IF(((need >> t) & 1u) && optim__overlap_bytes(st->slot[s], n * ssize, st->slot[t], n * ssize),
                               err, OPTIM_EOVERLAP, "%s: slot %d (%s) overlaps slot %d (%s)", fn, s,
                               optim_rule_slot_name(hp->rule, s), t, optim_rule_slot_name(hp->rule, t));
        }
    }
    OPTIM__FAIL_IF(st->step == INT64_MAX, err, OPTIM_ESTATE, "%s: step counter is at its maximum", fn);
    kt = optim__kernels_get(OPTIM_ISA_AUTO);

    in.lr = hp->lr;
    in.gscale = 1.0;
    in.gclip = INFINITY;
    in.quantized = 0; /* float32 or float64 state only here */
    in.n = n;
    in.eps_type = 0.0; /* one tensor: its own type's */
    next = *st;
    optim__prepare(hp, &in, &next, &k);
    task.loop = optim__loop_get(kt, hp->rule, ct, k.c.variant, &task.reads, &task.writes);
    OPTIM__FAIL_IF(!task.loop, err, OPTIM_EUNSUPPORTED, "%s: the %s path has no %s loop for variant 0x%x (%s, %s)", fn,
                   optim_isa_name(kt->isa), rule, k.c.variant, optim_dtype_name(pdt), optim_dtype_name(gdt));
    OPTIM__FAIL_IF(optim__rloops_get(kt, hp->rule, ct, k.c.variant, k.c.reduce & ~OPTIM__RED_FACTORED, &task) != 0,
                   err, OPTIM_EUNSUPPORTED,
                   "%s: the %s path has no %s reduction pass for variant 0x%x", fn, optim_isa_name(kt->isa), rule,
                   k.c.variant);
    OPTIM__FAIL_IF(optim__task_storage(kt, &task, pdt, gdt, sdt, NULL) != 0, err, OPTIM_EUNSUPPORTED,
                   "%s: the %s path has no storage for %s parameters with %s gradients", fn, optim_isa_name(kt->isa),
                   optim_dtype_name(pdt), optim_dtype_name(gdt));
    *st = next;
    if (n > 0) {
        task.p = p;
        task.g = g;
        for (s = 0; s < OPTIM_MAX_SLOTS; s++) task.s[s] = ((need >> s) & 1u) ? st->slot[s] : NULL;
        task.n = n;
        task.start = 0;
        task.bstart = 0;
        task.k = &k;
        task.spart = NULL; /* no step statistics here (include/optim_stats.h: optimizer objects) */
        task.ema = NULL;   /* nor an EMA (include/optim_ema.h) */
        if (task.pre || task.red) {
            /* Pass 1 of a rule with a per-tensor reduction (LAMB, LARS), block by block in order. */
            double sq[2] = {0.0, 0.0}, part[2];
            size_t off;
            for (off = 0; off < n; off += OPTIM__RBLOCK) {
                optim__reduce_rule_block(&task, off, n - off < OPTIM__RBLOCK ? n - off : OPTIM__RBLOCK, part);
                sq[0] += part[0];
                sq[1] += part[1];
            }
            optim__trust(hp, &in, sq, &k);
        }
        if (k.c.reduce & OPTIM__RED_FACTORED) {
            /* Adafactor without a shape: unfactored (variance, slot 2; row_var and col_var
             * untouched). Its passes A and B block by block in order, each block a task of its own. */
            double asq[2] = {0.0, 0.0}, part[2];
            size_t off;
            task.frows = task.fcols = 0;
            for (off = 0; off < n; off += OPTIM__RBLOCK) {
                optim__task b = task;
                b.n = n - off < OPTIM__RBLOCK ? n - off : OPTIM__RBLOCK;
                b.p = (char *)p + off * psize;
                b.g = (const char *)g + off * gsize;
                b.s[2] = (char *)task.s[2] + off * ssize;
                optim__factored_run(kt, &b, 1, 1, part, 1);
                asq[0] += part[0];
                asq[1] += part[1];
            }
            in.n = n;
            optim__trust(hp, &in, asq, &k);
        }
        optim__run(kt, optim__range_update, &task, 1, n, 0);
    }
    optim__finish(hp, st);
    return optim__ok(err);
}

int optim_update(const optim_hparams *hp, size_t n, float *p, const float *g, optim_state *st, optim_error *err)
{
    return optim__update("optim_update", hp, n, p, OPTIM_FLOAT32, g, OPTIM_FLOAT32, st, err);
}

int optim_update_typed(const optim_hparams *hp, size_t n, void *p, optim_dtype p_dtype, const void *g,
                       optim_dtype g_dtype, optim_state *st, optim_error *err)
{
    return optim__update("optim_update_typed", hp, n, p, p_dtype, g, g_dtype, st, err);
}
