/* schedule.c: learning-rate schedules as closed forms of the step (see
 * optim_schedule.h), and their attachment to the groups of an optimizer.
 *
 * Every value is computed from (base_lr, t) alone, never from the previous
 * step's lr: torch's recursive forms drift by rounding and follow hand edits,
 * these do neither, and step 10^9 costs what step 0 costs. Where torch has a
 * closed form the expression is written in the same order, so the two agree
 * to the last bit or two; integer parts (cycle positions, restarts) are
 * computed in integers, which keeps them exact for any t. */
#include "optim_internal.h"
#include "schedule_internal.h"

#include "optim_schedule.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define OPTIM__PI 3.14159265358979323846

/* ---- Construction --------------------------------------------------------- */

static int optim__sched_new(optim_schedule **out, optim_schedule_kind kind, const char *fn, optim_error *err)
{
    optim_schedule *s = (optim_schedule *)calloc(1, sizeof *s);
    *out = NULL;
    OPTIM__FAIL_IF(!s, err, OPTIM_ENOMEM, "%s: out of memory", fn);
    s->kind = kind;
    *out = s;
    return OPTIM_OK;
}

/* The nesting depth of s (0 for a schedule that is not a composite), at most
 * OPTIM_SCHEDULE_MAX_DEPTH by construction. */
static int optim__sched_depth(const optim_schedule *s)
{
    int d = 0;
    size_t i;
    for (i = 0; i < s->nchildren; i++) {
        int c = optim__sched_depth(s->children[i]) + 1;
        if (c > d) d = c;
    }
    return d;
}

/* One-line argument checks; each names the function, the argument and its value. */
#define OPTIM__CHECK_INT(cond, fn, name, value, rule)                                                      \
    OPTIM__FAIL_IF(!(cond), err, OPTIM_EINVAL, "%s: %s = %lld must be %s", fn, name, (long long)(value), rule)
#define OPTIM__CHECK_REAL(cond, fn, name, value, rule)                                                     \
    OPTIM__FAIL_IF(!(cond) || isnan(value) || isinf(value), err, OPTIM_EINVAL, "%s: %s = %.17g must be %s", fn, \
                   name, (double)(value), rule)

int optim_schedule_constant(optim_schedule **out, double factor, int64_t total_iters, optim_error *err)
{
    static const char fn[] = "optim_schedule_constant";
    OPTIM__FAIL_IF(!out, err, OPTIM_ENULL, "%s: out is NULL", fn);
    *out = NULL;
    OPTIM__CHECK_REAL(factor >= 0 && factor <= 1, fn, "factor", factor, "in [0, 1]");
    OPTIM__CHECK_INT(total_iters >= 1, fn, "total_iters", total_iters, ">= 1");
    OPTIM__FORWARD(optim__sched_new(out, OPTIM_SCHED_CONSTANT, fn, err));
    (*out)->ints[0] = total_iters;
    (*out)->reals[0] = factor;
    return optim__ok(err);
}

int optim_schedule_step(optim_schedule **out, int64_t step_size, double gamma, optim_error *err)
{
    static const char fn[] = "optim_schedule_step";
    OPTIM__FAIL_IF(!out, err, OPTIM_ENULL, "%s: out is NULL", fn);
    *out = NULL;
    OPTIM__CHECK_INT(step_size >= 1, fn, "step_size", step_size, ">= 1");
    OPTIM__CHECK_REAL(gamma >= 0, fn, "gamma", gamma, "a finite number >= 0");
    OPTIM__FORWARD(optim__sched_new(out, OPTIM_SCHED_STEP, fn, err));
    (*out)->ints[0] = step_size;
    (*out)->reals[0] = gamma;
    return optim__ok(err);
}

static int optim__cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int optim_schedule_multistep(optim_schedule **out, const int64_t *milestones, size_t count, double gamma,
                             optim_error *err)
{
    static const char fn[] = "optim_schedule_multistep";
    size_t i;
    int64_t *copy = NULL;
    OPTIM__FAIL_IF(!out, err, OPTIM_ENULL, "%s: out is NULL", fn);
    *out = NULL;
    OPTIM__FAIL_IF(count > 0 && !milestones, err, OPTIM_ENULL, "%s: milestones is NULL (count = %zu)", fn, count);
    OPTIM__FAIL_IF(count > OPTIM_SCHEDULE_MAX_MILESTONES, err, OPTIM_EINVAL,
                   "%s: count = %zu milestones is more than OPTIM_SCHEDULE_MAX_MILESTONES = %d", fn, count,
                   OPTIM_SCHEDULE_MAX_MILESTONES);
    for (i = 0; i < count; i++)
        OPTIM__FAIL_IF(milestones[i] < 0, err, OPTIM_EINVAL, "%s: milestones[%zu] = %lld must be >= 0", fn, i,
                       (long long)milestones[i]);
    OPTIM__CHECK_REAL(gamma >= 0, fn, "gamma", gamma, "a finite number >= 0");
    if (count > 0) {
        copy = (int64_t *)malloc(count * sizeof *copy);
        OPTIM__FAIL_IF(!copy, err, OPTIM_ENOMEM, "%s: out of memory for %zu milestones", fn, count);
        memcpy(copy, milestones, count * sizeof *copy);
        /* torch counts a milestone listed twice twice (its Counter); sorting keeps repeats. */
        qsort(copy, count, sizeof *copy, optim__cmp_i64);
    }
    if (optim__sched_new(out, OPTIM_SCHED_MULTISTEP, fn, err) != OPTIM_OK) {
        free(copy);
        return OPTIM_ENOMEM;
    }
    (*out)->reals[0] = gamma;
    (*out)->milestones = copy;
    (*out)->nmilestones = count;
    return optim__ok(err);
}

