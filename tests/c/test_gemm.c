/*
 * test_gemm.c — the matrix products (kernels/gemm.h) against a double-precision loop, for every
 * kernel set this CPU runs (co_gemm_force_isa: AVX-512, AVX2, portable; or the one OpenBLAS
 * build): co_gemm_nn, co_gemm_nt, and co_gemm_packed on B packed from both layouts (trans 0 and 1).
 * Shapes: row, column and K tails of every tile and panel width (1..13 rows; 1, 5, 16, 31..33,
 * 64, 127..129, 200 columns; K 1, 7, 16, 17, 256, 257, 600), the small-M paths (M <= 8: dots
 * of nt, the 1- and 2-row strips of packed, N = 1 matrix x vector) at the sizes of batch-1 and
 * batch-8 Linears, and K = 0. Every call: beta 0 (C prefilled with NaN, which must not be read)
 * and beta 1 (adds to C), leading dimensions larger than the rows, and the columns of C past N
 * and the rows past M left as they were. Then the small-M packed products split over a pool of
 * 3 threads against one thread, bit for bit (gemm.c's split assumes a kernel's sum for an element
 * does not depend on where its block starts). Linked against the static library.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kernels/cpu.h"
#include "kernels/gemm.h"
#include "kernels/threadpool.h"

/* Extra columns of every leading dimension, and of C (which must stay untouched). */
enum { LD_PAD = 3, C_PAD = 5, C_ROWS_PAD = 2 };
/* A float sum of K products differs from the exact one by at most about K eps sum|a b| (in order)
 * and less in trees; the bound below is tighter than that worst case, as errors of random signs
 * grow like sqrt(K), yet a kernel that drops or repeats a single product is far outside it. */
#define ERR_SCALE 4.0
#define SENTINEL 1234.5f

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "test_gemm: out of memory\n");
        exit(99);
    }
    return p;
}

/* Values in [-1, 1) from a linear congruential generator (the same for every run). */
static void fill(float *x, int64_t n, uint32_t seed)
{
    uint32_t s = seed * 2654435761u + 1u;
    for (int64_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)((double)(s >> 8) / (double)(1u << 23) - 1.0);
    }
}

typedef enum kind { K_NN, K_NT, K_PACKED_NN, K_PACKED_NT, KINDS } kind;
static const char *const k_kind_name[KINDS] = {"nn", "nt", "packed(B K x N)", "packed(B N x K)"};

/* B stored K x N (ldb) for nn and packed-from-nn, N x K for nt and packed-from-nt. */
static int b_is_nt(kind k) { return k == K_NT || k == K_PACKED_NT; }

static float b_at(kind k, const float *B, int64_t ldb, int64_t kk, int64_t j)
{
    return b_is_nt(k) ? B[j * ldb + kk] : B[kk * ldb + j];
}

typedef struct problem {
    int64_t M, N, K, lda, ldb, ldc;
    const float *A, *B;
    const void *packed;
} problem;

static void run(kind k, const problem *p, float beta, float *C)
{
    switch (k) {
    case K_NN: co_gemm_nn(p->M, p->N, p->K, p->A, p->lda, p->B, p->ldb, beta, C, p->ldc); break;
    case K_NT: co_gemm_nt(p->M, p->N, p->K, p->A, p->lda, p->B, p->ldb, beta, C, p->ldc); break;
    default: co_gemm_packed(p->M, p->N, p->K, p->A, p->lda, p->packed, beta, C, p->ldc); break;
    }
}

