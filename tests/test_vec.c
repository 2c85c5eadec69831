/* test_vec.c: include/optim_vec.h against references written here from the
 * header's definitions (a scalar loop of the documented summation order, fmaf
 * and fma from libm), on every CPU path (src/vec_internal.h chooses it) and
 * with 1, 2 and 3 threads, bit for bit; the two-loop recursion against a
 * plain implementation of torch 1.13's, bit for bit, and on a quadratic
 * against the exact inverse Hessian; every error. */
#include "optim_vec.h"
#include "test.h"
#include "vec_internal.h"

static const optim_isa isas[] = {OPTIM_ISA_SCALAR, OPTIM_ISA_AVX2, OPTIM_ISA_AVX512, OPTIM_ISA_AVX512BF16,
                                 OPTIM_ISA_NEON};
#define NISA (sizeof isas / sizeof isas[0])
static const int thread_counts[] = {1, 2, 3};

/* Segments of sizes around the lane (16) and block (8192) boundaries, big
 * enough that two and three threads split them. */
#define NSEG 9
static const size_t seg_n[NSEG] = {1, 7, 16, 17, 1000, 8192, 8193, 0, 70001};

static int path_exercised(optim_isa isa, const char *test)
{
    if (optim_isa_available(isa)) return 1;
    printf("  %s: CPU path %s not exercised (not in this build, or this CPU lacks it)\n", test, optim_isa_name(isa));
    return 0;
}

/* count segments of n[i] elements of esize bytes, N(0, scale) values. */
typedef struct segs {
    void *p[NSEG];
} segs;

static int segs_init(segs *s, test_rng *rng, int f64, double scale)
{
    size_t i, j;
    for (i = 0; i < NSEG; i++) {
        s->p[i] = seg_n[i] ? malloc(seg_n[i] * (f64 ? 8 : 4)) : NULL;
        if (seg_n[i] && !s->p[i]) return -1;
        for (j = 0; j < seg_n[i]; j++) {
            double v = scale * test_rng_normal(rng);
            if (f64)
                ((double *)s->p[i])[j] = v;
            else
                ((float *)s->p[i])[j] = (float)v;
        }
    }
    return 0;
}

static void segs_copy(segs *dst, const segs *src, int f64)
{
    size_t i;
    for (i = 0; i < NSEG; i++)
        if (seg_n[i]) memcpy(dst->p[i], src->p[i], seg_n[i] * (f64 ? 8 : 4));
}

static void segs_free(segs *s)
{
    size_t i;
    for (i = 0; i < NSEG; i++) free(s->p[i]);
}

static double elem(const void *p, int f64, size_t j)
{
    return f64 ? ((const double *)p)[j] : (double)((const float *)p)[j];
}

/* The documented order: per segment, blocks of 8192, element i of a block in
 * lane i % 16, lanes combined 16 -> 8 -> 4 -> 2 -> 1, blocks added in order. */
static double ref_dot_acc(double total, const void *x, const void *y, size_t n, int f64)
{
    size_t b, i, w;
    for (b = 0; b < n; b += 8192) {
        double lane[16] = {0};
        size_t end = b + 8192 < n ? b + 8192 : n;
        for (i = b; i < end; i++) lane[(i - b) % 16] += elem(x, f64, i) * elem(y, f64, i);
        for (w = 8; w > 0; w /= 2)
            for (i = 0; i < w; i++) lane[i] += lane[i + w];
        total += lane[0];
    }
    return total;
}

static double ref_dot_seg(const void *x, const void *y, size_t n, int f64)
{
    return ref_dot_acc(0.0, x, y, n, f64);
}

/* Every block of every segment added to one sum, in order. */
static double ref_dot(const segs *x, const segs *y, int f64)
{
    double total = 0.0;
    size_t i;
    for (i = 0; i < NSEG; i++) total = ref_dot_acc(total, x->p[i], y->p[i], seg_n[i], f64);
    return total;
}

