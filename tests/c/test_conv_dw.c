/*
 * test_conv_dw.c — the depthwise tap kernels (kernels/conv_dw.h) from the inside: every kernel
 * set this CPU runs (AVX-512, AVX2, and co_dw_taps' dispatch) against a double-precision sum,
 * on rows with vector tails (n = 1 .. 70), 0 .. 11 taps and 1 .. 9 outputs per call, accumulate
 * on and off; floats past each row left untouched; and one call for n outputs giving, bit for
 * bit, what n calls of one output give (so grouping a step's temporal taps changes no value).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/conv_dw.h"
#include "kernels/cpu.h"

enum { MAX_OUT = 9, MAX_TAPS = 11, ROWS = 3, LD = 80, GUARD = 8 };
static const float k_guard = 12345.0f;

typedef void (*taps_fn)(CO_DW_TAPS_ARGS);

static float frand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static int check(const char *name, taps_fn fn, unsigned seed)
{
    static float src[MAX_TAPS][ROWS * LD + GUARD], dst[MAX_OUT][ROWS * LD + GUARD], one[MAX_OUT][ROWS * LD + GUARD];
    float w[MAX_OUT * MAX_TAPS], init[MAX_OUT];
    const float *sp[MAX_TAPS];
    float *dp[MAX_OUT];
    int fails = 0;
    for (int n = 1; n <= 70; n++)
        for (int taps = 0; taps <= MAX_TAPS; taps += 1 + (n % 3))
            for (int no = 1; no <= MAX_OUT; no += 1 + (n % 2))
                for (int acc = 0; acc <= 1; acc++) {
                    for (int t = 0; t < taps; t++) {
                        for (int i = 0; i < ROWS * LD + GUARD; i++) src[t][i] = frand(&seed);
                        sp[t] = src[t];
                    }
                    for (int i = 0; i < no * MAX_TAPS; i++) w[i] = frand(&seed);
                    for (int o = 0; o < no; o++) {
                        init[o] = frand(&seed);
                        for (int i = 0; i < ROWS * LD + GUARD; i++) one[o][i] = dst[o][i] = i % LD < n ? frand(&seed) : k_guard;
                        dp[o] = dst[o];
                    }
                    float start[MAX_OUT][ROWS * LD + GUARD];
                    memcpy(start, dst, sizeof start);
                    fn(ROWS, n, taps, sp, LD, no, w, MAX_TAPS, init, acc, dp, LD);
                    for (int o = 0; o < no; o++) {
                        float *d1[1] = {one[o]};
                        fn(ROWS, n, taps, sp, LD, 1, w + o * MAX_TAPS, MAX_TAPS, init + o, acc, d1, LD);
                        if (memcmp(one[o], dst[o], sizeof one[o])) {
                            if (fails++ < 5) fprintf(stderr, "%s: n %d taps %d outputs %d: output %d differs from a call of its own\n", name, n, taps, no, o);
                        }
                        for (int r = 0; r < ROWS; r++)
                            for (int i = 0; i < LD; i++) {
                                const float got = dst[o][r * LD + i];
                                if (i >= n) {
                                    if (got != k_guard && fails++ < 5) fprintf(stderr, "%s: wrote past the row (n %d)\n", name, n);
                                    continue;
                                }
                                double want = acc ? start[o][r * LD + i] : init[o];
                                for (int t = 0; t < taps; t++) want += (double)w[o * MAX_TAPS + t] * src[t][r * LD + i];
                                if (fabs(got - want) > 1e-5 * (1 + taps) && fails++ < 5)
                                    fprintf(stderr, "%s: n %d taps %d out %d row %d lane %d: %g, want %g\n", name, n, taps, o, r, i, got, want);
                            }
                    }
                }
    printf("%s: %s\n", name, fails ? "FAILED" : "ok");
    return fails;
}

int main(void)
{
    int fails = check("co_dw_taps (dispatch)", co_dw_taps, 1);
#if defined(CO_GEMM_X86)
    if (co_cpu_isa() >= CO_ISA_AVX2) fails += check("avx2", co_dw_taps_avx2, 2);
    if (co_cpu_isa() >= CO_ISA_AVX512) fails += check("avx512", co_dw_taps_avx512, 3);
#endif
    return fails ? 1 : 0;
}
