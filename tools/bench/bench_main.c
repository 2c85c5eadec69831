/* bench_main.c: `optim bench`: the command line, the cases, the timing
 * protocol, the table and --json.
 *
 * For every size, every case (a rule with some options) and every thread
 * count, a run is a batch of steps lasting at least --min-time; the ceiling
 * (bench_kernels.c) and the rule alternate run by run over the same arrays,
 * so each rule run has a ceiling run just before it, under the same load.
 * The ceiling uses a = 1 and b = 0: it moves the rule's bytes but leaves the
 * values alone, so the rule keeps stepping its own state.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "bench.h"
#include "optim_precision.h"
#include "optim_stats.h"
#include "optim_ema.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define BENCH_MAX_ITEMS 64
#define BENCH_SPEC_MAX 96

/* ---- Cases ------------------------------------------------------------------------ */

/* Every rule with its defaults, and the options that change its memory
 * streams or its arithmetic the most. */
static const char *const bench_presets[] = {
    "sgd",      "sgd:momentum=0.9",     "sgd:momentum=0.9:nesterov",
    "adagrad",  "rmsprop",              "rmsprop:momentum=0.9",
    "rmsprop:centered",                 "rmsprop:centered:momentum=0.9",
    "adadelta", "adadelta:momentum=0.9",
    "adam",     "adam:amsgrad",         "adamw",
    "adamw:amsgrad",                    "radam",
    "nadam",    "adabound",             "adabound:amsbound",
    "lion",     "lion:weight_decay=0.1",
    "adamax",   "asgd",                 "asgd:t0=0", /* t0 = 0: the average is updated from step 2 on */
    "rprop",
    /* A per-tensor reduction pass before the update (docs/rules/lamb.md, lars.md): LAMB always runs its
     * moments' pass first (with the norms when weight_decay != 0); LARS reads p and g first when its ratio
     * applies (weight_decay != 0), else it is SGD. */
    "lamb",     "lamb:weight_decay=0",  "lars:momentum=0.9:weight_decay=1e-4",
    /* Schedule-free (docs/rules/schedule_free.md): the parameter and z (SGD), and v (AdamW). */
    "sgd_schedule_free", "adamw_schedule_free", "adamw_schedule_free:weight_decay=0.1",
    /* The gradient pre-pass (optim_set_clip_grad_norm): one more read of g. */
    "adam:clip=1",
    /* Step statistics (optim_set_stats): the same traffic as "adam" and "sgd:momentum=0.9"; compare their
     * times (the target is <= 5% more, docs/STATS.md). */
    "adam:stats",       "sgd:momentum=0.9:stats",
    /* The EMA of the weights (optim_set_ema, docs/EMA.md): one more read-modify-write float stream than "adam",
     * its ceiling one more stream too. */
    "adam:ema",
    /* Fewer bytes: 8-bit block-quantized state, bfloat16 gradients (docs/PRECISION.md). */
    "adam:state=int8",  "adam:grad=bf16:state=int8",
    /* Adafactor (docs/rules/adafactor.md): its own passes (factored_run.c), each against the same passes'
     * streams. "adafactor": a matrix (one tensor of n elements as n/1024 x 1024, the GPT-2 list's own shapes):
     * factored, its state two small vectors; "adafactor:1d": every tensor without a shape, the variance of n. */
    "adafactor", "adafactor:1d",
};
#define BENCH_NPRESETS (sizeof bench_presets / sizeof bench_presets[0])

/* --rules precision: master weights and stochastic rounding (docs/PRECISION.md),
 * each against a ceiling with its own streams in their widths. "offload" is
 * DeepSpeed's CPU-offload step: bfloat16 gradients in, fp32 master and state,
 * bfloat16 parameters out; with state=int8 the state is 8-bit (the offload
 * case of docs/PRECISION.md: bf16 gradients, fp32 master, 8-bit state). */
static const char *const bench_precision[] = {
    "adam:offload",
    "adam:offload:state=int8",
    "adam:param=f16:grad=f16:master",
    "adam:param=bf16:grad=bf16:sr",
    "adam:param=bf16:grad=bf16:state=bf16:sr",
    "adam:param=bf16:grad=bf16:state=int8:sr",
    "sgd:momentum=0.9:param=bf16:grad=bf16:sr",
    /* int8 codes rounded stochastically (sr8: OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING): the same traffic as
     * the nearest-rounding cases, one hash per state element more. */
    "adam:state=int8:sr8",
    "adam:offload:state=int8:sr8",
};
#define BENCH_NPRECISION (sizeof bench_precision / sizeof bench_precision[0])

typedef struct bench_case {
    char spec[BENCH_SPEC_MAX];
    optim_hparams hp;
    double clip;          /* optim_set_clip_grad_norm's max_norm (L2), 0: off */
    optim_nonfinite nonfinite;
    int stats;            /* optim_set_stats: the step measures its statistics (no change to its traffic) */
    double ema;           /* optim_set_ema's decay (ema or ema=D; 0.999 for a bare ema), 0: off */
    int prepass;          /* the step reads the gradients once before the update */
    int nslots;           /* state arrays under these options */
    int k;                /* read-modify-write streams: the parameter and the state */
    double bytes;         /* bytes per element of a step: 8 per float RMW stream, 2 (+ 8/256 of scales) per int8
                           * state stream, 4 (2 for 16-bit) per read of the gradient, 2 per 16-bit copy written */
    /* Reduced precision (param=, grad=, state=, master, sr, offload): element types and storage flags; the
     * ceiling then has k32 float and k16 16-bit read-modify-write streams, a 16-bit gradient (g16) and a
     * 16-bit stream only written (w16: a master's copy). */
    int typed;
    optim_dtype pdt, gdt, sdt;
    unsigned flags;
    int k32, k16, g16, w16;
    int q8;               /* state=int8: the state is OPTIM_INT8_BLOCK (codes and a scale per 256 elements); its
                           * ceiling is bench_rmw_q8 (not typed): float32 parameters or an fp32 master */
    int gbf16;            /* with q8: bfloat16 gradients */
    int pbf16;            /* with q8: bfloat16 parameters without a master (stochastic rounding or not) */
    /* LAMB, or LARS with its ratio: two passes. The ceiling then runs the same two passes' streams
     * (bench_rmw_read): LAMB pass 1 reads p (for the norms: norms = 1), g, m, v and writes m, v; pass 2 reads
     * p, m, v and writes p. LARS pass 1 reads p and g (a reduction); pass 2 is SGD's (bench_rmw). */
    optim_rule trust;     /* OPTIM_LAMB, OPTIM_LARS, or 0 */
    int norms;            /* LAMB: pass 1 also reads p for the norms (the trust ratio applies) */
    /* Adafactor: af = 1; af1d = 1 ("1d"): no tensor gets a shape (all unfactored). bytes is then that of one
     * tensor of the preset's kind; a list of tensors (gpt2) mixes kinds: bench_af_bytes per size. */
    int af, af1d;
} bench_case;

/* "bf16", "f16", "f32" as an element type; -1 if none. */
static int bench_dtype(const char *s)
{
    if (strcmp(s, "bf16") == 0 || strcmp(s, "bfloat16") == 0) return OPTIM_BFLOAT16;
    if (strcmp(s, "f16") == 0 || strcmp(s, "float16") == 0) return OPTIM_FLOAT16;
    if (strcmp(s, "f32") == 0 || strcmp(s, "float32") == 0) return OPTIM_FLOAT32;
    return -1;
}

/* A precision token of a spec into c (1), not one (0), or a bad value (-1, message). */
static int bench_parse_precision(const char *spec, const char *tok, const char *val, bench_case *c, char *msg,
                                 size_t msgsize)
{
    int dt;
    if (strcmp(tok, "sr8") == 0) { /* stochastic int8 codes (state=int8 only: checked with the layout) */
        if (val) {
            snprintf(msg, msgsize, "'%s': %s takes no value", spec, tok);
            return -1;
        }
        c->flags |= OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING;
        return 1;
    }
    if (strcmp(tok, "master") == 0 || strcmp(tok, "sr") == 0 || strcmp(tok, "offload") == 0) {
        if (val) {
            snprintf(msg, msgsize, "'%s': %s takes no value", spec, tok);
            return -1;
        }
        if (strcmp(tok, "offload") == 0) {
            c->pdt = c->gdt = OPTIM_BFLOAT16;
            c->flags |= OPTIM_PARAM_MASTER;
        } else {
            c->flags |= strcmp(tok, "master") == 0 ? OPTIM_PARAM_MASTER : OPTIM_PARAM_STOCHASTIC_ROUNDING;
        }
        c->typed = 1;
        return 1;
    }
    if (strcmp(tok, "param") != 0 && strcmp(tok, "grad") != 0 && strcmp(tok, "state") != 0) return 0;
    dt = val ? bench_dtype(val) : -1;
    if (dt < 0) {
        snprintf(msg, msgsize, "'%s': %s = '%s' must be bf16, f16 or f32%s", spec, tok, val ? val : "",
                 tok[0] == 's' ? " (or int8)" : "");
        return -1;
    }
    if (tok[0] == 'p') c->pdt = (optim_dtype)dt;
    else if (tok[0] == 'g') c->gdt = (optim_dtype)dt;
    else c->sdt = (optim_dtype)dt;
    c->typed = 1;
    return 1;
}

/* The streams and bytes of a typed case; -1 (message) if the library refuses the combination. */
static int bench_typed_layout(const char *spec, bench_case *c, char *msg, size_t msgsize)
{
    const int master = (c->flags & OPTIM_PARAM_MASTER) != 0;
    optim_dtype def;
    optim_error err;
    if ((int)c->sdt < 0 && optim_dtypes_check(master ? OPTIM_FLOAT32 : c->pdt, c->gdt, &def, &err) == OPTIM_OK)
        c->sdt = def;
    if ((int)c->sdt < 0) {
        snprintf(msg, msgsize, "'%s': %s", spec, err.message);
        return -1;
    }
    if (c->prepass) {
        snprintf(msg, msgsize, "'%s': clip and nonfinite are not measured with element types yet", spec);
        return -1;
    }
    c->g16 = c->gdt != OPTIM_FLOAT32;
    c->w16 = master;
    c->k32 = (master || c->pdt == OPTIM_FLOAT32 ? 1 : 0) + (c->sdt == OPTIM_FLOAT32 ? c->nslots : 0);
    c->k16 = (!master && c->pdt != OPTIM_FLOAT32 ? 1 : 0) + (c->sdt != OPTIM_FLOAT32 ? c->nslots : 0);
    c->bytes = 8.0 * c->k32 + 4.0 * c->k16 + (c->g16 ? 2.0 : 4.0) + (c->w16 ? 2.0 : 0.0);
    return 0;
}

/* Bytes per element of an Adafactor step over a tensor, factored or not, as src/kernels/factored_run.c moves
 * them in float32 (the factors, B*R + B*C elements, are not counted: a few per thousand of a tensor's):
 *   factored:   A reads p (||p||); the row pass and the column pass read g; B reads g (u from g and the
 *               factors); C reads g, reads and writes p: 4 + 4 + 4 + 4 + 12 = 28
 *   unfactored: A reads p and g, reads and writes the variance; B reads g and the variance; C (the generic
 *               loop) reads g and the variance, reads and writes p: 16 + 8 + 16 = 40
 * The gradient pre-pass (clip, nonfinite) reads g once more (4); the EMA reads and writes the average (8). */
static double bench_af_bytes(const bench_case *c, int factored)
{
    return (factored ? 28.0 : 40.0) + (c->prepass ? 4.0 : 0.0) + (c->ema ? 8.0 : 0.0);
}

