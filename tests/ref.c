/* ref.c: see ref.h. Deliberately plain: one formula per line, in double.
 * One function per rule, in a table keyed by rule. */
#include "ref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a rule's step sees besides its state: the per-step scalars. */
typedef struct ref_ctx {
    const optim_hparams *hp;
    double lr, t;
    double b1t, b2t;   /* beta1^t, beta2^t */
    double mu, mu_next; /* NAdam; ASGD's mu */
    double eta;         /* ASGD */
    int in;            /* eps inside the square root */
    int f32;           /* the tensors are float32 (ties of a sign are decided in float) */
    double sf_lr, ckp1; /* schedule-free: the warmed-up lr, the average's weight */
} ref_ctx;

/* One rule: update p[i] with the gradient d (as the rule sees it). */
typedef void (*ref_elem_fn)(const ref_ctx *c, ref_state *st, size_t i, double *p, double d);

/* sqrt(x) + eps, or sqrt(x + eps) with eps inside. */
static double rms(double x, double eps, int inside)
{
    return inside ? sqrt(x + eps) : sqrt(x) + eps;
}

static void ref_sgd(const ref_ctx *c, ref_state *st, size_t i, double *p, double d)
{
    const optim_hparams *hp = c->hp;
    if (hp->momentum != 0) {
        st->buf[i] = st->buf_init ? hp->momentum * st->buf[i] + (1 - hp->dampening) * d : d;
        d = hp->nesterov ? d + hp->momentum * st->buf[i] : st->buf[i];
    }
    *p -= c->lr * d;
}

static void ref_adagrad(const ref_ctx *c, ref_state *st, size_t i, double *p, double d)
{
    double clr = c->lr / (1 + (c->t - 1) * c->hp->lr_decay);
    st->sum[i] += d * d;
    *p -= clr * d / rms(st->sum[i], c->hp->eps, c->in);
}

static void ref_rmsprop(const ref_ctx *c, ref_state *st, size_t i, double *p, double d)
{
    const optim_hparams *hp = c->hp;
    double a = hp->alpha, v, avg;
    st->sq[i] = a * st->sq[i] + (1 - a) * d * d;
    v = st->sq[i];
    if (hp->centered) {
        st->ga[i] = a * st->ga[i] + (1 - a) * d;
        v -= st->ga[i] * st->ga[i];
    }
    avg = rms(v, hp->eps, c->in);
    if (hp->momentum > 0) {
        st->buf[i] = hp->momentum * st->buf[i] + d / avg;
        *p -= c->lr * st->buf[i];
    } else {
        *p -= c->lr * d / avg;
    }
}

static void ref_adadelta(const ref_ctx *c, ref_state *st, size_t i, double *p, double d)
{
    const optim_hparams *hp = c->hp;
    double r = hp->rho, delta;
    st->sq[i] = r * st->sq[i] + (1 - r) * d * d;
    delta = rms(st->acc[i], hp->eps, c->in) / rms(st->sq[i], hp->eps, c->in) * d;
    st->acc[i] = r * st->acc[i] + (1 - r) * delta * delta;
    if (hp->momentum > 0) {
        st->buf[i] = hp->momentum * st->buf[i] + delta;
        *p -= c->lr * st->buf[i];
    } else {
        *p -= c->lr * delta;
    }
}

static void ref_adam(const ref_ctx *c, ref_state *st, size_t i, double *p, double d)
{
    const optim_hparams *hp = c->hp;
    double mhat, vhat, vv;
    st->m[i] = hp->beta1 * st->m[i] + (1 - hp->beta1) * d;
    st->v[i] = hp->beta2 * st->v[i] + (1 - hp->beta2) * d * d;
    vv = st->v[i];
    if (hp->amsgrad) {
        /* torch.maximum (and the authors' torch.max): NaN if either side is NaN. */
        if (isnan(st->v[i]) || st->v[i] > st->vmax[i]) st->vmax[i] = st->v[i];
        vv = st->vmax[i];
    }
    mhat = hp->bias_correction ? st->m[i] / (1 - c->b1t) : st->m[i];
    vhat = hp->bias_correction ? vv / (1 - c->b2t) : vv;
    *p -= c->lr * mhat / rms(vhat, hp->eps, c->in);
}

