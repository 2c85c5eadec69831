/* quant8_simd.h: the loops of the int8_block storage descriptors
 * (kernels_math.h) over one block: decode, the block's scale (absmax) and
 * encode. On the avx512 path (and its avx512bf16 table) 16 lanes of AVX-512F
 * intrinsics, on the avx2 path 8 lanes of AVX2; elsewhere quant8.h's
 * functions in a loop the compiler may vectorise.
 *
 * quant8.h stays the one statement of the code: each vector routine below is
 * the same sequence of integer and IEEE operations as its scalar function
 * there (named beside it), lane by lane, so every path gives its bits
 * (test_q8.c's int8_descriptors_every_path compares them on every code, the
 * edges of both codes and random blocks). Selections that quant8.h writes as
 * masks on bits are mask moves or blends here; an unsigned minimum is
 * quant8.h's "c > top ? top : c". A block's last len % lanes elements go
 * through quant8.h's functions. A block whose elements are all finite (the
 * absmax pass checks) is encoded without the NaN selection, which would
 * select nothing. Included by kernels_math.h in its float part (no include
 * guard: each kernels_<isa>.c includes it once). */

/* kind: rule.h's OPTIM__SLOT_SIGNED (0), _NONNEG (1) or _POSITIVE (2); its code is unsigned but for 0. */
#define OPTIM__Q8K_UNSIGNED(kind) ((kind) != 0)

#if defined(__AVX512F__)
#  define OPTIM__Q8_LANES 16

/* optim__q8_mag, 16 lanes: a is |y| (finite or not; a non-finite lane's code is replaced by the caller). */
OPTIM_INLINE __m512i optim__q8_mag_v(__m512 a, const uint32_t B)
{
    const __m512i u = _mm512_castps_si512(a);
    const __m512i ur = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7ffff)),
                                        _mm512_and_si512(_mm512_srli_epi32(u, 20), _mm512_set1_epi32(1)));
    const __m512i norm = _mm512_sub_epi32(_mm512_srli_epi32(ur, 20), _mm512_set1_epi32((int)((127u - B) << 3)));
    const __m512 lim = _mm512_castsi512_ps(_mm512_set1_epi32((int)((128u - B) << 23)));
    const __m512 units = _mm512_castsi512_ps(_mm512_set1_epi32((int)((129u + B) << 23)));
    const __mmask16 is_sub = _mm512_cmp_ps_mask(a, lim, _CMP_LT_OQ);
    /* The subnormal lanes: t = a * units in [0, 8), rounded to an integer. quant8.h's (t + 2^23) - 2^23 is
     * vcvtps2dq's rounding, in the current rounding mode both (nearest even by default): exact below 2^22. */
    const __m512i c = _mm512_mask_cvtps_epi32(norm, is_sub, _mm512_mul_ps(a, units));
    return _mm512_min_epu32(c, _mm512_set1_epi32((int)(B << 3)));
}

/* optim__q8_nonfinite, 16 lanes. */
OPTIM_INLINE __mmask16 optim__q8_nonfinite_v(__m512 x)
{
    const __m512i a = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff));
    return _mm512_cmp_epu32_mask(a, _mm512_set1_epi32(0x7f800000), _MM_CMPINT_NLT);
}

/* optim__q8_code_s / optim__q8_code_u, 16 lanes: the codes (as 32-bit lanes) of x from the magnitude codes
 * mag of |y| (uy: y's bits). finite = 1: no lane of x is NaN or infinite (the block's absmax pass saw none),
 * so quant8.h's NaN selection selects nothing. */
