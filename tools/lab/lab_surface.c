/* lab_surface.c: the 2-D test surfaces (value, gradient, Hessian in closed
 * form) and running an update rule of the library on them. */
#include "lab.h"
#include "optim_sam.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- The textbook bowl f = x^2/20 + y^2 (curvatures 0.1 and 2) ------------ */
static double bowl_f(double x, double y) { return x * x / 20 + y * y; }
static void bowl_g(double x, double y, double g[2])
{
    g[0] = x / 10;
    g[1] = 2 * y;
}
static void bowl_h(double x, double y, double h[3])
{
    (void)x;
    (void)y;
    h[0] = 0.1;
    h[1] = 0;
    h[2] = 2;
}

/* ---- Rosenbrock (1 - x)^2 + 100 (y - x^2)^2 ------------------------------------ */
static double rosen_f(double x, double y) { return (1 - x) * (1 - x) + 100 * (y - x * x) * (y - x * x); }
static void rosen_g(double x, double y, double g[2])
{
    g[0] = -2 * (1 - x) - 400 * x * (y - x * x);
    g[1] = 200 * (y - x * x);
}
static void rosen_h(double x, double y, double h[3])
{
    h[0] = 2 - 400 * y + 1200 * x * x;
    h[1] = -400 * x;
    h[2] = 200;
}

/* ---- Beale: sum over k = 1..3 of t_k^2, t_k = c_k - x + x y^k ------------------- */
static const double beale_c[3] = {1.5, 2.25, 2.625};
static double ipow(double y, int k)
{
    double r = 1;
    while (k-- > 0) r *= y;
    return r;
}
static double beale_f(double x, double y)
{
    double f = 0;
    int k;
    for (k = 1; k <= 3; k++) {
        double t = beale_c[k - 1] - x + x * ipow(y, k);
        f += t * t;
    }
    return f;
}
static void beale_g(double x, double y, double g[2])
{
    int k;
    g[0] = g[1] = 0;
    for (k = 1; k <= 3; k++) {
        double t = beale_c[k - 1] - x + x * ipow(y, k);
        g[0] += 2 * t * (ipow(y, k) - 1);
        g[1] += 2 * t * k * x * ipow(y, k - 1);
    }
}
static void beale_h(double x, double y, double h[3])
{
    int k;
    h[0] = h[1] = h[2] = 0;
    for (k = 1; k <= 3; k++) {
        double t = beale_c[k - 1] - x + x * ipow(y, k);
        double tx = ipow(y, k) - 1, ty = k * x * ipow(y, k - 1), txy = k * ipow(y, k - 1);
        double tyy = k >= 2 ? k * (k - 1) * x * ipow(y, k - 2) : 0.0;
        h[0] += 2 * tx * tx;
        h[1] += 2 * (tx * ty + t * txy);
        h[2] += 2 * (ty * ty + t * tyy);
    }
}

/* ---- Himmelblau (x^2 + y - 11)^2 + (x + y^2 - 7)^2: four minima ---------------- */
static double himmel_f(double x, double y)
{
    double a = x * x + y - 11, b = x + y * y - 7;
    return a * a + b * b;
}
static void himmel_g(double x, double y, double g[2])
{
    double a = x * x + y - 11, b = x + y * y - 7;
    g[0] = 4 * x * a + 2 * b;
    g[1] = 2 * a + 4 * y * b;
}
static void himmel_h(double x, double y, double h[3])
{
    double a = x * x + y - 11, b = x + y * y - 7;
    h[0] = 4 * a + 8 * x * x + 2;
    h[1] = 4 * x + 4 * y;
    h[2] = 2 + 4 * b + 8 * y * y;
}

/* ---- The saddle x^2 - y^2 ----------------------------------------------------------- */
static double saddle_f(double x, double y) { return x * x - y * y; }
static void saddle_g(double x, double y, double g[2])
{
    g[0] = 2 * x;
    g[1] = -2 * y;
}
static void saddle_h(double x, double y, double h[3])
{
    (void)x;
    (void)y;
    h[0] = 2;
    h[1] = 0;
    h[2] = -2;
}

/* ---- Ill-conditioned quadratic (x^2 + 100 y^2) / 2 (condition number 100) ----------- */
static double ill_f(double x, double y) { return 0.5 * (x * x + 100 * y * y); }
static void ill_g(double x, double y, double g[2])
{
    g[0] = x;
    g[1] = 100 * y;
}
static void ill_h(double x, double y, double h[3])
{
    (void)x;
    (void)y;
    h[0] = 1;
    h[1] = 0;
    h[2] = 100;
}

/* ---- The seed slides' SAM landscape: a sharp well and a flat one ---------------------- */
typedef struct bump {
    double amp, cx, cy, sx, sy;
} bump;
static const bump sam_bumps[2] = {{1.6, 1.2, -0.8, 0.03, 0.0025}, {1.2, -0.6, 0.6, 0.7, 0.5}};

