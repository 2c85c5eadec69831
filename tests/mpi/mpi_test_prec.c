/* mpi_test_prec.c: liboptim_mpi with reduced precision (issue 12's second half): 8-bit block state, fp32 master
 * weights, stochastic rounding and dynamic loss scaling, sharded, against one process, bit for bit.
 *
 *   mpi_test prec --dir D     every case below in stages 0, 1 and 2, then the checkpoint run under D
 *
 * Each rank's gradient differs (g_r = (k + 2r - (K - 1)) / 128, k a function of step, parameter and element), and
 * their average is exactly k / 128 in every element type: the one-process reference steps with that gradient, so
 * any K gives the reference's bits. After every step every rank compares its whole parameter memory, its slices'
 * state (8-bit: codes and scales), its slices' fp32 masters, the loss scale and growth tracker, the step and skip
 * counters with the reference's, bit for bit. The model's sizes put a shard cut inside the first parameter, so a
 * slice starts 8192 elements in: its stochastic rounding must draw the unsharded run's bits for those elements,
 * and its 8-bit blocks are the unsharded run's blocks (the last one short).
 * Loss scaling: at one step a single rank's gradient holds +Inf (an element of rank 0's shard), at another NaN
 * (an element of the last rank's): every rank must skip, back off and keep the same scale as one process.
 * Checkpoint: save after T steps, go on; then resume the checkpoint (in another stage, with K ranks and with K - 1
 * ranks: resharding) and merge it into one file that one process resumes: all end on the reference's bits. */
#include "mpi_test.h"
#include "optim_precision.h"
#include "shard_ckpt.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PP 4
static const size_t pn[PP] = {20001, 300, 9000, 1};

typedef struct pcase {
    const char *name;
    optim_rule rule;
    optim_dtype pdt, gdt, sdt;
    unsigned flags;
    int loss_scale; /* 0 off, 1 static, 2 dynamic */
    int overflow;   /* an Inf on one rank at step 4, a NaN on another at step 7 */
} pcase;

#define F32 OPTIM_FLOAT32
#define BF OPTIM_BFLOAT16
#define HF OPTIM_FLOAT16
#define Q8 OPTIM_INT8_BLOCK
#define MS OPTIM_PARAM_MASTER
#define SR OPTIM_PARAM_STOCHASTIC_ROUNDING
#define S8 OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING
static const pcase cases[] = {
    {"int8 state, adam", OPTIM_ADAM, F32, F32, Q8, 0, 0, 0},
    {"int8 state, adamw", OPTIM_ADAMW, F32, F32, Q8, 0, 0, 0},
    {"int8 state, sgd momentum", OPTIM_SGD, F32, F32, Q8, 0, 0, 0},
    {"int8 state, lion", OPTIM_LION, F32, F32, Q8, 0, 0, 0},
    {"int8 state, rmsprop", OPTIM_RMSPROP, F32, F32, Q8, 0, 0, 0},
    {"int8 state, adagrad", OPTIM_ADAGRAD, F32, F32, Q8, 0, 0, 0},
    {"int8 state, nadam", OPTIM_NADAM, F32, F32, Q8, 0, 0, 0},
    {"bf16 + fp32 master, int8 state, adamw", OPTIM_ADAMW, BF, BF, Q8, MS, 0, 0},
    {"fp16 + fp32 master, fp16 grads, dynamic loss scale, overflow on one rank, adam", OPTIM_ADAM, HF, HF, F32, MS,
     2, 1},
    {"fp32, fp16 grads, static loss scale, adam", OPTIM_ADAM, F32, HF, F32, 0, 1, 0},
    {"bf16 stochastic rounding, bf16 state, adamw", OPTIM_ADAMW, BF, BF, BF, SR, 0, 0},
    {"bf16 + fp32 master, bf16 state stochastic rounding, adam", OPTIM_ADAM, BF, BF, BF, MS | SR, 0, 0},
    {"bf16 stochastic rounding, int8 state, adam", OPTIM_ADAM, BF, BF, Q8, SR, 0, 0},
    {"int8 state with stochastic codes, adam", OPTIM_ADAM, F32, F32, Q8, S8, 0, 0},
    {"bf16 + fp32 master, int8 state with stochastic codes, adamw", OPTIM_ADAMW, BF, BF, Q8, MS | S8, 0, 0},
    {"bf16 stochastic rounding, int8 state, dynamic loss scale with overflow, lion", OPTIM_LION, BF, BF, Q8, SR, 2, 1},
};
#define NCASES (sizeof cases / sizeof cases[0])

