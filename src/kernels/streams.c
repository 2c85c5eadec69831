/* streams.c: element types as storage descriptors, the supported
 * combinations, and the update pass over a task's range: directly on memory
 * when every stream holds the compute type, else chunk by chunk through
 * scratch arrays (the chunked path). */
#include "convert.h"
#include "kernels.h"
#include "quant8.h"

#include <string.h>

_Static_assert(OPTIM__CHUNK % OPTIM_INT8_BLOCK_SIZE == 0, "a chunk must hold whole blocks of int8_block state");

const char *optim_dtype_name(optim_dtype dtype)
{
    switch (dtype) {
    case OPTIM_FLOAT32: return "float32";
    case OPTIM_FLOAT64: return "float64";
    case OPTIM_BFLOAT16: return "bfloat16";
    case OPTIM_FLOAT16: return "float16";
    case OPTIM_INT8_BLOCK: return "int8_block";
    default: return NULL;
    }
}

size_t optim_dtype_size(optim_dtype dtype)
{
    switch (dtype) {
    case OPTIM_FLOAT32: return 4;
    case OPTIM_FLOAT64: return 8;
    case OPTIM_BFLOAT16:
    case OPTIM_FLOAT16: return 2;
    case OPTIM_INT8_BLOCK: return 1;
    default: return 0;
    }
}

/* The supported pairs: the parameter's type decides the compute type (double
 * for float64, else float) and the state's (float64 for float64, else
 * float32); gradients are of the parameter's type, or bfloat16/float16 for
 * float32 parameters. */
int optim__dtypes(const char *fn, optim_dtype param, optim_dtype grad, optim__ctype *ctype, optim_dtype *state,
                  optim_error *err)
{
    int ok;
    OPTIM__FAIL_IF(!optim_dtype_name(param), err, OPTIM_EINVAL, "%s: param_dtype = %d is not an element type (0..%d)",
                   fn, (int)param, OPTIM_DTYPE_COUNT - 1);
    OPTIM__FAIL_IF(!optim_dtype_name(grad), err, OPTIM_EINVAL, "%s: grad_dtype = %d is not an element type (0..%d)", fn,
                   (int)grad, OPTIM_DTYPE_COUNT - 1);
    OPTIM__FAIL_IF(param == OPTIM_INT8_BLOCK || grad == OPTIM_INT8_BLOCK, err, OPTIM_EUNSUPPORTED,
                   "%s: int8_block is a state type only (param_dtype %s, grad_dtype %s)", fn, optim_dtype_name(param),
                   optim_dtype_name(grad));
    ok = grad == param || (param == OPTIM_FLOAT32 && (grad == OPTIM_BFLOAT16 || grad == OPTIM_FLOAT16));
    OPTIM__FAIL_IF(!ok, err, OPTIM_EUNSUPPORTED,
                   "%s: %s gradients for %s parameters are not supported (gradients are of the parameter's type, "
                   "or bfloat16/float16 for float32 parameters)",
                   fn, optim_dtype_name(grad), optim_dtype_name(param));
    if (ctype) *ctype = param == OPTIM_FLOAT64 ? OPTIM__CT_F64 : OPTIM__CT_F32;
    if (state) *state = param == OPTIM_FLOAT64 ? OPTIM_FLOAT64 : OPTIM_FLOAT32;
    return OPTIM_OK;
}

int optim__state_dtype_ok(const char *fn, optim_dtype param, optim_dtype state, optim_error *err)
{
    optim_dtype def = OPTIM_FLOAT32;
    OPTIM__FAIL_IF(param == OPTIM_INT8_BLOCK, err, OPTIM_EUNSUPPORTED,
                   "%s: int8_block is a state type only (param_dtype int8_block, state_dtype %s)", fn,
                   optim_dtype_name(state) ? optim_dtype_name(state) : "?");
    OPTIM__FORWARD(optim__dtypes(fn, param, param == OPTIM_FLOAT32 ? OPTIM_FLOAT32 : param, NULL, &def, err));
    OPTIM__FAIL_IF(!optim_dtype_name(state), err, OPTIM_EINVAL, "%s: state_dtype = %d is not an element type (0..%d)",
                   fn, (int)state, OPTIM_DTYPE_COUNT - 1);
    OPTIM__FAIL_IF(state != def && (def != OPTIM_FLOAT32 || (state != OPTIM_BFLOAT16 && state != OPTIM_FLOAT16 &&
                                                              state != OPTIM_INT8_BLOCK)),
                   err, OPTIM_EUNSUPPORTED,
                   "%s: %s state for %s parameters is not supported (float64 parameters keep float64 state; the "
                   "others float32, bfloat16, float16 or int8_block)",
                   fn, optim_dtype_name(state), optim_dtype_name(param));
    return OPTIM_OK;
}

