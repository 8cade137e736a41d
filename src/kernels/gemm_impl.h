/*
 * gemm_impl.h — internal interface between gemm.c (dispatch, portable code, packing) and the
 * per-ISA kernel files gemm_avx512.c / gemm_avx2.c (compiled with their own -m flags and
 * called only after cpu.c has found the ISA; both are gemm_template.h for their vector width).
 * Not installed; not for the layers.
 *
 * Conventions, all row-major, beta 0 (C is not read) or 1, M, N, K > 0:
 *   co_gemm_<isa>(trans_b, ...):   C = beta C + A op(B); trans_b 0: B is K x N (ldb),
 *                                  1: B is N x K (ldb).
 *   co_gemm_<isa>_packed(...):     C = beta C + A Bp with Bp packed by co_gemm_pack_b for
 *                                  panels of co_gemm_<isa>_NR columns.
 */
#ifndef CO_GEMM_IMPL_H
#define CO_GEMM_IMPL_H

#include <stdint.h>

#define CO_GEMM_AVX512_NR 32
#define CO_GEMM_AVX2_NR 16
#define CO_GEMM_PORTABLE_NR 16
/* co_gemm_<isa>(1, ...) with M up to this many rows takes dot products along K (each weight read
 * once per call), more rows the register tile; gemm.c does not split such products by rows. */
#define CO_GEMM_DOT_M_MAX 8

void co_gemm_avx512(int trans_b, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                    int64_t ldb, float beta, float *C, int64_t ldc);
void co_gemm_avx512_packed(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *Bp, float beta,
                           float *C, int64_t ldc);
void co_gemm_avx2(int trans_b, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                  int64_t ldb, float beta, float *C, int64_t ldc);
void co_gemm_avx2_packed(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *Bp, float beta,
                         float *C, int64_t ldc);

#endif /* CO_GEMM_IMPL_H */
