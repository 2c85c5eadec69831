/* ckpt_file.c: durable file I/O for checkpoints (see ckpt_file.h).
 *
 * Writing: a temporary file next to the target (the file a symbolic link
 * finally points to), created with O_EXCL under a unique name, filled through
 * a 64 KiB buffer, fsync'ed, renamed over the target, and the directory
 * fsync'ed. Reading: a regular file opened without blocking, read (not
 * mapped) into memory. */
#define _POSIX_C_SOURCE 200809L
#include "ckpt_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CK_MAX_LINKS 40 /* symbolic links followed, as the kernel's limit */
#define CK_BUF (1u << 16)

/* ---- The system calls, through ops ------------------------------------------- */

static int ck_sys_open(void *ctx, const char *path, int flags, mode_t mode)
{
    (void)ctx;
    return open(path, flags, mode);
}

static ssize_t ck_sys_write(void *ctx, int fd, const void *buf, size_t n)
{
    (void)ctx;
    return write(fd, buf, n);
}

static int ck_sys_fsync(void *ctx, int fd)
{
    (void)ctx;
    return fsync(fd);
}

const optim__ck_ops optim__ck_default_ops = {ck_sys_open, ck_sys_write, ck_sys_fsync, NULL, NULL};

/* A full disk, inode table, quota or file-size limit: OPTIM_ENOSPC, whichever
 * call met it (creating the file, writing, fsync, close, rename). */
static int ck_is_nospace(int e)
{
    return e == ENOSPC || e == EFBIG
#ifdef EDQUOT
           || e == EDQUOT
#endif
        ;
}

static int ck_errno_code(int e, int otherwise)
{
    return ck_is_nospace(e) ? OPTIM_ENOSPC : otherwise;
}

/* ---- Writing ------------------------------------------------------------------ */

typedef struct ck_out {
    int fd;
    const optim__ck_ops *ops;
    unsigned char *buf;
    size_t used;
    uint64_t total;
} ck_out;

/* Write the buffer out; 0 or an errno. */
static int ck_flush(ck_out *f)
{
    size_t off = 0;
    while (off < f->used) {
        ssize_t k = f->ops->write(f->ops->ctx, f->fd, f->buf + off, f->used - off);
        if (k < 0) {
            if (errno == EINTR) continue;
            f->used = 0;
            return errno ? errno : EIO;
        }
        if (k == 0) { /* no progress and no error: do not spin */
            f->used = 0;
            return EIO;
        }
        off += (size_t)k;
    }
    f->used = 0;
    return 0;
}

static int ck_emit_file(void *ctx, const void *data, size_t n)
{
    ck_out *f = (ck_out *)ctx;
    const unsigned char *p = (const unsigned char *)data;
    f->total += n;
    while (n > 0) {
        size_t room = CK_BUF - f->used, k = n < room ? n : room;
        memcpy(f->buf + f->used, p, k);
        f->used += k;
        p += k;
        n -= k;
        if (f->used == CK_BUF) {
            int e = ck_flush(f);
            if (e) return e;
        }
    }
    return 0;
}

/* The directory part of path ("." if none). */
static char *ck_dirname(const char *path, const optim__ck_ops *ops)
{
    const char *slash = strrchr(path, '/');
    size_t len = slash ? (size_t)(slash - path) : 1;
    char *d = (char *)optim__ck_malloc(ops, len + 2);
    if (!d) return NULL;
    if (!slash)
        strcpy(d, ".");
    else if (len == 0)
        strcpy(d, "/");
    else {
        memcpy(d, path, len);
        d[len] = '\0';
    }
    return d;
}

/* What kind of file st describes, for messages: "a character device", ... */
static const char *ck_file_kind(mode_t m)
{
    if (S_ISDIR(m)) return "a directory";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISFIFO(m)) return "a FIFO (named pipe)";
    if (S_ISSOCK(m)) return "a socket";
    if (S_ISLNK(m)) return "a symbolic link";
    return "not a regular file";
}

/* The file that is replaced: path itself or, if path is a symbolic link,
 * the file the chain of links ends at (which may not exist yet: it is then
 * created, as a shell's `>` does). Only a regular file (or nothing) may be
 * replaced: a directory, device, FIFO or socket is refused. *mode receives
 * the permission bits of the file replaced (-1 if none). *target is malloc'ed. */
