/*
 * activation.c — torch.nn activations, and Identity / dropouts (which compile to nothing).
 *
 * Every activation here is frame-local (receptive field 1, no state), so step mode is the clip
 * computation on a one-frame shape. Op classes:
 *   "elementwise" — all pointwise activations; `kind` picks the formula, with one loop per kind
 *                   so the switch stays out of the inner loop.
 *   "prelu"       — PReLU with one slope, or one per channel (dim 1).
 *   "glu"         — GLU: first half of a dim times the sigmoid of the second half.
 *   "softmax"     — Softmax / Softmin / LogSoftmax over one dim, and Softmax2d (over channels).
 * resolve reduces the given shape (frame or clip) to (outer, D, inner) in rt->aux, and one
 * kernel serves both modes. Dims are as torch sees the clip (B, C, T, *S); batch and time are
 * refused (an op over time is not frame-local). Formulas follow ATen's CPU kernels.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "core/build.h"

/* (outer, D, inner) decomposition of a shape around one axis, in rt->aux */
enum { A_OUTER, A_DIM, A_INNER };

static const char *node_name(const char *path) { return path[0] ? path : "<root>"; }

/* relu6 written as ATen's std::min/std::max, so that NaN passes through */
static inline float relu6f(float v)
{
    v = v < 0.0f ? 0.0f : v;
    return 6.0f < v ? 6.0f : v;
}

static void set_frame_local(co_props *props)
{
    co_props_frame_local(props);
}

/* Maps a torch `dim` (clip layout) to an axis of `s` and fills aux with (outer, D, inner);
 * refuses batch, time and out-of-range dims with a message naming the module. */
static co_status resolve_dim(const co_op *op, const char *type, int dim, const co_tshape *s, co_oprt *rt)
{
    const int clip_rank = s->has_time ? s->ndim : s->ndim + 1;
    const int d = dim < 0 ? dim + clip_rank : dim;
    if (d < 0 || d >= clip_rank)
        return co_error(CO_ERR_SHAPE, "%s (%s): dim %d is out of range for a clip of %d dims (B, C, T, *S)",
                        node_name(op->path), type, dim, clip_rank);
    if (d == 0)
        return co_error(CO_ERR_SHAPE, "%s (%s): dim %d is the batch dim; %s over the batch is not supported",
                        node_name(op->path), type, dim, type);
    if (d == 2)
        return co_error(CO_ERR_SHAPE,
                        "%s (%s): dim %d is the time dim of the clip (B, C, T, *S); %s over time is not frame-local "
                        "and cannot run frame by frame",
                        node_name(op->path), type, dim, type);
    const int axis = co_clip_dim_to_axis(dim, s);
    if (axis < 1 || axis >= s->ndim) /* cannot happen after the checks above; kept as a guard */
        return co_error(CO_ERR_SHAPE, "%s (%s): dim %d does not name a channel or spatial dim", node_name(op->path),
                        type, dim);
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < axis; i++) outer *= s->d[i];
    for (int i = axis + 1; i < s->ndim; i++) inner *= s->d[i];
    rt->aux[A_OUTER] = outer;
    rt->aux[A_DIM] = s->d[axis];
    rt->aux[A_INNER] = inner;
    rt->out = *s;
    return CO_OK;
}

/* ================================ elementwise ================================ */

typedef enum ew_kind {
    EW_RELU,
    EW_HARDTANH, /* clamp(x, a, b); also ReLU6 */
    EW_SIGMOID,
    EW_TANH,
    EW_SILU,
    EW_MISH,
    EW_HARDSWISH,
    EW_HARDSIGMOID,
    EW_ELU, /* x <= 0 ? expm1(x * c) * a : x * b; ELU, CELU and SELU */
    EW_LOGSIGMOID,
    EW_SOFTSIGN,
    EW_TANHSHRINK,
    EW_GELU_ERF,
    EW_GELU_TANH,
    EW_LEAKY, /* slope a; also RReLU in eval mode */
    EW_THRESHOLD,
    EW_HARDSHRINK,
    EW_SOFTSHRINK,
    EW_SOFTPLUS
} ew_kind;

