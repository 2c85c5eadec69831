/* test_list_grad.h: the gradient suite (optim_grad_tests): norms, clipping,
 * the non-finite policies (test_grad.c); SAM and ASAM, and the lifetimes of a
 * SAM object and its base (test_sam.c). */
#define TEST_LIST(TEST_ENTRY)                   \
    TEST_ENTRY(grad_norm_vs_reference)          \
    TEST_ENTRY(grad_norm_threads_and_paths)     \
    TEST_ENTRY(clip_grad_norm_inplace)          \
    TEST_ENTRY(clip_grad_value_inplace)         \
    TEST_ENTRY(clip_errors)                     \
    TEST_ENTRY(clip_factor_as_torch)            \
    TEST_ENTRY(clip_norm_overflows_as_torch_float32) \
    TEST_ENTRY(fused_clip_matches_separate)     \
    TEST_ENTRY(fused_clip_threads_bit_identical) \
    TEST_ENTRY(fused_clip_value_matches_separate) \
    TEST_ENTRY(fused_clip_value_errors)         \
    TEST_ENTRY(nonfinite_skip_leaves_every_byte) \
    TEST_ENTRY(nonfinite_error_names_param)     \
    TEST_ENTRY(sam_vs_reference)                \
    TEST_ENTRY(sam_per_group)                   \
    TEST_ENTRY(sam_threads_bit_identical)       \
    TEST_ENTRY(sam_restore_and_errors)          \
    TEST_ENTRY(sam_nonfinite_policies)          \
    TEST_ENTRY(sam_memory_replaced)             \
    TEST_ENTRY(sam_lifetimes)                   \
    TEST_ENTRY(sam_base_changes_while_perturbed)
