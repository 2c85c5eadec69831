/* lab_exp_modern.c: `optim lab modern`: the rules practitioners reach for
 * today (issue 13: Lion, LAMB, LARS, schedule-free SGD/AdamW, Muon with an
 * AdamW for the biases, and at merge Adafactor) next to AdamW, Adam and
 * SGD+momentum. A rule's optimizer may be several objects (lab_opt: Muon's
 * weights and the AdamW for the rest), built by its create hook.
 *
 * Part 1: every rule on the 2-D surfaces of `trajectories`, its learning
 * rate chosen per surface by a grid search (the closest final point to a
 * minimum), as `trajectories --tune` does.
 * Part 2: the lab's MLP on Fashion-MNIST. The last tenth of the training
 * images is a validation split the runs never train on; each rule runs its
 * learning-rate grid (lab_modern_rules) with the first seed, the lr with the
 * best final validation accuracy is chosen (never the test set), and two
 * more seeds run at that lr: the test accuracy is the mean of the 3 seeds.
 * Each run records the update/weight RMS ratio of every layer, RMS(p_after -
 * p_before) / RMS(p_before), computed here from copies of the parameters
 * around logged steps (when the library's step statistics exist, it will
 * read them from the step instead).
 * Each rule's verdict against AdamW is computed from these numbers. */
#include "lab.h"
#include "optim_schedule_free.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The rules, in report order: the newer ones, then the baselines. ONE line
 * per rule: key, label, rule, settings besides lr (library names), the MLP's
 * lr grid (ascending), biases without decay, hooks {create, set_eval},
 * baseline. A rule whose optimizer is more than one object (Muon: an object
 * has one rule) builds its parts in its create hook (lab_opt, lab.h). */

/* The schedule-free rules evaluate at x and take gradients at y
 * (include/optim_schedule_free.h). A library error here is a bug of the lab. */
static void sf_set_eval(optim *opt, int eval)
{
    lab_check(eval ? optim_schedule_free_eval(opt) : optim_schedule_free_train(opt), "the schedule-free switch",
              optim_errmsg(opt));
}

/* Adafactor factors the second moment of each weight matrix over its rows and columns: the plain optimizer,
 * then each matrix's shape (optim_param_set_shape, before any step; the biases stay vectors). */
static void adafactor_create(lab_opt *o, const optim_hparams *hp, const lab_tensor *t, size_t n,
                             int vectors_no_decay)
{
    optim *opt = lab_opt_create(hp, t, n, vectors_no_decay);
    size_t i;
    for (i = 0; i < n; i++)
        if (t[i].rows > 1) {
            const int64_t shape[2] = {(int64_t)t[i].rows, (int64_t)t[i].cols};
            lab_check(optim_param_set_shape(opt, i, 2, shape), "optim_param_set_shape", optim_errmsg(opt));
        }
    o->part[0] = opt;
    o->nparts = 1;
}

const lab_modern_rule lab_modern_rules[] = {
    /* Lion: the paper's advice, lr 3-10x below AdamW's and weight decay 3-10x above (lr * wd alike). */
    {"lion", "Lion", OPTIM_LION, "weight_decay=0.1", {3e-5, 1e-4, 3e-4, 1e-3}, 0, {NULL, NULL}, 0},
    /* LAMB: timm's defaults (weight_decay 0.01 switches the trust ratio on); the step is lr * ||p||. */
    {"lamb", "LAMB", OPTIM_LAMB, "", {1e-3, 3e-3, 1e-2, 3e-2}, 1, {NULL, NULL}, 0},
    /* LARS: momentum 0.9, weight decay 1e-4 (switches the ratio on), trust_coeff 1e-3: the step is
     * lr * 1e-3 * ||p|| before momentum. */
    {"lars", "LARS", OPTIM_LARS, "momentum=0.9,weight_decay=0.0001", {0.1, 0.3, 1, 3}, 1, {NULL, NULL}, 0},
    /* Adafactor: torch 2.x's defaults; lr caps the relative step (the step is min(lr, 1/sqrt(t)) * RMS(p)). */
    {"adafactor", "Adafactor", OPTIM_ADAFACTOR, "", {3e-3, 1e-2, 3e-2, 1e-1}, 0, {adafactor_create, NULL}, 0},
    /* Schedule-free (Defazio et al. 2024): the reference's defaults (AdamW lr 0.0025, SGD lr 1, momentum 0.9),
     * no schedule; evaluated at x. */
    {"sf_adamw", "AdamW (schedule-free)", OPTIM_ADAMW_SCHEDULE_FREE, "", {1e-3, 2.5e-3, 1e-2, 3e-2}, 0,
     {NULL, sf_set_eval}, 0},
    {"sf_sgd", "SGD (schedule-free)", OPTIM_SGD_SCHEDULE_FREE, "", {0.1, 0.3, 1, 3}, 0, {NULL, sf_set_eval}, 0},
    /* Muon: Keller Jordan's MuonWithAuxAdam recipe (lab_muon_create): Muon (Nesterov, 5 Newton-Schulz steps,
     * lr * sqrt(max(1, rows / cols)), the reference's weight decay 0) on both weight matrices, its lr from the
     * grid around the reference's 0.02; the biases in an AdamW with the reference's auxiliary settings (lr 3e-4,
     * betas (0.9, 0.95), eps 1e-10, no decay), not tuned. */
    {"muon", "Muon (AdamW on biases)", OPTIM_MUON, "weight_decay=0", {5e-3, 1e-2, 2e-2, 5e-2}, 0,
     {lab_muon_create, NULL}, 0},
    {"adamw", "AdamW", OPTIM_ADAMW, "", {1e-4, 3e-4, 1e-3, 3e-3}, 0, {NULL, NULL}, 1},
    {"adam", "Adam", OPTIM_ADAM, "", {1e-4, 3e-4, 1e-3, 3e-3}, 0, {NULL, NULL}, 1},
    {"momentum", "SGD+momentum", OPTIM_SGD, "momentum=0.9", {3e-3, 1e-2, 3e-2, 1e-1}, 0, {NULL, NULL}, 1},
};
const size_t lab_modern_rule_count = sizeof lab_modern_rules / sizeof lab_modern_rules[0];

