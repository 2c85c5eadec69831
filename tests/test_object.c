/* test_object.c: the optimizer object: groups, parameters, skipping, state
 * access, rebinding, options switched on mid-run, and its errors. */
#include "grid.h"
#include "optim_checkpoint.h"
#include "test.h"

static void fill(float *x, size_t n, test_rng *rng, double scale)
{
    size_t i;
    for (i = 0; i < n; i++) x[i] = (float)(scale * test_rng_normal(rng));
}

/* The object's step equals optim_update on each parameter, bit for bit. */
TEST_IMPL(object_matches_update)
{
    enum { N0 = 5, N1 = 1001, N2 = 64 };
    test_rng rng = {test_seed() ^ 0x0b1};
    int r;
    for (r = 1; r <= OPTIM_RULE_COUNT; r++) if (test_rule_dense(r)) {
        optim_hparams hp;
        optim *o = NULL;
        static float p[3][N1], q[3][N1], g[3][N1], st_mem[3][OPTIM_MAX_SLOTS][N1];
        const size_t n[3] = {N0, N1, N2};
        optim_state st[3];
        int i, t, s;
        long c = grid_size(grid_for(r)) - 1;
        while (grid_get(grid_for(r), c, &hp) != 0) c--; /* the last valid combination: most options on */
        ASSERT_OK(optim_create(&o, hp.rule));
        ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
        for (i = 0; i < 3; i++) {
            fill(p[i], n[i], &rng, 1.0);
            memcpy(q[i], p[i], n[i] * sizeof(float));
            ASSERT_OPT_OK(o, optim_add_param(o, 0, p[i], g[i], n[i], NULL, NULL));
            memset(&st[i], 0, sizeof st[i]);
            for (s = 0; s < OPTIM_MAX_SLOTS; s++) st[i].slot[s] = st_mem[i][s];
            ASSERT_OK(optim_state_init(&hp, n[i], &st[i], NULL));
        }
        for (t = 0; t < 20; t++) {
            for (i = 0; i < 3; i++) fill(g[i], n[i], &rng, 1.0);
            ASSERT_OPT_OK(o, optim_step(o));
            for (i = 0; i < 3; i++) ASSERT_OK(optim_update(&hp, n[i], q[i], g[i], &st[i], NULL));
        }
        for (i = 0; i < 3; i++) {
            if (memcmp(p[i], q[i], n[i] * sizeof(float)) != 0)
                FAIL("%s: parameter %d differs between optim_step and optim_update", optim_rule_name(hp.rule), i);
            for (s = 0; s < optim_rule_slot_count(hp.rule); s++) {
                float *data;
                ASSERT_OPT_OK(o, optim_state_slot(o, (size_t)i, s, &data, NULL));
                if (data && memcmp(data, st[i].slot[s], n[i] * sizeof(float)) != 0)
                    FAIL("%s: slot %s of parameter %d differs", optim_rule_name(hp.rule),
                         optim_rule_slot_name(hp.rule, s), i);
            }
        }
        ASSERT_INT(optim_step_count(o), ==, 20);
        optim_free(o);
    }
    return 0;
}

/* Two groups with their own hyperparameters; lr changed between steps. */
TEST_IMPL(object_groups)
{
    test_rng rng = {test_seed() ^ 0x6e0};
    optim_hparams a, b;
    optim *o = NULL;
    float p[2][100], q[2][100], g[2][100], sm[2][3][100];
    optim_state st[2];
    size_t ga, gb, idx;
    double lr;
    int i, t, s;
    optim_hparams_init(&a, OPTIM_ADAM, NULL);
    a.lr = 0.01;
    optim_hparams_init(&b, OPTIM_ADAM, NULL);
    b.lr = 0.1;
    b.amsgrad = 1;
    b.beta1 = 0.5;
    b.weight_decay = 0.1;
    ASSERT_OK(optim_create(&o, OPTIM_ADAM));
    ASSERT_OPT_OK(o, optim_add_group(o, &a, &ga));
    ASSERT_OPT_OK(o, optim_add_group(o, &b, &gb));
    ASSERT_INT(ga, ==, 0);
    ASSERT_INT(gb, ==, 1);
    ASSERT_INT(optim_group_count(o), ==, 2);
    for (i = 0; i < 2; i++) {
        fill(p[i], 100, &rng, 1.0);
        memcpy(q[i], p[i], sizeof p[i]);
        ASSERT_OPT_OK(o, optim_add_param(o, (size_t)i, p[i], g[i], 100, i ? "b.weight" : "a.weight", &idx));
        ASSERT_INT(idx, ==, i);
        memset(&st[i], 0, sizeof st[i]);
        for (s = 0; s < 3; s++) st[i].slot[s] = sm[i][s];
        ASSERT_OK(optim_state_init(i ? &b : &a, 100, &st[i], NULL));
    }
    for (t = 1; t <= 30; t++) {
        for (i = 0; i < 2; i++) fill(g[i], 100, &rng, 1.0);
        if (t % 10 == 0) { /* a schedule would do this */
            ASSERT_OPT_OK(o, optim_group_set_hparam(o, 1, OPTIM_HP_LR, b.lr * 0.5));
            b.lr *= 0.5;
        }
        ASSERT_OPT_OK(o, optim_step(o));
        ASSERT_OK(optim_update(&a, 100, q[0], g[0], &st[0], NULL));
        ASSERT_OK(optim_update(&b, 100, q[1], g[1], &st[1], NULL));
    }
    ASSERT(memcmp(p, q, sizeof p) == 0);
    ASSERT_OK(optim_group_get_hparam(o, 1, OPTIM_HP_LR, &lr));
    ASSERT(lr == b.lr);
    ASSERT_OK(optim_group_get_hparam(o, 0, OPTIM_HP_LR, &lr));
    ASSERT(lr == 0.01);
    {
        optim_param_info info;
        ASSERT_OK(optim_param_get_info(o, 1, &info));
        ASSERT(strcmp(info.name, "b.weight") == 0);
        ASSERT_INT(info.group, ==, 1);
        ASSERT_INT(info.n, ==, 100);
        ASSERT_INT(info.step, ==, 30);
        ASSERT(info.param == p[1] && info.grad == g[1]);
    }
    optim_free(o);
    return 0;
}

