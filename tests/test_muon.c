/* test_muon.c: rule OPTIM_MUON with liboptim_muon (optim_muon_tests).
 *
 * The reference is this file's own: Muon in double, written from torch 2.9's
 * _single_tensor_muon and Keller Jordan's zeropower_via_newtonschulz5 (an
 * explicit transpose when rows > cols, as both do; the library instead runs
 * the transposed iteration without transposing), with a plain triple-loop
 * matrix product and its own state (momentum buffer). Before every step the
 * library's float parameters and buffer are copied into it, so each step of
 * float32 arithmetic is compared with the same step in double. */
#include "test.h"
#include "optim_checkpoint.h"
#include "optim_muon.h"
#include "optim_stats.h"

#include <cblas.h>

#define MU_STEPS 300

typedef struct mshape {
    size_t r, c;
} mshape;

/* square, tall, wide, odd both ways, a row and a column vector */
static const mshape mshapes[] = {{16, 16}, {24, 8}, {8, 24}, {7, 13}, {13, 7}, {1, 9}, {9, 1}};
#define MU_NSHAPES (sizeof mshapes / sizeof mshapes[0])

/* ---- The float64 reference ------------------------------------------------------------------ */

static double ref_lerp(double s, double e, double w)
{
    return fabs(w) < 0.5 ? s + w * (e - s) : e - (e - s) * (1.0 - w);
}

/* c (n x m) = a (n x k) b (k x m), row-major. */
static void ref_matmul(double *c, const double *a, const double *b, size_t n, size_t k, size_t m)
{
    size_t i, j, l;
    for (i = 0; i < n; i++)
        for (j = 0; j < m; j++) {
            double s = 0;
            for (l = 0; l < k; l++) s += a[i * k + l] * b[l * m + j];
            c[i * m + j] = s;
        }
}

static void ref_transpose(double *t, const double *x, size_t r, size_t c)
{
    size_t i, j;
    for (i = 0; i < r; i++)
        for (j = 0; j < c; j++) t[j * r + i] = x[i * c + j];
}

/* Newton-Schulz as the references write it: X (r x c) normalised, transposed when r > c. */
static void ref_ns(double *x, size_t r, size_t c, const optim_hparams *hp)
{
    const size_t n = r * c, rr = r > c ? c : r, cc = r > c ? r : c;
    double *xt = malloc(n * sizeof *xt), *a = malloc(rr * rr * sizeof *a), *aa = malloc(rr * rr * sizeof *aa);
    double *bx = malloc(n * sizeof *bx), nrm = 0;
    size_t i, k;
    int it;
    for (i = 0; i < n; i++) nrm += x[i] * x[i];
    nrm = sqrt(nrm);
    if (nrm < hp->eps) nrm = hp->eps; /* torch: norm().clamp(min=eps) */
    if (r > c)
        ref_transpose(xt, x, r, c);
    else
        memcpy(xt, x, n * sizeof *xt);
    for (i = 0; i < n; i++) xt[i] /= nrm;
    for (it = 0; it < hp->ns_steps; it++) {
        double *xtt = malloc(n * sizeof *xtt);
        ref_transpose(xtt, xt, rr, cc);
        ref_matmul(a, xt, xtt, rr, cc, rr);
        ref_matmul(aa, a, a, rr, rr, rr);
        for (k = 0; k < rr * rr; k++) aa[k] = hp->ns_b * a[k] + hp->ns_c * aa[k];
        ref_matmul(bx, aa, xt, rr, rr, cc);
        for (k = 0; k < n; k++) xt[k] = hp->ns_a * xt[k] + bx[k];
        free(xtt);
    }
    if (r > c)
        ref_transpose(x, xt, rr, cc);
    else
        memcpy(x, xt, n * sizeof *x);
    free(xt);
    free(a);
    free(aa);
    free(bx);
}

/* One step of torch's _single_tensor_muon in double on p, buf (r x c) with gradient g. */
static void ref_step(const optim_hparams *hp, double *p, double *buf, const float *g, size_t r, size_t c)
{
    const size_t n = r * c;
    double *u = malloc((n ? n : 1) * sizeof *u), adj;
    size_t i;
    for (i = 0; i < n; i++) {
        buf[i] = ref_lerp(buf[i], g[i], 1.0 - hp->momentum);
        u[i] = hp->nesterov ? ref_lerp(g[i], buf[i], hp->momentum) : buf[i];
    }
    ref_ns(u, r, c, hp);
    if (hp->adjust_lr == OPTIM_MUON_ADJUST_MATCH_RMS_ADAMW)
        adj = hp->lr * 0.2 * sqrt((double)(r > c ? r : c));
    else
        adj = hp->lr * sqrt((double)r / (double)c > 1 ? (double)r / (double)c : 1.0);
    for (i = 0; i < n; i++) p[i] = p[i] * (1.0 - hp->lr * hp->weight_decay) - adj * u[i];
    free(u);
}

