/* ref.h: an independent reference for every rule, in double precision,
 * written straight from the formulas (torch.optim's semantics and the
 * AdaBound reference), one element at a time, sharing no code with the
 * library. Tests compare the library's results with it. The reference keeps
 * its own state: step counter, NAdam's mu_product, whether SGD's momentum
 * buffer holds data, and every state array. */
#ifndef OPTIM_TEST_REF_H
#define OPTIM_TEST_REF_H

#include "optim.h"

#include <stddef.h>

typedef struct ref_state {
    optim_rule rule;
    size_t n;
    long step;
    double mu_product;
    int buf_init;   /* SGD: momentum buffer holds data */
    double base_lr; /* AdaBound: lr the bounds are relative to */
    double eta;     /* ASGD: the step size of the next step (a float32 value, as torch keeps it) */
    double *m, *v, *vmax, *buf, *sq, *acc, *ga, *sum;
    double *inf, *ax, *prev, *ss; /* Adamax's exp_inf, ASGD's average, Rprop's prev and step sizes */
    double *tmp, *tmp2;           /* LAMB's update, the per-tensor rules' gradient */
    /* Schedule-free rules: the reference's group scalars, whether z holds data, z */
    double lr_max, weight_sum;
    int z_init;
    double *z;
} ref_state;

/* 1 if the reference has rule `rule` (tests fail loudly on a rule without one). */
int ref_has(optim_rule rule);
/* Allocate and reset (AdaGrad's sum starts at initial_accumulator_value);
 * -1 if out of memory or if the reference has no such rule (message printed). */
int ref_init(ref_state *st, const optim_hparams *hp, size_t n);
void ref_free(ref_state *st);
/* One step of hp's rule with learning rate lr (hp->lr is ignored), for
 * float32 tensors: the gradient the rule sees is formed in float, as torch
 * forms it on float tensors; the rule's own math runs in double. */
void ref_step(const optim_hparams *hp, double lr, double *p, const float *g, ref_state *st);
/* The same for float64 tensors: everything in double. */
void ref_step64(const optim_hparams *hp, double lr, double *p, const double *g, ref_state *st);
/* Schedule-free rules: the reference's train() (to_eval 0) or eval() (1) on
 * p, in double: p = lerp(p, z, 1 - c) or lerp(p, z, 1 - 1/c), c = momentum
 * or beta1; nothing while z holds no data. */
void ref_sf_switch(const optim_hparams *hp, double *p, const ref_state *st, int to_eval);
/* The reference array matching the library's slot s of the state's rule, or NULL. */
double *ref_slot(const ref_state *st, int s);
/* Continue from the library's float values: parameters into p and every
 * slot the options need. Only float arrays: see the comment in ref.c. */
void ref_sync(ref_state *rs, const optim_hparams *hp, double *p, const float *pf, const optim_state *st);
/* The same from float64 values (st's slots point at doubles). */
void ref_sync64(ref_state *rs, const optim_hparams *hp, double *p, const double *pd, const optim_state *st);

#endif
