/* lab_mlp.c: a ReLU MLP with softmax cross-entropy (matrix products through
 * OpenBLAS), stored in float32 or bfloat16, and one training run of it with
 * an optimizer of the library, optionally wrapped in SAM, driven by a
 * learning-rate schedule, or with reduced-precision storage (lab_prec_mode). */
#include "lab.h"
#include "optim_precision.h"
#include "optim_sam.h"
#include "optim_schedule.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static float *falloc(size_t n) { return (float *)lab_xcalloc(n, sizeof(float)); }

void lab_mlp_init(lab_mlp *m, int nlayers, const size_t *dims, size_t max_batch)
{
    int l;
    size_t widest = 0;
    memset(m, 0, sizeof *m);
    m->nlayers = nlayers;
    m->max_batch = max_batch;
    for (l = 0; l <= nlayers; l++) {
        m->dims[l] = dims[l];
        if (dims[l] > widest) widest = dims[l];
        m->act[l] = falloc(max_batch * dims[l]);
    }
    for (l = 0; l < nlayers; l++) {
        m->w[l] = falloc(dims[l + 1] * dims[l]);
        m->gw[l] = falloc(dims[l + 1] * dims[l]);
        m->b[l] = falloc(dims[l + 1]);
        m->gb[l] = falloc(dims[l + 1]);
    }
    m->delta[0] = falloc(max_batch * widest);
    m->delta[1] = falloc(max_batch * widest);
}

void lab_mlp_free(lab_mlp *m)
{
    int l;
    for (l = 0; l <= m->nlayers; l++) free(m->act[l]);
    for (l = 0; l < m->nlayers; l++) {
        free(m->w[l]);
        free(m->gw[l]);
        free(m->b[l]);
        free(m->gb[l]);
    }
    free(m->delta[0]);
    free(m->delta[1]);
    for (l = 0; l < LAB_MLP_MAX_LAYERS; l++) {
        free(m->w16[l]);
        free(m->b16[l]);
        free(m->gw16[l]);
        free(m->gb16[l]);
    }
    memset(m, 0, sizeof *m);
}

/* ---- bfloat16 storage ------------------------------------------------------------ */

