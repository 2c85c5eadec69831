/* test_schedule_free.c: the schedule-free rules through the optimizer object,
 * with train/eval switches mid-run, against the float64 reference of ref.c
 * (its own scalars: k, lr_max, weight_sum; its own train()/eval()), on every
 * CPU path with one and two threads (bit for bit against the scalar path),
 * float32 and float64, with an lr that rises and falls between steps (lr_max
 * and the weights depend on it), checkpoints holding the mode and the
 * scalars, and the refusals (a step in eval mode, other rules). */
#include "optim_checkpoint.h"
#include "optim_precision.h"
#include "optim_sam.h"
#include "optim_schedule_free.h"
#include "ref.h"
#include "test.h"
#include "typed.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SF_STEPS 200
#define SF_N0 32300 /* with SF_N1, above the 32K elements where a step uses threads */
#define SF_N1 517
#define SF_NP 2

static const optim_isa sf_isas[] = {OPTIM_ISA_SCALAR, OPTIM_ISA_AVX2, OPTIM_ISA_AVX512, OPTIM_ISA_AVX512BF16};

/* One configuration: a rule's options, and where the run switches modes. */
typedef struct sf_cfg {
    optim_rule rule;
    double lr, momentum, beta1, beta2, eps, wd, warmup, r, wlp;
} sf_cfg;

static const sf_cfg sf_cfgs[] = {
    {OPTIM_SGD_SCHEDULE_FREE, 0.05, 0.9, 0, 0, 0, 0, 0, 0, 2},
    {OPTIM_SGD_SCHEDULE_FREE, 0.05, 0.3, 0, 0, 0, 0.05, 25, 1.5, 0},
    {OPTIM_ADAMW_SCHEDULE_FREE, 0.01, 0, 0.9, 0.999, 1e-8, 0, 0, 0, 2},
    {OPTIM_ADAMW_SCHEDULE_FREE, 0.01, 0, 0.4, 0.95, 1e-3, 0.1, 25, 1.5, 3},
};

static optim_hparams sf_hp(const sf_cfg *c)
{
    optim_hparams hp;
    optim_error e;
    optim_hparams_init(&hp, c->rule, &e);
    hp.lr = c->lr;
    if (c->rule == OPTIM_SGD_SCHEDULE_FREE) {
        hp.momentum = c->momentum;
    } else {
        hp.beta1 = c->beta1;
        hp.beta2 = c->beta2;
        hp.eps = c->eps;
    }
    hp.weight_decay = c->wd;
    hp.warmup_steps = c->warmup;
    hp.r = c->r;
    hp.weight_lr_power = c->wlp;
    return hp;
}

/* The lr of step t (from 1) of group g: up, down, up again (lr_max moves, then holds). */
static double sf_lr(const optim_hparams *hp, int g, int t)
{
    double f = t < 60 ? 0.5 + t / 60.0 : (t < 180 ? 1.5 - (t - 60) / 120.0 : 0.5 + (t - 180) / 60.0);
    return g == 0 ? hp->lr * f : hp->lr;
}

/* The mode the run asks for before step t: eval at 90..119 and 200 (one step's worth), train otherwise;
 * eval twice in a row at 90 (idempotent); the switch is checked as it happens. */
static int sf_eval_at(int t)
{
    return (t >= 90 && t < 120) || t == 200 || t == SF_STEPS + 1;
}

static double sf_get(const void *x, int f64, size_t i)
{
    return f64 ? ((const double *)x)[i] : (double)((const float *)x)[i];
}

static void sf_put(void *x, int f64, size_t i, double v)
{
    if (f64)
        ((double *)x)[i] = v;
    else
        ((float *)x)[i] = (float)v;
}

