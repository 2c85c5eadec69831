/*
 * optim_mpi.h: data-parallel training over MPI with the optimizer state
 * sharded across ranks (ZeRO stages 1 and 2), in liboptim_mpi.
 *
 * Every rank holds the whole model's parameters and computes gradients on
 * its part of each batch. optim_mpi_step averages the gradients over the
 * ranks and takes the step of an optimizer built as one process would build
 * it (any rule, groups, schedules, clipping, non-finite policy, SAM):
 *
 *   stage 0  plain data parallel: every rank holds the whole state and
 *            steps every parameter with the averaged gradient;
 *   stage 1  ZeRO-1: each rank owns the state of one contiguous shard of
 *            the flattened parameters (optim_mpi_shard) and steps only
 *            that; gradients are reduce-scattered bucket by bucket to the
 *            shards' owners, and the parameters then all-gathered;
 *   stage 2  ZeRO-2: stage 1, and gradients are handed over as backward
 *            produces them (optim_mpi_grad_ready): they are reduced bucket
 *            by bucket while the rest is computed, and the caller may reuse
 *            each gradient buffer as soon as it is handed over.
 *
 * The three stages give the same parameters, bit for bit, as one process
 * stepping the optimizer with the averaged gradients
 *     avg[j] = (float)((g_0[j] + g_1[j] + ... + g_{K-1}[j]) / K)
 * (the sum in double, in rank order: the same bits on every machine, MPI
 * implementation and stage; docs/DISTRIBUTED.md says how). Clipping uses the
 * global norm, summed in the same block order as one process does; a
 * non-finite gradient on any rank makes every rank skip (or fail) the step;
 * SAM's norm is global too.
 *
 * Calls marked "collective" must be made by every rank of the communicator,
 * in the same order. A failure on one rank (an invalid argument, a file that
 * cannot be written, a non-finite gradient under OPTIM_NONFINITE_ERROR) makes
 * the collective fail on every rank with the same status and a message that
 * names the rank ("rank 2 of 4: ..."); nothing is changed then. A failure of
 * MPI itself, or another rank not answering within the timeout, returns
 * OPTIM_ECOMM: the communicator is then unusable, the handle refuses further
 * calls, and the program should print optim_mpi_errmsg and call MPI_Abort.
 * (A rank that dies is reported by mpirun, which ends the job.)
 *
 * Element types: every combination the core takes (optim_add_param_ex:
 * float32, float64, bfloat16 and float16 parameters, float32 parameters with
 * bfloat16 or float16 gradients, bfloat16 or float16 state), mixed freely in
 * one model. Each parameter keeps its types everywhere: gradients travel in
 * their type and are averaged as above in double, rounded once to the
 * gradient's type (a float64 gradient keeps the double; a bfloat16 or
 * float16 one is rounded once to nearest even, not through float), the
 * parameters are all-gathered in their type, the state is sharded and
 * checkpointed in its type. SAM takes float32 parameters only (the core's
 * optim_sam_create refuses others, naming them). See docs/DISTRIBUTED.md.
 *
 * Reduced precision (include/optim_precision.h), with one process's bits:
 * OPTIM_INT8_BLOCK state is sharded in whole quantization blocks (every
 * shard starts a multiple of 8192 elements into its parameter) and moved,
 * resharded and merged with its scales, never requantized; an fp32 master
 * (OPTIM_PARAM_MASTER) lives with the rank owning its elements, the
 * all-gather moving the low-precision parameters (rank 0's template masters
 * are every rank's at creation); stochastic rounding draws the bits of each
 * element's index in the whole parameter, so any number of ranks rounds as
 * one process; loss scaling's overflow decision is global (every rank skips,
 * backs off and grows together). Other storage flags (OPTIM_PARAM_COMPLEX)
 * are refused by name.
 */
#ifndef OPTIM_MPI_H
#define OPTIM_MPI_H

#include <mpi.h>

#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(OPTIM_STATIC_DEFINE)
#  define OPTIM_MPI_API
#elif defined(_WIN32)
#  ifdef OPTIM_MPI_BUILDING
#    define OPTIM_MPI_API __declspec(dllexport)
#  else
#    define OPTIM_MPI_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__)
#  define OPTIM_MPI_API __attribute__((visibility("default")))
#else
#  define OPTIM_MPI_API
#endif

typedef struct optim_mpi optim_mpi;

