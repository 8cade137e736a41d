/*
 * pointwise_exp.h — the sigmoid and SiLU loops of pointwise.c and their exp, shared by the
 * portable build (pointwise.c) and the AVX2 / AVX-512 builds of the same loops
 * (pointwise_avx2.c, pointwise_avx512.c, chosen at run time): every file compiles this one source
 * with -fno-trapping-math and without FMA contraction, so each element goes through the same IEEE
 * operations at any vector width and every kernel set gives the same bits (tests/c/test_pointwise_isa.c).
 */
#ifndef CO_POINTWISE_EXP_H
#define CO_POINTWISE_EXP_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp(x) for sigmoid and SiLU, written so that the compiler vectorises the loops that call it
 * (libm's expf is a call per element, ~70 % of a CoX3D Swish): Cephes' expf, as ATen's vectorised
 * kernels use a polynomial exp (Sleef) too. x = n ln2 + r with n = round(x / ln2) (the 1.5 * 2^23
 * trick: IEEE rounding, which -std=c11 without -ffast-math keeps; the file is built with
 * -fno-trapping-math so that gcc may turn the selects into vector blends, which changes no value), ln2 in two parts so that n * ln2
 * is exact; e^r by Cephes' polynomial on |r| <= ln2 / 2; 2^n applied in two halves so that
 * denormal and overflowing results come out as denormals and inf. Measured by hand (every 61st
 * float, not in tests): sigmoid within 2.4 ulp of the exact value wherever it is a normal float;
 * exp(-inf) = 0, exp(inf) = inf, NaN stays NaN (the clamps compare false), so sigmoid and SiLU
 * of +-inf and NaN are what libm's expf gives. */
static inline float co_exp_poly(float x)
{
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    const float round_magic = 12582912.0f; /* 1.5 * 2^23: t's low mantissa bits are then n */
    const int32_t round_magic_bits = 0x4B400000, exp_bias = 127, mantissa_bits = 23;
    float xc = isless(x, -104.0f) ? -104.0f : x;
    xc = isgreater(xc, 89.0f) ? 89.0f : xc;
    const float t = xc * log2e + round_magic, nf = t - round_magic;
    const float r = (xc - nf * ln2_hi) - nf * ln2_lo;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t tb;
    memcpy(&tb, &t, sizeof tb);
    const int32_t n = tb - round_magic_bits, n1 = n / 2, n2 = n - n1;
    /* unsigned shifts: the same bits as (n + bias) * 2^23 where that fits, and no overflow for a
     * NaN input (whose t carries arbitrary bits; its result is discarded below) */
    const uint32_t b1 = (uint32_t)(n1 + exp_bias) << mantissa_bits, b2 = (uint32_t)(n2 + exp_bias) << mantissa_bits;
    float s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    const float e = p * s1 * s2;
    return x != x ? x : e;
}

/* y = sigmoid(x), y = silu(x) = x / (1 + exp(-x)) (torch's silu) and y = x * sigmoid(x) (a Swish
 * written as a product: the sigmoid rounded to float, then one product, so the bits of sigmoid
 * followed by a multiply), as the loops the compiler vectorises */
static inline float co_sigmoid_of(float x) { return 1.0f / (1.0f + co_exp_poly(-x)); }

static inline void co_sigmoid_loop(const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = co_sigmoid_of(x[i]);
}

static inline void co_silu_loop(const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + co_exp_poly(-x[i]));
}

static inline void co_swish_loop(const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * co_sigmoid_of(x[i]);
}

/* The wide builds (x86-64 with CO_GEMM_X86; call only when co_cpu_isa() says the CPU runs them). */
void co_sigmoid_avx512(const float *x, float *y, int64_t n);
void co_silu_avx512(const float *x, float *y, int64_t n);
void co_swish_avx512(const float *x, float *y, int64_t n);
void co_sigmoid_avx2(const float *x, float *y, int64_t n);
void co_silu_avx2(const float *x, float *y, int64_t n);
void co_swish_avx2(const float *x, float *y, int64_t n);

#endif /* CO_POINTWISE_EXP_H */
