/* mpi_comm.c: errors, waiting with a timeout, and the agreement that makes a
 * failure on one rank a failure on every rank. */
#define _POSIX_C_SOURCE 200809L
#include "mpi_internal.h"

#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int dm_fail(optim_mpi *d, int code, const char *fmt, ...)
{
    va_list ap;
    d->err.code = code;
    va_start(ap, fmt);
    vsnprintf(d->err.message, sizeof d->err.message, fmt, ap);
    va_end(ap);
    return code;
}

int dm_ok(optim_mpi *d)
{
    d->err.code = OPTIM_OK;
    d->err.message[0] = '\0';
    return OPTIM_OK;
}

int dm_mpi_fail(optim_mpi *d, int mpi_rc, const char *what)
{
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(mpi_rc, s, &len) != MPI_SUCCESS) snprintf(s, sizeof s, "MPI error %d", mpi_rc);
    d->broken = 1;
    return dm_fail(d, OPTIM_ECOMM,
                   "rank %d of %d: %s failed: %s (another rank may have died; this communicator is no longer usable: "
                   "call MPI_Abort)",
                   d->rank, d->K, what, s);
}

/* After a timeout: which ranks are alive and waiting too? Every rank that
 * times out sends a token to every other on the control communicator (a tag
 * of its own, beside the stuck collective) and listens for theirs for a
 * while; the ranks not heard from are the ones that stopped, died or are
 * busy elsewhere. Writes "rank 2 did not answer ..." into out. */
#define DM_PROBE_TAG 0x6f70
static void dm_probe(optim_mpi *d, char *out, size_t n)
{
    static const int token = 1; /* never freed: a send may outlive the handle */
    int K = d->K, r, heard = 0, missing = 0;
    MPI_Request *rq = (MPI_Request *)malloc(2 * (size_t)K * sizeof *rq);
    int *got = (int *)calloc((size_t)K, sizeof *got), *buf = (int *)calloc((size_t)K, sizeof *buf);
    double window = d->timeout < 2 ? 2 : (d->timeout > 30 ? 30 : d->timeout), t0 = MPI_Wtime();
    size_t len = 0;
    out[0] = '\0';
    if (!rq || !got || !buf) {
        free(rq);
        free(got);
        free(buf);
        return;
    }
    for (r = 0; r < K; r++) {
        rq[r] = rq[K + r] = MPI_REQUEST_NULL;
        if (r == d->rank) continue;
        MPI_Irecv(&buf[r], 1, MPI_INT, r, DM_PROBE_TAG, d->ctl, &rq[r]);
        MPI_Isend(&token, 1, MPI_INT, r, DM_PROBE_TAG, d->ctl, &rq[K + r]);
    }
    while (heard < K - 1 && MPI_Wtime() - t0 < window) {
        struct timespec ts = {0, 1000000};
        for (r = 0; r < K; r++) {
            int flag = 0;
            if (r == d->rank || got[r]) continue;
            if (MPI_Test(&rq[r], &flag, MPI_STATUS_IGNORE) == MPI_SUCCESS && flag) {
                got[r] = 1;
                heard++;
            }
        }
        nanosleep(&ts, NULL);
    }
    for (r = 0; r < K && len < n; r++) {
        if (r == d->rank || got[r]) continue;
        len += (size_t)snprintf(out + len, n - len, "%s%d", missing++ ? ", " : "", r);
        MPI_Cancel(&rq[r]);
        MPI_Request_free(&rq[r]);
    }
    for (r = 0; r < K; r++)
        if (rq[K + r] != MPI_REQUEST_NULL) MPI_Request_free(&rq[K + r]);
    if (len < n) {
        if (missing)
            snprintf(out + len, n - len, " did not answer within %g s more (stopped, died, or busy elsewhere)", window);
        else
            snprintf(out + len, n - len, "every rank answered: they are waiting in calls that do not match");
    }
    if (missing) {
        /* "rank 2 did not answer", or "ranks 1, 2 did not answer". */
        char tmp[256];
        snprintf(tmp, sizeof tmp, "%s%.240s", missing > 1 ? "ranks " : "rank ", out);
        snprintf(out, n, "%.*s", (int)(n - 1), tmp);
    }
    free(rq);
    free(got);
    free(buf);
}

