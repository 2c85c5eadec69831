/* mpi_step.c: a step of the optim_mpi handle: the bucketed reduction of the
 * gradients (reduce-scatter by all-to-all, summed in rank order), the step of
 * the local optimizer, the all-gather of the parameters, stage 2's hand-over,
 * SAM. Layout and reduction: see mpi_internal.h. */
#include "mpi_internal.h"
#include "kernels/convert.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- The reduction ------------------------------------------------------------------ */

/* Bucket k's first element, and its length in elements. */
static size_t dm_bucket_x0(const optim_mpi *d, size_t k)
{
    return DM_CUT(&d->L, k, 0);
}

static size_t dm_bucket_len(const optim_mpi *d, size_t k)
{
    return DM_CUT(&d->L, k, d->K) - DM_CUT(&d->L, k, 0);
}

/* Byte position in the flattened gradient (parameter) bytes of bucket k's
 * cut r: the start of rank r's slice. */
static size_t dm_gcut(const optim_mpi *d, size_t k, int r)
{
    return dm_gpos(&d->L, DM_BCUT(&d->L, k, r));
}

static size_t dm_pcut(const optim_mpi *d, size_t k, int r)
{
    return dm_ppos(&d->L, DM_BCUT(&d->L, k, r));
}

/* First and last bucket holding elements of parameter i (n > 0). */
static void dm_param_buckets(const optim_mpi *d, size_t i, size_t *k0, size_t *k1)
{
    size_t lo = 0, hi = d->L.nbuckets, x = d->L.off[i], y = d->L.off[i] + d->L.n[i] - 1;
    while (lo < hi) { /* first bucket whose end is past x */
        size_t mid = lo + (hi - lo) / 2;
        if (DM_CUT(&d->L, mid, d->K) <= x)
            lo = mid + 1;
        else
            hi = mid;
    }
    *k0 = lo;
    hi = d->L.nbuckets;
    while (lo < hi) { /* first bucket whose end is past y */
        size_t mid = lo + (hi - lo) / 2;
        if (DM_CUT(&d->L, mid, d->K) <= y)
            lo = mid + 1;
        else
            hi = mid;
    }
    *k1 = lo;
}

static void dm_red_begin(optim_mpi *d)
{
    size_t k;
    if (d->in_reduction) return;
    for (k = 0; k < d->L.nbuckets; k++) {
        d->remaining[k] = dm_bucket_len(d, k);
        d->bucket_slot[k] = -1;
        d->started[k] = 0;
    }
    memset(d->ready, 0, d->nparams);
    d->next_start = d->stage == 2 ? (long)d->L.nbuckets - 1 : 0;
    d->in_reduction = 1;
    d->poisoned = 0;
}

/* Copy parameter i's gradient elements that fall in bucket k into dst (the
 * bucket's staging, whose byte 0 is the bucket's first gradient byte). */
static void dm_pack_grad(const optim_mpi *d, size_t i, size_t k, unsigned char *dst)
{
    const dm_layout *L = &d->L;
    size_t x0 = dm_bucket_x0(d, k), x1 = x0 + dm_bucket_len(d, k), g0 = dm_gcut(d, k, 0), sz = L->gsz[i];
    size_t lo = L->off[i] > x0 ? L->off[i] : x0, hi = L->off[i] + L->n[i] < x1 ? L->off[i] + L->n[i] : x1;
    if (lo >= hi) return;
    if (d->g[i])
        memcpy(dst + (L->gb[i] + (lo - L->off[i]) * sz - g0), d->g[i] + (lo - L->off[i]) * sz, (hi - lo) * sz);
    else /* a failed hand-over: the step fails anyway */
        memset(dst + (L->gb[i] + (lo - L->off[i]) * sz - g0), 0, (hi - lo) * sz);
}

