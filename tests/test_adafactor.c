/* test_adafactor.c: Adafactor's factored second moment (shapes of two and
 * more dimensions, batched) against a float64 reference written from torch
 * 2.x's _single_tensor_adafactor with its own state, step by step (the
 * library's float arrays copied into the reference before each step, as
 * tests/test_rules.c does), every option; and every CPU path with one and two
 * threads bit for bit against the scalar path. */
#include "test.h"
#include "optim_checkpoint.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AF_STEPS 100

/* One step of the reference on a tensor of shape (B, R, C) (R = 0: unfactored). */
static void af_ref_step(const optim_hparams *hp, long t, size_t B, size_t R, size_t C, double *p, const float *gf,
                        double *row, double *col, double *var)
{
    const size_t n = B * (R ? R : 1) * C;
    const double w = pow((double)t, hp->beta2_decay), rootn = sqrt((double)n);
    const double eps1 = hp->eps_auto ? 1.1920928955078125e-07 : hp->eps1;
    double psq = 0, usq = 0, rho = 1 / sqrt((double)t), prms, urms, alpha, denom;
    double *u = (double *)malloc(n * sizeof(double)), *d = (double *)malloc(n * sizeof(double));
    size_t b, i, j, e;
    for (e = 0; e < n; e++) {
        psq += p[e] * p[e];
        d[e] = hp->maximize ? -(double)gf[e] : (double)gf[e];
    }
    prms = sqrt(psq) / rootn;
    if (hp->lr < rho) rho = hp->lr;
    alpha = (prms > hp->eps2 ? prms : hp->eps2) * rho;
    if (hp->weight_decay != 0)
        for (e = 0; e < n; e++) p[e] *= 1 - hp->lr * hp->weight_decay;
    if (R) {
        for (b = 0; b < B; b++) {
            double rm = 0;
            for (i = 0; i < R; i++) {
                double s = 0;
                for (j = 0; j < C; j++) s += d[(b * R + i) * C + j] * d[(b * R + i) * C + j];
                row[b * R + i] += w * (s / C - row[b * R + i]);
            }
            for (j = 0; j < C; j++) {
                double s = 0;
                for (i = 0; i < R; i++) s += d[(b * R + i) * C + j] * d[(b * R + i) * C + j];
                col[b * C + j] += w * (s / R - col[b * C + j]);
            }
            for (i = 0; i < R; i++) rm += row[b * R + i];
            rm /= R;
            if (rm < eps1) rm = eps1;
            for (i = 0; i < R; i++)
                for (j = 0; j < C; j++) {
                    double v = row[b * R + i] * col[b * C + j] / rm;
                    e = (b * R + i) * C + j;
                    u[e] = d[e] / sqrt(v > eps1 * eps1 ? v : eps1 * eps1);
                }
        }
    } else {
        for (e = 0; e < n; e++) {
            var[e] += w * (d[e] * d[e] - var[e]);
            u[e] = d[e] / sqrt(var[e] > eps1 * eps1 ? var[e] : eps1 * eps1);
        }
    }
    for (e = 0; e < n; e++) usq += u[e] * u[e];
    urms = sqrt(usq) / (rootn * hp->clip_threshold);
    denom = urms > 1 ? urms : 1;
    for (e = 0; e < n; e++) p[e] -= alpha / denom * u[e];
    free(u);
    free(d);
}

typedef struct af_shape {
    size_t ndim;
    int64_t dims[3];
} af_shape;

static const af_shape af_shapes[] = {
    {1, {37}}, {2, {13, 7}}, {2, {1, 300}}, {2, {33, 17}}, {3, {3, 5, 11}}, {3, {2, 30, 41}},
};
#define AF_NSHAPES (sizeof af_shapes / sizeof af_shapes[0])

static size_t af_numel(const af_shape *s)
{
    size_t n = 1, k;
    for (k = 0; k < s->ndim; k++) n *= (size_t)s->dims[k];
    return n;
}

