/* test_sam.c: SAM and ASAM (part of the gradient suite, optim_grad_tests):
 * against an independent double-precision implementation of the formulas,
 * per-group settings, thread and path invariance, restore and errors, the
 * non-finite policies; and the lifetimes of a SAM object and its base
 * optimizer: parameter memory replaced between the two halves, either
 * object freed first, the base changed while it is perturbed. Run under
 * AddressSanitizer by scripts/sanitize.sh. */
#include "optim_checkpoint.h"
#include "optim_sam.h"
#include "ref.h"
#include "test.h"

/* The test's loss: L(w) = sum a_i (w_i - c_i)^2 / 2 - b cos(3 w_i), a smooth
 * bowl with ripples; its gradient in float, as a framework would compute it. */
static void loss_grad(size_t n, const float *w, const float *a, const float *c, float *g)
{
    size_t i;
    for (i = 0; i < n; i++) g[i] = a[i] * (w[i] - c[i]) + 0.3f * sinf(3.0f * w[i]);
}

/* The ascent step in double, straight from the formula (Foret et al. eq. 2,
 * Kwon et al. for T_w): e = rho T sign(h) |h|^(q-1) / ||h||_q^(q-1), h = T g;
 * p = 2 as the reference PyTorch SAM: e = rho T^2 g / (||h||_2 + 1e-12). */
static void ref_perturb(size_t count, const size_t *n, double *const *w, const float *const *g, double rho, double p,
                        int adaptive, double eta, double *norm_out)
{
    double q = isinf(p) ? 1.0 : p / (p - 1.0), acc = 0, norm;
    size_t k, i;
    for (k = 0; k < count; k++)
        for (i = 0; i < n[k]; i++) {
            double t = adaptive ? fabs(w[k][i]) + eta : 1.0;
            acc += pow(fabs(t * g[k][i]), q);
        }
    norm = pow(acc, 1.0 / q);
    *norm_out = norm;
    for (k = 0; k < count; k++)
        for (i = 0; i < n[k]; i++) {
            double t = adaptive ? fabs(w[k][i]) + eta : 1.0, h = t * g[k][i];
            double sign = h > 0 ? 1.0 : (h < 0 ? -1.0 : 0.0);
            if (p == 2.0)
                w[k][i] += rho * t * t * g[k][i] / (norm + 1e-12);
            else
                w[k][i] += rho * t * sign * pow(fabs(h) / norm, q - 1.0);
        }
}

typedef struct sam_case {
    optim_rule rule;
    double lr, rho, p, eta;
    int adaptive;
} sam_case;

static const sam_case sam_cases[] = {
    {OPTIM_SGD, 0.05, 0.05, 2.0, 0.0, 0},     {OPTIM_SGD, 0.05, 0.5, 2.0, 0.0, 1},
    {OPTIM_SGD, 0.05, 0.2, 2.0, 0.01, 1},     {OPTIM_SGD, 0.05, 0.01, INFINITY, 0.0, 0},
    {OPTIM_SGD, 0.05, 0.05, INFINITY, 0.0, 1}, {OPTIM_ADAM, 0.01, 0.05, 3.0, 0.0, 0},
    {OPTIM_ADAM, 0.01, 0.1, 1.5, 0.01, 1},    {OPTIM_ADAMW, 0.01, 0.05, 2.0, 0.0, 1},
};

/* Every step, the reference starts from the library's float state and takes
 * the same step in double: the ascent point and the updated weights must agree
 * to float rounding (errors relative to the larger of the value before and
 * after, with a floor of 1e-3 of the array's scale, as in test_rules.c). */
static double sam_error(size_t count, const size_t *n, float *const *w, double *const *r, double *const *before)
{
    double worst = 0, scale = 0;
    size_t k, i;
    for (k = 0; k < count; k++)
        for (i = 0; i < n[k]; i++) scale = fmax(scale, fmax(fabs(r[k][i]), fabs(before[k][i])));
    for (k = 0; k < count; k++)
        for (i = 0; i < n[k]; i++) {
            double fl = fmax(fmax(fabs(r[k][i]), fabs(before[k][i])), 1e-3 * scale);
            double e = fabs((double)w[k][i] - r[k][i]) / (fl + 1e-30);
            if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
        }
    return worst;
}

