/*
 * train_mlp.c: train one small neural network with every rule of optim,
 * through the optimizer object, and print a table of the results.
 *
 * The problem: two interleaved spirals in the plane (two classes, Gaussian
 * noise), generated here from a fixed seed, so the program needs no data
 * file and prints the same table on every machine (up to the timings).
 * The model: a multilayer perceptron 2 -> 32 -> 32 -> 2 with tanh hidden
 * units and a softmax cross-entropy loss, written out in plain C (no BLAS).
 *
 * Every rule starts from the same initial weights and sees the same
 * mini-batches in the same order; only the update rule and its learning
 * rate differ. Weights and biases are two parameter groups, the biases
 * without weight decay (it matters for AdamW, whose default decay is 1e-2).
 *
 * This is what `make run` runs until the optimizer lab (`optim lab`) exists.
 * Exit status: 0 on success, 1 if a call into the library failed (its
 * message is printed).
 */
#include "optim.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- Problem and training setup ------------------------------------------- */

enum {
    N_IN = 2,
    N_HID = 32,
    N_OUT = 2,
    N_TRAIN = 800,
    N_TEST = 800,
    BATCH = 32,
    EPOCHS = 40,
    EARLY_EPOCH = 5 /* the table also shows the training loss after this epoch */
};

#define DATA_SEED UINT64_C(20260111)
#define INIT_SEED UINT64_C(7)
#define SHUFFLE_SEED UINT64_C(42)
#define SPIRAL_TURNS 1.0 /* turns of each arm */
#define RADIUS 2.0       /* outer radius of the arms (inputs of order 1) */
#define NOISE 0.1        /* standard deviation of the noise added to each coordinate */

/* One row of the table: a rule, its learning rate, and the settings that
 * differ from torch.optim's defaults (at most MAX_SET), applied by id with
 * optim_hparams_set and printed from the same ids, so the table shows exactly
 * what ran. Each learning rate gave the lowest final training loss of a
 * coarse sweep (1 and 3 times powers of ten) on this problem, with this seed
 * and budget; AdaDelta's is the exception: lr = 1 is the seeds' (and
 * Zeiler's) rule, which has no learning rate (lr = 3 did a little better).
 * The last rows are the seeds' own forms of AdaGrad, RMSProp and Adam
 * (docs/rules/ explains each). */
enum { MAX_SET = 3 };
typedef struct run_config {
    optim_rule rule;
    double lr;
    int nset;
    optim_hparam ids[MAX_SET];
    double values[MAX_SET];
} run_config;

static const run_config runs[] = {
    {OPTIM_SGD, 0.3, 1, {OPTIM_HP_MOMENTUM}, {0.9}},
    {OPTIM_ADAGRAD, 0.3, 0, {0}, {0}},
    {OPTIM_RMSPROP, 0.01, 0, {0}, {0}},
    {OPTIM_ADADELTA, 1.0, 0, {0}, {0}},
    {OPTIM_ADAM, 0.03, 0, {0}, {0}},
    {OPTIM_ADAMW, 0.03, 0, {0}, {0}},
    {OPTIM_RADAM, 0.03, 0, {0}, {0}},
    {OPTIM_NADAM, 0.03, 0, {0}, {0}},
    {OPTIM_ADABOUND, 0.1, 0, {0}, {0}},
    /* The seeds' forms. */
    {OPTIM_ADAGRAD, 0.3, 1, {OPTIM_HP_EPS_PLACEMENT}, {OPTIM_EPS_INSIDE}},
    {OPTIM_RMSPROP, 0.03, 2, {OPTIM_HP_ALPHA, OPTIM_HP_EPS_PLACEMENT}, {0.9, OPTIM_EPS_INSIDE}},
    {OPTIM_ADAM, 0.01, 1, {OPTIM_HP_BIAS_CORRECTION}, {0}},
};
#define N_RUNS (sizeof runs / sizeof runs[0])

/* ---- Random numbers: splitmix64, so the data are the same everywhere ----- */

