/* lab_rundir.c: the run directory of `optim lab`: claimed exclusively,
 * written under <dir>.partial, renamed when complete (or to <dir>.failed).
 *
 * Two runs never share a directory, and a run never renames onto another
 * run's directory:
 *  - the claim is mkdir(<dir>.partial), which must create it (EEXIST is
 *    never "fine"); for the default name runs/<name>-<stamp> a taken name
 *    moves on to <stamp>-2, -3, ...; an explicit --out is refused;
 *  - after the mkdir, <dir> (and for default names <dir>.failed) must still
 *    be absent or, for --out only, an empty directory: otherwise the claim is
 *    given back (a run that finished between the check and the mkdir);
 *  - the claim holds a lock (flock) on the marker file .optim-lab-run for the
 *    life of the process, so a live run's .partial is told from a crashed
 *    run's leftovers; only the latter are removed, only for an explicit --out,
 *    and only under a lock on the parent directory, which every claim holds;
 *  - the final rename is renameat2(RENAME_NOREPLACE) when <dir> did not exist
 *    (where it is not supported: mkdir(<dir>), which must create it, then a
 *    rename onto that empty directory); rename(2) onto the empty directory
 *    --out named otherwise. A rename never replaces anything but an empty
 *    directory, and a complete run's directory is never empty. */
#define _GNU_SOURCE /* renameat2, RENAME_NOREPLACE */
#include "lab.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* Every run directory holds this file while it is written (and after a
 * failure): only such directories are ever removed by the lab. */
#define LAB_MARKER ".optim-lab-run"

/* Every component of path, EEXIST allowed (parents of the run directory). */
static int mkdir_p(const char *path, char *msg, size_t msgsize)
{
    char *tmp = lab_xstrdup(path), *p;
    struct stat sb;
    for (p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0777) != 0 && errno != EEXIST) {
            snprintf(msg, msgsize, "cannot create directory %.900s: %s", tmp, strerror(errno));
            free(tmp);
            return -1;
        }
        *p = '/';
    }
    if (mkdir(tmp, 0777) != 0 && errno != EEXIST) {
        snprintf(msg, msgsize, "cannot create directory %.900s: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    free(tmp);
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        snprintf(msg, msgsize, "%.900s exists and is not a directory", path);
        return -1;
    }
    return 0;
}

/* 1 if path does not exist, 2 if it is an empty directory, 0 if it is
 * anything else (a file, a link, a directory with files); -1 if that cannot
 * be told (a parent is not a directory, no permission): creating it will
 * then fail with the precise reason. */
static int path_state(const char *path)
{
    struct stat sb;
    DIR *d;
    struct dirent *e;
    int empty = 1;
    if (lstat(path, &sb) != 0) return errno == ENOENT ? 1 : -1;
    if (!S_ISDIR(sb.st_mode)) return 0;
    d = opendir(path);
    if (!d) return -1;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            empty = 0;
            break;
        }
    closedir(d);
    return empty ? 2 : 0;
}

static int exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0 || errno != ENOENT;
}

static int is_lab_dir(const char *path)
{
    char *m = lab_sprintf("%s/" LAB_MARKER, path);
    struct stat sb;
    int yes = lstat(path, &sb) == 0 && S_ISDIR(sb.st_mode) && lstat(m, &sb) == 0 && S_ISREG(sb.st_mode);
    free(m);
    return yes;
}

/* The pid of the live run writing dir (its marker is locked), or 0 when no
 * live process holds it (a crashed or finished run's leftovers). */
static long live_owner(const char *dir)
{
    char *m = lab_sprintf("%s/" LAB_MARKER, dir), buf[128];
    int fd = open(m, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    long pid = 0;
    free(m);
    if (fd < 0) return 0;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        ssize_t n = read(fd, buf, sizeof buf - 1);
        const char *p;
        buf[n > 0 ? n : 0] = '\0';
        p = strstr(buf, "pid ");
        pid = p ? strtol(p + 4, NULL, 10) : 0;
        if (pid <= 0) pid = -1; /* live, pid unknown */
    }
    close(fd);
    return pid;
}