/* ---- Helpers ---------------------------------------------------------------------------------- */

typedef struct mrun {
    optim *o;
    float *p[MU_NSHAPES], *g[MU_NSHAPES];
} mrun;

static int mrun_make(mrun *m, const optim_hparams *hp, test_rng *rng, optim_isa isa, int threads)
{
    size_t i, j;
    memset(m, 0, sizeof *m);
    ASSERT_OK(optim_create(&m->o, OPTIM_MUON));
    ASSERT_OPT_OK(m->o, optim_muon_attach(m->o));
    ASSERT_OPT_OK(m->o, optim_add_group(m->o, hp, NULL));
    ASSERT_OPT_OK(m->o, optim_set_isa(m->o, isa));
    ASSERT_OPT_OK(m->o, optim_set_threads(m->o, threads));
    for (i = 0; i < MU_NSHAPES; i++) {
        const size_t n = mshapes[i].r * mshapes[i].c;
        const int64_t dims[2] = {(int64_t)mshapes[i].r, (int64_t)mshapes[i].c};
        m->p[i] = malloc(n * sizeof(float));
        m->g[i] = malloc(n * sizeof(float));
        for (j = 0; j < n; j++) m->p[i][j] = (float)test_rng_normal(rng) * 0.5f;
        ASSERT_OPT_OK(m->o, optim_add_param(m->o, 0, m->p[i], m->g[i], n, NULL, NULL));
        ASSERT_OPT_OK(m->o, optim_param_set_shape(m->o, i, 2, dims));
    }
    return 0;
}

static void mrun_free(mrun *m)
{
    size_t i;
    optim_free(m->o);
    for (i = 0; i < MU_NSHAPES; i++) {
        free(m->p[i]);
        free(m->g[i]);
    }
}

/* Gradients of a noisy quadratic pulling p towards 0.3, so that the buffer and the parameters move. */
static void mrun_grads(mrun *m, test_rng *rng)
{
    size_t i, j;
    for (i = 0; i < MU_NSHAPES; i++)
        for (j = 0; j < mshapes[i].r * mshapes[i].c; j++)
            m->g[i][j] = (m->p[i][j] - 0.3f) + (float)test_rng_normal(rng) * 0.1f;
}

static float *slot0(optim *o, size_t i)
{
    void *d = NULL;
    optim_dtype dt;
    if (optim_state_slot_data(o, i, 0, &d, &dt, NULL) != OPTIM_OK) return NULL;
    return (float *)d;
}

/* The options each axis takes: nesterov, momentum (0.95; 0.3: torch's other lerp forms), weight decay,
 * adjust_lr, ns_steps, coefficients (Keller's; a convergent cubic-like set), eps (a huge eps makes the
 * clamp of the norm act). */
static void mu_options(long c, optim_hparams *hp)
{
    optim_hparams_init(hp, OPTIM_MUON, NULL);
    hp->lr = 0.02;
    hp->nesterov = (int)(c % 2);
    hp->momentum = (c / 2) % 2 ? 0.3 : 0.95;
    hp->weight_decay = (c / 4) % 2 ? 0.0 : 0.1;
    hp->adjust_lr = (int)((c / 8) % 2);
    hp->ns_steps = (c / 16) % 2 ? 2 : 5;
    if ((c / 32) % 2) {
        hp->ns_a = 1.5;
        hp->ns_b = -0.5;
        hp->ns_c = 0.0;
    }
    if ((c / 64) % 2) hp->eps = 1e3;
}
#define MU_NOPTIONS 128

/* ---- Tests ------------------------------------------------------------------------------------ */

/* Every option combination, every shape, MU_STEPS steps (a sample of the combinations runs all of them:
 * the others 40), each step against the double reference. The error is measured on the update,
 * relative to the largest |update| of that parameter and step: the iteration runs in float32, where
 * an error of a few ulps of X's entries (~1e-7 relative) grows through each of ns_steps iterations by
 * at most the polynomial's slope, a = 3.4445 at zero: 3.4445^5 ~ 490, so ~5e-5 in the worst
 * direction; the tolerance is 2e-4 (worst observed is printed). */
