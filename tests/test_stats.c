/* test_stats.c: step statistics (include/optim_stats.h). Each step's
 * statistics against a double computation from the same inputs (the
 * parameter before and after, the gradient) in the documented order, every
 * dense rule, float32/float64/bfloat16/master parameters (float32 gradients
 * or bfloat16), float32 parameters with bfloat16 or int8_block state, value clipping,
 * every CPU path, 1 and 2 threads; and turning statistics on changes no bit
 * of any parameter or state. */
#include "test.h"
#include "optim_ema.h"
#include "optim_precision.h"
#include "optim_sam.h"
#include "optim_schedule_free.h"
#include "optim_stats.h"
#include "optim_internal.h" /* optim__stats_force_copies */
#include "typed.h"

#define NT 2
#define STEPS 6
static const size_t sizes[NT] = {4 * 8192 + 1234, 37}; /* four blocks and a tail (two threads split it at a block), a small tensor */

typedef struct kind {
    optim_dtype pdt;
    unsigned flags;
    const char *name;
    int bf16_grad; /* a bfloat16 gradient (the fused loop on a master with its gradient through scratch) */
    int sdt;       /* the state's type, or -1 for the parameter's default (float32, float64 for float64) */
} kind;
/* The last two: float32 parameters and gradients with state not held in float32 (the fused loop chunk by chunk,
 * the state through scratch; never one call per block in place). */
#define N_STATE_KINDS 2
static const kind kinds[] = {{OPTIM_FLOAT32, 0, "float32", 0, -1},
                             {OPTIM_FLOAT64, 0, "float64", 0, -1},
                             {OPTIM_BFLOAT16, 0, "bfloat16", 0, -1},
                             {OPTIM_BFLOAT16, OPTIM_PARAM_MASTER, "bfloat16+master", 0, -1},
                             {OPTIM_BFLOAT16, OPTIM_PARAM_MASTER, "bfloat16+master, bfloat16 gradient", 1, -1},
                             {OPTIM_FLOAT32, 0, "float32, bfloat16 state", 0, OPTIM_BFLOAT16},
                             {OPTIM_FLOAT32, 0, "float32, int8_block state", 0, OPTIM_INT8_BLOCK}};
#define N_KINDS (sizeof kinds / sizeof kinds[0])

static double ld(optim_dtype dt, const void *x, size_t j)
{
    return t_get(dt, x, j);
}

/* The reference of the lanes (optim_stats.h): per chunk of 512 elements, 16 lanes in the compute type (element i
 * of a chunk in lane i % 16; squares added by a fused multiply-add, the update p1 - p0 rounded to the compute
 * type, the largest |u|, the clamped count), each lane then added to its double lane of the block; the block's
 * lanes folded by a fixed tree, the blocks in order. f64: the compute type is double, else float. */
#define REF_LANES(R, FMA, FABS)                                                                                      \
    {                                                                                                                \
        R lg[16], lu[16], lp[16], lm[16], lc[16];                                                                    \
        for (l = 0; l < 16; l++) lg[l] = lu[l] = lp[l] = lm[l] = lc[l] = 0;                                         \
        for (j = c; j < n && j < c + 512; j++) {                                                                     \
            const size_t ln = (j - c) % 16;                                                                          \
            R gi = (R)g[j], a = (R)p0[j], u = (R)p1[j] - a, au = FABS(u);                                            \
            int k = cl ? cl[j] : 0;                                                                                  \
            if (gclip > 0) {                                                                                         \
                const R cc = (R)gclip;                                                                               \
                k |= gi > cc || gi < -cc;                                                                            \
                gi = gi < -cc ? -cc : gi > cc ? cc : gi;                                                             \
            }                                                                                                        \
            lg[ln] = FMA(gi, gi, lg[ln]);                                                                            \
            lu[ln] = FMA(u, u, lu[ln]);                                                                              \
            lp[ln] = FMA(a, a, lp[ln]);                                                                              \
            lm[ln] = (au != au || au > lm[ln]) ? au : lm[ln];                                                        \
            lc[ln] += (R)k;                                                                                          \
        }                                                                                                            \
        for (l = 0; l < 16; l++) {                                                                                   \
            acc[0][l] += (double)lg[l];                                                                              \
            acc[1][l] += (double)lu[l];                                                                              \
            acc[2][l] += (double)lp[l];                                                                              \
            acc[3][l] = ((double)lm[l] > acc[3][l] || lm[l] != lm[l]) ? (double)lm[l] : acc[3][l];                   \
            acc[4][l] += (double)lc[l];                                                                              \
        }                                                                                                            \
    }

static void ref_stats(optim_dtype pdt, size_t n, const double *p0, const double *p1, const double *g, double gclip,
                      double gscale, const unsigned char *cl, optim_step_stats *st)
{
    double tot[5] = {0, 0, 0, 0, 0};
    size_t b, c, j, l;
    for (b = 0; b < n; b += 8192) {
        double acc[5][16];
        int v;
        memset(acc, 0, sizeof acc);
        for (c = b; c < n && c < b + 8192; c += 512) {
            if (pdt == OPTIM_FLOAT64)
                REF_LANES(double, fma, fabs)
            else
                REF_LANES(float, fmaf, fabsf)
        }
        for (v = 0; v < 5; v++) {
            for (j = 8; j > 0; j /= 2)
                for (l = 0; l < j; l++)
                    acc[v][l] = v == 3 ? ((acc[v][l + j] != acc[v][l + j] || acc[v][l + j] > acc[v][l]) ? acc[v][l + j]
                                                                                                         : acc[v][l])
                                       : acc[v][l] + acc[v][l + j];
        }
        tot[0] += acc[0][0];
        tot[1] += acc[1][0];
        tot[2] += acc[2][0];
        tot[3] = (acc[3][0] != acc[3][0] || acc[3][0] > tot[3]) ? acc[3][0] : tot[3];
        tot[4] += acc[4][0];
    }
    st->grad_norm = fabs(gscale) * sqrt(tot[0]);
    st->update_rms = sqrt(tot[1] / (double)n);
    st->param_rms = sqrt(tot[2] / (double)n);
    st->update_ratio = st->update_rms / st->param_rms;
    st->update_max = tot[3];
    st->clamped_fraction = tot[4] / (double)n;
}
#undef REF_LANES