static void ref_radam(const ref_ctx *c, ref_state *st, size_t i, double *p, double d)
{
    const optim_hparams *hp = c->hp;
    double rho_inf = 2 / (1 - hp->beta2) - 1;
    double rho_t = rho_inf - 2 * c->t * c->b2t / (1 - c->b2t);
    double mhat;
    st->m[i] = hp->beta1 * st->m[i] + (1 - hp->beta1) * d;
    st->v[i] = hp->beta2 * st->v[i] + (1 - hp->beta2) * d * d;
    mhat = st->m[i] / (1 - c->b1t);
    if (rho_t > 5) {
        double r = sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t));
        *p -= c->lr * mhat * r * sqrt(1 - c->b2t) / rms(st->v[i], hp->eps, c->in);
    } else {
        *p -= c->lr * mhat;
    }
}

static void ref_nadam(const ref_ctx *c, ref_state *st, size_t i, double *p, double d)
{
    const optim_hparams *hp = c->hp;
    double denom;
    st->m[i] = hp->beta1 * st->m[i] + (1 - hp->beta1) * d;
    st->v[i] = hp->beta2 * st->v[i] + (1 - hp->beta2) * d * d;
    denom = rms(st->v[i] / (1 - c->b2t), hp->eps, c->in);
    *p -= c->lr * (1 - c->mu) / (1 - st->mu_product) * d / denom;
    *p -= c->lr * c->mu_next / (1 - st->mu_product * c->mu_next) * st->m[i] / denom;
}

static void ref_adabound(const ref_ctx *c, ref_state *st, size_t i, double *p, double d)
{
    const optim_hparams *hp = c->hp;
    double vv, step, fl, lower, upper, x;
    st->m[i] = hp->beta1 * st->m[i] + (1 - hp->beta1) * d;
    st->v[i] = hp->beta2 * st->v[i] + (1 - hp->beta2) * d * d;
    vv = st->v[i];
    if (hp->amsgrad) {
        /* torch.maximum (and the authors' torch.max): NaN if either side is NaN. */
        if (isnan(st->v[i]) || st->v[i] > st->vmax[i]) st->vmax[i] = st->v[i];
        vv = st->vmax[i];
    }
    step = hp->bias_correction ? c->lr * sqrt(1 - c->b2t) / (1 - c->b1t) : c->lr;
    fl = hp->final_lr * c->lr / st->base_lr;
    lower = fl * (1 - 1 / (hp->gamma * c->t + 1));
    upper = fl * (1 + 1 / (hp->gamma * c->t));
    x = step / rms(vv, hp->eps, c->in);
    if (x < lower) x = lower;
    if (x > upper) x = upper;
    *p -= x * st->m[i];
}

/* Lion (the authors' lion_pytorch.py): the sign of c = beta1 m + (1 - beta1) g,
 * then m moves with beta2. sign is discontinuous at 0: where |c| is within
 * float rounding of 0 (below 1e-6 of its terms), the reference takes the sign
 * of c formed as the library forms it in the tensor's type (an exact tie is
 * the only place the two can differ by more than rounding). */
static double ref_sign(double x)
{
    return x > 0 ? 1.0 : (x < 0 ? -1.0 : x);
}

static void ref_lion(const ref_ctx *c, ref_state *st, size_t i, double *p, double d)
{
    const optim_hparams *hp = c->hp;
    double a = hp->beta1 * st->m[i], b = (1 - hp->beta1) * d;
    double cc = a + b, sg = ref_sign(cc);
    if (fabs(cc) <= 1e-6 * (fabs(a) + fabs(b))) {
        if (c->f32)
            sg = ref_sign((double)((float)st->m[i] * (float)hp->beta1 + (float)d * (float)(1 - hp->beta1)));
        else
            sg = ref_sign(st->m[i] * hp->beta1 + d * (1 - hp->beta1));
    }
    st->m[i] = hp->beta2 * st->m[i] + (1 - hp->beta2) * d;
    *p -= c->lr * sg;
}

/* Schedule-free SGD and AdamW (facebookresearch/schedule_free's
 * SGDScheduleFree, AdamWScheduleFree): y is the parameter, z the SGD
 * sequence, x never stored; the scalars in ref_step_any. */
/* torch.lerp's formula (ATen's Lerp.h), so that Inf and NaN land where torch's do:
 * a + w (b - a) for |w| < 0.5, else b - (b - a)(1 - w). */
