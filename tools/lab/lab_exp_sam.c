/* lab_exp_sam.c: the seed slides' GD-vs-SAM figure. Both runs are the
 * library's: SGD for GD, and optim_sam around the same SGD for SAM. */
#include "lab.h"
#include "optim_sam.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SAM_LR 0.08
#define SAM_RHO 0.25
#define SAM_STEPS 140
/* The Hessian's top eigenvalue above which a point counts as "in a sharp
 * region": the flat well's curvature is about 5, the sharp well's over 1000. */
#define SAM_SHARP 50.0

typedef struct sam_run {
    double x[SAM_STEPS + 1], y[SAM_STEPS + 1], loss[SAM_STEPS + 1], proxy[SAM_STEPS + 1], eig[SAM_STEPS + 1];
} sam_run;

/* The seed's sharpness proxy L(w + rho g/|g|) - L(w), g = grad L(w). */
static double proxy(const lab_surface *s, double x, double y)
{
    double g[2], n;
    s->grad(x, y, g);
    n = hypot(g[0], g[1]);
    if (!(n > 0)) return 0;
    return s->f(x + SAM_RHO * g[0] / n, y + SAM_RHO * g[1] / n) - s->f(x, y);
}

static void run(const lab_surface *s, int use_sam, sam_run *out)
{
    float w[2], g[2];
    optim *opt = NULL;
    optim_sam *sam = NULL;
    optim_error err;
    optim_hparams hp = lab_optimizer_hparams(lab_optimizer_find("sgd"), SAM_LR);
    int t;
    w[0] = (float)s->x0;
    w[1] = (float)s->y0;
    lab_check(optim_create(&opt, OPTIM_SGD), "optim_create", NULL);
    lab_check(optim_add_group(opt, &hp, NULL), "optim_add_group", optim_errmsg(opt));
    lab_check(optim_add_param(opt, 0, w, g, 2, "w", NULL), "optim_add_param", optim_errmsg(opt));
    lab_check(optim_set_threads(opt, 1), "optim_set_threads", optim_errmsg(opt));
    if (use_sam) lab_check(optim_sam_create(&sam, opt, SAM_RHO, 2.0, 0, 0.0, &err), "optim_sam_create", err.message);
    for (t = 0;; t++) {
        double gd[2], x = w[0], y = w[1];
        out->x[t] = x;
        out->y[t] = y;
        out->loss[t] = s->f(x, y);
        out->proxy[t] = proxy(s, x, y);
        out->eig[t] = lab_surface_top_eigenvalue(s, x, y);
        if (t == SAM_STEPS) break;
        s->grad(x, y, gd);
        g[0] = (float)gd[0];
        g[1] = (float)gd[1];
        if (sam) {
            /* first_step moves w to w + rho g/|g|; the gradient there drives the update. */
            lab_check(optim_sam_first_step(sam), "optim_sam_first_step", optim_sam_errmsg(sam));
            s->grad(w[0], w[1], gd);
            g[0] = (float)gd[0];
            g[1] = (float)gd[1];
            lab_check(optim_sam_second_step(sam), "optim_sam_second_step", optim_sam_errmsg(sam));
        } else {
            lab_check(optim_step(opt), "optim_step", optim_errmsg(opt));
        }
    }
    optim_sam_free(sam);
    optim_free(opt);
}

