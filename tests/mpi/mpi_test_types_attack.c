/* mpi_test_types.c: liboptim_mpi over every element type the core takes,
 * mixed in one model, against one process, bit for bit.
 *
 *   mpi_test types [--steps N] [--dir D]
 *
 * The model holds float32, float64, bfloat16 and float16 parameters, float32
 * parameters with bfloat16 and float16 gradients, and bfloat16 / float16
 * state, side by side (odd sizes, so that a float64 tensor follows a
 * bfloat16 one at an odd element count: the wire's alignment padding), in
 * buckets of a few blocks that straddle tensors of different types and the
 * shards. Each rank's gradient is computed in double and stored in the
 * gradient's type; the reference is one process of the library stepping the
 * average every rank would compute, avg = T((g_0 + ... + g_{K-1}) / K) summed
 * in double in rank order and rounded once to the gradient's type T, rounded
 * here by this file's own arithmetic (a quantum and nearbyint), not the
 * library's (round to odd, then the core's conversions): the two must agree.
 * After every step every rank compares its whole parameters (bytes), its
 * pieces' state (bytes, in the state's type), the counters, the skip flag
 * and the global norm with the reference.
 *
 * Then checkpoints with typed state, in one mpirun: K ranks save (stage 2);
 * K - 1 ranks (a sub-communicator) load it in stage 1 and go on, save; rank
 * 0 merges that into one file and optim_load reads it into a one-process
 * optimizer of the same types (state bytes against the reference); all K
 * ranks load it in stage 0, then stage 2, and go on: N -> M both ways
 * (3 -> 2 -> 3 under -np 3, 2 -> 1 -> 2 under -np 2), every step against the
 * reference. */
#define _POSIX_C_SOURCE 200809L
#include "mpi_test.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TNP 8

typedef struct tmodel {
    size_t np;
    size_t n[TNP];
    optim_dtype pdt[TNP], gdt[TNP], sdt[TNP];
    unsigned char *w[TNP], *g[TNP];
} tmodel;

/* Attack variants (chosen by OPTIM_TYPES_VARIANT): tables filled at run time. */
static optim_dtype T_P[TNP], T_G[TNP], T_S[TNP];
static size_t T_N[TNP];
static size_t NAN_I = 4, NAN_J = 100;
#define F32 OPTIM_FLOAT32
#define F64 OPTIM_FLOAT64
#define BF OPTIM_BFLOAT16
#define F16 OPTIM_FLOAT16
static void tvariant(int v)
{
    /* 0 tiny: 0- and 1-element tensors of each type (more ranks than blocks under -np 3). */
    static const optim_dtype p0[TNP] = {F64, BF, F16, F32, F32, F16, BF, F64};
    static const optim_dtype g0[TNP] = {F64, BF, F16, BF, F16, F16, BF, F64};
    static const optim_dtype s0[TNP] = {F64, BF, F32, F32, F16, F16, F32, F64};
    static const size_t n0[TNP] = {0, 1, 1, 0, 1, 3, 0, 1};
    /* 1 odd: bf16 of 8191 then f64 of 3, a float16 tensor of 20001 across the shard boundary, 1 element bf16,
     * f32 with bf16 grads 8193, f64 5, f32 with f16 grads and f16 state 16385, f16 of 0. */
    static const optim_dtype p1[TNP] = {BF, F64, F16, BF, F32, F64, F32, F16};
    static const optim_dtype g1[TNP] = {BF, F64, F16, BF, BF, F64, F16, F16};
    static const optim_dtype s1[TNP] = {BF, F64, F16, F32, BF, F64, F16, F16};
    static const size_t n1[TNP] = {8191, 3, 20001, 1, 8193, 5, 16385, 0};
    /* 2 halves only: every tensor bf16/f16, odd lengths, shard boundaries inside them. */
    static const optim_dtype p2[TNP] = {F16, BF, F16, BF, F16, BF, F16, BF};
    static const optim_dtype g2[TNP] = {F16, BF, F16, BF, F16, BF, F16, BF};
    static const optim_dtype s2[TNP] = {F16, BF, F32, F32, BF, F16, F16, BF};
    static const size_t n2[TNP] = {1, 12289, 7, 8191, 24577, 1, 3, 5};
    const optim_dtype *p = v == 0 ? p0 : v == 1 ? p1 : p2, *g = v == 0 ? g0 : v == 1 ? g1 : g2,
                      *s = v == 0 ? s0 : v == 1 ? s1 : s2;
    const size_t *n = v == 0 ? n0 : v == 1 ? n1 : n2;
    memcpy(T_P, p, sizeof T_P);
    memcpy(T_G, g, sizeof T_G);
    memcpy(T_S, s, sizeof T_S);
    memcpy(T_N, n, sizeof T_N);
    if (v == 0) { NAN_I = 4; NAN_J = 0; }      /* f32 param, f16 gradient */
    else if (v == 1) { NAN_I = 6; NAN_J = 100; } /* f32 param, f16 gradient */
    else { NAN_I = 4; NAN_J = 20000; }          /* f16 gradient, second shard */
}

