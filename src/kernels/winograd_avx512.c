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
/* 16 lanes (channels) x 4 pixels of a row: unpack / shuffle within 128-bit lanes gives, in
 * 128-bit lane q of u_c, the row of channel 4q + c; each row is then one 4-float add. */
#define WINO_ADD_ROWS(o, cs, r0, r1, r2, r3)                                                                    \
    do {                                                                                                        \
        const __m512 t0 = _mm512_unpacklo_ps(r0, r1), t1 = _mm512_unpackhi_ps(r0, r1);                          \
        const __m512 t2 = _mm512_unpacklo_ps(r2, r3), t3 = _mm512_unpackhi_ps(r2, r3);                          \
        const __m512 u[4] = {_mm512_shuffle_ps(t0, t2, 0x44), _mm512_shuffle_ps(t0, t2, 0xEE),                \
                             _mm512_shuffle_ps(t1, t3, 0x44), _mm512_shuffle_ps(t1, t3, 0xEE)};               \
        float *const o_ = (o);                                                                                  \
        for (int c_ = 0; c_ < 4; c_++) {                                                                        \
            float *q0 = o_ + c_ * (cs), *q1 = q0 + 4 * (cs), *q2 = q0 + 8 * (cs), *q3 = q0 + 12 * (cs);         \
            _mm_storeu_ps(q0, _mm_add_ps(_mm_loadu_ps(q0), _mm512_extractf32x4_ps(u[c_], 0)));                  \
            _mm_storeu_ps(q1, _mm_add_ps(_mm_loadu_ps(q1), _mm512_extractf32x4_ps(u[c_], 1)));                  \
            _mm_storeu_ps(q2, _mm_add_ps(_mm_loadu_ps(q2), _mm512_extractf32x4_ps(u[c_], 2)));                  \
            _mm_storeu_ps(q3, _mm_add_ps(_mm_loadu_ps(q3), _mm512_extractf32x4_ps(u[c_], 3)));                  \
        }                                                                                                       \
    } while (0)
#define WINO_INPUT co_wino_input_avx512
#define WINO_OUTPUT_ADD co_wino_output_add_avx512
#define WINO_OUTPUT co_wino_output_avx512
#include "kernels/winograd_impl.h"
#else
typedef int co_winograd_avx512_unused; /* ISO C: no empty translation unit */
#endif
