/* mpi_test.c: liboptim_mpi against one process, bit for bit. Run under
 * mpirun with 2 or 3 ranks (tests/mpi/CMakeLists.txt registers the runs).
 *
 * Each rank's gradient is a deterministic function of (seed, step, rank,
 * parameter, element) plus 0.05 w, so it depends on the parameters as a real
 * gradient does. The reference is a plain optimizer of the library, in the
 * same process and without MPI, stepped with the average every rank would
 * compute, avg = (float)((g_0 + ... + g_{K-1}) / K) in double, from its own
 * copy of the parameters. After every step every rank compares its whole
 * parameters, its slices' state, the step counters, the skip flag and the
 * gradient norm with the reference, bit for bit.
 *
 *   mpi_test steps [--steps N]          every rule and option, stages 0, 1, 2, SAM, a model smaller than the ranks
 *   mpi_test save --dir D --steps T [--rule R --stage S --crash-before-manifest]
 *   mpi_test resume --dir D --from T --old-ranks K0 --steps N [--rule R --stage S --bucket B]
 *   mpi_test plain --ckpt F --dir D --from T --old-ranks K0 --steps N [--rule R]  (one process, optim_load)
 *   mpi_test merge --dir D --out F
 *   mpi_test load-fails --dir D --expect TEXT
 *   mpi_test mismatch --what W          a configuration differing on the last rank is refused
 *   mpi_test errors                     failures on one rank fail every rank; nothing changes
 *   mpi_test kill --rank R --at T       rank R kills itself at step T (mpirun must end the job)
 *   mpi_test timeout                    the last rank stops answering: the others fail with ECOMM
 */
#define _POSIX_C_SOURCE 200809L
#include "optim_mpi.h"
#include "optim_checkpoint.h"
#include "optim_sam.h"
#include "optim_schedule.h"

#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int g_rank = 0, g_size = 1;
static long g_failures = 0;

#define FAILF(...)                                                   \
    do {                                                             \
        fprintf(stderr, "rank %d: FAIL %s:%d: ", g_rank, __FILE__, __LINE__); \
        fprintf(stderr, __VA_ARGS__);                                \
        fprintf(stderr, "\n");                                       \
        g_failures++;                                                \
    } while (0)
#define CHECK(cond, ...)                \
    do {                                \
        if (!(cond)) FAILF(__VA_ARGS__); \
    } while (0)

/* ---- The model ---------------------------------------------------------------------- */

/* Sizes across blocks and buckets: one empty, tiny ones, one spanning several buckets. */
static const size_t sizes_big[] = {20000, 1, 0, 8193, 300, 12345, 7, 40000};
static const size_t sizes_tiny[] = {5, 3, 0, 2};
#define NP_MAX 8

typedef struct model {
    size_t np;
    const size_t *n;
    float *w[NP_MAX], *g[NP_MAX];
} model;

static void model_init(model *m, const size_t *n, size_t np, uint64_t seed, float offset)
{
    size_t i, j;
    m->np = np;
    m->n = n;
    for (i = 0; i < np; i++) {
        m->w[i] = (float *)calloc(n[i] ? n[i] : 1, sizeof(float));
        m->g[i] = (float *)calloc(n[i] ? n[i] : 1, sizeof(float));
        for (j = 0; j < n[i]; j++) {
            uint64_t z = seed * 0x9E3779B97F4A7C15ull + i * 1000003u + j;
            z ^= z >> 31;
            z *= 0xBF58476D1CE4E5B9ull;
            z ^= z >> 29;
            m->w[i][j] = (float)((double)(z >> 11) / 9007199254740992.0 - 0.5) + offset;
        }
    }
}

static void model_free(model *m)
{
    size_t i;
    for (i = 0; i < m->np; i++) {
        free(m->w[i]);
        free(m->g[i]);
    }
}

static float gen(uint64_t seed, int t, int r, size_t i, size_t j)
{
    uint64_t z = seed ^ ((uint64_t)t << 40) ^ ((uint64_t)r << 32) ^ ((uint64_t)i << 26) ^ j;
    double u;
    static const float scale[NP_MAX] = {0.02f, 3.0f, 1.0f, 0.5f, 0.1f, 0.05f, 2.0f, 0.01f};
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    u = (double)(z >> 11) / 9007199254740992.0 * 2.0 - 1.0;
    return (float)u * scale[i % NP_MAX];
}

/* Rank r's gradient of parameter i at w (NaN injected where asked). */
static float grad_of(uint64_t seed, int t, int r, size_t i, size_t j, float w, int nan_step, int K)
{
    float g = gen(seed, t, r, i, j) + 0.05f * w;
    if (t == nan_step && r == K - 1 && i == 3 && j == 100) g = NAN;
    return g;
}

static void local_grads(const model *m, uint64_t seed, int t, int nan_step)
{
    size_t i, j;
    for (i = 0; i < m->np; i++)
        for (j = 0; j < m->n[i]; j++) m->g[i][j] = grad_of(seed, t, g_rank, i, j, m->w[i][j], nan_step, g_size);
}

/* The average over K ranks, as liboptim_mpi defines it. */
static void ref_grads(const model *m, uint64_t seed, int t, int K, int nan_step)
{
    size_t i, j;
    int r;
    for (i = 0; i < m->np; i++)
        for (j = 0; j < m->n[i]; j++) {
            double acc = grad_of(seed, t, 0, i, j, m->w[i][j], nan_step, K);
            for (r = 1; r < K; r++) acc += (double)grad_of(seed, t, r, i, j, m->w[i][j], nan_step, K);
            m->g[i][j] = (float)(acc / (double)K);
        }
}

/* ---- Configurations ------------------------------------------------------------------ */

typedef struct cfg {
    const char *name;
    optim_rule rule;
    double clip_norm, norm_type, clip_value;
    optim_nonfinite nonfinite;
    int sched;      /* warm-up + cosine on group 0, step decay on group 1 */
    double sam_p;   /* 0: no SAM */
    int sam_adaptive;
    int nan_step;   /* -1: none */
    int handover;   /* stage 2: 0 all at the step, 1 reverse order, 2 scattered, some left to the step */
} cfg;

