/* lab_exp_stall.c: AdaGrad's effective learning rate decays monotonically
 * (seed: AdaGradの問題点), RMSProp's, Adam's and AdaDelta's do not.
 *
 * The problem: a noisy quadratic in D parameters with curvatures from 0.1 to
 * 10 and N(0, 1) gradient noise, whose minimum jumps half-way through the
 * run. The first half is stationary, the setting where AdaGrad's decay is a
 * virtue; the second half asks every optimizer to move again. Learning rates
 * are chosen per optimizer by a grid search on the first half (AdaDelta runs
 * at lr 1, its "no learning rate" form). The effective per-parameter rate is
 * read from the library's state after each step:
 *   AdaGrad   lr / (sqrt(sum) + eps)
 *   RMSProp   lr / (sqrt(square_avg) + eps)
 *   Adam      lr / (sqrt(exp_avg_sq / (1 - beta2^t)) + eps)   (applied to the corrected mean)
 *   AdaDelta  lr * sqrt(acc_delta_{t-1} + eps) / sqrt(square_avg_t + eps)
 */
#include "lab.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define D 20
#define NOISE 1.0
#define JUMP 3.0

typedef struct stall_cfg {
    int steps, jump_at;
    uint64_t seed;
} stall_cfg;

typedef struct stall_out {
    double *eff_med, *eff_q1, *eff_q3, *dist; /* per step (index t-1) */
    int monotone_violations;
} stall_out;

