/*
 * peak.c — the two ceilings tools/bench holds continual-c's steps to, on one core:
 *   sgemm   the library's own GEMM (co_gemm_nn, the kernel set chosen at run time) on square
 *           products, the best of the sizes (per size: the fastest of all calls: on a shared
 *           machine the one that was not preempted);
 *   stream  the rate at which one core reads a buffer far larger than the last-level cache
 *           (summing floats with the widest vector unit the CPU has), i.e. what a step that
 *           streams its weights from DRAM can reach.
 * Prints "key value" lines for bench.py. Built by bench.py against the static library:
 *   cc -O2 -std=c11 -Isrc -Iinclude tools/bench/peak.c build/libcontinual.a -lcjson -lm -lpthread
 */
#define _POSIX_C_SOURCE 199309L
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

enum { CALLS = 12, STREAM_PASSES = 7 };
static const int64_t k_square_sizes[] = {512, 1024, 2048};
/* 256 MiB: far past any last-level cache, so every pass reads DRAM. */
static const size_t k_stream_bytes = (size_t)256 << 20;
/* 32 MiB, about a transformer's weights (CoOadTR-b1: 38 MB): where the last-level cache is that
 * large, steps that read the same weights every step read them from it at this rate. */
static const size_t k_cached_bytes = (size_t)32 << 20;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double sgemm_gflops(int64_t n)
{
    float *A = malloc((size_t)(n * n) * sizeof(float)), *B = malloc((size_t)(n * n) * sizeof(float)),
          *C = malloc((size_t)(n * n) * sizeof(float));
    if (!A || !B || !C) {
        free(A), free(B), free(C);
        return 0;
    }
    for (int64_t i = 0; i < n * n; i++) {
        A[i] = (float)((i * 7) % 13) / 13.0f - 0.5f;
        B[i] = (float)((i * 5) % 11) / 11.0f - 0.5f;
    }
    co_gemm_nn(n, n, n, A, n, B, n, 0.0f, C, n); /* first call: packing buffers, page faults */
    double best = 1e30;
    for (int c = 0; c < CALLS; c++) {
        double t = now_s();
        co_gemm_nn(n, n, n, A, n, B, n, 0.0f, C, n);
        t = now_s() - t;
        if (t < best) best = t;
    }
    free(A), free(B), free(C);
    return 2.0 * (double)n * (double)n * (double)n / best * 1e-9;
}

/* Sums of the buffer, many independent accumulators so the adds never limit the loads. */
static float sum_portable(const float *x, size_t n)
{
    float acc[16] = {0};
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) acc[j] += x[i + j];
    float s = 0;
    for (int j = 0; j < 16; j++) s += acc[j];
    for (; i < n; i++) s += x[i];
    return s;
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static float sum_avx2(const float *x, size_t n)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x + i));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(x + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_loadu_ps(x + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_loadu_ps(x + i + 24));
    }
    float v[8], s = 0;
    _mm256_storeu_ps(v, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (int j = 0; j < 8; j++) s += v[j];
    for (; i < n; i++) s += x[i];
    return s;
}

__attribute__((target("avx512f"))) static float sum_avx512(const float *x, size_t n)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_add_ps(a0, _mm512_loadu_ps(x + i));
        a1 = _mm512_add_ps(a1, _mm512_loadu_ps(x + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_loadu_ps(x + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_loadu_ps(x + i + 48));
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    for (; i < n; i++) s += x[i];
    return s;
}
#endif

static void stream_gbs(size_t bytes, double *best_gbs, double *median_gbs, const char **isa_used)
{
    const size_t n = bytes / sizeof(float);
    float *x = malloc(bytes);
    *best_gbs = *median_gbs = 0;
    if (!x) return;
    for (size_t i = 0; i < n; i++) x[i] = (float)(i & 1023) * 1e-3f; /* touches every page */
    float (*sum)(const float *, size_t) = sum_portable;
    *isa_used = "portable";
#if defined(__x86_64__)
    const co_isa isa = co_cpu_isa();
    if (isa >= CO_ISA_AVX512) sum = sum_avx512, *isa_used = "avx512";
    else if (isa >= CO_ISA_AVX2) sum = sum_avx2, *isa_used = "avx2";
#endif
    double gbs[STREAM_PASSES];
    volatile float sink = 0;
    for (int p = 0; p < STREAM_PASSES; p++) {
        double t = now_s();
        sink += sum(x, n);
        t = now_s() - t;
        gbs[p] = (double)bytes / t * 1e-9;
    }
    (void)sink;
    qsort(gbs, STREAM_PASSES, sizeof(double), cmp_d);
    *best_gbs = gbs[STREAM_PASSES - 1];
    *median_gbs = gbs[STREAM_PASSES / 2];
    free(x);
}

int main(void)
{
    printf("kernel_set %s\n", co_gemm_backend());
    double peak = 0;
    int64_t peak_n = 0;
    for (size_t i = 0; i < sizeof k_square_sizes / sizeof k_square_sizes[0]; i++) {
        double g = sgemm_gflops(k_square_sizes[i]);
        printf("sgemm_gflops_%lld %.2f\n", (long long)k_square_sizes[i], g);
        if (g > peak) peak = g, peak_n = k_square_sizes[i];
    }
    printf("sgemm_gflops %.2f\nsgemm_size %lld\n", peak, (long long)peak_n);
    double best, median;
    const char *isa = "portable";
    stream_gbs(k_stream_bytes, &best, &median, &isa);
    printf("stream_isa %s\nstream_mib %zu\nstream_gbs %.2f\nstream_gbs_median %.2f\n", isa, k_stream_bytes >> 20,
           best, median);
    stream_gbs(k_cached_bytes, &best, &median, &isa);
    printf("cached_mib %zu\ncached_gbs %.2f\n", k_cached_bytes >> 20, best);
    return 0;
}
