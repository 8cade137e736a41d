/*
 * containers.c — Sequential and BroadcastReduce (which co.Residual builds), and the reduction
 * op that joins branches. Containers leave no op of their own except the reduction: the
 * wiring of values is the container. Their temporal properties follow semantics.md §2.2-2.3.
 */
#include <math.h>
#include <string.h>

#include "core/build.h"
#include "core/fuse.h"
#include "kernels/threadpool.h"

co_status co_build_sequential(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *props)
{
    const cJSON *children;
    int count;
    co_status st = co_build_children(b, node, path, &children, &count);
    if (st) return st;
    /* rf folds right to left (rf <- s_i * rf + r_i - s_i); padding and stride left to right */
    co_props acc = {1, 0, 1, 0};
    co_props kids[256];
    if (count > 256) return co_error(CO_ERR_UNSUPPORTED, "%s: Sequential of more than 256 children", path);
    int v = in, i = 0;
    for (const cJSON *c = children->child; c; c = c->next, i++) {
        if ((st = co_build_child(b, c, path, v, &v, &kids[i]))) return st;
    }
    int64_t stride = 1, padding = 0;
    for (i = 0; i < count; i++) {
        padding += kids[i].padding * stride;
        stride *= kids[i].stride;
    }
    int64_t rf = 1;
    for (i = count - 1; i >= 0; i--) rf = kids[i].stride * rf + kids[i].receptive_field - kids[i].stride;
    acc.receptive_field = count ? rf : 1;
    acc.stride = stride;
    acc.padding = padding;
    acc.delay = acc.receptive_field - 1 - acc.padding;
    *props = acc;
    *out = v;
    return CO_OK;
}

/* ---- reduction of branches ---- */
enum reduce_kind { R_SUM, R_MUL, R_MAX, R_CONCAT, R_SUM_LAST };
typedef struct reduce_params {
    int kind;
    co_fused_act act; /* an activation fused into the output pass (src/core/fuse.c) */
} reduce_params;

/* Same-shape inputs are combined in blocks of REDUCE_BLOCK floats (in L1), each block written
 * once: combined, then activated. Outputs of at least REDUCE_PARALLEL_MIN floats are cut into
 * tasks of about REDUCE_TASK_FLOATS (whole blocks or runs; fixed by the shapes, so any thread
 * count gives the same bits) for the current pool. */
enum { REDUCE_BLOCK = 2048, REDUCE_TASK_FLOATS = 1 << 14, REDUCE_PARALLEL_MIN = 1 << 15 };

/* Broadcast shapes (sum/mul/max, numpy rules over every dim incl. batch and time) or
 * concatenate channels. aux[0] = 1 when every input already has the output shape. */
