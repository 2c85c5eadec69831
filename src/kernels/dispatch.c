/* dispatch.c: which CPU paths this build has and this CPU runs, chosen once.
 *
 * Detection reads cpuid and, for AVX and AVX-512, xgetbv: the CPU having the
 * instructions is not enough, the operating system must also save the wider
 * registers (the same check xxHash's dispatcher makes). What the CPU runs and
 * the default path are resolved once per process and kept in the library's
 * only global mutable state (two write-once words); everything else is per
 * handle. */
#include "kernels.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#  include <cpuid.h>
#  define OPTIM__X86 1
#endif

#if defined(OPTIM__X86)
static uint64_t optim__xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static int optim__cpu_has(optim_isa isa)
{
    unsigned a, b, c, d;
    uint64_t xcr0;
    int osxsave, avx, fma, f16c, avx2, f, dq, vl, bw, bf16;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    osxsave = (c >> 27) & 1;
    avx = (c >> 28) & 1;
    fma = (c >> 12) & 1;
    f16c = (c >> 29) & 1; /* the avx2 and avx512 paths convert float16 with vcvtps2ph/vcvtph2ps */
    if (!osxsave || !avx) return 0;
    xcr0 = optim__xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return 0; /* SSE and AVX state saved by the OS */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    avx2 = (b >> 5) & 1;
    f = (b >> 16) & 1;
    dq = (b >> 17) & 1;
    vl = (b >> 31) & 1;
    bw = (b >> 30) & 1;
    if (isa == OPTIM_ISA_AVX2) return avx2 && fma && f16c;
    if (isa == OPTIM_ISA_AVX512) return avx2 && fma && f16c && f && dq && vl && (xcr0 & 0xe6) == 0xe6;
    if (isa == OPTIM_ISA_AVX512BF16) {
        if (!(avx2 && fma && f16c && f && dq && vl && bw && (xcr0 & 0xe6) == 0xe6)) return 0;
        if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
        bf16 = (a >> 5) & 1; /* AVX512_BF16 */
        return bf16;
    }
    return 0;
}
#endif

/* Bit i set: the CPU runs path i; bit 31: detection done. cpuid traps to
 * the hypervisor on virtual machines (microseconds), so it runs once per
 * process, not per call. Racing first calls compute the same value. */
static atomic_uint optim__cpu_mask;

static int optim__cpu_runs(optim_isa isa)
{
    unsigned mask = atomic_load_explicit(&optim__cpu_mask, memory_order_relaxed);
    if (mask == 0) {
        mask = 1u << 31;
#if defined(OPTIM__X86)
        if (optim__cpu_has(OPTIM_ISA_AVX2)) mask |= 1u << OPTIM_ISA_AVX2;
        if (optim__cpu_has(OPTIM_ISA_AVX512)) mask |= 1u << OPTIM_ISA_AVX512;
        if (optim__cpu_has(OPTIM_ISA_AVX512BF16)) mask |= 1u << OPTIM_ISA_AVX512BF16;
#endif
        atomic_store_explicit(&optim__cpu_mask, mask, memory_order_relaxed);
    }
    return (int)((mask >> (unsigned)isa) & 1u);
}

static const optim__kernels *optim__table(optim_isa isa)
{
    switch (isa) {
    case OPTIM_ISA_SCALAR: return &optim__kernels_scalar;
#if defined(OPTIM_HAVE_AVX2)
    case OPTIM_ISA_AVX2: return optim__cpu_runs(OPTIM_ISA_AVX2) ? &optim__kernels_avx2 : NULL;
#endif
#if defined(OPTIM_HAVE_AVX512)
    case OPTIM_ISA_AVX512: return optim__cpu_runs(OPTIM_ISA_AVX512) ? &optim__kernels_avx512 : NULL;
#endif
#if defined(OPTIM_HAVE_AVX512BF16)
    case OPTIM_ISA_AVX512BF16: return optim__cpu_runs(OPTIM_ISA_AVX512BF16) ? &optim__kernels_avx512bf16 : NULL;
#endif
#if defined(OPTIM_HAVE_NEON)
    case OPTIM_ISA_NEON: return &optim__kernels_neon;
#endif
    default: return NULL;
    }
}

const char *optim_isa_name(optim_isa isa)
{
    switch (isa) {
    case OPTIM_ISA_AUTO: return "auto";
    case OPTIM_ISA_SCALAR: return "scalar";
    case OPTIM_ISA_AVX2: return "avx2";
    case OPTIM_ISA_AVX512: return "avx512";
    case OPTIM_ISA_NEON: return "neon";
    case OPTIM_ISA_AVX512BF16: return "avx512bf16";
    default: return NULL;
    }
}

int optim_isa_available(optim_isa isa)
{
    return isa != OPTIM_ISA_AUTO && optim__table(isa) != NULL;
}

static optim_isa optim__detect(void)
{
    static const optim_isa best_first[] = {OPTIM_ISA_AVX512BF16, OPTIM_ISA_AVX512, OPTIM_ISA_AVX2, OPTIM_ISA_NEON,
                                           OPTIM_ISA_SCALAR};
    const char *env = getenv("OPTIM_ISA");
    size_t i;
    if (env && *env) {
        for (i = 0; i < sizeof best_first / sizeof best_first[0]; i++) {
            if (strcmp(env, optim_isa_name(best_first[i])) == 0 && optim_isa_available(best_first[i]))
                return best_first[i];
        }
        /* An unknown or unavailable name falls through to the best path;
         * optim_isa_default() reports what is used. */
    }
    for (i = 0; i < sizeof best_first / sizeof best_first[0]; i++)
        if (optim_isa_available(best_first[i])) return best_first[i];
    return OPTIM_ISA_SCALAR;
}

/* 0 until resolved (the environment is read once). */
static atomic_int optim__default_isa;

optim_isa optim_isa_default(void)
{
    int isa = atomic_load_explicit(&optim__default_isa, memory_order_relaxed);
    if (isa == 0) {
        isa = (int)optim__detect();
        atomic_store_explicit(&optim__default_isa, isa, memory_order_relaxed);
    }
    return (optim_isa)isa;
}

const optim__kernels *optim__kernels_get(optim_isa isa)
{
    if (isa == OPTIM_ISA_AUTO) isa = optim_isa_default();
    return optim__table(isa);
}
