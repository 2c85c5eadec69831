/* q8floor.c: the floor of Adam's step with 8-bit state on this CPU (issue 12,
 * docs/PRECISION.md "Speed"). An experiment, not part of the library: it
 * measures, in process CPU time per element (CLOCK_PROCESS_CPUTIME_ID, best of
 * several trials, one thread), on L1/L2-resident tensors (repeated passes) and
 * on a large one:
 *
 *   f32_adam      the library's own fp32 Adam loop (the avx512 table's
 *                 instance, optim__kernels_get), on float32 p, g, m, v;
 *   q8_load       the library's int8_block load descriptors alone: decode
 *                 exp_avg (signed code) and exp_avg_sq (positive code) of a
 *                 512-element chunk into float scratch, chunk after chunk;
 *   q8_store      its store descriptors alone (block maximum, scale, codes);
 *   q8_staged     what the library's chunked path runs for float32 p and g
 *                 and int8 state: load both slots, the fp32 loop on the
 *                 chunk, store both slots (no task dispatch around it);
 *   bf16_load     the library's bfloat16 load descriptor (a gradient or
 *                 parameter read as bf16), alone;
 *   bf16_sr_store its bfloat16 store with stochastic rounding, alone;
 *   fused_q8      decode, Adam and encode in one pass per 256-element block
 *                 with today's codes (quant8_simd.h's vector routines): the
 *                 block's maximum taken from the rule's output, the floats of
 *                 m and v kept for one block in L1 only. Checked bit for bit
 *                 against q8_staged (parameters, codes, scales) before timing;
 *   fused_cheap   the cheapest 8-bit codec one could defend, hand-written
 *                 here only (other bits than today's format): today's
 *                 E4M3 (m) and E5M3 (v) codes without their subnormal range
 *                 (the float bits of x / A rounded to 3 mantissa bits by one
 *                 add, shifted, rebiased, clamped; decode: shift, add, a
 *                 multiply), no NaN code, fused with Adam's math in one pass
 *                 like fused_q8;
 *   fused_cheap_g16, _off, _sr: fused_cheap with bfloat16 gradients (the
 *                 14-byte case), the offload step (bfloat16 gradients, the
 *                 bfloat16 copy of the fp32 master written, 16 bytes), and
 *                 bfloat16 parameters stored with stochastic rounding (a hash
 *                 of the element index, as the library's) and bfloat16
 *                 gradients (10 bytes);
 *   fused_lin     the same with m as a linear int8 code (round(m 127 / A)):
 *                 fewer operations, but scripts/q8_codes_sim.py measures m's
 *                 error at 0.65-0.75 (today's code: 0.05-0.06): not defensible;
 *   fused_nomath  fused_cheap's codecs and traffic with Adam's math replaced
 *                 by one multiply-add per value (what the codecs cost alone);
 *   ceil_*        same-traffic ceilings (as `optim bench`'s: each stream read
 *                 and written once with trivial arithmetic): f32 (Adam's 28
 *                 bytes/element), q8 (float p and g, two byte arrays: 16),
 *                 q8_bf16g (bfloat16 gradient: 14), q8_bf16pg (bfloat16
 *                 parameter and gradient: 10), q8_off (the offload step: 16).
 *
 * Usage: optim_q8floor [--sizes 4K,16K,64K,64M] [--trials N] [--cases a,b,...]
 * Prints one line per size and case: ns/element (best trial), the median
 * trial, and the spread (median / best - 1). --check: only the bit check of
 * fused_q8 against q8_staged (CTest's bench.q8floor_bits). Needs AVX-512F
 * (exits 77 without it). */
#include "kernels/kernels.h"
#include "kernels/convert.h"
#include "kernels/quant8.h"

#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define OPTIM__VECTORIZE
#include "kernels/quant8_simd.h"

#define Q8B 256 /* OPTIM__Q8_BLOCK */

typedef struct work {
    size_t n;
    float *p, *g, *m, *v;      /* float32 streams */
    uint16_t *p16, *g16;       /* bfloat16 streams */
    uint8_t *cm, *cv;          /* codes of m and v */
    float *sm, *sv;            /* their block scales */
    float scr_m[OPTIM__CHUNK], scr_v[OPTIM__CHUNK], scr_p[OPTIM__CHUNK]; /* chunk scratch */
    const optim__kernels *kt;
    optim__k k;
} work;

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- The library's loops and descriptors ----------------------------------------- */

static void run_f32_adam(work *w)
{
    void *s[OPTIM_MAX_SLOTS] = {w->m, w->v, NULL, NULL};
    w->kt->loops[OPTIM_ADAM][OPTIM__CT_F32].fns[0](w->n, w->p, w->g, s, &w->k);
}

