/* mpi_config.c: the ranks must agree on the optimizer. Each rank lists its
 * configuration as (what, value) items; a minimum and a maximum of the items'
 * hashes over the ranks find the first item that differs (O(items) bytes
 * per rank, whatever the number of ranks), and only that item's values are
 * gathered, to name them in the message. */
#include "mpi_internal.h"
#include "optim_precision.h"
#include "optim_schedule.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DM_KEY 160
#define DM_VAL 224

typedef struct dm_items {
    size_t n, cap;
    char (*key)[DM_KEY];
    char (*val)[DM_VAL];
    int oom;
} dm_items;

static uint64_t dm_fnv(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = (const unsigned char *)data;
    size_t i;
    for (i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* A hash of an array of any element type, 32 bits at a time (state can be
 * large; float32 arrays hash as they always did), then the odd bytes. */
static uint64_t dm_hash_bytes(uint64_t h, const void *data, size_t bytes)
{
    const unsigned char *x = (const unsigned char *)data;
    size_t i;
    uint32_t w;
    for (i = 0; i + 4 <= bytes; i += 4) {
        memcpy(&w, x + i, sizeof w);
        h = (h ^ w) * 1099511628211ull;
        h ^= h >> 29;
    }
    for (; i < bytes; i++) h = (h ^ x[i]) * 1099511628211ull;
    return h;
}

/* A state slot's contents: its elements (8-bit block state: its codes, then
 * its scales, not the padding between them). */
static uint64_t dm_hash_slot(const void *data, size_t n, optim_dtype t)
{
    uint64_t h = dm_hash_bytes(14695981039346656037ull, data, n * optim_dtype_size(t));
    if (t == OPTIM_INT8_BLOCK)
        h = dm_hash_bytes(h, (const unsigned char *)data + OPTIM_INT8_BLOCK_SCALES_OFFSET(n),
                          4 * ((n + OPTIM_INT8_BLOCK_SIZE - 1) / OPTIM_INT8_BLOCK_SIZE));
    return h;
}

static void dm_item(dm_items *it, const char *key, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static void dm_item(dm_items *it, const char *key, const char *fmt, ...)
{
    va_list ap;
    if (it->oom) return;
    if (it->n == it->cap) {
        size_t cap = it->cap ? it->cap * 2 : 64;
        void *k = realloc(it->key, cap * sizeof *it->key), *v;
        if (!k) {
            it->oom = 1;
            return;
        }
        it->key = (char(*)[DM_KEY])k;
        v = realloc(it->val, cap * sizeof *it->val);
        if (!v) {
            it->oom = 1;
            return;
        }
        it->val = (char(*)[DM_VAL])v;
        it->cap = cap;
    }
    snprintf(it->key[it->n], DM_KEY, "%s", key);
    va_start(ap, fmt);
    vsnprintf(it->val[it->n], DM_VAL, fmt, ap);
    va_end(ap);
    it->n++;
}

static const char *dm_sched_kind(int kind)
{
    static const char *names[] = {"none", "constant", "step", "multistep", "exponential", "linear", "polynomial",
                                  "cosine", "cosine_restarts", "one_cycle", "cyclic", "warmup", "wsd", "sequential"};
    return kind >= 0 && kind <= 13 ? names[kind] : "unknown";
}

/* Settings every rank must keep equal: groups and what a step reads. */
static void dm_items_settings(dm_items *it, const optim *o)
{
    size_t g;
    int id;
    char key[DM_KEY];
    double max_norm = 0, norm_type = 0;
    for (g = 0; g < optim_group_count(o); g++) {
        const optim_schedule *s = optim_group_get_schedule(o, g);
        int64_t st = 0;
        for (id = 1; id <= OPTIM_HP_COUNT; id++) {
            double v;
            if (!optim_rule_uses(optim_get_rule(o), (optim_hparam)id)) continue;
            if (optim_group_get_hparam(o, g, (optim_hparam)id, &v) != OPTIM_OK) continue;
            snprintf(key, sizeof key, "group %zu hyperparameter %s", g, optim_hparam_name((optim_hparam)id));
            dm_item(it, key, "%.17g", v);
        }
        snprintf(key, sizeof key, "group %zu schedule", g);
        if (!s) {
            dm_item(it, key, "none");
        } else {
            /* The schedule as the lr it gives a base of 1 at probe steps. */
            static const int64_t probes[] = {0, 1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000,
                                             2000, 5000, 10000, 100000, 1000000, 100000000};
            uint64_t h = 14695981039346656037ull;
            size_t i;
            for (i = 0; i < sizeof probes / sizeof probes[0]; i++) {
                double lr = optim_schedule_lr(s, 1.0, probes[i]);
                h = dm_fnv(h, &lr, sizeof lr);
            }
            dm_item(it, key, "%s, lr/base at steps 0, 1, 10, 100: %.9g, %.9g, %.9g, %.9g (probes hash %016llx)",
                    dm_sched_kind((int)optim_schedule_get_kind(s)), optim_schedule_lr(s, 1.0, 0),
                    optim_schedule_lr(s, 1.0, 1), optim_schedule_lr(s, 1.0, 10), optim_schedule_lr(s, 1.0, 100),
                    (unsigned long long)h);
        }
        optim_group_get_schedule_step(o, g, &st);
        snprintf(key, sizeof key, "group %zu schedule step", g);
        dm_item(it, key, "%lld", (long long)st);
    }
    dm_item(it, "non-finite policy", "%d", (int)optim_get_nonfinite(o));
    optim_get_clip_grad_norm(o, &max_norm, &norm_type);
    dm_item(it, "clip_grad_norm", "max_norm %.17g, norm_type %.17g", max_norm, norm_type);
    dm_item(it, "clip_grad_value", "%.17g", optim_get_clip_grad_value(o));
    {
        /* Reduced precision: the seed of stochastic rounding, loss scaling's settings and state (the scale and
         * growth tracker move identically on every rank: the overflow decision is global). */
        optim_loss_scale ls;
        double scale = 1.0;
        int64_t tracker = 0;
        memset(&ls, 0, sizeof ls);
        optim_get_loss_scale(o, &ls, &scale, &tracker);
        dm_item(it, "stochastic rounding seed", "%llu", (unsigned long long)optim_get_seed(o));
        dm_item(it, "loss scaling", "mode %d, init_scale %.17g, growth_factor %.17g, backoff_factor %.17g, "
                "growth_interval %lld", (int)ls.mode, ls.init_scale, ls.growth_factor, ls.backoff_factor,
                (long long)ls.growth_interval);
        dm_item(it, "loss scale state", "scale %.17g, growth tracker %lld", scale, (long long)tracker);
    }
}

/* The model: its parameters, counters and state (the template at creation). */
static void dm_items_model(dm_items *it, optim *o)
{
    size_t i, nparams = optim_param_count(o);
    int s, nslots = optim_rule_slot_count(optim_get_rule(o));
    char key[DM_KEY];
    for (i = 0; i < nparams; i++) {
        optim_param_info info;
        size_t ndim = 0, k, len = 0;
        int64_t dims[OPTIM_MAX_NDIM];
        int given = 0;
        char shape[DM_VAL];
        optim_param_get_info(o, i, &info);
        snprintf(key, sizeof key, "param %zu name", i);
        dm_item(it, key, "'%.200s'", info.name);
        snprintf(key, sizeof key, "param %zu '%.100s' size", i, info.name);
        dm_item(it, key, "%zu", info.n);
        snprintf(key, sizeof key, "param %zu '%.100s' group", i, info.name);
        dm_item(it, key, "%zu", info.group);
        optim_param_get_shape(o, i, &ndim, dims, &given);
        shape[0] = '\0';
        for (k = 0; k < ndim && len < sizeof shape - 24; k++)
            len += (size_t)snprintf(shape + len, sizeof shape - len, "%s%lld", k ? ", " : "", (long long)dims[k]);
        snprintf(key, sizeof key, "param %zu '%.100s' shape", i, info.name);
        dm_item(it, key, "%s[%s]", given ? "" : "not given: ", shape);
        {
            optim_dtype pdt = OPTIM_FLOAT32, gdt = OPTIM_FLOAT32, sdt = OPTIM_FLOAT32;
            const char *pn, *gn, *sn;
            optim_param_get_dtypes(o, i, &pdt, &gdt, &sdt);
            pn = optim_dtype_name(pdt);
            gn = optim_dtype_name(gdt);
            sn = optim_dtype_name(sdt);
            snprintf(key, sizeof key, "param %zu '%.100s' element types", i, info.name);
            dm_item(it, key, "%s memory, %s gradients, %s state", pn ? pn : "?", gn ? gn : "?", sn ? sn : "?");
        }
        {
            unsigned flags = 0;
            optim_param_get_flags(o, i, &flags);
            snprintf(key, sizeof key, "param %zu '%.100s' storage flags", i, info.name);
            dm_item(it, key, "0x%x (%s%s%s)", flags, (flags & OPTIM_PARAM_MASTER) ? "fp32 master " : "",
                    (flags & OPTIM_PARAM_STOCHASTIC_ROUNDING) ? "stochastic rounding " : "", flags ? "" : "none");
        }
    }
    dm_item(it, "step count", "%lld", (long long)optim_step_count(o));
    dm_item(it, "skipped steps", "%lld", (long long)optim_skipped_steps(o));
    for (i = 0; i < nparams; i++) {
        optim_param_info info;
        int64_t step = 0;
        double mu = 0;
        optim_param_get_info(o, i, &info);
        optim_param_get_step(o, i, &step);
        optim_param_get_mu_product(o, i, &mu);
        snprintf(key, sizeof key, "param %zu '%.100s' step counter", i, info.name);
        dm_item(it, key, "%lld", (long long)step);
        snprintf(key, sizeof key, "param %zu '%.100s' mu_product", i, info.name);
        dm_item(it, key, "%.17g", mu);
        size_t held = 0;
        optim_param_state_bytes(o, i, &held);
        for (s = 0; s < nslots; s++) {
            void *data = NULL;
            optim_dtype sdt = OPTIM_FLOAT32;
            int init = 0;
            /* State never allocated (optim_set_defer_state): not asked for,
             * which would allocate it. */
            if (held > 0) optim_state_slot_data(o, i, s, &data, &sdt, &init);
            snprintf(key, sizeof key, "param %zu '%.100s' state %s", i, info.name,
                     optim_rule_slot_name(optim_get_rule(o), s));
            if (!data)
                dm_item(it, key, "not allocated");
            else
                dm_item(it, key, "%s, contents hash %016llx (a different checkpoint or history?)",
                        init ? "initialized" : "not initialized",
                        (unsigned long long)dm_hash_slot(data, info.n, sdt));
        }
    }
}

static void dm_items_free(dm_items *it)
{
    free(it->key);
    free(it->val);
    memset(it, 0, sizeof *it);
}

/* Min and max over the ranks of every item's hash (62 bits); the index of
 * the first item that differs, or n. */
static int dm_first_difference(optim_mpi *d, const dm_items *it, size_t *first, const char *fn)
{
    long long *v = (long long *)malloc((2 * it->n + 1) * sizeof *v), *in;
    MPI_Request req;
    size_t i;
    int rc;
    char what[96];
    snprintf(what, sizeof what, "%s: the comparison of the ranks' configurations", fn);
    in = (long long *)malloc((2 * it->n + 1) * sizeof *in);
    if (!v || !in) {
        free(v);
        free(in);
        return dm_fail(d, OPTIM_ENOMEM, "%s: out of memory for %zu configuration items", fn, it->n);
    }
    for (i = 0; i < it->n; i++) {
        uint64_t h = dm_fnv(14695981039346656037ull, it->val[i], strlen(it->val[i]));
        h = dm_fnv(h, it->key[i], strlen(it->key[i])) & (((uint64_t)1 << 62) - 1);
        in[2 * i] = (long long)h;
        in[2 * i + 1] = -(long long)h;
    }
    rc = MPI_Iallreduce(in, v, (int)(2 * it->n), MPI_LONG_LONG, MPI_MIN, d->ctl, &req);
    if (rc != MPI_SUCCESS) {
        free(v);
        free(in);
        return dm_mpi_fail(d, rc, what);
    }
    d->stats.control_bytes += 2 * it->n * sizeof *v;
    rc = dm_wait(d, &req, what);
    if (rc == OPTIM_OK) {
        for (i = 0; i < it->n && v[2 * i] == -v[2 * i + 1]; i++) continue;
        *first = i;
    }
    free(v);
    free(in);
    return rc;
}

/* Gather item j's value from every rank and say who holds what. */
static int dm_name_difference(optim_mpi *d, const dm_items *it, size_t j, const char *fn)
{
    char *all = (char *)malloc((size_t)d->K * DM_VAL);
    unsigned char *done = (unsigned char *)calloc((size_t)d->K, 1);
    char msg[OPTIM_ERRMSG_MAX];
    size_t len = 0;
    MPI_Request req;
    int rc, r, groups = 0;
    char what[96];
    snprintf(what, sizeof what, "%s: gathering the differing setting", fn);
    if (!all || !done) {
        free(all);
        free(done);
        return dm_fail(d, OPTIM_ENOMEM, "%s: out of memory", fn);
    }
    rc = MPI_Iallgather(it->val[j], DM_VAL, MPI_CHAR, all, DM_VAL, MPI_CHAR, d->ctl, &req);
    if (rc != MPI_SUCCESS) {
        free(all);
        free(done);
        return dm_mpi_fail(d, rc, what);
    }
    d->stats.control_bytes += (uint64_t)(d->K - 1) * DM_VAL;
    rc = dm_wait(d, &req, what);
    if (rc != OPTIM_OK) {
        free(all);
        free(done);
        return rc;
    }
    len += (size_t)snprintf(msg + len, sizeof msg - len, "%s: the ranks differ in %s:", fn, it->key[j]);
    for (r = 0; r < d->K && len < sizeof msg; r++) {
        int q, listed = 0, count = 0;
        if (done[r]) continue;
        for (q = r; q < d->K; q++)
            if (!done[q] && strncmp(all + (size_t)q * DM_VAL, all + (size_t)r * DM_VAL, DM_VAL) == 0) count++;
        len += (size_t)snprintf(msg + len, len < sizeof msg ? sizeof msg - len : 0, "%s %.*s on rank%s", groups ? ";" : "",
                                DM_VAL, all + (size_t)r * DM_VAL, count > 1 ? "s" : "");
        for (q = r; q < d->K; q++) {
            if (done[q] || strncmp(all + (size_t)q * DM_VAL, all + (size_t)r * DM_VAL, DM_VAL) != 0) continue;
            done[q] = 1;
            if (listed < 6 && len < sizeof msg)
                len += (size_t)snprintf(msg + len, sizeof msg - len, "%s %d", listed ? "," : "", q);
            else if (listed == 6 && len < sizeof msg)
                len += (size_t)snprintf(msg + len, sizeof msg - len, " and %d more", count - 6);
            listed++;
        }
        groups++;
    }
    free(all);
    free(done);
    return dm_fail(d, OPTIM_EMISMATCH, "%s", msg);
}

int dm_config_check(optim_mpi *d, const optim *o, int whole, const char *fn)
{
    dm_items it;
    size_t first = 0;
    int rc;
    memset(&it, 0, sizeof it);
    if (whole) {
        /* First what decides how many items follow. */
        dm_item(&it, "stage", "%d", d->stage);
        dm_item(&it, "rule", "%s", optim_rule_name(optim_get_rule(o)));
        dm_item(&it, "number of groups", "%zu", optim_group_count(o));
        dm_item(&it, "number of parameters", "%zu", optim_param_count(o));
        if (it.oom) return dm_fail(d, OPTIM_ENOMEM, "%s: out of memory", fn);
        rc = dm_first_difference(d, &it, &first, fn);
        if (rc == OPTIM_OK && first < it.n) rc = dm_name_difference(d, &it, first, fn);
        dm_items_free(&it);
        if (rc != OPTIM_OK) return rc;
    }
    if (whole) {
        dm_items_model(&it, (optim *)o);
        /* After the parameters' types, which decide it with the option. */
        dm_item(&it, "bucket size (elements)", "%zu", d->bucket_elems);
    }
    dm_items_settings(&it, o);
    /* An allocation failure must still take part in the collectives: compare
     * what there is and report the failure after. */
    rc = dm_first_difference(d, &it, &first, fn);
    if (rc == OPTIM_OK && first < it.n) rc = dm_name_difference(d, &it, first, fn);
    if (rc == OPTIM_OK && it.oom) rc = dm_fail(d, OPTIM_ENOMEM, "%s: out of memory", fn);
    dm_items_free(&it);
    return rc;
}

int dm_config_check_sam(optim_mpi *d, double rho, double p, int adaptive, double eta, const char *fn)
{
    dm_items it;
    size_t first = 0;
    int rc;
    memset(&it, 0, sizeof it);
    dm_item(&it, "SAM's rho", "%.17g", rho);
    dm_item(&it, "SAM's p", "%.17g", p);
    dm_item(&it, "SAM's adaptive", "%d", adaptive);
    dm_item(&it, "SAM's eta", "%.17g", eta);
    if (it.oom) return dm_fail(d, OPTIM_ENOMEM, "%s: out of memory", fn);
    rc = dm_first_difference(d, &it, &first, fn);
    if (rc == OPTIM_OK && first < it.n) rc = dm_name_difference(d, &it, first, fn);
    dm_items_free(&it);
    return rc;
}

uint64_t dm_config_hash(const optim *o)
{
    dm_items it;
    uint64_t h = 14695981039346656037ull;
    size_t i;
    memset(&it, 0, sizeof it);
    dm_items_settings(&it, o);
    for (i = 0; i < it.n; i++) {
        h = dm_fnv(h, it.key[i], strlen(it.key[i]));
        h = dm_fnv(h, it.val[i], strlen(it.val[i]));
    }
    dm_items_free(&it);
    return h | 1; /* never 0 */
}