/* Round a double once to bfloat16 / float16, to nearest even: round to
 * float by rounding to odd (truncate, then set the last bit if inexact),
 * which float's 24 bits make exact for the final rounding to 8 or 11 bits,
 * then the core's float -> half conversion (round to nearest even). NaN
 * becomes the type's quiet NaN, as the core's conversions make it. */
static float dm_round_odd_f32(double x)
{
    float t = (float)x;
    uint32_t u;
    if (x != x || (double)t == x) return t;
    if (fabs((double)t) > fabs(x)) t = nextafterf(t, 0.0f);
    memcpy(&u, &t, sizeof u);
    u |= 1u;
    memcpy(&t, &u, sizeof t);
    return t;
}

/* Element j of an array of type dt, as a double (exact for every type). */
static double dm_load(const unsigned char *src, size_t j, optim_dtype dt)
{
    switch (dt) {
    case OPTIM_FLOAT64: {
        double v;
        memcpy(&v, src + 8 * j, sizeof v);
        return v;
    }
    case OPTIM_BFLOAT16: {
        uint16_t h;
        memcpy(&h, src + 2 * j, sizeof h);
        return (double)optim__bf16_to_f32(h);
    }
    case OPTIM_FLOAT16: {
        uint16_t h;
        memcpy(&h, src + 2 * j, sizeof h);
        return (double)optim__f16_to_f32(h);
    }
    default: {
        float v;
        memcpy(&v, src + 4 * j, sizeof v);
        return (double)v;
    }
    }
}

/* Store v into element j of an array of type dt, rounded once to nearest even. */
static void dm_store(unsigned char *dst, size_t j, optim_dtype dt, double v)
{
    switch (dt) {
    case OPTIM_FLOAT64:
        memcpy(dst + 8 * j, &v, sizeof v);
        break;
    case OPTIM_BFLOAT16: {
        uint16_t h = optim__f32_to_bf16(dm_round_odd_f32(v));
        memcpy(dst + 2 * j, &h, sizeof h);
        break;
    }
    case OPTIM_FLOAT16: {
        uint16_t h = optim__f32_to_f16(dm_round_odd_f32(v));
        memcpy(dst + 2 * j, &h, sizeof h);
        break;
    }
    default: {
        float f = (float)v;
        memcpy(dst + 4 * j, &f, sizeof f);
        break;
    }
    }
}

/* Sum m elements of type dt of the K copies of a slice (the copy of rank q
 * starts at recv + q * stride bytes; the elements at byte j0 of each), in
 * double, in rank order, divide by K and round once into dst:
 * avg = (T)((g_0 + g_1 + ... + g_{K-1}) / K), T the gradient's type. */
static void dm_sum_slices(const optim_mpi *d, const unsigned char *recv, size_t stride, size_t j0, size_t m,
                          optim_dtype dt, unsigned char *dst)
{
    enum { CH = 512 };
    double acc[CH];
    const double inv = (double)d->K;
    size_t c0, j;
    int q;
    if (dt == OPTIM_FLOAT32) { /* the common case, without the per-element switch */
        for (c0 = 0; c0 < m; c0 += CH) {
            size_t c = m - c0 < CH ? m - c0 : CH;
            const float *src = (const float *)(const void *)(recv + j0) + c0;
            float *out = (float *)(void *)dst + c0;
            for (j = 0; j < c; j++) acc[j] = (double)src[j];
            for (q = 1; q < d->K; q++) {
                src = (const float *)(const void *)(recv + (size_t)q * stride + j0) + c0;
                for (j = 0; j < c; j++) acc[j] += (double)src[j];
            }
            for (j = 0; j < c; j++) out[j] = (float)(acc[j] / inv);
        }
        return;
    }
    for (c0 = 0; c0 < m; c0 += CH) {
        size_t c = m - c0 < CH ? m - c0 : CH;
        for (j = 0; j < c; j++) acc[j] = dm_load(recv + j0, c0 + j, dt);
        for (q = 1; q < d->K; q++)
            for (j = 0; j < c; j++) acc[j] += dm_load(recv + (size_t)q * stride + j0, c0 + j, dt);
        for (j = 0; j < c; j++) dm_store(dst, c0 + j, dt, acc[j] / inv);
    }
}

