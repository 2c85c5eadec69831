/* test_complex.c: RAdam and NAdam on complex parameters (OPTIM_PARAM_COMPLEX)
 * against a reference in C99 double complex written here from torch 1.13's
 * formulas (the library's state copied in before every step, 200 steps, every
 * option), every CPU path and thread count bit for bit against the scalar
 * path, and the flag's errors. */
#include <complex.h>

#include "test.h"

typedef struct cx_opts {
    optim_rule rule;
    double wd;
    int decoupled, maximize, eps_inside;
    double clip;
} cx_opts;

static int cx_make(optim **o, const cx_opts *c, optim_dtype dt, void *p, const void *g, size_t n, optim_isa isa,
                   int threads)
{
    optim_hparams hp;
    size_t gi;
    ASSERT_OK(optim_hparams_init(&hp, c->rule, NULL));
    hp.lr = c->rule == OPTIM_RADAM ? 1e-2 : 2e-3;
    hp.weight_decay = c->wd;
    hp.decoupled_weight_decay = c->decoupled;
    hp.maximize = c->maximize;
    hp.eps_placement = c->eps_inside ? OPTIM_EPS_INSIDE : OPTIM_EPS_OUTSIDE;
    hp.eps = 1e-3;
    if (c->rule == OPTIM_NADAM) hp.momentum_decay = 2e-2;
    hp.beta2 = 0.99;
    ASSERT_OK(optim_create(o, c->rule));
    ASSERT_OPT_OK(*o, optim_add_group(*o, &hp, &gi));
    ASSERT_OPT_OK(*o, optim_add_param_ex(*o, gi, p, dt, g, dt, n, dt, OPTIM_PARAM_COMPLEX, "z", NULL));
    if (c->clip > 0) ASSERT_OPT_OK(*o, optim_set_clip_grad_value(*o, c->clip));
    if (isa != OPTIM_ISA_AUTO) ASSERT_OPT_OK(*o, optim_set_isa(*o, isa));
    ASSERT_OPT_OK(*o, optim_set_threads(*o, threads));
    return 0;
}

static double cx_get(const void *a, int f64, size_t i)
{
    return f64 ? ((const double *)a)[i] : (double)((const float *)a)[i];
}

/* torch's principal square root, eps added to the real part. */
static double complex ref_denom_radam(double complex v, double eps, int inside)
{
    return inside ? csqrt(v + eps) : csqrt(v) + eps;
}

/* One reference step of element z (torch 1.13: RAdam single-tensor, NAdam multi-tensor). */
static void ref_step(const cx_opts *c, const optim_hparams *hp, int64_t t, double P, double complex *p,
                     double complex g, double complex *m, double complex *v)
{
    double lr = hp->lr, b1 = hp->beta1, b2 = hp->beta2, eps = hp->eps;
    double bc2 = 1 - pow(b2, (double)t);
    if (c->clip > 0) g = fmin(fmax(creal(g), -c->clip), c->clip) + I * fmin(fmax(cimag(g), -c->clip), c->clip);
    if (c->maximize) g = -g;
    if (c->decoupled)
        *p *= 1 - lr * c->wd;
    else
        g += c->wd * *p;
    *m = b1 * *m + (1 - b1) * g;
    *v = b2 * *v + (1 - b2) * g * g;
    if (c->rule == OPTIM_RADAM) {
        double bc1 = 1 - pow(b1, (double)t), rho_inf = 2 / (1 - b2) - 1;
        double rho_t = rho_inf - 2 * (double)t * pow(b2, (double)t) / bc2;
        if (rho_t > 5) {
            double rect = sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t));
            *p -= lr * (*m / bc1) * (sqrt(bc2) / ref_denom_radam(*v, eps, c->eps_inside)) * rect;
        } else {
            *p -= lr * (*m / bc1);
        }
    } else {
        double md = hp->momentum_decay, mu = b1 * (1 - 0.5 * pow(0.96, (double)t * md));
        double mu_next = b1 * (1 - 0.5 * pow(0.96, (double)(t + 1) * md));
        double complex den = c->eps_inside ? csqrt(*v / bc2 + eps) : csqrt(*v) / sqrt(bc2) + eps;
        *p += -lr * (1 - mu) / (1 - P) * g / den - lr * mu_next / (1 - P * mu_next) * *m / den;
    }
}

static int cx_opts_list(cx_opts *out)
{
    static const optim_rule rules[] = {OPTIM_RADAM, OPTIM_NADAM};
    int k = 0, r, w, mx, e, cl;
    for (r = 0; r < 2; r++)
        for (w = 0; w < 3; w++)
            for (mx = 0; mx < 2; mx++)
                for (e = 0; e < 2; e++)
                    for (cl = 0; cl < 2; cl++) {
                        cx_opts c = {rules[r], w ? 0.05 : 0.0, w == 2, mx, e, cl ? 0.7 : 0.0};
                        out[k++] = c;
                    }
    return k;
}