TEST_IMPL(sam_vs_reference)
{
    enum { STEPS = 120, COUNT = 3 };
    static const size_t n[COUNT] = {7, 1000, 33};
    size_t ci;
    for (ci = 0; ci < sizeof sam_cases / sizeof sam_cases[0]; ci++) {
        const sam_case *sc = &sam_cases[ci];
        test_rng rng = {test_seed() ^ (0x5a0 + ci)};
        optim *o = NULL;
        optim_sam *sam = NULL;
        optim_hparams hp;
        optim_error err;
        float *w[COUNT], *g[COUNT], *a[COUNT], *c[COUNT];
        double *rw[COUNT], *before[COUNT], worst_ascent = 0, worst_step = 0;
        ref_state rs[COUNT];
        size_t k, i;
        int t;
        optim_hparams_init(&hp, sc->rule, NULL);
        hp.lr = sc->lr;
        if (sc->rule == OPTIM_SGD) hp.momentum = 0.9;
        ASSERT_OK(optim_create(&o, sc->rule));
        ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
        for (k = 0; k < COUNT; k++) {
            w[k] = (float *)malloc(n[k] * sizeof(float));
            g[k] = (float *)malloc(n[k] * sizeof(float));
            a[k] = (float *)malloc(n[k] * sizeof(float));
            c[k] = (float *)malloc(n[k] * sizeof(float));
            rw[k] = (double *)malloc(n[k] * sizeof(double));
            before[k] = (double *)malloc(n[k] * sizeof(double));
            for (i = 0; i < n[k]; i++) {
                w[k][i] = (float)test_rng_normal(&rng);
                a[k][i] = (float)(0.5 + test_rng_uniform(&rng));
                c[k][i] = (float)test_rng_normal(&rng);
            }
            ASSERT_OPT_OK(o, optim_add_param(o, 0, w[k], g[k], n[k], NULL, NULL));
            if (ref_init(&rs[k], &hp, n[k])) FAIL("out of memory");
        }
        ASSERT_OK_MSG(optim_sam_create(&sam, o, sc->rho, sc->p, sc->adaptive, sc->eta, &err), err.message);
        for (t = 0; t < STEPS; t++) {
            double norm;
            optim_state st;
            /* Synchronise the reference with the library's state. */
            for (k = 0; k < COUNT; k++) {
                int s;
                memset(&st, 0, sizeof st);
                ASSERT_OK(optim_param_get_step(o, k, &st.step));
                ASSERT_OK(optim_param_get_mu_product(o, k, &st.mu_product));
                for (s = 0; s < optim_rule_slot_count(sc->rule); s++) {
                    int init;
                    ASSERT_OPT_OK(o, optim_state_slot(o, k, s, &st.slot[s], &init));
                    if (init) st.initialized |= 1u << s;
                }
                ref_sync(&rs[k], &hp, rw[k], w[k], &st);
                for (i = 0; i < n[k]; i++) before[k][i] = rw[k][i];
                loss_grad(n[k], w[k], a[k], c[k], g[k]);
            }
            ASSERT_OK_MSG(optim_sam_first_step(sam), optim_sam_errmsg(sam));
            ASSERT(optim_sam_is_perturbed(sam));
            ref_perturb(COUNT, n, rw, (const float *const *)g, sc->rho, sc->p, sc->adaptive, sc->eta, &norm);
            /* Exact sums of float squares agree to summation order; ASAM's h = T g is
             * formed in float by the library (as torch), in double here. */
            if (fabs(norm - optim_sam_last_grad_norm(sam)) > (sc->adaptive ? 1e-6 : 1e-12) * norm)
                FAIL("case %zu step %d: norm %.17g vs reference %.17g", ci, t, optim_sam_last_grad_norm(sam), norm);
            worst_ascent = fmax(worst_ascent, sam_error(COUNT, n, w, rw, before));
            /* The gradient at the ascent point, then the base step from w. */
            for (k = 0; k < COUNT; k++) {
                loss_grad(n[k], w[k], a[k], c[k], g[k]);
                for (i = 0; i < n[k]; i++) rw[k][i] = before[k][i];
                ref_step(&hp, hp.lr, rw[k], g[k], &rs[k]);
            }
            ASSERT_OK_MSG(optim_sam_second_step(sam), optim_sam_errmsg(sam));
            worst_step = fmax(worst_step, sam_error(COUNT, n, w, rw, before));
            if (worst_ascent > 1e-5 || worst_step > 1e-5)
                FAIL("case %zu (%s, p %g, adaptive %d, eta %g) step %d: ascent error %.3g, step error %.3g", ci,
                     optim_rule_name(sc->rule), sc->p, sc->adaptive, sc->eta, t, worst_ascent, worst_step);
        }
        printf("  %-5s rho %-4g p %-3g adaptive %d eta %-4g: worst ascent error %.2e, step error %.2e\n",
               optim_rule_name(sc->rule), sc->rho, sc->p, sc->adaptive, sc->eta, worst_ascent, worst_step);
        optim_sam_free(sam);
        optim_free(o);
        for (k = 0; k < COUNT; k++) {
            free(w[k]);
            free(g[k]);
            free(a[k]);
            free(c[k]);
            free(rw[k]);
            free(before[k]);
            ref_free(&rs[k]);
        }
    }
    return 0;
}

/* Per-group settings, as the reference keeps rho and adaptive per group: the
 * norm over all parameters uses each parameter's group's T_w, and each group
 * moves by its own rho. Checked against the formula in double for one step. */