/* The averaged slice of bucket k (this rank's elements [me0, me1) of the
 * flattened vector, in recv K times) into this rank's pieces, parameter by
 * parameter, each in its gradient type. */
static void dm_sum_into_pieces(const optim_mpi *d, size_t k, const unsigned char *recv)
{
    const dm_layout *L = &d->L;
    size_t me0 = DM_CUT(L, k, d->rank), me1 = DM_CUT(L, k, d->rank + 1), i;
    size_t b0 = DM_BCUT(L, k, d->rank), gm0 = dm_gcut(d, k, d->rank), stride = dm_gcut(d, k, d->rank + 1) - gm0;
    if (me0 >= me1) return;
    for (i = L->bparam[b0]; i < d->nparams && L->off[i] < me1; i++) {
        size_t a = L->off[i] > me0 ? L->off[i] : me0, b = L->off[i] + L->n[i] < me1 ? L->off[i] + L->n[i] : me1;
        size_t j = d->piece_of[i], sz = L->gsz[i];
        if (a >= b || j == (size_t)-1) continue;
        dm_sum_slices(d, recv, stride, L->gb[i] + (a - L->off[i]) * sz - gm0, b - a, d->gdt[i],
                      d->gbuf + d->goff[j] + (a - L->off[i] - d->pieces[j].a) * sz);
    }
}

/* Unpack a gathered bucket of parameters (recv: the bucket's parameter
 * bytes) into the parameters (but this rank's slice, already there). */
static void dm_unpack_params(optim_mpi *d, size_t k, const unsigned char *src)
{
    const dm_layout *L = &d->L;
    size_t x0 = dm_bucket_x0(d, k), x1 = x0 + dm_bucket_len(d, k), p0 = dm_pcut(d, k, 0);
    size_t me0 = DM_CUT(L, k, d->rank), me1 = DM_CUT(L, k, d->rank + 1);
    size_t i;
    for (i = L->bparam[DM_BCUT(L, k, 0)]; i < d->nparams && L->off[i] < x1; i++) {
        size_t lo = L->off[i] > x0 ? L->off[i] : x0, hi = L->off[i] + L->n[i] < x1 ? L->off[i] + L->n[i] : x1;
        size_t a, b, sz = L->psz[i];
        if (lo >= hi) continue;
        /* [lo, hi) minus [me0, me1). */
        a = lo;
        b = hi < me0 ? hi : me0;
        if (a < b)
            memcpy(d->p[i] + (a - L->off[i]) * sz, src + (L->pb[i] + (a - L->off[i]) * sz - p0), (b - a) * sz);
        a = lo > me1 ? lo : me1;
        b = hi;
        if (a < b)
            memcpy(d->p[i] + (a - L->off[i]) * sz, src + (L->pb[i] + (a - L->off[i]) * sz - p0), (b - a) * sz);
    }
}

static int dm_finish_slot(optim_mpi *d, dm_slot *s)
{
    size_t k = s->bucket;
    char what[96];
    int rc;
    snprintf(what, sizeof what, "the %s of bucket %zu", s->state == DM_SLOT_REDUCE ? "reduce-scatter" : "all-gather",
             k);
    rc = dm_wait(d, &s->req, what);
    if (rc != OPTIM_OK) return rc;
    if (s->state == DM_SLOT_REDUCE) {
        dm_sum_into_pieces(d, k, s->recv);
        if (d->stage == 0) {
            /* Every rank needs every averaged gradient: all-gather the bucket in place
             * (stage 0's buffer holds the flattened gradient bytes). */
            size_t g0 = dm_gcut(d, k, 0);
            int mrc = MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_BYTE, d->gbuf + g0, d->L.gcnt + k * (size_t)d->K,
                                      d->L.gdsp + k * (size_t)d->K, MPI_BYTE, d->comm, &d->ag_req[k]);
            if (mrc != MPI_SUCCESS) return dm_mpi_fail(d, mrc, "the all-gather of averaged gradients");
            d->stats.gather_bytes += (dm_gcut(d, k, d->K) - g0) - (dm_gcut(d, k, d->rank + 1) - dm_gcut(d, k, d->rank));
        }
    } else {
        dm_unpack_params(d, k, s->recv);
    }
    d->bucket_slot[k] = -1;
    s->state = DM_SLOT_FREE;
    return OPTIM_OK;
}

