/* grid.h: the option grid every rule is tested over: each hyperparameter
 * listed takes each of its values, in every combination (invalid
 * combinations, like nesterov without momentum, are skipped). */
#ifndef OPTIM_TEST_GRID_H
#define OPTIM_TEST_GRID_H

#include "optim.h"

#define GRID_MAX_AXES 8
#define GRID_MAX_VALUES 4

typedef struct grid_axis {
    optim_hparam id;
    int count;
    double values[GRID_MAX_VALUES];
} grid_axis;

typedef struct grid {
    optim_rule rule;
    double lr;
    int naxes;
    grid_axis axes[GRID_MAX_AXES];
} grid;

/* The grid of each rule, keyed by rule (test_grids[OPTIM_ADAM]); entry 0 is unused. */
extern const grid test_grids[OPTIM_RULE_COUNT + 1];

/* The grid of rule (1..OPTIM_RULE_COUNT), checked against its own
 * declaration; a rule without a sound grid ends the test process with a
 * message naming it (so a rule added without a grid fails loudly). */
const grid *grid_for(int rule);

/* Number of combinations of g (valid or not). */
long grid_size(const grid *g);
/* Fill *hp with combination `index` of g; returns 0 if it is a valid set of
 * hyperparameters, -1 otherwise. */
int grid_get(const grid *g, long index, optim_hparams *hp);
/* The last valid combination of g (most options on) into *hp; its index. */
long grid_last_valid(const grid *g, optim_hparams *hp);
/* A one-line description of hp's non-default settings, for failure messages. */
const char *grid_describe(const optim_hparams *hp, char *buf, size_t size);

#endif
