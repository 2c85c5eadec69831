/* checkpoint.c: the checkpoint format (docs/CHECKPOINT.md), its writer and its
 * loader.
 *
 * Writing: the whole file is first "written" to a counting writer to learn
 * its size (slot data is only counted, not read), then written for real into
 * a temporary file next to the target (the file a symbolic link finally
 * points to), fsync'ed, renamed over the target, and the directory fsync'ed.
 *
 * Loading: the file is read into memory (not mapped; see ck_read_file). A first
 * pass walks the sections and
 * checks every section's checksum (so that a damaged byte is reported with
 * the section, and the parameter or group, it belongs to), then the file's;
 * a second pass parses them with a bounds-checked reader into a plan (every
 * group's hyperparameters and schedule, the match of every parameter,
 * pointers to its slot data in the file, new slot arrays where the optimizer
 * lacks one). Every check happens while building the plan; committing it
 * cannot fail. State memory is never freed by a load (a binding may hold
 * views of it): a slot the checkpoint lacks is reset. */
#define _POSIX_C_SOURCE 200809L
#include "optim_internal.h"
#include "schedule_internal.h"
#include "checkpoint_internal.h"

#include "optim_checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CK_MAGIC "OPTIMCKP"
#define CK_END "OPTIMEND"
#define CK_HEADER 32
#define CK_TRAILER 12
#define CK_TAG(a, b, c, d) ((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 | (uint32_t)(d) << 24)
#define CK_META CK_TAG('M', 'E', 'T', 'A')
#define CK_GRUP CK_TAG('G', 'R', 'U', 'P')
#define CK_PARM CK_TAG('P', 'A', 'R', 'M')
#define CK_OPTIONAL 1u       /* section flag: a reader that does not know the tag may skip it */
#define CK_SECTION_HEAD 16   /* tag, flags, length */
#define CK_SECTION_MIN (CK_SECTION_HEAD + 4)
#define CK_MAX_SCHED_DEPTH 32 /* nesting of composite schedules a loader accepts */
#define CK_MAX_NAME 4096
#define CK_MAX_LINKS 40       /* symbolic links optim_save follows, as the kernel's limit */
#define CK_FORMAT_SHAPES 2    /* the first format whose PARM holds the shape */
#define CK_FORMAT_CLIP_VALUE 2 /* the first format whose META ends with the fused clip_value */
#define CK_FORMAT_DTYPES 3    /* the first format whose PARM gives each slot's element type */

/* Fuzzing builds (OPTIM_FUZZ) accept wrong checksums, as OSS-Fuzz's convention
 * has it, so that the fuzzer's mutations reach the parser behind them instead
 * of stopping at the first CRC. Never in a normal build. */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#  define CK_CRC_BAD(got, want) ((void)(got), (void)(want), 0)
#else
#  define CK_CRC_BAD(got, want) ((got) != (want))
#endif

/* ---- Fault injection (checkpoint_internal.h; tests only) ------------------------ */

static ssize_t ck_real_write(int fd, const void *buf, size_t n)
{
    return write(fd, buf, n);
}

static int ck_real_fsync(int fd)
{
    return fsync(fd);
}

optim__ck_hooks optim__ck_test = {ck_real_write, ck_real_fsync, 0};

static int ck_alloc_fails(void)
{
    return optim__ck_test.alloc_fail > 0 && --optim__ck_test.alloc_fail == 0;
}

static void *ck_malloc(size_t n)
{
    return ck_alloc_fails() ? NULL : malloc(n);
}

static void *ck_calloc(size_t n, size_t size)
{
    return ck_alloc_fails() ? NULL : calloc(n, size);
}

static float *ck_alloc_elems(size_t n, optim_dtype dtype)
{
    return ck_alloc_fails() ? NULL : (float *)optim__alloc_elems(n, optim_dtype_size(dtype));
}

static char *ck_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = (char *)ck_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* ---- Writing ------------------------------------------------------------------ */

typedef struct ck_writer {
    int fd;             /* file, or -1 */
    unsigned char *mem; /* memory target, or NULL; with fd < 0 and mem NULL: count only */
    uint64_t total;     /* bytes emitted so far */
    uint32_t file_crc;
    uint32_t sec_crc;
    int failed;         /* errno of the first failure, 0 if none */
    size_t used;
    unsigned char *buf; /* file mode: the write buffer */
} ck_writer;

#define CK_BUF (1u << 16)

static int ck_counting(const ck_writer *w)
{
    return w->fd < 0 && !w->mem;
}

static void ck_flush(ck_writer *w)
{
    size_t off = 0;
    if (w->fd < 0 || w->failed) {
        w->used = 0;
        return;
    }
    while (off < w->used) {
        ssize_t k = optim__ck_test.write(w->fd, w->buf + off, w->used - off);
        if (k < 0) {
            if (errno == EINTR) continue;
            w->failed = errno ? errno : EIO;
            break;
        }
        if (k == 0) { /* no progress and no error: do not spin */
            w->failed = EIO;
            break;
        }
        off += (size_t)k;
    }
    w->used = 0;
}

static void ck_put(ck_writer *w, const void *data, size_t n)
{
    const unsigned char *p = (const unsigned char *)data;
    w->total += n;
    if (ck_counting(w)) return;
    w->file_crc = optim__crc32c(w->file_crc, p, n);
    w->sec_crc = optim__crc32c(w->sec_crc, p, n);
    if (w->mem) {
        memcpy(w->mem + (w->total - n), p, n);
        return;
    }
    while (n > 0) {
        size_t room = CK_BUF - w->used, k = n < room ? n : room;
        memcpy(w->buf + w->used, p, k);
        w->used += k;
        p += k;
        n -= k;
        if (w->used == CK_BUF) ck_flush(w);
    }
}

static void ck_u8(ck_writer *w, unsigned v)
{
    unsigned char b = (unsigned char)v;
    ck_put(w, &b, 1);
}

static void ck_u32(ck_writer *w, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
    ck_put(w, b, 4);
}

static void ck_u64(ck_writer *w, uint64_t v)
{
    ck_u32(w, (uint32_t)v);
    ck_u32(w, (uint32_t)(v >> 32));
}

static void ck_f64(ck_writer *w, double d)
{
    uint64_t v;
    memcpy(&v, &d, sizeof v);
    ck_u64(w, v);
}

