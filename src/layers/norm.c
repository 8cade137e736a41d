/*
 * norm.c — BatchNorm / InstanceNorm (eval mode, running statistics), GroupNorm and LayerNorm.
 *
 * Op classes:
 *   "channel_affine" — BatchNorm1d/2d/3d and InstanceNorm1d/2d/3d with running statistics:
 *                      y = x * scale[c] + shift[c], both precomputed at build time as ATen does
 *                      (scale = w / sqrt(var + eps), shift = b - mean * scale). Statistics of the
 *                      input itself (track_running_stats=false) are refused: not streamable.
 *   "group_norm"     — torch.nn.GroupNorm on the tensor it gets: each (batch, group) over C/G
 *                      channels x all remaining dims. In clip mode that includes T, in step mode
 *                      one frame — the reference's own difference (semantics.md Q11), kept.
 *   "layer_norm"     — over the trailing len(normalized_shape) dims, which must be spatial, so
 *                      that clip and frame mode normalise the same elements.
 * Statistics are accumulated in double (two passes); rstd = 1 / sqrt(var + eps) as in ATen. The
 * per-channel affine and the layer-norm rows are the shared kernels of src/kernels/pointwise.c.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "core/build.h"
#include "core/fuse.h"
#include "kernels/pointwise.h"

enum { A_OUTER, A_DIM, A_INNER };

static const char *node_name(const char *path) { return path[0] ? path : "<root>"; }

static int clip_rank_of(const co_tshape *s) { return s->has_time ? s->ndim : s->ndim + 1; }

/* ================================ BatchNorm / InstanceNorm ================================ */

typedef struct channel_affine_params {
    const char *type; /* static string, for messages */
    int clip_rank;    /* the rank torch's _check_input_dim accepts for a batched clip */
    int64_t channels;
    co_fused_act act; /* an activation fused into this op (src/core/fuse.c) */
    float coef[]; /* scale[channels] then shift[channels] */
} channel_affine_params;

static co_status channel_affine_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    const channel_affine_params *p = op->params;
    char buf[96];
    if (clip_rank_of(in) != p->clip_rank)
        return co_error(CO_ERR_SHAPE, "%s (%s): needs clips of %d dims (B, C, T%s), frames of %d; input is %s",
                        node_name(op->path), p->type, p->clip_rank,
                        p->clip_rank == 3 ? "" : p->clip_rank == 4 ? ", S" : ", H, W", p->clip_rank - 1,
                        co_tshape_str(in, buf, sizeof buf));
    if (in->d[1] != p->channels)
        return co_error(CO_ERR_SHAPE, "%s (%s): input %s has %lld channels, num_features is %lld", node_name(op->path),
                        p->type, co_tshape_str(in, buf, sizeof buf), (long long)in->d[1], (long long)p->channels);
    rt->out = *in;
    rt->aux[A_OUTER] = in->d[0];
    rt->aux[A_DIM] = in->d[1];
    rt->aux[A_INNER] = co_tshape_numel(in) / (in->d[0] * in->d[1]);
    rt->macs = co_tshape_numel(in);
    return CO_OK;
}

static int channel_affine_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out,
                               float *scratch)
{
    (void)state;
    (void)scratch;
    const channel_affine_params *p = op->params;
    co_channel_affine_act(rt->aux[A_OUTER], rt->aux[A_DIM], rt->aux[A_INNER], p->coef, p->coef + p->channels,
                          p->act.on ? &p->act.f : NULL, in[0], out);
    return 1;
}

static const co_op_class k_channel_affine = {
    .name = "channel_affine",
    .resolve = channel_affine_resolve,
    .step = channel_affine_step};

int co_affine_coefs(const co_op *op, int *clip_rank, int64_t *channels, const float **scale, const float **shift)
{
    if (op->cls != &k_channel_affine) return 0;
    const channel_affine_params *p = op->params;
    if (p->act.on) return 0; /* y = act(affine(x)) is no longer an affine map */
    *clip_rank = p->clip_rank;
    *channels = p->channels;
    *scale = p->coef;
    *shift = p->coef + p->channels;
    return 1;
}

int co_affine_fuse_pointwise(co_op *op, const co_pointwise *act)
{
    if (op->cls != &k_channel_affine) return 0;
    return co_fused_act_set(&((channel_affine_params *)op->params)->act, act);
}

