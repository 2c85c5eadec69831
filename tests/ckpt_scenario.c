/* ckpt_scenario.c: see ckpt_scenario.h. */
#include "ckpt_scenario.h"

#include "optim_schedule.h"
#include "optim_sparse.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const size_t scn_sizes[SCN_PARAMS] = {7, 1000, 33};

const char *scenario_name(int id)
{
    static const char *names[SCN_COUNT] = {
        "sgd nesterov + SAM + step schedule",        "adagrad lr_decay + clip + skip NaN",
        "rmsprop centered momentum + multistep",     "adadelta momentum + warm-up/cosine",
        "adam amsgrad + clip + skip NaN + warm-up",  "adamw + ASAM p=inf + WSD",
        "radam decoupled + cyclic",                   "nadam decoupled + ASAM p=3 + exponential",
        "adabound amsbound + one-cycle",              "lion", "adamax", "asgd", "rprop",
        "lamb",                                       "lars", "adafactor decay + d 1.5 + step schedule",
        "sparse_adam: sparse steps, tests/test_sparse.c",
        "sgd_schedule_free warm-up + step schedule", "adamw_schedule_free r + decay + cosine",
        "sgd momentum + constant + clip norm 1",      "adam + linear + nonfinite=error",
        "adamw amsgrad + polynomial + clip norm inf", "rmsprop + cosine restarts + skip NaN",
        "adagrad + cyclic sawtooth (down 0)",         "nadam + cyclic exp_range + clip norm 1",
        "radam + sequential + clip value 0.3",        "adabound + one-cycle three-phase + clip value",
        "sgd nesterov + SAM + clip inf + skip NaN"};
    return id >= 0 && id < SCN_COUNT ? names[id] : "?";
}

static float scn_noise(int t, size_t k, size_t i)
{
    unsigned h = (unsigned)t * 2654435761u ^ (unsigned)(k * 97 + i) * 40503u;
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    h ^= h >> 15;
    return (float)(h % 20001) * 1e-4f - 1.0f;
}

static void scn_grads(scenario_run *run, int t)
{
    size_t k, i;
    for (k = 0; k < SCN_PARAMS; k++)
        for (i = 0; i < run->n[k]; i++)
            run->g[k][i] = run->a[k][i] * (run->w[k][i] - run->c[k][i]) + 0.2f * scn_noise(t, k, i);
    if (t == run->nan_step) run->g[1][500] = NAN;
}

#define CHECK(expr)                                                                                       \
    do {                                                                                                  \
        int rc_ = (expr);                                                                                 \
        if (rc_ != OPTIM_OK) {                                                                            \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr,                                 \
                    run->opt ? optim_errmsg(run->opt) : optim_err_name(rc_));                             \
            return -1;                                                                                    \
        }                                                                                                 \
    } while (0)

static int scenario_extra(int id, scenario_run *run);
static int scn_params(scenario_run *run);

/* Not SparseAdam (sparse gradients: tests/test_sparse.c resumes it) nor Muon (2-D parameters through
 * liboptim_muon, which this suite and its child do not link: tests/test_muon.c resumes it). */
int scenario_exists(int id)
{
    return id >= OPTIM_RULE_COUNT ? id < SCN_COUNT
                                  : optim_rule_name((optim_rule)(id + 1)) != NULL &&
                                        optim_rule_sparse((optim_rule)(id + 1)) != OPTIM_SPARSE_ONLY &&
                                        id + 1 != OPTIM_MUON;
}

