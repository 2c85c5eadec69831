/* ckpt_robust.c: checkpoints against everything but a clean run: shapes
 * that differ, files of format 1 and files with sections a later library may
 * add, another optimizer's files, special files and symbolic links, failing
 * writes and fsyncs, a real full disk and inode table, a directory we may not
 * write, and every allocation failing in turn. Every refused load leaves the
 * optimizer exactly as it was. Damaged and contradictory bytes are in
 * ckpt_damage.c, the limits in ckpt_limits.c. */
#define _GNU_SOURCE /* mknod's S_IFCHR, setgroups */
#include "checkpoint_internal.h"
#include "ckpt_small.h"
#include "ckpt_util.h"
#include "ckpt_v1_fixture.h"
#include "optim_checkpoint.h"
#include "optim_sam.h"
#include "optim_schedule.h"
#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- Shapes ----------------------------------------------------------------------- */

TEST_IMPL(ckpt_shapes)
{
    rb_run src, dst;
    void *buf = NULL;
    size_t size, ndim;
    int64_t dims[OPTIM_MAX_NDIM];
    static const int64_t s42[2] = {4, 2}, s24[2] = {2, 4}, s7[1] = {7}, neg[2] = {-4, -2}, s15[2] = {1, 5};
    int given;
    float one[1], gone[1];
    size_t idx;
    if (rb_build(&src, 1, 3)) return 1;
    /* The API: validated, default [n]. */
    ASSERT_OPT_OK(src.o, optim_param_get_shape(src.o, 0, &ndim, dims, &given));
    ASSERT(ndim == 1 && dims[0] == 8 && given == 0);
    ASSERT_ERR(optim_param_set_shape(src.o, 0, 1, s7), OPTIM_EINVAL, optim_errmsg(src.o),
               "with 7 elements for param 0 'a' of 8 elements");
    ASSERT_ERR(optim_param_set_shape(src.o, 0, 2, neg), OPTIM_EINVAL, optim_errmsg(src.o), "dims[0] = -4");
    ASSERT_ERR(optim_param_set_shape(src.o, 0, OPTIM_MAX_NDIM + 1, s42), OPTIM_EINVAL, optim_errmsg(src.o),
               "ndim = 65");
    ASSERT_ERR(optim_param_set_shape(src.o, 9, 2, s42), OPTIM_ERANGE, optim_errmsg(src.o), "param 9 does not exist");
    ASSERT_ERR(optim_param_set_shape(src.o, 0, 2, NULL), OPTIM_ENULL, optim_errmsg(src.o), "dims is NULL");
    ASSERT_ERR(optim_param_get_shape(src.o, 0, NULL, dims, NULL), OPTIM_ENULL, optim_errmsg(src.o), "ndim is NULL");
    ASSERT_OPT_OK(src.o, optim_param_set_shape(src.o, 0, 2, s42));
    ASSERT_OPT_OK(src.o, optim_param_get_shape(src.o, 0, &ndim, dims, &given));
    ASSERT(ndim == 2 && dims[0] == 4 && dims[1] == 2 && given == 1);
    ASSERT_OPT_OK(src.o, optim_param_set_shape(src.o, 2, 2, s15));
    /* A scalar: no dimensions, one element. */
    ASSERT_OPT_OK(src.o, optim_add_param(src.o, 0, one, gone, 1, "scalar", &idx));
    ASSERT_OPT_OK(src.o, optim_param_set_shape(src.o, idx, 0, NULL));
    ASSERT_OPT_OK(src.o, optim_param_get_shape(src.o, idx, &ndim, dims, &given));
    ASSERT(ndim == 0 && given == 1);
    optim_free(src.o);

    /* Adam state of a (4, 2) parameter refuses to load into a (2, 4) one, naming both. */
    if (rb_build(&src, 1, 3)) return 1;
    ASSERT_OPT_OK(src.o, optim_param_set_shape(src.o, 0, 2, s42));
    ASSERT_OPT_OK(src.o, optim_save_buffer(src.o, &buf, &size));
    if (rb_build(&dst, 0, 1)) return 1;
    ASSERT_OPT_OK(dst.o, optim_param_set_shape(dst.o, 0, 2, s24));
    if (expect_refused(dst.o, buf, size, OPTIM_MATCH_NAME, OPTIM_EMISMATCH,
                       "ck: param 0 'a' has shape [2, 4] in the optimizer, [4, 2] in the checkpoint"))
        return 1;
    if (expect_refused(dst.o, buf, size, OPTIM_MATCH_POSITION, OPTIM_EMISMATCH, "has shape [2, 4] in the optimizer"))
        return 1;
    /* The same shape loads, and keeps the optimizer's shapes. */
    ASSERT_OPT_OK(dst.o, optim_param_set_shape(dst.o, 0, 2, s42));
    ASSERT_OPT_OK(dst.o, optim_load_buffer(dst.o, buf, size, OPTIM_MATCH_NAME, "ck"));
    ASSERT(ckpt_same_state(dst.o, src.o));
    rb_free(&dst);
    /* A shape never given ([n], the default) matches any shape of n elements, both ways. */
    if (rb_build(&dst, 0, 1)) return 1;
    ASSERT_OPT_OK(dst.o, optim_load_buffer(dst.o, buf, size, OPTIM_MATCH_NAME, "ck"));
    ASSERT_OPT_OK(dst.o, optim_param_get_shape(dst.o, 0, &ndim, dims, &given));
    ASSERT(ndim == 1 && dims[0] == 8 && given == 0); /* the load does not give shapes */
    free(buf);
    ASSERT_OPT_OK(dst.o, optim_save_buffer(dst.o, &buf, &size)); /* default shapes saved */
    rb_free(&src);
    if (rb_build(&src, 0, 0)) return 1;
    ASSERT_OPT_OK(src.o, optim_param_set_shape(src.o, 0, 2, s24));
    ASSERT_OPT_OK(src.o, optim_load_buffer(src.o, buf, size, OPTIM_MATCH_NAME, "ck"));
    free(buf);
    rb_free(&src);
    rb_free(&dst);
    return 0;
}