TEST_IMPL(sam_per_group)
{
    enum { N = 300 };
    static const double p_values[] = {2.0, INFINITY, 3.0};
    size_t pi;
    for (pi = 0; pi < 3; pi++) {
        const double rho[2] = {0.05, 0.3}, eta[2] = {0.0, 0.01};
        const int adaptive[2] = {0, 1};
        test_rng rng = {test_seed() ^ 0x9c0};
        optim *o = NULL;
        optim_sam *sam = NULL;
        optim_hparams hp;
        float w[2][N], g[2][N];
        double W[2][N], acc = 0, norm, q = isinf(p_values[pi]) ? 1.0 : p_values[pi] / (p_values[pi] - 1.0);
        size_t k, i;
        double r;
        int a;
        optim_hparams_init(&hp, OPTIM_SGD, NULL);
        ASSERT_OK(optim_create(&o, OPTIM_SGD));
        for (k = 0; k < 2; k++) {
            ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
            for (i = 0; i < N; i++) {
                w[k][i] = (float)test_rng_normal(&rng);
                g[k][i] = (float)test_rng_normal(&rng);
                W[k][i] = w[k][i];
            }
            ASSERT_OPT_OK(o, optim_add_param(o, k, w[k], g[k], N, NULL, NULL));
        }
        ASSERT_OK(optim_sam_create(&sam, o, 0.1, p_values[pi], 0, 0.0, NULL));
        for (k = 0; k < 2; k++) ASSERT_OK_MSG(optim_sam_set_group(sam, k, rho[k], adaptive[k], eta[k]), optim_sam_errmsg(sam));
        ASSERT_OK(optim_sam_get_group(sam, 1, &r, &a, NULL));
        ASSERT(r == 0.3 && a == 1);
        ASSERT_ERR(optim_sam_set_group(sam, 2, 0.1, 0, 0), OPTIM_ERANGE, optim_sam_errmsg(sam), "group 2 does not exist");
        ASSERT_ERR(optim_sam_set_group(sam, 0, 0.1, 2, 0), OPTIM_EINVAL, optim_sam_errmsg(sam), "adaptive = 2");
        ASSERT_OK(optim_sam_first_step(sam));
        for (k = 0; k < 2; k++)
            for (i = 0; i < N; i++) {
                double t = adaptive[k] ? fabs(W[k][i]) + eta[k] : 1.0;
                acc += pow(fabs(t * g[k][i]), q);
            }
        norm = pow(acc, 1.0 / q);
        if (fabs(norm - optim_sam_last_grad_norm(sam)) > 1e-6 * norm)
            FAIL("p %g: norm %.17g vs %.17g", p_values[pi], optim_sam_last_grad_norm(sam), norm);
        for (k = 0; k < 2; k++)
            for (i = 0; i < N; i++) {
                double t = adaptive[k] ? fabs(W[k][i]) + eta[k] : 1.0, h = t * g[k][i], e;
                double sign = h > 0 ? 1.0 : (h < 0 ? -1.0 : 0.0);
                if (p_values[pi] == 2.0)
                    e = rho[k] * t * t * g[k][i] / (norm + 1e-12);
                else
                    e = rho[k] * t * sign * pow(fabs(h) / norm, q - 1.0);
                if (fabs(w[k][i] - (W[k][i] + e)) > 1e-6 * fmax(1.0, fabs(W[k][i])))
                    FAIL("p %g, group %zu, element %zu: %.9g vs %.9g", p_values[pi], k, i, w[k][i], W[k][i] + e);
            }
        ASSERT_OK(optim_sam_restore(sam));
        /* A group added after creation is refused. */
        ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
        ASSERT_ERR(optim_sam_first_step(sam), OPTIM_ESTATE, optim_sam_errmsg(sam), "has 3 groups but had 2");
        optim_sam_free(sam);
        optim_free(o);
    }
    return 0;
}

/* SAM's norm and steps give the same bits for any thread count and path. */
TEST_IMPL(sam_threads_bit_identical)
{
    static const int threads[] = {1, 2, 3, 0};
    static const optim_isa isas[] = {OPTIM_ISA_SCALAR, OPTIM_ISA_AVX2, OPTIM_ISA_AVX512};
    size_t ci;
    for (ci = 0; ci < sizeof sam_cases / sizeof sam_cases[0]; ci++) {
        float *first = NULL;
        size_t ti, ii;
        for (ii = 0; ii < 3; ii++)
            for (ti = 0; ti < 4; ti++) {
                const sam_case *sc = &sam_cases[ci];
                test_rng rng = {test_seed() ^ 0xab};
                optim *o = NULL;
                optim_sam *sam = NULL;
                optim_hparams hp;
                size_t n = 100003, i;
                float *w = (float *)malloc(n * sizeof(float)), *g = (float *)malloc(n * sizeof(float));
                float *a = (float *)malloc(n * sizeof(float)), *c = (float *)malloc(n * sizeof(float));
                int t;
                if (!optim_isa_available(isas[ii])) {
                    free(w), free(g), free(a), free(c);
                    continue;
                }
                for (i = 0; i < n; i++) {
                    w[i] = (float)test_rng_normal(&rng);
                    a[i] = (float)(0.5 + test_rng_uniform(&rng));
                    c[i] = (float)test_rng_normal(&rng);
                }
                optim_hparams_init(&hp, sc->rule, NULL);
                hp.lr = sc->lr;
                ASSERT_OK(optim_create(&o, sc->rule));
                ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
                ASSERT_OPT_OK(o, optim_add_param(o, 0, w, g, n, NULL, NULL));
                ASSERT_OPT_OK(o, optim_set_threads(o, threads[ti]));
                ASSERT_OPT_OK(o, optim_set_isa(o, isas[ii]));
                ASSERT_OK(optim_sam_create(&sam, o, sc->rho, sc->p, sc->adaptive, sc->eta, NULL));
                for (t = 0; t < 5; t++) {
                    loss_grad(n, w, a, c, g);
                    ASSERT_OK(optim_sam_first_step(sam));
                    loss_grad(n, w, a, c, g);
                    ASSERT_OK(optim_sam_second_step(sam));
                }
                if (!first) {
                    first = w;
                } else {
                    if (memcmp(first, w, n * sizeof(float)) != 0)
                        FAIL("case %zu: %s path with %d threads differs from the first run", ci,
                             optim_isa_name(isas[ii]), threads[ti]);
                    free(w);
                }
                free(g), free(a), free(c);
                optim_sam_free(sam);
                optim_free(o);
            }
        free(first);
    }
    return 0;
}

