/* test_api.c: version, error scheme, hyperparameters, the stateless kernel
 * API, non-finite gradients, and the seeds' formulas. */
#include "grid.h"
#include "test.h"

TEST_IMPL(version)
{
    ASSERT_INT(optim_version_number(), ==, OPTIM_VERSION_NUMBER);
    ASSERT(strcmp(optim_version_string(), OPTIM_VERSION_STRING) == 0);
    return 0;
}

TEST_IMPL(error_names)
{
    ASSERT(strcmp(optim_err_name(OPTIM_EINVAL), "OPTIM_EINVAL") == 0);
    ASSERT(strcmp(optim_err_name(OPTIM_ECHECKSUM), "OPTIM_ECHECKSUM") == 0);
    ASSERT(strcmp(optim_strerror(OPTIM_OK), "success") == 0);
    ASSERT(strcmp(optim_strerror(12345), "unknown error code") == 0);
    ASSERT(strcmp(optim_err_name(12345), "OPTIM_UNKNOWN") == 0);
    return 0;
}

TEST_IMPL(hparams_defaults)
{
    /* torch.optim's defaults, rule by rule. */
    static const struct {
        optim_rule rule;
        const char *name;
        double lr, eps;
        int nslots;
        const char *slot0;
    } want[] = {
        {OPTIM_SGD, "sgd", 1e-3, 0, 1, "momentum_buffer"},  {OPTIM_ADAGRAD, "adagrad", 1e-2, 1e-10, 1, "sum"},
        {OPTIM_RMSPROP, "rmsprop", 1e-2, 1e-8, 3, "square_avg"}, {OPTIM_ADADELTA, "adadelta", 1.0, 1e-6, 3, "square_avg"},
        {OPTIM_ADAM, "adam", 1e-3, 1e-8, 3, "exp_avg"},      {OPTIM_ADAMW, "adamw", 1e-3, 1e-8, 3, "exp_avg"},
        {OPTIM_RADAM, "radam", 1e-3, 1e-8, 2, "exp_avg"},    {OPTIM_NADAM, "nadam", 2e-3, 1e-8, 2, "exp_avg"},
        {OPTIM_ADABOUND, "adabound", 1e-3, 1e-8, 3, "exp_avg"},
        {OPTIM_LION, "lion", 1e-4, 0, 1, "exp_avg"},
        {OPTIM_ADAMAX, "adamax", 2e-3, 1e-8, 2, "exp_avg"},   {OPTIM_ASGD, "asgd", 1e-2, 0, 1, "ax"},
        {OPTIM_RPROP, "rprop", 1e-2, 0, 2, "prev"},
        {OPTIM_LAMB, "lamb", 1e-3, 1e-6, 2, "exp_avg"},      {OPTIM_LARS, "lars", 1.0, 1e-8, 1, "momentum_buffer"},
        {OPTIM_SPARSE_ADAM, "sparse_adam", 1e-3, 1e-8, 2, "exp_avg"},
        {OPTIM_SGD_SCHEDULE_FREE, "sgd_schedule_free", 1.0, 0, 1, "z"},
        {OPTIM_ADAMW_SCHEDULE_FREE, "adamw_schedule_free", 0.0025, 1e-8, 2, "z"},
        {OPTIM_MUON, "muon", 1e-3, 1e-7, 1, "momentum_buffer"}, /* torch 2.9's torch.optim.Muon */
    };
    size_t i;
    optim_hparams hp;
    for (i = 0; i < sizeof want / sizeof want[0]; i++) {
        optim_error err;
        ASSERT_OK_MSG(optim_hparams_init(&hp, want[i].rule, &err), err.message);
        ASSERT_OK_MSG(optim_hparams_check(&hp, &err), err.message);
        ASSERT(strcmp(optim_rule_name(want[i].rule), want[i].name) == 0);
        ASSERT_INT(optim_rule_from_name(want[i].name), ==, want[i].rule);
        ASSERT(hp.lr == want[i].lr);
        ASSERT(hp.eps == want[i].eps);
        ASSERT_INT(optim_rule_slot_count(want[i].rule), ==, want[i].nslots);
        ASSERT(strcmp(optim_rule_slot_name(want[i].rule, 0), want[i].slot0) == 0);
        ASSERT_INT(optim_rule_has_step(want[i].rule), ==,
                   want[i].rule != OPTIM_SGD && want[i].rule != OPTIM_LION && want[i].rule != OPTIM_LARS &&
                       want[i].rule != OPTIM_SGD_SCHEDULE_FREE && want[i].rule != OPTIM_ADAMW_SCHEDULE_FREE &&
                       want[i].rule != OPTIM_MUON);
        if (want[i].rule == OPTIM_MUON)
            ASSERT(hp.weight_decay == 0.1 && hp.momentum == 0.95 && hp.nesterov == 1 && hp.ns_steps == 5 &&
                   hp.ns_a == 3.4445 && hp.ns_b == -4.7750 && hp.ns_c == 2.0315 &&
                   hp.adjust_lr == OPTIM_MUON_ADJUST_ORIGINAL);
    }
    /* timm's Lamb and Lars (the references optim follows for them, docs/rules/lamb.md, lars.md) */
    optim_hparams_init(&hp, OPTIM_LAMB, NULL);
    ASSERT(hp.beta1 == 0.9 && hp.beta2 == 0.999 && hp.weight_decay == 0.01 && hp.bias_correction == 1 &&
           hp.trust_clip == 0 && hp.always_adapt == 0 && hp.maximize == 0);
    ASSERT_INT(optim_hparams_slots(&hp), ==, 3);
    optim_hparams_init(&hp, OPTIM_LARS, NULL);
    ASSERT(hp.momentum == 0 && hp.dampening == 0 && hp.weight_decay == 0 && hp.nesterov == 0 &&
           hp.trust_coeff == 1e-3 && hp.trust_clip == 0 && hp.always_adapt == 0);
    ASSERT_INT(optim_hparams_slots(&hp), ==, 0);
    ASSERT_INT(optim_hparam_from_name("trust_coeff"), ==, OPTIM_HP_TRUST_COEFF);
    ASSERT(optim_hparams_set(&hp, OPTIM_HP_NESTEROV, 1, NULL) == OPTIM_OK);
    ASSERT(optim_hparams_check(&hp, NULL) == OPTIM_EINVAL); /* nesterov needs momentum, as timm's Lars */
    ASSERT(optim_hparams_set(&hp, OPTIM_HP_BETA1, 0.9, NULL) == OPTIM_EUNSUPPORTED);
    /* torch 1.13's SparseAdam: betas (0.9, 0.999), no weight decay (a field it does not use) */
    optim_hparams_init(&hp, OPTIM_SPARSE_ADAM, NULL);
    ASSERT(hp.beta1 == 0.9 && hp.beta2 == 0.999 && hp.maximize == 0);
    ASSERT(optim_hparams_set(&hp, OPTIM_HP_WEIGHT_DECAY, 0.1, NULL) == OPTIM_EUNSUPPORTED);
    /* torch 1.13's other defaults of the rules added with Adamax */
    optim_hparams_init(&hp, OPTIM_ADAMAX, NULL);
    ASSERT(hp.beta1 == 0.9 && hp.beta2 == 0.999 && hp.weight_decay == 0);
    optim_hparams_init(&hp, OPTIM_ASGD, NULL);
    ASSERT(hp.lambd == 1e-4 && hp.alpha == 0.75 && hp.t0 == 1e6 && hp.weight_decay == 0);
    optim_hparams_init(&hp, OPTIM_RPROP, NULL);
    ASSERT(hp.etaminus == 0.5 && hp.etaplus == 1.2 && hp.step_size_min == 1e-6 && hp.step_size_max == 50);
    ASSERT_INT(optim_hparams_slots(&hp), ==, 3);
    ASSERT_INT(optim_hparam_from_name("etaplus"), ==, OPTIM_HP_ETAPLUS);
    ASSERT(optim_hparams_set(&hp, OPTIM_HP_ETAPLUS, 1.0, NULL) == OPTIM_EINVAL);  /* torch: 1 < etaplus */
    ASSERT(optim_hparams_set(&hp, OPTIM_HP_ETAMINUS, 1.0, NULL) == OPTIM_EINVAL); /* torch: etaminus < 1 */
    ASSERT(optim_hparams_set(&hp, OPTIM_HP_WEIGHT_DECAY, 0.1, NULL) == OPTIM_EUNSUPPORTED); /* torch's Rprop has none */
    ASSERT_INT(optim_rule_from_name("AdamW"), ==, OPTIM_ADAMW);
    ASSERT_INT(optim_rule_from_name("sophia"), ==, 0);
    optim_hparams_init(&hp, OPTIM_ADAM, NULL);
    ASSERT(hp.beta1 == 0.9 && hp.beta2 == 0.999 && hp.bias_correction == 1 && hp.weight_decay == 0);
    ASSERT_INT(optim_hparams_slots(&hp), ==, 3);
    hp.amsgrad = 1;
    ASSERT_INT(optim_hparams_slots(&hp), ==, 7);
    optim_hparams_init(&hp, OPTIM_ADAMW, NULL);
    ASSERT(hp.weight_decay == 1e-2 && hp.decoupled_weight_decay == 1);
    optim_hparams_init(&hp, OPTIM_ADADELTA, NULL);
    ASSERT(hp.rho == 0.9 && hp.eps_placement == OPTIM_EPS_INSIDE);
    optim_hparams_init(&hp, OPTIM_RMSPROP, NULL);
    ASSERT(hp.alpha == 0.99);
    ASSERT_INT(optim_hparams_slots(&hp), ==, 1);
    hp.momentum = 0.9;
    hp.centered = 1;
    ASSERT_INT(optim_hparams_slots(&hp), ==, 7);
    optim_hparams_init(&hp, OPTIM_NADAM, NULL);
    ASSERT(hp.momentum_decay == 4e-3);
    optim_hparams_init(&hp, OPTIM_ADABOUND, NULL);
    ASSERT(hp.final_lr == 0.1 && hp.gamma == 1e-3);
    optim_hparams_init(&hp, OPTIM_SGD, NULL);
    ASSERT_INT(optim_hparams_slots(&hp), ==, 0);
    return 0;
}