OPTIM_INLINE __m512i optim__q8_code_v(__m512 x, __m512i uy, __m512i mag, const int kind, const int finite)
{
    __m512i code;
    if (!OPTIM__Q8K_UNSIGNED(kind)) {
        const __mmask16 nz = _mm512_test_epi32_mask(mag, mag);
        /* (uy >> 31) << 7 on the nonzero magnitudes */
        code = _mm512_mask_or_epi32(mag, nz, mag, _mm512_and_si512(_mm512_srli_epi32(uy, 24), _mm512_set1_epi32(0x80)));
    } else {
        const __mmask16 pos = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GT_OQ);
        code = _mm512_maskz_mov_epi32(pos, mag);
        if (kind == 2) code = _mm512_mask_mov_epi32(code, pos & _mm512_testn_epi32_mask(code, code), _mm512_set1_epi32(1));
    }
    if (finite) return code;
    return _mm512_mask_mov_epi32(code, optim__q8_nonfinite_v(x), _mm512_set1_epi32((int)OPTIM__Q8_NAN));
}

/* optim__q8_enc_s / optim__q8_enc_u, 16 lanes (finite: as optim__q8_code_v's). */
OPTIM_INLINE __m512i optim__q8_enc_v(__m512 x, __m512 r, const int kind, const int finite)
{
    const __m512i uy = _mm512_castps_si512(_mm512_mul_ps(x, r));
    const __m512 a = _mm512_castsi512_ps(_mm512_and_si512(uy, _mm512_set1_epi32(0x7fffffff)));
    const uint32_t B = OPTIM__Q8K_UNSIGNED(kind) ? OPTIM__Q8_BIAS_U : OPTIM__Q8_BIAS_S;
    return optim__q8_code_v(x, uy, optim__q8_mag_v(a, B), kind, finite);
}

/* optim__q8_dec_s / optim__q8_dec_u (with optim__q8_mag_value), 16 codes. */
OPTIM_INLINE __m512 optim__q8_dec_v(__m128i codes, __m512 A, const int kind)
{
    const uint32_t B = OPTIM__Q8K_UNSIGNED(kind) ? OPTIM__Q8_BIAS_U : OPTIM__Q8_BIAS_S;
    const __m512i c = _mm512_cvtepu8_epi32(codes);
    const __m512i m = OPTIM__Q8K_UNSIGNED(kind) ? _mm512_min_epu32(c, _mm512_set1_epi32(248))
                                                : _mm512_and_si512(c, _mm512_set1_epi32(0x7f));
    const __m512i normal = _mm512_slli_epi32(_mm512_add_epi32(m, _mm512_set1_epi32((int)((127u - B) << 3))), 20);
    const __m512 sub = _mm512_mul_ps(_mm512_cvtepi32_ps(m), _mm512_castsi512_ps(_mm512_set1_epi32((int)((125u - B) << 23))));
    const __mmask16 is_sub = _mm512_cmp_epu32_mask(m, _mm512_set1_epi32(8), _MM_CMPINT_LT);
    __m512i v = _mm512_mask_blend_epi32(is_sub, normal, _mm512_castps_si512(sub));
    __m512 x;
    if (!OPTIM__Q8K_UNSIGNED(kind)) v = _mm512_or_si512(v, _mm512_slli_epi32(_mm512_srli_epi32(c, 7), 31));
    x = _mm512_mul_ps(_mm512_castsi512_ps(v), A);
    return _mm512_mask_mov_ps(x, _mm512_cmpeq_epi32_mask(c, _mm512_set1_epi32((int)OPTIM__Q8_NAN)),
                              _mm512_castsi512_ps(_mm512_set1_epi32((int)OPTIM__Q8_QNAN)));
}

OPTIM_INLINE size_t optim__q8_dec_vec(float *restrict d, const uint8_t *restrict c, size_t n, float A, const int kind)
{
    const __m512 a = _mm512_set1_ps(A);
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(d + i, optim__q8_dec_v(_mm_loadu_si128((const __m128i *)(const void *)(c + i)), a, kind));
    return i;
}

OPTIM_INLINE size_t optim__q8_enc_vec(uint8_t *restrict c, const float *restrict s, size_t n, float r, const int kind,
                                      int nonfinite)
{
    const __m512 rv = _mm512_set1_ps(r);
    size_t i = 0;
    if (nonfinite)
        for (; i + 16 <= n; i += 16)
            _mm_storeu_si128((__m128i *)(void *)(c + i), _mm512_cvtepi32_epi8(optim__q8_enc_v(_mm512_loadu_ps(s + i), rv, kind, 0)));
    else
        for (; i + 16 <= n; i += 16)
            _mm_storeu_si128((__m128i *)(void *)(c + i), _mm512_cvtepi32_epi8(optim__q8_enc_v(_mm512_loadu_ps(s + i), rv, kind, 1)));
    return i;
}