int optim_state_dtype_check(optim_dtype param_dtype, optim_dtype state_dtype, optim_error *err)
{
    OPTIM__FORWARD(optim__state_dtype_ok("optim_state_dtype_check", param_dtype, state_dtype, err));
    return optim__ok(err);
}

int optim_dtypes_check(optim_dtype param_dtype, optim_dtype grad_dtype, optim_dtype *state_dtype, optim_error *err)
{
    OPTIM__FORWARD(optim__dtypes("optim_dtypes_check", param_dtype, grad_dtype, NULL, state_dtype, err));
    return optim__ok(err);
}

size_t optim__slot_bytes(size_t n, optim_dtype dtype)
{
    return dtype == OPTIM_INT8_BLOCK ? OPTIM_INT8_BLOCK_BYTES(n) : n * optim_dtype_size(dtype);
}

void optim__slot_to_f32(float *dst, const void *slot, size_t n, optim_dtype dtype, int kind)
{
    size_t i;
    switch (dtype) {
    case OPTIM_FLOAT32: memcpy(dst, slot, n * sizeof(float)); break;
    case OPTIM_BFLOAT16:
        for (i = 0; i < n; i++) dst[i] = optim__bf16_to_f32(((const uint16_t *)slot)[i]);
        break;
    case OPTIM_FLOAT16:
        for (i = 0; i < n; i++) dst[i] = optim__f16_to_f32(((const uint16_t *)slot)[i]);
        break;
    case OPTIM_INT8_BLOCK:
        optim__q8_dequantize(dst, (const uint8_t *)slot,
                             (const float *)(const void *)((const char *)slot + OPTIM_INT8_BLOCK_SCALES_OFFSET(n)), n,
                             kind);
        break;
    default: break; /* float64: not converted (callers refuse it) */
    }
}

void optim__slot_from_f32(void *slot, const float *src, size_t n, optim_dtype dtype, int kind)
{
    size_t i;
    switch (dtype) {
    case OPTIM_FLOAT32: memcpy(slot, src, n * sizeof(float)); break;
    case OPTIM_BFLOAT16:
        for (i = 0; i < n; i++) ((uint16_t *)slot)[i] = optim__f32_to_bf16(src[i]);
        break;
    case OPTIM_FLOAT16:
        for (i = 0; i < n; i++) ((uint16_t *)slot)[i] = optim__f32_to_f16(src[i]);
        break;
    case OPTIM_INT8_BLOCK:
        optim__q8_quantize((uint8_t *)slot, (float *)(void *)((char *)slot + OPTIM_INT8_BLOCK_SCALES_OFFSET(n)), src, n,
                           kind);
        break;
    default: break;
    }
}

