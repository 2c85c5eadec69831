/* ckpt_damage.c: damaged and contradictory bytes. Every section kind
 * damaged (the first and last of repeated kinds, and a section a reader may
 * skip), with the file's checksum recomputed so that the section's own
 * checksum must catch it, is reported naming that section (and parameter);
 * flags, booleans and unused fields take exactly their documented values;
 * a record listed twice or contradicting another is refused. Every refusal
 * changes nothing. */
#include "ckpt_small.h"
#include "ckpt_util.h"
#include "kernels/kernels.h"
#include "optim_checkpoint.h"
#include "optim_schedule.h"
#include "optim_schedule_free.h"
#include "test.h"

/* ---- Damage is reported with the part it hit -------------------------------------------------- */

TEST_IMPL(ckpt_corruption_names_the_part)
{
    rb_run r, dst;
    void *good;
    size_t size, off;
    unsigned char *bad;
    char dir[64], path[128];
    if (rb_build(&r, 1, 3) || rb_build(&dst, 0, 0)) return 1;
    ASSERT_OPT_OK(r.o, optim_save_buffer(r.o, &good, &size));
    bad = (unsigned char *)malloc(size);
    /* Sections: 0 META, 1 GRUP 0, 2 GRUP 1, 3 PARM a, 4 PARM b, 5 PARM c. */
#define FLIP_AT(where)                                                                                    \
    do {                                                                                                  \
        memcpy(bad, good, size);                                                                          \
        bad[(where)] ^= 0x04;                                                                             \
    } while (0)
    off = ckpt_section_offset((unsigned char *)good, size, 4);
    FLIP_AT(off + 16 + ckpt_get_le((unsigned char *)good + off + 8, 8) - 3); /* b's last slot */
    if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_ECHECKSUM,
                       "ck: section 4 (PARM of param 1 'b'): checksum mismatch: the file is corrupt"))
        return 1;
    FLIP_AT(ckpt_section_offset((unsigned char *)good, size, 2) + 16 + 9); /* a hyperparameter of group 1 */
    if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_ECHECKSUM, "section 2 (GRUP of group 1): checksum"))
        return 1;
    FLIP_AT(32 + 16 + 20); /* META's step count */
    if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_ECHECKSUM, "section 0 (META): checksum")) return 1;
    FLIP_AT(size - 12); /* the file checksum itself */
    if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_ECHECKSUM, "file checksum mismatch")) return 1;
    /* A section's length damaged: its frame no longer fits, and the file checksum says why. */
    off = ckpt_section_offset((unsigned char *)good, size, 3);
    FLIP_AT(off + 8 + 3);
    if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_ECHECKSUM,
                       "section 3 (PARM of param 0) at byte"))
        return 1;
    if (!strstr(rb_last_msg, "the file checksum does not match: the file is corrupt")) FAIL("%s", rb_last_msg);
    printf("  %s\n", rb_last_msg);
    /* The same through a file: the message starts with its path. */
    if (!ckpt_scratch(dir, sizeof dir)) FAIL("mkdtemp");
    snprintf(path, sizeof path, "%s/flip.ckpt", dir);
    off = ckpt_section_offset((unsigned char *)good, size, 5);
    FLIP_AT(off + 16 + 40);
    ASSERT(ckpt_write_file(path, bad, size) == 0);
    ASSERT_ERR(optim_load(dst.o, path, OPTIM_MATCH_NAME), OPTIM_ECHECKSUM, optim_errmsg(dst.o),
               "flip.ckpt: section 5 (PARM of param 2 'c'): checksum mismatch");
#undef FLIP_AT
    free(bad);
    free(good);
    rb_free(&r);
    rb_free(&dst);
    ckpt_remove_tree(dir);
    return 0;
}