/* Each invalid setting fails with OPTIM_EINVAL and a message naming the
 * field and its value. */
TEST_IMPL(hparams_errors)
{
    static const struct {
        optim_rule rule;
        size_t offset;
        int is_int;
        double value;
        const char *needle;
    } bad[] = {
#define D(r, f, v, msg) {OPTIM_##r, offsetof(optim_hparams, f), 0, v, msg}
#define I(r, f, v, msg) {OPTIM_##r, offsetof(optim_hparams, f), 1, v, msg}
        D(SGD, lr, -0.1, "lr = -0.1 must be >= 0"),
        D(ADAM, lr, NAN, "lr = nan is not a finite number"),
        D(ADAM, lr, INFINITY, "lr = inf is not a finite number"),
        D(ADAM, beta1, 1.0, "beta1 = 1 is outside [0, 1)"),
        D(ADAM, beta1, -0.5, "beta1 = -0.5 is outside [0, 1)"),
        D(ADAMW, beta2, 1.5, "beta2 = 1.5 is outside [0, 1)"),
        D(ADAM, eps, -0.5, "eps = -0.5 must be >= 0"), /* torch.optim accepts eps = 0: so does optim */
        D(RMSPROP, eps, -1e-8, "eps = -1e-08 must be >= 0"),
        D(ADADELTA, rho, 1.01, "rho = 1.01 is outside [0, 1]"),
        D(ADADELTA, rho, -0.1, "rho = -0.1 is outside [0, 1]"),
        D(RMSPROP, alpha, 1.5, "alpha = 1.5 is outside [0, 1]"),
        D(SGD, momentum, -0.9, "momentum = -0.9 must be >= 0"),
        D(SGD, dampening, 2.0, "dampening = 2 is outside [0, 1]"),
        D(SGD, weight_decay, -1e-4, "weight_decay = -0.0001 must be >= 0"),
        D(ADAGRAD, lr_decay, -1.0, "lr_decay = -1 must be >= 0"),
        D(ADAGRAD, initial_accumulator_value, -0.1, "initial_accumulator_value = -0.1 must be >= 0"),
        D(NADAM, momentum_decay, -4e-3, "momentum_decay = -0.004 must be >= 0"),
        D(ADABOUND, gamma, 1.0, "gamma = 1 is outside [0, 1)"),
        D(ADABOUND, final_lr, -0.1, "final_lr = -0.1 must be >= 0"),
        I(SGD, nesterov, 1, "nesterov = 1 requires momentum > 0 (momentum = 0)"),
        I(ADAM, amsgrad, 2, "amsgrad = 2 must be 0 or 1"),
        I(ADAM, eps_placement, 3, "eps_placement = 3 must be 0 or 1"),
        I(SGD, amsgrad, 1, "sgd: amsgrad = 1 is not used by this rule"),
        D(ADAM, momentum, 0.9, "adam: momentum = 0.9 is not used by this rule"),
        I(ADAMW, decoupled_weight_decay, 0, "decoupled_weight_decay = 0 is not AdamW"),
#undef D
#undef I
    };
    size_t i;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        optim_hparams hp;
        optim_error err;
        optim_hparams_init(&hp, bad[i].rule, NULL);
        if (bad[i].is_int) {
            int v = (int)bad[i].value;
            memcpy((char *)&hp + bad[i].offset, &v, sizeof v);
        } else {
            memcpy((char *)&hp + bad[i].offset, &bad[i].value, sizeof(double));
        }
        ASSERT_ERR(optim_hparams_check(&hp, &err), OPTIM_EINVAL, err.message, bad[i].needle);
    }
    {
        optim_hparams hp;
        optim_error err;
        optim_hparams_init(&hp, OPTIM_SGD, NULL);
        hp.momentum = 0.9;
        hp.nesterov = 1;
        hp.dampening = 0.1;
        ASSERT_ERR(optim_hparams_check(&hp, &err), OPTIM_EINVAL, err.message, "nesterov = 1 requires dampening = 0");
        hp.rule = (optim_rule)42;
        ASSERT_ERR(optim_hparams_check(&hp, &err), OPTIM_EINVAL, err.message, "rule = 42");
        ASSERT_ERR(optim_hparams_check(NULL, &err), OPTIM_ENULL, err.message, "hp is NULL");
        ASSERT_ERR(optim_hparams_init(&hp, (optim_rule)0, &err), OPTIM_EINVAL, err.message, "rule = 0");
        ASSERT_ERR(optim_hparams_init(NULL, OPTIM_ADAM, &err), OPTIM_ENULL, err.message, "hp is NULL");
        optim_hparams_init(&hp, OPTIM_ADABOUND, NULL);
        hp.lr = 0;
        ASSERT_ERR(optim_hparams_check(&hp, &err), OPTIM_EINVAL, err.message, "lr = 0 with initial_lr = 0");
        hp.initial_lr = 1e-3;
        ASSERT_OK(optim_hparams_check(&hp, &err));
    }
    return 0;
}