/* Worst relative error of the library's array against the reference's. */
static double sf_err(const void *a, int f64, const double *r, size_t n, size_t *where)
{
    double worst = 0, scale = 1e-3;
    size_t i;
    for (i = 0; i < n; i++)
        if (fabs(r[i]) > scale) scale = fabs(r[i]);
    for (i = 0; i < n; i++) {
        double e = fabs(sf_get(a, f64, i) - r[i]) / (fabs(r[i]) > 1e-3 * scale ? fabs(r[i]) : 1e-3 * scale);
        if (!(e <= worst)) {
            worst = e;
            *where = i;
        }
    }
    return worst;
}

/* One run: returns 0 and leaves the final parameters and z (after the
 * last eval) in out[] (SF_NP arrays of the element size), or fails. When
 * `ck` is set, the run saves a checkpoint in eval mode at step 100, and a
 * new optimizer loads it and finishes the run (its bits must equal the
 * uninterrupted run's: the caller compares). */
static int sf_run(const sf_cfg *c, int f64, optim_isa isa, int threads, int ck, void *out[2 * SF_NP], double *worst)
{
    const size_t n[SF_NP] = {SF_N0, SF_N1};
    const optim_dtype dt = f64 ? OPTIM_FLOAT64 : OPTIM_FLOAT32;
    const size_t es = f64 ? sizeof(double) : sizeof(float);
    const double tol = f64 ? 1e-12 : 2e-5;
    optim_hparams hp[SF_NP];
    optim *o = NULL;
    void *p[SF_NP], *g[SF_NP];
    double *pr[SF_NP];
    ref_state rs[SF_NP];
    test_rng rng = {0x5f5f0001u + (uint64_t)c->rule};
    size_t i, k, where = 0;
    int t, rc = 0;
    const int check = worst != NULL; /* compare with the reference (else: the library alone, for its bits) */
    hp[0] = sf_hp(c);
    hp[1] = hp[0];
    hp[1].weight_decay = 0; /* a second group with other options */
    hp[1].warmup_steps = 0;
    ASSERT_OK_MSG(optim_create(&o, c->rule), "optim_create");
    for (k = 0; k < SF_NP; k++) {
        size_t gi;
        p[k] = malloc(n[k] * es);
        g[k] = malloc(n[k] * es);
        pr[k] = (double *)malloc(n[k] * sizeof(double));
        if (!p[k] || !g[k] || !pr[k] || ref_init(&rs[k], &hp[k], n[k])) FAIL("out of memory");
        for (i = 0; i < n[k]; i++) sf_put(p[k], f64, i, test_rng_normal(&rng));
        ASSERT_OPT_OK(o, optim_add_group(o, &hp[k], &gi));
        ASSERT_OPT_OK(o, optim_add_param_ex(o, gi, p[k], dt, g[k], dt, n[k], dt, 0, k ? "b" : "w", NULL));
    }
    ASSERT_OPT_OK(o, optim_set_isa(o, isa));
    ASSERT_OPT_OK(o, optim_set_threads(o, threads));
    ASSERT_INT(optim_schedule_free_mode(o), ==, 1); /* a new optimizer trains */
    for (t = 1; t <= SF_STEPS + 1 && rc == 0; t++) {
        const int want_eval = sf_eval_at(t);
        if (want_eval != (optim_schedule_free_mode(o) == 0)) {
            /* Switch: the library and the reference from the same point. */
            for (k = 0; k < SF_NP && check; k++) {
                void *zl = NULL;
                optim_dtype sdt;
                int init;
                double *z = ref_slot(&rs[k], 0);
                ASSERT_OPT_OK(o, optim_state_slot_data(o, k, 0, &zl, &sdt, &init));
                for (i = 0; i < n[k]; i++) pr[k][i] = sf_get(p[k], f64, i);
                for (i = 0; i < n[k]; i++) z[i] = sf_get(zl, f64, i);
            }
            ASSERT_OPT_OK(o, want_eval ? optim_schedule_free_eval(o) : optim_schedule_free_train(o));
            ASSERT_OPT_OK(o, want_eval ? optim_schedule_free_eval(o) : optim_schedule_free_train(o)); /* no-op */
            for (k = 0; k < SF_NP && check; k++) {
                double e;
                ref_sf_switch(&hp[k], pr[k], &rs[k], want_eval);
                e = sf_err(p[k], f64, pr[k], n[k], &where);
                if (e > tol)
                    FAIL("%s %s: %s at step %d, param %zu[%zu] = %.9g vs reference %.9g", optim_rule_name(c->rule),
                         f64 ? "float64" : "float32", want_eval ? "eval" : "train", t, k, where,
                         sf_get(p[k], f64, where), pr[k][where]);
            }
        }
        if (t == 100 && ck) {
            /* A checkpoint in eval mode, loaded into a new optimizer over the same memory. */
            void *buf = NULL;
            size_t size = 0;
            optim *o2 = NULL;
            ASSERT_OPT_OK(o, optim_save_buffer(o, &buf, &size));
            ASSERT_OK_MSG(optim_create(&o2, c->rule), "optim_create");
            for (k = 0; k < SF_NP; k++) {
                size_t gi;
                ASSERT_OPT_OK(o2, optim_add_group(o2, &hp[k], &gi));
                ASSERT_OPT_OK(o2, optim_add_param_ex(o2, gi, p[k], dt, g[k], dt, n[k], dt, 0, k ? "b" : "w", NULL));
            }
            ASSERT_OPT_OK(o2, optim_set_isa(o2, isa));
            ASSERT_OPT_OK(o2, optim_set_threads(o2, threads));
            ASSERT_INT(optim_schedule_free_mode(o2), ==, 1);
            ASSERT_OPT_OK(o2, optim_load_buffer(o2, buf, size, OPTIM_MATCH_NAME, "sf"));
            ASSERT_INT(optim_schedule_free_mode(o2), ==, 0); /* the mode came back */
            for (k = 0; k < SF_NP; k++) {
                double a, b, a2, b2;
                ASSERT_OPT_OK(o, optim_param_get_schedule_free(o, k, &a, &b));
                ASSERT_OPT_OK(o2, optim_param_get_schedule_free(o2, k, &a2, &b2));
                if (a != a2 || b != b2) FAIL("checkpoint: lr_max %.17g / %.17g, weight_sum %.17g / %.17g", a, a2, b, b2);
            }
            free(buf);
            optim_free(o);
            o = o2;
        }
        if (t > SF_STEPS) break;
        if (want_eval) {
            /* A step in eval mode is refused, nothing changed. */
            ASSERT_INT(optim_step(o), ==, OPTIM_ESTATE);
            continue;
        }
        for (k = 0; k < SF_NP; k++) {
            const double lr = sf_lr(&hp[k], (int)k, t);
            ASSERT_OPT_OK(o, optim_group_set_hparam(o, k, OPTIM_HP_LR, lr));
            for (i = 0; i < n[k]; i++) sf_put(g[k], f64, i, (test_rng_uniform(&rng) - 0.5) * 0.3 + 0.05 * sf_get(p[k], f64, i));
            if (!check) continue;
            /* The reference continues from the library's arrays (one step compared with one step). */
            for (i = 0; i < n[k]; i++) pr[k][i] = sf_get(p[k], f64, i);
            {
                double *z = ref_slot(&rs[k], 0), *v = ref_slot(&rs[k], 1);
                void *zl = NULL, *vl = NULL;
                optim_dtype sdt;
                int init;
                ASSERT_OPT_OK(o, optim_state_slot_data(o, k, 0, &zl, &sdt, &init));
                if (init != rs[k].z_init) FAIL("step %d: z initialized %d, the reference %d", t, init, rs[k].z_init);
                for (i = 0; i < n[k]; i++) z[i] = sf_get(zl, f64, i);
                if (c->rule == OPTIM_ADAMW_SCHEDULE_FREE) {
                    ASSERT_OPT_OK(o, optim_state_slot_data(o, k, 1, &vl, &sdt, &init));
                    for (i = 0; i < n[k]; i++) v[i] = sf_get(vl, f64, i);
                }
            }
            if (f64)
                ref_step64(&hp[k], lr, pr[k], (const double *)g[k], &rs[k]);
            else
                ref_step(&hp[k], lr, pr[k], (const float *)g[k], &rs[k]);
        }
        ASSERT_OPT_OK(o, optim_step(o));
        for (k = 0; k < SF_NP && check; k++) {
            void *zl = NULL;
            optim_dtype sdt;
            int init;
            double e, lm, ws;
            e = sf_err(p[k], f64, pr[k], n[k], &where);
            if (worst && e > *worst) *worst = e;
            if (e > tol)
                FAIL("%s %s cfg lr %g wd %g warmup %g r %g wlp %g: step %d, param %zu[%zu] = %.9g vs reference %.9g "
                     "(error %.3g)",
                     optim_rule_name(c->rule), f64 ? "float64" : "float32", c->lr, c->wd, c->warmup, c->r, c->wlp, t,
                     k, where, sf_get(p[k], f64, where), pr[k][where], e);
            ASSERT_OPT_OK(o, optim_state_slot_data(o, k, 0, &zl, &sdt, &init));
            e = sf_err(zl, f64, ref_slot(&rs[k], 0), n[k], &where);
            if (e > tol) FAIL("step %d: z of param %zu [%zu] error %.3g", t, k, where, e);
            ASSERT_OPT_OK(o, optim_param_get_schedule_free(o, k, &lm, &ws));
            if (lm != rs[k].lr_max || fabs(ws - rs[k].weight_sum) > 1e-15 * rs[k].weight_sum)
                FAIL("step %d: param %zu lr_max %.17g weight_sum %.17g, the reference %.17g %.17g", t, k, lm, ws,
                     rs[k].lr_max, rs[k].weight_sum);
        }
    }
    for (k = 0; k < SF_NP; k++) {
        void *zl = NULL;
        optim_dtype sdt;
        int init;
        ASSERT_OPT_OK(o, optim_state_slot_data(o, k, 0, &zl, &sdt, &init));
        memcpy(out[k], p[k], n[k] * es);
        memcpy(out[SF_NP + k], zl, n[k] * es);
        free(p[k]);
        free(g[k]);
        free(pr[k]);
        ref_free(&rs[k]);
    }
    optim_free(o);
    return rc;
}

