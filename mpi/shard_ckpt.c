/* shard_ckpt.c: state rebuilt from the shards of a checkpoint directory that
 * a set of pieces overlaps: resharding onto another layout (optim_mpi_load)
 * and merging into one file (osc_merge, `optim ckpt merge`). No MPI. The
 * manifest is shard_manifest.c's. */
#define _POSIX_C_SOURCE 200809L
#include "shard_ckpt.h"

#include "optim_checkpoint.h"
#include "optim_precision.h"
#include "optim_schedule.h"
#include "optim_ext.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *osc_piece_name(const osc_manifest *m, const osc_piece *p)
{
    const char *name;
    size_t len;
    char *s;
    if (p->param == OSC_NO_PARAM) {
        s = (char *)malloc(8);
        if (s) strcpy(s, "[empty]");
        return s;
    }
    name = m->params[p->param].name;
    len = strlen(name) + 48;
    s = (char *)malloc(len);
    if (s) snprintf(s, len, "%s[%zu:%zu]", name, p->a, p->b);
    return s;
}

/* ---- State from shards ---------------------------------------------------------------- */

size_t osc_slot_bytes(size_t n, optim_dtype t)
{
    return t == OPTIM_INT8_BLOCK ? OPTIM_INT8_BLOCK_BYTES(n) : n * optim_dtype_size(t);
}

int osc_state_copy(void *dst, size_t dn, size_t da, const void *src, size_t sn, size_t sa, size_t count,
                   optim_dtype t, optim_error *err)
{
    const size_t B = OPTIM_INT8_BLOCK_SIZE;
    unsigned char *d = (unsigned char *)dst;
    const unsigned char *s = (const unsigned char *)src;
    if (count == 0) return OPTIM_OK;
    if (t != OPTIM_INT8_BLOCK) {
        const size_t sz = optim_dtype_size(t);
        memcpy(d + da * sz, s + sa * sz, count * sz);
        return OPTIM_OK;
    }
    /* A block's codes mean something only with its scale: whole blocks move. */
    if (sa % B != 0 || da % B != 0 || (count % B != 0 && !(sa + count == sn && da + count == dn)))
        return osc_fail(err, OPTIM_EUNSUPPORTED,
                        "8-bit block state: elements %zu..%zu of a slot of %zu onto %zu..%zu of one of %zu cut a "
                        "quantization block of %zu (liboptim_mpi moves whole blocks, never requantizes)",
                        sa, sa + count, sn, da, da + count, dn, B);
    memcpy(d + da, s + sa, count);
    memcpy(d + OPTIM_INT8_BLOCK_SCALES_OFFSET(dn) + 4 * (da / B), s + OPTIM_INT8_BLOCK_SCALES_OFFSET(sn) + 4 * (sa / B),
           4 * ((count + B - 1) / B));
    return OPTIM_OK;
}

/* A temporary optimizer over rank r's pieces, loaded from its file. */
static int osc_load_shard(const osc_manifest *m, const char *dir, int r, const optim *like, void *const *param_mem,
                          optim **out, optim_error *err)
{
    optim *t = NULL;
    char path[4096 + 512];
    size_t g, k;
    int rc;
    *out = NULL;
    snprintf(path, sizeof path, "%s/%s", dir, m->files[r]);
    if (optim_create(&t, m->rule) != OPTIM_OK) return osc_fail(err, OPTIM_ENOMEM, "%s: out of memory", path);
    for (g = 0; g < m->ngroups; g++) {
        optim_hparams hp;
        if (optim_group_get(like, g, &hp) != OPTIM_OK || optim_add_group(t, &hp, NULL) != OPTIM_OK) {
            rc = osc_fail(err, OPTIM_EMISMATCH, "%s: group %zu: %s", path, g, optim_errmsg(t));
            goto fail;
        }
    }
    for (k = 0; k < m->npieces[r]; k++) {
        const osc_piece *q = &m->pieces[r][k];
        char *name = osc_piece_name(m, q);
        if (!name) {
            rc = osc_fail(err, OPTIM_ENOMEM, "%s: out of memory", path);
            goto fail;
        }
        if (q->param == OSC_NO_PARAM) {
            rc = optim_add_param(t, 0, NULL, NULL, 0, name, NULL);
        } else {
            /* The parameter's own types: its state is read back in its type, bit for bit. */
            const osc_param *pp = &m->params[q->param];
            unsigned char *mem = (unsigned char *)param_mem[q->param];
            rc = optim_add_param_ex(t, pp->group, mem ? mem + q->a * optim_dtype_size(pp->pdt) : NULL, pp->pdt, NULL,
                                    pp->gdt, q->b - q->a, pp->sdt, pp->flags, name, NULL);
        }
        free(name);
        if (rc != OPTIM_OK) {
            rc = osc_fail(err, rc, "%s: %s", path, optim_errmsg(t));
            goto fail;
        }
    }
    rc = optim_load(t, path, OPTIM_MATCH_NAME);
    if (rc != OPTIM_OK) {
        rc = osc_fail(err, rc, "shard of rank %d of %d: %s", r, m->ranks, optim_errmsg(t));
        goto fail;
    }
    *out = t;
    return OPTIM_OK;
fail:
    optim_free(t);
    return rc;
}

