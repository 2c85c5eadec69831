/*
 * optim.h: deep-learning optimizers in C11, exact to torch.optim.
 *
 * Two levels share one set of update rules:
 *
 *  1. Stateless kernels (optim_update): one rule applied to one parameter
 *     array, with state arrays the caller owns. For frameworks that manage
 *     their own memory.
 *  2. The optimizer object (optim): owns the state, holds parameter groups
 *     with their own hyperparameters, counts steps per parameter, and runs
 *     one step over every parameter in one parallel pass.
 *
 * Conventions
 *  - Every function that can fail returns an int status: OPTIM_OK (0) or a
 *    negative OPTIM_E* code. The detail ("adam: beta1 = 1.5 is outside
 *    [0, 1)") is in optim_errmsg(handle) for functions on a handle, and in
 *    the optional optim_error out-argument for the others (pass NULL if you
 *    do not want it).
 *  - On error nothing changes: no parameter, state or hyperparameter is
 *    touched, and no value is silently replaced by another.
 *  - The library never prints, never exits and never keeps global mutable
 *    state except the CPU-dispatch choice, made once.
 *  - Arrays are float32 unless given another element type (optim_dtype:
 *    float64, bfloat16, float16) through the *_typed / *_data functions.
 *    Parameter and gradient memory belongs to the caller; state memory
 *    belongs to the optimizer object (64-byte aligned). Every array the
 *    caller gives is aligned to its element size (4 bytes for float32, 8
 *    for float64, 2 for the half types): a misaligned one is refused with
 *    OPTIM_EINVAL by every call that takes it, whatever its pointer type.
 *  - Thread safety: distinct handles may be used from distinct threads at
 *    once. One handle must not be used by two threads at the same time (an
 *    optim_sam counts as part of its base). The stateless functions
 *    (optim_update, optim_clip.h) may run at once on arrays no other call
 *    writes.
 *  - Caller memory: a call reads and writes the parameter and gradient memory
 *    bound when it runs (by optim_add_param, the _with calls, optim_rebind,
 *    optim_set_param_ptrs); the caller keeps it alive until the call returns.
 *    Between calls it may be freed or replaced: the library dereferences no
 *    pointer outside a call, and the next _with call or optim_rebind binds the
 *    new memory (bindings rebind before every call that uses bound memory).
 */
#ifndef OPTIM_H
#define OPTIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Version -------------------------------------------------------------
 * CMake reads these three lines; keep their form. */
#define OPTIM_VERSION_MAJOR 0
#define OPTIM_VERSION_MINOR 1
#define OPTIM_VERSION_PATCH 0
#define OPTIM_VERSION_NUMBER \
    (OPTIM_VERSION_MAJOR * 10000 + OPTIM_VERSION_MINOR * 100 + OPTIM_VERSION_PATCH)
#define OPTIM__STR2(x) #x
#define OPTIM__STR(x) OPTIM__STR2(x)
#define OPTIM_VERSION_STRING \
    OPTIM__STR(OPTIM_VERSION_MAJOR) "." OPTIM__STR(OPTIM_VERSION_MINOR) "." OPTIM__STR(OPTIM_VERSION_PATCH)

/* ---- Export -------------------------------------------------------------- */
#if defined(OPTIM_STATIC_DEFINE)
#  define OPTIM_API
#elif defined(_WIN32)
#  ifdef OPTIM_BUILDING
#    define OPTIM_API __declspec(dllexport)
#  else
#    define OPTIM_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__)
#  define OPTIM_API __attribute__((visibility("default")))
#else
#  define OPTIM_API
#endif

/** The library's version as OPTIM_VERSION_NUMBER; compare with the header's
 *  to check that header and library match. */
OPTIM_API unsigned optim_version_number(void);
/** The library's version as "MAJOR.MINOR.PATCH". */
OPTIM_API const char *optim_version_string(void);

/* ---- Errors -------------------------------------------------------------- */
/* One table generates the codes, their names and their messages. */
#define OPTIM_ERROR_MAP(XX)                                                          \
    XX(OK, 0, "success")                                                             \
    XX(EINVAL, -1, "invalid argument")                                               \
    XX(ENULL, -2, "NULL pointer where a valid one is required")                      \
    XX(ESIZE, -3, "size mismatch")                                                   \
    XX(EOVERLAP, -4, "buffers overlap")                                              \
    XX(ENOMEM, -5, "out of memory")                                                  \
    XX(ERANGE, -6, "index out of range")                                             \
    XX(EUNSUPPORTED, -7, "not supported by this rule, build or CPU")                 \
    XX(ESTATE, -8, "call not valid in the current state")                            \
    XX(ENONFINITE, -9, "non-finite value")                                           \
    XX(EOPEN, -20, "cannot open or create file")                                     \
    XX(EREAD, -21, "read failed")                                                    \
    XX(EWRITE, -22, "write failed")                                                  \
    XX(ENOSPC, -23, "no space left on device or file size limit reached")            \
    XX(ETRUNCATED, -24, "file is truncated")                                         \
    XX(EMAGIC, -25, "not a checkpoint file (wrong magic number)")                    \
    XX(EVERSION, -26, "checkpoint format version is newer than this library")        \
    XX(ECHECKSUM, -27, "checksum mismatch: file is corrupt")                         \
    XX(EFORMAT, -28, "malformed checkpoint")                                         \
    XX(EMISMATCH, -29, "checkpoint does not match this optimizer")                   \
    XX(ECOMM, -40, "communication between processes failed or timed out (optim_mpi.h)")

typedef enum optim_status {
#define OPTIM__ERR_ENUM(name, code, msg) OPTIM_##name = code,
    OPTIM_ERROR_MAP(OPTIM__ERR_ENUM)
#undef OPTIM__ERR_ENUM
    OPTIM__STATUS_FORCE_INT = -0x7fffffff
} optim_status;

#define OPTIM_ERRMSG_MAX 320

/** Detail of a failure, for functions that do not work on a handle.
 *  code is the status returned; message names the function, the parameter
 *  and the offending value. */
typedef struct optim_error {
    int code;
    char message[OPTIM_ERRMSG_MAX];
} optim_error;

/** Fixed message for a status code ("invalid argument"); never NULL. */
OPTIM_API const char *optim_strerror(int code);
/** Symbolic name of a status code ("OPTIM_EINVAL"); never NULL. */
OPTIM_API const char *optim_err_name(int code);

/* ---- Rules and hyperparameters ------------------------------------------- */