static int remove_tree(const char *path)
{
    struct stat sb;
    DIR *d;
    struct dirent *e;
    /* lstat: a symbolic link is removed, never followed. */
    if (lstat(path, &sb) != 0) return -1;
    if (!S_ISDIR(sb.st_mode)) return unlink(path);
    d = opendir(path);
    if (!d) return -1;
    while ((e = readdir(d)) != NULL) {
        char *child;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        child = lab_sprintf("%s/%s", path, e->d_name);
        remove_tree(child);
        free(child);
    }
    closedir(d);
    return rmdir(path);
}

/* rename(from, to) that never replaces an existing to (see the top). */
static int rename_noreplace(const char *from, const char *to)
{
#ifdef RENAME_NOREPLACE
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) return -1;
#endif
    if (mkdir(to, 0777) != 0) return -1; /* EEXIST: someone else's */
    if (rename(from, to) == 0) return 0;
    {
        int e = errno;
        rmdir(to);
        errno = e;
    }
    return -1;
}

/* The parent directory of path (a copy): "." when it has none. */
static char *parent_of(const char *path)
{
    char *p = lab_xstrdup(path), *slash = strrchr(p, '/');
    if (!slash) {
        free(p);
        return lab_xstrdup(".");
    }
    if (slash == p) slash[1] = '\0'; /* "/x": the root */
    else *slash = '\0';
    return p;
}