TEST_IMPL(muon_vs_reference)
{
    test_rng rng = {test_seed() ^ 0x6d756f6e};
    double worst = 0, worst_buf = 0;
    long c;
    for (c = 0; c < MU_NOPTIONS; c++) {
        optim_hparams hp;
        mrun m;
        const int steps = c % 9 == 0 ? MU_STEPS : 40;
        int t;
        size_t i, j;
#if defined(__SANITIZE_ADDRESS__)
        if (c % 8 != 0) continue; /* the sanitizer build looks for memory errors: every eighth combination */
#endif
        mu_options(c, &hp);
        if (mrun_make(&m, &hp, &rng, OPTIM_ISA_AUTO, 0)) return 1;
        for (t = 0; t < steps; t++) {
            double *rp[MU_NSHAPES], *rb[MU_NSHAPES], *bold[MU_NSHAPES];
            mrun_grads(&m, &rng);
            for (i = 0; i < MU_NSHAPES; i++) {
                const size_t n = mshapes[i].r * mshapes[i].c;
                const float *b = slot0(m.o, i);
                rp[i] = malloc(n * sizeof(double));
                rb[i] = malloc(n * sizeof(double));
                bold[i] = malloc(n * sizeof(double));
                for (j = 0; j < n; j++) {
                    rp[i][j] = m.p[i][j];
                    rb[i][j] = b[j];
                    bold[i][j] = fabs((double)b[j]);
                }
            }
            ASSERT_OPT_OK(m.o, optim_step(m.o));
            for (i = 0; i < MU_NSHAPES; i++) {
                const size_t r = mshapes[i].r, cc = mshapes[i].c, n = r * cc;
                const float *b = slot0(m.o, i);
                double *p0 = malloc(n * sizeof(double)), big = 0;
                memcpy(p0, rp[i], n * sizeof(double));
                ref_step(&hp, rp[i], rb[i], m.g[i], r, cc);
                for (j = 0; j < n; j++) {
                    double d = fabs(rp[i][j] - p0[j] * (1.0 - hp.lr * hp.weight_decay));
                    if (d > big) big = d;
                }
                for (j = 0; j < n; j++) {
                    double e = fabs((double)m.p[i][j] - rp[i][j]);
                    /* the buffer: two roundings of lerp's terms, |b_old| + |g| in size */
                    double eb = fabs((double)b[j] - rb[i][j]) / (bold[i][j] + fabs((double)m.g[i][j]) + 1e-30);
                    /* + the roundings of p itself: p * decay, decay rounded to float, the fma (2^-24 |p| each) */
                    double tol = 2e-4 * big + 2.5e-7 * fabs(rp[i][j]);
                    if (!(e <= tol))
                        FAIL("options %ld (nesterov %d momentum %g wd %g adjust %d ns_steps %d a %g eps %g), "
                             "shape %zu x %zu, step %d, element %zu: p = %.9g, reference %.9g (error %.3g, "
                             "largest update %.3g)",
                             c, hp.nesterov, hp.momentum, hp.weight_decay, hp.adjust_lr, hp.ns_steps, hp.ns_a,
                             hp.eps, r, cc, t, j, (double)m.p[i][j], rp[i][j], e, big);
                    if (!(eb <= 3e-7))
                        FAIL("options %ld, shape %zu x %zu, step %d, element %zu: momentum_buffer = %.9g, "
                             "reference %.9g",
                             c, r, cc, t, j, (double)b[j], rb[i][j]);
                    if (tol > 0 && e / tol > worst) worst = e / tol;
                    if (eb > worst_buf) worst_buf = eb;
                }
                free(p0);
                free(rp[i]);
                free(rb[i]);
                free(bold[i]);
            }
        }
        mrun_free(&m);
    }
    printf("  muon: %d option combinations x %zu shapes: worst error of p %.2f of its tolerance, of the buffer "
           "%.2e relative\n",
           MU_NOPTIONS, (size_t)MU_NSHAPES, worst, worst_buf);
    return 0;
}

/* A zero update (a zero gradient on a zero buffer): the norm is clamped to eps, X = 0, p only decays. */
TEST_IMPL(muon_zero_update)
{
    optim_hparams hp;
    optim *o;
    float p[12], g[12] = {0};
    const int64_t dims[2] = {3, 4};
    size_t j;
    optim_hparams_init(&hp, OPTIM_MUON, NULL);
    for (j = 0; j < 12; j++) p[j] = (float)j - 5.5f;
    ASSERT_OK(optim_create(&o, OPTIM_MUON));
    ASSERT_OPT_OK(o, optim_muon_attach(o));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p, g, 12, "w", NULL));
    ASSERT_OPT_OK(o, optim_param_set_shape(o, 0, 2, dims));
    ASSERT_OPT_OK(o, optim_step(o));
    for (j = 0; j < 12; j++) {
        const float want = ((float)j - 5.5f) * (float)(1.0 - hp.lr * hp.weight_decay);
        if (p[j] != want) FAIL("element %zu: %.9g, want %.9g (decay only)", j, (double)p[j], (double)want);
    }
    optim_free(o);
    return 0;
}

static const optim_isa mu_isas[] = {OPTIM_ISA_SCALAR, OPTIM_ISA_AVX2, OPTIM_ISA_AVX512, OPTIM_ISA_AVX512BF16,
                                    OPTIM_ISA_NEON};