/* optim__q8_absmax's integer maximum over the lanes (the maximum does not depend on the order);
 * *nonfinite = 1 if one of the elements it read is NaN or infinite. */
OPTIM_INLINE size_t optim__q8_absmax_vec(const float *restrict x, size_t n, uint32_t *m, int *nonfinite)
{
    const __m512i abs = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    __m512i acc = _mm512_set1_epi32((int)*m);
    __mmask16 finite = 0xffff;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512i a = _mm512_and_si512(_mm512_loadu_si512((const void *)(x + i)), abs);
        const __mmask16 f = _mm512_cmp_epu32_mask(a, inf, _MM_CMPINT_LT);
        acc = _mm512_mask_max_epu32(acc, f, acc, a);
        finite &= f;
    }
    *m = (uint32_t)_mm512_reduce_max_epu32(acc);
    *nonfinite = finite != 0xffff;
    return i;
}

/* ---- Stochastic codes (OPTIM_PARAM_INT8_STOCHASTIC_ROUNDING), 16 lanes ---- */

/* optim__sr_bits20(lo + lane, ck), 16 lanes (convert.h's optim__hash32 rounds, >> 12). */
OPTIM_INLINE __m512i optim__q8_bits20_v(uint32_t lo, uint32_t ck)
{
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512i x = _mm512_xor_si512(_mm512_add_epi32(_mm512_set1_epi32((int)lo), iota), _mm512_set1_epi32((int)ck));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7feb352d));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)0x846ca68bu));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    return _mm512_srli_epi32(x, 12);
}

/* optim__q8_mag_sr, 16 lanes. */
OPTIM_INLINE __m512i optim__q8_mag_sr_v(__m512 a, const uint32_t B, __m512i r20)
{
    const __m512i u = _mm512_castps_si512(a);
    const __m512i norm = _mm512_sub_epi32(_mm512_srli_epi32(_mm512_add_epi32(u, r20), 20),
                                          _mm512_set1_epi32((int)((127u - B) << 3)));
    const __m512 lim = _mm512_castsi512_ps(_mm512_set1_epi32((int)((128u - B) << 23)));
    const __m512 units = _mm512_castsi512_ps(_mm512_set1_epi32((int)((129u + B) << 23)));
    const __mmask16 is_sub = _mm512_cmp_ps_mask(a, lim, _CMP_LT_OQ);
    const __m512 t = _mm512_maskz_mul_ps(is_sub, a, units); /* quant8.h's (a * units) & is_sub */
    const __m512i fix = _mm512_sub_epi32(_mm512_castps_si512(_mm512_add_ps(t, _mm512_set1_ps(8.0f))),
                                         _mm512_set1_epi32(0x41000000));
    const __m512i sub = _mm512_srli_epi32(_mm512_add_epi32(fix, r20), 20);
    const __m512i c = _mm512_mask_blend_epi32(is_sub, norm, sub);
    return _mm512_min_epu32(c, _mm512_set1_epi32((int)(B << 3)));
}

/* optim__q8_enc_s_sr / optim__q8_enc_u_sr, 16 lanes. */
OPTIM_INLINE __m512i optim__q8_enc_sr_v(__m512 x, __m512 r, const int kind, const int finite, __m512i r20)
{
    const __m512i uy = _mm512_castps_si512(_mm512_mul_ps(x, r));
    const __m512 a = _mm512_castsi512_ps(_mm512_and_si512(uy, _mm512_set1_epi32(0x7fffffff)));
    const uint32_t B = OPTIM__Q8K_UNSIGNED(kind) ? OPTIM__Q8_BIAS_U : OPTIM__Q8_BIAS_S;
    return optim__q8_code_v(x, uy, optim__q8_mag_sr_v(a, B, r20), kind, finite);
}

