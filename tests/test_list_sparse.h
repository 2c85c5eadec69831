/* test_list_sparse.h: sparse gradients (optim_sparse_tests, tests/test_sparse.c). */
#define TEST_LIST(TEST_ENTRY)             \
    TEST_ENTRY(sparse_vs_reference)       \
    TEST_ENTRY(sparse_paths_bit_identical) \
    TEST_ENTRY(sparse_mixed_and_empty)    \
    TEST_ENTRY(sparse_adam_checkpoint_resume) \
    TEST_ENTRY(sparse_refusals)