/* ---- Format 1, and sections a later library may add -------------------------------------- */

TEST_IMPL(ckpt_format1_still_loads)
{
    optim *ref = NULL, *dst = NULL;
    unsigned char *bigger;
    size_t size;
    unsigned k;
    char dir[64], path[128];
    optim_checkpoint_info info;
    optim_error err;
    if (ckpt_v1_build(&ref, 1)) FAIL("cannot build the fixture's optimizer");
    if (ckpt_v1_build(&dst, 0)) FAIL("cannot build the optimizer to load into");
    ASSERT(ckpt_v1_bytes[8] == 1); /* it is format 1 */
    ASSERT_OPT_OK(dst, optim_load_buffer(dst, ckpt_v1_bytes, ckpt_v1_len, OPTIM_MATCH_NAME, "v1"));
    if (!ckpt_same_state(dst, ref)) FAIL("the format-1 checkpoint loads into another state than it was saved from");
    ASSERT_INT(optim_step_count(dst), ==, 3);
    ASSERT_INT(optim_skipped_steps(dst), ==, 1);
    /* From a file, with its info. */
    if (!ckpt_scratch(dir, sizeof dir)) FAIL("mkdtemp");
    snprintf(path, sizeof path, "%s/v1.ckpt", dir);
    ASSERT(ckpt_write_file(path, ckpt_v1_bytes, ckpt_v1_len) == 0);
    ASSERT_OK_MSG(optim_checkpoint_info_read(path, &info, &err), err.message);
    ASSERT_INT(info.format, ==, 1);
    ASSERT_INT(info.params, ==, 2);
    optim_free(dst);
    if (ckpt_v1_build(&dst, 0)) return 1;
    ASSERT_OPT_OK(dst, optim_load(dst, path, OPTIM_MATCH_POSITION));
    ASSERT(ckpt_same_state(dst, ref));
    /* With a section a later library added (may skip) anywhere: before META,
     * between groups, between params, at the end. Sections are 0 META, 1-2
     * GRUP, 3-4 PARM. */
    for (k = 0; k <= 5; k++) {
        optim_free(dst);
        if (ckpt_v1_build(&dst, 0)) return 1;
        bigger = ckpt_insert_section(ckpt_v1_bytes, ckpt_v1_len, k, "XTRA", 1, "hello", 5, &size);
        ASSERT(bigger);
        if (optim_load_buffer(dst, bigger, size, OPTIM_MATCH_NAME, "v1+XTRA") != OPTIM_OK)
            FAIL("a format-1 file with a skippable section before section %u is refused: %s", k, optim_errmsg(dst));
        if (!ckpt_same_state(dst, ref)) FAIL("skipping a section before section %u changed what loads", k);
        /* and one a reader must understand is refused */
        free(bigger);
        bigger = ckpt_insert_section(ckpt_v1_bytes, ckpt_v1_len, k, "XTRA", 0, "hello", 5, &size);
        if (expect_refused(dst, bigger, size, OPTIM_MATCH_NAME, OPTIM_EFORMAT,
                           "(XTRA): unknown section that a reader may not skip"))
            return 1;
        free(bigger);
    }
    /* Two at once, one of them empty, in a file of this library's format. */
    {
        void *cur;
        size_t n1, n2;
        unsigned char *one, *two;
        ASSERT_OPT_OK(ref, optim_save_buffer(ref, &cur, &n1));
        one = ckpt_insert_section((unsigned char *)cur, n1, 0, "ZZZZ", 1, NULL, 0, &n1);
        two = ckpt_insert_section(one, n1, 4, "XTRA", 1 | 0x80000000u, "hi", 2, &n2); /* other flag bits: ignored */
        optim_free(dst);
        if (ckpt_v1_build(&dst, 0)) return 1;
        ASSERT_OPT_OK(dst, optim_load_buffer(dst, two, n2, OPTIM_MATCH_NAME, "v2+2"));
        ASSERT(ckpt_same_state(dst, ref));
        free(cur);
        free(one);
        free(two);
    }
    optim_free(dst);
    optim_free(ref);
    ckpt_remove_tree(dir);
    return 0;
}