/* The same statistics in plain double (the exact differences, no lanes): the lanes' result must be within
 * rel of it (float lanes: 32 terms per lane and chunk, then double; the update rounded to float once). */
static int near_double(const optim_step_stats *st, size_t n, const double *p0, const double *p1, const double *g,
                       double gclip, const unsigned char *cl, optim_dtype pdt, double rel, const char *what)
{
    double sg = 0, su = 0, sp = 0, mx = 0, k = 0, want[6], got[6];
    size_t j;
    int v;
    static const char *names[6] = {"grad_norm", "update_rms", "param_rms", "update_ratio", "update_max",
                                   "clamped_fraction"};
    for (j = 0; j < n; j++) {
        double gi = g[j], u = p1[j] - p0[j];
        int c = cl ? cl[j] : 0;
        if (gclip > 0) {
            const double cc = pdt == OPTIM_FLOAT64 ? gclip : (double)(float)gclip;
            c |= gi > cc || gi < -cc;
            gi = gi < -cc ? -cc : gi > cc ? cc : gi;
        }
        sg += gi * gi;
        su += u * u;
        sp += p0[j] * p0[j];
        mx = fabs(u) > mx ? fabs(u) : mx;
        k += c;
    }
    want[0] = sqrt(sg);
    want[1] = sqrt(su / (double)n);
    want[2] = sqrt(sp / (double)n);
    want[3] = want[1] / want[2];
    want[4] = mx;
    want[5] = k / (double)n;
    got[0] = st->grad_norm;
    got[1] = st->update_rms;
    got[2] = st->param_rms;
    got[3] = st->update_ratio;
    got[4] = st->update_max;
    got[5] = st->clamped_fraction;
    for (v = 0; v < 6; v++)
        if (!(fabs(got[v] - want[v]) <= rel * fabs(want[v]) + (v == 5 ? 0.0 : 1e-300)))
            FAIL("%s: %s = %.17g, the double computation %.17g (relative tolerance %g)", what, names[v], got[v],
                 want[v], rel);
    return 0;
}