int optim__task_storage(const optim__kernels *kt, optim__task *t, optim_dtype param, optim_dtype grad,
                        optim_dtype state, const unsigned char *kinds)
{
    optim__ctype ct;
    int j;
    if (optim__dtypes("", param, grad, &ct, NULL, NULL) != OPTIM_OK) return -1;
    if ((int)state < 0 || (int)state >= OPTIM_DTYPE_COUNT) return -1;
    t->sto[OPTIM__SP] = kt->storage[param][ct];
    t->sto[OPTIM__SG] = kt->storage[grad][ct];
    if (!t->sto[OPTIM__SP] || !t->sto[OPTIM__SG] || !kt->storage[state][ct]) return -1;
    for (j = 0; j < OPTIM__NSTREAMS; j++) t->ctx[j] = NULL;
    for (j = 0; j < OPTIM_MAX_SLOTS; j++) {
        t->sto[OPTIM__SS(j)] = kt->storage[state][ct];
        if (state == OPTIM_INT8_BLOCK) {
            /* The code of the slot's kind; its context the block scales after the codes. */
            const unsigned kind = kinds ? kinds[j] : OPTIM__SLOT_SIGNED;
            t->sto[OPTIM__SS(j)] = kt->q8[kind < 3 ? kind : OPTIM__SLOT_SIGNED];
            if (!t->sto[OPTIM__SS(j)]) return -1;
            t->ctx[OPTIM__SS(j)] = t->s[j] ? (const char *)t->s[j] + OPTIM_INT8_BLOCK_SCALES_OFFSET(t->n) : NULL;
        }
    }
    t->sto[OPTIM__SC] = NULL; /* a master's copy: optim__task_prec */
    t->copy = NULL;
    t->rows = NULL; /* dense; optim__build_tasks sets a sparse gradient's rows */
    t->row_len = 0;
    t->chunked = 0;
    for (j = 0; j < OPTIM__NSTREAMS; j++)
        if (t->sto[j] && !t->sto[j]->direct) t->chunked = 1;
    /* Split points: a cache line of 4-byte elements (as before types), or a
     * whole chunk, so that no two threads convert or quantize the same chunk
     * (a chunk holds whole blocks of OPTIM_INT8_BLOCK state). */
    t->align = t->chunked ? OPTIM__CHUNK : 16;
    t->gtype = grad;
    return 0;
}

int optim__task_prec(const optim__kernels *kt, optim__task *t, optim_dtype param, optim_dtype state, unsigned flags,
                     void *copy)
{
    int j;
    t->copy = NULL;
    t->sto[OPTIM__SC] = NULL;
    if (flags & OPTIM_PARAM_MASTER) {
        /* p is the float32 master (direct); the user's memory is only stored. */
        t->sto[OPTIM__SC] = kt->storage[param][OPTIM__CT_F32];
        if (!t->sto[OPTIM__SC]) return -1;
        t->copy = copy;
        t->chunked = 1;
        t->align = OPTIM__CHUNK;
    }
    if (flags & OPTIM_PARAM_STOCHASTIC_ROUNDING) {
        if (!kt->bf16_sr) return -1;
        if (!(flags & OPTIM_PARAM_MASTER) && param == OPTIM_BFLOAT16) t->sto[OPTIM__SP] = kt->bf16_sr;
        if (state == OPTIM_BFLOAT16)
            for (j = 0; j < OPTIM_MAX_SLOTS; j++) t->sto[OPTIM__SS(j)] = kt->bf16_sr;
        for (j = 0; j < OPTIM__NSTREAMS; j++)
            if (t->sto[j] == kt->bf16_sr) t->ctx[j] = &t->sr[j];
    }
    if ((flags & OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING) && state == OPTIM_INT8_BLOCK) {
        /* Each slot's descriptor of the same kind, with stochastic codes; its ctx the scales and its key. */
        for (j = 0; j < OPTIM_MAX_SLOTS; j++) {
            int kind;
            for (kind = 0; kind < 3 && t->sto[OPTIM__SS(j)] != kt->q8[kind]; kind++) {}
            if (kind == 3 || !kt->q8sr[kind]) return -1;
            t->q8sr[j].scales = (void *)(uintptr_t)t->ctx[OPTIM__SS(j)];
            t->q8sr[j].sr = &t->sr[OPTIM__SS(j)];
            t->sto[OPTIM__SS(j)] = kt->q8sr[kind];
            t->ctx[OPTIM__SS(j)] = &t->q8sr[j];
        }
    }
    return 0;
}

void optim__task_sr_keys(optim__task *t, uint64_t seed, uint64_t index, int64_t step, uint64_t first)
{
    int j;
    for (j = 0; j < OPTIM__NSTREAMS; j++) {
        t->sr[j].key = optim__sr_key(seed, index, (uint64_t)step, (uint64_t)j);
        t->sr[j].first = first;
    }
}

