/* mpi_ckpt.c: sharded checkpoints, collectively (the files and the manifest
 * are shard_ckpt.c's). Save: every rank writes its shard, rank 0 checks it
 * sees them all and writes the manifest last; load: rank 0 reads the
 * manifest, every rank rebuilds its slices' state from the shards they
 * overlap, whatever layout wrote them. Every step is agreed, so that a
 * failure on one rank fails the call on all. */
#define _POSIX_C_SOURCE 200809L
#include "mpi_internal.h"
#include "optim_checkpoint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DM_PATH 4200

/* The library's save: nothing between the shards and the manifest. */
const dm_save_ops dm_default_save_ops = {NULL, NULL};

static void dm_shard_file(char *buf, size_t n, int r, int ranks, const char *id)
{
    snprintf(buf, n, "shard-%05d-of-%05d.%s.ckpt", r, ranks, id);
}

/* The manifest of this save, built on rank 0. */
static int dm_manifest_build(optim_mpi *d, const char *id, osc_manifest *m)
{
    int writers = d->stage == 0 ? 1 : d->K, r;
    size_t i;
    memset(m, 0, sizeof *m);
    m->format = 2;
    snprintf(m->library, sizeof m->library, "%s", optim_version_string());
    snprintf(m->save_id, sizeof m->save_id, "%s", id);
    m->ranks = writers;
    m->stage = d->stage;
    snprintf(m->layout, sizeof m->layout, "%s", d->stage == 0 ? "whole" : "contiguous");
    m->rule = d->rule;
    m->ngroups = d->ngroups;
    m->steps = optim_step_count(d->local);
    m->skipped = optim_skipped_steps(d->local);
    m->nparams = d->nparams;
    m->params = (osc_param *)calloc(d->nparams, sizeof *m->params);
    m->npieces = (size_t *)calloc((size_t)writers, sizeof *m->npieces);
    m->pieces = (osc_piece **)calloc((size_t)writers, sizeof *m->pieces);
    m->files = (char **)calloc((size_t)writers, sizeof *m->files);
    if (!m->params || !m->npieces || !m->pieces || !m->files) goto oom;
    for (i = 0; i < d->nparams; i++) {
        osc_param *p = &m->params[i];
        p->name = (char *)malloc(strlen(d->names[i]) + 1);
        p->dims = (int64_t *)malloc((d->ndim[i] ? d->ndim[i] : 1) * sizeof *p->dims);
        if (!p->name || !p->dims) goto oom;
        strcpy(p->name, d->names[i]);
        p->n = d->L.n[i];
        p->group = d->group[i];
        p->shape_given = d->shape_given[i];
        p->ndim = d->ndim[i];
        memcpy(p->dims, d->dims[i], d->ndim[i] * sizeof *p->dims);
        p->pdt = d->pdt[i];
        p->gdt = d->gdt[i];
        p->sdt = d->sdt[i];
        /* Format 3 records the types; a model of float32 throughout writes
         * format 2, which libraries before format 3 read too. */
        if (p->pdt != OPTIM_FLOAT32 || p->gdt != OPTIM_FLOAT32 || p->sdt != OPTIM_FLOAT32) m->format = 3;
        p->flags = d->flags[i];
    }
    /* Format 4 records the storage flags (masters, stochastic rounding); written only when a parameter has one. */
    for (i = 0; i < d->nparams; i++)
        if (d->flags[i]) m->format = 4;
    for (r = 0; r < writers; r++) {
        char name[256];
        m->pieces[r] = (osc_piece *)calloc(dm_layout_pieces_cap(&d->L), sizeof **m->pieces);
        dm_shard_file(name, sizeof name, r, writers, id);
        m->files[r] = (char *)malloc(strlen(name) + 1);
        if (!m->pieces[r] || !m->files[r]) goto oom;
        strcpy(m->files[r], name);
        m->npieces[r] = d->stage == 0 ? dm_layout_whole(&d->L, m->pieces[r], NULL)
                                      : dm_layout_pieces(&d->L, r, m->pieces[r], NULL, NULL);
    }
    return OPTIM_OK;
oom:
    osc_manifest_free(m);
    return OPTIM_ENOMEM;
}