/* A free slot for bucket k: finish the oldest started one if none is free;
 * grow the pool if every slot holds a bucket still being filled. */
static int dm_slot_for(optim_mpi *d, size_t k, dm_slot **out)
{
    size_t i, best = d->nslots;
    int rc;
    for (i = 0; i < d->nslots; i++)
        if (d->slots[i].state == DM_SLOT_FREE) break;
    if (i == d->nslots) {
        for (i = 0; i < d->nslots; i++)
            if ((d->slots[i].state == DM_SLOT_REDUCE || d->slots[i].state == DM_SLOT_GATHER) &&
                (best == d->nslots || d->slots[i].seq < d->slots[best].seq))
                best = i;
        if (best < d->nslots) {
            rc = dm_finish_slot(d, &d->slots[best]);
            if (rc != OPTIM_OK) return rc;
            i = best;
        } else {
            rc = dm_slots_grow(d, d->nslots + 1);
            if (rc != OPTIM_OK) return rc;
            i = d->nslots - 1;
        }
    }
    d->slots[i].state = DM_SLOT_FILLING;
    d->slots[i].bucket = k;
    d->bucket_slot[k] = (long)i;
    *out = &d->slots[i];
    return OPTIM_OK;
}

/* Start bucket k's reduce-scatter: pack what was not handed over, post the all-to-all. */
static int dm_start_reduce(optim_mpi *d, size_t k)
{
    dm_slot *s;
    const unsigned char *send;
    size_t x0 = dm_bucket_x0(d, k), x1 = x0 + dm_bucket_len(d, k), i;
    size_t one = d->L.single[k];
    int rc;
    if (d->bucket_slot[k] >= 0) {
        s = &d->slots[d->bucket_slot[k]];
    } else {
        rc = dm_slot_for(d, k, &s);
        if (rc != OPTIM_OK) return rc;
    }
    if (one != (size_t)-1 && !d->ready[one] && d->g[one]) {
        /* The bucket lies in one gradient that was not handed over: send from it directly. */
        send = d->g[one] + (x0 - d->L.off[one]) * d->L.gsz[one];
    } else {
        for (i = d->L.bparam[DM_BCUT(&d->L, k, 0)]; i < d->nparams && d->L.off[i] < x1; i++)
            if (!d->ready[i]) dm_pack_grad(d, i, k, s->send);
        send = s->send;
    }
    d->remaining[k] = 0;
    rc = MPI_Ialltoallv(send, d->L.gcnt + k * (size_t)d->K, d->L.gdsp + k * (size_t)d->K, MPI_BYTE, s->recv,
                        d->rs_cnt + k * (size_t)d->K, d->rs_dsp + k * (size_t)d->K, MPI_BYTE, d->comm, &s->req);
    if (rc != MPI_SUCCESS) return dm_mpi_fail(d, rc, "the reduce-scatter of a gradient bucket");
    s->state = DM_SLOT_REDUCE;
    s->seq = ++d->seq;
    d->started[k] = 1;
    d->stats.reduce_bytes += (uint64_t)(d->K - 1) * (dm_gcut(d, k, d->rank + 1) - dm_gcut(d, k, d->rank));
    return OPTIM_OK;
}

