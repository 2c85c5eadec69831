/* kernels_avx512.c: the kernels compiled for the avx512 path (flags set per file in CMakeLists.txt). */
#define OPTIM__KERNELS_NAME optim__kernels_avx512
#define OPTIM__KERNELS_ISA OPTIM_ISA_AVX512
#if defined(OPTIM_HAVE_AVX512BF16)
#  define OPTIM__KERNELS_NAME_BF16 optim__kernels_avx512bf16
#endif
#define OPTIM__STATS_FUSED 1 /* fused step-statistics loops for float32 (kernels_impl.h) */
#include "kernels_impl.h"
