/* bench_muon.c: `optim bench --muon`: a Muon step (rule OPTIM_MUON with
 * liboptim_muon) against OpenBLAS's own sgemm rate on the same shapes. For
 * each rows x cols: the step's time; the orthogonalisation alone
 * (optim_muon_newton_schulz: 3 sgemm per iteration and two copies, OpenBLAS
 * on one thread, as a step runs it); the same sgemm calls timed bare with
 * OpenBLAS on one thread and on its default thread count. The step over the
 * orthogonalisation is the cost of the element-wise passes; the
 * orthogonalisation over the bare calls on one thread is the copies'. */
#include "bench.h"
#include "optim.h"

#if defined(OPTIM_BENCH_MUON)
#include "optim_muon.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int bench_muon_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The bare products of `steps` iterations on rows x cols (the calls optim_muon_newton_schulz makes). */
static void bench_muon_gemms(float *x, float *y, float *a, float *b, size_t rows, size_t cols, int steps)
{
    const int wide = rows <= cols;
    const int m = (int)(wide ? rows : cols), R = (int)rows, C = (int)cols;
    int it;
    for (it = 0; it < steps; it++) {
        if (wide)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, R, C, 1.0f, x, C, x, C, 0.0f, a, m);
        else
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, C, R, 1.0f, x, C, x, C, 0.0f, a, m);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, m, m, 2.0315f, a, m, a, m, -4.775f, b, m);
        if (wide)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, C, R, 1.0f, b, m, x, C, 3.4445f, y, C);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, C, C, 1.0f, x, C, b, m, 3.4445f, y, C);
    }
}

typedef struct bench_muon_shape {
    size_t rows, cols;
} bench_muon_shape;

int bench_muon_main(int argc, char **argv)
{
    bench_muon_shape shapes[16] = {{1024, 1024}, {1024, 4096}, {4096, 1024}};
    size_t nshapes = 3, s;
    int reps = 5, i;
    const int blas_default = openblas_get_num_threads();
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
            reps = atoi(argv[++i]);
            if (reps < 1 || reps > 1000) {
                fprintf(stderr, "optim bench --muon: --reps %s: expected 1..1000\n", argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "--shapes") == 0 && i + 1 < argc) {
            char *list = argv[++i], *tok, *save = NULL;
            nshapes = 0;
            for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                unsigned long r, c;
                char x;
                if (nshapes == 16 || sscanf(tok, "%lu%c%lu", &r, &x, &c) != 3 || x != 'x' || r < 1 || c < 1 ||
                    r > 65536 || c > 65536) {
                    fprintf(stderr, "optim bench --muon: --shapes %s: expected up to 16 ROWSxCOLS, each 1..65536\n",
                            tok);
                    return 2;
                }
                shapes[nshapes].rows = r;
                shapes[nshapes++].cols = c;
            }
        } else {
            fprintf(stderr, "usage: optim bench --muon [--shapes 1024x1024,1024x4096,...] [--reps N]\n"
                            "  A Muon step against OpenBLAS's own sgemm rate on the same shapes (%s).\n",
                    strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0 ? "usage" : "unknown option");
            return strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0 ? 0 : 2;
        }
    }
    printf("optim bench --muon: %s, %s, %d OpenMP threads, OpenBLAS default %d threads; median of %d\n",
           bench_cpu_model(), optim_muon_backend(), bench_max_threads(), blas_default, reps);
    printf("%-11s %10s %10s %10s %10s   %s\n", "shape", "step ms", "NS ms", "sgemm1 ms", "sgemmN ms",
           "GFLOP/s (NS, sgemm 1 thread, sgemm default)");
    for (s = 0; s < nshapes; s++) {
        const size_t r = shapes[s].rows, c = shapes[s].cols, n = r * c, m = r < c ? r : c, k = r < c ? c : r;
        const double flops = 5.0 * (2.0 * m * m * k + 2.0 * m * m * m + 2.0 * m * m * k);
        const double coef[3] = {3.4445, -4.7750, 2.0315};
        float *p = malloc(n * sizeof *p), *g = malloc(n * sizeof *g), *x = malloc(n * sizeof *x);
        float *w = malloc(optim_muon_work_size(r, c) * sizeof *w);
        double t_step[64], t_ns[64], t_g1[64], t_gn[64];
        const int64_t dims[2] = {(int64_t)r, (int64_t)c};
        optim_hparams hp;
        optim *o = NULL;
        int rep, nrep = reps > 64 ? 64 : reps;
        if (!p || !g || !x || !w || optim_create(&o, OPTIM_MUON) != OPTIM_OK) {
            fprintf(stderr, "optim bench --muon: out of memory for %zu x %zu\n", r, c);
            return 1;
        }
        bench_fill(p, n, 1, -1.0f, 1.0f);
        bench_fill(g, n, 2, -1.0f, 1.0f);
        optim_hparams_init(&hp, OPTIM_MUON, NULL);
        if (optim_muon_attach(o) != OPTIM_OK || optim_add_group(o, &hp, NULL) != OPTIM_OK ||
            optim_add_param(o, 0, p, g, n, "w", NULL) != OPTIM_OK || optim_param_set_shape(o, 0, 2, dims) != OPTIM_OK ||
            optim_step(o) != OPTIM_OK) {
            fprintf(stderr, "optim bench --muon: %s\n", optim_errmsg(o));
            return 1;
        }
        for (rep = 0; rep < nrep; rep++) {
            double t0 = bench_now();
            optim_step(o);
            t_step[rep] = bench_now() - t0;
            bench_fill(x, n, 3, -0.01f, 0.01f);
            t0 = bench_now();
            optim_muon_newton_schulz(x, r, c, coef, 5, w, NULL);
            t_ns[rep] = bench_now() - t0;
            openblas_set_num_threads(1);
            t0 = bench_now();
            bench_muon_gemms(x, w + 2 * m * m, w, w + m * m, r, c, 5);
            t_g1[rep] = bench_now() - t0;
            openblas_set_num_threads(blas_default);
            t0 = bench_now();
            bench_muon_gemms(x, w + 2 * m * m, w, w + m * m, r, c, 5);
            t_gn[rep] = bench_now() - t0;
        }
        qsort(t_step, (size_t)nrep, sizeof(double), bench_muon_cmp);
        qsort(t_ns, (size_t)nrep, sizeof(double), bench_muon_cmp);
        qsort(t_g1, (size_t)nrep, sizeof(double), bench_muon_cmp);
        qsort(t_gn, (size_t)nrep, sizeof(double), bench_muon_cmp);
        {
            const double a = t_step[nrep / 2], b = t_ns[nrep / 2], c1 = t_g1[nrep / 2], cn = t_gn[nrep / 2];
            char name[32];
            snprintf(name, sizeof name, "%zux%zu", r, c);
            printf("%-11s %10.3f %10.3f %10.3f %10.3f   %.1f, %.1f, %.1f (NS / sgemm 1 thread %.2f)\n", name,
                   a * 1e3, b * 1e3, c1 * 1e3, cn * 1e3, flops / b * 1e-9, flops / c1 * 1e-9, flops / cn * 1e-9,
                   c1 / b);
        }
        optim_free(o);
        free(p);
        free(g);
        free(x);
        free(w);
    }
    return 0;
}
#else
#include <stdio.h>
int bench_muon_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "optim bench --muon: this optim was built without liboptim_muon (CMake OPTIM_MUON=OFF)\n");
    return 2;
}
#endif