typedef struct elementwise_params {
    ew_kind kind;
    float a, b, c; /* per-kind constants, see ew_kind */
} elementwise_params;

static void elementwise_run(const elementwise_params *p, const float *restrict x, float *restrict y, int64_t n)
{
    const float a = p->a, b = p->b, c = p->c;
    switch (p->kind) {
    case EW_RELU: /* written so that NaN passes through, as clamp_min does */
        for (int64_t i = 0; i < n; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i];
        break;
    case EW_HARDTANH:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] < a ? a : (x[i] > b ? b : x[i]);
        break;
    case EW_SIGMOID:
        for (int64_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + expf(-x[i]));
        break;
    case EW_TANH:
        for (int64_t i = 0; i < n; i++) y[i] = tanhf(x[i]);
        break;
    case EW_SILU:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + expf(-x[i]));
        break;
    case EW_MISH:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * tanhf(log1pf(expf(x[i])));
        break;
    case EW_HARDSWISH:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * relu6f(x[i] + 3.0f) / 6.0f;
        break;
    case EW_HARDSIGMOID:
        for (int64_t i = 0; i < n; i++) y[i] = relu6f(x[i] + 3.0f) / 6.0f;
        break;
    case EW_ELU:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] <= 0.0f ? expm1f(x[i] * c) * a : x[i] * b;
        break;
    case EW_LOGSIGMOID: /* -softplus(-x) without overflow: min(x, 0) - log1p(exp(-|x|)) */
        for (int64_t i = 0; i < n; i++) y[i] = fminf(x[i], 0.0f) - log1pf(expf(-fabsf(x[i])));
        break;
    case EW_SOFTSIGN:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + fabsf(x[i]));
        break;
    case EW_TANHSHRINK:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] - tanhf(x[i]);
        break;
    case EW_GELU_ERF: {
        const float k_sqrt1_2 = 0.70710678118654752440f;
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * 0.5f * (1.0f + erff(x[i] * k_sqrt1_2));
        break;
    }
    case EW_GELU_TANH: {
        const float k_beta = 0.79788456080286535588f, k_kappa = 0.044715f; /* sqrt(2/pi) */
        for (int64_t i = 0; i < n; i++) {
            const float v = x[i], inner = k_beta * (v + k_kappa * v * v * v);
            y[i] = 0.5f * v * (1.0f + tanhf(inner));
        }
        break;
    }
    case EW_LEAKY:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : x[i] * a;
        break;
    case EW_THRESHOLD:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] <= a ? b : x[i];
        break;
    case EW_HARDSHRINK:
        for (int64_t i = 0; i < n; i++) y[i] = (x[i] >= -a && x[i] <= a) ? 0.0f : x[i];
        break;
    case EW_SOFTSHRINK:
        for (int64_t i = 0; i < n; i++) y[i] = x[i] > a ? x[i] - a : (x[i] < -a ? x[i] + a : x[i] * 0.0f);
        break;
    case EW_SOFTPLUS: /* a = beta, b = threshold: linear where beta*x > threshold */
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * a > b ? x[i] : log1pf(expf(x[i] * a)) / a;
        break;
    }
}

static co_status elementwise_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    (void)op;
    rt->out = *in;
    rt->macs = co_tshape_numel(in);
    return CO_OK;
}

static int elementwise_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out,
                            float *scratch)
{
    (void)state;
    (void)scratch;
    elementwise_run(op->params, in[0], out, co_tshape_numel(&rt->out));
    return 1;
}

static const co_op_class k_elementwise = {
    .name = "elementwise",
    .resolve = elementwise_resolve,
    .step = elementwise_step};

/* ================================ PReLU ================================ */

typedef struct prelu_params {
    int64_t num;    /* 1, or the number of channels */
    const float *w; /* model-owned, num slopes */
} prelu_params;

