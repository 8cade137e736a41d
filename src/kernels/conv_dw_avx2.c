/*
 * conv_dw_avx2.c — co_dw_taps with AVX2 + FMA (built with -mavx2 -mfma; called only when cpu.c
 * found them and OS support): 4 ymm accumulators (32 lanes) per pass over the taps; 8-lane and
 * scalar tails (the scalar tail uses fmaf, so every lane sums alike).
 */
#include "kernels/conv_dw.h"

#if defined(CO_GEMM_X86) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#include <math.h>

enum { VL = 8, BLOCK = 4 * VL };

static void row_taps(int64_t n, int n_taps, const float *const *src, int64_t off, const float *w, float init,
                     int accumulate, float *dst)
{
    const __m256 vinit = _mm256_set1_ps(init);
    int64_t i = 0;
    for (; i + BLOCK <= n; i += BLOCK) {
        __m256 a0 = accumulate ? _mm256_loadu_ps(dst + i) : vinit;
        __m256 a1 = accumulate ? _mm256_loadu_ps(dst + i + VL) : vinit;
        __m256 a2 = accumulate ? _mm256_loadu_ps(dst + i + 2 * VL) : vinit;
        __m256 a3 = accumulate ? _mm256_loadu_ps(dst + i + 3 * VL) : vinit;
        for (int t = 0; t < n_taps; t++) {
            const __m256 wt = _mm256_set1_ps(w[t]);
            const float *s = src[t] + off + i;
            a0 = _mm256_fmadd_ps(wt, _mm256_loadu_ps(s), a0);
            a1 = _mm256_fmadd_ps(wt, _mm256_loadu_ps(s + VL), a1);
            a2 = _mm256_fmadd_ps(wt, _mm256_loadu_ps(s + 2 * VL), a2);
            a3 = _mm256_fmadd_ps(wt, _mm256_loadu_ps(s + 3 * VL), a3);
        }
        _mm256_storeu_ps(dst + i, a0);
        _mm256_storeu_ps(dst + i + VL, a1);
        _mm256_storeu_ps(dst + i + 2 * VL, a2);
        _mm256_storeu_ps(dst + i + 3 * VL, a3);
    }
    for (; i + VL <= n; i += VL) {
        __m256 a = accumulate ? _mm256_loadu_ps(dst + i) : vinit;
        for (int t = 0; t < n_taps; t++) a = _mm256_fmadd_ps(_mm256_set1_ps(w[t]), _mm256_loadu_ps(src[t] + off + i), a);
        _mm256_storeu_ps(dst + i, a);
    }
    for (; i < n; i++) {
        float a = accumulate ? dst[i] : init;
        for (int t = 0; t < n_taps; t++) a = fmaf(w[t], src[t][off + i], a);
        dst[i] = a;
    }
}
void co_dw_taps_avx2(CO_DW_TAPS_ARGS)
{
    for (int64_t r = 0; r < rows; r++) row_taps(n, n_taps, src, r * src_ld, w, init, accumulate, dst + r * dst_ld);
}
#endif