/* ---- Elements ---- */

static uint16_t to_half(float f)
{
    /* Exact for the values used here: zero, +-Inf, NaN and normal float16 numbers. */
    uint32_t u;
    uint16_t s;
    int e;
    memcpy(&u, &f, 4);
    s = (uint16_t)((u >> 16) & 0x8000u);
    if (isnan(f)) return 0x7e00;
    if (isinf(f)) return (uint16_t)(s | 0x7c00u);
    if (f == 0) return s;
    e = (int)((u >> 23) & 0xff) - 127 + 15;
    return (uint16_t)(s | (uint16_t)(e << 10) | (uint16_t)((u >> 13) & 0x3ffu));
}

static void put(unsigned char *mem, optim_dtype t, size_t j, float v)
{
    if (t == F32) {
        memcpy(mem + 4 * j, &v, 4);
    } else if (t == BF) {
        uint32_t u;
        uint16_t h;
        memcpy(&u, &v, 4);
        h = (uint16_t)(u >> 16); /* exact: the values have at most 8 significant bits */
        memcpy(mem + 2 * j, &h, 2);
    } else {
        uint16_t h = to_half(v);
        memcpy(mem + 2 * j, &h, 2);
    }
}

static size_t esz(optim_dtype t)
{
    return optim_dtype_size(t);
}

/* k in [-100, 100]: the average gradient is k / 128 (times the loss scale's power of two). */
static int kof(int t, size_t i, size_t j)
{
    uint64_t z = (uint64_t)t * 0x9E3779B97F4A7C15ull + i * 1000003u + j * 7919u;
    z ^= z >> 31;
    z *= 0xBF58476D1CE4E5B9ull;
    z ^= z >> 29;
    return (int)(z % 201u) - 100;
}

/* Rank r of K's gradient at step t (K = 0: the average, the reference's). */
static void fill_grads(const pcase *c, unsigned char **g, int t, int r, int K)
{
    size_t i, j;
    const float scale = c->loss_scale ? 8.0f : 1.0f; /* gradients of loss * scale */
    for (i = 0; i < PP; i++)
        for (j = 0; j < pn[i]; j++) {
            int k = kof(t, i, j) + (K ? 2 * r - (K - 1) : 0);
            put(g[i], c->gdt, j, scale * (float)k / 128.0f);
        }
    if (c->overflow && t == 4 && (K == 0 || r == K - 1)) put(g[0], c->gdt, 5, INFINITY);
    if (c->overflow && t == 7 && (K == 0 || r == 0)) put(g[PP - 2], c->gdt, pn[PP - 2] - 1, NAN);
}

typedef struct mem {
    unsigned char *p[PP], *g[PP];
} mem;

static void mem_init(mem *m, const pcase *c)
{
    size_t i, j;
    for (i = 0; i < PP; i++) {
        m->p[i] = (unsigned char *)calloc(pn[i] ? pn[i] : 1, 4);
        m->g[i] = (unsigned char *)calloc(pn[i] ? pn[i] : 1, 4);
        for (j = 0; j < pn[i]; j++) put(m->p[i], c->pdt, j, (float)(kof(-1, i, j) / 4) / 32.0f);
    }
}

static void mem_free(mem *m)
{
    size_t i;
    for (i = 0; i < PP; i++) {
        free(m->p[i]);
        free(m->g[i]);
    }
}