TEST_IMPL(schedule_free_vs_reference)
{
    const size_t n[SF_NP] = {SF_N0, SF_N1};
    size_t c, k;
    int f64, printed = 0;
    for (c = 0; c < sizeof sf_cfgs / sizeof sf_cfgs[0]; c++) {
        for (f64 = 0; f64 <= 1; f64++) {
            const size_t es = f64 ? sizeof(double) : sizeof(float);
            void *ref[2 * SF_NP], *got[2 * SF_NP];
            double worst = 0;
            size_t j;
            for (k = 0; k < 2 * SF_NP; k++) {
                ref[k] = malloc(n[k % SF_NP] * es);
                got[k] = malloc(n[k % SF_NP] * es);
                if (!ref[k] || !got[k]) FAIL("out of memory");
            }
            if (sf_run(&sf_cfgs[c], f64, OPTIM_ISA_SCALAR, 1, 0, ref, &worst)) return 1;
            /* Every path and thread count, and a run through a checkpoint: the same bits (float64: the
             * configurations with every option on, to keep the test short). */
            for (j = 0; j < sizeof sf_isas / sizeof sf_isas[0] && (!f64 || c % 2 == 1); j++) {
                int threads;
                optim *probe = NULL;
                int have;
                optim_create(&probe, OPTIM_SGD);
                have = optim_set_isa(probe, sf_isas[j]) == OPTIM_OK;
                optim_free(probe);
                if (!have) {
                    if (!printed) printf("  path %s not exercised (not in this build or CPU)\n", optim_isa_name(sf_isas[j]));
                    continue;
                }
                for (threads = 1; threads <= 2; threads++) {
                    const int ck = sf_isas[j] == OPTIM_ISA_SCALAR && threads == 1;
                    if (sf_run(&sf_cfgs[c], f64, sf_isas[j], threads, ck, got, NULL)) return 1;
                    for (k = 0; k < 2 * SF_NP; k++)
                        if (memcmp(got[k], ref[k], n[k % SF_NP] * es) != 0)
                            FAIL("%s %s cfg %zu: %s on %s with %d threads%s differs from the scalar path",
                                 optim_rule_name(sf_cfgs[c].rule), f64 ? "float64" : "float32", c,
                                 k < SF_NP ? "the parameters" : "z", optim_isa_name(sf_isas[j]), threads,
                                 ck ? " (through a checkpoint)" : "");
                }
            }
            printed = 1;
            printf("  %-20s cfg %zu %s: %d steps, worst error %.3g\n", optim_rule_name(sf_cfgs[c].rule), c,
                   f64 ? "float64" : "float32", SF_STEPS, worst);
            for (k = 0; k < 2 * SF_NP; k++) {
                free(ref[k]);
                free(got[k]);
            }
        }
    }
    return 0;
}

