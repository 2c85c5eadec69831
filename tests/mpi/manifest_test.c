/* manifest_test.c: the manifest of sharded checkpoints (mpi/shard_manifest.c)
 * without MPI: a round trip of every field (names with spaces, '%', bytes
 * above 127 and the empty name; shapes; placeholders), every prefix refused,
 * every changed byte refused by the checksum, and seeded random damage with
 * the checksum recomputed, so that the parser's own checks meet it: never a
 * crash, and a manifest it accepts renders back to the same bytes.
 * OPTIM_TEST_SEED replays a seed. */
#include "shard_ckpt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
#define CHECK(cond, ...)                                        \
    do {                                                        \
        if (!(cond)) {                                          \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                       \
            fprintf(stderr, "\n");                              \
            failures++;                                         \
        }                                                       \
    } while (0)

static char *dup(const char *s)
{
    char *d = (char *)malloc(strlen(s) + 1);
    strcpy(d, s);
    return d;
}

static void sample(osc_manifest *m)
{
    static const char *names[] = {"fc1.weight", "a name with spaces", "100%", "caf\xc3\xa9", ""};
    static const size_t sizes[] = {12, 0, 5, 7, 3};
    size_t i;
    int r;
    memset(m, 0, sizeof *m);
    m->format = OSC_FORMAT;
    strcpy(m->library, "0.1.0");
    strcpy(m->save_id, "s42-abc");
    m->ranks = 2;
    m->stage = 2;
    strcpy(m->layout, "contiguous");
    m->rule = OPTIM_ADAMW;
    m->ngroups = 2;
    m->steps = 42;
    m->skipped = 3;
    m->nparams = 5;
    m->params = (osc_param *)calloc(5, sizeof *m->params);
    for (i = 0; i < 5; i++) {
        m->params[i].name = dup(names[i]);
        m->params[i].n = sizes[i];
        m->params[i].group = i % 2;
        m->params[i].dims = (int64_t *)calloc(2, sizeof(int64_t));
    }
    /* Element types (format 3): a mixed model. */
    m->params[2].pdt = m->params[2].gdt = OPTIM_BFLOAT16;
    m->params[3].gdt = OPTIM_FLOAT16;
    m->params[3].sdt = OPTIM_BFLOAT16;
    m->params[4].pdt = m->params[4].gdt = m->params[4].sdt = OPTIM_FLOAT64;
    /* Format 4: storage flags (a bfloat16 parameter with an fp32 master) and 8-bit block state. */
    m->params[2].flags = OPTIM_PARAM_MASTER;
    m->params[1].sdt = OPTIM_INT8_BLOCK;
    m->params[0].shape_given = 1;
    m->params[0].ndim = 2;
    m->params[0].dims[0] = 3;
    m->params[0].dims[1] = 4;
    m->params[2].shape_given = 1; /* a scalar-free shape of one dimension */
    m->params[2].ndim = 1;
    m->params[2].dims[0] = 5;
    m->npieces = (size_t *)calloc(2, sizeof(size_t));
    m->pieces = (osc_piece **)calloc(2, sizeof(osc_piece *));
    m->files = (char **)calloc(2, sizeof(char *));
    for (r = 0; r < 2; r++) m->pieces[r] = (osc_piece *)calloc(4, sizeof(osc_piece));
    m->npieces[0] = 3;
    m->pieces[0][0] = (osc_piece){0, 0, 8};
    m->pieces[0][1] = (osc_piece){3, 0, 7};
    m->pieces[0][2] = (osc_piece){1, 0, 0};
    m->npieces[1] = 3;
    m->pieces[1][0] = (osc_piece){0, 8, 12};
    m->pieces[1][1] = (osc_piece){2, 0, 5};
    m->pieces[1][2] = (osc_piece){4, 0, 3};
    m->files[0] = dup("shard-00000-of-00002.s42-abc.ckpt");
    m->files[1] = dup("shard-00001-of-00002.s42-abc.ckpt");
}

/* Recompute the last line's checksum over the text before it. */
static void reseal(char *t, size_t len)
{
    char line[32];
    if (len < 16) return;
    snprintf(line, sizeof line, "crc32c %08x\n", (unsigned)osc_crc32c(0, t, len - 16));
    memcpy(t + len - 16, line, 16);
}

