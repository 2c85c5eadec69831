/* typed.c: see typed.h. */
#define _POSIX_C_SOURCE 200809L
#include "typed.h"

#include "grid.h"

#include <float.h>

uint32_t tbits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

float tfloat(uint32_t u)
{
    float x;
    memcpy(&x, &u, 4);
    return x;
}

float t_bf16_to_float(uint16_t h)
{
    return tfloat((uint32_t)h << 16);
}

/* The nearer of the two bfloat16 values around x, judged by exact double
 * distances; a tie goes to the even one. The value past the largest finite
 * bfloat16 counts as 2^128 (IEEE rounds to infinity from there). */
uint16_t t_bf16_from_float(float x)
{
    uint32_t u = tbits(x), lo = u & 0xffff0000u;
    double a, b, da, db;
    if (isnan(x)) return 0x7fc0;
    if (isinf(x) || (u & 0xffffu) == 0) return (uint16_t)(u >> 16);
    a = t_bf16_to_float((uint16_t)(lo >> 16));
    b = ((lo + 0x10000u) & 0x7fffffffu) == 0x7f800000u ? copysign(ldexp(1.0, 128), x)
                                                         : t_bf16_to_float((uint16_t)((lo + 0x10000u) >> 16));
    da = fabs((double)x - a);
    db = fabs(b - (double)x);
    if (da < db) return (uint16_t)(lo >> 16);
    if (db < da) return (uint16_t)((lo >> 16) + 1);
    return (uint16_t)((lo >> 16) & 1u ? (lo >> 16) + 1 : lo >> 16);
}

double t_f16_to_double(uint16_t h)
{
    int sign = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 31) return m ? (sign ? -NAN : NAN) : (sign ? -INFINITY : INFINITY);
    v = e == 0 ? ldexp((double)m, -24) : ldexp((double)(1024 + m), e - 25);
    return sign ? -v : v;
}

/* From the definition: scale |x| to an integer count of the type's spacing
 * at its exponent, round that to nearest even in double (exact: a float has
 * 24 bits), rebuild the bits. */
uint16_t t_f16_from_float(float x)
{
    double ax = fabs((double)x), q;
    uint16_t sign = (uint16_t)(tbits(x) >> 31 << 15);
    int e;
    if (isnan(x)) return (uint16_t)(sign | 0x7e00);
    if (ax >= 65520.0) return (uint16_t)(sign | 0x7c00); /* halfway to 65536 rounds to the even: infinity */
    if (ax < ldexp(1.0, -14)) {
        q = nearbyint(ax / ldexp(1.0, -24)); /* subnormal count; 1024 is the smallest normal's bits */
        return (uint16_t)(sign | (uint16_t)q);
    }
    frexp(ax, &e);
    e -= 1; /* ax in [2^e, 2^(e+1)) */
    q = nearbyint(ax / ldexp(1.0, e - 10)); /* in [1024, 2048] */
    if (q == 2048.0) {
        q = 1024.0;
        e += 1;
    }
    if (e + 15 >= 31) return (uint16_t)(sign | 0x7c00);
    return (uint16_t)(sign | (uint16_t)((e + 15) << 10) | (uint16_t)(q - 1024.0));
}

double t_q8_value(uint8_t code, int kind)
{
    const int bias = kind == T_Q8_SIGNED ? 15 : 31;
    const unsigned mag = kind == T_Q8_SIGNED ? code & 0x7fu : code;
    const int e = (int)(mag >> 3), f = (int)(mag & 7u);
    double v;
    if (code == 0xff) return NAN;
    v = e == 0 ? ldexp(f / 8.0, 1 - bias) : ldexp(1.0 + f / 8.0, e - bias);
    return kind == T_Q8_SIGNED && (code & 0x80u) ? -v : v;
}

