/*
 * optim_clip.h: gradient norms and clipping over many arrays, as
 * torch.nn.utils.clip_grad_norm_ and clip_grad_value_.
 *
 * Norms are computed in double over fixed blocks of each array, summed in a
 * fixed order: the result is bit-identical for any thread count. The fused
 * form (clipping inside optim_step, without writing the gradients) is set on
 * the optimizer with optim_set_clip_grad_norm in optim.h.
 */
#ifndef OPTIM_CLIP_H
#define OPTIM_CLIP_H

#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The norm_type-norm of all count arrays together (grads[i] has n[i]
 *  floats; NULL arrays are skipped): norm_type >= 1 or INFINITY. A NaN or
 *  Inf element gives a non-finite norm. threads as optim_set_threads. */
OPTIM_API int optim_grad_norm(size_t count, const float *const *grads, const size_t *n, double norm_type, int threads,
                              double *total_norm, optim_error *err);

/** torch.nn.utils.clip_grad_norm_: scale every gradient by
 *  min(1, max_norm / (total_norm + 1e-6)) in place; *total_norm receives the
 *  norm before clipping. With error_if_nonfinite and a non-finite norm, fails
 *  with OPTIM_ENONFINITE and changes nothing. */
OPTIM_API int optim_clip_grad_norm(size_t count, float *const *grads, const size_t *n, double max_norm,
                                   double norm_type, int error_if_nonfinite, int threads, double *total_norm,
                                   optim_error *err);

/** torch.nn.utils.clip_grad_value_: clamp every element to [-clip_value, clip_value]
 *  (NaN stays NaN). */
OPTIM_API int optim_clip_grad_value(size_t count, float *const *grads, const size_t *n, double clip_value,
                                    int threads, optim_error *err);

#ifdef __cplusplus
}
#endif
#endif