/* ---- Element types, by this file's own arithmetic ---------------------------------- */

/* x rounded to nearest even to a binary format of `bits` significant bits,
 * smallest normal exponent emin, largest finite value vmax (overflow: inf). */
static double tround(double x, int bits, int emin, double vmax)
{
    int e;
    double q, y;
    if (x != x || isinf(x) || x == 0) return x;
    frexp(x, &e); /* |x| in [2^(e-1), 2^e) */
    if (e - 1 < emin) e = emin + 1;
    q = ldexp(1.0, e - bits);
    y = nearbyint(x / q) * q;
    if (fabs(y) > vmax) y = copysign(INFINITY, x);
    return y;
}

static double tload(const unsigned char *p, size_t j, optim_dtype dt)
{
    if (dt == OPTIM_FLOAT64) {
        double v;
        memcpy(&v, p + 8 * j, 8);
        return v;
    }
    if (dt == OPTIM_FLOAT32) {
        float v;
        memcpy(&v, p + 4 * j, 4);
        return v;
    }
    {
        uint16_t h;
        memcpy(&h, p + 2 * j, 2);
        if (dt == OPTIM_BFLOAT16) {
            uint32_t u = (uint32_t)h << 16;
            float f;
            memcpy(&f, &u, 4);
            return f;
        } else {
            int ex = (h >> 10) & 31, m = h & 1023;
            double v = ex == 31 ? (m ? NAN : INFINITY) : ex == 0 ? ldexp(m, -24) : ldexp(1024 + m, ex - 25);
            return (h & 0x8000) ? -v : v;
        }
    }
}

/* Store x rounded once to nearest even to dt. */
static void tstore(unsigned char *p, size_t j, optim_dtype dt, double x)
{
    if (dt == OPTIM_FLOAT64) {
        memcpy(p + 8 * j, &x, 8);
    } else if (dt == OPTIM_FLOAT32) {
        float f = (float)tround(x, 24, -126, FLT_MAX);
        memcpy(p + 4 * j, &f, 4);
    } else if (dt == OPTIM_BFLOAT16) {
        float f = (float)tround(x, 8, -126, ldexp(255.0, 120));
        uint32_t u;
        uint16_t h;
        memcpy(&u, &f, 4);
        h = x != x ? 0x7fc0 : (uint16_t)(u >> 16);
        memcpy(p + 2 * j, &h, 2);
    } else {
        double y = tround(x, 11, -14, 65504.0);
        uint16_t h;
        if (y != y) {
            h = 0x7e00;
        } else {
            double a = fabs(y);
            int e;
            if (isinf(a))
                h = 0x7c00;
            else if (a < ldexp(1.0, -14))
                h = (uint16_t)(a / ldexp(1.0, -24));
            else {
                frexp(a, &e);
                h = (uint16_t)(((e - 1 + 15) << 10) | (uint16_t)(a / ldexp(1.0, e - 11) - 1024));
            }
            if (signbit(y)) h |= 0x8000;
        }
        memcpy(p + 2 * j, &h, 2);
    }
}

/* ---- The model ---------------------------------------------------------------------- */

static double tgen(uint64_t seed, int t, int r, size_t i, size_t j)
{
    uint64_t z = seed ^ ((uint64_t)t << 40) ^ ((uint64_t)r << 32) ^ ((uint64_t)i << 26) ^ j;
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return ((double)(z >> 11) / 9007199254740992.0 * 2.0 - 1.0) * (0.05 + 0.3 * (double)(i % 3));
}

static void tmodel_init(tmodel *m, uint64_t seed, double offset)
{
    size_t i, j;
    memset(m, 0, sizeof *m);
    m->np = TNP;
    for (i = 0; i < TNP; i++) {
        m->n[i] = T_N[i];
        m->pdt[i] = T_P[i];
        m->gdt[i] = T_G[i];
        m->sdt[i] = T_S[i];
        m->w[i] = (unsigned char *)calloc(m->n[i] ? m->n[i] : 1, 8);
        m->g[i] = (unsigned char *)calloc(m->n[i] ? m->n[i] : 1, 8);
        for (j = 0; j < m->n[i]; j++) tstore(m->w[i], j, m->pdt[i], tgen(seed, -1, 0, i, j) * 2 + offset);
    }
}

static void tmodel_copy_params(tmodel *dst, const tmodel *src)
{
    size_t i;
    for (i = 0; i < TNP; i++) memcpy(dst->w[i], src->w[i], src->n[i] * optim_dtype_size(src->pdt[i]));
}

static void tmodel_free(tmodel *m)
{
    size_t i;
    for (i = 0; i < TNP; i++) {
        free(m->w[i]);
        free(m->g[i]);
    }
}

