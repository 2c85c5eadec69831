/* test_ema.c: the EMA of the weights (include/optim_ema.h). Every step's
 * averages bit for bit against a reference that keeps its own average in
 * the compute type from the parameters the step left (every dense rule,
 * float32/float64/bfloat16/float16/bfloat16 with master or stochastic
 * rounding, warm-up on and off, a
 * parameter without a gradient, every CPU path, 1 and 2 threads, step
 * statistics on and off with 2); the EMA
 * changes no parameter or state bit; the swap and its round trip; skipped
 * steps, SAM and sparse steps; refusals; checkpoints (resume bit for bit,
 * swapped files, files without an EMA, damaged and malformed sections). */
#include "test.h"
#include "ckpt_util.h"
#include "optim_checkpoint.h"
#include "optim_ema.h"
#include "optim_precision.h"
#include "optim_sam.h"
#include "optim_schedule_free.h"
#include "optim_stats.h"
#include "typed.h"

#define NT 3
#define STEPS 5
#define DECAY 0.9
/* Four blocks and a tail (two threads split it), a small tensor, and one without a gradient (the second pass). */
static const size_t sizes[NT] = {4 * 8192 + 1234, 37, 100};

typedef struct kind {
    optim_dtype pdt;
    unsigned flags;
    const char *name;
} kind;
static const kind kinds[] = {{OPTIM_FLOAT32, 0, "float32"},
                             {OPTIM_FLOAT64, 0, "float64"},
                             {OPTIM_BFLOAT16, 0, "bfloat16"},
                             {OPTIM_BFLOAT16, OPTIM_PARAM_MASTER, "bfloat16+master"},
                             {OPTIM_FLOAT16, 0, "float16"},
                             {OPTIM_BFLOAT16, OPTIM_PARAM_STOCHASTIC_ROUNDING, "bfloat16+sr"}};

/* The reference's decay for the average after `count` averages (optim_ema.h), in double. */
static double ref_decay(int64_t count, int warmup)
{
    double d = DECAY;
    if (warmup) {
        const double w = (1.0 + (double)count) / (10.0 + (double)count);
        if (w < d) d = w;
    }
    return d;
}

/* The reference average of n elements: e (float or double, as f64 says) from the parameter's values x (doubles
 * holding values of the compute type). */
static void ref_ema(int f64, void *e, const double *x, size_t n, int64_t count, int warmup)
{
    const double d = ref_decay(count, warmup), omd = 1.0 - d;
    size_t j;
    if (f64) {
        double *a = (double *)e;
        for (j = 0; j < n; j++) a[j] = count == 0 ? x[j] : d * a[j] + omd * x[j];
    } else {
        float *a = (float *)e;
        const float df = (float)d, of = (float)omd;
        for (j = 0; j < n; j++) {
            const float p = (float)x[j];
            const float u = df * a[j], v = of * p; /* two roundings, then the sum's: no fused multiply-add */
            a[j] = count == 0 ? p : u + v;
        }
    }
}

/* The parameter's value the average follows: its master, or its memory widened. */
static int param_values(optim *o, size_t i, const kind *kd, const void *p, size_t n, double *x)
{
    float *m = NULL;
    size_t j;
    if (kd->flags & OPTIM_PARAM_MASTER) ASSERT_OPT_OK(o, optim_param_master_data(o, i, &m));
    for (j = 0; j < n; j++) x[j] = m ? (double)m[j] : t_get(kd->pdt, p, j);
    return 0;
}

/* One run of rule r: STEPS steps; with ema, every step's averages checked against the reference (*checked
 * counts the tensor-steps). The final parameters and state as doubles into out. */
