#define _POSIX_C_SOURCE 200809L
/* test_lab.c: the pieces of `optim lab` (tools/lab/): its JSON writer, the
 * surfaces' closed-form derivatives, running a rule on a surface in rescaled
 * units, the IDX and gzip readers, the MLP's backward pass, the optimizer
 * table, the run directory's exclusive claim, and the command's argument
 * errors. */
#include "cli.h"
#include "lab.h"
#include "test.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#if OPTIM_LAB_MUON
#include "optim_muon.h"
#endif

/* ---- JSON ------------------------------------------------------------------ */

static char *json_text(const lab_json *v)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    lab_json_write(v, f);
    fclose(f);
    return buf;
}

TEST_IMPL(lab_json_tree)
{
    lab_json *root = lab_json_object(), *arr;
    char *text;
    lab_json_set_num(root, "sam.gd.max_sharpness", 1.5);
    lab_json_set_num(root, "sam.sam.max_sharpness", 0.25);
    lab_json_set_num(root, "sam.gd.max_sharpness", 2.0); /* replaced in place */
    lab_json_set_str(root, "name", "quote \" backslash \\ newline \n tab \t");
    lab_json_set_num(root, "bad", NAN);
    lab_json_set_num(root, "inf", INFINITY);
    arr = lab_json_put(root, "points", lab_json_numbers((double[]){1, -0.5, 3e-20}, 3));
    lab_json_push(arr, lab_json_bool(1));
    lab_json_put(lab_json_get(root, "sam"), "key.with.dots", lab_json_num(7));
    ASSERT(lab_json_get(root, "sam.gd.max_sharpness")->num == 2.0);
    ASSERT(lab_json_get(root, "sam.sam.max_sharpness")->num == 0.25);
    ASSERT(lab_json_get(root, "sam.nothing") == NULL);
    ASSERT(lab_json_get(root, "bad")->type == LAB_JNULL);
    text = json_text(root);
    ASSERT(text != NULL);
    if (!strstr(text, "\"sam\": {\n    \"gd\": {\n      \"max_sharpness\": 2\n    },"))
        FAIL("nested objects or the replaced value are wrong:\n%s", text);
    if (!strstr(text, "\"quote \\\" backslash \\\\ newline \\n tab \\t\"")) FAIL("string escaping is wrong:\n%s", text);
    if (!strstr(text, "\"bad\": null") || !strstr(text, "\"inf\": null"))
        FAIL("non-finite numbers must be null:\n%s", text);
    {
        /* Flat arrays on one line; numbers written so that they read back exactly. */
        const char *p = strstr(text, "\"points\": [1, -0.5, ");
        char *end;
        if (!p) FAIL("flat arrays go on one line:\n%s", text);
        p += strlen("\"points\": [1, -0.5, ");
        if (strtod(p, &end) != 3e-20 || strncmp(end, ", true]", 7) != 0)
            FAIL("3e-20 does not read back exactly:\n%s", text);
    }
    if (!strstr(text, "\"key.with.dots\": 7")) FAIL("lab_json_put must take the key literally:\n%s", text);
    free(text);
    lab_json_free(root);
    return 0;
}

/* ---- Surfaces ------------------------------------------------------------------ */

TEST_IMPL(lab_surface_derivatives)
{
    test_rng rng = {test_seed() ^ 0x5f4ace};
    size_t si;
    int k;
    for (si = 0; si < lab_surface_count; si++) {
        const lab_surface *s = &lab_surfaces[si];
        for (k = 0; k < 50; k++) {
            /* Random points in the plot window, where the paths are drawn. */
            double x = s->box[0] + (s->box[1] - s->box[0]) * test_rng_uniform(&rng);
            double y = s->box[2] + (s->box[3] - s->box[2]) * test_rng_uniform(&rng);
            double g[2], h[3], gp[2], gm[2], h2 = 1e-5, fd[2], fh[3], scale;
            int i;
            s->grad(x, y, g);
            s->hess(x, y, h);
            fd[0] = (s->f(x + h2, y) - s->f(x - h2, y)) / (2 * h2);
            fd[1] = (s->f(x, y + h2) - s->f(x, y - h2)) / (2 * h2);
            s->grad(x + h2, y, gp);
            s->grad(x - h2, y, gm);
            fh[0] = (gp[0] - gm[0]) / (2 * h2);
            fh[1] = (gp[1] - gm[1]) / (2 * h2);
            s->grad(x, y + h2, gp);
            s->grad(x, y - h2, gm);
            fh[2] = (gp[1] - gm[1]) / (2 * h2);
            scale = 1 + fabs(s->f(x, y)) + fabs(g[0]) + fabs(g[1]);
            for (i = 0; i < 2; i++)
                if (fabs(fd[i] - g[i]) > 1e-4 * scale)
                    FAIL("%s: gradient[%d] at (%g, %g) is %.10g, finite differences %.10g (seed 0x%" PRIx64 ")",
                         s->name, i, x, y, g[i], fd[i], test_seed());
            for (i = 0; i < 3; i++)
                if (fabs(fh[i] - h[i]) > 1e-4 * (1 + fabs(h[0]) + fabs(h[1]) + fabs(h[2])))
                    FAIL("%s: Hessian[%d] at (%g, %g) is %.10g, finite differences %.10g (seed 0x%" PRIx64 ")",
                         s->name, i, x, y, h[i], fh[i], test_seed());
        }
    }
    /* Known points: the minima are minima, the top eigenvalue of a quadratic is its largest curvature. */
    ASSERT(fabs(lab_surface_top_eigenvalue(lab_surface_find("bowl"), 3, 1) - 2) < 1e-12);
    ASSERT(fabs(lab_surface_top_eigenvalue(lab_surface_find("ill-conditioned"), 0, 0) - 100) < 1e-12);
    ASSERT(fabs(lab_surface_find("himmelblau")->f(-2.805118086952745, 3.131312518250573)) < 1e-12);
    ASSERT(fabs(lab_surface_find("beale")->f(3, 0.5)) < 1e-12);
    ASSERT(isnan(lab_surface_distance(lab_surface_find("saddle"), 0, 0)));
    return 0;
}

/* Rescaling the parameters must not change SGD's path up to rounding when
 * the learning rate is rescaled by 1/scale^2, and must change it otherwise:
 * the mechanism behind the units experiment. */
TEST_IMPL(lab_surface_run_scaled)
{
    const lab_surface *bowl = lab_surface_find("bowl");
    const lab_optimizer *sgd = lab_optimizer_find("sgd");
    optim_hparams hp = lab_optimizer_hparams(sgd, 0.5), hp_s = lab_optimizer_hparams(sgd, 0.5 / (1000.0 * 1000.0));
    lab_path a, b, c;
    int t;
    lab_surface_run(bowl, &hp, 200, 1.0, &a);
    lab_surface_run(bowl, &hp_s, 200, 1000.0, &b);
    lab_surface_run(bowl, &hp, 200, 1000.0, &c);
    ASSERT_INT(a.n, ==, 201);
    ASSERT(!a.diverged);
    if (!(lab_surface_distance(bowl, a.x[200], a.y[200]) < 1e-3))
        FAIL("SGD lr 0.5 on the bowl ends at (%g, %g), not at the minimum", a.x[200], a.y[200]);
    for (t = 0; t < a.n; t++)
        if (fabs(a.x[t] - b.x[t]) > 1e-5 * (1 + fabs(a.x[t])) || fabs(a.y[t] - b.y[t]) > 1e-5 * (1 + fabs(a.y[t])))
            FAIL("step %d: (%g, %g) in w, (%g, %g) through u = w/1000 with lr/1000^2", t, a.x[t], a.y[t], b.x[t],
                 b.y[t]);
    ASSERT(c.diverged);
    ASSERT(c.n < 201);
    lab_path_free(&a);
    lab_path_free(&b);
    lab_path_free(&c);
    return 0;
}

