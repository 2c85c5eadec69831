/* test_checkpoint.c: checkpoints (optim_checkpoint.h) and robustness. */
#define _POSIX_C_SOURCE 200809L
#include "ckpt_scenario.h"
#include "ckpt_util.h"
#include "grid.h"
#include "kernels/kernels.h"
#include "optim_checkpoint.h"
#include "optim_sam.h"
#include "optim_schedule.h"
#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

TEST_IMPL(ckpt_crc32c)
{
    static const char check[] = "123456789";
    unsigned char big[1000];
    size_t i;
    ASSERT_INT(optim__crc32c(0, check, 9), ==, 0xE3069283u); /* the standard check value */
    ASSERT_INT(optim__crc32c(0, "", 0), ==, 0);
    for (i = 0; i < sizeof big; i++) big[i] = (unsigned char)(i * 31 + 7);
    /* In pieces or at once, any split. */
    for (i = 0; i <= sizeof big; i += 37)
        ASSERT_INT(optim__crc32c(optim__crc32c(0, big, i), big + i, sizeof big - i), ==, optim__crc32c(0, big, sizeof big));
    return 0;
}

/* ---- Exact resume, same process, every option ----------------------------------- */

#define RP 3
static const size_t rp_n[RP] = {5, 100, 33};

typedef struct small_run {
    optim *o;
    float *w[RP], *g[RP];
} small_run;

static int small_build(small_run *r, const optim_hparams *hp, int with_defaults)
{
    optim_hparams h0 = *hp, h1 = *hp;
    size_t k, i;
    static const char *names[RP] = {"a", "b", "c"};
    memset(r, 0, sizeof *r);
    if (with_defaults) { /* a fresh optimizer whose settings the checkpoint must replace */
        optim_hparams_init(&h0, hp->rule, NULL);
        h1 = h0;
    } else {
        h1.lr = hp->lr * 0.5;
    }
    ASSERT_OK(optim_create(&r->o, hp->rule));
    ASSERT_OPT_OK(r->o, optim_add_group(r->o, &h0, NULL));
    ASSERT_OPT_OK(r->o, optim_add_group(r->o, &h1, NULL));
    for (k = 0; k < RP; k++) {
        r->w[k] = (float *)malloc(rp_n[k] * sizeof(float));
        r->g[k] = (float *)malloc(rp_n[k] * sizeof(float));
        for (i = 0; i < rp_n[k]; i++) r->w[k][i] = (float)sin(1.0 + (double)(k * 131 + i));
        ASSERT_OPT_OK(r->o, optim_add_param(r->o, k == 1 ? 1 : 0, r->w[k], r->g[k], rp_n[k], names[k], NULL));
    }
    if (hp->rule == OPTIM_ADAFACTOR) { /* b factored over batches, c a matrix, a a vector */
        static const int64_t sb[3] = {2, 5, 10}, sc[2] = {3, 11};
        ASSERT_OPT_OK(r->o, optim_param_set_shape(r->o, 1, 3, sb));
        ASSERT_OPT_OK(r->o, optim_param_set_shape(r->o, 2, 2, sc));
    }
    return 0;
}

static void small_free(small_run *r)
{
    size_t k;
    optim_free(r->o);
    for (k = 0; k < RP; k++) {
        free(r->w[k]);
        free(r->g[k]);
    }
}

static int small_steps(small_run *r, int from, int to)
{
    int t;
    size_t k, i;
    for (t = from; t < to; t++) {
        for (k = 0; k < RP; k++)
            for (i = 0; i < rp_n[k]; i++) r->g[k][i] = (float)cos(0.7 * t + (double)(k * 17 + i)) + 0.3f * r->w[k][i];
        ASSERT_OPT_OK(r->o, optim_step(r->o));
    }
    return 0;
}

static int same_run(small_run *a, small_run *b, const optim_hparams *hp)
{
    size_t k;
    int s;
    char desc[256];
    for (k = 0; k < RP; k++) {
        int64_t sa, sb;
        double ma, mb;
        if (memcmp(a->w[k], b->w[k], rp_n[k] * sizeof(float)) != 0)
            FAIL("%s: param %zu differs after resume", grid_describe(hp, desc, sizeof desc), k);
        optim_param_get_step(a->o, k, &sa);
        optim_param_get_step(b->o, k, &sb);
        ASSERT_INT(sa, ==, sb);
        optim_param_get_mu_product(a->o, k, &ma);
        optim_param_get_mu_product(b->o, k, &mb);
        ASSERT(memcmp(&ma, &mb, sizeof ma) == 0);
        for (s = 0; s < optim_rule_slot_count(hp->rule); s++) {
            float *da, *db;
            int ia, ib;
            size_t la = 0, lb = 0; /* n, but for Adafactor's slots of the shape */
            optim_state_slot(a->o, k, s, &da, &ia);
            optim_state_slot(b->o, k, s, &db, &ib);
            ASSERT_OPT_OK(a->o, optim_state_slot_len(a->o, k, s, &la));
            ASSERT_OPT_OK(b->o, optim_state_slot_len(b->o, k, s, &lb));
            ASSERT_INT(ia, ==, ib);
            ASSERT_INT(la, ==, lb);
            ASSERT((da == NULL) == (db == NULL));
            if (da && ia && memcmp(da, db, la * sizeof(float)) != 0)
                FAIL("%s: slot %s of param %zu differs after resume", grid_describe(hp, desc, sizeof desc),
                     optim_rule_slot_name(hp->rule, s), k);
        }
    }
    ASSERT_INT(optim_step_count(a->o), ==, optim_step_count(b->o));
    return 0;
}