/* Refusals of another optimizer's checkpoint change nothing either. */
TEST_IMPL(ckpt_mismatch_changes_nothing)
{
    rb_run r, dst;
    optim *other = NULL;
    optim_hparams hp;
    void *good;
    size_t size;
    static const int64_t s24[2] = {2, 4}, s42[2] = {4, 2};
    float w[8], g[8];
    if (rb_build(&r, 1, 2) || rb_build(&dst, 1, 5)) return 1;
    ASSERT_OPT_OK(r.o, optim_param_set_shape(r.o, 0, 2, s42));
    ASSERT_OPT_OK(r.o, optim_save_buffer(r.o, &good, &size));
    ASSERT_OPT_OK(dst.o, optim_param_set_shape(dst.o, 0, 2, s24));
    if (expect_refused(dst.o, good, size, OPTIM_MATCH_NAME, OPTIM_EMISMATCH, "has shape [2, 4] in the optimizer"))
        return 1;
    /* Another rule. */
    ASSERT_OK(optim_create(&other, OPTIM_ADAMW));
    optim_hparams_init(&hp, OPTIM_ADAMW, NULL);
    ASSERT_OPT_OK(other, optim_add_group(other, &hp, NULL));
    ASSERT_OPT_OK(other, optim_add_param(other, 0, w, g, 8, "a", NULL));
    ASSERT_OPT_OK(other, optim_step(other));
    if (expect_refused(other, good, size, OPTIM_MATCH_NAME, OPTIM_EMISMATCH,
                       "the checkpoint is of rule adam, this optimizer's rule is adamw"))
        return 1;
    optim_free(other);
    /* Another group for a param, another size. */
    rb_free(&dst);
    {
        optim *o = NULL;
        float a[8], ga[8], b[3], gb[3], c[5], gc[5];
        ASSERT_OK(optim_create(&o, OPTIM_ADAM));
        optim_hparams_init(&hp, OPTIM_ADAM, NULL);
        ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
        ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
        ASSERT_OPT_OK(o, optim_add_param(o, 0, a, ga, 8, "a", NULL));
        ASSERT_OPT_OK(o, optim_add_param(o, 0, b, gb, 3, "b", NULL));
        ASSERT_OPT_OK(o, optim_add_param(o, 0, c, gc, 5, "c", NULL));
        if (expect_refused(o, good, size, OPTIM_MATCH_NAME, OPTIM_EMISMATCH,
                           "param 1 'b' is in group 0 in the optimizer, 1 in the checkpoint"))
            return 1;
        optim_free(o);
        o = NULL;
        ASSERT_OK(optim_create(&o, OPTIM_ADAM));
        ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
        ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
        ASSERT_OPT_OK(o, optim_add_param(o, 0, a, ga, 8, "a", NULL));
        ASSERT_OPT_OK(o, optim_add_param(o, 1, b, gb, 2, "b", NULL));
        ASSERT_OPT_OK(o, optim_add_param(o, 0, c, gc, 5, "c", NULL));
        if (expect_refused(o, good, size, OPTIM_MATCH_NAME, OPTIM_EMISMATCH,
                           "param 1 'b' has 2 elements in the optimizer, 3 in the checkpoint"))
            return 1;
        optim_free(o);
    }
    free(good);
    rb_free(&r);
    return 0;
}

/* ---- Special files and symbolic links ------------------------------------------------------- */

static int is_kind(const char *path, mode_t kind)
{
    struct stat st;
    return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == kind;
}

static int file_is(const char *path, const void *data, size_t size)
{
    unsigned char *d;
    size_t n;
    int same;
    if (ckpt_read_file(path, &d, &n)) return 0;
    same = n == size && memcmp(d, data, n) == 0;
    free(d);
    return same;
}

static int entries(const char *dir)
{
    char cmd[160];
    int n = 0;
    FILE *p;
    snprintf(cmd, sizeof cmd, "ls -A %s | wc -l", dir);
    p = popen(cmd, "r");
    if (!p || fscanf(p, "%d", &n) != 1) n = -1;
    if (p) pclose(p);
    return n;
}