int scenario_build(int id, scenario_run *run)
{
    optim_rule rule = (optim_rule)(id + 1);
    optim_hparams hp[2];
    optim_schedule *s = NULL, *c = NULL;
    memset(run, 0, sizeof *run);
    run->id = id;
    run->nan_step = -1;
    if (id >= OPTIM_RULE_COUNT) return scenario_extra(id, run);
    CHECK(optim_create(&run->opt, rule));
    optim_hparams_init(&hp[0], rule, NULL);
    switch (rule) {
    case OPTIM_SGD: hp[0].lr = 0.02; hp[0].momentum = 0.9; hp[0].nesterov = 1; hp[0].weight_decay = 0.01; break;
    case OPTIM_ADAGRAD: hp[0].lr = 0.05; hp[0].lr_decay = 0.01; hp[0].initial_accumulator_value = 0.1; break;
    case OPTIM_RMSPROP: hp[0].centered = 1; hp[0].momentum = 0.5; break;
    case OPTIM_ADADELTA: hp[0].momentum = 0.5; hp[0].eps_placement = OPTIM_EPS_OUTSIDE; break;
    case OPTIM_ADAM: hp[0].amsgrad = 1; hp[0].lr = 0.01; break;
    case OPTIM_ADAMW: hp[0].lr = 0.01; hp[0].bias_correction = 0; break;
    case OPTIM_RADAM: hp[0].decoupled_weight_decay = 1; hp[0].weight_decay = 0.1; hp[0].beta2 = 0.99; break;
    case OPTIM_NADAM: hp[0].decoupled_weight_decay = 1; hp[0].weight_decay = 0.05; break;
    case OPTIM_ADABOUND: hp[0].amsgrad = 1; hp[0].lr = 0.01; hp[0].gamma = 0.01; break;
    case OPTIM_LION: hp[0].lr = 1e-3; hp[0].weight_decay = 0.5; break;
    case OPTIM_ADAMAX: hp[0].weight_decay = 0.01; hp[0].maximize = 1; break;
    case OPTIM_ASGD: hp[0].t0 = 7; hp[0].lambd = 0.01; break; /* the average starts at step 8 */
    case OPTIM_RPROP: hp[0].etaminus = 0.4; hp[0].step_size_max = 0.5; break;
    case OPTIM_LAMB: hp[0].lr = 0.01; hp[0].trust_clip = 1; break;
    case OPTIM_LARS: hp[0].lr = 0.5; hp[0].momentum = 0.9; hp[0].weight_decay = 1e-4; hp[0].nesterov = 1; break;
    case OPTIM_ADAFACTOR: hp[0].weight_decay = 0.5; hp[0].clip_threshold = 1.5; break; /* fc.weight factored */
    case OPTIM_SGD_SCHEDULE_FREE: hp[0].lr = 0.05; hp[0].warmup_steps = 6; hp[0].weight_decay = 0.01; break;
    case OPTIM_ADAMW_SCHEDULE_FREE: hp[0].lr = 0.01; hp[0].r = 1; hp[0].weight_decay = 0.05; break;
    default: break;
    }
    hp[1] = hp[0];
    hp[1].lr *= 0.5;
    if (optim_rule_uses(rule, OPTIM_HP_WEIGHT_DECAY))
        hp[1].weight_decay = 0.02; /* group 1: another decay (coupled or decoupled as the rule's) */
    CHECK(optim_add_group(run->opt, &hp[0], NULL));
    CHECK(optim_add_group(run->opt, &hp[1], NULL));
    if (scn_params(run)) return -1;
    /* A schedule on group 0 (group 1 keeps its lr). */
    switch (rule) {
    case OPTIM_SGD: CHECK(optim_schedule_step(&s, 7, 0.7, NULL)); break;
    case OPTIM_RMSPROP: CHECK(optim_schedule_multistep(&s, (const int64_t[]){5, 12, 30}, 3, 0.5, NULL)); break;
    case OPTIM_ADADELTA:
    case OPTIM_ADAM:
        CHECK(optim_schedule_cosine(&c, 40, 1e-4, NULL));
        CHECK(optim_schedule_warmup(&s, 10, c, NULL));
        break;
    case OPTIM_ADAMW: CHECK(optim_schedule_wsd(&s, 5, 10, 20, 1e-4, 1, NULL)); break;
    case OPTIM_RADAM: CHECK(optim_schedule_cyclic(&s, 1e-4, 1e-2, 6, 4, OPTIM_CYCLIC_TRIANGULAR2, 1.0, NULL)); break;
    case OPTIM_NADAM: CHECK(optim_schedule_exponential(&s, 0.97, NULL)); break;
    case OPTIM_ADABOUND: CHECK(optim_schedule_one_cycle(&s, 0.02, 60, 0.3, 1, 25, 1e4, 0, NULL)); break;
    case OPTIM_ASGD: CHECK(optim_schedule_step(&s, 9, 0.5, NULL)); break; /* eta follows the lr of each step */
    case OPTIM_LARS: CHECK(optim_schedule_step(&s, 6, 0.5, NULL)); break;
    case OPTIM_ADAFACTOR: CHECK(optim_schedule_step(&s, 9, 0.5, NULL)); break; /* rho = min(lr, 1/sqrt(t)) follows */
    case OPTIM_SGD_SCHEDULE_FREE: CHECK(optim_schedule_step(&s, 8, 0.6, NULL)); break; /* lr_max holds */
    case OPTIM_ADAMW_SCHEDULE_FREE: CHECK(optim_schedule_cosine(&s, 40, 1e-4, NULL)); break;
    case OPTIM_LION:
        CHECK(optim_schedule_cosine(&c, 50, 1e-5, NULL));
        CHECK(optim_schedule_warmup(&s, 5, c, NULL));
        break;
    default: break;
    }
    if (s) {
        CHECK(optim_group_set_schedule(run->opt, 0, s));
        optim_schedule_free(s);
    }
    if (rule == OPTIM_LAMB) CHECK(optim_set_clip_grad_norm(run->opt, 1.0, 2.0)); /* timm's max_grad_norm */
    if (rule == OPTIM_ADAGRAD || rule == OPTIM_ADAM) {
        CHECK(optim_set_clip_grad_norm(run->opt, 5.0, 2.0));
        CHECK(optim_set_nonfinite(run->opt, OPTIM_NONFINITE_SKIP));
        run->nan_step = 11;
    }
    if (rule == OPTIM_SGD) CHECK(optim_sam_create(&run->sam, run->opt, 0.05, 2.0, 0, 0.0, NULL));
    if (rule == OPTIM_ADAMW) CHECK(optim_sam_create(&run->sam, run->opt, 0.01, INFINITY, 1, 0.0, NULL));
    if (rule == OPTIM_NADAM) CHECK(optim_sam_create(&run->sam, run->opt, 0.05, 3.0, 1, 0.01, NULL));
    return 0;
}

