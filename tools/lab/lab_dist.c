/* lab_dist.c: `optim lab fashion-mnist --distributed`: the MLP trained data
 * parallel over MPI ranks with liboptim_mpi (mpirun -np K optim lab ...).
 * Every rank holds the model and computes the gradient of its slice of each
 * batch; liboptim_mpi averages the gradients and steps with the optimizer
 * state sharded (--zero 1, 2) or not (--zero 0). Built only with MPI
 * (OPTIM_LAB_MPI); without it the mode is refused with a message. */
#define _POSIX_C_SOURCE 200809L
#include "lab.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef OPTIM_LAB_MPI
#include "optim_mpi.h"
#endif

/* defer: optim_set_defer_state (the distributed run's template never
 * allocates the whole model's state). */
static optim *build_optim(const lab_mlp *m, const optim_hparams *hp, int defer)
{
    optim *opt = NULL;
    int l;
    lab_check(optim_create(&opt, hp->rule), "optim_create", NULL);
    lab_check(optim_set_defer_state(opt, defer), "optim_set_defer_state", optim_errmsg(opt));
    lab_check(optim_add_group(opt, hp, NULL), "optim_add_group", optim_errmsg(opt));
    for (l = 0; l < m->nlayers; l++) {
        char name[32];
        snprintf(name, sizeof name, "layer%d.weight", l);
        lab_check(optim_add_param(opt, 0, m->w[l], m->gw[l], m->dims[l + 1] * m->dims[l], name, NULL),
                  "optim_add_param", optim_errmsg(opt));
        snprintf(name, sizeof name, "layer%d.bias", l);
        lab_check(optim_add_param(opt, 0, m->b[l], m->gb[l], m->dims[l + 1], name, NULL), "optim_add_param",
                  optim_errmsg(opt));
    }
    lab_check(optim_set_threads(opt, 1), "optim_set_threads", optim_errmsg(opt));
    return opt;
}

double lab_state_bytes_one_process(lab_ctx *ctx, const lab_optimizer *o, const optim_hparams *hp)
{
    lab_mlp m;
    size_t dims[LAB_MLP_MAX_LAYERS + 1], batch, i;
    int nlayers, s;
    double bytes = 0;
    optim *opt;
    (void)o;
    lab_mlp_shape(ctx, &nlayers, dims, &batch);
    lab_mlp_init(&m, nlayers, dims, 1);
    opt = build_optim(&m, hp, 0);
    for (i = 0; i < optim_param_count(opt); i++)
        for (s = 0; s < optim_rule_slot_count(hp->rule); s++) {
            float *data = NULL;
            optim_param_info info;
            optim_param_get_info(opt, i, &info);
            if (optim_state_slot(opt, i, s, &data, NULL) == OPTIM_OK && data) bytes += (double)info.n * sizeof(float);
        }
    optim_free(opt);
    lab_mlp_free(&m);
    return bytes;
}

#ifndef OPTIM_LAB_MPI

int lab_dist_available(void)
{
    return 0;
}

int lab_dist_init(int *argc, char ***argv, lab_ctx *ctx, char *msg, size_t msgsize)
{
    (void)argc;
    (void)argv;
    ctx->rank = 0;
    ctx->ranks = 1;
    snprintf(msg, msgsize,
             "--distributed needs liboptim_mpi, and this optim was built without MPI: install Debian's openmpi-bin "
             "and libopenmpi-dev, rebuild (cmake finds MPI), and run it under mpirun -np K");
    return -1;
}

int lab_dist_agree(lab_ctx *ctx, int status)
{
    (void)ctx;
    return status;
}

void lab_dist_finish(lab_ctx *ctx)
{
    (void)ctx;
}

void lab_dist_idle_barrier(lab_ctx *ctx)
{
    (void)ctx;
}

void lab_train_dist(lab_ctx *ctx, const lab_optimizer *o, const optim_hparams *hp, int epochs, uint64_t seed,
                    const char *label, lab_train_result *res, lab_json *facts)
{
    (void)facts;
    lab_train(ctx, o, hp, NULL, epochs, seed, label, res);
}

#else

int lab_dist_available(void)
{
    return 1;
}

int lab_dist_init(int *argc, char ***argv, lab_ctx *ctx, char *msg, size_t msgsize)
{
    (void)msg;
    (void)msgsize;
    MPI_Init(argc, argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &ctx->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ctx->ranks);
    return 0;
}

