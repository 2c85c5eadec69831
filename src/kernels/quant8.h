/* quant8.h: OPTIM_INT8_BLOCK, the 8-bit block-quantized state type, one
 * element and one block at a time, in integer and IEEE arithmetic only (so
 * that the compiler vectorises the loops over them and every CPU path gives
 * the same bits). Used by the storage descriptors of kernels_math.h and by
 * the host's conversions (initial values, checkpoints, optim_state_slot_*_f32),
 * so that every place quantizes alike. docs/PRECISION.md says why this code.
 *
 * A slot of n elements: n codes, then one float32 scale per block of
 * OPTIM__Q8_BLOCK elements at byte OPTIM_INT8_BLOCK_SCALES_OFFSET(n). The
 * scale of a block is A = max(largest finite |x| of the block, FLT_MIN); an
 * element is stored as the code nearest to y = x * (1 / A) (ties to the even
 * code; y is in [-1, 1] up to one rounding), read back as value(code) * A.
 * The codes are small floating-point formats whose largest used value is
 * 1.0, with subnormals, no infinities:
 *   signed slots:   bit 7 sign, then e (4 bits) and f (3 bits): magnitude
 *                   2^(e-15) (1 + f/8) for e > 0, f 2^-17 for e = 0; largest
 *                   used magnitude code 120 (1.0); no -0 (a zero magnitude
 *                   is code 0);
 *   unsigned slots: e (5 bits) and f (3 bits): 2^(e-31) (1 + f/8), f 2^-33
 *                   for e = 0; largest used code 248 (1.0); negative values
 *                   store 0; in POSITIVE slots a positive value whose code
 *                   would be 0 gets code 1 (never 0);
 *   both:           code 0xff is NaN (a NaN or infinite value).
 * Rounding each element's y to its code is an fp8 conversion by bit
 * arithmetic (round the binary32 mantissa to 3 bits, rebias the exponent; a
 * multiplication by a power of two and an integer rounding for subnormals):
 * no table, no search. */
#ifndef OPTIM_QUANT8_H
#define OPTIM_QUANT8_H

#include "convert.h"

#define OPTIM__Q8_BLOCK ((size_t)OPTIM_INT8_BLOCK_SIZE)
#define OPTIM__Q8_NAN 0xffu
/* Exponent biases of the two codes: the largest used value, 1.0, has e = bias. */
#define OPTIM__Q8_BIAS_S 15u
#define OPTIM__Q8_BIAS_U 31u

/* The magnitude code of a in [0, 1 + 2^-23] (finite) for exponent bias B:
 * nearest, ties to even, at most B << 3 (1.0). */
OPTIM_INLINE uint32_t optim__q8_mag(float a, const uint32_t B)
{
    const uint32_t u = optim__f32_bits(a);
    /* Normal range: round the mantissa to 3 bits to nearest even, rebias. */
    const uint32_t ur = u + 0x7ffffu + ((u >> 20) & 1u);
    const uint32_t norm = (ur >> 20) - ((127u - B) << 3);
    /* Subnormal range (a < 2^(1-B)): a in units of 2^-(B+2), rounded to an
     * integer to nearest even by the float addition (exact below 2^23); 8 is
     * the smallest normal code, so the two ranges meet without a seam. */
    const float lim = optim__f32_from_bits((128u - B) << 23); /* 2^(1-B) */
    const float units = optim__f32_from_bits((129u + B) << 23); /* 2^(B+2) */
    const uint32_t is_sub = OPTIM__MASK(a < lim);
    /* Selections as masks on the bits (a ?: here made compilers emit branches, not vectors). */
    const float t = optim__f32_from_bits(optim__f32_bits(a * units) & is_sub);
    const uint32_t sub = (uint32_t)(int32_t)((t + 0x1.0p23f) - 0x1.0p23f);
    const uint32_t c = (sub & is_sub) | (norm & ~is_sub);
    const uint32_t top = B << 3;
    const uint32_t over = OPTIM__MASK(c > top);
    return (top & over) | (c & ~over);
}

/* The value of magnitude code c (<= B << 3) for exponent bias B. */
OPTIM_INLINE float optim__q8_mag_value(uint32_t c, const uint32_t B)
{
    const uint32_t normal = (c + ((127u - B) << 3)) << 20;
    const float sub = (float)(int32_t)c * optim__f32_from_bits((125u - B) << 23); /* c 2^-(B+2) */
    const uint32_t is_sub = OPTIM__MASK(c < 8u);
    return optim__f32_from_bits((optim__f32_bits(sub) & is_sub) | (normal & ~is_sub));
}