/* A parameter without a gradient is left alone and its step does not
 * advance; its first real step is a first step (full bias correction). */
TEST_IMPL(object_skip_null_grad)
{
    test_rng rng = {test_seed() ^ 0x5c1};
    optim_hparams hp;
    optim *o = NULL;
    float p[2][50], g[2][50], before[50], q[50], m[50], v[50];
    optim_state st;
    int64_t step;
    int t;
    optim_hparams_init(&hp, OPTIM_ADAM, NULL);
    ASSERT_OK(optim_create(&o, OPTIM_ADAM));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    fill(p[0], 50, &rng, 1.0);
    fill(p[1], 50, &rng, 1.0);
    memcpy(before, p[1], sizeof before);
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p[0], g[0], 50, NULL, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p[1], NULL, 50, NULL, NULL));
    for (t = 0; t < 5; t++) {
        fill(g[0], 50, &rng, 1.0);
        ASSERT_OPT_OK(o, optim_step(o));
    }
    ASSERT(memcmp(before, p[1], sizeof before) == 0);
    ASSERT_OK(optim_param_get_step(o, 1, &step));
    ASSERT_INT(step, ==, 0);
    ASSERT_OK(optim_param_get_step(o, 0, &step));
    ASSERT_INT(step, ==, 5);
    /* Now it gets a gradient: the same as a fresh optim_update. */
    memset(&st, 0, sizeof st);
    st.slot[0] = m;
    st.slot[1] = v;
    ASSERT_OK(optim_state_init(&hp, 50, &st, NULL));
    memcpy(q, p[1], sizeof q);
    fill(g[1], 50, &rng, 1.0);
    ASSERT_OPT_OK(o, optim_set_grad(o, 1, g[1]));
    ASSERT_OPT_OK(o, optim_step(o));
    ASSERT_OK(optim_update(&hp, 50, q, g[1], &st, NULL));
    ASSERT(memcmp(q, p[1], sizeof q) == 0);
    ASSERT_OK(optim_param_get_step(o, 1, &step));
    ASSERT_INT(step, ==, 1);
    optim_free(o);
    return 0;
}

/* Options that need state can be switched on between steps: the new slot
 * starts as torch would start it at a first step. */
TEST_IMPL(object_options_switched_on)
{
    optim *o = NULL;
    optim_hparams hp;
    float p[4] = {1, 2, 3, 4}, g[4] = {0.5f, -0.5f, 0.25f, 1}, *buf;
    int init;
    /* SGD: momentum off, then on: the buffer is a copy of the first gradient it sees. */
    optim_hparams_init(&hp, OPTIM_SGD, NULL);
    hp.lr = 0.1;
    ASSERT_OK(optim_create(&o, OPTIM_SGD));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p, g, 4, "w", NULL));
    ASSERT_OPT_OK(o, optim_state_slot(o, 0, 0, &buf, &init));
    ASSERT(buf == NULL);
    ASSERT_OPT_OK(o, optim_step(o));
    ASSERT_OPT_OK(o, optim_group_set_hparam(o, 0, OPTIM_HP_MOMENTUM, 0.9));
    ASSERT_OPT_OK(o, optim_state_slot(o, 0, 0, &buf, &init));
    ASSERT(buf != NULL);
    ASSERT_INT(init, ==, 0);
    ASSERT_OPT_OK(o, optim_step(o));
    ASSERT_OPT_OK(o, optim_state_slot(o, 0, 0, &buf, &init));
    ASSERT_INT(init, ==, 1);
    ASSERT(memcmp(buf, g, sizeof g) == 0);
    ASSERT(p[0] == 1.0f - 0.1f * 0.5f - 0.1f * 0.5f);
    /* nesterov and momentum together need one call; one at a time is refused and changes nothing. */
    ASSERT_OPT_OK(o, optim_group_set_hparam(o, 0, OPTIM_HP_MOMENTUM, 0));
    ASSERT_ERR(optim_group_set_hparam(o, 0, OPTIM_HP_NESTEROV, 1), OPTIM_EINVAL, optim_errmsg(o),
               "nesterov = 1 requires momentum > 0");
    {
        optim_hparam ids[2] = {OPTIM_HP_MOMENTUM, OPTIM_HP_NESTEROV};
        double vals[2] = {0.9, 1};
        ASSERT_OPT_OK(o, optim_group_set_hparams(o, 0, 2, ids, vals));
    }
    optim_free(o);

    /* Adam: amsgrad switched on allocates max_exp_avg_sq, starting at 0. */
    optim_hparams_init(&hp, OPTIM_ADAM, NULL);
    ASSERT_OK(optim_create(&o, OPTIM_ADAM));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p, g, 4, "w", NULL));
    ASSERT_OPT_OK(o, optim_step(o));
    ASSERT_OPT_OK(o, optim_state_slot(o, 0, 2, &buf, &init));
    ASSERT(buf == NULL);
    hp.amsgrad = 1;
    ASSERT_OPT_OK(o, optim_group_set(o, 0, &hp));
    ASSERT_OPT_OK(o, optim_state_slot(o, 0, 2, &buf, &init));
    ASSERT(buf != NULL && init == 1 && buf[0] == 0 && buf[3] == 0);
    ASSERT_OPT_OK(o, optim_step(o));
    {
        float *v;
        ASSERT_OPT_OK(o, optim_state_slot(o, 0, 1, &v, NULL));
        ASSERT(memcmp(v, buf, 4 * sizeof(float)) == 0);
    }
    optim_free(o);
    return 0;
}

