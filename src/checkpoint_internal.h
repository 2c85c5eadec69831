/* checkpoint_internal.h: what the three files of the checkpoint code share,
 * and their seam for the white-box tests and the fuzzers. Not API: hidden in
 * the shared library.
 *
 *   src/ckpt_format.c  the bytes: limits, encoder, decoder (ckpt_format.h)
 *   src/ckpt_file.c    durable file I/O: atomic replacement, safe reads (ckpt_file.h)
 *   src/ckpt_match.c   the API of optim_checkpoint.h: a decoded file matched
 *                      against an optimizer, and committed
 *
 * Every system operation a save or a load performs that a test needs to make
 * fail goes through an optim__ck_ops, passed down from the entry point. The
 * library uses optim__ck_default_ops (const: the real system calls, no
 * failures); tests call the *_ops entry points below with their own table and
 * context. No state is global. */
#ifndef OPTIM_CHECKPOINT_INTERNAL_H
#define OPTIM_CHECKPOINT_INTERNAL_H

#include "optim_internal.h"

#include "optim_checkpoint.h"

#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

typedef struct optim__ck_ops {
    /* The creation of a save's temporary file (open(2) with O_CREAT | O_EXCL). */
    int (*open)(void *ctx, const char *path, int flags, mode_t mode);
    /* Every write(2) of a save, and the fsync(2) of its file and of its directory. */
    ssize_t (*write)(void *ctx, int fd, const void *buf, size_t n);
    int (*fsync)(void *ctx, int fd);
    /* Asked before each allocation of a save or load (not the schedule
     * constructors'): nonzero makes it fail. NULL: none fails. */
    int (*alloc_fails)(void *ctx);
    void *ctx; /* passed to each of the above */
} optim__ck_ops;

/* The real system calls; no allocation fails. */
extern const optim__ck_ops optim__ck_default_ops;

/* optim_save, optim_save_buffer, optim_load and optim_load_buffer through ops. */
int optim__save_ops(optim *o, const char *path, const optim__ck_ops *ops);
int optim__save_buffer_ops(optim *o, void **data, size_t *size, const optim__ck_ops *ops);
int optim__load_ops(optim *o, const char *path, optim_match match, const optim__ck_ops *ops);
int optim__load_buffer_ops(optim *o, const void *data, size_t size, optim_match match, const char *what,
                           const optim__ck_ops *ops);

/* Allocations of the checkpoint code: each may be made to fail by ops. */
static inline int optim__ck_alloc_fails(const optim__ck_ops *ops)
{
    return ops->alloc_fails && ops->alloc_fails(ops->ctx);
}

static inline void *optim__ck_malloc(const optim__ck_ops *ops, size_t n)
{
    return optim__ck_alloc_fails(ops) ? NULL : malloc(n ? n : 1);
}

static inline void *optim__ck_calloc(const optim__ck_ops *ops, size_t n, size_t size)
{
    return optim__ck_alloc_fails(ops) ? NULL : calloc(n ? n : 1, size);
}

/* n elements of a state type (float32 or float64). */
static inline float *optim__ck_alloc_elems(const optim__ck_ops *ops, size_t n, optim_dtype dtype)
{
    return optim__ck_alloc_fails(ops) ? NULL : (float *)optim__alloc_elems(optim__slot_bytes(n, dtype), 1);
}

static inline char *optim__ck_strdup(const optim__ck_ops *ops, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = (char *)optim__ck_malloc(ops, n);
    if (d) memcpy(d, s, n);
    return d;
}

#endif