/* Parse "rule[:hp[=value]]..." into *c. On error, a message naming the bad part. */
static int bench_parse_spec(const char *spec, bench_case *c, char *msg, size_t msgsize)
{
    char buf[BENCH_SPEC_MAX], *tok, *save = NULL;
    optim_rule rule;
    optim_error err;
    unsigned slots;
    int i;
    if (strlen(spec) >= sizeof buf) {
        snprintf(msg, msgsize, "'%.40s...' is too long", spec);
        return -1;
    }
    memset(c, 0, sizeof *c);
    c->pdt = c->gdt = OPTIM_FLOAT32;
    c->sdt = (optim_dtype)-1;
    snprintf(c->spec, sizeof c->spec, "%s", spec);
    snprintf(buf, sizeof buf, "%s", spec);
    tok = strtok_r(buf, ":", &save);
    rule = tok ? optim_rule_from_name(tok) : (optim_rule)0;
    if (!rule) {
        snprintf(msg, msgsize, "'%s': unknown rule '%s' (rules:", spec, tok ? tok : "");
        for (i = 1; i <= OPTIM_RULE_COUNT; i++) {
            size_t len = strlen(msg);
            if (!optim_rule_name((optim_rule)i)) continue; /* a value reserved for another rule */
            snprintf(msg + len, msgsize - len, " %s", optim_rule_name((optim_rule)i));
        }
        snprintf(msg + strlen(msg), msgsize - strlen(msg), ")");
        return -1;
    }
    optim_hparams_init(&c->hp, rule, NULL);
    while ((tok = strtok_r(NULL, ":", &save)) != NULL) {
        char *eq = strchr(tok, '='), *end;
        double v = 1.0;
        optim_hparam id;
        if (eq) *eq = '\0';
        /* The optimizer's gradient checks, not hyperparameters of the rule. */
        if (strcmp(tok, "clip") == 0) {
            c->clip = eq ? strtod(eq + 1, &end) : 0.0;
            if (!eq || *end != '\0' || !(c->clip > 0.0 && isfinite(c->clip))) {
                snprintf(msg, msgsize, "'%s': clip needs a max_norm > 0 (clip=1)", spec);
                return -1;
            }
            continue;
        }
        if (strcmp(tok, "stats") == 0 && !eq) {
            c->stats = 1;
            continue;
        }
        if (strcmp(tok, "1d") == 0 && !eq) {
            c->af1d = 1;
            continue;
        }
        if (strcmp(tok, "ema") == 0) {
            c->ema = eq ? strtod(eq + 1, &end) : 0.999;
            if ((eq && *end != '\0') || !(c->ema > 0.0 && c->ema < 1.0)) {
                snprintf(msg, msgsize, "'%s': ema needs a decay in (0, 1) (ema=0.999)", spec);
                return -1;
            }
            continue;
        }
        /* 8-bit block-quantized state (the other element types: bench_parse_precision). */
        if (strcmp(tok, "state") == 0 && eq && strcmp(eq + 1, "int8") == 0) {
            c->q8 = 1;
            continue;
        }
        if (strcmp(tok, "nonfinite") == 0) {
            const char *val = eq ? eq + 1 : "";
            if (strcmp(val, "skip") == 0) c->nonfinite = OPTIM_NONFINITE_SKIP;
            else if (strcmp(val, "error") == 0) c->nonfinite = OPTIM_NONFINITE_ERROR;
            else if (strcmp(val, "propagate") == 0) c->nonfinite = OPTIM_NONFINITE_PROPAGATE;
            else {
                snprintf(msg, msgsize, "'%s': nonfinite = '%s' must be propagate, skip or error", spec, val);
                return -1;
            }
            continue;
        }
        {
            int pr = bench_parse_precision(spec, tok, eq ? eq + 1 : NULL, c, msg, msgsize);
            if (pr < 0) return -1;
            if (pr > 0) continue;
        }
        id = optim_hparam_from_name(tok);
        if (!id) {
            snprintf(msg, msgsize, "'%s': unknown hyperparameter '%s'", spec, tok);
            return -1;
        }
        if (eq) {
            const char *val = eq + 1;
            if (id == OPTIM_HP_EPS_PLACEMENT && strcasecmp(val, "inside") == 0) v = OPTIM_EPS_INSIDE;
            else if (id == OPTIM_HP_EPS_PLACEMENT && strcasecmp(val, "outside") == 0) v = OPTIM_EPS_OUTSIDE;
            else if (strcasecmp(val, "true") == 0) v = 1.0;
            else if (strcasecmp(val, "false") == 0) v = 0.0;
            else {
                errno = 0;
                v = strtod(val, &end);
                if (errno || *val == '\0' || *end != '\0') {
                    snprintf(msg, msgsize, "'%s': %s = '%s' is not a number", spec, tok, val);
                    return -1;
                }
            }
        }
        if (optim_hparams_set(&c->hp, id, v, &err) != OPTIM_OK) {
            snprintf(msg, msgsize, "'%s': %s", spec, err.message);
            return -1;
        }
    }
    if (optim_hparams_check(&c->hp, &err) != OPTIM_OK) {
        snprintf(msg, msgsize, "'%s': %s", spec, err.message);
        return -1;
    }
    slots = optim_hparams_slots(&c->hp);
    for (i = 0; i < OPTIM_MAX_SLOTS; i++) c->nslots += (slots >> i) & 1u;
    c->k = 1 + c->nslots;
    c->prepass = c->clip > 0.0 || c->nonfinite != OPTIM_NONFINITE_PROPAGATE;
    {
        const int ratio = c->hp.weight_decay != 0 || c->hp.always_adapt;
        if (rule == OPTIM_LAMB || (rule == OPTIM_LARS && ratio)) {
            if (c->typed || c->q8) {
                snprintf(msg, msgsize, "'%s': %s is benchmarked in float32 only (its two passes' ceiling)", spec,
                         optim_rule_name(rule));
                return -1;
            }
            c->trust = rule;
            c->norms = rule == OPTIM_LAMB && ratio;
        }
    }
    if (c->af1d && rule != OPTIM_ADAFACTOR) {
        snprintf(msg, msgsize, "'%s': 1d leaves Adafactor's tensors without a shape (unfactored); %s's streams do not "
                 "depend on the shape", spec, optim_rule_name(rule));
        return -1;
    }
    if (rule == OPTIM_ADAFACTOR) {
        /* Its passes' streams (factored_run.c; bench_af_bytes): float32 only, as the rule (docs/rules/adafactor.md). */
        if (c->typed || c->q8) {
            snprintf(msg, msgsize, "'%s': %s is benchmarked in float32 only (the rule takes float32 or float64 "
                     "tensors and state)", spec, optim_rule_name(rule));
            return -1;
        }
        c->af = 1;
        c->nslots = c->af1d ? 1 : 2; /* variance, or row_var and col_var (B*R and B*C elements) */
        c->k = 1;
        c->bytes = bench_af_bytes(c, !c->af1d);
        return 0;
    }
    if ((c->flags & OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING) && !c->q8) {
        snprintf(msg, msgsize, "'%s': sr8 rounds int8 state's codes stochastically: it needs state=int8", spec);
        return -1;
    }
    if (c->q8) {
        /* 8-bit state: float32 parameters (grad=f32 or bf16), the offload step with an fp32 master
         * (offload, or param=bf16:grad=bf16:master), or bfloat16 parameters and gradients without a master
         * (param=bf16:grad=bf16, sr rounding the parameter stochastically); its ceiling is bench_rmw_q8. */
        const int master = (c->flags & OPTIM_PARAM_MASTER) != 0;
        const int bf16 = c->pdt == OPTIM_BFLOAT16 && c->gdt == OPTIM_BFLOAT16;
        if ((c->flags & OPTIM_PARAM_STOCHASTIC_ROUNDING) && (master || !bf16)) {
            snprintf(msg, msgsize, "'%s': sr with state=int8 is benchmarked for bfloat16 parameters without a master "
                     "(param=bf16:grad=bf16:state=int8:sr; int8 codes round to nearest)", spec);
            return -1;
        }
        if (master || c->pdt != OPTIM_FLOAT32 ? !bf16 : c->gdt == OPTIM_FLOAT16) {
            snprintf(msg, msgsize,
                     "'%s': state=int8 is benchmarked with float32 parameters (grad=f32 or bf16), as the offload "
                     "step (param=bf16:grad=bf16:master) or with bfloat16 parameters and gradients "
                     "(param=bf16:grad=bf16[:sr])",
                     spec);
            return -1;
        }
        if (c->prepass) {
            snprintf(msg, msgsize, "'%s': clip and nonfinite are not benchmarked with state=int8", spec);
            return -1;
        }
        c->typed = 0;
        c->sdt = OPTIM_INT8_BLOCK;
        c->gbf16 = c->gdt == OPTIM_BFLOAT16;
        c->pbf16 = !master && c->pdt == OPTIM_BFLOAT16;
        c->w16 = master;
        c->bytes = (c->pbf16 ? 4.0 : 8.0) + c->nslots * (2.0 + 8.0 / OPTIM_INT8_BLOCK_SIZE) + (c->gbf16 ? 2.0 : 4.0) +
                   (master ? 2.0 : 0.0);
        return 0;
    }
    if (c->ema) {
        /* One more float stream read and written: the average (its ceiling: one more stream). */
        if (c->typed || c->trust) {
            snprintf(msg, msgsize, "'%s': ema is benchmarked with float32 parameters and state only", spec);
            return -1;
        }
        c->k++;
    }
    c->bytes = 8.0 * c->k + (c->prepass ? 8.0 : 4.0);
    /* LAMB: pass 1 g, m, v read (p too for the norms), m, v written; pass 2 p, m, v read, p written. LARS:
     * pass 1 p and g read; pass 2 SGD's streams. The pre-pass's read of g adds 4. */
    if (c->trust == OPTIM_LAMB) c->bytes = 4.0 * (c->norms ? 4 : 3) + 8.0 + 4.0 * 3 + 4.0 + (c->prepass ? 4.0 : 0.0);
    if (c->trust == OPTIM_LARS) c->bytes += 8.0;
    if (c->typed) return bench_typed_layout(spec, c, msg, msgsize);
    return 0;
}

/* The rule part of a spec ("adam" of "adam:amsgrad"). */
static void bench_spec_rule(const char *spec, char *out, size_t size)
{
    size_t len = strcspn(spec, ":");
    snprintf(out, size, "%.*s", (int)(len < size ? len : size - 1), spec);
}

/* ---- Sizes and the GPT-2 shapes ------------------------------------------------------ */

typedef struct bench_size {
    char label[24];
    size_t n;   /* total elements */
    int gpt2;   /* the GPT-2-small list of tensors instead of one tensor */
} bench_size;

/* GPT-2 small (124M): token and position embeddings, 12 blocks, final
 * LayerNorm; Conv1D weights as stored (in x out). */
#define BENCH_GPT2_LAYERS 12
#define BENCH_GPT2_PER_LAYER 12
#define BENCH_GPT2_TENSORS (2 + BENCH_GPT2_LAYERS * BENCH_GPT2_PER_LAYER + 2)

typedef struct bench_shape {
    char name[40];
    size_t rows, cols; /* cols = 1 for vectors */
} bench_shape;

static size_t bench_gpt2_shapes(bench_shape *out)
{
    static const struct {
        const char *name;
        size_t rows, cols;
    } layer[BENCH_GPT2_PER_LAYER] = {
        {"ln_1.weight", 768, 1},         {"ln_1.bias", 768, 1},         {"attn.c_attn.weight", 768, 2304},
        {"attn.c_attn.bias", 2304, 1},   {"attn.c_proj.weight", 768, 768}, {"attn.c_proj.bias", 768, 1},
        {"ln_2.weight", 768, 1},         {"ln_2.bias", 768, 1},         {"mlp.c_fc.weight", 768, 3072},
        {"mlp.c_fc.bias", 3072, 1},      {"mlp.c_proj.weight", 3072, 768}, {"mlp.c_proj.bias", 768, 1},
    };
    size_t m = 0;
    int l, j;
    snprintf(out[m].name, sizeof out[m].name, "wte.weight");
    out[m].rows = 50257, out[m].cols = 768, m++;
    snprintf(out[m].name, sizeof out[m].name, "wpe.weight");
    out[m].rows = 1024, out[m].cols = 768, m++;
    for (l = 0; l < BENCH_GPT2_LAYERS; l++)
        for (j = 0; j < BENCH_GPT2_PER_LAYER; j++) {
            snprintf(out[m].name, sizeof out[m].name, "h.%d.%s", l, layer[j].name);
            out[m].rows = layer[j].rows, out[m].cols = layer[j].cols, m++;
        }
    snprintf(out[m].name, sizeof out[m].name, "ln_f.weight");
    out[m].rows = 768, out[m].cols = 1, m++;
    snprintf(out[m].name, sizeof out[m].name, "ln_f.bias");
    out[m].rows = 768, out[m].cols = 1, m++;
    return m;
}

/* ---- Options ------------------------------------------------------------------------ */

typedef struct bench_opts {
    bench_case cases[BENCH_MAX_ITEMS];
    size_t ncases;
    bench_size sizes[BENCH_MAX_ITEMS];
    size_t nsizes;
    int threads[BENCH_MAX_ITEMS]; /* 0 = all */
    size_t nthreads;
    int reps;
    double min_time;
    optim_isa isa;
    uint64_t seed;
    int json, quiet, context;
} bench_opts;

