/* examples/train_mpi.c: data-parallel training with the optimizer state
 * sharded over MPI ranks (liboptim_mpi, include/optim_mpi.h).
 *
 *   mpirun -np 4 build/examples/train_mpi [--stage 0|1|2] [--params N] [--tensors T] [--steps S]
 *                                         [--bucket BYTES] [--ckpt DIR] [--lo]
 *
 * A least-squares model of N parameters in T tensors: every rank draws its own
 * data, computes its gradient, and liboptim_mpi averages the gradients and
 * steps AdamW with gradient clipping. It prints, per rank, the optimizer
 * state it holds and the bytes it received per step, by kind. With --lo, rank
 * 0 also reads the loopback interface's byte counter (/proc/net/dev) around
 * the steps: run it with `--mca btl tcp,self --mca btl_tcp_if_include lo` so
 * that all traffic goes through loopback TCP (scripts/mpi_bytes.sh does; the
 * numbers are in docs/DISTRIBUTED.md). With --ckpt it saves a sharded
 * checkpoint after the steps and loads it back. */
#define _POSIX_C_SOURCE 200809L
#include <optim_mpi.h>
#include <optim_checkpoint.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bytes received by the loopback interface so far (-1 if unknown). */
static long long lo_bytes(void)
{
    FILE *f = fopen("/proc/net/dev", "r");
    char line[512];
    long long v = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        char *p = line;
        while (*p == ' ') p++;
        if (strncmp(p, "lo:", 3) == 0) {
            v = atoll(p + 3);
            break;
        }
    }
    fclose(f);
    return v;
}

static float frand(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffffff) / 16777216.0f - 0.5f;
}

