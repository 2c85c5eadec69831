/* clip_internal.h: clip_grad_norm_'s total norm and factor as torch computes
 * them, shared by optim_clip_grad_norm (src/clip.c) and the clipping fused
 * into optim_step (src/optim.c), so that both give the same bits. Private. */
#ifndef OPTIM_CLIP_INTERNAL_H
#define OPTIM_CLIP_INTERNAL_H

#include "common.h"

/* The total norm as torch's float32 tensor holds it, from the exact (double)
 * norm of order p: +inf when torch's float32 arithmetic overflows, that is
 * when the norm or the sum of |g|^p it is the p-th root of exceeds the float32
 * range (for p = 2 any |g| > 1.8e19 does; torch's norm of [3e38, 3e38] is
 * inf), else `norm` unchanged (NaN and inf stay). The boundary is judged in
 * double, so within an ulp of FLT_MAX it may differ from torch's float32
 * rounding; torch's float32 underflow of tiny |g|^p is not reproduced. */
double optim__clip_total_norm(double norm, double p);

/* torch's clip coefficient for that norm, clamped: with n = (float)norm,
 * c = (1 / (n + 1e-6f)) * (float)max_norm in float32, the operations torch
 * runs (max_norm / (total_norm + 1e-6) on a float32 tensor is reciprocal
 * then multiply), then min(c, 1); NaN stays NaN (a NaN norm, or an inf norm
 * with max_norm = inf, where torch multiplies 0 by inf). 1 means unchanged. */
float optim__clip_factor(double norm, double max_norm);

/* The same for float64 gradients, as torch computes it on a float64 norm:
 * (1 / (norm + 1e-6)) * max_norm in double, then min(c, 1); NaN stays NaN. */
double optim__clip_factor64(double norm, double max_norm);

#endif