/* Every CPU path with 1 and 2 threads, bit for bit against the scalar path on one thread, with
 * parameters large enough (192 x 176, and its transpose) for the element-wise passes to be split
 * between two threads (32K elements and more). */
TEST_IMPL(muon_paths_bit_identical)
{
    const size_t R = 192, C = 176, n = R * C;
    float *want = NULL, *wbuf = NULL;
    size_t a;
    int opt;
    for (opt = 0; opt < 2; opt++) {
        for (a = 0; a < sizeof mu_isas / sizeof mu_isas[0]; a++) {
            int th;
            if (!optim_isa_available(mu_isas[a])) {
                if (opt == 0) printf("  path %s: not exercised (not in this build or CPU)\n", optim_isa_name(mu_isas[a]));
                continue;
            }
            for (th = 1; th <= 2; th++) {
                optim_hparams hp;
                optim *o;
                const int64_t tall[2] = {(int64_t)R, (int64_t)C}; /* rows > cols: the transposed iteration */
                const int64_t wide[2] = {(int64_t)C, (int64_t)R};
                float *p = malloc(n * sizeof *p), *g = malloc(n * sizeof *g);
                float *p2 = malloc(n * sizeof *p2), *g2 = malloc(n * sizeof *g2);
                test_rng rng = {test_seed() ^ 0xb175};
                size_t j;
                int t;
                mu_options(opt ? 0 + 1 + 8 : 2 + 4 + 16, &hp);
                hp.ns_steps = 1; /* the matrix products are OpenBLAS's, the same on every path: one iteration */
                for (j = 0; j < n; j++) p[j] = p2[j] = (float)test_rng_normal(&rng);
                ASSERT_OK(optim_create(&o, OPTIM_MUON));
                ASSERT_OPT_OK(o, optim_muon_attach(o));
                ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
                ASSERT_OPT_OK(o, optim_set_isa(o, mu_isas[a]));
                ASSERT_OPT_OK(o, optim_set_threads(o, th));
                ASSERT_OPT_OK(o, optim_add_param(o, 0, p, g, n, "tall", NULL));
                ASSERT_OPT_OK(o, optim_param_set_shape(o, 0, 2, tall));
                ASSERT_OPT_OK(o, optim_add_param(o, 0, p2, g2, n, "wide", NULL));
                ASSERT_OPT_OK(o, optim_param_set_shape(o, 1, 2, wide));
                if (opt) ASSERT_OPT_OK(o, optim_set_clip_grad_norm(o, 50.0, 2.0)); /* gscale into phase 1 */
                for (t = 0; t < 6; t++) {
                    for (j = 0; j < n; j++) {
                        g[j] = p[j] + (float)test_rng_normal(&rng) * 0.1f;
                        g2[j] = p2[j] - (float)test_rng_normal(&rng) * 0.1f;
                    }
                    ASSERT_OPT_OK(o, optim_step(o));
                }
                if (!want) {
                    want = malloc(2 * n * sizeof *want);
                    wbuf = malloc(2 * n * sizeof *wbuf);
                }
                if (a == 0 && th == 1) {
                    memcpy(want, p, n * sizeof *p);
                    memcpy(want + n, p2, n * sizeof *p);
                    memcpy(wbuf, slot0(o, 0), n * sizeof *p);
                    memcpy(wbuf + n, slot0(o, 1), n * sizeof *p);
                } else {
                    if (memcmp(want, p, n * sizeof *p) || memcmp(want + n, p2, n * sizeof *p))
                        FAIL("options %d: path %s with %d threads: parameters differ from the scalar path's", opt,
                             optim_isa_name(mu_isas[a]), th);
                    if (memcmp(wbuf, slot0(o, 0), n * sizeof *p) || memcmp(wbuf + n, slot0(o, 1), n * sizeof *p))
                        FAIL("options %d: path %s with %d threads: momentum buffers differ from the scalar path's",
                             opt, optim_isa_name(mu_isas[a]), th);
                    printf("  options %d: path %-10s %d thread%s: bit for bit\n", opt, optim_isa_name(mu_isas[a]),
                           th, th > 1 ? "s" : "");
                }
                optim_free(o);
                free(p);
                free(g);
                free(p2);
                free(g2);
            }
        }
    }
    free(want);
    free(wbuf);
    return 0;
}

/* OpenBLAS 0.3.21's sgemm gives other bits with 2 threads than with 1 on these shapes, so liboptim_muon
 * pins it to one thread inside each call: the Newton-Schulz result is the same bits whatever thread count
 * the process set (shapes past OpenBLAS's threading threshold, both orientations), and the setting is
 * restored after the call. */
