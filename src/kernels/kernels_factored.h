/* kernels_factored.h: the loops of Adafactor's passes (src/rules/adafactor.h,
 * run by factored_run.c) for one compute type R, included by kernels_impl.h
 * once per type after kernels_math.h. No include guard: read once per type.
 *
 * Sums run in double: a row's, a segment's and a block's sums in 16 lanes
 * (element i of the span in lane i % 16, combined in the fixed tree
 * 16 -> 8 -> 4 -> 2 -> 1, as the norms' reductions), a column's sum over the
 * rows in row order, one column per lane. The spans are fixed by the shape
 * and the 8192-element blocks, never by the thread split, so every path and
 * thread count gives the same bits. Direct memory only (float32 tensors and
 * state, or float64 and float64): the rule refuses other storage. */

OPTIM_INLINE double OPTIM__T(optim__af_tree)(double *acc)
{
    size_t j, l;
    for (j = OPTIM__LANES / 2; j > 0; j /= 2)
        for (l = 0; l < j; l++) acc[l] = acc[l] + acc[l + j];
    return acc[0];
}

/* Sum of d^2 (d the gradient as the rule sees it) over n elements. */
OPTIM_INLINE double OPTIM__T(optim__af_gsq)(size_t n, const R *restrict g, const optim__kc *c, const unsigned V)
{
    double acc[OPTIM__LANES];
    size_t i = 0, j;
    for (j = 0; j < OPTIM__LANES; j++) acc[j] = 0.0;
    for (; i + OPTIM__LANES <= n; i += OPTIM__LANES) {
        OPTIM__VECTORIZE
        for (j = 0; j < OPTIM__LANES; j++) {
            double d = (double)optim__grad(g[i + j], 0, c, V);
            acc[j] = acc[j] + d * d;
        }
    }
    for (j = 0; i + j < n; j++) {
        double d = (double)optim__grad(g[i + j], 0, c, V);
        acc[j] = acc[j] + d * d;
    }
    return OPTIM__T(optim__af_tree)(acc);
}

/* Pass A, unfactored: variance = lerp(variance, d * d, w) over n elements. */
OPTIM_INLINE void OPTIM__T(optim__af_var_body)(size_t n, const R *restrict g, R *restrict var, const optim__k *kp,
                                               const unsigned V)
{
    const optim__kc c = OPTIM__T(optim__kc_from)(&kp->c);
    const OPTIM__KR(adafactor) k = OPTIM__T(optim__adafactor_kr_from)(&kp->u.adafactor);
    OPTIM__VECTORIZE
    for (size_t i = 0; i < n; i++) {
        R d = optim__grad(g[i], 0, &c, V);
        var[i] = optim__canon(OPTIM__T(optim__adafactor_lerp)(var[i], d * d, &k));
    }
}

/* Pass A, factored, rows: for each of nrows rows of C elements (g at the
 * first), row_var[r] = lerp(row_var[r], mean of d^2 over the row, w). */
OPTIM_INLINE void OPTIM__T(optim__af_rows_body)(size_t nrows, size_t C, const R *restrict g, R *restrict rv,
                                                const optim__k *kp, const unsigned V)
{
    const optim__kc c = OPTIM__T(optim__kc_from)(&kp->c);
    const OPTIM__KR(adafactor) k = OPTIM__T(optim__adafactor_kr_from)(&kp->u.adafactor);
    for (size_t r = 0; r < nrows; r++) {
        R m = OPTIM__T(optim__adafactor_mean_sq)(OPTIM__T(optim__af_gsq)(C, g + r * C, &c, V), C);
        rv[r] = optim__canon(OPTIM__T(optim__adafactor_lerp)(rv[r], m, &k));
    }
}

/* Pass A, factored, columns: nc <= OPTIM__AF_COLS columns of one batch (g at
 * row 0 of the first, rows C apart): col_var[j] = lerp(col_var[j], mean of
 * d^2 over the R rows, w); each column summed in row order. */
