/* lab_main.c: `optim lab`: the command line, the run directory, the
 * summary and its metadata, the renderer, the final table. */
#define _GNU_SOURCE /* readlink, setenv, mkdtemp-free helpers */
#include "cli.h"
#include "lab.h"

#include <cblas.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#ifndef OPTIM_LAB_SOURCE_DIR
#define OPTIM_LAB_SOURCE_DIR ""
#endif

/* What an experiment accepts besides --seed, --out, --threads, --quick. */
enum { ACCEPT_OPTIMIZERS = 1, ACCEPT_EPOCHS = 2, ACCEPT_TUNE = 4, ACCEPT_DATA = 8 };

typedef struct experiment {
    const char *name;   /* command-line name */
    const char *key;    /* its object in summary.json */
    const char *title;
    int in_default;     /* part of the default report */
    unsigned accepts;
    lab_experiment_fn run;
    const char *about;  /* one line for --list */
} experiment;

static const experiment experiments[] = {
    {"trajectories", "trajectories", "Trajectories on 2-D surfaces", 1, ACCEPT_OPTIMIZERS | ACCEPT_TUNE,
     lab_exp_trajectories, "every optimizer's path on six classic 2-D surfaces"},
    {"sam", "sam", "GD vs SAM: sharp and flat minima", 1, 0, lab_exp_sam,
     "the seed slides' GD-vs-SAM figure and its sharpness proxy"},
    {"adagrad-stall", "adagrad_stall", "AdaGrad's vanishing learning rate", 1, 0, lab_exp_adagrad_stall,
     "effective per-parameter learning rates over a long noisy run"},
    {"bias-correction", "bias_correction", "Adam's bias correction", 1, 0, lab_exp_bias_correction,
     "the seed's (1 - beta1^t) table and the implicit warm-up it implies"},
    {"units", "units", "AdaDelta's units argument", 1, 0, lab_exp_units,
     "the same problem in parameters 1000x larger: whose path changes?"},
    {"fashion-mnist", "fashion_mnist", "An MLP on Fashion-MNIST", 1, ACCEPT_OPTIMIZERS | ACCEPT_EPOCHS | ACCEPT_DATA,
     lab_exp_fashion_mnist, "every optimizer (and SAM) training a ReLU MLP"},
    {"adadelta-momentum", "adadelta_momentum", "AdaDelta + momentum", 1, ACCEPT_EPOCHS | ACCEPT_DATA,
     lab_exp_adadelta_momentum, "the seed's question: why did AdaDelta + momentum never catch on?"},
    {"bias-ablation", "bias_ablation", "Bias correction vs warm-up + cosine", 0, ACCEPT_EPOCHS | ACCEPT_DATA,
     lab_exp_bias_ablation, "Adam with/without bias correction x schedule x betas x lr x seeds (long)"},
    {"precision", "precision", "Reduced precision: what it costs in accuracy", 1, ACCEPT_EPOCHS | ACCEPT_DATA,
     lab_exp_precision, "Adam in fp32, bf16 (master / stochastic rounding), int8 state: MNIST and a long run"},
    {"modern", "modern", "Today's rules: Lion, LAMB, LARS, ... against AdamW", 0, ACCEPT_EPOCHS | ACCEPT_DATA,
     lab_exp_modern, "issue 13's rules on the surfaces and the MLP, lr tuned on validation, 3 seeds (long)"},
};
#define NEXP (sizeof experiments / sizeof experiments[0])

static void usage(FILE *f)
{
    fprintf(f,
            "usage: optim lab [<experiment>] [options]   run the default report, or one experiment\n"
            "       optim lab --list                     list the experiments\n"
            "       optim lab render <dir>               (re)render figures and report.html of a run\n"
            "\n"
            "options:\n"
            "  --out DIR          write the run here (default runs/<experiment-or-default>-<timestamp>);\n"
            "                     DIR must not exist or be an empty directory; runs started in the\n"
            "                     same second get runs/<name>-<timestamp>-2, -3, ...\n"
            "  --optimizers a,b   optimizers for trajectories and fashion-mnist (see --list)\n"
            "  --epochs N         epochs of the Fashion-MNIST experiments\n"
            "  --seed S           seed of every random choice (default 1)\n"
            "  --tune             trajectories: choose each learning rate by a grid search\n"
            "  --threads N        threads for OpenBLAS's matrix products (default: all cores)\n"
            "  --dataset NAME     fashion-mnist or digits (default fashion-mnist; digits if it is absent and\n"
            "                     no --data is given, said on the terminal and in the report)\n"
            "  --data DIR         where Fashion-MNIST's IDX files are (default $OPTIM_LAB_FASHION_DIR, else\n"
            "                     " LAB_FASHION_DIR "); a DIR without them is an error;\n"
            "                     the digits file: $OPTIM_LAB_DIGITS, else\n"
            "                     " LAB_DIGITS_CSV "\n"
            "  --quick            tiny configuration for smoke tests (numbers are not meaningful)\n"
            "  --distributed      fashion-mnist only, under mpirun -np K: train data parallel over the K ranks\n"
            "                     with liboptim_mpi (each rank a slice of every batch), then the same runs in one\n"
            "                     process for comparison; summary.json gets a \"distributed\" object\n"
            "  --zero S           with --distributed: 0 plain data parallel, 1 ZeRO-1, 2 ZeRO-2 (default 2)\n"
            "  --no-render        write the data only (render later with optim lab render DIR)\n"
            "  --help             this text\n");
}

