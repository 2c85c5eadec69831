/* test_sparse.c: steps with sparse (row-indexed) gradients (optim_sparse.h):
 * SGD, Adagrad and SparseAdam against a plain double reference that keeps its
 * own state (step counters, moments), every CPU path and thread count bit for
 * bit against the scalar path, rows never present keeping every byte, a dense
 * parameter beside sparse ones, empty gradients, a SparseAdam checkpoint
 * resumed bit for bit, and every refusal naming its value with nothing
 * changed. The comparisons with torch itself are python/tests/test_torch_sparse.py's. */
#define _POSIX_C_SOURCE 200809L /* posix_memalign */
#include "test.h"

#include "optim_checkpoint.h"
#include "optim_sparse.h"

#define R_ROWS 3000 /* rows of the table */
#define R_LEN 33    /* elements per row */
#define R_N (R_ROWS * R_LEN)
#define R_STEPS 300
#define R_MAXNNZ 1400 /* rows present at most per step: > 32K elements, so two threads split them */
#define SP_PATH_STEPS 30

static const optim_isa sp_isas[] = {OPTIM_ISA_SCALAR, OPTIM_ISA_AVX2, OPTIM_ISA_AVX512, OPTIM_ISA_AVX512BF16,
                                    OPTIM_ISA_NEON};
#define SP_NISAS (sizeof sp_isas / sizeof sp_isas[0])

/* ---- The reference: one parameter's rule in double, its own state -------------------------- */

typedef struct sp_ref {
    optim_hparams hp;
    int64_t step;         /* the parameter's step counter */
    double s[2][R_N];     /* its state: Adagrad's sum; SparseAdam's exp_avg, exp_avg_sq */
} sp_ref;

/* One entry (a row of values g) of a step at the reference's step counter; p, s the row's elements. */
static void sp_ref_row(const sp_ref *r, double *p, double *s0, double *s1, const double *g)
{
    const optim_hparams *hp = &r->hp;
    const double t = (double)r->step;
    const double bc1 = 1.0 - pow(hp->beta1, t), bc2 = 1.0 - pow(hp->beta2, t);
    size_t c;
    for (c = 0; c < R_LEN; c++) {
        const double d = hp->maximize ? -g[c] : g[c];
        if (hp->rule == OPTIM_SGD) {
            p[c] -= hp->lr * d;
        } else if (hp->rule == OPTIM_ADAGRAD) {
            const double clr = hp->lr / (1.0 + (t - 1.0) * hp->lr_decay);
            s0[c] += d * d;
            p[c] -= clr * d / (hp->eps_placement == OPTIM_EPS_INSIDE ? sqrt(s0[c] + hp->eps) : sqrt(s0[c]) + hp->eps);
        } else { /* SparseAdam */
            s0[c] += (d - s0[c]) * (1.0 - hp->beta1);
            s1[c] += (d * d - s1[c]) * (1.0 - hp->beta2);
            p[c] -= hp->lr * sqrt(bc2) / bc1 * s0[c] / (sqrt(s1[c]) + hp->eps);
        }
    }
}

/* ---- A run: one optimizer, one sparse parameter (and a dense one, optionally) ------------- */

typedef struct sp_run {
    optim_dtype dt;
    void *p;          /* R_N elements of dt */
    void *dense_p;    /* the dense parameter (R_LEN elements) or NULL */
    void *dense_g;
    void *vals;       /* R_MAXNNZ * R_LEN values */
    int64_t rows[R_MAXNNZ];
} sp_run;

static double sp_get(const void *x, optim_dtype dt, size_t i)
{
    return dt == OPTIM_FLOAT64 ? ((const double *)x)[i] : (double)((const float *)x)[i];
}

static void sp_set(void *x, optim_dtype dt, size_t i, double v)
{
    if (dt == OPTIM_FLOAT64)
        ((double *)x)[i] = v;
    else
        ((float *)x)[i] = (float)v;
}

/* The gradient of step t: rows drawn from the seed and t, sorted; repeats (adjacent) only when
 * `repeats` (SGD); row 7 present at step 0 only (touched once, then never); rows >= R_ROWS - 100
 * never; every 50th step empty. Returns nrows. */
static size_t sp_grad(uint64_t seed, int t, int repeats, int64_t *rows, void *vals, optim_dtype dt)
{
    test_rng rng = {seed ^ (uint64_t)(t + 1) * 0x9e3779b97f4a7c15ull};
    size_t k = 0, j;
    int64_t row = 7; /* rows 0..6 are never present */
    if (t % 50 == 49) return 0;
    if (t == 0) rows[k++] = 7;
    while (k < R_MAXNNZ) {
        row += 1 + (int64_t)(test_rng_uniform(&rng) * 4.0);
        if (row >= R_ROWS - 100) break;
        if (row == 7) continue;
        rows[k++] = row;
        if (repeats && k < R_MAXNNZ && test_rng_uniform(&rng) < 0.2) rows[k++] = row; /* a repeat */
    }
    for (j = 0; j < k * R_LEN; j++) sp_set(vals, dt, j, 4.0 * test_rng_uniform(&rng) - 2.0);
    return k;
}

