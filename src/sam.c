/* sam.c: SAM and ASAM around an optimizer object (see optim_sam.h). The
 * perturbation's math is in rules/sam.h, its loops in src/kernels/. */
#include "optim_internal.h"

#include "optim_sam.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct optim_sam {
    optim *base;
    double p;              /* one norm for all parameters */
    size_t ngroups;        /* groups of base when created */
    double *rho, *eta;     /* per group, as the reference keeps rho and adaptive per group */
    int *adaptive;
    optim__sam_k *k;       /* per group: the constants of the ascent step */
    size_t nparams;        /* parameters of base when created */
    float **saved;         /* saved[i]: w of parameter i before the ascent step */
    unsigned char *moved;  /* parameter i was perturbed by the pending first_step */
    int perturbed;         /* between first_step and second_step/restore */
    int skip_pending;      /* first_step skipped: second_step skips too */
    double last_norm;
    optim_error err;
};

#define OPTIM__SE(s) (&(s)->err)

int optim_sam_create(optim_sam **out, optim *base, double rho, double p, int adaptive, double eta, optim_error *err)
{
    optim_sam *s;
    size_t i;
    OPTIM__FAIL_IF(!out, err, OPTIM_ENULL, "optim_sam_create: out is NULL");
    *out = NULL;
    OPTIM__FAIL_IF(!base, err, OPTIM_ENULL, "optim_sam_create: base is NULL");
    OPTIM__FAIL_IF(!(rho >= 0) || isinf(rho), err, OPTIM_EINVAL, "optim_sam_create: rho = %.10g must be a finite number >= 0", rho);
    OPTIM__FAIL_IF(!(p > 1), err, OPTIM_EINVAL, "optim_sam_create: p = %.10g must be > 1 or INFINITY", p);
    OPTIM__FAIL_IF(adaptive != 0 && adaptive != 1, err, OPTIM_EINVAL, "optim_sam_create: adaptive = %d must be 0 or 1",
                   adaptive);
    OPTIM__FAIL_IF(!(eta >= 0) || isinf(eta), err, OPTIM_EINVAL, "optim_sam_create: eta = %.10g must be a finite number >= 0",
                   eta);
    OPTIM__FAIL_IF(base->nparams == 0, err, OPTIM_ESTATE, "optim_sam_create: the base optimizer has no parameters yet");
    for (i = 0; i < base->nparams; i++)
        OPTIM__FAIL_IF(base->params[i].pdt != OPTIM_FLOAT32 || base->params[i].gdt != OPTIM_FLOAT32, err,
                       OPTIM_EUNSUPPORTED,
                       "optim_sam_create: param %zu '%s' has %s memory and %s gradients; SAM takes float32 ones only",
                       i, base->params[i].name, optim_dtype_name(base->params[i].pdt),
                       optim_dtype_name(base->params[i].gdt));
    s = (optim_sam *)calloc(1, sizeof *s);
    OPTIM__FAIL_IF(!s, err, OPTIM_ENOMEM, "optim_sam_create: out of memory");
    s->base = base;
    s->p = p;
    s->last_norm = NAN;
    s->ngroups = base->ngroups;
    s->rho = (double *)calloc(s->ngroups, sizeof *s->rho);
    s->eta = (double *)calloc(s->ngroups, sizeof *s->eta);
    s->adaptive = (int *)calloc(s->ngroups, sizeof *s->adaptive);
    s->k = (optim__sam_k *)calloc(s->ngroups, sizeof *s->k);
    s->nparams = base->nparams;
    s->saved = (float **)calloc(s->nparams, sizeof *s->saved);
    s->moved = (unsigned char *)calloc(s->nparams, 1);
    if (!s->rho || !s->eta || !s->adaptive || !s->k || !s->saved || !s->moved) goto oom;
    for (i = 0; i < s->ngroups; i++) {
        s->rho[i] = rho;
        s->eta[i] = eta;
        s->adaptive[i] = adaptive;
    }
    for (i = 0; i < s->nparams; i++) {
        s->saved[i] = optim__alloc_floats(base->params[i].n);
        if (!s->saved[i]) goto oom;
    }
    *out = s;
    return optim__ok(err);
oom:
    optim_sam_free(s);
    return optim__fail(err, OPTIM_ENOMEM, "optim_sam_create: out of memory for a copy of the parameters");
}