TEST_IMPL(hparams_by_id)
{
    optim_hparams hp;
    optim_error err;
    double v;
    int id;
    optim_hparams_init(&hp, OPTIM_ADAM, NULL);
    for (id = 1; id <= OPTIM_HP_COUNT; id++) {
        const char *name = optim_hparam_name((optim_hparam)id);
        ASSERT(name != NULL);
        ASSERT_INT(optim_hparam_from_name(name), ==, id);
    }
    ASSERT_INT(optim_hparam_from_name("amsbound"), ==, OPTIM_HP_AMSGRAD);
    ASSERT_INT(optim_hparam_from_name("betas"), ==, 0);
    ASSERT(optim_hparam_name((optim_hparam)0) == NULL);
    ASSERT_OK_MSG(optim_hparams_set(&hp, OPTIM_HP_BETA1, 0.8, &err), err.message);
    ASSERT(hp.beta1 == 0.8);
    ASSERT_OK_MSG(optim_hparams_set(&hp, OPTIM_HP_AMSGRAD, 1, &err), err.message);
    ASSERT(hp.amsgrad == 1);
    ASSERT_OK(optim_hparams_get(&hp, OPTIM_HP_AMSGRAD, &v, &err));
    ASSERT(v == 1);
    ASSERT_OK(optim_hparams_get(&hp, OPTIM_HP_EPS, &v, &err));
    ASSERT(v == 1e-8);
    ASSERT_ERR(optim_hparams_set(&hp, OPTIM_HP_BETA1, 1.0, &err), OPTIM_EINVAL, err.message, "beta1 = 1 is outside");
    ASSERT(hp.beta1 == 0.8); /* unchanged on error */
    ASSERT_ERR(optim_hparams_set(&hp, OPTIM_HP_MOMENTUM, 0.9, &err), OPTIM_EUNSUPPORTED, err.message,
               "adam: has no hyperparameter momentum");
    ASSERT_ERR(optim_hparams_set(&hp, (optim_hparam)99, 0.9, &err), OPTIM_EINVAL, err.message, "id = 99");
    ASSERT_ERR(optim_hparams_get(&hp, (optim_hparam)0, &v, &err), OPTIM_EINVAL, err.message, "id = 0");
    ASSERT(optim_rule_uses(OPTIM_ADAM, OPTIM_HP_BETA1));
    ASSERT(!optim_rule_uses(OPTIM_ADAM, OPTIM_HP_RHO));
    ASSERT(optim_rule_uses(OPTIM_ADADELTA, OPTIM_HP_MOMENTUM));
    return 0;
}

