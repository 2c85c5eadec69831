/* test_pass1.c: pass 1 of the rules with a per-tensor reduction (LAMB,
 * LARS; rule.h "Rules with a per-tensor reduction"): its loops white-box on
 * every path's kernel table, and LAMB's one loop against the chunked path
 * end to end. */
#include "grid.h"
#include "optim_stats.h"
#include "typed.h"

#include "kernels/kernels.h" /* the pass-1 loops, white-box */
#include "rules/rules.h"

#define P1_N OPTIM__RBLOCK
static void p1_fill(optim__ctype ct, void *x, size_t i, double v)
{
    if (ct == OPTIM__CT_F64)
        ((double *)x)[i] = v;
    else
        ((float *)x)[i] = (float)v;
}

/* Pass 1 of a rule with a per-tensor reduction runs pre and red in one loop
 * over direct arrays (kernels_math.h, optim__<rule>_bothloop; the chunked
 * path still runs them apart). White-box, on every path's kernel table,
 * float32 and float64, every variant with and without value clipping: the
 * pass-1 loops (pre, red, and both in one) on arrays with guard elements
 * after n, of lengths 0 and 1, around a group of 16 and a prefetch block of
 * 64, the prefetch's minimum range of float64 (2048) and float32 (4096) and
 * just past them, a last prefetch block that is partial with and without a
 * partial group after it, up to a whole reduction block; with, in turn, two NaNs of opposite signs in one lane of the
 * parameter, a gradient's infinity (u: the default NaN of inf / inf) and a NaN
 * (u: optim__canon's NaN) in one lane, subnormals, infinite and negative-zero
 * state. Pre then red and both in one loop give the same slots and the same 32
 * lanes bit for bit, and no loop writes past n (guards of every stream). */
#define P1E_GUARD 160
static void p1e_set(optim__ctype ct, void *x, size_t i, double v, int neg_nan)
{
    if (ct == OPTIM__CT_F64) {
        double d = neg_nan ? -NAN : v;
        ((double *)x)[i] = d;
    } else {
        float f = neg_nan ? -(float)NAN : (float)v;
        ((float *)x)[i] = f;
    }
}

