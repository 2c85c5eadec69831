/*
 * optim_precision.h: reduced-precision training on the optimizer object:
 * fp32 master weights, the seed of stochastic rounding, and loss scaling
 * for float16 gradients (docs/PRECISION.md).
 *
 * Master weights and stochastic rounding are chosen per parameter when it is
 * added (optim_add_param_ex's flags OPTIM_PARAM_MASTER and
 * OPTIM_PARAM_STOCHASTIC_ROUNDING, optim.h); this header reads and writes
 * what they keep. Everything here is saved and restored by checkpoints
 * (optim_checkpoint.h), so a resumed run is bit-identical to the
 * uninterrupted one.
 */
#ifndef OPTIM_PRECISION_H
#define OPTIM_PRECISION_H

#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Master weights and stochastic rounding ---------------------------------- */

/** The storage flags parameter i was added with (OPTIM_PARAM_*). */
OPTIM_API int optim_param_get_flags(const optim *opt, size_t i, unsigned *flags);
/**
 * Parameter i's fp32 master copy: *master receives its n floats (owned by
 * the optimizer, 64-byte aligned, valid until optim_free; may be read and
 * written between steps: the master is the parameter's value, and the next
 * step writes the low-precision memory from it). OPTIM_EINVAL, naming the
 * parameter, if it has no master (added without OPTIM_PARAM_MASTER).
 */
OPTIM_API int optim_param_master_data(optim *opt, size_t i, float **master);
/**
 * Re-initialise parameter i's master from its low-precision memory (widened
 * exactly), as when it was added. Rebinding the memory (optim_set_param_data,
 * optim_step_with_data, optim_rebind) does NOT do this: the master stays the
 * truth and the next step overwrites the new memory with it rounded. Call
 * this after writing new values into the low-precision parameter yourself
 * (loading weights). OPTIM_EINVAL if the parameter has no master.
 */
OPTIM_API int optim_param_master_sync(optim *opt, size_t i);

/** The seed of stochastic rounding (default 0). Changing it changes the
 *  random stream of every later step; a checkpoint stores it. */
OPTIM_API int optim_set_seed(optim *opt, uint64_t seed);
OPTIM_API uint64_t optim_get_seed(const optim *opt);

/* ---- Loss scaling for float16 gradients ----------------------------------------
 * The gradients the step reads are those of loss * scale. The step folds
 * 1 / scale (rounded to float32, as torch.cuda.amp.GradScaler's inv_scale)
 * into the gradient's factor (with maximize and norm clipping, whose norm is
 * that of the unscaled gradients), so the gradients are never written.
 *
 * Dynamic scaling is GradScaler's update, fused into optim_step: the step
 * reads every gradient first; if one holds Inf or NaN the step is skipped
 * (parameters, state, step counters and schedules untouched, whatever the
 * non-finite policy; optim_last_step_skipped() says 1 and
 * optim_skipped_steps() counts it), the scale is multiplied by
 * backoff_factor and the growth tracker reset; otherwise the step runs and
 * after growth_interval consecutive such steps the scale is multiplied by
 * growth_factor (kept only if finite, in float32, as torch's
 * _amp_update_scale_). Multiply your next loss by optim_loss_scale_value().
 */

typedef enum optim_loss_scale_mode {
    OPTIM_LOSS_SCALE_OFF = 0,     /* gradients as given (the default) */
    OPTIM_LOSS_SCALE_STATIC = 1,  /* a fixed scale; non-finite gradients follow optim_set_nonfinite */
    OPTIM_LOSS_SCALE_DYNAMIC = 2  /* GradScaler's dynamic scale */
} optim_loss_scale_mode;

typedef struct optim_loss_scale {
    optim_loss_scale_mode mode;
    double init_scale;       /* > 0, finite; rounded to float32 (GradScaler: 65536) */
    double growth_factor;    /* > 1 (2.0); dynamic only */
    double backoff_factor;   /* in (0, 1) (0.5); dynamic only */
    int64_t growth_interval; /* >= 1 (2000); dynamic only */
} optim_loss_scale;

/** GradScaler's defaults, dynamic: 65536, 2.0, 0.5, 2000. */
OPTIM_API void optim_loss_scale_defaults(optim_loss_scale *ls);
/** Turn loss scaling on (or off: NULL or mode OFF); the scale starts at
 *  init_scale and the growth tracker at 0. OPTIM_EINVAL naming a bad field. */
OPTIM_API int optim_set_loss_scale(optim *opt, const optim_loss_scale *ls);
/** The settings (*ls) and the current state: *scale (1 when off) and
 *  *growth_tracker (each pointer may be NULL). */
OPTIM_API int optim_get_loss_scale(const optim *opt, optim_loss_scale *ls, double *scale, int64_t *growth_tracker);
/** The current scale: multiply the loss by it (1 when off or for NULL). */
OPTIM_API double optim_loss_scale_value(const optim *opt);
/** Set the scaler's state (scale > 0 finite, rounded to float32; tracker in
 *  [0, growth_interval)), e.g. from a GradScaler's state_dict. OPTIM_ESTATE
 *  when loss scaling is off. */
OPTIM_API int optim_set_loss_scale_state(optim *opt, double scale, int64_t growth_tracker);

#ifdef __cplusplus
}
#endif
#endif /* OPTIM_PRECISION_H */