/* Start, in the fixed order, every bucket that is complete. */
static int dm_try_start(optim_mpi *d)
{
    while (d->next_start >= 0 && (size_t)d->next_start < d->L.nbuckets && d->remaining[d->next_start] == 0) {
        int rc = dm_start_reduce(d, (size_t)d->next_start);
        if (rc != OPTIM_OK) return rc;
        d->next_start += d->stage == 2 ? -1 : 1;
    }
    return OPTIM_OK;
}

/* Let MPI progress the collectives on the wire (it only moves data inside MPI calls). */
static int dm_progress(optim_mpi *d)
{
    size_t i;
    for (i = 0; i < d->nslots; i++) {
        dm_slot *s = &d->slots[i];
        int flag = 0, rc;
        if (s->state != DM_SLOT_REDUCE) continue;
        rc = MPI_Test(&s->req, &flag, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return dm_mpi_fail(d, rc, "the reduce-scatter of a gradient bucket");
        if (flag) s->req = MPI_REQUEST_NULL; /* dm_wait on a null request returns at once */
    }
    return OPTIM_OK;
}

int optim_mpi_grad_ready(optim_mpi *d, size_t i)
{
    static const char fn[] = "optim_mpi_grad_ready";
    size_t k0, k1, k;
    int rc;
    if (!d) return OPTIM_ENULL;
    if (d->broken) return dm_fail(d, OPTIM_ESTATE, "%s: an earlier communication failure ended this handle", fn);
    if (i >= d->nparams) return dm_fail(d, OPTIM_ERANGE, "%s: param %zu does not exist (%zu params)", fn, i, d->nparams);
    if (d->stage != 2)
        return dm_fail(d, OPTIM_ESTATE,
                       "%s: stage %d reads the gradients at the step; handing them over as they come is stage 2's", fn,
                       d->stage);
    dm_red_begin(d);
    if (d->ready[i])
        return dm_fail(d, OPTIM_ESTATE, "%s: param %zu '%s' was already handed over for this step", fn, i, d->names[i]);
    if (!d->g[i] && d->L.n[i] > 0)
        return dm_fail(d, OPTIM_ENULL, "%s: param %zu '%s' has no gradient (set one with optim_mpi_set_grad)", fn, i,
                       d->names[i]);
    if (d->L.n[i] > 0) {
        dm_param_buckets(d, i, &k0, &k1);
        /* Descending, the order the buckets start in. */
        for (k = k1 + 1; k-- > k0;) {
            dm_slot *s;
            size_t x0 = dm_bucket_x0(d, k), x1 = x0 + dm_bucket_len(d, k);
            size_t lo = d->L.off[i] > x0 ? d->L.off[i] : x0;
            size_t hi = d->L.off[i] + d->L.n[i] < x1 ? d->L.off[i] + d->L.n[i] : x1;
            if (d->bucket_slot[k] >= 0) {
                s = &d->slots[d->bucket_slot[k]];
            } else {
                rc = dm_slot_for(d, k, &s);
                if (rc != OPTIM_OK) {
                    d->poisoned = 1; /* the step fails on every rank */
                    return rc;
                }
            }
            dm_pack_grad(d, i, k, s->send);
            d->remaining[k] -= hi - lo;
            if (d->remaining[k] == 0) {
                /* Every part of bucket k is packed (i's included): it may start. */
                d->ready[i] = 1;
                rc = dm_try_start(d);
                if (rc != OPTIM_OK) {
                    d->poisoned = 1;
                    return rc;
                }
            }
        }
    }
    d->ready[i] = 1;
    rc = dm_try_start(d);
    if (rc == OPTIM_OK) rc = dm_progress(d);
    if (rc != OPTIM_OK) return rc;
    return dm_ok(d);
}

/* Start every bucket not started yet, in the fixed order, and finish them all. */
static int dm_reduce_all(optim_mpi *d)
{
    size_t i;
    int rc;
    dm_red_begin(d);
    while (d->next_start >= 0 && (size_t)d->next_start < d->L.nbuckets) {
        rc = dm_start_reduce(d, (size_t)d->next_start);
        if (rc != OPTIM_OK) return rc;
        d->next_start += d->stage == 2 ? -1 : 1;
    }
    for (;;) {
        size_t best = d->nslots;
        for (i = 0; i < d->nslots; i++)
            if (d->slots[i].state == DM_SLOT_REDUCE && (best == d->nslots || d->slots[i].seq < d->slots[best].seq))
                best = i;
        if (best == d->nslots) break;
        rc = dm_finish_slot(d, &d->slots[best]);
        if (rc != OPTIM_OK) return rc;
    }
    if (d->stage == 0)
        for (i = 0; i < d->L.nbuckets; i++) {
            rc = dm_wait(d, &d->ag_req[i], "the all-gather of averaged gradients");
            if (rc != OPTIM_OK) return rc;
        }
    d->in_reduction = 0;
    d->stats.reductions++;
    return OPTIM_OK;
}

/* The averaged gradients of a step, agreed. Every rank first completes the
 * whole reduction, even with a local failure (a missing gradient counts as
 * zeros), and agrees only after: a rank may have buckets on the wire already
 * (stage 2's hand-over), which the others must match, and a rank that waits
 * for a bucket (for a free slot) waits only for the oldest one it started,
 * which every other rank starts before any agreement. Then the agreement
 * decides whether the step goes on. */
static int dm_reduce(optim_mpi *d, const char *fn)
{
    int rc = OPTIM_OK, rrc;
    size_t i;
    if (optim_param_count(d->local) != d->npieces)
        rc = dm_fail(d, OPTIM_ESTATE, "%s: parameters were added to the local optimizer (it has %zu, its slices %zu)",
                     fn, optim_param_count(d->local), d->npieces);
    if (rc == OPTIM_OK && d->in_reduction && d->poisoned)
        rc = dm_fail(d, OPTIM_ENOMEM, "%s: a hand-over (optim_mpi_grad_ready) of this step failed", fn);
    for (i = 0; i < d->nparams && rc == OPTIM_OK; i++)
        if (!d->g[i] && !(d->in_reduction && d->ready[i]) && d->L.n[i] > 0)
            rc = dm_fail(d, OPTIM_ENULL, "%s: param %zu '%s' has no gradient", fn, i, d->names[i]);
    if (rc != OPTIM_OK) {
        optim_error keep = d->err;
        rrc = dm_reduce_all(d);
        if (rrc != OPTIM_OK) return rrc; /* communication failed: that is the news now */
        d->err = keep;
    } else {
        rrc = dm_reduce_all(d);
        if (rrc != OPTIM_OK) return rrc;
    }
    return dm_agree(d, rc, dm_config_hash(d->local), fn);
}

/* Stages 1 and 2: every rank's slices of the parameters to every rank, in
 * the parameters' own types. */
static int dm_gather_params(optim_mpi *d)
{
    const dm_layout *L = &d->L;
    size_t k, i;
    int rc;
    for (k = 0; k < L->nbuckets; k++) {
        size_t one = L->single[k], x0 = dm_bucket_x0(d, k), p0 = dm_pcut(d, k, 0);
        size_t me0 = DM_CUT(L, k, d->rank), me1 = DM_CUT(L, k, d->rank + 1);
        const int *cnt = L->pcnt + k * (size_t)d->K, *dsp = L->pdsp + k * (size_t)d->K;
        d->stats.gather_bytes += (dm_pcut(d, k, d->K) - p0) - (dm_pcut(d, k, d->rank + 1) - dm_pcut(d, k, d->rank));
        if (one != (size_t)-1) {
            rc = MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_BYTE, d->p[one] + (x0 - L->off[one]) * L->psz[one], cnt, dsp,
                                 MPI_BYTE, d->comm, &d->ag_req[k]);
            if (rc != MPI_SUCCESS) return dm_mpi_fail(d, rc, "the all-gather of the parameters");
        } else {
            dm_slot *s;
            size_t x1 = x0 + dm_bucket_len(d, k);
            rc = dm_slot_for(d, k, &s);
            if (rc != OPTIM_OK) return rc;
            /* This rank's slice into its place in the receive buffer; gathered in place. */
            for (i = L->bparam[DM_BCUT(L, k, 0)]; i < d->nparams && L->off[i] < x1; i++) {
                size_t lo = L->off[i] > me0 ? L->off[i] : me0, sz = L->psz[i];
                size_t hi = L->off[i] + L->n[i] < me1 ? L->off[i] + L->n[i] : me1;
                if (lo < hi)
                    memcpy(s->recv + (L->pb[i] + (lo - L->off[i]) * sz - p0), d->p[i] + (lo - L->off[i]) * sz,
                           (hi - lo) * sz);
            }
            rc = MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_BYTE, s->recv, cnt, dsp, MPI_BYTE, d->comm, &s->req);
            if (rc != MPI_SUCCESS) return dm_mpi_fail(d, rc, "the all-gather of the parameters");
            s->state = DM_SLOT_GATHER;
            s->seq = ++d->seq;
        }
    }
    for (i = 0; i < d->nslots; i++) {
        size_t best = d->nslots, j;
        for (j = 0; j < d->nslots; j++)
            if (d->slots[j].state == DM_SLOT_GATHER && (best == d->nslots || d->slots[j].seq < d->slots[best].seq))
                best = j;
        if (best == d->nslots) break;
        rc = dm_finish_slot(d, &d->slots[best]);
        if (rc != OPTIM_OK) return rc;
    }
    for (k = 0; k < d->L.nbuckets; k++) {
        rc = dm_wait(d, &d->ag_req[k], "the all-gather of the parameters");
        if (rc != OPTIM_OK) return rc;
    }
    return OPTIM_OK;
}

