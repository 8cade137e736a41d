/*
 * gemm.h — the dense matrix products every heavy op reduces to.
 * Row-major. With CO_HAVE_CBLAS they call cblas_sgemm (OpenBLAS); otherwise a portable,
 * cache-blocked C loop. Neither allocates.
 */
#ifndef CO_GEMM_H
#define CO_GEMM_H

#include <stdint.h>

/* C (M x N, row stride ldc) = beta * C + A (M x K, lda) * B (K x N, ldb).  beta is 0 or 1. */
void co_gemm_nn(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                float beta, float *C, int64_t ldc);

/* C (M x N, ldc) = beta * C + A (M x K, lda) * B^T, B stored N x K (ldb). */
void co_gemm_nt(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                float beta, float *C, int64_t ldc);

/* Name of the backend in use ("openblas", "portable"). */
const char *co_gemm_backend(void);

#endif /* CO_GEMM_H */