int main(void)
{
    osc_manifest m, p;
    optim_error err;
    size_t len, len2, i, k;
    char *text, *again, *buf;
    unsigned long long seed = 0x5eedull;
    const char *env = getenv("OPTIM_TEST_SEED");
    int rc, accepted = 0;
    if (env) seed = strtoull(env, NULL, 0);
    printf("manifest_test: seed %llu (OPTIM_TEST_SEED replays it)\n", seed);

    sample(&m);
    text = osc_manifest_render(&m, &len);
    CHECK(text != NULL, "render");
    rc = osc_manifest_parse(text, len, "sample", &p, &err);
    CHECK(rc == OPTIM_OK, "parse: %s", err.message);
    if (rc == OPTIM_OK) {
        CHECK(p.ranks == 2 && p.stage == 2 && p.rule == OPTIM_ADAMW && p.ngroups == 2 && p.steps == 42 &&
                  p.skipped == 3 && p.nparams == 5 && strcmp(p.save_id, "s42-abc") == 0 &&
                  p.format == OSC_FORMAT && strcmp(p.layout, "contiguous") == 0,
              "header fields");
        for (i = 0; i < 5; i++) {
            CHECK(strcmp(p.params[i].name, m.params[i].name) == 0, "name %zu: '%s'", i, p.params[i].name);
            CHECK(p.params[i].n == m.params[i].n && p.params[i].group == m.params[i].group &&
                      p.params[i].shape_given == m.params[i].shape_given && p.params[i].ndim == m.params[i].ndim &&
                      p.params[i].pdt == m.params[i].pdt && p.params[i].gdt == m.params[i].gdt &&
                      p.params[i].sdt == m.params[i].sdt && p.params[i].flags == m.params[i].flags,
                  "param %zu (element types %d %d %d)", i, (int)p.params[i].pdt, (int)p.params[i].gdt,
                  (int)p.params[i].sdt);
        }
        CHECK(p.params[0].dims[0] == 3 && p.params[0].dims[1] == 4, "shape");
        for (i = 0; i < 2; i++) {
            CHECK(p.npieces[i] == 3 && strcmp(p.files[i], m.files[i]) == 0, "shard %zu", i);
            for (k = 0; k < 3; k++)
                CHECK(memcmp(&p.pieces[i][k], &m.pieces[i][k], sizeof(osc_piece)) == 0, "piece %zu %zu", i, k);
        }
        again = osc_manifest_render(&p, &len2);
        CHECK(again && len2 == len && memcmp(again, text, len) == 0, "render(parse(x)) == x");
        free(again);
        osc_manifest_free(&p);
    }

    /* Format 1 (per-bucket slices, before contiguous shards): no layout
     * line; read as layout "buckets", its pieces as written; renders back
     * the same. An unknown layout, and a format from the future, are refused
     * by name. */
    {
        char *t1, *t3, *at;
        size_t l1, l3;
        m.format = 1;
        t1 = osc_manifest_render(&m, &l1);
        CHECK(t1 && strstr(t1, "layout") == NULL && strstr(t1, "format 1\n") != NULL, "format 1 rendering");
        rc = osc_manifest_parse(t1, l1, "format 1", &p, &err);
        CHECK(rc == OPTIM_OK, "a format-1 manifest: %s", err.message);
        if (rc == OPTIM_OK) {
            CHECK(p.format == 1 && strcmp(p.layout, "buckets") == 0 && p.npieces[1] == 3 &&
                      memcmp(&p.pieces[1][0], &m.pieces[1][0], sizeof(osc_piece)) == 0,
                  "format 1 read as layout 'buckets' (%s), its pieces kept", p.layout);
            again = osc_manifest_render(&p, &len2);
            CHECK(again && len2 == l1 && memcmp(again, t1, l1) == 0, "format 1: render(parse(x)) == x");
            free(again);
            osc_manifest_free(&p);
        }
        m.format = 2;
        {
            /* Format 2 has no element types: read as float32 throughout. */
            char *t2 = osc_manifest_render(&m, &l1);
            rc = osc_manifest_parse(t2, l1, "format 2", &p, &err);
            CHECK(rc == OPTIM_OK, "a format-2 manifest: %s", err.message);
            if (rc == OPTIM_OK) {
                CHECK(p.params[4].pdt == OPTIM_FLOAT32 && p.params[4].sdt == OPTIM_FLOAT32 &&
                          p.params[2].gdt == OPTIM_FLOAT32,
                      "format 2: float32 throughout");
                osc_manifest_free(&p);
            }
            free(t2);
        }
        m.format = OSC_FORMAT;
        {
            /* Element types that are no type, or no combination the core takes, are refused by name. */
            static const char *bad[] = {"float32,float32,int8", "float64,bfloat16,float64", "float32,float32",
                                        "float64,float64,bfloat16"};
            size_t b;
            char *tt = osc_manifest_render(&m, &l1), *want = strstr(tt, "float64,float64,float64");
            for (b = 0; b < sizeof bad / sizeof *bad && want; b++) {
                size_t pre = (size_t)(want - tt), wl = strlen("float64,float64,float64"), bl = strlen(bad[b]);
                char *u = (char *)malloc(l1 + bl + 1);
                memcpy(u, tt, pre);
                memcpy(u + pre, bad[b], bl);
                memcpy(u + pre + bl, want + wl, l1 - pre - wl);
                reseal(u, l1 - wl + bl);
                rc = osc_manifest_parse(u, l1 - wl + bl, "types", &p, &err);
                CHECK(rc == OPTIM_EFORMAT && strstr(err.message, bad[b]) != NULL, "element types '%s': %s", bad[b],
                      err.message);
                if (rc == OPTIM_OK) osc_manifest_free(&p);
                free(u);
            }
            CHECK(want != NULL, "format 3 renders the element types");
            {
                /* Format 4's storage flags: unknown bits, a master for a float64 parameter, no 0x. */
                static const char *badf[] = {"float64,float64,float64,0x4", "float64,float64,float64,0x1",
                                             "float64,float64,float64,1", "float64,float64,float64,0x",
                                             "float64,float64,float64,0x1g"};
                const char *w4 = "float64,float64,float64,0x0";
                char *want4 = strstr(tt, w4);
                CHECK(want4 != NULL && strstr(tt, "bfloat16,bfloat16,float32,0x1") != NULL &&
                          strstr(tt, "float32,float32,int8_block,0x0") != NULL,
                      "format 4 renders the storage flags and 8-bit state");
                for (b = 0; b < sizeof badf / sizeof *badf && want4; b++) {
                    size_t pre = (size_t)(want4 - tt), wl = strlen(w4), bl = strlen(badf[b]);
                    char *u = (char *)malloc(l1 + bl + 1);
                    memcpy(u, tt, pre);
                    memcpy(u + pre, badf[b], bl);
                    memcpy(u + pre + bl, want4 + wl, l1 - pre - wl);
                    reseal(u, l1 - wl + bl);
                    rc = osc_manifest_parse(u, l1 - wl + bl, "flags", &p, &err);
                    CHECK(rc == OPTIM_EFORMAT, "storage flags '%s': %s", badf[b], rc ? err.message : "accepted");
                    if (rc == OPTIM_OK) osc_manifest_free(&p);
                    free(u);
                }
            }
            free(tt);
        }
        strcpy(m.layout, "strips");
        t3 = osc_manifest_render(&m, &l3);
        rc = osc_manifest_parse(t3, l3, "bad layout", &p, &err);
        CHECK(rc == OPTIM_EFORMAT && strstr(err.message, "layout 'strips'") != NULL, "an unknown layout: %s",
              err.message);
        if (rc == OPTIM_OK) osc_manifest_free(&p);
        strcpy(m.layout, "contiguous");
        free(t3);
        t3 = osc_manifest_render(&m, &l3);
        at = strstr(t3, "format 4\n");
        CHECK(at != NULL, "format 4 rendering");
        if (at) {
            at[7] = '5';
            reseal(t3, l3);
            rc = osc_manifest_parse(t3, l3, "future", &p, &err);
            CHECK(rc == OPTIM_EVERSION && strstr(err.message, "format 5 is newer") != NULL, "format 5: %s",
                  err.message);
            if (rc == OPTIM_OK) osc_manifest_free(&p);
        }
        free(t1);
        free(t3);
    }

    /* Every prefix is refused. */
    buf = (char *)malloc(len + 1);
    for (i = 0; i < len; i++) {
        memcpy(buf, text, i);
        rc = osc_manifest_parse(buf, i, "prefix", &p, &err);
        CHECK(rc != OPTIM_OK, "a prefix of %zu bytes was accepted", i);
        if (rc == OPTIM_OK) osc_manifest_free(&p);
    }
    /* Every changed byte is refused (the checksum, or the checksum line itself). */
    for (i = 0; i < len; i++) {
        memcpy(buf, text, len);
        buf[i] ^= 0x20;
        rc = osc_manifest_parse(buf, len, "flip", &p, &err);
        CHECK(rc != OPTIM_OK, "byte %zu changed was accepted", i);
        if (rc == OPTIM_OK) osc_manifest_free(&p);
    }
    /* Damage with the checksum recomputed: the parser's own checks. */
    for (k = 0; k < 20000; k++) {
        size_t n = len, j, edits;
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        memcpy(buf, text, len);
        edits = 1 + (seed >> 60) % 4;
        for (j = 0; j < edits; j++) {
            unsigned long long z = (seed ^ (j * 0x9E3779B97F4A7C15ull)) * 0xBF58476D1CE4E5B9ull;
            size_t at = (size_t)(z >> 20) % (len - 16);
            static const char pool[] = "0123456789 -:,%\n-abcxyzparamshardpiece";
            buf[at] = (z >> 8) % 3 == 0 ? (char)(z >> 40) : pool[(z >> 12) % (sizeof pool - 1)];
        }
        reseal(buf, n);
        rc = osc_manifest_parse(buf, n, "damaged", &p, &err);
        if (rc == OPTIM_OK) {
            /* Whatever it accepts is a manifest it would write itself. */
            accepted++;
            again = osc_manifest_render(&p, &len2);
            CHECK(again != NULL, "render of an accepted manifest");
            if (again) {
                osc_manifest m2;
                CHECK(osc_manifest_parse(again, len2, "again", &m2, &err) == OPTIM_OK, "re-parse: %s", err.message);
                osc_manifest_free(&m2);
            }
            free(again);
            osc_manifest_free(&p);
        } else {
            CHECK(err.message[0] != '\0', "a refusal without a message");
        }
    }
    printf("manifest_test: round trip, %zu prefixes, %zu flips, 20000 damaged manifests (%d accepted, each "
           "well-formed): %s\n",
           len, len, accepted, failures ? "FAILED" : "passed");
    free(buf);
    free(text);
    osc_manifest_free(&m);
    return failures ? 1 : 0;
}
