/* mpi_create.c: the optim_mpi handle: creation (the ranks' agreement on the
 * optimizer, the layout, the local optimizer over this rank's slices and the
 * hook that combines its norms with the other ranks'), freeing, pointers and
 * facts. The reduction and the steps are mpi_step.c's. */
#include "mpi_internal.h"
#include "optim_ema.h"
#include "optim_precision.h"
#include "optim_schedule.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- The local optimizer ------------------------------------------------------------ */

static char *dm_piece_name(const optim_mpi *d, const osc_piece *q)
{
    size_t len;
    char *s;
    if (q->param == OSC_NO_PARAM) {
        s = (char *)malloc(8);
        if (s) strcpy(s, "[empty]");
        return s;
    }
    len = strlen(d->names[q->param]) + 48;
    s = (char *)malloc(len);
    if (s) snprintf(s, len, "%s[%zu:%zu]", d->names[q->param], q->a, q->b);
    return s;
}

int dm_local_build(optim_mpi *d, const optim *like, optim **out)
{
    optim *o = NULL;
    size_t g, i;
    int rc;
    double max_norm, norm_type;
    *out = NULL;
    rc = optim_create(&o, d->rule);
    if (rc != OPTIM_OK) return dm_fail(d, rc, "out of memory for the local optimizer");
    for (g = 0; g < d->ngroups; g++) {
        optim_hparams hp;
        int64_t st;
        if ((rc = optim_group_get(like, g, &hp)) != OPTIM_OK || (rc = optim_add_group(o, &hp, NULL)) != OPTIM_OK ||
            (rc = optim_group_set_schedule(o, g, optim_group_get_schedule(like, g))) != OPTIM_OK ||
            (rc = optim_group_get_schedule_step(like, g, &st)) != OPTIM_OK ||
            (rc = optim_group_set_schedule_step(o, g, st)) != OPTIM_OK)
            goto fail;
    }
    for (i = 0; i < d->npieces; i++) {
        const osc_piece *q = &d->pieces[i];
        char *name = dm_piece_name(d, q);
        if (!name) {
            optim_free(o);
            return dm_fail(d, OPTIM_ENOMEM, "out of memory for the local optimizer");
        }
        if (q->param == OSC_NO_PARAM) {
            rc = optim_add_param(o, 0, NULL, (const float *)(const void *)d->gbuf, 0, name, NULL);
        } else {
            size_t j = q->param;
            /* The parameter's own types: the slice of its memory, its averaged gradient in gbuf, its state. */
            /* The parameter's own types and storage flags: the slice of its memory, its averaged gradient in
             * gbuf, its state (a master holds the slice's elements); stochastic rounding draws the bits of the
             * model's parameter j and its elements q->a.. (a multiple of 8192), as one process does. */
            rc = optim_add_param_ex(o, d->group[j], d->p[j] ? d->p[j] + q->a * d->L.psz[j] : NULL, d->pdt[j],
                                    d->gbuf + d->goff[i], d->gdt[j], q->b - q->a, d->sdt[j], d->flags[j], name, NULL);
            if (rc == OPTIM_OK) rc = optim__ext_set_sr_origin(o, i, (uint64_t)j, (uint64_t)q->a);
        }
        free(name);
        if (rc != OPTIM_OK) goto fail;
    }
    {
        /* Stochastic rounding's seed, loss scaling's settings and state. */
        optim_loss_scale ls;
        double scale = 1.0;
        int64_t tracker = 0;
        optim_get_loss_scale(like, &ls, &scale, &tracker);
        if ((rc = optim_set_seed(o, optim_get_seed(like))) != OPTIM_OK || (rc = optim_set_loss_scale(o, &ls)) != OPTIM_OK ||
            (ls.mode != OPTIM_LOSS_SCALE_OFF && (rc = optim_set_loss_scale_state(o, scale, tracker)) != OPTIM_OK))
            goto fail;
    }
    optim_get_clip_grad_norm(like, &max_norm, &norm_type);
    if ((rc = optim_set_clip_grad_norm(o, max_norm, norm_type)) != OPTIM_OK ||
        (rc = optim_set_clip_grad_value(o, optim_get_clip_grad_value(like))) != OPTIM_OK ||
        (rc = optim_set_nonfinite(o, optim_get_nonfinite(like))) != OPTIM_OK ||
        (rc = optim_set_threads(o, optim_get_threads(like))) != OPTIM_OK ||
        (rc = optim_set_isa(o, optim_get_isa(like))) != OPTIM_OK ||
        (rc = optim__ext_set_counters(o, optim_step_count(like), optim_skipped_steps(like))) != OPTIM_OK)
        goto fail;
    *out = o;
    return OPTIM_OK;
fail:
    dm_fail(d, rc, "building the local optimizer: %s", optim_errmsg(o));
    optim_free(o);
    return rc;
}

/* Copy the state of opt's parameters into the local optimizer's pieces
 * (each in the parameter's state type; 8-bit block state with its scales:
 * a piece starts a quantization block). */