OPTIM_INLINE void OPTIM__T(optim__af_cols_body)(size_t nr, size_t C, size_t nc, const R *restrict g,
                                                R *restrict cv, const optim__k *kp, const unsigned V)
{
    const optim__kc c = OPTIM__T(optim__kc_from)(&kp->c);
    const OPTIM__KR(adafactor) k = OPTIM__T(optim__adafactor_kr_from)(&kp->u.adafactor);
    double acc[OPTIM__AF_COLS];
    size_t i, j;
    for (j = 0; j < nc; j++) acc[j] = 0.0;
    for (i = 0; i < nr; i++) {
        const R *restrict row = g + i * C;
        OPTIM__VECTORIZE
        for (j = 0; j < nc; j++) {
            double d = (double)optim__grad(row[j], 0, &c, V);
            acc[j] = acc[j] + d * d;
        }
    }
    for (j = 0; j < nc; j++)
        cv[j] = optim__canon(OPTIM__T(optim__adafactor_lerp)(cv[j], OPTIM__T(optim__adafactor_mean_sq)(acc[j], nr),
                                                             &k));
}

/* The clamped mean of a batch's R row factors: torch's
 * row_var.mean(dim=-2).clamp_(min=eps1) (summed in 16 lanes, divided in
 * double, rounded once to R). */
static double OPTIM__T(optim__af_rmean)(size_t nr, const void *rvv, const optim__k *kp)
{
    const R *restrict rv = (const R *)rvv;
    const OPTIM__KR(adafactor) k = OPTIM__T(optim__adafactor_kr_from)(&kp->u.adafactor);
    double acc[OPTIM__LANES];
    size_t i = 0, j;
    R m, e = OPTIM__T(optim__adafactor_eps1)(&k);
    for (j = 0; j < OPTIM__LANES; j++) acc[j] = 0.0;
    for (; i + OPTIM__LANES <= nr; i += OPTIM__LANES) {
        OPTIM__VECTORIZE
        for (j = 0; j < OPTIM__LANES; j++) acc[j] = acc[j] + (double)rv[i + j];
    }
    for (j = 0; i + j < nr; j++) acc[j] = acc[j] + (double)rv[i + j];
    m = (R)(OPTIM__T(optim__af_tree)(acc) / (double)nr);
    return (double)(m < e ? e : m); /* clamp_(min=): NaN stays NaN */
}

/* The update of element j of a span: factored (row factor rvj, column
 * factor cv[j], clamped mean rm) or not (variance var[j]). */
#define OPTIM__AF_V(j) (var ? var[j] : OPTIM__T(optim__adafactor_vhat)(rvj, cv[j], rm))

/* Pass B: the sum of u^2 over a span of n elements (one row's segment, or
 * of an unfactored tensor), in 16 lanes. var NULL: factored. */
OPTIM_INLINE double OPTIM__T(optim__af_usq_body)(size_t n, const R *restrict p, const R *restrict g,
                                                 const R *restrict var, R rvj, const R *restrict cv, R rm,
                                                 const optim__k *kp, const unsigned V)
{
    const optim__kc c = OPTIM__T(optim__kc_from)(&kp->c);
    const OPTIM__KR(adafactor) k = OPTIM__T(optim__adafactor_kr_from)(&kp->u.adafactor);
    double acc[OPTIM__LANES];
    size_t i = 0, j;
    (void)p;
    for (j = 0; j < OPTIM__LANES; j++) acc[j] = 0.0;
    for (; i + OPTIM__LANES <= n; i += OPTIM__LANES) {
        OPTIM__VECTORIZE
        for (j = 0; j < OPTIM__LANES; j++) {
            R u = OPTIM__T(optim__adafactor_u)(OPTIM__AF_V(i + j), optim__grad(g[i + j], 0, &c, V), &k);
            acc[j] = acc[j] + (double)u * (double)u;
        }
    }
    for (j = 0; i + j < n; j++) {
        R u = OPTIM__T(optim__adafactor_u)(OPTIM__AF_V(i + j), optim__grad(g[i + j], 0, &c, V), &k);
        acc[j] = acc[j] + (double)u * (double)u;
    }
    return OPTIM__T(optim__af_tree)(acc);
}

