/*
 * optim_sam.h: Sharpness-Aware Minimization (Foret et al. 2020) and ASAM
 * (Kwon et al. 2021) around any optimizer of the library.
 *
 * SAM minimises  max_{||e||_p <= rho} L(w + e)  by two gradient evaluations per step:
 *
 *   optim_sam_first_step:  saves w and moves to w + e_hat, where with
 *                          h = T_w g (T_w = |w| + eta for ASAM, identity for SAM),
 *                          1/p + 1/q = 1,
 *                          e_hat = rho T_w sign(h) (|h| / ||h||_q)^(q-1)
 *                          (p = 2: e_hat = rho T_w^2 g / (||T_w g||_2 + 1e-12), with
 *                           the reference PyTorch SAM's 1e-12;
 *                           p = inf: e_hat = rho T_w sign(h), no norm needed);
 *   the caller recomputes the gradients at w + e_hat;
 *   optim_sam_second_step: restores w and takes the base optimizer's step with
 *                          the new gradients.
 *
 * The norm is taken over all parameters of the base optimizer as one vector,
 * in a fixed order, so it is bit-identical for any thread count. Parameters
 * without a gradient are not perturbed (as in the reference PyTorch SAM).
 * A non-finite first gradient follows the base optimizer's optim_nonfinite
 * policy: PROPAGATE perturbs with NaN (as the reference does), SKIP skips the
 * whole SAM step, ERROR fails first_step with OPTIM_ENONFINITE.
 *
 * Memory replaced between the halves. The saved w belongs to each parameter,
 * not to the memory it was read from: second_step and restore write it into
 * the memory bound to the parameter when they run, after rebinding (the _with
 * forms rebind first; optim_set_param_ptrs on the base between the halves
 * rebinds too), as the reference PyTorch SAM's p.data = old_p does. Memory
 * the parameter was bound to before is never written again, so it may be
 * freed as soon as it is replaced. A rebinding that is refused (count,
 * NULL, overlap) changes nothing: the step can still be completed or
 * restored. The caller must keep memory that is still bound alive.
 *
 * While perturbed (between first_step and second_step/restore), the base
 * optimizer refuses, with OPTIM_ESTATE and nothing changed, whatever would
 * act on w + e or lose the way back to w: optim_step and optim_step_with of
 * its own, optim_add_param, optim_add_group, the first_step of another SAM
 * object over it, and checkpoints (optim_save, optim_load, ...). Rebinding
 * (optim_set_param_ptrs, optim_set_grad), hyperparameters and settings may
 * change. So second_step or restore always brings the parameters back to w.
 *
 * Lifetimes. The SAM object does not own its base; the base knows the SAM
 * objects over it. Either may be freed first, perturbed or not, and neither
 * free writes to the parameters (their memory may be gone): freeing the SAM
 * object mid-step leaves the parameters at w + e and the base free to step;
 * freeing the base detaches every SAM object over it, which then refuses
 * every call but the getters of its own settings (OPTIM_ESTATE, "the base
 * optimizer was freed") and must still be freed. A SAM object and its base
 * are one object for threads: calls on either must not run concurrently with
 * calls on the other (different optimizers, each with its SAM objects, may be
 * used from different threads at once).
 */
#ifndef OPTIM_SAM_H
#define OPTIM_SAM_H

#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct optim_sam optim_sam;

/** Wrap base (not owned; either may be freed first, see above). rho >= 0;
 *  p > 1 or INFINITY (2 is SAM's default); adaptive 0 or 1; eta >= 0 (ASAM's
 *  T_w = |w| + eta; 0 as the reference PyTorch SAM). Allocates the copy of w
 *  for every parameter base has now; once base has other parameters or
 *  groups (added between steps), first_step refuses (OPTIM_ESTATE): make a new
 *  SAM object. */
OPTIM_API int optim_sam_create(optim_sam **out, optim *base, double rho, double p, int adaptive, double eta,
                               optim_error *err);
/** Free the SAM object and its copy of w (NULL: nothing). Never writes to the
 *  parameters: freed between the halves, it leaves them at w + e. */
OPTIM_API void optim_sam_free(optim_sam *sam);
/** Last error message on this handle ("" if none). */
OPTIM_API const char *optim_sam_errmsg(const optim_sam *sam);

/** Move to w + e_hat using the gradients bound in the base optimizer. */
OPTIM_API int optim_sam_first_step(optim_sam *sam);
/** Restore w into the memory bound now, then optim_step(base) with the
 *  gradients now bound. If first_step skipped (non-finite gradient under the
 *  base's SKIP policy), the whole SAM step is skipped: nothing moves and the
 *  base counts a skipped step. */
OPTIM_API int optim_sam_second_step(optim_sam *sam);
/** Rebind every parameter's memory first, as optim_step_with (for bindings
 *  whose buffers change between the two halves); second_step_with rebinds
 *  before it restores, so w goes into the new memory. */
OPTIM_API int optim_sam_first_step_with(optim_sam *sam, size_t count, float *const *params,
                                        const float *const *grads);
OPTIM_API int optim_sam_second_step_with(optim_sam *sam, size_t count, float *const *params,
                                         const float *const *grads);
/** Restore w without stepping (to abandon a step after first_step). */
OPTIM_API int optim_sam_restore(optim_sam *sam);
/** Rebind every parameter's memory first, then restore w into it (for a
 *  binding whose tensors were replaced since first_step). */
OPTIM_API int optim_sam_restore_with(optim_sam *sam, size_t count, float *const *params, const float *const *grads);

/** The dual norm ||T_w g||_q (1/p + 1/q = 1) measured by the last first_step. */
OPTIM_API double optim_sam_last_grad_norm(const optim_sam *sam);
/** 1 between first_step and second_step/restore (0 once the base is freed). */
OPTIM_API int optim_sam_is_perturbed(const optim_sam *sam);

/** rho, adaptive and eta of one group of the base optimizer, as the reference
 *  PyTorch SAM keeps rho and adaptive per group: h = T_w g uses each
 *  parameter's group's T_w, the norm is still taken over all parameters, and
 *  e_hat uses the group's rho (p is one value: it defines the norm).
 *  optim_sam_create gives every group its arguments; groups added to base
 *  later are refused by first_step. */
OPTIM_API int optim_sam_set_group(optim_sam *sam, size_t g, double rho, int adaptive, double eta);
OPTIM_API int optim_sam_get_group(const optim_sam *sam, size_t g, double *rho, int *adaptive, double *eta);
/** Set rho for every group. */
OPTIM_API int optim_sam_set_rho(optim_sam *sam, double rho);
/** Group 0's settings (see optim_sam_get_group for the others). */
OPTIM_API double optim_sam_get_rho(const optim_sam *sam);
OPTIM_API int optim_sam_get_adaptive(const optim_sam *sam);
OPTIM_API double optim_sam_get_eta(const optim_sam *sam);
OPTIM_API double optim_sam_get_p(const optim_sam *sam);
/** The base optimizer, or NULL once it was freed. */
OPTIM_API optim *optim_sam_base(const optim_sam *sam);

#ifdef __cplusplus
}
#endif
#endif
