/* checkpoint.c: the checkpoint format (docs/CHECKPOINT.md), its writer and its
 * loader.
 *
 * Writing: the whole file is first "written" to a counting writer to learn
 * its size (slot data is only counted, not read), then written for real into
 * a temporary file next to the target, fsync'ed, renamed over the target, and
 * the directory fsync'ed.
 *
 * Loading: the file is mapped read-only and parsed with a bounds-checked
 * reader into a plan (every group's hyperparameters and schedule, the match
 * of every parameter, pointers to its slot data in the file, new slot arrays
 * where the optimizer lacks one). Every check happens while building the
 * plan; committing it cannot fail. State memory is never freed by a load (a
 * binding may hold views of it): a slot the checkpoint lacks is reset. */
#define _POSIX_C_SOURCE 200809L
#include "optim_internal.h"
#include "schedule_internal.h"

#include "optim_checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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
#define CK_MAX_SCHED_DEPTH 32 /* nesting of composite schedules a loader accepts */
#define CK_MAX_NAME 4096

/* Fuzzing builds (OPTIM_FUZZ) accept wrong checksums, as OSS-Fuzz's convention
 * has it, so that the fuzzer's mutations reach the parser behind them instead
 * of stopping at the first CRC. Never in a normal build. */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#  define CK_CRC_BAD(got, want) ((void)(got), (void)(want), 0)
