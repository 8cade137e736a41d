/*
 * test_threads.c — one model shared by several threads, each with its own streams: every
 * thread's outputs equal the same stream run alone, and errors stay per thread.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

enum { THREADS = 4, STEPS = 40 };

typedef struct job {
    const co_model *model;
    uint32_t seed;
    float *out;       /* STEPS output frames (zeros where none) */
    int64_t out_n;    /* floats per output frame */
    int ok;
    char error[256];
} job;

static void run_stream(job *j)
{
    co_stream *s = NULL;
    j->ok = 0;
    if (co_stream_create(j->model, 1, &s) != CO_OK) {
        snprintf(j->error, sizeof j->error, "create: %s", co_last_error());
        return;
    }
    co_shape in, out;
    co_stream_input_shape(s, &in);
    co_stream_output_shape(s, &out);
    const int64_t nin = tu_numel(&in);
    j->out_n = tu_numel(&out);
    float *x = malloc((size_t)nin * sizeof *x);
    for (int t = 0; t < STEPS && x; t++) {
        int has = 0;
        tu_fill(x, nin, j->seed + (uint32_t)t);
        if (co_forward_step(s, x, j->out + t * j->out_n, &has, 1) != CO_OK) {
            snprintf(j->error, sizeof j->error, "step: %s", co_last_error());
            break;
        }
        if (!has) memset(j->out + t * j->out_n, 0, (size_t)j->out_n * sizeof(float));
        if (t == STEPS - 1) j->ok = 1;
    }
    /* an error on this thread must not leak into another's message */
    co_model *bad = NULL;
    if (co_model_load("/nonexistent/model.safetensors", &bad) == CO_OK || !strstr(co_last_error(), "nonexistent")) j->ok = 0;
    free(x);
    co_stream_free(s);
}

static void *thread_main(void *arg)
{
    run_stream(arg);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_threads MODEL\n");
        return 2;
    }
    co_model *m = NULL;
    TU_STATUS(co_model_load(argv[1], &m), CO_OK, "load");
    if (!m) return tu_finish("test_threads");
    co_plan_info info;
    TU_STATUS(co_model_plan_info(m, 1, NULL, &info), CO_OK, "plan info");
    int64_t n = 1;
    for (int i = 0; i < info.output_frame.ndim; i++) n *= info.output_frame.dims[i];
    job alone[THREADS], together[THREADS];
    pthread_t tid[THREADS];
    for (int i = 0; i < THREADS; i++) {
        alone[i] = (job){m, 1000u * (uint32_t)(i + 1), calloc((size_t)(STEPS * n), sizeof(float)), 0, 0, ""};
        together[i] = (job){m, 1000u * (uint32_t)(i + 1), calloc((size_t)(STEPS * n), sizeof(float)), 0, 0, ""};
        run_stream(&alone[i]);
        TU_CHECK(alone[i].ok, "stream %d alone: %s", i, alone[i].error);
    }
    for (int i = 0; i < THREADS; i++) TU_CHECK(pthread_create(&tid[i], NULL, thread_main, &together[i]) == 0, "spawn");
    for (int i = 0; i < THREADS; i++) pthread_join(tid[i], NULL);
    for (int i = 0; i < THREADS; i++) {
        TU_CHECK(together[i].ok, "thread %d: %s", i, together[i].error);
        TU_CHECK(memcmp(alone[i].out, together[i].out, (size_t)(STEPS * n) * sizeof(float)) == 0,
                 "thread %d: outputs differ from the same stream run alone", i);
        free(alone[i].out);
        free(together[i].out);
    }
    co_model_free(m);
    return tu_finish("test_threads");
}
