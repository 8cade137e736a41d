/*
 * gemm.c — dense products: the backend chosen at build time (gemm.h), and in the native backend
 * the kernel set chosen at run time (cpu.c). The portable loops run over contiguous columns of B
 * and C so any compiler vectorises them for its baseline target.
 */
#include "kernels/gemm.h"

#include <stdatomic.h>
#include <string.h>

#include "kernels/cpu.h"
#include "kernels/gemm_impl.h"

#ifdef CO_HAVE_CBLAS
#include <cblas.h>
#endif

/* ---- which kernel set ---- */
#if defined(CO_GEMM_X86)
static atomic_int g_forced = -1;
#endif

static co_isa active_isa(void)
{
#if defined(CO_GEMM_X86)
    const int f = atomic_load_explicit(&g_forced, memory_order_relaxed);
    return f >= 0 ? (co_isa)f : co_cpu_isa();
#else
    return CO_ISA_PORTABLE;
#endif
}

int co_gemm_force_isa(int isa)
{
#if defined(CO_GEMM_X86)
    if (isa < 0) {
        atomic_store_explicit(&g_forced, -1, memory_order_relaxed);
        return 1;
    }
    if (isa > (int)co_cpu_isa()) return 0;
    atomic_store_explicit(&g_forced, isa, memory_order_relaxed);
    return 1;
#else
    return isa <= 0;
#endif
}

const char *co_gemm_backend(void)
{
#ifdef CO_HAVE_CBLAS
    return "openblas";
#else
    return co_isa_name(active_isa());
#endif
}

/* C = beta * C for beta 0 or 1: what a product with K = 0 leaves, and where the loops start. */
static void scale_or_zero(int64_t M, int64_t N, float beta, float *C, int64_t ldc)
{
    if (beta == 1.0f) return;
    for (int64_t i = 0; i < M; i++) memset(C + i * ldc, 0, (size_t)N * sizeof(float));
}

/* ---- portable C (also the native backend's kernels on a CPU without AVX2) ---- */
#ifndef CO_HAVE_CBLAS
static void portable_nn(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                        float beta, float *C, int64_t ldc)
{
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
}

static void portable_nt(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                        float beta, float *C, int64_t ldc)
{
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
}

/* Packed panels of PNR columns: 4 rows x 16 columns of C in local accumulators. */
enum { PNR = CO_GEMM_PORTABLE_NR, PMR = 4 };
static void portable_packed(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *Bp,
                            float beta, float *C, int64_t ldc)
{
    for (int64_t j = 0; j < N; j += PNR) {
        const int64_t nc = N - j < PNR ? N - j : PNR;
        const float *panel = Bp + (j / PNR) * K * PNR;
        for (int64_t i0 = 0; i0 < M; i0 += PMR) {
            const int64_t mr = M - i0 < PMR ? M - i0 : PMR;
            float acc[PMR][PNR];
            memset(acc, 0, sizeof acc);
            for (int64_t k = 0; k < K; k++) {
                const float *b = panel + k * PNR;
                for (int64_t i = 0; i < mr; i++) {
                    const float av = A[(i0 + i) * lda + k];
                    for (int c = 0; c < PNR; c++) acc[i][c] += av * b[c];
                }
            }
            for (int64_t i = 0; i < mr; i++) {
                float *c = C + (i0 + i) * ldc + j;
                if (beta != 0.0f)
                    for (int64_t q = 0; q < nc; q++) c[q] += acc[i][q];
                else
                    for (int64_t q = 0; q < nc; q++) c[q] = acc[i][q];
            }
        }
    }
}

#endif /* !CO_HAVE_CBLAS */

/* ---- the two products ---- */
void co_gemm_nn(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                float beta, float *C, int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        scale_or_zero(M, N, beta, C, ldc);
        return;
    }
#ifdef CO_HAVE_CBLAS
    if (N == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)M, (int)K, 1.0f, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f, A, (int)lda, B, (int)ldb,
                    beta, C, (int)ldc);
#else
    switch (active_isa()) {
#if defined(CO_GEMM_X86)
    case CO_ISA_AVX512: co_gemm_avx512(0, M, N, K, A, lda, B, ldb, beta, C, ldc); return;
    case CO_ISA_AVX2: co_gemm_avx2(0, M, N, K, A, lda, B, ldb, beta, C, ldc); return;
#endif
    default: portable_nn(M, N, K, A, lda, B, ldb, beta, C, ldc); return;
    }
