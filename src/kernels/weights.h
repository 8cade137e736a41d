/*
 * weights.h — products with a layer's weight matrix, which the layer keeps both as it was
 * loaded and packed for co_gemm_packed (kernels/gemm.h); the choice between the two is made
 * here once for every layer (Linear, the attentions' projections).
 */
#ifndef CO_WEIGHTS_H
#define CO_WEIGHTS_H

#include <stdint.h>

#include "kernels/gemm.h"

/* Rows up to which a product reads the weights in place (the kernels' small-M path dots along k
 * and reads each weight once); more rows go through the packed panels. Measured in whole steps
 * (`continual bench MODEL --batch 8`, the two builds interleaved, 3 rounds, 2026-12-02): since
 * the packed path prefetches its panels and runs 1-/2-row strips (docs/kernels.md, "Small and
 * skinny products"), the panels win from 2 rows on — batch 8: CoOadTR-b1 5.0-5.3 ms against
 * 5.6-5.9 (2 threads 2.5-2.8 against 3.1-3.8), Retroactive MHA 7.9-10.1 against 9.8-10.1; batch
 * 1 is the same either way (3.0 ms). One row stays in place: the dots path reads each weight once
 * without the panels' layout constraints. */
enum { CO_WEIGHTS_SMALL_ROWS = 1 };

/* y (rows x n, ldy) = x (rows x k, ldx) W^T for W (n x k, ldw), `packed` being
 * co_gemm_pack_b(1, k, n, W, ldw, ...). */
static inline void co_times_weights(int64_t rows, int64_t n, int64_t k, const float *x, int64_t ldx, const float *W,
                                    int64_t ldw, const void *packed, float *y, int64_t ldy)
{
    if (rows <= CO_WEIGHTS_SMALL_ROWS) co_gemm_nt(rows, n, k, x, ldx, W, ldw, 0.0f, y, ldy);
    else co_gemm_packed(rows, n, k, x, ldx, packed, 0.0f, y, ldy);
}

#endif /* CO_WEIGHTS_H */
