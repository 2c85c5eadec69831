/* lab_muon.c: Muon in the lab (optim lab modern's "muon" row): Keller
 * Jordan's MuonWithAuxAdam recipe as a create hook of lab_opt_hooks, two
 * optimizer objects (an object has one rule): Muon over the matrices, AdamW
 * over the rest. Muon's Newton-Schulz products are liboptim_muon's (OpenBLAS),
 * which tools/CMakeLists.txt links when CMake's OPTIM_MUON is on
 * (OPTIM_LAB_MUON); without it lab_muon_available() says 0 and optim lab
 * modern leaves the row out, saying so. */
#include "lab.h"

#include <stdlib.h>
#include <string.h>

#if OPTIM_LAB_MUON
#include "optim_muon.h"
#endif

int lab_muon_available(void)
{
#if OPTIM_LAB_MUON
    return 1;
#else
    return 0;
#endif
}

#if OPTIM_LAB_MUON
/* The auxiliary AdamW of the reference's MuonWithAuxAdam (its use_muon=False defaults). */
static optim *aux_adamw(void)
{
    optim *o = NULL;
    optim_hparams hp;
    optim_error err;
    lab_check(optim_hparams_init(&hp, OPTIM_ADAMW, &err), "optim_hparams_init", err.message);
    hp.lr = LAB_MUON_AUX_LR;
    hp.beta1 = LAB_MUON_AUX_BETA1;
    hp.beta2 = LAB_MUON_AUX_BETA2;
    hp.eps = LAB_MUON_AUX_EPS;
    hp.weight_decay = LAB_MUON_AUX_WEIGHT_DECAY;
    lab_check(optim_hparams_check(&hp, &err), "optim_hparams_check", err.message);
    lab_check(optim_create(&o, OPTIM_ADAMW), "optim_create", NULL);
    lab_check(optim_add_group(o, &hp, NULL), "optim_add_group", optim_errmsg(o));
    return o;
}
#endif

void lab_muon_create(lab_opt *o, const optim_hparams *hp, const lab_tensor *t, size_t n, int vectors_no_decay)
{
#if OPTIM_LAB_MUON
    optim *muon = NULL, *adam = NULL;
    size_t i, nm = 0, matrices = 0;
    (void)vectors_no_decay; /* the vectors are AdamW's, with the reference's weight decay 0 */
    for (i = 0; i < n; i++) matrices += t[i].rows > 1;
    lab_check(optim_create(&muon, OPTIM_MUON), "optim_create", NULL);
    lab_check(optim_muon_attach(muon), "optim_muon_attach", optim_errmsg(muon));
    lab_check(optim_add_group(muon, hp, NULL), "optim_add_group", optim_errmsg(muon));
    for (i = 0; i < n; i++) {
        /* No matrix at all: the one point of a surface, Muon's as a 1 x 2 matrix (lab.h). */
        int is_muon = matrices ? t[i].rows > 1 : 1;
        if (is_muon) {
            const int64_t dims[2] = {(int64_t)t[i].rows, (int64_t)t[i].cols};
            lab_check(optim_add_param(muon, 0, t[i].p, t[i].g, t[i].rows * t[i].cols, t[i].name, NULL),
                      "optim_add_param", optim_errmsg(muon));
            lab_check(optim_param_set_shape(muon, nm++, 2, dims), "optim_param_set_shape", optim_errmsg(muon));
        } else {
            if (!adam) adam = aux_adamw();
            lab_check(optim_add_param(adam, 0, t[i].p, t[i].g, t[i].rows * t[i].cols, t[i].name, NULL),
                      "optim_add_param", optim_errmsg(adam));
        }
    }
    /* One thread, as lab_opt_create: the models are small (OpenBLAS has the cores). */
    lab_check(optim_set_threads(muon, 1), "optim_set_threads", optim_errmsg(muon));
    memset(o, 0, sizeof *o);
    o->part[o->nparts++] = muon;
    if (adam) {
        lab_check(optim_set_threads(adam, 1), "optim_set_threads", optim_errmsg(adam));
        o->part[o->nparts++] = adam;
    }
#else
    (void)o;
    (void)hp;
    (void)t;
    (void)n;
    (void)vectors_no_decay;
    fprintf(stderr, "\noptim lab: Muon needs liboptim_muon: this optim was built with CMake OPTIM_MUON=OFF\n");
    exit(1);
#endif
}