static co_status reduce_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    const reduce_params *p = op->params;
    char a[96], c[96];
    co_tshape o = in[0];
    if (p->kind == R_SUM_LAST && in[0].has_time) { /* sum the last min-T frames of every input */
        for (int k = 0; k < op->n_in; k++) {
            int same = in[k].ndim == o.ndim;
            for (int i = 0; same && i < o.ndim; i++) same = i == 2 || in[k].d[i] == o.d[i];
            if (!same)
                return co_error(CO_ERR_SHAPE, "%s: inputs %s and %s differ in more than time", op->path,
                                co_tshape_str(&in[0], a, sizeof a), co_tshape_str(&in[k], c, sizeof c));
            if (in[k].d[2] < o.d[2]) o.d[2] = in[k].d[2];
            rt->aux[1 + k] = in[k].d[2];
        }
        rt->out = o;
        rt->aux[0] = 2; /* cropping path */
        rt->macs = co_tshape_numel(&o) * (op->n_in - 1);
        return CO_OK;
    }
    for (int k = 1; k < op->n_in; k++) {
        if (in[k].ndim != o.ndim)
            return co_error(CO_ERR_SHAPE, "%s: branches give shapes %s and %s of different rank", op->path,
                            co_tshape_str(&in[0], a, sizeof a), co_tshape_str(&in[k], c, sizeof c));
        for (int i = 0; i < o.ndim; i++) {
            if (p->kind == R_CONCAT) {
                if (i == 1) o.d[1] += in[k].d[1];
                else if (in[k].d[i] != o.d[i])
                    return co_error(CO_ERR_SHAPE, "%s: concatenated branches give %s and %s (only channels may differ)",
                                    op->path, co_tshape_str(&in[0], a, sizeof a), co_tshape_str(&in[k], c, sizeof c));
            } else if (in[k].d[i] != o.d[i]) {
                if (o.d[i] == 1) o.d[i] = in[k].d[i];
                else if (in[k].d[i] != 1)
                    return co_error(CO_ERR_SHAPE, "%s: branch outputs %s and %s do not broadcast", op->path,
                                    co_tshape_str(&in[0], a, sizeof a), co_tshape_str(&in[k], c, sizeof c));
            }
        }
    }
    rt->out = o;
    rt->aux[0] = 1;
    for (int k = 0; k < op->n_in && p->kind != R_CONCAT; k++)
        for (int i = 0; i < o.ndim; i++)
            if (in[k].d[i] != o.d[i]) rt->aux[0] = 0;
    /* remember input shapes for the broadcasting path */
    for (int k = 0; k < op->n_in; k++) {
        /* concat: channels of input k; else bit i set when input k broadcasts along dim i */
        int64_t code = 0;
        for (int i = 0; i < o.ndim; i++)
            if (in[k].d[i] != o.d[i]) code |= (int64_t)1 << i;
        rt->aux[1 + k] = p->kind == R_CONCAT ? in[k].d[1] : code;
    }
    rt->macs = co_tshape_numel(&o) * (op->n_in - 1);
    return CO_OK;
}

static inline float combine(int kind, float a, float b)
{
    switch (kind) {
    case R_MUL: return a * b;
    case R_MAX: return a > b || isnan(a) ? a : b; /* torch.maximum propagates NaN */
    default: return a + b;
    }
}

/* Index of flat output position `idx` in input k (size-1 dims broadcast). */
static int64_t bcast_index(const co_tshape *o, int64_t code, int64_t idx)
{
    int64_t src = 0, mul = 1;
    for (int i = o->ndim - 1; i >= 0; i--) {
        int64_t c = idx % o->d[i];
        idx /= o->d[i];
        if (!((code >> i) & 1)) src += c * mul;
        mul *= (code >> i) & 1 ? 1 : o->d[i];
    }
    return src;
}

/* Element-wise reductions, unit by unit: units [u0, u1) of jb->unit output floats (blocks of
 * same-shape inputs, or runs of broadcasting ones), each combined, then activated, while in cache. */
typedef struct reduce_job {
    const co_op *op;
    const co_oprt *rt;
    const float *const *in;
    float *out;
    int64_t n, unit, per_task;
    int last; /* broadcasting: the innermost dim that is not 1 */
} reduce_job;

static void reduce_units(const reduce_job *jb, int64_t u0, int64_t u1)
{
    const co_op *op = jb->op;
    const reduce_params *p = op->params;
    const co_tshape *o = &jb->rt->out;
    const int same = jb->rt->aux[0] != 0;
    for (int64_t u = u0; u < u1; u++) {
        const int64_t r0 = u * jb->unit, len = jb->n - r0 < jb->unit ? jb->n - r0 : jb->unit;
        float *y = jb->out + r0;
        for (int k = 0; k < op->n_in; k++) {
            const int64_t code = jb->rt->aux[1 + k];
            const float *x = jb->in[k] + (same ? r0 : bcast_index(o, code, r0));
            const int64_t step = !same && (code >> jb->last) & 1 ? 0 : 1; /* 0: one value for the whole run */
            if (k == 0) {
                for (int64_t i = 0; i < len; i++) y[i] = x[i * step];
                continue;
            }
            switch (p->kind) {
            case R_MUL: for (int64_t i = 0; i < len; i++) y[i] *= x[i * step]; break;
            case R_MAX: for (int64_t i = 0; i < len; i++) y[i] = combine(R_MAX, y[i], x[i * step]); break;
            default: for (int64_t i = 0; i < len; i++) y[i] += x[i * step]; break;
            }
        }
        co_fused_act_run(&p->act, y, len);
    }
}

