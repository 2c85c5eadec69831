/* test_golden.c: float32 results are what they were. Every option
 * combination of every rule's grid (tests/grid.c), without clipping, with
 * fused value clipping and with fused norm clipping, runs 200 steps on the
 * scalar path; a digest of every parameter and state byte per rule is
 * compared with the digests recorded below.
 *
 * History of the recorded digests: first computed by the library before
 * the kernels gained a second (element type) axis, which had to leave every
 * float32 bit where it was; then re-recorded, every rule's, when the rules
 * took torch 1.13's fused multiply-adds (optim__fma where torch's CPU
 * kernels round a*b+c once: docs/FIDELITY.md), which moved float32 bits on
 * purpose (python/tests/test_torch_bits.py compares the new bits with
 * torch's). A change of a rule's float operations changes its digest on
 * purpose: check the rule against its references, then record the new
 * digest, which OPTIM_GOLDEN_PRINT=1 prints in the form of the table. A
 * change to a grid changes the digests too; record them from the commit
 * before the math change. Every byte is hashed: the last bit of one element
 * flipped in one run changes its rule's digest (checked by hand). */
#include "grid.h"
#include "test.h"

#include <ctype.h>

#define GOLDEN_STEPS 200

/* FNV-1a, 64 bits. */
static uint64_t fnv(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = (const unsigned char *)data;
    size_t i;
    for (i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* The digest of one run; *ok = 0 on an API failure (message printed). */
static uint64_t golden_run(const optim_hparams *hp, int clip, uint64_t seed, uint64_t h, int *ok)
{
    static const size_t n[3] = {1, 37, 131};
    float p[3][131], g[3][131], mean[3][131];
    test_rng rng = {seed};
    optim *o = NULL;
    size_t i, j;
    int t, s;
    *ok = 0;
    if (optim_create(&o, hp->rule) != OPTIM_OK) return h;
    if (optim_add_group(o, hp, NULL) != OPTIM_OK || optim_set_isa(o, OPTIM_ISA_SCALAR) != OPTIM_OK ||
        optim_set_threads(o, 1) != OPTIM_OK)
        goto fail;
    if (clip == 1 && optim_set_clip_grad_value(o, 0.3) != OPTIM_OK) goto fail;
    if (clip == 2 && optim_set_clip_grad_norm(o, 0.5, 2.0) != OPTIM_OK) goto fail;
    for (i = 0; i < 3; i++) {
        for (j = 0; j < n[i]; j++) {
            p[i][j] = (float)test_rng_normal(&rng);
            mean[i][j] = (float)(0.5 * test_rng_normal(&rng));
        }
        if (optim_add_param(o, 0, p[i], g[i], n[i], NULL, NULL) != OPTIM_OK) goto fail;
    }
    for (t = 0; t < GOLDEN_STEPS; t++) {
        for (i = 0; i < 3; i++)
            for (j = 0; j < n[i]; j++) g[i][j] = mean[i][j] + (float)test_rng_normal(&rng);
        if (optim_step(o) != OPTIM_OK) goto fail;
    }
    for (i = 0; i < 3; i++) {
        h = fnv(h, p[i], n[i] * sizeof(float));
        for (s = 0; s < optim_rule_slot_count(hp->rule); s++) {
            float *data = NULL;
            size_t len = 0; /* n, but for Adafactor's shape-dependent slots (0 for the factors of these 1-D tensors) */
            if (optim_state_slot(o, i, s, &data, NULL) != OPTIM_OK) goto fail;
            if (optim_state_slot_len(o, i, s, &len) != OPTIM_OK) goto fail;
            if (data) h = fnv(h, data, len * sizeof(float));
        }
    }
    optim_free(o);
    *ok = 1;
    return h;
fail:
    fprintf(stderr, "%s\n", optim_errmsg(o));
    optim_free(o);
    return h;
}

/* Recorded digests, keyed by rule. */
static const uint64_t golden[OPTIM_RULE_COUNT + 1] = {
    [OPTIM_SGD] = 0xfc41a9020d6286a7ull,
    [OPTIM_ADAGRAD] = 0xcb211bc1695d95afull,
    [OPTIM_RMSPROP] = 0x683a39358e49fb88ull,
    [OPTIM_ADADELTA] = 0x8a68e1e50a89a422ull,
    [OPTIM_ADAM] = 0xbd30bb4e27592abeull,
    [OPTIM_ADAMW] = 0xf15873d49b4f9c3cull,
    [OPTIM_RADAM] = 0x1e8016db97940f7bull,
    [OPTIM_NADAM] = 0x9d1b121a0f655c24ull,
    [OPTIM_ADABOUND] = 0x22b5927ac531491dull,
    [OPTIM_LION] = 0x514c724272acc9b8ull, /* recorded when Lion was added */
    [OPTIM_ADAMAX] = 0xbe5e22f3d418d6b1ull, /* recorded when Adamax, ASGD and Rprop were added */
    [OPTIM_ASGD] = 0xc824cdac5da7f03bull,
    [OPTIM_RPROP] = 0xce292f8b0c0341a3ull,
    [OPTIM_LAMB] = 0xedb7ff6eee0b16f3ull, /* recorded when LAMB and LARS were added */
    [OPTIM_LARS] = 0x5b34bdfe237bcae1ull,
    [OPTIM_SGD_SCHEDULE_FREE] = 0xd4b949f86bd317d6ull, /* recorded when the schedule-free rules were added */
    [OPTIM_ADAMW_SCHEDULE_FREE] = 0x72b3f3096d72b028ull,
    /* Recorded when Adafactor was added, after its grid passed rules_vs_reference (float64 reference) and
     * fused_clip_matches_separate (the clip modes): 1-D tensors, so its unfactored form. */
    [OPTIM_ADAFACTOR] = 0xc650747e5e718eb1ull,
};

TEST_IMPL(float32_golden)
{
    const char *print = getenv("OPTIM_GOLDEN_PRINT");
    int r, bad = 0;
    for (r = 1; r <= OPTIM_RULE_COUNT; r++) if (test_rule_dense(r)) {
        const grid *gr = grid_for(r);
        uint64_t h = 0xcbf29ce484222325ull;
        long c, runs = 0;
        int clip, ok;
        for (c = 0; c < grid_size(gr); c++) {
            optim_hparams hp;
            if (grid_get(gr, c, &hp) != 0) continue;
            for (clip = 0; clip < 3; clip++) {
                h = golden_run(&hp, clip, 0x901de11ull + (uint64_t)c, h, &ok);
                if (!ok) FAIL("%s: combination %ld, clip mode %d failed", optim_rule_name((optim_rule)r), c, clip);
                runs++;
            }
        }
        if (print && *print) {
            char up[32];
            size_t k;
            for (k = 0; k + 1 < sizeof up && optim_rule_name((optim_rule)r)[k]; k++)
                up[k] = (char)toupper((unsigned char)optim_rule_name((optim_rule)r)[k]);
            up[k] = 0;
            printf("    [OPTIM_%s] = 0x%016" PRIx64 "ull,\n", up, h);
        } else
            printf("  %-9s %4ld runs x %d steps: digest 0x%016" PRIx64 " (recorded 0x%016" PRIx64 ")%s\n",
                   optim_rule_name((optim_rule)r), runs, GOLDEN_STEPS, h, golden[r], h == golden[r] ? "" : " DIFFERS");
        if (h != golden[r]) bad = 1;
    }
    if (bad && !(print && *print)) FAIL("float32 results changed (see the digests above and this file's comment)");
    return 0;
}