int optim_schedule_exponential(optim_schedule **out, double gamma, optim_error *err)
{
    static const char fn[] = "optim_schedule_exponential";
    OPTIM__FAIL_IF(!out, err, OPTIM_ENULL, "%s: out is NULL", fn);
    *out = NULL;
    OPTIM__CHECK_REAL(gamma >= 0, fn, "gamma", gamma, "a finite number >= 0");
    OPTIM__FORWARD(optim__sched_new(out, OPTIM_SCHED_EXPONENTIAL, fn, err));
    (*out)->reals[0] = gamma;
    return optim__ok(err);
}

int optim_schedule_linear(optim_schedule **out, double start_factor, double end_factor, int64_t total_iters,
                          optim_error *err)
{
    static const char fn[] = "optim_schedule_linear";
    OPTIM__FAIL_IF(!out, err, OPTIM_ENULL, "%s: out is NULL", fn);
    *out = NULL;
    OPTIM__CHECK_REAL(start_factor >= 0 && start_factor <= 1, fn, "start_factor", start_factor, "in [0, 1]");
    OPTIM__CHECK_REAL(end_factor >= 0 && end_factor <= 1, fn, "end_factor", end_factor, "in [0, 1]");
    OPTIM__CHECK_INT(total_iters >= 1, fn, "total_iters", total_iters, ">= 1");
    OPTIM__FORWARD(optim__sched_new(out, OPTIM_SCHED_LINEAR, fn, err));
    (*out)->ints[0] = total_iters;
    (*out)->reals[0] = start_factor;
    (*out)->reals[1] = end_factor;
    return optim__ok(err);
}

int optim_schedule_polynomial(optim_schedule **out, int64_t total_iters, double power, optim_error *err)
{
    static const char fn[] = "optim_schedule_polynomial";
    OPTIM__FAIL_IF(!out, err, OPTIM_ENULL, "%s: out is NULL", fn);
    *out = NULL;
    OPTIM__CHECK_INT(total_iters >= 1, fn, "total_iters", total_iters, ">= 1");
    OPTIM__CHECK_REAL(power >= 0, fn, "power", power, "a finite number >= 0");
    OPTIM__FORWARD(optim__sched_new(out, OPTIM_SCHED_POLYNOMIAL, fn, err));
    (*out)->ints[0] = total_iters;
    (*out)->reals[0] = power;
    return optim__ok(err);
}

int optim_schedule_cosine(optim_schedule **out, int64_t t_max, double eta_min, optim_error *err)
{
    static const char fn[] = "optim_schedule_cosine";
    OPTIM__FAIL_IF(!out, err, OPTIM_ENULL, "%s: out is NULL", fn);
    *out = NULL;
    /* 2 t_max is the period; keep it representable. */
    OPTIM__CHECK_INT(t_max >= 1 && t_max <= INT64_MAX / 2, fn, "t_max", t_max, "in [1, 2^62)");
    OPTIM__CHECK_REAL(eta_min >= 0, fn, "eta_min", eta_min, "a finite number >= 0");
    OPTIM__FORWARD(optim__sched_new(out, OPTIM_SCHED_COSINE, fn, err));
    (*out)->ints[0] = t_max;
    (*out)->reals[0] = eta_min;
    return optim__ok(err);
}

int optim_schedule_cosine_restarts(optim_schedule **out, int64_t t_0, int64_t t_mult, double eta_min,
                                   optim_error *err)
{
    static const char fn[] = "optim_schedule_cosine_restarts";
    OPTIM__FAIL_IF(!out, err, OPTIM_ENULL, "%s: out is NULL", fn);
    *out = NULL;
    OPTIM__CHECK_INT(t_0 >= 1, fn, "t_0", t_0, ">= 1");
    OPTIM__CHECK_INT(t_mult >= 1, fn, "t_mult", t_mult, ">= 1");
    OPTIM__CHECK_REAL(eta_min >= 0, fn, "eta_min", eta_min, "a finite number >= 0");
    OPTIM__FORWARD(optim__sched_new(out, OPTIM_SCHED_COSINE_RESTARTS, fn, err));
    (*out)->ints[0] = t_0;
    (*out)->ints[1] = t_mult;
    (*out)->reals[0] = eta_min;
    return optim__ok(err);
}

