/*
 * winograd_avx2.c — the F(4x4, 3x3) lane loops of winograd_impl.h in avx2 vectors of 8 lanes
 * (built with the avx2 target flags and -ffp-contract=off, CMakeLists.txt; only on x86-64 native
 * builds). Called only after cpu.c found the ISA.
 */
#include "kernels/winograd.h"

#if defined(CO_GEMM_X86)
#include <immintrin.h>

#define WINO_VL 8
typedef __m256 wino_v;
#define WINO_LOAD(p) _mm256_loadu_ps(p)
#define WINO_STORE(p, v) _mm256_storeu_ps((p), (v))
#define WINO_ADD(a, b) _mm256_add_ps((a), (b))
#define WINO_SUB(a, b) _mm256_sub_ps((a), (b))
#define WINO_MUL(a, b) _mm256_mul_ps((a), (b))
#define WINO_SET1(x) _mm256_set1_ps(x)
#define WINO_INPUT co_wino_input_avx2
#define WINO_OUTPUT co_wino_output_avx2
#include "kernels/winograd_impl.h"
#else
typedef int co_winograd_avx2_unused; /* ISO C: no empty translation unit */
#endif