/* ---- Steps ---------------------------------------------------------------------------- */

static int dm_usable(optim_mpi *d, const char *fn)
{
    if (d->broken) return dm_fail(d, OPTIM_ESTATE, "%s: an earlier communication failure ended this handle", fn);
    return OPTIM_OK;
}

/* A local call's status, agreed; the message of the local optimizer prefixed by fn. */
static int dm_local_status(optim_mpi *d, int rc, const char *msg, const char *fn)
{
    if (rc != OPTIM_OK && rc != OPTIM_ECOMM) dm_fail(d, rc, "%s: %s", fn, msg);
    return dm_agree(d, rc, 0, fn);
}

int optim_mpi_step(optim_mpi *d)
{
    static const char fn[] = "optim_mpi_step";
    int rc;
    if (!d) return OPTIM_ENULL;
    if ((rc = dm_usable(d, fn)) != OPTIM_OK) return rc;
    if (d->sam && optim_sam_is_perturbed(d->sam)) {
        /* Every rank is in the same SAM state: refusing is collective-safe. */
        return dm_fail(d, OPTIM_ESTATE, "%s: between optim_mpi_sam_first_step and its second step", fn);
    }
    rc = dm_reduce(d, fn);
    if (rc != OPTIM_OK) return rc;
    rc = optim_step(d->local);
    rc = dm_local_status(d, rc, optim_errmsg(d->local), fn);
    if (rc != OPTIM_OK) return rc;
    if (d->stage > 0 && !optim_last_step_skipped(d->local)) {
        rc = dm_gather_params(d);
        if (rc != OPTIM_OK) return rc;
    }
    return dm_ok(d);
}

