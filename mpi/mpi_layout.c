/* mpi_layout.c: buckets, slices and pieces of the flattened parameters (see
 * mpi_internal.h). A pure function of the parameters' sizes, the number of
 * ranks and the bucket size: every rank computes the same layout, and a
 * checkpoint's manifest records the pieces it produced. */
#include "mpi_internal.h"

#include <stdlib.h>
#include <string.h>

void dm_layout_free(dm_layout *L)
{
    free(L->n);
    free(L->off);
    free(L->bstart);
    free(L->bparam);
    free(L->cut);
    free(L->cnt);
    free(L->dsp);
    free(L->bcut);
    free(L->single);
    memset(L, 0, sizeof *L);
}

/* Index of the first block starting at or after x (blocks [lo, hi)). */
static size_t dm_block_at(const dm_layout *L, size_t lo, size_t hi, size_t x)
{
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (L->bstart[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int dm_layout_build(dm_layout *L, int K, size_t nparams, const size_t *n, size_t bucket_elems)
{
    size_t i, b, k, r, nb = 0, kb0, cap = 16;
    size_t *bounds = NULL; /* block index where each bucket starts, then nblocks */
    memset(L, 0, sizeof *L);
    L->K = K;
    L->nparams = nparams;
    L->n = (size_t *)malloc((nparams ? nparams : 1) * sizeof *L->n);
    L->off = (size_t *)malloc((nparams ? nparams : 1) * sizeof *L->off);
    if (!L->n || !L->off) goto oom;
    for (i = 0; i < nparams; i++) {
        L->n[i] = n[i];
        L->off[i] = L->total;
        L->total += n[i];
        L->nblocks += (n[i] + DM_RBLOCK - 1) / DM_RBLOCK;
    }
    L->bstart = (size_t *)malloc((L->nblocks + 1) * sizeof *L->bstart);
    L->bparam = (size_t *)malloc((L->nblocks ? L->nblocks : 1) * sizeof *L->bparam);
    if (!L->bstart || !L->bparam) goto oom;
    for (i = 0, b = 0; i < nparams; i++) {
        size_t j;
        for (j = 0; j < n[i]; j += DM_RBLOCK) {
            L->bstart[b] = L->off[i] + j;
            L->bparam[b] = i;
            b++;
        }
    }
    L->bstart[L->nblocks] = L->total;

    /* Buckets: runs of whole blocks, closed before they pass bucket_elems. */
    bounds = (size_t *)malloc(cap * sizeof *bounds);
    if (!bounds) goto oom;
    for (b = 0, kb0 = 0; b < L->nblocks; b++) {
        size_t len = L->bstart[b + 1] - L->bstart[b];
        if (b > kb0 && L->bstart[b] - L->bstart[kb0] + len > bucket_elems) {
            if (nb + 2 > cap) {
                size_t *nbnd = (size_t *)realloc(bounds, (cap *= 2) * sizeof *bounds);
                if (!nbnd) goto oom;
                bounds = nbnd;
            }
            bounds[nb++] = kb0;
            kb0 = b;
        }
    }
    if (L->nblocks > 0) {
        if (nb + 2 > cap) {
            size_t *nbnd = (size_t *)realloc(bounds, (cap + 2) * sizeof *bounds);
            if (!nbnd) goto oom;
            bounds = nbnd;
        }
        bounds[nb++] = kb0;
    }
    bounds[nb] = L->nblocks;
    L->nbuckets = nb;
    L->cut = (size_t *)malloc((nb * ((size_t)K + 1) + 1) * sizeof *L->cut);
    L->bcut = (size_t *)malloc((nb * ((size_t)K + 1) + 1) * sizeof *L->bcut);
    L->cnt = (int *)malloc((nb * (size_t)K + 1) * sizeof *L->cnt);
    L->dsp = (int *)malloc((nb * (size_t)K + 1) * sizeof *L->dsp);
    L->single = (size_t *)malloc((nb + 1) * sizeof *L->single);
    if (!L->cut || !L->bcut || !L->cnt || !L->dsp || !L->single) goto oom;

    /* Slices: K runs of whole blocks per bucket, cut at the block boundary
     * nearest to an equal share (never before the previous cut). */
    for (k = 0; k < nb; k++) {
        size_t b0 = bounds[k], b1 = bounds[k + 1];
        size_t x0 = L->bstart[b0], x1 = L->bstart[b1], T = x1 - x0, q = T / (size_t)K, rem = T % (size_t)K;
        size_t prev = b0;
        DM_CUT(L, k, 0) = x0;
        DM_BCUT(L, k, 0) = b0;
        for (r = 1; r < (size_t)K; r++) {
            size_t target = x0 + q * r + rem * r / (size_t)K;
            size_t j = dm_block_at(L, prev, b1, target);
            if (j > prev && (j == b1 || L->bstart[j] - target > target - L->bstart[j - 1])) j--;
            if (j < prev) j = prev;
            DM_CUT(L, k, r) = L->bstart[j];
            DM_BCUT(L, k, r) = j;
            prev = j;
        }
        DM_CUT(L, k, K) = x1;
        DM_BCUT(L, k, K) = b1;
        for (r = 0; r < (size_t)K; r++) {
            L->cnt[k * (size_t)K + r] = (int)DM_SLICE(L, k, r);
            L->dsp[k * (size_t)K + r] = (int)(DM_CUT(L, k, r) - x0);
        }
        L->single[k] = L->bparam[b0] == L->bparam[b1 - 1] ? L->bparam[b0] : (size_t)-1;
    }
    free(bounds);
    return OPTIM_OK;
oom:
    free(bounds);
    dm_layout_free(L);
    return OPTIM_ENOMEM;
}

/* Index of the parameter holding element x (x < total). */
static size_t dm_param_at(const dm_layout *L, size_t x)
{
    size_t lo = 0, hi = L->nparams;
    /* The last parameter whose offset is <= x and which is not empty. */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (L->off[mid] <= x)
            lo = mid;
        else
            hi = mid;
    }
    while (L->n[lo] == 0 || L->off[lo] + L->n[lo] <= x) lo++;
    return lo;
}

size_t dm_layout_pieces_cap(const dm_layout *L)
{
    return L->nbuckets + 2 * L->nparams + 1;
}

size_t dm_layout_pieces(const dm_layout *L, int r, osc_piece *out, size_t *goff)
{
    size_t k, count = 0, pos = 0, i;
    for (k = 0; k < L->nbuckets; k++) {
        size_t x = DM_CUT(L, k, r), end = DM_CUT(L, k, r + 1);
        while (x < end) {
            size_t pi = dm_param_at(L, x), pend = L->off[pi] + L->n[pi], stop = pend < end ? pend : end;
            size_t a = x - L->off[pi], b = stop - L->off[pi];
            /* Adjacent in the parameter and in the gradient buffer (the ranks between own nothing): one piece. */
            if (count > 0 && out[count - 1].param == pi && out[count - 1].b == a) {
                out[count - 1].b = b;
            } else {
                out[count].param = pi;
                out[count].a = a;
                out[count].b = b;
                if (goff) goff[count] = pos;
                count++;
            }
            pos += stop - x;
            x = stop;
        }
    }
    if (r == 0)
        for (i = 0; i < L->nparams; i++)
            if (L->n[i] == 0) {
                out[count].param = i;
                out[count].a = out[count].b = 0;
                if (goff) goff[count] = 0;
                count++;
            }
    if (count == 0) {
        out[0].param = OSC_NO_PARAM;
        out[0].a = out[0].b = 0;
        if (goff) goff[0] = 0;
        count = 1;
    }
    return count;
}

size_t dm_layout_whole(const dm_layout *L, osc_piece *out, size_t *goff)
{
    size_t i;
    if (out)
        for (i = 0; i < L->nparams; i++) {
            out[i].param = i;
            out[i].a = 0;
            out[i].b = L->n[i];
            if (goff) goff[i] = L->off[i];
        }
    if (L->nparams == 0) {
        if (out) {
            out[0].param = OSC_NO_PARAM;
            out[0].a = out[0].b = 0;
            if (goff) goff[0] = 0;
        }
        return 1;
    }
    return L->nparams;
}