TEST_IMPL(update_errors)
{
    optim_hparams hp;
    optim_state st;
    optim_error err;
    float p[8] = {0}, g[8] = {0}, m[8], v[8], big[32];
    optim_hparams_init(&hp, OPTIM_ADAM, NULL);
    memset(&st, 0, sizeof st);
    st.slot[0] = m;
    st.slot[1] = v;
    ASSERT_OK_MSG(optim_state_init(&hp, 8, &st, &err), err.message);
    ASSERT_ERR(optim_update(NULL, 8, p, g, &st, &err), OPTIM_ENULL, err.message, "hp is NULL");
    ASSERT_ERR(optim_update(&hp, 8, p, g, NULL, &err), OPTIM_ENULL, err.message, "st is NULL");
    ASSERT_ERR(optim_update(&hp, 8, NULL, g, &st, &err), OPTIM_ENULL, err.message, "p is NULL");
    ASSERT_ERR(optim_update(&hp, 8, p, NULL, &st, &err), OPTIM_ENULL, err.message, "g is NULL");
    ASSERT_ERR(optim_update(&hp, 8, big, big + 4, &st, &err), OPTIM_EOVERLAP, err.message, "p and g overlap");
    st.slot[1] = m + 2;
    ASSERT_ERR(optim_update(&hp, 6, p, g, &st, &err), OPTIM_EOVERLAP, err.message, "slot 1 (exp_avg_sq) overlaps slot 0");
    st.slot[1] = p;
    ASSERT_ERR(optim_update(&hp, 8, p, g, &st, &err), OPTIM_EOVERLAP, err.message, "overlaps p or g");
    st.slot[1] = v;
    hp.amsgrad = 1;
    ASSERT_ERR(optim_update(&hp, 8, p, g, &st, &err), OPTIM_ENULL, err.message, "slot 2 (max_exp_avg_sq)");
    st.slot[2] = big;
    ASSERT_ERR(optim_update(&hp, 8, p, g, &st, &err), OPTIM_ESTATE, err.message, "not initialized");
    hp.amsgrad = 0;
    hp.beta1 = 2;
    ASSERT_ERR(optim_update(&hp, 8, p, g, &st, &err), OPTIM_EINVAL, err.message, "beta1 = 2");
    ASSERT_INT(st.step, ==, 0); /* nothing happened */
    hp.beta1 = 0.9;
    /* n == 0: no arrays needed; the step counter still advances, as torch's does for an empty tensor. */
    ASSERT_OK_MSG(optim_update(&hp, 0, NULL, NULL, &st, &err), err.message);
    ASSERT_INT(st.step, ==, 1);
    ASSERT_OK_MSG(optim_update(&hp, 8, p, g, &st, &err), err.message);
    ASSERT_INT(st.step, ==, 2);
    ASSERT_ERR(optim_state_init(&hp, 8, NULL, &err), OPTIM_ENULL, err.message, "st is NULL");
    st.slot[0] = NULL;
    ASSERT_ERR(optim_state_init(&hp, 8, &st, &err), OPTIM_ENULL, err.message, "slot 0 (exp_avg)");
    return 0;
}

