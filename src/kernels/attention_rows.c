/*
 * attention_rows.c — see attention_rows.h. The portable loops are what any compiler vectorises
 * for the baseline target (the dot keeps DOT_LANES independent partial sums, since a float sum
 * is not reassociated by the compiler); in native x86-64 builds (CO_GEMM_X86) AVX-512 variants
 * are compiled with a target attribute and chosen when cpu.c finds AVX-512.
 */
#include "kernels/attention_rows.h"

#include "kernels/cpu.h"

enum { DOT_LANES = 16 };

static float dot_portable(const float *a, const float *b, int64_t n)
{
    float lane[DOT_LANES] = {0};
    int64_t i = 0;
    for (; i + DOT_LANES <= n; i += DOT_LANES)
        for (int k = 0; k < DOT_LANES; k++) lane[k] += a[i + k] * b[i + k];
    float s = 0.0f;
    for (; i < n; i++) s += a[i] * b[i];
    for (int k = 0; k < DOT_LANES; k++) s += lane[k];
    return s;
}

static void update_sum_portable(int64_t n, float s, float c_old, float c_new, float inv, const float *u_old,
                                const float *u_new, float *a, float *o)
{
    for (int64_t i = 0; i < n; i++) {
        const float v = a[i] * s + c_old * u_old[i] + c_new * u_new[i];
        a[i] = v;
        o[i] += v * inv;
    }
}

static void sum_portable(int64_t n, float inv, const float *a, float *o)
{
    for (int64_t i = 0; i < n; i++) o[i] += a[i] * inv;
}

#if defined(CO_GEMM_X86) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define CO_ROWS_AVX512 1
#define AVX512 __attribute__((target("avx512f,fma")))

/* lanes [0, n) of 16 set, n in [0, 16] */
AVX512 static inline __mmask16 tail_lanes(int64_t n) { return (__mmask16)((1u << n) - 1u); }

AVX512 static float dot_avx512(const float *a, const float *b, int64_t n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i < n; i += 16) {
        const __mmask16 m = tail_lanes(n - i < 16 ? n - i : 16);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

AVX512 static void update_sum_avx512(int64_t n, float s, float c_old, float c_new, float inv, const float *u_old,
                                     const float *u_new, float *a, float *o)
{
    const __m512 vs = _mm512_set1_ps(s), vo = _mm512_set1_ps(c_old), vn = _mm512_set1_ps(c_new),
                 vi = _mm512_set1_ps(inv);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_lanes(n - i < 16 ? n - i : 16);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, a + i), vs);
        v = _mm512_fmadd_ps(vo, _mm512_maskz_loadu_ps(m, u_old + i), v);
        v = _mm512_fmadd_ps(vn, _mm512_maskz_loadu_ps(m, u_new + i), v);
        _mm512_mask_storeu_ps(a + i, m, v);
        _mm512_mask_storeu_ps(o + i, m, _mm512_fmadd_ps(v, vi, _mm512_maskz_loadu_ps(m, o + i)));
    }
}

AVX512 static void sum_avx512(int64_t n, float inv, const float *a, float *o)
{
    const __m512 vi = _mm512_set1_ps(inv);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_lanes(n - i < 16 ? n - i : 16);
        _mm512_mask_storeu_ps(o + i, m, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), vi,
                                                        _mm512_maskz_loadu_ps(m, o + i)));
    }
}
#endif

float co_rows_dot(const float *a, const float *b, int64_t n)
{
#ifdef CO_ROWS_AVX512
    if (co_cpu_isa() >= CO_ISA_AVX512) return dot_avx512(a, b, n);
#endif
    return dot_portable(a, b, n);
}

void co_rows_update_sum(int64_t n, float s, float c_old, float c_new, float inv, const float *u_old,
                        const float *u_new, float *a, float *o)
{
#ifdef CO_ROWS_AVX512
    if (co_cpu_isa() >= CO_ISA_AVX512) {
        update_sum_avx512(n, s, c_old, c_new, inv, u_old, u_new, a, o);
        return;
    }
#endif
    update_sum_portable(n, s, c_old, c_new, inv, u_old, u_new, a, o);
}

void co_rows_sum(int64_t n, float inv, const float *a, float *o)
{
#ifdef CO_ROWS_AVX512
    if (co_cpu_isa() >= CO_ISA_AVX512) {
        sum_avx512(n, inv, a, o);
        return;
    }
#endif
    sum_portable(n, inv, a, o);
}
