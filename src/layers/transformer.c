/*
 * transformer.c — the pieces continual transformer encoders are made of, besides the
 * attentions (attention.c): LayerNorm over the embedding of each token, the recycling
 * positional encoding, SelectOrDelay and RetroactiveUnity (the residual paths of the
 * single-output and retroactive layers), SqueezeLast, and RetroactiveLambda: a sub-network
 * run in clip mode over the window of tokens a retroactive layer outputs at every step.
 *
 * Decision (semantics.md Q2): RetroactiveUnity keeps the last N inputs in an N-slot ring
 * that wraps modulo N (the reference wraps modulo N-1 and is wrong from step 2N-1), so
 * multi-layer encoders match the windowed computation at every step of any stream.
 */
#include <math.h>
#include <string.h>

#include "core/build.h"
#include "kernels/pointwise.h"
#include "kernels/threadpool.h"

/* ---- ChannelLayerNorm: LayerNorm(E) applied to each token of (B, E, *) ---- */
typedef struct cln_params { int64_t E; float eps; const float *w, *b; } cln_params;

/* Positions of one task of a LayerNorm over (B, E, inner) with inner > 1 (a RetroactiveLambda's
 * window of tokens): the tasks of the current pool are items x blocks of positions, fixed by the
 * shape, each with its own 2 E floats of scratch, so the result does not depend on threads. */
enum { CLN_POSITIONS_PER_TASK = 16 };

static int64_t cln_blocks(int64_t inner) { return (inner + CLN_POSITIONS_PER_TASK - 1) / CLN_POSITIONS_PER_TASK; }

static co_status cln_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    const cln_params *p = op->params;
    char buf[96];
    if (in->ndim < 2 || in->d[1] != p->E)
        return co_error(CO_ERR_SHAPE, "%s: LayerNorm(%lld) over the channels of %s", op->path, (long long)p->E,
                        co_tshape_str(in, buf, sizeof buf));
    rt->out = *in;
    rt->macs = 4 * co_tshape_numel(in);
    const int64_t inner = co_tshape_inner(in);
    rt->scratch_floats = inner > 1 ? (size_t)(in->d[0] * cln_blocks(inner) * 2 * p->E) : 0;
    return CO_OK;
}

typedef struct cln_job {
    const cln_params *p;
    int64_t inner, blocks;
    const float *x;
    float *y, *scratch;
} cln_job;

/* Task (b, k): positions [k P, (k + 1) P) of item b, one at a time through a gathered row. */
static void cln_task(void *ctx, int task)
{
    const cln_job *j = ctx;
    const cln_params *p = j->p;
    const int64_t E = p->E, inner = j->inner, b = task / j->blocks, s0 = (task % j->blocks) * CLN_POSITIONS_PER_TASK;
    const int64_t s1 = s0 + CLN_POSITIONS_PER_TASK < inner ? s0 + CLN_POSITIONS_PER_TASK : inner;
    float *row = j->scratch + (int64_t)task * 2 * E, *res = row + E;
    for (int64_t s = s0; s < s1; s++) {
        const float *xs = j->x + b * E * inner + s;
        float *ys = j->y + b * E * inner + s;
        for (int64_t c = 0; c < E; c++) row[c] = xs[c * inner];
        co_layer_norm_rows(1, E, p->eps, p->w, p->b, row, res);
        for (int64_t c = 0; c < E; c++) ys[c * inner] = res[c];
    }
}

/* LayerNorm over E at each position: rows of E floats with stride `inner`; a frame (B, E) has
 * contiguous rows, other shapes go through scratch one position at a time. */
static void cln_run(const co_op *op, const co_oprt *rt, const float *x, float *y, float *scratch)
{
    const cln_params *p = op->params;
    const int64_t B = rt->out.d[0], E = p->E, inner = co_tshape_inner(&rt->out);
    if (inner == 1) {
        co_layer_norm_rows(B, E, p->eps, p->w, p->b, x, y);
        return;
    }
    cln_job job = {p, inner, cln_blocks(inner), x, y, scratch};
    co_pool_run(co_pool_current(), (int)(B * job.blocks), cln_task, &job);
}

static int cln_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out, float *scratch)
{
    cln_run(op, rt, in[0], out, scratch);
    return 1;
}

static const co_op_class k_cln = {.name = "channel_layer_norm", .resolve = cln_resolve, .step = cln_step};

