/* kernels.h: the update kernels per CPU path, CPU dispatch, element storage,
 * and the parallel pass over many tensors. Hot loops live under src/kernels/
 * and nowhere else.
 *
 * A kernel has two axes. The rule (src/rules/, listed in rule_list.h) says
 * the math once, over a compute type R (float, or double for float64
 * tensors); kernels_math.h instantiates it per compute type and variant into
 * loops over arrays of R. The storage of each stream (parameter, gradient,
 * each state slot) is a descriptor (optim__storage) that loads elements into
 * R and stores them back: streams.c runs the same loop either directly on
 * memory (every stream already holds R: float32 or float64 tensors, no extra
 * cost) or chunk by chunk through small scratch arrays (bfloat16/float16
 * parameters or gradients), in the same single pass over memory. */
#ifndef OPTIM_KERNELS_H
#define OPTIM_KERNELS_H

#include "../rules/rules.h"
#include "../rules/sam.h"

/* ---- Compute types and streams ---------------------------------------------- */

/* The types the rules' math runs in. */
typedef enum optim__ctype {
    OPTIM__CT_F32 = 0, /* float */
    OPTIM__CT_F64 = 1  /* double */
} optim__ctype;
#define OPTIM__NCTYPES 2

/* The streams of an update: parameter, gradient, state slots, and the
 * user's low-precision copy of a parameter with an fp32 master (the
 * parameter stream then is the master, owned by the optimizer; the copy is
 * only stored, rounded to nearest even, in the same pass). The EMA of the
 * weights (include/optim_ema.h) is one more stream outside this numbering:
 * the task's `ema` (kernels_ema.h, ema_run.c). */
#define OPTIM__SP 0                        /* parameter (read and written) */
#define OPTIM__SG 1                        /* gradient (read) */
#define OPTIM__SS(j) (2 + (j))             /* state slot j */
#define OPTIM__SC (2 + OPTIM_MAX_SLOTS)    /* the low-precision copy of a master (stored only) */
#define OPTIM__NSTREAMS (3 + OPTIM_MAX_SLOTS)

/* Elements per chunk of the chunked path: the scratch of every stream stays
 * in L1 (6 x 512 x 8 bytes at most), and it is a multiple of 256, the block
 * of a future block-quantized state type, so that a chunk never splits a
 * block. Thread split points inside a chunked tensor fall on chunk
 * boundaries. */
#define OPTIM__CHUNK ((size_t)512)

/*
 * A storage descriptor: how one stream's elements are kept in memory, for
 * one compute type. load converts elements [off, off + n) of the stream
 * whose element 0 is at `base` into the compute-type array dst; store
 * converts src back into elements [off, off + n). `off` is the element's
 * index in the tensor and `ctx` the stream's per-step context (the task's
 * ctx[]; NULL for the types of today), so that a type that needs more than
 * the element (a block's scale, a stochastic rounding keyed by the element's
 * index and the step) is one more descriptor, not another loop. Every
 * conversion gives the same bits on every CPU path.
 */
typedef struct optim__storage {
    optim_dtype dtype;
    optim__ctype ctype;
    unsigned size; /* bytes per element in memory */
    int direct;    /* the memory holds the compute type itself: loops run on it in place */
    void (*load)(void *restrict dst, const void *restrict base, size_t off, size_t n, const void *ctx);
    void (*store)(void *restrict base, size_t off, size_t n, const void *restrict src, const void *ctx);
} optim__storage;


/* One loop instance: a rule's math for one compute type and one variant over
 * n elements; p, g and s[j] point at element 0 of the range, in the compute
 * type (slots the variant does not touch may be NULL). */
typedef void (*optim__loop_fn)(size_t n, void *p, const void *g, void *const *s, const optim__k *k);