#define NSEEDS LAB_MODERN_SEEDS
#define MAX_RULES 16
#define NSURF 6        /* the surfaces of trajectories (the first six of lab_surfaces) */
#define SURF_TOL 1e-2  /* "reached the minimum", as trajectories */
#define NTENSORS 4     /* layer0.weight, layer0.bias, layer1.weight, layer1.bias */
#define RATIO_EVERY 10 /* steps between two update/weight ratio samples */

const lab_modern_rule *lab_modern_find(const char *key)
{
    size_t i;
    for (i = 0; i < lab_modern_rule_count; i++)
        if (strcmp(lab_modern_rules[i].key, key) == 0) return &lab_modern_rules[i];
    return NULL;
}

int lab_modern_runnable(const lab_modern_rule *r)
{
    /* Muon's products are liboptim_muon's: a build without it (CMake OPTIM_MUON=OFF) has no Muon row. */
    return r->hooks.create != lab_muon_create || lab_muon_available();
}

int lab_modern_hparams(const lab_modern_rule *r, double lr, optim_hparams *hp, char *msg, size_t msgsize)
{
    optim_error err;
    const char *p = r->hparams;
    if (optim_hparams_init(hp, r->rule, &err) != OPTIM_OK) {
        snprintf(msg, msgsize, "%s: %s", r->key, err.message);
        return -1;
    }
    while (p && *p) {
        char item[96], *eq, *end;
        size_t len = strcspn(p, ",");
        optim_hparam id;
        double v;
        snprintf(item, sizeof item, "%.*s", (int)(len < sizeof item - 1 ? len : sizeof item - 1), p);
        eq = strchr(item, '=');
        if (!eq) {
            snprintf(msg, msgsize, "%s: setting '%s' is not name=value", r->key, item);
            return -1;
        }
        *eq = '\0';
        id = optim_hparam_from_name(item);
        v = strtod(eq + 1, &end);
        if (!id) {
            snprintf(msg, msgsize, "%s: unknown hyperparameter '%s'", r->key, item);
            return -1;
        }
        if (end == eq + 1 || *end != '\0') {
            snprintf(msg, msgsize, "%s: %s = '%s' is not a number", r->key, item, eq + 1);
            return -1;
        }
        if (optim_hparams_set(hp, id, v, &err) != OPTIM_OK) {
            snprintf(msg, msgsize, "%s: %s", r->key, err.message);
            return -1;
        }
        p += len;
        if (*p == ',') p++;
    }
    if (optim_hparams_set(hp, OPTIM_HP_LR, lr, &err) != OPTIM_OK || optim_hparams_check(hp, &err) != OPTIM_OK) {
        snprintf(msg, msgsize, "%s: %s", r->key, err.message);
        return -1;
    }
    return 0;
}

int lab_modern_verdict(double d_points, double noise_points)
{
    double noise = noise_points > LAB_MODERN_NOISE_FLOOR ? noise_points : LAB_MODERN_NOISE_FLOOR;
    if (!isfinite(d_points)) return -1;
    if (d_points > noise) return 1;
    if (d_points < -noise) return -1;
    return 0;
}

static optim_hparams rule_hparams(const lab_modern_rule *r, double lr)
{
    optim_hparams hp;
    char msg[512];
    if (lab_modern_hparams(r, lr, &hp, msg, sizeof msg) != 0) {
        fprintf(stderr, "\noptim lab modern: %s\n", msg);
        exit(1);
    }
    return hp;
}

