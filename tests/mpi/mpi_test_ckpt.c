/* mpi_test_ckpt.c: sharded checkpoints saved on one number of ranks and
 * resumed on another, merged, damaged (run by ckpt.sh). */
#define _POSIX_C_SOURCE 200809L
#include "mpi_test.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- Checkpoints ----------------------------------------------------------------------- */

static void params_path(char *buf, size_t n, const char *dir, int t)
{
    snprintf(buf, n, "%s.params-%d.bin", dir, t);
}

static void write_params(const model *m, const char *dir, int t)
{
    char path[4096];
    FILE *f;
    size_t i;
    params_path(path, sizeof path, dir, t);
    f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
    for (i = 0; i < m->np; i++) fwrite(m->w[i], sizeof(float), m->n[i], f);
    if (fclose(f) != 0) exit(2);
}

static void read_params(model *m, const char *dir, int t)
{
    char path[4096];
    FILE *f;
    size_t i;
    params_path(path, sizeof path, dir, t);
    f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
    for (i = 0; i < m->np; i++)
        if (fread(m->w[i], sizeof(float), m->n[i], f) != m->n[i]) exit(2);
    fclose(f);
}

static void crash_now(void)
{
    fprintf(stderr, "rank 0: crashing before the manifest, as asked\n");
    fflush(stderr);
    raise(SIGKILL);
}


static const cfg *ck_cfg(const ckopts *o)
{
    const cfg *c = cfg_find(o->rule ? o->rule : "adam-amsgrad-clip3");
    if (!c) {
        fprintf(stderr, "unknown configuration %s\n", o->rule);
        exit(2);
    }
    return c;
}

extern void (*optim_mpi__before_manifest)(void);

int cmd_save(const ckopts *o)
{
    run R;
    int t;
    optim_mpi_options opts = small_buckets();
    if (o->bucket) opts.bucket_bytes = o->bucket;
    run_open(&R, ck_cfg(o), o->stage, sizes_big, 8, 40, &opts);
    for (t = 0; t < o->steps; t++) run_step(&R, t, g_size);
    if (o->crash && g_rank == 0) optim_mpi__before_manifest = crash_now;
    if (g_rank == 0) write_params(&R.m, o->dir, o->steps);
    must(optim_mpi_save(R.d, o->dir), "optim_mpi_save", optim_mpi_errmsg(R.d));
    if (g_rank == 0) printf("saved %d steps of %d ranks (stage %d) in %s\n", o->steps, g_size, o->stage, o->dir);
    run_close(&R);
    return 0;
}

/* The reference replays the whole history: `from` steps averaged over old_ranks, then ours. */
static void replay(run *R, int from, int old_ranks)
{
    int t;
    for (t = 0; t < from; t++) {
        ref_grads(&R->rm, R->seed, t, old_ranks, R->c->nan_step);
        if (R->rsam) {
            if (optim_sam_first_step(R->rsam) == OPTIM_OK) {
                ref_grads(&R->rm, R->seed, t + 1000, old_ranks, -1);
                optim_sam_second_step(R->rsam);
            }
        } else {
            optim_step(R->ref);
        }
    }
}

int cmd_resume(const ckopts *o)
{
    run R;
    int t;
    optim_mpi_options opts = small_buckets();
    if (o->bucket) opts.bucket_bytes = o->bucket;
    run_open(&R, ck_cfg(o), o->stage, sizes_big, 8, 40, &opts);
    replay(&R, o->from, o->old_ranks);
    read_params(&R.m, o->dir, o->from); /* every rank reads rank 0's parameters of that step */
    must(optim_mpi_load(R.d, o->dir), "optim_mpi_load", optim_mpi_errmsg(R.d));
    CHECK(optim_mpi_step_count(R.d) == optim_step_count(R.ref), "loaded %lld steps, expected %lld (of %d)",
          (long long)optim_mpi_step_count(R.d), (long long)optim_step_count(R.ref), o->from);
    compare("after load", o->from, R.d, &R.m, R.ref, &R.rm);
    for (t = o->from; t < o->from + o->steps; t++) run_step(&R, t, g_size);
    if (g_rank == 0)
        printf("resumed a %d-rank checkpoint on %d ranks (stage %d): %d steps %s\n", o->old_ranks, g_size, o->stage,
               o->steps, g_failures ? "DIFFER" : "bit-identical");
    run_close(&R);
    return 0;
}

