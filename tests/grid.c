/* grid.c: see grid.h. */
#include "grid.h"

#include <stdio.h>
#include <string.h>

#define AX(id, ...) {OPTIM_HP_##id, sizeof((double[]){__VA_ARGS__}) / sizeof(double), {__VA_ARGS__}}

const grid test_grids[OPTIM_RULE_COUNT] = {
    {OPTIM_SGD, 0.01, 5,
     {AX(MOMENTUM, 0, 0.9), AX(DAMPENING, 0, 0.3), AX(NESTEROV, 0, 1), AX(WEIGHT_DECAY, 0, 0.05),
      AX(MAXIMIZE, 0, 1)}},
    {OPTIM_ADAGRAD, 0.05, 5,
     {AX(LR_DECAY, 0, 0.01), AX(WEIGHT_DECAY, 0, 0.1), AX(INITIAL_ACCUMULATOR_VALUE, 0, 0.1),
      AX(EPS_PLACEMENT, 0, 1), AX(MAXIMIZE, 0, 1), AX(EPS, 1e-10, 0.01)}},
    {OPTIM_RMSPROP, 0.01, 7,
     {AX(ALPHA, 0.99, 0.9), AX(CENTERED, 0, 1), AX(MOMENTUM, 0, 0.9), AX(EPS_PLACEMENT, 0, 1),
      AX(WEIGHT_DECAY, 0, 0.1), AX(MAXIMIZE, 0, 1), AX(EPS, 1e-8, 0.01)}},
    {OPTIM_ADADELTA, 1.0, 6,
     {AX(RHO, 0.9, 0.95), AX(EPS_PLACEMENT, 1, 0), AX(WEIGHT_DECAY, 0, 0.1), AX(MOMENTUM, 0, 0.9),
      AX(MAXIMIZE, 0, 1), AX(EPS, 1e-6, 0.01)}},
    {OPTIM_ADAM, 0.01, 8,
     {AX(AMSGRAD, 0, 1), AX(BIAS_CORRECTION, 1, 0), AX(EPS_PLACEMENT, 0, 1), AX(WEIGHT_DECAY, 0, 0.1),
      AX(DECOUPLED_WEIGHT_DECAY, 0, 1), AX(MAXIMIZE, 0, 1), AX(BETA2, 0.999, 0.95), AX(EPS, 1e-8, 0.01)}},
    {OPTIM_ADAMW, 0.01, 6,
     {AX(AMSGRAD, 0, 1), AX(BIAS_CORRECTION, 1, 0), AX(EPS_PLACEMENT, 0, 1), AX(WEIGHT_DECAY, 0, 0.1),
      AX(MAXIMIZE, 0, 1), AX(EPS, 1e-8, 0.01)}},
    {OPTIM_RADAM, 0.01, 6,
     {AX(EPS_PLACEMENT, 0, 1), AX(WEIGHT_DECAY, 0, 0.1), AX(DECOUPLED_WEIGHT_DECAY, 0, 1), AX(MAXIMIZE, 0, 1),
      AX(BETA2, 0.999, 0.99), AX(EPS, 1e-8, 0.01)}},
    {OPTIM_NADAM, 0.01, 6,
     {AX(EPS_PLACEMENT, 0, 1), AX(WEIGHT_DECAY, 0, 0.1), AX(DECOUPLED_WEIGHT_DECAY, 0, 1), AX(MAXIMIZE, 0, 1),
      AX(MOMENTUM_DECAY, 4e-3, 0), AX(EPS, 1e-8, 0.01)}},
    {OPTIM_ADABOUND, 0.01, 7,
     {AX(AMSGRAD, 0, 1), AX(BIAS_CORRECTION, 1, 0), AX(EPS_PLACEMENT, 0, 1), AX(WEIGHT_DECAY, 0, 0.1),
      AX(MAXIMIZE, 0, 1), AX(GAMMA, 1e-3, 0.1), AX(EPS, 1e-8, 0.01)}},
};

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