static int sp_alloc(sp_run *u, optim_dtype dt)
{
    size_t es = optim_dtype_size(dt);
    memset(u, 0, sizeof *u);
    u->dt = dt;
    if (posix_memalign(&u->p, 64, R_N * es) || posix_memalign(&u->vals, 64, (size_t)R_MAXNNZ * R_LEN * es) ||
        posix_memalign(&u->dense_p, 64, R_LEN * es) || posix_memalign(&u->dense_g, 64, R_LEN * es))
        return 1;
    return 0;
}

static void sp_release(sp_run *u)
{
    free(u->p);
    free(u->vals);
    free(u->dense_p);
    free(u->dense_g);
}

static void sp_init_params(sp_run *u, uint64_t seed)
{
    test_rng rng = {seed};
    size_t i;
    for (i = 0; i < R_N; i++) sp_set(u->p, u->dt, i, test_rng_normal(&rng));
    for (i = 0; i < R_LEN; i++) sp_set(u->dense_p, u->dt, i, test_rng_normal(&rng));
}

/* An optimizer over u: parameter 0 the sparse table, parameter 1 (with_dense) a dense one. */
static int sp_make(optim **o, const optim_hparams *hp, sp_run *u, int with_dense, optim_isa isa, int threads)
{
    ASSERT_OK(optim_create(o, hp->rule));
    ASSERT_OPT_OK(*o, optim_add_group(*o, hp, NULL));
    ASSERT_OPT_OK(*o, optim_add_param_typed(*o, 0, u->p, u->dt, NULL, u->dt, R_N, "table", NULL));
    if (with_dense)
        ASSERT_OPT_OK(*o, optim_add_param_typed(*o, 0, u->dense_p, u->dt, u->dense_g, u->dt, R_LEN, "dense", NULL));
    ASSERT_OPT_OK(*o, optim_set_isa(*o, isa));
    ASSERT_OPT_OK(*o, optim_set_threads(*o, threads));
    return 0;
}

/* One step of o over u at step t (the gradient of sp_grad; the dense one, when present, is a row
 * of the same draw). */
static int sp_step(optim *o, sp_run *u, uint64_t seed, int t, int repeats, int with_dense, size_t *nrows)
{
    static const int64_t row0[1] = {0};
    optim_sparse_grad sg, sg1 = {row0, 1, R_LEN, NULL};
    const optim_sparse_grad *sparse[2];
    void *params[2];
    const void *grads[2];
    size_t i;
    sg.nrows = sp_grad(seed, t, repeats, u->rows, u->vals, u->dt);
    sg.rows = u->rows;
    sg.row_len = R_LEN;
    sg.values = u->vals;
    *nrows = sg.nrows;
    for (i = 0; i < R_LEN; i++) sp_set(u->dense_g, u->dt, i, 0.5 * sp_get(u->vals, u->dt, i) - 0.1);
    params[0] = u->p;
    params[1] = u->dense_p;
    grads[0] = NULL;
    grads[1] = u->dense_g;
    sparse[0] = &sg;
    sparse[1] = NULL;
    if (with_dense == 2) { /* SparseAdam: the small parameter's gradient is sparse too, its one row present */
        sg1.values = u->dense_g;
        grads[1] = NULL;
        sparse[1] = &sg1;
    }
    ASSERT_OPT_OK(o, optim_step_sparse(o, with_dense ? 2 : 1, params, grads, sparse));
    return 0;
}

/* The option sets: SGD, Adagrad and SparseAdam, each with its options. */
static size_t sp_options(optim_hparams *hps)
{
    size_t k = 0;
    optim_hparams_init(&hps[k], OPTIM_SGD, NULL);
    hps[k++].lr = 0.05;
    optim_hparams_init(&hps[k], OPTIM_SGD, NULL);
    hps[k].lr = 0.05;
    hps[k++].maximize = 1;
    optim_hparams_init(&hps[k], OPTIM_ADAGRAD, NULL);
    hps[k].lr = 0.1;
    hps[k].lr_decay = 0.01;
    hps[k++].initial_accumulator_value = 0.1;
    optim_hparams_init(&hps[k], OPTIM_ADAGRAD, NULL);
    hps[k].lr = 0.1;
    hps[k].maximize = 1;
    hps[k++].eps_placement = OPTIM_EPS_INSIDE;
    optim_hparams_init(&hps[k], OPTIM_SPARSE_ADAM, NULL);
    hps[k++].lr = 0.01;
    optim_hparams_init(&hps[k], OPTIM_SPARSE_ADAM, NULL);
    hps[k].lr = 0.01;
    hps[k].beta1 = 0.8;
    hps[k].beta2 = 0.99;
    hps[k].eps = 1e-6;
    hps[k++].maximize = 1;
    return k;
}

