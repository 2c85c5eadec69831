/* runner.c: runs the tests of test_list.h; prints the seed first. */
#include "test.h"

typedef struct {
    const char *name;
    int (*fn)(void);
} test_entry;

static const test_entry tests[] = {
#define ENTRY(name) {#name, test_##name},
    TEST_LIST(ENTRY)
#undef ENTRY
};

uint64_t test_seed(void)
{
    const char *s = getenv("OPTIM_TEST_SEED");
    if (s && *s) return strtoull(s, NULL, 0);
    return 0x5eed0001u;
}

int main(int argc, char **argv)
{
    size_t i, n = sizeof tests / sizeof tests[0];
    int failed = 0, ran = 0;
    if (argc > 1 && strcmp(argv[1], "--list") == 0) {
        for (i = 0; i < n; i++) printf("%s\n", tests[i].name);
        return 0;
    }
    printf("optim %s tests, seed 0x%" PRIx64 " (replay with OPTIM_TEST_SEED=0x%" PRIx64 "), default path %s\n",
           optim_version_string(), test_seed(), test_seed(), optim_isa_name(optim_isa_default()));
    for (i = 0; i < n; i++) {
        int rc;
        if (argc > 1 && strcmp(argv[1], tests[i].name) != 0) continue;
        rc = tests[i].fn();
        ran++;
        printf("%s %s\n", rc ? "FAIL" : "ok  ", tests[i].name);
        fflush(stdout);
        failed += rc != 0;
    }
    if (ran == 0) {
        fprintf(stderr, "no test named %s (see --list)\n", argc > 1 ? argv[1] : "");
        return 2;
    }
    printf("%d of %d passed\n", ran - failed, ran);
    return failed ? 1 : 0;
}