static optim *build_prec(const pcase *c, mem *m)
{
    optim *o = NULL;
    optim_hparams hp;
    size_t i;
    char name[16];
    must(optim_create(&o, c->rule), "optim_create", "");
    optim_hparams_init(&hp, c->rule, NULL);
    hp.lr = c->rule == OPTIM_LION ? 1e-3 : 1e-2;
    if (c->rule == OPTIM_SGD) hp.momentum = 0.9;
    if (c->rule == OPTIM_ADAMW || c->rule == OPTIM_LION) hp.weight_decay = 0.01;
    must(optim_add_group(o, &hp, NULL), "add_group", optim_errmsg(o));
    for (i = 0; i < PP; i++) {
        snprintf(name, sizeof name, "p%zu", i);
        must(optim_add_param_ex(o, 0, m->p[i], c->pdt, m->g[i], c->gdt, pn[i], c->sdt, c->flags, name, NULL),
             "add_param_ex", optim_errmsg(o));
    }
    must(optim_set_seed(o, 0x5eed + (uint64_t)c->rule), "seed", optim_errmsg(o));
    if (c->loss_scale) {
        optim_loss_scale ls;
        optim_loss_scale_defaults(&ls);
        ls.mode = c->loss_scale == 2 ? OPTIM_LOSS_SCALE_DYNAMIC : OPTIM_LOSS_SCALE_STATIC;
        ls.init_scale = 8.0;
        ls.growth_interval = 3;
        must(optim_set_loss_scale(o, &ls), "loss scale", optim_errmsg(o));
    }
    return o;
}

/* ---- Comparison ---- */

/* Parse a local parameter's name "p<i>[a:b]". */
static int piece_of(optim *local, size_t k, size_t *i, size_t *a, size_t *b)
{
    optim_param_info info;
    optim_param_get_info(local, k, &info);
    return sscanf(info.name, "p%zu[%zu:%zu]", i, a, b) == 3;
}

static void compare_prec(const char *what, int t, optim_mpi *d, const pcase *c, const mem *m, optim *ref,
                         const mem *rm)
{
    optim *local = optim_mpi_local(d);
    size_t i, j, k, a, b;
    int s, nslots = optim_rule_slot_count(c->rule);
    long bad = 0;
    double s1, s2;
    int64_t t1, t2;
    for (i = 0; i < PP; i++)
        for (j = 0; j < pn[i]; j++)
            if (memcmp(m->p[i] + j * esz(c->pdt), rm->p[i] + j * esz(c->pdt), esz(c->pdt)) != 0 && bad++ < 3)
                FAILF("%s, step %d: parameter p%zu[%zu] differs from one process's", what, t, i, j);
    for (k = 0; k < optim_param_count(local); k++) {
        if (!piece_of(local, k, &i, &a, &b)) continue;
        for (s = 0; s < nslots; s++) {
            void *x = NULL, *y = NULL;
            int ix = 0, iy = 0;
            optim_state_slot_data(local, k, s, &x, NULL, &ix);
            optim_state_slot_data(ref, i, s, &y, NULL, &iy);
            if (!x != !y || ix != iy) {
                FAILF("%s, step %d: p%zu[%zu:%zu] slot %d allocated/initialized %d/%d, one process %d/%d", what, t,
                      i, a, b, s, x != NULL, ix, y != NULL, iy);
                continue;
            }
            if (!x) continue;
            if (memcmp(x, (unsigned char *)y + a * esz(c->sdt), (b - a) * esz(c->sdt)) != 0)
                FAILF("%s, step %d: p%zu[%zu:%zu] slot %d differs from one process's", what, t, i, a, b, s);
            if (c->sdt == Q8) {
                const size_t B = OPTIM_INT8_BLOCK_SIZE;
                if (memcmp((unsigned char *)x + OPTIM_INT8_BLOCK_SCALES_OFFSET(b - a),
                           (unsigned char *)y + OPTIM_INT8_BLOCK_SCALES_OFFSET(pn[i]) + 4 * (a / B),
                           4 * ((b - a + B - 1) / B)) != 0)
                    FAILF("%s, step %d: p%zu[%zu:%zu] slot %d's 8-bit scales differ from one process's", what, t, i,
                          a, b, s);
            }
        }
        if (c->flags & MS) {
            float *x = NULL, *y = NULL;
            if (optim_param_master_data(local, k, &x) != OPTIM_OK || optim_param_master_data(ref, i, &y) != OPTIM_OK)
                FAILF("%s, step %d: p%zu[%zu:%zu] has no master", what, t, i, a, b);
            else if (memcmp(x, y + a, (b - a) * sizeof *x) != 0)
                FAILF("%s, step %d: p%zu[%zu:%zu]'s fp32 master differs from one process's", what, t, i, a, b);
        }
    }
    optim_get_loss_scale(local, NULL, &s1, &t1);
    optim_get_loss_scale(ref, NULL, &s2, &t2);
    CHECK(s1 == s2 && t1 == t2, "%s, step %d: loss scale %g tracker %lld, one process %g %lld", what, t, s1,
          (long long)t1, s2, (long long)t2);
    CHECK(optim_mpi_step_count(d) == optim_step_count(ref) && optim_mpi_skipped_steps(d) == optim_skipped_steps(ref) &&
              optim_mpi_last_step_skipped(d) == optim_last_step_skipped(ref),
          "%s, step %d: steps %lld skipped %lld (last %d), one process %lld %lld (%d)", what, t,
          (long long)optim_mpi_step_count(d), (long long)optim_mpi_skipped_steps(d), optim_mpi_last_step_skipped(d),
          (long long)optim_step_count(ref), (long long)optim_skipped_steps(ref), optim_last_step_skipped(ref));
}