static int run(int r, const kind *kd, optim_isa isa, int threads, int stats, int ema, int warmup, uint64_t seed,
               double *out, long *checked)
{
    optim *o = NULL;
    optim_hparams hp;
    void *p[NT], *gr[NT], *ref[NT], *got[NT];
    double *x[NT];
    const int f64 = kd->pdt == OPTIM_FLOAT64;
    const size_t es = optim_dtype_size(kd->pdt), rs = f64 ? 8 : 4;
    const optim_dtype gdt = kd->flags & OPTIM_PARAM_MASTER ? OPTIM_FLOAT32 : kd->pdt;
    test_rng rng = {seed};
    size_t i, j, off;
    int step;
    ASSERT_OK(optim_create(&o, (optim_rule)r));
    ASSERT_OK(optim_hparams_init(&hp, (optim_rule)r, NULL));
    if (optim_rule_uses((optim_rule)r, OPTIM_HP_WEIGHT_DECAY)) hp.weight_decay = 0.01;
    if (r == OPTIM_LARS || r == OPTIM_LAMB) hp.lr = 0.01;
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    for (i = 0; i < NT; i++) {
        p[i] = calloc(sizes[i], es);
        gr[i] = calloc(sizes[i], optim_dtype_size(gdt));
        ref[i] = calloc(sizes[i], rs);
        got[i] = calloc(sizes[i], rs);
        x[i] = malloc(sizes[i] * sizeof(double));
        if (!p[i] || !gr[i] || !ref[i] || !got[i] || !x[i]) FAIL("out of memory");
        for (j = 0; j < sizes[i]; j++) t_set(kd->pdt, p[i], j, test_rng_normal(&rng));
        ASSERT_OPT_OK(o, optim_add_param_ex(o, 0, p[i], kd->pdt, i == NT - 1 ? NULL : gr[i], gdt, sizes[i],
                                            f64 ? OPTIM_FLOAT64 : OPTIM_FLOAT32, kd->flags, "t", NULL));
    }
    if (r == OPTIM_ADAFACTOR) {
        /* Factored: the large tensor as 18 x 1889 rows and columns (its own pass C), 100 as 10 x 10; 37 stays a
         * vector (the rule's generic loop). */
        const int64_t big[2] = {18, 1889}, small[2] = {10, 10};
        ASSERT_OPT_OK(o, optim_param_set_shape(o, 0, 2, big));
        ASSERT_OPT_OK(o, optim_param_set_shape(o, 2, 2, small));
    }
    ASSERT_OPT_OK(o, optim_set_isa(o, isa));
    ASSERT_OPT_OK(o, optim_set_threads(o, threads));
    if (ema) ASSERT_OPT_OK(o, optim_set_ema(o, DECAY, warmup));
    /* With step statistics (on two threads): their blocks and the EMA's spans share the update pass. */
    if (stats) ASSERT_OPT_OK(o, optim_set_stats(o, 1));
    for (step = 1; step <= STEPS; step++) {
        for (i = 0; i + 1 < NT; i++)
            for (j = 0; j < sizes[i]; j++) t_set(gdt, gr[i], j, 0.5 * test_rng_normal(&rng) + (j % 3 == 0 ? 0.3 : 0.0));
        ASSERT_OPT_OK(o, optim_step(o));
        if (!ema) continue;
        for (i = 0; i < NT; i++) {
            optim_dtype dt;
            int64_t count;
            if (param_values(o, i, kd, p[i], sizes[i], x[i])) return 1;
            ref_ema(f64, ref[i], x[i], sizes[i], step - 1, warmup);
            ASSERT_OPT_OK(o, optim_ema_read(o, i, got[i], &dt));
            ASSERT_INT(dt, ==, f64 ? OPTIM_FLOAT64 : OPTIM_FLOAT32);
            ASSERT_OPT_OK(o, optim_get_ema(o, NULL, NULL, NULL, &count, NULL));
            ASSERT_INT(count, ==, step);
            for (j = 0; j < sizes[i]; j++)
                if (memcmp((char *)got[i] + j * rs, (char *)ref[i] + j * rs, rs) != 0)
                    FAIL("%s %s %s %d threads warm-up %d step %d tensor %zu element %zu: EMA %.17g, the reference "
                         "%.17g",
                         optim_rule_name((optim_rule)r), kd->name, optim_isa_name(isa), threads, warmup, step, i, j,
                         f64 ? ((double *)got[i])[j] : ((float *)got[i])[j],
                         f64 ? ((double *)ref[i])[j] : ((float *)ref[i])[j]);
            (*checked)++;
        }
    }
    off = 0;
    for (i = 0; i < NT; i++) {
        int s;
        for (j = 0; j < sizes[i]; j++) out[off++] = t_get(kd->pdt, p[i], j);
        for (s = 0; s < optim_rule_slot_count((optim_rule)r); s++) {
            void *sd;
            optim_dtype sdt;
            int init;
            size_t len = 0;
            if (optim_state_slot_data(o, i, s, &sd, &sdt, &init) != OPTIM_OK || !sd ||
                optim_state_slot_len(o, i, s, &len) != OPTIM_OK) {
                for (j = 0; j < sizes[i]; j++) out[off++] = 0;
                continue;
            }
            /* A factored slot is shorter than the tensor (Adafactor's rows, columns): zeros after it. */
            for (j = 0; j < sizes[i]; j++) out[off++] = j < len ? t_get(sdt, sd, j) : 0;
        }
    }
    for (i = 0; i < NT; i++) {
        free(p[i]);
        free(gr[i]);
        free(ref[i]);
        free(got[i]);
        free(x[i]);
    }
    optim_free(o);
    return 0;
}

TEST_IMPL(ema_exact_every_path)
{
    static const optim_isa isas[] = {OPTIM_ISA_SCALAR, OPTIM_ISA_AVX2, OPTIM_ISA_AVX512};
    const size_t total = (sizes[0] + sizes[1] + sizes[2]) * (1 + OPTIM_MAX_SLOTS);
    double *off = malloc(total * sizeof(double)), *on = malloc(total * sizeof(double));
    uint64_t seed = test_seed();
    long checked = 0;
    int r;
    size_t k, a;
    if (!off || !on) FAIL("out of memory");
    printf("  seed %" PRIu64 "\n", seed);
    for (r = 1; r <= OPTIM_RULE_COUNT; r++) {
        if (!test_rule_dense(r) || r == OPTIM_SGD_SCHEDULE_FREE || r == OPTIM_ADAMW_SCHEDULE_FREE) continue;
        if (T_SAMPLE > 1 && r % T_SAMPLE != 1) continue;
        /* float32 for every rule, and one other storage kind in turn. */
        for (k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
            const int warmup = (int)((k + (size_t)r) % 2);
            const uint64_t sd = seed ^ ((uint64_t)r << 16) ^ k;
            if (k != 0 && k != 1 + (size_t)r % 5) continue;
            if (!test_rule_any_type(r) && kinds[k].pdt != OPTIM_FLOAT32 && kinds[k].pdt != OPTIM_FLOAT64) continue;
            if (run(r, &kinds[k], OPTIM_ISA_SCALAR, 1, 0, 0, warmup, sd, off, &checked)) return 1;
            /* Each path on one thread, then the default on two with step statistics (the threads' ranges cut at
             * blocks) and without (cut at any multiple of 16: the second thread's range of the large tensor starts
             * at 17056 for float32, its first span 7520 elements, no whole number of the average's 64-element
             * blocks; with one CPU the library runs one thread: tests/test_prefetch.c's ema_split_anywhere cuts
             * ranges without threads). */
            for (a = 0; a <= sizeof isas / sizeof isas[0] + 1; a++) {
                const optim_isa isa = a < sizeof isas / sizeof isas[0] ? isas[a] : optim_isa_default();
                const int th = a < sizeof isas / sizeof isas[0] ? 1 : 2;
                const int st = a == sizeof isas / sizeof isas[0];
                if (!optim_isa_available(isa)) continue;
                if (run(r, &kinds[k], isa, th, st, 1, warmup, sd, on, &checked)) return 1;
                if (memcmp(on, off, total * sizeof(double)) != 0)
                    FAIL("%s %s %s %d threads, statistics %s: the EMA changed a parameter or state bit",
                         optim_rule_name((optim_rule)r), kinds[k].name, optim_isa_name(isa), th, st ? "on" : "off");
            }
        }
    }
    printf("  %ld tensor-steps: averages bit for bit against the reference; parameters and state equal to steps "
           "without an EMA\n",
           checked);
    free(off);
    free(on);
    return 0;
}

