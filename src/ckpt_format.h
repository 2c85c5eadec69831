/* ckpt_format.h: the checkpoint's bytes (docs/CHECKPOINT.md, "Byte layout"):
 * the limits shared by the builders, the writer and the reader, the encoder of
 * an optimizer into bytes and the decoder of bytes into a plan. Knows nothing
 * of files (ckpt_file.h) or of matching a plan against an optimizer
 * (ckpt_match.c). Private. */
#ifndef OPTIM_CKPT_FORMAT_H
#define OPTIM_CKPT_FORMAT_H

#include "checkpoint_internal.h"
#include "optim_precision.h"
#include "optim_schedule.h"

#include <stdint.h>

/* ---- Limits --------------------------------------------------------------------
 * Everything the format stores in a fixed width, or the reader bounds, is
 * bounded when the object is built (optim_add_param, optim_add_group, the
 * schedule constructors, optim_param_set_shape), with these same values, so
 * that every save that succeeds loads:
 *
 *   a parameter's name          <= OPTIM_MAX_NAME bytes (optim.h)
 *   a parameter's elements n    <= SIZE_MAX / 4 (its state must fit in memory)
 *   a shape's dimensions        <= OPTIM_MAX_NDIM (optim.h)
 *   groups                      <= UINT32_MAX (u32 in META and PARM)
 *   sections (1 + groups + params) <= UINT32_MAX (u32 in the header)
 *   schedule nesting            <= OPTIM_SCHEDULE_MAX_DEPTH (optim_schedule.h)
 *   a sequential's children     <= OPTIM_SCHEDULE_MAX_CHILDREN
 *   a multistep's milestones    <= OPTIM_SCHEDULE_MAX_MILESTONES
 *   hyperparameters of a group  <= OPTIM_HP_COUNT, each id once
 */
#define OPTIM__CK_MAX_NUMEL (SIZE_MAX / sizeof(float))
#define OPTIM__CK_MAX_GROUPS ((uint64_t)UINT32_MAX)
#define OPTIM__CK_MAX_SECTIONS ((uint64_t)UINT32_MAX)

