/* test_list_stats.h: step statistics (optim_stats_tests, tests/test_stats.c). */
#define TEST_LIST(TEST_ENTRY)          \
    TEST_ENTRY(stats_exact_every_path) \
    TEST_ENTRY(stats_api)              \
    TEST_ENTRY(stats_skipped_steps)    \
    TEST_ENTRY(stats_complex)          \
    TEST_ENTRY(stats_fused_lengths)