TEST_IMPL(object_state_access)
{
    optim *o = NULL;
    optim_hparams hp;
    float p[3] = {1, 2, 3}, g[3] = {1, 1, 1}, *sum;
    double mu;
    int64_t step;
    int init;
    optim_hparams_init(&hp, OPTIM_ADAGRAD, NULL);
    hp.initial_accumulator_value = 0.5;
    ASSERT_OK(optim_create(&o, OPTIM_ADAGRAD));
    ASSERT_INT(optim_get_rule(o), ==, OPTIM_ADAGRAD);
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p, g, 3, NULL, NULL));
    ASSERT_OPT_OK(o, optim_state_slot(o, 0, 0, &sum, &init));
    ASSERT(sum && init == 1 && sum[0] == 0.5f && sum[2] == 0.5f);
    ASSERT((uintptr_t)sum % 64 == 0);
    ASSERT_OPT_OK(o, optim_step(o));
    ASSERT(sum[1] == 1.5f);
    /* Write state, then read it back as the next step sees it (how bindings load state). */
    sum[0] = 9.0f;
    ASSERT_OPT_OK(o, optim_param_set_step(o, 0, 41));
    ASSERT_OPT_OK(o, optim_step(o));
    ASSERT(sum[0] == 10.0f);
    ASSERT_OK(optim_param_get_step(o, 0, &step));
    ASSERT_INT(step, ==, 42);
    ASSERT_OPT_OK(o, optim_param_reset_state(o, 0));
    ASSERT(sum[0] == 0.5f);
    ASSERT_OK(optim_param_get_step(o, 0, &step));
    ASSERT_INT(step, ==, 0);
    ASSERT_OK(optim_param_get_mu_product(o, 0, &mu));
    ASSERT(mu == 1.0);
    ASSERT_OPT_OK(o, optim_param_set_mu_product(o, 0, 0.25));
    ASSERT_ERR(optim_param_set_mu_product(o, 0, 1.5), OPTIM_EINVAL, optim_errmsg(o), "mu_product = 1.5");
    ASSERT_ERR(optim_param_set_step(o, 0, -1), OPTIM_EINVAL, optim_errmsg(o), "step = -1");
    ASSERT_ERR(optim_state_slot(o, 0, 1, &sum, NULL), OPTIM_ERANGE, optim_errmsg(o), "slot 1 does not exist");
    ASSERT_ERR(optim_state_slot(o, 3, 0, &sum, NULL), OPTIM_ERANGE, optim_errmsg(o), "param 3 does not exist");
    ASSERT_OPT_OK(o, optim_state_set_initialized(o, 0, 0, 0));
    ASSERT_OPT_OK(o, optim_state_slot(o, 0, 0, &sum, &init));
    ASSERT_INT(init, ==, 0);
    optim_free(o);
    return 0;
}

/* ASGD keeps its eta in the scalar state field (NAdam's mu_product): any
 * finite value >= 0 (a step size), read and written like mu_product; the
 * next step uses the eta written, and ends by computing the next one. */
TEST_IMPL(object_asgd_eta)
{
    optim *o = NULL;
    optim_hparams hp;
    float p[2] = {1, 2}, g[2] = {1, -1};
    double eta;
    optim_hparams_init(&hp, OPTIM_ASGD, NULL);
    hp.lr = 2.0;
    hp.lambd = 0;
    ASSERT_OK(optim_create(&o, OPTIM_ASGD));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p, g, 2, NULL, NULL));
    ASSERT_OPT_OK(o, optim_step(o)); /* step 1: eta = lr = 2 */
    ASSERT(p[0] == -1.0f && p[1] == 4.0f);
    ASSERT_OK(optim_param_get_mu_product(o, 0, &eta));
    ASSERT(eta == (double)(float)(2.0 / pow(1.0, 0.75))); /* lambd = 0: eta stays lr */
    ASSERT_OPT_OK(o, optim_param_set_mu_product(o, 0, 3.0));
    ASSERT_OPT_OK(o, optim_step(o)); /* step 2 with the eta written */
    ASSERT(p[0] == -4.0f && p[1] == 7.0f);
    ASSERT_ERR(optim_param_set_mu_product(o, 0, -0.5), OPTIM_EINVAL, optim_errmsg(o), "eta = -0.5");
    ASSERT_ERR(optim_param_set_mu_product(o, 0, INFINITY), OPTIM_EINVAL, optim_errmsg(o), "eta = inf");
    optim_free(o);
    return 0;
}

