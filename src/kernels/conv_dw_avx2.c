/*
 * conv_dw_avx2.c — co_dw_taps and co_dw_pixels with AVX2 + FMA (built with -mavx2 -mfma; called only when cpu.c
 * found them and OS support): the loop of conv_dw_impl.h on ymm vectors, tails by maskload /
 * maskstore (lanes past the mask are neither read nor written).
 */
#include "kernels/conv_dw.h"

#if defined(CO_GEMM_X86) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

static inline __m256i dw_mask_for(int k)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

#define DW_VL 8
#define DW_VEC __m256
#define DW_MASK __m256i
#define DW_SET1(x) _mm256_set1_ps(x)
#define DW_MASK_FOR(k) dw_mask_for((int)(k))
#define DW_LOADU(p) _mm256_loadu_ps(p)
#define DW_STOREU(p, v) _mm256_storeu_ps((p), (v))
#define DW_LOAD(m, p) _mm256_maskload_ps((p), (m))
#define DW_STORE(p, m, v) _mm256_maskstore_ps((p), (m), (v))
#define DW_FMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define DW_TAPS_FN co_dw_taps_avx2
#define DW_ADD(a, b) _mm256_add_ps((a), (b))
#define DW_PIXELS_FN co_dw_pixels_avx2
#define DW_INDEX __m256i
#define DW_STRIDES(ld) _mm256_mullo_epi32(_mm256_set1_epi32((int)(ld)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define DW_GATHER(m, p, idx) _mm256_mask_i32gather_ps(_mm256_setzero_ps(), (p), (idx), _mm256_castsi256_ps(m), 4)
#define DW_TRANSPOSE_FN co_dw_transpose_avx2
#include "kernels/conv_dw_impl.h"
#endif