TEST_IMPL(ckpt_special_files)
{
    rb_run r;
    char dir[64], p[8][160];
    void *buf;
    size_t size;
    pid_t pid;
    int status, fd;
    struct stat st;
    if (rb_build(&r, 1, 2)) return 1;
    ASSERT_OPT_OK(r.o, optim_save_buffer(r.o, &buf, &size));
    if (!ckpt_scratch(dir, sizeof dir)) FAIL("mkdtemp");
    /* Loading from a character device: its kind, not a stale errno. */
    ASSERT_ERR(optim_load(r.o, "/dev/null", OPTIM_MATCH_NAME), OPTIM_EREAD, optim_errmsg(r.o),
               "/dev/null: is a character device, not a checkpoint file");
    ASSERT(!strstr(optim_errmsg(r.o), "No such file"));
    /* Loading from a FIFO with no writer returns at once (a blocking open would wait for ever). */
    snprintf(p[0], sizeof p[0], "%s/fifo", dir);
    ASSERT(mkfifo(p[0], 0600) == 0);
    pid = fork();
    if (pid == 0) {
        alarm(10); /* a hang kills the child: the test fails instead of hanging */
        _exit(optim_load(r.o, p[0], OPTIM_MATCH_NAME) == OPTIM_EREAD && strstr(optim_errmsg(r.o), "is a FIFO") ? 0 : 1);
    }
    ASSERT(pid > 0 && waitpid(pid, &status, 0) == pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        FAIL("loading from a FIFO hung or failed otherwise (status %d)", status);
    /* Saving never replaces a FIFO, a device or a socket: it refuses. */
    ASSERT_ERR(optim_save(r.o, p[0]), OPTIM_EOPEN, optim_errmsg(r.o),
               "is a FIFO (named pipe): only a regular file is replaced");
    ASSERT(is_kind(p[0], S_IFIFO));
    snprintf(p[1], sizeof p[1], "%s/null", dir); /* a device node of our own, never a real one */
    if (mknod(p[1], S_IFCHR | 0600, makedev(1, 3)) == 0) {
        ASSERT_ERR(optim_save(r.o, p[1]), OPTIM_EOPEN, optim_errmsg(r.o), "is a character device");
        ASSERT(is_kind(p[1], S_IFCHR));
        unlink(p[1]);
    } else {
        printf("  (mknod: %s; the device case is not tested)\n", strerror(errno));
    }
    snprintf(p[2], sizeof p[2], "%s/sock", dir);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    {
        struct sockaddr_un a;
        memset(&a, 0, sizeof a);
        a.sun_family = AF_UNIX;
        ASSERT(strlen(p[2]) < sizeof a.sun_path);
        memcpy(a.sun_path, p[2], strlen(p[2]) + 1);
        ASSERT(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    }
    ASSERT_ERR(optim_save(r.o, p[2]), OPTIM_EOPEN, optim_errmsg(r.o), "is a socket");
    ASSERT(is_kind(p[2], S_IFSOCK));
    close(fd);
    unlink(p[2]);
    /* A symbolic link: the file it points to is replaced (the temporary file
     * next to it), the link stays. Through a chain of two, relative. */
    snprintf(p[3], sizeof p[3], "%s/real.ckpt", dir);
    snprintf(p[4], sizeof p[4], "%s/link", dir);
    snprintf(p[5], sizeof p[5], "%s/link2", dir);
    ASSERT(ckpt_write_file(p[3], "old", 3) == 0);
    ASSERT(chmod(p[3], 0640) == 0);
    ASSERT(symlink("real.ckpt", p[4]) == 0 && symlink("link", p[5]) == 0);
    ASSERT_OPT_OK(r.o, optim_save(r.o, p[5]));
    ASSERT(is_kind(p[4], S_IFLNK) && is_kind(p[5], S_IFLNK) && is_kind(p[3], S_IFREG));
    ASSERT(file_is(p[3], buf, size));
    ASSERT(stat(p[3], &st) == 0 && (st.st_mode & 0777) == 0640); /* the replaced file's permissions */
    ASSERT_OPT_OK(r.o, optim_load(r.o, p[4], OPTIM_MATCH_NAME));
    /* A dangling link: the file it names is created. */
    snprintf(p[6], sizeof p[6], "%s/dangling", dir);
    ASSERT(symlink("created.ckpt", p[6]) == 0);
    ASSERT_OPT_OK(r.o, optim_save(r.o, p[6]));
    ASSERT(is_kind(p[6], S_IFLNK));
    snprintf(p[7], sizeof p[7], "%s/created.ckpt", dir);
    ASSERT(file_is(p[7], buf, size));
    /* Links to a directory or a FIFO, and a loop, are refused. */
    unlink(p[6]);
    ASSERT(symlink(".", p[6]) == 0);
    ASSERT_ERR(optim_save(r.o, p[6]), OPTIM_EOPEN, optim_errmsg(r.o), "which is a directory");
    unlink(p[6]);
    ASSERT(symlink("fifo", p[6]) == 0);
    ASSERT_ERR(optim_save(r.o, p[6]), OPTIM_EOPEN, optim_errmsg(r.o), "which is a FIFO");
    ASSERT(is_kind(p[0], S_IFIFO));
    unlink(p[4]);
    unlink(p[5]);
    ASSERT(symlink("link2", p[4]) == 0 && symlink("link", p[5]) == 0);
    ASSERT_ERR(optim_save(r.o, p[4]), OPTIM_EOPEN, optim_errmsg(r.o), "more than 40 symbolic links");
    /* A new file gets the usual permissions (0666 less the umask). */
    unlink(p[7]);
    {
        mode_t old = umask(022);
        ASSERT_OPT_OK(r.o, optim_save(r.o, p[7]));
        umask(old);
        ASSERT(stat(p[7], &st) == 0 && (st.st_mode & 0777) == 0644);
    }
    /* No temporary file was left behind: fifo, real.ckpt, link, link2, dangling, created.ckpt. */
    ASSERT_INT(entries(dir), ==, 6);
    free(buf);
    rb_free(&r);
    ckpt_remove_tree(dir);
    return 0;
}

/* ---- Failing writes, fsyncs, disks, permissions, memory ---------------------------------- */

/* Injected failures: the checkpoint code's system operations
 * (checkpoint_internal.h), through the *_ops entry points, with one of these
 * as their context. Nothing global: each test makes its own. */
typedef struct hk_ctx {
    long budget;      /* bytes writes may still write (-1: any) */
    int write_errno;  /* what a write past the budget fails with */
    int short_writes; /* writes take at most 1000 bytes: the writer must loop */
    int open_errno;   /* creating the temporary file fails with this (0: it does not) */
    int file_fsync_errno, dir_fsync_errno, dir_syncs, dir_sync_saw_new;
    long alloc_fail;  /* > 0: the alloc_fail-th allocation from now on fails */
    const char *target; /* the file whose new bytes the directory's fsync should see */
    const void *fresh;
    size_t fresh_size;
} hk_ctx;

static int hk_open(void *ctx, const char *path, int flags, mode_t mode)
{
    hk_ctx *c = (hk_ctx *)ctx;
    if (c->open_errno) {
        errno = c->open_errno;
        return -1;
    }
    return open(path, flags, mode);
}

static ssize_t hk_write(void *ctx, int fd, const void *b, size_t n)
{
    hk_ctx *c = (hk_ctx *)ctx;
    ssize_t k;
    if (c->short_writes && n > 1000) n = 1000;
    if (c->budget == 0) {
        errno = c->write_errno;
        return -1;
    }
    if (c->budget > 0 && (long)n > c->budget) n = (size_t)c->budget;
    k = write(fd, b, n);
    if (k > 0 && c->budget > 0) c->budget -= k;
    return k;
}

static int hk_fsync(void *ctx, int fd)
{
    hk_ctx *c = (hk_ctx *)ctx;
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        c->dir_syncs++;
        if (c->target) c->dir_sync_saw_new = file_is(c->target, c->fresh, c->fresh_size); /* renamed already? */
        if (c->dir_fsync_errno) {
            errno = c->dir_fsync_errno;
            return -1;
        }
    } else if (c->file_fsync_errno) {
        errno = c->file_fsync_errno;
        return -1;
    }
    return fsync(fd);
}

static int hk_alloc_fails(void *ctx)
{
    hk_ctx *c = (hk_ctx *)ctx;
    return c->alloc_fail > 0 && --c->alloc_fail == 0;
}

/* A fresh context (nothing fails) and the operations that use it. */
static optim__ck_ops hk_reset(hk_ctx *c)
{
    optim__ck_ops ops;
    memset(c, 0, sizeof *c);
    c->budget = -1;
    ops.open = hk_open;
    ops.write = hk_write;
    ops.fsync = hk_fsync;
    ops.alloc_fails = hk_alloc_fails;
    ops.ctx = c;
    return ops;
}

TEST_IMPL(ckpt_write_failures)
{
    rb_run small, big;
    char dir[64], path[128];
    void *old, *fresh;
    size_t nold, nfresh;
    hk_ctx hk;
    optim__ck_ops ops;
    if (rb_build(&small, 1, 1) || rb_build(&big, 1, 4)) return 1;
    if (!ckpt_scratch(dir, sizeof dir)) FAIL("mkdtemp");
    snprintf(path, sizeof path, "%s/run.ckpt", dir);
    ASSERT_OPT_OK(small.o, optim_save(small.o, path));
    ASSERT_OPT_OK(small.o, optim_save_buffer(small.o, &old, &nold));
    ASSERT_OPT_OK(big.o, optim_save_buffer(big.o, &fresh, &nfresh));
    ops = hk_reset(&hk);
    /* A write that fails half-way: EIO is OPTIM_EWRITE, ENOSPC OPTIM_ENOSPC. */
    hk.budget = (long)nfresh / 2;
    hk.write_errno = EIO;
    ASSERT_ERR(optim__save_ops(big.o, path, &ops), OPTIM_EWRITE, optim_errmsg(big.o), "failed: Input/output error");
    ASSERT(strstr(optim_errmsg(big.o), "run.ckpt"));
    ASSERT(file_is(path, old, nold) && entries(dir) == 1);
    ops = hk_reset(&hk);
    hk.budget = 100;
    hk.write_errno = ENOSPC;
    ASSERT_ERR(optim__save_ops(big.o, path, &ops), OPTIM_ENOSPC, optim_errmsg(big.o), "No space left on device");
    ASSERT(file_is(path, old, nold) && entries(dir) == 1);
    /* fsync of the file fails: nothing replaced. */
    ops = hk_reset(&hk);
    hk.file_fsync_errno = EIO;
    ASSERT_ERR(optim__save_ops(big.o, path, &ops), OPTIM_EWRITE, optim_errmsg(big.o), "to disk failed: Input/output error");
    ASSERT(file_is(path, old, nold) && entries(dir) == 1);
    ops = hk_reset(&hk);
    hk.file_fsync_errno = ENOSPC; /* a file system that allocates at fsync */
    ASSERT_ERR(optim__save_ops(big.o, path, &ops), OPTIM_ENOSPC, optim_errmsg(big.o), "to disk failed");
    ASSERT(file_is(path, old, nold) && entries(dir) == 1);
    /* Short writes are completed; the directory is synced after the rename. */
    ops = hk_reset(&hk);
    hk.short_writes = 1;
    hk.target = path;
    hk.fresh = fresh;
    hk.fresh_size = nfresh;
    ASSERT_OPT_OK(big.o, optim__save_ops(big.o, path, &ops));
    ASSERT(file_is(path, fresh, nfresh));
    ASSERT_INT(hk.dir_syncs, ==, 1);
    ASSERT_INT(hk.dir_sync_saw_new, ==, 1);
    /* The directory's fsync fails: the new checkpoint is in place, and the error says so. */
    ops = hk_reset(&hk);
    hk.dir_fsync_errno = EIO;
    ASSERT_ERR(optim__save_ops(small.o, path, &ops), OPTIM_EWRITE, optim_errmsg(small.o),
               "was written but syncing its directory");
    ASSERT(file_is(path, old, nold) && entries(dir) == 1);
    free(old);
    free(fresh);
    rb_free(&small);
    rb_free(&big);
    ckpt_remove_tree(dir);
    return 0;
}

/* A real full disk: a 64 KiB tmpfs in a mount namespace of a child (needs
 * CAP_SYS_ADMIN; skipped without). */
TEST_IMPL(ckpt_real_disk_full)
{
    char dir[64], path[128];
    pid_t pid;
    int status;
    if (!ckpt_scratch(dir, sizeof dir)) FAIL("mkdtemp");
    snprintf(path, sizeof path, "%s/run.ckpt", dir);
    pid = fork();
    if (pid == 0) {
        static float w[100000], g[100000];
        rb_run r;
        optim *big = NULL;
        optim_hparams hp;
        unsigned char *old = NULL, *now = NULL;
        size_t nold, nnow;
        int rc;
        if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
            mount("tmpfs", dir, "tmpfs", 0, "size=64k") != 0) {
            printf("  skipped: no private tmpfs (%s)\n", strerror(errno));
            fflush(stdout);
            _exit(77);
        }
        if (rb_build(&r, 1, 2) || optim_save(r.o, path) != OPTIM_OK || ckpt_read_file(path, &old, &nold)) _exit(2);
        optim_create(&big, OPTIM_ADAM);
        optim_hparams_init(&hp, OPTIM_ADAM, NULL);
        optim_add_group(big, &hp, NULL);
        optim_add_param(big, 0, w, g, 100000, "w", NULL);
        rc = optim_save(big, path);
        if (rc != OPTIM_ENOSPC || !strstr(optim_errmsg(big), "No space left on device")) {
            fprintf(stderr, "save on a full tmpfs: %s: %s\n", optim_err_name(rc), optim_errmsg(big));
            _exit(3);
        }
        printf("  %s\n", optim_errmsg(big));
        fflush(stdout);
        if (ckpt_read_file(path, &now, &nnow) || nnow != nold || memcmp(now, old, nold) != 0) _exit(4);
        if (entries(dir) != 1) _exit(5);
        if (optim_load(r.o, path, OPTIM_MATCH_NAME) != OPTIM_OK) _exit(6);
        umount(dir);
        _exit(0);
    }
    ASSERT(pid > 0 && waitpid(pid, &status, 0) == pid);
    ckpt_remove_tree(dir);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77) return 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) FAIL("the full-disk child failed (status %d)", status);
    return 0;
}