/* A NaN or Inf gradient poisons exactly its own element, as in torch. */
TEST_IMPL(nonfinite_propagates)
{
    int r;
    for (r = 1; r <= OPTIM_RULE_COUNT; r++) if (test_rule_dense(r)) {
        optim_hparams hp;
        optim_state a, b;
        float pa[16], pb[16], g[16], sa[4][16], sb[4][16];
        int s, i, t;
        ASSERT_OK(grid_get(grid_for(r), 0, &hp));
        memset(&a, 0, sizeof a);
        memset(&b, 0, sizeof b);
        for (s = 0; s < 4; s++) {
            a.slot[s] = sa[s];
            b.slot[s] = sb[s];
        }
        ASSERT_OK(optim_state_init(&hp, 16, &a, NULL));
        ASSERT_OK(optim_state_init(&hp, 16, &b, NULL));
        for (i = 0; i < 16; i++) pa[i] = pb[i] = 0.1f * (float)(i - 8);
        for (t = 0; t < 5; t++) {
            for (i = 0; i < 16; i++) g[i] = 0.3f * (float)((i * 7 + t * 3) % 11) - 1.5f;
            ASSERT_OK(optim_update(&hp, 16, pa, g, &a, NULL));
            if (t == 2) {
                g[3] = NAN;
                g[9] = INFINITY;
            }
            ASSERT_OK(optim_update(&hp, 16, pb, g, &b, NULL));
        }
        for (i = 0; i < 16; i++) {
            if (hp.rule == OPTIM_LION && i == 9) {
                /* Lion's step is lr * sign(...): an Inf gradient makes the
                 * momentum Inf and the step a finite lr (torch's sign(Inf) = 1). */
                if (isfinite(b.slot[0][i])) FAIL("lion: exp_avg[9] = %g stayed finite after an Inf gradient",
                                                 b.slot[0][i]);
            } else if (hp.rule == OPTIM_RPROP && (i == 3 || i == 9)) {
                /* torch 1.13's Rprop uses only signs, and its sign(NaN) is 0: a NaN gradient does not move the
                 * element, an Inf one moves it by its finite step size (python/tests/test_torch_classic.py
                 * compares this with torch) */
                if (!isfinite(pb[i])) FAIL("rprop: param[%d] = %g became non-finite (torch's stays finite)", i, pb[i]);
            } else if (hp.rule == OPTIM_LAMB && i != 3 && i != 9) {
                /* A per-tensor rule: the NaN element's update makes ||u|| NaN, so this step's trust ratio of the
                 * tensor is 1 (timm's torch.where): the other elements take the unscaled step, and stay finite. */
                if (!isfinite(pb[i]) || memcmp(&pa[i], &pb[i], sizeof(float)) == 0)
                    FAIL("lamb: param[%d] = %g (clean run %g): expected finite, moved without the ratio", i, pb[i],
                         pa[i]);
            } else if (hp.rule == OPTIM_ADAFACTOR && i != 3 && i != 9) {
                /* Per-tensor too (torch 2.x's _single_tensor_adafactor): ||u|| and ||p|| turn NaN, and Python's
                 * max(1.0, nan) and max(eps2, nan) give the bounds: the other elements take the unclipped step
                 * with alpha = eps2 * rho, finite (python/tests/test_torch_adafactor.py holds the transcription). */
                if (!isfinite(pb[i])) FAIL("adafactor: param[%d] = %g (clean run %g): expected finite", i, pb[i], pa[i]);
            } else if (i == 3 || i == 9) {
                if (isfinite(pb[i])) FAIL("%s: param[%d] = %g stayed finite after a non-finite gradient",
                                          optim_rule_name(hp.rule), i, pb[i]);
            } else if (memcmp(&pa[i], &pb[i], sizeof(float)) != 0) {
                FAIL("%s: param[%d] = %g changed by another element's NaN (clean run: %g)", optim_rule_name(hp.rule),
                     i, pb[i], pa[i]);
            }
        }
    }
    return 0;
}

