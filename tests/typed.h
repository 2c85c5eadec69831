/* typed.h: element types for the tests, written independently of the
 * library: conversions from their definitions (nearest value, ties to even,
 * judged in double), typed arrays, and runs of an optimizer over typed
 * parameters on a chosen CPU path and thread count. */
#ifndef OPTIM_TEST_TYPED_H
#define OPTIM_TEST_TYPED_H

#include "optim.h"
#include "test.h"

/* The sampling stride of the exhaustive type and path tests: 1 natively; 4
 * under AddressSanitizer (scripts/sanitize.sh), where they look for memory
 * errors in the same code, and every combination would cost minutes. */
#if defined(__SANITIZE_ADDRESS__)
#  define T_SAMPLE 4
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define T_SAMPLE 4
#  endif
#endif
#ifndef T_SAMPLE
#  define T_SAMPLE 1
#endif

/* Every CPU path a test may run (the ones this build or CPU lacks are named by t_print_paths, never skipped
 * in silence). */
extern const optim_isa t_isas[5];
#define T_NISAS (sizeof t_isas / sizeof t_isas[0])
/* Print which of t_isas the test exercises. */
void t_print_paths(const char *test);

/* ---- Conversions (the tests' own) ----------------------------------------- */

uint32_t tbits(float x);
float tfloat(uint32_t u);
/* bfloat16: exact widening; the nearest bfloat16 (ties to even, overflow
 * to inf), NaN as 0x7fc0. */
float t_bf16_to_float(uint16_t h);
uint16_t t_bf16_from_float(float x);
/* float16: exact widening; the nearest float16 of a float (ties to even,
 * overflow to inf), NaN as sign | 0x7e00. */
double t_f16_to_double(uint16_t h);
uint16_t t_f16_from_float(float x);

/* OPTIM_INT8_BLOCK, from its definition in optim.h (not the library's bit
 * arithmetic): the value of a code, judged in double; the code of x, with
 * y = x * r its block-scaled value, found by searching every code for the
 * nearest (ties to the even code); a slot (codes, then scales at
 * OPTIM_INT8_BLOCK_SCALES_OFFSET) quantized from n floats block by block,
 * and dequantized. kind: T_Q8_SIGNED, T_Q8_NONNEG (negative values store
 * 0) or T_Q8_POSITIVE (and a positive value never stores 0); t_q8_kind
 * gives a rule's slot's kind from the slot's name. */
enum { T_Q8_SIGNED = 0, T_Q8_NONNEG = 1, T_Q8_POSITIVE = 2 };
double t_q8_value(uint8_t code, int kind);
uint8_t t_q8_code(float x, float y, int kind);
void t_q8_quantize(void *slot, const float *x, size_t n, int kind);
/* Stochastic rounding of the codes (OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING),
 * from its definition: the lower neighbouring code of |y| or the next one,
 * up when the fraction of the step between them (units of 2^-20, nearest
 * even) plus the 20 random bits r20 reaches 2^20; a slot quantized so, with
 * element e's bits r20[e]. */
uint8_t t_q8_code_sr(float x, float y, int kind, uint32_t r20);
void t_q8_quantize_sr(void *slot, const float *x, size_t n, int kind, const uint32_t *r20);
void t_q8_dequantize(float *x, const void *slot, size_t n, int kind);
int t_q8_kind(optim_rule rule, int slot);

/* ---- Typed arrays ------------------------------------------------------------- */

/* n elements of dtype, 64-byte aligned (free with free()); an int8_block
 * slot's whole layout (codes and scales). */
void *t_alloc(optim_dtype dtype, size_t n);
/* Element i as a double / set from a double (rounded as the type stores:
 * float32 by C's conversion, bfloat16 and float16 to nearest even). */
double t_get(optim_dtype dtype, const void *a, size_t i);
void t_set(optim_dtype dtype, void *a, size_t i, double x);
/* 1 if the first n elements of a and b have the same bytes (int8_block: the
 * codes and the scales; *where is n + the block of a differing scale). */
int t_same(optim_dtype dtype, const void *a, const void *b, size_t n, size_t *where);

/* ---- Runs ------------------------------------------------------------------------ */

/* Tensors of one run: parameters and gradients of the given types, in
 * groups (tensor i is in group group[i]), and the state read back after it. */
typedef struct tmodel {
    optim_dtype pdt, gdt, sdt;
    size_t count;
    size_t *n, *group;
    void **p, **g;
    void *(*s)[OPTIM_MAX_SLOTS];
} tmodel;

/* ngroups groups of `count` tensors each, of the given sizes; parameters
 * ~ N(0, 1) from rng. */
int tmodel_init(tmodel *m, optim_dtype pdt, optim_dtype gdt, const size_t *sizes, size_t count, size_t ngroups,
                test_rng *rng);
/* The same with the state's type chosen (optim_add_param_ex); -1: the pair's default. */
int tmodel_init_ex(tmodel *m, optim_dtype pdt, optim_dtype gdt, int sdt, const size_t *sizes, size_t count,
                   size_t ngroups, test_rng *rng);
void tmodel_free(tmodel *m);

/* Fused clipping of a run. */
typedef enum { T_CLIP_NONE = 0, T_CLIP_VALUE = 1, T_CLIP_NORM = 2, T_CLIP_MODES = 3 } t_clip;
const char *t_clip_name(int clip);

/* The gradients of every step of a run, of m's gradient type, made once and
 * reused by every run over m: ~ N(0, 1) from seed; with `nonfinite`, some
 * elements of every step are NaN (of both signs, one with a payload), +Inf
 * or -Inf. */
typedef struct tgrads {
    int steps;
    int nonfinite;
    size_t count;
    void **g; /* steps x n elements each */
} tgrads;
int tgrads_init(tgrads *G, const tmodel *m, int steps, uint64_t seed, int nonfinite);
void tgrads_free(tgrads *G);

/* A run: G's steps of one optimizer whose group k has hyperparameters
 * hps[k] (one rule), with the clipping, from init's parameters (with
 * G->nonfinite, some parameter and state elements are made non-finite
 * first), each parameter's step counter first set to start_step, on path isa
 * with `threads`; parameters and state go to out. Every group's variant runs
 * in the same steps: one parallel region covers them all. Returns 0, or 1
 * after printing why. */
int t_run(const optim_hparams *hps, int clip, const tmodel *init, const tgrads *G, optim_isa isa, int threads,
          int64_t start_step, tmodel *out);
/* Compare a and b (parameters and state) bit for bit; print the first
 * difference with `what` and the group's options. Returns 0 if the same. */
int t_compare(const tmodel *a, const tmodel *b, const char *what, const optim_hparams *hps, int clip);

#endif