/** Bucket size used when optim_mpi_options.bucket_bytes is 0: 16 MiB of
 *  float32, or OPTIM_MPI_SLICE_BYTES_MIN per rank when that is more (128 MiB
 *  on 1,000 ranks): each rank's slice of a bucket is one message, and must be
 *  long enough for the network's bandwidth, not its latency, to set its time
 *  (docs/DISTRIBUTED.md, "Bucket size"). Any bucket holds at least 8192
 *  elements per rank (one reduction block each). */
#define OPTIM_MPI_BUCKET_BYTES_DEFAULT ((size_t)16 << 20)
#define OPTIM_MPI_SLICE_BYTES_MIN ((size_t)128 << 10)
/** Seconds a rank waits for the others in one operation before failing with
 *  OPTIM_ECOMM, when optim_mpi_options.timeout is not set: 30 minutes, as
 *  torch.distributed's default. */
#define OPTIM_MPI_TIMEOUT_DEFAULT 1800.0

typedef struct optim_mpi_options {
    size_t bucket_bytes; /* gradient bytes per bucket (one collective each); 0: the default. Same on every rank */
    double timeout;      /* seconds (> 0), or 0 to wait for ever */
} optim_mpi_options;

/** Fill *o with the defaults. */
OPTIM_MPI_API void optim_mpi_options_init(optim_mpi_options *o);

/**
 * Create a data-parallel optimizer over communicator comm (collective).
 *
 * opt is the model's optimizer as one process would build it: rule, groups
 * and hyperparameters, schedules, parameters (with names, sizes, shapes and
 * memory), non-finite policy, clipping, threads, CPU path, and state (fresh,
 * or loaded with optim_load: every rank must load the same checkpoint).
 * Every rank must pass the same configuration: rule, groups,
 * hyperparameters, schedules and their steps, parameter names, sizes, groups
 * and shapes, settings, step counters and state are compared across ranks,
 * and a difference fails the call on every rank (OPTIM_EMISMATCH) with a
 * message naming it and which ranks hold which value. The parameters' values
 * are then broadcast from rank 0 (as torch's DistributedDataParallel does),
 * so every rank starts from rank 0's. stage is 0, 1 or 2 (see above).
 *
 * Ownership: d copies what it needs from opt and never uses opt again:
 * freeing opt at once is allowed. Peak memory: call
 * optim_set_defer_state(opt, 1) before adding the parameters, and opt never
 * allocates state (d does not ask it to): no rank ever holds the whole
 * model's state, only its shard's (optim_mpi_state_bytes), which is ZeRO's
 * point. Without it, opt's whole-model state (allocated by optim_add_param)
 * is copied from, and freeing opt releases it. Every rank should build opt
 * the same way (deferred state compares as "not allocated"). Changing opt later has no effect on d. d keeps the
 * parameter and gradient pointers opt had (the caller's memory, which must
 * stay valid while d uses it; change them with optim_mpi_set_param_ptrs /
 * optim_mpi_set_grad). d writes the parameters (each rank's whole copy) and
 * only reads the gradients. comm is duplicated: the caller keeps its own.
 *
 * *out is NULL on failure, with the message in *err (may be NULL).
 * OPTIM_ENULL, OPTIM_EINVAL (stage, options, a parameter without memory),
 * OPTIM_EMISMATCH (ranks differ), OPTIM_ENOMEM, OPTIM_ECOMM.
 */
OPTIM_MPI_API int optim_mpi_create(optim_mpi **out, optim *opt, MPI_Comm comm, int stage, optim_error *err);
/** optim_mpi_create with options (NULL: the defaults). */
OPTIM_MPI_API int optim_mpi_create_with(optim_mpi **out, optim *opt, MPI_Comm comm, int stage,
                                        const optim_mpi_options *options, optim_error *err);
/** Free d (not opt, not the caller's memory). Not collective, but frees the
 *  duplicated communicators, so every rank should free its handle. NULL is a
 *  no-op. */
OPTIM_MPI_API void optim_mpi_free(optim_mpi *d);

/** Last error message on d ("" if none). Never NULL. */
OPTIM_MPI_API const char *optim_mpi_errmsg(const optim_mpi *d);
OPTIM_MPI_API int optim_mpi_errcode(const optim_mpi *d);

/**
 * One step (collective): average the gradients over the ranks in buckets
 * (reduce-scatter), step this rank's share with the local optimizer, and in
 * stages 1 and 2 all-gather the parameters. Every parameter must have a
 * gradient (handed over, in stage 2, or bound). Under
 * OPTIM_NONFINITE_SKIP a non-finite gradient element on any rank skips the
 * step on every rank (optim_mpi_last_step_skipped); under ERROR every rank
 * fails with OPTIM_ENONFINITE naming the parameter.
 */