/* Bytes of parameter i's memory, and of its master. */
static int snapshot(optim *o, size_t i, const kind *kd, const void *p, size_t n, unsigned char *pb, float *mb)
{
    memcpy(pb, p, n * optim_dtype_size(kd->pdt));
    if (kd->flags & OPTIM_PARAM_MASTER) {
        float *m;
        ASSERT_OPT_OK(o, optim_param_master_data(o, i, &m));
        memcpy(mb, m, n * sizeof(float));
    }
    return 0;
}

TEST_IMPL(ema_swap_round_trip)
{
    size_t k;
    const size_t n = 3 * 8192 + 77;
    for (k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        const kind *kd = &kinds[k];
        const optim_dtype gdt = kd->flags & OPTIM_PARAM_MASTER ? OPTIM_FLOAT32 : kd->pdt;
        const size_t es = optim_dtype_size(kd->pdt), rs = kd->pdt == OPTIM_FLOAT64 ? 8 : 4;
        unsigned char *p = calloc(n, es), *g = calloc(n, optim_dtype_size(gdt)), *pb = malloc(n * es);
        unsigned char *e0 = malloc(n * rs), *e1 = malloc(n * rs);
        float *mb = malloc(n * sizeof(float)), *m = NULL;
        test_rng rng = {k + 7};
        optim *o = NULL;
        optim_hparams hp;
        size_t j;
        int step, sw;
        if (!p || !g || !pb || !e0 || !e1 || !mb) FAIL("out of memory");
        ASSERT_OK(optim_create(&o, OPTIM_ADAMW));
        ASSERT_OK(optim_hparams_init(&hp, OPTIM_ADAMW, NULL));
        hp.lr = 0.05;
        ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
        for (j = 0; j < n; j++) t_set(kd->pdt, p, j, test_rng_normal(&rng));
        ASSERT_OPT_OK(o, optim_add_param_ex(o, 0, p, kd->pdt, g, gdt, n, kd->pdt == OPTIM_FLOAT64 ? OPTIM_FLOAT64
                                                                                                   : OPTIM_FLOAT32,
                                            kd->flags, "w", NULL));
        ASSERT_OPT_OK(o, optim_set_threads(o, 2));
        ASSERT_OPT_OK(o, optim_set_ema(o, 0.8, 0));
        for (step = 0; step < 5; step++) {
            for (j = 0; j < n; j++) t_set(gdt, g, j, test_rng_normal(&rng));
            ASSERT_OPT_OK(o, optim_step(o));
        }
        ASSERT_OPT_OK(o, optim_ema_read(o, 0, e0, NULL));
        if (snapshot(o, 0, kd, p, n, pb, mb)) return 1;
        ASSERT_OPT_OK(o, optim_ema_swap(o));
        ASSERT_OPT_OK(o, optim_get_ema(o, NULL, NULL, NULL, NULL, &sw));
        ASSERT_INT(sw, ==, 1);
        /* The parameter holds the average (rounded to nearest even in a 16-bit type); a master holds it exactly. */
        if (kd->flags & OPTIM_PARAM_MASTER) {
            ASSERT_OPT_OK(o, optim_param_master_data(o, 0, &m));
            if (memcmp(m, e0, n * 4) != 0) FAIL("%s: the master does not hold the average after the swap", kd->name);
        }
        for (j = 0; j < n; j++) {
            const double want = kd->pdt == OPTIM_FLOAT64 ? ((double *)e0)[j] : (double)((float *)e0)[j];
            double w = want;
            if (kd->pdt == OPTIM_BFLOAT16) w = t_bf16_to_float(t_bf16_from_float((float)want));
            if (kd->pdt == OPTIM_FLOAT16) w = t_f16_to_double(t_f16_from_float((float)want));
            if (t_get(kd->pdt, p, j) != w)
                FAIL("%s: element %zu holds %.17g after the swap, the average rounded %.17g", kd->name, j,
                     t_get(kd->pdt, p, j), w);
        }
        /* Refused while swapped, nothing changed. */
        ASSERT_ERR(optim_step(o), OPTIM_ESTATE, optim_errmsg(o), "optim_ema_swap");
        ASSERT_ERR(optim_ema_read(o, 0, e1, NULL), OPTIM_ESTATE, optim_errmsg(o), "swap back");
        ASSERT_ERR(optim_set_ema(o, 0.5, 0), OPTIM_ESTATE, optim_errmsg(o), "swap back");
        ASSERT_ERR(optim_ema_off(o), OPTIM_ESTATE, optim_errmsg(o), "swap back");
        ASSERT_ERR(optim_add_param(o, 0, (float *)e1, NULL, 4, "x", NULL), OPTIM_ESTATE, optim_errmsg(o), "swap back");
        ASSERT_OPT_OK(o, optim_ema_swap(o));
        ASSERT_OPT_OK(o, optim_get_ema(o, NULL, NULL, NULL, NULL, &sw));
        ASSERT_INT(sw, ==, 0);
        if (memcmp(p, pb, n * es) != 0) FAIL("%s: the parameter's bytes differ after swapping back", kd->name);
        if (kd->flags & OPTIM_PARAM_MASTER) {
            ASSERT_OPT_OK(o, optim_param_master_data(o, 0, &m));
            if (memcmp(m, mb, n * 4) != 0) FAIL("%s: the master differs after swapping back", kd->name);
        }
        ASSERT_OPT_OK(o, optim_ema_read(o, 0, e1, NULL));
        if (memcmp(e0, e1, n * rs) != 0) FAIL("%s: the average differs after a round trip", kd->name);
        ASSERT_OPT_OK(o, optim_step(o));
        optim_free(o);
        free(p);
        free(g);
        free(pb);
        free(e0);
        free(e1);
        free(mb);
    }
    printf("  %zu storage kinds: swapped in (the average, rounded where the parameter is 16-bit) and back, bit for "
           "bit, on 2 threads\n",
           sizeof kinds / sizeof kinds[0]);
    return 0;
}

