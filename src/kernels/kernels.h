/* kernels.h: the update kernels per CPU path, CPU dispatch, and the parallel
 * pass over many tensors. Hot loops live under src/kernels/ and nowhere else. */
#ifndef OPTIM_KERNELS_H
#define OPTIM_KERNELS_H

#include "../rules/rules.h"

/* Update n elements of one parameter: p, g and the slot arrays s[0..3]
 * already point at the first element (unused slots may be NULL). */
typedef void (*optim__block_fn)(size_t n, float *p, const float *g, float *const *s, const optim__k *k);

/* Norm kinds of the reductions. */
typedef enum optim__norm {
    OPTIM__NORM_L1 = 0,  /* sum |x| */
    OPTIM__NORM_L2 = 1,  /* sum x^2 */
    OPTIM__NORM_INF = 2, /* max |x| */
    OPTIM__NORM_LP = 3   /* sum |x|^p */
} optim__norm;

/* Elements per partial of a reduction. Fixed: the partials, and so the
 * norms, do not depend on the number of threads. */
#define OPTIM__RBLOCK ((size_t)8192)

/* The partial of one block for norm `kind` of x = g, or of x = (|w| + eta) g
 * when w != NULL (ASAM). Sums run in double over 16 lanes in a fixed order,
 * so every CPU path gives the same bits. *bad is set to 1 if an element of x
 * is NaN or Inf (left alone otherwise). */
typedef double (*optim__reduce_fn)(size_t n, const float *g, const float *w, float eta, optim__norm kind, double p,
                                   int *bad);

typedef struct optim__kernels {
    optim_isa isa;
    optim__block_fn block[OPTIM_RULE_COUNT + 1]; /* indexed by optim_rule */
    optim__reduce_fn reduce;
    optim__block_fn sam_perturb; /* s[0] = p; p = p + e (see rules/sam.h) */
    optim__block_fn copy_back;   /* p = s[0] (SAM's restore) */
    optim__block_fn scale;       /* p = p * k->u.util.a (clip_grad_norm_ on the gradients) */
    optim__block_fn clamp;       /* p = clamp(p, k->u.util.a, k->u.util.b), NaN kept (clip_grad_value_) */
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
    size_t bstart;    /* index of its first reduction block (blocks of OPTIM__RBLOCK) */
    const optim__k *k;
    const float *w;   /* reductions: x = (|w| + eta) g when not NULL (ASAM), else x = g */
    float eta;
} optim__task;

/* Number of reduction blocks of a tensor of n elements. */
#define OPTIM__NBLOCKS(n) (((n) + OPTIM__RBLOCK - 1) / OPTIM__RBLOCK)

/* Run tasks[0..count) (their `start` fields must be the running sums of n)
 * with kernels kt for `rule`, splitting the concatenated elements evenly
 * across at most `threads` threads (0: all) in one parallel region. Small
 * steps run on the caller's thread. Results do not depend on the split:
 * every element is updated on its own. */
void optim__run(const optim__kernels *kt, optim_rule rule, const optim__task *tasks, size_t count, size_t total,
                int threads);
/* The same with any block function (SAM's perturbation, copies). */
void optim__run_fn(optim__block_fn fn, const optim__task *tasks, size_t count, size_t total, int threads);

/* Partials of a reduction over tasks[0..count) (x = g, or (|w| + eta) g for
 * tasks with w set): partials[b] for every block b < nblocks (tasks' bstart
 * must be the running sums of their block counts; tasks with n == 0 have
 * none), and bad[b] = 1 where block b holds a NaN or Inf, else 0. */
void optim__reduce_run(const optim__kernels *kt, const optim__task *tasks, size_t count, size_t nblocks,
                       optim__norm kind, double p, double *partials, unsigned char *bad, int threads);
/* Combine partials in block order into the norm (sum, max; sqrt / p-th root). */
double optim__norm_finish(const double *partials, size_t nblocks, optim__norm kind, double p);
/* The norm kind for a p-norm (p >= 1 or INFINITY). */
optim__norm optim__norm_kind(double p);

/* CRC-32C (Castagnoli) of n bytes, continuing from crc (0 to start):
 * optim__crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t optim__crc32c(uint32_t crc, const void *data, size_t n);

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