static int dm_local_copy_state(optim_mpi *d, optim *opt, optim *local)
{
    size_t i;
    int s, nslots = optim_rule_slot_count(d->rule);
    for (i = 0; i < d->npieces; i++) {
        const osc_piece *q = &d->pieces[i];
        int64_t step;
        double mu;
        size_t held = 0, j = q->param;
        if (j == OSC_NO_PARAM) continue;
        /* State opt never allocated (optim_set_defer_state, or none needed)
         * is fresh state, as the local pieces' is: nothing to copy, and
         * asking opt for it would allocate the whole parameter's. (The
         * master counts in optim_param_state_bytes but is allocated when the
         * parameter is added: it is not what this asks.) */
        if (optim_param_state_bytes(opt, j, &held) != OPTIM_OK)
            return dm_fail(d, optim_errcode(opt), "%s", optim_errmsg(opt));
        if (d->flags[j] & OPTIM_PARAM_MASTER) held -= d->L.n[j] * sizeof(float);
        for (s = 0; s < nslots && held > 0; s++) {
            void *src = NULL, *dst = NULL;
            int init = 0;
            optim_error e;
            optim_state_slot_data(opt, j, s, &src, NULL, &init);
            optim_state_slot_data(local, i, s, &dst, NULL, NULL);
            if (!dst) continue;
            if (src && osc_state_copy(dst, q->b - q->a, 0, src, d->L.n[j], q->a, q->b - q->a, d->sdt[j], &e) != OPTIM_OK)
                return dm_fail(d, e.code, "param %zu '%s': %s", j, d->names[j], e.message);
            optim_state_set_initialized(local, i, s, src ? init : 0);
        }
        optim_param_get_step(opt, q->param, &step);
        optim_param_get_mu_product(opt, q->param, &mu);
        if (optim_param_set_step(local, i, step) != OPTIM_OK || optim_param_set_mu_product(local, i, mu) != OPTIM_OK)
            return dm_fail(d, optim_errcode(local), "%s", optim_errmsg(local));
    }
    return OPTIM_OK;
}

/* The combine hook (optim_ext.h): gather every rank's block partials and put
 * them in global block order. */
static int dm_combine(void *ctx, const double *partials, const unsigned char *bad, size_t nblocks,
                      const double **all_partials, const unsigned char **all_bad, size_t *all_nblocks,
                      optim_error *err)
{
    optim_mpi *d = (optim_mpi *)ctx;
    MPI_Request req;
    size_t j;
    int rc;
    if (nblocks != d->nblocks_me) {
        snprintf(err->message, sizeof err->message,
                 "rank %d of %d: the local optimizer has %zu reduction blocks where its slices have %zu (parameters "
                 "were added to it or lost their gradient)",
                 d->rank, d->K, nblocks, d->nblocks_me);
        return OPTIM_ESTATE;
    }
    for (j = 0; j < nblocks; j++) {
        d->hk_send[2 * j] = partials[j];
        d->hk_send[2 * j + 1] = bad[j];
    }
    rc = MPI_Iallgatherv(d->hk_send, (int)(2 * nblocks), MPI_DOUBLE, d->hk_recv, d->hk_cnt, d->hk_dsp, MPI_DOUBLE,
                         d->ctl, &req);
    if (rc == MPI_SUCCESS) {
        d->stats.control_bytes += (uint64_t)(d->L.nblocks - nblocks) * 2 * sizeof(double);
        rc = dm_wait(d, &req, "the all-gather of the gradient norm's partials");
    } else {
        rc = dm_mpi_fail(d, rc, "the all-gather of the gradient norm's partials");
    }
    if (rc != OPTIM_OK) {
        snprintf(err->message, sizeof err->message, "%s", d->err.message);
        return rc;
    }
    for (j = 0; j < d->L.nblocks; j++) {
        d->hk_part[d->hk_gidx[j]] = d->hk_recv[2 * j];
        d->hk_bad[d->hk_gidx[j]] = d->hk_recv[2 * j + 1] != 0.0;
    }
    *all_partials = d->hk_part;
    *all_bad = d->hk_bad;
    *all_nblocks = d->L.nblocks;
    return OPTIM_OK;
}

/* Stage 0: every rank has every block; the hook only names the model's parameters in messages. */
static int dm_combine_none(void *ctx, const double *partials, const unsigned char *bad, size_t nblocks,
                           const double **all_partials, const unsigned char **all_bad, size_t *all_nblocks,
                           optim_error *err)
{
    (void)ctx;
    (void)err;
    *all_partials = partials;
    *all_bad = bad;
    *all_nblocks = nblocks;
    return OPTIM_OK;
}

static void dm_name_block(void *ctx, size_t block, size_t *param, const char **name)
{
    optim_mpi *d = (optim_mpi *)ctx;
    *param = d->L.bparam[block];
    *name = d->names[*param];
}

int dm_local_prepare(optim_mpi *d, optim *local, optim_sam **sam)
{
    optim_ext_hooks h;
    *sam = NULL;
    h.ctx = d;
    h.combine = d->stage > 0 ? dm_combine : dm_combine_none;
    h.name_block = dm_name_block;
    optim__ext_set_hooks(local, &h);
    if (d->sam_p > 0) {
        optim_error e;
        int rc = optim_sam_create(sam, local, d->sam_rho, d->sam_p, d->sam_adaptive, d->sam_eta, &e);
        if (rc != OPTIM_OK) return dm_fail(d, rc, "%s", e.message);
    }
    return OPTIM_OK;
}

void dm_local_commit(optim_mpi *d, optim *local, optim_sam *sam)
{
    optim_sam_free(d->sam);
    optim_free(d->local);
    d->sam = sam;
    d->local = local;
}

/* ---- Creation ----------------------------------------------------------------------- */

void optim_mpi_options_init(optim_mpi_options *o)
{
    if (!o) return;
    o->bucket_bytes = 0;
    o->timeout = OPTIM_MPI_TIMEOUT_DEFAULT;
}

/* The element types this file knows the size and meaning of (state: also
 * 8-bit block state, moved block by block with its scales). */
static int dm_dtype_known(optim_dtype t, int state)
{
    return t == OPTIM_FLOAT32 || t == OPTIM_FLOAT64 || t == OPTIM_BFLOAT16 || t == OPTIM_FLOAT16 ||
           (state && t == OPTIM_INT8_BLOCK);
}