TEST_IMPL(ema_refusals)
{
    optim *o = NULL;
    optim_hparams hp;
    float p[8] = {1, 2, 3, 4, 5, 6, 7, 8}, g[8] = {1, 1, 1, 1, 1, 1, 1, 1}, e[8];
    int on, warm, sw;
    double d;
    int64_t c;
    ASSERT_OK(optim_create(&o, OPTIM_SGD));
    ASSERT_OK(optim_hparams_init(&hp, OPTIM_SGD, NULL));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p, g, 8, "w", NULL));
    ASSERT_ERR(optim_set_ema(o, 1.0, 0), OPTIM_EINVAL, optim_errmsg(o), "decay = 1");
    ASSERT_ERR(optim_set_ema(o, -0.5, 0), OPTIM_EINVAL, optim_errmsg(o), "decay = -0.5");
    ASSERT_ERR(optim_set_ema(o, NAN, 0), OPTIM_EINVAL, optim_errmsg(o), "decay = nan");
    ASSERT_ERR(optim_set_ema(o, 0.9, 2), OPTIM_EINVAL, optim_errmsg(o), "warmup = 2");
    ASSERT_ERR(optim_ema_swap(o), OPTIM_ESTATE, optim_errmsg(o), "EMA is off");
    ASSERT_ERR(optim_ema_read(o, 0, e, NULL), OPTIM_ESTATE, optim_errmsg(o), "EMA is off");
    ASSERT_ERR(optim_ema_set_count(o, 3), OPTIM_ESTATE, optim_errmsg(o), "EMA is off");
    ASSERT_OPT_OK(o, optim_get_ema(o, &on, &d, &warm, &c, &sw));
    ASSERT_INT(on, ==, 0);
    ASSERT_OPT_OK(o, optim_set_ema(o, 0.0, 1));
    ASSERT_OPT_OK(o, optim_get_ema(o, &on, &d, &warm, &c, &sw));
    ASSERT(on == 1 && d == 0.0 && warm == 1 && c == 0 && sw == 0);
    ASSERT_ERR(optim_ema_read(o, 1, e, NULL), OPTIM_ERANGE, optim_errmsg(o), "param 1");
    ASSERT_ERR(optim_ema_write(o, 0, NULL), OPTIM_ENULL, optim_errmsg(o), "src");
    ASSERT_ERR(optim_ema_set_count(o, -1), OPTIM_EINVAL, optim_errmsg(o), "count = -1");
    /* decay 0: the average is the parameter. */
    ASSERT_OPT_OK(o, optim_step(o));
    ASSERT_OPT_OK(o, optim_step(o));
    ASSERT_OPT_OK(o, optim_ema_read(o, 0, e, NULL));
    ASSERT(memcmp(e, p, sizeof p) == 0);
    /* Set again while on: the settings change, the average and count stay. */
    ASSERT_OPT_OK(o, optim_set_ema(o, 0.5, 0));
    ASSERT_OPT_OK(o, optim_get_ema(o, &on, &d, &warm, &c, &sw));
    ASSERT(on == 1 && d == 0.5 && warm == 0 && c == 2);
    ASSERT_OPT_OK(o, optim_ema_off(o));
    ASSERT_OPT_OK(o, optim_get_ema(o, &on, &d, &warm, &c, &sw));
    ASSERT(on == 0 && c == 0);
    ASSERT_INT(optim_set_ema(NULL, 0.5, 0), ==, OPTIM_ENULL);
    ASSERT_INT(optim_ema_swap(NULL), ==, OPTIM_ENULL);
    optim_free(o);
    /* Schedule-free rules average already. */
    ASSERT_OK(optim_create(&o, OPTIM_ADAMW_SCHEDULE_FREE));
    ASSERT_ERR(optim_set_ema(o, 0.9, 0), OPTIM_EUNSUPPORTED, optim_errmsg(o), "adamw_schedule_free");
    optim_free(o);
    return 0;
}

TEST_IMPL(ema_skips_and_sam)
{
    optim *o = NULL;
    optim_sam *sam = NULL;
    optim_hparams hp;
    enum { N = 300 };
    float p[N], g[N], e0[N], e1[N], ref[N];
    double x[N];
    int64_t c;
    size_t j;
    int step;
    test_rng rng = {11};
    for (j = 0; j < N; j++) p[j] = (float)test_rng_normal(&rng);
    ASSERT_OK(optim_create(&o, OPTIM_SGD));
    ASSERT_OK(optim_hparams_init(&hp, OPTIM_SGD, NULL));
    hp.momentum = 0.9;
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, p, g, N, "w", NULL));
    ASSERT_OPT_OK(o, optim_set_ema(o, DECAY, 1));
    ASSERT_OPT_OK(o, optim_set_nonfinite(o, OPTIM_NONFINITE_SKIP));
    ASSERT_OK(optim_sam_create(&sam, o, 0.05, 2.0, 0, 0.0, NULL));
    for (step = 0; step < 12; step++) {
        for (j = 0; j < N; j++) g[j] = (float)test_rng_normal(&rng);
        ASSERT_OPT_OK(o, optim_get_ema(o, NULL, NULL, NULL, &c, NULL));
        if (c) ASSERT_OPT_OK(o, optim_ema_read(o, 0, e0, NULL));
        if (step % 4 == 1) {
            /* A skipped step: no average, no count. */
            g[5] = NAN;
            ASSERT_OPT_OK(o, optim_step(o));
            ASSERT_INT(optim_last_step_skipped(o), ==, 1);
            ASSERT_OPT_OK(o, optim_ema_read(o, 0, e1, NULL));
            if (memcmp(e0, e1, sizeof e0) != 0) FAIL("step %d: a skipped step changed the average", step);
            continue;
        }
        if (step % 4 == 2) {
            /* SAM: the first step moves the parameters and averages nothing; the second averages once. */
            ASSERT_OK_MSG(optim_sam_first_step(sam), optim_sam_errmsg(sam));
            ASSERT_OPT_OK(o, optim_ema_read(o, 0, e1, NULL));
            if (memcmp(e0, e1, sizeof e0) != 0) FAIL("step %d: SAM's first step changed the average", step);
            ASSERT_ERR(optim_ema_swap(o), OPTIM_ESTATE, optim_errmsg(o), "optim_ema_swap"); /* perturbed */
            ASSERT_OK_MSG(optim_sam_second_step(sam), optim_sam_errmsg(sam));
        } else {
            ASSERT_OPT_OK(o, optim_step(o));
        }
        for (j = 0; j < N; j++) x[j] = p[j];
        memcpy(ref, e0, sizeof ref);
        ref_ema(0, ref, x, N, c, 1);
        ASSERT_OPT_OK(o, optim_ema_read(o, 0, e1, NULL));
        if (memcmp(ref, e1, sizeof ref) != 0) FAIL("step %d: the average differs from the reference", step);
        ASSERT_OPT_OK(o, optim_get_ema(o, NULL, NULL, NULL, &c, NULL));
    }
    ASSERT_INT(c, ==, 9); /* 12 steps, 3 skipped */
    /* SAM's first step is refused while swapped. */
    ASSERT_OPT_OK(o, optim_ema_swap(o));
    ASSERT_ERR(optim_sam_first_step(sam), OPTIM_ESTATE, optim_sam_errmsg(sam), "optim_ema_swap");
    ASSERT_OPT_OK(o, optim_ema_swap(o));
    optim_sam_free(sam);
    optim_free(o);
    return 0;
}

