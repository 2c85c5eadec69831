/* mpi_layout.c: shards, buckets, slices and pieces of the flattened
 * parameters (see mpi_internal.h). A pure function of the parameters' sizes, the number of
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
    free(L->gsz);
    free(L->psz);
    free(L->gb);
    free(L->pb);
    free(L->gcnt);
    free(L->gdsp);
    free(L->pcnt);
    free(L->pdsp);
    free(L->bcut);
    free(L->single);
    free(L->shard);
    free(L->sblock);
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

/* x rounded up to a multiple of a. */
static size_t dm_round_up(size_t x, size_t a)
{
    return (x + a - 1) / a * a;
}

size_t dm_gpos(const dm_layout *L, size_t b)
{
    size_t i;
    if (b >= L->nblocks) return L->gtotal;
    i = L->bparam[b];
    return L->gb[i] + (L->bstart[b] - L->off[i]) * L->gsz[i];
}

size_t dm_ppos(const dm_layout *L, size_t b)
{
    size_t i;
    if (b >= L->nblocks) return L->ptotal;
    i = L->bparam[b];
    return L->pb[i] + (L->bstart[b] - L->off[i]) * L->psz[i];
}

int dm_layout_build(dm_layout *L, int K, size_t nparams, const size_t *n, const size_t *gsz, const size_t *psz,
                    size_t bucket_elems)
{
    size_t i, b, k, r, nb = 0, kb0, cap = 16;
    size_t *bounds = NULL; /* block index where each bucket starts, then nblocks */
    memset(L, 0, sizeof *L);
    L->K = K;
    L->nparams = nparams;
    L->n = (size_t *)malloc((nparams ? nparams : 1) * sizeof *L->n);
    L->off = (size_t *)malloc((nparams ? nparams : 1) * sizeof *L->off);
    L->gsz = (size_t *)malloc((nparams ? nparams : 1) * sizeof *L->gsz);
    L->psz = (size_t *)malloc((nparams ? nparams : 1) * sizeof *L->psz);
    L->gb = (size_t *)malloc((nparams ? nparams : 1) * sizeof *L->gb);
    L->pb = (size_t *)malloc((nparams ? nparams : 1) * sizeof *L->pb);
    if (!L->n || !L->off || !L->gsz || !L->psz || !L->gb || !L->pb) goto oom;
    for (i = 0; i < nparams; i++) {
        L->n[i] = n[i];
        L->off[i] = L->total;
        L->gsz[i] = gsz ? gsz[i] : sizeof(float);
        L->psz[i] = psz ? psz[i] : sizeof(float);
        /* Each parameter's bytes start on a multiple of its element size. */
        L->gb[i] = dm_round_up(L->gtotal, L->gsz[i]);
        L->pb[i] = dm_round_up(L->ptotal, L->psz[i]);
        L->gtotal = L->gb[i] + n[i] * L->gsz[i];
        L->ptotal = L->pb[i] + n[i] * L->psz[i];
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
    L->shard = (size_t *)malloc(((size_t)K + 1) * sizeof *L->shard);
    L->sblock = (size_t *)malloc(((size_t)K + 1) * sizeof *L->sblock);
    L->cut = (size_t *)malloc((nb * ((size_t)K + 1) + 1) * sizeof *L->cut);
    L->bcut = (size_t *)malloc((nb * ((size_t)K + 1) + 1) * sizeof *L->bcut);
    L->gcnt = (int *)malloc((nb * (size_t)K + 1) * sizeof *L->gcnt);
    L->gdsp = (int *)malloc((nb * (size_t)K + 1) * sizeof *L->gdsp);
    L->pcnt = (int *)malloc((nb * (size_t)K + 1) * sizeof *L->pcnt);
    L->pdsp = (int *)malloc((nb * (size_t)K + 1) * sizeof *L->pdsp);
    L->single = (size_t *)malloc((nb + 1) * sizeof *L->single);
    if (!L->shard || !L->sblock || !L->cut || !L->bcut || !L->gcnt || !L->gdsp || !L->pcnt || !L->pdsp || !L->single)
        goto oom;

    /* Shards: rank r owns blocks [sblock[r], sblock[r+1]), one contiguous run,
     * cut at the block boundary nearest to r/K of the elements (never before
     * the previous cut): each cut is within half a block of its ideal place,
     * so every shard is within one block of total/K. */
    L->shard[0] = 0;
    L->sblock[0] = 0;
    for (r = 1, b = 0; r < (size_t)K; r++) {
        size_t target = L->total / (size_t)K * r + L->total % (size_t)K * r / (size_t)K;
        size_t j = dm_block_at(L, b, L->nblocks, target);
        if (j > b && (j == L->nblocks || L->bstart[j] - target > target - L->bstart[j - 1])) j--;
        L->shard[r] = L->bstart[j];
        L->sblock[r] = j;
        b = j;
    }
    L->shard[K] = L->total;
    L->sblock[K] = L->nblocks;

    /* Slices: slice r of a bucket is its intersection with shard r (empty
     * for the ranks whose shard it misses: a bucket goes to one owner, or to
     * the few whose shards it straddles). */
    for (k = 0; k < nb; k++) {
        size_t b0 = bounds[k], b1 = bounds[k + 1];
        size_t x0 = L->bstart[b0], x1 = L->bstart[b1];
        for (r = 0; r <= (size_t)K; r++) {
            size_t x = L->shard[r] < x0 ? x0 : (L->shard[r] > x1 ? x1 : L->shard[r]);
            size_t j = L->sblock[r] < b0 ? b0 : (L->sblock[r] > b1 ? b1 : L->sblock[r]);
            DM_CUT(L, k, r) = x;
            DM_BCUT(L, k, r) = j;
        }
        for (r = 0; r < (size_t)K; r++) {
            /* Byte ranges of the element cuts (cuts lie on blocks). */
            size_t g0 = dm_gpos(L, DM_BCUT(L, k, 0)), p0 = dm_ppos(L, DM_BCUT(L, k, 0));
            size_t ga = dm_gpos(L, DM_BCUT(L, k, r)), gz = dm_gpos(L, DM_BCUT(L, k, r + 1));
            size_t pa = dm_ppos(L, DM_BCUT(L, k, r)), pz = dm_ppos(L, DM_BCUT(L, k, r + 1));
            L->gcnt[k * (size_t)K + r] = (int)(gz - ga);
            L->gdsp[k * (size_t)K + r] = (int)(ga - g0);
            L->pcnt[k * (size_t)K + r] = (int)(pz - pa);
            L->pdsp[k * (size_t)K + r] = (int)(pa - p0);
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

/* Offsets in a rank's gradient buffer start on 64 bytes. */
#define DM_ALIGN_BYTES ((size_t)64)

size_t dm_layout_pieces_cap(const dm_layout *L)
{
    return L->nbuckets + 2 * L->nparams + 1;
}

size_t dm_layout_pieces(const dm_layout *L, int r, osc_piece *out, size_t *goff, size_t *buf_len)
{
    size_t count = 0, pos = 0, i, x = L->shard[r], end = L->shard[r + 1];
    /* One piece per parameter the shard meets, each at a 64-byte offset. */
    while (x < end) {
        size_t pi = dm_param_at(L, x), pend = L->off[pi] + L->n[pi], stop = pend < end ? pend : end;
        pos = dm_round_up(pos, DM_ALIGN_BYTES);
        out[count].param = pi;
        out[count].a = x - L->off[pi];
        out[count].b = stop - L->off[pi];
        if (goff) goff[count] = pos;
        count++;
        pos += (stop - x) * L->gsz[pi];
        x = stop;
    }
    if (buf_len) *buf_len = pos;
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
            if (goff) goff[i] = L->gb[i];
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
