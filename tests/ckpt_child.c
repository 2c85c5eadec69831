/* ckpt_child.c: the other processes of the checkpoint tests.
 *
 *   optim_ckpt_child SCENARIO CHECKPOINT PARAMS FROM TO OUT
 *     builds the scenario, loads the checkpoint and the parameters, takes
 *     steps FROM..TO-1 and writes the snapshot to OUT.
 *   optim_ckpt_child train SCENARIO DIR STEPS EVERY
 *     trains for STEPS steps (a little slowly, so that a kill lands mid-run),
 *     checkpointing every EVERY steps as a user would: the parameters to
 *     DIR/params-T.bin (written next to it, flushed, renamed), then the
 *     optimizer to DIR/run.ckpt, then the previous parameters file removed.
 *     T = the steps done, which the checkpoint tells again as step count +
 *     skipped steps.
 *   optim_ckpt_child resume SCENARIO DIR TO OUT
 *     loads DIR/run.ckpt and the parameters file it belongs to, takes the
 *     steps up to TO, writes the snapshot to OUT and the step it resumed at
 *     to OUT.t. */
#define _POSIX_C_SOURCE 200809L
#include "ckpt_scenario.h"
#include "optim_checkpoint.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int write_params_atomically(const scenario_run *run, const char *dir, long t)
{
    char tmp[4096], path[4096];
    FILE *f;
    snprintf(tmp, sizeof tmp, "%s/params.tmp", dir);
    snprintf(path, sizeof path, "%s/params-%ld.bin", dir, t);
    if (scenario_write_params(run, tmp) != 0) return -1;
    f = fopen(tmp, "rb+");
    if (!f || fsync(fileno(f)) != 0 || fclose(f) != 0) return -1;
    return rename(tmp, path);
}

static int train(int id, const char *dir, long steps, long every)
{
    scenario_run run;
    char ckpt[4096], old[4096];
    long t;
    struct timespec pause = {0, 200000};
    snprintf(ckpt, sizeof ckpt, "%s/run.ckpt", dir);
    if (scenario_build(id, &run) != 0) {
        scenario_free(&run);
        return 1;
    }
    for (t = 0;; t++) {
        if (t % every == 0) {
            if (write_params_atomically(&run, dir, t) != 0 || optim_save(run.opt, ckpt) != OPTIM_OK) {
                fprintf(stderr, "checkpoint at %ld: %s\n", t, optim_errmsg(run.opt));
                scenario_free(&run);
                return 1;
            }
            if (t > 0) {
                snprintf(old, sizeof old, "%s/params-%ld.bin", dir, t - every);
                unlink(old);
            }
        }
        if (t == steps) break;
        if (scenario_step(&run, (int)t) != 0) {
            scenario_free(&run);
            return 1;
        }
        nanosleep(&pause, NULL);
    }
    scenario_free(&run);
    return 0;
}

static int resume(int id, const char *dir, int to, const char *out_path)
{
    scenario_run run;
    char ckpt[4096], params[4096], tpath[4096];
    FILE *out;
    long t;
    int k;
    int rc = 1;
    snprintf(ckpt, sizeof ckpt, "%s/run.ckpt", dir);
    if (scenario_build(id, &run) != 0) goto done;
    if (optim_load(run.opt, ckpt, OPTIM_MATCH_NAME) != OPTIM_OK) {
        fprintf(stderr, "load: %s\n", optim_errmsg(run.opt));
        goto done;
    }
    t = (long)(optim_step_count(run.opt) + optim_skipped_steps(run.opt));
    snprintf(params, sizeof params, "%s/params-%ld.bin", dir, t);
    if (scenario_read_params(&run, params) != 0) {
        fprintf(stderr, "cannot read %s\n", params);
        goto done;
    }
    for (k = (int)t; k < to; k++)
        if (scenario_step(&run, k) != 0) goto done;
    out = fopen(out_path, "wb");
    if (!out || scenario_snapshot(&run, out) != 0 || fclose(out) != 0) goto done;
    snprintf(tpath, sizeof tpath, "%s.t", out_path);
    out = fopen(tpath, "w");
    if (!out || fprintf(out, "%ld\n", t) < 0 || fclose(out) != 0) goto done;
    rc = 0;
done:
    scenario_free(&run);
    return rc;
}

int main(int argc, char **argv)
{
    scenario_run run;
    FILE *out;
    int t, from, to;
    if (argc == 6 && strcmp(argv[1], "train") == 0) return train(atoi(argv[2]), argv[3], atol(argv[4]), atol(argv[5]));
    if (argc == 6 && strcmp(argv[1], "resume") == 0) return resume(atoi(argv[2]), argv[3], atoi(argv[4]), argv[5]);
    if (argc != 7) {
        fprintf(stderr,
                "usage: %s SCENARIO CHECKPOINT PARAMS FROM TO OUT\n"
                "       %s train SCENARIO DIR STEPS EVERY\n"
                "       %s resume SCENARIO DIR TO OUT\n",
                argv[0], argv[0], argv[0]);
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