TEST_IMPL(muon_blas_threads)
{
    static const mshape shapes[] = {{256, 384}, {384, 256}, {97, 301}};
    const double coef[3] = {3.4445, -4.7750, 2.0315};
    const int before = openblas_get_num_threads();
    size_t s;
    for (s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const size_t n = shapes[s].r * shapes[s].c;
        float *x0 = malloc(n * sizeof *x0), *x = malloc(n * sizeof *x), *want = malloc(n * sizeof *want);
        float *work = malloc(optim_muon_work_size(shapes[s].r, shapes[s].c) * sizeof *work);
        test_rng rng = {test_seed() ^ s};
        double nrm = 0;
        size_t j;
        int th;
        for (j = 0; j < n; j++) {
            x0[j] = (float)test_rng_normal(&rng);
            nrm += (double)x0[j] * x0[j];
        }
        for (j = 0; j < n; j++) x0[j] = (float)(x0[j] / sqrt(nrm));
        for (th = 1; th <= 3; th++) {
            optim_error e;
            openblas_set_num_threads(th);
            memcpy(x, x0, n * sizeof *x);
            if (optim_muon_newton_schulz(x, shapes[s].r, shapes[s].c, coef, 5, work, &e) != OPTIM_OK)
                FAIL("optim_muon_newton_schulz: %s", e.message);
            if (openblas_get_num_threads() != th) FAIL("OpenBLAS's thread count was not restored (%d, set %d)",
                                                       openblas_get_num_threads(), th);
            if (th == 1)
                memcpy(want, x, n * sizeof *x);
            else if (memcmp(want, x, n * sizeof *x))
                FAIL("%zu x %zu: %d OpenBLAS threads give other bits than 1", shapes[s].r, shapes[s].c, th);
        }
        printf("  %zu x %zu: 1, 2, 3 OpenBLAS threads bit for bit (%s)\n", shapes[s].r, shapes[s].c,
               optim_muon_backend());
        free(x0);
        free(x);
        free(want);
        free(work);
    }
    openblas_set_num_threads(before);
    return 0;
}

/* A checkpoint after 60 steps, loaded into a new optimizer (attached again), continues bit for bit. */
TEST_IMPL(muon_checkpoint_resume)
{
    optim_hparams hp;
    mrun a, b;
    test_rng r1 = {test_seed() ^ 0xc4}, r2 = {test_seed() ^ 0xc4}, ga = {7}, gb = {7};
    void *buf = NULL;
    size_t size = 0, i;
    int t;
    mu_options(1 + 8, &hp);
    if (mrun_make(&a, &hp, &r1, OPTIM_ISA_AUTO, 0) || mrun_make(&b, &hp, &r2, OPTIM_ISA_AUTO, 0)) return 1;
    for (t = 0; t < 120; t++) {
        mrun_grads(&a, &ga);
        ASSERT_OPT_OK(a.o, optim_step(a.o));
        if (t == 59) {
            ASSERT_OPT_OK(a.o, optim_save_buffer(a.o, &buf, &size));
            /* b: a fresh optimizer over a copy of a's parameters, loaded from the checkpoint */
            for (i = 0; i < MU_NSHAPES; i++) memcpy(b.p[i], a.p[i], mshapes[i].r * mshapes[i].c * sizeof(float));
            optim_free(b.o);
            ASSERT_OK(optim_create(&b.o, OPTIM_MUON));
            ASSERT_OPT_OK(b.o, optim_add_group(b.o, &hp, NULL));
            for (i = 0; i < MU_NSHAPES; i++) {
                const int64_t dims[2] = {(int64_t)mshapes[i].r, (int64_t)mshapes[i].c};
                ASSERT_OPT_OK(b.o, optim_add_param(b.o, 0, b.p[i], b.g[i], mshapes[i].r * mshapes[i].c, NULL, NULL));
                ASSERT_OPT_OK(b.o, optim_param_set_shape(b.o, i, 2, dims));
            }
            ASSERT_OPT_OK(b.o, optim_load_buffer(b.o, buf, size, OPTIM_MATCH_NAME, "muon checkpoint"));
            ASSERT_OPT_OK(b.o, optim_muon_attach(b.o));
            gb = ga;
            free(buf);
        }
        if (t >= 60) {
            mrun_grads(&b, &gb);
            ASSERT_OPT_OK(b.o, optim_step(b.o));
        }
    }
    for (i = 0; i < MU_NSHAPES; i++) {
        const size_t n = mshapes[i].r * mshapes[i].c;
        if (memcmp(a.p[i], b.p[i], n * sizeof(float)) || memcmp(slot0(a.o, i), slot0(b.o, i), n * sizeof(float)))
            FAIL("shape %zu x %zu: the resumed run differs from the uninterrupted one", mshapes[i].r, mshapes[i].c);
    }
    mrun_free(&a);
    mrun_free(&b);
    return 0;
}