static void bench_usage(FILE *f)
{
    fprintf(f,
            "usage: optim bench [options]            time every rule against its memory ceiling\n"
            "       optim bench --torch [options]    optim.torch against torch.optim (optim bench --torch --help)\n"
            "       optim bench --muon [options]     a Muon step against OpenBLAS's sgemm (optim bench --muon --help)\n"
            "\n"
            "For each size, case and thread count: the step's time, elements/s, the bytes it must move per\n"
            "element, GB/s, and the ratio to a ceiling measured in the same run just before: a kernel with\n"
            "the rule's exact read/write streams and trivial arithmetic, on the same arrays, compiled for the\n"
            "same CPU path. Copy and triad are shown for context. See docs/PERFORMANCE.md.\n"
            "\n"
            "options:\n"
            "  --rules LIST     cases, comma-separated (default all). An item is one of\n"
            "                     all                 every preset (see --list)\n"
            "                     RULE                the presets of a rule (adam: adam, adam:amsgrad)\n"
            "                     RULE:HP[=V]:...     exactly this configuration, e.g. rmsprop:centered,\n"
            "                                         sgd:momentum=0.9:nesterov, radam:decoupled_weight_decay:\n"
            "                                         weight_decay=0.01; a bare HP means 1; RULE: alone is the\n"
            "                                         rule's defaults; clip=MAX (optim_set_clip_grad_norm) and\n"
            "                                         nonfinite=skip|error add the gradient pre-pass;\n"
            "                                         state=int8 (8-bit block-quantized state; with float32\n"
            "                                         parameters, grad=bf16, or offload) changes the state's type;\n"
            "                                         sr8 rounds its codes stochastically;\n"
            "                                         stats (optim_set_stats) measures the step statistics\n"
            "                                         ema[=D] (optim_set_ema) keeps an EMA of the weights\n"
            "                                         1d: Adafactor's tensors get no shape (unfactored)\n"
            "  --sizes LIST     elements per case: numbers with K, M, G (2^10, 2^20, 2^30) or gpt2 (the 148\n"
            "                   tensors of GPT-2 small, 124M elements) (default 4K,64K,1M,16M,64M,256M,gpt2)\n"
            "                   A case that does not fit in the available memory is skipped and reported.\n"
            "  --threads LIST   1, N or all (default 1,all)\n"
            "  --reps N         timed runs per case after a warm-up; the median is reported (default 5;\n"
            "                   fewer than 5 only for smoke tests)\n"
            "  --min-time S     a run repeats the step for at least S seconds (default 0.05)\n"
            "  --isa NAME       CPU path of the library and of the ceilings: scalar, avx2, avx512, avx512bf16, neon\n"
            "                   (default: the library's default, which OPTIM_ISA can set)\n"
            "  --no-context     skip copy and triad\n"
            "  --seed S         seed of the parameter and gradient values (default 1)\n"
            "  --json           results as JSON on stdout instead of the table\n"
            "  --quiet          no progress on stderr\n"
            "  --list           the presets and the GPT-2 shapes\n"
            "  --help           this text\n");
}

static int bench_fail(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
static int bench_fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "optim bench: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    return -1;
}

/* Split a comma-separated list; calls fn on each non-empty item. */
static int bench_each_item(const char *opt, const char *list, int (*fn)(bench_opts *, const char *, const char *),
                           bench_opts *o)
{
    char item[BENCH_SPEC_MAX];
    const char *p = list;
    int any = 0;
    while (*p) {
        size_t len = strcspn(p, ",");
        if (len >= sizeof item) return bench_fail("%s: item '%.*s...' is too long", opt, 40, p);
        if (len > 0) {
            snprintf(item, sizeof item, "%.*s", (int)len, p);
            if (fn(o, opt, item) != 0) return -1;
            any = 1;
        }
        p += len;
        if (*p == ',') p++;
    }
    if (!any) return bench_fail("%s needs a comma-separated list, got '%s'", opt, list);
    return 0;
}

/* Add exactly the configuration `spec` (deduplicated by its label). */
static int bench_add_exact(bench_opts *o, const char *opt, const char *spec)
{
    char msg[OPTIM_ERRMSG_MAX + 200];
    bench_case c;
    size_t i, len;
    if (bench_parse_spec(spec, &c, msg, sizeof msg) != 0) return bench_fail("%s %s", opt, msg);
    /* "adam:" is the rule's defaults: label it "adam". */
    len = strlen(c.spec);
    while (len > 0 && c.spec[len - 1] == ':') c.spec[--len] = '\0';
    for (i = 0; i < o->ncases; i++)
        if (strcmp(o->cases[i].spec, c.spec) == 0) return 0;
    if (o->ncases == BENCH_MAX_ITEMS) return bench_fail("%s: more than %d cases", opt, BENCH_MAX_ITEMS);
    o->cases[o->ncases++] = c;
    return 0;
}

/* One item of --rules: "all", a rule name (its presets) or an exact spec. */
static int bench_add_case(bench_opts *o, const char *opt, const char *item)
{
    char msg[OPTIM_ERRMSG_MAX + 200], rule[32];
    bench_case c;
    optim_rule r;
    size_t i;
    int all = strcmp(item, "all") == 0;
    if (strchr(item, ':')) return bench_add_exact(o, opt, item);
    if (strcmp(item, "precision") == 0) {
        for (i = 0; i < BENCH_NPRECISION; i++)
            if (bench_add_exact(o, opt, bench_precision[i]) != 0) return -1;
        return 0;
    }
    r = all ? (optim_rule)0 : optim_rule_from_name(item);
    if (!all && !r) {
        bench_parse_spec(item, &c, msg, sizeof msg); /* its message lists the rules */
        return bench_fail("%s %s", opt, msg);
    }
    for (i = 0; i < BENCH_NPRESETS; i++) {
        bench_spec_rule(bench_presets[i], rule, sizeof rule);
        if (!all && optim_rule_from_name(rule) != r) continue;
        if (bench_add_exact(o, opt, bench_presets[i]) != 0) return -1;
    }
    return 0;
}

static int bench_add_size(bench_opts *o, const char *opt, const char *item)
{
    bench_size s;
    size_t i;
    memset(&s, 0, sizeof s);
    if (strcasecmp(item, "gpt2") == 0) {
        bench_shape shapes[BENCH_GPT2_TENSORS];
        size_t m = bench_gpt2_shapes(shapes);
        s.gpt2 = 1;
        for (i = 0; i < m; i++) s.n += shapes[i].rows * shapes[i].cols;
        snprintf(s.label, sizeof s.label, "gpt2");
    } else {
        char *end;
        double v, mult = 1.0;
        errno = 0;
        v = strtod(item, &end);
        if (end != item && *end) {
            switch (*end) {
            case 'k': case 'K': mult = 1024.0; break;
            case 'm': case 'M': mult = 1048576.0; break;
            case 'g': case 'G': mult = 1073741824.0; break;
            default: mult = 0.0; break;
            }
            if (mult != 0.0) end++;
        }
        v *= mult;
        if (errno || end == item || *end != '\0' || !(v >= 1.0) || v > 64.0 * 1073741824.0 || v != floor(v))
            return bench_fail("%s %s: expected a whole number of elements in [1, 64G] (suffixes K, M, G = "
                              "2^10, 2^20, 2^30) or gpt2",
                              opt, item);
        s.n = (size_t)v;
        bench_count_label(s.label, sizeof s.label, s.n);
    }
    for (i = 0; i < o->nsizes; i++)
        if (o->sizes[i].n == s.n && o->sizes[i].gpt2 == s.gpt2) return 0;
    if (o->nsizes == BENCH_MAX_ITEMS) return bench_fail("%s: more than %d sizes", opt, BENCH_MAX_ITEMS);
    o->sizes[o->nsizes++] = s;
    return 0;
}

static int bench_add_threads(bench_opts *o, const char *opt, const char *item)
{
    long t;
    size_t i;
    if (strcasecmp(item, "all") == 0)
        t = 0;
    else {
        char *end;
        errno = 0;
        t = strtol(item, &end, 10);
        if (errno || end == item || *end != '\0' || t < 1 || t > 1024)
            return bench_fail("%s %s: expected 1..1024 or all", opt, item);
    }
    for (i = 0; i < o->nthreads; i++)
        if (o->threads[i] == (int)t) return 0;
    if (o->nthreads == BENCH_MAX_ITEMS) return bench_fail("%s: more than %d thread counts", opt, BENCH_MAX_ITEMS);
    o->threads[o->nthreads++] = (int)t;
    return 0;
}

static void bench_list(void)
{
    bench_shape shapes[BENCH_GPT2_TENSORS];
    size_t i, m = bench_gpt2_shapes(shapes), total = 0;
    printf("presets (--rules all):\n");
    for (i = 0; i < BENCH_NPRESETS; i++) {
        bench_case c;
        char msg[OPTIM_ERRMSG_MAX + 200];
        if (bench_parse_spec(bench_presets[i], &c, msg, sizeof msg) != 0) continue;
        printf("  %-32s %2d state arrays, %2.0f bytes per element", c.spec, c.nslots, c.bytes);
        if (c.af && !c.af1d) {
            /* The GPT-2 list mixes matrices (factored) and vectors (not). */
            double moved = 0.0;
            size_t j, n = 0;
            for (j = 0; j < m; j++) {
                n += shapes[j].rows * shapes[j].cols;
                moved += (double)(shapes[j].rows * shapes[j].cols) * bench_af_bytes(&c, shapes[j].cols > 1);
            }
            printf(" (a matrix, n/1024 x 1024, factored: its state two vectors; gpt2: %.3f)", moved / (double)n);
        } else if (c.af) {
            printf(" (every tensor without a shape: the variance of n)");
        }
        printf("\n");
    }
    printf("\ngpt2 (--sizes gpt2): %zu tensors\n", m);
    for (i = 0; i < m; i++) {
        total += shapes[i].rows * shapes[i].cols;
        if (shapes[i].cols > 1)
            printf("  %-24s %5zu x %-5zu\n", shapes[i].name, shapes[i].rows, shapes[i].cols);
        else
            printf("  %-24s %5zu\n", shapes[i].name, shapes[i].rows);
    }
    printf("  total %zu elements\n", total);
}

/* Returns 0 to run, 1 when done (help, list), 2 on a usage error. */
static int bench_parse_args(int argc, char **argv, bench_opts *o)
{
    int i;
    const char *rules = "all", *sizes = "4K,64K,1M,16M,64M,256M,gpt2", *threads = "1,all", *isa = NULL;
    memset(o, 0, sizeof *o);
    o->reps = 5;
    o->min_time = 0.05;
    o->seed = 1;
    o->context = 1;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = strcmp(a, "--rules") == 0 || strcmp(a, "--sizes") == 0 || strcmp(a, "--threads") == 0 ||
                    strcmp(a, "--reps") == 0 || strcmp(a, "--min-time") == 0 || strcmp(a, "--isa") == 0 ||
                    strcmp(a, "--seed") == 0;
        if (takes && !val) {
            bench_fail("%s needs a value", a);
            return 2;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            bench_usage(stdout);
            return 1;
        } else if (strcmp(a, "--list") == 0) {
            bench_list();
            return 1;
        } else if (strcmp(a, "--torch") == 0) {
            bench_fail("--torch must come first: optim bench --torch [options] (see optim bench --torch --help)");
            return 2;
        } else if (strcmp(a, "--rules") == 0) {
            rules = val;
        } else if (strcmp(a, "--sizes") == 0) {
            sizes = val;
        } else if (strcmp(a, "--threads") == 0) {
            threads = val;
        } else if (strcmp(a, "--isa") == 0) {
            isa = val;
        } else if (strcmp(a, "--reps") == 0) {
            char *end;
            long v;
            errno = 0;
            v = strtol(val, &end, 10);
            if (errno || end == val || *end || v < 1 || v > 1000) {
                bench_fail("--reps %s: expected an integer in [1, 1000]", val);
                return 2;
            }
            o->reps = (int)v;
        } else if (strcmp(a, "--min-time") == 0) {
            char *end;
            double v;
            errno = 0;
            v = strtod(val, &end);
            if (errno || end == val || *end || !(v >= 0.0 && v <= 60.0)) {
                bench_fail("--min-time %s: expected seconds in [0, 60]", val);
                return 2;
            }
            o->min_time = v;
        } else if (strcmp(a, "--seed") == 0) {
            char *end;
            unsigned long long v;
            errno = 0;
            v = strtoull(val, &end, 10);
            if (errno || end == val || *end || val[0] == '-') {
                bench_fail("--seed %s: expected a non-negative integer", val);
                return 2;
            }
            o->seed = (uint64_t)v;
        } else if (strcmp(a, "--json") == 0) {
            o->json = 1;
        } else if (strcmp(a, "--quiet") == 0) {
            o->quiet = 1;
        } else if (strcmp(a, "--no-context") == 0) {
            o->context = 0;
        } else {
            bench_fail("unknown option '%s' (optim bench --help lists them)", a);
            return 2;
        }
        if (takes) i++;
    }
    if (bench_each_item("--rules", rules, bench_add_case, o) != 0) return 2;
    if (bench_each_item("--sizes", sizes, bench_add_size, o) != 0) return 2;
    if (bench_each_item("--threads", threads, bench_add_threads, o) != 0) return 2;
    if (isa) {
        int j, found = 0;
        for (j = OPTIM_ISA_SCALAR; j <= OPTIM_ISA_AVX512BF16; j++)
            if (strcasecmp(isa, optim_isa_name((optim_isa)j)) == 0) {
                o->isa = (optim_isa)j;
                found = 1;
            }
        if (!found) {
            bench_fail("--isa %s: expected scalar, avx2, avx512, avx512bf16 or neon", isa);
            return 2;
        }
        if (!optim_isa_available(o->isa)) {
            bench_fail("--isa %s: this build or this CPU cannot run that path", isa);
            return 2;
        }
    } else {
        o->isa = optim_isa_default();
    }
    if (!bench_kernels_have(o->isa)) {
        bench_fail("the ceiling kernels of this build have no %s instance (compiler without target attributes?)",
                   optim_isa_name(o->isa));
        return 2;
    }
    return 0;
}