static void list_experiments(void)
{
    size_t i;
    printf("experiments (* = in the default report):\n");
    for (i = 0; i < NEXP; i++)
        printf("  %c %-18s %s\n", experiments[i].in_default ? '*' : ' ', experiments[i].name, experiments[i].about);
    printf("\noptimizers:\n");
    for (i = 0; i < lab_optimizer_count; i++)
        printf("    %-18s %s\n", lab_optimizers[i].name, lab_optimizers[i].label);
}

static const experiment *find_experiment(const char *name)
{
    size_t i;
    for (i = 0; i < NEXP; i++)
        if (strcmp(experiments[i].name, name) == 0) return &experiments[i];
    return NULL;
}

/* ---- Files and directories ------------------------------------------------------ */

FILE *lab_csv_open(lab_ctx *ctx, const char *name, const char *header)
{
    char *path = lab_sprintf("%s/%s", ctx->dir, name);
    FILE *f;
    lab_json *files;
    if (ctx->rank != 0) {
        /* --distributed: rank 0 writes the run; the others compute the same. */
        free(path);
        path = lab_xstrdup("/dev/null");
    }
    f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "\noptim lab: cannot write %s: %s\n", path, strerror(errno));
        exit(1);
    }
    free(path);
    fprintf(f, "%s\n", header);
    files = lab_json_get(ctx->exp, "files");
    if (!files) files = lab_json_put(ctx->exp, "files", lab_json_array());
    lab_json_push(files, lab_json_str(name));
    return f;
}

void lab_csv_close(lab_ctx *ctx, FILE *f, const char *name)
{
    if (ferror(f) | fclose(f)) {
        fprintf(stderr, "\noptim lab: write error on %s/%s\n", ctx->dir, name);
        exit(1);
    }
}

/* Write the summary to a temporary name, then rename: a reader never sees
 * half a file. */
static int write_summary(const lab_ctx *ctx)
{
    char *tmp = lab_sprintf("%s/.summary.json.tmp", ctx->dir), *path = lab_sprintf("%s/summary.json", ctx->dir);
    FILE *f = fopen(tmp, "w");
    int rc = -1;
    if (f) {
        rc = lab_json_write(ctx->summary, f);
        if (fflush(f) != 0 || fsync(fileno(f)) != 0) rc = -1;
        if (fclose(f) != 0) rc = -1;
        if (rc == 0 && rename(tmp, path) != 0) rc = -1;
    }
    if (rc != 0) fprintf(stderr, "optim lab: cannot write %s: %s\n", path, strerror(errno));
    free(tmp);
    free(path);
    return rc;
}

void lab_finding(lab_ctx *ctx, const char *claim, int held, const char *statement)
{
    lab_json *f = lab_json_put(ctx->exp, "finding", lab_json_object());
    lab_json_set_str(f, "claim", claim);
    lab_json_put(f, "held", held < 0 ? lab_json_null() : lab_json_bool(held));
    lab_json_set_str(f, "statement", statement);
}

/* ---- Optimizer selection -------------------------------------------------------- */

static int name_in_list(const char *name, size_t len, const char *list)
{
    const char *p = list;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n == len && strncmp(p, name, len) == 0) return 1;
        if (!comma) break;
        p = comma + 1;
    }
    return 0;
}

size_t lab_selected_optimizers(lab_ctx *ctx, const char *defaults, const lab_optimizer **out, size_t max)
{
    const char *list = ctx->opt.optimizers ? ctx->opt.optimizers : defaults;
    const char *allowed = ctx->allowed && *ctx->allowed ? ctx->allowed : defaults;
    const char *p = list;
    size_t n = 0;
    while (*p && n < max) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        size_t i;
        for (i = 0; i < lab_optimizer_count; i++)
            if (strlen(lab_optimizers[i].name) == len && strncmp(lab_optimizers[i].name, p, len) == 0 &&
                name_in_list(p, len, allowed)) {
                size_t k;
                int dup = 0;
                for (k = 0; k < n; k++) dup |= out[k] == &lab_optimizers[i];
                if (!dup) out[n++] = &lab_optimizers[i];
            }
        if (!comma) break;
        p = comma + 1;
    }
    return n;
}

