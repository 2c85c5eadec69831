/* lab_data.c: Fashion-MNIST (IDX files, gzip) and the digits CSV of
 * scikit-learn, read with zlib into bytes. */
#include "lab.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

unsigned char *lab_gz_read(const char *path, size_t *len, char *msg, size_t msgsize)
{
    gzFile gz = gzopen(path, "rb");
    unsigned char *buf = NULL;
    size_t cap = 0, n = 0;
    if (!gz) {
        snprintf(msg, msgsize, "cannot open %s: %s", path, errno ? strerror(errno) : "zlib error");
        return NULL;
    }
    gzbuffer(gz, 1 << 17);
    for (;;) {
        int got;
        if (cap - n < (1u << 20)) {
            cap = cap ? 2 * cap : (1u << 22);
            buf = (unsigned char *)realloc(buf, cap);
            if (!buf) {
                gzclose(gz);
                snprintf(msg, msgsize, "out of memory reading %s", path);
                return NULL;
            }
        }
        got = gzread(gz, buf + n, (unsigned)(cap - n < (1u << 30) ? cap - n : (1u << 30)));
        if (got < 0) {
            int zerr;
            snprintf(msg, msgsize, "cannot read %s: %s", path, gzerror(gz, &zerr));
            gzclose(gz);
            free(buf);
            return NULL;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    gzclose(gz);
    *len = n;
    return buf;
}

static uint32_t be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

int lab_idx_parse(const unsigned char *buf, size_t len, int want_type, int want_ndim, size_t dims[3],
                  const unsigned char **data, char *msg, size_t msgsize)
{
    size_t total = 1;
    int i;
    if (len < 4 || buf[0] != 0 || buf[1] != 0) {
        snprintf(msg, msgsize, "not an IDX file (bad magic number)");
        return -1;
    }
    if (buf[2] != want_type || buf[3] != want_ndim) {
        snprintf(msg, msgsize, "IDX type 0x%02x with %d dimensions, expected type 0x%02x with %d", buf[2], buf[3],
                 want_type, want_ndim);
        return -1;
    }
    if (len < 4 + 4 * (size_t)want_ndim) {
        snprintf(msg, msgsize, "IDX header truncated");
        return -1;
    }
    for (i = 0; i < want_ndim; i++) {
        dims[i] = be32(buf + 4 + 4 * i);
        if (dims[i] == 0 || dims[i] > (1u << 28) / total) {
            snprintf(msg, msgsize, "IDX dimension %d = %zu is out of range", i, dims[i]);
            return -1;
        }
        total *= dims[i];
    }
    if (len - 4 - 4 * (size_t)want_ndim < total) {
        snprintf(msg, msgsize, "IDX data truncated: %zu bytes for %zu values", len - 4 - 4 * (size_t)want_ndim,
                 total);
        return -1;
    }
    *data = buf + 4 + 4 * want_ndim;
    return 0;
}

/* Read images and labels of one split; returns 0 or -1 with a message. */
static int load_split(const char *dir, const char *prefix, size_t *count, size_t *dim, unsigned char **x,
                      unsigned char **y, char *msg, size_t msgsize)
{
    char path[1024], sub[512];
    unsigned char *ibuf, *lbuf;
    size_t ilen, llen, idims[3] = {0, 0, 0}, ldims[3] = {0, 0, 0};
    const unsigned char *idata, *ldata;
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    ibuf = lab_gz_read(path, &ilen, msg, msgsize);
    if (!ibuf) return -1;
    if (lab_idx_parse(ibuf, ilen, 0x08, 3, idims, &idata, sub, sizeof sub) != 0) {
        snprintf(msg, msgsize, "%.700s: %.300s", path, sub);
        free(ibuf);
        return -1;
    }
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
    lbuf = lab_gz_read(path, &llen, msg, msgsize);
    if (!lbuf) {
        free(ibuf);
        return -1;
    }
    if (lab_idx_parse(lbuf, llen, 0x08, 1, ldims, &ldata, sub, sizeof sub) != 0 || ldims[0] != idims[0]) {
        if (ldims[0] && ldims[0] != idims[0])
            snprintf(sub, sizeof sub, "%zu labels for %zu images", ldims[0], idims[0]);
        snprintf(msg, msgsize, "%.700s: %.300s", path, sub);
        free(ibuf);
        free(lbuf);
        return -1;
    }
    *count = idims[0];
    *dim = idims[1] * idims[2];
    *x = (unsigned char *)lab_xmalloc(*count * *dim);
    memcpy(*x, idata, *count * *dim);
    *y = (unsigned char *)lab_xmalloc(*count);
    memcpy(*y, ldata, *count);
    free(ibuf);
    free(lbuf);
    return 0;
}

static int check_labels(const unsigned char *y, size_t n, size_t classes, char *msg, size_t msgsize)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (y[i] >= classes) {
            snprintf(msg, msgsize, "label %u of example %zu is not below %zu", y[i], i, classes);
            return -1;
        }
    return 0;
}

static lab_dataset *load_fashion(const char *dir, char *msg, size_t msgsize)
{
    lab_dataset *d = (lab_dataset *)lab_xcalloc(1, sizeof *d);
    size_t dim2;
    snprintf(d->name, sizeof d->name, "fashion-mnist");
    snprintf(d->source, sizeof d->source, "%s", dir);
    if (load_split(dir, "train", &d->ntrain, &d->dim, &d->xtrain, &d->ytrain, msg, msgsize) != 0 ||
        load_split(dir, "t10k", &d->ntest, &dim2, &d->xtest, &d->ytest, msg, msgsize) != 0) {
        lab_dataset_free(d);
        return NULL;
    }
    if (dim2 != d->dim) {
        snprintf(msg, msgsize, "%s: train images have %zu pixels, test images %zu", dir, d->dim, dim2);
        lab_dataset_free(d);
        return NULL;
    }
    d->classes = 10;
    d->scale = 255.0;
    if (check_labels(d->ytrain, d->ntrain, 10, msg, msgsize) || check_labels(d->ytest, d->ntest, 10, msg, msgsize)) {
        lab_dataset_free(d);
        return NULL;
    }
    return d;
}

/* sklearn's digits.csv.gz: 1797 lines of 64 pixel values (0..16) and the label. */
static lab_dataset *load_digits(const char *path, uint64_t seed, char *msg, size_t msgsize)
{
    size_t len, n = 0, cap = 2048, i, ntest;
    unsigned char *buf = lab_gz_read(path, &len, msg, msgsize), *x, *y, *perm_x, *perm_y;
    size_t *perm;
    const char *p, *end;
    lab_dataset *d;
    lab_rng rng;
    if (!buf) return NULL;
    x = (unsigned char *)lab_xmalloc(cap * 64);
    y = (unsigned char *)lab_xmalloc(cap);
    p = (const char *)buf;
    end = p + len;
    while (p < end) {
        int col;
        if (*p == '\n' || *p == '\r') {
            p++;
            continue;
        }
        if (n == cap) {
            cap *= 2;
            x = (unsigned char *)realloc(x, cap * 64);
            y = (unsigned char *)realloc(y, cap);
            if (!x || !y) {
                snprintf(msg, msgsize, "out of memory reading %s", path);
                free(buf);
                return NULL;
            }
        }
        for (col = 0; col < 65; col++) {
            double v = 0;
            int digits = 0;
            while (p < end && *p >= '0' && *p <= '9') {
                v = 10 * v + (*p++ - '0');
                digits++;
            }
            if (p < end && *p == '.') { /* "3.0" style values */
                p++;
                while (p < end && *p >= '0' && *p <= '9') p++;
            }
            if (!digits || v > 255 || (col < 64 && (p >= end || *p != ','))) {
                snprintf(msg, msgsize, "%s: line %zu, column %d is not a small non-negative number", path, n + 1,
                         col + 1);
                free(buf);
                free(x);
                free(y);
                return NULL;
            }
            if (col < 64) {
                x[n * 64 + (size_t)col] = (unsigned char)v;
                p++; /* the comma */
            } else {
                y[n] = (unsigned char)v;
            }
        }
        while (p < end && *p != '\n') p++;
        n++;
    }
    free(buf);
    if (n < 20 || check_labels(y, n, 10, msg, msgsize)) {
        if (n < 20) snprintf(msg, msgsize, "%s: only %zu examples", path, n);
        free(x);
        free(y);
        return NULL;
    }
    /* A fixed shuffled split, 80 % train and 20 % test. */
    perm = (size_t *)lab_xmalloc(n * sizeof *perm);
    for (i = 0; i < n; i++) perm[i] = i;
    lab_rng_init(&rng, seed, 0xd161);
    for (i = n - 1; i > 0; i--) {
        size_t j = lab_rng_below(&rng, i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    perm_x = (unsigned char *)lab_xmalloc(n * 64);
    perm_y = (unsigned char *)lab_xmalloc(n);
    for (i = 0; i < n; i++) {
        memcpy(perm_x + i * 64, x + perm[i] * 64, 64);
        perm_y[i] = y[perm[i]];
    }
    free(perm);
    free(x);
    free(y);
    ntest = n / 5;
    d = (lab_dataset *)lab_xcalloc(1, sizeof *d);
    snprintf(d->name, sizeof d->name, "digits");
    snprintf(d->source, sizeof d->source, "%s", path);
    d->dim = 64;
    d->classes = 10;
    d->scale = 16.0;
    d->ntrain = n - ntest;
    d->ntest = ntest;
    d->xtrain = (unsigned char *)lab_xmalloc(d->ntrain * 64);
    d->ytrain = (unsigned char *)lab_xmalloc(d->ntrain);
    d->xtest = (unsigned char *)lab_xmalloc(ntest * 64);
    d->ytest = (unsigned char *)lab_xmalloc(ntest);
    memcpy(d->xtrain, perm_x, d->ntrain * 64);
    memcpy(d->ytrain, perm_y, d->ntrain);
    memcpy(d->xtest, perm_x + d->ntrain * 64, ntest * 64);
    memcpy(d->ytest, perm_y + d->ntrain, ntest);
    free(perm_x);
    free(perm_y);
    return d;
}

static void standardise(lab_dataset *d)
{
    double sum = 0, sq = 0, n = (double)d->ntrain * (double)d->dim;
    size_t i, total = d->ntrain * d->dim;
    for (i = 0; i < total; i++) {
        double v = d->xtrain[i] / d->scale;
        sum += v;
        sq += v * v;
    }
    d->mean = (float)(sum / n);
    d->std = (float)sqrt(sq / n - (sum / n) * (sum / n));
    if (!(d->std > 0)) d->std = 1;
}

lab_dataset *lab_dataset_load(const char *dir, const char *want, uint64_t seed, char *msg, size_t msgsize)
{
    char fmsg[1200] = "", dmsg[1200] = "";
    lab_dataset *d = NULL;
    const char *digits = getenv("OPTIM_LAB_DIGITS");
    int explicit_dir = dir != NULL;
    msg[0] = '\0';
    if (!dir) dir = getenv("OPTIM_LAB_FASHION_DIR");
    if (!dir || !*dir) dir = LAB_FASHION_DIR;
    if (!digits || !*digits) digits = LAB_DIGITS_CSV;
    if (!want || strcmp(want, "fashion-mnist") == 0) {
        struct stat sb;
        if (explicit_dir && stat(dir, &sb) != 0)
            snprintf(fmsg, sizeof fmsg, "%s", strerror(errno));
        else if (explicit_dir && !S_ISDIR(sb.st_mode))
            snprintf(fmsg, sizeof fmsg, "not a directory");
        else
            d = load_fashion(dir, fmsg, sizeof fmsg);
        if (!d && explicit_dir) {
            /* Asked for by name: an error, never the fallback. */
            snprintf(msg, msgsize,
                     "--data %s: Fashion-MNIST cannot be read there: %s.\n--data names a directory with "
                     "Fashion-MNIST's four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                     "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz), as Debian's dataset-fashion-mnist "
                     "installs them in " LAB_FASHION_DIR ";\nwithout --data the lab looks there (or in "
                     "$OPTIM_LAB_FASHION_DIR) and uses the digits data set if they are absent",
                     dir, fmsg);
            return NULL;
        }
        if (!d && want) {
            snprintf(msg, msgsize,
                     "Fashion-MNIST is not available: %s.\nInstall it with: sudo apt-get install dataset-fashion-mnist "
                     "(or point --data at a directory with its four IDX .gz files)",
                     fmsg);
            return NULL;
        }
    }
    if (!d) {
        d = load_digits(digits, seed, dmsg, sizeof dmsg);
        if (!d) {
            if (want)
                snprintf(msg, msgsize,
                         "the digits data set is not available: %s.\nInstall it with: sudo apt-get install "
                         "python3-sklearn",
                         dmsg);
            else
                snprintf(msg, msgsize,
                         "no data set for the MLP experiments:\n  Fashion-MNIST: %s\n  digits (fallback): %s\n"
                         "Install Debian's dataset-fashion-mnist (or, for the small fallback, python3-sklearn):\n"
                         "  sudo apt-get install dataset-fashion-mnist python3-sklearn",
                         fmsg, dmsg);
            return NULL;
        }
        if (!want) {
            snprintf(d->fallback, sizeof d->fallback,
                     "Fashion-MNIST not found (%.1000s); using the digits data set instead", fmsg);
            snprintf(msg, msgsize, "%s", d->fallback);
        }
    }
    standardise(d);
    return d;
}

void lab_dataset_free(lab_dataset *d)
{
    if (!d) return;
    free(d->xtrain);
    free(d->ytrain);
    free(d->xtest);
    free(d->ytest);
    free(d);
}
