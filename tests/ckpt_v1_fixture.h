/* ckpt_v1_fixture.h: a checkpoint in format version 1, as the library wrote
 * it before format 2 (shapes) existed, and the optimizer it was saved from.
 *
 * ckpt_v1_build() builds that optimizer: Adam with amsgrad, two groups (the
 * second with another lr and weight decay), a warm-up + cosine schedule on
 * group 0, the non-finite skip and fused clipping, params "w" (6 floats,
 * group 0) and "b" (3 floats, group 1), four steps of fixed gradients (the
 * third holds a NaN and is skipped), then every state slot overwritten with
 * exact values (slot s, element i: s + 1 + i / 8), so that what a checkpoint
 * of it holds depends on no floating-point kernel. ckpt_v1_bytes[] is
 * optim_save_buffer() of it by the format-1 library (commit 4a854f2), dumped
 * with `xxd -i`. The test loads these bytes into a fresh optimizer and
 * compares it, field by field through a new checkpoint, with a freshly built
 * ckpt_v1_build(): a file written by the old library still loads, exactly. */
#ifndef OPTIM_TEST_CKPT_V1_FIXTURE_H
#define OPTIM_TEST_CKPT_V1_FIXTURE_H

#include "optim.h"
#include "optim_schedule.h"

#include <math.h>

static float ckpt_v1_w[6], ckpt_v1_b[3], ckpt_v1_gw[6], ckpt_v1_gb[3];

/* with_state = 0: the same parameters and groups with default settings and no
 * steps (what a checkpoint is loaded into). */
static int ckpt_v1_build(optim **out, int with_state)
{
    optim *o = NULL;
    optim_hparams hp;
    optim_schedule *c = NULL, *s = NULL;
    int t, k;
    size_t i;
    *out = NULL;
    for (i = 0; i < 6; i++) ckpt_v1_w[i] = 0.5f - (float)i * 0.125f;
    for (i = 0; i < 3; i++) ckpt_v1_b[i] = 0.25f * (float)i;
    if (optim_create(&o, OPTIM_ADAM) != OPTIM_OK) return -1;
    optim_hparams_init(&hp, OPTIM_ADAM, NULL);
    if (with_state) hp.amsgrad = 1;
    if (optim_add_group(o, &hp, NULL) != OPTIM_OK) return -1;
    if (with_state) {
        hp.lr = 5e-4;
        hp.weight_decay = 0.01;
    }
    if (optim_add_group(o, &hp, NULL) != OPTIM_OK || optim_add_param(o, 0, ckpt_v1_w, ckpt_v1_gw, 6, "w", NULL) ||
        optim_add_param(o, 1, ckpt_v1_b, ckpt_v1_gb, 3, "b", NULL))
        return -1;
    if (with_state) {
        if (optim_schedule_cosine(&c, 20, 1e-4, NULL) || optim_schedule_warmup(&s, 3, c, NULL) ||
            optim_group_set_schedule(o, 0, s))
            return -1;
        optim_schedule_free(s);
        if (optim_set_nonfinite(o, OPTIM_NONFINITE_SKIP) || optim_set_clip_grad_norm(o, 1.0, 2.0)) return -1;
        for (t = 0; t < 4; t++) {
            for (i = 0; i < 6; i++) ckpt_v1_gw[i] = (float)(t + 1) * 0.25f - (float)i * 0.0625f;
            for (i = 0; i < 3; i++) ckpt_v1_gb[i] = (float)i * 0.5f - 0.5f;
            if (t == 2) ckpt_v1_gb[1] = NAN;
            if (optim_step(o) != OPTIM_OK) return -1;
        }
        for (k = 0; k < 2; k++) {
            size_t n = k ? 3 : 6;
            int s2;
            for (s2 = 0; s2 < optim_rule_slot_count(OPTIM_ADAM); s2++) {
                float *d = NULL;
                if (optim_state_slot(o, (size_t)k, s2, &d, NULL) != OPTIM_OK || !d) return -1;
                for (i = 0; i < n; i++) d[i] = (float)(s2 + 1) + (float)i / 8.0f;
            }
        }
    }
    *out = o;
    return 0;
}

#ifndef CKPT_V1_NO_BYTES
#  include "ckpt_v1_bytes.h"
#endif

#endif