/* The parameters of every scenario: embed and fc.weight in group 0, fc.bias in group 1. */
static int scn_params(scenario_run *run)
{
    static const char *names[SCN_PARAMS] = {"embed", "fc.weight", "fc.bias"};
    static const int64_t shape[2] = {40, 25};
    size_t k, i;
    for (k = 0; k < SCN_PARAMS; k++) {
        run->n[k] = scn_sizes[k];
        run->w[k] = (float *)malloc(run->n[k] * sizeof(float));
        run->g[k] = (float *)malloc(run->n[k] * sizeof(float));
        run->a[k] = (float *)malloc(run->n[k] * sizeof(float));
        run->c[k] = (float *)malloc(run->n[k] * sizeof(float));
        if (!run->w[k] || !run->g[k] || !run->a[k] || !run->c[k]) return -1;
        for (i = 0; i < run->n[k]; i++) {
            run->w[k][i] = scn_noise(-1, k, i);
            run->a[k][i] = 0.5f + 0.5f * (scn_noise(-2, k, i) + 1.0f);
            run->c[k][i] = scn_noise(-3, k, i);
        }
        CHECK(optim_add_param(run->opt, k == 2 ? 1 : 0, run->w[k], run->g[k], run->n[k], names[k], NULL));
    }
    CHECK(optim_param_set_shape(run->opt, 1, 2, shape)); /* fc.weight is 40 x 25 */
    return 0;
}

/* Scenarios OPTIM_RULE_COUNT .. OPTIM_RULE_COUNT + 8: schedules, clipping norms and policies the
 * first ones (one per rule) lack. */
