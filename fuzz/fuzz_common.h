/* fuzz_common.h: the optimizers the checkpoint fuzzer loads into, and the
 * seed corpus built from them: one per rule, two groups, three named
 * parameters (one of them 8 x 8), a schedule and options that allocate every
 * kind of state. Muon steps 2-D parameters: its a and b are 1 x 5 and
 * 17 x 1 (its narrowest shapes), and with liboptim_muon (OPTIM_FUZZ_MUON,
 * OpenBLAS found) it is attached, so that a loaded Muon state is stepped. */
#ifndef OPTIM_FUZZ_COMMON_H
#define OPTIM_FUZZ_COMMON_H

#include "optim.h"
#include "optim_schedule.h"
#ifdef OPTIM_FUZZ_MUON
#include "optim_muon.h"
#endif

static const size_t fuzz_n[3] = {5, 17, 64};
static float fuzz_w[OPTIM_RULE_COUNT + 1][3][64], fuzz_g[3][64];

/* The optimizer of `rule` for the fuzzer (NULL on failure). */
static optim *fuzz_optimizer(optim_rule rule, int with_options)
{
    static const char *names[3] = {"a", "b", "c"};
    optim *o = NULL;
    optim_hparams hp;
    optim_schedule *s = NULL;
    size_t k;
    if (optim_create(&o, rule) != OPTIM_OK) return NULL;
    optim_hparams_init(&hp, rule, NULL);
    if (with_options) {
        if (optim_rule_uses(rule, OPTIM_HP_MOMENTUM)) hp.momentum = 0.9;
        if (optim_rule_uses(rule, OPTIM_HP_AMSGRAD)) hp.amsgrad = 1;
        if (optim_rule_uses(rule, OPTIM_HP_CENTERED)) hp.centered = 1;
    }
    optim_add_group(o, &hp, NULL);
    optim_add_group(o, &hp, NULL);
    for (k = 0; k < 3; k++) optim_add_param(o, k == 2, fuzz_w[rule][k], fuzz_g[k], fuzz_n[k], names[k], NULL);
    { /* shapes: c is 8 x 8 in every fuzz optimizer, b is given [17] with the options; Muon's are all 2-D */
        static const int64_t c_shape[2] = {8, 8}, b_shape[1] = {17}, a_row[2] = {1, 5}, b_col[2] = {17, 1};
        optim_param_set_shape(o, 2, 2, c_shape);
        if (rule == OPTIM_MUON) {
            optim_param_set_shape(o, 0, 2, a_row);
            optim_param_set_shape(o, 1, 2, b_col);
        } else if (with_options) {
            optim_param_set_shape(o, 1, 1, b_shape);
        }
    }
#ifdef OPTIM_FUZZ_MUON
    if (rule == OPTIM_MUON) optim_muon_attach(o);
#endif
    if (with_options && optim_schedule_cosine(&s, 100, 1e-4, NULL) == OPTIM_OK) {
        optim_schedule *w = NULL;
        if (optim_schedule_warmup(&w, 5, s, NULL) == OPTIM_OK) {
            optim_group_set_schedule(o, 0, w);
            optim_schedule_free(w);
        }
    }
    return o;
}

#endif
