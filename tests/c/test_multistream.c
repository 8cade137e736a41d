/*
 * test_multistream.c — co_forward_step_streams: n independent streams of one model in one call
 * give what stepping each alone gives (to 1e-6 relative), with streams at different positions,
 * subsets of every size 1..max, peeks, clean / save / restore between calls, batch 1 and 2;
 * refused calls (NULL, n out of range, duplicate, another model, another batch) leave every
 * stream bit-identical; the call allocates nothing (counting allocator).
 *
 * usage: test_multistream [MODEL.safetensors ...]   (plus two models generated here)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

enum { MAXS = 5, ROUNDS = 40 };

typedef struct counter { long allocs; } counter;
static void *count_alloc(size_t size, void *user)
{
    ((counter *)user)->allocs++;
    return malloc(size ? size : 1);
}
static void count_free(void *ptr, void *user) { (void)user; free(ptr); }

static double rel_err(const float *a, const float *b, int64_t n)
{
    double scale = 1.0, err = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (fabs(b[i]) > scale) scale = fabs(b[i]);
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= err)) err = d; /* NaN counts */
    }
    return err / scale;
}

static unsigned char *save(co_stream *s)
{
    size_t n = co_stream_state_size(s), w = 0;
    unsigned char *b = malloc(n);
    if (!b) exit(99);
    TU_STATUS(co_stream_save(s, b, n, &w), CO_OK, "save");
    return b;
}