#endif
}

void co_gemm_nt(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                float beta, float *C, int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        scale_or_zero(M, N, beta, C, ldc);
        return;
    }
#ifdef CO_HAVE_CBLAS
    if (M == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)N, (int)K, 1.0f, B, (int)ldb, A, 1, beta, C, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, A, (int)lda, B, (int)ldb,
                    beta, C, (int)ldc);
#else
    switch (active_isa()) {
#if defined(CO_GEMM_X86)
    case CO_ISA_AVX512: co_gemm_avx512(1, M, N, K, A, lda, B, ldb, beta, C, ldc); return;
    case CO_ISA_AVX2: co_gemm_avx2(1, M, N, K, A, lda, B, ldb, beta, C, ldc); return;
#endif
    default: portable_nt(M, N, K, A, lda, B, ldb, beta, C, ldc); return;
    }
#endif
}

/* ---- pre-packed B ----
 * Layout: a 64-byte header, then (at the next 64-byte boundary of the address) ceil(N / nr)
 * panels, panel p holding op(B)[k][p nr + c] at k * nr + c, zero beyond N. With OpenBLAS the
 * "panel" is one: op(B) as a plain K x N matrix (nr = N). */
typedef struct pack_header {
    uint32_t magic;
    int32_t isa, nr, pad;
    int64_t K, N;
} pack_header;
enum { PACK_HDR = 64, PACK_ALIGN = 64 };
#define PACK_MAGIC 0x4b50474du /* "MGPK" */

static int pack_nr(int isa, int64_t N)
{
#ifdef CO_HAVE_CBLAS
    (void)isa;
    return (int)N;
#else
    return isa == CO_ISA_AVX512 ? CO_GEMM_AVX512_NR : isa == CO_ISA_AVX2 ? CO_GEMM_AVX2_NR : CO_GEMM_PORTABLE_NR;
#endif
}

static const float *pack_data(const void *buf)
{
    uintptr_t p = (uintptr_t)buf + PACK_HDR;
    p = (p + PACK_ALIGN - 1) & ~(uintptr_t)(PACK_ALIGN - 1);
    return (const float *)p;
}

size_t co_gemm_pack_size(int64_t K, int64_t N)
{
    if (K < 0) K = 0;
    if (N < 0) N = 0;
    const int64_t nr = 32; /* the widest panel: enough for every kernel set */
    const int64_t cols = (N + nr - 1) / nr * nr;
    return PACK_HDR + PACK_ALIGN + (size_t)(K * cols) * sizeof(float);
}

void co_gemm_pack_b(int trans, int64_t K, int64_t N, const float *B, int64_t ldb, void *dst)
{
    pack_header h = {PACK_MAGIC, (int32_t)active_isa(), 0, 0, K, N};
    h.nr = pack_nr(h.isa, N);
    memcpy(dst, &h, sizeof h);
    float *d = (float *)pack_data(dst);
    const int64_t nr = h.nr > 0 ? h.nr : 1;
    for (int64_t j0 = 0; j0 < N; j0 += nr) {
        float *panel = d + (j0 / nr) * K * nr;
        for (int64_t k = 0; k < K; k++)
            for (int64_t c = 0; c < nr; c++) {
                const int64_t j = j0 + c;
                panel[k * nr + c] = j >= N ? 0.0f : trans ? B[j * ldb + k] : B[k * ldb + j];
            }
    }
}

void co_gemm_packed(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const void *packed, float beta,
                    float *C, int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        scale_or_zero(M, N, beta, C, ldc);
        return;
    }
    pack_header h;
    memcpy(&h, packed, sizeof h);
    const float *Bp = pack_data(packed);
#ifdef CO_HAVE_CBLAS
    (void)h;
    if (M == 1)
        cblas_sgemv(CblasRowMajor, CblasTrans, (int)K, (int)N, 1.0f, Bp, (int)N, A, 1, beta, C, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f, A, (int)lda, Bp, (int)N,
                    beta, C, (int)ldc);
#else
    switch (h.isa) {
#if defined(CO_GEMM_X86)
    case CO_ISA_AVX512: co_gemm_avx512_packed(M, N, K, A, lda, Bp, beta, C, ldc); return;
    case CO_ISA_AVX2: co_gemm_avx2_packed(M, N, K, A, lda, Bp, beta, C, ldc); return;
#endif
    default: portable_packed(M, N, K, A, lda, Bp, beta, C, ldc); return;
    }
#endif
}