typedef enum optim_rule {
    OPTIM_SGD = 1,      /* SGD with momentum, dampening, Nesterov */
    OPTIM_ADAGRAD = 2,  /* AdaGrad */
    OPTIM_RMSPROP = 3,  /* RMSProp, plain or centered, with momentum */
    OPTIM_ADADELTA = 4, /* AdaDelta (optional heavy-ball momentum) */
    OPTIM_ADAM = 5,     /* Adam (L2 weight decay, AMSGrad, bias correction on/off) */
    OPTIM_ADAMW = 6,    /* Adam with decoupled weight decay */
    OPTIM_RADAM = 7,    /* Rectified Adam */
    OPTIM_NADAM = 8,    /* Nesterov-accelerated Adam with momentum schedule */
    OPTIM_ADABOUND = 9, /* AdaBound / AMSBound (Luo et al. 2019) */
    OPTIM_LION = 10,    /* Lion, sign of interpolated momentum (Chen et al. 2023) */
    OPTIM_ADAMAX = 11,  /* AdaMax, Adam with an infinity norm (Kingma & Ba 2015) */
    OPTIM_ASGD = 12,    /* averaged SGD (Polyak & Juditsky 1992), torch.optim.ASGD */
    OPTIM_RPROP = 13,   /* resilient backpropagation (Riedmiller & Braun 1993) */
    OPTIM_LAMB = 14,    /* LAMB, Adam with a per-tensor trust ratio (You et al. 2019), as timm's Lamb */
    OPTIM_LARS = 15,    /* LARS, SGD with a per-tensor trust ratio (You et al. 2017), as timm's Lars */
    OPTIM_ADAFACTOR = 16, /* Adafactor, factored second moment (Shazeer & Stern 2018), as torch 2.x's */
    OPTIM_SPARSE_ADAM = 17, /* lazy Adam over sparse gradients only (torch.optim.SparseAdam; optim_sparse.h) */
    OPTIM_SGD_SCHEDULE_FREE = 18,  /* schedule-free SGD (Defazio et al. 2024; optim_schedule_free_train/eval) */
    OPTIM_ADAMW_SCHEDULE_FREE = 19, /* schedule-free AdamW (Defazio et al. 2024; optim_schedule_free_train/eval) */
    OPTIM_MUON = 20 /* momentum orthogonalised by Newton-Schulz, 2-D weights (torch.optim.Muon; optim_muon.h) */
} optim_rule;
/* The largest rule value; a value below it without a rule (optim_rule_name
 * gives NULL) is reserved. */
#define OPTIM_RULE_COUNT 20

/** Where eps sits relative to the square root of the second moment. */
typedef enum optim_eps_placement {
    OPTIM_EPS_OUTSIDE = 0, /* g / (sqrt(v) + eps): torch.optim's form */
    OPTIM_EPS_INSIDE = 1   /* g / sqrt(v + eps): the seeds' AdaGrad/RMSProp/AdaDelta form */
} optim_eps_placement;

/**
 * Hyperparameters of one rule (one parameter group).
 *
 * Always start from optim_hparams_init(), which fills torch.optim's defaults
 * for the rule, then change fields. Fields a rule does not use must stay 0
 * (optim_hparams_init leaves them 0); a non-zero unused field is an error, so
 * that a setting is never silently ignored. Boolean fields take 0 or 1.
 *
 * Which rule uses what (defaults in brackets, as torch.optim):
 *   SGD      lr [1e-3; torch requires it] momentum [0] dampening [0] nesterov [0]
 *            weight_decay [0] maximize [0]
 *   ADAGRAD  lr [1e-2] lr_decay [0] weight_decay [0] initial_accumulator_value [0]
 *            eps [1e-10] eps_placement [OUTSIDE] maximize
 *   RMSPROP  lr [1e-2] alpha [0.99] eps [1e-8] eps_placement [OUTSIDE]
 *            weight_decay [0] momentum [0] centered [0] maximize
 *   ADADELTA lr [1.0] rho [0.9] eps [1e-6] eps_placement [INSIDE]
 *            weight_decay [0] momentum [0] (heavy-ball on the update; an
 *            optim extension, 0 = torch's AdaDelta) maximize
 *   ADAM     lr [1e-3] beta1 [0.9] beta2 [0.999] eps [1e-8] eps_placement [OUTSIDE]
 *            weight_decay [0] decoupled_weight_decay [0] amsgrad [0]
 *            bias_correction [1] maximize
 *   ADAMW    as ADAM, with weight_decay [1e-2] and decoupled_weight_decay [1]
 *            (must stay 1: use ADAM for coupled L2 decay)
 *   RADAM    lr [1e-3] beta1 beta2 eps eps_placement weight_decay
 *            decoupled_weight_decay [0] maximize
 *   NADAM    lr [2e-3] beta1 beta2 eps eps_placement weight_decay
 *            decoupled_weight_decay [0] momentum_decay [4e-3] maximize
 *   ADABOUND lr [1e-3] beta1 beta2 final_lr [0.1] gamma [1e-3] eps [1e-8]
 *            eps_placement weight_decay amsgrad (= amsbound) bias_correction [1]
 *            initial_lr [0 = the group's lr when the group is created; for the
 *            stateless optim_update, 0 = the lr of that call, so final_lr is
 *            not scaled: give initial_lr when the lr changes] maximize
 *   LION     lr [1e-4] beta1 [0.9] beta2 [0.99] weight_decay [0]
 *            decoupled_weight_decay [1; 0 = L2 in the gradient, an optim extra]
 *            maximize (defaults of the authors' lion_pytorch.py)
 *   ADAMAX   lr [2e-3] beta1 [0.9] beta2 [0.999] eps [1e-8] weight_decay [0] maximize
 *   ASGD     lr [1e-2] lambd [1e-4] alpha [0.75; optim keeps it in [0, 1]]
 *            t0 [1e6] weight_decay [0] maximize
 *   RPROP    lr [1e-2; the initial step size] etaminus [0.5] etaplus [1.2]
 *            step_size_min [1e-6] step_size_max [50] maximize
 *   LAMB     lr [1e-3] beta1 [0.9] beta2 [0.999] eps [1e-6] weight_decay [1e-2]
 *            bias_correction [1] trust_clip [0] always_adapt [0] maximize
 *            (timm's Lamb; the trust ratio ||p|| / ||update|| applies where
 *            weight_decay != 0 or always_adapt: docs/rules/lamb.md)
 *   LARS     lr [1.0] momentum [0] dampening [0] nesterov [0] weight_decay [0]
 *            trust_coeff [1e-3] eps [1e-8] trust_clip [0] always_adapt [0]
 *            maximize (timm's Lars: docs/rules/lars.md)
 *   SPARSE_ADAM lr [1e-3] beta1 [0.9] beta2 [0.999] eps [1e-8] maximize
 *            (sparse gradients only: optim_sparse.h)
 *   SGD_SCHEDULE_FREE lr [1.0] momentum [0.9; in (0, 1)] weight_decay [0]
 *            warmup_steps [0] r [0] weight_lr_power [2] (facebookresearch/
 *            schedule_free's SGDScheduleFree; docs/rules/schedule_free.md)
 *   ADAMW_SCHEDULE_FREE lr [0.0025] beta1 [0.9; in (0, 1)] beta2 [0.999]
 *            eps [1e-8] weight_decay [0] warmup_steps [0] r [0]
 *            weight_lr_power [2] (AdamWScheduleFree)
 *            Both keep the parameters at y while training and at x for
 *            evaluation: optim_schedule_free_train / _eval below.
 *   MUON     lr [1e-3] weight_decay [0.1] (decoupled) momentum [0.95]
 *            nesterov [1] eps [1e-7] ns_steps [5] ns_a, ns_b, ns_c
 *            [3.4445, -4.7750, 2.0315] adjust_lr [OPTIM_MUON_ADJUST_ORIGINAL]
 *            (torch.optim.Muon; float32 2-D parameters, optim_param_set_shape;
 *            the orthogonalisation is liboptim_muon's: optim_muon.h)
 *   ADAFACTOR lr [1e-2; the cap of the relative step] beta2_decay [-0.8]
 *            eps_auto [1: eps1 is the dtype's machine epsilon, torch's None]
 *            eps1 [0; >= 0, used when eps_auto = 0] eps2 [1e-3]
 *            clip_threshold [1.0; torch's d, >= 1] weight_decay [0; decoupled,
 *            p *= 1 - lr*wd] maximize (torch 2.x's Adafactor; the second
 *            moment is factored over the last two dimensions of the shape given
 *            by optim_param_set_shape, unfactored without one:
 *            docs/rules/adafactor.md)
 */