/* Codes of s[0..n) with r = 1 / the block's scale; element i's random bits those of index lo + i under ck. */
OPTIM_INLINE size_t optim__q8_enc_sr_vec(uint8_t *restrict c, const float *restrict s, size_t n, float r,
                                         const int kind, int nonfinite, uint32_t lo, uint32_t ck)
{
    const __m512 rv = _mm512_set1_ps(r);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512i r20 = optim__q8_bits20_v(lo + (uint32_t)i, ck);
        const __m512 x = _mm512_loadu_ps(s + i);
        const __m512i k = nonfinite ? optim__q8_enc_sr_v(x, rv, kind, 0, r20) : optim__q8_enc_sr_v(x, rv, kind, 1, r20);
        _mm_storeu_si128((__m128i *)(void *)(c + i), _mm512_cvtepi32_epi8(k));
    }
    return i;
}

#elif defined(__AVX2__)
#  define OPTIM__Q8_LANES 8

/* optim__q8_mag, 8 lanes (as the AVX-512 one above). */
OPTIM_INLINE __m256i optim__q8_mag_v(__m256 a, const uint32_t B)
{
    const __m256i u = _mm256_castps_si256(a);
    const __m256i ur = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7ffff)),
                                        _mm256_and_si256(_mm256_srli_epi32(u, 20), _mm256_set1_epi32(1)));
    const __m256i norm = _mm256_sub_epi32(_mm256_srli_epi32(ur, 20), _mm256_set1_epi32((int)((127u - B) << 3)));
    const __m256 lim = _mm256_castsi256_ps(_mm256_set1_epi32((int)((128u - B) << 23)));
    const __m256 units = _mm256_castsi256_ps(_mm256_set1_epi32((int)((129u + B) << 23)));
    const __m256 is_sub = _mm256_cmp_ps(a, lim, _CMP_LT_OQ);
    /* (t + 2^23) - 2^23 as vcvtps2dq's rounding (see the AVX-512 one); other lanes keep norm */
    const __m256i sub = _mm256_cvtps_epi32(_mm256_mul_ps(a, units));
    const __m256i c = _mm256_blendv_epi8(norm, sub, _mm256_castps_si256(is_sub));
    return _mm256_min_epu32(c, _mm256_set1_epi32((int)(B << 3)));
}

/* optim__q8_nonfinite, 8 lanes: all ones where x is NaN or infinite. */
OPTIM_INLINE __m256i optim__q8_nonfinite_v(__m256 x)
{
    const __m256i a = _mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32(0x7fffffff));
    return _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7f7fffff)); /* a >= 0x7f800000 (a is non-negative) */
}

/* optim__q8_code_s / optim__q8_code_u, 8 lanes (as the AVX-512 one). */
OPTIM_INLINE __m256i optim__q8_code_v(__m256 x, __m256i uy, __m256i mag, const int kind, const int finite)
{
    const __m256i zero = _mm256_setzero_si256();
    __m256i code;
    if (!OPTIM__Q8K_UNSIGNED(kind)) {
        const __m256i nz = _mm256_xor_si256(_mm256_cmpeq_epi32(mag, zero), _mm256_set1_epi32(-1));
        code = _mm256_or_si256(mag, _mm256_and_si256(nz, _mm256_and_si256(_mm256_srli_epi32(uy, 24),
                                                                           _mm256_set1_epi32(0x80))));
    } else {
        const __m256i pos = _mm256_castps_si256(_mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GT_OQ));
        code = _mm256_and_si256(mag, pos);
        if (kind == 2)
            code = _mm256_or_si256(code, _mm256_and_si256(_mm256_and_si256(pos, _mm256_cmpeq_epi32(code, zero)),
                                                          _mm256_set1_epi32(1)));
    }
    if (finite) return code;
    return _mm256_or_si256(code, _mm256_and_si256(optim__q8_nonfinite_v(x), _mm256_set1_epi32((int)OPTIM__Q8_NAN)));
}

