/* ckpt_util.h: helpers of the checkpoint tests (test_checkpoint.c,
 * ckpt_robust.c): scratch directories, whole files, and edits of a
 * checkpoint's bytes that keep every checksum right (docs/CHECKPOINT.md). */
#ifndef OPTIM_TEST_CKPT_UTIL_H
#define OPTIM_TEST_CKPT_UTIL_H

#include "optim.h"

#include <stddef.h>
#include <stdint.h>

/* A new directory /tmp/optim-ckpt-test-XXXXXX in buf; NULL on failure. */
char *ckpt_scratch(char *buf, size_t size);
/* Remove dir and everything in it (subdirectories too). */
void ckpt_remove_tree(const char *dir);
int ckpt_read_file(const char *path, unsigned char **data, size_t *size);
int ckpt_write_file(const char *path, const void *data, size_t size);
/* Recompute every checksum of a checkpoint in memory after an edit. */
void ckpt_rechecksum(unsigned char *d, size_t size);
/* Offset of the k-th section's head (0: the first after the header), or 0 if there is none. */
size_t ckpt_section_offset(const unsigned char *d, size_t size, unsigned k);
/* A copy of the checkpoint d with one more section (tag, flags, payload)
 * inserted before section `before` (the section count: at the end), header
 * and checksums updated; malloc'ed, *out_size its size. */
unsigned char *ckpt_insert_section(const unsigned char *d, size_t size, unsigned before, const char tag[4],
                                   uint32_t flags, const void *payload, size_t len, size_t *out_size);
/* Whether two optimizers hold the same state: their checkpoints' bytes. 1: same. */
int ckpt_same_state(optim *a, optim *b);
/* Write the little-endian bytes of v at d. */
void ckpt_put_le(unsigned char *d, uint64_t v, int bytes);
uint64_t ckpt_get_le(const unsigned char *d, int bytes);

#endif