typedef struct optim_hparams {
    optim_rule rule;
    double lr;                        /* learning rate, >= 0 */
    double weight_decay;              /* >= 0; L2 (added to the gradient) unless decoupled */
    int decoupled_weight_decay;       /* 1: p *= 1 - lr*weight_decay before the update */
    int maximize;                     /* 1: ascend the objective (gradient negated) */
    double momentum;                  /* >= 0 (SGD, RMSPROP, ADADELTA) */
    double dampening;                 /* [0, 1] (SGD) */
    int nesterov;                     /* needs momentum > 0 and dampening 0 (SGD) */
    double beta1, beta2;              /* [0, 1) (Adam family) */
    double alpha;                     /* [0, 1] smoothing of the squared gradient (RMSPROP) */
    double rho;                       /* [0, 1] (ADADELTA) */
    double eps;                       /* >= 0 (0 as torch allows it: where it meets a 0, 0 / 0 gives NaN, as torch) */
    int eps_placement;                /* optim_eps_placement */
    int amsgrad;                      /* 1: use the running maximum of v (ADAM, ADAMW, ADABOUND) */
    int bias_correction;              /* 1: divide the moments by (1 - beta^t) (ADAM, ADAMW, ADABOUND) */
    int centered;                     /* 1: normalise by the estimated variance (RMSPROP) */
    double lr_decay;                  /* >= 0 (ADAGRAD) */
    double initial_accumulator_value; /* >= 0 (ADAGRAD) */
    double momentum_decay;            /* >= 0 (NADAM) */
    double final_lr;                  /* >= 0 (ADABOUND) */
    double gamma;                     /* [0, 1) (ADABOUND) */
    double initial_lr;                /* > 0, or 0 for "lr" (ADABOUND: final_lr is scaled by lr/initial_lr) */
    double lambd;                     /* >= 0 decay term (ASGD) */
    double t0;                        /* step after which averaging starts (ASGD) */
    double etaminus, etaplus;         /* (0, 1) and (1, inf): step size factors (RPROP) */
    double step_size_min;             /* bounds of the step sizes (RPROP) */
    double step_size_max;
    double trust_coeff;               /* >= 0: the trust ratio's coefficient (LARS) */
    int trust_clip;                   /* 1: clip the trust ratio at 1 (LAMB), its ratio to lr at 1 (LARS) */
    int always_adapt;                 /* 1: the trust ratio also where weight_decay = 0 (LAMB, LARS) */
    double warmup_steps;              /* a whole number >= 0: linear warm-up of lr over this many steps (schedule-free) */
    double r;                         /* finite: the average's weights grow as (k+1)^r (schedule-free) */
    double weight_lr_power;           /* >= 0: the average's weights are lr_max^weight_lr_power (schedule-free) */
    /* MUON (docs/rules/muon.md): */
    int ns_steps;                     /* 1..99 Newton-Schulz iterations */
    double ns_a, ns_b, ns_c;          /* the quintic's coefficients: X <- a X + (b A + c A^2) X, A = X X^T */
    int adjust_lr;                    /* optim_muon_adjust_lr: the lr's factor from the parameter's shape */
    /* ADAFACTOR (docs/rules/adafactor.md): */
    double beta2_decay;               /* <= 0: beta2_t = 1 - t^beta2_decay (ADAFACTOR) */
    double eps2;                      /* >= 0: the floor of the parameter's RMS in the step size (ADAFACTOR) */
    double clip_threshold;            /* >= 1: the update's RMS is clipped to it (ADAFACTOR's d) */
    int eps_auto;                     /* 1: eps1 is the machine epsilon of the parameter's type (ADAFACTOR) */
    double eps1;                      /* >= 0: the floor of the second moment's estimate (ADAFACTOR, eps_auto = 0) */
} optim_hparams;

/** MUON's learning-rate adjustment for a rows x cols parameter (torch's adjust_lr_fn). */
typedef enum optim_muon_adjust_lr {
    OPTIM_MUON_ADJUST_ORIGINAL = 0,       /* lr * sqrt(max(1, rows / cols)): Keller Jordan's ("original", None) */
    OPTIM_MUON_ADJUST_MATCH_RMS_ADAMW = 1 /* lr * 0.2 * sqrt(max(rows, cols)): Moonshot's ("match_rms_adamw") */
} optim_muon_adjust_lr;

/** Hyperparameter identifiers, for setting one value at a time and for
 *  bindings that should not depend on the struct layout. Numbers are stable. */
typedef enum optim_hparam {
    OPTIM_HP_LR = 1,
    OPTIM_HP_WEIGHT_DECAY = 2,
    OPTIM_HP_DECOUPLED_WEIGHT_DECAY = 3,
    OPTIM_HP_MAXIMIZE = 4,
    OPTIM_HP_MOMENTUM = 5,
    OPTIM_HP_DAMPENING = 6,
    OPTIM_HP_NESTEROV = 7,
    OPTIM_HP_BETA1 = 8,
    OPTIM_HP_BETA2 = 9,
    OPTIM_HP_ALPHA = 10,
    OPTIM_HP_RHO = 11,
    OPTIM_HP_EPS = 12,
    OPTIM_HP_EPS_PLACEMENT = 13,
    OPTIM_HP_AMSGRAD = 14,
    OPTIM_HP_BIAS_CORRECTION = 15,
    OPTIM_HP_CENTERED = 16,
    OPTIM_HP_LR_DECAY = 17,
    OPTIM_HP_INITIAL_ACCUMULATOR_VALUE = 18,
    OPTIM_HP_MOMENTUM_DECAY = 19,
    OPTIM_HP_FINAL_LR = 20,
    OPTIM_HP_GAMMA = 21,
    OPTIM_HP_INITIAL_LR = 22,
    OPTIM_HP_LAMBD = 23,
    OPTIM_HP_T0 = 24,
    OPTIM_HP_ETAMINUS = 25,
    OPTIM_HP_ETAPLUS = 26,
    OPTIM_HP_STEP_SIZE_MIN = 27,
    OPTIM_HP_STEP_SIZE_MAX = 28,
    OPTIM_HP_TRUST_COEFF = 29,
    OPTIM_HP_TRUST_CLIP = 30,
    OPTIM_HP_ALWAYS_ADAPT = 31,
    OPTIM_HP_WARMUP_STEPS = 32,
    OPTIM_HP_R = 33,
    OPTIM_HP_WEIGHT_LR_POWER = 34,
    OPTIM_HP_NS_STEPS = 35,
    OPTIM_HP_NS_A = 36,
    OPTIM_HP_NS_B = 37,
    OPTIM_HP_NS_C = 38,
    OPTIM_HP_ADJUST_LR = 39,
    OPTIM_HP_BETA2_DECAY = 40,
    OPTIM_HP_EPS2 = 41,
    OPTIM_HP_CLIP_THRESHOLD = 42,
    OPTIM_HP_EPS_AUTO = 43,
    OPTIM_HP_EPS1 = 44
} optim_hparam;
#define OPTIM_HP_COUNT 44