/* ---- Statistics ---------------------------------------------------------------------- */

typedef struct bench_stats {
    double med, min, max; /* seconds per step */
} bench_stats;

static int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static bench_stats bench_summarize(const double *v, int n)
{
    double s[1000];
    bench_stats st;
    int i;
    for (i = 0; i < n; i++) s[i] = v[i];
    qsort(s, (size_t)n, sizeof s[0], bench_cmp_double);
    st.min = s[0];
    st.max = s[n - 1];
    st.med = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    return st;
}

/* ---- Progress ------------------------------------------------------------------------- */

typedef struct bench_progress {
    int on, tty;
    double t0;
    double total, done; /* estimated seconds of all tasks, of the finished ones */
    int ntasks, ntask;
    int shown;          /* a line is on the terminal */
} bench_progress;

static bench_progress bench_prog;

static void bench_progress_clear(void)
{
    if (bench_prog.on && bench_prog.tty && bench_prog.shown) {
        fprintf(stderr, "\r\033[K");
        fflush(stderr);
        bench_prog.shown = 0;
    }
}

static void bench_progress_show(const char *what)
{
    double el;
    char eta[32] = "";
    if (!bench_prog.on) return;
    el = bench_now() - bench_prog.t0;
    if (bench_prog.done > 0 && bench_prog.total > bench_prog.done) {
        double left = el * (bench_prog.total - bench_prog.done) / bench_prog.done;
        snprintf(eta, sizeof eta, ", ~%.0f:%02.0f left", floor(left / 60.0), fmod(floor(left), 60.0));
    }
    if (bench_prog.tty) {
        fprintf(stderr, "\r\033[K[%d/%d %.0f:%02.0f%s] %s", bench_prog.ntask + 1, bench_prog.ntasks,
                floor(el / 60.0), fmod(floor(el), 60.0), eta, what);
        bench_prog.shown = 1;
    } else {
        fprintf(stderr, "optim bench: [%d/%d %.0fs%s] %s\n", bench_prog.ntask + 1, bench_prog.ntasks, el, eta, what);
    }
    fflush(stderr);
}

/* Estimated seconds of one timed case: warm-up and runs of both kernels. */
static double bench_estimate(const bench_opts *o, size_t n, double bytes)
{
    double step = (double)n * bytes / 10e9;
    double run = step > o->min_time ? step : o->min_time;
    return 2.0 * (o->reps + 1) * run + (double)n * bytes / 4e9;
}

/* ---- One measured pair -------------------------------------------------------------------- */

/* Runtime constants of the ceiling (volatile: never folded into the loop). */
static volatile float bench_one = 1.0f, bench_zero = 0.0f;
static volatile uint8_t bench_zero_byte = 0;
/* Where the ceiling's read pass stores its sum, so that it is not dropped. */
static volatile float bench_sink;

/* Adafactor's ceiling (bench_af_ceiling): its passes' streams over the factored tensors (f: x[0] = p, g = g;
 * fp: g = p, the read of p) and over the unfactored ones (ua: pass A, x[0] = the variance, g, r = p; ub: pass B,
 * g, r = the variance; uc: pass C, x[0] = p (x[1] the average with the EMA), g, r = the variance), each list's
 * starts running over its own tensors. kf, ku: pass C's read-modify-write streams (2 with the EMA). */
typedef struct bench_af_lists {
    bench_span f[BENCH_GPT2_TENSORS], fp[BENCH_GPT2_TENSORS];
    bench_span ua[BENCH_GPT2_TENSORS], ub[BENCH_GPT2_TENSORS], uc[BENCH_GPT2_TENSORS];
    size_t nf, nu, totf, totu;
    int kf, ku;
} bench_af_lists;

typedef struct bench_pair_ctx {
    optim *opt;       /* the rule, or NULL for copy/triad */
    optim_isa isa;
    int k;
    int q8;           /* the ceiling is bench_rmw_q8 (state=int8) */
    const bench_span *spans;
    size_t count, total;
    int threads;
    int prepass;      /* the ceiling reads the gradients once more first */
    float *a, *b, *c; /* copy and triad arrays */
    const bench_case *tc; /* a typed case: bench_rmw_typed with its layout, else NULL */
    optim_rule trust;     /* LAMB or LARS (bench_case): the two passes over pass1 and pass2 */
    int norms;
    const bench_span *pass1, *pass2;
    const bench_af_lists *af; /* Adafactor: its passes (bench_af_ceiling) */
} bench_pair_ctx;

/* One pass of Adafactor's ceiling over a list of spans, returning the bytes it moved: the count comes from
 * the call itself, so that a pass missing from the ceiling is missing from its count. */
static double bench_af_read(const bench_pair_ctx *x, const bench_span *l, size_t count, size_t total)
{
    if (!count) return 0.0;
    bench_sink = bench_read(x->isa, l, count, total, x->threads); /* g read */
    return 4.0 * (double)total;
}
static double bench_af_rmw(const bench_pair_ctx *x, int k, const bench_span *l, size_t count, size_t total)
{
    if (!count) return 0.0;
    bench_rmw(x->isa, k, l, count, total, x->threads, bench_one, bench_zero); /* x[0..k) updated, g read */
    return (8.0 * k + 4.0) * (double)total;
}
static double bench_af_rmw_read(const bench_pair_ctx *x, int k, const bench_span *l, size_t count, size_t total)
{
    if (!count) return 0.0;
    /* x[0..k) updated, g and r read */
    bench_sink = bench_rmw_read(x->isa, k, l, count, total, x->threads, bench_one, bench_zero);
    return (8.0 * k + 8.0) * (double)total;
}

/* Adafactor's ceiling, pass by pass as src/kernels/factored_run.c runs them (bench_af_bytes counts the same):
 * A: p read (factored), p and g read and the variance read and written (unfactored); the factored tensors'
 * row pass and column pass: g read, twice; B: g read (factored), g and the variance read (unfactored); C: p
 * read and written and g read (factored), with the variance read (unfactored); the average read and written
 * with the EMA. Returns the bytes it moved, so that the caller can check them against the case's count. */
static double bench_af_ceiling(const bench_pair_ctx *x)
{
    const bench_af_lists *a = x->af;
    double moved = 0.0;
    moved += bench_af_read(x, a->fp, a->nf, a->totf);                /* A: ||p|| */
    moved += bench_af_rmw_read(x, 1, a->ua, a->nu, a->totu);         /* A: the variance, ||p|| */
    moved += bench_af_read(x, a->f, a->nf, a->totf);                 /* the row factors */
    moved += bench_af_read(x, a->f, a->nf, a->totf);                 /* the column factors */
    moved += bench_af_read(x, a->f, a->nf, a->totf);                 /* B: ||u|| */
    moved += bench_af_rmw_read(x, 0, a->ub, a->nu, a->totu);         /* B: ||u|| */
    moved += bench_af_rmw(x, a->kf, a->f, a->nf, a->totf);           /* C */
    moved += bench_af_rmw_read(x, a->ku, a->uc, a->nu, a->totu);     /* C */
    return moved;
}

/* One step of kernel `which`: 0 the ceiling, 1 the rule, 2 copy, 3 triad. */
static void bench_do(const bench_pair_ctx *x, int which)
{
    switch (which) {
    case 0:
        /* The pre-pass's read of the gradients, then the update's streams. */
        if (x->prepass) bench_sink = bench_read(x->isa, x->spans, x->count, x->total, x->threads);
        if (x->af) {
            bench_af_ceiling(x);
            break;
        }
        if (x->trust == OPTIM_LAMB) {
            /* Pass 1: m, v read and written, g (and p for the norms) read; pass 2: p read and written, m, v read. */
            if (x->norms)
                bench_rmw_read(x->isa, 2, x->pass1, x->count, x->total, x->threads, bench_one, bench_zero);
            else
                bench_rmw(x->isa, 2, x->pass1, x->count, x->total, x->threads, bench_one, bench_zero);
            bench_rmw_read(x->isa, 1, x->pass2, x->count, x->total, x->threads, bench_one, bench_zero);
            break;
        }
        /* LARS: pass 1 reads p and g; pass 2 is SGD's below. */
        if (x->trust == OPTIM_LARS)
            bench_sink = bench_rmw_read(x->isa, 0, x->pass1, x->count, x->total, x->threads, bench_one, bench_zero);
        if (x->tc)
            bench_rmw_typed(x->isa, x->tc->k32, x->tc->k16, x->tc->g16, x->spans, x->count, x->total, x->threads,
                            bench_one, bench_zero);
        else if (x->q8)
            bench_rmw_q8(x->isa, x->k, x->spans, x->count, x->total, x->threads, bench_one, bench_zero,
                         bench_zero_byte);
        else
            bench_rmw(x->isa, x->k, x->spans, x->count, x->total, x->threads, bench_one, bench_zero);
        break;
    case 1: {
        int rc = optim_step(x->opt);
        if (rc != OPTIM_OK) {
            bench_progress_clear();
            fprintf(stderr, "optim bench: optim_step failed: %s\n", optim_errmsg(x->opt));
            exit(1);
        }
        break;
    }
    case 2: bench_copy(x->isa, x->total, x->b, x->a, x->threads); break;
    default: bench_triad(x->isa, x->total, x->a, x->b, x->c, bench_one, x->threads); break;
    }
}

/* Seconds per step of a batch of `iters` steps. */
static double bench_batch(const bench_pair_ctx *x, int which, size_t iters)
{
    double t0 = bench_now();
    size_t i;
    for (i = 0; i < iters; i++) bench_do(x, which);
    return (bench_now() - t0) / (double)iters;
}

/* Time kernels w0 and w1 alternately: warm-up, calibration of the batch
 * (the slower of the two sets the count), then reps runs of each, w0 just
 * before w1 every time. */
static size_t bench_measure(const bench_opts *o, const bench_pair_ctx *x, int w0, int w1, double *t0, double *t1)
{
    size_t iters;
    double one;
    int r;
    bench_do(x, w0); /* first touch; SGD's momentum buffer takes its first gradient */
    bench_do(x, w1);
    one = bench_batch(x, w1, 1);
    one = fmax(one, bench_batch(x, w0, 1));
    iters = one > 0 ? (size_t)ceil(o->min_time / one) : 1;
    if (iters < 1) iters = 1;
    if (iters > 10000000) iters = 10000000;
    if (iters > 1) {
        bench_batch(x, w0, iters);
        bench_batch(x, w1, iters);
    }
    for (r = 0; r < o->reps; r++) {
        t0[r] = bench_batch(x, w0, iters);
        t1[r] = bench_batch(x, w1, iters);
    }
    return iters;
}

/* ---- Results --------------------------------------------------------------------------- */