/* ---- CPU paths --------------------------------------------------------------------- */

/* 1 if the "flags" line of /proc/cpuinfo lists every flag of `want` (space
 * separated), 0 if not, -1 if it cannot be read (not Linux). */
static int cpuinfo_has(const char *want)
{
    char line[8192], flag[64];
    FILE *f = fopen("/proc/cpuinfo", "r");
    int found = -1;
    const char *w;
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "flags", 5) != 0) continue;
        found = 1;
        for (w = want; *w; w += strcspn(w, " "), w += strspn(w, " ")) {
            size_t len = strcspn(w, " ");
            snprintf(flag, sizeof flag, " %.*s", (int)len, w);
            /* " flag " or " flag\n" */
            {
                const char *at = line;
                int ok = 0;
                while ((at = strstr(at, flag)) != NULL) {
                    char next = at[strlen(flag)];
                    if (next == ' ' || next == '\n' || next == '\0') {
                        ok = 1;
                        break;
                    }
                    at++;
                }
                if (!ok) found = 0;
            }
        }
        break;
    }
    fclose(f);
    return found;
}

/* The CPU paths the suites exercise on this machine, on one line (`make test`
 * prints it first), and checked against the CPU: a dispatch that lost a path
 * would otherwise let every per-path test pass by running none. A path this
 * build has but the CPU lacks, or this build lacks, is named "not exercised". */