/* Flags and one-byte booleans take exactly their documented values. */
TEST_IMPL(ckpt_strict_fields)
{
    rb_run r, dst;
    void *good;
    size_t size, g0, p0, nlen;
    unsigned char *bad, *dup;
    static const int64_t s42[2] = {4, 2};
    if (rb_build(&r, 1, 2) || rb_build(&dst, 0, 0)) return 1;
    ASSERT_OPT_OK(r.o, optim_param_set_shape(r.o, 0, 2, s42));
    ASSERT_OPT_OK(r.o, optim_save_buffer(r.o, &good, &size));
    bad = (unsigned char *)malloc(size);
#define EDIT(off, value, bytes)                                                                           \
    do {                                                                                                  \
        memcpy(bad, good, size);                                                                          \
        ckpt_put_le(bad + (off), (value), (bytes));                                                       \
        ckpt_rechecksum(bad, size);                                                                       \
    } while (0)
    EDIT(12, 1, 4);
    if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_EFORMAT, "header flags 0x1")) return 1;
    EDIT(32 + 4, 1, 4); /* META marked "may skip": a known section takes flags 0 */
    if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_EFORMAT, "section 0 (META): flags 0x1")) return 1;
    EDIT(32 + 16 + 36, 7, 4); /* META's reserved field */
    if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_EFORMAT, "reserved field = 7")) return 1;
    g0 = ckpt_section_offset((unsigned char *)good, size, 2) + 16; /* group 1: no schedule */
    EDIT(g0 + 8 + 12 * ckpt_get_le((unsigned char *)good + g0 + 4, 4) + 8, 2, 1);
    if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_EFORMAT, "group 1: schedule byte = 2")) return 1;
    p0 = ckpt_section_offset((unsigned char *)good, size, 3) + 16; /* param a, shape [4, 2] */
    nlen = (size_t)ckpt_get_le((unsigned char *)good + p0 + 8, 4);
    EDIT(p0 + 12 + nlen + 12, 2, 1);
    if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_EFORMAT, "param 0 'a': shape byte = 2")) return 1;
    EDIT(p0 + 12 + nlen + 12 + 5, 3, 8);
    if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_EFORMAT, "a shape [3, 2] for 8 elements")) return 1;
    EDIT(p0 + 12 + nlen + 12, 0, 1); /* "not given" with two dimensions */
    if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_EFORMAT, "a default shape [4, 2] for 8 elements"))
        return 1;
    /* A second META. */
    {
        size_t mlen = 20 + (size_t)ckpt_get_le((unsigned char *)good + 32 + 8, 8), n2;
        dup = ckpt_insert_section((unsigned char *)good, size, 1, "META", 0, (unsigned char *)good + 32 + 16,
                                  mlen - 20, &n2);
        if (expect_refused(dst.o, dup, n2, OPTIM_MATCH_NAME, OPTIM_EFORMAT, "section 1 (META): a second META"))
            return 1;
        free(dup);
    }
    ASSERT_OPT_OK(dst.o, optim_load_buffer(dst.o, good, size, OPTIM_MATCH_NAME, "good"));
#undef EDIT
    free(bad);
    free(good);
    rb_free(&r);
    rb_free(&dst);
    return 0;
}


/* Only the file's trailer checksum recomputed (header and sections as they are). */
static void dmg_file_crc(unsigned char *d, size_t size)
{
    ckpt_put_le(d + size - 12, optim__crc32c(0, d, size - 12), 4);
}

/* Every byte of every section, flipped, with the file's checksum made right
 * again: the section's own checksum must catch it, and the message names that
 * section (and, for a PARM, the parameter; its name as read when the flip is
 * not in it). Every section kind: META, the first and last GRUP, the first,
 * middle and last PARM, and a section a reader may skip. The length field is
 * left alone (a wrong length moves the frame: ckpt_corruption_names_the_part).
 * Kills the mutant "skip the section CRC check of the first PARM section",
 * which the file checksum alone would catch, naming the wrong part. */