static void run_q8_load(work *w)
{
    const optim__storage *ls = w->kt->q8[OPTIM__SLOT_SIGNED], *lp = w->kt->q8[OPTIM__SLOT_POSITIVE];
    for (size_t off = 0; off < w->n; off += OPTIM__CHUNK) {
        const size_t c = w->n - off < OPTIM__CHUNK ? w->n - off : OPTIM__CHUNK;
        ls->load(w->scr_m, w->cm, off, c, w->sm);
        lp->load(w->scr_v, w->cv, off, c, w->sv);
        __asm__ volatile("" ::"r"(w->scr_m), "r"(w->scr_v) : "memory");
    }
}

static void run_q8_store(work *w)
{
    const optim__storage *ls = w->kt->q8[OPTIM__SLOT_SIGNED], *lp = w->kt->q8[OPTIM__SLOT_POSITIVE];
    for (size_t off = 0; off < w->n; off += OPTIM__CHUNK) {
        const size_t c = w->n - off < OPTIM__CHUNK ? w->n - off : OPTIM__CHUNK;
        __asm__ volatile("" ::"r"(w->scr_m), "r"(w->scr_v) : "memory");
        ls->store(w->cm, off, c, w->scr_m, w->sm);
        lp->store(w->cv, off, c, w->scr_v, w->sv);
    }
}

static void run_q8_staged(work *w)
{
    const optim__storage *ls = w->kt->q8[OPTIM__SLOT_SIGNED], *lp = w->kt->q8[OPTIM__SLOT_POSITIVE];
    const optim__loop_fn f = w->kt->loops[OPTIM_ADAM][OPTIM__CT_F32].fns[0];
    void *s[OPTIM_MAX_SLOTS] = {w->scr_m, w->scr_v, NULL, NULL};
    for (size_t off = 0; off < w->n; off += OPTIM__CHUNK) {
        const size_t c = w->n - off < OPTIM__CHUNK ? w->n - off : OPTIM__CHUNK;
        ls->load(w->scr_m, w->cm, off, c, w->sm);
        lp->load(w->scr_v, w->cv, off, c, w->sv);
        f(c, w->p + off, w->g + off, s, &w->k);
        ls->store(w->cm, off, c, w->scr_m, w->sm);
        lp->store(w->cv, off, c, w->scr_v, w->sv);
    }
}

static void run_bf16_load(work *w)
{
    const optim__storage *b = w->kt->storage[OPTIM_BFLOAT16][OPTIM__CT_F32];
    for (size_t off = 0; off < w->n; off += OPTIM__CHUNK) {
        const size_t c = w->n - off < OPTIM__CHUNK ? w->n - off : OPTIM__CHUNK;
        b->load(w->scr_p, w->g16, off, c, NULL);
        __asm__ volatile("" ::"r"(w->scr_p) : "memory");
    }
}

static void run_bf16_sr_store(work *w)
{
    const optim__storage *b = w->kt->bf16_sr;
    const optim__sr_ctx ctx = {0x9e3779b97f4a7c15ull, 0};
    for (size_t off = 0; off < w->n; off += OPTIM__CHUNK) {
        const size_t c = w->n - off < OPTIM__CHUNK ? w->n - off : OPTIM__CHUNK;
        __asm__ volatile("" ::"r"(w->scr_p) : "memory");
        b->store(w->p16, off, c, w->scr_p, &ctx);
    }
}

/* ---- Fused, today's codes --------------------------------------------------------- */

typedef struct adam_v {
    __m512 b1, omb1, b2, omb2, bc2s, eps, ns, decay, gscale;
} adam_v;

static adam_v adam_consts(const optim__k *k)
{
    adam_v a;
    a.b1 = _mm512_set1_ps((float)k->u.adam.beta1);
    a.omb1 = _mm512_set1_ps((float)k->u.adam.one_minus_beta1);
    a.b2 = _mm512_set1_ps((float)k->u.adam.beta2);
    a.omb2 = _mm512_set1_ps((float)k->u.adam.one_minus_beta2);
    a.bc2s = _mm512_set1_ps((float)k->u.adam.bc2_sqrt);
    a.eps = _mm512_set1_ps((float)k->u.adam.eps);
    a.ns = _mm512_set1_ps((float)k->u.adam.neg_step);
    a.decay = _mm512_set1_ps((float)k->c.decay);
    a.gscale = _mm512_set1_ps((float)k->c.gscale);
    return a;
}