/* No inode left for the temporary file (a file system full of small files,
 * or a quota on files): OPTIM_ENOSPC, as a full disk, not OPTIM_EOPEN. For
 * real on a tmpfs of 4 inodes in a private mount namespace (needs
 * CAP_SYS_ADMIN; skipped without), and with the error injected into the
 * creation of the temporary file (ENOSPC, EDQUOT; EACCES stays OPTIM_EOPEN). */
TEST_IMPL(ckpt_no_inode_left)
{
    char dir[64], path[128];
    pid_t pid;
    int status;
    rb_run r;
    hk_ctx hk;
    optim__ck_ops ops;
    void *old;
    size_t nold;
    static const int errs[3] = {ENOSPC, EDQUOT, EACCES};
    static const int codes[3] = {OPTIM_ENOSPC, OPTIM_ENOSPC, OPTIM_EOPEN};
    int k;
    if (rb_build(&r, 1, 2)) return 1;
    if (!ckpt_scratch(dir, sizeof dir)) FAIL("mkdtemp");
    snprintf(path, sizeof path, "%s/run.ckpt", dir);
    ASSERT_OPT_OK(r.o, optim_save(r.o, path));
    ASSERT_OPT_OK(r.o, optim_save_buffer(r.o, &old, &nold));
    ASSERT_OPT_OK(r.o, optim_step(r.o));
    for (k = 0; k < 3; k++) {
        ops = hk_reset(&hk);
        hk.open_errno = errs[k];
        ASSERT_ERR(optim__save_ops(r.o, path, &ops), codes[k], optim_errmsg(r.o), "cannot create a temporary file (");
        ASSERT(strstr(optim_errmsg(r.o), strerror(errs[k])));
        ASSERT(file_is(path, old, nold) && entries(dir) == 1);
    }
    free(old);
    pid = fork();
    if (pid == 0) {
        char f[160];
        int i, rc;
        if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
            mount("tmpfs", dir, "tmpfs", 0, "size=1m,nr_inodes=4") != 0) {
            printf("  skipped: no private tmpfs (%s)\n", strerror(errno));
            fflush(stdout);
            _exit(77);
        }
        if (optim_save(r.o, path) != OPTIM_OK) _exit(2); /* room for the checkpoint */
        for (i = 0; i < 16; i++) { /* then use up the inodes */
            int fd;
            snprintf(f, sizeof f, "%s/filler%d", dir, i);
            fd = open(f, O_WRONLY | O_CREAT | O_EXCL, 0600);
            if (fd < 0) break;
            close(fd);
        }
        if (i == 16 || errno != ENOSPC) _exit(3);
        rc = optim_save(r.o, path);
        if (rc != OPTIM_ENOSPC || !strstr(optim_errmsg(r.o), "cannot create a temporary file (No space left on device)")) {
            fprintf(stderr, "save with no inode left: %s: %s\n", optim_err_name(rc), optim_errmsg(r.o));
            _exit(4);
        }
        printf("  %s\n", optim_errmsg(r.o));
        fflush(stdout);
        if (optim_load(r.o, path, OPTIM_MATCH_NAME) != OPTIM_OK) _exit(5); /* the old one is intact */
        umount(dir);
        _exit(0);
    }
    ASSERT(pid > 0 && waitpid(pid, &status, 0) == pid);
    ckpt_remove_tree(dir);
    rb_free(&r);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77) return 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) FAIL("the no-inode child failed (status %d)", status);
    return 0;
}

