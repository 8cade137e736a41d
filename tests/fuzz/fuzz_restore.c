/*
 * fuzz_restore.c — libFuzzer target: any bytes as a saved stream state. co_stream_restore must
 * accept it or refuse it leaving the stream bit-identical (its saved state unchanged), and the
 * stream must step on without fault either way. The first byte picks how many frames the stream
 * had stepped before (so restores meet every phase of the rings).
 */
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    co_model *m = fuzz_model();
    co_stream *s = NULL;
    if (co_stream_create(m, 1, &s) != CO_OK) abort();
    co_shape in, out;
    co_stream_input_shape(s, &in);
    co_stream_output_shape(s, &out);
    const size_t nin = fuzz_numel(&in), nout = fuzz_numel(&out), n_state = co_stream_state_size(s);
    float *x = calloc(nin, sizeof *x), *y = calloc(nout, sizeof *y);
    uint8_t *before = malloc(n_state), *after = malloc(n_state);
    if (!x || !y || !before || !after) abort();
    int has;
    for (int t = 0; t < data[0] % 16; t++) {
        x[t % nin] = (float)t;
        if (co_forward_step(s, x, y, &has, 1) != CO_OK) abort();
    }
    size_t w1 = 0, w2 = 0;
    if (co_stream_save(s, before, n_state, &w1) != CO_OK) abort();
    if (co_stream_restore(s, data + 1, size - 1) != CO_OK) {
        if (co_stream_save(s, after, n_state, &w2) != CO_OK || w1 != w2 || memcmp(before, after, w1) != 0)
            abort(); /* a refused restore changed the stream */
    }
    for (int t = 0; t < 3; t++)
        if (co_forward_step(s, x, y, &has, 1) != CO_OK) abort();
    free(x);
    free(y);
    free(before);
    free(after);
    co_stream_free(s);
    return 0;
}
