/* mpi_test_fail.c: failures: configurations that differ, one rank's error,
 * a killed rank, a rank that stops answering. */
#define _POSIX_C_SOURCE 200809L
#include "mpi_test.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- Failures --------------------------------------------------------------------------- */

/* The last rank describes something else; every rank must refuse with a message naming it. */
int cmd_mismatch(const char *what_arg)
{
    static const struct {
        const char *what, *expect;
    } cases[] = {
        {"lr", "group 0 hyperparameter lr: 0.002 on rank"},
        {"rule", "rule: adam on rank"},
        {"size", "number of parameters"},
        {"psize", "param 4 'p4' size: 300 on rank"},
        {"name", "param 5 name"},
        {"stage", "stage: 1 on rank"},
        {"bucket", "bucket size (elements)"},
        {"schedule", "group 1 schedule:"},
        {"clip", "clip_grad_norm"},
        {"state", "state exp_avg"},
        {"shape", "shape"},
        {"sam", "SAM's rho: 0.050000000000000003 on rank"},
        {"dtype", "param 5 'p5' element types: float32 memory, float32 gradients, float32 state on rank"},
    };
    const cfg *c = cfg_find("adam-amsgrad-clip3");
    size_t k;
    for (k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        model m;
        optim *opt, *other = NULL;
        optim_mpi *d = NULL;
        optim_error err;
        optim_mpi_options opts = small_buckets();
        int stage = 1, rc, last = g_rank == g_size - 1;
        size_t np = 8;
        if (what_arg && strcmp(what_arg, "all") != 0 && strcmp(what_arg, cases[k].what) != 0) continue;
        model_init(&m, sizes_big, 8, 42, 0.0f);
        if (last && strcmp(cases[k].what, "size") == 0) np = 7;
        m.np = np;
        opt = build(c, &m, 40);
        if (last) {
            const char *w = cases[k].what;
            if (strcmp(w, "lr") == 0) optim_group_set_hparam(opt, 0, OPTIM_HP_LR, 0.003);
            if (strcmp(w, "rule") == 0) {
                optim_hparams hp;
                optim_create(&other, OPTIM_ADAMW);
                optim_hparams_init(&hp, OPTIM_ADAMW, NULL);
                optim_add_group(other, &hp, NULL);
                optim_add_group(other, &hp, NULL);
                {
                    size_t i;
                    for (i = 0; i < 8; i++) {
                        char name[16];
                        snprintf(name, sizeof name, "p%zu", i);
                        optim_add_param(other, i % 2, m.w[i], m.g[i], m.n[i], name, NULL);
                    }
                }
            }
            if (strcmp(w, "dtype") == 0) {
                /* The same model, but param 5 keeps bfloat16 state. */
                optim_hparams hp;
                int g;
                size_t i;
                optim_create(&other, c->rule);
                for (g = 0; g < 2; g++) {
                    hparams_for(&hp, c->rule, (size_t)g);
                    optim_add_group(other, &hp, NULL);
                }
                for (i = 0; i < 8; i++) {
                    char name[16];
                    snprintf(name, sizeof name, "p%zu", i);
                    optim_add_param_ex(other, i % 2, m.w[i], OPTIM_FLOAT32, m.g[i], OPTIM_FLOAT32, m.n[i],
                                       i == 5 ? OPTIM_BFLOAT16 : OPTIM_FLOAT32, 0, name, NULL);
                }
            }
            if (strcmp(w, "psize") == 0) {
                optim_free(opt);
                static const size_t other_sizes[] = {20000, 1, 0, 8193, 299, 12345, 7, 40000};
                m.n = other_sizes;
                opt = build(c, &m, 40);
            }
            if (strcmp(w, "name") == 0) {
                optim_free(opt);
                optim_create(&opt, c->rule);
                {
                    optim_hparams hp;
                    int g;
                    size_t i;
                    for (g = 0; g < 2; g++) {
                        hparams_for(&hp, c->rule, (size_t)g);
                        optim_add_group(opt, &hp, NULL);
                    }
                    for (i = 0; i < 8; i++) {
                        char name[16];
                        snprintf(name, sizeof name, i == 5 ? "q%zu" : "p%zu", i);
                        optim_add_param(opt, i % 2, m.w[i], m.g[i], m.n[i], name, NULL);
                    }
                    optim_set_clip_grad_norm(opt, c->clip_norm, c->norm_type);
                    optim_set_nonfinite(opt, c->nonfinite);
                    {
                        optim_schedule *cos = NULL, *wu = NULL, *st = NULL;
                        optim_schedule_cosine(&cos, 35, 1e-5, NULL);
                        optim_schedule_warmup(&wu, 5, cos, NULL);
                        optim_schedule_step(&st, 4, 0.7, NULL);
                        optim_group_set_schedule(opt, 0, wu);
                        optim_group_set_schedule(opt, 1, st);
                        optim_schedule_free(wu);
                        optim_schedule_free(st);
                    }
                    {
                        int64_t dims[2] = {100, 400};
                        optim_param_set_shape(opt, 7, 2, dims);
                    }
                }
            }
            if (strcmp(w, "stage") == 0) stage = 2;
            if (strcmp(w, "bucket") == 0) opts.bucket_bytes = 128 << 10;
            if (strcmp(w, "schedule") == 0) {
                optim_schedule *st = NULL;
                optim_schedule_step(&st, 4, 0.8, NULL);
                optim_group_set_schedule(opt, 1, st);
                optim_schedule_free(st);
            }
            if (strcmp(w, "clip") == 0) optim_set_clip_grad_norm(opt, 1.5, 2.0);
            if (strcmp(w, "state") == 0) {
                float *s = NULL;
                optim_state_slot(opt, 3, 0, &s, NULL);
                s[17] = 1.0f;
            }
            if (strcmp(w, "shape") == 0) {
                int64_t dims[2] = {400, 100};
                optim_param_set_shape(opt, 7, 2, dims);
            }
        }
        if (strcmp(cases[k].what, "lr") == 0 && !last) optim_group_set_hparam(opt, 0, OPTIM_HP_LR, 0.002);
        rc = optim_mpi_create_with(&d, other ? other : opt, MPI_COMM_WORLD, stage, &opts, &err);
        if (strcmp(cases[k].what, "sam") == 0) {
            CHECK(rc == OPTIM_OK, "create: %s", err.message);
            rc = optim_mpi_set_sam(d, last ? 0.06 : 0.05, 2.0, 0, 0.0);
            snprintf(err.message, sizeof err.message, "%s", optim_mpi_errmsg(d));
        }
        CHECK(rc == OPTIM_EMISMATCH, "%s: returned %s (%s)", cases[k].what, optim_err_name(rc), err.message);
        CHECK(strstr(err.message, cases[k].expect) != NULL, "%s: the message '%s' lacks '%s'", cases[k].what,
              err.message, cases[k].expect);
        {
            /* The last rank against the others, named. */
            char others[32], odd[32];
            snprintf(others, sizeof others, g_size > 2 ? "ranks 0, 1" : "rank 0");
            snprintf(odd, sizeof odd, "rank %d", g_size - 1);
            CHECK(strstr(err.message, others) && strstr(err.message, odd), "%s: the message names the ranks: %s",
                  cases[k].what, err.message);
        }
        if (g_rank == 0) printf("mismatch %-8s refused: %s\n", cases[k].what, err.message);
        optim_mpi_free(d);
        optim_free(opt);
        optim_free(other);
        m.np = 8;
        m.n = sizes_big;
        model_free(&m);
    }
    return 0;
}

