/* update.c: the stateless level of the API: one rule on one array whose
 * state the caller owns. */
#include "common.h"
#include "kernels/kernels.h"

#include <math.h>

int optim_state_init(const optim_hparams *hp, size_t n, optim_state *st, optim_error *err)
{
    unsigned need;
    int s;
    OPTIM__FAIL_IF(!hp || !st, err, OPTIM_ENULL, "optim_state_init: %s is NULL", !hp ? "hp" : "st");
    OPTIM__FORWARD(optim__hparams_check(hp, err));
    need = optim_hparams_slots(hp);
    for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
        int t;
        if (!((need >> s) & 1u) || n == 0) continue;
        OPTIM__FAIL_IF(!st->slot[s], err, OPTIM_ENULL, "optim_state_init: %s needs slot %d (%s) but st->slot[%d] is NULL",
                       optim_rule_name(hp->rule), s, optim_rule_slot_name(hp->rule, s), s);
        for (t = 0; t < s; t++)
            OPTIM__FAIL_IF(((need >> t) & 1u) && optim__overlap(st->slot[s], n, st->slot[t], n), err, OPTIM_EOVERLAP,
                           "optim_state_init: slot %d (%s) overlaps slot %d (%s)", s,
                           optim_rule_slot_name(hp->rule, s), t, optim_rule_slot_name(hp->rule, t));
    }
    st->step = 0;
    st->mu_product = 1.0;
    st->initialized = 0;
    if (n > 0)
        optim__state_fill(hp, n, st, need);
    else /* nothing to fill: every needed slot but the lazy ones is ready */
        st->initialized = need & ~optim__rule(hp->rule)->lazy_slots;
    return optim__ok(err);
}

int optim_update(const optim_hparams *hp, size_t n, float *p, const float *g, optim_state *st, optim_error *err)
{
    const optim__kernels *kt;
    const char *rule;
    optim__step_in in;
    optim__task task;
    optim__k k;
    unsigned need, lazy;
    int s, t;

    OPTIM__FAIL_IF(!hp || !st, err, OPTIM_ENULL, "optim_update: %s is NULL", !hp ? "hp" : "st");
    OPTIM__FORWARD(optim__hparams_check(hp, err));
    rule = optim_rule_name(hp->rule);
    need = optim_hparams_slots(hp);
    lazy = optim__rule(hp->rule)->lazy_slots;
    if (n > 0) {
        OPTIM__FAIL_IF(!p || !g, err, OPTIM_ENULL, "optim_update: %s is NULL", !p ? "p" : "g");
        OPTIM__FAIL_IF(optim__overlap(p, n, g, n), err, OPTIM_EOVERLAP, "optim_update: p and g overlap");
        for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
            if (!((need >> s) & 1u)) continue;
            OPTIM__FAIL_IF(!st->slot[s], err, OPTIM_ENULL, "optim_update: %s needs slot %d (%s) but st->slot[%d] is NULL",
                           rule, s, optim_rule_slot_name(hp->rule, s), s);
            OPTIM__FAIL_IF(!((lazy >> s) & 1u) && !((st->initialized >> s) & 1u), err, OPTIM_ESTATE,
                           "optim_update: %s slot %d (%s) is not initialized (call optim_state_init)", rule, s,
                           optim_rule_slot_name(hp->rule, s));
            OPTIM__FAIL_IF(optim__overlap(st->slot[s], n, p, n) || optim__overlap(st->slot[s], n, g, n), err,
                           OPTIM_EOVERLAP, "optim_update: slot %d (%s) overlaps p or g", s,
                           optim_rule_slot_name(hp->rule, s));
            for (t = 0; t < s; t++)
                OPTIM__FAIL_IF(((need >> t) & 1u) && optim__overlap(st->slot[s], n, st->slot[t], n), err,
                               OPTIM_EOVERLAP, "optim_update: slot %d (%s) overlaps slot %d (%s)", s,
                               optim_rule_slot_name(hp->rule, s), t, optim_rule_slot_name(hp->rule, t));
        }
    }
    OPTIM__FAIL_IF(st->step == INT64_MAX, err, OPTIM_ESTATE, "optim_update: step counter is at its maximum");
    kt = optim__kernels_get(OPTIM_ISA_AUTO);

    in.lr = hp->lr;
    in.gscale = 1.0f;
    in.gclip = INFINITY;
    optim__prepare(hp, &in, st, &k);
    if (n > 0) {
        task.p = p;
        task.g = g;
        for (s = 0; s < OPTIM_MAX_SLOTS; s++) task.s[s] = ((need >> s) & 1u) ? st->slot[s] : NULL;
        task.n = n;
        task.start = 0;
        task.k = &k;
        optim__run(kt, hp->rule, &task, 1, n, 0);
    }
    optim__finish(hp, st);
    return optim__ok(err);
}