static double ref_lerp(double a, double b, double w)
{
    return fabs(w) < 0.5 ? a + w * (b - a) : b - (b - a) * (1 - w);
}

static void ref_sgd_sf(const ref_ctx *c, ref_state *st, size_t i, double *p, double d)
{
    double y = *p, z = st->z_init ? st->z[i] : y;
    y = ref_lerp(y, z, c->ckp1);
    y += c->sf_lr * (c->hp->momentum * (1 - c->ckp1) - 1) * d;
    st->z[i] = z - c->sf_lr * d;
    *p = y;
}

static void ref_adamw_sf(const ref_ctx *c, ref_state *st, size_t i, double *p, double d)
{
    const optim_hparams *hp = c->hp;
    double y = *p, z = st->z_init ? st->z[i] : y, gn;
    st->v[i] = hp->beta2 * st->v[i] + (1 - hp->beta2) * d * d;
    gn = d / (sqrt(st->v[i] / (1 - c->b2t)) + hp->eps);
    if (hp->weight_decay != 0) gn += hp->weight_decay * y; /* at y, only when on (as the reference) */
    y = ref_lerp(y, z, c->ckp1);
    y += c->sf_lr * (hp->beta1 * (1 - c->ckp1) - 1) * gn;
    st->z[i] = z - c->sf_lr * gn;
    *p = y;
}

void ref_sf_switch(const optim_hparams *hp, double *p, const ref_state *st, int to_eval)
{
    const double cc = hp->rule == OPTIM_SGD_SCHEDULE_FREE ? hp->momentum : hp->beta1;
    const double w = to_eval ? 1 - 1 / cc : 1 - cc;
    size_t i;
    if (!st->z_init) return;
    for (i = 0; i < st->n; i++) p[i] = ref_lerp(p[i], st->z[i], w);
}

static void ref_adamax(const ref_ctx *c, ref_state *st, size_t i, double *p, double d)
{
    const optim_hparams *hp = c->hp;
    double a = hp->beta2 * st->inf[i], b = fabs(d) + hp->eps;
    st->m[i] = hp->beta1 * st->m[i] + (1 - hp->beta1) * d;
    st->inf[i] = (isnan(a) || isnan(b)) ? NAN : (a > b ? a : b); /* torch.amax: NaN wins */
    *p -= c->lr / (1 - c->b1t) * st->m[i] / st->inf[i];
}

/* ASGD: decay, SGD step with the previous step's eta, then the average. */
static void ref_asgd(const ref_ctx *c, ref_state *st, size_t i, double *p, double d)
{
    *p = *p * (1 - c->hp->lambd * c->eta) - c->eta * d;
    st->ax[i] = c->mu != 1 ? st->ax[i] + (*p - st->ax[i]) * c->mu : *p;
}

/* Rprop: the step size grows while the gradient keeps its sign, shrinks (and
 * the step is skipped, the gradient forgotten) when it flips. The sign of
 * g * prev is taken from the product formed in the tensors' type (a product
 * that underflows there is 0 for torch too); torch's sign(NaN) is 0. */
static void ref_rprop(const ref_ctx *c, ref_state *st, size_t i, double *p, double d)
{
    const optim_hparams *hp = c->hp;
    double x = c->f32 ? (double)((float)d * (float)st->prev[i]) : d * st->prev[i];
    double f = x > 0 ? hp->etaplus : (x < 0 ? hp->etaminus : 1.0);
    double ss = st->ss[i] * f;
    if (ss < hp->step_size_min) ss = hp->step_size_min;
    if (ss > hp->step_size_max) ss = hp->step_size_max;
    if (x < 0) d = 0;
    st->ss[i] = ss;
    st->prev[i] = d;
    *p -= (d > 0 ? 1.0 : (d < 0 ? -1.0 : 0.0)) * ss;
}

/* Rules with per-tensor norms take the whole tensor: d[i] is the gradient
 * element i as the rule sees it before any decay (maximize applied). */
typedef void (*ref_tensor_fn)(const ref_ctx *c, ref_state *st, double *p, const double *d);

/* LAMB (timm's Lamb, You et al. 2019): Adam's moments, the update
 * u = m^ / (sqrt(v^) + eps) + wd p, scaled by ||p|| / ||u|| (1 where a norm
 * is 0; clipped at 1 with trust_clip) where wd != 0 or always_adapt. */