TEST_IMPL(ckpt_resume_every_option)
{
    int r, combos = 0;
    for (r = 1; r <= OPTIM_RULE_COUNT; r++) if (test_rule_dense(r)) {
        const grid *gr = grid_for(r);
        long c;
        for (c = 0; c < grid_size(gr); c++) {
            optim_hparams hp, got;
            small_run straight, first, resumed;
            void *buf = NULL;
            size_t size = 0, k;
            if (grid_get(gr, c, &hp) != 0) continue;
            combos++;
            if (small_build(&straight, &hp, 0) || small_build(&first, &hp, 0) || small_build(&resumed, &hp, 1)) return 1;
            if (small_steps(&straight, 0, 12) || small_steps(&first, 0, 5)) return 1;
            ASSERT_OPT_OK(first.o, optim_save_buffer(first.o, &buf, &size));
            ASSERT_OPT_OK(resumed.o, optim_load_buffer(resumed.o, buf, size, OPTIM_MATCH_NAME, "test"));
            for (k = 0; k < RP; k++) memcpy(resumed.w[k], first.w[k], rp_n[k] * sizeof(float)); /* the user's params */
            if (small_steps(&resumed, 5, 12)) return 1;
            if (same_run(&straight, &resumed, &hp)) return 1;
            ASSERT_OK(optim_group_get(resumed.o, 1, &got));
            ASSERT(got.lr == hp.lr * 0.5); /* the saved settings replaced the fresh ones */
            free(buf);
            small_free(&straight);
            small_free(&first);
            small_free(&resumed);
        }
    }
    printf("  %d option combinations resumed bit for bit\n", combos);
    return 0;
}

/* ---- Exact resume in a new process --------------------------------------------- */

#ifndef OPTIM_CKPT_CHILD
#  error "OPTIM_CKPT_CHILD (the path of optim_ckpt_child) must be defined by the build"
#endif

TEST_IMPL(ckpt_resume_new_process)
{
    enum { N = 40, K = 17 };
    char dir[64], ckpt[128], params[128], out[128], want[128];
    int id;
    if (!ckpt_scratch(dir, sizeof dir)) FAIL("mkdtemp: %s", strerror(errno));
    snprintf(ckpt, sizeof ckpt, "%s/run.ckpt", dir);
    snprintf(params, sizeof params, "%s/params.bin", dir);
    snprintf(out, sizeof out, "%s/resumed.bin", dir);
    snprintf(want, sizeof want, "%s/straight.bin", dir);
    for (id = 0; id < SCN_COUNT; id++) {
        scenario_run run;
        FILE *f;
        unsigned char *a, *b;
        size_t na, nb;
        int t, status;
        pid_t pid;
        char ids[8], from[8], to[8];
        char *argv[8];
        if (!scenario_exists(id)) continue;
        /* Straight through. */
        if (scenario_build(id, &run)) return 1;
        for (t = 0; t < N; t++)
            if (scenario_step(&run, t)) FAIL("scenario %d step %d", id, t);
        if (run.nan_step >= 0) { /* the NaN step was skipped (and with nonfinite=error, refused: dropped) */
            ASSERT_INT(optim_skipped_steps(run.opt), ==, 1);
            ASSERT_INT(run.refused, ==, optim_get_nonfinite(run.opt) == OPTIM_NONFINITE_ERROR);
        }
        f = fopen(want, "wb");
        if (!f || scenario_snapshot(&run, f) || fclose(f)) FAIL("cannot write %s", want);
        scenario_free(&run);
        /* Interrupted after K steps, saved, resumed by another process. */
        if (scenario_build(id, &run)) return 1;
        for (t = 0; t < K; t++)
            if (scenario_step(&run, t)) FAIL("scenario %d step %d", id, t);
        ASSERT_OPT_OK(run.opt, optim_save(run.opt, ckpt));
        if (scenario_write_params(&run, params)) FAIL("cannot write %s", params);
        scenario_free(&run);
        snprintf(ids, sizeof ids, "%d", id);
        snprintf(from, sizeof from, "%d", K);
        snprintf(to, sizeof to, "%d", N);
        argv[0] = (char *)OPTIM_CKPT_CHILD;
        argv[1] = ids;
        argv[2] = ckpt;
        argv[3] = params;
        argv[4] = from;
        argv[5] = to;
        argv[6] = out;
        argv[7] = NULL;
        if (posix_spawn(&pid, OPTIM_CKPT_CHILD, NULL, NULL, argv, environ) != 0) FAIL("cannot run %s", OPTIM_CKPT_CHILD);
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            FAIL("scenario %d (%s): the resuming process failed (status %d)", id, scenario_name(id), status);
        if (ckpt_read_file(want, &a, &na) || ckpt_read_file(out, &b, &nb)) FAIL("cannot read the snapshots");
        if (na != nb || memcmp(a, b, na) != 0)
            FAIL("scenario %d (%s): resumed in a new process after %d of %d steps, the run differs", id,
                 scenario_name(id), K, N);
        printf("  %-45s resumed in a new process: identical\n", scenario_name(id));
        free(a);
        free(b);
    }
    ckpt_remove_tree(dir);
    return 0;
}

/* ---- Matching ---------------------------------------------------------------------- */

