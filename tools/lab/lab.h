/* lab.h: what the files of `optim lab` share.
 *
 * The lab is a program, not part of the library: it may print, exit on an
 * out-of-memory condition, and use OpenBLAS and zlib. It uses the library
 * only through the public headers. Each experiment is one function that runs
 * the library on a problem, writes the curves as CSV files into the run's
 * directory and records its headline numbers and its finding (a sentence
 * computed from the data, and whether the seed's claim held) in the summary
 * tree, which becomes summary.json. The renderer (python/optim/lab/render.py)
 * turns these files into figures and report.html.
 */
#ifndef OPTIM_LAB_H
#define OPTIM_LAB_H

#include "optim.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define LAB_PI 3.14159265358979323846

/* ---- JSON tree (lab_json.c) ---------------------------------------------- */

typedef enum lab_jtype { LAB_JNULL, LAB_JBOOL, LAB_JNUM, LAB_JSTR, LAB_JARR, LAB_JOBJ } lab_jtype;

/** A JSON value. Objects keep their members in insertion order. */
typedef struct lab_json {
    lab_jtype type;
    int boolean;
    double num;
    char *str;
    char *key; /* member name when the value sits in an object */
    struct lab_json *child, *last, *next;
} lab_json;

lab_json *lab_json_object(void);
lab_json *lab_json_array(void);
/** A number; NaN and infinities become null (JSON has no such numbers). */
lab_json *lab_json_num(double v);
lab_json *lab_json_str(const char *s);
/** A string formatted as by printf. */
lab_json *lab_json_strf(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
lab_json *lab_json_bool(int b);
lab_json *lab_json_null(void);
/** Set member `key` of obj to v (replacing and freeing an old value); returns v. */
lab_json *lab_json_put(lab_json *obj, const char *key, lab_json *v);
/** As lab_json_put, with a dotted path ("gd.final_point"): intermediate
 *  objects are created. Keys with dots need lab_json_put. Returns v. */
lab_json *lab_json_set(lab_json *obj, const char *path, lab_json *v);
/** Append v to an array; returns v. */
lab_json *lab_json_push(lab_json *arr, lab_json *v);
/** Member by dotted path, or NULL. */
lab_json *lab_json_get(const lab_json *obj, const char *path);
/** Shorthands: an array of n numbers; set a number or string by path. */
lab_json *lab_json_numbers(const double *v, size_t n);
void lab_json_set_num(lab_json *obj, const char *path, double v);
void lab_json_set_str(lab_json *obj, const char *path, const char *s);
/** Write indented JSON; returns 0 or -1 on a write error. */
int lab_json_write(const lab_json *v, FILE *f);
void lab_json_free(lab_json *v);

/* ---- Utilities (lab_util.c) ---------------------------------------------- */

/** malloc/calloc/strdup that end the program with a message on failure. */
void *lab_xmalloc(size_t n);
void *lab_xcalloc(size_t count, size_t size);
char *lab_xstrdup(const char *s);
/** printf into a fresh string. */
char *lab_sprintf(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/** Seconds on a monotonic clock. */
double lab_now(void);

/** xoshiro256** seeded through splitmix64: streams derived from (seed, id)
 *  so that each run's randomness does not depend on what ran before it. */
typedef struct lab_rng {
    uint64_t s[4];
    int have_spare;
    double spare;
} lab_rng;
void lab_rng_init(lab_rng *r, uint64_t seed, uint64_t stream);
uint64_t lab_rng_u64(lab_rng *r);
/** Uniform in [0, 1). */
double lab_rng_uniform(lab_rng *r);
/** Standard normal (Box-Muller). */
double lab_rng_normal(lab_rng *r);
/** Uniform integer in [0, n). */
size_t lab_rng_below(lab_rng *r, size_t n);

/** Progress of one run on stderr: a redrawn bar on a terminal, one line per
 *  `line_every` units (and at the end) otherwise. */
typedef struct lab_progress {
    char label[96];
    const char *unit;
    long total, done;
    double t0, last_draw;
    int tty, line_every;
    long last_line;
    char stage[48]; /* shown before the count ("epoch 2/10"); the caller may set it */
} lab_progress;
void lab_progress_start(lab_progress *p, const char *label, long total, const char *unit, int line_every);
/** done units finished; loss is shown when finite. */
void lab_progress_update(lab_progress *p, long done, double loss);
/** The final line, with an optional note ("acc 0.871"). */
void lab_progress_end(lab_progress *p, const char *note);
/** 1: progress draws nothing (the ranks but 0 of a distributed run). */
void lab_set_quiet(int quiet);

/* ---- Optimizers as the lab names them (lab_util.c) ------------------------ */

/** A lab optimizer: a rule of the library with a few settings, e.g.
 *  "momentum" = SGD with momentum 0.9, "sam" = SAM around "momentum". */
typedef struct lab_optimizer {
    const char *name;  /* as on the command line */
    const char *label; /* for legends */
    optim_rule rule;
    double momentum;   /* SGD's, or AdaDelta's/RMSProp's heavy ball */
    int sam;           /* 1: wrapped in optim_sam (rho below) */
    double rho;
} lab_optimizer;

/** The optimizers every experiment may use, in report order. */
extern const lab_optimizer lab_optimizers[];
extern const size_t lab_optimizer_count;
const lab_optimizer *lab_optimizer_find(const char *name);
/** The library's defaults for o's rule with o's settings, and lr. Exits on a
 *  library error (a bug of the lab, not of the user). */
optim_hparams lab_optimizer_hparams(const lab_optimizer *o, double lr);
/** Call that must succeed: exits with the library's message otherwise. */
void lab_check(int rc, const char *what, const char *detail);

/* ---- Optimizers that need more than one rule and one group (lab_util.c) ----- */

/** A tensor of a model as an optimizer is given it: a matrix rows x cols
 *  (row-major), or a vector (rows = 1). */
typedef struct lab_tensor {
    const char *name;
    float *p, *g;
    size_t rows, cols;
} lab_tensor;

/** An optimizer of the lab: one library optimizer, or several that each step
 *  their own share of the model's tensors (an optimizer object has one rule:
 *  Muon's 2-D weights are one object, the AdamW over the rest another).
 *  Every tensor is in exactly one part; a step steps the parts in order. */
#define LAB_OPT_MAX_PARTS 2
typedef struct lab_opt {
    optim *part[LAB_OPT_MAX_PARTS];
    size_t nparts;
} lab_opt;

/** How an experiment builds and drives an optimizer (optim lab modern's
 *  table; lab_opt_create as the one part and no switching when both are NULL). */
typedef struct lab_opt_hooks {
    /* Build o's parts over the tensors with hp (lr included); vectors_no_decay: the vectors in a second
     * group with weight_decay 0 (LAMB's and LARS's usual exclusion of biases). E.g. Muon: its 2-D weights in
     * a Muon object, the rest in an AdamW object (lab_muon_create). Exits on a library error (a bug of the
     * lab). */
    void (*create)(lab_opt *o, const optim_hparams *hp, const lab_tensor *t, size_t n, int vectors_no_decay);
    /* eval = 1: put a part's parameters at the point to evaluate; 0: back to where gradients are taken
     * (the schedule-free rules' x and y). Called for every part around every evaluation and every recorded
     * point. */
    void (*set_eval)(optim *part, int eval);
} lab_opt_hooks;

/** The plain optimizer: hp's rule, one group with hp, every tensor added
 *  flat under its name, one thread; with vectors_no_decay the vectors in a
 *  second group with hp and weight_decay 0 (when some tensor is a matrix). */
optim *lab_opt_create(const optim_hparams *hp, const lab_tensor *t, size_t n, int vectors_no_decay);
/** Fill o by hooks->create, or with lab_opt_create as its one part when
 *  hooks or create is NULL. */
void lab_opt_build(lab_opt *o, const lab_opt_hooks *hooks, const optim_hparams *hp, const lab_tensor *t, size_t n,
                   int vectors_no_decay);
/** One step of every part, in order (exits on a library error). */
void lab_opt_step(lab_opt *o);
/** hooks->set_eval(part, eval) for every part, when there is one. */
void lab_opt_set_eval(const lab_opt_hooks *hooks, lab_opt *o, int eval);
/** Free every part; o is empty after. */
void lab_opt_free(lab_opt *o);
/** 1 if this lab was built with liboptim_muon (CMake OPTIM_MUON), which
 *  lab_muon_create needs. */
int lab_muon_available(void);
/** Keller Jordan's MuonWithAuxAdam recipe as a create hook (lab_muon.c):
 *  the matrices (rows > 1) in a Muon object with hp (Nesterov, 5
 *  Newton-Schulz steps, hp's lr and weight decay), the vectors in an AdamW
 *  object with the reference's auxiliary settings (LAB_MUON_AUX_*). With no
 *  matrix at all (the 2-D surfaces' one 1 x 2 point) the point is Muon's, as
 *  a 1 x 2 matrix: its orthogonalised momentum is its direction, so Muon
 *  there is normalised Nesterov momentum with a step of fixed length. */
#define LAB_MUON_AUX_LR 3e-4
#define LAB_MUON_AUX_BETA1 0.9
#define LAB_MUON_AUX_BETA2 0.95
#define LAB_MUON_AUX_EPS 1e-10
#define LAB_MUON_AUX_WEIGHT_DECAY 0.0
void lab_muon_create(lab_opt *o, const optim_hparams *hp, const lab_tensor *t, size_t n, int vectors_no_decay);
/** RMS(after - before) / RMS(before) over n floats, in double: the size of
 *  one step relative to the weights (NaN when before is all zero). */
double lab_update_ratio(const float *before, const float *after, size_t n);
/** The mean of n values, and their sample standard deviation (NaN for n < 2):
 *  the seeds' summaries of optim lab precision and modern. */
double lab_mean(const double *v, int n);
double lab_sd(const double *v, int n);

/* ---- Runs: options, context, experiments (lab_main.c) --------------------- */

typedef struct lab_options {
    const char *out;        /* --out DIR, or NULL for runs/<name>-<timestamp> */
    const char *optimizers; /* --optimizers a,b: NULL for each experiment's default set */
    int epochs;             /* --epochs N, 0 for the default */
    uint64_t seed;          /* --seed S */
    int tune;               /* --tune */
    int quick;              /* --quick: tiny configuration for smoke tests */
    int threads;            /* --threads N for OpenBLAS, 0 = all cores */
    int render;             /* 0 with --no-render */
    const char *data_dir;   /* --data DIR: where the Fashion-MNIST IDX files are */
    const char *dataset;    /* --dataset fashion-mnist|digits, NULL = Fashion-MNIST, digits if absent */
    int distributed;        /* --distributed: data parallel over MPI ranks (lab_dist.c) */
    int zero_stage;         /* --zero S: 0 plain data parallel, 1 ZeRO-1, 2 ZeRO-2 (default) */
} lab_options;

struct lab_dataset;

typedef struct lab_ctx {
    lab_options opt;
    int threads;          /* resolved thread count */
    const char *dir;      /* where the files are written (the temporary name during the run) */
    lab_json *summary;    /* the whole summary.json */
    lab_json *exp;        /* the running experiment's object in it */
    const char *allowed;  /* the running experiment's allowed optimizers (comma-separated) */
    struct lab_dataset *data; /* loaded on first use, shared by the experiments */
    struct lab_mlp_cache *mlp_cache; /* finished MLP runs, reused by later experiments */
    int rank, ranks;      /* --distributed: this process's MPI rank and their number (else 0 and 1) */
} lab_ctx;

/** Open <dir>/<name> for writing a CSV file and write its header line;
 *  records the file in the experiment's "files" list. Exits on failure
 *  (the directory was checked to be writable at the start). */
/* A table of the experiment's summary.json ("tables": {name: {title, columns, rows: []}}); rows are pushed
 * onto its "rows" array. */
lab_json *lab_new_table(lab_ctx *ctx, const char *name, const char *title, const char *const *cols, size_t ncols);
FILE *lab_csv_open(lab_ctx *ctx, const char *name, const char *header);
void lab_csv_close(lab_ctx *ctx, FILE *f, const char *name);

/** Record the experiment's finding: what the figure shows, the computed
 *  statement, and whether the seed's claim held (1, 0, or -1 for "mixed /
 *  not applicable"). */
void lab_finding(lab_ctx *ctx, const char *claim, int held, const char *statement);

/* ---- The run directory (lab_rundir.c) -------------------------------------- */

typedef struct lab_run_dir {
    char final_dir[4096];   /* where the complete run ends up */
    char work_dir[4112];    /* final_dir.partial: written during the run */
    char failed_dir[4112];  /* final_dir.failed: where a failed run ends up */
    int final_was_empty_dir; /* --out named an existing empty directory */
    int lock_fd;            /* the locked marker file, -1 when none */
} lab_run_dir;

/** Claim a run directory: --out (out != NULL) or runs/<name>, then -2, -3,
 *  ... for a name that is taken. Creates <dir>.partial exclusively with a
 *  locked marker file. Returns 0; 2 when --out is refused (exists and is not
 *  an empty directory, another run is writing it, its .partial is not the
 *  lab's); 1 when a directory cannot be created; msg says why. */
int lab_run_dir_claim(lab_run_dir *rd, const char *out, const char *name, char *msg, size_t msgsize);
/** Rename <dir>.partial to <dir> (failed = 0) or <dir>.failed, never onto
 *  anything but an empty directory. Returns 0 or -1 (errno). */
int lab_run_dir_finish(lab_run_dir *rd, int failed);
/** Give up the marker's lock (at exit). */
void lab_run_dir_release(lab_run_dir *rd);

/** The optimizers an experiment runs: the --optimizers list when given
 *  (checked against the experiment's allowed set), else `defaults`, a
 *  comma-separated list. Returns the count; *out gets the entries. */
size_t lab_selected_optimizers(lab_ctx *ctx, const char *defaults, const lab_optimizer **out, size_t max);

/** An experiment: runs, writes its files and its part of the summary; returns
 *  0, or non-zero after printing a message (the run is then marked failed). */
typedef int (*lab_experiment_fn)(lab_ctx *ctx);

/* Experiments (lab_exp_*.c). */
int lab_exp_trajectories(lab_ctx *ctx);
int lab_exp_sam(lab_ctx *ctx);
int lab_exp_adagrad_stall(lab_ctx *ctx);
int lab_exp_bias_correction(lab_ctx *ctx);
int lab_exp_units(lab_ctx *ctx);
int lab_exp_fashion_mnist(lab_ctx *ctx);
int lab_exp_bias_ablation(lab_ctx *ctx);
int lab_exp_adadelta_momentum(lab_ctx *ctx);
int lab_exp_precision(lab_ctx *ctx);
int lab_exp_modern(lab_ctx *ctx);

/* ---- 2-D surfaces (lab_surface.c) ---------------------------------------- */

typedef struct lab_surface {
    const char *name;  /* "bowl" */
    const char *title; /* "x²/20 + y²" */
    double (*f)(double x, double y);
    void (*grad)(double x, double y, double g[2]);
    void (*hess)(double x, double y, double h[3]); /* h = {fxx, fxy, fyy} */
    double x0, y0;               /* start */
    int steps;                   /* default number of steps */
    double box[4];               /* plot window xmin, xmax, ymin, ymax */
    const double *minima;        /* (x, y) pairs; NULL for none (saddle) */
    int nminima;
} lab_surface;

extern const lab_surface lab_surfaces[];
extern const size_t lab_surface_count;
const lab_surface *lab_surface_find(const char *name);
/** Distance from (x, y) to the nearest minimum (NaN if there is none). */
double lab_surface_distance(const lab_surface *s, double x, double y);
/** Largest eigenvalue of the Hessian at (x, y). */
double lab_surface_top_eigenvalue(const lab_surface *s, double x, double y);

/** A path on a surface: points (steps + 1 of them, fewer if it stopped). */
typedef struct lab_path {
    int n;
    double *x, *y, *f;
    int diverged; /* left the finite numbers or |w| > 1e6 */
} lab_path;
/** Run hp's rule from the surface's start for `steps` steps with an
 *  optimizer object (one parameter of 2 floats), in float as the library
 *  computes. The optimizer sees the parameters u = w / scale (scale 1: the
 *  surface's own units) and the gradient in those units; the path is
 *  recorded in the original units w. Allocated; free with lab_path_free. */
void lab_surface_run(const lab_surface *s, const optim_hparams *hp, int steps, double scale, lab_path *path);
/** As lab_surface_run, with hp's optimizer wrapped in the library's SAM
 *  (optim_sam, rho, p = 2): each step perturbs the point by rho g/|g|,
 *  recomputes the gradient there and steps from the restored point. */
void lab_surface_run_sam(const lab_surface *s, const optim_hparams *hp, double rho, int steps, double scale,
                         lab_path *path);
/** As lab_surface_run (scale 1) with an optimizer built by hooks (the point
 *  is one 1 x 2 tensor "w"); with a set_eval hook the recorded point is the
 *  evaluation point (set_eval 1, read, set_eval 0) while the gradient is
 *  taken at the training point. */
void lab_surface_run_hooks(const lab_surface *s, const optim_hparams *hp, const lab_opt_hooks *hooks, int steps,
                           lab_path *path);
/** The learning rates of trajectories --tune: 1-2-5 steps from 1e-5 to 5
 *  (out: at least 18 entries). Returns the count. */
int lab_tune_grid(double *out);
/** Write f on an nx x ny grid over the surface's plot window as
 *  surface_<name>_grid.csv (first row: the x values; then y and f(x, y)). */
void lab_surface_write_grid(lab_ctx *ctx, const lab_surface *s, int nx, int ny);
void lab_path_free(lab_path *p);

/* ---- Data sets (lab_data.c) ---------------------------------------------- */

typedef struct lab_dataset {
    char name[32];       /* "fashion-mnist" or "digits" */
    char source[512];    /* where it was read from */
    size_t dim, classes; /* features per example, number of classes */
    size_t ntrain, ntest;
    unsigned char *xtrain, *xtest; /* ntrain * dim, ntest * dim raw values */
    unsigned char *ytrain, *ytest;
    double scale;        /* raw value -> [0, 1]: x / scale */
    float mean, std;     /* of the scaled training pixels, for standardisation */
    char fallback[1400]; /* why the digits replace Fashion-MNIST ("" when they do not) */
} lab_dataset;

#define LAB_FASHION_DIR "/usr/share/datasets/fashion-mnist"
#define LAB_DIGITS_CSV "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz"

/** Load Fashion-MNIST from dir (--data; NULL: $OPTIM_LAB_FASHION_DIR, else
 *  LAB_FASHION_DIR) or, with want = "digits", the digits CSV
 *  ($OPTIM_LAB_DIGITS, else LAB_DIGITS_CSV). Only when dir is NULL and want
 *  is NULL does a missing Fashion-MNIST fall back to the digits, with the
 *  reason in msg and in the data set's fallback; a dir given explicitly must
 *  hold a readable Fashion-MNIST. Returns NULL after writing a message naming
 *  the files and the Debian packages into msg. */
lab_dataset *lab_dataset_load(const char *dir, const char *want, uint64_t seed, char *msg, size_t msgsize);
void lab_dataset_free(lab_dataset *d);
/** Parse IDX data (already decompressed): returns 0 and fills dims, or -1
 *  with a message. Exposed for the tests. */
int lab_idx_parse(const unsigned char *buf, size_t len, int want_type, int want_ndim, size_t dims[3],
                  const unsigned char **data, char *msg, size_t msgsize);
/** Read a whole gzip (or plain) file into memory; NULL with a message. */
unsigned char *lab_gz_read(const char *path, size_t *len, char *msg, size_t msgsize);

/* ---- The MLP (lab_mlp.c) -------------------------------------------------- */

#define LAB_MLP_MAX_LAYERS 4

/** A ReLU MLP dims[0] -> dims[1] -> ... -> dims[nlayers], softmax
 *  cross-entropy. Weights W_l are dims[l+1] x dims[l], row-major. */
typedef struct lab_mlp {
    int nlayers;
    size_t dims[LAB_MLP_MAX_LAYERS + 1];
    float *w[LAB_MLP_MAX_LAYERS], *b[LAB_MLP_MAX_LAYERS];
    float *gw[LAB_MLP_MAX_LAYERS], *gb[LAB_MLP_MAX_LAYERS];
    size_t max_batch;
    float *act[LAB_MLP_MAX_LAYERS + 1]; /* act[0] = input batch, act[l] after layer l */
    float *delta[2];                    /* backward scratch */
    /* bfloat16 storage (lab_mlp_use_bf16): the model's weights and the
     * gradients handed to the optimizer; w/b then hold their exact widening
     * for the matrix products, gw/gb the float gradients before rounding. */
    int bf16;
    uint16_t *w16[LAB_MLP_MAX_LAYERS], *b16[LAB_MLP_MAX_LAYERS];
    uint16_t *gw16[LAB_MLP_MAX_LAYERS], *gb16[LAB_MLP_MAX_LAYERS];
} lab_mlp;

void lab_mlp_init(lab_mlp *m, int nlayers, const size_t *dims, size_t max_batch);
void lab_mlp_free(lab_mlp *m);
/** torch.nn.Linear's default initialisation (uniform in +-1/sqrt(fan_in)). */
void lab_mlp_reset(lab_mlp *m, lab_rng *rng);
/** Forward pass on the batch in act[0] (n rows); returns the mean
 *  cross-entropy and, if correct != NULL, counts correct predictions.
 *  With grads = 1 also the backward pass into gw/gb. A bfloat16 model
 *  (lab_mlp_use_bf16) first widens its bfloat16 weights into w/b, so the
 *  products compute with exactly the weights it stores, and with grads = 1
 *  also rounds the gradients to bfloat16 into gw16/gb16. */
double lab_mlp_batch(lab_mlp *m, size_t n, const unsigned char *labels, int grads, size_t *correct);
/** Make m a bfloat16 model: its weights are from now on w16/b16, the
 *  current float weights rounded to nearest even (as torch's
 *  model.bfloat16()); w/b are overwritten with their widening. */
void lab_mlp_use_bf16(lab_mlp *m);
/** bfloat16 <-> float for the lab (the library's conversions are private):
 *  widening is exact; narrowing rounds to nearest even, NaN to a quiet NaN. */
float lab_bf16_to_float(uint16_t h);
uint16_t lab_float_to_bf16(float f);

/* ---- Reduced precision (lab_exp_prec.c; optim lab precision) ----------------- */

/** How a training run stores its parameters, gradients and optimizer state
 *  (the arguments of optim_add_param_ex). */
typedef struct lab_prec_mode {
    const char *name;  /* summary.json's key: "fp32", "bf16_master", ... */
    const char *label; /* for legends */
    optim_dtype param, grad, state;
    unsigned flags;    /* OPTIM_PARAM_MASTER, OPTIM_PARAM_STOCHASTIC_ROUNDING */
} lab_prec_mode;
/** The five modes of the Fashion-MNIST comparison (issue 12), fp32 first. */
extern const lab_prec_mode lab_prec_modes[];
extern const size_t lab_prec_mode_count;
/** bfloat16 parameters and gradients rounded to nearest, no master, no
 *  stochastic rounding (float32 state): the synthetic run's stalling case. */
extern const lab_prec_mode lab_prec_bf16_plain;
/** Issue 12's accuracy target: 1 when every mode's mean test accuracy
 *  mean_acc[1..nmodes) is within target_points (percentage points) of
 *  mean_acc[0], fp32's, in either direction; a NaN is not within. */
int lab_prec_verdict(const double *mean_acc, size_t nmodes, double target_points);
/** What a run's optimizer really holds, read back from the library. */
typedef struct lab_storage_facts {
    optim_dtype param, grad, state; /* optim_param_get_dtypes of every parameter (-1 if they differ) */
    unsigned flags;                 /* optim_param_get_flags, likewise */
    double state_bytes_per_param;   /* optim_state_bytes / parameters (masters included) */
    double master_bytes_per_param;  /* of that, the fp32 master copies */
    double param_bytes_per_param, grad_bytes_per_param;
    size_t params;                  /* parameter elements */
    size_t weights_not_bf16;        /* weights the last forward pass read that are not bfloat16 values */
} lab_storage_facts;

/* Pieces of the Fashion-MNIST experiments shared with the tests. */
typedef struct lab_train_result {
    int epochs;
    double *train_loss, *test_loss, *test_acc, *epoch_seconds; /* per epoch */
    int nsteps_logged;
    double *step_loss; /* mean loss over each block of logged steps */
    int log_every;
    int diverged;
    lab_storage_facts storage; /* how the run stored its weights, gradients and state */
} lab_train_result;

/** One training run of the MLP on ctx->data: optimizer o with hyperparameters
 *  *hp (lr included), optional schedule (built per run, may be NULL; takes no
 *  ownership), data order and initialisation from seed. */
struct optim_schedule;
void lab_train(lab_ctx *ctx, const lab_optimizer *o, const optim_hparams *hp, const struct optim_schedule *sched,
               int epochs, uint64_t seed, const char *label, lab_train_result *res);
/** lab_train with the weights, gradients and state stored as `mode` says
 *  (NULL: float32 everything, lab_train's). A bfloat16 mode trains a
 *  bfloat16 model (lab_mlp_use_bf16); stochastic rounding is seeded with
 *  `seed`. Not with SAM. */
void lab_train_ex(lab_ctx *ctx, const lab_optimizer *o, const optim_hparams *hp, const struct optim_schedule *sched,
                  const lab_prec_mode *mode, int epochs, uint64_t seed, const char *label, lab_train_result *res);
/* An empty result for a run of `epochs` epochs logging every log_every of total_steps steps
 * (per-epoch values NaN until recorded); lab_train_result_free releases it. */
void lab_train_result_init(lab_train_result *res, int epochs, long total_steps, int log_every);
void lab_train_result_free(lab_train_result *r);
/** Free the runs kept for reuse. */
void lab_mlp_cache_free(struct lab_mlp_cache *c);
/** Make sure ctx->data is loaded; returns 0 or -1 after printing the message. */
int lab_need_data(lab_ctx *ctx);
/** Record the data set (name, source, fallback, sizes) and the MLP's shape
 *  and batch in the experiment's summary (data.*, model, batch). */
void lab_record_mlp_data(lab_ctx *ctx);
/** Default hidden sizes and batch for the data set in use. */
void lab_mlp_shape(const lab_ctx *ctx, int *nlayers, size_t dims[LAB_MLP_MAX_LAYERS + 1], size_t *batch);
/** Standardised rows idx[0..n) of x into out. */
void lab_load_batch(const lab_dataset *d, const unsigned char *x, const size_t *idx, size_t n, float *out);
/** Mean loss and accuracy of m on rows [first, first + count) of images x
 *  with labels y (idx: m->max_batch entries of scratch). */
void lab_mlp_evaluate(lab_mlp *m, const lab_dataset *d, const unsigned char *x, const unsigned char *y, size_t first,
                      size_t count, size_t *idx, double *loss, double *acc);
/** The order of n training rows in epoch `epoch` of a run seeded `seed`
 *  (the same for every optimizer: they all see the same batches). */
void lab_epoch_order(size_t *order, size_t n, uint64_t seed, int epoch);

/* ---- optim lab modern (lab_exp_modern.c) ------------------------------------------ */

#define LAB_MODERN_MAX_LRS 4
#define LAB_MODERN_SEEDS 3

/** One rule of optim lab modern: ONE line of lab_modern_rules each. */
typedef struct lab_modern_rule {
    const char *key;     /* summary.json's modern.<key>: "lion", "sf_adamw", ... */
    const char *label;   /* for legends and tables */
    optim_rule rule;
    const char *hparams; /* settings besides lr, "name=value,..." by the library's names ("" for none) */
    double lrs[LAB_MODERN_MAX_LRS]; /* the MLP's learning-rate grid, ascending (0 ends a shorter one) */
    int vectors_no_decay; /* the MLP's biases in a group with weight_decay 0 (LAMB's and LARS's usual exclusion) */
    lab_opt_hooks hooks; /* creation (Muon) and the evaluation switch (schedule-free); zeros: the plain rule */
    int baseline;        /* 1: AdamW, Adam, SGD+momentum, which the newer rules are measured against */
} lab_modern_rule;
extern const lab_modern_rule lab_modern_rules[];
extern const size_t lab_modern_rule_count;
const lab_modern_rule *lab_modern_find(const char *key);
/** 1 if this build can run r (0: Muon in a build without liboptim_muon). */
int lab_modern_runnable(const lab_modern_rule *r);
/** The rule's defaults, its hparams string, and lr; returns 0, or -1 with a
 *  message naming the bad setting. */
int lab_modern_hparams(const lab_modern_rule *r, double lr, optim_hparams *hp, char *msg, size_t msgsize);
/** The verdict of a rule against AdamW: +1 ahead, 0 level, -1 behind, from
 *  the difference of mean test accuracies d (points) and the noise, twice
 *  the standard error of that difference from both rules' seeds (points,
 *  floored at LAB_MODERN_NOISE_FLOOR); a NaN difference (a diverged rule)
 *  is behind. */
#define LAB_MODERN_NOISE_FLOOR 0.1
int lab_modern_verdict(double d_points, double noise_points);

/* ---- Data parallel over MPI (lab_dist.c; optim lab fashion-mnist --distributed) ---- */

/** 1 if this optim was built with liboptim_mpi. */
int lab_dist_available(void);
/** Initialise MPI (under mpirun: every rank runs the lab); fills ctx->rank and
 *  ctx->ranks. Returns 0, or -1 with a message (built without MPI). */
int lab_dist_init(int *argc, char ***argv, lab_ctx *ctx, char *msg, size_t msgsize);
/** The largest of every rank's status (0 or not), on every rank: one rank's
 *  failure (data it cannot read, rank 0's run directory) stops them all. */
int lab_dist_agree(lab_ctx *ctx, int status);
/** Wait, without spinning, until every rank gets here; then MPI_Finalize. */
void lab_dist_finish(lab_ctx *ctx);
/** Ranks but 0: wait without spinning while rank 0 works alone (matched by rank 0's call after its work). */
void lab_dist_idle_barrier(lab_ctx *ctx);
/** One training run as lab_train, data parallel: each rank computes the
 *  gradient of its slice of every batch, liboptim_mpi averages them and steps
 *  (--zero stage). Every rank gets the same results. Records the run's
 *  distributed facts (state bytes per rank, bytes per step) in *facts (an
 *  object, rank 0). */
void lab_train_dist(lab_ctx *ctx, const lab_optimizer *o, const optim_hparams *hp, int epochs, uint64_t seed,
                    const char *label, lab_train_result *res, lab_json *facts);
/** Bytes of optimizer state one process holds for o on the lab's MLP. */
double lab_state_bytes_one_process(lab_ctx *ctx, const lab_optimizer *o, const optim_hparams *hp);

#endif
