/*
 * conv_dw_avx512.c — co_dw_taps and co_dw_pixels with AVX-512 F (built with -mavx512f -mfma; called only when
 * cpu.c found AVX-512 and OS support): the loop of conv_dw_impl.h on zmm vectors, tails by
 * opmask.
 */
#include "kernels/conv_dw.h"

#if defined(CO_GEMM_X86) && defined(__AVX512F__) && defined(__FMA__)
#include <immintrin.h>

#define DW_VL 16
#define DW_VEC __m512
#define DW_MASK __mmask16
#define DW_SET1(x) _mm512_set1_ps(x)
#define DW_MASK_FOR(k) ((__mmask16)((1u << (k)) - 1u))
#define DW_LOADU(p) _mm512_loadu_ps(p)
#define DW_STOREU(p, v) _mm512_storeu_ps((p), (v))
#define DW_LOAD(m, p) _mm512_maskz_loadu_ps((m), (p))
#define DW_STORE(p, m, v) _mm512_mask_storeu_ps((p), (m), (v))
#define DW_FMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define DW_TAPS_FN co_dw_taps_avx512
#define DW_ADD(a, b) _mm512_add_ps((a), (b))
#define DW_PIXELS_FN co_dw_pixels_avx512
#define DW_INDEX __m512i
#define DW_STRIDES(ld) _mm512_mullo_epi32(_mm512_set1_epi32((int)(ld)), _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15))
#define DW_GATHER(m, p, idx) _mm512_mask_i32gather_ps(_mm512_setzero_ps(), (m), (idx), (p), 4)
#define DW_TRANSPOSE_FN co_dw_transpose_avx512
#include "kernels/conv_dw_impl.h"
#endif