optim__loop_fn optim__loop_get(const optim__kernels *kt, optim_rule rule, optim__ctype ct, unsigned variant,
                               unsigned *reads, unsigned *writes)
{
    const optim__loops *l;
    unsigned v = variant & ~(OPTIM__V_CLAMP | OPTIM__V_COMPLEX);
    if ((int)rule < 1 || (int)rule > OPTIM_RULE_COUNT || (int)ct < 0 || ct >= OPTIM__NCTYPES) return NULL;
    l = (variant & OPTIM__V_COMPLEX) ? &kt->cloops[rule][ct] : &kt->loops[rule][ct];
    if (!l->fns || v >= l->nvariants) return NULL;
    if (reads) *reads = l->reads(v);
    if (writes) *writes = l->writes(v);
    return l->fns[(variant & OPTIM__V_CLAMP) ? l->nvariants + v : v];
}

optim__sloop_fn optim__sloop_get(const optim__kernels *kt, optim_rule rule, optim__ctype ct, unsigned variant)
{
    const optim__loops *l;
    unsigned v = variant & ~OPTIM__V_CLAMP;
    if ((int)rule < 1 || (int)rule > OPTIM_RULE_COUNT || (int)ct < 0 || ct >= OPTIM__NCTYPES) return NULL;
    if (variant & OPTIM__V_COMPLEX) return NULL;
    l = &kt->loops[rule][ct];
    if (!l->sfns || v >= l->nvariants) return NULL;
    return l->sfns[(variant & OPTIM__V_CLAMP) ? l->nvariants + v : v];
}

/* ---- The update pass -------------------------------------------------------------------- */

/* Element e of stream j of t, in memory. */
static void *optim__at(const optim__task *t, int j, void *base, size_t e)
{
    return base ? (char *)base + e * t->sto[j]->size : NULL;
}

/* The chunked path: elements [from, to) in chunks of OPTIM__CHUNK. Each
 * stream that does not hold the compute type is loaded into a scratch array
 * (when the variant reads it) and stored back (when it writes it) by its
 * descriptor; the others are used in place. The loop is the same instance
 * the direct path runs. `from` is a multiple of OPTIM__CHUNK (the task's
 * split alignment), so chunks start where the tensor's chunks start. */
static void optim__update_chunked(const optim__task *t, size_t from, size_t to)
{
    /* One scratch array per stream, in L1: 6 x 4 KiB for double, half for float. */
    _Alignas(64) double scratch[OPTIM__NSTREAMS][OPTIM__CHUNK];
    void *base[OPTIM__NSTREAMS];
    unsigned use[OPTIM__NSTREAMS], rd[OPTIM__NSTREAMS], wr[OPTIM__NSTREAMS];
    size_t c;
    int j;
    base[OPTIM__SP] = t->p;
    base[OPTIM__SG] = (void *)(uintptr_t)t->g;
    rd[OPTIM__SP] = wr[OPTIM__SP] = rd[OPTIM__SG] = 1;
    wr[OPTIM__SG] = 0;
    for (j = 0; j < OPTIM_MAX_SLOTS; j++) {
        base[OPTIM__SS(j)] = t->s[j];
        rd[OPTIM__SS(j)] = (t->reads >> j) & 1u;
        wr[OPTIM__SS(j)] = (t->writes >> j) & 1u;
    }
    /* A master's low-precision copy: stored from the master's chunk after the loop. */
    base[OPTIM__SC] = NULL;
    rd[OPTIM__SC] = wr[OPTIM__SC] = 0;
    for (j = 0; j < OPTIM__NSTREAMS; j++) use[j] = base[j] && (rd[j] || wr[j]);
    for (c = from; c < to; c += OPTIM__CHUNK) {
        const size_t len = to - c < OPTIM__CHUNK ? to - c : OPTIM__CHUNK;
        void *x[OPTIM__NSTREAMS];
        for (j = 0; j < OPTIM__NSTREAMS; j++) {
            const optim__storage *st = t->sto[j];
            x[j] = NULL;
            if (!use[j]) continue;
            if (st->direct) {
                x[j] = optim__at(t, j, base[j], c);
            } else {
                x[j] = scratch[j];
                if (rd[j]) st->load(scratch[j], base[j], c, len, t->ctx[j]);
            }
        }
        t->loop(len, x[OPTIM__SP], x[OPTIM__SG], &x[OPTIM__SS(0)], (const optim__k *)t->k);
        for (j = 0; j < OPTIM__NSTREAMS; j++)
            if (use[j] && wr[j] && !t->sto[j]->direct) t->sto[j]->store(base[j], c, len, scratch[j], t->ctx[j]);
        if (t->copy) t->sto[OPTIM__SC]->store(t->copy, c, len, x[OPTIM__SP], t->ctx[OPTIM__SC]);
    }
}

