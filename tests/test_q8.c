/* test_q8.c: OPTIM_INT8_BLOCK, 8-bit block-quantized state: the library's
 * codes against the tests' own (typed.c, from the definition in optim.h), the
 * API (which parameters may have it, its bytes, the float views, every rule's
 * slot declarations), checkpoints (bit for bit, and quantizing or
 * dequantizing across types), and the accuracy of Adam with it against float32
 * state. Every CPU path and thread count against a reference that quantizes
 * with the tests' code: int8_state_vs_quantizing_reference (test_paths.c);
 * here, every path's descriptors against quant8.h's functions
 * (int8_descriptors_every_path) and long runs of every path against the
 * scalar one (int8_steps_every_path). */
#include "typed.h"

#include "kernels/quant8.h" /* white box: the library's element codes */
#include "optim_internal.h" /* white box: the rules' slot declarations */
#include "optim_checkpoint.h"

#include <float.h>

/* The library's code of x (block scale reciprocal r) against the tests'. */
static int check_code(float x, float r, int kind, long *checked)
{
    const uint8_t a = kind == T_Q8_SIGNED ? optim__q8_enc_s(x, r) : optim__q8_enc_u(x, r, kind == T_Q8_POSITIVE);
    const uint8_t b = t_q8_code(x, x * r, kind);
    if (a != b) FAIL("kind %d: code of %a (r %a, y %a): library 0x%02x, reference 0x%02x", kind, (double)x, (double)r,
                     (double)(x * r), a, b);
    (*checked)++;
    return 0;
}

TEST_IMPL(int8_codes_exact)
{
    test_rng rng = {test_seed() ^ 0x98};
    long checked = 0;
    int kind;
    for (kind = T_Q8_SIGNED; kind <= T_Q8_POSITIVE; kind++) {
        const unsigned top = kind == T_Q8_SIGNED ? 120u : 248u;
        unsigned c;
        int k;
        float sgn;
        /* Every code value, the midpoints to its neighbours (ties) and the floats beside them. */
        for (c = 0; c <= top; c++) {
            const double v = t_q8_value((uint8_t)c, kind), next = c < top ? t_q8_value((uint8_t)(c + 1), kind) : 1.0;
            const float mid = (float)((v + next) / 2); /* exact: few significant bits */
            for (sgn = -1; sgn <= 1; sgn += 2) {
                const float pts[] = {(float)v, mid, nextafterf(mid, 0), nextafterf(mid, 2), nextafterf((float)v, 0),
                                     nextafterf((float)v, 2)};
                for (k = 0; k < 6; k++)
                    if (check_code(sgn * pts[k], 1.0f, kind, &checked)) return 1;
            }
        }
        /* Non-finite values, zeros, the tiniest floats. */
        {
            const float special[] = {NAN, -NAN, INFINITY, -INFINITY, 0.0f, -0.0f, FLT_MIN, -FLT_MIN, 1e-45f, -1e-45f,
                                     FLT_MAX, -FLT_MAX};
            for (k = 0; k < (int)(sizeof special / sizeof special[0]); k++)
                if (check_code(special[k], 1.0f, kind, &checked)) return 1;
        }
        /* Random values and block scales. */
        for (k = 0; k < 200000 / T_SAMPLE; k++) {
            const float A = (float)ldexp(0.5 + test_rng_uniform(&rng), (int)(test_rng_u64(&rng) % 200) - 120);
            const float x = (float)(A * ldexp(test_rng_uniform(&rng), -(int)(test_rng_u64(&rng) % 40)) *
                                    (test_rng_u64(&rng) & 1 ? -1 : 1));
            if (check_code(x, 1.0f / A, kind, &checked)) return 1;
        }
        /* Every code dequantizes as the definition says, with random scales. */
        for (k = 0; k < 2000; k++) {
            const float A = k == 0 ? FLT_MIN : (float)ldexp(0.5 + test_rng_uniform(&rng), (int)(test_rng_u64(&rng) % 250) - 125);
            for (c = 0; c < 256; c++) {
                const float lib = kind == T_Q8_SIGNED ? optim__q8_dec_s((uint8_t)c, A) : optim__q8_dec_u((uint8_t)c, A);
                const double v = t_q8_value((uint8_t)c, kind);
                float ref;
                if (c > top && c != 0xff && (kind != T_Q8_SIGNED || (c & 0x7fu) > top)) continue; /* never stored */
                ref = isnan(v) ? NAN : (float)(v * (double)A);
                if (!(tbits(lib) == tbits(ref) || (isnan(lib) && isnan(ref) && tbits(lib) == 0x7fc00000u)))
                    FAIL("kind %d: code 0x%02x with scale %a reads %a, not %a", kind, c, (double)A, (double)lib,
                         (double)ref);
            }
        }
    }
    printf("  %ld values quantized as the tests' nearest-code search does (3 slot kinds); every code read back as "
           "defined\n", checked);
    return 0;
}

/* 1 if two int8_block slots of n elements hold the same codes and scales (the padding between them is not
 * state). */
static int same_q8(const void *a, const void *b, size_t n)
{
    const size_t off = OPTIM_INT8_BLOCK_SCALES_OFFSET(n), nb = (n + OPTIM_INT8_BLOCK_SIZE - 1) / OPTIM_INT8_BLOCK_SIZE;
    return memcmp(a, b, n) == 0 && memcmp((const char *)a + off, (const char *)b + off, 4 * nb) == 0;
}

/* An Adam optimizer over one float32 parameter of n elements with state of type sdt. */
static optim *adam_with(optim_dtype sdt, float *p, const float *g, size_t n, int amsgrad)
{
    optim *o = NULL;
    optim_hparams hp;
    if (optim_create(&o, OPTIM_ADAM) != OPTIM_OK) return NULL;
    optim_hparams_init(&hp, OPTIM_ADAM, NULL);
    hp.lr = 0.01;
    hp.amsgrad = amsgrad;
    if (optim_add_group(o, &hp, NULL) != OPTIM_OK ||
        optim_add_param_ex(o, 0, p, OPTIM_FLOAT32, g, OPTIM_FLOAT32, n, sdt, 0, "w", NULL) != OPTIM_OK) {
        optim_free(o);
        return NULL;
    }
    return o;
}

