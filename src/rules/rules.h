/* rules.h: every rule's shared section (variants, constants, slots), the
 * union of their per-step constants, and the rule table's row type, all
 * generated from rule_list.h. Included by the kernels and by the host code. */
#ifndef OPTIM_RULES_H
#define OPTIM_RULES_H

#include "rule.h"

#include "optim_rule_headers.h" /* generated from rule_list.h: every rule header */

/* Each rule's per-step constants as the host computes them (in double):
 * optim__<name>_k, with the fields of OPTIM__<ID>_K. */
#define OPTIM__HOST_K(ID, value, name) typedef struct optim__##name##_k { OPTIM__##ID##_K(OPTIM__FIELD_HOST) } optim__##name##_k;
OPTIM__RULE_LIST(OPTIM__HOST_K, OPTIM__LIST_NOTHING)
#undef OPTIM__HOST_K

/* Per-parameter, per-step constants of the rule with its own math (an alias
 * uses its math's member): computed by the host before the parallel pass,
 * read by every block of that parameter. */
#define OPTIM__KU_MEMBER(ID, value, name) optim__##name##_k name;
union optim__ku {
    OPTIM__RULE_LIST(OPTIM__KU_MEMBER, OPTIM__LIST_NOTHING)
};
#undef OPTIM__KU_MEMBER

typedef struct optim__k {
    optim__kcommon c;
    union optim__ku u;
} optim__k;

/* What the host passes to a rule's prepare for one step. */
typedef struct optim__step_in {
    double lr;     /* the learning rate in effect (a schedule may replace hp->lr) */
    double gscale; /* factor on the raw gradient before maximize (clipping); 1 if none */
    double gclip;  /* clamp of the raw gradient to [-gclip, gclip] (value clipping); +inf if none */
    int quantized; /* the state is OPTIM_INT8_BLOCK: its slots are quantized apart (a rule may need a guard) */
    size_t n;      /* elements of the parameter (for the trust hook) */
    /* Adafactor's eps1 = None (eps_auto): the machine epsilon of the type of the group's first parameter
     * stepped this step, as torch 2.x resolves it once per group; 0: the parameter's own type's. */
    double eps_type;
} optim__step_in;

/* The per-tensor step statistics a rule's constants give (include/optim_stats.h);
 * the caller sets NaN, NaN, -1 before the rule's stats hook. */
typedef struct optim__kstats {
    double effective_lr;
    double trust_ratio;
    int rectified;
} optim__kstats;

#define OPTIM__USES(name) (UINT64_C(1) << OPTIM_HP_##name)