static co_status build_cln(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *props)
{
    int64_t shape[4];
    int n, affine, bias;
    double eps;
    co_status st;
    if ((st = co_get_int_list(b, node, path, "normalized_shape", 1, 1, 1 << 20, shape, &n)) ||
        (st = co_get_float(b, node, path, "eps", 0, 1e-5, 0.0, 1.0, &eps)) ||
        (st = co_get_bool(b, node, path, "elementwise_affine", 0, 1, &affine)) ||
        (st = co_get_bool(b, node, path, "bias", 0, 1, &bias)))
        return st;
    cln_params *p = co_calloc(1, sizeof *p);
    if (!p) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    p->E = shape[0];
    p->eps = (float)eps;
    if (affine && ((st = co_take_tensor(b, path, "weight", 1, shape, 1, &p->w)) ||
                   (bias && (st = co_take_tensor(b, path, "bias", 1, shape, 1, &p->b))))) {
        co_free(p);
        return st;
    }
    co_op *op = co_emit(b, &k_cln, path, 1, &in, p);
    if (!op) return co_emit_failure(b);
    *out = op->out;
    co_props_frame_local(props);
    return CO_OK;
}

/* ---- RecyclingPositionalEncoding: x + PE[(index) mod M] ---- */
typedef struct rpe_params { int64_t E, M; const float *pe; } rpe_params;

static co_status rpe_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    const rpe_params *p = op->params;
    char buf[96];
    if (in->ndim != 2 + in->has_time || in->d[1] != p->E)
        return co_error(CO_ERR_SHAPE, "%s: positional encoding of %lld features takes (B, %lld%s), got %s", op->path,
                        (long long)p->E, (long long)p->E, in->has_time ? ", T" : "", co_tshape_str(in, buf, sizeof buf));
    rt->out = *in;
    rt->state_bytes = in->has_time ? 0 : sizeof(int64_t);
    rt->macs = co_tshape_numel(in);
    return CO_OK;
}

static co_status rpe_check_state(const co_op *op, const co_oprt *rt, const void *state)
{
    const rpe_params *p = op->params;
    int64_t idx;
    memcpy(&idx, state, sizeof idx);
    if (idx < 0 || idx >= p->M) return co_error(CO_ERR_STATE, "%s: saved position index out of range", op->path);
    return CO_OK;
}

static int rpe_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out, float *scratch)
{
    const rpe_params *p = op->params;
    int64_t *idx = state;
    const float *pe = p->pe + *idx * p->E;
    for (int64_t b = 0; b < rt->out.d[0]; b++)
        for (int64_t c = 0; c < p->E; c++) out[b * p->E + c] = in[0][b * p->E + c] + pe[c];
    *idx = (*idx + 1) % p->M;
    return 1;
}

static co_status rpe_clip(const co_op *op, const co_oprt *rt, const co_tshape *in_shapes, const float *const *in,
                          float *out, float *scratch)
{ /* a fresh encoding: positions 0, 1, ... (mod M) */
    const rpe_params *p = op->params;
    const int64_t B = rt->out.d[0], T = rt->out.d[2];
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < p->E; c++)
            for (int64_t t = 0; t < T; t++) {
                const int64_t i = (b * p->E + c) * T + t;
                out[i] = in[0][i] + p->pe[(t % p->M) * p->E + c];
            }
    return CO_OK;
}

static const co_op_class k_rpe = {.name = "recycling_positional_encoding", .resolve = rpe_resolve,
                                  .check_state = rpe_check_state, .step = rpe_step, .clip = rpe_clip,
                                  .whole_stream = 1};

static co_status build_rpe(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *props)
{
    int64_t E, M, fus;
    int learned;
    co_status st;
    if ((st = co_get_int(b, node, path, "embed_dim", 1, 0, 1, 1 << 20, &E)) ||
        (st = co_get_int(b, node, path, "num_embeds", 1, 0, 1, 1 << 20, &M)) ||
        (st = co_get_bool(b, node, path, "learned", 0, 1, &learned)) ||
        (st = co_get_int(b, node, path, "forward_update_index_steps", 0, 1, 0, 1 << 20, &fus)))
        return st;
    rpe_params *p = co_calloc(1, sizeof *p);
    if (!p) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    p->E = E;
    p->M = M;
    int64_t shape[2] = {M, E};
    st = learned ? co_take_tensor(b, path, "pe.weight", 2, shape, 1, &p->pe)
                 : co_take_buffer(b, path, "pe.pattern", 2, shape, 1, &p->pe);
    if (st) {
        co_free(p);
        return st;
    }
    co_op *op = co_emit(b, &k_rpe, path, 1, &in, p);
    if (!op) return co_emit_failure(b);
    *out = op->out;
    co_props_frame_local(props);
    return CO_OK;
}