TEST_IMPL(ckpt_match_by_name_and_position)
{
    optim_hparams hp;
    small_run src;
    optim *dst = NULL;
    float p[RP][100], g[RP][100];
    void *buf = NULL;
    size_t size, k;
    static const size_t order[RP] = {2, 0, 1};
    static const char *names[RP] = {"a", "b", "c"};
    optim_hparams_init(&hp, OPTIM_ADAM, NULL);
    hp.amsgrad = 1;
    if (small_build(&src, &hp, 0) || small_steps(&src, 0, 4)) return 1;
    ASSERT_OPT_OK(src.o, optim_save_buffer(src.o, &buf, &size));
    /* By name: the destination lists the parameters in another order. */
    ASSERT_OK(optim_create(&dst, OPTIM_ADAM));
    ASSERT_OPT_OK(dst, optim_add_group(dst, &hp, NULL));
    ASSERT_OPT_OK(dst, optim_add_group(dst, &hp, NULL));
    for (k = 0; k < RP; k++)
        ASSERT_OPT_OK(dst, optim_add_param(dst, order[k] == 1 ? 1 : 0, p[k], g[k], rp_n[order[k]], names[order[k]], NULL));
    ASSERT_OPT_OK(dst, optim_load_buffer(dst, buf, size, OPTIM_MATCH_NAME, "src"));
    for (k = 0; k < RP; k++) {
        float *a, *b;
        optim_state_slot(src.o, order[k], 2, &a, NULL);
        optim_state_slot(dst, k, 2, &b, NULL);
        ASSERT(a && b && memcmp(a, b, rp_n[order[k]] * sizeof(float)) == 0);
    }
    /* By position the sizes then disagree. */
    ASSERT_ERR(optim_load_buffer(dst, buf, size, OPTIM_MATCH_POSITION, "src"), OPTIM_EMISMATCH, optim_errmsg(dst),
               "param 0 'c' has 33 elements in the optimizer, 5 in the checkpoint");
    optim_free(dst);
    /* By position, other names. */
    ASSERT_OK(optim_create(&dst, OPTIM_ADAM));
    ASSERT_OPT_OK(dst, optim_add_group(dst, &hp, NULL));
    ASSERT_OPT_OK(dst, optim_add_group(dst, &hp, NULL));
    for (k = 0; k < RP; k++) ASSERT_OPT_OK(dst, optim_add_param(dst, k == 1 ? 1 : 0, p[k], g[k], rp_n[k], "renamed", NULL));
    ASSERT_ERR(optim_load_buffer(dst, buf, size, OPTIM_MATCH_NAME, "src"), OPTIM_EMISMATCH, optim_errmsg(dst),
               "param 'a' of the checkpoint is not a param of the optimizer");
    ASSERT_OPT_OK(dst, optim_load_buffer(dst, buf, size, OPTIM_MATCH_POSITION, "src"));
    ASSERT_ERR(optim_load_buffer(dst, buf, size, (optim_match)5, "src"), OPTIM_EINVAL, optim_errmsg(dst), "match = 5");
    optim_free(dst);
    /* Another rule, another number of groups. */
    ASSERT_OK(optim_create(&dst, OPTIM_ADAMW));
    ASSERT_ERR(optim_load_buffer(dst, buf, size, OPTIM_MATCH_NAME, "src"), OPTIM_EMISMATCH, optim_errmsg(dst),
               "the checkpoint is of rule adam, this optimizer's rule is adamw");
    optim_free(dst);
    ASSERT_OK(optim_create(&dst, OPTIM_ADAM));
    ASSERT_OPT_OK(dst, optim_add_group(dst, &hp, NULL));
    ASSERT_ERR(optim_load_buffer(dst, buf, size, OPTIM_MATCH_NAME, "src"), OPTIM_EMISMATCH, optim_errmsg(dst),
               "has 2 groups, the optimizer 1");
    optim_free(dst);
    free(buf);
    small_free(&src);
    return 0;
}

TEST_IMPL(ckpt_info)
{
    optim_hparams hp;
    small_run r;
    optim_checkpoint_info info;
    optim_error err;
    char dir[64], path[128];
    if (!ckpt_scratch(dir, sizeof dir)) FAIL("mkdtemp");
    snprintf(path, sizeof path, "%s/x.ckpt", dir);
    optim_hparams_init(&hp, OPTIM_RMSPROP, NULL);
    hp.centered = 1;
    if (small_build(&r, &hp, 0) || small_steps(&r, 0, 6)) return 1;
    ASSERT_OPT_OK(r.o, optim_save(r.o, path));
    ASSERT_OK_MSG(optim_checkpoint_info_read(path, &info, &err), err.message);
    ASSERT_INT(info.format, ==, OPTIM_CHECKPOINT_FORMAT);
    ASSERT_INT(info.rule, ==, OPTIM_RMSPROP);
    ASSERT_INT(info.groups, ==, 2);
    ASSERT_INT(info.params, ==, RP);
    ASSERT_INT(info.steps, ==, 6);
    ASSERT_INT(info.state_floats, ==, 2 * (5 + 100 + 33)); /* square_avg and grad_avg */
    ASSERT(strcmp(info.library, optim_version_string()) == 0);
    ASSERT_ERR(optim_checkpoint_info_read("/nonexistent/x.ckpt", &info, &err), OPTIM_EOPEN, err.message,
               "/nonexistent/x.ckpt: cannot open");
    small_free(&r);
    ckpt_remove_tree(dir);
    return 0;
}

/* ---- Errors ----------------------------------------------------------------------- */

/* The bytes of an optimizer's whole state, to compare before and after a failed load. */
static int state_bytes(optim *o, void **buf, size_t *size)
{
    return optim_save_buffer(o, buf, size);
}

