/* optim_internal.h: the body of the opaque optimizer handle. Private: only
 * the library's own files include it. */
#ifndef OPTIM_INTERNAL_H
#define OPTIM_INTERNAL_H

#include "common.h"
#include "kernels/kernels.h"
#include "optim_ext.h"
#include "optim_muon_ext.h"
#include "optim_precision.h"
#include "optim_sparse.h"
#include "optim_stats.h"

typedef struct optim__param {
    void *p;         /* caller's memory, n elements of pdt */
    const void *g;   /* caller's memory, n elements of gdt; NULL: no gradient, skipped by steps */
    size_t n;
    size_t group;
    char *name;      /* owned */
    optim_dtype pdt, gdt, sdt; /* element types of p, g and the state slots (fixed when added) */
    optim__ctype ct; /* the type the rule's math runs in */
    optim_state st;  /* slots owned, 64-byte aligned, n elements of sdt each (float * for any type) */
    unsigned fresh;  /* slots allocated by the optim_group_set in progress */
    int deferred;    /* its state is allocated at the first need (optim_set_defer_state), not yet */
    int64_t *dims;   /* owned: the shape given by optim_param_set_shape, or NULL ([n]) */
    size_t ndim;
    unsigned flags;  /* OPTIM_PARAM_* storage options (fixed when added) */
    float *master;   /* owned: the fp32 master of OPTIM_PARAM_MASTER (n floats), else NULL */
    uint64_t sr_param, sr_first; /* stochastic rounding keys this as element sr_first.. of parameter sr_param
                                    (its own index and 0, or a sharded slice's origin: optim__ext_set_sr_origin) */
    optim_step_stats stats; /* its statistics of the last step with statistics on (src/stats.c) */
    /* The EMA of the weights (src/ema.c), owned, NULL while off: n elements of ct (float32, or float64 for
     * float64 parameters); for a 16-bit parameter (with or without a master) n 16-bit elements set aside by
     * optim_ema_swap. */
    void *ema;
    void *ema_stash;
    /* The optimizer's ema_count when this parameter's averaging began (0 for every parameter present when the
     * EMA was turned on, or its count then for one added later): its own averages are ema_count - ema_start,
     * so that its first average copies it and its warm-up counts its own averages. ema_k: its constants in
     * the step in progress. */
    int64_t ema_start;
    optim__ema_k ema_k;
} optim__param;

typedef struct optim__group {
    optim_hparams hp;
    struct optim_schedule *sched; /* owned copy (src/schedule.c), or NULL */
    int64_t sched_t;              /* the schedule's step: steps taken since attachment */
    double eps_first;             /* in a step: the machine epsilon of its first parameter stepped (Adafactor) */
} optim__group;

/* An interval of memory, for the overlap check of optim_step_with. */
typedef struct optim__span {
    uintptr_t lo, hi;
    size_t param;
    int is_param; /* 1: a parameter (written), 0: a gradient (read only) */
} optim__span;

struct optim {
    optim_rule rule;
    const optim__kernels *kt;
    int threads;

    optim__group *groups;
    size_t ngroups, cap_groups;

    optim__param *params;
    size_t nparams, cap_params;
    /* Per-parameter scratch of a step, sized with params so steps never allocate. */
    optim__task *tasks;
    optim__k *ks;
    optim_state *next; /* the state each parameter's step will leave (committed once every loop resolved) */
    optim__span *spans; /* 2 per parameter */

    /* Gradient checks before the update (src/optim.c, optim__prepass). */
    optim_nonfinite nonfinite;
    double clip_max_norm; /* 0: no clipping */
    double clip_norm_type;
    double clip_value; /* 0: no value clipping; else the fused clamp to [-clip_value, clip_value] */
    double last_norm; /* NaN if the last step measured none */
    int last_skipped;
    /* The SAM objects over this optimizer (src/sam.c): optim_free detaches them;
     * sam_active is the one that has the parameters at w + e (between its
     * first_step and second_step/restore), or NULL. */
    struct optim_sam *sams, *sam_active;
    int64_t skipped;
    double *partials;   /* one per reduction block of all parameters */
    double *rpartials;  /* two per block: pass 1 of a rule with a per-tensor reduction (LAMB, LARS) */
    unsigned char *bad; /* ditto: block holds a NaN/Inf */
    double *spartials;  /* OPTIM__NSTAT per block: the step statistics (src/stats.c) */
    int stats_on;       /* optim_set_stats */
    int stats_copies;   /* optim__stats_force_copies (white-box tests): no fused statistics loop */
    size_t cap_blocks;