TEST_IMPL(object_step_with)
{
    optim *o = NULL;
    optim_hparams hp;
    float a[8], b[8], ga[8], gb[8], shared[8], p2[8];
    float *ps[2];
    const float *gs[2];
    int i;
    for (i = 0; i < 8; i++) {
        a[i] = b[i] = p2[i] = 1;
        ga[i] = gb[i] = shared[i] = 0.5f;
    }
    optim_hparams_init(&hp, OPTIM_SGD, NULL);
    hp.lr = 0.1;
    ASSERT_OK(optim_create(&o, OPTIM_SGD));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, a, ga, 8, "a", NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, b, gb, 8, "b", NULL));
    ps[0] = a;
    ps[1] = b;
    gs[0] = ga;
    gs[1] = NULL; /* skip b */
    ASSERT_OPT_OK(o, optim_step_with(o, 2, ps, gs));
    ASSERT(a[0] == 0.95f && b[0] == 1.0f);
    /* Gradients may share memory (they are only read). */
    gs[0] = shared;
    gs[1] = shared;
    ASSERT_OPT_OK(o, optim_step_with(o, 2, ps, gs));
    ASSERT(b[0] == 0.95f);
    /* A parameter may not overlap another parameter or any gradient. */
    ps[1] = a + 4;
    ASSERT_ERR(optim_step_with(o, 2, ps, gs), OPTIM_EOVERLAP, optim_errmsg(o), "overlaps");
    ps[1] = p2;
    gs[1] = a;
    ASSERT_ERR(optim_step_with(o, 2, ps, gs), OPTIM_EOVERLAP, optim_errmsg(o), "'a'");
    ASSERT(p2[0] == 1.0f); /* nothing happened */
    gs[1] = gb;
    ASSERT_ERR(optim_step_with(o, 1, ps, gs), OPTIM_ESIZE, optim_errmsg(o), "count = 1");
    ps[0] = NULL;
    ASSERT_ERR(optim_step_with(o, 2, ps, gs), OPTIM_ENULL, optim_errmsg(o), "params[0] ('a') is NULL");
    ps[0] = a;
    ASSERT_OPT_OK(o, optim_step_with(o, 2, ps, gs));
    ASSERT(p2[0] == 0.95f);
    optim_free(o);
    return 0;
}

/* optim_rebind points every parameter at new memory without stepping, and
 * checks only the new pointers: memory the old ones pointed to may have been
 * freed and reused (here: the new memory of b is where a's gradient was), which
 * optim_add_param and optim_set_param_ptrs, comparing with the bound pointers,
 * would refuse as an overlap. */
TEST_IMPL(object_rebind)
{
    optim *o = NULL;
    optim_hparams hp;
    static float mem[64];
    float *a = mem, *b = mem + 8, *ga = mem + 16, *gb = mem + 24, *c = mem + 32, *gc = mem + 40;
    void *ps[2];
    const void *gs[2];
    int i;
    for (i = 0; i < 64; i++) mem[i] = 1.0f;
    optim_hparams_init(&hp, OPTIM_SGD, NULL);
    hp.lr = 0.5;
    ASSERT_OK(optim_create(&o, OPTIM_SGD));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, a, ga, 8, "a", NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, b, gb, 8, "b", NULL));
    /* b's memory moved to where a's gradient was: a "reused" address. */
    ps[0] = a;
    ps[1] = ga;
    gs[0] = NULL;
    gs[1] = NULL;
    ASSERT_ERR(optim_set_param_ptrs(o, 1, ga, NULL), OPTIM_EOVERLAP, optim_errmsg(o), "overlaps");
    ASSERT_OPT_OK(o, optim_rebind(o, 2, ps, gs));
    ASSERT_INT(optim_step_count(o), ==, 0); /* no step */
    ASSERT(a[0] == 1.0f && ga[0] == 1.0f && b[0] == 1.0f);
    /* Old gb, no longer bound: a new parameter there is accepted. */
    ASSERT_OPT_OK(o, optim_add_param(o, 0, gb, NULL, 8, "c", NULL));
    /* Errors change nothing: count, NULL, overlap among the new pointers. */
    {
        void *ps3[3] = {a, ga, gb};
        const void *gs3[3] = {c, gc, NULL};
        ASSERT_ERR(optim_rebind(o, 2, ps3, gs3), OPTIM_ESIZE, optim_errmsg(o), "count = 2");
        ps3[2] = NULL;
        ASSERT_ERR(optim_rebind(o, 3, ps3, gs3), OPTIM_ENULL, optim_errmsg(o), "params[2] ('c') is NULL");
        ps3[2] = a + 4;
        ASSERT_ERR(optim_rebind(o, 3, ps3, gs3), OPTIM_EOVERLAP, optim_errmsg(o), "overlaps");
        ASSERT_INT(optim_rebind(NULL, 3, ps3, gs3), ==, OPTIM_ENULL);
        /* The binding is still a, ga, gb with no gradients: a step moves nothing. */
        ASSERT_OPT_OK(o, optim_step(o));
        ASSERT(a[0] == 1.0f && ga[0] == 1.0f && gb[0] == 1.0f);
        ps3[2] = gb;
        ASSERT_OPT_OK(o, optim_rebind(o, 3, ps3, gs3));
        ASSERT_OPT_OK(o, optim_step(o)); /* a -= 0.5 * c, ga -= 0.5 * gc; gb has no gradient */
        ASSERT(a[0] == 0.5f && ga[0] == 0.5f && gb[0] == 1.0f);
    }
    optim_free(o);
    return 0;
}

