/* test_schedule.c: learning-rate schedules. Each value is checked against the
 * formula written out again here (in the most direct form, not the library's:
 * no period reduction, torch's floating-point cycle arithmetic, a simulation
 * of SGDR's restarts), and schedules attached to an optimizer are checked
 * through the parameters they move. */
#include "grid.h"
#include "optim_checkpoint.h"
#include "optim_schedule.h"
#include "test.h"
#include "schedule_internal.h"

#define PI 3.14159265358979323846

/* |got - want| <= rtol |want| + atol, else fail naming the schedule and step. */
#define ASSERT_CLOSE(what, t, got, want, rtol, atol)                                                       \
    do {                                                                                                \
        double g_ = (got), w_ = (want);                                                                 \
        if (!(fabs(g_ - w_) <= (rtol) * fabs(w_) + (atol)))                                             \
            FAIL("%s, t = %lld: lr %.17g vs expected %.17g (diff %.3g)", (what), (long long)(t), g_, w_, \
                 g_ - w_);                                                                              \
    } while (0)

/* Build a schedule or fail with the library's message; the call passes &e_ as its error. */
#define BUILD(call)                                                                        \
    do {                                                                                   \
        optim_error e_;                                                                    \
        int rc_ = (call);                                                                  \
        if (rc_ != OPTIM_OK) FAIL("%s returned %s: %s", #call, optim_err_name(rc_), e_.message); \
    } while (0)

/* ---- Multiplicative schedules ------------------------------------------------ */

TEST_IMPL(sched_multiplicative)
{
    const double base = 0.1;
    optim_schedule *c = NULL, *st = NULL, *ms = NULL, *ex = NULL, *ms0 = NULL;
    const int64_t miles[] = {700, 30, 300, 300, 0}; /* unsorted, a repeat and 0, as torch allows */
    int64_t t;
    BUILD(optim_schedule_constant(&c, 1.0 / 3, 25, &e_));
    BUILD(optim_schedule_step(&st, 7, 0.5, &e_));
    BUILD(optim_schedule_multistep(&ms, miles, 5, 0.1, &e_));
    BUILD(optim_schedule_exponential(&ex, 0.995, &e_));
    BUILD(optim_schedule_multistep(&ms0, NULL, 0, 0.1, &e_));
    ASSERT_INT(optim_schedule_get_kind(c), ==, OPTIM_SCHED_CONSTANT);
    ASSERT_INT(optim_schedule_get_kind(ms), ==, OPTIM_SCHED_MULTISTEP);
    for (t = 0; t < 3000; t++) {
        int k = 0;
        size_t i;
        for (i = 0; i < 5; i++) k += miles[i] <= t;
        ASSERT_CLOSE("constant", t, optim_schedule_lr(c, base, t), t < 25 ? base / 3 : base, 1e-15, 0);
        ASSERT_CLOSE("step", t, optim_schedule_lr(st, base, t), base * ldexp(1.0, -(int)(t / 7)), 1e-15, 0);
        ASSERT_CLOSE("multistep", t, optim_schedule_lr(ms, base, t), base * pow(0.1, k), 1e-15, 0);
        ASSERT_CLOSE("exponential", t, optim_schedule_lr(ex, base, t), base * exp(t * log(0.995)), 1e-12, 0);
        ASSERT(optim_schedule_lr(ms0, base, t) == base);
    }
    /* After the end: ConstantLR holds base exactly; the multistep at its last value. */
    ASSERT(optim_schedule_lr(c, base, 25) == base && optim_schedule_lr(c, base, 1000000) == base);
    ASSERT_CLOSE("multistep", 5000000, optim_schedule_lr(ms, base, 5000000), base * 1e-5, 1e-14, 0);
    /* A base of 0 stays 0; the base scales the whole schedule. */
    ASSERT(optim_schedule_lr(st, 0.0, 40) == 0.0);
    ASSERT_CLOSE("step x2", 40, optim_schedule_lr(st, 2 * base, 40), 2 * optim_schedule_lr(st, base, 40), 1e-16, 0);
    /* No schedule: the base itself; before step 0: NaN. */
    ASSERT(optim_schedule_lr(NULL, 0.25, 12) == 0.25);
    ASSERT(isnan(optim_schedule_lr(st, base, -1)));
    optim_schedule_free(c);
    optim_schedule_free(st);
    optim_schedule_free(ms);
    optim_schedule_free(ex);
    optim_schedule_free(ms0);
    return 0;
}

TEST_IMPL(sched_linear_polynomial)
{
    static const struct {
        double a, b;
        int64_t n;
    } lin[] = {{1.0 / 3, 1.0, 5}, {1.0, 0.0, 100}, {0.0, 1.0, 1}, {0.25, 0.75, 1000}};
    static const struct {
        int64_t n;
        double power;
    } poly[] = {{5, 1.0}, {1000, 2.0}, {333, 0.5}, {1, 3.0}, {50, 0.0}};
    const double base = 0.05;
    size_t k;
    int64_t t;
    for (k = 0; k < sizeof lin / sizeof lin[0]; k++) {
        optim_schedule *s = NULL;
        BUILD(optim_schedule_linear(&s, lin[k].a, lin[k].b, lin[k].n, &e_));
        for (t = 0; t < 2 * lin[k].n + 10; t++) {
            double f = t >= lin[k].n ? lin[k].b : lin[k].a + (lin[k].b - lin[k].a) * ((double)t / (double)lin[k].n);
            ASSERT_CLOSE("linear", t, optim_schedule_lr(s, base, t), base * f, 1e-14, 1e-18);
        }
        /* After total_iters: end_factor exactly, for ever. */
        ASSERT(optim_schedule_lr(s, base, lin[k].n) == base * lin[k].b);
        ASSERT(optim_schedule_lr(s, base, INT64_MAX) == base * lin[k].b);
        optim_schedule_free(s);
    }
    for (k = 0; k < sizeof poly / sizeof poly[0]; k++) {
        optim_schedule *s = NULL;
        BUILD(optim_schedule_polynomial(&s, poly[k].n, poly[k].power, &e_));
        for (t = 0; t < 2 * poly[k].n + 10; t++) {
            double x = t >= poly[k].n ? 0.0 : 1.0 - (double)t / (double)poly[k].n;
            double want = poly[k].power == 0 ? base : base * pow(x, poly[k].power);
            ASSERT_CLOSE("polynomial", t, optim_schedule_lr(s, base, t), want, 1e-12, 1e-18);
        }
        ASSERT(optim_schedule_lr(s, base, poly[k].n + 7) == (poly[k].power == 0 ? base : 0.0));
        optim_schedule_free(s);
    }
    return 0;
}

/* ---- Cosine ---------------------------------------------------------------- */

TEST_IMPL(sched_cosine)
{
    static const struct {
        int64_t tmax;
        double eta_min, base;
    } cs[] = {{100, 0.0, 0.1}, {7, 1e-3, 0.1}, {1, 0.0, 1.0}, {1000, 0.2, 0.1}};
    size_t k;
    int64_t t;
    for (k = 0; k < sizeof cs / sizeof cs[0]; k++) {
        optim_schedule *s = NULL;
        const double b = cs[k].base, m = cs[k].eta_min;
        const int64_t T = cs[k].tmax;
        BUILD(optim_schedule_cosine(&s, T, m, &e_));
        for (t = 0; t < 5 * T + 3; t++) {
            /* Directly, without reducing t: close to, not bit-equal with, the library. */
            double want = m + (b - m) * (1 + cos(PI * (double)t / (double)T)) / 2;
            ASSERT_CLOSE("cosine", t, optim_schedule_lr(s, b, t), want, 1e-12, 1e-15 * b);
        }
        /* The bottom is eta_min exactly, and the closed form is periodic (torch's). */
        ASSERT(optim_schedule_lr(s, b, T) == m);
        ASSERT(optim_schedule_lr(s, b, 3 * T) == m);
        ASSERT(optim_schedule_lr(s, b, 0) == b && optim_schedule_lr(s, b, 2 * T) == b);
        ASSERT(optim_schedule_lr(s, b, 17 * T + 3) == optim_schedule_lr(s, b, T + 3));
        optim_schedule_free(s);
    }
    return 0;
}

/* torch's CosineAnnealingWarmRestarts.step() without an epoch, replayed. */
TEST_IMPL(sched_cosine_restarts)
{
    static const struct {
        int64_t t0, mult;
        double eta_min;
    } cs[] = {{10, 1, 0.0}, {10, 2, 1e-3}, {1, 3, 0.0}, {37, 1, 0.01}, {5, 10, 0.0}};
    const double b = 0.1;
    size_t k;
    for (k = 0; k < sizeof cs / sizeof cs[0]; k++) {
        optim_schedule *s = NULL;
        int64_t t, t_cur = 0, t_i = cs[k].t0;
        BUILD(optim_schedule_cosine_restarts(&s, cs[k].t0, cs[k].mult, cs[k].eta_min, &e_));
        for (t = 0; t < 5000; t++) {
            double want;
            if (t > 0) {
                t_cur++;
                if (t_cur >= t_i) {
                    t_cur -= t_i;
                    t_i *= cs[k].mult;
                }
            }
            want = cs[k].eta_min + (b - cs[k].eta_min) * (1 + cos(PI * (double)t_cur / (double)t_i)) / 2;
            ASSERT_CLOSE("cosine_restarts", t, optim_schedule_lr(s, b, t), want, 1e-15, 0);
        }
        /* Each restart is back at base exactly. */
        ASSERT(optim_schedule_lr(s, b, 0) == b);
        ASSERT(optim_schedule_lr(s, b, cs[k].t0) == b);
        optim_schedule_free(s);
    }
    {
        /* Far out: T_0 = 1, T_mult = 2 restarts at 2^k - 1; one step past 2^62 - 1
         * the cycle has length 2^62. */
        optim_schedule *s = NULL;
        const int64_t r = ((int64_t)1 << 62) - 1;
        BUILD(optim_schedule_cosine_restarts(&s, 1, 2, 0.0, &e_));
        ASSERT(optim_schedule_lr(s, b, r) == b);
        ASSERT_CLOSE("restarts 2^62", r + 1, optim_schedule_lr(s, b, r + 1),
                     b * (1 + cos(PI * ldexp(1.0, -62))) / 2, 1e-15, 0);
        /* 2^63 - 1 = 1 + 2 + ... + 2^62 starts the next cycle (2^63 steps long). */
        ASSERT(optim_schedule_lr(s, b, INT64_MAX) == b);
        optim_schedule_free(s);
        /* T_0 = 3, T_mult = 7: cycles start at (7^k - 1) / 2; the one starting at
         * (7^22 - 1) / 2 is 3 * 7^22 > 2^63 long, and holds INT64_MAX. */
        BUILD(optim_schedule_cosine_restarts(&s, 3, 7, 0.0, &e_));
        {
            int64_t p7 = 1, start;
            int i;
            for (i = 0; i < 22; i++) p7 *= 7;
            start = (p7 - 1) / 2;
            ASSERT(optim_schedule_lr(s, b, start) == b);
            ASSERT_CLOSE("restarts 3*7^22", INT64_MAX, optim_schedule_lr(s, b, INT64_MAX),
                         b * (1 + cos(PI * (double)(INT64_MAX - start) / (3.0 * (double)p7))) / 2, 1e-12, 0);
        }
        optim_schedule_free(s);
    }
    return 0;
}

/* ---- One-cycle ---------------------------------------------------------- */

/* OneCycleLR from its definition (torch 1.13's get_lr): phase boundaries
 * b_0 = pct T - 1 (and 2 pct T - 2 with three phases), b_last = T - 1; in a
 * phase from boundary p to q (the first from 0) the fraction is
 * (t - p) / (q - p), for every t <= T (at T torch carries the last phase on,
 * pct > 1). Where torch divides by zero (a phase with p = q): 0 at step 0, and
 * at T the value of T - 1. Past T (torch raises) the value of T - 1. */
static double ref_one_cycle(double max_lr, int64_t total, double pct, int cosine, double div, double fdiv, int three,
                            int64_t t)
{
    double init = max_lr / div, lo = init / fdiv, tt = (double)t;
    double bounds[3], from[3], to[3], prev = 0, f;
    int n = three ? 3 : 2, i = 0;
    if (t > total) return ref_one_cycle(max_lr, total, pct, cosine, div, fdiv, three, total - 1);
    bounds[0] = pct * (double)total - 1;
    from[0] = init, to[0] = max_lr;
    if (three) {
        bounds[1] = 2 * pct * (double)total - 2;
        from[1] = max_lr, to[1] = init;
        from[2] = init, to[2] = lo;
    } else {
        from[1] = max_lr, to[1] = lo;
    }
    bounds[n - 1] = (double)(total - 1);
    while (i < n - 1 && tt > bounds[i]) prev = bounds[i++];
    if (bounds[i] == prev && t == total) return ref_one_cycle(max_lr, total, pct, cosine, div, fdiv, three, total - 1);
    f = bounds[i] == prev ? 0.0 : (tt - prev) / (bounds[i] - prev);
    if (cosine) return to[i] + (from[i] - to[i]) * (1 + cos(PI * f)) / 2;
    return from[i] + (to[i] - from[i]) * f;
}

TEST_IMPL(sched_one_cycle)
{
    static const struct {
        double max_lr;
        int64_t total;
        double pct;
        int cosine;
        double div, fdiv;
        int three;
    } cs[] = {{0.1, 1000, 0.3, 1, 25, 1e4, 0}, {0.1, 1000, 0.3, 0, 25, 1e4, 0}, {1.0, 997, 0.25, 1, 10, 100, 1},
              {0.5, 100, 0.45, 0, 4, 1e3, 1},   {0.1, 10, 0.1, 1, 25, 1e4, 0},    {0.1, 50, 0.0, 1, 25, 1e4, 0},
              {0.1, 50, 1.0, 0, 25, 1e4, 0},    {0.1, 1, 0.3, 1, 25, 1e4, 0},     {0.1, 10, 0.55, 1, 25, 1e4, 1},
              {0.1, 10, 0.55, 0, 25, 1e4, 1},   {0.1, 1200, 0.3, 0, 10, 1e3, 1}};
    size_t k;
    for (k = 0; k < sizeof cs / sizeof cs[0]; k++) {
        optim_schedule *s = NULL;
        int64_t t;
        const double init = cs[k].max_lr / cs[k].div, lo = init / cs[k].fdiv;
        char what[64];
        snprintf(what, sizeof what, "one_cycle case %zu", k);
        BUILD(optim_schedule_one_cycle(&s, cs[k].max_lr, cs[k].total, cs[k].pct, cs[k].cosine, cs[k].div, cs[k].fdiv,
                                       cs[k].three, &e_));
        for (t = 0; t < cs[k].total + 20; t++) {
            double want = ref_one_cycle(cs[k].max_lr, cs[k].total, cs[k].pct, cs[k].cosine, cs[k].div, cs[k].fdiv,
                                        cs[k].three, t);
            /* The base lr is ignored: OneCycle's lrs are absolute. */
            /* atol: the linear anneal (min - max) * pct + max cancels at the end. */
            ASSERT_CLOSE(what, t, optim_schedule_lr(s, 123.0, t), want, 1e-13, 1e-15 * cs[k].max_lr);
        }
        /* Starts at max_lr / div_factor (unless the warm-up phase is before step 0). */
        if (cs[k].pct * (double)cs[k].total >= 1)
            ASSERT_CLOSE(what, 0, optim_schedule_lr(s, 1.0, 0), init, 1e-15, 0);
        /* The last step reaches the minimum (when the last phase is the descent
         * to it); every step after total_steps holds the lr of total_steps - 1. */
        if (cs[k].total > 1 && cs[k].pct < 1 && !(cs[k].three && cs[k].pct > 0.5))
            ASSERT_CLOSE(what, cs[k].total - 1, optim_schedule_lr(s, 1.0, cs[k].total - 1), lo, 1e-12,
                         1e-15 * cs[k].max_lr);
        ASSERT(optim_schedule_lr(s, 1.0, cs[k].total + 1) == optim_schedule_lr(s, 1.0, cs[k].total - 1));
        ASSERT(optim_schedule_lr(s, 1.0, INT64_MAX) == optim_schedule_lr(s, 1.0, cs[k].total - 1));
        optim_schedule_free(s);
    }
    {
        /* The peak: pct_start * total - 1 = 299 is a step, at max_lr exactly. */
        optim_schedule *s = NULL;
        BUILD(optim_schedule_one_cycle(&s, 0.1, 1000, 0.3, 1, 25, 1e4, 0, &e_));
        ASSERT(optim_schedule_lr(s, 1.0, 299) == 0.1);
        optim_schedule_free(s);
    }
    {
        /* Step total_steps is torch's, bit for bit: the last phase (steps 299 to 999)
         * carried on to pct = 701 / 700. Linear: min - (max - min) / 700, below 0;
         * cosine: back above the minimum. Values of torch 1.13's get_lr. */
        optim_schedule *lin = NULL, *cosine = NULL, *flat = NULL;
        const double min_lr = 0.1 / 25 / 1e4, pct = 701.0 / 700.0;
        double want_lin = (min_lr - 0.1) * pct + 0.1, want_cos = min_lr + (0.1 - min_lr) / 2.0 * (cos(PI * pct) + 1);
        BUILD(optim_schedule_one_cycle(&lin, 0.1, 1000, 0.3, 0, 25, 1e4, 0, &e_));
        BUILD(optim_schedule_one_cycle(&cosine, 0.1, 1000, 0.3, 1, 25, 1e4, 0, &e_));
        ASSERT(optim_schedule_lr(lin, 1.0, 1000) == want_lin && want_lin < 0);
        ASSERT(optim_schedule_lr(cosine, 1.0, 1000) == want_cos && want_cos > min_lr);
        ASSERT(optim_schedule_lr(lin, 1.0, 1001) == optim_schedule_lr(lin, 1.0, 999));
        /* pct_start = 1: the last phase is empty (torch divides by zero at total_steps): held. */
        BUILD(optim_schedule_one_cycle(&flat, 0.1, 50, 1.0, 0, 25, 1e4, 0, &e_));
        ASSERT(optim_schedule_lr(flat, 1.0, 49) == 0.1 && optim_schedule_lr(flat, 1.0, 50) == 0.1);
        optim_schedule_free(lin);
        optim_schedule_free(cosine);
        optim_schedule_free(flat);
    }
    return 0;
}

/* ---- Cyclic ---------------------------------------------------------------- */

/* torch CyclicLR.get_lr, in its floating-point form. */
static double ref_cyclic(double base, double top, int64_t up, int64_t down, int mode, double gamma, int64_t t)
{
    double total = (double)up + (double)down, ratio = (double)up / total;
    double cycle = floor(1 + (double)t / total), x = 1. + (double)t / total - cycle, sf, scale;
    sf = x <= ratio ? x / ratio : (x - 1) / (ratio - 1);
    scale = mode == OPTIM_CYCLIC_TRIANGULAR2 ? 1 / pow(2., cycle - 1)
            : mode == OPTIM_CYCLIC_EXP_RANGE ? pow(gamma, (double)t)
                                             : 1.0;
    return base + (top - base) * sf * scale;
}

TEST_IMPL(sched_cyclic)
{
    static const struct {
        double base, top;
        int64_t up, down; /* down as passed: OPTIM_CYCLIC_DOWN_AS_UP, 0 (a sawtooth) or a count */
        int mode;
        double gamma;
    } cs[] = {{0.001, 0.1, 20, OPTIM_CYCLIC_DOWN_AS_UP, OPTIM_CYCLIC_TRIANGULAR, 1.0},
              {0.001, 0.1, 13, 30, OPTIM_CYCLIC_TRIANGULAR2, 1.0},
              {0.01, 0.1, 50, 10, OPTIM_CYCLIC_EXP_RANGE, 0.999},
              {0.1, 0.01, 7, OPTIM_CYCLIC_DOWN_AS_UP, OPTIM_CYCLIC_TRIANGULAR, 1.0},
              {0.001, 0.1, 1, 1, OPTIM_CYCLIC_TRIANGULAR2, 1.0},
              {0.0, 1.0, 4, 0, OPTIM_CYCLIC_TRIANGULAR, 1.0},
              {0.001, 0.1, 25, 0, OPTIM_CYCLIC_TRIANGULAR2, 1.0},
              {0.01, 0.1, 30, 0, OPTIM_CYCLIC_EXP_RANGE, 0.998},
              {0.001, 0.1, 1, 0, OPTIM_CYCLIC_TRIANGULAR, 1.0}};
    size_t k;
    for (k = 0; k < sizeof cs / sizeof cs[0]; k++) {
        optim_schedule *s = NULL;
        int64_t t, down = cs[k].down == OPTIM_CYCLIC_DOWN_AS_UP ? cs[k].up : cs[k].down;
        char what[64];
        snprintf(what, sizeof what, "cyclic case %zu", k);
        BUILD(optim_schedule_cyclic(&s, cs[k].base, cs[k].top, cs[k].up, cs[k].down, (optim_cyclic_mode)cs[k].mode,
                                    cs[k].gamma, &e_));
        for (t = 0; t < 3000; t++) {
            double want = ref_cyclic(cs[k].base, cs[k].top, cs[k].up, down, cs[k].mode, cs[k].gamma, t);
            ASSERT_CLOSE(what, t, optim_schedule_lr(s, 55.0, t), want, 1e-12, 1e-15);
        }
        /* Cycle starts are at base_lr exactly, peaks at max_lr (first cycle). */
        ASSERT(optim_schedule_lr(s, 1.0, 0) == cs[k].base);
        ASSERT(optim_schedule_lr(s, 1.0, cs[k].up + down) == cs[k].base);
        if (cs[k].mode == OPTIM_CYCLIC_TRIANGULAR) {
            if (down > 0) ASSERT_CLOSE(what, cs[k].up, optim_schedule_lr(s, 1.0, cs[k].up), cs[k].top, 1e-15, 0);
            /* No end: the same cycle 10^15 steps later (exact integer position). */
            ASSERT(optim_schedule_lr(s, 1.0, (cs[k].up + down) * 1000000000000000LL + 3) ==
                   optim_schedule_lr(s, 1.0, 3));
        }
        optim_schedule_free(s);
    }
    {
        /* torch's CyclicLR(opt, 0.0, 1.0, step_size_up=4, step_size_down=0): a
         * sawtooth 0, .25, .5, .75, 0, ... (the top is never reached); with the
         * descent as long as the ascent, a triangle 0, .25, .5, .75, 1, .75, ... */
        static const double saw[] = {0, 0.25, 0.5, 0.75, 0, 0.25, 0.5, 0.75, 0};
        static const double tri[] = {0, 0.25, 0.5, 0.75, 1, 0.75, 0.5, 0.25, 0};
        optim_schedule *a = NULL, *b = NULL;
        int i;
        BUILD(optim_schedule_cyclic(&a, 0.0, 1.0, 4, 0, OPTIM_CYCLIC_TRIANGULAR, 1.0, &e_));
        BUILD(optim_schedule_cyclic(&b, 0.0, 1.0, 4, OPTIM_CYCLIC_DOWN_AS_UP, OPTIM_CYCLIC_TRIANGULAR, 1.0, &e_));
        for (i = 0; i < 9; i++) {
            ASSERT_CLOSE("sawtooth", i, optim_schedule_lr(a, 1.0, i), saw[i], 0, 0);
            ASSERT_CLOSE("triangle", i, optim_schedule_lr(b, 1.0, i), tri[i], 0, 0);
        }
        optim_schedule_free(a);
        optim_schedule_free(b);
    }
    return 0;
}

/* ---- Warm-up, WSD ------------------------------------------------------------ */

TEST_IMPL(sched_warmup_wsd)
{
    const double base = 6e-4;
    int64_t t;
    {
        /* llm.c's get_learning_rate (in double): warm-up, then cosine to
         * base * frac at train_num_batches. Written with WSD (stable 0). */
        const int64_t warm = 700, total = 5000;
        const double frac = 0.1, min_lr = base * frac;
        optim_schedule *w = NULL;
        BUILD(optim_schedule_wsd(&w, warm, 0, total - warm, min_lr, 1, &e_));
        for (t = 0; t < total + 100; t++) {
            double want;
            if (t < warm)
                want = base * (double)(t + 1) / (double)warm;
            else if (t <= total) {
                double ratio = (double)(t - warm) / (double)(total - warm);
                want = min_lr + 0.5 * (1.0 + cos(PI * ratio)) * (base - min_lr);
            } else
                want = min_lr; /* after the end: held */
            ASSERT_CLOSE("warmup+cosine (wsd)", t, optim_schedule_lr(w, base, t), want, 1e-13, 0);
        }
        ASSERT(optim_schedule_lr(w, base, warm - 1) == base && optim_schedule_lr(w, base, warm) == base);
        ASSERT(optim_schedule_lr(w, base, total) == min_lr && optim_schedule_lr(w, base, INT64_MAX) == min_lr);
        optim_schedule_free(w);
    }
    {
        /* Warm-up before a periodic cosine: the cosine runs on at t - warm. */
        optim_schedule *cos_s = NULL, *w = NULL;
        BUILD(optim_schedule_cosine(&cos_s, 300, 1e-5, &e_));
        BUILD(optim_schedule_warmup(&w, 50, cos_s, &e_));
        ASSERT_INT(optim_schedule_get_kind(w), ==, OPTIM_SCHED_WARMUP);
        for (t = 0; t < 2000; t++) {
            double want = t < 50 ? base * (double)(t + 1) / 50.0
                                 : 1e-5 + (base - 1e-5) * (1 + cos(PI * (double)(t - 50) / 300.0)) / 2;
            ASSERT_CLOSE("warmup(cosine)", t, optim_schedule_lr(w, base, t), want, 1e-12, 1e-18);
        }
        optim_schedule_free(w);
    }
    {
        /* Warm-up ramps to where `after` starts: ConstantLR starts at factor * base,
         * OneCycle at max_lr / div_factor; no after: base for ever. */
        optim_schedule *c = NULL, *w = NULL, *oc = NULL, *w2 = NULL, *w3 = NULL, *w0 = NULL, *e = NULL;
        BUILD(optim_schedule_constant(&c, 0.5, 10, &e_));
        BUILD(optim_schedule_warmup(&w, 4, c, &e_));
        ASSERT_CLOSE("warmup(constant)", 0, optim_schedule_lr(w, base, 0), 0.5 * base / 4, 1e-15, 0);
        ASSERT_CLOSE("warmup(constant)", 3, optim_schedule_lr(w, base, 3), 0.5 * base, 1e-15, 0);
        ASSERT_CLOSE("warmup(constant)", 14, optim_schedule_lr(w, base, 14), base, 1e-15, 0);
        BUILD(optim_schedule_one_cycle(&oc, 0.1, 100, 0.3, 1, 25, 1e4, 0, &e_));
        BUILD(optim_schedule_warmup(&w2, 10, oc, &e_));
        ASSERT_CLOSE("warmup(one_cycle)", 4, optim_schedule_lr(w2, base, 4), 0.004 * 5 / 10, 1e-15, 0);
        ASSERT_CLOSE("warmup(one_cycle)", 10, optim_schedule_lr(w2, base, 10), 0.004, 1e-15, 0);
        BUILD(optim_schedule_warmup(&w3, 8, NULL, &e_));
        ASSERT_CLOSE("warmup()", 1, optim_schedule_lr(w3, base, 1), base / 4, 1e-15, 0);
        ASSERT(optim_schedule_lr(w3, base, 7) == base && optim_schedule_lr(w3, base, 1000000) == base);
        /* warmup_steps = 0: the schedule after it, unchanged. */
        BUILD(optim_schedule_exponential(&e, 0.9, &e_));
        BUILD(optim_schedule_warmup(&w0, 0, e, &e_));
        ASSERT_CLOSE("warmup0(exp)", 5, optim_schedule_lr(w0, base, 5), base * pow(0.9, 5), 1e-15, 0);
        optim_schedule_free(w);
        optim_schedule_free(w2);
        optim_schedule_free(w3);
        optim_schedule_free(w0);
    }
    {
        /* WSD, both decays, with every phase present; then edge cases. */
        const int64_t W = 100, S = 400, D = 250;
        const double m = 1e-5;
        int cosine;
        for (cosine = 0; cosine <= 1; cosine++) {
            optim_schedule *s = NULL;
            BUILD(optim_schedule_wsd(&s, W, S, D, m, cosine, &e_));
            ASSERT_INT(optim_schedule_get_kind(s), ==, OPTIM_SCHED_WSD);
            for (t = 0; t < W + S + D + 50; t++) {
                double want;
                if (t < W)
                    want = base * (double)(t + 1) / (double)W;
                else if (t < W + S)
                    want = base;
                else if (t < W + S + D) {
                    double x = (double)(t - W - S) / (double)D;
                    want = cosine ? m + (base - m) * 0.5 * (1 + cos(PI * x)) : base + (m - base) * x;
                } else
                    want = m;
                ASSERT_CLOSE(cosine ? "wsd cosine" : "wsd linear", t, optim_schedule_lr(s, base, t), want, 1e-12, 1e-18);
            }
            ASSERT(optim_schedule_lr(s, base, W + S) == base);
            ASSERT(optim_schedule_lr(s, base, W + S + D) == m);
            optim_schedule_free(s);
        }
        {
            optim_schedule *s = NULL;
            /* No warm-up, no stable phase, no decay: eta_min from step 0. */
            BUILD(optim_schedule_wsd(&s, 0, 0, 0, m, 0, &e_));
            ASSERT(optim_schedule_lr(s, base, 0) == m);
            optim_schedule_free(s);
            BUILD(optim_schedule_wsd(&s, 3, 0, 0, m, 1, &e_));
            ASSERT(optim_schedule_lr(s, base, 2) == base && optim_schedule_lr(s, base, 3) == m);
            optim_schedule_free(s);
        }
    }
    return 0;
}

/* ---- Sequential ---------------------------------------------------------- */

TEST_IMPL(sched_sequential)
{
    const double base = 0.3;
    optim_schedule *parts[3] = {NULL, NULL, NULL}, *ref[3] = {NULL, NULL, NULL}, *seq = NULL, *inner = NULL;
    optim_schedule *outer[2] = {NULL, NULL}, *nested = NULL;
    const int64_t miles[2] = {20, 520};
    int64_t t;
    int i;
    BUILD(optim_schedule_linear(&parts[0], 0.01, 1.0, 20, &e_));
    BUILD(optim_schedule_cosine(&parts[1], 500, 1e-3, &e_));
    BUILD(optim_schedule_step(&parts[2], 100, 0.5, &e_));
    for (i = 0; i < 3; i++) ASSERT((ref[i] = optim_schedule_clone(parts[i])) != NULL);
    BUILD(optim_schedule_sequential(&seq, parts, 3, miles, &e_));
    ASSERT_INT(optim_schedule_get_kind(seq), ==, OPTIM_SCHED_SEQUENTIAL);
    for (t = 0; t < 2000; t++) {
        double want = t < 20 ? optim_schedule_lr(ref[0], base, t)
                      : t < 520 ? optim_schedule_lr(ref[1], base, t - 20)
                                : optim_schedule_lr(ref[2], base, t - 520);
        ASSERT(optim_schedule_lr(seq, base, t) == want);
    }
    /* Each part starts at its own step 0 at its milestone. */
    ASSERT(optim_schedule_lr(seq, base, 20) == base);
    ASSERT(optim_schedule_lr(seq, base, 520) == base);
    /* One schedule and no milestones: that schedule. */
    BUILD(optim_schedule_exponential(&inner, 0.99, &e_));
    BUILD(optim_schedule_sequential(&nested, &inner, 1, NULL, &e_));
    ASSERT_CLOSE("sequential of one", 33, optim_schedule_lr(nested, base, 33), base * pow(0.99, 33), 1e-14, 0);
    /* Sequential inside sequential. */
    outer[0] = nested;
    outer[1] = seq;
    BUILD(optim_schedule_sequential(&seq, outer, 2, (const int64_t[]){10}, &e_));
    ASSERT_CLOSE("nested sequential", 5, optim_schedule_lr(seq, base, 5), base * pow(0.99, 5), 1e-14, 0);
    ASSERT(optim_schedule_lr(seq, base, 10 + 600) == optim_schedule_lr(ref[2], base, 80));
    optim_schedule_free(seq);
    for (i = 0; i < 3; i++) optim_schedule_free(ref[i]);
    return 0;
}

/* ---- Huge steps: every schedule is O(1) (restarts O(log t)) and exact ------ */

TEST_IMPL(sched_huge_steps)
{
    const int64_t big[] = {1000000000LL, 1000000000000000000LL, INT64_MAX};
    optim_schedule *s[12];
    const int64_t miles[] = {5, 1000000000LL};
    const int n = 12;
    int i, j;
    memset(s, 0, sizeof s);
    BUILD(optim_schedule_constant(&s[0], 0.5, 1000000000LL, &e_));
    BUILD(optim_schedule_step(&s[1], 3, 0.999999, &e_));
    BUILD(optim_schedule_multistep(&s[2], miles, 2, 0.5, &e_));
    BUILD(optim_schedule_exponential(&s[3], 1.0, &e_));
    BUILD(optim_schedule_linear(&s[4], 0.1, 0.9, 1000000000LL, &e_));
    BUILD(optim_schedule_polynomial(&s[5], 2000000000LL, 2.0, &e_));
    BUILD(optim_schedule_cosine(&s[6], 1000, 0.0, &e_));
    BUILD(optim_schedule_cosine_restarts(&s[7], 1000, 1, 0.0, &e_));
    BUILD(optim_schedule_one_cycle(&s[8], 0.1, 1000000, 0.3, 1, 25, 1e4, 1, &e_));
    BUILD(optim_schedule_cyclic(&s[9], 0.01, 0.1, 2000, OPTIM_CYCLIC_DOWN_AS_UP, OPTIM_CYCLIC_TRIANGULAR2, 1.0, &e_));
    BUILD(optim_schedule_wsd(&s[10], 1000, 1000000000LL, 1000, 0.0, 0, &e_));
    BUILD(optim_schedule_cosine_restarts(&s[11], 3, 7, 0.0, &e_));
    for (i = 0; i < n; i++)
        for (j = 0; j < 3; j++) {
            double lr = optim_schedule_lr(s[i], 1.0, big[j]);
            if (!(lr >= 0 && lr <= 1)) FAIL("schedule %d at t = %lld: lr %.17g", i, (long long)big[j], lr);
        }
    /* Exact values far out. */
    ASSERT(optim_schedule_lr(s[0], 1.0, 999999999LL) == 0.5 && optim_schedule_lr(s[0], 1.0, big[0]) == 1.0);
    ASSERT_CLOSE("step", big[0], optim_schedule_lr(s[1], 1.0, big[0]), exp(333333333.0 * log(0.999999)), 1e-6, 0);
    ASSERT(optim_schedule_lr(s[2], 1.0, big[0]) == 0.25 && optim_schedule_lr(s[2], 1.0, big[0] - 1) == 0.5);
    ASSERT(optim_schedule_lr(s[3], 1.0, INT64_MAX) == 1.0);
    ASSERT(optim_schedule_lr(s[4], 1.0, big[0]) == 0.9);
    ASSERT_CLOSE("polynomial", big[0], optim_schedule_lr(s[5], 1.0, big[0]), 0.25, 1e-15, 0);
    /* 10^9 and 10^18 are multiples of 2 t_max = 2000: back at base; INT64_MAX mod 2000 = 1807. */
    ASSERT(optim_schedule_lr(s[6], 1.0, big[0]) == 1.0 && optim_schedule_lr(s[6], 1.0, big[1]) == 1.0);
    ASSERT_CLOSE("cosine", INT64_MAX, optim_schedule_lr(s[6], 1.0, INT64_MAX), (1 + cos(PI * 1807 / 1000.0)) / 2,
                 1e-15, 1e-17);
    ASSERT(optim_schedule_lr(s[7], 1.0, big[1]) == 1.0);
    ASSERT(optim_schedule_lr(s[8], 1.0, big[2]) == optim_schedule_lr(s[8], 1.0, 999999));
    ASSERT(optim_schedule_lr(s[9], 1.0, big[1]) == 0.01); /* a cycle start, amplitude underflowed */
    ASSERT(optim_schedule_lr(s[10], 1.0, big[0]) == 1.0 && optim_schedule_lr(s[10], 1.0, big[1]) == 0.0);
    for (i = 0; i < n; i++) optim_schedule_free(s[i]);
    return 0;
}

/* ---- Validation ---------------------------------------------------------- */

TEST_IMPL(sched_errors)
{
    optim_schedule *s = (optim_schedule *)&s; /* must be set to NULL on failure */
    optim_error err;
    const int64_t bad_miles[] = {3, -2};
    optim_schedule *kids[2] = {NULL, NULL};

#define EXPECT(call, status, needle)                                 \
    do {                                                             \
        s = (optim_schedule *)&s;                                    \
        ASSERT_ERR(call, status, err.message, needle);               \
        ASSERT(s == NULL);                                           \
        ASSERT_INT(err.code, ==, status);                            \
    } while (0)

    EXPECT(optim_schedule_constant(&s, 1.5, 5, &err), OPTIM_EINVAL, "factor = 1.5");
    EXPECT(optim_schedule_constant(&s, -0.1, 5, &err), OPTIM_EINVAL, "factor = -0.1");
    EXPECT(optim_schedule_constant(&s, NAN, 5, &err), OPTIM_EINVAL, "factor = nan");
    EXPECT(optim_schedule_constant(&s, 0.5, 0, &err), OPTIM_EINVAL, "total_iters = 0");
    ASSERT_ERR(optim_schedule_constant(NULL, 0.5, 5, &err), OPTIM_ENULL, err.message, "out is NULL");
    EXPECT(optim_schedule_step(&s, 0, 0.1, &err), OPTIM_EINVAL, "step_size = 0");
    EXPECT(optim_schedule_step(&s, 10, -0.5, &err), OPTIM_EINVAL, "gamma = -0.5");
    EXPECT(optim_schedule_step(&s, 10, INFINITY, &err), OPTIM_EINVAL, "gamma = inf");
    EXPECT(optim_schedule_multistep(&s, bad_miles, 2, 0.1, &err), OPTIM_EINVAL, "milestones[1] = -2");
    EXPECT(optim_schedule_multistep(&s, NULL, 2, 0.1, &err), OPTIM_ENULL, "milestones is NULL");
    EXPECT(optim_schedule_multistep(&s, bad_miles, 1, NAN, &err), OPTIM_EINVAL, "gamma = nan");
    EXPECT(optim_schedule_exponential(&s, -1.0, &err), OPTIM_EINVAL, "gamma = -1");
    EXPECT(optim_schedule_linear(&s, 1.2, 1.0, 5, &err), OPTIM_EINVAL, "start_factor = 1.2");
    EXPECT(optim_schedule_linear(&s, 0.5, -1.0, 5, &err), OPTIM_EINVAL, "end_factor = -1");
    EXPECT(optim_schedule_linear(&s, 0.5, 1.0, -5, &err), OPTIM_EINVAL, "total_iters = -5");
    EXPECT(optim_schedule_polynomial(&s, 0, 1.0, &err), OPTIM_EINVAL, "total_iters = 0");
    EXPECT(optim_schedule_polynomial(&s, 10, -1.0, &err), OPTIM_EINVAL, "power = -1");
    EXPECT(optim_schedule_cosine(&s, 0, 0.0, &err), OPTIM_EINVAL, "t_max = 0");
    EXPECT(optim_schedule_cosine(&s, INT64_MAX, 0.0, &err), OPTIM_EINVAL, "t_max = 9223372036854775807");
    EXPECT(optim_schedule_cosine(&s, 10, -1e-3, &err), OPTIM_EINVAL, "eta_min = -0.001");
    EXPECT(optim_schedule_cosine_restarts(&s, 0, 1, 0.0, &err), OPTIM_EINVAL, "t_0 = 0");
    EXPECT(optim_schedule_cosine_restarts(&s, 10, 0, 0.0, &err), OPTIM_EINVAL, "t_mult = 0");
    EXPECT(optim_schedule_cosine_restarts(&s, 10, 2, INFINITY, &err), OPTIM_EINVAL, "eta_min = inf");
    EXPECT(optim_schedule_one_cycle(&s, -0.1, 100, 0.3, 1, 25, 1e4, 0, &err), OPTIM_EINVAL, "max_lr = -0.1");
    EXPECT(optim_schedule_one_cycle(&s, 0.1, 0, 0.3, 1, 25, 1e4, 0, &err), OPTIM_EINVAL, "total_steps = 0");
    EXPECT(optim_schedule_one_cycle(&s, 0.1, 100, 1.3, 1, 25, 1e4, 0, &err), OPTIM_EINVAL, "pct_start = 1.3");
    EXPECT(optim_schedule_one_cycle(&s, 0.1, 100, 0.3, 2, 25, 1e4, 0, &err), OPTIM_EINVAL, "anneal_cos = 2");
    EXPECT(optim_schedule_one_cycle(&s, 0.1, 100, 0.3, 1, 0, 1e4, 0, &err), OPTIM_EINVAL, "div_factor = 0");
    EXPECT(optim_schedule_one_cycle(&s, 0.1, 100, 0.3, 1, 25, -1, 0, &err), OPTIM_EINVAL, "final_div_factor = -1");
    EXPECT(optim_schedule_one_cycle(&s, 0.1, 100, 0.3, 1, 25, 1e4, 5, &err), OPTIM_EINVAL, "three_phase = 5");
    EXPECT(optim_schedule_cyclic(&s, -1, 0.1, 10, 0, OPTIM_CYCLIC_TRIANGULAR, 1.0, &err), OPTIM_EINVAL,
           "base_lr = -1");
    EXPECT(optim_schedule_cyclic(&s, 0.01, NAN, 10, 0, OPTIM_CYCLIC_TRIANGULAR, 1.0, &err), OPTIM_EINVAL,
           "max_lr = nan");
    EXPECT(optim_schedule_cyclic(&s, 0.01, 0.1, 0, 0, OPTIM_CYCLIC_TRIANGULAR, 1.0, &err), OPTIM_EINVAL,
           "step_size_up = 0");
    EXPECT(optim_schedule_cyclic(&s, 0.01, 0.1, 10, -2, OPTIM_CYCLIC_TRIANGULAR, 1.0, &err), OPTIM_EINVAL,
           "step_size_down = -2 must be >= 0 (0: no descent, a sawtooth), or OPTIM_CYCLIC_DOWN_AS_UP (-1)");
    EXPECT(optim_schedule_cyclic(&s, 0.01, 0.1, 10, -3, OPTIM_CYCLIC_TRIANGULAR, 1.0, &err), OPTIM_EINVAL,
           "step_size_down = -3");
    EXPECT(optim_schedule_cyclic(&s, 0.01, 0.1, INT64_MAX, 1, OPTIM_CYCLIC_TRIANGULAR, 1.0, &err), OPTIM_EINVAL,
           "overflows");
    EXPECT(optim_schedule_cyclic(&s, 0.01, 0.1, 10, 0, (optim_cyclic_mode)7, 1.0, &err), OPTIM_EINVAL, "mode = 7");
    EXPECT(optim_schedule_cyclic(&s, 0.01, 0.1, 10, 0, OPTIM_CYCLIC_EXP_RANGE, 0.0, &err), OPTIM_EINVAL,
           "gamma = 0");
    EXPECT(optim_schedule_cyclic(&s, 0.01, 0.1, 10, 0, OPTIM_CYCLIC_TRIANGULAR, 0.99, &err), OPTIM_EINVAL,
           "gamma = 0.98999999999999999 is only used by mode OPTIM_CYCLIC_EXP_RANGE");
    EXPECT(optim_schedule_warmup(&s, -1, NULL, &err), OPTIM_EINVAL, "warmup_steps = -1");
    EXPECT(optim_schedule_wsd(&s, -1, 0, 10, 0.0, 0, &err), OPTIM_EINVAL, "warmup_steps = -1");
    EXPECT(optim_schedule_wsd(&s, 1, -1, 10, 0.0, 0, &err), OPTIM_EINVAL, "stable_steps = -1");
    EXPECT(optim_schedule_wsd(&s, 1, 1, -10, 0.0, 0, &err), OPTIM_EINVAL, "decay_steps = -10");
    EXPECT(optim_schedule_wsd(&s, INT64_MAX, 1, 0, 0.0, 0, &err), OPTIM_EINVAL, "overflows");
    EXPECT(optim_schedule_wsd(&s, 1, 1, 1, -1.0, 0, &err), OPTIM_EINVAL, "eta_min = -1");
    EXPECT(optim_schedule_wsd(&s, 1, 1, 1, 0.0, 3, &err), OPTIM_EINVAL, "decay_cosine = 3");
    /* Composites own their arguments even when they fail (a leak here shows under ASan). */
    BUILD(optim_schedule_exponential(&kids[0], 0.9, &e_));
    EXPECT(optim_schedule_warmup(&s, -5, kids[0], &err), OPTIM_EINVAL, "warmup_steps = -5");
    BUILD(optim_schedule_exponential(&kids[0], 0.9, &e_));
    ASSERT_ERR(optim_schedule_warmup(NULL, 5, kids[0], &err), OPTIM_ENULL, err.message, "out is NULL");
    BUILD(optim_schedule_exponential(&kids[0], 0.9, &e_));
    BUILD(optim_schedule_exponential(&kids[1], 0.9, &e_));
    EXPECT(optim_schedule_sequential(&s, kids, 2, (const int64_t[]){0}, &err), OPTIM_EINVAL,
           "milestones[0] = 0 must be >= 1");
    BUILD(optim_schedule_exponential(&kids[0], 0.9, &e_));
    BUILD(optim_schedule_exponential(&kids[1], 0.9, &e_));
    EXPECT(optim_schedule_sequential(&s, kids, 2, NULL, &err), OPTIM_ENULL, "milestones is NULL");
    {
        optim_schedule *three[3] = {NULL, NULL, NULL};
        BUILD(optim_schedule_exponential(&three[0], 0.9, &e_));
        BUILD(optim_schedule_exponential(&three[1], 0.9, &e_));
        BUILD(optim_schedule_exponential(&three[2], 0.9, &e_));
        EXPECT(optim_schedule_sequential(&s, three, 3, (const int64_t[]){10, 10}, &err), OPTIM_EINVAL,
               "milestones[1] = 10 must be > milestones[0] = 10");
        BUILD(optim_schedule_exponential(&three[0], 0.9, &e_));
        three[1] = NULL;
        BUILD(optim_schedule_exponential(&three[2], 0.9, &e_));
        EXPECT(optim_schedule_sequential(&s, three, 3, (const int64_t[]){10, 20}, &err), OPTIM_ENULL,
               "schedules[1] is NULL");
    }
    EXPECT(optim_schedule_sequential(&s, kids, 0, NULL, &err), OPTIM_EINVAL, "count = 0");
    EXPECT(optim_schedule_sequential(&s, NULL, 2, NULL, &err), OPTIM_ENULL, "schedules is NULL");
    /* err may be NULL. */
    ASSERT_INT(optim_schedule_step(&s, 0, 0.1, NULL), ==, OPTIM_EINVAL);
    /* Success clears *err. */
    ASSERT_OK(optim_schedule_step(&s, 1, 0.1, &err));
    ASSERT(err.code == OPTIM_OK && err.message[0] == '\0');
    optim_schedule_free(s);
    optim_schedule_free(NULL);
    ASSERT_INT(optim_schedule_get_kind(NULL), ==, 0);
    ASSERT(optim_schedule_clone(NULL) == NULL);
#undef EXPECT
    return 0;
}

TEST_IMPL(sched_clone_free)
{
    optim_schedule *a = NULL, *b = NULL, *c = NULL, *w = NULL, *seq = NULL, *copy, *parts[2];
    const int64_t miles[] = {100, 10, 50};
    int64_t t;
    BUILD(optim_schedule_multistep(&a, miles, 3, 0.5, &e_));
    BUILD(optim_schedule_cyclic(&b, 0.01, 0.1, 17, 5, OPTIM_CYCLIC_EXP_RANGE, 0.99, &e_));
    BUILD(optim_schedule_cosine(&c, 40, 0.0, &e_));
    BUILD(optim_schedule_warmup(&w, 7, c, &e_));
    parts[0] = a;
    parts[1] = w;
    BUILD(optim_schedule_sequential(&seq, parts, 2, (const int64_t[]){200}, &e_));
    copy = optim_schedule_clone(seq);
    ASSERT(copy != NULL && copy != seq);
    {
        /* The copy gives the same bits at every step, also after the original is freed. */
        double before[600];
        for (t = 0; t < 600; t++) before[t] = optim_schedule_lr(seq, 0.2, t);
        optim_schedule_free(seq);
        for (t = 0; t < 600; t++)
            if (optim_schedule_lr(copy, 0.2, t) != before[t]) FAIL("clone differs at t = %lld", (long long)t);
    }
    optim_schedule_free(copy);
    copy = optim_schedule_clone(b);
    for (t = 0; t < 500; t++) ASSERT(optim_schedule_lr(copy, 1.0, t) == optim_schedule_lr(b, 1.0, t));
    ASSERT_INT(optim_schedule_get_kind(copy), ==, OPTIM_SCHED_CYCLIC);
    optim_schedule_free(copy);
    optim_schedule_free(b);
    return 0;
}

/* A schedule rebuilt from its stored parts (what a checkpoint keeps) is the
 * same schedule; parts that no constructor accepts are refused. */
static optim_schedule *rebuild(const optim_schedule *s)
{
    optim_schedule *kids[8], *out = NULL;
    size_t i;
    for (i = 0; i < s->nchildren && i < 8; i++) kids[i] = rebuild(s->children[i]);
    if (optim__schedule_from_parts(&out, s->kind, s->ints, s->reals, s->milestones, s->nmilestones, kids,
                                   s->nchildren, NULL) != OPTIM_OK)
        return NULL;
    return out;
}

TEST_IMPL(sched_from_parts)
{
    optim_schedule *all[13] = {NULL}, *tmp[3] = {NULL};
    const int64_t miles[] = {30, 10, 30};
    size_t k;
    int64_t t;
    optim_error err;
    BUILD(optim_schedule_constant(&all[0], 0.3, 40, &e_));
    BUILD(optim_schedule_step(&all[1], 25, 0.7, &e_));
    BUILD(optim_schedule_multistep(&all[2], miles, 3, 0.5, &e_));
    BUILD(optim_schedule_exponential(&all[3], 0.995, &e_));
    BUILD(optim_schedule_linear(&all[4], 0.1, 1.0, 300, &e_));
    BUILD(optim_schedule_polynomial(&all[5], 500, 2.0, &e_));
    BUILD(optim_schedule_cosine(&all[6], 250, 1e-4, &e_));
    BUILD(optim_schedule_cosine_restarts(&all[7], 50, 2, 1e-5, &e_));
    BUILD(optim_schedule_one_cycle(&all[8], 0.1, 1000, 0.3, 1, 25, 1e4, 1, &e_));
    BUILD(optim_schedule_cyclic(&all[9], 1e-3, 1e-2, 100, 40, OPTIM_CYCLIC_TRIANGULAR2, 1.0, &e_));
    BUILD(optim_schedule_cosine(&tmp[0], 900, 0.0, &e_));
    BUILD(optim_schedule_warmup(&all[10], 100, tmp[0], &e_));
    BUILD(optim_schedule_wsd(&all[11], 50, 400, 300, 1e-5, 1, &e_));
    BUILD(optim_schedule_exponential(&tmp[1], 0.99, &e_));
    BUILD(optim_schedule_step(&tmp[2], 10, 0.5, &e_));
    BUILD(optim_schedule_sequential(&all[12], (optim_schedule *const[]){tmp[1], tmp[2]}, 2, (const int64_t[]){77},
                                    &e_));
    for (k = 0; k < 13; k++) {
        optim_schedule *r = rebuild(all[k]);
        if (!r) FAIL("kind %d could not be rebuilt from its parts", (int)optim_schedule_get_kind(all[k]));
        for (t = 0; t < 2000; t++) {
            double a = optim_schedule_lr(all[k], 0.05, t), b = optim_schedule_lr(r, 0.05, t);
            if (memcmp(&a, &b, sizeof a) != 0)
                FAIL("kind %d at t = %lld: %.17g rebuilt vs %.17g", (int)all[k]->kind, (long long)t, b, a);
        }
        optim_schedule_free(r);
    }
    {
        optim_schedule *out = NULL;
        int64_t ints[OPTIM__SCHED_NI] = {0, 0, 0, 0};
        double reals[OPTIM__SCHED_NR] = {0.5, 0, 0, 0};
        /* step_size 0: refused with the constructor's message. */
        ASSERT_ERR(optim__schedule_from_parts(&out, OPTIM_SCHED_STEP, ints, reals, NULL, 0, NULL, 0, &err),
                   OPTIM_EINVAL, err.message, "step_size = 0");
        ASSERT_ERR(optim__schedule_from_parts(&out, (optim_schedule_kind)99, ints, reals, NULL, 0, NULL, 0, &err),
                   OPTIM_EINVAL, err.message, "kind = 99");
        {
            optim_schedule *kids[2] = {NULL, NULL};
            BUILD(optim_schedule_exponential(&kids[0], 0.9, &e_));
            BUILD(optim_schedule_exponential(&kids[1], 0.8, &e_));
            /* Two children need one milestone; the children are freed on failure (no leak under ASan). */
            ASSERT_ERR(optim__schedule_from_parts(&out, OPTIM_SCHED_SEQUENTIAL, ints, reals, NULL, 0, kids, 2, &err),
                       OPTIM_EINVAL, err.message, "cannot have 2 children and 0 milestones");
        }
        ints[2] = 7;
        ASSERT_ERR(optim__schedule_from_parts(&out, OPTIM_SCHED_CYCLIC, ints, reals, NULL, 0, NULL, 0, &err),
                   OPTIM_EINVAL, err.message, "cyclic mode = 7");
        ASSERT(out == NULL);
    }
    {
        /* CYCLIC's step_size_down in the stored encoding: 0 is "as step_size_up",
         * what every format-1 checkpoint with the old default (0) meant, -1 no descent. */
        optim_schedule *as_up = NULL, *saw = NULL, *out = NULL;
        int64_t ints[OPTIM__SCHED_NI] = {6, 0, OPTIM_CYCLIC_TRIANGULAR, 0};
        double reals[OPTIM__SCHED_NR] = {0.0, 1.0, 1.0, 0};
        BUILD(optim_schedule_cyclic(&as_up, 0.0, 1.0, 6, OPTIM_CYCLIC_DOWN_AS_UP, OPTIM_CYCLIC_TRIANGULAR, 1.0, &e_));
        BUILD(optim_schedule_cyclic(&saw, 0.0, 1.0, 6, 0, OPTIM_CYCLIC_TRIANGULAR, 1.0, &e_));
        ASSERT_INT(as_up->ints[1], ==, 0);
        ASSERT_INT(saw->ints[1], ==, -1);
        BUILD(optim__schedule_from_parts(&out, OPTIM_SCHED_CYCLIC, ints, reals, NULL, 0, NULL, 0, &e_));
        ASSERT(optim_schedule_lr(out, 1.0, 6) == 1.0 && optim_schedule_lr(out, 1.0, 9) == 0.5); /* a triangle */
        for (t = 0; t < 100; t++) ASSERT(optim_schedule_lr(out, 1.0, t) == optim_schedule_lr(as_up, 1.0, t));
        optim_schedule_free(out);
        ints[1] = -1;
        BUILD(optim__schedule_from_parts(&out, OPTIM_SCHED_CYCLIC, ints, reals, NULL, 0, NULL, 0, &e_));
        ASSERT(optim_schedule_lr(out, 1.0, 6) == 0.0 && optim_schedule_lr(out, 1.0, 9) == 0.5); /* a sawtooth */
        for (t = 0; t < 100; t++) ASSERT(optim_schedule_lr(out, 1.0, t) == optim_schedule_lr(saw, 1.0, t));
        optim_schedule_free(out);
        ints[1] = 4;
        BUILD(optim__schedule_from_parts(&out, OPTIM_SCHED_CYCLIC, ints, reals, NULL, 0, NULL, 0, &e_));
        ASSERT(optim_schedule_lr(out, 1.0, 8) == 0.5 && optim_schedule_lr(out, 1.0, 10) == 0.0);
        optim_schedule_free(out);
        ints[1] = -2;
        ASSERT_ERR(optim__schedule_from_parts(&out, OPTIM_SCHED_CYCLIC, ints, reals, NULL, 0, NULL, 0, &err),
                   OPTIM_EINVAL, err.message, "step_size_down = -2");
        ASSERT(out == NULL);
        optim_schedule_free(as_up);
        optim_schedule_free(saw);
    }
    for (k = 0; k < 13; k++) optim_schedule_free(all[k]);
    return 0;
}

/* ---- Attached to an optimizer -------------------------------------------- */

/* SGD without momentum moves p by exactly -lr * g: with p = 0 and g = 1
 * before each step, -p is the (float) lr the step used. */
TEST_IMPL(sched_attach_sgd)
{
    optim *o = NULL;
    optim_hparams hp;
    optim_schedule *s = NULL, *s2 = NULL;
    float p0[3], g0[3] = {1, 1, 1}, p1[2], g1[2] = {1, 1};
    const double lr0 = 0.1, lr1 = 0.02;
    size_t g;
    int64_t t, st;
    double cur;
    ASSERT_OK(optim_hparams_init(&hp, OPTIM_SGD, NULL));
    hp.lr = lr0;
    ASSERT_OK(optim_create(&o, OPTIM_SGD));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, &g));
    hp.lr = lr1;
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, &g));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p0, g0, 3, "a", NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 1, p1, g1, 2, "b", NULL));
    BUILD(optim_schedule_wsd(&s, 10, 20, 30, 1e-4, 1, &e_));
    BUILD(optim_schedule_step(&s2, 5, 0.5, &e_));
    ASSERT_OPT_OK(o, optim_group_set_schedule(o, 0, s));
    ASSERT_OPT_OK(o, optim_group_set_schedule(o, 1, s2));
    /* The groups hold copies: the originals can go. */
    ASSERT(optim_group_get_schedule(o, 0) != s && optim_group_get_schedule(o, 0) != NULL);
    optim_schedule_free(s);
    optim_schedule_free(s2);
    for (t = 0; t < 100; t++) {
        double want0 = t < 10 ? lr0 * (double)(t + 1) / 10 : t < 30 ? lr0
                       : t < 60 ? 1e-4 + (lr0 - 1e-4) * (1 + cos(PI * (double)(t - 30) / 30)) / 2
                                : 1e-4;
        double want1 = lr1 * ldexp(1.0, -(int)(t / 5));
        ASSERT_OPT_OK(o, optim_group_current_lr(o, 0, &cur));
        ASSERT_CLOSE("group 0 current_lr", t, cur, want0, 1e-13, 0);
        ASSERT_OPT_OK(o, optim_group_get_schedule_step(o, 1, &st));
        ASSERT_INT(st, ==, t);
        memset(p0, 0, sizeof p0);
        memset(p1, 0, sizeof p1);
        ASSERT_OPT_OK(o, optim_step(o));
        if (p0[0] != -(float)cur || p0[2] != p0[0]) FAIL("t = %lld: p0 moved by %.9g, lr %.17g", (long long)t, p0[0], cur);
        ASSERT_CLOSE("group 0 step", t, -(double)p0[1], want0, 1e-7, 0);
        ASSERT_CLOSE("group 1 step", t, -(double)p1[0], want1, 1e-7, 0);
    }
    /* The base lr is the group's lr: changing it rescales the schedule. */
    ASSERT_OPT_OK(o, optim_group_set_hparam(o, 1, OPTIM_HP_LR, 2 * lr1));
    ASSERT_OPT_OK(o, optim_group_current_lr(o, 1, &cur));
    ASSERT_CLOSE("rescaled", 100, cur, 2 * lr1 * ldexp(1.0, -20), 1e-15, 0);
    {
        /* Resume: set the schedule step. */
        double hp_lr;
        ASSERT_OPT_OK(o, optim_group_set_schedule_step(o, 0, 15));
        ASSERT_OPT_OK(o, optim_group_current_lr(o, 0, &cur));
        ASSERT(cur == lr0);
        ASSERT_OPT_OK(o, optim_group_set_schedule_step(o, 0, 5));
        ASSERT_OPT_OK(o, optim_group_current_lr(o, 0, &cur));
        ASSERT_CLOSE("resumed", 5, cur, lr0 * 6 / 10, 1e-15, 0);
        /* Detach: the group's own lr again; the hyperparameter never changed. */
        ASSERT_OPT_OK(o, optim_group_set_schedule(o, 0, NULL));
        ASSERT(optim_group_get_schedule(o, 0) == NULL);
        ASSERT_OPT_OK(o, optim_group_current_lr(o, 0, &cur));
        ASSERT_OK(optim_group_get_hparam(o, 0, OPTIM_HP_LR, &hp_lr));
        ASSERT(cur == lr0 && hp_lr == lr0);
        memset(p0, 0, sizeof p0);
        ASSERT_OPT_OK(o, optim_step(o));
        ASSERT(p0[0] == -(float)lr0);
    }
    optim_free(o); /* frees the group's schedule (ASan checks) */
    return 0;
}

