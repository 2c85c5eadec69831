/* test_paths.c: every CPU path and thread count gives the scalar path's bits,
 * for every variant of every rule (each option combination of its grid, with
 * and without fused value clipping, with fused norm clipping), float32 and
 * float64, and NaN/Inf included; bfloat16 and float16 parameters and
 * gradients give the bits of a reference that applies the same roundings. */
#include "grid.h"
#include "optim_stats.h"
#include "typed.h"

/* Every valid option combination of a rule's grid becomes one group of one
 * optimizer, with tensors of these sizes (vector tails, and one past a chunk
 * of the chunked path), so that one step runs every variant in one parallel
 * region, and two threads split the concatenation somewhere inside it. */
static const size_t group_sizes[] = {1, 7, 100, 517, 33};
#define NSIZES (sizeof group_sizes / sizeof group_sizes[0])
#define STEPS 12 /* SGD's first momentum step, and RAdam's rectification from step 6 on */

/* The valid combinations of rule r's grid into hps (every `stride`-th, the
 * first and the last); their number. */
static size_t collect(int r, optim_hparams *hps, long stride)
{
    const grid *gr = grid_for(r);
    size_t k = 0;
    long c;
    stride *= T_SAMPLE;
    for (c = 0; c < grid_size(gr); c++)
        if ((c % stride == 0 || c == grid_size(gr) - 1) && grid_get(gr, c, &hps[k]) == 0) k++;
    return k;
}

typedef struct path_fixture {
    tmodel init, ref, got;
    tgrads grads;
} path_fixture;

static int fixture_init_ex(path_fixture *f, optim_dtype pdt, optim_dtype gdt, int sdt, size_t ngroups,
                           uint64_t seed, int nonfinite);

static int fixture_init(path_fixture *f, optim_dtype pdt, optim_dtype gdt, size_t ngroups, uint64_t seed,
                        int nonfinite)
{
    return fixture_init_ex(f, pdt, gdt, -1, ngroups, seed, nonfinite);
}

static int fixture_init_ex(path_fixture *f, optim_dtype pdt, optim_dtype gdt, int sdt, size_t ngroups,
                           uint64_t seed, int nonfinite)
{
    test_rng rng = {seed};
    size_t sizes[NSIZES + 1], k, per = 0;
    memset(f, 0, sizeof *f);
    /* One more tensor per group (empty when there are many groups), so that
     * the step is large enough for two threads (32K elements) with room. */
    for (k = 0; k < NSIZES; k++) per += sizes[k] = group_sizes[k];
    sizes[NSIZES] = ngroups * per < 40000 ? (40000 - ngroups * per) / ngroups + 1 : 0;
    if (tmodel_init_ex(&f->init, pdt, gdt, sdt, sizes, NSIZES + 1, ngroups, &rng) ||
        tmodel_init_ex(&f->ref, pdt, gdt, sdt, sizes, NSIZES + 1, ngroups, &rng) ||
        tmodel_init_ex(&f->got, pdt, gdt, sdt, sizes, NSIZES + 1, ngroups, &rng) ||
        tgrads_init(&f->grads, &f->init, STEPS, seed ^ 0x9, nonfinite))
        return -1;
    return 0;
}

static void fixture_free(path_fixture *f)
{
    tmodel_free(&f->init);
    tmodel_free(&f->ref);
    tmodel_free(&f->got);
    tgrads_free(&f->grads);
}

/* The groups on every path with one and two threads, against f->ref (the
 * scalar path on one thread, or a reference the caller computed). */
static int every_path(path_fixture *f, const optim_hparams *hps, int clip, const char *against, long *runs)
{
    size_t k;
    int threads;
    for (k = 0; k < T_NISAS; k++) {
        if (!optim_isa_available(t_isas[k])) continue; /* named by t_print_paths */
        for (threads = 1; threads <= 2; threads++) {
            char what[96];
            if (!against && t_isas[k] == OPTIM_ISA_SCALAR && threads == 1) continue; /* the reference itself */
            snprintf(what, sizeof what, "%s, %d thread%s, against %s", optim_isa_name(t_isas[k]), threads,
                     threads > 1 ? "s" : "", against ? against : "scalar");
            if (t_run(hps, clip, &f->init, &f->grads, t_isas[k], threads, 0, &f->got)) return 1;
            if (t_compare(&f->got, &f->ref, what, hps, clip)) return 1;
            (*runs)++;
        }
    }
    return 0;
}

