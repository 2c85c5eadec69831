/* cli.h: what the subcommands of the `optim` command share. Each subcommand
 * lives in its own directory (tools/lab/, tools/bench/, ...) and exposes one
 * entry point, listed in main.c. Programs here use only the public headers. */
#ifndef OPTIM_CLI_H
#define OPTIM_CLI_H

/* Entry points: argv[0] is the subcommand's name; return the exit status. */
int optim_lab_main(int argc, char **argv);
int optim_bench_main(int argc, char **argv);
int optim_ckpt_main(int argc, char **argv);

#endif