TEST_IMPL(sam_restore_and_errors)
{
    optim *o = NULL, *empty = NULL;
    optim_sam *sam = NULL;
    optim_hparams hp;
    optim_error err;
    float w[10], g[10], w0[10], extra[3], ge[3];
    int i;
    for (i = 0; i < 10; i++) {
        w[i] = w0[i] = (float)i * 0.1f - 0.4f;
        g[i] = (float)(i % 3) - 1.0f;
    }
    optim_hparams_init(&hp, OPTIM_SGD, NULL);
    ASSERT_OK(optim_create(&o, OPTIM_SGD));
    ASSERT_OK(optim_create(&empty, OPTIM_SGD));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, w, g, 10, "w", NULL));
    ASSERT_ERR(optim_sam_create(&sam, NULL, 0.05, 2, 0, 0, &err), OPTIM_ENULL, err.message, "base is NULL");
    ASSERT_ERR(optim_sam_create(&sam, empty, 0.05, 2, 0, 0, &err), OPTIM_ESTATE, err.message, "no parameters");
    ASSERT_ERR(optim_sam_create(&sam, o, -0.05, 2, 0, 0, &err), OPTIM_EINVAL, err.message, "rho = -0.05");
    ASSERT_ERR(optim_sam_create(&sam, o, 0.05, 1.0, 0, 0, &err), OPTIM_EINVAL, err.message, "p = 1 must be > 1");
    ASSERT_ERR(optim_sam_create(&sam, o, 0.05, 2, 3, 0, &err), OPTIM_EINVAL, err.message, "adaptive = 3");
    ASSERT_ERR(optim_sam_create(&sam, o, 0.05, 2, 1, -1, &err), OPTIM_EINVAL, err.message, "eta = -1");
    ASSERT(sam == NULL);
    ASSERT_OK_MSG(optim_sam_create(&sam, o, 0.05, 2, 0, 0, &err), err.message);
    ASSERT_ERR(optim_sam_second_step(sam), OPTIM_ESTATE, optim_sam_errmsg(sam), "no first_step");
    ASSERT_OK(optim_sam_first_step(sam));
    ASSERT(memcmp(w, w0, sizeof w) != 0);
    ASSERT_ERR(optim_sam_first_step(sam), OPTIM_ESTATE, optim_sam_errmsg(sam), "called twice");
    ASSERT_OK(optim_sam_restore(sam));
    ASSERT(memcmp(w, w0, sizeof w) == 0); /* exactly back */
    ASSERT(!optim_sam_is_perturbed(sam));
    ASSERT_INT(optim_step_count(o), ==, 0);
    ASSERT_ERR(optim_sam_set_rho(sam, NAN), OPTIM_EINVAL, optim_sam_errmsg(sam), "rho = nan");
    ASSERT_OK(optim_sam_set_rho(sam, 0.1));
    ASSERT(optim_sam_get_rho(sam) == 0.1 && optim_sam_get_p(sam) == 2.0 && optim_sam_base(sam) == o);
    /* A parameter without a gradient is neither perturbed nor moved. */
    ASSERT_OPT_OK(o, optim_set_grad(o, 0, NULL));
    ASSERT_OK(optim_sam_first_step(sam));
    ASSERT(memcmp(w, w0, sizeof w) == 0);
    ASSERT_OK(optim_sam_second_step(sam));
    ASSERT(memcmp(w, w0, sizeof w) == 0);
    ASSERT_OPT_OK(o, optim_set_grad(o, 0, g));
    /* Parameters added after creation are refused. */
    ASSERT_OPT_OK(o, optim_add_param(o, 0, extra, ge, 3, "late", NULL));
    ASSERT_ERR(optim_sam_first_step(sam), OPTIM_ESTATE, optim_sam_errmsg(sam), "has 2 params but had 1");
    ASSERT(strstr(optim_sam_errmsg(NULL), "NULL") != NULL);
    optim_sam_free(sam);
    optim_sam_free(NULL);
    optim_free(o);
    optim_free(empty);
    return 0;
}

