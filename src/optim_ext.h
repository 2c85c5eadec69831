/* optim_ext.h: hooks for libraries layered on liboptim in this tree
 * (liboptim_mpi, mpi/; optim.torch under torch's ZeroRedundancyOptimizer,
 * python/optim/torch/_distributed.py), and for nothing else. Not installed,
 * not part of the public API: the functions are exported from liboptim only
 * so that those layers can reach them.
 *
 * A sharded optimizer steps, on each process, an optimizer over that
 * process's slices of the parameters. Clipping by the global norm, the
 * non-finite checks and SAM's norm must then see every process's gradients:
 * the combine hook is called by every reduction of a step (the pre-pass of
 * clipping / non-finite checks, SAM's first_step) between the local block
 * partials and their use, and answers with the partials of the whole job in
 * its block order. The core then finishes the norm with the same code and
 * the same order as an unsharded run, so a sharded run whose blocks are the
 * unsharded run's blocks gets the same bits. */
#ifndef OPTIM_EXT_H
#define OPTIM_EXT_H

#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct optim_ext_hooks {
    void *ctx;
    /* partials[0..nblocks) and bad[0..nblocks) are this optimizer's, in its
     * block order (8192-element blocks of each parameter with a gradient, in
     * parameter order). Point *all_partials, *all_bad (memory owned by the
     * hook, valid until the next call) and *all_nblocks at the whole job's.
     * Called on every process in the same order; a failure (a status and a
     * message in *err) fails the step or first_step with it. */
    int (*combine)(void *ctx, const double *partials, const unsigned char *bad, size_t nblocks,
                   const double **all_partials, const unsigned char **all_bad, size_t *all_nblocks,
                   optim_error *err);
    /* The index and name of the parameter holding block `block` of the
     * combined arrays, for the message of a non-finite gradient. */
    void (*name_block)(void *ctx, size_t block, size_t *param, const char **name);
    /* 1 when every parameter of the optimizer is a whole tensor of the model
     * (each process steps whole tensors: torch's ZeroRedundancyOptimizer), so
     * that per-tensor reductions (LAMB, LARS, Adafactor's factored passes)
     * and Muon's orthogonalisation are the unsharded ones; 0 for slices
     * (liboptim_mpi), which refuses them. */
    int whole_tensors;
} optim_ext_hooks;

/* With hooks installed, an optimizer without parameters may step (a rank
 * that owns no tensor still takes part in every combine: its pre-pass has
 * no blocks; a dynamic loss scale still backs off or grows with the
 * others'). */

/** Install hooks (copied) on o, or remove them (hooks NULL or hooks->combine NULL). The combine hook is
 *  called by every step that runs the pre-pass (clipping, a non-finite policy other than propagate, or
 *  dynamic loss scaling), on the calling thread. */
OPTIM_API int optim__ext_set_hooks(optim *o, const optim_ext_hooks *hooks);
/** Stochastic rounding (OPTIM_PARAM_STOCHASTIC_ROUNDING) of o's parameter i
 *  draws the random numbers of elements first, first + 1, ... of the model's
 *  parameter `param` (by default: i and 0), so that a slice of a sharded
 *  tensor rounds every element with the bits of the unsharded run. first is
 *  a multiple of 512 with first + n <= 2^64 for the parameter's n elements
 *  (else OPTIM_EINVAL); an i past the parameters is OPTIM_ERANGE. Not saved
 *  by checkpoints: the sharding library sets it whenever it builds its local
 *  optimizer (liboptim_mpi: a slice's parameter and first element;
 *  optim.torch under torch's ZeroRedundancyOptimizer: a whole tensor's index
 *  in the model, 0, before each call over the parameters, a step or a
 *  schedule-free switch, in which that numbering changed). */
OPTIM_API int optim__ext_set_sr_origin(optim *o, size_t i, uint64_t param, uint64_t first);
/** Set the counters a checkpoint records and optim_step_count /
 *  optim_skipped_steps report (both >= 0), when a state is rebuilt from
 *  pieces rather than loaded whole (resharding, merging). */
OPTIM_API int optim__ext_set_counters(optim *o, int64_t steps, int64_t skipped);

#ifdef __cplusplus
}
#endif
#endif