TEST_IMPL(int8_state_api)
{
    enum { N = 1000 };
    static float p[N], g[N], x[N], y[N];
    static unsigned char ref[OPTIM_INT8_BLOCK_BYTES(N)];
    test_rng rng = {test_seed() ^ 0x8a};
    optim *o;
    optim_error err;
    size_t bytes, i;
    void *data;
    optim_dtype dt;
    int r, s;
    double v;
    ASSERT(strcmp(optim_dtype_name(OPTIM_INT8_BLOCK), "int8_block") == 0);
    ASSERT_INT(optim_dtype_size(OPTIM_INT8_BLOCK), ==, 1);
    /* A state type only, for parameters whose math runs in float. */
    ASSERT_OK(optim_state_dtype_check(OPTIM_FLOAT32, OPTIM_INT8_BLOCK, &err));
    ASSERT_OK(optim_state_dtype_check(OPTIM_BFLOAT16, OPTIM_INT8_BLOCK, &err));
    ASSERT_OK(optim_state_dtype_check(OPTIM_FLOAT16, OPTIM_INT8_BLOCK, &err));
    ASSERT_ERR(optim_state_dtype_check(OPTIM_FLOAT64, OPTIM_INT8_BLOCK, &err), OPTIM_EUNSUPPORTED, err.message,
               "int8_block state for float64");
    ASSERT_ERR(optim_dtypes_check(OPTIM_INT8_BLOCK, OPTIM_INT8_BLOCK, NULL, &err), OPTIM_EUNSUPPORTED, err.message,
               "state type only");
    ASSERT_ERR(optim_dtypes_check(OPTIM_FLOAT32, OPTIM_INT8_BLOCK, NULL, &err), OPTIM_EUNSUPPORTED, err.message,
               "int8_block");
    /* <= 2.1 bytes of state per parameter for Adam (codes and scales). */
    for (i = 0; i < N; i++) {
        p[i] = (float)test_rng_normal(&rng);
        g[i] = (float)test_rng_normal(&rng);
    }
    o = adam_with(OPTIM_INT8_BLOCK, p, g, N, 0);
    ASSERT(o != NULL);
    ASSERT_OPT_OK(o, optim_param_state_bytes(o, 0, &bytes));
    ASSERT_INT(bytes, ==, 2 * OPTIM_INT8_BLOCK_BYTES(N));
    ASSERT(bytes <= 2.1 * N);
    printf("  Adam with int8_block state: %zu bytes of state for %d parameters (%.3f per parameter; float32: 8)\n",
           bytes, N, (double)bytes / N);
    ASSERT_OPT_OK(o, optim_step(o));
    /* The float views: a read is the tests' dequantization of the slot's codes and scales ... */
    for (s = 0; s < 2; s++) {
        const int kind = t_q8_kind(OPTIM_ADAM, s);
        ASSERT_OPT_OK(o, optim_state_slot_data(o, 0, s, &data, &dt, NULL));
        ASSERT_INT(dt, ==, OPTIM_INT8_BLOCK);
        ASSERT_OPT_OK(o, optim_state_slot_read_f32(o, 0, s, x));
        t_q8_dequantize(y, data, N, kind);
        ASSERT(memcmp(x, y, sizeof x) == 0);
        /* ... a write the tests' quantization of the values. */
        for (i = 0; i < N; i++) x[i] = (float)(s ? ldexp(test_rng_uniform(&rng), -(int)(i % 50)) : test_rng_normal(&rng));
        if (s) x[3] = 1e-30f; /* tiny in its block: still not 0 in exp_avg_sq */
        ASSERT_OPT_OK(o, optim_state_slot_write_f32(o, 0, s, x));
        t_q8_quantize(ref, x, N, kind);
        if (!same_q8(data, ref, N)) FAIL("slot %d: optim_state_slot_write_f32 differs from the tests' quantization", s);
        if (s) ASSERT(((const uint8_t *)data)[3] != 0);
    }
    ASSERT_ERR(optim_state_slot(o, 0, 0, (float **)&data, NULL), OPTIM_EUNSUPPORTED, optim_errmsg(o), "int8_block");
    ASSERT_ERR(optim_state_slot_read_f32(o, 0, 0, NULL), OPTIM_ENULL, optim_errmsg(o), "dst");
    ASSERT_ERR(optim_state_slot_write_f32(o, 0, 5, x), OPTIM_ERANGE, optim_errmsg(o), "slot 5");
    optim_free(o);
    /* Every rule declares each slot's kind (signed, non-negative, never 0): the declarations
     * agree with the tests' own reading of the slots' names. */
    for (r = 1; r <= OPTIM_RULE_COUNT; r++)
        for (s = 0; optim_rule_name((optim_rule)r) && s < optim_rule_slot_count((optim_rule)r); s++)
            if (optim__rule((optim_rule)r)->slot_kinds[s] != t_q8_kind((optim_rule)r, s))
                FAIL("%s slot %s: kind %d, expected %d", optim_rule_name((optim_rule)r),
                     optim_rule_slot_name((optim_rule)r, s), optim__rule((optim_rule)r)->slot_kinds[s],
                     t_q8_kind((optim_rule)r, s));
    /* ... and the public optim_rule_slot_kind says the same (the binding reads it). */
    for (r = 1; r <= OPTIM_RULE_COUNT; r++) {
        for (s = 0; s < optim_rule_slot_count((optim_rule)r); s++)
            ASSERT_INT(optim_rule_slot_kind((optim_rule)r, s), ==, t_q8_kind((optim_rule)r, s));
        ASSERT_INT(optim_rule_slot_kind((optim_rule)r, optim_rule_slot_count((optim_rule)r)), ==, -1);
    }
    ASSERT_INT(optim_rule_slot_kind((optim_rule)0, 0), ==, -1);
    /* Adagrad's initial value, quantized as a step stores it. */
    {
        optim_hparams hp;
        optim_hparams_init(&hp, OPTIM_ADAGRAD, NULL);
        hp.initial_accumulator_value = 0.3;
        ASSERT_OK(optim_create(&o, OPTIM_ADAGRAD));
        ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
        ASSERT_OPT_OK(o, optim_add_param_ex(o, 0, p, OPTIM_FLOAT32, g, OPTIM_FLOAT32, N, OPTIM_INT8_BLOCK, 0, "w", NULL));
        ASSERT_OPT_OK(o, optim_state_slot_read_f32(o, 0, 0, x));
        for (i = 0; i < N; i++) {
            v = x[i];
            if (v != 0.3f) FAIL("Adagrad's sum starts at %.9g, not 0.3f", v);
        }
        optim_free(o);
    }
    return 0;
}

/* A checkpoint of int8_block state loads bit for bit, and across types:
 * float32 state loaded into int8_block state is quantized as a step stores
 * it, int8_block state loaded into float32 state dequantized. */