OPTIM_MPI_API int optim_mpi_step(optim_mpi *d);

/**
 * Stage 2: parameter i's gradient is final for this step: d copies it into
 * its buckets and starts the reduction of every bucket that is complete, so
 * the caller may overwrite or free that gradient memory when this returns.
 * Buckets start in a fixed order, the last bucket first (the order in which
 * backward produces gradients): hand gradients over in reverse parameter
 * order for the reduction to overlap backward; any order gives the same
 * result. Parameters not handed over are taken at optim_mpi_step from their
 * bound gradient. Not collective (the collectives it starts are matched by
 * every rank's calls and steps). OPTIM_ESTATE in stages 0 and 1 (they read
 * the gradients at optim_mpi_step) or for a parameter already handed over
 * this step; OPTIM_ENULL if its gradient pointer is NULL.
 */
OPTIM_MPI_API int optim_mpi_grad_ready(optim_mpi *d, size_t i);
/** Point parameter i's gradient at other memory (the caller's). Not
 *  collective. Between steps, or before parameter i is handed over. For a
 *  float32 parameter with float32 gradients (else OPTIM_EINVAL naming the
 *  types): optim_mpi_set_grad_data takes any. */
OPTIM_MPI_API int optim_mpi_set_grad(optim_mpi *d, size_t i, const float *grad);
/** Point parameter i at other memory (holding the same values on every
 *  rank), and its gradient. Not collective; between steps. float32 only, as
 *  optim_mpi_set_grad: optim_mpi_set_param_data takes any. */
OPTIM_MPI_API int optim_mpi_set_param_ptrs(optim_mpi *d, size_t i, float *param, const float *grad);
/** optim_mpi_set_grad and optim_mpi_set_param_ptrs for any element types:
 *  memory of the types parameter i was added with (optim_param_get_dtypes). */
OPTIM_MPI_API int optim_mpi_set_grad_data(optim_mpi *d, size_t i, const void *grad);
OPTIM_MPI_API int optim_mpi_set_param_data(optim_mpi *d, size_t i, void *param, const void *grad);

/**
 * SAM / ASAM (optim_sam.h) around the sharded optimizer (collective): rho,
 * p, adaptive and eta as optim_sam_create, for every group; must be the same
 * on every rank (compared: OPTIM_EMISMATCH). Then each step is
 * optim_mpi_sam_first_step (averages the gradients, moves every rank's
 * parameters to w + e with the global norm), new gradients computed at w + e,
 * optim_mpi_sam_second_step (averages them, restores w, steps). Stage 2 hands
 * gradients over with optim_mpi_grad_ready before each half. rho = 0 and
 * p = 0 removes SAM.
 */
OPTIM_MPI_API int optim_mpi_set_sam(optim_mpi *d, double rho, double p, int adaptive, double eta);
OPTIM_MPI_API int optim_mpi_sam_first_step(optim_mpi *d);
OPTIM_MPI_API int optim_mpi_sam_second_step(optim_mpi *d);
/** Abandon a step after first_step: restore w on every rank (collective). */
OPTIM_MPI_API int optim_mpi_sam_restore(optim_mpi *d);
/** SAM's global dual norm measured by the last first_step (NaN without SAM). */
OPTIM_MPI_API double optim_mpi_sam_last_grad_norm(const optim_mpi *d);

/**
 * Save the optimizer's state into directory dir (collective; created if
 * missing; every rank must see the same directory, e.g. a shared file
 * system). Each rank writes its shard with optim_save (atomically); rank 0
 * then writes dir/manifest (atomically, last), naming the shards, the ranks,
 * the layout and every parameter's name, group, size and shape, and removes
 * the files of the previous save. A crash at any moment leaves the previous
 * complete checkpoint of dir loadable. Like optim_save it holds no parameter
 * values: save those too (every rank has them; rank 0 may write them).
 * Stage 0 writes one shard (rank 0's whole state). Between SAM's two halves:
 * OPTIM_ESTATE.
 */
OPTIM_MPI_API int optim_mpi_save(optim_mpi *d, const char *dir);
/**
 * Load the checkpoint of directory dir, written by any number of ranks in
 * any stage with any bucket size (collective): each rank reads the shards
 * its slices overlap. The parameters must match by name, size, group and
 * shape (if both sides gave one); groups, hyperparameters, schedules,
 * settings and counters are replaced by the saved ones. A directory without
 * a manifest is refused naming what is there (shards of an interrupted save,
 * or nothing). All or nothing, on every rank.
 */
