/* rules.h: every rule's math, the union of their per-step constants, and the
 * rule table's row type. Included by the kernels and by the host code. */
#ifndef OPTIM_RULES_H
#define OPTIM_RULES_H

#include "rule.h"

#include "sgd.h"
#include "adagrad.h"
#include "rmsprop.h"
#include "adadelta.h"
#include "adam.h"
#include "radam.h"
#include "nadam.h"
#include "adabound.h"
#include "sam.h"

/* Per-parameter, per-step constants: computed by the host before the
 * parallel pass, read by every block of that parameter. */
union optim__ku {
    optim__sgd_k sgd;
    optim__adagrad_k adagrad;
    optim__rmsprop_k rmsprop;
    optim__adadelta_k adadelta;
    optim__adam_k adam; /* also AdamW */
    optim__radam_k radam;
    optim__nadam_k nadam;
    optim__adabound_k adabound;
    optim__sam_k sam; /* SAM's ascent step (not a rule) */
    struct {
        float a, b;
    } util; /* the gradient utilities' constants (kernels: scale, clamp) */
};

typedef struct optim__k {
    optim__kcommon c;
    union optim__ku u;
} optim__k;

/* What the host passes to a rule's prepare for one step. */
typedef struct optim__step_in {
    double lr;    /* the learning rate in effect (a schedule may replace hp->lr) */
    float gscale; /* factor on the raw gradient before maximize (clipping); 1 if none */
    float gclip;  /* clamp of the raw gradient to [-gclip, gclip] (value clipping); +inf if none */
} optim__step_in;

#define OPTIM__USES(name) (1u << OPTIM_HP_##name)

/* One row of the rule table. */
typedef struct optim__rule_def {
    optim_rule id;
    const char *name;       /* "adam" */
    const char *torch_name; /* "Adam" */
    uint32_t uses;          /* OPTIM__USES bits of the hyperparameters it reads */
    int nslots;
    const char *slot_names[OPTIM_MAX_SLOTS]; /* torch.optim's state keys */
    unsigned lazy_slots;                     /* slots filled from the first gradient, not at init */
    int has_step;                            /* torch's state has a 'step' */
    /* Set the rule's defaults into a zeroed struct (rule already set). */
    void (*defaults)(optim_hparams *hp);
    /* Checks across fields, after each field passed its range check; NULL if none. */
    int (*check)(const optim_hparams *hp, optim_error *err);
    /* Slots needed under hp. */
    unsigned (*slots)(const optim_hparams *hp);
    /* Initial value of a slot's elements; NULL: every slot starts at 0. */
    float (*initial)(const optim_hparams *hp, int slot);
    /* st->step has already been incremented; fill the rule's constants and
     * variant bits (c already holds the shared ones), update scalar state. */
    void (*prepare)(const optim_hparams *hp, const optim__step_in *in, optim_state *st, optim__kcommon *c,
                    union optim__ku *u);
    /* After the pass: update `initialized` bits; NULL if nothing to do. */
    void (*finish)(const optim_hparams *hp, optim_state *st);
} optim__rule_def;

/* The row for a rule, or NULL for an unknown value. */
const optim__rule_def *optim__rule(optim_rule rule);

/* Validate hp; message prefixed with the rule's name. */
int optim__hparams_check(const optim_hparams *hp, optim_error *err);

/* Compute the constants of one step for one parameter: increments st->step,
 * updates scalar state, fills *k. hp must be valid. */
void optim__prepare(const optim_hparams *hp, const optim__step_in *in, optim_state *st, optim__k *k);

/* After the pass: let the rule record what the step initialized. */
void optim__finish(const optim_hparams *hp, optim_state *st);

/* The value every element of slot s starts from under hp, and (in
 * *initialized) whether the slot then counts as initialized (not for lazy
 * slots). */
float optim__slot_initial(const optim_hparams *hp, int s, int *initialized);

/* Fill slot s of st with its initial value (as at allocation), whatever the
 * options need; sets its `initialized` bit (cleared for lazy slots). */
void optim__slot_reset(const optim_hparams *hp, size_t n, optim_state *st, int s);

/* Fill slot arrays of st (bits `which`, among those hp needs) with their initial values. */
void optim__state_fill(const optim_hparams *hp, size_t n, optim_state *st, unsigned which);

#endif
