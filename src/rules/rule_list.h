/* rule_list.h: the one list of update rules.
 *
 *   RULE(ID, value, name)          a rule with its own math in src/rules/<name>.h
 *   ALIAS(ID, value, name, math)   a rule that runs the math of another (AdamW: Adam's
 *                                  math with decoupled decay; its host part, optim__<name>_def,
 *                                  lives in <math>.h)
 *
 * ID is the public enum's suffix (OPTIM_<ID> in include/optim.h) and value its
 * number. Everything else is generated from this list: the #includes of the
 * rule headers (CMake writes them into optim_rule_headers.h at configure
 * time), the rule table (rules.c), the union of per-step constants
 * (rules.h), every loop instance and the dispatch tables (src/kernels/), and
 * static assertions that the list and the public enum agree (rules.c).
 *
 * Adding a rule: write src/rules/<name>.h (see rule.h for what it provides),
 * add its line here, add OPTIM_<ID> = value to optim_rule and raise
 * OPTIM_RULE_COUNT in optim.h. Keep one list line per line of this macro:
 * CMake reads them. */
#ifndef OPTIM_RULE_LIST_H
#define OPTIM_RULE_LIST_H

#define OPTIM__RULE_LIST(RULE, ALIAS)     \
    RULE(SGD, 1, sgd)                     \
    RULE(ADAGRAD, 2, adagrad)             \
    RULE(RMSPROP, 3, rmsprop)             \
    RULE(ADADELTA, 4, adadelta)           \
    RULE(ADAM, 5, adam)                   \
    ALIAS(ADAMW, 6, adamw, adam)          \
    RULE(RADAM, 7, radam)                 \
    RULE(NADAM, 8, nadam)                 \
    RULE(ADABOUND, 9, adabound)           \
    RULE(LION, 10, lion)                  \
    RULE(ADAMAX, 11, adamax)              \
    RULE(ASGD, 12, asgd)                  \
    RULE(RPROP, 13, rprop)                \
    RULE(LAMB, 14, lamb)                  \
    RULE(LARS, 15, lars)                  \
    RULE(ADAFACTOR, 16, adafactor)        \
    RULE(SPARSE_ADAM, 17, sparse_adam)    \
    RULE(SGD_SCHEDULE_FREE, 18, sgd_schedule_free) \
    RULE(ADAMW_SCHEDULE_FREE, 19, adamw_schedule_free) \
    RULE(MUON, 20, muon)

/* The rules that reduce over each tensor in the step before updating it (a
 * per-tensor trust ratio): REDUCE(ID, name) for rules listed above whose
 * header also provides the reduction's parts (rule.h, "Rules with a
 * per-tensor reduction"). */
#define OPTIM__REDUCE_LIST(REDUCE) \
    REDUCE(LAMB, lamb)             \
    REDUCE(LARS, lars)

/* The rules whose element math clamps a step (for the step statistics'
 * clamped fraction, include/optim_stats.h): CLAMP(ID, name) for rules whose
 * header also provides OPTIM__T(optim__<name>_clamped)(const R *s, const
 * OPTIM__KR(name) *k, unsigned V), 1 where the element's step was clamped,
 * from its state after the update. */
#define OPTIM__CLAMP_LIST(CLAMP) \
    CLAMP(ADABOUND, adabound)

/* For generators that handle both kinds alike. */
#define OPTIM__LIST_NOTHING(...)

#endif
