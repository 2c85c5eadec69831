/* bench_sys.c: the facts about the machine and the process that `optim
 * bench` reports next to its numbers: clock, memory, load, CPU. */
#define _GNU_SOURCE /* sysconf's _SC_AVPHYS_PAGES */
#include "bench.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <unistd.h>

#ifdef _OPENMP
#  include <omp.h>
#endif

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The value in kB of the line "key: N kB" of a /proc file, in bytes; 0 if absent. */
static uint64_t bench_proc_kb(const char *path, const char *key)
{
    char line[256];
    size_t klen = strlen(key);
    uint64_t v = 0;
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            v = (uint64_t)strtoull(line + klen + 1, NULL, 10) * 1024u;
            break;
        }
    }
    fclose(f);
    return v;
}

uint64_t bench_mem_available(void)
{
    uint64_t v = bench_proc_kb("/proc/meminfo", "MemAvailable");
#if defined(_SC_AVPHYS_PAGES) && defined(_SC_PAGESIZE)
    if (v == 0) {
        long pages = sysconf(_SC_AVPHYS_PAGES), size = sysconf(_SC_PAGESIZE);
        if (pages > 0 && size > 0) v = (uint64_t)pages * (uint64_t)size;
    }
#endif
    return v;
}

uint64_t bench_rss_now(void)
{
    return bench_proc_kb("/proc/self/status", "VmRSS");
}

uint64_t bench_rss_peak(void)
{
    return bench_proc_kb("/proc/self/status", "VmHWM");
}

void bench_heap_release(void)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

int bench_rss_peak_reset(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    int ok;
    if (!f) return 0;
    ok = fputs("5", f) >= 0;
    ok = (fclose(f) == 0) && ok;
    return ok;
}

int bench_loadavg(double load[3])
{
    FILE *f = fopen("/proc/loadavg", "r");
    int ok;
    load[0] = load[1] = load[2] = 0.0;
    if (!f) return 0;
    ok = fscanf(f, "%lf %lf %lf", &load[0], &load[1], &load[2]) == 3;
    fclose(f);
    return ok;
}

const char *bench_cpu_model(void)
{
    static char model[160];
    char line[512];
    FILE *f;
    if (model[0]) return model;
    snprintf(model, sizeof model, "unknown");
    f = fopen("/proc/cpuinfo", "r");
    if (!f) return model;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *colon = strchr(line, ':'), *end;
            if (!colon) break;
            colon++;
            while (*colon == ' ' || *colon == '\t') colon++;
            end = colon + strlen(colon);
            while (end > colon && (end[-1] == '\n' || end[-1] == ' ')) *--end = '\0';
            if (*colon) snprintf(model, sizeof model, "%s", colon);
            break;
        }
    }
    fclose(f);
    return model;
}

int bench_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int bench_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

float *bench_alloc_floats(size_t n, const char *what)
{
    /* aligned_alloc wants a multiple of the alignment. */
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    float *p = (float *)aligned_alloc(64, bytes ? bytes : 64);
    if (!p) {
        char label[32];
        bench_bytes_label(label, sizeof label, (double)bytes);
        fprintf(stderr, "\noptim bench: out of memory allocating %s of %s for %s\n", label,
                n == 1 ? "1 float" : "floats", what);
        exit(1);
    }
    return p;
}

void bench_count_label(char *out, size_t size, size_t n)
{
    static const char units[] = "KMGT";
    int u = -1;
    double v = (double)n;
    size_t m = n;
    /* Exact binary multiples print as integers ("256M"); others keep a
     * decimal ("1.5M") or stay plain below 1K. */
    while (m >= 1024 && u < 3) {
        v /= 1024.0;
        u++;
        if (m % 1024 != 0) {
            m = 0;
            break;
        }
        m /= 1024;
    }
    if (u < 0)
        snprintf(out, size, "%zu", n);
    else if (m != 0)
        snprintf(out, size, "%zu%c", m, units[u]);
    else {
        while (v >= 1024.0 && u < 3) {
            v /= 1024.0;
            u++;
        }
        snprintf(out, size, "%.3g%c", v, units[u]);
    }
}

void bench_bytes_label(char *out, size_t size, double bytes)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024.0 && u < 4) {
        bytes /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(out, size, "%.0f B", bytes);
    else
        snprintf(out, size, "%.2f %s", bytes, units[u]);
}
