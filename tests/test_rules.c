/* test_rules.c: every rule, every option combination of its grid, against
 * the double-precision reference; every CPU path and thread count against the
 * scalar path, bit for bit. */
#include "grid.h"
#include "ref.h"
#include "test.h"

#define STEPS 300

/* Parameters and gradients of a run: p0 ~ N(0, 1); the gradient of element
 * i at step t is N(mu_i, 1) with a fixed per-element mean mu_i ~ N(0, 0.5),
 * so that moments build up as in training. Independent of the parameters, so
 * that float and double runs see the same inputs. */
typedef struct run_data {
    size_t n;
    float *p0;
    float *mean;
} run_data;

static int run_data_init(run_data *d, size_t n, test_rng *rng)
{
    size_t i;
    d->n = n;
    d->p0 = (float *)malloc(n * sizeof(float));
    d->mean = (float *)malloc(n * sizeof(float));
    if (!d->p0 || !d->mean) return -1;
    for (i = 0; i < n; i++) {
        d->p0[i] = (float)test_rng_normal(rng);
        d->mean[i] = (float)(0.5 * test_rng_normal(rng));
    }
    return 0;
}

static void run_data_free(run_data *d)
{
    free(d->p0);
    free(d->mean);
}

static void make_grad(const run_data *d, test_rng *rng, float *g)
{
    size_t i;
    for (i = 0; i < d->n; i++) g[i] = d->mean[i] + (float)test_rng_normal(rng);
}

/*
 * Is the float result close to the double reference? Before every step the
 * reference is synchronised to the library's float state, so what is compared
 * is one step of float arithmetic against the same step in double: rounding
 * does not accumulate, and chaotic runs (maximize with decay) stay
 * comparable. The error of element i is |a - r| / max(|r|, |before|, 1e-3 S):
 * `before` is the element's value before the step (every new value is the old
 * one plus or times something, so a result that cancels to near zero carries
 * the rounding of the old value's magnitude, not of its own), and S is the
 * largest magnitude in the array (a value near zero can also inherit the
 * rounding of the terms that produced it, like a momentum buffer made of
 * gradients of both signs). A wrong formula (missing bias correction, eps in
 * the wrong place: the grid uses a large eps so that placement matters) is
 * off by far more than this within a few steps; one step of float rounding
 * stays below 1e-5.
 */
#define REF_TOL 1e-5

static double worst_error(const float *a, const double *r, const double *before, size_t n, size_t *where)
{
    double worst = 0, scale = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        if (fabs(r[i]) > scale) scale = fabs(r[i]);
        if (fabs(before[i]) > scale) scale = fabs(before[i]);
    }
    for (i = 0; i < n; i++) {
        double floor = fabs(r[i]) > fabs(before[i]) ? fabs(r[i]) : fabs(before[i]);
        if (floor < 1e-3 * scale) floor = 1e-3 * scale;
        double e = fabs((double)a[i] - r[i]) / (floor + 1e-30);
        if (!(e <= worst)) { /* also catches NaN */
            worst = isnan(e) ? INFINITY : e;
            *where = i;
        }
    }
    return worst;
}

/* Compare parameters and every slot; print the worst element on failure. */
static int compare_with_ref(const char *what, const optim_hparams *hp, int step, const float *p, const double *pr,
                            size_t n, const optim_state *st, const ref_state *rs, double *const *before,
                            double *worst_seen)
{
    char desc[256];
    size_t where = 0;
    double e = worst_error(p, pr, before[0], n, &where);
    unsigned slots = optim_hparams_slots(hp);
    int s;
    if (worst_seen && e > *worst_seen) *worst_seen = e;
    if (e > REF_TOL)
        FAIL("%s: %s, step %d, n %zu: param[%zu] = %.9g vs reference %.9g (error %.3g > %.0e)", what,
             grid_describe(hp, desc, sizeof desc), step, n, where, p[where], pr[where], e, REF_TOL);
    for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
        const double *rr;
        if (!((slots >> s) & 1u)) continue;
        rr = ref_slot(rs, hp->rule, s);
        if (!rr) FAIL("no reference for slot %d of %s", s, optim_rule_name(hp->rule));
        e = worst_error(st->slot[s], rr, before[1 + s], n, &where);
        if (worst_seen && e > *worst_seen) *worst_seen = e;
        if (e > REF_TOL)
            FAIL("%s: %s, step %d, n %zu: %s[%zu] = %.9g vs reference %.9g (error %.3g)", what,
                 grid_describe(hp, desc, sizeof desc), step, n, optim_rule_slot_name(hp->rule, s), where,
                 st->slot[s][where], rr[where], e);
    }
    return 0;
}