int optim_schedule_one_cycle(optim_schedule **out, double max_lr, int64_t total_steps, double pct_start,
                             int anneal_cos, double div_factor, double final_div_factor, int three_phase,
                             optim_error *err)
{
    static const char fn[] = "optim_schedule_one_cycle";
    OPTIM__FAIL_IF(!out, err, OPTIM_ENULL, "%s: out is NULL", fn);
    *out = NULL;
    OPTIM__CHECK_REAL(max_lr >= 0, fn, "max_lr", max_lr, "a finite number >= 0");
    OPTIM__CHECK_INT(total_steps >= 1, fn, "total_steps", total_steps, ">= 1");
    OPTIM__CHECK_REAL(pct_start >= 0 && pct_start <= 1, fn, "pct_start", pct_start, "in [0, 1]");
    OPTIM__CHECK_INT(anneal_cos == 0 || anneal_cos == 1, fn, "anneal_cos", anneal_cos, "0 (linear) or 1 (cosine)");
    OPTIM__CHECK_REAL(div_factor > 0, fn, "div_factor", div_factor, "a finite number > 0");
    OPTIM__CHECK_REAL(final_div_factor > 0, fn, "final_div_factor", final_div_factor, "a finite number > 0");
    OPTIM__CHECK_INT(three_phase == 0 || three_phase == 1, fn, "three_phase", three_phase, "0 or 1");
    OPTIM__FORWARD(optim__sched_new(out, OPTIM_SCHED_ONE_CYCLE, fn, err));
    (*out)->ints[0] = total_steps;
    (*out)->ints[1] = anneal_cos;
    (*out)->ints[2] = three_phase;
    (*out)->reals[0] = max_lr;
    (*out)->reals[1] = pct_start;
    (*out)->reals[2] = div_factor;
    (*out)->reals[3] = final_div_factor;
    return optim__ok(err);
}

int optim_schedule_cyclic(optim_schedule **out, double base_lr, double max_lr, int64_t step_size_up,
                          int64_t step_size_down, optim_cyclic_mode mode, double gamma, optim_error *err)
{
    static const char fn[] = "optim_schedule_cyclic";
    int64_t down = step_size_down == OPTIM_CYCLIC_DOWN_AS_UP ? step_size_up : step_size_down;
    OPTIM__FAIL_IF(!out, err, OPTIM_ENULL, "%s: out is NULL", fn);
    *out = NULL;
    OPTIM__CHECK_REAL(base_lr >= 0, fn, "base_lr", base_lr, "a finite number >= 0");
    OPTIM__CHECK_REAL(max_lr >= 0, fn, "max_lr", max_lr, "a finite number >= 0");
    OPTIM__CHECK_INT(step_size_up >= 1, fn, "step_size_up", step_size_up, ">= 1");
    OPTIM__CHECK_INT(step_size_down >= OPTIM_CYCLIC_DOWN_AS_UP, fn, "step_size_down", step_size_down,
                     ">= 0 (0: no descent, a sawtooth), or OPTIM_CYCLIC_DOWN_AS_UP (-1) for step_size_up");
    OPTIM__FAIL_IF(step_size_up > INT64_MAX - down, err, OPTIM_EINVAL,
                   "%s: step_size_up + step_size_down = %lld + %lld overflows", fn, (long long)step_size_up,
                   (long long)down);
    OPTIM__CHECK_INT(mode == OPTIM_CYCLIC_TRIANGULAR || mode == OPTIM_CYCLIC_TRIANGULAR2 ||
                         mode == OPTIM_CYCLIC_EXP_RANGE,
                     fn, "mode", mode, "OPTIM_CYCLIC_TRIANGULAR (0), _TRIANGULAR2 (1) or _EXP_RANGE (2)");
    OPTIM__CHECK_REAL(gamma > 0, fn, "gamma", gamma, "a finite number > 0");
    /* Only exp_range reads gamma: any other value would be silently ignored. */
    OPTIM__FAIL_IF(mode != OPTIM_CYCLIC_EXP_RANGE && gamma != 1.0, err, OPTIM_EINVAL,
                   "%s: gamma = %.17g is only used by mode OPTIM_CYCLIC_EXP_RANGE; pass 1 with mode %d", fn, gamma,
                   (int)mode);
    OPTIM__FORWARD(optim__sched_new(out, OPTIM_SCHED_CYCLIC, fn, err));
    (*out)->ints[0] = step_size_up;
    /* Kept in the stored encoding (schedule_internal.h), which checkpoints write as is. */
    (*out)->ints[1] = step_size_down == OPTIM_CYCLIC_DOWN_AS_UP ? OPTIM__CYCLIC_STORED_AS_UP
                      : step_size_down == 0                     ? OPTIM__CYCLIC_STORED_ZERO
                                                                : step_size_down;
    (*out)->ints[2] = (int64_t)mode;
    (*out)->reals[0] = base_lr;
    (*out)->reals[1] = max_lr;
    (*out)->reals[2] = gamma;
    return optim__ok(err);
}

