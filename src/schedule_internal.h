/* schedule_internal.h: the body of a schedule, for the code that stores
 * schedules (src/ckpt_format.c). Private. */
#ifndef OPTIM_SCHEDULE_INTERNAL_H
#define OPTIM_SCHEDULE_INTERNAL_H

#include "common.h"
#include "optim_schedule.h"

/*
 * A schedule is a plain tree: a kind, the integer and real arguments of its
 * constructor (exactly those, nothing derived, so that a checkpoint can write
 * the tree as is and rebuild it through the constructors, which validate it
 * again; CYCLIC's step_size_down in the stored encoding below), a list of
 * milestones and a list of child schedules.
 *
 *   kind             ints[]                                       reals[]                                milestones   children
 *   CONSTANT         total_iters                                  factor
 *   STEP             step_size                                    gamma
 *   MULTISTEP                                                     gamma                                  sorted, repeats kept
 *   EXPONENTIAL                                                   gamma
 *   LINEAR           total_iters                                  start_factor, end_factor
 *   POLYNOMIAL       total_iters                                  power
 *   COSINE           t_max                                        eta_min
 *   COSINE_RESTARTS  t_0, t_mult                                  eta_min
 *   ONE_CYCLE        total_steps, anneal_cos, three_phase         max_lr, pct_start, div_factor,
 *                                                                 final_div_factor
 *   CYCLIC           step_size_up, step_size_down (encoded,       base_lr, max_lr, gamma
 *                    below), mode
 *   WARMUP           warmup_steps                                                                                     0 or 1 (after)
 *   WSD              warmup_steps, stable_steps, decay_steps,     eta_min
 *                    decay_cosine
 *   SEQUENTIAL                                                                                           count - 1    count
 */
/* CYCLIC's step_size_down is kept, in memory and in checkpoints, in the
 * encoding checkpoint format 1 has always had: 0 means "as step_size_up"
 * (the constructor's meaning of 0 until it came to mean no descent, torch's
 * step_size_down=0), a positive count is itself, and -1 is no descent (a
 * sawtooth). Checkpoints written before keep their meaning; one with a
 * sawtooth is refused by a library that predates it (its constructor rejects
 * -1), never misread as a triangle. optim_schedule_cyclic translates its
 * argument (OPTIM_CYCLIC_DOWN_AS_UP, 0, n) into this encoding and
 * optim__schedule_from_parts back. */
#define OPTIM__CYCLIC_STORED_AS_UP 0
#define OPTIM__CYCLIC_STORED_ZERO (-1)

#define OPTIM__SCHED_NI 4
#define OPTIM__SCHED_NR 4

struct optim_schedule {
    optim_schedule_kind kind;
    int64_t ints[OPTIM__SCHED_NI];
    double reals[OPTIM__SCHED_NR];
    size_t nmilestones;
    int64_t *milestones; /* owned */
    size_t nchildren;
    struct optim_schedule **children; /* owned, as are the children */
};


/* Rebuild a schedule from its parts through the public constructors, which
 * validate every argument again (so a corrupt checkpoint yields OPTIM_EINVAL
 * with the constructor's message, never a malformed tree). `children` are
 * taken over, also on failure. ints and reals hold OPTIM__SCHED_NI and
 * OPTIM__SCHED_NR values. */
int optim__schedule_from_parts(optim_schedule **out, optim_schedule_kind kind, const int64_t *ints,
                               const double *reals, const int64_t *milestones, size_t nmilestones,
                               optim_schedule *const *children, size_t nchildren, optim_error *err);

#endif
