/* ckpt_format.c: the checkpoint's bytes (see ckpt_format.h and
 * docs/CHECKPOINT.md): the limits the builders check, the encoder and the
 * decoder.
 *
 * Encoding: the whole file is first "written" to a counting writer to learn
 * its size and each section's length (state arrays are only counted, not
 * read), then emitted for real through a caller's sink (memory or a file).
 *
 * Decoding: a first pass walks the sections and checks every section's
 * checksum (so that a damaged byte is reported with the section, and the
 * parameter or group, it belongs to), then the file's; a second pass parses
 * them with a bounds-checked reader into a plan (every group's
 * hyperparameters and schedule, every parameter's fields and pointers to its
 * state data in the bytes). Every field is checked there: the matching
 * against an optimizer (ckpt_match.c) only compares. */
#include "ckpt_format.h"
#include "schedule_internal.h"
#include "kernels/convert.h"
#include "kernels/quant8.h"

#include <float.h>
#include <math.h>
#include <stdio.h>

#define CK_FORMAT_SHAPES 2     /* the first format whose PARM holds the shape */
#define CK_FORMAT_CLIP_VALUE 2 /* the first format whose META ends with the fused clip_value */
#define CK_FORMAT_DTYPES 3     /* the first format whose PARM gives each slot's element type */

/* Fuzzing builds (OPTIM_FUZZ) accept wrong checksums, as OSS-Fuzz's convention
 * has it, so that the fuzzer's mutations reach the parser behind them instead
 * of stopping at the first CRC. Never in a normal build. */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#  define CK_CRC_BAD(got, want) ((void)(got), (void)(want), 0)
#else
#  define CK_CRC_BAD(got, want) ((got) != (want))
#endif

/* ---- Limits checked when the object is built ----------------------------------- */

int optim__ck_fits_param(optim *o, const char *fn, const char *name, size_t n)
{
    size_t len = name ? strlen(name) : 0;
    OPTIM__FAIL_IF(len > OPTIM_MAX_NAME, &o->err, OPTIM_EINVAL,
                   "%s: the name of %zu bytes is longer than OPTIM_MAX_NAME = %d (what a checkpoint stores)", fn, len,
                   OPTIM_MAX_NAME);
    OPTIM__FAIL_IF(n > OPTIM__CK_MAX_NUMEL, &o->err, OPTIM_EINVAL,
                   "%s: n = %zu floats is more than memory can hold (at most SIZE_MAX / 4 = %zu)", fn, n,
                   (size_t)OPTIM__CK_MAX_NUMEL);
    OPTIM__FAIL_IF((uint64_t)o->nparams + o->ngroups + 3 > OPTIM__CK_MAX_SECTIONS, &o->err, OPTIM_EINVAL,
                   "%s: param %zu would make %llu checkpoint sections, more than a checkpoint holds (%llu)", fn,
                   o->nparams, (unsigned long long)o->nparams + o->ngroups + 3,
                   (unsigned long long)OPTIM__CK_MAX_SECTIONS);
    return OPTIM_OK;
}

int optim__ck_fits_group(optim *o, const char *fn)
{
    OPTIM__FAIL_IF((uint64_t)o->ngroups + 1 > OPTIM__CK_MAX_GROUPS, &o->err, OPTIM_EINVAL,
                   "%s: group %zu would be one more than a checkpoint holds (%llu groups)", fn, o->ngroups,
                   (unsigned long long)OPTIM__CK_MAX_GROUPS);
    OPTIM__FAIL_IF((uint64_t)o->nparams + o->ngroups + 3 > OPTIM__CK_MAX_SECTIONS, &o->err, OPTIM_EINVAL,
                   "%s: group %zu would make %llu checkpoint sections, more than a checkpoint holds (%llu)", fn,
                   o->ngroups, (unsigned long long)o->nparams + o->ngroups + 3,
                   (unsigned long long)OPTIM__CK_MAX_SECTIONS);
    return OPTIM_OK;
}

/* ---- Writing ------------------------------------------------------------------ */

typedef struct ck_writer {
    optim__ck_emit emit; /* NULL: count only */
    void *ctx;
    uint64_t total;      /* bytes emitted (or counted) so far */
    uint32_t file_crc;
    uint32_t sec_crc;
    int failed;          /* the first errno emit returned, 0 if none */
} ck_writer;

static void ck_put(ck_writer *w, const void *data, size_t n)
{
    w->total += n;
    if (!w->emit) return;
    w->file_crc = optim__crc32c(w->file_crc, data, n);
    w->sec_crc = optim__crc32c(w->sec_crc, data, n);
    if (!w->failed) w->failed = w->emit(w->ctx, data, n);
}

static void ck_u8(ck_writer *w, unsigned v)
{
    unsigned char b = (unsigned char)v;
    ck_put(w, &b, 1);
}

static void ck_u32(ck_writer *w, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
    ck_put(w, b, 4);
}

static void ck_u64(ck_writer *w, uint64_t v)
{
    ck_u32(w, (uint32_t)v);
    ck_u32(w, (uint32_t)(v >> 32));
}

static void ck_f64(ck_writer *w, double d)
{
    uint64_t v;
    memcpy(&v, &d, sizeof v);
    ck_u64(w, v);
}