/* optim__q8_enc_s / optim__q8_enc_u, 8 lanes (finite: as optim__q8_code_v's). */
OPTIM_INLINE __m256i optim__q8_enc_v(__m256 x, __m256 r, const int kind, const int finite)
{
    const __m256i uy = _mm256_castps_si256(_mm256_mul_ps(x, r));
    const __m256 a = _mm256_castsi256_ps(_mm256_and_si256(uy, _mm256_set1_epi32(0x7fffffff)));
    const uint32_t B = OPTIM__Q8K_UNSIGNED(kind) ? OPTIM__Q8_BIAS_U : OPTIM__Q8_BIAS_S;
    return optim__q8_code_v(x, uy, optim__q8_mag_v(a, B), kind, finite);
}

/* optim__q8_dec_s / optim__q8_dec_u, 8 codes. */
OPTIM_INLINE __m256 optim__q8_dec_v(__m128i codes, __m256 A, const int kind)
{
    const uint32_t B = OPTIM__Q8K_UNSIGNED(kind) ? OPTIM__Q8_BIAS_U : OPTIM__Q8_BIAS_S;
    const __m256i c = _mm256_cvtepu8_epi32(codes);
    const __m256i m = OPTIM__Q8K_UNSIGNED(kind) ? _mm256_min_epu32(c, _mm256_set1_epi32(248))
                                                : _mm256_and_si256(c, _mm256_set1_epi32(0x7f));
    const __m256i normal = _mm256_slli_epi32(_mm256_add_epi32(m, _mm256_set1_epi32((int)((127u - B) << 3))), 20);
    const __m256 sub = _mm256_mul_ps(_mm256_cvtepi32_ps(m), _mm256_castsi256_ps(_mm256_set1_epi32((int)((125u - B) << 23))));
    const __m256i is_sub = _mm256_cmpgt_epi32(_mm256_set1_epi32(8), m); /* m < 8 (m is at most 255) */
    __m256i v = _mm256_blendv_epi8(normal, _mm256_castps_si256(sub), is_sub);
    __m256 x;
    if (!OPTIM__Q8K_UNSIGNED(kind)) v = _mm256_or_si256(v, _mm256_slli_epi32(_mm256_srli_epi32(c, 7), 31));
    x = _mm256_mul_ps(_mm256_castsi256_ps(v), A);
    return _mm256_blendv_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32((int)OPTIM__Q8_QNAN)),
                            _mm256_castsi256_ps(_mm256_cmpeq_epi32(c, _mm256_set1_epi32((int)OPTIM__Q8_NAN))));
}

OPTIM_INLINE size_t optim__q8_dec_vec(float *restrict d, const uint8_t *restrict c, size_t n, float A, const int kind)
{
    const __m256 a = _mm256_set1_ps(A);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(d + i, optim__q8_dec_v(_mm_loadl_epi64((const __m128i *)(const void *)(c + i)), a, kind));
    return i;
}

/* 8 codes (0 .. 255 per lane) stored as bytes. */
OPTIM_INLINE void optim__q8_put_v(uint8_t *c, __m256i k)
{
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(k), _mm256_extracti128_si256(k, 1));
    _mm_storel_epi64((__m128i *)(void *)c, _mm_packus_epi16(w, w));
}

OPTIM_INLINE size_t optim__q8_enc_vec(uint8_t *restrict c, const float *restrict s, size_t n, float r, const int kind,
                                      int nonfinite)
{
    const __m256 rv = _mm256_set1_ps(r);
    size_t i = 0;
    if (nonfinite)
        for (; i + 8 <= n; i += 8) optim__q8_put_v(c + i, optim__q8_enc_v(_mm256_loadu_ps(s + i), rv, kind, 0));
    else
        for (; i + 8 <= n; i += 8) optim__q8_put_v(c + i, optim__q8_enc_v(_mm256_loadu_ps(s + i), rv, kind, 1));
    return i;
}