/* A directory we may not write, a file we may not read: as root, in a child
 * that becomes nobody (65534); else with the directory's write bit off. */
TEST_IMPL(ckpt_unwritable_directory)
{
    char dir[64], sub[128], path[160], secret[160];
    rb_run r;
    pid_t pid;
    int status;
    if (rb_build(&r, 1, 1)) return 1;
    if (!ckpt_scratch(dir, sizeof dir)) FAIL("mkdtemp");
    snprintf(sub, sizeof sub, "%s/ro", dir);
    snprintf(path, sizeof path, "%s/x.ckpt", sub);
    snprintf(secret, sizeof secret, "%s/secret.ckpt", dir);
    ASSERT(mkdir(sub, 0755) == 0 && chmod(dir, 0755) == 0);
    ASSERT_OPT_OK(r.o, optim_save(r.o, secret));
    ASSERT(chmod(secret, 0600) == 0);
    pid = fork();
    if (pid == 0) {
        if (geteuid() == 0) {
            if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(70);
        } else if (chmod(sub, 0555) != 0) {
            _exit(71);
        }
        if (optim_save(r.o, path) != OPTIM_EOPEN || !strstr(optim_errmsg(r.o), "Permission denied") ||
            !strstr(optim_errmsg(r.o), "ro/x.ckpt")) {
            fprintf(stderr, "save into an unwritable directory: %s\n", optim_errmsg(r.o));
            _exit(1);
        }
        printf("  %s\n", optim_errmsg(r.o));
        fflush(stdout);
        if (geteuid() != 0 && getuid() != 0 && access(secret, R_OK) != 0) {
            if (optim_load(r.o, secret, OPTIM_MATCH_NAME) != OPTIM_EOPEN ||
                !strstr(optim_errmsg(r.o), "cannot open: Permission denied")) {
                fprintf(stderr, "load of an unreadable file: %s\n", optim_errmsg(r.o));
                _exit(2);
            }
            printf("  %s\n", optim_errmsg(r.o));
        fflush(stdout);
        }
        _exit(0);
    }
    ASSERT(pid > 0 && waitpid(pid, &status, 0) == pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) FAIL("the unprivileged child failed (status %d)", status);
    ASSERT_INT(entries(sub), ==, 0);
    chmod(sub, 0755);
    rb_free(&r);
    ckpt_remove_tree(dir);
    return 0;
}

