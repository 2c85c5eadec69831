/* schedule_free.c: the train/eval switch of the schedule-free rules
 * (include/optim_schedule_free.h): one pass of the rule's own loop in its
 * switch variant (p = lerp(p, z, w), src/rules/sgd_schedule_free.h), run
 * through the ordinary tasks, storage descriptors and threads of a step, so
 * every element type, master weights and int8 state are handled as a step
 * handles them, with the same bits on every path. */
#include "optim_internal.h"
#include "optim_schedule_free.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define OPTIM__E(o) (&(o)->err)

static int optim__sf_rule(optim_rule r)
{
    return r == OPTIM_SGD_SCHEDULE_FREE || r == OPTIM_ADAMW_SCHEDULE_FREE;
}

/* The switch's weight for one group: 1 - c to y, 1 - 1/c to x (c = momentum or beta1). */
static double optim__sf_weight(const optim_hparams *hp, int to_eval)
{
    const double c = hp->rule == OPTIM_SGD_SCHEDULE_FREE ? hp->momentum : hp->beta1;
    return to_eval ? 1.0 - 1.0 / c : 1.0 - c;
}

static int optim__sf_switch(optim *o, const char *fn, int to_eval)
{
    size_t i, total = 0;
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(!optim__sf_rule(o->rule), OPTIM__E(o), OPTIM_EUNSUPPORTED,
                   "%s: the rule is %s; only sgd_schedule_free and adamw_schedule_free have a train/eval mode", fn,
                   optim_rule_name(o->rule));
    OPTIM__FORWARD(optim__sam_guard(o, fn));
    if (o->sf_eval == to_eval) return optim__ok(OPTIM__E(o));
    for (i = 0; i < o->nparams; i++) {
        optim__param *pa = &o->params[i];
        optim__task *t = &o->tasks[i];
        optim__k *k = &o->ks[i];
        const double w = optim__sf_weight(&o->groups[pa->group].hp, to_eval);
        /* Only parameters whose z holds data (stepped at least once); a deferred state holds none. */
        const int has_z = !pa->deferred && pa->st.slot[0] && (pa->st.initialized & 1u);
        int s;
        memset(t, 0, sizeof *t);
        t->start = total;
        t->n = has_z ? pa->n : 0;
        t->p = pa->p;
        for (s = 0; s < OPTIM_MAX_SLOTS; s++) t->s[s] = pa->st.slot[s];
        /* Cannot fail: optim_add_param and optim_set_isa checked the types against the path. */
        (void)optim__task_storage(o->kt, t, pa->master ? OPTIM_FLOAT32 : pa->pdt, pa->gdt, pa->sdt,
                                  optim__rule(o->rule)->slot_kinds);
        optim__param_task(o, i, t); /* a master: p is the master, the user's memory stored from it */
        /* The loop reads a gradient stream the switch does not use: z itself, through z's descriptor (read
         * only, like z in the switch; in place when z holds the compute type, else decoded into scratch). */
        t->g = t->s[0];
        t->sto[OPTIM__SG] = t->sto[OPTIM__SS(0)];
        t->ctx[OPTIM__SG] = t->ctx[OPTIM__SS(0)];
        if (t->sto[OPTIM__SG] && !t->sto[OPTIM__SG]->direct) {
            t->chunked = 1;
            t->align = OPTIM__CHUNK;
        }
        t->k = k;
        memset(k, 0, sizeof *k);
        k->c.variant = o->rule == OPTIM_SGD_SCHEDULE_FREE ? OPTIM__SGDSF_V_SWITCH : OPTIM__ADAMWSF_V_SWITCH;
        k->c.gscale = 1.0;
        k->c.decay = 1.0;
        if (o->rule == OPTIM_SGD_SCHEDULE_FREE) {
            k->u.sgd_schedule_free.ckp1 = w;
            k->u.sgd_schedule_free.lerp_hi = fabs((double)(float)w) >= 0.5 ? 1.0 : 0.0;
        } else {
            k->u.adamw_schedule_free.ckp1 = w;
            k->u.adamw_schedule_free.lerp_hi = fabs((double)(float)w) >= 0.5 ? 1.0 : 0.0;
        }
        if (t->n == 0) {
            t->loop = NULL;
            continue;
        }
        t->loop = optim__loop_get(o->kt, o->rule, pa->ct, k->c.variant, &t->reads, &t->writes);
        OPTIM__FAIL_IF(!t->loop, OPTIM__E(o), OPTIM_EUNSUPPORTED,
                       "%s: the %s path has no %s switch loop (%s parameters) for param %zu '%s'; nothing changed",
                       fn, optim_isa_name(o->kt->isa), optim_rule_name(o->rule), optim_dtype_name(pa->pdt), i,
                       pa->name);
        /* Stochastic rounding's keys: apart from every step's (which use steps >= 1 and this top bit clear). */
        if (pa->flags & (OPTIM_PARAM_STOCHASTIC_ROUNDING | OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING))
            optim__task_sr_keys(t, o->seed, pa->sr_param,
                                (int64_t)(((uint64_t)1 << 62) | ((uint64_t)to_eval << 61) | (uint64_t)pa->st.step),
                                pa->sr_first);
        total += t->n;
    }
    optim__run(o->kt, optim__range_update, o->tasks, o->nparams, total, o->threads);
    o->sf_eval = to_eval;
    return optim__ok(OPTIM__E(o));
}