typedef struct bench_result {
    const bench_case *c;
    const bench_size *s;
    int threads;      /* asked: 0 = all */
    int threads_used; /* what a pass of this size runs on */
    size_t tensors, iters;
    double bytes;     /* per element: the case's, or for Adafactor over a list of tensors their mix (bench_af_bytes) */
    bench_stats rule, ceil;
    double ratio, ratio_lo, ratio_hi; /* over the pairs (ceiling run, rule run just after) */
    double *runs_ceil, *runs_rule;     /* seconds per step of each run, in order */
    uint64_t min_bytes; /* params + grads + state */
    uint64_t rss_base;  /* resident set before this size's arrays were allocated */
    uint64_t peak_rss;  /* peak resident set while this case ran (the process's) */
} bench_result;

typedef struct bench_context {
    const bench_size *s;
    int threads, threads_used;
    size_t iters;
    bench_stats copy, triad;
} bench_context;

typedef struct bench_skip {
    const bench_size *s;
    const bench_case *c; /* NULL: the whole size */
    char reason[200];
} bench_skip;

typedef struct bench_run {
    bench_result *res;
    size_t nres, capres;
    bench_context *ctx;
    size_t nctx, capctx;
    bench_skip *skips;
    size_t nskips, capskips;
    int peak_resettable;
    uint64_t rss_start, mem_start;
    double load_start[3], load_end[3];
    double t_start, t_end;
} bench_run;

static void *bench_grow(void *p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return p;
    *cap = *cap ? *cap * 2 : 64;
    if (*cap < need) *cap = need;
    p = realloc(p, *cap * elem);
    if (!p) {
        fprintf(stderr, "\noptim bench: out of memory\n");
        exit(1);
    }
    return p;
}

static void bench_add_skip(bench_run *run, const bench_size *s, const bench_case *c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static void bench_add_skip(bench_run *run, const bench_size *s, const bench_case *c, const char *fmt, ...)
{
    va_list ap;
    bench_skip *k;
    run->skips = (bench_skip *)bench_grow(run->skips, &run->capskips, run->nskips + 1, sizeof *run->skips);
    k = &run->skips[run->nskips++];
    k->s = s;
    k->c = c;
    va_start(ap, fmt);
    vsnprintf(k->reason, sizeof k->reason, fmt, ap);
    va_end(ap);
}

/* ---- Table output ------------------------------------------------------------------------ */

static void bench_time_label(char *out, size_t size, double s)
{
    if (s < 1e-6)
        snprintf(out, size, "%.0f ns", s * 1e9);
    else if (s < 1e-3)
        snprintf(out, size, "%.2f us", s * 1e6);
    else if (s < 1.0)
        snprintf(out, size, "%.2f ms", s * 1e3);
    else
        snprintf(out, size, "%.3f s", s);
}

static double bench_spread(const bench_stats *st)
{
    return st->med > 0 ? 100.0 * (st->max - st->min) / st->med : 0.0;
}

static void bench_threads_label(char *out, size_t size, int threads)
{
    if (threads == 0)
        snprintf(out, size, "all");
    else
        snprintf(out, size, "%d", threads);
}

static void bench_print_size_header(const bench_size *s, size_t tensors)
{
    char bytes[32];
    bench_bytes_label(bytes, sizeof bytes, (double)s->n * 4.0);
    if (s->gpt2)
        printf("\n== gpt2: GPT-2 small, %zu tensors, %zu elements (%s per array)\n", tensors, s->n, bytes);
    else
        printf("\n== %s: one tensor of %zu elements (%s per array)\n", s->label, s->n, bytes);
    printf("  %-30s %4s %4s %10s %8s %7s %8s %6s %13s\n", "case", "thr", "B/el", "step", "Gel/s", "GB/s",
           "ceil GB/s", "ratio", "spread r/c");
}

static void bench_print_context(const bench_context *x)
{
    char thr[16];
    bench_threads_label(thr, sizeof thr, x->threads);
    printf("  %-30s %4s %4s %10s %8s %7.1f %8s %6s %12.1f%%\n", "copy (context)", thr, "8", "", "",
           (double)x->s->n * 8.0 / x->copy.med / 1e9, "", "", bench_spread(&x->copy));
    printf("  %-30s %4s %4s %10s %8s %7.1f %8s %6s %12.1f%%\n", "triad (context)", thr, "12", "", "",
           (double)x->s->n * 12.0 / x->triad.med / 1e9, "", "", bench_spread(&x->triad));
}

static void bench_print_result(const bench_result *r)
{
    char thr[16], step[24], spread[32];
    double n = (double)r->s->n;
    bench_threads_label(thr, sizeof thr, r->threads);
    bench_time_label(step, sizeof step, r->rule.med);
    snprintf(spread, sizeof spread, "%.1f%%/%.1f%%", bench_spread(&r->rule), bench_spread(&r->ceil));
    printf("  %-30s %4s %4.0f %10s %8.3f %7.1f %8.1f %6.2f %13s\n", r->c->spec, thr, r->bytes, step,
           n / r->rule.med / 1e9, n * r->bytes / r->rule.med / 1e9, n * r->bytes / r->ceil.med / 1e9,
           r->ratio, spread);
}

/* ---- Targets ------------------------------------------------------------------------------ */

#define BENCH_BIG ((size_t)64 << 20) /* "far out of cache" in the targets */

typedef struct bench_target {
    const char *name;
    double threshold;
    int gpt2;    /* 1: the GPT-2 list; 0: single tensors of >= 64M elements */
    int threads; /* the thread setting it covers (0 = all), -1: any */
    int measured, met;
    const bench_result *worst;
    size_t misses;
} bench_target;

static int bench_target_covers(const bench_target *t, const bench_result *r)
{
    if (t->gpt2 ? !r->s->gpt2 : (r->s->gpt2 || r->s->n < BENCH_BIG)) return 0;
    return t->threads < 0 || r->threads == t->threads;
}

/* The ratio targets, evaluated on this run's results. */
static size_t bench_targets(const bench_run *run, bench_target *t)
{
    static const bench_target defs[] = {
        {">= 0.90 of the ceiling at >= 64M elements, 1 thread", 0.90, 0, 1, 0, 0, NULL, 0},
        {">= 0.90 of the ceiling at >= 64M elements, all threads", 0.90, 0, 0, 0, 0, NULL, 0},
        {">= 0.85 of the ceiling on the GPT-2 list", 0.85, 1, -1, 0, 0, NULL, 0},
    };
    size_t k, i;
    for (k = 0; k < sizeof defs / sizeof defs[0]; k++) {
        t[k] = defs[k];
        for (i = 0; i < run->nres; i++) {
            const bench_result *r = &run->res[i];
            if (!bench_target_covers(&t[k], r)) continue;
            t[k].measured = 1;
            if (!t[k].worst || r->ratio < t[k].worst->ratio) t[k].worst = r;
            if (!(r->ratio >= t[k].threshold)) t[k].misses++;
        }
        t[k].met = t[k].measured && t[k].misses == 0;
    }
    return k;
}

/* What a case added to the process's resident set at its peak: the peak
 * minus the resident set before its size's arrays existed (the program's
 * code and libraries, and heap that earlier cases freed but malloc kept). */
static double bench_growth(const bench_result *r)
{
    return (double)r->peak_rss - (double)r->rss_base;
}

/* The case with the most bytes of params + grads + state (the largest
 * growth among equals). */
static const bench_result *bench_largest(const bench_run *run)
{
    const bench_result *best = NULL;
    size_t i;
    for (i = 0; i < run->nres; i++) {
        const bench_result *r = &run->res[i];
        if (!r->peak_rss) continue;
        if (!best || r->min_bytes > best->min_bytes ||
            (r->min_bytes == best->min_bytes && bench_growth(r) > bench_growth(best)))
            best = r;
    }
    return best;
}

/* The bound: params + grads + state, plus 1% and 1 MiB. */
static double bench_mem_allowed(uint64_t min_bytes)
{
    return (double)min_bytes * 1.01 + 1048576.0;
}

static void bench_print_targets(const bench_run *run)
{
    bench_target t[3];
    size_t nt = bench_targets(run, t), i, j;
    const bench_result *big = bench_largest(run);
    printf("\ntargets (issue 4; see docs/PERFORMANCE.md)\n");
    for (i = 0; i < nt; i++) {
        char wthr[16];
        if (!t[i].measured) {
            printf("  %-56s not measured in this run\n", t[i].name);
            continue;
        }
        bench_threads_label(wthr, sizeof wthr, t[i].worst->threads);
        printf("  %-56s %s: worst %.2f (%s, %s, %s thread%s)\n", t[i].name, t[i].met ? "met" : "MISSED",
               t[i].worst->ratio, t[i].worst->c->spec, t[i].worst->s->label, wthr,
               t[i].worst->threads == 1 ? "" : "s");
        for (j = 0; j < run->nres && !t[i].met; j++) {
            const bench_result *r = &run->res[j];
            char thr[16];
            if (!bench_target_covers(&t[i], r) || r->ratio >= t[i].threshold) continue;
            bench_threads_label(thr, sizeof thr, r->threads);
            printf("      below: %-30s %-6s %3s thread%s  %.2f\n", r->c->spec, r->s->label, thr,
                   r->threads == 1 ? " " : "s", r->ratio);
        }
    }
    if (big) {
        char grow[32], min[32], over[32], peak[32], base[32];
        double allowed = bench_mem_allowed(big->min_bytes);
        bench_bytes_label(grow, sizeof grow, bench_growth(big));
        bench_bytes_label(min, sizeof min, (double)big->min_bytes);
        bench_bytes_label(over, sizeof over, bench_growth(big) - (double)big->min_bytes);
        bench_bytes_label(peak, sizeof peak, (double)big->peak_rss);
        bench_bytes_label(base, sizeof base, (double)big->rss_base);
        printf("  %-56s %s: peak RSS grew by %s for params+grads+state of %s (+%s, %+.2f%%; %s, %s)\n",
               "peak memory within 1% + 1 MiB of params + grads + state",
               bench_growth(big) <= allowed ? "met" : "MISSED", grow, min, over,
               100.0 * (bench_growth(big) / (double)big->min_bytes - 1.0), big->c->spec, big->s->label);
        printf("  %-56s (the process's peak RSS: %s, of which %s were resident before the case's arrays)\n", "",
               peak, base);
        if (!run->peak_resettable)
            printf("  (the peak is the whole process's: /proc/self/clear_refs could not reset it per case)\n");
    }
}

/* ---- JSON output ------------------------------------------------------------------------- */

static void bench_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void bench_json_num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.6g", v);
    else
        fputs("null", f);
}

static void bench_json_stats(FILE *f, const bench_stats *st)
{
    fprintf(f, "{\"median\": ");
    bench_json_num(f, st->med);
    fprintf(f, ", \"min\": ");
    bench_json_num(f, st->min);
    fprintf(f, ", \"max\": ");
    bench_json_num(f, st->max);
    fprintf(f, "}");
}

static void bench_json_list(FILE *f, const double *v, int n)
{
    int i;
    fputc('[', f);
    for (i = 0; i < n; i++) {
        if (i) fputs(", ", f);
        bench_json_num(f, v[i]);
    }
    fputc(']', f);
}

static void bench_json_threads(FILE *f, int threads)
{
    if (threads == 0)
        fprintf(f, "\"all\"");
    else
        fprintf(f, "%d", threads);
}