void optim_sam_free(optim_sam *s)
{
    size_t i;
    if (!s) return;
    if (s->perturbed && s->base) s->base->sam_perturbed = 0;
    if (s->saved)
        for (i = 0; i < s->nparams; i++) optim__free_floats(s->saved[i]);
    free(s->saved);
    free(s->moved);
    free(s->rho);
    free(s->eta);
    free(s->adaptive);
    free(s->k);
    free(s);
}

const char *optim_sam_errmsg(const optim_sam *s)
{
    if (!s) return "optim_sam: the handle is NULL (optim_sam_create failed or was not called)";
    return s->err.message;
}

/* Point the base's tasks' slot 0 at the saved copies (only the perturbed
 * parameters when restoring). */
static size_t optim__sam_tasks(optim_sam *s, int restoring, size_t *nblocks)
{
    optim *o = s->base;
    size_t i, total = 0, blocks = 0;
    total = optim__build_tasks(o, &blocks);
    if (restoring) {
        total = 0;
        blocks = 0;
        for (i = 0; i < o->nparams; i++) {
            optim__task *t = &o->tasks[i];
            t->start = total;
            t->bstart = blocks;
            t->n = s->moved[i] ? o->params[i].n : 0;
            total += t->n;
            blocks += OPTIM__NBLOCKS(t->n);
        }
    }
    for (i = 0; i < o->nparams; i++) {
        size_t g = o->params[i].group;
        o->tasks[i].s[0] = s->saved[i];
        o->tasks[i].k = &s->k[g];
        o->tasks[i].w = s->adaptive[g] ? (const float *)o->params[i].p : NULL;
        o->tasks[i].eta = (float)s->eta[g];
        o->tasks[i].align = 16;
    }
    *nblocks = blocks;
    return total;
}

static int optim__sam_check(optim_sam *s, const char *fn)
{
    OPTIM__FAIL_IF(s->base->nparams != s->nparams, OPTIM__SE(s), OPTIM_ESTATE,
                   "%s: the base optimizer has %zu params but had %zu when the SAM object was created", fn,
                   s->base->nparams, s->nparams);
    OPTIM__FAIL_IF(s->base->ngroups != s->ngroups, OPTIM__SE(s), OPTIM_ESTATE,
                   "%s: the base optimizer has %zu groups but had %zu when the SAM object was created", fn,
                   s->base->ngroups, s->ngroups);
    return OPTIM_OK;
}

