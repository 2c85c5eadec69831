/* sam.h: the element math of SAM's ascent step (Foret et al. 2020) and of
 * ASAM (Kwon et al. 2021). Not a rule of the table: src/sam.c drives it
 * around any rule's optimizer.
 *
 * With T = |w| + eta for ASAM (T = 1 for SAM), h = T g, 1/p + 1/q = 1:
 *   e = rho T sign(h) (|h| / ||h||_q)^(q-1)
 *   p = 2 (as the reference PyTorch SAM): e = (T^2 g) * scale, scale = rho / (||h||_2 + 1e-12)
 *   p = inf:                              e = rho T sign(h)
 *   w_saved = w;  w = w + e
 * Slot 0 of the kernel task is w_saved.
 */
#ifndef OPTIM_RULE_SAM_MATH
#define OPTIM_RULE_SAM_MATH
#include "rule.h"

#define OPTIM__SAM_V_ADAPTIVE 1u
#define OPTIM__SAM_V_PINF 2u /* p = inf */
#define OPTIM__SAM_V_PGEN 4u /* 1 < p < inf, p != 2 */
#define OPTIM__SAM_VARIANTS 8u

typedef struct optim__sam_k {
    float scale;     /* p = 2: rho / (||h||_2 + 1e-12) */
    float rho;
    float eta;       /* ASAM: T = |w| + eta */
    double inv_norm; /* general p: 1 / ||h||_q */
    double q_minus_1;
} optim__sam_k;

OPTIM_INLINE float optim__sign(float x)
{
    return x > 0 ? 1.0f : (x < 0 ? -1.0f : x); /* torch.sign: 0 stays 0, NaN stays NaN */
}

/* The perturbation of one element. */
OPTIM_INLINE float optim__sam_elem(float w, float g, const optim__sam_k *k, unsigned V)
{
    float t = (V & OPTIM__SAM_V_ADAPTIVE) ? fabsf(w) + k->eta : 1.0f;
    if (V & OPTIM__SAM_V_PINF) return w + k->rho * t * optim__sign(t * g);
    if (V & OPTIM__SAM_V_PGEN) {
        float h = t * g;
        double r = pow(fabs((double)h) * k->inv_norm, k->q_minus_1);
        return w + (float)((double)k->rho * (double)t * (double)optim__sign(h) * r);
    }
    return w + ((V & OPTIM__SAM_V_ADAPTIVE) ? (t * t) * g : g) * k->scale;
}
#endif