/* ================================ GroupNorm ================================ */

typedef struct group_norm_params {
    int64_t groups, channels;
    float eps;
    const float *w, *bias; /* model-owned; NULL without affine */
} group_norm_params;

static co_status group_norm_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    const group_norm_params *p = op->params;
    char buf[96];
    if (in->d[1] != p->channels)
        return co_error(CO_ERR_SHAPE, "%s (GroupNorm): input %s has %lld channels, num_channels is %lld",
                        node_name(op->path), co_tshape_str(in, buf, sizeof buf), (long long)in->d[1],
                        (long long)p->channels);
    rt->out = *in;
    rt->aux[A_OUTER] = in->d[0];
    rt->aux[A_DIM] = in->d[1];
    rt->aux[A_INNER] = co_tshape_numel(in) / (in->d[0] * in->d[1]); /* includes T in clip mode */
    rt->macs = 3 * co_tshape_numel(in);
    return CO_OK;
}

static void group_norm_run(const group_norm_params *p, const co_oprt *rt, const float *restrict x, float *restrict y)
{
    const int64_t batch = rt->aux[A_OUTER], channels = rt->aux[A_DIM], inner = rt->aux[A_INNER];
    const int64_t per_group = channels / p->groups;
    for (int64_t n = 0; n < batch; n++)
        for (int64_t g = 0; g < p->groups; g++) {
            const int64_t c0 = g * per_group, at = (n * channels + c0) * inner; /* a group is contiguous */
            double mean, var;
            co_moments(x + at, per_group * inner, &mean, &var);
            double rstd = 1.0 / sqrt(var + p->eps);
            /* torch sums x and x^2 in float32: where that sum of squares overflows, its output is
             * NaN; match that rather than stay finite in double */
            if ((var + mean * mean) * (double)(per_group * inner) > FLT_MAX) rstd = NAN;
            for (int64_t c = c0; c < c0 + per_group; c++) {
                /* fold normalisation and affine into one scale/shift per channel, as ATen does */
                const double s = rstd * (p->w ? p->w[c] : 1.0f);
                const float scale = (float)s, shift = (float)((p->bias ? p->bias[c] : 0.0f) - mean * s);
                const float *xr = x + (n * channels + c) * inner;
                float *yr = y + (n * channels + c) * inner;
                for (int64_t i = 0; i < inner; i++) yr[i] = xr[i] * scale + shift;
            }
        }
}

static int group_norm_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out,
                           float *scratch)
{
    (void)state;
    (void)scratch;
    group_norm_run(op->params, rt, in[0], out);
    return 1;
}

static const co_op_class k_group_norm = {
    .name = "group_norm", .resolve = group_norm_resolve, .step = group_norm_step};

/* ================================ LayerNorm ================================ */

typedef struct layer_norm_params {
    int n_dims;                  /* len(normalized_shape) */
    int64_t shape[CO_MAX_DIMS];  /* normalized_shape */
    int64_t numel;               /* its product */
    float eps;
    const float *w, *bias; /* model-owned; NULL without elementwise_affine */
} layer_norm_params;

static co_status layer_norm_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    const layer_norm_params *p = op->params;
    const int spatial = in->ndim - in->has_time - 2; /* spatial dims of the frame */
    char buf[96];
    if (p->n_dims > spatial)
        return co_error(CO_ERR_SHAPE,
                        "%s (LayerNorm): normalized_shape has %d dims but the frame has %d spatial dims (input %s); "
                        "torch's forward on the clip (B, C, T, *S) would normalise over the time dim, which is not "
                        "frame-local",
                        node_name(op->path), p->n_dims, spatial, co_tshape_str(in, buf, sizeof buf));
    for (int i = 0; i < p->n_dims; i++)
        if (in->d[in->ndim - p->n_dims + i] != p->shape[i])
            return co_error(CO_ERR_SHAPE, "%s (LayerNorm): input %s does not end in normalized_shape (dim %d is %lld, "
                                          "expected %lld)",
                            node_name(op->path), co_tshape_str(in, buf, sizeof buf), in->ndim - p->n_dims + i,
                            (long long)in->d[in->ndim - p->n_dims + i], (long long)p->shape[i]);
    rt->out = *in;
    rt->aux[A_OUTER] = co_tshape_numel(in) / p->numel;
    rt->aux[A_DIM] = p->numel;
    rt->aux[A_INNER] = 1;
    rt->macs = 3 * co_tshape_numel(in);
    return CO_OK;
}

