/* muon.c: the step of rule OPTIM_MUON over the optimizer object: per 2-D
 * parameter, the rule's phase 1 (momentum buffer and the update U into the
 * scratch), the Frobenius norm of U (fixed blocks, summed in block order),
 * X = U / max(||U||, eps), the Newton-Schulz iterations through the hook
 * liboptim_muon installed (src/optim_muon_ext.h: matrix products are
 * OpenBLAS's, never here), then phase 2 (decay and update of P). Every
 * element-wise part is a kernel (src/rules/muon.h's loops, the vector
 * kernels), the same bits on every CPU path and thread count; the matrix
 * products are the BLAS's (docs/rules/muon.md). */
#include "optim_internal.h"

#include <math.h>
#include <string.h>

#define OPTIM__E(o) (&(o)->err)

int optim__muon_set_ops(optim *o, const optim_muon_ops *ops)
{
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(o->rule != OPTIM_MUON, OPTIM__E(o), OPTIM_EINVAL,
                   "optim__muon_set_ops: the optimizer's rule is %s, not muon", optim_rule_name(o->rule));
    if (ops && ops->orth)
        o->muon = *ops;
    else
        memset(&o->muon, 0, sizeof o->muon);
    return optim__ok(OPTIM__E(o));
}

const char *optim__muon_ops_name(const optim *o)
{
    return o && o->muon.orth ? (o->muon.name ? o->muon.name : "?") : NULL;
}

/* Floats of scratch a rows x cols parameter needs: X, then the hook's work (2 m m + rows cols). */
static int optim__muon_need(size_t rows, size_t cols, size_t *need)
{
    size_t m = rows < cols ? rows : cols, n, mm;
    if (cols != 0 && rows > SIZE_MAX / cols) return -1;
    n = rows * cols;
    if (m != 0 && m > SIZE_MAX / m) return -1;
    mm = m * m;
    if (n > (SIZE_MAX / 4 - mm) / 2 || mm > SIZE_MAX / 4) return -1;
    *need = 2 * n + 2 * mm;
    return 0;
}

int optim__muon_reserve(optim *o, const char *fn, size_t rows, size_t cols)
{
    size_t need;
    float *x;
    OPTIM__FAIL_IF(optim__muon_need(rows, cols, &need) != 0, OPTIM__E(o), OPTIM_ENOMEM,
                   "%s: muon's scratch for a %zu x %zu parameter overflows", fn, rows, cols);
    if (need <= o->muon_cap) return OPTIM_OK;
    x = optim__alloc_floats(need);
    OPTIM__FAIL_IF(!x, OPTIM__E(o), OPTIM_ENOMEM, "%s: out of memory (muon's scratch of %zu floats for %zu x %zu)",
                   fn, need, rows, cols);
    optim__free_floats(o->muon_scratch);
    o->muon_scratch = x;
    o->muon_cap = need;
    return OPTIM_OK;
}

int optim__muon_check(optim *o)
{
    size_t i;
    OPTIM__FAIL_IF(!o->muon.orth, OPTIM__E(o), OPTIM_EUNSUPPORTED,
                   "optim_step: muon's orthogonalisation (Newton-Schulz over OpenBLAS) is in liboptim_muon: call "
                   "optim_muon_attach (include/optim_muon.h) on this optimizer first; nothing changed");
    /* Hooks over whole tensors (optim.torch under torch's ZeroRedundancyOptimizer) leave each matrix whole. */
    OPTIM__FAIL_IF(o->ext.combine && !o->ext.whole_tensors, OPTIM__E(o), OPTIM_EUNSUPPORTED,
                   "optim_step: muon orthogonalises whole matrices; a sharded optimizer (liboptim_mpi) holds pieces "
                   "of them; nothing changed");
    for (i = 0; i < o->nparams; i++) {
        const optim__param *pa = &o->params[i];
        size_t need;
        if (!optim__has_grad(o, i)) continue;
        OPTIM__FAIL_IF(pa->pdt != OPTIM_FLOAT32 || pa->gdt != OPTIM_FLOAT32 || pa->sdt != OPTIM_FLOAT32 || pa->flags,
                       OPTIM__E(o), OPTIM_EUNSUPPORTED,
                       "optim_step: muon steps float32 parameters with float32 gradients and state only (the matrix "
                       "products are sgemm's); param %zu '%s' has %s parameters, %s gradients, %s state%s; nothing "
                       "changed",
                       i, pa->name, optim_dtype_name(pa->pdt), optim_dtype_name(pa->gdt), optim_dtype_name(pa->sdt),
                       pa->flags ? " and storage options (master, stochastic rounding or complex)" : "");
        OPTIM__FAIL_IF(!pa->dims || pa->ndim != 2, OPTIM__E(o), OPTIM_EINVAL,
                       "optim_step: muon steps 2-D parameters only (as torch.optim.Muon); param %zu '%s' has %s%zu "
                       "dimensions (give its shape with optim_param_set_shape); nothing changed",
                       i, pa->name, pa->dims ? "" : "no shape given, ", pa->dims ? pa->ndim : (size_t)1);
        OPTIM__FAIL_IF(optim__muon_need((size_t)pa->dims[0], (size_t)pa->dims[1], &need) != 0 || need > o->muon_cap,
                       OPTIM__E(o), OPTIM_ESTATE, "optim_step: muon's scratch is short for param %zu '%s'", i,
                       pa->name);
    }
    return OPTIM_OK;
}