/* Run one configuration through optim_update and the reference, comparing
 * every step. lr_at(step) may change the learning rate between steps (NULL:
 * constant). */
static int run_against_ref(const optim_hparams *hp0, size_t n, test_rng *rng, double (*lr_at)(int, double),
                           double *worst_seen)
{
    optim_hparams hp = *hp0;
    run_data d;
    ref_state rs;
    optim_state st;
    float *p, *g;
    double *pr, *before[1 + OPTIM_MAX_SLOTS];
    optim_error err;
    size_t i;
    int s, t, rc = 0;

    if (run_data_init(&d, n, rng) || ref_init(&rs, &hp, n)) FAIL("out of memory");
    p = (float *)malloc(n * sizeof(float));
    g = (float *)malloc(n * sizeof(float));
    pr = (double *)malloc(n * sizeof(double));
    memset(&st, 0, sizeof st);
    for (s = 0; s < OPTIM_MAX_SLOTS; s++) st.slot[s] = (float *)malloc(n * sizeof(float));
    for (s = 0; s <= OPTIM_MAX_SLOTS; s++) before[s] = (double *)calloc(n, sizeof(double));
    if (!p || !g || !pr) FAIL("out of memory");
    for (i = 0; i < n; i++) {
        p[i] = d.p0[i];
        pr[i] = d.p0[i];
    }
    ASSERT_OK_MSG(optim_state_init(&hp, n, &st, &err), err.message);
    for (t = 1; t <= STEPS && rc == 0; t++) {
        double lr = lr_at ? lr_at(t, hp0->lr) : hp0->lr;
        hp.lr = lr;
        make_grad(&d, rng, g);
        ref_sync(&rs, &hp, pr, p, &st);
        memcpy(before[0], pr, n * sizeof(double));
        for (s = 0; s < OPTIM_MAX_SLOTS; s++)
            if (ref_slot(&rs, hp.rule, s)) memcpy(before[1 + s], ref_slot(&rs, hp.rule, s), n * sizeof(double));
        rc = optim_update(&hp, n, p, g, &st, &err);
        if (rc != OPTIM_OK) {
            fprintf(stderr, "optim_update failed: %s\n", err.message);
            break;
        }
        ref_step(&hp, lr, pr, g, &rs);
        if (st.step != t) {
            fprintf(stderr, "step counter %lld after %d steps\n", (long long)st.step, t);
            rc = 1;
        }
        if (rc == 0) rc = compare_with_ref("optim_update", &hp, t, p, pr, n, &st, &rs, before, worst_seen);
    }
    for (s = 0; s < OPTIM_MAX_SLOTS; s++) free(st.slot[s]);
    for (s = 0; s <= OPTIM_MAX_SLOTS; s++) free(before[s]);
    free(p);
    free(g);
    free(pr);
    ref_free(&rs);
    run_data_free(&d);
    return rc;
}

TEST_IMPL(rules_vs_reference)
{
    /* Sizes that matter for vector tails are tested bit for bit against the
     * scalar path below; here the math is what is tested. */
    static const size_t sizes[] = {1000};
    test_rng rng = {test_seed()};
    int r;
    for (r = 1; r <= OPTIM_RULE_COUNT; r++) {
        const grid *gr = grid_for(r);
        long c, valid = 0;
        double worst = 0;
        for (c = 0; c < grid_size(gr); c++) {
            optim_hparams hp;
            size_t z;
            if (grid_get(gr, c, &hp) != 0) continue;
            valid++;
            for (z = 0; z < sizeof sizes / sizeof sizes[0]; z++)
                if (run_against_ref(&hp, sizes[z], &rng, NULL, &worst)) return 1;
        }
        printf("  %-9s %4ld option combinations x %d steps: worst error %.2e\n", optim_rule_name(gr->rule), valid,
               STEPS, worst);
        ASSERT(valid > 0);
    }
    return 0;
}

/* The learning rate changes every 20 steps, as a schedule would. */
static double lr_wave(int t, double lr0)
{
    return lr0 * (1.0 + 0.5 * sin(t / 20));
}

/* The hyperparameters the grid keeps at their defaults: beta1 of every
 * Adam-family rule (0 = no first moment, 0.5, 0.99) with beta2 and AMSGrad
 * varied beside it, and AdaBound's final_lr and initial_lr. */