/* adam.h's element math (variant 0), the same IEEE operations in the same order as the library's loop. */
#define ADAM_MATH(A, p, g, m, v)                                                                      \
    do {                                                                                              \
        const __m512 d_ = _mm512_mul_ps(g, (A).gscale);                                               \
        m = _mm512_fmadd_ps(d_, (A).omb1, _mm512_mul_ps(m, (A).b1));                                  \
        v = _mm512_fmadd_ps(_mm512_mul_ps((A).omb2, d_), d_, _mm512_mul_ps(v, (A).b2));               \
        const __m512 den_ = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(v), (A).bc2s), (A).eps);       \
        p = _mm512_add_ps(_mm512_mul_ps(p, (A).decay), _mm512_div_ps(_mm512_mul_ps((A).ns, m), den_)); \
        p = _mm512_mask_mov_ps(p, _mm512_cmp_ps_mask(p, p, _CMP_UNORD_Q),                             \
                               _mm512_castsi512_ps(_mm512_set1_epi32(0x7fc00000)));                   \
    } while (0)

/* One block's scale from the running integer maxima of |x| over finite lanes. */
static float q8_scale(__m512i acc)
{
    return optim__f32_from_bits((uint32_t)_mm512_reduce_max_epu32(acc));
}

static void run_fused_q8(work *w)
{
    const adam_v A = adam_consts(&w->k);
    const __m512i absm = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    float bm[Q8B], bv[Q8B];
    for (size_t b = 0; b < w->n; b += Q8B) {
        const size_t len = w->n - b < Q8B ? w->n - b : Q8B;
        const __m512 Am = _mm512_set1_ps(w->sm[b / Q8B]), Av = _mm512_set1_ps(w->sv[b / Q8B]);
        __m512i accm = _mm512_set1_epi32(0x00800000), accv = accm;
        __mmask16 finm = 0xffff, finv = 0xffff;
        size_t i = 0;
        if (len != Q8B) { /* a short last block: the staged path (rare; not timed) */
            void *s[OPTIM_MAX_SLOTS] = {w->scr_m, w->scr_v, NULL, NULL};
            w->kt->q8[OPTIM__SLOT_SIGNED]->load(w->scr_m, w->cm, b, len, w->sm);
            w->kt->q8[OPTIM__SLOT_POSITIVE]->load(w->scr_v, w->cv, b, len, w->sv);
            w->kt->loops[OPTIM_ADAM][OPTIM__CT_F32].fns[0](len, w->p + b, w->g + b, s, &w->k);
            w->kt->q8[OPTIM__SLOT_SIGNED]->store(w->cm, b, len, w->scr_m, w->sm);
            w->kt->q8[OPTIM__SLOT_POSITIVE]->store(w->cv, b, len, w->scr_v, w->sv);
            break;
        }
        for (; i < Q8B; i += 16) {
            __m512 m = optim__q8_dec_v(_mm_loadu_si128((const __m128i *)(const void *)(w->cm + b + i)), Am, 0);
            __m512 v = optim__q8_dec_v(_mm_loadu_si128((const __m128i *)(const void *)(w->cv + b + i)), Av, 2);
            __m512 p = _mm512_loadu_ps(w->p + b + i);
            const __m512 g = _mm512_loadu_ps(w->g + b + i);
            ADAM_MATH(A, p, g, m, v);
            _mm512_storeu_ps(w->p + b + i, p);
            _mm512_storeu_ps(bm + i, m);
            _mm512_storeu_ps(bv + i, v);
            {
                const __m512i am = _mm512_and_si512(_mm512_castps_si512(m), absm);
                const __m512i av = _mm512_and_si512(_mm512_castps_si512(v), absm);
                const __mmask16 fm = _mm512_cmp_epu32_mask(am, inf, _MM_CMPINT_LT);
                const __mmask16 fv = _mm512_cmp_epu32_mask(av, inf, _MM_CMPINT_LT);
                accm = _mm512_mask_max_epu32(accm, fm, accm, am);
                accv = _mm512_mask_max_epu32(accv, fv, accv, av);
                finm &= fm;
                finv &= fv;
            }
        }
        {
            const float sA = q8_scale(accm), vA = q8_scale(accv);
            const __m512 rm = _mm512_set1_ps(1.0f / sA), rv = _mm512_set1_ps(1.0f / vA);
            w->sm[b / Q8B] = sA;
            w->sv[b / Q8B] = vA;
            for (i = 0; i < Q8B; i += 16) {
                const __m512 m = _mm512_loadu_ps(bm + i), v = _mm512_loadu_ps(bv + i);
                const __m512i km = finm == 0xffff ? optim__q8_enc_v(m, rm, 0, 1) : optim__q8_enc_v(m, rm, 0, 0);
                const __m512i kv = finv == 0xffff ? optim__q8_enc_v(v, rv, 2, 1) : optim__q8_enc_v(v, rv, 2, 0);
                _mm_storeu_si128((__m128i *)(void *)(w->cm + b + i), _mm512_cvtepi32_epi8(km));
                _mm_storeu_si128((__m128i *)(void *)(w->cv + b + i), _mm512_cvtepi32_epi8(kv));
            }
        }
    }
}