TEST_IMPL(ckpt_errors_change_nothing)
{
    optim_hparams hp;
    small_run r, other;
    void *good = NULL, *before = NULL, *after = NULL;
    size_t gsize, bsize, asize;
    unsigned char *bad;
    char dir[64], path[160];
    if (!ckpt_scratch(dir, sizeof dir)) FAIL("mkdtemp");
    optim_hparams_init(&hp, OPTIM_ADAM, NULL);
    if (small_build(&r, &hp, 0) || small_steps(&r, 0, 3)) return 1;
    if (small_build(&other, &hp, 0) || small_steps(&other, 0, 9)) return 1;
    ASSERT_OPT_OK(other.o, optim_save_buffer(other.o, &good, &gsize));
    ASSERT_OPT_OK(r.o, state_bytes(r.o, &before, &bsize));
    bad = (unsigned char *)malloc(gsize + 16);

#define EXPECT_LOAD_FAILS(data, size, code, needle)                                                       \
    do {                                                                                                  \
        ASSERT_ERR(optim_load_buffer(r.o, (data), (size), OPTIM_MATCH_NAME, "ck"), (code), optim_errmsg(r.o), \
                   (needle));                                                                             \
        ASSERT_OPT_OK(r.o, state_bytes(r.o, &after, &asize));                                             \
        if (asize != bsize || memcmp(before, after, bsize) != 0) FAIL("a failed load changed the optimizer"); \
        free(after);                                                                                      \
    } while (0)

    memcpy(bad, good, gsize);
    memcpy(bad, "NOTOPTIM", 8);
    EXPECT_LOAD_FAILS(bad, gsize, OPTIM_EMAGIC, "not an optim checkpoint");
    EXPECT_LOAD_FAILS(good, 5, OPTIM_ETRUNCATED, "not even a header");
    EXPECT_LOAD_FAILS(good, 0, OPTIM_ETRUNCATED, "truncated");
    EXPECT_LOAD_FAILS(good, gsize - 100, OPTIM_ETRUNCATED, "truncated");
    memcpy(bad, good, gsize);
    bad[8] = OPTIM_CHECKPOINT_FORMAT + 1; /* a later format */
    ckpt_rechecksum(bad, gsize);
    {
        char text[64];
        const char *newer = text;
        snprintf(text, sizeof text, "format version %d is newer", OPTIM_CHECKPOINT_FORMAT + 1);
        EXPECT_LOAD_FAILS(bad, gsize, OPTIM_EVERSION, newer);
    }
    memcpy(bad, good, gsize);
    bad[gsize / 2] ^= 0x10;
    EXPECT_LOAD_FAILS(bad, gsize, OPTIM_ECHECKSUM, "corrupt");
    memcpy(bad, good, gsize);
    bad[12] ^= 1; /* header */
    EXPECT_LOAD_FAILS(bad, gsize, OPTIM_ECHECKSUM, "header checksum");
    memcpy(bad, good, gsize);
    memset(bad + gsize, 0, 16);
    EXPECT_LOAD_FAILS(bad, gsize + 16, OPTIM_EFORMAT, "bytes after the end");
    /* Checksums right, content impossible: META's rule (the first field of the first section). */
    memcpy(bad, good, gsize);
    bad[32 + 16] = 99;
    ckpt_rechecksum(bad, gsize);
    EXPECT_LOAD_FAILS(bad, gsize, OPTIM_EFORMAT, "rule = 99 is not a rule");
    /* A hyperparameter out of range (beta1 = 2.0): the first group's first id is lr, value after it. */
    {
        size_t meta_len = 0, g0, off;
        double two = 2.0;
        uint64_t bits;
        int i;
        memcpy(bad, good, gsize);
        for (i = 0; i < 8; i++) meta_len |= (size_t)bad[32 + 8 + i] << (8 * i);
        g0 = 32 + 16 + meta_len + 4; /* the first group section */
        off = g0 + 16 + 8;           /* its first (id, value) */
        ASSERT_INT(bad[off], ==, OPTIM_HP_LR);
        off += 12; /* the second pair: weight_decay? find beta1 by id */
        for (i = 0; i < 10 && bad[off] != OPTIM_HP_BETA1; i++) off += 12;
        ASSERT_INT(bad[off], ==, OPTIM_HP_BETA1);
        memcpy(&bits, &two, 8);
        for (i = 0; i < 8; i++) bad[off + 4 + i] = (unsigned char)(bits >> (8 * i));
        ckpt_rechecksum(bad, gsize);
        EXPECT_LOAD_FAILS(bad, gsize, OPTIM_EFORMAT, "group 0: adam: beta1 = 2 is outside [0, 1)");
    }
    /* Files: missing, a directory, empty, unwritable places. */
    snprintf(path, sizeof path, "%s/missing.ckpt", dir);
    ASSERT_ERR(optim_load(r.o, path, OPTIM_MATCH_NAME), OPTIM_EOPEN, optim_errmsg(r.o), "missing.ckpt: cannot open");
    ASSERT_ERR(optim_load(r.o, dir, OPTIM_MATCH_NAME), OPTIM_EREAD, optim_errmsg(r.o), "is a directory");
    snprintf(path, sizeof path, "%s/empty.ckpt", dir);
    ASSERT(ckpt_write_file(path, "", 0) == 0);
    ASSERT_ERR(optim_load(r.o, path, OPTIM_MATCH_NAME), OPTIM_ETRUNCATED, optim_errmsg(r.o), "empty.ckpt: truncated");
    ASSERT_ERR(optim_save(r.o, "/nonexistent-dir/x.ckpt"), OPTIM_EOPEN, optim_errmsg(r.o),
               "cannot create a temporary file (No such file or directory) next to /nonexistent-dir/x.ckpt");
    ASSERT_ERR(optim_save(r.o, dir), OPTIM_EOPEN, optim_errmsg(r.o), "is a directory");
    ASSERT_ERR(optim_save(r.o, NULL), OPTIM_ENULL, optim_errmsg(r.o), "path is NULL");
    ASSERT_OPT_OK(r.o, state_bytes(r.o, &after, &asize));
    ASSERT(asize == bsize && memcmp(before, after, bsize) == 0);
    free(after);
    /* And the good one loads. */
    ASSERT_OPT_OK(r.o, optim_load_buffer(r.o, good, gsize, OPTIM_MATCH_NAME, "good"));
    ASSERT_INT(optim_step_count(r.o), ==, 9);
#undef EXPECT_LOAD_FAILS
    free(bad);
    free(good);
    free(before);
    small_free(&r);
    small_free(&other);
    ckpt_remove_tree(dir);
    return 0;
}

