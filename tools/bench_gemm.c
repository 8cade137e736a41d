/*
 * bench_gemm — single-thread sgemm on the shapes continual-c calls, for every backend at hand,
 * interleaved (round r: every shape x every backend); in each round the fastest single call (on a
 * shared machine: the call that was not preempted), then the median of the rounds. Prints GFLOP/s and
 * % of the measured peak (the best rate of any backend at 2048^3, and an FMA loop), plus the
 * heap allocations each backend makes per call. Not run in CI; docs/kernels.md shows its table.
 *
 *   build-k/bench_gemm [--rounds N] [--ms MS] [--quick]
 *   build-k/bench_gemm --small [--rounds N] [--ms MS]
 *
 * --small: the table of small and skinny products instead (batch-1 and batch-8 Linears of
 * CoOadTR: M = 1 or 8, K = 1024..3072, N = 1024..4096), own kernels only (co_gemm_nt on W and
 * co_gemm_packed on W packed, per kernel set), on 1 and on 2 threads (a pool of kernels/threadpool.h
 * current on the caller, as a stream with co_stream_set_threads(2) runs them). Cells: GFLOP/s and
 * the rate the weights are read at (GB/s); the ceilings printed above the table are the FMA loop
 * and the rate one core reads a buffer of the weights' size that stays in cache between calls
 * (the benchmark's weights do too), for the M = 1 rows, which are bound by reading the weights.
 *
 * Backends: continual-c's own kernel sets (avx512, avx2, portable, forced in turn; "+packed" =
 * co_gemm_packed on weights packed once), and, loaded with dlopen if installed: OpenBLAS
 * (libopenblas.so.0, default core detection: OPENBLAS_CORETYPE is removed from the environment
 * first), BLIS (libblis.so.4), oneDNN (libdnnl.so.2, dnnl_sgemm). Threads: 1 everywhere.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "kernels/cpu.h"
#include "kernels/gemm.h"
#include "kernels/threadpool.h"

/* ---- heap counter: this executable's malloc family wraps glibc's, so the dlopen'ed libraries'
 * calls are counted too ---- */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);
void *memalign(size_t al, size_t n);
static atomic_long g_allocs;
static atomic_int g_counting;
static void count(void)
{
    if (atomic_load_explicit(&g_counting, memory_order_relaxed)) atomic_fetch_add(&g_allocs, 1);
}
void *malloc(size_t n)
{
    count();
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b)
{
    count();
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n)
{
    count();
    return __libc_realloc(p, n);
}
void free(void *p) { __libc_free(p); }
int posix_memalign(void **out, size_t al, size_t n)
{
    count();
    void *p = __libc_memalign(al, n);
    if (!p) return 12;
    *out = p;
    return 0;
}
void *aligned_alloc(size_t al, size_t n)
{
    count();
    return __libc_memalign(al, n);
}
void *memalign(size_t al, size_t n)
{
    count();
    return __libc_memalign(al, n);
}

/* ---- backends ---- */
typedef void (*cblas_sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float,
                               float *, int);
typedef int (*dnnl_sgemm_fn)(char, char, int64_t, int64_t, int64_t, float, const float *, int64_t, const float *,
                             int64_t, float, float *, int64_t);
static cblas_sgemm_fn g_openblas, g_blis;
static dnnl_sgemm_fn g_dnnl;

enum { B_AVX512, B_AVX512_PACKED, B_AVX2, B_AVX2_PACKED, B_PORTABLE, B_OPENBLAS, B_BLIS, B_DNNL, NB };
static const char *k_bname[NB] = {"own-avx512", "own-avx512+pk", "own-avx2", "own-avx2+pk",
                                  "own-portable", "openblas", "blis", "onednn"};
static int g_have[NB];

typedef struct shape {
    const char *what;
    int trans; /* 0: C = A B (B K x N); 1: C = A B^T (B N x K), as co_gemm_nn / co_gemm_nt */
    int64_t M, N, K;
} shape;