/* Every allocation of a load, a save and a save to memory failing in turn:
 * OPTIM_ENOMEM naming what it was for, nothing changed, no file touched. */
TEST_IMPL(ckpt_out_of_memory)
{
    rb_run src, dst;
    void *good, *before;
    size_t size, nbefore;
    long k;
    int rc, named_slot = 0;
    char dir[64], path[128];
    hk_ctx hk;
    optim__ck_ops ops = hk_reset(&hk);
    if (rb_build(&src, 1, 3) || rb_build(&dst, 0, 1)) return 1; /* dst lacks max_exp_avg_sq: allocated by a load */
    ASSERT_OPT_OK(src.o, optim_save_buffer(src.o, &good, &size));
    for (k = 1;; k++) {
        hk.alloc_fail = k;
        rc = optim__load_buffer_ops(dst.o, good, size, OPTIM_MATCH_NAME, "ck", &ops);
        if (rc == OPTIM_OK) break;
        if (rc != OPTIM_ENOMEM) FAIL("allocation %ld failing: %s (%s)", k, optim_err_name(rc), optim_errmsg(dst.o));
        if (strstr(optim_errmsg(dst.o), "ck: param 1 'b': out of memory for 3 floats of state 'max_exp_avg_sq'"))
            named_slot = 1;
        if (k > 100) FAIL("no end to allocations");
        /* nothing changed: still the state of one default step */
        {
            rb_run ref;
            if (rb_build(&ref, 0, 1)) return 1;
            if (!ckpt_same_state(ref.o, dst.o)) FAIL("a load failing at allocation %ld changed the optimizer", k);
            rb_free(&ref);
        }
    }
    ASSERT(named_slot);
    ASSERT(ckpt_same_state(dst.o, src.o));
    printf("  a load makes %ld allocations; each failing is refused cleanly\n", k - 1);
    /* Saves. */
    if (!ckpt_scratch(dir, sizeof dir)) FAIL("mkdtemp");
    snprintf(path, sizeof path, "%s/run.ckpt", dir);
    ASSERT_OPT_OK(dst.o, optim_save(dst.o, path));
    ASSERT(ckpt_read_file(path, (unsigned char **)&before, &nbefore) == 0);
    ASSERT_OPT_OK(src.o, optim_step(src.o));
    for (k = 1;; k++) {
        hk.alloc_fail = k;
        rc = optim__save_ops(src.o, path, &ops);
        if (rc == OPTIM_OK) break;
        ASSERT_INT(rc, ==, OPTIM_ENOMEM);
        ASSERT(strstr(optim_errmsg(src.o), "out of memory"));
        if (!file_is(path, before, nbefore) || entries(dir) != 1) FAIL("a save failing at allocation %ld touched the file", k);
        if (k > 100) FAIL("no end to allocations");
    }
    for (k = 1;; k++) {
        void *mem = (void *)1;
        size_t n = 0;
        hk.alloc_fail = k;
        rc = optim__save_buffer_ops(src.o, &mem, &n, &ops);
        if (rc == OPTIM_OK) {
            free(mem);
            break;
        }
        ASSERT_INT(rc, ==, OPTIM_ENOMEM);
        ASSERT(mem == NULL);
    }
    free(before);
    free(good);
    rb_free(&src);
    rb_free(&dst);
    ckpt_remove_tree(dir);
    return 0;
}

/* A target name of NAME_MAX characters: the temporary file next to it would
 * be longer than the file system allows, so the save uses a short hidden name
 * in the same directory; the file loads back. An over-long name fails with
 * the reason at the start of the message, where a long path cannot cut it. */
TEST_IMPL(ckpt_long_file_names)
{
    rb_run r, back;
    char dir[64], path[600];
    size_t base, len;
    if (rb_build(&r, 1, 3) || rb_build(&back, 0, 0)) return 1;
    if (!ckpt_scratch(dir, sizeof dir)) FAIL("mkdtemp");
    for (len = 230; len <= 255; len += 5) {
        snprintf(path, sizeof path, "%s/", dir);
        base = strlen(path);
        memset(path + base, 'c', len);
        path[base + len] = '\0';
        ASSERT_OPT_OK(r.o, optim_save(r.o, path));
        ASSERT_OPT_OK(back.o, optim_load(back.o, path, OPTIM_MATCH_NAME));
        ASSERT(ckpt_same_state(r.o, back.o));
        ASSERT(unlink(path) == 0);
    }
    memset(path + base, 'c', 300);
    path[base + 300] = '\0';
    ASSERT_ERR(optim_save(r.o, path), OPTIM_EOPEN, optim_errmsg(r.o),
               "optim_save: cannot create a temporary file (File name too long) next to");
    {
        /* Nothing is left in the directory: no temporary file of any name. */
        DIR *d = opendir(dir);
        struct dirent *e;
        int others = 0;
        ASSERT(d);
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) others++;
        closedir(d);
        ASSERT_INT(others, ==, 0);
    }
    ckpt_remove_tree(dir);
    optim_free(r.o);
    optim_free(back.o);
    return 0;
}

/* A checkpoint rewritten in place while it is loaded (cp or rsync --inplace
 * over it: truncate, then write) is read, not mapped: every load returns OK
 * with the full state or an error that changes nothing, and the process never
 * dies of SIGBUS. */
