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
#include "kernels/threadpool.h"

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

/* nt: dot products of A's rows with B's rows, NT_COLS columns of C at a time: the NT_COLS sums
 * are independent (the adds of one long dot would wait on each other) and each a[k] is loaded
 * once for all of them. Each sum still runs k in order, as a single dot does. */
enum { NT_COLS = 4 };
static void portable_nt(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                        float beta, float *C, int64_t ldc)
{
    scale_or_zero(M, N, beta, C, ldc);
    for (int64_t i = 0; i < M; i++) {
        const float *a = A + i * lda;
        float *c = C + i * ldc;
        int64_t j = 0;
        for (; j + NT_COLS <= N; j += NT_COLS) {
            const float *b0 = B + j * ldb, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
            float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
            for (int64_t k = 0; k < K; k++) {
                const float av = a[k];
                s0 += av * b0[k];
                s1 += av * b1[k];
                s2 += av * b2[k];
                s3 += av * b3[k];
            }
            c[j] += s0;
            c[j + 1] += s1;
            c[j + 2] += s2;
            c[j + 3] += s3;
        }
        for (; j < N; j++) {
            const float *b = B + j * ldb;
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++) acc += a[k] * b[k];
            c[j] += acc;
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

/* ---- the two products, on the calling thread: C = beta C + A op(B), op(B) = B^T if trans_b ---- */
static void gemm_serial(int trans_b, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                        int64_t ldb, float beta, float *C, int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        scale_or_zero(M, N, beta, C, ldc);
        return;
    }
#ifdef CO_HAVE_CBLAS
    if (!trans_b && N == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)M, (int)K, 1.0f, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
    else if (trans_b && M == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)N, (int)K, 1.0f, B, (int)ldb, A, 1, beta, C, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K, 1.0f, A,
                    (int)lda, B, (int)ldb, beta, C, (int)ldc);
#else
    switch (active_isa()) {
#if defined(CO_GEMM_X86)
    case CO_ISA_AVX512: co_gemm_avx512(trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc); return;
    case CO_ISA_AVX2: co_gemm_avx2(trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc); return;
#endif
    default: (trans_b ? portable_nt : portable_nn)(M, N, K, A, lda, B, ldb, beta, C, ldc); return;
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

/* C = beta C + A Bp for the panels at Bp (packed for kernel set `isa`), M, N, K > 0. */
static void gemm_packed_serial(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, int isa, const float *Bp,
                               float beta, float *C, int64_t ldc)
{
#ifdef CO_HAVE_CBLAS
    (void)isa;
    if (M == 1)
        cblas_sgemv(CblasRowMajor, CblasTrans, (int)K, (int)N, 1.0f, Bp, (int)N, A, 1, beta, C, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f, A, (int)lda, Bp, (int)N,
                    beta, C, (int)ldc);
#else
    switch (isa) {
#if defined(CO_GEMM_X86)
    case CO_ISA_AVX512: co_gemm_avx512_packed(M, N, K, A, lda, Bp, beta, C, ldc); return;
    case CO_ISA_AVX2: co_gemm_avx2_packed(M, N, K, A, lda, Bp, beta, C, ldc); return;
#endif
    default: portable_packed(M, N, K, A, lda, Bp, beta, C, ldc); return;
    }
#endif
}

/* ---- one product split across the calling thread's pool (kernels/threadpool.h) ----
 * Each task computes a block of columns of C (or, where the columns are too few, a block of rows)
 * with the serial kernel. Every kernel's summation order for one element of C depends only on K
 * (the FMA chain along k, the 256-deep K blocks; the packed 1-/2-row strips and the 8-row tile
 * run the same chain), never on where the element's block starts, so a split product is
 * bit-identical to the serial one. Two splits would break that and are not made: nt by rows
 * (M <= CO_GEMM_DOT_M_MAX selects the dot-product kernel, so a row block that small would sum in
 * another order), and packed B anywhere but at a panel edge. OpenBLAS products stay whole.
 * Products below GEMM_PARALLEL_MIN_MACS run on the calling thread: waking a worker costs more. */
enum {
    GEMM_SPLIT_COLS = 32, /* a multiple of every panel width (32, 16) */
    GEMM_SPLIT_ROWS = 8,  /* a row tile of the widest kernel */
    GEMM_TASKS_PER_THREAD = 4 /* so that a preempted worker delays little: the others take its share */
};
#define GEMM_PARALLEL_MIN_MACS 65536.0 /* ~1-3 us of one core: more than a wake-up costs */
#define GEMM_TASK_MIN_MACS 16384.0

typedef enum gemm_kind { GEMM_NN, GEMM_NT, GEMM_PACKED } gemm_kind;

typedef struct gemm_split {
    gemm_kind kind;
    int by_rows, isa;
    int64_t M, N, K, lda, ldb, ldc, step; /* step: rows or columns per task */
    const float *A, *B;                   /* B: the matrix, or the first packed panel */
    float beta;
    float *C;
} gemm_split;

static void gemm_task(void *ctx, int task)
{
    const gemm_split *g = ctx;
    const int64_t lo = (int64_t)task * g->step, extent = g->by_rows ? g->M : g->N;
    const int64_t n = extent - lo < g->step ? extent - lo : g->step;
    if (g->by_rows) {
        const float *A = g->A + lo * g->lda;
        float *C = g->C + lo * g->ldc;
        if (g->kind == GEMM_NN) gemm_serial(0, n, g->N, g->K, A, g->lda, g->B, g->ldb, g->beta, C, g->ldc);
        else gemm_packed_serial(n, g->N, g->K, A, g->lda, g->isa, g->B, g->beta, C, g->ldc);
        return;
    }
    float *C = g->C + lo;
    switch (g->kind) {
    case GEMM_NN: gemm_serial(0, g->M, n, g->K, g->A, g->lda, g->B + lo, g->ldb, g->beta, C, g->ldc); return;
    case GEMM_NT: gemm_serial(1, g->M, n, g->K, g->A, g->lda, g->B + lo * g->ldb, g->ldb, g->beta, C, g->ldc); return;
    case GEMM_PACKED: /* panels of K x nr, nr dividing GEMM_SPLIT_COLS: panel lo / nr starts at (lo / nr) K nr = lo K */
        gemm_packed_serial(g->M, n, g->K, g->A, g->lda, g->isa, g->B + lo * g->K, g->beta, C, g->ldc);
        return;
    }
}

/* Fills g's split and returns its number of tasks; 1 or less: run serially. */
static int plan_split(const co_pool *pool, gemm_split *g)
{
#ifdef CO_HAVE_CBLAS
    (void)pool;
    (void)g;
    return 1;
#else
    const int threads = co_pool_threads(pool);
    if (threads < 2) return 1;
    const double macs = (double)g->M * (double)g->N * (double)g->K;
    if (macs < GEMM_PARALLEL_MIN_MACS) return 1;
    const int64_t col_units = (g->N + GEMM_SPLIT_COLS - 1) / GEMM_SPLIT_COLS;
    const int64_t row_units = g->kind == GEMM_NT ? 0 : (g->M + GEMM_SPLIT_ROWS - 1) / GEMM_SPLIT_ROWS;
    g->by_rows = row_units > col_units;
    const int64_t units = g->by_rows ? row_units : col_units;
    int64_t tasks = (int64_t)threads * GEMM_TASKS_PER_THREAD;
    if (tasks > units) tasks = units;
    if ((double)tasks > macs / GEMM_TASK_MIN_MACS) tasks = (int64_t)(macs / GEMM_TASK_MIN_MACS);
    if (tasks < 2) return 1;
    const int64_t per_task = (units + tasks - 1) / tasks;
    g->step = per_task * (g->by_rows ? GEMM_SPLIT_ROWS : GEMM_SPLIT_COLS);
    return (int)((units + per_task - 1) / per_task);
#endif
}

/* Runs g split over the current pool when that pays; returns 0 when the caller must run it whole. */
static int run_split(gemm_split *g)
{
    co_pool *pool = co_pool_current();
    if (!pool) return 0;
    const int tasks = plan_split(pool, g);
    if (tasks < 2) return 0;
    co_pool_run(pool, tasks, gemm_task, g);
    return 1;
}

void co_gemm_nn(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                float *C, int64_t ldc)
{
    gemm_split g = {GEMM_NN, 0, 0, M, N, K, lda, ldb, ldc, 0, A, B, beta, C};
    if (M > 0 && N > 0 && K > 0 && run_split(&g)) return;
    gemm_serial(0, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

void co_gemm_nt(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                float *C, int64_t ldc)
{
    gemm_split g = {GEMM_NT, 0, 0, M, N, K, lda, ldb, ldc, 0, A, B, beta, C};
    if (M > 0 && N > 0 && K > 0 && run_split(&g)) return;
    gemm_serial(1, M, N, K, A, lda, B, ldb, beta, C, ldc);
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
    gemm_split g = {GEMM_PACKED, 0, h.isa, M, N, K, lda, 0, ldc, 0, A, pack_data(packed), beta, C};
    if (run_split(&g)) return;
    gemm_packed_serial(M, N, K, A, lda, h.isa, g.B, beta, C, ldc);
}