uint8_t t_q8_code(float x, float y, int kind)
{
    /* The magnitudes of codes 0..top ascend: find the first at or above |y| by bisection, then the nearer of it
     * and the one below, ties to the even code. */
    static double mags[2][249];
    static int ready;
    const int table = kind == T_Q8_SIGNED ? 0 : 1;
    const unsigned top = kind == T_Q8_SIGNED ? 120u : 248u; /* the code of 1.0 */
    const double a = fabs((double)y);
    unsigned lo = 0, hi = top, best;
    if (!ready) {
        unsigned c;
        for (c = 0; c <= 248; c++) {
            mags[0][c] = c <= 120 ? t_q8_value((uint8_t)c, T_Q8_SIGNED) : INFINITY;
            mags[1][c] = t_q8_value((uint8_t)c, T_Q8_NONNEG);
        }
        ready = 1;
    }
    if (isnan(x) || isinf(x)) return 0xff;
    if (kind != T_Q8_SIGNED && !(x > 0)) return 0;
    while (lo < hi) {
        const unsigned mid = (lo + hi) / 2;
        if (mags[table][mid] < a)
            lo = mid + 1;
        else
            hi = mid;
    }
    best = lo; /* the first magnitude >= a, or top */
    if (lo > 0) {
        const double below = a - mags[table][lo - 1], above = fabs(mags[table][lo] - a);
        if (below < above || (below == above && (lo - 1) % 2 == 0)) best = lo - 1;
    }
    if (kind == T_Q8_POSITIVE && best == 0) best = 1;
    if (kind == T_Q8_SIGNED && best != 0 && signbit(y)) best |= 0x80u;
    return (uint8_t)best;
}

uint8_t t_q8_code_sr(float x, float y, int kind, uint32_t r20)
{
    /* The two neighbouring codes of |y| (bisection over every code's value in double), and the fraction of
     * the step between them in units of 2^-20, rounded to nearest even (exact for codes at or above the
     * smallest normal one): up when it plus the random bits reaches 2^20. */
    static double mags[2][249];
    static int ready;
    const int table = kind == T_Q8_SIGNED ? 0 : 1;
    const unsigned top = kind == T_Q8_SIGNED ? 120u : 248u;
    const double a = fabs((double)y);
    unsigned lo = 0, hi = top, best;
    if (!ready) {
        unsigned c;
        for (c = 0; c <= 248; c++) {
            mags[0][c] = c <= 120 ? t_q8_value((uint8_t)c, T_Q8_SIGNED) : INFINITY;
            mags[1][c] = t_q8_value((uint8_t)c, T_Q8_NONNEG);
        }
        ready = 1;
    }
    if (isnan(x) || isinf(x)) return 0xff;
    if (kind != T_Q8_SIGNED && !(x > 0)) return 0;
    while (lo < hi) { /* the last code whose value is at most a */
        const unsigned mid = (lo + hi + 1) / 2;
        if (mags[table][mid] <= a)
            lo = mid;
        else
            hi = mid - 1;
    }
    best = lo;
    if (lo < top) {
        const double f = nearbyint((a - mags[table][lo]) / (mags[table][lo + 1] - mags[table][lo]) * 1048576.0);
        if (f + (double)r20 >= 1048576.0) best = lo + 1;
    }
    if (kind == T_Q8_POSITIVE && best == 0) best = 1;
    if (kind == T_Q8_SIGNED && best != 0 && signbit(y)) best |= 0x80u;
    return (uint8_t)best;
}

void t_q8_quantize_sr(void *slot, const float *x, size_t n, int kind, const uint32_t *r20)
{
    uint8_t *codes = (uint8_t *)slot;
    float *scales = (float *)(void *)((char *)slot + OPTIM_INT8_BLOCK_SCALES_OFFSET(n));
    size_t b, i;
    for (b = 0; b < n; b += OPTIM_INT8_BLOCK_SIZE) {
        const size_t len = n - b < OPTIM_INT8_BLOCK_SIZE ? n - b : OPTIM_INT8_BLOCK_SIZE;
        float A = FLT_MIN, r;
        for (i = 0; i < len; i++)
            if (isfinite(x[b + i]) && fabsf(x[b + i]) > A) A = fabsf(x[b + i]);
        r = 1.0f / A;
        scales[b / OPTIM_INT8_BLOCK_SIZE] = A;
        for (i = 0; i < len; i++) codes[b + i] = t_q8_code_sr(x[b + i], x[b + i] * r, kind, r20[b + i]);
    }
}

