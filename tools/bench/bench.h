/* bench.h: what the files of `optim bench` share.
 *
 * `optim bench` times every rule of the library against a ceiling measured
 * in the same process just before: a kernel with exactly the rule's memory
 * streams and trivial arithmetic, compiled for the library's CPU path and
 * split across threads the way the library splits a step (see
 * ../shared/BENCHMARKING.md of the project and docs/PERFORMANCE.md). It uses
 * the library only through the public header. Like every program of the
 * `optim` command it may print and exit; the library never does.
 */
#ifndef OPTIM_BENCH_H
#define OPTIM_BENCH_H

#include "optim.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Read-modify-write streams of a step: the parameter and up to
 * OPTIM_MAX_SLOTS state arrays. */
#define BENCH_MAX_RMW (1 + OPTIM_MAX_SLOTS)

/* ---- Ceiling, copy and triad kernels (bench_kernels.c) --------------------- */

/** One tensor as the ceiling kernel sees it: x[0..k) are updated in place
 *  (x = x*a + g*b), g is only read. start is the tensor's offset in the
 *  concatenation of all tensors of the step (running sum of n). */
typedef struct bench_span {
    float *x[BENCH_MAX_RMW];
    const float *g;
    size_t n;
    size_t start;
    uint16_t *w16; /* bench_rmw_typed, bench_rmw_q8: the 16-bit stream only written (a master's copy), or NULL */
    /* Cases with 8-bit state (state=int8) or bfloat16 gradients (grad=bf16):
     * g16 replaces g when set, and the k - 1 state streams are the byte
     * arrays q[0..k-2] (q[0] set), read and written, instead of x[1..]. */
    const uint16_t *g16;
    uint8_t *q[OPTIM_MAX_SLOTS];
    uint16_t *p16; /* bench_rmw_q8: a bfloat16 parameter (x[0] NULL; needs g16) */
    const float *r; /* bench_rmw_read: a second stream only read */
} bench_span;

/** 1 if the ceiling kernels have an instance for this CPU path (compiled
 *  with the same instruction set as the library's kernels for it). */
int bench_kernels_have(optim_isa isa);

/** Threads a pass over `work` elements runs on when at most `threads` are
 *  asked for (0: all OpenMP threads): the library's rule, so that the
 *  ceiling and the rule use the same number of threads. */
int bench_threads_for(size_t work, int threads);

/** The ceiling: for every span, x[j][i] = x[j][i]*a + g[i]*b for j < k,
 *  over the concatenation split into equal contiguous shares across threads
 *  in one parallel region (share boundaries at multiples of 16 elements
 *  within a tensor), as optim_step does. With a = 1 and b = 0 the arrays
 *  keep their values. 1 <= k <= BENCH_MAX_RMW. */
void bench_rmw(optim_isa isa, int k, const bench_span *spans, size_t count, size_t total, int threads, float a,
               float b);

/** The ceiling of a step over 16-bit streams too (reduced precision): per
 *  span, x[0..k32) are float arrays and x[k32..k32+k16) 16-bit arrays (cast
 *  to float *), read and written; g holds 16-bit values when g16 (else
 *  floats); w16, when not NULL, is written from x[0] (needs k32 >= 1). The
 *  arithmetic is trivial (a 16-bit value is the upper half of a float,
 *  truncated back): the bytes of the rule's streams, in their widths.
 *  1 <= k32 + k16 <= BENCH_MAX_RMW. */
void bench_rmw_typed(optim_isa isa, int k32, int k16, int g16, const bench_span *spans, size_t count, size_t total,
                     int threads, float a, float b);
/** The ceiling of a case with 8-bit state (bench_span's g16 and q): for
 *  every element p = p*a + widen(g)*b for the parameter x[0] (or the
 *  bfloat16 parameter p16, widened and truncated back), and q[j] =
 *  q[j] ^ m for its k - 1 byte arrays (m = 0 keeps them), split across
 *  threads as bench_rmw. The gradient is bfloat16 where g16 is set; with
 *  g16, w16 (when set) is written from p (the offload step's bfloat16
 *  parameter copy of an fp32 master). */
