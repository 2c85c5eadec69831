/* ckpt_limits.c: every save that succeeds loads. Each limit of the format
 * (ckpt_format.h) is checked when the object is built, with the value the
 * reader accepts: at the limit a save loads back to the same state; one past
 * it the build call refuses (naming the limit and the value) and changes
 * nothing; and a file one past it, made by hand (white-box: the writer is
 * handed an object the builders would have refused), is refused by the
 * reader naming the same limit. */
#include "ckpt_util.h"
#include "optim_checkpoint.h"
#include "optim_internal.h"
#include "optim_schedule.h"
#include "schedule_internal.h"
#include "test.h"

/* An Adam optimizer over one parameter of n floats, named name. */
typedef struct lim_run {
    optim *o;
    float w[8], g[8];
} lim_run;

static int lim_build(lim_run *r, const char *name)
{
    optim_hparams hp;
    int i;
    memset(r, 0, sizeof *r);
    ASSERT_OK(optim_create(&r->o, OPTIM_ADAM));
    optim_hparams_init(&hp, OPTIM_ADAM, NULL);
    ASSERT_OPT_OK(r->o, optim_add_group(r->o, &hp, NULL));
    for (i = 0; i < 8; i++) {
        r->w[i] = 0.1f * (float)i;
        r->g[i] = 0.5f - 0.1f * (float)i;
    }
    ASSERT_OPT_OK(r->o, optim_add_param(r->o, 0, r->w, r->g, 8, name, NULL));
    ASSERT_OPT_OK(r->o, optim_step(r->o));
    return 0;
}

/* Save src to memory and load it into dst, by name: OK, same state. */
static int lim_round_trip(optim *src, optim *dst)
{
    void *buf = NULL;
    size_t size;
    ASSERT_OPT_OK(src, optim_save_buffer(src, &buf, &size));
    ASSERT_OPT_OK(dst, optim_load_buffer(dst, buf, size, OPTIM_MATCH_NAME, "limit"));
    if (!ckpt_same_state(src, dst)) FAIL("the state loaded differs from the state saved");
    free(buf);
    return 0;
}

/* The save of src loads into dst refused with EFORMAT naming needle. */
static int lim_refused(optim *src, optim *dst, const char *needle)
{
    void *buf = NULL;
    size_t size;
    ASSERT_OPT_OK(src, optim_save_buffer(src, &buf, &size));
    ASSERT_ERR(optim_load_buffer(dst, buf, size, OPTIM_MATCH_POSITION, "over"), OPTIM_EFORMAT, optim_errmsg(dst),
               needle);
    printf("  reader: %s\n", optim_errmsg(dst));
    free(buf);
    return 0;
}

TEST_IMPL(ckpt_limit_name)
{
    char *name = (char *)malloc(OPTIM_MAX_NAME + 2);
    lim_run a, b;
    float w[2], g[2];
    char dir[64], path[128];
    ASSERT(name);
    memset(name, 'n', OPTIM_MAX_NAME);
    name[OPTIM_MAX_NAME] = '\0';
    /* At the limit: saved and loaded back, in memory and through a file. */
    if (lim_build(&a, name) || lim_build(&b, name)) return 1;
    ASSERT_OPT_OK(b.o, optim_step(b.o));
    if (lim_round_trip(a.o, b.o)) return 1;
    if (!ckpt_scratch(dir, sizeof dir)) FAIL("mkdtemp");
    snprintf(path, sizeof path, "%s/name.ckpt", dir);
    ASSERT_OPT_OK(a.o, optim_step(a.o));
    ASSERT_OPT_OK(a.o, optim_save(a.o, path));
    ASSERT_OPT_OK(b.o, optim_load(b.o, path, OPTIM_MATCH_NAME));
    ASSERT(ckpt_same_state(a.o, b.o));
    ckpt_remove_tree(dir);
    /* One past it: refused, naming the limit and the length; nothing added. */
    name[OPTIM_MAX_NAME] = 'n';
    name[OPTIM_MAX_NAME + 1] = '\0';
    ASSERT_ERR(optim_add_param(a.o, 0, w, g, 2, name, NULL), OPTIM_EINVAL, optim_errmsg(a.o),
               "optim_add_param: the name of 4097 bytes is longer than OPTIM_MAX_NAME = 4096");
    ASSERT_INT(optim_param_count(a.o), ==, 1);
    /* A file holding one (the writer handed a name the builder refuses) is refused by the reader. */
    {
        char *keep = a.o->params[0].name;
        a.o->params[0].name = name;
        if (lim_refused(a.o, b.o, "name of 4097 bytes (at most OPTIM_MAX_NAME = 4096")) return 1;
        a.o->params[0].name = keep;
    }
    optim_free(a.o);
    optim_free(b.o);
    free(name);
    return 0;
}

