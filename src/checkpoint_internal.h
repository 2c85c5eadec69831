/* checkpoint_internal.h: fault-injection hooks of src/checkpoint.c, for the
 * white-box tests (tests/test_checkpoint.c, linked with the static library).
 * Not API: hidden in the shared library, never set by the library itself. */
#ifndef OPTIM_CHECKPOINT_INTERNAL_H
#define OPTIM_CHECKPOINT_INTERNAL_H

#include <stddef.h>
#include <sys/types.h>

typedef struct optim__ck_hooks {
    /* Every write(2) and fsync(2) of optim_save goes through these (the file's
     * and its directory's fsync). */
    ssize_t (*write)(int fd, const void *buf, size_t n);
    int (*fsync)(int fd);
    /* > 0: the alloc_fail-th allocation of checkpoint.c from now on fails
     * (counted down by each allocation); 0: none fails. */
    long alloc_fail;
} optim__ck_hooks;

extern optim__ck_hooks optim__ck_test;

#endif