/* ---- Fused, the cheapest codec (other bits: an experiment only) -------------------- */

/* m, linear (fused_lin): signed code k = round(m * 127 / A) in [-127, 127]; value k * A / 127. */
static inline __m512 lin_dec_m(const uint8_t *c, __m512 step)
{
    const __m512i k = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)c));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(k), step);
}
static inline void lin_enc_m(uint8_t *c, __m512 m, __m512 inv_step)
{
    _mm_storeu_si128((__m128i *)(void *)c, _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(m, inv_step))));
}
/* m, float-like (fused_cheap): sign, then k = 8e + f in [1, 120] for 2^(e - 15)(1 + f/8) * A, 0 for 0 (every
 * magnitude below 2^-15 A after rounding: no subnormals); encode rounds |m| / A's bits to 3 mantissa bits. */
#define CHEAP_M_REBIAS ((int)((127u - 15u) << 3))
static inline __m512 cheap_dec_m(const uint8_t *c, __m512 A)
{
    const __m512i k = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)c));
    const __m512i mag = _mm512_and_si512(k, _mm512_set1_epi32(0x7f));
    __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(mag, _mm512_set1_epi32(CHEAP_M_REBIAS)), 20);
    bits = _mm512_or_si512(bits, _mm512_and_si512(_mm512_slli_epi32(k, 24), _mm512_set1_epi32((int)0x80000000u)));
    return _mm512_maskz_mul_ps(_mm512_test_epi32_mask(mag, mag), _mm512_castsi512_ps(bits), A);
}
static inline void cheap_enc_m(uint8_t *c, __m512 m, __m512 r)
{
    const __m512i u = _mm512_castps_si512(_mm512_mul_ps(m, r));
    const __m512i a = _mm512_add_epi32(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x80000));
    __m512i k = _mm512_max_epi32(_mm512_sub_epi32(_mm512_srli_epi32(a, 20), _mm512_set1_epi32(CHEAP_M_REBIAS)),
                                 _mm512_setzero_si512());
    k = _mm512_mask_or_epi32(k, _mm512_test_epi32_mask(k, k), k,
                             _mm512_and_si512(_mm512_srli_epi32(u, 24), _mm512_set1_epi32(0x80)));
    _mm_storeu_si128((__m128i *)(void *)c, _mm512_cvtepi32_epi8(k));
}
/* v: code k in [1, 248], value 2^(e - 31)(1 + f/8) * A for k = 8e + f (no subnormals, no 0: a positive
 * second moment never decodes to 0); encode rounds y = v / A's bits to 3 mantissa bits (ties away). */
#define CHEAP_V_REBIAS ((int)((127u - 31u) << 3))
static inline __m512 cheap_dec_v(const uint8_t *c, __m512 A)
{
    const __m512i k = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)c));
    const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(k, _mm512_set1_epi32(CHEAP_V_REBIAS)), 20);
    return _mm512_mul_ps(_mm512_castsi512_ps(bits), A);
}
static inline void cheap_enc_v(uint8_t *c, __m512 v, __m512 r)
{
    const __m512i u = _mm512_add_epi32(_mm512_castps_si512(_mm512_mul_ps(v, r)), _mm512_set1_epi32(0x80000));
    __m512i k = _mm512_sub_epi32(_mm512_srli_epi32(u, 20), _mm512_set1_epi32(CHEAP_V_REBIAS));
    k = _mm512_max_epi32(k, _mm512_set1_epi32(1));
    _mm_storeu_si128((__m128i *)(void *)c, _mm512_cvtusepi32_epi8(_mm512_min_epi32(k, _mm512_set1_epi32(248))));
}

/* The parameter and gradient streams of the fused cheap loops (io): */
#define IO_F32 0     /* float32 p and g */
#define IO_G16 1     /* float32 p, bfloat16 g (adam:grad=bf16:state=int8) */
#define IO_OFFLOAD 2 /* fp32 master p, bfloat16 g, the bfloat16 copy of p written (round to nearest even) */
#define IO_SR 3      /* bfloat16 p stored with stochastic rounding, bfloat16 g */

