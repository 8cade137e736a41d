/*
 * winograd_impl.h — the lane loops of the F(4x4, 3x3) input and output transforms, included by
 * winograd.c (portable) and winograd_avx2.c / winograd_avx512.c (the same loops built with wider
 * target flags). Define WINO_INPUT and WINO_OUTPUT to the function names before including.
 *
 * B^T (6x6) and A^T (4x6) are applied as their sparse rows, first along the columns of the tile
 * (into t), then along its rows; each line is one loop over the lanes, in vectors of WINO_VL
 * lanes (the wide builds define WINO_VL and the WINO_* operations as intrinsics before including:
 * the compiler does not vectorise these loops by itself, not knowing that the rows never overlap).
 */
#include <stdint.h>

#include "kernels/winograd.h"

/* The lane type: WINO_V holds WINO_VL lanes (1 for the portable build) with the operations below;
 * the scalar tail uses the same expressions on floats, so every lane sums alike. */
#ifndef WINO_VL
#define WINO_VL 1
typedef float wino_v;
#define WINO_LOAD(p) (*(p))
#define WINO_STORE(p, v) (*(p) = (v))
#define WINO_ADD(a, b) ((a) + (b))
#define WINO_SUB(a, b) ((a) - (b))
#define WINO_MUL(a, b) ((a) * (b))
#define WINO_SET1(x) (x)
#endif

#define WINO_BT6(T, LD, ST, ADD, SUB, MUL, K)                                                                  \
    do {                                                                                                      \
        const T x0 = LD(x + l), a = LD(x + xs + l), b = LD(x + 2 * xs + l), c = LD(x + 3 * xs + l);          \
        const T d = LD(x + 4 * xs + l), x5 = LD(x + 5 * xs + l);                                              \
        ST(y + l, ADD(SUB(MUL(K(4.0f), x0), MUL(K(5.0f), b)), d));                                            \
        ST(y + ys + l, SUB(ADD(d, c), MUL(K(4.0f), ADD(a, b))));                                              \
        ST(y + 2 * ys + l, ADD(SUB(d, c), MUL(K(4.0f), SUB(a, b))));                                          \
        ST(y + 3 * ys + l, ADD(SUB(d, b), MUL(K(2.0f), SUB(c, a))));                                          \
        ST(y + 4 * ys + l, SUB(SUB(d, b), MUL(K(2.0f), SUB(c, a))));                                          \
        ST(y + 5 * ys + l, ADD(SUB(MUL(K(4.0f), a), MUL(K(5.0f), c)), x5));                                   \
    } while (0)

/* r0..r3 = A^T of the 6 values x[k * xs + l] (declared here, of type T) */
#define WINO_AT6_VALUES(T, LD, ADD, SUB, MUL, K, r0, r1, r2, r3)                                                \
    const T x0 = LD(x + l), x1 = LD(x + xs + l), x2 = LD(x + 2 * xs + l), x3 = LD(x + 3 * xs + l);           \
    const T x4 = LD(x + 4 * xs + l), x5 = LD(x + 5 * xs + l);                                                 \
    const T s12 = ADD(x1, x2), d12 = SUB(x1, x2), s34 = ADD(x3, x4), d34 = SUB(x3, x4);                       \
    const T r0 = ADD(ADD(x0, s12), s34), r1 = ADD(d12, MUL(K(2.0f), d34));                                    \
    const T r2 = ADD(s12, MUL(K(4.0f), s34)), r3 = ADD(ADD(d12, MUL(K(8.0f), d34)), x5)

#define WINO_AT6(T, LD, ST, ADD, SUB, MUL, K)                                                                  \
    do {                                                                                                      \
        WINO_AT6_VALUES(T, LD, ADD, SUB, MUL, K, r0, r1, r2, r3);                                             \
        ST(y + l, r0);                                                                                        \
        ST(y + ys + l, r1);                                                                                   \
        ST(y + 2 * ys + l, r2);                                                                               \
        ST(y + 3 * ys + l, r3);                                                                               \
    } while (0)