static int same(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* One run: rule r, storage kind, path, threads, value clipping; stats off (0), on (1), or on measured through
 * copies where the path has a fused loop instance (2: optim__stats_force_copies). Leaves the final parameters in
 * out (as doubles) and checks every step's statistics when stats is on. */
static int run(int r, const kind *kd, optim_isa isa, int threads, double gclip, int stats, uint64_t seed,
               double *out, long *checked)
{
    optim *o = NULL;
    optim_hparams hp;
    void *p[NT], *gr[NT];
    double *p0[NT], *p1[NT], *gd[NT];
    const size_t es = optim_dtype_size(kd->pdt);
    const optim_dtype gdt = kd->bf16_grad ? OPTIM_BFLOAT16 : kd->flags ? OPTIM_FLOAT32 : kd->pdt;
    test_rng rng = {seed};
    size_t i, j, off;
    int step;
    ASSERT_OK(optim_create(&o, (optim_rule)r));
    ASSERT_OK(optim_hparams_init(&hp, (optim_rule)r, NULL));
    if (optim_rule_uses((optim_rule)r, OPTIM_HP_WEIGHT_DECAY)) hp.weight_decay = 0.01;
    if (r == OPTIM_ADABOUND) hp.gamma = 0.5; /* tight bounds: some steps clamped, some not */
    if (r == OPTIM_LARS || r == OPTIM_LAMB) hp.lr = 0.01;
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    for (i = 0; i < NT; i++) {
        p[i] = calloc(sizes[i], es);
        gr[i] = calloc(sizes[i], optim_dtype_size(gdt));
        p0[i] = malloc(sizes[i] * sizeof(double));
        p1[i] = malloc(sizes[i] * sizeof(double));
        gd[i] = malloc(sizes[i] * sizeof(double));
        if (!p[i] || !gr[i] || !p0[i] || !p1[i] || !gd[i]) FAIL("out of memory");
        for (j = 0; j < sizes[i]; j++) t_set(kd->pdt, p[i], j, test_rng_normal(&rng));
        ASSERT_OPT_OK(o, optim_add_param_ex(o, 0, p[i], kd->pdt, gr[i], gdt, sizes[i],
                                            kd->sdt >= 0                ? (optim_dtype)kd->sdt
                                            : kd->pdt == OPTIM_FLOAT64 ? OPTIM_FLOAT64
                                                                        : OPTIM_FLOAT32,
                                            kd->flags, "t", NULL));
        if (r == OPTIM_ADAFACTOR) {
            /* Factored (batched, rows split across blocks and threads) and a 1 x 37 matrix. */
            static const int64_t shape0[3] = {3, 6, 1889}, shape1[2] = {1, 37};
            ASSERT_OPT_OK(o, optim_param_set_shape(o, i, i == 0 ? 3 : 2, i == 0 ? shape0 : shape1));
        }
    }
    ASSERT_OPT_OK(o, optim_set_isa(o, isa));
    ASSERT_OPT_OK(o, optim_set_threads(o, threads));
    ASSERT_OPT_OK(o, optim_set_clip_grad_value(o, gclip));
    ASSERT_OPT_OK(o, optim_set_stats(o, stats != 0));
    optim__stats_force_copies(o, stats == 2);
    for (step = 1; step <= STEPS; step++) {
        for (i = 0; i < NT; i++) {
            float *m = NULL;
            if (kd->flags) ASSERT_OPT_OK(o, optim_param_master_data(o, i, &m));
            for (j = 0; j < sizes[i]; j++) {
                t_set(gdt, gr[i], j, 0.5 * test_rng_normal(&rng) + (j % 3 == 0 ? 0.3 : 0.0));
                gd[i][j] = ld(gdt, gr[i], j);
                p0[i][j] = m ? (double)m[j] : ld(kd->pdt, p[i], j);
            }
        }
        ASSERT_OPT_OK(o, optim_step(o));
        for (i = 0; i < NT; i++) {
            optim_step_stats st, want;
            optim_hparams h;
            unsigned char *cl = NULL;
            float *m = NULL;
            char what[160];
            int k;
            if (kd->flags) ASSERT_OPT_OK(o, optim_param_master_data(o, i, &m));
            for (j = 0; j < sizes[i]; j++) p1[i][j] = m ? (double)m[j] : ld(kd->pdt, p[i], j);
            ASSERT_OPT_OK(o, optim_param_stats(o, i, &st));
            if (!stats) {
                ASSERT_INT(st.step, ==, 0);
                continue;
            }
            ASSERT_INT(st.step, ==, step);
            ASSERT_INT(st.has_elements, ==, 1);
            ASSERT_INT(st.n, ==, sizes[i]);
            ASSERT_OK(optim_group_get(o, 0, &h));
            if (r == OPTIM_ADABOUND) {
                /* The bounds' clamp, from the state the step left, in float (the compute type here) or double. */
                const double t = (double)step, fl = h.final_lr;
                const double bc1 = 1.0 - pow(h.beta1, t), bc2 = 1.0 - pow(h.beta2, t);
                const double ss = h.lr * sqrt(bc2) / bc1;
                const double lo = fl * (1.0 - 1.0 / (h.gamma * t + 1.0)), hi = fl * (1.0 + 1.0 / (h.gamma * t));
                float *v = NULL;
                cl = malloc(sizes[i]);
                if (!cl) FAIL("out of memory");
                if (kd->pdt == OPTIM_FLOAT64) {
                    void *vd;
                    optim_dtype sdt;
                    int init;
                    ASSERT_OPT_OK(o, optim_state_slot_data(o, i, 1, &vd, &sdt, &init));
                    for (j = 0; j < sizes[i]; j++) {
                        double rr = ss / (sqrt(((double *)vd)[j]) + h.eps);
                        cl[j] = rr < lo || rr > hi;
                    }
                } else {
                    int init;
                    ASSERT_OPT_OK(o, optim_state_slot(o, i, 1, &v, &init));
                    for (j = 0; j < sizes[i]; j++) {
                        float rr = (float)ss / (sqrtf(v[j]) + (float)h.eps);
                        cl[j] = rr < (float)lo || rr > (float)hi;
                    }
                }
            }
            want = st;
            ref_stats(kd->pdt, sizes[i], p0[i], p1[i], gd[i], gclip, 1.0, cl, &want);
            /* Within a stated tolerance of plain double sums: float lanes 1e-5 relative (32 terms per lane and
             * chunk; an update that float cannot hold exactly rounds once), double lanes 1e-12. */
            snprintf(what, sizeof what, "%s %s %s %d threads clip %g step %d tensor %zu", optim_rule_name((optim_rule)r),
                     kd->name, optim_isa_name(isa), threads, gclip, step, i);
            k = near_double(&st, sizes[i], p0[i], p1[i], gd[i], gclip, cl, kd->pdt,
                            kd->pdt == OPTIM_FLOAT64 ? 1e-12 : 1e-5, what);
            free(cl);
            if (k) return 1;
#define CHECK(f)                                                                                                     \
    if (!same(st.f, want.f))                                                                                         \
        FAIL("%s %s %s %d threads clip %g step %d tensor %zu (%s): " #f " = %.17g, the lanes' reference %.17g",     \
             optim_rule_name((optim_rule)r), kd->name, optim_isa_name(isa), threads, gclip, step, i,                  \
             stats == 2 ? "through copies" : "fused where the path has it", st.f, want.f);
            CHECK(grad_norm)
            CHECK(update_rms)
            CHECK(param_rms)
            CHECK(update_ratio)
            CHECK(update_max)
            CHECK(clamped_fraction)
#undef CHECK
            if (r == OPTIM_ADABOUND && i == 0 && step == 1 && !(st.clamped_fraction > 0))
                FAIL("adabound: no element clamped at step 1 with gamma 0.5 (fraction %g)", st.clamped_fraction);
            if (r == OPTIM_RADAM) ASSERT_INT(st.rectified, ==, step > 5); /* rho_t > 5 from step 6 with beta2 0.999 */
            else ASSERT_INT(st.rectified, ==, -1);
            if (r == OPTIM_LAMB || r == OPTIM_LARS) {
                if (!(st.trust_ratio > 0 && st.trust_ratio != 1.0)) FAIL("trust ratio %g", st.trust_ratio);
            } else if (!isnan(st.trust_ratio)) FAIL("%s: trust ratio %g", optim_rule_name((optim_rule)r), st.trust_ratio);
            if (r == OPTIM_SGD && !same(st.effective_lr, h.lr)) FAIL("sgd effective_lr %g", st.effective_lr);
            if (r == OPTIM_ADAM) {
                const double e = h.lr / (1.0 - pow(h.beta1, step)) * sqrt(1.0 - pow(h.beta2, step));
                if (!same(st.effective_lr, e)) FAIL("adam effective_lr %.17g vs %.17g", st.effective_lr, e);
            }
            if (r == OPTIM_ADAFACTOR) {
                /* effective_lr = alpha / denom: alpha = max(eps2, RMS(p0)) * min(lr, 1/sqrt(t)), denom =
                 * max(1, RMS(u) / d), the update u = (p0 * decay - p1) / effective_lr. So alpha /
                 * effective_lr = max(1, RMS(p0 * decay - p1) / (effective_lr d)). */
                const double decay = 1.0 - h.lr * h.weight_decay, rho = fmin(h.lr, 1.0 / sqrt((double)step));
                double psq = 0, dsq = 0, alpha, drms, want_denom;
                for (j = 0; j < sizes[i]; j++) {
                    const double dd = p0[i][j] * decay - p1[i][j];
                    psq += p0[i][j] * p0[i][j];
                    dsq += dd * dd;
                }
                alpha = fmax(h.eps2, sqrt(psq / (double)sizes[i])) * rho;
                drms = sqrt(dsq / (double)sizes[i]);
                want_denom = fmax(1.0, drms / (st.effective_lr * h.clip_threshold));
                if (!(fabs(alpha / st.effective_lr - want_denom) <= 1e-3 * want_denom))
                    FAIL("adafactor %s step %d tensor %zu: effective_lr %.17g, alpha %.17g, denom %.17g (want %.17g)",
                         kd->name, step, i, st.effective_lr, alpha, alpha / st.effective_lr, want_denom);
            }
            if (r == OPTIM_RPROP) ASSERT(isnan(st.effective_lr));
            else ASSERT(st.effective_lr > 0);
            (*checked)++;
        }
    }
    /* The final parameters and every state slot, as doubles, for the on/off comparison. */
    off = 0;
    for (i = 0; i < NT; i++) {
        int s;
        for (j = 0; j < sizes[i]; j++) out[off++] = ld(kd->pdt, p[i], j);
        for (s = 0; s < optim_rule_slot_count((optim_rule)r); s++) {
            void *sd;
            optim_dtype sdt;
            int init;
            size_t len = 0; /* sizes[i], but for Adafactor's factors (fewer; zeros after them) */
            if (optim_state_slot_data(o, i, s, &sd, &sdt, &init) != OPTIM_OK || !sd ||
                optim_state_slot_len(o, i, s, &len) != OPTIM_OK) {
                for (j = 0; j < sizes[i]; j++) out[off++] = 0;
                continue;
            }
            if (sdt == OPTIM_INT8_BLOCK) {
                /* 8-bit codes: compared dequantized (bit-identical codes and scales give identical floats). */
                float *f = malloc(len * sizeof *f);
                if (!f) FAIL("out of memory");
                ASSERT_OPT_OK(o, optim_state_slot_read_f32(o, i, s, f));
                for (j = 0; j < sizes[i]; j++) out[off++] = j < len ? (double)f[j] : 0;
                free(f);
                continue;
            }
            for (j = 0; j < sizes[i]; j++) out[off++] = j < len ? ld(sdt, sd, j) : 0;
        }
    }
    for (i = 0; i < NT; i++) {
        free(p[i]);
        free(gr[i]);
        free(p0[i]);
        free(p1[i]);
        free(gd[i]);
    }
    optim_free(o);
    return 0;
}

TEST_IMPL(stats_exact_every_path)
{
    static const optim_isa isas[] = {OPTIM_ISA_SCALAR, OPTIM_ISA_AVX2, OPTIM_ISA_AVX512};
    const size_t total = (sizes[0] + sizes[1]) * (1 + OPTIM_MAX_SLOTS);
    double *off = malloc(total * sizeof(double)), *on = malloc(total * sizeof(double));
    uint64_t seed = test_seed();
    long checked = 0;
    int r;
    size_t k, a;
    if (!off || !on) FAIL("out of memory");
    printf("  seed %" PRIu64 "\n", seed);
    for (r = 1; r <= OPTIM_RULE_COUNT; r++) {
        if (!test_rule_dense(r)) continue;
        /* Under AddressSanitizer (scripts/sanitize.sh), every T_SAMPLE-th rule: the memory checks of the same code. */
        if (T_SAMPLE > 1 && r % T_SAMPLE != 1 && r != OPTIM_ADABOUND) continue;
        /* float32 for every rule, one other storage kind in turn (each kind for four or five rules) and, for every
         * other rule, one of the state kinds in turn (each for three or four rules; not AdaBound, whose clamp
         * reference reads the stored state as float32). */
        for (k = 0; k < N_KINDS; k++) {
            const int clip = (int)((k + (size_t)r) % 2);
            const double gclip = clip ? 0.4 : 0.0;
            const uint64_t sd = seed ^ ((uint64_t)r << 16) ^ k;
            /* Adafactor (float32 and float64 memory only): float64 as its other kind. */
            if (k >= N_KINDS - N_STATE_KINDS) {
                if (!test_rule_any_type(r) || r == OPTIM_ADABOUND || r % 2 != 0 ||
                    k != N_KINDS - N_STATE_KINDS + (size_t)(r / 2) % N_STATE_KINDS)
                    continue;
            } else if (k != 0 && k != (test_rule_any_type(r) ? 1 + (size_t)r % 4 : 1))
                continue;
            if (run(r, &kinds[k], OPTIM_ISA_SCALAR, 1, gclip, 0, sd, off, &checked)) return 1;
            for (a = 0; a <= sizeof isas / sizeof isas[0]; a++) {
                /* Every path on one thread; the default path on two (a tensor split at a block boundary). */
                const optim_isa isa = a < sizeof isas / sizeof isas[0] ? isas[a] : optim_isa_default();
                const int th = a < sizeof isas / sizeof isas[0] ? 1 : 2;
                if (!optim_isa_available(isa)) continue;
                /* mode 1: the fused loops where the path has them (float32 compute on AVX2 and AVX-512);
                 * mode 2 there: the same steps measured through copies. Both bit for bit against the lanes. */
                const int fused = (kinds[k].pdt == OPTIM_FLOAT32 || kinds[k].flags) && isa != OPTIM_ISA_SCALAR &&
                                  th == 1;
                int mode;
                for (mode = 1; mode <= (fused ? 2 : 1); mode++) {
                    if (run(r, &kinds[k], isa, th, gclip, mode, sd, on, &checked)) return 1;
                    if (memcmp(on, off, total * sizeof(double)) != 0)
                        FAIL("%s %s %s %d threads%s: statistics on changed a parameter or state bit",
                             optim_rule_name((optim_rule)r), kinds[k].name, optim_isa_name(isa), th,
                             mode == 2 ? " (through copies)" : "");
                }
            }
        }
    }
    printf("  %ld tensor-steps: statistics bit for bit against the lanes' reference and within tolerance of double sums; parameters and state equal to "
           "steps without statistics\n",
           checked);
    free(off);
    free(on);
    return 0;
}

TEST_IMPL(stats_api)
{
    optim *o = NULL;
    float p[40], g[40];
    optim_step_stats st;
    size_t j;
    for (j = 0; j < 40; j++) {
        p[j] = (float)j * 0.1f;
        g[j] = 1.0f;
    }
    optim_hparams hp;
    ASSERT_OK(optim_create(&o, OPTIM_SGD));
    ASSERT_OK(optim_hparams_init(&hp, OPTIM_SGD, NULL));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_INT(optim_stats_enabled(o), ==, 0);
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p, g, 40, "w", NULL));
    ASSERT_ERR(optim_set_stats(o, 2), OPTIM_EINVAL, optim_errmsg(o), "on = 2");
    ASSERT_ERR(optim_param_stats(o, 1, &st), OPTIM_ERANGE, optim_errmsg(o), "index = 1");
    ASSERT_ERR(optim_param_stats(o, 0, NULL), OPTIM_ENULL, optim_errmsg(o), "out");
    ASSERT_OPT_OK(o, optim_step(o));
    ASSERT_OPT_OK(o, optim_param_stats(o, 0, &st));
    ASSERT_INT(st.step, ==, 0); /* off: nothing recorded */
    ASSERT_OPT_OK(o, optim_set_stats(o, 1));
    ASSERT_INT(optim_stats_enabled(o), ==, 1);
    ASSERT_OPT_OK(o, optim_step(o));
    ASSERT_OPT_OK(o, optim_param_stats(o, 0, &st));
    ASSERT_INT(st.step, ==, 2);
    ASSERT(fabs(st.grad_norm - sqrt(40.0)) < 1e-12);
    ASSERT(fabs(st.update_max - hp.lr) < 1e-6 * hp.lr + 1e-6);
    ASSERT(st.effective_lr == hp.lr);
    /* Loss scaling: the norm of the unscaled gradient. */
    {
        optim_loss_scale ls;
        optim_loss_scale_defaults(&ls);
        ls.mode = OPTIM_LOSS_SCALE_STATIC;
        ls.init_scale = 1024.0;
        ASSERT_OPT_OK(o, optim_set_loss_scale(o, &ls));
        for (j = 0; j < 40; j++) g[j] = 1024.0f;
        ASSERT_OPT_OK(o, optim_step(o));
        ASSERT_OPT_OK(o, optim_param_stats(o, 0, &st));
        ASSERT(fabs(st.grad_norm - sqrt(40.0)) < 1e-12);
        ASSERT_OPT_OK(o, optim_set_loss_scale(o, NULL));
    }
    /* A skipped step (non-finite gradient under SKIP) leaves no record. */
    ASSERT_OPT_OK(o, optim_set_nonfinite(o, OPTIM_NONFINITE_SKIP));
    g[3] = NAN;
    ASSERT_OPT_OK(o, optim_step(o));
    ASSERT_OPT_OK(o, optim_param_stats(o, 0, &st));
    ASSERT_INT(st.step, ==, 0);
    ASSERT_INT(optim_set_stats(NULL, 1), ==, OPTIM_ENULL);
    optim_free(o);
    return 0;
}

