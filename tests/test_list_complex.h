/* test_list_complex.h: complex parameters with complex arithmetic
 * (OPTIM_PARAM_COMPLEX: RAdam, NAdam; tests/test_complex.c). */
#define TEST_LIST(TEST_ENTRY)                     \
    TEST_ENTRY(complex_rules_vs_reference)        \
    TEST_ENTRY(complex_rules_every_path)          \
    TEST_ENTRY(complex_flag_errors)