void optim__muon_run(optim *o)
{
    size_t i;
    for (i = 0; i < o->nparams; i++) {
        optim__param *pa = &o->params[i];
        const optim_hparams *hp = &o->groups[pa->group].hp;
        optim__task t = o->tasks[i], v;
        optim__k *k = &o->ks[i];
        optim__vec_k vk;
        size_t rows, cols, nb, b;
        double norm, coef[3];
        unsigned rd, wr;
        double *spart;
        if (!optim__has_grad(o, i) || t.n == 0) continue;
        rows = (size_t)pa->dims[0];
        cols = (size_t)pa->dims[1];
        /* Phase 1: B and U, U into the scratch as slot 1 (float32, as slot 0). Step statistics (the task's
         * spart, optim__stats_begin) measure phase 2 only: the change it makes to the parameter. */
        spart = t.spart;
        t.spart = NULL;
        t.sloop = NULL;
        t.ema = NULL; /* include/optim_ema.h: the average follows phase 2, the parameter's update */
        t.start = 0;
        t.s[1] = o->muon_scratch;
        t.sto[OPTIM__SS(1)] = t.sto[OPTIM__SS(0)];
        optim__run(o->kt, optim__range_update, &t, 1, t.n, o->threads);
        /* ||U||: blocks of OPTIM__RBLOCK, each the same whatever thread sums it, added in block order. */
        memset(&v, 0, sizeof v);
        v.n = t.n;
        v.g = o->muon_scratch;
        v.s[0] = o->muon_scratch;
        v.p = o->muon_scratch;
        nb = OPTIM__NBLOCKS(t.n);
        optim__vdot_run(o->kt, OPTIM__CT_F32, &v, 1, nb, o->partials, o->threads);
        norm = 0.0;
        for (b = 0; b < nb; b++) norm += o->partials[b];
        norm = sqrt(norm);
        /* X = U / max(||U||, eps) (torch: div_(norm().clamp(min=eps))), as a product by the reciprocal. */
        vk.a = 1.0 / (norm > hp->eps ? norm : hp->eps);
        if (norm != norm) vk.a = norm; /* a NaN norm: NaN everywhere, as torch's division */
        vk.ct = OPTIM__CT_F32;
        v.k = &vk;
        optim__run(o->kt, optim__range_vscale, &v, 1, t.n, o->threads);
        /* The Newton-Schulz iterations: liboptim_muon's matrix products. */
        coef[0] = hp->ns_a;
        coef[1] = hp->ns_b;
        coef[2] = hp->ns_c;
        o->muon.orth(o->muon.ctx, o->muon_scratch, rows, cols, coef, hp->ns_steps, o->muon_scratch + t.n);
        /* Phase 2: P = P (1 - lr wd) - adjusted lr X. The apply branch never reads the gradient, so value
         * clipping's flag stays: the step statistics measured in this pass read it (the clamped gradient's
         * norm, the fraction clamped) from the same constants as the loop. */
        k->c.variant |= OPTIM__MUON_V_APPLY;
        k->u.muon.neg_lr *= optim__muon_lr_factor(hp, (double)rows, (double)cols);
        t.loop = optim__loop_get(o->kt, OPTIM_MUON, OPTIM__CT_F32, k->c.variant, &rd, &wr);
        t.reads = rd;
        t.writes = wr;
        t.spart = spart;
        t.sloop = spart && !o->stats_copies ? optim__sloop_get(o->kt, OPTIM_MUON, OPTIM__CT_F32, k->c.variant)
                                            : NULL;
        t.ema = o->tasks[i].ema;
        optim__run(o->kt, optim__range_update, &t, 1, t.n, o->threads);
    }
}