static double sam_f(double x, double y)
{
    double f = 0.5 * (0.2 * x * x + y * y);
    int i;
    for (i = 0; i < 2; i++) {
        const bump *b = &sam_bumps[i];
        double u = x - b->cx, v = y - b->cy;
        f -= b->amp * exp(-(u * u / b->sx + v * v / b->sy));
    }
    return f;
}
static void sam_g(double x, double y, double g[2])
{
    int i;
    g[0] = 0.2 * x;
    g[1] = y;
    for (i = 0; i < 2; i++) {
        const bump *b = &sam_bumps[i];
        double u = x - b->cx, v = y - b->cy, e = b->amp * exp(-(u * u / b->sx + v * v / b->sy));
        g[0] += 2 * u / b->sx * e;
        g[1] += 2 * v / b->sy * e;
    }
}
static void sam_h(double x, double y, double h[3])
{
    int i;
    h[0] = 0.2;
    h[1] = 0;
    h[2] = 1;
    for (i = 0; i < 2; i++) {
        const bump *b = &sam_bumps[i];
        double u = x - b->cx, v = y - b->cy, e = b->amp * exp(-(u * u / b->sx + v * v / b->sy));
        h[0] -= (4 * u * u / (b->sx * b->sx) - 2 / b->sx) * e;
        h[1] -= 4 * u * v / (b->sx * b->sy) * e;
        h[2] -= (4 * v * v / (b->sy * b->sy) - 2 / b->sy) * e;
    }
}

static const double bowl_min[] = {0, 0};
static const double rosen_min[] = {1, 1};
static const double beale_min[] = {3, 0.5};
static const double himmel_min[] = {3, 2, -2.805118086952745, 3.131312518250573, -3.779310253377747,
                                    -3.283185991286170, 3.584428340330492, -1.848126526964404};
static const double ill_min[] = {0, 0};

const lab_surface lab_surfaces[] = {
    {"bowl", "x\xc2\xb2/20 + y\xc2\xb2", bowl_f, bowl_g, bowl_h, -7, 2, 200, {-8, 8, -3, 3}, bowl_min, 1},
    {"rosenbrock", "Rosenbrock (1-x)\xc2\xb2 + 100(y-x\xc2\xb2)\xc2\xb2", rosen_f, rosen_g, rosen_h, -2, 2, 2000,
     {-2.5, 2, -1, 4}, rosen_min, 1},
    {"beale", "Beale", beale_f, beale_g, beale_h, 3, 4, 2000, {-2.5, 4.5, -3, 4.5}, beale_min, 1},
    {"himmelblau", "Himmelblau", himmel_f, himmel_g, himmel_h, -0.27, -0.9, 200, {-5, 5, -5, 5}, himmel_min, 4},
    {"saddle", "saddle x\xc2\xb2 - y\xc2\xb2", saddle_f, saddle_g, saddle_h, 1, 1e-3, 100, {-1.5, 1.5, -1.5, 1.5},
     NULL, 0},
    {"ill-conditioned", "ill-conditioned (x\xc2\xb2 + 100y\xc2\xb2)/2", ill_f, ill_g, ill_h, -7, 2, 200,
     {-8, 8, -3, 3}, ill_min, 1},
    /* Not a trajectories surface: the SAM experiment's landscape. */
    {"sam", "sharp and flat wells", sam_f, sam_g, sam_h, 1.6, -1.0, 140, {-2, 2.5, -1.5, 1.5}, NULL, 0},
};
const size_t lab_surface_count = sizeof lab_surfaces / sizeof lab_surfaces[0];

const lab_surface *lab_surface_find(const char *name)
{
    size_t i;
    for (i = 0; i < lab_surface_count; i++)
        if (strcmp(lab_surfaces[i].name, name) == 0) return &lab_surfaces[i];
    return NULL;
}

double lab_surface_distance(const lab_surface *s, double x, double y)
{
    double best = NAN;
    int i;
    for (i = 0; i < s->nminima; i++) {
        double d = hypot(x - s->minima[2 * i], y - s->minima[2 * i + 1]);
        if (!(d >= best)) best = d;
    }
    return best;
}

double lab_surface_top_eigenvalue(const lab_surface *s, double x, double y)
{
    double h[3], mean, diff;
    s->hess(x, y, h);
    mean = 0.5 * (h[0] + h[2]);
    diff = 0.5 * (h[0] - h[2]);
    return mean + sqrt(diff * diff + h[1] * h[1]);
}

/* A run counts as diverged once a coordinate leaves this range: no surface
 * here has anything to find that far out. */
#define LAB_DIVERGED 1e6