static int ck_host_little_endian(void)
{
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* n elements of a state type (float32, float64, bfloat16 or float16) as
 * little-endian IEEE binary32, binary64, bfloat16 or binary16. */
static void ck_elems(ck_writer *w, const void *x, size_t n, optim_dtype dtype)
{
    const size_t size = optim_dtype_size(dtype);
    if (!w->emit) {
        w->total += size * (uint64_t)n;
        return;
    }
    if (ck_host_little_endian()) {
        ck_put(w, x, n * size);
    } else {
        size_t i;
        for (i = 0; i < n; i++) {
            if (size == 8) {
                uint64_t v;
                memcpy(&v, (const char *)x + 8 * i, 8);
                ck_u64(w, v);
            } else if (size == 4) {
                uint32_t v;
                memcpy(&v, (const char *)x + 4 * i, 4);
                ck_u32(w, v);
            } else {
                uint16_t v;
                unsigned char b[2];
                memcpy(&v, (const char *)x + 2 * i, 2);
                b[0] = (unsigned char)(v & 0xffu);
                b[1] = (unsigned char)(v >> 8);
                ck_put(w, b, 2);
            }
        }
    }
}

/* n copies of v rounded to dtype, as ck_elems writes them (deferred state:
 * fresh, never allocated). */
static void ck_fill(ck_writer *w, double v, size_t n, optim_dtype dtype)
{
    double chunk[256];
    float chunkf[256];
    size_t i, k;
    for (i = 0; i < 256; i++) {
        chunk[i] = v;
        chunkf[i] = (float)v;
    }
    for (i = 0; i < n; i += k) {
        k = n - i < 256 ? n - i : 256;
        ck_elems(w, dtype == OPTIM_FLOAT64 ? (const void *)chunk : (const void *)chunkf, k, dtype);
    }
}

/* An int8_block slot of n elements as the file holds it: the n codes, then
 * its block scales as little-endian binary32 (no padding between them). */
static void ck_q8(ck_writer *w, const void *slot, size_t n)
{
    ck_put(w, slot, n);
    ck_elems(w, (const char *)slot + OPTIM_INT8_BLOCK_SCALES_OFFSET(n), (n + OPTIM_INT8_BLOCK_SIZE - 1) / OPTIM_INT8_BLOCK_SIZE,
             OPTIM_FLOAT32);
}

/* A fresh int8_block slot holding v everywhere (deferred state), as
 * optim__slot_reset fills one. */
static void ck_q8_fill(ck_writer *w, double v, size_t n, int kind)
{
    unsigned char codes[256];
    float one = (float)v, scale, scales[64];
    uint8_t code;
    size_t i, k, nb = (n + OPTIM_INT8_BLOCK_SIZE - 1) / OPTIM_INT8_BLOCK_SIZE;
    optim__q8_quantize(&code, &scale, &one, 1, kind);
    memset(codes, code, sizeof codes);
    for (i = 0; i < 64; i++) scales[i] = scale;
    for (i = 0; i < n; i += k) {
        k = n - i < sizeof codes ? n - i : sizeof codes;
        ck_put(w, codes, k);
    }
    for (i = 0; i < nb; i += k) {
        k = nb - i < 64 ? nb - i : 64;
        ck_elems(w, scales, k, OPTIM_FLOAT32);
    }
}

static void ck_schedule(ck_writer *w, const optim_schedule *s)
{
    size_t i;
    ck_u32(w, (uint32_t)s->kind);
    for (i = 0; i < OPTIM__SCHED_NI; i++) ck_u64(w, (uint64_t)s->ints[i]);
    for (i = 0; i < OPTIM__SCHED_NR; i++) ck_f64(w, s->reals[i]);
    ck_u32(w, (uint32_t)s->nmilestones); /* <= OPTIM_SCHEDULE_MAX_MILESTONES */
    for (i = 0; i < s->nmilestones; i++) ck_u64(w, (uint64_t)s->milestones[i]);
    ck_u32(w, (uint32_t)s->nchildren);   /* <= OPTIM_SCHEDULE_MAX_CHILDREN */
    for (i = 0; i < s->nchildren; i++) ck_schedule(w, s->children[i]);
}

typedef void (*ck_section_fn)(ck_writer *w, const optim *o, size_t i);

static void ck_meta(ck_writer *w, const optim *o, size_t i)
{
    const char *v = optim_version_string();
    (void)i;
    ck_u32(w, (uint32_t)o->rule);
    ck_u32(w, (uint32_t)o->ngroups); /* <= OPTIM__CK_MAX_GROUPS */
    ck_u64(w, (uint64_t)o->nparams);
    ck_u64(w, (uint64_t)o->steps);
    ck_u64(w, (uint64_t)o->skipped);
    ck_u32(w, (uint32_t)o->nonfinite);
    ck_u32(w, 0);
    ck_f64(w, o->clip_max_norm);
    ck_f64(w, o->clip_norm_type);
    ck_u32(w, (uint32_t)strlen(v));
    ck_put(w, v, strlen(v));
    ck_f64(w, o->clip_value);
}

static void ck_group(ck_writer *w, const optim *o, size_t g)
{
    const optim__group *gr = &o->groups[g];
    uint32_t count = 0;
    int id;
    for (id = 1; id <= OPTIM_HP_COUNT; id++) count += (uint32_t)optim_rule_uses(o->rule, (optim_hparam)id);
    ck_u32(w, (uint32_t)g);
    ck_u32(w, count);
    for (id = 1; id <= OPTIM_HP_COUNT; id++) {
        double v = 0;
        if (!optim_rule_uses(o->rule, (optim_hparam)id)) continue;
        optim_hparams_get(&gr->hp, (optim_hparam)id, &v, NULL);
        ck_u32(w, (uint32_t)id);
        ck_f64(w, v);
    }
    ck_u64(w, (uint64_t)gr->sched_t); /* counted also without a schedule: one may be attached later */
    ck_u8(w, gr->sched != NULL);
    if (gr->sched) ck_schedule(w, gr->sched);
}

/* The slots written for pa: those it holds, and for state deferred
 * (optim_set_defer_state) those its group needs, written as fresh state. */
static unsigned ck_slot_mask(const optim *o, const optim__param *pa)
{
    const unsigned need = optim_hparams_slots(&o->groups[pa->group].hp);
    unsigned mask = pa->deferred ? need : 0u;
    int s;
    for (s = 0; s < OPTIM_MAX_SLOTS; s++)
        if (pa->st.slot[s] ||
            (((need >> s) & 1u) && pa->n > 0 &&
             optim__slot_len(o->rule, s, pa->n, pa->dims ? pa->ndim : 0, pa->dims) == 0))
            mask |= 1u << s; /* a slot the shape leaves empty (Adafactor's) is written with 0 elements */
    return mask;
}

static void ck_param(ck_writer *w, const optim *o, size_t i)
{
    const optim__param *pa = &o->params[i];
    const optim_hparams *hp = &o->groups[pa->group].hp;
    unsigned mask = ck_slot_mask(o, pa), initialized = pa->st.initialized;
    size_t len = strlen(pa->name), k; /* <= OPTIM_MAX_NAME */
    int s;
    ck_u64(w, (uint64_t)i);
    ck_u32(w, (uint32_t)len);
    ck_put(w, pa->name, len);
    ck_u32(w, (uint32_t)pa->group);
    ck_u64(w, (uint64_t)pa->n);
    /* The shape (format 2): given or the default [n]. */
    ck_u8(w, pa->dims != NULL);
    if (pa->dims) {
        ck_u32(w, (uint32_t)pa->ndim);
        for (k = 0; k < pa->ndim; k++) ck_u64(w, (uint64_t)pa->dims[k]);
    } else {
        ck_u32(w, 1);
        ck_u64(w, (uint64_t)pa->n);
    }
    ck_u64(w, (uint64_t)pa->st.step);
    ck_f64(w, pa->st.mu_product);
    for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
        int init;
        if (!((mask >> s) & 1u) || pa->st.slot[s]) continue;
        (void)optim__slot_initial(hp, s, &init);
        initialized = init ? initialized | 1u << s : initialized & ~(1u << s);
    }
    ck_u32(w, initialized & mask);
    ck_u32(w, mask);
    for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
        int init;
        /* n elements, but for a rule whose slots follow the shape written above (Adafactor's factors). */
        const size_t sn = optim__slot_len(o->rule, s, pa->n, pa->dims ? pa->ndim : 0, pa->dims);
        if (!((mask >> s) & 1u)) continue;
        ck_u32(w, (uint32_t)pa->sdt); /* format 3: the slot's element type */
        if (pa->sdt == OPTIM_INT8_BLOCK && pa->st.slot[s])
            ck_q8(w, pa->st.slot[s], sn);
        else if (pa->sdt == OPTIM_INT8_BLOCK)
            ck_q8_fill(w, optim__slot_initial(hp, s, &init), sn, optim__rule(o->rule)->slot_kinds[s]);
        else if (pa->st.slot[s])
            ck_elems(w, pa->st.slot[s], sn, pa->sdt);
        else
            ck_fill(w, optim__slot_initial(hp, s, &init), sn, pa->sdt);
    }
}

/* Does o have anything for a PREC section (a seed, loss scaling, a master)? */
static int ck_has_prec(const optim *o)
{
    size_t i;
    if (o->seed != 0 || o->ls.mode != OPTIM_LOSS_SCALE_OFF) return 1;
    for (i = 0; i < o->nparams; i++)
        if (o->params[i].master) return 1;
    return 0;
}

static void ck_prec(ck_writer *w, const optim *o, size_t unused)
{
    uint64_t count = 0;
    size_t i;
    (void)unused;
    ck_u64(w, o->seed);
    ck_u32(w, (uint32_t)o->ls.mode);
    ck_u32(w, 0);
    ck_f64(w, o->ls.init_scale);
    ck_f64(w, o->ls.growth_factor);
    ck_f64(w, o->ls.backoff_factor);
    ck_u64(w, (uint64_t)o->ls.growth_interval);
    ck_f64(w, o->ls_scale);
    ck_u64(w, (uint64_t)o->ls_tracker);
    for (i = 0; i < o->nparams; i++) count += o->params[i].master != NULL;
    ck_u64(w, count);
    for (i = 0; i < o->nparams; i++) {
        const optim__param *pa = &o->params[i];
        if (!pa->master) continue;
        ck_u64(w, (uint64_t)i);
        ck_u64(w, (uint64_t)pa->n);
        ck_elems(w, pa->master, pa->n, OPTIM_FLOAT32);
    }
}

static int ck_has_sf(const optim *o)
{
    return o->rule == OPTIM_SGD_SCHEDULE_FREE || o->rule == OPTIM_ADAMW_SCHEDULE_FREE;
}

/* The SFRE section: the mode (1: eval), a reserved 0, the count of params,
 * then each param's lr_max and weight_sum, in param order. */
static void ck_sf(ck_writer *w, const optim *o, size_t unused)
{
    size_t i;
    (void)unused;
    ck_u32(w, (uint32_t)(o->sf_eval != 0));
    ck_u32(w, 0);
    ck_u64(w, (uint64_t)o->nparams);
    for (i = 0; i < o->nparams; i++) {
        ck_f64(w, o->params[i].st.lr_max);
        ck_f64(w, o->params[i].st.weight_sum);
    }
}

/* Does a parameter's own EMA count differ from the optimizer's (one added after the EMA began)? */
static int ck_ema_counts(const optim *o)
{
    size_t i;
    for (i = 0; i < o->nparams; i++)
        if (o->params[i].ema_start != 0) return 1;
    return 0;
}

/* The EMAS section: warm-up, swapped, decay, count, the count of params,
 * then per param: the average's element type, its stash's (0 none), n, the
 * n elements of the average, the n elements of the stash; then, only when a
 * parameter's own count differs from the optimizer's (added after the EMA
 * began, optim_ema_param_count), every parameter's own count (so that other
 * files keep their bytes, and a reader without the counts refuses the file:
 * bytes left over in EMAS). */
static void ck_ema(ck_writer *w, const optim *o, size_t unused)
{
    size_t i;
    (void)unused;
    ck_u32(w, (uint32_t)o->ema_warmup);
    ck_u32(w, (uint32_t)o->ema_swapped);
    ck_f64(w, o->ema_decay);
    ck_u64(w, (uint64_t)o->ema_count);
    ck_u64(w, (uint64_t)o->nparams);
    for (i = 0; i < o->nparams; i++) {
        const optim__param *pa = &o->params[i];
        const optim_dtype et = pa->ct == OPTIM__CT_F64 ? OPTIM_FLOAT64 : OPTIM_FLOAT32;
        const int stash = o->ema_swapped && pa->ema_stash;
        ck_u32(w, (uint32_t)et);
        ck_u32(w, stash ? (uint32_t)pa->pdt : 0u);
        ck_u64(w, (uint64_t)pa->n);
        ck_elems(w, pa->ema, pa->n, et);
        if (stash) ck_elems(w, pa->ema_stash, pa->n, pa->pdt);
    }
    if (ck_ema_counts(o))
        for (i = 0; i < o->nparams; i++) ck_u64(w, (uint64_t)(o->ema_count - o->params[i].ema_start));
}

/* One section: its head, its payload (length measured by a counting pass),
 * its checksum. */
static void ck_section(ck_writer *w, uint32_t tag, ck_section_fn fn, const optim *o, size_t i)
{
    ck_writer count;
    memset(&count, 0, sizeof count);
    fn(&count, o, i);
    w->sec_crc = 0;
    ck_u32(w, tag);
    ck_u32(w, 0);
    ck_u64(w, count.total);
    fn(w, o, i);
    ck_u32(w, w->sec_crc);
}