/* Pass C over one row's segment of a factored tensor (the unfactored
 * tensors run the rule's generic loop). */
OPTIM_INLINE void OPTIM__T(optim__af_upd_body)(size_t n, R *restrict p, const R *restrict g, R rvj,
                                               const R *restrict cv, R rm, const optim__k *kp, const unsigned V)
{
    const optim__kc c = OPTIM__T(optim__kc_from)(&kp->c);
    const OPTIM__KR(adafactor) k = OPTIM__T(optim__adafactor_kr_from)(&kp->u.adafactor);
    OPTIM__VECTORIZE
    for (size_t j = 0; j < n; j++) {
        R pi = p[j];
        R u = OPTIM__T(optim__adafactor_u)(OPTIM__T(optim__adafactor_vhat)(rvj, cv[j], rm),
                                           optim__grad(g[j], pi, &c, V), &k);
        p[j] = optim__canon(OPTIM__T(optim__adafactor_p)(pi, u, &c, &k));
    }
}
#undef OPTIM__AF_V

/* The table's entry points: the value clamp (OPTIM__V_CLAMP) a constant in each body. */
static void OPTIM__T(optim__af_var)(size_t n, const void *g, void *var, const optim__k *k)
{
    if (k->c.variant & OPTIM__V_CLAMP)
        OPTIM__T(optim__af_var_body)(n, (const R *)g, (R *)var, k, OPTIM__V_CLAMP);
    else
        OPTIM__T(optim__af_var_body)(n, (const R *)g, (R *)var, k, 0u);
}

static void OPTIM__T(optim__af_rows)(size_t nrows, size_t C, const void *g, void *rv, const optim__k *k)
{
    if (k->c.variant & OPTIM__V_CLAMP)
        OPTIM__T(optim__af_rows_body)(nrows, C, (const R *)g, (R *)rv, k, OPTIM__V_CLAMP);
    else
        OPTIM__T(optim__af_rows_body)(nrows, C, (const R *)g, (R *)rv, k, 0u);
}

static void OPTIM__T(optim__af_cols)(size_t nr, size_t C, size_t nc, const void *g, void *cv, const optim__k *k)
{
    if (k->c.variant & OPTIM__V_CLAMP)
        OPTIM__T(optim__af_cols_body)(nr, C, nc, (const R *)g, (R *)cv, k, OPTIM__V_CLAMP);
    else
        OPTIM__T(optim__af_cols_body)(nr, C, nc, (const R *)g, (R *)cv, k, 0u);
}

static double OPTIM__T(optim__af_usq)(size_t n, const void *p, const void *g, const void *var, double rvj,
                                      const void *cv, double rm, const optim__k *k)
{
    if (k->c.variant & OPTIM__V_CLAMP)
        return OPTIM__T(optim__af_usq_body)(n, (const R *)p, (const R *)g, (const R *)var, (R)rvj, (const R *)cv,
                                            (R)rm, k, OPTIM__V_CLAMP);
    return OPTIM__T(optim__af_usq_body)(n, (const R *)p, (const R *)g, (const R *)var, (R)rvj, (const R *)cv, (R)rm,
                                        k, 0u);
}

static void OPTIM__T(optim__af_upd)(size_t n, void *p, const void *g, double rvj, const void *cv, double rm,
                                    const optim__k *k)
{
    if (k->c.variant & OPTIM__V_CLAMP)
        OPTIM__T(optim__af_upd_body)(n, (R *)p, (const R *)g, (R)rvj, (const R *)cv, (R)rm, k, OPTIM__V_CLAMP);
    else
        OPTIM__T(optim__af_upd_body)(n, (R *)p, (const R *)g, (R)rvj, (const R *)cv, (R)rm, k, 0u);
}