TEST_IMPL(paths_bit_identical)
{
    static const optim_dtype types[][2] = {{OPTIM_FLOAT32, OPTIM_FLOAT32}, {OPTIM_FLOAT64, OPTIM_FLOAT64}};
    static optim_hparams hps[1024];
    size_t ty;
    t_print_paths("paths_bit_identical");
    for (ty = 0; ty < sizeof types / sizeof types[0]; ty++) {
        int r;
        for (r = 1; r <= OPTIM_RULE_COUNT; r++) if (test_rule_dense(r)) {
            size_t ng = collect(r, hps, 1);
            path_fixture f;
            long runs = 0;
            int clip;
            if (fixture_init(&f, types[ty][0], types[ty][1], ng, test_seed() ^ 0xb175 ^ ty ^ ((uint64_t)r << 8), 0))
                FAIL("out of memory");
            for (clip = 0; clip < T_CLIP_MODES; clip++) {
                if (t_run(hps, clip, &f.init, &f.grads, OPTIM_ISA_SCALAR, 1, 0, &f.ref)) return 1;
                if (every_path(&f, hps, clip, NULL, &runs)) return 1;
            }
            if (T_SAMPLE > 1 && r == 1) printf("  (sanitizer build: every %dth option combination)\n", T_SAMPLE);
            printf("  %-8s %-9s %4zu option combinations x %d clipping modes x %d steps: %ld runs (paths, 1 and 2 "
                   "threads) bit for bit against scalar\n",
                   optim_dtype_name(types[ty][0]), optim_rule_name((optim_rule)r), ng, T_CLIP_MODES, STEPS, runs);
            fixture_free(&f);
        }
    }
    return 0;
}

/* Non-finite gradients, parameters and state: every path gives the scalar
 * path's bits, NaN results included (one quiet NaN of positive sign). */
static int nan_canonical(const tmodel *m, const optim_hparams *hps)
{
    const optim_hparams *hp = &hps[0];
    size_t i, j;
    int sl;
    for (i = 0; i < m->count; i++)
        for (sl = -1; sl < OPTIM_MAX_SLOTS; sl++) {
            optim_dtype dt = sl < 0 ? m->pdt : m->sdt;
            const void *x = sl < 0 ? m->p[i] : m->s[i][sl];
            for (j = 0; j < m->n[i]; j++) {
                uint64_t bits = 0, want;
                if (!isnan(t_get(dt, x, j))) continue;
                memcpy(&bits, (const char *)x + j * optim_dtype_size(dt), optim_dtype_size(dt));
                want = dt == OPTIM_FLOAT64 ? 0x7ff8000000000000ull
                       : dt == OPTIM_FLOAT32 ? 0x7fc00000u
                       : dt == OPTIM_BFLOAT16 ? 0x7fc0u : 0x7e00u;
                if (bits != want)
                    FAIL("%s: %s %s[%zu] of tensor %zu is NaN 0x%llx, not the canonical 0x%llx",
                         optim_rule_name(hp->rule), optim_dtype_name(dt), sl < 0 ? "param" : "slot", j, i,
                         (unsigned long long)bits, (unsigned long long)want);
            }
        }
    return 0;
}