/* Every way a step is skipped leaves no record (out.step == 0), whichever
 * entry point skipped it: the non-finite policy, dynamic loss scaling's
 * overflow, and SAM's second step after a first step that skipped; and the
 * schedule-free train/eval switch is no step: the records stay those of the
 * last step. */
TEST_IMPL(stats_skipped_steps)
{
    optim *o = NULL;
    optim_sam *s = NULL;
    optim_hparams hp;
    optim_step_stats st, st2;
    float p[40], g[40];
    size_t j;
    for (j = 0; j < 40; j++) {
        p[j] = (float)j * 0.1f;
        g[j] = 1.0f;
    }
    ASSERT_OK(optim_create(&o, OPTIM_SGD));
    ASSERT_OK(optim_hparams_init(&hp, OPTIM_SGD, NULL));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p, g, 40, "w", NULL));
    ASSERT_OPT_OK(o, optim_set_stats(o, 1));
    ASSERT_OPT_OK(o, optim_set_nonfinite(o, OPTIM_NONFINITE_SKIP));
    ASSERT_OK(optim_sam_create(&s, o, 0.05, 2.0, 0, 0.0, NULL));
    ASSERT_OK_MSG(optim_sam_first_step(s), optim_sam_errmsg(s));
    ASSERT_OK_MSG(optim_sam_second_step(s), optim_sam_errmsg(s));
    ASSERT_OPT_OK(o, optim_param_stats(o, 0, &st));
    ASSERT_INT(st.step, ==, 1);
    g[3] = NAN; /* SAM's first step skips, so does the whole SAM step */
    ASSERT_OK_MSG(optim_sam_first_step(s), optim_sam_errmsg(s));
    ASSERT_OK_MSG(optim_sam_second_step(s), optim_sam_errmsg(s));
    ASSERT_INT(optim_last_step_skipped(o), ==, 1);
    ASSERT_OPT_OK(o, optim_param_stats(o, 0, &st));
    ASSERT_INT(st.step, ==, 0);
    g[3] = 1.0f;
    ASSERT_OK_MSG(optim_sam_first_step(s), optim_sam_errmsg(s));
    ASSERT_OK_MSG(optim_sam_second_step(s), optim_sam_errmsg(s));
    ASSERT_OPT_OK(o, optim_param_stats(o, 0, &st));
    ASSERT_INT(st.step, ==, 2);
    optim_sam_free(s);
    { /* dynamic loss scaling's overflow */
        optim_loss_scale ls;
        optim_loss_scale_defaults(&ls);
        ls.mode = OPTIM_LOSS_SCALE_DYNAMIC;
        ASSERT_OPT_OK(o, optim_set_loss_scale(o, &ls));
        g[5] = INFINITY;
        ASSERT_OPT_OK(o, optim_step(o));
        ASSERT_INT(optim_last_step_skipped(o), ==, 1);
        ASSERT_OPT_OK(o, optim_param_stats(o, 0, &st));
        ASSERT_INT(st.step, ==, 0);
    }
    optim_free(o);

    /* The schedule-free switch: records and counters untouched. */
    ASSERT_OK(optim_create(&o, OPTIM_ADAMW_SCHEDULE_FREE));
    ASSERT_OK(optim_hparams_init(&hp, OPTIM_ADAMW_SCHEDULE_FREE, NULL));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    for (j = 0; j < 40; j++) g[j] = 0.5f - (float)j * 0.02f;
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p, g, 40, "w", NULL));
    ASSERT_OPT_OK(o, optim_set_stats(o, 1));
    ASSERT_OPT_OK(o, optim_step(o));
    ASSERT_OPT_OK(o, optim_step(o));
    ASSERT_OPT_OK(o, optim_param_stats(o, 0, &st));
    ASSERT_INT(st.step, ==, 2);
    ASSERT_OPT_OK(o, optim_schedule_free_eval(o));
    ASSERT_OPT_OK(o, optim_param_stats(o, 0, &st2));
    ASSERT(st2.step == 2 && st2.update_rms == st.update_rms && st2.update_max == st.update_max);
    ASSERT_OPT_OK(o, optim_schedule_free_train(o));
    ASSERT_OPT_OK(o, optim_param_stats(o, 0, &st2));
    ASSERT_INT(st2.step, ==, 2);
    ASSERT(st2.update_rms == st.update_rms && st2.update_max == st.update_max && st2.n == st.n);
    ASSERT_INT(optim_step_count(o), ==, 2);
    optim_free(o);
    return 0;
}