static int scenario_extra(int id, scenario_run *run)
{
    static const optim_rule rules[9] = {OPTIM_SGD,  OPTIM_ADAM,  OPTIM_ADAMW, OPTIM_RMSPROP, OPTIM_ADAGRAD,
                                        OPTIM_NADAM, OPTIM_RADAM, OPTIM_ADABOUND, OPTIM_SGD};
    int x = id - OPTIM_RULE_COUNT;
    optim_rule rule;
    optim_hparams hp[2];
    optim_schedule *s = NULL, *kids[3] = {NULL, NULL, NULL};
    if (x < 0 || x >= 9) {
        fprintf(stderr, "no scenario %d\n", id);
        return -1;
    }
    rule = rules[x];
    CHECK(optim_create(&run->opt, rule));
    optim_hparams_init(&hp[0], rule, NULL);
    if (rule == OPTIM_SGD) {
        hp[0].lr = 0.02;
        hp[0].momentum = 0.9;
        hp[0].nesterov = x == 8;
    }
    if (rule == OPTIM_ADAMW) hp[0].amsgrad = 1;
    if (rule == OPTIM_ADAM || rule == OPTIM_ADAMW || rule == OPTIM_ADABOUND) hp[0].lr = 0.01;
    hp[1] = hp[0];
    hp[1].lr *= 0.5;
    CHECK(optim_add_group(run->opt, &hp[0], NULL));
    CHECK(optim_add_group(run->opt, &hp[1], NULL));
    if (scn_params(run)) return -1;
    switch (x) {
    case 0: CHECK(optim_schedule_constant(&s, 0.3, 5, NULL)); break;
    case 1: CHECK(optim_schedule_linear(&s, 0.1, 1.0, 7, NULL)); break;
    case 2: CHECK(optim_schedule_polynomial(&s, 30, 2.0, NULL)); break;
    case 3: CHECK(optim_schedule_cosine_restarts(&s, 3, 2, 1e-5, NULL)); break;
    case 4: CHECK(optim_schedule_cyclic(&s, 1e-3, 5e-2, 5, 0, OPTIM_CYCLIC_TRIANGULAR, 1.0, NULL)); break;
    case 5: CHECK(optim_schedule_cyclic(&s, 1e-4, 1e-2, 3, 5, OPTIM_CYCLIC_EXP_RANGE, 0.9, NULL)); break;
    case 6: {
        static const int64_t miles[2] = {4, 14};
        CHECK(optim_schedule_linear(&kids[0], 0.1, 1.0, 4, NULL));
        CHECK(optim_schedule_cosine(&kids[1], 10, 0.0, NULL));
        CHECK(optim_schedule_step(&kids[2], 2, 0.5, NULL));
        CHECK(optim_schedule_sequential(&s, kids, 3, miles, NULL));
        break;
    }
    case 7: CHECK(optim_schedule_one_cycle(&s, 0.02, 45, 0.25, 0, 25, 1e4, 1, NULL)); break;
    default: CHECK(optim_schedule_step(&s, 5, 0.8, NULL)); break;
    }
    CHECK(optim_group_set_schedule(run->opt, 0, s));
    optim_schedule_free(s);
    if (x == 0 || x == 5) CHECK(optim_set_clip_grad_norm(run->opt, 2.0, 1.0));
    if (x == 2 || x == 8) CHECK(optim_set_clip_grad_norm(run->opt, 0.5, INFINITY));
    if (x == 6 || x == 7) CHECK(optim_set_clip_grad_value(run->opt, x == 6 ? 0.3 : 0.05));
    if (x == 1) {
        CHECK(optim_set_nonfinite(run->opt, OPTIM_NONFINITE_ERROR));
        run->nan_step = 25; /* after the resume */
    }
    if (x == 3 || x == 8) {
        CHECK(optim_set_nonfinite(run->opt, OPTIM_NONFINITE_SKIP));
        run->nan_step = x == 3 ? 23 : 11;
    }
    if (x == 8) CHECK(optim_sam_create(&run->sam, run->opt, 0.05, 2.0, 0, 0.0, NULL));
    return 0;
}

