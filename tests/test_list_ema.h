/* test_list_ema.h: the EMA of the weights (optim_ema_tests, tests/test_ema.c). */
#define TEST_LIST(TEST_ENTRY)         \
    TEST_ENTRY(ema_exact_every_path)  \
    TEST_ENTRY(ema_swap_round_trip)   \
    TEST_ENTRY(ema_refusals)          \
    TEST_ENTRY(ema_skips_and_sam)     \
    TEST_ENTRY(ema_sparse_steps)      \
    TEST_ENTRY(ema_checkpoint)        \
    TEST_ENTRY(ema_param_added_late)  \
    TEST_ENTRY(ema_load_combinations)