/* The storage flags liboptim_mpi carries (docs/DISTRIBUTED.md, "Reduced precision"). */
#define DM_FLAGS_CARRIED (OPTIM_PARAM_MASTER | OPTIM_PARAM_STOCHASTIC_ROUNDING | OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING)

static const char *dm_dtype_str(optim_dtype t)
{
    const char *s = optim_dtype_name(t);
    return s ? s : "an unknown type";
}

/* Copy the model's description out of opt. */
static int dm_copy_model(optim_mpi *d, optim *opt)
{
    size_t i;
    d->rule = optim_get_rule(opt);
    d->ngroups = optim_group_count(opt);
    d->nparams = optim_param_count(opt);
    if (d->nparams == 0) return dm_fail(d, OPTIM_ESTATE, "opt has no parameters");
    d->names = (char **)calloc(d->nparams, sizeof *d->names);
    d->group = (size_t *)calloc(d->nparams, sizeof *d->group);
    d->p = (unsigned char **)calloc(d->nparams, sizeof *d->p);
    d->g = (const unsigned char **)calloc(d->nparams, sizeof *d->g);
    d->pdt = (optim_dtype *)calloc(d->nparams, sizeof *d->pdt);
    d->gdt = (optim_dtype *)calloc(d->nparams, sizeof *d->gdt);
    d->sdt = (optim_dtype *)calloc(d->nparams, sizeof *d->sdt);
    d->flags = (unsigned *)calloc(d->nparams, sizeof *d->flags);
    d->piece_of = (size_t *)calloc(d->nparams, sizeof *d->piece_of);
    d->shape_given = (int *)calloc(d->nparams, sizeof *d->shape_given);
    d->ndim = (size_t *)calloc(d->nparams, sizeof *d->ndim);
    d->dims = (int64_t **)calloc(d->nparams, sizeof *d->dims);
    d->ready = (unsigned char *)calloc(d->nparams, 1);
    if (!d->names || !d->group || !d->p || !d->g || !d->shape_given || !d->ndim || !d->dims || !d->ready || !d->pdt ||
        !d->gdt || !d->sdt || !d->piece_of || !d->flags)
        return dm_fail(d, OPTIM_ENOMEM, "out of memory");
    {
        /* The EMA of the weights (include/optim_ema.h): the local optimizers, gathers and checkpoints do not
         * carry the averages; refused by name, never dropped (the parameters would match one process's bits). */
        int ema_on = 0;
        double ema_decay = 0.0;
        if (optim_get_ema(opt, &ema_on, &ema_decay, NULL, NULL, NULL) != OPTIM_OK || ema_on)
            return dm_fail(d, OPTIM_EUNSUPPORTED,
                           "the optimizer has an EMA of the weights (optim_set_ema, decay %.10g); liboptim_mpi does "
                           "not carry it yet (turn it off with optim_ema_off, or average the gathered parameters "
                           "yourself)",
                           ema_decay);
    }
    for (i = 0; i < d->nparams; i++) {
        optim_param_info info;
        int64_t dims[OPTIM_MAX_NDIM];
        optim_dtype pdt, gdt, sdt;
        unsigned flags = 0;
        int s;
        optim_param_get_info(opt, i, &info);
        optim_param_get_dtypes(opt, i, &pdt, &gdt, &sdt);
        /* The buckets, shards, gathers and checkpoints move the four types
         * the core had when this was written (their element sizes, their
         * exact loads into double); a later type is refused by name, never
         * moved as bytes whose meaning is not known here. */
        if (!dm_dtype_known(pdt, 0) || !dm_dtype_known(gdt, 0) || !dm_dtype_known(sdt, 1))
            return dm_fail(d, OPTIM_EUNSUPPORTED,
                           "param %zu '%s' has %s memory, %s gradients and %s state; liboptim_mpi moves float32, "
                           "float64, bfloat16 and float16 ones (and 8-bit block state)",
                           i, info.name, dm_dtype_str(pdt), dm_dtype_str(gdt), dm_dtype_str(sdt));
        /* fp32 master weights and stochastic rounding (of values and of int8 codes) are carried (the
         * slices' masters, keys by global index); any other storage flag
         * (complex numbers, a later one) is refused by name, never dropped. */
        if (optim_param_get_flags(opt, i, &flags) != OPTIM_OK || (flags & ~(unsigned)DM_FLAGS_CARRIED) != 0)
            return dm_fail(d, OPTIM_EUNSUPPORTED,
                           "param %zu '%s' has flags 0x%x (%s); liboptim_mpi carries OPTIM_PARAM_MASTER, "
                           "OPTIM_PARAM_STOCHASTIC_ROUNDING and OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING only",
                           i, info.name, flags,
                           (flags & OPTIM_PARAM_COMPLEX) ? "OPTIM_PARAM_COMPLEX" : "a flag this library does not know");
        /* The shards, gathers, hashes and checkpoints move n elements of each slot, sliced with the
         * parameter: a slot of another length (Adafactor's factors, whose length follows the shape, and its
         * unused ones) is refused by name, never read past its end nor sliced as if elementwise. */
        for (s = 0; s < optim_rule_slot_count(d->rule); s++) {
            size_t len = info.n;
            if (optim_state_slot_len(opt, i, s, &len) != OPTIM_OK || len != info.n)
                return dm_fail(d, OPTIM_EUNSUPPORTED,
                               "param %zu '%s': %s state '%s' holds %zu elements for its %zu (state that follows the "
                               "shape, per-tensor reductions); liboptim_mpi shards state element by element and does "
                               "not support %s",
                               i, info.name, optim_rule_name(d->rule), optim_rule_slot_name(d->rule, s), len, info.n,
                               optim_rule_name(d->rule));
        }
        d->flags[i] = flags;
        d->pdt[i] = pdt;
        d->gdt[i] = gdt;
        d->sdt[i] = sdt;
        d->names[i] = (char *)malloc(strlen(info.name) + 1);
        if (!d->names[i]) return dm_fail(d, OPTIM_ENOMEM, "out of memory");
        strcpy(d->names[i], info.name);
        d->group[i] = info.group;
        d->p[i] = (unsigned char *)(void *)info.param;
        d->g[i] = (const unsigned char *)(const void *)info.grad;
        optim_param_get_shape(opt, i, &d->ndim[i], dims, &d->shape_given[i]);
        d->dims[i] = (int64_t *)malloc((d->ndim[i] ? d->ndim[i] : 1) * sizeof **d->dims);
        if (!d->dims[i]) return dm_fail(d, OPTIM_ENOMEM, "out of memory");
        memcpy(d->dims[i], dims, d->ndim[i] * sizeof *dims);
    }
    return OPTIM_OK;
}