static void ref_lamb(const ref_ctx *c, ref_state *st, double *p, const double *d)
{
    const optim_hparams *hp = c->hp;
    double bc1 = hp->bias_correction ? 1 - c->b1t : 1, bc2 = hp->bias_correction ? 1 - c->b2t : 1;
    double wn = 0, un = 0, r = 1;
    size_t i;
    for (i = 0; i < st->n; i++) {
        st->m[i] = hp->beta1 * st->m[i] + (1 - hp->beta1) * d[i];
        st->v[i] = hp->beta2 * st->v[i] + (1 - hp->beta2) * d[i] * d[i];
        st->tmp[i] = (st->m[i] / bc1) / (sqrt(st->v[i] / bc2) + hp->eps);
        if (hp->weight_decay != 0) st->tmp[i] += hp->weight_decay * p[i]; /* timm adds it only then (0 * inf) */
        wn += p[i] * p[i];
        un += st->tmp[i] * st->tmp[i];
    }
    if (hp->weight_decay != 0 || hp->always_adapt) {
        wn = sqrt(wn);
        un = sqrt(un);
        r = wn > 0 && un > 0 ? wn / un : 1;
        if (hp->trust_clip && r > 1) r = 1;
    }
    for (i = 0; i < st->n; i++) p[i] -= c->lr * r * st->tmp[i];
}

/* LARS (timm's Lars, You et al. 2017): where wd != 0 or always_adapt,
 * g = (g + wd p) * trust_coeff ||p|| / (||g|| + wd ||p|| + eps) (1 for the
 * ratio where a norm is 0; with trust_clip min(ratio / lr, 1)); then SGD
 * with momentum. For float32 tensors g + wd p is formed in float, as the
 * tensors' arithmetic forms it (an fma), as ref_step_any does for L2. */
static void ref_lars(const ref_ctx *c, ref_state *st, double *p, const double *d)
{
    const optim_hparams *hp = c->hp;
    double wn = 0, gn = 0, r = 1;
    size_t i;
    int adapt = hp->weight_decay != 0 || hp->always_adapt;
    for (i = 0; i < st->n; i++) {
        wn += p[i] * p[i];
        gn += d[i] * d[i];
    }
    if (adapt) {
        wn = sqrt(wn);
        gn = sqrt(gn);
        r = wn > 0 && gn > 0 ? hp->trust_coeff * wn / (gn + wn * hp->weight_decay + hp->eps) : 1;
        if (hp->trust_clip) r = r / c->lr > 1 ? 1 : r / c->lr;
    }
    for (i = 0; i < st->n; i++) {
        double x = d[i];
        if (adapt) {
            if (c->f32)
                x = fmaf((float)hp->weight_decay, (float)p[i], (float)d[i]);
            else
                x = fma(hp->weight_decay, p[i], d[i]);
            x *= r;
        }
        if (hp->momentum != 0) {
            st->buf[i] = st->buf_init ? hp->momentum * st->buf[i] + (1 - hp->dampening) * x : x;
            x = hp->nesterov ? x + hp->momentum * st->buf[i] : st->buf[i];
        }
        p[i] -= c->lr * x;
    }
}

/* Adafactor (torch 2.x's torch.optim.Adafactor, _single_tensor_adafactor),
 * unfactored (a tensor without a shape, as the grids' are): w = t^beta2_decay,
 * v = lerp(v, d^2, w) (torch's two-sided formula), u = d / sqrt(max(v, eps1^2)), alpha = max(eps2,
 * rms(p)) min(lr, 1 / sqrt(t)) from p before the decay, p *= 1 - lr wd,
 * p -= alpha / max(1, rms(u) / clip_threshold) u. eps1 with eps_auto: the
 * tensors' machine epsilon. The factored form: tests/test_adafactor.c. */