/* Rank r of K's gradient element, stored in its type (a NaN where asked). */
static double tgrad(const tmodel *m, uint64_t seed, int t, int r, int K, size_t i, size_t j, int nan_step)
{
    if (t == nan_step && r == K - 1 && i == NAN_I && j == NAN_J) return (r & 1) ? INFINITY : NAN;
    if (K == 3 && j == 1 && (m->gdt[i] == OPTIM_BFLOAT16 || m->gdt[i] == OPTIM_FLOAT16)) {
        /* A trap for rounding twice: the three gradients (exact in the type) sum to 3 (1 + u/2) + tiny, so
         * the average lies just above the tie between 1 and 1 + u (u: the type's spacing at 1) and rounds up
         * to 1 + u; rounded to float first it would be the tie itself, and then round to even, 1. (Two ranks
         * cannot make such an average: half the sum of two such numbers never needs more than float's bits
         * and lands on a tie.) Negated at odd steps. */
        double u = m->gdt[i] == OPTIM_BFLOAT16 ? ldexp(1.0, -7) : ldexp(1.0, -10);
        double v = r == 0 ? 2.0 + 2.0 * u : r == 1 ? 1.0 - u / 2 : (m->gdt[i] == OPTIM_BFLOAT16 ? ldexp(1.0, -40)
                                                                                             : ldexp(1.0, -24));
        return t % 2 ? -v : v;
    }
    return tgen(seed, t, r, i, j) + 0.05 * tload(m->w[i], j, m->pdt[i]);
}

static void tlocal_grads(tmodel *m, uint64_t seed, int t, int rank, int K, int nan_step)
{
    size_t i, j;
    for (i = 0; i < TNP; i++)
        for (j = 0; j < m->n[i]; j++) tstore(m->g[i], j, m->gdt[i], tgrad(m, seed, t, rank, K, i, j, nan_step));
}

/* The average over K ranks: each rank's gradient as stored in its type, summed in double in rank order, / K,
 * rounded once. */
static void tref_grads(tmodel *m, uint64_t seed, int t, int K, int nan_step)
{
    size_t i, j;
    int r;
    unsigned char one[8];
    for (i = 0; i < TNP; i++)
        for (j = 0; j < m->n[i]; j++) {
            double acc = 0;
            for (r = 0; r < K; r++) {
                tstore(one, 0, m->gdt[i], tgrad(m, seed, t, r, K, i, j, nan_step));
                acc = r ? acc + tload(one, 0, m->gdt[i]) : tload(one, 0, m->gdt[i]);
            }
            tstore(m->g[i], j, m->gdt[i], acc / (double)K);
        }
}

/* ---- Configurations ------------------------------------------------------------------ */

typedef struct tcfg {
    const char *name;
    optim_rule rule;
    double clip_norm, norm_type, clip_value;
    optim_nonfinite nonfinite;
    int nan_step;
} tcfg;

static const tcfg tcfgs[] = {
    {"adamw-clip2-skip", OPTIM_ADAMW, 1.0, 2.0, 0, OPTIM_NONFINITE_SKIP, 3},
    {"sgd-nesterov-clipvalue", OPTIM_SGD, 0, 2.0, 0.3, OPTIM_NONFINITE_PROPAGATE, -1},
    {"adam-amsgrad-clipinf", OPTIM_ADAM, 0.5, INFINITY, 0, OPTIM_NONFINITE_SKIP, 2},
    {"adam-clip2-tiny-skip", OPTIM_ADAM, 0.01, 2.0, 0, OPTIM_NONFINITE_SKIP, 1},
};

static optim *tbuild(const tcfg *c, tmodel *m, int defer)
{
    optim *o = NULL;
    size_t i;
    int g;
    must(optim_create(&o, c->rule), "optim_create", "");
    must(optim_set_defer_state(o, defer), "optim_set_defer_state", optim_errmsg(o));
    for (g = 0; g < 2; g++) {
        optim_hparams hp;
        hparams_for(&hp, c->rule, (size_t)g);
        must(optim_add_group(o, &hp, NULL), "optim_add_group", optim_errmsg(o));
    }
    for (i = 0; i < TNP; i++) {
        char name[32];
        snprintf(name, sizeof name, "t%zu", i);
        must(optim_add_param_ex(o, i % 2, m->w[i], m->pdt[i], m->g[i], m->gdt[i], m->n[i], m->sdt[i], 0, name, NULL),
             "optim_add_param_ex", optim_errmsg(o));
    }
    if (c->clip_norm > 0) must(optim_set_clip_grad_norm(o, c->clip_norm, c->norm_type), "clip", optim_errmsg(o));
    if (c->clip_value > 0) must(optim_set_clip_grad_value(o, c->clip_value), "clipv", optim_errmsg(o));
    must(optim_set_nonfinite(o, c->nonfinite), "nonfinite", optim_errmsg(o));
    return o;
}

