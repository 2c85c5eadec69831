/* optim_sparse.h: steps with sparse (row-indexed) gradients.
 *
 * An embedding table of R rows of L elements whose gradient touches k rows
 * (torch's nn.Embedding(sparse=True) gives such a gradient) is stepped in
 * O(k * L): only the rows present are read and written, their state rows
 * too; every other row of the parameter and of its state keeps every byte.
 *
 * Which rules take them (as torch 1.13's optimizers do):
 *   SGD          with momentum = 0 and weight_decay = 0 (torch refuses weight
 *                decay with a sparse gradient; a momentum buffer decays every
 *                row at every step, so a sparse step with momentum is
 *                refused here: step it densely). The rounding of a dense step.
 *                Rows may repeat (adjacent, in non-decreasing order): each
 *                entry is applied after the one before it, as torch adds an
 *                uncoalesced gradient entry by entry (sort the entries by row,
 *                stably, to keep torch's order among repeats).
 *   ADAGRAD      with weight_decay = 0 (torch refuses it): the sums and the
 *                parameter at the present rows only, rounded as torch's
 *                sparse path (sum + g*g in two roundings; the update one
 *                fused multiply-add), lr_decay by the parameter's step.
 *   SPARSE_ADAM  only sparse gradients: torch.optim.SparseAdam (a dense step
 *                over a parameter with a gradient is refused naming it).
 * Every other rule refuses them (OPTIM_EUNSUPPORTED naming the rule), as
 * torch's "<rule> does not support sparse gradients".
 */
#ifndef OPTIM_SPARSE_H
#define OPTIM_SPARSE_H

#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * A sparse gradient of a parameter of n elements seen as n / row_len rows of
 * row_len elements (row r is elements [r * row_len, (r + 1) * row_len)):
 * the rows present, in strictly increasing order (a coalesced gradient:
 * torch's coalesce() sums duplicate indices and sorts them; SGD also takes
 * repeated rows, see above), and their
 * values, nrows * row_len elements of the parameter's gradient type, row
 * after row (torch's values() of a coalesced tensor, contiguous). nrows may
 * be 0 (an empty gradient: nothing is updated, the step still counts).
 */
typedef struct optim_sparse_grad {
    const int64_t *rows; /* nrows row indices, each in [0, n / row_len), strictly increasing (SGD: non-decreasing) */
    size_t nrows;
    size_t row_len;      /* > 0 and dividing n (n = 0: any row_len > 0, and nrows = 0) */
    const void *values;  /* nrows * row_len elements; may be NULL when nrows = 0 */
} optim_sparse_grad;

/** What a rule does with sparse gradients. */
typedef enum optim_sparse_support {
    OPTIM_SPARSE_NO = 0,  /* refuses them */
    OPTIM_SPARSE_YES = 1, /* takes dense and sparse gradients */
    OPTIM_SPARSE_ONLY = 2 /* takes sparse gradients only (SPARSE_ADAM) */
} optim_sparse_support;

/** Whether `rule` takes sparse gradients; OPTIM_SPARSE_NO for a value that
 *  is not a rule. */
OPTIM_API optim_sparse_support optim_rule_sparse(optim_rule rule);

/**
 * optim_step_with_data with some gradients sparse: params[i] and grads[i] as
 * there, and sparse (may be NULL: none) an array of count pointers, sparse[i]
 * NULL for a dense gradient (grads[i], or none when grads[i] is NULL) or the
 * sparse gradient of parameter i (grads[i] must then be NULL). One step over
 * every parameter: counters, schedules, clipping (the norm of a sparse
 * gradient is that of its values), non-finite policies and loss scaling as
 * for a dense step. The descriptors and their arrays are read during the call
 * only. Refused, with nothing changed and a message naming the parameter and
 * the value: a rule that takes no sparse gradient, or an option it refuses
 * them with (OPTIM_EUNSUPPORTED); a row index out of range or not above the
 * one before it, row_len 0 or not dividing n, nrows above n / row_len (SGD,
 * whose rows may repeat: nrows whose byte count overflows size_t), values or
 * rows NULL with nrows > 0, both grads[i] and sparse[i] given (OPTIM_EINVAL / OPTIM_ENULL);
 * parameters or state not held in the compute type (bfloat16, float16,
 * int8_block state, fp32 masters, stochastic rounding: OPTIM_EUNSUPPORTED);
 * values or rows overlapping a parameter (OPTIM_EOVERLAP). A parameter
 * stepped with a sparse gradient keeps no gradient pointer afterwards (a
 * later optim_step skips it until a gradient is bound again).
 */
OPTIM_API int optim_step_sparse(optim *opt, size_t count, void *const *params, const void *const *grads,
                                const optim_sparse_grad *const *sparse);

#ifdef __cplusplus
}
#endif

#endif