TEST_IMPL(pass1_fused_edges)
{
    static const size_t lens[] = {0,    1,    15,   16,   17,   32,   63,   64,   65,   127,  1000, 2048,
                                  2049, 2063, 2081, 2111, 4095, 4096, 4097, 4159, 4177, 5000, 8191, 8192};
    static const optim_rule rules[] = {OPTIM_LAMB, OPTIM_LARS};
    const uint64_t seed = test_seed();
    const size_t bytes = (P1_N + P1E_GUARD) * sizeof(double);
    unsigned char *buf = malloc(12 * bytes), *keep = malloc(12 * bytes);
    long runs = 0, nloose = 0;
    size_t ki, ri, li, i, ci;
    int ct;
    t_print_paths("pass1_fused_edges");
    printf("  seed %" PRIu64 "\n", seed);
    if (!buf || !keep) FAIL("out of memory");
    for (ki = 0; ki < T_NISAS; ki++) {
        const optim__kernels *kt = optim__kernels_get(t_isas[ki]);
        if (!optim_isa_available(t_isas[ki]) || !kt) continue; /* named by t_print_paths */
        for (ri = 0; ri < sizeof rules / sizeof rules[0]; ri++)
            for (ct = 0; ct < OPTIM__NCTYPES; ct++) {
                const optim__rloops *l = &kt->rloops[rules[ri]][ct];
                const size_t es = ct == OPTIM__CT_F64 ? sizeof(double) : sizeof(float);
                unsigned at;
                if (!l->pre || !l->red || !l->both) FAIL("%s: no pass-1 loops", optim_rule_name(rules[ri]));
                for (at = 0; at < 2 * l->nvariants; at++)
                    for (li = 0; li < sizeof lens / sizeof lens[0]; li++)
                        for (ci = 0; ci < 6; ci++) {
                            const size_t n = lens[li];
                            const unsigned v = at % l->nvariants;
                            unsigned char *p = buf, *g = buf + bytes, *a[OPTIM_MAX_SLOTS], *b[OPTIM_MAX_SLOTS];
                            void *sa[OPTIM_MAX_SLOTS], *sb[OPTIM_MAX_SLOTS];
                            test_rng rng = {seed ^ ((uint64_t)ki << 40) ^ ((uint64_t)ri << 32) ^
                                            ((uint64_t)ct << 24) ^ ((uint64_t)at << 16) ^ (li << 4) ^ ci};
                            double acc_a[32], acc_b[32];
                            optim__k k;
                            int j;
                            memset(&k, 0, sizeof k);
                            k.c.variant = at < l->nvariants ? v : v | OPTIM__V_CLAMP;
                            k.c.gclip = 0.7;
                            k.c.gscale = ci % 2 ? -1.0 : 1.0;
                            k.c.wd = 0.01;
                            k.c.decay = 1.0;
                            if (rules[ri] == OPTIM_LAMB) {
                                k.u.lamb.beta1 = 0.9;
                                k.u.lamb.beta3 = 1.0 - 0.9;
                                k.u.lamb.beta2 = 0.999;
                                k.u.lamb.one_minus_beta2 = 1.0 - 0.999;
                                k.u.lamb.bc1 = 1.0 - pow(0.9, 3.0);
                                k.u.lamb.bc2_sqrt = sqrt(1.0 - pow(0.999, 3.0));
                                k.u.lamb.eps = ci == 4 ? 0.0 : 1e-6;
                                k.u.lamb.ratio = 1.0;
                                k.u.lamb.neg_lr = -1e-3;
                            }
                            for (j = 0; j < OPTIM_MAX_SLOTS; j++) {
                                a[j] = buf + (2 + (size_t)j) * bytes;
                                b[j] = buf + (6 + (size_t)j) * bytes;
                                sa[j] = a[j];
                                sb[j] = b[j];
                            }
                            /* Every stream, guards included, random; the guards are checked after. */
                            for (i = 0; i < n + P1E_GUARD; i++) {
                                p1_fill((optim__ctype)ct, p, i, 2.0 * test_rng_uniform(&rng) - 1.0);
                                p1_fill((optim__ctype)ct, g, i, 2.0 * test_rng_uniform(&rng) - 1.0);
                                for (j = 0; j < OPTIM_MAX_SLOTS; j++)
                                    p1_fill((optim__ctype)ct, a[j], i, j == 1 ? test_rng_uniform(&rng) * 0.01
                                                                             : 0.2 * test_rng_uniform(&rng) - 0.1);
                            }
                            if (n >= 32) {
                                const size_t e = n / 2 - n / 2 % 16 + 5; /* lane 5, and 16 further */
                                switch (ci) {
                                case 0: /* opposite NaNs in one lane of p (sums of p^2) */
                                    p1e_set((optim__ctype)ct, p, e, 0, 1);
                                    p1e_set((optim__ctype)ct, p, e + 16, NAN, 0);
                                    break;
                                case 1: /* u = inf / inf (the default NaN) then u from a NaN gradient, one lane */
                                    p1e_set((optim__ctype)ct, g, e, INFINITY, 0);
                                    p1e_set((optim__ctype)ct, g, e + 16, 0, 1);
                                    p1e_set((optim__ctype)ct, p, e + 16, 0, 1);
                                    break;
                                case 2: /* the other order, and the tail's lanes */
                                    p1e_set((optim__ctype)ct, g, e, NAN, 0);
                                    p1e_set((optim__ctype)ct, g, e + 16, -INFINITY, 0);
                                    p1e_set((optim__ctype)ct, g, n - 1, 0, 1);
                                    p1e_set((optim__ctype)ct, p, n - 1, INFINITY, 0);
                                    break;
                                case 3: /* subnormals everywhere in a range */
                                    for (i = e; i < e + 40 && i < n; i++) {
                                        const double sub = ct == OPTIM__CT_F64 ? 4.9e-322 : 1.4e-44;
                                        p1e_set((optim__ctype)ct, p, i, (i & 1 ? -sub : sub) * (double)(i % 7), 0);
                                        p1e_set((optim__ctype)ct, g, i, (i & 2 ? -sub : sub) * (double)(i % 5), 0);
                                        p1e_set((optim__ctype)ct, a[0], i, i & 4 ? -sub : sub, 0);
                                        p1e_set((optim__ctype)ct, a[1], i, sub * (double)(i % 3), 0);
                                    }
                                    break;
                                case 4: /* zeros and negative zeros, eps 0: u = 0 / 0 */
                                    for (i = e; i < e + 40 && i < n; i++) {
                                        p1e_set((optim__ctype)ct, g, i, i & 1 ? -0.0 : 0.0, 0);
                                        p1e_set((optim__ctype)ct, a[0], i, i & 2 ? -0.0 : 0.0, 0);
                                        p1e_set((optim__ctype)ct, a[1], i, 0.0, 0);
                                        p1e_set((optim__ctype)ct, p, i, i & 4 ? -0.0 : 0.0, 0);
                                    }
                                    break;
                                default: /* infinite and NaN state, opposite signs, one lane */
                                    p1e_set((optim__ctype)ct, a[0], e, -INFINITY, 0);
                                    p1e_set((optim__ctype)ct, a[1], e, INFINITY, 0);
                                    p1e_set((optim__ctype)ct, a[0], e + 16, 0, 1);
                                    p1e_set((optim__ctype)ct, a[1], e + 32 < n ? e + 32 : e, 0, 1);
                                    break;
                                }
                            }
                            for (j = 0; j < OPTIM_MAX_SLOTS; j++) memcpy(b[j], a[j], (n + P1E_GUARD) * es);
                            memcpy(keep, buf, 10 * bytes);
                            for (j = 0; j < 32; j++) acc_a[j] = acc_b[j] = (double)j;
                            l->pre[at](n, p, g, sa, &k);
                            l->red[at](n, p, g, sa, &k, acc_a);
                            l->both[at](n, p, g, sb, &k, acc_b);
                            runs++;
#define P1E_WHAT                                                                                                  \
    optim_isa_name(t_isas[ki]), optim_rule_name(rules[ri]), ct == OPTIM__CT_F64 ? "float64" : "float32", v,     \
        at < l->nvariants ? "" : " clamped", n, ci, seed
                            if (memcmp(p, keep, (n + P1E_GUARD) * es) || memcmp(g, keep + bytes, (n + P1E_GUARD) * es))
                                FAIL("%s, %s, %s, variant %u%s, n %zu, case %zu: p or g changed (seed %" PRIu64 ")",
                                     P1E_WHAT);
                            for (j = 0; j < OPTIM_MAX_SLOTS; j++) {
                                if (memcmp(a[j] + n * es, keep + (2 + (size_t)j) * bytes + n * es, P1E_GUARD * es) ||
                                    memcmp(b[j] + n * es, keep + (2 + (size_t)j) * bytes + n * es, P1E_GUARD * es))
                                    FAIL("%s, %s, %s, variant %u%s, n %zu, case %zu: slot %d written past n (seed %" PRIu64
                                         ")",
                                         optim_isa_name(t_isas[ki]), optim_rule_name(rules[ri]),
                                         ct == OPTIM__CT_F64 ? "float64" : "float32", v,
                                         at < l->nvariants ? "" : " clamped", n, ci, j, seed);
                                if (memcmp(a[j], b[j], n * es) != 0)
                                    FAIL("%s, %s, %s, variant %u%s, n %zu, case %zu: slot %d differs from pre's (seed "
                                         "%" PRIu64 ")",
                                         optim_isa_name(t_isas[ki]), optim_rule_name(rules[ri]),
                                         ct == OPTIM__CT_F64 ? "float64" : "float32", v,
                                         at < l->nvariants ? "" : " clamped", n, ci, j, seed);
                            }
                            /* LARS's pass 1 never runs both (its prepare asks for the norms alone): its
                             * one-loop instance, compiled otherwise than red, may pick the other of two NaNs
                             * of a lane (x86 keeps an add's first NaN operand), so there a NaN lane need only
                             * be a NaN (the trust hooks take any NaN norm alike). LAMB's: bit for bit. */
                            for (j = 0; j < 32; j++) {
                                if (!memcmp(&acc_a[j], &acc_b[j], sizeof(double))) continue;
                                if (rules[ri] == OPTIM_LARS && acc_a[j] != acc_a[j] && acc_b[j] != acc_b[j]) {
                                    nloose++;
                                    continue;
                                }
                                FAIL("%s, %s, %s, variant %u%s, n %zu, case %zu: lane %d's sum %a differs from red's "
                                     "%a (seed %" PRIu64 ")",
                                     optim_isa_name(t_isas[ki]), optim_rule_name(rules[ri]),
                                     ct == OPTIM__CT_F64 ? "float64" : "float32", v,
                                     at < l->nvariants ? "" : " clamped", n, ci, j, acc_b[j], acc_a[j], seed);
                            }
                        }
            }
    }
#undef P1E_WHAT
    free(buf);
    free(keep);
    printf("  %ld runs: the guards untouched, pre and red in one loop give their bits apart (lars: %ld NaN lanes of "
           "the other sign)\n",
           runs, nloose);
    ASSERT(runs > 0);
    return 0;
}

