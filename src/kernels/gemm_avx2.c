/*
 * gemm_avx2.c — AVX2 + FMA single-precision products (built with -mavx2 -mfma; called only when
 * cpu.c found AVX2, FMA and OS ymm support). The same three paths as gemm_avx512.c with a
 * 6 x 16 register tile (12 ymm accumulators), 16-wide B panels, and 4 x 3 dot products for
 * small M. No allocation anywhere.
 */
#include "kernels/gemm_impl.h"

#if defined(CO_GEMM_X86) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#include <string.h>

enum { MR = 6, NR = CO_GEMM_AVX2_NR, KC = 256, DR = 4 };

#define INLINE static inline __attribute__((always_inline))

static const int32_t k_mask_src[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
/* lanes [0, n) of 8 set (n clamped to [0, 8]) */
static inline __m256i lanes(int64_t n)
{
    const int64_t c = n < 0 ? 0 : n > 8 ? 8 : n;
    return _mm256_loadu_si256((const __m256i *)(k_mask_src + 8 - c));
}

/* Named accumulators (gcc keeps arrays of vectors on the stack); see gemm_avx512.c. */
#define ROWS6(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define ROWS4(X) X(0) X(1) X(2) X(3)
#define T_DECL(i) __m256 c##i##0 = _mm256_setzero_ps(), c##i##1 = _mm256_setzero_ps();
#define T_LOAD(i)                                                                                                    \
    if (mr > i) {                                                                                                    \
        c##i##0 = _mm256_maskload_ps(C + i * ldc, m0);                                                               \
        if (nv >= 2) c##i##1 = _mm256_maskload_ps(C + i * ldc + 8, m1);                                              \
    }
#define T_FMA(i)                                                                                                     \
    if (mr > i) {                                                                                                    \
        const __m256 a = _mm256_broadcast_ss(A + i * lda + k);                                                       \
        c##i##0 = _mm256_fmadd_ps(a, b0, c##i##0);                                                                   \
        if (nv >= 2) c##i##1 = _mm256_fmadd_ps(a, b1, c##i##1);                                                      \
    }
#define T_STORE(i)                                                                                                   \
    if (mr > i) {                                                                                                    \
        _mm256_maskstore_ps(C + i * ldc, m0, c##i##0);                                                               \
        if (nv >= 2) _mm256_maskstore_ps(C + i * ldc + 8, m1, c##i##1);                                              \
    }
INLINE void tile(const int mr, const int nv, int64_t kc, const float *A, int64_t lda, const float *B, int64_t ldb,
                 float *C, int64_t ldc, int load_c, __m256i m0, __m256i m1)
{
    ROWS6(T_DECL)
    if (load_c) {
        ROWS6(T_LOAD)
    }
    if (nv == 3) { /* two full vectors: no masks (they would not fit the 16 registers) */
        for (int64_t k = 0; k < kc; k++) {
            const __m256 b0 = _mm256_loadu_ps(B + k * ldb), b1 = _mm256_loadu_ps(B + k * ldb + 8);
            ROWS6(T_FMA)
        }
    } else {
        for (int64_t k = 0; k < kc; k++) {
            const __m256 b0 = _mm256_maskload_ps(B + k * ldb, m0);
            const __m256 b1 = nv == 2 ? _mm256_maskload_ps(B + k * ldb + 8, m1) : _mm256_setzero_ps();
            ROWS6(T_FMA)
        }
    }
    ROWS6(T_STORE)
}

typedef void (*tile_fn)(int64_t kc, const float *A, int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc,
                        int load_c, __m256i m0, __m256i m1);
#define TILE(mr, nv)                                                                                                 \
    static void tile_##mr##_##nv(int64_t kc, const float *A, int64_t lda, const float *B, int64_t ldb, float *C,    \
                                 int64_t ldc, int load_c, __m256i m0, __m256i m1)                                    \
    {                                                                                                                \
        tile(mr, nv, kc, A, lda, B, ldb, C, ldc, load_c, m0, m1);                                                    \
    }
TILE(1, 1) TILE(2, 1) TILE(3, 1) TILE(4, 1) TILE(5, 1) TILE(6, 1)
TILE(1, 2) TILE(2, 2) TILE(3, 2) TILE(4, 2) TILE(5, 2) TILE(6, 2)
TILE(1, 3) TILE(2, 3) TILE(3, 3) TILE(4, 3) TILE(5, 3) TILE(6, 3)
static const tile_fn k_tiles[3][MR] = {
    {tile_1_1, tile_2_1, tile_3_1, tile_4_1, tile_5_1, tile_6_1},
    {tile_1_2, tile_2_2, tile_3_2, tile_4_2, tile_5_2, tile_6_2},
    {tile_1_3, tile_2_3, tile_3_3, tile_4_3, tile_5_3, tile_6_3},
};

static int64_t row_block(int64_t K)
{
    int64_t mc = ((int64_t)1 << 17) / K; /* 512 KiB of A */
    mc = mc / MR * MR;
    return mc < MR ? MR : mc;
}

static void panel_rows(int64_t i0, int64_t i1, int64_t nc, int64_t kc, const float *A, int64_t lda, const float *B,
                       int64_t ldb, float *C, int64_t ldc, int load_c)
{
    const __m256i m0 = lanes(nc), m1 = lanes(nc - 8);
    const int nv = nc == 16 ? 3 : nc > 8 ? 2 : 1;
    for (int64_t i = i0; i < i1; i += MR) {
        const int mr = (int)(i1 - i < MR ? i1 - i : MR);
        k_tiles[nv - 1][mr - 1](kc, A + i * lda, lda, B, ldb, C + i * ldc, ldc, load_c, m0, m1);
    }
}

static inline float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#define D_DECL(i) __m256 d##i##0 = _mm256_setzero_ps(), d##i##1 = _mm256_setzero_ps(), d##i##2 = _mm256_setzero_ps();
#define D_FMA(i)                                                                                                     \
    if (mr > i) {                                                                                                    \
        const __m256 a = LOAD(A + i * lda + k);                                                                      \
        d##i##0 = _mm256_fmadd_ps(a, b0, d##i##0);                                                                   \
        if (jb == 3) {                                                                                               \
            d##i##1 = _mm256_fmadd_ps(a, b1, d##i##1);                                                               \
            d##i##2 = _mm256_fmadd_ps(a, b2, d##i##2);                                                               \
        }                                                                                                            \
    }
#define D_OUT1(i, j)                                                                                                 \
    do {                                                                                                             \
        const float s = hsum(d##i##j);                                                                               \
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
        const __m256 b0 = LOAD(B + k);                                                                               \
        const __m256 b1 = jb == 3 ? LOAD(B + ldb + k) : _mm256_setzero_ps();                                         \
        const __m256 b2 = jb == 3 ? LOAD(B + 2 * ldb + k) : _mm256_setzero_ps();                                     \
        ROWS4(D_FMA)                                                                                                 \
    } while (0)
INLINE void dots(const int mr, const int jb, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                 float *C, int64_t ldc, int64_t ldcj, int load_c)
{
    ROWS4(D_DECL)
    int64_t k = 0;
#define LOAD(p) _mm256_loadu_ps(p)
    for (; k + 8 <= K; k += 8) D_STEP;
#undef LOAD
    if (k < K) {
        const __m256i m = lanes(K - k);
#define LOAD(p) _mm256_maskload_ps(p, m)
        D_STEP;
#undef LOAD
    }
    ROWS4(D_OUT)
}

typedef void (*dots_fn)(int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc,
                        int64_t ldcj, int load_c);
#define DOTS(mr, jb)                                                                                                 \
    static void dots_##mr##_##jb(int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb, float *C,     \
                                 int64_t ldc, int64_t ldcj, int load_c)                                              \
    {                                                                                                                \
        dots(mr, jb, K, A, lda, B, ldb, C, ldc, ldcj, load_c);                                                       \
    }
DOTS(1, 1) DOTS(2, 1) DOTS(3, 1) DOTS(4, 1) DOTS(1, 3) DOTS(2, 3) DOTS(3, 3) DOTS(4, 3)
static const dots_fn k_dots[2][DR] = {
    {dots_1_1, dots_2_1, dots_3_1, dots_4_1},
    {dots_1_3, dots_2_3, dots_3_3, dots_4_3},
};

/* M <= 8: rows in groups of at most 4 (B is read once per group). */
static void small_m(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                    float *C, int64_t ldc, int64_t ldcj, int load_c)
{
    for (int64_t i = 0; i < M; i += DR) {
        const int mr = (int)(M - i < DR ? M - i : DR);
        int64_t j = 0;
        for (; j + 3 <= N; j += 3)
            k_dots[1][mr - 1](K, A + i * lda, lda, B + j * ldb, ldb, C + i * ldc + j * ldcj, ldc, ldcj, load_c);
        for (; j < N; j++)
            k_dots[0][mr - 1](K, A + i * lda, lda, B + j * ldb, ldb, C + i * ldc + j * ldcj, ldc, ldcj, load_c);
    }
}

static void pack_panel(int trans_b, const float *B, int64_t ldb, int64_t k0, int64_t kc, int64_t j0, int64_t nc,
                       float *bp)
{
    if (!trans_b) {
        const __m256i m0 = lanes(nc), m1 = lanes(nc - 8);
        for (int64_t k = 0; k < kc; k++) {
            const float *b = B + (k0 + k) * ldb + j0;
            _mm256_store_ps(bp + k * NR, _mm256_maskload_ps(b, m0));
            _mm256_store_ps(bp + k * NR + 8, _mm256_maskload_ps(b + 8, m1));
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

void co_gemm_avx2(int trans_b, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                  int64_t ldb, float beta, float *C, int64_t ldc)
{
    const int load_c = beta != 0.0f;
    if (trans_b && M <= 8) {
        small_m(M, N, K, A, lda, B, ldb, C, ldc, 1, load_c);
        return;
    }
    if (!trans_b && N == 1 && ldb == 1) {
        small_m(1, M, K, B, 1, A, lda, C, 0, ldc, load_c);
        return;
    }
    if (!trans_b && M <= MR) {
        for (int64_t j = 0; j < N; j += NR) {
            const int64_t nc = N - j < NR ? N - j : NR;
            panel_rows(0, M, nc, K, A, lda, B + j, ldb, C + j, ldc, load_c);
        }
        return;
    }
    /* B is packed per call in blocks of kc rows x ncb columns (ncb: as many 32/16-wide panels as
     * fit the 32/16 KiB stack buffer, so that small-K products read long runs of each row of B),
     * row by row; then every row tile of A runs over each panel of the block. */
    float bp[KC * NR] __attribute__((aligned(32)));
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

void co_gemm_avx2_packed(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *Bp, float beta,
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
typedef int co_gemm_avx2_unused;
#endif
