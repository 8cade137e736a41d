/*
 * linear.c — Linear along one dimension of each frame.
 *
 * A negative channel_dim counts against the clip (B, C, T, *S), as the reference's forward
 * reads it, wherever that names the channel or a spatial dim (co.Linear(2048, 400,
 * channel_dim=-4) in CoResNet's head is the channel dim of a 5-d clip). Decision (semantics.md
 * Q14): where it would name time, it counts from the end of the FRAME (B, C, *S) instead, so
 * channel_dim=-1 on a network without spatial dims projects the channels in every mode
 * (torch.nn.Linear on a (B, C, T) clip would mix time, which no stream can do). Both counts
 * agree on every spatial dim.
 */
#include <string.h>

#include "core/build.h"
#include "kernels/gemm.h"
#include "kernels/weights.h"

/* dim 2 of the clip (B, C, T, *S) is time */
enum { CO_CLIP_TIME_DIM = 2 };

typedef struct linear_params {
    int64_t in_f, out_f;
    int channel_dim;
    const float *w, *bias; /* model-owned */
    void *w_packed;        /* W^T packed for co_gemm_packed at build (owned; frees with the op) */
} linear_params;

enum { A_AXIS, A_OUTER, A_INNER };

static co_status linear_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    const linear_params *p = op->params;
    const int t = in->has_time, frame_ndim = in->ndim - t;
    int axis;
    if (p->channel_dim < 0 && p->channel_dim + frame_ndim + 1 == CO_CLIP_TIME_DIM) { /* Q14 */
        int fa = frame_ndim + p->channel_dim; /* axis of the frame */
        axis = fa < 1 ? -1 : (fa >= 2 ? fa + t : fa);
    } else {
        axis = co_clip_dim_to_axis(p->channel_dim, in);
    }
    char buf[96];
    if (axis < 1 || axis >= in->ndim)
        return co_error(CO_ERR_SHAPE, "%s (Linear): channel_dim %d does not name a channel or spatial dim of %s", op->path,
                        p->channel_dim, co_tshape_str(in, buf, sizeof buf));
    if (in->d[axis] != p->in_f)
        return co_error(CO_ERR_SHAPE, "%s (Linear): dim %d of %s has size %lld, expected in_features=%lld", op->path, axis,
                        co_tshape_str(in, buf, sizeof buf), (long long)in->d[axis], (long long)p->in_f);
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < axis; i++) outer *= in->d[i];
    for (int i = axis + 1; i < in->ndim; i++) inner *= in->d[i];
    rt->aux[A_AXIS] = axis;
    rt->aux[A_OUTER] = outer;
    rt->aux[A_INNER] = inner;
    rt->out = *in;
    rt->out.d[axis] = p->out_f;
    rt->macs = outer * inner * p->in_f * p->out_f;
    return CO_OK;
}

static void linear_run(const co_op *op, const co_oprt *rt, const float *x, float *y)
{
    const linear_params *p = op->params;
    const int64_t outer = rt->aux[A_OUTER], inner = rt->aux[A_INNER];
    if (inner == 1) { /* rows of x are feature vectors: Y = X W^T (W also packed at build) */
        co_times_weights(outer, p->out_f, p->in_f, x, p->in_f, p->w, p->in_f, p->w_packed, y, p->out_f);
        if (p->bias)
            for (int64_t o = 0; o < outer; o++)
                for (int64_t j = 0; j < p->out_f; j++) y[o * p->out_f + j] += p->bias[j];
        return;
    }
    for (int64_t o = 0; o < outer; o++) {
        float *yo = y + o * p->out_f * inner;
        co_gemm_nn(p->out_f, inner, p->in_f, p->w, p->in_f, x + o * p->in_f * inner, inner, 0.0f, yo, inner);
        if (p->bias)
            for (int64_t j = 0; j < p->out_f; j++)
                for (int64_t i = 0; i < inner; i++) yo[j * inner + i] += p->bias[j];
    }
}

static int linear_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out, float *scratch)
{
    linear_run(op, rt, in[0], out);
    return 1;
}

static void linear_destroy(co_op *op)
{
    linear_params *p = op->params;
    if (p) co_free(p->w_packed);
    co_free(p);
}

/* n streams (co_forward_step_streams): their rows gathered into one block, one product for all
 * (the same as a lockstep batch of n x B), the rows scattered back. */
static void linear_step_multi(const co_op *op, const co_oprt *rt, int n, void *const *states, const float *const *in,
                              float *const *out, int *produced, float *scratch)
{
    const linear_params *p = op->params;
    const int64_t outer = rt->aux[A_OUTER], inner = rt->aux[A_INNER];
    const size_t xin = (size_t)(outer * p->in_f * inner), yout = (size_t)(outer * p->out_f * inner);
    if (inner != 1) {
        for (int i = 0; i < n; i++) produced[i] = linear_step(op, rt, NULL, in + i, out[i], scratch);
        return;
    }
    float *x = scratch, *y = scratch + xin * (size_t)n; /* the gather room of step_multi's scratch */
    for (int i = 0; i < n; i++) memcpy(x + xin * (size_t)i, in[i], xin * sizeof(float));
    co_oprt all = *rt;
    all.aux[A_OUTER] = outer * n;
    linear_run(op, &all, x, y);
    for (int i = 0; i < n; i++) {
        memcpy(out[i], y + yout * (size_t)i, yout * sizeof(float));
        produced[i] = 1;
    }
}

static const co_op_class k_linear = {"linear", linear_resolve, NULL, NULL, linear_step, NULL, linear_destroy,
                                     .step_multi = linear_step_multi};

co_status co_build_linear(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *props)
{
    int64_t in_f, out_f, cdim;
    int has_bias;
    co_status st;
    if ((st = co_get_int(b, node, path, "in_features", 1, 0, 1, 1 << 24, &in_f)) ||
        (st = co_get_int(b, node, path, "out_features", 1, 0, 1, 1 << 24, &out_f)) ||
        (st = co_get_bool(b, node, path, "bias", 0, 1, &has_bias)) ||
        (st = co_get_int(b, node, path, "channel_dim", 0, -1, -CO_MAX_DIMS, CO_MAX_DIMS, &cdim)))
        return st;
    if (in_f * out_f > (int64_t)1 << 30) return co_error(CO_ERR_NETWORK, "%s: Linear of %lld x %lld is too large", path,
                                                         (long long)out_f, (long long)in_f);
    linear_params *p = co_calloc(1, sizeof *p);
    if (!p) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    p->in_f = in_f;
    p->out_f = out_f;
    p->channel_dim = (int)cdim;
    int64_t wshape[2] = {out_f, in_f};
    if ((st = co_take_tensor(b, path, "weight", 2, wshape, 1, &p->w)) ||
        (has_bias && (st = co_take_tensor(b, path, "bias", 1, &out_f, 1, &p->bias)))) {
        co_free(p);
        return st;
    }
    /* the weight in the layout the product kernels read (kernels/gemm.h), once per model */
    if (!(p->w_packed = co_alloc(co_gemm_pack_size(in_f, out_f)))) {
        co_free(p);
        return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    co_gemm_pack_b(1, in_f, out_f, p->w, in_f, p->w_packed);
    co_op *op = co_emit(b, &k_linear, path, 1, &in, p);
    if (!op) return co_emit_failure(b);
    *out = op->out;
    co_props_frame_local(props);
    return CO_OK;
}

/* ---- this family's module types (the registry, build.h); variant unused: the build reads "type" */
static const co_module_reg k_linear_modules[] = {
    {"Linear", co_build_linear, 0},
};
CO_MODULE_LIST(co_linear_modules, k_linear_modules)