/* A loop instance with step statistics (include/optim_stats.h): the same
 * rule math and stores as the optim__loop_fn of its variant, over n elements
 * from the start of a chunk, n a multiple of 16 (the caller runs a range's
 * last n % 16 through the plain loop and optim__stats_fn, which continue the
 * same lanes), which also measures, per element i, in lane i % 16 of the
 * compute type: clamp(g)^2, u^2 with u = p_after - p_before in the compute
 * type, p_before^2, the bits of the largest |u| (NaN sticks), and whether
 * the element was clamped (value clipping or the rule's own clamp,
 * rule_list.h's OPTIM__CLAMP_LIST), added to the chunk's lanes
 * (kernels_math.h's optim__slanes of the compute type, OPTIM__SLANES_BYTES).
 * At the end of each whole chunk of OPTIM__CHUNK elements it adds the lanes
 * to the block's (acc, as optim__sflush_fn does) and zeroes them; a last
 * partial chunk's stay in `lanes`, for the caller's tail and sflush. So one
 * call may run a whole block with its lanes in registers. npf (>= n): how
 * many elements from p (and from each stream) the loop may prefetch, so
 * that its prefetch runs on past a block's end into the next block's
 * (kernels_impl.h, OPTIM__PREFETCH). */
typedef void (*optim__sloop_fn)(size_t n, size_t npf, void *p, const void *g, void *const *s, const optim__k *k,
                                void *lanes, double *acc);

/* The instances of one rule's math for one compute type. fns[v] runs
 * variant v, fns[nvariants + v] variant v with OPTIM__V_CLAMP; sfns the same
 * with step statistics (NULL where there are none: float64, the scalar path,
 * complex instances; those measure through optim__stats_fn). */
typedef struct optim__loops {
    unsigned nvariants;
    const optim__loop_fn *fns;
    unsigned (*reads)(unsigned variant);  /* slots a variant reads */
    unsigned (*writes)(unsigned variant); /* slots a variant writes */
    const optim__sloop_fn *sfns;
} optim__loops;

/* Pass 1 of a rule with a per-tensor reduction (rule.h): the sums of the
 * squares of its two red values over n elements, element i added to lane
 * i % 16 of acc[0..16) (first value) and acc[16..32) (second); callers keep
 * n a multiple of 16 but at the end of a block. */
typedef void (*optim__red_fn)(size_t n, const void *p, const void *g, void *const *s, const optim__k *k,
                              double *acc);

/* The pass-1 instances of one such rule for one compute type, indexed as
 * optim__loops' (fns[v], fns[nvariants + v] with OPTIM__V_CLAMP). pre has
 * the signature of an update loop and writes only the slots pre_writes
 * names (never p). */
typedef struct optim__rloops {
    unsigned nvariants;
    const optim__loop_fn *pre;
    const optim__red_fn *red;
    const optim__red_fn *both; /* pre then red in one pass, for direct arrays (the same slots and sums) */
    unsigned (*pre_reads)(unsigned variant);
    unsigned (*pre_writes)(unsigned variant);
    unsigned (*red_reads)(unsigned variant);
} optim__rloops;

/* Adafactor's passes (src/rules/adafactor.h, kernels_factored.h, run by
 * factored_run.c) for one compute type, over direct memory (pointers at the
 * first element of the span, in the compute type): var, pass A of an
 * unfactored span (variance = lerp(variance, d^2, w)); rows, pass A of nrows
 * rows of C elements (one row factor each); cols, pass A of nc columns of
 * one batch of nr rows, C apart (one column factor each); rmean, a batch's
 * clamped mean row factor; usq, pass B's sum of u^2 over a span (var NULL:
 * factored, row factor rvj, column factors cv, clamped mean rm); upd, pass C
 * over one row's segment of a factored tensor. */
#define OPTIM__AF_COLS 256 /* the most columns of one cols call (its sums live on the stack) */
typedef struct optim__factored_fns {
    void (*var)(size_t n, const void *g, void *var, const optim__k *k);
    void (*rows)(size_t nrows, size_t C, const void *g, void *rv, const optim__k *k);
    void (*cols)(size_t nr, size_t C, size_t nc, const void *g, void *cv, const optim__k *k);
    double (*rmean)(size_t nr, const void *rv, const optim__k *k);
    double (*usq)(size_t n, const void *p, const void *g, const void *var, double rvj, const void *cv, double rm,
                  const optim__k *k);
    void (*upd)(size_t n, void *p, const void *g, double rvj, const void *cv, double rm, const optim__k *k);
} optim__factored_fns;