TEST_IMPL(schedule_free_api)
{
    optim *o = NULL;
    optim_hparams hp;
    optim_error e;
    float p[4] = {1, 2, 3, 4}, g[4] = {1, 1, 1, 1}, p0[4];
    double lm, ws;
    /* Other rules have no mode. */
    ASSERT_OK_MSG(optim_create(&o, OPTIM_ADAMW), "optim_create");
    ASSERT_ERR(optim_schedule_free_eval(o), OPTIM_EUNSUPPORTED, optim_errmsg(o), "adamw");
    ASSERT_ERR(optim_schedule_free_train(o), OPTIM_EUNSUPPORTED, optim_errmsg(o), "only sgd_schedule_free");
    ASSERT_INT(optim_schedule_free_mode(o), ==, OPTIM_EUNSUPPORTED);
    optim_free(o);
    ASSERT_INT(optim_schedule_free_mode(NULL), ==, OPTIM_ENULL);
    ASSERT_INT(optim_schedule_free_train(NULL), ==, OPTIM_ENULL);
    /* Defaults are the reference's. */
    ASSERT_OK_MSG(optim_hparams_init(&hp, OPTIM_ADAMW_SCHEDULE_FREE, &e), e.message);
    ASSERT(hp.lr == 0.0025 && hp.beta1 == 0.9 && hp.beta2 == 0.999 && hp.eps == 1e-8 && hp.weight_decay == 0 &&
           hp.warmup_steps == 0 && hp.r == 0 && hp.weight_lr_power == 2);
    ASSERT_OK_MSG(optim_hparams_init(&hp, OPTIM_SGD_SCHEDULE_FREE, &e), e.message);
    ASSERT(hp.lr == 1.0 && hp.momentum == 0.9 && hp.weight_decay == 0 && hp.warmup_steps == 0 && hp.r == 0 &&
           hp.weight_lr_power == 2);
    /* Checks name the bad value. */
    hp.momentum = 1.0;
    ASSERT_ERR(optim_hparams_check(&hp, &e), OPTIM_EINVAL, e.message, "momentum = 1 must be in (0, 1)");
    hp.momentum = 0.9;
    hp.warmup_steps = 2.5;
    ASSERT_ERR(optim_hparams_check(&hp, &e), OPTIM_EINVAL, e.message, "warmup_steps = 2.5");
    hp.warmup_steps = 0;
    hp.weight_lr_power = -1;
    ASSERT_ERR(optim_hparams_check(&hp, &e), OPTIM_EINVAL, e.message, "weight_lr_power = -1");
    hp.weight_lr_power = 2;
    ASSERT_OK_MSG(optim_hparams_init(&hp, OPTIM_ADAMW_SCHEDULE_FREE, &e), e.message);
    hp.beta1 = 0;
    ASSERT_ERR(optim_hparams_check(&hp, &e), OPTIM_EINVAL, e.message, "beta1 = 0 must be in (0, 1)");
    /* A parameter never stepped has no z: the switch leaves it alone; a step in eval mode is refused. */
    ASSERT_OK_MSG(optim_hparams_init(&hp, OPTIM_SGD_SCHEDULE_FREE, &e), e.message);
    ASSERT_OK_MSG(optim_create(&o, OPTIM_SGD_SCHEDULE_FREE), "optim_create");
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p, g, 4, "p", NULL));
    ASSERT_OPT_OK(o, optim_param_get_schedule_free(o, 0, &lm, &ws));
    ASSERT(lm == -1 && ws == 0);
    ASSERT_OPT_OK(o, optim_schedule_free_eval(o));
    ASSERT(p[0] == 1 && p[3] == 4);
    ASSERT_INT(optim_schedule_free_mode(o), ==, 0);
    ASSERT_ERR(optim_step(o), OPTIM_ESTATE, optim_errmsg(o), "eval mode");
    ASSERT(p[0] == 1 && p[3] == 4);
    ASSERT_OPT_OK(o, optim_schedule_free_train(o));
    ASSERT_OPT_OK(o, optim_step(o));
    /* First step: y = lerp(y, y, 1) - lr (0.9 * 0 - 1) ... ckp1 = 1: p = p + lr (momentum (1 - 1) - 1) g = p - g. */
    ASSERT(p[0] == 0 && p[3] == 3);
    memcpy(p0, p, sizeof p);
    ASSERT_OPT_OK(o, optim_schedule_free_eval(o));
    ASSERT_OPT_OK(o, optim_schedule_free_train(o));
    ASSERT(fabsf(p[1] - p0[1]) < 1e-6f);
    ASSERT_ERR(optim_param_set_schedule_free(o, 0, -2, 0), OPTIM_EINVAL, optim_errmsg(o), "lr_max = -2");
    ASSERT_ERR(optim_param_set_schedule_free(o, 0, 1, NAN), OPTIM_EINVAL, optim_errmsg(o), "weight_sum = nan");
    ASSERT_ERR(optim_param_set_schedule_free(o, 1, 1, 1), OPTIM_ERANGE, optim_errmsg(o), "param 1");
    ASSERT_OPT_OK(o, optim_param_set_schedule_free(o, 0, 0.5, 3));
    ASSERT_OPT_OK(o, optim_param_get_schedule_free(o, 0, &lm, &ws));
    ASSERT(lm == 0.5 && ws == 3);
    ASSERT_ERR(optim_schedule_free_set_mode(o, 2), OPTIM_EINVAL, optim_errmsg(o), "train = 2");
    ASSERT_OPT_OK(o, optim_schedule_free_set_mode(o, 0));
    ASSERT(p[1] == p0[1]);
    ASSERT_INT(optim_schedule_free_mode(o), ==, 0);
    optim_free(o);
    return 0;
}

