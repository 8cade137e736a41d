/*
 * weights.h — products with a layer's weight matrix, which the layer keeps both as it was
 * loaded and packed for co_gemm_packed (kernels/gemm.h); the choice between the two is made
 * here once for every layer (Linear, the attentions' projections).
 */
#ifndef CO_WEIGHTS_H
#define CO_WEIGHTS_H

#include <stdint.h>

#include "kernels/gemm.h"

/* Rows up to which a product reads the weights in place: the kernels' small-M path dots along
 * k and reads each weight once. Measured in whole steps (tools/bench_ab.c, both orders), where
 * the weights stream from L3 beside the model's other weights: CoOadTR-b1 ~15 % faster at batch
 * 1 and ~10 % at batch 8 than with the packed tiles. (bench_gemm's isolated calls, whose weights
 * stay hot, favour the packed tiles at M = 8: re-measure when the kernels change.) More rows go
 * through the packed panels. */
enum { CO_WEIGHTS_SMALL_ROWS = 8 };

/* y (rows x n, ldy) = x (rows x k, ldx) W^T for W (n x k, ldw), `packed` being
 * co_gemm_pack_b(1, k, n, W, ldw, ...). */
static inline void co_times_weights(int64_t rows, int64_t n, int64_t k, const float *x, int64_t ldx, const float *W,
                                    int64_t ldw, const void *packed, float *y, int64_t ldy)
{
    if (rows <= CO_WEIGHTS_SMALL_ROWS) co_gemm_nt(rows, n, k, x, ldx, W, ldw, 0.0f, y, ldy);
    else co_gemm_packed(rows, n, k, x, ldx, packed, 0.0f, y, ldy);
}

#endif /* CO_WEIGHTS_H */