void scenario_free(scenario_run *run)
{
    size_t k;
    optim_sam_free(run->sam);
    optim_free(run->opt);
    for (k = 0; k < SCN_PARAMS; k++) {
        free(run->w[k]);
        free(run->g[k]);
        free(run->a[k]);
        free(run->c[k]);
    }
    memset(run, 0, sizeof *run);
}

int scenario_step(scenario_run *run, int t)
{
    int rc;
    scn_grads(run, t);
    if (run->sam) {
        rc = optim_sam_first_step(run->sam);
        if (rc == OPTIM_ENONFINITE && optim_get_nonfinite(run->opt) == OPTIM_NONFINITE_ERROR) {
            run->refused++; /* nothing moved: the loop drops the batch */
            return 0;
        }
        if (rc != OPTIM_OK) {
            fprintf(stderr, "first_step: %s\n", optim_sam_errmsg(run->sam));
            return -1;
        }
        scn_grads(run, t);
        if (optim_sam_second_step(run->sam) != OPTIM_OK) {
            fprintf(stderr, "second_step: %s\n", optim_sam_errmsg(run->sam));
            return -1;
        }
        return 0;
    }
    rc = optim_step(run->opt);
    if (rc == OPTIM_ENONFINITE && optim_get_nonfinite(run->opt) == OPTIM_NONFINITE_ERROR) {
        run->refused++; /* nothing was updated: the loop drops the batch */
        return 0;
    }
    CHECK(rc);
    return 0;
}

int scenario_snapshot(const scenario_run *run, FILE *f)
{
    size_t k, g;
    int s;
    int64_t v;
    optim_rule rule = optim_get_rule(run->opt);
    v = optim_step_count(run->opt);
    fwrite(&v, sizeof v, 1, f);
    v = optim_skipped_steps(run->opt);
    fwrite(&v, sizeof v, 1, f);
    for (g = 0; g < optim_group_count(run->opt); g++) {
        double lr;
        optim_group_get_schedule_step(run->opt, g, &v);
        fwrite(&v, sizeof v, 1, f);
        optim_group_current_lr(run->opt, g, &lr);
        fwrite(&lr, sizeof lr, 1, f);
    }
    for (k = 0; k < SCN_PARAMS; k++) {
        double mu;
        fwrite(run->w[k], sizeof(float), run->n[k], f);
        optim_param_get_step(run->opt, k, &v);
        fwrite(&v, sizeof v, 1, f);
        optim_param_get_mu_product(run->opt, k, &mu);
        fwrite(&mu, sizeof mu, 1, f);
        for (s = 0; s < optim_rule_slot_count(rule); s++) {
            float *d = NULL;
            int init = 0;
            size_t len = 0; /* n, but Adafactor's slots follow the shape (fc.weight's row_var 40, col_var 25) */
            optim_state_slot(run->opt, k, s, &d, &init);
            optim_state_slot_len(run->opt, k, s, &len);
            fwrite(&init, sizeof init, 1, f);
            fwrite(&len, sizeof len, 1, f);
            if (d && init) fwrite(d, sizeof(float), len, f);
        }
    }
    return ferror(f) ? -1 : 0;
}

int scenario_write_params(const scenario_run *run, const char *path)
{
    FILE *f = fopen(path, "wb");
    size_t k;
    if (!f) return -1;
    for (k = 0; k < SCN_PARAMS; k++) fwrite(run->w[k], sizeof(float), run->n[k], f);
    return fclose(f) == 0 ? 0 : -1;
}

int scenario_read_params(scenario_run *run, const char *path)
{
    FILE *f = fopen(path, "rb");
    size_t k;
    int ok = 1;
    if (!f) return -1;
    for (k = 0; k < SCN_PARAMS; k++) ok &= fread(run->w[k], sizeof(float), run->n[k], f) == run->n[k];
    fclose(f);
    return ok ? 0 : -1;
}
