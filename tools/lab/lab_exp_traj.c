/* lab_exp_traj.c: the 2-D experiments: trajectories (every optimizer on six
 * surfaces) and units (AdaDelta's claim of unit consistency). */
#include "lab.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TRAJ_SURFACES 6 /* the first six of lab_surfaces; the seventh is SAM's */
#define TRAJ_TOL 1e-2   /* "reached the minimum": within this distance */

/* The lab's default learning rates on each surface (docs/LAB.md): round
 * values that give each optimizer a fair, readable path in the default
 * number of steps; --tune replaces them by a grid search. On the bowl they
 * are the textbook's where it has one (ゼロから作るDeep Learning, ch06
 * optimizer_compare_naive.py: SGD 0.95, Momentum 0.1, AdaGrad 1.5, Adam 0.3,
 * 30 steps from (-7, 2)): SGD at 0.95 multiplies y by 1 - 2 * 0.95 = -0.9 per
 * step, the textbook figure's slowly damped zigzag. Elsewhere values near
 * what --tune finds, kept where the path stays on the plot. The saddle has
 * no minimum to tune for and uses the bowl's values. SAM (around
 * SGD+momentum) takes its base's rates. Columns: bowl, rosenbrock, beale,
 * himmelblau, ill-conditioned. */
static const struct {
    const char *name;
    double lr[5];
} default_lrs[] = {
    {"sgd", {0.95, 1e-3, 2e-5, 5e-3, 0.015}},
    {"momentum", {0.1, 2e-4, 2e-5, 5e-3, 0.02}},
    {"sam", {0.1, 2e-4, 2e-5, 5e-3, 0.02}},
    {"adagrad", {1.5, 1, 1, 0.5, 1}},
    {"rmsprop", {0.2, 0.01, 0.1, 0.05, 0.1}},
    {"adadelta", {1, 1, 1, 1, 1}},
    {"adam", {0.3, 0.1, 0.1, 0.3, 0.3}},
    {"adamw", {0.3, 0.1, 0.1, 0.3, 0.3}},
    {"radam", {1, 2e-4, 2e-5, 0.2, 5e-3}},
    {"nadam", {0.3, 0.1, 0.1, 0.05, 0.3}},
    {"adabound", {0.3, 5e-4, 2e-4, 0.02, 0.02}},
    {"adadelta-momentum", {1, 0.1, 0.02, 0.5, 1}},
    {"rmsprop-momentum", {0.02, 1e-3, 0.02, 2e-3, 0.02}},
};

static int lr_column(const lab_surface *s)
{
    static const char *cols[] = {"bowl", "rosenbrock", "beale", "himmelblau", "ill-conditioned"};
    int i;
    if (strcmp(s->name, "saddle") == 0) return 0;
    for (i = 0; i < 5; i++)
        if (strcmp(cols[i], s->name) == 0) return i;
    return 0;
}

static double default_lr(const lab_surface *s, const lab_optimizer *o)
{
    size_t i;
    for (i = 0; i < sizeof default_lrs / sizeof default_lrs[0]; i++)
        if (strcmp(default_lrs[i].name, o->name) == 0) return default_lrs[i].lr[lr_column(s)];
    return 1e-2;
}

/* o on s: the plain rule, or for "sam" the library's SAM around its base. */
static void run_on(const lab_surface *s, const lab_optimizer *o, const optim_hparams *hp, int steps, lab_path *p)
{
    if (o->sam)
        lab_surface_run_sam(s, hp, o->rho, steps, 1.0, p);
    else
        lab_surface_run(s, hp, steps, 1.0, p);
}

/* The 1-2-5 grid of --tune: 1e-5 ... 5. Larger rates make steps longer
 * than the plotted windows (and let AdamW's decoupled decay, lr * 0.01 per
 * step, pull the point to the origin by itself). */
int lab_tune_grid(double *out)
{
    int n = 0, e;
    for (e = -5; e <= 0; e++) {
        double base = pow(10.0, e);
        out[n++] = base;
        out[n++] = 2 * base;
        out[n++] = 5 * base;
    }
    return n;
}

/* The lr of the grid with the smallest distance to a minimum after `steps`
 * steps; among those within float precision of the best, the smallest (the
 * calmest path that does as well). */