OPTIM_INLINE uint32_t optim__q8_nonfinite(float x)
{
    return OPTIM__MASK((optim__f32_bits(x) & 0x7fffffffu) >= 0x7f800000u);
}

/* The code of x in a signed slot from the magnitude code of |y| (uy: the
 * bits of y = x / A): the sign bit on a nonzero magnitude, 0xff for NaN
 * and infinities. */
OPTIM_INLINE uint8_t optim__q8_code_s(float x, uint32_t uy, uint32_t mag)
{
    const uint32_t code = mag | (OPTIM__MASK(mag != 0u) & ((uy >> 31) << 7));
    const uint32_t nan = optim__q8_nonfinite(x);
    return (uint8_t)((OPTIM__Q8_NAN & nan) | (code & ~nan));
}

/* The code of x in an unsigned slot from the magnitude code of |y|:
 * negative values store 0; positive = 1: a positive x never stores 0
 * (OPTIM__SLOT_POSITIVE); 0xff for NaN and infinities. */
OPTIM_INLINE uint8_t optim__q8_code_u(float x, uint32_t mag, const int positive)
{
    const uint32_t pos = OPTIM__MASK(x > 0.0f);
    uint32_t code = mag & pos;
    const uint32_t nan = optim__q8_nonfinite(x);
    if (positive) code |= pos & OPTIM__MASK(code == 0u) & 1u;
    return (uint8_t)((OPTIM__Q8_NAN & nan) | (code & ~nan));
}

/* Code of x in a signed slot, with r = 1 / A of its block. */
OPTIM_INLINE uint8_t optim__q8_enc_s(float x, float r)
{
    const uint32_t uy = optim__f32_bits(x * r);
    return optim__q8_code_s(x, uy, optim__q8_mag(optim__f32_from_bits(uy & 0x7fffffffu), OPTIM__Q8_BIAS_S));
}

/* Code of x in an unsigned slot (negative values store 0); positive = 1: a
 * positive x never stores 0 (OPTIM__SLOT_POSITIVE). */
OPTIM_INLINE uint8_t optim__q8_enc_u(float x, float r, const int positive)
{
    /* |y|: a negative (or NaN) x's code is masked to 0 (or 0xff) by optim__q8_code_u. */
    const uint32_t a = optim__f32_bits(x * r) & 0x7fffffffu;
    return optim__q8_code_u(x, optim__q8_mag(optim__f32_from_bits(a), OPTIM__Q8_BIAS_U), positive);
}

/* ---- Stochastic rounding of the codes (OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING) --------------
 * The code of y is its lower neighbour c (the largest code whose value is at
 * most |y|) or c + 1, up with probability (|y| - value(c)) / (value(c + 1) -
 * value(c)): unbiased in the dequantized domain (E[value(code)] = |y|). Both
 * ranges are fixed point: in the normal range the 20 dropped bits of |y|'s
 * mantissa are that fraction in units of 2^-20 exactly; below the smallest
 * normal code (spacing 2^-(B+2), as in the first normal binade) t = |y| in
 * code units is put in [8, 16) by adding 8, which leaves 20 fraction bits
 * (rounded to nearest even there: below 2^-20 of a code step). Adding 20
 * random bits r20 (0 .. 2^20 - 1) below the kept bits and truncating rounds
 * up exactly when they carry: the bf16 stochastic store's trick, on 3 kept
 * mantissa bits. Codes at or above 1.0 stay 1.0 (top); the other rules of the
 * nearest code hold (signs, negative values in unsigned slots, the POSITIVE
 * kind's never-0, NaN). The random bits come from convert.h's counter-based
 * stream (optim__sr_bits20). */
OPTIM_INLINE uint32_t optim__q8_mag_sr(float a, const uint32_t B, uint32_t r20)
{
    const uint32_t u = optim__f32_bits(a);
    const uint32_t norm = ((u + r20) >> 20) - ((127u - B) << 3);
    const float lim = optim__f32_from_bits((128u - B) << 23);   /* 2^(1-B) */
    const float units = optim__f32_from_bits((129u + B) << 23); /* 2^(B+2) */
    const uint32_t is_sub = OPTIM__MASK(a < lim);
    /* t in [0, 8): 8 + t has its integer part's 3 bits above 20 fraction bits (0x41000000 is 8.0f). */
    const float t = optim__f32_from_bits(optim__f32_bits(a * units) & is_sub);
    const uint32_t fix = optim__f32_bits(t + 8.0f) - 0x41000000u;
    const uint32_t sub = (fix + r20) >> 20;
    const uint32_t c = (sub & is_sub) | (norm & ~is_sub);
    const uint32_t top = B << 3;
    const uint32_t over = OPTIM__MASK(c > top);
    return (top & over) | (c & ~over);
}