/* Groups, schedules, settings and counters of the saved optimizer t onto target. */
static int osc_copy_settings(optim *t, optim *target, optim_error *err)
{
    size_t g;
    double max_norm, norm_type;
    for (g = 0; g < optim_group_count(t); g++) {
        optim_hparams hp;
        int64_t st;
        if (optim_group_get(t, g, &hp) != OPTIM_OK || optim_group_set(target, g, &hp) != OPTIM_OK ||
            optim_group_set_schedule(target, g, optim_group_get_schedule(t, g)) != OPTIM_OK ||
            optim_group_get_schedule_step(t, g, &st) != OPTIM_OK ||
            optim_group_set_schedule_step(target, g, st) != OPTIM_OK)
            return osc_fail(err, optim_errcode(target) ? optim_errcode(target) : OPTIM_EFORMAT, "group %zu: %s", g,
                            optim_errmsg(target));
    }
    optim_get_clip_grad_norm(t, &max_norm, &norm_type);
    if (optim_set_clip_grad_value(target, 0) != OPTIM_OK || optim_set_clip_grad_norm(target, max_norm, norm_type) != OPTIM_OK ||
        optim_set_clip_grad_value(target, optim_get_clip_grad_value(t)) != OPTIM_OK ||
        optim_set_nonfinite(target, optim_get_nonfinite(t)) != OPTIM_OK ||
        optim__ext_set_counters(target, optim_step_count(t), optim_skipped_steps(t)) != OPTIM_OK)
        return osc_fail(err, optim_errcode(target), "settings: %s", optim_errmsg(target));
    {
        /* Reduced precision: the seed of stochastic rounding, loss scaling's settings and state. */
        optim_loss_scale ls;
        double scale = 1.0;
        int64_t tracker = 0;
        optim_get_loss_scale(t, &ls, &scale, &tracker);
        if (optim_set_seed(target, optim_get_seed(t)) != OPTIM_OK || optim_set_loss_scale(target, &ls) != OPTIM_OK ||
            (ls.mode != OPTIM_LOSS_SCALE_OFF && optim_set_loss_scale_state(target, scale, tracker) != OPTIM_OK))
            return osc_fail(err, optim_errcode(target), "loss scaling: %s", optim_errmsg(target));
    }
    return OPTIM_OK;
}

