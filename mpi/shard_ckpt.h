/* shard_ckpt.h: sharded checkpoints on disk, without MPI: the manifest of a
 * checkpoint directory, rebuilding any optimizer's state from the shards it
 * overlaps (resharding, merging). Private to liboptim_mpi and the optim
 * command (`optim ckpt`), which builds it without MPI.
 *
 * A checkpoint directory holds one optim_save file per writing rank,
 * shard-RRRRR-of-KKKKK.<save id>.ckpt, each the local optimizer of that rank
 * (parameters named "<name>[a:b]", elements a..b of the model's parameter),
 * and `manifest`, written last, which names them (docs/DISTRIBUTED.md has the
 * format). */
#ifndef OPTIM_SHARD_CKPT_H
#define OPTIM_SHARD_CKPT_H

#include "optim.h"

#include <stddef.h>
#include <stdint.h>

#define OSC_MANIFEST "manifest"
/* Format 3 adds each parameter's element types (memory, gradient, state)
 * to its line; a format-2 parameter is float32 throughout. Savers write
 * format 2 when every parameter is float32 throughout (what older libraries
 * read), else 3, or 4 when a parameter has storage flags (format 4 adds
 * them to the types: "bfloat16,bfloat16,float32,0x1"). Format 2 (contiguous shards) adds the `layout` line; format
 * 1 (one slice of every bucket per rank) is read as layout "buckets": its
 * pieces are explicit, so it loads, reshards and merges as any other layout. */
#define OSC_FORMAT 4

/* Elements [a, b) of the model's parameter `param`: one parameter of a
 * rank's local optimizer. A piece with param == OSC_NO_PARAM is the
 * zero-length placeholder of a rank that owns nothing. */
typedef struct osc_piece {
    size_t param, a, b;
} osc_piece;
#define OSC_NO_PARAM ((size_t)-1)

typedef struct osc_param {
    char *name;
    size_t n, group;
    int shape_given;
    size_t ndim;
    int64_t *dims; /* ndim of them when shape_given */
    optim_dtype pdt, gdt, sdt; /* element types of its memory, gradient, state (format 3; else float32) */
    unsigned flags;            /* OPTIM_PARAM_MASTER, OPTIM_PARAM_STOCHASTIC_ROUNDING (format 4; else 0) */
} osc_param;

typedef struct osc_manifest {
    unsigned format;
    char library[32];
    char save_id[64];
    int ranks;             /* ranks that wrote a shard */
    int stage;             /* of the run that wrote it (informative) */
    char layout[16];       /* "whole" (stage 0), "contiguous" (stages 1, 2), "buckets" (format 1) (informative) */
    optim_rule rule;
    size_t ngroups;
    int64_t steps, skipped;
    size_t nparams;
    osc_param *params;
    size_t *npieces;       /* per rank */
    osc_piece **pieces;    /* per rank, in the order of its local optimizer's parameters */
    char **files;          /* per rank, file name inside the directory */
} osc_manifest;

void osc_manifest_free(osc_manifest *m);
/* Render m as text (malloc'ed, NUL-terminated; *len without the NUL). NULL when out of memory. */
char *osc_manifest_render(const osc_manifest *m, size_t *len);
/* Parse the text of a manifest (len bytes; `what` names it in messages). */
int osc_manifest_parse(const char *text, size_t len, const char *what, osc_manifest *m, optim_error *err);
/* Read dir/manifest: the text (malloc'ed) into *text and *len. A missing
 * manifest is OPTIM_EOPEN with a message saying what dir holds instead (the
 * shards of an interrupted save, or nothing). */
int osc_manifest_read_text(const char *dir, char **text, size_t *len, optim_error *err);
/* Write text as dir/manifest atomically (temporary file, fsync, rename, fsync of dir). */
int osc_manifest_write_text(const char *dir, const char *text, size_t len, optim_error *err);
/* Remove dir's shard files that m does not name, and temporary manifests (best effort). */
void osc_remove_stale(const char *dir, const osc_manifest *m);

/* The name of a piece in a local optimizer: "<name>[a:b]", or "[empty]". */
char *osc_piece_name(const osc_manifest *m, const osc_piece *p);

/* Rebuild target's state from the shards of dir that its pieces overlap.
 * target has m->ngroups groups and one parameter per piece of tp[0..ntp)
 * (in that order; zero-length pieces included); param_mem[i] is the memory
 * of the model's parameter i, of its type m->params[i].pdt (used as the
 * temporary optimizers' parameter pointers, never written). Each state
 * array is copied in its type, which must be the manifest's (the caller
 * checks; OPTIM_EMISMATCH here otherwise). Groups' hyperparameters, schedules and schedule
 * steps, the non-finite policy, clipping and the counters are replaced by
 * the saved ones; state arrays, initialised flags, step counters and NAdam's
 * mu_product are copied element range by element range. On error target may
 * be partly filled: build a fresh one. */
int osc_fill(const osc_manifest *m, const char *dir, optim *target, const osc_piece *tp, size_t ntp,
             void *const *param_mem, optim_error *err);

/* Merge dir's checkpoint into one optim_save file. */
int osc_merge(const char *dir, const char *out, optim_error *err);

/* Bytes of one state slot of n elements of type t (OPTIM_INT8_BLOCK: its
 * codes, padding and one float32 scale per OPTIM_INT8_BLOCK_SIZE block). */
size_t osc_slot_bytes(size_t n, optim_dtype t);
/* Copy elements [sa, sa + count) of a state slot of sn elements of type t
 * (src) onto elements [da, da + count) of one of dn elements (dst). For
 * OPTIM_INT8_BLOCK the codes and their blocks' scales move together, never
 * requantized: sa and da must start a block (multiples of
 * OPTIM_INT8_BLOCK_SIZE) and the range end at a block's end or at both
 * slots' ends (else OPTIM_EUNSUPPORTED, with a message in *err). Shards
 * start 8192 elements into a parameter, so every layout liboptim_mpi writes
 * or reads meets this. */
int osc_state_copy(void *dst, size_t dn, size_t da, const void *src, size_t sn, size_t sa, size_t count,
                   optim_dtype t, optim_error *err);

/* Record a failure in *err (may be NULL) and return code. */
int osc_fail(optim_error *err, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* CRC-32C of n bytes (bitwise; for the manifest's own check). */
uint32_t osc_crc32c(uint32_t crc, const void *data, size_t n);

#endif
