/*
 * winograd.h — the transforms of Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray 2016):
 * a 4x4 output tile of a 3x3 correlation is A^T [(G g G^T) .* (B^T d B)] A over a 6x6 input tile
 * d, so 36 multiplies per channel pair replace 144. A convolution (src/layers/conv.c) turns the
 * element-wise products, summed over input channels, into 36 matrix products (one per element
 * of the 6x6 tile); this file holds the three transforms around them.
 *
 * The input and output transforms work on `n` lanes at once (channels of one tile, stored
 * contiguously: lane l of element k at x[k * ld + l]), so the compiler vectorises them along the
 * lanes. The kernel set (AVX-512 F, AVX2, portable) is picked at run time by kernels/cpu.c, as
 * for gemm.h; every set computes the same sums in the same order (the wide builds get
 * -ffp-contract=off: no fusing into FMA), so results do not depend on it.
 * Nothing here allocates.
 */
#ifndef CO_WINOGRAD_H
#define CO_WINOGRAD_H

#include <stdint.h>

enum {
    CO_WINO_OUT = 4,                          /* output tile side (m) */
    CO_WINO_KERNEL = 3,                       /* kernel side (r) */
    CO_WINO_IN = CO_WINO_OUT + CO_WINO_KERNEL - 1, /* input tile side (alpha = m + r - 1) */
    CO_WINO_ELEMS = CO_WINO_IN * CO_WINO_IN,  /* products per tile: 36 */
    CO_WINO_PIXELS = CO_WINO_OUT * CO_WINO_OUT, /* outputs per tile: 16 */
    CO_WINO_LANES = 64                        /* lanes a transform call takes at most */
};

/* Weight transform G g G^T of one 3x3 kernel g (row-major, 9 floats): u[e * u_stride] for the
 * 36 elements e (row-major over the 6x6 tile). Computed in double, rounded once. */
void co_wino_weight(const float *g, float *u, int64_t u_stride);

/* Input transform B^T d B of n <= CO_WINO_LANES lanes: d[k * d_ld + l] holds element k of the 6x6
 * input tile (row-major) of lane l; v[e * v_ld + l] gets element e. */
#define CO_WINO_INPUT_ARGS int64_t n, const float *d, int64_t d_ld, float *v, int64_t v_ld
void co_wino_input(CO_WINO_INPUT_ARGS);

/* Output transform A^T m A of n <= CO_WINO_LANES lanes: m[e * m_ld + l] holds element e of lane l;
 * y[p * y_ld + l] gets pixel p of the 4x4 output tile (row-major). */
#define CO_WINO_OUTPUT_ARGS int64_t n, const float *m, int64_t m_ld, float *y, int64_t y_ld
void co_wino_output(CO_WINO_OUTPUT_ARGS);

/* Output transform of whole tiles added into frames: for lanes l < n (channels) and pixels
 * (py, px) of the 4x4 tile, dst[k][l * chan_stride + py * row_stride + px] += pixel (py, px) of
 * lane l, for each of the n_dst destinations k. Same sums as co_wino_output then adding. */
#define CO_WINO_OUTPUT_ADD_ARGS                                                                                  \
    int64_t n, const float *m, int64_t m_ld, float *const *dst, int n_dst, int64_t chan_stride, int64_t row_stride
void co_wino_output_add(CO_WINO_OUTPUT_ADD_ARGS);

/* The per-ISA variants behind co_wino_input / co_wino_output (same contract; called only after
 * cpu.c found the ISA): the same source (winograd_impl.h) built with other target flags. */
void co_wino_input_avx512(CO_WINO_INPUT_ARGS);
void co_wino_output_avx512(CO_WINO_OUTPUT_ARGS);
void co_wino_input_avx2(CO_WINO_INPUT_ARGS);
void co_wino_output_avx2(CO_WINO_OUTPUT_ARGS);
void co_wino_output_add_avx512(CO_WINO_OUTPUT_ADD_ARGS);
void co_wino_output_add_avx2(CO_WINO_OUTPUT_ADD_ARGS);

#endif /* CO_WINOGRAD_H */