/* n within SIZE_MAX / 4 (its state must fit in memory; the reader bounds it
 * so): one past is refused before anything is looked at. */
TEST_IMPL(ckpt_limit_numel)
{
    lim_run a;
    float *fake = (float *)(uintptr_t)64; /* never read: refused first */
    char msg[128];
    const char *needle = msg;
    if (lim_build(&a, "w")) return 1;
    snprintf(msg, sizeof msg, "n = %zu floats is more than memory can hold", SIZE_MAX / 4 + 1);
    ASSERT_ERR(optim_add_param(a.o, 0, fake, NULL, SIZE_MAX / 4 + 1, "huge", NULL), OPTIM_EINVAL, optim_errmsg(a.o),
               needle);
    ASSERT_INT(optim_param_count(a.o), ==, 1);
    optim_free(a.o);
    return 0;
}

/* Groups and sections are u32 in the file: the builders refuse a group or a
 * parameter past them (white-box: the counts are made to look that large; a
 * real optimizer of 2^32 groups does not fit in memory, so the round trip at
 * this limit cannot be run). */
TEST_IMPL(ckpt_limit_groups_sections)
{
    lim_run a;
    optim_hparams hp;
    float w[2], g[2];
    size_t keep_groups, keep_params;
    if (lim_build(&a, "w")) return 1;
    optim_hparams_init(&hp, OPTIM_ADAM, NULL);
    keep_groups = a.o->ngroups;
    keep_params = a.o->nparams;
    a.o->ngroups = (size_t)UINT32_MAX; /* the next would be group 2^32 */
    a.o->nparams = 0;
    ASSERT_ERR(optim_add_group(a.o, &hp, NULL), OPTIM_EINVAL, optim_errmsg(a.o),
               "optim_add_group: group 4294967295 would be one more than a checkpoint holds (4294967295 groups)");
    ASSERT_INT(a.o->ngroups, ==, (size_t)UINT32_MAX);
    /* The margin is META, PREC and SFRE (schedule-free rules): 3. */
    a.o->ngroups = (size_t)UINT32_MAX - 2; /* a group fits, but with META and a param the sections would not */
    a.o->nparams = 1;
    ASSERT_ERR(optim_add_group(a.o, &hp, NULL), OPTIM_EINVAL, optim_errmsg(a.o),
               "group 4294967293 would make 4294967297 checkpoint sections, more than a checkpoint holds (4294967295)");
    a.o->ngroups = 1;
    a.o->nparams = (size_t)UINT32_MAX - 3; /* META + 1 group + 2^32 - 3 params + PREC + SFRE: one more is too many */
    ASSERT_ERR(optim_add_param(a.o, 0, w, g, 2, "x", NULL), OPTIM_EINVAL, optim_errmsg(a.o),
               "optim_add_param: param 4294967292 would make 4294967296 checkpoint sections, more than a checkpoint "
               "holds (4294967295)");
    ASSERT_INT(a.o->nparams, ==, (size_t)UINT32_MAX - 3);
    a.o->ngroups = keep_groups;
    a.o->nparams = keep_params;
    ASSERT_OPT_OK(a.o, optim_add_group(a.o, &hp, NULL)); /* and below them, as usual */
    ASSERT_OPT_OK(a.o, optim_add_param(a.o, 1, w, g, 2, "x", NULL));
    optim_free(a.o);
    return 0;
}

/* A chain of `depth` warm-ups over an exponential: nesting depth `depth`. */
static optim_schedule *lim_chain(int depth)
{
    optim_schedule *s = NULL;
    int k;
    if (optim_schedule_exponential(&s, 0.99, NULL) != OPTIM_OK) return NULL;
    for (k = 0; k < depth && s; k++) {
        optim_schedule *w = NULL;
        if (optim_schedule_warmup(&w, k + 1, s, NULL) != OPTIM_OK) return NULL;
        s = w;
    }
    return s;
}

/* Attach s to a's group 0 and b's, save a, load into b: the same state and lrs. */
static int lim_schedule_round_trip(lim_run *a, lim_run *b, const optim_schedule *s)
{
    double la, lb;
    int64_t t;
    ASSERT_OPT_OK(a->o, optim_group_set_schedule(a->o, 0, s));
    ASSERT_OPT_OK(a->o, optim_group_set_schedule_step(a->o, 0, 777));
    ASSERT_OPT_OK(b->o, optim_group_set_schedule(b->o, 0, NULL));
    if (lim_round_trip(a->o, b->o)) return 1;
    for (t = 0; t < 3; t++) {
        ASSERT_OK(optim_group_current_lr(a->o, 0, &la));
        ASSERT_OK(optim_group_current_lr(b->o, 0, &lb));
        ASSERT(la == lb);
        ASSERT_OPT_OK(a->o, optim_step(a->o));
        ASSERT_OPT_OK(b->o, optim_step(b->o));
    }
    return 0;
}