/* The options: weight decay, maximize, eps1 explicit, d, beta2_decay, lr. */
static void af_hparams(optim_hparams *hp, int c)
{
    optim_hparams_init(hp, OPTIM_ADAFACTOR, NULL);
    if (c & 1) hp->weight_decay = 0.1;
    if (c & 2) hp->maximize = 1;
    if (c & 4) {
        hp->eps_auto = 0;
        hp->eps1 = 1e-4;
    }
    if (c & 8) hp->clip_threshold = 3.0;
    if (c & 16) hp->beta2_decay = -0.5;
    if (c & 32) hp->lr = 0.05;
}

TEST_IMPL(adafactor_factored_vs_reference)
{
    test_rng rng = {test_seed() ^ 0xada};
    double worst = 0;
    int c;
    for (c = 0; c < 64; c++) {
        optim_hparams hp;
        optim *o;
        size_t k, e;
        float *p[AF_NSHAPES], *g[AF_NSHAPES];
        double *pr[AF_NSHAPES], *row[AF_NSHAPES], *col[AF_NSHAPES], *var[AF_NSHAPES];
        int t;
        af_hparams(&hp, c);
        ASSERT_OK(optim_create(&o, OPTIM_ADAFACTOR));
        ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
        for (k = 0; k < AF_NSHAPES; k++) {
            size_t n = af_numel(&af_shapes[k]);
            p[k] = (float *)malloc(n * sizeof(float));
            g[k] = (float *)malloc(n * sizeof(float));
            pr[k] = (double *)malloc(n * sizeof(double));
            row[k] = (double *)calloc(n, sizeof(double));
            col[k] = (double *)calloc(n, sizeof(double));
            var[k] = (double *)calloc(n, sizeof(double));
            for (e = 0; e < n; e++) p[k][e] = (float)test_rng_normal(&rng);
            ASSERT_OPT_OK(o, optim_add_param(o, 0, p[k], g[k], n, NULL, NULL));
            ASSERT_OPT_OK(o, optim_param_set_shape(o, k, af_shapes[k].ndim, af_shapes[k].dims));
        }
        for (t = 1; t <= AF_STEPS; t++) {
            for (k = 0; k < AF_NSHAPES; k++) {
                const af_shape *sh = &af_shapes[k];
                size_t n = af_numel(sh), B = 1, R = 0, C = n, s, len;
                float *sl;
                if (sh->ndim >= 2) {
                    R = (size_t)sh->dims[sh->ndim - 2];
                    C = (size_t)sh->dims[sh->ndim - 1];
                    B = n / (R * C);
                }
                for (e = 0; e < n; e++) {
                    g[k][e] = (float)(test_rng_normal(&rng) * (e % 5 == 0 ? 3.0 : 0.5));
                    pr[k][e] = p[k][e];
                }
                /* The reference continues from the library's float state. */
                for (s = 0; s < 3; s++) {
                    double *dst = s == 0 ? row[k] : s == 1 ? col[k] : var[k];
                    ASSERT_OPT_OK(o, optim_state_slot_len(o, k, (int)s, &len));
                    ASSERT_INT((long)len, ==, (long)(s == 2 ? (R ? 0 : n) : (R ? B * (s == 0 ? R : C) : 0)));
                    if (!len) continue;
                    ASSERT_OPT_OK(o, optim_state_slot(o, k, (int)s, &sl, NULL));
                    for (e = 0; e < len; e++) dst[e] = sl[e];
                }
                af_ref_step(&hp, t, B, R, C, pr[k], g[k], row[k], col[k], var[k]);
            }
            ASSERT_OPT_OK(o, optim_step(o));
            for (k = 0; k < AF_NSHAPES; k++) {
                size_t n = af_numel(&af_shapes[k]);
                for (e = 0; e < n; e++) {
                    double err = fabs((double)p[k][e] - pr[k][e]) / (fabs(pr[k][e]) + 1e-2); /* one float step vs double */
                    if (err > worst) worst = err;
                    if (err > 1e-5)
                        FAIL("adafactor options %d, shape %zu, step %d: p[%zu] = %.9g vs reference %.9g (seed 0x%llx)",
                             c, k, t, e, p[k][e], pr[k][e], (unsigned long long)test_seed());
                }
            }
        }
        for (k = 0; k < AF_NSHAPES; k++) {
            free(p[k]), free(g[k]), free(pr[k]), free(row[k]), free(col[k]), free(var[k]);
        }
        optim_free(o);
    }
    printf("  adafactor: 64 option combinations x %zu shapes x %d steps: worst relative error %.2e\n", AF_NSHAPES,
           AF_STEPS, worst);
    return 0;
}