/* For every rule (the option-heavy end of its grid), a schedule attached to
 * the group gives the same bits as setting the lr by hand before each step.
 * AdaBound's bounds scale with lr / initial_lr, so initial_lr is pinned. */
TEST_IMPL(sched_attach_every_rule)
{
    enum { N = 257, STEPS = 40 };
    test_rng rng = {test_seed() ^ 0x5c4ed};
    int r;
    for (r = 1; r <= OPTIM_RULE_COUNT; r++) if (test_rule_dense(r)) {
        optim_hparams hp;
        optim *a = NULL, *b = NULL;
        optim_schedule *s = NULL;
        static float pa[N], pb[N], g[N];
        long c = grid_size(grid_for(r)) - 1;
        int t, i, slot;
        char buf[256];
        while (grid_get(grid_for(r), c, &hp) != 0) c--;
        if (hp.rule == OPTIM_ADABOUND) hp.initial_lr = hp.lr;
        BUILD(optim_schedule_one_cycle(&s, 3 * hp.lr, STEPS, 0.25, 1, 10, 100, 1, &e_));
        ASSERT_OK(optim_create(&a, hp.rule));
        ASSERT_OK(optim_create(&b, hp.rule));
        ASSERT_OPT_OK(a, optim_add_group(a, &hp, NULL));
        ASSERT_OPT_OK(b, optim_add_group(b, &hp, NULL));
        for (i = 0; i < N; i++) pa[i] = pb[i] = (float)test_rng_normal(&rng);
        ASSERT_OPT_OK(a, optim_add_param(a, 0, pa, g, N, NULL, NULL));
        ASSERT_OPT_OK(b, optim_add_param(b, 0, pb, g, N, NULL, NULL));
        ASSERT_OPT_OK(a, optim_group_set_schedule(a, 0, s));
        for (t = 0; t < STEPS; t++) {
            for (i = 0; i < N; i++) g[i] = (float)test_rng_normal(&rng);
            ASSERT_OPT_OK(b, optim_group_set_hparam(b, 0, OPTIM_HP_LR, optim_schedule_lr(s, hp.lr, t)));
            ASSERT_OPT_OK(a, optim_step(a));
            ASSERT_OPT_OK(b, optim_step(b));
        }
        if (memcmp(pa, pb, sizeof pa) != 0)
            FAIL("%s (%s): scheduled and hand-set lr give different parameters", optim_rule_name(hp.rule),
                 grid_describe(&hp, buf, sizeof buf));
        for (slot = 0; slot < optim_rule_slot_count(hp.rule); slot++) {
            float *da, *db;
            ASSERT_OPT_OK(a, optim_state_slot(a, 0, slot, &da, NULL));
            ASSERT_OPT_OK(b, optim_state_slot(b, 0, slot, &db, NULL));
            if (da && memcmp(da, db, N * sizeof(float)) != 0)
                FAIL("%s: state %s differs", optim_rule_name(hp.rule), optim_rule_slot_name(hp.rule, slot));
        }
        optim_schedule_free(s);
        optim_free(a);
        optim_free(b);
    }
    return 0;
}