int optim_schedule_free_train(optim *o)
{
    return optim__sf_switch(o, "optim_schedule_free_train", 0);
}

int optim_schedule_free_eval(optim *o)
{
    return optim__sf_switch(o, "optim_schedule_free_eval", 1);
}

int optim_schedule_free_mode(const optim *o)
{
    if (!o) return OPTIM_ENULL;
    if (!optim__sf_rule(o->rule)) return OPTIM_EUNSUPPORTED;
    return o->sf_eval ? 0 : 1;
}

int optim_param_get_schedule_free(const optim *o, size_t i, double *lr_max, double *weight_sum)
{
    optim *m = (optim *)(uintptr_t)o; /* the handle keeps its last message */
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(!optim__sf_rule(o->rule), OPTIM__E(m), OPTIM_EUNSUPPORTED,
                   "optim_param_get_schedule_free: the rule is %s, not a schedule-free rule", optim_rule_name(o->rule));
    OPTIM__FAIL_IF(i >= o->nparams, OPTIM__E(m), OPTIM_ERANGE,
                   "optim_param_get_schedule_free: param %zu does not exist (%zu params)", i, o->nparams);
    OPTIM__FAIL_IF(!lr_max || !weight_sum, OPTIM__E(m), OPTIM_ENULL, "optim_param_get_schedule_free: %s is NULL",
                   !lr_max ? "lr_max" : "weight_sum");
    *lr_max = o->params[i].st.step == 0 ? -1.0 : o->params[i].st.lr_max;
    *weight_sum = o->params[i].st.step == 0 ? 0.0 : o->params[i].st.weight_sum;
    return optim__ok(OPTIM__E(m));
}

int optim_param_set_schedule_free(optim *o, size_t i, double lr_max, double weight_sum)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(!optim__sf_rule(o->rule), OPTIM__E(o), OPTIM_EUNSUPPORTED,
                   "optim_param_set_schedule_free: the rule is %s, not a schedule-free rule", optim_rule_name(o->rule));
    OPTIM__FAIL_IF(i >= o->nparams, OPTIM__E(o), OPTIM_ERANGE,
                   "optim_param_set_schedule_free: param %zu does not exist (%zu params)", i, o->nparams);
    OPTIM__FAIL_IF(!(lr_max == -1.0 || (lr_max >= 0 && lr_max <= DBL_MAX)), OPTIM__E(o), OPTIM_EINVAL,
                   "optim_param_set_schedule_free: lr_max = %.10g must be -1 or a finite number >= 0", lr_max);
    OPTIM__FAIL_IF(!(weight_sum >= 0 && weight_sum <= DBL_MAX), OPTIM__E(o), OPTIM_EINVAL,
                   "optim_param_set_schedule_free: weight_sum = %.10g must be a finite number >= 0", weight_sum);
    o->params[i].st.lr_max = lr_max;
    o->params[i].st.weight_sum = weight_sum;
    return optim__ok(OPTIM__E(o));
}

int optim_schedule_free_set_mode(optim *o, int train)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(!optim__sf_rule(o->rule), OPTIM__E(o), OPTIM_EUNSUPPORTED,
                   "optim_schedule_free_set_mode: the rule is %s, not a schedule-free rule", optim_rule_name(o->rule));
    OPTIM__FAIL_IF(train != 0 && train != 1, OPTIM__E(o), OPTIM_EINVAL,
                   "optim_schedule_free_set_mode: train = %d must be 0 or 1", train);
    OPTIM__FORWARD(optim__sam_guard(o, "optim_schedule_free_set_mode"));
    o->sf_eval = !train;
    return optim__ok(OPTIM__E(o));
}
