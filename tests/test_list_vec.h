/* test_list_vec.h: the vector operations of include/optim_vec.h and L-BFGS's
 * two-loop recursion (test_vec.c): every CPU path and thread count against
 * a scalar reference of the documented order, bit for bit; errors. */
#define TEST_LIST(TEST_ENTRY)               \
    TEST_ENTRY(vec_dot_every_path)          \
    TEST_ENTRY(vec_axpy_scale_every_path)   \
    TEST_ENTRY(vec_norm_every_path)         \
    TEST_ENTRY(lbfgs_direction_every_path)  \
    TEST_ENTRY(lbfgs_direction_inverts_quadratic) \
    TEST_ENTRY(vec_overlap_checks_as_pairwise) \
    TEST_ENTRY(vec_errors)