static double tune_lr(const lab_surface *s, const lab_optimizer *o, int steps, double *best_dist)
{
    double grid[32], dist[32], best = INFINITY, lr = NAN;
    int n = lab_tune_grid(grid), i;
    for (i = 0; i < n; i++) {
        optim_hparams hp = lab_optimizer_hparams(o, grid[i]);
        lab_path p;
        run_on(s, o, &hp, steps, &p);
        dist[i] = p.diverged ? INFINITY : lab_surface_distance(s, p.x[p.n - 1], p.y[p.n - 1]);
        if (!(dist[i] >= 0)) dist[i] = INFINITY;
        if (dist[i] < best) best = dist[i];
        lab_path_free(&p);
    }
    for (i = 0; i < n; i++)
        if (dist[i] <= fmax(1e-6, best * 1.0001)) {
            lr = grid[i];
            break;
        }
    *best_dist = best;
    return isfinite(best) ? lr : default_lr(s, o);
}

static int first_within(const lab_path *p, const lab_surface *s, double tol)
{
    int t;
    for (t = 0; t < p->n; t++)
        if (lab_surface_distance(s, p->x[t], p->y[t]) <= tol) return t;
    return -1;
}

static int first_escape(const lab_path *p)
{
    int t;
    for (t = 0; t < p->n; t++)
        if (fabs(p->y[t]) >= 1.0) return t;
    return -1;
}