/* Counters at their largest values (found by the fuzzer: the step count
 * overflowed): a loaded optimizer step count saturates; a parameter whose own
 * step counter is at the top refuses to step. */
TEST_IMPL(ckpt_extreme_counters)
{
    optim_hparams hp;
    small_run r;
    void *buf;
    size_t size;
    unsigned char *d;
    int i;
    optim_hparams_init(&hp, OPTIM_SGD, NULL);
    if (small_build(&r, &hp, 0) || small_steps(&r, 0, 2)) return 1;
    ASSERT_OPT_OK(r.o, optim_save_buffer(r.o, &buf, &size));
    d = (unsigned char *)buf;
    /* META payload at 48: rule u32, groups u32, params u64, steps i64 (at 64), skipped i64 (at 72). */
    for (i = 0; i < 8; i++) d[64 + i] = d[72 + i] = i == 7 ? 0x7f : 0xff;
    ckpt_rechecksum(d, size);
    ASSERT_OPT_OK(r.o, optim_load_buffer(r.o, d, size, OPTIM_MATCH_NAME, "extreme"));
    ASSERT_INT(optim_step_count(r.o), ==, INT64_MAX);
    ASSERT_OPT_OK(r.o, optim_step(r.o));
    ASSERT_INT(optim_step_count(r.o), ==, INT64_MAX);
    ASSERT_OPT_OK(r.o, optim_param_set_step(r.o, 1, INT64_MAX));
    ASSERT_ERR(optim_step(r.o), OPTIM_ESTATE, optim_errmsg(r.o), "step counter of param 1 'b' is at its maximum");
    free(buf);
    small_free(&r);
    return 0;
}

/* Every prefix and every single-bit flip of a checkpoint is refused, never
 * crashes (the sanitizer run checks memory), and changes nothing. */
TEST_IMPL(ckpt_every_truncation_and_flip)
{
    optim *o = NULL;
    optim_hparams hp;
    optim_schedule *s = NULL;
    float w[2][3] = {{1, 2, 3}, {4, 5, 6}}, g[2][3] = {{0.5f, -1, 2}, {1, 1, -1}};
    void *good, *before, *after;
    size_t gsize, bsize, asize, len, bit;
    unsigned char *bad;
    long flips = 0;
    optim_hparams_init(&hp, OPTIM_SGD, NULL);
    hp.momentum = 0.9;
    ASSERT_OK(optim_create(&o, OPTIM_SGD));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, w[0], g[0], 3, "w0", NULL));
    ASSERT_OPT_OK(o, optim_add_param(o, 0, w[1], g[1], 3, "w1", NULL));
    ASSERT_OK(optim_schedule_step(&s, 3, 0.5, NULL));
    ASSERT_OPT_OK(o, optim_group_set_schedule(o, 0, s));
    optim_schedule_free(s);
    ASSERT_OPT_OK(o, optim_step(o));
    ASSERT_OPT_OK(o, optim_save_buffer(o, &good, &gsize));
    ASSERT_OPT_OK(o, optim_step(o));
    ASSERT_OPT_OK(o, optim_save_buffer(o, &before, &bsize));
    bad = (unsigned char *)malloc(gsize);
    for (len = 0; len < gsize; len++) {
        memcpy(bad, good, len);
        if (optim_load_buffer(o, bad, len, OPTIM_MATCH_NAME, "prefix") == OPTIM_OK) FAIL("a %zu-byte prefix loaded", len);
    }
    for (bit = 0; bit < 8 * gsize; bit++) {
        memcpy(bad, good, gsize);
        bad[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        if (optim_load_buffer(o, bad, gsize, OPTIM_MATCH_NAME, "flip") == OPTIM_OK)
            FAIL("flipping bit %zu of %zu bytes went unnoticed", bit, gsize);
        flips++;
    }
    ASSERT_OPT_OK(o, optim_save_buffer(o, &after, &asize));
    ASSERT(asize == bsize && memcmp(before, after, bsize) == 0);
    printf("  %zu truncations and %ld bit flips of a %zu-byte checkpoint refused\n", gsize, flips, gsize);
    free(bad);
    free(good);
    free(before);
    free(after);
    optim_free(o);
    return 0;
}

/* ---- Crashes and full disks --------------------------------------------------------- */

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (!d) return -1;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    closedir(d);
    return n;
}

/* A write that fails half-way (file-size limit) returns OPTIM_ENOSPC and
 * leaves the previous checkpoint as it was, with no temporary file behind. */