TEST_IMPL(object_errors)
{
    optim *o = NULL;
    optim_hparams hp, other;
    float p[16], g[16];
    memset(p, 0, sizeof p);
    memset(g, 0, sizeof g);
    ASSERT_INT(optim_create(NULL, OPTIM_ADAM), ==, OPTIM_ENULL);
    ASSERT_INT(optim_create(&o, (optim_rule)77), ==, OPTIM_EINVAL);
    ASSERT(o == NULL);
    ASSERT(strstr(optim_errmsg(NULL), "NULL") != NULL);
    ASSERT_INT(optim_step(NULL), ==, OPTIM_ENULL);
    optim_free(NULL);

    ASSERT_OK(optim_create(&o, OPTIM_ADAM));
    ASSERT_ERR(optim_step(o), OPTIM_ESTATE, optim_errmsg(o), "no parameters");
    optim_hparams_init(&other, OPTIM_SGD, NULL);
    ASSERT_ERR(optim_add_group(o, &other, NULL), OPTIM_EINVAL, optim_errmsg(o),
               "hp->rule = 1 (sgd) but this optimizer's rule is adam");
    ASSERT_ERR(optim_add_group(o, NULL, NULL), OPTIM_ENULL, optim_errmsg(o), "hp is NULL");
    optim_hparams_init(&hp, OPTIM_ADAM, NULL);
    hp.lr = -1;
    ASSERT_ERR(optim_add_group(o, &hp, NULL), OPTIM_EINVAL, optim_errmsg(o), "adam: lr = -1 must be >= 0");
    ASSERT_INT(optim_group_count(o), ==, 0);
    ASSERT_ERR(optim_add_param(o, 0, p, g, 16, NULL, NULL), OPTIM_ERANGE, optim_errmsg(o), "group 0 does not exist");
    hp.lr = 1e-3;
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_ERR(optim_add_param(o, 0, NULL, g, 16, NULL, NULL), OPTIM_ENULL, optim_errmsg(o), "param is NULL");
    ASSERT_ERR(optim_add_param(o, 0, p, p + 8, 16, NULL, NULL), OPTIM_EOVERLAP, optim_errmsg(o),
               "param and grad overlap");
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p, g, 8, "first", NULL));
    ASSERT_ERR(optim_add_param(o, 0, p + 4, NULL, 8, NULL, NULL), OPTIM_EOVERLAP, optim_errmsg(o),
               "overlaps the memory of param 0 'first'");
    ASSERT_ERR(optim_add_param(o, 0, g, NULL, 8, NULL, NULL), OPTIM_EOVERLAP, optim_errmsg(o),
               "overlaps the gradient of param 0 'first'");
    ASSERT_ERR(optim_add_param(o, 0, p + 8, p, 8, NULL, NULL), OPTIM_EOVERLAP, optim_errmsg(o),
               "grad overlaps the memory of param 0 'first'");
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p + 8, g + 8, 8, NULL, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, NULL, NULL, 0, "empty", NULL));
    ASSERT_INT(optim_param_count(o), ==, 3);
    ASSERT_ERR(optim_set_grad(o, 5, g), OPTIM_ERANGE, optim_errmsg(o), "param 5 does not exist (3 params)");
    ASSERT_ERR(optim_set_param_ptrs(o, 1, NULL, g), OPTIM_ENULL, optim_errmsg(o), "param is NULL");
    ASSERT_ERR(optim_group_set_hparam(o, 0, OPTIM_HP_BETA2, 1.0), OPTIM_EINVAL, optim_errmsg(o), "beta2 = 1");
    ASSERT_ERR(optim_group_set_hparam(o, 0, OPTIM_HP_RHO, 0.9), OPTIM_EUNSUPPORTED, optim_errmsg(o),
               "adam: has no hyperparameter rho");
    ASSERT_ERR(optim_group_set_hparam(o, 4, OPTIM_HP_LR, 0.1), OPTIM_ERANGE, optim_errmsg(o), "group 4 does not exist");
    ASSERT_ERR(optim_group_set(o, 0, &other), OPTIM_EINVAL, optim_errmsg(o), "but this optimizer's rule is adam");
    ASSERT_ERR(optim_set_threads(o, -2), OPTIM_EINVAL, optim_errmsg(o), "threads = -2");
    ASSERT_ERR(optim_set_isa(o, (optim_isa)9), OPTIM_EINVAL, optim_errmsg(o), "isa = 9");
    if (!optim_isa_available(OPTIM_ISA_NEON))
        ASSERT_ERR(optim_set_isa(o, OPTIM_ISA_NEON), OPTIM_EUNSUPPORTED, optim_errmsg(o), "neon path is not available");
    /* After all these errors, the optimizer still works and nothing changed. */
    ASSERT_OPT_OK(o, optim_step(o));
    ASSERT_INT(optim_errcode(o), ==, OPTIM_OK);
    ASSERT(optim_errmsg(o)[0] == '\0');
    {
        int64_t step;
        ASSERT_OK(optim_param_get_step(o, 2, &step));
        ASSERT_INT(step, ==, 0); /* "empty" has no gradient */
    }
    optim_free(o);
    return 0;
}

TEST_IMPL(object_isa_and_threads)
{
    optim *o = NULL;
    ASSERT_OK(optim_create(&o, OPTIM_ADAMW));
    ASSERT_INT(optim_get_isa(o), ==, optim_isa_default());
    ASSERT(optim_isa_available(OPTIM_ISA_SCALAR));
    ASSERT(!optim_isa_available(OPTIM_ISA_AUTO));
    ASSERT_OPT_OK(o, optim_set_isa(o, OPTIM_ISA_SCALAR));
    ASSERT_INT(optim_get_isa(o), ==, OPTIM_ISA_SCALAR);
    ASSERT_OPT_OK(o, optim_set_isa(o, OPTIM_ISA_AUTO));
    ASSERT_INT(optim_get_isa(o), ==, optim_isa_default());
    ASSERT_INT(optim_get_threads(o), ==, 0);
    ASSERT_OPT_OK(o, optim_set_threads(o, 1));
    ASSERT_INT(optim_get_threads(o), ==, 1);
    ASSERT(strcmp(optim_isa_name(OPTIM_ISA_AVX512), "avx512") == 0);
    ASSERT(optim_isa_name((optim_isa)99) == NULL);
    optim_free(o);
    return 0;
}

/* The read-only getters report their errors in the handle like every other
 * call: a failed getter never leaves an earlier, unrelated message behind. */