TEST_IMPL(ema_sparse_steps)
{
    static const int rules[] = {OPTIM_SGD, OPTIM_ADAGRAD, OPTIM_SPARSE_ADAM};
    enum { ROWS = 50, L = 8, N = ROWS * L };
    size_t r;
    for (r = 0; r < sizeof rules / sizeof rules[0]; r++) {
        optim *o = NULL;
        optim_hparams hp;
        float p[2][N], e[N], ref[2][N], vals[ROWS * L], g1[N];
        double x[N];
        int64_t rows[ROWS];
        test_rng rng = {r + 3};
        size_t j, i;
        int step;
        for (j = 0; j < N; j++) {
            p[0][j] = (float)test_rng_normal(&rng);
            p[1][j] = (float)test_rng_normal(&rng);
        }
        ASSERT_OK(optim_create(&o, (optim_rule)rules[r]));
        ASSERT_OK(optim_hparams_init(&hp, (optim_rule)rules[r], NULL));
        ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
        ASSERT_OPT_OK(o, optim_add_param(o, 0, p[0], NULL, N, "emb", NULL));
        ASSERT_OPT_OK(o, optim_add_param(o, 0, p[1], NULL, N, "emb2", NULL));
        ASSERT_OPT_OK(o, optim_set_ema(o, DECAY, 0));
        for (step = 0; step < 20; step++) {
            optim_sparse_grad sg[2];
            const optim_sparse_grad *sgp[2];
            void *pp[2] = {p[0], p[1]};
            const void *gp[2] = {NULL, NULL};
            size_t nr = 0;
            for (j = 0; j < ROWS; j++)
                if (test_rng_uniform(&rng) < 0.3) rows[nr++] = (int64_t)j;
            for (j = 0; j < nr * L; j++) vals[j] = (float)test_rng_normal(&rng);
            for (j = 0; j < N; j++) g1[j] = 0;
            sg[0].rows = rows;
            sg[0].nrows = nr;
            sg[0].row_len = L;
            sg[0].values = vals;
            sg[1] = sg[0];
            sgp[0] = &sg[0];
            sgp[1] = step % 2 ? &sg[1] : NULL; /* the second: every other step, else no gradient */
            ASSERT_OPT_OK(o, optim_step_sparse(o, 2, pp, gp, sgp));
            for (i = 0; i < 2; i++) {
                for (j = 0; j < N; j++) x[j] = p[i][j];
                ref_ema(0, ref[i], x, N, step, 0);
                ASSERT_OPT_OK(o, optim_ema_read(o, i, e, NULL));
                if (memcmp(e, ref[i], sizeof e) != 0)
                    FAIL("%s step %d tensor %zu: the average differs from the reference",
                         optim_rule_name((optim_rule)rules[r]), step, i);
            }
        }
        (void)g1;
        optim_free(o);
    }
    printf("  sgd, adagrad, sparse_adam: sparse steps average every element of every parameter\n");
    return 0;
}

/* An Adam optimizer over a float32 and a bfloat16-with-master parameter, EMA with warm-up. */
typedef struct ckm {
    optim *o;
    float a[300], ga[300];
    uint16_t b[200];
    float gb[200];
} ckm;

static int ckm_init(ckm *m, int ema)
{
    test_rng rng = {99};
    optim_hparams hp;
    size_t j;
    for (j = 0; j < 300; j++) m->a[j] = (float)test_rng_normal(&rng);
    for (j = 0; j < 200; j++) m->b[j] = t_bf16_from_float((float)test_rng_normal(&rng));
    ASSERT_OK(optim_create(&m->o, OPTIM_ADAM));
    ASSERT_OK(optim_hparams_init(&hp, OPTIM_ADAM, NULL));
    ASSERT_OPT_OK(m->o, optim_add_group(m->o, &hp, NULL));
    ASSERT_OPT_OK(m->o, optim_add_param(m->o, 0, m->a, m->ga, 300, "a", NULL));
    ASSERT_OPT_OK(m->o, optim_add_param_ex(m->o, 0, m->b, OPTIM_BFLOAT16, m->gb, OPTIM_FLOAT32, 200, OPTIM_FLOAT32,
                                           OPTIM_PARAM_MASTER, "b", NULL));
    if (ema) ASSERT_OPT_OK(m->o, optim_set_ema(m->o, 0.95, 1));
    return 0;
}

static int ckm_steps(ckm *m, int first, int count)
{
    int s;
    size_t j;
    for (s = first; s < first + count; s++) {
        test_rng rng = {1000 + (uint64_t)s};
        for (j = 0; j < 300; j++) m->ga[j] = (float)test_rng_normal(&rng);
        for (j = 0; j < 200; j++) m->gb[j] = (float)test_rng_normal(&rng);
        ASSERT_OPT_OK(m->o, optim_step(m->o));
    }
    return 0;
}