/* Buffers of the layout: pieces, gradient buffer, staging, the hook's tables. */
static int dm_alloc_layout(optim_mpi *d)
{
    dm_layout *L = &d->L;
    size_t k, nb = L->nbuckets, cap = dm_layout_pieces_cap(L), j;
    int r, K = d->K;
    d->pieces = (osc_piece *)calloc(cap, sizeof *d->pieces);
    d->goff = (size_t *)calloc(cap, sizeof *d->goff);
    d->remaining = (size_t *)calloc(nb + 1, sizeof *d->remaining);
    d->bucket_slot = (long *)calloc(nb + 1, sizeof *d->bucket_slot);
    d->started = (unsigned char *)calloc(nb + 1, 1);
    d->ag_req = (MPI_Request *)calloc(nb + 1, sizeof *d->ag_req);
    d->rs_cnt = (int *)calloc(nb * (size_t)K + 1, sizeof *d->rs_cnt);
    d->rs_dsp = (int *)calloc(nb * (size_t)K + 1, sizeof *d->rs_dsp);
    if (!d->pieces || !d->goff || !d->remaining || !d->bucket_slot || !d->started || !d->ag_req ||
        !d->rs_cnt || !d->rs_dsp)
        return dm_fail(d, OPTIM_ENOMEM, "out of memory for the layout");
    for (k = 0; k <= nb; k++) d->ag_req[k] = MPI_REQUEST_NULL;
    if (d->stage == 0) {
        d->npieces = dm_layout_whole(L, d->pieces, d->goff);
        d->gbuf_len = L->gtotal;
    } else {
        d->npieces = dm_layout_pieces(L, d->rank, d->pieces, d->goff, &d->gbuf_len);
    }
    for (j = 0; j < d->nparams; j++) d->piece_of[j] = (size_t)-1;
    for (j = 0; j < d->npieces; j++)
        if (d->pieces[j].param != OSC_NO_PARAM) d->piece_of[d->pieces[j].param] = j;
    {
        /* 64-byte aligned, zeroed (the gaps between pieces stay zero). */
        size_t bytes = ((d->gbuf_len ? d->gbuf_len : 1) + 63) / 64 * 64;
        d->gbuf = (unsigned char *)aligned_alloc(64, bytes);
        if (d->gbuf) memset(d->gbuf, 0, bytes);
    }
    if (!d->gbuf) return dm_fail(d, OPTIM_ENOMEM, "out of memory for %zu bytes of averaged gradients", d->gbuf_len);
    d->send_cap = d->recv_cap = 1;
    for (k = 0; k < nb; k++) {
        size_t g0 = dm_gpos(L, DM_BCUT(L, k, 0)), T = dm_gpos(L, DM_BCUT(L, k, K)) - g0;
        size_t P = dm_ppos(L, DM_BCUT(L, k, K)) - dm_ppos(L, DM_BCUT(L, k, 0));
        size_t mine = dm_gpos(L, DM_BCUT(L, k, d->rank + 1)) - dm_gpos(L, DM_BCUT(L, k, d->rank));
        if (T > d->send_cap) d->send_cap = T;
        if (T > d->recv_cap) d->recv_cap = T;
        if (P > d->recv_cap) d->recv_cap = P;
        if (mine * (size_t)K > d->recv_cap) d->recv_cap = mine * (size_t)K;
        for (r = 0; r < K; r++) {
            d->rs_cnt[k * (size_t)K + (size_t)r] = (int)mine;
            d->rs_dsp[k * (size_t)K + (size_t)r] = (int)(mine * (size_t)r);
        }
    }
    /* The hook: each rank's blocks, in global order. */
    d->hk_cnt = (int *)calloc((size_t)K, sizeof *d->hk_cnt);
    d->hk_dsp = (int *)calloc((size_t)K, sizeof *d->hk_dsp);
    d->hk_gidx = (size_t *)calloc(L->nblocks + 1, sizeof *d->hk_gidx);
    d->hk_send = (double *)calloc(2 * L->nblocks + 1, sizeof *d->hk_send);
    d->hk_recv = (double *)calloc(2 * L->nblocks + 1, sizeof *d->hk_recv);
    d->hk_part = (double *)calloc(L->nblocks + 1, sizeof *d->hk_part);
    d->hk_bad = (unsigned char *)calloc(L->nblocks + 1, 1);
    if (!d->hk_cnt || !d->hk_dsp || !d->hk_gidx || !d->hk_send || !d->hk_recv || !d->hk_part || !d->hk_bad)
        return dm_fail(d, OPTIM_ENOMEM, "out of memory for the norm's tables");
    for (r = 0, j = 0; r < K; r++) {
        size_t start = j;
        for (k = 0; k < nb; k++) {
            size_t b;
            for (b = DM_BCUT(L, k, r); b < DM_BCUT(L, k, r + 1); b++) d->hk_gidx[j++] = b;
        }
        if (r == d->rank) d->nblocks_me = j - start;
        d->hk_cnt[r] = (int)(2 * (j - start));
        d->hk_dsp[r] = (int)(2 * start);
    }
    return OPTIM_OK;
}