static int optim__sam_first(optim_sam *s)
{
    optim *o = s->base;
    size_t nblocks, total, b, i;
    double q, norm;
    optim__norm kind;
    OPTIM__FORWARD(optim__sam_check(s, "optim_sam_first_step"));
    OPTIM__FAIL_IF(s->perturbed || s->skip_pending, OPTIM__SE(s), OPTIM_ESTATE,
                   "optim_sam_first_step: called twice; call optim_sam_second_step or optim_sam_restore first");
    total = optim__sam_tasks(s, 0, &nblocks);

    /* The dual norm ||h||_q of h = T g: q = 2 for p = 2, 1 for p = inf. */
    q = isinf(s->p) ? 1.0 : s->p / (s->p - 1.0);
    kind = optim__norm_kind(q);
    optim__reduce_run(o->kt, o->tasks, o->nparams, nblocks, kind, q, o->partials, o->bad, o->threads);
    norm = optim__norm_finish(o->partials, nblocks, kind, q);
    s->last_norm = norm;
    if (o->nonfinite != OPTIM_NONFINITE_PROPAGATE) {
        for (b = 0; b < nblocks && !o->bad[b]; b++) continue;
        if (b < nblocks) {
            i = optim__param_of_block(o, b);
            OPTIM__FAIL_IF(o->nonfinite == OPTIM_NONFINITE_ERROR, OPTIM__SE(s), OPTIM_ENONFINITE,
                           "optim_sam_first_step: the gradient of param %zu '%s' holds NaN or Inf; nothing moved", i,
                           o->params[i].name);
            s->skip_pending = 1;
            return optim__ok(OPTIM__SE(s));
        }
    }

    for (i = 0; i < s->ngroups; i++) {
        optim__sam_k *k = &s->k[i];
        memset(k, 0, sizeof *k);
        if (s->adaptive[i]) k->variant |= OPTIM__SAM_V_ADAPTIVE;
        if (isinf(s->p))
            k->variant |= OPTIM__SAM_V_PINF;
        else if (s->p != 2.0)
            k->variant |= OPTIM__SAM_V_PGEN;
        /* As the reference: scale = rho / (grad_norm + 1e-12), in float, per group. */
        k->scale = (float)(s->rho[i] / (norm + 1e-12));
        k->rho = (float)s->rho[i];
        k->eta = (float)s->eta[i];
        k->inv_norm = norm > 0 ? 1.0 / norm : 0.0;
        k->q_minus_1 = q - 1.0;
        /* Every variant below OPTIM__SAM_NVARIANTS has its loop (kernels_math.h). */
        OPTIM__FAIL_IF(k->variant >= OPTIM__SAM_NVARIANTS, OPTIM__SE(s), OPTIM_EUNSUPPORTED,
                       "optim_sam_first_step: no loop for SAM variant 0x%x; nothing moved", k->variant);
    }
    optim__run(o->kt, optim__range_sam_perturb, o->tasks, o->nparams, total, o->threads);
    for (i = 0; i < o->nparams; i++) s->moved[i] = o->params[i].g != NULL && o->params[i].n > 0;
    s->perturbed = 1;
    o->sam_perturbed = 1;
    return optim__ok(OPTIM__SE(s));
}

int optim_sam_first_step(optim_sam *s)
{
    if (!s) return OPTIM_ENULL;
    return optim__sam_first(s);
}

int optim_sam_first_step_with(optim_sam *s, size_t count, float *const *params, const float *const *grads)
{
    int rc;
    if (!s) return OPTIM_ENULL;
    OPTIM__FAIL_IF(s->perturbed, OPTIM__SE(s), OPTIM_ESTATE,
                   "optim_sam_first_step_with: called twice; call optim_sam_second_step or optim_sam_restore first");
    {
        optim__ptrs x = {NULL, NULL, params, grads, 1};
        rc = optim__rebind(s->base, "optim_sam_first_step_with", count, &x);
    }
    if (rc != OPTIM_OK) return optim__fail(OPTIM__SE(s), rc, "%s", s->base->err.message);
    return optim__sam_first(s);
}

static void optim__sam_undo(optim_sam *s)
{
    size_t nblocks, total = optim__sam_tasks(s, 1, &nblocks);
    optim__run(s->base->kt, optim__range_copy_back, s->base->tasks, s->base->nparams, total, s->base->threads);
    memset(s->moved, 0, s->nparams);
    s->perturbed = 0;
    s->base->sam_perturbed = 0;
}

int optim_sam_restore(optim_sam *s)
{
    if (!s) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__sam_check(s, "optim_sam_restore"));
    s->skip_pending = 0;
    if (s->perturbed) optim__sam_undo(s);
    return optim__ok(OPTIM__SE(s));
}

static int optim__sam_second(optim_sam *s, int rebind, size_t count, float *const *params, const float *const *grads)
{
    optim *o = s->base;
    int rc;
    OPTIM__FORWARD(optim__sam_check(s, "optim_sam_second_step"));
    if (s->skip_pending) {
        s->skip_pending = 0;
        if (o->skipped < INT64_MAX) o->skipped++;
        o->last_skipped = 1;
        return optim__ok(OPTIM__SE(s));
    }
    OPTIM__FAIL_IF(!s->perturbed, OPTIM__SE(s), OPTIM_ESTATE,
                   "optim_sam_second_step: no first_step to complete; call optim_sam_first_step first");
    /* Restore w before rebinding: the saved copies belong to the old pointers. */
    optim__sam_undo(s);
    if (rebind) {
        optim__ptrs x = {NULL, NULL, params, grads, 1};
        rc = optim__rebind(o, "optim_sam_second_step_with", count, &x);
        if (rc != OPTIM_OK) return optim__fail(OPTIM__SE(s), rc, "%s", o->err.message);
    }
    rc = optim__step(o);
    if (rc != OPTIM_OK) return optim__fail(OPTIM__SE(s), rc, "%s", o->err.message);
    return optim__ok(OPTIM__SE(s));
}