static int layer_norm_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out,
                           float *scratch)
{
    (void)state;
    (void)scratch;
    const layer_norm_params *p = op->params;
    co_layer_norm_rows(rt->aux[A_OUTER], rt->aux[A_DIM], p->eps, p->w, p->bias, in[0], out); /* affine: both */
    return 1;
}

static const co_op_class k_layer_norm = {
    .name = "layer_norm", .resolve = layer_norm_resolve, .step = layer_norm_step};

/* ================================ building ================================ */

typedef enum norm_family { FAM_BATCH, FAM_INSTANCE, FAM_GROUP, FAM_LAYER } norm_family;

typedef struct norm_type {
    const char *name;
    norm_family family;
    int clip_rank; /* Batch/InstanceNorm: rank of the batched clip torch accepts */
} norm_type;

static const norm_type k_norm_types[] = {
    {"BatchNorm1d", FAM_BATCH, 3},    {"BatchNorm2d", FAM_BATCH, 4},    {"BatchNorm3d", FAM_BATCH, 5},
    {"InstanceNorm1d", FAM_INSTANCE, 3}, {"InstanceNorm2d", FAM_INSTANCE, 4}, {"InstanceNorm3d", FAM_INSTANCE, 5},
    {"GroupNorm", FAM_GROUP, 0},      {"LayerNorm", FAM_LAYER, 0},
};

enum { K_NORM_TYPES = sizeof k_norm_types / sizeof k_norm_types[0] };

/* The registry's view of k_norm_types (variant: the row). */
int co_norm_modules(size_t i, co_module_reg *out)
{
    if (i >= K_NORM_TYPES) return 0;
    out->type = k_norm_types[i].name;
    out->build = co_build_norm;
    out->variant = (int)i;
    return 1;
}

static const int64_t k_max_features = (int64_t)1 << 24;

static co_status build_running_stats(co_builder *b, const cJSON *node, const char *path, const norm_type *t,
                                     void **params)
{
    const int is_batch = t->family == FAM_BATCH;
    int64_t channels;
    double eps;
    int affine, track;
    co_status st;
    if ((st = co_get_int(b, node, path, "num_features", 1, 0, 1, k_max_features, &channels)) ||
        (st = co_get_float(b, node, path, "eps", 0, 1e-5, 0.0, FLT_MAX, &eps)) ||
        (st = co_get_bool(b, node, path, "affine", 0, is_batch, &affine)) ||
        (st = co_get_bool(b, node, path, "track_running_stats", 0, is_batch, &track)))
        return st;
    if (!track)
        return co_error(CO_ERR_UNSUPPORTED,
                        "%s (%s): track_running_stats=false normalises with statistics of the input itself (in eval "
                        "mode too), over T in a clip but over one frame in a step; not streamable",
                        node_name(path), t->name);
    const float *w = NULL, *bias = NULL, *mean = NULL, *var = NULL;
    if ((affine && ((st = co_take_tensor(b, path, "weight", 1, &channels, 1, &w)) ||
                    (st = co_take_tensor(b, path, "bias", 1, &channels, 1, &bias)))) ||
        (st = co_take_buffer(b, path, "running_mean", 1, &channels, 1, &mean)) ||
        (st = co_take_buffer(b, path, "running_var", 1, &channels, 1, &var)) ||
        (st = co_skip_tensor(b, path, "num_batches_tracked", 0)))
        return st;
    channel_affine_params *p = co_alloc(sizeof *p + 2 * (size_t)channels * sizeof(float));
    if (!p) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", node_name(path));
    p->type = t->name;
    p->clip_rank = t->clip_rank;
    p->channels = channels;
    p->act.on = 0;
    const float eps_f = (float)eps;
    for (int64_t c = 0; c < channels; c++) { /* ATen's batch_norm_cpu_collect_linear_and_constant_terms */
        const float invstd = 1.0f / sqrtf(var[c] + eps_f);
        const float scale = invstd * (w ? w[c] : 1.0f);
        p->coef[c] = scale;
        p->coef[channels + c] = (bias ? bias[c] : 0.0f) - mean[c] * scale;
    }
    *params = p;
    return CO_OK;
}