static void step_both(optim_mpi *d, int stage, const pcase *c, mem *m, int K, optim *ref, mem *rm, int t, MPI_Comm comm)
{
    int r;
    MPI_Comm_rank(comm, &r);
    if (d) {
        fill_grads(c, m->g, t, r, K);
        if (stage == 2) {
            size_t i;
            for (i = PP; i-- > 0;) must(optim_mpi_grad_ready(d, i), "grad_ready", optim_mpi_errmsg(d));
        }
        must(optim_mpi_step(d), "optim_mpi_step", optim_mpi_errmsg(d));
    }
    if (ref) {
        fill_grads(c, rm->g, t, 0, 0);
        must(optim_step(ref), "optim_step", optim_errmsg(ref));
    }
}

static optim_mpi *make(optim *opt, MPI_Comm comm, int stage)
{
    optim_mpi *d = NULL;
    optim_error err;
    optim_mpi_options mo;
    optim_mpi_options_init(&mo);
    mo.bucket_bytes = 4 * 8192; /* several buckets */
    mo.timeout = 120;
    must(optim_mpi_create_with(&d, opt, comm, stage, &mo, &err), "optim_mpi_create", err.message);
    return d;
}

#define STEPS 10
#define WARM 2

static void run_case(const pcase *c, int stage)
{
    mem m, rm;
    optim *opt, *ref;
    optim_mpi *d;
    int t;
    long before = g_failures;
    char what[256];
    snprintf(what, sizeof what, "%s, stage %d", c->name, stage);
    mem_init(&m, c);
    mem_init(&rm, c);
    opt = build_prec(c, &m);
    ref = build_prec(c, &rm);
    /* A warm start: the template has taken WARM steps in one process, so that d must carry its state (8-bit codes
     * and scales), its fp32 masters (which hold more than the rounded memory), its loss scale and growth tracker. */
    for (t = 1; t <= WARM; t++) {
        step_both(NULL, 0, c, NULL, 0, opt, &m, t, MPI_COMM_SELF);
        step_both(NULL, 0, c, NULL, 0, ref, &rm, t, MPI_COMM_SELF);
    }
    d = make(opt, MPI_COMM_WORLD, stage);
    optim_free(opt); /* d keeps what it needs */
    compare_prec(what, WARM, d, c, &m, ref, &rm);
    for (t = WARM + 1; t <= STEPS; t++) {
        optim_mpi_stats st;
        optim_mpi_reset_stats(d);
        step_both(d, stage, c, &m, g_size, ref, &rm, t, MPI_COMM_WORLD);
        compare_prec(what, t, d, c, &m, ref, &rm);
        if (stage > 0 && !optim_mpi_last_step_skipped(d)) {
            /* The all-gather moves the parameters' own type (with a master: bf16/fp16, not the fp32 master): every
             * element this rank does not own, once. */
            size_t first = 0, count = 0, total = 0, i;
            for (i = 0; i < PP; i++) total += pn[i];
            optim_mpi_shard(d, &first, &count);
            optim_mpi_get_stats(d, &st);
            CHECK(st.gather_bytes == (uint64_t)((total - count) * esz(c->pdt)),
                  "%s, step %d: the all-gather received %llu bytes, not %zu (%zu elements of %zu bytes)", what, t,
                  (unsigned long long)st.gather_bytes, (total - count) * esz(c->pdt), total - count, esz(c->pdt));
        }
    }
    if (c->overflow) CHECK(optim_skipped_steps(ref) == 2, "%s: one process skipped %lld steps, not 2", what,
                           (long long)optim_skipped_steps(ref));
    if (g_rank == 0)
        printf("prec: %-80s %s\n", what, g_failures == before ? "bit-identical to one process" : "DIFFERS");
    optim_mpi_free(d);
    optim_free(ref);
    mem_free(&m);
    mem_free(&rm);
}