/* Everything the distributed run holds against the reference (parameters and state as bytes). */
static void tcompare(const char *what, int t, optim_mpi *d, const tmodel *m, optim *ref, const tmodel *rm, int loaded)
{
    optim *local = optim_mpi_local(d);
    size_t i, k;
    int s, nslots = optim_rule_slot_count(optim_get_rule(ref)), reported = 0;
    for (i = 0; i < TNP; i++) {
        size_t sz = optim_dtype_size(m->pdt[i]), j;
        for (j = 0; j < m->n[i]; j++)
            if (memcmp(m->w[i] + j * sz, rm->w[i] + j * sz, sz) != 0 && reported++ < 3)
                FAILF("%s step %d: param t%zu (%s) element %zu: %a, the reference %a", what, t, i,
                      optim_dtype_name(m->pdt[i]), j, tload(m->w[i], j, m->pdt[i]), tload(rm->w[i], j, rm->pdt[i]));
    }
    for (k = 0; k < optim_param_count(local); k++) {
        optim_param_info info;
        optim_dtype pdt, gdt, sdt;
        size_t pi, a = 0, b = 0, ssz;
        int64_t s1, s2;
        optim_param_get_info(local, k, &info);
        if (strcmp(info.name, "[empty]") == 0) continue;
        if (sscanf(info.name, "t%zu[%zu:%zu]", &pi, &a, &b) != 3 || b - a != info.n || pi >= TNP) {
            FAILF("%s: local parameter %zu is named '%s'", what, k, info.name);
            continue;
        }
        optim_param_get_dtypes(local, k, &pdt, &gdt, &sdt);
        CHECK(pdt == m->pdt[pi] && gdt == m->gdt[pi] && sdt == m->sdt[pi], "%s: %s has types %s %s %s", what,
              info.name, optim_dtype_name(pdt), optim_dtype_name(gdt), optim_dtype_name(sdt));
        ssz = optim_dtype_size(sdt);
        optim_param_get_step(local, k, &s1);
        optim_param_get_step(ref, pi, &s2);
        CHECK(s1 == s2, "%s step %d: %s step counter %lld, the reference %lld", what, t, info.name, (long long)s1,
              (long long)s2);
        for (s = 0; s < nslots; s++) {
            void *x = NULL, *y = NULL;
            int ix = 0, iy = 0;
            size_t j;
            optim_state_slot_data(local, k, s, &x, NULL, &ix);
            optim_state_slot_data(ref, pi, s, &y, NULL, &iy);
            if (!x || !y) {
                CHECK(!x == !y, "%s: slot %d of %s allocated here %d, reference %d", what, s, info.name, !!x, !!y);
                continue;
            }
            CHECK(ix == iy, "%s step %d: %s slot %d initialized %d, the reference %d", what, t, info.name, s, ix, iy);
            for (j = 0; j < info.n; j++)
                if (memcmp((unsigned char *)x + j * ssz, (unsigned char *)y + (a + j) * ssz, ssz) != 0 &&
                    reported++ < 3)
                    FAILF("%s step %d: %s state %s (%s) element %zu: %a, the reference %a", what, t, info.name,
                          optim_rule_slot_name(optim_get_rule(ref), s), optim_dtype_name(sdt), a + j,
                          tload((unsigned char *)x, j, sdt), tload((unsigned char *)y, a + j, sdt));
        }
    }
    CHECK(optim_mpi_step_count(d) == optim_step_count(ref), "%s step %d: step count %lld, reference %lld", what, t,
          (long long)optim_mpi_step_count(d), (long long)optim_step_count(ref));
    CHECK(optim_mpi_skipped_steps(d) == optim_skipped_steps(ref), "%s step %d: skipped %lld, reference %lld", what, t,
          (long long)optim_mpi_skipped_steps(d), (long long)optim_skipped_steps(ref));
    if (!loaded) {
        CHECK(optim_mpi_last_step_skipped(d) == optim_last_step_skipped(ref), "%s step %d: last skipped %d vs %d",
              what, t, optim_mpi_last_step_skipped(d), optim_last_step_skipped(ref));
        CHECK(same_bits_d(optim_mpi_last_grad_norm(d), optim_last_grad_norm(ref)),
              "%s step %d: global gradient norm %a, the reference %a", what, t, optim_mpi_last_grad_norm(d),
              optim_last_grad_norm(ref));
    }
}

static optim_mpi_options tbuckets(void)
{
    optim_mpi_options o;
    optim_mpi_options_init(&o);
    o.bucket_bytes = getenv("OPTIM_TYPES_BUCKET") ? (size_t)atol(getenv("OPTIM_TYPES_BUCKET")) : 8;
    o.timeout = 120;
    return o;
}

