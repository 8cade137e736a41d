/*
 * fuzz_npy.c — libFuzzer target: any bytes as a .npy file for the CLI's reader. Parsing must fail
 * cleanly or give an array whose shape matches its data.
 */
#include <stdint.h>
#include <stdlib.h>

#include "cli/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    npy_array a;
    char err[256];
    if (npy_parse_f32(data, size, &a, err, sizeof err) == 0) {
        int64_t n = 1;
        for (int i = 0; i < a.ndim; i++) n *= a.shape[i];
        volatile float sink = 0.0f;
        for (int64_t i = 0; i < n; i++) sink += a.data[i]; /* ASan checks the data is that long */
        (void)sink;
        npy_free(&a);
    }
    return 0;
}