TEST_IMPL(cpu_paths)
{
    static const struct {
        optim_isa isa;
        int built;
        const char *flags; /* /proc/cpuinfo flags the path needs (x86-64), or NULL */
    } paths[] = {
        {OPTIM_ISA_SCALAR, 1, NULL},
#if defined(OPTIM_HAVE_AVX2)
        {OPTIM_ISA_AVX2, 1, "avx2 fma f16c"},
#else
        {OPTIM_ISA_AVX2, 0, "avx2 fma f16c"},
#endif
#if defined(OPTIM_HAVE_AVX512)
        {OPTIM_ISA_AVX512, 1, "avx2 fma f16c avx512f avx512dq avx512vl"},
#else
        {OPTIM_ISA_AVX512, 0, "avx2 fma f16c avx512f avx512dq avx512vl"},
#endif
#if defined(OPTIM_HAVE_AVX512BF16)
        {OPTIM_ISA_AVX512BF16, 1, "avx2 fma f16c avx512f avx512dq avx512vl avx512bw avx512_bf16"},
#else
        {OPTIM_ISA_AVX512BF16, 0, "avx2 fma f16c avx512f avx512dq avx512vl avx512bw avx512_bf16"},
#endif
#if defined(OPTIM_HAVE_NEON)
        {OPTIM_ISA_NEON, 1, NULL},
#else
        {OPTIM_ISA_NEON, 0, NULL},
#endif
    };
    char line[512];
    size_t i, used = 0;
    const char *env = getenv("OPTIM_ISA");
    used += (size_t)snprintf(line + used, sizeof line - used, "CPU paths of this build on this machine:");
    for (i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        int avail = optim_isa_available(paths[i].isa);
        const char *name = optim_isa_name(paths[i].isa);
        if (avail && !paths[i].built) FAIL("%s is available but this build has no %s path", name, name);
        if (paths[i].built && paths[i].flags) {
            int cpu = cpuinfo_has(paths[i].flags);
#if defined(__x86_64__)
            if (cpu == 1 && !avail) FAIL("the CPU has %s, but the %s path is not available", paths[i].flags, name);
            if (cpu == 0 && avail) FAIL("the %s path is available, but the CPU lacks one of %s", name, paths[i].flags);
#else
            (void)cpu;
#endif
        }
        used += (size_t)snprintf(line + used, sizeof line - used, "%s %s %s", i ? "," : "", name,
                                 avail ? "exercised"
                                       : paths[i].built ? "not exercised (this CPU cannot run it)"
                                                        : "not exercised (not in this build)");
        if (used >= sizeof line) FAIL("line too long");
    }
    printf("  %s; default %s\n", line, optim_isa_name(optim_isa_default()));
    ASSERT(optim_isa_available(OPTIM_ISA_SCALAR));
    /* OPTIM_ISA picks the default when that path is available. */
    for (i = 0; env && *env && i < sizeof paths / sizeof paths[0]; i++)
        if (strcmp(env, optim_isa_name(paths[i].isa)) == 0 && optim_isa_available(paths[i].isa))
            ASSERT_INT(optim_isa_default(), ==, paths[i].isa);
    return 0;
}

/* The seeds' formulas, written in their own notation, are what the library
 * computes with the documented settings.
 *
 * Each formula runs next to its twin with eps on the other side of the square
 * root. delta = 0.1 and gradients of order 1 make the two forms differ by
 * about 1e-3 after six steps, hundreds of times the tolerance: the test
 * asserts that the twin would fail it, so a library that put eps on the wrong
 * side could not pass (with delta = 1e-6 both forms agreed to 1e-6). */
#define SEED_TOL 2e-6
/* The wrong placement must miss by at least this much. */
#define SEED_WRONG_MIN (100 * SEED_TOL)

static double seed_rms(double x, double delta, int inside)
{
    return inside ? sqrt(x + delta) : sqrt(x) + delta;
}

/* w against the seed's W; at the last step, the twin W_wrong must be far off. */
static int seed_check(const char *rule, int t, int last, float w, double W, double W_wrong)
{
    if (fabs(w - W) > SEED_TOL) FAIL("%s step %d: %.9g vs seed formula %.9g", rule, t, w, W);
    if (t == last && !(fabs(W_wrong - W) > SEED_WRONG_MIN))
        FAIL("%s: the other eps placement gives %.9g vs %.9g: too close for this test to tell them apart", rule,
             W_wrong, W);
    if (t == last)
        printf("  %-8s |w - W| = %.2e, eps on the other side of the root misses by %.2e\n", rule, fabs(w - W),
               fabs(W_wrong - W));
    return 0;
}

