/* long_loop.c: a long training loop (100k steps by default) through every
 * feature a long run uses: two groups, a warm-up + cosine schedule, fused
 * clipping with the non-finite skip (a NaN gradient every 997 steps), SAM
 * every 10th step, and a checkpoint saved and loaded back every 10k steps.
 * It checks that the heap does not grow after the first steps (no allocation
 * per step, nothing kept per save), and valgrind runs it to show no leak.
 *   GLIBC_TUNABLES=glibc.malloc.tcache_count=0 optim_long_loop [STEPS]
 * (glibc's thread cache counts recently freed chunks as in use: without it,
 * mallinfo2's in-use bytes are exactly what the program holds). */
#include "optim.h"
#include "optim_checkpoint.h"
#include "optim_sam.h"
#include "optim_schedule.h"

#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

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
        if (t == 1000) heap_early = mallinfo2().uordblks;
    }
    heap_late = mallinfo2().uordblks;
    for (k = 0; k < 3; k++)
        for (i = 0; i < 257; i++)
            if (!isfinite(w[k][i])) {
                fprintf(stderr, "a parameter went non-finite\n");
                return 1;
            }
    printf("%ld steps (%lld skipped for NaN), heap in use after 1000 steps %zu bytes, at the end %zu\n", steps,
           (long long)optim_skipped_steps(o), heap_early, heap_late);
    optim_sam_free(sam);
    optim_free(o);
    if (steps > 1000 && heap_late != heap_early) {
        fprintf(stderr, "the heap grew during the run\n");
        return 1;
    }
    return 0;
}