/* ---- Layout ------------------------------------------------------------------ */
#define OPTIM__CK_MAGIC "OPTIMCKP"
#define OPTIM__CK_END "OPTIMEND"
#define OPTIM__CK_HEADER 32
#define OPTIM__CK_TRAILER 12
#define OPTIM__CK_TAG(a, b, c, d) \
    ((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 | (uint32_t)(d) << 24)
#define OPTIM__CK_META OPTIM__CK_TAG('M', 'E', 'T', 'A')
#define OPTIM__CK_GRUP OPTIM__CK_TAG('G', 'R', 'U', 'P')
#define OPTIM__CK_PARM OPTIM__CK_TAG('P', 'A', 'R', 'M')
/* Reduced precision (optim_precision.h): the seed, the loss scaler, the fp32
 * masters. After every PARM, written only when one of them is not the
 * default (so other files are byte for byte what they were); required
 * (flags 0): a reader that does not know it refuses the file rather than
 * drop a master. */
#define OPTIM__CK_PREC OPTIM__CK_TAG('P', 'R', 'E', 'C')
/* Schedule-free rules (optim_schedule_free.h): the train/eval mode and each
 * parameter's lr_max and weight_sum. After every PARM, written exactly when
 * the rule is sgd_schedule_free or adamw_schedule_free (required then, refused
 * otherwise; flags 0). */
#define OPTIM__CK_SFRE OPTIM__CK_TAG('S', 'F', 'R', 'E')
/* The EMA of the weights (optim_ema.h): warm-up, swap, decay, count and each
 * parameter's average (and, while swapped, its 16-bit value set aside).
 * After every PARM, written exactly when the EMA is on (flags 0: a reader
 * that does not know it refuses the file rather than drop the averages).
 * Never with SFRE (the schedule-free rules refuse an EMA). */
#define OPTIM__CK_EMAS OPTIM__CK_TAG('E', 'M', 'A', 'S')
#define OPTIM__CK_OPTIONAL 1u     /* section flag: a reader that does not know the tag may skip it */
#define OPTIM__CK_SECTION_HEAD 16 /* tag, flags, length */
#define OPTIM__CK_SECTION_MIN (OPTIM__CK_SECTION_HEAD + 4)

/* ---- Encoding ---------------------------------------------------------------- */

/* Where encoded bytes go: returns 0, or an errno that stops the encoding. */
typedef int (*optim__ck_emit)(void *ctx, const void *data, size_t n);

/* The size in bytes of o's checkpoint (reads no state array). */
uint64_t optim__ck_size(const optim *o);
/* Emit o's whole checkpoint, `size` bytes (optim__ck_size), through emit;
 * returns 0 or the first errno emit returned (emitting stops there). */
int optim__ck_encode(const optim *o, uint64_t size, optim__ck_emit emit, void *ctx);
/* The same into mem, which holds size bytes. */
void optim__ck_encode_mem(const optim *o, uint64_t size, unsigned char *mem);

/* ---- Decoding ---------------------------------------------------------------- */

/* A group as the file holds it. */
typedef struct optim__ck_group_plan {
    optim_hparams hp;
    optim_schedule *sched; /* owned until taken */
    int64_t sched_t;
} optim__ck_group_plan;

/* A parameter as the file holds it; pointers into the decoded bytes. */
typedef struct optim__ck_param_plan {
    const char *name; /* name_len bytes, not terminated */
    size_t name_len;
    size_t n, group;
    int shape_given;           /* 0: the default [n] (and every format-1 file) */
    size_t ndim;
    const unsigned char *dims; /* ndim little-endian u64 (optim__ck_dim) */
    int64_t step;
    double mu_product;
    unsigned initialized, mask;
    const unsigned char *data[OPTIM_MAX_SLOTS]; /* slot data: optim__ck_slot_bytes of dtype (optim__ck_read_elems) */
    size_t len[OPTIM_MAX_SLOTS];                /* each slot's elements: n, or its rule's for the shape (Adafactor) */
    optim_dtype dtype;                          /* the slots' element type (float32 before format 3) */
} optim__ck_param_plan;

/* A whole decoded, checked checkpoint: everything but its match with an optimizer. */
typedef struct optim__ck_plan {
    uint32_t format;
    optim_rule rule;
    size_t ngroups, nparams;
    int64_t steps, skipped;
    optim_nonfinite nonfinite;
    double clip_max_norm, clip_norm_type, clip_value;
    char library[32];
    uint64_t state_floats;
    optim__ck_group_plan *groups;
    optim__ck_param_plan *params;
    /* The PREC section (reduced precision); all defaults without one. */
    int has_prec;
    uint64_t seed;
    optim_loss_scale ls;               /* mode OFF: none */
    double ls_scale;                   /* 1 when off */
    int64_t ls_tracker;
    const unsigned char **masters;     /* per param: n little-endian float32 of its master, or NULL */
    /* The SFRE section (schedule-free rules): mode, and lr_max, weight_sum per param (2 doubles each). */
    int has_sf, sf_eval;
    double *sf;
    /* The EMAS section (the EMA of the weights): its settings, and per param its average (n little-endian
     * elements of ema_dtype[j], float32 or float64) and, swapped, its stash (n of stash_dtype[j], bfloat16 or
     * float16; NULL for none). */
    int has_ema, ema_warmup, ema_swapped;
    double ema_decay;
    int64_t ema_count;
    const unsigned char **ema, **ema_stash;
    optim_dtype *ema_dtype, *ema_stash_dtype;
    int64_t *ema_counts; /* per param: its own count (optim_ema_param_count), or NULL: each the count */
} optim__ck_plan;

/* Decode and check the size bytes at data (named `what` in messages) into
 * *pl: the header, every section's checksum and then the file's (damage is
 * named by section, group and parameter), then every field. On error *pl is
 * empty (free it anyway). The plan points into data. */
int optim__ck_decode(const unsigned char *data, size_t size, const char *what, const optim__ck_ops *ops,
                     optim__ck_plan *pl, optim_error *err);
void optim__ck_plan_free(optim__ck_plan *pl);

/* The schedule decoder alone: one schedule tree (as a GRUP section holds it)
 * from the size bytes at data; *used receives the bytes it took. For the
 * fuzzer of the decoder's entry points. */
int optim__ck_decode_schedule(const unsigned char *data, size_t size, size_t *used, optim_schedule **out,
                              const optim__ck_ops *ops, optim_error *err);

/* Size k of a parameter plan's shape. */
uint64_t optim__ck_dim(const optim__ck_param_plan *pp, size_t k);
/* Bytes of a slot of n elements of dtype in the file (int8_block: n codes,
 * then a little-endian binary32 scale per block). */
size_t optim__ck_slot_bytes(size_t n, optim_dtype dtype);
/* n little-endian elements of dtype from src into dst (int8_block: into a
 * slot's layout, codes then scales at OPTIM_INT8_BLOCK_SCALES_OFFSET(n)). */
void optim__ck_read_elems(void *dst, const unsigned char *src, size_t n, optim_dtype dtype);
/* The same into elements of dst_dtype: converted when the types differ (both
 * of float32, bfloat16, float16 and int8_block: widened exactly, rounded to
 * nearest even, dequantized or quantized block by block with the code of
 * slot kind `kind`, as a step would). */
void optim__ck_read_elems_as(void *dst, optim_dtype dst_dtype, const unsigned char *src, size_t n,
                             optim_dtype src_dtype, int kind);
/* "[4, 2]" into buf, from ndim sizes in memory (dims) or a plan's (pp). */
const char *optim__ck_shape_text(char *buf, size_t size, size_t ndim, const int64_t *dims,
                                 const optim__ck_param_plan *pp);

#endif