/* The train/eval switch on every storage the step handles: bfloat16
 * parameters with and without a float32 master, int8_block z, float32
 * parameters with int8 z; every CPU path, 1 and 2 threads; each switch
 * against its float32 formula, bit for bit, on the values the optimizer
 * holds before it: p = lerp(p, z, w) in float32 (torch's lerp), z decoded
 * as optim_state_slot_read_f32 decodes it, w = 1 - 1/c to x and 1 - c to y;
 * a master is switched and the bfloat16 memory is its nearest value, a
 * bfloat16 parameter without master is widened, switched and rounded to
 * nearest. */
typedef struct sf_store {
    optim_rule rule;
    optim_dtype pdt, sdt;
    unsigned flags;
    const char *name;
} sf_store;

static float sf_lerp(float a, float b, float w)
{
    const float d = b - a;
    return fabsf(w) >= 0.5f ? b - d * (1.0f - w) : a + w * d;
}

TEST_IMPL(schedule_free_switch_storage)
{
    static const sf_store stores[] = {
        {OPTIM_ADAMW_SCHEDULE_FREE, OPTIM_BFLOAT16, OPTIM_FLOAT32, OPTIM_PARAM_MASTER, "bf16 + master"},
        {OPTIM_SGD_SCHEDULE_FREE, OPTIM_BFLOAT16, OPTIM_FLOAT32, OPTIM_PARAM_MASTER, "bf16 + master"},
        {OPTIM_ADAMW_SCHEDULE_FREE, OPTIM_BFLOAT16, OPTIM_INT8_BLOCK, OPTIM_PARAM_MASTER, "bf16 + master, int8 z"},
        {OPTIM_SGD_SCHEDULE_FREE, OPTIM_BFLOAT16, OPTIM_INT8_BLOCK, 0, "bf16, int8 z"},
        {OPTIM_ADAMW_SCHEDULE_FREE, OPTIM_BFLOAT16, OPTIM_FLOAT32, 0, "bf16"},
        {OPTIM_ADAMW_SCHEDULE_FREE, OPTIM_FLOAT32, OPTIM_INT8_BLOCK, 0, "f32, int8 z"},
    };
    static const optim_isa isas[] = {OPTIM_ISA_SCALAR, OPTIM_ISA_AVX2, OPTIM_ISA_AVX512};
    const size_t n = 3 * 4096 + 77; /* int8 blocks and chunks with a tail */
    const uint64_t seed = test_seed();
    size_t si, a, j;
    int th, sw;
    float *before = malloc(n * sizeof(float)), *z = malloc(n * sizeof(float)), *want = malloc(n * sizeof(float));
    if (!before || !z || !want) FAIL("out of memory");
    printf("  seed %" PRIu64 "\n", seed);
    for (si = 0; si < sizeof stores / sizeof stores[0]; si++)
        for (a = 0; a < sizeof isas / sizeof isas[0]; a++)
            for (th = 1; th <= 2; th++) {
                const sf_store *sc = &stores[si];
                test_rng rng = {seed ^ si};
                optim *o = NULL;
                optim_hparams hp;
                void *p = t_alloc(sc->pdt, n), *g = t_alloc(sc->pdt, n);
                float *m = NULL;
                if (!optim_isa_available(isas[a])) continue;
                if (!p || !g) FAIL("out of memory");
                for (j = 0; j < n; j++) t_set(sc->pdt, p, j, test_rng_normal(&rng));
                ASSERT_OK(optim_create(&o, sc->rule));
                ASSERT_OK(optim_hparams_init(&hp, sc->rule, NULL));
                if (sc->rule == OPTIM_SGD_SCHEDULE_FREE) hp.lr = 0.1;
                ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
                ASSERT_OPT_OK(o, optim_add_param_ex(o, 0, p, sc->pdt, g, sc->pdt, n, sc->sdt, sc->flags, "w", NULL));
                ASSERT_OPT_OK(o, optim_set_isa(o, isas[a]));
                ASSERT_OPT_OK(o, optim_set_threads(o, th));
                for (sw = 0; sw < 6; sw++) {
                    const int to_eval = sw % 2 == 0;
                    const double c = sc->rule == OPTIM_SGD_SCHEDULE_FREE ? hp.momentum : hp.beta1;
                    const float w = (float)(to_eval ? 1.0 - 1.0 / c : 1.0 - c);
                    if (to_eval) { /* two steps before each eval, so that z and the parameters part */
                        int k;
                        for (k = 0; k < 2; k++) {
                            for (j = 0; j < n; j++) t_set(sc->pdt, g, j, test_rng_normal(&rng));
                            ASSERT_OPT_OK(o, optim_step(o));
                        }
                    } else {
                        ASSERT_ERR(optim_step(o), OPTIM_ESTATE, optim_errmsg(o), "eval mode");
                    }
                    if (sc->flags & OPTIM_PARAM_MASTER) ASSERT_OPT_OK(o, optim_param_master_data(o, 0, &m));
                    for (j = 0; j < n; j++) before[j] = m ? m[j] : (float)t_get(sc->pdt, p, j);
                    ASSERT_OPT_OK(o, optim_state_slot_read_f32(o, 0, 0, z));
                    for (j = 0; j < n; j++) want[j] = sf_lerp(before[j], z[j], w);
                    ASSERT_OPT_OK(o, to_eval ? optim_schedule_free_eval(o) : optim_schedule_free_train(o));
                    for (j = 0; j < n; j++) {
                        const float got = m ? m[j] : (float)t_get(sc->pdt, p, j);
                        const float exp = (m || sc->pdt == OPTIM_FLOAT32) ? want[j]
                                                                          : t_bf16_to_float(t_bf16_from_float(want[j]));
                        if (tbits(got) != tbits(exp))
                            FAIL("%s %s %s %d threads, switch %d to %s, element %zu: %.9g, want %.9g (p %.9g, z %.9g)",
                                 optim_rule_name(sc->rule), sc->name, optim_isa_name(isas[a]), th, sw,
                                 to_eval ? "eval" : "train", j, got, exp, before[j], z[j]);
                        if (m && tbits((float)t_get(sc->pdt, p, j)) != tbits(t_bf16_to_float(t_bf16_from_float(got))))
                            FAIL("%s %s %s: switch %d, element %zu: the bfloat16 memory %.9g is not the master's "
                                 "nearest (%.9g)",
                                 optim_rule_name(sc->rule), sc->name, optim_isa_name(isas[a]), sw, j,
                                 t_get(sc->pdt, p, j), got);
                    }
                }
                optim_free(o);
                free(p);
                free(g);
            }
    free(before);
    free(z);
    free(want);
    return 0;
}