/* SAM on a surface: each step is the base rule's step from w with the
 * gradient taken at w + rho g/|g| (the library's optim_sam, p = 2), checked
 * against that formula in double precision for plain SGD on Himmelblau (a
 * gradient that changes over rho); rho 0 is the base rule. */
TEST_IMPL(lab_surface_sam_steps)
{
    const lab_surface *s = lab_surface_find("himmelblau");
    const lab_optimizer *sgd = lab_optimizer_find("sgd");
    const double lr = 2e-3, rho = 0.3;
    optim_hparams hp = lab_optimizer_hparams(sgd, lr);
    lab_path sam, plain, zero;
    double x = (float)s->x0, y = (float)s->y0;
    int t;
    lab_surface_run_sam(s, &hp, rho, 20, 1.0, &sam);
    lab_surface_run(s, &hp, 20, 1.0, &plain);
    lab_surface_run_sam(s, &hp, 0.0, 20, 1.0, &zero);
    ASSERT_INT(sam.n, ==, 21);
    for (t = 1; t <= 20; t++) {
        double g[2], n;
        s->grad(x, y, g);
        n = hypot(g[0], g[1]) + 1e-12;
        s->grad(x + rho * g[0] / n, y + rho * g[1] / n, g);
        x -= lr * g[0];
        y -= lr * g[1];
        if (fabs(sam.x[t] - x) > 1e-4 * (1 + fabs(x)) || fabs(sam.y[t] - y) > 1e-4 * (1 + fabs(y)))
            FAIL("SAM step %d: (%.7g, %.7g), the formula gives (%.7g, %.7g)", t, sam.x[t], sam.y[t], x, y);
        if (zero.x[t] != plain.x[t] || zero.y[t] != plain.y[t]) FAIL("rho 0 must be the base rule (step %d)", t);
    }
    /* And it is not the base rule: the perturbed gradient differs. */
    if (!(hypot(sam.x[20] - plain.x[20], sam.y[20] - plain.y[20]) > 1e-2))
        FAIL("SAM ends at (%g, %g), plain SGD at (%g, %g): SAM must differ", sam.x[20], sam.y[20], plain.x[20],
             plain.y[20]);
    lab_path_free(&sam);
    lab_path_free(&plain);
    lab_path_free(&zero);
    return 0;
}

/* ---- Data files ------------------------------------------------------------------ */

TEST_IMPL(lab_idx_parser)
{
    unsigned char buf[4 + 12 + 24];
    const unsigned char *data = NULL;
    size_t dims[3];
    char msg[256];
    size_t i;
    memset(buf, 0, sizeof buf);
    buf[2] = 0x08;
    buf[3] = 3;
    buf[7] = 2;  /* 2 images */
    buf[11] = 3; /* of 3 x 4 */
    buf[15] = 4;
    for (i = 0; i < 24; i++) buf[16 + i] = (unsigned char)i;
    ASSERT_INT(lab_idx_parse(buf, sizeof buf, 0x08, 3, dims, &data, msg, sizeof msg), ==, 0);
    ASSERT_INT(dims[0], ==, 2);
    ASSERT_INT(dims[1], ==, 3);
    ASSERT_INT(dims[2], ==, 4);
    ASSERT(data == buf + 16);
    if (lab_idx_parse(buf, sizeof buf - 1, 0x08, 3, dims, &data, msg, sizeof msg) != -1 || !strstr(msg, "truncated"))
        FAIL("a short file must fail naming the truncation: '%s'", msg);
    if (lab_idx_parse(buf, sizeof buf, 0x08, 1, dims, &data, msg, sizeof msg) != -1 || !strstr(msg, "dimensions"))
        FAIL("a 3-d file read as labels must fail: '%s'", msg);
    buf[0] = 1;
    if (lab_idx_parse(buf, sizeof buf, 0x08, 3, dims, &data, msg, sizeof msg) != -1 || !strstr(msg, "magic"))
        FAIL("a bad magic number must fail: '%s'", msg);
    buf[0] = 0;
    buf[7] = 0; /* zero images */
    if (lab_idx_parse(buf, sizeof buf, 0x08, 3, dims, &data, msg, sizeof msg) != -1 || !strstr(msg, "dimension 0"))
        FAIL("a zero dimension must fail: '%s'", msg);
    if (lab_idx_parse(buf, 3, 0x08, 3, dims, &data, msg, sizeof msg) != -1) FAIL("3 bytes are not an IDX file");
    return 0;
}

TEST_IMPL(lab_gz_roundtrip)
{
    char path[] = "/tmp/optim_lab_test_XXXXXX";
    int fd = mkstemp(path);
    gzFile gz;
    unsigned char *src, *got;
    size_t n = 3u << 20, len = 0, i; /* larger than the reader's first buffer */
    char msg[512];
    test_rng rng = {test_seed() ^ 0x62};
    ASSERT(fd >= 0);
    close(fd);
    src = (unsigned char *)malloc(n);
    ASSERT(src != NULL);
    for (i = 0; i < n; i++) src[i] = (unsigned char)(test_rng_u64(&rng) % 7); /* compressible */
    gz = gzopen(path, "wb");
    ASSERT(gz != NULL);
    ASSERT_INT(gzwrite(gz, src, (unsigned)n), ==, (long long)n);
    ASSERT_INT(gzclose(gz), ==, Z_OK);
    got = lab_gz_read(path, &len, msg, sizeof msg);
    if (!got) FAIL("lab_gz_read: %s", msg);
    ASSERT_INT(len, ==, n);
    ASSERT(memcmp(src, got, n) == 0);
    free(got);
    unlink(path);
    got = lab_gz_read(path, &len, msg, sizeof msg);
    ASSERT(got == NULL);
    if (!strstr(msg, path)) FAIL("the message must name the missing file: '%s'", msg);
    free(src);
    return 0;
}

/* ---- The MLP -------------------------------------------------------------------- */

/* The backward pass against central differences of the loss, parameter by
 * parameter, on a small network. Parameters whose perturbation moves a
 * hidden unit across ReLU's kink are skipped (the derivative is not defined
 * there), and at most a few may be. */
