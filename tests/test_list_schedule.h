/* test_list_schedule.h: the schedule suite (optim_schedule_tests): every
 * schedule against closed forms written out independently here, the steps
 * past each schedule's end, huge steps, every validation error, copies and
 * composites, and schedules attached to the groups of an optimizer. */
#define TEST_LIST(TEST_ENTRY)              \
    TEST_ENTRY(sched_multiplicative)       \
    TEST_ENTRY(sched_linear_polynomial)    \
    TEST_ENTRY(sched_cosine)               \
    TEST_ENTRY(sched_cosine_restarts)      \
    TEST_ENTRY(sched_one_cycle)            \
    TEST_ENTRY(sched_cyclic)               \
    TEST_ENTRY(sched_warmup_wsd)           \
    TEST_ENTRY(sched_sequential)           \
    TEST_ENTRY(sched_huge_steps)           \
    TEST_ENTRY(sched_errors)               \
    TEST_ENTRY(sched_clone_free)           \
    TEST_ENTRY(sched_from_parts)           \
    TEST_ENTRY(sched_attach_sgd)           \
    TEST_ENTRY(sched_attach_every_rule)    \
    TEST_ENTRY(sched_attach_errors_and_skips) \
    TEST_ENTRY(sched_cyclic_checkpoint)    \
    TEST_ENTRY(sched_edge_values)
