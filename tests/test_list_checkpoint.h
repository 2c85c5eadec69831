/* test_list_checkpoint.h: the checkpoint suite (optim_checkpoint_tests):
 * the format's checksum, exact resume in the same process for every option
 * and in a new process with schedules, clipping, skipped steps and SAM, every
 * error and corruption, crashes and full disks during a save, and two
 * optimizers stepping in two threads at once. */
#define TEST_LIST(TEST_ENTRY)                   \
    TEST_ENTRY(ckpt_crc32c)                     \
    TEST_ENTRY(ckpt_resume_every_option)        \
    TEST_ENTRY(ckpt_resume_new_process)         \
    TEST_ENTRY(ckpt_match_by_name_and_position) \
    TEST_ENTRY(ckpt_info)                       \
    TEST_ENTRY(ckpt_errors_change_nothing)      \
    TEST_ENTRY(ckpt_extreme_counters)           \
    TEST_ENTRY(ckpt_every_truncation_and_flip)  \
    TEST_ENTRY(ckpt_shapes)                     \
    TEST_ENTRY(ckpt_format1_still_loads)        \
    TEST_ENTRY(ckpt_corruption_names_the_part)  \
    TEST_ENTRY(ckpt_strict_fields)              \
    TEST_ENTRY(ckpt_damage_every_section)       \
    TEST_ENTRY(ckpt_contradictory_records)      \
    TEST_ENTRY(ckpt_int8_scales_checked)        \
    TEST_ENTRY(ckpt_mismatch_changes_nothing)   \
    TEST_ENTRY(ckpt_special_files)              \
    TEST_ENTRY(ckpt_long_file_names)            \
    TEST_ENTRY(ckpt_load_while_rewritten)       \
    TEST_ENTRY(ckpt_refused_mid_sam)            \
    TEST_ENTRY(ckpt_write_failures)             \
    TEST_ENTRY(ckpt_real_disk_full)             \
    TEST_ENTRY(ckpt_no_inode_left)              \
    TEST_ENTRY(ckpt_unwritable_directory)       \
    TEST_ENTRY(ckpt_out_of_memory)              \
    TEST_ENTRY(ckpt_disk_full_keeps_old)        \
    TEST_ENTRY(ckpt_crash_during_save)          \
    TEST_ENTRY(ckpt_kill_training_resume)       \
    TEST_ENTRY(ckpt_concurrent_optimizers)      \
    TEST_ENTRY(ckpt_limit_name)                 \
    TEST_ENTRY(ckpt_limit_numel)                \
    TEST_ENTRY(ckpt_limit_groups_sections)      \
    TEST_ENTRY(ckpt_limit_schedule_depth)       \
    TEST_ENTRY(ckpt_limit_sequential_children)  \
    TEST_ENTRY(ckpt_limit_milestones)           \
    TEST_ENTRY(ckpt_limit_ndim)                 \
    TEST_ENTRY(ckpt_sfre_damage)