OPTIM_INLINE size_t optim__q8_absmax_vec(const float *restrict x, size_t n, uint32_t *m, int *nonfinite)
{
    const __m256i abs = _mm256_set1_epi32(0x7fffffff), big = _mm256_set1_epi32(0x7f7fffff);
    __m256i acc = _mm256_set1_epi32((int)*m), nf = _mm256_setzero_si256();
    __m128i h;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i a = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(const void *)(x + i)), abs);
        /* a non-finite lane counts as 0 (a is non-negative: a signed compare) */
        const __m256i bad = _mm256_cmpgt_epi32(a, big);
        acc = _mm256_max_epu32(acc, _mm256_andnot_si256(bad, a));
        nf = _mm256_or_si256(nf, bad);
    }
    *nonfinite = !_mm256_testz_si256(nf, nf);
    h = _mm_max_epu32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    h = _mm_max_epu32(h, _mm_shuffle_epi32(h, 0x4e));
    h = _mm_max_epu32(h, _mm_shuffle_epi32(h, 0xb1));
    *m = (uint32_t)_mm_cvtsi128_si32(h);
    return i;
}

/* ---- Stochastic codes, 8 lanes (as the AVX-512 ones above) ---- */

OPTIM_INLINE __m256i optim__q8_bits20_v(uint32_t lo, uint32_t ck)
{
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i x = _mm256_xor_si256(_mm256_add_epi32(_mm256_set1_epi32((int)lo), iota), _mm256_set1_epi32((int)ck));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7feb352d));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)0x846ca68bu));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    return _mm256_srli_epi32(x, 12);
}

OPTIM_INLINE __m256i optim__q8_mag_sr_v(__m256 a, const uint32_t B, __m256i r20)
{
    const __m256i u = _mm256_castps_si256(a);
    const __m256i norm = _mm256_sub_epi32(_mm256_srli_epi32(_mm256_add_epi32(u, r20), 20),
                                          _mm256_set1_epi32((int)((127u - B) << 3)));
    const __m256 lim = _mm256_castsi256_ps(_mm256_set1_epi32((int)((128u - B) << 23)));
    const __m256 units = _mm256_castsi256_ps(_mm256_set1_epi32((int)((129u + B) << 23)));
    const __m256 is_sub = _mm256_cmp_ps(a, lim, _CMP_LT_OQ);
    const __m256 t = _mm256_and_ps(_mm256_mul_ps(a, units), is_sub);
    const __m256i fix = _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(t, _mm256_set1_ps(8.0f))),
                                         _mm256_set1_epi32(0x41000000));
    const __m256i sub = _mm256_srli_epi32(_mm256_add_epi32(fix, r20), 20);
    const __m256i c = _mm256_blendv_epi8(norm, sub, _mm256_castps_si256(is_sub));
    return _mm256_min_epu32(c, _mm256_set1_epi32((int)(B << 3)));
}

OPTIM_INLINE __m256i optim__q8_enc_sr_v(__m256 x, __m256 r, const int kind, const int finite, __m256i r20)
{
    const __m256i uy = _mm256_castps_si256(_mm256_mul_ps(x, r));
    const __m256 a = _mm256_castsi256_ps(_mm256_and_si256(uy, _mm256_set1_epi32(0x7fffffff)));
    const uint32_t B = OPTIM__Q8K_UNSIGNED(kind) ? OPTIM__Q8_BIAS_U : OPTIM__Q8_BIAS_S;
    return optim__q8_code_v(x, uy, optim__q8_mag_sr_v(a, B, r20), kind, finite);
}

OPTIM_INLINE size_t optim__q8_enc_sr_vec(uint8_t *restrict c, const float *restrict s, size_t n, float r,
                                         const int kind, int nonfinite, uint32_t lo, uint32_t ck)
{
    const __m256 rv = _mm256_set1_ps(r);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i r20 = optim__q8_bits20_v(lo + (uint32_t)i, ck);
        const __m256 x = _mm256_loadu_ps(s + i);
        optim__q8_put_v(c + i, nonfinite ? optim__q8_enc_sr_v(x, rv, kind, 0, r20) : optim__q8_enc_sr_v(x, rv, kind, 1, r20));
    }
    return i;
}