TEST_IMPL(sched_attach_errors_and_skips)
{
    optim *o = NULL;
    optim_hparams hp;
    optim_schedule *s = NULL;
    float p[4] = {0, 0, 0, 0}, g[4] = {1, 1, 1, 1};
    int64_t t;
    double lr;
    ASSERT_OK(optim_hparams_init(&hp, OPTIM_SGD, NULL));
    hp.lr = 0.5;
    ASSERT_OK(optim_create(&o, OPTIM_SGD));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p, g, 4, "w", NULL));
    BUILD(optim_schedule_exponential(&s, 0.5, &e_));
    ASSERT_ERR(optim_group_set_schedule(o, 3, s), OPTIM_ERANGE, optim_errmsg(o), "group 3 does not exist (1 groups)");
    ASSERT_ERR(optim_group_set_schedule_step(o, 1, 0), OPTIM_ERANGE, optim_errmsg(o), "group 1 does not exist");
    ASSERT_OPT_OK(o, optim_group_set_schedule(o, 0, s));
    ASSERT_ERR(optim_group_set_schedule_step(o, 0, -4), OPTIM_EINVAL, optim_errmsg(o), "t = -4 must be >= 0");
    ASSERT_INT(optim_group_get_schedule_step(o, 5, &t), ==, OPTIM_ERANGE);
    ASSERT_INT(optim_group_get_schedule_step(o, 0, NULL), ==, OPTIM_ENULL);
    ASSERT_INT(optim_group_current_lr(o, 5, &lr), ==, OPTIM_ERANGE);
    ASSERT_INT(optim_group_current_lr(NULL, 0, &lr), ==, OPTIM_ENULL);
    ASSERT_INT(optim_group_set_schedule(NULL, 0, s), ==, OPTIM_ENULL);
    ASSERT(optim_group_get_schedule(o, 1) == NULL && optim_group_get_schedule(NULL, 0) == NULL);
    ASSERT_OPT_OK(o, optim_step(o));
    ASSERT_OPT_OK(o, optim_group_get_schedule_step(o, 0, &t));
    ASSERT_INT(t, ==, 1);
    /* Steps skipped for a non-finite gradient do not count either. */
    ASSERT_OPT_OK(o, optim_set_nonfinite(o, OPTIM_NONFINITE_SKIP));
    g[2] = NAN;
    ASSERT_OPT_OK(o, optim_step(o));
    ASSERT_INT(optim_last_step_skipped(o), ==, 1);
    ASSERT_OPT_OK(o, optim_group_get_schedule_step(o, 0, &t));
    ASSERT_INT(t, ==, 1);
    ASSERT_OPT_OK(o, optim_set_nonfinite(o, OPTIM_NONFINITE_ERROR));
    ASSERT_ERR(optim_step(o), OPTIM_ENONFINITE, optim_errmsg(o), "'w'");
    ASSERT_OPT_OK(o, optim_group_get_schedule_step(o, 0, &t));
    ASSERT_INT(t, ==, 1);
    g[2] = 1;
    memset(p, 0, sizeof p);
    ASSERT_OPT_OK(o, optim_step(o));
    ASSERT(p[0] == -0.25f); /* 0.5 * 0.5^1 */
    ASSERT_OPT_OK(o, optim_group_get_schedule_step(o, 0, &t));
    ASSERT_INT(t, ==, 2);
    /* Re-attaching restarts the schedule at step 0. */
    ASSERT_OPT_OK(o, optim_group_set_schedule(o, 0, s));
    ASSERT_OPT_OK(o, optim_group_get_schedule_step(o, 0, &t));
    ASSERT_INT(t, ==, 0);
    optim_schedule_free(s);
    optim_free(o);
    return 0;
}