TEST_IMPL(rules_betas_vs_reference)
{
    static const optim_rule rules[] = {OPTIM_ADAM, OPTIM_ADAMW, OPTIM_RADAM, OPTIM_NADAM, OPTIM_ADABOUND};
    static const double beta1s[] = {0.0, 0.5, 0.99}, beta2s[] = {0.9, 0.999};
    test_rng rng = {test_seed() ^ 0xbe7a};
    size_t r, a, b;
    int ams;
    for (r = 0; r < sizeof rules / sizeof rules[0]; r++)
        for (a = 0; a < 3; a++)
            for (b = 0; b < 2; b++)
                for (ams = 0; ams <= 1; ams++) {
                    optim_hparams hp;
                    ASSERT_OK(optim_hparams_init(&hp, rules[r], NULL));
                    hp.lr = 0.01;
                    hp.beta1 = beta1s[a];
                    hp.beta2 = beta2s[b];
                    if (ams && optim_rule_uses(rules[r], OPTIM_HP_AMSGRAD)) hp.amsgrad = 1;
                    else if (ams) continue;
                    if (run_against_ref(&hp, 257, &rng, NULL, NULL)) return 1;
                }
    {
        static const double final_lrs[] = {0.0, 0.01, 1.0}, initial_lrs[] = {0.0, 0.001, 0.1};
        for (a = 0; a < 3; a++)
            for (b = 0; b < 3; b++) {
                optim_hparams hp;
                ASSERT_OK(optim_hparams_init(&hp, OPTIM_ADABOUND, NULL));
                hp.lr = 0.01;
                hp.final_lr = final_lrs[a];
                hp.initial_lr = initial_lrs[b];
                /* With initial_lr = 0 the stateless kernel scales by the lr of each call (so by 1): the lr
                 * may change only where initial_lr is given (optim.h). */
                if (run_against_ref(&hp, 257, &rng, hp.initial_lr > 0 ? lr_wave : NULL, NULL)) return 1;
            }
    }
    return 0;
}

TEST_IMPL(rules_lr_change_vs_reference)
{
    test_rng rng = {test_seed() ^ 0x1234};
    int r;
    for (r = 1; r <= OPTIM_RULE_COUNT; r++) {
        optim_hparams hp;
        ASSERT_OK(grid_get(grid_for(r), 0, &hp));
        if (hp.rule == OPTIM_ADABOUND) hp.initial_lr = hp.lr;
        if (run_against_ref(&hp, 257, &rng, lr_wave, NULL)) return 1;
    }
    return 0;
}

/* ---- Every path and thread count gives the scalar path's bits ----------------- */

typedef struct model {
    size_t count;
    size_t n[6];
    float *p[6], *g[6];
    float *s[6][OPTIM_MAX_SLOTS]; /* state after the run */
} model;

static int model_init(model *m, const size_t *sizes, size_t count, test_rng *rng)
{
    size_t i, j;
    m->count = count;
    for (i = 0; i < count; i++) {
        m->n[i] = sizes[i];
        m->p[i] = (float *)malloc(sizes[i] * sizeof(float) + 64);
        m->g[i] = (float *)malloc(sizes[i] * sizeof(float) + 64);
        if (!m->p[i] || !m->g[i]) return -1;
        for (j = 0; j < OPTIM_MAX_SLOTS; j++)
            if (!(m->s[i][j] = (float *)malloc(sizes[i] * sizeof(float) + 64))) return -1;
        for (j = 0; j < sizes[i]; j++) m->p[i][j] = (float)test_rng_normal(rng);
    }
    return 0;
}

static void model_free(model *m)
{
    size_t i;
    size_t j;
    for (i = 0; i < m->count; i++) {
        free(m->p[i]);
        free(m->g[i]);
        for (j = 0; j < OPTIM_MAX_SLOTS; j++) free(m->s[i][j]);
    }
}

/* Run `steps` steps of hp on a copy of `init` with the given path and threads;
 * the parameters and every state slot go to out (unallocated slots as 0). */
static int run_path(const optim_hparams *hp, const model *init, optim_isa isa, int threads, int steps, uint64_t seed,
                    model *out)
{
    optim *o = NULL;
    test_rng rng = {seed};
    size_t i, j;
    int t;
    ASSERT_OK(optim_create(&o, hp->rule));
    ASSERT_OPT_OK(o, optim_add_group(o, hp, NULL));
    ASSERT_OPT_OK(o, optim_set_isa(o, isa));
    ASSERT_OPT_OK(o, optim_set_threads(o, threads));
    for (i = 0; i < init->count; i++) {
        memcpy(out->p[i], init->p[i], init->n[i] * sizeof(float));
        ASSERT_OPT_OK(o, optim_add_param(o, 0, out->p[i], out->g[i], init->n[i], NULL, NULL));
    }
    for (t = 0; t < steps; t++) {
        for (i = 0; i < init->count; i++)
            for (j = 0; j < init->n[i]; j++) out->g[i][j] = (float)test_rng_normal(&rng);
        ASSERT_OPT_OK(o, optim_step(o));
    }
    for (i = 0; i < init->count; i++) {
        int sl;
        for (sl = 0; sl < OPTIM_MAX_SLOTS; sl++) {
            float *data = NULL;
            if (sl < optim_rule_slot_count(hp->rule)) ASSERT_OPT_OK(o, optim_state_slot(o, i, sl, &data, NULL));
            if (data)
                memcpy(out->s[i][sl], data, init->n[i] * sizeof(float));
            else
                memset(out->s[i][sl], 0, init->n[i] * sizeof(float));
        }
    }
    optim_free(o);
    return 0;
}