TEST_IMPL(complex_rules_vs_reference)
{
    enum { NZ = 37, STEPS = 200 };
    cx_opts all[64];
    int nopt = cx_opts_list(all), oi, f64;
    test_rng rng = {test_seed()};
    double worst[2] = {0, 0};
    for (f64 = 0; f64 < 2; f64++)
        for (oi = 0; oi < nopt; oi++) {
            const cx_opts *c = &all[oi];
            optim_dtype dt = f64 ? OPTIM_FLOAT64 : OPTIM_FLOAT32;
            size_t es = f64 ? 8 : 4, i;
            void *p = malloc(2 * NZ * es), *g = malloc(2 * NZ * es), *s0, *s1;
            optim_dtype sdt;
            optim *o;
            optim_hparams hp;
            double P = 1.0, tol = f64 ? 1e-11 : 2e-5;
            int64_t t;
            if (!p || !g) FAIL("out of memory");
            for (i = 0; i < 2 * NZ; i++) {
                if (f64)
                    ((double *)p)[i] = test_rng_normal(&rng);
                else
                    ((float *)p)[i] = (float)test_rng_normal(&rng);
            }
            if (cx_make(&o, c, dt, p, g, 2 * NZ, OPTIM_ISA_AUTO, 1)) return 1;
            ASSERT_OPT_OK(o, optim_group_get(o, 0, &hp));
            for (t = 1; t <= STEPS; t++) {
                double complex pz[NZ], mz[NZ], vz[NZ], gz[NZ];
                for (i = 0; i < 2 * NZ; i++) {
                    double x = test_rng_normal(&rng) * (t % 7 == 0 ? 3.0 : 1.0);
                    if (f64)
                        ((double *)g)[i] = x;
                    else
                        ((float *)g)[i] = (float)x;
                }
                ASSERT_OPT_OK(o, optim_state_slot_data(o, 0, 0, &s0, &sdt, NULL));
                ASSERT_OPT_OK(o, optim_state_slot_data(o, 0, 1, &s1, &sdt, NULL));
                for (i = 0; i < NZ; i++) {
                    pz[i] = cx_get(p, f64, 2 * i) + I * cx_get(p, f64, 2 * i + 1);
                    gz[i] = cx_get(g, f64, 2 * i) + I * cx_get(g, f64, 2 * i + 1);
                    mz[i] = cx_get(s0, f64, 2 * i) + I * cx_get(s0, f64, 2 * i + 1);
                    vz[i] = cx_get(s1, f64, 2 * i) + I * cx_get(s1, f64, 2 * i + 1);
                }
                if (c->rule == OPTIM_NADAM) {
                    double mu = hp.beta1 * (1 - 0.5 * pow(0.96, (double)t * hp.momentum_decay));
                    P = (double)((float)P * (float)mu); /* torch's float32 mu_product */
                }
                for (i = 0; i < NZ; i++) ref_step(c, &hp, t, P, &pz[i], gz[i], &mz[i], &vz[i]);
                ASSERT_OPT_OK(o, optim_step(o));
                for (i = 0; i < NZ; i++) {
                    double complex got = cx_get(p, f64, 2 * i) + I * cx_get(p, f64, 2 * i + 1);
                    double complex gotv = cx_get(s1, f64, 2 * i) + I * cx_get(s1, f64, 2 * i + 1);
                    double err = cabs(got - pz[i]) / (1 + cabs(pz[i]));
                    double errv = cabs(gotv - vz[i]) / (1e-3 + cabs(vz[i]));
                    if (err > worst[f64]) worst[f64] = err;
                    if (!(err <= tol) || !(errv <= 10 * tol))
                        FAIL("%s f64=%d wd=%g decoupled=%d maximize=%d eps_inside=%d clip=%g step %" PRId64
                             " element %zu: p = %.9g%+.9gi, reference %.9g%+.9gi (error %.3g); v error %.3g "
                             "(seed %" PRIu64 ")",
                             optim_rule_name(c->rule), f64, c->wd, c->decoupled, c->maximize, c->eps_inside, c->clip,
                             t, i, creal(got), cimag(got), creal(pz[i]), cimag(pz[i]), err, errv, test_seed());
                }
            }
            optim_free(o);
            free(p);
            free(g);
        }
    printf("  worst relative error: float32 %.3g, float64 %.3g\n", worst[0], worst[1]);
    return 0;
}