/* ---- Step statistics (include/optim_stats.h) ------------------------------------ */

/* Values per reduction block of a step with statistics: the sums of
 * clamp(g)^2, u^2 and p_before^2, the largest |u|, the count of clamped
 * elements (u the update in double: p_after - p_before). */
#define OPTIM__NSTAT 5

/* The statistics of one chunk of n elements (n <= OPTIM__CHUNK, starting at
 * a multiple of OPTIM__CHUNK inside its block) from copies, where no fused
 * loop (optim__sloop_fn) sees the update as stored (a bfloat16/float16
 * parameter without a master, complex rules, Adafactor's factored pass) or
 * the path has none (float64, the scalar path): p0 the parameter before the
 * rule's loop, p1 after it (as stored), g the raw gradient, all in the
 * compute type; cl[i] 1 where the rule clamped the element (AdaBound's
 * bounds), else 0, or cl NULL: no element clamped by the rule; value
 * clipping's clamp is seen from g and k. The same
 * lanes and arithmetic as optim__sloop_fn, added to the chunk's lanes
 * (element i in lane i % 16; n may be a chunk's last n % 16 after a fused
 * instance's groups): the same bits. */
typedef void (*optim__stats_fn)(size_t n, const void *p0, const void *p1, const void *g, const unsigned char *cl,
                                const optim__k *k, void *lanes);

/* A chunk's lanes: 16 each of the sums of clamp(g)^2, u^2, p^2 and the
 * clamped count in the compute type, and the bits of the largest |u| (an
 * unsigned integer of the compute type's width); all zero bits to start. */
#define OPTIM__SLANES_BYTES (OPTIM__NSTAT * 16 * sizeof(double))

/* A chunk's lanes into the block's 16 double lanes per value (acc[16 v +
 * lane], OPTIM__NSTAT's order; the maximum: taken, NaN sticks), then zeroed:
 * one per compute type and path (vectorised with the path's flags). */
typedef void (*optim__sflush_fn)(void *lanes, double *acc);

/* Rules whose element math may clamp (rule_list.h's OPTIM__CLAMP_LIST):
 * cl[i] = 1 where element i's step was clamped, from its state slots after
 * the update (s as the loop left them). */
typedef void (*optim__clampflag_fn)(size_t n, void *const *s, const optim__k *k, unsigned char *cl);

/* ---- Reductions -------------------------------------------------------------- */

/* Norm kinds of the reductions. */
typedef enum optim__norm {
    OPTIM__NORM_L1 = 0,  /* sum |x| */
    OPTIM__NORM_L2 = 1,  /* sum x^2 */
    OPTIM__NORM_INF = 2, /* max |x| */
    OPTIM__NORM_LP = 3   /* sum |x|^p */
} optim__norm;

/* Elements per partial of a reduction. Fixed: the partials, and so the
 * norms, do not depend on the number of threads. A multiple of OPTIM__CHUNK. */
#define OPTIM__RBLOCK ((size_t)8192)

/* The partial of elements [off, off + n) of the stream at g (of the
 * function's element type) for norm `kind` of x = g, or of x = (|w| + eta) g
 * when w != NULL (ASAM; float32 only; w points at element off). Sums run in
 * double over 16 lanes in a fixed order, so every CPU path gives the same
 * bits. *bad is set to 1 if an element of x is NaN or Inf (left alone
 * otherwise). */
typedef double (*optim__reduce_fn)(size_t n, const void *g, size_t off, const float *w, float eta, optim__norm kind,
                                   double p, int *bad);

/* ---- Utilities (float32 arrays) ---------------------------------------------- */

/* Constants of the gradient utilities: scale x * a; clamp to [a, b]. */
typedef struct optim__util_k {
    float a, b;
} optim__util_k;

typedef void (*optim__sam_fn)(size_t n, float *w, const float *g, float *saved, const optim__sam_k *k);
typedef void (*optim__util_fn)(size_t n, float *x, const optim__util_k *k);

/* ---- Vector operations (include/optim_vec.h) --------------------------------- */

/* Over arrays of the compute type: the dot product of n elements (one
 * reduction block at most: 16 double lanes, fixed tree), y = fma(a, x, y),
 * y = a * x (a rounded to the compute type). */
