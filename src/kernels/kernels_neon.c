/* kernels_neon.c: the kernels compiled for the neon path (flags set per file in CMakeLists.txt). */
#define OPTIM__KERNELS_NAME optim__kernels_neon
#define OPTIM__KERNELS_ISA OPTIM_ISA_NEON
#include "kernels_impl.h"