static co_status build_group_norm(co_builder *b, const cJSON *node, const char *path, void **params)
{
    int64_t groups, channels;
    double eps;
    int affine;
    co_status st;
    if ((st = co_get_int(b, node, path, "num_groups", 1, 0, 1, k_max_features, &groups)) ||
        (st = co_get_int(b, node, path, "num_channels", 1, 0, 1, k_max_features, &channels)) ||
        (st = co_get_float(b, node, path, "eps", 0, 1e-5, 0.0, FLT_MAX, &eps)) ||
        (st = co_get_bool(b, node, path, "affine", 0, 1, &affine)))
        return st;
    if (channels % groups != 0)
        return co_error(CO_ERR_NETWORK, "%s (GroupNorm): num_channels %lld is not divisible by num_groups %lld",
                        node_name(path), (long long)channels, (long long)groups);
    const float *w = NULL, *bias = NULL;
    if (affine && ((st = co_take_tensor(b, path, "weight", 1, &channels, 1, &w)) ||
                   (st = co_take_tensor(b, path, "bias", 1, &channels, 1, &bias))))
        return st;
    group_norm_params *p = co_alloc(sizeof *p);
    if (!p) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", node_name(path));
    p->groups = groups;
    p->channels = channels;
    p->eps = (float)eps;
    p->w = w;
    p->bias = bias;
    *params = p;
    return CO_OK;
}

static co_status build_layer_norm(co_builder *b, const cJSON *node, const char *path, void **params)
{
    int64_t shape[CO_MAX_DIMS];
    int n_dims = 0, affine;
    double eps;
    co_status st;
    if ((st = co_get_int_list(b, node, path, "normalized_shape", CO_MAX_DIMS, 1, k_max_features, shape, &n_dims)) ||
        (st = co_get_float(b, node, path, "eps", 0, 1e-5, 0.0, FLT_MAX, &eps)) ||
        (st = co_get_bool(b, node, path, "elementwise_affine", 0, 1, &affine)))
        return st;
    int64_t numel = 1;
    for (int i = 0; i < n_dims; i++) {
        numel *= shape[i];
        if (numel > (int64_t)1 << 30)
            return co_error(CO_ERR_NETWORK, "%s (LayerNorm): normalized_shape is too large", node_name(path));
    }
    const float *w = NULL, *bias = NULL;
    if (affine && ((st = co_take_tensor(b, path, "weight", n_dims, shape, 1, &w)) ||
                   (st = co_take_tensor(b, path, "bias", n_dims, shape, 1, &bias))))
        return st;
    layer_norm_params *p = co_calloc(1, sizeof *p);
    if (!p) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", node_name(path));
    p->n_dims = n_dims;
    memcpy(p->shape, shape, (size_t)n_dims * sizeof shape[0]);
    p->numel = numel;
    p->eps = (float)eps;
    p->w = w;
    p->bias = bias;
    *params = p;
    return CO_OK;
}

co_status co_build_norm(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *props)
{
    const int v = co_build_variant(b);
    if (v < 0 || v >= K_NORM_TYPES) return co_error(CO_ERR_NETWORK, "%s: not a normalisation type", node_name(path));
    const norm_type *t = &k_norm_types[v];
    if (in < 0) /* checked before building, as co_emit's own refusal carries no status */
        return co_error(CO_ERR_NETWORK, "%s (%s): takes one stream but receives a list (from Broadcast/Parallel)",
                        node_name(path), t->name);
    void *params = NULL;
    const co_op_class *cls;
    co_status st;
    switch (t->family) {
    case FAM_BATCH:
    case FAM_INSTANCE:
        st = build_running_stats(b, node, path, t, &params);
        cls = &k_channel_affine;
        break;
    case FAM_GROUP:
        st = build_group_norm(b, node, path, &params);
        cls = &k_group_norm;
        break;
    default:
        st = build_layer_norm(b, node, path, &params);
        cls = &k_layer_norm;
        break;
    }
    if (st) return st;
    co_op *op = co_emit(b, cls, path, 1, &in, params); /* frees params on failure */
    if (!op) return co_emit_failure(b);
    *out = op->out;
    co_props_frame_local(props);
    return CO_OK;
}
