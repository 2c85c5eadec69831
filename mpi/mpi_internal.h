/* mpi_internal.h: the body of the optim_mpi handle and what the files of
 * liboptim_mpi share. Private.
 *
 * Layout (mpi_layout.c). The model's parameters, in index order, form one
 * flattened vector of `total` elements, cut into reduction blocks: 8192
 * elements from each parameter's start, as the core's norms cut them.
 * Shards: rank r owns one contiguous run of whole blocks, elements
 * [shard[r], shard[r+1]), cut at the block boundary nearest to r/K of the
 * elements, so that every shard is within one block of total/K (ZeRO-1 as
 * issue 14 states it; DeepSpeed's flat partitions). Whole blocks are what
 * lets the global gradient norm be the unsharded run's bits: every block's
 * partial is computed by its owner over exactly the unsharded block, and
 * the ranks' partials, concatenated in rank order, are the partials in
 * global block order. A shard starts a multiple of 8192 elements into its
 * first parameter, so its slices of the caller's arrays are as aligned as
 * those arrays; in the rank's gradient buffer every piece starts on 64
 * bytes (mpi_create.c allocates it so).
 * Element types: every parameter keeps its own types (its memory, its
 * gradient, its state: optim_param_get_dtypes). The layout is in elements
 * (blocks, shards, cuts); what goes on the wire is bytes: gradient element
 * x of the flattened vector sits at byte gpos(x) of a flattened gradient
 * byte vector, in which parameter i starts at gb[i] (the previous one's
 * end, rounded up to a multiple of i's gradient element size, so that a
 * mixed model's elements stay aligned), and likewise pb[i] for the
 * parameters' memory. A bucket's slices are the byte ranges of its element
 * cuts (gcnt/gdsp for gradients, pcnt/pdsp for parameters). A model of one
 * type has no padding: float32 moves exactly the bytes it moved before.
 * Buckets: runs of whole blocks of about bucket_elems elements (one
 * collective each). Slice r of bucket k is the bucket's intersection with
 * shard r: empty for every rank but the one owning the bucket, or the few
 * whose shards it straddles. DM_CUT(k, r) clamps shard[r] to bucket k.
 * Reduced precision (docs/DISTRIBUTED.md, "Reduced precision"): since every
 * cut is a multiple of 8192 elements into its parameter, it is also one of
 * OPTIM_INT8_BLOCK_SIZE: an 8-bit state's quantization blocks are the
 * unsharded run's, each held whole by one rank. A slice with an fp32 master
 * holds the master of its elements (the gathers move the parameter's own
 * type); stochastic rounding draws the bits of the model's parameter and
 * element index (optim__ext_set_sr_origin); loss scaling's overflow is the
 * global non-finite flag of the combine hook, so every rank skips together.
 *
 * Reduction (mpi_step.c). The reduce-scatter of bucket k is an
 * MPI_Ialltoallv of the K slices of the local gradient (uneven counts: zero
 * for the ranks that own none of it); each owner sums the K copies of its
 * slice it receives in rank order, in double, and divides by K:
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
/* Largest bucket, in bytes of gradients or parameters: MPI counts are int. */
#define DM_MAX_BUCKET_BYTES ((size_t)1 << 30)
/* The largest element size (float64). */
#define DM_MAX_ESIZE ((size_t)8)

typedef struct dm_layout {
    int K;
    size_t nparams;
    size_t *n, *off;     /* per parameter: size, offset in the flattened vector */
    size_t total;
    size_t *gsz, *psz;   /* per parameter: bytes per element of its gradient, of its memory */
    size_t *gb, *pb;     /* per parameter: its first byte in the flattened gradient / parameter bytes */
    size_t gtotal, ptotal; /* bytes of those vectors */
    size_t nblocks;      /* reduction blocks of the whole vector */
    size_t *bstart;      /* nblocks + 1: the blocks' first elements, then total */
    size_t *bparam;      /* nblocks: the parameter of each block */
    size_t nbuckets;
    size_t *cut;         /* nbuckets * (K + 1): slice r of bucket k is [cut[k(K+1)+r], cut[k(K+1)+r+1]) */
    int *gcnt, *gdsp;    /* nbuckets * K: slices' gradient bytes, and their byte offsets in the bucket (MPI counts) */
    int *pcnt, *pdsp;    /* nbuckets * K: the same for the parameters' bytes */
    size_t *bcut;        /* nbuckets * (K + 1): the block index of each cut */
    size_t *single;      /* nbuckets: the one parameter a bucket lies in, or (size_t)-1 */
    size_t *shard;       /* K + 1: rank r's shard is elements [shard[r], shard[r+1]) */
    size_t *sblock;      /* K + 1: ... and blocks [sblock[r], sblock[r+1]) */
} dm_layout;