/* Create dir/.optim-lab-run exclusively and lock it for the life of the process. */
static int make_marker(lab_run_dir *rd, char *msg, size_t msgsize)
{
    char *m = lab_sprintf("%s/" LAB_MARKER, rd->work_dir), line[96];
    int fd = open(m, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644), n;
    free(m);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(msg, msgsize, "output directory %.900s is not writable: %s", rd->work_dir, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    n = snprintf(line, sizeof line, "optim lab run in progress or failed, pid %ld\n", (long)getpid());
    if (write(fd, line, (size_t)n) != n) {
        snprintf(msg, msgsize, "output directory %.900s is not writable: %s", rd->work_dir, strerror(errno));
        close(fd);
        return -1;
    }
    rd->lock_fd = fd;
    return 0;
}

int lab_run_dir_claim(lab_run_dir *rd, const char *out, const char *name, char *msg, size_t msgsize)
{
    char base[4000], *parent;
    int pfd, k, rc = 1, explicit_out = out != NULL;
    memset(rd, 0, sizeof *rd);
    rd->lock_fd = -1;
    msg[0] = '\0';
    if (out) {
        size_t len = strlen(out);
        while (len > 1 && out[len - 1] == '/') len--;
        if (len >= sizeof base) {
            snprintf(msg, msgsize, "--out %.200s...: the name is too long", out);
            return 2;
        }
        snprintf(base, sizeof base, "%.*s", (int)len, out);
    } else {
        snprintf(base, sizeof base, "runs/%.200s", name);
    }
    parent = parent_of(base);
    if (mkdir_p(parent, msg, msgsize) != 0) {
        free(parent);
        return 1;
    }
    /* The parent's lock makes the claim one step for every run of the lab,
     * also the removal of a crashed run's leftovers. */
    pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (pfd < 0 || flock(pfd, LOCK_EX) != 0) {
        snprintf(msg, msgsize, "cannot use directory %.900s: %s", parent, strerror(errno));
        if (pfd >= 0) close(pfd);
        free(parent);
        return 1;
    }
    free(parent);
    for (k = 1; k <= 999; k++) {
        int state;
        if (k == 1) snprintf(rd->final_dir, sizeof rd->final_dir, "%s", base);
        else snprintf(rd->final_dir, sizeof rd->final_dir, "%s-%d", base, k);
        snprintf(rd->work_dir, sizeof rd->work_dir, "%s.partial", rd->final_dir);
        snprintf(rd->failed_dir, sizeof rd->failed_dir, "%s.failed", rd->final_dir);
        state = path_state(rd->final_dir);
        if (explicit_out) {
            if (state == 0) {
                snprintf(msg, msgsize, "--out %.900s exists and is not an empty directory; choose another or "
                                       "remove it",
                         rd->final_dir);
                rc = 2;
                goto out;
            }
        } else if (state == 0 || state == 2 || exists(rd->failed_dir)) {
            continue; /* taken: the next name */
        }
        if (mkdir(rd->work_dir, 0777) != 0) {
            long pid;
            if (errno != EEXIST) {
                snprintf(msg, msgsize, "cannot create directory %.900s: %s", rd->work_dir, strerror(errno));
                goto out;
            }
            if (!explicit_out) continue;
            /* --out: a crashed run's leftovers go; a live run's or anything else stays. */
            if (!is_lab_dir(rd->work_dir)) {
                snprintf(msg, msgsize, "%.900s exists and is not a directory of an interrupted run; remove it "
                                       "or choose another --out",
                         rd->work_dir);
                rc = 2;
                goto out;
            }
            pid = live_owner(rd->work_dir);
            if (pid != 0) {
                char who[48] = "";
                if (pid > 0) snprintf(who, sizeof who, " (pid %ld)", pid);
                snprintf(msg, msgsize, "--out %.900s: another optim lab run%s is writing it (%.900s); wait for it "
                                       "or choose another --out",
                         rd->final_dir, who, rd->work_dir);
                rc = 2;
                goto out;
            }
            fprintf(stderr, "optim lab: removing %s, left by an interrupted run\n", rd->work_dir);
            remove_tree(rd->work_dir);
            if (mkdir(rd->work_dir, 0777) != 0) {
                snprintf(msg, msgsize, "cannot create directory %.900s: %s", rd->work_dir, strerror(errno));
                goto out;
            }
        }
        /* Claimed. A run may have finished into the name between the check
         * and the mkdir: then the claim is given back. */
        state = path_state(rd->final_dir);
        if (state == 0 || state == -1 || (!explicit_out && (state != 1 || exists(rd->failed_dir)))) {
            rmdir(rd->work_dir);
            if (!explicit_out) continue;
            snprintf(msg, msgsize, "--out %.900s exists and is not an empty directory; choose another or remove it",
                     rd->final_dir);
            rc = 2;
            goto out;
        }
        rd->final_was_empty_dir = state == 2;
        if (make_marker(rd, msg, msgsize) != 0) {
            remove_tree(rd->work_dir);
            goto out;
        }
        rc = 0;
        goto out;
    }
    snprintf(msg, msgsize, "%.900s and 998 numbered names after it are taken", base);
out:
    close(pfd); /* releases the parent's lock */
    return rc;
}

int lab_run_dir_finish(lab_run_dir *rd, int failed)
{
    int rc;
    if (failed) {
        /* An explicit --out's earlier failure is replaced (default names
         * never reuse a name whose .failed exists). */
        if (is_lab_dir(rd->failed_dir) && live_owner(rd->failed_dir) == 0) remove_tree(rd->failed_dir);
        rc = rename_noreplace(rd->work_dir, rd->failed_dir);
        return rc; /* the marker stays: the lab may remove this directory later */
    }
    if (rd->final_was_empty_dir)
        rc = rename(rd->work_dir, rd->final_dir); /* onto the empty directory --out named, never a run's */
    else
        rc = rename_noreplace(rd->work_dir, rd->final_dir);
    if (rc == 0) {
        char *m = lab_sprintf("%s/" LAB_MARKER, rd->final_dir);
        unlink(m);
        free(m);
    }
    return rc;
}

void lab_run_dir_release(lab_run_dir *rd)
{
    if (rd->lock_fd >= 0) close(rd->lock_fd);
    rd->lock_fd = -1;
}
