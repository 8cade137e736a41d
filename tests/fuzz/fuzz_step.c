/*
 * fuzz_step.c — libFuzzer target: any bytes as input frames (raw float32: NaN, inf, denormals,
 * huge values). Every frame is stepped (peeks and real steps alternating), the whole input is also
 * run as one clip through forward_steps and forward; nothing may fault (UBSan checks float to
 * integer conversions and the like), and a peek must equal the step that follows it.
 */
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    co_model *m = fuzz_model();
    co_stream *s = NULL;
    if (co_stream_create(m, 1, &s) != CO_OK) abort();
    co_shape in, out;
    co_stream_input_shape(s, &in);
    co_stream_output_shape(s, &out);
    const size_t nin = fuzz_numel(&in), nout = fuzz_numel(&out);
    const size_t frames = size / (nin * sizeof(float));
    if (frames == 0 || frames > 64) {
        co_stream_free(s);
        return 0;
    }
    float *x = malloc(frames * nin * sizeof *x), *y = calloc(nout, sizeof *y), *peek = calloc(nout, sizeof *peek);
    if (!x || !y || !peek) abort();
    memcpy(x, data, frames * nin * sizeof *x);
    for (size_t t = 0; t < frames; t++) {
        int has_peek = 0, has = 0;
        if (co_forward_step(s, x + t * nin, peek, &has_peek, 0) != CO_OK) abort();
        if (co_forward_step(s, x + t * nin, y, &has, 1) != CO_OK) abort();
        if (has != has_peek || (has && memcmp(y, peek, nout * sizeof *y) != 0)) abort(); /* same computation */
    }
    /* the frames as one clip (B, C, T, *S): frame-major input transposed into place */
    co_shape clip = {in.ndim + 1, {0}};
    clip.dims[0] = in.dims[0];
    clip.dims[1] = in.dims[1];
    clip.dims[2] = (int64_t)frames;
    for (int i = 2; i < in.ndim; i++) clip.dims[i + 1] = in.dims[i];
    const size_t inner = nin / (size_t)(in.dims[0] * in.dims[1]);
    float *xc = malloc(frames * nin * sizeof *xc);
    if (!xc) abort();
    for (size_t t = 0; t < frames; t++)
        for (size_t r = 0; r < (size_t)(in.dims[0] * in.dims[1]); r++)
            memcpy(xc + (r * frames + t) * inner, x + t * nin + r * inner, inner * sizeof *xc);
    co_shape fo;
    if (co_forward_shape(m, &clip, &fo) == CO_OK) {
        float *yc = malloc(fuzz_numel(&fo) * sizeof *yc);
        if (!yc) abort();
        co_forward(m, &clip, xc, yc, fuzz_numel(&fo));
        free(yc);
    }
    co_stream_clean(s);
    const int64_t cap = co_steps_max_output(s, (int64_t)frames, 1);
    if (cap > 0) {
        float *ys = malloc((size_t)cap * nout * sizeof *ys);
        int64_t got = 0;
        if (!ys) abort();
        co_forward_steps(s, xc, (int64_t)frames, ys, cap, &got, 1, 1);
        free(ys);
    }
    free(xc);
    free(x);
    free(y);
    free(peek);
    co_stream_free(s);
    return 0;
}