TEST_IMPL(lab_mlp_gradients)
{
    const size_t dims[3] = {6, 9, 4}, n = 5;
    const unsigned char labels[5] = {0, 3, 1, 2, 3};
    lab_mlp m;
    lab_rng rng;
    size_t i, j, checked = 0, skipped = 0;
    int l;
    const float h = 2e-3f;
    lab_rng_init(&rng, test_seed(), 0x31);
    lab_mlp_init(&m, 2, dims, n);
    lab_mlp_reset(&m, &rng);
    for (i = 0; i < n * dims[0]; i++) m.act[0][i] = (float)lab_rng_normal(&rng);
    lab_mlp_batch(&m, n, labels, 1, NULL);
    for (l = 0; l < 2; l++) {
        size_t din = dims[l], dout = dims[l + 1];
        for (j = 0; j < dout * din + dout; j++) {
            int is_bias = j >= dout * din;
            float *p = is_bias ? &m.b[l][j - dout * din] : &m.w[l][j];
            double ana = is_bias ? m.gb[l][j - dout * din] : m.gw[l][j], num, lp, lm;
            float saved = *p;
            size_t unit = is_bias ? j - dout * din : j / din, s;
            if (l == 0) {
                /* Would the perturbation cross a kink of this hidden unit? */
                int near = 0;
                for (s = 0; s < n; s++) {
                    double z = m.b[0][unit], reach = h * (is_bias ? 1.0 : fabs(m.act[0][s * din + j % din]));
                    size_t k;
                    for (k = 0; k < din; k++) z += (double)m.w[0][unit * din + k] * m.act[0][s * din + k];
                    if (fabs(z) <= 2 * reach) near = 1;
                }
                if (near) {
                    skipped++;
                    continue;
                }
            }
            *p = saved + h;
            lp = lab_mlp_batch(&m, n, labels, 0, NULL);
            *p = saved - h;
            lm = lab_mlp_batch(&m, n, labels, 0, NULL);
            *p = saved;
            num = (lp - lm) / (2.0 * h);
            checked++;
            if (fabs(num - ana) > 2e-3 + 2e-2 * fabs(ana))
                FAIL("layer %d %s %zu: backward %.6g, finite differences %.6g (seed 0x%" PRIx64 ")", l,
                     is_bias ? "bias" : "weight", is_bias ? j - dout * din : j, ana, num, test_seed());
        }
    }
    if (skipped * 10 > checked) FAIL("%zu parameters skipped at ReLU kinks, %zu checked", skipped, checked);
    /* The forward pass alone gives the same loss and counts correct answers. */
    {
        size_t correct = 99;
        double a = lab_mlp_batch(&m, n, labels, 0, &correct), b = lab_mlp_batch(&m, n, labels, 1, NULL);
        ASSERT(a == b);
        ASSERT(correct <= n);
        ASSERT(a > 0);
    }
    lab_mlp_free(&m);
    return 0;
}

/* ---- Reduced precision: the bfloat16 model and the storage modes ---------------------- */

/* Nearest bfloat16, ties to even, found by comparing the two neighbours in
 * double (the one above the largest finite bfloat16 counts as 2^128, where
 * rounding goes to infinity). */
static uint16_t ref_to_bf16(float x)
{
    uint32_t u;
    uint16_t lo, hi;
    double a = fabs((double)x), dl, dh, mh;
    memcpy(&u, &x, sizeof u);
    if (isnan(x)) return (uint16_t)((u >> 16) | 0x40u);
    lo = (uint16_t)(u >> 16);
    if (a == fabs((double)lab_bf16_to_float(lo))) return lo;
    hi = (uint16_t)(lo + 1);
    mh = (hi & 0x7fffu) == 0x7f80u ? ldexp(1.0, 128) : fabs((double)lab_bf16_to_float(hi));
    dl = a - fabs((double)lab_bf16_to_float(lo));
    dh = mh - a;
    if (dl < dh) return lo;
    if (dh < dl) return hi;
    return (lo & 1u) ? hi : lo;
}

TEST_IMPL(lab_bf16_conversions)
{
    test_rng rng = {test_seed() ^ 0xbf16};
    long k;
    for (k = 0; k < 1500000; k++) {
        uint32_t u;
        float x, back;
        uint16_t got, want;
        if (k < 65536 * 8) {
            /* Every bfloat16 pattern, and just below, at, just above and past its midpoint to the next. */
            static const uint32_t low[8] = {0, 1, 0x7fff, 0x8000, 0x8001, 0xffff, 0x4000, 0xc000};
            u = ((uint32_t)(k >> 3) << 16) | low[k & 7];
        } else {
            u = (uint32_t)test_rng_u64(&rng);
        }
        memcpy(&x, &u, sizeof x);
        got = lab_float_to_bf16(x);
        want = ref_to_bf16(x);
        if (got != want)
            FAIL("float 0x%08x: lab_float_to_bf16 gives 0x%04x, nearest-even is 0x%04x (seed 0x%" PRIx64 ")", u,
                 (unsigned)got, (unsigned)want, test_seed());
        /* Widening is exact: a bfloat16 value comes back as itself. */
        back = lab_bf16_to_float((uint16_t)(u >> 16));
        if (!isnan(back) && lab_float_to_bf16(back) != (uint16_t)(u >> 16))
            FAIL("bfloat16 0x%04x does not survive widening and rounding", (unsigned)(u >> 16));
    }
    return 0;
}

/* A bfloat16 model computes with the weights it stores: lab_mlp_batch reads
 * w16/b16 (whatever the optimizer wrote there), and hands out its gradients
 * rounded to bfloat16; a float model given the same (widened) weights
 * computes the same loss and float gradients, bit for bit. */
TEST_IMPL(lab_mlp_bf16_model)
{
    const size_t dims[3] = {7, 11, 5}, n = 6;
    const unsigned char labels[6] = {0, 4, 1, 2, 3, 4};
    lab_mlp m, f;
    lab_rng rng;
    size_t i;
    int l;
    float w0[7 * 11];
    double lm, lf;
    lab_rng_init(&rng, test_seed(), 0xbf);
    lab_mlp_init(&m, 2, dims, n);
    lab_mlp_init(&f, 2, dims, n);
    lab_mlp_reset(&m, &rng);
    memcpy(w0, m.w[0], sizeof w0);
    lab_mlp_use_bf16(&m);
    for (i = 0; i < 7 * 11; i++) {
        ASSERT(m.w16[0][i] == lab_float_to_bf16(w0[i]));
        ASSERT(m.w[0][i] == lab_bf16_to_float(m.w16[0][i]));
    }
    /* The optimizer writes new bfloat16 weights; the next batch must use them. */
    for (l = 0; l < 2; l++) {
        for (i = 0; i < dims[l + 1] * dims[l]; i++)
            m.w16[l][i] = lab_float_to_bf16((float)(lab_rng_normal(&rng) / sqrt((double)dims[l])));
        for (i = 0; i < dims[l + 1]; i++) m.b16[l][i] = lab_float_to_bf16((float)(0.1 * lab_rng_normal(&rng)));
    }
    for (i = 0; i < n * dims[0]; i++) m.act[0][i] = f.act[0][i] = (float)lab_rng_normal(&rng);
    lm = lab_mlp_batch(&m, n, labels, 1, NULL);
    for (l = 0; l < 2; l++) {
        size_t nonzero = 0;
        for (i = 0; i < dims[l + 1] * dims[l]; i++) {
            if (m.w[l][i] != lab_bf16_to_float(m.w16[l][i]))
                FAIL("layer %d weight %zu: the forward pass read %.9g, the model stores %.9g", l, i, (double)m.w[l][i],
                     (double)lab_bf16_to_float(m.w16[l][i]));
            if (m.gw16[l][i] != lab_float_to_bf16(m.gw[l][i]))
                FAIL("layer %d weight %zu: gradient %.9g handed out as bfloat16 0x%04x", l, i, (double)m.gw[l][i],
                     (unsigned)m.gw16[l][i]);
            nonzero += m.gw16[l][i] != 0;
            f.w[l][i] = lab_bf16_to_float(m.w16[l][i]);
        }
        for (i = 0; i < dims[l + 1]; i++) {
            ASSERT(m.b[l][i] == lab_bf16_to_float(m.b16[l][i]));
            ASSERT(m.gb16[l][i] == lab_float_to_bf16(m.gb[l][i]));
            f.b[l][i] = lab_bf16_to_float(m.b16[l][i]);
        }
        ASSERT_INT(nonzero, >, 0);
    }
    lf = lab_mlp_batch(&f, n, labels, 1, NULL);
    ASSERT(lm == lf);
    for (l = 0; l < 2; l++)
        for (i = 0; i < dims[l + 1] * dims[l]; i++) ASSERT(m.gw[l][i] == f.gw[l][i]);
    lab_mlp_free(&m);
    lab_mlp_free(&f);
    return 0;
}