static const shape k_shapes[] = {
    {"peak: square 2048", 0, 2048, 2048, 2048},
    {"square 512", 0, 512, 512, 512},
    {"conv3d 64>64 k3 16x16, tap", 0, 64, 256, 576},
    {"conv3d 64>64 k3 32x32, tap", 0, 64, 1024, 576},
    {"CoX3D-S stem 1x3x3 (80x80)", 0, 24, 6400, 27},
    {"conv tap 64 x 160x160 K27", 0, 64, 25600, 27},
    {"CoX3D-S s2 conv_a 1x1 (80x80)", 0, 54, 6400, 24},
    {"CoX3D-S s2 conv_c 1x1 (40x40)", 0, 24, 1600, 54},
    {"CoX3D-S s3 conv_a (20x20)", 0, 108, 400, 48},
    {"CoX3D-S s4 conv_a (10x10)", 0, 216, 100, 96},
    {"CoX3D-S s5 conv_c (5x5)", 0, 192, 25, 432},
    {"CoX3D-S lin_5 432>2048 (N=1)", 0, 2048, 1, 432},
    {"Conv1d 128 k5 b8, tap", 1, 8, 128, 128},
    {"CoOadTR Linear 3072>1024 b1", 1, 1, 1024, 3072},
    {"CoOadTR Linear 3072>1024 b8", 1, 8, 1024, 3072},
    {"CoOadTR in-proj 1024>3072 b1", 1, 1, 3072, 1024},
    {"CoOadTR in-proj 1024>3072 b8", 1, 8, 3072, 1024},
    {"CoOadTR FFN 1024>1024 b1", 1, 1, 1024, 1024},
    {"CoOadTR FFN 1024>1024 b8", 1, 8, 1024, 1024},
    {"retro attn K,V proj T64", 1, 64, 2048, 1024},
    {"retro attn proj T64 b8", 1, 512, 3072, 1024},
    {"attn out per head b8 (K=dh)", 1, 8, 1024, 128},
};
enum { NS = sizeof k_shapes / sizeof k_shapes[0] };

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

typedef struct bufs {
    float *A, *B, *C, *Cref;
    void *packed[2]; /* avx512, avx2 */
} bufs;

static void call(int b, const shape *s, bufs *d)
{
    const int64_t M = s->M, N = s->N, K = s->K;
    const int64_t ldb = s->trans ? K : N;
    switch (b) {
    case B_AVX512:
    case B_AVX2:
    case B_PORTABLE:
        co_gemm_force_isa(b == B_AVX512 ? CO_ISA_AVX512 : b == B_AVX2 ? CO_ISA_AVX2 : CO_ISA_PORTABLE);
        if (s->trans) co_gemm_nt(M, N, K, d->A, K, d->B, ldb, 0.0f, d->C, N);
        else co_gemm_nn(M, N, K, d->A, K, d->B, ldb, 0.0f, d->C, N);
        break;
    case B_AVX512_PACKED: co_gemm_packed(M, N, K, d->A, K, d->packed[0], 0.0f, d->C, N); break;
    case B_AVX2_PACKED: co_gemm_packed(M, N, K, d->A, K, d->packed[1], 0.0f, d->C, N); break;
    case B_OPENBLAS:
    case B_BLIS: /* CblasRowMajor 101, NoTrans 111, Trans 112 */
        (b == B_OPENBLAS ? g_openblas : g_blis)(101, 111, s->trans ? 112 : 111, (int)M, (int)N, (int)K, 1.0f, d->A,
                                                (int)K, d->B, (int)ldb, 0.0f, d->C, (int)N);
        break;
    case B_DNNL: g_dnnl('N', s->trans ? 'T' : 'N', M, N, K, 1.0f, d->A, K, d->B, ldb, 0.0f, d->C, N); break;
    }
}

