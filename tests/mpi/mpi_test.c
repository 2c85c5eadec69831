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
 *   mpi_test types [--steps N --dir D]  every element type, mixed (mpi_test_types.c), typed checkpoints
 *   mpi_test prec [--dir D]             8-bit state, fp32 masters, stochastic rounding, loss scaling (mpi_test_prec.c)
 */
#define _POSIX_C_SOURCE 200809L
#include "mpi_test.h"

#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int g_rank = 0, g_size = 1;
long g_failures = 0;


/* ---- The model ---------------------------------------------------------------------- */

/* Sizes across blocks and buckets: one empty, tiny ones, one spanning several buckets. */
const size_t sizes_big[] = {20000, 1, 0, 8193, 300, 12345, 7, 40000};
const size_t sizes_tiny[] = {5, 3, 0, 2};

void model_init(model *m, const size_t *n, size_t np, uint64_t seed, float offset)
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

void model_free(model *m)
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
float grad_of(uint64_t seed, int t, int r, size_t i, size_t j, float w, int nan_step, int K)
{
    float g = gen(seed, t, r, i, j) + 0.05f * w;
    if (t == nan_step && r == K - 1 && i == 3 && j == 100) g = NAN;
    return g;
}

void local_grads(const model *m, uint64_t seed, int t, int nan_step)
{
    size_t i, j;
    for (i = 0; i < m->np; i++)
        for (j = 0; j < m->n[i]; j++) m->g[i][j] = grad_of(seed, t, g_rank, i, j, m->w[i][j], nan_step, g_size);
}

/* The average over K ranks, as liboptim_mpi defines it. */
void ref_grads(const model *m, uint64_t seed, int t, int K, int nan_step)
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