static co_status prelu_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    const prelu_params *p = op->params;
    char buf[96];
    if (p->num > 1 && in->d[1] != p->num)
        return co_error(CO_ERR_SHAPE, "%s (PReLU): input %s has %lld channels, num_parameters is %lld",
                        node_name(op->path), co_tshape_str(in, buf, sizeof buf), (long long)in->d[1],
                        (long long)p->num);
    rt->out = *in;
    rt->aux[A_OUTER] = in->d[0];
    rt->aux[A_DIM] = in->d[1];
    rt->aux[A_INNER] = co_tshape_numel(in) / (in->d[0] * in->d[1]);
    rt->macs = co_tshape_numel(in);
    return CO_OK;
}

static void prelu_run(const prelu_params *p, const co_oprt *rt, const float *restrict x, float *restrict y)
{
    const int64_t outer = rt->aux[A_OUTER], channels = rt->aux[A_DIM], inner = rt->aux[A_INNER];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t c = 0; c < channels; c++) {
            const float w = p->w[p->num == 1 ? 0 : c];
            const float *xr = x + (o * channels + c) * inner;
            float *yr = y + (o * channels + c) * inner;
            for (int64_t i = 0; i < inner; i++) yr[i] = xr[i] > 0.0f ? xr[i] : w * xr[i];
        }
}

static int prelu_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out,
                      float *scratch)
{
    (void)state;
    (void)scratch;
    prelu_run(op->params, rt, in[0], out);
    return 1;
}

static const co_op_class k_prelu = {
    .name = "prelu", .resolve = prelu_resolve, .step = prelu_step};

/* ================================ GLU ================================ */

typedef struct glu_params {
    int dim;
} glu_params;

static co_status glu_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    const glu_params *p = op->params;
    co_status st = resolve_dim(op, "GLU", p->dim, in, rt);
    if (st) return st;
    const int axis = co_clip_dim_to_axis(p->dim, in);
    char buf[96];
    if (in->d[axis] % 2 != 0)
        return co_error(CO_ERR_SHAPE, "%s (GLU): dim %d of input %s has odd size %lld; GLU halves it",
                        node_name(op->path), p->dim, co_tshape_str(in, buf, sizeof buf), (long long)in->d[axis]);
    rt->out.d[axis] = in->d[axis] / 2;
    rt->aux[A_DIM] = in->d[axis] / 2; /* D is the output half */
    rt->macs = co_tshape_numel(&rt->out);
    return CO_OK;
}

static void glu_run(const co_oprt *rt, const float *restrict x, float *restrict y)
{
    const int64_t outer = rt->aux[A_OUTER], half = rt->aux[A_DIM] * rt->aux[A_INNER];
    for (int64_t o = 0; o < outer; o++) {
        const float *first = x + o * 2 * half, *second = first + half;
        float *yo = y + o * half;
        for (int64_t i = 0; i < half; i++) yo[i] = first[i] * (1.0f / (1.0f + expf(-second[i])));
    }
}

static int glu_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out,
                    float *scratch)
{
    (void)op;
    (void)state;
    (void)scratch;
    glu_run(rt, in[0], out);
    return 1;
}

static const co_op_class k_glu = {
    .name = "glu", .resolve = glu_resolve, .step = glu_step};

/* ================================ softmax family ================================ */

typedef enum sm_kind { SM_SOFTMAX, SM_SOFTMIN, SM_LOGSOFTMAX } sm_kind;

typedef struct softmax_params {
    sm_kind kind;
    int dim;
    int is_2d;        /* Softmax2d: torch accepts only 3D/4D inputs, i.e. a clip of rank 4 */
    const char *type; /* static string, for messages */
} softmax_params;

