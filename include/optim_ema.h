/*
 * optim_ema.h: an exponential moving average (EMA) of the weights, updated by
 * the step itself (docs/EMA.md).
 *
 * With optim_set_ema(opt, decay, warmup), every step that updates the
 * parameters (optim_step and its variants, SAM's second step, sparse steps)
 * also updates, for every parameter of the optimizer,
 *
 *     ema = d * ema + (1 - d) * p          (p: the parameter after the step)
 *
 * with d = decay, or with warm-up d = min(decay, (1 + t) / (10 + t)), t the
 * number of averages of this parameter taken before this one (torch-ema's
 * num_updates when its shadow was made after the first step). The first average (t = 0) copies
 * the parameter: torch.optim.swa_utils.AveragedModel with n_averaged == 0.
 * d and 1 - d are computed in double and rounded to the compute type; the
 * two products and the sum are each rounded once (no fused multiply-add):
 * torch 1.13's AveragedModel with avg_fn = lambda avg, p, n: decay * avg +
 * (1 - decay) * p, bit for bit, on every CPU path and thread count.
 *
 * The average of a parameter is kept in float64 for float64 parameters and
 * in float32 otherwise, averaged from the float32 master of a parameter
 * with OPTIM_PARAM_MASTER and from the stored (rounded) value, widened
 * exactly, of a bfloat16/float16 parameter without one. It is written in the
 * update pass, right after the rule's loop, span by span while the new
 * parameter is in cache (a parameter without a gradient this step, or with
 * a sparse one, is averaged by a second pass over its memory). Steps without
 * an EMA run exactly the code they ran before it existed.
 *
 * Which steps: a skipped step (non-finite policy, loss scaling's overflow,
 * SAM's second step after a skipped first) changes no average and no count;
 * SAM's first step never averages (only the real step does); LAMB and LARS
 * average after their second pass, Muon after its apply pass. The
 * schedule-free rules are refused (OPTIM_EUNSUPPORTED): they average their
 * iterates already (optim_schedule_free_eval).
 *
 * Evaluation: optim_ema_swap puts the averages into the parameters and the
 * parameters aside (exchanged in place for float32/float64 parameters and
 * masters; a 16-bit parameter or a master's 16-bit copy receives the average
 * rounded to nearest even, its own value kept exactly beside); a second call
 * puts everything back, bit for bit. While swapped, steps, SAM's first step,
 * optim_set_ema, adding parameters and loading a checkpoint are refused
 * (OPTIM_ESTATE); saving is allowed (the file records the swap).
 *
 * Checkpoints hold the averages, decay, warm-up, count and the swap (an EMAS
 * section, written only when the EMA is on: other files keep their bytes; a
 * library without EMA refuses such files). Loading a file with an EMA turns
 * it on with the file's settings, count and averages; a file without one
 * leaves the optimizer's settings (on or off), and an EMA that is on
 * restarts (count 0: the next step copies the parameters), as optim.torch's
 * load_state_dict does with a state dict without one (docs/EMA.md).
 */
#ifndef OPTIM_EMA_H
#define OPTIM_EMA_H

#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Turn the EMA on, decay in [0, 1) and warmup 0 or 1 (OPTIM_EINVAL naming
 *  the value otherwise). Off before: every parameter's average is allocated
 *  (OPTIM_ENOMEM: nothing changed) and the count is 0, so the next step
 *  copies the parameters. On before: only decay and warm-up change (the
 *  averages and count stay). OPTIM_EUNSUPPORTED for schedule-free rules;
 *  OPTIM_ESTATE while swapped or while a SAM object has the parameters
 *  perturbed. A parameter added later (optim_add_param*) starts as an
 *  AveragedModel made for it then: its first average (the next step's)
 *  copies it, and its warm-up counts its own averages
 *  (optim_ema_param_count). */
OPTIM_API int optim_set_ema(optim *opt, double decay, int warmup);
/** Turn the EMA off and free the averages (OPTIM_ESTATE while swapped); a
 *  no-op when off. */
OPTIM_API int optim_ema_off(optim *opt);
/** The settings: on (0/1), decay, warmup, count (the averages taken) and
 *  swapped (0/1); any pointer may be NULL. Off: decay 0, count 0. */
OPTIM_API int optim_get_ema(const optim *opt, int *on, double *decay, int *warmup, int64_t *count, int *swapped);
/** Set the count (>= 0), e.g. from a binding's state_dict: 0 makes the next
 *  step copy the parameters. Every parameter's own count becomes count.
 *  OPTIM_ESTATE when off. */
OPTIM_API int optim_ema_set_count(optim *opt, int64_t count);
/** Parameter i's own count: the averages it has taken, the optimizer's count
 *  but for a parameter added after the EMA was turned on (fewer: its count
 *  starts at 0 when added; 0 makes its next average a copy, and its warm-up
 *  uses it). OPTIM_ESTATE when off, OPTIM_ERANGE for no such parameter. */
OPTIM_API int optim_ema_param_count(const optim *opt, size_t i, int64_t *count);
/** Set parameter i's own count, in [0, the optimizer's count] (OPTIM_EINVAL
 *  naming both otherwise), e.g. from a binding's state_dict. OPTIM_ESTATE
 *  when off. */
OPTIM_API int optim_ema_set_param_count(optim *opt, size_t i, int64_t count);
/** Exchange the parameters and their averages (see above); the second call
 *  swaps back. Runs on the memory bound to each parameter now. OPTIM_ESTATE
 *  when off or while a SAM object has the parameters perturbed. */
OPTIM_API int optim_ema_swap(optim *opt);
/** Parameter i's average, copied into dst (n elements of *dtype: float64 for
 *  float64 parameters, else float32; dtype may be NULL; dst NULL: only the
 *  type). OPTIM_ESTATE when off or while swapped (the averages are in the
 *  parameters then). */
OPTIM_API int optim_ema_read(optim *opt, size_t i, void *dst, optim_dtype *dtype);
/** Parameter i's average from src (n elements of the type optim_ema_read
 *  gives). OPTIM_ESTATE while swapped or when off. */
OPTIM_API int optim_ema_write(optim *opt, size_t i, const void *src);

#ifdef __cplusplus
}
#endif

#endif
