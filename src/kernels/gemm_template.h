/*
 * gemm_template.h — the body of the x86 single-precision kernels, written once and included by
 * each ISA file (gemm_avx512.c, gemm_avx2.c) after it has defined, for its vector width:
 *
 *   GT_NAME(x)           the name of the kernel set's function x (co_gemm_avx512##x, ...)
 *   GT_VL                floats per vector (16, 8); panels are GT_NR = 2 GT_VL columns wide
 *   GT_MR                rows of the general register tile (8, 6)
 *   GT_DR                rows of A per group of small-M dot products (8, 4)
 *   GT_STRIP_ROWS        packed products of at most this many rows run as strips (2, 1)
 *   GT_ALIGN             alignment of a vector store (64, 32)
 *   GT_TILE_ROWS(X, nv)  X(1, nv) ... X(GT_MR, nv): the tile shapes to instantiate
 *   GT_DOT_ROWS(X, jb)   X(1, jb) ... X(GT_DR, jb)
 *   GT_TILE_TABLE(nv)    {tile_1_nv, ..., tile_GT_MR_nv}; GT_DOT_TABLE(jb) likewise for dots
 *   vf, vmask            the vector and lane-mask types
 *   lanes(n)             mask of lanes [0, n) (n clamped to [0, GT_VL])
 *   v_zero(), v_loadu(p), v_maskload(p, m), v_storeu(p, v), v_maskstore(p, m, v),
 *   v_store(p, v) (aligned), v_bcast(p) (*p in every lane), v_fma(a, b, c) (a b + c, one
 *   rounding), v_hsum(v)
 *
 * Every element of C is one chain of FMAs along k (general and packed paths, strips included:
 * from C or 0, k in order, in 256-deep blocks for the general path; small-M dots: GT_VL lane
 * sums, then v_hsum), so the result of an element depends only on K and the kernel set, never on
 * M, N or where a tile starts (what gemm.c's thread split relies on). No allocation anywhere.
 */
#ifndef GT_NAME
#error "gemm_template.h is included by gemm_avx512.c / gemm_avx2.c only"
#endif

#include <string.h>

#include "kernels/gemm_impl.h"

#define GT_NR (2 * GT_VL)
enum { KC = 256 };
#define INLINE static inline __attribute__((always_inline))

/* Named accumulators (not arrays: gcc keeps arrays of vectors on the stack); rows past mr and
 * vectors past nv are dead code once mr and nv are constants (each shape is its own function). */
#define ROWS8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

/* ---- general tile: C[0..mr)[0..nc) (+)= A[0..mr)[0..kc) B[0..kc)[0..nc), nc <= GT_NR ----
 * nv: 1 (one masked vector), 2 (two, the second masked), TILE_FULL (two full vectors: no masks on
 * B; on AVX2 the masks would not fit the 16 registers). */
enum { TILE_FULL = 3, TILE_FULL_PREFETCH = 4 };
/* TILE_FULL_PREFETCH (the pre-packed weights, streamed from L3 or memory once per call): two
 * full vectors and a prefetch of the panel row PREFETCH_ROWS ahead (2 KiB on AVX-512), which
 * the 8-row products need to keep reading at the cache's rate (bench_gemm --small, docs/kernels.md).
 * A prefetch past the end of the buffer is harmless: prefetches never fault. */
enum { PREFETCH_ROWS = 16, CACHE_LINE_FLOATS = 16 };
#define T_DECL(i) vf c##i##0 = v_zero(), c##i##1 = v_zero();
#define T_LOAD(i)                                                                                                    \
    if (mr > i) {                                                                                                    \
        c##i##0 = v_maskload(C + i * ldc, m0);                                                                       \
        if (nv >= 2) c##i##1 = v_maskload(C + i * ldc + GT_VL, m1);                                                  \
    }
#define T_FMA(i)                                                                                                     \
    if (mr > i) {                                                                                                    \
        const vf a = v_bcast(A + i * lda + k);                                                                       \
        c##i##0 = v_fma(a, b0, c##i##0);                                                                             \
        if (nv >= 2) c##i##1 = v_fma(a, b1, c##i##1);                                                                \
    }
