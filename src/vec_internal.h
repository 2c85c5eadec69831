/* vec_internal.h: the functions of include/optim_vec.h on a chosen CPU path
 * (OPTIM_ISA_AUTO: the default one, which the public functions use), so that
 * the tests compare every path in one process. Private. */
#ifndef OPTIM_VEC_INTERNAL_H
#define OPTIM_VEC_INTERNAL_H

#include "optim_vec.h"

/* As the public function of the same name; OPTIM_EUNSUPPORTED if the path is
 * not available (nothing read or written). */
int optim__vec_dot_isa(optim_isa isa, optim_dtype dtype, size_t count, const void *const *x, const void *const *y,
                       const size_t *n, int threads, double *out, optim_error *err);
int optim__vec_axpy_isa(optim_isa isa, optim_dtype dtype, size_t count, double a, const void *const *x,
                        void *const *y, const size_t *n, int threads, optim_error *err);
int optim__vec_scale_isa(optim_isa isa, optim_dtype dtype, size_t count, double a, const void *const *x,
                         void *const *y, const size_t *n, int threads, optim_error *err);
int optim__vec_norm_isa(optim_isa isa, optim_dtype dtype, size_t count, const void *const *x, const size_t *n,
                        double norm_type, int threads, double *out, optim_error *err);
int optim__lbfgs_direction_isa(optim_isa isa, optim_dtype dtype, size_t n, size_t m, const void *const *dirs,
                               const void *const *stps, const double *ro, double h_diag, const void *g, void *d,
                               double *al, int threads, optim_error *err);

#endif