/* Compare the first n[i] elements of each tensor of a and b, n from `sizes`. */
static int same_bits(const model *sizes, const model *a, const model *b, const char *what, const optim_hparams *hp)
{
    size_t i, j;
    int sl;
    char desc[256];
    for (i = 0; i < a->count; i++) {
        for (sl = -1; sl < OPTIM_MAX_SLOTS; sl++) {
            const float *x = sl < 0 ? a->p[i] : a->s[i][sl], *y = sl < 0 ? b->p[i] : b->s[i][sl];
            if (memcmp(x, y, sizes->n[i] * sizeof(float)) == 0) continue;
            for (j = 0; j < sizes->n[i] && !memcmp(&x[j], &y[j], sizeof(float)); j++) continue;
            FAIL("%s: %s: tensor %zu (n %zu), %s%s, element %zu: %.9g vs scalar path %.9g", what,
                 grid_describe(hp, desc, sizeof desc), i, sizes->n[i], sl < 0 ? "param" : "slot ",
                 sl < 0 ? "" : optim_rule_slot_name(hp->rule, sl), j, y[j], x[j]);
        }
    }
    return 0;
}

TEST_IMPL(paths_bit_identical)
{
    static const size_t small[] = {1, 7, 1000, 4099, 33};
    static const size_t big[] = {1, 7, 1000, 65537, 40000};
    static const optim_isa isas[] = {OPTIM_ISA_AVX2, OPTIM_ISA_AVX512, OPTIM_ISA_NEON};
    test_rng rng = {test_seed() ^ 0xb175};
    model init_small, init_big, ref, got;
    int r;
    size_t k;
    printf("  paths available:");
    for (k = 0; k < sizeof isas / sizeof isas[0]; k++)
        if (optim_isa_available(isas[k])) printf(" %s", optim_isa_name(isas[k]));
    printf(" (and scalar)\n");
    if (model_init(&init_small, small, 5, &rng) || model_init(&init_big, big, 5, &rng) ||
        model_init(&ref, big, 5, &rng) || model_init(&got, big, 5, &rng))
        FAIL("out of memory");
    for (r = 1; r <= OPTIM_RULE_COUNT; r++) {
        const grid *gr = grid_for(r);
        long c;
        for (c = 0; c < grid_size(gr); c++) {
            optim_hparams hp;
            if (grid_get(gr, c, &hp) != 0) continue;
            /* Every option combination: each vector path against scalar, one thread, small tensors. */
            if (run_path(&hp, &init_small, OPTIM_ISA_SCALAR, 1, 12, test_seed() + (uint64_t)c, &ref)) return 1;
            for (k = 0; k < sizeof isas / sizeof isas[0]; k++) {
                if (!optim_isa_available(isas[k])) continue;
                if (run_path(&hp, &init_small, isas[k], 1, 12, test_seed() + (uint64_t)c, &got)) return 1;
                if (same_bits(&init_small, &ref, &got, optim_isa_name(isas[k]), &hp)) return 1;
            }
            /* First and last combination: every path and thread count on tensors large enough to split. */
            if (c == 0 || c == grid_size(gr) - 1) {
                static const int threads[] = {2, 3, 0};
                size_t th;
                if (run_path(&hp, &init_big, OPTIM_ISA_SCALAR, 1, 4, test_seed(), &ref)) return 1;
                for (th = 0; th < 3; th++) {
                    if (run_path(&hp, &init_big, OPTIM_ISA_SCALAR, threads[th], 4, test_seed(), &got)) return 1;
                    if (same_bits(&init_big, &ref, &got, "scalar threads", &hp)) return 1;
                    for (k = 0; k < sizeof isas / sizeof isas[0]; k++) {
                        if (!optim_isa_available(isas[k])) continue;
                        if (run_path(&hp, &init_big, isas[k], threads[th], 4, test_seed(), &got)) return 1;
                        if (same_bits(&init_big, &ref, &got, optim_isa_name(isas[k]), &hp)) return 1;
                    }
                }
            }
        }
    }
    model_free(&init_small);
    model_free(&init_big);
    model_free(&ref);
    model_free(&got);
    return 0;
}