/* A sparse gradient's range: elements [from, to) of its values, row segment
 * by row segment, each run by the loop instance on the row of the parameter
 * and of the state it names (direct tasks only: optim_step_sparse checks). */
static void optim__update_rows(const optim__task *t, size_t from, size_t to)
{
    const size_t L = t->row_len;
    size_t e = from;
    while (e < to) {
        const size_t r = e / L, col = e % L;
        const size_t len = L - col < to - e ? L - col : to - e;
        const size_t off = (size_t)t->rows[r] * L + col;
        void *s[OPTIM_MAX_SLOTS];
        int j;
        for (j = 0; j < OPTIM_MAX_SLOTS; j++) s[j] = optim__at(t, OPTIM__SS(j), t->s[j], off);
        t->loop(len, optim__at(t, OPTIM__SP, t->p, off), optim__at(t, OPTIM__SG, (void *)(uintptr_t)t->g, e), s,
                (const optim__k *)t->k);
        e += len;
    }
}

/* Fold a block's lanes (16 per value, stats_fn's layout) into its
 * OPTIM__NSTAT values by a fixed tree: 16 -> 8 -> 4 -> 2 -> 1. */
void optim__stats_fold(double *acc, double *out)
{
    size_t j, l;
    int v;
    for (v = 0; v < OPTIM__NSTAT; v++) {
        double *a = acc + 16 * v;
        for (j = 16 / 2; j > 0; j /= 2)
            for (l = 0; l < j; l++) {
                if (v == 3)
                    a[l] = (a[l + j] != a[l + j] || a[l + j] > a[l]) ? a[l + j] : a[l];
                else
                    a[l] = a[l] + a[l + j];
            }
        out[v] = a[0];
    }
}

/* A range's last n % 16 elements after a fused instance's groups (len - m
 * of them from element m of the streams x): the plain loop, measured from a
 * copy of the parameter, in the lanes the groups left. */
static void optim__stats_tail(const optim__task *t, void *const *x, size_t m, size_t len, size_t rsize,
                              double *p0, unsigned char *cl, void *lanes)
{
    void *y[OPTIM__NSTREAMS];
    int s;
    for (s = 0; s < OPTIM__NSTREAMS; s++) y[s] = x[s] ? (char *)x[s] + m * rsize : NULL;
    memcpy(p0, y[OPTIM__SP], (len - m) * rsize);
    t->loop(len - m, y[OPTIM__SP], y[OPTIM__SG], &y[OPTIM__SS(0)], (const optim__k *)t->k);
    if (t->clampflag) t->clampflag(len - m, &y[OPTIM__SS(0)], (const optim__k *)t->k, cl);
    t->stats(len - m, p0, y[OPTIM__SP], y[OPTIM__SG], t->clampflag ? cl : NULL, (const optim__k *)t->k, lanes);
}

/* A range of a task with statistics (t->spart set). `from` is a multiple of
 * OPTIM__RBLOCK (the task's split alignment with statistics), so a block is
 * measured by one thread, in element order, and its lanes are folded into
 * its partial (t->spart) at its end.
 *
 * Where the parameter stream is held as the compute type (in memory or as a
 * master), the fused instance (t->sloop) measures the update in registers,
 * in groups of 16 (a range's last n % 16 elements through the plain loop and
 * copies, in the same lanes: optim__stats_tail). When every stream is held
 * as the compute type, one fused call runs a whole block in place (its
 * lanes in registers, flushed at each chunk's end); else chunk by chunk as
 * the chunked path (the other streams through scratch), each chunk measured
 * while it is in L1. Where there is no fused instance (a bfloat16/float16
 * parameter without a master: the update measured is the one stored;
 * complex rules, float64, the scalar path; docs/STATS.md) the parameter's
 * chunk is copied before the loop and loaded back after its store, then
 * measured by t->stats with the rule's clamp flags. Every way runs the same
 * lanes in the same order: the same bits. */