TEST_IMPL(int8_checkpoint_exact)
{
    enum { N = 777 };
    static float p[N], g[N], p2[N], x[N];
    static unsigned char ref[OPTIM_INT8_BLOCK_BYTES(N)];
    test_rng rng = {test_seed() ^ 0x8c};
    optim *a, *b, *f;
    void *buf = NULL, *da, *db;
    size_t size, i;
    int s, t;
    for (i = 0; i < N; i++) p[i] = p2[i] = (float)test_rng_normal(&rng);
    a = adam_with(OPTIM_INT8_BLOCK, p, g, N, 1);
    f = adam_with(OPTIM_FLOAT32, p2, g, N, 1);
    ASSERT(a && f);
    for (t = 0; t < 5; t++) {
        for (i = 0; i < N; i++) g[i] = (float)(test_rng_normal(&rng) * ldexp(1.0, -(int)(i % 30)));
        ASSERT_OPT_OK(a, optim_step(a));
        ASSERT_OPT_OK(f, optim_step(f));
    }
    /* int8_block -> int8_block: codes and scales bit for bit; the resumed run stays so. */
    ASSERT_OPT_OK(a, optim_save_buffer(a, &buf, &size));
    b = adam_with(OPTIM_INT8_BLOCK, p2, g, N, 1);
    ASSERT(b != NULL);
    ASSERT_OPT_OK(b, optim_load_buffer(b, buf, size, OPTIM_MATCH_POSITION, "int8"));
    for (s = 0; s < 3; s++) {
        ASSERT_OPT_OK(a, optim_state_slot_data(a, 0, s, &da, NULL, NULL));
        ASSERT_OPT_OK(b, optim_state_slot_data(b, 0, s, &db, NULL, NULL));
        if (!same_q8(da, db, N)) FAIL("slot %d not loaded bit for bit", s);
    }
    /* int8_block -> float32: dequantized. */
    ASSERT_OPT_OK(f, optim_load_buffer(f, buf, size, OPTIM_MATCH_POSITION, "int8"));
    for (s = 0; s < 3; s++) {
        float *fs;
        ASSERT_OPT_OK(a, optim_state_slot_data(a, 0, s, &da, NULL, NULL));
        ASSERT_OPT_OK(f, optim_state_slot(f, 0, s, &fs, NULL));
        t_q8_dequantize(x, da, N, t_q8_kind(OPTIM_ADAM, s));
        if (memcmp(x, fs, sizeof x) != 0) FAIL("slot %d: int8_block loaded into float32 is not its dequantization", s);
    }
    free(buf);
    /* float32 -> int8_block: quantized (fresh float32 values first). */
    for (t = 0; t < 3; t++) ASSERT_OPT_OK(f, optim_step(f));
    ASSERT_OPT_OK(f, optim_save_buffer(f, &buf, &size));
    ASSERT_OPT_OK(b, optim_load_buffer(b, buf, size, OPTIM_MATCH_POSITION, "float32"));
    for (s = 0; s < 3; s++) {
        float *fs;
        ASSERT_OPT_OK(f, optim_state_slot(f, 0, s, &fs, NULL));
        ASSERT_OPT_OK(b, optim_state_slot_data(b, 0, s, &db, NULL, NULL));
        t_q8_quantize(ref, fs, N, t_q8_kind(OPTIM_ADAM, s));
        if (!same_q8(ref, db, N)) FAIL("slot %d: float32 loaded into int8_block is not its quantization", s);
    }
    free(buf);
    /* Deferred state (never allocated) is written as fresh int8_block state: it loads as a fresh slot's bits. */
    {
        optim *d = NULL, *fresh = adam_with(OPTIM_INT8_BLOCK, p2, g, N, 1);
        optim_hparams hp;
        ASSERT(fresh != NULL);
        ASSERT_OK(optim_create(&d, OPTIM_ADAM));
        optim_hparams_init(&hp, OPTIM_ADAM, NULL);
        hp.lr = 0.01;
        hp.amsgrad = 1;
        ASSERT_OPT_OK(d, optim_add_group(d, &hp, NULL));
        ASSERT_OPT_OK(d, optim_set_defer_state(d, 1));
        ASSERT_OPT_OK(d, optim_add_param_ex(d, 0, p, OPTIM_FLOAT32, g, OPTIM_FLOAT32, N, OPTIM_INT8_BLOCK, 0, "w", NULL));
        ASSERT_OPT_OK(d, optim_save_buffer(d, &buf, &size));
        ASSERT_OPT_OK(b, optim_load_buffer(b, buf, size, OPTIM_MATCH_POSITION, "deferred"));
        for (s = 0; s < 3; s++) {
            ASSERT_OPT_OK(fresh, optim_state_slot_data(fresh, 0, s, &da, NULL, NULL));
            ASSERT_OPT_OK(b, optim_state_slot_data(b, 0, s, &db, NULL, NULL));
            if (!same_q8(da, db, N)) FAIL("slot %d: deferred state did not load as fresh", s);
        }
        free(buf);
        optim_free(d);
        optim_free(fresh);
    }
    optim_free(a);
    optim_free(b);
    optim_free(f);
    return 0;
}

/* Adam with int8_block state against float32 state on a small problem: a
 * least-squares fit of 4096 weights with per-weight curvatures spread over
 * four decades, 2000 steps of noisy gradients. The bound documented in
 * docs/PRECISION.md: the weights' distance to the float32 run below 5% of
 * their norm (measured 1.5%), and the final loss, near the noise floor,
 * below twice float32 state's (measured 1.57 times: the stalled second
 * moments of nearest rounding, docs/PRECISION.md). */