/* Every refusal names what is wrong, and changes nothing. */
TEST_IMPL(muon_refusals)
{
    optim_hparams hp;
    optim *o, *adam;
    optim_error e;
    float p[6] = {1, 2, 3, 4, 5, 6}, g[6] = {1, 1, 1, 1, 1, 1}, keep[6];
    double pd[6] = {0}, gd[6] = {0};
    const int64_t d2[2] = {2, 3}, d3[3] = {1, 2, 3};
    optim_state st;
    float s0[6];
    memcpy(keep, p, sizeof p);
    optim_hparams_init(&hp, OPTIM_MUON, NULL);
    ASSERT_OK(optim_create(&o, OPTIM_MUON));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p, g, 6, "w", NULL));
    ASSERT_OPT_OK(o, optim_param_set_shape(o, 0, 2, d2));
    ASSERT_ERR(optim_step(o), OPTIM_EUNSUPPORTED, optim_errmsg(o), "optim_muon_attach");
    ASSERT_OPT_OK(o, optim_muon_attach(o));
    ASSERT_OPT_OK(o, optim_param_set_shape(o, 0, 3, d3));
    ASSERT_ERR(optim_step(o), OPTIM_EINVAL, optim_errmsg(o), "2-D parameters only");
    ASSERT(memcmp(p, keep, sizeof p) == 0);
    ASSERT(slot0(o, 0)[0] == 0.0f);
    ASSERT_INT(optim_step_count(o), ==, 0);
    optim_free(o);
    /* a parameter without a shape */
    ASSERT_OK(optim_create(&o, OPTIM_MUON));
    ASSERT_OPT_OK(o, optim_muon_attach(o));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p, g, 6, "bias", NULL));
    ASSERT_ERR(optim_step(o), OPTIM_EINVAL, optim_errmsg(o), "'bias' has no shape given");
    /* float64 */
    ASSERT_OPT_OK(o, optim_add_param_typed(o, 0, pd, OPTIM_FLOAT64, gd, OPTIM_FLOAT64, 6, "w64", NULL));
    ASSERT_OPT_OK(o, optim_param_set_shape(o, 0, 2, d2));
    ASSERT_OPT_OK(o, optim_param_set_shape(o, 1, 2, d2));
    ASSERT_ERR(optim_step(o), OPTIM_EUNSUPPORTED, optim_errmsg(o), "'w64' has float64");
    ASSERT(memcmp(p, keep, sizeof p) == 0);
    optim_free(o);
    /* attach to another rule; the stateless update; hyperparameters */
    ASSERT_OK(optim_create(&adam, OPTIM_ADAM));
    ASSERT_ERR(optim_muon_attach(adam), OPTIM_EINVAL, optim_errmsg(adam), "not muon");
    optim_free(adam);
    ASSERT_INT(optim_muon_attach(NULL), ==, OPTIM_ENULL);
    memset(&st, 0, sizeof st);
    st.slot[0] = s0;
    ASSERT_ERR(optim_update(&hp, 6, p, g, &st, &e), OPTIM_EUNSUPPORTED, e.message, "stateless");
    ASSERT_ERR(optim_hparams_set(&hp, OPTIM_HP_NS_STEPS, 0, &e), OPTIM_EINVAL, e.message, "ns_steps = 0");
    ASSERT_ERR(optim_hparams_set(&hp, OPTIM_HP_NS_STEPS, 100, &e), OPTIM_EINVAL, e.message, "ns_steps = 100");
    ASSERT_ERR(optim_hparams_set(&hp, OPTIM_HP_NS_STEPS, 2.5, &e), OPTIM_EINVAL, e.message, "whole number");
    ASSERT_ERR(optim_hparams_set(&hp, OPTIM_HP_ADJUST_LR, 2, &e), OPTIM_EINVAL, e.message, "adjust_lr = 2");
    ASSERT_ERR(optim_hparams_set(&hp, OPTIM_HP_NS_A, NAN, &e), OPTIM_EINVAL, e.message, "ns_a");
    ASSERT_OK(optim_hparams_set(&hp, OPTIM_HP_NS_STEPS, 7, &e));
    ASSERT_INT(hp.ns_steps, ==, 7);
    ASSERT(memcmp(p, keep, sizeof p) == 0);
    /* the library's own checks */
    {
        float x[4] = {1, 0, 0, 1}, w[16];
        const double coef[3] = {3.4445, -4.7750, 2.0315};
        ASSERT_ERR(optim_muon_newton_schulz(x, 2, 2, coef, 0, w, &e), OPTIM_EINVAL, e.message, "steps = 0");
        ASSERT_ERR(optim_muon_newton_schulz(x, 0, 2, coef, 5, w, &e), OPTIM_EINVAL, e.message, "0 x 2");
        ASSERT_ERR(optim_muon_newton_schulz(x, 2, 2, coef, 5, NULL, &e), OPTIM_ENULL, e.message, "work");
        ASSERT_ERR(optim_muon_newton_schulz(x, 2, 2, coef, 5, x, &e), OPTIM_EOVERLAP, e.message, "overlaps");
    }
    return 0;
}

