/* stats.c: the step statistics (include/optim_stats.h): the switch, the
 * tasks' part in a step, each parameter's record from its blocks' partials
 * (kernels: streams.c, optim__update_stats) and its step constants. */
#include "optim_internal.h"

#include <math.h>
#include <string.h>

#define OPTIM__E(o) (&(o)->err)

int optim_set_stats(optim *o, int on)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(on != 0 && on != 1, OPTIM__E(o), OPTIM_EINVAL, "optim_set_stats: on = %d is not 0 or 1", on);
    o->stats_on = on;
    return optim__ok(OPTIM__E(o));
}

void optim__stats_force_copies(optim *o, int on)
{
    o->stats_copies = on;
}

int optim_stats_enabled(const optim *o)
{
    return o ? o->stats_on : 0;
}

int optim_param_stats(optim *o, size_t index, optim_step_stats *out)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(!out, OPTIM__E(o), OPTIM_ENULL, "optim_param_stats: out is NULL");
    OPTIM__FAIL_IF(index >= o->nparams, OPTIM__E(o), OPTIM_ERANGE,
                   "optim_param_stats: index = %zu but the optimizer has %zu params", index, o->nparams);
    *out = o->params[index].stats;
    return optim__ok(OPTIM__E(o));
}

void optim__stats_begin(optim *o)
{
    size_t i;
    for (i = 0; i < o->nparams; i++) {
        optim__task *t = &o->tasks[i];
        t->spart = NULL;
        t->stats = NULL;
        t->clampflag = NULL;
        t->sloop = NULL; /* the step sets it with the loop (optim__sloop_get) */
        if (!o->stats_on) continue;
        memset(&o->params[i].stats, 0, sizeof o->params[i].stats);
        /* Sparse steps: the per-tensor values only (their ranges split at rows, not blocks). */
        if (t->n == 0 || t->rows) continue;
        t->spart = o->spartials + OPTIM__NSTAT * t->bstart;
        t->stats = o->kt->stats[o->params[i].ct];
        t->sflush = o->kt->sflush[o->params[i].ct];
        t->clampflag = o->kt->clampflag[o->rule][o->params[i].ct];
        t->align = OPTIM__RBLOCK; /* a block is measured by one thread, in order */
    }
}

void optim__skip_step(optim *o)
{
    size_t i;
    if (o->skipped < INT64_MAX) o->skipped++;
    o->last_skipped = 1;
    if (!o->stats_on) return;
    for (i = 0; i < o->nparams; i++) memset(&o->params[i].stats, 0, sizeof o->params[i].stats);
}

void optim__stats_end(optim *o)
{
    size_t i, b;
    if (!o->stats_on) return;
    for (i = 0; i < o->nparams; i++) {
        optim__param *pa = &o->params[i];
        const optim__task *t = &o->tasks[i];
        optim_step_stats *st = &pa->stats;
        optim__kstats ks;
        if (!optim__has_grad(o, i)) continue;
        optim__kstats_of(o->rule, &o->ks[i], &ks);
        st->step = pa->st.step; /* its own counter, this step included */
        st->effective_lr = ks.effective_lr;
        st->trust_ratio = ks.trust_ratio;
        st->rectified = ks.rectified;
        st->grad_norm = st->update_rms = st->param_rms = st->update_ratio = NAN;
        st->update_max = st->clamped_fraction = NAN;
        if (t->spart) {
            /* Blocks in order: sums, and the maximum (NaN sticks). */
            double sum[OPTIM__NSTAT] = {0.0, 0.0, 0.0, 0.0, 0.0};
            /* A complex parameter is stepped as its real view (t->n reals): its RMS values are per complex
             * element, its clamped fraction per real or imaginary part (docs/STATS.md). */
            const int cplx = (pa->flags & OPTIM_PARAM_COMPLEX) != 0;
            const size_t ne = cplx ? t->n / 2 : t->n;
            const double n = (double)ne;
            for (b = 0; b < OPTIM__NBLOCKS(t->n); b++) {
                const double *x = t->spart + OPTIM__NSTAT * b;
                sum[0] += x[0];
                sum[1] += x[1];
                sum[2] += x[2];
                sum[3] = (x[3] != x[3] || x[3] > sum[3]) ? x[3] : sum[3];
                sum[4] += x[4];
            }
            st->has_elements = 1;
            st->n = ne;
            st->grad_norm = fabs(o->ks[i].c.gscale) * sqrt(sum[0]);
            st->update_rms = sqrt(sum[1] / n);
            st->param_rms = sqrt(sum[2] / n);
            st->update_ratio = st->update_rms / st->param_rms;
            st->update_max = sum[3];
            st->clamped_fraction = sum[4] / (double)t->n;
        }
    }
}
