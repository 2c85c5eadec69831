/* fuzz_ckpt_schedule.c: libFuzzer harness for the checkpoint's schedule
 * decoder alone (optim__ck_decode_schedule: one schedule tree, as a GRUP
 * section holds it, rebuilt through the public constructors). Whatever it
 * accepts is evaluated at steps next to its own integer arguments and at the
 * ends of int64_t, cloned, and the clone evaluated too, so that
 * UndefinedBehaviorSanitizer sees any overflow in the schedules' arithmetic
 * that the constructors let through. Built with clang
 * -fsanitize=fuzzer,address,undefined (scripts/fuzz.sh). */
#include "ckpt_format.h"
#include "schedule_internal.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static double eval_near(const optim_schedule *s, int64_t v)
{
    double acc = 0;
    int64_t d;
    for (d = -1; d <= 1; d++) {
        if ((d < 0 && v == 0) || (d > 0 && v == INT64_MAX)) continue; /* the harness must not overflow either */
        acc += optim_schedule_lr(s, 0.5, v + d);
    }
    return acc;
}

/* Every node's integer arguments and milestones, as steps. */
static double eval_tree(const optim_schedule *root, const optim_schedule *s)
{
    double acc = 0;
    size_t i;
    for (i = 0; i < OPTIM__SCHED_NI; i++)
        if (s->ints[i] >= 0) acc += eval_near(root, s->ints[i]);
    for (i = 0; i < s->nmilestones; i++)
        if (s->milestones[i] >= 0) acc += eval_near(root, s->milestones[i]);
    for (i = 0; i < s->nchildren; i++) acc += eval_tree(root, s->children[i]);
    return acc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    optim_schedule *s = NULL, *c;
    optim_error err;
    size_t used = 0;
    volatile double sink = 0;
    if (optim__ck_decode_schedule(data, size, &used, &s, NULL, &err) != OPTIM_OK) return 0;
    sink += eval_near(s, 0) + eval_near(s, INT64_MAX) + eval_near(s, INT64_MAX / 2) + eval_tree(s, s);
    c = optim_schedule_clone(s);
    if (c) sink += eval_tree(c, c);
    optim_schedule_free(c);
    optim_schedule_free(s);
    (void)sink;
    return 0;
}