/* A tiny data set in memory: class c lights up features 3c .. 3c+2. */
static lab_dataset *tiny_dataset(void)
{
    lab_dataset *d = (lab_dataset *)lab_xcalloc(1, sizeof *d);
    lab_rng rng;
    size_t i, j;
    lab_rng_init(&rng, 77, 1);
    snprintf(d->name, sizeof d->name, "tiny");
    d->dim = 16;
    d->classes = 4;
    d->ntrain = 512;
    d->ntest = 128;
    d->xtrain = (unsigned char *)lab_xmalloc(d->ntrain * d->dim);
    d->xtest = (unsigned char *)lab_xmalloc(d->ntest * d->dim);
    d->ytrain = (unsigned char *)lab_xmalloc(d->ntrain);
    d->ytest = (unsigned char *)lab_xmalloc(d->ntest);
    for (i = 0; i < d->ntrain + d->ntest; i++) {
        int train = i < d->ntrain;
        size_t r = train ? i : i - d->ntrain;
        unsigned char *x = (train ? d->xtrain : d->xtest) + r * d->dim;
        unsigned char y = (unsigned char)lab_rng_below(&rng, 4);
        (train ? d->ytrain : d->ytest)[r] = y;
        for (j = 0; j < d->dim; j++) x[j] = (unsigned char)lab_rng_below(&rng, 120);
        for (j = 3 * (size_t)y; j < 3 * (size_t)y + 3; j++) x[j] = (unsigned char)(x[j] + 130);
    }
    d->scale = 255;
    d->mean = 0.35f;
    d->std = 0.3f;
    return d;
}

/* Every storage mode of `optim lab precision` trains with what it says,
 * read back from the library: the element types and flags of every
 * parameter, the optimizer's bytes per parameter (fp32 state 8, a master 4
 * more, int8_block codes and scales exactly), bfloat16 weights in the
 * forward pass. Each mode gives other numbers than fp32, and the same numbers
 * when run again. */
TEST_IMPL(lab_prec_storage)
{
    const lab_optimizer *adam = lab_optimizer_find("adam");
    optim_hparams hp = lab_optimizer_hparams(adam, 1e-2);
    lab_ctx ctx;
    lab_train_result fp32 = {0};
    size_t mi, i;
    const size_t sizes[4] = {16 * 256, 256, 256 * 4, 4};
    double int8_bytes = 0;
    const int epochs = 3;
    for (i = 0; i < 4; i++) int8_bytes += 2.0 * (double)OPTIM_INT8_BLOCK_BYTES(sizes[i]);
    int8_bytes /= (double)(sizes[0] + sizes[1] + sizes[2] + sizes[3]);
    ASSERT_INT(lab_prec_mode_count, ==, 5);
    lab_set_quiet(1);
    memset(&ctx, 0, sizeof ctx);
    ctx.data = tiny_dataset();
    for (mi = 0; mi < lab_prec_mode_count; mi++) {
        const lab_prec_mode *m = &lab_prec_modes[mi];
        const int bf16 = strcmp(m->name, "bf16_master") == 0 || strcmp(m->name, "bf16_sr") == 0 ||
                         strcmp(m->name, "int8_state_bf16_sr") == 0;
        const int int8 = strncmp(m->name, "int8_state", 10) == 0;
        const unsigned flags = strcmp(m->name, "bf16_master") == 0 ? OPTIM_PARAM_MASTER
                               : strstr(m->name, "_sr")            ? OPTIM_PARAM_STOCHASTIC_ROUNDING
                                                                   : 0u;
        lab_train_result a, b;
        lab_ctx again;
        const lab_storage_facts *f = &a.storage;
        int e, differs = 0;
        static const char *names[5] = {"fp32", "bf16_master", "bf16_sr", "int8_state", "int8_state_bf16_sr"};
        if (strcmp(m->name, names[mi]) != 0) FAIL("mode %zu is %s, expected %s (issue 12's names)", mi, m->name, names[mi]);
        lab_train_ex(&ctx, adam, &hp, NULL, m, epochs, 5, m->name, &a);
        /* The same run in a fresh context (no reuse of finished runs): the same numbers. */
        memset(&again, 0, sizeof again);
        again.data = ctx.data;
        lab_train_ex(&again, adam, &hp, NULL, m, epochs, 5, m->name, &b);
        lab_mlp_cache_free(again.mlp_cache);
        ASSERT(!a.diverged);
        for (e = 0; e < epochs; e++) {
            if (memcmp(&a.train_loss[e], &b.train_loss[e], sizeof(double)) != 0 || a.test_acc[e] != b.test_acc[e])
                FAIL("%s: epoch %d differs between two runs with the same seed: loss %.17g vs %.17g", m->name, e + 1,
                     a.train_loss[e], b.train_loss[e]);
        }
        ASSERT(a.test_acc[epochs - 1] > 0.5); /* chance is 0.25 */
        if (f->param != (bf16 ? OPTIM_BFLOAT16 : OPTIM_FLOAT32) || f->grad != f->param)
            FAIL("%s: parameters %d and gradients %d, expected %s", m->name, (int)f->param, (int)f->grad,
                 bf16 ? "bfloat16" : "float32");
        if (f->state != (int8 ? OPTIM_INT8_BLOCK : OPTIM_FLOAT32))
            FAIL("%s: state type %d, expected %s", m->name, (int)f->state, int8 ? "int8_block" : "float32");
        if (f->flags != flags) FAIL("%s: flags 0x%x, expected 0x%x", m->name, f->flags, flags);
        ASSERT_INT(f->params, ==, sizes[0] + sizes[1] + sizes[2] + sizes[3]);
        {
            double want = (int8 ? int8_bytes : 8.0) + (flags & OPTIM_PARAM_MASTER ? 4.0 : 0.0);
            if (fabs(f->state_bytes_per_param - want) > 1e-12)
                FAIL("%s: %.6f bytes of state per parameter, expected %.6f", m->name, f->state_bytes_per_param, want);
        }
        ASSERT(f->param_bytes_per_param == (bf16 ? 2.0 : 4.0));
        ASSERT(f->master_bytes_per_param == (flags & OPTIM_PARAM_MASTER ? 4.0 : 0.0));
        if (bf16 ? f->weights_not_bf16 != 0 : f->weights_not_bf16 < f->params / 2)
            FAIL("%s: %zu of %zu weights of the last forward pass are not bfloat16 values", m->name,
                 f->weights_not_bf16, f->params);
        if (mi == 0) {
            fp32 = a;
        } else {
            for (e = 0; e < epochs; e++) differs |= a.train_loss[e] != fp32.train_loss[e];
            if (!differs) FAIL("%s trains exactly as fp32 does", m->name);
            lab_train_result_free(&a);
        }
        lab_train_result_free(&b);
    }
    lab_train_result_free(&fp32);
    lab_mlp_cache_free(ctx.mlp_cache);
    lab_dataset_free(ctx.data);
    lab_set_quiet(0);
    return 0;
}

