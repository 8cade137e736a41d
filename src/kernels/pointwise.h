/*
 * pointwise.h — the one implementation of every element-wise formula, softmax and
 * normalisation kernel. Activation modules (src/layers/activation.c), norms (norm.c), the
 * Lambda built-ins (utility.c) and traced graphs (graph.c) all call these, so a formula is
 * written once. Formulas follow ATen's CPU kernels, NaN handling included (NaN in, NaN out,
 * wherever torch does so). Nothing here allocates.
 */
#ifndef CO_POINTWISE_H
#define CO_POINTWISE_H

#include <stdint.h>

/* Element-wise functions. The comment gives the meaning of the constants a, b, c. */
typedef enum co_pw_kind {
    CO_PW_IDENTITY,
    CO_PW_RELU,
    CO_PW_HARDTANH, /* clamp(x, a, b); also ReLU6 (0, 6) and clamp (±inf for a missing bound) */
    CO_PW_SIGMOID,
    CO_PW_TANH,
    CO_PW_SILU, /* a = 0: x / (1 + exp(-x)), as torch's silu; a = 1: x * sigmoid(x), the rounding of a traced
                 * `x * torch.sigmoid(x)` (sigmoid rounded, then one product: graph.c folds that pair) */
    CO_PW_MISH,
    CO_PW_HARDSWISH,
    CO_PW_HARDSIGMOID,
    CO_PW_ELU, /* x <= 0 ? expm1(x * c) * a : x * b; ELU, CELU and SELU */
    CO_PW_LOGSIGMOID,
    CO_PW_SOFTSIGN,
    CO_PW_TANHSHRINK,
    CO_PW_GELU_ERF,
    CO_PW_GELU_TANH,
    CO_PW_LEAKY, /* slope a; also RReLU in eval mode */
    CO_PW_THRESHOLD, /* x <= a ? b : x */
    CO_PW_HARDSHRINK, /* lambda a */
    CO_PW_SOFTSHRINK, /* lambda a */
    CO_PW_SOFTPLUS,   /* a = beta, b = threshold */
    CO_PW_EXP,
    CO_PW_LOG,
    CO_PW_ABS,
    CO_PW_NEG,
    CO_PW_SQUARE,
    CO_PW_SQRT,
    CO_PW_RSQRT,
    CO_PW_RECIPROCAL,
    CO_PW_SIN,
    CO_PW_COS,
    CO_PW_ERF,
    CO_PW_EXPM1,
    CO_PW_LOG1P,
    CO_PW_FLOOR,
    CO_PW_CEIL,
    CO_PW_ROUND, /* half to even, as torch.round */
    CO_PW_SIGN,
    CO_PW_LOGICAL_NOT,
    CO_PW_COUNT
} co_pw_kind;

typedef struct co_pointwise {
    co_pw_kind kind;
    float a, b, c; /* per-kind constants, see co_pw_kind */
} co_pointwise;

/* y[i] = f(x[i]) for i < n; x == y is allowed. */
void co_pointwise_run(const co_pointwise *p, const float *x, float *y, int64_t n);

typedef enum co_softmax_kind { CO_SOFTMAX, CO_SOFTMIN, CO_LOG_SOFTMAX } co_softmax_kind;

/* Softmax over D of x viewed as (outer, D, inner); scratch holds 2 * inner floats. */
void co_softmax_run(co_softmax_kind kind, int64_t outer, int64_t D, int64_t inner, const float *x, float *y,
                    float *scratch);

/* y = x * scale[c] + shift[c] for x viewed as (outer, C, inner) (eval-mode batch norm, once its
 * statistics are folded into scale and shift); x == y is allowed. */
void co_channel_affine(int64_t outer, int64_t C, int64_t inner, const float *scale, const float *shift,
                       const float *x, float *y);
/* The same, then y = act(y) (act NULL: none), each channel row while it is in cache (an
 * activation fused into the norm, src/core/fuse.c). */
void co_channel_affine_act(int64_t outer, int64_t C, int64_t inner, const float *scale, const float *shift,
                           const co_pointwise *act, const float *x, float *y);

/* Mean and biased variance of n floats, accumulated in double over two passes (the statistics of
 * every norm: layer, group). */
void co_moments(const float *x, int64_t n, double *mean, double *var);

/* Layer norm of each of `rows` contiguous rows of n floats: (x - mean) / sqrt(var + eps), then
 * times w[i] plus b[i] when they are not NULL (biased variance, as torch). */
void co_layer_norm_rows(int64_t rows, int64_t n, float eps, const float *w, const float *b, const float *x, float *y);

#endif /* CO_POINTWISE_H */
