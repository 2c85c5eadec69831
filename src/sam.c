/* sam.c: SAM and ASAM around an optimizer object (see optim_sam.h). The
 * perturbation's math is in rules/sam.h, its loops in src/kernels/.
 *
 * Lifetimes: a SAM object points at its base, and the base keeps the list of
 * the SAM objects over it (optim->sams) and the one that has it at w + e
 * (optim->sam_active). optim_free detaches every SAM object (base = NULL:
 * each then refuses its calls and frees safely); optim_sam_free unlinks
 * itself. Neither writes to the parameters, whose memory may be gone by then.
 *
 * The saved copy of w belongs to parameter i, not to the memory it was read
 * from: restoring writes it into the memory bound to parameter i at that
 * moment (after any rebinding), as the reference PyTorch SAM's
 * p.data = old_p does. */
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
    struct optim_sam *next; /* the next SAM object over the same base */
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
    s->next = base->sams; /* the base knows its SAM objects: optim_free detaches them */
    base->sams = s;
    *out = s;
    return optim__ok(err);
oom:
    s->base = NULL; /* not linked yet */
    optim_sam_free(s);
    return optim__fail(err, OPTIM_ENOMEM, "optim_sam_create: out of memory for a copy of the parameters");
}

/* Unlink s from its base's list (the base stays alive). */
static void optim__sam_unlink(optim_sam *s)
{
    optim_sam **at;
    optim *o = s->base;
    if (!o) return;
    for (at = &o->sams; *at; at = &(*at)->next)
        if (*at == s) {
            *at = s->next;
            break;
        }
    if (o->sam_active == s) o->sam_active = NULL;
    s->base = NULL;
    s->next = NULL;
}

void optim__sam_detach_all(optim *o)
{
    while (o->sams) {
        optim_sam *s = o->sams;
        o->sams = s->next;
        s->base = NULL;
        s->next = NULL;
        s->perturbed = 0; /* nothing left to complete: the parameters stay where they are */
        s->skip_pending = 0;
        memset(s->moved, 0, s->nparams);
    }
    o->sam_active = NULL;
}

int optim__sam_guard(optim *o, const char *fn)
{
    OPTIM__FAIL_IF(o->sam_active, &o->err, OPTIM_ESTATE,
                   "%s: an optim_sam over this optimizer is between first_step and second_step (the parameters "
                   "are at w + e): call optim_sam_second_step or optim_sam_restore first",
                   fn);
    return OPTIM_OK;
}