/* Everything after the header, and the trailer; returns the section count. */
static uint32_t ck_body(ck_writer *w, const optim *o)
{
    size_t i;
    ck_section(w, OPTIM__CK_META, ck_meta, o, 0);
    for (i = 0; i < o->ngroups; i++) ck_section(w, OPTIM__CK_GRUP, ck_group, o, i);
    for (i = 0; i < o->nparams; i++) ck_section(w, OPTIM__CK_PARM, ck_param, o, i);
    if (ck_has_prec(o)) ck_section(w, OPTIM__CK_PREC, ck_prec, o, 0);
    if (ck_has_sf(o)) ck_section(w, OPTIM__CK_SFRE, ck_sf, o, 0);
    if (o->ema_on) ck_section(w, OPTIM__CK_EMAS, ck_ema, o, 0);
    /* <= OPTIM__CK_MAX_SECTIONS (PREC and SFRE or EMAS, never both, are counted in the limit's margin of 3) */
    return (uint32_t)(1 + o->ngroups + o->nparams + (uint32_t)ck_has_prec(o) + (uint32_t)ck_has_sf(o) +
                      (uint32_t)(o->ema_on != 0));
}

uint64_t optim__ck_size(const optim *o)
{
    ck_writer c;
    memset(&c, 0, sizeof c);
    c.total = OPTIM__CK_HEADER;
    ck_body(&c, o);
    return c.total + OPTIM__CK_TRAILER;
}

/* Emit into memory (the header, built before the body). */
static int ck_emit_mem(void *ctx, const void *data, size_t n)
{
    unsigned char **at = (unsigned char **)ctx;
    memcpy(*at, data, n);
    *at += n;
    return 0;
}

int optim__ck_encode(const optim *o, uint64_t size, optim__ck_emit emit, void *ctx)
{
    unsigned char head[OPTIM__CK_HEADER], *at = head;
    ck_writer hw, w;
    uint32_t crc;
    /* Header: magic, version, flags, file size, section count, header CRC. */
    memset(&hw, 0, sizeof hw);
    hw.emit = ck_emit_mem;
    hw.ctx = &at;
    ck_put(&hw, OPTIM__CK_MAGIC, 8);
    ck_u32(&hw, OPTIM_CHECKPOINT_FORMAT);
    ck_u32(&hw, 0);
    ck_u64(&hw, size);
    ck_u32(&hw, (uint32_t)(1 + o->ngroups + o->nparams + (uint32_t)ck_has_prec(o) + (uint32_t)ck_has_sf(o) +
                           (uint32_t)(o->ema_on != 0))); /* as ck_body writes */
    ck_u32(&hw, optim__crc32c(0, head, 28));
    memset(&w, 0, sizeof w);
    w.emit = emit;
    w.ctx = ctx;
    ck_put(&w, head, OPTIM__CK_HEADER);
    ck_body(&w, o);
    crc = w.file_crc;
    ck_u32(&w, crc);
    ck_put(&w, OPTIM__CK_END, 8);
    return w.failed;
}

void optim__ck_encode_mem(const optim *o, uint64_t size, unsigned char *mem)
{
    optim__ck_encode(o, size, ck_emit_mem, &mem); /* memory cannot fail */
}

/* ---- Reading ------------------------------------------------------------------ */

typedef struct ck_reader {
    const unsigned char *p;
    size_t len, pos;
    const optim__ck_ops *ops;
} ck_reader;

static int ck_has(const ck_reader *r, size_t n)
{
    return r->len - r->pos >= n;
}