/* The verdict of issue 12's target: within 0.3 points of fp32, either way. */
TEST_IMPL(lab_prec_verdict)
{
    const double within[5] = {0.8800, 0.8780, 0.8825, 0.8800, 0.8771};
    const double below[5] = {0.8800, 0.8780, 0.8825, 0.8760, 0.8790};
    const double above[5] = {0.8800, 0.8805, 0.8840, 0.8800, 0.8790};
    double nan_mode[5] = {0.8800, 0.8800, 0.8800, 0.8800, 0.8800};
    nan_mode[2] = NAN;
    ASSERT_INT(lab_prec_verdict(within, 5, 0.3), ==, 1);
    ASSERT_INT(lab_prec_verdict(below, 5, 0.3), ==, 0);
    ASSERT_INT(lab_prec_verdict(above, 5, 0.3), ==, 0);
    ASSERT_INT(lab_prec_verdict(nan_mode, 5, 0.3), ==, 0);
    ASSERT_INT(lab_prec_verdict(below, 5, 0.5), ==, 1);
    ASSERT_INT(lab_prec_verdict(below, 3, 0.3), ==, 1); /* only the modes given count */
    return 0;
}

/* ---- Tables and streams ------------------------------------------------------------ */

TEST_IMPL(lab_optimizer_table)
{
    size_t i, j;
    for (i = 0; i < lab_optimizer_count; i++) {
        const lab_optimizer *o = &lab_optimizers[i];
        optim_hparams hp = lab_optimizer_hparams(o, 0.123);
        optim_error err;
        ASSERT(lab_optimizer_find(o->name) == o);
        for (j = 0; j < i; j++)
            if (strcmp(lab_optimizers[j].name, o->name) == 0) FAIL("optimizer name %s appears twice", o->name);
        if (optim_hparams_check(&hp, &err) != OPTIM_OK) FAIL("%s: %s", o->name, err.message);
        ASSERT(hp.lr == 0.123);
        ASSERT(hp.rule == o->rule);
        ASSERT(hp.momentum == o->momentum);
        if (o->rule == OPTIM_ADABOUND && !(hp.initial_lr == 1e-3))
            FAIL("adabound: initial_lr %g must stay at the default lr so that final_lr scales with lr", hp.initial_lr);
    }
    ASSERT(lab_optimizer_find("nope") == NULL);
    ASSERT(lab_optimizer_find("sam")->sam == 1);
    return 0;
}

/* ---- optim lab modern ----------------------------------------------------------------- */

/* The table: unique keys, the issue's names, settings the library accepts, grids ascending and positive,
 * AdamW present as the reference; a bad setting is refused by name. */
TEST_IMPL(lab_modern_table)
{
    static const char *const issue_keys[] = {"lion",   "lamb",   "lars", "adafactor",
                                             "sf_adamw", "sf_sgd", "muon", "adamw"};
    size_t i, j;
    char msg[512];
    optim_hparams hp;
    int have_adamw = 0;
    for (i = 0; i < lab_modern_rule_count; i++) {
        const lab_modern_rule *r = &lab_modern_rules[i];
        int n = 0, known = r->baseline;
        ASSERT(lab_modern_find(r->key) == r);
        /* Keys and labels go into CSV rows unquoted. */
        if (strpbrk(r->key, ",\"\n") || strpbrk(r->label, ",\"\n"))
            FAIL("%s: a comma, quote or newline in its key or label", r->key);
        for (j = 0; j < i; j++)
            if (strcmp(lab_modern_rules[j].key, r->key) == 0) FAIL("rule key %s appears twice", r->key);
        for (j = 0; j < sizeof issue_keys / sizeof *issue_keys; j++) known |= strcmp(issue_keys[j], r->key) == 0;
        if (!known) FAIL("%s: neither one of the issue's keys nor a baseline", r->key);
        while (n < LAB_MODERN_MAX_LRS && r->lrs[n] > 0) {
            if (n > 0 && !(r->lrs[n] > r->lrs[n - 1])) FAIL("%s: lr grid not ascending at %d", r->key, n);
            n++;
        }
        ASSERT_INT(n, >=, 2); /* --quick runs the middle two */
        if (lab_modern_hparams(r, r->lrs[0], &hp, msg, sizeof msg) != 0) FAIL("%s", msg);
        ASSERT(hp.rule == r->rule);
        ASSERT(hp.lr == r->lrs[0]);
        have_adamw |= strcmp(r->key, "adamw") == 0 && r->baseline;
    }
    ASSERT(have_adamw);
    ASSERT(lab_modern_find("nope") == NULL);
    /* The settings are applied: LARS's momentum and weight decay, Lion's decay. */
    ASSERT(lab_modern_hparams(lab_modern_find("lars"), 1.0, &hp, msg, sizeof msg) == 0);
    ASSERT(hp.momentum == 0.9 && hp.weight_decay == 1e-4);
    ASSERT(lab_modern_hparams(lab_modern_find("lion"), 1e-4, &hp, msg, sizeof msg) == 0);
    ASSERT(hp.weight_decay == 0.1);
    {
        lab_modern_rule bad = *lab_modern_find("lion");
        bad.hparams = "weight_decay=0.1,betta1=0.5";
        ASSERT(lab_modern_hparams(&bad, 1e-4, &hp, msg, sizeof msg) == -1);
        if (!strstr(msg, "betta1")) FAIL("the message must name the unknown setting: %s", msg);
        bad.hparams = "beta1=x";
        ASSERT(lab_modern_hparams(&bad, 1e-4, &hp, msg, sizeof msg) == -1);
        if (!strstr(msg, "beta1 = 'x'")) FAIL("the message must name the bad value: %s", msg);
        bad.hparams = "beta1=1.5";
        ASSERT(lab_modern_hparams(&bad, 1e-4, &hp, msg, sizeof msg) == -1);
        if (!strstr(msg, "beta1")) FAIL("the library's refusal must come through: %s", msg);
    }
    return 0;
}

/* The verdict against AdamW and the update/weight ratio, on exact values. */
TEST_IMPL(lab_modern_verdict)
{
    float before[4] = {1, -2, 2, 0}, after[4] = {1.5f, -2, 2, -0.5f}, zero[2] = {0, 0};
    ASSERT_INT(lab_modern_verdict(0.5, 0.4), ==, 1);
    ASSERT_INT(lab_modern_verdict(0.4, 0.4), ==, 0); /* at the noise: level */
    ASSERT_INT(lab_modern_verdict(-0.41, 0.4), ==, -1);
    ASSERT_INT(lab_modern_verdict(0.05, 0.0), ==, 0);  /* below the floor */
    ASSERT_INT(lab_modern_verdict(0.11, 0.0), ==, 1);  /* above it */
    ASSERT_INT(lab_modern_verdict(-0.11, NAN), ==, -1);
    ASSERT_INT(lab_modern_verdict(NAN, 1.0), ==, -1); /* a diverged rule */
    /* RMS(after - before) / RMS(before) = sqrt(0.5 / 9). */
    if (fabs(lab_update_ratio(before, after, 4) - sqrt(0.5 / 9.0)) > 1e-15)
        FAIL("update ratio %.17g, expected %.17g", lab_update_ratio(before, after, 4), sqrt(0.5 / 9.0));
    ASSERT(isnan(lab_update_ratio(zero, after, 2)));
    return 0;
}

/* lab_opt_create: one group, or with vectors_no_decay the vectors in a second group without weight decay
 * (matrices keep the group's); the same step as a hand-built optimizer. */
