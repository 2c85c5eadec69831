/* kernels.h: the update kernels per CPU path, CPU dispatch, and the parallel
 * pass over many tensors. Hot loops live under src/kernels/ and nowhere else. */
#ifndef OPTIM_KERNELS_H
#define OPTIM_KERNELS_H

#include "../rules/rules.h"

/* Update n elements of one parameter: p, g and the slot arrays s[0..3]
 * already point at the first element (unused slots may be NULL). */
typedef void (*optim__block_fn)(size_t n, float *p, const float *g, float *const *s, const optim__k *k);

typedef struct optim__kernels {
    optim_isa isa;
    optim__block_fn block[OPTIM_RULE_COUNT + 1]; /* indexed by optim_rule */
} optim__kernels;

/* The table of a path, or NULL if this build or CPU cannot run it.
 * OPTIM_ISA_AUTO gives optim_isa_default()'s table. */
const optim__kernels *optim__kernels_get(optim_isa isa);

/* One tensor's share of a step. */
typedef struct optim__task {
    float *p;
    const float *g;
    float *s[OPTIM_MAX_SLOTS];
    size_t n;         /* elements to update (0: skip this tensor) */
    size_t start;     /* offset of element 0 in the concatenation of all tasks */
    const optim__k *k;
} optim__task;

/* Run tasks[0..count) (their `start` fields must be the running sums of n)
 * with kernels kt for `rule`, splitting the concatenated elements evenly
 * across at most `threads` threads (0: all) in one parallel region. Small
 * steps run on the caller's thread. Results do not depend on the split:
 * every element is updated on its own. */
void optim__run(const optim__kernels *kt, optim_rule rule, const optim__task *tasks, size_t count, size_t total,
                int threads);

/* Per-path tables, defined in kernels_<isa>.c. */
extern const optim__kernels optim__kernels_scalar;
#if defined(OPTIM_HAVE_AVX2)
extern const optim__kernels optim__kernels_avx2;
#endif
#if defined(OPTIM_HAVE_AVX512)
extern const optim__kernels optim__kernels_avx512;
#endif
#if defined(OPTIM_HAVE_NEON)
extern const optim__kernels optim__kernels_neon;
#endif

#endif
