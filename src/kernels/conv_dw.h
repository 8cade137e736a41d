/*
 * conv_dw.h — the inner loop of depthwise (and other one-input-channel-per-group) convolutions:
 * output rows as weighted sums of shifted input rows, every tap accumulated in registers so
 * that each row is read and written once. Convolutions (src/layers/conv.c) lay their input out
 * so that every tap is a contiguous run (padded planes, strided columns split into phases), which
 * is what lets one kernel serve every stride, dilation and padding mode.
 *
 * One call serves several outputs over the same taps (n_out: a step's temporal taps, each
 * feeding another window of the ring, all read the same input plane): every input vector is
 * loaded once for all of them, and their accumulators are independent FMA chains.
 *
 * The kernel set (AVX-512 F, AVX2 + FMA, portable C) is picked at run time by kernels/cpu.c, as
 * for the products of gemm.h. Nothing here allocates.
 */
#ifndef CO_CONV_DW_H
#define CO_CONV_DW_H

#include <stdint.h>

/* For each output o < n_out, row r < rows and i < n:
 *   dst[o][r * dst_ld + i] = (accumulate ? that : init[o])
 *                            + sum over t < n_taps of w[o * w_ld + t] * src[t][r * src_ld + i].
 * The taps are added in order t = 0, 1, ... (each lane sums in the same order on every ISA, up
 * to the fused multiply-add of the wide kernels), so an output's value does not depend on which
 * other outputs share the call. n_taps may be 0; init is read only when !accumulate. No dst may
 * overlap a src or another dst. */
#define CO_DW_TAPS_ARGS                                                                                              \
    int64_t rows, int64_t n, int n_taps, const float *const *src, int64_t src_ld, int n_out, const float *w,         \
        int64_t w_ld, const float *init, int accumulate, float *const *dst, int64_t dst_ld
void co_dw_taps(CO_DW_TAPS_ARGS);

/* The per-ISA kernels behind co_dw_taps (same contract; called only after cpu.c found the ISA). */
void co_dw_taps_avx512(CO_DW_TAPS_ARGS);
void co_dw_taps_avx2(CO_DW_TAPS_ARGS);

/* The channel-vector form, for planes too small for row vectors (a 5 x 5 row is a third of one
 * AVX-512 vector): pixels of C channels each, channels contiguous. For output pixel i < n_px and
 * channel c < C:
 *   dst[i * C + c] = (0 + sum over t < n_taps of w[t * C + c] * src[t][i * src_step[t] + c])
 *                    + (bias ? bias[c] : 0).
 * The taps are added in order t = 0, 1, ... onto 0 and the bias last, the order of a ring window
 * of co_dw_taps outputs (cleared, one tap a frame, the bias added as it is emitted), so the two
 * forms give the same bits. src_step[t] may be 0 (a tap reading one padding pixel). dst must not
 * overlap a src. */
#define CO_DW_PIXELS_ARGS                                                                                            \
    int64_t n_px, int64_t C, int n_taps, const float *const *src, const int64_t *src_step, const float *w,          \
        const float *bias, float *dst
void co_dw_pixels(CO_DW_PIXELS_ARGS);
void co_dw_pixels_avx512(CO_DW_PIXELS_ARGS);
void co_dw_pixels_avx2(CO_DW_PIXELS_ARGS);

/* Transpose: dst[j * dst_ld + i] = src[i * src_ld + j] for i < rows, j < cols (planes to pixels
 * and back for the channel-vector form). src_ld * rows must fit in an int32. No overlap. */
#define CO_DW_TRANSPOSE_ARGS int64_t rows, int64_t cols, const float *src, int64_t src_ld, float *dst, int64_t dst_ld
void co_dw_transpose(CO_DW_TRANSPOSE_ARGS);
void co_dw_transpose_avx512(CO_DW_TRANSPOSE_ARGS);
void co_dw_transpose_avx2(CO_DW_TRANSPOSE_ARGS);

#endif /* CO_CONV_DW_H */
