/* main.c: the `optim` command: dispatch to a subcommand. */
#include "cli.h"

#include "optim.h"

#include <stdio.h>
#include <string.h>

typedef struct subcommand {
    const char *name;
    int (*main)(int argc, char **argv);
    const char *summary;
} subcommand;

static int version_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("optim %s (default CPU path: %s)\n", optim_version_string(), optim_isa_name(optim_isa_default()));
    return 0;
}

/* One line per subcommand; its implementation lives in tools/<name>/. */
static const subcommand subcommands[] = {
    {"version", version_main, "print the version and the CPU path in use"},
    {"lab", optim_lab_main, "run the optimizer lab: experiments, figures and an HTML report"},
    {"bench", optim_bench_main, "time every rule against its memory-bandwidth ceiling (--torch: against torch.optim)"},
    {"ckpt", optim_ckpt_main, "what a checkpoint holds; merge a sharded one (optim_mpi_save) into one file"},
};

static void usage(FILE *f)
{
    size_t i;
    fprintf(f, "usage: optim <command> [options]   (optim <command> --help for its options)\n\ncommands:\n");
    for (i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        fprintf(f, "  %-10s %s\n", subcommands[i].name, subcommands[i].summary);
}

int main(int argc, char **argv)
{
    size_t i;
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        if (strcmp(argv[1], subcommands[i].name) == 0) return subcommands[i].main(argc - 1, argv + 1);
    fprintf(stderr, "optim: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