void t_q8_quantize(void *slot, const float *x, size_t n, int kind)
{
    uint8_t *codes = (uint8_t *)slot;
    float *scales = (float *)(void *)((char *)slot + OPTIM_INT8_BLOCK_SCALES_OFFSET(n));
    size_t b, i;
    for (b = 0; b < n; b += OPTIM_INT8_BLOCK_SIZE) {
        const size_t len = n - b < OPTIM_INT8_BLOCK_SIZE ? n - b : OPTIM_INT8_BLOCK_SIZE;
        float A = FLT_MIN, r;
        for (i = 0; i < len; i++)
            if (isfinite(x[b + i]) && fabsf(x[b + i]) > A) A = fabsf(x[b + i]);
        r = 1.0f / A;
        scales[b / OPTIM_INT8_BLOCK_SIZE] = A;
        for (i = 0; i < len; i++) codes[b + i] = t_q8_code(x[b + i], x[b + i] * r, kind);
    }
}

void t_q8_dequantize(float *x, const void *slot, size_t n, int kind)
{
    const uint8_t *codes = (const uint8_t *)slot;
    const float *scales = (const float *)(const void *)((const char *)slot + OPTIM_INT8_BLOCK_SCALES_OFFSET(n));
    size_t i;
    for (i = 0; i < n; i++) {
        const double v = t_q8_value(codes[i], kind);
        /* The product of a 4-bit and a 24-bit significand is exact in double: one rounding, as in float. */
        x[i] = isnan(v) ? NAN : (float)(v * (double)scales[i / OPTIM_INT8_BLOCK_SIZE]);
    }
}

int t_q8_kind(optim_rule rule, int slot)
{
    static const char *const positive[] = {"exp_avg_sq", "max_exp_avg_sq", "sum", "square_avg", "exp_inf", "step_size",
                                           "row_var", "col_var", "variance"}; /* second moments (Adafactor) */
    const char *name = optim_rule_slot_name(rule, slot);
    size_t k;
    if (!name) return T_Q8_SIGNED;
    if (strcmp(name, "acc_delta") == 0) return T_Q8_NONNEG;
    for (k = 0; k < sizeof positive / sizeof positive[0]; k++)
        if (strcmp(name, positive[k]) == 0) return T_Q8_POSITIVE;
    return T_Q8_SIGNED;
}

static size_t t_bytes(optim_dtype dtype, size_t n)
{
    return dtype == OPTIM_INT8_BLOCK ? OPTIM_INT8_BLOCK_BYTES(n) : n * optim_dtype_size(dtype);
}

void *t_alloc(optim_dtype dtype, size_t n)
{
    size_t bytes = t_bytes(dtype, n ? n : 1);
    void *p = NULL;
    if (posix_memalign(&p, 64, (bytes + 63) / 64 * 64) != 0) return NULL;
    memset(p, 0, bytes);
    return p;
}

double t_get(optim_dtype dtype, const void *a, size_t i)
{
    switch (dtype) {
    case OPTIM_FLOAT32: return ((const float *)a)[i];
    case OPTIM_FLOAT64: return ((const double *)a)[i];
    case OPTIM_BFLOAT16: return t_bf16_to_float(((const uint16_t *)a)[i]);
    case OPTIM_FLOAT16: return t_f16_to_double(((const uint16_t *)a)[i]);
    default: return NAN;
    }
}

void t_set(optim_dtype dtype, void *a, size_t i, double x)
{
    switch (dtype) {
    case OPTIM_FLOAT32: ((float *)a)[i] = (float)x; break;
    case OPTIM_FLOAT64: ((double *)a)[i] = x; break;
    case OPTIM_BFLOAT16: ((uint16_t *)a)[i] = t_bf16_from_float((float)x); break;
    case OPTIM_FLOAT16: ((uint16_t *)a)[i] = t_f16_from_float((float)x); break;
    default: break;
    }
}