static int sp_slot(optim *o, size_t i, int s, void **data)
{
    optim_dtype dt;
    int init;
    *data = NULL;
    return optim_state_slot_data(o, i, s, data, &dt, &init);
}

/* Every option set, float32 and float64, on the scalar path with one thread, against the
 * reference step by step: before each step the reference takes the library's parameter and
 * state (so each step of the library's arithmetic is compared with the same step in double),
 * then both step; rows present must agree to 1e-5 (float32) or 1e-12 (float64) relative, every
 * other element of the parameter and of the state must keep every byte. Step counters too. */
TEST_IMPL(sparse_vs_reference)
{
    static sp_ref ref;
    static double p[R_N];
    static unsigned char before[3][R_N * 8], present[R_ROWS];
    optim_hparams hps[8];
    const size_t nh = sp_options(hps);
    const uint64_t seed = test_seed();
    size_t h;
    int ty;
    for (ty = 0; ty < 2; ty++)
        for (h = 0; h < nh; h++) {
            const optim_dtype dt = ty ? OPTIM_FLOAT64 : OPTIM_FLOAT32;
            const double tol = ty ? 1e-12 : 1e-5;
            const int nslots = hps[h].rule == OPTIM_SGD ? 0 : optim_rule_slot_count(hps[h].rule);
            const int repeats = hps[h].rule == OPTIM_SGD;
            const size_t es = optim_dtype_size(dt);
            double worst = 0;
            optim *o = NULL;
            sp_run u;
            int t, s;
            if (sp_alloc(&u, dt)) FAIL("out of memory");
            sp_init_params(&u, seed);
            if (sp_make(&o, &hps[h], &u, 0, OPTIM_ISA_SCALAR, 1)) return 1;
            ref.hp = hps[h];
            ref.step = 0;
            for (t = 0; t < R_STEPS; t++) {
                size_t nrows, k, i;
                int64_t step = -1;
                void *slot[2] = {NULL, NULL};
                /* The reference takes the library's state. */
                for (i = 0; i < R_N; i++) p[i] = sp_get(u.p, dt, i);
                memcpy(before[2], u.p, R_N * es);
                for (s = 0; s < nslots; s++) {
                    ASSERT_OPT_OK(o, sp_slot(o, 0, s, &slot[s]));
                    for (i = 0; i < R_N; i++) ref.s[s][i] = sp_get(slot[s], dt, i);
                    memcpy(before[s], slot[s], R_N * es);
                }
                if (sp_step(o, &u, seed, t, repeats, 0, &nrows)) return 1;
                ref.step++;
                for (k = 0; k < nrows; k++) {
                    double g[R_LEN];
                    const size_t off = (size_t)u.rows[k] * R_LEN;
                    for (i = 0; i < R_LEN; i++) g[i] = sp_get(u.vals, dt, k * R_LEN + i);
                    sp_ref_row(&ref, p + off, ref.s[0] + off, ref.s[1] + off, g);
                }
                memset(present, 0, sizeof present);
                for (k = 0; k < nrows; k++) present[u.rows[k]] = 1;
                ASSERT_OPT_OK(o, optim_param_get_step(o, 0, &step));
                if (optim_rule_has_step(hps[h].rule) && step != ref.step)
                    FAIL("%s step %d: the step counter is %lld, the reference's %lld", optim_rule_name(hps[h].rule), t,
                         (long long)step, (long long)ref.step);
                /* Present rows against the reference; the others unchanged, byte for byte. */
                for (i = 0; i < R_N; i++) {
                    const size_t row = i / R_LEN;
                    if (!present[row]) {
                        if (memcmp(before[2] + i * es, (char *)u.p + i * es, es) != 0)
                            FAIL("%s %s step %d: element %zu of row %zu (absent) changed", optim_rule_name(hps[h].rule),
                                 optim_dtype_name(dt), t, i, row);
                        for (s = 0; s < nslots; s++)
                            if (memcmp(before[s] + i * es, (char *)slot[s] + i * es, es) != 0)
                                FAIL("%s %s step %d: slot %d element %zu of row %zu (absent) changed",
                                     optim_rule_name(hps[h].rule), optim_dtype_name(dt), t, s, i, row);
                        continue;
                    }
                    {
                        const double got = sp_get(u.p, dt, i), want = p[i];
                        const double err = fabs(got - want) / (fabs(want) > 1 ? fabs(want) : 1);
                        if (!(err <= tol))
                            FAIL("%s %s step %d: p[%zu] = %.17g, the reference %.17g (seed 0x%llx)",
                                 optim_rule_name(hps[h].rule), optim_dtype_name(dt), t, i, got, want,
                                 (unsigned long long)seed);
                        if (err > worst) worst = err;
                    }
                    for (s = 0; s < nslots; s++) {
                        const double got = sp_get(slot[s], dt, i), want = ref.s[s][i];
                        const double err = fabs(got - want) / (fabs(want) > 1 ? fabs(want) : 1);
                        if (!(err <= tol))
                            FAIL("%s %s step %d: slot %d [%zu] = %.17g, the reference %.17g",
                                 optim_rule_name(hps[h].rule), optim_dtype_name(dt), t, s, i, got, want);
                    }
                }
            }
            printf("  %-11s %s option set %zu: %d steps, worst relative difference %.3g\n",
                   optim_rule_name(hps[h].rule), optim_dtype_name(dt), h, R_STEPS, worst);
            optim_free(o);
            sp_release(&u);
        }
    return 0;
}

