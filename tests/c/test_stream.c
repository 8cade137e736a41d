/*
 * test_stream.c — stream semantics, on generated models and on model files given as arguments:
 *   - update_state = 0 is a pure peek: same output as the real step, state bit-identical;
 *   - save / restore mid-stream continues bit-identically (same stream and a fresh one);
 *   - two streams of one model do not interfere (interleaved == separate);
 *   - co_stream_clean == a fresh stream;
 *   - a state from another model (other weights) or another batch is rejected with
 *     CO_ERR_STATE and leaves the stream unchanged;
 *   - corrupted states (bad header, wrong size, flipped ring indices, random bytes) are
 *     rejected or harmless, never a crash;
 *   - from a clean state, co_forward_steps(pad_end = 1) == co_forward (the whole clip);
 *   - steps then co_stream_finish == co_forward_steps(pad_end = 1), also across a restore, and
 *     finish leaves the stream clean.
 *
 * usage: test_stream [MODEL.safetensors ...]
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

enum { T = 14 };

typedef struct run {
    float *y;     /* outputs, frame after frame */
    int n;        /* output frames */
} run;

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) exit(99);
    return p;
}

/* Steps frames [from, to) of x; appends outputs to r. */
static void step_range(co_stream *s, const float *x, int64_t in_n, int64_t out_n, int from, int to, run *r)
{
    for (int f = from; f < to; f++) {
        int has = 0;
        TU_STATUS(co_forward_step(s, x + f * in_n, r->y + r->n * out_n, &has, 1), CO_OK, "step");
        if (has) r->n++;
    }
}

static int same_run(const run *a, const run *b, int64_t out_n)
{
    return a->n == b->n && memcmp(a->y, b->y, (size_t)(a->n * out_n) * sizeof(float)) == 0;
}

static unsigned char *save(co_stream *s, size_t *n)
{
    *n = co_stream_state_size(s);
    unsigned char *buf = xmalloc(*n);
    size_t written = 0;
    TU_STATUS(co_stream_save(s, buf, *n, &written), CO_OK, "save");
    TU_CHECK(written == *n, "save wrote %zu of %zu bytes", written, *n);
    return buf;
}

/* The stream's state equals `ref` (bit for bit). */
static int state_is(co_stream *s, const unsigned char *ref, size_t n)
{
    size_t m = 0;
    unsigned char *now = save(s, &m);
    int same = m == n && memcmp(now, ref, n) == 0;
    free(now);
    return same;
}

