/* test_list_muon.h: rule OPTIM_MUON with liboptim_muon (optim_muon_tests, tests/test_muon.c). */
#define TEST_LIST(TEST_ENTRY)              \
    TEST_ENTRY(muon_vs_reference)          \
    TEST_ENTRY(muon_zero_update)           \
    TEST_ENTRY(muon_paths_bit_identical)   \
    TEST_ENTRY(muon_blas_threads)          \
    TEST_ENTRY(muon_checkpoint_resume)     \
    TEST_ENTRY(muon_refusals)              \
    TEST_ENTRY(muon_stats)