static const cfg cfgs[] = {
    {"sgd-nesterov-clip2", OPTIM_SGD, 1.0, 2.0, 0, OPTIM_NONFINITE_SKIP, 1, 0, 0, 7, 1},
    {"adagrad-clipvalue", OPTIM_ADAGRAD, 0, 2, 0.3, OPTIM_NONFINITE_PROPAGATE, 0, 0, 0, -1, 2},
    {"rmsprop-centered-clip1", OPTIM_RMSPROP, 5.0, 1.0, 0, OPTIM_NONFINITE_SKIP, 1, 0, 0, 5, 0},
    {"adadelta-momentum-clipinf", OPTIM_ADADELTA, 0.5, INFINITY, 0, OPTIM_NONFINITE_ERROR, 0, 0, 0, 9, 1},
    {"adam-amsgrad-clip3", OPTIM_ADAM, 2.0, 3.0, 0, OPTIM_NONFINITE_SKIP, 1, 0, 0, 11, 2},
    {"adamw-clip2", OPTIM_ADAMW, 1.0, 2.0, 0, OPTIM_NONFINITE_SKIP, 1, 0, 0, -1, 1},
    {"radam", OPTIM_RADAM, 0, 2, 0, OPTIM_NONFINITE_PROPAGATE, 1, 0, 0, -1, 1},
    {"nadam-clip0.5", OPTIM_NADAM, 1.0, 0.5, 0, OPTIM_NONFINITE_SKIP, 0, 0, 0, 4, 2},
    {"adabound-amsbound", OPTIM_ADABOUND, 0, 2, 0, OPTIM_NONFINITE_PROPAGATE, 1, 0, 0, -1, 1},
    {"sam-adam-clip", OPTIM_ADAM, 1.0, 2.0, 0, OPTIM_NONFINITE_SKIP, 1, 2.0, 0, 6, 1},
    {"asam-sgd-pinf", OPTIM_SGD, 0, 2, 0, OPTIM_NONFINITE_SKIP, 0, INFINITY, 1, -1, 2},
    {"sam-rmsprop-p3", OPTIM_RMSPROP, 0, 2, 0.5, OPTIM_NONFINITE_ERROR, 1, 3.0, 0, 8, 0},
};

static const cfg *cfg_find(const char *name)
{
    size_t i;
    for (i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++)
        if (strcmp(cfgs[i].name, name) == 0) return &cfgs[i];
    return NULL;
}

static void hparams_for(optim_hparams *hp, optim_rule rule, size_t group)
{
    optim_hparams_init(hp, rule, NULL);
    switch (rule) {
    case OPTIM_SGD:
        hp->lr = group ? 0.02 : 0.05;
        hp->momentum = 0.9;
        hp->nesterov = group == 0;
        hp->weight_decay = 1e-3;
        break;
    case OPTIM_ADAGRAD:
        hp->lr = 0.05;
        hp->lr_decay = 1e-3;
        hp->initial_accumulator_value = 0.1;
        break;
    case OPTIM_RMSPROP:
        hp->lr = 1e-3;
        hp->centered = 1;
        hp->momentum = group ? 0.0 : 0.5;
        break;
    case OPTIM_ADADELTA:
        hp->momentum = 0.5;
        hp->weight_decay = group ? 0.01 : 0;
        break;
    case OPTIM_ADAM:
        hp->lr = 2e-3;
        hp->amsgrad = group == 0;
        hp->weight_decay = group ? 1e-2 : 0;
        break;
    case OPTIM_ADAMW: hp->lr = group ? 1e-3 : 3e-3; break;
    case OPTIM_RADAM: hp->weight_decay = 1e-3; break;
    case OPTIM_NADAM: hp->decoupled_weight_decay = group; hp->weight_decay = group ? 1e-2 : 0; break;
    case OPTIM_ADABOUND: hp->amsgrad = 1; break;
    default: break;
    }
}

static int must(int rc, const char *what, const char *msg)
{
    if (rc != OPTIM_OK) {
        fprintf(stderr, "rank %d: %s failed: %s: %s\n", g_rank, what, optim_err_name(rc), msg);
        exit(2);
    }
    return rc;
}

/* One process's optimizer over m, as cfg says. */
static optim *build(const cfg *c, model *m, int steps_total)
{
    optim *o = NULL;
    size_t i;
    int g;
    optim_error err;
    must(optim_create(&o, c->rule), "optim_create", "");
    for (g = 0; g < 2; g++) {
        optim_hparams hp;
        hparams_for(&hp, c->rule, (size_t)g);
        must(optim_add_group(o, &hp, NULL), "optim_add_group", optim_errmsg(o));
    }
    for (i = 0; i < m->np; i++) {
        char name[32];
        snprintf(name, sizeof name, "p%zu", i);
        must(optim_add_param(o, i % 2, m->w[i], m->g[i], m->n[i], name, NULL), "optim_add_param", optim_errmsg(o));
    }
    if (m->np > 7) {
        int64_t dims[2] = {100, 400};
        must(optim_param_set_shape(o, 7, 2, dims), "optim_param_set_shape", optim_errmsg(o));
    }
    if (c->sched) {
        optim_schedule *cos = NULL, *wu = NULL, *st = NULL;
        must(optim_schedule_cosine(&cos, steps_total > 6 ? steps_total - 5 : 1, 1e-5, &err), "cosine", err.message);
        must(optim_schedule_warmup(&wu, 5, cos, &err), "warmup", err.message);
        must(optim_schedule_step(&st, 4, 0.7, &err), "step", err.message);
        must(optim_group_set_schedule(o, 0, wu), "set_schedule", optim_errmsg(o));
        must(optim_group_set_schedule(o, 1, st), "set_schedule", optim_errmsg(o));
        optim_schedule_free(wu);
        optim_schedule_free(st);
    }
    if (c->clip_norm > 0) must(optim_set_clip_grad_norm(o, c->clip_norm, c->norm_type), "clip", optim_errmsg(o));
    if (c->clip_value > 0) must(optim_set_clip_grad_value(o, c->clip_value), "clipv", optim_errmsg(o));
    must(optim_set_nonfinite(o, c->nonfinite), "nonfinite", optim_errmsg(o));
    return o;
}

