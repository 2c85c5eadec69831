/* fuzz_checkpoint.c: libFuzzer harness for the checkpoint loader. Any input
 * must be refused with an error or loaded; a loaded state is then stepped
 * (which may refuse, e.g. a step counter at its maximum) so that the
 * sanitizers see the update run on whatever the loader accepted.
 *
 * Most inputs go to optim_load_buffer; one in four is written to a memory
 * file (memfd) and goes through optim_load and optim_checkpoint_info_read,
 * by its path, so that the file path (open, fstat, a read of any size,
 * including 0) is fuzzed too.
 * Built with clang -fsanitize=fuzzer,address,undefined (scripts/fuzz.sh). */
#define _GNU_SOURCE /* memfd_create */
#include "fuzz_common.h"
#include "optim_checkpoint.h"
#include "optim_schedule_free.h"
#include "optim_ema.h"

#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A memory file holding the input, by path ("/proc/self/fd/N"); NULL if none. */
static const char *as_file(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("fuzz-checkpoint", MFD_CLOEXEC);
        if (fd < 0) return NULL;
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size)) return NULL;
    return path;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static optim *opts[OPTIM_RULE_COUNT + 1];
    optim_rule rule = OPTIM_ADAM;
    optim_match match = (size & 1) ? OPTIM_MATCH_POSITION : OPTIM_MATCH_NAME;
    const char *path = NULL;
    size_t k, i;
    int rc;
    if (!opts[1]) {
        for (k = 1; k <= OPTIM_RULE_COUNT; k++) opts[k] = fuzz_optimizer((optim_rule)k, 0);
    }
    /* Load into the optimizer of the rule the input claims (META's first field), so
     * that deep paths are reached; any other value still goes through the parser. */
    if (size >= 52 && data[48] >= 1 && data[48] <= OPTIM_RULE_COUNT && !data[49] && !data[50] && !data[51])
        rule = (optim_rule)data[48];
    if (size >= 2 && (data[size - 1] & 3) == 0) path = as_file(data, size);
    if (path) {
        optim_checkpoint_info info;
        optim_error err;
        (void)optim_checkpoint_info_read(path, &info, &err);
        rc = optim_load(opts[rule], path, match);
    } else {
        rc = optim_load_buffer(opts[rule], data, size, match, "fuzz");
    }
    if (rc == OPTIM_OK) {
        for (k = 0; k < 3; k++)
            for (i = 0; i < fuzz_n[k]; i++) fuzz_g[k][i] = 0.01f * (float)(i + 1);
        /* A schedule-free state loaded in eval mode: the switch runs over the loaded z, then steps, then
         * switches back and forth again (a step in eval mode would be refused before touching anything). */
        int swapped = 0;
        if (optim_schedule_free_mode(opts[rule]) == 0) (void)optim_schedule_free_train(opts[rule]);
        /* An EMA loaded swapped (optim_ema.h): back, so that the step runs and later loads are not refused. */
        (void)optim_get_ema(opts[rule], NULL, NULL, NULL, NULL, &swapped);
        if (swapped) (void)optim_ema_swap(opts[rule]);
        (void)optim_step(opts[rule]);
        (void)optim_ema_swap(opts[rule]);
        (void)optim_ema_swap(opts[rule]);
        if (optim_schedule_free_mode(opts[rule]) == 1) {
            (void)optim_schedule_free_eval(opts[rule]);
            (void)optim_schedule_free_train(opts[rule]);
        }
    }
    return 0;
}
