/*
 * gemm_avx512.c — AVX-512 F single-precision products (built with -mavx512f -mfma; called only
 * when cpu.c found AVX-512 and OS support): gemm_template.h with 16-float vectors.
 *
 *   general:  8 x 32 register tile (16 zmm accumulators), A broadcast straight from its rows,
 *             B packed per call into a 256 x 32 panel on the stack (nn: row copies; nt:
 *             transposed), C loaded/stored once per 256-deep block; row blocks of A sized for L2.
 *   small M:  M <= 8 and B stored N x K (Linear/Conv1d/RNN steps at batch <= 8): dot products
 *             along K, 8 rows x 3 columns of B at a time, so every weight is read once and nothing
 *             is packed.
 *   packed:   weights packed once at load into 32-wide panels (co_gemm_pack_b): the 8 x 32 tile
 *             over the whole K, the panel streamed (and prefetched) once per 8 rows of A; one or
 *             two rows of A take 4 panels at once (1 x 128 / 2 x 128 strips).
 */
#include "kernels/gemm_impl.h"

#if defined(CO_GEMM_X86) && defined(__AVX512F__) && defined(__FMA__)
#include <immintrin.h>

#define GT_NAME(x) co_gemm_avx512##x
#define GT_VL 16
#define GT_MR 8
#define GT_DR 8
#define GT_STRIP_ROWS 2 /* packed 1- and 2-row products in strips of 4 panels (16 accumulators) */
#define GT_ALIGN 64
#define GT_TILE_ROWS(X, nv) X(1, nv) X(2, nv) X(3, nv) X(4, nv) X(5, nv) X(6, nv) X(7, nv) X(8, nv)
#define GT_DOT_ROWS(X, jb) GT_TILE_ROWS(X, jb)
#define GT_TILE_TABLE(nv)                                                                                            \
    {tile_1_##nv, tile_2_##nv, tile_3_##nv, tile_4_##nv, tile_5_##nv, tile_6_##nv, tile_7_##nv, tile_8_##nv}
#define GT_DOT_TABLE(jb)                                                                                             \
    {dots_1_##jb, dots_2_##jb, dots_3_##jb, dots_4_##jb, dots_5_##jb, dots_6_##jb, dots_7_##jb, dots_8_##jb}

typedef __m512 vf;
typedef __mmask16 vmask;
static inline vmask lanes(int64_t n)
{
    return n >= 16 ? (vmask)0xffff : n <= 0 ? (vmask)0 : (vmask)((1u << n) - 1u);
}
#define v_zero() _mm512_setzero_ps()
#define v_loadu(p) _mm512_loadu_ps(p)
#define v_maskload(p, m) _mm512_maskz_loadu_ps((m), (p))
#define v_maskstore(p, m, v) _mm512_mask_storeu_ps((p), (m), (v))
#define v_storeu(p, v) _mm512_storeu_ps((p), (v))
#define v_store(p, v) _mm512_store_ps((p), (v))
#define v_bcast(p) _mm512_set1_ps(*(p))
#define v_fma(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define v_hsum(v) _mm512_reduce_add_ps(v)

#include "kernels/gemm_template.h"
#else
/* Not an x86-64 build with the native kernels: nothing here (gemm.c never calls it). */
typedef int co_gemm_avx512_unused;
#endif