TEST_IMPL(lab_opt_create_groups)
{
    float w[6] = {1, 2, 3, 4, 5, 6}, gw[6] = {0.5f, -1, 0.25f, 2, -3, 1}, b[3] = {1, -1, 2}, gb[3] = {1, 1, -1};
    float w2[6], b2[3];
    const lab_tensor t[2] = {{"w", w, gw, 2, 3}, {"b", b, gb, 1, 3}};
    const lab_modern_rule *lamb = lab_modern_find("lamb");
    optim_hparams hp, g1;
    optim_param_info info;
    char msg[256];
    optim *opt, *ref;
    size_t i;
    ASSERT(lab_modern_hparams(lamb, 1e-2, &hp, msg, sizeof msg) == 0);
    memcpy(w2, w, sizeof w);
    memcpy(b2, b, sizeof b);
    opt = lab_opt_create(&hp, t, 2, 1);
    ASSERT_INT((int)optim_group_count(opt), ==, 2);
    ASSERT_OPT_OK(opt, optim_param_get_info(opt, 0, &info));
    ASSERT_INT((int)info.group, ==, 0);
    ASSERT_INT((int)info.n, ==, 6);
    ASSERT_OPT_OK(opt, optim_param_get_info(opt, 1, &info));
    ASSERT_INT((int)info.group, ==, 1);
    ASSERT_OPT_OK(opt, optim_group_get(opt, 1, &g1));
    ASSERT(g1.weight_decay == 0 && g1.lr == hp.lr && hp.weight_decay == 0.01);
    ASSERT_OPT_OK(opt, optim_step(opt));
    /* The same by hand. */
    ASSERT_OK(optim_create(&ref, OPTIM_LAMB));
    ASSERT_OPT_OK(ref, optim_add_group(ref, &hp, NULL));
    ASSERT_OPT_OK(ref, optim_add_group(ref, &g1, NULL));
    ASSERT_OPT_OK(ref, optim_add_param(ref, 0, w2, gw, 6, "w", NULL));
    ASSERT_OPT_OK(ref, optim_add_param(ref, 1, b2, gb, 3, "b", NULL));
    ASSERT_OPT_OK(ref, optim_step(ref));
    for (i = 0; i < 6; i++) ASSERT(memcmp(&w[i], &w2[i], 4) == 0);
    for (i = 0; i < 3; i++) ASSERT(memcmp(&b[i], &b2[i], 4) == 0);
    optim_free(opt);
    optim_free(ref);
    /* Without the split, or with vectors only (the surfaces' point), one group. */
    opt = lab_opt_create(&hp, t, 2, 0);
    ASSERT_INT((int)optim_group_count(opt), ==, 1);
    optim_free(opt);
    opt = lab_opt_create(&hp, &t[1], 1, 1);
    ASSERT_INT((int)optim_group_count(opt), ==, 1);
    optim_free(opt);
    return 0;
}

/* The hooks: a create hook builds the optimizer, a set_eval hook moves the recorded point (here: by +1 in x
 * while evaluating) and is undone before the next gradient, so the path is the plain one shifted. */
static int hook_creates;
static float *hook_p; /* the point's floats, as the create hook saw them */
static void hook_create(lab_opt *o, const optim_hparams *hp, const lab_tensor *t, size_t n, int vectors_no_decay)
{
    hook_creates++;
    hook_p = t[0].p;
    o->part[0] = lab_opt_create(hp, t, n, vectors_no_decay);
    o->nparts = 1;
}
static void hook_set_eval(optim *opt, int eval)
{
    static float saved;
    (void)opt;
    if (eval) {
        saved = hook_p[0];
        hook_p[0] += 1.0f;
    } else {
        hook_p[0] = saved; /* exactly the training point again */
    }
}

TEST_IMPL(lab_surface_hooks)
{
    const lab_surface *s = lab_surface_find("himmelblau");
    const lab_opt_hooks hooks = {hook_create, hook_set_eval}, none = {NULL, NULL};
    optim_hparams hp = lab_optimizer_hparams(lab_optimizer_find("adam"), 0.05);
    lab_path a, b, c;
    int t;
    hook_creates = 0;
    lab_surface_run(s, &hp, 50, 1.0, &a);
    lab_surface_run_hooks(s, &hp, &none, 50, &c);
    lab_surface_run_hooks(s, &hp, &hooks, 50, &b);
    ASSERT_INT(hook_creates, ==, 1);
    ASSERT_INT(a.n, ==, 51);
    ASSERT_INT(b.n, ==, 51);
    for (t = 0; t < a.n; t++) {
        if (a.x[t] != c.x[t] || a.y[t] != c.y[t]) FAIL("step %d: no hooks must be lab_surface_run's path", t);
        if ((float)b.x[t] != (float)a.x[t] + 1.0f || b.y[t] != a.y[t])
            FAIL("step %d: recorded (%.9g, %.9g), the evaluation point of (%.9g, %.9g) is x + 1", t, b.x[t], b.y[t],
                 a.x[t], a.y[t]);
    }
    lab_path_free(&a);
    lab_path_free(&b);
    lab_path_free(&c);
    return 0;
}

/* Muon's create hook (the MuonWithAuxAdam recipe): the matrices, wide and tall, in a Muon object with the
 * row's settings, the vectors in an AdamW object with the reference's auxiliary settings; lab_opt_step steps
 * both, the same bits as the two objects built and stepped by hand. A lone 1 x 2 point (a surface) is Muon's:
 * its first step has the length lr * s, s the quintic's image of the singular value 1 after 5 iterations. */
