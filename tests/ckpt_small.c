/* ckpt_small.c: see ckpt_small.h. */
#include "ckpt_small.h"
#include "optim_checkpoint.h"
#include "optim_schedule.h"
#include "test.h"

/* ---- A small optimizer: Adam with amsgrad, two groups, a schedule, three params --- */

const size_t rb_n[RB_PARAMS] = {8, 3, 5};
const char *const rb_names[RB_PARAMS] = {"a", "b", "c"};

/* options: 1 = amsgrad, a schedule and `steps` steps; 0 = default settings. */
int rb_build(rb_run *r, int options, int steps)
{
    optim_hparams hp;
    size_t k, i;
    int t;
    memset(r, 0, sizeof *r);
    ASSERT_OK(optim_create(&r->o, OPTIM_ADAM));
    optim_hparams_init(&hp, OPTIM_ADAM, NULL);
    if (options) hp.amsgrad = 1;
    ASSERT_OPT_OK(r->o, optim_add_group(r->o, &hp, NULL));
    if (options) hp.lr = 3e-4;
    ASSERT_OPT_OK(r->o, optim_add_group(r->o, &hp, NULL));
    for (k = 0; k < RB_PARAMS; k++) {
        for (i = 0; i < rb_n[k]; i++) r->w[k][i] = (float)(k + 1) * 0.1f - (float)i * 0.01f;
        ASSERT_OPT_OK(r->o, optim_add_param(r->o, k == 1, r->w[k], r->g[k], rb_n[k], rb_names[k], NULL));
    }
    if (options) {
        optim_schedule *c = NULL, *s = NULL;
        ASSERT_OK(optim_schedule_cosine(&c, 30, 1e-5, NULL));
        ASSERT_OK(optim_schedule_warmup(&s, 4, c, NULL));
        ASSERT_OPT_OK(r->o, optim_group_set_schedule(r->o, 0, s));
        optim_schedule_free(s);
    }
    for (t = 0; t < steps; t++) {
        for (k = 0; k < RB_PARAMS; k++)
            for (i = 0; i < rb_n[k]; i++) r->g[k][i] = (float)sin(0.3 * t + (double)(k * 8 + i));
        ASSERT_OPT_OK(r->o, optim_step(r->o));
    }
    return 0;
}

void rb_free(rb_run *r)
{
    optim_free(r->o);
    r->o = NULL;
}

char rb_last_msg[OPTIM_ERRMSG_MAX];

/* A refused load, with its code and a phrase of its message, that changes nothing. */
int expect_refused(optim *o, const void *data, size_t size, optim_match match, int code, const char *needle)
{
    void *before = NULL, *after = NULL;
    size_t nb, na;
    int rc;
    ASSERT_OPT_OK(o, optim_save_buffer(o, &before, &nb));
    rc = optim_load_buffer(o, data, size, match, "ck");
    if (rc != code)
        FAIL("load returned %s, expected %s (%s); expected message: %s", optim_err_name(rc), optim_err_name(code),
             optim_errmsg(o), needle);
    if (needle && !strstr(optim_errmsg(o), needle))
        FAIL("message \"%s\" does not mention \"%s\"", optim_errmsg(o), needle);
    snprintf(rb_last_msg, sizeof rb_last_msg, "%s", optim_errmsg(o));
    ASSERT_OPT_OK(o, optim_save_buffer(o, &after, &na));
    if (na != nb || memcmp(before, after, nb) != 0) FAIL("a refused load (%s) changed the optimizer", needle);
    free(before);
    free(after);
    return 0;
}