/* Optimizers each experiment can run (checked before anything runs). */
static const char *allowed_optimizers(const experiment *e)
{
    if (strcmp(e->name, "trajectories") == 0)
        return "sgd,momentum,sam,adagrad,rmsprop,adadelta,adam,adamw,radam,nadam,adabound,adadelta-momentum,"
               "rmsprop-momentum";
    if (strcmp(e->name, "fashion-mnist") == 0)
        return "sgd,momentum,adagrad,rmsprop,adadelta,adam,adamw,radam,nadam,adabound,sam,adadelta-momentum,"
               "rmsprop-momentum";
    return "";
}

/* ---- Metadata ------------------------------------------------------------------- */

static void read_first_line(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "r");
    buf[0] = '\0';
    if (!f) return;
    if (fgets(buf, (int)n, f)) buf[strcspn(buf, "\r\n")] = '\0';
    fclose(f);
}

/* The checkout's commit, read from .git without running git. */
static void git_commit(char *buf, size_t n)
{
    char head[256], path[PATH_MAX];
    buf[0] = '\0';
    if (!*OPTIM_LAB_SOURCE_DIR) return;
    snprintf(path, sizeof path, "%s/.git/HEAD", OPTIM_LAB_SOURCE_DIR);
    read_first_line(path, head, sizeof head);
    if (strncmp(head, "ref: ", 5) == 0) {
        FILE *f;
        char line[512];
        snprintf(path, sizeof path, "%s/.git/%s", OPTIM_LAB_SOURCE_DIR, head + 5);
        read_first_line(path, buf, n);
        if (buf[0]) return;
        snprintf(path, sizeof path, "%s/.git/packed-refs", OPTIM_LAB_SOURCE_DIR);
        f = fopen(path, "r");
        if (!f) return;
        while (fgets(line, sizeof line, f)) {
            line[strcspn(line, "\r\n")] = '\0';
            if (strlen(line) > 41 && strcmp(line + 41, head + 5) == 0) {
                snprintf(buf, n, "%.40s", line);
                break;
            }
        }
        fclose(f);
    } else {
        snprintf(buf, n, "%s", head);
    }
}

static void cpu_model(char *buf, size_t n)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    snprintf(buf, n, "unknown");
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *colon = strchr(line, ':');
            if (colon) {
                colon++;
                while (*colon == ' ' || *colon == '\t') colon++;
                colon[strcspn(colon, "\r\n")] = '\0';
                snprintf(buf, n, "%s", colon);
            }
            break;
        }
    }
    fclose(f);
}

/* The compiler with its name: __VERSION__ alone is "12.2.0" for GCC. */
static const char *compiler_name(void)
{
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#elif defined(__VERSION__)
    return __VERSION__;
#else
    return "unknown";
#endif
}

static void fill_meta(lab_ctx *ctx, int argc, char **argv, const char *run_name)
{
    lab_json *meta = lab_json_put(ctx->summary, "meta", lab_json_object()), *args, *opts;
    struct utsname un;
    char buf[512], date[64];
    time_t now = time(NULL);
    struct tm tm;
    int i;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &tm);
    lab_json_set_str(meta, "run", run_name);
    lab_json_set_str(meta, "started", date);
    lab_json_set_str(meta, "optim_version", optim_version_string());
    lab_json_set_str(meta, "optim_header_version", OPTIM_VERSION_STRING);
    git_commit(buf, sizeof buf);
    lab_json_set_str(meta, "git_commit", buf[0] ? buf : "unknown");
    lab_json_set_str(meta, "cpu_path", optim_isa_name(optim_isa_default()));
    lab_json_set_num(meta, "threads", ctx->threads);
    lab_json_set_num(meta, "openblas_threads", openblas_get_num_threads());
    lab_json_set_str(meta, "openblas", openblas_get_config());
    lab_json_set_str(meta, "zlib", zlibVersion());
    lab_json_set_str(meta, "compiler", compiler_name());
    if (uname(&un) == 0) {
        snprintf(buf, sizeof buf, "%s %s %s", un.sysname, un.release, un.machine);
        lab_json_set_str(meta, "machine.os", buf);
    }
    cpu_model(buf, sizeof buf);
    lab_json_set_str(meta, "machine.cpu", buf);
    lab_json_set_num(meta, "machine.cores", (double)sysconf(_SC_NPROCESSORS_ONLN));
    lab_json_set_num(meta, "machine.memory_gb",
                     (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGE_SIZE) / (1024.0 * 1024 * 1024));
    lab_json_set_num(meta, "seed", (double)ctx->opt.seed);
    args = lab_json_put(meta, "command", lab_json_array());
    lab_json_push(args, lab_json_str("optim"));
    for (i = 0; i < argc; i++) lab_json_push(args, lab_json_str(argv[i]));
    opts = lab_json_put(meta, "options", lab_json_object());
    lab_json_put(opts, "optimizers", ctx->opt.optimizers ? lab_json_str(ctx->opt.optimizers) : lab_json_null());
    lab_json_put(opts, "epochs", ctx->opt.epochs ? lab_json_num(ctx->opt.epochs) : lab_json_null());
    lab_json_put(opts, "tune", lab_json_bool(ctx->opt.tune));
    lab_json_put(opts, "quick", lab_json_bool(ctx->opt.quick));
    lab_json_put(opts, "dataset", ctx->opt.dataset ? lab_json_str(ctx->opt.dataset) : lab_json_null());
    lab_json_put(opts, "data", ctx->opt.data_dir ? lab_json_str(ctx->opt.data_dir) : lab_json_null());
}