/* Every path and 1 and 2 threads, bit for bit against the scalar path; a
 * shape of 3 x 150 x 200 (90000 elements: several blocks, threads split). */
TEST_IMPL(adafactor_paths_bit_identical)
{
    static const optim_isa isas[] = {OPTIM_ISA_SCALAR, OPTIM_ISA_AVX2, OPTIM_ISA_AVX512, OPTIM_ISA_AVX512BF16};
    const int64_t dims[3] = {3, 150, 80}, dims1[1] = {5000};
    const size_t n = 36000, n1 = 5000;
    float *ref = NULL, *ref1 = NULL;
    int c;
    for (c = 0; c < 64; c += 5) {
        size_t ii;
        for (ii = 0; ii < sizeof isas / sizeof isas[0]; ii++) {
            int threads;
            for (threads = 1; threads <= 2; threads++) {
                test_rng rng = {test_seed() ^ 0xadaf ^ (uint64_t)c};
                optim_hparams hp;
                optim *o;
                float *p = (float *)malloc(n * sizeof(float)), *g = (float *)malloc(n * sizeof(float));
                float *p1 = (float *)malloc(n1 * sizeof(float)), *g1 = (float *)malloc(n1 * sizeof(float));
                size_t e;
                int t;
                af_hparams(&hp, c);
                ASSERT_OK(optim_create(&o, OPTIM_ADAFACTOR));
                if (optim_set_isa(o, isas[ii]) != OPTIM_OK) {
                    optim_free(o), free(p), free(g), free(p1), free(g1);
                    continue; /* a path this build or CPU lacks (tests/test_paths.c prints which) */
                }
                ASSERT_OPT_OK(o, optim_set_threads(o, threads));
                ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
                for (e = 0; e < n; e++) p[e] = (float)test_rng_normal(&rng);
                for (e = 0; e < n1; e++) p1[e] = (float)test_rng_normal(&rng);
                ASSERT_OPT_OK(o, optim_add_param(o, 0, p, g, n, NULL, NULL));
                ASSERT_OPT_OK(o, optim_param_set_shape(o, 0, 3, dims));
                ASSERT_OPT_OK(o, optim_add_param(o, 0, p1, g1, n1, NULL, NULL));
                ASSERT_OPT_OK(o, optim_param_set_shape(o, 1, 1, dims1));
                for (t = 0; t < 20; t++) {
                    for (e = 0; e < n; e++) g[e] = (float)test_rng_normal(&rng);
                    for (e = 0; e < n1; e++) g1[e] = (float)test_rng_normal(&rng);
                    ASSERT_OPT_OK(o, optim_step(o));
                }
                if (!ref) {
                    ref = p, ref1 = p1;
                    p = p1 = NULL;
                } else if (memcmp(p, ref, n * sizeof(float)) != 0 || memcmp(p1, ref1, n1 * sizeof(float)) != 0) {
                    FAIL("adafactor options %d on %s, %d threads: parameters differ from the scalar path's", c,
                         optim_isa_name(isas[ii]), threads);
                }
                free(p), free(g), free(p1), free(g1);
                optim_free(o);
            }
        }
        free(ref), free(ref1);
        ref = ref1 = NULL;
    }
    printf("  adafactor: 13 option combinations, (3, 150, 80) and (5000,), every path of this build, 1 and 2 "
           "threads: bit for bit against scalar\n");
    return 0;
}