#else
#  define OPTIM__Q8_LANES 1
/* No vector routines: the loops below run quant8.h's functions from element 0. */
OPTIM_INLINE size_t optim__q8_dec_vec(float *restrict d, const uint8_t *restrict c, size_t n, float A, const int kind)
{
    (void)d, (void)c, (void)n, (void)A, (void)kind;
    return 0;
}
OPTIM_INLINE size_t optim__q8_enc_vec(uint8_t *restrict c, const float *restrict s, size_t n, float r, const int kind,
                                      int nonfinite)
{
    (void)c, (void)s, (void)n, (void)r, (void)kind, (void)nonfinite;
    return 0;
}
OPTIM_INLINE size_t optim__q8_enc_sr_vec(uint8_t *restrict c, const float *restrict s, size_t n, float r,
                                         const int kind, int nonfinite, uint32_t lo, uint32_t ck)
{
    (void)c, (void)s, (void)n, (void)r, (void)kind, (void)nonfinite, (void)lo, (void)ck;
    return 0;
}
OPTIM_INLINE size_t optim__q8_absmax_vec(const float *restrict x, size_t n, uint32_t *m, int *nonfinite)
{
    (void)x, (void)n, (void)m;
    *nonfinite = 1;
    return 0;
}
#endif

/* ---- One block (len <= OPTIM__Q8_BLOCK elements), kind a compile-time constant ---------------- */

/* d[0..len) = the values of codes c[0..len) with scale A. */
OPTIM_INLINE void optim__q8_dec_block(float *restrict d, const uint8_t *restrict c, size_t len, float A, const int kind)
{
    size_t i = optim__q8_dec_vec(d, c, len, A, kind);
    OPTIM__VECTORIZE
    for (; i < len; i++) d[i] = OPTIM__Q8K_UNSIGNED(kind) ? optim__q8_dec_u(c[i], A) : optim__q8_dec_s(c[i], A);
}

/* The block's scale (optim__q8_absmax); *nonfinite = 0 if the elements the vector routines read (those
 * optim__q8_enc_block's vector routine encodes) are all finite. */
OPTIM_INLINE float optim__q8_absmax_block(const float *restrict x, size_t len, int *nonfinite)
{
    uint32_t m = 0x00800000u; /* FLT_MIN, as optim__q8_absmax */
    const size_t i = optim__q8_absmax_vec(x, len, &m, nonfinite);
    const uint32_t t = optim__f32_bits(optim__q8_absmax(x + i, len - i));
    return optim__f32_from_bits(t > m ? t : m);
}

/* c[0..len) = the codes of s[0..len) with r = 1 / the block's scale; nonfinite from optim__q8_absmax_block. */
OPTIM_INLINE void optim__q8_enc_block(uint8_t *restrict c, const float *restrict s, size_t len, float r, const int kind,
                                      int nonfinite)
{
    size_t i = optim__q8_enc_vec(c, s, len, r, kind, nonfinite);
    OPTIM__VECTORIZE
    for (; i < len; i++)
        c[i] = OPTIM__Q8K_UNSIGNED(kind) ? optim__q8_enc_u(s[i], r, kind == 2) : optim__q8_enc_s(s[i], r);
}

/* optim__q8_enc_block with stochastic codes: element i's random bits are those of index lo + i under the
 * chunk key ck (convert.h's optim__sr_bits20). */
OPTIM_INLINE void optim__q8_enc_sr_block(uint8_t *restrict c, const float *restrict s, size_t len, float r,
                                         const int kind, int nonfinite, uint32_t lo, uint32_t ck)
{
    size_t i = optim__q8_enc_sr_vec(c, s, len, r, kind, nonfinite, lo, ck);
    OPTIM__VECTORIZE
    for (; i < len; i++) {
        const uint32_t r20 = optim__sr_bits20(lo + (uint32_t)i, ck);
        c[i] = OPTIM__Q8K_UNSIGNED(kind) ? optim__q8_enc_u_sr(s[i], r, kind == 2, r20) : optim__q8_enc_s_sr(s[i], r, r20);
    }
}
