/* common.h: private helpers shared by every part of the library.
 * Never included by programs; nothing here is part of the API. */
#ifndef OPTIM_COMMON_H
#define OPTIM_COMMON_H

#include "optim.h"

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#  define OPTIM_INLINE static inline __attribute__((always_inline))
#  define OPTIM_PRINTF(f, a) __attribute__((format(printf, f, a)))
#  define OPTIM_LIKELY(x) __builtin_expect(!!(x), 1)
#  define OPTIM_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#  define OPTIM_INLINE static inline
#  define OPTIM_PRINTF(f, a)
#  define OPTIM_LIKELY(x) (x)
#  define OPTIM_UNLIKELY(x) (x)
#endif

/* Alignment of every state array the library allocates (a cache line, and a
 * whole AVX-512 vector). */
#define OPTIM__ALIGN 64

/* Record a failure in *err (if not NULL) and return code. The message is
 * formatted like printf. Every error of the library goes through here. */
int optim__fail(optim_error *err, int code, const char *fmt, ...) OPTIM_PRINTF(3, 4);
/* Clear *err (code OK, empty message) and return OPTIM_OK. */
int optim__ok(optim_error *err);

/* One-line checks in the style of zstd's RETURN_ERROR_IF. */
#define OPTIM__FAIL_IF(cond, err, code, ...)                     \
    do {                                                         \
        if (OPTIM_UNLIKELY(cond)) return optim__fail((err), (code), __VA_ARGS__); \
    } while (0)
#define OPTIM__FORWARD(expr)            \
    do {                                \
        int optim__rc_ = (expr);        \
        if (optim__rc_ != OPTIM_OK) return optim__rc_; \
    } while (0)

/* Aligned allocation of n floats; NULL on failure or overflow. */
float *optim__alloc_floats(size_t n);
void optim__free_floats(float *p);
/* Aligned allocation of n elements of `size` bytes (rounded up to whole cache
 * lines); NULL on failure or overflow. Free with optim__free_floats. */
void *optim__alloc_elems(size_t n, size_t size);

/* 1 if [a, a+na) and [b, b+nb) share a byte (floats counted). */
int optim__overlap(const void *a, size_t na, const void *b, size_t nb);
/* The same with sizes in bytes. */
int optim__overlap_bytes(const void *a, size_t na, const void *b, size_t nb);

#endif