const cfg cfgs[] = {
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

const cfg *cfg_find(const char *name)
{
    size_t i;
    for (i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++)
        if (strcmp(cfgs[i].name, name) == 0) return &cfgs[i];
    return NULL;
}

void hparams_for(optim_hparams *hp, optim_rule rule, size_t group)
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

int must(int rc, const char *what, const char *msg)
{
    if (rc != OPTIM_OK) {
        fprintf(stderr, "rank %d: %s failed: %s: %s\n", g_rank, what, optim_err_name(rc), msg);
        exit(2);
    }
    return rc;
}

/* One process's optimizer over m, as cfg says. */
optim *build(const cfg *c, model *m, int steps_total)
{
    return build_opt(c, m, steps_total, 0);
}

optim *build_opt(const cfg *c, model *m, int steps_total, int defer)
{
    optim *o = NULL;
    size_t i;
    int g;
    optim_error err;
    must(optim_create(&o, c->rule), "optim_create", "");
    must(optim_set_defer_state(o, defer), "optim_set_defer_state", optim_errmsg(o));
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

int same_bits(float a, float b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

int same_bits_d(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0 || (a != a && b != b);
}

/* Everything the distributed run holds against the reference. */
void compare(const char *what, int t, optim_mpi *d, const model *m, optim *ref, const model *rm)
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
void hand_over(optim_mpi *d, const cfg *c, const model *m, int t)
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


optim_mpi_options small_buckets(void)
{
    optim_mpi_options o;
    optim_mpi_options_init(&o);
    o.bucket_bytes = 64 << 10; /* several buckets for this model */
    o.timeout = 120;
    return o;
}

void run_open(run *R, const cfg *c, int stage, const size_t *sizes, size_t np, int steps_total,
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
    /* Half the configurations describe the model with deferred state (the
     * way to keep every rank's peak memory to its shard's), half eagerly. */
    R->deferred = (c - cfgs) % 2 == 0;
    opt = build_opt(c, &R->m, steps_total, R->deferred);
    must(optim_mpi_create_with(&R->d, opt, MPI_COMM_WORLD, stage, opts, &err), "optim_mpi_create", err.message);
    /* Deferred: nothing, not even optim_mpi_create, allocated opt's state. */
    CHECK(!R->deferred || optim_state_bytes(opt) == 0, "%s stage %d: opt holds %zu bytes of state after create",
          c->name, stage, optim_state_bytes(opt));
    optim_free(opt); /* d needs nothing of it */
    if (c->sam_p > 0) {
        must(optim_sam_create(&R->rsam, R->ref, 0.05, c->sam_p, c->sam_adaptive, 0.01, &err), "sam", err.message);
        must(optim_mpi_set_sam(R->d, 0.05, c->sam_p, c->sam_adaptive, 0.01), "optim_mpi_set_sam",
             optim_mpi_errmsg(R->d));
    }
}

void run_close(run *R)
{
    optim_mpi_free(R->d);
    optim_sam_free(R->rsam);
    optim_free(R->ref);
    model_free(&R->m);
    model_free(&R->rm);
}

/* One step (or SAM step) of both, at step t of the gradient sequence with K ranks' average. */
void run_step(run *R, int t, int K_ref)
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

/* Has any rank failed since `before`? (Collective: the ranks stop together,
 * rather than one going on into collectives the others left.) */
static int any_failure(long before)
{
    long mine = g_failures - before, all = 0;
    MPI_Allreduce(&mine, &all, 1, MPI_LONG, MPI_MAX, MPI_COMM_WORLD);
    return all != 0;
}

/* Stages 1 and 2: this rank's shard is one contiguous range of the
 * flattened parameters starting at a reduction block, the ranks' ranges
 * follow one another in rank order over the whole vector, each within one
 * block (8192 elements) of total / K; the local optimizer's parameters are
 * that range, in order, each pointing into the caller's parameter at its
 * place, with its averaged gradient on 64 bytes. (Collective.) */
static void check_shard(const char *what, optim_mpi *d, const model *m)
{
    optim *local = optim_mpi_local(d);
    size_t first = 0, count = 0, total = 0, i, k, cursor, off[NP_MAX + 1];
    unsigned long long mine[2], *all = (unsigned long long *)calloc(2 * (size_t)g_size, sizeof *all);
    int r, block_start = 0;
    CHECK(optim_mpi_shard(d, &first, &count) == OPTIM_OK, "%s: optim_mpi_shard failed", what);
    CHECK(optim_mpi_shard(d, NULL, &count) == OPTIM_ENULL && optim_mpi_shard(NULL, &first, &count) == OPTIM_ENULL,
          "%s: optim_mpi_shard accepts NULL", what);
    CHECK(optim_mpi_shard_elements(d) == count, "%s: optim_mpi_shard_elements %zu, optim_mpi_shard's count %zu", what,
          optim_mpi_shard_elements(d), count);
    for (i = 0; i < m->np; i++) {
        off[i] = total;
        total += m->n[i];
    }
    off[m->np] = total;
    mine[0] = first;
    mine[1] = count;
    MPI_Allgather(mine, 2, MPI_UNSIGNED_LONG_LONG, all, 2, MPI_UNSIGNED_LONG_LONG, MPI_COMM_WORLD);
    for (r = 0, cursor = 0; r < g_size; r++) {
        CHECK(all[2 * r] == cursor, "%s: rank %d's shard starts at %llu, rank %d's ended at %zu", what, r, all[2 * r],
              r - 1, cursor);
        CHECK(all[2 * r + 1] + 8192 >= total / (size_t)g_size && all[2 * r + 1] <= total / (size_t)g_size + 8192,
              "%s: rank %d's shard holds %llu of %zu elements (%d ranks): not within one block", what, r,
              all[2 * r + 1], total, g_size);
        cursor = (size_t)(all[2 * r] + all[2 * r + 1]);
    }
    CHECK(cursor == total, "%s: the shards end at %zu of %zu elements", what, cursor, total);
    free(all);
    for (i = 0; i < m->np; i++)
        if (first >= off[i] && first < off[i] + m->n[i]) block_start = (first - off[i]) % 8192 == 0;
    CHECK(block_start || count == 0 || first == total, "%s: the shard starts at element %zu, not at a reduction block",
          what, first);
    for (k = 0, cursor = first; k < optim_param_count(local); k++) {
        optim_param_info info;
        size_t pi, a = 0, b = 0;
        optim_param_get_info(local, k, &info);
        if (strcmp(info.name, "[empty]") == 0 || info.n == 0) continue;
        if (sscanf(info.name, "p%zu[%zu:%zu]", &pi, &a, &b) != 3 || pi >= m->np) {
            FAILF("%s: local parameter %zu is named '%s'", what, k, info.name);
            continue;
        }
        CHECK(off[pi] + a == cursor, "%s: local parameter %zu (%s) starts at flattened element %zu, the shard's next is %zu",
              what, k, info.name, off[pi] + a, cursor);
        CHECK(info.param == m->w[pi] + a, "%s: local parameter %s does not point at its place", what, info.name);
        CHECK((uintptr_t)info.grad % 64 == 0, "%s: the averaged gradient of %s is not on 64 bytes (%p)", what,
              info.name, (const void *)info.grad);
        cursor = off[pi] + b;
    }
    CHECK(cursor == first + count, "%s: the local parameters end at %zu, the shard at %zu", what, cursor, first + count);
}

/* The state a rank holds is its shard's: through the public API, each local
 * piece holds its share of what one process holds for the parameter, and
 * (stages 1 and 2) the ranks' bytes add up to one process's. (Collective.) */
static void check_state_bytes(const char *what, optim_mpi *d, optim *ref, int stage)
{
    optim *local = optim_mpi_local(d);
    size_t k, want = 0, got = optim_mpi_state_bytes(d);
    unsigned long long mine = got, all = 0;
    for (k = 0; k < optim_param_count(local); k++) {
        optim_param_info info;
        size_t pi, a = 0, b = 0, rb = 0;
        optim_param_get_info(local, k, &info);
        if (sscanf(info.name, "p%zu[%zu:%zu]", &pi, &a, &b) != 3 || info.n == 0) continue;
        optim_param_state_bytes(ref, pi, &rb);
        optim_param_get_info(ref, pi, &info);
        want += rb / info.n * (b - a);
    }
    CHECK(got == want && got == optim_state_bytes(local),
          "%s stage %d: rank %d holds %zu bytes of state (its local optimizer %zu), its shard's share is %zu", what,
          stage, g_rank, got, optim_state_bytes(local), want);
    MPI_Allreduce(&mine, &all, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    CHECK(all == (unsigned long long)optim_state_bytes(ref) * (stage == 0 ? (unsigned long long)g_size : 1ull),
          "%s stage %d: the ranks hold %llu bytes of state, one process %zu", what, stage, all,
          optim_state_bytes(ref));
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
            if (stage > 0) check_shard(cfgs[c].name, R.d, &R.m);
            check_state_bytes(cfgs[c].name, R.d, R.ref, stage);
            if (stage > 0 && c == 0 && g_rank == 0)
                printf("layout: %zu buckets, %zu of %zu elements on rank 0\n", optim_mpi_bucket_count(R.d),
                       optim_mpi_shard_elements(R.d), (size_t)80846);
            for (t = 0; t < steps && !any_failure(before); t++) run_step(&R, t, g_size);
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
        check_shard("tiny model", R.d, &R.m);
        for (t = 0; t < steps && !any_failure(before); t++) run_step(&R, t, g_size);
        if (g_rank == 0)
            printf("tiny model (%zu elements on rank 0) stage %d: %s\n", optim_mpi_shard_elements(R.d), stage,
                   g_failures == before ? "bit-identical" : "DIFFER");
        run_close(&R);
    }
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
    else if (strcmp(cmd, "types") == 0) cmd_types(steps, o.dir ? o.dir : "types_ckpt");
    else if (strcmp(cmd, "types-attack") == 0) cmd_types_attack(steps, o.dir ? o.dir : "types_attack_ckpt");
    else if (strcmp(cmd, "flags-attack") == 0) cmd_flags_attack();
    else if (strcmp(cmd, "prec") == 0) cmd_prec(o.dir ? o.dir : "prec_ckpt");
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
