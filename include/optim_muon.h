/* optim_muon.h: liboptim_muon, the matrix products of rule OPTIM_MUON (Muon,
 * torch.optim.Muon; docs/rules/muon.md) over OpenBLAS. A separate library:
 * the core (liboptim) never links BLAS, and its rule OPTIM_MUON refuses to
 * step, by name, an optimizer this library has not been attached to.
 *
 *   optim *o;
 *   optim_create(&o, OPTIM_MUON);
 *   optim_muon_attach(o);                           // once, any time before the first step
 *   optim_add_param(o, "w", w, g, rows * cols);
 *   optim_param_set_shape(o, 0, 2, (int64_t[]){rows, cols});   // Muon steps 2-D parameters
 *   optim_step(o);
 *
 * Link with -loptim_muon -loptim -lopenblas (pkg-config / CMake: optim::optim_muon_shared).
 *
 * What is bit for bit: every element-wise part of a step (momentum, Nesterov
 * blend, the norm, the normalisation, decay and update) is a liboptim kernel,
 * the same bits on every CPU path and thread count. The matrix products are
 * OpenBLAS's sgemm, run on one OpenBLAS thread inside each call (OpenBLAS
 * 0.3.21 gives other bits with 2 threads than with 1; the process's setting
 * is restored after the call): deterministic for one OpenBLAS build on one
 * CPU kernel, whatever thread counts are set, but not across OpenBLAS builds
 * or CPU kernels (docs/rules/muon.md). */
#ifndef OPTIM_MUON_H
#define OPTIM_MUON_H

#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(OPTIM_STATIC_DEFINE)
#  define OPTIM_MUON_API
#elif defined(_WIN32)
#  ifdef OPTIM_MUON_BUILDING
#    define OPTIM_MUON_API __declspec(dllexport)
#  else
#    define OPTIM_MUON_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__)
#  define OPTIM_MUON_API __attribute__((visibility("default")))
#else
#  define OPTIM_MUON_API
#endif

/** Give opt (created with OPTIM_MUON) the Newton-Schulz orthogonalisation
 *  over OpenBLAS. OPTIM_ENULL, or OPTIM_EINVAL (in optim_errmsg(opt)) for
 *  another rule. A checkpoint does not record it: attach after loading into
 *  a new optimizer as after creating one. */
OPTIM_MUON_API int optim_muon_attach(optim *opt);

/** Floats of work optim_muon_newton_schulz needs for rows x cols:
 *  2 min(rows, cols)^2 + rows cols; 0 on overflow. */
OPTIM_MUON_API size_t optim_muon_work_size(size_t rows, size_t cols);

/** Replace x (rows x cols floats, row-major) by `steps` Newton-Schulz
 *  iterations with coefficients coef = (a, b, c), as a step of OPTIM_MUON
 *  does after normalising its update:
 *    rows <= cols:  A = X X^T,  X = a X + (b A + c A A) X
 *    rows >  cols:  A = X^T X,  X = a X + X (b A + c A A)
 *  (the second is the first on X^T, without transposing). work: at least
 *  optim_muon_work_size(rows, cols) floats, not overlapping x. OPTIM_ENULL,
 *  OPTIM_EINVAL (rows or cols 0, steps outside 1..99, the work size
 *  overflows) with a message in *err (may be NULL). */
OPTIM_MUON_API int optim_muon_newton_schulz(float *x, size_t rows, size_t cols, const double coef[3], int steps,
                                            float *work, optim_error *err);

/** "OpenBLAS <its configuration string>" (optim bench prints it). */
OPTIM_MUON_API const char *optim_muon_backend(void);

#ifdef __cplusplus
}
#endif
#endif
