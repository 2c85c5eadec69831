/* test.h: the test runner's assertions and helpers. Every assertion prints
 * both values and where it failed; seeded tests print their seed. */
#ifndef OPTIM_TEST_H
#define OPTIM_TEST_H

#include "optim.h"

#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Each suite (an executable) has its own list; CMake passes its name. */
#ifndef TEST_LIST_HEADER
#  define TEST_LIST_HEADER "test_list.h"
#endif
#include TEST_LIST_HEADER
#include "optim_sparse.h"

/* The rules the tests that step densely loop over: a value with a rule (a
 * value reserved for another branch's rule has none) that takes dense
 * gradients (SparseAdam takes sparse ones only: tests/test_sparse.c). */
/* The rules the generic suites step element-wise on any tensor: not SparseAdam (sparse gradients only:
 * tests/test_sparse.c), not Muon (2-D parameters through liboptim_muon's matrix products:
 * tests/test_muon.c). */
static inline int test_rule_dense(int r)
{
    return optim_rule_name((optim_rule)r) != NULL && optim_rule_sparse((optim_rule)r) != OPTIM_SPARSE_ONLY &&
           r != OPTIM_MUON;
}

/* The dense rules that take every element type and storage option
 * (bfloat16/float16 parameters and gradients, masters, half and int8 state,
 * stochastic rounding): all but Adafactor, whose passes run on float32 and
 * float64 memory only and refuse the others by name (tests/test_adafactor.c). */
static inline int test_rule_any_type(int r)
{
    return test_rule_dense(r) && r != OPTIM_ADAFACTOR;
}

#define TEST_DECLARE(name) int test_##name(void);
TEST_LIST(TEST_DECLARE)
#undef TEST_DECLARE

#define TEST_IMPL(name) int test_##name(void)

/* Fail the current test: print, and return 1 from the test function. */
#define FAIL(...)                                                         \
    do {                                                                  \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                   \
        fprintf(stderr, __VA_ARGS__);                                     \
        fprintf(stderr, "\n");                                            \
        return 1;                                                         \
    } while (0)

#define ASSERT(cond)                                  \
    do {                                              \
        if (!(cond)) FAIL("assertion failed: %s", #cond); \
    } while (0)

#define ASSERT_INT(a, op, b)                                                                      \
    do {                                                                                          \
        long long a_ = (long long)(a), b_ = (long long)(b);                                       \
        if (!(a_ op b_)) FAIL("%s %s %s: %lld vs %lld", #a, #op, #b, a_, b_);                     \
    } while (0)

/* A call that must succeed; on failure print its code and message. */
#define ASSERT_OK_MSG(expr, msg)                                                                   \
    do {                                                                                          \
        int rc_ = (expr);                                                                         \
        if (rc_ != OPTIM_OK) FAIL("%s returned %s: %s", #expr, optim_err_name(rc_), (msg));       \
    } while (0)
#define ASSERT_OK(expr) ASSERT_OK_MSG(expr, "")
#define ASSERT_OPT_OK(opt, expr) ASSERT_OK_MSG(expr, optim_errmsg(opt))

/* A call that must fail with `code` and a message containing `needle`. */
#define ASSERT_ERR(expr, code, msgexpr, needle)                                                   \
    do {                                                                                          \
        int rc_ = (expr);                                                                         \
        const char *m_ = (msgexpr);                                                               \
        if (rc_ != (code))                                                                        \
            FAIL("%s returned %s, expected %s (message: %s)", #expr, optim_err_name(rc_),         \
                 optim_err_name(code), m_);                                                       \
        if ((needle) && !strstr(m_, (needle)))                                                    \
            FAIL("%s: message \"%s\" does not mention \"%s\"", #expr, m_, (const char *)(needle)); \
    } while (0)

/* ---- Seeded random numbers (splitmix64) ------------------------------------ */
typedef struct test_rng {
    uint64_t s;
} test_rng;

static inline uint64_t test_rng_u64(test_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static inline double test_rng_uniform(test_rng *r) /* [0, 1) */
{
    return (double)(test_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}
static inline double test_rng_normal(test_rng *r)
{
    double u = test_rng_uniform(r), v = test_rng_uniform(r);
    if (u < 1e-300) u = 1e-300;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* The seed of this run: OPTIM_TEST_SEED if set, else a fixed default.
 * Printed by the runner so that any failure can be replayed. */
uint64_t test_seed(void);

#endif
