/* lab_util.c: memory, time, random numbers, progress bars and the table of
 * optimizers the lab knows. */
#define _POSIX_C_SOURCE 200809L
#include "lab.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- Memory ---------------------------------------------------------------- */

static void out_of_memory(size_t n)
{
    fprintf(stderr, "\noptim lab: out of memory (allocating %zu bytes)\n", n);
    exit(1);
}

void *lab_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) out_of_memory(n);
    return p;
}

void *lab_xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) out_of_memory(count * size);
    return p;
}

char *lab_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = (char *)lab_xmalloc(n);
    memcpy(d, s, n);
    return d;
}

char *lab_sprintf(const char *fmt, ...)
{
    va_list ap;
    int n;
    char *s;
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    s = (char *)lab_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

double lab_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- Random numbers ---------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void lab_rng_init(lab_rng *r, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed ^ (0xd1b54a32d192ed03ull * (stream + 1));
    int i;
    for (i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
    r->have_spare = 0;
    r->spare = 0;
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t lab_rng_u64(lab_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double lab_rng_uniform(lab_rng *r) { return (double)(lab_rng_u64(r) >> 11) * 0x1.0p-53; }

double lab_rng_normal(lab_rng *r)
{
    double u, v, rad;
    if (r->have_spare) {
        r->have_spare = 0;
        return r->spare;
    }
    do u = lab_rng_uniform(r);
    while (u <= 0.0);
    v = lab_rng_uniform(r);
    rad = sqrt(-2.0 * log(u));
    r->spare = rad * sin(2.0 * LAB_PI * v);
    r->have_spare = 1;
    return rad * cos(2.0 * LAB_PI * v);
}

size_t lab_rng_below(lab_rng *r, size_t n)
{
    /* Lemire's multiply-shift; the tiny bias for huge n does not matter here. */
    return (size_t)(((unsigned __int128)lab_rng_u64(r) * n) >> 64);
}

/* ---- Progress ---------------------------------------------------------------- */

static void format_eta(double s, char *buf, size_t n)
{
    if (!(s >= 0) || s > 360000)
        snprintf(buf, n, "--");
    else if (s < 60)
        snprintf(buf, n, "%.0fs", s);
    else
        snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
}

/* Ranks other than 0 of a distributed run stay silent (lab_set_quiet). */
static int lab_quiet;

void lab_set_quiet(int quiet)
{
    lab_quiet = quiet;
}

void lab_progress_start(lab_progress *p, const char *label, long total, const char *unit, int line_every)
{
    snprintf(p->label, sizeof p->label, "%s", label);
    p->unit = unit;
    p->total = total > 0 ? total : 1;
    p->done = 0;
    p->t0 = lab_now();
    p->last_draw = 0;
    p->tty = isatty(STDERR_FILENO);
    p->line_every = line_every;
    p->last_line = 0;
    p->stage[0] = '\0';
    if (p->tty) lab_progress_update(p, 0, NAN);
}

static void draw(lab_progress *p, double loss, const char *end)
{
    char bar[25], eta[32], lossbuf[32] = "";
    if (lab_quiet) return;
    double frac = (double)p->done / (double)p->total, el = lab_now() - p->t0;
    int i, fill = (int)(frac * 24 + 0.5);
    for (i = 0; i < 24; i++) bar[i] = i < fill ? '#' : '.';
    bar[24] = '\0';
    if (p->done == 0)
        format_eta(-1, eta, sizeof eta); /* nothing to extrapolate from yet */
    else if (p->done < p->total)
        format_eta(el / frac - el, eta, sizeof eta);
    else
        format_eta(el, eta, sizeof eta);
    if (isfinite(loss)) snprintf(lossbuf, sizeof lossbuf, "loss %-9.4g", loss);
    fprintf(stderr, "%s  %-30s [%s] %3.0f%%  %s%s%s %ld/%ld  %s %s %s%s", p->tty ? "\r" : "", p->label, bar,
            100 * frac, p->stage, p->stage[0] ? ", " : "", p->unit, p->done, p->total, lossbuf,
            p->done < p->total ? "ETA" : "in", eta, end);
    fflush(stderr);
}

void lab_progress_update(lab_progress *p, long done, double loss)
{
    double now = lab_now();
    p->done = done;
    if (p->tty) {
        if (now - p->last_draw < 0.1 && done < p->total) return;
        p->last_draw = now;
        draw(p, loss, "\033[K");
    } else if (p->line_every > 0 && done - p->last_line >= p->line_every && done < p->total) {
        p->last_line = done;
        draw(p, loss, "\n");
    }
}

void lab_progress_end(lab_progress *p, const char *note)
{
    char end[160];
    p->done = p->total;
    snprintf(end, sizeof end, "  %s%s\n", note ? note : "", p->tty ? "\033[K" : "");
    draw(p, NAN, end);
}

/* ---- Optimizers ---------------------------------------------------------------- */

const lab_optimizer lab_optimizers[] = {
    {"sgd", "SGD", OPTIM_SGD, 0, 0, 0},
    {"momentum", "SGD+momentum", OPTIM_SGD, 0.9, 0, 0},
    {"adagrad", "AdaGrad", OPTIM_ADAGRAD, 0, 0, 0},
    {"rmsprop", "RMSProp", OPTIM_RMSPROP, 0, 0, 0},
    {"adadelta", "AdaDelta", OPTIM_ADADELTA, 0, 0, 0},
    {"adam", "Adam", OPTIM_ADAM, 0, 0, 0},
    {"adamw", "AdamW", OPTIM_ADAMW, 0, 0, 0},
    {"radam", "RAdam", OPTIM_RADAM, 0, 0, 0},
    {"nadam", "NAdam", OPTIM_NADAM, 0, 0, 0},
    {"adabound", "AdaBound", OPTIM_ADABOUND, 0, 0, 0},
    /* SAM around SGD+momentum (rho 0.05, the SAM paper's default), so that
     * "sam" against "momentum" isolates what SAM adds. */
    {"sam", "SAM (SGD+momentum)", OPTIM_SGD, 0.9, 1, 0.05},
    {"adadelta-momentum", "AdaDelta+momentum", OPTIM_ADADELTA, 0.9, 0, 0},
    {"rmsprop-momentum", "RMSProp+momentum", OPTIM_RMSPROP, 0.9, 0, 0},
};
const size_t lab_optimizer_count = sizeof lab_optimizers / sizeof lab_optimizers[0];

const lab_optimizer *lab_optimizer_find(const char *name)
{
    size_t i;
    for (i = 0; i < lab_optimizer_count; i++)
        if (strcmp(lab_optimizers[i].name, name) == 0) return &lab_optimizers[i];
    return NULL;
}

void lab_check(int rc, const char *what, const char *detail)
{
    if (rc == OPTIM_OK) return;
    fprintf(stderr, "\noptim lab: %s failed: %s (%s)\n", what, detail && *detail ? detail : optim_strerror(rc),
            optim_err_name(rc));
    exit(1);
}

optim_hparams lab_optimizer_hparams(const lab_optimizer *o, double lr)
{
    optim_hparams hp;
    optim_error err;
    lab_check(optim_hparams_init(&hp, o->rule, &err), "optim_hparams_init", err.message);
    /* AdaBound's bounds converge to final_lr * lr / initial_lr: pinning
     * initial_lr to the default lr keeps final_lr / lr at its default ratio
     * (0.1 / 1e-3) when the lab changes lr, as a scheduler would. */
    if (o->rule == OPTIM_ADABOUND) hp.initial_lr = hp.lr;
    hp.lr = lr;
    if (o->momentum > 0) hp.momentum = o->momentum;
    lab_check(optim_hparams_check(&hp, &err), "optim_hparams_check", err.message);
    return hp;
}

lab_json *lab_new_table(lab_ctx *ctx, const char *name, const char *title, const char *const *cols, size_t ncols)
{
    lab_json *tables = lab_json_get(ctx->exp, "tables"), *t, *c;
    size_t i;
    if (!tables) tables = lab_json_put(ctx->exp, "tables", lab_json_object());
    t = lab_json_put(tables, name, lab_json_object());
    lab_json_set_str(t, "title", title);
    c = lab_json_put(t, "columns", lab_json_array());
    for (i = 0; i < ncols; i++) lab_json_push(c, lab_json_str(cols[i]));
    lab_json_put(t, "rows", lab_json_array());
    return t;
}

/* ---- Optimizers over a model's tensors ------------------------------------------ */

optim *lab_opt_create(const optim_hparams *hp, const lab_tensor *t, size_t n, int vectors_no_decay)
{
    optim *opt = NULL;
    size_t i, vec_group = 0;
    int split = 0;
    lab_check(optim_create(&opt, hp->rule), "optim_create", NULL);
    lab_check(optim_add_group(opt, hp, NULL), "optim_add_group", optim_errmsg(opt));
    if (vectors_no_decay) {
        int has_matrix = 0, has_vector = 0;
        for (i = 0; i < n; i++) {
            if (t[i].rows > 1) has_matrix = 1;
            else has_vector = 1;
        }
        split = has_matrix && has_vector;
    }
    if (split) {
        optim_hparams nd = *hp;
        optim_error err;
        lab_check(optim_hparams_set(&nd, OPTIM_HP_WEIGHT_DECAY, 0.0, &err), "optim_hparams_set", err.message);
        lab_check(optim_add_group(opt, &nd, &vec_group), "optim_add_group", optim_errmsg(opt));
    }
    for (i = 0; i < n; i++)
        lab_check(optim_add_param(opt, split && t[i].rows <= 1 ? vec_group : 0, t[i].p, t[i].g, t[i].rows * t[i].cols,
                                  t[i].name, NULL),
                  "optim_add_param", optim_errmsg(opt));
    /* The lab's models are small: the step runs on the calling thread
     * (OpenBLAS has the cores for the matrix products). */
    lab_check(optim_set_threads(opt, 1), "optim_set_threads", optim_errmsg(opt));
    return opt;
}

void lab_opt_build(lab_opt *o, const lab_opt_hooks *hooks, const optim_hparams *hp, const lab_tensor *t, size_t n,
                   int vectors_no_decay)
{
    memset(o, 0, sizeof *o);
    if (hooks && hooks->create) {
        hooks->create(o, hp, t, n, vectors_no_decay);
    } else {
        o->part[0] = lab_opt_create(hp, t, n, vectors_no_decay);
        o->nparts = 1;
    }
}

void lab_opt_step(lab_opt *o)
{
    size_t i;
    for (i = 0; i < o->nparts; i++) lab_check(optim_step(o->part[i]), "optim_step", optim_errmsg(o->part[i]));
}

void lab_opt_set_eval(const lab_opt_hooks *hooks, lab_opt *o, int eval)
{
    size_t i;
    if (hooks && hooks->set_eval)
        for (i = 0; i < o->nparts; i++) hooks->set_eval(o->part[i], eval);
}

void lab_opt_free(lab_opt *o)
{
    size_t i;
    for (i = 0; i < o->nparts; i++) optim_free(o->part[i]);
    memset(o, 0, sizeof *o);
}

double lab_update_ratio(const float *before, const float *after, size_t n)
{
    double du = 0, w = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        double d = (double)after[i] - (double)before[i];
        du += d * d;
        w += (double)before[i] * (double)before[i];
    }
    return w > 0 ? sqrt(du / w) : NAN;
}

void lab_record_mlp_data(lab_ctx *ctx)
{
    const lab_dataset *d = ctx->data;
    int nl;
    size_t dims[LAB_MLP_MAX_LAYERS + 1], batch;
    lab_mlp_shape(ctx, &nl, dims, &batch);
    lab_json_set_str(ctx->exp, "data.name", d->name);
    lab_json_set_str(ctx->exp, "data.source", d->source);
    if (d->fallback[0]) lab_json_set_str(ctx->exp, "data.fallback", d->fallback);
    lab_json_set_num(ctx->exp, "data.train", (double)d->ntrain);
    lab_json_set_num(ctx->exp, "data.test", (double)d->ntest);
    lab_json_put(ctx->exp, "model", lab_json_strf("%zu-%zu-%zu", dims[0], dims[1], dims[2]));
    lab_json_set_num(ctx->exp, "batch", (double)batch);
}

double lab_mean(const double *v, int n)
{
    double s = 0;
    int i;
    for (i = 0; i < n; i++) s += v[i];
    return s / n;
}

double lab_sd(const double *v, int n)
{
    double m = lab_mean(v, n), s = 0;
    int i;
    if (n < 2) return NAN;
    for (i = 0; i < n; i++) s += (v[i] - m) * (v[i] - m);
    return sqrt(s / (n - 1));
}
