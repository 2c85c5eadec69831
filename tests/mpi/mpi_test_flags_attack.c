/* mpi_test_flags_attack.c: what the core took after liboptim_mpi's element-type change (the q8 and prec
 * merges): OPTIM_INT8_BLOCK state, OPTIM_PARAM_MASTER, OPTIM_PARAM_STOCHASTIC_ROUNDING, loss scaling.
 * Each must give one process's bits (liboptim_mpi carries them all since issue 12's mpiprec branch; the
 * thorough tests are mpi_test_prec.c's), never be dropped silently; a flag on one rank only is refused by name.
 *   mpirun -np 2 mpi_test flags-attack */
#include "mpi_test.h"
#include "optim_precision.h"
#include "optim_ema.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FN 20001

static void bf_fill(uint16_t *p, size_t n, int salt)
{
    size_t j;
    for (j = 0; j < n; j++) {
        float f = (float)((double)((j * 2654435761u + (unsigned)salt * 97u) % 2001u) / 1000.0 - 1.0);
        uint32_t u;
        memcpy(&u, &f, 4);
        p[j] = (uint16_t)(u >> 16);
    }
}

/* case: 0 INT8_BLOCK state (float32 param), 1 MASTER (bf16 param), 2 STOCHASTIC_ROUNDING (bf16 param),
 * 3 loss scaling (float32); 6 the master flag on rank 0 only (must be refused, OPTIM_EMISMATCH); 4 and 5 controls without any of them (must pass: the harness is sound);
 * 7 an EMA of the weights (include/optim_ema.h; the review of the ema merge: the local optimizers had none, so the
 * parameters matched one process's bits while the average was silently dropped): must be refused naming the EMA.
 * 8 Adafactor with a shape (3 x 6667), 9 Adafactor without one (the review of the Adafactor merge: the factors hold
 * 3 and 6667 elements, the configuration hash read 20001 of each, past their end; without a shape, accepted and
 * refused at the first step): both must be refused by optim_mpi_create naming adafactor.
 * 10 LAMB (per-tensor trust ratios; the review of i12rest, whose hooks gained whole_tensors for optim.torch
 * under torch's ZeroRedundancyOptimizer): accepted, and its first step refused on every rank naming the
 * per-tensor reductions, since liboptim_mpi's local optimizers hold slices (whole_tensors 0). */