static void check_model(const char *what, co_model *m, int batch, counter *cnt)
{
    co_stream *ms[MAXS], *ref[MAXS];
    co_multistream *ctx = NULL;
    TU_STATUS(co_multistream_create(m, MAXS, batch, NULL, &ctx), CO_OK, what);
    if (!ctx) return;
    for (int i = 0; i < MAXS; i++) {
        TU_STATUS(co_stream_create(m, batch, &ms[i]), CO_OK, what);
        TU_STATUS(co_stream_create(m, batch, &ref[i]), CO_OK, what);
    }
    co_shape in, out;
    co_stream_input_shape(ms[0], &in);
    co_stream_output_shape(ms[0], &out);
    const int64_t in_n = tu_numel(&in), out_n = tu_numel(&out);
    float *x = malloc((size_t)(in_n * MAXS) * sizeof(float));
    float *y = malloc((size_t)(out_n * MAXS) * sizeof(float));
    float *yr = malloc((size_t)out_n * sizeof(float));
    const size_t state_n = co_stream_state_size(ms[0]);
    unsigned char *saved = malloc(state_n);
    if (!x || !y || !yr || !saved) exit(99);
    /* different positions: stream i has seen 3*i frames */
    for (int i = 0; i < MAXS; i++)
        for (int f = 0; f < 3 * i; f++) {
            int h;
            tu_fill(x, in_n, (uint32_t)(100 + 7 * i + f));
            TU_STATUS(co_forward_step(ms[i], x, y, &h, 1), CO_OK, "warm-up");
            TU_STATUS(co_forward_step(ref[i], x, y, &h, 1), CO_OK, "warm-up");
        }
    co_stream *sel[MAXS];
    const float *xs[MAXS];
    float *ys[MAXS];
    int has[MAXS], idx[MAXS];
    double worst = 0.0;
    long outputs = 0, bitexact = 0;
    const long allocs_before = cnt->allocs;
    for (int r = 0; r < ROUNDS; r++) {
        const int n = 1 + r % MAXS, update = (r % 4) != 3;
        for (int k = 0; k < n; k++) { /* a rotating subset, in a shuffled order */
            idx[k] = (r * 3 + k * (r % 2 ? 1 : MAXS - 1)) % MAXS;
            for (int q = 0; q < k; q++)
                if (idx[q] == idx[k]) idx[k] = (idx[k] + 1) % MAXS, q = -1;
            sel[k] = ms[idx[k]];
            tu_fill(x + k * in_n, in_n, (uint32_t)(1000 + 31 * r + k));
            xs[k] = x + k * in_n;
            ys[k] = y + k * out_n;
            has[k] = -1;
        }
        TU_STATUS(co_forward_step_streams(ctx, sel, n, xs, ys, has, update), CO_OK, "step_streams");
        for (int k = 0; k < n; k++) {
            int h = -1;
            TU_STATUS(co_forward_step(ref[idx[k]], xs[k], yr, &h, update), CO_OK, "reference step");
            TU_CHECK(h == has[k], "%s round %d stream %d: has_output %d, alone %d", what, r, idx[k], has[k], h);
            if (h == 1 && has[k] == 1) {
                double e = rel_err(ys[k], yr, out_n);
                if (e > worst) worst = e;
                outputs++;
                bitexact += memcmp(ys[k], yr, (size_t)out_n * sizeof(float)) == 0;
                TU_CHECK(e <= 1e-6, "%s round %d stream %d: relative error %.3g", what, r, idx[k], e);
            }
        }
        /* per-stream state operations between calls, mirrored on the reference */
        if (r % 7 == 2) {
            size_t w;
            TU_STATUS(co_stream_save(ms[1], saved, state_n, &w), CO_OK, "save");
            TU_STATUS(co_stream_restore(ms[3], saved, state_n), CO_OK, "restore");
            TU_STATUS(co_stream_save(ref[1], saved, state_n, &w), CO_OK, "save");
            TU_STATUS(co_stream_restore(ref[3], saved, state_n), CO_OK, "restore");
        }
        if (r % 11 == 5) {
            TU_STATUS(co_stream_clean(ms[r % MAXS]), CO_OK, "clean");
            TU_STATUS(co_stream_clean(ref[r % MAXS]), CO_OK, "clean");
        }
    }
    TU_CHECK(cnt->allocs == allocs_before, "%s: %ld allocation(s) in the calls", what, cnt->allocs - allocs_before);
    TU_CHECK(outputs > 0, "%s: no output compared", what);
    printf("%s (batch %d): %ld outputs compared, %ld bit-exact, worst relative error %.3g\n", what, batch, outputs,
           bitexact, worst);

    /* refused calls leave every stream bit-identical */
    unsigned char *before[MAXS];
    for (int i = 0; i < MAXS; i++) {
        sel[i] = ms[i];
        xs[i] = x + i * in_n;
        ys[i] = y + i * out_n;
        before[i] = save(ms[i]);
    }
    co_stream *other_batch = NULL;
    TU_STATUS(co_stream_create(m, batch + 1, &other_batch), CO_OK, "other batch");
    co_stream *dup[MAXS] = {ms[0], ms[1], ms[2], ms[1], ms[4]};
    co_stream *withnull[MAXS] = {ms[0], ms[1], NULL, ms[3], ms[4]};
    co_stream *wrongb[MAXS] = {ms[0], ms[1], ms[2], ms[3], other_batch};
    const float *xnull[MAXS] = {xs[0], xs[1], xs[2], NULL, xs[4]};
    TU_STATUS(co_forward_step_streams(NULL, sel, MAXS, xs, ys, has, 1), CO_ERR_INVALID_ARGUMENT, "NULL ctx");
    TU_STATUS(co_forward_step_streams(ctx, NULL, MAXS, xs, ys, has, 1), CO_ERR_INVALID_ARGUMENT, "NULL streams");
    TU_STATUS(co_forward_step_streams(ctx, sel, MAXS, NULL, ys, has, 1), CO_ERR_INVALID_ARGUMENT, "NULL x");
    TU_STATUS(co_forward_step_streams(ctx, sel, MAXS, xs, NULL, has, 1), CO_ERR_INVALID_ARGUMENT, "NULL y");
    TU_STATUS(co_forward_step_streams(ctx, sel, MAXS, xs, ys, NULL, 1), CO_ERR_INVALID_ARGUMENT, "NULL has");
    TU_STATUS(co_forward_step_streams(ctx, sel, MAXS + 1, xs, ys, has, 1), CO_ERR_INVALID_ARGUMENT, "n > max");
    TU_STATUS(co_forward_step_streams(ctx, sel, -1, xs, ys, has, 1), CO_ERR_INVALID_ARGUMENT, "n < 0");
    TU_STATUS(co_forward_step_streams(ctx, dup, MAXS, xs, ys, has, 1), CO_ERR_INVALID_ARGUMENT, "duplicate");
    TU_STATUS(co_forward_step_streams(ctx, withnull, MAXS, xs, ys, has, 1), CO_ERR_INVALID_ARGUMENT, "NULL stream");
    TU_STATUS(co_forward_step_streams(ctx, sel, MAXS, xnull, ys, has, 1), CO_ERR_INVALID_ARGUMENT, "NULL frame");
    if (other_batch)
        TU_STATUS(co_forward_step_streams(ctx, wrongb, MAXS, xs, ys, has, 1), CO_ERR_SHAPE, "other batch");
    /* a stream of another model (same network, loaded again: another object) */
    TU_STATUS(co_forward_step_streams(ctx, sel, 0, NULL, NULL, NULL, 1), CO_OK, "n = 0");
    for (int i = 0; i < MAXS; i++) {
        unsigned char *now = save(ms[i]);
        TU_CHECK(memcmp(now, before[i], state_n) == 0, "%s: a refused call changed stream %d", what, i);
        free(now);
        free(before[i]);
    }
    co_stream_free(other_batch);
    for (int i = 0; i < MAXS; i++) {
        co_stream_free(ms[i]);
        co_stream_free(ref[i]);
    }
    co_multistream_free(ctx);
    free(x);
    free(y);
    free(yr);
    free(saved);
}