TEST_IMPL(lab_muon_parts)
{
    const lab_modern_rule *mu = lab_modern_find("muon");
    ASSERT(mu != NULL);
    ASSERT(mu->hooks.create == lab_muon_create);
    ASSERT_INT(lab_modern_runnable(mu), ==, lab_muon_available());
    if (!lab_muon_available()) return 0; /* a build without liboptim_muon: the row is left out (checked above) */
#if OPTIM_LAB_MUON
    {
        float w[6] = {1, 2, 3, 4, 5, 6}, gw[6] = {0.5f, -1, 0.25f, 2, -3, 1}, b[3] = {1, -1, 2}, gb[3] = {1, 1, -1};
        float v[6] = {0.5f, -1, 2, 1, 0.25f, -2}, gv[6] = {1, 2, -1, 0.5f, 1, -3};
        float w2[6], b2[3], v2[6], pt[2] = {1, 2}, gpt[2] = {3, -4};
        const lab_tensor t[3] = {{"w", w, gw, 2, 3}, {"b", b, gb, 1, 3}, {"v", v, gv, 3, 2}};
        const lab_tensor point = {"w", pt, gpt, 1, 2};
        const int64_t wd[2] = {2, 3}, vd[2] = {3, 2};
        optim_hparams hp, aux;
        char msg[256];
        optim *rm, *ra;
        optim_hparams g;
        optim_error err;
        lab_opt o;
        size_t i;
        int k;
        double s = 1, len;
        ASSERT(lab_modern_hparams(mu, 0.02, &hp, msg, sizeof msg) == 0);
        ASSERT(hp.rule == OPTIM_MUON && hp.weight_decay == 0 && hp.nesterov);
        memcpy(w2, w, sizeof w);
        memcpy(b2, b, sizeof b);
        memcpy(v2, v, sizeof v);
        lab_opt_build(&o, &mu->hooks, &hp, t, 3, mu->vectors_no_decay);
        ASSERT_INT((int)o.nparts, ==, 2);
        ASSERT_INT((int)optim_param_count(o.part[0]), ==, 2);
        ASSERT_INT((int)optim_param_count(o.part[1]), ==, 1);
        ASSERT_OPT_OK(o.part[1], optim_group_get(o.part[1], 0, &g));
        ASSERT(g.rule == OPTIM_ADAMW && g.lr == LAB_MUON_AUX_LR && g.beta1 == 0.9 && g.beta2 == 0.95 &&
               g.eps == 1e-10 && g.weight_decay == 0);
        ASSERT_OK(optim_hparams_init(&aux, OPTIM_ADAMW, &err));
        aux.lr = 3e-4;
        aux.beta2 = 0.95;
        aux.eps = 1e-10;
        aux.weight_decay = 0;
        ASSERT_OK(optim_create(&rm, OPTIM_MUON));
        ASSERT_OPT_OK(rm, optim_muon_attach(rm));
        ASSERT_OPT_OK(rm, optim_add_group(rm, &hp, NULL));
        ASSERT_OPT_OK(rm, optim_add_param(rm, 0, w2, gw, 6, "w", NULL));
        ASSERT_OPT_OK(rm, optim_param_set_shape(rm, 0, 2, wd));
        ASSERT_OPT_OK(rm, optim_add_param(rm, 0, v2, gv, 6, "v", NULL));
        ASSERT_OPT_OK(rm, optim_param_set_shape(rm, 1, 2, vd));
        ASSERT_OK(optim_create(&ra, OPTIM_ADAMW));
        ASSERT_OPT_OK(ra, optim_add_group(ra, &aux, NULL));
        ASSERT_OPT_OK(ra, optim_add_param(ra, 0, b2, gb, 3, "b", NULL));
        for (k = 0; k < 3; k++) {
            lab_opt_step(&o);
            ASSERT_OPT_OK(rm, optim_step(rm));
            ASSERT_OPT_OK(ra, optim_step(ra));
        }
        for (i = 0; i < 6; i++) {
            if (memcmp(&w[i], &w2[i], 4) != 0 || memcmp(&v[i], &v2[i], 4) != 0)
                FAIL("matrix element %zu: w %.9g / %.9g, v %.9g / %.9g (lab / by hand)", i, w[i], w2[i], v[i], v2[i]);
            if (w[i] == (float)(i + 1)) FAIL("w[%zu] did not move", i);
        }
        for (i = 0; i < 3; i++)
            if (memcmp(&b[i], &b2[i], 4) != 0) FAIL("bias %zu: %.9g / %.9g (lab / by hand)", i, b[i], b2[i]);
        lab_opt_free(&o);
        ASSERT_INT((int)o.nparts, ==, 0);
        optim_free(rm);
        optim_free(ra);
        /* The surfaces' point. */
        lab_opt_build(&o, &mu->hooks, &hp, &point, 1, 0);
        ASSERT_INT((int)o.nparts, ==, 1);
        ASSERT_OPT_OK(o.part[0], optim_group_get(o.part[0], 0, &g));
        ASSERT(g.rule == OPTIM_MUON);
        lab_opt_step(&o);
        for (k = 0; k < 5; k++) s = hp.ns_a * s + hp.ns_b * s * s * s + hp.ns_c * s * s * s * s * s;
        len = hypot((double)pt[0] - 1.0, (double)pt[1] - 2.0);
        /* float32: 2e-4 of the update (docs/rules/muon.md's tolerance) and the roundings of the point (~2) */
        if (fabs(len - 0.02 * s) > 2e-4 * 0.02 * s + 5e-7)
            FAIL("the point moved %.9g, expected lr * s = %.9g", len, 0.02 * s);
        /* along -g: (3, -4) / 5 */
        if (fabs(((double)pt[0] - 1.0) / len + 0.6) > 1e-4 || fabs(((double)pt[1] - 2.0) / len - 0.8) > 1e-4)
            FAIL("the point moved along (%.9g, %.9g), not -g / |g|", (pt[0] - 1.0) / len, (pt[1] - 2.0) / len);
        lab_opt_free(&o);
    }
#endif
    return 0;
}

TEST_IMPL(lab_rng_streams)
{
    lab_rng a, b, c;
    int i, same = 1, differ = 0;
    double sum = 0, sq = 0;
    lab_rng_init(&a, 42, 7);
    lab_rng_init(&b, 42, 7);
    lab_rng_init(&c, 42, 8);
    for (i = 0; i < 1000; i++) {
        uint64_t x = lab_rng_u64(&a), y = lab_rng_u64(&b), z = lab_rng_u64(&c);
        same &= x == y;
        differ += x != z;
    }
    ASSERT(same);
    ASSERT_INT(differ, >, 990);
    for (i = 0; i < 20000; i++) {
        double v = lab_rng_normal(&a);
        sum += v;
        sq += v * v;
    }
    if (fabs(sum / 20000) > 0.05 || fabs(sq / 20000 - 1) > 0.05)
        FAIL("normal draws: mean %g, variance %g", sum / 20000, sq / 20000);
    for (i = 0; i < 1000; i++) ASSERT(lab_rng_below(&a, 7) < 7);
    return 0;
}

/* ---- The command line ------------------------------------------------------------- */

static int run_lab(int argc, const char **argv)
{
    return optim_lab_main(argc, (char **)argv);
}

TEST_IMPL(lab_command_errors)
{
    const char *unknown_exp[] = {"lab", "nope"};
    const char *unknown_opt[] = {"lab", "trajectories", "--optimizers", "adam,nope"};
    const char *empty_opt[] = {"lab", "trajectories", "--optimizers", "adam,"};
    const char *opt_sam[] = {"lab", "sam", "--optimizers", "sam"};
    const char *epochs_zero[] = {"lab", "fashion-mnist", "--epochs", "0"};
    const char *epochs_sam[] = {"lab", "sam", "--epochs", "3"};
    const char *tune_units[] = {"lab", "units", "--tune"};
    const char *two[] = {"lab", "sam", "units"};
    const char *bad_opt[] = {"lab", "--frobnicate"};
    const char *no_value[] = {"lab", "sam", "--out"};
    const char *bad_seed[] = {"lab", "sam", "--seed", "-3"};
    const char *bad_dataset[] = {"lab", "fashion-mnist", "--dataset", "cifar"};
    const char *missing_data[] = {"lab", "fashion-mnist", "--dataset", "fashion-mnist", "--data", "/nonexistent/optim"};
    /* An explicit --data is the data set: missing, an error, never the digits fallback. */
    const char *missing_data_auto[] = {"lab", "fashion-mnist", "--data", "/nonexistent/optim"};
    const char *data_digits[] = {"lab", "fashion-mnist", "--dataset", "digits", "--data", "/tmp"};
    const char *list[] = {"lab", "--list"};
    ASSERT_INT(run_lab(2, unknown_exp), ==, 2);
    ASSERT_INT(run_lab(4, unknown_opt), ==, 2);
    ASSERT_INT(run_lab(4, empty_opt), ==, 2);
    ASSERT_INT(run_lab(4, opt_sam), ==, 2); /* the sam experiment always runs GD and SAM */
    ASSERT_INT(run_lab(4, epochs_zero), ==, 2);
    ASSERT_INT(run_lab(4, epochs_sam), ==, 2);
    ASSERT_INT(run_lab(3, tune_units), ==, 2);
    ASSERT_INT(run_lab(3, two), ==, 2);
    ASSERT_INT(run_lab(2, bad_opt), ==, 2);
    ASSERT_INT(run_lab(3, no_value), ==, 2);
    ASSERT_INT(run_lab(4, bad_seed), ==, 2);
    ASSERT_INT(run_lab(4, bad_dataset), ==, 2);
    ASSERT_INT(run_lab(6, missing_data), ==, 1);
    ASSERT_INT(run_lab(4, missing_data_auto), ==, 1);
    ASSERT_INT(run_lab(6, data_digits), ==, 2);
    ASSERT_INT(run_lab(2, list), ==, 0);
    return 0;
}