typedef struct optim__vec_fns {
    double (*dot)(size_t n, const void *x, const void *y);
    void (*axpy)(size_t n, double a, const void *x, void *y);
    void (*scale)(size_t n, double a, const void *x, void *y);
} optim__vec_fns;

/* The constants of an element-wise vector pass. */
typedef struct optim__vec_k {
    double a;
    optim__ctype ct;
} optim__vec_k;

/* ---- The EMA of the weights (include/optim_ema.h, kernels_ema.h) ---------------- */

/* The constants of an EMA pass: ema = d * ema + omd * p (d and omd rounded
 * to the compute type), or ema = p when copy is set (the first average). */
typedef struct optim__ema_k {
    double d, omd;
    int copy;
} optim__ema_k;

/* A task range whose average takes at most this many bytes (256K float32
 * elements) is averaged without prefetch (optim__ema's npf 0, ema_run.c):
 * with the update's streams, some 5 MB for SGD with momentum, likely in L2 or
 * L3 from the last step, where blocks and prefetches cost the step 3-8 %
 * (8K-128K elements; docs/PERFORMANCE.md, "The fused loops' blocks and the
 * EMA's prefetch"). */
#define OPTIM__EMA_PF_MIN ((size_t)1024 * 1024)

/* The average of n elements of the compute type (ema and p in it); the
 * average's stream extends npf >= n elements from ema in the caller's range
 * (its prefetch reaches no further: kernels_ema.h), or npf is 0: no
 * prefetch. */
typedef void (*optim__ema_fn)(size_t n, size_t npf, void *ema, const void *p, const optim__ema_k *k);
/* Exchange n elements of the compute type. */
typedef void (*optim__ema_swap_fn)(size_t n, void *a, void *b);

/* ---- A CPU path's table -------------------------------------------------------- */

typedef struct optim__kernels {
    optim_isa isa;
    /* Indexed by optim_rule and compute type; a rule that runs another's
     * math (rule_list.h ALIAS) has that math's instances. */
    optim__loops loops[OPTIM_RULE_COUNT + 1][OPTIM__NCTYPES];
    /* The complex instances (OPTIM__V_COMPLEX) of the rules of
     * src/rules/complex_list.h, likewise; fns NULL for the other rules. */
    optim__loops cloops[OPTIM_RULE_COUNT + 1][OPTIM__NCTYPES];
    /* Pass 1 of the rules with a per-tensor reduction (rule_list.h's
     * OPTIM__REDUCE_LIST); zero for the others. */
    optim__rloops rloops[OPTIM_RULE_COUNT + 1][OPTIM__NCTYPES];
    /* Indexed by element type and compute type; NULL: no such storage. */
    const optim__storage *storage[OPTIM_DTYPE_COUNT][OPTIM__NCTYPES];
    /* bfloat16 stored with stochastic rounding (float compute; its ctx
     * points at the stream's optim__sr_ctx: its key, optim__sr_key, and the
     * element index of the task's element 0). */
    const optim__storage *bf16_sr;
    /* OPTIM_INT8_BLOCK state in float, by slot kind (rule.h's OPTIM__SLOT_*). */
    const optim__storage *q8[3];
    /* The same with stochastic rounding of the codes (OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING;
     * ctx: an optim__q8sr_ctx). */
    const optim__storage *q8sr[3];
    /* Indexed by the gradient's element type. */
    optim__reduce_fn reduce[OPTIM_DTYPE_COUNT];
    optim__sam_fn sam_perturb[OPTIM__SAM_NVARIANTS]; /* saved = w; w = w + e (see rules/sam.h), by variant */
    void (*copy)(size_t n, float *dst, const float *src); /* SAM's restore */
    optim__util_fn scale;                                 /* x = x * a (clip_grad_norm_ on the gradients) */
    optim__util_fn clamp;                                 /* x = clamp(x, a, b), NaN kept (clip_grad_value_) */
    optim__vec_fns vec[OPTIM__NCTYPES];                   /* optim_vec.h, by compute type */
    optim__factored_fns factored[OPTIM__NCTYPES];         /* Adafactor's passes, by compute type */
    optim__stats_fn stats[OPTIM__NCTYPES];                /* step statistics, by compute type */
    optim__sflush_fn sflush[OPTIM__NCTYPES];              /* a chunk's statistics lanes into the block's */
    /* By rule and compute type: the rules of OPTIM__CLAMP_LIST; NULL for the others. */
    optim__clampflag_fn clampflag[OPTIM_RULE_COUNT + 1][OPTIM__NCTYPES];
    optim__ema_fn ema[OPTIM__NCTYPES];           /* the EMA of the weights, by compute type */
    optim__ema_swap_fn ema_swap[OPTIM__NCTYPES]; /* optim_ema_swap's exchange, by compute type */
} optim__kernels;