TEST_IMPL(int8_adam_accuracy)
{
    enum { N = 4096, STEPS = 2000 };
    static float w8[N], w32[N], g8[N], g32[N], h[N], target[N];
    test_rng rng = {test_seed() ^ 0x8d};
    optim *a, *b;
    double l8 = 0, l32 = 0, l0 = 0, d = 0, nw = 0;
    size_t i;
    int t;
    for (i = 0; i < N; i++) {
        h[i] = (float)ldexp(1.0, -(int)(test_rng_u64(&rng) % 14)); /* curvature 1 .. 2^-13 */
        target[i] = (float)test_rng_normal(&rng);
        w8[i] = w32[i] = 0.0f;
        l0 += 0.5 * h[i] * target[i] * target[i];
    }
    a = adam_with(OPTIM_INT8_BLOCK, w8, g8, N, 0);
    b = adam_with(OPTIM_FLOAT32, w32, g32, N, 0);
    ASSERT(a && b);
    for (t = 0; t < STEPS; t++) {
        for (i = 0; i < N; i++) {
            const double noise = 0.1 * test_rng_normal(&rng);
            g8[i] = (float)(h[i] * (w8[i] - target[i] + noise));
            g32[i] = (float)(h[i] * (w32[i] - target[i] + noise));
        }
        ASSERT_OPT_OK(a, optim_step(a));
        ASSERT_OPT_OK(b, optim_step(b));
    }
    for (i = 0; i < N; i++) {
        l8 += 0.5 * h[i] * (w8[i] - target[i]) * (w8[i] - target[i]);
        l32 += 0.5 * h[i] * (w32[i] - target[i]) * (w32[i] - target[i]);
        d += (double)(w8[i] - w32[i]) * (w8[i] - w32[i]);
        nw += (double)w32[i] * w32[i];
    }
    printf("  Adam, %d steps: loss %.6g -> float32 state %.6g, int8_block state %.6g (ratio %.4f); "
           "|w8 - w32| / |w32| = %.4f\n", STEPS, l0, l32, l8, l8 / l32, sqrt(d / nw));
    ASSERT(l32 < 0.1 * l0);
    ASSERT(l8 < 2.0 * l32);
    ASSERT(sqrt(d / nw) < 0.05);
    optim_free(a);
    optim_free(b);
    return 0;
}

/* Centered RMSprop with int8_block state: square_avg and grad_avg are
 * quantized apart, so for gradients that barely vary sq - ga^2 comes out
 * below 0 and, unguarded, sqrt of it makes the parameter NaN (this test did,
 * before the guard). The guard (v = max(v, sq / 16), the codes' resolution,
 * only for int8_block state) is held bit for bit against the tests' own step:
 * the rule's float math from the tests' dequantized state, the floor, the
 * tests' quantization; on every CPU path, one and two threads. The steps stay
 * bounded (about 4 lr at most). */
static int rmsprop_centered_q8_run(optim_isa isa, int threads, int momentum, long *clamped, long *negative)
{
    enum { N = 1000, STEPS = 100 };
    static float p[N], p0[N], g[N], c[N], rp[N], x_sq[N], x_ga[N], x_b[N];
    static unsigned char q_sq[OPTIM_INT8_BLOCK_BYTES(N)], q_ga[OPTIM_INT8_BLOCK_BYTES(N)], q_b[OPTIM_INT8_BLOCK_BYTES(N)];
    const float mom = (float)0.5;
    test_rng rng = {test_seed() ^ 0x8e};
    const float alpha = (float)0.9, oma = (float)(1.0 - 0.9), eps = (float)1e-8, neg_lr = (float)-0.01;
    optim *o;
    optim_hparams hp;
    void *d_sq, *d_ga;
    size_t i;
    int t;
    for (i = 0; i < N; i++) {
        /* a steady gradient per element, magnitudes over two decades within each block */
        c[i] = (float)((test_rng_uniform(&rng) < 0.5 ? -1 : 1) * exp(-4.6 * test_rng_uniform(&rng)));
        p0[i] = p[i] = rp[i] = (float)test_rng_normal(&rng);
        x_sq[i] = x_ga[i] = x_b[i] = 0.0f;
    }
    t_q8_quantize(q_sq, x_sq, N, T_Q8_POSITIVE);
    t_q8_quantize(q_ga, x_ga, N, T_Q8_SIGNED);
    t_q8_quantize(q_b, x_b, N, T_Q8_SIGNED);
    ASSERT_OK(optim_create(&o, OPTIM_RMSPROP));
    ASSERT_OPT_OK(o, optim_set_isa(o, isa));
    ASSERT_OPT_OK(o, optim_set_threads(o, threads));
    optim_hparams_init(&hp, OPTIM_RMSPROP, NULL);
    hp.lr = 0.01;
    hp.alpha = 0.9; /* the moments settle within the run: sq - ga^2 is then a small difference */
    hp.centered = 1;
    hp.momentum = momentum ? 0.5 : 0.0;
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_add_param_ex(o, 0, p, OPTIM_FLOAT32, g, OPTIM_FLOAT32, N, OPTIM_INT8_BLOCK, 0, "w", NULL));
    for (t = 0; t < STEPS; t++) {
        for (i = 0; i < N; i++) g[i] = c[i] * (float)(1.0 + 1e-4 * test_rng_normal(&rng));
        ASSERT_OPT_OK(o, optim_step(o));
        t_q8_dequantize(x_sq, q_sq, N, T_Q8_POSITIVE);
        t_q8_dequantize(x_ga, q_ga, N, T_Q8_SIGNED);
        t_q8_dequantize(x_b, q_b, N, T_Q8_SIGNED);
        for (i = 0; i < N; i++) {
            const float sq = fmaf(oma * g[i], g[i], x_sq[i] * alpha);
            const float ga = fmaf(g[i], oma, x_ga[i] * alpha);
            const float lo = sq * 0.0625f;
            float v = fmaf(-ga, ga, sq);
            if (v < lo) {
                *negative += v < 0;
                v = lo;
                ++*clamped;
            }
            x_sq[i] = sq;
            x_ga[i] = ga;
            if (momentum) { /* b = momentum * b + g / avg; p = fma(b, -lr, p) (rmsprop.h) */
                x_b[i] = x_b[i] * mom + g[i] / (sqrtf(v) + eps);
                rp[i] = fmaf(x_b[i], neg_lr, rp[i]);
            } else {
                rp[i] = rp[i] + (neg_lr * g[i]) / (sqrtf(v) + eps);
            }
        }
        t_q8_quantize(q_sq, x_sq, N, T_Q8_POSITIVE);
        t_q8_quantize(q_ga, x_ga, N, T_Q8_SIGNED);
        if (momentum) t_q8_quantize(q_b, x_b, N, T_Q8_SIGNED);
        for (i = 0; i < N; i++) {
            if (!isfinite(p[i]) || fabsf(p[i] - p0[i]) > (momentum ? 9.0f : 4.5f) * 0.01f * (float)(t + 1))
                FAIL("%s, %d threads, step %d: element %zu is %g, from %g (v = sq - ga^2 below 0, unguarded)",
                     optim_isa_name(isa), threads, t + 1, i, p[i], p0[i]);
            if (memcmp(&p[i], &rp[i], sizeof p[i]))
                FAIL("%s, %d threads, step %d: element %zu is %.9g, the tests' step %.9g", optim_isa_name(isa),
                     threads, t + 1, i, p[i], rp[i]);
        }
    }
    ASSERT_OPT_OK(o, optim_state_slot_data(o, 0, 0, &d_sq, NULL, NULL));
    ASSERT_OPT_OK(o, optim_state_slot_data(o, 0, 2, &d_ga, NULL, NULL));
    ASSERT(same_q8(d_sq, q_sq, N) && same_q8(d_ga, q_ga, N));
    if (momentum) {
        ASSERT_OPT_OK(o, optim_state_slot_data(o, 0, 1, &d_sq, NULL, NULL));
        ASSERT(same_q8(d_sq, q_b, N));
    }
    optim_free(o);
    return 0;
}