int lab_dist_agree(lab_ctx *ctx, int status)
{
    (void)ctx;
    MPI_Allreduce(MPI_IN_PLACE, &status, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return status;
}

/* A barrier that sleeps between polls: the ranks that wait leave the cores
 * to the one that works (MPI's blocking calls spin). */
void lab_dist_idle_barrier(lab_ctx *ctx)
{
    MPI_Request req;
    int done = 0;
    (void)ctx;
    MPI_Ibarrier(MPI_COMM_WORLD, &req);
    while (!done) {
        struct timespec ts = {0, 2000000};
        MPI_Test(&req, &done, MPI_STATUS_IGNORE);
        if (!done) nanosleep(&ts, NULL);
    }
}

void lab_dist_finish(lab_ctx *ctx)
{
    lab_dist_idle_barrier(ctx);
    MPI_Finalize();
}

static void sum2(double *a, double *b)
{
    double v[2] = {*a, *b};
    MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    *a = v[0];
    *b = v[1];
}

/* Test loss and accuracy: each rank evaluates its share of the test set. */
static void evaluate_dist(lab_ctx *ctx, lab_mlp *m, size_t *idx, double *loss, double *acc)
{
    const lab_dataset *d = ctx->data;
    size_t lo = d->ntest * (size_t)ctx->rank / (size_t)ctx->ranks;
    size_t hi = d->ntest * (size_t)(ctx->rank + 1) / (size_t)ctx->ranks, start, i;
    double total = 0, ok = 0;
    for (start = lo; start < hi; start += m->max_batch) {
        size_t n = hi - start < m->max_batch ? hi - start : m->max_batch, c;
        for (i = 0; i < n; i++) idx[i] = start + i;
        lab_load_batch(d, d->xtest, idx, n, m->act[0]);
        total += lab_mlp_batch(m, n, d->ytest + start, 0, &c) * (double)n;
        ok += (double)c;
    }
    sum2(&total, &ok);
    *loss = total / (double)d->ntest;
    *acc = ok / (double)d->ntest;
}

/* The gradient of this rank's rows of the batch, weighted so that the
 * average over the ranks is the whole batch's mean gradient. */
static double slice_grads(lab_ctx *ctx, lab_mlp *m, const size_t *rows, size_t n)
{
    const lab_dataset *d = ctx->data;
    size_t lo = n * (size_t)ctx->rank / (size_t)ctx->ranks, hi = n * (size_t)(ctx->rank + 1) / (size_t)ctx->ranks;
    size_t nr = hi - lo, i, k;
    unsigned char labels[1024];
    double loss = 0, weight;
    int l;
    if (nr > 0) {
        for (i = 0; i < nr; i++) labels[i] = d->ytrain[rows[lo + i]];
        lab_load_batch(d, d->xtrain, rows + lo, nr, m->act[0]);
        loss = lab_mlp_batch(m, nr, labels, 1, NULL) * (double)nr;
    }
    /* mean over my nr rows, times nr K / n: the ranks' average is the mean over n. */
    weight = (double)nr * (double)ctx->ranks / (double)n;
    for (l = 0; l < m->nlayers; l++) {
        size_t nw = m->dims[l + 1] * m->dims[l], nb = m->dims[l + 1];
        if (nr == 0) {
            memset(m->gw[l], 0, nw * sizeof(float));
            memset(m->gb[l], 0, nb * sizeof(float));
        } else if (weight != 1.0) {
            for (k = 0; k < nw; k++) m->gw[l][k] *= (float)weight;
            for (k = 0; k < nb; k++) m->gb[l][k] *= (float)weight;
        }
    }
    return loss;
}

/* Stage 2: hand the gradients over as backward produced them, last layer first. */
static void hand_over(optim_mpi *d, size_t nparams)
{
    size_t i;
    if (optim_mpi_stage(d) != 2) return;
    for (i = nparams; i-- > 0;) lab_check(optim_mpi_grad_ready(d, i), "optim_mpi_grad_ready", optim_mpi_errmsg(d));
}

static void check_mpi(optim_mpi *d, int rc, const char *what)
{
    if (rc == OPTIM_OK) return;
    fprintf(stderr, "\noptim lab: %s failed: %s\n", what, optim_mpi_errmsg(d));
    MPI_Abort(MPI_COMM_WORLD, 1);
}

void lab_train_dist(lab_ctx *ctx, const lab_optimizer *o, const optim_hparams *hp, int epochs, uint64_t seed,
                    const char *label, lab_train_result *res, lab_json *facts)
{
    const lab_dataset *d = ctx->data;
    lab_mlp m;
    lab_rng rng;
    optim *opt;
    optim_mpi *dp = NULL;
    double template_bytes = 0;
    optim_error err;
    size_t dims[LAB_MLP_MAX_LAYERS + 1], batch, steps_per_epoch, *order, *idx, i, nparams;
    int nlayers, e, log_every;
    long step = 0, total_steps;
    double block_loss = 0;
    int block_n = 0;
    lab_progress prog;

    lab_mlp_shape(ctx, &nlayers, dims, &batch);
    lab_mlp_init(&m, nlayers, dims, batch);
    lab_rng_init(&rng, seed, 0x1417);
    lab_mlp_reset(&m, &rng);
    steps_per_epoch = (d->ntrain + batch - 1) / batch;
    total_steps = (long)steps_per_epoch * epochs;
    log_every = steps_per_epoch >= 100 ? 20 : 1;

    lab_train_result_init(res, epochs, total_steps, log_every);

    /* The optimizer as one process builds it; liboptim_mpi takes what it needs. */
    opt = build_optim(&m, hp, 1);
    nparams = optim_param_count(opt);
    if (optim_mpi_create(&dp, opt, MPI_COMM_WORLD, ctx->opt.zero_stage, &err) != OPTIM_OK) {
        fprintf(stderr, "\noptim lab: optim_mpi_create failed: %s\n", err.message);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    /* Deferred state: the template never held any (0 bytes), so no rank's
     * peak holds the whole model's state. */
    template_bytes = (double)optim_state_bytes(opt);
    optim_free(opt);
    if (o->sam) check_mpi(dp, optim_mpi_set_sam(dp, o->rho, 2.0, 0, 0.0), "optim_mpi_set_sam");

    order = (size_t *)lab_xmalloc(d->ntrain * sizeof *order);
    idx = (size_t *)lab_xmalloc(batch * sizeof *idx);
    lab_progress_start(&prog, label, total_steps, "step", (int)steps_per_epoch);
    for (e = 0; e < epochs && !res->diverged; e++) {
        double t0 = lab_now(), sum = 0;
        size_t start, seen = 0;
        lab_rng order_rng;
        /* The same data order as one process: every rank draws it. */
        lab_rng_init(&order_rng, seed, 0x0dde0000u + (uint64_t)e);
        snprintf(prog.stage, sizeof prog.stage, "epoch %d/%d", e + 1, epochs);
        for (i = 0; i < d->ntrain; i++) order[i] = i;
        for (i = d->ntrain - 1; i > 0; i--) {
            size_t j = lab_rng_below(&order_rng, i + 1), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        for (start = 0; start < d->ntrain; start += batch) {
            size_t n = d->ntrain - start < batch ? d->ntrain - start : batch;
            double loss = slice_grads(ctx, &m, order + start, n), unused = 0;
            sum2(&loss, &unused);
            loss /= (double)n;
            if (!isfinite(loss)) {
                res->diverged = 1;
                break;
            }
            hand_over(dp, nparams);
            if (o->sam) {
                check_mpi(dp, optim_mpi_sam_first_step(dp), "optim_mpi_sam_first_step");
                slice_grads(ctx, &m, order + start, n);
                hand_over(dp, nparams);
                check_mpi(dp, optim_mpi_sam_second_step(dp), "optim_mpi_sam_second_step");
            } else {
                check_mpi(dp, optim_mpi_step(dp), "optim_mpi_step");
            }
            sum += loss * (double)n;
            seen += n;
            block_loss += loss;
            if (++block_n == log_every) {
                res->step_loss[res->nsteps_logged++] = block_loss / block_n;
                block_loss = 0;
                block_n = 0;
            }
            step++;
            lab_progress_update(&prog, step, loss);
        }
        res->epoch_seconds[e] = lab_now() - t0;
        if (res->diverged) break;
        res->train_loss[e] = sum / (double)seen;
        evaluate_dist(ctx, &m, idx, &res->test_loss[e], &res->test_acc[e]);
    }
    {
        char note[96];
        if (res->diverged)
            snprintf(note, sizeof note, "DIVERGED (non-finite loss) in epoch %d", e + 1);
        else
            snprintf(note, sizeof note, "train loss %.4f  test acc %.4f", res->train_loss[epochs - 1],
                     res->test_acc[epochs - 1]);
        lab_progress_end(&prog, note);
    }
    {
        /* What each rank held and what rank 0 received per step. */
        double mine = (double)optim_mpi_state_bytes(dp), *all = (double *)lab_xcalloc((size_t)ctx->ranks, sizeof *all);
        optim_mpi_stats st;
        optim_mpi_get_stats(dp, &st);
        MPI_Gather(&mine, 1, MPI_DOUBLE, all, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
        if (ctx->rank == 0 && facts) {
            double red = st.reductions ? (double)st.reductions : 1;
            lab_json_put(facts, "state_bytes_per_rank", lab_json_numbers(all, (size_t)ctx->ranks));
            lab_json_set_num(facts, "template_state_bytes_rank0", template_bytes);
            lab_json_set_num(facts, "buckets", (double)optim_mpi_bucket_count(dp));
            lab_json_set_num(facts, "shard_elements_rank0", (double)optim_mpi_shard_elements(dp));
            lab_json_set_num(facts, "reductions", (double)st.reductions);
            lab_json_set_num(facts, "bytes_per_reduction.reduce_scatter", (double)st.reduce_bytes / red);
            lab_json_set_num(facts, "bytes_per_reduction.all_gather", (double)st.gather_bytes / red);
            lab_json_set_num(facts, "bytes_per_reduction.control", (double)st.control_bytes / red);
            lab_json_set_num(facts, "wait_seconds_rank0", st.wait_seconds);
        }
        free(all);
    }
    free(order);
    free(idx);
    optim_mpi_free(dp);
    lab_mlp_free(&m);
}

#endif
