/* ckpt_scenario.h: training runs that a checkpoint test interrupts and
 * resumes, in this process or another one (ckpt_child.c). A scenario is a
 * rule with options, two groups, three parameters, a schedule, and per
 * scenario clipping (norm 2, 1 or inf, or fused value clipping), a non-finite policy (skip, or error,
 * whose refused step the loop drops) with a NaN gradient at one step, or SAM. Gradients are a deterministic function of the weights and the step, so
 * a resumed run must reproduce the uninterrupted one bit for bit. */
#ifndef OPTIM_TEST_CKPT_SCENARIO_H
#define OPTIM_TEST_CKPT_SCENARIO_H

#include "optim.h"
#include "optim_sam.h"

#include <stdio.h>

#define SCN_PARAMS 3
/* One per rule (0..8), then nine more for the schedules, clipping norms and
 * non-finite policies those do not cover (9..17). */
#define SCN_COUNT (OPTIM_RULE_COUNT + 9)

typedef struct scenario_run {
    int id;
    optim *opt;
    optim_sam *sam;
    size_t n[SCN_PARAMS];
    float *w[SCN_PARAMS], *g[SCN_PARAMS], *a[SCN_PARAMS], *c[SCN_PARAMS];
    int nan_step; /* a gradient holds NaN at this step (-1: never) */
    int refused;  /* steps refused by nonfinite=error (the training loop drops the batch) */
} scenario_run;

/* Build scenario id (0 <= id < SCN_COUNT): optimizer, parameters at their
 * initial values, schedule, options. Returns 0 or prints and returns -1. */
int scenario_build(int id, scenario_run *run);
/* Is there a scenario id? Not for a rule value without a rule (reserved for
 * another branch's rule) nor for SparseAdam (sparse steps only: its
 * checkpoint round trip is tests/test_sparse.c's). */
int scenario_exists(int id);
void scenario_free(scenario_run *run);
/* Take step t (0-based): gradients at w (and at w + e for SAM), then the update. */
int scenario_step(scenario_run *run, int t);
/* Everything that must continue bit for bit: parameters, every slot, steps,
 * mu_product, initialized bits, counters and schedule steps, as raw bytes. */
int scenario_snapshot(const scenario_run *run, FILE *f);
/* The parameters alone (what a user saves next to a checkpoint). */
int scenario_write_params(const scenario_run *run, const char *path);
int scenario_read_params(scenario_run *run, const char *path);
const char *scenario_name(int id);

#endif