static double max_rel_err(const float *x, const float *ref, int64_t n)
{
    double e = 0, scale = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)x[i] - ref[i]);
        if (d > e) e = d;
        if (fabs(ref[i]) > scale) scale = fabs(ref[i]);
    }
    return scale > 0 ? e / scale : e;
}

#if defined(__x86_64__)
/* Pure FMA loop: 12 independent chains of vfmadd (intrinsics: -std=c11 does not contract a*b+c),
 * the core's FMA throughput. */
__attribute__((target("avx512f"))) static double fma_peak_avx512(void)
{
    __m512 acc[12];
    const __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_ps((float)i);
    const long iters = 1000000;
    double t = now();
    for (long it = 0; it < iters; it++) {
#define F12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define FM(i) acc[i] = _mm512_fmadd_ps(acc[i], m, a);
        F12(FM)
    }
    t = now() - t;
    float s = 0;
    for (int i = 0; i < 12; i++) s += _mm512_reduce_add_ps(acc[i]);
    if (s == 12345.0f) puts("");
    return 2.0 * 16 * 12 * iters / t * 1e-9;
}
__attribute__((target("avx2,fma"))) static double fma_peak_avx2(void)
{
    __m256 acc[12];
    const __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i);
    const long iters = 1000000;
    double t = now();
    for (long it = 0; it < iters; it++) {
#define FM2(i) acc[i] = _mm256_fmadd_ps(acc[i], m, a);
        F12(FM2)
    }
    t = now() - t;
    float s = 0;
    for (int i = 0; i < 12; i++) {
        float v[8];
        _mm256_storeu_ps(v, acc[i]);
        s += v[0];
    }
    if (s == 12345.0f) puts("");
    return 2.0 * 8 * 12 * iters / t * 1e-9;
}
#else
static double fma_peak_avx512(void) { return 0; }
static double fma_peak_avx2(void) { return 0; }
#endif

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- --small: batch-1 / batch-8 Linears ---- */
typedef struct small_shape {
    const char *what;
    int64_t M, N, K;
} small_shape;
static const small_shape k_small[] = {
    {"FFN 1024>1024", 1, 1024, 1024},    {"FFN 1024>1024", 8, 1024, 1024},
    {"in-proj 1024>3072", 1, 3072, 1024}, {"in-proj 1024>3072", 8, 3072, 1024},
    {"1024>4096", 1, 4096, 1024},         {"1024>4096", 8, 4096, 1024},
    {"3072>1024", 1, 1024, 3072},         {"3072>1024", 8, 1024, 3072},
};
enum { NSS = sizeof k_small / sizeof k_small[0] };
/* columns: kernel set x {nt, packed} x {1, 2 threads} */
enum { SK_NT, SK_PACKED, SK_KINDS };
static const co_isa k_small_isa[] = {CO_ISA_AVX512, CO_ISA_AVX2, CO_ISA_PORTABLE};
enum { SMALL_ISAS = 3, SMALL_THREADS = 2 };

