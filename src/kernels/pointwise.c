/*
 * pointwise.c — the one implementation of every element-wise formula, softmax and the
 * normalisation kernels (see pointwise.h). One loop per kind, so the switch stays out of the
 * inner loop. Formulas follow ATen's CPU kernels of torch 1.13, NaN handling included: a
 * comparison is written the way ATen writes it, so that NaN goes where torch sends it (relu,
 * clamp and leaky_relu keep NaN; softshrink and sign map it to 0, as torch 1.13 does).
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "kernels/pointwise.h"
#include "kernels/cpu.h"
#include "kernels/pointwise_exp.h"
#include "kernels/threadpool.h"

/* Passes over at least PW_PARALLEL_MIN floats run on the current pool (co_pool_current), in
 * fixed chunks of PW_TASK_FLOATS (whatever the thread count, so every element is computed by the
 * same code: bit-identical results); smaller ones stay on the calling thread, where a hand-off
 * would cost more than the pass (docs/kernels.md, "Depthwise steps, fusion and the element-wise
 * passes"). */
enum { PW_TASK_FLOATS = 1 << 14, PW_PARALLEL_MIN = 1 << 15 };

/* Tasks for a pass over n floats in the caller's pool (0: run it here). */
static int pw_tasks(int64_t n, co_pool **pool)
{
    if (n < PW_PARALLEL_MIN || !(*pool = co_pool_current())) return 0;
    return (int)((n + PW_TASK_FLOATS - 1) / PW_TASK_FLOATS);
}

/* relu6 written as ATen's std::min/std::max, so that NaN passes through */
static inline float relu6f(float v)
{
    v = v < 0.0f ? 0.0f : v;
    return 6.0f < v ? 6.0f : v;
}

typedef enum { SIG_SIGMOID, SIG_SILU, SIG_SWISH } sig_form;

/* sigmoid, SiLU or x * sigmoid(x) (pointwise_exp.h) on the widest vectors the CPU runs: the same
 * loop, the same bits */
static void sigmoid_rows(sig_form form, const float *x, float *y, int64_t n)
{
#if defined(CO_GEMM_X86)
    static void (*const wide[2][3])(const float *, float *, int64_t) = {
        {co_sigmoid_avx512, co_silu_avx512, co_swish_avx512}, {co_sigmoid_avx2, co_silu_avx2, co_swish_avx2}};
    switch (co_cpu_isa()) {
    case CO_ISA_AVX512:
        wide[0][form](x, y, n);
        return;
    case CO_ISA_AVX2:
        wide[1][form](x, y, n);
        return;
    default:
        break;
    }
#endif
    switch (form) {
    case SIG_SIGMOID: co_sigmoid_loop(x, y, n); break;
    case SIG_SILU: co_silu_loop(x, y, n); break;
    case SIG_SWISH: co_swish_loop(x, y, n); break;
    }
}