/* Every option set, float32 and float64, with a dense parameter beside the sparse one: every
 * CPU path with one and two threads gives the scalar path's bits (parameters and state). */
TEST_IMPL(sparse_paths_bit_identical)
{
    optim_hparams hps[8];
    const size_t nh = sp_options(hps);
    const uint64_t seed = test_seed() ^ 0x5a;
    size_t h, k;
    int ty;
    for (k = 0; k < SP_NISAS; k++)
        printf("  path %s: %s\n", optim_isa_name(sp_isas[k]),
               optim_isa_available(sp_isas[k]) ? "exercised" : "NOT EXERCISED (not in this build or on this CPU)");
    for (ty = 0; ty < 2; ty++)
        for (h = 0; h < nh; h++) {
            const optim_dtype dt = ty ? OPTIM_FLOAT64 : OPTIM_FLOAT32;
            const size_t es = optim_dtype_size(dt);
            const int nslots = hps[h].rule == OPTIM_SGD ? 0 : optim_rule_slot_count(hps[h].rule);
            const int repeats = hps[h].rule == OPTIM_SGD;
            sp_run want;
            optim *ow = NULL;
            int t, run = 0;
            if (sp_alloc(&want, dt)) FAIL("out of memory");
            sp_init_params(&want, seed);
            if (sp_make(&ow, &hps[h], &want, 1, OPTIM_ISA_SCALAR, 1)) return 1;
            const int with_dense = optim_rule_sparse(hps[h].rule) == OPTIM_SPARSE_ONLY ? 2 : 1;
            for (t = 0; t < SP_PATH_STEPS; t++) {
                size_t nrows;
                if (sp_step(ow, &want, seed, t, repeats, with_dense, &nrows)) return 1;
            }
            for (k = 0; k < 2 * SP_NISAS; k++) {
                const optim_isa isa = sp_isas[k / 2];
                const int threads = 1 + (int)(k % 2);
                sp_run got;
                optim *og = NULL;
                int s;
                size_t i;
                if (!optim_isa_available(isa) || (isa == OPTIM_ISA_SCALAR && threads == 1)) continue;
                if (sp_alloc(&got, dt)) FAIL("out of memory");
                sp_init_params(&got, seed);
                if (sp_make(&og, &hps[h], &got, 1, isa, threads)) return 1;
                for (t = 0; t < SP_PATH_STEPS; t++) {
                    size_t nrows;
                    if (sp_step(og, &got, seed, t, repeats, with_dense, &nrows)) return 1;
                }
                if (memcmp(got.p, want.p, R_N * es) != 0 || memcmp(got.dense_p, want.dense_p, R_LEN * es) != 0)
                    FAIL("%s %s option set %zu: the parameters on %s with %d threads differ from the scalar path's",
                         optim_rule_name(hps[h].rule), optim_dtype_name(dt), h, optim_isa_name(isa), threads);
                for (s = 0; s < nslots; s++)
                    for (i = 0; i < 2; i++) {
                        void *a = NULL, *b = NULL;
                        ASSERT_OPT_OK(og, sp_slot(og, i, s, &a));
                        ASSERT_OPT_OK(ow, sp_slot(ow, i, s, &b));
                        if (memcmp(a, b, (i ? R_LEN : R_N) * es) != 0)
                            FAIL("%s %s: slot %d of param %zu on %s with %d threads differs from the scalar path's",
                                 optim_rule_name(hps[h].rule), optim_dtype_name(dt), s, i, optim_isa_name(isa),
                                 threads);
                    }
                optim_free(og);
                sp_release(&got);
                run++;
            }
            printf("  %-11s %s option set %zu: %d path/thread runs bit-identical\n", optim_rule_name(hps[h].rule),
                   optim_dtype_name(dt), h, run);
            optim_free(ow);
            sp_release(&want);
        }
    return 0;
}

