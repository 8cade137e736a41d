/*
 * gemm_avx2.c — AVX2 + FMA single-precision products (built with -mavx2 -mfma; called only when
 * cpu.c found AVX2, FMA and OS ymm support): gemm_template.h with 8-float vectors, i.e. the same
 * three paths as gemm_avx512.c with a 6 x 16 register tile (12 ymm accumulators), 16-wide B
 * panels, 4 x 3 dot products for small M, and 1 x 64 strips for packed 1-row products.
 */
#include "kernels/gemm_impl.h"

#if defined(CO_GEMM_X86) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#define GT_NAME(x) co_gemm_avx2##x
#define GT_VL 8
#define GT_MR 6
#define GT_DR 4
#define GT_STRIP_ROWS 1 /* packed 1-row products in strips of 4 panels (8 accumulators) */
#define GT_ALIGN 32
#define GT_TILE_ROWS(X, nv) X(1, nv) X(2, nv) X(3, nv) X(4, nv) X(5, nv) X(6, nv)
#define GT_DOT_ROWS(X, jb) X(1, jb) X(2, jb) X(3, jb) X(4, jb)
#define GT_TILE_TABLE(nv) {tile_1_##nv, tile_2_##nv, tile_3_##nv, tile_4_##nv, tile_5_##nv, tile_6_##nv}
#define GT_DOT_TABLE(jb) {dots_1_##jb, dots_2_##jb, dots_3_##jb, dots_4_##jb}

typedef __m256 vf;
typedef __m256i vmask;
static const int32_t k_mask_src[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
static inline vmask lanes(int64_t n)
{
    const int64_t c = n < 0 ? 0 : n > 8 ? 8 : n;
    return _mm256_loadu_si256((const __m256i *)(k_mask_src + 8 - c));
}
static inline float v_hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#define v_zero() _mm256_setzero_ps()
#define v_loadu(p) _mm256_loadu_ps(p)
#define v_maskload(p, m) _mm256_maskload_ps((p), (m))
#define v_maskstore(p, m, v) _mm256_maskstore_ps((p), (m), (v))
#define v_storeu(p, v) _mm256_storeu_ps((p), (v))
#define v_store(p, v) _mm256_store_ps((p), (v))
#define v_bcast(p) _mm256_broadcast_ss(p)
#define v_fma(a, b, c) _mm256_fmadd_ps((a), (b), (c))

#include "kernels/gemm_template.h"
#else
typedef int co_gemm_avx2_unused;
#endif