/** Lower-case name of a rule ("adam"), or NULL for an unknown value. */
OPTIM_API const char *optim_rule_name(optim_rule rule);
/** The rule with that name (case-insensitive: "adamw", "AdamW"), or 0. */
OPTIM_API optim_rule optim_rule_from_name(const char *name);

/** Field name of a hyperparameter ("beta1"), or NULL for an unknown id. */
OPTIM_API const char *optim_hparam_name(optim_hparam id);
/** The id with that field name, or 0. "amsbound" is accepted for amsgrad. */
OPTIM_API optim_hparam optim_hparam_from_name(const char *name);
/** 1 if the rule uses this hyperparameter, else 0. */
OPTIM_API int optim_rule_uses(optim_rule rule, optim_hparam id);

/** Fill *hp with torch.optim's defaults for the rule (see optim_hparams).
 *  Returns OPTIM_EINVAL for an unknown rule, OPTIM_ENULL for hp == NULL. */
OPTIM_API int optim_hparams_init(optim_hparams *hp, optim_rule rule, optim_error *err);
/** Check every field; OPTIM_OK or OPTIM_EINVAL with a message naming the
 *  field and its value. */
OPTIM_API int optim_hparams_check(const optim_hparams *hp, optim_error *err);
/** Set one field of *hp by id (booleans and eps_placement as 0.0/1.0).
 *  Fails with OPTIM_EUNSUPPORTED if the rule does not use it. The value alone
 *  is range-checked here; cross-field rules (nesterov needs momentum) are
 *  checked by optim_hparams_check and by the object when the set is applied. */
OPTIM_API int optim_hparams_set(optim_hparams *hp, optim_hparam id, double value, optim_error *err);
/** Read one field of *hp by id into *value. */
OPTIM_API int optim_hparams_get(const optim_hparams *hp, optim_hparam id, double *value, optim_error *err);

/* ---- Element types ------------------------------------------------------- */

/**
 * Element types of parameters, gradients and state. The numbers are stable
 * (checkpoints store them); new types (an 8-bit block-quantized state type is
 * planned) are added after the last one.
 *
 * The combinations a parameter may have (optim_add_param_typed):
 *   param     grad                 state     the rule's math runs in
 *   float32   float32              float32   float (optim_add_param)
 *   float64   float64              float64   double (exact to torch.optim on float64 tensors)
 *   bfloat16  bfloat16             float32   float: loaded exactly, the new parameter
 *   float16   float16              float32     rounded to its type, to nearest even
 *   float32   bfloat16 or float16  float32   float (low-precision gradients, float32 parameters)
 * The state of a parameter whose math runs in float may instead be kept in
 * bfloat16 or float16 (optim_add_param_ex), rounded to nearest even when stored,
 * or in OPTIM_INT8_BLOCK (below).
 * Every other pair is refused with OPTIM_EUNSUPPORTED, naming both types.
 */
typedef enum optim_dtype {
    OPTIM_FLOAT32 = 0,  /* IEEE binary32 */
    OPTIM_FLOAT64 = 1,  /* IEEE binary64 */
    OPTIM_BFLOAT16 = 2, /* bfloat16: the upper half of a binary32 */
    OPTIM_FLOAT16 = 3,  /* IEEE binary16 */
    OPTIM_INT8_BLOCK = 4 /* state only: 8-bit codes with a float32 scale per block (below) */
} optim_dtype;
#define OPTIM_DTYPE_COUNT 5

/*
 * OPTIM_INT8_BLOCK, 8-bit block-quantized state (docs/PRECISION.md): a state
 * type for parameters whose math runs in float (optim_add_param_ex). A slot
 * of n elements is one allocation: n one-byte codes, then, from byte
 * OPTIM_INT8_BLOCK_SCALES_OFFSET(n) on, one float32 scale per block of
 * OPTIM_INT8_BLOCK_SIZE elements (the last block may be shorter): the block's
 * largest finite |value| (at least FLT_MIN). A code holds value / scale
 * rounded to nearest (ties to even; stochastically between the two
 * neighbouring codes with OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING)
 * in a small float format: 1 sign, 4
 * exponent, 3 mantissa bits for signed slots (exp_avg, momentum), 5
 * exponent and 3 mantissa bits without sign for non-negative ones
 * (exp_avg_sq, sum, ...), where a positive value never rounds to 0; the
 * code 0xff is NaN (Inf and NaN state values are stored as NaN). Each
 * element is dequantized as code value * scale for the rule's float math and
 * quantized again once per step, in the same pass. optim_dtype_size gives 1
 * (the code); optim_state_bytes counts the scales too.
 */
#define OPTIM_INT8_BLOCK_SIZE 256
#define OPTIM_INT8_BLOCK_SCALES_OFFSET(n) ((((size_t)(n) + 63) / 64) * 64)
#define OPTIM_INT8_BLOCK_BYTES(n) \
    (OPTIM_INT8_BLOCK_SCALES_OFFSET(n) + 4 * (((size_t)(n) + OPTIM_INT8_BLOCK_SIZE - 1) / OPTIM_INT8_BLOCK_SIZE))

/** Name of a type ("float32", "float64", "bfloat16", "float16", "int8_block"), or NULL. */
OPTIM_API const char *optim_dtype_name(optim_dtype dtype);
/** Bytes per element of a type (4, 8, 2, 2, 1: an int8_block code, its block scales apart), or 0 for an
 *  unknown value. */
OPTIM_API size_t optim_dtype_size(optim_dtype dtype);
/** Is (param_dtype, grad_dtype) a supported combination (see optim_dtype)?
 *  OPTIM_OK and *state_dtype (may be NULL) set to the type of the state it
 *  gets, or OPTIM_EUNSUPPORTED (OPTIM_EINVAL for a value that is no type)
 *  with a message naming both types. */
OPTIM_API int optim_dtypes_check(optim_dtype param_dtype, optim_dtype grad_dtype, optim_dtype *state_dtype,
                                 optim_error *err);

/* ---- State --------------------------------------------------------------- */

#define OPTIM_MAX_SLOTS 4