/* One process: optim_load of a merged checkpoint into the model's own optimizer. */
int cmd_plain(const ckopts *o)
{
    const cfg *c = ck_cfg(o);
    model m, rm;
    optim *opt, *ref;
    optim_sam *sam = NULL, *rsam = NULL;
    optim_error err;
    uint64_t seed = 0x5eed0000u + (uint64_t)(c - cfgs) * 17u;
    int t;
    size_t i, j;
    model_init(&m, sizes_big, 8, seed, 0.0f);
    model_init(&rm, sizes_big, 8, seed, 0.0f);
    opt = build(c, &m, 40);
    ref = build(c, &rm, 40);
    if (c->sam_p > 0) {
        must(optim_sam_create(&sam, opt, 0.05, c->sam_p, c->sam_adaptive, 0.01, &err), "sam", err.message);
        must(optim_sam_create(&rsam, ref, 0.05, c->sam_p, c->sam_adaptive, 0.01, &err), "sam", err.message);
    }
    {
        run R;
        memset(&R, 0, sizeof R);
        R.c = c;
        R.rm = rm;
        R.ref = ref;
        R.rsam = rsam;
        R.seed = seed;
        replay(&R, o->from, o->old_ranks);
    }
    read_params(&m, o->dir, o->from);
    must(optim_load(opt, o->ckpt, OPTIM_MATCH_NAME), "optim_load", optim_errmsg(opt));
    CHECK(optim_step_count(opt) == optim_step_count(ref) && optim_skipped_steps(opt) == optim_skipped_steps(ref),
          "merged checkpoint has %lld steps and %lld skipped, expected %lld and %lld", (long long)optim_step_count(opt),
          (long long)optim_skipped_steps(opt), (long long)optim_step_count(ref), (long long)optim_skipped_steps(ref));
    for (t = o->from; t < o->from + o->steps; t++) {
        /* One process: K = 1. */
        for (i = 0; i < 8; i++)
            for (j = 0; j < m.n[i]; j++) m.g[i][j] = grad_of(seed, t, 0, i, j, m.w[i][j], c->nan_step, 1);
        ref_grads(&rm, seed, t, 1, c->nan_step);
        if (sam) {
            if (optim_sam_first_step(sam) == OPTIM_OK && optim_sam_first_step(rsam) == OPTIM_OK) {
                for (i = 0; i < 8; i++)
                    for (j = 0; j < m.n[i]; j++) m.g[i][j] = grad_of(seed, t + 1000, 0, i, j, m.w[i][j], -1, 1);
                ref_grads(&rm, seed, t + 1000, 1, -1);
                optim_sam_second_step(sam);
                optim_sam_second_step(rsam);
            }
        } else {
            optim_step(opt);
            optim_step(ref);
        }
        for (i = 0; i < 8; i++)
            for (j = 0; j < m.n[i]; j++)
                if (!same_bits(m.w[i][j], rm.w[i][j])) {
                    FAILF("one process after the merge, step %d: param %zu element %zu: %a vs %a", t, i, j,
                          m.w[i][j], rm.w[i][j]);
                    i = 8;
                    break;
                }
    }
    printf("merged checkpoint of %d ranks continued in one process: %d steps %s\n", o->old_ranks, o->steps,
           g_failures ? "DIFFER" : "bit-identical");
    optim_sam_free(sam);
    optim_sam_free(rsam);
    optim_free(opt);
    optim_free(ref);
    model_free(&m);
    model_free(&rm);
    return 0;
}

int cmd_merge(const ckopts *o)
{
    optim_error err;
    int rc = optim_mpi_merge(o->dir, o->out, &err);
    if (rc != OPTIM_OK) FAILF("optim_mpi_merge: %s", err.message);
    return 0;
}

int cmd_load_fails(const ckopts *o)
{
    run R;
    int rc;
    optim_mpi_options opts = small_buckets();
    run_open(&R, ck_cfg(o), 1, sizes_big, 8, 40, &opts);
    rc = optim_mpi_load(R.d, o->dir);
    CHECK(rc != OPTIM_OK, "loading %s succeeded", o->dir);
    CHECK(strstr(optim_mpi_errmsg(R.d), o->expect) != NULL, "the message '%s' lacks '%s'", optim_mpi_errmsg(R.d),
          o->expect);
    if (g_rank == 0) printf("refused as expected: %s\n", optim_mpi_errmsg(R.d));
    /* Nothing changed: the run goes on as if the load had not been tried. */
    run_step(&R, 0, g_size);
    run_close(&R);
    return 0;
}