int t_same(optim_dtype dtype, const void *a, const void *b, size_t n, size_t *where)
{
    size_t size = optim_dtype_size(dtype), i;
    if (dtype == OPTIM_INT8_BLOCK) {
        const size_t off = OPTIM_INT8_BLOCK_SCALES_OFFSET(n), nb = (n + OPTIM_INT8_BLOCK_SIZE - 1) / OPTIM_INT8_BLOCK_SIZE;
        if (memcmp(a, b, n) == 0 && memcmp((const char *)a + off, (const char *)b + off, 4 * nb) == 0) return 1;
        for (i = 0; i < n && ((const uint8_t *)a)[i] == ((const uint8_t *)b)[i]; i++) continue;
        if (i == n) {
            size_t k;
            for (k = 0; k < nb && memcmp((const char *)a + off + 4 * k, (const char *)b + off + 4 * k, 4) == 0; k++)
                continue;
            i = n + k;
        }
        if (where) *where = i;
        return 0;
    }
    if (memcmp(a, b, n * size) == 0) return 1;
    for (i = 0; i < n && memcmp((const char *)a + i * size, (const char *)b + i * size, size) == 0; i++) continue;
    if (where) *where = i;
    return 0;
}

int tmodel_init(tmodel *m, optim_dtype pdt, optim_dtype gdt, const size_t *sizes, size_t count, size_t ngroups,
                test_rng *rng)
{
    return tmodel_init_ex(m, pdt, gdt, -1, sizes, count, ngroups, rng);
}

int tmodel_init_ex(tmodel *m, optim_dtype pdt, optim_dtype gdt, int sdt, const size_t *sizes, size_t count,
                   size_t ngroups, test_rng *rng)
{
    size_t i, j, total = count * ngroups;
    memset(m, 0, sizeof *m);
    if (optim_dtypes_check(pdt, gdt, &m->sdt, NULL) != OPTIM_OK) return -1;
    if (sdt >= 0) {
        if (optim_state_dtype_check(pdt, (optim_dtype)sdt, NULL) != OPTIM_OK) return -1;
        m->sdt = (optim_dtype)sdt;
    }
    m->pdt = pdt;
    m->gdt = gdt;
    m->count = total;
    m->n = (size_t *)calloc(total, sizeof *m->n);
    m->group = (size_t *)calloc(total, sizeof *m->group);
    m->p = (void **)calloc(total, sizeof *m->p);
    m->g = (void **)calloc(total, sizeof *m->g);
    m->s = (void *(*)[OPTIM_MAX_SLOTS])calloc(total, sizeof *m->s);
    if (!m->n || !m->group || !m->p || !m->g || !m->s) return -1;
    for (i = 0; i < total; i++) {
        m->n[i] = sizes[i % count];
        m->group[i] = i / count;
        m->p[i] = t_alloc(pdt, m->n[i]);
        m->g[i] = t_alloc(gdt, m->n[i]);
        if (!m->p[i] || !m->g[i]) return -1;
        for (j = 0; j < OPTIM_MAX_SLOTS; j++)
            if (!(m->s[i][j] = t_alloc(m->sdt, m->n[i]))) return -1;
        for (j = 0; j < m->n[i]; j++) t_set(pdt, m->p[i], j, test_rng_normal(rng));
    }
    return 0;
}

void tmodel_free(tmodel *m)
{
    size_t i, j;
    for (i = 0; i < m->count; i++) {
        if (m->p) free(m->p[i]);
        if (m->g) free(m->g[i]);
        if (m->s)
            for (j = 0; j < OPTIM_MAX_SLOTS; j++) free(m->s[i][j]);
    }
    free(m->n);
    free(m->group);
    free(m->p);
    free(m->g);
    free(m->s);
    memset(m, 0, sizeof *m);
}

const char *t_clip_name(int clip)
{
    return clip == T_CLIP_VALUE ? "value clipping" : clip == T_CLIP_NORM ? "norm clipping" : "no clipping";
}