/* ---- token windows: SelectOrDelay(d) and RetroactiveUnity(d) ----
 * step: a ring of d (SelectOrDelay) or d+1 (RetroactiveUnity) frames; SelectOrDelay emits
 * x_{n-d}, RetroactiveUnity the last d+1 frames as (B, E, d+1), oldest first; no output for
 * the first d steps. clip: SelectOrDelay keeps token T-1-d only; RetroactiveUnity is identity. */
typedef struct window_params { int64_t d; int unity; } window_params;
typedef struct window_head { int64_t pos, count; } window_head;

static co_status window_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    const window_params *p = op->params;
    char buf[96];
    if (in->ndim != 2 + in->has_time)
        return co_error(CO_ERR_SHAPE, "%s: takes (B, E%s) tokens, got %s", op->path, in->has_time ? ", T" : "",
                        co_tshape_str(in, buf, sizeof buf));
    rt->out = *in;
    if (in->has_time) {
        if (!p->unity) {
            if (in->d[2] <= p->d)
                return co_error(CO_ERR_SHAPE, "%s: clip of %lld tokens has no token %lld steps before the last", op->path,
                                (long long)in->d[2], (long long)p->d);
            rt->out.d[2] = 1;
        }
        return CO_OK;
    }
    const int64_t slots = p->unity ? p->d + 1 : p->d;
    if (p->unity) {
        rt->out.ndim = 3;
        rt->out.d[2] = p->d + 1;
    }
    rt->state_bytes = sizeof(window_head) + (size_t)(slots * co_tshape_numel(in)) * sizeof(float);
    return CO_OK;
}

static co_status window_check_state(const co_op *op, const co_oprt *rt, const void *state)
{
    const window_params *p = op->params;
    const window_head *h = state;
    const int64_t slots = p->unity ? p->d + 1 : p->d;
    if (h->pos < 0 || h->pos >= (slots > 0 ? slots : 1) || h->count < 0 || h->count > p->d)
        return co_error(CO_ERR_STATE, "%s: saved state has an out-of-range ring index", op->path);
    return CO_OK;
}

/* The window of a RetroactiveUnity step as (B, E, W), oldest first, from its ring: one task per
 * item (its E rows of W outputs). */
typedef struct window_job {
    const float *ring;
    float *out;
    int64_t pos, W, E, n; /* n = B E floats per ring slot */
} window_job;

static void window_task(void *ctx, int b)
{
    const window_job *j = ctx;
    const int64_t W = j->W, E = j->E, first = (int64_t)b * E;
    for (int64_t w = 0; w < W; w++) {
        const float *f = j->ring + ((j->pos + w) % W) * j->n;
        for (int64_t i = first; i < first + E; i++) j->out[i * W + w] = f[i];
    }
}

static int window_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out, float *scratch)
{
    const window_params *p = op->params;
    window_head *h = state;
    const int64_t B = rt->out.d[0], E = rt->out.d[1], n = B * E;
    float *ring = (float *)(h + 1);
    if (!p->unity) {
        if (p->d == 0) {
            memcpy(out, in[0], (size_t)n * sizeof(float));
            return 1;
        }
        float *slot = ring + h->pos * n;
        const int emit = h->count >= p->d;
        if (emit) memcpy(out, slot, (size_t)n * sizeof(float));
        memcpy(slot, in[0], (size_t)n * sizeof(float));
        h->pos = (h->pos + 1) % p->d;
        if (!emit) h->count++;
        return emit;
    }
    const int64_t W = p->d + 1;
    memcpy(ring + h->pos * n, in[0], (size_t)n * sizeof(float));
    h->pos = (h->pos + 1) % W; /* now the oldest slot */
    if (h->count < p->d) {
        h->count++;
        return 0;
    }
    window_job job = {ring, out, h->pos, W, E, n};
    co_pool_run(co_pool_current(), (int)B, window_task, &job); /* one task per item */
    return 1;
}