TEST_IMPL(object_getter_errors)
{
    optim *o = NULL;
    optim_hparams hp;
    optim_param_info info;
    float p[2] = {1, 2}, g[2] = {0, 0};
    double v;
    int64_t step;
    optim_hparams_init(&hp, OPTIM_SGD, NULL);
    hp.lr = 0.1;
    hp.momentum = 0.9;
    hp.nesterov = 1;
    ASSERT_OK(optim_create(&o, OPTIM_SGD));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p, g, 2, "w", NULL));
    /* An earlier error, then each getter's own. */
    ASSERT_ERR(optim_group_set_hparam(o, 0, OPTIM_HP_DAMPENING, 0.5), OPTIM_EINVAL, optim_errmsg(o), "dampening");
    ASSERT_ERR(optim_group_get(o, 9, &hp), OPTIM_ERANGE, optim_errmsg(o), "optim_group_get: group 9 does not exist");
    ASSERT_ERR(optim_group_get(o, 0, NULL), OPTIM_ENULL, optim_errmsg(o), "optim_group_get: hp is NULL");
    ASSERT_ERR(optim_group_get_hparam(o, 3, OPTIM_HP_LR, &v), OPTIM_ERANGE, optim_errmsg(o),
               "optim_group_get_hparam: group 3 does not exist (1 groups)");
    ASSERT_ERR(optim_group_get_hparam(o, 0, (optim_hparam)99, &v), OPTIM_EINVAL, optim_errmsg(o), "id = 99");
    ASSERT_ERR(optim_param_get_info(o, 1, &info), OPTIM_ERANGE, optim_errmsg(o),
               "optim_param_get_info: param 1 does not exist (1 params)");
    ASSERT_ERR(optim_param_get_step(o, 5, &step), OPTIM_ERANGE, optim_errmsg(o), "optim_param_get_step: param 5");
    ASSERT_ERR(optim_param_get_mu_product(o, 0, NULL), OPTIM_ENULL, optim_errmsg(o), "mu_product is NULL");
    /* Success clears the message, as every call does. */
    ASSERT_OPT_OK(o, optim_group_get_hparam(o, 0, OPTIM_HP_MOMENTUM, &v));
    ASSERT(v == 0.9);
    ASSERT(strcmp(optim_errmsg(o), "") == 0);
    ASSERT_OPT_OK(o, optim_param_get_info(o, 0, &info));
    ASSERT(info.n == 2 && strcmp(info.name, "w") == 0);
    optim_free(o);
    return 0;
}

/* ---- Deferred state (optim_set_defer_state) ----------------------------------- */

/* Every slot of every parameter of a and b holds the same bits (both allocated). */
static int same_state(optim *a, optim *b, const char *what)
{
    size_t i;
    int s;
    for (i = 0; i < optim_param_count(a); i++)
        for (s = 0; s < optim_rule_slot_count(optim_get_rule(a)); s++) {
            float *x = NULL, *y = NULL;
            int ix = 0, iy = 0;
            size_t len = 0; /* n, but for Adafactor's shape-dependent slots */
            if (optim_state_slot(a, i, s, &x, &ix) != OPTIM_OK || optim_state_slot(b, i, s, &y, &iy) != OPTIM_OK ||
                optim_state_slot_len(a, i, s, &len) != OPTIM_OK)
                FAIL("%s: state access failed: %s / %s", what, optim_errmsg(a), optim_errmsg(b));
            if (!x != !y || ix != iy || (x && memcmp(x, y, len * sizeof(float)) != 0))
                FAIL("%s: param %zu slot %s differs (allocated %d/%d, initialized %d/%d)", what, i,
                     optim_rule_slot_name(optim_get_rule(a), s), !!x, !!y, ix, iy);
        }
    return 0;
}

/* A deferred optimizer holds no state until its first step, then steps as the
 * eager one does, bit for bit, for every rule with most options on. */
TEST_IMPL(object_deferred_state)
{
    enum { N0 = 7, N1 = 9000, N2 = 0, N3 = 33 };
    const size_t n[4] = {N0, N1, N2, N3};
    test_rng rng = {test_seed() ^ 0xdef};
    static float pe[4][N1], pd[4][N1], g[4][N1];
    int r;
    for (r = 1; r <= OPTIM_RULE_COUNT; r++) if (test_rule_dense(r)) {
        optim_hparams hp;
        optim *e = NULL, *d = NULL;
        size_t i, bytes = 1, want = 0;
        int t;
        long c = grid_size(grid_for(r)) - 1;
        while (grid_get(grid_for(r), c, &hp) != 0) c--;
        ASSERT_OK(optim_create(&e, hp.rule));
        ASSERT_OK(optim_create(&d, hp.rule));
        ASSERT_INT(optim_get_defer_state(d), ==, 0);
        ASSERT_OPT_OK(d, optim_set_defer_state(d, 1));
        ASSERT_INT(optim_get_defer_state(d), ==, 1);
        ASSERT_OPT_OK(e, optim_add_group(e, &hp, NULL));
        ASSERT_OPT_OK(d, optim_add_group(d, &hp, NULL));
        for (i = 0; i < 4; i++) {
            fill(pe[i], n[i], &rng, 1.0);
            memcpy(pd[i], pe[i], n[i] * sizeof(float));
            ASSERT_OPT_OK(e, optim_add_param(e, 0, pe[i], g[i], n[i], NULL, NULL));
            ASSERT_OPT_OK(d, optim_add_param(d, 0, pd[i], g[i], n[i], NULL, NULL));
            ASSERT_OPT_OK(d, optim_param_state_bytes(d, i, &bytes));
            ASSERT_INT(bytes, ==, 0);
            for (t = 0; t < optim_rule_slot_count(hp.rule); t++) /* n each, but Adafactor's factors (0 here) */
                if ((optim_hparams_slots(&hp) >> t) & 1u) {
                    size_t len = 0;
                    ASSERT_OPT_OK(e, optim_state_slot_len(e, i, t, &len));
                    want += len * sizeof(float);
                }
        }
        ASSERT_INT(optim_state_bytes(d), ==, 0);
        ASSERT_INT(optim_state_bytes(e), ==, want);
        /* Settings and counters are no state: none of them allocates. */
        ASSERT_OPT_OK(d, optim_param_reset_state(d, 1));
        ASSERT_OPT_OK(d, optim_group_set(d, 0, &hp));
        ASSERT_INT(optim_state_bytes(d), ==, 0);
        for (t = 0; t < 12; t++) {
            for (i = 0; i < 4; i++) fill(g[i], n[i], &rng, 1.0);
            ASSERT_OPT_OK(e, optim_step(e));
            ASSERT_OPT_OK(d, optim_step(d));
            ASSERT_INT(optim_state_bytes(d), ==, want);
        }
        for (i = 0; i < 4; i++)
            if (memcmp(pe[i], pd[i], n[i] * sizeof(float)) != 0)
                FAIL("%s: parameter %zu differs between eager and deferred state", optim_rule_name(hp.rule), i);
        if (same_state(e, d, optim_rule_name(hp.rule))) return 1;
        optim_free(e);
        optim_free(d);
    }
    return 0;
}