/* gsz, psz: per parameter, bytes per gradient / parameter element (NULL: 4). */
int dm_layout_build(dm_layout *L, int K, size_t nparams, const size_t *n, const size_t *gsz, const size_t *psz,
                    size_t bucket_elems);
/* Byte position of the element at block index b (b == nblocks: the end) in
 * the flattened gradient (dm_gpos) or parameter (dm_ppos) bytes. */
size_t dm_gpos(const dm_layout *L, size_t b);
size_t dm_ppos(const dm_layout *L, size_t b);
void dm_layout_free(dm_layout *L);
/* Rank r's pieces, in order (its shard split by parameter; rank 0 adds the
 * zero-size parameters; a rank owning nothing gets one placeholder) into
 * out, which has room for dm_layout_pieces_cap(L); goff (may be NULL)
 * receives each piece's byte offset in the rank's gradient buffer (multiples
 * of 64), buf_len (may be NULL) that buffer's length in bytes. Returns the
 * count. */
size_t dm_layout_pieces_cap(const dm_layout *L);
size_t dm_layout_pieces(const dm_layout *L, int r, osc_piece *out, size_t *goff, size_t *buf_len);
/* Stage 0: every parameter whole, goff its byte offset gb[i]. */
size_t dm_layout_whole(const dm_layout *L, osc_piece *out, size_t *goff);
#define DM_CUT(L, k, r) ((L)->cut[(size_t)(k) * ((size_t)(L)->K + 1) + (size_t)(r)])
#define DM_BCUT(L, k, r) ((L)->bcut[(size_t)(k) * ((size_t)(L)->K + 1) + (size_t)(r)])
#define DM_SLICE(L, k, r) (DM_CUT(L, k, (r) + 1) - DM_CUT(L, k, r))

/* A staging slot: one bucket's buffers while it is packed, on the wire and summed. */
enum { DM_SLOT_FREE = 0, DM_SLOT_FILLING, DM_SLOT_REDUCE, DM_SLOT_GATHER };
typedef struct dm_slot {
    unsigned char *send, *recv;
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
    unsigned char **p;  /* the caller's memory, of each parameter's types */
    const unsigned char **g;
    optim_dtype *pdt, *gdt, *sdt; /* per parameter: its memory's, gradient's and state's element types */
    unsigned *flags;    /* per parameter: its storage flags (OPTIM_PARAM_MASTER, OPTIM_PARAM_STOCHASTIC_ROUNDING) */
    size_t *piece_of;   /* per parameter: its piece in the local optimizer, or (size_t)-1 */
    int *shape_given;
    size_t *ndim;
    int64_t **dims;
    dm_layout L;

    /* This rank's local optimizer: one parameter per piece. */
    osc_piece *pieces;
    size_t npieces;
    size_t *goff;       /* per piece: byte offset of its gradient in gbuf */
    unsigned char *gbuf; /* averaged gradients, each piece in its gradient type: this rank's pieces (stages 1, 2;
                            each on 64 bytes), every parameter at gb[i] (stage 0) */
    size_t gbuf_len;    /* bytes */
    optim *local;
    optim_sam *sam;
    double sam_rho, sam_p, sam_eta;
    int sam_adaptive;

    /* The reduction of a step (or of a SAM half). */
    dm_slot *slots;
    size_t nslots;
    size_t send_cap, recv_cap; /* bytes */
    size_t *remaining;      /* per bucket: elements not packed yet */
    long *bucket_slot;      /* per bucket: its slot, or -1 */
    unsigned char *started; /* per bucket */
    unsigned char *ready;   /* per parameter: handed over (stage 2) */
    long next_start;        /* next bucket to start (stage 2 descends, others ascend) */
    int in_reduction;
    int poisoned;           /* a hand-over failed locally: this reduction's data is garbage */
    MPI_Request *ag_req;    /* per bucket: in-place all-gathers */
    uint64_t seq;
    int *rs_cnt, *rs_dsp;   /* nbuckets * K: receive byte counts and offsets of the reduce-scatters */

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

/* ---- mpi_ckpt.c -------------------------------------------------------------------- */
/* What a save does between writing the shards and writing the manifest, for
 * the tests (a crash there must leave the previous checkpoint whole): the
 * library passes dm_default_save_ops (const: nothing); tests call
 * dm_save_with with their own table. No state is global. */
typedef struct dm_save_ops {
    void (*before_manifest)(void *ctx); /* on rank 0, after every shard is written; NULL: nothing */
    void *ctx;
} dm_save_ops;
extern const dm_save_ops dm_default_save_ops;
/* optim_mpi_save through ops. */
int dm_save_with(optim_mpi *d, const char *dir, const dm_save_ops *ops);

#endif
