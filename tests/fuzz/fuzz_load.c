/*
 * fuzz_load.c — libFuzzer target: any bytes as a model file. Loading must fail cleanly or
 * succeed; a loaded model with a frame shape is also streamed a few frames and its state
 * saved and restored. Build: cmake -DCO_FUZZ=ON with CC=clang; run: ./fuzz_load corpus/
 */
#include <continual.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    co_model *m = NULL;
    if (co_model_load_memory(data, size, &m) != CO_OK) return 0;
    co_stream *s = NULL;
    co_plan_info info;
    if (co_model_plan_info(m, 1, NULL, &info) == CO_OK && info.arena_bytes < (64u << 20) &&
        co_stream_create(m, 1, &s) == CO_OK) {
        co_shape in, out;
        co_stream_input_shape(s, &in);
        co_stream_output_shape(s, &out);
        size_t nin = 1, nout = 1;
        for (int i = 0; i < in.ndim; i++) nin *= (size_t)in.dims[i];
        for (int i = 0; i < out.ndim; i++) nout *= (size_t)out.dims[i];
        float *x = calloc(nin, sizeof *x), *y = calloc(nout, sizeof *y);
        int has;
        for (int t = 0; x && y && t < 4; t++) {
            x[0] = (float)t;
            co_forward_step(s, x, y, &has, t & 1);
        }
        size_t n = co_stream_state_size(s), w = 0;
        void *buf = malloc(n);
        if (buf && co_stream_save(s, buf, n, &w) == CO_OK) co_stream_restore(s, buf, w);
        free(buf);
        free(x);
        free(y);
        co_stream_free(s);
    }
    co_model_free(m);
    return 0;
}