TEST_IMPL(sam_nonfinite_policies)
{
    optim *o = NULL;
    optim_sam *sam = NULL;
    optim_hparams hp;
    float w[8], g[8], w0[8];
    int i;
    for (i = 0; i < 8; i++) {
        w[i] = w0[i] = (float)i;
        g[i] = 1.0f;
    }
    optim_hparams_init(&hp, OPTIM_ADAM, NULL);
    ASSERT_OK(optim_create(&o, OPTIM_ADAM));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, w, g, 8, "w", NULL));
    ASSERT_OK(optim_sam_create(&sam, o, 0.05, 2, 0, 0, NULL));
    /* SKIP: the whole SAM step is skipped. */
    ASSERT_OPT_OK(o, optim_set_nonfinite(o, OPTIM_NONFINITE_SKIP));
    g[4] = NAN;
    ASSERT_OK(optim_sam_first_step(sam));
    ASSERT(memcmp(w, w0, sizeof w) == 0);
    g[4] = 1.0f;
    ASSERT_OK(optim_sam_second_step(sam));
    ASSERT(memcmp(w, w0, sizeof w) == 0);
    ASSERT_INT(optim_skipped_steps(o), ==, 1);
    ASSERT_INT(optim_last_step_skipped(o), ==, 1);
    /* A non-finite second gradient: the base skips, w is restored. */
    ASSERT_OK(optim_sam_first_step(sam));
    g[2] = INFINITY;
    ASSERT_OK(optim_sam_second_step(sam));
    ASSERT(memcmp(w, w0, sizeof w) == 0);
    ASSERT_INT(optim_skipped_steps(o), ==, 2);
    /* ERROR: first_step fails and nothing moves. */
    ASSERT_OPT_OK(o, optim_set_nonfinite(o, OPTIM_NONFINITE_ERROR));
    ASSERT_ERR(optim_sam_first_step(sam), OPTIM_ENONFINITE, optim_sam_errmsg(sam), "param 0 'w' holds NaN or Inf");
    ASSERT(memcmp(w, w0, sizeof w) == 0);
    g[2] = 1.0f;
    ASSERT_OK(optim_sam_first_step(sam));
    ASSERT_OK(optim_sam_second_step(sam));
    ASSERT(memcmp(w, w0, sizeof w) != 0);
    optim_sam_free(sam);
    optim_free(o);
    return 0;
}

/* ---- Lifetimes: memory replaced between the halves, objects freed in any order ---------- */

/* A small SGD-with-momentum base over two parameters and its SAM, with a
 * fixed first gradient: the same in every run, so runs can be compared bit
 * for bit. w lives in heap blocks of its own (ASan sees any stale write). */
#define LT_N 37
typedef struct lt_run {
    optim *o;
    optim_sam *sam;
    float *w[2], g[2][LT_N];
} lt_run;

static float lt_w0(int k, int i)
{
    return (float)(k + 1) * 0.25f - (float)i * 0.03f;
}

static int lt_build(lt_run *r)
{
    optim_hparams hp;
    int k, i;
    memset(r, 0, sizeof *r);
    optim_hparams_init(&hp, OPTIM_SGD, NULL);
    hp.lr = 0.1;
    hp.momentum = 0.9;
    ASSERT_OK(optim_create(&r->o, OPTIM_SGD));
    ASSERT_OPT_OK(r->o, optim_add_group(r->o, &hp, NULL));
    for (k = 0; k < 2; k++) {
        r->w[k] = (float *)malloc(LT_N * sizeof(float));
        ASSERT(r->w[k]);
        for (i = 0; i < LT_N; i++) {
            r->w[k][i] = lt_w0(k, i);
            r->g[k][i] = (float)sin(1.0 + k * LT_N + i);
        }
        ASSERT_OPT_OK(r->o, optim_add_param(r->o, 0, r->w[k], r->g[k], LT_N, k ? "b" : "a", NULL));
    }
    ASSERT_OK(optim_sam_create(&r->sam, r->o, 0.1, 2.0, 0, 0.0, NULL));
    return 0;
}

/* The gradient "at the perturbed point": fixed, so that it does not depend on
 * which memory the perturbed values were written to. */
static void lt_second_grad(lt_run *r)
{
    int k, i;
    for (k = 0; k < 2; k++)
        for (i = 0; i < LT_N; i++) r->g[k][i] = (float)cos(2.0 + k * LT_N + i);
}

static void lt_free(lt_run *r)
{
    optim_sam_free(r->sam);
    optim_free(r->o);
    free(r->w[0]);
    free(r->w[1]);
    memset(r, 0, sizeof *r);
}

/* Replace parameter 1's memory (a binding's p.data = torch.randn(n)): new
 * memory holding other values, the old freed. */
static float *lt_replace(lt_run *r)
{
    float *fresh = (float *)malloc(LT_N * sizeof(float));
    int i;
    if (!fresh) return NULL;
    for (i = 0; i < LT_N; i++) fresh[i] = 1234.5f + (float)i;
    free(r->w[1]);
    r->w[1] = fresh;
    return fresh;
}

/* What SAM does when a parameter's memory is replaced between first_step and
 * second_step or restore: the saved w goes into the memory bound then (what
 * the reference PyTorch SAM's p.data = old_p does), never into the old
 * memory, by every way of completing or abandoning the step. */