TEST_IMPL(nan_bits_every_path)
{
    static const optim_dtype types[][2] = {{OPTIM_FLOAT32, OPTIM_FLOAT32}, {OPTIM_FLOAT64, OPTIM_FLOAT64},
                                           {OPTIM_BFLOAT16, OPTIM_BFLOAT16}, {OPTIM_FLOAT16, OPTIM_FLOAT16},
                                           {OPTIM_FLOAT32, OPTIM_BFLOAT16}};
    static optim_hparams hps[1024];
    size_t ty;
    t_print_paths("nan_bits_every_path");
    for (ty = 0; ty < sizeof types / sizeof types[0]; ty++) {
        int r;
        long nans = 0, runs = 0;
        for (r = 1; r <= OPTIM_RULE_COUNT; r++) if (ty < 2 ? test_rule_dense(r) : test_rule_any_type(r)) {
            /* Every other option combination in float32 and float64 (paths_bit_identical runs each without
             * non-finite values), every fifth for the half types (whose loops are float32's). */
            size_t ng = collect(r, hps, ty < 2 ? 2 : 5), i, j;
            path_fixture f;
            int clip;
            if (fixture_init(&f, types[ty][0], types[ty][1], ng, test_seed() ^ 0x4a4e ^ ty ^ ((uint64_t)r << 8), 1))
                FAIL("out of memory");
            for (clip = 0; clip < 2; clip++) {
                /* Under AddressSanitizer, with or without clipping by turns (every rule meets both over the
                 * rows of types, every row both over the rules); natively both. */
                if (T_SAMPLE > 1 && clip != (int)((ty + (size_t)r) % 2)) continue;
                if (t_run(hps, clip, &f.init, &f.grads, OPTIM_ISA_SCALAR, 1, 0, &f.ref)) return 1;
                if (every_path(&f, hps, clip, NULL, &runs)) return 1;
                if (nan_canonical(&f.ref, hps)) return 1;
                for (i = 0; i < f.ref.count; i++)
                    for (j = 0; j < f.ref.n[i]; j++) nans += isnan(t_get(f.ref.pdt, f.ref.p[i], j));
            }
            fixture_free(&f);
        }
        if (T_SAMPLE > 1)
            printf("  (sanitizer build: every %dth of those, with or without clipping by turns)\n", T_SAMPLE);
        printf("  %-8s params, %-8s grads: %s option combination of every rule, with and without value "
               "clipping, NaN and Inf in gradients, parameters and state: %ld NaN parameters, %ld runs bit for bit "
               "against scalar\n",
               optim_dtype_name(types[ty][0]), optim_dtype_name(types[ty][1]), ty < 2 ? "every other" : "every fifth",
               nans, runs);
        ASSERT(nans > 0);
    }
    return 0;
}

/* ---- bfloat16 and float16 against a reference of the same roundings ------------------ */

/* State kept in a half type (init->sdt): each value of the reference's
 * float32 state rounded to it by the tests' own conversion, and widened for
 * the next step. */
static int half_round_state(optim *o, const optim_hparams *hp, const tmodel *init, tmodel *out)
{
    size_t i, j;
    int s;
    for (i = 0; init->sdt != OPTIM_FLOAT32 && i < init->count; i++)
        for (s = 0; s < optim_rule_slot_count(hp->rule); s++) {
            float *data = NULL;
            ASSERT_OPT_OK(o, optim_state_slot(o, i, s, &data, NULL));
            if (data && init->sdt == OPTIM_INT8_BLOCK) {
                /* Quantized block by block with the tests' own code, dequantized for the next step. */
                t_q8_quantize(out->s[i][s], data, init->n[i], t_q8_kind(hp->rule, s));
                t_q8_dequantize(data, out->s[i][s], init->n[i], t_q8_kind(hp->rule, s));
                continue;
            }
            for (j = 0; data && j < init->n[i]; j++) {
                t_set(init->sdt, out->s[i][s], j, data[j]);
                data[j] = (float)t_get(init->sdt, out->s[i][s], j);
            }
        }
    return 0;
}

/* The reference of a run over half types: a float32 optimizer (scalar path,
 * the same options) steps float copies of the parameters and the widened
 * gradients; after each step a half parameter is rounded to its type with
 * the tests' own conversion (typed.c) and widened again for the next one. So
 * it applies the library's promise, load exactly, float math, round to
 * nearest even, element by element, with everything but the float math
 * written independently. */