int optim_schedule_warmup(optim_schedule **out, int64_t warmup_steps, optim_schedule *after, optim_error *err)
{
    static const char fn[] = "optim_schedule_warmup";
    int rc;
    if (!out) {
        optim_schedule_free(after);
        return optim__fail(err, OPTIM_ENULL, "%s: out is NULL", fn);
    }
    *out = NULL;
    if (warmup_steps < 0) {
        optim_schedule_free(after);
        return optim__fail(err, OPTIM_EINVAL, "%s: warmup_steps = %lld must be >= 0", fn, (long long)warmup_steps);
    }
    if (after && optim__sched_depth(after) + 1 > OPTIM_SCHEDULE_MAX_DEPTH) {
        int d = optim__sched_depth(after);
        optim_schedule_free(after);
        return optim__fail(err, OPTIM_EINVAL,
                           "%s: after nests %d deep, so the warm-up would nest %d deep: more than "
                           "OPTIM_SCHEDULE_MAX_DEPTH = %d",
                           fn, d, d + 1, OPTIM_SCHEDULE_MAX_DEPTH);
    }
    rc = optim__sched_new(out, OPTIM_SCHED_WARMUP, fn, err);
    if (rc == OPTIM_OK && after) {
        (*out)->children = (optim_schedule **)malloc(sizeof *(*out)->children);
        if (!(*out)->children) {
            free(*out);
            *out = NULL;
            rc = optim__fail(err, OPTIM_ENOMEM, "%s: out of memory", fn);
        }
    }
    if (rc != OPTIM_OK) {
        optim_schedule_free(after);
        return rc;
    }
    (*out)->ints[0] = warmup_steps;
    if (after) {
        (*out)->children[0] = after;
        (*out)->nchildren = 1;
    }
    return optim__ok(err);
}

int optim_schedule_wsd(optim_schedule **out, int64_t warmup_steps, int64_t stable_steps, int64_t decay_steps,
                       double eta_min, int decay_cosine, optim_error *err)
{
    static const char fn[] = "optim_schedule_wsd";
    OPTIM__FAIL_IF(!out, err, OPTIM_ENULL, "%s: out is NULL", fn);
    *out = NULL;
    OPTIM__CHECK_INT(warmup_steps >= 0, fn, "warmup_steps", warmup_steps, ">= 0");
    OPTIM__CHECK_INT(stable_steps >= 0, fn, "stable_steps", stable_steps, ">= 0");
    OPTIM__CHECK_INT(decay_steps >= 0, fn, "decay_steps", decay_steps, ">= 0");
    OPTIM__FAIL_IF(stable_steps > INT64_MAX - warmup_steps || decay_steps > INT64_MAX - warmup_steps - stable_steps,
                   err, OPTIM_EINVAL, "%s: warmup_steps + stable_steps + decay_steps = %lld + %lld + %lld overflows",
                   fn, (long long)warmup_steps, (long long)stable_steps, (long long)decay_steps);
    OPTIM__CHECK_REAL(eta_min >= 0, fn, "eta_min", eta_min, "a finite number >= 0");
    OPTIM__CHECK_INT(decay_cosine == 0 || decay_cosine == 1, fn, "decay_cosine", decay_cosine,
                     "0 (linear) or 1 (cosine)");
    OPTIM__FORWARD(optim__sched_new(out, OPTIM_SCHED_WSD, fn, err));
    (*out)->ints[0] = warmup_steps;
    (*out)->ints[1] = stable_steps;
    (*out)->ints[2] = decay_steps;
    (*out)->ints[3] = decay_cosine;
    (*out)->reals[0] = eta_min;
    return optim__ok(err);
}

/* Free schedules[0..count) (NULLs allowed): a composite owns its arguments
 * from the call on, also when the call fails. */
static void optim__sched_free_all(optim_schedule *const *schedules, size_t count)
{
    size_t i;
    if (!schedules) return;
    for (i = 0; i < count; i++) optim_schedule_free(schedules[i]);
}

int optim_schedule_sequential(optim_schedule **out, optim_schedule *const *schedules, size_t count,
                              const int64_t *milestones, optim_error *err)
{
    static const char fn[] = "optim_schedule_sequential";
    optim_schedule *s = NULL;
    size_t i;
    int rc = OPTIM_OK;
    if (out) *out = NULL;
    if (!out) rc = optim__fail(err, OPTIM_ENULL, "%s: out is NULL", fn);
    else if (!schedules) rc = optim__fail(err, OPTIM_ENULL, "%s: schedules is NULL", fn);
    else if (count == 0) rc = optim__fail(err, OPTIM_EINVAL, "%s: count = 0 must be >= 1", fn);
    else if (count > OPTIM_SCHEDULE_MAX_CHILDREN)
        rc = optim__fail(err, OPTIM_EINVAL, "%s: count = %zu schedules is more than OPTIM_SCHEDULE_MAX_CHILDREN = %d",
                         fn, count, OPTIM_SCHEDULE_MAX_CHILDREN);
    else if (count > 1 && !milestones)
        rc = optim__fail(err, OPTIM_ENULL, "%s: milestones is NULL (count = %zu needs %zu)", fn, count, count - 1);
    /* (count above the limit: its schedules are still freed below, up to count) */
    for (i = 0; rc == OPTIM_OK && i < count; i++) {
        if (!schedules[i]) rc = optim__fail(err, OPTIM_ENULL, "%s: schedules[%zu] is NULL", fn, i);
        else if (optim__sched_depth(schedules[i]) + 1 > OPTIM_SCHEDULE_MAX_DEPTH)
            rc = optim__fail(err, OPTIM_EINVAL,
                             "%s: schedules[%zu] nests %d deep, so the sequential would nest %d deep: more than "
                             "OPTIM_SCHEDULE_MAX_DEPTH = %d",
                             fn, i, optim__sched_depth(schedules[i]), optim__sched_depth(schedules[i]) + 1,
                             OPTIM_SCHEDULE_MAX_DEPTH);
    }
    for (i = 0; rc == OPTIM_OK && i + 1 < count; i++) {
        /* torch starts schedules[0] at step 0 whatever the milestones say, so a
         * milestone must be >= 1; equal milestones would give a schedule no
         * steps. Compared, never incremented: milestones[i - 1] may be INT64_MAX. */
        if (i == 0 && milestones[0] < 1)
            rc = optim__fail(err, OPTIM_EINVAL, "%s: milestones[0] = %lld must be >= 1 (milestones increase from 1)",
                             fn, (long long)milestones[0]);
        else if (i > 0 && milestones[i] <= milestones[i - 1])
            rc = optim__fail(err, OPTIM_EINVAL,
                             "%s: milestones[%zu] = %lld must be > milestones[%zu] = %lld (milestones increase "
                             "strictly)",
                             fn, i, (long long)milestones[i], i - 1, (long long)milestones[i - 1]);
    }
    if (rc == OPTIM_OK) rc = optim__sched_new(&s, OPTIM_SCHED_SEQUENTIAL, fn, err);
    if (rc == OPTIM_OK) {
        s->children = (optim_schedule **)malloc(count * sizeof *s->children);
        s->milestones = count > 1 ? (int64_t *)malloc((count - 1) * sizeof *s->milestones) : NULL;
        if (!s->children || (count > 1 && !s->milestones)) {
            free(s->children);
            free(s->milestones);
            free(s);
            s = NULL;
            rc = optim__fail(err, OPTIM_ENOMEM, "%s: out of memory for %zu schedules", fn, count);
        }
    }
    if (rc != OPTIM_OK) {
        optim__sched_free_all(schedules, count);
        return rc;
    }
    memcpy(s->children, schedules, count * sizeof *s->children);
    s->nchildren = count;
    if (count > 1) memcpy(s->milestones, milestones, (count - 1) * sizeof *s->milestones);
    s->nmilestones = count - 1;
    *out = s;
    return optim__ok(err);
}