static void check_model(const char *what, co_model *m, co_model *other_weights, int ring_indices)
{
    co_stream *s = NULL, *s2 = NULL;
    TU_STATUS(co_stream_create(m, 2, &s), CO_OK, what);
    TU_STATUS(co_stream_create(m, 2, &s2), CO_OK, what);
    if (!s || !s2) {
        co_stream_free(s);
        co_stream_free(s2);
        return;
    }
    co_shape in, out;
    co_stream_input_shape(s, &in);
    co_stream_output_shape(s, &out);
    const int64_t in_n = tu_numel(&in), out_n = tu_numel(&out);
    float *x = xmalloc((size_t)(in_n * T) * sizeof(float)), *x2 = xmalloc((size_t)(in_n * T) * sizeof(float));
    tu_fill(x, in_n * T, 11);
    tu_fill(x2, in_n * T, 12);
    run ref = {xmalloc((size_t)(out_n * T) * sizeof(float)), 0};
    run got = {xmalloc((size_t)(out_n * T) * sizeof(float)), 0};
    run ref2 = {xmalloc((size_t)(out_n * T) * sizeof(float)), 0};
    run got2 = {xmalloc((size_t)(out_n * T) * sizeof(float)), 0};
    float *y1 = xmalloc((size_t)out_n * sizeof(float)), *y2 = xmalloc((size_t)out_n * sizeof(float));

    /* reference runs, each from a fresh state */
    step_range(s, x, in_n, out_n, 0, T, &ref);
    TU_CHECK(ref.n > 0, "%s: no output in %d frames", what, T);
    step_range(s2, x2, in_n, out_n, 0, T, &ref2);

    /* co_stream_clean == fresh */
    TU_STATUS(co_stream_clean(s), CO_OK, "clean");
    got.n = 0;
    step_range(s, x, in_n, out_n, 0, T, &got);
    TU_CHECK(same_run(&ref, &got, out_n), "%s: after co_stream_clean the outputs differ from a fresh stream", what);

    /* peeks: same output as the real step, state untouched */
    TU_STATUS(co_stream_clean(s), CO_OK, "clean");
    got.n = 0;
    int64_t cap = co_steps_max_output(s, T, 1);
    float *yc = xmalloc((size_t)(out_n * (cap + 1)) * sizeof(float));
    for (int f = 0; f < T; f++) {
        size_t n0 = 0;
        unsigned char *st0 = save(s, &n0);
        int has_peek = 0, has = 0;
        TU_STATUS(co_forward_step(s, x + f * in_n, y1, &has_peek, 0), CO_OK, "peek");
        TU_CHECK(state_is(s, st0, n0), "%s: frame %d: co_forward_step(update_state=0) changed the state", what, f);
        int64_t t_out = 0;
        for (int pad = 0; pad < 2; pad++) {
            TU_STATUS(co_forward_steps(s, x, T, yc, cap, &t_out, pad, 0), CO_OK, "steps peek");
            TU_CHECK(state_is(s, st0, n0), "%s: frame %d: co_forward_steps(pad_end=%d, update_state=0) changed the state", what,
                     f, pad);
        }
        TU_STATUS(co_forward_steps(s, x, T, yc, cap, &t_out, 1, 1), CO_OK, "steps pad_end");
        TU_STATUS(co_stream_restore(s, st0, n0), CO_OK, "restore");
        TU_STATUS(co_forward_step(s, x + f * in_n, y2, &has, 1), CO_OK, "step");
        TU_CHECK(has == has_peek, "%s: frame %d: peek has_output %d, step %d", what, f, has_peek, has);
        if (has && has_peek)
            TU_CHECK(memcmp(y1, y2, (size_t)out_n * sizeof(float)) == 0, "%s: frame %d: peek output differs from the step", what,
                     f);
        if (has) memcpy(got.y + (got.n++) * out_n, y2, (size_t)out_n * sizeof(float));
        free(st0);
    }
    TU_CHECK(same_run(&ref, &got, out_n), "%s: peeks disturbed the stream's outputs", what);

    /* save / restore mid-stream: same stream, and another stream */
    for (int cut = 0; cut <= T; cut += 3) {
        TU_STATUS(co_stream_clean(s), CO_OK, "clean");
        got.n = 0;
        step_range(s, x, in_n, out_n, 0, cut, &got);
        size_t n0 = 0;
        unsigned char *mid = save(s, &n0);
        int n_mid = got.n;
        step_range(s, x, in_n, out_n, cut, T, &got);
        TU_CHECK(same_run(&ref, &got, out_n), "%s: outputs differ after saving at frame %d", what, cut);
        got.n = n_mid;
        TU_STATUS(co_stream_restore(s, mid, n0), CO_OK, "restore");
        step_range(s, x, in_n, out_n, cut, T, &got);
        TU_CHECK(same_run(&ref, &got, out_n), "%s: restore at frame %d does not continue bit-identically", what, cut);
        got.n = n_mid;
        TU_STATUS(co_stream_restore(s2, mid, n0), CO_OK, "restore into another stream");
        step_range(s2, x, in_n, out_n, cut, T, &got);
        TU_CHECK(same_run(&ref, &got, out_n), "%s: restore at frame %d into a second stream differs", what, cut);
        free(mid);
    }

    /* end of input (co_stream_finish): after single steps, cut at every frame and restored into
     * the other stream, the steps' outputs then the flushed tail are co_forward_steps(pad_end = 1)
     * of the whole clip; the stream is clean afterwards; a too-small buffer or NULL arguments are
     * refused and leave the stream as it was */
    {
        const int64_t tail_cap = co_stream_finish_max_output(s);
        TU_CHECK(tail_cap == co_steps_max_output(s, 0, CO_PAD_END), "%s: finish capacity %lld", what, (long long)tail_cap);
        float *padded = xmalloc((size_t)(out_n * (cap + 1)) * sizeof(float));
        float *tail = xmalloc((size_t)(out_n * (tail_cap + 1)) * sizeof(float));
        int64_t n_padded = 0, n_tail = 0;
        TU_STATUS(co_stream_clean(s), CO_OK, "clean");
        size_t n_clean = 0;
        unsigned char *clean = save(s, &n_clean);
        /* the same frames as a clip (B, C, T, *S) */
        const int64_t irows = in.dims[0] * in.dims[1], iS = in_n / irows;
        float *xclip = xmalloc((size_t)(in_n * T) * sizeof(float));
        for (int64_t f = 0; f < T; f++)
            for (int64_t r = 0; r < irows; r++) memcpy(xclip + (r * T + f) * iS, x + f * in_n + r * iS, (size_t)iS * sizeof(float));
        TU_STATUS(co_forward_steps(s, xclip, T, padded, cap, &n_padded, CO_PAD_END, CO_UPDATE_STATE), CO_OK, "padded steps");
        free(xclip);
        const int64_t orows = out.dims[0] * out.dims[1], oS = out_n / orows;
        for (int cut = 0; cut <= T; cut += 5) {
            TU_STATUS(co_stream_clean(s), CO_OK, "clean");
            got.n = 0;
            step_range(s, x, in_n, out_n, 0, cut, &got);
            size_t n0 = 0;
            unsigned char *mid = save(s, &n0);
            TU_STATUS(co_stream_restore(s2, mid, n0), CO_OK, "restore into another stream");
            step_range(s2, x, in_n, out_n, cut, T, &got);
            if (tail_cap > 0) {
                TU_STATUS(co_stream_finish(s2, tail, tail_cap - 1, &n_tail), CO_ERR_BUFFER_TOO_SMALL, "finish, small buffer");
                TU_STATUS(co_stream_finish(s2, NULL, tail_cap, &n_tail), CO_ERR_INVALID_ARGUMENT, "finish, NULL y");
            }
            TU_STATUS(co_stream_finish(s2, tail, tail_cap, NULL), CO_ERR_INVALID_ARGUMENT, "finish, NULL t_out");
            TU_STATUS(co_stream_finish(s2, tail, tail_cap, &n_tail), CO_OK, "finish");
            TU_CHECK(got.n + n_tail == n_padded, "%s: cut %d: %d steps' outputs + %lld flushed, the padded clip has %lld", what,
                     cut, got.n, (long long)n_tail, (long long)n_padded);
            /* frame-major got.y, (B, C', n, *S') clips: compare frame by frame, row by row */
            int same = got.n + n_tail == n_padded;
            for (int64_t f = 0; same && f < n_padded; f++)
                for (int64_t r = 0; same && r < orows; r++) {
                    const float *want = padded + (r * n_padded + f) * oS;
                    const float *have = f < got.n ? got.y + f * out_n + r * oS : tail + (r * n_tail + (f - got.n)) * oS;
                    same = memcmp(want, have, (size_t)oS * sizeof(float)) == 0;
                }
            TU_CHECK(same, "%s: cut %d: steps + finish differ from co_forward_steps(pad_end = 1)", what, cut);
            TU_CHECK(state_is(s2, clean, n_clean), "%s: cut %d: co_stream_finish did not leave the stream clean", what, cut);
            free(mid);
        }
        TU_STATUS(co_stream_finish(NULL, tail, tail_cap, &n_tail), CO_ERR_INVALID_ARGUMENT, "finish, NULL stream");
        TU_CHECK(co_stream_finish_max_output(NULL) == 0, "finish capacity of NULL");
        TU_STATUS(co_stream_finish(s2, tail, tail_cap, &n_tail), CO_OK, "finish a clean stream");
        TU_CHECK(n_tail == 0, "%s: finishing a clean stream emitted %lld frames", what, (long long)n_tail);
        free(clean);
        free(padded);
        free(tail);
    }

    /* two streams, interleaved == separate */
    TU_STATUS(co_stream_clean(s), CO_OK, "clean");
    TU_STATUS(co_stream_clean(s2), CO_OK, "clean");
    got.n = got2.n = 0;
    for (int f = 0; f < T; f++) {
        step_range(s, x, in_n, out_n, f, f + 1, &got);
        step_range(s2, x2, in_n, out_n, f, f + 1, &got2);
    }
    TU_CHECK(same_run(&ref, &got, out_n) && same_run(&ref2, &got2, out_n), "%s: interleaved streams interfere", what);

    /* states of another model / batch are refused; the stream is left as it was */
    size_t n_before = 0;
    unsigned char *before = save(s, &n_before);
    if (other_weights) {
        co_stream *o = NULL;
        TU_STATUS(co_stream_create(other_weights, 2, &o), CO_OK, "create on the other model");
        if (o) {
            run sink = {xmalloc((size_t)(out_n * 3) * sizeof(float)), 0};
            step_range(o, x, in_n, out_n, 0, 3, &sink);
            free(sink.y);
            size_t n_o = 0;
            unsigned char *so = save(o, &n_o);
            TU_CHECK(n_o == n_before, "%s: the other model's state has another size", what);
            TU_STATUS(co_stream_restore(s, so, n_o), CO_ERR_STATE, "state of a model with other weights");
            TU_CHECK(co_last_error()[0] != 0, "empty message");
            TU_CHECK(state_is(s, before, n_before), "%s: a refused restore changed the stream", what);
            free(so);
            co_stream_free(o);
        }
    }
    co_stream *b1 = NULL;
    TU_STATUS(co_stream_create(m, 1, &b1), CO_OK, "create batch 1");
    if (b1) {
        size_t n_b = 0;
        unsigned char *sb = save(b1, &n_b);
        TU_STATUS(co_stream_restore(s, sb, n_b), CO_ERR_STATE, "state of another batch size");
        TU_CHECK(state_is(s, before, n_before), "%s: a refused restore changed the stream", what);
        free(sb);
        co_stream_free(b1);
    }

    /* corrupted states */
    unsigned char *bad = xmalloc(n_before + 16);
    memcpy(bad, before, n_before);
    bad[0] ^= 0x55;
    TU_STATUS(co_stream_restore(s, bad, n_before), CO_ERR_STATE, "bad magic");
    memcpy(bad, before, n_before);
    bad[7] = bad[7] == '2' ? '1' : '2'; /* another version of the state format */
    TU_STATUS(co_stream_restore(s, bad, n_before), CO_ERR_STATE, "state of another format version");
    TU_CHECK(strstr(co_last_error(), "format") && strstr(co_last_error(), "save it again"),
             "%s: the message names the format version: %s", what, co_last_error());
    TU_CHECK(state_is(s, before, n_before), "%s: a refused restore changed the stream", what);
    memcpy(bad, before, n_before);
    bad[9] ^= 0x01; /* inside the fingerprint */
    TU_STATUS(co_stream_restore(s, bad, n_before), CO_ERR_STATE, "bad fingerprint");
    memcpy(bad, before, n_before);
    TU_STATUS(co_stream_restore(s, bad, n_before - 1), CO_ERR_STATE, "one byte short");
    memset(bad + n_before, 0, 16);
    TU_STATUS(co_stream_restore(s, bad, n_before + 16), CO_ERR_STATE, "16 bytes too long");
    TU_STATUS(co_stream_restore(s, bad, 10), CO_ERR_STATE, "shorter than a header");
    TU_STATUS(co_stream_restore(s, bad, 0), CO_ERR_STATE, "empty");
    TU_CHECK(state_is(s, before, n_before), "%s: a refused restore changed the stream", what);
    /* random bytes in the body: refused, or accepted and then harmless to step (ASan watches) */
    co_plan_info pi;
    TU_STATUS(co_model_plan_info(m, 2, NULL, &pi), CO_OK, "plan info");
    const size_t header = n_before - pi.state_bytes;
    TU_CHECK(pi.state_bytes <= n_before, "%s: plan state_bytes %zu > saved size %zu", what, pi.state_bytes, n_before);
    uint32_t r = 77;
    int refused = 0, accepted = 0;
    for (int trial = 0; trial < 300 && pi.state_bytes >= 8; trial++) {
        memcpy(bad, before, n_before);
        int flips = 1 + trial % 4;
        for (int k = 0; k < flips; k++) {
            r = r * 1664525u + 1013904223u;
            size_t at = header + (r >> 4) % pi.state_bytes;
            /* bias towards the first words of the op states, where ring indices live */
            if (trial % 2 == 0) at = header + ((r >> 4) % 8) * 8 % pi.state_bytes;
            bad[at] ^= (unsigned char)(1u << (r % 8)) | 0x80;
        }
        co_status st = co_stream_restore(s, bad, n_before);
        if (st == CO_OK) {
            accepted++;
            run sink = {y1, 0};
            for (int f = 0; f < 4; f++) {
                sink.n = 0;
                step_range(s, x, in_n, out_n, f, f + 1, &sink);
            }
            TU_STATUS(co_stream_restore(s, before, n_before), CO_OK, "restore the good state");
        } else {
            refused++;
            TU_CHECK(st == CO_ERR_STATE, "%s: corrupted state: %s, expected CO_ERR_STATE", what, co_status_name(st));
            TU_CHECK(state_is(s, before, n_before), "%s: a refused corrupted state changed the stream", what);
        }
    }
    if (ring_indices) {
        /* the small model's first op is the Conv1d, whose state starts with its ring position,
         * countdown and started flag (int64 each): out-of-range values must be refused */
        static const int64_t k_bad[][2] = {{0, 3}, {0, -1}, {0, (int64_t)1 << 40}, {0, INT64_MIN},
                                           {1, -5}, {1, (int64_t)1 << 40}, {2, 2}, {2, -1}};
        for (size_t k = 0; k < sizeof k_bad / sizeof k_bad[0]; k++) {
            memcpy(bad, before, n_before);
            memcpy(bad + header + 8 * (size_t)k_bad[k][0], &k_bad[k][1], 8);
            TU_STATUS(co_stream_restore(s, bad, n_before), CO_ERR_STATE, "ring index out of range");
            TU_CHECK(state_is(s, before, n_before), "%s: a refused ring index changed the stream", what);
        }
    }
    printf("%s: corrupted states: %d refused, %d accepted (and stepped safely)\n", what, refused, accepted);
    free(bad);
    free(before);

    /* pad_end from a clean state == co_forward of the whole clip */
    co_shape clip = in;
    clip.ndim = in.ndim + 1;
    for (int i = in.ndim; i > 2; i--) clip.dims[i] = in.dims[i - 1];
    clip.dims[2] = T;
    float *xc = xmalloc((size_t)(in_n * T) * sizeof(float)); /* (B, C, T, *S) from the frames */
    const int64_t rows = in.dims[0] * in.dims[1], S = in_n / rows;
    for (int f = 0; f < T; f++)
        for (int64_t rr = 0; rr < rows; rr++) memcpy(xc + (rr * T + f) * S, x + f * in_n + rr * S, (size_t)S * sizeof(float));
    co_shape yshape;
    co_status st = co_forward_shape(m, &clip, &yshape);
    TU_STATUS(st, CO_OK, "co_forward_shape");
    if (st == CO_OK) {
        int64_t yn = tu_numel(&yshape);
        float *yf = xmalloc((size_t)yn * sizeof(float));
        TU_STATUS(co_forward(m, &clip, xc, yf, (size_t)yn), CO_OK, "co_forward");
        if (yn > 0) TU_STATUS(co_forward(m, &clip, xc, yf, (size_t)yn - 1), CO_ERR_BUFFER_TOO_SMALL, "co_forward, small y");
        TU_STATUS(co_stream_clean(s), CO_OK, "clean");
        int64_t t_out = 0;
        TU_STATUS(co_forward_steps(s, xc, T, yc, cap, &t_out, 1, 1), CO_OK, "steps pad_end");
        TU_CHECK(t_out == yshape.dims[2], "%s: forward_steps(pad_end) gave %lld frames, forward %lld", what, (long long)t_out,
                 (long long)yshape.dims[2]);
        if (t_out == yshape.dims[2]) {
            double maxd = 0;
            for (int64_t i = 0; i < yn; i++) {
                double d = fabs((double)yc[i] - yf[i]);
                if (!(d <= maxd)) maxd = d;
            }
            TU_CHECK(maxd < 1e-4, "%s: forward_steps(pad_end) vs forward: max |diff| %g", what, maxd);
        }
        TU_STATUS(co_forward_steps(s, xc, T, yc, cap - 1, &t_out, 1, 1), CO_ERR_BUFFER_TOO_SMALL, "steps, small y");
        free(yf);
    }
    /* argument checks */
    int has = 0;
    TU_STATUS(co_forward_step(s, NULL, y1, &has, 1), CO_ERR_INVALID_ARGUMENT, "NULL x");
    TU_STATUS(co_forward_step(NULL, x, y1, &has, 1), CO_ERR_INVALID_ARGUMENT, "NULL stream");
    TU_STATUS(co_stream_save(s, y1, 3, NULL), CO_ERR_BUFFER_TOO_SMALL, "save into 3 bytes");
    co_stream *bad_stream = (co_stream *)&bad_stream;
    TU_STATUS(co_stream_create(m, 0, &bad_stream), CO_ERR_INVALID_ARGUMENT, "batch 0");
    TU_CHECK(bad_stream == NULL, "stream not NULL after a failed create");
    co_shape wrong = in;
    wrong.ndim = in.ndim - 1;
    wrong.dims[0] = in.dims[1] + 1; /* another channel count */
    for (int i = 1; i < wrong.ndim; i++) wrong.dims[i] = in.dims[i + 1];
    TU_STATUS(co_stream_create_shaped(m, 1, &wrong, &bad_stream), CO_ERR_SHAPE, "wrong channel count");

    free(xc);
    free(yc);
    free(x);
    free(x2);
    free(ref.y);
    free(got.y);
    free(ref2.y);
    free(got2.y);
    free(y1);
    free(y2);
    co_stream_free(s);
    co_stream_free(s2);
}

int main(int argc, char **argv)
{
    for (int which = 0; which < 2; which++) {
        tu_spec s;
        if (which == 0) tu_small_spec(&s);
        else tu_medium_spec(&s);
        co_model *m = tu_load_spec(&s);
        s.weight_scale = 0.5f; /* same network, other weights */
        co_model *o = tu_load_spec(&s);
        if (m) check_model(which ? "medium model" : "small model", m, o, which == 0);
        co_model_free(m);
        co_model_free(o);
    }
    for (int i = 1; i < argc; i++) {
        co_model *m = NULL;
        TU_STATUS(co_model_load(argv[i], &m), CO_OK, argv[i]);
        if (m) check_model(argv[i], m, NULL, 0);
        co_model_free(m);
    }
    return tu_finish("test_stream");
}
