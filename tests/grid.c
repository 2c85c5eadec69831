/* grid.c: see grid.h. */
#include "grid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every count is derived from the values written: an axis counts its values,
 * a grid counts its axes (a typed count once dropped Adagrad's eps axis). */
#define AX(id, ...) {OPTIM_HP_##id, (int)(sizeof((double[]){__VA_ARGS__}) / sizeof(double)), {__VA_ARGS__}}
#define GRID(rule_, lr_, ...) \
    [rule_] = {rule_, lr_, (int)(sizeof((grid_axis[]){__VA_ARGS__}) / sizeof(grid_axis)), {__VA_ARGS__}}

/* Keyed by rule: a rule without an entry has rule 0 here, and grid_for fails on it. */
const grid test_grids[OPTIM_RULE_COUNT + 1] = {
    GRID(OPTIM_SGD, 0.01, AX(MOMENTUM, 0, 0.9), AX(DAMPENING, 0, 0.3), AX(NESTEROV, 0, 1), AX(WEIGHT_DECAY, 0, 0.05),
         AX(MAXIMIZE, 0, 1)),
    GRID(OPTIM_ADAGRAD, 0.05, AX(LR_DECAY, 0, 0.01), AX(WEIGHT_DECAY, 0, 0.1), AX(INITIAL_ACCUMULATOR_VALUE, 0, 0.1),
         AX(EPS_PLACEMENT, 0, 1), AX(MAXIMIZE, 0, 1), AX(EPS, 1e-10, 0.01)),
    GRID(OPTIM_RMSPROP, 0.01, AX(ALPHA, 0.99, 0.9), AX(CENTERED, 0, 1), AX(MOMENTUM, 0, 0.9), AX(EPS_PLACEMENT, 0, 1),
         AX(WEIGHT_DECAY, 0, 0.1), AX(MAXIMIZE, 0, 1), AX(EPS, 1e-8, 0.01)),
    GRID(OPTIM_ADADELTA, 1.0, AX(RHO, 0.9, 0.95), AX(EPS_PLACEMENT, 1, 0), AX(WEIGHT_DECAY, 0, 0.1),
         AX(MOMENTUM, 0, 0.9), AX(MAXIMIZE, 0, 1), AX(EPS, 1e-6, 0.01)),
    GRID(OPTIM_ADAM, 0.01, AX(AMSGRAD, 0, 1), AX(BIAS_CORRECTION, 1, 0), AX(EPS_PLACEMENT, 0, 1),
         AX(WEIGHT_DECAY, 0, 0.1), AX(DECOUPLED_WEIGHT_DECAY, 0, 1), AX(MAXIMIZE, 0, 1), AX(BETA2, 0.999, 0.95),
         AX(EPS, 1e-8, 0.01)),
    GRID(OPTIM_ADAMW, 0.01, AX(AMSGRAD, 0, 1), AX(BIAS_CORRECTION, 1, 0), AX(EPS_PLACEMENT, 0, 1),
         AX(WEIGHT_DECAY, 0, 0.1), AX(MAXIMIZE, 0, 1), AX(EPS, 1e-8, 0.01)),
    GRID(OPTIM_RADAM, 0.01, AX(EPS_PLACEMENT, 0, 1), AX(WEIGHT_DECAY, 0, 0.1), AX(DECOUPLED_WEIGHT_DECAY, 0, 1),
         AX(MAXIMIZE, 0, 1), AX(BETA2, 0.999, 0.99), AX(EPS, 1e-8, 0.01)),
    GRID(OPTIM_NADAM, 0.01, AX(EPS_PLACEMENT, 0, 1), AX(WEIGHT_DECAY, 0, 0.1), AX(DECOUPLED_WEIGHT_DECAY, 0, 1),
         AX(MAXIMIZE, 0, 1), AX(MOMENTUM_DECAY, 4e-3, 0), AX(EPS, 1e-8, 0.01)),
    GRID(OPTIM_ADABOUND, 0.01, AX(AMSGRAD, 0, 1), AX(BIAS_CORRECTION, 1, 0), AX(EPS_PLACEMENT, 0, 1),
         AX(WEIGHT_DECAY, 0, 0.1), AX(MAXIMIZE, 0, 1), AX(GAMMA, 1e-3, 0.1), AX(EPS, 1e-8, 0.01)),
    GRID(OPTIM_LION, 0.01, AX(WEIGHT_DECAY, 0, 0.5), AX(DECOUPLED_WEIGHT_DECAY, 1, 0), AX(MAXIMIZE, 0, 1),
         AX(BETA1, 0.9, 0.5), AX(BETA2, 0.99, 0.9)),
    GRID(OPTIM_ADAMAX, 0.01, AX(WEIGHT_DECAY, 0, 0.1), AX(MAXIMIZE, 0, 1), AX(BETA1, 0.9, 0.5),
         AX(BETA2, 0.999, 0.9), AX(EPS, 1e-8, 0.01)),
    GRID(OPTIM_ASGD, 0.01, AX(LAMBD, 1e-4, 0.05), AX(ALPHA, 0.75, 1), AX(T0, 1e6, 5), AX(WEIGHT_DECAY, 0, 0.1),
         AX(MAXIMIZE, 0, 1)),
    GRID(OPTIM_RPROP, 0.01, AX(ETAMINUS, 0.5, 0.3), AX(ETAPLUS, 1.2, 1.5), AX(STEP_SIZE_MIN, 1e-6, 1e-3),
         AX(STEP_SIZE_MAX, 50, 0.02), AX(MAXIMIZE, 0, 1)),
    GRID(OPTIM_LAMB, 0.01, AX(WEIGHT_DECAY, 0.01, 0), AX(ALWAYS_ADAPT, 0, 1), AX(TRUST_CLIP, 0, 1),
         AX(BIAS_CORRECTION, 1, 0), AX(MAXIMIZE, 0, 1), AX(EPS, 1e-6, 0.01)),
    GRID(OPTIM_LARS, 0.1, AX(WEIGHT_DECAY, 0, 0.05), AX(ALWAYS_ADAPT, 0, 1), AX(TRUST_CLIP, 0, 1),
         AX(MOMENTUM, 0, 0.9), AX(DAMPENING, 0, 0.3), AX(NESTEROV, 0, 1), AX(MAXIMIZE, 0, 1),
         AX(TRUST_COEFF, 1e-3, 0.02)),
    GRID(OPTIM_ADAFACTOR, 0.01, AX(WEIGHT_DECAY, 0, 0.1), AX(MAXIMIZE, 0, 1), AX(CLIP_THRESHOLD, 1, 4),
         AX(BETA2_DECAY, -0.8, -0.5), AX(EPS2, 1e-3, 0.1)),
    GRID(OPTIM_SGD_SCHEDULE_FREE, 0.05, AX(MOMENTUM, 0.9, 0.3), AX(WEIGHT_DECAY, 0, 0.05), AX(WARMUP_STEPS, 0, 20),
         AX(R, 0, 1.5), AX(WEIGHT_LR_POWER, 2, 0)),
    GRID(OPTIM_ADAMW_SCHEDULE_FREE, 0.01, AX(BETA1, 0.9, 0.4), AX(WEIGHT_DECAY, 0, 0.1), AX(WARMUP_STEPS, 0, 20),
         AX(R, 0, 1.5), AX(WEIGHT_LR_POWER, 2, 0), AX(BETA2, 0.999, 0.95), AX(EPS, 1e-8, 0.01)),
};

/* Checks a grid's own declaration; NULL if sound, else why not. */
static const char *grid_unsound(const grid *g, int rule)
{
    int a;
    if (g->rule != (optim_rule)rule) return "no grid for this rule in tests/grid.c";
    if (g->naxes < 1 || g->naxes > GRID_MAX_AXES) return "axis count outside 1..GRID_MAX_AXES";
    for (a = 0; a < g->naxes; a++) {
        if (g->axes[a].count < 1 || g->axes[a].count > GRID_MAX_VALUES) return "an axis with 0 or too many values";
        if (!optim_rule_uses(g->rule, g->axes[a].id)) return "an axis the rule does not use";
    }
    return NULL;
}

const grid *grid_for(int rule)
{
    const char *why = rule >= 1 && rule <= OPTIM_RULE_COUNT ? grid_unsound(&test_grids[rule], rule) : "not a rule";
    if (why) {
        fprintf(stderr, "tests/grid.c: rule %d (%s): %s\n", rule, optim_rule_name((optim_rule)rule) ?
                optim_rule_name((optim_rule)rule) : "?", why);
        exit(1);
    }
    return &test_grids[rule];
}

long grid_size(const grid *g)
{
    long n = 1;
    int a;
    for (a = 0; a < g->naxes; a++) n *= g->axes[a].count;
    return n;
}

int grid_get(const grid *g, long index, optim_hparams *hp)
{
    int a;
    if (optim_hparams_init(hp, g->rule, NULL) != OPTIM_OK) return -1;
    hp->lr = g->lr;
    for (a = 0; a < g->naxes; a++) {
        const grid_axis *ax = &g->axes[a];
        if (optim_hparams_set(hp, ax->id, ax->values[index % ax->count], NULL) != OPTIM_OK) return -1;
        index /= ax->count;
    }
    return optim_hparams_check(hp, NULL) == OPTIM_OK ? 0 : -1;
}

long grid_last_valid(const grid *g, optim_hparams *hp)
{
    long c = grid_size(g) - 1;
    while (c >= 0 && grid_get(g, c, hp) != 0) c--;
    return c;
}

const char *grid_describe(const optim_hparams *hp, char *buf, size_t size)
{
    optim_hparams def;
    size_t used;
    int id;
    optim_hparams_init(&def, hp->rule, NULL);
    used = (size_t)snprintf(buf, size, "%s", optim_rule_name(hp->rule));
    for (id = 1; id <= OPTIM_HP_COUNT && used < size; id++) {
        double a, b;
        optim_hparams_get(hp, (optim_hparam)id, &a, NULL);
        optim_hparams_get(&def, (optim_hparam)id, &b, NULL);
        if (a != b) used += (size_t)snprintf(buf + used, size - used, " %s=%g", optim_hparam_name((optim_hparam)id), a);
    }
    return buf;
}
