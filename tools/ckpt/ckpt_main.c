/* ckpt_main.c: `optim ckpt`: what a checkpoint holds, and merging a sharded
 * checkpoint (a directory written by optim_mpi_save) into one file that
 * optim_load reads in one process. Needs no MPI: the sharded format is
 * mpi/shard_ckpt.c's, built into this command with or without MPI. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "shard_ckpt.h"

#include "optim_checkpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: optim ckpt info PATH         what a checkpoint holds (a file of optim_save, or a directory\n"
               "                                    of optim_mpi_save: its ranks, layout and completeness)\n"
               "       optim ckpt merge DIR OUT     merge the sharded checkpoint DIR into the file OUT, which\n"
               "                                    optim_load (and opt.load_checkpoint in Python) reads in one process\n");
}

static int info_dir(const char *dir)
{
    char *text = NULL, what[4200], path[4400];
    size_t len = 0, i, k, missing = 0;
    osc_manifest m;
    optim_error err;
    int r, rc;
    rc = osc_manifest_read_text(dir, &text, &len, &err);
    if (rc != OPTIM_OK) {
        fprintf(stderr, "optim ckpt info: %s\n", err.message);
        return 1;
    }
    snprintf(what, sizeof what, "%s/%s", dir, OSC_MANIFEST);
    rc = osc_manifest_parse(text, len, what, &m, &err);
    free(text);
    if (rc != OPTIM_OK) {
        fprintf(stderr, "optim ckpt info: %s\n", err.message);
        return 1;
    }
    printf("sharded checkpoint %s (format %u, written by optim %s, save %s)\n", dir, m.format, m.library, m.save_id);
    printf("  %s, %zu group%s, %lld steps (%lld skipped), written by %d rank%s in stage %d\n", optim_rule_name(m.rule),
           m.ngroups, m.ngroups == 1 ? "" : "s", (long long)m.steps, (long long)m.skipped, m.ranks,
           m.ranks == 1 ? "" : "s", m.stage);
    printf("  %zu parameters:\n", m.nparams);
    for (i = 0; i < m.nparams; i++) {
        printf("    %-4zu %-32s %12zu elements, group %zu", i, m.params[i].name, m.params[i].n, m.params[i].group);
        if (m.params[i].shape_given) {
            printf(", shape [");
            for (k = 0; k < m.params[i].ndim; k++) printf("%s%lld", k ? ", " : "", (long long)m.params[i].dims[k]);
            printf("]");
        }
        printf("\n");
    }
    printf("  shards:\n");
    for (r = 0; r < m.ranks; r++) {
        struct stat sb;
        size_t elems = 0;
        for (k = 0; k < m.npieces[r]; k++) elems += m.pieces[r][k].b - m.pieces[r][k].a;
        snprintf(path, sizeof path, "%s/%s", dir, m.files[r]);
        if (stat(path, &sb) != 0) missing++;
        printf("    rank %-5d %-44s %6zu pieces, %12zu elements  %s\n", r, m.files[r], m.npieces[r], elems,
               stat(path, &sb) == 0 ? "" : "MISSING");
    }
    if (missing)
        printf("  INCOMPLETE: %zu shard file%s missing\n", missing, missing == 1 ? "" : "s");
    else
        printf("  complete\n");
    osc_manifest_free(&m);
    return missing ? 1 : 0;
}

static int info_main(int argc, char **argv)
{
    struct stat sb;
    optim_checkpoint_info info;
    optim_error err;
    if (argc != 2) {
        usage(stderr);
        return 2;
    }
    if (stat(argv[1], &sb) == 0 && S_ISDIR(sb.st_mode)) return info_dir(argv[1]);
    if (optim_checkpoint_info_read(argv[1], &info, &err) != OPTIM_OK) {
        fprintf(stderr, "optim ckpt info: %s\n", err.message);
        return 1;
    }
    printf("checkpoint %s (format %u, written by optim %s)\n  %s, %zu group%s, %zu parameters, %lld steps, %llu "
           "floats of state\n",
           argv[1], (unsigned)info.format, info.library, optim_rule_name(info.rule), info.groups,
           info.groups == 1 ? "" : "s", info.params, (long long)info.steps, (unsigned long long)info.state_floats);
    return 0;
}

static int merge_main(int argc, char **argv)
{
    optim_error err;
    optim_checkpoint_info info;
    if (argc != 3) {
        usage(stderr);
        return 2;
    }
    if (osc_merge(argv[1], argv[2], &err) != OPTIM_OK) {
        fprintf(stderr, "optim ckpt merge: %s\n", err.message);
        return 1;
    }
    if (optim_checkpoint_info_read(argv[2], &info, &err) == OPTIM_OK)
        printf("%s: %s, %zu parameters, %lld steps, %llu floats of state (optim_load reads it)\n", argv[2],
               optim_rule_name(info.rule), info.params, (long long)info.steps, (unsigned long long)info.state_floats);
    return 0;
}

int optim_ckpt_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "info") == 0) return info_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "merge") == 0) return merge_main(argc - 1, argv + 1);
    fprintf(stderr, "optim ckpt: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