/* CyclicLR's three kinds of descent through a checkpoint: each group's
 * schedule comes back with its meaning, and the bytes of the one "as up" are
 * those format 1 has always written for it (step_size_down stored as 0), so
 * older checkpoints and older readers agree with this one on it. */
TEST_IMPL(sched_cyclic_checkpoint)
{
    static const int64_t downs[3] = {OPTIM_CYCLIC_DOWN_AS_UP, 0, 5};
    optim *o = NULL, *back = NULL;
    optim_hparams hp;
    float p[3][2] = {{0}}, g[3][2] = {{1, 1}, {1, 1}, {1, 1}}, q[3][2] = {{0}};
    void *data = NULL;
    size_t size = 0, gi;
    int64_t t;
    ASSERT_OK(optim_hparams_init(&hp, OPTIM_SGD, NULL));
    ASSERT_OK(optim_create(&o, OPTIM_SGD));
    ASSERT_OK(optim_create(&back, OPTIM_SGD));
    for (gi = 0; gi < 3; gi++) {
        optim_schedule *s = NULL;
        char name[8];
        snprintf(name, sizeof name, "p%zu", gi);
        ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
        ASSERT_OPT_OK(back, optim_add_group(back, &hp, NULL));
        ASSERT_OPT_OK(o, optim_add_param(o, gi, p[gi], g[gi], 2, name, NULL));
        ASSERT_OPT_OK(back, optim_add_param(back, gi, q[gi], g[gi], 2, name, NULL));
        BUILD(optim_schedule_cyclic(&s, 0.001, 0.1, 7, downs[gi], OPTIM_CYCLIC_TRIANGULAR2, 1.0, &e_));
        ASSERT_OPT_OK(o, optim_group_set_schedule(o, gi, s));
        optim_schedule_free(s);
    }
    for (t = 0; t < 9; t++) ASSERT_OPT_OK(o, optim_step(o));
    ASSERT_OPT_OK(o, optim_save_buffer(o, &data, &size));
    ASSERT_OPT_OK(back, optim_load_buffer(back, data, size, OPTIM_MATCH_NAME, "test"));
    {
        /* The "as up" node: kind 10 (u32), then step_size_up 7, step_size_down 0
         * and mode 1 as little-endian i64; the sawtooth's step_size_down is -1. */
        static const int64_t fields[2][3] = {{7, 0, 1}, {7, -1, 1}};
        const unsigned char *b = (const unsigned char *)data;
        unsigned char as_up[4 + 3 * 8], saw[4 + 3 * 8];
        size_t i, found_up = 0, found_saw = 0;
        int f, byte;
        for (f = 0; f < 2; f++) {
            unsigned char *out = f ? saw : as_up;
            out[0] = 10, out[1] = out[2] = out[3] = 0;
            for (i = 0; i < 3; i++)
                for (byte = 0; byte < 8; byte++)
                    out[4 + 8 * i + byte] = (unsigned char)((uint64_t)fields[f][i] >> (8 * byte));
        }
        for (i = 0; i + sizeof as_up <= size; i++) {
            found_up += memcmp(b + i, as_up, sizeof as_up) == 0;
            found_saw += memcmp(b + i, saw, sizeof saw) == 0;
        }
        ASSERT_INT(found_up, ==, 1);
        ASSERT_INT(found_saw, ==, 1);
    }
    free(data);
    for (gi = 0; gi < 3; gi++) {
        const optim_schedule *a = optim_group_get_schedule(o, gi), *b = optim_group_get_schedule(back, gi);
        int64_t ta, tb;
        ASSERT(a && b);
        ASSERT_OPT_OK(back, optim_group_get_schedule_step(back, gi, &tb));
        ASSERT_OPT_OK(o, optim_group_get_schedule_step(o, gi, &ta));
        ASSERT_INT(ta, ==, tb);
        for (t = 0; t < 200; t++) {
            double x = optim_schedule_lr(a, 1.0, t), y = optim_schedule_lr(b, 1.0, t);
            if (memcmp(&x, &y, sizeof x) != 0) FAIL("group %zu, t = %lld: %.17g loaded vs %.17g", gi, (long long)t, y, x);
        }
    }
    /* And they differ from each other as they should: at step 7 the "as up"
     * cycle is at its top, the sawtooth back at base_lr, the 5-step descent at its top. */
    ASSERT(optim_schedule_lr(optim_group_get_schedule(back, 0), 1.0, 7) == 0.1);
    ASSERT(optim_schedule_lr(optim_group_get_schedule(back, 1), 1.0, 7) == 0.001);
    ASSERT(optim_schedule_lr(optim_group_get_schedule(back, 2), 1.0, 7) == 0.1);
    optim_free(o);
    optim_free(back);
    return 0;
}