void bench_rmw_q8(optim_isa isa, int k, const bench_span *spans, size_t count, size_t total, int threads, float a,
                  float b, uint8_t m);

/** The ceiling of one pass of a rule with a per-tensor reduction (LAMB,
 *  LARS): for every span, x[j][i] = x[j][i]*a + (g[i] + r[i])*b for j < k
 *  (0 <= k <= 2), split across threads as bench_rmw: k read-modify-write
 *  streams and two read-only ones. With k = 0 it is a reduction and returns
 *  the sum of g + r (pass 1 of LARS: p and g read, nothing written). */
float bench_rmw_read(optim_isa isa, int k, const bench_span *spans, size_t count, size_t total, int threads, float a,
                     float b);

/** The sum of every span's g, split across threads like bench_rmw: the
 *  read-only pass a step makes before its update when it clips gradients or
 *  checks them for NaN/Inf (4 bytes per element). */
float bench_read(optim_isa isa, const bench_span *spans, size_t count, size_t total, int threads);

/** dst[i] = src[i] (8 bytes per element counted; the destination's
 *  write-allocate read is not counted, as STREAM does). */
void bench_copy(optim_isa isa, size_t n, float *dst, const float *src, int threads);

/** a[i] = b[i] + s*c[i] (12 bytes per element counted, as STREAM does). */
void bench_triad(optim_isa isa, size_t n, float *a, const float *b, const float *c, float s, int threads);

/** Fill x[0..n) with uniform values in [lo, hi) from a seed; the values do
 *  not depend on the number of threads that fill them. */
void bench_fill(float *x, size_t n, uint64_t seed, float lo, float hi);

/* ---- System facts (bench_sys.c) -------------------------------------------- */

/** Seconds on a monotonic clock. */
double bench_now(void);
/** Bytes the kernel says are available for new allocations (MemAvailable),
 *  or 0 if unknown. */
uint64_t bench_mem_available(void);
/** The process's resident set now (VmRSS) and its peak (VmHWM), in bytes;
 *  0 if unknown. */
uint64_t bench_rss_now(void);
uint64_t bench_rss_peak(void);
/** Reset the peak resident set to the current one (Linux >= 4.0: write 5 to
 *  /proc/self/clear_refs). Returns 1 if it worked, else 0 (the peak is then
 *  the whole process's). */
int bench_rss_peak_reset(void);
/** Hand the heap memory earlier cases freed back to the system (glibc's
 *  malloc_trim; nothing elsewhere), so that pages malloc kept resident are
 *  not in the next case's peak. */
void bench_heap_release(void);
/** The 1, 5 and 15 minute load averages; 0 if unknown. */
int bench_loadavg(double load[3]);
/** The CPU's model name ("AMD EPYC ..."), or "unknown"; never NULL. */
const char *bench_cpu_model(void);
/** Logical CPUs online. */
int bench_cpu_count(void);
/** OpenMP threads that "all threads" means (1 without OpenMP). */
int bench_max_threads(void);

/** 64-byte-aligned floats (exits with a message if the memory is not
 *  there: the caller checked the available memory first). */
float *bench_alloc_floats(size_t n, const char *what);

/** "4K", "256M", "1.5G" style label of an element count (binary prefixes,
 *  exact when it is a multiple). */
void bench_count_label(char *out, size_t size, size_t n);
/** "5.00 GiB" style label of a byte count. */
void bench_bytes_label(char *out, size_t size, double bytes);

/* ---- optim bench --torch (bench_torch.c) ----------------------------------- */

/** Run bench/torch_compare.py of the checkout with Debian's Python and the
 *  library next to this program, passing argv[1..argc) through; returns its
 *  exit status. */
int bench_torch_main(int argc, char **argv);
/** `optim bench --muon` (bench_muon.c): a Muon step against OpenBLAS's sgemm rate on the same shapes. */
int bench_muon_main(int argc, char **argv);

#endif
