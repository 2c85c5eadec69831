/* schedule_free_host.h: the host side both schedule-free rules share (the
 * per-step scalars of facebookresearch/schedule_free's SGDScheduleFree and
 * AdamWScheduleFree, docs/rules/schedule_free.md). Included by the host
 * sections of sgd_schedule_free.h and adamw_schedule_free.h (rules.c only). */
#ifndef OPTIM_RULE_SCHEDULE_FREE_HOST_H
#define OPTIM_RULE_SCHEDULE_FREE_HOST_H

/* The group-level scalars of the reference's step k = st->step - 1 (st->step
 * already incremented): the warmed-up lr, lr_max, the weight and weight_sum
 * (kept in st), ckp1 = weight / weight_sum (0 when weight_sum is 0, the
 * reference's ZeroDivisionError branch). At the first step lr_max and
 * weight_sum start from the reference's -1 and 0 whatever st holds. */
static double optim__sf_scalars(const optim_hparams *hp, double group_lr, optim_state *st, double *lr_out)
{
    const double k = (double)(st->step - 1);
    const double sched = k < hp->warmup_steps ? (k + 1.0) / hp->warmup_steps : 1.0;
    const double lr = group_lr * sched;
    const double prev_max = st->step == 1 ? -1.0 : st->lr_max;
    const double lr_max = lr > prev_max ? lr : prev_max; /* Python's max(lr, lr_max): lr on ties */
    const double weight = pow(k + 1.0, hp->r) * pow(lr_max, hp->weight_lr_power);
    const double weight_sum = (st->step == 1 ? 0.0 : st->weight_sum) + weight;
    st->lr_max = lr_max;
    st->weight_sum = weight_sum;
    *lr_out = lr;
    return weight_sum != 0.0 ? weight / weight_sum : 0.0;
}

/* Checks both rules share: warmup_steps a whole number. */
static int optim__sf_check(const char *rule, const optim_hparams *hp, double lerp_coef, const char *coef_name,
                           optim_error *err)
{
    OPTIM__FAIL_IF(hp->warmup_steps != floor(hp->warmup_steps) || hp->warmup_steps > 9007199254740992.0, err,
                   OPTIM_EINVAL, "%s: warmup_steps = %.10g must be a whole number of steps", rule, hp->warmup_steps);
    OPTIM__FAIL_IF(!(lerp_coef > 0 && lerp_coef < 1), err, OPTIM_EINVAL,
                   "%s: %s = %.10g must be in (0, 1) (y = (1 - %s) z + %s x; x is recovered from y and z by "
                   "dividing by it)",
                   rule, coef_name, lerp_coef, coef_name, coef_name);
    return OPTIM_OK;
}
#endif
