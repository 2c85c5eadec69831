/* convert_simd.h: the bfloat16 storage descriptors' loops (kernels_math.h)
 * in intrinsics: the exact load, the store rounded to nearest even and the
 * stochastically rounded store, 16 lanes of AVX-512F on the avx512 path (and
 * its avx512bf16 table), 8 lanes of AVX2 on the avx2 path; elsewhere nothing
 * (the descriptors' loops run convert.h's functions from element 0).
 *
 * convert.h stays the one statement of the conversions: each routine below
 * is the same sequence of integer operations as its function there (named
 * beside it), lane by lane, so every path gives its bits
 * (prec_conversions_every_path compares every path's descriptors with the
 * tests' own conversions and random stream). Each returns how many elements
 * it converted (a multiple of its lanes); the caller converts the rest with
 * convert.h's functions. Included by kernels_math.h in its float part (no
 * include guard: each kernels_<isa>.c includes it once). */

#if defined(__AVX512F__)

/* optim__bf16_to_f32 over d[0..n) = s[0..n). */
OPTIM_INLINE size_t optim__bf16_load_vec(float *restrict d, const uint16_t *restrict s, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_si512((void *)(d + i),
                            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(s + i))), 16));
    return i;
}

/* The NaN fix-up of both bfloat16 stores: 0x7fc0 where (u & 0x7fffffff) > 0x7f800000. */
OPTIM_INLINE __m512i optim__bf16_nan_v(__m512i u, __m512i t)
{
    const __mmask16 nan = _mm512_cmp_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                _mm512_set1_epi32(0x7f800000), _MM_CMPINT_NLE);
    return _mm512_mask_mov_epi32(t, nan, _mm512_set1_epi32(0x7fc0));
}

/* optim__f32_to_bf16 over d[0..n) = s[0..n). */
OPTIM_INLINE size_t optim__bf16_store_vec(uint16_t *restrict d, const float *restrict s, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512i u = _mm512_loadu_si512((const void *)(s + i));
        const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
        const __m512i t = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), odd), 16);
        _mm256_storeu_si256((__m256i *)(void *)(d + i), _mm512_cvtepi32_epi16(optim__bf16_nan_v(u, t)));
    }
    return i;
}

/* optim__f32_to_bf16_sr(s[i], optim__sr_bits(lo + i, ck)) over d[0..n) (optim__hash32's rounds). */
OPTIM_INLINE size_t optim__bf16_sr_store_vec(uint16_t *restrict d, const float *restrict s, size_t n, uint32_t lo,
                                             uint32_t ck)
{
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512i u = _mm512_loadu_si512((const void *)(s + i));
        __m512i x = _mm512_xor_si512(_mm512_add_epi32(_mm512_set1_epi32((int)(lo + (uint32_t)i)), iota),
                                     _mm512_set1_epi32((int)ck));
        x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
        x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7feb352d));
        x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
        x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)0x846ca68bu));
        x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
        /* r = x >> 16 (16 bits: r & 0xffff is r) */
        _mm256_storeu_si256((__m256i *)(void *)(d + i),
                            _mm512_cvtepi32_epi16(optim__bf16_nan_v(u, _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_srli_epi32(x, 16)), 16))));
    }
    return i;
}

#elif defined(__AVX2__)

OPTIM_INLINE size_t optim__bf16_load_vec(float *restrict d, const uint16_t *restrict s, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_si256((__m256i *)(void *)(d + i),
                            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(s + i))), 16));
    return i;
}

/* 8 lanes of t (each at most 0xffff) with the NaN fix-up, stored as 8 bfloat16. */
OPTIM_INLINE void optim__bf16_put_v(uint16_t *d, __m256i u, __m256i t)
{
    const __m256i a = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
    const __m256i nan = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7f800000)); /* a is non-negative */
    const __m256i r = _mm256_blendv_epi8(t, _mm256_set1_epi32(0x7fc0), nan);
    _mm_storeu_si128((__m128i *)(void *)d, _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)));
}

OPTIM_INLINE size_t optim__bf16_store_vec(uint16_t *restrict d, const float *restrict s, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i u = _mm256_loadu_si256((const __m256i *)(const void *)(s + i));
        const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
        optim__bf16_put_v(d + i, u,
                          _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), odd), 16));
    }
    return i;
}

OPTIM_INLINE size_t optim__bf16_sr_store_vec(uint16_t *restrict d, const float *restrict s, size_t n, uint32_t lo,
                                             uint32_t ck)
{
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i u = _mm256_loadu_si256((const __m256i *)(const void *)(s + i));
        __m256i x = _mm256_xor_si256(_mm256_add_epi32(_mm256_set1_epi32((int)(lo + (uint32_t)i)), iota),
                                     _mm256_set1_epi32((int)ck));
        x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
        x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7feb352d));
        x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
        x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)0x846ca68bu));
        x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
        optim__bf16_put_v(d + i, u, _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_srli_epi32(x, 16)), 16));
    }
    return i;
}

#else

OPTIM_INLINE size_t optim__bf16_load_vec(float *restrict d, const uint16_t *restrict s, size_t n)
{
    (void)d, (void)s, (void)n;
    return 0;
}
OPTIM_INLINE size_t optim__bf16_store_vec(uint16_t *restrict d, const float *restrict s, size_t n)
{
    (void)d, (void)s, (void)n;
    return 0;
}
OPTIM_INLINE size_t optim__bf16_sr_store_vec(uint16_t *restrict d, const float *restrict s, size_t n, uint32_t lo,
                                             uint32_t ck)
{
    (void)d, (void)s, (void)n, (void)lo, (void)ck;
    return 0;
}

#endif

/* float16 has the hardware's conversions on the vector paths (kernels_math.h); its formula loops stay. */
OPTIM_INLINE size_t optim__f16_load_vec(float *restrict d, const uint16_t *restrict s, size_t n)
{
    (void)d, (void)s, (void)n;
    return 0;
}
OPTIM_INLINE size_t optim__f16_store_vec(uint16_t *restrict d, const float *restrict s, size_t n)
{
    (void)d, (void)s, (void)n;
    return 0;
}