/* The table of a path, or NULL if this build or CPU cannot run it.
 * OPTIM_ISA_AUTO gives optim_isa_default()'s table. */
const optim__kernels *optim__kernels_get(optim_isa isa);

/* ---- Tasks and passes -------------------------------------------------------------- */

/* One tensor's share of a pass. */
/* The context of a stream stored with stochastic rounding: its key this step
 * (optim__sr_key) and the element index of the task's element 0. */
typedef struct optim__sr_ctx {
    uint64_t key;
    uint64_t first;
} optim__sr_ctx;

/* The context of an OPTIM_INT8_BLOCK slot whose codes round stochastically
 * (kt->q8sr): its block scales (the plain descriptors' whole ctx) and the
 * slot's stochastic rounding context this step (optim__task_sr_keys: the key
 * and the index of the task's element 0 in its tensor). */
typedef struct optim__q8sr_ctx {
    void *scales;
    const optim__sr_ctx *sr;
} optim__q8sr_ctx;

typedef struct optim__task {
    void *p;          /* element 0 of each stream, in its storage type */
    const void *g;
    void *s[OPTIM_MAX_SLOTS];
    size_t n;         /* elements to process (0: skip this tensor) */
    size_t start;     /* offset of element 0 in the concatenation of all tasks */
    size_t bstart;    /* index of its first reduction block (blocks of OPTIM__RBLOCK) */
    size_t align;     /* thread split points inside it fall on multiples of this many elements */
    const void *k;    /* the pass's constants: optim__k (updates), optim__sam_k, optim__util_k */
    /* Updates: */
    optim__loop_fn loop;      /* the instance for the rule, compute type and variant of this step */
    unsigned reads, writes;   /* slots it reads and writes */
    /* Pass 1 of a rule with a per-tensor reduction (NULL: not this step). */
    optim__loop_fn pre;       /* state update before the norms; writes slots pre_writes */
    optim__red_fn red;        /* the sums of squares */
    optim__red_fn both;       /* pre and red in one pass (both on, direct arrays); NULL: apart */
    unsigned pre_reads, pre_writes, red_reads;
    /* Step statistics (NULL spart: not this step): OPTIM__NSTAT values per
     * reduction block of the task (spart[OPTIM__NSTAT * b] for its block b),
     * the path's function for its compute type, the rule's clamp flags. */
    double *spart;
    optim__stats_fn stats;
    optim__clampflag_fn clampflag;
    optim__sloop_fn sloop;    /* the fused instance of this step's variant (NULL: through copies and stats) */
    optim__sflush_fn sflush;  /* with statistics: the chunk's lanes into the block's */
    int chunked;              /* 0: every stream holds the compute type: the loop runs on memory */
    const optim__storage *sto[OPTIM__NSTREAMS]; /* storage of p, g, s0..s3, copy (NULL: unused) */
    const void *ctx[OPTIM__NSTREAMS];           /* per-step context of each stream (or NULL) */
    void *copy;                                 /* the user's low-precision parameter of a master, or NULL */
    optim__sr_ctx sr[OPTIM__NSTREAMS];          /* stochastic rounding: each stream's key this step (ctx) */
    optim__q8sr_ctx q8sr[OPTIM_MAX_SLOTS];      /* int8_block slots with stochastic codes: their ctx */
    /* A sparse gradient (optim_sparse.h): n = nrows * row_len elements of g
     * (the values, row after row); element e is column e % row_len of row
     * rows[e / row_len] of p and of the state. NULL: dense. Direct tasks only. */
    const int64_t *rows;
    size_t row_len;
    /* The EMA of the weights (include/optim_ema.h; NULL: not this step): n
     * elements of the compute type, averaged after the rule's loop from the
     * parameter as stored (the master of a parameter with one), with the
     * constants ek, in spans of OPTIM__RBLOCK (ema_run.c). Dense tasks only. */
    void *ema;
    const optim__ema_k *ek;
    /* Adafactor: rows and columns of the last two dimensions of a tensor of
     * two or more (frows * fcols divides n: n / (frows * fcols) batches);
     * fcols 0: unfactored (the rule's generic loop runs pass C). */
    size_t frows, fcols;
    /* Reductions: */
    optim_dtype gtype; /* the gradient's element type */
    const float *w;    /* x = (|w| + eta) g when not NULL (ASAM), else x = g */
    float eta;
} optim__task;

