/* make_corpus.c: write the fuzzer's seed corpus into DIR: for every rule a
 * checkpoint of the fuzz optimizer (with and without options) after a few
 * steps. */
#include "fuzz_common.h"
#include "optim_checkpoint.h"

#include <stdio.h>

int main(int argc, char **argv)
{
    int r, opt, t;
    size_t k, i;
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    for (r = 1; r <= OPTIM_RULE_COUNT; r++)
        for (opt = 0; opt < 2; opt++) {
            char path[4096];
            optim *o = fuzz_optimizer((optim_rule)r, opt);
            if (!o) return 1;
            for (t = 0; t < 3; t++) {
                for (k = 0; k < 3; k++)
                    for (i = 0; i < fuzz_n[k]; i++) fuzz_g[k][i] = (float)(t + 1) * 0.1f - (float)i * 0.01f;
                if (optim_step(o) != OPTIM_OK) return 1;
            }
            snprintf(path, sizeof path, "%s/%s%s.ckpt", argv[1], optim_rule_name((optim_rule)r), opt ? "-options" : "");
            if (optim_save(o, path) != OPTIM_OK) {
                fprintf(stderr, "%s\n", optim_errmsg(o));
                return 1;
            }
            optim_free(o);
        }
    return 0;
}