/* ---- The run directory ------------------------------------------------------------ */

static int is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int touch(const char *dir, const char *name)
{
    char path[8300];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "w");
    if (!f) return -1;
    fputs("x\n", f);
    return fclose(f);
}

/* Two claims held at once (two runs started in the same second) never get
 * one directory: the default name moves on to -2, -3, an explicit --out is
 * refused while its run is live; a live run's .partial is never removed, a
 * crashed one's (marker no longer locked) is, for --out only; the final
 * rename never lands on an existing directory. */
TEST_IMPL(lab_run_dir_exclusive)
{
    static lab_run_dir a, b, c, d;
    char tmpl[] = "/tmp/optim-lab-rundir-XXXXXX", cwd[4096], msg[2048], path[8300];
    char *dir = mkdtemp(tmpl);
    int rc;
    ASSERT(dir != NULL);
    ASSERT(getcwd(cwd, sizeof cwd) != NULL);
    ASSERT_INT(chdir(dir), ==, 0);

    /* Default names: the same stamp twice. */
    ASSERT_INT(lab_run_dir_claim(&a, NULL, "x-20260101-000000", msg, sizeof msg), ==, 0);
    ASSERT(strcmp(a.final_dir, "runs/x-20260101-000000") == 0);
    ASSERT(strcmp(a.work_dir, "runs/x-20260101-000000.partial") == 0 && is_dir(a.work_dir));
    ASSERT_INT(lab_run_dir_claim(&b, NULL, "x-20260101-000000", msg, sizeof msg), ==, 0);
    ASSERT(strcmp(b.final_dir, "runs/x-20260101-000000-2") == 0 && is_dir(b.work_dir));
    ASSERT_INT(touch(a.work_dir, "summary.json"), ==, 0);
    ASSERT_INT(touch(b.work_dir, "summary.json"), ==, 0);
    /* a finishes: a third run with that stamp gets -3 (not a's name, not b's). */
    ASSERT_INT(lab_run_dir_finish(&a, 0), ==, 0);
    lab_run_dir_release(&a);
    ASSERT(is_dir("runs/x-20260101-000000") && !is_dir("runs/x-20260101-000000.partial"));
    snprintf(path, sizeof path, "runs/x-20260101-000000/.optim-lab-run");
    ASSERT(access(path, F_OK) != 0); /* the marker goes with completion */
    ASSERT_INT(lab_run_dir_claim(&c, NULL, "x-20260101-000000", msg, sizeof msg), ==, 0);
    ASSERT(strcmp(c.final_dir, "runs/x-20260101-000000-3") == 0);
    /* c fails: .failed; a later claim does not take -3 again. */
    ASSERT_INT(lab_run_dir_finish(&c, 1), ==, 0);
    lab_run_dir_release(&c);
    ASSERT(is_dir("runs/x-20260101-000000-3.failed"));
    ASSERT_INT(lab_run_dir_claim(&c, NULL, "x-20260101-000000", msg, sizeof msg), ==, 0);
    ASSERT(strcmp(c.final_dir, "runs/x-20260101-000000-4") == 0);
    /* Someone creates c's final name meanwhile: the rename refuses to land on it. */
    ASSERT_INT(mkdir(c.final_dir, 0777), ==, 0);
    ASSERT_INT(touch(c.final_dir, "theirs"), ==, 0);
    ASSERT_INT(touch(c.work_dir, "summary.json"), ==, 0);
    ASSERT_INT(lab_run_dir_finish(&c, 0), !=, 0);
    snprintf(path, sizeof path, "%s/theirs", c.final_dir);
    ASSERT(access(path, F_OK) == 0);
    snprintf(path, sizeof path, "%s/summary.json", c.work_dir);
    ASSERT(access(path, F_OK) == 0);
    lab_run_dir_release(&c);
    ASSERT_INT(lab_run_dir_finish(&b, 0), ==, 0);
    lab_run_dir_release(&b);
    ASSERT(is_dir("runs/x-20260101-000000-2"));

    /* --out: a live run's directory is refused, and left alone. */
    ASSERT_INT(lab_run_dir_claim(&a, "out/", "x", msg, sizeof msg), ==, 0);
    ASSERT(strcmp(a.final_dir, "out") == 0 && strcmp(a.work_dir, "out.partial") == 0);
    ASSERT_INT(touch(a.work_dir, "data.csv"), ==, 0);
    rc = lab_run_dir_claim(&d, "out", "x", msg, sizeof msg);
    ASSERT_INT(rc, ==, 2);
    if (!strstr(msg, "another optim lab run") || !strstr(msg, "out.partial")) FAIL("message: %s", msg);
    ASSERT(access("out.partial/data.csv", F_OK) == 0);
    /* a crashes (its lock goes with it): the next run with that --out removes the leftovers. */
    lab_run_dir_release(&a);
    ASSERT_INT(lab_run_dir_claim(&d, "out", "x", msg, sizeof msg), ==, 0);
    ASSERT(is_dir("out.partial") && access("out.partial/data.csv", F_OK) != 0);
    ASSERT_INT(touch(d.work_dir, "summary.json"), ==, 0);
    ASSERT_INT(lab_run_dir_finish(&d, 0), ==, 0);
    lab_run_dir_release(&d);
    /* A complete run's directory is never reused. */
    rc = lab_run_dir_claim(&d, "out", "x", msg, sizeof msg);
    ASSERT_INT(rc, ==, 2);
    if (!strstr(msg, "--out out exists and is not an empty directory")) FAIL("message: %s", msg);
    /* An empty directory is accepted; the run is renamed onto it. */
    ASSERT_INT(mkdir("empty", 0777), ==, 0);
    ASSERT_INT(lab_run_dir_claim(&d, "empty", "x", msg, sizeof msg), ==, 0);
    ASSERT_INT(touch(d.work_dir, "summary.json"), ==, 0);
    ASSERT_INT(lab_run_dir_finish(&d, 0), ==, 0);
    lab_run_dir_release(&d);
    ASSERT(access("empty/summary.json", F_OK) == 0);
    /* A .partial that is not the lab's is never removed. */
    ASSERT_INT(mkdir("other.partial", 0777), ==, 0);
    ASSERT_INT(touch("other.partial", "keep"), ==, 0);
    ASSERT_INT(lab_run_dir_claim(&d, "other", "x", msg, sizeof msg), ==, 2);
    ASSERT(access("other.partial/keep", F_OK) == 0);
    /* A parent that is a file. */
    ASSERT_INT(touch(".", "file"), ==, 0);
    ASSERT_INT(lab_run_dir_claim(&d, "file/sub", "x", msg, sizeof msg), ==, 1);
    if (!strstr(msg, "file")) FAIL("message: %s", msg);

    ASSERT_INT(chdir(cwd), ==, 0);
    snprintf(path, sizeof path, "rm -rf '%s'", dir);
    ASSERT_INT(system(path), ==, 0);
    return 0;
}