TEST_IMPL(int8_rmsprop_centered_finite)
{
    static const optim_isa isas[] = {OPTIM_ISA_SCALAR, OPTIM_ISA_AVX2, OPTIM_ISA_AVX512, OPTIM_ISA_AVX512BF16,
                                     OPTIM_ISA_NEON};
    size_t k;
    int threads, momentum, paths = 0;
    long clamped = 0, negative = 0;
    for (k = 0; k < sizeof isas / sizeof isas[0]; k++) {
        if (!optim_isa_available(isas[k])) continue;
        for (threads = 1; threads <= 2; threads++)
            for (momentum = 0; momentum <= 1; momentum++)
                if (rmsprop_centered_q8_run(isas[k], threads, momentum, &clamped, &negative)) return 1;
        paths++;
    }
    printf("  centered RMSprop, int8_block state, without and with momentum, 100 steps, %d paths x 1 and 2 threads: "
           "%ld element-steps had "
           "sq - ga^2 < sq / 16 (floored), %ld of them < 0; all finite, steps within 4.5 lr (9 with momentum 0.5), bit for bit the "
           "tests' step\n", paths, clamped, negative);
    ASSERT(paths > 0 && negative > 0); /* the case the guard is for did happen */
    return 0;
}

/* Damage to a checkpoint of int8_block state: a flipped byte anywhere (the
 * codes and the scales included) and every truncation are refused, naming
 * the damage, and change nothing in the optimizer loading it. */
TEST_IMPL(int8_checkpoint_damage)
{
    enum { N = 300 };
    static float p[N], g[N], p2[N];
    static unsigned char before[3][OPTIM_INT8_BLOCK_BYTES(N)];
    test_rng rng = {test_seed() ^ 0x8e};
    optim *a, *b;
    unsigned char *good, *bad;
    void *buf, *db;
    size_t size, off, flips = 0, cuts = 0;
    int s, t;
    for (off = 0; off < N; off++) p[off] = p2[off] = (float)test_rng_normal(&rng);
    a = adam_with(OPTIM_INT8_BLOCK, p, g, N, 1);
    b = adam_with(OPTIM_INT8_BLOCK, p2, g, N, 1);
    ASSERT(a && b);
    for (t = 0; t < 3; t++) {
        for (off = 0; off < N; off++) g[off] = (float)test_rng_normal(&rng);
        ASSERT_OPT_OK(a, optim_step(a));
    }
    ASSERT_OPT_OK(b, optim_step(b));
    for (s = 0; s < 3; s++) {
        ASSERT_OPT_OK(b, optim_state_slot_data(b, 0, s, &db, NULL, NULL));
        memcpy(before[s], db, sizeof before[s]);
    }
    ASSERT_OPT_OK(a, optim_save_buffer(a, &buf, &size));
    good = (unsigned char *)buf;
    bad = (unsigned char *)malloc(size);
    ASSERT(bad != NULL);
    /* The slots are the file's last bytes before its trailer (12 bytes): codes and scales of all three. */
    for (off = 0; off + 12 < size; off += off + 12 + 3 * OPTIM_INT8_BLOCK_BYTES(N) < size ? 97 : 1) {
        int rc;
        memcpy(bad, good, size);
        bad[off] ^= 0x10;
        rc = optim_load_buffer(b, bad, size, OPTIM_MATCH_POSITION, "damaged");
        if (rc == OPTIM_OK) FAIL("a flipped byte at %zu of %zu loaded", off, size);
        if (off + 12 + 3 * OPTIM_INT8_BLOCK_BYTES(N) >= size && rc != OPTIM_ECHECKSUM)
            FAIL("a flipped byte of the state at %zu of %zu: %s (%s), not a checksum mismatch", off, size,
                 optim_err_name(rc), optim_errmsg(b));
        flips++;
    }
    for (off = 0; off < size; off += 1 + off / 8) {
        const int rc = optim_load_buffer(b, good, off, OPTIM_MATCH_POSITION, "truncated");
        if (rc == OPTIM_OK) FAIL("the first %zu of %zu bytes loaded", off, size);
        cuts++;
    }
    for (s = 0; s < 3; s++) {
        ASSERT_OPT_OK(b, optim_state_slot_data(b, 0, s, &db, NULL, NULL));
        if (!same_q8(before[s], db, N)) FAIL("a refused load changed slot %d", s);
    }
    printf("  %zu flipped bytes (every byte of the slots' codes and scales) and %zu truncations refused; "
           "nothing changed\n", flips, cuts);
    ASSERT_OPT_OK(b, optim_load_buffer(b, good, size, OPTIM_MATCH_POSITION, "good"));
    free(bad);
    free(buf);
    optim_free(a);
    optim_free(b);
    return 0;
}

/* ---- Every CPU path's int8_block descriptors against quant8.h ---------------------------------------
 * The descriptors (kernels_math.h, with quant8_simd.h's vector routines on the avx2 and avx512 paths)
 * must give exactly the codes, scales and values of quant8.h's functions applied one element at a time
 * (optim__q8_quantize / optim__q8_dequantize, compiled here). */

#include "kernels/kernels.h" /* white box: the paths' storage descriptors */

static const optim_isa q_isas[] = {OPTIM_ISA_SCALAR, OPTIM_ISA_AVX2, OPTIM_ISA_AVX512, OPTIM_ISA_AVX512BF16,
                                   OPTIM_ISA_NEON};
#define Q_NISAS (sizeof q_isas / sizeof q_isas[0])

/* A value of code c of `kind` (the tests' own reading), as a float; 1.0 past the top. */
static float q_code_value(unsigned c, int kind)
{
    const unsigned top = kind == T_Q8_SIGNED ? 120u : 248u;
    return c > top ? 1.0f : (float)t_q8_value((uint8_t)c, kind);
}