TEST_IMPL(ckpt_disk_full_keeps_old)
{
    char dir[64], path[128];
    optim_hparams hp;
    small_run r;
    unsigned char *old, *now;
    size_t nold, nnow;
    pid_t pid;
    int status;
    if (!ckpt_scratch(dir, sizeof dir)) FAIL("mkdtemp");
    snprintf(path, sizeof path, "%s/run.ckpt", dir);
    optim_hparams_init(&hp, OPTIM_ADAM, NULL);
    if (small_build(&r, &hp, 0) || small_steps(&r, 0, 2)) return 1;
    ASSERT_OPT_OK(r.o, optim_save(r.o, path));
    if (ckpt_read_file(path, &old, &nold)) FAIL("cannot read %s", path);
    pid = fork();
    if (pid == 0) {
        /* The child: a bigger optimizer, a 1 KiB file-size limit. */
        struct rlimit lim = {1024, 1024};
        optim *big = NULL;
        static float w[100000], g[100000];
        int rc;
        signal(SIGXFSZ, SIG_IGN); /* else the kernel kills the writer instead of failing the write */
        setrlimit(RLIMIT_FSIZE, &lim);
        optim_create(&big, OPTIM_ADAM);
        optim_add_group(big, &hp, NULL);
        optim_add_param(big, 0, w, g, 100000, "w", NULL);
        rc = optim_save(big, path);
        if (rc != OPTIM_ENOSPC || !strstr(optim_errmsg(big), "run.ckpt")) {
            fprintf(stderr, "save under a 1 KiB limit returned %s: %s\n", optim_err_name(rc), optim_errmsg(big));
            _exit(1);
        }
        _exit(0);
    }
    ASSERT(pid > 0);
    ASSERT(waitpid(pid, &status, 0) == pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) FAIL("the writing child failed (status %d)", status);
    if (ckpt_read_file(path, &now, &nnow)) FAIL("the old checkpoint is gone");
    ASSERT(nnow == nold && memcmp(now, old, nold) == 0);
    ASSERT_INT(count_entries(dir), ==, 1); /* no temporary file left */
    ASSERT_OPT_OK(r.o, optim_load(r.o, path, OPTIM_MATCH_NAME));
    free(old);
    free(now);
    small_free(&r);
    ckpt_remove_tree(dir);
    return 0;
}

/* Killing a process at random moments while it saves again and again never
 * leaves a torn checkpoint. The child alternates two optimizers' states A
 * and B; the kills are spread over four saves' time (so that they land
 * before, during and after renames), and after each the file at the path is
 * byte for byte the initial checkpoint, A or B, and loads. Both A and B must
 * have been found there (the kills reach completed saves, not only the
 * first one's start). */
static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static optim *crash_optimizer(float *w, float *g, size_t n, int steps)
{
    optim *o = NULL;
    optim_hparams hp;
    size_t i;
    int t;
    optim_hparams_init(&hp, OPTIM_ADAM, NULL);
    if (optim_create(&o, OPTIM_ADAM) || optim_add_group(o, &hp, NULL) || optim_add_param(o, 0, w, g, n, "w", NULL))
        return NULL;
    for (t = 0; t < steps; t++) {
        for (i = 0; i < n; i++) g[i] = (float)((i * 7 + (size_t)t * 3) % 11) * 0.1f - 0.5f;
        if (optim_step(o)) return NULL;
    }
    return o;
}

TEST_IMPL(ckpt_crash_during_save)
{
    enum { N = 1 << 18, MIN_ROUNDS = 40, MAX_ROUNDS = 160 };
    static float wa[N], ga[N], wb[N], gb[N], w0[8], g0[8];
    char dir[64], path[128];
    optim *a, *b, *init, *probe;
    void *bytes[3];
    size_t sizes[3];
    int seen[3] = {0, 0, 0}, round, k;
    double t_save, t0;
    test_rng rng = {test_seed() ^ 0xc4a5};
    if (!ckpt_scratch(dir, sizeof dir)) FAIL("mkdtemp");
    snprintf(path, sizeof path, "%s/run.ckpt", dir);
    init = crash_optimizer(w0, g0, 8, 1);
    a = crash_optimizer(wa, ga, N, 1);
    b = crash_optimizer(wb, gb, N, 2);
    probe = crash_optimizer(wb, gb, N, 0);
    ASSERT(init && a && b && probe);
    ASSERT_OPT_OK(init, optim_save_buffer(init, &bytes[0], &sizes[0]));
    ASSERT_OPT_OK(a, optim_save_buffer(a, &bytes[1], &sizes[1]));
    ASSERT_OPT_OK(b, optim_save_buffer(b, &bytes[2], &sizes[2]));
    /* How long one save takes here. */
    t0 = now_seconds();
    for (k = 0; k < 4; k++) ASSERT_OPT_OK(a, optim_save(a, path));
    t_save = (now_seconds() - t0) / 4;
    for (round = 0; round < MAX_ROUNDS && (round < MIN_ROUNDS || !seen[1] || !seen[2]); round++) {
        int status, fds[2], which;
        char c;
        pid_t pid;
        double delay = 4.0 * t_save * test_rng_uniform(&rng);
        struct timespec pause;
        unsigned char *got;
        size_t n;
        ASSERT_OPT_OK(init, optim_save(init, path));
        ASSERT(pipe(fds) == 0);
        pid = fork();
        if (pid == 0) {
            close(fds[0]);
            if (write(fds[1], "r", 1) != 1) _exit(4);
            for (k = 0;; k++)
                if (optim_save(k % 2 ? b : a, path) != OPTIM_OK) _exit(3);
        }
        ASSERT(pid > 0);
        close(fds[1]);
        ASSERT(read(fds[0], &c, 1) == 1); /* it is saving now */
        close(fds[0]);
        pause.tv_sec = (time_t)delay;
        pause.tv_nsec = (long)((delay - (double)pause.tv_sec) * 1e9);
        nanosleep(&pause, NULL);
        kill(pid, SIGKILL);
        ASSERT(waitpid(pid, &status, 0) == pid);
        if (WIFEXITED(status)) FAIL("the saving child stopped by itself (status %d)", WEXITSTATUS(status));
        if (ckpt_read_file(path, &got, &n)) FAIL("round %d: no file at %s after the kill", round, path);
        for (which = 0; which < 3; which++)
            if (n == sizes[which] && memcmp(got, bytes[which], n) == 0) break;
        if (which == 3) FAIL("round %d: killed %.2f ms into the saves, %s is none of the checkpoints written", round,
                             delay * 1e3, path);
        seen[which]++;
        if (which > 0) ASSERT_OPT_OK(probe, optim_load(probe, path, OPTIM_MATCH_NAME));
        free(got);
        /* The temporary files of killed writers: left behind, never read; removed here. */
        {
            DIR *d = opendir(dir);
            struct dirent *e;
            char p[400];
            while (d && (e = readdir(d)) != NULL)
                if (strstr(e->d_name, ".tmp-")) {
                    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
                    unlink(p);
                }
            if (d) closedir(d);
        }
    }
    printf("  a save takes %.1f ms; %d kills over 4 saves' time left the initial checkpoint %d times, A %d, B %d, "
           "never a torn file\n",
           t_save * 1e3, round, seen[0], seen[1], seen[2]);
    if (!seen[1] || !seen[2]) FAIL("the kills never found both new checkpoints (A %d, B %d)", seen[1], seen[2]);
    for (k = 0; k < 3; k++) free(bytes[k]);
    optim_free(init);
    optim_free(a);
    optim_free(b);
    optim_free(probe);
    ckpt_remove_tree(dir);
    return 0;
}