TEST_IMPL(sam_memory_replaced)
{
    int way;
    for (way = 0; way < 5; way++) {
        lt_run ref, r;
        int k, i;
        if (lt_build(&ref) || lt_build(&r)) return 1;
        ASSERT_OK(optim_sam_first_step(ref.sam));
        ASSERT_OK(optim_sam_first_step(r.sam));
        ASSERT(memcmp(ref.w[1], r.w[1], sizeof(float) * LT_N) == 0);
        if (!lt_replace(&r)) FAIL("out of memory");
        lt_second_grad(&ref);
        lt_second_grad(&r);
        if (way == 0) { /* a rebinding refused changes nothing: still perturbed, nothing written */
            float *bad[2] = {r.w[1], r.w[1]}, snap[2][LT_N];
            const float *gp[2] = {r.g[0], r.g[1]};
            memcpy(snap[0], r.w[0], sizeof snap[0]);
            memcpy(snap[1], r.w[1], sizeof snap[1]);
            ASSERT_ERR(optim_sam_second_step_with(r.sam, 2, bad, gp), OPTIM_EOVERLAP, optim_sam_errmsg(r.sam),
                       "optim_sam_second_step_with: the memory of param 0 'a' overlaps the memory of param 1 'b'");
            ASSERT_ERR(optim_sam_restore_with(r.sam, 1, bad, gp), OPTIM_ESIZE, optim_sam_errmsg(r.sam),
                       "optim_sam_restore_with: count = 1 but the optimizer has 2 params");
            ASSERT(optim_sam_is_perturbed(r.sam));
            ASSERT(memcmp(snap[0], r.w[0], sizeof snap[0]) == 0 && memcmp(snap[1], r.w[1], sizeof snap[1]) == 0);
        }
        switch (way) {
        case 0: { /* second_step_with the new pointers (the binding's path) */
            float *pp[2] = {r.w[0], r.w[1]};
            const float *gp[2] = {r.g[0], r.g[1]};
            ASSERT_OK_MSG(optim_sam_second_step_with(r.sam, 2, pp, gp), optim_sam_errmsg(r.sam));
            ASSERT_OK(optim_sam_second_step(ref.sam));
            break;
        }
        case 1: /* the base rebound, then second_step */
            ASSERT_OPT_OK(r.o, optim_set_param_ptrs(r.o, 1, r.w[1], r.g[1]));
            ASSERT_OK_MSG(optim_sam_second_step(r.sam), optim_sam_errmsg(r.sam));
            ASSERT_OK(optim_sam_second_step(ref.sam));
            break;
        case 2: /* the base rebound, then restore (abandoning the step) */
            ASSERT_OPT_OK(r.o, optim_set_param_ptrs(r.o, 1, r.w[1], r.g[1]));
            ASSERT_OK_MSG(optim_sam_restore(r.sam), optim_sam_errmsg(r.sam));
            ASSERT_OK(optim_sam_restore(ref.sam));
            for (k = 0; k < 2; k++)
                for (i = 0; i < LT_N; i++)
                    if (r.w[k][i] != lt_w0(k, i)) FAIL("way %d: param %d [%d] = %.9g, not w", way, k, i, r.w[k][i]);
            break;
        case 4: { /* restore_with the new pointers (a binding abandoning the step: a closure that replaced
                   * the tensor and raised) */
            float *pp[2] = {r.w[0], r.w[1]};
            const float *gp[2] = {r.g[0], r.g[1]};
            ASSERT_OK_MSG(optim_sam_restore_with(r.sam, 2, pp, gp), optim_sam_errmsg(r.sam));
            ASSERT_OK(optim_sam_restore(ref.sam));
            for (k = 0; k < 2; k++)
                for (i = 0; i < LT_N; i++)
                    if (r.w[k][i] != lt_w0(k, i)) FAIL("way %d: param %d [%d] = %.9g, not w", way, k, i, r.w[k][i]);
            break;
        }
        case 3: { /* rebound twice (first to a third block, then to the last), then second_step_with */
            float *mid = (float *)malloc(LT_N * sizeof(float));
            float *pp[2] = {r.w[0], r.w[1]};
            const float *gp[2] = {r.g[0], r.g[1]};
            ASSERT(mid);
            memset(mid, 0, LT_N * sizeof(float));
            ASSERT_OPT_OK(r.o, optim_set_param_ptrs(r.o, 1, mid, r.g[1]));
            ASSERT_OK_MSG(optim_sam_second_step_with(r.sam, 2, pp, gp), optim_sam_errmsg(r.sam));
            for (i = 0; i < LT_N; i++) ASSERT(mid[i] == 0.0f); /* no longer bound: untouched */
            free(mid);
            ASSERT_OK(optim_sam_second_step(ref.sam));
            break;
        }
        }
        for (k = 0; k < 2; k++)
            if (memcmp(ref.w[k], r.w[k], sizeof(float) * LT_N) != 0)
                FAIL("way %d: param %d differs from the run whose memory was not replaced", way, k);
        ASSERT(!optim_sam_is_perturbed(r.sam));
        /* and the run goes on from there, bit for bit */
        ASSERT_OK(optim_sam_first_step(ref.sam));
        ASSERT_OK(optim_sam_first_step(r.sam));
        ASSERT_OK(optim_sam_second_step(ref.sam));
        ASSERT_OK(optim_sam_second_step(r.sam));
        for (k = 0; k < 2; k++) ASSERT(memcmp(ref.w[k], r.w[k], sizeof(float) * LT_N) == 0);
        lt_free(&ref);
        lt_free(&r);
    }
    return 0;
}