int osc_fill(const osc_manifest *m, const char *dir, optim *target, const osc_piece *tp, size_t ntp,
             void *const *param_mem, optim_error *err)
{
    size_t *covered = (size_t *)calloc(ntp ? ntp : 1, sizeof *covered);
    unsigned char *stepped = (unsigned char *)calloc(ntp ? ntp : 1, 1);
    int nslots = optim_rule_slot_count(m->rule), r, rc = OPTIM_OK, loaded = 0;
    size_t i, k;
    if (!covered || !stepped) {
        rc = osc_fail(err, OPTIM_ENOMEM, "out of memory");
        goto done;
    }
    if (optim_get_rule(target) != m->rule || optim_group_count(target) != m->ngroups) {
        rc = osc_fail(err, OPTIM_EMISMATCH, "the checkpoint is of %s with %zu groups, the optimizer %s with %zu",
                      optim_rule_name(m->rule), m->ngroups, optim_rule_name(optim_get_rule(target)),
                      optim_group_count(target));
        goto done;
    }
    for (i = 0; i < ntp; i++) {
        optim_dtype sdt = OPTIM_FLOAT32;
        if (tp[i].param == OSC_NO_PARAM) continue;
        optim_param_get_dtypes(target, i, NULL, NULL, &sdt);
        if (sdt != m->params[tp[i].param].sdt) {
            rc = osc_fail(err, OPTIM_EMISMATCH, "param %zu '%s' keeps %s state in the checkpoint, %s here",
                          tp[i].param, m->params[tp[i].param].name, optim_dtype_name(m->params[tp[i].param].sdt),
                          optim_dtype_name(sdt));
            goto done;
        }
    }
    for (r = 0; r < m->ranks; r++) {
        optim *t = NULL;
        int need = 0;
        /* Does a piece of rank r overlap one of ours (or name the same zero-length parameter)? */
        for (i = 0; i < ntp && !need; i++)
            for (k = 0; k < m->npieces[r] && !need; k++) {
                const osc_piece *q = &m->pieces[r][k];
                if (q->param != tp[i].param || q->param == OSC_NO_PARAM) continue;
                need = (q->a < tp[i].b && tp[i].a < q->b) || (q->a == q->b && tp[i].a == tp[i].b);
            }
        if (!need && !(r == m->ranks - 1 && !loaded)) continue;
        rc = osc_load_shard(m, dir, r, target, param_mem, &t, err);
        if (rc != OPTIM_OK) goto done;
        if (!loaded) {
            rc = osc_copy_settings(t, target, err);
            if (rc != OPTIM_OK) {
                optim_free(t);
                goto done;
            }
            loaded = 1;
        }
        for (i = 0; i < ntp; i++) {
            for (k = 0; k < m->npieces[r]; k++) {
                const osc_piece *q = &m->pieces[r][k];
                size_t lo, hi;
                int s;
                if (q->param != tp[i].param || q->param == OSC_NO_PARAM) continue;
                lo = q->a > tp[i].a ? q->a : tp[i].a;
                hi = q->b < tp[i].b ? q->b : tp[i].b;
                /* Overlapping pieces, or the zero-size parameter's only piece. */
                if (lo < hi || (q->a == q->b && tp[i].a == tp[i].b)) {
                    const osc_param *pp = &m->params[q->param];
                    for (s = 0; s < nslots; s++) {
                        void *src = NULL, *dst = NULL;
                        int init = 0;
                        optim_state_slot_data(t, k, s, &src, NULL, &init);
                        optim_state_slot_data(target, i, s, &dst, NULL, NULL);
                        if (!dst) continue;
                        /* In its type (8-bit block state: whole blocks with their scales). */
                        if (src && lo < hi &&
                            (rc = osc_state_copy(dst, tp[i].b - tp[i].a, lo - tp[i].a, src, q->b - q->a, lo - q->a,
                                                 hi - lo, pp->sdt, err)) != OPTIM_OK) {
                            optim_free(t);
                            goto done;
                        }
                        optim_state_set_initialized(target, i, s, src ? init : 0);
                    }
                    if ((pp->flags & OPTIM_PARAM_MASTER) && lo < hi) {
                        /* The fp32 master of these elements: the parameter's value, kept with its state. */
                        float *msrc = NULL, *mdst = NULL;
                        if (optim_param_master_data(t, k, &msrc) != OPTIM_OK ||
                            optim_param_master_data(target, i, &mdst) != OPTIM_OK) {
                            rc = osc_fail(err, OPTIM_EMISMATCH, "param %zu '%s': a master on one side only",
                                          q->param, pp->name);
                            optim_free(t);
                            goto done;
                        }
                        memcpy(mdst + (lo - tp[i].a), msrc + (lo - q->a), (hi - lo) * sizeof *mdst);
                    }
                    if (lo < hi) covered[i] += hi - lo;
                    int64_t step;
                    double mu;
                    optim_param_get_step(t, k, &step);
                    optim_param_get_mu_product(t, k, &mu);
                    optim_param_set_step(target, i, step);
                    optim_param_set_mu_product(target, i, mu);
                    stepped[i] = 1;
                }
            }
        }
        optim_free(t);
    }
    for (i = 0; i < ntp; i++) {
        if (tp[i].param == OSC_NO_PARAM) continue;
        if (covered[i] != tp[i].b - tp[i].a || !stepped[i]) {
            rc = osc_fail(err, OPTIM_EFORMAT,
                          "the checkpoint holds the state of %zu of elements %zu..%zu of param %zu '%s' (its shards "
                          "do not cover the parameter)",
                          covered[i], tp[i].a, tp[i].b, tp[i].param, m->params[tp[i].param].name);
            goto done;
        }
    }
done:
    free(covered);
    free(stepped);
    return rc;
}