optim_schedule *optim_schedule_clone(const optim_schedule *s)
{
    optim_schedule *c;
    size_t i;
    if (!s) return NULL;
    c = (optim_schedule *)calloc(1, sizeof *c);
    if (!c) return NULL;
    c->kind = s->kind;
    memcpy(c->ints, s->ints, sizeof c->ints);
    memcpy(c->reals, s->reals, sizeof c->reals);
    if (s->nmilestones) {
        c->milestones = (int64_t *)malloc(s->nmilestones * sizeof *c->milestones);
        if (!c->milestones) goto oom;
        memcpy(c->milestones, s->milestones, s->nmilestones * sizeof *c->milestones);
        c->nmilestones = s->nmilestones;
    }
    if (s->nchildren) {
        c->children = (optim_schedule **)calloc(s->nchildren, sizeof *c->children);
        if (!c->children) goto oom;
        c->nchildren = s->nchildren;
        for (i = 0; i < s->nchildren; i++) {
            c->children[i] = optim_schedule_clone(s->children[i]);
            if (!c->children[i]) goto oom;
        }
    }
    return c;
oom:
    optim_schedule_free(c);
    return NULL;
}

void optim_schedule_free(optim_schedule *s)
{
    size_t i;
    if (!s) return;
    for (i = 0; i < s->nchildren; i++) optim_schedule_free(s->children[i]);
    free(s->children);
    free(s->milestones);
    free(s);
}

optim_schedule_kind optim_schedule_get_kind(const optim_schedule *s)
{
    return s ? s->kind : (optim_schedule_kind)0;
}

/* ---- Evaluation ------------------------------------------------------------ */

/* Number of entries of the sorted v[0..n) that are <= t (Python's bisect_right). */
static size_t optim__count_le(const int64_t *v, size_t n, int64_t t)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid] <= t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The descent of a cyclic schedule in steps, from its stored encoding. */
static int64_t optim__cyclic_down(const optim_schedule *s)
{
    if (s->ints[1] == OPTIM__CYCLIC_STORED_AS_UP) return s->ints[0];
    if (s->ints[1] == OPTIM__CYCLIC_STORED_ZERO) return 0;
    return s->ints[1];
}

/* eta_min + (top - eta_min)(1 + cos(pi num / den)) / 2, in torch's order.
 * That is eta_min exactly at num = den (cos(pi) = -1); at num = 0 it can miss
 * top by an ulp, so the start of a cycle returns top itself (as torch's
 * recursive form does: it starts from the group's lr). */
static double optim__cosine(double top, double eta_min, double num, double den)
{
    if (num == 0) return top;
    return eta_min + (top - eta_min) * (1 + cos(OPTIM__PI * num / den)) / 2;
}

/* torch OneCycleLR.get_lr, phase by phase, for 0 <= t <= total_steps: at
 * t = total_steps, as in torch, the last phase's formula with pct > 1. */
