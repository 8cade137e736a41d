/*
 * activation.c — torch.nn activations, and Identity / dropouts (which compile to nothing).
 *
 * Every activation here is frame-local (receptive field 1, no state), so step mode is the clip
 * computation on a one-frame shape. Op classes:
 *   "elementwise" — all pointwise activations: co_pointwise_run (src/kernels/pointwise.c), the
 *                   one implementation of each formula.
 *   "prelu"       — PReLU with one slope, or one per channel (dim 1).
 *   "glu"         — GLU: first half of a dim times the sigmoid of the second half.
 *   "softmax"     — Softmax / Softmin / LogSoftmax over one dim, and Softmax2d (over channels).
 * resolve reduces the given shape (frame or clip) to (outer, D, inner) in rt->aux, and one
 * kernel serves both modes. Dims are as torch sees the clip (B, C, T, *S); batch and time are
 * refused (an op over time is not frame-local). Formulas follow ATen's CPU kernels.
 *
 * k_act below is the one table of names: each row maps a torch.nn module type and/or a torch
 * functional name (traced graphs, Lambda built-ins) to its formula and reads its keys. The
 * module rows are this family's entries in the registry (co_activation_modules).
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "core/build.h"
#include "core/fuse.h"
#include "kernels/pointwise.h"
#include "kernels/threadpool.h"

/* (outer, D, inner) decomposition of a shape around one axis, in rt->aux */
enum { A_OUTER, A_DIM, A_INNER };

static const char *node_name(const char *path) { return path[0] ? path : "<root>"; }

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

static co_status elementwise_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    (void)op;
    rt->out = *in;
    rt->macs = co_tshape_numel(in);
    return CO_OK;
}

/* Elements of one task of a large element-wise op on the current pool (a CoOadTR window's GELU:
 * 8 x 2048 x 64 floats). A power of two, so every chunk starts on the same vector lane as in one
 * call over the whole array: the partition is fixed by the size and the result is the same bits
 * for any thread count. */
enum { ELEMENTWISE_TASK_FLOATS = 1 << 14 };

typedef struct elementwise_job {
    const co_pointwise *pw;
    const float *x;
    float *y;
    int64_t n;
} elementwise_job;

static void elementwise_task(void *ctx, int task)
{
    const elementwise_job *j = ctx;
    const int64_t at = (int64_t)task * ELEMENTWISE_TASK_FLOATS, left = j->n - at;
    co_pointwise_run(j->pw, j->x + at, j->y + at, left < ELEMENTWISE_TASK_FLOATS ? left : ELEMENTWISE_TASK_FLOATS);
}

static int elementwise_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out,
                            float *scratch)
{
    (void)state;
    (void)scratch;
    const int64_t n = co_tshape_numel(&rt->out);
    if (n <= ELEMENTWISE_TASK_FLOATS) {
        co_pointwise_run(op->params, in[0], out, n);
        return 1;
    }
    elementwise_job job = {op->params, in[0], out, n};
    co_pool_run(co_pool_current(), (int)((n + ELEMENTWISE_TASK_FLOATS - 1) / ELEMENTWISE_TASK_FLOATS),
                elementwise_task, &job);
    return 1;
}

static const co_op_class k_elementwise = {
    .name = "elementwise",
    .resolve = elementwise_resolve,
    .step = elementwise_step};

int co_op_pointwise(const co_op *op, co_pointwise *f)
{
    if (op->cls != &k_elementwise) return 0;
    *f = *(const co_pointwise *)op->params;
    return 1;
}

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

typedef struct softmax_params {
    co_softmax_kind kind;
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

static int softmax_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out,
                        float *scratch)
{
    (void)state;
    const softmax_params *p = op->params;
    co_softmax_run(p->kind, rt->aux[A_OUTER], rt->aux[A_DIM], rt->aux[A_INNER], in[0], out, scratch);
    return 1;
}

static const co_op_class k_softmax = {
    .name = "softmax", .resolve = softmax_resolve, .step = softmax_step};

/* ================================ the table ================================ */

typedef enum act_family { FAM_POINTWISE, FAM_IDENTITY, FAM_PRELU, FAM_GLU, FAM_SOFTMAX } act_family;

/* Reads the keys of a pointwise row into p's constants (p->kind is preset from the row).
 * `what` names the row in messages (the module type or the functional name). */
typedef co_status (*act_reader)(co_builder *b, const cJSON *node, const char *path, const char *what, co_pointwise *p);

typedef struct act_row {
    const char *module;     /* torch.nn type name as in the file, or NULL */
    const char *functional; /* torch functional name (graph ops, Lambda built-ins), or NULL */
    act_family family;
    int kind;               /* co_pw_kind or co_softmax_kind */
    act_reader read;        /* NULL: no keys */
} act_row;