/* The canonical NaN of the library's stores (rule_math.h's optim__canon). */
#define OPTIM__Q8_QNAN 0x7fc00000u

OPTIM_INLINE float optim__q8_dec_s(uint8_t code, float A)
{
    const uint32_t c = code;
    const float v = optim__q8_mag_value(c & 0x7fu, OPTIM__Q8_BIAS_S);
    const float x = optim__f32_from_bits(optim__f32_bits(v) | ((c >> 7) << 31)) * A;
    const uint32_t nan = OPTIM__MASK(c == OPTIM__Q8_NAN);
    return optim__f32_from_bits((OPTIM__Q8_QNAN & nan) | (optim__f32_bits(x) & ~nan));
}

OPTIM_INLINE float optim__q8_dec_u(uint8_t code, float A)
{
    const uint32_t c = code;
    const float x = optim__q8_mag_value(c < 248u ? c : 248u, OPTIM__Q8_BIAS_U) * A;
    const uint32_t nan = OPTIM__MASK(c == OPTIM__Q8_NAN);
    return optim__f32_from_bits((OPTIM__Q8_QNAN & nan) | (optim__f32_bits(x) & ~nan));
}

/* optim__q8_enc_s / optim__q8_enc_u with the code's magnitude rounded
 * stochastically by the random bits r20 (optim__q8_mag_sr). */
OPTIM_INLINE uint8_t optim__q8_enc_s_sr(float x, float r, uint32_t r20)
{
    const uint32_t uy = optim__f32_bits(x * r);
    return optim__q8_code_s(x, uy, optim__q8_mag_sr(optim__f32_from_bits(uy & 0x7fffffffu), OPTIM__Q8_BIAS_S, r20));
}

OPTIM_INLINE uint8_t optim__q8_enc_u_sr(float x, float r, const int positive, uint32_t r20)
{
    const uint32_t a = optim__f32_bits(x * r) & 0x7fffffffu;
    return optim__q8_code_u(x, optim__q8_mag_sr(optim__f32_from_bits(a), OPTIM__Q8_BIAS_U, r20), positive);
}

/* The scale of a block: max(largest finite |x|, FLT_MIN), as the maximum of
 * the bit patterns (an integer maximum, which every path vectorises). */
OPTIM_INLINE float optim__q8_absmax(const float *restrict x, size_t n)
{
    uint32_t m = 0x00800000u; /* FLT_MIN: 1 / A stays finite */
    size_t i;
    for (i = 0; i < n; i++) {
        const uint32_t a = optim__f32_bits(x[i]) & 0x7fffffffu;
        const uint32_t f = a & ~OPTIM__MASK(a >= 0x7f800000u);
        m = f > m ? f : m;
    }
    return optim__f32_from_bits(m);
}

/* Does slot kind k (rule.h's OPTIM__SLOT_*) use the unsigned code? */
#define OPTIM__Q8_UNSIGNED(kind) ((kind) != 0)
#define OPTIM__Q8_POSITIVE(kind) ((kind) == 2)

/* Host-side (one element at a time, compiled once): quantize n floats into
 * codes and scales of a slot of kind `kind`, and back. */
OPTIM_INLINE void optim__q8_quantize(uint8_t *codes, float *scales, const float *src, size_t n, int kind)
{
    size_t b, i;
    for (b = 0; b < n; b += OPTIM__Q8_BLOCK) {
        const size_t len = n - b < OPTIM__Q8_BLOCK ? n - b : OPTIM__Q8_BLOCK;
        const float A = optim__q8_absmax(src + b, len), r = 1.0f / A;
        scales[b / OPTIM__Q8_BLOCK] = A;
        for (i = 0; i < len; i++)
            codes[b + i] = OPTIM__Q8_UNSIGNED(kind) ? optim__q8_enc_u(src[b + i], r, OPTIM__Q8_POSITIVE(kind))
                                                    : optim__q8_enc_s(src[b + i], r);
    }
}

OPTIM_INLINE void optim__q8_dequantize(float *dst, const uint8_t *codes, const float *scales, size_t n, int kind)
{
    size_t i;
    for (i = 0; i < n; i++)
        dst[i] = OPTIM__Q8_UNSIGNED(kind) ? optim__q8_dec_u(codes[i], scales[i / OPTIM__Q8_BLOCK])
                                          : optim__q8_dec_s(codes[i], scales[i / OPTIM__Q8_BLOCK]);
}

#endif
