/* kernels_avx2.c: the kernels compiled for the avx2 path (flags set per file in CMakeLists.txt). */
#define OPTIM__KERNELS_NAME optim__kernels_avx2
#define OPTIM__KERNELS_ISA OPTIM_ISA_AVX2
#define OPTIM__STATS_FUSED 1 /* fused step-statistics loops for float32 (kernels_impl.h) */
#include "kernels_impl.h"