static void reduce_task(void *ctx, int task)
{
    const reduce_job *jb = ctx;
    const int64_t units = (jb->n + jb->unit - 1) / jb->unit, u0 = task * jb->per_task;
    reduce_units(jb, u0, u0 + jb->per_task < units ? u0 + jb->per_task : units);
}

static void reduce_combine(const co_op *op, const co_oprt *rt, const float *const *in, float *out)
{
    const reduce_params *p = op->params;
    const int64_t n = co_tshape_numel(&rt->out);
    if (rt->aux[0] == 2) { /* sum_last_pairs on clips: inputs cropped to their last T frames */
        const int64_t rows = rt->out.d[0] * rt->out.d[1], T = rt->out.d[2], S = n / (rows * T);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t i = 0; i < T * S; i++) {
                float acc = 0.0f;
                for (int k = 0; k < op->n_in; k++) acc += in[k][(r * rt->aux[1 + k] + rt->aux[1 + k] - T) * S + i];
                out[r * T * S + i] = acc;
            }
        return;
    }
    if (p->kind == R_CONCAT) {
        /* channels of input k follow those of inputs < k, for every batch item */
        const int64_t B = rt->out.d[0], C = rt->out.d[1], inner = n / (B * C);
        int64_t c0 = 0;
        for (int k = 0; k < op->n_in; k++) {
            const int64_t ck = rt->aux[1 + k];
            for (int64_t b = 0; b < B; b++)
                memcpy(out + (b * C + c0) * inner, in[k] + b * ck * inner, (size_t)(ck * inner) * sizeof(float));
            c0 += ck;
        }
        return;
    }
    /* Same shapes: blocks of REDUCE_BLOCK floats. Broadcasting (squeeze-excitation's x * s with s
     * (B, C, 1, 1), a bias (1, C, 1, 1), ...): runs over the output's trailing dims along which every
     * input either walks or is broadcast throughout, so each run costs one index computation and a
     * plain loop per input. */
    reduce_job jb = {.op = op, .rt = rt, .in = in, .out = out, .n = n, .unit = REDUCE_BLOCK, .last = 0};
    if (!rt->aux[0]) {
        const co_tshape *o = &rt->out;
        int last = o->ndim - 1; /* the innermost dim that is not 1 (size-1 dims are walked by every input) */
        while (last > 0 && o->d[last] == 1) last--;
        int64_t run = 1;
        for (int i = o->ndim - 1; i >= 0; i--) {
            int uniform = 1;
            for (int k = 0; k < op->n_in && uniform && o->d[i] != 1; k++)
                uniform = ((rt->aux[1 + k] >> i) & 1) == ((rt->aux[1 + k] >> last) & 1);
            if (!uniform) break;
            run *= o->d[i];
        }
        jb.unit = run;
        jb.last = last;
    }
    const int64_t units = (n + jb.unit - 1) / jb.unit;
    co_pool *pool = n >= REDUCE_PARALLEL_MIN ? co_pool_current() : NULL;
    jb.per_task = pool ? (REDUCE_TASK_FLOATS + jb.unit - 1) / jb.unit : units;
    const int tasks = (int)((units + jb.per_task - 1) / jb.per_task);
    if (tasks > 1)
        co_pool_run(pool, tasks, reduce_task, &jb);
    else
        reduce_units(&jb, 0, units);
}

/* The reduction, then the fused activation where reduce_combine did not apply it on the way. */
static void reduce_run(const co_op *op, const co_oprt *rt, const float *const *in, float *out)
{
    const reduce_params *p = op->params;
    reduce_combine(op, rt, in, out);
    if (rt->aux[0] == 2 || p->kind == R_CONCAT) co_fused_act_run(&p->act, out, co_tshape_numel(&rt->out));
}

static int reduce_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out, float *scratch)
{
    reduce_run(op, rt, in, out);
    return 1;
}