static void pointwise_serial(const co_pointwise *p, const float *x, float *y, int64_t n)
{
    const float a = p->a, b = p->b, c = p->c;
    switch (p->kind) {
    case CO_PW_IDENTITY:
        if (x != y) memmove(y, x, (size_t)n * sizeof(float));
        break;
    case CO_PW_RELU: /* written so that NaN passes through, as clamp_min does */
        for (int64_t i = 0; i < n; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i];
        break;
    case CO_PW_HARDTANH:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] < a ? a : (x[i] > b ? b : x[i]);
        break;
    case CO_PW_SIGMOID:
        sigmoid_rows(SIG_SIGMOID, x, y, n);
        break;
    case CO_PW_TANH:
        for (int64_t i = 0; i < n; i++) y[i] = tanhf(x[i]);
        break;
    case CO_PW_SILU:
        sigmoid_rows(a != 0.0f ? SIG_SWISH : SIG_SILU, x, y, n);
        break;
    case CO_PW_MISH:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * tanhf(log1pf(expf(x[i])));
        break;
    case CO_PW_HARDSWISH:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * relu6f(x[i] + 3.0f) / 6.0f;
        break;
    case CO_PW_HARDSIGMOID:
        for (int64_t i = 0; i < n; i++) y[i] = relu6f(x[i] + 3.0f) / 6.0f;
        break;
    case CO_PW_ELU:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] <= 0.0f ? expm1f(x[i] * c) * a : x[i] * b;
        break;
    case CO_PW_LOGSIGMOID: /* -softplus(-x) without overflow: min(x, 0) - log1p(exp(-|x|)) */
        for (int64_t i = 0; i < n; i++) y[i] = fminf(x[i], 0.0f) - log1pf(expf(-fabsf(x[i])));
        break;
    case CO_PW_SOFTSIGN:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + fabsf(x[i]));
        break;
    case CO_PW_TANHSHRINK:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] - tanhf(x[i]);
        break;
    case CO_PW_GELU_ERF: {
        const float k_sqrt1_2 = 0.70710678118654752440f;
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * 0.5f * (1.0f + erff(x[i] * k_sqrt1_2));
        break;
    }
    case CO_PW_GELU_TANH: {
        const float k_beta = 0.79788456080286535588f, k_kappa = 0.044715f; /* sqrt(2/pi) */
        for (int64_t i = 0; i < n; i++) {
            const float v = x[i], inner = k_beta * (v + k_kappa * v * v * v);
            y[i] = 0.5f * v * (1.0f + tanhf(inner));
        }
        break;
    }
    case CO_PW_LEAKY:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : x[i] * a;
        break;
    case CO_PW_THRESHOLD:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] <= a ? b : x[i];
        break;
    case CO_PW_HARDSHRINK:
        for (int64_t i = 0; i < n; i++) y[i] = (x[i] >= -a && x[i] <= a) ? 0.0f : x[i];
        break;
    case CO_PW_SOFTSHRINK: /* torch 1.13: NaN and the band map to +0 (scalar_t(0)) */
        for (int64_t i = 0; i < n; i++) y[i] = x[i] > a ? x[i] - a : (x[i] < -a ? x[i] + a : 0.0f);
        break;
    case CO_PW_SOFTPLUS: /* a = beta, b = threshold: linear where beta*x > threshold */
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * a > b ? x[i] : log1pf(expf(x[i] * a)) / a;
        break;
    case CO_PW_EXP:
        for (int64_t i = 0; i < n; i++) y[i] = expf(x[i]);
        break;
    case CO_PW_LOG:
        for (int64_t i = 0; i < n; i++) y[i] = logf(x[i]);
        break;
    case CO_PW_ABS:
        for (int64_t i = 0; i < n; i++) y[i] = fabsf(x[i]);
        break;
    case CO_PW_NEG:
        for (int64_t i = 0; i < n; i++) y[i] = -x[i];
        break;
    case CO_PW_SQUARE:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * x[i];
        break;
    case CO_PW_SQRT:
        for (int64_t i = 0; i < n; i++) y[i] = sqrtf(x[i]);
        break;
    case CO_PW_RSQRT:
        for (int64_t i = 0; i < n; i++) y[i] = 1.0f / sqrtf(x[i]);
        break;
    case CO_PW_RECIPROCAL:
        for (int64_t i = 0; i < n; i++) y[i] = 1.0f / x[i];
        break;
    case CO_PW_SIN:
        for (int64_t i = 0; i < n; i++) y[i] = sinf(x[i]);
        break;
    case CO_PW_COS:
        for (int64_t i = 0; i < n; i++) y[i] = cosf(x[i]);
        break;
    case CO_PW_ERF:
        for (int64_t i = 0; i < n; i++) y[i] = erff(x[i]);
        break;
    case CO_PW_EXPM1:
        for (int64_t i = 0; i < n; i++) y[i] = expm1f(x[i]);
        break;
    case CO_PW_LOG1P:
        for (int64_t i = 0; i < n; i++) y[i] = log1pf(x[i]);
        break;
    case CO_PW_FLOOR:
        for (int64_t i = 0; i < n; i++) y[i] = floorf(x[i]);
        break;
    case CO_PW_CEIL:
        for (int64_t i = 0; i < n; i++) y[i] = ceilf(x[i]);
        break;
    case CO_PW_ROUND: /* half to even under the default rounding mode, as torch.round */
        for (int64_t i = 0; i < n; i++) y[i] = nearbyintf(x[i]);
        break;
    case CO_PW_SIGN: /* ATen 1.13: (0 < x) - (x < 0), so NaN gives 0 and -0 gives +0 */
        for (int64_t i = 0; i < n; i++) y[i] = (float)((0.0f < x[i]) - (x[i] < 0.0f));
        break;
    case CO_PW_LOGICAL_NOT: /* NaN is true (non-zero), so not NaN is 0 */
        for (int64_t i = 0; i < n; i++) y[i] = x[i] == 0.0f ? 1.0f : 0.0f;
        break;
    case CO_PW_COUNT:
        break;
    }
}