int dm_slots_grow(optim_mpi *d, size_t want)
{
    while (d->nslots < want) {
        dm_slot *s = (dm_slot *)realloc(d->slots, (d->nslots + 1) * sizeof *s);
        if (!s) return dm_fail(d, OPTIM_ENOMEM, "out of memory for a staging slot");
        d->slots = s;
        s = &d->slots[d->nslots];
        memset(s, 0, sizeof *s);
        s->req = MPI_REQUEST_NULL;
        /* Zeroed: the alignment gaps of a mixed-type bucket go on the wire as they are. */
        s->send = (unsigned char *)calloc(d->send_cap, 1);
        s->recv = (unsigned char *)calloc(d->recv_cap, 1);
        if (!s->send || !s->recv) {
            free(s->send);
            free(s->recv);
            return dm_fail(d, OPTIM_ENOMEM, "out of memory for a staging slot of %zu + %zu bytes", d->send_cap,
                           d->recv_cap);
        }
        d->nslots++;
    }
    return OPTIM_OK;
}

static int dm_bcast_params(optim_mpi *d)
{
    size_t i;
    for (i = 0; i < d->nparams; i++) {
        size_t n = d->L.n[i] * d->L.psz[i], off; /* bytes, in the parameter's own type */
        for (off = 0; off < n;) {
            size_t len = n - off < DM_MAX_BUCKET_BYTES ? n - off : DM_MAX_BUCKET_BYTES;
            MPI_Request req;
            int rc = MPI_Ibcast(d->p[i] + off, (int)len, MPI_BYTE, 0, d->comm, &req);
            if (rc != MPI_SUCCESS) return dm_mpi_fail(d, rc, "optim_mpi_create: the broadcast of the parameters");
            rc = dm_wait(d, &req, "optim_mpi_create: the broadcast of the parameters");
            if (rc != OPTIM_OK) return rc;
            if (d->rank != 0) d->stats.control_bytes += len;
            off += len;
        }
    }
    return OPTIM_OK;
}

/* The fp32 masters, as the parameters: rank 0's (opt's master of each
 * parameter with OPTIM_PARAM_MASTER, which may hold more than its rounded
 * memory, e.g. after optim_load) is every rank's. Broadcast in pieces of
 * DM_MASTER_CHUNK floats; each rank keeps what its slices hold. */
#define DM_MASTER_CHUNK ((size_t)1 << 22)
static int dm_bcast_masters(optim_mpi *d, optim *opt)
{
    static const char what[] = "optim_mpi_create: the broadcast of the fp32 masters";
    size_t j, any = 0;
    float *buf;
    for (j = 0; j < d->nparams; j++) any |= (d->flags[j] & OPTIM_PARAM_MASTER) && d->L.n[j] > 0;
    if (!any) return OPTIM_OK;
    /* A rank without the buffer cannot take part: the others fail with the timeout (as a failed calloc of d). */
    buf = (float *)malloc(DM_MASTER_CHUNK * sizeof *buf);
    if (!buf) return dm_fail(d, OPTIM_ECOMM, "%s: out of memory for %zu floats", what, DM_MASTER_CHUNK);
    for (j = 0; j < d->nparams; j++) {
        float *src = NULL, *dst = NULL;
        size_t off, n = d->L.n[j], pc = d->piece_of[j];
        if (!(d->flags[j] & OPTIM_PARAM_MASTER) || n == 0) continue;
        if (d->rank == 0 && optim_param_master_data(opt, j, &src) != OPTIM_OK) src = NULL;
        if (pc != (size_t)-1 && optim_param_master_data(d->local, pc, &dst) != OPTIM_OK) dst = NULL;
        for (off = 0; off < n; off += DM_MASTER_CHUNK) {
            size_t len = n - off < DM_MASTER_CHUNK ? n - off : DM_MASTER_CHUNK, lo, hi;
            MPI_Request req;
            int rc;
            if (d->rank == 0 && src) memcpy(buf, src + off, len * sizeof *buf);
            rc = MPI_Ibcast(buf, (int)len, MPI_FLOAT, 0, d->comm, &req);
            if (rc != MPI_SUCCESS) {
                free(buf);
                return dm_mpi_fail(d, rc, what);
            }
            rc = dm_wait(d, &req, what);
            if (rc != OPTIM_OK) {
                free(buf);
                return rc;
            }
            if (d->rank != 0) d->stats.control_bytes += len * sizeof *buf;
            if (!dst) continue;
            /* This rank's slice [a, b) of parameter j, and this chunk's overlap with it. */
            lo = off > d->pieces[pc].a ? off : d->pieces[pc].a;
            hi = off + len < d->pieces[pc].b ? off + len : d->pieces[pc].b;
            if (lo < hi) memcpy(dst + (lo - d->pieces[pc].a), buf + (lo - off), (hi - lo) * sizeof *buf);
        }
    }
    free(buf);
    return OPTIM_OK;
}

int optim_mpi_create(optim_mpi **out, optim *opt, MPI_Comm comm, int stage, optim_error *err)
{
    return optim_mpi_create_with(out, opt, comm, stage, NULL, err);
}

static int dm_create_fail(optim_mpi *d, int rc, optim_error *err)
{
    if (err) {
        err->code = rc;
        snprintf(err->message, sizeof err->message, "%s", d->err.message);
    }
    optim_mpi_free(d);
    return rc;
}