/* A complex parameter (n / 2 complex numbers as (re, im) pairs) is measured per complex element: numel counts
 * complex elements, the RMS values are sqrt(sum |z|^2 / numel); the clamped fraction is of real and imaginary
 * parts. RAdam and NAdam (the rules with complex arithmetic; their complex loops are measured through copies), every
 * path. */
TEST_IMPL(stats_complex)
{
    static const int rules[2] = {OPTIM_RADAM, OPTIM_NADAM};
    static const optim_isa isas[] = {OPTIM_ISA_SCALAR, OPTIM_ISA_AVX2, OPTIM_ISA_AVX512};
    enum { N = 2 * 301 };
    int r, a;
    for (r = 0; r < 2; r++)
        for (a = 0; a < 3; a++) {
            optim *o = NULL;
            optim_hparams hp;
            float p[N], g[N], p0[N];
            optim_step_stats st;
            double su = 0, sp = 0, sg = 0, clamped = 0;
            size_t j;
            if (!optim_isa_available(isas[a])) continue;
            for (j = 0; j < N; j++) {
                p[j] = (float)(0.5 + 0.01 * (double)(j % 17));
                g[j] = (float)(0.05 * ((double)(j % 11) - 5.0));
            }
            ASSERT_OK(optim_create(&o, (optim_rule)rules[r]));
            ASSERT_OK(optim_hparams_init(&hp, (optim_rule)rules[r], NULL));
            ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
            ASSERT_OPT_OK(o, optim_add_param_ex(o, 0, p, OPTIM_FLOAT32, g, OPTIM_FLOAT32, N, OPTIM_FLOAT32,
                                                OPTIM_PARAM_COMPLEX, "z", NULL));
            ASSERT_OPT_OK(o, optim_set_isa(o, isas[a]));
            ASSERT_OPT_OK(o, optim_set_clip_grad_value(o, 0.2));
            ASSERT_OPT_OK(o, optim_set_stats(o, 1));
            memcpy(p0, p, sizeof p);
            ASSERT_OPT_OK(o, optim_step(o));
            ASSERT_OPT_OK(o, optim_param_stats(o, 0, &st));
            for (j = 0; j < N; j++) {
                const double u = (double)p[j] - (double)p0[j];
                const double gc = g[j] > 0.2f ? (double)0.2f : g[j] < -0.2f ? -(double)0.2f : (double)g[j];
                su += u * u;
                sp += (double)p0[j] * (double)p0[j];
                sg += gc * gc;
                clamped += g[j] > 0.2f || g[j] < -0.2f;
            }
            ASSERT_INT(st.n, ==, N / 2);
            if (!(fabs(st.update_rms - sqrt(su / (N / 2))) <= 1e-5 * sqrt(su / (N / 2))) ||
                !(fabs(st.param_rms - sqrt(sp / (N / 2))) <= 1e-5 * sqrt(sp / (N / 2))) ||
                !(fabs(st.grad_norm - sqrt(sg)) <= 1e-5 * sqrt(sg)) || st.clamped_fraction != clamped / N)
                FAIL("%s %s complex: numel %zu update_rms %.9g (%.9g) param_rms %.9g (%.9g) grad_norm %.9g (%.9g) "
                     "clamped %.9g (%.9g)",
                     optim_rule_name((optim_rule)rules[r]), optim_isa_name(isas[a]), st.n, st.update_rms,
                     sqrt(su / (N / 2)), st.param_rms, sqrt(sp / (N / 2)), st.grad_norm, sqrt(sg),
                     st.clamped_fraction, clamped / N);
            optim_free(o);
        }
    return 0;
}