/* Create dir if missing (one level, as mkdir). */
static int dm_mkdir(optim_mpi *d, const char *dir, const char *fn)
{
    struct stat sb;
    if (mkdir(dir, 0777) == 0) return OPTIM_OK;
    if (errno == EEXIST && stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode)) return OPTIM_OK;
    if (errno == EEXIST) return dm_fail(d, OPTIM_EOPEN, "%s: %s exists and is not a directory", fn, dir);
    return dm_fail(d, OPTIM_EOPEN, "%s: cannot create directory %s: %s", fn, dir, strerror(errno));
}

int optim_mpi_save(optim_mpi *d, const char *dir)
{
    return dm_save_with(d, dir, &dm_default_save_ops);
}

int dm_save_with(optim_mpi *d, const char *dir, const dm_save_ops *ops)
{
    static const char fn[] = "optim_mpi_save";
    char id[64], path[DM_PATH], name[256];
    int rc = OPTIM_OK, writers, wrote = 0, mrc;
    MPI_Request req;
    if (!d) return OPTIM_ENULL;
    if (d->broken) return dm_fail(d, OPTIM_ESTATE, "%s: an earlier communication failure ended this handle", fn);
    writers = d->stage == 0 ? 1 : d->K;
    memset(id, 0, sizeof id);
    if (!dir)
        rc = dm_fail(d, OPTIM_ENULL, "%s: dir is NULL", fn);
    else if (strlen(dir) > DM_PATH - 300)
        rc = dm_fail(d, OPTIM_EINVAL, "%s: the directory name is too long (%zu bytes)", fn, strlen(dir));
    else if (d->sam && optim_sam_is_perturbed(d->sam))
        rc = dm_fail(d, OPTIM_ESTATE, "%s: between optim_mpi_sam_first_step and its second step", fn);
    else if (d->rank == 0 && (rc = dm_mkdir(d, dir, fn)) == OPTIM_OK) {
        /* A name no earlier save of this directory used: the step, the time and the process. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(id, sizeof id, "s%lld-%08lx%05lx", (long long)optim_step_count(d->local),
                 (unsigned long)((unsigned long)ts.tv_sec ^ ((unsigned long)ts.tv_nsec << 7)),
                 (unsigned long)getpid() & 0xfffff);
    }
    rc = dm_agree(d, rc, 0, fn);
    if (rc != OPTIM_OK) return rc;
    mrc = MPI_Ibcast(id, (int)sizeof id, MPI_CHAR, 0, d->ctl, &req);
    if (mrc != MPI_SUCCESS) return dm_mpi_fail(d, mrc, "optim_mpi_save: the broadcast of the save's name");
    rc = dm_wait(d, &req, "optim_mpi_save: the broadcast of the save's name");
    if (rc != OPTIM_OK) return rc;
    id[sizeof id - 1] = '\0';

    /* Every writer's shard, atomically (optim_save). */
    if (d->rank < writers) {
        dm_shard_file(name, sizeof name, d->rank, writers, id);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        rc = optim_save(d->local, path);
        if (rc != OPTIM_OK) dm_fail(d, rc, "%s: %s", fn, optim_errmsg(d->local));
        wrote = rc == OPTIM_OK;
    }
    rc = dm_agree(d, rc, 0, fn);
    if (rc == OPTIM_OK && d->rank == 0) {
        osc_manifest m;
        int r;
        /* Every shard must be visible here: the directory must be shared. */
        for (r = 0; r < writers && rc == OPTIM_OK; r++) {
            struct stat sb;
            dm_shard_file(name, sizeof name, r, writers, id);
            snprintf(path, sizeof path, "%s/%s", dir, name);
            if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
                rc = dm_fail(d, OPTIM_EOPEN,
                             "%s: rank 0 does not see rank %d's shard %s: every rank must save into the same "
                             "directory (a file system they share)",
                             fn, r, path);
        }
        if (rc == OPTIM_OK) {
            rc = dm_manifest_build(d, id, &m);
            if (rc != OPTIM_OK) {
                dm_fail(d, rc, "%s: out of memory for the manifest", fn);
            } else {
                size_t len = 0;
                char *text = osc_manifest_render(&m, &len);
                optim_error e;
                if (ops->before_manifest) ops->before_manifest(ops->ctx);
                if (!text)
                    rc = dm_fail(d, OPTIM_ENOMEM, "%s: out of memory for the manifest", fn);
                else if ((rc = osc_manifest_write_text(dir, text, len, &e)) != OPTIM_OK)
                    dm_fail(d, rc, "%s: %s", fn, e.message);
                free(text);
                if (rc == OPTIM_OK) osc_remove_stale(dir, &m);
                osc_manifest_free(&m);
            }
        }
        rc = dm_agree(d, rc, 0, fn);
    } else if (rc == OPTIM_OK) {
        rc = dm_agree(d, OPTIM_OK, 0, fn);
    }
    if (rc != OPTIM_OK && rc != OPTIM_ECOMM && wrote) {
        /* This save failed: its shards are not part of any checkpoint. */
        dm_shard_file(name, sizeof name, d->rank, writers, id);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        unlink(path);
    }
    if (rc != OPTIM_OK) return rc;
    return dm_ok(d);
}

/* The manifest's parameters must be the model's. */
static int dm_manifest_matches(optim_mpi *d, const osc_manifest *m, const char *dir, const char *fn)
{
    size_t i, k;
    if (m->rule != d->rule)
        return dm_fail(d, OPTIM_EMISMATCH, "%s: %s holds a %s optimizer, this one is %s", fn, dir,
                       optim_rule_name(m->rule), optim_rule_name(d->rule));
    if (m->ngroups != d->ngroups)
        return dm_fail(d, OPTIM_EMISMATCH, "%s: %s has %zu groups, this optimizer %zu", fn, dir, m->ngroups,
                       d->ngroups);
    if (m->nparams != d->nparams)
        return dm_fail(d, OPTIM_EMISMATCH, "%s: %s has %zu parameters, this optimizer %zu", fn, dir, m->nparams,
                       d->nparams);
    for (i = 0; i < d->nparams; i++) {
        const osc_param *p = &m->params[i];
        if (strcmp(p->name, d->names[i]) != 0)
            return dm_fail(d, OPTIM_EMISMATCH, "%s: %s: param %zu is '%s', here '%s'", fn, dir, i, p->name,
                           d->names[i]);
        if (p->n != d->L.n[i] || p->group != d->group[i])
            return dm_fail(d, OPTIM_EMISMATCH,
                           "%s: %s: param %zu '%s' has %zu elements in group %zu, here %zu in group %zu", fn, dir, i,
                           p->name, p->n, p->group, d->L.n[i], d->group[i]);
        if (p->flags != d->flags[i])
            return dm_fail(d, OPTIM_EMISMATCH,
                           "%s: %s: param %zu '%s' has storage flags 0x%x there (OPTIM_PARAM_MASTER 0x1, "
                           "OPTIM_PARAM_STOCHASTIC_ROUNDING 0x2), 0x%x here",
                           fn, dir, i, p->name, p->flags, d->flags[i]);
        if (p->pdt != d->pdt[i] || p->sdt != d->sdt[i])
            return dm_fail(d, OPTIM_EMISMATCH,
                           "%s: %s: param %zu '%s' has %s memory and %s state there, %s and %s here (the state is "
                           "loaded in the type it was saved in)",
                           fn, dir, i, p->name, optim_dtype_name(p->pdt), optim_dtype_name(p->sdt),
                           optim_dtype_name(d->pdt[i]), optim_dtype_name(d->sdt[i]));
        if (p->shape_given && d->shape_given[i]) {
            int same = p->ndim == d->ndim[i];
            for (k = 0; same && k < p->ndim; k++) same = p->dims[k] == d->dims[i][k];
            if (!same)
                return dm_fail(d, OPTIM_EMISMATCH, "%s: %s: param %zu '%s' has another shape there", fn, dir, i,
                               p->name);
        }
    }
    return OPTIM_OK;
}

int optim_mpi_load(optim_mpi *d, const char *dir)
{
    static const char fn[] = "optim_mpi_load";
    char *text = NULL, what[DM_PATH];
    long long len = 0;
    size_t tlen = 0;
    osc_manifest m;
    optim *nl = NULL;
    optim_sam *nsam = NULL;
    optim_error e;
    MPI_Request req;
    int rc = OPTIM_OK, mrc;
    if (!d) return OPTIM_ENULL;
    if (d->broken) return dm_fail(d, OPTIM_ESTATE, "%s: an earlier communication failure ended this handle", fn);
    memset(&m, 0, sizeof m);
    if (!dir)
        rc = dm_fail(d, OPTIM_ENULL, "%s: dir is NULL", fn);
    else if (strlen(dir) > DM_PATH - 300)
        rc = dm_fail(d, OPTIM_EINVAL, "%s: the directory name is too long (%zu bytes)", fn, strlen(dir));
    else if (d->sam && optim_sam_is_perturbed(d->sam))
        rc = dm_fail(d, OPTIM_ESTATE, "%s: between optim_mpi_sam_first_step and its second step", fn);
    else if (d->in_reduction)
        rc = dm_fail(d, OPTIM_ESTATE, "%s: gradients of this step were handed over (optim_mpi_grad_ready)", fn);
    else if (d->rank == 0) {
        rc = osc_manifest_read_text(dir, &text, &tlen, &e);
        if (rc != OPTIM_OK) dm_fail(d, rc, "%s: %s", fn, e.message);
        len = (long long)tlen;
    }
    rc = dm_agree(d, rc, 0, fn);
    if (rc != OPTIM_OK) {
        free(text);
        return rc;
    }
    /* Rank 0 read it; everyone parses the same bytes. */
    mrc = MPI_Ibcast(&len, 1, MPI_LONG_LONG, 0, d->ctl, &req);
    rc = mrc == MPI_SUCCESS ? dm_wait(d, &req, "optim_mpi_load: the manifest's size") : dm_mpi_fail(d, mrc, fn);
    if (rc != OPTIM_OK) {
        free(text);
        return rc;
    }
    if (d->rank != 0) text = (char *)malloc((size_t)len + 1);
    if (!text) return dm_fail(d, OPTIM_ECOMM, "%s: out of memory for the manifest (the ranks cannot go on)", fn);
    mrc = MPI_Ibcast(text, (int)len, MPI_CHAR, 0, d->ctl, &req);
    rc = mrc == MPI_SUCCESS ? dm_wait(d, &req, "optim_mpi_load: the manifest") : dm_mpi_fail(d, mrc, fn);
    if (rc != OPTIM_OK) {
        free(text);
        return rc;
    }
    d->stats.control_bytes += d->rank ? (uint64_t)len : 0;
    snprintf(what, sizeof what, "%s/%s", dir, OSC_MANIFEST);
    rc = osc_manifest_parse(text, (size_t)len, what, &m, &e);
    free(text);
    if (rc != OPTIM_OK) {
        dm_fail(d, rc, "%s: %s", fn, e.message);
    } else if ((rc = dm_manifest_matches(d, &m, dir, fn)) == OPTIM_OK) {
        /* A fresh local optimizer, filled from the shards; the current one stays until every rank succeeded. */
        rc = dm_local_build(d, d->local, &nl);
        if (rc == OPTIM_OK) {
            rc = osc_fill(&m, dir, nl, d->pieces, d->npieces, (void *const *)d->p, &e);
            if (rc != OPTIM_OK) dm_fail(d, rc, "%s: %s", fn, e.message);
        }
        if (rc == OPTIM_OK) rc = dm_local_prepare(d, nl, &nsam);
    }
    osc_manifest_free(&m);
    rc = dm_agree(d, rc, 0, fn);
    if (rc != OPTIM_OK) {
        optim_sam_free(nsam);
        optim_free(nl);
        return rc;
    }
    dm_local_commit(d, nl, nsam);
    return dm_ok(d);
}

int optim_mpi_merge(const char *dir, const char *out, optim_error *err)
{
    if (!dir || !out) {
        if (err) {
            err->code = OPTIM_ENULL;
            snprintf(err->message, sizeof err->message, "optim_mpi_merge: %s is NULL", !dir ? "dir" : "out");
        }
        return OPTIM_ENULL;
    }
    return osc_merge(dir, out, err);
}