static double optim__one_cycle(const optim_schedule *s, int64_t t)
{
    const double max_lr = s->reals[0], pct_start = s->reals[1];
    const double total = (double)s->ints[0];
    const double initial = max_lr / s->reals[2];
    const double min_lr = initial / s->reals[3];
    double end[3], lo[3], hi[3], start_step = 0, step = (double)t, pct;
    int nphase, i;
    if (s->ints[2]) {
        nphase = 3;
        end[0] = pct_start * total - 1;
        end[1] = 2 * pct_start * total - 2;
        end[2] = total - 1;
        lo[0] = initial, hi[0] = max_lr;
        lo[1] = max_lr, hi[1] = initial;
        lo[2] = initial, hi[2] = min_lr;
    } else {
        nphase = 2;
        end[0] = pct_start * total - 1;
        end[1] = total - 1;
        lo[0] = initial, hi[0] = max_lr;
        lo[1] = max_lr, hi[1] = min_lr;
    }
    for (i = 0; i < nphase; i++) {
        if (step <= end[i] || i == nphase - 1) break;
        start_step = end[i];
    }
    if (end[i] == start_step) {
        /* A phase of no length, where torch divides by zero. Before total_steps
         * only the first can be met so (pct_start * total_steps = 1: it ends at
         * step 0 where it starts): the schedule starts at max_lr / div_factor,
         * so that is step 0. At total_steps the last can (it ends at
         * total_steps - 1 where it starts): hold the lr of that step. */
        if (t == s->ints[0]) return optim__one_cycle(s, t - 1);
        pct = 0.0;
    } else {
        pct = (step - start_step) / (end[i] - start_step);
    }
    if (s->ints[1]) return hi[i] + (lo[i] - hi[i]) / 2.0 * (cos(OPTIM__PI * pct) + 1);
    return (hi[i] - lo[i]) * pct + lo[i];
}

/* Position T_cur of step t in its cycle of SGDR's cycles t_0, t_0 t_mult,
 * t_0 t_mult^2, ..., and that cycle's length T_i (a double: the cycle holding
 * the largest int64 steps may be longer than any int64). */
static void optim__restart_position(int64_t t, int64_t t_0, int64_t t_mult, int64_t *t_cur, double *t_i)
{
    int64_t len = t_0;
    if (t_mult == 1) {
        *t_cur = t % t_0;
        *t_i = (double)t_0;
        return;
    }
    /* At most 63 rounds: len at least doubles each time. */
    while (t >= len) {
        t -= len;
        if (len > INT64_MAX / t_mult) {
            /* The next cycle is longer than any int64 t, so t is inside it. */
            *t_cur = t;
            *t_i = (double)len * (double)t_mult;
            return;
        }
        len *= t_mult;
    }
    *t_cur = t;
    *t_i = (double)len;
}

double optim_schedule_lr(const optim_schedule *s, double base_lr, int64_t t)
{
    if (!s) return base_lr;
    if (t < 0) return NAN;
    switch (s->kind) {
    case OPTIM_SCHED_CONSTANT:
        return t < s->ints[0] ? base_lr * s->reals[0] : base_lr;
    case OPTIM_SCHED_STEP:
        return base_lr * pow(s->reals[0], (double)(t / s->ints[0]));
    case OPTIM_SCHED_MULTISTEP:
        return base_lr * pow(s->reals[0], (double)optim__count_le(s->milestones, s->nmilestones, t));
    case OPTIM_SCHED_EXPONENTIAL:
        return base_lr * pow(s->reals[0], (double)t);
    case OPTIM_SCHED_LINEAR: {
        const double a = s->reals[0], b = s->reals[1];
        if (t >= s->ints[0]) return base_lr * b;
        return base_lr * (a + (b - a) * (double)t / (double)s->ints[0]);
    }
    case OPTIM_SCHED_POLYNOMIAL: {
        /* (T - t) / T rather than torch's 1 - t / T: exact to half an ulp near the end. */
        const int64_t n = s->ints[0], left = t < n ? n - t : 0;
        return base_lr * pow((double)left / (double)n, s->reals[0]);
    }
    case OPTIM_SCHED_COSINE:
        /* Periodic with period 2 t_max, like torch's closed form; reducing t first keeps
         * the argument of cos small (and t = t_max gives cos(pi) = -1: eta_min exactly). */
        return optim__cosine(base_lr, s->reals[0], (double)(t % (2 * s->ints[0])), (double)s->ints[0]);
    case OPTIM_SCHED_COSINE_RESTARTS: {
        int64_t t_cur;
        double t_i;
        optim__restart_position(t, s->ints[0], s->ints[1], &t_cur, &t_i);
        return optim__cosine(base_lr, s->reals[0], (double)t_cur, t_i);
    }
    case OPTIM_SCHED_ONE_CYCLE:
        /* Up to total_steps as torch (which extrapolates the last phase at
         * total_steps); torch raises beyond, this holds the minimum, the lr of
         * step total_steps - 1. */
        return optim__one_cycle(s, t <= s->ints[0] ? t : s->ints[0] - 1);
    case OPTIM_SCHED_CYCLIC: {
        /* torch: cycle = floor(1 + t / total), x = 1 + t / total - cycle, in floating
         * point; here the position in the cycle is the integer t mod total, exact for any t. */
        const int64_t up = s->ints[0], down = optim__cyclic_down(s), total = up + down;
        /* The cycles completed (torch's cycle - 1; cycle itself overflows at t = INT64_MAX, total = 1). */
        const int64_t done = t / total, r = t % total;
        const double base = s->reals[0], top = s->reals[1];
        /* down = 0 (a sawtooth): r < up = total, always on the way up, as torch's step_ratio = 1. */
        double sf = r <= up ? (double)r / (double)up : (double)(total - r) / (double)down, scale;
        switch ((optim_cyclic_mode)s->ints[2]) {
        case OPTIM_CYCLIC_TRIANGULAR2:
            scale = done > 2000 ? 0.0 : ldexp(1.0, -(int)done);
            break;
        case OPTIM_CYCLIC_EXP_RANGE:
            scale = pow(s->reals[2], (double)t);
            break;
        default:
            scale = 1.0;
            break;
        }
        return base + (top - base) * sf * scale;
    }
    case OPTIM_SCHED_WARMUP: {
        const int64_t w = s->ints[0];
        const optim_schedule *after = s->nchildren ? s->children[0] : NULL;
        /* Ramp to where `after` starts, so the two meet without a jump; the
         * fraction first, so the last warm-up step is that lr exactly. */
        if (t < w) return optim_schedule_lr(after, base_lr, 0) * ((double)(t + 1) / (double)w);
        return optim_schedule_lr(after, base_lr, t - w);
    }
    case OPTIM_SCHED_WSD: {
        const int64_t w = s->ints[0], st = s->ints[1], d = s->ints[2];
        const double eta_min = s->reals[0];
        int64_t k;
        if (t < w) return base_lr * ((double)(t + 1) / (double)w);
        if (t - w < st) return base_lr;
        k = t - w - st;
        if (k >= d) return eta_min;
        if (s->ints[3]) return optim__cosine(base_lr, eta_min, (double)k, (double)d);
        return eta_min + (base_lr - eta_min) * (double)(d - k) / (double)d;
    }
    case OPTIM_SCHED_SEQUENTIAL: {
        const size_t i = optim__count_le(s->milestones, s->nmilestones, t);
        return optim_schedule_lr(s->children[i], base_lr, i ? t - s->milestones[i - 1] : t);
    }
    }
    return NAN;
}