/* State access allocates that parameter's state only; the state starts from
 * the group's hyperparameters at that moment; saving does not allocate, and a
 * deferred parameter loads as fresh state. */
TEST_IMPL(object_deferred_state_access)
{
    optim *o = NULL, *e = NULL;
    optim_hparams hp;
    float p[2][5] = {{1, 2, 3, 4, 5}, {5, 4, 3, 2, 1}}, q[2][5], g[2][5] = {{1, 1, 1, 1, 1}, {2, 2, 2, 2, 2}};
    float *sum;
    size_t bytes = 0;
    void *buf = NULL;
    size_t size = 0;
    int init;
    memcpy(q, p, sizeof p);
    optim_hparams_init(&hp, OPTIM_ADAGRAD, NULL);
    hp.initial_accumulator_value = 0.5;
    ASSERT_OK(optim_create(&o, OPTIM_ADAGRAD));
    ASSERT_ERR(optim_set_defer_state(o, 2), OPTIM_EINVAL, optim_errmsg(o), "defer = 2");
    ASSERT_INT(optim_set_defer_state(NULL, 1), ==, OPTIM_ENULL);
    ASSERT_OPT_OK(o, optim_set_defer_state(o, 1));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p[0], g[0], 5, "a", NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p[1], g[1], 5, "b", NULL));
    ASSERT_ERR(optim_param_state_bytes(o, 2, &bytes), OPTIM_ERANGE, optim_errmsg(o), "param 2 does not exist");
    ASSERT_ERR(optim_param_state_bytes(o, 0, NULL), OPTIM_ENULL, optim_errmsg(o), "bytes is NULL");
    /* A checkpoint of deferred state: fresh state, nothing allocated to write it. */
    ASSERT_OPT_OK(o, optim_save_buffer(o, &buf, &size));
    ASSERT_INT(optim_state_bytes(o), ==, 0);
    /* The accumulator's start follows the group as it is when the state is made. */
    ASSERT_OPT_OK(o, optim_group_set_hparam(o, 0, OPTIM_HP_INITIAL_ACCUMULATOR_VALUE, 0.25));
    ASSERT_OPT_OK(o, optim_state_slot(o, 1, 0, &sum, &init));
    ASSERT(sum && init == 1 && sum[0] == 0.25f && sum[4] == 0.25f);
    ASSERT((uintptr_t)sum % 64 == 0);
    /* Allocated state resets as eager state does. */
    sum[2] = 9.0f;
    ASSERT_OPT_OK(o, optim_param_reset_state(o, 1));
    ASSERT(sum[2] == 0.25f);
    /* Allocated state resets as eager state does. */
    sum[2] = 9.0f;
    ASSERT_OPT_OK(o, optim_param_reset_state(o, 1));
    ASSERT(sum[2] == 0.25f);
    ASSERT_OPT_OK(o, optim_param_state_bytes(o, 1, &bytes));
    ASSERT_INT(bytes, ==, 5 * sizeof(float));
    ASSERT_OPT_OK(o, optim_param_state_bytes(o, 0, &bytes));
    ASSERT_INT(bytes, ==, 0);
    ASSERT_INT(optim_state_bytes(o), ==, 5 * sizeof(float));
    /* optim_state_set_initialized allocates too; then the step allocates the rest. */
    ASSERT_OPT_OK(o, optim_state_set_initialized(o, 0, 0, 1));
    ASSERT_INT(optim_state_bytes(o), ==, 10 * sizeof(float));
    ASSERT_OPT_OK(o, optim_step(o));
    optim_free(o);

    /* The deferred checkpoint loads into an eager optimizer as fresh state (the saved 0.5 start). */
    ASSERT_OK(optim_create(&e, OPTIM_ADAGRAD));
    hp.initial_accumulator_value = 3.0;
    ASSERT_OPT_OK(e, optim_add_group(e, &hp, NULL));
    ASSERT_OPT_OK(e, optim_add_param(e, 0, q[0], g[0], 5, "a", NULL));
    ASSERT_OPT_OK(e, optim_add_param(e, 0, q[1], g[1], 5, "b", NULL));
    ASSERT_OPT_OK(e, optim_step(e));
    ASSERT_OPT_OK(e, optim_load_buffer(e, buf, size, OPTIM_MATCH_NAME, "deferred"));
    ASSERT_OPT_OK(e, optim_state_slot(e, 0, 0, &sum, &init));
    ASSERT(sum[0] == 0.5f && sum[4] == 0.5f);
    optim_free(e);

    /* A deferred optimizer loading a checkpoint with state: allocated and read; the same next step. */
    {
        optim *a = NULL, *b = NULL;
        void *full = NULL;
        size_t fsize = 0;
        float pa[5] = {1, 2, 3, 4, 5}, pb[5] = {1, 2, 3, 4, 5}, ga[5] = {0.5f, -1, 2, 0, 1};
        optim_hparams_init(&hp, OPTIM_ADAM, NULL);
        hp.amsgrad = 1;
        ASSERT_OK(optim_create(&a, OPTIM_ADAM));
        ASSERT_OPT_OK(a, optim_add_group(a, &hp, NULL));
        ASSERT_OPT_OK(a, optim_add_param(a, 0, pa, ga, 5, "w", NULL));
        ASSERT_OPT_OK(a, optim_step(a));
        ASSERT_OPT_OK(a, optim_save_buffer(a, &full, &fsize));
        ASSERT_OK(optim_create(&b, OPTIM_ADAM));
        ASSERT_OPT_OK(b, optim_set_defer_state(b, 1));
        hp.amsgrad = 0;
        ASSERT_OPT_OK(b, optim_add_group(b, &hp, NULL));
        memcpy(pb, pa, sizeof pb);
        ASSERT_OPT_OK(b, optim_add_param(b, 0, pb, ga, 5, "w", NULL));
        ASSERT_OPT_OK(b, optim_load_buffer(b, full, fsize, OPTIM_MATCH_NAME, "full"));
        ASSERT_INT(optim_state_bytes(b), ==, 3 * 5 * sizeof(float));
        ASSERT_OPT_OK(a, optim_step(a));
        ASSERT_OPT_OK(b, optim_step(b));
        ASSERT(memcmp(pa, pb, sizeof pa) == 0);
        if (same_state(a, b, "loaded into deferred state")) return 1;
        free(full);
        optim_free(a);
        optim_free(b);
    }
    /* A file whose deferred parameter's options need a slot the optimizer
     * loading it never allocated (AMSGrad there, not here): allocated, fresh,
     * at the next step, which then equals a fresh optimizer's. */
    {
        optim *a = NULL, *b = NULL, *c = NULL;
        void *dfile = NULL;
        size_t dsize = 0;
        float pa[3] = {1, 2, 3}, pb[3] = {1, 2, 3}, pc[3] = {1, 2, 3}, ga[3] = {0.5f, -1, 2};
        optim_hparams_init(&hp, OPTIM_ADAM, NULL);
        hp.amsgrad = 1;
        ASSERT_OK(optim_create(&a, OPTIM_ADAM));
        ASSERT_OPT_OK(a, optim_set_defer_state(a, 1));
        ASSERT_OPT_OK(a, optim_add_group(a, &hp, NULL));
        ASSERT_OPT_OK(a, optim_add_param(a, 0, pa, ga, 3, "w", NULL));
        ASSERT_OPT_OK(a, optim_save_buffer(a, &dfile, &dsize));
        ASSERT_OK(optim_create(&c, OPTIM_ADAM));
        ASSERT_OPT_OK(c, optim_add_group(c, &hp, NULL));
        ASSERT_OPT_OK(c, optim_add_param(c, 0, pc, ga, 3, "w", NULL));
        hp.amsgrad = 0;
        ASSERT_OK(optim_create(&b, OPTIM_ADAM));
        ASSERT_OPT_OK(b, optim_add_group(b, &hp, NULL));
        ASSERT_OPT_OK(b, optim_add_param(b, 0, pb, ga, 3, "w", NULL));
        ASSERT_OPT_OK(b, optim_load_buffer(b, dfile, dsize, OPTIM_MATCH_NAME, "deferred amsgrad"));
        ASSERT_OPT_OK(b, optim_step(b));
        ASSERT_OPT_OK(c, optim_step(c));
        ASSERT(memcmp(pb, pc, sizeof pb) == 0);
        if (same_state(b, c, "a deferred AMSGrad file")) return 1;
        free(dfile);
        optim_free(a);
        optim_free(b);
        optim_free(c);
    }
