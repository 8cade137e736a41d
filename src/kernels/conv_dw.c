/*
 * conv_dw.c — co_dw_taps: dispatch to the widest kernel set the CPU runs (cpu.c), and the
 * portable C loop (blocks of lanes whose accumulators the compiler keeps in registers, one
 * output at a time); the same for co_dw_pixels.
 */
#include "kernels/conv_dw.h"

#include "kernels/cpu.h"

enum { PORTABLE_LANES = 16 };

static void portable_row(int64_t n, int n_taps, const float *const *src, int64_t off, const float *w, float init,
                         int accumulate, float *dst)
{
    int64_t i0 = 0;
    for (; i0 + PORTABLE_LANES <= n; i0 += PORTABLE_LANES) {
        float acc[PORTABLE_LANES];
        for (int l = 0; l < PORTABLE_LANES; l++) acc[l] = accumulate ? dst[i0 + l] : init;
        for (int t = 0; t < n_taps; t++) {
            const float wt = w[t], *s = src[t] + off + i0;
            for (int l = 0; l < PORTABLE_LANES; l++) acc[l] += wt * s[l];
        }
        for (int l = 0; l < PORTABLE_LANES; l++) dst[i0 + l] = acc[l];
    }
    for (int64_t i = i0; i < n; i++) {
        float acc = accumulate ? dst[i] : init;
        for (int t = 0; t < n_taps; t++) acc += w[t] * src[t][off + i];
        dst[i] = acc;
    }
}

static void portable_taps(CO_DW_TAPS_ARGS)
{
    for (int o = 0; o < n_out; o++)
        for (int64_t r = 0; r < rows; r++)
            portable_row(n, n_taps, src, r * src_ld, w + o * w_ld, accumulate ? 0.0f : init[o], accumulate,
                         dst[o] + r * dst_ld);
}

static void portable_pixels(CO_DW_PIXELS_ARGS)
{
    for (int64_t i = 0; i < n_px; i++)
        for (int64_t c0 = 0; c0 < C; c0 += PORTABLE_LANES) {
            const int64_t nc = C - c0 < PORTABLE_LANES ? C - c0 : PORTABLE_LANES;
            float acc[PORTABLE_LANES] = {0};
            for (int t = 0; t < n_taps; t++) {
                const float *wt = w + t * C + c0, *s = src[t] + i * src_step[t] + c0;
                for (int64_t l = 0; l < nc; l++) acc[l] += wt[l] * s[l];
            }
            for (int64_t l = 0; l < nc; l++) dst[i * C + c0 + l] = acc[l] + (bias ? bias[c0 + l] : 0.0f);
        }
}

void co_dw_pixels(CO_DW_PIXELS_ARGS)
{
    if (n_px <= 0 || C <= 0) return;
#if defined(CO_GEMM_X86)
    switch (co_cpu_isa()) {
    case CO_ISA_AVX512: co_dw_pixels_avx512(n_px, C, n_taps, src, src_step, w, bias, dst); return;
    case CO_ISA_AVX2: co_dw_pixels_avx2(n_px, C, n_taps, src, src_step, w, bias, dst); return;
    default: break;
    }
#endif
    portable_pixels(n_px, C, n_taps, src, src_step, w, bias, dst);
}

void co_dw_transpose(CO_DW_TRANSPOSE_ARGS)
{
    if (rows <= 0 || cols <= 0) return;
#if defined(CO_GEMM_X86)
    switch (co_cpu_isa()) {
    case CO_ISA_AVX512: co_dw_transpose_avx512(rows, cols, src, src_ld, dst, dst_ld); return;
    case CO_ISA_AVX2: co_dw_transpose_avx2(rows, cols, src, src_ld, dst, dst_ld); return;
    default: break;
    }
#endif
    enum { BLOCK = 16 };
    for (int64_t i0 = 0; i0 < rows; i0 += BLOCK)
        for (int64_t j = 0; j < cols; j++) {
            const int64_t i1 = rows - i0 < BLOCK ? rows : i0 + BLOCK;
            for (int64_t i = i0; i < i1; i++) dst[j * dst_ld + i] = src[i * src_ld + j];
        }
}

void co_dw_taps(CO_DW_TAPS_ARGS)
{
    if (n <= 0 || rows <= 0 || n_out <= 0) return;
#if defined(CO_GEMM_X86)
    switch (co_cpu_isa()) {
    case CO_ISA_AVX512:
        co_dw_taps_avx512(rows, n, n_taps, src, src_ld, n_out, w, w_ld, init, accumulate, dst, dst_ld);
        return;
    case CO_ISA_AVX2: co_dw_taps_avx2(rows, n, n_taps, src, src_ld, n_out, w, w_ld, init, accumulate, dst, dst_ld); return;
    default: break;
    }
#endif
    portable_taps(rows, n, n_taps, src, src_ld, n_out, w, w_ld, init, accumulate, dst, dst_ld);
}