TEST_IMPL(ckpt_limit_schedule_depth)
{
    lim_run a, b;
    optim_schedule *deep = lim_chain(OPTIM_SCHEDULE_MAX_DEPTH), *over = NULL, *one = NULL, *seq = NULL;
    optim_schedule *kids[2];
    optim_error err;
    const int64_t at[1] = {5};
    ASSERT(deep);
    if (lim_build(&a, "w") || lim_build(&b, "w")) return 1;
    /* At the limit: 32 warm-ups deep. */
    if (lim_schedule_round_trip(&a, &b, deep)) return 1;
    /* One past, by a warm-up or a sequential: refused, naming the limit and the depth; the argument freed. */
    ASSERT_ERR(optim_schedule_warmup(&over, 1, optim_schedule_clone(deep), &err), OPTIM_EINVAL, err.message,
               "optim_schedule_warmup: after nests 32 deep, so the warm-up would nest 33 deep: more than "
               "OPTIM_SCHEDULE_MAX_DEPTH = 32");
    ASSERT(over == NULL);
    ASSERT_OK(optim_schedule_constant(&one, 0.5, 3, NULL));
    kids[0] = one;
    kids[1] = optim_schedule_clone(deep);
    ASSERT_ERR(optim_schedule_sequential(&seq, kids, 2, at, &err), OPTIM_EINVAL, err.message,
               "optim_schedule_sequential: schedules[1] nests 32 deep, so the sequential would nest 33 deep");
    /* A sequential at the limit: over a chain 31 deep. */
    ASSERT_OK(optim_schedule_constant(&kids[0], 0.5, 3, NULL));
    kids[1] = lim_chain(OPTIM_SCHEDULE_MAX_DEPTH - 1);
    ASSERT_OK_MSG(optim_schedule_sequential(&seq, kids, 2, at, &err), err.message);
    if (lim_schedule_round_trip(&a, &b, seq)) return 1;
    optim_schedule_free(seq);
    /* A file one past (the writer handed a tree the constructors refuse): the reader refuses it. */
    {
        optim_schedule *node = (optim_schedule *)calloc(1, sizeof *node);
        ASSERT(node);
        node->kind = OPTIM_SCHED_WARMUP;
        node->ints[0] = 1;
        node->children = (optim_schedule **)malloc(sizeof *node->children);
        ASSERT(node->children);
        node->children[0] = deep;
        node->nchildren = 1;
        ASSERT_OPT_OK(a.o, optim_group_set_schedule(a.o, 0, node));
        if (lim_refused(a.o, b.o, "schedules nested deeper than OPTIM_SCHEDULE_MAX_DEPTH = 32")) return 1;
        optim_schedule_free(node); /* and deep with it */
    }
    optim_free(a.o);
    optim_free(b.o);
    return 0;
}

TEST_IMPL(ckpt_limit_sequential_children)
{
    enum { MAX = OPTIM_SCHEDULE_MAX_CHILDREN };
    lim_run a, b;
    optim_schedule **kids = (optim_schedule **)calloc(MAX + 1, sizeof *kids), *seq = NULL;
    int64_t *miles = (int64_t *)malloc(MAX * sizeof *miles);
    optim_error err;
    size_t k;
    ASSERT(kids && miles);
    if (lim_build(&a, "w") || lim_build(&b, "w")) return 1;
    for (k = 0; k <= MAX; k++) {
        ASSERT_OK(optim_schedule_constant(&kids[k], 1.0 / (double)(k + 2), 1 + (int64_t)k, NULL));
        if (k < MAX) miles[k] = 2 * (int64_t)k + 2;
    }
    /* One past: refused naming the limit; all 1025 taken over and freed (the leak checker would see). */
    ASSERT_ERR(optim_schedule_sequential(&seq, kids, MAX + 1, miles, &err), OPTIM_EINVAL, err.message,
               "optim_schedule_sequential: count = 1025 schedules is more than OPTIM_SCHEDULE_MAX_CHILDREN = 1024");
    /* At the limit: saved, loaded, the same lrs on either side of the last milestones. */
    for (k = 0; k < MAX; k++) ASSERT_OK(optim_schedule_constant(&kids[k], 1.0 / (double)(k + 2), 1 + (int64_t)k, NULL));
    ASSERT_OK_MSG(optim_schedule_sequential(&seq, kids, MAX, miles, &err), err.message);
    if (lim_schedule_round_trip(&a, &b, seq)) return 1;
    {
        double lr;
        ASSERT_OPT_OK(b.o, optim_group_set_schedule_step(b.o, 0, 2 * MAX));
        ASSERT_OK(optim_group_current_lr(b.o, 0, &lr));
        ASSERT(lr == optim_schedule_lr(seq, 1e-3, 2 * MAX));
    }
    /* A file with 1025 (a tree the constructor refuses, handed to the writer): refused by the reader. */
    {
        optim_schedule **more = (optim_schedule **)realloc(seq->children, (MAX + 1) * sizeof *more);
        int64_t *m2 = (int64_t *)realloc(seq->milestones, MAX * sizeof *m2);
        ASSERT(more && m2);
        seq->children = more;
        seq->milestones = m2;
        ASSERT_OK(optim_schedule_constant(&seq->children[MAX], 0.5, 1, NULL));
        seq->milestones[MAX - 1] = 2 * MAX + 10;
        seq->nchildren = MAX + 1;
        seq->nmilestones = MAX;
        ASSERT_OPT_OK(a.o, optim_group_set_schedule(a.o, 0, seq));
        if (lim_refused(a.o, b.o, "1025 child schedules, more than OPTIM_SCHEDULE_MAX_CHILDREN = 1024")) return 1;
    }
    optim_schedule_free(seq);
    free(kids);
    free(miles);
    optim_free(a.o);
    optim_free(b.o);
    return 0;
}