    int64_t steps;
    /* Reduced precision (src/precision.c): stochastic rounding's seed, loss scaling's settings and state. */
    uint64_t seed;
    optim_loss_scale ls; /* mode OFF: none */
    double ls_scale;     /* the current scale (a float32 value); 1 when off */
    int64_t ls_tracker;  /* consecutive steps without overflow since the last change */
    int defer_state; /* parameters added now get their state at the first need (optim_set_defer_state) */
    optim_ext_hooks ext; /* optim_ext.h: combine is NULL unless a layered library set it */
    /* Muon (src/muon.c): the orthogonalisation liboptim_muon installed (orth NULL: none), and the
     * scratch of a step (X, then the hook's work), sized by optim_param_set_shape for the largest
     * 2-D parameter, so that steps never allocate. */
    optim_muon_ops muon;
    float *muon_scratch;
    size_t muon_cap; /* floats in muon_scratch */
    /* The sparse gradients of the optim_step_sparse in progress (sparse[i] for
     * parameter i, or NULL), NULL outside it (src/step.c). */
    const optim_sparse_grad *const *sparse;
    /* Schedule-free rules (src/schedule_free.c): 1 while the parameters hold x (eval), 0 while they
     * hold y (train, the state of a new optimizer). */
    int sf_eval;
    /* The EMA of the weights (src/ema.c, include/optim_ema.h): on, decay, warm-up, the averages taken,
     * 1 while the parameters hold the averages (each parameter's constants: optim__param's ema_k). */
    int ema_on, ema_warmup, ema_swapped;
    double ema_decay;
    int64_t ema_count;
    optim_error err;
};

/* Muon (src/muon.c): the checks of a step before anything changes, and the
 * update of every parameter with a gradient (after the state commit). */
int optim__muon_check(optim *o);
void optim__muon_run(optim *o);
/* Grow the scratch for a rows x cols Muon parameter (optim_param_set_shape). */
int optim__muon_reserve(optim *o, const char *fn, size_t rows, size_t cols);

/* Does parameter i have a gradient this step (dense, or sparse during optim_step_sparse)? */
static inline int optim__has_grad(const optim *o, size_t i)
{
    return o->params[i].g != NULL || (o->sparse && o->sparse[i]);
}

/* Fill o->tasks for the parameters that have a gradient (others get n = 0):
 * pointers, slots, element and block offsets. Returns the number of
 * elements; *nblocks receives the number of reduction blocks. */
size_t optim__build_tasks(optim *o, size_t *nblocks);
/* The pointer arrays of a rebind: void pointers (pv, gv), or float pointers
 * (fp, gf) from the float32 entry points; one pair is set. (A float * and a
 * void * need not share a representation, so the arrays are read as given.) */
typedef struct optim__ptrs {
    void *const *pv;
    const void *const *gv;
    float *const *fp;
    const float *const *gf;
    int floats; /* 1: fp and gf */
} optim__ptrs;

static inline void *optim__ptrs_p(const optim__ptrs *x, size_t i)
{
    return x->floats ? (void *)x->fp[i] : x->pv[i];
}
static inline const void *optim__ptrs_g(const optim__ptrs *x, size_t i)
{
    return x->floats ? (const void *)x->gf[i] : x->gv[i];
}
/* Is the params (which = 1) or grads (0) array given? */
static inline int optim__ptrs_given(const optim__ptrs *x, int which)
{
    return x->floats ? (which ? x->fp != NULL : x->gf != NULL) : (which ? x->pv != NULL : x->gv != NULL);
}

/* Point every parameter at params[i]/grads[i] after checking them (count,
 * NULLs, float32 types when the arrays are float pointers, alignment,
 * overlaps); errors name `fn`. */
int optim__rebind(optim *o, const char *fn, size_t count, const optim__ptrs *x);
/* Bytes of n elements of a type (n is at most SIZE_MAX / 8: optim_add_param checks it). */
#define OPTIM__BYTES(n, dtype) ((n) * optim_dtype_size(dtype))
/* Parameter i is float32 with float32 gradients, as the float * entry points
 * need; else an error naming its types and the function to use `instead`. */
int optim__check_float32(optim *o, const char *fn, size_t i, const char *instead);
/* A pointer of an element type must be aligned to its size (float32 memory,
 * which the library always accepted as given, is not checked); `what` and
 * (i, name) name it in the error. */