typedef struct rng {
    uint64_t state;
} rng;

static uint64_t rng_next(rng *r)
{
    uint64_t z = (r->state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Uniform in (0, 1): 53 random bits, never exactly 0 (Box-Muller takes a log). */
static double rng_uniform(rng *r)
{
    return ((double)(rng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static double rng_normal(rng *r)
{
    const double two_pi = 6.283185307179586;
    double u = rng_uniform(r), v = rng_uniform(r);
    return sqrt(-2.0 * log(u)) * cos(two_pi * v);
}

/* ---- Data: two interleaved spirals ------------------------------------------ */

typedef struct dataset {
    size_t n;
    float x[N_TRAIN > N_TEST ? N_TRAIN : N_TEST][N_IN];
    int y[N_TRAIN > N_TEST ? N_TRAIN : N_TEST];
} dataset;

/* Point i of n: class i % 2, at a uniformly random position along its arm,
 * plus Gaussian noise (so the classes overlap a little near the centre).
 * Arm c is the curve RADIUS s (cos(a(s) + c pi), sin(a(s) + c pi)) with
 * a(s) = 2 pi SPIRAL_TURNS s, for s uniform in [0.05, 1]. */
static void make_spirals(dataset *d, size_t n, rng *r)
{
    const double pi = 3.141592653589793;
    size_t i;
    d->n = n;
    for (i = 0; i < n; i++) {
        int c = (int)(i % 2);
        double s = 0.05 + 0.95 * rng_uniform(r);
        double a = 2.0 * pi * SPIRAL_TURNS * s + c * pi;
        d->x[i][0] = (float)(RADIUS * s * cos(a) + NOISE * rng_normal(r));
        d->x[i][1] = (float)(RADIUS * s * sin(a) + NOISE * rng_normal(r));
        d->y[i] = c;
    }
}

/* ---- The model -------------------------------------------------------------- */

/* Parameters (and, with the same layout, their gradients). Each array is one
 * optim parameter; W is stored row-major, out x in. */
typedef struct mlp {
    float w1[N_HID * N_IN], b1[N_HID];
    float w2[N_HID * N_HID], b2[N_HID];
    float w3[N_OUT * N_HID], b3[N_OUT];
} mlp;

/* The tensors of a model, in the order they are given to the optimizer. */
typedef struct tensor_list {
    float *data[6];
    size_t n[6];
    const char *name[6];
    int is_bias[6];
} tensor_list;

static tensor_list mlp_tensors(mlp *m)
{
    tensor_list t = {{m->w1, m->b1, m->w2, m->b2, m->w3, m->b3},
                     {N_HID * N_IN, N_HID, N_HID * N_HID, N_HID, N_OUT * N_HID, N_OUT},
                     {"w1", "b1", "w2", "b2", "w3", "b3"},
                     {0, 1, 0, 1, 0, 1}};
    return t;
}

/* Glorot-uniform weights, zero biases (the usual tanh initialisation). */
static void mlp_init(mlp *m, uint64_t seed)
{
    rng r = {seed};
    tensor_list t = mlp_tensors(m);
    static const size_t fan_in[6] = {N_IN, 0, N_HID, 0, N_HID, 0};
    static const size_t fan_out[6] = {N_HID, 0, N_HID, 0, N_OUT, 0};
    size_t k, i;
    for (k = 0; k < 6; k++) {
        double limit = t.is_bias[k] ? 0.0 : sqrt(6.0 / (double)(fan_in[k] + fan_out[k]));
        for (i = 0; i < t.n[k]; i++) t.data[k][i] = (float)(limit * (2.0 * rng_uniform(&r) - 1.0));
    }
}

/* Activations of one example, kept for the backward pass. */
typedef struct activations {
    float h1[N_HID], h2[N_HID];
    float prob[N_OUT];
} activations;

/* out[o] = b[o] + sum_i w[o][i] in[i]; accumulated in double for a loss
 * that does not depend on summation details. */
static void dense(const float *w, const float *b, const float *in, size_t n_in, float *out, size_t n_out)
{
    size_t o, i;
    for (o = 0; o < n_out; o++) {
        double s = b[o];
        for (i = 0; i < n_in; i++) s += (double)w[o * n_in + i] * in[i];
        out[o] = (float)s;
    }
}

/* Forward pass of one example; returns its cross-entropy loss. */
static double mlp_forward(const mlp *m, const float *x, int label, activations *a)
{
    float z[N_OUT];
    double zmax, sum = 0.0;
    size_t j;
    dense(m->w1, m->b1, x, N_IN, a->h1, N_HID);
    for (j = 0; j < N_HID; j++) a->h1[j] = tanhf(a->h1[j]);
    dense(m->w2, m->b2, a->h1, N_HID, a->h2, N_HID);
    for (j = 0; j < N_HID; j++) a->h2[j] = tanhf(a->h2[j]);
    dense(m->w3, m->b3, a->h2, N_HID, z, N_OUT);
    /* Softmax shifted by the largest logit, so exp never overflows. */
    zmax = z[0];
    for (j = 1; j < N_OUT; j++) zmax = z[j] > zmax ? z[j] : zmax;
    for (j = 0; j < N_OUT; j++) sum += exp(z[j] - zmax);
    for (j = 0; j < N_OUT; j++) a->prob[j] = (float)(exp(z[j] - zmax) / sum);
    return -(z[label] - zmax - log(sum));
}

static int argmax(const float *v, size_t n)
{
    size_t j, best = 0;
    for (j = 1; j < n; j++)
        if (v[j] > v[best]) best = j;
    return (int)best;
}

/* Add scale * d(loss)/d(parameters) of one example to *grad. */
static void mlp_backward(const mlp *m, const float *x, int label, const activations *a, float scale, mlp *grad)
{
    float d3[N_OUT], d2[N_HID], d1[N_HID];
    size_t o, i;
    /* Softmax cross-entropy: d loss / d logits = prob - onehot(label). */
    for (o = 0; o < N_OUT; o++) d3[o] = scale * (a->prob[o] - (o == (size_t)label ? 1.0f : 0.0f));
    for (i = 0; i < N_HID; i++) {
        float s = 0.0f;
        for (o = 0; o < N_OUT; o++) s += m->w3[o * N_HID + i] * d3[o];
        d2[i] = s * (1.0f - a->h2[i] * a->h2[i]); /* tanh' = 1 - tanh^2 */
    }
    for (i = 0; i < N_HID; i++) {
        float s = 0.0f;
        for (o = 0; o < N_HID; o++) s += m->w2[o * N_HID + i] * d2[o];
        d1[i] = s * (1.0f - a->h1[i] * a->h1[i]);
    }
    for (o = 0; o < N_OUT; o++) {
        grad->b3[o] += d3[o];
        for (i = 0; i < N_HID; i++) grad->w3[o * N_HID + i] += d3[o] * a->h2[i];
    }
    for (o = 0; o < N_HID; o++) {
        grad->b2[o] += d2[o];
        for (i = 0; i < N_HID; i++) grad->w2[o * N_HID + i] += d2[o] * a->h1[i];
    }
    for (o = 0; o < N_HID; o++) {
        grad->b1[o] += d1[o];
        for (i = 0; i < N_IN; i++) grad->w1[o * N_IN + i] += d1[o] * x[i];
    }
}

/* Mean loss and accuracy of the model over a data set. */
static void evaluate(const mlp *m, const dataset *d, double *loss, double *accuracy)
{
    activations a;
    double total = 0.0;
    size_t i, correct = 0;
    for (i = 0; i < d->n; i++) {
        total += mlp_forward(m, d->x[i], d->y[i], &a);
        correct += argmax(a.prob, N_OUT) == d->y[i];
    }
    *loss = total / (double)d->n;
    *accuracy = (double)correct / (double)d->n;
}

/* ---- Training with one rule ---------------------------------------------- */

static double seconds_now(void)
{
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct run_result {
    double early_loss; /* training loss after EARLY_EPOCH epochs */
    double train_loss, train_acc, test_acc;
    double seconds, step_seconds;
    int64_t steps;
} run_result;

/* Report a failed call and stop the run. */
#define CHECK(opt, call)                                                                  \
    do {                                                                                  \
        int rc_ = (call);                                                                 \
        if (rc_ != OPTIM_OK) {                                                            \
            fprintf(stderr, "train_mlp: %s failed: %s: %s\n", #call, optim_err_name(rc_), \
                    optim_errmsg(opt));                                                   \
            goto fail;                                                                    \
        }                                                                                 \
    } while (0)

/* "momentum 0.9, eps inside": the run's settings, from the ids it sets. */
static void describe_settings(const run_config *run, char *out, size_t size)
{
    int i;
    size_t len = 0;
    out[0] = '\0';
    if (run->nset == 0) snprintf(out, size, "defaults");
    for (i = 0; i < run->nset && len < size; i++) {
        const char *sep = i ? ", " : "";
        int w;
        if (run->ids[i] == OPTIM_HP_EPS_PLACEMENT)
            w = snprintf(out + len, size - len, "%seps %s", sep,
                         run->values[i] == OPTIM_EPS_INSIDE ? "inside sqrt" : "outside sqrt");
        else
            w = snprintf(out + len, size - len, "%s%s %g", sep, optim_hparam_name(run->ids[i]), run->values[i]);
        if (w < 0) break;
        len += (size_t)w;
    }
}

/* The optimizer for one run: two groups over the model's tensors, the
 * weights with the rule's defaults plus the run's settings, the biases the
 * same without weight decay. */
static optim *make_optimizer(const run_config *run, mlp *model, mlp *grad)
{
    optim *opt = NULL;
    optim_hparams weights, biases;
    optim_error err;
    tensor_list p = mlp_tensors(model), g = mlp_tensors(grad);
    size_t k;
    int rc = optim_create(&opt, run->rule);
    if (rc != OPTIM_OK) {
        fprintf(stderr, "train_mlp: optim_create(%s) failed: %s\n", optim_rule_name(run->rule), optim_strerror(rc));
        return NULL;
    }
    /* Start from torch.optim's defaults for the rule, then change fields. */
    rc = optim_hparams_init(&weights, run->rule, &err);
    if (rc != OPTIM_OK) {
        fprintf(stderr, "train_mlp: %s\n", err.message);
        goto fail;
    }
    weights.lr = run->lr;
    for (k = 0; k < (size_t)run->nset; k++) {
        rc = optim_hparams_set(&weights, run->ids[k], run->values[k], &err);
        if (rc != OPTIM_OK) {
            fprintf(stderr, "train_mlp: %s\n", err.message);
            goto fail;
        }
    }
    biases = weights;
    biases.weight_decay = 0.0;
    CHECK(opt, optim_add_group(opt, &weights, NULL)); /* group 0 */
    CHECK(opt, optim_add_group(opt, &biases, NULL));  /* group 1 */
    for (k = 0; k < 6; k++)
        CHECK(opt, optim_add_param(opt, p.is_bias[k] ? 1 : 0, p.data[k], g.data[k], p.n[k], p.name[k], NULL));
    return opt;
fail:
    optim_free(opt);
    return NULL;
}

static int train(const run_config *run, const dataset *train_set, const dataset *test_set, run_result *res)
{
    static mlp model, grad;
    size_t order[N_TRAIN];
    rng shuffle = {SHUFFLE_SEED};
    optim *opt;
    double t0, step_seconds = 0.0;
    size_t i, epoch;

    mlp_init(&model, INIT_SEED);
    opt = make_optimizer(run, &model, &grad);
    if (!opt) return 1;
    for (i = 0; i < train_set->n; i++) order[i] = i;

    t0 = seconds_now();
    for (epoch = 0; epoch < EPOCHS; epoch++) {
        size_t start;
        /* Fisher-Yates shuffle: every run draws the same order. */
        for (i = train_set->n - 1; i > 0; i--) {
            size_t j = (size_t)(rng_next(&shuffle) % (uint64_t)(i + 1)), tmp = order[i];
            order[i] = order[j];
            order[j] = tmp;
        }
        for (start = 0; start < train_set->n; start += BATCH) {
            size_t end = start + BATCH < train_set->n ? start + BATCH : train_set->n;
            float scale = 1.0f / (float)(end - start); /* mean loss over the batch */
            double ts;
            memset(&grad, 0, sizeof grad);
            for (i = start; i < end; i++) {
                activations a;
                size_t e = order[i];
                mlp_forward(&model, train_set->x[e], train_set->y[e], &a);
                mlp_backward(&model, train_set->x[e], train_set->y[e], &a, scale, &grad);
            }
            /* The optimizer holds pointers to model and grad: one call updates
             * every parameter of both groups in place. */
            ts = seconds_now();
            CHECK(opt, optim_step(opt));
            step_seconds += seconds_now() - ts;
        }
        if (epoch + 1 == EARLY_EPOCH) {
            double acc; /* evaluated outside the timed work: it is not training */
            double te = seconds_now();
            evaluate(&model, train_set, &res->early_loss, &acc);
            t0 += seconds_now() - te;
        }
    }
    res->seconds = seconds_now() - t0;
    res->step_seconds = step_seconds;
    res->steps = optim_step_count(opt);
    evaluate(&model, train_set, &res->train_loss, &res->train_acc);
    {
        double test_loss;
        evaluate(&model, test_set, &test_loss, &res->test_acc);
    }
    optim_free(opt);
    return 0;
fail:
    optim_free(opt);
    return 1;
}

int main(void)
{
    static dataset train_set, test_set;
    rng data = {DATA_SEED};
    size_t r;
    int64_t steps = 0;
    double total = 0.0;

    make_spirals(&train_set, N_TRAIN, &data);
    make_spirals(&test_set, N_TEST, &data);

    printf("optim %s, CPU path %s: a %d-%d-%d-%d tanh MLP on two interleaved spirals\n", optim_version_string(),
           optim_isa_name(optim_isa_default()), N_IN, N_HID, N_HID, N_OUT);
    printf("%d train and %d test points (%.1f turn, radius %.0f, noise %.2f, data seed %llu); batches of %d,\n"
           "%d epochs; every rule starts from the same weights and sees the same batches.\n\n",
           N_TRAIN, N_TEST, SPIRAL_TURNS, RADIUS, NOISE, (unsigned long long)DATA_SEED, BATCH, EPOCHS);
    printf("%-9s %6s %9s %10s %9s %8s %7s %7s  %s\n", "rule", "lr", "loss ep5", "train loss", "train acc",
           "test acc", "time ms", "step ms", "settings (beyond torch.optim's defaults)");
    for (r = 0; r < N_RUNS; r++) {
        run_result res;
        char settings[160];
        if (train(&runs[r], &train_set, &test_set, &res) != 0) return 1;
        describe_settings(&runs[r], settings, sizeof settings);
        total += res.seconds;
        steps = res.steps;
        printf("%-9s %6g %9.4f %10.4f %8.1f%% %7.1f%% %7.0f %7.1f  %s\n", optim_rule_name(runs[r].rule), runs[r].lr,
               res.early_loss, res.train_loss, 100.0 * res.train_acc, 100.0 * res.test_acc, 1e3 * res.seconds,
               1e3 * res.step_seconds, settings);
    }
    printf("\nloss ep5: training loss after %d epochs; train loss and accuracies: after the last epoch.\n"
           "%lld optimizer steps per rule. time: the whole training (forward, backward, step); step: optim_step "
           "alone.\nTotal training time %.1f s.\n",
           EARLY_EPOCH, (long long)steps, total);
    return 0;
}