int main(int argc, char **argv)
{
    int rank, size, stage = 2, steps = 10, tensors = 16, measure_lo = 0, i, t, rc;
    size_t nparams = 1 << 20, k, bucket = 0;
    const char *ckpt = NULL;
    float **w, **g, **target;
    size_t *n;
    optim *opt;
    optim_hparams hp;
    optim_mpi *d = NULL;
    optim_mpi_options o;
    optim_mpi_stats st;
    optim_error err;
    long long lo0 = 0, lo1 = 0;
    unsigned seed;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    for (i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : "0";
        if (strcmp(argv[i], "--stage") == 0) stage = atoi(v), i++;
        else if (strcmp(argv[i], "--params") == 0) nparams = (size_t)atoll(v), i++;
        else if (strcmp(argv[i], "--tensors") == 0) tensors = atoi(v), i++;
        else if (strcmp(argv[i], "--steps") == 0) steps = atoi(v), i++;
        else if (strcmp(argv[i], "--bucket") == 0) bucket = (size_t)atoll(v), i++;
        else if (strcmp(argv[i], "--ckpt") == 0) ckpt = v, i++;
        else if (strcmp(argv[i], "--lo") == 0) measure_lo = 1;
        else {
            if (rank == 0) fprintf(stderr, "train_mpi: unknown argument %s\n", argv[i]);
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
    }
    if (tensors < 1) tensors = 1;

    /* The model, as one process would build its optimizer. */
    w = calloc((size_t)tensors, sizeof *w);
    g = calloc((size_t)tensors, sizeof *g);
    target = calloc((size_t)tensors, sizeof *target);
    n = calloc((size_t)tensors, sizeof *n);
    optim_create(&opt, OPTIM_ADAMW);
    optim_hparams_init(&hp, OPTIM_ADAMW, NULL);
    hp.lr = 0.01;
    optim_add_group(opt, &hp, NULL);
    seed = 1;
    for (i = 0; i < tensors; i++) {
        char name[32];
        /* Tensors of unequal sizes, as a real model has. */
        n[i] = nparams / (size_t)tensors + (i % 3 == 0 ? 1000 : 0);
        w[i] = calloc(n[i], sizeof(float));
        g[i] = calloc(n[i], sizeof(float));
        target[i] = calloc(n[i], sizeof(float));
        for (k = 0; k < n[i]; k++) target[i][k] = frand(&seed);
        snprintf(name, sizeof name, "layer%d", i);
        if (optim_add_param(opt, 0, w[i], g[i], n[i], name, NULL) != OPTIM_OK) {
            fprintf(stderr, "%s\n", optim_errmsg(opt));
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
    optim_set_clip_grad_norm(opt, 1.0, 2.0);
    optim_set_nonfinite(opt, OPTIM_NONFINITE_SKIP);

    optim_mpi_options_init(&o);
    o.bucket_bytes = bucket;
    rc = optim_mpi_create_with(&d, opt, MPI_COMM_WORLD, stage, &o, &err);
    if (rc != OPTIM_OK) {
        fprintf(stderr, "train_mpi: %s\n", err.message);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    optim_free(opt); /* d copied what it needs; in stages 1 and 2 this frees the whole-model state */

    seed = 1000u + (unsigned)rank; /* each rank its own data */
    MPI_Barrier(MPI_COMM_WORLD);
    if (measure_lo && rank == 0) lo0 = lo_bytes();
    for (t = 0; t < steps; t++) {
        double loss = 0;
        /* Backward produces the last tensor's gradient first: hand each over as it comes (stage 2). */
        for (i = tensors - 1; i >= 0; i--) {
            for (k = 0; k < n[i]; k++) {
                float noise = 0.1f * frand(&seed), r = w[i][k] - target[i][k] + noise;
                g[i][k] = 2.0f * r;
                loss += (double)r * r;
            }
            if (stage == 2 && optim_mpi_grad_ready(d, (size_t)i) != OPTIM_OK) {
                fprintf(stderr, "train_mpi: %s\n", optim_mpi_errmsg(d));
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
        }
        if (optim_mpi_step(d) != OPTIM_OK) {
            fprintf(stderr, "train_mpi: %s\n", optim_mpi_errmsg(d));
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        if (rank == 0 && (t == 0 || t == steps - 1))
            printf("step %d: rank 0's loss %.6g, global gradient norm %.6g\n", t, loss / (double)nparams,
                   optim_mpi_last_grad_norm(d));
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (measure_lo && rank == 0) lo1 = lo_bytes();

    optim_mpi_get_stats(d, &st);
    for (k = 0, i = 0; i < tensors; i++) k += n[i];
    nparams = k;
    for (i = 0; i < size; i++) {
        if (i == rank)
            printf("rank %d: stage %d, %zu buckets, %zu of %zu elements stepped here, state %zu bytes; received per "
                   "step: reduce-scatter %.0f, all-gather %.0f, control %.0f bytes\n",
                   rank, stage, optim_mpi_bucket_count(d), optim_mpi_shard_elements(d), nparams,
                   optim_mpi_state_bytes(d), (double)st.reduce_bytes / steps, (double)st.gather_bytes / steps,
                   (double)st.control_bytes / steps);
        fflush(stdout);
        MPI_Barrier(MPI_COMM_WORLD);
    }
    {
        double mine = (double)(st.reduce_bytes + st.gather_bytes + st.control_bytes) / steps, all = 0;
        MPI_Reduce(&mine, &all, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
        if (rank == 0) {
            printf("payload received per step, all ranks: %.0f bytes\n", all);
            if (measure_lo && lo0 >= 0 && lo1 >= 0)
                printf("loopback interface per step (everything on the wire, MPI's own headers included): %.0f "
                       "bytes\n",
                       (double)(lo1 - lo0) / steps);
        }
    }
    if (ckpt) {
        if (optim_mpi_save(d, ckpt) != OPTIM_OK || optim_mpi_load(d, ckpt) != OPTIM_OK) {
            fprintf(stderr, "train_mpi: %s\n", optim_mpi_errmsg(d));
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        if (rank == 0) printf("saved and reloaded %s (optim ckpt info %s)\n", ckpt, ckpt);
    }
    optim_mpi_free(d);
    for (i = 0; i < tensors; i++) {
        free(w[i]);
        free(g[i]);
        free(target[i]);
    }
    free(w);
    free(g);
    free(target);
    free(n);
    MPI_Finalize();
    return 0;
}
