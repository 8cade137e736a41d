/*
 * gemm_avx512.c — AVX-512 F single-precision products (built with -mavx512f -mfma; called only
 * when cpu.c found AVX-512 and OS support).
 *
 *   general:  8 x 32 register tile (16 zmm accumulators), A broadcast straight from its rows,
 *             B packed per call into a 256 x 32 panel on the stack (nn: row copies; nt:
 *             transposed), C loaded/stored once per 256-deep block; row blocks of A sized for L2.
 *   small M:  M <= 8 and B stored N x K (Linear/Conv1d/RNN steps at batch <= 8): dot products
 *             along K, 8 rows x 3 columns of B at a time, so every weight is read once and nothing
 *             is packed.
 *   packed:   weights packed once at load into 32-wide panels (co_gemm_pack_b): the 8 x 32 tile
 *             over the whole K, the panel streamed once per 8 rows of A.
 * No allocation anywhere.
 */
#include "kernels/gemm_impl.h"

#if defined(CO_GEMM_X86) && defined(__AVX512F__) && defined(__FMA__)
#include <immintrin.h>
#include <string.h>

enum { MR = 8, NR = CO_GEMM_AVX512_NR, KC = 256 };

#define INLINE static inline __attribute__((always_inline))

/* lanes [0, n) of 16 set (n clamped to [0, 16]) */
static inline __mmask16 lanes(int64_t n)
{
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

/* C[0..mr)[0..16 nv) (masked by m0, m1) = (load_c ? C : 0) + A[0..mr)[0..kc) * B[0..kc)[..].
 * Named accumulators (not arrays: gcc keeps arrays of vectors on the stack), rows past mr and the
 * second vector when nv == 1 are dead code once mr and nv are constants. */
#define ROWS8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define T_DECL(i) __m512 c##i##0 = _mm512_setzero_ps(), c##i##1 = _mm512_setzero_ps();
#define T_LOAD(i)                                                                                                    \
    if (mr > i) {                                                                                                    \
        c##i##0 = _mm512_maskz_loadu_ps(m0, C + i * ldc);                                                            \
        if (nv == 2) c##i##1 = _mm512_maskz_loadu_ps(m1, C + i * ldc + 16);                                          \
    }
#define T_FMA(i)                                                                                                     \
    if (mr > i) {                                                                                                    \
        const __m512 a = _mm512_set1_ps(A[i * lda + k]);                                                             \
        c##i##0 = _mm512_fmadd_ps(a, b0, c##i##0);                                                                   \
        if (nv == 2) c##i##1 = _mm512_fmadd_ps(a, b1, c##i##1);                                                      \
    }
#define T_STORE(i)                                                                                                   \
    if (mr > i) {                                                                                                    \
        _mm512_mask_storeu_ps(C + i * ldc, m0, c##i##0);                                                             \
        if (nv == 2) _mm512_mask_storeu_ps(C + i * ldc + 16, m1, c##i##1);                                           \
    }
INLINE void tile(const int mr, const int nv, int64_t kc, const float *A, int64_t lda, const float *B, int64_t ldb,
                 float *C, int64_t ldc, int load_c, __mmask16 m0, __mmask16 m1)
{
    ROWS8(T_DECL)
    if (load_c) {
        ROWS8(T_LOAD)
    }
    for (int64_t k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_maskz_loadu_ps(m0, B + k * ldb);
        const __m512 b1 = nv == 2 ? _mm512_maskz_loadu_ps(m1, B + k * ldb + 16) : _mm512_setzero_ps();
        ROWS8(T_FMA)
    }
    ROWS8(T_STORE)
}

typedef void (*tile_fn)(int64_t kc, const float *A, int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc,
                        int load_c, __mmask16 m0, __mmask16 m1);
#define TILE(mr, nv)                                                                                                 \
    static void tile_##mr##_##nv(int64_t kc, const float *A, int64_t lda, const float *B, int64_t ldb, float *C,    \
                                 int64_t ldc, int load_c, __mmask16 m0, __mmask16 m1)                                \
    {                                                                                                                \
        tile(mr, nv, kc, A, lda, B, ldb, C, ldc, load_c, m0, m1);                                                    \
    }
TILE(1, 1) TILE(2, 1) TILE(3, 1) TILE(4, 1) TILE(5, 1) TILE(6, 1) TILE(7, 1) TILE(8, 1)
TILE(1, 2) TILE(2, 2) TILE(3, 2) TILE(4, 2) TILE(5, 2) TILE(6, 2) TILE(7, 2) TILE(8, 2)
static const tile_fn k_tiles[2][MR] = {
    {tile_1_1, tile_2_1, tile_3_1, tile_4_1, tile_5_1, tile_6_1, tile_7_1, tile_8_1},
    {tile_1_2, tile_2_2, tile_3_2, tile_4_2, tile_5_2, tile_6_2, tile_7_2, tile_8_2},
};

/* Rows of A per block so that a block (rows x K) stays in L2 while the panels of B pass by. */
static int64_t row_block(int64_t K)
{
    int64_t mc = ((int64_t)1 << 17) / K; /* 512 KiB of A */
    mc = mc / MR * MR;
    return mc < MR ? MR : mc;
}

/* The tiles of rows [i0, i1) against one panel (kc x 32, row stride ldb) at columns [j0, j0 + nc). */
static void panel_rows(int64_t i0, int64_t i1, int64_t nc, int64_t kc, const float *A, int64_t lda, const float *B,
                       int64_t ldb, float *C, int64_t ldc, int load_c)
{
    const __mmask16 m0 = lanes(nc), m1 = lanes(nc - 16);
    const int nv = nc > 16 ? 2 : 1;
    for (int64_t i = i0; i < i1; i += MR) {
        const int mr = (int)(i1 - i < MR ? i1 - i : MR);
        k_tiles[nv - 1][mr - 1](kc, A + i * lda, lda, B, ldb, C + i * ldc, ldc, load_c, m0, m1);
    }
}

/* Small M, B stored N x K: C[i][j] (+)= dot(A row i, B row j), jb (1 or 3) rows of B at a time. */
#define D_DECL(i) __m512 d##i##0 = _mm512_setzero_ps(), d##i##1 = _mm512_setzero_ps(), d##i##2 = _mm512_setzero_ps();
#define D_FMA(i)                                                                                                     \
    if (mr > i) {                                                                                                    \
        const __m512 a = _mm512_maskz_loadu_ps(m, A + i * lda + k);                                                  \
        d##i##0 = _mm512_fmadd_ps(a, b0, d##i##0);                                                                   \
        if (jb == 3) {                                                                                               \
            d##i##1 = _mm512_fmadd_ps(a, b1, d##i##1);                                                               \
            d##i##2 = _mm512_fmadd_ps(a, b2, d##i##2);                                                               \
        }                                                                                                            \
    }
#define D_OUT1(i, j)                                                                                                 \
    do {                                                                                                             \
        const float s = _mm512_reduce_add_ps(d##i##j);                                                               \
        float *c = C + i * ldc + j * ldcj;                                                                           \
        *c = load_c ? *c + s : s;                                                                                    \
    } while (0);
#define D_OUT(i)                                                                                                     \
    if (mr > i) {                                                                                                    \
        D_OUT1(i, 0)                                                                                                 \
        if (jb == 3) {                                                                                               \
            D_OUT1(i, 1)                                                                                             \
            D_OUT1(i, 2)                                                                                             \
        }                                                                                                            \
    }
#define D_STEP                                                                                                       \
    do {                                                                                                             \
        const __m512 b0 = _mm512_maskz_loadu_ps(m, B + k);                                                          \
        const __m512 b1 = jb == 3 ? _mm512_maskz_loadu_ps(m, B + ldb + k) : _mm512_setzero_ps();                     \
        const __m512 b2 = jb == 3 ? _mm512_maskz_loadu_ps(m, B + 2 * ldb + k) : _mm512_setzero_ps();                 \
        ROWS8(D_FMA)                                                                                                 \
    } while (0)
INLINE void dots(const int mr, const int jb, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                 float *C, int64_t ldc, int64_t ldcj, int load_c)
{
    ROWS8(D_DECL)
    int64_t k = 0;
    {
        const __mmask16 m = 0xffff;
        for (; k + 16 <= K; k += 16) D_STEP;
    }
    if (k < K) {
        const __mmask16 m = lanes(K - k);
        D_STEP;
    }
    ROWS8(D_OUT)
}

typedef void (*dots_fn)(int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc,
                        int64_t ldcj, int load_c);
#define DOTS(mr, jb)                                                                                                 \
    static void dots_##mr##_##jb(int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb, float *C,     \
                                 int64_t ldc, int64_t ldcj, int load_c)                                              \
    {                                                                                                                \
        dots(mr, jb, K, A, lda, B, ldb, C, ldc, ldcj, load_c);                                                       \
    }
DOTS(1, 1) DOTS(2, 1) DOTS(3, 1) DOTS(4, 1) DOTS(5, 1) DOTS(6, 1) DOTS(7, 1) DOTS(8, 1)
DOTS(1, 3) DOTS(2, 3) DOTS(3, 3) DOTS(4, 3) DOTS(5, 3) DOTS(6, 3) DOTS(7, 3) DOTS(8, 3)
static const dots_fn k_dots[2][MR] = {
    {dots_1_1, dots_2_1, dots_3_1, dots_4_1, dots_5_1, dots_6_1, dots_7_1, dots_8_1},
    {dots_1_3, dots_2_3, dots_3_3, dots_4_3, dots_5_3, dots_6_3, dots_7_3, dots_8_3},
};

/* M <= 8: C (M x N, ldc; columns ldcj apart) (+)= A (M x K) B^T, B N x K (ldb). */
static void small_m(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                    float *C, int64_t ldc, int64_t ldcj, int load_c)
{
    const int mr = (int)M;
    int64_t j = 0;
    for (; j + 3 <= N; j += 3) k_dots[1][mr - 1](K, A, lda, B + j * ldb, ldb, C + j * ldcj, ldc, ldcj, load_c);
    for (; j < N; j++) k_dots[0][mr - 1](K, A, lda, B + j * ldb, ldb, C + j * ldcj, ldc, ldcj, load_c);
}

/* One kc x 32 panel of op(B) at (k0, j0), nc <= 32 columns (the rest zero), into bp (row stride 32). */
static void pack_panel(int trans_b, const float *B, int64_t ldb, int64_t k0, int64_t kc, int64_t j0, int64_t nc,
                       float *bp)
{
    if (!trans_b) {
        const __mmask16 m0 = lanes(nc), m1 = lanes(nc - 16);
        for (int64_t k = 0; k < kc; k++) {
            const float *b = B + (k0 + k) * ldb + j0;
            _mm512_store_ps(bp + k * NR, _mm512_maskz_loadu_ps(m0, b));
            _mm512_store_ps(bp + k * NR + 16, _mm512_maskz_loadu_ps(m1, b + 16));
        }
        return;
    }
    for (int64_t c = 0; c < NR; c++) {
        if (c >= nc) {
            for (int64_t k = 0; k < kc; k++) bp[k * NR + c] = 0.0f;
            continue;
        }
        const float *b = B + (j0 + c) * ldb + k0;
        for (int64_t k = 0; k < kc; k++) bp[k * NR + c] = b[k];
    }
}

/* kc rows x nb columns of op(B) at (k0, j0) as panels of NR columns (kc x NR each, zero beyond nb). */
static void pack_block(int trans_b, const float *B, int64_t ldb, int64_t k0, int64_t kc, int64_t j0, int64_t nb,
                       float *bp)
{
    if (!trans_b && nb % NR == 0) { /* row by row across the panels: long runs of each row of B */
        for (int64_t k = 0; k < kc; k++) {
            const float *b = B + (k0 + k) * ldb + j0;
            for (int64_t j = 0; j < nb; j += NR) memcpy(bp + (j / NR) * kc * NR + k * NR, b + j, NR * sizeof(float));
        }
        return;
    }
    for (int64_t j = 0; j < nb; j += NR)
        pack_panel(trans_b, B, ldb, k0, kc, j0 + j, nb - j < NR ? nb - j : NR, bp + (j / NR) * kc * NR);
}

void co_gemm_avx512(int trans_b, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                    int64_t ldb, float beta, float *C, int64_t ldc)
{
    const int load_c = beta != 0.0f;
    if (trans_b && M <= MR) {
        small_m(M, N, K, A, lda, B, ldb, C, ldc, 1, load_c);
        return;
    }
    if (!trans_b && N == 1 && ldb == 1) { /* matrix-vector: C column = A b, as dots of B^T with A's rows */
        for (int64_t i = 0; i < M; i += MR) {
            const int64_t m = M - i < MR ? M - i : MR;
            small_m(1, m, K, B, 1, A + i * lda, lda, C + i * ldc, 0, ldc, load_c);
        }
        return;
    }
    if (!trans_b && M <= MR) { /* one pass over B: read it in place */
        for (int64_t j = 0; j < N; j += NR) {
            const int64_t nc = N - j < NR ? N - j : NR;
            panel_rows(0, M, nc, K, A, lda, B + j, ldb, C + j, ldc, load_c);
        }
        return;
    }
    /* B is packed per call in blocks of kc rows x ncb columns (ncb: as many 32/16-wide panels as
     * fit the 32/16 KiB stack buffer, so that small-K products read long runs of each row of B),
     * row by row; then every row tile of A runs over each panel of the block. */
    float bp[KC * NR] __attribute__((aligned(64)));
    const int64_t kcmax = K < KC ? K : KC;
    int64_t ncb = (int64_t)KC * NR / kcmax / NR * NR;
    if (ncb > 16 * NR) ncb = 16 * NR;
    const int64_t mc = row_block(K);
    for (int64_t i0 = 0; i0 < M; i0 += mc) {
        const int64_t i1 = i0 + mc < M ? i0 + mc : M;
        for (int64_t jb = 0; jb < N; jb += ncb) {
            const int64_t nb = N - jb < ncb ? N - jb : ncb;
            for (int64_t k0 = 0; k0 < K; k0 += KC) {
                const int64_t kc = K - k0 < KC ? K - k0 : KC;
                pack_block(trans_b, B, ldb, k0, kc, jb, nb, bp);
                for (int64_t j = 0; j < nb; j += NR) {
                    const int64_t nc = nb - j < NR ? nb - j : NR;
                    panel_rows(i0, i1, nc, kc, A + k0, lda, bp + (j / NR) * kc * NR, NR, C + jb + j, ldc,
                               load_c || k0 > 0);
                }
            }
        }
    }
}

void co_gemm_avx512_packed(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *Bp, float beta,
                           float *C, int64_t ldc)
{
    const int load_c = beta != 0.0f;
    const int64_t mc = row_block(K);
    for (int64_t i0 = 0; i0 < M; i0 += mc) {
        const int64_t i1 = i0 + mc < M ? i0 + mc : M;
        for (int64_t j = 0; j < N; j += NR) {
            const int64_t nc = N - j < NR ? N - j : NR;
            panel_rows(i0, i1, nc, K, A, lda, Bp + (j / NR) * K * NR, NR, C + j, ldc, load_c);
        }
    }
}
#else
/* Not an x86-64 build with the native kernels: nothing here (gemm.c never calls it). */
typedef int co_gemm_avx512_unused;
#endif