static inline __m512 bf16_load(const uint16_t *x)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)x)), 16));
}
/* Round to nearest even (finite values: the experiment's data), 16 lanes to 16 bfloat16. */
static inline void bf16_store_rne(uint16_t *x, __m512 f)
{
    const __m512i u = _mm512_castps_si512(f);
    const __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)),
                                       _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1)));
    _mm256_storeu_si256((__m256i *)(void *)x, _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16)));
}
/* Stochastic rounding: 16 random bits per lane from the counter-based hash of element index lo + lane. */
static inline void bf16_store_sr(uint16_t *x, __m512 f, uint32_t lo)
{
    const __m512i r16 = _mm512_srli_epi32(optim__q8_bits20_v(lo, 0x2545f491u), 4);
    const __m512i u = _mm512_add_epi32(_mm512_castps_si512(f), r16);
    _mm256_storeu_si256((__m256i *)(void *)x, _mm512_cvtepi32_epi16(_mm512_srli_epi32(u, 16)));
}

static void fused_cheap(work *w, const int math, const int lin, const int io)
{
    const adam_v A = adam_consts(&w->k);
    const __m512i absm = _mm512_set1_epi32(0x7fffffff);
    const __m512 a = _mm512_set1_ps(0.999f), bb = _mm512_set1_ps(1e-3f);
    float bm[Q8B], bv[Q8B];
    for (size_t b = 0; b + Q8B <= w->n; b += Q8B) {
        const __m512 Am = _mm512_set1_ps(lin ? w->sm[b / Q8B] * (1.0f / 127.0f) : w->sm[b / Q8B]);
        const __m512 Av = _mm512_set1_ps(w->sv[b / Q8B]);
        __m512i accm = _mm512_set1_epi32(0x00800000), accv = accm;
        for (size_t i = 0; i < Q8B; i += 16) {
            __m512 m = lin ? lin_dec_m(w->cm + b + i, Am) : cheap_dec_m(w->cm + b + i, Am);
            __m512 v = cheap_dec_v(w->cv + b + i, Av);
            __m512 p = io == IO_SR ? bf16_load(w->p16 + b + i) : _mm512_loadu_ps(w->p + b + i);
            const __m512 g = io == IO_F32 ? _mm512_loadu_ps(w->g + b + i) : bf16_load(w->g16 + b + i);
            if (math) {
                ADAM_MATH(A, p, g, m, v);
            } else {
                p = _mm512_fmadd_ps(p, a, g);
                m = _mm512_fmadd_ps(m, a, g);
                v = _mm512_fmadd_ps(v, a, bb);
            }
            if (io == IO_SR) {
                bf16_store_sr(w->p16 + b + i, p, (uint32_t)(b + i));
            } else {
                _mm512_storeu_ps(w->p + b + i, p);
                if (io == IO_OFFLOAD) bf16_store_rne(w->p16 + b + i, p);
            }
            _mm512_storeu_ps(bm + i, m);
            _mm512_storeu_ps(bv + i, v);
            accm = _mm512_max_epu32(accm, _mm512_and_si512(_mm512_castps_si512(m), absm));
            accv = _mm512_max_epu32(accv, _mm512_castps_si512(v));
        }
        {
            const float sA = q8_scale(accm), vA = q8_scale(accv);
            const __m512 rm = _mm512_set1_ps(lin ? 127.0f / sA : 1.0f / sA), rv = _mm512_set1_ps(1.0f / vA);
            w->sm[b / Q8B] = sA;
            w->sv[b / Q8B] = vA;
            for (size_t i = 0; i < Q8B; i += 16) {
                if (lin) lin_enc_m(w->cm + b + i, _mm512_loadu_ps(bm + i), rm);
                else cheap_enc_m(w->cm + b + i, _mm512_loadu_ps(bm + i), rm);
                cheap_enc_v(w->cv + b + i, _mm512_loadu_ps(bv + i), rv);
            }
        }
    }
}
static void run_fused_cheap(work *w) { fused_cheap(w, 1, 0, IO_F32); }
static void run_fused_cheap_g16(work *w) { fused_cheap(w, 1, 0, IO_G16); }
static void run_fused_cheap_off(work *w) { fused_cheap(w, 1, 0, IO_OFFLOAD); }
static void run_fused_cheap_sr(work *w) { fused_cheap(w, 1, 0, IO_SR); }
static void run_fused_lin(work *w) { fused_cheap(w, 1, 1, IO_F32); }
static void run_fused_nomath(work *w) { fused_cheap(w, 0, 0, IO_F32); }

/* ---- Same-traffic ceilings ------------------------------------------------------- */

