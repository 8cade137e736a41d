/*
 * test_stress.c — one model, 8 threads x 8 streams (the TSan job's stress; it also runs in the
 * ordinary jobs). Each thread steps its own 8 streams interleaved, peeks, saves a stream mid-way,
 * steps on, restores and steps the same frames again, and between steps makes failing loads of a
 * broken file. Every stream's outputs must equal, bit for bit, the same stream run alone on the
 * main thread, and every failing load must report its own error.
 * Usage: test_stress MODEL
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

enum { THREADS = 8, STREAMS = 8, STEPS = 24, SAVE_AT = 9, REPLAY = 5 };

typedef struct worker {
    const co_model *model;
    int index;
    int64_t nin, nout;
    float *out;          /* [STREAMS][STEPS][nout], zeros where no output */
    int failures;
    char error[256];
} worker;

static uint32_t seed_of(int thread, int stream, int t) { return (uint32_t)(thread * 7919 + stream * 104729 + t); }

static int step_one(co_stream *s, int64_t nin, int64_t nout, uint32_t seed, float *y, int update)
{
    float x[4096];
    if (nin > (int64_t)(sizeof x / sizeof x[0])) return -1;
    tu_fill(x, nin, seed);
    int has = 0;
    if (co_forward_step(s, x, y, &has, update) != CO_OK) return -1;
    if (!has) memset(y, 0, (size_t)nout * sizeof(float));
    return 0;
}

/* Broken in-memory file: a header length past the end. */
static const unsigned char k_broken[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}'};

static void *work(void *arg)
{
    worker *w = arg;
    co_stream *s[STREAMS] = {0};
    float *peek = calloc((size_t)w->nout, sizeof *peek);
    size_t state_n = 0;
    void *saved = NULL;
    for (int k = 0; k < STREAMS; k++)
        if (co_stream_create(w->model, 1, &s[k]) != CO_OK) {
            snprintf(w->error, sizeof w->error, "create: %s", co_last_error());
            w->failures++;
            goto done;
        }
    state_n = co_stream_state_size(s[0]);
    saved = malloc(state_n);
    for (int t = 0; t < STEPS && peek && saved; t++)
        for (int k = 0; k < STREAMS; k++) {
            float *y = w->out + ((size_t)k * STEPS + (size_t)t) * (size_t)w->nout;
            const uint32_t seed = seed_of(w->index, k, t);
            /* a peek first: it must give the real step's output and leave the state alone */
            if (step_one(s[k], w->nin, w->nout, seed, peek, 0) || step_one(s[k], w->nin, w->nout, seed, y, 1)) {
                snprintf(w->error, sizeof w->error, "step: %s", co_last_error());
                w->failures++;
                goto done;
            }
            if (memcmp(peek, y, (size_t)w->nout * sizeof(float)) != 0) {
                snprintf(w->error, sizeof w->error, "peek differs from the step (stream %d, step %d)", k, t);
                w->failures++;
            }
            if (t == SAVE_AT && k == w->index % STREAMS) { /* save, run REPLAY steps on a copy, restore */
                size_t got = 0;
                if (co_stream_save(s[k], saved, state_n, &got) != CO_OK) w->failures++;
                for (int r = 1; r <= REPLAY; r++) step_one(s[k], w->nin, w->nout, seed_of(w->index, k, t + r), peek, 1);
                if (co_stream_restore(s[k], saved, got) != CO_OK) w->failures++;
            }
            co_model *bad = NULL;
            if (co_model_load_memory(k_broken, sizeof k_broken, &bad) != CO_ERR_FORMAT ||
                !strstr(co_last_error(), "runs past the end")) {
                snprintf(w->error, sizeof w->error, "a failing load reported: %s", co_last_error());
                w->failures++;
            }
        }
done:
    for (int k = 0; k < STREAMS; k++) co_stream_free(s[k]);
    free(saved);
    free(peek);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_stress MODEL\n");
        return 2;
    }
    co_model *m = NULL;
    TU_STATUS(co_model_load(argv[1], &m), CO_OK, "load");
    if (!m) return tu_finish("test_stress");
    co_stream *probe = NULL;
    TU_STATUS(co_stream_create(m, 1, &probe), CO_OK, "probe stream");
    co_shape in, out;
    co_stream_input_shape(probe, &in);
    co_stream_output_shape(probe, &out);
    co_stream_free(probe);
    worker w[THREADS];
    pthread_t th[THREADS];
    const size_t per = (size_t)STREAMS * STEPS * (size_t)tu_numel(&out);
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){m, i, tu_numel(&in), tu_numel(&out), calloc(per, sizeof(float)), 0, ""};
        TU_CHECK(w[i].out != NULL, "alloc");
    }
    for (int i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, work, &w[i]);
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);

    /* each stream alone, on this thread */
    float *alone = calloc((size_t)STEPS * (size_t)tu_numel(&out), sizeof(float));
    for (int i = 0; i < THREADS; i++) {
        TU_CHECK(w[i].failures == 0, "thread %d: %d failures (%s)", i, w[i].failures, w[i].error);
        for (int k = 0; k < STREAMS && alone; k++) {
            co_stream *s = NULL;
            TU_STATUS(co_stream_create(m, 1, &s), CO_OK, "stream alone");
            for (int t = 0; t < STEPS; t++)
                step_one(s, tu_numel(&in), tu_numel(&out), seed_of(i, k, t), alone + (size_t)t * (size_t)tu_numel(&out), 1);
            co_stream_free(s);
            TU_CHECK(memcmp(alone, w[i].out + (size_t)k * STEPS * (size_t)tu_numel(&out),
                            (size_t)STEPS * (size_t)tu_numel(&out) * sizeof(float)) == 0,
                     "thread %d stream %d: outputs differ from the stream run alone", i, k);
        }
        free(w[i].out);
    }
    free(alone);
    co_model_free(m);
    return tu_finish("test_stress");
}