/* Fill x[0..n) with blocks of inputs for the encoders: each block a scale and a pattern. */
static void q_encoder_inputs(float *x, size_t n, test_rng *rng)
{
    static const uint32_t special[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xffa00000u, 0x7f800000u,
                                       0xff800000u, 0x00000000u, 0x80000000u, 0x00000001u, 0x80000001u,
                                       0x007fffffu, 0x00800000u, 0x7f7fffffu, 0xff7fffffu, 0x3f800000u,
                                       0x3f800001u, 0x3f7fffffu, 0xbf800000u};
    const size_t B = OPTIM_INT8_BLOCK_SIZE;
    size_t b, i;
    for (b = 0; b * B < n; b++) {
        float *blk = x + b * B;
        const size_t len = n - b * B < B ? n - b * B : B;
        const unsigned pattern = (unsigned)(b % 8);
        /* A power of two (exact y = x / A: ties stay ties) or any float, over the whole exponent range. */
        const int e = (int)(test_rng_u64(rng) % 250) - 124;
        const float A = (b % 3) ? ldexpf(1.0f, e) : (float)ldexp(1.0 + test_rng_uniform(rng), e);
        for (i = 0; i < len; i++) {
            const size_t k = (i + b * 7) % 1024; /* which code and point: every lane position sees each */
            const int kind = pattern < 2 ? T_Q8_SIGNED : T_Q8_POSITIVE;
            const unsigned c = (unsigned)(k / 4) % (kind == T_Q8_SIGNED ? 121u : 249u);
            const float v = q_code_value(c, kind), next = q_code_value(c + 1, kind);
            const float mid = (float)(((double)v + next) / 2);
            const float pts[4] = {v, mid, nextafterf(mid, 0), nextafterf(mid, 2)};
            const float sgn = (test_rng_u64(rng) & 1) ? -1.0f : 1.0f;
            float y;
            switch (pattern) {
            case 0: case 2: /* every code, the ties between neighbours and the floats beside them, times A */
                y = sgn * pts[k % 4] * A;
                break;
            case 1: case 3: /* the same at the codes' subnormal boundaries: values far below the block's top */
                y = sgn * pts[k % 4] * A * (float)ldexp(1.0, -(int)(test_rng_u64(rng) % 6));
                break;
            case 4: /* every exponent, subnormal floats included */
                y = sgn * tfloat(((uint32_t)((b * 256 + i) % 254) << 23) | ((uint32_t)test_rng_u64(rng) & 0x7fffffu));
                break;
            case 5: /* specials (NaN, infinities, zeros of both signs, the extreme floats) among random values */
                y = (i % 5 == 0) ? tfloat(special[(i / 5 + b) % (sizeof special / sizeof special[0])])
                                 : (float)(test_rng_normal(rng) * A);
                break;
            case 6: /* random values over 40 binades below the block's top */
                y = (float)(test_rng_normal(rng) * ldexp(A, -(int)(test_rng_u64(rng) % 40)));
                break;
            default: /* a block of zeros, of NaN, of tiny values, or whose top rounds past 1.0 */
                y = (b / 8) % 4 == 0 ? ((i & 1) ? -0.0f : 0.0f)
                    : (b / 8) % 4 == 1 ? NAN
                    : (b / 8) % 4 == 2 ? tfloat((uint32_t)(test_rng_u64(rng) % 0x00800000u))
                                       : (float)(A * 3.0 * (i % 2 ? 1.0 : 1.0 - ldexp((double)(i % 7), -24)));
                break;
            }
            blk[i] = y;
        }
        if (pattern <= 3 && len > 0) blk[(b * 31) % len] = A; /* the block's top, somewhere */
    }
}

TEST_IMPL(int8_descriptors_every_path)
{
    enum { NBLK = 2400, TAIL = 37 };
    const size_t n = (size_t)NBLK * OPTIM_INT8_BLOCK_SIZE + TAIL, nb = NBLK + 1;
    test_rng rng = {test_seed() ^ 0x8f};
    float *x = (float *)malloc(n * 4), *v = (float *)malloc(n * 4), *vref = (float *)malloc(n * 4);
    float *sc = (float *)malloc(nb * 4), *scref = (float *)malloc(nb * 4);
    uint8_t *c = (uint8_t *)malloc(n), *cref = (uint8_t *)malloc(n);
    size_t ip, i, checked = 0;
    int exercised = 0, kind;
    if (!x || !v || !vref || !sc || !scref || !c || !cref) FAIL("out of memory");
    q_encoder_inputs(x, n, &rng);
    for (kind = T_Q8_SIGNED; kind <= T_Q8_POSITIVE; kind++) {
        /* The statement: quant8.h's functions, one element at a time. */
        optim__q8_quantize(cref, scref, x, n, kind);
        for (ip = 0; ip < Q_NISAS; ip++) {
            const optim__kernels *kt = optim__kernels_get(q_isas[ip]);
            const char *name = optim_isa_name(q_isas[ip]);
            const optim__storage *st;
            size_t from;
            if (!optim_isa_available(q_isas[ip]) || !kt) {
                if (kind == T_Q8_SIGNED) printf("  path %s: NOT EXERCISED (not in this build or on this CPU)\n", name);
                continue;
            }
            exercised += kind == T_Q8_SIGNED;
            st = kt->q8[kind];
            ASSERT(st != NULL && st->dtype == OPTIM_INT8_BLOCK);
            /* Stores: from the start in one call, and from chunk offsets in chunks as a step stores them. */
            for (from = 0; from <= OPTIM__CHUNK; from += OPTIM__CHUNK) {
                size_t at;
                memset(c, 0xa5, n);
                for (i = 0; i < nb; i++) sc[i] = -1.0f;
                if (from == 0) st->store(c, 0, n, x, sc);
                for (at = from; from && at < n; at += OPTIM__CHUNK)
                    st->store(c, at, n - at < OPTIM__CHUNK ? n - at : OPTIM__CHUNK, x + at, sc);
                for (i = from; i < n; i++)
                    if (c[i] != cref[i])
                        FAIL("%s, kind %d: code of element %zu (%a, block scale %a): 0x%02x, quant8.h 0x%02x", name,
                             kind, i, (double)x[i], (double)scref[i / OPTIM_INT8_BLOCK_SIZE], c[i], cref[i]);
                for (i = from / OPTIM_INT8_BLOCK_SIZE; i < nb; i++)
                    if (tbits(sc[i]) != tbits(scref[i]))
                        FAIL("%s, kind %d: scale of block %zu: %a, quant8.h %a", name, kind, i, (double)sc[i],
                             (double)scref[i]);
                for (i = 0; i < from; i++)
                    if (c[i] != 0xa5) FAIL("%s, kind %d: a store from %zu wrote element %zu", name, kind, from, i);
                checked += n - from;
            }
        }
    }
    /* Loads: every code at every lane position (block b holds codes b*37 + i), scales over the whole range. */
    for (i = 0; i < n; i++) c[i] = (uint8_t)(i + (i / OPTIM_INT8_BLOCK_SIZE) * 37);
    for (i = 0; i < nb; i++)
        sc[i] = i == 0 ? FLT_MIN : i == 1 ? FLT_MAX : i == 2 ? 1.0f
                : (float)ldexp(0.5 + test_rng_uniform(&rng), (int)(test_rng_u64(&rng) % 252) - 125);
    for (kind = T_Q8_SIGNED; kind <= T_Q8_POSITIVE; kind++) {
        optim__q8_dequantize(vref, c, sc, n, kind);
        for (ip = 0; ip < Q_NISAS; ip++) {
            const optim__kernels *kt = optim__kernels_get(q_isas[ip]);
            size_t at;
            if (!optim_isa_available(q_isas[ip]) || !kt) continue;
            memset(v, 0, n * 4);
            for (at = 0; at < n; at += OPTIM__CHUNK)
                kt->q8[kind]->load(v + at, c, at, n - at < OPTIM__CHUNK ? n - at : OPTIM__CHUNK, sc);
            for (i = 0; i < n; i++)
                if (tbits(v[i]) != tbits(vref[i]))
                    FAIL("%s, kind %d: value of code 0x%02x (element %zu, scale %a): 0x%08x, quant8.h 0x%08x",
                         optim_isa_name(q_isas[ip]), kind, c[i], i, (double)sc[i / OPTIM_INT8_BLOCK_SIZE], tbits(v[i]),
                         tbits(vref[i]));
            checked += n;
        }
    }
    printf("  %d paths x 3 slot kinds: %zu codes and values of the descriptors bit for bit as quant8.h's functions "
           "(every code at every lane, ties, both codes' subnormal boundaries, every exponent, NaN, infinities, -0, "
           "tops past 1.0, short last blocks)\n", exercised, checked);
    ASSERT(exercised >= 1);
    free(x);
    free(v);
    free(vref);
    free(sc);
    free(scref);
    free(c);
    free(cref);
    return 0;
}