/* ---- Attachment to the groups of an optimizer ------------------------------ */

double optim__group_lr(const optim__group *g)
{
    return g->sched ? optim_schedule_lr(g->sched, g->hp.lr, g->sched_t) : g->hp.lr;
}

void optim__schedules_advance(optim *o)
{
    size_t i;
    for (i = 0; i < o->ngroups; i++)
        if (o->groups[i].sched_t < INT64_MAX) o->groups[i].sched_t++;
}

void optim__schedules_free(optim *o)
{
    size_t i;
    for (i = 0; i < o->ngroups; i++) {
        optim_schedule_free(o->groups[i].sched);
        o->groups[i].sched = NULL;
    }
}

int optim_group_set_schedule(optim *o, size_t g, const optim_schedule *s)
{
    optim_schedule *copy = NULL;
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(g >= o->ngroups, &o->err, OPTIM_ERANGE,
                   "optim_group_set_schedule: group %zu does not exist (%zu groups)", g, o->ngroups);
    if (s) {
        copy = optim_schedule_clone(s);
        OPTIM__FAIL_IF(!copy, &o->err, OPTIM_ENOMEM, "optim_group_set_schedule: out of memory for a copy of the schedule");
    }
    optim_schedule_free(o->groups[g].sched);
    o->groups[g].sched = copy;
    o->groups[g].sched_t = 0;
    return optim__ok(&o->err);
}

const optim_schedule *optim_group_get_schedule(const optim *o, size_t g)
{
    if (!o || g >= o->ngroups) return NULL;
    return o->groups[g].sched;
}

int optim_group_get_schedule_step(const optim *o, size_t g, int64_t *t)
{
    if (!o || !t) return OPTIM_ENULL;
    if (g >= o->ngroups) return OPTIM_ERANGE;
    *t = o->groups[g].sched_t;
    return OPTIM_OK;
}

int optim_group_set_schedule_step(optim *o, size_t g, int64_t t)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(g >= o->ngroups, &o->err, OPTIM_ERANGE,
                   "optim_group_set_schedule_step: group %zu does not exist (%zu groups)", g, o->ngroups);
    OPTIM__FAIL_IF(t < 0, &o->err, OPTIM_EINVAL, "optim_group_set_schedule_step: t = %lld must be >= 0",
                   (long long)t);
    o->groups[g].sched_t = t;
    return optim__ok(&o->err);
}

int optim_group_current_lr(const optim *o, size_t g, double *lr)
{
    if (!o || !lr) return OPTIM_ENULL;
    if (g >= o->ngroups) return OPTIM_ERANGE;
    *lr = optim__group_lr(&o->groups[g]);
    return OPTIM_OK;
}

/* ---- Rebuilding from stored parts (checkpoints) --------------------------- */