int optim_mpi_create_with(optim_mpi **out, optim *opt, MPI_Comm comm, int stage, const optim_mpi_options *options,
                          optim_error *err)
{
    static const char fn[] = "optim_mpi_create";
    optim_mpi *d;
    optim_mpi_options opts;
    optim *local = NULL;
    int rc, initialized = 0;
    size_t bucket_elems;
    if (out) *out = NULL;
    MPI_Initialized(&initialized);
    if (!initialized) {
        if (err) {
            err->code = OPTIM_ESTATE;
            snprintf(err->message, sizeof err->message, "%s: MPI is not initialized (call MPI_Init first)", fn);
        }
        return OPTIM_ESTATE;
    }
    if (comm == MPI_COMM_NULL) {
        if (err) {
            err->code = OPTIM_EINVAL;
            snprintf(err->message, sizeof err->message, "%s: comm is MPI_COMM_NULL", fn);
        }
        return OPTIM_EINVAL;
    }
    d = (optim_mpi *)calloc(1, sizeof *d);
    if (!d) {
        /* Cannot take part in the collectives below: the others will fail with a timeout. */
        if (err) {
            err->code = OPTIM_ENOMEM;
            snprintf(err->message, sizeof err->message, "%s: out of memory", fn);
        }
        return OPTIM_ENOMEM;
    }
    d->comm = d->ctl = MPI_COMM_NULL;
    d->stage = stage;
    if (options)
        opts = *options;
    else
        optim_mpi_options_init(&opts);
    d->timeout = opts.timeout;
    /* Collective from here: every rank duplicates, then agrees on its arguments. */
    rc = MPI_Comm_dup(comm, &d->comm);
    if (rc != MPI_SUCCESS) return dm_create_fail(d, dm_mpi_fail(d, rc, "optim_mpi_create: MPI_Comm_dup"), err);
    rc = MPI_Comm_dup(comm, &d->ctl);
    if (rc != MPI_SUCCESS) return dm_create_fail(d, dm_mpi_fail(d, rc, "optim_mpi_create: MPI_Comm_dup"), err);
    MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(d->ctl, MPI_ERRORS_RETURN);
    MPI_Comm_rank(d->comm, &d->rank);
    MPI_Comm_size(d->comm, &d->K);

    rc = OPTIM_OK;
    if (!out)
        rc = dm_fail(d, OPTIM_ENULL, "%s: out is NULL", fn);
    else if (!opt)
        rc = dm_fail(d, OPTIM_ENULL, "%s: opt is NULL", fn);
    else if (stage < 0 || stage > 2)
        rc = dm_fail(d, OPTIM_EINVAL, "%s: stage = %d (0: data parallel, 1: ZeRO-1, 2: ZeRO-2)", fn, stage);
    else if (!(opts.timeout >= 0) || isinf(opts.timeout))
        rc = dm_fail(d, OPTIM_EINVAL, "%s: timeout = %g must be a finite number of seconds >= 0", fn, opts.timeout);
    else if (opts.bucket_bytes > 0 && opts.bucket_bytes < sizeof(float))
        rc = dm_fail(d, OPTIM_EINVAL, "%s: bucket_bytes = %zu holds no float", fn, opts.bucket_bytes);
    else
        rc = dm_copy_model(d, opt);
    if (rc == OPTIM_OK) {
        /* Buckets hold bucket_bytes of gradients of the widest gradient type
         * of the model (float32: bucket_bytes / 4 elements, as always). */
        size_t gmax = 1, amax = 1, i;
        for (i = 0; i < d->nparams; i++) {
            size_t gs = optim_dtype_size(d->gdt[i]), ps = optim_dtype_size(d->pdt[i]);
            if (gs > gmax) gmax = gs;
            if (gs > amax) amax = gs;
            if (ps > amax) amax = ps;
        }
        if (opts.bucket_bytes) {
            bucket_elems = opts.bucket_bytes / gmax;
        } else {
            /* 16 MiB, or 128 KiB per rank when that is more: each rank's slice of
             * a bucket is one message, which must be long enough for bandwidth,
             * not latency, to set its time (docs/DISTRIBUTED.md, "Bucket size"). */
            bucket_elems = OPTIM_MPI_BUCKET_BYTES_DEFAULT / gmax;
            if ((size_t)d->K * (OPTIM_MPI_SLICE_BYTES_MIN / gmax) > bucket_elems)
                bucket_elems = (size_t)d->K * (OPTIM_MPI_SLICE_BYTES_MIN / gmax);
        }
        if (bucket_elems < DM_RBLOCK * (size_t)d->K) bucket_elems = DM_RBLOCK * (size_t)d->K;
        if (bucket_elems > DM_MAX_BUCKET_BYTES / amax) bucket_elems = DM_MAX_BUCKET_BYTES / amax;
        d->bucket_elems = bucket_elems;
        if ((size_t)d->K * DM_RBLOCK > DM_MAX_BUCKET_BYTES / amax)
            rc = dm_fail(d, OPTIM_EUNSUPPORTED,
                         "%s: %d ranks: a bucket of one block per rank of %zu-byte elements passes MPI's counts", fn,
                         d->K, amax);
    }
    if (rc != OPTIM_OK && strncmp(d->err.message, fn, strlen(fn)) != 0) {
        char tmp[OPTIM_ERRMSG_MAX];
        snprintf(tmp, sizeof tmp, "%s", d->err.message);
        dm_fail(d, rc, "%s: %s", fn, tmp);
    }
    rc = dm_agree(d, rc, 0, fn);
    if (rc != OPTIM_OK) return dm_create_fail(d, rc, err);

    /* The ranks must describe the same optimizer. */
    rc = dm_config_check(d, opt, 1, fn);
    if (rc != OPTIM_OK) return dm_create_fail(d, rc, err);

    {
        size_t *n = (size_t *)malloc(d->nparams * sizeof *n), i;
        if (!n) {
            rc = dm_fail(d, OPTIM_ENOMEM, "%s: out of memory", fn);
        } else {
            size_t *gsz = (size_t *)malloc(2 * d->nparams * sizeof *gsz), *psz = gsz ? gsz + d->nparams : NULL;
            for (i = 0; i < d->nparams; i++) {
                optim_param_info info;
                optim_param_get_info(opt, i, &info);
                n[i] = info.n;
                if (gsz) {
                    gsz[i] = optim_dtype_size(d->gdt[i]);
                    psz[i] = optim_dtype_size(d->pdt[i]);
                }
            }
            rc = gsz ? dm_layout_build(&d->L, d->K, d->nparams, n, gsz, psz, d->bucket_elems) : OPTIM_ENOMEM;
            free(gsz);
            if (rc != OPTIM_OK) dm_fail(d, rc, "%s: out of memory for the layout", fn);
            free(n);
        }
    }
    if (rc == OPTIM_OK) rc = dm_alloc_layout(d);
    if (rc == OPTIM_OK) rc = dm_slots_grow(d, d->L.nbuckets < DM_SLOTS ? d->L.nbuckets : DM_SLOTS);
    if (rc == OPTIM_OK) rc = dm_local_build(d, opt, &local);
    if (rc == OPTIM_OK) rc = dm_local_copy_state(d, opt, local);
    if (rc == OPTIM_OK) {
        optim_sam *none;
        rc = dm_local_prepare(d, local, &none);
        dm_local_commit(d, local, none);
    } else {
        optim_free(local);
    }
    rc = dm_agree(d, rc, 0, fn);
    if (rc != OPTIM_OK) return dm_create_fail(d, rc, err);
    rc = dm_bcast_params(d);
    if (rc == OPTIM_OK) rc = dm_bcast_masters(d, opt);
    if (rc != OPTIM_OK) return dm_create_fail(d, rc, err);
    memset(&d->stats, 0, sizeof d->stats);
    dm_ok(d);
    if (err) {
        err->code = OPTIM_OK;
        err->message[0] = '\0';
    }
    *out = d;
    return OPTIM_OK;
}