/* ---- The fused loops' shapes: every length against the scalar path ------------------------------------------ */

/* Lengths for the fused loops (kernels_math.h's OPTIM__SLOOP_DEF: blocks of four groups of 16, single groups where
 * less than a block remains before a chunk's end, lanes flushed per chunk of 512; a range's last n % 16 through
 * copies): below a group, one group, groups only, one block, a block and one or three groups, whole chunks, a chunk
 * and a group, a block of 8192 exactly and with a group or a partial chunk after it, three blocks with a partial
 * chunk of blocks, groups and a tail (two threads split it). FL_RANDOM more (below 2048: every shape of a last
 * chunk) are drawn from the seed. */
static const size_t fl_fixed[] = {1,   15,  16,   48,   64,   80,          112,         3 * 64 + 16 + 5,
                                  496, 511, 512,  528,  560,  1024 + 112 + 3, 8192,      8192 + 16,
                                  8192 + 1234,    2 * 8192 + 512 + 5 * 64 + 3 * 16 + 9};
#define FL_FIXED (sizeof fl_fixed / sizeof fl_fixed[0])
#define FL_RANDOM 3
#define FL_NT (FL_FIXED + FL_RANDOM)
#define FL_STEPS 3

/* One run of rule r over tensors of lengths len (kind kd, path isa, threads, value clipping gclip); stats off (0),
 * on (1) or on through copies (2); with an EMA of the weights when ema. The final parameters (and masters) in pout,
 * every step's statistics of every tensor in sout[step * FL_NT + i]. 0, 1 with a message, or 2 where the rule
 * has no EMA (nothing run). */
