/* fuzz_checkpoint.c: libFuzzer harness for the checkpoint loader. Any input
 * must be refused with an error or loaded; a loaded state is then stepped
 * (which may refuse, e.g. a step counter at its maximum) so that the
 * sanitizers see the update run on whatever the loader accepted.
 * Built with clang -fsanitize=fuzzer,address,undefined (scripts/fuzz.sh). */
#include "fuzz_common.h"
#include "optim_checkpoint.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static optim *opts[OPTIM_RULE_COUNT + 1];
    optim_rule rule = OPTIM_ADAM;
    size_t k, i;
    if (!opts[1]) {
        for (k = 1; k <= OPTIM_RULE_COUNT; k++) opts[k] = fuzz_optimizer((optim_rule)k, 0);
    }
    /* Load into the optimizer of the rule the input claims (META's first field), so
     * that deep paths are reached; any other value still goes through the parser. */
    if (size >= 52 && data[48] >= 1 && data[48] <= OPTIM_RULE_COUNT && !data[49] && !data[50] && !data[51])
        rule = (optim_rule)data[48];
    if (optim_load_buffer(opts[rule], data, size, (size & 1) ? OPTIM_MATCH_POSITION : OPTIM_MATCH_NAME, "fuzz") ==
        OPTIM_OK) {
        for (k = 0; k < 3; k++)
            for (i = 0; i < fuzz_n[k]; i++) fuzz_g[k][i] = 0.01f * (float)(i + 1);
        (void)optim_step(opts[rule]);
    }
    return 0;
}