/* The offset of the EMAS section's head in a checkpoint, or 0. */
static size_t emas_at(const unsigned char *d, size_t size)
{
    unsigned k;
    for (k = 0;; k++) {
        const size_t at = ckpt_section_offset(d, size, k);
        if (!at) return 0;
        if (memcmp(d + at, "EMAS", 4) == 0) return at;
    }
}

TEST_IMPL(ema_checkpoint)
{
    ckm a, b;
    void *buf = NULL, *buf2 = NULL;
    size_t size = 0, size2 = 0, at;
    float ea[300], eb[300];
    int on, warm, sw;
    double d;
    int64_t c;
    unsigned char *bad;
    /* Resume bit for bit: 6 steps, save, 6 more; a new optimizer without an EMA loads and does the same 6. */
    if (ckm_init(&a, 1) || ckm_steps(&a, 0, 6)) return 1;
    ASSERT_OPT_OK(a.o, optim_save_buffer(a.o, &buf, &size));
    if (ckm_init(&b, 0)) return 1;
    memcpy(b.a, a.a, sizeof a.a);
    memcpy(b.b, a.b, sizeof a.b);
    ASSERT_OPT_OK(b.o, optim_load_buffer(b.o, buf, size, OPTIM_MATCH_NAME, "buf"));
    ASSERT_OPT_OK(b.o, optim_get_ema(b.o, &on, &d, &warm, &c, &sw));
    ASSERT(on == 1 && d == 0.95 && warm == 1 && c == 6 && sw == 0);
    if (ckm_steps(&a, 6, 6) || ckm_steps(&b, 6, 6)) return 1;
    ASSERT_OPT_OK(a.o, optim_ema_read(a.o, 0, ea, NULL));
    ASSERT_OPT_OK(b.o, optim_ema_read(b.o, 0, eb, NULL));
    ASSERT(memcmp(ea, eb, sizeof ea) == 0);
    ASSERT_OPT_OK(a.o, optim_ema_read(a.o, 1, ea, NULL));
    ASSERT_OPT_OK(b.o, optim_ema_read(b.o, 1, eb, NULL));
    ASSERT(memcmp(ea, eb, 200 * sizeof(float)) == 0);
    ASSERT(memcmp(a.a, b.a, sizeof a.a) == 0 && memcmp(a.b, b.b, sizeof a.b) == 0);
    ASSERT(ckpt_same_state(a.o, b.o));
    /* The section is required (flags 0): a library that does not know it refuses the file. */
    at = emas_at((const unsigned char *)buf, size);
    ASSERT(at != 0);
    ASSERT_INT(ckpt_get_le((const unsigned char *)buf + at + 4, 4), ==, 0);
    /* Damage in the section is named by it. */
    bad = malloc(size);
    if (!bad) FAIL("out of memory");
    memcpy(bad, buf, size);
    bad[at + 16 + 30] ^= 0x10;
    ASSERT_ERR(optim_load_buffer(b.o, bad, size, OPTIM_MATCH_NAME, "buf"), OPTIM_ECHECKSUM, optim_errmsg(b.o),
               "(EMAS): checksum mismatch");
    /* Malformed, checksums right: a decay of 1.5, a warm-up of 2, a type of 7; refused by name, nothing changed. */
    memcpy(bad, buf, size);
    {
        double x = 1.5;
        uint64_t u;
        memcpy(&u, &x, 8);
        ckpt_put_le(bad + at + 16 + 8, u, 8);
    }
    ckpt_rechecksum(bad, size);
    ASSERT_ERR(optim_load_buffer(b.o, bad, size, OPTIM_MATCH_NAME, "buf"), OPTIM_EFORMAT, optim_errmsg(b.o),
               "EMA decay = 1.5");
    memcpy(bad, buf, size);
    ckpt_put_le(bad + at + 16, 2, 4);
    ckpt_rechecksum(bad, size);
    ASSERT_ERR(optim_load_buffer(b.o, bad, size, OPTIM_MATCH_NAME, "buf"), OPTIM_EFORMAT, optim_errmsg(b.o),
               "EMA warm-up 2");
    memcpy(bad, buf, size);
    ckpt_put_le(bad + at + 16 + 32, 7, 4);
    ckpt_rechecksum(bad, size);
    ASSERT_ERR(optim_load_buffer(b.o, bad, size, OPTIM_MATCH_NAME, "buf"), OPTIM_EFORMAT, optim_errmsg(b.o),
               "element type 7");
    memcpy(bad, buf, size);
    ckpt_put_le(bad + at + 16 + 32, OPTIM_FLOAT64, 4);
    ckpt_rechecksum(bad, size);
    ASSERT(optim_load_buffer(b.o, bad, size, OPTIM_MATCH_NAME, "buf") != OPTIM_OK);
    free(bad);
    ASSERT_OPT_OK(b.o, optim_get_ema(b.o, &on, &d, &warm, &c, &sw));
    ASSERT(on == 1 && c == 12);
    /* Saved while swapped: the load restores the swap (the parameters' memory as saved), and swapping back gives
     * the training parameters bit for bit. */
    {
        float a0[300];
        uint16_t b0[200];
        ckm s;
        memcpy(a0, a.a, sizeof a0);
        memcpy(b0, a.b, sizeof b0);
        ASSERT_OPT_OK(a.o, optim_ema_swap(a.o));
        ASSERT_OPT_OK(a.o, optim_save_buffer(a.o, &buf2, &size2));
        ASSERT_ERR(optim_load_buffer(a.o, buf2, size2, OPTIM_MATCH_NAME, "buf"), OPTIM_ESTATE, optim_errmsg(a.o),
                   "swap back");
        if (ckm_init(&s, 1)) return 1;
        memcpy(s.a, a.a, sizeof a.a);
        memcpy(s.b, a.b, sizeof a.b);
        ASSERT_OPT_OK(s.o, optim_load_buffer(s.o, buf2, size2, OPTIM_MATCH_NAME, "buf"));
        ASSERT_OPT_OK(s.o, optim_get_ema(s.o, &on, &d, &warm, &c, &sw));
        ASSERT(sw == 1);
        ASSERT_OPT_OK(s.o, optim_ema_swap(s.o));
        ASSERT(memcmp(s.a, a0, sizeof a0) == 0 && memcmp(s.b, b0, sizeof b0) == 0);
        ASSERT_OPT_OK(a.o, optim_ema_swap(a.o));
        ASSERT(ckpt_same_state(a.o, s.o));
        optim_free(s.o);
    }
    /* A file without an EMA keeps the optimizer's settings and restarts its averages (ema_load_combinations). */
    {
        ckm z;
        void *zb = NULL;
        size_t zs = 0;
        if (ckm_init(&z, 0) || ckm_steps(&z, 0, 2)) return 1;
        ASSERT_OPT_OK(z.o, optim_save_buffer(z.o, &zb, &zs));
        ASSERT(emas_at((const unsigned char *)zb, zs) == 0);
        ASSERT_OPT_OK(b.o, optim_load_buffer(b.o, zb, zs, OPTIM_MATCH_NAME, "buf"));
        ASSERT_OPT_OK(b.o, optim_get_ema(b.o, &on, &d, &warm, &c, &sw));
        ASSERT(on == 1 && d == 0.95 && warm == 1 && c == 0);
        free(zb);
        optim_free(z.o);
    }
    free(buf);
    free(buf2);
    optim_free(a.o);
    optim_free(b.o);
    return 0;
}

