/* test_list.h: the core suite (optim_tests). CMake reads the TEST_ENTRY lines
 * to register one CTest test per entry; `optim_tests NAME` runs one,
 * `optim_tests` runs all, `optim_tests --list` lists them. Other suites have
 * their own test_list_<suite>.h. */
#define TEST_LIST(TEST_ENTRY)                  \
    TEST_ENTRY(version)                        \
    TEST_ENTRY(cpu_paths)                      \
    TEST_ENTRY(error_names)                    \
    TEST_ENTRY(hparams_defaults)               \
    TEST_ENTRY(hparams_errors)                 \
    TEST_ENTRY(hparams_by_id)                  \
    TEST_ENTRY(rules_vs_reference)             \
    TEST_ENTRY(rules_lr_change_vs_reference)   \
    TEST_ENTRY(rules_betas_vs_reference)       \
    TEST_ENTRY(rules_listed)                   \
    TEST_ENTRY(schedule_free_vs_reference)     \
    TEST_ENTRY(schedule_free_api)              \
    TEST_ENTRY(schedule_free_switch_storage)   \
    TEST_ENTRY(schedule_free_sam_eval)         \
    TEST_ENTRY(rules_f64_vs_reference)         \
    TEST_ENTRY(lamb_ratio_of_stored_state)     \
    TEST_ENTRY(paths_bit_identical)            \
    TEST_ENTRY(nan_bits_every_path)            \
    TEST_ENTRY(loops_stay_in_range)            \
    TEST_ENTRY(pass1_fused_edges)              \
    TEST_ENTRY(lamb_fused_pass1_as_chunked)    \
    TEST_ENTRY(prefetch_stays_in_range)        \
    TEST_ENTRY(ema_split_anywhere)             \
    TEST_ENTRY(half_types_vs_rounding_reference) \
    TEST_ENTRY(int8_state_vs_quantizing_reference) \
    TEST_ENTRY(conversions_exact)              \
    TEST_ENTRY(int8_codes_exact)               \
    TEST_ENTRY(int8_state_api)                 \
    TEST_ENTRY(int8_checkpoint_exact)          \
    TEST_ENTRY(int8_checkpoint_damage)         \
    TEST_ENTRY(int8_adam_accuracy)             \
    TEST_ENTRY(int8_rmsprop_centered_finite)   \
    TEST_ENTRY(int8_descriptors_every_path)    \
    TEST_ENTRY(int8_steps_every_path)          \
    TEST_ENTRY(dtype_api)                      \
    TEST_ENTRY(misaligned_memory_refused)      \
    TEST_ENTRY(dtype_checkpoint_exact)         \
    TEST_ENTRY(checkpoint_format2_loads)       \
    TEST_ENTRY(threads_bounded)                \
    TEST_ENTRY(unsupported_variant_refused)    \
    TEST_ENTRY(f64_norm_clipping)              \
    TEST_ENTRY(float32_golden)                 \
    TEST_ENTRY(update_errors)                  \
    TEST_ENTRY(object_matches_update)          \
    TEST_ENTRY(object_groups)                  \
    TEST_ENTRY(object_skip_null_grad)          \
    TEST_ENTRY(object_options_switched_on)     \
    TEST_ENTRY(object_state_access)            \
    TEST_ENTRY(object_asgd_eta)                \
    TEST_ENTRY(object_deferred_state)          \
    TEST_ENTRY(object_deferred_state_access)   \
    TEST_ENTRY(object_step_with)               \
    TEST_ENTRY(object_rebind)                  \
    TEST_ENTRY(object_errors)                  \
    TEST_ENTRY(object_getter_errors)           \
    TEST_ENTRY(object_isa_and_threads)         \
    TEST_ENTRY(nonfinite_propagates)           \
    TEST_ENTRY(seed_formulas)                  \
    TEST_ENTRY(adafactor_factored_vs_reference) \
    TEST_ENTRY(adafactor_paths_bit_identical)  \
    TEST_ENTRY(adafactor_refusals)             \
    TEST_ENTRY(adafactor_shape_after_steps)
