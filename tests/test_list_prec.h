/* test_list_prec.h: reduced precision (optim_prec_tests, tests/test_prec.c):
 * fp32 master weights, stochastic rounding, loss scaling, the hardware
 * conversion paths. */
#define TEST_LIST(TEST_ENTRY)                 \
    TEST_ENTRY(prec_conversions_every_path)   \
    TEST_ENTRY(prec_master_vs_reference)      \
    TEST_ENTRY(prec_sr_vs_reference)          \
    TEST_ENTRY(prec_sr_unbiased)              \
    TEST_ENTRY(prec_sr_no_stall)              \
    TEST_ENTRY(prec_resume_exact)             \
    TEST_ENTRY(prec_loss_scale_gradscaler)    \
    TEST_ENTRY(prec_loss_scale_unscale_exact) \
    TEST_ENTRY(prec_api)                      \
    TEST_ENTRY(prec_int8_sr_descriptors_every_path) \
    TEST_ENTRY(prec_int8_sr_unbiased)         \
    TEST_ENTRY(prec_int8_sr_long_run)