/* One row of the rule table (each rule header defines optim__<name>_def). */
typedef struct optim__rule_def {
    optim_rule id;
    const char *name;       /* "adam" */
    const char *torch_name; /* "Adam" */
    uint64_t uses;          /* OPTIM__USES bits of the hyperparameters it reads */
    int nslots;
    const char *slot_names[OPTIM_MAX_SLOTS]; /* torch.optim's state keys */
    unsigned char slot_kinds[OPTIM_MAX_SLOTS]; /* OPTIM__SLOT_SIGNED (default), _NONNEG, _POSITIVE (rule.h) */
    unsigned lazy_slots;                     /* slots filled from the first gradient, not at init */
    int has_step;                            /* torch's state has a 'step' */
    /* Set the rule's defaults into a zeroed struct (rule already set). */
    void (*defaults)(optim_hparams *hp);
    /* Checks across fields, after each field passed its range check; NULL if none. */
    int (*check)(const optim_hparams *hp, optim_error *err);
    /* Slots needed under hp. */
    unsigned (*slots)(const optim_hparams *hp);
    /* Initial value of a slot's elements (rounded to the slot's type); NULL: every slot starts at 0. */
    double (*initial)(const optim_hparams *hp, int slot);
    /* st->step has already been incremented; fill the rule's constants and
     * variant bits (c already holds the shared ones), update scalar state. */
    void (*prepare)(const optim_hparams *hp, const optim__step_in *in, optim_state *st, optim__kcommon *c,
                    union optim__ku *u);
    /* Rules with a per-tensor reduction (rule_list.h's OPTIM__REDUCE_LIST):
     * after pass 1, fold the tensor's two sums of squares sq[0], sq[1] (its
     * red values', rule.h) into the constants (a trust ratio); called only
     * when prepare asked for the sums (OPTIM__RED_NORMS). NULL otherwise. */
    void (*trust)(const optim_hparams *hp, const optim__step_in *in, const double sq[2], optim__kcommon *c,
                  union optim__ku *u);
    /* After the pass: update `initialized` bits; NULL if nothing to do. */
    void (*finish)(const optim_hparams *hp, optim_state *st);
    /* The group hook: complete a group's hyperparameters (valid ones) when the
     * optimizer creates the group or replaces them (AdaBound: an unset
     * initial_lr becomes lr); NULL if nothing to do. */
    void (*group)(optim_hparams *hp);
    /* Sparse gradients (optim_sparse.h): NULL if the rule refuses them, else
     * the check of a group's options for a sparse step (the options torch
     * refuses with a sparse gradient: OPTIM_EUNSUPPORTED naming them). */
    int (*sparse)(const optim_hparams *hp, optim_error *err);
    /* Step statistics: the effective learning rate, trust ratio, RAdam's
     * rectification of a step's constants (after the trust hook); NULL: none
     * (NaN, NaN, -1). */
    void (*stats)(const optim__kcommon *c, const union optim__ku *u, optim__kstats *out);
    unsigned sparse_variant; /* variant bits of a sparse step (its rounding differs from the dense one's) */
    int sparse_only;         /* refuses dense gradients (SparseAdam) */
    int sparse_in_order;     /* takes repeated rows (adjacent), applied one entry after another (SGD:
                                torch adds an uncoalesced gradient entry by entry) */
    /* Elements of slot s for a parameter of n elements and shape dims[ndim]
     * (ndim 0: none given); NULL: n for every slot. A slot of 0 elements of
     * a parameter of n > 0 is not allocated (Adafactor's factored slots
     * depend on the shape). */
    size_t (*slot_len)(int s, size_t n, size_t ndim, const int64_t *dims);
} optim__rule_def;

/* Elements of slot s of a parameter of rule `rule` (the rule's slot_len, or n). */
size_t optim__slot_len(optim_rule rule, int s, size_t n, size_t ndim, const int64_t *dims);

/* The row for a rule, or NULL for an unknown value. */
const optim__rule_def *optim__rule(optim_rule rule);

/* Validate hp; message prefixed with the rule's name. */
int optim__hparams_check(const optim_hparams *hp, optim_error *err);

/* Let the rule complete a group's valid hyperparameters (the group hook). */
void optim__group_complete(optim_hparams *hp);

/* Compute the constants of one step for one parameter: increments st->step,
 * updates scalar state, fills *k. hp must be valid. */
void optim__prepare(const optim_hparams *hp, const optim__step_in *in, optim_state *st, optim__k *k);

/* After a rule's pass 1: its trust hook on the tensor's sums (rules.h). */
void optim__trust(const optim_hparams *hp, const optim__step_in *in, const double sq[2], optim__k *k);

/* The per-tensor statistics of a step's constants k for rule `rule` (NaN,
 * NaN, -1 where the rule gives none). */
void optim__kstats_of(optim_rule rule, const optim__k *k, optim__kstats *out);

/* After the pass: let the rule record what the step initialized. */
void optim__finish(const optim_hparams *hp, optim_state *st);

/* The value every element of slot s starts from under hp (before its
 * rounding to the slot's type), and (in *initialized) whether the slot then
 * counts as initialized (not for lazy slots). */
double optim__slot_initial(const optim_hparams *hp, int s, int *initialized);

/* Fill slot s of st (n elements of type dtype: OPTIM_FLOAT32 or OPTIM_FLOAT64)
 * with its initial value (as at allocation), whatever the options need; sets
 * its `initialized` bit (cleared for lazy slots). */
void optim__slot_reset(const optim_hparams *hp, size_t n, optim_state *st, int s, optim_dtype dtype);

/* Fill slot arrays of st (bits `which`, among those hp needs) with their
 * initial values, each over its optim__slot_len for shape dims[ndim]. */
void optim__state_fill(const optim_hparams *hp, size_t n, size_t ndim, const int64_t *dims, optim_state *st,
                       unsigned which, optim_dtype dtype);

#endif
