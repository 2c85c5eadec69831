/*
 * optim_schedule.h: learning-rate schedules as pure functions of the step.
 *
 * A schedule maps (base_lr, t) to the learning rate of step t, t = 0 for the
 * first step, in closed form: evaluating step 10^6 costs the same as step 0,
 * and no state is carried between steps (the model is llm.c's schedulers.h).
 * Semantics follow torch.optim.lr_scheduler: after constructing a torch
 * scheduler, the optimizer's k-th step (k = 0, 1, ...) runs with the lr
 * torch's scheduler has after k calls of scheduler.step(); optim_schedule_lr
 * returns exactly that lr for t = k (up to rounding: closed forms in double).
 *
 * Multiplicative schedules scale base_lr (the group's lr); OneCycle and
 * Cyclic set absolute learning rates given at construction, as in torch.
 *
 * A schedule is immutable once built. Composite schedules (warm-up,
 * sequential) take ownership of the schedules passed to them, also when they
 * fail. Attached to a group of an optimizer (optim_group_set_schedule), a
 * schedule is copied, and every step of the optimizer uses
 * optim_schedule_lr(schedule, group's lr, t) with t the group's schedule
 * step (0 at attachment, +1 per step taken; steps skipped for non-finite
 * gradients do not count).
 *
 * Constructors return OPTIM_OK or OPTIM_EINVAL/ENOMEM with a message in *err
 * (may be NULL) naming the argument and its value.
 */
#ifndef OPTIM_SCHEDULE_H
#define OPTIM_SCHEDULE_H

#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct optim_schedule optim_schedule;

typedef enum optim_schedule_kind {
    OPTIM_SCHED_CONSTANT = 1,        /* torch ConstantLR */
    OPTIM_SCHED_STEP = 2,            /* torch StepLR */
    OPTIM_SCHED_MULTISTEP = 3,       /* torch MultiStepLR */
    OPTIM_SCHED_EXPONENTIAL = 4,     /* torch ExponentialLR */
    OPTIM_SCHED_LINEAR = 5,          /* torch LinearLR */
    OPTIM_SCHED_POLYNOMIAL = 6,      /* torch PolynomialLR */
    OPTIM_SCHED_COSINE = 7,          /* torch CosineAnnealingLR */
    OPTIM_SCHED_COSINE_RESTARTS = 8, /* torch CosineAnnealingWarmRestarts */
    OPTIM_SCHED_ONE_CYCLE = 9,       /* torch OneCycleLR */
    OPTIM_SCHED_CYCLIC = 10,         /* torch CyclicLR */
    OPTIM_SCHED_WARMUP = 11,         /* linear warm-up, then another schedule */
    OPTIM_SCHED_WSD = 12,            /* warm-up, stable, decay */
    OPTIM_SCHED_SEQUENTIAL = 13      /* torch SequentialLR */
} optim_schedule_kind;

typedef enum optim_cyclic_mode {
    OPTIM_CYCLIC_TRIANGULAR = 0,
    OPTIM_CYCLIC_TRIANGULAR2 = 1,
    OPTIM_CYCLIC_EXP_RANGE = 2
} optim_cyclic_mode;

/** lr = base * factor for t < total_iters, then base. */
OPTIM_API int optim_schedule_constant(optim_schedule **out, double factor, int64_t total_iters, optim_error *err);
/** lr = base * gamma^floor(t / step_size). */
OPTIM_API int optim_schedule_step(optim_schedule **out, int64_t step_size, double gamma, optim_error *err);
/** lr = base * gamma^(number of milestones <= t); milestones need not be sorted (torch counts repeats). */
OPTIM_API int optim_schedule_multistep(optim_schedule **out, const int64_t *milestones, size_t count, double gamma,
                                       optim_error *err);
/** lr = base * gamma^t. */
OPTIM_API int optim_schedule_exponential(optim_schedule **out, double gamma, optim_error *err);
/** Factor moves linearly from start_factor to end_factor over total_iters steps, then stays. */
OPTIM_API int optim_schedule_linear(optim_schedule **out, double start_factor, double end_factor, int64_t total_iters,
                                    optim_error *err);