static int half_reference(const optim_hparams *hps, int clip, const tmodel *init, const tgrads *G, tmodel *out)
{
    const optim_hparams *hp = &hps[0];
    optim *o = NULL;
    float **p32 = (float **)calloc(init->count, sizeof *p32), **g32 = (float **)calloc(init->count, sizeof *g32);
    size_t i, j, gsize = optim_dtype_size(init->gdt), ngroups = init->group[init->count - 1] + 1;
    int t, s;
    if (!p32 || !g32) FAIL("out of memory");
    ASSERT_OK(optim_create(&o, hp->rule));
    for (i = 0; i < ngroups; i++) ASSERT_OPT_OK(o, optim_add_group(o, &hps[i], NULL));
    ASSERT_OPT_OK(o, optim_set_isa(o, OPTIM_ISA_SCALAR));
    ASSERT_OPT_OK(o, optim_set_threads(o, 1));
    if (clip == T_CLIP_VALUE) ASSERT_OPT_OK(o, optim_set_clip_grad_value(o, 0.3));
    if (clip == T_CLIP_NORM) ASSERT_OPT_OK(o, optim_set_clip_grad_norm(o, 1.0, 2.0));
    for (i = 0; i < init->count; i++) {
        p32[i] = (float *)t_alloc(OPTIM_FLOAT32, init->n[i]);
        g32[i] = (float *)t_alloc(OPTIM_FLOAT32, init->n[i]);
        if (!p32[i] || !g32[i]) FAIL("out of memory");
        memcpy(out->p[i], init->p[i], init->n[i] * optim_dtype_size(init->pdt));
        for (j = 0; j < init->n[i]; j++) p32[i][j] = (float)t_get(init->pdt, out->p[i], j);
        ASSERT_OPT_OK(o, optim_add_param(o, init->group[i], p32[i], g32[i], init->n[i], NULL, NULL));
    }
    if (half_round_state(o, hp, init, out)) return 1; /* the initial values, as the library stores them */
    for (t = 0; t < G->steps; t++) {
        for (i = 0; i < init->count; i++) {
            const char *gt = (const char *)G->g[i] + (size_t)t * init->n[i] * gsize;
            for (j = 0; j < init->n[i]; j++) g32[i][j] = (float)t_get(init->gdt, gt, j);
        }
        ASSERT_OPT_OK(o, optim_step(o));
        for (i = 0; i < init->count; i++) {
            for (j = 0; j < init->n[i]; j++) {
                if (init->pdt == OPTIM_FLOAT32) continue; /* a float32 parameter is not rounded */
                t_set(init->pdt, out->p[i], j, p32[i][j]);
                p32[i][j] = (float)t_get(init->pdt, out->p[i], j);
            }
        }
        if (half_round_state(o, hp, init, out)) return 1;
    }
    for (i = 0; i < init->count; i++) {
        if (init->pdt == OPTIM_FLOAT32) memcpy(out->p[i], p32[i], init->n[i] * sizeof(float));
        for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
            float *data = NULL;
            if (s < optim_rule_slot_count(hp->rule)) ASSERT_OPT_OK(o, optim_state_slot(o, i, s, &data, NULL));
            if (init->sdt == OPTIM_INT8_BLOCK) {
                /* Quantized after the last step already; an unallocated slot reads as zeros. */
                if (!data) memset(out->s[i][s], 0, OPTIM_INT8_BLOCK_BYTES(init->n[i]));
                continue;
            }
            for (j = 0; j < init->n[i]; j++) t_set(init->sdt, out->s[i][s], j, data ? data[j] : 0.0f);
        }
        free(p32[i]);
        free(g32[i]);
    }
    free(p32);
    free(g32);
    optim_free(o);
    return 0;
}

static int types_vs_reference(const int (*types)[3], size_t ntypes, long stride);

