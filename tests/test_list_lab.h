/* test_list_lab.h: the lab suite (optim_lab_tests): the pieces of `optim lab`
 * under its experiments (tools/lab/). The experiments themselves run end to
 * end in python/tests/test_lab.py. */
#define TEST_LIST(TEST_ENTRY)              \
    TEST_ENTRY(lab_json_tree)              \
    TEST_ENTRY(lab_surface_derivatives)    \
    TEST_ENTRY(lab_surface_run_scaled)     \
    TEST_ENTRY(lab_surface_sam_steps)      \
    TEST_ENTRY(lab_idx_parser)             \
    TEST_ENTRY(lab_gz_roundtrip)           \
    TEST_ENTRY(lab_mlp_gradients)          \
    TEST_ENTRY(lab_bf16_conversions)       \
    TEST_ENTRY(lab_mlp_bf16_model)         \
    TEST_ENTRY(lab_prec_storage)           \
    TEST_ENTRY(lab_prec_verdict)           \
    TEST_ENTRY(lab_optimizer_table)        \
    TEST_ENTRY(lab_modern_table)           \
    TEST_ENTRY(lab_modern_verdict)         \
    TEST_ENTRY(lab_opt_create_groups)      \
    TEST_ENTRY(lab_surface_hooks)          \
    TEST_ENTRY(lab_muon_parts)             \
    TEST_ENTRY(lab_rng_streams)            \
    TEST_ENTRY(lab_run_dir_exclusive)      \
    TEST_ENTRY(lab_command_errors)