/* One output row of a whole tile for one lane: o[0..3] += r0..r3 (the portable form of
 * WINO_ADD_ROWS, and the scalar tail of the wide ones). */
#define WINO_F_ADD_ROW(o, r0, r1, r2, r3)                                                                      \
    do {                                                                                                      \
        (o)[0] += (r0);                                                                                       \
        (o)[1] += (r1);                                                                                       \
        (o)[2] += (r2);                                                                                       \
        (o)[3] += (r3);                                                                                       \
    } while (0)
#ifndef WINO_ADD_ROWS
/* WINO_VL lanes: lane l's row at o + l * cs */
#define WINO_ADD_ROWS(o, cs, r0, r1, r2, r3) WINO_F_ADD_ROW(o, r0, r1, r2, r3)
#endif

#define WINO_F_LD(p) (*(p))
#define WINO_F_ST(p, v) (*(p) = (v))
#define WINO_F_ADD(a, b) ((a) + (b))
#define WINO_F_SUB(a, b) ((a) - (b))
#define WINO_F_MUL(a, b) ((a) * (b))
#define WINO_F_K(x) (x)

/* y[i * ys] = (B^T x)[i], x[k * xs]: lanes l < n at offset l */
static void wino_bt6(int64_t n, const float *x, int64_t xs, float *y, int64_t ys)
{
    int64_t l = 0;
    for (; l + WINO_VL <= n; l += WINO_VL) WINO_BT6(wino_v, WINO_LOAD, WINO_STORE, WINO_ADD, WINO_SUB, WINO_MUL, WINO_SET1);
    for (; l < n; l++) WINO_BT6(float, WINO_F_LD, WINO_F_ST, WINO_F_ADD, WINO_F_SUB, WINO_F_MUL, WINO_F_K);
}

/* y[i * ys] = (A^T x)[i], 6 -> 4 */
static void wino_at6(int64_t n, const float *x, int64_t xs, float *y, int64_t ys)
{
    int64_t l = 0;
    for (; l + WINO_VL <= n; l += WINO_VL) WINO_AT6(wino_v, WINO_LOAD, WINO_STORE, WINO_ADD, WINO_SUB, WINO_MUL, WINO_SET1);
    for (; l < n; l++) WINO_AT6(float, WINO_F_LD, WINO_F_ST, WINO_F_ADD, WINO_F_SUB, WINO_F_MUL, WINO_F_K);
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

void WINO_OUTPUT_ADD(CO_WINO_OUTPUT_ADD_ARGS)
{
    float t[CO_WINO_OUT * CO_WINO_IN * CO_WINO_LANES]; /* t[(i * 6 + col) * LANES + l] = (A^T m)[i][col] */
    for (int col = 0; col < CO_WINO_IN; col++)
        wino_at6(n, m + col * m_ld, CO_WINO_IN * m_ld, t + col * CO_WINO_LANES, CO_WINO_IN * CO_WINO_LANES);
    const int64_t xs = CO_WINO_LANES; /* the 6 values of row i, lane l: t[(i * 6 + k) * LANES + l] */
    for (int i = 0; i < CO_WINO_OUT; i++) {
        const float *x = t + i * CO_WINO_IN * CO_WINO_LANES;
        int64_t l = 0;
        for (; l + WINO_VL <= n; l += WINO_VL) {
            WINO_AT6_VALUES(wino_v, WINO_LOAD, WINO_ADD, WINO_SUB, WINO_MUL, WINO_SET1, r0, r1, r2, r3);
            for (int k = 0; k < n_dst; k++) WINO_ADD_ROWS(dst[k] + l * chan_stride + i * row_stride, chan_stride, r0, r1, r2, r3);
        }
        for (; l < n; l++) {
            WINO_AT6_VALUES(float, WINO_F_LD, WINO_F_ADD, WINO_F_SUB, WINO_F_MUL, WINO_F_K, r0, r1, r2, r3);
            for (int k = 0; k < n_dst; k++) WINO_F_ADD_ROW(dst[k] + l * chan_stride + i * row_stride, r0, r1, r2, r3);
        }
    }
}