TEST_IMPL(half_types_vs_rounding_reference)
{
    /* param, grad, state (-1: the pair's float32 state). */
    static const int types[][3] = {{OPTIM_BFLOAT16, OPTIM_BFLOAT16, -1},
                                   {OPTIM_FLOAT16, OPTIM_FLOAT16, -1},
                                   {OPTIM_FLOAT32, OPTIM_BFLOAT16, -1},
                                   {OPTIM_FLOAT32, OPTIM_FLOAT16, -1},
                                   {OPTIM_BFLOAT16, OPTIM_BFLOAT16, OPTIM_BFLOAT16},
                                   {OPTIM_FLOAT16, OPTIM_FLOAT16, OPTIM_FLOAT16},
                                   {OPTIM_FLOAT32, OPTIM_FLOAT32, OPTIM_BFLOAT16}};
    t_print_paths("half_types_vs_rounding_reference");
    return types_vs_reference(types, sizeof types / sizeof types[0], 5);
}

TEST_IMPL(int8_state_vs_quantizing_reference)
{
    /* 8-bit block-quantized state: the reference quantizes and dequantizes its float32 state with the tests'
     * own code (typed.c) after every step. */
    static const int types[][3] = {{OPTIM_FLOAT32, OPTIM_FLOAT32, OPTIM_INT8_BLOCK},
                                   {OPTIM_FLOAT32, OPTIM_BFLOAT16, OPTIM_INT8_BLOCK},
                                   {OPTIM_BFLOAT16, OPTIM_BFLOAT16, OPTIM_INT8_BLOCK}};
    t_print_paths("int8_state_vs_quantizing_reference");
    /* Every 15th option combination: the loops are those of the rows above (paths_bit_identical runs every
     * variant); the chunks' quantization is what is new. */
    return types_vs_reference(types, sizeof types / sizeof types[0], 15);
}

/* Every rule against half_reference for each (param, grad, state) of types,
 * every stride-th option combination. */
static int types_vs_reference(const int (*types)[3], size_t ntypes, long stride)
{
    static optim_hparams hps[1024];
    size_t ty;
    for (ty = 0; ty < ntypes; ty++) {
        int r, lamb_own = 0;
        long runs = 0, moved = 0;
        for (r = 1; r <= OPTIM_RULE_COUNT; r++) if (test_rule_any_type(r)) {
            /* Every stride-th option combination (the loops are float32's, every variant of which
             * paths_bit_identical runs), each clipping mode, every path, one and two threads. */
            size_t ng = collect(r, hps, stride), i, j;
            path_fixture f;
            int clip;
            if (types[ty][2] == OPTIM_INT8_BLOCK && r == OPTIM_RMSPROP) {
                /* Centered RMSprop floors sq - ga^2 with int8_block state, which a float32 optimizer (this
                 * reference) does not: int8_rmsprop_centered_finite holds it with its own reference. */
                size_t k = 0;
                for (i = 0; i < ng; i++)
                    if (!hps[i].centered) hps[k++] = hps[i];
                ng = k;
            }
            if (fixture_init_ex(&f, (optim_dtype)types[ty][0], (optim_dtype)types[ty][1], types[ty][2], ng,
                                test_seed() ^ 0x4a1f ^ ty ^ ((uint64_t)r << 8), 0))
                FAIL("out of memory");
            for (clip = 0; clip < T_CLIP_MODES; clip++) {
                /* Under AddressSanitizer (T_SAMPLE > 1: memory errors, not values), one clipping mode per
                 * (types, rule), turning with both: each mode still runs with every row of types and every
                 * rule there. Natively every mode of every pair. */
                if (T_SAMPLE > 1 && clip != (int)((ty + (size_t)r) % T_CLIP_MODES)) continue;
                /* LAMB's pass 2 reads the moments its pass 1 stored, rounded to the state's type (as torch reads
                 * a bfloat16 exp_avg): not the float-math-then-round model of half_reference, which rounds the
                 * state after whole steps. With such state its reference is the library's own scalar path on one
                 * thread (every path and thread count bit for bit against it); its math is rules_vs_reference's,
                 * its storage the descriptors every other rule exercises here. */
                const int own = r == OPTIM_LAMB && types[ty][2] >= 0 && types[ty][2] != OPTIM_FLOAT32;
                if (own ? t_run(hps, clip, &f.init, &f.grads, OPTIM_ISA_SCALAR, 1, 0, &f.ref)
                        : half_reference(hps, clip, &f.init, &f.grads, &f.ref))
                    return 1;
                if (own) lamb_own = 1;
                if (every_path(&f, hps, clip, own ? "the scalar path" : "the rounding reference", &runs)) return 1;
                /* The parameters moved, so the roundings were exercised. */
                for (i = 0; i < f.init.count; i++)
                    for (j = 0; j < f.init.n[i]; j++)
                        moved += t_get(f.init.pdt, f.init.p[i], j) != t_get(f.ref.pdt, f.ref.p[i], j);
            }
            fixture_free(&f);
        }
        if (T_SAMPLE > 1)
            printf("  (sanitizer build: every %dth of the combinations below, one clipping mode per rule)\n",
                   T_SAMPLE);
        printf("  %-8s params, %-8s grads, %-10s state: %ld runs (every rule, every %ldth option combination, "
               "paths, 1 and 2 threads) bit for bit against the rounding reference; %ld parameters moved\n",
               optim_dtype_name((optim_dtype)types[ty][0]), optim_dtype_name((optim_dtype)types[ty][1]),
               types[ty][2] < 0 ? "float32" : optim_dtype_name((optim_dtype)types[ty][2]), runs, stride, moved);
        if (lamb_own)
            printf("  %-8s params, %-8s grads, %-10s state: lamb against the scalar path (its pass 2 reads the state "
                   "as stored)\n",
                   optim_dtype_name((optim_dtype)types[ty][0]), optim_dtype_name((optim_dtype)types[ty][1]),
                   optim_dtype_name((optim_dtype)types[ty][2]));
        ASSERT(runs > 0 && moved > 0);
    }
    return 0;
}