static int ck_host_little_endian(void)
{
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* n elements of a state type (float32 or float64) as little-endian IEEE
 * binary32 or binary64. */
static void ck_elems(ck_writer *w, const void *x, size_t n, optim_dtype dtype)
{
    const size_t size = optim_dtype_size(dtype);
    if (ck_counting(w)) {
        w->total += size * (uint64_t)n;
        return;
    }
    if (ck_host_little_endian()) {
        ck_put(w, x, n * size);
    } else {
        size_t i;
        for (i = 0; i < n; i++) {
            if (size == 8) {
                uint64_t v;
                memcpy(&v, (const char *)x + 8 * i, 8);
                ck_u64(w, v);
            } else {
                uint32_t v;
                memcpy(&v, (const char *)x + 4 * i, 4);
                ck_u32(w, v);
            }
        }
    }
}

static void ck_schedule(ck_writer *w, const optim_schedule *s)
{
    size_t i;
    ck_u32(w, (uint32_t)s->kind);
    for (i = 0; i < OPTIM__SCHED_NI; i++) ck_u64(w, (uint64_t)s->ints[i]);
    for (i = 0; i < OPTIM__SCHED_NR; i++) ck_f64(w, s->reals[i]);
    ck_u32(w, (uint32_t)s->nmilestones);
    for (i = 0; i < s->nmilestones; i++) ck_u64(w, (uint64_t)s->milestones[i]);
    ck_u32(w, (uint32_t)s->nchildren);
    for (i = 0; i < s->nchildren; i++) ck_schedule(w, s->children[i]);
}

typedef void (*ck_section_fn)(ck_writer *w, const optim *o, size_t i);

static void ck_meta(ck_writer *w, const optim *o, size_t i)
{
    const char *v = optim_version_string();
    (void)i;
    ck_u32(w, (uint32_t)o->rule);
    ck_u32(w, (uint32_t)o->ngroups);
    ck_u64(w, (uint64_t)o->nparams);
    ck_u64(w, (uint64_t)o->steps);
    ck_u64(w, (uint64_t)o->skipped);
    ck_u32(w, (uint32_t)o->nonfinite);
    ck_u32(w, 0);
    ck_f64(w, o->clip_max_norm);
    ck_f64(w, o->clip_norm_type);
    ck_u32(w, (uint32_t)strlen(v));
    ck_put(w, v, strlen(v));
    ck_f64(w, o->clip_value);
}

static void ck_group(ck_writer *w, const optim *o, size_t g)
{
    const optim__group *gr = &o->groups[g];
    uint32_t count = 0;
    int id;
    for (id = 1; id <= OPTIM_HP_COUNT; id++) count += (uint32_t)optim_rule_uses(o->rule, (optim_hparam)id);
    ck_u32(w, (uint32_t)g);
    ck_u32(w, count);
    for (id = 1; id <= OPTIM_HP_COUNT; id++) {
        double v = 0;
        if (!optim_rule_uses(o->rule, (optim_hparam)id)) continue;
        optim_hparams_get(&gr->hp, (optim_hparam)id, &v, NULL);
        ck_u32(w, (uint32_t)id);
        ck_f64(w, v);
    }
    ck_u64(w, (uint64_t)gr->sched_t); /* counted also without a schedule: one may be attached later */
    ck_u8(w, gr->sched != NULL);
    if (gr->sched) ck_schedule(w, gr->sched);
}

static unsigned ck_slot_mask(const optim__param *pa)
{
    unsigned mask = 0;
    int s;
    for (s = 0; s < OPTIM_MAX_SLOTS; s++)
        if (pa->st.slot[s]) mask |= 1u << s;
    return mask;
}

static void ck_param(ck_writer *w, const optim *o, size_t i)
{
    const optim__param *pa = &o->params[i];
    unsigned mask = ck_slot_mask(pa);
    size_t len = strlen(pa->name), k;
    int s;
    ck_u64(w, (uint64_t)i);
    ck_u32(w, (uint32_t)len);
    ck_put(w, pa->name, len);
    ck_u32(w, (uint32_t)pa->group);
    ck_u64(w, (uint64_t)pa->n);
    /* The shape (format 2): given or the default [n]. */
    ck_u8(w, pa->dims != NULL);
    if (pa->dims) {
        ck_u32(w, (uint32_t)pa->ndim);
        for (k = 0; k < pa->ndim; k++) ck_u64(w, (uint64_t)pa->dims[k]);
    } else {
        ck_u32(w, 1);
        ck_u64(w, (uint64_t)pa->n);
    }
    ck_u64(w, (uint64_t)pa->st.step);
    ck_f64(w, pa->st.mu_product);
    ck_u32(w, pa->st.initialized & mask);
    ck_u32(w, mask);
    for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
        if (!((mask >> s) & 1u)) continue;
        ck_u32(w, (uint32_t)pa->sdt); /* format 3: the slot's element type */
        ck_elems(w, pa->st.slot[s], pa->n, pa->sdt);
    }
}

/* One section: its head, its payload (length measured by a counting pass),
 * its checksum. */
static void ck_section(ck_writer *w, uint32_t tag, ck_section_fn fn, const optim *o, size_t i)
{
    ck_writer count;
    memset(&count, 0, sizeof count);
    count.fd = -1;
    fn(&count, o, i);
    w->sec_crc = 0;
    ck_u32(w, tag);
    ck_u32(w, 0);
    ck_u64(w, count.total);
    fn(w, o, i);
    ck_u32(w, w->sec_crc);
}

/* Everything after the header, and the trailer; returns the section count. */
static uint32_t ck_body(ck_writer *w, const optim *o)
{
    size_t i;
    ck_section(w, CK_META, ck_meta, o, 0);
    for (i = 0; i < o->ngroups; i++) ck_section(w, CK_GRUP, ck_group, o, i);
    for (i = 0; i < o->nparams; i++) ck_section(w, CK_PARM, ck_param, o, i);
    return (uint32_t)(1 + o->ngroups + o->nparams);
}

/* The whole file into w: header, body, trailer. size is the file's size from
 * a counting pass. */
static void ck_file(ck_writer *w, const optim *o, uint64_t size, uint32_t sections)
{
    unsigned char head[CK_HEADER];
    ck_writer hw;
    uint32_t crc;
    /* Header: magic, version, flags, file size, section count, header CRC. */
    memset(&hw, 0, sizeof hw);
    hw.fd = -1;
    hw.mem = head;
    ck_put(&hw, CK_MAGIC, 8);
    ck_u32(&hw, OPTIM_CHECKPOINT_FORMAT);
    ck_u32(&hw, 0);
    ck_u64(&hw, size);
    ck_u32(&hw, sections);
    crc = optim__crc32c(0, head, 28);
    ck_u32(&hw, crc);
    w->file_crc = 0;
    ck_put(w, head, CK_HEADER);
    ck_body(w, o);
    crc = w->file_crc;
    ck_u32(w, crc);
    ck_put(w, CK_END, 8);
}

static uint64_t ck_measure(const optim *o, uint32_t *sections)
{
    ck_writer c;
    memset(&c, 0, sizeof c);
    c.fd = -1;
    c.total = CK_HEADER;
    *sections = ck_body(&c, o);
    return c.total + CK_TRAILER;
}

int optim_save_buffer(optim *o, void **data, size_t *size)
{
    uint32_t sections;
    uint64_t total;
    ck_writer *w;
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(o->sam_perturbed, &o->err, OPTIM_ESTATE,
                   "%s: SAM is between first_step and second_step (the parameters are at w + e): call it after "
                   "optim_sam_second_step or optim_sam_restore", "optim_save_buffer");
    OPTIM__FAIL_IF(!data || !size, &o->err, OPTIM_ENULL, "optim_save_buffer: %s is NULL", !data ? "data" : "size");
    total = ck_measure(o, &sections);
    OPTIM__FAIL_IF(total > SIZE_MAX, &o->err, OPTIM_ENOMEM, "optim_save_buffer: %llu bytes do not fit in memory",
                   (unsigned long long)total);
    w = (ck_writer *)ck_calloc(1, sizeof *w);
    *data = w ? ck_malloc((size_t)total) : NULL;
    if (!w || !*data) {
        free(w);
        *data = NULL;
        return optim__fail(&o->err, OPTIM_ENOMEM, "optim_save_buffer: out of memory for %llu bytes",
                           (unsigned long long)total);
    }
    w->fd = -1;
    w->mem = (unsigned char *)*data;
    ck_file(w, o, total, sections);
    free(w);
    *size = (size_t)total;
    return optim__ok(&o->err);
}

static int ck_errno_code(int e)
{
    return (e == ENOSPC || e == EFBIG
#ifdef EDQUOT
            || e == EDQUOT
#endif
            )
               ? OPTIM_ENOSPC
               : OPTIM_EWRITE;
}