TEST_IMPL(ckpt_limit_milestones)
{
    enum { MAX = OPTIM_SCHEDULE_MAX_MILESTONES };
    lim_run a, b;
    int64_t *miles = (int64_t *)malloc((MAX + 1) * sizeof *miles);
    optim_schedule *s = NULL;
    optim_error err;
    size_t k;
    ASSERT(miles);
    for (k = 0; k <= MAX; k++) miles[k] = (int64_t)(k % 1000) * 3; /* repeats count, as torch's Counter */
    if (lim_build(&a, "w") || lim_build(&b, "w")) return 1;
    ASSERT_ERR(optim_schedule_multistep(&s, miles, MAX + 1, 0.9999, &err), OPTIM_EINVAL, err.message,
               "optim_schedule_multistep: count = 1048577 milestones is more than OPTIM_SCHEDULE_MAX_MILESTONES = "
               "1048576");
    ASSERT_OK_MSG(optim_schedule_multistep(&s, miles, MAX, 0.9999, &err), err.message);
    if (lim_schedule_round_trip(&a, &b, s)) return 1;
    {
        int64_t *m2 = (int64_t *)realloc(s->milestones, (MAX + 1) * sizeof *m2);
        ASSERT(m2);
        s->milestones = m2;
        s->milestones[MAX] = 3000;
        s->nmilestones = MAX + 1;
        ASSERT_OPT_OK(a.o, optim_group_set_schedule(a.o, 0, s));
        if (lim_refused(a.o, b.o, "1048577 schedule milestones, more than OPTIM_SCHEDULE_MAX_MILESTONES = 1048576"))
            return 1;
    }
    optim_schedule_free(s);
    free(miles);
    optim_free(a.o);
    optim_free(b.o);
    return 0;
}

/* Shapes of OPTIM_MAX_NDIM dimensions load back; one more is refused by
 * optim_param_set_shape, and by the reader in a file. */
TEST_IMPL(ckpt_limit_ndim)
{
    lim_run a, b;
    int64_t dims[OPTIM_MAX_NDIM + 1];
    size_t k;
    for (k = 0; k <= OPTIM_MAX_NDIM; k++) dims[k] = 1;
    dims[7] = 2;
    dims[30] = 4; /* 8 elements */
    if (lim_build(&a, "w") || lim_build(&b, "w")) return 1;
    ASSERT_OPT_OK(a.o, optim_param_set_shape(a.o, 0, OPTIM_MAX_NDIM, dims));
    ASSERT_OPT_OK(b.o, optim_param_set_shape(b.o, 0, OPTIM_MAX_NDIM, dims));
    if (lim_round_trip(a.o, b.o)) return 1;
    ASSERT_ERR(optim_param_set_shape(a.o, 0, OPTIM_MAX_NDIM + 1, dims), OPTIM_EINVAL, optim_errmsg(a.o),
               "ndim = 65 for param 0 'w' (at most 64)");
    {
        int64_t *keep = a.o->params[0].dims, *more = (int64_t *)malloc(sizeof dims);
        ASSERT(more);
        memcpy(more, dims, sizeof dims);
        a.o->params[0].dims = more;
        a.o->params[0].ndim = OPTIM_MAX_NDIM + 1;
        if (lim_refused(a.o, b.o, "a shape of 65 dimensions (at most OPTIM_MAX_NDIM = 64")) return 1;
        a.o->params[0].dims = keep;
        a.o->params[0].ndim = OPTIM_MAX_NDIM;
        free(more);
    }
    optim_free(a.o);
    optim_free(b.o);
    return 0;
}
