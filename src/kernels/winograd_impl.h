/*
 * winograd_impl.h — the lane loops of the F(4x4, 3x3) input and output transforms, included by
 * winograd.c (portable) and winograd_avx2.c / winograd_avx512.c (the same loops built with wider
 * target flags). Define WINO_INPUT and WINO_OUTPUT to the function names before including.
 *
 * B^T (6x6) and A^T (4x6) are applied as their sparse rows, first along the columns of the tile
 * (into t), then along its rows; each line is one loop over the lanes. The rows read and written
 * never overlap (restrict), which is what lets the compiler vectorise along the lanes.
 */
#include <stdint.h>

#include "kernels/winograd.h"

/* y[i * ys] = (B^T x)[i], x[k * xs]: lanes l < n at offset l */
static inline void wino_bt6(int64_t n, const float *restrict x, int64_t xs, float *restrict y, int64_t ys)
{
    const float *restrict x0 = x, *restrict x1 = x + xs, *restrict x2 = x + 2 * xs, *restrict x3 = x + 3 * xs,
                          *restrict x4 = x + 4 * xs, *restrict x5 = x + 5 * xs;
    float *restrict y0 = y, *restrict y1 = y + ys, *restrict y2 = y + 2 * ys, *restrict y3 = y + 3 * ys,
                    *restrict y4 = y + 4 * ys, *restrict y5 = y + 5 * ys;
    for (int64_t l = 0; l < n; l++) {
        const float a = x1[l], b = x2[l], c = x3[l], d = x4[l];
        y0[l] = 4.0f * x0[l] - 5.0f * b + d;
        y1[l] = (d + c) - 4.0f * (a + b);
        y2[l] = (d - c) + 4.0f * (a - b);
        y3[l] = (d - b) + 2.0f * (c - a);
        y4[l] = (d - b) - 2.0f * (c - a);
        y5[l] = 4.0f * a - 5.0f * c + x5[l];
    }
}

/* y[i * ys] = (A^T x)[i], 6 -> 4 */
static inline void wino_at6(int64_t n, const float *restrict x, int64_t xs, float *restrict y, int64_t ys)
{
    const float *restrict x0 = x, *restrict x1 = x + xs, *restrict x2 = x + 2 * xs, *restrict x3 = x + 3 * xs,
                          *restrict x4 = x + 4 * xs, *restrict x5 = x + 5 * xs;
    float *restrict y0 = y, *restrict y1 = y + ys, *restrict y2 = y + 2 * ys, *restrict y3 = y + 3 * ys;
    for (int64_t l = 0; l < n; l++) {
        const float s12 = x1[l] + x2[l], d12 = x1[l] - x2[l], s34 = x3[l] + x4[l], d34 = x3[l] - x4[l];
        y0[l] = x0[l] + s12 + s34;
        y1[l] = d12 + 2.0f * d34;
        y2[l] = s12 + 4.0f * s34;
        y3[l] = d12 + 8.0f * d34 + x5[l];
    }
}

void WINO_INPUT(CO_WINO_INPUT_ARGS)
{
    float t[CO_WINO_ELEMS * CO_WINO_LANES]; /* t[(i * 6 + col) * LANES + l] = (B^T d)[i][col] */
    for (int col = 0; col < CO_WINO_IN; col++)
        wino_bt6(n, d + col * d_ld, CO_WINO_IN * d_ld, t + col * CO_WINO_LANES, CO_WINO_IN * CO_WINO_LANES);
    for (int i = 0; i < CO_WINO_IN; i++)
        wino_bt6(n, t + i * CO_WINO_IN * CO_WINO_LANES, CO_WINO_LANES, v + i * CO_WINO_IN * v_ld, v_ld);
}

void WINO_OUTPUT(CO_WINO_OUTPUT_ARGS)
{
    float t[CO_WINO_OUT * CO_WINO_IN * CO_WINO_LANES]; /* t[(i * 6 + col) * LANES + l] = (A^T m)[i][col] */
    for (int col = 0; col < CO_WINO_IN; col++)
        wino_at6(n, m + col * m_ld, CO_WINO_IN * m_ld, t + col * CO_WINO_LANES, CO_WINO_IN * CO_WINO_LANES);
    for (int i = 0; i < CO_WINO_OUT; i++)
        wino_at6(n, t + i * CO_WINO_IN * CO_WINO_LANES, CO_WINO_LANES, y + i * CO_WINO_OUT * y_ld, y_ld);
}