static co_status softmax_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    const softmax_params *p = op->params;
    const int clip_rank = in->has_time ? in->ndim : in->ndim + 1;
    char buf[96];
    if (p->is_2d && clip_rank != 4)
        return co_error(CO_ERR_SHAPE,
                        "%s (Softmax2d): needs a 4D clip (B, C, T, S) (torch accepts only 3D/4D inputs), input is %s",
                        node_name(op->path), co_tshape_str(in, buf, sizeof buf));
    co_status st = resolve_dim(op, p->type, p->dim, in, rt);
    if (st) return st;
    rt->scratch_floats = 2 * (size_t)rt->aux[A_INNER]; /* running max and sum per inner position */
    rt->macs = 3 * co_tshape_numel(in);
    return CO_OK;
}

/* Softmax over D with stride `inner`: the max and the sum run over whole rows of `inner`
 * floats at a time, so the memory walk stays contiguous whatever the axis. */
static void softmax_run(const softmax_params *p, const co_oprt *rt, const float *restrict x, float *restrict y,
                        float *restrict scratch)
{
    const int64_t outer = rt->aux[A_OUTER], D = rt->aux[A_DIM], inner = rt->aux[A_INNER];
    const float sign = p->kind == SM_SOFTMIN ? -1.0f : 1.0f; /* softmin(x) = softmax(-x) */
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
        if (p->kind == SM_LOGSOFTMAX) {
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

static int softmax_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out,
                        float *scratch)
{
    (void)state;
    softmax_run(op->params, rt, in[0], out, scratch);
    return 1;
}

static const co_op_class k_softmax = {
    .name = "softmax", .resolve = softmax_resolve, .step = softmax_step};

/* ================================ building ================================ */

typedef enum act_family { FAM_ELEMENTWISE, FAM_PRELU, FAM_GLU, FAM_SOFTMAX } act_family;

typedef struct act_type {
    const char *name;
    act_family family;
    int kind; /* ew_kind or sm_kind; for elementwise types with keys the builder refines it */
} act_type;

static const act_type k_act_types[] = {
    {"ReLU", FAM_ELEMENTWISE, EW_RELU},
    {"ReLU6", FAM_ELEMENTWISE, EW_HARDTANH},
    {"Sigmoid", FAM_ELEMENTWISE, EW_SIGMOID},
    {"Tanh", FAM_ELEMENTWISE, EW_TANH},
    {"SiLU", FAM_ELEMENTWISE, EW_SILU},
    {"Mish", FAM_ELEMENTWISE, EW_MISH},
    {"Hardswish", FAM_ELEMENTWISE, EW_HARDSWISH},
    {"Hardsigmoid", FAM_ELEMENTWISE, EW_HARDSIGMOID},
    {"SELU", FAM_ELEMENTWISE, EW_ELU},
    {"LogSigmoid", FAM_ELEMENTWISE, EW_LOGSIGMOID},
    {"Softsign", FAM_ELEMENTWISE, EW_SOFTSIGN},
    {"Tanhshrink", FAM_ELEMENTWISE, EW_TANHSHRINK},
    {"GELU", FAM_ELEMENTWISE, EW_GELU_ERF},
    {"ELU", FAM_ELEMENTWISE, EW_ELU},
    {"CELU", FAM_ELEMENTWISE, EW_ELU},
    {"LeakyReLU", FAM_ELEMENTWISE, EW_LEAKY},
    {"Hardtanh", FAM_ELEMENTWISE, EW_HARDTANH},
    {"Threshold", FAM_ELEMENTWISE, EW_THRESHOLD},
    {"RReLU", FAM_ELEMENTWISE, EW_LEAKY},
    {"Hardshrink", FAM_ELEMENTWISE, EW_HARDSHRINK},
    {"Softshrink", FAM_ELEMENTWISE, EW_SOFTSHRINK},
    {"Softplus", FAM_ELEMENTWISE, EW_SOFTPLUS},
    {"PReLU", FAM_PRELU, 0},
    {"GLU", FAM_GLU, 0},
    {"Softmax", FAM_SOFTMAX, SM_SOFTMAX},
    {"Softmin", FAM_SOFTMAX, SM_SOFTMIN},
    {"LogSoftmax", FAM_SOFTMAX, SM_LOGSOFTMAX},
    {"Softmax2d", FAM_SOFTMAX, SM_SOFTMAX},
};

static const act_type *find_act_type(const char *type)
{
    for (size_t i = 0; i < sizeof k_act_types / sizeof k_act_types[0]; i++)
        if (strcmp(k_act_types[i].name, type) == 0) return &k_act_types[i];
    return NULL;
}

int co_is_activation_type(const char *type) { return type && find_act_type(type) != NULL; }

/* Reads the keys of a pointwise activation into its constants. */
static co_status read_elementwise(co_builder *b, const cJSON *node, const char *path, const char *type,
                                  elementwise_params *p)
{
    static const char *const k_approx[] = {"none", "tanh", NULL};
    const double big = FLT_MAX;
    co_status st = CO_OK;
    double a = 0, c = 0;
    if (strcmp(type, "ReLU6") == 0) {
        p->a = 0.0f;
        p->b = 6.0f;
    } else if (strcmp(type, "SELU") == 0) {
        const float alpha = 1.6732632423543772848170429916717f, scale = 1.0507009873554804934193349852946f;
        p->a = alpha * scale; /* ATen: negcoef = alpha * scale, poscoef = scale, input scale 1 */
        p->b = scale;
        p->c = 1.0f;
    } else if (strcmp(type, "GELU") == 0) {
        int approx = 0;
        if ((st = co_get_choice(b, node, path, "approximate", 0, 0, k_approx, &approx))) return st;
        p->kind = approx ? EW_GELU_TANH : EW_GELU_ERF;
    } else if (strcmp(type, "ELU") == 0 || strcmp(type, "CELU") == 0) {
        if ((st = co_get_float(b, node, path, "alpha", 0, 1.0, -big, big, &a))) return st;
        const int celu = type[0] == 'C';
        if (celu && a == 0.0)
            return co_error(CO_ERR_NETWORK, "%s (CELU): alpha cannot be 0", node_name(path));
        p->a = (float)a;
        p->b = 1.0f;
        p->c = celu ? (float)(1.0 / a) : 1.0f; /* CELU is ELU with input scale 1/alpha */
    } else if (strcmp(type, "LeakyReLU") == 0) {
        if ((st = co_get_float(b, node, path, "negative_slope", 0, 0.01, -big, big, &a))) return st;
        p->a = (float)a;
    } else if (strcmp(type, "Hardtanh") == 0) {
        if ((st = co_get_float(b, node, path, "min_val", 0, -1.0, -big, big, &a)) ||
            (st = co_get_float(b, node, path, "max_val", 0, 1.0, -big, big, &c)))
            return st;
        if (!(c > a)) /* torch asserts max_val > min_val */
            return co_error(CO_ERR_NETWORK, "%s (Hardtanh): max_val %g must be greater than min_val %g",
                            node_name(path), c, a);
        p->a = (float)a;
        p->b = (float)c;
    } else if (strcmp(type, "Threshold") == 0) {
        if ((st = co_get_float(b, node, path, "threshold", 1, 0.0, -big, big, &a)) ||
            (st = co_get_float(b, node, path, "value", 1, 0.0, -big, big, &c)))
            return st;
        p->a = (float)a;
        p->b = (float)c;
    } else if (strcmp(type, "RReLU") == 0) {
        if ((st = co_get_float(b, node, path, "lower", 0, 1.0 / 8.0, -big, big, &a)) ||
            (st = co_get_float(b, node, path, "upper", 0, 1.0 / 3.0, -big, big, &c)))
            return st;
        if (a > c)
            return co_error(CO_ERR_NETWORK, "%s (RReLU): lower %g must not exceed upper %g", node_name(path), a, c);
        p->a = (float)((a + c) / 2.0); /* eval mode: a fixed slope, the mean of the bounds */
    } else if (strcmp(type, "Hardshrink") == 0 || strcmp(type, "Softshrink") == 0) {
        /* torch checks lambd >= 0 for Softshrink only */
        const double lo = type[0] == 'S' ? 0.0 : -big;
        if ((st = co_get_float(b, node, path, "lambd", 0, 0.5, lo, big, &a))) return st;
        p->a = (float)a;
    } else if (strcmp(type, "Softplus") == 0) {
        if ((st = co_get_float(b, node, path, "beta", 0, 1.0, -big, big, &a)) ||
            (st = co_get_float(b, node, path, "threshold", 0, 20.0, -big, big, &c)))
            return st;
        p->a = (float)a;
        p->b = (float)c;
    }
    return CO_OK;
}

co_status co_build_activation(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *props)
{
    const cJSON *type_item = cJSON_GetObjectItemCaseSensitive(node, "type");
    const act_type *t = cJSON_IsString(type_item) ? find_act_type(type_item->valuestring) : NULL;
    if (!t) return co_error(CO_ERR_NETWORK, "%s: not an activation type", node_name(path));
    if (in < 0) /* checked before building, as co_emit's own refusal carries no status */
        return co_error(CO_ERR_NETWORK, "%s (%s): takes one stream but receives a list (from Broadcast/Parallel)",
                        node_name(path), t->name);
    const co_op_class *cls = NULL;
    void *params = NULL;
    co_status st = CO_OK;

    switch (t->family) {
    case FAM_ELEMENTWISE: {
        elementwise_params ew = {(ew_kind)t->kind, 0.0f, 0.0f, 0.0f};
        if ((st = read_elementwise(b, node, path, t->name, &ew))) return st;
        elementwise_params *p = co_alloc(sizeof *p);
        if (!p) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", node_name(path));
        *p = ew;
        params = p;
        cls = &k_elementwise;
        break;
    }
    case FAM_PRELU: {
        int64_t num = 1;
        const float *w = NULL;
        if ((st = co_get_int(b, node, path, "num_parameters", 0, 1, 1, (int64_t)1 << 24, &num)) ||
            (st = co_take_tensor(b, path, "weight", 1, &num, 1, &w)))
            return st;
        prelu_params *p = co_alloc(sizeof *p);
        if (!p) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", node_name(path));
        p->num = num;
        p->w = w;
        params = p;
        cls = &k_prelu;
        break;
    }
    case FAM_GLU: {
        int64_t dim = -1;
        if ((st = co_get_int(b, node, path, "dim", 0, -1, -CO_MAX_DIMS, CO_MAX_DIMS - 1, &dim))) return st;
        glu_params *p = co_alloc(sizeof *p);
        if (!p) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", node_name(path));
        p->dim = (int)dim;
        params = p;
        cls = &k_glu;
        break;
    }
    case FAM_SOFTMAX: {
        const int is_2d = strcmp(t->name, "Softmax2d") == 0;
        int64_t dim = -3; /* Softmax2d: dim -3 of a 4D clip, the channels */
        if (!is_2d && (st = co_get_int(b, node, path, "dim", 1, 0, -CO_MAX_DIMS, CO_MAX_DIMS - 1, &dim))) return st;
        softmax_params *p = co_alloc(sizeof *p);
        if (!p) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", node_name(path));
        p->kind = (sm_kind)t->kind;
        p->dim = (int)dim;
        p->is_2d = is_2d;
        p->type = t->name;
        params = p;
        cls = &k_softmax;
        break;
    }
    }

    co_op *op = co_emit(b, cls, path, 1, &in, params); /* frees params on failure */
    if (!op) return co_emit_failure(b);
    *out = op->out;
    set_frame_local(props);
    return CO_OK;
}

/* Identity and every dropout (identity at inference): no op, the output is the input value. */
co_status co_build_identity(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *props)
{
    (void)b;
    (void)node;
    (void)path;
    *out = in;
    set_frame_local(props);
    return CO_OK;
}