static int ck_save_target(const char *path, const char *fn, char **target, int *mode, const optim__ck_ops *ops,
                          optim_error *err)
{
    char *cur = optim__ck_strdup(ops, path);
    int hops;
    struct stat st;
    *target = NULL;
    *mode = -1;
    OPTIM__FAIL_IF(!cur, err, OPTIM_ENOMEM, "%s: %s: out of memory", fn, path);
    for (hops = 0;; hops++) {
        char *link = NULL, *next;
        size_t cap = 256;
        ssize_t len;
        if (lstat(cur, &st) != 0) {
            /* Nothing there (or nothing we may look at): a new file, whose
             * creation reports what is wrong. */
            *target = cur;
            return OPTIM_OK;
        }
        if (!S_ISLNK(st.st_mode)) break;
        if (hops == CK_MAX_LINKS) {
            free(cur);
            return optim__fail(err, OPTIM_EOPEN, "%s: %s: more than %d symbolic links", fn, path, CK_MAX_LINKS);
        }
        for (;;) { /* st_size of a link may be 0 (procfs): grow until the target fits */
            free(link);
            link = (char *)optim__ck_malloc(ops, cap);
            if (!link) break;
            len = readlink(cur, link, cap);
            if (len < 0 || (size_t)len < cap) break;
            cap *= 2;
        }
        if (!link || len < 0) {
            int e = errno;
            free(link);
            free(cur);
            if (!link) return optim__fail(err, OPTIM_ENOMEM, "%s: %s: out of memory", fn, path);
            return optim__fail(err, OPTIM_EOPEN, "%s: %s: cannot read the symbolic link: %s", fn, path, strerror(e));
        }
        link[len] = '\0';
        if (link[0] == '/' || !strchr(cur, '/')) {
            next = link; /* absolute, or relative to "." where cur is */
            link = NULL;
        } else {
            size_t dlen = (size_t)(strrchr(cur, '/') - cur) + 1;
            next = (char *)optim__ck_malloc(ops, dlen + (size_t)len + 1);
            if (next) {
                memcpy(next, cur, dlen);
                memcpy(next + dlen, link, (size_t)len + 1);
            }
        }
        free(link);
        free(cur);
        cur = next;
        OPTIM__FAIL_IF(!cur, err, OPTIM_ENOMEM, "%s: %s: out of memory", fn, path);
    }
    if (!S_ISREG(st.st_mode)) {
        int rc = strcmp(cur, path) == 0
                     ? optim__fail(err, OPTIM_EOPEN, "%s: %s is %s: only a regular file is replaced", fn, path,
                                   ck_file_kind(st.st_mode))
                     : optim__fail(err, OPTIM_EOPEN,
                                   "%s: %s is a symbolic link to %s, which is %s: only a regular file is replaced", fn,
                                   path, cur, ck_file_kind(st.st_mode));
        free(cur);
        return rc;
    }
    *mode = (int)(st.st_mode & 0777);
    *target = cur;
    return OPTIM_OK;
}

/* Create the temporary file next to target: O_EXCL under a unique name, with
 * the usual permissions (those of the file replaced are given later). *tmp
 * receives its name; on failure *tmp is NULL, *e the errno. */
static int ck_create_temp(const char *target, const char *dir, char *tmp, size_t cap, const optim__ck_ops *ops, int *e)
{
    int fd = -1, attempt, long_name = 0;
    for (attempt = 0; attempt < 100 && fd < 0; attempt++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        /* target.tmp-..., or, when that name is too long for the file system (a
         * target name near NAME_MAX), a short hidden name in the same directory. */
        if (long_name)
            snprintf(tmp, cap, "%s/.optim-%ld-%ld-%d.tmp", dir, (long)getpid(), (long)ts.tv_nsec, attempt);
        else
            snprintf(tmp, cap, "%s.tmp-%ld-%ld-%d", target, (long)getpid(), (long)ts.tv_nsec, attempt);
        errno = 0;
        fd = ops->open(ops->ctx, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno == ENAMETOOLONG && !long_name) {
            const char *base = strrchr(target, '/');
            long name_max = pathconf(dir, _PC_NAME_MAX);
            base = base ? base + 1 : target;
            if (name_max > 0 && strlen(base) > (size_t)name_max) {
                errno = ENAMETOOLONG; /* the target itself cannot exist: say so before writing anything */
                break;
            }
            long_name = 1;
            continue;
        }
        if (fd < 0 && errno != EEXIST) break;
    }
    *e = fd < 0 ? (errno ? errno : EIO) : 0;
    return fd;
}

