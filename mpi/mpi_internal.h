/* mpi_internal.h: the body of the optim_mpi handle and what the files of
 * liboptim_mpi share. Private.
 *
 * Layout (mpi_layout.c). The model's parameters, in index order, form one
 * flattened vector of `total` elements, cut into reduction blocks: 8192
 * elements from each parameter's start, as the core's norms cut them. The
 * blocks are grouped into buckets of about bucket_elems elements (one
 * collective each), and every bucket is cut, at block boundaries, into K
 * slices of nearly equal size: slice r of every bucket belongs to rank r.
 * Slices made of whole blocks are what lets the global gradient norm be the
 * unsharded run's bits: every block's partial is computed by its owner over
 * exactly the unsharded block, and the partials are combined in block order.
 * One slice per rank in every bucket keeps every bucket's reduce-scatter
 * balanced (each rank receives K-1 copies of its slice and sends K-1 slices),
 * where DeepSpeed-style contiguous shards would send each bucket to one or
 * two owners. (llm.c's zero.cuh cuts every tensor into K slices; we cut every
 * bucket.)
 *
 * Reduction (mpi_step.c). The reduce-scatter of bucket k is an
 * MPI_Ialltoallv of the K slices of the local gradient; the owner sums the K
 * copies it receives in rank order, in double, and divides by K:
 * deterministic, the same for every stage and every MPI. Buckets go through
 * a small pool of staging slots, so that packing bucket k+1 and summing
 * bucket k overlap the transfer of the others. */
#ifndef OPTIM_MPI_INTERNAL_H
#define OPTIM_MPI_INTERNAL_H

#include "optim_mpi.h"
#include "optim_sam.h"
#include "optim_ext.h"
#include "shard_ckpt.h"

#include <stddef.h>
#include <stdint.h>

/* The core's reduction block (OPTIM__RBLOCK, src/kernels/kernels.h). */
#define DM_RBLOCK ((size_t)8192)
/* Staging slots of a reduction in stages 0 and 1: one bucket on the wire
 * while the next is packed and the previous summed. */
#define DM_SLOTS 2
/* Largest bucket: MPI counts are int. */
#define DM_MAX_BUCKET_ELEMS ((size_t)1 << 30)

typedef struct dm_layout {
    int K;
    size_t nparams;
    size_t *n, *off;     /* per parameter: size, offset in the flattened vector */
    size_t total;
    size_t nblocks;      /* reduction blocks of the whole vector */
    size_t *bstart;      /* nblocks + 1: the blocks' first elements, then total */
    size_t *bparam;      /* nblocks: the parameter of each block */
    size_t nbuckets;
    size_t *cut;         /* nbuckets * (K + 1): slice r of bucket k is [cut[k(K+1)+r], cut[k(K+1)+r+1]) */
    int *cnt, *dsp;      /* nbuckets * K: slice sizes, and their offsets in the bucket (MPI counts) */
    size_t *bcut;        /* nbuckets * (K + 1): the block index of each cut */
    size_t *single;      /* nbuckets: the one parameter a bucket lies in, or (size_t)-1 */
} dm_layout;

int dm_layout_build(dm_layout *L, int K, size_t nparams, const size_t *n, size_t bucket_elems);
void dm_layout_free(dm_layout *L);
/* Rank r's pieces, in order (slices of every bucket split by parameter,
 * adjacent ones merged; rank 0 adds the zero-size parameters; a rank owning
 * nothing gets one placeholder) into out, which has room for
 * dm_layout_pieces_cap(L); goff (may be NULL) receives each piece's offset in
 * the rank's gradient buffer. Returns the count. */
size_t dm_layout_pieces_cap(const dm_layout *L);
size_t dm_layout_pieces(const dm_layout *L, int r, osc_piece *out, size_t *goff);
/* Stage 0: every parameter whole, goff its offset. */
size_t dm_layout_whole(const dm_layout *L, osc_piece *out, size_t *goff);
#define DM_CUT(L, k, r) ((L)->cut[(size_t)(k) * ((size_t)(L)->K + 1) + (size_t)(r)])
#define DM_BCUT(L, k, r) ((L)->bcut[(size_t)(k) * ((size_t)(L)->K + 1) + (size_t)(r)])
#define DM_SLICE(L, k, r) (DM_CUT(L, k, (r) + 1) - DM_CUT(L, k, r))

/* A staging slot: one bucket's buffers while it is packed, on the wire and summed. */
enum { DM_SLOT_FREE = 0, DM_SLOT_FILLING, DM_SLOT_REDUCE, DM_SLOT_GATHER };
typedef struct dm_slot {
    float *send, *recv;
    int state;
    size_t bucket;
    uint64_t seq;       /* start order, to finish the oldest first */
    MPI_Request req;
} dm_slot;

