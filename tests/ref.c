/* ref.c: see ref.h. Deliberately plain: one formula per line, in double. */
#include "ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double *zeros(size_t n)
{
    return (double *)calloc(n ? n : 1, sizeof(double));
}

int ref_init(ref_state *st, const optim_hparams *hp, size_t n)
{
    size_t i;
    memset(st, 0, sizeof *st);
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
    if (!st->m || !st->v || !st->vmax || !st->buf || !st->sq || !st->acc || !st->ga || !st->sum) return -1;
    for (i = 0; i < n; i++) st->sum[i] = hp->initial_accumulator_value;
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
    memset(st, 0, sizeof *st);
}

/* sqrt(x) + eps, or sqrt(x + eps) with eps inside. */
static double rms(double x, double eps, int inside)
{
    return inside ? sqrt(x + eps) : sqrt(x) + eps;
}

void ref_step(const optim_hparams *hp, double lr, double *p, const float *g, ref_state *st)
{
    const int in = hp->eps_placement == OPTIM_EPS_INSIDE;
    const double t = (double)(++st->step);
    const double b1 = hp->beta1, b2 = hp->beta2, eps = hp->eps, wd = hp->weight_decay;
    const double b1t = pow(b1, t), b2t = pow(b2, t); /* beta^t, once per step */
    double mu = 0, mu_next = 0;
    size_t i;

    if (hp->rule == OPTIM_NADAM) {
        mu = b1 * (1 - 0.5 * pow(0.96, t * hp->momentum_decay));
        mu_next = b1 * (1 - 0.5 * pow(0.96, (t + 1) * hp->momentum_decay));
        st->mu_product *= mu;
    }
    for (i = 0; i < st->n; i++) {
        /* The gradient the rule sees is formed in float, as torch forms it
         * (d_p = -g; d_p = d_p.add(p, alpha=wd) on float tensors, one fused
         * multiply-add on torch's CPU path): when g and wd * p nearly cancel,
         * only the same float rounding reproduces the float result. All the
         * rule's own math below is in double. */
        float df = hp->maximize ? -g[i] : g[i];
        double d;
        if (hp->decoupled_weight_decay)
            p[i] *= 1 - lr * wd;
        else if (wd != 0)
            df = fmaf((float)wd, (float)p[i], df);
        d = df;

        switch (hp->rule) {
        case OPTIM_SGD:
            if (hp->momentum != 0) {
                st->buf[i] = st->buf_init ? hp->momentum * st->buf[i] + (1 - hp->dampening) * d : d;
                d = hp->nesterov ? d + hp->momentum * st->buf[i] : st->buf[i];
            }
            p[i] -= lr * d;
            break;
        case OPTIM_ADAGRAD: {
            double clr = lr / (1 + (t - 1) * hp->lr_decay);
            st->sum[i] += d * d;
            p[i] -= clr * d / rms(st->sum[i], eps, in);
            break;
        }
        case OPTIM_RMSPROP: {
            double a = hp->alpha, v, avg;
            st->sq[i] = a * st->sq[i] + (1 - a) * d * d;
            v = st->sq[i];
            if (hp->centered) {
                st->ga[i] = a * st->ga[i] + (1 - a) * d;
                v -= st->ga[i] * st->ga[i];
            }
            avg = rms(v, eps, in);
            if (hp->momentum > 0) {
                st->buf[i] = hp->momentum * st->buf[i] + d / avg;
                p[i] -= lr * st->buf[i];
            } else {
                p[i] -= lr * d / avg;
            }
            break;
        }
        case OPTIM_ADADELTA: {
            double r = hp->rho, delta;
            st->sq[i] = r * st->sq[i] + (1 - r) * d * d;
            delta = rms(st->acc[i], eps, in) / rms(st->sq[i], eps, in) * d;
            st->acc[i] = r * st->acc[i] + (1 - r) * delta * delta;
            if (hp->momentum > 0) {
                st->buf[i] = hp->momentum * st->buf[i] + delta;
                p[i] -= lr * st->buf[i];
            } else {
                p[i] -= lr * delta;
            }
            break;
        }
        case OPTIM_ADAM:
        case OPTIM_ADAMW: {
            double mhat, vhat, vv;
            st->m[i] = b1 * st->m[i] + (1 - b1) * d;
            st->v[i] = b2 * st->v[i] + (1 - b2) * d * d;
            vv = st->v[i];
            if (hp->amsgrad) {
                if (st->v[i] > st->vmax[i]) st->vmax[i] = st->v[i];
                vv = st->vmax[i];
            }
            mhat = hp->bias_correction ? st->m[i] / (1 - b1t) : st->m[i];
            vhat = hp->bias_correction ? vv / (1 - b2t) : vv;
            p[i] -= lr * mhat / rms(vhat, eps, in);
            break;
        }
        case OPTIM_RADAM: {
            double rho_inf = 2 / (1 - b2) - 1;
            double rho_t = rho_inf - 2 * t * b2t / (1 - b2t);
            double mhat;
            st->m[i] = b1 * st->m[i] + (1 - b1) * d;
            st->v[i] = b2 * st->v[i] + (1 - b2) * d * d;
            mhat = st->m[i] / (1 - b1t);
            if (rho_t > 5) {
                double r = sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t));
                p[i] -= lr * mhat * r * sqrt(1 - b2t) / rms(st->v[i], eps, in);
            } else {
                p[i] -= lr * mhat;
            }
            break;
        }
        case OPTIM_NADAM: {
            double denom;
            st->m[i] = b1 * st->m[i] + (1 - b1) * d;
            st->v[i] = b2 * st->v[i] + (1 - b2) * d * d;
            denom = rms(st->v[i] / (1 - b2t), eps, in);
            p[i] -= lr * (1 - mu) / (1 - st->mu_product) * d / denom;
            p[i] -= lr * mu_next / (1 - st->mu_product * mu_next) * st->m[i] / denom;
            break;
        }
        case OPTIM_ADABOUND: {
            double vv, step, fl, lower, upper, x;
            st->m[i] = b1 * st->m[i] + (1 - b1) * d;
            st->v[i] = b2 * st->v[i] + (1 - b2) * d * d;
            vv = st->v[i];
            if (hp->amsgrad) {
                if (st->v[i] > st->vmax[i]) st->vmax[i] = st->v[i];
                vv = st->vmax[i];
            }
            step = hp->bias_correction ? lr * sqrt(1 - b2t) / (1 - b1t) : lr;
            fl = hp->final_lr * lr / st->base_lr;
            lower = fl * (1 - 1 / (hp->gamma * t + 1));
            upper = fl * (1 + 1 / (hp->gamma * t));
            x = step / rms(vv, eps, in);
            if (x < lower) x = lower;
            if (x > upper) x = upper;
            p[i] -= x * st->m[i];
            break;
        }
        default:
            break;
        }
    }
    if (hp->rule == OPTIM_SGD && hp->momentum != 0) st->buf_init = 1;
}