/* Number of reduction blocks of a tensor of n elements. */
#define OPTIM__NBLOCKS(n) (((n) + OPTIM__RBLOCK - 1) / OPTIM__RBLOCK)

/* Process elements [from, to) of task t. */
typedef void (*optim__range_fn)(const optim__kernels *kt, const optim__task *t, size_t from, size_t to);

/* Run fn over tasks[0..count) (their `start` fields must be the running sums
 * of n), splitting the concatenated elements evenly across at most
 * optim__threads_for(total, threads) threads in one parallel region; small
 * passes run on the caller's thread. Each element is processed on its own,
 * so results do not depend on the split. */
/* Index of the task holding reduction block b (tasks sorted by bstart; parallel.c): the reduction passes
 * and factored_run.c's and vec_run.c's block walks. */
size_t optim__find_block(const optim__task *tasks, size_t count, size_t b);
void optim__run(const optim__kernels *kt, optim__range_fn fn, const optim__task *tasks, size_t count, size_t total,
                int threads);

/* The threads a pass of `work` elements asks OpenMP for, with `threads` as
 * optim_set_threads (0: OpenMP's default): at most OpenMP's thread limit,
 * the CPUs, and one per OPTIM__PAR_MIN / 2 elements of work; 1 without OpenMP. */
int optim__threads_for(size_t work, int threads);

/* The passes (range functions). */
void optim__range_update(const optim__kernels *kt, const optim__task *t, size_t from, size_t to); /* streams.c */
/* The EMA passes (ema_run.c): a task with `ema` set through optim__range_update
 * (the update of each span of OPTIM__RBLOCK elements, then its average);
 * the average alone (a parameter the step's update pass did not cover);
 * optim_ema_swap's exchange (t->k: an int, 1 into the EMA, 0 back; t->s[0]:
 * the stash of a 16-bit parameter, t->copy the 16-bit copy of a master). */
void optim__range_update_ema(const optim__kernels *kt, const optim__task *t, size_t from, size_t to);
/* The same with another update pass (Adafactor's factored pass C): update(t without its EMA) span by span,
 * each span averaged after it. */
void optim__range_then_ema(const optim__kernels *kt, const optim__task *t, size_t from, size_t to,
                           optim__range_fn update);
void optim__range_ema(const optim__kernels *kt, const optim__task *t, size_t from, size_t to);
void optim__range_ema_swap(const optim__kernels *kt, const optim__task *t, size_t from, size_t to);
void optim__range_sam_perturb(const optim__kernels *kt, const optim__task *t, size_t from, size_t to);
void optim__range_copy_back(const optim__kernels *kt, const optim__task *t, size_t from, size_t to); /* p = s[0] */
void optim__range_scale(const optim__kernels *kt, const optim__task *t, size_t from, size_t to);     /* p *= a */
void optim__range_clamp(const optim__kernels *kt, const optim__task *t, size_t from, size_t to);

/* Partials of a reduction over the gradients of tasks[0..count) (x = g, or
 * (|w| + eta) g for tasks with w set): partials[b] for every block b <
 * nblocks (tasks' bstart must be the running sums of their block counts;
 * tasks with n == 0 have none), and bad[b] = 1 where block b holds a NaN or
 * Inf, else 0. */