static void optim__update_stats(const optim__task *t, size_t from, size_t to)
{
    _Alignas(64) double scratch[OPTIM__NSTREAMS][OPTIM__CHUNK];
    _Alignas(64) double p0[OPTIM__CHUNK], p1[OPTIM__CHUNK];
    unsigned char cl[OPTIM__CHUNK];
    double acc[OPTIM__NSTAT * 16];
    _Alignas(64) double lanes[OPTIM__SLANES_BYTES / sizeof(double)];
    void *base[OPTIM__NSTREAMS];
    unsigned use[OPTIM__NSTREAMS], rd[OPTIM__NSTREAMS], wr[OPTIM__NSTREAMS];
    const size_t rsize = t->sto[OPTIM__SG]->ctype == OPTIM__CT_F64 ? sizeof(double) : sizeof(float);
    const int fused = t->sloop != NULL && t->sto[OPTIM__SP]->direct;
    int inplace = fused;
    size_t c, j;
    int s;
    base[OPTIM__SP] = t->p;
    base[OPTIM__SG] = (void *)(uintptr_t)t->g;
    rd[OPTIM__SP] = wr[OPTIM__SP] = rd[OPTIM__SG] = 1;
    wr[OPTIM__SG] = 0;
    for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
        base[OPTIM__SS(s)] = t->s[s];
        rd[OPTIM__SS(s)] = (t->reads >> s) & 1u;
        wr[OPTIM__SS(s)] = (t->writes >> s) & 1u;
    }
    base[OPTIM__SC] = NULL;
    rd[OPTIM__SC] = wr[OPTIM__SC] = 0;
    for (s = 0; s < OPTIM__NSTREAMS; s++) {
        use[s] = base[s] && (rd[s] || wr[s]);
        if (use[s] && !t->sto[s]->direct) inplace = 0;
    }
    memset(lanes, 0, sizeof lanes);
    if (inplace) {
        size_t len;
        for (c = from; c < to; c += len) {
            void *x[OPTIM__NSTREAMS];
            size_t m, k;
            len = to - c < OPTIM__RBLOCK ? to - c : OPTIM__RBLOCK;
            m = len & ~(size_t)15;
            for (j = 0; j < OPTIM__NSTAT * 16; j++) acc[j] = 0.0;
            for (s = 0; s < OPTIM__NSTREAMS; s++) x[s] = use[s] ? optim__at(t, s, base[s], c) : NULL;
            if (m)
                t->sloop(m, to - c, x[OPTIM__SP], x[OPTIM__SG], &x[OPTIM__SS(0)], (const optim__k *)t->k, lanes,
                         acc);
            if (m < len) optim__stats_tail(t, x, m, len, rsize, p0, cl, lanes);
            if (len % OPTIM__CHUNK) t->sflush(lanes, acc);
            if (t->copy != NULL)
                for (k = 0; k < len; k += OPTIM__CHUNK)
                    t->sto[OPTIM__SC]->store(t->copy, c + k, len - k < OPTIM__CHUNK ? len - k : OPTIM__CHUNK,
                                             (char *)x[OPTIM__SP] + k * rsize, t->ctx[OPTIM__SC]);
            optim__stats_fold(acc, t->spart + OPTIM__NSTAT * (c / OPTIM__RBLOCK));
        }
        return;
    }
    for (c = from; c < to; c += OPTIM__CHUNK) {
        const size_t len = to - c < OPTIM__CHUNK ? to - c : OPTIM__CHUNK;
        void *x[OPTIM__NSTREAMS];
        if (c == from || c % OPTIM__RBLOCK == 0)
            for (j = 0; j < OPTIM__NSTAT * 16; j++) acc[j] = 0.0;
        for (s = 0; s < OPTIM__NSTREAMS; s++) {
            const optim__storage *st = t->sto[s];
            x[s] = NULL;
            if (!use[s]) continue;
            if (st->direct) {
                x[s] = optim__at(t, s, base[s], c);
            } else {
                x[s] = scratch[s];
                if (rd[s]) st->load(scratch[s], base[s], c, len, t->ctx[s]);
            }
        }
        if (fused) {
            /* Groups of 16 fused (a whole chunk's lanes flushed by the call); the rest (a task's end) by the
             * plain loop, measured from a copy in the same lanes. */
            const size_t m = len & ~(size_t)15;
            if (m) t->sloop(m, len, x[OPTIM__SP], x[OPTIM__SG], &x[OPTIM__SS(0)], (const optim__k *)t->k, lanes, acc);
            if (m < len) optim__stats_tail(t, x, m, len, rsize, p0, cl, lanes);
        } else {
            memcpy(p0, x[OPTIM__SP], len * rsize);
            t->loop(len, x[OPTIM__SP], x[OPTIM__SG], &x[OPTIM__SS(0)], (const optim__k *)t->k);
        }
        for (s = 0; s < OPTIM__NSTREAMS; s++)
            if (use[s] && wr[s] && !t->sto[s]->direct) t->sto[s]->store(base[s], c, len, scratch[s], t->ctx[s]);
        if (t->copy != NULL) t->sto[OPTIM__SC]->store(t->copy, c, len, x[OPTIM__SP], t->ctx[OPTIM__SC]);
        if (!fused) {
            const void *after = x[OPTIM__SP];
            if (!t->sto[OPTIM__SP]->direct) {
                t->sto[OPTIM__SP]->load(p1, base[OPTIM__SP], c, len, t->ctx[OPTIM__SP]);
                after = p1;
            }
            if (t->clampflag) t->clampflag(len, &x[OPTIM__SS(0)], (const optim__k *)t->k, cl);
            t->stats(len, p0, after, x[OPTIM__SG], t->clampflag ? cl : NULL, (const optim__k *)t->k, lanes);
        }
        if (!fused || len < OPTIM__CHUNK) t->sflush(lanes, acc);
        if (c + len == to || (c + len) % OPTIM__RBLOCK == 0)
            optim__stats_fold(acc, t->spart + OPTIM__NSTAT * (c / OPTIM__RBLOCK));
    }
}