static const co_op_class k_reduce = {"reduce", reduce_resolve, NULL, NULL, reduce_step, NULL, NULL};

int co_reduce_fuse_pointwise(co_op *op, const co_pointwise *act)
{
    if (op->cls != &k_reduce) return 0;
    return co_fused_act_set(&((reduce_params *)op->params)->act, act);
}

co_status co_build_broadcast_reduce(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *props)
{
    static const char *const k_kinds[] = {"sum", "mul", "max", "concat", "sum_last_pairs", NULL};
    int kind;
    const cJSON *children;
    int count;
    co_status st;
    if ((st = co_get_choice(b, node, path, "reduce", 0, R_SUM, k_kinds, &kind)) ||
        (st = co_build_children(b, node, path, &children, &count)))
        return st;
    if (count < 2 || count > 8)
        return co_error(count < 2 ? CO_ERR_NETWORK : CO_ERR_UNSUPPORTED, "%s: BroadcastReduce needs 2 to 8 branches, has %d",
                        path, count);
    int vals[8], i = 0;
    co_props bp[8];
    for (const cJSON *c = children->child; c; c = c->next, i++)
        if ((st = co_build_child(b, c, path, in, &vals[i], &bp[i]))) return st;
    co_props acc = bp[0];
    for (i = 1; i < count; i++) {
        if (bp[i].stride != bp[0].stride)
            return co_error(CO_ERR_NETWORK, "%s: branches have temporal strides %lld and %lld; they must be equal", path,
                            (long long)bp[0].stride, (long long)bp[i].stride);
        if (bp[i].delay > acc.delay) acc.delay = bp[i].delay;
        if (bp[i].receptive_field > acc.receptive_field) acc.receptive_field = bp[i].receptive_field;
        if (bp[i].padding > acc.padding) acc.padding = bp[i].padding;
    }
    reduce_params *p = co_calloc(1, sizeof *p);
    if (!p) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    p->kind = kind;
    co_op *op = co_emit(b, &k_reduce, path, count, vals, p);
    if (!op) return co_emit_failure(b);
    *out = op->out;
    *props = acc;
    return CO_OK;
}

/* ---- lists of streams: Broadcast, Parallel, ParallelDispatch, Reduce ---- */
static void join_props(co_props *acc, const co_props *p, int first)
{
    if (first) {
        *acc = *p;
        return;
    }
    if (p->delay > acc->delay) acc->delay = p->delay;
    if (p->receptive_field > acc->receptive_field) acc->receptive_field = p->receptive_field;
    if (p->padding > acc->padding) acc->padding = p->padding;
}

co_status co_build_broadcast(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *props)
{
    int64_t n;
    co_status st = co_get_int(b, node, path, "num_streams", 1, 0, 1, CO_MAX_LIST, &n);
    if (st) return st;
    if (in < 0) return co_error(CO_ERR_NETWORK, "%s: Broadcast takes one stream, not a list", path);
    int vals[CO_MAX_LIST];
    for (int i = 0; i < n; i++) vals[i] = in;
    *out = co_list_make(b, path, (int)n, vals);
    co_props_frame_local(props);
    return *out ? CO_OK : CO_ERR_UNSUPPORTED;
}

co_status co_build_parallel(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *props)
{
    const cJSON *children;
    int count, ins[CO_MAX_LIST], outs[CO_MAX_LIST];
    co_status st = co_build_children(b, node, path, &children, &count);
    if (st) return st;
    int n_in = co_list_get(b, in, ins);
    if (n_in != count)
        return co_error(CO_ERR_NETWORK, "%s: Parallel of %d branches receives %s%d stream%s", path, count,
                        n_in ? "a list of " : "", n_in ? n_in : 1, n_in == 1 ? "" : "s");
    int i = 0;
    co_props acc = {1, 0, 1, 0};
    for (const cJSON *c = children->child; c; c = c->next, i++) {
        co_props bp;
        if ((st = co_build_child(b, c, path, ins[i], &outs[i], &bp))) return st;
        if (outs[i] < 0) return co_error(CO_ERR_UNSUPPORTED, "%s: a Parallel branch returning a list is not supported", path);
        if (i && bp.stride != acc.stride)
            return co_error(CO_ERR_NETWORK, "%s: branches have temporal strides %lld and %lld; they must be equal", path,
                            (long long)acc.stride, (long long)bp.stride);
        join_props(&acc, &bp, i == 0);
    }
    *out = co_list_make(b, path, count, outs);
    *props = acc;
    return *out ? CO_OK : CO_ERR_UNSUPPORTED;
}

