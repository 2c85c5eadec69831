/* long_loop.c: a long training loop (100k steps by default) through every
 * feature a long run uses: two groups, a warm-up + cosine schedule, fused
 * clipping with the non-finite skip (a NaN gradient every 997 steps), SAM
 * every 10th step, and every 5k steps a checkpoint round trip, alternately
 * through memory and through a file (optim_save, optim_load).
 *
 * It checks that memory stays flat after the first steps (no allocation kept
 * per step or per save): the executable is linked with -Wl,--wrap for
 * malloc, calloc, realloc, posix_memalign and free, so every allocation of
 * this loop and of the (static) library is counted here, in the bytes
 * asked for, whatever the allocator: glibc's natively, valgrind's under
 * valgrind (where mallinfo2 reports nothing), ASan's under the sanitizers. Natively glibc's own in-use count (mallinfo2) must be flat too
 * (without its per-thread cache, which counts freed chunks as in use:
 * GLIBC_TUNABLES=glibc.malloc.tcache_count=0). Valgrind runs it to show no
 * leak or memory error.
 *   optim_long_loop [STEPS] */
#define _GNU_SOURCE /* mkdtemp, mallinfo2 */
#include "optim.h"
#include "optim_checkpoint.h"
#include "optim_sam.h"
#include "optim_schedule.h"

#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

/* ---- Counting every allocation (-Wl,--wrap=...) ----
 * The bytes asked for, per live pointer, in a table: what the program holds,
 * independent of how the allocator rounds or places blocks. A pointer the
 * table does not know (allocated by code not linked here) is not counted. */
#define LIVE_TABLE (1 << 16)
static struct {
    void *p; /* NULL: empty; &live_tomb: deleted */
    size_t n;
} live_table[LIVE_TABLE];
static char live_tomb, live_lock;
static long live_bytes, live_blocks, allocations;

static void lock(void)
{
    while (__atomic_test_and_set(&live_lock, __ATOMIC_ACQUIRE)) continue;
}

static void unlock(void)
{
    __atomic_clear(&live_lock, __ATOMIC_RELEASE);
}