static int fl_run(int r, const kind *kd, const size_t *len, optim_isa isa, int threads, double gclip, int stats,
                  int ema, uint64_t seed, double *pout, optim_step_stats *sout)
{
    optim *o = NULL;
    optim_hparams hp;
    void *p[FL_NT], *gr[FL_NT];
    const size_t es = optim_dtype_size(kd->pdt);
    const optim_dtype gdt = kd->bf16_grad ? OPTIM_BFLOAT16 : kd->flags ? OPTIM_FLOAT32 : kd->pdt;
    test_rng rng = {seed};
    size_t i, j, off = 0;
    int step;
    ASSERT_OK(optim_create(&o, (optim_rule)r));
    ASSERT_OK(optim_hparams_init(&hp, (optim_rule)r, NULL));
    if (optim_rule_uses((optim_rule)r, OPTIM_HP_WEIGHT_DECAY)) hp.weight_decay = 0.01;
    if (r == OPTIM_ADABOUND) hp.gamma = 0.5;
    if (r == OPTIM_LARS || r == OPTIM_LAMB) hp.lr = 0.01;
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    for (i = 0; i < FL_NT; i++) {
        p[i] = calloc(len[i], es);
        gr[i] = calloc(len[i], optim_dtype_size(gdt));
        if (!p[i] || !gr[i]) FAIL("out of memory");
        for (j = 0; j < len[i]; j++) t_set(kd->pdt, p[i], j, test_rng_normal(&rng));
        ASSERT_OPT_OK(o, optim_add_param_ex(o, 0, p[i], kd->pdt, gr[i], gdt, len[i],
                                            kd->sdt >= 0 ? (optim_dtype)kd->sdt : OPTIM_FLOAT32, kd->flags, "t",
                                            NULL));
    }
    ASSERT_OPT_OK(o, optim_set_isa(o, isa));
    ASSERT_OPT_OK(o, optim_set_threads(o, threads));
    ASSERT_OPT_OK(o, optim_set_clip_grad_value(o, gclip));
    ASSERT_OPT_OK(o, optim_set_stats(o, stats != 0));
    if (ema && optim_set_ema(o, 0.9, 0) != OPTIM_OK) {
        /* Not for every rule (schedule-free averages already): 2, no run. */
        for (i = 0; i < FL_NT; i++) {
            free(p[i]);
            free(gr[i]);
        }
        optim_free(o);
        return 2;
    }
    optim__stats_force_copies(o, stats == 2);
    for (step = 0; step < FL_STEPS; step++) {
        for (i = 0; i < FL_NT; i++)
            for (j = 0; j < len[i]; j++) t_set(gdt, gr[i], j, 0.5 * test_rng_normal(&rng) + (j % 3 == 0 ? 0.3 : 0.0));
        ASSERT_OPT_OK(o, optim_step(o));
        for (i = 0; i < FL_NT; i++) ASSERT_OPT_OK(o, optim_param_stats(o, i, &sout[step * FL_NT + i]));
    }
    for (i = 0; i < FL_NT; i++) {
        float *m = NULL;
        if (kd->flags) ASSERT_OPT_OK(o, optim_param_master_data(o, i, &m));
        for (j = 0; j < len[i]; j++) {
            pout[off++] = ld(kd->pdt, p[i], j);
            if (m) pout[off++] = (double)m[j];
        }
        free(p[i]);
        free(gr[i]);
    }
    optim_free(o);
    return 0;
}