float lab_bf16_to_float(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

uint16_t lab_float_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* NaN: quiet, sign kept */
    /* Round to nearest, ties to even: add 0x7fff plus the lowest kept bit. */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static uint16_t *halloc(size_t n) { return (uint16_t *)lab_xcalloc(n ? n : 1, sizeof(uint16_t)); }

/* The bfloat16 weights, widened exactly, into the float arrays the matrix
 * products read. */
static void widen_weights(lab_mlp *m)
{
    int l;
    size_t i;
    for (l = 0; l < m->nlayers; l++) {
        size_t nw = m->dims[l + 1] * m->dims[l], nb = m->dims[l + 1];
        for (i = 0; i < nw; i++) m->w[l][i] = lab_bf16_to_float(m->w16[l][i]);
        for (i = 0; i < nb; i++) m->b[l][i] = lab_bf16_to_float(m->b16[l][i]);
    }
}

void lab_mlp_use_bf16(lab_mlp *m)
{
    int l;
    size_t i;
    if (m->bf16) return;
    for (l = 0; l < m->nlayers; l++) {
        size_t nw = m->dims[l + 1] * m->dims[l], nb = m->dims[l + 1];
        m->w16[l] = halloc(nw);
        m->b16[l] = halloc(nb);
        m->gw16[l] = halloc(nw);
        m->gb16[l] = halloc(nb);
        for (i = 0; i < nw; i++) m->w16[l][i] = lab_float_to_bf16(m->w[l][i]);
        for (i = 0; i < nb; i++) m->b16[l][i] = lab_float_to_bf16(m->b[l][i]);
    }
    m->bf16 = 1;
    widen_weights(m);
}

void lab_mlp_reset(lab_mlp *m, lab_rng *rng)
{
    int l;
    size_t i;
    for (l = 0; l < m->nlayers; l++) {
        /* torch.nn.Linear: kaiming_uniform(a = sqrt(5)) for W and the same
         * bound for b, i.e. uniform in +-1/sqrt(fan_in). */
        double bound = 1.0 / sqrt((double)m->dims[l]);
        for (i = 0; i < m->dims[l + 1] * m->dims[l]; i++) m->w[l][i] = (float)((2 * lab_rng_uniform(rng) - 1) * bound);
        for (i = 0; i < m->dims[l + 1]; i++) m->b[l][i] = (float)((2 * lab_rng_uniform(rng) - 1) * bound);
    }
}

double lab_mlp_batch(lab_mlp *m, size_t n, const unsigned char *labels, int grads, size_t *correct)
{
    int l, L = m->nlayers;
    size_t i, j, classes = m->dims[L], ok = 0;
    double loss = 0;
    float *dz, *da;
    /* A bfloat16 model computes with the weights it stores (the optimizer
     * wrote them since the last batch). */
    if (m->bf16) widen_weights(m);
    /* Forward: act[l+1] = relu(act[l] W_l^T + b_l), no relu on the logits. */
    for (l = 0; l < L; l++) {
        size_t din = m->dims[l], dout = m->dims[l + 1];
        float *out = m->act[l + 1];
        for (i = 0; i < n; i++) memcpy(out + i * dout, m->b[l], dout * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)dout, (int)din, 1.0f, m->act[l], (int)din,
                    m->w[l], (int)din, 1.0f, out, (int)dout);
        if (l < L - 1)
            for (i = 0; i < n * dout; i++) out[i] = out[i] > 0 ? out[i] : 0;
    }
    /* Softmax cross-entropy, in place of the logits when gradients are
     * wanted: dz = (softmax - onehot) / n. */
    dz = m->delta[0];
    for (i = 0; i < n; i++) {
        const float *z = m->act[L] + i * classes;
        float zmax = z[0];
        double sum = 0;
        size_t arg = 0;
        for (j = 1; j < classes; j++)
            if (z[j] > zmax) {
                zmax = z[j];
                arg = j;
            }
        for (j = 0; j < classes; j++) sum += exp((double)(z[j] - zmax));
        loss += log(sum) - (double)(z[labels[i]] - zmax);
        ok += arg == labels[i];
        if (grads)
            for (j = 0; j < classes; j++)
                dz[i * classes + j] =
                    (float)((exp((double)(z[j] - zmax)) / sum - (j == labels[i] ? 1.0 : 0.0)) / (double)n);
    }
    if (correct) *correct = ok;
    if (!grads) return loss / (double)n;
    /* Backward. */
    for (l = L - 1; l >= 0; l--) {
        size_t din = m->dims[l], dout = m->dims[l + 1];
        /* gW = dz^T act[l];  gb = column sums of dz. */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)dout, (int)din, (int)n, 1.0f, dz, (int)dout,
                    m->act[l], (int)din, 0.0f, m->gw[l], (int)din);
        for (j = 0; j < dout; j++) m->gb[l][j] = 0;
        for (i = 0; i < n; i++)
            for (j = 0; j < dout; j++) m->gb[l][j] += dz[i * dout + j];
        if (m->bf16) {
            /* The gradients the optimizer reads: bfloat16, rounded to nearest. */
            for (i = 0; i < dout * din; i++) m->gw16[l][i] = lab_float_to_bf16(m->gw[l][i]);
            for (j = 0; j < dout; j++) m->gb16[l][j] = lab_float_to_bf16(m->gb[l][j]);
        }
        if (l == 0) break;
        /* da = dz W, then through the ReLU of layer l-1's output. */
        da = dz == m->delta[0] ? m->delta[1] : m->delta[0];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)din, (int)dout, 1.0f, dz, (int)dout,
                    m->w[l], (int)din, 0.0f, da, (int)din);
        for (i = 0; i < n * din; i++)
            if (!(m->act[l][i] > 0)) da[i] = 0;
        dz = da;
    }
    return loss / (double)n;
}

/* ---- Data into the input buffer -------------------------------------------------- */

void lab_load_batch(const lab_dataset *d, const unsigned char *x, const size_t *idx, size_t n, float *out)
{
    size_t i, j, dim = d->dim;
    float scale = (float)(1.0 / d->scale), mean = d->mean, inv = 1.0f / d->std;
    for (i = 0; i < n; i++) {
        const unsigned char *row = x + idx[i] * dim;
        for (j = 0; j < dim; j++) out[i * dim + j] = ((float)row[j] * scale - mean) * inv;
    }
}