static int same_bits(float a, float b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

static int same_bits_d(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0 || (a != a && b != b);
}

/* Everything the distributed run holds against the reference. */
static void compare(const char *what, int t, optim_mpi *d, const model *m, optim *ref, const model *rm)
{
    size_t i, j, k;
    optim *local = optim_mpi_local(d);
    int s, nslots = optim_rule_slot_count(optim_get_rule(ref)), reported = 0;
    for (i = 0; i < m->np; i++)
        for (j = 0; j < m->n[i]; j++)
            if (!same_bits(m->w[i][j], rm->w[i][j]) && reported++ < 3)
                FAILF("%s step %d: param %zu element %zu: %a, the reference %a", what, t, i, j, m->w[i][j], rm->w[i][j]);
    for (k = 0; k < optim_param_count(local); k++) {
        optim_param_info info;
        size_t pi, a = 0, b = 0;
        int64_t s1, s2;
        optim_param_get_info(local, k, &info);
        if (strcmp(info.name, "[empty]") == 0) continue;
        if (sscanf(info.name, "p%zu[%zu:%zu]", &pi, &a, &b) != 3 || b - a != info.n) {
            FAILF("%s: local parameter %zu is named '%s'", what, k, info.name);
            continue;
        }
        optim_param_get_step(local, k, &s1);
        optim_param_get_step(ref, pi, &s2);
        CHECK(s1 == s2, "%s step %d: %s step counter %lld, the reference %lld", what, t, info.name, (long long)s1,
              (long long)s2);
        for (s = 0; s < nslots; s++) {
            float *x = NULL, *y = NULL;
            int ix = 0, iy = 0;
            optim_state_slot(local, k, s, &x, &ix);
            optim_state_slot(ref, pi, s, &y, &iy);
            if (!x || !y) {
                CHECK(!x == !y, "%s: slot %d of %s allocated here %d, reference %d", what, s, info.name, !!x, !!y);
                continue;
            }
            CHECK(ix == iy, "%s step %d: %s slot %d initialized %d, the reference %d", what, t, info.name, s, ix, iy);
            for (j = 0; j < info.n; j++)
                if (!same_bits(x[j], y[a + j]) && reported++ < 3)
                    FAILF("%s step %d: %s state %s element %zu: %a, the reference %a", what, t, info.name,
                          optim_rule_slot_name(optim_get_rule(ref), s), a + j, x[j], y[a + j]);
        }
    }
    CHECK(optim_mpi_step_count(d) == optim_step_count(ref), "%s step %d: step count %lld, reference %lld", what, t,
          (long long)optim_mpi_step_count(d), (long long)optim_step_count(ref));
    CHECK(optim_mpi_skipped_steps(d) == optim_skipped_steps(ref), "%s step %d: skipped %lld, reference %lld", what, t,
          (long long)optim_mpi_skipped_steps(d), (long long)optim_skipped_steps(ref));
    CHECK(strcmp(what, "after load") == 0 || optim_mpi_last_step_skipped(d) == optim_last_step_skipped(ref),
          "%s step %d: last skipped %d vs %d", what, t,
          optim_mpi_last_step_skipped(d), optim_last_step_skipped(ref));
    /* (A load restores neither the norm the last step measured nor whether it skipped.) */
    CHECK(strcmp(what, "after load") == 0 || strcmp(what, "between SAM's halves") == 0 ||
              same_bits_d(optim_mpi_last_grad_norm(d), optim_last_grad_norm(ref)),
          "%s step %d: global gradient norm %a, the reference %a", what, t, optim_mpi_last_grad_norm(d),
          optim_last_grad_norm(ref));
}

/* Stage 2's hand-over: reverse order, or scattered with some left for the step. */
static void hand_over(optim_mpi *d, const cfg *c, const model *m, int t)
{
    size_t i;
    if (optim_mpi_stage(d) != 2 || c->handover == 0) return;
    if (c->handover == 1) {
        for (i = m->np; i-- > 0;) must(optim_mpi_grad_ready(d, i), "optim_mpi_grad_ready", optim_mpi_errmsg(d));
    } else {
        static const size_t order[] = {5, 0, 7, 3, 1};
        for (i = 0; i < sizeof order / sizeof order[0]; i++)
            if (order[i] < m->np && (order[i] + (size_t)t) % 4 != 0)
                must(optim_mpi_grad_ready(d, order[i]), "optim_mpi_grad_ready", optim_mpi_errmsg(d));
    }
}

typedef struct run {
    const cfg *c;
    int stage;
    model m, rm;
    optim *ref;
    optim_sam *rsam;
    optim_mpi *d;
    uint64_t seed;
    int steps_total;
} run;

static optim_mpi_options small_buckets(void)
{
    optim_mpi_options o;
    optim_mpi_options_init(&o);
    o.bucket_bytes = 64 << 10; /* several buckets for this model */
    o.timeout = 120;
    return o;
}

static void run_open(run *R, const cfg *c, int stage, const size_t *sizes, size_t np, int steps_total,
                     const optim_mpi_options *opts)
{
    optim *opt;
    optim_error err;
    memset(R, 0, sizeof *R);
    R->c = c;
    R->stage = stage;
    R->seed = 0x5eed0000u + (uint64_t)(c - cfgs) * 17u; /* not the stage: a run resumes in another */
    R->steps_total = steps_total;
    /* Ranks start from different parameters: optim_mpi_create broadcasts rank 0's. */
    model_init(&R->m, sizes, np, R->seed, g_rank * 0.25f);
    model_init(&R->rm, sizes, np, R->seed, 0.0f);
    R->ref = build(c, &R->rm, steps_total);
    opt = build(c, &R->m, steps_total);
    must(optim_mpi_create_with(&R->d, opt, MPI_COMM_WORLD, stage, opts, &err), "optim_mpi_create", err.message);
    optim_free(opt); /* d needs nothing of it */
    if (c->sam_p > 0) {
        must(optim_sam_create(&R->rsam, R->ref, 0.05, c->sam_p, c->sam_adaptive, 0.01, &err), "sam", err.message);
        must(optim_mpi_set_sam(R->d, 0.05, c->sam_p, c->sam_adaptive, 0.01), "optim_mpi_set_sam",
             optim_mpi_errmsg(R->d));
    }
}

static void run_close(run *R)
{
    optim_mpi_free(R->d);
    optim_sam_free(R->rsam);
    optim_free(R->ref);
    model_free(&R->m);
    model_free(&R->rm);
}

/* One step (or SAM step) of both, at step t of the gradient sequence with K ranks' average. */
static void run_step(run *R, int t, int K_ref)
{
    const cfg *c = R->c;
    int rc, rrc;
    char what[128];
    snprintf(what, sizeof what, "%s stage %d", c->name, R->stage);
    local_grads(&R->m, R->seed, t, c->nan_step);
    ref_grads(&R->rm, R->seed, t, K_ref, c->nan_step);
    hand_over(R->d, c, &R->m, t);
    if (R->rsam) {
        rc = optim_mpi_sam_first_step(R->d);
        rrc = optim_sam_first_step(R->rsam);
        CHECK(rc == rrc, "%s step %d: first_step returned %s, the reference %s (%s)", what, t, optim_err_name(rc),
              optim_err_name(rrc), optim_mpi_errmsg(R->d));
        if (rc == OPTIM_ENONFINITE)
            CHECK(strstr(optim_mpi_errmsg(R->d), "'p3'") != NULL, "%s: the message names p3: %s", what,
                  optim_mpi_errmsg(R->d));
        if (rc == OPTIM_OK) {
            /* Gradients at w + e: the parameters must already agree (and SAM's norm). */
            compare("between SAM's halves", t, R->d, &R->m, R->ref, &R->rm);
            CHECK(same_bits_d(optim_mpi_sam_last_grad_norm(R->d), optim_sam_last_grad_norm(R->rsam)),
                  "%s step %d: SAM's global norm %a, the reference %a", what, t, optim_mpi_sam_last_grad_norm(R->d),
                  optim_sam_last_grad_norm(R->rsam));
            local_grads(&R->m, R->seed, t + 1000, -1);
            ref_grads(&R->rm, R->seed, t + 1000, K_ref, -1);
            hand_over(R->d, c, &R->m, t);
            rc = optim_mpi_sam_second_step(R->d);
            rrc = optim_sam_second_step(R->rsam);
            CHECK(rc == rrc, "%s step %d: second_step returned %s, the reference %s (%s)", what, t,
                  optim_err_name(rc), optim_err_name(rrc), optim_mpi_errmsg(R->d));
        }
    } else {
        rc = optim_mpi_step(R->d);
        rrc = optim_step(R->ref);
        CHECK(rc == rrc, "%s step %d: returned %s, the reference %s (%s)", what, t, optim_err_name(rc),
              optim_err_name(rrc), optim_mpi_errmsg(R->d));
        if (rc == OPTIM_ENONFINITE)
            CHECK(strstr(optim_mpi_errmsg(R->d), "'p3'") != NULL, "%s: the message names p3: %s", what,
                  optim_mpi_errmsg(R->d));
    }
    compare(what, t, R->d, &R->m, R->ref, &R->rm);
}

static int cmd_steps(int steps)
{
    size_t c;
    int stage, t;
    optim_mpi_options opts = small_buckets();
    for (c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++)
        for (stage = 0; stage <= 2; stage++) {
            run R;
            long before = g_failures;
            run_open(&R, &cfgs[c], stage, sizes_big, sizeof sizes_big / sizeof sizes_big[0], steps, &opts);
            compare("after create", -1, R.d, &R.m, R.ref, &R.rm);
            if (stage > 0 && c == 0 && g_rank == 0)
                printf("layout: %zu buckets, %zu of %zu elements on rank 0\n", optim_mpi_bucket_count(R.d),
                       optim_mpi_shard_elements(R.d), (size_t)81146);
            for (t = 0; t < steps && g_failures == before; t++) run_step(&R, t, g_size);
            if (g_rank == 0)
                printf("%-28s stage %d: %d steps %s (state %zu bytes on rank 0)\n", cfgs[c].name, stage, steps,
                       g_failures == before ? "bit-identical" : "DIFFER", optim_mpi_state_bytes(R.d));
            run_close(&R);
        }
    /* A model with fewer blocks than ranks: some ranks own nothing. */
    for (stage = 1; stage <= 2; stage++) {
        run R;
        long before = g_failures;
        optim_mpi_options o;
        optim_mpi_options_init(&o);
        run_open(&R, cfg_find("sam-adam-clip"), stage, sizes_tiny, sizeof sizes_tiny / sizeof sizes_tiny[0], steps,
                 &o);
        for (t = 0; t < steps && g_failures == before; t++) run_step(&R, t, g_size);
        if (g_rank == 0)
            printf("tiny model (%zu elements on rank 0) stage %d: %s\n", optim_mpi_shard_elements(R.d), stage,
                   g_failures == before ? "bit-identical" : "DIFFER");
        run_close(&R);
    }
    return 0;
}

/* ---- Checkpoints ----------------------------------------------------------------------- */

static void params_path(char *buf, size_t n, const char *dir, int t)
{
    snprintf(buf, n, "%s.params-%d.bin", dir, t);
}

static void write_params(const model *m, const char *dir, int t)
{
    char path[4096];
    FILE *f;
    size_t i;
    params_path(path, sizeof path, dir, t);
    f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
    for (i = 0; i < m->np; i++) fwrite(m->w[i], sizeof(float), m->n[i], f);
    if (fclose(f) != 0) exit(2);
}

static void read_params(model *m, const char *dir, int t)
{
    char path[4096];
    FILE *f;
    size_t i;
    params_path(path, sizeof path, dir, t);
    f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
    for (i = 0; i < m->np; i++)
        if (fread(m->w[i], sizeof(float), m->n[i], f) != m->n[i]) exit(2);
    fclose(f);
}

static void crash_now(void)
{
    fprintf(stderr, "rank 0: crashing before the manifest, as asked\n");
    fflush(stderr);
    raise(SIGKILL);
}

typedef struct ckopts {
    const char *dir, *out, *ckpt, *expect, *rule;
    int steps, from, old_ranks, stage, crash;
    size_t bucket;
} ckopts;

static const cfg *ck_cfg(const ckopts *o)
{
    const cfg *c = cfg_find(o->rule ? o->rule : "adam-amsgrad-clip3");
    if (!c) {
        fprintf(stderr, "unknown configuration %s\n", o->rule);
        exit(2);
    }
    return c;
}

extern void (*optim_mpi__before_manifest)(void);

static int cmd_save(const ckopts *o)
{
    run R;
    int t;
    optim_mpi_options opts = small_buckets();
    if (o->bucket) opts.bucket_bytes = o->bucket;
    run_open(&R, ck_cfg(o), o->stage, sizes_big, 8, 40, &opts);
    for (t = 0; t < o->steps; t++) run_step(&R, t, g_size);
    if (o->crash && g_rank == 0) optim_mpi__before_manifest = crash_now;
    if (g_rank == 0) write_params(&R.m, o->dir, o->steps);
    must(optim_mpi_save(R.d, o->dir), "optim_mpi_save", optim_mpi_errmsg(R.d));
    if (g_rank == 0) printf("saved %d steps of %d ranks (stage %d) in %s\n", o->steps, g_size, o->stage, o->dir);
    run_close(&R);
    return 0;
}

/* The reference replays the whole history: `from` steps averaged over old_ranks, then ours. */
static void replay(run *R, int from, int old_ranks)
{
    int t;
    for (t = 0; t < from; t++) {
        ref_grads(&R->rm, R->seed, t, old_ranks, R->c->nan_step);
        if (R->rsam) {
            if (optim_sam_first_step(R->rsam) == OPTIM_OK) {
                ref_grads(&R->rm, R->seed, t + 1000, old_ranks, -1);
                optim_sam_second_step(R->rsam);
            }
        } else {
            optim_step(R->ref);
        }
    }
}

static int cmd_resume(const ckopts *o)
{
    run R;
    int t;
    optim_mpi_options opts = small_buckets();
    if (o->bucket) opts.bucket_bytes = o->bucket;
    run_open(&R, ck_cfg(o), o->stage, sizes_big, 8, 40, &opts);
    replay(&R, o->from, o->old_ranks);
    read_params(&R.m, o->dir, o->from); /* every rank reads rank 0's parameters of that step */
    must(optim_mpi_load(R.d, o->dir), "optim_mpi_load", optim_mpi_errmsg(R.d));
    CHECK(optim_mpi_step_count(R.d) == optim_step_count(R.ref), "loaded %lld steps, expected %lld (of %d)",
          (long long)optim_mpi_step_count(R.d), (long long)optim_step_count(R.ref), o->from);
    compare("after load", o->from, R.d, &R.m, R.ref, &R.rm);
    for (t = o->from; t < o->from + o->steps; t++) run_step(&R, t, g_size);
    if (g_rank == 0)
        printf("resumed a %d-rank checkpoint on %d ranks (stage %d): %d steps %s\n", o->old_ranks, g_size, o->stage,
               o->steps, g_failures ? "DIFFER" : "bit-identical");
    run_close(&R);
    return 0;
}

/* One process: optim_load of a merged checkpoint into the model's own optimizer. */
static int cmd_plain(const ckopts *o)
{
    const cfg *c = ck_cfg(o);
    model m, rm;
    optim *opt, *ref;
    optim_sam *sam = NULL, *rsam = NULL;
    optim_error err;
    uint64_t seed = 0x5eed0000u + (uint64_t)(c - cfgs) * 17u;
    int t;
    size_t i, j;
    model_init(&m, sizes_big, 8, seed, 0.0f);
    model_init(&rm, sizes_big, 8, seed, 0.0f);
    opt = build(c, &m, 40);
    ref = build(c, &rm, 40);
    if (c->sam_p > 0) {
        must(optim_sam_create(&sam, opt, 0.05, c->sam_p, c->sam_adaptive, 0.01, &err), "sam", err.message);
        must(optim_sam_create(&rsam, ref, 0.05, c->sam_p, c->sam_adaptive, 0.01, &err), "sam", err.message);
    }
    {
        run R;
        memset(&R, 0, sizeof R);
        R.c = c;
        R.rm = rm;
        R.ref = ref;
        R.rsam = rsam;
        R.seed = seed;
        replay(&R, o->from, o->old_ranks);
    }
    read_params(&m, o->dir, o->from);
    must(optim_load(opt, o->ckpt, OPTIM_MATCH_NAME), "optim_load", optim_errmsg(opt));
    CHECK(optim_step_count(opt) == optim_step_count(ref) && optim_skipped_steps(opt) == optim_skipped_steps(ref),
          "merged checkpoint has %lld steps and %lld skipped, expected %lld and %lld", (long long)optim_step_count(opt),
          (long long)optim_skipped_steps(opt), (long long)optim_step_count(ref), (long long)optim_skipped_steps(ref));
    for (t = o->from; t < o->from + o->steps; t++) {
        /* One process: K = 1. */
        for (i = 0; i < 8; i++)
            for (j = 0; j < m.n[i]; j++) m.g[i][j] = grad_of(seed, t, 0, i, j, m.w[i][j], c->nan_step, 1);
        ref_grads(&rm, seed, t, 1, c->nan_step);
        if (sam) {
            if (optim_sam_first_step(sam) == OPTIM_OK && optim_sam_first_step(rsam) == OPTIM_OK) {
                for (i = 0; i < 8; i++)
                    for (j = 0; j < m.n[i]; j++) m.g[i][j] = grad_of(seed, t + 1000, 0, i, j, m.w[i][j], -1, 1);
                ref_grads(&rm, seed, t + 1000, 1, -1);
                optim_sam_second_step(sam);
                optim_sam_second_step(rsam);
            }
        } else {
            optim_step(opt);
            optim_step(ref);
        }
        for (i = 0; i < 8; i++)
            for (j = 0; j < m.n[i]; j++)
                if (!same_bits(m.w[i][j], rm.w[i][j])) {
                    FAILF("one process after the merge, step %d: param %zu element %zu: %a vs %a", t, i, j,
                          m.w[i][j], rm.w[i][j]);
                    i = 8;
                    break;
                }
    }
    printf("merged checkpoint of %d ranks continued in one process: %d steps %s\n", o->old_ranks, o->steps,
           g_failures ? "DIFFER" : "bit-identical");
    optim_sam_free(sam);
    optim_sam_free(rsam);
    optim_free(opt);
    optim_free(ref);
    model_free(&m);
    model_free(&rm);
    return 0;
}

static int cmd_merge(const ckopts *o)
{
    optim_error err;
    int rc = optim_mpi_merge(o->dir, o->out, &err);
    if (rc != OPTIM_OK) FAILF("optim_mpi_merge: %s", err.message);
    return 0;
}

static int cmd_load_fails(const ckopts *o)
{
    run R;
    int rc;
    optim_mpi_options opts = small_buckets();
    run_open(&R, ck_cfg(o), 1, sizes_big, 8, 40, &opts);
    rc = optim_mpi_load(R.d, o->dir);
    CHECK(rc != OPTIM_OK, "loading %s succeeded", o->dir);
    CHECK(strstr(optim_mpi_errmsg(R.d), o->expect) != NULL, "the message '%s' lacks '%s'", optim_mpi_errmsg(R.d),
          o->expect);
    if (g_rank == 0) printf("refused as expected: %s\n", optim_mpi_errmsg(R.d));
    /* Nothing changed: the run goes on as if the load had not been tried. */
    run_step(&R, 0, g_size);
    run_close(&R);
    return 0;
}

/* ---- Failures --------------------------------------------------------------------------- */

/* The last rank describes something else; every rank must refuse with a message naming it. */
static int cmd_mismatch(const char *what_arg)
{
    static const struct {
        const char *what, *expect;
    } cases[] = {
        {"lr", "group 0 hyperparameter lr: 0.002 on rank"},
        {"rule", "rule: adam on rank"},
        {"size", "number of parameters"},
        {"psize", "param 4 'p4' size: 300 on rank"},
        {"name", "param 5 name"},
        {"stage", "stage: 1 on rank"},
        {"bucket", "bucket size (elements)"},
        {"schedule", "group 1 schedule:"},
        {"clip", "clip_grad_norm"},
        {"state", "state exp_avg"},
        {"shape", "shape"},
        {"sam", "SAM's rho: 0.050000000000000003 on rank"},
    };
    const cfg *c = cfg_find("adam-amsgrad-clip3");
    size_t k;
    for (k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        model m;
        optim *opt, *other = NULL;
        optim_mpi *d = NULL;
        optim_error err;
        optim_mpi_options opts = small_buckets();
        int stage = 1, rc, last = g_rank == g_size - 1;
        size_t np = 8;
        if (what_arg && strcmp(what_arg, "all") != 0 && strcmp(what_arg, cases[k].what) != 0) continue;
        model_init(&m, sizes_big, 8, 42, 0.0f);
        if (last && strcmp(cases[k].what, "size") == 0) np = 7;
        m.np = np;
        opt = build(c, &m, 40);
        if (last) {
            const char *w = cases[k].what;
            if (strcmp(w, "lr") == 0) optim_group_set_hparam(opt, 0, OPTIM_HP_LR, 0.003);
            if (strcmp(w, "rule") == 0) {
                optim_hparams hp;
                optim_create(&other, OPTIM_ADAMW);
                optim_hparams_init(&hp, OPTIM_ADAMW, NULL);
                optim_add_group(other, &hp, NULL);
                optim_add_group(other, &hp, NULL);
                {
                    size_t i;
                    for (i = 0; i < 8; i++) {
                        char name[16];
                        snprintf(name, sizeof name, "p%zu", i);
                        optim_add_param(other, i % 2, m.w[i], m.g[i], m.n[i], name, NULL);
                    }
                }
            }
            if (strcmp(w, "psize") == 0) {
                optim_free(opt);
                static const size_t other_sizes[] = {20000, 1, 0, 8193, 299, 12345, 7, 40000};
                m.n = other_sizes;
                opt = build(c, &m, 40);
            }
            if (strcmp(w, "name") == 0) {
                optim_free(opt);
                optim_create(&opt, c->rule);
                {
                    optim_hparams hp;
                    int g;
                    size_t i;
                    for (g = 0; g < 2; g++) {
                        hparams_for(&hp, c->rule, (size_t)g);
                        optim_add_group(opt, &hp, NULL);
                    }
                    for (i = 0; i < 8; i++) {
                        char name[16];
                        snprintf(name, sizeof name, i == 5 ? "q%zu" : "p%zu", i);
                        optim_add_param(opt, i % 2, m.w[i], m.g[i], m.n[i], name, NULL);
                    }
                    optim_set_clip_grad_norm(opt, c->clip_norm, c->norm_type);
                    optim_set_nonfinite(opt, c->nonfinite);
                    {
                        optim_schedule *cos = NULL, *wu = NULL, *st = NULL;
                        optim_schedule_cosine(&cos, 35, 1e-5, NULL);
                        optim_schedule_warmup(&wu, 5, cos, NULL);
                        optim_schedule_step(&st, 4, 0.7, NULL);
                        optim_group_set_schedule(opt, 0, wu);
                        optim_group_set_schedule(opt, 1, st);
                        optim_schedule_free(wu);
                        optim_schedule_free(st);
                    }
                    {
                        int64_t dims[2] = {100, 400};
                        optim_param_set_shape(opt, 7, 2, dims);
                    }
                }
            }
            if (strcmp(w, "stage") == 0) stage = 2;
            if (strcmp(w, "bucket") == 0) opts.bucket_bytes = 128 << 10;
            if (strcmp(w, "schedule") == 0) {
                optim_schedule *st = NULL;
                optim_schedule_step(&st, 4, 0.8, NULL);
                optim_group_set_schedule(opt, 1, st);
                optim_schedule_free(st);
            }
            if (strcmp(w, "clip") == 0) optim_set_clip_grad_norm(opt, 1.5, 2.0);
            if (strcmp(w, "state") == 0) {
                float *s = NULL;
                optim_state_slot(opt, 3, 0, &s, NULL);
                s[17] = 1.0f;
            }
            if (strcmp(w, "shape") == 0) {
                int64_t dims[2] = {400, 100};
                optim_param_set_shape(opt, 7, 2, dims);
            }
        }
        if (strcmp(cases[k].what, "lr") == 0 && !last) optim_group_set_hparam(opt, 0, OPTIM_HP_LR, 0.002);
        rc = optim_mpi_create_with(&d, other ? other : opt, MPI_COMM_WORLD, stage, &opts, &err);
        if (strcmp(cases[k].what, "sam") == 0) {
            CHECK(rc == OPTIM_OK, "create: %s", err.message);
            rc = optim_mpi_set_sam(d, last ? 0.06 : 0.05, 2.0, 0, 0.0);
            snprintf(err.message, sizeof err.message, "%s", optim_mpi_errmsg(d));
        }
        CHECK(rc == OPTIM_EMISMATCH, "%s: returned %s (%s)", cases[k].what, optim_err_name(rc), err.message);
        CHECK(strstr(err.message, cases[k].expect) != NULL, "%s: the message '%s' lacks '%s'", cases[k].what,
              err.message, cases[k].expect);
        {
            /* The last rank against the others, named. */
            char others[32], odd[32];
            snprintf(others, sizeof others, g_size > 2 ? "ranks 0, 1" : "rank 0");
            snprintf(odd, sizeof odd, "rank %d", g_size - 1);
            CHECK(strstr(err.message, others) && strstr(err.message, odd), "%s: the message names the ranks: %s",
                  cases[k].what, err.message);
        }
        if (g_rank == 0) printf("mismatch %-8s refused: %s\n", cases[k].what, err.message);
        optim_mpi_free(d);
        optim_free(opt);
        optim_free(other);
        m.np = 8;
        m.n = sizes_big;
        model_free(&m);
    }
    return 0;
}

static int cmd_errors(void)
{
    run R;
    int rc, t = 0;
    const float *keep;
    optim_mpi_options opts = small_buckets();
    int stage;
    for (stage = 1; stage <= 2; stage++) {
        run_open(&R, cfg_find("adamw-clip2"), stage, sizes_big, 8, 40, &opts);
        run_step(&R, t++, g_size);
        /* 1. A missing gradient on the last rank fails the step on every rank, naming it. */
        local_grads(&R.m, R.seed, t, -1);
        if (stage == 2) optim_mpi_grad_ready(R.d, 7); /* buckets on the wire on some ranks */
        keep = R.m.g[4];
        if (g_rank == g_size - 1) optim_mpi_set_grad(R.d, 4, NULL);
        rc = optim_mpi_step(R.d);
        CHECK(rc == OPTIM_ENULL, "stage %d: a missing gradient: %s", stage, optim_err_name(rc));
        {
            char expect[128];
            snprintf(expect, sizeof expect, "rank %d of %d: optim_mpi_step: param 4 'p4' has no gradient",
                     g_size - 1, g_size);
            CHECK(strstr(optim_mpi_errmsg(R.d), expect) != NULL, "the message '%s' lacks '%s'",
                  optim_mpi_errmsg(R.d), expect);
            if (g_rank == 0 && stage == 1) printf("one rank's error, every rank's: %s\n", optim_mpi_errmsg(R.d));
        }
        optim_mpi_set_grad(R.d, 4, keep);
        compare("after a failed step", t, R.d, &R.m, R.ref, &R.rm);
        run_step(&R, t++, g_size); /* and the run goes on, bit for bit */
        /* 2. A hyperparameter changed on one rank only is found at the next step. */
        if (g_rank == 0) optim_group_set_hparam(optim_mpi_local(R.d), 1, OPTIM_HP_WEIGHT_DECAY, 0.5);
        local_grads(&R.m, R.seed, t, -1);
        rc = optim_mpi_step(R.d);
        CHECK(rc == OPTIM_EMISMATCH && strstr(optim_mpi_errmsg(R.d), "group 1 hyperparameter weight_decay"),
              "stage %d: drift: %s: %s", stage, optim_err_name(rc), optim_mpi_errmsg(R.d));
        if (g_rank == 0 && stage == 1) printf("drift found: %s\n", optim_mpi_errmsg(R.d));
        if (g_rank == 0) optim_group_set_hparam(optim_mpi_local(R.d), 1, OPTIM_HP_WEIGHT_DECAY, 1e-2);
        run_step(&R, t++, g_size);
        /* 3. Local misuse is refused locally. */
        rc = optim_mpi_grad_ready(R.d, 99);
        CHECK(rc == OPTIM_ERANGE, "grad_ready(99): %s", optim_err_name(rc));
        if (stage == 1) {
            rc = optim_mpi_grad_ready(R.d, 0);
            CHECK(rc == OPTIM_ESTATE && strstr(optim_mpi_errmsg(R.d), "stage 2"), "stage 1 grad_ready: %s",
                  optim_mpi_errmsg(R.d));
        } else {
            local_grads(&R.m, R.seed, t, -1);
            must(optim_mpi_grad_ready(R.d, 0), "grad_ready", optim_mpi_errmsg(R.d));
            rc = optim_mpi_grad_ready(R.d, 0);
            CHECK(rc == OPTIM_ESTATE, "handed over twice: %s", optim_err_name(rc));
            ref_grads(&R.rm, R.seed, t, g_size, -1);
            rc = optim_mpi_step(R.d);
            CHECK(rc == OPTIM_OK && optim_step(R.ref) == OPTIM_OK, "step: %s", optim_mpi_errmsg(R.d));
            compare("after a partial hand-over", t++, R.d, &R.m, R.ref, &R.rm);
        }
        rc = optim_mpi_sam_first_step(R.d);
        CHECK(rc == OPTIM_ESTATE, "SAM without SAM: %s", optim_err_name(rc));
        /* 4. A save into a path that is a file fails on every rank. */
        {
            char path[256];
            FILE *f;
            snprintf(path, sizeof path, "/tmp/optim_mpi_test_file_%ld", (long)getppid());
            if (g_rank == 0) {
                f = fopen(path, "w");
                if (f) fclose(f);
            }
            MPI_Barrier(MPI_COMM_WORLD);
            rc = optim_mpi_save(R.d, path);
            CHECK(rc == OPTIM_EOPEN && strstr(optim_mpi_errmsg(R.d), "rank 0 of"), "save onto a file: %s: %s",
                  optim_err_name(rc), optim_mpi_errmsg(R.d));
            MPI_Barrier(MPI_COMM_WORLD);
            if (g_rank == 0) unlink(path);
        }
        run_step(&R, t++, g_size);
        run_close(&R);
    }
    if (g_rank == 0) printf("errors: %s\n", g_failures ? "FAILED" : "every rank failed together, nothing changed");
    return 0;
}

static int cmd_kill(int kill_rank, int at)
{
    run R;
    int t;
    optim_mpi_options opts = small_buckets();
    run_open(&R, cfg_find("adam-amsgrad-clip3"), 2, sizes_big, 8, 1000000, &opts);
    for (t = 0; t < 1000000; t++) {
        if (t == at && g_rank == kill_rank) {
            fprintf(stderr, "rank %d: killing myself (SIGKILL) at step %d\n", g_rank, t);
            fflush(stderr);
            raise(SIGKILL);
        }
        local_grads(&R.m, R.seed, t, -1);
        hand_over(R.d, R.c, &R.m, t);
        if (optim_mpi_step(R.d) != OPTIM_OK) {
            fprintf(stderr, "rank %d: %s\n", g_rank, optim_mpi_errmsg(R.d));
            MPI_Abort(MPI_COMM_WORLD, 3);
        }
    }
    run_close(&R);
    return 0;
}

static int cmd_timeout(void)
{
    run R;
    optim_mpi_options opts = small_buckets();
    opts.timeout = 2;
    run_open(&R, cfg_find("adamw-clip2"), 1, sizes_big, 8, 40, &opts);
    run_step(&R, 0, g_size);
    if (g_rank == g_size - 1) {
        /* Stop answering (as a stuck or stopped process would). */
        sleep(30);
    }
    local_grads(&R.m, R.seed, 1, -1);
    if (optim_mpi_step(R.d) != OPTIM_OK) {
        fprintf(stderr, "rank %d: %s: %s\n", g_rank, optim_err_name(optim_mpi_errcode(R.d)), optim_mpi_errmsg(R.d));
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 4);
    }
    run_close(&R);
    return 0;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "steps";
    ckopts o;
    int i, steps = 25, kill_rank = 1, at = 5;
    const char *what = "all";
    memset(&o, 0, sizeof o);
    o.stage = 1;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    for (i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (strcmp(a, "--steps") == 0) steps = o.steps = atoi(v), i++;
        else if (strcmp(a, "--dir") == 0) o.dir = v, i++;
        else if (strcmp(a, "--out") == 0) o.out = v, i++;
        else if (strcmp(a, "--ckpt") == 0) o.ckpt = v, i++;
        else if (strcmp(a, "--expect") == 0) o.expect = v, i++;
        else if (strcmp(a, "--rule") == 0) o.rule = v, i++;
        else if (strcmp(a, "--from") == 0) o.from = atoi(v), i++;
        else if (strcmp(a, "--old-ranks") == 0) o.old_ranks = atoi(v), i++;
        else if (strcmp(a, "--stage") == 0) o.stage = atoi(v), i++;
        else if (strcmp(a, "--bucket") == 0) o.bucket = (size_t)atol(v), i++;
        else if (strcmp(a, "--crash-before-manifest") == 0) o.crash = 1;
        else if (strcmp(a, "--what") == 0) what = v, i++;
        else if (strcmp(a, "--rank") == 0) kill_rank = atoi(v), i++;
        else if (strcmp(a, "--at") == 0) at = atoi(v), i++;
        else {
            fprintf(stderr, "mpi_test: unknown argument %s\n", a);
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
    }
    if (strcmp(cmd, "steps") == 0) cmd_steps(steps);
    else if (strcmp(cmd, "save") == 0) cmd_save(&o);
    else if (strcmp(cmd, "resume") == 0) cmd_resume(&o);
    else if (strcmp(cmd, "plain") == 0) cmd_plain(&o);
    else if (strcmp(cmd, "merge") == 0) cmd_merge(&o);
    else if (strcmp(cmd, "load-fails") == 0) cmd_load_fails(&o);
    else if (strcmp(cmd, "mismatch") == 0) cmd_mismatch(what);
    else if (strcmp(cmd, "errors") == 0) cmd_errors();
    else if (strcmp(cmd, "kill") == 0) cmd_kill(kill_rank, at);
    else if (strcmp(cmd, "timeout") == 0) cmd_timeout();
    else {
        fprintf(stderr, "mpi_test: unknown command %s\n", cmd);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    {
        long all = 0;
        MPI_Allreduce(&g_failures, &all, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
        if (g_rank == 0) printf("%s: %s (%ld failure%s over %d ranks)\n", cmd, all ? "FAILED" : "passed", all,
                                all == 1 ? "" : "s", g_size);
        MPI_Finalize();
        return all ? 1 : 0;
    }
}