static co_status window_clip(const co_op *op, const co_oprt *rt, const co_tshape *in_shapes, const float *const *in,
                             float *out, float *scratch)
{
    const window_params *p = op->params;
    const int64_t rows = in_shapes[0].d[0] * in_shapes[0].d[1], T = in_shapes[0].d[2];
    if (p->unity) memcpy(out, in[0], (size_t)(rows * T) * sizeof(float));
    else
        for (int64_t r = 0; r < rows; r++) out[r] = in[0][r * T + T - 1 - p->d];
    return CO_OK;
}

static const co_op_class k_window = {.name = "token_window", .resolve = window_resolve,
                                     .check_state = window_check_state, .step = window_step, .clip = window_clip,
                                     .whole_stream = 1};

static co_status build_window(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *props)
{
    const int unity = strcmp(cJSON_GetObjectItemCaseSensitive(node, "type")->valuestring, "RetroactiveUnity") == 0;
    int64_t d;
    co_status st = co_get_int(b, node, path, "delay", 1, 0, 0, 1 << 14, &d);
    if (st) return st;
    window_params *p = co_calloc(1, sizeof *p);
    if (!p) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    p->d = d;
    p->unity = unity;
    co_op *op = co_emit(b, &k_window, path, 1, &in, p);
    if (!op) return co_emit_failure(b);
    *out = op->out;
    props->receptive_field = d + 1;
    props->delay = d;
    props->stride = 1;
    props->padding = 0;
    return CO_OK;
}

/* ---- SqueezeLast: (B, E, 1) frames -> (B, E); clips unchanged ---- */
static co_status squeeze_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    char buf[96];
    rt->out = *in;
    if (in->has_time) return CO_OK;
    if (in->ndim < 3 || in->d[in->ndim - 1] != 1)
        return co_error(CO_ERR_SHAPE, "%s: cannot squeeze the last dim of %s", op->path, co_tshape_str(in, buf, sizeof buf));
    rt->out.ndim--;
    return CO_OK;
}

static int squeeze_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out, float *scratch)
{
    memcpy(out, in[0], (size_t)co_tshape_numel(&rt->out) * sizeof(float));
    return 1;
}

static const co_op_class k_squeeze = {.name = "squeeze_last", .resolve = squeeze_resolve, .step = squeeze_step};

/* ---- RetroactiveLambda: a sub-network run in clip mode on each step's (B, C, N) window ---- */
typedef struct rlambda_ext {
    co_oprt *rt;       /* per sub-op */
    co_tshape *values; /* per sub-value */
    size_t *offset;    /* per sub-value: offset in the op's scratch (floats) */
    size_t sub_scratch;
} rlambda_ext;

static void rlambda_release(const co_op *op, co_oprt *rt)
{
    const co_subplan *sp = op->params;
    rlambda_ext *e = rt->ext;
    if (!e) return;
    if (e->rt) co_ops_release(sp->ops, sp->n_ops, e->rt);
    co_free(e->rt);
    co_free(e->values);
    co_free(e->offset);
    co_free(e);
    rt->ext = NULL;
}

static co_status rlambda_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    const co_subplan *sp = op->params;
    co_tshape clip = *in;
    char buf[96];
    if (!in->has_time) { /* the step's frame (B, C, N) is the sub-network's clip of N tokens */
        if (in->ndim != 3)
            return co_error(CO_ERR_SHAPE, "%s: RetroactiveLambda steps take (B, C, N) windows, got %s", op->path,
                            co_tshape_str(in, buf, sizeof buf));
        clip.has_time = 1;
    }
    rlambda_ext *e = co_calloc(1, sizeof *e);
    if (!e) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", op->path);
    rt->ext = e;
    e->rt = co_calloc((size_t)sp->n_ops + 1, sizeof *e->rt);
    e->values = co_calloc((size_t)sp->n_values, sizeof *e->values);
    e->offset = co_calloc((size_t)sp->n_values, sizeof *e->offset);
    if (!e->rt || !e->values || !e->offset) {
        co_free(e->rt);
        e->rt = NULL;
        rlambda_release(op, rt);
        return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", op->path);
    }
    co_tshape o;
    co_status st = co_ops_resolve(sp->ops, sp->n_ops, sp->out_value, &clip, e->rt, e->values, &o);
    if (st) {
        co_free(e->rt);
        e->rt = NULL;
        rlambda_release(op, rt);
        return st;
    }
    size_t at = 0;
    int64_t macs = 0;
    for (int v = 1; v < sp->n_values; v++) {
        e->offset[v] = at;
        at += (size_t)co_tshape_numel(&e->values[v]);
    }
    for (int i = 0; i < sp->n_ops; i++) {
        if (e->rt[i].scratch_floats > e->sub_scratch) e->sub_scratch = e->rt[i].scratch_floats;
        macs += e->rt[i].macs;
    }
    e->sub_scratch += 0;
    rt->scratch_floats = at + e->sub_scratch;
    rt->macs = macs;
    rt->out = o;
    rt->out.has_time = in->has_time;
    return CO_OK;
}

