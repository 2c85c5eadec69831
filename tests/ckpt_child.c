/* ckpt_child.c: the second half of an interrupted run, in a new process.
 *   optim_ckpt_child SCENARIO CHECKPOINT PARAMS FROM TO OUT
 * builds the scenario, loads the checkpoint and the parameters, takes steps
 * FROM..TO-1 and writes the snapshot to OUT. */
#include "ckpt_scenario.h"
#include "optim_checkpoint.h"

#include <stdlib.h>

int main(int argc, char **argv)
{
    scenario_run run;
    FILE *out;
    int t, from, to;
    if (argc != 7) {
        fprintf(stderr, "usage: %s SCENARIO CHECKPOINT PARAMS FROM TO OUT\n", argv[0]);
        return 2;
    }
    from = atoi(argv[4]);
    to = atoi(argv[5]);
    if (scenario_build(atoi(argv[1]), &run) != 0) return 1;
    if (optim_load(run.opt, argv[2], OPTIM_MATCH_NAME) != OPTIM_OK) {
        fprintf(stderr, "load: %s\n", optim_errmsg(run.opt));
        return 1;
    }
    if (scenario_read_params(&run, argv[3]) != 0) {
        fprintf(stderr, "cannot read the parameters from %s\n", argv[3]);
        return 1;
    }
    for (t = from; t < to; t++)
        if (scenario_step(&run, t) != 0) return 1;
    out = fopen(argv[6], "wb");
    if (!out || scenario_snapshot(&run, out) != 0 || fclose(out) != 0) return 1;
    scenario_free(&run);
    return 0;
}