/* A parameter added after the EMA has taken averages (optim_add_param with the EMA on) starts as an
 * AveragedModel made for it then would: its first average copies it (the step after it was added) and its
 * warm-up counts its own averages (optim_ema_param_count); the parameters added before go on with theirs.
 * Every step's averages bit for bit against ref_ema with each parameter's own count, warm-up on and off; a
 * checkpoint carries the counts (resumed bit for bit in a new optimizer), a damaged count is refused by name,
 * and a file whose parameters all share the count has no per-param counts (the bytes of before). */
static int late_grads(int s, float *ga, float *gb)
{
    test_rng rng = {500 + (uint64_t)s};
    size_t j;
    for (j = 0; j < 37; j++) ga[j] = (float)test_rng_normal(&rng);
    for (j = 0; j < 50; j++) gb[j] = (float)test_rng_normal(&rng);
    return 0;
}

static int late_make(optim **o, float *a, float *ga, float *b, float *gb, int with_b, int warmup)
{
    optim_hparams hp;
    ASSERT_OK(optim_create(o, OPTIM_ADAM));
    ASSERT_OK(optim_hparams_init(&hp, OPTIM_ADAM, NULL));
    hp.lr = 0.05;
    ASSERT_OPT_OK(*o, optim_add_group(*o, &hp, NULL));
    ASSERT_OPT_OK(*o, optim_add_param(*o, 0, a, ga, 37, "a", NULL));
    if (with_b) ASSERT_OPT_OK(*o, optim_add_param(*o, 0, b, gb, 50, "b", NULL));
    ASSERT_OPT_OK(*o, optim_set_ema(*o, DECAY, warmup));
    return 0;
}

