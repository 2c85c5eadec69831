/*
 * optim_checkpoint.h: saving and loading an optimizer's complete state.
 *
 * A checkpoint holds everything an optimizer needs to continue bit for bit:
 * the rule; every group's hyperparameters, schedule and schedule step; every
 * parameter's name, size, shape (optim_param_set_shape), group, step
 * counter, NAdam's mu_product and state arrays; the optimizer's step and
 * skipped-step counters, its non-finite policy and its fused clipping. It
 * does not hold the parameters' values: those are the caller's memory (save
 * them next to the checkpoint). SAM carries no state between steps; its
 * settings are the arguments of optim_sam_create. Between an optim_sam_first_step
 * and its second_step (or restore), saves and loads fail with OPTIM_ESTATE.
 *
 * Every save that succeeds loads: what the format stores in a fixed width is
 * bounded when the optimizer is built, with the values the loader accepts
 * (OPTIM_MAX_NAME, OPTIM_MAX_NDIM, at most 2^32 - 1 groups and 1 + groups +
 * params sections, and the schedules' OPTIM_SCHEDULE_MAX_* limits). A loaded
 * record listed twice or contradicting the format is refused as damaged.
 *
 * Threads: no global state; different optimizers may be saved and loaded in
 * different threads at once. One optimizer is used by one thread at a time.
 *
 * The format (docs/CHECKPOINT.md) is versioned, little-endian on every
 * machine, made of sections with their own lengths and CRC-32C checksums, and
 * a checksum of the whole file. Writing goes to a temporary file next to the
 * target (the file a symbolic link at path finally names), which is flushed
 * to disk (fsync) and then renamed over it, and the directory is synced: a
 * crash at any moment leaves either the old checkpoint or the new one, never
 * a torn one. Only a regular file (or nothing) is replaced: a directory,
 * device, FIFO or socket at path is refused. Loading reads only a regular
 * file (opened without blocking), checks every section's checksum first (a
 * damaged byte is reported with its section and parameter), then reads and
 * checks everything before changing anything: on any error the optimizer is
 * exactly as it was. A parameter whose shape was given must have the saved
 * shape, if that was given too; the default shape [n] matches any shape of n
 * elements.
 *
 * Errors (on the handle: optim_errmsg names the file and the part that
 * failed): OPTIM_EOPEN (cannot open or create, or not a file optim_save
 * replaces), OPTIM_EREAD (cannot read, or not a regular file),
 * OPTIM_EWRITE, OPTIM_ENOSPC (no space or inode left, quota or file-size
 * limit, whichever call of the save met it),
 * OPTIM_ETRUNCATED, OPTIM_EMAGIC (not a checkpoint), OPTIM_EVERSION (written
 * by a newer format), OPTIM_ECHECKSUM (corrupt), OPTIM_EFORMAT (checksums
 * fine but the content is impossible), OPTIM_EMISMATCH (another rule, other
 * groups, parameters of other names, sizes or shapes), OPTIM_ENOMEM,
 * OPTIM_ESTATE.
 */
#ifndef OPTIM_CHECKPOINT_H
#define OPTIM_CHECKPOINT_H

#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The format version this library writes (3: with the element type of each
 *  state slot, so float64 state saves and loads exactly); it loads this one
 *  and every older one. */
#define OPTIM_CHECKPOINT_FORMAT 3

/** How a checkpoint's parameters are matched to the optimizer's. */
typedef enum optim_match {
    OPTIM_MATCH_NAME = 0,    /* by name (the names given to optim_add_param): order may differ */
    OPTIM_MATCH_POSITION = 1 /* by index: names may differ, sizes and groups must not */
} optim_match;

/** Save opt's state to path, atomically (see above). */
OPTIM_API int optim_save(optim *opt, const char *path);

/** Load the state saved in path into opt, whose rule, number of groups and
 *  parameters (by name or position, same sizes and groups) must match. The
 *  groups' hyperparameters and schedules are replaced by the saved ones. */
OPTIM_API int optim_load(optim *opt, const char *path, optim_match match);

/** The same for a checkpoint already in memory (size bytes at data); `what`
 *  names it in messages (NULL: "buffer"). */
OPTIM_API int optim_load_buffer(optim *opt, const void *data, size_t size, optim_match match, const char *what);

/** Serialise opt's state into memory: *data receives a malloc'ed buffer of
 *  *size bytes, the exact bytes optim_save writes (free it with free()). */
OPTIM_API int optim_save_buffer(optim *opt, void **data, size_t *size);

/** What a checkpoint holds, read without an optimizer (all checks made). */
typedef struct optim_checkpoint_info {
    uint32_t format;        /* format version of the file */
    optim_rule rule;
    size_t groups;
    size_t params;
    int64_t steps;          /* the optimizer's step count */
    uint64_t state_floats;  /* floats of state stored */
    char library[32];       /* version of the library that wrote it */
} optim_checkpoint_info;

OPTIM_API int optim_checkpoint_info_read(const char *path, optim_checkpoint_info *info, optim_error *err);

#ifdef __cplusplus
}
#endif
#endif