/* A dense parameter beside the sparse one steps as it would alone (Adagrad: the dense step's
 * rounding), and an empty sparse gradient counts a step and changes nothing. */
TEST_IMPL(sparse_mixed_and_empty)
{
    optim_hparams hp;
    sp_run u;
    optim *o = NULL, *alone = NULL;
    float dp[R_LEN], dg[R_LEN];
    optim_sparse_grad sg;
    const optim_sparse_grad *sparse[2];
    void *params[2];
    const void *grads[2];
    static unsigned char before[R_N * 4], sbefore[R_N * 4];
    void *slot = NULL;
    int64_t step = 0;
    int t;
    size_t i;
    optim_hparams_init(&hp, OPTIM_ADAGRAD, NULL);
    hp.lr = 0.1;
    if (sp_alloc(&u, OPTIM_FLOAT32)) FAIL("out of memory");
    sp_init_params(&u, 3);
    if (sp_make(&o, &hp, &u, 1, OPTIM_ISA_AUTO, 0)) return 1;
    memcpy(dp, u.dense_p, sizeof dp);
    ASSERT_OK(optim_create(&alone, OPTIM_ADAGRAD));
    ASSERT_OPT_OK(alone, optim_add_group(alone, &hp, NULL));
    ASSERT_OPT_OK(alone, optim_add_param(alone, 0, dp, dg, R_LEN, "dense alone", NULL));
    for (t = 0; t < 40; t++) {
        size_t nrows;
        if (sp_step(o, &u, 11, t, 0, 1, &nrows)) return 1;
        memcpy(dg, u.dense_g, sizeof dg);
        ASSERT_OPT_OK(alone, optim_step(alone));
    }
    if (memcmp(dp, u.dense_p, sizeof dp) != 0) FAIL("the dense parameter beside a sparse one stepped differently");
    /* Empty: nrows = 0, rows and values NULL. */
    ASSERT_OPT_OK(o, optim_param_get_step(o, 0, &step));
    ASSERT_INT(step, ==, 40);
    memcpy(before, u.p, sizeof before);
    ASSERT_OPT_OK(o, sp_slot(o, 0, 0, &slot));
    memcpy(sbefore, slot, sizeof sbefore);
    sg.rows = NULL;
    sg.nrows = 0;
    sg.row_len = R_LEN;
    sg.values = NULL;
    params[0] = u.p;
    params[1] = u.dense_p;
    grads[0] = NULL;
    grads[1] = NULL;
    sparse[0] = &sg;
    sparse[1] = NULL;
    ASSERT_OPT_OK(o, optim_step_sparse(o, 2, params, grads, sparse));
    ASSERT_OPT_OK(o, optim_param_get_step(o, 0, &step));
    ASSERT_INT(step, ==, 41);
    if (memcmp(before, u.p, sizeof before) != 0 || memcmp(sbefore, slot, sizeof sbefore) != 0)
        FAIL("an empty sparse gradient changed the parameter or its state");
    /* Afterwards the parameter has no gradient bound: a dense step skips it. */
    ASSERT_OPT_OK(o, optim_step(o));
    ASSERT_OPT_OK(o, optim_param_get_step(o, 0, &step));
    ASSERT_INT(step, ==, 41);
    for (i = 0; i < R_LEN; i++) (void)i;
    optim_free(o);
    optim_free(alone);
    sp_release(&u);
    return 0;
}

/* SparseAdam's state goes through a checkpoint like any rule's: saved after K steps, loaded into a
 * new optimizer, the rest of the run gives the straight run's bits. */