void optim__range_update(const optim__kernels *kt, const optim__task *t, size_t from, size_t to)
{
    void *s[OPTIM_MAX_SLOTS];
    int j;
    (void)kt;
    if (t->ema) {
        optim__range_update_ema(kt, t, from, to); /* include/optim_ema.h: ema_run.c */
        return;
    }
    if (t->rows) {
        optim__update_rows(t, from, to);
        return;
    }
    if (t->spart) {
        optim__update_stats(t, from, to);
        return;
    }
    if (t->chunked) {
        optim__update_chunked(t, from, to);
        return;
    }
    for (j = 0; j < OPTIM_MAX_SLOTS; j++) s[j] = optim__at(t, OPTIM__SS(j), t->s[j], from);
    t->loop(to - from, optim__at(t, OPTIM__SP, t->p, from), optim__at(t, OPTIM__SG, (void *)(uintptr_t)t->g, from),
            s, (const optim__k *)t->k);
}

/* ---- Pass 1 of the rules with a per-tensor reduction ------------------------------------- */

int optim__rloops_get(const optim__kernels *kt, optim_rule rule, optim__ctype ct, unsigned variant, unsigned reduce,
                      optim__task *t)
{
    const optim__rloops *l;
    unsigned v = variant & ~OPTIM__V_CLAMP, at;
    t->pre = NULL;
    t->red = NULL;
    t->both = NULL;
    t->pre_reads = t->pre_writes = t->red_reads = 0;
    if (!reduce) return 0;
    if ((int)rule < 1 || (int)rule > OPTIM_RULE_COUNT || (int)ct < 0 || ct >= OPTIM__NCTYPES) return -1;
    l = &kt->rloops[rule][ct];
    if (!l->pre || !l->red || !l->both || v >= l->nvariants) return -1;
    at = (variant & OPTIM__V_CLAMP) ? l->nvariants + v : v;
    if (reduce & OPTIM__RED_PRE) {
        t->pre = l->pre[at];
        t->pre_reads = l->pre_reads(v);
        t->pre_writes = l->pre_writes(v);
    }
    if (reduce & OPTIM__RED_NORMS) {
        t->red = l->red[at];
        t->red_reads = l->red_reads(v);
    }
    if ((reduce & OPTIM__RED_PRE) && (reduce & OPTIM__RED_NORMS)) t->both = l->both[at];
    return 0;
}

