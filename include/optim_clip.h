/*
 * optim_clip.h: gradient norms and clipping over many arrays, as
 * torch.nn.utils.clip_grad_norm_ and clip_grad_value_.
 *
 * Norms are computed in double over fixed blocks of each array, summed in a
 * fixed order: the result is bit-identical for any thread count. The fused
 * form (clipping inside optim_step, without writing the gradients) is set on
 * the optimizer with optim_set_clip_grad_norm in optim.h; it forms its norm
 * and factor exactly as optim_clip_grad_norm does.
 *
 * Norm orders: any p > 0, and INFINITY (the largest |g|). torch also accepts
 * p in (0, 1), (sum |g|^p)^(1/p), and so does this (the reductions sum
 * |g|^p in double for any p). p = 0 (torch counts the non-zero elements) and
 * p < 0 are not norms and are refused with OPTIM_EINVAL naming the value.
 * The fused form (optim_set_clip_grad_norm) takes the same orders.
 */
#ifndef OPTIM_CLIP_H
#define OPTIM_CLIP_H

#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The norm_type-norm of all count arrays together (grads[i] has n[i]
 *  floats; NULL arrays are skipped), exact in double: norm_type > 0 or
 *  INFINITY. A NaN or Inf element gives a non-finite norm. threads as
 *  optim_set_threads. In all three functions every array must be aligned to
 *  4 bytes (OPTIM_EINVAL otherwise, nothing read or written) and the arrays
 *  must not overlap (OPTIM_EOVERLAP). */
OPTIM_API int optim_grad_norm(size_t count, const float *const *grads, const size_t *n, double norm_type, int threads,
                              double *total_norm, optim_error *err);

/** torch.nn.utils.clip_grad_norm_ (torch 1.13): scale every gradient in place
 *  by min(1, max_norm / (total_norm + 1e-6)), with torch's results:
 *  - total_norm is torch's float32 total norm as far as its range goes: the
 *    double norm, but +inf when torch's float32 computation overflows, i.e.
 *    when the sum of |g|^p (or the norm) exceeds FLT_MAX (for p = 2 a single
 *    |g| > 1.8e19 does; [3e38, 3e38] is inf for every p but INFINITY). That is
 *    what *total_norm receives (the norm before clipping).
 *  - the factor is formed from (float)total_norm in float32 in torch's order,
 *    c = (1 / (n + 1e-6f)) * (float)max_norm, clamped to 1: the same bits as
 *    torch's for the same float32 norm. An infinite norm gives 0 (finite
 *    gradients become 0, infinite ones NaN), a NaN norm NaN, as in torch.
 *  With error_if_nonfinite and a non-finite total_norm (overflow included),
 *  fails with OPTIM_ENONFINITE and changes nothing. max_norm >= 0, or
 *  INFINITY (torch's factor is then 1, or NaN for an infinite norm). */
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