int optim__ck_file_replace(const char *path, const char *fn, uint64_t size, optim__ck_produce produce, void *pctx,
                           const optim__ck_ops *ops, optim_error *err)
{
    ck_out out;
    char *tmp = NULL, *dir = NULL, *target = NULL;
    int fd = -1, rc = OPTIM_OK, e, mode;
    size_t cap;
    memset(&out, 0, sizeof out);
    OPTIM__FORWARD(ck_save_target(path, fn, &target, &mode, ops, err));
    cap = strlen(target) + 64;
    tmp = (char *)optim__ck_malloc(ops, cap);
    dir = tmp ? ck_dirname(target, ops) : NULL; /* before anything is written: nothing fails after the rename but fsync */
    out.buf = dir ? (unsigned char *)optim__ck_malloc(ops, CK_BUF) : NULL;
    if (!out.buf) {
        rc = optim__fail(err, OPTIM_ENOMEM, "%s: %s: out of memory", fn, path);
        goto done;
    }
    fd = ck_create_temp(target, dir, tmp, cap, ops, &e);
    if (fd < 0) {
        /* The reason first: a long path would push it past the message's size.
         * No inode or quota left is a full disk (OPTIM_ENOSPC), as for the writes. */
        rc = optim__fail(err, ck_errno_code(e, OPTIM_EOPEN), "%s: cannot create a temporary file (%s) next to %s", fn,
                         strerror(e), target);
        free(tmp);
        tmp = NULL; /* nothing to remove */
        goto done;
    }
    if (mode >= 0 && fchmod(fd, (mode_t)mode) != 0) {
        e = errno;
        rc = optim__fail(err, OPTIM_EWRITE, "%s: giving %s the permissions of %s failed: %s", fn, tmp, target,
                         strerror(e));
        goto done;
    }
    out.fd = fd;
    out.ops = ops;
    e = produce(pctx, ck_emit_file, &out);
    if (!e) e = ck_flush(&out);
    if (!e && out.total != size) e = EIO;
    if (e) {
        rc = optim__fail(err, ck_errno_code(e, OPTIM_EWRITE), "%s: writing %s (for %s) failed: %s", fn, tmp, path,
                         strerror(e));
        goto done;
    }
    if (ops->fsync(ops->ctx, fd) != 0) {
        e = errno;
        rc = optim__fail(err, ck_errno_code(e, OPTIM_EWRITE), "%s: flushing %s (for %s) to disk failed: %s", fn, tmp,
                         path, strerror(e));
        goto done;
    }
    e = close(fd) != 0 ? errno : 0;
    fd = -1;
    if (e) {
        rc = optim__fail(err, ck_errno_code(e, OPTIM_EWRITE), "%s: closing %s (for %s) failed: %s", fn, tmp, path,
                         strerror(e));
        goto done;
    }
    if (rename(tmp, target) != 0) {
        e = errno; /* ENOSPC, EDQUOT: no room for the directory entry */
        rc = optim__fail(err, ck_errno_code(e, OPTIM_EWRITE), "%s: renaming %s to %s failed: %s", fn, tmp, target,
                         strerror(e));
        goto done;
    }
    free(tmp);
    tmp = NULL;
    /* Make the rename itself durable. File systems that cannot sync a
     * directory say EINVAL; a directory we may not open for reading cannot be
     * synced (and is not). */
    {
        int dfd = open(dir, O_RDONLY | O_CLOEXEC);
        if (dfd >= 0) {
            if (ops->fsync(ops->ctx, dfd) != 0 && errno != EINVAL) {
                e = errno;
                rc = optim__fail(err, ck_errno_code(e, OPTIM_EWRITE),
                                 "%s: %s was written but syncing its directory %s failed (the new checkpoint is in "
                                 "place, but may not survive a power loss): %s",
                                 fn, path, dir, strerror(e));
            }
            close(dfd);
        }
    }
done:
    if (fd >= 0) close(fd);
    if (tmp) unlink(tmp); /* on failure: the old file at path is untouched */
    free(tmp);
    free(dir);
    free(target);
    free(out.buf);
    return rc;
}

/* ---- Reading ------------------------------------------------------------------ */

int optim__ck_file_read(const char *path, unsigned char **data, size_t *size, const optim__ck_ops *ops,
                        optim_error *err)
{
    struct stat st;
    int fd, e;
    unsigned char *buf;
    size_t got = 0;
    *data = NULL;
    *size = 0;
    /* Only a regular file is read: opened without blocking (a FIFO would wait
     * for a writer for ever, a terminal could become the controlling one) and
     * refused unless fstat says it is a regular file. */
    fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        e = errno;
        return optim__fail(err, OPTIM_EOPEN, "%s: cannot open: %s", path, strerror(e));
    }
    if (fstat(fd, &st) != 0) {
        e = errno;
        close(fd);
        return optim__fail(err, OPTIM_EREAD, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return optim__fail(err, OPTIM_EREAD, "%s: is %s, not a checkpoint file (a regular file)", path,
                           ck_file_kind(st.st_mode));
    }
    if (st.st_size == 0) {
        close(fd);
        return OPTIM_OK;
    }
    if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        return optim__fail(err, OPTIM_EREAD, "%s: %lld bytes do not fit in memory", path, (long long)st.st_size);
    }
    /* Read, not mmap: a mapped file that another process truncates while it is
     * parsed (cp or rsync --inplace over it) kills the reader with SIGBUS,
     * which a library cannot catch. A read copy can only come out short or
     * inconsistent, which the decoder reports as a truncated or corrupt file.
     * O_NONBLOCK does not change reads of a regular file. */
    buf = (unsigned char *)optim__ck_malloc(ops, (size_t)st.st_size);
    if (!buf) {
        close(fd);
        return optim__fail(err, OPTIM_ENOMEM, "%s: out of memory for its %lld bytes", path, (long long)st.st_size);
    }
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            e = errno;
            close(fd);
            free(buf);
            return optim__fail(err, OPTIM_EREAD, "%s: read failed after %zu of %lld bytes: %s", path, got,
                               (long long)st.st_size, strerror(e));
        }
        if (r == 0) break; /* shrunk since fstat: the decoder says what is missing */
        got += (size_t)r;
    }
    close(fd);
    *data = buf;
    *size = got;
    return OPTIM_OK;
}
