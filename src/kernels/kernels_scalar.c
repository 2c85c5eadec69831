/* kernels_scalar.c: the kernels compiled for the scalar path (flags set per file in CMakeLists.txt). */
#define OPTIM__KERNELS_NAME optim__kernels_scalar
#define OPTIM__KERNELS_ISA OPTIM_ISA_SCALAR
#include "kernels_impl.h"