int optim__schedule_from_parts(optim_schedule **out, optim_schedule_kind kind, const int64_t *ints,
                               const double *reals, const int64_t *milestones, size_t nmilestones,
                               optim_schedule *const *children, size_t nchildren, optim_error *err)
{
    static const char fn[] = "optim__schedule_from_parts";
    size_t need_children = 0, need_milestones = 0;
    *out = NULL;
    switch (kind) {
    case OPTIM_SCHED_WARMUP: need_children = nchildren <= 1 ? nchildren : 1; break;
    case OPTIM_SCHED_SEQUENTIAL:
        need_children = nchildren;
        need_milestones = nchildren ? nchildren - 1 : 0;
        break;
    case OPTIM_SCHED_MULTISTEP: need_milestones = nmilestones; break;
    default: break;
    }
    if (nchildren != need_children || nmilestones != need_milestones || (nmilestones && !milestones)) {
        optim__sched_free_all(children, nchildren);
        return optim__fail(err, OPTIM_EINVAL, "%s: a schedule of kind %d cannot have %zu children and %zu milestones",
                           fn, (int)kind, nchildren, nmilestones);
    }
    if (kind >= OPTIM_SCHED_CONSTANT && kind <= OPTIM_SCHED_SEQUENTIAL) {
        /* The arguments a kind does not use are stored as 0 (the table in
         * schedule_internal.h): anything else is a contradictory record. */
        static const unsigned char nints[14] = {0, 1, 1, 0, 0, 1, 1, 1, 2, 3, 3, 1, 4, 0};
        static const unsigned char nreals[14] = {0, 1, 1, 1, 1, 2, 1, 1, 1, 4, 3, 0, 1, 0};
        static const double zero = 0.0;
        int k;
        for (k = nints[kind]; k < OPTIM__SCHED_NI; k++)
            if (ints[k] != 0) {
                optim__sched_free_all(children, nchildren);
                return optim__fail(err, OPTIM_EINVAL, "%s: a schedule of kind %d has ints[%d] = %lld, which it does "
                                   "not use (0)", fn, (int)kind, k, (long long)ints[k]);
            }
        for (k = nreals[kind]; k < OPTIM__SCHED_NR; k++)
            if (memcmp(&reals[k], &zero, sizeof zero) != 0) {
                optim__sched_free_all(children, nchildren);
                return optim__fail(err, OPTIM_EINVAL, "%s: a schedule of kind %d has reals[%d] = %.17g, which it "
                                   "does not use (0)", fn, (int)kind, k, reals[k]);
            }
    }
    switch (kind) {
    case OPTIM_SCHED_CONSTANT: return optim_schedule_constant(out, reals[0], ints[0], err);
    case OPTIM_SCHED_STEP: return optim_schedule_step(out, ints[0], reals[0], err);
    case OPTIM_SCHED_MULTISTEP: return optim_schedule_multistep(out, milestones, nmilestones, reals[0], err);
    case OPTIM_SCHED_EXPONENTIAL: return optim_schedule_exponential(out, reals[0], err);
    case OPTIM_SCHED_LINEAR: return optim_schedule_linear(out, reals[0], reals[1], ints[0], err);
    case OPTIM_SCHED_POLYNOMIAL: return optim_schedule_polynomial(out, ints[0], reals[0], err);
    case OPTIM_SCHED_COSINE: return optim_schedule_cosine(out, ints[0], reals[0], err);
    case OPTIM_SCHED_COSINE_RESTARTS: return optim_schedule_cosine_restarts(out, ints[0], ints[1], reals[0], err);
    case OPTIM_SCHED_ONE_CYCLE:
        OPTIM__FAIL_IF(ints[1] != 0 && ints[1] != 1, err, OPTIM_EINVAL, "%s: one-cycle anneal_cos = %lld", fn,
                       (long long)ints[1]);
        OPTIM__FAIL_IF(ints[2] != 0 && ints[2] != 1, err, OPTIM_EINVAL, "%s: one-cycle three_phase = %lld", fn,
                       (long long)ints[2]);
        return optim_schedule_one_cycle(out, reals[0], ints[0], reals[1], (int)ints[1], reals[2], reals[3],
                                        (int)ints[2], err);
    case OPTIM_SCHED_CYCLIC:
        OPTIM__FAIL_IF(ints[2] < 0 || ints[2] > OPTIM_CYCLIC_EXP_RANGE, err, OPTIM_EINVAL, "%s: cyclic mode = %lld",
                       fn, (long long)ints[2]);
        /* ints[1] is in the stored encoding: 0 is "as step_size_up" (what format 1 has
         * always meant), -1 no descent; other negatives reach the constructor, which refuses them. */
        return optim_schedule_cyclic(out, reals[0], reals[1], ints[0],
                                     ints[1] == OPTIM__CYCLIC_STORED_AS_UP  ? OPTIM_CYCLIC_DOWN_AS_UP
                                     : ints[1] == OPTIM__CYCLIC_STORED_ZERO ? 0
                                                                            : ints[1],
                                     (optim_cyclic_mode)ints[2], reals[2], err);
    case OPTIM_SCHED_WARMUP: return optim_schedule_warmup(out, ints[0], nchildren ? children[0] : NULL, err);
    case OPTIM_SCHED_WSD:
        OPTIM__FAIL_IF(ints[3] != 0 && ints[3] != 1, err, OPTIM_EINVAL, "%s: wsd decay_cosine = %lld", fn,
                       (long long)ints[3]);
        return optim_schedule_wsd(out, ints[0], ints[1], ints[2], reals[0], (int)ints[3], err);
    case OPTIM_SCHED_SEQUENTIAL: return optim_schedule_sequential(out, children, nchildren, milestones, err);
    default: return optim__fail(err, OPTIM_EINVAL, "%s: kind = %d is not a schedule kind", fn, (int)kind);
    }
}