static void ref_adafactor(const ref_ctx *c, ref_state *st, double *p, const double *d)
{
    const optim_hparams *hp = c->hp;
    const double w = pow(c->t, hp->beta2_decay), rootn = sqrt((double)st->n);
    const double eps1 = hp->eps_auto ? (c->f32 ? 1.1920928955078125e-07 : 2.220446049250313e-16) : hp->eps1;
    double psq = 0, usq = 0, prms, urms, alpha, denom, rho = 1 / sqrt(c->t);
    size_t i;
    for (i = 0; i < st->n; i++) psq += p[i] * p[i];
    prms = sqrt(psq) / rootn;
    if (c->lr < rho) rho = c->lr;
    alpha = (prms > hp->eps2 ? prms : hp->eps2) * rho;
    if (hp->weight_decay != 0)
        for (i = 0; i < st->n; i++) p[i] *= 1 - c->lr * hp->weight_decay;
    for (i = 0; i < st->n; i++) {
        /* torch's lerp(self, end, w): self + w (end - self) for |w| < 0.5, else end - (end - self) (1 - w)
         * (an infinite end gives NaN there, as torch's does) */
        double e = d[i] * d[i];
        st->v[i] = fabs(w) < 0.5 ? st->v[i] + w * (e - st->v[i]) : e - (e - st->v[i]) * (1 - w);
        st->tmp[i] = d[i] / sqrt(st->v[i] > eps1 * eps1 ? st->v[i] : eps1 * eps1);
        usq += st->tmp[i] * st->tmp[i];
    }
    urms = sqrt(usq) / (rootn * hp->clip_threshold);
    denom = urms > 1 ? urms : 1;
    for (i = 0; i < st->n; i++) p[i] -= alpha / denom * st->tmp[i];
}

/* A rule: its step (per element, or per tensor) and where its slots live
 * (offsets into ref_state; 0: none). */
typedef struct ref_rule {
    ref_elem_fn elem;
    size_t slots[OPTIM_MAX_SLOTS];
    ref_tensor_fn tensor;
} ref_rule;

#define SLOT(f) offsetof(ref_state, f)
/* Keyed by rule: a rule without an entry has no elem, and ref_init refuses it. */
static const ref_rule ref_rules[OPTIM_RULE_COUNT + 1] = {
    [OPTIM_SGD] = {ref_sgd, {SLOT(buf)}},
    [OPTIM_ADAGRAD] = {ref_adagrad, {SLOT(sum)}},
    [OPTIM_RMSPROP] = {ref_rmsprop, {SLOT(sq), SLOT(buf), SLOT(ga)}},
    [OPTIM_ADADELTA] = {ref_adadelta, {SLOT(sq), SLOT(acc), SLOT(buf)}},
    [OPTIM_ADAM] = {ref_adam, {SLOT(m), SLOT(v), SLOT(vmax)}},
    [OPTIM_ADAMW] = {ref_adam, {SLOT(m), SLOT(v), SLOT(vmax)}},
    [OPTIM_RADAM] = {ref_radam, {SLOT(m), SLOT(v)}},
    [OPTIM_NADAM] = {ref_nadam, {SLOT(m), SLOT(v)}},
    [OPTIM_ADABOUND] = {ref_adabound, {SLOT(m), SLOT(v), SLOT(vmax)}},
    [OPTIM_LION] = {ref_lion, {SLOT(m)}},
    [OPTIM_ADAMAX] = {ref_adamax, {SLOT(m), SLOT(inf)}},
    [OPTIM_ASGD] = {ref_asgd, {SLOT(ax)}},
    [OPTIM_RPROP] = {ref_rprop, {SLOT(prev), SLOT(ss)}},
    [OPTIM_LAMB] = {NULL, {SLOT(m), SLOT(v)}, ref_lamb},
    [OPTIM_LARS] = {NULL, {SLOT(buf)}, ref_lars},
    [OPTIM_ADAFACTOR] = {NULL, {SLOT(m), SLOT(inf), SLOT(v)}, ref_adafactor}, /* m, inf: the unused factors, 0 */
    [OPTIM_SGD_SCHEDULE_FREE] = {ref_sgd_sf, {SLOT(z)}},
    [OPTIM_ADAMW_SCHEDULE_FREE] = {ref_adamw_sf, {SLOT(z), SLOT(v)}},
};
#undef SLOT

int ref_has(optim_rule rule)
{
    return (int)rule >= 1 && (int)rule <= OPTIM_RULE_COUNT && (ref_rules[rule].elem || ref_rules[rule].tensor);
}

static double *zeros(size_t n)
{
    return (double *)calloc(n ? n : 1, sizeof(double));
}