TEST_IMPL(seed_formulas)
{
    const double eta = 0.1, delta = 0.1, beta = 0.9, rho = 0.95;
    const float grads[6] = {0.5f, -1.0f, 0.25f, 2.0f, -0.75f, 1.5f};
    optim_hparams hp;
    optim_state st;
    float w, slot[3][1];
    double W, X, r, s, sx;
    int t;

    /* AdaGrad: r = r + g^2;  w = w - eta / sqrt(r + delta) * g  (eps inside, r0 = 0). */
    optim_hparams_init(&hp, OPTIM_ADAGRAD, NULL);
    hp.lr = eta;
    hp.eps = delta;
    hp.eps_placement = OPTIM_EPS_INSIDE;
    memset(&st, 0, sizeof st);
    st.slot[0] = slot[0];
    ASSERT_OK(optim_state_init(&hp, 1, &st, NULL));
    w = 1.0f;
    W = X = 1.0;
    r = 0;
    for (t = 0; t < 6; t++) {
        ASSERT_OK(optim_update(&hp, 1, &w, &grads[t], &st, NULL));
        r = r + (double)grads[t] * grads[t];
        W = W - eta / seed_rms(r, delta, 1) * grads[t];
        X = X - eta / seed_rms(r, delta, 0) * grads[t];
        if (seed_check("AdaGrad", t + 1, 6, w, W, X)) return 1;
    }

    /* RMSProp: r = beta r + (1 - beta) g^2;  w = w - eta / sqrt(r + delta) * g. */
    optim_hparams_init(&hp, OPTIM_RMSPROP, NULL);
    hp.lr = eta;
    hp.alpha = beta;
    hp.eps = delta;
    hp.eps_placement = OPTIM_EPS_INSIDE;
    ASSERT_OK(optim_state_init(&hp, 1, &st, NULL));
    w = 1.0f;
    W = X = 1.0;
    r = 0;
    for (t = 0; t < 6; t++) {
        ASSERT_OK(optim_update(&hp, 1, &w, &grads[t], &st, NULL));
        r = beta * r + (1 - beta) * grads[t] * grads[t];
        W = W - eta / seed_rms(r, delta, 1) * grads[t];
        X = X - eta / seed_rms(r, delta, 0) * grads[t];
        if (seed_check("RMSProp", t + 1, 6, w, W, X)) return 1;
    }

    /* AdaDelta (no learning rate): r = rho r + (1 - rho) g^2;
     * dw = -sqrt(s_prev + delta) / sqrt(r + delta) * g;  s = rho s + (1 - rho) dw^2;  w = w + dw. */
    optim_hparams_init(&hp, OPTIM_ADADELTA, NULL);
    hp.lr = 1.0;
    hp.rho = rho;
    hp.eps = delta;
    st.slot[1] = slot[1];
    ASSERT_OK(optim_state_init(&hp, 1, &st, NULL));
    w = 1.0f;
    W = X = 1.0;
    r = s = sx = 0;
    for (t = 0; t < 6; t++) {
        double dw, dx;
        ASSERT_OK(optim_update(&hp, 1, &w, &grads[t], &st, NULL));
        r = rho * r + (1 - rho) * grads[t] * grads[t];
        dw = -seed_rms(s, delta, 1) / seed_rms(r, delta, 1) * grads[t];
        dx = -seed_rms(sx, delta, 0) / seed_rms(r, delta, 0) * grads[t];
        s = rho * s + (1 - rho) * dw * dw;
        sx = rho * sx + (1 - rho) * dx * dx;
        W = W + dw;
        X = X + dx;
        if (seed_check("AdaDelta", t + 1, 6, w, W, X)) return 1;
    }

    /* Adam: s, r moments; s^ = s / (1 - b1^t), r^ = r / (1 - b2^t);  w = w - eta s^ / (sqrt(r^) + delta). */
    optim_hparams_init(&hp, OPTIM_ADAM, NULL);
    hp.lr = eta;
    hp.eps = delta;
    st.slot[2] = slot[2];
    ASSERT_OK(optim_state_init(&hp, 1, &st, NULL));
    w = 1.0f;
    W = X = 1.0;
    r = s = 0;
    for (t = 1; t <= 6; t++) {
        double sh, rh;
        ASSERT_OK(optim_update(&hp, 1, &w, &grads[t - 1], &st, NULL));
        s = 0.9 * s + 0.1 * grads[t - 1];
        r = 0.999 * r + 0.001 * grads[t - 1] * grads[t - 1];
        sh = s / (1 - pow(0.9, t));
        rh = r / (1 - pow(0.999, t));
        W = W - eta * sh / seed_rms(rh, delta, 0);
        X = X - eta * sh / seed_rms(rh, delta, 1);
        if (seed_check("Adam", t, 6, w, W, X)) return 1;
    }

    /* AdamW (the slides' form): dw = -eta s^ / (sqrt(r^) + delta) - eta lambda w. */
    optim_hparams_init(&hp, OPTIM_ADAMW, NULL);
    hp.lr = eta;
    hp.eps = delta;
    hp.weight_decay = 0.3;
    ASSERT_OK(optim_state_init(&hp, 1, &st, NULL));
    w = 1.0f;
    W = X = 1.0;
    r = s = 0;
    for (t = 1; t <= 6; t++) {
        double sh, rh;
        ASSERT_OK(optim_update(&hp, 1, &w, &grads[t - 1], &st, NULL));
        s = 0.9 * s + 0.1 * grads[t - 1];
        r = 0.999 * r + 0.001 * grads[t - 1] * grads[t - 1];
        sh = s / (1 - pow(0.9, t));
        rh = r / (1 - pow(0.999, t));
        W = W - eta * sh / seed_rms(rh, delta, 0) - eta * 0.3 * W;
        X = X - eta * sh / seed_rms(rh, delta, 1) - eta * 0.3 * X;
        if (seed_check("AdamW", t, 6, w, W, X)) return 1;
    }
    return 0;
}