static void bench_write_json(FILE *f, const bench_opts *o, const bench_run *run)
{
    const int reps = o->reps;
    size_t i;
    const bench_result *big = bench_largest(run);
    bench_target t[3];
    size_t nt = bench_targets(run, t);
    fprintf(f, "{\n  \"tool\": \"optim bench\",\n  \"optim_version\": ");
    bench_json_str(f, optim_version_string());
    fprintf(f, ",\n  \"isa\": ");
    bench_json_str(f, optim_isa_name(o->isa));
    fprintf(f, ",\n  \"isa_default\": ");
    bench_json_str(f, optim_isa_name(optim_isa_default()));
    fprintf(f, ",\n  \"cpu\": ");
    bench_json_str(f, bench_cpu_model());
    fprintf(f, ",\n  \"cpus\": %d,\n  \"threads_all\": %d,\n  \"reps\": %d,\n  \"min_time_s\": ", bench_cpu_count(),
            bench_max_threads(), o->reps);
    bench_json_num(f, o->min_time);
    fprintf(f, ",\n  \"seed\": %llu,\n  \"load_start\": [%.2f, %.2f, %.2f],\n  \"load_end\": [%.2f, %.2f, %.2f],\n",
            (unsigned long long)o->seed, run->load_start[0], run->load_start[1], run->load_start[2],
            run->load_end[0], run->load_end[1], run->load_end[2]);
    fprintf(f, "  \"duration_s\": %.1f,\n  \"mem_available_bytes\": %llu,\n  \"rss_start_bytes\": %llu,\n",
            run->t_end - run->t_start, (unsigned long long)run->mem_start, (unsigned long long)run->rss_start);
    fprintf(f, "  \"peak_rss_per_case\": %s,\n", run->peak_resettable ? "true" : "false");

    fprintf(f, "  \"context\": [");
    for (i = 0; i < run->nctx; i++) {
        const bench_context *x = &run->ctx[i];
        double n = (double)x->s->n;
        fprintf(f, "%s\n    {\"size\": ", i ? "," : "");
        bench_json_str(f, x->s->label);
        fprintf(f, ", \"elements\": %zu, \"threads\": ", x->s->n);
        bench_json_threads(f, x->threads);
        fprintf(f, ", \"threads_used\": %d, \"iters\": %zu,\n     \"copy\": {\"bytes_per_element\": 8, \"gbs\": ",
                x->threads_used, x->iters);
        bench_json_num(f, n * 8.0 / x->copy.med / 1e9);
        fprintf(f, ", \"step_s\": ");
        bench_json_stats(f, &x->copy);
        fprintf(f, "},\n     \"triad\": {\"bytes_per_element\": 12, \"gbs\": ");
        bench_json_num(f, n * 12.0 / x->triad.med / 1e9);
        fprintf(f, ", \"step_s\": ");
        bench_json_stats(f, &x->triad);
        fprintf(f, "}}");
    }
    fprintf(f, "%s],\n", run->nctx ? "\n  " : "");

    fprintf(f, "  \"results\": [");
    for (i = 0; i < run->nres; i++) {
        const bench_result *r = &run->res[i];
        double n = (double)r->s->n;
        char rule[32];
        bench_spec_rule(r->c->spec, rule, sizeof rule);
        fprintf(f, "%s\n    {\"case\": ", i ? "," : "");
        bench_json_str(f, r->c->spec);
        fprintf(f, ", \"rule\": ");
        bench_json_str(f, rule);
        fprintf(f, ", \"size\": ");
        bench_json_str(f, r->s->label);
        fprintf(f, ", \"elements\": %zu, \"tensors\": %zu, \"threads\": ", r->s->n, r->tensors);
        bench_json_threads(f, r->threads);
        fprintf(f, ", \"threads_used\": %d,\n     \"state_arrays\": %d, \"bytes_per_element\": %.6g, \"iters\": %zu,\n",
                r->threads_used, r->c->nslots, r->bytes, r->iters);
        fprintf(f, "     \"step_s\": ");
        bench_json_stats(f, &r->rule);
        fprintf(f, ", \"runs_s\": ");
        bench_json_list(f, r->runs_rule, reps);
        fprintf(f, ", \"elements_per_s\": ");
        bench_json_num(f, n / r->rule.med);
        fprintf(f, ", \"gbs\": ");
        bench_json_num(f, n * r->bytes / r->rule.med / 1e9);
        fprintf(f, ",\n     \"ceiling\": {\"step_s\": ");
        bench_json_stats(f, &r->ceil);
        fprintf(f, ", \"runs_s\": ");
        bench_json_list(f, r->runs_ceil, reps);
        fprintf(f, ", \"elements_per_s\": ");
        bench_json_num(f, n / r->ceil.med);
        fprintf(f, ", \"gbs\": ");
        bench_json_num(f, n * r->bytes / r->ceil.med / 1e9);
        fprintf(f, "},\n     \"ratio\": ");
        bench_json_num(f, r->ratio);
        fprintf(f, ", \"ratio_min\": ");
        bench_json_num(f, r->ratio_lo);
        fprintf(f, ", \"ratio_max\": ");
        bench_json_num(f, r->ratio_hi);
        fprintf(f, ", \"min_bytes\": %llu, \"rss_base_bytes\": %llu, \"peak_rss_bytes\": %llu}",
                (unsigned long long)r->min_bytes, (unsigned long long)r->rss_base, (unsigned long long)r->peak_rss);
    }
    fprintf(f, "%s],\n", run->nres ? "\n  " : "");

    fprintf(f, "  \"skipped\": [");
    for (i = 0; i < run->nskips; i++) {
        const bench_skip *k = &run->skips[i];
        fprintf(f, "%s\n    {\"size\": ", i ? "," : "");
        bench_json_str(f, k->s->label);
        fprintf(f, ", \"case\": ");
        if (k->c)
            bench_json_str(f, k->c->spec);
        else
            fputs("null", f);
        fprintf(f, ", \"reason\": ");
        bench_json_str(f, k->reason);
        fprintf(f, "}");
    }
    fprintf(f, "%s],\n", run->nskips ? "\n  " : "");

    fprintf(f, "  \"memory\": ");
    if (big) {
        fprintf(f, "{\"case\": ");
        bench_json_str(f, big->c->spec);
        fprintf(f, ", \"size\": ");
        bench_json_str(f, big->s->label);
        fprintf(f,
                ", \"min_bytes\": %llu, \"rss_base_bytes\": %llu, \"peak_rss_bytes\": %llu, \"growth_bytes\": %.0f, "
                "\"allowed_bytes\": %.0f, \"per_case\": %s, \"met\": %s},\n",
                (unsigned long long)big->min_bytes, (unsigned long long)big->rss_base,
                (unsigned long long)big->peak_rss, bench_growth(big), bench_mem_allowed(big->min_bytes),
                run->peak_resettable ? "true" : "false",
                bench_growth(big) <= bench_mem_allowed(big->min_bytes) ? "true" : "false");
    } else {
        fprintf(f, "null,\n");
    }

    fprintf(f, "  \"targets\": [");
    for (i = 0; i < nt; i++) {
        fprintf(f, "%s\n    {\"name\": ", i ? "," : "");
        bench_json_str(f, t[i].name);
        fprintf(f, ", \"threshold\": %.2f, \"measured\": %s, \"met\": %s, \"misses\": %zu", t[i].threshold,
                t[i].measured ? "true" : "false", t[i].met ? "true" : "false", t[i].misses);
        if (t[i].worst) {
            fprintf(f, ", \"worst\": {\"case\": ");
            bench_json_str(f, t[i].worst->c->spec);
            fprintf(f, ", \"size\": ");
            bench_json_str(f, t[i].worst->s->label);
            fprintf(f, ", \"threads\": ");
            bench_json_threads(f, t[i].worst->threads);
            fprintf(f, ", \"ratio\": ");
            bench_json_num(f, t[i].worst->ratio);
            fprintf(f, "}");
        }
        fprintf(f, "}");
    }
    fprintf(f, "\n  ]\n}\n");
}

/* ---- The run ------------------------------------------------------------------------------ */

/* The tensors of one size: p and g per tensor, 64-byte aligned. */
typedef struct bench_model {
    size_t count;
    bench_shape shapes[BENCH_GPT2_TENSORS];
    size_t n[BENCH_GPT2_TENSORS];
    float *p[BENCH_GPT2_TENSORS];
    float *g[BENCH_GPT2_TENSORS];
} bench_model;

static void bench_model_shapes(const bench_size *s, bench_model *m)
{
    size_t i;
    memset(m, 0, sizeof *m);
    if (s->gpt2) {
        m->count = bench_gpt2_shapes(m->shapes);
        for (i = 0; i < m->count; i++) m->n[i] = m->shapes[i].rows * m->shapes[i].cols;
    } else {
        m->count = 1;
        snprintf(m->shapes[0].name, sizeof m->shapes[0].name, "x");
        m->shapes[0].rows = s->n;
        m->shapes[0].cols = 1;
        m->n[0] = s->n;
    }
}

static void bench_model_alloc(bench_model *m, uint64_t seed)
{
    size_t i;
    for (i = 0; i < m->count; i++) {
        m->p[i] = bench_alloc_floats(m->n[i], "parameters");
        m->g[i] = bench_alloc_floats(m->n[i], "gradients");
        bench_fill(m->p[i], m->n[i], seed * 2654435761u + 2 * i, -1.0f, 1.0f);
        bench_fill(m->g[i], m->n[i], seed * 2654435761u + 2 * i + 1, -1.0f, 1.0f);
    }
}

static void bench_model_free(bench_model *m)
{
    size_t i;
    for (i = 0; i < m->count; i++) {
        free(m->p[i]);
        free(m->g[i]);
        m->p[i] = NULL;
        m->g[i] = NULL;
    }
}

/* Keep this much memory free for the rest of the machine (it is shared). */
static int bench_fits(uint64_t need, uint64_t *avail)
{
    uint64_t a = bench_mem_available(), margin;
    *avail = a;
    if (a == 0) return 1; /* unknown: try */
    margin = a / 10 > ((uint64_t)512 << 20) ? a / 10 : ((uint64_t)512 << 20);
    return need + margin <= a;
}

static void bench_context_run(const bench_opts *o, bench_run *run, const bench_size *s)
{
    size_t n = s->n, ti;
    uint64_t need = 3u * (uint64_t)n * sizeof(float), avail;
    float *a, *b, *c;
    char need_l[32], avail_l[32];
    if (!bench_fits(need, &avail)) {
        bench_bytes_label(need_l, sizeof need_l, (double)need);
        bench_bytes_label(avail_l, sizeof avail_l, (double)avail);
        bench_add_skip(run, s, NULL, "copy and triad need %s, %s available", need_l, avail_l);
        for (ti = 0; ti < o->nthreads; ti++) bench_prog.ntask++;
        return;
    }
    a = bench_alloc_floats(n, "triad");
    b = bench_alloc_floats(n, "triad");
    c = bench_alloc_floats(n, "triad");
    bench_fill(a, n, o->seed + 11, -1.0f, 1.0f);
    bench_fill(b, n, o->seed + 12, -1.0f, 1.0f);
    bench_fill(c, n, o->seed + 13, -1.0f, 1.0f);
    for (ti = 0; ti < o->nthreads; ti++) {
        bench_pair_ctx x;
        double tc[1000], tt[1000];
        bench_context *cx;
        char what[96], thr[16];
        bench_threads_label(thr, sizeof thr, o->threads[ti]);
        snprintf(what, sizeof what, "copy and triad, %s, %s thread%s", s->label, thr, o->threads[ti] == 1 ? "" : "s");
        bench_progress_show(what);
        memset(&x, 0, sizeof x);
        x.isa = o->isa;
        x.total = n;
        x.threads = o->threads[ti];
        x.a = a;
        x.b = b;
        x.c = c;
        run->ctx = (bench_context *)bench_grow(run->ctx, &run->capctx, run->nctx + 1, sizeof *run->ctx);
        cx = &run->ctx[run->nctx++];
        cx->s = s;
        cx->threads = o->threads[ti];
        cx->threads_used = bench_threads_for(n, o->threads[ti]);
        cx->iters = bench_measure(o, &x, 2, 3, tc, tt);
        cx->copy = bench_summarize(tc, o->reps);
        cx->triad = bench_summarize(tt, o->reps);
        bench_prog.done += bench_estimate(o, n, 10.0);
        bench_prog.ntask++;
        if (!o->json) {
            bench_progress_clear();
            bench_print_context(cx);
            fflush(stdout);
        }
    }
    free(a);
    free(b);
    free(c);
}

/* Build the optimizer of case c over model m; NULL (and a message) on failure. */
/* The typed arrays of a typed case (the model's floats converted by truncation: values do not matter). */
typedef struct bench_typed {
    void *p[BENCH_GPT2_TENSORS], *g[BENCH_GPT2_TENSORS];
} bench_typed;

static void *bench_typed_copy(const float *x, size_t n, optim_dtype dt)
{
    size_t i;
    uint16_t *h;
    if (dt == OPTIM_FLOAT32) return NULL; /* the model's own array */
    h = (uint16_t *)(void *)bench_alloc_floats((n + 1) / 2, "16-bit arrays");
    for (i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        h[i] = dt == OPTIM_BFLOAT16 ? (uint16_t)(u >> 16) : (uint16_t)(0x3c00u | ((u >> 13) & 0x3ffu));
    }
    return h;
}

/* The shape Adafactor's tensor i gets (0: none, unfactored; 2: dims): with 1d none; one tensor of n elements
 * n/1024 x 1024 (1 x n when 1024 does not divide n); the GPT-2 list's matrices their own (rows x cols), its
 * vectors none. */