/* A training process killed (SIGKILL) at a random moment resumes from its
 * last checkpoint, in a new process, to the same bits as a run never
 * interrupted. The trainer (optim_ckpt_child train) checkpoints every 5
 * steps as a user would: its parameters, then the optimizer. */
TEST_IMPL(ckpt_kill_training_resume)
{
    enum { STEPS = 120, EVERY = 5 };
    static const int ids[2] = {4, SCN_COUNT - 1}; /* adam + clip + skip NaN + warm-up; sgd + SAM + clip inf + skip */
    char dir[64], want[128], out[128], tpath[160];
    int s, round, resumed_mid = 0;
    test_rng rng = {test_seed() ^ 0x6b11};
    if (!ckpt_scratch(dir, sizeof dir)) FAIL("mkdtemp");
    snprintf(want, sizeof want, "%s/straight.bin", dir);
    for (s = 0; s < 2; s++) {
        scenario_run run;
        FILE *f;
        int t;
        if (scenario_build(ids[s], &run)) return 1;
        for (t = 0; t < STEPS; t++)
            if (scenario_step(&run, t)) FAIL("scenario %d step %d", ids[s], t);
        f = fopen(want, "wb");
        if (!f || scenario_snapshot(&run, f) || fclose(f)) FAIL("cannot write %s", want);
        scenario_free(&run);
        for (round = 0; round < 3; round++) {
            char run_dir[96], ids_s[8], steps_s[8], every_s[8], to_s[8];
            char *argv[8];
            pid_t pid;
            int status, attempt;
            long t_resumed = -1;
            unsigned char *x, *y;
            size_t nx, ny;
            snprintf(run_dir, sizeof run_dir, "%s/run%d-%d", dir, s, round);
            snprintf(ids_s, sizeof ids_s, "%d", ids[s]);
            snprintf(steps_s, sizeof steps_s, "%d", STEPS);
            snprintf(every_s, sizeof every_s, "%d", EVERY);
            snprintf(to_s, sizeof to_s, "%d", STEPS);
            for (attempt = 0;; attempt++) { /* until the kill lands before the end of the run */
                double delay = (2 + 40 * test_rng_uniform(&rng)) * 1e-3 / (1 << attempt);
                struct timespec pause = {0, (long)(delay * 1e9)};
                ckpt_remove_tree(run_dir);
                ASSERT(mkdir(run_dir, 0700) == 0);
                argv[0] = (char *)OPTIM_CKPT_CHILD;
                argv[1] = (char *)"train";
                argv[2] = ids_s;
                argv[3] = run_dir;
                argv[4] = steps_s;
                argv[5] = every_s;
                argv[6] = NULL;
                if (posix_spawn(&pid, OPTIM_CKPT_CHILD, NULL, NULL, argv, environ) != 0) FAIL("cannot run the trainer");
                { /* the clock starts at its first checkpoint (step 0): before it, there is nothing to resume */
                    char first[160];
                    struct stat st;
                    struct timespec tick = {0, 200000};
                    int waited;
                    snprintf(first, sizeof first, "%s/run.ckpt", run_dir);
                    for (waited = 0; stat(first, &st) != 0 && waited < 50000; waited++) nanosleep(&tick, NULL);
                }
                nanosleep(&pause, NULL);
                kill(pid, SIGKILL);
                ASSERT(waitpid(pid, &status, 0) == pid);
                if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) break;
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) FAIL("the trainer failed (status %d)", status);
                if (attempt == 6) FAIL("the trainer always finished before the kill");
            }
            /* Resume from whatever the kill left, in a new process. */
            snprintf(out, sizeof out, "%s/resumed.bin", run_dir);
            argv[1] = (char *)"resume";
            argv[2] = ids_s;
            argv[3] = run_dir;
            argv[4] = to_s;
            argv[5] = out;
            argv[6] = NULL;
            if (posix_spawn(&pid, OPTIM_CKPT_CHILD, NULL, NULL, argv, environ) != 0) FAIL("cannot run the resumer");
            if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
                FAIL("%s: resuming after the kill failed (status %d)", scenario_name(ids[s]), status);
            snprintf(tpath, sizeof tpath, "%s.t", out);
            {
                FILE *f2 = fopen(tpath, "r");
                if (!f2 || fscanf(f2, "%ld", &t_resumed) != 1) FAIL("no %s", tpath);
                fclose(f2);
            }
            if (ckpt_read_file(want, &x, &nx) || ckpt_read_file(out, &y, &ny)) FAIL("cannot read the snapshots");
            if (nx != ny || memcmp(x, y, nx) != 0)
                FAIL("%s: killed, resumed from step %ld in a new process: the run differs", scenario_name(ids[s]),
                     t_resumed);
            printf("  %-45s killed, resumed from step %3ld of %d: identical\n", scenario_name(ids[s]), t_resumed,
                   STEPS);
            resumed_mid += t_resumed > 0 && t_resumed < STEPS;
            free(x);
            free(y);
        }
    }
    if (!resumed_mid) FAIL("no kill landed after the first checkpoint");
    ckpt_remove_tree(dir);
    return 0;
}