int lab_exp_trajectories(lab_ctx *ctx)
{
    static const char *cols[] = {"surface", "optimizer", "lr", "final distance", "steps to 0.01"};
    const lab_optimizer *sel[32];
    size_t nopt = lab_selected_optimizers(
        ctx, "sgd,momentum,sam,adagrad,rmsprop,adadelta,adam,adamw,radam,nadam,adabound", sel, 32);
    double bowl_lr[32];
    int si;
    size_t i;
    lab_json *surfaces = lab_json_put(ctx->exp, "surfaces", lab_json_object()), *table, *rows;
    char statement[4096];
    size_t len = 0;
    int bowl_reached = 0, held = -1;
    int ill_sgd = -1, ill_adaptive = -1;
    const char *ill_adaptive_name = "";
    const char *escape_fast = "", *escape_slow = "";
    int escape_fast_t = -1, escape_slow_t = -1;

    lab_json_set_str(ctx->exp, "lr_source", ctx->opt.tune ? "tuned" : "defaults");
    lab_json_set_num(ctx->exp, "tolerance", TRAJ_TOL);
    if (ctx->opt.tune) {
        double grid[32];
        int n = lab_tune_grid(grid);
        lab_json_put(ctx->exp, "tune_grid", lab_json_numbers(grid, (size_t)n));
    }
    table = lab_json_set(ctx->exp, "tables.final", lab_json_object());
    lab_json_set_str(table, "title", "where each optimizer ended");
    {
        lab_json *c = lab_json_put(table, "columns", lab_json_array());
        for (i = 0; i < 5; i++) lab_json_push(c, lab_json_str(cols[i]));
    }
    rows = lab_json_put(table, "rows", lab_json_array());

    for (si = 0; si < TRAJ_SURFACES; si++) {
        const lab_surface *s = &lab_surfaces[si];
        int saddle = s->nminima == 0;
        char *csv_name = lab_sprintf("trajectories_%s.csv", s->name);
        FILE *csv = lab_csv_open(ctx, csv_name, "optimizer,label,lr,step,x,y,f");
        lab_json *sj = lab_json_put(surfaces, s->name, lab_json_object()), *mins, *opts;
        lab_progress prog;
        char label[64];
        lab_json_set_str(sj, "title", s->title);
        lab_json_put(sj, "start", lab_json_numbers((double[]){s->x0, s->y0}, 2));
        lab_json_put(sj, "box", lab_json_numbers(s->box, 4));
        lab_json_set_num(sj, "steps", s->steps);
        mins = lab_json_put(sj, "minima", lab_json_array());
        for (i = 0; i < (size_t)s->nminima; i++) lab_json_push(mins, lab_json_numbers(s->minima + 2 * i, 2));
        lab_json_put(sj, "grid", lab_json_strf("surface_%s_grid.csv", s->name));
        lab_json_set_str(sj, "csv", csv_name);
        lab_surface_write_grid(ctx, s, 160, 160);
        opts = lab_json_put(sj, "optimizers", lab_json_object());
        snprintf(label, sizeof label, "%s%s", s->name, ctx->opt.tune && !saddle ? " (tuning)" : "");
        lab_progress_start(&prog, label, (long)nopt, "optimizer", 0);
        for (i = 0; i < nopt; i++) {
            const lab_optimizer *o = sel[i];
            double lr, dist, tuned_dist = NAN;
            optim_hparams hp;
            lab_path p;
            lab_json *oj;
            int t, reach;
            char *cells[5];
            size_t k;
            if (saddle)
                lr = si > 0 && ctx->opt.tune ? bowl_lr[i] : default_lr(s, o);
            else
                lr = ctx->opt.tune ? tune_lr(s, o, s->steps, &tuned_dist) : default_lr(s, o);
            if (si == 0) bowl_lr[i] = lr;
            hp = lab_optimizer_hparams(o, lr);
            run_on(s, o, &hp, s->steps, &p);
            for (t = 0; t < p.n; t++)
                fprintf(csv, "%s,%s,%g,%d,%.9g,%.9g,%.9g\n", o->name, o->label, lr, t, p.x[t], p.y[t], p.f[t]);
            oj = lab_json_put(opts, o->name, lab_json_object());
            lab_json_set_str(oj, "label", o->label);
            lab_json_set_num(oj, "lr", lr);
            lab_json_put(oj, "diverged", lab_json_bool(p.diverged));
            lab_json_put(oj, "final_point", lab_json_numbers((double[]){p.x[p.n - 1], p.y[p.n - 1]}, 2));
            lab_json_set_num(oj, "final_f", p.f[p.n - 1]);
            dist = p.diverged ? INFINITY : lab_surface_distance(s, p.x[p.n - 1], p.y[p.n - 1]);
            cells[0] = lab_xstrdup(s->name);
            cells[1] = lab_xstrdup(o->label);
            cells[2] = lab_sprintf("%g", lr);
            if (saddle) {
                int esc = first_escape(&p);
                lab_json_put(oj, "escape_step", esc >= 0 ? lab_json_num(esc) : lab_json_null());
                cells[3] = lab_xstrdup("(no minimum)");
                cells[4] = esc >= 0 ? lab_sprintf("escaped |y|>=1 at %d", esc) : lab_xstrdup("did not escape");
                if (esc >= 0 && (escape_fast_t < 0 || esc < escape_fast_t)) {
                    escape_fast_t = esc;
                    escape_fast = o->label;
                }
                if ((esc < 0 ? INT_MAX : esc) > escape_slow_t) {
                    escape_slow_t = esc < 0 ? INT_MAX : esc;
                    escape_slow = o->label;
                }
            } else {
                reach = p.diverged ? -1 : first_within(&p, s, TRAJ_TOL);
                lab_json_set_num(oj, "final_distance", dist);
                lab_json_put(oj, "steps_to_tol", reach >= 0 ? lab_json_num(reach) : lab_json_null());
                if (ctx->opt.tune) lab_json_set_num(oj, "tuned_distance", tuned_dist);
                cells[3] = p.diverged ? lab_xstrdup("diverged") : lab_sprintf("%.3g", dist);
                cells[4] = reach >= 0 ? lab_sprintf("%d", reach) : lab_xstrdup("not reached");
                if (si == 0 && reach >= 0) bowl_reached++;
                if (strcmp(s->name, "ill-conditioned") == 0) {
                    if (strcmp(o->name, "sgd") == 0) ill_sgd = reach >= 0 ? reach : 1 << 30;
                    if ((strcmp(o->name, "adagrad") == 0 || strcmp(o->name, "rmsprop") == 0 ||
                         strcmp(o->name, "adam") == 0) &&
                        reach >= 0 && (ill_adaptive < 0 || reach < ill_adaptive)) {
                        ill_adaptive = reach;
                        ill_adaptive_name = o->label;
                    }
                }
            }
            {
                lab_json *row = lab_json_push(rows, lab_json_array());
                for (k = 0; k < 5; k++) {
                    lab_json_push(row, lab_json_str(cells[k]));
                    free(cells[k]);
                }
            }
            lab_path_free(&p);
            lab_progress_update(&prog, (long)i + 1, NAN);
        }
        lab_progress_end(&prog, NULL);
        lab_csv_close(ctx, csv, csv_name);
        free(csv_name);
    }

    lab_json_set_num(ctx->exp, "bowl_reached", bowl_reached);
    lab_json_set_num(ctx->exp, "optimizers_run", (double)nopt);
    len += (size_t)snprintf(statement + len, sizeof statement - len,
                            "Learning rates: %s. On the bowl x\xc2\xb2/20 + y\xc2\xb2, %d of %zu optimizers get within "
                            "%g of the minimum in %d steps.",
                            ctx->opt.tune ? "chosen per surface by a grid search (--tune)"
                                          : "the lab's defaults (docs/LAB.md)",
                            bowl_reached, nopt, TRAJ_TOL, lab_surfaces[0].steps);
    if (ill_sgd >= 0 && ill_adaptive >= 0) {
        held = ill_adaptive < ill_sgd;
        if (ill_sgd >= 1 << 30)
            len += (size_t)snprintf(statement + len, sizeof statement - len,
                                    " On the ill-conditioned quadratic (condition number 100) SGD does not get there "
                                    "in %d steps, while %s takes %d.",
                                    lab_surface_find("ill-conditioned")->steps, ill_adaptive_name, ill_adaptive);
        else
            len += (size_t)snprintf(statement + len, sizeof statement - len,
                                    " On the ill-conditioned quadratic (condition number 100) SGD needs %d steps and "
                                    "the fastest of AdaGrad/RMSProp/Adam (%s) %d.",
                                    ill_sgd, ill_adaptive_name, ill_adaptive);
    }
    if (escape_fast_t >= 0 && escape_slow_t >= 0) {
        len += (size_t)snprintf(statement + len, sizeof statement - len,
                                " From the saddle, %s escapes first (step %d)", escape_fast, escape_fast_t);
        if (escape_slow_t == INT_MAX)
            len += (size_t)snprintf(statement + len, sizeof statement - len, "; %s does not escape in %d steps.",
                                    escape_slow, lab_surface_find("saddle")->steps);
        else
            len += (size_t)snprintf(statement + len, sizeof statement - len, "; %s escapes last (step %d).",
                                    escape_slow, escape_slow_t);
    }
    lab_finding(ctx,
                "One learning rate for every direction cannot suit both steep and flat directions; per-parameter "
                "learning rates can (seed: Momentumの課題, AdaGrad)",
                held, statement);
    return 0;
}