/* ---- Checkpoints: every feature in one model ---- */

static const pcase ck_case = {"checkpoint: bf16 + master + int8 state, SR, dynamic loss scale", OPTIM_ADAM, BF, BF,
                              Q8, SR, 2, 1};

/* The model of the checkpoint run mixes the storage options: p0 bf16 with a master and 8-bit state, p1 bf16 with
 * stochastic rounding and 8-bit state, p2 bf16 with a master and bf16 state rounded stochastically, p3 plain. */
static optim *build_ck(mem *m)
{
    static const unsigned fl[PP] = {MS, SR, MS | SR, 0};
    static const optim_dtype st[PP] = {Q8, Q8, BF, F32};
    optim *o = NULL;
    optim_hparams hp;
    optim_loss_scale ls;
    size_t i;
    char name[16];
    must(optim_create(&o, OPTIM_ADAM), "optim_create", "");
    optim_hparams_init(&hp, OPTIM_ADAM, NULL);
    hp.lr = 1e-2;
    must(optim_add_group(o, &hp, NULL), "add_group", optim_errmsg(o));
    for (i = 0; i < PP; i++) {
        snprintf(name, sizeof name, "p%zu", i);
        must(optim_add_param_ex(o, 0, m->p[i], BF, m->g[i], BF, pn[i], st[i], fl[i], name, NULL), "add_param_ex",
             optim_errmsg(o));
    }
    must(optim_set_seed(o, 4242), "seed", optim_errmsg(o));
    optim_loss_scale_defaults(&ls);
    ls.init_scale = 8.0;
    ls.growth_interval = 3;
    must(optim_set_loss_scale(o, &ls), "loss scale", optim_errmsg(o));
    return o;
}

/* Compare against the reference whatever each parameter's options (read them from the local optimizer). */
static void compare_ck(const char *what, optim_mpi *d, const mem *m, optim *ref, const mem *rm)
{
    optim *local = optim_mpi_local(d);
    size_t i, k, a, b;
    int s;
    for (i = 0; i < PP; i++)
        CHECK(memcmp(m->p[i], rm->p[i], pn[i] * 2) == 0, "%s: parameter p%zu differs from one process's", what, i);
    for (k = 0; k < optim_param_count(local); k++) {
        optim_dtype sdt;
        unsigned fl = 0;
        if (!piece_of(local, k, &i, &a, &b)) continue;
        optim_param_get_dtypes(local, k, NULL, NULL, &sdt);
        optim_param_get_flags(local, k, &fl);
        for (s = 0; s < 2; s++) {
            void *x = NULL, *y = NULL;
            optim_state_slot_data(local, k, s, &x, NULL, NULL);
            optim_state_slot_data(ref, i, s, &y, NULL, NULL);
            if (!x || !y) {
                FAILF("%s: p%zu slot %d not allocated", what, i, s);
                continue;
            }
            CHECK(memcmp(x, (unsigned char *)y + a * esz(sdt), (b - a) * esz(sdt)) == 0,
                  "%s: p%zu[%zu:%zu] slot %d differs from one process's", what, i, a, b, s);
            if (sdt == Q8)
                CHECK(memcmp((unsigned char *)x + OPTIM_INT8_BLOCK_SCALES_OFFSET(b - a),
                             (unsigned char *)y + OPTIM_INT8_BLOCK_SCALES_OFFSET(pn[i]) + 4 * (a / 256),
                             4 * ((b - a + 255) / 256)) == 0,
                      "%s: p%zu[%zu:%zu] slot %d's scales differ", what, i, a, b, s);
        }
        if (fl & MS) {
            float *x = NULL, *y = NULL;
            optim_param_master_data(local, k, &x);
            optim_param_master_data(ref, i, &y);
            CHECK(x && y && memcmp(x, y + a, (b - a) * 4) == 0, "%s: p%zu[%zu:%zu]'s master differs", what, i, a, b);
        }
    }
    {
        double s1, s2;
        int64_t t1, t2;
        optim_get_loss_scale(local, NULL, &s1, &t1);
        optim_get_loss_scale(ref, NULL, &s2, &t2);
        CHECK(s1 == s2 && t1 == t2, "%s: loss scale %g/%lld, one process %g/%lld", what, s1, (long long)t1, s2,
              (long long)t2);
        CHECK(optim_mpi_step_count(d) == optim_step_count(ref) &&
                  optim_mpi_skipped_steps(d) == optim_skipped_steps(ref),
              "%s: counters differ", what);
    }
}

