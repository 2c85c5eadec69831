/* ckpt_small.h: the small optimizer of the robustness tests (ckpt_robust.c,
 * ckpt_damage.c): Adam, two groups, three parameters "a" (8 floats, group 0),
 * "b" (3, group 1) and "c" (5, group 0); and the check that a load is refused
 * and changes nothing. */
#ifndef OPTIM_TEST_CKPT_SMALL_H
#define OPTIM_TEST_CKPT_SMALL_H

#include "optim.h"
#include "optim_checkpoint.h"

#define RB_PARAMS 3
extern const size_t rb_n[RB_PARAMS];
extern const char *const rb_names[RB_PARAMS];

typedef struct rb_run {
    optim *o;
    float w[RB_PARAMS][8], g[RB_PARAMS][8];
} rb_run;

/* options: 1 = amsgrad, a second lr and a warm-up + cosine schedule on group
 * 0; 0 = default settings. Then `steps` steps. 0 on success. */
int rb_build(rb_run *r, int options, int steps);
void rb_free(rb_run *r);

/* The message of the last refusal expect_refused saw. */
extern char rb_last_msg[OPTIM_ERRMSG_MAX];
/* Loading the size bytes at data into o is refused with `code` and a message
 * containing needle (NULL: any), and changes nothing. 0 if so. */
int expect_refused(optim *o, const void *data, size_t size, optim_match match, int code, const char *needle);

#endif