double *ref_slot(const ref_state *st, optim_rule rule, int s)
{
    switch (rule) {
    case OPTIM_SGD: return s == 0 ? st->buf : NULL;
    case OPTIM_ADAGRAD: return s == 0 ? st->sum : NULL;
    case OPTIM_RMSPROP: return s == 0 ? st->sq : s == 1 ? st->buf : s == 2 ? st->ga : NULL;
    case OPTIM_ADADELTA: return s == 0 ? st->sq : s == 1 ? st->acc : s == 2 ? st->buf : NULL;
    case OPTIM_ADAM:
    case OPTIM_ADAMW:
    case OPTIM_ADABOUND: return s == 0 ? st->m : s == 1 ? st->v : s == 2 ? st->vmax : NULL;
    case OPTIM_RADAM:
    case OPTIM_NADAM: return s == 0 ? st->m : s == 1 ? st->v : NULL;
    default: return NULL;
    }
}

void ref_sync(ref_state *rs, const optim_hparams *hp, double *p, const float *pf, const optim_state *st)
{
    unsigned slots = optim_hparams_slots(hp);
    size_t i;
    int s;
    for (i = 0; i < rs->n; i++) p[i] = pf[i];
    for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
        double *r = ref_slot(rs, hp->rule, s);
        if (!((slots >> s) & 1u) || !((st->initialized >> s) & 1u) || !r) continue;
        for (i = 0; i < rs->n; i++) r[i] = st->slot[s][i];
    }
    rs->step = (long)st->step;
    rs->mu_product = st->mu_product;
    rs->buf_init = (int)(st->initialized & 1u);
}