#define CK_T 5
#define CK_M 5

static void copy_params(mem *dst, const mem *src)
{
    size_t i;
    for (i = 0; i < PP; i++) memcpy(dst->p[i], src->p[i], pn[i] * 2);
}

/* Resume dir on comm (its size K) in `stage` from the parameters `at`, CK_M steps; compare with ref. */
static void resume_on(MPI_Comm comm, int stage, const char *dir, const mem *at, optim *ref, const mem *rm,
                      const char *what)
{
    mem m;
    optim *opt;
    optim_mpi *d;
    int t, K;
    MPI_Comm_size(comm, &K);
    mem_init(&m, &ck_case);
    copy_params(&m, at);
    opt = build_ck(&m); /* fresh: the checkpoint's state, counters, seed and loss scale replace its own */
    {
        optim_loss_scale ls;
        optim_loss_scale_defaults(&ls);
        must(optim_set_seed(opt, 1), "seed", optim_errmsg(opt));
        must(optim_set_loss_scale(opt, &ls), "loss scale", optim_errmsg(opt));
    }
    d = make(opt, comm, stage);
    optim_free(opt);
    must(optim_mpi_load(d, dir), "optim_mpi_load", optim_mpi_errmsg(d));
    for (t = CK_T + 1; t <= CK_T + CK_M; t++) step_both(d, stage, &ck_case, &m, K, NULL, NULL, t, comm);
    compare_ck(what, d, &m, ref, rm);
    optim_mpi_free(d);
    mem_free(&m);
}