#else
#  define CK_CRC_BAD(got, want) ((got) != (want))
#endif

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
        ssize_t k = write(w->fd, w->buf + off, w->used - off);
        if (k < 0) {
            if (errno == EINTR) continue;
            w->failed = errno ? errno : EIO;
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

/* n floats as little-endian IEEE binary32. */
static void ck_floats(ck_writer *w, const float *x, size_t n)
{
    if (ck_counting(w)) {
        w->total += 4 * (uint64_t)n;
        return;
    }
    if (ck_host_little_endian()) {
        ck_put(w, x, n * sizeof(float));
    } else {
        size_t i;
        for (i = 0; i < n; i++) {
            uint32_t v;
            memcpy(&v, &x[i], 4);
            ck_u32(w, v);
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
    size_t len = strlen(pa->name);
    int s;
    ck_u64(w, (uint64_t)i);
    ck_u32(w, (uint32_t)len);
    ck_put(w, pa->name, len);
    ck_u32(w, (uint32_t)pa->group);
    ck_u64(w, (uint64_t)pa->n);
    ck_u64(w, (uint64_t)pa->st.step);
    ck_f64(w, pa->st.mu_product);
    ck_u32(w, pa->st.initialized & mask);
    ck_u32(w, mask);
    for (s = 0; s < OPTIM_MAX_SLOTS; s++)
        if ((mask >> s) & 1u) ck_floats(w, pa->st.slot[s], pa->n);
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
    OPTIM__FAIL_IF(!data || !size, &o->err, OPTIM_ENULL, "optim_save_buffer: %s is NULL", !data ? "data" : "size");
    total = ck_measure(o, &sections);
    OPTIM__FAIL_IF(total > SIZE_MAX, &o->err, OPTIM_ENOMEM, "optim_save_buffer: %llu bytes do not fit in memory",
                   (unsigned long long)total);
    w = (ck_writer *)calloc(1, sizeof *w);
    *data = malloc((size_t)total);
    if (!w || !*data) {
        free(w);
        free(*data);
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
    char *d = (char *)malloc(len + 2);
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

int optim_save(optim *o, const char *path)
{
    uint32_t sections;
    uint64_t total;
    ck_writer *w = NULL;
    char *tmp = NULL, *dir = NULL;
    int fd = -1, rc = OPTIM_OK, e, attempt;
    struct stat st;
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(!path || !*path, &o->err, OPTIM_ENULL, "optim_save: path is %s", path ? "empty" : "NULL");
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return optim__fail(&o->err, OPTIM_EOPEN, "optim_save: %s is a directory", path);
    total = ck_measure(o, &sections);
    tmp = (char *)malloc(strlen(path) + 64);
    w = (ck_writer *)calloc(1, sizeof *w);
    if (w) w->buf = (unsigned char *)malloc(CK_BUF);
    if (!tmp || !w || !w->buf) {
        rc = optim__fail(&o->err, OPTIM_ENOMEM, "optim_save: %s: out of memory", path);
        goto done;
    }
    /* A new file next to the target (rename is atomic only within a file system),
     * created with O_EXCL under a unique name, with the usual permissions. */
    for (attempt = 0; attempt < 100 && fd < 0; attempt++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(tmp, strlen(path) + 64, "%s.tmp-%ld-%ld-%d", path, (long)getpid(), (long)ts.tv_nsec, attempt);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) {
        e = errno;
        rc = optim__fail(&o->err, OPTIM_EOPEN, "optim_save: cannot create a temporary file next to %s: %s", path,
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
    if (fsync(fd) != 0) {
        e = errno;
        rc = optim__fail(&o->err, ck_errno_code(e), "optim_save: flushing %s to disk failed: %s", tmp, strerror(e));
        goto done;
    }
    e = close(fd) != 0 ? errno : 0;
    fd = -1;
    if (e) {
        rc = optim__fail(&o->err, ck_errno_code(e), "optim_save: closing %s failed: %s", tmp, strerror(e));
        goto done;
    }
    if (rename(tmp, path) != 0) {
        e = errno;
        rc = optim__fail(&o->err, OPTIM_EWRITE, "optim_save: renaming %s to %s failed: %s", tmp, path, strerror(e));
        goto done;
    }
    free(tmp);
    tmp = NULL;
    /* Make the rename itself durable. File systems that cannot sync a directory say EINVAL. */
    dir = ck_dirname(path);
    if (dir) {
        int dfd = open(dir, O_RDONLY | O_CLOEXEC);
        if (dfd >= 0) {
            if (fsync(dfd) != 0 && errno != EINVAL) {
                e = errno;
                rc = optim__fail(&o->err, OPTIM_EWRITE, "optim_save: %s was written but syncing its directory %s failed: %s",
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

static uint32_t ck_get_u32(ck_reader *r)
{
    const unsigned char *b = r->p + r->pos;
    r->pos += 4;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint64_t ck_get_u64(ck_reader *r)
{
    uint64_t lo = ck_get_u32(r);
    return lo | (uint64_t)ck_get_u32(r) << 32;
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
    const unsigned char *data[OPTIM_MAX_SLOTS]; /* slot data in the file (little-endian floats) */
    float *fresh[OPTIM_MAX_SLOTS];              /* arrays allocated for slots the optimizer lacks */
    const char *name;
    size_t name_len;
    size_t n, group;
} ck_param_plan;

typedef struct ck_plan {
    uint32_t format;
    optim_rule rule;
    size_t ngroups, nparams;
    int64_t steps, skipped;
    optim_nonfinite nonfinite;
    double clip_max_norm, clip_norm_type;
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
        miles = (int64_t *)malloc(nm * sizeof *miles);
        OPTIM__FAIL_IF(!miles, err, OPTIM_ENOMEM, "%s: out of memory", what);
        for (i = 0; i < nm; i++) miles[i] = (int64_t)ck_get_u64(r);
    }
    nc = ck_get_u32(r);
    if (nc > 1024 || nc > r->len - r->pos) { /* every child takes far more than a byte */
        free(miles);
        return optim__fail(err, OPTIM_EFORMAT, "%s: %u child schedules cannot fit in the section", what, nc);
    }
    if (nc) {
        kids = (optim_schedule **)calloc(nc, sizeof *kids);
        if (!kids) {
            free(miles);
            return optim__fail(err, OPTIM_ENOMEM, "%s: out of memory", what);
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
        return optim__fail(err, OPTIM_EFORMAT, "%s: invalid schedule (%s)", what, msg);
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

static int ck_parse_meta(ck_reader *r, ck_plan *pl, const char *what, optim_error *err)
{
    uint32_t len;
    OPTIM__FAIL_IF(!ck_has(r, 4 + 4 + 8 + 8 + 8 + 4 + 4 + 8 + 8 + 4), err, OPTIM_EFORMAT,
                   "%s: META section too short", what);
    pl->rule = (optim_rule)ck_get_u32(r);
    pl->ngroups = ck_get_u32(r);
    pl->nparams = (size_t)ck_get_u64(r);
    pl->steps = (int64_t)ck_get_u64(r);
    pl->skipped = (int64_t)ck_get_u64(r);
    pl->nonfinite = (optim_nonfinite)ck_get_u32(r);
    (void)ck_get_u32(r);
    pl->clip_max_norm = ck_get_f64(r);
    pl->clip_norm_type = ck_get_f64(r);
    len = ck_get_u32(r);
    OPTIM__FAIL_IF(!ck_has(r, len), err, OPTIM_EFORMAT, "%s: META's library version runs past the section", what);
    snprintf(pl->library, sizeof pl->library, "%.*s", (int)(len < 31 ? len : 31), (const char *)r->p + r->pos);
    r->pos += len;
    OPTIM__FAIL_IF(!optim_rule_name(pl->rule), err, OPTIM_EFORMAT, "%s: rule = %d is not a rule", what, (int)pl->rule);
    OPTIM__FAIL_IF(pl->steps < 0 || pl->skipped < 0, err, OPTIM_EFORMAT, "%s: negative step counters", what);
    OPTIM__FAIL_IF(pl->nonfinite > OPTIM_NONFINITE_ERROR, err, OPTIM_EFORMAT, "%s: non-finite policy = %u", what,
                   (unsigned)pl->nonfinite);
    OPTIM__FAIL_IF(!(pl->clip_max_norm >= 0) || isinf(pl->clip_max_norm) || !(pl->clip_norm_type >= 1), err,
                   OPTIM_EFORMAT, "%s: clipping max_norm = %.10g, norm_type = %.10g", what, pl->clip_max_norm,
                   pl->clip_norm_type);
    return OPTIM_OK;
}

static int ck_parse_group(ck_reader *r, ck_plan *pl, size_t expect, const char *what, optim_error *err)
{
    ck_group_plan *gp;
    uint32_t index, count, i;
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
    if (r->p[r->pos++]) OPTIM__FORWARD(ck_read_schedule(r, &gp->sched, 0, where, err));
    return OPTIM_OK;
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
    OPTIM__FAIL_IF(len > CK_MAX_NAME || !ck_has(r, (size_t)len + 4 + 8 + 8 + 8 + 4 + 4), err, OPTIM_EFORMAT,
                   "%s: param %llu: name of %u bytes", what, (unsigned long long)index, len);
    pp = &pl->params[index];
    pp->name = (const char *)r->p + r->pos;
    pp->name_len = len;
    r->pos += len;
    snprintf(where, sizeof where, "%.200s: param %llu '%.*s'", what, (unsigned long long)index, (int)(len < 64 ? len : 64),
             pp->name);
    pp->group = ck_get_u32(r);
    n = ck_get_u64(r);
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
    for (s = 0; s < nslots; s++) {
        if (!((pp->mask >> s) & 1u)) continue;
        OPTIM__FAIL_IF(!ck_has(r, pp->n * 4), err, OPTIM_EFORMAT, "%s: slot %s runs past the section", where,
                       optim_rule_slot_name(pl->rule, (int)s));
        pp->data[s] = r->p + r->pos;
        r->pos += pp->n * 4;
        pl->state_floats += pp->n;
    }
    return OPTIM_OK;
}

/* Parse and check a whole checkpoint into *pl (no optimizer involved). */
static int ck_parse(const unsigned char *data, size_t size, const char *what, ck_plan *pl, optim_error *err)
{
    ck_reader r;
    uint64_t declared;
    uint32_t sections, k, crc;
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
    (void)ck_get_u32(&r);
    declared = ck_get_u64(&r);
    sections = ck_get_u32(&r);
    crc = ck_get_u32(&r);
    OPTIM__FAIL_IF(CK_CRC_BAD(crc, optim__crc32c(0, data, 28)), err, OPTIM_ECHECKSUM,
                   "%s: header checksum mismatch: the file is corrupt", what);
    OPTIM__FAIL_IF(pl->format > OPTIM_CHECKPOINT_FORMAT, err, OPTIM_EVERSION,
                   "%s: format version %u is newer than this library's (%d): update optim to load it", what, pl->format,
                   OPTIM_CHECKPOINT_FORMAT);
    OPTIM__FAIL_IF(pl->format == 0, err, OPTIM_EFORMAT, "%s: format version 0", what);
    OPTIM__FAIL_IF(declared > size, err, OPTIM_ETRUNCATED, "%s: truncated: %zu of %llu bytes", what, size,
                   (unsigned long long)declared);
    OPTIM__FAIL_IF(declared < size, err, OPTIM_EFORMAT, "%s: %llu bytes after the end of the checkpoint", what,
                   (unsigned long long)(size - declared));
    OPTIM__FAIL_IF(size < CK_HEADER + CK_TRAILER, err, OPTIM_EFORMAT, "%s: no room for the trailer", what);
    body_end = size - CK_TRAILER;
    OPTIM__FAIL_IF(memcmp(data + size - 8, CK_END, 8) != 0, err, OPTIM_ECHECKSUM, "%s: the end marker is damaged", what);
    r.len = size;
    r.pos = body_end;
    crc = ck_get_u32(&r);
    OPTIM__FAIL_IF(CK_CRC_BAD(crc, optim__crc32c(0, data, body_end)), err, OPTIM_ECHECKSUM,
                   "%s: file checksum mismatch: the file is corrupt", what);

    r.len = body_end;
    r.pos = CK_HEADER;
    for (k = 0; k < sections; k++) {
        uint32_t tag, flags, sec_crc;
        uint64_t len;
        size_t start = r.pos;
        ck_reader sr;
        char tb[8], what_sec[OPTIM_ERRMSG_MAX];
        int rc = OPTIM_OK;
        OPTIM__FAIL_IF(!ck_has(&r, CK_SECTION_HEAD), err, OPTIM_EFORMAT, "%s: section %u runs past the file", what, k);
        tag = ck_get_u32(&r);
        flags = ck_get_u32(&r);
        len = ck_get_u64(&r);
        snprintf(what_sec, sizeof what_sec, "%s: section %u (%s)", what, k, ck_tag_name(tag, tb));
        OPTIM__FAIL_IF(len > r.len - r.pos || r.len - r.pos - len < 4, err, OPTIM_EFORMAT, "%s: %llu bytes run past the file",
                       what_sec, (unsigned long long)len);
        sec_crc = optim__crc32c(0, data + start, CK_SECTION_HEAD + (size_t)len);
        sr.p = data + r.pos;
        sr.len = (size_t)len;
        sr.pos = 0;
        r.pos += (size_t)len;
        OPTIM__FAIL_IF(CK_CRC_BAD(ck_get_u32(&r), sec_crc), err, OPTIM_ECHECKSUM,
                       "%s: checksum mismatch: the file is corrupt", what_sec);
        if (tag == CK_META) {
            OPTIM__FAIL_IF(have_meta || k != 0, err, OPTIM_EFORMAT, "%s: META must be the first and only one", what_sec);
            OPTIM__FORWARD(ck_parse_meta(&sr, pl, what_sec, err));
            OPTIM__FAIL_IF(pl->nparams > size / CK_SECTION_HEAD || pl->ngroups > size / CK_SECTION_HEAD, err,
                           OPTIM_EFORMAT, "%s: %zu groups and %zu params cannot fit in %zu bytes", what_sec,
                           pl->ngroups, pl->nparams, size);
            OPTIM__FAIL_IF(sections != 1 + pl->ngroups + pl->nparams && pl->format == 1, err, OPTIM_EFORMAT,
                           "%s: %u sections for %zu groups and %zu params", what_sec, sections, pl->ngroups, pl->nparams);
            pl->groups = (ck_group_plan *)calloc(pl->ngroups ? pl->ngroups : 1, sizeof *pl->groups);
            pl->params = (ck_param_plan *)calloc(pl->nparams ? pl->nparams : 1, sizeof *pl->params);
            OPTIM__FAIL_IF(!pl->groups || !pl->params, err, OPTIM_ENOMEM, "%s: out of memory", what);
            have_meta = 1;
        } else if (tag == CK_GRUP) {
            OPTIM__FAIL_IF(!have_meta || params_seen || groups_seen >= pl->ngroups, err, OPTIM_EFORMAT,
                           "%s: unexpected group section", what_sec);
            rc = ck_parse_group(&sr, pl, groups_seen, what_sec, err);
            groups_seen++;
        } else if (tag == CK_PARM) {
            OPTIM__FAIL_IF(!have_meta || groups_seen != pl->ngroups || params_seen >= pl->nparams, err, OPTIM_EFORMAT,
                           "%s: unexpected param section", what_sec);
            rc = ck_parse_param(&sr, pl, params_seen, what_sec, err);
            params_seen++;
        } else if (!(flags & CK_OPTIONAL)) {
            return optim__fail(err, OPTIM_EFORMAT, "%s: unknown section that a reader may not skip", what_sec);
        }
        if (rc != OPTIM_OK) return rc;
        OPTIM__FAIL_IF((tag == CK_META || tag == CK_GRUP || tag == CK_PARM) && sr.pos != sr.len, err, OPTIM_EFORMAT,
                       "%s: %zu bytes left over", what_sec, sr.len - sr.pos);
    }
    OPTIM__FAIL_IF(r.pos != body_end, err, OPTIM_EFORMAT, "%s: %zu bytes between the last section and the trailer", what,
                   body_end - r.pos);
    OPTIM__FAIL_IF(!have_meta || groups_seen != pl->ngroups || params_seen != pl->nparams, err, OPTIM_EFORMAT,
                   "%s: %zu of %zu groups and %zu of %zu params present", what, groups_seen, pl->ngroups, params_seen,
                   pl->nparams);
    return OPTIM_OK;
}

/* Match the checkpoint's params to o's; allocate the slots o lacks. */
static int ck_match(optim *o, ck_plan *pl, optim_match match, const char *what)
{
    size_t i, j;
    int s;
    OPTIM__FAIL_IF(pl->rule != o->rule, &o->err, OPTIM_EMISMATCH, "%s: saved by a %s optimizer, this one is %s", what,
                   optim_rule_name(pl->rule), optim_rule_name(o->rule));
    OPTIM__FAIL_IF(pl->ngroups != o->ngroups, &o->err, OPTIM_EMISMATCH, "%s: has %zu groups, the optimizer %zu", what,
                   pl->ngroups, o->ngroups);
    OPTIM__FAIL_IF(pl->nparams != o->nparams, &o->err, OPTIM_EMISMATCH, "%s: has %zu params, the optimizer %zu", what,
                   pl->nparams, o->nparams);
    for (i = 0; i < o->nparams; i++) o->params[i].fresh = 0; /* marks: matched */
    for (j = 0; j < pl->nparams; j++) {
        ck_param_plan *pp = &pl->params[j];
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
        o->params[i].fresh = 1;
        pp->target = i;
        OPTIM__FAIL_IF(o->params[i].n != pp->n, &o->err, OPTIM_EMISMATCH,
                       "%s: param %zu '%s' has %zu elements in the optimizer, %zu in the checkpoint", what, i,
                       o->params[i].name, o->params[i].n, pp->n);
        OPTIM__FAIL_IF(o->params[i].group != pp->group, &o->err, OPTIM_EMISMATCH,
                       "%s: param %zu '%s' is in group %zu in the optimizer, %zu in the checkpoint", what, i,
                       o->params[i].name, o->params[i].group, pp->group);
    }
    for (i = 0; i < o->nparams; i++) o->params[i].fresh = 0;
    for (j = 0; j < pl->nparams; j++) {
        ck_param_plan *pp = &pl->params[j];
        for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
            if (!((pp->mask >> s) & 1u) || o->params[pp->target].st.slot[s]) continue;
            pp->fresh[s] = optim__alloc_floats(pp->n);
            OPTIM__FAIL_IF(!pp->fresh[s], &o->err, OPTIM_ENOMEM, "%s: out of memory for %zu floats of state", what,
                           pp->n);
        }
    }
    return OPTIM_OK;
}

static void ck_read_floats(float *dst, const unsigned char *src, size_t n)
{
    if (ck_host_little_endian()) {
        memcpy(dst, src, n * sizeof(float));
    } else {
        size_t i;
        for (i = 0; i < n; i++) {
            uint32_t v = (uint32_t)src[4 * i] | (uint32_t)src[4 * i + 1] << 8 | (uint32_t)src[4 * i + 2] << 16 |
                         (uint32_t)src[4 * i + 3] << 24;
            memcpy(&dst[i], &v, 4);
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
                ck_read_floats(pa->st.slot[s], pp->data[s], pp->n);
            } else if (pa->st.slot[s]) {
                /* Not allocated when saved (the saved options do not need it): reset
                 * it as a fresh allocation would be, but keep the memory, which
                 * bindings may be viewing. */
                optim__slot_reset(&o->groups[pa->group].hp, pa->n, &pa->st, s);
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
    o->last_skipped = 0;
    o->last_norm = NAN;
}

int optim_load_buffer(optim *o, const void *data, size_t size, optim_match match, const char *what)
{
    ck_plan pl;
    int rc;
    if (!o) return OPTIM_ENULL;
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

/* Map path read-only; *data NULL for an empty file. */
static int ck_map(const char *path, const unsigned char **data, size_t *size, optim_error *err)
{
    struct stat st;
    int fd, e;
    void *m;
    *data = NULL;
    *size = 0;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        e = errno;
        return optim__fail(err, OPTIM_EOPEN, "%s: cannot open: %s", path, strerror(e));
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        e = errno;
        close(fd);
        return optim__fail(err, OPTIM_EREAD, "%s: %s", path, S_ISDIR(st.st_mode) ? "is a directory" : strerror(e));
    }
    if (st.st_size == 0) {
        close(fd);
        return OPTIM_OK;
    }
    m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    e = errno;
    close(fd);
    if (m == MAP_FAILED) return optim__fail(err, OPTIM_EREAD, "%s: cannot read: %s", path, strerror(e));
    *data = (const unsigned char *)m;
    *size = (size_t)st.st_size;
    return OPTIM_OK;
}

int optim_load(optim *o, const char *path, optim_match match)
{
    const unsigned char *data;
    size_t size;
    int rc;
    if (!o) return OPTIM_ENULL;
    OPTIM__FAIL_IF(!path || !*path, &o->err, OPTIM_ENULL, "optim_load: path is %s", path ? "empty" : "NULL");
    OPTIM__FORWARD(ck_map(path, &data, &size, &o->err));
    rc = optim_load_buffer(o, data, size, match, path);
    if (data) munmap((void *)(uintptr_t)data, size);
    return rc;
}

int optim_checkpoint_info_read(const char *path, optim_checkpoint_info *info, optim_error *err)
{
    const unsigned char *data;
    size_t size;
    ck_plan pl;
    int rc;
    OPTIM__FAIL_IF(!path || !info, err, OPTIM_ENULL, "optim_checkpoint_info_read: %s is NULL", !path ? "path" : "info");
    OPTIM__FORWARD(ck_map(path, &data, &size, err));
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
    if (data) munmap((void *)(uintptr_t)data, size);
    return rc;
}