static void run_ceil_f32(work *w)
{
    float *restrict p = w->p, *restrict m = w->m, *restrict v = w->v;
    const float *restrict g = w->g;
    const float a = 0.999f, c = 1e-3f;
    const size_t n = w->n;
    for (size_t i = 0; i < n; i++) {
        p[i] = p[i] * a + g[i] * c;
        m[i] = m[i] * a + g[i] * c;
        v[i] = v[i] * a + g[i] * c;
    }
}

static void ceil_q8(work *w, int g16, int p16)
{
    uint8_t *restrict q0 = w->cm, *restrict q1 = w->cv;
    const float a = 0.999f, c = 1e-3f;
    const uint8_t x = 0x5a;
    const size_t n = w->n; /* a local: the byte stores could alias w->n, and the loops would not vectorise */
    if (g16 && p16 == 2) { /* the offload step: float32 master, bfloat16 gradient, the bfloat16 copy written */
        float *restrict p = w->p;
        uint16_t *restrict cp = w->p16;
        const uint16_t *restrict g = w->g16;
        for (size_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)g[i] << 16;
            float gf;
            memcpy(&gf, &u, 4);
            p[i] = p[i] * a + gf * c;
            memcpy(&u, &p[i], 4);
            cp[i] = (uint16_t)(u >> 16);
            q0[i] = (uint8_t)(q0[i] ^ x);
            q1[i] = (uint8_t)(q1[i] ^ x);
        }
    } else if (p16) {
        uint16_t *restrict p = w->p16;
        const uint16_t *restrict g = w->g16;
        for (size_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)g[i] << 16, t = (uint32_t)p[i] << 16;
            float gf, pf;
            memcpy(&gf, &u, 4);
            memcpy(&pf, &t, 4);
            pf = pf * a + gf * c;
            memcpy(&t, &pf, 4);
            p[i] = (uint16_t)(t >> 16);
            q0[i] = (uint8_t)(q0[i] ^ x);
            q1[i] = (uint8_t)(q1[i] ^ x);
        }
    } else if (g16) {
        float *restrict p = w->p;
        const uint16_t *restrict g = w->g16;
        for (size_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)g[i] << 16;
            float gf;
            memcpy(&gf, &u, 4);
            p[i] = p[i] * a + gf * c;
            q0[i] = (uint8_t)(q0[i] ^ x);
            q1[i] = (uint8_t)(q1[i] ^ x);
        }
    } else {
        float *restrict p = w->p;
        const float *restrict g = w->g;
        for (size_t i = 0; i < n; i++) {
            p[i] = p[i] * a + g[i] * c;
            q0[i] = (uint8_t)(q0[i] ^ x);
            q1[i] = (uint8_t)(q1[i] ^ x);
        }
    }
}
static void run_ceil_q8(work *w) { ceil_q8(w, 0, 0); }
static void run_ceil_q8_bf16g(work *w) { ceil_q8(w, 1, 0); }
static void run_ceil_q8_bf16pg(work *w) { ceil_q8(w, 1, 1); }
static void run_ceil_q8_off(work *w) { ceil_q8(w, 1, 2); }

/* ---- Driver ------------------------------------------------------------------------ */

typedef struct bcase {
    const char *name;
    void (*fn)(work *w);
    const char *what;
} bcase;

static const bcase cases[] = {
    {"f32_adam", run_f32_adam, "library fp32 Adam loop (avx512)"},
    {"q8_load", run_q8_load, "library int8 loads, m and v"},
    {"q8_store", run_q8_store, "library int8 stores, m and v"},
    {"q8_staged", run_q8_staged, "library chunked step: loads, loop, stores"},
    {"bf16_load", run_bf16_load, "library bf16 load (one stream)"},
    {"bf16_sr_store", run_bf16_sr_store, "library bf16 SR store (one stream)"},
    {"fused_q8", run_fused_q8, "fused, today's codes (bit-identical)"},
    {"fused_cheap", run_fused_cheap, "fused, E4M3 / E5M3 codes without subnormals"},
    {"fused_cheap_g16", run_fused_cheap_g16, "fused_cheap, bf16 g (14 B)"},
    {"fused_cheap_off", run_fused_cheap_off, "fused_cheap, offload: bf16 g, bf16 copy (16 B)"},
    {"fused_cheap_sr", run_fused_cheap_sr, "fused_cheap, bf16 p with SR, bf16 g (10 B)"},
    {"fused_lin", run_fused_lin, "fused, linear m / E5M3-nosub v"},
    {"fused_nomath", run_fused_nomath, "fused_cheap's codecs, no Adam math"},
    {"ceil_f32", run_ceil_f32, "ceiling, 28 B/el (fp32 Adam)"},
    {"ceil_q8", run_ceil_q8, "ceiling, 16 B/el (f32 p, g; int8 m, v)"},
    {"ceil_q8_bf16g", run_ceil_q8_bf16g, "ceiling, 14 B/el (bf16 g)"},
    {"ceil_q8_bf16pg", run_ceil_q8_bf16pg, "ceiling, 10 B/el (bf16 p, g)"},
    {"ceil_q8_off", run_ceil_q8_off, "ceiling, 16 B/el (offload: bf16 g, bf16 copy)"},
};
#define NCASES (sizeof cases / sizeof cases[0])