static void run_ckpt(const char *dir)
{
    mem m, rm, at;
    optim *opt, *ref;
    optim_mpi *d;
    int t, stage = 1;
    long before = g_failures;
    char file[4200], what[256];
    mem_init(&m, &ck_case);
    mem_init(&rm, &ck_case);
    mem_init(&at, &ck_case);
    opt = build_ck(&m);
    ref = build_ck(&rm);
    d = make(opt, MPI_COMM_WORLD, stage);
    optim_free(opt);
    for (t = 1; t <= CK_T; t++) step_both(d, stage, &ck_case, &m, g_size, ref, &rm, t, MPI_COMM_WORLD);
    compare_ck("checkpoint run, before the save", d, &m, ref, &rm);
    must(optim_mpi_save(d, dir), "optim_mpi_save", optim_mpi_errmsg(d));
    copy_params(&at, &m);
    for (t = CK_T + 1; t <= CK_T + CK_M; t++) step_both(d, stage, &ck_case, &m, g_size, ref, &rm, t, MPI_COMM_WORLD);
    compare_ck("checkpoint run, uninterrupted", d, &m, ref, &rm);
    CHECK(optim_skipped_steps(ref) == 2, "checkpoint run: one process skipped %lld steps, not 2",
          (long long)optim_skipped_steps(ref));
    optim_mpi_free(d);

    /* The same ranks, another stage. */
    snprintf(what, sizeof what, "resumed on %d ranks, stage 2", g_size);
    resume_on(MPI_COMM_WORLD, 2, dir, &at, ref, &rm, what);
    /* K - 1 ranks: the shards cut elsewhere (8-bit blocks move whole). */
    if (g_size > 1) {
        MPI_Comm sub;
        MPI_Comm_split(MPI_COMM_WORLD, g_rank < g_size - 1 ? 0 : MPI_UNDEFINED, g_rank, &sub);
        if (sub != MPI_COMM_NULL) {
            snprintf(what, sizeof what, "resumed on %d ranks, stage 1 (resharded)", g_size - 1);
            resume_on(sub, 1, dir, &at, ref, &rm, what);
            MPI_Comm_free(&sub);
        }
    }
    /* Merged into one file, resumed by one process. */
    MPI_Barrier(MPI_COMM_WORLD);
    if (g_rank == 0) {
        optim_error err;
        mem pm;
        optim *one;
        snprintf(file, sizeof file, "%s.merged.ckpt", dir);
        must(optim_mpi_merge(dir, file, &err), "optim_mpi_merge", err.message);
        mem_init(&pm, &ck_case);
        copy_params(&pm, &at);
        one = build_ck(&pm);
        must(optim_load(one, file, OPTIM_MATCH_NAME), "optim_load of the merged file", optim_errmsg(one));
        for (t = CK_T + 1; t <= CK_T + CK_M; t++) step_both(NULL, 0, &ck_case, NULL, 0, one, &pm, t, MPI_COMM_SELF);
        {
            size_t i;
            for (i = 0; i < PP; i++)
                CHECK(memcmp(pm.p[i], rm.p[i], pn[i] * 2) == 0,
                      "merged checkpoint resumed by one process: parameter p%zu differs", i);
            CHECK(optim_loss_scale_value(one) == optim_loss_scale_value(ref), "merged: loss scale %g, %g",
                  optim_loss_scale_value(one), optim_loss_scale_value(ref));
        }
        optim_free(one);
        mem_free(&pm);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (g_rank == 0)
        printf("prec: %-80s %s\n", "checkpoint: resume (same ranks, K - 1 ranks, merged one process)",
               g_failures == before ? "bit-identical to one process" : "DIFFERS");
    optim_free(ref);
    mem_free(&m);
    mem_free(&rm);
    mem_free(&at);
}

/* What stays unsupported is refused by name on every rank, never dropped: complex parameters. */
static void complex_refused(void)
{
    float w[64] = {0}, g[64] = {0};
    optim *o = NULL;
    optim_mpi *d = NULL;
    optim_hparams hp;
    optim_error err;
    int rc;
    must(optim_create(&o, OPTIM_NADAM), "optim_create", ""); /* a rule with complex arithmetic */
    optim_hparams_init(&hp, OPTIM_NADAM, NULL);
    must(optim_add_group(o, &hp, NULL), "add_group", optim_errmsg(o));
    must(optim_add_param_ex(o, 0, w, F32, g, F32, 64, F32, OPTIM_PARAM_COMPLEX, "z", NULL), "add_param_ex",
         optim_errmsg(o));
    rc = optim_mpi_create(&d, o, MPI_COMM_WORLD, 1, &err);
    CHECK(rc == OPTIM_EUNSUPPORTED && strstr(err.message, "OPTIM_PARAM_COMPLEX") != NULL && strstr(err.message, "'z'"),
          "a complex parameter: %s (%s), not refused by name", optim_err_name(rc), rc ? err.message : "accepted");
    if (g_rank == 0) printf("prec: a complex parameter is refused: %s\n", err.message);
    optim_mpi_free(d);
    optim_free(o);
}

int cmd_prec(const char *dir)
{
    size_t c;
    int stage;
    complex_refused();
    for (c = 0; c < NCASES; c++)
        for (stage = 0; stage <= 2; stage++) run_case(&cases[c], stage);
    if (g_rank == 0) mkdir(dir, 0777);
    MPI_Barrier(MPI_COMM_WORLD);
    run_ckpt(dir);
    return 0;
}