/* The loops run in prefetch blocks and groups past 16 KiB per stream
 * (kernels_impl.h, OPTIM__PREFETCH): tensors longer than that, of lengths
 * that are no multiple of a block, a group or a chunk, with guard elements
 * on both sides. Every rule with its defaults, float32 and float64, every
 * path, 1 and 2 threads, with and without step statistics (the fused loops'
 * blocks of 8192), two steps: the guards stay as they were, and every run gives the
 * scalar path's bits. */
#define RANGE_GUARD 300
TEST_IMPL(loops_stay_in_range)
{
    static const size_t sizes[] = {8192 + 17, 40000 + 13};
    static const optim_dtype types[] = {OPTIM_FLOAT32, OPTIM_FLOAT64};
    const size_t nmax = 40000 + 13, total = nmax + 2 * RANGE_GUARD;
    double *buf = malloc(total * sizeof(double)), *ref = malloc(nmax * sizeof(double));
    double *grad = malloc(nmax * sizeof(double));
    test_rng rng = {test_seed() ^ 0x9a7d};
    long runs = 0;
    size_t ty, si, k, i;
    int r, failed = 0;
    t_print_paths("loops_stay_in_range");
    if (!buf || !ref || !grad) {
        free(buf);
        free(ref);
        free(grad);
        FAIL("out of memory");
    }
    for (ty = 0; ty < 2 && !failed; ty++)
        for (si = 0; si < 2 && !failed; si++)
            for (r = 1; r <= OPTIM_RULE_COUNT && !failed; r++) {
                const optim_dtype dt = types[ty];
                const size_t n = sizes[si], es = optim_dtype_size(dt);
                int stats, thr, have_ref = 0;
                if (!test_rule_dense(r)) continue;
                for (i = 0; i < n; i++) {
                    if (dt == OPTIM_FLOAT32) ((float *)grad)[i] = (float)test_rng_normal(&rng);
                    else grad[i] = test_rng_normal(&rng);
                }
                for (stats = 0; stats < 2 && !failed; stats++)
                    for (k = 0; k < T_NISAS && !failed; k++)
                        for (thr = 1; thr <= 2 && !failed; thr++) {
                            char *p = (char *)buf + RANGE_GUARD * es;
                            optim *o = NULL;
                            int step, bad = 0;
                            if (!optim_isa_available(t_isas[k])) continue;
                            if (thr == 2 && n < 32768) continue; /* one thread's range either way */
                            /* Under a sanitizer, the larger size only, statistics by turns of rule. */
                            if (T_SAMPLE > 1 && (si == 0 || stats != (r & 1))) continue;
                            memset(buf, 0x5a, total * sizeof(double)); /* the guards, and the parameter's start */
                            for (i = 0; i < n; i++) {
                                if (dt == OPTIM_FLOAT32) ((float *)p)[i] = (float)(0.5 + 0.001 * (double)(i % 97));
                                else ((double *)p)[i] = 0.5 + 0.001 * (double)(i % 97);
                            }
                            optim_hparams hp;
                            if (optim_hparams_init(&hp, (optim_rule)r, NULL) != OPTIM_OK) FAIL("hparams");
                            if (r == OPTIM_SGD) hp.momentum = 0.9; /* a state stream */
                            if (r == OPTIM_ADAM) hp.amsgrad = 1;    /* three */
                            if (optim_create(&o, (optim_rule)r) != OPTIM_OK || optim_set_isa(o, t_isas[k]) ||
                                optim_set_threads(o, thr) || optim_set_stats(o, stats) ||
                                optim_add_group(o, &hp, NULL) ||
                                optim_add_param_typed(o, 0, p, dt, grad, dt, n, "w", NULL)) {
                                fprintf(stderr, "%s: %s\n", optim_rule_name((optim_rule)r), o ? optim_errmsg(o) : "");
                                optim_free(o);
                                failed = 1;
                                break;
                            }
                            for (step = 0; step < 2 && !bad; step++) bad = optim_step(o) != OPTIM_OK;
                            if (bad) fprintf(stderr, "%s: step: %s\n", optim_rule_name((optim_rule)r), optim_errmsg(o));
                            optim_free(o);
                            for (i = 0; i < RANGE_GUARD * es && !bad; i++)
                                if (((unsigned char *)buf)[i] != 0x5a || (unsigned char)p[n * es + i] != 0x5a) {
                                    fprintf(stderr,
                                            "%s %s, %zu elements, %s, %d thread(s), statistics %s: the guard byte "
                                            "%zu %s the parameter changed\n",
                                            optim_rule_name((optim_rule)r), optim_dtype_name(dt), n,
                                            optim_isa_name(t_isas[k]), thr, stats ? "on" : "off", i,
                                            ((unsigned char *)buf)[i] != 0x5a ? "before" : "after");
                                    bad = 1;
                                }
                            if (!bad && !have_ref) {
                                if (t_isas[k] != OPTIM_ISA_SCALAR) FAIL("the scalar path runs first");
                                memcpy(ref, p, n * es); /* the scalar path's, one thread */
                                have_ref = 1;
                            } else if (!bad && memcmp(ref, p, n * es) != 0) {
                                fprintf(stderr, "%s %s, %zu elements, %s, %d thread(s), statistics %s: not the "
                                                "scalar path's bits\n",
                                        optim_rule_name((optim_rule)r), optim_dtype_name(dt), n,
                                        optim_isa_name(t_isas[k]), thr, stats ? "on" : "off");
                                bad = 1;
                            }
                            failed |= bad;
                            runs++;
                        }
            }
    free(buf);
    free(ref);
    free(grad);
    if (failed) FAIL("a loop left its range or its bits (above); seed 0x%" PRIx64, test_seed());
    printf("  %ld runs (every rule, float32 and float64, %zu and %zu elements, paths, 1 and 2 threads, statistics "
           "off and on): the guards untouched, the scalar path's bits\n",
           runs, sizes[0], sizes[1]);
    ASSERT(runs > 0);
    return 0;
}
