/*
 * optim_vec.h: vector operations over arrays the caller owns, for methods
 * that work on the whole parameter vector (L-BFGS, line searches): dot
 * products, y += a x, y = a x, norms, and L-BFGS's two-loop recursion.
 *
 * A vector is given as `count` segments (x[i] holding n[i] elements; a model's
 * parameters are such a vector without being copied into one array). Elements
 * are float32 or float64 (optim_dtype OPTIM_FLOAT32 or OPTIM_FLOAT64, the same
 * for every segment of a call); other types are refused with
 * OPTIM_EUNSUPPORTED. threads as optim_set_threads (0: OpenMP's default).
 *
 * Determinism: every result is bit-identical for any thread count and any CPU
 * path (OPTIM_ISA). Reductions (dot, norms) sum in double over fixed blocks of
 * 8192 elements of each segment, 16 lanes per block (element i of a block in
 * lane i % 16) combined in a fixed tree, the blocks then in order; a float32
 * product x*y is exact in double. Element-wise operations round once per
 * element in the element type: y + a x is a fused multiply-add (as torch's
 * add_(x, alpha=a) on the CPU), a x a product.
 *
 * Arrays must be aligned to their element size (OPTIM_EINVAL otherwise), an
 * array written must not overlap another array of the call, except that y
 * may be x itself in optim_vec_scale (OPTIM_EOVERLAP). NULL segments are
 * allowed only with n[i] == 0. A segment of more than PTRDIFF_MAX bytes, or
 * segments totalling more than SIZE_MAX elements, are OPTIM_EINVAL. On error
 * nothing is read or written.
 */
#ifndef OPTIM_VEC_H
#define OPTIM_VEC_H

#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/** *out = sum_i x_i y_i over all segments, in double (see above); a float64
 *  product is rounded to double before it is summed. */
OPTIM_API int optim_vec_dot(optim_dtype dtype, size_t count, const void *const *x, const void *const *y,
                            const size_t *n, int threads, double *out, optim_error *err);

/** y_i = fma(a, x_i, y_i) in the element type (a rounded to it first), every
 *  segment: torch's y.add_(x, alpha=a). With a = -1, y - x exactly rounded. */
OPTIM_API int optim_vec_axpy(optim_dtype dtype, size_t count, double a, const void *const *x, void *const *y,
                             const size_t *n, int threads, optim_error *err);

/** y_i = a * x_i in the element type (a rounded to it first); y may be x. */
OPTIM_API int optim_vec_scale(optim_dtype dtype, size_t count, double a, const void *const *x, void *const *y,
                              const size_t *n, int threads, optim_error *err);

/** *out = the norm_type-norm of all segments together, in double:
 *  norm_type 1 (sum |x|), 2, any p > 0, or INFINITY (max |x|; NaN if an
 *  element is NaN). */
OPTIM_API int optim_vec_norm(optim_dtype dtype, size_t count, const void *const *x, const size_t *n,
                             double norm_type, int threads, double *out, optim_error *err);

/**
 * L-BFGS's two-loop recursion (Nocedal 1980), as torch.optim.LBFGS 1.13
 * computes it: d = -H g for the inverse Hessian H built from the m pairs
 * (s_j = stps[j], y_j = dirs[j], oldest first) and the initial scale h_diag:
 *
 *     q = -g
 *     for j = m-1 .. 0:  al[j] = R(R(s_j . q) * ro[j]);  q += -al[j] y_j
 *     d = R(h_diag) * q
 *     for j = 0 .. m-1:  be = R(R(y_j . d) * ro[j]);     d += R(al[j] - be) s_j
 *
 * with R() rounding to the element type (torch's 0-dim tensors), dot products
 * as optim_vec_dot, the updates as optim_vec_axpy and the scaling as
 * optim_vec_scale. ro[j] (1 / (y_j . s_j)) and h_diag are given as the
 * element type holds them. Every vector has n elements in one array; d must
 * not overlap g or any pair (q lives in d). al receives the m values
 * (torch's state 'al'). m may be 0 (d = -h_diag g).
 */
OPTIM_API int optim_lbfgs_direction(optim_dtype dtype, size_t n, size_t m, const void *const *dirs,
                                    const void *const *stps, const double *ro, double h_diag, const void *g, void *d,
                                    double *al, int threads, optim_error *err);

#ifdef __cplusplus
}
#endif
#endif