TEST_IMPL(ckpt_damage_every_section)
{
    /* After the insertion: 0 META, 1 GRUP 0, 2 GRUP 1, 3 XTRA, 4 PARM a, 5 PARM b, 6 PARM c. */
    static const char *const names[7] = {
        "section 0 (META)",          "section 1 (GRUP of group 0)", "section 2 (GRUP of group 1)",
        "section 3 (XTRA)",          "section 4 (PARM of param 0 'a')", "section 5 (PARM of param 1 'b')",
        "section 6 (PARM of param 2 'c')"};
    static const char *const prefixes[7] = {NULL, NULL, NULL, NULL, "section 4 (PARM of param 0",
                                            "section 5 (PARM of param 1", "section 6 (PARM of param 2"};
    rb_run r, dst;
    void *saved;
    unsigned char *good, *bad;
    size_t size, saved_size;
    unsigned k, flips = 0;
    if (rb_build(&r, 1, 3) || rb_build(&dst, 0, 0)) return 1;
    ASSERT_OPT_OK(r.o, optim_save_buffer(r.o, &saved, &saved_size));
    good = ckpt_insert_section((unsigned char *)saved, saved_size, 3, "XTRA", 1, "later", 5, &size);
    ASSERT(good && ckpt_get_le(good + 24, 4) == 7);
    ASSERT_OPT_OK(dst.o, optim_load_buffer(dst.o, good, size, OPTIM_MATCH_NAME, "good")); /* intact: loads */
    rb_free(&dst);
    if (rb_build(&dst, 0, 0)) return 1;
    bad = (unsigned char *)malloc(size);
    ASSERT(bad);
    for (k = 0; k < 7; k++) {
        size_t off = ckpt_section_offset(good, size, k), len = (size_t)ckpt_get_le(good + off + 8, 8), at;
        /* A PARM's name length and its one byte: damaged, the name cannot be read back */
        size_t name_lo = off + 16 + 8, name_hi = k >= 4 ? name_lo + 4 + 1 : name_lo;
        ASSERT(off != 0);
        for (at = off; at < off + 16 + len + 4; at++) {
            int in_tag = at < off + 4, in_name = at >= name_lo && at < name_hi;
            if (at >= off + 8 && at < off + 16) continue; /* the length: see above */
            memcpy(bad, good, size);
            bad[at] ^= (unsigned char)(at % 2 ? 0x04 : 0x80);
            dmg_file_crc(bad, size);
            char where[32];
            snprintf(where, sizeof where, "section %u (", k); /* a damaged tag: the section by its place */
            if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_ECHECKSUM,
                               in_tag ? where : in_name ? prefixes[k] : names[k]))
                FAIL("section %u, byte %zu of it (at %zu): %s", k, at - off, at, rb_last_msg);
            if (!strstr(rb_last_msg, "): checksum mismatch: the file is corrupt") || strstr(rb_last_msg, "file checksum"))
                FAIL("section %u, byte %zu: %s", k, at - off, rb_last_msg);
            flips++;
        }
    }
    printf("  %u bytes of 7 sections flipped, each named by its section: e.g. %s\n", flips, rb_last_msg);
    /* The header and the trailer, for completeness: each names its part. */
    memcpy(bad, good, size);
    bad[20] ^= 1;
    if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_ECHECKSUM, "header checksum mismatch")) return 1;
    memcpy(bad, good, size);
    bad[size - 10] ^= 1;
    if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_ECHECKSUM, "file checksum mismatch (every section's"))
        return 1;
    memcpy(bad, good, size);
    bad[size - 3] ^= 1;
    if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_ECHECKSUM, "the end marker is damaged")) return 1;
    free(bad);
    free(good);
    free(saved);
    rb_free(&r);
    rb_free(&dst);
    return 0;
}

/* Records listed twice or contradicting what the format says, with every
 * checksum right: refused as damaged (OPTIM_EFORMAT), never "the last one
 * wins". */