/* SAM over a schedule-free optimizer in eval mode: the first step refuses
 * (its second step would step in eval mode, which is refused) before
 * moving anything, as optim_step does. */
TEST_IMPL(schedule_free_sam_eval)
{
    optim *o = NULL;
    optim_sam *s = NULL;
    optim_hparams hp;
    float p[4] = {1, 2, 3, 4}, g[4] = {0.5f, -0.25f, 1, 2}, p0[4];
    ASSERT_OK(optim_create(&o, OPTIM_SGD_SCHEDULE_FREE));
    ASSERT_OK(optim_hparams_init(&hp, OPTIM_SGD_SCHEDULE_FREE, NULL));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p, g, 4, "p", NULL));
    ASSERT_OK(optim_sam_create(&s, o, 0.05, 2.0, 0, 0.0, NULL));
    ASSERT_OK_MSG(optim_sam_first_step(s), optim_sam_errmsg(s));
    ASSERT_OK_MSG(optim_sam_second_step(s), optim_sam_errmsg(s));
    ASSERT_OPT_OK(o, optim_schedule_free_eval(o));
    memcpy(p0, p, sizeof p);
    ASSERT_ERR(optim_sam_first_step(s), OPTIM_ESTATE, optim_sam_errmsg(s), "eval mode");
    ASSERT(memcmp(p, p0, sizeof p) == 0);
    ASSERT_INT(optim_sam_is_perturbed(s), ==, 0);
    ASSERT_ERR(optim_sam_second_step(s), OPTIM_ESTATE, optim_sam_errmsg(s), "no first_step");
    ASSERT_INT(optim_step_count(o), ==, 1);
    ASSERT_OPT_OK(o, optim_schedule_free_train(o));
    ASSERT_OK_MSG(optim_sam_first_step(s), optim_sam_errmsg(s));
    ASSERT_OK_MSG(optim_sam_second_step(s), optim_sam_errmsg(s));
    ASSERT_INT(optim_step_count(o), ==, 2);
    optim_sam_free(s);
    optim_free(o);
    return 0;
}