static const double k_big = FLT_MAX;

static co_status rd_relu6(co_builder *b, const cJSON *node, const char *path, const char *what, co_pointwise *p)
{
    p->a = 0.0f;
    p->b = 6.0f;
    return CO_OK;
}

static co_status rd_selu(co_builder *b, const cJSON *node, const char *path, const char *what, co_pointwise *p)
{
    const float alpha = 1.6732632423543772848170429916717f, scale = 1.0507009873554804934193349852946f;
    p->a = alpha * scale; /* ATen: negcoef = alpha * scale, poscoef = scale, input scale 1 */
    p->b = scale;
    p->c = 1.0f;
    return CO_OK;
}

static co_status rd_gelu(co_builder *b, const cJSON *node, const char *path, const char *what, co_pointwise *p)
{
    static const char *const k_approx[] = {"none", "tanh", NULL};
    int approx = 0;
    co_status st = co_get_choice(b, node, path, "approximate", 0, 0, k_approx, &approx);
    p->kind = approx ? CO_PW_GELU_TANH : CO_PW_GELU_ERF;
    return st;
}

static co_status read_elu(co_builder *b, const cJSON *node, const char *path, const char *what, int celu,
                          co_pointwise *p)
{
    double a = 0;
    co_status st = co_get_float(b, node, path, "alpha", 0, 1.0, -k_big, k_big, &a);
    if (st) return st;
    if (celu && a == 0.0) return co_error(CO_ERR_NETWORK, "%s (%s): alpha cannot be 0", node_name(path), what);
    p->a = (float)a;
    p->b = 1.0f;
    p->c = celu ? (float)(1.0 / a) : 1.0f; /* CELU is ELU with input scale 1/alpha */
    return CO_OK;
}

static co_status rd_elu(co_builder *b, const cJSON *node, const char *path, const char *what, co_pointwise *p)
{
    return read_elu(b, node, path, what, 0, p);
}

static co_status rd_celu(co_builder *b, const cJSON *node, const char *path, const char *what, co_pointwise *p)
{
    return read_elu(b, node, path, what, 1, p);
}

/* The two bounds or parameters most readers take: keys ka and kc (torch's defaults da and dc when
 * absent, unless required), any finite float, into *a and *c. */
static co_status read_pair(co_builder *b, const cJSON *node, const char *path, int required, const char *ka, double da,
                           const char *kc, double dc, double *a, double *c)
{
    co_status st = co_get_float(b, node, path, ka, required, da, -k_big, k_big, a);
    return st ? st : co_get_float(b, node, path, kc, required, dc, -k_big, k_big, c);
}

/* read_pair into p->a and p->b as read. */
static co_status read_pair_ab(co_builder *b, const cJSON *node, const char *path, int required, const char *ka,
                              double da, const char *kc, double dc, co_pointwise *p)
{
    double a = 0, c = 0;
    co_status st = read_pair(b, node, path, required, ka, da, kc, dc, &a, &c);
    if (st) return st;
    p->a = (float)a;
    p->b = (float)c;
    return CO_OK;
}

static co_status rd_hardtanh(co_builder *b, const cJSON *node, const char *path, const char *what, co_pointwise *p)
{
    double a = 0, c = 0;
    co_status st = read_pair(b, node, path, 0, "min_val", -1.0, "max_val", 1.0, &a, &c);
    if (st) return st;
    if (!(c > a)) /* torch asserts max_val > min_val */
        return co_error(CO_ERR_NETWORK, "%s (%s): max_val %g must be greater than min_val %g", node_name(path), what,
                        c, a);
    p->a = (float)a;
    p->b = (float)c;
    return CO_OK;
}

/* clamp(x, min, max): a missing or null bound is unbounded; min > max gives max everywhere
 * (NaN stays NaN), as torch.clamp does. */
static co_status rd_clamp(co_builder *b, const cJSON *node, const char *path, const char *what, co_pointwise *p)
{
    double a = 0, c = 0;
    co_status st = read_pair(b, node, path, 0, "min", -INFINITY, "max", INFINITY, &a, &c);
    if (st) return st;
    p->a = (float)(a > c ? c : a);
    p->b = (float)c;
    return CO_OK;
}

static co_status rd_threshold(co_builder *b, const cJSON *node, const char *path, const char *what, co_pointwise *p)
{
    return read_pair_ab(b, node, path, 1, "threshold", 0.0, "value", 0.0, p);
}

static co_status rd_rrelu(co_builder *b, const cJSON *node, const char *path, const char *what, co_pointwise *p)
{
    double a = 0, c = 0;
    co_status st = read_pair(b, node, path, 0, "lower", 1.0 / 8.0, "upper", 1.0 / 3.0, &a, &c);
    if (st) return st;
    if (a > c) return co_error(CO_ERR_NETWORK, "%s (%s): lower %g must not exceed upper %g", node_name(path), what, a, c);
    p->a = (float)((a + c) / 2.0); /* eval mode: a fixed slope, the mean of the bounds */
    return CO_OK;
}