TEST_IMPL(ckpt_load_while_rewritten)
{
    enum { N = 1 << 16, LOADS = 300 };
    static float w[N], g[N], w2[N], g2[N], w3[N], g3[N];
    optim *o, *l, *fresh; /* fresh: l as it was built, what a refused first load must leave */
    optim_hparams hp;
    void *buf;
    size_t size;
    char dir[64], path[128];
    pid_t pid;
    int k, ok = 0, refused = 0, status;
    optim_hparams_init(&hp, OPTIM_ADAM, NULL);
    ASSERT_OK(optim_create(&o, OPTIM_ADAM));
    ASSERT_OK(optim_create(&l, OPTIM_ADAM));
    ASSERT_OK(optim_create(&fresh, OPTIM_ADAM));
    ASSERT_OPT_OK(o, optim_add_group(o, &hp, NULL));
    ASSERT_OPT_OK(l, optim_add_group(l, &hp, NULL));
    ASSERT_OPT_OK(fresh, optim_add_group(fresh, &hp, NULL));
    for (k = 0; k < N; k++) g[k] = (float)(k % 17) - 8.0f;
    ASSERT_OPT_OK(o, optim_add_param(o, 0, w, g, N, "w", NULL));
    ASSERT_OPT_OK(l, optim_add_param(l, 0, w2, g2, N, "w", NULL));
    ASSERT_OPT_OK(fresh, optim_add_param(fresh, 0, w3, g3, N, "w", NULL));
    ASSERT_OPT_OK(o, optim_step(o));
    ASSERT_OPT_OK(o, optim_save_buffer(o, &buf, &size));
    if (!ckpt_scratch(dir, sizeof dir)) FAIL("mkdtemp");
    snprintf(path, sizeof path, "%s/inplace.ckpt", dir);
    ASSERT(ckpt_write_file(path, buf, size) == 0);
    pid = fork();
    if (pid == 0) {
        alarm(60);
        for (;;) { /* truncate, then write back in pieces */
            int fd = open(path, O_WRONLY | O_TRUNC);
            size_t off = 0;
            if (fd < 0) _exit(2);
            while (off < size) {
                ssize_t n = write(fd, (char *)buf + off, size - off > 4096 ? 4096 : size - off);
                if (n <= 0) _exit(3);
                off += (size_t)n;
            }
            close(fd);
        }
    }
    ASSERT(pid > 0);
    for (k = 0; k < LOADS; k++) {
        int rc = optim_load(l, path, OPTIM_MATCH_NAME);
        if (rc == OPTIM_OK) {
            ok++;
            ASSERT(ckpt_same_state(o, l));
        } else {
            refused++;
            if (rc != OPTIM_ETRUNCATED && rc != OPTIM_ECHECKSUM && rc != OPTIM_EFORMAT && rc != OPTIM_EMAGIC)
                FAIL("load %d: %s: %s", k, optim_err_name(rc), optim_errmsg(l));
            if (!ckpt_same_state(ok ? o : fresh, l)) FAIL("load %d: a refused load changed the optimizer", k);
        }
    }
    kill(pid, SIGKILL);
    ASSERT(waitpid(pid, &status, 0) == pid);
    printf("  %d loads complete, %d refused as incomplete\n", ok, refused);
    ckpt_remove_tree(dir);
    free(buf);
    optim_free(o);
    optim_free(l);
    optim_free(fresh);
    return 0;
}

/* Between SAM's first_step and second_step the parameters sit at w + e and
 * the step is half done: saves and loads are refused (OPTIM_ESTATE, nothing
 * written or changed), and work again after second_step or restore. */
TEST_IMPL(ckpt_refused_mid_sam)
{
    rb_run r, other;
    optim_sam *sam = NULL;
    void *buf = NULL, *before;
    size_t size, before_size;
    char dir[64], path[128];
    struct stat st;
    if (rb_build(&r, 1, 2) || rb_build(&other, 1, 2)) return 1;
    if (!ckpt_scratch(dir, sizeof dir)) FAIL("mkdtemp");
    snprintf(path, sizeof path, "%s/mid.ckpt", dir);
    ASSERT_OK(optim_sam_create(&sam, r.o, 0.05, 2.0, 0, 0.0, NULL));
    ASSERT_OPT_OK(other.o, optim_save_buffer(other.o, &before, &before_size));
    ASSERT_OK(optim_sam_first_step(sam));
    ASSERT_ERR(optim_save(r.o, path), OPTIM_ESTATE, optim_errmsg(r.o),
               "optim_save: an optim_sam over this optimizer is between first_step and second_step");
    ASSERT(stat(path, &st) != 0); /* nothing written */
    ASSERT_ERR(optim_save_buffer(r.o, &buf, &size), OPTIM_ESTATE, optim_errmsg(r.o), "optim_save_buffer: an optim_sam");
    ASSERT_ERR(optim_load_buffer(r.o, before, before_size, OPTIM_MATCH_NAME, "x"), OPTIM_ESTATE, optim_errmsg(r.o),
               "optim_load_buffer: an optim_sam");
    ASSERT_OK(optim_sam_second_step(sam));
    ASSERT_OPT_OK(r.o, optim_save(r.o, path));
    ASSERT_OK(optim_sam_first_step(sam));
    ASSERT_ERR(optim_load(r.o, path, OPTIM_MATCH_NAME), OPTIM_ESTATE, optim_errmsg(r.o), "optim_load: an optim_sam");
    ASSERT_OK(optim_sam_restore(sam));
    ASSERT_OPT_OK(r.o, optim_load(r.o, path, OPTIM_MATCH_NAME));
    ASSERT_OK(optim_sam_first_step(sam));
    optim_sam_free(sam); /* freed mid-step: the optimizer is no longer held */
    ASSERT_OPT_OK(r.o, optim_save_buffer(r.o, &buf, &size));
    free(buf);
    free(before);
    ckpt_remove_tree(dir);
    optim_free(r.o);
    optim_free(other.o);
    return 0;
}
