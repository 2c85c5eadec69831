/* kernels_avx2.c: the kernels compiled for the avx2 path (flags set per file in CMakeLists.txt). */
#define OPTIM__KERNELS_NAME optim__kernels_avx2
#define OPTIM__KERNELS_ISA OPTIM_ISA_AVX2
#include "kernels_impl.h"