static int argmax(const double *v, int n)
{
    int i, best = 0;
    for (i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

static int count_above(const double *v, int n, double level)
{
    int i, c = 0;
    for (i = 0; i < n; i++) c += v[i] > level;
    return c;
}

/* Which well a point ended in: the nearer of the two centres. */
static const char *well(double x, double y)
{
    return hypot(x - 1.2, y + 0.8) < hypot(x + 0.6, y - 0.6) ? "sharp" : "flat";
}

int lab_exp_sam(lab_ctx *ctx)
{
    const lab_surface *s = lab_surface_find("sam");
    sam_run *r = (sam_run *)lab_xcalloc(2, sizeof *r);
    static const char *names[2] = {"gd", "sam"}, *labels[2] = {"GD", "SAM"};
    FILE *csv;
    int k, t, peak[2], sharp_steps[2];
    char statement[2048];

    run(s, 0, &r[0]);
    run(s, 1, &r[1]);
    lab_surface_write_grid(ctx, s, 220, 160);
    csv = lab_csv_open(ctx, "sam_paths.csv", "method,step,x,y,loss,sharpness_proxy,top_eigenvalue");
    for (k = 0; k < 2; k++)
        for (t = 0; t <= SAM_STEPS; t++)
            fprintf(csv, "%s,%d,%.9g,%.9g,%.9g,%.9g,%.9g\n", names[k], t, r[k].x[t], r[k].y[t], r[k].loss[t],
                    r[k].proxy[t], r[k].eig[t]);
    lab_csv_close(ctx, csv, "sam_paths.csv");

    lab_json_set_num(ctx->exp, "lr", SAM_LR);
    lab_json_set_num(ctx->exp, "rho", SAM_RHO);
    lab_json_set_num(ctx->exp, "steps", SAM_STEPS);
    lab_json_put(ctx->exp, "start", lab_json_numbers((double[]){s->x0, s->y0}, 2));
    lab_json_put(ctx->exp, "box", lab_json_numbers(s->box, 4));
    lab_json_set_str(ctx->exp, "grid", "surface_sam_grid.csv");
    lab_json_set_num(ctx->exp, "sharp_eigenvalue_level", SAM_SHARP);
    lab_json_put(ctx->exp, "wells", lab_json_numbers((double[]){1.2, -0.8, -0.6, 0.6}, 4));
    for (k = 0; k < 2; k++) {
        lab_json *o = lab_json_put(ctx->exp, names[k], lab_json_object());
        peak[k] = argmax(r[k].proxy, SAM_STEPS + 1);
        sharp_steps[k] = count_above(r[k].eig, SAM_STEPS + 1, SAM_SHARP);
        lab_json_set_str(o, "label", labels[k]);
        lab_json_set_num(o, "max_sharpness", r[k].proxy[peak[k]]);
        lab_json_set_num(o, "max_sharpness_step", peak[k]);
        lab_json_set_num(o, "final_sharpness", r[k].proxy[SAM_STEPS]);
        lab_json_put(o, "final_point", lab_json_numbers((double[]){r[k].x[SAM_STEPS], r[k].y[SAM_STEPS]}, 2));
        lab_json_set_num(o, "final_loss", r[k].loss[SAM_STEPS]);
        lab_json_set_num(o, "max_top_eigenvalue", r[k].eig[argmax(r[k].eig, SAM_STEPS + 1)]);
        lab_json_set_num(o, "steps_in_sharp_region", sharp_steps[k]);
        lab_json_set_str(o, "final_well", well(r[k].x[SAM_STEPS], r[k].y[SAM_STEPS]));
    }
    snprintf(statement, sizeof statement,
             "GD's sharpness proxy peaks at %.3g (step %d, where the Hessian's top eigenvalue is %.3g): it passes "
             "through the sharp well and spends %d step%s where the top eigenvalue exceeds %g. SAM's proxy never "
             "exceeds %.3g and it spends %d step%s there. GD ends at (%.3f, %.3f) in the %s well (loss %.4f), SAM at "
             "(%.3f, %.3f) in the %s well (loss %.4f).",
             r[0].proxy[peak[0]], peak[0], r[0].eig[peak[0]], sharp_steps[0], sharp_steps[0] == 1 ? "" : "s",
             SAM_SHARP, r[1].proxy[peak[1]], sharp_steps[1], sharp_steps[1] == 1 ? "" : "s", r[0].x[SAM_STEPS],
             r[0].y[SAM_STEPS], well(r[0].x[SAM_STEPS], r[0].y[SAM_STEPS]), r[0].loss[SAM_STEPS],
             r[1].x[SAM_STEPS], r[1].y[SAM_STEPS], well(r[1].x[SAM_STEPS], r[1].y[SAM_STEPS]),
             r[1].loss[SAM_STEPS]);
    lab_finding(ctx,
                "Vanilla GD passes through sharp points, so its sharpness proxy spikes; SAM steers around them "
                "(slides: GD vs SAM, sharpness proxy)",
                r[1].proxy[peak[1]] < r[0].proxy[peak[0]], statement);
    free(r);
    return 0;
}
