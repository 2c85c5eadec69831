/* rule.h: what every update rule provides, and the helpers their math uses.
 *
 * A rule is one header in src/rules/ with two sections:
 *  - math (always compiled): a struct of per-step constants, the element
 *    function that updates one element in registers, and which state slots a
 *    variant reads and writes. Kernels include this part and instantiate it
 *    per CPU path; it must be plain C arithmetic in torch's operation order,
 *    no intrinsics. The library is compiled with -ffp-contract=off, so the
 *    compiler never fuses a multiply and an add by itself; where torch's CPU
 *    kernels round a*b+c once (add with alpha, addcmul: see docs/FIDELITY.md)
 *    the rule writes fmaf(a, b, c), which every path computes with one
 *    rounding (a vfmadd instruction on AVX2/AVX-512, libm's correctly
 *    rounded fmaf on the scalar path), so every path gives the same bits.
 *  - host (compiled once, in rules.c, under OPTIM__RULE_HOST): defaults,
 *    checks across fields, which slots the options need, and `prepare`, which
 *    turns hyperparameters and the step number into the constants of the
 *    math section before the parallel pass (everything per step, nothing per
 *    element).
 * The table in rules.c lists the rules; adding one is a header and a row.
 *
 * Variants: options that change which memory a rule touches or the order of
 * its arithmetic (AMSGrad, eps placement, L2 decay, momentum...) are bits of
 * `variant`. The kernels compile one loop per variant with the bits as
 * constants, so the loops carry no branches.
 */
#ifndef OPTIM_RULE_H
#define OPTIM_RULE_H

#include "../common.h"

#include <math.h>

/* Variant bits shared by every rule. */
#define OPTIM__V_L2 1u    /* add weight_decay * p to the gradient */
#define OPTIM__V_EPSIN 2u /* eps inside the square root */
/* Fused value clipping: clamp the raw gradient. Above every rule's own bits
 * (the kernels instantiate each variant with and without it), so the clamp
 * costs nothing when off. */
#define OPTIM__V_CLAMP 0x80000000u

/* Constants every rule's element function sees. */
typedef struct optim__kcommon {
    unsigned variant;
    float gclip;  /* with OPTIM__V_CLAMP, the raw gradient is first clamped to [-gclip, gclip] (value clipping) */
    float gscale; /* multiplies the raw gradient: -1 to maximize, times a clip factor */
    float wd;     /* L2 coefficient (used when the variant has OPTIM__V_L2) */
    float decay;  /* decoupled weight decay factor 1 - lr*weight_decay, else 1 */
} optim__kcommon;

/* torch.maximum: NaN if either input is NaN. */
OPTIM_INLINE float optim__max_nan(float a, float b)
{
    return (a != a || a > b) ? a : b;
}

/* torch.clamp(x, lo, hi): a NaN x stays NaN. */
OPTIM_INLINE float optim__clamp(float x, float lo, float hi)
{
    x = x < lo ? lo : x;
    return x > hi ? hi : x;
}

/* The two placements of eps relative to a square root. */
OPTIM_INLINE float optim__rms(float v, float eps, unsigned epsin)
{
    return epsin ? sqrtf(v + eps) : sqrtf(v) + eps;
}

/* The gradient as the rule sees it: clamped (clip_grad_value_, a NaN stays
 * NaN), scaled (maximize, norm clipping), then with L2 weight decay, as torch
 * does (d_p = -g; d_p = d_p.add(p, alpha=wd): one rounding of d_p + wd * p). */
OPTIM_INLINE float optim__grad(float g, float p, const optim__kcommon *c, unsigned V)
{
    if (V & OPTIM__V_CLAMP) g = optim__clamp(g, -c->gclip, c->gclip);
    g = g * c->gscale;
    if (V & OPTIM__V_L2) g = fmaf(c->wd, p, g);
    return g;
}

#endif