/* One float under `key` (default def, at least lo) into p->a. */
static co_status read_one(co_builder *b, const cJSON *node, const char *path, const char *key, double def, double lo,
                          co_pointwise *p)
{
    double a = 0;
    co_status st = co_get_float(b, node, path, key, 0, def, lo, k_big, &a);
    p->a = (float)a;
    return st;
}

static co_status rd_leaky(co_builder *b, const cJSON *node, const char *path, const char *what, co_pointwise *p)
{
    return read_one(b, node, path, "negative_slope", 0.01, -k_big, p);
}

static co_status rd_hardshrink(co_builder *b, const cJSON *node, const char *path, const char *what, co_pointwise *p)
{
    return read_one(b, node, path, "lambd", 0.5, -k_big, p);
}

static co_status rd_softshrink(co_builder *b, const cJSON *node, const char *path, const char *what, co_pointwise *p)
{
    return read_one(b, node, path, "lambd", 0.5, 0.0, p); /* torch checks lambd >= 0 for Softshrink only */
}

static co_status rd_softplus(co_builder *b, const cJSON *node, const char *path, const char *what, co_pointwise *p)
{
    return read_pair_ab(b, node, path, 0, "beta", 1.0, "threshold", 20.0, p);
}

#define PW(module, functional, kind, read) {module, functional, FAM_POINTWISE, kind, read}
static const act_row k_act[] = {
    PW("ReLU", "relu", CO_PW_RELU, NULL),
    PW("ReLU6", "relu6", CO_PW_HARDTANH, rd_relu6),
    PW("Sigmoid", "sigmoid", CO_PW_SIGMOID, NULL),
    PW("Tanh", "tanh", CO_PW_TANH, NULL),
    PW("SiLU", "silu", CO_PW_SILU, NULL),
    PW("Mish", "mish", CO_PW_MISH, NULL),
    PW("Hardswish", "hardswish", CO_PW_HARDSWISH, NULL),
    PW("Hardsigmoid", "hardsigmoid", CO_PW_HARDSIGMOID, NULL),
    PW("SELU", "selu", CO_PW_ELU, rd_selu),
    PW("LogSigmoid", "logsigmoid", CO_PW_LOGSIGMOID, NULL),
    PW("Softsign", "softsign", CO_PW_SOFTSIGN, NULL),
    PW("Tanhshrink", "tanhshrink", CO_PW_TANHSHRINK, NULL),
    PW("GELU", "gelu", CO_PW_GELU_ERF, rd_gelu),
    PW("ELU", "elu", CO_PW_ELU, rd_elu),
    PW("CELU", "celu", CO_PW_ELU, rd_celu),
    PW("LeakyReLU", "leaky_relu", CO_PW_LEAKY, rd_leaky),
    PW("Hardtanh", "hardtanh", CO_PW_HARDTANH, rd_hardtanh),
    PW("Threshold", "threshold", CO_PW_THRESHOLD, rd_threshold),
    PW("RReLU", NULL, CO_PW_LEAKY, rd_rrelu),
    PW("Hardshrink", "hardshrink", CO_PW_HARDSHRINK, rd_hardshrink),
    PW("Softshrink", "softshrink", CO_PW_SOFTSHRINK, rd_softshrink),
    PW("Softplus", "softplus", CO_PW_SOFTPLUS, rd_softplus),
    PW(NULL, "exp", CO_PW_EXP, NULL),
    PW(NULL, "log", CO_PW_LOG, NULL),
    PW(NULL, "abs", CO_PW_ABS, NULL),
    PW(NULL, "neg", CO_PW_NEG, NULL),
    PW(NULL, "square", CO_PW_SQUARE, NULL),
    PW(NULL, "sqrt", CO_PW_SQRT, NULL),
    PW(NULL, "rsqrt", CO_PW_RSQRT, NULL),
    PW(NULL, "reciprocal", CO_PW_RECIPROCAL, NULL),
    PW(NULL, "sin", CO_PW_SIN, NULL),
    PW(NULL, "cos", CO_PW_COS, NULL),
    PW(NULL, "erf", CO_PW_ERF, NULL),
    PW(NULL, "expm1", CO_PW_EXPM1, NULL),
    PW(NULL, "log1p", CO_PW_LOG1P, NULL),
    PW(NULL, "floor", CO_PW_FLOOR, NULL),
    PW(NULL, "ceil", CO_PW_CEIL, NULL),
    PW(NULL, "round", CO_PW_ROUND, NULL),
    PW(NULL, "sign", CO_PW_SIGN, NULL),
    PW(NULL, "logical_not", CO_PW_LOGICAL_NOT, NULL),
    PW(NULL, "clamp", CO_PW_HARDTANH, rd_clamp),
    /* Identity and the dropouts compile to nothing; functional identity is a copy */
    {"Identity", "identity", FAM_IDENTITY, CO_PW_IDENTITY, NULL},
    {"Dropout", NULL, FAM_IDENTITY, 0, NULL},
    {"Dropout1d", NULL, FAM_IDENTITY, 0, NULL},
    {"Dropout2d", NULL, FAM_IDENTITY, 0, NULL},
    {"Dropout3d", NULL, FAM_IDENTITY, 0, NULL},
    {"AlphaDropout", NULL, FAM_IDENTITY, 0, NULL},
    {"FeatureAlphaDropout", NULL, FAM_IDENTITY, 0, NULL},
    {"PReLU", NULL, FAM_PRELU, 0, NULL},
    {"GLU", NULL, FAM_GLU, 0, NULL},
    {"Softmax", NULL, FAM_SOFTMAX, CO_SOFTMAX, NULL},
    {"Softmin", NULL, FAM_SOFTMAX, CO_SOFTMIN, NULL},
    {"LogSoftmax", NULL, FAM_SOFTMAX, CO_LOG_SOFTMAX, NULL},
    {"Softmax2d", NULL, FAM_SOFTMAX, CO_SOFTMAX, NULL},
};
#undef PW