static size_t slot_of(const void *p)
{
    return (size_t)(((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ull >> 48) & (LIVE_TABLE - 1);
}

static void track(void *p, size_t n)
{
    size_t i;
    if (!p) return;
    lock();
    for (i = slot_of(p); live_table[i].p && live_table[i].p != (void *)&live_tomb; i = (i + 1) & (LIVE_TABLE - 1))
        continue;
    live_table[i].p = p;
    live_table[i].n = n;
    live_bytes += (long)n;
    live_blocks++;
    allocations++;
    unlock();
}

static void untrack(void *p)
{
    size_t i;
    if (!p) return;
    lock();
    for (i = slot_of(p); live_table[i].p; i = (i + 1) & (LIVE_TABLE - 1))
        if (live_table[i].p == p) {
            live_table[i].p = (void *)&live_tomb;
            live_bytes -= (long)live_table[i].n;
            live_blocks--;
            break;
        }
    unlock();
}

static long live_now(void)
{
    long v;
    lock();
    v = live_bytes;
    unlock();
    return v;
}

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
int __real_posix_memalign(void **p, size_t align, size_t n);
void __real_free(void *p);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
int __wrap_posix_memalign(void **p, size_t align, size_t n);
void __wrap_free(void *p);

void *__wrap_malloc(size_t n)
{
    void *p = __real_malloc(n);
    track(p, n);
    return p;
}

void *__wrap_calloc(size_t n, size_t size)
{
    void *p = __real_calloc(n, size);
    track(p, n * size);
    return p;
}

void *__wrap_realloc(void *p, size_t n)
{
    void *q = __real_realloc(p, n);
    if (q || n == 0) {
        untrack(p);
        track(q, n);
    }
    return q;
}

int __wrap_posix_memalign(void **p, size_t align, size_t n)
{
    int rc = __real_posix_memalign(p, align, n);
    if (rc == 0) track(*p, n);
    return rc;
}

void __wrap_free(void *p)
{
    untrack(p);
    __real_free(p);
}

#define CHECK(expr)                                                                          \
    do {                                                                                     \
        if ((expr) != OPTIM_OK) {                                                            \
            fprintf(stderr, "%s failed: %s\n", #expr, optim_errmsg(o));                      \
            return 1;                                                                        \
        }                                                                                    \
    } while (0)

int main(int argc, char **argv)
{
    long steps = argc > 1 ? atol(argv[1]) : 100000, t;
    static float w[3][257], g[3][257];
    optim *o = NULL;
    optim_sam *sam = NULL;
    optim_hparams hp;
    optim_schedule *cos = NULL, *warm = NULL;
    size_t heap_early = 0, heap_late, k, i;
    long live_early = 0, live_late, allocs_early = 0;
    char dir[] = "/tmp/optim-long-loop-XXXXXX", path[64];
    if (!mkdtemp(dir)) return 1;
    snprintf(path, sizeof path, "%s/loop.ckpt", dir);
    if (optim_create(&o, OPTIM_ADAMW) != OPTIM_OK) return 1;
    optim_hparams_init(&hp, OPTIM_ADAMW, NULL);
    hp.amsgrad = 1;
    CHECK(optim_add_group(o, &hp, NULL));
    hp.weight_decay = 0;
    CHECK(optim_add_group(o, &hp, NULL));
    for (k = 0; k < 3; k++) {
        for (i = 0; i < 257; i++) w[k][i] = (float)sin((double)(k * 257 + i));
        CHECK(optim_add_param(o, k == 2, w[k], g[k], 257, k == 0 ? "a" : k == 1 ? "b" : "c", NULL));
    }
    CHECK(optim_schedule_cosine(&cos, steps, 1e-5, NULL) == OPTIM_OK ? OPTIM_OK : OPTIM_EINVAL);
    CHECK(optim_schedule_warmup(&warm, 100, cos, NULL) == OPTIM_OK ? OPTIM_OK : OPTIM_EINVAL);
    CHECK(optim_group_set_schedule(o, 0, warm));
    optim_schedule_free(warm);
    CHECK(optim_set_clip_grad_norm(o, 10.0, 2.0));
    CHECK(optim_set_nonfinite(o, OPTIM_NONFINITE_SKIP));
    if (optim_sam_create(&sam, o, 0.05, 2.0, 0, 0.0, NULL) != OPTIM_OK) return 1;
    for (t = 0; t < steps; t++) {
        for (k = 0; k < 3; k++)
            for (i = 0; i < 257; i++) g[k][i] = 0.5f * w[k][i] + (float)((t * 31 + (long)i) % 17) * 0.01f - 0.08f;
        if (t % 997 == 500) g[1][7] = NAN;
        if (t % 10 == 0) {
            if (optim_sam_first_step(sam) != OPTIM_OK || optim_sam_second_step(sam) != OPTIM_OK) {
                fprintf(stderr, "SAM: %s\n", optim_sam_errmsg(sam));
                return 1;
            }
        } else {
            CHECK(optim_step(o));
        }
        if (t % 10000 == 9999) {
            void *buf;
            size_t size;
            CHECK(optim_save_buffer(o, &buf, &size));
            CHECK(optim_load_buffer(o, buf, size, OPTIM_MATCH_NAME, "loop"));
            free(buf);
        }
        if (t % 10000 == 4999) {
            CHECK(optim_save(o, path));
            CHECK(optim_load(o, path, OPTIM_MATCH_NAME));
        }
        if (t == 1000) {
            heap_early = mallinfo2().uordblks;
            live_early = live_now();
            allocs_early = allocations;
        }
    }
    heap_late = mallinfo2().uordblks;
    live_late = live_now();
    unlink(path);
    rmdir(dir);
    for (k = 0; k < 3; k++)
        for (i = 0; i < 257; i++)
            if (!isfinite(w[k][i])) {
                fprintf(stderr, "a parameter went non-finite\n");
                return 1;
            }
    printf("%ld steps (%lld skipped for NaN): bytes allocated and not freed after 1000 steps %ld, at the end %ld "
           "(%ld allocations in between, by the checkpoint round trips); glibc's heap in use %zu and %zu\n",
           steps, (long long)optim_skipped_steps(o), live_early, live_late, allocations - allocs_early, heap_early,
           heap_late);
    optim_sam_free(sam);
    optim_free(o);
    if (steps > 1000 && live_late != live_early) {
        fprintf(stderr, "memory grew during the run: %ld bytes held after 1000 steps, %ld at the end\n", live_early,
                live_late);
        return 1;
    }
    /* glibc's count may move by a chunk's rounding as blocks land elsewhere; it must not grow. */
    if (steps > 1000 && heap_late > heap_early && heap_early != 0) { /* 0: not glibc's allocator (valgrind) */
        fprintf(stderr, "glibc's heap grew during the run\n");
        return 1;
    }
    if (live_now() != 0) {
        fprintf(stderr, "%ld bytes in %ld blocks still allocated after freeing everything\n", live_bytes, live_blocks);
        return 1;
    }
    return 0;
}