/* One step of both: this rank's gradients (rank, K of comm), the reference's K-average. */
static void tstep(optim_mpi *d, tmodel *m, optim *ref, tmodel *rm, const tcfg *c, uint64_t seed, int t, int rank,
                  int K, const char *what)
{
    size_t i;
    int rc;
    tlocal_grads(m, seed, t, rank, K, c->nan_step);
    tref_grads(rm, seed, t, K, c->nan_step);
    if (optim_mpi_stage(d) == 2)
        for (i = TNP; i-- > 0;) must(optim_mpi_grad_ready(d, i), "optim_mpi_grad_ready", optim_mpi_errmsg(d));
    rc = optim_mpi_step(d);
    must(rc, "optim_mpi_step", optim_mpi_errmsg(d));
    must(optim_step(ref), "optim_step (reference)", optim_errmsg(ref));
    tcompare(what, t, d, m, ref, rm, 0);
}

static optim_mpi *tcreate(const tcfg *c, tmodel *m, MPI_Comm comm, int stage)
{
    optim *opt = tbuild(c, m, 1);
    optim_mpi *d = NULL;
    optim_mpi_options o = tbuckets();
    optim_error err;
    must(optim_mpi_create_with(&d, opt, comm, stage, &o, &err), "optim_mpi_create", err.message);
    CHECK(optim_state_bytes(opt) == 0, "the template holds %zu bytes of state", optim_state_bytes(opt));
    optim_free(opt);
    return d;
}

/* The state bytes a rank holds: its pieces' elements times their state types' sizes. */
static void tcheck_state_bytes(optim_mpi *d, const tmodel *m)
{
    optim *local = optim_mpi_local(d);
    size_t k, want = 0;
    for (k = 0; k < optim_param_count(local); k++) {
        optim_param_info info;
        size_t pi, a, b;
        optim_param_get_info(local, k, &info);
        if (sscanf(info.name, "t%zu[%zu:%zu]", &pi, &a, &b) == 3 && pi < TNP) {
            size_t held = 0;
            optim_param_state_bytes(local, k, &held);
            want += held;
            CHECK(b == a || held % ((b - a) * optim_dtype_size(m->sdt[pi])) == 0,
                  "%s holds %zu bytes of state", info.name, held);
        }
    }
    CHECK(optim_mpi_state_bytes(d) == want, "optim_mpi_state_bytes %zu, the pieces hold %zu", optim_mpi_state_bytes(d),
          want);
}