/** lr = base * (1 - min(t, total_iters) / total_iters)^power. */
OPTIM_API int optim_schedule_polynomial(optim_schedule **out, int64_t total_iters, double power, optim_error *err);
/** lr = eta_min + (base - eta_min)(1 + cos(pi t / t_max)) / 2 (torch's closed form; periodic after t_max as torch's). */
OPTIM_API int optim_schedule_cosine(optim_schedule **out, int64_t t_max, double eta_min, optim_error *err);
/** Cosine annealing restarted after t_0, t_0 * t_mult, t_0 * t_mult^2, ... steps. */
OPTIM_API int optim_schedule_cosine_restarts(optim_schedule **out, int64_t t_0, int64_t t_mult, double eta_min,
                                             optim_error *err);
/** torch OneCycleLR: absolute lrs from max_lr / div_factor up to max_lr and down to
 *  max_lr / (div_factor * final_div_factor); anneal_cos 1 for cosine, 0 for linear. */
OPTIM_API int optim_schedule_one_cycle(optim_schedule **out, double max_lr, int64_t total_steps, double pct_start,
                                       int anneal_cos, double div_factor, double final_div_factor, int three_phase,
                                       optim_error *err);
/** torch CyclicLR: absolute lrs between base_lr and max_lr (step_size_down 0: = step_size_up). */
OPTIM_API int optim_schedule_cyclic(optim_schedule **out, double base_lr, double max_lr, int64_t step_size_up,
                                    int64_t step_size_down, optim_cyclic_mode mode, double gamma, optim_error *err);
/** Linear warm-up: lr = base * (t + 1) / warmup_steps for t < warmup_steps, then
 *  `after` evaluated at t - warmup_steps (after == NULL: constant base). Takes ownership of after. */
OPTIM_API int optim_schedule_warmup(optim_schedule **out, int64_t warmup_steps, optim_schedule *after,
                                    optim_error *err);
/** Warm-up (as optim_schedule_warmup) for warmup_steps, base for stable_steps, then decay to
 *  eta_min over decay_steps (linear, or cosine if decay_cosine), then eta_min. */
OPTIM_API int optim_schedule_wsd(optim_schedule **out, int64_t warmup_steps, int64_t stable_steps,
                                 int64_t decay_steps, double eta_min, int decay_cosine, optim_error *err);
/** torch SequentialLR: schedules[i] runs from milestones[i-1] (0 for i = 0), evaluated at
 *  t - milestones[i-1]. count schedules, count - 1 increasing milestones. Takes ownership. */
OPTIM_API int optim_schedule_sequential(optim_schedule **out, optim_schedule *const *schedules, size_t count,
                                        const int64_t *milestones, optim_error *err);

/** A deep copy (NULL on failure or for NULL). */
OPTIM_API optim_schedule *optim_schedule_clone(const optim_schedule *s);
/** Free a schedule and the schedules it owns. NULL is a no-op. */
OPTIM_API void optim_schedule_free(optim_schedule *s);
OPTIM_API optim_schedule_kind optim_schedule_get_kind(const optim_schedule *s);

/** The learning rate of step t (t >= 0) for a group whose lr is base_lr. */
OPTIM_API double optim_schedule_lr(const optim_schedule *s, double base_lr, int64_t t);

/** Attach a copy of s to group g (NULL detaches); the group's schedule step restarts at 0. */
OPTIM_API int optim_group_set_schedule(optim *opt, size_t g, const optim_schedule *s);
/** The group's schedule (owned by the optimizer), or NULL. */
OPTIM_API const optim_schedule *optim_group_get_schedule(const optim *opt, size_t g);
/** Read or set the group's schedule step (to resume a run). */
OPTIM_API int optim_group_get_schedule_step(const optim *opt, size_t g, int64_t *t);
OPTIM_API int optim_group_set_schedule_step(optim *opt, size_t g, int64_t t);
/** The lr group g's next step will use: the schedule's value, or the group's lr. */
OPTIM_API int optim_group_current_lr(const optim *opt, size_t g, double *lr);

#ifdef __cplusplus
}
#endif
#endif