/* Set g to the gradient in the optimizer's units u = w / scale at the
 * point p holds (dL/du = scale * dL/dw). */
static void grad_in_units(const lab_surface *s, const float p[2], double scale, float g[2])
{
    double gd[2];
    s->grad((double)p[0] * scale, (double)p[1] * scale, gd);
    g[0] = (float)(gd[0] * scale);
    g[1] = (float)(gd[1] * scale);
}

static void surface_run(const lab_surface *s, const optim_hparams *hp, const lab_opt_hooks *hooks, double sam_rho,
                        int steps, double scale, lab_path *path)
{
    float p[2], g[2] = {0, 0};
    const lab_tensor w = {"w", p, g, 1, 2};
    lab_opt opt;
    optim_sam *sam = NULL;
    optim_error err;
    int t;
    lab_opt_build(&opt, hooks, hp, &w, 1, 0);
    /* SAM wraps one optimizer object (surface_run is given no hooks with it). */
    if (sam_rho > 0)
        lab_check(optim_sam_create(&sam, opt.part[0], sam_rho, 2.0, 0, 0.0, &err), "optim_sam_create", err.message);
    path->x = (double *)lab_xmalloc(sizeof(double) * (size_t)(steps + 1));
    path->y = (double *)lab_xmalloc(sizeof(double) * (size_t)(steps + 1));
    path->f = (double *)lab_xmalloc(sizeof(double) * (size_t)(steps + 1));
    path->diverged = 0;
    p[0] = (float)(s->x0 / scale);
    p[1] = (float)(s->y0 / scale);
    for (t = 0;; t++) {
        double x, y;
        /* The point to record: the evaluation point of a rule that has two. */
        lab_opt_set_eval(hooks, &opt, 1);
        x = (double)p[0] * scale;
        y = (double)p[1] * scale;
        lab_opt_set_eval(hooks, &opt, 0);
        path->x[t] = x;
        path->y[t] = y;
        path->f[t] = s->f(x, y);
        path->n = t + 1;
        if (!(fabs(x) < LAB_DIVERGED && fabs(y) < LAB_DIVERGED) || !isfinite(path->f[t])) {
            path->diverged = 1;
            break;
        }
        if (t == steps) break;
        grad_in_units(s, p, scale, g);
        if (sam) {
            /* first_step moves p to p + rho g/|g|; the gradient there drives
             * the base optimizer's step from the restored p. */
            lab_check(optim_sam_first_step(sam), "optim_sam_first_step", optim_sam_errmsg(sam));
            grad_in_units(s, p, scale, g);
            lab_check(optim_sam_second_step(sam), "optim_sam_second_step", optim_sam_errmsg(sam));
        } else {
            lab_opt_step(&opt);
        }
    }
    optim_sam_free(sam);
    lab_opt_free(&opt);
}

void lab_surface_run(const lab_surface *s, const optim_hparams *hp, int steps, double scale, lab_path *path)
{
    surface_run(s, hp, NULL, 0.0, steps, scale, path);
}

void lab_surface_run_sam(const lab_surface *s, const optim_hparams *hp, double rho, int steps, double scale,
                         lab_path *path)
{
    surface_run(s, hp, NULL, rho, steps, scale, path);
}

void lab_surface_run_hooks(const lab_surface *s, const optim_hparams *hp, const lab_opt_hooks *hooks, int steps,
                           lab_path *path)
{
    surface_run(s, hp, hooks, 0.0, steps, 1.0, path);
}

void lab_path_free(lab_path *p)
{
    free(p->x);
    free(p->y);
    free(p->f);
    memset(p, 0, sizeof *p);
}

void lab_surface_write_grid(lab_ctx *ctx, const lab_surface *s, int nx, int ny)
{
    char *name = lab_sprintf("surface_%s_grid.csv", s->name);
    char *header = (char *)lab_xmalloc((size_t)nx * 24 + 8);
    size_t len;
    FILE *f;
    int i, j;
    /* Header row: "y\x" and the x values; then one row per y. */
    len = (size_t)sprintf(header, "y\\x");
    for (i = 0; i < nx; i++)
        len += (size_t)sprintf(header + len, ",%.9g", s->box[0] + (s->box[1] - s->box[0]) * i / (nx - 1));
    f = lab_csv_open(ctx, name, header);
    free(header);
    for (j = 0; j < ny; j++) {
        double y = s->box[2] + (s->box[3] - s->box[2]) * j / (ny - 1);
        fprintf(f, "%.9g", y);
        for (i = 0; i < nx; i++) fprintf(f, ",%.7g", s->f(s->box[0] + (s->box[1] - s->box[0]) * i / (nx - 1), y));
        fprintf(f, "\n");
    }
    lab_csv_close(ctx, f, name);
    free(name);
}
