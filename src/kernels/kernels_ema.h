/* kernels_ema.h: the loops of the EMA of the weights (include/optim_ema.h)
 * for one compute type R, included by kernels_impl.h once per type after
 * kernels_math.h (R, OPTIM__RS and the rule_math.h primitives defined). No
 * include guard: read once per type.
 *
 * ema = d * ema + (1 - d) * p, two products and a sum, each rounded once in
 * R (the library is built with -ffp-contract=off: nothing is fused), d and
 * 1 - d computed in double by the host and rounded to R here: torch 1.13's
 * `decay * avg + (1 - decay) * p` on tensors of R with Python floats, bit
 * for bit. Element-wise, so every path and split gives the scalar path's
 * bits; NaN results are stored canonical, as every update's. */

/* In blocks of OPTIM__PF_BLOCK bytes as the update loops, each after the
 * prefetch of the average's lines OPTIM__PF_BYTES ahead, up to npf elements
 * (past this call's n: the next span's lines arrive while this span ends).
 * One block without prefetch where n is short (OPTIM__PF_MIN) or npf is 0
 * (a short task range, likely in cache: ema_run.c). The parameter is not
 * prefetched: the pass runs on a span the update has just written. */
static void OPTIM__T(optim__ema)(size_t n, size_t npf, void *ev, const void *pv, const optim__ema_k *k)
{
    R *restrict e = (R *)ev;
    const R *restrict p = (const R *)pv;
    const R d = (R)k->d, omd = (R)k->omd;
    const size_t bl = npf == 0 || n * sizeof(R) <= OPTIM__PF_MIN ? n : OPTIM__PF_BLOCK / sizeof(R);
    size_t b, x, i;
    for (b = 0; b < n; b = x) {
        x = n - b < bl ? n : b + bl;
        OPTIM__PREFETCH_1(b, npf, OPTIM__PF_BLOCK, OPTIM__PF_BYTES, e, 1);
        if (k->copy) {
            /* The first average (torch's AveragedModel with n_averaged == 0): the parameter itself. */
            OPTIM__VECTORIZE
            for (i = b; i < x; i++) e[i] = optim__canon(p[i]);
        } else {
            OPTIM__VECTORIZE
            for (i = b; i < x; i++) e[i] = optim__canon(d * e[i] + omd * p[i]);
        }
    }
}

/* a <-> b, element by element (optim_ema_swap). */
static void OPTIM__T(optim__ema_swap)(size_t n, void *av, void *bv)
{
    R *restrict a = (R *)av;
    R *restrict b = (R *)bv;
    OPTIM__VECTORIZE
    for (size_t i = 0; i < n; i++) {
        const R x = a[i];
        a[i] = b[i];
        b[i] = x;
    }
}