#define T_STORE(i)                                                                                                   \
    if (mr > i) {                                                                                                    \
        v_maskstore(C + i * ldc, m0, c##i##0);                                                                       \
        if (nv >= 2) v_maskstore(C + i * ldc + GT_VL, m1, c##i##1);                                                  \
    }
INLINE void tile(const int mr, const int nv, int64_t kc, const float *A, int64_t lda, const float *B, int64_t ldb,
                 float *C, int64_t ldc, int load_c, vmask m0, vmask m1)
{
    ROWS8(T_DECL)
    if (load_c) {
        ROWS8(T_LOAD)
    }
    if (nv == TILE_FULL_PREFETCH) {
        for (int64_t k = 0; k < kc; k++) {
            const float *ahead = B + (k + PREFETCH_ROWS) * ldb;
            _mm_prefetch((const char *)ahead, _MM_HINT_T0);
            if (GT_NR > CACHE_LINE_FLOATS) _mm_prefetch((const char *)(ahead + CACHE_LINE_FLOATS), _MM_HINT_T0);
            const vf b0 = v_loadu(B + k * ldb), b1 = v_loadu(B + k * ldb + GT_VL);
            ROWS8(T_FMA)
        }
    } else if (nv == TILE_FULL) {
        for (int64_t k = 0; k < kc; k++) {
            const vf b0 = v_loadu(B + k * ldb), b1 = v_loadu(B + k * ldb + GT_VL);
            ROWS8(T_FMA)
        }
    } else {
        for (int64_t k = 0; k < kc; k++) {
            const vf b0 = v_maskload(B + k * ldb, m0);
            const vf b1 = nv == 2 ? v_maskload(B + k * ldb + GT_VL, m1) : v_zero();
            ROWS8(T_FMA)
        }
    }
    ROWS8(T_STORE)
}

typedef void (*tile_fn)(int64_t kc, const float *A, int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc,
                        int load_c, vmask m0, vmask m1);
#define TILE(mr, nv)                                                                                                 \
    static void tile_##mr##_##nv(int64_t kc, const float *A, int64_t lda, const float *B, int64_t ldb, float *C,    \
                                 int64_t ldc, int load_c, vmask m0, vmask m1)                                        \
    {                                                                                                                \
        tile(mr, nv, kc, A, lda, B, ldb, C, ldc, load_c, m0, m1);                                                    \
    }
GT_TILE_ROWS(TILE, 1) GT_TILE_ROWS(TILE, 2) GT_TILE_ROWS(TILE, 3) GT_TILE_ROWS(TILE, 4)
static const tile_fn k_tiles[4][GT_MR] = {GT_TILE_TABLE(1), GT_TILE_TABLE(2), GT_TILE_TABLE(3), GT_TILE_TABLE(4)};

/* Rows of A per block so that a block (rows x K) stays in L2 while the panels of B pass by. */
static int64_t row_block(int64_t K)
{
    int64_t mc = ((int64_t)1 << 17) / K; /* 512 KiB of A */
    mc = mc / GT_MR * GT_MR;
    return mc < GT_MR ? GT_MR : mc;
}

/* The tiles of rows [i0, i1) against one panel (kc x GT_NR, row stride ldb), nc of its columns;
 * pf: the panel is pre-packed weights (prefetch them), not a block packed by this call. */
static void panel_rows(int64_t i0, int64_t i1, int64_t nc, int64_t kc, const float *A, int64_t lda, const float *B,
                       int64_t ldb, float *C, int64_t ldc, int load_c, int pf)
{
    const vmask m0 = lanes(nc), m1 = lanes(nc - GT_VL);
    const int nv = nc == GT_NR ? (pf ? TILE_FULL_PREFETCH : TILE_FULL) : nc > GT_VL ? 2 : 1;
    for (int64_t i = i0; i < i1; i += GT_MR) {
        const int mr = (int)(i1 - i < GT_MR ? i1 - i : GT_MR);
        k_tiles[nv - 1][mr - 1](kc, A + i * lda, lda, B, ldb, C + i * ldc, ldc, load_c, m0, m1);
    }
}

/* ---- small M, B stored N x K: C[i][j] (+)= dot(A row i, B row j), jb (1 or 3) rows of B at a
 * time; C's columns are ldcj apart (0 and ldc swap rows and columns for matrix x vector) ---- */
#define D_DECL(i) vf d##i##0 = v_zero(), d##i##1 = v_zero(), d##i##2 = v_zero();
#define D_FMA(i)                                                                                                     \
    if (mr > i) {                                                                                                    \
        const vf a = LOAD(A + i * lda + k);                                                                          \
        d##i##0 = v_fma(a, b0, d##i##0);                                                                             \
        if (jb == 3) {                                                                                               \
            d##i##1 = v_fma(a, b1, d##i##1);                                                                         \
            d##i##2 = v_fma(a, b2, d##i##2);                                                                         \
        }                                                                                                            \
    }
#define D_OUT1(i, j)                                                                                                 \
    do {                                                                                                             \
        const float s = v_hsum(d##i##j);                                                                             \
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
        const vf b0 = LOAD(B + k);                                                                                   \
        const vf b1 = jb == 3 ? LOAD(B + ldb + k) : v_zero();                                                        \
        const vf b2 = jb == 3 ? LOAD(B + 2 * ldb + k) : v_zero();                                                    \
        ROWS8(D_FMA)                                                                                                 \
    } while (0)
INLINE void dots(const int mr, const int jb, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                 float *C, int64_t ldc, int64_t ldcj, int load_c)
{
    ROWS8(D_DECL)
    int64_t k = 0;
#define LOAD(p) v_loadu(p)
    for (; k + GT_VL <= K; k += GT_VL) D_STEP;
#undef LOAD
    if (k < K) {
        const vmask m = lanes(K - k);
#define LOAD(p) v_maskload(p, m)
        D_STEP;
#undef LOAD
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
GT_DOT_ROWS(DOTS, 1) GT_DOT_ROWS(DOTS, 3)
static const dots_fn k_dots[2][GT_DR] = {GT_DOT_TABLE(1), GT_DOT_TABLE(3)};

/* M <= CO_GEMM_DOT_M_MAX: rows in groups of at most GT_DR (B is read once per group). */
static void small_m(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                    float *C, int64_t ldc, int64_t ldcj, int load_c)
{
    for (int64_t i = 0; i < M; i += GT_DR) {
        const int mr = (int)(M - i < GT_DR ? M - i : GT_DR);
        int64_t j = 0;
        for (; j + 3 <= N; j += 3)
            k_dots[1][mr - 1](K, A + i * lda, lda, B + j * ldb, ldb, C + i * ldc + j * ldcj, ldc, ldcj, load_c);
        for (; j < N; j++)
            k_dots[0][mr - 1](K, A + i * lda, lda, B + j * ldb, ldb, C + i * ldc + j * ldcj, ldc, ldcj, load_c);
    }
}

/* ---- packing B per call ---- */
/* One kc x GT_NR panel of op(B) at (k0, j0), nc <= GT_NR columns (the rest zero), into bp. */
static void pack_panel(int trans_b, const float *B, int64_t ldb, int64_t k0, int64_t kc, int64_t j0, int64_t nc,
                       float *bp)
{
    if (!trans_b) {
        const vmask m0 = lanes(nc), m1 = lanes(nc - GT_VL);
        for (int64_t k = 0; k < kc; k++) {
            const float *b = B + (k0 + k) * ldb + j0;
            v_store(bp + k * GT_NR, v_maskload(b, m0));
            v_store(bp + k * GT_NR + GT_VL, v_maskload(b + GT_VL, m1));
        }
        return;
    }
    for (int64_t c = 0; c < GT_NR; c++) {
        if (c >= nc) {
            for (int64_t k = 0; k < kc; k++) bp[k * GT_NR + c] = 0.0f;
            continue;
        }
        const float *b = B + (j0 + c) * ldb + k0;
        for (int64_t k = 0; k < kc; k++) bp[k * GT_NR + c] = b[k];
    }
}

/* kc rows x nb columns of op(B) at (k0, j0) as panels of GT_NR columns (kc x GT_NR each, zero
 * beyond nb). */
static void pack_block(int trans_b, const float *B, int64_t ldb, int64_t k0, int64_t kc, int64_t j0, int64_t nb,
                       float *bp)
{
    if (!trans_b && nb % GT_NR == 0) { /* row by row across the panels: long runs of each row of B */
        for (int64_t k = 0; k < kc; k++) {
            const float *b = B + (k0 + k) * ldb + j0;
            for (int64_t j = 0; j < nb; j += GT_NR)
                memcpy(bp + (j / GT_NR) * kc * GT_NR + k * GT_NR, b + j, GT_NR * sizeof(float));
        }
        return;
    }
    for (int64_t j = 0; j < nb; j += GT_NR)
        pack_panel(trans_b, B, ldb, k0, kc, j0 + j, nb - j < GT_NR ? nb - j : GT_NR, bp + (j / GT_NR) * kc * GT_NR);
}

void GT_NAME()(int trans_b, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
               float beta, float *C, int64_t ldc)
{
    const int load_c = beta != 0.0f;
    if (trans_b && M <= CO_GEMM_DOT_M_MAX) {
        small_m(M, N, K, A, lda, B, ldb, C, ldc, 1, load_c);
        return;
    }
    if (!trans_b && N == 1 && ldb == 1) { /* matrix x vector: C's column = A b, as dots of b with A's rows */
        small_m(1, M, K, B, 1, A, lda, C, 0, ldc, load_c);
        return;
    }
    if (!trans_b && M <= GT_MR) { /* one pass over B: read it in place */
        for (int64_t j = 0; j < N; j += GT_NR) {
            const int64_t nc = N - j < GT_NR ? N - j : GT_NR;
            panel_rows(0, M, nc, K, A, lda, B + j, ldb, C + j, ldc, load_c, 0);
        }
        return;
    }
    /* B is packed per call in blocks of kc rows x ncb columns (ncb: as many panels as fit the
     * stack buffer, so that small-K products read long runs of each row of B), row by row; then
     * every row tile of A runs over each panel of the block. */
    float bp[KC * GT_NR] __attribute__((aligned(GT_ALIGN)));
    const int64_t kcmax = K < KC ? K : KC;
    int64_t ncb = (int64_t)KC * GT_NR / kcmax / GT_NR * GT_NR;
    if (ncb > 16 * GT_NR) ncb = 16 * GT_NR;
    const int64_t mc = row_block(K);
    for (int64_t i0 = 0; i0 < M; i0 += mc) {
        const int64_t i1 = i0 + mc < M ? i0 + mc : M;
        for (int64_t jb = 0; jb < N; jb += ncb) {
            const int64_t nb = N - jb < ncb ? N - jb : ncb;
            for (int64_t k0 = 0; k0 < K; k0 += KC) {
                const int64_t kc = K - k0 < KC ? K - k0 : KC;
                pack_block(trans_b, B, ldb, k0, kc, jb, nb, bp);
                for (int64_t j = 0; j < nb; j += GT_NR) {
                    const int64_t nc = nb - j < GT_NR ? nb - j : GT_NR;
                    panel_rows(i0, i1, nc, kc, A + k0, lda, bp + (j / GT_NR) * kc * GT_NR, GT_NR, C + jb + j, ldc,
                               load_c || k0 > 0, 0);
                }
            }
        }
    }
}

/* ---- packed, one or two rows (batch-1/2 Linear steps): STRIP_PANELS full panels at once, so
 * that each row has 2 STRIP_PANELS independent FMA chains and the weights arrive through
 * STRIP_PANELS streams (one panel alone leaves a core well short of its read bandwidth) ---- */
enum { STRIP_PANELS = 4 };
#define PANELS4(X) X(0) X(1) X(2) X(3)
#define S_DECL(p) vf r0##p##0 = v_zero(), r0##p##1 = v_zero(), r1##p##0 = v_zero(), r1##p##1 = v_zero();
#define S_LOAD(p)                                                                                                    \
    r0##p##0 = v_loadu(C + p * GT_NR);                                                                               \
    r0##p##1 = v_loadu(C + p * GT_NR + GT_VL);                                                                       \
    if (mr > 1) {                                                                                                    \
        r1##p##0 = v_loadu(C + ldc + p * GT_NR);                                                                     \
        r1##p##1 = v_loadu(C + ldc + p * GT_NR + GT_VL);                                                             \
    }
#define S_FMA(p)                                                                                                     \
    {                                                                                                                \
        const float *b = B + p * ps + k * GT_NR;                                                                     \
        const vf b0 = v_loadu(b), b1 = v_loadu(b + GT_VL);                                                           \
        r0##p##0 = v_fma(a0, b0, r0##p##0);                                                                          \
        r0##p##1 = v_fma(a0, b1, r0##p##1);                                                                          \
        if (mr > 1) {                                                                                                \
            r1##p##0 = v_fma(a1, b0, r1##p##0);                                                                      \
            r1##p##1 = v_fma(a1, b1, r1##p##1);                                                                      \
        }                                                                                                            \
    }
#define S_STORE(p)                                                                                                   \
    v_storeu(C + p * GT_NR, r0##p##0);                                                                               \
    v_storeu(C + p * GT_NR + GT_VL, r0##p##1);                                                                       \
    if (mr > 1) {                                                                                                    \
        v_storeu(C + ldc + p * GT_NR, r1##p##0);                                                                     \
        v_storeu(C + ldc + p * GT_NR + GT_VL, r1##p##1);                                                             \
    }
/* C[0..mr)[0..STRIP_PANELS GT_NR) (+)= A[0..mr)[0..K) times the panels at B, ps floats apart. */
INLINE void strip(const int mr, int64_t K, const float *A, int64_t lda, const float *B, int64_t ps, float *C,
                  int64_t ldc, int load_c)
{
    PANELS4(S_DECL)
    if (load_c) {
        PANELS4(S_LOAD)
    }
    for (int64_t k = 0; k < K; k++) {
        const vf a0 = v_bcast(A + k), a1 = mr > 1 ? v_bcast(A + lda + k) : v_zero();
        PANELS4(S_FMA)
    }
    PANELS4(S_STORE)
}
static void strip_1(int64_t K, const float *A, int64_t lda, const float *B, int64_t ps, float *C, int64_t ldc,
                    int load_c)
{
    strip(1, K, A, lda, B, ps, C, ldc, load_c);
}
#if GT_STRIP_ROWS > 1
static void strip_2(int64_t K, const float *A, int64_t lda, const float *B, int64_t ps, float *C, int64_t ldc,
                    int load_c)
{
    strip(2, K, A, lda, B, ps, C, ldc, load_c);
}
#endif

void GT_NAME(_packed)(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *Bp, float beta,
                      float *C, int64_t ldc)
{
    const int load_c = beta != 0.0f;
    int64_t j0 = 0; /* the columns the strips leave */
    if (M <= GT_STRIP_ROWS) {
        const int64_t step = STRIP_PANELS * GT_NR, panel = K * GT_NR;
        for (; j0 + step <= N; j0 += step) {
            const float *B = Bp + (j0 / GT_NR) * panel;
#if GT_STRIP_ROWS > 1
            if (M == 2) {
                strip_2(K, A, lda, B, panel, C + j0, ldc, load_c);
                continue;
            }
#endif
            strip_1(K, A, lda, B, panel, C + j0, ldc, load_c);
        }
    }
    const int64_t mc = row_block(K);
    for (int64_t i0 = 0; i0 < M; i0 += mc) {
        const int64_t i1 = i0 + mc < M ? i0 + mc : M;
        for (int64_t j = j0; j < N; j += GT_NR) {
            const int64_t nc = N - j < GT_NR ? N - j : GT_NR;
            panel_rows(i0, i1, nc, K, A, lda, Bp + (j / GT_NR) * K * GT_NR, GT_NR, C + j, ldc, load_c, 1);
        }
    }
}
