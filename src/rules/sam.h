/* sam.h: the element math of SAM's ascent step (Foret et al. 2020) and of
 * ASAM (Kwon et al. 2021). Not a rule of the list: src/sam.c drives it
 * around any rule's optimizer, with its own constants (optim__sam_k).
 *
 * With T = |w| + eta for ASAM (T = 1 for SAM), h = T g, 1/p + 1/q = 1:
 *   e = rho T sign(h) (|h| / ||h||_q)^(q-1)
 *   p = 2 (as the reference PyTorch SAM): e = (T^2 g) * scale, scale = rho / (||h||_2 + 1e-12)
 *   p = inf:                              e = rho T sign(h)
 *   w_saved = w;  w = w + e
 * The kernels run it on float32 parameters (optim_sam_create refuses others).
 */
#ifndef OPTIM_RULE_SAM_H
#define OPTIM_RULE_SAM_H
#include "rule.h"

#define OPTIM__SAM_V_ADAPTIVE 1u
#define OPTIM__SAM_V_PINF 2u /* p = inf */
#define OPTIM__SAM_V_PGEN 4u /* 1 < p < inf, p != 2 */
#define OPTIM__SAM_NVARIANTS 8

/* The constants of the ascent step, per group. */
typedef struct optim__sam_k {
    unsigned variant;
    float scale;     /* p = 2: rho / (||h||_2 + 1e-12) */
    float rho;
    float eta;       /* ASAM: T = |w| + eta */
    double inv_norm; /* general p: 1 / ||h||_q */
    double q_minus_1;
} optim__sam_k;
#endif

#ifdef OPTIM__MATH
/* The perturbed value of one element. */
OPTIM_INLINE R OPTIM__T(optim__sam_elem)(R w, R g, const optim__sam_k *k, unsigned V)
{
    R t = (V & OPTIM__SAM_V_ADAPTIVE) ? optim__fabs(w) + (R)k->eta : (R)1;
    if (V & OPTIM__SAM_V_PINF) return w + (R)k->rho * t * optim__sign(t * g);
    if (V & OPTIM__SAM_V_PGEN) {
        R h = t * g;
        double r = pow(fabs((double)h) * k->inv_norm, k->q_minus_1);
        return w + (R)((double)k->rho * (double)t * (double)optim__sign(h) * r);
    }
    return w + ((V & OPTIM__SAM_V_ADAPTIVE) ? (t * t) * g : g) * (R)k->scale;
}
#endif
