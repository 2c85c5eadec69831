/* ref.h: an independent reference for every rule, in double precision,
 * written straight from the formulas (torch.optim's semantics and the
 * AdaBound reference), one element at a time, sharing no code with the
 * library. Tests compare the library's float results with it. */
#ifndef OPTIM_TEST_REF_H
#define OPTIM_TEST_REF_H

#include "optim.h"

#include <stddef.h>

typedef struct ref_state {
    size_t n;
    long step;
    double mu_product;
    int buf_init;   /* SGD: momentum buffer holds data */
    double base_lr; /* AdaBound: lr the bounds are relative to */
    double *m, *v, *vmax, *buf, *sq, *acc, *ga, *sum;
} ref_state;

/* Allocate and reset (AdaGrad's sum starts at initial_accumulator_value). */
int ref_init(ref_state *st, const optim_hparams *hp, size_t n);
void ref_free(ref_state *st);
/* One step of hp's rule with learning rate lr (hp->lr is ignored). */
void ref_step(const optim_hparams *hp, double lr, double *p, const float *g, ref_state *st);
/* The reference array matching the library's slot s of hp->rule, or NULL. */
double *ref_slot(const ref_state *st, optim_rule rule, int s);
/* Make the reference continue from the library's float state: parameters
 * into p, every slot, the step counter and NAdam's mu_product. */
void ref_sync(ref_state *rs, const optim_hparams *hp, double *p, const float *pf, const optim_state *st);

#endif
