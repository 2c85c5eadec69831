/* ckpt_scenario.c: see ckpt_scenario.h. */
#include "ckpt_scenario.h"

#include "optim_schedule.h"

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
        "adabound amsbound + one-cycle"};
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

int scenario_build(int id, scenario_run *run)
{
    optim_rule rule = (optim_rule)(id + 1);
    optim_hparams hp[2];
    optim_schedule *s = NULL, *c = NULL;
    size_t k, i;
    memset(run, 0, sizeof *run);
    run->id = id;
    run->nan_step = -1;
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
    }
    hp[1] = hp[0];
    hp[1].lr *= 0.5;
    hp[1].weight_decay = 0.02; /* group 1: another decay (coupled or decoupled as the rule's) */
    CHECK(optim_add_group(run->opt, &hp[0], NULL));
    CHECK(optim_add_group(run->opt, &hp[1], NULL));
    for (k = 0; k < SCN_PARAMS; k++) {
        static const char *names[SCN_PARAMS] = {"embed", "fc.weight", "fc.bias"};
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
    default: break;
    }
    if (s) {
        CHECK(optim_group_set_schedule(run->opt, 0, s));
        optim_schedule_free(s);
    }
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
    scn_grads(run, t);
    if (run->sam) {
        if (optim_sam_first_step(run->sam) != OPTIM_OK) {
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
    CHECK(optim_step(run->opt));
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
            optim_state_slot(run->opt, k, s, &d, &init);
            fwrite(&init, sizeof init, 1, f);
            if (d && init) fwrite(d, sizeof(float), run->n[k], f);
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