static uint32_t ck_le32(const unsigned char *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint64_t ck_le64(const unsigned char *b)
{
    return (uint64_t)ck_le32(b) | (uint64_t)ck_le32(b + 4) << 32;
}

static unsigned ck_get_u8(ck_reader *r)
{
    return r->p[r->pos++];
}

static uint32_t ck_get_u32(ck_reader *r)
{
    uint32_t v = ck_le32(r->p + r->pos);
    r->pos += 4;
    return v;
}

static uint64_t ck_get_u64(ck_reader *r)
{
    uint64_t v = ck_le64(r->p + r->pos);
    r->pos += 8;
    return v;
}

static double ck_get_f64(ck_reader *r)
{
    uint64_t v = ck_get_u64(r);
    double d;
    memcpy(&d, &v, sizeof d);
    return d;
}

uint64_t optim__ck_dim(const optim__ck_param_plan *pp, size_t k)
{
    return ck_le64(pp->dims + 8 * k);
}

size_t optim__ck_slot_bytes(size_t n, optim_dtype dtype)
{
    return dtype == OPTIM_INT8_BLOCK ? n + 4 * ((n + OPTIM_INT8_BLOCK_SIZE - 1) / OPTIM_INT8_BLOCK_SIZE)
                                     : n * optim_dtype_size(dtype);
}

void optim__ck_read_elems(void *dst, const unsigned char *src, size_t n, optim_dtype dtype)
{
    const size_t size = optim_dtype_size(dtype);
    if (dtype == OPTIM_INT8_BLOCK) {
        /* The codes, then the scales after the codes' padding (the slot's layout). */
        memcpy(dst, src, n);
        optim__ck_read_elems((char *)dst + OPTIM_INT8_BLOCK_SCALES_OFFSET(n), src + n,
                             (n + OPTIM_INT8_BLOCK_SIZE - 1) / OPTIM_INT8_BLOCK_SIZE, OPTIM_FLOAT32);
        return;
    }
    if (ck_host_little_endian()) {
        memcpy(dst, src, n * size);
    } else {
        size_t i;
        for (i = 0; i < n; i++) {
            if (size == 8) {
                uint64_t v = ck_le64(src + 8 * i);
                memcpy((char *)dst + 8 * i, &v, 8);
            } else if (size == 4) {
                uint32_t v = ck_le32(src + 4 * i);
                memcpy((char *)dst + 4 * i, &v, 4);
            } else {
                uint16_t v = (uint16_t)(src[2 * i] | (unsigned)src[2 * i + 1] << 8);
                memcpy((char *)dst + 2 * i, &v, 2);
            }
        }
    }
}

/* Element i of n little-endian elements of a float-family type, as float. */
static float ck_elem_f32(const unsigned char *src, size_t i, optim_dtype dtype)
{
    if (dtype == OPTIM_FLOAT32) return optim__f32_from_bits(ck_le32(src + 4 * i));
    {
        const uint16_t h = (uint16_t)(src[2 * i] | (unsigned)src[2 * i + 1] << 8);
        return dtype == OPTIM_BFLOAT16 ? optim__bf16_to_f32(h) : optim__f16_to_f32(h);
    }
}

void optim__ck_read_elems_as(void *dst, optim_dtype dst_dtype, const unsigned char *src, size_t n,
                             optim_dtype src_dtype, int kind)
{
    size_t i;
    if (dst_dtype == src_dtype) {
        optim__ck_read_elems(dst, src, n, src_dtype);
        return;
    }
    if (src_dtype == OPTIM_INT8_BLOCK || dst_dtype == OPTIM_INT8_BLOCK) {
        /* Block by block through float: dequantized as a step loads the
         * codes, quantized as a step stores them (no allocation: the commit
         * cannot fail). */
        const unsigned char *scales = src + n;
        size_t b;
        for (b = 0; b < n; b += OPTIM_INT8_BLOCK_SIZE) {
            float x[OPTIM_INT8_BLOCK_SIZE];
            const size_t len = n - b < OPTIM_INT8_BLOCK_SIZE ? n - b : OPTIM_INT8_BLOCK_SIZE;
            for (i = 0; i < len; i++) {
                if (src_dtype != OPTIM_INT8_BLOCK) {
                    x[i] = ck_elem_f32(src, b + i, src_dtype);
                } else {
                    const float A = optim__f32_from_bits(ck_le32(scales + 4 * (b / OPTIM_INT8_BLOCK_SIZE)));
                    x[i] = OPTIM__Q8_UNSIGNED(kind) ? optim__q8_dec_u(src[b + i], A) : optim__q8_dec_s(src[b + i], A);
                }
            }
            if (dst_dtype == OPTIM_INT8_BLOCK)
                optim__q8_quantize((uint8_t *)dst + b,
                                   (float *)(void *)((char *)dst + OPTIM_INT8_BLOCK_SCALES_OFFSET(n)) +
                                       b / OPTIM_INT8_BLOCK_SIZE,
                                   x, len, kind);
            else
                optim__slot_from_f32((char *)dst + b * optim_dtype_size(dst_dtype), x, len, dst_dtype, kind);
        }
        return;
    }
    for (i = 0; i < n; i++) {
        const float x = ck_elem_f32(src, i, src_dtype);
        if (dst_dtype == OPTIM_FLOAT32)
            ((float *)dst)[i] = x;
        else if (dst_dtype == OPTIM_BFLOAT16)
            ((uint16_t *)dst)[i] = optim__f32_to_bf16(x);
        else
            ((uint16_t *)dst)[i] = optim__f32_to_f16(x);
    }
}

void optim__ck_plan_free(optim__ck_plan *pl)
{
    size_t i;
    if (pl->groups)
        for (i = 0; i < pl->ngroups; i++) optim_schedule_free(pl->groups[i].sched);
    free(pl->groups);
    free(pl->params);
    free((void *)pl->masters);
    free(pl->sf);
    free((void *)pl->ema);
    free((void *)pl->ema_stash);
    free(pl->ema_dtype);
    free(pl->ema_stash_dtype);
    free(pl->ema_counts);
    memset(pl, 0, sizeof *pl);
}

/* Parse a schedule tree at distance `depth` from its root from r (bounded by
 * the caller's section length). */
static int ck_read_schedule(ck_reader *r, optim_schedule **out, int depth, const char *what, optim_error *err)
{
    int64_t ints[OPTIM__SCHED_NI], *miles = NULL;
    double reals[OPTIM__SCHED_NR];
    optim_schedule **kids = NULL;
    uint32_t kind, nm, nc, i;
    int rc;
    *out = NULL;
    /* Checked before reading on: the recursion is bounded by the limit itself. */
    OPTIM__FAIL_IF(depth > OPTIM_SCHEDULE_MAX_DEPTH, err, OPTIM_EFORMAT,
                   "%s: schedules nested deeper than OPTIM_SCHEDULE_MAX_DEPTH = %d", what, OPTIM_SCHEDULE_MAX_DEPTH);
    OPTIM__FAIL_IF(!ck_has(r, 4 + 8 * OPTIM__SCHED_NI + 8 * OPTIM__SCHED_NR + 4), err, OPTIM_EFORMAT,
                   "%s: schedule runs past its section", what);
    kind = ck_get_u32(r);
    for (i = 0; i < OPTIM__SCHED_NI; i++) ints[i] = (int64_t)ck_get_u64(r);
    for (i = 0; i < OPTIM__SCHED_NR; i++) reals[i] = ck_get_f64(r);
    nm = ck_get_u32(r);
    OPTIM__FAIL_IF(nm > OPTIM_SCHEDULE_MAX_MILESTONES, err, OPTIM_EFORMAT,
                   "%s: %u schedule milestones, more than OPTIM_SCHEDULE_MAX_MILESTONES = %d", what, nm,
                   OPTIM_SCHEDULE_MAX_MILESTONES);
    OPTIM__FAIL_IF(!ck_has(r, (size_t)nm * 8 + 4), err, OPTIM_EFORMAT, "%s: %u schedule milestones run past the section",
                   what, nm);
    if (nm) {
        miles = (int64_t *)optim__ck_malloc(r->ops, nm * sizeof *miles);
        OPTIM__FAIL_IF(!miles, err, OPTIM_ENOMEM, "%s: out of memory for %u schedule milestones", what, nm);
        for (i = 0; i < nm; i++) miles[i] = (int64_t)ck_get_u64(r);
    }
    nc = ck_get_u32(r);
    if (nc > OPTIM_SCHEDULE_MAX_CHILDREN || nc > r->len - r->pos) { /* every child takes far more than a byte */
        free(miles);
        if (nc > OPTIM_SCHEDULE_MAX_CHILDREN)
            return optim__fail(err, OPTIM_EFORMAT, "%s: %u child schedules, more than OPTIM_SCHEDULE_MAX_CHILDREN = %d",
                               what, nc, OPTIM_SCHEDULE_MAX_CHILDREN);
        return optim__fail(err, OPTIM_EFORMAT, "%s: %u child schedules run past the section", what, nc);
    }
    if (nc) {
        kids = (optim_schedule **)optim__ck_calloc(r->ops, nc, sizeof *kids);
        if (!kids) {
            free(miles);
            return optim__fail(err, OPTIM_ENOMEM, "%s: out of memory for %u child schedules", what, nc);
        }
        for (i = 0; i < nc; i++) {
            rc = ck_read_schedule(r, &kids[i], depth + 1, what, err);
            if (rc != OPTIM_OK) {
                uint32_t k;
                for (k = 0; k < i; k++) optim_schedule_free(kids[k]);
                free(kids);
                free(miles);
                return rc;
            }
        }
    }
    /* The constructors check every argument again (and that unused ones are 0)
     * and take the children. */
    rc = optim__schedule_from_parts(out, (optim_schedule_kind)kind, ints, reals, miles, nm, kids, nc, err);
    free(kids);
    free(miles);
    if (rc != OPTIM_OK) {
        char msg[OPTIM_ERRMSG_MAX];
        snprintf(msg, sizeof msg, "%s", err ? err->message : "");
        return optim__fail(err, rc == OPTIM_ENOMEM ? OPTIM_ENOMEM : OPTIM_EFORMAT, "%s: %s (%s)", what,
                           rc == OPTIM_ENOMEM ? "out of memory for a schedule" : "invalid schedule", msg);
    }
    return OPTIM_OK;
}

int optim__ck_decode_schedule(const unsigned char *data, size_t size, size_t *used, optim_schedule **out,
                              const optim__ck_ops *ops, optim_error *err)
{
    ck_reader r;
    int rc;
    r.p = data;
    r.len = size;
    r.pos = 0;
    r.ops = ops ? ops : &optim__ck_default_ops;
    rc = ck_read_schedule(&r, out, 0, "schedule", err);
    if (used) *used = r.pos;
    return rc;
}

static const char *ck_tag_name(uint32_t tag, char buf[8])
{
    int i;
    for (i = 0; i < 4; i++) {
        unsigned char c = (unsigned char)(tag >> (8 * i));
        buf[i] = (char)(c >= 32 && c < 127 ? c : '?');
    }
    buf[4] = '\0';
    return buf;
}

/* "section 4 (PARM of param 1 'fc.weight')": which part of the file a
 * section is, from its place among the sections of its tag (the order is
 * fixed) and, for a PARM, the name it holds if that name looks intact. */
static void ck_section_name(char *buf, size_t size, uint32_t k, uint32_t tag, size_t ordinal,
                            const unsigned char *payload, uint64_t len)
{
    char tb[8];
    ck_tag_name(tag, tb);
    if (tag == OPTIM__CK_GRUP) {
        snprintf(buf, size, "section %u (GRUP of group %zu)", k, ordinal);
    } else if (tag == OPTIM__CK_PARM) {
        uint32_t nlen = len >= 12 ? ck_le32(payload + 8) : 0;
        int printable = len >= 12 && nlen > 0 && nlen <= 64 && nlen <= len - 12;
        uint32_t i;
        for (i = 0; printable && i < nlen; i++) printable = payload[12 + i] >= 32 && payload[12 + i] < 127;
        if (printable)
            snprintf(buf, size, "section %u (PARM of param %zu '%.*s')", k, ordinal, (int)nlen,
                     (const char *)payload + 12);
        else
            snprintf(buf, size, "section %u (PARM of param %zu)", k, ordinal);
    } else {
        snprintf(buf, size, "section %u (%s)", k, tb);
    }
}

static int ck_parse_meta(ck_reader *r, optim__ck_plan *pl, const char *what, optim_error *err)
{
    uint32_t len, reserved;
    OPTIM__FAIL_IF(!ck_has(r, 4 + 4 + 8 + 8 + 8 + 4 + 4 + 8 + 8 + 4), err, OPTIM_EFORMAT,
                   "%s: META section too short", what);
    pl->rule = (optim_rule)ck_get_u32(r);
    pl->ngroups = ck_get_u32(r);
    pl->nparams = (size_t)ck_get_u64(r);
    pl->steps = (int64_t)ck_get_u64(r);
    pl->skipped = (int64_t)ck_get_u64(r);
    pl->nonfinite = (optim_nonfinite)ck_get_u32(r);
    reserved = ck_get_u32(r);
    pl->clip_max_norm = ck_get_f64(r);
    pl->clip_norm_type = ck_get_f64(r);
    len = ck_get_u32(r);
    OPTIM__FAIL_IF(!ck_has(r, len), err, OPTIM_EFORMAT, "%s: META's library version runs past the section", what);
    snprintf(pl->library, sizeof pl->library, "%.*s", (int)(len < 31 ? len : 31), (const char *)r->p + r->pos);
    r->pos += len;
    pl->clip_value = 0;
    if (pl->format >= CK_FORMAT_CLIP_VALUE) {
        OPTIM__FAIL_IF(!ck_has(r, 8), err, OPTIM_EFORMAT, "%s: META's clip_value runs past the section", what);
        pl->clip_value = ck_get_f64(r);
        OPTIM__FAIL_IF(!(pl->clip_value >= 0) || isinf(pl->clip_value) || (pl->clip_value > 0 && pl->clip_max_norm > 0),
                       err, OPTIM_EFORMAT, "%s: clip_value = %.10g (with max_norm = %.10g)", what, pl->clip_value,
                       pl->clip_max_norm);
    }
    OPTIM__FAIL_IF(!optim_rule_name(pl->rule), err, OPTIM_EFORMAT, "%s: rule = %d is not a rule", what, (int)pl->rule);
    OPTIM__FAIL_IF(pl->steps < 0 || pl->skipped < 0, err, OPTIM_EFORMAT, "%s: negative step counters", what);
    OPTIM__FAIL_IF(pl->nonfinite > OPTIM_NONFINITE_ERROR, err, OPTIM_EFORMAT, "%s: non-finite policy = %u", what,
                   (unsigned)pl->nonfinite);
    OPTIM__FAIL_IF(reserved != 0, err, OPTIM_EFORMAT, "%s: reserved field = %u (0)", what, reserved);
    OPTIM__FAIL_IF(!(pl->clip_max_norm >= 0) || isinf(pl->clip_max_norm) || !(pl->clip_norm_type > 0), err,
                   OPTIM_EFORMAT, "%s: clipping max_norm = %.10g, norm_type = %.10g", what, pl->clip_max_norm,
                   pl->clip_norm_type);
    return OPTIM_OK;
}

_Static_assert(OPTIM_HP_COUNT < 64, "ck_parse_group marks the ids it has seen in a uint64_t");

static int ck_parse_group(ck_reader *r, optim__ck_plan *pl, size_t expect, const char *what, optim_error *err)
{
    optim__ck_group_plan *gp;
    uint32_t index, count, i;
    uint64_t seen = 0;
    unsigned has_sched;
    char where[OPTIM_ERRMSG_MAX];
    OPTIM__FAIL_IF(!ck_has(r, 8), err, OPTIM_EFORMAT, "%s: GRUP section too short", what);
    index = ck_get_u32(r);
    count = ck_get_u32(r);
    OPTIM__FAIL_IF(index != expect, err, OPTIM_EFORMAT, "%s: group section %zu holds group %u", what, expect, index);
    gp = &pl->groups[index];
    snprintf(where, sizeof where, "%.200s: group %u", what, index);
    optim_hparams_init(&gp->hp, pl->rule, NULL);
    OPTIM__FAIL_IF(count > OPTIM_HP_COUNT || !ck_has(r, (size_t)count * 12 + 8 + 1), err, OPTIM_EFORMAT,
                   "%s: %u hyperparameters", where, count);
    for (i = 0; i < count; i++) {
        uint32_t id = ck_get_u32(r);
        double v = ck_get_f64(r);
        optim_error e2;
        /* Each id once, and only those the rule uses (the writer writes exactly
         * those): a repeat is damage, never "last one wins". */
        OPTIM__FAIL_IF(id >= 1 && id <= OPTIM_HP_COUNT && ((seen >> id) & 1), err, OPTIM_EFORMAT,
                       "%s: hyperparameter %s (id %u) is listed twice", where,
                       optim_hparam_name((optim_hparam)id), id);
        if (optim_hparams_set(&gp->hp, (optim_hparam)id, v, &e2) != OPTIM_OK) /* also ids the rule does not use */
            return optim__fail(err, OPTIM_EFORMAT, "%s: %s", where, e2.message);
        seen |= UINT64_C(1) << id;
    }
    {
        optim_error e2;
        if (optim_hparams_check(&gp->hp, &e2) != OPTIM_OK)
            return optim__fail(err, OPTIM_EFORMAT, "%s: %s", where, e2.message);
    }
    gp->sched_t = (int64_t)ck_get_u64(r);
    OPTIM__FAIL_IF(gp->sched_t < 0, err, OPTIM_EFORMAT, "%s: schedule step %lld", where, (long long)gp->sched_t);
    has_sched = ck_get_u8(r);
    OPTIM__FAIL_IF(has_sched > 1, err, OPTIM_EFORMAT, "%s: schedule byte = %u (0 or 1)", where, has_sched);
    if (has_sched) OPTIM__FORWARD(ck_read_schedule(r, &gp->sched, 0, where, err));
    return OPTIM_OK;
}

const char *optim__ck_shape_text(char *buf, size_t size, size_t ndim, const int64_t *dims,
                                 const optim__ck_param_plan *pp)
{
    size_t k, used = 0;
    buf[0] = '\0';
    for (k = 0; k < ndim && used + 24 < size; k++) {
        long long d = dims ? (long long)dims[k] : (long long)optim__ck_dim(pp, k);
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", k ? ", " : "[", d);
    }
    if (ndim == 0)
        snprintf(buf, size, "[] (a scalar)");
    else if (k < ndim)
        snprintf(buf + used, size - used, ", ...]");
    else
        snprintf(buf + used, size - used, "]");
    return buf;
}

/* The scales of an int8_block slot of n elements (little-endian float32 at
 * src): a step, a quantization and a fresh slot store max(largest finite |x|
 * of the block, FLT_MIN) (quant8.h), finite and >= FLT_MIN, also for a block
 * of zeros or NaNs; any other scale (NaN, infinite, zero, negative,
 * subnormal) would turn its block into NaN, infinities or flipped signs at
 * the next step. As optim.torch's QuantizedState check (_quantized.py). */
static int ck_check_scales(const unsigned char *src, size_t n, const char *where, const char *slot, optim_error *err)
{
    const size_t nb = (n + OPTIM_INT8_BLOCK_SIZE - 1) / OPTIM_INT8_BLOCK_SIZE;
    size_t b;
    for (b = 0; b < nb; b++) {
        const uint32_t u = ck_le32(src + 4 * b);
        /* finite and >= FLT_MIN: a positive sign, an exponent field in 1..254 */
        OPTIM__FAIL_IF(u < 0x00800000u || u >= 0x7f800000u, err, OPTIM_EFORMAT,
                       "%s: slot %s has scale %.9g (bits 0x%08x) at block %zu of %zu: an int8_block scale is finite "
                       "and at least FLT_MIN, as a step stores it",
                       where, slot, (double)optim__f32_from_bits(u), (unsigned)u, b, nb);
    }
    return OPTIM_OK;
}

static int ck_parse_param(ck_reader *r, optim__ck_plan *pl, size_t expect, const char *what, optim_error *err)
{
    optim__ck_param_plan *pp;
    uint64_t index, n, step;
    uint32_t len, s, nslots = (uint32_t)optim_rule_slot_count(pl->rule);
    char where[OPTIM_ERRMSG_MAX];
    OPTIM__FAIL_IF(!ck_has(r, 12), err, OPTIM_EFORMAT, "%s: PARM section too short", what);
    index = ck_get_u64(r);
    len = ck_get_u32(r);
    OPTIM__FAIL_IF(index != expect, err, OPTIM_EFORMAT, "%s: param section %zu holds param %llu", what, expect,
                   (unsigned long long)index);
    OPTIM__FAIL_IF(len > OPTIM_MAX_NAME || !ck_has(r, (size_t)len + 4 + 8), err, OPTIM_EFORMAT,
                   "%s: param %llu: name of %u bytes (at most OPTIM_MAX_NAME = %d, within the section)", what,
                   (unsigned long long)index, len, OPTIM_MAX_NAME);
    pp = &pl->params[index];
    pp->name = (const char *)r->p + r->pos;
    pp->name_len = len;
    OPTIM__FAIL_IF(memchr(pp->name, '\0', len) != NULL, err, OPTIM_EFORMAT,
                   "%s: param %llu: a NUL byte inside its name", what, (unsigned long long)index);
    r->pos += len;
    snprintf(where, sizeof where, "%.200s: param %llu '%.*s'", what, (unsigned long long)index, (int)(len < 64 ? len : 64),
             pp->name);
    pp->group = ck_get_u32(r);
    n = ck_get_u64(r);
    pp->ndim = 1;
    if (pl->format >= CK_FORMAT_SHAPES) {
        uint64_t prod = 1;
        uint32_t ndim, k;
        OPTIM__FAIL_IF(!ck_has(r, 5), err, OPTIM_EFORMAT, "%s: the shape runs past the section", where);
        pp->shape_given = (int)ck_get_u8(r);
        ndim = ck_get_u32(r);
        OPTIM__FAIL_IF(pp->shape_given > 1, err, OPTIM_EFORMAT, "%s: shape byte = %d (0 or 1)", where,
                       pp->shape_given);
        OPTIM__FAIL_IF(ndim > OPTIM_MAX_NDIM || !ck_has(r, (size_t)ndim * 8), err, OPTIM_EFORMAT,
                       "%s: a shape of %u dimensions (at most OPTIM_MAX_NDIM = %d, within the section)", where, ndim,
                       OPTIM_MAX_NDIM);
        pp->ndim = ndim;
        pp->dims = r->p + r->pos;
        for (k = 0; k < ndim; k++) {
            uint64_t d = ck_get_u64(r);
            OPTIM__FAIL_IF(d > (uint64_t)INT64_MAX, err, OPTIM_EFORMAT, "%s: shape size %u out of range", where, k);
            prod = d != 0 && prod > UINT64_MAX / d ? UINT64_MAX : prod * d;
        }
        if (prod != n || (!pp->shape_given && ndim != 1)) {
            char sh[96];
            return optim__fail(err, OPTIM_EFORMAT, "%s: %s shape %s for %llu elements", where,
                               pp->shape_given ? "a" : "a default", optim__ck_shape_text(sh, sizeof sh, ndim, NULL, pp),
                               (unsigned long long)n);
        }
    }
    OPTIM__FAIL_IF(!ck_has(r, 8 + 8 + 4 + 4), err, OPTIM_EFORMAT, "%s: PARM section too short", where);
    step = ck_get_u64(r);
    pp->mu_product = ck_get_f64(r);
    pp->initialized = ck_get_u32(r);
    pp->mask = ck_get_u32(r);
    OPTIM__FAIL_IF(pp->group >= pl->ngroups, err, OPTIM_EFORMAT, "%s: group %zu of %zu", where, pp->group, pl->ngroups);
    OPTIM__FAIL_IF(step > (uint64_t)INT64_MAX, err, OPTIM_EFORMAT, "%s: step out of range", where);
    /* ASGD keeps its eta there (a finite step size >= 0), NAdam its product in [0, 1]. */
    OPTIM__FAIL_IF(!(pp->mu_product >= 0 && pp->mu_product <= (pl->rule == OPTIM_ASGD ? DBL_MAX : 1.0)), err,
                   OPTIM_EFORMAT, "%s: %s = %.10g", where, pl->rule == OPTIM_ASGD ? "eta" : "mu_product",
                   pp->mu_product);
    OPTIM__FAIL_IF(pp->mask >> nslots || (pp->initialized & ~pp->mask), err, OPTIM_EFORMAT,
                   "%s: slot mask 0x%x, initialized 0x%x (the rule has %u slots)", where, pp->mask, pp->initialized,
                   nslots);
    OPTIM__FAIL_IF(optim_hparams_slots(&pl->groups[pp->group].hp) & ~pp->mask, err, OPTIM_EFORMAT,
                   "%s: state the group's options need is missing (mask 0x%x)", where, pp->mask);
    pp->step = (int64_t)step;
    pp->n = (size_t)n;
    OPTIM__FAIL_IF(n != pp->n || n > OPTIM__CK_MAX_NUMEL, err, OPTIM_EFORMAT, "%s: n = %llu", where,
                   (unsigned long long)n);
    pp->dtype = OPTIM_FLOAT32;
    {
        /* Each slot's elements: n, or the rule's length for the shape given (ck_param). */
        int64_t dims[OPTIM_MAX_NDIM];
        size_t k;
        for (k = 0; pp->shape_given && k < pp->ndim; k++) dims[k] = (int64_t)optim__ck_dim(pp, k);
        for (s = 0; s < nslots; s++)
            pp->len[s] = optim__slot_len(pl->rule, (int)s, pp->n, pp->shape_given ? pp->ndim : 0, dims);
    }
    for (s = 0; s < nslots; s++) {
        size_t size;
        if (!((pp->mask >> s) & 1u)) continue;
        if (pl->format >= CK_FORMAT_DTYPES) {
            uint32_t dt;
            OPTIM__FAIL_IF(!ck_has(r, 4), err, OPTIM_EFORMAT, "%s: slot %s runs past the section", where,
                           optim_rule_slot_name(pl->rule, (int)s));
            dt = ck_get_u32(r);
            /* State is float32, float64 (of float64 parameters), bfloat16, float16 or int8_block; one type per
             * parameter. */
            OPTIM__FAIL_IF(dt >= OPTIM_DTYPE_COUNT, err, OPTIM_EFORMAT,
                           "%s: slot %s has element type %u (0 float32, 1 float64, 2 bfloat16, 3 float16, "
                           "4 int8_block)", where,
                           optim_rule_slot_name(pl->rule, (int)s), dt);
            OPTIM__FAIL_IF((pp->mask & ((1u << s) - 1)) && (optim_dtype)dt != pp->dtype, err, OPTIM_EFORMAT,
                           "%s: slots of different element types", where);
            pp->dtype = (optim_dtype)dt;
        }
        size = optim_dtype_size(pp->dtype);
        OPTIM__FAIL_IF(pp->len[s] > SIZE_MAX / 8 || !ck_has(r, optim__ck_slot_bytes(pp->len[s], pp->dtype)), err,
                       OPTIM_EFORMAT, "%s: slot %s runs past the section", where,
                       optim_rule_slot_name(pl->rule, (int)s));
        (void)size;
        pp->data[s] = r->p + r->pos;
        if (pp->dtype == OPTIM_INT8_BLOCK)
            OPTIM__FORWARD(ck_check_scales(pp->data[s] + pp->len[s], pp->len[s], where,
                                           optim_rule_slot_name(pl->rule, (int)s), err));
        r->pos += optim__ck_slot_bytes(pp->len[s], pp->dtype);
        pl->state_floats += pp->len[s];
    }
    return OPTIM_OK;
}

/* The SFRE section (ck_sf): a mode of 0 or 1, every param once; lr_max -1
 * (never stepped) or finite >= 0, weight_sum finite >= 0. */
static int ck_parse_sf(ck_reader *r, optim__ck_plan *pl, const char *what, const optim__ck_ops *ops,
                       optim_error *err)
{
    uint32_t mode, reserved;
    uint64_t count, k;
    OPTIM__FAIL_IF(!ck_has(r, 4 + 4 + 8), err, OPTIM_EFORMAT, "%s: SFRE section too short", what);
    mode = ck_get_u32(r);
    reserved = ck_get_u32(r);
    count = ck_get_u64(r);
    OPTIM__FAIL_IF(mode > 1 || reserved != 0, err, OPTIM_EFORMAT, "%s: schedule-free mode %u (0 or 1), reserved %u",
                   what, mode, reserved);
    OPTIM__FAIL_IF(count != pl->nparams || !ck_has(r, (size_t)count * 16), err, OPTIM_EFORMAT,
                   "%s: %llu schedule-free records for %zu params (or past the section)", what,
                   (unsigned long long)count, pl->nparams);
    pl->sf = (double *)optim__ck_calloc(ops, pl->nparams ? 2 * pl->nparams : 1, sizeof *pl->sf);
    OPTIM__FAIL_IF(!pl->sf, err, OPTIM_ENOMEM, "%s: out of memory for %zu schedule-free records", what, pl->nparams);
    for (k = 0; k < count; k++) {
        const double lr_max = ck_get_f64(r), weight_sum = ck_get_f64(r);
        OPTIM__FAIL_IF(!(lr_max == -1.0 || (lr_max >= 0 && lr_max <= DBL_MAX)) ||
                           !(weight_sum >= 0 && weight_sum <= DBL_MAX),
                       err, OPTIM_EFORMAT, "%s: param %llu: lr_max = %.10g, weight_sum = %.10g", what,
                       (unsigned long long)k, lr_max, weight_sum);
        pl->sf[2 * k] = lr_max;
        pl->sf[2 * k + 1] = weight_sum;
    }
    pl->sf_eval = (int)mode;
    pl->has_sf = 1;
    return OPTIM_OK;
}

/* The EMAS section (ck_ema): warm-up and swapped 0 or 1, decay in [0, 1),
 * count >= 0, every param once with its n; averages float32 or float64, a
 * stash (only while swapped) bfloat16 or float16. The types are matched
 * against the optimizer's parameters by the load (ckpt_match.c). */
static int ck_parse_ema(ck_reader *r, optim__ck_plan *pl, const char *what, const optim__ck_ops *ops,
                        optim_error *err)
{
    uint32_t warmup, swapped;
    uint64_t count, nparams, k;
    const size_t np = pl->nparams ? pl->nparams : 1;
    OPTIM__FAIL_IF(!ck_has(r, 4 + 4 + 8 + 8 + 8), err, OPTIM_EFORMAT, "%s: EMAS section too short", what);
    warmup = ck_get_u32(r);
    swapped = ck_get_u32(r);
    pl->ema_decay = ck_get_f64(r);
    count = ck_get_u64(r);
    nparams = ck_get_u64(r);
    OPTIM__FAIL_IF(warmup > 1 || swapped > 1, err, OPTIM_EFORMAT, "%s: EMA warm-up %u, swapped %u (0 or 1)", what,
                   warmup, swapped);
    OPTIM__FAIL_IF(!(pl->ema_decay >= 0.0 && pl->ema_decay < 1.0), err, OPTIM_EFORMAT,
                   "%s: EMA decay = %.10g is not in [0, 1)", what, pl->ema_decay);
    OPTIM__FAIL_IF(count > (uint64_t)INT64_MAX, err, OPTIM_EFORMAT, "%s: EMA count %llu", what,
                   (unsigned long long)count);
    OPTIM__FAIL_IF(nparams != pl->nparams, err, OPTIM_EFORMAT, "%s: %llu EMA records for %zu params", what,
                   (unsigned long long)nparams, pl->nparams);
    pl->ema = (const unsigned char **)optim__ck_calloc(ops, np, sizeof *pl->ema);
    pl->ema_stash = (const unsigned char **)optim__ck_calloc(ops, np, sizeof *pl->ema_stash);
    pl->ema_dtype = (optim_dtype *)optim__ck_calloc(ops, np, sizeof *pl->ema_dtype);
    pl->ema_stash_dtype = (optim_dtype *)optim__ck_calloc(ops, np, sizeof *pl->ema_stash_dtype);
    OPTIM__FAIL_IF(!pl->ema || !pl->ema_stash || !pl->ema_dtype || !pl->ema_stash_dtype, err, OPTIM_ENOMEM,
                   "%s: out of memory for %zu EMA records", what, pl->nparams);
    for (k = 0; k < nparams; k++) {
        uint32_t et, st;
        uint64_t n;
        OPTIM__FAIL_IF(!ck_has(r, 16), err, OPTIM_EFORMAT, "%s: the EMA of param %llu runs past the section", what,
                       (unsigned long long)k);
        et = ck_get_u32(r);
        st = ck_get_u32(r);
        n = ck_get_u64(r);
        OPTIM__FAIL_IF(et != OPTIM_FLOAT32 && et != OPTIM_FLOAT64, err, OPTIM_EFORMAT,
                       "%s: the EMA of param %llu has element type %u (0 float32 or 1 float64)", what,
                       (unsigned long long)k, et);
        OPTIM__FAIL_IF(st != 0 && (!swapped || (st != OPTIM_BFLOAT16 && st != OPTIM_FLOAT16)), err, OPTIM_EFORMAT,
                       "%s: the EMA of param %llu has a set-aside value of type %u (2 bfloat16 or 3 float16, only "
                       "while swapped)",
                       what, (unsigned long long)k, st);
        OPTIM__FAIL_IF(n != pl->params[k].n, err, OPTIM_EFORMAT, "%s: the EMA of param %llu has %llu elements, the "
                       "param %zu", what, (unsigned long long)k, (unsigned long long)n, pl->params[k].n);
        OPTIM__FAIL_IF(n > SIZE_MAX / 16 || !ck_has(r, (size_t)n * optim_dtype_size((optim_dtype)et)) ||
                           (st && !ck_has(r, (size_t)n * (optim_dtype_size((optim_dtype)et) + 2))),
                       err, OPTIM_EFORMAT, "%s: the EMA of param %llu runs past the section", what,
                       (unsigned long long)k);
        pl->ema_dtype[k] = (optim_dtype)et;
        pl->ema[k] = r->p + r->pos;
        r->pos += (size_t)n * optim_dtype_size((optim_dtype)et);
        if (st) {
            pl->ema_stash_dtype[k] = (optim_dtype)st;
            pl->ema_stash[k] = r->p + r->pos;
            r->pos += (size_t)n * 2;
        }
    }
    if (r->pos < r->len) {
        /* Each parameter's own count (ck_ema), each in [0, count]. */
        OPTIM__FAIL_IF(r->len - r->pos != 8 * (size_t)nparams, err, OPTIM_EFORMAT,
                       "%s: %zu bytes after the EMA records, not the %llu per-param counts (8 bytes each)", what,
                       r->len - r->pos, (unsigned long long)nparams);
        pl->ema_counts = (int64_t *)optim__ck_calloc(ops, np, sizeof *pl->ema_counts);
        OPTIM__FAIL_IF(!pl->ema_counts, err, OPTIM_ENOMEM, "%s: out of memory for %zu EMA counts", what,
                       pl->nparams);
        for (k = 0; k < nparams; k++) {
            const uint64_t c = ck_get_u64(r);
            OPTIM__FAIL_IF(c > count, err, OPTIM_EFORMAT, "%s: the EMA count of param %llu is %llu, above the "
                           "optimizer's %llu", what, (unsigned long long)k, (unsigned long long)c,
                           (unsigned long long)count);
            pl->ema_counts[k] = (int64_t)c;
        }
    }
    pl->ema_warmup = (int)warmup;
    pl->ema_swapped = (int)swapped;
    pl->ema_count = (int64_t)count;
    pl->has_ema = 1;
    return OPTIM_OK;
}

/* The PREC section: seed, loss scaler (its settings checked as
 * optim_set_loss_scale checks them), masters (each param once, in order, of
 * its size). */
static int ck_parse_prec(ck_reader *r, optim__ck_plan *pl, const char *what, const optim__ck_ops *ops,
                         optim_error *err)
{
    uint32_t mode, reserved;
    uint64_t count, k, last = 0;
    const optim_loss_scale *ls = &pl->ls;
    OPTIM__FAIL_IF(!ck_has(r, 8 + 4 + 4 + 8 * 6 + 8), err, OPTIM_EFORMAT, "%s: PREC section too short", what);
    pl->seed = ck_get_u64(r);
    mode = ck_get_u32(r);
    reserved = ck_get_u32(r);
    pl->ls.mode = (optim_loss_scale_mode)mode;
    pl->ls.init_scale = ck_get_f64(r);
    pl->ls.growth_factor = ck_get_f64(r);
    pl->ls.backoff_factor = ck_get_f64(r);
    pl->ls.growth_interval = (int64_t)ck_get_u64(r);
    pl->ls_scale = ck_get_f64(r);
    pl->ls_tracker = (int64_t)ck_get_u64(r);
    count = ck_get_u64(r);
    OPTIM__FAIL_IF(mode > OPTIM_LOSS_SCALE_DYNAMIC || reserved != 0, err, OPTIM_EFORMAT,
                   "%s: loss scale mode %u, reserved %u", what, mode, reserved);
    if (mode == OPTIM_LOSS_SCALE_OFF) {
        OPTIM__FAIL_IF(pl->ls_scale != 1.0 || pl->ls_tracker != 0, err, OPTIM_EFORMAT,
                       "%s: loss scaling off with scale %.10g, tracker %lld", what, pl->ls_scale,
                       (long long)pl->ls_tracker);
    } else {
        const int dyn = mode == OPTIM_LOSS_SCALE_DYNAMIC;
        OPTIM__FAIL_IF(!(ls->init_scale > 0) || !isfinite((float)ls->init_scale) || (float)ls->init_scale == 0 ||
                           !(pl->ls_scale > 0) || !isfinite(pl->ls_scale) || (double)(float)pl->ls_scale != pl->ls_scale,
                       err, OPTIM_EFORMAT, "%s: loss scale %.10g (initial %.10g)", what, pl->ls_scale, ls->init_scale);
        OPTIM__FAIL_IF(dyn && (!(ls->growth_factor > 1) || isinf(ls->growth_factor) || !(ls->backoff_factor > 0) ||
                               !(ls->backoff_factor < 1) || ls->growth_interval < 1 ||
                               ls->growth_interval > INT32_MAX),
                       err, OPTIM_EFORMAT, "%s: loss scale growth %.10g, backoff %.10g, interval %lld", what,
                       ls->growth_factor, ls->backoff_factor, (long long)ls->growth_interval);
        OPTIM__FAIL_IF(pl->ls_tracker < 0 || pl->ls_tracker >= (dyn ? ls->growth_interval : 1), err, OPTIM_EFORMAT,
                       "%s: loss scale growth tracker %lld", what, (long long)pl->ls_tracker);
    }
    OPTIM__FAIL_IF(count > pl->nparams, err, OPTIM_EFORMAT, "%s: %llu masters for %zu params", what,
                   (unsigned long long)count, pl->nparams);
    pl->masters = (const unsigned char **)optim__ck_calloc(ops, pl->nparams ? pl->nparams : 1, sizeof *pl->masters);
    OPTIM__FAIL_IF(!pl->masters, err, OPTIM_ENOMEM, "%s: out of memory for %zu master pointers", what, pl->nparams);
    for (k = 0; k < count; k++) {
        uint64_t index, n;
        OPTIM__FAIL_IF(!ck_has(r, 16), err, OPTIM_EFORMAT, "%s: master %llu runs past the section", what,
                       (unsigned long long)k);
        index = ck_get_u64(r);
        n = ck_get_u64(r);
        OPTIM__FAIL_IF(index >= pl->nparams || (k > 0 && index <= last), err, OPTIM_EFORMAT,
                       "%s: master %llu of param %llu (params in increasing order, below %zu)", what,
                       (unsigned long long)k, (unsigned long long)index, pl->nparams);
        OPTIM__FAIL_IF(n != pl->params[index].n, err, OPTIM_EFORMAT,
                       "%s: the master of param %llu has %llu elements, the param %zu", what,
                       (unsigned long long)index, (unsigned long long)n, pl->params[index].n);
        OPTIM__FAIL_IF(!ck_has(r, (size_t)n * 4), err, OPTIM_EFORMAT, "%s: the master of param %llu runs past the section",
                       what, (unsigned long long)index);
        pl->masters[index] = r->p + r->pos;
        r->pos += (size_t)n * 4;
        last = index;
    }
    pl->has_prec = 1;
    return OPTIM_OK;
}

/* The first pass: every section's frame and checksum, then the file's. A
 * frame that does not fit is a damaged file if the file's checksum says so
 * (ECHECKSUM), else a file written wrong (EFORMAT). */
static int ck_walk(const unsigned char *data, size_t size, uint32_t sections, const char *what, optim_error *err)
{
    ck_reader r;
    size_t body_end = size - OPTIM__CK_TRAILER, ngrup = 0, nparm = 0;
    uint32_t k, stored = ck_le32(data + body_end);
    int file_ok = !CK_CRC_BAD(stored, optim__crc32c(0, data, body_end));
    const char *why = file_ok ? "" : " (and the file checksum does not match: the file is corrupt)";
    int code = file_ok ? OPTIM_EFORMAT : OPTIM_ECHECKSUM;
    r.p = data;
    r.len = body_end;
    r.pos = OPTIM__CK_HEADER;
    for (k = 0; k < sections; k++) {
        uint32_t tag;
        uint64_t len;
        size_t start = r.pos, ordinal = 0;
        char name[160];
        if (!ck_has(&r, OPTIM__CK_SECTION_MIN))
            return optim__fail(err, code, "%s: section %u of %u at byte %zu runs past the end of the sections%s", what,
                               k, sections, start, why);
        tag = ck_get_u32(&r);
        (void)ck_get_u32(&r); /* flags: checked by the second pass */
        len = ck_get_u64(&r);
        if (tag == OPTIM__CK_GRUP) ordinal = ngrup++;
        if (tag == OPTIM__CK_PARM) ordinal = nparm++;
        if (len > r.len - r.pos - 4) {
            ck_section_name(name, sizeof name, k, tag, ordinal, NULL, 0);
            return optim__fail(err, code, "%s: %s at byte %zu: a payload of %llu bytes runs past the end of the "
                               "sections%s", what, name, start, (unsigned long long)len, why);
        }
        ck_section_name(name, sizeof name, k, tag, ordinal, data + r.pos, len);
        r.pos += (size_t)len;
        if (CK_CRC_BAD(ck_get_u32(&r), optim__crc32c(0, data + start, OPTIM__CK_SECTION_HEAD + (size_t)len)))
            return optim__fail(err, OPTIM_ECHECKSUM, "%s: %s: checksum mismatch: the file is corrupt", what, name);
    }
    if (r.pos != body_end)
        return optim__fail(err, code, "%s: %zu bytes between the last of %u sections and the trailer%s", what,
                           body_end - r.pos, sections, why);
    OPTIM__FAIL_IF(!file_ok, err, OPTIM_ECHECKSUM,
                   "%s: file checksum mismatch (every section's own checksum matches: the trailer is damaged): the "
                   "file is corrupt",
                   what);
    return OPTIM_OK;
}

static int ck_parse(const unsigned char *data, size_t size, const char *what, const optim__ck_ops *ops,
                    optim__ck_plan *pl, optim_error *err)
{
    ck_reader r;
    uint64_t declared;
    uint32_t sections, k, crc, hflags;
    size_t groups_seen = 0, params_seen = 0, body_end;
    int have_meta = 0;
    if (size < 8 || memcmp(data, OPTIM__CK_MAGIC, 8) != 0) {
        if (size < 8 && memcmp(data, OPTIM__CK_MAGIC, size) == 0)
            return optim__fail(err, OPTIM_ETRUNCATED, "%s: truncated: %zu bytes, not even a header", what, size);
        return optim__fail(err, OPTIM_EMAGIC, "%s: not an optim checkpoint (wrong magic number)", what);
    }
    OPTIM__FAIL_IF(size < OPTIM__CK_HEADER, err, OPTIM_ETRUNCATED, "%s: truncated: %zu bytes, the header needs %d", what,
                   size, OPTIM__CK_HEADER);
    r.p = data;
    r.len = size;
    r.pos = 8;
    r.ops = ops;
    pl->format = ck_get_u32(&r);
    hflags = ck_get_u32(&r);
    declared = ck_get_u64(&r);
    sections = ck_get_u32(&r);
    crc = ck_get_u32(&r);
    OPTIM__FAIL_IF(CK_CRC_BAD(crc, optim__crc32c(0, data, 28)), err, OPTIM_ECHECKSUM,
                   "%s: header checksum mismatch: the file is corrupt", what);
    OPTIM__FAIL_IF(pl->format > OPTIM_CHECKPOINT_FORMAT, err, OPTIM_EVERSION,
                   "%s: format version %u is newer than this library's (%d): update optim to load it", what, pl->format,
                   OPTIM_CHECKPOINT_FORMAT);
    OPTIM__FAIL_IF(pl->format == 0, err, OPTIM_EFORMAT, "%s: format version 0", what);
    OPTIM__FAIL_IF(hflags != 0, err, OPTIM_EFORMAT, "%s: header flags 0x%x (format %u has none)", what, hflags,
                   pl->format);
    OPTIM__FAIL_IF(declared > size, err, OPTIM_ETRUNCATED, "%s: truncated: %zu of %llu bytes", what, size,
                   (unsigned long long)declared);
    OPTIM__FAIL_IF(declared < size, err, OPTIM_EFORMAT, "%s: %llu bytes after the end of the checkpoint", what,
                   (unsigned long long)(size - declared));
    OPTIM__FAIL_IF(size < OPTIM__CK_HEADER + OPTIM__CK_TRAILER, err, OPTIM_EFORMAT, "%s: no room for the trailer", what);
    body_end = size - OPTIM__CK_TRAILER;
    OPTIM__FAIL_IF(memcmp(data + size - 8, OPTIM__CK_END, 8) != 0, err, OPTIM_ECHECKSUM, "%s: the end marker is damaged",
                   what);
    OPTIM__FORWARD(ck_walk(data, size, sections, what, err));

    /* The second pass: the frames are sound, parse the payloads. Sections a
     * reader may skip (flag bit 0) may stand anywhere; the ones this library
     * knows come in the order META, GRUP x groups, PARM x params. */
    r.len = body_end;
    r.pos = OPTIM__CK_HEADER;
    for (k = 0; k < sections; k++) {
        uint32_t tag, flags;
        uint64_t len;
        ck_reader sr;
        char name[160], what_sec[OPTIM_ERRMSG_MAX];
        int rc = OPTIM_OK, known;
        tag = ck_get_u32(&r);
        flags = ck_get_u32(&r);
        len = ck_get_u64(&r);
        sr.p = data + r.pos;
        sr.len = (size_t)len;
        sr.pos = 0;
        sr.ops = ops;
        r.pos += (size_t)len + 4;
        known = tag == OPTIM__CK_META || tag == OPTIM__CK_GRUP || tag == OPTIM__CK_PARM || tag == OPTIM__CK_PREC ||
                tag == OPTIM__CK_SFRE || tag == OPTIM__CK_EMAS;
        ck_section_name(name, sizeof name, k, tag, tag == OPTIM__CK_GRUP ? groups_seen : params_seen, sr.p, len);
        snprintf(what_sec, sizeof what_sec, "%.150s: %s", what, name);
        if (!known) {
            OPTIM__FAIL_IF(!(flags & OPTIM__CK_OPTIONAL), err, OPTIM_EFORMAT,
                           "%s: unknown section that a reader may not skip (flags 0x%x)", what_sec, flags);
            continue; /* a later library's addition: skipped, wherever it is */
        }
        OPTIM__FAIL_IF(flags != 0, err, OPTIM_EFORMAT, "%s: flags 0x%x (0 for this section)", what_sec, flags);
        if (tag == OPTIM__CK_META) {
            OPTIM__FAIL_IF(have_meta, err, OPTIM_EFORMAT, "%s: a second META section", what_sec);
            OPTIM__FORWARD(ck_parse_meta(&sr, pl, what_sec, err));
            OPTIM__FAIL_IF(pl->nparams > size / OPTIM__CK_SECTION_MIN || pl->ngroups > size / OPTIM__CK_SECTION_MIN,
                           err, OPTIM_EFORMAT, "%s: %zu groups and %zu params cannot fit in %zu bytes", what_sec,
                           pl->ngroups, pl->nparams, size);
            pl->groups = (optim__ck_group_plan *)optim__ck_calloc(ops, pl->ngroups, sizeof *pl->groups);
            pl->params = pl->groups ? (optim__ck_param_plan *)optim__ck_calloc(ops, pl->nparams, sizeof *pl->params)
                                    : NULL;
            OPTIM__FAIL_IF(!pl->groups || !pl->params, err, OPTIM_ENOMEM,
                           "%s: out of memory for the plan of %zu groups and %zu params", what_sec, pl->ngroups,
                           pl->nparams);
            have_meta = 1;
        } else if (tag == OPTIM__CK_GRUP) {
            OPTIM__FAIL_IF(!have_meta || params_seen || groups_seen >= pl->ngroups, err, OPTIM_EFORMAT,
                           "%s: unexpected group section (%s)", what_sec,
                           !have_meta ? "before META" : params_seen ? "after a PARM" : "more than META announces");
            rc = ck_parse_group(&sr, pl, groups_seen, what_sec, err);
            groups_seen++;
        } else if (tag == OPTIM__CK_PREC) {
            OPTIM__FAIL_IF(!have_meta || params_seen != pl->nparams || pl->has_prec, err, OPTIM_EFORMAT,
                           "%s: unexpected PREC section (%s)", what_sec,
                           !have_meta ? "before META" : pl->has_prec ? "a second one" : "before every PARM");
            rc = ck_parse_prec(&sr, pl, what_sec, ops, err);
        } else if (tag == OPTIM__CK_SFRE) {
            OPTIM__FAIL_IF(!have_meta || params_seen != pl->nparams || pl->has_sf ||
                               (pl->rule != OPTIM_SGD_SCHEDULE_FREE && pl->rule != OPTIM_ADAMW_SCHEDULE_FREE),
                           err, OPTIM_EFORMAT, "%s: unexpected SFRE section (%s)", what_sec,
                           !have_meta                      ? "before META"
                           : params_seen != pl->nparams    ? "before every PARM"
                           : pl->has_sf                    ? "a second one"
                                                           : "the rule is not schedule-free");
            rc = ck_parse_sf(&sr, pl, what_sec, ops, err);
        } else if (tag == OPTIM__CK_EMAS) {
            OPTIM__FAIL_IF(!have_meta || params_seen != pl->nparams || pl->has_ema ||
                               pl->rule == OPTIM_SGD_SCHEDULE_FREE || pl->rule == OPTIM_ADAMW_SCHEDULE_FREE,
                           err, OPTIM_EFORMAT, "%s: unexpected EMAS section (%s)", what_sec,
                           !have_meta                   ? "before META"
                           : params_seen != pl->nparams ? "before every PARM"
                           : pl->has_ema                ? "a second one"
                                                        : "the rule is schedule-free");
            rc = ck_parse_ema(&sr, pl, what_sec, ops, err);
        } else {
            OPTIM__FAIL_IF(!have_meta || groups_seen != pl->ngroups || params_seen >= pl->nparams || pl->has_prec ||
                               pl->has_sf || pl->has_ema,
                           err, OPTIM_EFORMAT,
                           "%s: unexpected param section (%s)", what_sec,
                           !have_meta                     ? "before META"
                           : groups_seen != pl->ngroups ? "before every GRUP"
                           : pl->has_prec               ? "after PREC"
                           : pl->has_sf                 ? "after SFRE"
                           : pl->has_ema                ? "after EMAS"
                                                        : "more than META announces");
            rc = ck_parse_param(&sr, pl, params_seen, what_sec, err);
            params_seen++;
        }
        if (rc != OPTIM_OK) return rc;
        OPTIM__FAIL_IF(sr.pos != sr.len, err, OPTIM_EFORMAT, "%s: %zu bytes left over", what_sec, sr.len - sr.pos);
    }
    OPTIM__FAIL_IF(!have_meta || groups_seen != pl->ngroups || params_seen != pl->nparams, err, OPTIM_EFORMAT,
                   "%s: %s%zu of %zu groups and %zu of %zu params present", what, have_meta ? "" : "no META section; ",
                   groups_seen, pl->ngroups, params_seen, pl->nparams);
    OPTIM__FAIL_IF((pl->rule == OPTIM_SGD_SCHEDULE_FREE || pl->rule == OPTIM_ADAMW_SCHEDULE_FREE) && !pl->has_sf,
                   err, OPTIM_EFORMAT, "%s: a %s checkpoint without its SFRE section (mode, lr_max, weight_sum)",
                   what, optim_rule_name(pl->rule));
    return OPTIM_OK;
}

int optim__ck_decode(const unsigned char *data, size_t size, const char *what, const optim__ck_ops *ops,
                     optim__ck_plan *pl, optim_error *err)
{
    int rc;
    memset(pl, 0, sizeof *pl);
    if (!data) data = (const unsigned char *)"";
    rc = ck_parse(data, size, what, ops ? ops : &optim__ck_default_ops, pl, err);
    if (rc != OPTIM_OK) optim__ck_plan_free(pl);
    return rc;
}
