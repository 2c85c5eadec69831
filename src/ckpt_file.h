/* ckpt_file.h: durable file I/O for checkpoints, knowing nothing of their
 * bytes: replacing a file atomically (a temporary file next to it, written,
 * fsync'ed, renamed over it, the directory fsync'ed) and reading a regular
 * file safely into memory. Every system call a test makes fail goes through
 * an optim__ck_ops (checkpoint_internal.h). Private. */
#ifndef OPTIM_CKPT_FILE_H
#define OPTIM_CKPT_FILE_H

#include "checkpoint_internal.h"
#include "ckpt_format.h"

/* What writes the new file's bytes: calls emit(ectx, ...) for every piece,
 * and returns 0 or the first errno emit returned. */
typedef int (*optim__ck_produce)(void *pctx, optim__ck_emit emit, void *ectx);

/* Replace the regular file at path (or, through symbolic links, the file
 * they end at; created if missing) with the `size` bytes that produce emits,
 * so that a crash at any moment leaves the old file or the new one. Errors
 * name fn and path, in err: OPTIM_EOPEN (cannot create, or not a file that is
 * replaced), OPTIM_ENOSPC (no space, no inode, quota, file-size limit),
 * OPTIM_EWRITE, OPTIM_ENOMEM; on error the file at path is untouched (but
 * for a failing fsync of the directory after the rename, which says so). */
int optim__ck_file_replace(const char *path, const char *fn, uint64_t size, optim__ck_produce produce, void *pctx,
                           const optim__ck_ops *ops, optim_error *err);

/* Read the regular file at path into *data (malloc'ed; NULL for an empty
 * file), *size bytes: opened without blocking, refused unless it is a regular
 * file (OPTIM_EREAD), OPTIM_EOPEN if it cannot be opened, OPTIM_ENOMEM. A file
 * that shrinks meanwhile comes out short. */
int optim__ck_file_read(const char *path, unsigned char **data, size_t *size, const optim__ck_ops *ops,
                        optim_error *err);

#endif