void optim__reduce_run(const optim__kernels *kt, const optim__task *tasks, size_t count, size_t nblocks,
                       optim__norm kind, double p, double *partials, unsigned char *bad, int threads);
/* Vector passes (src/kernels/vec_run.c). A task's p is y, g is x, s[0] is
 * y of a dot product; k an optim__vec_k. */
void optim__range_vaxpy(const optim__kernels *kt, const optim__task *t, size_t from, size_t to);  /* y = fma(a, x, y) */
void optim__range_vscale(const optim__kernels *kt, const optim__task *t, size_t from, size_t to); /* y = a * x */
/* partials[b] = the dot product of block b (tasks' bstart the running sums
 * of their block counts), blocks spread over threads; each block's partial
 * is the same whatever thread computes it. */
void optim__vdot_run(const optim__kernels *kt, optim__ctype ct, const optim__task *tasks, size_t count,
                     size_t nblocks, double *partials, int threads);
/* Pass 1 of a rule with a per-tensor reduction over tasks[0..count)
 * (their bstart the running sums of their block counts), one block of
 * OPTIM__RBLOCK elements per thread at a time: each task's pre (if set) then
 * red (if set) over the block, chunk by chunk through the storage
 * descriptors where the task is chunked (red then sees the state as stored);
 * partials[2 b], partials[2 b + 1] receive block b's two sums (0 without
 * red). The same bits for any thread count and CPU path. */
void optim__reduce_rule_run(const optim__task *tasks, size_t count, size_t nblocks, double *partials, int threads);
/* The same for one block of one task, serially: its two sums into out[0..2). */
void optim__reduce_rule_block(const optim__task *t, size_t off, size_t len, double *out);

/* Adafactor's passes A and B over tasks[0..count) (their bstart the running
 * sums of their block counts; n == 0: skipped): partials[2 b] receives block
 * b's sum of p^2 and partials[2 b + 1] its sum of u^2 from the state pass A
 * left (variance, or row_var and col_var, updated meanwhile). Spans fixed
 * by the shape and the blocks: the same bits for any thread count and path. */
void optim__factored_run(const optim__kernels *kt, const optim__task *tasks, size_t count, size_t nblocks,
                         double *partials, int threads);
/* Pass C, a range function for optim__run: a factored task row segment by
 * row segment, an unfactored one by optim__range_update. */
void optim__range_factored(const optim__kernels *kt, const optim__task *t, size_t from, size_t to);
/* A block's statistics lanes (16 per value, optim__stats_fn's layout) folded
 * into its OPTIM__NSTAT values by the fixed tree (streams.c). */
void optim__stats_fold(double *acc, double *out);

/* Combine partials in block order into the norm (sum, max; sqrt / p-th root). */
double optim__norm_finish(const double *partials, size_t nblocks, optim__norm kind, double p);
/* The norm kind for a p-norm (p >= 1 or INFINITY). */
optim__norm optim__norm_kind(double p);

/* ---- Element types (streams.c) ---------------------------------------------------------- */

/* The supported (param, grad) pairs: their compute type and state type, or
 * OPTIM_EUNSUPPORTED / OPTIM_EINVAL with a message naming both, prefixed by fn. */
int optim__dtypes(const char *fn, optim_dtype param, optim_dtype grad, optim__ctype *ctype, optim_dtype *state,
                  optim_error *err);

/* May parameters of `param` keep their state in `state`? The pair's default
 * state type, or bfloat16/float16 when the math runs in float; else
 * OPTIM_EUNSUPPORTED / OPTIM_EINVAL naming both, prefixed by fn. */
int optim__state_dtype_ok(const char *fn, optim_dtype param, optim_dtype state, optim_error *err);

/* Fill the storage fields of task t (sto, ctx, chunked, align, gtype) for
 * streams of these types under kt, the state slots of the kinds given
 * (OPTIM__SLOT_*, one per slot; NULL: all signed); t->s and t->n must be set
 * (an OPTIM_INT8_BLOCK slot's context is its scales, after its n codes).
 * 0 on success, -1 if kt has no descriptor for one of them. */