/** Number of state arrays a rule can have (its slots), 0..OPTIM_MAX_SLOTS. */
OPTIM_API int optim_rule_slot_count(optim_rule rule);
/** torch.optim's name for slot i of a rule ("exp_avg", "momentum_buffer"), or NULL. */
OPTIM_API const char *optim_rule_slot_name(optim_rule rule, int slot);
/** What values slot i of a rule holds, which chooses its 8-bit code under
 *  OPTIM_INT8_BLOCK (docs/PRECISION.md): signed (exp_avg, momentum: E4M3),
 *  non-negative or positive (never stored as 0: second moments), both E5M3. */
typedef enum optim_slot_kind {
    OPTIM_SLOT_SIGNED = 0,
    OPTIM_SLOT_NONNEG = 1,
    OPTIM_SLOT_POSITIVE = 2
} optim_slot_kind;
/** The kind (optim_slot_kind) of slot i of a rule, or -1 if there is no such slot. */
OPTIM_API int optim_rule_slot_kind(optim_rule rule, int slot);
/** Bit i set: slot i is needed under these hyperparameters (e.g. Adam's
 *  max_exp_avg_sq only with amsgrad). 0 for invalid input. */
OPTIM_API unsigned optim_hparams_slots(const optim_hparams *hp);
/** 1 if the rule reports a per-parameter step counter in torch's state_dict
 *  (every rule but SGD). */
OPTIM_API int optim_rule_has_step(optim_rule rule);

/**
 * State of one parameter array for the stateless kernels.
 * slot[i] points at n floats for every bit i of optim_hparams_slots(), and
 * is ignored otherwise. `initialized` bit i says slot i holds data; SGD's
 * momentum buffer starts uninitialized and is set from the first gradient
 * (as torch does), every other slot is filled by optim_state_init.
 */
typedef struct optim_state {
    int64_t step;      /* updates applied so far */
    double mu_product; /* NADAM: product of the momentum coefficients so far (1 at start);
                        * ASGD: eta, the step size of the next step (a float32 value) */
    double lr_max;     /* schedule-free rules: the largest warmed-up lr so far (-1 at start) */
    double weight_sum; /* schedule-free rules: the sum of the average's weights so far (0 at start) */
    unsigned initialized;
    float *slot[OPTIM_MAX_SLOTS];
} optim_state;

/** Reset *st for a parameter of n elements: step 0, mu_product 1, every
 *  needed slot filled with its initial value (0, or AdaGrad's
 *  initial_accumulator_value). The slot arrays must be allocated by the
 *  caller, n floats each, not overlapping each other. */
OPTIM_API int optim_state_init(const optim_hparams *hp, size_t n, optim_state *st, optim_error *err);

/**
 * Apply one step of hp's rule to p[0..n) with gradient g[0..n) and state *st;
 * increments st->step. p, g and the needed slots must be non-NULL (unless
 * n == 0, a no-op that still validates hp) and must not overlap.
 * Gradients that are NaN or Inf follow IEEE arithmetic exactly as in
 * torch.optim: that element's parameter and state become non-finite, other
 * elements are unaffected. (The optimizer object can check and skip instead.)
 */
OPTIM_API int optim_update(const optim_hparams *hp, size_t n, float *p, const float *g, optim_state *st,
                           optim_error *err);

/**
 * optim_state_init for state of type state_dtype (OPTIM_FLOAT32, or
 * OPTIM_FLOAT64 for float64 parameters; see optim_dtypes_check): the slot
 * arrays st->slot[i] point at n elements of that type (cast to float *).
 * optim_state_init(hp, n, st, err) is optim_state_init_typed(hp, n,
 * OPTIM_FLOAT32, st, err).
 */
OPTIM_API int optim_state_init_typed(const optim_hparams *hp, size_t n, optim_dtype state_dtype, optim_state *st,
                                     optim_error *err);
/**
 * optim_update over other element types: p holds n elements of p_dtype, g n
 * elements of g_dtype (a supported pair, see optim_dtype), and st's slot
 * arrays hold elements of the pair's state type, initialised by
 * optim_state_init_typed with that type. A bfloat16 or float16 p is loaded
 * exactly, updated in float and rounded back to nearest even. With
 * OPTIM_FLOAT32 for both it is optim_update.
 */
OPTIM_API int optim_update_typed(const optim_hparams *hp, size_t n, void *p, optim_dtype p_dtype, const void *g,
                                 optim_dtype g_dtype, optim_state *st, optim_error *err);

/* ---- CPU paths ----------------------------------------------------------- */

typedef enum optim_isa {
    OPTIM_ISA_AUTO = 0,   /* best the CPU supports (or OPTIM_ISA in the environment) */
    OPTIM_ISA_SCALAR = 1, /* plain C, no vectorisation: the reference path */
    OPTIM_ISA_AVX2 = 2,   /* x86-64 AVX2 + FMA */
    OPTIM_ISA_AVX512 = 3, /* x86-64 AVX-512F/VL/DQ */
    OPTIM_ISA_NEON = 4,   /* AArch64 Advanced SIMD */
    OPTIM_ISA_AVX512BF16 = 5 /* avx512 with AVX-512 BF16 conversions (vcvtne2ps2bf16); the same bits */
} optim_isa;

/** Name of a path ("avx2"), or NULL. */
OPTIM_API const char *optim_isa_name(optim_isa isa);
/** 1 if this build has the path and this CPU can run it. */
OPTIM_API int optim_isa_available(optim_isa isa);
/** The path OPTIM_ISA_AUTO resolves to: the best available one, or the one
 *  named by the environment variable OPTIM_ISA (scalar, avx2, avx512, neon)
 *  when that one is available. Read once per process. */
OPTIM_API optim_isa optim_isa_default(void);

/* ---- The optimizer object ------------------------------------------------ */

typedef struct optim optim;

/** Create an optimizer for one rule, with no groups and no parameters.
 *  *out is set on success, NULL on failure. */
OPTIM_API int optim_create(optim **out, optim_rule rule);
/** Free the optimizer and its state. optim_free(NULL) does nothing. SAM
 *  objects over it are detached, not freed (optim_sam.h). */
OPTIM_API void optim_free(optim *opt);

/** Last error message on this handle ("" if none yet). Never NULL; valid
 *  until the next call on the handle. optim_errmsg(NULL) explains itself. */
OPTIM_API const char *optim_errmsg(const optim *opt);
/** Last status code on this handle. */
OPTIM_API int optim_errcode(const optim *opt);

OPTIM_API optim_rule optim_get_rule(const optim *opt);

/** Add a parameter group with hyperparameters *hp (validated, copied; its
 *  rule must be the optimizer's). *group receives the group's index (may be NULL).
 *  At most 2^32 - 1 groups, and 2^32 - 2 groups and params together (what a
 *  checkpoint stores): OPTIM_EINVAL beyond. */
OPTIM_API int optim_add_group(optim *opt, const optim_hparams *hp, size_t *group);
OPTIM_API size_t optim_group_count(const optim *opt);
/** Copy group g's hyperparameters into *hp. */
OPTIM_API int optim_group_get(const optim *opt, size_t g, optim_hparams *hp);
/** Replace group g's hyperparameters (validated as a whole; on error the group
 *  is unchanged). Takes effect at the next step. Turning on an option that
 *  needs a state slot (amsgrad, momentum, centered) allocates it for every
 *  parameter of the group, initialised as torch would at the first step. */