static int same_double(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

TEST_IMPL(vec_dot_every_path)
{
    test_rng rng = {test_seed()};
    int f64;
    for (f64 = 0; f64 < 2; f64++) {
        segs x, y;
        double want, naive = 0.0;
        long double exact = 0.0L;
        size_t i, j, k, t;
        if (segs_init(&x, &rng, f64, 1.0) || segs_init(&y, &rng, f64, 3.0)) FAIL("out of memory");
        want = ref_dot(&x, &y, f64);
        for (i = 0; i < NSEG; i++)
            for (j = 0; j < seg_n[i]; j++) exact += (long double)elem(x.p[i], f64, j) * elem(y.p[i], f64, j);
        naive = (double)exact;
        if (!(fabs(want - naive) <= 1e-12 * (fabs(naive) + 1e3)))
            FAIL("f64=%d: the blocked sum %.17g is far from the exact %.17g (seed %" PRIu64 ")", f64, want, naive,
                 test_seed());
        for (k = 0; k < NISA; k++) {
            if (!path_exercised(isas[k], "vec_dot_every_path")) continue;
            for (t = 0; t < sizeof thread_counts / sizeof thread_counts[0]; t++) {
                double got = -1;
                ASSERT_OK(optim__vec_dot_isa(isas[k], f64 ? OPTIM_FLOAT64 : OPTIM_FLOAT32, NSEG,
                                             (const void *const *)x.p, (const void *const *)y.p, seg_n,
                                             thread_counts[t], &got, NULL));
                if (!same_double(got, want))
                    FAIL("f64=%d, %s path, %d threads: dot %.17g, the reference %.17g (seed %" PRIu64 ")", f64,
                         optim_isa_name(isas[k]), thread_counts[t], got, want, test_seed());
                /* each segment alone: its tail's lanes are not drowned in the total's rounding */
                for (i = 0; i < NSEG; i++) {
                    double one = -1, ref1 = ref_dot_seg(x.p[i], y.p[i], seg_n[i], f64);
                    ASSERT_OK(optim__vec_dot_isa(isas[k], f64 ? OPTIM_FLOAT64 : OPTIM_FLOAT32, 1,
                                                 (const void *const *)&x.p[i], (const void *const *)&y.p[i],
                                                 &seg_n[i], thread_counts[t], &one, NULL));
                    if (!same_double(one, ref1))
                        FAIL("f64=%d, %s path, %d threads: segment %zu (%zu elements) alone: dot %.17g, the "
                             "reference %.17g (seed %" PRIu64 ")",
                             f64, optim_isa_name(isas[k]), thread_counts[t], i, seg_n[i], one, ref1, test_seed());
                }
            }
        }
        segs_free(&x);
        segs_free(&y);
    }
    return 0;
}

TEST_IMPL(vec_axpy_scale_every_path)
{
    test_rng rng = {test_seed() + 1};
    static const double as[] = {0.3, -1.0, 1e-3, -7.25};
    int f64;
    for (f64 = 0; f64 < 2; f64++) {
        segs x, y0, y, want;
        size_t ai, i, j, k, t, op;
        if (segs_init(&x, &rng, f64, 1.0) || segs_init(&y0, &rng, f64, 2.0) || segs_init(&y, &rng, f64, 0) ||
            segs_init(&want, &rng, f64, 0))
            FAIL("out of memory");
        for (op = 0; op < 3; op++) /* axpy, scale into y, scale in place */
            for (ai = 0; ai < sizeof as / sizeof as[0]; ai++) {
                double a = as[ai];
                for (i = 0; i < NSEG; i++)
                    for (j = 0; j < seg_n[i]; j++) {
                        if (f64) {
                            double xv = ((double *)x.p[i])[j], yv = ((double *)y0.p[i])[j];
                            ((double *)want.p[i])[j] = op == 0 ? fma(a, xv, yv) : a * (op == 1 ? xv : yv);
                        } else {
                            float xv = ((float *)x.p[i])[j], yv = ((float *)y0.p[i])[j], af = (float)a;
                            ((float *)want.p[i])[j] = op == 0 ? fmaf(af, xv, yv) : af * (op == 1 ? xv : yv);
                        }
                    }
                for (k = 0; k < NISA; k++) {
                    if (!(ai == 0 && op == 0 ? path_exercised(isas[k], "vec_axpy_scale_every_path")
                                             : optim_isa_available(isas[k])))
                        continue;
                    for (t = 0; t < sizeof thread_counts / sizeof thread_counts[0]; t++) {
                        optim_dtype dt = f64 ? OPTIM_FLOAT64 : OPTIM_FLOAT32;
                        segs_copy(&y, &y0, f64);
                        if (op == 0)
                            ASSERT_OK(optim__vec_axpy_isa(isas[k], dt, NSEG, a, (const void *const *)x.p, y.p, seg_n,
                                                          thread_counts[t], NULL));
                        else
                            ASSERT_OK(optim__vec_scale_isa(isas[k], dt, NSEG, a,
                                                           (const void *const *)(op == 1 ? x.p : y.p), y.p, seg_n,
                                                           thread_counts[t], NULL));
                        for (i = 0; i < NSEG; i++)
                            if (seg_n[i] && memcmp(y.p[i], want.p[i], seg_n[i] * (f64 ? 8 : 4)) != 0) {
                                for (j = 0; j < seg_n[i]; j++)
                                    if (elem(y.p[i], f64, j) != elem(want.p[i], f64, j)) break;
                                FAIL("f64=%d, %s, a = %g, %s path, %d threads: segment %zu element %zu is %.17g, "
                                     "the reference %.17g",
                                     f64, op == 0 ? "axpy" : op == 1 ? "scale" : "scale in place", a,
                                     optim_isa_name(isas[k]), thread_counts[t], i, j, elem(y.p[i], f64, j),
                                     elem(want.p[i], f64, j));
                            }
                    }
                }
            }
        segs_free(&x);
        segs_free(&y0);
        segs_free(&y);
        segs_free(&want);
    }
    return 0;
}

TEST_IMPL(vec_norm_every_path)
{
    test_rng rng = {test_seed() + 2};
    static const double ps[] = {1.0, 2.0, INFINITY, 3.0};
    int f64;
    for (f64 = 0; f64 < 2; f64++) {
        segs x;
        size_t pi, i, j, k, t;
        if (segs_init(&x, &rng, f64, 1.5)) FAIL("out of memory");
        for (pi = 0; pi < sizeof ps / sizeof ps[0]; pi++) {
            double p = ps[pi], acc = 0.0, want, first = 0.0;
            int have_first = 0;
            for (i = 0; i < NSEG; i++)
                for (j = 0; j < seg_n[i]; j++) {
                    double v = fabs(elem(x.p[i], f64, j));
                    acc = isinf(p) ? (v > acc ? v : acc) : acc + pow(v, p);
                }
            want = isinf(p) ? acc : pow(acc, 1.0 / p);
            for (k = 0; k < NISA; k++) {
                if (!(pi == 0 ? path_exercised(isas[k], "vec_norm_every_path") : optim_isa_available(isas[k])))
                    continue;
                for (t = 0; t < sizeof thread_counts / sizeof thread_counts[0]; t++) {
                    double got = -1;
                    ASSERT_OK(optim__vec_norm_isa(isas[k], f64 ? OPTIM_FLOAT64 : OPTIM_FLOAT32, NSEG,
                                                  (const void *const *)x.p, seg_n, p, thread_counts[t], &got, NULL));
                    if (!(fabs(got - want) <= 1e-12 * want))
                        FAIL("f64=%d, p = %g, %s path: norm %.17g, the reference %.17g", f64, p,
                             optim_isa_name(isas[k]), got, want);
                    if (isinf(p) && !same_double(got, want)) FAIL("max |x| %.17g is not %.17g", got, want);
                    if (!have_first) {
                        first = got;
                        have_first = 1;
                    } else if (!same_double(got, first))
                        FAIL("f64=%d, p = %g: %.17g on the %s path with %d threads, %.17g on the first", f64, p, got,
                             optim_isa_name(isas[k]), thread_counts[t], first);
                }
            }
        }
        segs_free(&x);
    }
    return 0;
}

/* ---- The two-loop recursion --------------------------------------------------------- */

/* R(): rounding to the element type. */
static double rnd(int f64, double v)
{
    return f64 ? v : (double)(float)v;
}

static void set_elem(void *p, int f64, size_t j, double v)
{
    if (f64)
        ((double *)p)[j] = v;
    else
        ((float *)p)[j] = (float)v;
}

/* torch 1.13's two loops (torch/optim/lbfgs.py), written plainly over one
 * array: 0-dim tensors round to the element type; add_(x, alpha=a) is one
 * fused multiply-add in it; dot products in the documented order. */
static void ref_direction(int f64, size_t n, size_t m, void *const *dirs, void *const *stps, const double *ro,
                          double h, const void *g, void *d, double *al)
{
    size_t i, j;
    for (i = 0; i < n; i++) set_elem(d, f64, i, -elem(g, f64, i));
    for (j = m; j-- > 0;) {
        double a = rnd(f64, rnd(f64, ref_dot_seg(stps[j], d, n, f64)) * ro[j]);
        al[j] = a;
        for (i = 0; i < n; i++)
            set_elem(d, f64, i,
                     f64 ? fma(-a, elem(dirs[j], 1, i), elem(d, 1, i))
                         : (double)fmaf((float)-a, (float)elem(dirs[j], 0, i), (float)elem(d, 0, i)));
    }
    for (i = 0; i < n; i++) set_elem(d, f64, i, rnd(f64, rnd(f64, h) * elem(d, f64, i)));
    for (j = 0; j < m; j++) {
        double be = rnd(f64, rnd(f64, ref_dot_seg(dirs[j], d, n, f64)) * ro[j]);
        double c = rnd(f64, al[j] - be);
        for (i = 0; i < n; i++)
            set_elem(d, f64, i,
                     f64 ? fma(c, elem(stps[j], 1, i), elem(d, 1, i))
                         : (double)fmaf((float)c, (float)elem(stps[j], 0, i), (float)elem(d, 0, i)));
    }
}

TEST_IMPL(lbfgs_direction_every_path)
{
    test_rng rng = {test_seed() + 3};
    static const size_t ns[] = {1, 33, 20000, 70001};
    int f64;
    for (f64 = 0; f64 < 2; f64++) {
        size_t ni, m, j, k, t, es = f64 ? 8 : 4;
        for (ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
            size_t n = ns[ni];
            void *dirs[5], *stps[5], *g = malloc(n * es), *d = malloc(n * es), *want = malloc(n * es);
            double ro[5], al[5], al_want[5], h = rnd(f64, 0.7);
            if (!g || !d || !want) FAIL("out of memory");
            for (j = 0; j < n; j++) set_elem(g, f64, j, test_rng_normal(&rng));
            for (m = 0; m < 5; m++) {
                double ys;
                dirs[m] = malloc(n * es);
                stps[m] = malloc(n * es);
                if (!dirs[m] || !stps[m]) FAIL("out of memory");
                for (j = 0; j < n; j++) {
                    double s = test_rng_normal(&rng);
                    set_elem(stps[m], f64, j, s);
                    set_elem(dirs[m], f64, j, s * (1.0 + 0.5 * test_rng_uniform(&rng))); /* y . s > 0 */
                }
                ys = rnd(f64, ref_dot_seg(dirs[m], stps[m], n, f64));
                ro[m] = f64 ? 1.0 / ys : (double)(1.0f / (float)ys);
            }
            for (m = 0; m <= 5; m++) {
                ref_direction(f64, n, m, dirs, stps, ro, h, g, want, al_want);
                for (k = 0; k < NISA; k++) {
                    if (!(m == 5 && ni == 0 ? path_exercised(isas[k], "lbfgs_direction_every_path")
                                            : optim_isa_available(isas[k])))
                        continue;
                    for (t = 0; t < sizeof thread_counts / sizeof thread_counts[0]; t++) {
                        memset(d, 0xff, n * es);
                        ASSERT_OK(optim__lbfgs_direction_isa(isas[k], f64 ? OPTIM_FLOAT64 : OPTIM_FLOAT32, n, m,
                                                             (const void *const *)dirs, (const void *const *)stps,
                                                             ro, h, g, d, al, thread_counts[t], NULL));
                        for (j = 0; j < m; j++)
                            if (!same_double(al[j], al_want[j]))
                                FAIL("f64=%d, n = %zu, m = %zu, %s path, %d threads: al[%zu] = %.17g, the reference "
                                     "%.17g (seed %" PRIu64 ")",
                                     f64, n, m, optim_isa_name(isas[k]), thread_counts[t], j, al[j], al_want[j],
                                     test_seed());
                        if (memcmp(d, want, n * es) != 0) {
                            for (j = 0; j < n; j++)
                                if (elem(d, f64, j) != elem(want, f64, j)) break;
                            FAIL("f64=%d, n = %zu, m = %zu, %s path, %d threads: d[%zu] = %.17g, the reference %.17g "
                                 "(seed %" PRIu64 ")",
                                 f64, n, m, optim_isa_name(isas[k]), thread_counts[t], j, elem(d, f64, j),
                                 elem(want, f64, j), test_seed());
                        }
                    }
                }
            }
            for (m = 0; m < 5; m++) {
                free(dirs[m]);
                free(stps[m]);
            }
            free(g);
            free(d);
            free(want);
        }
    }
    return 0;
}

/* On f(x) = x' A x / 2 with A diagonal (n distinct eigenvalues), n
 * A-conjugate pairs s_j = c_j e_j, y_j = A s_j make the recursion's H exactly
 * A^-1 (BFGS keeps every earlier secant equation for conjugate steps):
 * d = -A^-1 g, in float64 to rounding. */
TEST_IMPL(lbfgs_direction_inverts_quadratic)
{
    enum { N = 6 };
    double A[N], g[N], d[N], al[N], ro[N], sv[N][N], yv[N][N];
    const void *dirs[N], *stps[N];
    size_t i, j;
    test_rng rng = {test_seed() + 4};
    for (i = 0; i < N; i++) {
        A[i] = 1.0 + (double)i * 0.75;
        g[i] = test_rng_normal(&rng);
    }
    for (j = 0; j < N; j++) {
        double ys = 0;
        for (i = 0; i < N; i++) {
            sv[j][i] = i == j ? 0.5 + test_rng_uniform(&rng) : 0.0; /* A-conjugate: the hereditary property holds */
            yv[j][i] = A[i] * sv[j][i];
            ys += yv[j][i] * sv[j][i];
        }
        ro[j] = 1.0 / ys;
        dirs[j] = yv[j];
        stps[j] = sv[j];
    }
    ASSERT_OK(optim_lbfgs_direction(OPTIM_FLOAT64, N, N, dirs, stps, ro, 1.0, g, d, al, 1, NULL));
    for (i = 0; i < N; i++)
        if (!(fabs(d[i] + g[i] / A[i]) <= 1e-12 * (1 + fabs(g[i] / A[i]))))
            FAIL("d[%zu] = %.17g, -g/A = %.17g (seed %" PRIu64 ")", i, d[i], -g[i] / A[i], test_seed());
    return 0;
}

/* The overlap rule of the header, pair by pair: does any y[i] overlap a y[k]
 * (k != i) or an x[k] (but x[i] == y[i] when same_ok)? */
static int brute_overlap(size_t count, const float *const *x, float *const *y, const size_t *n, int same_ok)
{
    size_t i, k;
    for (i = 0; i < count; i++)
        for (k = 0; k < count; k++) {
            if (!n[i] || !n[k]) continue;
            if (k != i && y[i] < y[k] + n[k] && y[k] < y[i] + n[i]) return 1;
            if (!(same_ok && k == i && (const float *)y[i] == x[i]) && y[i] < x[k] + n[k] && x[k] < y[i] + n[i])
                return 1;
        }
    return 0;
}

/* rev11a: the overlap checks (sorted, O(count log count)) refuse exactly the
 * layouts the pair-by-pair rule refuses, over random segments in one buffer:
 * identical, nested, touching, empty and repeated segments. */
TEST_IMPL(vec_overlap_checks_as_pairwise)
{
    enum { BUF = 512, MAXC = 24, TRIALS = 4000 };
    static float buf[BUF];
    test_rng rng = {test_seed()};
    int trial, refused[2] = {0, 0};
    for (trial = 0; trial < TRIALS; trial++) {
        const float *x[MAXC];
        float *y[MAXC];
        size_t n[MAXC], count = 1 + (size_t)(test_rng_uniform(&rng) * MAXC), i;
        size_t span = (size_t)(2 + test_rng_uniform(&rng) * 40);
        int op;
        for (i = 0; i < count; i++) {
            double u = test_rng_uniform(&rng);
            n[i] = u < 0.1 ? 0 : (size_t)(1 + test_rng_uniform(&rng) * span);
            y[i] = buf + (size_t)(test_rng_uniform(&rng) * (BUF - n[i]));
            x[i] = u > 0.8 ? y[i] : buf + (size_t)(test_rng_uniform(&rng) * (BUF - n[i]));
            if (i && test_rng_uniform(&rng) < 0.05) y[i] = y[i - 1], n[i] = n[i - 1]; /* repeated */
            if (i && test_rng_uniform(&rng) < 0.05) y[i] = y[i - 1] + n[i - 1];       /* touching */
            if (y[i] + n[i] > buf + BUF) n[i] = (size_t)(buf + BUF - y[i]);
            if (x[i] + n[i] > buf + BUF) x[i] = buf + BUF - n[i];
        }
        for (op = 0; op < 2; op++) {
            optim_error e;
            int want = brute_overlap(count, x, y, n, op == 1), rc;
            rc = op == 0 ? optim_vec_axpy(OPTIM_FLOAT32, count, 0.0, (const void *const *)x, (void *const *)y, n, 1, &e)
                         : optim_vec_scale(OPTIM_FLOAT32, count, 1.0, (const void *const *)x, (void *const *)y, n, 1,
                                           &e);
            if (rc != (want ? OPTIM_EOVERLAP : OPTIM_OK))
                FAIL("trial %d, %s, %zu segments: returned %s (%s), the pairwise rule says %s (seed %" PRIu64 ")",
                     trial, op ? "scale" : "axpy", count, optim_err_name(rc), rc ? e.message : "",
                     want ? "overlap" : "no overlap", test_seed());
            refused[want]++;
        }
    }
    ASSERT(refused[0] > TRIALS / 10 && refused[1] > TRIALS / 10); /* both outcomes well exercised */
    return 0;
}

TEST_IMPL(vec_errors)
{
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y[8] = {0}, before[8];
    const void *xs[1] = {x}, *ys[1] = {y}, *mis[1] = {(const char *)x + 1};
    void *yw[1] = {y}, *xw[1] = {x + 2};
    size_t n[1] = {8}, n4[1] = {4};
    double out = 42, ro[1] = {1}, al[1];
    optim_error e;
    memcpy(before, y, sizeof y);
    ASSERT_ERR(optim_vec_dot(OPTIM_BFLOAT16, 1, xs, ys, n, 0, &out, &e), OPTIM_EUNSUPPORTED, e.message, "dtype = 2");
    ASSERT_ERR(optim_vec_dot(OPTIM_FLOAT32, 1, xs, ys, n, 0, NULL, &e), OPTIM_ENULL, e.message, "out");
    ASSERT_ERR(optim_vec_dot(OPTIM_FLOAT32, 1, mis, ys, n, 0, &out, &e), OPTIM_EINVAL, e.message, "x[0]");
    ASSERT_ERR(optim_vec_dot(OPTIM_FLOAT32, 1, xs, ys, n, -1, &out, &e), OPTIM_EINVAL, e.message, "threads = -1");
    ASSERT_ERR(optim_vec_dot(OPTIM_FLOAT32, 1, xs, NULL, n, 0, &out, &e), OPTIM_ENULL, e.message, "y is NULL");
    ASSERT(out == 42);
    ASSERT_ERR(optim_vec_axpy(OPTIM_FLOAT32, 1, 2.0, xs, xw, n4, 0, &e), OPTIM_EOVERLAP, e.message,
               "y[0] overlaps x[0]");
    ASSERT_ERR(optim_vec_scale(OPTIM_FLOAT32, 1, 2.0, xs, xw, n4, 0, &e), OPTIM_EOVERLAP, e.message,
               "only the very same array");
    {
        void *two[2] = {y, y + 2};
        const void *xx[2] = {x, x + 4};
        size_t nn[2] = {4, 4};
        ASSERT_ERR(optim_vec_axpy(OPTIM_FLOAT32, 2, 2.0, xx, two, nn, 0, &e), OPTIM_EOVERLAP, e.message,
                   "overlaps y[");
    }
    ASSERT_ERR(optim_vec_axpy(OPTIM_FLOAT32, 1, 2.0, xs, yw, n, OPTIM_MAX_THREADS + 1, &e), OPTIM_EINVAL, e.message,
               "threads");
    ASSERT_ERR(optim_vec_norm(OPTIM_FLOAT32, 1, xs, n, 0.0, 0, &out, &e), OPTIM_EINVAL, e.message, "norm_type = 0");
    ASSERT_ERR(optim_vec_norm(OPTIM_FLOAT16, 1, xs, n, 2.0, 0, &out, &e), OPTIM_EUNSUPPORTED, e.message, "dtype = 3");
    ASSERT_ERR(optim_lbfgs_direction(OPTIM_FLOAT32, 8, 1, NULL, xs, ro, 1.0, x, y, al, 0, &e), OPTIM_ENULL,
               e.message, "dirs");
    ASSERT_ERR(optim_lbfgs_direction(OPTIM_FLOAT32, 8, 1, xs, xs, ro, 1.0, x, x, al, 0, &e), OPTIM_EOVERLAP,
               e.message, "d overlaps g");
    ASSERT_ERR(optim_lbfgs_direction(OPTIM_FLOAT32, 8, 1, ys, xs, ro, 1.0, x, y, al, 0, &e), OPTIM_EOVERLAP,
               e.message, "d overlaps dirs[0]");
    ASSERT_ERR(optim_lbfgs_direction(OPTIM_FLOAT32, 8, 1, xs, mis, ro, 1.0, x, y, al, 0, &e), OPTIM_EINVAL,
               e.message, "stps[0]");
    ASSERT(memcmp(y, before, sizeof y) == 0);
    {
        /* rev11a: sizes no array can have. n * element size used to wrap around in the overlap checks (a
         * 2^62 + 2-element float32 y "overlapping" 8 bytes), and the element-wise kernels then wrote until
         * they faulted; two segments' total used to wrap too. Refused with the bad size named, nothing
         * read or written. */
        size_t huge[1] = {SIZE_MAX / 4 + 2}, huge8[1] = {SIZE_MAX / 8 + 1}, big[1] = {(size_t)PTRDIFF_MAX / 4 + 1};
        size_t nine_n[9];
        const void *xx[9];
        double dx[1] = {1}, dd[1] = {0};
        const void *dp[1] = {dx};
        size_t i;
        for (i = 0; i < 9; i++) {
            nine_n[i] = (size_t)PTRDIFF_MAX / 4; /* each possible, not the 9 together: 9 (2^61 - 1) > SIZE_MAX */
            xx[i] = x;
        }
        ASSERT_ERR(optim_vec_axpy(OPTIM_FLOAT32, 1, 2.0, xs, yw, huge, 0, &e), OPTIM_EINVAL, e.message,
                   "n[0] = 4611686018427387905");
        ASSERT_ERR(optim_vec_scale(OPTIM_FLOAT32, 1, 2.0, xs, yw, big, 0, &e), OPTIM_EINVAL, e.message, "n[0] = ");
        ASSERT_ERR(optim_vec_dot(OPTIM_FLOAT32, 1, xs, ys, huge, 0, &out, &e), OPTIM_EINVAL, e.message, "n[0]");
        ASSERT_ERR(optim_vec_norm(OPTIM_FLOAT64, 1, xs, huge8, 2.0, 0, &out, &e), OPTIM_EINVAL, e.message,
                   "n[0] = 2305843009213693952");
        ASSERT_ERR(optim_vec_dot(OPTIM_FLOAT32, 9, xx, xx, nine_n, 0, &out, &e), OPTIM_EINVAL, e.message,
                   "n[8] = 2305843009213693951 brings the total");
        ASSERT_ERR(optim_lbfgs_direction(OPTIM_FLOAT64, SIZE_MAX / 8 + 1, 1, dp, dp, ro, 1.0, dx, dd, al, 0, &e),
                   OPTIM_EINVAL, e.message, "n = 2305843009213693952");
        ASSERT(out == 42);
        ASSERT(memcmp(y, before, sizeof y) == 0);
    }
    ASSERT_ERR(optim__vec_dot_isa((optim_isa)99, OPTIM_FLOAT32, 1, xs, ys, n, 0, &out, &e), OPTIM_EUNSUPPORTED,
               e.message, "not available");
    return 0;
}
