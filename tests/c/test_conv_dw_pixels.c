/*
 * test_conv_dw_pixels.c — the channel-vector form of the depthwise kernels (kernels/conv_dw.h:
 * co_dw_pixels, co_dw_transpose) on every kernel set this CPU runs (AVX-512, AVX2, the dispatch):
 * against a double-precision sum for 1 .. 19 pixels (every pixel block), 1 .. 70 channels (vector
 * tails, blocks of several vectors), 0 .. 12 taps, bias or none, taps of step 0 (a padding
 * pixel); nothing written past the last pixel; each pixel bit for bit the same whatever block it
 * was summed in (one call of n pixels against n calls of one); and in the wide kernels, bit for
 * bit what co_dw_taps gives for the same sum (a cleared window, one tap a call, the bias added
 * last), which is what keeps a conv's two step forms interchangeable. Transposes exact, tails
 * included.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kernels/conv_dw.h"
#include "kernels/cpu.h"

enum { MAX_PX = 19, MAX_C = 70, MAX_TAPS = 12, GUARD = 16 };
static const float k_guard = 12345.0f;

typedef void (*pixels_fn)(CO_DW_PIXELS_ARGS);
typedef void (*taps_fn)(CO_DW_TAPS_ARGS);
typedef void (*transpose_fn)(CO_DW_TRANSPOSE_ARGS);

static float frand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static int check(const char *name, pixels_fn fn, taps_fn taps_same, unsigned seed)
{
    static float src[MAX_TAPS][MAX_PX * MAX_C], w[MAX_TAPS * MAX_C], bias[MAX_C], dst[MAX_PX * MAX_C + GUARD],
        one[MAX_C + GUARD];
    const float *sp[MAX_TAPS];
    int64_t step[MAX_TAPS];
    int fails = 0;
    for (int n = 1; n <= MAX_PX; n++)
        for (int C = 1; C <= MAX_C; C += 1 + (n % 5))
            for (int taps = 0; taps <= MAX_TAPS; taps += 1 + (C % 4))
                for (int with_bias = 0; with_bias <= 1; with_bias++) {
                    for (int t = 0; t < taps; t++) {
                        for (int i = 0; i < n * C; i++) src[t][i] = frand(&seed);
                        sp[t] = src[t];
                        step[t] = (t + n) % 5 == 0 ? 0 : C; /* some taps read one pixel for all */
                    }
                    for (int i = 0; i < taps * C; i++) w[i] = frand(&seed);
                    for (int c = 0; c < C; c++) bias[c] = frand(&seed);
                    const float *b = with_bias ? bias : NULL;
                    for (int i = 0; i < MAX_PX * MAX_C + GUARD; i++) dst[i] = k_guard;
                    fn(n, C, taps, sp, step, w, b, dst);
                    for (int i = n * C; i < MAX_PX * MAX_C + GUARD; i++)
                        if (dst[i] != k_guard && fails++ < 5) fprintf(stderr, "%s: wrote past the pixels (n %d C %d)\n", name, n, C);
                    for (int q = 0; q < n; q++) {
                        const float *s1[MAX_TAPS];
                        for (int t = 0; t < taps; t++) s1[t] = src[t] + q * step[t];
                        for (int i = 0; i < MAX_C + GUARD; i++) one[i] = k_guard;
                        fn(1, C, taps, s1, step, w, b, one);
                        if (memcmp(one, dst + q * C, (size_t)C * sizeof(float)) && fails++ < 5)
                            fprintf(stderr, "%s: n %d C %d taps %d: pixel %d differs from a call of its own\n", name, n, C, taps, q);
                        if (one[C] != k_guard && fails++ < 5) fprintf(stderr, "%s: one pixel wrote past C %d\n", name, C);
                        for (int c = 0; c < C; c++) {
                            double want = 0;
                            for (int t = 0; t < taps; t++) want += (double)w[t * C + c] * s1[t][c];
                            if (b) want += b[c];
                            const float got = dst[q * C + c];
                            if (fabs(got - want) > 1e-5 * (1 + taps) && fails++ < 5)
                                fprintf(stderr, "%s: n %d C %d taps %d pixel %d ch %d: %g, want %g\n", name, n, C, taps, q, c, got, want);
                            if (taps_same) {
                                /* the row form's window: cleared, one tap a call (accumulate), bias last */
                                float acc = 0.0f, *pa = &acc;
                                for (int t = 0; t < taps; t++) {
                                    const float *st[1] = {s1[t] + c};
                                    taps_same(1, 1, 1, st, 1, 1, w + t * C + c, 1, NULL, 1, &pa, 1);
                                }
                                const float row = acc + (b ? b[c] : 0.0f);
                                if (memcmp(&row, &got, sizeof row) && fails++ < 5)
                                    fprintf(stderr, "%s: n %d C %d taps %d pixel %d ch %d: %a, the row form %a\n", name, n, C, taps, q, c, got, row);
                            }
                        }
                    }
                }
    printf("%s: %s\n", name, fails ? "FAILED" : "ok");
    return fails;
}

static int check_transpose(const char *name, transpose_fn fn, unsigned seed)
{
    enum { R = 41, K = 37 };
    static float a[R * K], t[K * (R + 3) + GUARD];
    int fails = 0;
    for (int rows = 1; rows <= R; rows += 3)
        for (int cols = 1; cols <= K; cols += 4) {
            for (int i = 0; i < rows * cols; i++) a[i] = frand(&seed);
            for (int i = 0; i < K * (R + 3) + GUARD; i++) t[i] = k_guard;
            fn(rows, cols, a, cols, t, rows + 3); /* a padded destination row: lanes past rows untouched */
            for (int j = 0; j < cols; j++)
                for (int i = 0; i < rows + 3; i++) {
                    const float want = i < rows ? a[i * cols + j] : k_guard;
                    if (memcmp(&t[j * (rows + 3) + i], &want, sizeof want) && fails++ < 5)
                        fprintf(stderr, "%s: %d x %d: [%d][%d] wrong\n", name, rows, cols, j, i);
                }
        }
    printf("%s: %s\n", name, fails ? "FAILED" : "ok");
    return fails;
}

int main(void)
{
    int fails = check("co_dw_pixels (dispatch)", co_dw_pixels, NULL, 1);
    fails += check_transpose("co_dw_transpose (dispatch)", co_dw_transpose, 4);
#if defined(CO_GEMM_X86)
    if (co_cpu_isa() >= CO_ISA_AVX2) {
        fails += check("avx2", co_dw_pixels_avx2, co_dw_taps_avx2, 2);
        fails += check_transpose("transpose avx2", co_dw_transpose_avx2, 5);
    }
    if (co_cpu_isa() >= CO_ISA_AVX512) {
        fails += check("avx512", co_dw_pixels_avx512, co_dw_taps_avx512, 3);
        fails += check_transpose("transpose avx512", co_dw_transpose_avx512, 6);
    }
#endif
    return fails ? 1 : 0;
}