OPTIM_API int optim_group_set(optim *opt, size_t g, const optim_hparams *hp);
/** Set one hyperparameter of group g; same checks as optim_group_set. */
OPTIM_API int optim_group_set_hparam(optim *opt, size_t g, optim_hparam id, double value);
/** Set several hyperparameters of group g at once, validated together
 *  (so nesterov and momentum can be switched on in one call). */
OPTIM_API int optim_group_set_hparams(optim *opt, size_t g, size_t count, const optim_hparam *ids,
                                      const double *values);
/** Read one hyperparameter of group g. */
OPTIM_API int optim_group_get_hparam(const optim *opt, size_t g, optim_hparam id, double *value);

/** The longest parameter name in bytes (without the terminator): what a
 *  checkpoint stores (optim_checkpoint.h). */
#define OPTIM_MAX_NAME 4096

/**
 * Add a parameter of n floats to group g. The optimizer keeps the pointers
 * (it does not copy or own param/grad) and allocates the state now, so that
 * steps never allocate (unless optim_set_defer_state asked for it later).
 * grad may be NULL (no gradient yet: the parameter is
 * skipped by steps until one is set). name is copied (NULL: "param<index>"),
 * at most OPTIM_MAX_NAME bytes (OPTIM_EINVAL); it names the parameter in error
 * messages and checkpoints. *index receives
 * the parameter's index in the optimizer (may be NULL). A parameter must not
 * overlap its gradient or any other parameter or gradient of the optimizer.
 * n == 0 is allowed (such a parameter is never updated); n <= SIZE_MAX / 4.
 */
OPTIM_API int optim_add_param(optim *opt, size_t g, float *param, const float *grad, size_t n, const char *name,
                              size_t *index);
/**
 * optim_add_param for parameters and gradients of other element types: param
 * points at n elements of param_dtype, grad (may be NULL) at n elements of
 * grad_dtype, a supported pair (see optim_dtype; others are refused with
 * OPTIM_EUNSUPPORTED naming both). Both pointers must be aligned to their
 * element size. The state is allocated in the pair's state type (float64 for
 * float64 parameters, else float32). The parameter's types are fixed: later
 * rebinds (optim_set_param_data, optim_step_with_data) give memory of the
 * same types. With OPTIM_FLOAT32 for both it is optim_add_param.
 */
OPTIM_API int optim_add_param_typed(optim *opt, size_t g, void *param, optim_dtype param_dtype, const void *grad,
                                    optim_dtype grad_dtype, size_t n, const char *name, size_t *index);
/**
 * optim_add_param_typed with the state's element type chosen: state_dtype is
 * the pair's default state type (optim_dtypes_check), or, for parameters
 * whose math runs in float (every type but float64), OPTIM_BFLOAT16 or
 * OPTIM_FLOAT16: the state is then loaded exactly into float for the math and
 * stored back rounded to nearest even, in the same pass (torch.optim keeps
 * the state of a bfloat16/float16 parameter in its type), or OPTIM_INT8_BLOCK
 * (8-bit block-quantized state, see OPTIM_INT8_BLOCK_SIZE). Others are refused
 * with OPTIM_EUNSUPPORTED naming the types (optim_state_dtype_check). flags
 * are storage options (0 for none; optim_precision.h has their functions):
 *  - OPTIM_PARAM_MASTER: for bfloat16/float16 parameters, an fp32 master
 *    copy owned by the optimizer, initialised from param now. Each step
 *    updates the master and writes param = the master rounded to nearest
 *    even, in the same pass. Gradients float32, bfloat16 or float16; state
 *    as for a float32 parameter with those gradients.
 *  - OPTIM_PARAM_STOCHASTIC_ROUNDING: a bfloat16 parameter without a master,
 *    and bfloat16 state, are stored with stochastic rounding, keyed by
 *    (optim_set_seed's seed, the parameter's index, its step, the element):
 *    unbiased, the same bits on every path and thread count, and after a
 *    checkpoint's resume. Refused (OPTIM_EINVAL) when nothing of the
 *    parameter is bfloat16 to round.
 *  - OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING: OPTIM_INT8_BLOCK state whose
 *    codes round stochastically (unbiased between the two neighbouring codes,
 *    in the dequantized domain), keyed as OPTIM_PARAM_STOCHASTIC_ROUNDING's
 *    bits with the state slot's number: the cure for 8-bit state that stalls
 *    when a block's gradients fall (docs/PRECISION.md). Independent of
 *    OPTIM_PARAM_STOCHASTIC_ROUNDING (which rounds bfloat16 values only) and
 *    allowed with a master. Refused (OPTIM_EINVAL) with any other state type.
 *  - OPTIM_PARAM_COMPLEX: param and grad hold n / 2 complex numbers as
 *    (re, im) pairs of float32 or float64 (n even), and the rule computes in
 *    complex arithmetic where torch.optim 1.13 does: RAdam and NAdam (the
 *    second moment is the complex square of the gradient, its square root and
 *    the divisions complex; state in the same pairs). Other rules step a
 *    complex parameter as its real view, without this flag (torch's
 *    view_as_real): OPTIM_EUNSUPPORTED naming the rule. Not with
 *    OPTIM_PARAM_MASTER, stochastic rounding or a state type other than the
 *    parameter's (OPTIM_EINVAL).
 * Other bits: OPTIM_EINVAL.
 */
#define OPTIM_PARAM_MASTER (1u << 0)
#define OPTIM_PARAM_STOCHASTIC_ROUNDING (1u << 1)
#define OPTIM_PARAM_COMPLEX (1u << 2)
/* Stochastic rounding of int8_block state's codes (issue 12, branch q8sr). */
#define OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING (1u << 3)
OPTIM_API int optim_add_param_ex(optim *opt, size_t g, void *param, optim_dtype param_dtype, const void *grad,
                                 optim_dtype grad_dtype, size_t n, optim_dtype state_dtype, unsigned flags,
                                 const char *name, size_t *index);
/** Can parameters of param_dtype keep their state in state_dtype
 *  (optim_add_param_ex)? OPTIM_OK, or OPTIM_EUNSUPPORTED / OPTIM_EINVAL naming
 *  both types. */
OPTIM_API int optim_state_dtype_check(optim_dtype param_dtype, optim_dtype state_dtype, optim_error *err);
/** The element types of parameter i: of its memory, its gradient and its
 *  state (each pointer may be NULL). */
OPTIM_API int optim_param_get_dtypes(const optim *opt, size_t i, optim_dtype *param_dtype, optim_dtype *grad_dtype,
                                     optim_dtype *state_dtype);
OPTIM_API size_t optim_param_count(const optim *opt);
/** Point parameter i at new memory (param must not be NULL; grad may be, for
 *  "no gradient"). Same overlap rules as optim_add_param. For a float32
 *  parameter with float32 gradients; others are refused (OPTIM_EINVAL, naming
 *  the types): use optim_set_param_data. */
OPTIM_API int optim_set_param_ptrs(optim *opt, size_t i, float *param, const float *grad);
/** Point parameter i's gradient at new memory, or NULL for "no gradient".
 *  float32 gradients only, as optim_set_param_ptrs; else optim_set_grad_data. */
