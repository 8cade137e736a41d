/*
 * gemm.h — the dense matrix products every heavy op reduces to. Row-major throughout.
 *
 * Backends (CMake -DCO_BLAS=..., docs/kernels.md):
 *   native (default)  own kernels, the set picked at run time for the CPU (cpu.c: AVX-512,
 *                     AVX2+FMA, else portable C); no library, no environment variable;
 *   portable          the C loops only (any compiler, any CPU);
 *   openblas          cblas_sgemm/sgemv from OpenBLAS (as before; kept for comparison).
 * No function here allocates, on any backend, and all are safe to call from many threads.
 * Results may differ from a naive loop by summation order only.
 */
#ifndef CO_GEMM_H
#define CO_GEMM_H

#include <stddef.h>
#include <stdint.h>

/* C (M x N, row stride ldc) = beta * C + A (M x K, lda) * B (K x N, ldb).  beta is 0 or 1;
 * with beta 0, C is not read (it may hold anything, NaN included). */
void co_gemm_nn(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                float beta, float *C, int64_t ldc);

/* C (M x N, ldc) = beta * C + A (M x K, lda) * B^T, B stored N x K (ldb). */
void co_gemm_nt(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                float beta, float *C, int64_t ldc);

/* ---- pre-packed B (weights): pack once at load, multiply every step ----
 * co_gemm_pack_size(K, N) bytes hold op(B) (K x N) in the layout the selected kernels read
 * (panels of 32 or 16 columns, K rows each, zero-padded; a small header records the shape and
 * the kernel set). co_gemm_pack_b fills such a buffer (any alignment; it aligns inside) from
 * B (trans 0: B is K x N, ldb; trans 1: B is N x K, ldb — a Linear's weight W (out x in) with
 * trans 1 gives the product X W^T). co_gemm_packed then computes
 *     C (M x N, ldc) = beta * C + A (M x K, lda) * op(B)
 * with the same results as co_gemm_nn/nt up to summation order. M, N, K must be those packed
 * with (N and K as packed; any M). The buffer is read-only after packing: share it freely
 * between threads. A buffer is only valid in the process that packed it. */
size_t co_gemm_pack_size(int64_t K, int64_t N);
void co_gemm_pack_b(int trans, int64_t K, int64_t N, const float *B, int64_t ldb, void *dst);
void co_gemm_packed(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const void *packed, float beta,
                    float *C, int64_t ldc);

/* Name of the backend and kernel set in use: "avx512", "avx2", "portable" (native or portable
 * backend), "openblas". */
const char *co_gemm_backend(void);

/* For tests and tools/bench_gemm: restricts the native backend to kernel set `isa` (a co_isa of
 * kernels/cpu.h; -1 restores the detected one). Returns 0 and changes nothing if the CPU cannot
 * run it or the build has no such kernels. Not thread-safe against concurrent products; packed
 * buffers keep the kernel set they were packed for. */
int co_gemm_force_isa(int isa);

#endif /* CO_GEMM_H */