void optim_mpi_free(optim_mpi *d)
{
    size_t i;
    int finalized = 0;
    if (!d) return;
    optim_sam_free(d->sam);
    optim_free(d->local);
    for (i = 0; i < d->nparams; i++) {
        if (d->names) free(d->names[i]);
        if (d->dims) free(d->dims[i]);
    }
    free(d->names);
    free(d->group);
    free(d->p);
    free(d->g);
    free(d->pdt);
    free(d->gdt);
    free(d->sdt);
    free(d->flags);
    free(d->piece_of);
    free(d->shape_given);
    free(d->ndim);
    free(d->dims);
    free(d->ready);
    dm_layout_free(&d->L);
    free(d->pieces);
    free(d->goff);
    free(d->gbuf);
    for (i = 0; i < d->nslots; i++) {
        free(d->slots[i].send);
        free(d->slots[i].recv);
    }
    free(d->slots);
    free(d->remaining);
    free(d->bucket_slot);
    free(d->started);
    free(d->ag_req);
    free(d->rs_cnt);
    free(d->rs_dsp);
    free(d->hk_cnt);
    free(d->hk_dsp);
    free(d->hk_gidx);
    free(d->hk_send);
    free(d->hk_recv);
    free(d->hk_part);
    free(d->hk_bad);
    MPI_Finalized(&finalized);
    /* A broken communicator may still have collectives pending: leave it to MPI_Abort. */
    if (!finalized && !d->broken) {
        if (d->comm != MPI_COMM_NULL) MPI_Comm_free(&d->comm);
        if (d->ctl != MPI_COMM_NULL) MPI_Comm_free(&d->ctl);
    }
    free(d);
}

const char *optim_mpi_errmsg(const optim_mpi *d)
{
    if (!d) return "optim_mpi: the handle is NULL (optim_mpi_create failed or was not called)";
    return d->err.message;
}

int optim_mpi_errcode(const optim_mpi *d)
{
    return d ? d->err.code : OPTIM_ENULL;
}

/* ---- Pointers, facts ------------------------------------------------------------------- */

/* The float32 setters take float32 parameters with float32 gradients only, as the core's do. */
static int dm_check_f32(optim_mpi *d, size_t i, const char *fn, const char *alt)
{
    if (d->pdt[i] != OPTIM_FLOAT32 || d->gdt[i] != OPTIM_FLOAT32)
        return dm_fail(d, OPTIM_EINVAL, "%s: param %zu '%s' has %s memory and %s gradients, not float32: use %s", fn,
                       i, d->names[i], optim_dtype_name(d->pdt[i]), optim_dtype_name(d->gdt[i]), alt);
    return OPTIM_OK;
}

static int dm_set_grad(optim_mpi *d, size_t i, const void *grad, int f32, const char *fn)
{
    if (!d) return OPTIM_ENULL;
    if (i >= d->nparams) return dm_fail(d, OPTIM_ERANGE, "%s: param %zu does not exist (%zu params)", fn, i, d->nparams);
    if (f32 && dm_check_f32(d, i, fn, "optim_mpi_set_grad_data") != OPTIM_OK) return d->err.code;
    if (d->in_reduction && d->ready[i])
        return dm_fail(d, OPTIM_ESTATE, "%s: param %zu '%s' was handed over for this step", fn, i, d->names[i]);
    d->g[i] = (const unsigned char *)grad;
    return dm_ok(d);
}