/* 1 when the two records are the same bits (NaN included). */
static int fl_same_stats(const optim_step_stats *a, const optim_step_stats *b)
{
    const double x[8] = {a->grad_norm,  a->update_rms,       a->param_rms,    a->update_ratio,
                         a->update_max, a->clamped_fraction, a->effective_lr, a->trust_ratio};
    const double y[8] = {b->grad_norm,  b->update_rms,       b->param_rms,    b->update_ratio,
                         b->update_max, b->clamped_fraction, b->effective_lr, b->trust_ratio};
    return a->step == b->step && a->has_elements == b->has_elements && a->n == b->n &&
           a->rectified == b->rectified && memcmp(x, y, sizeof x) == 0;
}

/* The fused loops at every shape of their call (fl_fixed's lengths and FL_RANDOM drawn ones, every one a tensor
 * of one step): float32 in place for every rule and, by turns, bfloat16 masters (with float32 and with bfloat16
 * gradients) or float32 with bfloat16 state (the fused loop chunk by chunk); value clipping on and off; the fused loops of every vector path
 * and their copies, the default path on two threads, and with an EMA of the weights: every statistic of every
 * step bit for bit as the scalar path's (measured through copies), and every parameter as without statistics. */
TEST_IMPL(stats_fused_lengths)
{
    static const optim_isa isas[] = {OPTIM_ISA_AVX2, OPTIM_ISA_AVX512};
    static const size_t kds[] = {0, 3, 4, 5}; /* kinds[]: float32, masters, masters with bfloat16 gradients, bfloat16 state */
    const uint64_t seed = test_seed();
    test_rng lr = {seed ^ 0x51};
    size_t len[FL_NT], total = 0, i, k;
    double *ref, *got;
    optim_step_stats *sref, *sgot;
    long runs = 0;
    int r;
    printf("  seed %" PRIu64 "\n", seed);
    for (i = 0; i < FL_NT; i++) {
        len[i] = i < FL_FIXED ? fl_fixed[i] : 1 + (size_t)(test_rng_u64(&lr) % 2048);
        total += 2 * len[i];
    }
    printf("  random lengths:");
    for (i = FL_FIXED; i < FL_NT; i++) printf(" %zu", len[i]);
    printf("\n");
    ref = malloc(total * sizeof *ref);
    got = malloc(total * sizeof *got);
    sref = malloc(FL_STEPS * FL_NT * sizeof *sref);
    sgot = malloc(FL_STEPS * FL_NT * sizeof *sgot);
    if (!ref || !got || !sref || !sgot) FAIL("out of memory");
    for (r = 1; r <= OPTIM_RULE_COUNT; r++) {
        if (!test_rule_dense(r)) continue;
        if (T_SAMPLE > 1 && r % T_SAMPLE != 1) continue;
        for (k = 0; k < sizeof kds / sizeof kds[0]; k++) {
            const kind *kd = &kinds[kds[k]];
            int clip;
            /* float32 for every rule, one other kind in turn */
            if (k != 0 && (!test_rule_any_type(r) || k != 1 + (size_t)r % 3)) continue;
            for (clip = 0; clip < 2; clip++) {
                const double gclip = clip ? 0.4 : 0.0;
                const uint64_t sd = seed ^ ((uint64_t)r << 16) ^ (k << 4) ^ (uint64_t)clip;
                size_t a;
                int mode;
                memset(ref, 0, total * sizeof *ref);
                if (fl_run(r, kd, len, OPTIM_ISA_SCALAR, 1, gclip, 1, 0, sd, ref, sref)) return 1;
                /* a: 0 the scalar path without statistics; 1..4 the vector paths, fused and through copies; 5 the
                 * default path on two threads; 6 the same under an EMA of the weights. */
                for (a = 0; a < 7; a++) {
                    const optim_isa isa = a == 0 ? OPTIM_ISA_SCALAR : a <= 4 ? isas[(a - 1) / 2] : optim_isa_default();
                    const int threads = a >= 5 ? 2 : 1, ema = a == 6;
                    char what[200];
                    size_t t;
                    int rc;
                    mode = a == 0 ? 0 : a <= 4 ? 1 + (int)((a - 1) % 2) : 1;
                    if (!optim_isa_available(isa)) continue;
                    memset(got, 0, total * sizeof *got);
                    rc = fl_run(r, kd, len, isa, threads, gclip, mode, ema, sd, got, sgot);
                    if (rc == 2) continue;
                    if (rc) return 1;
                    runs++;
                    snprintf(what, sizeof what, "%s %s%s, %s %d thread%s%s%s", optim_rule_name((optim_rule)r),
                             kd->name, clip ? ", value clipping" : "", optim_isa_name(isa), threads,
                             threads > 1 ? "s" : "", mode == 0 ? ", statistics off" : mode == 2 ? ", through copies" : "",
                             ema ? ", EMA" : "");
                    if (memcmp(got, ref, total * sizeof *ref) != 0) FAIL("%s: a parameter bit differs (seed %" PRIu64 ")", what, seed);
                    if (mode == 0) continue;
                    for (t = 0; t < FL_STEPS * FL_NT; t++)
                        if (!fl_same_stats(&sgot[t], &sref[t]))
                            FAIL("%s, step %zu, tensor of %zu elements: statistics differ from the scalar path's "
                                 "(update_rms %.17g vs %.17g, grad_norm %.17g vs %.17g, update_max %.17g vs %.17g; "
                                 "seed %" PRIu64 ")",
                                 what, t / FL_NT + 1, len[t % FL_NT], sgot[t].update_rms, sref[t].update_rms,
                                 sgot[t].grad_norm, sref[t].grad_norm, sgot[t].update_max, sref[t].update_max, seed);
                }
            }
        }
    }
    printf("  %ld runs of %zu tensors x %d steps: statistics and parameters bit for bit against the scalar path\n",
           runs, (size_t)FL_NT, FL_STEPS);
    free(ref);
    free(got);
    free(sref);
    free(sgot);
    return 0;
}
