/* optim_muon_ext.h: the hook through which liboptim_muon (muon/, over
 * OpenBLAS) supplies Muon's orthogonalisation to the core, and nothing
 * else. Not installed, not part of the public API (include/optim_muon.h is):
 * the function is exported from liboptim only so that liboptim_muon, a
 * separate library, can reach it. The core never includes a BLAS header and
 * never links BLAS; rule OPTIM_MUON refuses to step until a hook is set.
 *
 * A step of a Muon parameter (src/muon.c) computes its update U (the rule's
 * phase 1, src/rules/muon.h), normalises it, X = U / max(||U||, eps), then
 * calls `orth` on X, then applies X (phase 2). */
#ifndef OPTIM_MUON_EXT_H
#define OPTIM_MUON_EXT_H

#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct optim_muon_ops {
    void *ctx;
    /* Replace x (rows x cols floats, row-major, rows, cols >= 1) by `steps`
     * Newton-Schulz iterations of it with coefficients coef[0..3) = (a, b, c):
     *   rows <= cols:  A = X X^T,  X = a X + (b A + c A A) X
     *   rows >  cols:  A = X^T X,  X = a X + X (b A + c A A)
     * work holds 2 m m + rows cols floats, m = min(rows, cols). Cannot fail
     * (the core checked every argument). */
    void (*orth)(void *ctx, float *x, size_t rows, size_t cols, const double coef[3], int steps, float *work);
    const char *name; /* for messages and optim_muon_backend: "openblas" */
} optim_muon_ops;

/** Install Muon's orthogonalisation on o (copied), or remove it (ops NULL
 *  or ops->orth NULL). OPTIM_EINVAL if o's rule is not OPTIM_MUON. */
OPTIM_API int optim__muon_set_ops(optim *o, const optim_muon_ops *ops);
/** The name of o's installed orthogonalisation, or NULL. */
OPTIM_API const char *optim__muon_ops_name(const optim *o);

#ifdef __cplusplus
}
#endif
#endif