/* One product, beta 0 and 1, against the double loop; returns the worst error / bound seen. */
static double check_one(const char *isa, kind k, int64_t M, int64_t N, int64_t K)
{
    problem p = {M, N, K, K + LD_PAD, (b_is_nt(k) ? K : N) + LD_PAD, N + C_PAD, NULL, NULL, NULL};
    const int64_t b_rows = b_is_nt(k) ? N : K, c_rows = M + C_ROWS_PAD;
    float *A = xmalloc((size_t)(M * p.lda) * sizeof(float)), *B = xmalloc((size_t)(b_rows * p.ldb) * sizeof(float));
    float *C = xmalloc((size_t)(c_rows * p.ldc) * sizeof(float)), *C0 = xmalloc((size_t)(c_rows * p.ldc) * sizeof(float));
    fill(A, M * p.lda, (uint32_t)(M * 7 + K));
    fill(B, b_rows * p.ldb, (uint32_t)(N * 13 + K));
    fill(C0, c_rows * p.ldc, (uint32_t)(M + N));
    p.A = A;
    p.B = B;
    void *packed = NULL;
    if (k == K_PACKED_NN || k == K_PACKED_NT) {
        packed = xmalloc(co_gemm_pack_size(K, N));
        co_gemm_pack_b(b_is_nt(k), K, N, B, p.ldb, packed);
        p.packed = packed;
    }
    /* the exact product and the sum of |a b| per element, once for both betas */
    double *exact = xmalloc((size_t)(M * N) * sizeof(double)), *magnitude = xmalloc((size_t)(M * N) * sizeof(double));
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double sum = 0, mag = 0;
            for (int64_t kk = 0; kk < K; kk++) {
                const double prod = (double)A[i * p.lda + kk] * (double)b_at(k, B, p.ldb, kk, j);
                sum += prod;
                mag += fabs(prod);
            }
            exact[i * N + j] = sum;
            magnitude[i * N + j] = mag;
        }
    double worst = 0;
    for (int beta = 0; beta < 2; beta++) {
        for (int64_t i = 0; i < c_rows; i++)
            for (int64_t j = 0; j < p.ldc; j++) {
                const int inside = i < M && j < N;
                C[i * p.ldc + j] = inside ? (beta ? C0[i * p.ldc + j] : NAN) : SENTINEL;
            }
        run(k, &p, (float)beta, C);
        int bad = 0, touched = 0;
        for (int64_t i = 0; i < c_rows; i++)
            for (int64_t j = 0; j < p.ldc; j++) {
                const float got = C[i * p.ldc + j];
                if (i >= M || j >= N) {
                    touched += got != SENTINEL;
                    continue;
                }
                const double c0 = beta ? (double)C0[i * p.ldc + j] : 0.0, want = c0 + exact[i * N + j];
                const double bound =
                    ERR_SCALE * FLT_EPSILON * (sqrt((double)K + 1.0) * magnitude[i * N + j] + fabs(c0)) + FLT_MIN;
                const double err = fabs((double)got - want);
                if (!(err <= bound)) { /* NaN too */
                    if (!bad)
                        tu_fail_at(__FILE__, __LINE__,
                                   "%s %s M=%lld N=%lld K=%lld beta=%d: C[%lld][%lld] = %.9g, exact %.9g", isa,
                                   k_kind_name[k], (long long)M, (long long)N, (long long)K, beta, (long long)i,
                                   (long long)j, got, want);
                    bad++;
                } else if (err / bound > worst) worst = err / bound;
            }
        TU_CHECK(touched == 0, "%s %s M=%lld N=%lld K=%lld beta=%d: %d element(s) of C outside M x N written", isa,
                 k_kind_name[k], (long long)M, (long long)N, (long long)K, beta, touched);
    }
    free(packed);
    free(exact);
    free(magnitude);
    free(A);
    free(B);
    free(C);
    free(C0);
    return worst;
}

static const int64_t k_rows[] = {1, 2, 3, 5, 6, 7, 8, 9, 13};
static const int64_t k_cols[] = {1, 5, 16, 31, 32, 33, 64, 127, 128, 129, 200};
static const int64_t k_depths[] = {1, 7, 16, 17, 256, 257, 600};
/* batch-1 / batch-8 Linears and the strips' column tails (the packed strips take 128 or 64 columns) */
static const int64_t k_linear[][3] = {{1, 1024, 1024}, {8, 1024, 1024}, {1, 3072, 1024}, {8, 512, 3072},
                                      {2, 1024, 640},  {2, 200, 300},   {1, 4100, 64},   {2, 4097, 33},
                                      {4, 520, 1024},  {200, 1, 300},   {64, 256, 576}};