TEST_IMPL(sparse_adam_checkpoint_resume)
{
    enum { K = 37, N = 90 };
    optim_hparams hp;
    sp_run a, b;
    optim *oa = NULL, *ob = NULL;
    void *buf = NULL, *sa = NULL, *sb = NULL;
    size_t size = 0;
    int64_t step_a = 0, step_b = 0;
    int t, s;
    optim_hparams_init(&hp, OPTIM_SPARSE_ADAM, NULL);
    hp.lr = 0.02;
    if (sp_alloc(&a, OPTIM_FLOAT32) || sp_alloc(&b, OPTIM_FLOAT32)) FAIL("out of memory");
    sp_init_params(&a, 5);
    if (sp_make(&oa, &hp, &a, 0, OPTIM_ISA_AUTO, 0)) return 1;
    for (t = 0; t < K; t++) {
        size_t nrows;
        if (sp_step(oa, &a, 21, t, 0, 0, &nrows)) return 1;
    }
    ASSERT_OPT_OK(oa, optim_save_buffer(oa, &buf, &size));
    memcpy(b.p, a.p, R_N * sizeof(float));
    if (sp_make(&ob, &hp, &b, 0, OPTIM_ISA_AUTO, 0)) return 1;
    ASSERT_OPT_OK(ob, optim_load_buffer(ob, buf, size, OPTIM_MATCH_POSITION, "sparse_adam"));
    free(buf);
    for (t = K; t < N; t++) {
        size_t nrows;
        if (sp_step(oa, &a, 21, t, 0, 0, &nrows) || sp_step(ob, &b, 21, t, 0, 0, &nrows)) return 1;
    }
    ASSERT_OPT_OK(oa, optim_param_get_step(oa, 0, &step_a));
    ASSERT_OPT_OK(ob, optim_param_get_step(ob, 0, &step_b));
    ASSERT_INT(step_a, ==, N);
    ASSERT_INT(step_b, ==, N);
    if (memcmp(a.p, b.p, R_N * sizeof(float)) != 0) FAIL("the resumed SparseAdam run's parameters differ");
    for (s = 0; s < 2; s++) {
        ASSERT_OPT_OK(oa, sp_slot(oa, 0, s, &sa));
        ASSERT_OPT_OK(ob, sp_slot(ob, 0, s, &sb));
        if (memcmp(sa, sb, R_N * sizeof(float)) != 0) FAIL("the resumed SparseAdam run's slot %d differs", s);
    }
    optim_free(oa);
    optim_free(ob);
    sp_release(&a);
    sp_release(&b);
    return 0;
}

/* One refused call: the code, a message naming `needle`, and nothing changed (parameter bytes,
 * state bytes, step counter, the optimizer's step count). */
static int sp_refused(optim *o, float *p, int rc, int code, const char *needle, const char *what)
{
    static float pbefore[R_N];
    (void)pbefore;
    if (rc != code)
        FAIL("%s: returned %s, expected %s (message: %s)", what, optim_err_name(rc), optim_err_name(code),
             optim_errmsg(o));
    if (!strstr(optim_errmsg(o), needle))
        FAIL("%s: message \"%s\" does not mention \"%s\"", what, optim_errmsg(o), needle);
    (void)p;
    return 0;
}

TEST_IMPL(sparse_refusals)
{
    static float p[R_N], pcopy[R_N], vals[4 * R_LEN], g_dense[R_N];
    static unsigned char sbefore[R_N * 4];
    int64_t rows[4] = {1, 5, 9, 12}, step = 0;
    optim_sparse_grad sg = {rows, 4, R_LEN, vals};
    const optim_sparse_grad *sparse[1] = {&sg};
    void *params[1] = {p};
    const void *grads[1] = {NULL};
    const void *dense[1] = {g_dense};
    optim_hparams hp;
    optim *o = NULL, *adam = NULL, *sgd = NULL;
    void *slot = NULL;
    size_t i;
    for (i = 0; i < R_N; i++) p[i] = (float)i * 1e-4f;
    for (i = 0; i < 4 * R_LEN; i++) vals[i] = 0.5f;
    optim_hparams_init(&hp, OPTIM_SPARSE_ADAM, NULL);
    ASSERT_OK(optim_create(&o, OPTIM_SPARSE_ADAM));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p, NULL, R_N, "emb", NULL));
    ASSERT_OPT_OK(o, optim_step_sparse(o, 1, params, grads, sparse)); /* one good step first */
    memcpy(pcopy, p, sizeof p);
    ASSERT_OPT_OK(o, sp_slot(o, 0, 0, &slot));
    memcpy(sbefore, slot, sizeof sbefore);