/* Runs the sub-plan over clip `x`; the output lands in scratch (returned). */
static const float *rlambda_run(const co_op *op, const co_oprt *rt, const float *x, float *scratch)
{
    const co_subplan *sp = op->params;
    const rlambda_ext *e = rt->ext;
    float *sub_scratch = scratch + (rt->scratch_floats - e->sub_scratch);
    for (int i = 0; i < sp->n_ops; i++) {
        const co_op *so = &sp->ops[i];
        const float *ins[8];
        co_tshape shapes[8];
        for (int k = 0; k < so->n_in; k++) {
            ins[k] = so->in[k] == 0 ? x : scratch + e->offset[so->in[k]];
            shapes[k] = e->values[so->in[k]];
        }
        co_op_clip(so, &e->rt[i], shapes, ins, scratch + e->offset[so->out], sub_scratch);
    }
    return sp->out_value == 0 ? x : scratch + e->offset[sp->out_value];
}

static int rlambda_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out, float *scratch)
{
    memcpy(out, rlambda_run(op, rt, in[0], scratch), (size_t)co_tshape_numel(&rt->out) * sizeof(float));
    return 1;
}

static void rlambda_destroy(co_op *op) { co_subplan_free(op->params); }

static const co_op_class k_rlambda = {.name = "retroactive_lambda", .resolve = rlambda_resolve, .step = rlambda_step, .destroy = rlambda_destroy, .release = rlambda_release,
                                     .whole_stream = 1};

static co_status build_rlambda(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *props)
{
    const cJSON *children;
    int count, takes_time;
    co_status st;
    if ((st = co_get_bool(b, node, path, "takes_time", 0, 0, &takes_time)) ||
        (st = co_build_children(b, node, path, &children, &count)))
        return st;
    if (count != 1) return co_error(CO_ERR_NETWORK, "%s: RetroactiveLambda wraps exactly one module", path);
    co_subplan *sp;
    co_props sub;
    if ((st = co_build_subplan(b, children->child, path, &sp, &sub))) return st;
    co_op *op = co_emit(b, &k_rlambda, path, 1, &in, sp); /* frees sp on failure */
    if (!op) return co_emit_failure(b);
    *out = op->out;
    co_props_frame_local(props);
    return CO_OK;
}

co_status co_build_transformer_part(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *p)
{
    const char *type = cJSON_GetObjectItemCaseSensitive(node, "type")->valuestring;
    if (strcmp(type, "ChannelLayerNorm") == 0) return build_cln(b, node, path, in, out, p);
    if (strcmp(type, "RecyclingPositionalEncoding") == 0) return build_rpe(b, node, path, in, out, p);
    if (strcmp(type, "SqueezeLast") == 0) {
        co_op *op = co_emit(b, &k_squeeze, path, 1, &in, NULL);
        if (!op) return co_emit_failure(b);
        *out = op->out;
        co_props_frame_local(p);
        return CO_OK;
    }
    if (strcmp(type, "RetroactiveLambda") == 0) return build_rlambda(b, node, path, in, out, p);
    return build_window(b, node, path, in, out, p); /* SelectOrDelay, RetroactiveUnity */
}

/* ---- this family's module types (the registry, build.h); variant unused: the build reads "type" */
static const co_module_reg k_transformer_modules[] = {
    {"ChannelLayerNorm", co_build_transformer_part, 0},
    {"RecyclingPositionalEncoding", co_build_transformer_part, 0},
    {"SelectOrDelay", co_build_transformer_part, 0},
    {"RetroactiveUnity", co_build_transformer_part, 0},
    {"SqueezeLast", co_build_transformer_part, 0},
    {"RetroactiveLambda", co_build_transformer_part, 0},
};
CO_MODULE_LIST(co_transformer_modules, k_transformer_modules)
