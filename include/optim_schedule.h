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
 * The one deliberate difference from torch: torch's schedulers are
 * "chainable" (each step rescales whatever lr the group has, so a hand edit
 * of the lr between steps carries on); these read only (base_lr, t), so the
 * lr of step t never depends on what happened before it. Changing the
 * group's lr (optim_group_set_hparam) rescales a multiplicative schedule from
 * then on. docs/SCHEDULES.md has every formula with a plot.
 *
 * A schedule is immutable once built. Composite schedules (warm-up,
 * sequential) take ownership of the schedules passed to them, also when they
 * fail. Attached to a group of an optimizer (optim_group_set_schedule), a
 * schedule is copied, and every step of the optimizer uses
 * optim_schedule_lr(schedule, group's lr, t) with t the group's schedule
 * step (0 at attachment, +1 per step taken; steps skipped for non-finite
 * gradients do not count).
 *
 * Constructors return OPTIM_OK, or OPTIM_EINVAL / OPTIM_ENULL / OPTIM_ENOMEM
 * with a message in *err (may be NULL) naming the argument and its value;
 * *out is NULL on failure.
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

/* Limits, checked by the constructors (OPTIM_EINVAL naming the limit and the
 * value) so that every schedule can be saved in a checkpoint and loaded back
 * (optim_checkpoint.h). */
/** Composite schedules nest at most this deep: a schedule that is not a
 *  composite has depth 0, a warm-up or sequential 1 + its children's largest. */
#define OPTIM_SCHEDULE_MAX_DEPTH 32
/** A sequential schedule has at most this many schedules. */
#define OPTIM_SCHEDULE_MAX_CHILDREN 1024
/** A multistep schedule has at most this many milestones (repeats counted). */
#define OPTIM_SCHEDULE_MAX_MILESTONES (1 << 20)

typedef enum optim_cyclic_mode {
    OPTIM_CYCLIC_TRIANGULAR = 0,
    OPTIM_CYCLIC_TRIANGULAR2 = 1,
    OPTIM_CYCLIC_EXP_RANGE = 2
} optim_cyclic_mode;

/*
 * The schedules. In the formulas, base is the group's lr (base_lr of
 * optim_schedule_lr) and t >= 0 the step. Real arguments must be finite;
 * every schedule returns lr >= 0 for base >= 0 (but one-cycle's linear
 * anneal at t = total_steps, which is torch's value). "After the end" says what
 * happens past the schedule's nominal length: each schedule is defined for
 * every t up to INT64_MAX, in O(1) (O(log t) for restarts with t_mult > 1).
 */

/** torch ConstantLR: lr = base * factor for t < total_iters, then base (held for ever).
 *  factor in [0, 1], total_iters >= 1 (torch's recursive form keeps the factor
 *  for ever with total_iters = 0, its closed form never applies it: rejected). */
OPTIM_API int optim_schedule_constant(optim_schedule **out, double factor, int64_t total_iters, optim_error *err);
/** torch StepLR: lr = base * gamma^floor(t / step_size). step_size >= 1, gamma >= 0.
 *  No end: the decay goes on (underflowing to 0 for gamma < 1). */
OPTIM_API int optim_schedule_step(optim_schedule **out, int64_t step_size, double gamma, optim_error *err);
/** torch MultiStepLR: lr = base * gamma^(number of milestones <= t). Milestones
 *  >= 0, in any order; a milestone listed twice counts twice (as torch's
 *  Counter). count may be 0 (milestones may then be NULL), at most
 *  OPTIM_SCHEDULE_MAX_MILESTONES. After the last milestone the lr stays. */
OPTIM_API int optim_schedule_multistep(optim_schedule **out, const int64_t *milestones, size_t count, double gamma,
                                       optim_error *err);
/** torch ExponentialLR: lr = base * gamma^t, gamma >= 0. No end. */
OPTIM_API int optim_schedule_exponential(optim_schedule **out, double gamma, optim_error *err);
/** torch LinearLR: lr = base * (start + (end - start) * t / total_iters) for
 *  t < total_iters, then base * end (held). start_factor and end_factor in
 *  [0, 1] (start_factor 0 is allowed: torch's recursive form divides by it),
 *  total_iters >= 1. */
OPTIM_API int optim_schedule_linear(optim_schedule **out, double start_factor, double end_factor, int64_t total_iters,
                                    optim_error *err);
/** torch PolynomialLR: lr = base * ((total_iters - min(t, total_iters)) / total_iters)^power:
 *  0 from total_iters on (base for power 0). total_iters >= 1, power >= 0. */
OPTIM_API int optim_schedule_polynomial(optim_schedule **out, int64_t total_iters, double power, optim_error *err);
/** torch CosineAnnealingLR: lr = eta_min + (base - eta_min)(1 + cos(pi t / t_max)) / 2.
 *  After t_max it is periodic (period 2 t_max: back up to base at 2 t_max),
 *  as torch's closed and recursive forms are; use optim_schedule_wsd with
 *  decay_cosine = 1 for a cosine that stays at eta_min. t_max in [1, 2^62),
 *  eta_min >= 0 (an absolute lr; it may exceed base). */
OPTIM_API int optim_schedule_cosine(optim_schedule **out, int64_t t_max, double eta_min, optim_error *err);
/** torch CosineAnnealingWarmRestarts (SGDR): cycles of lengths t_0, t_0 t_mult,
 *  t_0 t_mult^2, ...; in a cycle of length T_i at position T_cur,
 *  lr = eta_min + (base - eta_min)(1 + cos(pi T_cur / T_i)) / 2. No end.
 *  t_0 >= 1, t_mult >= 1 (integers, as torch), eta_min >= 0. */
OPTIM_API int optim_schedule_cosine_restarts(optim_schedule **out, int64_t t_0, int64_t t_mult, double eta_min,
                                             optim_error *err);
/** torch OneCycleLR (absolute lrs; base is ignored): from initial = max_lr /
 *  div_factor up to max_lr over the first pct_start * total_steps steps, then
 *  down to initial / final_div_factor at step total_steps - 1 (three_phase:
 *  up, back down to initial symmetrically, then down to the minimum), each
 *  phase annealed by cosine (anneal_cos = 1) or linearly (0), with torch's
 *  phase boundaries (pct_start * total_steps - 1, ...). After the end: at
 *  t = total_steps the value is torch's, its last phase's formula carried on
 *  to pct > 1 (linear: below the minimum by one step's decrement, often below
 *  0; cosine: back above the minimum by a little); for t > total_steps, where
 *  torch raises, the lr of step total_steps - 1 (the minimum, unless
 *  three_phase's middle phase runs past the end) is held. Where torch divides
 *  by zero for a phase of no length: with pct_start * total_steps = 1 the
 *  first phase is empty, step 0 has lr initial and the descent starts at
 *  step 1; with an empty last phase (pct_start = 1, say) step total_steps
 *  holds the lr of step total_steps - 1. max_lr >= 0, total_steps >= 1,
 *  pct_start in [0, 1], div_factor and final_div_factor > 0. */
OPTIM_API int optim_schedule_one_cycle(optim_schedule **out, double max_lr, int64_t total_steps, double pct_start,
                                       int anneal_cos, double div_factor, double final_div_factor, int three_phase,
                                       optim_error *err);
/** step_size_down of optim_schedule_cyclic: as many steps down as up (torch's
 *  step_size_down=None). */
#define OPTIM_CYCLIC_DOWN_AS_UP (-1)

/** torch CyclicLR (absolute lrs; base is ignored): cycles of step_size_up steps
 *  from base_lr up to max_lr and step_size_down steps back
 *  (OPTIM_CYCLIC_DOWN_AS_UP: step_size_up steps; 0: none, a sawtooth that
 *  drops from the top back to base_lr, as torch's step_size_down=0); with h
 *  the height in the cycle (0 at its start, 1 at its peak; the position in
 *  the cycle is the integer t mod (up + down)),
 *  lr = base_lr + (max_lr - base_lr) * h * scale, scale = 1 (TRIANGULAR),
 *  1 / 2^(cycle - 1) with cycle = 1, 2, ... (TRIANGULAR2) or gamma^t (EXP_RANGE).
 *  No end. base_lr, max_lr >= 0 (max_lr < base_lr cycles downwards),
 *  step_size_up >= 1, step_size_down >= 0 or OPTIM_CYCLIC_DOWN_AS_UP, gamma > 0
 *  and, since only EXP_RANGE reads it, exactly 1 for the other modes. Step
 *  sizes are whole steps: torch also takes fractional ones (2.5), which this
 *  integer form does not represent (optim.torch's CyclicLR refuses them).
 *  Until step_size_down = 0 meant a sawtooth it meant "as up": checkpoints
 *  from then still load with that meaning. */
OPTIM_API int optim_schedule_cyclic(optim_schedule **out, double base_lr, double max_lr, int64_t step_size_up,
                                    int64_t step_size_down, optim_cyclic_mode mode, double gamma, optim_error *err);
/** Linear warm-up (llm.c's form), then another schedule: with a = after's lr
 *  at its step 0 (base for after == NULL, so warm-up + cosine ramps to base),
 *  lr = a * (t + 1) / warmup_steps for t < warmup_steps, then `after`
 *  evaluated at t - warmup_steps; its end is after's end (after == NULL:
 *  base for ever). warmup_steps >= 0 (0: after alone); after nests at most
 *  OPTIM_SCHEDULE_MAX_DEPTH - 1 deep. Takes ownership of after, also on
 *  failure. */
OPTIM_API int optim_schedule_warmup(optim_schedule **out, int64_t warmup_steps, optim_schedule *after,
                                    optim_error *err);
/** Warm-up, stable, decay: base * (t + 1) / warmup_steps for t < warmup_steps,
 *  base for the next stable_steps steps, then from base down to eta_min over
 *  decay_steps steps (with k = t - warmup_steps - stable_steps:
 *  eta_min + (base - eta_min)(decay_steps - k) / decay_steps, or with
 *  decay_cosine eta_min + (base - eta_min)(1 + cos(pi k / decay_steps)) / 2),
 *  and eta_min from k = decay_steps on, for ever. Every count >= 0 (their sum
 *  must fit int64_t), eta_min >= 0 (absolute). warm-up + cosine to eta_min at
 *  step total is optim_schedule_wsd(out, warmup, 0, total - warmup, eta_min, 1, err). */
OPTIM_API int optim_schedule_wsd(optim_schedule **out, int64_t warmup_steps, int64_t stable_steps,
                                 int64_t decay_steps, double eta_min, int decay_cosine, optim_error *err);
/** torch SequentialLR: schedules[0] runs from step 0, schedules[i] from
 *  milestones[i-1] on, evaluated at t - milestones[i-1] (each starts at its
 *  own step 0, as torch restarts it with step(0)); the end is the last
 *  schedule's. count in [1, OPTIM_SCHEDULE_MAX_CHILDREN] schedules, each
 *  nesting at most OPTIM_SCHEDULE_MAX_DEPTH - 1 deep; count - 1 milestones,
 *  strictly increasing from 1 (torch starts schedules[0] at step 0 whatever
 *  the milestones say). Takes ownership of every schedule, also on failure. */
OPTIM_API int optim_schedule_sequential(optim_schedule **out, optim_schedule *const *schedules, size_t count,
                                        const int64_t *milestones, optim_error *err);

/** A deep copy (NULL on failure or for NULL). */
OPTIM_API optim_schedule *optim_schedule_clone(const optim_schedule *s);
/** Free a schedule and the schedules it owns. NULL is a no-op. */
OPTIM_API void optim_schedule_free(optim_schedule *s);
/** The kind of s, or 0 for NULL. */
OPTIM_API optim_schedule_kind optim_schedule_get_kind(const optim_schedule *s);

/** The learning rate of step t (t >= 0) for a group whose lr is base_lr.
 *  s == NULL returns base_lr (no schedule); t < 0 returns NaN. */
OPTIM_API double optim_schedule_lr(const optim_schedule *s, double base_lr, int64_t t);

/** Attach a copy of s to group g (NULL detaches); the group's schedule step
 *  restarts at 0. The group's lr hyperparameter stays the base the schedule
 *  scales. OPTIM_ERANGE for a group that does not exist, OPTIM_ENOMEM. The
 *  optimizer frees the copy (optim_free, or when another is attached). */
OPTIM_API int optim_group_set_schedule(optim *opt, size_t g, const optim_schedule *s);
/** The group's schedule (owned by the optimizer), or NULL (none, or no such group). */
OPTIM_API const optim_schedule *optim_group_get_schedule(const optim *opt, size_t g);
/** Read or set the group's schedule step, the t of its next step (to resume a
 *  run); kept also without a schedule. Setting t < 0 is OPTIM_EINVAL. */
OPTIM_API int optim_group_get_schedule_step(const optim *opt, size_t g, int64_t *t);
OPTIM_API int optim_group_set_schedule_step(optim *opt, size_t g, int64_t t);
/** The lr group g's next step will use: the schedule's value, or the group's lr. */
OPTIM_API int optim_group_current_lr(const optim *opt, size_t g, double *lr);

#ifdef __cplusplus
}
#endif
#endif
