/* convert.h: element conversions between the storage types and float, one
 * element at a time, in integer and IEEE arithmetic only (so that the
 * compiler vectorises them and every CPU path gives the same bits). The
 * rounding ones are torch's (c10/util/BFloat16.h, c10/util/Half.h), so a
 * stored bfloat16 or float16 is the one torch's .to() gives.
 *
 * A future path with hardware conversions (AVX-512 BF16's vcvtne2ps2bf16,
 * F16C's vcvtps2ph) must give these bits, NaN included. */
#ifndef OPTIM_CONVERT_H
#define OPTIM_CONVERT_H

#include "../common.h"

#include <math.h>
#include <string.h>

OPTIM_INLINE uint32_t optim__f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

OPTIM_INLINE float optim__f32_from_bits(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* bfloat16 -> float: exact (the upper half of a binary32). */
OPTIM_INLINE float optim__bf16_to_f32(uint16_t h)
{
    return optim__f32_from_bits((uint32_t)h << 16);
}

/* All ones where c (0 or 1) is 1: selections written as masks, which every
 * compiler vectorises (a ?: on mixed float and integer types may not be). */
#define OPTIM__MASK(c) ((uint32_t)0 - (uint32_t)(c))

/* float -> bfloat16, round to nearest even; NaN -> 0x7fc0 (torch's
 * round_to_nearest_even). */
OPTIM_INLINE uint16_t optim__f32_to_bf16(float x)
{
    const uint32_t u = optim__f32_bits(x);
    const uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const uint32_t nan = OPTIM__MASK((u & 0x7fffffffu) > 0x7f800000u);
    return (uint16_t)((0x7fc0u & nan) | (r & ~nan));
}

/* float16 -> float: exact (torch's fp16_ieee_to_fp32_value: normal numbers
 * rebias the exponent by a multiplication by 2^-112, subnormals come out of
 * a subtraction of 0.5; both exact). */
OPTIM_INLINE float optim__f16_to_f32(uint16_t h)
{
    const uint32_t w = (uint32_t)h << 16;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t two_w = w + w;
    const float normalized = optim__f32_from_bits((two_w >> 4) + (0xe0u << 23)) * 0x1.0p-112f;
    const float denormalized = optim__f32_from_bits((two_w >> 17) | (126u << 23)) - 0.5f;
    const uint32_t sub = OPTIM__MASK(two_w < (1u << 27));
    return optim__f32_from_bits(sign | (optim__f32_bits(denormalized) & sub) | (optim__f32_bits(normalized) & ~sub));
}

/* float -> float16, round to nearest even (torch's fp16_ieee_from_fp32_value:
 * the float addition rounds the mantissa to 10 bits at the right exponent);
 * overflow gives inf, NaN gives sign | 0x7e00. */
OPTIM_INLINE uint16_t optim__f32_to_f16(float x)
{
    const uint32_t w = optim__f32_bits(x);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t exp2 = shl1_w & 0xff000000u;
    const uint32_t bias = exp2 > 0x71000000u ? exp2 : 0x71000000u;
    float base = (optim__f32_from_bits(w & 0x7fffffffu) * 0x1.0p+112f) * 0x1.0p-110f;
    uint32_t bits, nonsign, nan;
    base = optim__f32_from_bits((bias >> 1) + 0x07800000u) + base;
    bits = optim__f32_bits(base);
    nonsign = ((bits >> 13) & 0x00007c00u) + (bits & 0x00000fffu);
    nan = OPTIM__MASK(shl1_w > 0xff000000u);
    return (uint16_t)((sign >> 16) | (0x7e00u & nan) | (nonsign & ~nan));
}

#endif
