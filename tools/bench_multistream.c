/*
 * bench_multistream.c — n independent streams in one co_forward_step_streams call vs one
 * lockstep batch-n stream vs n separate co_forward_step calls (median ms per step of all n,
 * interleaved rounds). Not built by CMake (not in CI):
 *
 *   cc -O2 -Iinclude tools/bench_multistream.c -Lbuild -lcontinual -Wl,-rpath,$PWD/build -o /tmp/bench_ms
 *   OPENBLAS_NUM_THREADS=1 /tmp/bench_ms MODEL.safetensors [N=8] [STEPS=30] [ROUNDS=5]
 */
#define _POSIX_C_SOURCE 199309L
#include <continual.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static int64_t numel(const co_shape *s)
{
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++) n *= s->dims[i];
    return n;
}
#define CK(x) do { co_status st_ = (x); if (st_) { fprintf(stderr, "%s: %s\n", #x, co_last_error()); exit(1); } } while (0)

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: %s MODEL [N] [STEPS] [ROUNDS]\n", argv[0]); return 2; }
    const int N = argc > 2 ? atoi(argv[2]) : 8, STEPS = argc > 3 ? atoi(argv[3]) : 30, ROUNDS = argc > 4 ? atoi(argv[4]) : 5;
    co_model *m;
    CK(co_model_load(argv[1], &m));
    co_stream *lock, **ss = calloc((size_t)N, sizeof *ss), **sm = calloc((size_t)N, sizeof *sm);
    co_multistream *ctx;
    CK(co_stream_create(m, N, &lock));
    for (int i = 0; i < N; i++) { CK(co_stream_create(m, 1, &ss[i])); CK(co_stream_create(m, 1, &sm[i])); }
    CK(co_multistream_create(m, N, 1, NULL, &ctx));
    co_shape in, out;
    co_stream_input_shape(lock, &in);
    co_stream_output_shape(lock, &out);
    const int64_t in_n = numel(&in), out_n = numel(&out);
    float *x = malloc((size_t)in_n * sizeof(float)), *y = malloc((size_t)out_n * sizeof(float));
    for (int64_t i = 0; i < in_n; i++) x[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    const float **xs = malloc((size_t)N * sizeof *xs);
    float **ys = malloc((size_t)N * sizeof *ys);
    int *has = malloc((size_t)N * sizeof *has);
    for (int i = 0; i < N; i++) { xs[i] = x + i * (in_n / N); ys[i] = y + i * (out_n / N); }
    /* different positions for the independent streams */
    for (int i = 0; i < N; i++)
        for (int f = 0; f < i; f++) { CK(co_forward_step(ss[i], xs[i], ys[i], &has[i], 1)); CK(co_forward_step(sm[i], xs[i], ys[i], &has[i], 1)); }
    double *t[3];
    for (int k = 0; k < 3; k++) t[k] = malloc((size_t)(STEPS * ROUNDS) * sizeof(double));
    int cnt = 0;
    for (int r = 0; r < ROUNDS; r++)
        for (int k = 0; k < 3; k++)
            for (int s = 0; s < STEPS + 3; s++) {
                double t0 = now_ms();
                if (k == 0) CK(co_forward_step(lock, x, y, &has[0], 1));
                else if (k == 1) for (int i = 0; i < N; i++) CK(co_forward_step(ss[i], xs[i], ys[i], &has[i], 1));
                else CK(co_forward_step_streams(ctx, sm, N, xs, ys, has, 1));
                double dt = now_ms() - t0;
                if (s >= 3) t[k][(r * STEPS + s - 3)] = dt;
                cnt++;
            }
    double med[3];
    for (int k = 0; k < 3; k++) { qsort(t[k], (size_t)(STEPS * ROUNDS), sizeof(double), cmp); med[k] = t[k][STEPS * ROUNDS / 2]; }
    printf("%s  n=%d  lockstep-b%d %.3f ms | %d separate steps %.3f ms (%.2fx) | step_streams %.3f ms (%.2fx lockstep)\n", argv[1], N,
           N, med[0], N, med[1], med[1] / med[0], med[2], med[2] / med[0]);
    return 0;
}