static int slot_of(optim_rule rule, const char *name)
{
    int i;
    for (i = 0; i < optim_rule_slot_count(rule); i++)
        if (strcmp(optim_rule_slot_name(rule, i), name) == 0) return i;
    fprintf(stderr, "optim lab: the %s rule has no state slot named %s\n", optim_rule_name(rule), name);
    exit(1);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Runs hp on the problem; with out == NULL only returns the mean distance to
 * the minimum over the last 10 % of the first half (the tuning score). */
static double run(const stall_cfg *c, const optim_hparams *hp, stall_out *out)
{
    float p[D], g[D], prev_eff[D], *main_slot = NULL, *acc_slot = NULL;
    double h[D], target[D], jump[D], score = 0;
    optim *opt = NULL;
    lab_rng rng;
    int t, i, nscore = 0, s_main = 0, s_acc = -1;
    int score_from = c->jump_at - c->jump_at / 10;
    switch (hp->rule) {
    case OPTIM_ADAGRAD: s_main = slot_of(hp->rule, "sum"); break;
    case OPTIM_RMSPROP: s_main = slot_of(hp->rule, "square_avg"); break;
    case OPTIM_ADAM: s_main = slot_of(hp->rule, "exp_avg_sq"); break;
    case OPTIM_ADADELTA:
        s_main = slot_of(hp->rule, "square_avg");
        s_acc = slot_of(hp->rule, "acc_delta");
        break;
    default:
        fprintf(stderr, "optim lab: adagrad-stall has no effective-lr formula for %s\n", optim_rule_name(hp->rule));
        exit(1);
    }
    lab_check(optim_create(&opt, hp->rule), "optim_create", NULL);
    lab_check(optim_add_group(opt, hp, NULL), "optim_add_group", optim_errmsg(opt));
    lab_check(optim_add_param(opt, 0, p, g, D, "w", NULL), "optim_add_param", optim_errmsg(opt));
    lab_check(optim_set_threads(opt, 1), "optim_set_threads", optim_errmsg(opt));
    /* The state is read in place, after each step. */
    lab_check(optim_state_slot(opt, 0, s_main, &main_slot, NULL), "optim_state_slot", optim_errmsg(opt));
    if (s_acc >= 0) lab_check(optim_state_slot(opt, 0, s_acc, &acc_slot, NULL), "optim_state_slot", optim_errmsg(opt));
    /* The problem depends on the seed only: every optimizer and every lr of
     * the search sees the same curvatures, targets and noise. */
    lab_rng_init(&rng, c->seed, 0x57a11);
    for (i = 0; i < D; i++) {
        h[i] = pow(10.0, -1.0 + 2.0 * i / (D - 1));
        target[i] = lab_rng_normal(&rng);
        jump[i] = lab_rng_uniform(&rng) < 0.5 ? -JUMP : JUMP;
        p[i] = 0;
        prev_eff[i] = INFINITY;
    }
    if (out) out->monotone_violations = 0;
    for (t = 1; t <= c->steps; t++) {
        double eff[D], dist = 0, acc_prev[D];
        if (t == c->jump_at + 1)
            for (i = 0; i < D; i++) target[i] += jump[i];
        for (i = 0; i < D; i++) {
            g[i] = (float)(h[i] * (p[i] - target[i]) + NOISE * lab_rng_normal(&rng));
            acc_prev[i] = acc_slot ? acc_slot[i] : 0;
        }
        lab_check(optim_step(opt), "optim_step", optim_errmsg(opt));
        for (i = 0; i < D; i++) dist += (p[i] - target[i]) * (p[i] - target[i]);
        dist = sqrt(dist / D);
        if (!isfinite(dist)) {
            optim_free(opt);
            return INFINITY;
        }
        if (t > score_from && t <= c->jump_at) {
            score += dist;
            nscore++;
        }
        if (out) {
            double sorted[D], bc2 = 1 - pow(hp->beta2, t);
            for (i = 0; i < D; i++) {
                double v = main_slot[i];
                switch (hp->rule) {
                case OPTIM_ADAGRAD:
                case OPTIM_RMSPROP: eff[i] = hp->lr / (sqrt(v) + hp->eps); break;
                case OPTIM_ADAM: eff[i] = hp->lr / (sqrt(v / bc2) + hp->eps); break;
                default: eff[i] = hp->lr * sqrt(acc_prev[i] + hp->eps) / sqrt(v + hp->eps); break;
                }
            }
            for (i = 0; i < D; i++) {
                if ((float)eff[i] > prev_eff[i]) out->monotone_violations++;
                prev_eff[i] = (float)eff[i];
                sorted[i] = eff[i];
            }
            qsort(sorted, D, sizeof sorted[0], cmp_double);
            out->eff_med[t - 1] = 0.5 * (sorted[D / 2 - 1] + sorted[D / 2]);
            out->eff_q1[t - 1] = sorted[D / 4];
            out->eff_q3[t - 1] = sorted[(3 * D) / 4];
            out->dist[t - 1] = dist;
        }
    }
    optim_free(opt);
    return nscore ? score / nscore : INFINITY;
}

static double mean(const double *v, int from, int to)
{
    double s = 0;
    int i;
    for (i = from; i < to; i++) s += v[i];
    return to > from ? s / (to - from) : NAN;
}

int lab_exp_adagrad_stall(lab_ctx *ctx)
{
    static const char *names[] = {"adagrad", "rmsprop", "adam", "adadelta"};
    enum { NO = 4 };
    stall_cfg c;
    stall_out out[NO];
    double lr[NO], floor_dist[NO], final_dist[NO], decay[NO], grid[16];
    int recovery[NO], ngrid = 0, k, t, e;
    FILE *csv;
    lab_progress prog;
    char statement[4096];
    int held;

    c.steps = ctx->opt.quick ? 2000 : 12000;
    c.jump_at = c.steps / 2;
    c.seed = ctx->opt.seed;
    for (e = -3; e <= 0; e++) {
        double base = pow(10.0, e);
        grid[ngrid++] = base;
        grid[ngrid++] = 2 * base;
        grid[ngrid++] = 5 * base;
    }
    lab_progress_start(&prog, "tuning and runs", NO, "optimizer", 0);
    for (k = 0; k < NO; k++) {
        const lab_optimizer *o = lab_optimizer_find(names[k]);
        optim_hparams hp;
        if (strcmp(names[k], "adadelta") == 0) {
            lr[k] = 1.0;
        } else {
            double best = INFINITY;
            int i;
            lr[k] = grid[0];
            for (i = 0; i < ngrid; i++) {
                double sc;
                hp = lab_optimizer_hparams(o, grid[i]);
                sc = run(&c, &hp, NULL);
                if (sc < best) {
                    best = sc;
                    lr[k] = grid[i];
                }
            }
        }
        hp = lab_optimizer_hparams(o, lr[k]);
        out[k].eff_med = (double *)lab_xmalloc(sizeof(double) * (size_t)c.steps);
        out[k].eff_q1 = (double *)lab_xmalloc(sizeof(double) * (size_t)c.steps);
        out[k].eff_q3 = (double *)lab_xmalloc(sizeof(double) * (size_t)c.steps);
        out[k].dist = (double *)lab_xmalloc(sizeof(double) * (size_t)c.steps);
        run(&c, &hp, &out[k]);
        lab_progress_update(&prog, k + 1, NAN);
    }
    lab_progress_end(&prog, NULL);

    csv = lab_csv_open(ctx, "adagrad_stall.csv", "optimizer,label,step,eff_lr_median,eff_lr_q1,eff_lr_q3,distance");
    for (k = 0; k < NO; k++) {
        const lab_optimizer *o = lab_optimizer_find(names[k]);
        for (t = 1; t <= c.steps; t++)
            if (t <= 100 || t % 10 == 0)
                fprintf(csv, "%s,%s,%d,%.9g,%.9g,%.9g,%.9g\n", o->name, o->label, t, out[k].eff_med[t - 1],
                        out[k].eff_q1[t - 1], out[k].eff_q3[t - 1], out[k].dist[t - 1]);
    }
    lab_csv_close(ctx, csv, "adagrad_stall.csv");

    lab_json_set_num(ctx->exp, "steps", c.steps);
    lab_json_set_num(ctx->exp, "jump_at", c.jump_at);
    lab_json_set_num(ctx->exp, "parameters", D);
    lab_json_set_num(ctx->exp, "noise", NOISE);
    lab_json_set_num(ctx->exp, "jump", JUMP);
    lab_json_put(ctx->exp, "tune_grid", lab_json_numbers(grid, (size_t)ngrid));
    for (k = 0; k < NO; k++) {
        const lab_optimizer *o = lab_optimizer_find(names[k]);
        int w = c.jump_at / 10, i;
        lab_json *oj = lab_json_put(ctx->exp, names[k], lab_json_object());
        floor_dist[k] = mean(out[k].dist, c.jump_at - w, c.jump_at);
        final_dist[k] = mean(out[k].dist, c.steps - w, c.steps);
        /* Effective lr at the end over its value at step 100 (medians). */
        decay[k] = out[k].eff_med[99] / out[k].eff_med[c.steps - 1];
        /* Recovery: first step after the jump where the mean distance over
         * the previous 100 steps is back within 1.5x the first half's floor. */
        recovery[k] = -1;
        for (i = c.jump_at + 100; i <= c.steps; i++)
            if (mean(out[k].dist, i - 100, i) <= 1.5 * floor_dist[k]) {
                recovery[k] = i - c.jump_at;
                break;
            }
        lab_json_set_str(oj, "label", o->label);
        lab_json_set_num(oj, "lr", lr[k]);
        lab_json_put(oj, "lr_tuned", lab_json_bool(strcmp(names[k], "adadelta") != 0));
        lab_json_set_num(oj, "eff_lr_step100", out[k].eff_med[99]);
        lab_json_set_num(oj, "eff_lr_final", out[k].eff_med[c.steps - 1]);
        lab_json_set_num(oj, "eff_lr_decay", decay[k]);
        lab_json_set_num(oj, "monotone_violations", out[k].monotone_violations);
        lab_json_set_num(oj, "distance_before_jump", floor_dist[k]);
        lab_json_set_num(oj, "distance_at_end", final_dist[k]);
        lab_json_put(oj, "recovery_steps", recovery[k] >= 0 ? lab_json_num(recovery[k]) : lab_json_null());
    }
    /* The seed's claim, part by part (names[]: 0 AdaGrad, 1 RMSProp, 2 Adam,
     * 3 AdaDelta; the seed names RMSProp and AdaDelta as the fixes, Adam is
     * shown for comparison only):
     *   decay:    AdaGrad's rate never increases and falls by more than 2x,
     *             while RMSProp's and AdaDelta's change by less than 2x;
     *   stall:    after the jump AdaGrad does not get back within 1.5x of its
     *             earlier distance, and ends further than RMSProp and AdaDelta;
     *   recovery: RMSProp and AdaDelta do get back.
     * Held when all three hold; not held when AdaGrad's rate does not decay
     * monotonically or AdaGrad does not stall (or RMSProp ends no closer);
     * mixed otherwise (for example AdaDelta's rate does not decay but it
     * does not get back either). */
    {
        int decay_ok = out[0].monotone_violations == 0 && decay[0] > 2;
        int others_flat = decay[1] < 2 && decay[3] < 2;
        int stall_ok = recovery[0] < 0 && final_dist[0] > final_dist[1] && final_dist[0] > final_dist[3];
        int recover_ok = recovery[1] >= 0 && recovery[3] >= 0;
        char rec[NO][64], verdict[768];
        if (!decay_ok || recovery[0] >= 0 || !(final_dist[0] > final_dist[1]))
            held = 0;
        else if (others_flat && stall_ok && recover_ok)
            held = 1;
        else
            held = -1;
        for (k = 0; k < NO; k++) {
            if (recovery[k] >= 0)
                snprintf(rec[k], sizeof rec[k], "after %d steps", recovery[k]);
            else
                snprintf(rec[k], sizeof rec[k], "not within %d steps", c.steps - c.jump_at);
        }
        if (held == 1)
            snprintf(verdict, sizeof verdict,
                     "Both parts of the seed's claim hold: AdaGrad's rate decays monotonically and it stalls after "
                     "the jump, while RMSProp and AdaDelta, whose rates do not decay, recover.");
        else if (held == 0)
            snprintf(verdict, sizeof verdict,
                     "The claim did not hold here: %s.",
                     !decay_ok ? "AdaGrad's rate did not decay monotonically by more than 2x"
                     : recovery[0] >= 0 ? "AdaGrad recovered from the jump"
                                        : "RMSProp did not end closer to the minimum than AdaGrad");
        else if (others_flat && final_dist[0] > final_dist[1] && recovery[1] >= 0 && recovery[3] < 0)
            snprintf(verdict, sizeof verdict,
                     "Mixed: AdaGrad's monotone decay and its stall hold, and RMSProp recovers; AdaDelta's rate does "
                     "not decay either (it ends at %.2fx its step-100 value) but it stays smaller than RMSProp's "
                     "(median %.2g against %.2g at the end), so it comes back more slowly and has not recovered "
                     "by the end (%.3f from the minimum, AdaGrad %.3f): at lr 1 AdaDelta avoids AdaGrad's decaying "
                     "rate, but is too slow here to recover from the jump.",
                     1 / decay[3], out[3].eff_med[c.steps - 1], out[1].eff_med[c.steps - 1], final_dist[3],
                     final_dist[0]);
        else
            snprintf(verdict, sizeof verdict,
                     "Mixed: AdaGrad's rate decays monotonically and AdaGrad stalls, but not every other part "
                     "held (RMSProp's and AdaDelta's rates change by less than 2x: %s; AdaGrad ends further than "
                     "both: %s; both recover: %s).",
                     others_flat ? "yes" : "no", stall_ok ? "yes" : "no", recover_ok ? "yes" : "no");
        snprintf(statement, sizeof statement,
                 "AdaGrad's effective learning rate %s (%d increases over %d steps x %d parameters) and falls %.1fx "
                 "from step 100 to step %d; RMSProp's changes by a factor %.2f, AdaDelta's %.2f (Adam's %.2f). "
                 "After the minimum jumps at step %d, the distance to it comes back to within 1.5x of its earlier "
                 "level: AdaGrad %s, RMSProp %s, AdaDelta %s (Adam %s). At the end it is %.3f for AdaGrad against "
                 "%.3f (RMSProp), %.3f (AdaDelta) and %.3f (Adam). %s",
                 out[0].monotone_violations == 0 ? "never increases" : "increases at times",
                 out[0].monotone_violations, c.steps, D, decay[0], c.steps, 1 / decay[1], 1 / decay[3], 1 / decay[2],
                 c.jump_at, rec[0], rec[1], rec[3], rec[2], final_dist[0], final_dist[1], final_dist[3],
                 final_dist[2], verdict);
        lab_json_set(ctx->exp, "checks.adagrad_decays_monotonically", lab_json_bool(decay_ok));
        lab_json_set(ctx->exp, "checks.rmsprop_adadelta_rates_do_not_decay", lab_json_bool(others_flat));
        lab_json_set(ctx->exp, "checks.adagrad_stalls", lab_json_bool(stall_ok));
        lab_json_set(ctx->exp, "checks.rmsprop_adadelta_recover", lab_json_bool(recover_ok));
    }
    lab_finding(ctx,
                "AdaGrad's effective learning rate decreases monotonically towards zero, so late in training the "
                "parameters barely move and training can stop before reaching the optimum; RMSProp and AdaDelta "
                "were proposed to solve this (seed: AdaGradの問題点; Adam shown for comparison)",
                held, statement);
    for (k = 0; k < NO; k++) {
        free(out[k].eff_med);
        free(out[k].eff_q1);
        free(out[k].eff_q3);
        free(out[k].dist);
    }
    return 0;
}