int ref_init(ref_state *st, const optim_hparams *hp, size_t n)
{
    size_t i;
    memset(st, 0, sizeof *st);
    if (!ref_has(hp->rule)) {
        fprintf(stderr, "tests/ref.c: no reference for rule %d (%s)\n", (int)hp->rule,
                optim_rule_name(hp->rule) ? optim_rule_name(hp->rule) : "?");
        return -1;
    }
    st->rule = hp->rule;
    st->n = n;
    st->mu_product = 1.0;
    st->base_lr = hp->initial_lr > 0 ? hp->initial_lr : hp->lr;
    st->m = zeros(n);
    st->v = zeros(n);
    st->vmax = zeros(n);
    st->buf = zeros(n);
    st->sq = zeros(n);
    st->acc = zeros(n);
    st->ga = zeros(n);
    st->sum = zeros(n);
    st->inf = zeros(n);
    st->ax = zeros(n);
    st->prev = zeros(n);
    st->ss = zeros(n);
    st->tmp = zeros(n);
    st->tmp2 = zeros(n);
    st->z = zeros(n);
    st->lr_max = -1;
    st->weight_sum = 0;
    if (!st->z || !st->tmp || !st->tmp2 || !st->m || !st->v || !st->vmax || !st->buf || !st->sq || !st->acc || !st->ga || !st->sum || !st->inf ||
        !st->ax || !st->prev || !st->ss)
        return -1;
    for (i = 0; i < n; i++) st->sum[i] = hp->initial_accumulator_value;
    /* Rprop's step sizes start at lr, in the tensors' type (fill_(lr)); the float32 value, which is both types'
     * start when lr is a float32 number (the tests' lr are) */
    for (i = 0; i < n; i++) st->ss[i] = hp->lr;
    return 0;
}

void ref_free(ref_state *st)
{
    free(st->m);
    free(st->v);
    free(st->vmax);
    free(st->buf);
    free(st->sq);
    free(st->acc);
    free(st->ga);
    free(st->sum);
    free(st->inf);
    free(st->ax);
    free(st->prev);
    free(st->ss);
    free(st->tmp);
    free(st->tmp2);
    free(st->z);
    memset(st, 0, sizeof *st);
}

/* One step; the gradient from gf (float32 semantics) or gd (float64). */
static void ref_step_any(const optim_hparams *hp, double lr, double *p, const float *gf, const double *gd,
                         ref_state *st)
{
    const ref_rule *r = &ref_rules[st->rule];
    ref_ctx c;
    size_t i;
    c.hp = hp;
    c.lr = lr;
    c.t = (double)(++st->step);
    c.b1t = pow(hp->beta1, c.t);
    c.b2t = pow(hp->beta2, c.t);
    c.in = hp->eps_placement == OPTIM_EPS_INSIDE;
    c.f32 = gf != NULL;
    c.mu = c.mu_next = 0;
    if (hp->rule == OPTIM_NADAM) {
        c.mu = hp->beta1 * (1 - 0.5 * pow(0.96, c.t * hp->momentum_decay));
        c.mu_next = hp->beta1 * (1 - 0.5 * pow(0.96, (c.t + 1) * hp->momentum_decay));
        /* torch 1.13 keeps mu_product in a float32 tensor whatever the
         * parameters' type: mu_product.mul_(mu) rounds mu and the product. */
        st->mu_product = (double)((float)st->mu_product * (float)c.mu);
    }
    c.eta = 0;
    if (hp->rule == OPTIM_ASGD) {
        /* torch keeps eta and mu in float32 tensors: eta starts at the first
         * step's lr, mu at 1; each step ends by computing the next ones. */
        c.eta = st->step == 1 ? (double)(float)lr : st->eta;
        c.mu = st->step == 1 ? 1.0 : (double)(float)(1 / fmax(1, (c.t - 1) - hp->t0));
        st->eta = (double)(float)(lr / pow(1 + hp->lambd * lr * c.t, hp->alpha));
    }
    c.sf_lr = c.ckp1 = 0;
    if (hp->rule == OPTIM_SGD_SCHEDULE_FREE || hp->rule == OPTIM_ADAMW_SCHEDULE_FREE) {
        /* The reference's group scalars at its k = t - 1. */
        double k = c.t - 1, weight;
        c.sf_lr = lr * (k < hp->warmup_steps ? (k + 1) / hp->warmup_steps : 1.0);
        st->lr_max = c.sf_lr > st->lr_max ? c.sf_lr : st->lr_max;
        weight = pow(k + 1, hp->r) * pow(st->lr_max, hp->weight_lr_power);
        st->weight_sum += weight;
        c.ckp1 = st->weight_sum != 0 ? weight / st->weight_sum : 0;
    }
    if (r->tensor) {
        /* The gradient as the rule sees it, maximize applied (exact in either type). */
        for (i = 0; i < st->n; i++) st->tmp2[i] = gf ? (double)(hp->maximize ? -gf[i] : gf[i]) : (hp->maximize ? -gd[i] : gd[i]);
        r->tensor(&c, st, p, st->tmp2);
        if (hp->momentum != 0) st->buf_init = 1;
        return;
    }
    for (i = 0; i < st->n; i++) {
        double d;
        if (hp->decoupled_weight_decay) p[i] *= 1 - lr * hp->weight_decay;
        if (gf) {
            /* The gradient the rule sees is formed in float, as torch forms it
             * (d_p = -g; d_p = d_p.add(p, alpha=wd) on float tensors, one fused
             * multiply-add on torch's CPU path): when g and wd * p nearly
             * cancel, only the same float rounding reproduces the float result.
             * All the rule's own math is in double. */
            float df = hp->maximize ? -gf[i] : gf[i];
            if (!hp->decoupled_weight_decay && hp->weight_decay != 0 && hp->rule != OPTIM_ADAMW_SCHEDULE_FREE)
                df = fmaf((float)hp->weight_decay, (float)p[i], df);
            d = df;
        } else {
            d = hp->maximize ? -gd[i] : gd[i];
            if (!hp->decoupled_weight_decay && hp->weight_decay != 0 && hp->rule != OPTIM_ADAMW_SCHEDULE_FREE)
                d = fma(hp->weight_decay, p[i], d);
        }
        r->elem(&c, st, i, &p[i], d);
    }
    if (hp->rule == OPTIM_SGD && hp->momentum != 0) st->buf_init = 1;
    if (hp->rule == OPTIM_SGD_SCHEDULE_FREE || hp->rule == OPTIM_ADAMW_SCHEDULE_FREE) st->z_init = 1;
}

