/* rule.h: what every update rule provides, and what is shared by all.
 *
 * A rule is one header src/rules/<name>.h, listed once in rule_list.h, with
 * three sections:
 *  - shared (guarded, compiled everywhere): its variant bits and their count
 *    OPTIM__<ID>_NVARIANTS (a bare number), the list of its per-step
 *    constants OPTIM__<ID>_K(X), and which state slots a variant reads and
 *    writes (optim__<name>_reads/_writes).
 *  - math (under OPTIM__MATH, compiled by the kernels once per compute type
 *    R, float or double): the element function OPTIM__T(optim__<name>_elem),
 *    which updates one element in registers. It is written once, in R, as
 *    plain C arithmetic in torch's operation order, with the helpers of
 *    rule_math.h (optim__sqrt, optim__fma, optim__max_nan, ...), no
 *    intrinsics and no literals of a fixed type (write (R)1). The library is
 *    compiled with -ffp-contract=off: a fused multiply-add happens only where
 *    optim__fma says so (where torch's CPU kernels round a*b+c once:
 *    docs/FIDELITY.md), and then on every path.
 *  - host (under OPTIM__RULE_HOST, compiled once, in rules.c): defaults,
 *    checks across fields, which slots the options need, initial slot
 *    values, the group hook, and `prepare`, which turns hyperparameters and
 *    the step number into the constants of the math section before the
 *    parallel pass (everything per step, nothing per element), in double.
 *    The kernels round the constants to the compute type as a loop starts.
 *
 * Variants: options that change which memory a rule touches or the order of
 * its arithmetic (AMSGrad, eps placement, L2 decay, momentum...) are bits of
 * `variant`. The kernels compile one loop per variant with the bits as
 * constants, so the loops carry no branches; a step whose variant has no
 * loop is refused before anything changes (never skipped).
 *
 * Rules with a per-tensor reduction (LAMB and LARS's trust ratios; listed
 * in rule_list.h's OPTIM__REDUCE_LIST): the step runs them in two passes
 * over each tensor. Pass 1, block by block (OPTIM__RBLOCK elements, one
 * thread per block), runs the rule's `pre` element function (a state
 * update that must precede the reduction: LAMB's moments) where the
 * constants ask for it (optim__kcommon.reduce & OPTIM__RED_PRE), then its
 * `red` element function, which yields two values per element whose
 * squares are summed in 16 double lanes per block, combined in a fixed
 * tree and then in block order (the same bits for any thread count and
 * CPU path), where they ask for it (OPTIM__RED_NORMS). Where both run on
 * arrays in the compute type (no conversion), the kernels run them in one
 * loop, element by element, red taking the state as stored: the same slots
 * and sums as pre and then red (kernels_math.h). The rule's host
 * `trust` hook turns the two sums of a tensor into its constants (the
 * trust ratio); pass 2 is the ordinary update loop. The header provides,
 * beside the usual sections: optim__<name>_pre_reads/_pre_writes/_red_reads
 * (slots), OPTIM__T(optim__<name>_pre)(R p, R g, R *s, c, k, V) and
 * OPTIM__T(optim__<name>_red)(R p, R g, const R *s, c, k, V, R *x) (x[0],
 * x[1]: the two values), and .trust in its optim__<name>_def.
 *
 * Element types are not the rules' concern: the kernels load each stream
 * (parameter, gradient, state slots) into R and store it back through its
 * storage descriptor (src/kernels/streams.c).
 */
#ifndef OPTIM_RULE_H
#define OPTIM_RULE_H

#include "../common.h"
#include "rule_list.h"

#include <math.h>

/* Variant bits shared by every rule. */
#define OPTIM__V_L2 1u    /* add weight_decay * p to the gradient */
#define OPTIM__V_EPSIN 2u /* eps inside the square root */
/* Fused value clipping: clamp the raw gradient. Above every rule's own bits
 * (the kernels instantiate each variant with and without it), so the clamp
 * costs nothing when off. */
#define OPTIM__V_CLAMP 0x80000000u
/* A complex parameter (OPTIM_PARAM_COMPLEX): the arrays hold (re, im) pairs
 * and the rule's complex math (src/rules/complex_list.h) runs on them. Set by
 * the step for the parameter, not by prepare; the kernels take it out of the
 * rule's variant and pick the complex instances. */
#define OPTIM__V_COMPLEX 0x40000000u

/* Constants every rule's element function sees (beside `variant`). */
#define OPTIM__KCOMMON(X)                                                                                 \
    X(gclip)  /* with OPTIM__V_CLAMP, the raw gradient is first clamped to [-gclip, gclip] (value clipping) */ \
    X(gscale) /* multiplies the raw gradient: -1 to maximize, times a clip factor */                          \
    X(wd)     /* L2 coefficient (used when the variant has OPTIM__V_L2) */                                    \
    X(decay)  /* decoupled weight decay factor 1 - lr*weight_decay, else 1 */

/* What a state slot holds, for storage types that care (OPTIM_INT8_BLOCK
 * codes: a signed code, or an unsigned one with twice the range): declared
 * per slot in each rule's optim__<name>_def.slot_kinds (0, SIGNED, is the
 * default). POSITIVE: non-negative, and a positive value must never be
 * stored as 0 (a second moment under a square root in a denominator: a
 * stored 0 would turn a tiny v into an update of m / eps). */
#define OPTIM__SLOT_SIGNED 0
#define OPTIM__SLOT_NONNEG 1
#define OPTIM__SLOT_POSITIVE 2

/* A struct of doubles from a constants list: what the host computes. */
#define OPTIM__FIELD_HOST(f) double f;

/* What pass 1 of a rule with a per-tensor reduction does for a tensor this
 * step (optim__kcommon.reduce; 0: no pass 1, the rules without one). */
#define OPTIM__RED_PRE 1u   /* run the rule's pre (state update) */
#define OPTIM__RED_NORMS 2u /* sum the squares of its red values, then call its trust hook */
/* Adafactor's passes (src/kernels/factored_run.c) instead of the generic
 * pass 1: the state, ||p||^2 and ||u||^2, then the trust hook. */
#define OPTIM__RED_FACTORED 4u

typedef struct optim__kcommon {
    unsigned variant;
    unsigned reduce; /* OPTIM__RED_* bits (host only; not seen by the element math) */
    OPTIM__KCOMMON(OPTIM__FIELD_HOST)
} optim__kcommon;

#endif