static int nlrs(const lab_modern_rule *r)
{
    int n = 0;
    while (n < LAB_MODERN_MAX_LRS && r->lrs[n] > 0) n++;
    return n;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median of the finite values of v (NaN if none). */
static double median_finite(const double *v, int n)
{
    double *c = (double *)lab_xmalloc(sizeof(double) * (size_t)(n ? n : 1)), m;
    int i, k = 0;
    for (i = 0; i < n; i++)
        if (isfinite(v[i])) c[k++] = v[i];
    qsort(c, (size_t)k, sizeof(double), cmp_double);
    m = k == 0 ? NAN : k % 2 ? c[k / 2] : 0.5 * (c[k / 2 - 1] + c[k / 2]);
    free(c);
    return m;
}

static void table_row(lab_json *t, char **cells, size_t n)
{
    lab_json *row = lab_json_push(lab_json_get(t, "rows"), lab_json_array());
    size_t i;
    for (i = 0; i < n; i++) {
        lab_json_push(row, lab_json_str(cells[i]));
        free(cells[i]);
    }
}

/* ---- Part 1: the surfaces ----------------------------------------------------------- */

typedef struct surf_result {
    double lr, dist; /* dist: final distance to the nearest minimum (INFINITY diverged; NaN on the saddle) */
    int reach;       /* first step within SURF_TOL, -1 never */
    int escape;      /* the saddle: first step with |y| >= 1, -1 never */
} surf_result;

static void run_path(const lab_surface *s, const lab_modern_rule *r, double lr, lab_path *p)
{
    optim_hparams hp = rule_hparams(r, lr);
    lab_surface_run_hooks(s, &hp, &r->hooks, s->steps, p);
}

static double path_distance(const lab_surface *s, const lab_path *p)
{
    double d = p->diverged ? INFINITY : lab_surface_distance(s, p->x[p->n - 1], p->y[p->n - 1]);
    return d >= 0 ? d : INFINITY;
}

/* The grid's lr with the smallest final distance; the smallest of those
 * within float precision of the best (the calmest that does as well). */
static double tune_surface(const lab_surface *s, const lab_modern_rule *r, const double *grid, int n)
{
    double dist[64], best = INFINITY;
    int i;
    for (i = 0; i < n; i++) {
        lab_path p;
        run_path(s, r, grid[i], &p);
        dist[i] = path_distance(s, &p);
        if (dist[i] < best) best = dist[i];
        lab_path_free(&p);
    }
    for (i = 0; i < n; i++)
        if (dist[i] <= fmax(1e-6, best * 1.0001)) return grid[i];
    return grid[n / 2]; /* every lr diverged: the middle one, drawn as diverged */
}

static void surfaces_part(lab_ctx *ctx, const lab_modern_rule *const *rules, size_t nr, surf_result res[][NSURF])
{
    double grid[64];
    int ngrid = 0, si, e;
    size_t i;
    lab_json *surfaces = lab_json_put(ctx->exp, "surfaces", lab_json_object());
    /* trajectories --tune's 1-2-5 grid, continued to 500: LARS's step is lr * 1e-3 * ||p|| / ||g|| * g. */
    {
        double base[32];
        int nb = lab_tune_grid(base), k;
        for (k = 0; k < nb; k++) grid[ngrid++] = base[k];
        for (e = 1; e <= 2; e++) {
            double b = pow(10.0, e);
            grid[ngrid++] = b;
            grid[ngrid++] = 2 * b;
            grid[ngrid++] = 5 * b;
        }
        if (ctx->opt.quick) { /* every third: 1e-5, 1e-4, ... (decades) */
            int n = 0;
            for (k = 0; k < ngrid; k += 3) grid[n++] = grid[k];
            ngrid = n;
        }
    }
    lab_json_put(ctx->exp, "surface_lr_grid", lab_json_numbers(grid, (size_t)ngrid));
    lab_json_set_num(ctx->exp, "surface_tolerance", SURF_TOL);
    for (si = 0; si < NSURF; si++) {
        const lab_surface *s = &lab_surfaces[si];
        int saddle = s->nminima == 0;
        char *csv_name = lab_sprintf("modern_traj_%s.csv", s->name);
        FILE *csv = lab_csv_open(ctx, csv_name, "optimizer,label,lr,step,x,y,f");
        lab_json *sj = lab_json_put(surfaces, s->name, lab_json_object()), *mins, *rj;
        lab_progress prog;
        char label[64];
        lab_json_set_str(sj, "title", s->title);
        lab_json_put(sj, "start", lab_json_numbers((double[]){s->x0, s->y0}, 2));
        lab_json_put(sj, "box", lab_json_numbers(s->box, 4));
        lab_json_set_num(sj, "steps", s->steps);
        mins = lab_json_put(sj, "minima", lab_json_array());
        for (e = 0; e < s->nminima; e++) lab_json_push(mins, lab_json_numbers(s->minima + 2 * e, 2));
        lab_json_put(sj, "grid", lab_json_strf("surface_%s_grid.csv", s->name));
        lab_json_set_str(sj, "csv", csv_name);
        lab_surface_write_grid(ctx, s, 160, 160);
        rj = lab_json_put(sj, "rules", lab_json_object());
        snprintf(label, sizeof label, "surface %s (tuning)", s->name);
        lab_progress_start(&prog, label, (long)nr, "rule", 0);
        for (i = 0; i < nr; i++) {
            const lab_modern_rule *r = rules[i];
            surf_result *sr = &res[i][si];
            lab_json *o;
            lab_path p;
            int t;
            /* The saddle has no minimum to tune for: the bowl's lr, as trajectories. */
            sr->lr = saddle ? res[i][0].lr : tune_surface(s, r, grid, ngrid);
            run_path(s, r, sr->lr, &p);
            for (t = 0; t < p.n; t++)
                fprintf(csv, "%s,%s,%g,%d,%.9g,%.9g,%.9g\n", r->key, r->label, sr->lr, t, p.x[t], p.y[t], p.f[t]);
            sr->reach = sr->escape = -1;
            sr->dist = saddle ? NAN : path_distance(s, &p);
            for (t = 0; t < p.n && !p.diverged; t++) {
                if (!saddle && sr->reach < 0 && lab_surface_distance(s, p.x[t], p.y[t]) <= SURF_TOL) sr->reach = t;
                if (saddle && sr->escape < 0 && fabs(p.y[t]) >= 1.0) sr->escape = t;
            }
            o = lab_json_put(rj, r->key, lab_json_object());
            lab_json_set_str(o, "label", r->label);
            lab_json_set_num(o, "lr", sr->lr);
            lab_json_put(o, "diverged", lab_json_bool(p.diverged));
            lab_json_put(o, "final_point", lab_json_numbers((double[]){p.x[p.n - 1], p.y[p.n - 1]}, 2));
            if (saddle) {
                lab_json_put(o, "escape_step", sr->escape >= 0 ? lab_json_num(sr->escape) : lab_json_null());
            } else {
                lab_json_set_num(o, "final_distance", sr->dist);
                lab_json_put(o, "steps_to_tol", sr->reach >= 0 ? lab_json_num(sr->reach) : lab_json_null());
            }
            lab_path_free(&p);
            lab_progress_update(&prog, (long)i + 1, NAN);
        }
        lab_progress_end(&prog, NULL);
        lab_csv_close(ctx, csv, csv_name);
        free(csv_name);
    }
}

/* ---- Part 2: the MLP ------------------------------------------------------------------ */

typedef struct mlp_run {
    double *val_acc, *test_acc, *test_loss, *train_loss, *seconds; /* per epoch */
    int epochs, diverged;
    int nratio;     /* samples of the update/weight ratio */
    long *ratio_step;
    double *ratio;  /* nratio x NTENSORS */
} mlp_run;

static void mlp_run_free(mlp_run *r)
{
    free(r->val_acc);
    free(r->test_acc);
    free(r->test_loss);
    free(r->train_loss);
    free(r->seconds);
    free(r->ratio_step);
    free(r->ratio);
    memset(r, 0, sizeof *r);
}

static const char *const tensor_names[NTENSORS] = {"layer0.weight", "layer0.bias", "layer1.weight", "layer1.bias"};

/* The MLP's tensors as the optimizers see them: weights dims[l+1] x dims[l], biases 1 x dims[l+1]. */
static void mlp_tensors(lab_mlp *m, const size_t *dims, lab_tensor t[NTENSORS])
{
    int l;
    for (l = 0; l < 2; l++) {
        t[2 * l] = (lab_tensor){tensor_names[2 * l], m->w[l], m->gw[l], dims[l + 1], dims[l]};
        t[2 * l + 1] = (lab_tensor){tensor_names[2 * l + 1], m->b[l], m->gb[l], 1, dims[l + 1]};
    }
}

/* The optimizer objects r builds over the MLP at lr (lab_opt's parts): per part its rule, its first group's
 * lr and its tensors, into o's "optimizers"; a sentence naming them into text (when there are several). */
static void record_parts(lab_ctx *ctx, const lab_modern_rule *r, double lr, lab_json *o, char *text, size_t size)
{
    optim_hparams hp = rule_hparams(r, lr);
    lab_mlp m;
    lab_tensor t[NTENSORS];
    lab_opt opt;
    size_t dims[LAB_MLP_MAX_LAYERS + 1], batch, pi, i, len = 0;
    int nlayers;
    lab_json *list = lab_json_put(o, "optimizers", lab_json_array());
    lab_mlp_shape(ctx, &nlayers, dims, &batch);
    lab_mlp_init(&m, nlayers, dims, batch);
    mlp_tensors(&m, dims, t);
    lab_opt_build(&opt, &r->hooks, &hp, t, NTENSORS, r->vectors_no_decay);
    text[0] = '\0';
    if (opt.nparts > 1)
        len += (size_t)snprintf(text, size, " Its optimizer is %zu objects (one rule each):", opt.nparts);
    for (pi = 0; pi < opt.nparts; pi++) {
        optim_hparams g;
        lab_json *pj = lab_json_push(list, lab_json_object()), *names = lab_json_array();
        lab_check(optim_group_get(opt.part[pi], 0, &g), "optim_group_get", optim_errmsg(opt.part[pi]));
        lab_json_set_str(pj, "rule", optim_rule_name(g.rule));
        lab_json_set_num(pj, "lr", g.lr);
        if (opt.nparts > 1 && len < size)
            len += (size_t)snprintf(text + len, size - len, "%s %s at lr %g on", pi ? ";" : "", optim_rule_name(g.rule),
                                    g.lr);
        for (i = 0; i < optim_param_count(opt.part[pi]); i++) {
            optim_param_info info;
            lab_check(optim_param_get_info(opt.part[pi], i, &info), "optim_param_get_info",
                      optim_errmsg(opt.part[pi]));
            lab_json_push(names, lab_json_str(info.name));
            if (opt.nparts > 1 && len < size)
                len += (size_t)snprintf(text + len, size - len, "%s %s", i ? "," : "", info.name);
        }
        lab_json_put(pj, "tensors", names);
    }
    if (opt.nparts > 1 && len < size) snprintf(text + len, size - len, ".");
    lab_opt_free(&opt);
    lab_mlp_free(&m);
}

/* One run: rows [0, ntrain - nval) of the training images train the MLP;
 * rows [ntrain - nval, ntrain) validate it; the test split tests it. */
static void train_run(lab_ctx *ctx, const lab_modern_rule *r, double lr, int epochs, uint64_t seed, size_t nval,
                      const char *label, mlp_run *out)
{
    const lab_dataset *d = ctx->data;
    optim_hparams hp = rule_hparams(r, lr);
    lab_mlp m;
    lab_rng rng;
    lab_tensor t[NTENSORS];
    lab_opt opt;
    size_t dims[LAB_MLP_MAX_LAYERS + 1], batch, ntr = d->ntrain - nval, steps_per_epoch, *order, *idx, i, k;
    float *before[NTENSORS];
    int nlayers, e;
    long step = 0, total;
    lab_progress prog;

    lab_mlp_shape(ctx, &nlayers, dims, &batch);
    lab_mlp_init(&m, nlayers, dims, batch);
    lab_rng_init(&rng, seed, 0x1417);
    lab_mlp_reset(&m, &rng);
    mlp_tensors(&m, dims, t);
    lab_opt_build(&opt, &r->hooks, &hp, t, NTENSORS, r->vectors_no_decay);
    steps_per_epoch = (ntr + batch - 1) / batch;
    total = (long)steps_per_epoch * epochs;
    memset(out, 0, sizeof *out);
    out->epochs = epochs;
    out->val_acc = (double *)lab_xmalloc(sizeof(double) * (size_t)epochs);
    out->test_acc = (double *)lab_xmalloc(sizeof(double) * (size_t)epochs);
    out->test_loss = (double *)lab_xmalloc(sizeof(double) * (size_t)epochs);
    out->train_loss = (double *)lab_xmalloc(sizeof(double) * (size_t)epochs);
    out->seconds = (double *)lab_xmalloc(sizeof(double) * (size_t)epochs);
    for (e = 0; e < epochs; e++)
        out->val_acc[e] = out->test_acc[e] = out->test_loss[e] = out->train_loss[e] = out->seconds[e] = NAN;
    out->ratio_step = (long *)lab_xmalloc(sizeof(long) * (size_t)(total / RATIO_EVERY + 2));
    out->ratio = (double *)lab_xmalloc(sizeof(double) * NTENSORS * (size_t)(total / RATIO_EVERY + 2));
    for (k = 0; k < NTENSORS; k++) before[k] = (float *)lab_xmalloc(sizeof(float) * t[k].rows * t[k].cols);
    order = (size_t *)lab_xmalloc(sizeof(size_t) * (ntr ? ntr : 1));
    idx = (size_t *)lab_xmalloc(sizeof(size_t) * batch);

    lab_progress_start(&prog, label, total, "step", (int)steps_per_epoch);
    for (e = 0; e < epochs && !out->diverged; e++) {
        double t0 = lab_now(), sum = 0;
        size_t start, seen = 0;
        snprintf(prog.stage, sizeof prog.stage, "epoch %d/%d", e + 1, epochs);
        lab_epoch_order(order, ntr, seed, e);
        for (start = 0; start < ntr; start += batch) {
            size_t n = ntr - start < batch ? ntr - start : batch;
            unsigned char labels[1024];
            int sample = step % RATIO_EVERY == 0;
            double loss;
            for (i = 0; i < n; i++) labels[i] = d->ytrain[order[start + i]];
            lab_load_batch(d, d->xtrain, order + start, n, m.act[0]);
            loss = lab_mlp_batch(&m, n, labels, 1, NULL);
            if (!isfinite(loss)) {
                out->diverged = 1;
                break;
            }
            /* The update/weight ratio of this step, from the parameters around it (the library's step
             * statistics will give it without the copies). */
            if (sample)
                for (k = 0; k < NTENSORS; k++) memcpy(before[k], t[k].p, sizeof(float) * t[k].rows * t[k].cols);
            lab_opt_step(&opt);
            if (sample) {
                out->ratio_step[out->nratio] = step + 1;
                for (k = 0; k < NTENSORS; k++)
                    out->ratio[(size_t)out->nratio * NTENSORS + k] =
                        lab_update_ratio(before[k], t[k].p, t[k].rows * t[k].cols);
                out->nratio++;
            }
            sum += loss * (double)n;
            seen += n;
            step++;
            lab_progress_update(&prog, step, loss);
        }
        out->seconds[e] = lab_now() - t0;
        if (out->diverged) break;
        out->train_loss[e] = sum / (double)seen;
        /* Evaluated where the rule says (schedule-free: x), then back. */
        lab_opt_set_eval(&r->hooks, &opt, 1);
        {
            double vloss;
            lab_mlp_evaluate(&m, d, d->xtrain, d->ytrain, ntr, nval, idx, &vloss, &out->val_acc[e]);
            lab_mlp_evaluate(&m, d, d->xtest, d->ytest, 0, d->ntest, idx, &out->test_loss[e], &out->test_acc[e]);
        }
        lab_opt_set_eval(&r->hooks, &opt, 0);
    }
    {
        char note[96];
        if (out->diverged)
            snprintf(note, sizeof note, "DIVERGED (non-finite loss) in epoch %d", e + 1);
        else
            snprintf(note, sizeof note, "val acc %.4f  test acc %.4f", out->val_acc[epochs - 1],
                     out->test_acc[epochs - 1]);
        lab_progress_end(&prog, note);
    }
    for (k = 0; k < NTENSORS; k++) free(before[k]);
    free(order);
    free(idx);
    lab_opt_free(&opt);
    lab_mlp_free(&m);
}

typedef struct rule_result {
    int nlr, chosen;              /* index of the chosen lr in the grid */
    double val[LAB_MODERN_MAX_LRS]; /* final validation accuracy of each lr (first seed) */
    double acc[NSEEDS], loss[NSEEDS];
    double mean, sd, ratio_median[NTENSORS];
    int diverged;
    double *acc_epoch;            /* mean over the seeds at the chosen lr, per epoch */
} rule_result;

static void write_run(FILE *ep, FILE *rc, const lab_modern_rule *r, double lr, uint64_t seed, const mlp_run *run)
{
    int e, s;
    size_t k;
    for (e = 0; e < run->epochs; e++)
        fprintf(ep, "%s,%s,%g,%llu,%d,%.9g,%.9g,%.9g,%.9g,%.6g\n", r->key, r->label, lr, (unsigned long long)seed,
                e + 1, run->train_loss[e], run->val_acc[e], run->test_loss[e], run->test_acc[e], run->seconds[e]);
    for (s = 0; s < run->nratio; s++)
        for (k = 0; k < NTENSORS; k++)
            fprintf(rc, "%s,%g,%llu,%ld,%s,%.9g\n", r->key, lr, (unsigned long long)seed, run->ratio_step[s],
                    tensor_names[k], run->ratio[(size_t)s * NTENSORS + k]);
}

static void mlp_part(lab_ctx *ctx, const lab_modern_rule *const *rules, size_t nr, int epochs, rule_result *rr)
{
    const lab_dataset *d = ctx->data;
    size_t nval = d->ntrain / 10, i;
    FILE *ep = lab_csv_open(ctx, "modern_epochs.csv",
                            "rule,label,lr,seed,epoch,train_loss,val_accuracy,test_loss,test_accuracy,seconds");
    FILE *rc = lab_csv_open(ctx, "modern_ratio.csv", "rule,lr,seed,step,tensor,update_weight_ratio");
    int total = 0, done = 0, s, e;
    size_t k;
    lab_json *seeds = lab_json_array();
    for (s = 0; s < NSEEDS; s++) lab_json_push(seeds, lab_json_num((double)(ctx->opt.seed + (uint64_t)s)));
    lab_json_put(ctx->exp, "seeds", seeds);
    lab_json_set_num(ctx->exp, "epochs", epochs);
    lab_json_set_num(ctx->exp, "data.validation", (double)nval);
    lab_json_set_num(ctx->exp, "data.train_used", (double)(d->ntrain - nval));
    lab_json_set_num(ctx->exp, "ratio_every", RATIO_EVERY);
    {
        lab_json *tn = lab_json_put(ctx->exp, "tensors", lab_json_array());
        for (k = 0; k < NTENSORS; k++) lab_json_push(tn, lab_json_str(tensor_names[k]));
    }
    for (i = 0; i < nr; i++) total += (ctx->opt.quick ? 2 : nlrs(rules[i])) + NSEEDS - 1;
    for (i = 0; i < nr; i++) {
        const lab_modern_rule *r = rules[i];
        rule_result *res = &rr[i];
        /* Quick: the middle two rates of the grid. */
        int first = ctx->opt.quick ? (nlrs(r) - 2) / 2 : 0, li;
        double best = -1;
        mlp_run runs[LAB_MODERN_MAX_LRS], extra[NSEEDS - 1];
        res->nlr = ctx->opt.quick ? 2 : nlrs(r);
        res->chosen = 0;
        for (li = 0; li < res->nlr; li++) {
            double lr = r->lrs[first + li];
            char label[128];
            snprintf(label, sizeof label, "%s lr %g [%d/%d]", r->label, lr, ++done, total);
            train_run(ctx, r, lr, epochs, ctx->opt.seed, nval, label, &runs[li]);
            write_run(ep, rc, r, lr, ctx->opt.seed, &runs[li]);
            res->val[li] = runs[li].diverged ? NAN : runs[li].val_acc[epochs - 1];
            /* The best validation accuracy; the smaller lr on a tie. */
            if (res->val[li] > best) {
                best = res->val[li];
                res->chosen = li;
            }
        }
        {
            double lr = r->lrs[first + res->chosen];
            const mlp_run *seed_runs[NSEEDS];
            seed_runs[0] = &runs[res->chosen];
            for (s = 1; s < NSEEDS; s++) {
                char label[128];
                uint64_t seed = ctx->opt.seed + (uint64_t)s;
                snprintf(label, sizeof label, "%s lr %g seed %llu [%d/%d]", r->label, lr, (unsigned long long)seed,
                         ++done, total);
                train_run(ctx, r, lr, epochs, seed, nval, label, &extra[s - 1]);
                write_run(ep, rc, r, lr, seed, &extra[s - 1]);
                seed_runs[s] = &extra[s - 1];
            }
            res->acc_epoch = (double *)lab_xcalloc((size_t)epochs, sizeof(double));
            for (s = 0; s < NSEEDS; s++) {
                res->acc[s] = seed_runs[s]->diverged ? NAN : seed_runs[s]->test_acc[epochs - 1];
                res->loss[s] = seed_runs[s]->diverged ? NAN : seed_runs[s]->test_loss[epochs - 1];
                res->diverged |= seed_runs[s]->diverged;
                for (e = 0; e < epochs; e++) res->acc_epoch[e] += seed_runs[s]->test_acc[e] / NSEEDS;
            }
            res->mean = lab_mean(res->acc, NSEEDS);
            res->sd = lab_sd(res->acc, NSEEDS);
            /* The typical update/weight ratio of each tensor over the first seed's run. */
            for (k = 0; k < NTENSORS; k++) {
                const mlp_run *r0 = seed_runs[0];
                double *v = (double *)lab_xmalloc(sizeof(double) * (size_t)(r0->nratio ? r0->nratio : 1));
                int q;
                for (q = 0; q < r0->nratio; q++) v[q] = r0->ratio[(size_t)q * NTENSORS + k];
                res->ratio_median[k] = median_finite(v, r0->nratio);
                free(v);
            }
        }
        for (li = 0; li < res->nlr; li++) mlp_run_free(&runs[li]);
        for (s = 1; s < NSEEDS; s++) mlp_run_free(&extra[s - 1]);
    }
    lab_csv_close(ctx, ep, "modern_epochs.csv");
    lab_csv_close(ctx, rc, "modern_ratio.csv");
}

/* ---- The experiment ------------------------------------------------------------------- */

static const char *verdict_word(int v)
{
    return v > 0 ? "ahead of AdamW" : v == 0 ? "level with AdamW" : "behind AdamW";
}

int lab_exp_modern(lab_ctx *ctx)
{
    static const char *cols[] = {"rule", "lr grid", "chosen lr", "val acc", "test acc (mean +- sd)", "per seed",
                                 "vs AdamW (points)", "verdict"};
    static const char *scols[] = {"rule", "bowl", "rosenbrock", "beale", "himmelblau", "saddle (escape)",
                                  "ill-conditioned"};
    const lab_modern_rule *rules[MAX_RULES];
    rule_result rr[MAX_RULES];
    surf_result sres[MAX_RULES][NSURF];
    size_t nr = 0, i, k;
    int epochs, adamw = -1, held = 1, newer = 0, si;
    lab_json *table, *stable;
    char statement[8192];
    size_t len = 0;

    for (i = 0; i < lab_modern_rule_count && nr < MAX_RULES; i++)
        if (lab_modern_runnable(&lab_modern_rules[i])) rules[nr++] = &lab_modern_rules[i];
    for (i = 0; i < nr; i++)
        if (strcmp(rules[i]->key, "adamw") == 0) adamw = (int)i;
    if (lab_need_data(ctx)) return 1;
    epochs = ctx->opt.epochs ? ctx->opt.epochs
             : ctx->opt.quick ? 1
             : strcmp(ctx->data->name, "digits") == 0 ? 12
                                                       : 3;
    lab_record_mlp_data(ctx);
    {
        lab_json *list = lab_json_put(ctx->exp, "rules", lab_json_array());
        for (i = 0; i < nr; i++) lab_json_push(list, lab_json_str(rules[i]->key));
        /* The rules this build cannot run (Muon without liboptim_muon), said rather than silently dropped. */
        list = lab_json_put(ctx->exp, "rules_absent", lab_json_array());
        for (i = 0; i < lab_modern_rule_count; i++)
            if (!lab_modern_runnable(&lab_modern_rules[i])) lab_json_push(list, lab_json_str(lab_modern_rules[i].key));
    }

    surfaces_part(ctx, rules, nr, sres);
    memset(rr, 0, sizeof rr);
    mlp_part(ctx, rules, nr, epochs, rr);

    /* Per rule: the numbers, and the verdict against AdamW. */
    table = lab_new_table(ctx, "final", "Fashion-MNIST: lr chosen on the validation split, test accuracy of 3 seeds",
                          cols, 8);
    stable = lab_new_table(ctx, "surfaces", "2-D surfaces: final distance to the nearest minimum at the tuned lr",
                           scols, 7);
    len += (size_t)snprintf(statement + len, sizeof statement - len,
                            "%s (%zu training images, a tenth of them held out to choose each lr), %d epoch%s, "
                            "%d seeds at the chosen lr.",
                            ctx->data->name, ctx->data->ntrain, epochs, epochs > 1 ? "s" : "", NSEEDS);
    for (i = 0; i < nr; i++) {
        const lab_modern_rule *r = rules[i];
        const rule_result *res = &rr[i];
        int first = ctx->opt.quick ? (nlrs(r) - 2) / 2 : 0, reached = 0, reached_w = 0, v = 0;
        double lr = r->lrs[first + res->chosen], d = NAN, noise = NAN;
        lab_json *o = lab_json_put(ctx->exp, r->key, lab_json_object()), *sj;
        char *cells[8], grid[128], verdict_text[1536], parts_text[384];
        size_t gl = 0;
        int li;
        for (li = 0; li < res->nlr; li++)
            gl += (size_t)snprintf(grid + gl, sizeof grid - gl, "%s%g", li ? ", " : "", r->lrs[first + li]);
        for (si = 0; si < NSURF; si++) {
            if (lab_surfaces[si].nminima == 0) continue;
            reached += sres[i][si].reach >= 0;
            if (adamw >= 0) reached_w += sres[adamw][si].reach >= 0;
        }
        if (adamw >= 0) {
            const rule_result *a = &rr[adamw];
            d = 100 * (res->mean - a->mean);
            noise = 100 * 2 * sqrt((res->sd * res->sd + a->sd * a->sd) / NSEEDS);
            if (!(noise >= LAB_MODERN_NOISE_FLOOR)) noise = LAB_MODERN_NOISE_FLOOR; /* the floor the verdict uses */
            v = lab_modern_verdict(d, noise);
        }
        lab_json_set_str(o, "label", r->label);
        lab_json_set_str(o, "rule", optim_rule_name(r->rule));
        lab_json_set_str(o, "settings", r->hparams);
        lab_json_put(o, "baseline", lab_json_bool(r->baseline));
        lab_json_put(o, "lr_grid", lab_json_numbers(r->lrs + first, (size_t)res->nlr));
        lab_json_put(o, "val_accuracy_per_lr", lab_json_numbers(res->val, (size_t)res->nlr));
        lab_json_set_num(o, "lr", lr);
        /* A chosen lr at an end of the full grid: a better one may lie outside it. */
        lab_json_put(o, "lr_at_grid_edge",
                     lab_json_bool(!ctx->opt.quick && (res->chosen == 0 || res->chosen == res->nlr - 1)));
        lab_json_set_num(o, "test_accuracy", res->mean);
        lab_json_put(o, "test_accuracy_per_seed", lab_json_numbers(res->acc, NSEEDS));
        lab_json_set_num(o, "test_accuracy_sd", res->sd);
        lab_json_set_num(o, "test_loss", lab_mean(res->loss, NSEEDS));
        lab_json_put(o, "test_accuracy_per_epoch", lab_json_numbers(res->acc_epoch, (size_t)epochs));
        lab_json_put(o, "diverged", lab_json_bool(res->diverged));
        sj = lab_json_put(o, "update_weight_ratio_median", lab_json_object());
        for (k = 0; k < NTENSORS; k++) /* lab_json_put: the keys hold dots */
            lab_json_put(sj, tensor_names[k], lab_json_num(res->ratio_median[k]));
        lab_json_set_num(o, "surfaces_reached", reached);
        record_parts(ctx, r, lr, o, parts_text, sizeof parts_text);
        sj = lab_json_put(o, "surface_lr", lab_json_object());
        for (si = 0; si < NSURF; si++) lab_json_set_num(sj, lab_surfaces[si].name, sres[i][si].lr);
        if (adamw >= 0 && (int)i != adamw) {
            lab_json_set_num(o, "difference_vs_adamw_points", d);
            lab_json_set_num(o, "noise_points", noise);
            lab_json_set_str(o, "verdict", v > 0 ? "ahead" : v == 0 ? "level" : "behind");
            snprintf(verdict_text, sizeof verdict_text,
                     "%s: test accuracy %.4f (sd %.4f) at lr %g (grid %s, chosen on validation), %+.2f points from "
                     "AdamW's %.4f (noise %.2f): %s. Surfaces: within %g of a minimum on %d of 5 (AdamW %d). "
                     "Median update/weight RMS ratio of layer0.weight %.3g (AdamW %.3g).",
                     r->label, res->mean, res->sd, lr, grid, d, rr[adamw].mean, noise, verdict_word(v), SURF_TOL,
                     reached, reached_w, res->ratio_median[0], rr[adamw].ratio_median[0]);
            if (!r->baseline) {
                newer++;
                if (v < 0) held = 0;
            }
        } else {
            lab_json_set_str(o, "verdict", "reference");
            snprintf(verdict_text, sizeof verdict_text,
                     "%s (the reference): test accuracy %.4f (sd %.4f) at lr %g (grid %s); surfaces reached %d of "
                     "5; median update/weight RMS ratio of layer0.weight %.3g.",
                     r->label, res->mean, res->sd, lr, grid, reached, res->ratio_median[0]);
        }
        if (parts_text[0]) { /* several objects: say which steps what, and each tensor's median ratio */
            size_t vl = strlen(verdict_text);
            vl += (size_t)snprintf(verdict_text + vl, sizeof verdict_text - vl, "%s Median update/weight RMS ratios:",
                                   parts_text);
            for (k = 0; k < NTENSORS && vl < sizeof verdict_text; k++)
                vl += (size_t)snprintf(verdict_text + vl, sizeof verdict_text - vl, "%s %s %.3g", k ? "," : "",
                                       tensor_names[k], res->ratio_median[k]);
            if (vl < sizeof verdict_text) snprintf(verdict_text + vl, sizeof verdict_text - vl, ".");
        }
        if (!ctx->opt.quick && (res->chosen == 0 || res->chosen == res->nlr - 1)) {
            size_t vl = strlen(verdict_text);
            snprintf(verdict_text + vl, sizeof verdict_text - vl,
                     " Its lr is at the %s end of the grid: a better one may lie outside it.",
                     res->chosen == 0 ? "lower" : "upper");
        }
        lab_json_set_str(o, "verdict_text", verdict_text);
        len += (size_t)snprintf(statement + len, len < sizeof statement ? sizeof statement - len : 0, " %s",
                                verdict_text);
        cells[0] = lab_xstrdup(r->label);
        cells[1] = lab_xstrdup(grid);
        cells[2] = lab_sprintf("%g", lr);
        cells[3] = lab_sprintf("%.4f", res->val[res->chosen]);
        cells[4] = lab_sprintf("%.4f +- %.4f", res->mean, res->sd);
        cells[5] = lab_sprintf("%.4f %.4f %.4f", res->acc[0], res->acc[1], res->acc[2]);
        cells[6] = adamw >= 0 && (int)i != adamw ? lab_sprintf("%+.2f", d) : lab_xstrdup("-");
        cells[7] = lab_xstrdup(adamw >= 0 && (int)i != adamw ? (v > 0 ? "ahead" : v == 0 ? "level" : "behind")
                                                             : "reference");
        table_row(table, cells, 8);
        {
            char *sc[7];
            sc[0] = lab_xstrdup(r->label);
            for (si = 0; si < NSURF; si++) {
                const surf_result *s = &sres[i][si];
                if (lab_surfaces[si].nminima == 0)
                    sc[si + 1] = s->escape >= 0 ? lab_sprintf("step %d (lr %g)", s->escape, s->lr)
                                                : lab_sprintf("no (lr %g)", s->lr);
                else
                    sc[si + 1] = isfinite(s->dist) ? lab_sprintf("%.3g (lr %g)", s->dist, s->lr)
                                                   : lab_sprintf("diverged (lr %g)", s->lr);
            }
            table_row(stable, sc, 7);
        }
    }
    lab_finding(ctx,
                "Tuned on a validation split, each newer rule (Lion, LAMB, LARS, ...) matches or beats AdamW on the "
                "lab's MLP (issue 13)",
                newer ? held : -1, statement);
    for (i = 0; i < nr; i++) free(rr[i].acc_epoch);
    return 0;
}