TEST_IMPL(ckpt_contradictory_records)
{
    rb_run r, dst;
    void *saved;
    unsigned char *good, *bad;
    size_t size, g0, g1, p0, off;
    if (rb_build(&r, 1, 3) || rb_build(&dst, 0, 0)) return 1;
    ASSERT_OPT_OK(r.o, optim_save_buffer(r.o, &saved, &size));
    good = (unsigned char *)saved;
    bad = (unsigned char *)malloc(size);
    ASSERT(bad);
#define EDIT(off, value, bytes)                                                                           \
    do {                                                                                                  \
        memcpy(bad, good, size);                                                                          \
        ckpt_put_le(bad + (off), (value), (bytes));                                                       \
        ckpt_rechecksum(bad, size);                                                                       \
    } while (0)
    /* GRUP 1 (no schedule): index, count, then (id, value) pairs. */
    g1 = ckpt_section_offset(good, size, 2) + 16;
    ASSERT(ckpt_get_le(good + g1 + 8, 4) == OPTIM_HP_LR);
    /* the second pair given the first one's id: the same hyperparameter twice */
    EDIT(g1 + 8 + 12, OPTIM_HP_LR, 4);
    if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_EFORMAT,
                       "ck: section 2 (GRUP of group 1): group 1: hyperparameter lr (id 1) is listed twice"))
        return 1;
    /* the last pair given the id of a pair before it */
    {
        uint64_t count = ckpt_get_le(good + g1 + 4, 4), id = ckpt_get_le(good + g1 + 8 + 12 * 2, 4);
        EDIT(g1 + 8 + 12 * (count - 1), id, 4);
        if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_EFORMAT, "is listed twice")) return 1;
    }
    /* an id the rule does not use (Adam has no momentum), even at its default 0 */
    EDIT(g1 + 8 + 12, OPTIM_HP_MOMENTUM, 4);
    ckpt_put_le(bad + g1 + 8 + 12 + 4, 0, 8);
    ckpt_rechecksum(bad, size);
    if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_EFORMAT, "group 1: adam: has no hyperparameter momentum"))
        return 1;
    /* A schedule argument its kind does not use, nonzero: group 0 holds warm-up(4) then cosine(30, 1e-5). */
    g0 = ckpt_section_offset(good, size, 1) + 16;
    off = g0 + 8 + 12 * (size_t)ckpt_get_le(good + g0 + 4, 4) + 8 + 1; /* the warm-up node */
    ASSERT(ckpt_get_le(good + off, 4) == OPTIM_SCHED_WARMUP && ckpt_get_le(good + off + 4, 8) == 4);
    EDIT(off + 4 + 8, 5, 8); /* ints[1] */
    if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_EFORMAT,
                       "a schedule of kind 11 has ints[1] = 5, which it does not use (0)"))
        return 1;
    EDIT(off + 4 + 32 + 8 * 3, 0x3ff0000000000000ull, 8); /* the warm-up's reals[3] = 1.0 */
    if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_EFORMAT, "has reals[3] = 1, which it does not use"))
        return 1;
    {
        size_t child = off + 4 + 32 + 32 + 4 + 4; /* the cosine node: no milestones, one child before it */
        ASSERT(ckpt_get_le(good + child, 4) == OPTIM_SCHED_COSINE);
        EDIT(child + 4 + 32 + 8, 0x8000000000000000ull, 8); /* reals[1] = -0.0: not the stored 0 */
        if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_EFORMAT,
                           "a schedule of kind 7 has reals[1] = -0, which it does not use (0)"))
            return 1;
    }
    /* A NUL inside a stored name. */
    p0 = ckpt_section_offset(good, size, 3) + 16;
    EDIT(p0 + 12, 0, 1);
    if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_EFORMAT, "param 0: a NUL byte inside its name"))
        return 1;
    /* initialized bits for a slot the file does not hold */
    {
        size_t nlen = (size_t)ckpt_get_le(good + p0 + 8, 4), fields = p0 + 12 + nlen + 4 + 8 + 1 + 4 + 8 + 8 + 8;
        uint64_t mask = ckpt_get_le(good + fields + 4, 4);
        EDIT(fields, mask | 0x8, 4);
        if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_EFORMAT, "initialized 0xf")) return 1;
    }
    /* A group or a parameter section twice (its copy in place of the next one). */
    {
        size_t a = ckpt_section_offset(good, size, 1), b = ckpt_section_offset(good, size, 2), n2;
        unsigned char *two = ckpt_insert_section(good, size, 2, "GRUP", 0, good + a + 16, b - a - 20, &n2);
        ASSERT(two);
        if (expect_refused(dst.o, two, n2, OPTIM_MATCH_NAME, OPTIM_EFORMAT,
                           "section 2 (GRUP of group 1): group section 1 holds group 0"))
            return 1;
        free(two);
        a = ckpt_section_offset(good, size, 3);
        b = ckpt_section_offset(good, size, 4);
        two = ckpt_insert_section(good, size, 4, "PARM", 0, good + a + 16, b - a - 20, &n2);
        ASSERT(two);
        if (expect_refused(dst.o, two, n2, OPTIM_MATCH_NAME, OPTIM_EFORMAT, "param section 1 holds param 0"))
            return 1;
        free(two);
    }
    /* Two parameters of the same name (the writer keeps what the optimizer was given): a load by
     * position takes it, a load by name cannot tell them apart and says so. */
    EDIT(ckpt_section_offset(good, size, 5) + 16 + 12, 'a', 1); /* c renamed a */
    if (expect_refused(dst.o, bad, size, OPTIM_MATCH_NAME, OPTIM_EMISMATCH,
                       "two params are named 'a' (in the checkpoint or the optimizer): match by position instead"))
        return 1;
    ASSERT_OPT_OK(dst.o, optim_load_buffer(dst.o, bad, size, OPTIM_MATCH_POSITION, "dup"));