int dm_wait(optim_mpi *d, MPI_Request *req, const char *what)
{
    double t0 = MPI_Wtime(), now = t0;
    long nap = 0; /* nanoseconds between polls, once polling hard has not been enough */
    for (;;) {
        int flag = 0, rc = MPI_Test(req, &flag, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return dm_mpi_fail(d, rc, what);
        if (flag) break;
        now = MPI_Wtime();
        if (d->timeout > 0 && now - t0 > d->timeout) {
            char who[200];
            d->broken = 1;
            dm_probe(d, who, sizeof who);
            return dm_fail(d, OPTIM_ECOMM,
                           "rank %d of %d: %s did not complete within %g s: %s (this communicator is no longer "
                           "usable: call MPI_Abort)",
                           d->rank, d->K, what, d->timeout, who);
        }
        /* Poll hard for 50 us, then sleep between polls, 10 us doubling up to
         * 0.5 ms: a rank that waits long (for a slower rank, or on a machine
         * with more ranks than cores) must leave the CPU to the others. MPI
         * moves the data inside MPI_Test. */
        if (now - t0 > 50e-6) {
            struct timespec ts;
            nap = nap ? (nap < 500000 ? nap * 2 : 500000) : 10000;
            ts.tv_sec = 0;
            ts.tv_nsec = nap;
            nanosleep(&ts, NULL);
        }
    }
    d->stats.wait_seconds += MPI_Wtime() - t0;
    return OPTIM_OK;
}

int dm_allreduce_min(optim_mpi *d, MPI_Comm c, long long *v, int n, const char *what)
{
    MPI_Request req;
    long long in[8];
    int rc;
    memcpy(in, v, (size_t)n * sizeof *v);
    rc = MPI_Iallreduce(in, v, n, MPI_LONG_LONG, MPI_MIN, c, &req);
    if (rc != MPI_SUCCESS) return dm_mpi_fail(d, rc, what);
    d->stats.control_bytes += (uint64_t)n * sizeof *v;
    return dm_wait(d, &req, what);
}

/* What a failing rank tells the others. */
typedef struct dm_msg {
    int code;
    char message[OPTIM_ERRMSG_MAX];
} dm_msg;

int dm_agree(optim_mpi *d, int rc, uint64_t hash, const char *fn)
{
    long long v[4];
    char what[96];
    int wrc;
    snprintf(what, sizeof what, "%s: the agreement of the ranks", fn);
    hash &= ((uint64_t)1 << 62) - 1;
    v[0] = rc != OPTIM_OK ? d->rank : d->K; /* the lowest failing rank */
    v[1] = (long long)hash;
    v[2] = -(long long)hash;
    v[3] = rc != OPTIM_OK; /* 1 when every rank failed */
    if (rc == OPTIM_ECOMM) return rc; /* the communicator cannot be trusted any more */
    wrc = dm_allreduce_min(d, d->ctl, v, 4, what);
    if (wrc != OPTIM_OK) return wrc;
    if (v[0] < d->K) {
        dm_msg m;
        MPI_Request req;
        int root = (int)v[0], mrc;
        memset(&m, 0, sizeof m);
        if (d->rank == root) {
            m.code = rc;
            /* A failure every rank shares (a non-finite averaged gradient) is nobody's in particular. */
            if (strncmp(d->err.message, "rank ", 5) == 0 || v[3] == 1)
                snprintf(m.message, sizeof m.message, "%s", d->err.message);
            else
                snprintf(m.message, sizeof m.message, "rank %d of %d: %.290s", d->rank, d->K, d->err.message);
        }
        mrc = MPI_Ibcast(&m, (int)sizeof m, MPI_BYTE, root, d->ctl, &req);
        if (mrc != MPI_SUCCESS) return dm_mpi_fail(d, mrc, what);
        d->stats.control_bytes += sizeof m;
        wrc = dm_wait(d, &req, what);
        if (wrc != OPTIM_OK) return wrc;
        m.message[sizeof m.message - 1] = '\0';
        return dm_fail(d, m.code, "%s", m.message);
    }
    if (v[1] != -v[2]) {
        /* The ranks' settings drifted apart since the last check: name the
         * difference (collective, on every rank). */
        int crc = dm_config_check(d, d->local, 0, fn);
        if (crc != OPTIM_OK) return crc;
        return dm_fail(d, OPTIM_EMISMATCH, "%s: the ranks' settings differ (in a way the comparison cannot name)", fn);
    }
    return OPTIM_OK;
}
