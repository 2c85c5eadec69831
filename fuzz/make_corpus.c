/* make_corpus.c: write the fuzzer's seed corpus into DIR: for every rule a
 * checkpoint of the fuzz optimizer (with and without options) after a few
 * steps; the format-1 checkpoint of the tests (tests/ckpt_v1_fixture.h); and
 * one with a section a reader may skip, before META. */
#include "fuzz_common.h"
#include "ckpt_util.h"
#include "ckpt_v1_fixture.h"
#include "optim_checkpoint.h"

#include <stdio.h>
#include <stdlib.h>

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
            if (r == OPTIM_ADAM && opt) { /* the same with a section to skip, before META */
                void *buf;
                size_t n, m;
                unsigned char *more;
                if (optim_save_buffer(o, &buf, &n) != OPTIM_OK) return 1;
                more = ckpt_insert_section((unsigned char *)buf, n, 0, "XTRA", 1, "later", 5, &m);
                snprintf(path, sizeof path, "%s/adam-options-skippable.ckpt", argv[1]);
                if (!more || ckpt_write_file(path, more, m) != 0) return 1;
                free(more);
                free(buf);
            }
            optim_free(o);
        }
    {
        char path[4096];
        snprintf(path, sizeof path, "%s/format1-adam.ckpt", argv[1]);
        if (ckpt_write_file(path, ckpt_v1_bytes, ckpt_v1_len) != 0) return 1;
    }
    return 0;
}
