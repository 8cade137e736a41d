/*
 * winograd_avx2.c — the F(4x4, 3x3) lane loops of winograd_impl.h built with the avx2 target flags
 * (CMakeLists.txt; only on x86-64 native builds). Called only after cpu.c found the ISA.
 */
#include "kernels/winograd.h"

#if defined(CO_GEMM_X86)
#define WINO_INPUT co_wino_input_avx2
#define WINO_OUTPUT co_wino_output_avx2
#include "kernels/winograd_impl.h"
#else
typedef int co_winograd_avx2_unused; /* ISO C: no empty translation unit */
#endif