/* The directory part of path ("." if none). */
static char *ck_dirname(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t len = slash ? (size_t)(slash - path) : 1;
    char *d = (char *)ck_malloc(len + 2);
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

/* The file optim_save replaces: path itself or, if path is a symbolic link,
 * the file the chain of links ends at (which may not exist yet: it is then
 * created, as a shell's `>` does). Only a regular file (or nothing) may be
 * replaced: a directory, device, FIFO or socket is refused. *mode receives
 * the permission bits of the file replaced (-1 if none). *target is malloc'ed. */
static int ck_save_target(optim *o, const char *path, char **target, int *mode)
{
    char *cur = ck_strdup(path);
    int hops;
    struct stat st;
    *target = NULL;
    *mode = -1;
    OPTIM__FAIL_IF(!cur, &o->err, OPTIM_ENOMEM, "optim_save: %s: out of memory", path);
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
            return optim__fail(&o->err, OPTIM_EOPEN, "optim_save: %s: more than %d symbolic links", path, CK_MAX_LINKS);
        }
        for (;;) { /* st_size of a link may be 0 (procfs): grow until the target fits */
            free(link);
            link = (char *)ck_malloc(cap);
            if (!link) break;
            len = readlink(cur, link, cap);
            if (len < 0 || (size_t)len < cap) break;
            cap *= 2;
        }
        if (!link || len < 0) {
            int e = errno;
            free(link);
            free(cur);
            if (!link) return optim__fail(&o->err, OPTIM_ENOMEM, "optim_save: %s: out of memory", path);
            return optim__fail(&o->err, OPTIM_EOPEN, "optim_save: %s: cannot read the symbolic link: %s", path,
                               strerror(e));
        }
        link[len] = '\0';
        if (link[0] == '/' || !strchr(cur, '/')) {
            next = link; /* absolute, or relative to "." where cur is */
            link = NULL;
        } else {
            size_t dlen = (size_t)(strrchr(cur, '/') - cur) + 1;
            next = (char *)ck_malloc(dlen + (size_t)len + 1);
            if (next) {
                memcpy(next, cur, dlen);
                memcpy(next + dlen, link, (size_t)len + 1);
            }
        }
        free(link);
        free(cur);
        cur = next;
        OPTIM__FAIL_IF(!cur, &o->err, OPTIM_ENOMEM, "optim_save: %s: out of memory", path);
    }
    if (!S_ISREG(st.st_mode)) {
        int rc = strcmp(cur, path) == 0
                     ? optim__fail(&o->err, OPTIM_EOPEN, "optim_save: %s is %s: only a regular file is replaced", path,
                                   ck_file_kind(st.st_mode))
                     : optim__fail(&o->err, OPTIM_EOPEN,
                                   "optim_save: %s is a symbolic link to %s, which is %s: only a regular file is "
                                   "replaced",
                                   path, cur, ck_file_kind(st.st_mode));
        free(cur);
        return rc;
    }
    *mode = (int)(st.st_mode & 0777);
    *target = cur;
    return OPTIM_OK;
}

int optim_save(optim *o, const char *path)
{
    uint32_t sections;
    uint64_t total;
    ck_writer *w = NULL;
    char *tmp = NULL, *dir = NULL, *target = NULL;
    int fd = -1, rc = OPTIM_OK, e, attempt, mode;
    size_t cap;
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(o->sam_perturbed, &o->err, OPTIM_ESTATE,
                   "%s: SAM is between first_step and second_step (the parameters are at w + e): call it after "
                   "optim_sam_second_step or optim_sam_restore", "optim_save");
    OPTIM__FAIL_IF(!path || !*path, &o->err, OPTIM_ENULL, "optim_save: path is %s", path ? "empty" : "NULL");
    OPTIM__FORWARD(ck_save_target(o, path, &target, &mode));
    total = ck_measure(o, &sections);
    cap = strlen(target) + 64;
    tmp = (char *)ck_malloc(cap);
    dir = tmp ? ck_dirname(target) : NULL; /* before anything is written: nothing fails after the rename but fsync */
    w = dir ? (ck_writer *)ck_calloc(1, sizeof *w) : NULL;
    if (w) w->buf = (unsigned char *)ck_malloc(CK_BUF);
    if (!tmp || !dir || !w || !w->buf) {
        rc = optim__fail(&o->err, OPTIM_ENOMEM, "optim_save: %s: out of memory", path);
        goto done;
    }
    /* A new file next to the target (rename is atomic only within a file system),
     * created with O_EXCL under a unique name, with the usual permissions, or
     * those of the file it replaces. */
    for (attempt = 0, e = 0; attempt < 100 && fd < 0; attempt++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        /* target.tmp-..., or, when that name is too long for the file system (a
         * target name near NAME_MAX), a short hidden name in the same directory. */
        if (e == ENAMETOOLONG)
            snprintf(tmp, cap, "%s/.optim-%ld-%ld-%d.tmp", dir, (long)getpid(), (long)ts.tv_nsec, attempt);
        else
            snprintf(tmp, cap, "%s.tmp-%ld-%ld-%d", target, (long)getpid(), (long)ts.tv_nsec, attempt);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno == ENAMETOOLONG && e != ENAMETOOLONG) {
            const char *base = strrchr(target, '/');
            long name_max = pathconf(dir, _PC_NAME_MAX);
            base = base ? base + 1 : target;
            if (name_max > 0 && strlen(base) > (size_t)name_max) {
                errno = ENAMETOOLONG; /* the target itself cannot exist: say so before writing anything */
                break;
            }
            e = ENAMETOOLONG;
            continue;
        }
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) {
        e = errno;
        /* The reason first: a long path would push it past the message's size. */
        rc = optim__fail(&o->err, OPTIM_EOPEN, "optim_save: cannot create a temporary file (%s) next to %s",
                         strerror(e), target);
        free(tmp);
        tmp = NULL; /* nothing to remove */
        goto done;
    }
    if (mode >= 0 && fchmod(fd, (mode_t)mode) != 0) {
        e = errno;
        rc = optim__fail(&o->err, OPTIM_EWRITE, "optim_save: giving %s the permissions of %s failed: %s", tmp, target,
                         strerror(e));
        goto done;
    }
    w->fd = fd;
    ck_file(w, o, total, sections);
    ck_flush(w);
    if (!w->failed && w->total != total) w->failed = EIO;
    if (w->failed) {
        rc = optim__fail(&o->err, ck_errno_code(w->failed), "optim_save: writing %s (for %s) failed: %s", tmp, path,
                         strerror(w->failed));
        goto done;
    }
    if (optim__ck_test.fsync(fd) != 0) {
        e = errno;
        rc = optim__fail(&o->err, ck_errno_code(e), "optim_save: flushing %s (for %s) to disk failed: %s", tmp, path,
                         strerror(e));
        goto done;
    }
    e = close(fd) != 0 ? errno : 0;
    fd = -1;
    if (e) {
        rc = optim__fail(&o->err, ck_errno_code(e), "optim_save: closing %s (for %s) failed: %s", tmp, path,
                         strerror(e));
        goto done;
    }
    if (rename(tmp, target) != 0) {
        e = errno;
        rc = optim__fail(&o->err, OPTIM_EWRITE, "optim_save: renaming %s to %s failed: %s", tmp, target, strerror(e));
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
            if (optim__ck_test.fsync(dfd) != 0 && errno != EINVAL) {
                e = errno;
                rc = optim__fail(&o->err, ck_errno_code(e),
                                 "optim_save: %s was written but syncing its directory %s failed (the new checkpoint "
                                 "is in place, but may not survive a power loss): %s",
                                 path, dir, strerror(e));
            }
            close(dfd);
        }
    }
    if (rc == OPTIM_OK) optim__ok(&o->err);
done:
    if (fd >= 0) close(fd);
    if (tmp) unlink(tmp); /* on failure: the old checkpoint at path is untouched */
    free(tmp);
    free(dir);
    free(target);
    if (w) free(w->buf);
    free(w);
    return rc;
}

/* ---- Reading ------------------------------------------------------------------ */

typedef struct ck_reader {
    const unsigned char *p;
    size_t len, pos;
} ck_reader;

static int ck_has(const ck_reader *r, size_t n)
{
    return r->len - r->pos >= n;
}