int cmd_errors(void)
{
    run R;
    int rc, t = 0;
    const float *keep;
    optim_mpi_options opts = small_buckets();
    int stage;
    for (stage = 1; stage <= 2; stage++) {
        run_open(&R, cfg_find("adamw-clip2"), stage, sizes_big, 8, 40, &opts);
        run_step(&R, t++, g_size);
        /* 1. A missing gradient on the last rank fails the step on every rank, naming it. */
        local_grads(&R.m, R.seed, t, -1);
        /* Stage 2: rank 0 alone has buckets on the wire already (param 7's); the failed step must
         * still match them on every rank. */
        if (stage == 2 && g_rank == 0) must(optim_mpi_grad_ready(R.d, 7), "grad_ready", optim_mpi_errmsg(R.d));
        keep = R.m.g[4];
        if (g_rank == g_size - 1) optim_mpi_set_grad(R.d, 4, NULL);
        rc = optim_mpi_step(R.d);
        CHECK(rc == OPTIM_ENULL, "stage %d: a missing gradient: %s", stage, optim_err_name(rc));
        {
            char expect[128];
            snprintf(expect, sizeof expect, "rank %d of %d: optim_mpi_step: param 4 'p4' has no gradient",
                     g_size - 1, g_size);
            CHECK(strstr(optim_mpi_errmsg(R.d), expect) != NULL, "the message '%s' lacks '%s'",
                  optim_mpi_errmsg(R.d), expect);
            if (g_rank == 0 && stage == 1) printf("one rank's error, every rank's: %s\n", optim_mpi_errmsg(R.d));
        }
        optim_mpi_set_grad(R.d, 4, keep);
        compare("after a failed step", t, R.d, &R.m, R.ref, &R.rm);
        run_step(&R, t++, g_size); /* and the run goes on, bit for bit */
        /* 2. A hyperparameter changed on one rank only is found at the next step. */
        if (g_rank == 0) optim_group_set_hparam(optim_mpi_local(R.d), 1, OPTIM_HP_WEIGHT_DECAY, 0.5);
        local_grads(&R.m, R.seed, t, -1);
        rc = optim_mpi_step(R.d);
        CHECK(rc == OPTIM_EMISMATCH && strstr(optim_mpi_errmsg(R.d), "group 1 hyperparameter weight_decay"),
              "stage %d: drift: %s: %s", stage, optim_err_name(rc), optim_mpi_errmsg(R.d));
        if (g_rank == 0 && stage == 1) printf("drift found: %s\n", optim_mpi_errmsg(R.d));
        if (g_rank == 0) optim_group_set_hparam(optim_mpi_local(R.d), 1, OPTIM_HP_WEIGHT_DECAY, 1e-2);
        run_step(&R, t++, g_size);
        /* 3. Local misuse is refused locally. */
        rc = optim_mpi_grad_ready(R.d, 99);
        CHECK(rc == OPTIM_ERANGE, "grad_ready(99): %s", optim_err_name(rc));
        if (stage == 1) {
            rc = optim_mpi_grad_ready(R.d, 0);
            CHECK(rc == OPTIM_ESTATE && strstr(optim_mpi_errmsg(R.d), "stage 2"), "stage 1 grad_ready: %s",
                  optim_mpi_errmsg(R.d));
        } else {
            local_grads(&R.m, R.seed, t, -1);
            must(optim_mpi_grad_ready(R.d, 0), "grad_ready", optim_mpi_errmsg(R.d));
            rc = optim_mpi_grad_ready(R.d, 0);
            CHECK(rc == OPTIM_ESTATE, "handed over twice: %s", optim_err_name(rc));
            ref_grads(&R.rm, R.seed, t, g_size, -1);
            rc = optim_mpi_step(R.d);
            CHECK(rc == OPTIM_OK && optim_step(R.ref) == OPTIM_OK, "step: %s", optim_mpi_errmsg(R.d));
            compare("after a partial hand-over", t++, R.d, &R.m, R.ref, &R.rm);
        }
        rc = optim_mpi_sam_first_step(R.d);
        CHECK(rc == OPTIM_ESTATE, "SAM without SAM: %s", optim_err_name(rc));
        /* 4. A save into a path that is a file fails on every rank. */
        {
            char path[256];
            FILE *f;
            snprintf(path, sizeof path, "/tmp/optim_mpi_test_file_%ld", (long)getppid());
            if (g_rank == 0) {
                f = fopen(path, "w");
                if (f) fclose(f);
            }
            MPI_Barrier(MPI_COMM_WORLD);
            rc = optim_mpi_save(R.d, path);
            CHECK(rc == OPTIM_EOPEN && strstr(optim_mpi_errmsg(R.d), "rank 0 of"), "save onto a file: %s: %s",
                  optim_err_name(rc), optim_mpi_errmsg(R.d));
            MPI_Barrier(MPI_COMM_WORLD);
            if (g_rank == 0) unlink(path);
        }
        run_step(&R, t++, g_size);
        run_close(&R);
    }
    /* 5. Element types: a float64 parameter beside a float32 one is taken (mpi_test_types.c steps every
     * type); what stays refused is refused by name on every rank, and nothing changes: SAM over a
     * parameter that is not float32 (the core's optim_sam_create takes float32 only), and the float32
     * setters on a float64 parameter (optim_mpi_set_grad_data / _param_data take it). */
    {
        static double w64[64], g64[64], g64b[64];
        static float w32[64], g32[64];
        optim *opt = NULL;
        optim_mpi *d = NULL;
        optim_hparams hp;
        optim_error err;
        size_t j;
        for (j = 0; j < 64; j++) {
            w64[j] = 0.5 + 0.01 * (double)j;
            g64[j] = g64b[j] = 0.1;
            w32[j] = 0.25f;
            g32[j] = 0.1f;
        }
        must(optim_create(&opt, OPTIM_ADAM), "create", "");
        optim_hparams_init(&hp, OPTIM_ADAM, NULL);
        must(optim_add_group(opt, &hp, NULL), "add_group", optim_errmsg(opt));
        must(optim_add_param(opt, 0, w32, g32, 64, "a", NULL), "add_param", optim_errmsg(opt));
        must(optim_add_param_typed(opt, 0, w64, OPTIM_FLOAT64, g64, OPTIM_FLOAT64, 64, "b", NULL), "add_param_typed",
             optim_errmsg(opt));
        rc = optim_mpi_create(&d, opt, MPI_COMM_WORLD, 1, &err);
        CHECK(rc == OPTIM_OK && d != NULL, "a float64 parameter beside a float32 one: %s: %s", optim_err_name(rc),
              err.message);
        optim_free(opt);
        if (d) {
            rc = optim_mpi_set_sam(d, 0.05, 2.0, 0, 0.0);
            CHECK(rc == OPTIM_EUNSUPPORTED && strstr(optim_mpi_errmsg(d), "'b[0:64]'") != NULL &&
                      strstr(optim_mpi_errmsg(d), "float64") != NULL,
                  "SAM over a float64 parameter: %s: %s", optim_err_name(rc), optim_mpi_errmsg(d));
            if (g_rank == 0) printf("SAM over a float64 parameter refused: %s\n", optim_mpi_errmsg(d));
            rc = optim_mpi_set_grad(d, 1, g32);
            CHECK(rc == OPTIM_EINVAL && strstr(optim_mpi_errmsg(d), "param 1 'b' has float64 memory and float64 "
                                                                     "gradients") != NULL,
                  "optim_mpi_set_grad on a float64 parameter: %s: %s", optim_err_name(rc), optim_mpi_errmsg(d));
            rc = optim_mpi_set_param_ptrs(d, 1, w32, g32);
            CHECK(rc == OPTIM_EINVAL && strstr(optim_mpi_errmsg(d), "optim_mpi_set_param_data") != NULL,
                  "optim_mpi_set_param_ptrs on a float64 parameter: %s: %s", optim_err_name(rc), optim_mpi_errmsg(d));
            /* Nothing changed: the step reads g64 (0.1 everywhere), as the typed setter then points it at g64b. */
            must(optim_mpi_set_grad_data(d, 1, g64b), "optim_mpi_set_grad_data", optim_mpi_errmsg(d));
            must(optim_mpi_step(d), "optim_mpi_step", optim_mpi_errmsg(d));
            CHECK(w64[0] < 0.5 && w64[0] > 0.49 && w32[0] < 0.25f, "the step moved both parameters: %.17g %.9g",
                  w64[0], (double)w32[0]);
            optim_mpi_free(d);
        }
    }
    if (g_rank == 0) printf("errors: %s\n", g_failures ? "FAILED" : "every rank failed together, nothing changed");
    return 0;
}