static void *xalloc(size_t bytes)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) {
        fprintf(stderr, "optim_q8floor: cannot allocate %zu bytes\n", bytes);
        exit(1);
    }
    return p;
}

/* Deterministic test data: gradients of spread scales, state from a few Adam-like steps. */
static void fill(work *w)
{
    uint32_t s = 12345u;
    for (size_t i = 0; i < w->n; i++) {
        float u1, u2, sc;
        s = s * 1664525u + 1013904223u;
        u1 = (float)(s >> 8) * (1.0f / 16777216.0f);
        s = s * 1664525u + 1013904223u;
        u2 = (float)(s >> 8) * (1.0f / 16777216.0f);
        sc = powf(10.0f, -3.0f * u2);
        w->g[i] = sc * (2.0f * u1 - 1.0f);
        w->p[i] = 0.1f * (u2 - 0.5f);
        w->m[i] = 0.1f * w->g[i];
        w->v[i] = 1e-3f * w->g[i] * w->g[i] + 1e-12f;
        w->g16[i] = (uint16_t)(optim__f32_bits(w->g[i]) >> 16);
        w->p16[i] = (uint16_t)(optim__f32_bits(w->p[i]) >> 16);
    }
    optim__q8_quantize(w->cm, w->sm, w->m, w->n, OPTIM__SLOT_SIGNED);
    optim__q8_quantize(w->cv, w->sv, w->v, w->n, OPTIM__SLOT_POSITIVE);
    for (size_t i = 0; i < OPTIM__CHUNK; i++) {
        w->scr_m[i] = w->m[i % w->n];
        w->scr_v[i] = w->v[i % w->n];
        w->scr_p[i] = w->p[i % w->n];
    }
}

static void set_k(work *w, int step)
{
    const double b1 = 0.9, b2 = 0.999, lr = 1e-3, t = step;
    memset(&w->k, 0, sizeof w->k);
    w->k.c.gscale = 1.0;
    w->k.c.decay = 1.0;
    w->k.c.gclip = INFINITY;
    w->k.u.adam.beta1 = b1;
    w->k.u.adam.one_minus_beta1 = 1.0 - b1;
    w->k.u.adam.beta2 = b2;
    w->k.u.adam.one_minus_beta2 = 1.0 - b2;
    w->k.u.adam.bc2 = 1.0 - pow(b2, t);
    w->k.u.adam.bc2_sqrt = sqrt(w->k.u.adam.bc2);
    w->k.u.adam.neg_step = -(lr / (1.0 - pow(b1, t)));
    w->k.u.adam.eps = 1e-8;
}

static work *work_new(size_t n, const optim__kernels *kt)
{
    work *w = (work *)xalloc(sizeof *w);
    const size_t nb = (n + Q8B - 1) / Q8B;
    memset(w, 0, sizeof *w);
    w->n = n;
    w->kt = kt;
    w->p = (float *)xalloc(n * 4);
    w->g = (float *)xalloc(n * 4);
    w->m = (float *)xalloc(n * 4);
    w->v = (float *)xalloc(n * 4);
    w->p16 = (uint16_t *)xalloc(n * 2);
    w->g16 = (uint16_t *)xalloc(n * 2);
    w->cm = (uint8_t *)xalloc(n);
    w->cv = (uint8_t *)xalloc(n);
    w->sm = (float *)xalloc(nb * 4);
    w->sv = (float *)xalloc(nb * 4);
    fill(w);
    set_k(w, 10);
    return w;
}

static void work_free(work *w)
{
    free(w->p), free(w->g), free(w->m), free(w->v), free(w->p16), free(w->g16);
    free(w->cm), free(w->cv), free(w->sm), free(w->sv), free(w);
}