/* ---- The renderer --------------------------------------------------------------- */

static int is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* The directory of this executable. */
static int exe_dir(char *buf, size_t n)
{
    ssize_t len = readlink("/proc/self/exe", buf, n - 1);
    char *slash;
    if (len <= 0) return -1;
    buf[len] = '\0';
    slash = strrchr(buf, '/');
    if (!slash) return -1;
    *slash = '\0';
    return 0;
}

/* The directory holding the optim Python package (its lab/render.py):
 * $OPTIM_LAB_PYTHONPATH, else walking up from the executable: python/ of a
 * checkout (build dirs live inside it), the package itself (pip installs
 * this program as optim/_native/optim), or share/optim/python of an install
 * prefix (the Debian package: /usr/bin/optim, /usr/share/optim/python);
 * else the source tree this program was built from. */
static int find_python_dir(char *out, size_t n)
{
    char dir[PATH_MAX - 16], probe[PATH_MAX + 64];
    const char *env = getenv("OPTIM_LAB_PYTHONPATH");
    int up;
    if (env && *env) {
        snprintf(out, n, "%s", env);
        return 0;
    }
    if (exe_dir(dir, sizeof dir) == 0) {
        for (up = 0; up < 5; up++) {
            char *slash;
            static const char *const where[] = {"/python", "", "/share/optim/python"};
            size_t w;
            for (w = 0; w < sizeof where / sizeof *where; w++) {
                snprintf(probe, sizeof probe, "%s%s/optim/lab/render.py", dir, where[w]);
                if (is_file(probe)) {
                    snprintf(out, n, "%s%s", dir, where[w]);
                    return 0;
                }
            }
            slash = strrchr(dir, '/');
            if (!slash || slash == dir) break;
            *slash = '\0';
        }
    }
    if (*OPTIM_LAB_SOURCE_DIR) {
        snprintf(probe, sizeof probe, "%s/python/optim/lab/render.py", OPTIM_LAB_SOURCE_DIR);
        if (is_file(probe)) {
            snprintf(out, n, "%s/python", OPTIM_LAB_SOURCE_DIR);
            return 0;
        }
    }
    return -1;
}

static const char *python_exe(void)
{
    const char *env = getenv("OPTIM_PYTHON");
    if (env && *env) return env;
    /* Debian's interpreter has matplotlib; the first python3 on PATH may not. */
    return access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
}

/* Run the renderer on dir. Returns 0 (rendered), 3 (matplotlib missing), or
 * another non-zero status. */
static int run_renderer(const char *dir)
{
    char pydir[PATH_MAX];
    const char *py = python_exe();
    pid_t pid;
    int status;
    if (find_python_dir(pydir, sizeof pydir) != 0) {
        fprintf(stderr, "optim lab: cannot find the renderer (optim/lab/render.py: in python/ of the optim checkout, "
                        "beside this program when pip-installed, or in share/optim/python of its prefix); set "
                        "OPTIM_LAB_PYTHONPATH to the directory holding the optim package\n");
        return 2;
    }
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0) {
        fprintf(stderr, "optim lab: cannot start %s: %s\n", py, strerror(errno));
        return 2;
    }
    if (pid == 0) {
        /* Run render.py as a script, not as `-m optim.lab.render`: importing
         * the package would load liboptim.so, which the renderer does not
         * need and which an installed `optim` may not have next to it. */
        char *script = lab_sprintf("%s/optim/lab/render.py", pydir);
        setenv("PYTHONDONTWRITEBYTECODE", "1", 0);
        execlp(py, py, script, "--quiet", dir, (char *)NULL);
        fprintf(stderr, "optim lab: cannot run %s: %s\n", py, strerror(errno));
        _exit(127);
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return 2;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 2;
}

/* ---- Arguments ------------------------------------------------------------------ */