/* ---- Optimizers in threads at once ------------------------------------------------- */

/* Each job: its own optimizer (two worker threads of its own), a warm-up +
 * cosine schedule, SAM on every third step, and every 10 steps a save to its
 * own file and a load back from it. */
typedef struct thread_job {
    optim_rule rule;
    float *w, *g;
    size_t n;
    char path[160];
    void *final; /* the last checkpoint's bytes */
    size_t final_size;
    int rc;
    char msg[OPTIM_ERRMSG_MAX];
} thread_job;

static void *thread_run(void *arg)
{
    thread_job *j = (thread_job *)arg;
    optim *o = NULL;
    optim_sam *sam = NULL;
    optim_schedule *c = NULL, *s = NULL;
    optim_hparams hp;
    int t;
    size_t i;
    j->rc = 1;
    optim_hparams_init(&hp, j->rule, NULL);
    if (optim_create(&o, j->rule) || optim_add_group(o, &hp, NULL) ||
        optim_add_param(o, 0, j->w, j->g, j->n, "w", NULL) || optim_set_threads(o, 2) ||
        optim_schedule_cosine(&c, 40, 1e-5, NULL) || optim_schedule_warmup(&s, 5, c, NULL) ||
        optim_group_set_schedule(o, 0, s) || optim_sam_create(&sam, o, 0.05, 2.0, 0, 0.0, NULL))
        goto out;
    for (t = 0; t < 30; t++) {
        for (i = 0; i < j->n; i++) j->g[i] = (float)sin(0.3 * t + (double)i * 1e-3) + 0.1f * j->w[i];
        if (t % 3 == 0) {
            if (optim_sam_first_step(sam)) goto out;
            for (i = 0; i < j->n; i++) j->g[i] = (float)sin(0.3 * t + (double)i * 1e-3) + 0.1f * j->w[i];
            if (optim_sam_second_step(sam)) goto out;
        } else if (optim_step(o)) {
            goto out;
        }
        if (t % 10 == 9 && (optim_save(o, j->path) || optim_load(o, j->path, OPTIM_MATCH_NAME))) goto out;
    }
    if (optim_save_buffer(o, &j->final, &j->final_size)) goto out;
    j->rc = 0;
out:
    if (j->rc) snprintf(j->msg, sizeof j->msg, "%s", o ? optim_errmsg(o) : "create");
    optim_schedule_free(s);
    optim_sam_free(sam);
    optim_free(o);
    return NULL;
}

TEST_IMPL(ckpt_concurrent_optimizers)
{
    enum { N = 200000, J = 3 };
    thread_job alone[J], together[J];
    pthread_t th[J];
    int k;
    size_t i;
    char dir[64];
    static const optim_rule rules[J] = {OPTIM_ADAM, OPTIM_RMSPROP, OPTIM_SGD};
    if (!ckpt_scratch(dir, sizeof dir)) FAIL("mkdtemp");
    memset(alone, 0, sizeof alone);
    memset(together, 0, sizeof together);
    for (k = 0; k < J; k++) {
        alone[k].rule = together[k].rule = rules[k];
        alone[k].n = together[k].n = N;
        alone[k].w = (float *)malloc(N * sizeof(float));
        alone[k].g = (float *)malloc(N * sizeof(float));
        together[k].w = (float *)malloc(N * sizeof(float));
        together[k].g = (float *)malloc(N * sizeof(float));
        snprintf(alone[k].path, sizeof alone[k].path, "%s/alone%d.ckpt", dir, k);
        snprintf(together[k].path, sizeof together[k].path, "%s/together%d.ckpt", dir, k);
        for (i = 0; i < N; i++) alone[k].w[i] = together[k].w[i] = (float)cos((double)i);
        thread_run(&alone[k]);
        if (alone[k].rc) FAIL("%s alone: %s", optim_rule_name(rules[k]), alone[k].msg);
    }
    for (k = 0; k < J; k++) ASSERT(pthread_create(&th[k], NULL, thread_run, &together[k]) == 0);
    for (k = 0; k < J; k++) ASSERT(pthread_join(th[k], NULL) == 0);
    for (k = 0; k < J; k++) {
        unsigned char *fa, *fb;
        size_t na, nb;
        if (together[k].rc) FAIL("%s in a thread: %s", optim_rule_name(rules[k]), together[k].msg);
        if (memcmp(alone[k].w, together[k].w, N * sizeof(float)) != 0)
            FAIL("%s stepping next to other optimizers differs from stepping alone", optim_rule_name(rules[k]));
        if (alone[k].final_size != together[k].final_size ||
            memcmp(alone[k].final, together[k].final, alone[k].final_size) != 0)
            FAIL("%s: the state after concurrent saves and loads differs", optim_rule_name(rules[k]));
        ASSERT(ckpt_read_file(alone[k].path, &fa, &na) == 0 && ckpt_read_file(together[k].path, &fb, &nb) == 0);
        if (na != nb || memcmp(fa, fb, na) != 0) FAIL("%s: the files saved concurrently differ", optim_rule_name(rules[k]));
        free(fa);
        free(fb);
        free(alone[k].w);
        free(alone[k].g);
        free(together[k].w);
        free(together[k].g);
        free(alone[k].final);
        free(together[k].final);
    }
    ckpt_remove_tree(dir);
    return 0;
}