OPTIM_API int optim_set_grad(optim *opt, size_t i, const float *grad);
/** optim_set_param_ptrs for any element types: param and grad point at memory
 *  of the types parameter i was added with (optim_param_get_dtypes). */
OPTIM_API int optim_set_param_data(optim *opt, size_t i, void *param, const void *grad);
/** optim_set_grad for any element type: grad points at memory of parameter
 *  i's gradient type, or is NULL for "no gradient". */
OPTIM_API int optim_set_grad_data(optim *opt, size_t i, const void *grad);
/** Point every parameter at new memory in one call, as optim_step_with does,
 *  without stepping: params[i] and grads[i] (NULL: no gradient) for parameter
 *  i, count = optim_param_count, each of the element types parameter i was
 *  added with (optim_param_get_dtypes). Only the new pointers are checked against
 *  each other (the old ones may point to memory the caller has freed since).
 *  Bindings use it before a call that compares or writes bound memory
 *  (optim_add_param, optim_sam_restore). */
OPTIM_API int optim_rebind(optim *opt, size_t count, void *const *params, const void *const *grads);

/** Facts about parameter i. name and pointers stay valid while the parameter
 *  exists. param and grad point at memory of the parameter's element types
 *  (optim_param_get_dtypes), whatever the pointer type says. */
typedef struct optim_param_info {
    const char *name;
    size_t group;
    size_t n;
    float *param;
    const float *grad;
    int64_t step; /* updates applied to this parameter */
} optim_param_info;
OPTIM_API int optim_param_get_info(const optim *opt, size_t i, optim_param_info *info);

/** The most dimensions a parameter's shape may have. */
#define OPTIM_MAX_NDIM 64
/** Give parameter i its shape: ndim sizes (each >= 0; ndim 0 is a scalar, of
 *  1 element) whose product must be its number of elements n. Until one is
 *  given a parameter's shape is [n]. Checkpoints store the shape, and a load
 *  refuses a parameter whose given shape differs from the saved one
 *  (optim_checkpoint.h). For a rule whose state follows the shape
 *  (OPTIM_ADAFACTOR), a parameter that has taken steps keeps its shape:
 *  another is OPTIM_ESTATE naming both (the same one again is accepted).
 *  OPTIM_EINVAL if the product is not n or ndim > OPTIM_MAX_NDIM;
 *  OPTIM_ENOMEM. */
OPTIM_API int optim_param_set_shape(optim *opt, size_t i, size_t ndim, const int64_t *dims);
/** Parameter i's shape: *ndim, and its sizes into dims (room for
 *  OPTIM_MAX_NDIM; may be NULL); *given (may be NULL) is 1 if it was set by
 *  optim_param_set_shape, 0 for the default [n]. */
OPTIM_API int optim_param_get_shape(const optim *opt, size_t i, size_t *ndim, int64_t *dims, int *given);

/**
 * Take one step: every parameter with a gradient is updated by its group's
 * rule and hyperparameters, in one parallel pass over memory. Parameters whose
 * gradient is NULL are skipped and their step counters do not advance (as
 * torch skips parameters whose .grad is None). Fails with OPTIM_ESTATE if the
 * optimizer has no parameters, or while an optim_sam has it between
 * first_step and second_step (optim_sam.h). Never allocates.
 */
OPTIM_API int optim_step(optim *opt);
/**
 * Rebind every parameter's memory and take one step, in one call: params[i]
 * and grads[i] for parameter i (count must equal optim_param_count). grads[i]
 * may be NULL to skip parameter i this step. This is how bindings step a
 * whole model with one call. Every parameter must be float32 with float32
 * gradients (else OPTIM_EINVAL naming the first other one): optim_step_with_data
 * takes any types.
 */
OPTIM_API int optim_step_with(optim *opt, size_t count, float *const *params, const float *const *grads);
/** optim_step_with for parameters of any element types: params[i] and
 *  grads[i] point at memory of parameter i's types (optim_param_get_dtypes). */
OPTIM_API int optim_step_with_data(optim *opt, size_t count, void *const *params, const void *const *grads);

/** Number of steps taken by the optimizer (calls of optim_step that ran,
 *  not counting steps skipped for non-finite gradients). */
OPTIM_API int64_t optim_step_count(const optim *opt);

/* ---- Gradient checks fused into the step ---------------------------------- */

/** What a step does when a gradient holds NaN or Inf. */
typedef enum optim_nonfinite {
    OPTIM_NONFINITE_PROPAGATE = 0, /* default, as torch.optim: IEEE arithmetic, only those elements go bad */
    OPTIM_NONFINITE_SKIP = 1,      /* skip the whole step: parameters, state, step counters and
                                      schedules untouched; optim_step returns OPTIM_OK and
                                      optim_last_step_skipped() says 1 */
    OPTIM_NONFINITE_ERROR = 2      /* as SKIP, but optim_step returns OPTIM_ENONFINITE naming the parameter */
} optim_nonfinite;

/** Choose the non-finite policy. SKIP and ERROR add a read of the gradients
 *  before the update (shared with clipping's norm when both are on). */
OPTIM_API int optim_set_nonfinite(optim *opt, optim_nonfinite policy);
OPTIM_API optim_nonfinite optim_get_nonfinite(const optim *opt);
/** 1 if the last optim_step skipped its update for a non-finite gradient. */
OPTIM_API int optim_last_step_skipped(const optim *opt);
/** Steps skipped for non-finite gradients since creation. */
OPTIM_API int64_t optim_skipped_steps(const optim *opt);

/**
 * Clip the gradients of every step to a total norm of max_norm, as
 * torch.nn.utils.clip_grad_norm_ before optimizer.step(), without writing the
 * gradients: the factor min(1, max_norm / (norm + 1e-6)) is folded into the
 * update. norm_type > 0 or INFINITY (orders below 1 as torch computes them:
 * (sum |g|^p)^(1/p)). max_norm = 0 turns clipping off. A
 * non-finite norm under OPTIM_NONFINITE_PROPAGATE gives a NaN factor, as in
 * torch (use SKIP or ERROR to avoid that). Refused (OPTIM_EINVAL) while
 * optim_set_clip_grad_value is on: the two are not fused together.
 */
OPTIM_API int optim_set_clip_grad_norm(optim *opt, double max_norm, double norm_type);
/**
 * Clamp every gradient element to [-clip_value, clip_value] in every step, as
 * torch.nn.utils.clip_grad_value_ before optimizer.step(), without writing
 * the gradients: the clamp is fused into the update (a NaN element stays
 * NaN, as with torch.clamp; clip_value is rounded to float32, as torch
 * compares a float32 gradient with it). clip_value = 0 turns it off; it must
 * be finite and >= 0. It cannot be on together with optim_set_clip_grad_norm
 * (which of the two comes first is the caller's choice: clip one way with the
 * functions of optim_clip.h before the step). A non-finite policy (SKIP,
 * ERROR) checks the gradients as given, before the clamp. SAM's first_step
 * perturbs with the gradients as given; the clamp applies to the base step.
 * With loss scaling (optim_precision.h) the unscaled gradients are clamped,
 * as GradScaler's unscale_ before clip_grad_value_ (the raw ones at
 * clip_value * scale: exact for a power-of-two scale).
 */