struct optim_mpi {
    MPI_Comm comm, ctl; /* duplicates: bucket collectives on comm; agreements and norms on ctl */
    int rank, K, stage;
    double timeout;
    size_t bucket_elems;

    /* The model, as opt described it. */
    optim_rule rule;
    size_t ngroups, nparams;
    char **names;
    size_t *group;
    float **p;          /* the caller's memory */
    const float **g;
    int *shape_given;
    size_t *ndim;
    int64_t **dims;
    dm_layout L;

    /* This rank's local optimizer: one parameter per piece. */
    osc_piece *pieces;
    size_t npieces;
    size_t *goff;       /* per piece: offset of its gradient in gbuf */
    size_t *mine_off;   /* per bucket: offset of this rank's slice in gbuf (stages 1, 2) */
    float *gbuf;        /* averaged gradients: this rank's slices (1, 2), every element (0) */
    size_t gbuf_len;
    optim *local;
    optim_sam *sam;
    double sam_rho, sam_p, sam_eta;
    int sam_adaptive;

    /* The reduction of a step (or of a SAM half). */
    dm_slot *slots;
    size_t nslots;
    size_t send_cap, recv_cap;
    size_t *remaining;      /* per bucket: elements not packed yet */
    long *bucket_slot;      /* per bucket: its slot, or -1 */
    unsigned char *started; /* per bucket */
    unsigned char *ready;   /* per parameter: handed over (stage 2) */
    long next_start;        /* next bucket to start (stage 2 descends, others ascend) */
    int in_reduction;
    int poisoned;           /* a hand-over failed locally: this reduction's data is garbage */
    MPI_Request *ag_req;    /* per bucket: in-place all-gathers */
    uint64_t seq;
    int *rs_cnt, *rs_dsp;   /* nbuckets * K: receive counts and offsets of the reduce-scatters */

    /* The combine hook (global norms). */
    size_t nblocks_me;
    int *hk_cnt, *hk_dsp;
    size_t *hk_gidx;        /* gathered position -> global block */
    double *hk_send, *hk_recv, *hk_part;
    unsigned char *hk_bad;

    int broken;             /* communication failed: the handle refuses further calls */
    optim_mpi_stats stats;
    optim_error err;
};

/* ---- mpi_comm.c -------------------------------------------------------------------- */
int dm_fail(optim_mpi *d, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
int dm_ok(optim_mpi *d);
/* Record an MPI failure (ECOMM) naming `what`; the handle becomes unusable. */
int dm_mpi_fail(optim_mpi *d, int mpi_rc, const char *what);
/* Wait for req, polling, within the timeout (ECOMM after it). */
int dm_wait(optim_mpi *d, MPI_Request *req, const char *what);
/* The agreement after local work: every rank passes its status (its message
 * in d->err when failing) and a hash of its mutable configuration (0 to skip
 * the check). OPTIM_OK when every rank succeeded and the hashes agree; else
 * every rank returns the lowest failing rank's status with its message,
 * "rank r of K: ...", or OPTIM_EMISMATCH naming the differing setting. */
int dm_agree(optim_mpi *d, int rc, uint64_t hash, const char *fn);
/* MPI_Allreduce MIN of one int64, within the timeout. */
int dm_allreduce_min(optim_mpi *d, MPI_Comm c, long long *v, int n, const char *what);

/* ---- mpi_config.c ------------------------------------------------------------------ */
/* Compare the configuration of o (the template at creation: the whole model
 * with its state; or d->local, whose groups and settings only) across ranks.
 * OPTIM_OK, or OPTIM_EMISMATCH on every rank naming the first difference. */
int dm_config_check(optim_mpi *d, const optim *o, int whole, const char *fn);
/* The same for SAM's settings (optim_mpi_set_sam). */
int dm_config_check_sam(optim_mpi *d, double rho, double p, int adaptive, double eta, const char *fn);
/* Hash of the settings every rank must keep equal between steps. */
uint64_t dm_config_hash(const optim *o);

/* ---- mpi_create.c ------------------------------------------------------------------ */
/* Grow the pool of staging slots to `want`. */
int dm_slots_grow(optim_mpi *d, size_t want);
/* Build a local optimizer over this rank's pieces, its groups and settings
 * from `like` (hyperparameters, schedules, settings); state fresh. */
int dm_local_build(optim_mpi *d, const optim *like, optim **out);
/* Install the combine hook on a new local optimizer and make its SAM object
 * (when SAM is set), without changing d; then replace the old ones (cannot fail). */
int dm_local_prepare(optim_mpi *d, optim *local, optim_sam **sam);
void dm_local_commit(optim_mpi *d, optim *local, optim_sam *sam);


#endif
