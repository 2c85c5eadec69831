/* shard_manifest.c: the manifest of a sharded checkpoint directory: its text
 * (rendered, parsed with every field checked, and a CRC-32C of the whole),
 * reading it (or saying what the directory holds instead), writing it
 * atomically, removing the files of earlier saves. No MPI. */
#define _POSIX_C_SOURCE 200809L
#include "shard_ckpt.h"

#include "optim_checkpoint.h"
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

int osc_fail(optim_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

uint32_t osc_crc32c(uint32_t crc, const void *data, size_t n)
{
    const unsigned char *p = (const unsigned char *)data;
    size_t i;
    int k;
    crc = ~crc;
    for (i = 0; i < n; i++) {
        crc ^= p[i];
        for (k = 0; k < 8; k++) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

void osc_manifest_free(osc_manifest *m)
{
    size_t i;
    int r;
    if (!m) return;
    for (i = 0; i < m->nparams && m->params; i++) {
        free(m->params[i].name);
        free(m->params[i].dims);
    }
    free(m->params);
    for (r = 0; r < m->ranks; r++) {
        if (m->pieces) free(m->pieces[r]);
        if (m->files) free(m->files[r]);
    }
    free(m->pieces);
    free(m->files);
    free(m->npieces);
    memset(m, 0, sizeof *m);
}

/* ---- Text ------------------------------------------------------------------------ */

typedef struct osc_buf {
    char *s;
    size_t len, cap;
    int oom;
} osc_buf;

static void osc_put(osc_buf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void osc_put(osc_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    if (b->oom) return;
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        n = vsnprintf(b->s ? b->s + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        {
            size_t cap = b->cap ? b->cap * 2 : 4096;
            char *s;
            while (cap - b->len <= (size_t)n) cap *= 2;
            s = (char *)realloc(b->s, cap);
            if (!s) {
                b->oom = 1;
                return;
            }
            b->s = s;
            b->cap = cap;
        }
    }
}

/* Names may hold any byte but NUL: bytes outside '!'..'~' and '%' are written %XX. */
static void osc_put_escaped(osc_buf *b, const char *name)
{
    const unsigned char *p = (const unsigned char *)name;
    if (!*p) {
        osc_put(b, "%%");
        return;
    }
    for (; *p; p++) {
        if (*p < 0x21 || *p > 0x7e || *p == '%')
            osc_put(b, "%%%02X", *p);
        else
            osc_put(b, "%c", *p);
    }
}

char *osc_manifest_render(const osc_manifest *m, size_t *len)
{
    osc_buf b = {NULL, 0, 0, 0};
    size_t i, k;
    int r;
    osc_put(&b, "optim sharded checkpoint\nformat %u\nlibrary %s\nsave %s\nranks %d\nstage %d\nrule %s\n", m->format,
            m->library, m->save_id, m->ranks, m->stage, optim_rule_name(m->rule));
    if (m->format >= 2) osc_put(&b, "layout %s\n", m->layout);
    osc_put(&b, "groups %zu\nsteps %lld\nskipped %lld\nparams %zu\n", m->ngroups, (long long)m->steps,
            (long long)m->skipped, m->nparams);
    for (i = 0; i < m->nparams; i++) {
        const osc_param *p = &m->params[i];
        osc_put(&b, "param %zu %zu %zu ", i, p->n, p->group);
        if (!p->shape_given) {
            osc_put(&b, "-");
        } else {
            osc_put(&b, "%zu:", p->ndim);
            for (k = 0; k < p->ndim; k++) osc_put(&b, "%s%lld", k ? "," : "", (long long)p->dims[k]);
        }
        if (m->format >= 3) {
            const char *pn = optim_dtype_name(p->pdt), *gn = optim_dtype_name(p->gdt), *sn = optim_dtype_name(p->sdt);
            osc_put(&b, " %s,%s,%s", pn ? pn : "?", gn ? gn : "?", sn ? sn : "?");
            if (m->format >= 4) osc_put(&b, ",0x%x", p->flags);
        }
        osc_put(&b, " ");
        osc_put_escaped(&b, p->name);
        osc_put(&b, "\n");
    }
    for (r = 0; r < m->ranks; r++) {
        osc_put(&b, "shard %d %zu %s\n", r, m->npieces[r], m->files[r]);
        for (k = 0; k < m->npieces[r]; k++) {
            const osc_piece *q = &m->pieces[r][k];
            if (q->param == OSC_NO_PARAM)
                osc_put(&b, "piece - 0 0\n");
            else
                osc_put(&b, "piece %zu %zu %zu\n", q->param, q->a, q->b);
        }
    }
    if (!b.oom) osc_put(&b, "crc32c %08x\n", (unsigned)osc_crc32c(0, b.s, b.len));
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    *len = b.len;
    return b.s;
}

/* A cursor over the manifest's lines. */
typedef struct osc_rd {
    const char *p, *end;
    const char *what;
    int line;
    char tok[16][512];
    int ntok;
} osc_rd;

/* Split the next line into tokens (at most 16, each under 512 bytes). */
static int osc_line(osc_rd *r, optim_error *err)
{
    const char *nl;
    r->ntok = 0;
    if (r->p >= r->end) return osc_fail(err, OPTIM_ETRUNCATED, "%s: ends early (line %d)", r->what, r->line + 1);
    nl = (const char *)memchr(r->p, '\n', (size_t)(r->end - r->p));
    if (!nl) return osc_fail(err, OPTIM_ETRUNCATED, "%s: line %d has no end", r->what, r->line + 1);
    r->line++;
    while (r->p < nl) {
        const char *s;
        size_t n;
        while (r->p < nl && *r->p == ' ') r->p++;
        if (r->p == nl) break;
        s = r->p;
        while (r->p < nl && *r->p != ' ') r->p++;
        n = (size_t)(r->p - s);
        if (r->ntok == 16 || n >= sizeof r->tok[0])
            return osc_fail(err, OPTIM_EFORMAT, "%s: line %d is malformed", r->what, r->line);
        memcpy(r->tok[r->ntok], s, n);
        r->tok[r->ntok][n] = '\0';
        r->ntok++;
    }
    r->p = nl + 1;
    return OPTIM_OK;
}

static int osc_expect(osc_rd *r, const char *key, int ntok, optim_error *err)
{
    if (osc_line(r, err) != OPTIM_OK) return err ? err->code : OPTIM_EFORMAT;
    if (r->ntok != ntok || strcmp(r->tok[0], key) != 0)
        return osc_fail(err, OPTIM_EFORMAT, "%s: line %d: expected '%s' with %d value%s", r->what, r->line, key,
                        ntok - 1, ntok == 2 ? "" : "s");
    return OPTIM_OK;
}

static int osc_num(osc_rd *r, const char *s, unsigned long long max, unsigned long long *out, optim_error *err)
{
    char *end;
    unsigned long long v;
    errno = 0;
    if (*s < '0' || *s > '9') return osc_fail(err, OPTIM_EFORMAT, "%s: line %d: '%s' is not a number", r->what, r->line, s);
    v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return osc_fail(err, OPTIM_EFORMAT, "%s: line %d: '%s' is not a number up to %llu", r->what, r->line, s, max);
    *out = v;
    return OPTIM_OK;
}

#define OSC_TRY(x)                                  \
    do {                                            \
        int osc_rc_ = (x);                          \
        if (osc_rc_ != OPTIM_OK) goto fail;         \
    } while (0)

static int osc_unescape(osc_rd *r, const char *s, char **out, optim_error *err)
{
    size_t n = strlen(s), i, k = 0;
    char *d = (char *)malloc(n + 1);
    if (!d) return osc_fail(err, OPTIM_ENOMEM, "%s: out of memory", r->what);
    if (strcmp(s, "%") == 0) {
        d[0] = '\0';
        *out = d;
        return OPTIM_OK;
    }
    for (i = 0; i < n; i++) {
        if (s[i] == '%') {
            unsigned v;
            if (i + 2 >= n || !isxdigit((unsigned char)s[i + 1]) || !isxdigit((unsigned char)s[i + 2]) ||
                sscanf(s + i + 1, "%2X", &v) != 1 || v == 0)
                goto bad;
            d[k++] = (char)v;
            i += 2;
        } else {
            d[k++] = s[i];
        }
    }
    d[k] = '\0';
    *out = d;
    return OPTIM_OK;
bad:
    free(d);
    return osc_fail(err, OPTIM_EFORMAT, "%s: line %d: bad escape in name '%s'", r->what, r->line, s);
}

/* "float32,bfloat16,float32": a parameter's memory, gradient and state
 * types, a combination the core takes; format 4 adds its storage flags
 * (",0x1": OPTIM_PARAM_MASTER and OPTIM_PARAM_STOCHASTIC_ROUNDING only). */
static int osc_dtypes(osc_rd *r, const char *s, osc_param *p, int with_flags, optim_error *err)
{
    optim_dtype t[3];
    const char *at = s;
    unsigned flags = 0;
    int k;
    for (k = 0; k < 3; k++) {
        const char *end = k < 2 || with_flags ? strchr(at, ',') : at + strlen(at);
        int d, found = 0;
        if (!end) break;
        for (d = 0; d < OPTIM_DTYPE_COUNT && !found; d++) {
            const char *name = optim_dtype_name((optim_dtype)d);
            if (name && strlen(name) == (size_t)(end - at) && strncmp(name, at, (size_t)(end - at)) == 0) {
                t[k] = (optim_dtype)d;
                found = 1;
            }
        }
        if (!found) break;
        at = end + (k < 2 || with_flags);
    }
    if (k < 3)
        return osc_fail(err, OPTIM_EFORMAT, "%s: line %d: element types '%.60s' (memory,gradient,state: float32, "
                        "float64, bfloat16 or float16; state also int8_block%s)", r->what, r->line, s,
                        with_flags ? "; then the storage flags" : "");
    if (with_flags) {
        char *end = NULL;
        unsigned long v;
        if (at[0] != '0' || at[1] != 'x' || !isxdigit((unsigned char)at[2]))
            return osc_fail(err, OPTIM_EFORMAT, "%s: line %d: storage flags '%.30s' (0x followed by hex digits)",
                            r->what, r->line, at);
        errno = 0;
        v = strtoul(at + 2, &end, 16);
        if (errno || *end ||
            (v & ~(unsigned long)(OPTIM_PARAM_MASTER | OPTIM_PARAM_STOCHASTIC_ROUNDING |
                                  OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING)))
            return osc_fail(err, OPTIM_EFORMAT, "%s: line %d: storage flags '%.30s' (OPTIM_PARAM_MASTER 0x1, "
                            "OPTIM_PARAM_STOCHASTIC_ROUNDING 0x2 and OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING 0x8 only)",
                            r->what, r->line, at);
        flags = (unsigned)v;
    }
    {
        /* With a master the math's parameter is float32: its gradient and state types are a float32's. */
        optim_dtype dflt, pm = (flags & OPTIM_PARAM_MASTER) ? OPTIM_FLOAT32 : t[0];
        if (((flags & OPTIM_PARAM_MASTER) && t[0] != OPTIM_BFLOAT16 && t[0] != OPTIM_FLOAT16) ||
            optim_dtypes_check(pm, t[1], &dflt, NULL) != OPTIM_OK ||
            (t[2] != dflt && optim_state_dtype_check(pm, t[2], NULL) != OPTIM_OK))
            return osc_fail(err, OPTIM_EFORMAT, "%s: line %d: element types '%.60s' are no combination the library "
                            "takes", r->what, r->line, s);
    }
    p->flags = flags;
    p->pdt = t[0];
    p->gdt = t[1];
    p->sdt = t[2];
    return OPTIM_OK;
}

int osc_manifest_parse(const char *text, size_t len, const char *what, osc_manifest *m, optim_error *err)
{
    osc_rd r;
    unsigned long long v;
    const char *crc_line;
    size_t i, k;
    int rank;
    memset(m, 0, sizeof *m);
    memset(&r, 0, sizeof r);
    r.p = text;
    r.end = text + len;
    r.what = what;
    /* The last line is the checksum of everything before it. */
    crc_line = len >= 16 && text[len - 1] == '\n' ? text + len - 16 : NULL;
    if (!crc_line || strncmp(crc_line, "crc32c ", 7) != 0 || (crc_line > text && crc_line[-1] != '\n'))
        return osc_fail(err, OPTIM_ETRUNCATED, "%s: no checksum line at the end (truncated or not a manifest)", what);
    {
        unsigned want;
        int c;
        /* Exactly what the writer writes: 8 lower-case hex digits. */
        for (c = 7; c < 15; c++)
            if (!((crc_line[c] >= '0' && crc_line[c] <= '9') || (crc_line[c] >= 'a' && crc_line[c] <= 'f')))
                return osc_fail(err, OPTIM_EFORMAT, "%s: malformed checksum line", what);
        if (sscanf(crc_line + 7, "%8x", &want) != 1)
            return osc_fail(err, OPTIM_EFORMAT, "%s: malformed checksum line", what);
        if (want != osc_crc32c(0, text, (size_t)(crc_line - text)))
            return osc_fail(err, OPTIM_ECHECKSUM, "%s: checksum mismatch: the manifest is corrupt", what);
    }
    r.end = crc_line;
    /* Text: a NUL byte would end a field early (and render as another manifest). */
    if (memchr(text, '\0', (size_t)(crc_line - text)) != NULL)
        return osc_fail(err, OPTIM_EFORMAT, "%s: a NUL byte at offset %zu (a manifest is text)", what,
                        (size_t)((const char *)memchr(text, '\0', (size_t)(crc_line - text)) - text));
    if (osc_line(&r, err) != OPTIM_OK || r.ntok != 3 || strcmp(r.tok[0], "optim") != 0 ||
        strcmp(r.tok[1], "sharded") != 0 || strcmp(r.tok[2], "checkpoint") != 0)
        return osc_fail(err, OPTIM_EMAGIC, "%s: not a manifest of optim's sharded checkpoints", what);
    OSC_TRY(osc_expect(&r, "format", 2, err));
    OSC_TRY(osc_num(&r, r.tok[1], 1000000, &v, err));
    if (v > OSC_FORMAT) {
        osc_fail(err, OPTIM_EVERSION, "%s: format %llu is newer than this library's (%d)", what, v, OSC_FORMAT);
        goto fail;
    }
    m->format = (unsigned)v;
    OSC_TRY(osc_expect(&r, "library", 2, err));
    snprintf(m->library, sizeof m->library, "%.31s", r.tok[1]);
    OSC_TRY(osc_expect(&r, "save", 2, err));
    snprintf(m->save_id, sizeof m->save_id, "%.63s", r.tok[1]);
    OSC_TRY(osc_expect(&r, "ranks", 2, err));
    OSC_TRY(osc_num(&r, r.tok[1], 1u << 24, &v, err));
    if (v == 0) {
        osc_fail(err, OPTIM_EFORMAT, "%s: ranks = 0", what);
        goto fail;
    }
    m->ranks = (int)v;
    OSC_TRY(osc_expect(&r, "stage", 2, err));
    OSC_TRY(osc_num(&r, r.tok[1], 2, &v, err));
    m->stage = (int)v;
    OSC_TRY(osc_expect(&r, "rule", 2, err));
    m->rule = optim_rule_from_name(r.tok[1]);
    if (!m->rule) {
        osc_fail(err, OPTIM_EFORMAT, "%s: unknown rule '%s'", what, r.tok[1]);
        goto fail;
    }
    if (m->format >= 2) {
        OSC_TRY(osc_expect(&r, "layout", 2, err));
        if (strcmp(r.tok[1], "whole") != 0 && strcmp(r.tok[1], "contiguous") != 0) {
            osc_fail(err, OPTIM_EFORMAT, "%s: line %d: layout '%.40s' (whole or contiguous)", what, r.line, r.tok[1]);
            goto fail;
        }
        snprintf(m->layout, sizeof m->layout, "%.15s", r.tok[1]);
    } else {
        snprintf(m->layout, sizeof m->layout, "buckets");
    }
    OSC_TRY(osc_expect(&r, "groups", 2, err));
    OSC_TRY(osc_num(&r, r.tok[1], 1u << 30, &v, err));
    m->ngroups = (size_t)v;
    OSC_TRY(osc_expect(&r, "steps", 2, err));
    OSC_TRY(osc_num(&r, r.tok[1], INT64_MAX, &v, err));
    m->steps = (int64_t)v;
    OSC_TRY(osc_expect(&r, "skipped", 2, err));
    OSC_TRY(osc_num(&r, r.tok[1], INT64_MAX, &v, err));
    m->skipped = (int64_t)v;
    OSC_TRY(osc_expect(&r, "params", 2, err));
    OSC_TRY(osc_num(&r, r.tok[1], 1u << 30, &v, err));
    m->params = (osc_param *)calloc(v ? (size_t)v : 1, sizeof *m->params);
    m->npieces = (size_t *)calloc((size_t)m->ranks, sizeof *m->npieces);
    m->pieces = (osc_piece **)calloc((size_t)m->ranks, sizeof *m->pieces);
    m->files = (char **)calloc((size_t)m->ranks, sizeof *m->files);
    if (!m->params || !m->npieces || !m->pieces || !m->files) {
        osc_fail(err, OPTIM_ENOMEM, "%s: out of memory", what);
        goto fail;
    }
    m->nparams = (size_t)v;
    for (i = 0; i < m->nparams; i++) {
        osc_param *p = &m->params[i];
        OSC_TRY(osc_expect(&r, "param", m->format >= 3 ? 7 : 6, err));
        OSC_TRY(osc_num(&r, r.tok[1], SIZE_MAX, &v, err));
        if (v != i) {
            osc_fail(err, OPTIM_EFORMAT, "%s: line %d: param %llu where %zu was expected", what, r.line, v, i);
            goto fail;
        }
        OSC_TRY(osc_num(&r, r.tok[2], (unsigned long long)1 << 62, &v, err));
        p->n = (size_t)v;
        OSC_TRY(osc_num(&r, r.tok[3], SIZE_MAX, &v, err));
        if (v >= m->ngroups) {
            osc_fail(err, OPTIM_EFORMAT, "%s: line %d: group %llu of %zu", what, r.line, v, m->ngroups);
            goto fail;
        }
        p->group = (size_t)v;
        if (strcmp(r.tok[4], "-") != 0) {
            char *colon = strchr(r.tok[4], ':'), *s;
            uint64_t prod = 1;
            unsigned long long nd;
            if (!colon) {
                osc_fail(err, OPTIM_EFORMAT, "%s: line %d: bad shape '%s'", what, r.line, r.tok[4]);
                goto fail;
            }
            *colon = '\0';
            OSC_TRY(osc_num(&r, r.tok[4], OPTIM_MAX_NDIM, &nd, err));
            p->ndim = (size_t)nd;
            p->dims = (int64_t *)calloc(nd ? (size_t)nd : 1, sizeof *p->dims);
            if (!p->dims) {
                osc_fail(err, OPTIM_ENOMEM, "%s: out of memory", what);
                goto fail;
            }
            s = colon + 1;
            for (k = 0; k < p->ndim; k++) {
                char *comma = strchr(s, ',');
                if (comma) *comma = '\0';
                if ((comma == NULL) != (k + 1 == p->ndim)) {
                    osc_fail(err, OPTIM_EFORMAT, "%s: line %d: shape has not %zu sizes", what, r.line, p->ndim);
                    goto fail;
                }
                OSC_TRY(osc_num(&r, s, (unsigned long long)1 << 62, &v, err));
                p->dims[k] = (int64_t)v;
                prod *= (uint64_t)v;
                s = comma ? comma + 1 : s;
            }
            if (p->ndim == 0 && *s) {
                osc_fail(err, OPTIM_EFORMAT, "%s: line %d: shape of 0 dimensions with sizes", what, r.line);
                goto fail;
            }
            if (prod != p->n) {
                osc_fail(err, OPTIM_EFORMAT, "%s: line %d: shape of %llu elements for %zu", what, r.line,
                         (unsigned long long)prod, p->n);
                goto fail;
            }
            p->shape_given = 1;
        }
        p->pdt = p->gdt = p->sdt = OPTIM_FLOAT32;
        p->flags = 0;
        if (m->format >= 3) OSC_TRY(osc_dtypes(&r, r.tok[5], p, m->format >= 4, err));
        OSC_TRY(osc_unescape(&r, r.tok[m->format >= 3 ? 6 : 5], &p->name, err));
    }
    for (rank = 0; rank < m->ranks; rank++) {
        OSC_TRY(osc_expect(&r, "shard", 4, err));
        OSC_TRY(osc_num(&r, r.tok[1], (unsigned long long)m->ranks, &v, err));
        if (v != (unsigned long long)rank) {
            osc_fail(err, OPTIM_EFORMAT, "%s: line %d: shard %llu where %d was expected", what, r.line, v, rank);
            goto fail;
        }
        OSC_TRY(osc_num(&r, r.tok[2], 1u << 30, &v, err));
        m->npieces[rank] = (size_t)v;
        if (strchr(r.tok[3], '/') || r.tok[3][0] == '.') {
            osc_fail(err, OPTIM_EFORMAT, "%s: line %d: shard file name '%s' is not a plain name", what, r.line,
                     r.tok[3]);
            goto fail;
        }
        m->files[rank] = (char *)malloc(strlen(r.tok[3]) + 1);
        m->pieces[rank] = (osc_piece *)calloc(v ? (size_t)v : 1, sizeof **m->pieces);
        if (!m->files[rank] || !m->pieces[rank]) {
            osc_fail(err, OPTIM_ENOMEM, "%s: out of memory", what);
            goto fail;
        }
        strcpy(m->files[rank], r.tok[3]);
        for (k = 0; k < m->npieces[rank]; k++) {
            osc_piece *q = &m->pieces[rank][k];
            unsigned long long a, b;
            OSC_TRY(osc_expect(&r, "piece", 4, err));
            OSC_TRY(osc_num(&r, r.tok[2], (unsigned long long)1 << 62, &a, err));
            OSC_TRY(osc_num(&r, r.tok[3], (unsigned long long)1 << 62, &b, err));
            if (strcmp(r.tok[1], "-") == 0) {
                q->param = OSC_NO_PARAM;
                if (a || b) goto bad_piece;
            } else {
                OSC_TRY(osc_num(&r, r.tok[1], SIZE_MAX, &v, err));
                if (v >= m->nparams || a > b || b > m->params[v].n) goto bad_piece;
                q->param = (size_t)v;
            }
            q->a = (size_t)a;
            q->b = (size_t)b;
        }
    }
    if (r.p != r.end) {
        osc_fail(err, OPTIM_EFORMAT, "%s: unexpected text after line %d", what, r.line);
        goto fail;
    }
    return OPTIM_OK;
bad_piece:
    osc_fail(err, OPTIM_EFORMAT, "%s: line %d: piece out of its parameter's range", what, r.line);
fail:
    osc_manifest_free(m);
    return err && err->code != OPTIM_OK ? err->code : OPTIM_EFORMAT;
}

/* ---- Files ---------------------------------------------------------------------- */

/* Parse "shard-RRRRR-of-KKKKK.<id>.ckpt". */
static int osc_shard_name(const char *name, int *rank, int *ranks, char *id, size_t idsize)
{
    int r, k, n = 0;
    size_t len = strlen(name);
    const char *dot;
    if (sscanf(name, "shard-%d-of-%d.%n", &r, &k, &n) != 2 || n == 0) return 0;
    if (len < (size_t)n + 6 || strcmp(name + len - 5, ".ckpt") != 0) return 0;
    dot = name + len - 5;
    snprintf(id, idsize, "%.*s", (int)(dot - (name + n)), name + n);
    *rank = r;
    *ranks = k;
    return 1;
}

int osc_manifest_read_text(const char *dir, char **text, size_t *len, optim_error *err)
{
    char path[4096 + 16];
    FILE *f;
    struct stat sb;
    *text = NULL;
    *len = 0;
    if (stat(dir, &sb) != 0)
        return osc_fail(err, OPTIM_EOPEN, "%s: %s: no checkpoint there", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return osc_fail(err, OPTIM_EOPEN, "%s is not a directory (a sharded checkpoint is a directory; a file of "
                                          "optim_save loads with optim_load)", dir);
    snprintf(path, sizeof path, "%s/%s", dir, OSC_MANIFEST);
    f = fopen(path, "rb");
    if (!f) {
        /* Say what the directory holds instead. */
        int e = errno;
        DIR *dd = opendir(dir);
        struct dirent *de;
        char ids[4][64];
        int nid = 0, count[4] = {0}, ranks[4] = {0}, seen[4][64], i;
        char msg[OPTIM_ERRMSG_MAX];
        size_t ml = 0;
        if (e != ENOENT)
            return osc_fail(err, OPTIM_EOPEN, "%s: %s", path, strerror(e));
        memset(seen, 0, sizeof seen);
        while (dd && (de = readdir(dd))) {
            int r, k;
            char id[64];
            if (!osc_shard_name(de->d_name, &r, &k, id, sizeof id)) continue;
            for (i = 0; i < nid && strcmp(ids[i], id) != 0; i++) continue;
            if (i == nid) {
                if (nid == 4) continue;
                snprintf(ids[nid], sizeof ids[nid], "%s", id);
                ranks[nid] = k;
                nid++;
            }
            count[i]++;
            if (r >= 0 && r < 64) seen[i][r] = 1;
        }
        if (dd) closedir(dd);
        if (nid == 0)
            return osc_fail(err, OPTIM_EOPEN, "%s has no manifest and no shard files: no sharded checkpoint there",
                            dir);
        ml += (size_t)snprintf(msg + ml, sizeof msg - ml,
                               "%s has no manifest: no complete checkpoint there; it holds the shards of %s that did "
                               "not finish:",
                               dir, nid == 1 ? "a save" : "saves");
        for (i = 0; i < nid && ml < sizeof msg; i++) {
            int r, missing = 0;
            ml += (size_t)snprintf(msg + ml, sizeof msg - ml, "%s save %s, %d of %d shard%s", i ? ";" : "", ids[i],
                                   count[i], ranks[i], ranks[i] == 1 ? "" : "s");
            for (r = 0; r < ranks[i] && r < 64 && ml < sizeof msg; r++)
                if (!seen[i][r])
                    ml += (size_t)snprintf(msg + ml, sizeof msg - ml, "%s%d", missing++ ? ", " : " (missing: rank ", r);
            if (missing && ml < sizeof msg) ml += (size_t)snprintf(msg + ml, sizeof msg - ml, ")");
        }
        return osc_fail(err, OPTIM_EOPEN, "%s", msg);
    }
    {
        size_t cap = 1 << 16, n = 0, got;
        char *buf = (char *)malloc(cap + 1);
        while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
            n += got;
            if (n == cap) {
                char *nb = cap < ((size_t)1 << 34) ? (char *)realloc(buf, cap * 2 + 1) : NULL;
                if (!nb) {
                    free(buf);
                    buf = NULL;
                    break;
                }
                buf = nb;
                cap *= 2;
            }
        }
        if (!buf) {
            fclose(f);
            return osc_fail(err, OPTIM_ENOMEM, "%s: out of memory", path);
        }
        if (ferror(f)) {
            fclose(f);
            free(buf);
            return osc_fail(err, OPTIM_EREAD, "%s: read failed", path);
        }
        fclose(f);
        buf[n] = '\0';
        *text = buf;
        *len = n;
    }
    return OPTIM_OK;
}

int osc_manifest_write_text(const char *dir, const char *text, size_t len, optim_error *err)
{
    char tmp[4096 + 64], path[4096 + 16];
    int fd, dfd;
    size_t done = 0;
    snprintf(tmp, sizeof tmp, "%s/%s.tmp.%ld", dir, OSC_MANIFEST, (long)getpid());
    snprintf(path, sizeof path, "%s/%s", dir, OSC_MANIFEST);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return osc_fail(err, OPTIM_EOPEN, "%s: cannot create: %s", tmp, strerror(errno));
    while (done < len) {
        ssize_t w = write(fd, text + done, len - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return osc_fail(err, e == ENOSPC || e == EFBIG ? OPTIM_ENOSPC : OPTIM_EWRITE, "%s: write failed: %s", tmp,
                            strerror(e));
        }
        done += (size_t)w;
    }
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return osc_fail(err, OPTIM_EWRITE, "%s: fsync failed: %s", tmp, strerror(e));
    }
    if (close(fd) != 0) {
        unlink(tmp);
        return osc_fail(err, OPTIM_EWRITE, "%s: close failed: %s", tmp, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return osc_fail(err, OPTIM_EWRITE, "%s: cannot rename to %s: %s", tmp, path, strerror(e));
    }
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        /* The rename is durable once the directory is synced; a failure here
         * leaves a complete manifest that may not survive a power cut. */
        int rc = fsync(dfd);
        close(dfd);
        if (rc != 0) return osc_fail(err, OPTIM_EWRITE, "%s: fsync of the directory failed", dir);
    }
    return OPTIM_OK;
}

void osc_remove_stale(const char *dir, const osc_manifest *m)
{
    DIR *dd = opendir(dir);
    struct dirent *de;
    char path[4096 + 512];
    if (!dd) return;
    while ((de = readdir(dd))) {
        int r, k, keep = 0, i;
        char id[64];
        if (osc_shard_name(de->d_name, &r, &k, id, sizeof id)) {
            for (i = 0; i < m->ranks && !keep; i++) keep = strcmp(m->files[i], de->d_name) == 0;
        } else if (strncmp(de->d_name, OSC_MANIFEST ".tmp.", strlen(OSC_MANIFEST ".tmp.")) != 0) {
            continue;
        }
        if (keep) continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(dd);
}