static void check_isa(const char *isa)
{
    double worst = 0;
    for (int k = 0; k < KINDS; k++) {
        for (size_t a = 0; a < sizeof k_rows / sizeof k_rows[0]; a++)
            for (size_t b = 0; b < sizeof k_cols / sizeof k_cols[0]; b++)
                for (size_t c = 0; c < sizeof k_depths / sizeof k_depths[0]; c++) {
                    const double w = check_one(isa, (kind)k, k_rows[a], k_cols[b], k_depths[c]);
                    if (w > worst) worst = w;
                }
        for (size_t s = 0; s < sizeof k_linear / sizeof k_linear[0]; s++) {
            const double w = check_one(isa, (kind)k, k_linear[s][0], k_linear[s][1], k_linear[s][2]);
            if (w > worst) worst = w;
        }
    }
    printf("test_gemm: %s: worst error %.3f of the bound\n", isa, worst);
}

/* K = 0: C = beta C (beta 0: zeros, NaN not read), nothing past N. */
static void check_empty_k(const char *isa)
{
    enum { M = 3, N = 40, LDC = N + C_PAD };
    float C[M * LDC], A[1] = {0}, B[1] = {0};
    char packed[256];
    TU_CHECK(co_gemm_pack_size(0, N) <= sizeof packed, "pack_size(0, %d) = %zu", N, co_gemm_pack_size(0, N));
    co_gemm_pack_b(1, 0, N, B, 1, packed);
    for (int k = 0; k < KINDS; k++)
        for (int beta = 0; beta < 2; beta++) {
            for (int i = 0; i < M * LDC; i++) C[i] = i % LDC >= N ? SENTINEL : beta ? 2.0f : NAN;
            problem p = {M, N, 0, 1, 1, LDC, A, B, packed};
            run((kind)k, &p, (float)beta, C);
            int bad = 0;
            for (int i = 0; i < M * LDC; i++) bad += C[i] != (i % LDC >= N ? SENTINEL : beta ? 2.0f : 0.0f);
            TU_CHECK(bad == 0, "%s %s K=0 beta=%d: %d element(s) wrong", isa, k_kind_name[k], beta, bad);
        }
}

/* The small-M packed products (strips, the 8-row tile) split over 3 threads = 1 thread, bit for bit. */
static void check_split(const char *isa)
{
    static const int64_t shapes[][3] = {{1, 4096, 1024}, {2, 3000, 300}, {8, 4096, 256}, {1, 1000, 700}, {3, 2048, 512}};
    void *mem = aligned_alloc(64, (co_pool_bytes(3) + 63) / 64 * 64);
    co_pool *pool = mem ? co_pool_init(mem, 3) : NULL;
    TU_CHECK(pool != NULL, "co_pool_init(3) failed");
    if (!pool) {
        free(mem);
        return;
    }
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *A = xmalloc((size_t)(M * K) * sizeof(float)), *W = xmalloc((size_t)(N * K) * sizeof(float));
        float *C[2] = {xmalloc((size_t)(M * N) * sizeof(float)), xmalloc((size_t)(M * N) * sizeof(float))};
        void *packed = xmalloc(co_gemm_pack_size(K, N));
        fill(A, M * K, 21);
        fill(W, N * K, 22);
        co_gemm_pack_b(1, K, N, W, K, packed);
        for (int beta = 0; beta < 2; beta++) {
            for (int t = 0; t < 2; t++) {
                fill(C[t], M * N, 23);
                co_pool *outer = co_pool_enter(t ? pool : NULL);
                co_gemm_packed(M, N, K, A, K, packed, (float)beta, C[t], N);
                co_pool_leave(outer);
            }
            TU_CHECK(memcmp(C[0], C[1], (size_t)(M * N) * sizeof(float)) == 0,
                     "%s packed M=%lld N=%lld K=%lld beta=%d: 3 threads differ from 1", isa, (long long)M,
                     (long long)N, (long long)K, beta);
        }
        free(packed);
        free(A);
        free(W);
        free(C[0]);
        free(C[1]);
    }
    co_pool_destroy(pool);
    free(mem);
}

int main(void)
{
    printf("test_gemm: backend %s\n", co_gemm_backend());
    for (int isa = (int)co_cpu_isa(); isa >= 0; isa--) {
        if (!co_gemm_force_isa(isa)) continue;
        const char *name = co_gemm_backend(); /* "openblas" in that build, whatever isa is forced */
        check_isa(name);
        check_empty_k(name);
        check_split(name);
        if (!strcmp(name, "openblas")) break;
    }
    co_gemm_force_isa(-1);
    return tu_finish("test_gemm");
}