/* ---- units -------------------------------------------------------------------- */

int lab_exp_units(lab_ctx *ctx)
{
    /* The bowl again, in the parameters' own units and in units 1000 times
     * larger (u = w / 1000: gradients 1000 times larger, curvature 10^6). */
    const double scale = 1000.0;
    const lab_surface *s = lab_surface_find("bowl");
    const int steps = 1000;
    static const struct {
        const char *key, *opt, *label;
        double lr, eps_factor; /* eps multiplied by eps_factor in the rescaled run */
    } runs[] = {
        {"sgd", "sgd", "SGD (lr 0.9)", 0.9, 1},
        {"adam", "adam", "Adam (lr 0.2)", 0.2, 1},
        {"adadelta", "adadelta", "AdaDelta (eps 1e-6)", 1.0, 1},
        {"adadelta_eps_scaled", "adadelta", "AdaDelta (eps in units of u\xc2\xb2)", 1.0, 1.0 / (1000.0 * 1000.0)},
    };
    enum { NR = sizeof runs / sizeof runs[0] };
    double dev[NR];
    int diverged[NR];
    size_t r;
    int t;
    double d0 = lab_surface_distance(s, s->x0, s->y0);
    FILE *csv = lab_csv_open(ctx, "units_paths.csv", "run,label,units,step,x,y,distance");
    char statement[2048];
    int held;

    lab_json_set_num(ctx->exp, "scale", scale);
    lab_json_set_num(ctx->exp, "steps", steps);
    lab_json_set_str(ctx->exp, "surface", s->name);
    lab_json_set_str(ctx->exp, "grid", "surface_bowl_grid.csv");
    lab_json_put(ctx->exp, "box", lab_json_numbers(s->box, 4));
    lab_surface_write_grid(ctx, s, 160, 160);
    for (r = 0; r < NR; r++) {
        const lab_optimizer *o = lab_optimizer_find(runs[r].opt);
        optim_hparams hp = lab_optimizer_hparams(o, runs[r].lr), hp2;
        lab_path a, b;
        lab_json *rj;
        hp2 = hp;
        hp2.eps = hp.eps * runs[r].eps_factor;
        lab_surface_run(s, &hp, steps, 1.0, &a);
        lab_surface_run(s, &hp2, steps, scale, &b);
        for (t = 0; t < a.n; t++)
            fprintf(csv, "%s,%s,w,%d,%.9g,%.9g,%.9g\n", runs[r].key, runs[r].label, t, a.x[t], a.y[t],
                    lab_surface_distance(s, a.x[t], a.y[t]));
        for (t = 0; t < b.n; t++)
            fprintf(csv, "%s,%s,w/1000,%d,%.9g,%.9g,%.9g\n", runs[r].key, runs[r].label, t, b.x[t], b.y[t],
                    lab_surface_distance(s, b.x[t], b.y[t]));
        /* How far the path in the original units moved, relative to the
         * start's distance to the minimum. */
        diverged[r] = a.diverged || b.diverged;
        dev[r] = 0;
        if (diverged[r]) {
            dev[r] = INFINITY;
        } else {
            for (t = 0; t < a.n && t < b.n; t++) {
                double d = hypot(a.x[t] - b.x[t], a.y[t] - b.y[t]) / d0;
                if (d > dev[r]) dev[r] = d;
            }
        }
        rj = lab_json_put(ctx->exp, runs[r].key, lab_json_object());
        lab_json_set_str(rj, "label", runs[r].label);
        lab_json_set_num(rj, "lr", runs[r].lr);
        lab_json_set_num(rj, "eps", hp.eps);
        lab_json_set_num(rj, "eps_rescaled", hp2.eps);
        lab_json_put(rj, "diverged", lab_json_bool(diverged[r]));
        lab_json_set_num(rj, "path_change", dev[r]);
        lab_json_put(rj, "final_point", lab_json_numbers((double[]){a.x[a.n - 1], a.y[a.n - 1]}, 2));
        lab_json_put(rj, "final_point_rescaled", lab_json_numbers((double[]){b.x[b.n - 1], b.y[b.n - 1]}, 2));
        lab_path_free(&a);
        lab_path_free(&b);
    }
    lab_csv_close(ctx, csv, "units_paths.csv");

    /* "Nearly unchanged": the largest gap between the two paths is under 1 %
     * of the distance the optimizer had to travel. */
    held = dev[2] < 0.01 && !(dev[0] < 0.01) && !(dev[1] < 0.01);
    {
        char pct[NR][64];
        for (r = 0; r < NR; r++) {
            if (diverged[r])
                snprintf(pct[r], sizeof pct[r], "diverged");
            else
                snprintf(pct[r], sizeof pct[r], "moved by up to %.3g %%", 100 * dev[r]);
        }
        snprintf(statement, sizeof statement,
                 "With the parameters in units 1000 times larger, the path in the original units %s for SGD, %s "
                 "for Adam, and %s for AdaDelta with its default eps = 1e-6 (of the start's distance to the "
                 "minimum, over %d steps). With eps rescaled to the new units (eps / 1000\xc2\xb2) AdaDelta's path "
                 "%s. %s",
                 pct[0], pct[1], pct[2], steps, pct[3],
                 held ? "AdaDelta's update carries the parameters' units, as the seed argues."
                 : dev[3] < 0.01 ? "The ratio RMS[\xce\x94w]/RMS[g] does carry the units, but eps inside "
                                   "RMS[\xce\x94w] = sqrt(E[\xce\x94w\xc2\xb2] + eps) has units of w\xc2\xb2 and "
                                   "sets the size of the first steps, so with a fixed eps AdaDelta is not unit-free."
                                 : "Neither run kept its path.");
    }
    lab_finding(ctx, "AdaDelta's update has the units of the parameters, so it needs no learning rate to fix them "
                     "(seed: 単位の一貫性)",
                held, statement);
    return 0;
}