int optim_mpi_set_grad(optim_mpi *d, size_t i, const float *grad)
{
    return dm_set_grad(d, i, grad, 1, "optim_mpi_set_grad");
}

int optim_mpi_set_grad_data(optim_mpi *d, size_t i, const void *grad)
{
    return dm_set_grad(d, i, grad, 0, "optim_mpi_set_grad_data");
}

static int dm_set_param(optim_mpi *d, size_t i, void *param, const void *grad, int f32, const char *fn)
{
    size_t j;
    unsigned char *pm = (unsigned char *)param;
    if (!d) return OPTIM_ENULL;
    if (i >= d->nparams) return dm_fail(d, OPTIM_ERANGE, "%s: param %zu does not exist (%zu params)", fn, i, d->nparams);
    if (f32 && dm_check_f32(d, i, fn, "optim_mpi_set_param_data") != OPTIM_OK) return d->err.code;
    if (d->in_reduction || (d->sam && optim_sam_is_perturbed(d->sam)))
        return dm_fail(d, OPTIM_ESTATE, "%s: only between steps", fn);
    if (!param && d->L.n[i] > 0)
        return dm_fail(d, OPTIM_ENULL, "%s: param is NULL for param %zu '%s'", fn, i, d->names[i]);
    for (j = 0; j < d->npieces; j++) {
        const osc_piece *q = &d->pieces[j];
        if (q->param != i) continue;
        if (optim_set_param_data(d->local, j, pm ? pm + q->a * d->L.psz[i] : NULL, d->gbuf + d->goff[j]) != OPTIM_OK)
            return dm_fail(d, optim_errcode(d->local), "%s: %s", fn, optim_errmsg(d->local));
    }
    d->p[i] = pm;
    d->g[i] = (const unsigned char *)grad;
    return dm_ok(d);
}

int optim_mpi_set_param_ptrs(optim_mpi *d, size_t i, float *param, const float *grad)
{
    return dm_set_param(d, i, param, grad, 1, "optim_mpi_set_param_ptrs");
}

int optim_mpi_set_param_data(optim_mpi *d, size_t i, void *param, const void *grad)
{
    return dm_set_param(d, i, param, grad, 0, "optim_mpi_set_param_data");
}

int optim_mpi_rank(const optim_mpi *d)
{
    return d ? d->rank : -1;
}

int optim_mpi_size(const optim_mpi *d)
{
    return d ? d->K : 0;
}

int optim_mpi_stage(const optim_mpi *d)
{
    return d ? d->stage : -1;
}

optim *optim_mpi_local(const optim_mpi *d)
{
    return d ? d->local : NULL;
}

size_t optim_mpi_state_bytes(const optim_mpi *d)
{
    size_t i, bytes = 0;
    int s;
    if (!d) return 0;
    for (i = 0; i < d->npieces; i++)
        for (s = 0; s < optim_rule_slot_count(d->rule); s++) {
            void *data = NULL;
            optim_dtype dt = OPTIM_FLOAT32;
            if (optim_state_slot_data(d->local, i, s, &data, &dt, NULL) == OPTIM_OK && data)
                bytes += osc_slot_bytes(d->pieces[i].b - d->pieces[i].a, dt);
        }
    for (i = 0; i < d->npieces; i++)
        if (d->pieces[i].param != OSC_NO_PARAM && (d->flags[d->pieces[i].param] & OPTIM_PARAM_MASTER))
            bytes += (d->pieces[i].b - d->pieces[i].a) * sizeof(float); /* the slice's fp32 master */
    return bytes;
}

size_t optim_mpi_shard_elements(const optim_mpi *d)
{
    size_t first = 0, count = 0;
    optim_mpi_shard(d, &first, &count);
    return count;
}

int optim_mpi_shard(const optim_mpi *d, size_t *first, size_t *count)
{
    if (!d || !first || !count) return OPTIM_ENULL;
    if (d->stage == 0) {
        *first = 0;
        *count = d->L.total;
    } else {
        *first = d->L.shard[d->rank];
        *count = d->L.shard[d->rank + 1] - d->L.shard[d->rank];
    }
    return OPTIM_OK;
}

size_t optim_mpi_bucket_count(const optim_mpi *d)
{
    return d ? d->L.nbuckets : 0;
}

int64_t optim_mpi_step_count(const optim_mpi *d)
{
    return d ? optim_step_count(d->local) : 0;
}

int optim_mpi_last_step_skipped(const optim_mpi *d)
{
    return d ? optim_last_step_skipped(d->local) : 0;
}

int64_t optim_mpi_skipped_steps(const optim_mpi *d)
{
    return d ? optim_skipped_steps(d->local) : 0;
}

double optim_mpi_last_grad_norm(const optim_mpi *d)
{
    return d ? optim_last_grad_norm(d->local) : NAN;
}

double optim_mpi_sam_last_grad_norm(const optim_mpi *d)
{
    return d && d->sam ? optim_sam_last_grad_norm(d->sam) : NAN;
}

int optim_mpi_set_timeout(optim_mpi *d, double seconds)
{
    if (!d) return OPTIM_ENULL;
    if (!(seconds >= 0) || isinf(seconds))
        return dm_fail(d, OPTIM_EINVAL, "optim_mpi_set_timeout: seconds = %g must be finite and >= 0", seconds);
    d->timeout = seconds;
    return dm_ok(d);
}

int optim_mpi_get_stats(const optim_mpi *d, optim_mpi_stats *stats)
{
    if (!d || !stats) return OPTIM_ENULL;
    *stats = d->stats;
    return OPTIM_OK;
}

void optim_mpi_reset_stats(optim_mpi *d)
{
    if (d) memset(&d->stats, 0, sizeof d->stats);
}