TEST_IMPL(ema_param_added_late)
{
    int warmup;
    for (warmup = 0; warmup < 2; warmup++) {
        float a[37], ga[37], b[50], gb[50], ea[37], eb[50], ra[37], rb[50], a5[37], b5[50], qa[37], qb[50];
        double x[50];
        optim *o = NULL, *q = NULL;
        test_rng rng = {7};
        void *buf = NULL, *plain = NULL;
        size_t size = 0, psize = 0, at, j;
        int64_t c, ca = 0, cb = 0;
        int s;
        for (j = 0; j < 37; j++) a[j] = (float)test_rng_normal(&rng);
        for (j = 0; j < 50; j++) b[j] = (float)test_rng_normal(&rng);
        if (late_make(&o, a, ga, b, gb, 0, warmup)) return 1;
        for (s = 0; s < 9; s++) {
            late_grads(s, ga, gb);
            if (s == 3) {
                /* Three averages of a so far: b comes in with its own count 0. */
                ASSERT_OPT_OK(o, optim_save_buffer(o, &plain, &psize)); /* one count for all: no per-param counts */
                ASSERT_OPT_OK(o, optim_add_param(o, 0, b, gb, 50, "b", NULL));
                ASSERT_OPT_OK(o, optim_ema_param_count(o, 1, &c));
                ASSERT_INT(c, ==, 0);
                ASSERT_OPT_OK(o, optim_ema_param_count(o, 0, &c));
                ASSERT_INT(c, ==, 3);
            }
            if (s == 5) {
                /* a has 5 averages, b 2: saved, to resume from below over the memory as it is now. */
                ASSERT_OPT_OK(o, optim_save_buffer(o, &buf, &size));
                memcpy(a5, a, sizeof a5);
                memcpy(b5, b, sizeof b5);
            }
            ASSERT_OPT_OK(o, optim_step(o));
            for (j = 0; j < 37; j++) x[j] = (double)a[j];
            ref_ema(0, ra, x, 37, ca++, warmup);
            ASSERT_OPT_OK(o, optim_ema_read(o, 0, ea, NULL));
            ASSERT(memcmp(ea, ra, sizeof ea) == 0);
            if (s >= 3) {
                for (j = 0; j < 50; j++) x[j] = (double)b[j];
                ref_ema(0, rb, x, 50, cb++, warmup);
                ASSERT_OPT_OK(o, optim_ema_read(o, 1, eb, NULL));
                if (memcmp(eb, rb, sizeof eb) != 0)
                    FAIL("warmup %d, step %d: b's average[0] %.9g, the reference's (its own count %lld) %.9g", warmup,
                         s, (double)eb[0], (long long)(cb - 1), (double)rb[0]);
            }
        }
        ASSERT_OPT_OK(o, optim_ema_param_count(o, 1, &c));
        ASSERT_INT(c, ==, 6);
        ASSERT_OPT_OK(o, optim_get_ema(o, NULL, NULL, NULL, &c, NULL));
        ASSERT_INT(c, ==, 9);
        ASSERT_ERR(optim_ema_set_param_count(o, 1, 10), OPTIM_EINVAL, optim_errmsg(o),
                   "count = 10 for param 1 'b' must be in [0, 9]");
        /* The file of before b: its EMAS section as before (no counts: 4 + 4 + 8 + 8 + 8 and a's record). */
        at = emas_at((const unsigned char *)plain, psize);
        ASSERT(at != 0);
        ASSERT_INT(ckpt_get_le((const unsigned char *)plain + at + 8, 8), ==, 32 + 16 + 37 * 4);
        /* Resume from step 5 in a new optimizer: the same bits as the run that went on. */
        memcpy(qa, a5, sizeof qa);
        memcpy(qb, b5, sizeof qb);
        if (late_make(&q, qa, ga, qb, gb, 1, warmup)) return 1;
        ASSERT_OPT_OK(q, optim_load_buffer(q, buf, size, OPTIM_MATCH_NAME, "buf"));
        ASSERT_OPT_OK(q, optim_ema_param_count(q, 1, &c));
        ASSERT_INT(c, ==, 2);
        ASSERT_OPT_OK(q, optim_ema_param_count(q, 0, &c));
        ASSERT_INT(c, ==, 5);
        for (s = 5; s < 9; s++) {
            late_grads(s, ga, gb);
            ASSERT_OPT_OK(q, optim_step(q));
        }
        ASSERT_OPT_OK(q, optim_ema_read(q, 0, ea, NULL));
        ASSERT(memcmp(ea, ra, sizeof ea) == 0);
        ASSERT_OPT_OK(q, optim_ema_read(q, 1, eb, NULL));
        ASSERT(memcmp(eb, rb, sizeof eb) == 0);
        ASSERT(memcmp(qa, a, sizeof qa) == 0 && memcmp(qb, b, sizeof qb) == 0);
        /* A count above the optimizer's, checksums right: refused by name. The counts end the payload. */
        {
            unsigned char *bad = malloc(size);
            size_t len;
            if (!bad) FAIL("out of memory");
            memcpy(bad, buf, size);
            at = emas_at(bad, size);
            len = (size_t)ckpt_get_le(bad + at + 8, 8);
            ASSERT_INT(ckpt_get_le(bad + at + 16 + len - 8, 8), ==, 2);
            ckpt_put_le(bad + at + 16 + len - 8, 6, 8);
            ckpt_rechecksum(bad, size);
            ASSERT_ERR(optim_load_buffer(q, bad, size, OPTIM_MATCH_NAME, "buf"), OPTIM_EFORMAT, optim_errmsg(q),
                       "the EMA count of param 1 is 6, above the optimizer's 5");
            free(bad);
        }
        /* optim_ema_set_count: every parameter's count (a binding's restore of a state dict). */
        ASSERT_OPT_OK(o, optim_ema_set_count(o, 4));
        ASSERT_OPT_OK(o, optim_ema_param_count(o, 1, &c));
        ASSERT_INT(c, ==, 4);
        optim_free(o);
        optim_free(q);
        free(buf);
        free(plain);
    }
    return 0;
}

/* Loading into an optimizer with or without an EMA a file with or without one (include/optim_ema.h,
 * "Loading"; the rule optim.torch's load_state_dict follows, python/tests/test_torch_ema.py
 * test_load_combinations): the file's EMA comes in with its settings, count and averages (turned on where it
 * was off); a file without one leaves the optimizer's settings, on or off, and an EMA that is on restarts
 * (count 0: the next step's average is a copy of the parameters). */
TEST_IMPL(ema_load_combinations)
{
    int saved, has;
    for (saved = 0; saved < 2; saved++)
        for (has = 0; has < 2; has++) {
            ckm src, dst;
            void *buf = NULL;
            size_t size = 0;
            float es[300], ed[300], *mp = NULL;
            int on, warm, sw;
            double d;
            int64_t c;
            if (ckm_init(&src, saved) || ckm_steps(&src, 0, 3)) return 1;
            ASSERT_OPT_OK(src.o, optim_save_buffer(src.o, &buf, &size));
            if (ckm_init(&dst, 0)) return 1;
            if (has) {
                ASSERT_OPT_OK(dst.o, optim_set_ema(dst.o, 0.5, 0));
                if (ckm_steps(&dst, 0, 2)) return 1;
            }
            memcpy(dst.a, src.a, sizeof src.a);
            memcpy(dst.b, src.b, sizeof src.b);
            ASSERT_OPT_OK(dst.o, optim_load_buffer(dst.o, buf, size, OPTIM_MATCH_NAME, "buf"));
            ASSERT_OPT_OK(dst.o, optim_get_ema(dst.o, &on, &d, &warm, &c, &sw));
            if (saved) {
                /* The file's: settings, count, averages. */
                ASSERT(on == 1 && d == 0.95 && warm == 1 && c == 3 && sw == 0);
                ASSERT_OPT_OK(src.o, optim_ema_read(src.o, 0, es, NULL));
                ASSERT_OPT_OK(dst.o, optim_ema_read(dst.o, 0, ed, NULL));
                ASSERT(memcmp(es, ed, sizeof es) == 0);
            } else if (has) {
                /* The optimizer's settings, its averages restarting: the next step copies. */
                ASSERT(on == 1 && d == 0.5 && warm == 0 && c == 0);
                if (ckm_steps(&dst, 3, 1)) return 1;
                ASSERT_OPT_OK(dst.o, optim_ema_read(dst.o, 0, ed, NULL));
                ASSERT(memcmp(ed, dst.a, sizeof ed) == 0);
                ASSERT_OPT_OK(dst.o, optim_ema_read(dst.o, 1, ed, NULL));
                ASSERT_OPT_OK(dst.o, optim_param_master_data(dst.o, 1, &mp));
                ASSERT(memcmp(ed, mp, 200 * sizeof(float)) == 0);
            } else {
                ASSERT(on == 0 && c == 0);
            }
            free(buf);
            optim_free(src.o);
            optim_free(dst.o);
        }
    return 0;
}