/* ---- Whole steps: every path and thread count gives the scalar path's bits over hundreds of steps ----
 * The configurations of issue 12's speed targets (8-bit state with float32 or bfloat16 gradients, bfloat16
 * parameters rounded stochastically or kept by a float32 master) and bfloat16 state, for rules whose slots
 * use each code (Adam with AMSGrad: signed and positive; Adadelta: positive and non-negative; centered
 * RMSprop with momentum: positive and signed). */
typedef struct q_cfg {
    optim_dtype pdt, gdt, sdt;
    unsigned flags;
} q_cfg;

enum { Q_NT = 3, Q_STEPS = 300, Q_POOL = 4099 * 2 + 33037 + 131 * 300 };
static const size_t q_sizes[Q_NT] = {7, 1000, 33000 + 37}; /* a vector tail, a short block, two threads' worth */
static void *q_pool[OPTIM_DTYPE_COUNT];                       /* the gradients of each type (q_run) */

/* One run: parameters and state after Q_STEPS steps on path isa with `threads` threads, in p and s. */
static int q_run(optim_rule rule, const q_cfg *cfg, optim_isa isa, int threads, void *p[Q_NT],
                 void *s[Q_NT][OPTIM_MAX_SLOTS], long *moved)
{
    const size_t ps = optim_dtype_size(cfg->pdt), gs = optim_dtype_size(cfg->gdt);
    void *g[Q_NT];
    optim *o = NULL;
    optim_hparams hp;
    test_rng rng = {test_seed() ^ 0x51 ^ ((uint64_t)rule << 8)};
    size_t i, j;
    int t, k;
    /* The gradients: normal values over 30 binades, one in 97 zero, drawn once per type; step t of
     * tensor i reads them from offset t * 131 + i * 4099 on. */
    void **pool = q_pool;
    if (!pool[cfg->gdt]) {
        test_rng prng = {test_seed() ^ 0x52};
        pool[cfg->gdt] = t_alloc(cfg->gdt, Q_POOL);
        if (!pool[cfg->gdt]) FAIL("out of memory");
        for (j = 0; j < Q_POOL; j++)
            t_set(cfg->gdt, pool[cfg->gdt], j, j % 97 == 0 ? 0.0 : test_rng_normal(&prng) * ldexp(1.0, -(int)(j % 30)));
    }
    ASSERT_OK(optim_create(&o, rule));
    optim_hparams_init(&hp, rule, NULL);
    hp.lr = 0.01;
    if (rule == OPTIM_ADAM) hp.amsgrad = 1;
    if (rule == OPTIM_RMSPROP) {
        hp.centered = 1;
        hp.momentum = 0.9;
    }
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_set_isa(o, isa));
    ASSERT_OPT_OK(o, optim_set_threads(o, threads));
    ASSERT_OPT_OK(o, optim_set_seed(o, 1234));
    for (i = 0; i < Q_NT; i++) {
        p[i] = t_alloc(cfg->pdt, q_sizes[i]);
        g[i] = t_alloc(cfg->gdt, q_sizes[i]);
        if (!p[i] || !g[i]) FAIL("out of memory");
        for (j = 0; j < q_sizes[i]; j++) t_set(cfg->pdt, p[i], j, test_rng_normal(&rng));
        ASSERT_OPT_OK(o, optim_add_param_ex(o, 0, p[i], cfg->pdt, g[i], cfg->gdt, q_sizes[i], cfg->sdt, cfg->flags,
                                            "w", NULL));
    }
    for (t = 0; t < Q_STEPS; t++) {
        for (i = 0; i < Q_NT; i++) {
            memcpy(g[i], (const char *)pool[cfg->gdt] + ((size_t)t * 131 + i * 4099) * gs, q_sizes[i] * gs);
            if (i == 0 && t == Q_STEPS / 2) t_set(cfg->gdt, g[i], 3, NAN); /* a non-finite gradient once */
        }
        ASSERT_OPT_OK(o, optim_step(o));
    }
    for (i = 0; i < Q_NT; i++) {
        test_rng again = {test_seed() ^ 0x51 ^ ((uint64_t)rule << 8)};
        size_t before = 0;
        for (j = 0; j < i; j++) before += q_sizes[j];
        for (j = 0; j < before; j++) (void)test_rng_normal(&again);
        /* The parameters moved from their initial values (the same draws as above). */
        for (j = 0; j < q_sizes[i]; j++) {
            const double init = test_rng_normal(&again);
            void *one = t_alloc(cfg->pdt, 1);
            if (!one) FAIL("out of memory");
            t_set(cfg->pdt, one, 0, init);
            *moved += memcmp(one, (const char *)p[i] + j * ps, ps) != 0;
            free(one);
        }
        for (k = 0; k < OPTIM_MAX_SLOTS; k++) {
            void *data = NULL;
            const size_t bytes = cfg->sdt == OPTIM_INT8_BLOCK ? OPTIM_INT8_BLOCK_BYTES(q_sizes[i])
                                                              : q_sizes[i] * optim_dtype_size(cfg->sdt);
            s[i][k] = NULL;
            if (k >= optim_rule_slot_count(rule)) continue;
            ASSERT_OPT_OK(o, optim_state_slot_data(o, i, k, &data, NULL, NULL));
            if (!data) continue;
            s[i][k] = malloc(bytes);
            if (!s[i][k]) FAIL("out of memory");
            memcpy(s[i][k], data, bytes);
        }
        free(g[i]);
    }
    optim_free(o);
    return 0;
}