void lab_mlp_shape(const lab_ctx *ctx, int *nlayers, size_t dims[LAB_MLP_MAX_LAYERS + 1], size_t *batch)
{
    const lab_dataset *d = ctx->data;
    *nlayers = 2;
    dims[0] = d->dim;
    dims[1] = 256;
    dims[2] = d->classes;
    *batch = strcmp(d->name, "digits") == 0 ? 32 : 128;
}

void lab_mlp_evaluate(lab_mlp *m, const lab_dataset *d, const unsigned char *x, const unsigned char *y, size_t first,
                      size_t count, size_t *idx, double *loss, double *acc)
{
    size_t start, total_ok = 0, i;
    double total = 0;
    for (start = 0; start < count; start += m->max_batch) {
        size_t n = count - start < m->max_batch ? count - start : m->max_batch, ok;
        for (i = 0; i < n; i++) idx[i] = first + start + i;
        lab_load_batch(d, x, idx, n, m->act[0]);
        total += lab_mlp_batch(m, n, y + first + start, 0, &ok) * (double)n;
        total_ok += ok;
    }
    *loss = total / (double)count;
    *acc = (double)total_ok / (double)count;
}

/* Mean loss and accuracy on the test split. */
static void evaluate(lab_mlp *m, const lab_dataset *d, size_t *idx, double *loss, double *acc)
{
    lab_mlp_evaluate(m, d, d->xtest, d->ytest, 0, d->ntest, idx, loss, acc);
}