int optim_mpi_set_sam(optim_mpi *d, double rho, double p, int adaptive, double eta)
{
    static const char fn[] = "optim_mpi_set_sam";
    optim_sam *sam = NULL;
    optim_error e;
    int rc = OPTIM_OK;
    if (!d) return OPTIM_ENULL;
    if ((rc = dm_usable(d, fn)) != OPTIM_OK) return rc;
    if (d->sam && optim_sam_is_perturbed(d->sam))
        rc = dm_fail(d, OPTIM_ESTATE, "%s: between optim_mpi_sam_first_step and its second step", fn);
    else if (!(rho == 0 && p == 0)) {
        rc = optim_sam_create(&sam, d->local, rho, p, adaptive, eta, &e);
        if (rc != OPTIM_OK) dm_fail(d, rc, "%s: %s", fn, e.message);
    }
    rc = dm_agree(d, rc, 0, fn);
    if (rc != OPTIM_OK) {
        optim_sam_free(sam);
        return rc;
    }
    /* The same on every rank. */
    rc = dm_config_check_sam(d, rho, p, adaptive, eta, fn);
    if (rc != OPTIM_OK) {
        optim_sam_free(sam);
        return rc;
    }
    optim_sam_free(d->sam);
    d->sam = sam;
    d->sam_rho = rho;
    d->sam_p = sam ? p : 0;
    d->sam_adaptive = adaptive;
    d->sam_eta = eta;
    return dm_ok(d);
}

