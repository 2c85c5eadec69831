/* mpi_test.h: what the files of mpi_test share (mpi_test.c: the model, the
 * reference and the comparison, the steps; mpi_test_ckpt.c: checkpoints;
 * mpi_test_fail.c: failures). */
#ifndef OPTIM_MPI_TEST_H
#define OPTIM_MPI_TEST_H

#include "optim_mpi.h"
#include "optim_checkpoint.h"
#include "optim_sam.h"
#include "optim_schedule.h"

#include <stdio.h>

extern int g_rank, g_size;
extern long g_failures;

#define FAILF(...)                                                   \
    do {                                                             \
        fprintf(stderr, "rank %d: FAIL %s:%d: ", g_rank, __FILE__, __LINE__); \
        fprintf(stderr, __VA_ARGS__);                                \
        fprintf(stderr, "\n");                                       \
        g_failures++;                                                \
    } while (0)
#define CHECK(cond, ...)                \
    do {                                \
        if (!(cond)) FAILF(__VA_ARGS__); \
    } while (0)

/* ---- The model and its reference ---- */
#define NP_MAX 8

typedef struct model {
    size_t np;
    const size_t *n;
    float *w[NP_MAX], *g[NP_MAX];
} model;

extern const size_t sizes_big[8], sizes_tiny[4];
void model_init(model *m, const size_t *n, size_t np, uint64_t seed, float offset);
void model_free(model *m);
float grad_of(uint64_t seed, int t, int r, size_t i, size_t j, float w, int nan_step, int K);
/* This rank's gradient at step t; the average over K ranks as liboptim_mpi defines it. */
void local_grads(const model *m, uint64_t seed, int t, int nan_step);
void ref_grads(const model *m, uint64_t seed, int t, int K, int nan_step);

/* ---- Configurations ---- */
typedef struct cfg {
    const char *name;
    optim_rule rule;
    double clip_norm, norm_type, clip_value;
    optim_nonfinite nonfinite;
    int sched;      /* warm-up + cosine on group 0, step decay on group 1 */
    double sam_p;   /* 0: no SAM */
    int sam_adaptive;
    int nan_step;   /* -1: none */
    int handover;   /* stage 2: 0 all at the step, 1 reverse order, 2 scattered, some left to the step */
} cfg;

extern const cfg cfgs[12];
const cfg *cfg_find(const char *name);
void hparams_for(optim_hparams *hp, optim_rule rule, size_t group);
/* Exit with the message unless rc is OPTIM_OK. */
int must(int rc, const char *what, const char *msg);
/* One process's optimizer over m, as the configuration says. */
optim *build(const cfg *c, model *m, int steps_total);
/* build, with optim_set_defer_state(o, defer) before the parameters. */
optim *build_opt(const cfg *c, model *m, int steps_total, int defer);
int same_bits(float a, float b);
int same_bits_d(double a, double b);
/* Everything the distributed run holds against the reference. */
void compare(const char *what, int t, optim_mpi *d, const model *m, optim *ref, const model *rm);
void hand_over(optim_mpi *d, const cfg *c, const model *m, int t);

/* ---- A run: the distributed optimizer and its reference ---- */
typedef struct run {
    const cfg *c;
    int stage;
    model m, rm;
    optim *ref;
    optim_sam *rsam;
    optim_mpi *d;
    uint64_t seed;
    int steps_total;
    int deferred; /* opt was built with optim_set_defer_state(opt, 1) */
} run;

optim_mpi_options small_buckets(void);
void run_open(run *R, const cfg *c, int stage, const size_t *sizes, size_t np, int steps_total,
              const optim_mpi_options *opts);
void run_close(run *R);
/* One step (or SAM step) of both, at step t of the gradient sequence with K ranks' average. */
void run_step(run *R, int t, int K_ref);

/* ---- Commands ---- */
typedef struct ckopts {
    const char *dir, *out, *ckpt, *expect, *rule;
    int steps, from, old_ranks, stage, crash;
    size_t bucket;
} ckopts;
int cmd_save(const ckopts *o);
int cmd_resume(const ckopts *o);
int cmd_plain(const ckopts *o);
int cmd_merge(const ckopts *o);
int cmd_load_fails(const ckopts *o);
int cmd_mismatch(const char *what_arg);
int cmd_errors(void);
int cmd_kill(int kill_rank, int at);
int cmd_timeout(void);
/* mpi_test_types.c: every element type, mixed in one model; typed checkpoints under dir. */
int cmd_types(int steps, const char *dir);
int cmd_types_attack(int steps, const char *dir);
int cmd_flags_attack(void);
/* mpi_test_prec.c: 8-bit state, fp32 masters, stochastic rounding, loss scaling; their checkpoints under dir. */
int cmd_prec(const char *dir);

#endif