void ref_step(const optim_hparams *hp, double lr, double *p, const float *g, ref_state *st)
{
    ref_step_any(hp, lr, p, g, NULL, st);
}

void ref_step64(const optim_hparams *hp, double lr, double *p, const double *g, ref_state *st)
{
    ref_step_any(hp, lr, p, NULL, g, st);
}

double *ref_slot(const ref_state *st, int s)
{
    size_t off;
    if (!ref_has(st->rule) || s < 0 || s >= OPTIM_MAX_SLOTS) return NULL;
    off = ref_rules[st->rule].slots[s];
    if (off == 0) return NULL; /* offset 0 is `rule`, never a slot */
    return *(double *const *)(const void *)((const char *)st + off);
}

void ref_sync(ref_state *rs, const optim_hparams *hp, double *p, const float *pf, const optim_state *st)
{
    unsigned slots = optim_hparams_slots(hp);
    size_t i;
    int s;
    /* Only the float arrays: the parameters and the state slots. One step of
     * float arithmetic is then compared with the same step in double; without
     * it float rounding accumulates over hundreds of steps and chaotic runs
     * (maximize with decay) drift apart. The scalar state (step counter,
     * mu_product, whether a buffer holds data) involves no float rounding and
     * is the reference's own: an error that builds up in it shows. */
    for (i = 0; i < rs->n; i++) p[i] = pf[i];
    for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
        double *r = ref_slot(rs, s);
        if (!((slots >> s) & 1u) || !r) continue;
        for (i = 0; i < rs->n; i++) r[i] = st->slot[s][i];
    }
}

void ref_sync64(ref_state *rs, const optim_hparams *hp, double *p, const double *pd, const optim_state *st)
{
    unsigned slots = optim_hparams_slots(hp);
    size_t i;
    int s;
    /* As ref_sync: the float64 arrays only (rounding in another operation
     * order, small as it is, grows without bound in chaotic runs). */
    for (i = 0; i < rs->n; i++) p[i] = pd[i];
    for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
        double *r = ref_slot(rs, s);
        if (!((slots >> s) & 1u) || !r) continue;
        memcpy(r, (const void *)st->slot[s], rs->n * sizeof(double));
    }
}