typedef struct pw_job {
    const co_pointwise *p;
    const float *x;
    float *y;
    int64_t n;
} pw_job;

static void pw_task(void *ctx, int task)
{
    const pw_job *jb = ctx;
    const int64_t lo = (int64_t)task * PW_TASK_FLOATS, len = jb->n - lo < PW_TASK_FLOATS ? jb->n - lo : PW_TASK_FLOATS;
    pointwise_serial(jb->p, jb->x + lo, jb->y + lo, len);
}

void co_pointwise_run(const co_pointwise *p, const float *x, float *y, int64_t n)
{
    co_pool *pool = NULL;
    const int tasks = p->kind == CO_PW_IDENTITY ? 0 : pw_tasks(n, &pool); /* identity: one memmove */
    if (tasks > 1) {
        pw_job jb = {p, x, y, n};
        co_pool_run(pool, tasks, pw_task, &jb);
        return;
    }
    pointwise_serial(p, x, y, n);
}

/* Softmax over D with stride `inner`: the max and the sum run over whole rows of `inner`
 * floats at a time, so the memory walk stays contiguous whatever the axis. x == y works: each
 * element is read before it is written. */
void co_softmax_run(co_softmax_kind kind, int64_t outer, int64_t D, int64_t inner, const float *x, float *y,
                    float *scratch)
{
    const float sign = kind == CO_SOFTMIN ? -1.0f : 1.0f; /* softmin(x) = softmax(-x) */
    float *mx = scratch, *sum = scratch + inner;
    for (int64_t o = 0; o < outer; o++) {
        const float *xo = x + o * D * inner;
        float *yo = y + o * D * inner;
        for (int64_t i = 0; i < inner; i++) {
            mx[i] = sign * xo[i];
            sum[i] = 0.0f;
        }
        for (int64_t d = 1; d < D; d++)
            for (int64_t i = 0; i < inner; i++) {
                const float v = sign * xo[d * inner + i];
                mx[i] = v > mx[i] ? v : mx[i];
            }
        if (kind == CO_LOG_SOFTMAX) {
            for (int64_t d = 0; d < D; d++)
                for (int64_t i = 0; i < inner; i++) sum[i] += expf(xo[d * inner + i] - mx[i]);
            for (int64_t i = 0; i < inner; i++) sum[i] = mx[i] + logf(sum[i]);
            for (int64_t d = 0; d < D; d++)
                for (int64_t i = 0; i < inner; i++) yo[d * inner + i] = xo[d * inner + i] - sum[i];
        } else {
            for (int64_t d = 0; d < D; d++)
                for (int64_t i = 0; i < inner; i++) {
                    const float e = expf(sign * xo[d * inner + i] - mx[i]);
                    yo[d * inner + i] = e;
                    sum[i] += e;
                }
            for (int64_t i = 0; i < inner; i++) sum[i] = 1.0f / sum[i];
            for (int64_t d = 0; d < D; d++)
                for (int64_t i = 0; i < inner; i++) yo[d * inner + i] *= sum[i];
        }
    }
}

