/* make_corpus.c: write the fuzzers' seed corpora. Into DIR (the whole-load
 * and decoder harnesses): for every rule a checkpoint of the fuzz optimizer
 * (with and without options) after a few steps (the schedule-free rules
 * also in eval mode; Muon where liboptim_muon is built); the int8 state;
 * the format-1 checkpoint of
 * the tests (tests/ckpt_v1_fixture.h); and one with a section a reader may
 * skip, before META. Into SCHED_DIR (the schedule decoder's harness), if
 * given: every kind of schedule and the composites, as a checkpoint stores
 * them (cut out of a GRUP section). */
#include "fuzz_common.h"
#include "ckpt_util.h"
#include "ckpt_v1_fixture.h"
#include "optim_checkpoint.h"
#include "optim_schedule.h"
#include "optim_schedule_free.h"
#include "optim_ema.h"
#include "optim_sparse.h"

#include <stdio.h>
#include <stdlib.h>

/* The stored bytes of schedule s: a checkpoint of an optimizer holding it on
 * group 0, its GRUP 0 cut after the hyperparameters, schedule step and flag. */
static int write_schedule(const char *dir, int k, optim_schedule *s)
{
    static float w[2], g[2];
    optim *o = NULL;
    optim_hparams hp;
    void *buf = NULL;
    size_t n, off, len, at;
    char path[4096];
    int rc = 1;
    optim_hparams_init(&hp, OPTIM_SGD, NULL);
    if (!s || optim_create(&o, OPTIM_SGD) || optim_add_group(o, &hp, NULL) || optim_add_param(o, 0, w, g, 2, "w", NULL) ||
        optim_group_set_schedule(o, 0, s) || optim_save_buffer(o, &buf, &n))
        goto out;
    off = ckpt_section_offset((unsigned char *)buf, n, 1);
    len = (size_t)ckpt_get_le((unsigned char *)buf + off + 8, 8);
    at = off + 16 + 8 + 12 * (size_t)ckpt_get_le((unsigned char *)buf + off + 16 + 4, 4) + 8 + 1;
    snprintf(path, sizeof path, "%s/schedule-%02d.bin", dir, k);
    rc = ckpt_write_file(path, (unsigned char *)buf + at, off + 16 + len - at) != 0;
out:
    free(buf);
    optim_free(o);
    optim_schedule_free(s);
    return rc;
}

static int write_schedules(const char *dir)
{
    static const int64_t miles[] = {30, 10, 30};
    optim_schedule *s[16] = {NULL}, *t[4] = {NULL}, *wc = NULL;
    int k = 0, bad = 0;
    optim_schedule_constant(&s[k++], 0.3, 40, NULL);
    optim_schedule_step(&s[k++], 25, 0.7, NULL);
    optim_schedule_multistep(&s[k++], miles, 3, 0.5, NULL);
    optim_schedule_exponential(&s[k++], 0.995, NULL);
    optim_schedule_linear(&s[k++], 0.1, 1.0, 300, NULL);
    optim_schedule_polynomial(&s[k++], 500, 2.0, NULL);
    optim_schedule_cosine(&s[k++], 250, 1e-4, NULL);
    optim_schedule_cosine_restarts(&s[k++], 50, 2, 1e-5, NULL);
    optim_schedule_one_cycle(&s[k++], 0.1, 1000, 0.3, 1, 25, 1e4, 1, NULL);
    optim_schedule_cyclic(&s[k++], 1e-3, 1e-2, 100, 40, OPTIM_CYCLIC_TRIANGULAR2, 1.0, NULL);
    optim_schedule_cyclic(&s[k++], 1e-3, 1e-2, 100, 0, OPTIM_CYCLIC_EXP_RANGE, 0.999, NULL);
    optim_schedule_wsd(&s[k++], 50, 400, 300, 1e-5, 1, NULL);
    optim_schedule_cosine(&t[0], 900, 0.0, NULL);
    optim_schedule_warmup(&s[k++], 100, t[0], NULL);
    optim_schedule_exponential(&t[1], 0.99, NULL);
    optim_schedule_step(&t[2], 10, 0.5, NULL);
    optim_schedule_cosine(&t[3], 100, 0.0, NULL);
    optim_schedule_warmup(&wc, 5, t[3], NULL);
    optim_schedule_sequential(&s[k++], (optim_schedule *const[]){t[1], t[2], wc}, 3, (const int64_t[]){77, 200}, NULL);
    while (k-- > 0) bad |= write_schedule(dir, k, s[k]);
    return bad;
}