#if defined(__x86_64__)
/* One read of n floats with four independent sums (the adds never limit the loads). */
__attribute__((target("avx512f"))) static float read_avx512(const float *x, size_t n)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 64 <= n; i += 64) {
        a0 = _mm512_add_ps(a0, _mm512_loadu_ps(x + i));
        a1 = _mm512_add_ps(a1, _mm512_loadu_ps(x + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_loadu_ps(x + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_loadu_ps(x + i + 48));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}
#endif
/* The read with the widest vectors the CPU has (no AVX-512: four scalar sums). */
static float read_all(const float *x, size_t n)
{
#if defined(__x86_64__)
    if (co_cpu_isa() >= CO_ISA_AVX512) return read_avx512(x, n);
#endif
    float s[4] = {0};
    for (size_t i = 0; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; j++) s[j] += x[i + j];
    return s[0] + s[1] + s[2] + s[3];
}

static double median_of(double *t, int n)
{
    qsort(t, (size_t)n, sizeof(double), cmp_d);
    return t[n / 2];
}

static int small_table(int rounds, double ms, double fpeak)
{
    const int have_isa[SMALL_ISAS] = {co_gemm_force_isa(CO_ISA_AVX512), co_gemm_force_isa(CO_ISA_AVX2),
                                      co_gemm_force_isa(CO_ISA_PORTABLE)};
    co_gemm_force_isa(-1);
    void *pool_mem = aligned_alloc(64, (co_pool_bytes(SMALL_THREADS) + 63) / 64 * 64);
    co_pool *pool = pool_mem ? co_pool_init(pool_mem, SMALL_THREADS) : NULL;
    if (!pool) {
        fprintf(stderr, "bench_gemm: no thread pool\n");
        return 1;
    }
    float *A[NSS], *W[NSS], *C[NSS];
    void *P[NSS][SMALL_ISAS];
    srand(1);
    for (int s = 0; s < NSS; s++) {
        const small_shape *sh = &k_small[s];
        A[s] = malloc((size_t)(sh->M * sh->K) * 4);
        W[s] = malloc((size_t)(sh->N * sh->K) * 4);
        C[s] = malloc((size_t)(sh->M * sh->N) * 4);
        for (int64_t i = 0; i < sh->M * sh->K; i++) A[s][i] = (float)((double)rand() / RAND_MAX - 0.5);
        for (int64_t i = 0; i < sh->N * sh->K; i++) W[s][i] = (float)((double)rand() / RAND_MAX - 0.5);
        for (int v = 0; v < SMALL_ISAS; v++) {
            P[s][v] = NULL;
            if (!have_isa[v]) continue;
            co_gemm_force_isa(k_small_isa[v]);
            P[s][v] = malloc(co_gemm_pack_size(sh->K, sh->N));
            co_gemm_pack_b(1, sh->K, sh->N, W[s], sh->K, P[s][v]);
        }
    }
    /* read-bandwidth ceiling of each shape's weights, hot in cache as in the products below */
    double read_gbs[NSS];
    for (int s = 0; s < NSS; s++) {
        const size_t n = (size_t)(k_small[s].N * k_small[s].K);
        double best = 1e30;
        volatile float sink = 0;
        for (int i = 0; i < 200; i++) {
            double t = now();
            sink += read_all(W[s], n);
            t = now() - t;
            if (t < best) best = t;
        }
        (void)sink;
        read_gbs[s] = (double)n * 4 / best * 1e-9;
    }
    static double times[NSS][SMALL_ISAS][SK_KINDS][SMALL_THREADS][100];
    int reps[NSS][SMALL_ISAS][SK_KINDS][SMALL_THREADS];
    for (int r = -1; r < rounds; r++) /* round -1: calibration */
        for (int s = 0; s < NSS; s++)
            for (int v = 0; v < SMALL_ISAS; v++)
                for (int kind = 0; kind < SK_KINDS; kind++)
                    for (int th = 0; th < SMALL_THREADS; th++) {
                        if (!have_isa[v]) continue;
                        const small_shape *sh = &k_small[s];
                        co_gemm_force_isa(k_small_isa[v]);
                        co_pool *prev = co_pool_enter(th ? pool : NULL);
                        const int n = r < 0 ? 1 : reps[s][v][kind][th];
                        double best = 1e30;
                        for (int i = 0; i < n + (r < 0); i++) {
                            double t = now();
                            if (kind == SK_NT) co_gemm_nt(sh->M, sh->N, sh->K, A[s], sh->K, W[s], sh->K, 0.0f, C[s], sh->N);
                            else co_gemm_packed(sh->M, sh->N, sh->K, A[s], sh->K, P[s][v], 0.0f, C[s], sh->N);
                            t = now() - t;
                            if (t < best) best = t;
                        }
                        co_pool_leave(prev);
                        if (r < 0) {
                            const int calls = (int)(ms * 1e-3 / (best > 1e-7 ? best : 1e-7));
                            reps[s][v][kind][th] = calls < 1 ? 1 : calls > 100000 ? 100000 : calls;
                        } else times[s][v][kind][th][r] = best;
                    }
    co_gemm_force_isa(-1);
    printf("FMA-loop peak (1 core): %.1f GFLOP/s. %d rounds, interleaved; per round the fastest call, then the median.\n"
           "Cells: GFLOP/s / GB/s of weights read; x2: the 2-thread time over the 1-thread time's speed-up.\n\n",
           fpeak, rounds);
    printf("| shape | M | N | K | hot read GB/s |");
    for (int v = 0; v < SMALL_ISAS; v++)
        if (have_isa[v])
            printf(" %s nt | %s packed | packed 2 thr (x) |", co_isa_name(k_small_isa[v]), co_isa_name(k_small_isa[v]));
    printf("\n|---|--:|--:|--:|--:|");
    for (int v = 0; v < SMALL_ISAS; v++)
        if (have_isa[v]) printf("--:|--:|--:|");
    printf("\n");
    for (int s = 0; s < NSS; s++) {
        const small_shape *sh = &k_small[s];
        const double flop = 2.0 * (double)(sh->M * sh->N * sh->K), bytes = 4.0 * (double)(sh->N * sh->K);
        printf("| %s | %lld | %lld | %lld | %.1f |", sh->what, (long long)sh->M, (long long)sh->N, (long long)sh->K,
               read_gbs[s]);
        for (int v = 0; v < SMALL_ISAS; v++) {
            if (!have_isa[v]) continue;
            double med[SK_KINDS][SMALL_THREADS];
            for (int kind = 0; kind < SK_KINDS; kind++)
                for (int th = 0; th < SMALL_THREADS; th++) med[kind][th] = median_of(times[s][v][kind][th], rounds);
            for (int kind = 0; kind < SK_KINDS; kind++)
                printf(" %.1f / %.1f |", flop / med[kind][0] * 1e-9, bytes / med[kind][0] * 1e-9);
            printf(" %.1f (%.2fx) |", flop / med[SK_PACKED][1] * 1e-9, med[SK_PACKED][0] / med[SK_PACKED][1]);
        }
        printf("\n");
    }
    for (int s = 0; s < NSS; s++) {
        free(A[s]), free(W[s]), free(C[s]);
        for (int v = 0; v < SMALL_ISAS; v++) free(P[s][v]);
    }
    co_pool_destroy(pool);
    free(pool_mem);
    return 0;
}

int main(int argc, char **argv)
{
    int rounds = 5, quick = 0, small = 0;
    double ms = 30;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ms") && i + 1 < argc) ms = atof(argv[++i]);
        else if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--small")) small = 1;
        else {
            fprintf(stderr, "usage: %s [--rounds N] [--ms MS] [--quick | --small]\n", argv[0]);
            return 2;
        }
    }
    if (rounds < 1 || rounds > 99) rounds = 5;
    unsetenv("OPENBLAS_CORETYPE");
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    setenv("OMP_NUM_THREADS", "1", 1);
    setenv("BLIS_NUM_THREADS", "1", 1);
    void *h;
    if ((h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL))) g_openblas = (cblas_sgemm_fn)dlsym(h, "cblas_sgemm");
    if ((h = dlopen("libblis.so.4", RTLD_NOW | RTLD_LOCAL))) g_blis = (cblas_sgemm_fn)dlsym(h, "cblas_sgemm");
    if ((h = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_LOCAL))) g_dnnl = (dnnl_sgemm_fn)dlsym(h, "dnnl_sgemm");
    const co_isa isa = co_cpu_isa();
    g_have[B_AVX512] = g_have[B_AVX512_PACKED] = co_gemm_force_isa(CO_ISA_AVX512) && isa >= CO_ISA_AVX512;
    g_have[B_AVX2] = g_have[B_AVX2_PACKED] = co_gemm_force_isa(CO_ISA_AVX2) && isa >= CO_ISA_AVX2;
    co_gemm_force_isa(-1);
    if (!strcmp(co_gemm_backend(), "portable")) g_have[B_AVX512] = g_have[B_AVX512_PACKED] = g_have[B_AVX2] =
        g_have[B_AVX2_PACKED] = 0; /* a portable build */
    g_have[B_PORTABLE] = 1;
    g_have[B_OPENBLAS] = g_openblas != NULL;
    g_have[B_BLIS] = g_blis != NULL;
    g_have[B_DNNL] = g_dnnl != NULL;

    printf("cpu: detected kernel set %s; default backend of this build: %s\n", co_isa_name(isa), co_gemm_backend());
    double fpeak = 0;
    for (int i = 0; i < 30; i++) { /* the best of 30 short runs (each about 5 ms) */
        double f = isa >= CO_ISA_AVX512 ? fma_peak_avx512() : isa >= CO_ISA_AVX2 ? fma_peak_avx2() : 0;
        if (f > fpeak) fpeak = f;
    }
    if (small) return small_table(rounds, ms, fpeak);
    printf("FMA-loop peak (1 core): %.1f GFLOP/s\n", fpeak);

    bufs d[NS];
    srand(1);
    for (int s = 0; s < NS; s++) {
        const shape *sh = &k_shapes[s];
        size_t na = (size_t)(sh->M * sh->K), nb = (size_t)(sh->K * sh->N), nc = (size_t)(sh->M * sh->N);
        d[s].A = malloc(na * 4);
        d[s].B = malloc(nb * 4);
        d[s].C = malloc(nc * 4);
        d[s].Cref = malloc(nc * 4);
        for (size_t i = 0; i < na; i++) d[s].A[i] = (float)((double)rand() / RAND_MAX - 0.5);
        for (size_t i = 0; i < nb; i++) d[s].B[i] = (float)((double)rand() / RAND_MAX - 0.5);
        /* reference in double */
        for (int64_t i = 0; i < sh->M; i++)
            for (int64_t j = 0; j < sh->N; j++) {
                double acc = 0;
                if (sh->M * sh->N * sh->K < ((int64_t)1 << 31))
                    for (int64_t k = 0; k < sh->K; k++)
                        acc += (double)d[s].A[i * sh->K + k] *
                               d[s].B[sh->trans ? j * sh->K + k : k * sh->N + j];
                d[s].Cref[i * sh->N + j] = (float)acc;
            }
        for (int p = 0; p < 2; p++) {
            d[s].packed[p] = NULL;
            if (!g_have[p ? B_AVX2 : B_AVX512]) continue;
            co_gemm_force_isa(p ? CO_ISA_AVX2 : CO_ISA_AVX512);
            d[s].packed[p] = malloc(co_gemm_pack_size(sh->K, sh->N));
            co_gemm_pack_b(sh->trans, sh->K, sh->N, d[s].B, sh->trans ? sh->K : sh->N, d[s].packed[p]);
        }
        co_gemm_force_isa(-1);
    }

    /* calibrate reps, check results, count allocations per call */
    int reps[NS][NB];
    double err[NS][NB];
    long allocs[NS][NB];
    for (int s = 0; s < NS; s++)
        for (int b = 0; b < NB; b++) {
            reps[s][b] = 0;
            if (!g_have[b]) continue;
            if (b == B_PORTABLE && k_shapes[s].M * k_shapes[s].N * k_shapes[s].K > ((int64_t)1 << 31) && quick) continue;
            call(b, &k_shapes[s], &d[s]); /* warm-up (first-call initialisation is not counted) */
            atomic_store(&g_allocs, 0);
            atomic_store(&g_counting, 1);
            double t = now();
            call(b, &k_shapes[s], &d[s]);
            t = now() - t;
            atomic_store(&g_counting, 0);
            allocs[s][b] = atomic_load(&g_allocs);
            const int64_t big = ((int64_t)1 << 31);
            err[s][b] = k_shapes[s].M * k_shapes[s].N * k_shapes[s].K < big
                            ? max_rel_err(d[s].C, d[s].Cref, k_shapes[s].M * k_shapes[s].N)
                            : -1;
            int r = (int)(ms * 1e-3 / (t > 1e-7 ? t : 1e-7));
            reps[s][b] = r < 1 ? 1 : r > 100000 ? 100000 : r;
        }

    static double times[NS][NB][100];
    for (int r = 0; r < rounds; r++)
        for (int s = 0; s < NS; s++)
            for (int b = 0; b < NB; b++) {
                if (!reps[s][b]) continue;
                /* the fastest call of the round: on a shared machine, the call that ran without
                 * being preempted (each call is timed alone) */
                double best = 1e30;
                for (int i = 0; i < reps[s][b]; i++) {
                    double t = now();
                    call(b, &k_shapes[s], &d[s]);
                    t = now() - t;
                    if (t < best) best = t;
                }
                times[s][b][r] = best;
            }
    co_gemm_force_isa(-1);

    double med[NS][NB], peak = 0;
    for (int s = 0; s < NS; s++)
        for (int b = 0; b < NB; b++) {
            med[s][b] = 0;
            if (!reps[s][b]) continue;
            qsort(times[s][b], (size_t)rounds, sizeof(double), cmp_d);
            med[s][b] = times[s][b][rounds / 2];
            double gf = 2.0 * k_shapes[s].M * k_shapes[s].N * k_shapes[s].K / med[s][b] * 1e-9;
            if (s <= 1 && gf > peak) peak = gf;
        }
    printf("sgemm peak (best backend on the squares 2048^3, 512^3, 1 core): %.1f GFLOP/s\n", peak);
    if (fpeak > peak) peak = fpeak;
    printf("%% below are of %.1f GFLOP/s (the higher of the two)\n", peak);
    printf("%d rounds, interleaved; per round the fastest call, then the median of the rounds. Cells: GFLOP/s (%% of peak). [A] = heap allocations per call\n\n",
           rounds);
    printf("| shape | op | M | N | K |");
    for (int b = 0; b < NB; b++)
        if (g_have[b]) printf(" %s |", k_bname[b]);
    printf(" best own / best other |\n|---|---|--:|--:|--:|");
    for (int b = 0; b < NB; b++)
        if (g_have[b]) printf("--:|");
    printf("--:|\n");
    for (int s = 0; s < NS; s++) {
        const shape *sh = &k_shapes[s];
        printf("| %s | %s | %lld | %lld | %lld |", sh->what, sh->trans ? "nt" : "nn", (long long)sh->M, (long long)sh->N,
               (long long)sh->K);
        double best_own = 0, best_other = 0;
        for (int b = 0; b < NB; b++) {
            if (!g_have[b]) continue;
            if (!reps[s][b]) {
                printf(" – |");
                continue;
            }
            double gf = 2.0 * sh->M * sh->N * sh->K / med[s][b] * 1e-9;
            printf(" %.1f (%.0f%%)", gf, 100 * gf / peak);
            if (allocs[s][b]) printf(" [%ld A]", allocs[s][b]);
            if (err[s][b] > 1e-4) printf(" ERR %.1e", err[s][b]);
            printf(" |");
            if (b <= B_PORTABLE) {
                if (gf > best_own) best_own = gf;
            } else if (gf > best_other) best_other = gf;
        }
        if (best_other > 0) printf(" %.2f |\n", best_own / best_other);
        else printf(" – |\n");
    }
    return 0;
}