/* Either object may be freed first, perturbed or not. A SAM whose base was
 * freed refuses every call (OPTIM_ESTATE, saying so) and frees safely; a base
 * whose SAM was freed mid-step is free again (steps, checkpoints). Neither
 * free writes to the parameters (their memory may already be gone). */
TEST_IMPL(sam_lifetimes)
{
    int perturbed, base_first;
    for (perturbed = 0; perturbed < 2; perturbed++)
        for (base_first = 0; base_first < 2; base_first++) {
            lt_run r;
            float before[LT_N];
            double rho;
            if (lt_build(&r)) return 1;
            if (perturbed) ASSERT_OK(optim_sam_first_step(r.sam));
            memcpy(before, r.w[1], sizeof before);
            if (base_first) {
                float *pp[2] = {r.w[0], r.w[1]};
                const float *gp[2] = {r.g[0], r.g[1]};
                optim_free(r.o);
                r.o = NULL;
                ASSERT(memcmp(before, r.w[1], sizeof before) == 0);
                ASSERT(optim_sam_base(r.sam) == NULL);
                ASSERT_INT(optim_sam_is_perturbed(r.sam), ==, 0);
                ASSERT_ERR(optim_sam_first_step(r.sam), OPTIM_ESTATE, optim_sam_errmsg(r.sam),
                           "optim_sam_first_step: the base optimizer was freed");
                ASSERT_ERR(optim_sam_second_step(r.sam), OPTIM_ESTATE, optim_sam_errmsg(r.sam),
                           "optim_sam_second_step: the base optimizer was freed");
                ASSERT_ERR(optim_sam_restore(r.sam), OPTIM_ESTATE, optim_sam_errmsg(r.sam),
                           "the base optimizer was freed");
                ASSERT_ERR(optim_sam_first_step_with(r.sam, 2, pp, gp), OPTIM_ESTATE, optim_sam_errmsg(r.sam),
                           "the base optimizer was freed");
                ASSERT_ERR(optim_sam_second_step_with(r.sam, 2, pp, gp), OPTIM_ESTATE, optim_sam_errmsg(r.sam),
                           "the base optimizer was freed");
                ASSERT_ERR(optim_sam_set_rho(r.sam, 0.2), OPTIM_ESTATE, optim_sam_errmsg(r.sam),
                           "the base optimizer was freed");
                ASSERT_ERR(optim_sam_set_group(r.sam, 0, 0.2, 0, 0.0), OPTIM_ESTATE, optim_sam_errmsg(r.sam),
                           "the base optimizer was freed");
                /* its own settings stay readable */
                ASSERT_OK(optim_sam_get_group(r.sam, 0, &rho, NULL, NULL));
                ASSERT(rho == 0.1 && optim_sam_get_rho(r.sam) == 0.1 && optim_sam_get_p(r.sam) == 2.0);
                ASSERT(memcmp(before, r.w[1], sizeof before) == 0); /* nothing written */
                optim_sam_free(r.sam);
                r.sam = NULL;
            } else {
                void *buf = NULL;
                size_t size;
                optim_sam_free(r.sam);
                r.sam = NULL;
                ASSERT(memcmp(before, r.w[1], sizeof before) == 0);
                /* the base is not held any more */
                ASSERT_OPT_OK(r.o, optim_save_buffer(r.o, &buf, &size));
                free(buf);
                ASSERT_OPT_OK(r.o, optim_step(r.o));
                /* and a new SAM can wrap it */
                ASSERT_OK(optim_sam_create(&r.sam, r.o, 0.1, 2.0, 0, 0.0, NULL));
                ASSERT_OK(optim_sam_first_step(r.sam));
                ASSERT_OK(optim_sam_second_step(r.sam));
            }
            lt_free(&r);
        }
    /* Several SAM objects over one base, freed in every order around it. */
    {
        lt_run r;
        optim_sam *more[3];
        int k;
        if (lt_build(&r)) return 1;
        for (k = 0; k < 3; k++) ASSERT_OK(optim_sam_create(&more[k], r.o, 0.05 * (k + 1), 2.0, 0, 0.0, NULL));
        optim_sam_free(more[1]);
        ASSERT_OK(optim_sam_first_step(more[2]));
        optim_free(r.o);
        r.o = NULL;
        ASSERT_ERR(optim_sam_restore(more[2]), OPTIM_ESTATE, optim_sam_errmsg(more[2]), "the base optimizer was freed");
        ASSERT_ERR(optim_sam_first_step(more[0]), OPTIM_ESTATE, optim_sam_errmsg(more[0]),
                   "the base optimizer was freed");
        optim_sam_free(more[0]);
        optim_sam_free(more[2]);
        lt_free(&r);
    }
    return 0;
}

/* While a SAM object has its base at w + e, the base refuses what would lose
 * the way back to w or act on the perturbed weights: adding a parameter or a
 * group, a step of its own, a step through another SAM object; checkpoints
 * (ckpt_refused_mid_sam). Each refusal changes nothing, and second_step or
 * restore then completes the step. */
