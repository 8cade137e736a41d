/*
 * gemm.c — dense products. OpenBLAS when built with it; else a blocked loop whose inner
 * loop runs over contiguous columns of B and C so compilers vectorise it.
 */
#include "kernels/gemm.h"

#include <string.h>

#ifdef CO_HAVE_CBLAS
#include <cblas.h>
#endif

const char *co_gemm_backend(void)
{
#ifdef CO_HAVE_CBLAS
    return "openblas";
#else
    return "portable";
#endif
}

/* C = beta * C for beta 0 or 1: what a product with K = 0 leaves, and where the loops start. */
static void scale_or_zero(int64_t M, int64_t N, float beta, float *C, int64_t ldc)
{
    if (beta == 1.0f) return;
    for (int64_t i = 0; i < M; i++) memset(C + i * ldc, 0, (size_t)N * sizeof(float));
}

void co_gemm_nn(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                float beta, float *C, int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
#ifdef CO_HAVE_CBLAS
    if (K <= 0) {
        scale_or_zero(M, N, beta, C, ldc);
        return;
    }
    if (N == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)M, (int)K, 1.0f, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f, A, (int)lda, B, (int)ldb,
                    beta, C, (int)ldc);
#else
    scale_or_zero(M, N, beta, C, ldc);
    enum { KB = 256, NB = 512 };
    for (int64_t n0 = 0; n0 < N; n0 += NB) {
        int64_t n1 = n0 + NB < N ? n0 + NB : N;
        for (int64_t k0 = 0; k0 < K; k0 += KB) {
            int64_t k1 = k0 + KB < K ? k0 + KB : K;
            for (int64_t i = 0; i < M; i++) {
                float *c = C + i * ldc;
                const float *a = A + i * lda;
                for (int64_t k = k0; k < k1; k++) {
                    const float av = a[k];
                    const float *b = B + k * ldb;
                    for (int64_t j = n0; j < n1; j++) c[j] += av * b[j];
                }
            }
        }
    }
#endif
}

void co_gemm_nt(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                float beta, float *C, int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
#ifdef CO_HAVE_CBLAS
    if (K <= 0) {
        scale_or_zero(M, N, beta, C, ldc);
        return;
    }
    if (M == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)N, (int)K, 1.0f, B, (int)ldb, A, 1, beta, C, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, A, (int)lda, B, (int)ldb,
                    beta, C, (int)ldc);
#else
    scale_or_zero(M, N, beta, C, ldc);
    for (int64_t i = 0; i < M; i++) {
        const float *a = A + i * lda;
        for (int64_t j = 0; j < N; j++) {
            const float *b = B + j * ldb;
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++) acc += a[k] * b[k];
            C[i * ldc + j] += acc;
        }
    }
#endif
}