/* ---- Edge values: no overflow anywhere, from the API or the loader ---------------- */

/* Integer arguments at and next to the ends of their ranges, and every
 * schedule evaluated at steps next to its own boundaries and at the ends of
 * int64_t; then each attached to an optimizer at a schedule step near
 * INT64_MAX, stepped past it (the step saturates) and saved and loaded
 * (the loader rebuilds it through the constructors). Under
 * UndefinedBehaviorSanitizer (scripts/sanitize.sh) any signed overflow
 * aborts; here every lr must be a number (no NaN: every gamma is <= 1). */
static int edge_check(optim_schedule *s, const char *what, const int64_t *ts, size_t nts)
{
    static float w[4], g[4] = {0.1f, -0.2f, 0.3f, -0.4f};
    optim *a = NULL, *b = NULL;
    optim_hparams hp;
    void *buf = NULL;
    size_t size, k;
    double la, lb;
    for (k = 0; k < nts; k++) {
        double lr = optim_schedule_lr(s, 0.5, ts[k]);
        if (isnan(lr)) FAIL("%s: lr(t = %lld) is NaN", what, (long long)ts[k]);
    }
    optim_hparams_init(&hp, OPTIM_SGD, NULL);
    ASSERT_OK(optim_create(&a, OPTIM_SGD));
    ASSERT_OK(optim_create(&b, OPTIM_SGD));
    ASSERT_OPT_OK(a, optim_add_group(a, &hp, NULL));
    ASSERT_OPT_OK(b, optim_add_group(b, &hp, NULL));
    ASSERT_OPT_OK(a, optim_add_param(a, 0, w, g, 4, "w", NULL));
    ASSERT_OPT_OK(b, optim_add_param(b, 0, w, g, 4, "w", NULL));
    ASSERT_OPT_OK(a, optim_group_set_schedule(a, 0, s));
    ASSERT_OPT_OK(a, optim_group_set_schedule_step(a, 0, INT64_MAX - 1));
    ASSERT_OPT_OK(a, optim_step(a));
    ASSERT_OPT_OK(a, optim_step(a)); /* at INT64_MAX: stays there */
    ASSERT_OPT_OK(a, optim_save_buffer(a, &buf, &size));
    if (optim_load_buffer(b, buf, size, OPTIM_MATCH_NAME, what) != OPTIM_OK) FAIL("%s", optim_errmsg(b));
    ASSERT_OK(optim_group_current_lr(a, 0, &la));
    ASSERT_OK(optim_group_current_lr(b, 0, &lb));
    ASSERT(memcmp(&la, &lb, sizeof la) == 0 && la == optim_schedule_lr(s, hp.lr, INT64_MAX));
    free(buf);
    optim_free(a);
    optim_free(b);
    optim_schedule_free(s);
    return 0;
}