static size_t bench_af_shape(const bench_case *c, const bench_model *m, const bench_size *s, size_t i,
                             int64_t dims[2])
{
    if (c->af1d) return 0;
    if (s->gpt2) {
        if (m->shapes[i].cols <= 1) return 0;
        dims[0] = (int64_t)m->shapes[i].rows;
        dims[1] = (int64_t)m->shapes[i].cols;
        return 2;
    }
    dims[0] = m->n[i] % 1024 == 0 ? (int64_t)(m->n[i] / 1024) : 1;
    dims[1] = (int64_t)m->n[i] / dims[0];
    return 2;
}

static optim *bench_make_opt(const bench_case *c, const bench_model *m, const bench_size *s, optim_isa isa,
                             const bench_typed *t)
{
    optim *opt = NULL;
    size_t i, group;
    int rc = optim_create(&opt, c->hp.rule);
    if (rc != OPTIM_OK) {
        fprintf(stderr, "optim bench: optim_create(%s): %s\n", c->spec, optim_strerror(rc));
        exit(1);
    }
    if (optim_set_isa(opt, isa) != OPTIM_OK || optim_add_group(opt, &c->hp, &group) != OPTIM_OK) goto fail;
    if (c->clip > 0.0 && optim_set_clip_grad_norm(opt, c->clip, 2.0) != OPTIM_OK) goto fail;
    if (optim_set_nonfinite(opt, c->nonfinite) != OPTIM_OK) goto fail;
    if (c->stats && optim_set_stats(opt, 1) != OPTIM_OK) goto fail;
    if (c->ema && optim_set_ema(opt, c->ema, 0) != OPTIM_OK) goto fail;
    for (i = 0; i < m->count; i++) {
        if (c->typed || c->q8) {
            if (optim_add_param_ex(opt, group, t->p[i] ? t->p[i] : m->p[i], c->pdt, t->g[i] ? t->g[i] : m->g[i],
                                   c->gdt, m->n[i], c->sdt, c->flags, m->shapes[i].name, NULL) != OPTIM_OK)
                goto fail;
        } else if (optim_add_param(opt, group, m->p[i], m->g[i], m->n[i], m->shapes[i].name, NULL) != OPTIM_OK) {
            goto fail;
        }
        if (c->af) {
            int64_t dims[2];
            size_t nd = bench_af_shape(c, m, s, i, dims);
            if (nd && optim_param_set_shape(opt, i, nd, dims) != OPTIM_OK) goto fail;
        }
    }
    /* Time the steady state: RAdam's first steps skip the adaptive term, and
     * bias corrections are near 1 late in training. SGD keeps no step. */
    for (i = 0; i < m->count; i++)
        if (optim_rule_has_step(c->hp.rule) && optim_param_set_step(opt, i, 1000) != OPTIM_OK) goto fail;
    return opt;
fail:
    bench_progress_clear();
    fprintf(stderr, "optim bench: %s: %s\n", c->spec, optim_errmsg(opt));
    exit(1);
}

static void bench_case_run(const bench_opts *o, bench_run *run, const bench_size *s, const bench_model *m,
                           const bench_case *c, uint64_t rss_base)
{
    static bench_span spans[BENCH_GPT2_TENSORS], pass1[BENCH_GPT2_TENSORS], pass2[BENCH_GPT2_TENSORS];
    static float *ema_x[BENCH_GPT2_TENSORS]; /* the ceiling's stream for the average (ema) */
    static bench_af_lists af;
    double bytes = c->bytes;
    bench_typed typed;
    /* State bytes: 4 per element and slot (or the state type's width), or an int8_block code and its share of a
     * scale; with int8 state a bfloat16 gradient copy (the model's gradients are float32) counts as state here. */
    uint64_t state = c->q8 ? (uint64_t)c->nslots * OPTIM_INT8_BLOCK_BYTES(s->n) + (c->gbf16 ? (uint64_t)s->n * 2 : 0)
                           : (uint64_t)c->nslots * s->n * (c->typed ? optim_dtype_size(c->sdt) : sizeof(float)),
             avail;
    uint64_t min_bytes = (uint64_t)(2 + c->nslots) * s->n * sizeof(float), peak, unused = 0;
    optim *opt;
    size_t i, ti, first = run->nres;
    if (c->q8 && (c->flags & OPTIM_PARAM_MASTER)) /* the master and its bfloat16 copy, g (float32), the state */
        min_bytes = (uint64_t)s->n * (4 + 2 + sizeof(float)) + state;
    else if (c->q8 && c->pbf16) /* p (bfloat16), g (float32), the state (with the bfloat16 g) */
        min_bytes = (uint64_t)s->n * (2 + sizeof(float)) + state;
    else if (c->q8) /* p and g (float32), the state */
        min_bytes = (uint64_t)2 * s->n * sizeof(float) + state;
    if (c->typed) /* the master (with the user's copy), the state, the gradient, in their widths */
        min_bytes = (uint64_t)s->n * ((c->flags & OPTIM_PARAM_MASTER) ? 4 + optim_dtype_size(c->pdt)
                                                                         : optim_dtype_size(c->pdt)) +
                    state + (uint64_t)s->n * optim_dtype_size(c->gdt);
    if (c->af) {
        /* Adafactor: a factored tensor's state is its two factors (R + C elements), another's the variance (n);
         * bytes per element are each tensor's kind's (bench_af_bytes), weighted by its elements. */
        double moved = 0.0;
        state = 0;
        for (i = 0; i < m->count; i++) {
            int64_t dims[2];
            const size_t nd = bench_af_shape(c, m, s, i, dims);
            state += (nd ? (uint64_t)(dims[0] + dims[1]) : (uint64_t)m->n[i]) * sizeof(float);
            moved += (double)m->n[i] * bench_af_bytes(c, nd != 0);
        }
        min_bytes = (uint64_t)2 * s->n * sizeof(float) + state;
        bytes = moved / (double)s->n;
    }
    if (!bench_fits(state, &avail)) {
        char need_l[32], avail_l[32];
        bench_bytes_label(need_l, sizeof need_l, (double)state);
        bench_bytes_label(avail_l, sizeof avail_l, (double)avail);
        bench_add_skip(run, s, c, "its state needs %s, %s available", need_l, avail_l);
        if (!o->json) {
            bench_progress_clear();
            printf("  %-30s skipped: its state needs %s, %s available\n", c->spec, need_l, avail_l);
        }
        bench_prog.ntask += (int)o->nthreads;
        return;
    }
    /* The peak from here on is this case's: p and g (already resident),
     * the optimizer's state and whatever else the step needs (earlier cases'
     * freed heap handed back first, so that it is not counted here). */
    bench_heap_release();
    bench_rss_peak_reset();
    memset(&typed, 0, sizeof typed);
    for (i = 0; (c->typed || c->q8) && i < m->count; i++) {
        typed.p[i] = bench_typed_copy(m->p[i], m->n[i], c->pdt);
        typed.g[i] = bench_typed_copy(m->g[i], m->n[i], c->gdt);
        /* The model's float32 arrays a typed case replaces by its copies are the bench's source data,
         * resident before the case's arrays: not the case's (its min_bytes counts the copies; an int8
         * case's min_bytes counts the float32 gradient too). */
        if (typed.p[i]) unused += (uint64_t)m->n[i] * sizeof(float);
        if (typed.g[i] && !c->q8) unused += (uint64_t)m->n[i] * sizeof(float);
    }
    opt = bench_make_opt(c, m, s, o->isa, &typed);
    for (i = 0; c->typed && i < m->count; i++) {
        /* The ceiling's streams: x[0..k32) float (the master or a float32 parameter, then float32 state),
         * x[k32..) 16-bit (the parameter without a master, then 16-bit state); the copy written from x[0]. */
        int sl, j32 = 0, j16 = 0;
        float *master = NULL;
        memset(&spans[i], 0, sizeof spans[i]);
        spans[i].n = m->n[i];
        spans[i].start = i ? spans[i - 1].start + spans[i - 1].n : 0;
        spans[i].g = typed.g[i] ? (const float *)typed.g[i] : m->g[i];
        if (c->flags & OPTIM_PARAM_MASTER) {
            if (optim_param_master_data(opt, i, &master) != OPTIM_OK) {
                bench_progress_clear();
                fprintf(stderr, "optim bench: %s: %s\n", c->spec, optim_errmsg(opt));
                exit(1);
            }
            spans[i].x[j32++] = master;
            spans[i].w16 = (uint16_t *)typed.p[i];
        } else if (c->pdt == OPTIM_FLOAT32) {
            spans[i].x[j32++] = m->p[i];
        } else {
            spans[i].x[c->k32 + j16++] = (float *)typed.p[i];
        }
        for (sl = 0; sl < OPTIM_MAX_SLOTS; sl++) {
            void *data = NULL;
            if (optim_state_slot_data(opt, i, sl, &data, NULL, NULL) != OPTIM_OK || !data) continue;
            if (c->sdt == OPTIM_FLOAT32)
                spans[i].x[j32++] = (float *)data;
            else
                spans[i].x[c->k32 + j16++] = (float *)data;
        }
        if (j32 != c->k32 || j16 != c->k16) {
            bench_progress_clear();
            fprintf(stderr, "optim bench: %s: the optimizer's streams (%d float, %d 16-bit) are not the %d and %d "
                            "counted\n", c->spec, j32, j16, c->k32, c->k16);
            exit(1);
        }
    }
    for (i = 0; c->af && i < m->count; i++) {
        /* Adafactor: spans (p, g: the pre-pass reads g) and its passes' lists (bench_af_lists). */
        int64_t dims[2];
        void *var = NULL;
        const int fac = bench_af_shape(c, m, s, i, dims) != 0;
        bench_span *sp;
        memset(&spans[i], 0, sizeof spans[i]);
        spans[i].x[0] = m->p[i];
        spans[i].g = m->g[i];
        spans[i].n = m->n[i];
        spans[i].start = i ? spans[i - 1].start + spans[i - 1].n : 0;
        if (i == 0) {
            memset(&af, 0, sizeof af);
            af.kf = af.ku = c->ema ? 2 : 1;
        }
        if (c->ema) {
            ema_x[i] = bench_alloc_floats(m->n[i] ? m->n[i] : 1, c->spec);
            memset(ema_x[i], 0, (m->n[i] ? m->n[i] : 1) * sizeof(float));
        }
        {
            /* The optimizer's state must be the one counted: the factors of the shape given, or the variance. */
            size_t len[3] = {0, 0, 0};
            int sl;
            for (sl = 0; sl < 3; sl++)
                if (optim_state_slot_len(opt, i, sl, &len[sl]) != OPTIM_OK) len[sl] = (size_t)-1;
            if (fac ? len[0] != (size_t)dims[0] || len[1] != (size_t)dims[1] || len[2] != 0
                    : len[0] != 0 || len[1] != 0 || len[2] != m->n[i]) {
                bench_progress_clear();
                fprintf(stderr, "optim bench: %s: tensor %zu '%s' holds state of %zu, %zu and %zu elements, not "
                        "those of the %s counted\n", c->spec, i, m->shapes[i].name, len[0], len[1], len[2],
                        fac ? "factored shape" : "variance");
                exit(1);
            }
        }
        if (fac) {
            sp = &af.f[af.nf];
            *sp = spans[i];
            sp->start = af.totf;
            sp->x[1] = ema_x[i];
            af.fp[af.nf] = *sp;
            af.fp[af.nf].g = m->p[i];
            af.nf++;
            af.totf += m->n[i];
            continue;
        }
        if (optim_state_slot_data(opt, i, 2, &var, NULL, NULL) != OPTIM_OK || !var) {
            bench_progress_clear();
            fprintf(stderr, "optim bench: %s: tensor %zu has no variance (%s)\n", c->spec, i, optim_errmsg(opt));
            exit(1);
        }
        sp = &af.ua[af.nu];
        memset(sp, 0, sizeof *sp);
        sp->n = m->n[i];
        sp->start = af.totu;
        sp->x[0] = (float *)var;
        sp->g = m->g[i];
        sp->r = m->p[i];
        af.ub[af.nu] = *sp;
        af.ub[af.nu].x[0] = NULL;
        af.ub[af.nu].r = (const float *)var;
        af.uc[af.nu] = af.ub[af.nu];
        af.uc[af.nu].x[0] = m->p[i];
        af.uc[af.nu].x[1] = ema_x[i];
        af.nu++;
        af.totu += m->n[i];
    }
    if (c->af) {
        /* The ceiling must move the bytes counted: run it once (a first touch) and compare. */
        bench_pair_ctx x;
        double moved;
        memset(&x, 0, sizeof x);
        x.isa = o->isa;
        x.threads = o->threads[0];
        x.af = &af;
        moved = bench_af_ceiling(&x) + (c->prepass ? 4.0 * (double)s->n : 0.0);
        if (fabs(moved - bytes * (double)s->n) > 1e-9 * moved) {
            bench_progress_clear();
            fprintf(stderr, "optim bench: %s: the ceiling moves %.4f bytes per element, the case counts %.4f\n",
                    c->spec, moved / (double)s->n, bytes);
            exit(1);
        }
    }
    for (i = 0; !c->typed && !c->af && i < m->count; i++) {
        /* Float32 or int8 state (q8: the ceiling moves one byte per element of each slot); the parameter is
         * the model's float32 array or, in the offload step, the fp32 master with the bfloat16 copy w16. */
        int sl, j = 1;
        memset(&spans[i], 0, sizeof spans[i]);
        spans[i].x[0] = m->p[i];
        if (c->q8 && (c->flags & OPTIM_PARAM_MASTER)) {
            if (optim_param_master_data(opt, i, &spans[i].x[0]) != OPTIM_OK) {
                bench_progress_clear();
                fprintf(stderr, "optim bench: %s: %s\n", c->spec, optim_errmsg(opt));
                exit(1);
            }
            spans[i].w16 = (uint16_t *)typed.p[i];
        } else if (c->pbf16) {
            spans[i].x[0] = NULL;
            spans[i].p16 = (uint16_t *)typed.p[i];
        }
        spans[i].g = c->gbf16 ? NULL : m->g[i];
        spans[i].g16 = c->gbf16 ? (const uint16_t *)typed.g[i] : NULL;
        spans[i].n = m->n[i];
        spans[i].start = i ? spans[i - 1].start + spans[i - 1].n : 0;
        for (sl = 0; sl < OPTIM_MAX_SLOTS; sl++) {
            void *data = NULL;
            optim_dtype dt;
            if (optim_state_slot_data(opt, i, sl, &data, &dt, NULL) != OPTIM_OK || !data) continue;
            if (c->q8)
                spans[i].q[j++ - 1] = (uint8_t *)data; /* the ceiling moves one byte per element of each slot */
            else
                spans[i].x[j++] = (float *)data;
        }
        if (c->ema) {
            /* The average's stream in the ceiling: an array of the same size (the optimizer's is not exposed). */
            ema_x[i] = bench_alloc_floats(m->n[i] ? m->n[i] : 1, c->spec);
            memset(ema_x[i], 0, (m->n[i] ? m->n[i] : 1) * sizeof(float));
            spans[i].x[j++] = ema_x[i];
        }
        if (j != c->k) {
            bench_progress_clear();
            fprintf(stderr, "optim bench: %s: the optimizer has %d state arrays, optim_hparams_slots says %d\n",
                    c->spec, j - 1, c->nslots);
            exit(1);
        }
    }
    if (c->trust) {
        /* The two passes' streams (bench_case's trust): LAMB pass 1 {m, v | g, p}, pass 2 {p | m, v}; LARS pass 1
         * {| g, p}. */
        for (i = 0; i < m->count; i++) {
            pass1[i] = pass2[i] = spans[i];
            memset(pass1[i].x, 0, sizeof pass1[i].x);
            memset(pass2[i].x, 0, sizeof pass2[i].x);
            pass1[i].r = spans[i].x[0];
            if (c->trust == OPTIM_LAMB) {
                pass1[i].x[0] = spans[i].x[1];
                pass1[i].x[1] = spans[i].x[2];
                pass2[i].x[0] = spans[i].x[0];
                pass2[i].g = spans[i].x[1];
                pass2[i].r = spans[i].x[2];
            }
        }
    }
    for (ti = 0; ti < o->nthreads; ti++) {
        bench_pair_ctx x;
        double tc[1000], tr[1000], pr[1000], lo = INFINITY, hi = 0.0;
        bench_result *r;
        char what[192], thr[16];
        int k;
        bench_threads_label(thr, sizeof thr, o->threads[ti]);
        snprintf(what, sizeof what, "%s, %s, %s thread%s", c->spec, s->label, thr, o->threads[ti] == 1 ? "" : "s");
        bench_progress_show(what);
        if (optim_set_threads(opt, o->threads[ti]) != OPTIM_OK) {
            bench_progress_clear();
            fprintf(stderr, "optim bench: optim_set_threads(%d): %s\n", o->threads[ti], optim_errmsg(opt));
            exit(1);
        }
        memset(&x, 0, sizeof x);
        x.opt = opt;
        x.isa = o->isa;
        x.k = c->k;
        x.q8 = c->q8;
        x.prepass = c->prepass;
        x.spans = spans;
        x.count = m->count;
        x.total = s->n;
        x.threads = o->threads[ti];
        x.tc = c->typed ? c : NULL;
        x.trust = c->trust;
        x.norms = c->norms;
        x.pass1 = pass1;
        x.pass2 = pass2;
        x.af = c->af ? &af : NULL;
        run->res = (bench_result *)bench_grow(run->res, &run->capres, run->nres + 1, sizeof *run->res);
        r = &run->res[run->nres++];
        memset(r, 0, sizeof *r);
        r->c = c;
        r->s = s;
        r->threads = o->threads[ti];
        r->threads_used = bench_threads_for(s->n, o->threads[ti]);
        r->tensors = m->count;
        r->bytes = bytes;
        r->min_bytes = min_bytes;
        r->rss_base = rss_base + unused;
        r->iters = bench_measure(o, &x, 0, 1, tc, tr);
        r->ceil = bench_summarize(tc, o->reps);
        r->rule = bench_summarize(tr, o->reps);
        /* The ratio is the median over pairs of adjacent runs, not the ratio
         * of the two medians: on a shared machine (or a VM whose memory
         * bandwidth moves with its vCPUs' placement) conditions change
         * between runs, and a pair sees the same conditions. */
        for (k = 0; k < o->reps; k++) {
            pr[k] = tc[k] / tr[k];
            lo = fmin(lo, pr[k]);
            hi = fmax(hi, pr[k]);
        }
        r->ratio = bench_summarize(pr, o->reps).med;
        r->ratio_lo = lo;
        r->ratio_hi = hi;
        r->runs_ceil = (double *)malloc((size_t)o->reps * sizeof(double));
        r->runs_rule = (double *)malloc((size_t)o->reps * sizeof(double));
        if (!r->runs_ceil || !r->runs_rule) {
            fprintf(stderr, "\noptim bench: out of memory\n");
            exit(1);
        }
        memcpy(r->runs_ceil, tc, (size_t)o->reps * sizeof(double));
        memcpy(r->runs_rule, tr, (size_t)o->reps * sizeof(double));
        bench_prog.done += bench_estimate(o, s->n, bytes);
        bench_prog.ntask++;
        if (!o->json) {
            bench_progress_clear();
            bench_print_result(r);
            fflush(stdout);
        }
    }
    peak = bench_rss_peak();
    for (i = first; i < run->nres; i++) run->res[i].peak_rss = peak;
    optim_free(opt);
    for (i = 0; i < m->count; i++) {
        free(typed.p[i]);
        free(typed.g[i]);
        free(ema_x[i]);
        ema_x[i] = NULL;
    }
}

