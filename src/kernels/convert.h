/* convert.h: element conversions between the storage types and float, one
 * element at a time, in integer and IEEE arithmetic only (so that the
 * compiler vectorises them and every CPU path gives the same bits). The
 * rounding ones are torch's (c10/util/BFloat16.h, c10/util/Half.h), so a
 * stored bfloat16 or float16 is the one torch's .to() gives.
 *
 * The paths with hardware conversions (AVX-512 BF16's vcvtne2ps2bf16 on the
 * avx512bf16 path, F16C's vcvtps2ph/vcvtph2ps on avx2 and avx512:
 * kernels_math.h) give these bits, NaN included: the instructions' own NaN
 * and denormal conventions differ and are fixed up there. */
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

/* ---- Stochastic rounding ---------------------------------------------------------------
 * A counter-based random stream: the bits that round element i of a stream
 * are a hash of (seed, parameter, step, stream, i), so they are the same on
 * every CPU path and thread split, and a resumed run draws what the
 * uninterrupted one drew. No state is carried between steps. */

/* A 32-bit integer hash (Chris Wellons' lowbias32: two multiply-xorshift
 * rounds, full avalanche, a bijection). 32-bit multiplies vectorise on
 * AVX2 (vpmulld) and AVX-512. */
OPTIM_INLINE uint32_t optim__hash32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

/* splitmix64's finalizer: the host-side mixing of the key's 64-bit parts. */
OPTIM_INLINE uint64_t optim__mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15u;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* The key of one stream of one parameter at one step (computed once per
 * step on the host): every part of the tuple goes through the mixer. */
OPTIM_INLINE uint64_t optim__sr_key(uint64_t seed, uint64_t param, uint64_t step, uint64_t stream)
{
    return optim__mix64(optim__mix64(optim__mix64(optim__mix64(seed) ^ param) ^ step) ^ stream);
}

/* The 32-bit key of the elements whose index has upper half `hi` (constant
 * inside a chunk: chunks are 512 elements at multiples of 512). */
OPTIM_INLINE uint32_t optim__sr_chunk_key(uint64_t key, uint64_t hi)
{
    return (uint32_t)(optim__mix64(key ^ hi) >> 32);
}

/* The 16 random bits of element index lo (its lower 32 bits) under a chunk key. */
OPTIM_INLINE uint32_t optim__sr_bits(uint32_t lo, uint32_t ckey)
{
    return optim__hash32(lo ^ ckey) >> 16;
}

/* The 20 random bits of element index lo under a chunk key: the upper 20
 * bits of the same hash (stochastic rounding of int8_block codes, quant8.h). */
OPTIM_INLINE uint32_t optim__sr_bits20(uint32_t lo, uint32_t ckey)
{
    return optim__hash32(lo ^ ckey) >> 12;
}

/* float -> bfloat16, stochastically: add 16 random bits r (0..65535) below
 * the kept bits and truncate, so x rounds away from zero with probability
 * (its dropped bits) / 2^16 and the expected result is x (torchao's
 * _fp32_to_bf16_sr, llm.c's stochastic_rounding). Exact values stay; inf
 * stays; a finite value above the largest bfloat16 may round to inf (with
 * that probability); NaN -> 0x7fc0 as in optim__f32_to_bf16. */
OPTIM_INLINE uint16_t optim__f32_to_bf16_sr(float x, uint32_t r)
{
    const uint32_t u = optim__f32_bits(x);
    const uint32_t t = (u + (r & 0xffffu)) >> 16;
    const uint32_t nan = OPTIM__MASK((u & 0x7fffffffu) > 0x7f800000u);
    return (uint16_t)((0x7fc0u & nan) | (t & ~nan));
}

#endif