/* Non-finite values of each type: +NaN, -NaN, a NaN with a payload, +Inf, -Inf. */
static void t_set_nonfinite(optim_dtype dtype, void *a, size_t i, int which)
{
    static const uint32_t f32[5] = {0x7fc00000u, 0xffc00000u, 0x7fa00001u, 0x7f800000u, 0xff800000u};
    static const uint64_t f64[5] = {0x7ff8000000000000ull, 0xfff8000000000000ull, 0x7ff4000000000001ull,
                                    0x7ff0000000000000ull, 0xfff0000000000000ull};
    static const uint16_t bf16[5] = {0x7fc0, 0xffc0, 0x7fa1, 0x7f80, 0xff80};
    static const uint16_t f16[5] = {0x7e00, 0xfe00, 0x7d01, 0x7c00, 0xfc00};
    switch (dtype) {
    case OPTIM_FLOAT32: memcpy((char *)a + 4 * i, &f32[which], 4); break;
    case OPTIM_FLOAT64: memcpy((char *)a + 8 * i, &f64[which], 8); break;
    case OPTIM_BFLOAT16: ((uint16_t *)a)[i] = bf16[which]; break;
    case OPTIM_FLOAT16: ((uint16_t *)a)[i] = f16[which]; break;
    default: break;
    }
}

/* Where a non-finite run puts a non-finite value (element i, step t), and which: -1 for none. */
static int t_nonfinite_at(size_t i, int t)
{
    size_t k = (i * 7 + (size_t)t * 3) % 23;
    return k < 5 ? (int)k : -1;
}

int tgrads_init(tgrads *G, const tmodel *m, int steps, uint64_t seed, int nonfinite)
{
    test_rng rng = {seed};
    size_t i, j;
    int t;
    memset(G, 0, sizeof *G);
    G->steps = steps;
    G->nonfinite = nonfinite;
    G->count = m->count;
    G->g = (void **)calloc(m->count ? m->count : 1, sizeof *G->g);
    if (!G->g) return -1;
    for (i = 0; i < m->count; i++) {
        char *g = (char *)t_alloc(m->gdt, m->n[i] * (size_t)steps);
        if (!g) return -1;
        G->g[i] = g;
        for (t = 0; t < steps; t++) {
            void *gt = g + (size_t)t * m->n[i] * optim_dtype_size(m->gdt);
            for (j = 0; j < m->n[i]; j++) {
                int which = nonfinite ? t_nonfinite_at(j, t) : -1;
                double x = test_rng_normal(&rng);
                if (which >= 0)
                    t_set_nonfinite(m->gdt, gt, j, which);
                else
                    t_set(m->gdt, gt, j, x);
            }
        }
    }
    return 0;
}

void tgrads_free(tgrads *G)
{
    size_t i;
    if (G->g)
        for (i = 0; i < G->count; i++) free(G->g[i]);
    free(G->g);
    memset(G, 0, sizeof *G);
}