/* Step statistics of Muon (include/optim_stats.h: its apply pass): each
 * step's values against a double computation from the parameter before and
 * after and the gradient, for a 1 x N, an N x 1 and a matrix of three blocks
 * of 8192 (two threads split it at a block); 1 and 2 threads give the same
 * bits; statistics on change no parameter bit; a NaN gradient gives NaN
 * statistics; a parameter shaped later and a gradient unbound are covered;
 * with value clipping, the clamped gradient's norm and fraction. */
TEST_IMPL(muon_stats)
{
    static const mshape sh[3] = {{1, 37}, {41, 1}, {96, 260}};
    optim_step_stats first[3][4];
    float *keep[3] = {NULL, NULL, NULL};
    int th, step, on;
    size_t i, j;
    for (on = 1; on >= 0; on--)
        for (th = 1; th <= 2; th++) {
            optim *o = NULL;
            optim_hparams hp;
            float *p[3], *g[3], *p0[3];
            test_rng rng = {0x5eedu};
            optim_hparams_init(&hp, OPTIM_MUON, NULL);
            hp.weight_decay = 0.01;
            ASSERT_OK(optim_create(&o, OPTIM_MUON));
            ASSERT_OPT_OK(o, optim_muon_attach(o));
            ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
            ASSERT_OPT_OK(o, optim_set_threads(o, th));
            ASSERT_OPT_OK(o, optim_set_stats(o, on));
            for (i = 0; i < 3; i++) {
                const size_t n = sh[i].r * sh[i].c;
                p[i] = malloc(n * sizeof(float));
                g[i] = malloc(n * sizeof(float));
                p0[i] = malloc(n * sizeof(float));
                if (!p[i] || !g[i] || !p0[i]) FAIL("out of memory");
                for (j = 0; j < n; j++) p[i][j] = (float)test_rng_normal(&rng);
                ASSERT_OPT_OK(o, optim_add_param(o, 0, p[i], g[i], n, NULL, NULL));
            }
            for (step = 1; step <= 4; step++) {
                for (i = 0; i < 3; i++) {
                    const size_t n = sh[i].r * sh[i].c;
                    const int64_t d[2] = {(int64_t)sh[i].r, (int64_t)sh[i].c};
                    if (step == 1 || (i == 2 && step == 2)) /* the matrix is shaped after a step without it */
                        if (i != 2 || step == 2) ASSERT_OPT_OK(o, optim_param_set_shape(o, i, 2, d));
                    for (j = 0; j < n; j++) g[i][j] = (float)test_rng_normal(&rng) + 0.1f * p[i][j];
                    if (step == 4 && i == 1) g[i][5] = NAN;
                    memcpy(p0[i], p[i], n * sizeof(float));
                }
                ASSERT_OPT_OK(o, optim_set_param_ptrs(o, 2, p[2], step == 1 ? NULL : g[2]));
                ASSERT_OPT_OK(o, optim_step(o));
                for (i = 0; i < 3; i++) {
                    const size_t n = sh[i].r * sh[i].c;
                    const double adj = sqrt(sh[i].r > sh[i].c ? (double)sh[i].r / (double)sh[i].c : 1.0);
                    optim_step_stats st;
                    double su = 0, sp = 0, sg = 0, mx = 0, rms;
                    ASSERT_OPT_OK(o, optim_param_stats(o, i, &st));
                    if (!on || (i == 2 && step == 1)) {
                        ASSERT_INT(st.step, ==, 0);
                        continue;
                    }
                    ASSERT_INT(st.step, ==, i == 2 ? step - 1 : step);
                    ASSERT_INT(st.has_elements, ==, 1);
                    ASSERT_INT(st.n, ==, n);
                    for (j = 0; j < n; j++) {
                        const double u = (double)p[i][j] - (double)p0[i][j];
                        su += u * u;
                        sp += (double)p0[i][j] * p0[i][j];
                        sg += (double)g[i][j] * g[i][j];
                        mx = (u != u || fabs(u) > mx) ? fabs(u) : mx;
                    }
                    rms = sqrt(su / (double)n);
                    if (step == 4 && i == 1) {
                        ASSERT(isnan(st.grad_norm) && isnan(st.update_rms) && isnan(st.update_max));
                        continue;
                    }
                    /* Float lanes (docs/STATS.md): within 1e-5 of the double sums; the exact lanes: test_stats.c. */
                    if (!(fabs(st.update_rms - rms) <= 1e-5 * rms) || !(fabs(st.param_rms - sqrt(sp / n)) <= 1e-5 * sqrt(sp / n)) ||
                        !(fabs(st.grad_norm - sqrt(sg)) <= 1e-5 * sqrt(sg)) || st.update_max != mx ||
                        st.clamped_fraction != 0 || fabs(st.effective_lr - hp.lr * adj) > 1e-15)
                        FAIL("%zu x %zu, %d threads, step %d: update_rms %.17g (%.17g), param_rms %.17g (%.17g), "
                             "grad_norm %.17g (%.17g), update_max %.17g (%.17g), clamped %g, effective_lr %.17g (%.17g)",
                             sh[i].r, sh[i].c, th, step, st.update_rms, rms, st.param_rms, sqrt(sp / n), st.grad_norm,
                             sqrt(sg), st.update_max, mx, st.clamped_fraction, st.effective_lr, hp.lr * adj);
                    if (th == 1) first[i][step - 1] = st;
                    else if (memcmp(&first[i][step - 1], &st, sizeof st) != 0 &&
                             !(first[i][step - 1].update_rms == st.update_rms &&
                               first[i][step - 1].grad_norm == st.grad_norm &&
                               first[i][step - 1].param_rms == st.param_rms &&
                               first[i][step - 1].update_max == st.update_max))
                        FAIL("%zu x %zu step %d: other statistics with 2 threads", sh[i].r, sh[i].c, step);
                }
            }
            /* The parameters: the same bits with statistics on or off, 1 or 2 threads. */
            for (i = 0; i < 3; i++) {
                const size_t n = sh[i].r * sh[i].c;
                if (!keep[i]) {
                    keep[i] = p[i];
                    p[i] = NULL;
                } else if (memcmp(keep[i], p[i], n * sizeof(float)) != 0) {
                    FAIL("%zu x %zu: statistics %s, %d threads: other parameter bits", sh[i].r, sh[i].c,
                         on ? "on" : "off", th);
                }
                free(p[i]);
                free(g[i]);
                free(p0[i]);
            }
            optim_free(o);
        }
    for (i = 0; i < 3; i++) free(keep[i]);
    /* Value clipping: the statistics see the clamped gradient (its norm, the fraction clamped), and the step
     * equals one on gradients clamped by hand without clipping. */
    {
        optim *oc = NULL, *oh = NULL;
        optim_hparams hp;
        float pc[96], ph[96], gc[96], gh[96];
        const int64_t d[2] = {8, 12};
        optim_step_stats st;
        double sg = 0;
        int clamped = 0;
        optim_hparams_init(&hp, OPTIM_MUON, NULL);
        for (j = 0; j < 96; j++) {
            pc[j] = ph[j] = 0.05f * (float)j - 1.0f;
            gc[j] = (float)sin((double)j);
            gh[j] = gc[j] > 0.5f ? 0.5f : gc[j] < -0.5f ? -0.5f : gc[j];
            clamped += gh[j] != gc[j];
            sg += (double)gh[j] * gh[j];
        }
        ASSERT_OK(optim_create(&oc, OPTIM_MUON));
        ASSERT_OK(optim_create(&oh, OPTIM_MUON));
        ASSERT_OPT_OK(oc, optim_muon_attach(oc));
        ASSERT_OPT_OK(oh, optim_muon_attach(oh));
        ASSERT_OPT_OK(oc, optim_add_group(oc, &hp, NULL));
        ASSERT_OPT_OK(oh, optim_add_group(oh, &hp, NULL));
        ASSERT_OPT_OK(oc, optim_add_param(oc, 0, pc, gc, 96, "w", NULL));
        ASSERT_OPT_OK(oh, optim_add_param(oh, 0, ph, gh, 96, "w", NULL));
        ASSERT_OPT_OK(oc, optim_param_set_shape(oc, 0, 2, d));
        ASSERT_OPT_OK(oh, optim_param_set_shape(oh, 0, 2, d));
        ASSERT_OPT_OK(oc, optim_set_clip_grad_value(oc, 0.5));
        ASSERT_OPT_OK(oc, optim_set_stats(oc, 1));
        for (step = 0; step < 3; step++) {
            ASSERT_OPT_OK(oc, optim_step(oc));
            ASSERT_OPT_OK(oh, optim_step(oh));
        }
        ASSERT(memcmp(pc, ph, sizeof pc) == 0);
        ASSERT_OPT_OK(oc, optim_param_stats(oc, 0, &st));
        if (!(fabs(st.grad_norm - sqrt(sg)) <= 1e-5 * sqrt(sg)) || st.clamped_fraction != clamped / 96.0) /* float lanes */
            FAIL("value clipping: grad_norm %.17g (the clamped gradient's %.17g), clamped_fraction %g (%g)",
                 st.grad_norm, sqrt(sg), st.clamped_fraction, clamped / 96.0);
        optim_free(oc);
        optim_free(oh);
    }
    return 0;
}