static int parse_int(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "optim lab: %s %s: expected an integer in [%ld, %ld]\n", opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int check_optimizer_list(const char *list, const experiment *const *sel, size_t nsel)
{
    const char *p = list;
    if (!*p) {
        fprintf(stderr, "optim lab: --optimizers needs a comma-separated list of names\n");
        return -1;
    }
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p), i, used = 0;
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(len < 63 ? len : 63), p);
        if (!lab_optimizer_find(name)) {
            fprintf(stderr, "optim lab: unknown optimizer '%s'; known:", name);
            for (i = 0; i < lab_optimizer_count; i++) fprintf(stderr, " %s", lab_optimizers[i].name);
            fprintf(stderr, "\n");
            return -1;
        }
        for (i = 0; i < nsel; i++)
            if (name_in_list(name, strlen(name), allowed_optimizers(sel[i]))) used = 1;
        if (!used) {
            fprintf(stderr, "optim lab: optimizer '%s' is not used by the selected experiment(s)\n", name);
            return -1;
        }
        if (!comma) break;
        p = comma + 1;
        if (!*p) {
            fprintf(stderr, "optim lab: --optimizers %s: empty name after a comma\n", list);
            return -1;
        }
    }
    return 0;
}

/* ---- The final table ------------------------------------------------------------ */

static void print_table(const lab_json *table)
{
    const lab_json *cols = lab_json_get(table, "columns"), *rows = lab_json_get(table, "rows"), *r, *c;
    size_t widths[16] = {0}, i, ncol = 0;
    if (!cols || !rows) return;
    for (c = cols->child; c && ncol < 16; c = c->next) widths[ncol++] = strlen(c->str);
    for (r = rows->child; r; r = r->next)
        for (c = r->child, i = 0; c && i < ncol; c = c->next, i++)
            if (c->type == LAB_JSTR && strlen(c->str) > widths[i]) widths[i] = strlen(c->str);
    printf("    ");
    for (c = cols->child, i = 0; c && i < ncol; c = c->next, i++) printf("%-*s  ", (int)widths[i], c->str);
    printf("\n    ");
    for (i = 0; i < ncol; i++) printf("%.*s  ", (int)widths[i], "----------------------------------------");
    printf("\n");
    for (r = rows->child; r; r = r->next) {
        printf("    ");
        for (c = r->child, i = 0; c && i < ncol; c = c->next, i++)
            printf("%-*s  ", (int)widths[i], c->type == LAB_JSTR ? c->str : "");
        printf("\n");
    }
}

static void print_summary(const lab_ctx *ctx, const experiment *const *sel, size_t nsel)
{
    size_t i;
    printf("\n==== optim lab summary ====\n");
    for (i = 0; i < nsel; i++) {
        const lab_json *e = lab_json_get(ctx->summary, sel[i]->key), *f, *held, *st, *tables, *t;
        if (!e) continue;
        f = lab_json_get(e, "finding");
        held = f ? lab_json_get(f, "held") : NULL;
        st = f ? lab_json_get(f, "statement") : NULL;
        printf("\n%s (%.1f s): %s\n", sel[i]->name, lab_json_get(e, "seconds") ? lab_json_get(e, "seconds")->num : 0,
               !held                      ? ""
               : held->type == LAB_JNULL ? "mixed"
               : held->boolean           ? "the seed's claim held"
                                         : "the seed's claim did NOT hold");
        if (st) printf("  %s\n", st->str);
        f = lab_json_get(e, "data.fallback");
        if (f && f->type == LAB_JSTR) printf("  data: %s\n", f->str);
        tables = lab_json_get(e, "tables");
        for (t = tables ? tables->child : NULL; t; t = t->next) {
            printf("\n  %s\n", lab_json_get(t, "title") ? lab_json_get(t, "title")->str : t->key);
            print_table(t);
        }
    }
    {
        const lab_json *st = lab_json_get(ctx->summary, "distributed.finding.statement");
        const lab_json *held = lab_json_get(ctx->summary, "distributed.finding.held");
        if (st && held)
            printf("\ndistributed: %s\n  %s\n", held->boolean ? "the claim held" : "the claim did NOT hold",
                   st->str);
    }
    printf("\n");
}

/* ---- Main ------------------------------------------------------------------------- */

static void ctx_free(lab_ctx *ctx)
{
    lab_json_free(ctx->summary);
    lab_dataset_free(ctx->data);
    lab_mlp_cache_free(ctx->mlp_cache);
    ctx->summary = NULL;
    ctx->data = NULL;
    ctx->mlp_cache = NULL;
}