int main(int argc, char **argv)
{
    int r, opt, t;
    size_t k, i;
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: %s DIR [SCHED_DIR]\n", argv[0]);
        return 2;
    }
    if (argc == 3 && write_schedules(argv[2])) return 1;
    for (r = 1; r <= OPTIM_RULE_COUNT; r++)
        /* Not for a value without a rule, nor SparseAdam (sparse steps only). */
        for (opt = 0; opt < 2 && optim_rule_name((optim_rule)r) && optim_rule_sparse((optim_rule)r) != OPTIM_SPARSE_ONLY;
             opt++) {
            char path[4096];
            optim *o;
#ifndef OPTIM_FUZZ_MUON
            if (r == OPTIM_MUON) continue; /* its steps need liboptim_muon (not built: no OpenBLAS) */
#endif
            o = fuzz_optimizer((optim_rule)r, opt);
            if (!o) return 1;
            for (t = 0; t < 3; t++) {
                for (k = 0; k < 3; k++)
                    for (i = 0; i < fuzz_n[k]; i++) fuzz_g[k][i] = (float)(t + 1) * 0.1f - (float)i * 0.01f;
                if (optim_step(o) != OPTIM_OK) {
                    fprintf(stderr, "%s: %s\n", optim_rule_name((optim_rule)r), optim_errmsg(o));
                    optim_free(o);
                    return 1;
                }
            }
            snprintf(path, sizeof path, "%s/%s%s.ckpt", argv[1], optim_rule_name((optim_rule)r), opt ? "-options" : "");
            if (optim_save(o, path) != OPTIM_OK) {
                fprintf(stderr, "%s\n", optim_errmsg(o));
                optim_free(o);
                return 1;
            }
            if (r == OPTIM_SGD_SCHEDULE_FREE || r == OPTIM_ADAMW_SCHEDULE_FREE) {
                /* and in eval mode (SFRE's mode 1, the parameters at x) */
                snprintf(path, sizeof path, "%s/%s%s-eval.ckpt", argv[1], optim_rule_name((optim_rule)r),
                         opt ? "-options" : "");
                if (optim_schedule_free_eval(o) != OPTIM_OK || optim_save(o, path) != OPTIM_OK) {
                    fprintf(stderr, "%s\n", optim_errmsg(o));
                    return 1;
                }
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
            if (r == OPTIM_ADAM && opt) { /* an EMAS section (optim_ema.h), and one saved while swapped */
                snprintf(path, sizeof path, "%s/adam-options-ema.ckpt", argv[1]);
                if (optim_set_ema(o, 0.9, 1) != OPTIM_OK || optim_step(o) != OPTIM_OK || optim_save(o, path) != OPTIM_OK)
                    return 1;
                snprintf(path, sizeof path, "%s/adam-options-ema-swapped.ckpt", argv[1]);
                if (optim_ema_swap(o) != OPTIM_OK || optim_save(o, path) != OPTIM_OK || optim_ema_swap(o) != OPTIM_OK)
                    return 1;
            }
            optim_free(o);
        }
    {
        /* int8_block state (codes, then block scales), 300 elements: a whole block and a short one. */
        static float w[300], g[300];
        char path[4096];
        optim *o = NULL;
        optim_hparams hp;
        optim_hparams_init(&hp, OPTIM_ADAM, NULL);
        hp.amsgrad = 1;
        for (i = 0; i < 300; i++) g[i] = (float)i * 0.01f - 1.0f;
        if (optim_create(&o, OPTIM_ADAM) || optim_add_group(o, &hp, NULL) ||
            optim_add_param_ex(o, 0, w, OPTIM_FLOAT32, g, OPTIM_FLOAT32, 300, OPTIM_INT8_BLOCK, 0, "w", NULL) ||
            optim_step(o))
            return 1;
        snprintf(path, sizeof path, "%s/adam-int8-state.ckpt", argv[1]);
        if (optim_save(o, path) != OPTIM_OK) return 1;
        optim_free(o);
    }
    {
        char path[4096];
        snprintf(path, sizeof path, "%s/format1-adam.ckpt", argv[1]);
        if (ckpt_write_file(path, ckpt_v1_bytes, ckpt_v1_len) != 0) return 1;
    }
    return 0;
}
