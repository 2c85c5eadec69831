/* fuzz_ckpt_decode.c: libFuzzer harness for the checkpoint format's decoder
 * alone (src/ckpt_format.c, optim__ck_decode): bytes in, a plan or an error
 * out, no optimizer, no file. Whatever it accepts is then read as the
 * matcher would read it (every shape size, every slot's floats) and its
 * schedules evaluated, so that the sanitizers see any plan that points
 * outside the input or holds a schedule whose arithmetic overflows. Fuzzing
 * builds accept wrong checksums (FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION),
 * so mutations reach the parser. Built with clang -fsanitize=fuzzer,address,
 * undefined (scripts/fuzz.sh). */
#include "ckpt_format.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int64_t ts[] = {0, 1, 2, 1000, (int64_t)1 << 40, INT64_MAX - 1, INT64_MAX};
    optim__ck_plan pl;
    optim_error err;
    volatile double sink = 0;
    volatile uint64_t dims = 0;
    size_t i, k;
    int s;
    if (optim__ck_decode(data, size, "fuzz", NULL, &pl, &err) == OPTIM_OK) {
        for (i = 0; i < pl.ngroups; i++)
            for (k = 0; k < sizeof ts / sizeof ts[0]; k++) sink += optim_schedule_lr(pl.groups[i].sched, 0.1, ts[k]);
        for (i = 0; i < pl.nparams; i++) {
            const optim__ck_param_plan *pp = &pl.params[i];
            double tail[4]; /* room for four elements of either state type */
            for (k = 0; pp->shape_given && k < pp->ndim; k++) dims += optim__ck_dim(pp, k);
            for (s = 0; s < OPTIM_MAX_SLOTS; s++) {
                /* The slot's own length: n, or its rule's for the shape (Adafactor's rows and columns). */
                const size_t len = pp->len[s];
                size_t n = len < 4 ? len : 4;
                if (!pp->data[s] || n == 0) continue;
                if (pp->dtype == OPTIM_INT8_BLOCK) {
                    /* The slot's last code and the last byte of its last scale: the decoder said they are there. */
                    sink += pp->data[s][len - 1] + pp->data[s][optim__ck_slot_bytes(len, pp->dtype) - 1];
                    continue;
                }
                const size_t size = optim_dtype_size(pp->dtype);
                optim__ck_read_elems(tail, pp->data[s] + size * (len - n), n, pp->dtype); /* the slot's last elements */
                sink += size == 8 ? tail[0] : (double)*(const float *)(const void *)tail;
            }
        }
    }
    optim__ck_plan_free(&pl);
    (void)sink;
    (void)dims;
    return 0;
}
