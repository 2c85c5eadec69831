/* rules.c: the rule table (generated from rule_list.h), hyperparameter
 * defaults, checks and access by id, and the host side of one step
 * (constants for the kernels). */
#include "rules.h"
#include "../kernels/convert.h" /* the initial value of a bfloat16/float16 slot, rounded as torch rounds it */
#include "../kernels/quant8.h"  /* ... and of an int8_block slot, quantized as a step stores it */

#include <math.h>
#include <stddef.h>
#include <string.h>

#define OPTIM__RULE_HOST
#include "optim_rule_headers.h" /* generated from rule_list.h: now their host sections */

/* The list and the public enum agree: each value, and the values are in
 * 1..OPTIM_RULE_COUNT, each once, the largest being OPTIM_RULE_COUNT. A
 * value below it may be unused (reserved for a rule of another branch:
 * optim_rule_name gives NULL for it, and every loop over the values skips it). */
#define OPTIM__ASSERT_RULE(ID, value, ...) \
    _Static_assert(OPTIM_##ID == (value), "rule_list.h: OPTIM_" #ID " is not " #value " in optim.h");
OPTIM__RULE_LIST(OPTIM__ASSERT_RULE, OPTIM__ASSERT_RULE)
#undef OPTIM__ASSERT_RULE
#define OPTIM__BIT(ID, value, ...) | (1ull << (value))
#define OPTIM__ONE(...) +1
#define OPTIM__RULE_MASK (0 OPTIM__RULE_LIST(OPTIM__BIT, OPTIM__BIT))
_Static_assert((OPTIM__RULE_MASK & ~((1ull << (OPTIM_RULE_COUNT + 1)) - 2)) == 0 && (OPTIM__RULE_MASK >> OPTIM_RULE_COUNT) == 1,
               "rule_list.h: a value is outside 1..OPTIM_RULE_COUNT, or OPTIM_RULE_COUNT is not the largest");
_Static_assert(__builtin_popcountll(OPTIM__RULE_MASK) == 0 OPTIM__RULE_LIST(OPTIM__ONE, OPTIM__ONE),
               "rule_list.h: a value is listed twice");
#undef OPTIM__RULE_MASK
#undef OPTIM__ONE
#undef OPTIM__BIT

/* The rule table, indexed by optim_rule, generated from the list. */
#define OPTIM__ROW(ID, value, name, ...) [value] = &optim__##name##_def,
static const optim__rule_def *const optim__rule_table[OPTIM_RULE_COUNT + 1] = {
    OPTIM__RULE_LIST(OPTIM__ROW, OPTIM__ROW)
};
#undef OPTIM__ROW

const optim__rule_def *optim__rule(optim_rule rule)
{
    if ((int)rule < 1 || (int)rule > OPTIM_RULE_COUNT) return NULL;
    return optim__rule_table[rule];
}

const char *optim_rule_name(optim_rule rule)
{
    const optim__rule_def *r = optim__rule(rule);
    return r ? r->name : NULL;
}

static int optim__streq_nocase(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        char x = *a, y = *b;
        if (x >= 'A' && x <= 'Z') x = (char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = (char)(y - 'A' + 'a');
        if (x != y) return 0;
    }
    return *a == *b;
}

optim_rule optim_rule_from_name(const char *name)
{
    int i;
    if (!name) return (optim_rule)0;
    for (i = 1; i <= OPTIM_RULE_COUNT; i++)
        if (optim__rule_table[i] && optim__streq_nocase(name, optim__rule_table[i]->name)) return (optim_rule)i;
    return (optim_rule)0;
}

int optim_rule_slot_count(optim_rule rule)
{
    const optim__rule_def *r = optim__rule(rule);
    return r ? r->nslots : 0;
}

const char *optim_rule_slot_name(optim_rule rule, int slot)
{
    const optim__rule_def *r = optim__rule(rule);
    if (!r || slot < 0 || slot >= r->nslots) return NULL;
    return r->slot_names[slot];
}

_Static_assert(OPTIM__SLOT_SIGNED == OPTIM_SLOT_SIGNED && OPTIM__SLOT_NONNEG == OPTIM_SLOT_NONNEG &&
                   OPTIM__SLOT_POSITIVE == OPTIM_SLOT_POSITIVE,
               "rule.h's slot kinds differ from optim.h's optim_slot_kind");

int optim_rule_slot_kind(optim_rule rule, int slot)
{
    const optim__rule_def *r = optim__rule(rule);
    if (!r || slot < 0 || slot >= r->nslots) return -1;
    return (int)r->slot_kinds[slot];
}

int optim_rule_has_step(optim_rule rule)
{
    const optim__rule_def *r = optim__rule(rule);
    return r ? r->has_step : 0;
}

/* ---- Hyperparameter fields ------------------------------------------------ */

typedef enum { OPTIM__F_REAL, OPTIM__F_BOOL, OPTIM__F_INT } optim__field_kind;

/* A field's name, place, kind and valid range [lo, hi] with open ends where
 * lo_open/hi_open. Every real must also be finite. */
typedef struct optim__field {
    const char *name;
    size_t offset;
    optim__field_kind kind;
    double lo, hi;
    char lo_open, hi_open;
} optim__field;

#define OPTIM__REAL(f, lo, hi, lo_open, hi_open) {#f, offsetof(optim_hparams, f), OPTIM__F_REAL, lo, hi, lo_open, hi_open}
#define OPTIM__BOOL(f) {#f, offsetof(optim_hparams, f), OPTIM__F_BOOL, 0, 1, 0, 0}
/* An int field holding a whole number in [lo, hi] (Muon's ns_steps, adjust_lr). */
#define OPTIM__INT(f, lo, hi) {#f, offsetof(optim_hparams, f), OPTIM__F_INT, lo, hi, 0, 0}

static const optim__field optim__fields[OPTIM_HP_COUNT + 1] = {
    {NULL, 0, OPTIM__F_REAL, 0, 0, 0, 0},
    [OPTIM_HP_LR] = OPTIM__REAL(lr, 0, HUGE_VAL, 0, 1),
    [OPTIM_HP_WEIGHT_DECAY] = OPTIM__REAL(weight_decay, 0, HUGE_VAL, 0, 1),
    [OPTIM_HP_DECOUPLED_WEIGHT_DECAY] = OPTIM__BOOL(decoupled_weight_decay),
    [OPTIM_HP_MAXIMIZE] = OPTIM__BOOL(maximize),
    [OPTIM_HP_MOMENTUM] = OPTIM__REAL(momentum, 0, HUGE_VAL, 0, 1),
    [OPTIM_HP_DAMPENING] = OPTIM__REAL(dampening, 0, 1, 0, 0),
    [OPTIM_HP_NESTEROV] = OPTIM__BOOL(nesterov),
    [OPTIM_HP_BETA1] = OPTIM__REAL(beta1, 0, 1, 0, 1),
    [OPTIM_HP_BETA2] = OPTIM__REAL(beta2, 0, 1, 0, 1),
    [OPTIM_HP_ALPHA] = OPTIM__REAL(alpha, 0, 1, 0, 0),
    [OPTIM_HP_RHO] = OPTIM__REAL(rho, 0, 1, 0, 0),
    [OPTIM_HP_EPS] = OPTIM__REAL(eps, 0, HUGE_VAL, 0, 1),
    [OPTIM_HP_EPS_PLACEMENT] = OPTIM__BOOL(eps_placement),
    [OPTIM_HP_AMSGRAD] = OPTIM__BOOL(amsgrad),
    [OPTIM_HP_BIAS_CORRECTION] = OPTIM__BOOL(bias_correction),
    [OPTIM_HP_CENTERED] = OPTIM__BOOL(centered),
    [OPTIM_HP_LR_DECAY] = OPTIM__REAL(lr_decay, 0, HUGE_VAL, 0, 1),
    [OPTIM_HP_INITIAL_ACCUMULATOR_VALUE] = OPTIM__REAL(initial_accumulator_value, 0, HUGE_VAL, 0, 1),
    [OPTIM_HP_MOMENTUM_DECAY] = OPTIM__REAL(momentum_decay, 0, HUGE_VAL, 0, 1),
    [OPTIM_HP_FINAL_LR] = OPTIM__REAL(final_lr, 0, HUGE_VAL, 0, 1),
    [OPTIM_HP_GAMMA] = OPTIM__REAL(gamma, 0, 1, 0, 1),
    [OPTIM_HP_INITIAL_LR] = OPTIM__REAL(initial_lr, 0, HUGE_VAL, 0, 1),
    [OPTIM_HP_LAMBD] = OPTIM__REAL(lambd, 0, HUGE_VAL, 0, 1),
    [OPTIM_HP_T0] = OPTIM__REAL(t0, -HUGE_VAL, HUGE_VAL, 1, 1),
    [OPTIM_HP_ETAMINUS] = OPTIM__REAL(etaminus, 0, 1, 1, 1),
    [OPTIM_HP_ETAPLUS] = OPTIM__REAL(etaplus, 1, HUGE_VAL, 1, 1),
    [OPTIM_HP_STEP_SIZE_MIN] = OPTIM__REAL(step_size_min, 0, HUGE_VAL, 0, 1),
    [OPTIM_HP_STEP_SIZE_MAX] = OPTIM__REAL(step_size_max, 0, HUGE_VAL, 0, 1),
    [OPTIM_HP_TRUST_COEFF] = OPTIM__REAL(trust_coeff, 0, HUGE_VAL, 0, 1),
    [OPTIM_HP_TRUST_CLIP] = OPTIM__BOOL(trust_clip),
    [OPTIM_HP_ALWAYS_ADAPT] = OPTIM__BOOL(always_adapt),
    [OPTIM_HP_WARMUP_STEPS] = OPTIM__REAL(warmup_steps, 0, HUGE_VAL, 0, 1),
    [OPTIM_HP_R] = OPTIM__REAL(r, -HUGE_VAL, HUGE_VAL, 1, 1),
    [OPTIM_HP_WEIGHT_LR_POWER] = OPTIM__REAL(weight_lr_power, 0, HUGE_VAL, 0, 1),
    [OPTIM_HP_NS_STEPS] = OPTIM__INT(ns_steps, 1, 99),
    [OPTIM_HP_NS_A] = OPTIM__REAL(ns_a, -HUGE_VAL, HUGE_VAL, 1, 1),
    [OPTIM_HP_NS_B] = OPTIM__REAL(ns_b, -HUGE_VAL, HUGE_VAL, 1, 1),
    [OPTIM_HP_NS_C] = OPTIM__REAL(ns_c, -HUGE_VAL, HUGE_VAL, 1, 1),
    [OPTIM_HP_ADJUST_LR] = OPTIM__INT(adjust_lr, 0, 1),
    [OPTIM_HP_BETA2_DECAY] = OPTIM__REAL(beta2_decay, -HUGE_VAL, 0, 1, 0),
    [OPTIM_HP_EPS2] = OPTIM__REAL(eps2, 0, HUGE_VAL, 0, 1),
    [OPTIM_HP_CLIP_THRESHOLD] = OPTIM__REAL(clip_threshold, 1, HUGE_VAL, 0, 1),
    [OPTIM_HP_EPS_AUTO] = OPTIM__BOOL(eps_auto),
    [OPTIM_HP_EPS1] = OPTIM__REAL(eps1, 0, HUGE_VAL, 0, 1),
};

static const optim__field *optim__field_of(optim_hparam id)
{
    if ((int)id < 1 || (int)id > OPTIM_HP_COUNT) return NULL;
    return &optim__fields[id];
}

static double optim__field_read(const optim_hparams *hp, const optim__field *f)
{
    const char *base = (const char *)hp + f->offset;
    if (f->kind == OPTIM__F_BOOL || f->kind == OPTIM__F_INT) {
        int v;
        memcpy(&v, base, sizeof v);
        return (double)v;
    } else {
        double v;
        memcpy(&v, base, sizeof v);
        return v;
    }
}

static void optim__field_write(optim_hparams *hp, const optim__field *f, double value)
{
    char *base = (char *)hp + f->offset;
    if (f->kind == OPTIM__F_BOOL) {
        int v = value != 0;
        memcpy(base, &v, sizeof v);
    } else if (f->kind == OPTIM__F_INT) {
        int v = (int)value; /* checked whole and in range first */
        memcpy(base, &v, sizeof v);
    } else {
        memcpy(base, &value, sizeof value);
    }
}

const char *optim_hparam_name(optim_hparam id)
{
    const optim__field *f = optim__field_of(id);
    return f ? f->name : NULL;
}

optim_hparam optim_hparam_from_name(const char *name)
{
    int i;
    if (!name) return (optim_hparam)0;
    if (strcmp(name, "amsbound") == 0) return OPTIM_HP_AMSGRAD;
    for (i = 1; i <= OPTIM_HP_COUNT; i++)
        if (strcmp(name, optim__fields[i].name) == 0) return (optim_hparam)i;
    return (optim_hparam)0;
}

int optim_rule_uses(optim_rule rule, optim_hparam id)
{
    const optim__rule_def *r = optim__rule(rule);
    if (!r || !optim__field_of(id)) return 0;
    return (r->uses >> id) & 1;
}

/* Is `value` a valid setting of field f? On failure, explain in *err. */
static int optim__field_check(const char *rule, const optim__field *f, double value, optim_error *err)
{
    if (f->kind == OPTIM__F_BOOL) {
        OPTIM__FAIL_IF(value != 0 && value != 1, err, OPTIM_EINVAL, "%s: %s = %.10g must be 0 or 1", rule, f->name,
                       value);
        return OPTIM_OK;
    }
    if (f->kind == OPTIM__F_INT) {
        OPTIM__FAIL_IF(!(value >= f->lo && value <= f->hi) || value != floor(value), err, OPTIM_EINVAL,
                       "%s: %s = %.10g must be a whole number in [%.10g, %.10g]", rule, f->name, value, f->lo, f->hi);
        return OPTIM_OK;
    }
    OPTIM__FAIL_IF(!isfinite(value), err, OPTIM_EINVAL, "%s: %s = %.10g is not a finite number", rule, f->name,
                   value);
    if (isinf(f->hi)) {
        OPTIM__FAIL_IF(f->lo_open ? !(value > f->lo) : !(value >= f->lo), err, OPTIM_EINVAL,
                       "%s: %s = %.10g must be %s %.10g", rule, f->name, value, f->lo_open ? ">" : ">=", f->lo);
        return OPTIM_OK;
    }
    OPTIM__FAIL_IF((f->lo_open ? !(value > f->lo) : !(value >= f->lo)) ||
                       (f->hi_open ? !(value < f->hi) : !(value <= f->hi)),
                   err, OPTIM_EINVAL, "%s: %s = %.10g is outside %c%.10g, %.10g%c", rule, f->name, value,
                   f->lo_open ? '(' : '[', f->lo, f->hi, f->hi_open ? ')' : ']');
    return OPTIM_OK;
}

int optim_hparams_init(optim_hparams *hp, optim_rule rule, optim_error *err)
{
    const optim__rule_def *r = optim__rule(rule);
    OPTIM__FAIL_IF(!hp, err, OPTIM_ENULL, "optim_hparams_init: hp is NULL");
    OPTIM__FAIL_IF(!r, err, OPTIM_EINVAL, "optim_hparams_init: rule = %d is not a rule (1..%d)", (int)rule,
                   OPTIM_RULE_COUNT);
    memset(hp, 0, sizeof *hp);
    hp->rule = rule;
    r->defaults(hp);
    return optim__ok(err);
}

int optim__hparams_check(const optim_hparams *hp, optim_error *err)
{
    const optim__rule_def *r = optim__rule(hp->rule);
    int i;
    OPTIM__FAIL_IF(!r, err, OPTIM_EINVAL, "hparams: rule = %d is not a rule (1..%d)", (int)hp->rule,
                   OPTIM_RULE_COUNT);
    for (i = 1; i <= OPTIM_HP_COUNT; i++) {
        const optim__field *f = &optim__fields[i];
        double v = optim__field_read(hp, f);
        if ((r->uses >> i) & 1) {
            OPTIM__FORWARD(optim__field_check(r->name, f, v, err));
        } else {
            OPTIM__FAIL_IF(v != 0, err, OPTIM_EINVAL, "%s: %s = %.10g is not used by this rule (leave it 0)",
                           r->name, f->name, v);
        }
    }
    if (r->check) OPTIM__FORWARD(r->check(hp, err));
    return OPTIM_OK;
}

int optim_hparams_check(const optim_hparams *hp, optim_error *err)
{
    OPTIM__FAIL_IF(!hp, err, OPTIM_ENULL, "optim_hparams_check: hp is NULL");
    OPTIM__FORWARD(optim__hparams_check(hp, err));
    return optim__ok(err);
}

int optim_hparams_set(optim_hparams *hp, optim_hparam id, double value, optim_error *err)
{
    const optim__field *f = optim__field_of(id);
    const optim__rule_def *r;
    OPTIM__FAIL_IF(!hp, err, OPTIM_ENULL, "optim_hparams_set: hp is NULL");
    r = optim__rule(hp->rule);
    OPTIM__FAIL_IF(!r, err, OPTIM_EINVAL, "optim_hparams_set: hp->rule = %d is not a rule", (int)hp->rule);
    OPTIM__FAIL_IF(!f, err, OPTIM_EINVAL, "optim_hparams_set: id = %d is not a hyperparameter (1..%d)", (int)id,
                   OPTIM_HP_COUNT);
    OPTIM__FAIL_IF(!((r->uses >> id) & 1), err, OPTIM_EUNSUPPORTED, "%s: has no hyperparameter %s", r->name,
                   f->name);
    OPTIM__FORWARD(optim__field_check(r->name, f, value, err));
    optim__field_write(hp, f, value);
    return optim__ok(err);
}

int optim_hparams_get(const optim_hparams *hp, optim_hparam id, double *value, optim_error *err)
{
    const optim__field *f = optim__field_of(id);
    OPTIM__FAIL_IF(!hp || !value, err, OPTIM_ENULL, "optim_hparams_get: %s is NULL", !hp ? "hp" : "value");
    OPTIM__FAIL_IF(!f, err, OPTIM_EINVAL, "optim_hparams_get: id = %d is not a hyperparameter (1..%d)", (int)id,
                   OPTIM_HP_COUNT);
    *value = optim__field_read(hp, f);
    return optim__ok(err);
}

unsigned optim_hparams_slots(const optim_hparams *hp)
{
    const optim__rule_def *r;
    if (!hp || !(r = optim__rule(hp->rule))) return 0;
    return r->slots(hp);
}

/* ---- One step, host side -------------------------------------------------- */

void optim__group_complete(optim_hparams *hp)
{
    const optim__rule_def *r = optim__rule(hp->rule);
    if (r && r->group) r->group(hp);
}

void optim__prepare(const optim_hparams *hp, const optim__step_in *in, optim_state *st, optim__k *k)
{
    const optim__rule_def *r = optim__rule(hp->rule);
    st->step++;
    k->c.variant = 0;
    k->c.reduce = 0;
    k->c.gscale = hp->maximize ? -in->gscale : in->gscale;
    k->c.gclip = in->gclip;
    k->c.wd = hp->weight_decay;
    k->c.decay = 1.0;
    if (hp->weight_decay != 0) {
        if (hp->decoupled_weight_decay)
            k->c.decay = 1.0 - in->lr * hp->weight_decay;
        else
            k->c.variant |= OPTIM__V_L2;
    }
    if (hp->eps_placement == OPTIM_EPS_INSIDE) k->c.variant |= OPTIM__V_EPSIN;
    if (in->gclip < INFINITY) k->c.variant |= OPTIM__V_CLAMP;
    r->prepare(hp, in, st, &k->c, &k->u);
}

void optim__trust(const optim_hparams *hp, const optim__step_in *in, const double sq[2], optim__k *k)
{
    const optim__rule_def *r = optim__rule(hp->rule);
    if (r->trust && (k->c.reduce & (OPTIM__RED_NORMS | OPTIM__RED_FACTORED))) r->trust(hp, in, sq, &k->c, &k->u);
}

void optim__kstats_of(optim_rule rule, const optim__k *k, optim__kstats *out)
{
    const optim__rule_def *r = optim__rule(rule);
    out->effective_lr = NAN;
    out->trust_ratio = NAN;
    out->rectified = -1;
    if (r && r->stats) r->stats(&k->c, &k->u, out);
}

void optim__finish(const optim_hparams *hp, optim_state *st)
{
    const optim__rule_def *r = optim__rule(hp->rule);
    if (r->finish) r->finish(hp, st);
}

double optim__slot_initial(const optim_hparams *hp, int s, int *initialized)
{
    const optim__rule_def *r = optim__rule(hp->rule);
    const int lazy = (int)((r->lazy_slots >> s) & 1u);
    /* Lazy slots (SGD's momentum buffer) are zeroed too, so that no byte of
     * state is ever uninitialised (checkpoints write every byte), but stay
     * "not initialized": their first step copies the gradient. */
    *initialized = !lazy;
    return r->initial && !lazy ? r->initial(hp, s) : 0.0;
}

void optim__slot_reset(const optim_hparams *hp, size_t n, optim_state *st, int s, optim_dtype dtype)
{
    int init;
    const double v = optim__slot_initial(hp, s, &init);
    size_t i;
    /* As torch fills a state tensor of the parameter's dtype, the value is
     * rounded once to the slot's type. */
    if (dtype == OPTIM_FLOAT64) {
        double *x = (double *)(void *)st->slot[s];
        for (i = 0; i < n; i++) x[i] = v;
    } else if (dtype == OPTIM_INT8_BLOCK) {
        /* Every block holds v alone: the codes and scales a step would store. */
        const int kind = optim__rule(hp->rule)->slot_kinds[s];
        float one[1];
        uint8_t code;
        float scale, *scales = (float *)(void *)((char *)st->slot[s] + OPTIM_INT8_BLOCK_SCALES_OFFSET(n));
        one[0] = (float)v;
        optim__q8_quantize(&code, &scale, one, 1, kind);
        memset(st->slot[s], code, n);
        for (i = 0; i < (n + OPTIM__Q8_BLOCK - 1) / OPTIM__Q8_BLOCK; i++) scales[i] = scale;
    } else if (dtype == OPTIM_BFLOAT16 || dtype == OPTIM_FLOAT16) {
        uint16_t *x = (uint16_t *)(void *)st->slot[s];
        const uint16_t h = dtype == OPTIM_BFLOAT16 ? optim__f32_to_bf16((float)v) : optim__f32_to_f16((float)v);
        for (i = 0; i < n; i++) x[i] = h;
    } else {
        float *x = st->slot[s], vf = (float)v;
        for (i = 0; i < n; i++) x[i] = vf;
    }
    if (!init)
        st->initialized &= ~(1u << s);
    else
        st->initialized |= 1u << s;
}

size_t optim__slot_len(optim_rule rule, int s, size_t n, size_t ndim, const int64_t *dims)
{
    const optim__rule_def *r = optim__rule(rule);
    return r && r->slot_len ? r->slot_len(s, n, ndim, dims) : n;
}

void optim__state_fill(const optim_hparams *hp, size_t n, size_t ndim, const int64_t *dims, optim_state *st,
                       unsigned which, optim_dtype dtype)
{
    const optim__rule_def *r = optim__rule(hp->rule);
    int s;
    which &= r->slots(hp);
    for (s = 0; s < r->nslots; s++)
        if ((which >> s) & 1u) optim__slot_reset(hp, optim__slot_len(hp->rule, s, n, ndim, dims), st, s, dtype);
}