void lab_epoch_order(size_t *order, size_t n, uint64_t seed, int epoch)
{
    lab_rng order_rng;
    size_t i;
    lab_rng_init(&order_rng, seed, 0x0dde0000u + (uint64_t)epoch);
    for (i = 0; i < n; i++) order[i] = i;
    for (i = n - 1; n > 0 && i > 0; i--) {
        size_t j = lab_rng_below(&order_rng, i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

/* ---- Reusing finished runs across experiments --------------------------------------- */

typedef struct cache_entry {
    char *key;
    lab_train_result res;
    struct cache_entry *next;
} cache_entry;

struct lab_mlp_cache {
    cache_entry *head;
};

/* A mode that stores everything in float32, as lab_train does. */
static int all_fp32(const lab_prec_mode *mode)
{
    return !mode || (mode->param == OPTIM_FLOAT32 && mode->grad == OPTIM_FLOAT32 && mode->state == OPTIM_FLOAT32 &&
                     mode->flags == 0);
}

/* Everything that determines a run, as text. */
static char *run_key(const lab_ctx *ctx, const lab_optimizer *o, const optim_hparams *hp, const lab_prec_mode *mode,
                     int epochs, uint64_t seed)
{
    char buf[2048];
    size_t len = 0;
    int id;
    len += (size_t)snprintf(buf + len, sizeof buf - len, "%s|%s|%zu|%d|%llu|sam%d:%g", ctx->data->name, o->name,
                            ctx->data->ntrain, epochs, (unsigned long long)seed, o->sam, o->rho);
    /* The float32 mode is lab_train's run (fashion-mnist's Adam is precision's fp32 run with the first seed). */
    if (!all_fp32(mode))
        len += (size_t)snprintf(buf + len, sizeof buf - len, "|storage:%d,%d,%d,%u", (int)mode->param,
                                (int)mode->grad, (int)mode->state, mode->flags);
    for (id = 1; id <= OPTIM_HP_COUNT && len < sizeof buf - 40; id++) {
        double v;
        if (optim_hparams_get(hp, (optim_hparam)id, &v, NULL) == OPTIM_OK)
            len += (size_t)snprintf(buf + len, sizeof buf - len, "|%d=%.17g", id, v);
    }
    return lab_xstrdup(buf);
}

static void copy_result(lab_train_result *dst, const lab_train_result *src)
{
    size_t e = (size_t)src->epochs, s = (size_t)src->nsteps_logged;
    *dst = *src;
    dst->train_loss = (double *)lab_xmalloc(sizeof(double) * e);
    dst->test_loss = (double *)lab_xmalloc(sizeof(double) * e);
    dst->test_acc = (double *)lab_xmalloc(sizeof(double) * e);
    dst->epoch_seconds = (double *)lab_xmalloc(sizeof(double) * e);
    dst->step_loss = (double *)lab_xmalloc(sizeof(double) * (s ? s : 1));
    memcpy(dst->train_loss, src->train_loss, sizeof(double) * e);
    memcpy(dst->test_loss, src->test_loss, sizeof(double) * e);
    memcpy(dst->test_acc, src->test_acc, sizeof(double) * e);
    memcpy(dst->epoch_seconds, src->epoch_seconds, sizeof(double) * e);
    memcpy(dst->step_loss, src->step_loss, sizeof(double) * s);
}

void lab_mlp_cache_free(struct lab_mlp_cache *cache)
{
    cache_entry *c, *next;
    if (!cache) return;
    for (c = cache->head; c; c = next) {
        next = c->next;
        free(c->key);
        lab_train_result_free(&c->res);
        free(c);
    }
    free(cache);
}

void lab_train_result_init(lab_train_result *res, int epochs, long total_steps, int log_every)
{
    int e;
    memset(res, 0, sizeof *res);
    res->epochs = epochs;
    res->train_loss = (double *)lab_xmalloc(sizeof(double) * (size_t)epochs);
    res->test_loss = (double *)lab_xmalloc(sizeof(double) * (size_t)epochs);
    res->test_acc = (double *)lab_xmalloc(sizeof(double) * (size_t)epochs);
    res->epoch_seconds = (double *)lab_xmalloc(sizeof(double) * (size_t)epochs);
    res->log_every = log_every;
    res->step_loss = (double *)lab_xmalloc(sizeof(double) * (size_t)(total_steps / log_every + 1));
    for (e = 0; e < epochs; e++)
        res->train_loss[e] = res->test_loss[e] = res->test_acc[e] = res->epoch_seconds[e] = NAN;
}

void lab_train_result_free(lab_train_result *r)
{
    free(r->train_loss);
    free(r->test_loss);
    free(r->test_acc);
    free(r->epoch_seconds);
    free(r->step_loss);
    memset(r, 0, sizeof *r);
}

/* ---- Training ------------------------------------------------------------------------ */

void lab_train(lab_ctx *ctx, const lab_optimizer *o, const optim_hparams *hp, const struct optim_schedule *sched,
               int epochs, uint64_t seed, const char *label, lab_train_result *res)
{
    lab_train_ex(ctx, o, hp, sched, NULL, epochs, seed, label, res);
}

/* What the optimizer holds, read back from the library (not from the mode
 * asked for), and whether the weights the last forward pass read are all
 * bfloat16 values. */
static void storage_facts(optim *opt, const lab_mlp *m, lab_storage_facts *f)
{
    size_t i, np = optim_param_count(opt), elems = 0, master = 0;
    int l;
    memset(f, 0, sizeof *f);
    for (i = 0; i < np; i++) {
        optim_dtype pd, gd, sd;
        unsigned flags;
        optim_param_info info;
        size_t n;
        lab_check(optim_param_get_dtypes(opt, i, &pd, &gd, &sd), "optim_param_get_dtypes", optim_errmsg(opt));
        lab_check(optim_param_get_flags(opt, i, &flags), "optim_param_get_flags", optim_errmsg(opt));
        lab_check(optim_param_get_info(opt, i, &info), "optim_param_get_info", optim_errmsg(opt));
        n = info.n;
        if (i == 0) {
            f->param = pd;
            f->grad = gd;
            f->state = sd;
            f->flags = flags;
        } else {
            if (f->param != pd) f->param = (optim_dtype)-1;
            if (f->grad != gd) f->grad = (optim_dtype)-1;
            if (f->state != sd) f->state = (optim_dtype)-1;
            if (f->flags != flags) f->flags = ~0u;
        }
        elems += n;
        if (flags & OPTIM_PARAM_MASTER) master += n * sizeof(float);
        f->param_bytes_per_param += (double)(n * optim_dtype_size(pd));
        f->grad_bytes_per_param += (double)(n * optim_dtype_size(gd));
    }
    f->params = elems;
    if (elems) {
        f->state_bytes_per_param = (double)optim_state_bytes(opt) / (double)elems;
        f->master_bytes_per_param = (double)master / (double)elems;
        f->param_bytes_per_param /= (double)elems;
        f->grad_bytes_per_param /= (double)elems;
    }
    for (l = 0; l < m->nlayers; l++) {
        size_t nw = m->dims[l + 1] * m->dims[l], nb = m->dims[l + 1], k;
        uint32_t u;
        for (k = 0; k < nw + nb; k++) {
            memcpy(&u, k < nw ? &m->w[l][k] : &m->b[l][k - nw], sizeof u);
            f->weights_not_bf16 += (u & 0xffffu) != 0;
        }
    }
}

void lab_train_ex(lab_ctx *ctx, const lab_optimizer *o, const optim_hparams *hp, const struct optim_schedule *sched,
                  const lab_prec_mode *mode, int epochs, uint64_t seed, const char *label, lab_train_result *res)
{
    const lab_dataset *d = ctx->data;
    lab_mlp m;
    lab_rng rng;
    optim *opt = NULL;
    optim_sam *sam = NULL;
    optim_error err;
    size_t dims[LAB_MLP_MAX_LAYERS + 1], batch, steps_per_epoch, *order, *idx, i;
    int nlayers, l, e, log_every;
    long step = 0, total_steps;
    double block_loss = 0;
    int block_n = 0;
    lab_progress prog;
    char *key = NULL;
    cache_entry *c;

    /* A run identical to one already made (same data, optimizer, settings
     * and seed) is taken from the cache: the adadelta-momentum experiment
     * shares its AdaDelta and Adam runs with fashion-mnist. */
    if (!ctx->mlp_cache) ctx->mlp_cache = (struct lab_mlp_cache *)lab_xcalloc(1, sizeof *ctx->mlp_cache);
    if (mode && !((mode->param == OPTIM_FLOAT32 && mode->grad == OPTIM_FLOAT32) ||
                  (mode->param == OPTIM_BFLOAT16 && mode->grad == OPTIM_BFLOAT16))) {
        fprintf(stderr, "optim lab: storage mode %s: the lab's MLP stores weights and gradients as both float32 or "
                        "both bfloat16\n", mode->name);
        exit(1);
    }
    if (o->sam && !all_fp32(mode)) {
        fprintf(stderr, "optim lab: SAM runs in float32 only (storage mode %s)\n", mode->name);
        exit(1);
    }
    if (!sched) {
        key = run_key(ctx, o, hp, mode, epochs, seed);
        for (c = ctx->mlp_cache->head; c; c = c->next)
            if (strcmp(c->key, key) == 0) {
                copy_result(res, &c->res);
                fprintf(stderr, "  %-30s (same run as before, reused: test acc %.4f)\n", label,
                        res->test_acc[res->epochs - 1]);
                free(key);
                return;
            }
    }

    lab_mlp_shape(ctx, &nlayers, dims, &batch);
    lab_mlp_init(&m, nlayers, dims, batch);
    lab_rng_init(&rng, seed, 0x1417);
    lab_mlp_reset(&m, &rng);
    if (mode && mode->param == OPTIM_BFLOAT16) lab_mlp_use_bf16(&m);
    steps_per_epoch = (d->ntrain + batch - 1) / batch;
    total_steps = (long)steps_per_epoch * epochs;
    log_every = steps_per_epoch >= 100 ? 20 : 1;

    lab_train_result_init(res, epochs, total_steps, log_every);

    lab_check(optim_create(&opt, hp->rule), "optim_create", NULL);
    lab_check(optim_add_group(opt, hp, NULL), "optim_add_group", optim_errmsg(opt));
    for (l = 0; l < nlayers; l++) {
        char name[32];
        snprintf(name, sizeof name, "layer%d.weight", l);
        if (mode && m.bf16) {
            /* A bfloat16 model: the optimizer updates the weights the forward pass reads. */
            lab_check(optim_add_param_ex(opt, 0, m.w16[l], mode->param, m.gw16[l], mode->grad, dims[l + 1] * dims[l],
                                         mode->state, mode->flags, name, NULL),
                      "optim_add_param_ex", optim_errmsg(opt));
            snprintf(name, sizeof name, "layer%d.bias", l);
            lab_check(optim_add_param_ex(opt, 0, m.b16[l], mode->param, m.gb16[l], mode->grad, dims[l + 1],
                                         mode->state, mode->flags, name, NULL),
                      "optim_add_param_ex", optim_errmsg(opt));
        } else if (mode) {
            lab_check(optim_add_param_ex(opt, 0, m.w[l], mode->param, m.gw[l], mode->grad, dims[l + 1] * dims[l],
                                         mode->state, mode->flags, name, NULL),
                      "optim_add_param_ex", optim_errmsg(opt));
            snprintf(name, sizeof name, "layer%d.bias", l);
            lab_check(optim_add_param_ex(opt, 0, m.b[l], mode->param, m.gb[l], mode->grad, dims[l + 1], mode->state,
                                         mode->flags, name, NULL),
                      "optim_add_param_ex", optim_errmsg(opt));
        } else {
            lab_check(optim_add_param(opt, 0, m.w[l], m.gw[l], dims[l + 1] * dims[l], name, NULL), "optim_add_param",
                      optim_errmsg(opt));
            snprintf(name, sizeof name, "layer%d.bias", l);
            lab_check(optim_add_param(opt, 0, m.b[l], m.gb[l], dims[l + 1], name, NULL), "optim_add_param",
                      optim_errmsg(opt));
        }
    }
    /* Stochastic rounding's stream: one per seed, so the seeds differ in it too. */
    lab_check(optim_set_seed(opt, seed), "optim_set_seed", optim_errmsg(opt));
    /* OpenBLAS uses the cores for the matrix products; the optimizer step
     * (a few hundred thousand floats) runs on the calling thread, so the two
     * thread pools never compete for the 2 cores. */
    lab_check(optim_set_threads(opt, 1), "optim_set_threads", optim_errmsg(opt));
    if (sched) lab_check(optim_group_set_schedule(opt, 0, sched), "optim_group_set_schedule", optim_errmsg(opt));
    if (o->sam) lab_check(optim_sam_create(&sam, opt, o->rho, 2.0, 0, 0.0, &err), "optim_sam_create", err.message);

    order = (size_t *)lab_xmalloc(d->ntrain * sizeof *order);
    idx = (size_t *)lab_xmalloc(batch * sizeof *idx);
    lab_progress_start(&prog, label, total_steps, "step", (int)steps_per_epoch);
    for (e = 0; e < epochs && !res->diverged; e++) {
        double t0 = lab_now(), sum = 0;
        size_t start, seen = 0;
        /* The data order depends on (seed, epoch) only: every optimizer sees
         * the same batches. */
        snprintf(prog.stage, sizeof prog.stage, "epoch %d/%d", e + 1, epochs);
        lab_epoch_order(order, d->ntrain, seed, e);
        for (start = 0; start < d->ntrain; start += batch) {
            size_t n = d->ntrain - start < batch ? d->ntrain - start : batch;
            unsigned char labels[1024];
            double loss;
            for (i = 0; i < n; i++) labels[i] = d->ytrain[order[start + i]];
            lab_load_batch(d, d->xtrain, order + start, n, m.act[0]);
            loss = lab_mlp_batch(&m, n, labels, 1, NULL);
            if (!isfinite(loss)) {
                res->diverged = 1;
                break;
            }
            if (sam) {
                lab_check(optim_sam_first_step(sam), "optim_sam_first_step", optim_sam_errmsg(sam));
                lab_mlp_batch(&m, n, labels, 1, NULL);
                lab_check(optim_sam_second_step(sam), "optim_sam_second_step", optim_sam_errmsg(sam));
            } else {
                lab_check(optim_step(opt), "optim_step", optim_errmsg(opt));
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
        evaluate(&m, d, idx, &res->test_loss[e], &res->test_acc[e]);
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
    storage_facts(opt, &m, &res->storage);
    free(order);
    free(idx);
    optim_sam_free(sam);
    optim_free(opt);
    lab_mlp_free(&m);
    if (key) {
        c = (cache_entry *)lab_xcalloc(1, sizeof *c);
        c->key = key;
        copy_result(&c->res, res);
        c->next = ctx->mlp_cache->head;
        ctx->mlp_cache->head = c;
    }
}

int lab_need_data(lab_ctx *ctx)
{
    char msg[2048] = "";
    if (ctx->data) return 0;
    ctx->data = lab_dataset_load(ctx->opt.data_dir, ctx->opt.dataset, 0, msg, sizeof msg);
    if (!ctx->data) {
        fprintf(stderr, "optim lab: %s\n", msg);
        return -1;
    }
    if (msg[0]) fprintf(stderr, "optim lab: %s\n", msg);
    if (ctx->opt.quick) {
        /* Small subsets: enough for above-chance accuracy in a second. */
        lab_dataset *d = ctx->data;
        if (d->ntrain > 3000) d->ntrain = 3000;
        if (d->ntest > 1000) d->ntest = 1000;
    }
    return 0;
}