TEST_IMPL(complex_rules_every_path)
{
    static const optim_isa isas[] = {OPTIM_ISA_SCALAR, OPTIM_ISA_AVX2, OPTIM_ISA_AVX512, OPTIM_ISA_AVX512BF16,
                                     OPTIM_ISA_NEON};
    enum { N = 2 * 17001, STEPS = 8 }; /* above 32K elements: two threads split it */
    cx_opts all[64];
    int nopt = cx_opts_list(all), oi, f64;
    test_rng rng0 = {test_seed() + 7};
    size_t k, i, es;
    for (k = 0; k < sizeof isas / sizeof isas[0]; k++)
        if (!optim_isa_available(isas[k]))
            printf("  complex_rules_every_path: CPU path %s not exercised (not in this build, or this CPU lacks it)\n",
                   optim_isa_name(isas[k]));
    for (f64 = 0; f64 < 2; f64++)
        for (oi = 0; oi < nopt; oi += 5) {
            void *first = NULL;
            es = f64 ? 8 : 4;
            for (k = 0; k < sizeof isas / sizeof isas[0]; k++) {
                int th;
                if (!optim_isa_available(isas[k])) continue;
                for (th = 1; th <= 2; th++) {
                    test_rng rng = rng0;
                    void *p = malloc(N * es), *g = malloc(N * es);
                    optim *o;
                    int t;
                    if (!p || !g) FAIL("out of memory");
                    for (i = 0; i < N; i++) {
                        double x = test_rng_normal(&rng);
                        if (f64) ((double *)p)[i] = x; else ((float *)p)[i] = (float)x;
                    }
                    if (cx_make(&o, &all[oi], f64 ? OPTIM_FLOAT64 : OPTIM_FLOAT32, p, g, N, isas[k], th)) return 1;
                    for (t = 0; t < STEPS; t++) {
                        for (i = 0; i < N; i++) {
                            double x = test_rng_normal(&rng);
                            if (f64) ((double *)g)[i] = x; else ((float *)g)[i] = (float)x;
                        }
                        ASSERT_OPT_OK(o, optim_step(o));
                    }
                    optim_free(o);
                    free(g);
                    if (!first) {
                        first = p;
                        continue;
                    }
                    if (memcmp(first, p, N * es) != 0) {
                        for (i = 0; i < N; i++)
                            if (cx_get(first, f64, i) != cx_get(p, f64, i)) break;
                        FAIL("%s f64=%d option %d: the %s path with %d threads differs from the scalar path at "
                             "element %zu: %.17g vs %.17g",
                             optim_rule_name(all[oi].rule), f64, oi, optim_isa_name(isas[k]), th, i,
                             cx_get(p, f64, i), cx_get(first, f64, i));
                    }
                    free(p);
                }
            }
            free(first);
        }
    return 0;
}

TEST_IMPL(complex_flag_errors)
{
    float p[8] = {0}, g[8] = {0};
    uint16_t h[8] = {0};
    optim *o;
    optim_hparams hp;
    size_t gi;
    ASSERT_OK(optim_hparams_init(&hp, OPTIM_ADAM, NULL));
    ASSERT_OK(optim_create(&o, OPTIM_ADAM));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, &gi));
    ASSERT_ERR(optim_add_param_ex(o, gi, p, OPTIM_FLOAT32, g, OPTIM_FLOAT32, 8, OPTIM_FLOAT32, OPTIM_PARAM_COMPLEX,
                                  "z", NULL),
               OPTIM_EUNSUPPORTED, optim_errmsg(o), "adam has no complex arithmetic");
    ASSERT_INT(optim_param_count(o), ==, 0);
    optim_free(o);
    ASSERT_OK(optim_hparams_init(&hp, OPTIM_RADAM, NULL));
    ASSERT_OK(optim_create(&o, OPTIM_RADAM));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, &gi));
    ASSERT_ERR(optim_add_param_ex(o, gi, p, OPTIM_FLOAT32, g, OPTIM_FLOAT32, 7, OPTIM_FLOAT32, OPTIM_PARAM_COMPLEX,
                                  "z", NULL),
               OPTIM_EINVAL, optim_errmsg(o), "n = 7 is odd");
    ASSERT_ERR(optim_add_param_ex(o, gi, h, OPTIM_BFLOAT16, h, OPTIM_BFLOAT16, 8, OPTIM_BFLOAT16,
                                  OPTIM_PARAM_COMPLEX, "z", NULL),
               OPTIM_EINVAL, optim_errmsg(o), "float32 or float64 pairs");
    ASSERT_ERR(optim_add_param_ex(o, gi, h, OPTIM_BFLOAT16, g, OPTIM_FLOAT32, 8, OPTIM_FLOAT32,
                                  OPTIM_PARAM_COMPLEX | OPTIM_PARAM_MASTER, "z", NULL),
               OPTIM_EINVAL, optim_errmsg(o), "master");
    ASSERT_ERR(optim_add_param_ex(o, gi, p, OPTIM_FLOAT32, g, OPTIM_FLOAT32, 8, OPTIM_BFLOAT16, OPTIM_PARAM_COMPLEX,
                                  "z", NULL),
               OPTIM_EINVAL, optim_errmsg(o), "state of the same");
    ASSERT_INT(optim_param_count(o), ==, 0);
    ASSERT_OPT_OK(o, optim_add_param_ex(o, gi, p, OPTIM_FLOAT32, g, OPTIM_FLOAT32, 8, OPTIM_FLOAT32,
                                        OPTIM_PARAM_COMPLEX, "z", NULL));
    optim_free(o);
    return 0;
}