int cmd_types_attack(int steps, const char *dir)
{
    {
        const char *ev = getenv("OPTIM_TYPES_VARIANT");
        tvariant(ev ? atoi(ev) : 0);
        if (g_rank == 0) printf("types-attack: variant %d\n", ev ? atoi(ev) : 0);
    }
    {
        /* OPTIM_NONFINITE_ERROR with a non-finite half gradient on the last rank only: every rank fails with
         * OPTIM_ENONFINITE, and no rank's parameters change (stages 0, 1, 2). */
        static const tcfg ce = {"adam-error", OPTIM_ADAM, 1.0, 2.0, 0, OPTIM_NONFINITE_ERROR, 1};
        int st;
        for (st = 0; st <= 2; st++) {
            tmodel mm, before;
            optim_mpi *dd;
            size_t i;
            int rc, t;
            tmodel_init(&mm, 5, 0);
            tmodel_init(&before, 5, 0);
            dd = tcreate(&ce, &mm, MPI_COMM_WORLD, st);
            for (t = 0; t < 2; t++) {
                tlocal_grads(&mm, 5, t, g_rank, g_size, ce.nan_step);
                tmodel_copy_params(&before, &mm);
                if (st == 2)
                    for (i = TNP; i-- > 0;) must(optim_mpi_grad_ready(dd, i), "grad_ready", optim_mpi_errmsg(dd));
                rc = optim_mpi_step(dd);
                if (t == ce.nan_step) {
                    char nm[16];
                    snprintf(nm, sizeof nm, "'t%zu'", NAN_I);
                    CHECK(rc == OPTIM_ENONFINITE && strstr(optim_mpi_errmsg(dd), nm) != NULL,
                          "stage %d: a non-finite half gradient under ERROR: %s: %s", st, optim_err_name(rc),
                          optim_mpi_errmsg(dd));
                    for (i = 0; i < TNP; i++)
                        CHECK(memcmp(mm.w[i], before.w[i], mm.n[i] * optim_dtype_size(mm.pdt[i])) == 0,
                              "stage %d: t%zu changed by a failed step", st, i);
                    if (g_rank == 0) printf("types-attack: stage %d, ERROR policy: %s\n", st, optim_mpi_errmsg(dd));
                } else {
                    CHECK(rc == OPTIM_OK, "stage %d step %d: %s", st, t, optim_mpi_errmsg(dd));
                }
            }
            optim_mpi_free(dd);
            tmodel_free(&mm);
            tmodel_free(&before);
        }
    }
    if (g_size > 1) {
        /* Ranks that differ only in one parameter's state type (parameter 6; empty in variant 0): refused on
         * every rank, naming it. */
        tmodel mm;
        optim *o;
        optim_mpi *dd = NULL;
        optim_mpi_options oo = tbuckets();
        optim_error err;
        int rc;
        tmodel_init(&mm, 1, 0);
        if (g_rank == g_size - 1) mm.sdt[6] = mm.sdt[6] == OPTIM_FLOAT32 ? mm.pdt[6] : OPTIM_FLOAT32;
        o = tbuild(&tcfgs[0], &mm, 1);
        rc = optim_mpi_create_with(&dd, o, MPI_COMM_WORLD, 1, &oo, &err);
        CHECK(rc == OPTIM_EMISMATCH && dd == NULL && strstr(err.message, "param 6 't6' element types") != NULL,
              "a state type differing on the last rank: %s: %s", optim_err_name(rc), err.message);
        if (g_rank == 0) printf("types-attack: state type mismatch refused: %s\n", err.message);
        optim_mpi_free(dd);
        optim_free(o);
        tmodel_free(&mm);
    }
    size_t ci;
    int stage, t;
    for (ci = 0; ci < sizeof tcfgs / sizeof *tcfgs; ci++) {
        const tcfg *c = &tcfgs[ci];
        for (stage = 0; stage <= 2; stage++) {
            uint64_t seed = 0x7e5700u + ci * 31u;
            tmodel m, rm;
            optim *ref;
            optim_mpi *d;
            char what[96];
            /* Ranks start from different parameters: optim_mpi_create broadcasts rank 0's. */
            tmodel_init(&m, seed, g_rank * 0.25);
            tmodel_init(&rm, seed, 0);
            ref = tbuild(c, &rm, 0);
            d = tcreate(c, &m, MPI_COMM_WORLD, stage);
            snprintf(what, sizeof what, "%s stage %d", c->name, stage);
            tcompare(what, -1, d, &m, ref, &rm, 1);
            for (t = 0; t < steps; t++) tstep(d, &m, ref, &rm, c, seed, t, g_rank, g_size, what);
            tcheck_state_bytes(d, &m);
            {
                /* The float32 setters on typed parameters: refused, naming the types; nothing changed. */
                size_t i;
                for (i = 0; i < TNP; i++) {
                    int rc1 = optim_mpi_set_grad(d, i, (const float *)m.g[i]);
                    int rc2 = optim_mpi_set_param_ptrs(d, i, (float *)m.w[i], (const float *)m.g[i]);
                    int is32 = m.pdt[i] == OPTIM_FLOAT32 && m.gdt[i] == OPTIM_FLOAT32;
                    CHECK(is32 ? rc1 == OPTIM_OK && rc2 == OPTIM_OK : rc1 == OPTIM_EINVAL && rc2 == OPTIM_EINVAL,
                          "%s: float32 setters on t%zu (%s/%s): %s %s: %s", what, i, optim_dtype_name(m.pdt[i]),
                          optim_dtype_name(m.gdt[i]), optim_err_name(rc1), optim_err_name(rc2), optim_mpi_errmsg(d));
                    if (!is32)
                        CHECK(strstr(optim_mpi_errmsg(d), optim_dtype_name(m.gdt[i] != OPTIM_FLOAT32 ? m.gdt[i]
                                                                                                   : m.pdt[i])) != NULL,
                              "%s: the refusal does not name the type: %s", what, optim_mpi_errmsg(d));
                    CHECK(optim_mpi_set_grad_data(d, i, m.g[i]) == OPTIM_OK, "set_grad_data t%zu: %s", i,
                          optim_mpi_errmsg(d));
                }
                CHECK(optim_mpi_set_grad_data(d, TNP, m.g[0]) != OPTIM_OK, "set_grad_data out of range accepted");
                /* One more step after the setters: still the reference. */
                tstep(d, &m, ref, &rm, c, seed, steps, g_rank, g_size, what);
            }
            if (stage == 0) {
                /* A stage 0 save (rank 0's whole typed state, one shard) loaded in stage 1 and stage 2. */
                char d0[4096], what2[128];
                int st2;
                snprintf(d0, sizeof d0, "%s/s0-%zu", dir, ci);
                if (g_rank == 0) mkdir(dir, 0777);
                MPI_Barrier(MPI_COMM_WORLD);
                must(optim_mpi_save(d, d0), "optim_mpi_save (stage 0)", optim_mpi_errmsg(d));
                for (st2 = 1; st2 <= 2; st2++) {
                    optim_mpi *e = tcreate(c, &m, MPI_COMM_WORLD, st2);
                    optim *ref2;
                    tmodel rm2;
                    int t2;
                    tmodel_init(&rm2, seed, 0);
                    tmodel_copy_params(&rm2, &rm);
                    ref2 = tbuild(c, &rm2, 0);
                    must(optim_mpi_load(e, d0), "optim_mpi_load (stage 0 save)", optim_mpi_errmsg(e));
                    /* the reference: the same state, from the stage 0 save merged into one file */
                    if (g_rank == 0) {
                        optim_error err;
                        char mf[4200];
                        snprintf(mf, sizeof mf, "%s.ckpt", d0);
                        must(optim_mpi_merge(d0, mf, &err), "optim_mpi_merge (stage 0)", err.message);
                    }
                    MPI_Barrier(MPI_COMM_WORLD);
                    {
                        char mf[4200];
                        snprintf(mf, sizeof mf, "%s.ckpt", d0);
                        must(optim_load(ref2, mf, OPTIM_MATCH_NAME), "optim_load (stage 0 merged)", optim_errmsg(ref2));
                    }
                    snprintf(what2, sizeof what2, "%s: stage 0 save loaded in stage %d", what, st2);
                    tcompare(what2, steps + 1, e, &m, ref2, &rm2, 1);
                    for (t2 = steps + 1; t2 < steps + 4; t2++) tstep(e, &m, ref2, &rm2, c, seed, t2, g_rank, g_size, what2);
                    optim_mpi_free(e);
                    optim_free(ref2);
                    tmodel_copy_params(&m, &rm);
                    tmodel_free(&rm2);
                    MPI_Barrier(MPI_COMM_WORLD);
                }
                if (g_rank == 0) printf("%s: a stage 0 save of typed state loaded in stages 1 and 2, bit for bit\n", what);
            }
            if (g_rank == 0)
                printf("%s: %d steps, parameters and state as one process's, bit for bit (%zu buckets, %zu bytes of "
                       "state on rank 0)\n",
                       what, steps, optim_mpi_bucket_count(d), optim_mpi_state_bytes(d));
            optim_mpi_free(d);
            optim_free(ref);
            tmodel_free(&m);
            tmodel_free(&rm);
        }
    }

    /* Checkpoints with typed state: K -> K-1 -> one process (merge) and K. */
    {
        const tcfg *c = &tcfgs[0];
        uint64_t seed = 0x7e57c4u;
        tmodel m, rm;
        optim *ref;
        optim_mpi *d;
        char da[4096], db[4096], merged[4200];
        MPI_Comm sub = MPI_COMM_NULL;
        int sub_k = g_size > 1 ? g_size - 1 : 1, sub_rank = -1;
        snprintf(da, sizeof da, "%s/a", dir);
        snprintf(db, sizeof db, "%s/b", dir);
        snprintf(merged, sizeof merged, "%s/b.ckpt", dir);
        if (g_rank == 0) mkdir(dir, 0777);
        tmodel_init(&m, seed, 0);
        tmodel_init(&rm, seed, 0);
        ref = tbuild(c, &rm, 0);
        d = tcreate(c, &m, MPI_COMM_WORLD, 2);
        for (t = 0; t < 5; t++) tstep(d, &m, ref, &rm, c, seed, t, g_rank, g_size, "ckpt: before the save");
        must(optim_mpi_save(d, da), "optim_mpi_save", optim_mpi_errmsg(d));
        optim_mpi_free(d);
        {
            /* The same names and sizes in float32 throughout: the state would change type; refused by name. */
            optim *o32 = NULL;
            optim_mpi *d32 = NULL;
            optim_mpi_options oo = tbuckets();
            optim_error err;
            float *mem = (float *)calloc(160000, sizeof *mem);
            size_t i, off = 0;
            int g, rc;
            must(optim_create(&o32, c->rule), "optim_create", "");
            for (g = 0; g < 2; g++) {
                optim_hparams hp;
                hparams_for(&hp, c->rule, (size_t)g);
                must(optim_add_group(o32, &hp, NULL), "optim_add_group", optim_errmsg(o32));
            }
            for (i = 0; i < TNP; i++) {
                char name[32];
                snprintf(name, sizeof name, "t%zu", i);
                must(optim_add_param(o32, i % 2, mem + off, mem + 80000 + off, T_N[i], name, NULL), "optim_add_param",
                     optim_errmsg(o32));
                off += T_N[i];
            }
            must(optim_mpi_create_with(&d32, o32, MPI_COMM_WORLD, 1, &oo, &err), "optim_mpi_create", err.message);
            rc = optim_mpi_load(d32, da);
            CHECK(rc == OPTIM_EMISMATCH,
                  "a checkpoint of other element types: %s: %s", optim_err_name(rc), optim_mpi_errmsg(d32));
            if (g_rank == 0) printf("types: a checkpoint of other element types refused: %s\n", optim_mpi_errmsg(d32));
            optim_mpi_free(d32);
            optim_free(o32);
            free(mem);
        }

        /* K - 1 ranks (1 under -np 2) load it and go on. */
        MPI_Comm_split(MPI_COMM_WORLD, g_rank < sub_k ? 0 : MPI_UNDEFINED, g_rank, &sub);
        if (sub != MPI_COMM_NULL) {
            MPI_Comm_rank(sub, &sub_rank);
            d = tcreate(c, &m, sub, 1);
            must(optim_mpi_load(d, da), "optim_mpi_load", optim_mpi_errmsg(d));
            tcompare("ckpt: loaded on K-1 ranks", 5, d, &m, ref, &rm, 1);
        }
        for (t = 5; t < 9; t++) {
            if (sub != MPI_COMM_NULL) {
                tstep(d, &m, ref, &rm, c, seed, t, sub_rank, sub_k, "ckpt: on K-1 ranks");
            } else { /* the rank left out keeps the reference going */
                tref_grads(&rm, seed, t, sub_k, c->nan_step);
                must(optim_step(ref), "optim_step (reference)", optim_errmsg(ref));
            }
        }
        if (sub != MPI_COMM_NULL) {
            must(optim_mpi_save(d, db), "optim_mpi_save", optim_mpi_errmsg(d));
            optim_mpi_free(d);
            MPI_Comm_free(&sub);
        }
        MPI_Barrier(MPI_COMM_WORLD);

        /* One process: merge, then optim_load into an optimizer of the same types. */
        if (g_rank == 0) {
            optim_error err;
            tmodel pm;
            optim *one;
            size_t i, j;
            int s;
            must(optim_mpi_merge(db, merged, &err), "optim_mpi_merge", err.message);
            tmodel_init(&pm, seed, 0);
            one = tbuild(c, &pm, 0);
            must(optim_load(one, merged, OPTIM_MATCH_NAME), "optim_load (merged)", optim_errmsg(one));
            CHECK(optim_step_count(one) == optim_step_count(ref), "merged: step count %lld, reference %lld",
                  (long long)optim_step_count(one), (long long)optim_step_count(ref));
            for (i = 0; i < TNP; i++) {
                size_t ssz = optim_dtype_size(rm.sdt[i]);
                for (s = 0; s < optim_rule_slot_count(c->rule); s++) {
                    void *x = NULL, *y = NULL;
                    optim_dtype dt = OPTIM_FLOAT32;
                    optim_state_slot_data(one, i, s, &x, &dt, NULL);
                    optim_state_slot_data(ref, i, s, &y, NULL, NULL);
                    CHECK(dt == rm.sdt[i], "merged: t%zu's state is %s", i, optim_dtype_name(dt));
                    if (!x || !y) continue;
                    for (j = 0; j < rm.n[i]; j++)
                        if (memcmp((unsigned char *)x + j * ssz, (unsigned char *)y + j * ssz, ssz) != 0) {
                            FAILF("merged: t%zu state %d element %zu: %a, the reference %a", i, s, j,
                                  tload((unsigned char *)x, j, dt), tload((unsigned char *)y, j, dt));
                            break;
                        }
                }
            }
            printf("types: %d ranks saved, %d loaded and went on, merged into one file: the state of every type "
                   "as one process's\n",
                   g_size, sub_k);
            optim_free(one);
            tmodel_free(&pm);
        }

        /* Every rank: the reference's parameters (rank 0's, broadcast), stage 0 then stage 2, from K - 1's save. */
        tmodel_copy_params(&m, &rm);
        for (stage = 0; stage <= 2; stage += 2) {
            optim_mpi *e = tcreate(c, &m, MPI_COMM_WORLD, stage);
            optim *ref2;
            tmodel rm2;
            char what[64];
            /* A fresh reference from the merged file: the load must equal it, steps too. */
            tmodel_init(&rm2, seed, 0);
            tmodel_copy_params(&rm2, &rm);
            ref2 = tbuild(c, &rm2, 0);
            {
                /* Every rank reads the merged file rank 0 wrote (a shared directory). */
                must(optim_load(ref2, merged, OPTIM_MATCH_NAME), "optim_load (merged)", optim_errmsg(ref2));
            }
            must(optim_mpi_load(e, db), "optim_mpi_load", optim_mpi_errmsg(e));
            snprintf(what, sizeof what, "ckpt: loaded on K ranks, stage %d", stage);
            tcompare(what, 9, e, &m, ref2, &rm2, 1);
            for (t = 9; t < 13; t++) tstep(e, &m, ref2, &rm2, c, seed, t, g_rank, g_size, what);
            optim_mpi_free(e);
            optim_free(ref2);
            tmodel_copy_params(&m, &rm);
            tmodel_free(&rm2);
        }
        if (g_rank == 0) printf("types: %d -> %d -> %d ranks (stages 2, 1, 0 and 2), bit for bit\n", g_size, sub_k,
                                g_size);
        optim_free(ref);
        tmodel_free(&m);
        tmodel_free(&rm);
    }
    return 0;
}