int optim_sam_second_step(optim_sam *s)
{
    if (!s) return OPTIM_ENULL;
    return optim__sam_second(s, 0, 0, NULL, NULL);
}

int optim_sam_second_step_with(optim_sam *s, size_t count, float *const *params, const float *const *grads)
{
    if (!s) return OPTIM_ENULL;
    return optim__sam_second(s, 1, count, params, grads);
}

double optim_sam_last_grad_norm(const optim_sam *s)
{
    return s ? s->last_norm : NAN;
}

int optim_sam_is_perturbed(const optim_sam *s)
{
    return s ? s->perturbed : 0;
}

static int optim__sam_check_group(optim_sam *s, const char *fn, double rho, int adaptive, double eta)
{
    OPTIM__FAIL_IF(!(rho >= 0) || isinf(rho), OPTIM__SE(s), OPTIM_EINVAL, "%s: rho = %.10g must be a finite number >= 0",
                   fn, rho);
    OPTIM__FAIL_IF(adaptive != 0 && adaptive != 1, OPTIM__SE(s), OPTIM_EINVAL, "%s: adaptive = %d must be 0 or 1", fn,
                   adaptive);
    OPTIM__FAIL_IF(!(eta >= 0) || isinf(eta), OPTIM__SE(s), OPTIM_EINVAL, "%s: eta = %.10g must be a finite number >= 0",
                   fn, eta);
    return OPTIM_OK;
}

int optim_sam_set_rho(optim_sam *s, double rho)
{
    size_t g;
    if (!s) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__sam_check_group(s, "optim_sam_set_rho", rho, 0, 0.0));
    for (g = 0; g < s->ngroups; g++) s->rho[g] = rho;
    return optim__ok(OPTIM__SE(s));
}

int optim_sam_set_group(optim_sam *s, size_t g, double rho, int adaptive, double eta)
{
    if (!s) return OPTIM_ENULL;
    OPTIM__FAIL_IF(g >= s->ngroups, OPTIM__SE(s), OPTIM_ERANGE, "optim_sam_set_group: group %zu does not exist (%zu groups)",
                   g, s->ngroups);
    OPTIM__FORWARD(optim__sam_check_group(s, "optim_sam_set_group", rho, adaptive, eta));
    s->rho[g] = rho;
    s->adaptive[g] = adaptive;
    s->eta[g] = eta;
    return optim__ok(OPTIM__SE(s));
}

int optim_sam_get_group(const optim_sam *s, size_t g, double *rho, int *adaptive, double *eta)
{
    if (!s) return OPTIM_ENULL;
    /* A const handle still records its errors (see optim.c's OPTIM__EC). */
    OPTIM__FAIL_IF(g >= s->ngroups, &((optim_sam *)s)->err, OPTIM_ERANGE,
                   "optim_sam_get_group: group %zu does not exist (%zu groups)", g, s->ngroups);
    if (rho) *rho = s->rho[g];
    if (adaptive) *adaptive = s->adaptive[g];
    if (eta) *eta = s->eta[g];
    return OPTIM_OK;
}

double optim_sam_get_rho(const optim_sam *s)
{
    return s ? s->rho[0] : NAN;
}

double optim_sam_get_p(const optim_sam *s)
{
    return s ? s->p : NAN;
}

int optim_sam_get_adaptive(const optim_sam *s)
{
    return s ? s->adaptive[0] : 0;
}

double optim_sam_get_eta(const optim_sam *s)
{
    return s ? s->eta[0] : NAN;
}

optim *optim_sam_base(const optim_sam *s)
{
    return s ? s->base : NULL;
}