#undef EDIT
    free(bad);
    free(saved);
    rb_free(&r);
    rb_free(&dst);
    return 0;
}

/* ---- int8_block scales: only what a step can store ----------------------------------------------
 * A step, a quantization and a fresh slot store each block's scale as
 * max(largest finite |x|, FLT_MIN): finite and >= FLT_MIN, also for a block
 * of zeros. A file with any other scale (checksums right) is refused naming
 * the parameter, the slot and the block, and changes nothing. */

static optim *q8_adam(float *p, float *g, size_t n)
{
    optim *o = NULL;
    optim_hparams hp;
    if (optim_create(&o, OPTIM_ADAM) != OPTIM_OK) return NULL;
    optim_hparams_init(&hp, OPTIM_ADAM, NULL);
    hp.lr = 0.01;
    if (optim_add_group(o, &hp, NULL) != OPTIM_OK ||
        optim_add_param_ex(o, 0, p, OPTIM_FLOAT32, g, OPTIM_FLOAT32, n, OPTIM_INT8_BLOCK, 0, "w", NULL) != OPTIM_OK) {
        optim_free(o);
        return NULL;
    }
    return o;
}

TEST_IMPL(ckpt_int8_scales_checked)
{
    enum { N = 600, NB = (N + OPTIM_INT8_BLOCK_SIZE - 1) / OPTIM_INT8_BLOCK_SIZE };
    static float p[N], g[N], p2[N], g2[N];
    static const struct {
        uint32_t bits;
        const char *what;
    } bad_scales[] = {{0x7fc00000u, "NaN"},       {0x7f800000u, "+inf"},     {0xff800000u, "-inf"},
                      {0x00000000u, "zero"},      {0x80000000u, "-0"},       {0xbf800000u, "-1"},
                      {0x00000001u, "subnormal"}, {0x007fffffu, "subnormal"}, {0x80800000u, "-FLT_MIN"}};
    optim *a, *b;
    void *saved;
    unsigned char *good, *bad;
    size_t size, off, end, scales[2], i;
    int s, k, flt_min_seen = 0;
    for (i = 0; i < N; i++) {
        p[i] = p2[i] = (float)((int)(i % 17) - 8) * 0.125f;
        /* the last block's gradient is zero: its exp_avg and exp_avg_sq blocks are zeros (scale FLT_MIN) */
        g[i] = i >= 2 * OPTIM_INT8_BLOCK_SIZE ? 0.0f : (float)((int)(i % 13) - 6) * 0.25f;
        g2[i] = 0.0f;
    }
    a = q8_adam(p, g, N);
    b = q8_adam(p2, g2, N);
    ASSERT(a && b);
    ASSERT_OPT_OK(a, optim_step(a));
    ASSERT_OPT_OK(a, optim_step(a));
    ASSERT_OPT_OK(b, optim_step(b));
    ASSERT_OPT_OK(a, optim_save_buffer(a, &saved, &size));
    good = (unsigned char *)saved;
    bad = (unsigned char *)malloc(size);
    ASSERT(bad);
    /* Sections: 0 META, 1 GRUP 0, 2 PARM 'w': its payload ends with the two slots, each (type, codes, scales). */
    off = ckpt_section_offset(good, size, 2);
    ASSERT(off && memcmp(good + off, "PARM", 4) == 0);
    end = off + 16 + (size_t)ckpt_get_le(good + off + 8, 8);
    scales[1] = end - 4 * NB;
    scales[0] = scales[1] - 4 - N - 4 * NB;
    ASSERT_INT(ckpt_get_le(good + scales[1] - N - 4, 4), ==, OPTIM_INT8_BLOCK);
    ASSERT_INT(ckpt_get_le(good + scales[0] - N - 4, 4), ==, OPTIM_INT8_BLOCK);
    for (s = 0; s < 2; s++)
        for (k = 0; k < NB; k++) flt_min_seen += ckpt_get_le(good + scales[s] + 4 * k, 4) == 0x00800000u;
    ASSERT_INT(flt_min_seen, ==, 2); /* the zero blocks: a legitimate FLT_MIN scale loads */
    ASSERT_OPT_OK(b, optim_load_buffer(b, good, size, OPTIM_MATCH_POSITION, "good"));
    ASSERT(ckpt_same_state(a, b));
    for (s = 0; s < 2; s++)
        for (k = 0; k < NB; k++)
            for (i = 0; i < sizeof bad_scales / sizeof bad_scales[0]; i++) {
                char needle[160];
                memcpy(bad, good, size);
                ckpt_put_le(bad + scales[s] + 4 * (size_t)k, bad_scales[i].bits, 4);
                ckpt_rechecksum(bad, size);
                snprintf(needle, sizeof needle, "param 0 'w': slot %s has scale", s ? "exp_avg_sq" : "exp_avg");
                if (expect_refused(b, bad, size, OPTIM_MATCH_POSITION, OPTIM_EFORMAT, needle)) return 1;
                snprintf(needle, sizeof needle, "(bits 0x%08x) at block %d of %d", (unsigned)bad_scales[i].bits, k,
                         (int)NB);
                if (!strstr(rb_last_msg, needle))
                    FAIL("a %s scale: \"%s\" does not name \"%s\"", bad_scales[i].what, rb_last_msg, needle);
            }
    printf("  %zu bad scales (NaN, infinities, zeros, negative, subnormal) in every block of both slots refused; "
           "FLT_MIN (a block of zeros) loads\n", 2 * NB * sizeof bad_scales / sizeof bad_scales[0]);
    free(bad);
    free(saved);
    optim_free(a);
    optim_free(b);
    return 0;
}