static uint32_t ck_le32(const unsigned char *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint64_t ck_le64(const unsigned char *b)
{
    return (uint64_t)ck_le32(b) | (uint64_t)ck_le32(b + 4) << 32;
}

static unsigned ck_get_u8(ck_reader *r)
{
    return r->p[r->pos++];
}

static uint32_t ck_get_u32(ck_reader *r)
{
    uint32_t v = ck_le32(r->p + r->pos);
    r->pos += 4;
    return v;
}

static uint64_t ck_get_u64(ck_reader *r)
{
    uint64_t v = ck_le64(r->p + r->pos);
    r->pos += 8;
    return v;
}

static double ck_get_f64(ck_reader *r)
{
    uint64_t v = ck_get_u64(r);
    double d;
    memcpy(&d, &v, sizeof d);
    return d;
}

/* Everything parsed, ready to commit. */
typedef struct ck_group_plan {
    optim_hparams hp;
    optim_schedule *sched; /* owned until committed */
    int64_t sched_t;
} ck_group_plan;

typedef struct ck_param_plan {
    size_t target;            /* index in the optimizer */
    int64_t step;
    double mu_product;
    unsigned initialized, mask;
    const unsigned char *data[OPTIM_MAX_SLOTS]; /* slot data in the file (little-endian, of type dtype) */
    optim_dtype dtype;                          /* the slots' element type (float32 before format 3) */
    float *fresh[OPTIM_MAX_SLOTS];              /* arrays allocated for slots the optimizer lacks */
    const char *name;
    size_t name_len;
    size_t n, group;
    int shape_given;          /* 0: the default [n] (and every format-1 file) */
    size_t ndim;
    const unsigned char *dims; /* ndim little-endian u64 in the file (NULL: [n]) */
} ck_param_plan;

typedef struct ck_plan {
    uint32_t format;
    optim_rule rule;
    size_t ngroups, nparams;
    int64_t steps, skipped;
    optim_nonfinite nonfinite;
    double clip_max_norm, clip_norm_type, clip_value;
    char library[32];
    ck_group_plan *groups;
    ck_param_plan *params;
    uint64_t state_floats;
} ck_plan;

static void ck_plan_free(ck_plan *pl)
{
    size_t i;
    int s;
    if (pl->groups)
        for (i = 0; i < pl->ngroups; i++) optim_schedule_free(pl->groups[i].sched);
    if (pl->params)
        for (i = 0; i < pl->nparams; i++)
            for (s = 0; s < OPTIM_MAX_SLOTS; s++) optim__free_floats(pl->params[i].fresh[s]);
    free(pl->groups);
    free(pl->params);
    memset(pl, 0, sizeof *pl);
}

/* Parse a schedule tree of `depth` from r (bounds-checked by the caller's section length). */
static int ck_read_schedule(ck_reader *r, optim_schedule **out, int depth, const char *what, optim_error *err)
{
    int64_t ints[OPTIM__SCHED_NI], *miles = NULL;
    double reals[OPTIM__SCHED_NR];
    optim_schedule **kids = NULL;
    uint32_t kind, nm, nc, i;
    int rc;
    *out = NULL;
    OPTIM__FAIL_IF(depth > CK_MAX_SCHED_DEPTH, err, OPTIM_EFORMAT, "%s: schedules nested deeper than %d", what,
                   CK_MAX_SCHED_DEPTH);
    OPTIM__FAIL_IF(!ck_has(r, 4 + 8 * OPTIM__SCHED_NI + 8 * OPTIM__SCHED_NR + 4), err, OPTIM_EFORMAT,
                   "%s: schedule runs past its section", what);
    kind = ck_get_u32(r);
    for (i = 0; i < OPTIM__SCHED_NI; i++) ints[i] = (int64_t)ck_get_u64(r);
    for (i = 0; i < OPTIM__SCHED_NR; i++) reals[i] = ck_get_f64(r);
    nm = ck_get_u32(r);
    OPTIM__FAIL_IF(!ck_has(r, (size_t)nm * 8 + 4), err, OPTIM_EFORMAT, "%s: %u schedule milestones run past the section",
                   what, nm);
    if (nm) {
        miles = (int64_t *)ck_malloc(nm * sizeof *miles);
        OPTIM__FAIL_IF(!miles, err, OPTIM_ENOMEM, "%s: out of memory for %u schedule milestones", what, nm);
        for (i = 0; i < nm; i++) miles[i] = (int64_t)ck_get_u64(r);
    }
    nc = ck_get_u32(r);
    if (nc > 1024 || nc > r->len - r->pos) { /* every child takes far more than a byte */
        free(miles);
        return optim__fail(err, OPTIM_EFORMAT, "%s: %u child schedules cannot fit in the section", what, nc);
    }
    if (nc) {
        kids = (optim_schedule **)ck_calloc(nc, sizeof *kids);
        if (!kids) {
            free(miles);
            return optim__fail(err, OPTIM_ENOMEM, "%s: out of memory for %u child schedules", what, nc);
        }
        for (i = 0; i < nc; i++) {
            rc = ck_read_schedule(r, &kids[i], depth + 1, what, err);
            if (rc != OPTIM_OK) {
                uint32_t k;
                for (k = 0; k < i; k++) optim_schedule_free(kids[k]);
                free(kids);
                free(miles);
                return rc;
            }
        }
    }
    /* The constructors check every argument again and take the children. */
    rc = optim__schedule_from_parts(out, (optim_schedule_kind)kind, ints, reals, miles, nm, kids, nc, err);
    free(kids);
    free(miles);
    if (rc != OPTIM_OK) {
        char msg[OPTIM_ERRMSG_MAX];
        snprintf(msg, sizeof msg, "%s", err ? err->message : "");
        return optim__fail(err, rc == OPTIM_ENOMEM ? OPTIM_ENOMEM : OPTIM_EFORMAT, "%s: %s (%s)", what,
                           rc == OPTIM_ENOMEM ? "out of memory for a schedule" : "invalid schedule", msg);
    }
    return OPTIM_OK;
}

static const char *ck_tag_name(uint32_t tag, char buf[8])
{
    int i;
    for (i = 0; i < 4; i++) {
        unsigned char c = (unsigned char)(tag >> (8 * i));
        buf[i] = (char)(c >= 32 && c < 127 ? c : '?');
    }
    buf[4] = '\0';
    return buf;
}

/* "section 4 (PARM of param 1 'fc.weight')": which part of the file a
 * section is, from its place among the sections of its tag (the order is
 * fixed) and, for a PARM, the name it holds if that name looks intact. */
static void ck_section_name(char *buf, size_t size, uint32_t k, uint32_t tag, size_t ordinal,
                            const unsigned char *payload, uint64_t len)
{
    char tb[8];
    ck_tag_name(tag, tb);
    if (tag == CK_GRUP) {
        snprintf(buf, size, "section %u (GRUP of group %zu)", k, ordinal);
    } else if (tag == CK_PARM) {
        uint32_t nlen = len >= 12 ? ck_le32(payload + 8) : 0;
        int printable = len >= 12 && nlen > 0 && nlen <= 64 && nlen <= len - 12;
        uint32_t i;
        for (i = 0; printable && i < nlen; i++) printable = payload[12 + i] >= 32 && payload[12 + i] < 127;
        if (printable)
            snprintf(buf, size, "section %u (PARM of param %zu '%.*s')", k, ordinal, (int)nlen,
                     (const char *)payload + 12);
        else
            snprintf(buf, size, "section %u (PARM of param %zu)", k, ordinal);
    } else {
        snprintf(buf, size, "section %u (%s)", k, tb);
    }
}

static int ck_parse_meta(ck_reader *r, ck_plan *pl, const char *what, optim_error *err)
{
    uint32_t len, reserved;
    OPTIM__FAIL_IF(!ck_has(r, 4 + 4 + 8 + 8 + 8 + 4 + 4 + 8 + 8 + 4), err, OPTIM_EFORMAT,
                   "%s: META section too short", what);
    pl->rule = (optim_rule)ck_get_u32(r);
    pl->ngroups = ck_get_u32(r);
    pl->nparams = (size_t)ck_get_u64(r);
    pl->steps = (int64_t)ck_get_u64(r);
    pl->skipped = (int64_t)ck_get_u64(r);
    pl->nonfinite = (optim_nonfinite)ck_get_u32(r);
    reserved = ck_get_u32(r);
    pl->clip_max_norm = ck_get_f64(r);
    pl->clip_norm_type = ck_get_f64(r);
    len = ck_get_u32(r);
    OPTIM__FAIL_IF(!ck_has(r, len), err, OPTIM_EFORMAT, "%s: META's library version runs past the section", what);
    snprintf(pl->library, sizeof pl->library, "%.*s", (int)(len < 31 ? len : 31), (const char *)r->p + r->pos);
    r->pos += len;
    pl->clip_value = 0;
    if (pl->format >= CK_FORMAT_CLIP_VALUE) {
        OPTIM__FAIL_IF(!ck_has(r, 8), err, OPTIM_EFORMAT, "%s: META's clip_value runs past the section", what);
        pl->clip_value = ck_get_f64(r);
        OPTIM__FAIL_IF(!(pl->clip_value >= 0) || isinf(pl->clip_value) || (pl->clip_value > 0 && pl->clip_max_norm > 0),
                       err, OPTIM_EFORMAT, "%s: clip_value = %.10g (with max_norm = %.10g)", what, pl->clip_value,
                       pl->clip_max_norm);
    }
    OPTIM__FAIL_IF(!optim_rule_name(pl->rule), err, OPTIM_EFORMAT, "%s: rule = %d is not a rule", what, (int)pl->rule);
    OPTIM__FAIL_IF(pl->steps < 0 || pl->skipped < 0, err, OPTIM_EFORMAT, "%s: negative step counters", what);
    OPTIM__FAIL_IF(pl->nonfinite > OPTIM_NONFINITE_ERROR, err, OPTIM_EFORMAT, "%s: non-finite policy = %u", what,
                   (unsigned)pl->nonfinite);
    OPTIM__FAIL_IF(reserved != 0, err, OPTIM_EFORMAT, "%s: reserved field = %u (0)", what, reserved);
    OPTIM__FAIL_IF(!(pl->clip_max_norm >= 0) || isinf(pl->clip_max_norm) || !(pl->clip_norm_type > 0), err,
                   OPTIM_EFORMAT, "%s: clipping max_norm = %.10g, norm_type = %.10g", what, pl->clip_max_norm,
                   pl->clip_norm_type);
    return OPTIM_OK;
}

static int ck_parse_group(ck_reader *r, ck_plan *pl, size_t expect, const char *what, optim_error *err)
{
    ck_group_plan *gp;
    uint32_t index, count, i;
    unsigned has_sched;
    char where[OPTIM_ERRMSG_MAX];
    OPTIM__FAIL_IF(!ck_has(r, 8), err, OPTIM_EFORMAT, "%s: GRUP section too short", what);
    index = ck_get_u32(r);
    count = ck_get_u32(r);
    OPTIM__FAIL_IF(index != expect, err, OPTIM_EFORMAT, "%s: group section %zu holds group %u", what, expect, index);
    gp = &pl->groups[index];
    snprintf(where, sizeof where, "%.200s: group %u", what, index);
    optim_hparams_init(&gp->hp, pl->rule, NULL);
    OPTIM__FAIL_IF(count > OPTIM_HP_COUNT || !ck_has(r, (size_t)count * 12 + 8 + 1), err, OPTIM_EFORMAT,
                   "%s: %u hyperparameters", where, count);
    for (i = 0; i < count; i++) {
        uint32_t id = ck_get_u32(r);
        double v = ck_get_f64(r);
        optim_error e2;
        if (optim_hparams_set(&gp->hp, (optim_hparam)id, v, &e2) != OPTIM_OK)
            return optim__fail(err, OPTIM_EFORMAT, "%s: %s", where, e2.message);
    }
    {
        optim_error e2;
        if (optim_hparams_check(&gp->hp, &e2) != OPTIM_OK)
            return optim__fail(err, OPTIM_EFORMAT, "%s: %s", where, e2.message);
    }
    gp->sched_t = (int64_t)ck_get_u64(r);
    OPTIM__FAIL_IF(gp->sched_t < 0, err, OPTIM_EFORMAT, "%s: schedule step %lld", where, (long long)gp->sched_t);
    has_sched = ck_get_u8(r);
    OPTIM__FAIL_IF(has_sched > 1, err, OPTIM_EFORMAT, "%s: schedule byte = %u (0 or 1)", where, has_sched);
    if (has_sched) OPTIM__FORWARD(ck_read_schedule(r, &gp->sched, 0, where, err));
    return OPTIM_OK;
}

/* "[4, 2]" into buf, from ndim sizes in memory (dims) or little-endian in a file (raw). */
static const char *ck_shape_text(char *buf, size_t size, size_t ndim, const int64_t *dims, const unsigned char *raw)
{
    size_t k, used = 0;
    buf[0] = '\0';
    for (k = 0; k < ndim && used + 24 < size; k++) {
        long long d = dims ? (long long)dims[k] : (long long)ck_le64(raw + 8 * k);
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", k ? ", " : "[", d);
    }
    if (ndim == 0)
        snprintf(buf, size, "[] (a scalar)");
    else if (k < ndim)
        snprintf(buf + used, size - used, ", ...]");
    else
        snprintf(buf + used, size - used, "]");
    return buf;
}

static int ck_parse_param(ck_reader *r, ck_plan *pl, size_t expect, const char *what, optim_error *err)
{
    ck_param_plan *pp;
    uint64_t index, n, step;
    uint32_t len, s, nslots = (uint32_t)optim_rule_slot_count(pl->rule);
    char where[OPTIM_ERRMSG_MAX];
    OPTIM__FAIL_IF(!ck_has(r, 12), err, OPTIM_EFORMAT, "%s: PARM section too short", what);
    index = ck_get_u64(r);
    len = ck_get_u32(r);
    OPTIM__FAIL_IF(index != expect, err, OPTIM_EFORMAT, "%s: param section %zu holds param %llu", what, expect,
                   (unsigned long long)index);
    OPTIM__FAIL_IF(len > CK_MAX_NAME || !ck_has(r, (size_t)len + 4 + 8), err, OPTIM_EFORMAT,
                   "%s: param %llu: name of %u bytes", what, (unsigned long long)index, len);
    pp = &pl->params[index];
    pp->name = (const char *)r->p + r->pos;
    pp->name_len = len;
    r->pos += len;
    snprintf(where, sizeof where, "%.200s: param %llu '%.*s'", what, (unsigned long long)index, (int)(len < 64 ? len : 64),
             pp->name);
    pp->group = ck_get_u32(r);
    n = ck_get_u64(r);
    pp->ndim = 1;
    if (pl->format >= CK_FORMAT_SHAPES) {
        uint64_t prod = 1;
        uint32_t ndim, k;
        OPTIM__FAIL_IF(!ck_has(r, 5), err, OPTIM_EFORMAT, "%s: the shape runs past the section", where);
        pp->shape_given = (int)ck_get_u8(r);
        ndim = ck_get_u32(r);
        OPTIM__FAIL_IF(pp->shape_given > 1, err, OPTIM_EFORMAT, "%s: shape byte = %d (0 or 1)", where,
                       pp->shape_given);
        OPTIM__FAIL_IF(ndim > OPTIM_MAX_NDIM || !ck_has(r, (size_t)ndim * 8), err, OPTIM_EFORMAT,
                       "%s: a shape of %u dimensions", where, ndim);
        pp->ndim = ndim;
        pp->dims = r->p + r->pos;
        for (k = 0; k < ndim; k++) {
            uint64_t d = ck_get_u64(r);
            OPTIM__FAIL_IF(d > (uint64_t)INT64_MAX, err, OPTIM_EFORMAT, "%s: shape size %u out of range", where, k);
            prod = d != 0 && prod > UINT64_MAX / d ? UINT64_MAX : prod * d;
        }
        if (prod != n || (!pp->shape_given && ndim != 1)) {
            char sh[96];
            return optim__fail(err, OPTIM_EFORMAT, "%s: %s shape %s for %llu elements", where,
                               pp->shape_given ? "a" : "a default", ck_shape_text(sh, sizeof sh, ndim, NULL, pp->dims),
                               (unsigned long long)n);
        }
    }
    OPTIM__FAIL_IF(!ck_has(r, 8 + 8 + 4 + 4), err, OPTIM_EFORMAT, "%s: PARM section too short", where);
    step = ck_get_u64(r);
    pp->mu_product = ck_get_f64(r);
    pp->initialized = ck_get_u32(r);
    pp->mask = ck_get_u32(r);
    OPTIM__FAIL_IF(pp->group >= pl->ngroups, err, OPTIM_EFORMAT, "%s: group %zu of %zu", where, pp->group, pl->ngroups);
    OPTIM__FAIL_IF(step > (uint64_t)INT64_MAX, err, OPTIM_EFORMAT, "%s: step out of range", where);
    OPTIM__FAIL_IF(!(pp->mu_product >= 0 && pp->mu_product <= 1), err, OPTIM_EFORMAT, "%s: mu_product = %.10g", where,
                   pp->mu_product);
    OPTIM__FAIL_IF(pp->mask >> nslots || (pp->initialized & ~pp->mask), err, OPTIM_EFORMAT,
                   "%s: slot mask 0x%x, initialized 0x%x (the rule has %u slots)", where, pp->mask, pp->initialized,
                   nslots);
    OPTIM__FAIL_IF(optim_hparams_slots(&pl->groups[pp->group].hp) & ~pp->mask, err, OPTIM_EFORMAT,
                   "%s: state the group's options need is missing (mask 0x%x)", where, pp->mask);
    pp->step = (int64_t)step;
    pp->n = (size_t)n;
    OPTIM__FAIL_IF(n != pp->n || n > ((uint64_t)SIZE_MAX) / 4, err, OPTIM_EFORMAT, "%s: n = %llu", where,
                   (unsigned long long)n);
    pp->dtype = OPTIM_FLOAT32;
    for (s = 0; s < nslots; s++) {
        size_t size;
        if (!((pp->mask >> s) & 1u)) continue;
        if (pl->format >= CK_FORMAT_DTYPES) {
            uint32_t dt;
            OPTIM__FAIL_IF(!ck_has(r, 4), err, OPTIM_EFORMAT, "%s: slot %s runs past the section", where,
                           optim_rule_slot_name(pl->rule, (int)s));
            dt = ck_get_u32(r);
            /* State is float32, or float64 (of float64 parameters); one type per parameter. */
            OPTIM__FAIL_IF(dt != OPTIM_FLOAT32 && dt != OPTIM_FLOAT64, err, OPTIM_EFORMAT,
                           "%s: slot %s has element type %u (0 float32, 1 float64)", where,
                           optim_rule_slot_name(pl->rule, (int)s), dt);
            OPTIM__FAIL_IF(s > 0 && (pp->mask & ((1u << s) - 1)) && (optim_dtype)dt != pp->dtype, err, OPTIM_EFORMAT,
                           "%s: slots of different element types", where);
            pp->dtype = (optim_dtype)dt;
        }
        size = optim_dtype_size(pp->dtype);
        OPTIM__FAIL_IF(pp->n > SIZE_MAX / size || !ck_has(r, pp->n * size), err, OPTIM_EFORMAT,
                       "%s: slot %s runs past the section", where, optim_rule_slot_name(pl->rule, (int)s));
        pp->data[s] = r->p + r->pos;
        r->pos += pp->n * size;
        pl->state_floats += pp->n;
    }
    return OPTIM_OK;
}

/* The first pass: every section's frame and checksum, then the file's. A
 * frame that does not fit is a damaged file if the file's checksum says so
 * (ECHECKSUM), else a file written wrong (EFORMAT). */
static int ck_walk(const unsigned char *data, size_t size, uint32_t sections, const char *what, optim_error *err)
{
    ck_reader r;
    size_t body_end = size - CK_TRAILER, ngrup = 0, nparm = 0;
    uint32_t k, stored = ck_le32(data + body_end);
    int file_ok = !CK_CRC_BAD(stored, optim__crc32c(0, data, body_end));
    const char *why = file_ok ? "" : " (and the file checksum does not match: the file is corrupt)";
    int code = file_ok ? OPTIM_EFORMAT : OPTIM_ECHECKSUM;
    r.p = data;
    r.len = body_end;
    r.pos = CK_HEADER;
    for (k = 0; k < sections; k++) {
        uint32_t tag, flags;
        uint64_t len;
        size_t start = r.pos, ordinal = 0;
        char name[160];
        if (!ck_has(&r, CK_SECTION_MIN))
            return optim__fail(err, code, "%s: section %u of %u at byte %zu runs past the end of the sections%s", what,
                               k, sections, start, why);
        tag = ck_get_u32(&r);
        flags = ck_get_u32(&r);
        len = ck_get_u64(&r);
        (void)flags;
        if (tag == CK_GRUP) ordinal = ngrup++;
        if (tag == CK_PARM) ordinal = nparm++;
        if (len > r.len - r.pos - 4) {
            ck_section_name(name, sizeof name, k, tag, ordinal, NULL, 0);
            return optim__fail(err, code, "%s: %s at byte %zu: a payload of %llu bytes runs past the end of the "
                               "sections%s", what, name, start, (unsigned long long)len, why);
        }
        ck_section_name(name, sizeof name, k, tag, ordinal, data + r.pos, len);
        r.pos += (size_t)len;
        if (CK_CRC_BAD(ck_get_u32(&r), optim__crc32c(0, data + start, CK_SECTION_HEAD + (size_t)len)))
            return optim__fail(err, OPTIM_ECHECKSUM, "%s: %s: checksum mismatch: the file is corrupt", what, name);
    }
    if (r.pos != body_end)
        return optim__fail(err, code, "%s: %zu bytes between the last of %u sections and the trailer%s", what,
                           body_end - r.pos, sections, why);
    OPTIM__FAIL_IF(!file_ok, err, OPTIM_ECHECKSUM,
                   "%s: file checksum mismatch (every section's own checksum matches: the trailer is damaged): the "
                   "file is corrupt",
                   what);
    return OPTIM_OK;
}

/* Parse and check a whole checkpoint into *pl (no optimizer involved). */
static int ck_parse(const unsigned char *data, size_t size, const char *what, ck_plan *pl, optim_error *err)
{
    ck_reader r;
    uint64_t declared;
    uint32_t sections, k, crc, hflags;
    size_t groups_seen = 0, params_seen = 0, body_end;
    int have_meta = 0;
    memset(pl, 0, sizeof *pl);
    if (size < 8 || memcmp(data, CK_MAGIC, 8) != 0) {
        if (size < 8 && memcmp(data, CK_MAGIC, size) == 0)
            return optim__fail(err, OPTIM_ETRUNCATED, "%s: truncated: %zu bytes, not even a header", what, size);
        return optim__fail(err, OPTIM_EMAGIC, "%s: not an optim checkpoint (wrong magic number)", what);
    }
    OPTIM__FAIL_IF(size < CK_HEADER, err, OPTIM_ETRUNCATED, "%s: truncated: %zu bytes, the header needs %d", what, size,
                   CK_HEADER);
    r.p = data;
    r.len = size;
    r.pos = 8;
    pl->format = ck_get_u32(&r);
    hflags = ck_get_u32(&r);
    declared = ck_get_u64(&r);
    sections = ck_get_u32(&r);
    crc = ck_get_u32(&r);
    OPTIM__FAIL_IF(CK_CRC_BAD(crc, optim__crc32c(0, data, 28)), err, OPTIM_ECHECKSUM,
                   "%s: header checksum mismatch: the file is corrupt", what);
    OPTIM__FAIL_IF(pl->format > OPTIM_CHECKPOINT_FORMAT, err, OPTIM_EVERSION,
                   "%s: format version %u is newer than this library's (%d): update optim to load it", what, pl->format,
                   OPTIM_CHECKPOINT_FORMAT);
    OPTIM__FAIL_IF(pl->format == 0, err, OPTIM_EFORMAT, "%s: format version 0", what);
    OPTIM__FAIL_IF(hflags != 0, err, OPTIM_EFORMAT, "%s: header flags 0x%x (format %u has none)", what, hflags,
                   pl->format);
    OPTIM__FAIL_IF(declared > size, err, OPTIM_ETRUNCATED, "%s: truncated: %zu of %llu bytes", what, size,
                   (unsigned long long)declared);
    OPTIM__FAIL_IF(declared < size, err, OPTIM_EFORMAT, "%s: %llu bytes after the end of the checkpoint", what,
                   (unsigned long long)(size - declared));
    OPTIM__FAIL_IF(size < CK_HEADER + CK_TRAILER, err, OPTIM_EFORMAT, "%s: no room for the trailer", what);
    body_end = size - CK_TRAILER;
    OPTIM__FAIL_IF(memcmp(data + size - 8, CK_END, 8) != 0, err, OPTIM_ECHECKSUM, "%s: the end marker is damaged", what);
    OPTIM__FORWARD(ck_walk(data, size, sections, what, err));

    /* The second pass: the frames are sound, parse the payloads. Sections a
     * reader may skip (flag bit 0) may stand anywhere; the ones this library
     * knows come in the order META, GRUP x groups, PARM x params. */
    r.len = body_end;
    r.pos = CK_HEADER;
    for (k = 0; k < sections; k++) {
        uint32_t tag, flags;
        uint64_t len;
        ck_reader sr;
        char name[160], what_sec[OPTIM_ERRMSG_MAX];
        int rc = OPTIM_OK, known;
        tag = ck_get_u32(&r);
        flags = ck_get_u32(&r);
        len = ck_get_u64(&r);
        sr.p = data + r.pos;
        sr.len = (size_t)len;
        sr.pos = 0;
        r.pos += (size_t)len + 4;
        known = tag == CK_META || tag == CK_GRUP || tag == CK_PARM;
        ck_section_name(name, sizeof name, k, tag, tag == CK_GRUP ? groups_seen : params_seen, sr.p, len);
        snprintf(what_sec, sizeof what_sec, "%.150s: %s", what, name);
        if (!known) {
            OPTIM__FAIL_IF(!(flags & CK_OPTIONAL), err, OPTIM_EFORMAT,
                           "%s: unknown section that a reader may not skip (flags 0x%x)", what_sec, flags);
            continue; /* a later library's addition: skipped, wherever it is */
        }
        OPTIM__FAIL_IF(flags != 0, err, OPTIM_EFORMAT, "%s: flags 0x%x (0 for this section)", what_sec, flags);
        if (tag == CK_META) {
            OPTIM__FAIL_IF(have_meta, err, OPTIM_EFORMAT, "%s: a second META section", what_sec);
            OPTIM__FORWARD(ck_parse_meta(&sr, pl, what_sec, err));
            OPTIM__FAIL_IF(pl->nparams > size / CK_SECTION_MIN || pl->ngroups > size / CK_SECTION_MIN, err,
                           OPTIM_EFORMAT, "%s: %zu groups and %zu params cannot fit in %zu bytes", what_sec,
                           pl->ngroups, pl->nparams, size);
            pl->groups = (ck_group_plan *)ck_calloc(pl->ngroups ? pl->ngroups : 1, sizeof *pl->groups);
            pl->params = pl->groups ? (ck_param_plan *)ck_calloc(pl->nparams ? pl->nparams : 1, sizeof *pl->params)
                                    : NULL;
            OPTIM__FAIL_IF(!pl->groups || !pl->params, err, OPTIM_ENOMEM,
                           "%s: out of memory for the plan of %zu groups and %zu params", what_sec, pl->ngroups,
                           pl->nparams);
            have_meta = 1;
        } else if (tag == CK_GRUP) {
            OPTIM__FAIL_IF(!have_meta || params_seen || groups_seen >= pl->ngroups, err, OPTIM_EFORMAT,
                           "%s: unexpected group section (%s)", what_sec,
                           !have_meta ? "before META" : params_seen ? "after a PARM" : "more than META announces");
            rc = ck_parse_group(&sr, pl, groups_seen, what_sec, err);
            groups_seen++;
        } else {
            OPTIM__FAIL_IF(!have_meta || groups_seen != pl->ngroups || params_seen >= pl->nparams, err, OPTIM_EFORMAT,
                           "%s: unexpected param section (%s)", what_sec,
                           !have_meta                     ? "before META"
                           : groups_seen != pl->ngroups ? "before every GRUP"
                                                        : "more than META announces");
            rc = ck_parse_param(&sr, pl, params_seen, what_sec, err);
            params_seen++;
        }
        if (rc != OPTIM_OK) return rc;
        OPTIM__FAIL_IF(sr.pos != sr.len, err, OPTIM_EFORMAT, "%s: %zu bytes left over", what_sec, sr.len - sr.pos);
    }
    OPTIM__FAIL_IF(!have_meta || groups_seen != pl->ngroups || params_seen != pl->nparams, err, OPTIM_EFORMAT,
                   "%s: %s%zu of %zu groups and %zu of %zu params present", what, have_meta ? "" : "no META section; ",
                   groups_seen, pl->ngroups, params_seen, pl->nparams);
    return OPTIM_OK;
}

/* Match the checkpoint's params to o's; allocate the slots o lacks. */
static int ck_match(optim *o, ck_plan *pl, optim_match match, const char *what)
{
    size_t i, j;
    int s;
    OPTIM__FAIL_IF(pl->rule != o->rule, &o->err, OPTIM_EMISMATCH,
                   "%s: the checkpoint is of rule %s, this optimizer's rule is %s", what, optim_rule_name(pl->rule),
                   optim_rule_name(o->rule));
    OPTIM__FAIL_IF(pl->ngroups != o->ngroups, &o->err, OPTIM_EMISMATCH, "%s: has %zu groups, the optimizer %zu", what,
                   pl->ngroups, o->ngroups);
    OPTIM__FAIL_IF(pl->nparams != o->nparams, &o->err, OPTIM_EMISMATCH, "%s: has %zu params, the optimizer %zu", what,
                   pl->nparams, o->nparams);
    for (i = 0; i < o->nparams; i++) o->params[i].fresh = 0; /* marks: matched */
    for (j = 0; j < pl->nparams; j++) {
        ck_param_plan *pp = &pl->params[j];
        const optim__param *pa;
        if (match == OPTIM_MATCH_POSITION) {
            i = j;
        } else {
            /* Names are few (a model's tensors); a linear search per name keeps this simple. */
            for (i = 0; i < o->nparams; i++)
                if (strlen(o->params[i].name) == pp->name_len && memcmp(o->params[i].name, pp->name, pp->name_len) == 0)
                    break;
            OPTIM__FAIL_IF(i == o->nparams, &o->err, OPTIM_EMISMATCH,
                           "%s: param '%.*s' of the checkpoint is not a param of the optimizer", what,
                           (int)(pp->name_len < 200 ? pp->name_len : 200), pp->name);
            OPTIM__FAIL_IF(o->params[i].fresh, &o->err, OPTIM_EMISMATCH,
                           "%s: two params are named '%s' (match by position instead)", what, o->params[i].name);
        }
        pa = &o->params[i];
        o->params[i].fresh = 1;
        pp->target = i;
        OPTIM__FAIL_IF(pa->n != pp->n, &o->err, OPTIM_EMISMATCH,
                       "%s: param %zu '%s' has %zu elements in the optimizer, %zu in the checkpoint", what, i, pa->name,
                       pa->n, pp->n);
        /* Shapes: compared when both sides were given one; the default [n]
         * (never given, or a format-1 file) matches any shape of n elements. */
        if (pa->dims && pp->shape_given) {
            size_t k;
            int same = pa->ndim == pp->ndim;
            for (k = 0; same && k < pa->ndim; k++) same = (uint64_t)pa->dims[k] == ck_le64(pp->dims + 8 * k);
            if (!same) {
                char a[96], b[96];
                return optim__fail(&o->err, OPTIM_EMISMATCH,
                                   "%s: param %zu '%s' has shape %s in the optimizer, %s in the checkpoint", what, i,
                                   pa->name, ck_shape_text(a, sizeof a, pa->ndim, pa->dims, NULL),
                                   ck_shape_text(b, sizeof b, pp->ndim, NULL, pp->dims));
            }
        }
        OPTIM__FAIL_IF(pa->group != pp->group, &o->err, OPTIM_EMISMATCH,
                       "%s: param %zu '%s' is in group %zu in the optimizer, %zu in the checkpoint", what, i, pa->name,
                       pa->group, pp->group);
        OPTIM__FAIL_IF(pp->mask && pa->sdt != pp->dtype, &o->err, OPTIM_EMISMATCH,
                       "%s: param %zu '%s' has %s state in the optimizer, %s in the checkpoint", what, i, pa->name,
                       optim_dtype_name(pa->sdt), optim_dtype_name(pp->dtype));
    }
    for (i = 0; i < o->nparams; i++) o->params[i].fresh = 0;
    for (j = 0; j < pl->nparams; j++) {
        ck_param_plan *pp = &pl->params[j];
        for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
            if (!((pp->mask >> s) & 1u) || o->params[pp->target].st.slot[s]) continue;
            pp->fresh[s] = ck_alloc_elems(pp->n, pp->dtype);
            OPTIM__FAIL_IF(!pp->fresh[s], &o->err, OPTIM_ENOMEM,
                           "%s: param %zu '%s': out of memory for %zu %s of state '%s'", what, pp->target,
                           o->params[pp->target].name, pp->n, pp->dtype == OPTIM_FLOAT64 ? "doubles" : "floats",
                           optim_rule_slot_name(o->rule, s));
        }
    }
    return OPTIM_OK;
}

static void ck_read_elems(void *dst, const unsigned char *src, size_t n, optim_dtype dtype)
{
    const size_t size = optim_dtype_size(dtype);
    if (ck_host_little_endian()) {
        memcpy(dst, src, n * size);
    } else {
        size_t i;
        for (i = 0; i < n; i++) {
            if (size == 8) {
                uint64_t v = ck_le64(src + 8 * i);
                memcpy((char *)dst + 8 * i, &v, 8);
            } else {
                uint32_t v = ck_le32(src + 4 * i);
                memcpy((char *)dst + 4 * i, &v, 4);
            }
        }
    }
}

/* Install the plan: cannot fail. */
static void ck_commit(optim *o, ck_plan *pl)
{
    size_t i, j;
    int s;
    for (i = 0; i < pl->ngroups; i++) {
        optim__group *g = &o->groups[i];
        g->hp = pl->groups[i].hp;
        optim_schedule_free(g->sched);
        g->sched = pl->groups[i].sched;
        g->sched_t = pl->groups[i].sched_t;
        pl->groups[i].sched = NULL;
    }
    for (j = 0; j < pl->nparams; j++) {
        ck_param_plan *pp = &pl->params[j];
        optim__param *pa = &o->params[pp->target];
        for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
            if ((pp->mask >> s) & 1u) {
                if (!pa->st.slot[s]) {
                    pa->st.slot[s] = pp->fresh[s];
                    pp->fresh[s] = NULL;
                }
                ck_read_elems(pa->st.slot[s], pp->data[s], pp->n, pp->dtype);
            } else if (pa->st.slot[s]) {
                /* Not allocated when saved (the saved options do not need it): reset
                 * it as a fresh allocation would be, but keep the memory, which
                 * bindings may be viewing. */
                optim__slot_reset(&o->groups[pa->group].hp, pa->n, &pa->st, s, pa->sdt);
            }
        }
        pa->st.step = pp->step;
        pa->st.mu_product = pp->mu_product;
        pa->st.initialized = (pa->st.initialized & ~pp->mask) | pp->initialized;
    }
    o->steps = pl->steps;
    o->skipped = pl->skipped;
    o->nonfinite = pl->nonfinite;
    o->clip_max_norm = pl->clip_max_norm;
    o->clip_norm_type = pl->clip_norm_type;
    o->clip_value = pl->clip_value;
    o->last_skipped = 0;
    o->last_norm = NAN;
}