TEST_IMPL(sched_edge_values)
{
    static const int64_t big[] = {1, 2, 3, INT64_MAX / 2 - 1, INT64_MAX / 2, INT64_MAX / 2 + 1, INT64_MAX - 2,
                                  INT64_MAX - 1, INT64_MAX};
    enum { NB = sizeof big / sizeof big[0] };
    size_t i, j, k, checked = 0;
    for (i = 0; i < NB; i++) {
        const int64_t n = big[i];
        /* the steps next to n, next to 2n and n / 2, and the ends of int64_t */
        int64_t ts[12];
        size_t nts = 0, m;
        const int64_t around[] = {0, 1, n - 1, n, n / 2, INT64_MAX - 1, INT64_MAX};
        for (m = 0; m < sizeof around / sizeof around[0]; m++)
            if (around[m] >= 0) ts[nts++] = around[m];
        if (n < INT64_MAX) ts[nts++] = n + 1;
        if (n <= INT64_MAX / 2) ts[nts++] = 2 * n, ts[nts++] = 2 * n - 1;
        for (j = 0; j < 16; j++) {
            optim_schedule *s = NULL, *c = NULL;
            char what[96];
            int rc = OPTIM_OK;
            optim_error err;
            switch (j) {
            case 0: rc = optim_schedule_constant(&s, 0.5, n, &err); break;
            case 1: rc = optim_schedule_step(&s, n, 0.5, &err); break;
            case 2: rc = optim_schedule_linear(&s, 0.1, 1.0, n, &err); break;
            case 3: rc = optim_schedule_polynomial(&s, n, 2.0, &err); break;
            case 4: rc = optim_schedule_cosine(&s, n, 0.01, &err); break;
            case 5: rc = optim_schedule_cosine_restarts(&s, n, 2, 0.01, &err); break;
            case 6: rc = optim_schedule_cosine_restarts(&s, 1, n, 0.01, &err); break;
            case 7: rc = optim_schedule_one_cycle(&s, 0.1, n, 0.3, 1, 25, 1e4, 1, &err); break;
            case 8: rc = optim_schedule_cyclic(&s, 0.01, 0.1, n, OPTIM_CYCLIC_DOWN_AS_UP, OPTIM_CYCLIC_TRIANGULAR2, 1.0,
                                               &err); break;
            case 9: rc = optim_schedule_cyclic(&s, 0.01, 0.1, n, 0, OPTIM_CYCLIC_TRIANGULAR2, 1.0, &err); break;
            case 10: rc = optim_schedule_cyclic(&s, 0.01, 0.1, 1, n == INT64_MAX ? n - 1 : n, OPTIM_CYCLIC_EXP_RANGE,
                                                0.999, &err); break;
            case 11:
                rc = optim_schedule_cosine(&c, 10, 0.0, &err);
                if (rc == OPTIM_OK) rc = optim_schedule_warmup(&s, n, c, &err);
                break;
            case 12: rc = optim_schedule_wsd(&s, n, INT64_MAX - n, 0, 0.01, 1, &err); break;
            case 13: rc = optim_schedule_wsd(&s, 0, n / 2, n - n / 2, 0.01, 0, &err); break;
            case 14: case 15: { /* sequential: milestones at n (and INT64_MAX) */
                optim_schedule *kids[3] = {NULL, NULL, NULL};
                int64_t miles[2] = {n, INT64_MAX};
                size_t count = j == 14 ? 2 : 3;
                if (j == 15 && n == INT64_MAX) miles[0] = INT64_MAX - 1;
                for (k = 0; k < count; k++) ASSERT_OK(optim_schedule_exponential(&kids[k], 0.9, NULL));
                rc = optim_schedule_sequential(&s, kids, count, miles, &err);
                break;
            }
            }
            snprintf(what, sizeof what, "schedule %zu with %lld", j, (long long)n);
            if (rc != OPTIM_OK) {
                /* only where the arguments are out of range, and said so */
                if (rc != OPTIM_EINVAL || (!strstr(err.message, "overflows") && !strstr(err.message, "in [1, 2^62)")))
                    FAIL("%s: %s", what, err.message);
                continue;
            }
            if (edge_check(s, what, ts, nts)) return 1;
            checked++;
        }
    }
    printf("  %zu schedules at edge values checked and round-tripped\n", checked);
    /* Milestones that would overflow an increment: refused as not increasing, from the API... */
    {
        optim_schedule *kids[3] = {NULL, NULL, NULL}, *s = NULL;
        const int64_t miles[2] = {INT64_MAX, INT64_MAX};
        optim_error err;
        for (k = 0; k < 3; k++) ASSERT_OK(optim_schedule_exponential(&kids[k], 0.9, NULL));
        ASSERT_ERR(optim_schedule_sequential(&s, kids, 3, miles, &err), OPTIM_EINVAL, err.message,
                   "milestones[1] = 9223372036854775807 must be > milestones[0] = 9223372036854775807");
    }
    /* ... and from the loader (a file holding such a schedule: the writer handed a tree the constructor refuses). */
    {
        optim_schedule *kids[3] = {NULL, NULL, NULL}, *s = NULL;
        const int64_t miles[2] = {INT64_MAX - 1, INT64_MAX};
        static float w[2], g[2];
        optim *a = NULL;
        optim_hparams hp;
        void *buf;
        size_t size;
        for (k = 0; k < 3; k++) ASSERT_OK(optim_schedule_exponential(&kids[k], 0.9, NULL));
        ASSERT_OK(optim_schedule_sequential(&s, kids, 3, miles, NULL));
        s->milestones[0] = INT64_MAX;
        optim_hparams_init(&hp, OPTIM_SGD, NULL);
        ASSERT_OK(optim_create(&a, OPTIM_SGD));
        ASSERT_OPT_OK(a, optim_add_group(a, &hp, NULL));
        ASSERT_OPT_OK(a, optim_add_param(a, 0, w, g, 2, "w", NULL));
        ASSERT_OPT_OK(a, optim_group_set_schedule(a, 0, s));
        ASSERT_OPT_OK(a, optim_save_buffer(a, &buf, &size));
        ASSERT_ERR(optim_load_buffer(a, buf, size, OPTIM_MATCH_NAME, "seq"), OPTIM_EFORMAT, optim_errmsg(a),
                   "must be > milestones[0] = 9223372036854775807");
        free(buf);
        optim_free(a);
        optim_schedule_free(s);
    }
    return 0;
}