co_status co_build_parallel_dispatch(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *props)
{
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(node, "mapping");
    int64_t idx[CO_MAX_LIST];
    int n;
    co_status st = co_get_int_list(b, node, path, "mapping", CO_MAX_LIST, 0, CO_MAX_LIST - 1, idx, &n);
    if (st) {
        if (cJSON_IsArray(map))
            for (const cJSON *e = map->child; e; e = e->next)
                if (cJSON_IsArray(e))
                    return co_error(CO_ERR_UNSUPPORTED, "%s: grouping (nested mappings) is not supported yet", path);
        return st;
    }
    int ins[CO_MAX_LIST], outs[CO_MAX_LIST];
    int n_in = co_list_get(b, in, ins);
    if (!n_in) { /* a single stream counts as a list of one */
        ins[0] = in;
        n_in = 1;
    }
    for (int i = 0; i < n; i++) {
        if (idx[i] >= n_in)
            return co_error(CO_ERR_NETWORK, "%s: mapping refers to stream %lld of %d", path, (long long)idx[i], n_in);
        outs[i] = ins[idx[i]];
    }
    co_props_frame_local(props);
    if (n == 1) {
        *out = outs[0];
        return CO_OK;
    }
    *out = co_list_make(b, path, n, outs);
    return *out ? CO_OK : CO_ERR_UNSUPPORTED;
}

co_status co_build_reduce(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *props)
{
    static const char *const k_kinds[] = {"sum", "mul", "max", "concat", NULL};
    int kind, ins[CO_MAX_LIST];
    co_status st = co_get_choice(b, node, path, "reduce", 0, R_SUM, k_kinds, &kind);
    if (st) return st;
    int n = co_list_get(b, in, ins);
    if (n < 2) return co_error(CO_ERR_NETWORK, "%s: Reduce needs a list of at least 2 streams", path);
    reduce_params *p = co_calloc(1, sizeof *p);
    if (!p) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    p->kind = kind;
    co_op *op = co_emit(b, &k_reduce, path, n, ins, p);
    if (!op) return co_emit_failure(b);
    *out = op->out;
    co_props_frame_local(props);
    return CO_OK;
}

/* ---- Conditional: a predicate (a C callback given at load) picks one branch per step ---- */
typedef struct cond_params {
    co_predicate_fn fn;
    void *user;
    int when; /* gate: pass when the predicate equals this */
} cond_params;

static co_status gate_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    rt->out = in[0];
    return CO_OK;
}

static int predicate(const cond_params *p, const co_tshape *t, const float *x)
{
    co_shape s;
    s.ndim = t->ndim;
    for (int i = 0; i < t->ndim; i++) s.dims[i] = t->d[i];
    return p->fn(x, &s, p->user) != 0;
}

static int gate_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out, float *scratch)
{
    const cond_params *p = op->params;
    if (predicate(p, &rt->out, in[0]) != p->when) return 0;
    memcpy(out, in[0], (size_t)co_tshape_numel(&rt->out) * sizeof(float));
    return 1;
}

static co_status gate_clip(const co_op *op, const co_oprt *rt, const co_tshape *in_shapes, const float *const *in,
                           float *out, float *scratch)
{ /* both branches run over the clip; the merge picks one */
    memcpy(out, in[0], (size_t)co_tshape_numel(&rt->out) * sizeof(float));
    return CO_OK;
}

