/*
 * optim_schedule_free.h: the train/eval switch of the schedule-free rules
 * (OPTIM_SGD_SCHEDULE_FREE, OPTIM_ADAMW_SCHEDULE_FREE; Defazio et al. 2024,
 * docs/rules/schedule_free.md).
 *
 * A schedule-free optimizer keeps two sequences: z (state slot 0) and the
 * average x; the gradient is taken at their interpolation
 * y = (1 - c) z + c x, with c = momentum (SGD) or beta1 (AdamW). While
 * training the parameters hold y (each step updates y and z, never x
 * explicitly); for evaluation they should hold x, as the authors' reference
 * does with its optimizer.train() and optimizer.eval():
 *
 *   optim_schedule_free_eval:  p = lerp(p, z, 1 - 1/c)   (y to x)
 *   optim_schedule_free_train: p = lerp(p, z, 1 - c)     (x to y)
 *
 * one kernel pass over every parameter whose z holds data (a parameter not
 * stepped yet has no z and is left alone, as in the reference), on the
 * memory bound to each parameter now, on every CPU path and thread count
 * with the same bits. Switching to the mode the optimizer is in does
 * nothing (the reference's calls are idempotent too). optim_step refuses to
 * step in eval mode (OPTIM_ESTATE, nothing changed), as the reference does,
 * and so does optim_sam_first_step (nothing moved).
 *
 * A new optimizer is in train mode (the parameters hold y; with no z yet,
 * y = x). The reference's optimizer starts in eval mode and must be told
 * train() first; optim.torch's classes start in eval mode as it does.
 * The mode is saved in checkpoints and restored by a load.
 * Both functions refuse other rules (OPTIM_EUNSUPPORTED) and run only when
 * no SAM object has the parameters perturbed (OPTIM_ESTATE).
 */
#ifndef OPTIM_SCHEDULE_FREE_H
#define OPTIM_SCHEDULE_FREE_H

#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Move the parameters to y (training); a no-op in train mode. */
OPTIM_API int optim_schedule_free_train(optim *opt);
/** Move the parameters to x (evaluation); a no-op in eval mode. */
OPTIM_API int optim_schedule_free_eval(optim *opt);
/** Parameter i's scalar state: lr_max (the largest warmed-up lr so far, -1
 *  before its first step) and weight_sum (the sum of the average's weights,
 *  0 before its first step). The reference keeps them per group; here each
 *  parameter keeps its own (equal within a group while every parameter has
 *  a gradient at every step). */
OPTIM_API int optim_param_get_schedule_free(const optim *opt, size_t i, double *lr_max, double *weight_sum);
/** Set them (lr_max -1 or finite >= 0, weight_sum finite >= 0), e.g. from a
 *  reference state_dict; nothing changes on error. */
OPTIM_API int optim_param_set_schedule_free(optim *opt, size_t i, double lr_max, double weight_sum);
/** Set the mode without moving the parameters (1 train, 0 eval): a binding
 *  loading a state_dict whose parameters are already where that mode keeps
 *  them (checkpoints restore the mode themselves). */
OPTIM_API int optim_schedule_free_set_mode(optim *opt, int train);
/** 1 in train mode, 0 in eval mode; OPTIM_ENULL or OPTIM_EUNSUPPORTED (not a
 *  schedule-free rule) otherwise. */
OPTIM_API int optim_schedule_free_mode(const optim *opt);

#ifdef __cplusplus
}
#endif

#endif