OPTIM_MPI_API int optim_mpi_load(optim_mpi *d, const char *dir);
/**
 * Merge the sharded checkpoint of dir into one checkpoint file `out`
 * (optim_save's format, written atomically) that optim_load reads into the
 * model's optimizer in one process (parameters named as in the original
 * optimizer). Not collective, needs no MPI initialisation. `optim ckpt merge
 * DIR OUT` runs it.
 */
OPTIM_MPI_API int optim_mpi_merge(const char *dir, const char *out, optim_error *err);

/** This rank, the number of ranks, the stage. */
OPTIM_MPI_API int optim_mpi_rank(const optim_mpi *d);
OPTIM_MPI_API int optim_mpi_size(const optim_mpi *d);
OPTIM_MPI_API int optim_mpi_stage(const optim_mpi *d);
/**
 * The rank's local optimizer, owned by d: in stage 0 over every parameter,
 * in stages 1 and 2 over this rank's slices, named "<name>[a:b]" (elements
 * a to b of the parameter), each group as opt's. Read anything from it
 * (state, lr, optim_last_grad_norm); change hyperparameters or schedules
 * (optim_group_set_hparam, ...) only identically on every rank (checked at
 * the next step: a difference fails it with OPTIM_EMISMATCH); do not add
 * parameters, step it, or save it directly. Valid until the next
 * optim_mpi_load or optim_mpi_free.
 */
OPTIM_MPI_API optim *optim_mpi_local(const optim_mpi *d);
/** Bytes of optimizer state this rank holds (state arrays of its local
 *  optimizer, each in its element type; SAM's copy of w, when set, is
 *  optim_mpi_shard_elements * 4 more). */
OPTIM_MPI_API size_t optim_mpi_state_bytes(const optim_mpi *d);
/** Elements this rank steps (stage 0: all of them): optim_mpi_shard's count. */
OPTIM_MPI_API size_t optim_mpi_shard_elements(const optim_mpi *d);
/**
 * This rank's shard: the elements [*first, *first + *count) of the flattened
 * parameters (parameter 0's elements, then parameter 1's, ..., in index
 * order), whose state it holds and which it steps. Stages 1 and 2: one
 * contiguous range per rank, rank 0's first, then rank 1's, ..., covering
 * the whole vector; each starts at a reduction block (a multiple of 8192
 * elements into a parameter), so that its slices of the caller's arrays are
 * as aligned as those arrays, and holds within 8192 elements of total / K
 * (a rank may own nothing when the model has fewer blocks than ranks).
 * Stage 0: every rank steps everything: first 0, count the total.
 * OPTIM_ENULL when an argument is NULL. Not collective.
 */
OPTIM_MPI_API int optim_mpi_shard(const optim_mpi *d, size_t *first, size_t *count);
/** Number of gradient buckets (collectives per reduction). */
OPTIM_MPI_API size_t optim_mpi_bucket_count(const optim_mpi *d);
OPTIM_MPI_API int64_t optim_mpi_step_count(const optim_mpi *d);
OPTIM_MPI_API int optim_mpi_last_step_skipped(const optim_mpi *d);
OPTIM_MPI_API int64_t optim_mpi_skipped_steps(const optim_mpi *d);
/** The global gradient norm the last step measured (clipping or a
 *  non-finite policy on), or NaN. */
OPTIM_MPI_API double optim_mpi_last_grad_norm(const optim_mpi *d);
/** Change the timeout (seconds > 0, or 0 for none). Not collective. */
OPTIM_MPI_API int optim_mpi_set_timeout(optim_mpi *d, double seconds);

/** What this rank communicated: payload bytes received (what the algorithm
 *  needs, whatever MPI adds), per kind of collective, since creation or the
 *  last reset. */
typedef struct optim_mpi_stats {
    uint64_t reductions;     /* gradient reductions (steps and SAM halves) */
    uint64_t reduce_bytes;   /* gradients: reduce-scatter (each rank receives every rank's copy of its slices) */
    uint64_t gather_bytes;   /* all-gather: averaged gradients (stage 0) or parameters (stages 1, 2) */
    uint64_t control_bytes;  /* agreements, norm partials, broadcasts */
    double wait_seconds;     /* time spent waiting for communication */
} optim_mpi_stats;
OPTIM_MPI_API int optim_mpi_get_stats(const optim_mpi *d, optim_mpi_stats *stats);
OPTIM_MPI_API void optim_mpi_reset_stats(optim_mpi *d);

#ifdef __cplusplus
}
#endif
#endif
