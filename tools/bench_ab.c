/*
 * bench_ab.c — two builds of libcontinual (before/after a change) timed in one process: each
 * dlopen'ed on its own, their co_forward_step (or, with MULTI=1, co_forward_step_streams over
 * BATCH streams of batch 1) interleaved in blocks of 5 steps after 80 warm-up steps each.
 * Reports the median and p10 of the thread CPU time per step (CLOCK_THREAD_CPUTIME_ID), which
 * time slicing on a loaded machine does not inflate, and B/A. The library loaded first tends to
 * come out ~10 % faster (placement of the two models' weights): run both orders and take the
 * geometric mean of the ratios. Not built by CMake (not in CI):
 *
 *   cc -O2 -Wall -Wextra -Iinclude tools/bench_ab.c -ldl -o /tmp/bench_ab
 *   OMP_NUM_THREADS=1 /tmp/bench_ab /tmp/before/libcontinual.so build/libcontinual.so MODEL BATCH STEPS [MULTI]
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <continual.h>
typedef co_status (*load_fn)(const char *, co_model **);
typedef co_status (*create_fn)(const co_model *, int, co_stream **);
typedef co_status (*shape_fn)(const co_stream *, co_shape *);
typedef co_status (*step_fn)(co_stream *, const float *, float *, int *, int);
typedef co_status (*mcreate_fn)(const co_model *, int, int, const co_shape *, co_multistream **);
typedef co_status (*msteps_fn)(co_multistream *, co_stream *const *, int, const float *const *, float *const *, int *, int);
typedef struct lib { step_fn step; msteps_fn msteps; co_stream *s[8]; co_multistream *mc; float *x, *y[8]; double t[4096]; int n; } lib;
static double now(void) { struct timespec ts; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }
static void open_lib(lib *L, const char *path, const char *model, int batch, int multi)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) { fprintf(stderr, "%s\n", dlerror()); exit(1); }
    load_fn load = (load_fn)dlsym(h, "co_model_load");
    create_fn create = (create_fn)dlsym(h, "co_stream_create");
    shape_fn ish = (shape_fn)dlsym(h, "co_stream_input_shape"), osh = (shape_fn)dlsym(h, "co_stream_output_shape");
    L->step = (step_fn)dlsym(h, "co_forward_step");
    L->msteps = (msteps_fn)dlsym(h, "co_forward_step_streams");
    mcreate_fn mcreate = (mcreate_fn)dlsym(h, "co_multistream_create");
    co_model *m;
    if (load(model, &m)) { fprintf(stderr, "load failed\n"); exit(1); }
    int ns = multi ? batch : 1, b = multi ? 1 : batch;
    co_shape in, out;
    for (int i = 0; i < ns; i++) {
        create(m, b, &L->s[i]);
        ish(L->s[i], &in); osh(L->s[i], &out);
    }
    size_t ni = 1, no = 1;
    for (int i = 0; i < in.ndim; i++) ni *= in.dims[i];
    for (int i = 0; i < out.ndim; i++) no *= out.dims[i];
    L->x = malloc(ni * sizeof(float) * 8);
    for (size_t i = 0; i < ni * 8; i++) L->x[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    for (int i = 0; i < ns; i++) L->y[i] = malloc(no * sizeof(float));
    if (multi && mcreate(m, ns, 1, NULL, &L->mc)) { fprintf(stderr, "mcreate failed\n"); exit(1); }
    L->n = ns;
}
static void step(lib *L, int multi, int k)
{
    int has[8];
    if (multi) {
        const float *xs[8];
        for (int i = 0; i < L->n; i++) xs[i] = L->x;
        L->msteps(L->mc, L->s, L->n, xs, L->y, has, 1);
    } else L->step(L->s[0], L->x, L->y[0], has, 1);
    (void)k;
}
int main(int argc, char **argv)
{
    if (argc < 6) { fprintf(stderr, "ab LIB_A LIB_B MODEL BATCH STEPS [multi]\n"); return 2; }
    int batch = atoi(argv[4]), steps = atoi(argv[5]), multi = argc > 6 && atoi(argv[6]);
    static lib A, B;
    open_lib(&A, argv[1], argv[3], batch, multi);
    open_lib(&B, argv[2], argv[3], batch, multi);
    for (int k = 0; k < 80; k++) { step(&A, multi, k); step(&B, multi, k); }
    int na = 0, nb = 0;
    for (int blk = 0; blk < steps / 5; blk++)
        for (int v = 0; v < 2; v++) {
            lib *L = v ? &B : &A;
            for (int k = 0; k < 5; k++) { double t0 = now(); step(L, multi, k); L->t[v ? nb++ : na++] = now() - t0; }
        }
    qsort(A.t, na, sizeof(double), cmp);
    qsort(B.t, nb, sizeof(double), cmp);
    printf("%s b%d%s: A %.3f ms (p10 %.3f)  B %.3f ms (p10 %.3f)  B/A %.2f\n", argv[3], batch, multi ? " multi" : "",
           A.t[na / 2], A.t[na / 10], B.t[nb / 2], B.t[nb / 10], B.t[nb / 2] / A.t[na / 2]);
    return 0;
}