static void one_case(int cs, int stage)
{
    static const char *names[] = {"int8-block state", "fp32 master", "stochastic rounding", "loss scaling", "control (float32, no flags)", "control (bfloat16, bf16 state, no flags)", "fp32 master on rank 0 only", "EMA of the weights", "adafactor (3 x 6667)", "adafactor (no shape)", "lamb (per-tensor reductions)"};
    optim *opt = NULL, *ref = NULL;
    optim_mpi *d = NULL;
    optim_error err;
    optim_hparams hp;
    unsigned char *w = calloc(FN, 4), *g = calloc(FN, 4), *rw = calloc(FN, 4), *rg = calloc(FN, 4);
    int rc, o, t;
    optim_mpi_options mo;
    optim_mpi_options_init(&mo);
    mo.bucket_bytes = 8;
    mo.timeout = 60;
    for (o = 0; o < 2; o++) {
        optim **pp = o ? &ref : &opt;
        unsigned char *pw = o ? rw : w, *pg = o ? rg : g;
        optim_dtype pdt = cs == 1 || cs == 2 || cs == 5 || cs == 6 ? OPTIM_BFLOAT16 : OPTIM_FLOAT32;
        optim_dtype sdt = cs == 0 ? OPTIM_INT8_BLOCK : cs == 2 || cs == 5 ? OPTIM_BFLOAT16 : OPTIM_FLOAT32;
        unsigned flags = cs == 1 || (cs == 6 && g_rank == 0 && o == 0) ? OPTIM_PARAM_MASTER : cs == 2 ? OPTIM_PARAM_STOCHASTIC_ROUNDING : 0;
        const int rule = cs == 8 || cs == 9 ? OPTIM_ADAFACTOR : cs == 10 ? OPTIM_LAMB : OPTIM_ADAM;
        must(optim_create(pp, rule), "optim_create", "");
        optim_hparams_init(&hp, rule, NULL);
        hp.lr = 1e-2;
        must(optim_add_group(*pp, &hp, NULL), "add_group", optim_errmsg(*pp));
        if (pdt == OPTIM_BFLOAT16) bf_fill((uint16_t *)(void *)pw, FN, 1);
        else {
            size_t j;
            for (j = 0; j < FN; j++) ((float *)(void *)pw)[j] = (float)j / FN - 0.5f;
        }
        must(optim_add_param_ex(*pp, 0, pw, pdt, pg, pdt, FN, sdt, flags, "p", NULL), "add_param_ex",
             optim_errmsg(*pp));
        if (cs == 2) must(optim_set_seed(*pp, 1234), "seed", optim_errmsg(*pp));
        if (cs == 3) {
            optim_loss_scale ls;
            optim_loss_scale_defaults(&ls);
            must(optim_set_loss_scale(*pp, &ls), "loss scale", optim_errmsg(*pp));
        }
        if (cs == 7) must(optim_set_ema(*pp, 0.9, 0), "set_ema", optim_errmsg(*pp));
        if (cs == 8) {
            const int64_t dims[2] = {3, FN / 3};
            must(optim_param_set_shape(*pp, 0, 2, dims), "set_shape", optim_errmsg(*pp));
        }
    }
    rc = optim_mpi_create_with(&d, opt, MPI_COMM_WORLD, stage, &mo, &err);
    /* Case 6 (a flag on one rank) must be refused on every rank, naming the setting; case 7 (an EMA on the
     * template) naming optim_set_ema; the others accepted. */
    if (cs == 6 || cs == 7 || cs == 8 || cs == 9)
        CHECK(rc != OPTIM_OK && (cs == 8 || cs == 9 ? rc == OPTIM_EUNSUPPORTED && strstr(err.message, "adafactor") != NULL
                                 : cs == 7 ? strstr(err.message, "optim_set_ema") != NULL
                                         : rc == OPTIM_EMISMATCH && strstr(err.message, "storage flags") != NULL),
              "%s, stage %d: %s (%s): must be refused by name", names[cs], stage, optim_err_name(rc),
              rc ? err.message : "accepted");
    else
        CHECK(rc == OPTIM_OK, "%s, stage %d: refused: %s", names[cs], stage, err.message);
    if (rc != OPTIM_OK) {
        if (g_rank == 0) printf("flags-attack: %s, stage %d: refused: %s: %s\n", names[cs], stage, optim_err_name(rc),
                                err.message);
    } else if (cs == 10) {
        size_t j;
        for (j = 0; j < FN; j++) ((float *)(void *)g)[j] = (float)((j * 7) % 13) - 6.0f;
        if (stage == 2) must(optim_mpi_grad_ready(d, 0), "grad_ready", optim_mpi_errmsg(d));
        rc = optim_mpi_step(d);
        CHECK(rc == OPTIM_EUNSUPPORTED && strstr(optim_mpi_errmsg(d), "per-tensor reductions") != NULL,
              "%s, stage %d: its step must be refused naming the per-tensor reductions: %s (%s)", names[cs], stage,
              optim_err_name(rc), rc ? optim_mpi_errmsg(d) : "stepped");
        if (g_rank == 0)
            printf("flags-attack: %s, stage %d: step refused: %s: %s\n", names[cs], stage, optim_err_name(rc),
                   optim_mpi_errmsg(d));
        optim_mpi_free(d);
    } else {
        long diff = 0;
        size_t sz = cs == 1 || cs == 2 || cs == 5 || cs == 6 ? 2 : 4, j;
        for (t = 0; t < 4; t++) {
            /* every rank the same gradient: the average is that gradient */
            if (sz == 2) {
                bf_fill((uint16_t *)(void *)g, FN, 10 + t);
                bf_fill((uint16_t *)(void *)rg, FN, 10 + t);
            } else {
                for (j = 0; j < FN; j++)
                    ((float *)(void *)g)[j] = ((float *)(void *)rg)[j] = (float)((j * 7 + (size_t)t) % 13) - 6.0f;
            }
            if (stage == 2) must(optim_mpi_grad_ready(d, 0), "grad_ready", optim_mpi_errmsg(d));
            must(optim_mpi_step(d), "optim_mpi_step", optim_mpi_errmsg(d));
            must(optim_step(ref), "optim_step", optim_errmsg(ref));
        }
        for (j = 0; j < FN; j++) diff += memcmp(w + j * sz, rw + j * sz, sz) != 0;
        CHECK(diff == 0, "%s, stage %d: accepted, and %ld of %d parameter elements differ from one process's",
              names[cs], stage, diff, FN);
        if (g_rank == 0)
            printf("flags-attack: %s, stage %d: accepted; %ld of %d elements differ from one process\n", names[cs],
                   stage, diff, FN);
        optim_mpi_free(d);
    }
    optim_free(opt);
    optim_free(ref);
    free(w);
    free(g);
    free(rw);
    free(rg);
}

int cmd_flags_attack(void)
{
    int cs, st;
    for (cs = 0; cs < 11; cs++)
        for (st = 0; st <= 2; st++) one_case(cs, st);
    return 0;
}