int optim_mpi_sam_first_step(optim_mpi *d)
{
    static const char fn[] = "optim_mpi_sam_first_step";
    int rc;
    if (!d) return OPTIM_ENULL;
    if ((rc = dm_usable(d, fn)) != OPTIM_OK) return rc;
    if (!d->sam) return dm_fail(d, OPTIM_ESTATE, "%s: no SAM (optim_mpi_set_sam)", fn);
    rc = dm_reduce(d, fn);
    if (rc != OPTIM_OK) return rc;
    rc = optim_sam_first_step(d->sam);
    rc = dm_local_status(d, rc, optim_sam_errmsg(d->sam), fn);
    if (rc != OPTIM_OK) return rc;
    if (d->stage > 0 && optim_sam_is_perturbed(d->sam)) {
        rc = dm_gather_params(d);
        if (rc != OPTIM_OK) return rc;
    }
    return dm_ok(d);
}

int optim_mpi_sam_second_step(optim_mpi *d)
{
    static const char fn[] = "optim_mpi_sam_second_step";
    int rc;
    if (!d) return OPTIM_ENULL;
    if ((rc = dm_usable(d, fn)) != OPTIM_OK) return rc;
    if (!d->sam) return dm_fail(d, OPTIM_ESTATE, "%s: no SAM (optim_mpi_set_sam)", fn);
    rc = dm_reduce(d, fn);
    if (rc != OPTIM_OK) return rc;
    rc = optim_sam_second_step(d->sam);
    rc = dm_local_status(d, rc, optim_sam_errmsg(d->sam), fn);
    if (rc != OPTIM_OK) return rc;
    if (d->stage > 0 && !optim_last_step_skipped(d->local)) {
        rc = dm_gather_params(d);
        if (rc != OPTIM_OK) return rc;
    }
    return dm_ok(d);
}

int optim_mpi_sam_restore(optim_mpi *d)
{
    static const char fn[] = "optim_mpi_sam_restore";
    int rc, moved;
    if (!d) return OPTIM_ENULL;
    if ((rc = dm_usable(d, fn)) != OPTIM_OK) return rc;
    if (!d->sam) return dm_fail(d, OPTIM_ESTATE, "%s: no SAM (optim_mpi_set_sam)", fn);
    moved = optim_sam_is_perturbed(d->sam);
    rc = optim_sam_restore(d->sam);
    rc = dm_local_status(d, rc, optim_sam_errmsg(d->sam), fn);
    if (rc != OPTIM_OK) return rc;
    if (d->stage > 0 && moved) {
        rc = dm_gather_params(d);
        if (rc != OPTIM_OK) return rc;
    }
    return dm_ok(d);
}