int optim_load_buffer(optim *o, const void *data, size_t size, optim_match match, const char *what)
{
    ck_plan pl;
    int rc;
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(o->sam_perturbed, &o->err, OPTIM_ESTATE,
                   "%s: SAM is between first_step and second_step (the parameters are at w + e): call it after "
                   "optim_sam_second_step or optim_sam_restore", "optim_load_buffer");
    if (!what) what = "buffer";
    OPTIM__FAIL_IF(!data && size > 0, &o->err, OPTIM_ENULL, "optim_load_buffer: data is NULL");
    OPTIM__FAIL_IF(match != OPTIM_MATCH_NAME && match != OPTIM_MATCH_POSITION, &o->err, OPTIM_EINVAL,
                   "optim_load: match = %d is not OPTIM_MATCH_NAME or OPTIM_MATCH_POSITION", (int)match);
    rc = ck_parse((const unsigned char *)(data ? data : ""), size, what, &pl, &o->err);
    if (rc == OPTIM_OK) rc = ck_match(o, &pl, match, what);
    if (rc == OPTIM_OK) {
        ck_commit(o, &pl);
        optim__ok(&o->err);
    }
    ck_plan_free(&pl);
    return rc;
}

/* Map path read-only; *data NULL for an empty file. Only a regular file is
 * read: it is opened without blocking (a FIFO would wait for a writer for
 * ever, a terminal could become the controlling one) and refused unless
 * fstat says it is a regular file. */