/* Elements [off, off + len) of t (a block or part of one, off a multiple of
 * OPTIM__CHUNK) through pass 1, sums into the 32 lanes of acc. Chunked
 * tasks go chunk by chunk: the streams pre or red read are loaded, pre runs,
 * the slots it writes are stored by their descriptors and, for red, loaded
 * back, so that the norms are of the state as stored (rounded to bfloat16,
 * quantized...), the state pass 2 will read. p is never stored here. */
static void optim__reduce_rule_range(const optim__task *t, size_t off, size_t len, double *acc)
{
    _Alignas(64) double scratch[2 + OPTIM_MAX_SLOTS][OPTIM__CHUNK];
    void *base[2 + OPTIM_MAX_SLOTS], *x[2 + OPTIM_MAX_SLOTS];
    const unsigned rd = t->pre_reads | t->red_reads;
    size_t c;
    int j;
    if (!t->chunked) {
        for (j = 0; j < OPTIM_MAX_SLOTS; j++) x[OPTIM__SS(j)] = optim__at(t, OPTIM__SS(j), t->s[j], off);
        x[OPTIM__SP] = optim__at(t, OPTIM__SP, t->p, off);
        x[OPTIM__SG] = optim__at(t, OPTIM__SG, (void *)(uintptr_t)t->g, off);
        if (t->both) {
            t->both(len, x[OPTIM__SP], x[OPTIM__SG], &x[OPTIM__SS(0)], (const optim__k *)t->k, acc);
            return;
        }
        if (t->pre) t->pre(len, x[OPTIM__SP], x[OPTIM__SG], &x[OPTIM__SS(0)], (const optim__k *)t->k);
        if (t->red) t->red(len, x[OPTIM__SP], x[OPTIM__SG], &x[OPTIM__SS(0)], (const optim__k *)t->k, acc);
        return;
    }
    base[OPTIM__SP] = t->p;
    base[OPTIM__SG] = (void *)(uintptr_t)t->g;
    for (j = 0; j < OPTIM_MAX_SLOTS; j++) base[OPTIM__SS(j)] = t->s[j];
    for (c = off; c < off + len; c += OPTIM__CHUNK) {
        const size_t n = off + len - c < OPTIM__CHUNK ? off + len - c : OPTIM__CHUNK;
        for (j = 0; j < 2 + OPTIM_MAX_SLOTS; j++) {
            const optim__storage *st = t->sto[j];
            const int need = j < 2 || ((rd >> (j - 2)) & 1u);
            x[j] = NULL;
            if (!need || !base[j]) continue;
            if (st->direct) {
                x[j] = optim__at(t, j, base[j], c);
            } else {
                x[j] = scratch[j];
                st->load(scratch[j], base[j], c, n, t->ctx[j]);
            }
        }
        if (t->pre) {
            t->pre(n, x[OPTIM__SP], x[OPTIM__SG], &x[OPTIM__SS(0)], (const optim__k *)t->k);
            for (j = 0; j < OPTIM_MAX_SLOTS; j++) {
                const optim__storage *st = t->sto[OPTIM__SS(j)];
                if (!((t->pre_writes >> j) & 1u) || !base[OPTIM__SS(j)] || st->direct) continue;
                st->store(base[OPTIM__SS(j)], c, n, scratch[OPTIM__SS(j)], t->ctx[OPTIM__SS(j)]);
                if ((t->red_reads >> j) & 1u)
                    st->load(scratch[OPTIM__SS(j)], base[OPTIM__SS(j)], c, n, t->ctx[OPTIM__SS(j)]);
            }
        }
        if (t->red) t->red(n, x[OPTIM__SP], x[OPTIM__SG], &x[OPTIM__SS(0)], (const optim__k *)t->k, acc);
    }
}

void optim__reduce_rule_block(const optim__task *t, size_t off, size_t len, double *out)
{
    double acc[2 * 16];
    size_t j, l;
    int h;
    for (j = 0; j < 2 * 16; j++) acc[j] = 0.0;
    optim__reduce_rule_range(t, off, len, acc);
    /* Each value's 16 lanes in a fixed tree: 16 -> 8 -> 4 -> 2 -> 1. */
    for (h = 0; h < 2; h++) {
        double *a = acc + 16 * h;
        for (j = 8; j > 0; j /= 2)
            for (l = 0; l < j; l++) a[l] = a[l] + a[l + j];
        out[h] = a[0];
    }
}