TEST_IMPL(sam_base_changes_while_perturbed)
{
    lt_run r, ref;
    float extra[3] = {1, 2, 3}, gextra[3] = {0};
    optim_hparams hp;
    optim_sam *other = NULL;
    float *pp[2];
    const float *gp[2];
    int k, i;
    if (lt_build(&r) || lt_build(&ref)) return 1;
    ASSERT_OK(optim_sam_create(&other, r.o, 0.3, 2.0, 0, 0.0, NULL));
    ASSERT_OK(optim_sam_first_step(r.sam));
    ASSERT_OK(optim_sam_first_step(ref.sam));
    optim_hparams_init(&hp, OPTIM_SGD, NULL);
    ASSERT_ERR(optim_add_param(r.o, 0, extra, gextra, 3, "late", NULL), OPTIM_ESTATE, optim_errmsg(r.o),
               "optim_add_param: an optim_sam over this optimizer is between first_step and second_step");
    ASSERT_INT(optim_param_count(r.o), ==, 2);
    ASSERT_ERR(optim_add_group(r.o, &hp, NULL), OPTIM_ESTATE, optim_errmsg(r.o), "optim_add_group: an optim_sam");
    ASSERT_INT(optim_group_count(r.o), ==, 1);
    ASSERT_ERR(optim_step(r.o), OPTIM_ESTATE, optim_errmsg(r.o), "optim_step: an optim_sam");
    pp[0] = extra;
    pp[1] = r.w[1];
    gp[0] = gextra;
    gp[1] = r.g[1];
    ASSERT_ERR(optim_step_with(r.o, 2, pp, gp), OPTIM_ESTATE, optim_errmsg(r.o), "optim_step_with: an optim_sam");
    {
        optim_param_info info;
        ASSERT_OPT_OK(r.o, optim_param_get_info(r.o, 0, &info));
        ASSERT(info.param == r.w[0]); /* not rebound */
    }
    ASSERT_ERR(optim_sam_first_step(other), OPTIM_ESTATE, optim_sam_errmsg(other),
               "another optim_sam over the base optimizer is between first_step and second_step");
    ASSERT_ERR(optim_sam_second_step(other), OPTIM_ESTATE, optim_sam_errmsg(other), "no first_step to complete");
    ASSERT_INT(optim_step_count(r.o), ==, 0);
    /* the step completes as if nothing had been tried */
    lt_second_grad(&r);
    lt_second_grad(&ref);
    ASSERT_OK_MSG(optim_sam_second_step(r.sam), optim_sam_errmsg(r.sam));
    ASSERT_OK(optim_sam_second_step(ref.sam));
    for (k = 0; k < 2; k++) ASSERT(memcmp(r.w[k], ref.w[k], LT_N * sizeof(float)) == 0);
    /* not perturbed: all of it is allowed again, and first_step of the new shape is refused, not stuck */
    ASSERT_OPT_OK(r.o, optim_add_param(r.o, 0, extra, gextra, 3, "late", NULL));
    ASSERT_ERR(optim_sam_first_step(r.sam), OPTIM_ESTATE, optim_sam_errmsg(r.sam), "has 3 params but had 2");
    ASSERT_OPT_OK(r.o, optim_step(r.o));
    /* and the base restored by restore() after the refusals too */
    optim_sam_free(r.sam);
    r.sam = NULL;
    ASSERT_OK(optim_sam_create(&r.sam, r.o, 0.1, 2.0, 0, 0.0, NULL));
    memcpy(ref.w[0], r.w[0], LT_N * sizeof(float));
    ASSERT_OK(optim_sam_first_step(r.sam));
    ASSERT_ERR(optim_add_group(r.o, &hp, NULL), OPTIM_ESTATE, optim_errmsg(r.o), "optim_add_group");
    ASSERT_OK(optim_sam_restore(r.sam));
    for (i = 0; i < LT_N; i++) ASSERT(r.w[0][i] == ref.w[0][i]);
    ASSERT_OPT_OK(r.o, optim_add_group(r.o, &hp, NULL));
    /* A first_step skipped for a NaN gradient moved nothing and holds nothing: the base may change, and
     * second_step still completes the (skipped) step, counted once. */
    optim_sam_free(r.sam);
    r.sam = NULL;
    ASSERT_OK(optim_sam_create(&r.sam, r.o, 0.1, 2.0, 0, 0.0, NULL));
    ASSERT_OPT_OK(r.o, optim_set_nonfinite(r.o, OPTIM_NONFINITE_SKIP));
    r.g[0][3] = NAN;
    memcpy(ref.w[0], r.w[0], LT_N * sizeof(float));
    ASSERT_OK(optim_sam_first_step(r.sam));
    ASSERT(!optim_sam_is_perturbed(r.sam));
    ASSERT_OPT_OK(r.o, optim_add_param(r.o, 0, ref.w[1], NULL, LT_N, "later", NULL));
    ASSERT_OK_MSG(optim_sam_second_step(r.sam), optim_sam_errmsg(r.sam));
    ASSERT_INT(optim_skipped_steps(r.o), ==, 1);
    ASSERT(memcmp(ref.w[0], r.w[0], LT_N * sizeof(float)) == 0);
    ASSERT_ERR(optim_sam_first_step(r.sam), OPTIM_ESTATE, optim_sam_errmsg(r.sam), "has 4 params but had 3");
    optim_sam_free(other);
    lt_free(&r);
    lt_free(&ref);
    return 0;
}