static int render_main(int argc, char **argv)
{
    char *summary;
    int rc;
    if (argc != 2 || strcmp(argv[1], "--help") == 0) {
        fprintf(argc == 2 ? stdout : stderr, "usage: optim lab render <run directory>\n");
        return argc == 2 ? 0 : 2;
    }
    summary = lab_sprintf("%s/summary.json", argv[1]);
    if (!is_file(summary)) {
        fprintf(stderr, "optim lab render: %s is not a run directory of optim lab (no summary.json)\n", argv[1]);
        free(summary);
        return 2;
    }
    free(summary);
    rc = run_renderer(argv[1]);
    if (rc == 0) printf("report: %s/report.html\n", argv[1]);
    else if (rc == 3) fprintf(stderr, "optim lab render: matplotlib is missing: install Debian's python3-matplotlib\n");
    return rc == 0 ? 0 : 1;
}

int optim_lab_main(int argc, char **argv)
{
    static lab_run_dir rd; /* large: not on the stack */
    lab_ctx ctx;
    const experiment *single = NULL, *sel[NEXP];
    size_t nsel = 0, i;
    char msg[2048], run_name[256];
    const char *final_dir = rd.final_dir, *work_dir = rd.work_dir;
    int argi, failed = 0, rc, claimed = 0, zero_given = 0, dist_init = 0;
    double t_start;
    long v;

    memset(&ctx, 0, sizeof ctx);
    ctx.opt.seed = 1;
    ctx.opt.render = 1;
    ctx.opt.zero_stage = 2;
    ctx.ranks = 1;
    if (argc >= 2 && strcmp(argv[1], "render") == 0) return render_main(argc - 1, argv + 1);
    for (argi = 1; argi < argc; argi++) {
        const char *a = argv[argi];
        const char *val = argi + 1 < argc ? argv[argi + 1] : NULL;
#define NEED_VALUE                                                          \
    do {                                                                    \
        if (!val) {                                                         \
            fprintf(stderr, "optim lab: %s needs a value (see --help)\n", a); \
            return 2;                                                       \
        }                                                                   \
        argi++;                                                             \
    } while (0)
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--list") == 0) {
            list_experiments();
            return 0;
        } else if (strcmp(a, "--out") == 0) {
            NEED_VALUE;
            ctx.opt.out = val;
        } else if (strcmp(a, "--optimizers") == 0) {
            NEED_VALUE;
            ctx.opt.optimizers = val;
        } else if (strcmp(a, "--epochs") == 0) {
            NEED_VALUE;
            if (parse_int(a, val, 1, 1000, &v)) return 2;
            ctx.opt.epochs = (int)v;
        } else if (strcmp(a, "--seed") == 0) {
            char *end;
            NEED_VALUE;
            errno = 0;
            ctx.opt.seed = strtoull(val, &end, 0);
            if (errno || *val == '\0' || *end != '\0' || *val == '-') {
                fprintf(stderr, "optim lab: --seed %s: expected a non-negative integer\n", val);
                return 2;
            }
        } else if (strcmp(a, "--threads") == 0) {
            NEED_VALUE;
            if (parse_int(a, val, 1, 1024, &v)) return 2;
            ctx.opt.threads = (int)v;
        } else if (strcmp(a, "--dataset") == 0) {
            NEED_VALUE;
            if (strcmp(val, "fashion-mnist") != 0 && strcmp(val, "digits") != 0) {
                fprintf(stderr, "optim lab: --dataset %s: expected fashion-mnist or digits\n", val);
                return 2;
            }
            ctx.opt.dataset = val;
        } else if (strcmp(a, "--data") == 0) {
            NEED_VALUE;
            ctx.opt.data_dir = val;
        } else if (strcmp(a, "--tune") == 0) {
            ctx.opt.tune = 1;
        } else if (strcmp(a, "--quick") == 0) {
            ctx.opt.quick = 1;
        } else if (strcmp(a, "--no-render") == 0) {
            ctx.opt.render = 0;
        } else if (strcmp(a, "--distributed") == 0) {
            ctx.opt.distributed = 1;
        } else if (strcmp(a, "--zero") == 0) {
            NEED_VALUE;
            if (parse_int(a, val, 0, 2, &v)) return 2;
            ctx.opt.zero_stage = (int)v;
            zero_given = 1;
        } else if (a[0] == '-') {
            fprintf(stderr, "optim lab: unknown option '%s' (see optim lab --help)\n", a);
            return 2;
        } else if (!single) {
            single = find_experiment(a);
            if (!single) {
                fprintf(stderr, "optim lab: unknown experiment '%s'; known:", a);
                for (i = 0; i < NEXP; i++) fprintf(stderr, " %s", experiments[i].name);
                fprintf(stderr, " (optim lab --list)\n");
                return 2;
            }
        } else {
            fprintf(stderr, "optim lab: one experiment at a time ('%s' after '%s'); without a name, the default "
                            "report runs them all\n",
                    a, single->name);
            return 2;
        }
#undef NEED_VALUE
    }

    if (single) {
        sel[nsel++] = single;
    } else {
        for (i = 0; i < NEXP; i++)
            if (experiments[i].in_default) sel[nsel++] = &experiments[i];
    }
    /* Options that no selected experiment uses are errors, not silently ignored. */
    {
        unsigned accepts = 0;
        for (i = 0; i < nsel; i++) accepts |= sel[i]->accepts;
        if (ctx.opt.optimizers && !(accepts & ACCEPT_OPTIMIZERS)) {
            fprintf(stderr,
                    "optim lab: --optimizers does not apply to %s (it applies to trajectories and fashion-mnist)\n",
                    single ? single->name : "these experiments");
            return 2;
        }
        if (ctx.opt.epochs && !(accepts & ACCEPT_EPOCHS)) {
            fprintf(stderr, "optim lab: --epochs does not apply to %s (it applies to the Fashion-MNIST experiments)\n",
                    single ? single->name : "these experiments");
            return 2;
        }
        if (ctx.opt.tune && !(accepts & ACCEPT_TUNE)) {
            fprintf(stderr, "optim lab: --tune does not apply to %s (it applies to trajectories)\n",
                    single ? single->name : "these experiments");
            return 2;
        }
        if ((ctx.opt.dataset || ctx.opt.data_dir) && !(accepts & ACCEPT_DATA)) {
            fprintf(stderr,
                    "optim lab: --dataset/--data do not apply to %s (they apply to the Fashion-MNIST experiments)\n",
                    single ? single->name : "these experiments");
            return 2;
        }
        if (ctx.opt.data_dir && ctx.opt.dataset && strcmp(ctx.opt.dataset, "digits") == 0) {
            fprintf(stderr, "optim lab: --data names Fashion-MNIST's directory; it does not apply to --dataset "
                            "digits (the digits file is $OPTIM_LAB_DIGITS, else " LAB_DIGITS_CSV ")\n");
            return 2;
        }
        if (ctx.opt.optimizers && check_optimizer_list(ctx.opt.optimizers, sel, nsel)) return 2;
        if (zero_given && !ctx.opt.distributed) {
            fprintf(stderr, "optim lab: --zero applies to --distributed runs only\n");
            return 2;
        }
        if (ctx.opt.distributed && (!single || strcmp(single->name, "fashion-mnist") != 0)) {
            fprintf(stderr, "optim lab: --distributed applies to the fashion-mnist experiment only "
                            "(mpirun -np K optim lab fashion-mnist --distributed)\n");
            return 2;
        }
        if (ctx.opt.distributed) {
            /* Every rank runs from here on; rank 0 writes the run. */
            if (lab_dist_init(&argc, &argv, &ctx, msg, sizeof msg) != 0) {
                fprintf(stderr, "optim lab: %s\n", msg);
                return 2;
            }
            dist_init = 1;
            if (ctx.rank != 0) lab_set_quiet(1);
        }
        /* In the default report, an experiment none of whose optimizers was
         * asked for is left out (and said so), rather than run empty. */
        if (ctx.opt.optimizers && !single) {
            size_t kept = 0;
            for (i = 0; i < nsel; i++) {
                const char *p = ctx.opt.optimizers;
                int any = !(sel[i]->accepts & ACCEPT_OPTIMIZERS);
                while (!any && *p) {
                    const char *comma = strchr(p, ',');
                    size_t len = comma ? (size_t)(comma - p) : strlen(p);
                    any = name_in_list(p, len, allowed_optimizers(sel[i]));
                    if (!comma) break;
                    p = comma + 1;
                }
                if (any)
                    sel[kept++] = sel[i];
                else
                    fprintf(stderr, "optim lab: leaving out %s: none of --optimizers %s applies to it\n", sel[i]->name,
                            ctx.opt.optimizers);
            }
            nsel = kept;
        }
        /* A missing data set is reported before anything is written (by every rank that misses it;
         * with --distributed, one rank's failure stops them all). */
        rc = (accepts & ACCEPT_DATA) && lab_need_data(&ctx) != 0;
        if (dist_init) rc = lab_dist_agree(&ctx, rc);
        if (rc != 0) {
            rc = 1;
            goto done;
        }
    }

    /* With K ranks on this machine, each takes its share of the cores. */
    ctx.threads = ctx.opt.threads ? ctx.opt.threads : (int)sysconf(_SC_NPROCESSORS_ONLN) / ctx.ranks;
    if (ctx.threads < 1) ctx.threads = 1;
    openblas_set_num_threads(ctx.threads);

    /* The run directory: claimed exclusively, written under a temporary
     * name, renamed when complete (lab_rundir.c). */
    {
        time_t now = time(NULL);
        struct tm tm;
        char stamp[32];
        const char *slash;
        localtime_r(&now, &tm);
        strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
        snprintf(run_name, sizeof run_name, "%s-%s", single ? single->name : "default", stamp);
        rc = ctx.rank == 0 ? lab_run_dir_claim(&rd, ctx.opt.out, run_name, msg, sizeof msg) : 0;
        if (dist_init) rc = lab_dist_agree(&ctx, rc);
        if (rc != 0) {
            if (ctx.rank != 0) goto done;
            if (rc == 1) fprintf(stderr, "optim lab: output directory: %s\n", msg);
            else fprintf(stderr, "optim lab: %s\n", msg);
            goto done;
        }
        claimed = ctx.rank == 0;
        /* A default run's name is its directory's (with -2, -3 when taken). */
        slash = strrchr(rd.final_dir, '/');
        if (!ctx.opt.out) snprintf(run_name, sizeof run_name, "%.200s", slash ? slash + 1 : rd.final_dir);
    }
    ctx.dir = rd.work_dir;
    ctx.summary = lab_json_object();
    lab_json_set_str(ctx.summary, "status", "running");
    fill_meta(&ctx, argc, argv, run_name);
    {
        lab_json *list = lab_json_put(ctx.summary, "experiments", lab_json_array());
        for (i = 0; i < nsel; i++) lab_json_push(list, lab_json_str(sel[i]->name));
    }
    if (ctx.rank == 0) {
        char ranks[96] = "";
        if (ctx.opt.distributed)
            snprintf(ranks, sizeof ranks, " per rank, %d ranks, ZeRO stage %d", ctx.ranks, ctx.opt.zero_stage);
        fprintf(stderr, "optim lab: %s -> %s  (seed %llu, %d threads%s, CPU path %s%s)\n",
                single ? single->name : "default report", final_dir, (unsigned long long)ctx.opt.seed, ctx.threads,
                ranks, optim_isa_name(optim_isa_default()), ctx.opt.quick ? ", quick" : "");
    }

    t_start = lab_now();
    for (i = 0; i < nsel && !failed; i++) {
        double t0 = lab_now();
        ctx.exp = lab_json_put(ctx.summary, sel[i]->key, lab_json_object());
        ctx.allowed = allowed_optimizers(sel[i]);
        lab_json_set_str(ctx.exp, "name", sel[i]->name);
        lab_json_set_str(ctx.exp, "title", sel[i]->title);
        if (ctx.rank == 0) fprintf(stderr, "\n== %s: %s\n", sel[i]->name, sel[i]->title);
        rc = sel[i]->run(&ctx);
        lab_json_set_num(ctx.exp, "seconds", lab_now() - t0);
        lab_json_set_str(ctx.exp, "status", rc == 0 ? "ok" : "failed");
        if (rc != 0) failed = 1;
    }
    lab_json_set_num(ctx.summary, "meta.seconds", lab_now() - t_start);
    lab_json_set_str(ctx.summary, "status", failed ? "failed" : "complete");
    if (ctx.rank != 0) {
        rc = failed;
        goto done;
    }
    if (write_summary(&ctx) != 0) failed = 1;

    if (failed) {
        if (lab_run_dir_finish(&rd, 1) == 0)
            fprintf(stderr, "\noptim lab: FAILED; what was written is in %s (no report)\n", rd.failed_dir);
        else
            fprintf(stderr, "\noptim lab: FAILED; what was written is in %s (no report)\n", work_dir);
        rc = 1;
        goto done;
    }

    print_summary(&ctx, sel, nsel);
    fflush(stdout); /* the summary before any message on stderr, also when piped */
    rc = 0;
    if (ctx.opt.render) {
        fprintf(stderr, "rendering figures and report.html ...\n");
        rc = run_renderer(work_dir);
    }
    if (lab_run_dir_finish(&rd, 0) != 0) {
        fprintf(stderr, "optim lab: cannot rename %s to %s: %s; the run is in %s\n", work_dir, final_dir,
                strerror(errno), work_dir);
        rc = 1;
        goto done;
    }
    if (!ctx.opt.render) {
        printf("data: %s (render with: optim lab render %s)\n", final_dir, final_dir);
        rc = 0;
        goto done;
    }
    if (rc == 0) {
        printf("report: %s/report.html\n", final_dir);
        rc = 0;
        goto done;
    }
    if (rc == 3) {
        fprintf(stderr, "optim lab: the data is in %s, but matplotlib is missing, so there are no figures and no "
                        "report.html.\nInstall Debian's python3-matplotlib, then run: optim lab render %s\n",
                final_dir, final_dir);
        rc = 0;
        goto done;
    }
    fprintf(stderr, "optim lab: the data is in %s, but rendering failed (see above); retry with: optim lab render %s\n",
            final_dir, final_dir);
    rc = 1;
done:
    if (claimed) lab_run_dir_release(&rd);
    ctx_free(&ctx);
    if (dist_init) lab_dist_finish(&ctx);
    return rc;
}
