/* test_q8.c: OPTIM_INT8_BLOCK, 8-bit block-quantized state: the library's
 * codes against the tests' own (typed.c, from the definition in optim.h), the
 * API (which parameters may have it, its bytes, the float views, every rule's
 * slot declarations), checkpoints (bit for bit, and quantizing or
 * dequantizing across types), and the accuracy of Adam with it against float32
 * state. Every CPU path and thread count against a reference that quantizes
 * with the tests' code: half_types_vs_rounding_reference (test_paths.c). */
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