static void q_free(void *p[Q_NT], void *s[Q_NT][OPTIM_MAX_SLOTS])
{
    size_t i;
    int k;
    for (i = 0; i < Q_NT; i++) {
        free(p[i]);
        for (k = 0; k < OPTIM_MAX_SLOTS; k++) free(s[i][k]);
    }
}

TEST_IMPL(int8_steps_every_path)
{
    static const q_cfg cfgs[] = {
        {OPTIM_FLOAT32, OPTIM_FLOAT32, OPTIM_INT8_BLOCK, 0},
        {OPTIM_FLOAT32, OPTIM_BFLOAT16, OPTIM_INT8_BLOCK, 0},
        {OPTIM_BFLOAT16, OPTIM_BFLOAT16, OPTIM_INT8_BLOCK, OPTIM_PARAM_STOCHASTIC_ROUNDING},
        {OPTIM_BFLOAT16, OPTIM_BFLOAT16, OPTIM_INT8_BLOCK, OPTIM_PARAM_MASTER},
        {OPTIM_BFLOAT16, OPTIM_BFLOAT16, OPTIM_BFLOAT16, OPTIM_PARAM_STOCHASTIC_ROUNDING},
        /* the offload step with stochastic codes (branch q8sr) */
        {OPTIM_BFLOAT16, OPTIM_BFLOAT16, OPTIM_INT8_BLOCK, OPTIM_PARAM_MASTER | OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING},
    };
    static const optim_rule rules[] = {OPTIM_ADAM, OPTIM_ADADELTA, OPTIM_RMSPROP};
    size_t c, r, ip, i;
    long runs = 0, moved = 0;
    for (c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++)
        for (r = 0; r < sizeof rules / sizeof rules[0]; r += T_SAMPLE) {
            void *pref[Q_NT], *sref[Q_NT][OPTIM_MAX_SLOTS];
            const size_t ps = optim_dtype_size(cfgs[c].pdt);
            if (q_run(rules[r], &cfgs[c], OPTIM_ISA_SCALAR, 1, pref, sref, &moved)) return 1;
            for (ip = 0; ip < Q_NISAS; ip++) {
                int threads;
                if (!optim_isa_available(q_isas[ip])) continue;
                for (threads = 1; threads <= 2; threads++) {
                    void *p[Q_NT], *s[Q_NT][OPTIM_MAX_SLOTS];
                    int k;
                    if (q_isas[ip] == OPTIM_ISA_SCALAR && threads == 1) continue;
                    long ignored = 0;
                    if (q_run(rules[r], &cfgs[c], q_isas[ip], threads, p, s, &ignored)) return 1;
                    for (i = 0; i < Q_NT; i++) {
                        if (memcmp(p[i], pref[i], q_sizes[i] * ps) != 0)
                            FAIL("%s, %s params, %s grads, %s state, flags 0x%x, %s, %d threads: tensor %zu's "
                                 "parameters differ from the scalar path's after %d steps",
                                 optim_rule_name(rules[r]), optim_dtype_name(cfgs[c].pdt),
                                 optim_dtype_name(cfgs[c].gdt), optim_dtype_name(cfgs[c].sdt), cfgs[c].flags,
                                 optim_isa_name(q_isas[ip]), threads, i, Q_STEPS);
                        for (k = 0; k < OPTIM_MAX_SLOTS; k++) {
                            int same;
                            if (!s[i][k] != !sref[i][k]) FAIL("slot %d allocated differently", k);
                            if (!s[i][k]) continue;
                            same = cfgs[c].sdt == OPTIM_INT8_BLOCK
                                       ? same_q8(s[i][k], sref[i][k], q_sizes[i])
                                       : memcmp(s[i][k], sref[i][k], q_sizes[i] * optim_dtype_size(cfgs[c].sdt)) == 0;
                            if (!same)
                                FAIL("%s, %s params, %s grads, %s state, flags 0x%x, %s, %d threads: tensor %zu's "
                                     "slot %s differs from the scalar path's after %d steps",
                                     optim_rule_name(rules[r]), optim_dtype_name(cfgs[c].pdt),
                                     optim_dtype_name(cfgs[c].gdt), optim_dtype_name(cfgs[c].sdt), cfgs[c].flags,
                                     optim_isa_name(q_isas[ip]), threads, i, optim_rule_slot_name(rules[r], k),
                                     Q_STEPS);
                        }
                    }
                    q_free(p, s);
                    runs++;
                }
            }
            q_free(pref, sref);
        }
    for (i = 0; i < OPTIM_DTYPE_COUNT; i++) {
        free(q_pool[i]);
        q_pool[i] = NULL;
    }
    printf("  %ld runs of %d steps (6 configurations x Adam/Adadelta/RMSprop x every path x 1 and 2 threads): "
           "parameters and state bit for bit as the scalar path on one thread; %ld parameters moved\n",
           runs, Q_STEPS, moved);
    ASSERT(runs > 0 && moved > 0);
    return 0;
}