int optim_bench_main(int argc, char **argv)
{
    bench_opts *o;
    bench_run run;
    size_t si, ci;
    int rc;
    char mem_l[32];
    if (argc >= 2 && strcmp(argv[1], "--torch") == 0) return bench_torch_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "--muon") == 0) return bench_muon_main(argc - 1, argv + 1);
    o = (bench_opts *)calloc(1, sizeof *o);
    if (!o) return 1;
    rc = bench_parse_args(argc, argv, o);
    if (rc) {
        free(o);
        return rc == 1 ? 0 : 2;
    }
    memset(&run, 0, sizeof run);
    run.t_start = bench_now();
    run.rss_start = bench_rss_now();
    run.mem_start = bench_mem_available();
    run.peak_resettable = bench_rss_peak_reset();
    bench_loadavg(run.load_start);

    memset(&bench_prog, 0, sizeof bench_prog);
    bench_prog.on = !o->quiet;
    bench_prog.tty = isatty(2);
    bench_prog.t0 = run.t_start;
    for (si = 0; si < o->nsizes; si++) {
        if (o->context) {
            bench_prog.ntasks += (int)o->nthreads;
            bench_prog.total += (double)o->nthreads * bench_estimate(o, o->sizes[si].n, 10.0);
        }
        for (ci = 0; ci < o->ncases; ci++) {
            bench_prog.ntasks += (int)o->nthreads;
            bench_prog.total += (double)o->nthreads * bench_estimate(o, o->sizes[si].n, o->cases[ci].bytes);
        }
    }

    if (!o->json) {
        bench_bytes_label(mem_l, sizeof mem_l, (double)run.mem_start);
        printf("optim bench: optim %s, CPU path %s (library default %s; the ceilings are compiled for it)\n",
               optim_version_string(), optim_isa_name(o->isa), optim_isa_name(optim_isa_default()));
        printf("cpu: %s, %d logical CPUs, all threads = %d; %s available\n", bench_cpu_model(), bench_cpu_count(),
               bench_max_threads(), mem_l);
        printf("load average at start: %.2f %.2f %.2f\n", run.load_start[0], run.load_start[1], run.load_start[2]);
        printf("each number: median of %d runs after a warm-up, a run repeating the step for >= %g s; spread = "
               "(max - min) / median of the rule's and the ceiling's runs\n",
               o->reps, o->min_time);
        printf("ratio: the median over the runs of (ceiling run time / rule run time), each ceiling run just "
               "before its rule run;\nthe ceiling moves the rule's bytes over the same arrays with trivial "
               "arithmetic\n");
        fflush(stdout);
    }

    for (si = 0; si < o->nsizes; si++) {
        const bench_size *s = &o->sizes[si];
        bench_model *m = (bench_model *)calloc(1, sizeof *m);
        uint64_t pg = 2u * (uint64_t)s->n * sizeof(float), avail, rss_base;
        if (!m) return 1;
        bench_model_shapes(s, m);
        if (!bench_fits(pg, &avail)) {
            char need_l[32], avail_l[32];
            bench_bytes_label(need_l, sizeof need_l, (double)pg);
            bench_bytes_label(avail_l, sizeof avail_l, (double)avail);
            bench_add_skip(&run, s, NULL, "parameters and gradients need %s, %s available",
                           need_l, avail_l);
            if (!o->json) {
                bench_progress_clear();
                printf("\n== %s: skipped: parameters and gradients need %s, %s available\n", s->label, need_l,
                       avail_l);
            }
            bench_prog.ntask += (int)(o->nthreads * (o->ncases + (o->context ? 1 : 0)));
            free(m);
            continue;
        }
        if (!o->json) {
            bench_progress_clear();
            bench_print_size_header(s, m->count);
        }
        if (o->context) bench_context_run(o, &run, s);
        bench_heap_release(); /* the previous size's arrays, freed: not resident in the base */
        rss_base = bench_rss_now();
        bench_model_alloc(m, o->seed + si);
        for (ci = 0; ci < o->ncases; ci++) bench_case_run(o, &run, s, m, &o->cases[ci], rss_base);
        bench_model_free(m);
        free(m);
    }
    bench_progress_clear();
    run.t_end = bench_now();
    bench_loadavg(run.load_end);
    if (o->json) {
        bench_write_json(stdout, o, &run);
    } else {
        printf("\nload average at end: %.2f %.2f %.2f; %.0f s\n", run.load_end[0], run.load_end[1], run.load_end[2],
               run.t_end - run.t_start);
        if (run.nskips) {
            printf("skipped:\n");
            for (si = 0; si < run.nskips; si++)
                printf("  %s%s%s: %s\n", run.skips[si].s->label, run.skips[si].c ? " " : "",
                       run.skips[si].c ? run.skips[si].c->spec : "", run.skips[si].reason);
        }
        bench_print_targets(&run);
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "optim bench: writing the results failed\n");
        return 1;
    }
    for (si = 0; si < run.nres; si++) {
        free(run.res[si].runs_ceil);
        free(run.res[si].runs_rule);
    }
    free(run.res);
    free(run.ctx);
    free(run.skips);
    free(o);
    return 0;
}