/* Refusals, by name: half types, storage flags, a new shape after steps, checkpoints. */
TEST_IMPL(adafactor_refusals)
{
    optim *o;
    optim_hparams hp;
    float p[6] = {1, 2, 3, 4, 5, 6}, g[6] = {0.5f, -1, 2, 0.25f, -3, 1};
    uint16_t ph[6] = {0}, gh[6] = {0};
    const int64_t d23[2] = {2, 3}, d32[2] = {3, 2};
    void *buf = NULL;
    size_t size = 0;
    optim_hparams_init(&hp, OPTIM_ADAFACTOR, NULL);
    ASSERT_OK(optim_create(&o, OPTIM_ADAFACTOR));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_INT(optim_add_param_typed(o, 0, ph, OPTIM_BFLOAT16, gh, OPTIM_BFLOAT16, 6, "h", NULL), ==,
               OPTIM_EUNSUPPORTED);
    ASSERT(strstr(optim_errmsg(o), "bfloat16") != NULL);
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p, g, 6, "w", NULL));
    ASSERT_OPT_OK(o, optim_param_set_shape(o, 0, 2, d23));
    ASSERT_OPT_OK(o, optim_step(o));
    ASSERT_INT(optim_param_set_shape(o, 0, 2, d32), ==, OPTIM_ESTATE);
    ASSERT(strstr(optim_errmsg(o), "'w'") != NULL);
    /* A checkpoint carries row_var (2) and col_var (3) of the 2 x 3 shape exactly; an optimizer whose
     * parameter has another shape (3 x 2: the same n, other factors) or none (variance) refuses it by name. */
    ASSERT_OPT_OK(o, optim_save_buffer(o, &buf, &size));
    {
        optim *q = NULL;
        float pq[6], gq[6] = {0};
        float *a, *b;
        int ia, ib, s, shape;
        memcpy(pq, p, sizeof pq);
        for (shape = 0; shape < 3; shape++) {
            ASSERT_OK(optim_create(&q, OPTIM_ADAFACTOR));
            ASSERT_OPT_OK(q, optim_add_group(q, &hp, NULL));
            ASSERT_OPT_OK(q, optim_add_param(q, 0, pq, gq, 6, "w", NULL));
            if (shape < 2) ASSERT_OPT_OK(q, optim_param_set_shape(q, 0, 2, shape == 0 ? d23 : d32));
            if (shape > 0) {
                ASSERT_INT(optim_load_buffer(q, buf, size, OPTIM_MATCH_NAME, "test"), ==, OPTIM_EMISMATCH);
                ASSERT(strstr(optim_errmsg(q), "'w'") != NULL);
                ASSERT(shape == 1 || strstr(optim_errmsg(q), "row_var") != NULL);
                ASSERT(strstr(optim_errmsg(q), shape == 1 ? "[3, 2]" : "none given") != NULL);
                optim_free(q);
                continue;
            }
            ASSERT_OPT_OK(q, optim_load_buffer(q, buf, size, OPTIM_MATCH_NAME, "test"));
            for (s = 0; s < 2; s++) {
                size_t len = 0;
                ASSERT_OPT_OK(o, optim_state_slot(o, 0, s, &a, &ia));
                ASSERT_OPT_OK(q, optim_state_slot(q, 0, s, &b, &ib));
                ASSERT_OPT_OK(q, optim_state_slot_len(q, 0, s, &len));
                ASSERT_INT(len, ==, s == 0 ? 2 : 3);
                ASSERT(memcmp(a, b, len * sizeof(float)) == 0 && a[0] > 0);
            }
            optim_free(q);
        }
    }
    free(buf);
    hp.eps1 = 1e-3; /* with eps_auto = 1 */
    ASSERT_INT(optim_hparams_check(&hp, NULL), ==, OPTIM_EINVAL);
    optim_free(o);
    return 0;
}

/* optim_param_set_shape after steps (the state is laid out for the shape): any other shape is refused by name,
 * with both shapes, even one whose factors have the old lengths (leading dimensions regrouped: 4 x 3 x 2 x 5
 * to 3 x 4 x 2 x 5, or 12 x 2 x 5) and a 1-D parameter given 2-D; nothing changes (state and shape as
 * before, the next step as an untouched optimizer's). The same shape again is accepted, and after
 * optim_param_reset_state any shape is. */