int t_run(const optim_hparams *hps, int clip, const tmodel *init, const tgrads *G, optim_isa isa, int threads,
          int64_t start_step, tmodel *out)
{
    const optim_hparams *hp = &hps[0];
    optim *o = NULL;
    size_t i, j, gsize = optim_dtype_size(init->gdt), ngroups = init->count ? init->group[init->count - 1] + 1 : 0;
    int t, s;
    ASSERT_OK(optim_create(&o, hp->rule));
    for (i = 0; i < ngroups; i++) ASSERT_OPT_OK(o, optim_add_group(o, &hps[i], NULL));
    ASSERT_OPT_OK(o, optim_set_isa(o, isa));
    ASSERT_OPT_OK(o, optim_set_threads(o, threads));
    if (clip == T_CLIP_VALUE) ASSERT_OPT_OK(o, optim_set_clip_grad_value(o, 0.3));
    if (clip == T_CLIP_NORM) ASSERT_OPT_OK(o, optim_set_clip_grad_norm(o, 1.0, 2.0));
    for (i = 0; i < init->count; i++) {
        memcpy(out->p[i], init->p[i], init->n[i] * optim_dtype_size(init->pdt));
        ASSERT_OPT_OK(o, optim_add_param_ex(o, init->group[i], out->p[i], init->pdt, out->g[i], init->gdt,
                                            init->n[i], init->sdt, 0, NULL, NULL));
        if (start_step) ASSERT_OPT_OK(o, optim_param_set_step(o, i, start_step));
        if (G->nonfinite) {
            /* Non-finite parameters and state elements too (slots that hold data). */
            for (j = 0; j < init->n[i]; j++) {
                int which = t_nonfinite_at(j, 100);
                if (which >= 0 && j % 2) t_set_nonfinite(init->pdt, out->p[i], j, which);
            }
            for (s = 0; s < optim_rule_slot_count(hp->rule); s++) {
                void *data = NULL;
                int held = 0;
                size_t len = 0;
                ASSERT_OPT_OK(o, optim_state_slot_data(o, i, s, &data, NULL, &held));
                if (!data || !held) continue;
                ASSERT_OPT_OK(o, optim_state_slot_len(o, i, s, &len)); /* Adafactor's factors: fewer than n */
                for (j = 0; j < len; j++) {
                    int which = t_nonfinite_at(j, 200 + s);
                    if (which >= 0 && j % 3 == 0) t_set_nonfinite(out->sdt, data, j, which);
                }
            }
        }
    }
    for (t = 0; t < G->steps; t++) {
        for (i = 0; i < init->count; i++)
            memcpy(out->g[i], (const char *)G->g[i] + (size_t)t * init->n[i] * gsize, init->n[i] * gsize);
        ASSERT_OPT_OK(o, optim_step(o));
    }
    for (i = 0; i < init->count; i++) {
        for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
            void *data = NULL;
            optim_dtype dt = out->sdt;
            if (s < optim_rule_slot_count(hp->rule)) ASSERT_OPT_OK(o, optim_state_slot_data(o, i, s, &data, &dt, NULL));
            if (dt != out->sdt) FAIL("state of type %s, expected %s", optim_dtype_name(dt), optim_dtype_name(out->sdt));
            memset(out->s[i][s], 0, t_bytes(out->sdt, init->n[i]));
            if (data) {
                size_t len = init->n[i]; /* Adafactor's factored slots: fewer (optim_state_slot_len) */
                ASSERT_OPT_OK(o, optim_state_slot_len(o, i, s, &len));
                memcpy(out->s[i][s], data, t_bytes(out->sdt, len < init->n[i] ? len : init->n[i]));
            }
        }
    }
    optim_free(o);
    return 0;
}

int t_compare(const tmodel *a, const tmodel *b, const char *what, const optim_hparams *hps, int clip)
{
    size_t i, where = 0;
    int sl;
    char desc[256];
    for (i = 0; i < a->count; i++) {
        for (sl = -1; sl < OPTIM_MAX_SLOTS; sl++) {
            optim_dtype dt = sl < 0 ? a->pdt : a->sdt;
            const void *x = sl < 0 ? a->p[i] : a->s[i][sl], *y = sl < 0 ? b->p[i] : b->s[i][sl];
            if (t_same(dt, x, y, a->n[i], &where)) continue;
            {
                const optim_hparams *hp = &hps[a->group[i]];
                uint64_t bx = 0, by = 0;
                memcpy(&bx, (const char *)x + where * optim_dtype_size(dt), optim_dtype_size(dt));
                memcpy(&by, (const char *)y + where * optim_dtype_size(dt), optim_dtype_size(dt));
                FAIL("%s: %s, %s, %s params with %s grads: tensor %zu (n %zu), %s%s, element %zu: %.17g (0x%llx) vs "
                     "%.17g (0x%llx)",
                     what, grid_describe(hp, desc, sizeof desc), t_clip_name(clip), optim_dtype_name(a->pdt),
                     optim_dtype_name(a->gdt), i, a->n[i], sl < 0 ? "param" : "slot ",
                     sl < 0 ? "" : optim_rule_slot_name(hp->rule, sl), where, t_get(dt, y, where),
                     (unsigned long long)by, t_get(dt, x, where), (unsigned long long)bx);
            }
        }
    }
    return 0;
}

const optim_isa t_isas[5] = {OPTIM_ISA_SCALAR, OPTIM_ISA_AVX2, OPTIM_ISA_AVX512, OPTIM_ISA_AVX512BF16, OPTIM_ISA_NEON};

void t_print_paths(const char *test)
{
    size_t k;
    printf("  %s: paths", test);
    for (k = 0; k < T_NISAS; k++)
        printf(" %s %s%s", optim_isa_name(t_isas[k]),
               optim_isa_available(t_isas[k]) ? "exercised" : "NOT EXERCISED (not in this build or on this CPU)",
               k + 1 < T_NISAS ? "," : "\n");
}