/* fused_q8 against q8_staged, 5 steps from the same state: parameters, codes and scales bit for bit. */
static int check_fused_bits(const optim__kernels *kt, size_t n)
{
    work *a = work_new(n, kt), *b = work_new(n, kt);
    const size_t nb = (n + Q8B - 1) / Q8B;
    int ok = 1;
    /* Blocks that take the codecs' other branches: a NaN and an infinite gradient (non-finite m and v: the
     * NaN code, the scale of the finite elements), an all-zero block (the scale FLT_MIN, codes 0 and 1). */
    for (work *w = a; w; w = w == a ? b : NULL) {
        w->g[5] = NAN;
        w->g[300] = INFINITY;
        for (size_t i = 3 * Q8B; i < 4 * Q8B && i < n; i++) w->g[i] = w->m[i] = w->v[i] = 0.0f;
        optim__q8_quantize(w->cm, w->sm, w->m, n, OPTIM__SLOT_SIGNED);
        optim__q8_quantize(w->cv, w->sv, w->v, n, OPTIM__SLOT_POSITIVE);
    }
    for (int step = 1; step <= 5; step++) {
        set_k(a, step), set_k(b, step);
        run_q8_staged(a);
        run_fused_q8(b);
    }
    if (memcmp(a->p, b->p, n * 4) || memcmp(a->cm, b->cm, n) || memcmp(a->cv, b->cv, n) ||
        memcmp(a->sm, b->sm, nb * 4) || memcmp(a->sv, b->sv, nb * 4))
        ok = 0;
    work_free(a), work_free(b);
    return ok;
}

static size_t parse_size(const char *s)
{
    char *e;
    double v = strtod(s, &e);
    if (*e == 'K' || *e == 'k') v *= 1024;
    else if (*e == 'M' || *e == 'm') v *= 1024 * 1024;
    return (size_t)v;
}

static int cmp_d(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *sizes = "4K,16K,64K,64M", *only = NULL;
    int trials = 7, check_only = 0;
    const optim__kernels *kt;
    char buf[256];
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--sizes") && i + 1 < argc) sizes = argv[++i];
        else if (!strcmp(argv[i], "--trials") && i + 1 < argc) trials = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cases") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--check")) check_only = 1;
        else {
            fprintf(stderr, "usage: optim_q8floor [--sizes 4K,16K,64K,64M] [--trials N] [--cases a,b] [--check]\n");
            return 2;
        }
    }
    if (trials < 1 || trials > 100) trials = 7;
    kt = optim__kernels_get(OPTIM_ISA_AVX512);
    if (!kt || !__builtin_cpu_supports("avx512f")) {
        printf("optim_q8floor: no AVX-512 path on this CPU or build; nothing measured\n");
        return 77;
    }
    if (!check_fused_bits(kt, 4096 + 512) || !check_fused_bits(kt, 3 * 512)) {
        fprintf(stderr, "optim_q8floor: fused_q8 does not give q8_staged's bits\n");
        return 1;
    }
    printf("# fused_q8 == q8_staged bit for bit (p, codes, scales; 5 steps)\n");
    if (check_only) return 0;
    printf("# ns/element of CPU time (CLOCK_PROCESS_CPUTIME_ID), one thread, best of %d trials\n", trials);
    printf("%-8s %-15s %9s %9s %7s  %s\n", "size", "case", "best_ns", "median", "spread", "what");
    snprintf(buf, sizeof buf, "%s", sizes);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        const size_t n = parse_size(tok);
        work *w;
        size_t inner;
        if (n < Q8B || n % OPTIM__CHUNK) {
            fprintf(stderr, "optim_q8floor: size %s: need a multiple of 512 elements\n", tok);
            return 2;
        }
        w = work_new(n, kt);
        inner = n >= ((size_t)1 << 22) ? 1 : ((size_t)1 << 24) / n; /* ~16M elements per trial in cache */
        for (size_t c = 0; c < NCASES; c++) {
            double t[100];
            if (only && !strstr(only, cases[c].name)) continue;
            cases[c].fn(w); /* warm-up */
            for (int r = 0; r < trials; r++) {
                const double t0 = cpu_now();
                for (size_t j = 0; j < inner; j++) cases[c].fn(w);
                t[r] = (cpu_now() - t0) / ((double)inner * (double)n) * 1e9;
            }
            qsort(t, (size_t)trials, sizeof t[0], cmp_d);
            printf("%-8s %-15s %9.3f %9.3f %6.0f%%  %s\n", tok, cases[c].name, t[0], t[trials / 2],
                   100.0 * (t[trials / 2] / t[0] - 1.0), cases[c].what);
            fflush(stdout);
            fill(w); /* the state must not drift into a corner over many steps */
        }
        work_free(w);
    }
    return 0;
}