int osc_merge(const char *dir, const char *out, optim_error *err)
{
    osc_manifest m;
    char *text = NULL;
    size_t len, i, total = 0;
    optim *full = NULL;
    unsigned char *mem = NULL;
    void **param_mem = NULL;
    osc_piece *tp = NULL;
    char what[4096 + 32];
    int rc;
    rc = osc_manifest_read_text(dir, &text, &len, err);
    if (rc != OPTIM_OK) return rc;
    snprintf(what, sizeof what, "%s/%s", dir, OSC_MANIFEST);
    rc = osc_manifest_parse(text, len, what, &m, err);
    free(text);
    if (rc != OPTIM_OK) return rc;
    /* The parameters' memory (zeros; never stepped), each in its type, on 8 bytes. */
    for (i = 0; i < m.nparams; i++) total += (m.params[i].n * optim_dtype_size(m.params[i].pdt) + 7) / 8 * 8;
    mem = (unsigned char *)calloc(total ? total : 1, 1);
    param_mem = (void **)calloc(m.nparams ? m.nparams : 1, sizeof *param_mem);
    tp = (osc_piece *)calloc(m.nparams ? m.nparams : 1, sizeof *tp);
    if (!mem || !param_mem || !tp || optim_create(&full, m.rule) != OPTIM_OK) {
        rc = osc_fail(err, OPTIM_ENOMEM, "optim_mpi_merge: out of memory for %zu bytes of parameters", total);
        goto done;
    }
    for (i = 0; i < m.ngroups; i++) {
        optim_hparams hp;
        optim_hparams_init(&hp, m.rule, NULL);
        if ((rc = optim_add_group(full, &hp, NULL)) != OPTIM_OK) goto lib_fail;
    }
    total = 0;
    for (i = 0; i < m.nparams; i++) {
        param_mem[i] = mem + total;
        if ((rc = optim_add_param_ex(full, m.params[i].group, param_mem[i], m.params[i].pdt, NULL, m.params[i].gdt,
                                     m.params[i].n, m.params[i].sdt, m.params[i].flags, m.params[i].name, NULL)) !=
            OPTIM_OK)
            goto lib_fail;
        if (m.params[i].shape_given &&
            (rc = optim_param_set_shape(full, i, m.params[i].ndim, m.params[i].dims)) != OPTIM_OK)
            goto lib_fail;
        tp[i].param = i;
        tp[i].a = 0;
        tp[i].b = m.params[i].n;
        total += (m.params[i].n * optim_dtype_size(m.params[i].pdt) + 7) / 8 * 8;
    }
    rc = osc_fill(&m, dir, full, tp, m.nparams, param_mem, err);
    if (rc != OPTIM_OK) goto done;
    rc = optim_save(full, out);
    if (rc != OPTIM_OK) goto lib_fail;
    goto done;
lib_fail:
    rc = osc_fail(err, rc, "optim_mpi_merge: %s", optim_errmsg(full));
done:
    optim_free(full);
    free(mem);
    free(param_mem);
    free(tp);
    osc_manifest_free(&m);
    return rc;
}
