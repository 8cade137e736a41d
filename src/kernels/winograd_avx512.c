/*
 * winograd_avx512.c — the F(4x4, 3x3) lane loops of winograd_impl.h in avx512 vectors of 16 lanes
 * (built with the avx512 target flags and -ffp-contract=off, CMakeLists.txt; only on x86-64 native
 * builds). Called only after cpu.c found the ISA.
 */
#include "kernels/winograd.h"

#if defined(CO_GEMM_X86)
#include <immintrin.h>

#define WINO_VL 16
typedef __m512 wino_v;
#define WINO_LOAD(p) _mm512_loadu_ps(p)
#define WINO_STORE(p, v) _mm512_storeu_ps((p), (v))
#define WINO_ADD(a, b) _mm512_add_ps((a), (b))
#define WINO_SUB(a, b) _mm512_sub_ps((a), (b))
#define WINO_MUL(a, b) _mm512_mul_ps((a), (b))
#define WINO_SET1(x) _mm512_set1_ps(x)
#define WINO_INPUT co_wino_input_avx512
#define WINO_OUTPUT co_wino_output_avx512
#include "kernels/winograd_impl.h"
#else
typedef int co_winograd_avx512_unused; /* ISO C: no empty translation unit */
#endif