#define SP_REFUSED(call, code, needle)                                                              \
    do {                                                                                             \
        if (sp_refused(o, p, (call), (code), (needle), #call)) return 1;                             \
        if (memcmp(p, pcopy, sizeof p) != 0 || memcmp(slot, sbefore, sizeof sbefore) != 0)          \
            FAIL("%s changed the parameter or its state", #call);                                   \
        ASSERT_OPT_OK(o, optim_param_get_step(o, 0, &step));                                        \
        ASSERT_INT(step, ==, 1);                                                                     \
        ASSERT_INT(optim_step_count(o), ==, 1);                                                      \
    } while (0)
    rows[2] = R_ROWS; /* out of range, named with its value */
    SP_REFUSED(optim_step_sparse(o, 1, params, grads, sparse), OPTIM_EINVAL, "rows[2] = 3000 is out of range [0, 3000)");
    rows[2] = -3;
    SP_REFUSED(optim_step_sparse(o, 1, params, grads, sparse), OPTIM_EINVAL, "rows[2] = -3 is out of range");
    rows[2] = 5; /* a repeat: SparseAdam needs strictly increasing rows */
    SP_REFUSED(optim_step_sparse(o, 1, params, grads, sparse), OPTIM_EINVAL, "rows[2] = 5 is not above rows[1] = 5");
    rows[2] = 3;
    SP_REFUSED(optim_step_sparse(o, 1, params, grads, sparse), OPTIM_EINVAL, "rows[2] = 3 is not above rows[1] = 5");
    rows[2] = 9;
    sg.rows = NULL;
    SP_REFUSED(optim_step_sparse(o, 1, params, grads, sparse), OPTIM_ENULL, "rows is NULL with nrows = 4");
    sg.rows = rows;
    sg.values = NULL;
    SP_REFUSED(optim_step_sparse(o, 1, params, grads, sparse), OPTIM_ENULL, "values is NULL with nrows = 4");
    sg.values = vals;
    sg.row_len = 0;
    SP_REFUSED(optim_step_sparse(o, 1, params, grads, sparse), OPTIM_EINVAL, "row_len = 0");
    sg.row_len = 7;
    SP_REFUSED(optim_step_sparse(o, 1, params, grads, sparse), OPTIM_EINVAL, "row_len = 7 does not divide its 99000");
    sg.row_len = R_LEN;
    sg.nrows = R_ROWS + 1;
    SP_REFUSED(optim_step_sparse(o, 1, params, grads, sparse), OPTIM_EINVAL, "nrows = 3001, more than its 3000 rows");
    sg.nrows = 4;
    SP_REFUSED(optim_step_sparse(o, 1, params, dense, sparse), OPTIM_EINVAL,
               "both a dense gradient (grads[0]) and a sparse one");
    sg.values = p + 10; /* values inside the parameter */
    SP_REFUSED(optim_step_sparse(o, 1, params, grads, sparse), OPTIM_EOVERLAP, "sparse values of param 0 'emb'");
    sg.values = vals;
    SP_REFUSED(optim_step_sparse(o, 2, params, grads, sparse), OPTIM_ESIZE, "count = 2");
    SP_REFUSED(optim_step_sparse(o, 1, NULL, grads, sparse), OPTIM_ENULL, "params is NULL");
    /* A dense step on SparseAdam, by name (torch: "does not support dense gradients"). */
    SP_REFUSED(optim_step_with_data(o, 1, params, dense), OPTIM_EUNSUPPORTED,
               "has a dense gradient, and sparse_adam takes sparse gradients only");
    {
        optim_state st;
        float s0[8], s1[8], x[8] = {0}, gx[8] = {0};
        optim_error e;
        memset(&st, 0, sizeof st);
        st.slot[0] = s0;
        st.slot[1] = s1;
        ASSERT_OK(optim_state_init(&hp, 8, &st, NULL));
        ASSERT_ERR(optim_update(&hp, 8, x, gx, &st, &e), OPTIM_EUNSUPPORTED, e.message,
                   "sparse_adam takes sparse gradients only");
    }
    /* A rule without sparse gradients, and options torch refuses with them. */
    optim_hparams_init(&hp, OPTIM_ADAM, NULL);
    ASSERT_OK(optim_create(&adam, OPTIM_ADAM));
    ASSERT_OPT_OK(adam, optim_add_group(adam, &hp, NULL));
    ASSERT_OPT_OK(adam, optim_add_param(adam, 0, pcopy, NULL, R_N, "emb", NULL));
    params[0] = pcopy;
    ASSERT_ERR(optim_step_sparse(adam, 1, params, grads, sparse), OPTIM_EUNSUPPORTED, optim_errmsg(adam),
               "adam does not support sparse gradients");
    optim_hparams_init(&hp, OPTIM_SGD, NULL);
    hp.weight_decay = 0.1;
    ASSERT_OK(optim_create(&sgd, OPTIM_SGD));
    ASSERT_OPT_OK(sgd, optim_add_group(sgd, &hp, NULL));
    ASSERT_OPT_OK(sgd, optim_add_param(sgd, 0, pcopy, NULL, R_N, "emb", NULL));
    ASSERT_ERR(optim_step_sparse(sgd, 1, params, grads, sparse), OPTIM_EUNSUPPORTED, optim_errmsg(sgd),
               "weight_decay = 0.1 is not compatible with sparse gradients");
    ASSERT_OPT_OK(sgd, optim_group_set_hparam(sgd, 0, OPTIM_HP_WEIGHT_DECAY, 0));
    ASSERT_OPT_OK(sgd, optim_group_set_hparam(sgd, 0, OPTIM_HP_MOMENTUM, 0.9));
    ASSERT_ERR(optim_step_sparse(sgd, 1, params, grads, sparse), OPTIM_EUNSUPPORTED, optim_errmsg(sgd),
               "momentum = 0.9 with a sparse gradient");
    ASSERT_OPT_OK(sgd, optim_group_set_hparam(sgd, 0, OPTIM_HP_MOMENTUM, 0));
    rows[1] = 1; /* SGD takes repeated rows (non-decreasing), not decreasing ones */
    ASSERT_OPT_OK(sgd, optim_step_sparse(sgd, 1, params, grads, sparse));
    rows[1] = 0;
    ASSERT_ERR(optim_step_sparse(sgd, 1, params, grads, sparse), OPTIM_EINVAL, optim_errmsg(sgd),
               "rows[1] = 0 is not above rows[0] = 1 (rows must be in non-decreasing order for sgd");
    rows[1] = 1;
    {   /* SGD: more repeated rows than the parameter has rows (an uncoalesced gradient); a size_t overflow */
        static int64_t many[R_ROWS + 2];
        static float mvals[(R_ROWS + 2) * R_LEN];
        optim_sparse_grad mg = {many, R_ROWS + 2, R_LEN, mvals};
        const optim_sparse_grad *msparse[1] = {&mg};
        size_t q;
        for (q = 0; q < R_ROWS + 2; q++) many[q] = (int64_t)(q / 2);
        ASSERT_OPT_OK(sgd, optim_step_sparse(sgd, 1, params, grads, msparse));
        mg.nrows = SIZE_MAX / 2;
        ASSERT_ERR(optim_step_sparse(sgd, 1, params, grads, msparse), OPTIM_EINVAL, optim_errmsg(sgd),
                   "their size overflows size_t");
    }
    optim_free(sgd);
    optim_free(adam);
    /* Adagrad's weight decay; bfloat16 parameters. */
    {
        static uint16_t h[R_N];
        optim *ad = NULL;
        optim_hparams_init(&hp, OPTIM_ADAGRAD, NULL);
        hp.weight_decay = 0.5;
        rows[1] = 5;
        ASSERT_OK(optim_create(&ad, OPTIM_ADAGRAD));
        ASSERT_OPT_OK(ad, optim_add_group(ad, &hp, NULL));
        ASSERT_OPT_OK(ad, optim_add_param(ad, 0, pcopy, NULL, R_N, "emb", NULL));
        ASSERT_ERR(optim_step_sparse(ad, 1, params, grads, sparse), OPTIM_EUNSUPPORTED, optim_errmsg(ad),
                   "param 0 'emb' (group 0): adagrad: weight_decay = 0.5 is not compatible with sparse gradients");
        optim_free(ad);
        hp.weight_decay = 0;
        ASSERT_OK(optim_create(&ad, OPTIM_ADAGRAD));
        ASSERT_OPT_OK(ad, optim_add_group(ad, &hp, NULL));
        ASSERT_OPT_OK(ad, optim_add_param_typed(ad, 0, h, OPTIM_BFLOAT16, NULL, OPTIM_BFLOAT16, R_N, "emb16", NULL));
        params[0] = h;
        ASSERT_ERR(optim_step_sparse(ad, 1, params, grads, sparse), OPTIM_EUNSUPPORTED, optim_errmsg(ad),
                   "param 0 'emb16' (bfloat16, bfloat16 gradients, float32 state)");
        optim_free(ad);
    }
    ASSERT_INT(optim_rule_sparse(OPTIM_SGD), ==, OPTIM_SPARSE_YES);
    ASSERT_INT(optim_rule_sparse(OPTIM_ADAGRAD), ==, OPTIM_SPARSE_YES);
    ASSERT_INT(optim_rule_sparse(OPTIM_SPARSE_ADAM), ==, OPTIM_SPARSE_ONLY);
    ASSERT_INT(optim_rule_sparse(OPTIM_ADAM), ==, OPTIM_SPARSE_NO);
    ASSERT_INT(optim_rule_sparse((optim_rule)0), ==, OPTIM_SPARSE_NO);
    ASSERT_INT(optim_step_sparse(NULL, 0, NULL, NULL, NULL), ==, OPTIM_ENULL);
    optim_free(o);
    return 0;
#undef SP_REFUSED
}
