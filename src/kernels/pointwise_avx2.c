/*
 * pointwise_avx2.c — the sigmoid and SiLU loops of pointwise_exp.h built for AVX2 (-mavx2), without FMA
 * contraction (-ffp-contract=off) and with -fno-trapping-math, as pointwise.c: the same bits as
 * the portable loop, 16 / 8 lanes at a time. Called only when cpu.c found the ISA.
 */
#include "kernels/pointwise_exp.h"

#if defined(CO_GEMM_X86) && defined(__AVX2__)
void co_sigmoid_avx2(const float *x, float *y, int64_t n) { co_sigmoid_loop(x, y, n); }
void co_silu_avx2(const float *x, float *y, int64_t n) { co_silu_loop(x, y, n); }
void co_swish_avx2(const float *x, float *y, int64_t n) { co_swish_loop(x, y, n); }
#endif