int cmd_kill(int kill_rank, int at)
{
    run R;
    int t;
    optim_mpi_options opts = small_buckets();
    run_open(&R, cfg_find("adam-amsgrad-clip3"), 2, sizes_big, 8, 1000000, &opts);
    for (t = 0; t < 1000000; t++) {
        if (t == at && g_rank == kill_rank) {
            fprintf(stderr, "rank %d: killing myself (SIGKILL) at step %d\n", g_rank, t);
            fflush(stderr);
            raise(SIGKILL);
        }
        local_grads(&R.m, R.seed, t, -1);
        hand_over(R.d, R.c, &R.m, t);
        if (optim_mpi_step(R.d) != OPTIM_OK) {
            fprintf(stderr, "rank %d: %s\n", g_rank, optim_mpi_errmsg(R.d));
            MPI_Abort(MPI_COMM_WORLD, 3);
        }
    }
    run_close(&R);
    return 0;
}

int cmd_timeout(void)
{
    run R;
    optim_mpi_options opts = small_buckets();
    opts.timeout = 2;
    run_open(&R, cfg_find("adamw-clip2"), 1, sizes_big, 8, 40, &opts);
    run_step(&R, 0, g_size);
    if (g_rank == g_size - 1) {
        /* Stop answering (as a stuck or stopped process would). */
        sleep(30);
    }
    local_grads(&R.m, R.seed, 1, -1);
    if (optim_mpi_step(R.d) != OPTIM_OK) {
        fprintf(stderr, "rank %d: %s: %s\n", g_rank, optim_err_name(optim_mpi_errcode(R.d)), optim_mpi_errmsg(R.d));
        fflush(stderr);
        /* Rank 0's report is the one checked: the others leave it time to
         * finish its probe (on a loaded machine their timeouts may end
         * first, and an abort ends every rank). */
        if (g_rank != 0) sleep(10);
        MPI_Abort(MPI_COMM_WORLD, 4);
    }
    run_close(&R);
    return 0;
}

