/*
 * conv_dw_avx512.c — co_dw_taps with AVX-512 F (built with -mavx512f -mfma; called only when
 * cpu.c found AVX-512 and OS support): 4 zmm accumulators (64 lanes) per pass over the taps, so
 * four independent FMA chains hide the latency; masked tail.
 */
#include "kernels/conv_dw.h"

#if defined(CO_GEMM_X86) && defined(__AVX512F__) && defined(__FMA__)
#include <immintrin.h>

enum { VL = 16, BLOCK = 4 * VL };

static inline __mmask16 lanes(int64_t n) { return n >= VL ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u); }

static void row_taps(int64_t n, int n_taps, const float *const *src, int64_t off, const float *w, float init,
                     int accumulate, float *dst)
{
    const __m512 vinit = _mm512_set1_ps(init);
    int64_t i = 0;
    for (; i + BLOCK <= n; i += BLOCK) {
        __m512 a0 = accumulate ? _mm512_loadu_ps(dst + i) : vinit;
        __m512 a1 = accumulate ? _mm512_loadu_ps(dst + i + VL) : vinit;
        __m512 a2 = accumulate ? _mm512_loadu_ps(dst + i + 2 * VL) : vinit;
        __m512 a3 = accumulate ? _mm512_loadu_ps(dst + i + 3 * VL) : vinit;
        for (int t = 0; t < n_taps; t++) {
            const __m512 wt = _mm512_set1_ps(w[t]);
            const float *s = src[t] + off + i;
            a0 = _mm512_fmadd_ps(wt, _mm512_loadu_ps(s), a0);
            a1 = _mm512_fmadd_ps(wt, _mm512_loadu_ps(s + VL), a1);
            a2 = _mm512_fmadd_ps(wt, _mm512_loadu_ps(s + 2 * VL), a2);
            a3 = _mm512_fmadd_ps(wt, _mm512_loadu_ps(s + 3 * VL), a3);
        }
        _mm512_storeu_ps(dst + i, a0);
        _mm512_storeu_ps(dst + i + VL, a1);
        _mm512_storeu_ps(dst + i + 2 * VL, a2);
        _mm512_storeu_ps(dst + i + 3 * VL, a3);
    }
    for (; i < n; i += VL) {
        const __mmask16 m = lanes(n - i);
        __m512 a = accumulate ? _mm512_maskz_loadu_ps(m, dst + i) : vinit;
        for (int t = 0; t < n_taps; t++) a = _mm512_fmadd_ps(_mm512_set1_ps(w[t]), _mm512_maskz_loadu_ps(m, src[t] + off + i), a);
        _mm512_mask_storeu_ps(dst + i, m, a);
    }
}
void co_dw_taps_avx512(CO_DW_TAPS_ARGS)
{
    for (int64_t r = 0; r < rows; r++) row_taps(n, n_taps, src, r * src_ld, w, init, accumulate, dst + r * dst_ld);
}
#endif