int optim__check_align(optim *o, const char *fn, const char *what, const void *x, optim_dtype dtype, size_t i,
                       const char *name);
/* Allocate the deferred state (optim_set_defer_state) of parameters
 * [first, last): every slot their group's hyperparameters need, filled as
 * optim_add_param fills it. All or nothing; OPTIM_ENOMEM naming fn and the
 * parameter. Parameters with state already are left alone. */
int optim__state_ensure(optim *o, const char *fn, size_t first, size_t last);
/* optim_step without the NULL check. */
int optim__step(optim *o);
/* Index of the parameter holding reduction block b of the tasks built last. */
size_t optim__param_of_block(const optim *o, size_t b);
/* Finish the reduction whose partials optim__reduce_run left in o->partials
 * and o->bad (nblocks of them), across every process when a combine hook is
 * set (optim_ext.h): *norm, and the parameter holding the first non-finite
 * block (*bad_name NULL when none). A hook's failure is returned with its
 * message in *err. */
int optim__norm_all(optim *o, size_t nblocks, optim__norm kind, double p, double *norm, size_t *bad_param,
                    const char **bad_name, optim_error *err);

/* Step statistics (src/stats.c). Before a step's constants: clear every
 * parameter's record and, with statistics on, point each dense task at its
 * partials (split alignment OPTIM__RBLOCK). After its update pass: fold each
 * stepped parameter's partials and constants into its record. */
void optim__stats_begin(optim *o);
void optim__stats_end(optim *o);
/* White-box tests (tests/test_stats.c): on = 1 measures every step's
 * statistics through copies (kernels.h's optim__stats_fn) where a fused
 * loop instance exists, so that both are compared on every path. */
void optim__stats_force_copies(optim *o, int on);
/* Count a skipped step (the non-finite policy, loss scaling's overflow, SAM's
 * second step after a skipped first): the counters, and with statistics on
 * no record for any parameter (include/optim_stats.h: out.step == 0). Every
 * skip goes through here. */
void optim__skip_step(optim *o);

/* Reduced precision (src/precision.c). The factor 1 / scale the step folds
 * into the gradient (1 without loss scaling). */
double optim__ls_inv(const optim *o);
/* After a step's pre-pass: overflow (1: a non-finite gradient was found)
 * or a step that ran (0) updates a dynamic scale as GradScaler.update. */
void optim__ls_update(optim *o, int overflow);
/* The task fields of parameter i's storage options (master, stochastic
 * rounding) and keys for the step it is about to take. */
void optim__param_task(const optim *o, size_t i, optim__task *t);
/* master = widen(param memory), through the path's storage descriptor. */
void optim__master_sync(const optim *o, optim__param *pa);

/* The EMA of the weights (src/ema.c). Allocate parameter pa's average, set to
 * its value (OPTIM_ENOMEM naming fn, nothing allocated); free it. In a step,
 * after the tasks and before the update pass: the constants, and each dense
 * task's EMA stream; after the pass: the parameters it did not cover, and the
 * count. Nothing while off. */
int optim__ema_alloc(optim *o, const char *fn, optim__param *pa);
void optim__ema_free(optim__param *pa);
void optim__ema_begin(optim *o);
void optim__ema_end(optim *o);

/* SAM (src/sam.c). Detach every SAM object over o (optim_free): each then
 * refuses its calls and frees safely; the parameters are not touched. */
void optim__sam_detach_all(optim *o);
/* The one check of every call that must not run while an optim_sam has o's
 * parameters at w + e (steps of the base itself, adding parameters or groups,
 * checkpoints): OPTIM_ESTATE naming fn, recorded in o. */
int optim__sam_guard(optim *o, const char *fn);

/* Checkpoint limits (src/ckpt_format.c): does a parameter named `name` of n
 * elements, or one more group, fit what a checkpoint stores? OPTIM_EINVAL
 * naming fn, the limit and the value, recorded in o. Checked when they are
 * added, so that every save that succeeds loads. */
int optim__ck_fits_param(optim *o, const char *fn, const char *name, size_t n);
int optim__ck_fits_group(optim *o, const char *fn);

/* Schedules (src/schedule.c). The lr group g's step uses: its schedule's
 * value at sched_t, or hp.lr without a schedule. */
double optim__group_lr(const optim__group *g);
/* After a step that ran: every group's schedule step + 1. */
void optim__schedules_advance(optim *o);
/* Free every group's schedule (optim_free). */
void optim__schedules_free(optim *o);

#endif