/* ---- The schedule-free section (SFRE) ---------------------------------------------------------- */

/* d with section k (counted from 0 after the header) replaced by (tag, payload, len), or removed (tag
 * NULL); header and checksums right. malloc'ed. */
static unsigned char *sf_replace(const unsigned char *d, size_t size, unsigned k, const char *tag, const void *payload,
                                 size_t len, size_t *out)
{
    const size_t at = ckpt_section_offset(d, size, k), old = 20 + (size_t)ckpt_get_le(d + at + 8, 8);
    unsigned char *cut = (unsigned char *)malloc(size - old), *o;
    if (!cut || !at) {
        free(cut);
        return NULL;
    }
    memcpy(cut, d, at);
    memcpy(cut + at, d + at + old, size - at - old);
    ckpt_put_le(cut + 16, size - old, 8);
    ckpt_put_le(cut + 24, ckpt_get_le(cut + 24, 4) - 1, 4);
    ckpt_rechecksum(cut, size - old);
    if (!tag) {
        *out = size - old;
        return cut;
    }
    o = ckpt_insert_section(cut, size - old, k, tag, 0, payload, len, out);
    free(cut);
    return o;
}

static optim *sf_make(optim_rule rule, float *p, float *g, int steps, int eval)
{
    optim *o = NULL;
    optim_hparams hp;
    int t;
    if (optim_create(&o, rule) != OPTIM_OK || optim_hparams_init(&hp, rule, NULL) != OPTIM_OK ||
        optim_add_group(o, &hp, NULL) != OPTIM_OK || optim_add_param(o, 0, p, g, 4, "a", NULL) != OPTIM_OK ||
        optim_add_param(o, 0, p + 4, g + 4, 4, "b", NULL) != OPTIM_OK)
        return NULL;
    for (t = 0; t < steps; t++)
        if (optim_step(o) != OPTIM_OK) return NULL;
    if (eval && optim_schedule_free_eval(o) != OPTIM_OK) return NULL;
    return o;
}