int optim__task_storage(const optim__kernels *kt, optim__task *t, optim_dtype param, optim_dtype grad,
                        optim_dtype state, const unsigned char *kinds);

/* A state slot of n elements of dtype (float32, bfloat16, float16 or
 * int8_block of slot kind `kind`) into n floats (exact, or dequantized as a
 * step loads it), and n floats into a slot (rounded to nearest even, or
 * quantized block by block as a step stores it). Not for float64. */
void optim__slot_to_f32(float *dst, const void *slot, size_t n, optim_dtype dtype, int kind);
void optim__slot_from_f32(void *slot, const float *src, size_t n, optim_dtype dtype, int kind);

/* Bytes of one state slot of n elements of type dtype (OPTIM_INT8_BLOCK:
 * codes and block scales); n <= SIZE_MAX / 8. */
size_t optim__slot_bytes(size_t n, optim_dtype dtype);

/* Storage options of a parameter (optim_add_param_ex flags) applied to a
 * task filled by optim__task_storage(kt, t, master ? OPTIM_FLOAT32 : param,
 * grad, state, kinds): with a master, p is the float32 master and `copy` (the
 * user's memory of type `param`) one more stored stream; with stochastic
 * rounding, the bfloat16 parameter (without a master) and bfloat16 state
 * are stored by kt->bf16_sr, keyed per step by optim__task_sr_keys; with
 * OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING, OPTIM_INT8_BLOCK slots by kt->q8sr
 * under the same keys (else their codes round to nearest).
 * 0, or -1 if kt lacks a descriptor. */
int optim__task_prec(const optim__kernels *kt, optim__task *t, optim_dtype param, optim_dtype state, unsigned flags,
                     void *copy);
/* The stochastic rounding keys of task t for the step `step` of parameter
 * `index` under `seed` (one per stream, the stream's number mixed in); the
 * task's element e draws the random bits of element index first + e (0 for
 * a whole tensor; a sharded optimizer's slice gives the model's parameter as
 * `index` and its first element as `first`, a multiple of 512, so that every
 * element rounds as in the unsharded run: optim_ext.h). */
void optim__task_sr_keys(optim__task *t, uint64_t seed, uint64_t index, int64_t step, uint64_t first);

/* The pass-1 instances of (rule, compute type, variant) in kt for the
 * OPTIM__RED_* bits `reduce` into t (pre, red and their slots; NULL where
 * reduce does not ask). -1 if the rule has no pass 1 but reduce asks for
 * one, or the variant has no instance. */
int optim__rloops_get(const optim__kernels *kt, optim_rule rule, optim__ctype ct, unsigned variant, unsigned reduce,
                      optim__task *t);

/* The loop instance of (rule, compute type, variant) in kt, with the slots it
 * reads and writes; NULL if none was generated (a variant bit the rule does
 * not declare). */
optim__loop_fn optim__loop_get(const optim__kernels *kt, optim_rule rule, optim__ctype ct, unsigned variant,
                               unsigned *reads, unsigned *writes);

/* The instance with step statistics of (rule, compute type, variant) in
 * kt; NULL for complex variants and variants without an instance. */
optim__sloop_fn optim__sloop_get(const optim__kernels *kt, optim_rule rule, optim__ctype ct, unsigned variant);

/* CRC-32C (Castagnoli) of n bytes, continuing from crc (0 to start):
 * optim__crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t optim__crc32c(uint32_t crc, const void *data, size_t n);

/* Per-path tables, defined in kernels_<isa>.c. */
extern const optim__kernels optim__kernels_scalar;
#if defined(OPTIM_HAVE_AVX2)
extern const optim__kernels optim__kernels_avx2;
#endif
#if defined(OPTIM_HAVE_AVX512)
extern const optim__kernels optim__kernels_avx512;
#endif
#if defined(OPTIM_HAVE_AVX512BF16)
extern const optim__kernels optim__kernels_avx512bf16; /* avx512's loops, AVX-512 BF16 conversions */
#endif
#if defined(OPTIM_HAVE_NEON)
extern const optim__kernels optim__kernels_neon;
#endif

#endif