static int ck_read_file(const char *path, const unsigned char **data, size_t *size, optim_error *err)
{
    struct stat st;
    int fd, e;
    unsigned char *buf;
    size_t got = 0;
    *data = NULL;
    *size = 0;
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
     * inconsistent, which the parser reports as a truncated or corrupt file.
     * O_NONBLOCK does not change reads of a regular file. */
    buf = (unsigned char *)ck_malloc((size_t)st.st_size);
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
        if (r == 0) break; /* shrunk since fstat: the parser says what is missing */
        got += (size_t)r;
    }
    close(fd);
    *data = buf;
    *size = got;
    return OPTIM_OK;
}

int optim_load(optim *o, const char *path, optim_match match)
{
    const unsigned char *data;
    size_t size;
    int rc;
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(o->sam_perturbed, &o->err, OPTIM_ESTATE,
                   "%s: SAM is between first_step and second_step (the parameters are at w + e): call it after "
                   "optim_sam_second_step or optim_sam_restore", "optim_load");
    OPTIM__FAIL_IF(!path || !*path, &o->err, OPTIM_ENULL, "optim_load: path is %s", path ? "empty" : "NULL");
    OPTIM__FORWARD(ck_read_file(path, &data, &size, &o->err));
    rc = optim_load_buffer(o, data, size, match, path);
    free((void *)(uintptr_t)data);
    return rc;
}

int optim_checkpoint_info_read(const char *path, optim_checkpoint_info *info, optim_error *err)
{
    const unsigned char *data;
    size_t size;
    ck_plan pl;
    int rc;
    OPTIM__FAIL_IF(!path || !info, err, OPTIM_ENULL, "optim_checkpoint_info_read: %s is NULL", !path ? "path" : "info");
    OPTIM__FORWARD(ck_read_file(path, &data, &size, err));
    rc = ck_parse(data ? data : (const unsigned char *)"", size, path, &pl, err);
    if (rc == OPTIM_OK) {
        memset(info, 0, sizeof *info);
        info->format = pl.format;
        info->rule = pl.rule;
        info->groups = pl.ngroups;
        info->params = pl.nparams;
        info->steps = pl.steps;
        info->state_floats = pl.state_floats;
        memcpy(info->library, pl.library, sizeof info->library);
        optim__ok(err);
    }
    ck_plan_free(&pl);
    free((void *)(uintptr_t)data);
    return rc;
}
