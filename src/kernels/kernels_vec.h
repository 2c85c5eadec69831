/* kernels_vec.h: the loops of the vector operations (include/optim_vec.h)
 * for one compute type R, included by kernels_impl.h once per type after
 * kernels_math.h (R, OPTIM__RS, OPTIM__R_F64 and the rule_math.h primitives
 * defined). No include guard: read once per type.
 *
 * The dot product of a block sums in 16 double lanes, element i in lane
 * i % 16, combined in a fixed tree (16 -> 8 -> 4 -> 2 -> 1) as the norms'
 * reductions do: the same bits on every path (the scalar path runs the same
 * order lane by lane, the vector paths one lane per vector element). */

static double OPTIM__T(optim__vdot)(size_t n, const void *xv, const void *yv)
{
    const R *restrict x = (const R *)xv;
    const R *restrict y = (const R *)yv;
    double acc[OPTIM__LANES];
    size_t i = 0, j;
    for (j = 0; j < OPTIM__LANES; j++) acc[j] = 0.0;
    for (; i + OPTIM__LANES <= n; i += OPTIM__LANES) {
        OPTIM__VECTORIZE
        for (j = 0; j < OPTIM__LANES; j++) acc[j] = acc[j] + (double)x[i + j] * (double)y[i + j];
    }
    for (j = 0; i + j < n; j++) acc[j] = acc[j] + (double)x[i + j] * (double)y[i + j];
    for (j = OPTIM__LANES / 2; j > 0; j /= 2) {
        size_t l;
        for (l = 0; l < j; l++) acc[l] = acc[l] + acc[l + j];
    }
    return acc[0];
}

/* y = fma(a, x, y): torch's y.add_(x, alpha=a), one rounding per element. */
static void OPTIM__T(optim__vaxpy)(size_t n, double a, const void *xv, void *yv)
{
    const R *restrict x = (const R *)xv;
    R *restrict y = (R *)yv;
    const R ar = (R)a;
    OPTIM__VECTORIZE
    for (size_t i = 0; i < n; i++) y[i] = optim__fma(ar, x[i], y[i]);
}

/* y = a * x; y may be x (no restrict). */
static void OPTIM__T(optim__vscale)(size_t n, double a, const void *xv, void *yv)
{
    const R *x = (const R *)xv;
    R *y = (R *)yv;
    const R ar = (R)a;
    for (size_t i = 0; i < n; i++) y[i] = ar * x[i];
}