enum { K_ACT_ROWS = sizeof k_act / sizeof k_act[0] };

/* The registry's view of k_act: its module rows (a functional-only row gives type NULL). */
int co_activation_modules(size_t i, co_module_reg *out)
{
    if (i >= K_ACT_ROWS) return 0;
    out->type = k_act[i].module;
    out->build = co_build_activation;
    out->variant = (int)i;
    return 1;
}

co_status co_read_pointwise(co_builder *b, const cJSON *node, const char *path, const char *fn, co_pointwise *out)
{
    for (size_t i = 0; fn && i < K_ACT_ROWS; i++) {
        const act_row *r = &k_act[i];
        if (!r->functional || strcmp(r->functional, fn) != 0) continue;
        co_pointwise p = {(co_pw_kind)r->kind, 0.0f, 0.0f, 0.0f};
        co_status st = r->read ? r->read(b, node, path, r->functional, &p) : CO_OK;
        if (st) return st;
        *out = p;
        return CO_OK;
    }
    return co_error(CO_ERR_NETWORK, "%s: unknown element-wise function '%.64s' (see docs/format.md, Graph nodes)",
                    node_name(path), fn ? fn : "(null)");
}

/* ================================ building ================================ */

co_status co_build_activation(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *props)
{
    const int v = co_build_variant(b);
    if (v < 0 || v >= K_ACT_ROWS || !k_act[v].module)
        return co_error(CO_ERR_NETWORK, "%s: not an activation type", node_name(path));
    const act_row *t = &k_act[v];
    if (t->family == FAM_IDENTITY) { /* no op, the output is the input value (a list passes through) */
        *out = in;
        set_frame_local(props);
        return CO_OK;
    }
    if (in < 0) /* checked before building, as co_emit's own refusal carries no status */
        return co_error(CO_ERR_NETWORK, "%s (%s): takes one stream but receives a list (from Broadcast/Parallel)",
                        node_name(path), t->module);
    const co_op_class *cls = NULL;
    void *params = NULL;
    co_status st = CO_OK;

    switch (t->family) {
    case FAM_POINTWISE: {
        co_pointwise ew = {(co_pw_kind)t->kind, 0.0f, 0.0f, 0.0f};
        if (t->read && (st = t->read(b, node, path, t->module, &ew))) return st;
        co_pointwise *p = co_alloc(sizeof *p);
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
        const int is_2d = strcmp(t->module, "Softmax2d") == 0;
        int64_t dim = -3; /* Softmax2d: dim -3 of a 4D clip, the channels */
        if (!is_2d && (st = co_get_int(b, node, path, "dim", 1, 0, -CO_MAX_DIMS, CO_MAX_DIMS - 1, &dim))) return st;
        softmax_params *p = co_alloc(sizeof *p);
        if (!p) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", node_name(path));
        p->kind = (co_softmax_kind)t->kind;
        p->dim = (int)dim;
        p->is_2d = is_2d;
        p->type = t->module;
        params = p;
        cls = &k_softmax;
        break;
    }
    case FAM_IDENTITY:
        break;
    }

    co_op *op = co_emit(b, cls, path, 1, &in, params); /* frees params on failure */
    if (!op) return co_emit_failure(b);
    *out = op->out;
    set_frame_local(props);
    return CO_OK;
}