void optim_sam_free(optim_sam *s)
{
    size_t i;
    if (!s) return;
    optim__sam_unlink(s); /* never writes the parameters: their memory may already be freed */
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

/* The base is still there (optim_free detaches its SAM objects). */
static int optim__sam_live(optim_sam *s, const char *fn)
{
    OPTIM__FAIL_IF(!s->base, OPTIM__SE(s), OPTIM_ESTATE,
                   "%s: the base optimizer was freed (optim_free); this SAM object can only be freed", fn);
    return OPTIM_OK;
}

/* Live, and the base has the parameters and groups the saved copies were made for. */
static int optim__sam_check(optim_sam *s, const char *fn)
{
    OPTIM__FORWARD(optim__sam_live(s, fn));
    OPTIM__FAIL_IF(s->base->nparams != s->nparams, OPTIM__SE(s), OPTIM_ESTATE,
                   "%s: the base optimizer has %zu params but had %zu when the SAM object was created", fn,
                   s->base->nparams, s->nparams);
    OPTIM__FAIL_IF(s->base->ngroups != s->ngroups, OPTIM__SE(s), OPTIM_ESTATE,
                   "%s: the base optimizer has %zu groups but had %zu when the SAM object was created", fn,
                   s->base->ngroups, s->ngroups);
    return OPTIM_OK;
}

/* Rebind every parameter of the base (the _with entry points); errors are
 * the base's, copied into the SAM handle. Nothing changes on failure. */
static int optim__sam_rebind(optim_sam *s, const char *fn, size_t count, float *const *params,
                             const float *const *grads)
{
    optim__ptrs x = {NULL, NULL, params, grads, 1};
    int rc = optim__rebind(s->base, fn, count, &x);
    if (rc != OPTIM_OK) return optim__fail(OPTIM__SE(s), rc, "%s", s->base->err.message);
    return OPTIM_OK;
}

static int optim__sam_first(optim_sam *s, const char *fn, int rebind, size_t count, float *const *params,
                            const float *const *grads)
{
    optim *o;
    size_t nblocks, total, i;
    double q, norm;
    optim__norm kind;
    const char *bad_name;
    /* Every check before the rebinding, so that a refusal changes nothing. */
    OPTIM__FORWARD(optim__sam_check(s, fn));
    o = s->base;
    /* Its second step would be refused (optim_step in eval mode): refused now, before anything moves. */
    OPTIM__FAIL_IF(o->sf_eval, OPTIM__SE(s), OPTIM_ESTATE,
                   "%s: the %s optimizer is in eval mode (the parameters hold x); call optim_schedule_free_train "
                   "first; nothing moved",
                   fn, optim_rule_name(o->rule));
    OPTIM__FAIL_IF(o->ema_swapped, OPTIM__SE(s), OPTIM_ESTATE,
                   "%s: the parameters hold the EMA (optim_ema_swap); swap back first; nothing moved", fn);
    OPTIM__FAIL_IF(s->perturbed || s->skip_pending, OPTIM__SE(s), OPTIM_ESTATE,
                   "%s: called twice; call optim_sam_second_step or optim_sam_restore first", fn);
    OPTIM__FAIL_IF(o->sam_active, OPTIM__SE(s), OPTIM_ESTATE,
                   "%s: another optim_sam over the base optimizer is between first_step and second_step; complete "
                   "or restore that step first",
                   fn);
    if (rebind) OPTIM__FORWARD(optim__sam_rebind(s, fn, count, params, grads));
    total = optim__sam_tasks(s, 0, &nblocks);

    /* The dual norm ||h||_q of h = T g: q = 2 for p = 2, 1 for p = inf. */
    q = isinf(s->p) ? 1.0 : s->p / (s->p - 1.0);
    kind = optim__norm_kind(q);
    optim__reduce_run(o->kt, o->tasks, o->nparams, nblocks, kind, q, o->partials, o->bad, o->threads);
    OPTIM__FORWARD(optim__norm_all(o, nblocks, kind, q, &norm, &i, &bad_name, OPTIM__SE(s)));
    s->last_norm = norm;
    if (o->nonfinite != OPTIM_NONFINITE_PROPAGATE && bad_name) {
        OPTIM__FAIL_IF(o->nonfinite == OPTIM_NONFINITE_ERROR, OPTIM__SE(s), OPTIM_ENONFINITE,
                       "%s: the gradient of param %zu '%s' holds NaN or Inf; nothing moved", fn, i, bad_name);
        s->skip_pending = 1;
        return optim__ok(OPTIM__SE(s));
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
    o->sam_active = s;
    return optim__ok(OPTIM__SE(s));
}

int optim_sam_first_step(optim_sam *s)
{
    if (!s) return OPTIM_ENULL;
    return optim__sam_first(s, "optim_sam_first_step", 0, 0, NULL, NULL);
}

int optim_sam_first_step_with(optim_sam *s, size_t count, float *const *params, const float *const *grads)
{
    if (!s) return OPTIM_ENULL;
    return optim__sam_first(s, "optim_sam_first_step_with", 1, count, params, grads);
}

/* Copy the saved w of every perturbed parameter into the memory bound to it
 * now, and release the base. */
static void optim__sam_undo(optim_sam *s)
{
    size_t nblocks, total = optim__sam_tasks(s, 1, &nblocks);
    optim__run(s->base->kt, optim__range_copy_back, s->base->tasks, s->base->nparams, total, s->base->threads);
    memset(s->moved, 0, s->nparams);
    s->perturbed = 0;
    s->base->sam_active = NULL;
}

static int optim__sam_restore(optim_sam *s, const char *fn, int rebind, size_t count, float *const *params,
                              const float *const *grads)
{
    OPTIM__FORWARD(optim__sam_live(s, fn));
    /* While perturbed the base cannot gain parameters or groups (optim__sam_guard). */
    if (s->perturbed) OPTIM__FORWARD(optim__sam_check(s, fn));
    /* Rebind first: w goes into the memory bound now, never into memory the
     * caller has replaced (and perhaps freed) since first_step. */
    if (rebind) OPTIM__FORWARD(optim__sam_rebind(s, fn, count, params, grads));
    s->skip_pending = 0;
    if (s->perturbed) optim__sam_undo(s);
    return optim__ok(OPTIM__SE(s));
}

int optim_sam_restore(optim_sam *s)
{
    if (!s) return OPTIM_ENULL;
    return optim__sam_restore(s, "optim_sam_restore", 0, 0, NULL, NULL);
}

int optim_sam_restore_with(optim_sam *s, size_t count, float *const *params, const float *const *grads)
{
    if (!s) return OPTIM_ENULL;
    return optim__sam_restore(s, "optim_sam_restore_with", 1, count, params, grads);
}

static int optim__sam_second(optim_sam *s, const char *fn, int rebind, size_t count, float *const *params,
                             const float *const *grads)
{
    optim *o;
    int rc;
    OPTIM__FORWARD(optim__sam_live(s, fn));
    o = s->base;
    OPTIM__FAIL_IF(!s->perturbed && !s->skip_pending, OPTIM__SE(s), OPTIM_ESTATE,
                   "%s: no first_step to complete; call optim_sam_first_step first", fn);
    /* While perturbed the base cannot gain parameters or groups (optim__sam_guard); a
     * skipped first_step moved nothing, so there is nothing to restore whatever it has. */
    if (s->perturbed) OPTIM__FORWARD(optim__sam_check(s, fn));
    /* Rebind before restoring: the saved w belongs to each parameter, and goes
     * into the memory bound to it now (a binding replaces a tensor's storage:
     * the old memory may already be freed). */
    if (rebind) OPTIM__FORWARD(optim__sam_rebind(s, fn, count, params, grads));
    if (s->skip_pending) {
        s->skip_pending = 0;
        optim__skip_step(o); /* no statistics either */
        return optim__ok(OPTIM__SE(s));
    }
    optim__sam_undo(s);
    rc = optim__step(o);
    if (rc != OPTIM_OK) return optim__fail(OPTIM__SE(s), rc, "%s", o->err.message);
    return optim__ok(OPTIM__SE(s));
}

int optim_sam_second_step(optim_sam *s)
{
    if (!s) return OPTIM_ENULL;
    return optim__sam_second(s, "optim_sam_second_step", 0, 0, NULL, NULL);
}

int optim_sam_second_step_with(optim_sam *s, size_t count, float *const *params, const float *const *grads)
{
    if (!s) return OPTIM_ENULL;
    return optim__sam_second(s, "optim_sam_second_step_with", 1, count, params, grads);
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
    OPTIM__FORWARD(optim__sam_live(s, "optim_sam_set_rho"));
    OPTIM__FORWARD(optim__sam_check_group(s, "optim_sam_set_rho", rho, 0, 0.0));
    for (g = 0; g < s->ngroups; g++) s->rho[g] = rho;
    return optim__ok(OPTIM__SE(s));
}

int optim_sam_set_group(optim_sam *s, size_t g, double rho, int adaptive, double eta)
{
    if (!s) return OPTIM_ENULL;
    OPTIM__FORWARD(optim__sam_live(s, "optim_sam_set_group"));
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
