/*
 * conv_dw.h — the inner loop of depthwise (and other one-input-channel-per-group) convolutions:
 * one output row as a weighted sum of shifted input rows, every tap accumulated in registers so
 * the row is read and written once. Convolutions (src/layers/conv.c) lay their input out so that
 * every tap is a contiguous run (padded planes, strided columns split into phases), which is what
 * lets one kernel serve every stride, dilation and padding mode.
 *
 * The kernel set (AVX-512 F, AVX2 + FMA, portable C) is picked at run time by kernels/cpu.c, as
 * for the products of gemm.h. Nothing here allocates.
 */
#ifndef CO_CONV_DW_H
#define CO_CONV_DW_H

#include <stdint.h>

/* For each row r < rows and i < n:
 *   dst[r * dst_ld + i] = (accumulate ? that : init) + sum over t < n_taps of w[t] * src[t][r * src_ld + i].
 * The taps are added in order t = 0, 1, ... (each lane sums in the same order on every ISA, up
 * to the fused multiply-add of the wide kernels). n_taps may be 0. dst must not overlap src. */
#define CO_DW_TAPS_ARGS                                                                                              \
    int64_t rows, int64_t n, int n_taps, const float *const *src, int64_t src_ld, const float *w, float init,       \
        int accumulate, float *dst, int64_t dst_ld
void co_dw_taps(CO_DW_TAPS_ARGS);

/* The per-ISA kernels behind co_dw_taps (same contract; called only after cpu.c found the ISA). */
void co_dw_taps_avx512(CO_DW_TAPS_ARGS);
void co_dw_taps_avx2(CO_DW_TAPS_ARGS);

#endif /* CO_CONV_DW_H */