/* LAMB end to end: float32 parameters with float32 gradients take pass 1's
 * one loop (optim__lamb_bothloop over direct arrays); with bfloat16
 * gradients holding the same values, the chunked path (pre, store, red
 * chunk by chunk, never in prefetch blocks). Tensors whose pass-1 blocks run
 * in prefetch blocks with a partial last block and group (past 16 KiB per
 * stream), weight decay 0 (pre alone) and not, always_adapt, trust_clip,
 * maximize, value and norm clipping, statistics, every path, 1 and 2
 * threads, 7 steps: the parameters and both moments bit for bit alike. */
TEST_IMPL(lamb_fused_pass1_as_chunked)
{
    static const size_t sizes[] = {1, 17, 4159, 8192 + 8191, 40013};
    enum { NT = sizeof sizes / sizeof sizes[0], STEPS_E = 7 };
    const uint64_t seed = test_seed();
    test_rng rng = {seed ^ 0x1a3b};
    float *g32[NT], *p0[NT], *pa[NT], *pb[NT], *sa = NULL, *sb = NULL;
    uint16_t *g16[NT];
    size_t t, i, total = 0, nmax = 0;
    long runs = 0, moved = 0;
    unsigned cfg;
    int failed = 0;
    t_print_paths("lamb_fused_pass1_as_chunked");
    printf("  seed %" PRIu64 "\n", seed);
    for (t = 0; t < NT; t++) {
        total += sizes[t];
        if (sizes[t] > nmax) nmax = sizes[t];
        g32[t] = malloc(STEPS_E * sizes[t] * sizeof(float));
        g16[t] = malloc(STEPS_E * sizes[t] * sizeof(uint16_t));
        p0[t] = malloc(sizes[t] * sizeof(float));
        pa[t] = malloc(sizes[t] * sizeof(float));
        pb[t] = malloc(sizes[t] * sizeof(float));
        if (!g32[t] || !g16[t] || !p0[t] || !pa[t] || !pb[t]) FAIL("out of memory");
        for (i = 0; i < STEPS_E * sizes[t]; i++) {
            g16[t][i] = t_bf16_from_float((float)(0.5 * test_rng_normal(&rng)));
            g32[t][i] = t_bf16_to_float(g16[t][i]);
        }
        for (i = 0; i < sizes[t]; i++) p0[t][i] = (float)(0.1 * test_rng_normal(&rng));
    }
    sa = malloc(nmax * sizeof(float));
    sb = malloc(nmax * sizeof(float));
    if (!sa || !sb) FAIL("out of memory");
    /* bits: 0 weight decay 0.01 (else 0), 1 always_adapt, 2 trust_clip, 3 maximize, 4-5 clipping (none, value,
     * norm), 6 statistics. */
    for (cfg = 0; cfg < 96 && !failed; cfg++) {
        const int clip = (int)((cfg >> 4) % 3), stats = (int)((cfg >> 4) / 3) ? 1 : 0;
        size_t k;
        optim_hparams hp;
        if (T_SAMPLE > 1 && cfg % T_SAMPLE) continue;
        optim_hparams_init(&hp, OPTIM_LAMB, NULL);
        hp.lr = 0.01;
        hp.weight_decay = cfg & 1u ? 0.01 : 0.0;
        hp.always_adapt = cfg & 2u ? 1 : 0;
        hp.trust_clip = cfg & 4u ? 1 : 0;
        hp.maximize = cfg & 8u ? 1 : 0;
        for (k = 0; k < T_NISAS && !failed; k++) {
            int thr;
            if (!optim_isa_available(t_isas[k])) continue;
            for (thr = 1; thr <= 2 && !failed; thr++) {
                optim *o[2] = {NULL, NULL};
                int r, step, s;
                for (r = 0; r < 2; r++) {
                    ASSERT_OK(optim_create(&o[r], OPTIM_LAMB));
                    ASSERT_OPT_OK(o[r], optim_set_isa(o[r], t_isas[k]));
                    ASSERT_OPT_OK(o[r], optim_set_threads(o[r], thr));
                    ASSERT_OPT_OK(o[r], optim_set_stats(o[r], stats));
                    ASSERT_OPT_OK(o[r], optim_add_group(o[r], &hp, NULL));
                    if (clip == 1) ASSERT_OPT_OK(o[r], optim_set_clip_grad_value(o[r], 0.7));
                    if (clip == 2) ASSERT_OPT_OK(o[r], optim_set_clip_grad_norm(o[r], 50.0, 2.0));
                    for (t = 0; t < NT; t++) {
                        float *p = r ? pb[t] : pa[t];
                        memcpy(p, p0[t], sizes[t] * sizeof(float));
                        ASSERT_OPT_OK(o[r], optim_add_param_typed(o[r], 0, p, OPTIM_FLOAT32,
                                                                  r ? (const void *)g16[t] : (const void *)g32[t],
                                                                  r ? OPTIM_BFLOAT16 : OPTIM_FLOAT32, sizes[t], NULL,
                                                                  NULL));
                    }
                }
                for (step = 0; step < STEPS_E && !failed; step++) {
                    for (r = 0; r < 2; r++) {
                        for (t = 0; t < NT; t++)
                            ASSERT_OPT_OK(o[r], optim_set_grad_data(o[r], t,
                                                                    r ? (const void *)(g16[t] + step * sizes[t])
                                                                      : (const void *)(g32[t] + step * sizes[t])));
                        ASSERT_OPT_OK(o[r], optim_step(o[r]));
                    }
                    for (t = 0; t < NT && !failed; t++) {
                        if (memcmp(pa[t], pb[t], sizes[t] * sizeof(float))) {
                            fprintf(stderr, "  %s, %d thread(s), config 0x%x, step %d, tensor of %zu: the parameters "
                                            "differ\n",
                                    optim_isa_name(t_isas[k]), thr, cfg, step + 1, sizes[t]);
                            failed = 1;
                        }
                        for (s = 0; s < 2 && !failed; s++) {
                            ASSERT_OPT_OK(o[0], optim_state_slot_read_f32(o[0], t, s, sa));
                            ASSERT_OPT_OK(o[1], optim_state_slot_read_f32(o[1], t, s, sb));
                            if (memcmp(sa, sb, sizes[t] * sizeof(float))) {
                                fprintf(stderr, "  %s, %d thread(s), config 0x%x, step %d, tensor of %zu: slot %d "
                                                "differs\n",
                                        optim_isa_name(t_isas[k]), thr, cfg, step + 1, sizes[t], s);
                                failed = 1;
                            }
                        }
                    }
                }
                for (t = 0; t < NT; t++)
                    for (i = 0; i < sizes[t]; i++) moved += pa[t][i] != p0[t][i];
                optim_free(o[0]);
                optim_free(o[1]);
                runs++;
            }
        }
    }
    for (t = 0; t < NT; t++) {
        free(g32[t]);
        free(g16[t]);
        free(p0[t]);
        free(pa[t]);
        free(pb[t]);
    }
    free(sa);
    free(sb);
    if (failed) FAIL("the one loop and the chunked path differ (above; seed %" PRIu64 ")", seed);
    printf("  %ld runs of %d steps over %zu elements: float32 and bfloat16 gradients alike bit for bit; %ld "
           "parameters moved\n",
           runs, STEPS_E, total, moved);
    ASSERT(runs > 0 && moved > 0);
    return 0;
}