OPTIM_API int optim_set_clip_grad_value(optim *opt, double clip_value);
/** The value set with optim_set_clip_grad_value (0: off; 0 for NULL). */
OPTIM_API double optim_get_clip_grad_value(const optim *opt);
/** The clipping set with optim_set_clip_grad_norm (max_norm 0: off). */
OPTIM_API int optim_get_clip_grad_norm(const optim *opt, double *max_norm, double *norm_type);
/** The total gradient norm measured by the last step (NaN if it measured none). */
OPTIM_API double optim_last_grad_norm(const optim *opt);

/**
 * Access to parameter i's state slot s (see optim_rule_slot_name), for
 * inspection, for bindings and for loading saved state. *data receives the
 * array of n floats, or NULL if the slot is not allocated under the current
 * hyperparameters (deferred state is allocated first: optim_set_defer_state). *initialized (may be NULL) receives whether it holds data
 * (SGD's momentum buffer does not until the first step with momentum). The
 * memory stays valid until optim_free and may be written between steps.
 * Only for float32 state: a slot of another type is refused
 * (OPTIM_EUNSUPPORTED, naming its type); use optim_state_slot_data.
 */
OPTIM_API int optim_state_slot(optim *opt, size_t i, int s, float **data, int *initialized);
/** optim_state_slot for state of any type: *data receives the array of n
 *  elements (or NULL if not allocated), *dtype (may be NULL) its element type
 *  (parameter i's state type, optim_param_get_dtypes). */
OPTIM_API int optim_state_slot_data(optim *opt, size_t i, int s, void **data, optim_dtype *dtype, int *initialized);
/** The number of elements of slot s of parameter i: n, but for rules whose
 *  state follows the parameter's shape (OPTIM_ADAFACTOR: row_var holds B*R
 *  elements and col_var B*C for a shape (..., R, C) of two or more
 *  dimensions, B the product of the leading ones, variance none; for fewer
 *  dimensions or no shape, variance n and the factors none). A slot its
 *  shape leaves empty is not allocated (optim_state_slot gives NULL). */
OPTIM_API int optim_state_slot_len(const optim *opt, size_t i, int s, size_t *len);
/** Slot s of parameter i as n float32 values, whatever its type (a copy into
 *  dst: half types widened exactly, OPTIM_INT8_BLOCK dequantized as a step
 *  dequantizes it; float64 state is refused, OPTIM_EUNSUPPORTED). An
 *  unallocated slot is allocated first as optim_state_slot does. */
OPTIM_API int optim_state_slot_read_f32(optim *opt, size_t i, int s, float *dst);
/** Set slot s of parameter i from n float32 values (src), converted to its
 *  type: half types rounded to nearest even, OPTIM_INT8_BLOCK quantized block
 *  by block as a step stores it (float64 state: OPTIM_EUNSUPPORTED). The
 *  slot's initialized mark is left alone. */
OPTIM_API int optim_state_slot_write_f32(optim *opt, size_t i, int s, const float *src);
/** Mark slot s of parameter i as holding data (or not), e.g. after loading it. */
OPTIM_API int optim_state_set_initialized(optim *opt, size_t i, int s, int initialized);
/** Read and write parameter i's step counter and NAdam's mu_product (ASGD: its eta, the step size
 *  of the next step, any finite value >= 0; NAdam's is in [0, 1]). */
OPTIM_API int optim_param_get_step(const optim *opt, size_t i, int64_t *step);
OPTIM_API int optim_param_set_step(optim *opt, size_t i, int64_t step);
OPTIM_API int optim_param_get_mu_product(const optim *opt, size_t i, double *mu_product);
OPTIM_API int optim_param_set_mu_product(optim *opt, size_t i, double mu_product);
/** Reset parameter i's state as if it had never stepped. */
OPTIM_API int optim_param_reset_state(optim *opt, size_t i);

/**
 * Deferred state. With defer = 1, the parameters added from then on get no
 * state arrays until one is needed: a step (optim_step, optim_step_with,
 * SAM's second step) allocates the state of every parameter still without
 * it; optim_state_slot and optim_state_set_initialized allocate parameter
 * i's; optim_load allocates the slots it reads. The state then starts as
 * optim_add_param would have started it, filled from the group's
 * hyperparameters at that moment (as torch.optim allocates its state at the
 * first step). A failed allocation there returns OPTIM_ENOMEM and changes
 * nothing (the step is not taken). optim_save writes a parameter whose state
 * was never allocated as fresh state, without allocating it.
 * This is for optimizers that describe a model whose state lives elsewhere:
 * liboptim_mpi (optim_mpi.h) builds the state of each rank's shard only, and
 * never allocates the wrapped optimizer's, so no rank ever holds the whole
 * model's state. defer = 0 (the default) allocates at optim_add_param again;
 * either value applies to the parameters added afterwards. OPTIM_EINVAL for
 * other values.
 */
OPTIM_API int optim_set_defer_state(optim *opt, int defer);
OPTIM_API int optim_get_defer_state(const optim *opt);
/** Bytes of state arrays parameter i holds now into *bytes (0 while its state
 *  is deferred, or when its rule and options need none), its fp32 master copy
 *  included (OPTIM_PARAM_MASTER). Never allocates. */
OPTIM_API int optim_param_state_bytes(const optim *opt, size_t i, size_t *bytes);
/** Bytes of state arrays the optimizer holds now, over every parameter (0 for
 *  NULL). Never allocates. */
OPTIM_API size_t optim_state_bytes(const optim *opt);

/** The largest thread count optim_set_threads accepts. */
#define OPTIM_MAX_THREADS 1024
/** Threads used by a step: 0 = all OpenMP threads (the default, OpenMP's
 *  omp_get_max_threads()), 1 = only the caller's thread, k = at most k
 *  (OPTIM_EINVAL, naming the value, above OPTIM_MAX_THREADS or below 0). A
 *  step never asks OpenMP for more threads than its thread limit
 *  (OMP_THREAD_LIMIT), the CPUs it sees, or the step's work can use (steps
 *  under 32K elements run on the caller's thread). Results are bit-identical
 *  for any value. Steps of different optimizers run from several threads at
 *  once each open an OpenMP team of their own, which this bound cannot see:
 *  under a process thread limit (ulimit -u) libgomp ends the process when it
 *  cannot create a thread, so give such optimizers 1 (docs/ROBUSTNESS.md). */
OPTIM_API int optim_set_threads(optim *opt, int threads);
OPTIM_API int optim_get_threads(const optim *opt);
/** Choose the CPU path for this optimizer (tests use this to run each one).
 *  OPTIM_EUNSUPPORTED if this build or CPU cannot run it. */
OPTIM_API int optim_set_isa(optim *opt, optim_isa isa);
/** The path in use (never OPTIM_ISA_AUTO). */
OPTIM_API optim_isa optim_get_isa(const optim *opt);

#ifdef __cplusplus
}
#endif
#endif /* OPTIM_H */