TEST_IMPL(adafactor_shape_after_steps)
{
    static const int64_t d4325[4] = {4, 3, 2, 5}, d3425[4] = {3, 4, 2, 5}, d1225[3] = {12, 2, 5};
    static const int64_t d120[1] = {120}, d1210[2] = {12, 10};
    float p[120], g[120], q[120], rv[24], cv[60];
    optim *o = NULL, *r = NULL;
    optim_hparams hp;
    size_t j, nd;
    int64_t dims[OPTIM_MAX_NDIM];
    int s;
    for (j = 0; j < 120; j++) {
        p[j] = q[j] = (float)(j % 7) - 3.0f;
        g[j] = (float)(j % 5) - 2.0f + 0.1f * (float)j;
    }
    optim_hparams_init(&hp, OPTIM_ADAFACTOR, NULL);
    ASSERT_OK(optim_create(&o, OPTIM_ADAFACTOR));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p, g, 120, "w", NULL));
    ASSERT_OPT_OK(o, optim_param_set_shape(o, 0, 4, d4325));
    ASSERT_OK(optim_create(&r, OPTIM_ADAFACTOR));
    ASSERT_OPT_OK(r, optim_add_group(r, &hp, NULL));
    ASSERT_OPT_OK(r, optim_add_param(r, 0, q, g, 120, "w", NULL));
    ASSERT_OPT_OK(r, optim_param_set_shape(r, 0, 4, d4325));
    for (s = 0; s < 2; s++) {
        ASSERT_OPT_OK(o, optim_step(o));
        ASSERT_OPT_OK(r, optim_step(r));
    }
    ASSERT_ERR(optim_param_set_shape(o, 0, 4, d3425), OPTIM_ESTATE, optim_errmsg(o),
               "param 0 'w' has taken 2 adafactor steps with shape (4, 3, 2, 5): its state is laid out for it, and "
               "shape (3, 4, 2, 5) would reinterpret it");
    ASSERT_ERR(optim_param_set_shape(o, 0, 3, d1225), OPTIM_ESTATE, optim_errmsg(o), "shape (12, 2, 5) would");
    ASSERT_ERR(optim_param_set_shape(o, 0, 2, d1210), OPTIM_ESTATE, optim_errmsg(o), "shape (12, 10) would");
    ASSERT_ERR(optim_param_set_shape(o, 0, 1, d120), OPTIM_ESTATE, optim_errmsg(o), "shape (120) would");
    ASSERT_OPT_OK(o, optim_param_set_shape(o, 0, 4, d4325)); /* the same shape again */
    ASSERT_OPT_OK(o, optim_param_get_shape(o, 0, &nd, dims, NULL));
    ASSERT(nd == 4 && memcmp(dims, d4325, sizeof d4325) == 0);
    /* Nothing changed: the next step as the optimizer that was never asked. */
    ASSERT_OPT_OK(o, optim_step(o));
    ASSERT_OPT_OK(r, optim_step(r));
    ASSERT(memcmp(p, q, sizeof p) == 0);
    ASSERT_OPT_OK(o, optim_state_slot_read_f32(o, 0, 0, rv));
    ASSERT_OPT_OK(o, optim_state_slot_read_f32(o, 0, 1, cv));
    {
        float rv2[24], cv2[60];
        ASSERT_OPT_OK(r, optim_state_slot_read_f32(r, 0, 0, rv2));
        ASSERT_OPT_OK(r, optim_state_slot_read_f32(r, 0, 1, cv2));
        ASSERT(memcmp(rv, rv2, sizeof rv) == 0 && memcmp(cv, cv2, sizeof cv) == 0);
    }
    /* A 1-D parameter (no shape given) after steps: (120) is its shape, (12, 10) is not. */
    ASSERT_OPT_OK(r, optim_add_param(r, 0, p, g, 120, "v", NULL));
    ASSERT_OPT_OK(r, optim_step(r));
    ASSERT_OPT_OK(r, optim_param_set_shape(r, 1, 1, d120));
    ASSERT_ERR(optim_param_set_shape(r, 1, 2, d1210), OPTIM_ESTATE, optim_errmsg(r),
               "param 1 'v' has taken 1 adafactor steps with shape (120): its state is laid out for it, and shape "
               "(12, 10) would reinterpret it");
    /* After a reset the state is fresh: any shape. */
    ASSERT_OPT_OK(o, optim_param_reset_state(o, 0));
    ASSERT_OPT_OK(o, optim_param_set_shape(o, 0, 3, d1225));
    ASSERT_OPT_OK(o, optim_step(o));
    optim_free(o);
    optim_free(r);
    return 0;
}