#if !defined(__SANITIZE_ADDRESS__)
    /* State that cannot be allocated: OPTIM_ENOMEM naming the parameter, and
     * nothing allocated stays (the first parameter's state is released again).
     * The parameter is never touched, so its memory need not exist. (Not
     * under AddressSanitizer, which aborts on a request of this size.) */
    {
        optim *h = NULL;
        float small[4] = {0}, *huge = (float *)(uintptr_t)0x10000;
        optim_hparams_init(&hp, OPTIM_ADAM, NULL);
        ASSERT_OK(optim_create(&h, OPTIM_ADAM));
        ASSERT_OPT_OK(h, optim_set_defer_state(h, 1));
        ASSERT_OPT_OK(h, optim_add_group(h, &hp, NULL));
        ASSERT_OPT_OK(h, optim_add_param(h, 0, small, NULL, 4, "small", NULL));
        ASSERT_OPT_OK(h, optim_add_param(h, 0, huge, NULL, (size_t)1 << 38, "huge", NULL));
        ASSERT_ERR(optim_step(h), OPTIM_ENOMEM, optim_errmsg(h), "param 1 'huge'");
        ASSERT_INT(optim_state_bytes(h), ==, 0);
        ASSERT_ERR(optim_state_slot(h, 1, 0, &sum, NULL), OPTIM_ENOMEM, optim_errmsg(h), "deferred");
        ASSERT_OPT_OK(h, optim_state_slot(h, 0, 0, &sum, NULL));
        ASSERT_INT(optim_state_bytes(h), ==, 2 * 4 * sizeof(float));
        optim_free(h);
    }
#endif
    free(buf);
    return 0;
}
