/*
 * test_pointwise_isa.c — the sigmoid and SiLU loops (kernels/pointwise_exp.h) built for every
 * kernel set this CPU runs give the bits of the portable loop, on random values, every 65537th
 * float bit pattern (denormals, huge values, inf and NaN among them) and lengths with vector
 * tails, as does the library's dispatch (co_pointwise_run); and the portable loop is within a
 * few ulp of a double-precision sigmoid. SiLU in product form (CO_PW_SILU, a = 1: a traced
 * x * sigmoid(x) folded into one op) gives, on every kernel set, the bits of the sigmoid loop
 * followed by one float product, which is what the unfolded graph computes.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu.h"
#include "kernels/pointwise.h"
#include "kernels/pointwise_exp.h"

typedef void (*loop_fn)(const float *x, float *y, int64_t n);

enum { N_VALUES = 65536 + 4096, PATTERN_STEP = 65537 };

static float values[N_VALUES], want[N_VALUES], got[N_VALUES + 1];

static void fill(void)
{
    unsigned s = 12345u;
    int64_t i = 0;
    for (uint64_t bits = 0; bits <= 0xffffffffu && i < 65536; bits += PATTERN_STEP) {
        const uint32_t b = (uint32_t)bits;
        memcpy(&values[i++], &b, sizeof b);
    }
    for (; i < N_VALUES; i++) {
        s = s * 1103515245u + 12345u;
        values[i] = ((float)((s >> 8) & 0xffff) / 32768.0f - 1.0f) * 120.0f;
    }
}

static int same_bits(float a, float b) { return memcmp(&a, &b, sizeof a) == 0 || (a != a && b != b); }

static int check(const char *name, loop_fn fn, loop_fn portable)
{
    int fails = 0;
    portable(values, want, N_VALUES);
    for (int64_t n = 1; n <= 70; n++) { /* tails: lengths around the vector widths */
        got[n] = 7.0f;
        fn(values + n, got, n);
        for (int64_t i = 0; i < n; i++)
            if (!same_bits(got[i], want[n + i]) && fails++ < 5)
                fprintf(stderr, "%s: n=%lld element %lld: %a, portable %a\n", name, (long long)n, (long long)i,
                        (double)got[i], (double)want[n + i]);
        if (got[n] != 7.0f && fails++ < 5) fprintf(stderr, "%s: n=%lld wrote past the end\n", name, (long long)n);
    }
    fn(values, got, N_VALUES);
    for (int64_t i = 0; i < N_VALUES; i++)
        if (!same_bits(got[i], want[i]) && fails++ < 5)
            fprintf(stderr, "%s: x=%a: %a, portable %a\n", name, (double)values[i], (double)got[i], (double)want[i]);
    return fails;
}

/* co_pointwise_run: the dispatch the library takes (the widest set, or the portable loop) */
static void run_sigmoid(const float *x, float *y, int64_t n)
{
    const co_pointwise pw = {CO_PW_SIGMOID, 0.0f, 0.0f, 0.0f};
    co_pointwise_run(&pw, x, y, n);
}

static void run_silu(const float *x, float *y, int64_t n)
{
    const co_pointwise pw = {CO_PW_SILU, 0.0f, 0.0f, 0.0f};
    co_pointwise_run(&pw, x, y, n);
}

/* SiLU in product form through the dispatch, and the unfolded graph: sigmoid, then x * s */
static void run_swish(const float *x, float *y, int64_t n)
{
    const co_pointwise pw = {CO_PW_SILU, 1.0f, 0.0f, 0.0f};
    co_pointwise_run(&pw, x, y, n);
}

static void sigmoid_then_multiply(const float *x, float *y, int64_t n)
{
    co_sigmoid_loop(x, y, n);
    for (int64_t i = 0; i < n; i++) {
        volatile float s = y[i]; /* one rounded product, whatever the compiler would contract */
        y[i] = x[i] * s;
    }
}

static int check_accuracy(void)
{
    int fails = 0;
    co_sigmoid_loop(values, want, N_VALUES);
    for (int64_t i = 0; i < N_VALUES; i++) {
        const double x = values[i], exact = 1.0 / (1.0 + exp(-x));
        if (x != x) {
            if (want[i] == want[i] && fails++ < 5) fprintf(stderr, "sigmoid(NaN) = %a\n", (double)want[i]);
            continue;
        }
        if (exact < 1e-37) continue; /* denormal results: absolute error only */
        if (fabs(want[i] - exact) > 4.0 * 0x1p-24 * exact && fails++ < 5)
            fprintf(stderr, "sigmoid(%a) = %a, exact %a\n", x, (double)want[i], exact);
    }
    return fails;
}

int main(void)
{
    fill();
    int fails = check_accuracy();
    fails += check("sigmoid dispatch", run_sigmoid, co_sigmoid_loop);
    fails += check("silu dispatch", run_silu, co_silu_loop);
    fails += check("swish loop", co_swish_loop, sigmoid_then_multiply);
    fails += check("swish dispatch", run_swish, sigmoid_then_multiply);
#if defined(CO_GEMM_X86)
    const co_isa isa = co_cpu_isa();
    if (isa >= CO_ISA_AVX2) {
        fails += check("sigmoid avx2", co_sigmoid_avx2, co_sigmoid_loop);
        fails += check("silu avx2", co_silu_avx2, co_silu_loop);
        fails += check("swish avx2", co_swish_avx2, sigmoid_then_multiply);
    }
    if (isa >= CO_ISA_AVX512) {
        fails += check("sigmoid avx512", co_sigmoid_avx512, co_sigmoid_loop);
        fails += check("silu avx512", co_silu_avx512, co_silu_loop);
        fails += check("swish avx512", co_swish_avx512, sigmoid_then_multiply);
    }
    printf("kernel sets checked: %s\n", isa == CO_ISA_AVX512 ? "avx512 avx2" : isa == CO_ISA_AVX2 ? "avx2" : "none");
#else
    printf("portable build: the dispatch checked against the loop\n");
#endif
    if (fails) fprintf(stderr, "%d failures\n", fails);
    else printf("ok\n");
    return fails ? 1 : 0;
}