/* Every field of SFRE out of its range, the section short, long, missing, twice, flagged, before a PARM
 * or in another rule's checkpoint: refused (OPTIM_EFORMAT, naming the part), nothing changed (state,
 * scalars, mode); the intact file loads and restores eval mode. */
TEST_IMPL(ckpt_sfre_damage)
{
    static float p[8] = {1, 2, 3, 4, 5, 6, 7, 8}, g[8] = {0.5f, -1, 2, 0.25f, 1, 1, -3, 0.5f}, q[8], h[8];
    optim *src = sf_make(OPTIM_ADAMW_SCHEDULE_FREE, p, g, 2, 1), *dst = sf_make(OPTIM_ADAMW_SCHEDULE_FREE, q, h, 1, 0);
    optim *adam = NULL;
    void *good = NULL, *before = NULL, *after = NULL, *ab = NULL;
    size_t size, nb, na, asz, n, k, at, nsec;
    unsigned char pay[16 + 2 * 16 + 8], *bad;
    double lm, ws;
    optim_hparams hp;
    if (!src || !dst) FAIL("schedule-free optimizers: %s", src ? optim_errmsg(src) : "create");
    ASSERT_OPT_OK(src, optim_save_buffer(src, &good, &size));
    nsec = (size_t)ckpt_get_le((unsigned char *)good + 24, 4);
    at = ckpt_section_offset((unsigned char *)good, size, (unsigned)(nsec - 1));
    ASSERT(at && memcmp((unsigned char *)good + at, "SFRE", 4) == 0);
    ASSERT_INT(ckpt_get_le((unsigned char *)good + at + 8, 8), ==, 16 + 2 * 16);
    memcpy(pay, (unsigned char *)good + at + 16, 48);
    ASSERT_OPT_OK(dst, optim_save_buffer(dst, &before, &nb));
    for (k = 0; k < 15; k++) {
        unsigned char e[sizeof pay];
        size_t len = 48;
        const char *needle = "SFRE";
        unsigned where = (unsigned)(nsec - 1);
        const char *tag = "SFRE";
        memcpy(e, pay, sizeof pay);
        switch (k) {
        case 0: ckpt_put_le(e, 2, 4); needle = "mode 2"; break;
        case 1: ckpt_put_le(e + 4, 1, 4); needle = "reserved 1"; break;
        case 2: ckpt_put_le(e + 8, 1, 8); needle = "1 schedule-free records for 2 params"; break;
        case 3: ckpt_put_le(e + 8, 3, 8); needle = "3 schedule-free records"; break;
        case 4: { double v = NAN; memcpy(e + 16 + 16, &v, 8); needle = "param 1: lr_max = nan"; } break;
        case 5: { double v = -2; memcpy(e + 16, &v, 8); needle = "lr_max = -2"; } break;
        case 6: { double v = -1; memcpy(e + 16 + 8, &v, 8); needle = "weight_sum = -1"; } break;
        case 7: { double v = INFINITY; memcpy(e + 16 + 24, &v, 8); needle = "weight_sum = inf"; } break;
        case 8: len = 40; needle = "past the section"; break;
        case 9: len = 48 + 8; memset(e + 48, 0, 8); needle = "8 bytes left over"; break;
        case 10: len = 12; needle = "too short"; break;
        case 11: tag = NULL; needle = "without its SFRE section"; break;
        case 12: where = (unsigned)(nsec - 2); needle = "unexpected"; break; /* before the last PARM */
        case 13: needle = "a second one"; break;
        default: needle = "flags 0x1"; break;
        }
        if (k == 12) {
            /* SFRE moved before the last PARM: the PARM after it is refused */
            unsigned char *cut = sf_replace((unsigned char *)good, size, (unsigned)(nsec - 1), NULL, NULL, 0, &n);
            bad = cut ? ckpt_insert_section(cut, n, where, "SFRE", 0, e, len, &n) : NULL;
            free(cut);
            needle = "before every PARM";
        } else if (k == 13) {
            bad = ckpt_insert_section((unsigned char *)good, size, (unsigned)nsec, "SFRE", 0, e, len, &n);
        } else if (k == 14) {
            unsigned char *two = ckpt_insert_section((unsigned char *)good, size, (unsigned)(nsec - 1), "SFRE", 1, e, len,
                                                     &n);
            bad = two ? sf_replace(two, n, (unsigned)nsec, NULL, NULL, 0, &n) : NULL; /* the flagged one alone */
            free(two);
        } else {
            bad = sf_replace((unsigned char *)good, size, where, tag, e, len, &n);
        }
        if (!bad) FAIL("case %zu: out of memory", k);
        ASSERT_ERR(optim_load_buffer(dst, bad, n, OPTIM_MATCH_NAME, "sfre"), OPTIM_EFORMAT, optim_errmsg(dst), needle);
        free(bad);
        ASSERT_OPT_OK(dst, optim_save_buffer(dst, &after, &na));
        if (na != nb || memcmp(before, after, nb) != 0) FAIL("case %zu: a refused load changed the optimizer", k);
        free(after);
        ASSERT_INT(optim_schedule_free_mode(dst), ==, 1);
    }
    /* An SFRE section in another rule's checkpoint. */
    ASSERT_OK(optim_create(&adam, OPTIM_ADAM));
    ASSERT_OK(optim_hparams_init(&hp, OPTIM_ADAM, NULL));
    ASSERT_OPT_OK(adam, optim_add_group(adam, &hp, NULL));
    ASSERT_OPT_OK(adam, optim_add_param(adam, 0, q, h, 4, "a", NULL));
    ASSERT_OPT_OK(adam, optim_save_buffer(adam, &ab, &asz));
    memcpy(pay, (unsigned char *)good + at + 16, 48);
    ckpt_put_le(pay + 8, 1, 8);
    bad = ckpt_insert_section((unsigned char *)ab, asz, (unsigned)ckpt_get_le((unsigned char *)ab + 24, 4), "SFRE", 0,
                              pay, 32, &n);
    if (!bad) FAIL("out of memory");
    ASSERT_ERR(optim_load_buffer(adam, bad, n, OPTIM_MATCH_NAME, "sfre"), OPTIM_EFORMAT, optim_errmsg(adam),
               "the rule is not schedule-free");
    free(bad);
    free(ab);
    optim_free(adam);
    /* The intact file: loaded, eval mode and the scalars restored. */
    ASSERT_OPT_OK(dst, optim_load_buffer(dst, good, size, OPTIM_MATCH_NAME, "sfre"));
    ASSERT_INT(optim_schedule_free_mode(dst), ==, 0);
    {
        double lm2, ws2;
        ASSERT_OPT_OK(dst, optim_param_get_schedule_free(dst, 1, &lm, &ws));
        ASSERT_OPT_OK(src, optim_param_get_schedule_free(src, 1, &lm2, &ws2));
        ASSERT(lm == lm2 && ws == ws2 && lm > 0 && ws > 0);
    }
    ASSERT(ckpt_same_state(src, dst));
    free(good);
    free(before);
    optim_free(src);
    optim_free(dst);
    return 0;
}
