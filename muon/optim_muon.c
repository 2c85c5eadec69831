/* optim_muon.c: liboptim_muon (include/optim_muon.h), Muon's Newton-Schulz
 * iterations over OpenBLAS's sgemm, handed to the core through its private
 * hook (src/optim_muon_ext.h). No loop over elements here: the products and
 * their combinations are sgemm's alpha and beta (torch's addmm form), the
 * copies memcpy; everything element-wise is the core's kernels. OpenBLAS runs on
 * one thread inside each call (see optim_muon__ns). */
#include "optim_muon.h"
#include "optim_muon_ext.h"

#include <cblas.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int optim_muon__fail(optim_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

size_t optim_muon_work_size(size_t rows, size_t cols)
{
    size_t m = rows < cols ? rows : cols, mm;
    if (cols != 0 && rows > SIZE_MAX / cols) return 0;
    if (m != 0 && m > SIZE_MAX / m) return 0;
    mm = m * m;
    if (mm > (SIZE_MAX - rows * cols) / 2) return 0;
    return 2 * mm + rows * cols;
}

/* The iterations; arguments checked. X is rows x cols row-major (leading
 * dimension cols). With m = min(rows, cols), A and B are m x m and Y is the
 * next X. rows <= cols: A = X X^T, B = b A + c A A, Y = a X + B X.
 * rows > cols: A = X^T X, B likewise, Y = a X + X B (B is symmetric in exact
 * arithmetic; the product uses it as computed, as torch's B @ X^T would). */
static void optim_muon__ns(void *ctx, float *x, size_t rows, size_t cols, const double coef[3], int steps,
                           float *work)
{
    const int wide = rows <= cols;
    const size_t m = wide ? rows : cols, n = rows * cols;
    const blasint M = (blasint)m, R = (blasint)rows, C = (blasint)cols;
    float *a = work, *b = work + m * m, *y = work + 2 * m * m, *cur = x, *nxt = y;
    const float ca = (float)coef[0], cb = (float)coef[1], cc = (float)coef[2];
    /* OpenBLAS's results depend on its thread count (tests/test_muon.c, muon_blas_threads, saw other bits
     * with 2 threads than with 1): pinned to one thread for the call, restored after, so that a step's bits
     * depend on the OpenBLAS build and CPU kernel only. The setting is process-wide: a BLAS call another
     * thread makes meanwhile also runs on one thread (docs/rules/muon.md). */
    const int before = openblas_get_num_threads();
    int it;
    (void)ctx;
    if (before != 1) openblas_set_num_threads(1);
    for (it = 0; it < steps; it++) {
        float *t;
        if (wide) /* A = X X^T: (rows x cols)(cols x rows) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, R, C, 1.0f, cur, C, cur, C, 0.0f, a, M);
        else /* A = X^T X: (cols x rows)(rows x cols) */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, C, R, 1.0f, cur, C, cur, C, 0.0f, a, M);
        /* B = c A A + b A (addmm(A, A, A, beta=b, alpha=c)) */
        memcpy(b, a, m * m * sizeof *b);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, M, M, cc, a, M, a, M, cb, b, M);
        /* Y = B X + a X (addmm(X, B, X, beta=a)), or X B + a X */
        memcpy(nxt, cur, n * sizeof *nxt);
        if (wide)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, C, R, 1.0f, b, M, cur, C, ca, nxt, C);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, C, C, 1.0f, cur, C, b, M, ca, nxt, C);
        t = cur;
        cur = nxt;
        nxt = t;
    }
    if (cur != x) memcpy(x, cur, n * sizeof *x);
    if (before != 1) openblas_set_num_threads(before);
}

int optim_muon_newton_schulz(float *x, size_t rows, size_t cols, const double coef[3], int steps, float *work,
                             optim_error *err)
{
    size_t need;
    if (!x || !coef || !work)
        return optim_muon__fail(err, OPTIM_ENULL, "optim_muon_newton_schulz: %s is NULL",
                                !x ? "x" : !coef ? "coef" : "work");
    if (rows == 0 || cols == 0)
        return optim_muon__fail(err, OPTIM_EINVAL, "optim_muon_newton_schulz: a %zu x %zu matrix (both must be >= 1)",
                                rows, cols);
    if (steps < 1 || steps > 99)
        return optim_muon__fail(err, OPTIM_EINVAL, "optim_muon_newton_schulz: steps = %d must be in 1..99", steps);
    need = optim_muon_work_size(rows, cols);
    if (need == 0 || rows > (size_t)INT32_MAX || cols > (size_t)INT32_MAX)
        return optim_muon__fail(err, OPTIM_EINVAL, "optim_muon_newton_schulz: a %zu x %zu matrix is too large", rows,
                                cols);
    if ((x < work + need && work < x + rows * cols))
        return optim_muon__fail(err, OPTIM_EOVERLAP, "optim_muon_newton_schulz: work overlaps x");
    optim_muon__ns(NULL, x, rows, cols, coef, steps, work);
    if (err) {
        err->code = OPTIM_OK;
        err->message[0] = '\0';
    }
    return OPTIM_OK;
}

const char *optim_muon_backend(void)
{
    static char name[160]; /* written once per call with the same text: a constant in effect */
    const char *cfg = openblas_get_config();
    snprintf(name, sizeof name, "%s%s", strncmp(cfg, "OpenBLAS", 8) == 0 ? "" : "OpenBLAS ", cfg);
    return name;
}

int optim_muon_attach(optim *opt)
{
    optim_muon_ops ops;
    if (!opt) return OPTIM_ENULL;
    ops.ctx = NULL;
    ops.orth = optim_muon__ns;
    ops.name = "openblas";
    return optim__muon_set_ops(opt, &ops);
}
