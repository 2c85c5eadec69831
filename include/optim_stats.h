/* optim_stats.h: statistics of each step, measured by the step itself.
 *
 * Off by default. With optim_set_stats(opt, 1), every step (optim_step and
 * its variants, SAM's second step) measures, per parameter, from the values
 * its update pass already holds (no extra pass over memory: the rule's loop
 * runs as its statistics variant, which measures each element in registers
 * as it updates it): the gradient's norm, the update's RMS and largest magnitude,
 * the parameter's RMS, the fraction of clamped elements; and from the
 * step's per-tensor constants: the effective learning rate, RAdam's
 * rectification, LAMB's and LARS's trust ratio. Steps with statistics off
 * run exactly the code they ran before the option existed.
 *
 * Deterministic: sums run in 16 lanes of the compute type (float, double
 * for float64 parameters) per chunk of 512 elements (element i of a chunk
 * in lane i % 16, squares added by fused multiply-adds), each lane then
 * added in double to its lane of a fixed block of 8192 elements, a block's
 * lanes combined in a fixed tree, the blocks in order; with statistics on a
 * thread's share of a tensor starts at a block boundary: the same bits on
 * every CPU path and for any thread count (float sums: within about 2e-6
 * relative of exact ones; docs/STATS.md, "Precision"). Turning statistics
 * on changes no bit of any parameter or state.
 *
 * Definitions (docs/STATS.md says the same with examples):
 *   update u_i    the change applied to element i of the value the rule
 *                 computes in, in that type: p_after - p_before (rounded once),
 *                 where p is the float32 or float64 parameter itself, the
 *                 float32 master of a parameter with OPTIM_PARAM_MASTER, and
 *                 for a bfloat16/float16 parameter without master its value
 *                 widened to float32, p_after being the value as stored
 *                 (rounded, stochastically or not): an update that rounds
 *                 away is 0.
 *   grad_norm     |gscale| * sqrt(sum clamp(g_i)^2): the gradient as the rule
 *                 receives it before weight decay (clamped by value
 *                 clipping, times the norm-clipping factor and 1 / the loss
 *                 scale; maximize's sign does not matter).
 *   update_rms    sqrt(sum u_i^2 / n); param_rms sqrt(sum p_before_i^2 / n);
 *   update_ratio  update_rms / param_rms (= ||u|| / ||p||; inf or NaN for a
 *                 zero parameter);
 *   update_max    max |u_i| (NaN if an update is NaN);
 *   clamped_fraction  the fraction of elements whose gradient value clipping
 *                 clamped or whose step size AdaBound's bounds clamped;
 *   effective_lr  the rule's scalar step size this step (per rule in
 *                 docs/STATS.md: lr after its schedule, times the bias
 *                 correction, LAMB's/LARS's trust ratio ...); NaN for Rprop
 *                 (per-element step sizes only);
 *   trust_ratio   LAMB and LARS: the ratio this step applied (1 where the
 *                 rule's options excluded the tensor); NaN for other rules;
 *   rectified     RAdam: 1 if the step was rectified, 0 if it was not; -1
 *                 for other rules.
 * Complex parameters (OPTIM_PARAM_COMPLEX) are measured as their real view,
 * per complex element: n counts complex elements, the RMS values are
 * sqrt(sum |z|^2 / n), update_max is the largest |real or imaginary part|
 * and clamped_fraction the fraction of real and imaginary parts clamped. Sparse steps (optim_step_sparse)
 * measure the per-tensor values only (has_elements = 0).
 */
#ifndef OPTIM_STATS_H
#define OPTIM_STATS_H

#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/** One parameter's statistics of the last step. */
typedef struct optim_step_stats {
    int64_t step;          /* the parameter's step counter after the step they are of (its own
                              count of updates); 0 if the last step with statistics on did not
                              update it */
    int has_elements;      /* 1: n and the element statistics below were measured */
    size_t n;              /* elements measured (the parameter's size; complex elements of a complex one) */
    double grad_norm;      /* element statistics (NaN when has_elements == 0) */
    double update_rms;
    double param_rms;
    double update_ratio;
    double update_max;
    double clamped_fraction;
    double effective_lr;   /* per-tensor values */
    double trust_ratio;
    int rectified;
} optim_step_stats;

/**
 * Measure statistics in the steps that follow (on = 1) or not (0, the
 * default). Nothing is allocated here: the 5 doubles per block of 8192
 * elements the statistics need are reserved with the parameters
 * (optim_add_param), so parameters added later are covered and turning them
 * on cannot fail for memory. OPTIM_EINVAL names any other value of on.
 */
OPTIM_API int optim_set_stats(optim *opt, int on);

/** Whether statistics are on (0 for NULL). */
OPTIM_API int optim_stats_enabled(const optim *opt);

/**
 * Parameter `index`'s statistics of the last step that ran with statistics
 * on (out->step == 0 if that step did not update it: no gradient, skipped by
 * a non-finite policy, by dynamic loss scaling or with a skipped SAM first
 * step, or no step yet). The schedule-free train/eval switch is no step: it
 * leaves the records as they were. OPTIM_ERANGE names a bad index;
 * OPTIM_ENULL for a NULL out.
 */
OPTIM_API int optim_param_stats(optim *opt, size_t index, optim_step_stats *out);

#ifdef __cplusplus
}
#endif

#endif
