/* test_rules.c: every rule, every option combination of its grid, against
 * the double-precision reference, in float32 and float64. (Every CPU path and
 * thread count against the scalar path, bit for bit: test_paths.c.) */
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

/* a[i] as a double: a points at floats (f64 = 0) or doubles (f64 = 1). */
static double elem(const void *a, int f64, size_t i)
{
    return f64 ? ((const double *)a)[i] : ((const float *)a)[i];
}

static double worst_error_any(const void *a, int f64, const double *r, const double *before, size_t n, size_t *where)
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
        double e = fabs(elem(a, f64, i) - r[i]) / (floor + 1e-30);
        if (!(e <= worst)) { /* also catches NaN */
            worst = isnan(e) ? INFINITY : e;
            *where = i;
        }
    }
    return worst;
}

static double worst_error(const float *a, const double *r, const double *before, size_t n, size_t *where)
{
    return worst_error_any(a, 0, r, before, n, where);
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
        rr = ref_slot(rs, s);
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
            if (ref_slot(&rs, s)) memcpy(before[1 + s], ref_slot(&rs, s), n * sizeof(double));
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
        const grid *gr;
        long c, valid = 0;
        double worst = 0;
        if (!test_rule_dense(r)) continue;
        gr = grid_for(r);
        for (c = 0; c < grid_size(gr); c++) {
            optim_hparams hp;
            size_t z;
#if defined(__SANITIZE_ADDRESS__)
            if (c % 4 != 0) continue; /* the sanitizer build looks for memory errors: every fourth combination */
#endif
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

/* float64: one step of the library's double arithmetic against the same
 * step of the reference in double, every option combination of every rule.
 * Only the operation order differs (torch's, against the formulas'), so the
 * tolerance is a few hundred ulps of double where float32's is 1e-5. */
#define REF_TOL64 1e-14

static int run_against_ref64(const optim_hparams *hp, size_t n, test_rng *rng, double *worst_seen)
{
    run_data d;
    ref_state rs;
    optim_state st;
    double *p, *g, *pr, *before[1 + OPTIM_MAX_SLOTS], *slot[OPTIM_MAX_SLOTS];
    optim_error err;
    size_t i, where = 0;
    int s, t, rc = 0;
    char desc[256];
    if (run_data_init(&d, n, rng) || ref_init(&rs, hp, n)) FAIL("out of memory");
    p = (double *)malloc(n * sizeof(double));
    g = (double *)malloc(n * sizeof(double));
    pr = (double *)malloc(n * sizeof(double));
    if (!p || !g || !pr) FAIL("out of memory");
    memset(&st, 0, sizeof st);
    for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
        slot[s] = (double *)malloc(n * sizeof(double));
        st.slot[s] = (float *)(void *)slot[s]; /* optim_update_typed: slots of the state type */
    }
    for (s = 0; s <= OPTIM_MAX_SLOTS; s++) before[s] = (double *)calloc(n, sizeof(double));
    for (i = 0; i < n; i++) p[i] = pr[i] = d.p0[i] + 1e-9 * d.mean[i]; /* not a float: all 53 bits in play */
    ASSERT_OK_MSG(optim_state_init_typed(hp, n, OPTIM_FLOAT64, &st, &err), err.message);
    for (t = 1; t <= STEPS && rc == 0; t++) {
        double e;
        for (i = 0; i < n; i++) g[i] = d.mean[i] + test_rng_normal(rng) * (1 + 1e-9);
        ref_sync64(&rs, hp, pr, p, &st);
        memcpy(before[0], pr, n * sizeof(double));
        for (s = 0; s < OPTIM_MAX_SLOTS; s++)
            if (ref_slot(&rs, s)) memcpy(before[1 + s], ref_slot(&rs, s), n * sizeof(double));
        rc = optim_update_typed(hp, n, p, OPTIM_FLOAT64, g, OPTIM_FLOAT64, &st, &err);
        if (rc != OPTIM_OK) {
            fprintf(stderr, "optim_update_typed failed: %s\n", err.message);
            break;
        }
        ref_step64(hp, hp->lr, pr, g, &rs);
        e = worst_error_any(p, 1, pr, before[0], n, &where);
        if (e > *worst_seen) *worst_seen = e;
        if (e > REF_TOL64) {
            fprintf(stderr, "float64: %s, step %d: param[%zu] = %.17g vs reference %.17g (error %.3g > %.0e)\n",
                    grid_describe(hp, desc, sizeof desc), t, where, p[where], pr[where], e, REF_TOL64);
            rc = 1;
        }
        for (s = 0; s < OPTIM_MAX_SLOTS && rc == 0; s++) {
            const double *rr;
            if (!((optim_hparams_slots(hp) >> s) & 1u)) continue;
            rr = ref_slot(&rs, s);
            e = worst_error_any(slot[s], 1, rr, before[1 + s], n, &where);
            if (e > *worst_seen) *worst_seen = e;
            if (e > REF_TOL64) {
                fprintf(stderr, "float64: %s, step %d: %s[%zu] = %.17g vs reference %.17g (error %.3g)\n",
                        grid_describe(hp, desc, sizeof desc), t, optim_rule_slot_name(hp->rule, s), where,
                        slot[s][where], rr[where], e);
                rc = 1;
            }
        }
    }
    for (s = 0; s < OPTIM_MAX_SLOTS; s++) free(slot[s]);
    for (s = 0; s <= OPTIM_MAX_SLOTS; s++) free(before[s]);
    free(p);
    free(g);
    free(pr);
    ref_free(&rs);
    run_data_free(&d);
    return rc;
}

TEST_IMPL(rules_f64_vs_reference)
{
    test_rng rng = {test_seed() ^ 0xf64};
    int r;
    for (r = 1; r <= OPTIM_RULE_COUNT; r++) {
        const grid *gr;
        long c, valid = 0;
        double worst = 0;
        if (!test_rule_dense(r)) continue;
        gr = grid_for(r);
        for (c = 0; c < grid_size(gr); c++) {
            optim_hparams hp;
#if defined(__SANITIZE_ADDRESS__)
            if (c % 4 != 0) continue; /* the sanitizer build looks for memory errors: every fourth combination */
#endif
            if (grid_get(gr, c, &hp) != 0) continue;
            valid++;
            if (run_against_ref64(&hp, 257, &rng, &worst)) return 1;
        }
        printf("  %-9s %4ld option combinations x %d steps in float64: worst error %.2e\n",
               optim_rule_name(gr->rule), valid, STEPS, worst);
        ASSERT(valid > 0);
    }
    return 0;
}

TEST_IMPL(rules_lr_change_vs_reference)
{
    test_rng rng = {test_seed() ^ 0x1234};
    int r;
    for (r = 1; r <= OPTIM_RULE_COUNT; r++) {
        optim_hparams hp;
        if (!test_rule_dense(r)) continue;
        ASSERT_OK(grid_get(grid_for(r), 0, &hp));
        if (hp.rule == OPTIM_ADABOUND) hp.initial_lr = hp.lr;
        if (run_against_ref(&hp, 257, &rng, lr_wave, NULL)) return 1;
    }
    return 0;
}

/* Every rule of the list has a grid (tests/grid.c) and a reference
 * (tests/ref.c), and its name round-trips: a rule added without them fails
 * here by name. */
TEST_IMPL(rules_listed)
{
    int r;
    for (r = 1; r <= OPTIM_RULE_COUNT; r++) {
        const grid *gr;
        optim_hparams hp;
        long c;
        if (!optim_rule_name((optim_rule)r)) continue; /* a value reserved for another branch's rule */
        if (!test_rule_dense(r)) {
            /* SparseAdam: no dense steps; its reference and paths are tests/test_sparse.c's. Muon: 2-D
             * parameters and liboptim_muon; its reference and paths are tests/test_muon.c's. */
            ASSERT_INT(optim_rule_from_name(optim_rule_name((optim_rule)r)), ==, r);
            printf("  %-9s %s\n", optim_rule_name((optim_rule)r),
                   r == OPTIM_MUON ? "2-D parameters, liboptim_muon: tests/test_muon.c"
                                   : "sparse gradients only: tests/test_sparse.c");
            continue;
        }
        gr = grid_for(r); /* ends the test with a message if the grid is missing or unsound */
        if (!optim_rule_name((optim_rule)r)) FAIL("rule %d has no name", r);
        ASSERT_INT(optim_rule_from_name(optim_rule_name((optim_rule)r)), ==, r);
        if (!ref_has((optim_rule)r)) FAIL("rule %d (%s) has no reference in tests/ref.c", r, optim_rule_name((optim_rule)r));
        c = grid_last_valid(gr, &hp);
        if (c < 0) FAIL("rule %s: no valid option combination in its grid", optim_rule_name((optim_rule)r));
        printf("  %-9s grid of %d axes, %ld combinations, reference present\n", optim_rule_name((optim_rule)r),
               gr->naxes, grid_size(gr));
    }
    ASSERT(!ref_has((optim_rule)0) && !ref_has((optim_rule)(OPTIM_RULE_COUNT + 1)));
    return 0;
}

/* LAMB's trust ratio is ||p|| / ||u|| of the update it applies, u computed from
 * the moments as stored: with bfloat16 state, pass 1 stores the moments and
 * reads them back before summing (rule.h). Checked from the outside: after a
 * step, the new parameters must be p - lr r u with u recomputed in double from
 * the stored bfloat16 moments and the old p, r = ||p|| / ||u||, over a tensor
 * of three reduction blocks, with one and two threads. A ratio from the
 * unrounded moments is off by ~1e-3 of the step. */
TEST_IMPL(lamb_ratio_of_stored_state)
{
    enum { N = 20000 };
    static float p[N], g[N], p0[N];
    test_rng rng = {test_seed()};
    int threads;
    for (threads = 1; threads <= 2; threads++) {
        optim *o = NULL;
        optim_hparams hp;
        const uint16_t *m, *v;
        void *dm, *dv;
        double wn = 0, un = 0, r, bc1 = 1 - 0.9, bc2 = 1 - 0.999, worst = 0, fit;
        size_t i;
        optim_hparams_init(&hp, OPTIM_LAMB, NULL);
        hp.lr = 0.01;
        hp.always_adapt = 1;
        for (i = 0; i < N; i++) {
            p[i] = p0[i] = (float)test_rng_normal(&rng);
            g[i] = (float)(0.3 + test_rng_normal(&rng));
        }
        ASSERT_OK(optim_create(&o, OPTIM_LAMB));
        ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
        ASSERT_OPT_OK(o, optim_set_threads(o, threads));
        ASSERT_OPT_OK(o, optim_add_param_ex(o, 0, p, OPTIM_FLOAT32, g, OPTIM_FLOAT32, N, OPTIM_BFLOAT16, 0, NULL, NULL));
        ASSERT_OPT_OK(o, optim_step(o));
        ASSERT_OPT_OK(o, optim_state_slot_data(o, 0, 0, &dm, NULL, NULL));
        ASSERT_OPT_OK(o, optim_state_slot_data(o, 0, 1, &dv, NULL, NULL));
        m = (const uint16_t *)dm;
        v = (const uint16_t *)dv;
        for (i = 0; i < N; i++) {
            uint32_t bm = (uint32_t)m[i] << 16, bv = (uint32_t)v[i] << 16;
            float fm, fv;
            double u;
            memcpy(&fm, &bm, 4);
            memcpy(&fv, &bv, 4);
            u = (fm / bc1) / (sqrt(fv) / sqrt(bc2) + hp.eps) + hp.weight_decay * p0[i];
            wn += (double)p0[i] * p0[i];
            un += u * u;
        }
        r = sqrt(wn) / sqrt(un);
        {
            /* The ratio the step applied, fitted over every element (least squares of p0 - p = lr r u):
             * each element's float rounding averages out, the ratio's own error does not. Then each element. */
            double num = 0, den = 0;
            for (i = 0; i < N; i++) {
                uint32_t bm = (uint32_t)m[i] << 16, bv = (uint32_t)v[i] << 16;
                float fm, fv;
                double u, want, e;
                memcpy(&fm, &bm, 4);
                memcpy(&fv, &bv, 4);
                u = (fm / bc1) / (sqrt(fv) / sqrt(bc2) + hp.eps) + hp.weight_decay * p0[i];
                num += ((double)p0[i] - p[i]) * u;
                den += hp.lr * u * u;
                want = p0[i] - hp.lr * r * u;
                /* relative to the step: one float rounding of p (6e-8 |p|) over a step of ~0.01 */
                e = fabs(p[i] - want) / (hp.lr * r * fabs(u) + 1e-7 * fabs(p0[i]) + 1e-30);
                if (e > worst) worst = e;
            }
            fit = fabs(num / den / r - 1);
        }
        optim_free(o);
        printf("  lamb, bfloat16 state, %d thread(s), %d elements: the ratio applied is %.3g from that of the stored "
               "moments; worst element %.3g of the step\n", threads, N, fit, worst);
        ASSERT(worst < 1e-4);
        ASSERT(fit < 1e-6);
    }
    return 0;
}