/* merge inputs: true branch, false branch, the Conditional's input (for clip mode) */
static co_status merge_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    char a[96], c[96];
    for (int i = 0; i < in[0].ndim; i++)
        if (in[0].ndim != in[1].ndim || in[0].d[i] != in[1].d[i])
            return co_error(CO_ERR_SHAPE, "%s: Conditional branches give different shapes %s and %s", op->path,
                            co_tshape_str(&in[0], a, sizeof a), co_tshape_str(&in[1], c, sizeof c));
    rt->out = in[0];
    rt->aux[0] = co_tshape_numel(&in[0]);
    return CO_OK;
}

static int merge_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out, float *scratch)
{
    memcpy(out, in[0] ? in[0] : in[1], (size_t)rt->aux[0] * sizeof(float));
    return 1;
}

static co_status merge_clip(const co_op *op, const co_oprt *rt, const co_tshape *in_shapes, const float *const *in,
                            float *out, float *scratch)
{
    const cond_params *p = op->params;
    memcpy(out, predicate(p, &in_shapes[2], in[2]) ? in[0] : in[1], (size_t)rt->aux[0] * sizeof(float));
    return CO_OK;
}

static const co_op_class k_gate = {"gate", gate_resolve, NULL, NULL, gate_step, gate_clip, NULL};
static const co_op_class k_merge = {"merge", merge_resolve, NULL, NULL, merge_step, merge_clip, NULL};

co_status co_build_conditional(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *props)
{
    const char *pred;
    const cJSON *children;
    int count;
    co_status st;
    if ((st = co_get_string(b, node, path, "predicate", 1, NULL, 256, &pred)) ||
        (st = co_build_children(b, node, path, &children, &count)))
        return st;
    if (count < 1 || count > 2) return co_error(CO_ERR_NETWORK, "%s: Conditional has 1 or 2 branches, not %d", path, count);
    const co_callback *cb = co_find_callback(b, pred);
    if (!cb || !cb->predicate)
        return co_error(CO_ERR_NETWORK, "%s: predicate '%.64s' is not registered (co_load_options.callbacks)",
                        path[0] ? path : "<root>", pred);
    if (in < 0) return co_error(CO_ERR_NETWORK, "%s: Conditional takes one stream, not a list", path);
    int gates[2];
    for (int i = 0; i < 2; i++) {
        cond_params *g = co_alloc(sizeof *g);
        if (!g) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
        g->fn = cb->predicate;
        g->user = cb->user;
        g->when = i == 0;
        co_op *op = co_emit(b, &k_gate, path, 1, &in, g);
        if (!op) return co_emit_failure(b);
        gates[i] = op->out;
    }
    int outs[3] = {gates[0], gates[1], in};
    co_props bp[2] = {{1, 0, 1, 0}, {1, 0, 1, 0}};
    int i = 0;
    for (const cJSON *c = children->child; c; c = c->next, i++)
        if ((st = co_build_child(b, c, path, gates[i], &outs[i], &bp[i]))) return st;
    if (outs[0] < 0 || outs[1] < 0) return co_error(CO_ERR_NETWORK, "%s: Conditional branches must give one stream", path);
    cond_params *mp = co_alloc(sizeof *mp);
    if (!mp) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    mp->fn = cb->predicate;
    mp->user = cb->user;
    mp->when = 1;
    co_op *op = co_emit(b, &k_merge, path, 3, outs, mp);
    if (!op) return co_emit_failure(b);
    op->any_of = 2;
    *out = op->out;
    *props = bp[0];
    join_props(props, &bp[1], 0);
    return CO_OK;
}

/* ---- this family's module types (the registry, build.h); variant unused: the build reads "type" */
static const co_module_reg k_container_modules[] = {
    {"Sequential", co_build_sequential, 0},
    {"BroadcastReduce", co_build_broadcast_reduce, 0},
    {"Broadcast", co_build_broadcast, 0},
    {"Parallel", co_build_parallel, 0},
    {"ParallelDispatch", co_build_parallel_dispatch, 0},
    {"Reduce", co_build_reduce, 0},
    {"Conditional", co_build_conditional, 0},
};
CO_MODULE_LIST(co_container_modules, k_container_modules)