static void check_foreign(co_model *a, co_model *b)
{
    co_multistream *ctx = NULL;
    co_stream *s[2] = {NULL, NULL};
    TU_STATUS(co_multistream_create(a, 2, 1, NULL, &ctx), CO_OK, "ctx");
    TU_STATUS(co_stream_create(a, 1, &s[0]), CO_OK, "stream a");
    TU_STATUS(co_stream_create(b, 1, &s[1]), CO_OK, "stream b");
    if (ctx && s[0] && s[1]) {
        co_shape in, out;
        co_stream_input_shape(s[0], &in);
        co_stream_output_shape(s[0], &out);
        float *x = calloc((size_t)tu_numel(&in), sizeof(float)), *y0 = calloc((size_t)tu_numel(&out), sizeof(float)),
              *y1 = calloc((size_t)tu_numel(&out), sizeof(float));
        if (!x || !y0 || !y1) exit(99);
        const float *xs[2] = {x, x};
        float *ys[2] = {y0, y1};
        int has[2];
        unsigned char *b0 = save(s[0]);
        TU_STATUS(co_forward_step_streams(ctx, s, 2, xs, ys, has, 1), CO_ERR_INVALID_ARGUMENT, "another model");
        unsigned char *b1 = save(s[0]);
        TU_CHECK(memcmp(b0, b1, co_stream_state_size(s[0])) == 0, "a refused call (another model) changed a stream");
        free(b0);
        free(b1);
        free(x);
        free(y0);
        free(y1);
    }
    co_stream_free(s[0]);
    co_stream_free(s[1]);
    co_multistream_free(ctx);
}

int main(int argc, char **argv)
{
    counter c = {0};
    co_allocator a = {count_alloc, count_free, &c};
    TU_STATUS(co_set_allocator(&a), CO_OK, "set allocator");
    for (int which = 0; which < 2 + argc - 1; which++) {
        co_model *m = NULL, *m2 = NULL;
        char what[512];
        if (which < 2) {
            tu_spec s;
            if (which == 0) tu_small_spec(&s);
            else tu_medium_spec(&s);
            snprintf(what, sizeof what, "%s model", which == 0 ? "small" : "medium");
            m = tu_load_spec(&s);
            m2 = tu_load_spec(&s);
        } else {
            snprintf(what, sizeof what, "%s", argv[which - 1]);
            TU_STATUS(co_model_load(argv[which - 1], &m), CO_OK, what);
            TU_STATUS(co_model_load(argv[which - 1], &m2), CO_OK, what);
        }
        if (!m || !m2) continue;
        check_model(what, m, 1, &c);
        check_model(what, m, 2, &c);
        check_foreign(m, m2);
        /* create: argument checks */
        co_multistream *ctx = (co_multistream *)&c;
        TU_STATUS(co_multistream_create(m, 0, 1, NULL, &ctx), CO_ERR_INVALID_ARGUMENT, "max 0");
        TU_CHECK(ctx == NULL, "create failure leaves *out NULL");
        TU_STATUS(co_multistream_create(NULL, 2, 1, NULL, &ctx), CO_ERR_INVALID_ARGUMENT, "NULL model");
        TU_STATUS(co_multistream_create(m, 2, 0, NULL, &ctx), CO_ERR_INVALID_ARGUMENT, "batch 0");
        co_multistream_free(NULL);
        co_model_free(m);
        co_model_free(m2);
    }
    TU_STATUS(co_set_allocator(NULL), CO_OK, "restore allocator");
    return tu_finish("test_multistream");
}