static void affine_rows(int64_t r0, int64_t r1, int64_t C, int64_t inner, const float *scale, const float *shift,
                        const co_pointwise *act, const float *x, float *y)
{
    for (int64_t r = r0; r < r1; r++) {
        const float s = scale[r % C], t = shift[r % C];
        const float *xr = x + r * inner;
        float *yr = y + r * inner;
        for (int64_t i = 0; i < inner; i++) yr[i] = xr[i] * s + t;
        if (act) pointwise_serial(act, yr, yr, inner); /* the row is still in cache */
    }
}

typedef struct affine_job {
    int64_t rows, per_task, C, inner;
    const float *scale, *shift, *x;
    const co_pointwise *act;
    float *y;
} affine_job;

static void affine_task(void *ctx, int task)
{
    const affine_job *jb = ctx;
    const int64_t r0 = task * jb->per_task, r1 = r0 + jb->per_task < jb->rows ? r0 + jb->per_task : jb->rows;
    affine_rows(r0, r1, jb->C, jb->inner, jb->scale, jb->shift, jb->act, jb->x, jb->y);
}

void co_channel_affine_act(int64_t outer, int64_t C, int64_t inner, const float *scale, const float *shift,
                           const co_pointwise *act, const float *x, float *y)
{
    co_pool *pool = NULL;
    const int64_t rows = outer * C;
    const int tasks = pw_tasks(rows * inner, &pool);
    if (tasks > 1 && rows > 1) {
        /* whole rows per task, about PW_TASK_FLOATS each */
        const int64_t per_task = (rows + tasks - 1) / tasks;
        affine_job jb = {rows, per_task, C, inner, scale, shift, x, act, y};
        co_pool_run(pool, (int)((rows + per_task - 1) / per_task), affine_task, &jb);
        return;
    }
    affine_rows(0, rows, C, inner, scale, shift, act, x, y);
}

void co_channel_affine(int64_t outer, int64_t C, int64_t inner, const float *scale, const float *shift,
                       const float *x, float *y)
{
    co_channel_affine_act(outer, C, inner, scale, shift, NULL, x, y);
}

/* Statistics in double (two passes), rstd = 1 / sqrt(var + eps) as in ATen; then one scale
 * and shift per row. */
void co_moments(const float *x, int64_t n, double *mean, double *var)
{
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += x[i];
    const double m = sum / (double)n;
    double sq = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double dv = x[i] - m;
        sq += dv * dv;
    }
    *mean = m;
    *var = sq / (double)n; /* biased, as torch */
}

void co_layer_norm_rows(int64_t rows, int64_t n, float eps, const float *w, const float *b, const float *x, float *y)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        double mean, var;
        co_moments(xr, n, &mean, &var);
        const double sq = var * (double)n;
        double rstd = 1.0 / sqrt(var + eps);
        /* torch accumulates the moments in float32: where the sum of squared deviations
         * overflows there, its output is NaN; match that rather than stay finite in double */
        if (sq > FLT_MAX) rstd = NAN;
        const float scale = (float)rstd, shift = (float)(-rstd * mean);
        if (w && b)
            for (int64_t i = 0; i < n; i++) yr[i] = (xr[i] * scale + shift) * w[i] + b[i];
        else if (w)
            for (int64_t i = 0; i < n; i++) yr[i] = (xr[i] * scale + shift) * w[i];
        else if (b)
            for (int64_t i = 0; i < n; i++) yr[i] = (xr[i] * scale + shift) + b[i];
        else
            for (int64_t i = 0; i < n; i++) yr[i] = xr[i] * scale + shift;
    }
}
