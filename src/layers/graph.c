/*
 * graph.c — the Graph module family: frame-local PyTorch code recorded by the exporter's tracer
 * (a custom nn.Module, a co.Lambda function) as a list of primitive ops (docs/format.md,
 * "Graph nodes").
 *
 * Build: every op of the "ops" list is read into a g_op (every key read, value ids checked to
 * be earlier values, axes and sizes bounded), `param` ops claim their tensors (a tensor that
 * two param ops name is claimed once and shared), and eval-mode batch norm statistics are
 * folded into a per-channel scale and shift; "unused" state_dict entries are claimed unread.
 * The whole graph is ONE op of class "graph": stateless, receptive field 1. Then x * sigmoid(x)
 * becomes one SiLU op in product form (fold_swish), and a graph that is one element-wise
 * function of its input says so (co_graph_pointwise) so that src/core/fuse.c can fold it.
 *
 * Resolve: value 0 is the frame (B, C, *S) — for a clip (B, C, T, *S) the frame is the clip with
 * axis 2 removed — and every value's shape is inferred from it with torch's rules; a mismatch
 * is a CO_ERR_SHAPE naming the node, the op (index, name, traced source line) and the shapes.
 * Each value then gets its storage: the graph input, the op's output buffer (the value that is
 * the graph's output, when an op computes it), model-owned constant data (param, constant), a
 * region of scratch (every other computed value; a region is reused once the value's last reader
 * has run), or its input's storage (reshape and identity are views). One temporary region after
 * the values serves the op that needs most (im2col, softmax statistics); a clip adds one input
 * frame and one output frame. The resolved shapes and offsets live in rt->ext (allocated by
 * resolve, freed by release), so step and clip allocate nothing.
 *
 * Step: the ops run in order. Clip: for each t, frame t of the clip (row-major (B, C, T, *S))
 * is gathered into scratch, the graph runs on it, and its output frame is scattered into the
 * output clip (B', C', T, *S'). The batch of the output may differ from the input's (a graph
 * may fold axes into the batch and unfold them later).
 *
 * Kernels: element-wise formulas, softmax, batch norm and layer norm are the shared ones of
 * kernels/pointwise.h; products go through kernels/gemm.h. Broadcasting ops, permute, expand
 * and reductions share one strided iterator that merges axes the operands walk contiguously,
 * so the innermost loop is as long as the layout allows.
 */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/build.h"
#include "core/fuse.h"
#include "kernels/gemm.h"
#include "kernels/pointwise.h"

#define G_MAX_OPS 4096          /* ops in one graph */
#define G_MAX_RANK 8            /* dims of any value (CO_MAX_DIMS) */
#define G_MAX_IN 8              /* inputs of one op (cat) */
#define G_MAX_CONST 4096        /* floats of one inline constant */
#define G_MAX_SP 3              /* spatial axes of a conv */
#define G_MAX_DIM ((int64_t)1 << 31)   /* any one axis */
#define G_MAX_NUMEL ((int64_t)1 << 36) /* elements of any one value */
#define G_MAX_SCRATCH ((int64_t)1 << 38) /* floats of scratch for the whole graph */
#define G_MAX_NAME 24           /* bytes of an op name */
#define G_MAX_SOURCE 160        /* bytes of a source string kept for messages (longer ones are cut) */
#define G_MAX_TENSOR_NAME 256   /* bytes of a param's tensor name */
#define G_MAX_UNUSED 4096       /* names in a graph's "unused" list */

/* ================================ ops ================================ */

typedef enum g_kind {
    G_PARAM,
    G_CONSTANT,
    G_POINTWISE,
    G_BINARY,
    G_WHERE,
    G_MATMUL,
    G_LINEAR,
    G_CONV,
    G_SOFTMAX,
    G_REDUCE,
    G_RESHAPE,
    G_EXPAND,
    G_PERMUTE,
    G_CAT,
    G_SLICE,
    G_BATCH_NORM,
    G_LAYER_NORM
} g_kind;

/* in the order of k_binary_names */
typedef enum g_binary {
    GB_ADD, GB_SUB, GB_MUL, GB_DIV, GB_POW, GB_MAX, GB_MIN, GB_EQ,
    GB_NE, GB_LT, GB_LE, GB_GT, GB_GE, GB_AND, GB_OR
} g_binary;
static const char *const k_binary_names[] = {"add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq",
                                             "ne",  "lt",  "le",  "gt",  "ge",  "logical_and", "logical_or", NULL};

typedef enum g_reduce { GR_SUM, GR_MEAN, GR_AMAX, GR_AMIN } g_reduce;
static const char *const k_reduce_names[] = {"sum", "mean", "amax", "amin", NULL};

/* Ops other than pointwise and binary ones: name, kind, and the range of their input count. */
static const struct {
    const char *name;
    g_kind kind;
    int min_in, max_in;
} k_ops[] = {
    {"param", G_PARAM, 0, 0},       {"constant", G_CONSTANT, 0, 0},   {"where", G_WHERE, 3, 3},
    {"matmul", G_MATMUL, 2, 2},     {"linear", G_LINEAR, 2, 3},       {"conv", G_CONV, 2, 3},
    {"softmax", G_SOFTMAX, 1, 1},   {"log_softmax", G_SOFTMAX, 1, 1}, {"reshape", G_RESHAPE, 1, 1},
    {"expand", G_EXPAND, 1, 1},     {"permute", G_PERMUTE, 1, 1},     {"cat", G_CAT, 1, G_MAX_IN},
    {"slice", G_SLICE, 1, 1},       {"batch_norm", G_BATCH_NORM, 3, 5}, {"layer_norm", G_LAYER_NORM, 1, 3},
};

/* One entry of a shape list: a size >= 1, -1 (inferred / kept), or the graph input's batch
 * times bn / bd (bd > 0). */
typedef struct g_dim {
    int64_t v;
    int64_t bn, bd;
} g_dim;

typedef struct g_op {
    g_kind kind;
    int sub; /* g_binary, g_reduce, co_softmax_kind */
    char name[G_MAX_NAME];
    char *source; /* owned; NULL when the op has none */
    int n_in;
    int in[G_MAX_IN];
    co_pointwise pw;
    int alias;                 /* the output is a view of input 0 (reshape, identity) */
    int axis, keepdim, n_axes; /* softmax, cat, slice: axis; reduce: axes; permute: perm */
    int axes[G_MAX_RANK];
    int n_shape; /* reshape, expand */
    g_dim shape[G_MAX_RANK];
    int64_t start, stop, step; /* slice */
    int n_sp;                  /* conv */
    int64_t stride[G_MAX_SP], pad[G_MAX_SP], dil[G_MAX_SP], groups;
    double eps;  /* batch_norm, layer_norm */
    int ln_ndim; /* layer_norm: normalised trailing axes */
    int t_ndim;  /* param, constant: the tensor's shape; batch_norm: 1, (C) */
    int64_t t_shape[G_MAX_RANK];
    const float *data; /* param: model-owned; constant and batch_norm: = owned */
    float *owned;      /* constant data; batch_norm: scale (C) then shift (C) */
} g_op;

typedef struct graph_params {
    int n_ops;
    g_op *ops;
    int output;   /* value id */
    char *source; /* the traced module or function, for messages; owned, may be NULL */
    int frame_ndim; /* > 0: the frame shape (without batch) the graph was traced at, checked at */
    int64_t frame[G_MAX_RANK]; /* resolve: reshapes recorded for one shape mean nothing at another */
    int elementwise;           /* the graph is one element-wise function `pw` of its input, same shape */
    co_pointwise pw;           /* (see graph_elementwise): the fusion pass may fold it into its producer */
} graph_params;

/* ================================ resolved values ================================ */

typedef enum g_base { GV_INPUT, GV_OUTPUT, GV_SCRATCH, GV_CONST } g_base;

typedef struct g_val {
    int ndim;
    int64_t d[G_MAX_RANK];
    int64_t numel;
    g_base base;
    int64_t off;       /* GV_SCRATCH: floats into scratch */
    const float *data; /* GV_CONST */
} g_val;

typedef struct graph_rt {
    g_val *v;          /* n_ops + 1 values */
    int64_t temp_off;  /* the shared temporary region */
    int copy_out;      /* the output value is not computed into `out` (a view of the input or a constant) */
    int has_time;
    int64_t T, in_rows, in_inner, out_rows, out_inner; /* clip: (rows, T, inner) gather / scatter */
    int64_t frame_in_off, frame_out_off;
} graph_rt;

static const char *node_name(const char *path) { return path[0] ? path : "<root>"; }

static void g_op_free(g_op *g)
{
    co_free(g->source);
    co_free(g->owned);
}

static void graph_destroy(co_op *op)
{
    graph_params *p = op->params;
    if (!p) return;
    for (int i = 0; i < p->n_ops; i++) g_op_free(&p->ops[i]);
    co_free(p->ops);
    co_free(p->source);
    co_free(p);
    op->params = NULL;
}

static void graph_release(const co_op *op, co_oprt *rt)
{
    (void)op;
    graph_rt *r = rt->ext;
    if (!r) return;
    co_free(r->v);
    co_free(r);
    rt->ext = NULL;
}

/* ================================ shape errors ================================ */

static const char *shape_str(const g_val *v, char *buf, size_t size)
{
    co_tshape t = {v->ndim, 0, {0}};
    for (int i = 0; i < v->ndim; i++) t.d[i] = v->d[i];
    return co_tshape_str(&t, buf, size);
}

/* CO_ERR_SHAPE "path (Graph source): op i 'name' ("source line"): message". */
static co_status op_error(const co_op *op, int i, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static co_status op_error(const co_op *op, int i, const char *fmt, ...)
{
    const graph_params *p = op->params;
    const g_op *g = &p->ops[i];
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return co_error(CO_ERR_SHAPE, "%s (Graph%s%s): op %d '%s'%s%s%s: %s", node_name(op->path), p->source ? " " : "",
                    p->source ? p->source : "", i, g->name, g->source ? " (\"" : "", g->source ? g->source : "",
                    g->source ? "\")" : "", msg);
}

/* numel of dims with the per-value bound; -1 if over it */
static int64_t checked_numel(int ndim, const int64_t *d)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (d[i] < 1 || d[i] > G_MAX_DIM || n > G_MAX_NUMEL / d[i]) return -1;
        n *= d[i];
    }
    return n;
}

/* a * b for counts (MACs), saturating instead of overflowing: a count, never a size */
#define G_MACS_CAP (INT64_MAX / 4)
static int64_t count_mul(int64_t a, int64_t b)
{
    if (a <= 0 || b <= 0) return 0;
    return a > G_MACS_CAP / b ? G_MACS_CAP : a * b;
}

/* ================================ the strided iterator ================================ */

/* Walks an index space of `rank` axes with up to 4 operands, each with its own strides (0 on a
 * broadcast axis). Axes of size 1 are dropped and adjacent axes merged wherever every operand
 * walks them as one, so that the innermost run (n[rank-1]) is as long as possible. */
typedef struct g_iter {
    int rank, k;
    int64_t n[G_MAX_RANK];
    int64_t s[4][G_MAX_RANK];
} g_iter;

static void iter_init(g_iter *it, int rank, const int64_t *dims, int k, int64_t strides[][G_MAX_RANK])
{
    int r = 0;
    it->k = k;
    for (int a = 0; a < rank; a++) {
        if (dims[a] == 1) continue;
        int merge = r > 0;
        for (int o = 0; o < k && merge; o++) merge = it->s[o][r - 1] == strides[o][a] * dims[a];
        if (merge) {
            it->n[r - 1] *= dims[a];
            for (int o = 0; o < k; o++) it->s[o][r - 1] = strides[o][a];
        } else {
            it->n[r] = dims[a];
            for (int o = 0; o < k; o++) it->s[o][r] = strides[o][a];
            r++;
        }
    }
    if (r == 0) { /* a single element */
        it->n[0] = 1;
        for (int o = 0; o < k; o++) it->s[o][0] = 0;
        r = 1;
    }
    it->rank = r;
}

/* Rows of the iteration (everything but the innermost axis) and the step to the next row:
 * advances idx and the operands' offsets. */
static int64_t iter_rows(const g_iter *it)
{
    int64_t rows = 1;
    for (int a = 0; a + 1 < it->rank; a++) rows *= it->n[a];
    return rows;
}

static void iter_next(const g_iter *it, int64_t *idx, int64_t *off)
{
    for (int a = it->rank - 2; a >= 0; a--) {
        for (int o = 0; o < it->k; o++) off[o] += it->s[o][a];
        if (++idx[a] < it->n[a]) return;
        for (int o = 0; o < it->k; o++) off[o] -= it->s[o][a] * it->n[a];
        idx[a] = 0;
    }
}

/* Contiguous strides of a shape. */
static void contiguous_strides(int ndim, const int64_t *d, int64_t *s)
{
    int64_t acc = 1;
    for (int a = ndim - 1; a >= 0; a--) {
        s[a] = acc;
        acc *= d[a];
    }
}

/* Strides of value `v` broadcast to a shape of rank `rank` with dims `out` (right-aligned; 0 on
 * broadcast axes). */
static void broadcast_strides(const g_val *v, int rank, const int64_t *out, int64_t *s)
{
    int64_t own[G_MAX_RANK];
    contiguous_strides(v->ndim, v->d, own);
    const int lead = rank - v->ndim;
    for (int a = 0; a < rank; a++) {
        const int j = a - lead;
        s[a] = j < 0 || v->d[j] == 1 || out[a] == 1 ? 0 : own[j];
    }
}

/* ================================ kernels ================================ */

/* One loop per binary op, with the operands' strides (sa, sb: 1 walks, 0 broadcasts) fixed per
 * function, so that the contiguous and scalar variants compile to plain vector loops. */
#define G_BINARY_LOOP(EXPR)                                                                                            \
    for (int64_t i = 0; i < n; i++) {                                                                                  \
        const float x = a[i * sa], z = b[i * sb];                                                                      \
        y[i] = (EXPR);                                                                                                 \
    }
#define G_BINARY_SWITCH                                                                                                \
    switch (kind) {                                                                                                    \
    case GB_ADD: G_BINARY_LOOP(x + z) break;                                                                           \
    case GB_SUB: G_BINARY_LOOP(x - z) break;                                                                           \
    case GB_MUL: G_BINARY_LOOP(x * z) break;                                                                           \
    case GB_DIV: G_BINARY_LOOP(x / z) break;                                                                           \
    case GB_POW: G_BINARY_LOOP(powf(x, z)) break;                                                                      \
    /* NaN wins, as torch.maximum / torch.minimum */                                                                   \
    case GB_MAX: G_BINARY_LOOP(x > z ? x : (x != x ? x : z)) break;                                                    \
    case GB_MIN: G_BINARY_LOOP(x < z ? x : (x != x ? x : z)) break;                                                    \
    case GB_EQ: G_BINARY_LOOP(x == z ? 1.0f : 0.0f) break;                                                             \
    case GB_NE: G_BINARY_LOOP(x != z ? 1.0f : 0.0f) break;                                                             \
    case GB_LT: G_BINARY_LOOP(x < z ? 1.0f : 0.0f) break;                                                              \
    case GB_LE: G_BINARY_LOOP(x <= z ? 1.0f : 0.0f) break;                                                             \
    case GB_GT: G_BINARY_LOOP(x > z ? 1.0f : 0.0f) break;                                                              \
    case GB_GE: G_BINARY_LOOP(x >= z ? 1.0f : 0.0f) break;                                                             \
    case GB_AND: G_BINARY_LOOP(x != 0.0f && z != 0.0f ? 1.0f : 0.0f) break;                                            \
    case GB_OR: G_BINARY_LOOP(x != 0.0f || z != 0.0f ? 1.0f : 0.0f) break;                                             \
    }

static void binary_contiguous(g_binary kind, int64_t n, const float *restrict a, const float *restrict b, float *restrict y)
{
    const int64_t sa = 1, sb = 1;
    G_BINARY_SWITCH
}

static void binary_scalar_b(g_binary kind, int64_t n, const float *restrict a, const float *restrict b, float *restrict y)
{
    const int64_t sa = 1, sb = 0;
    G_BINARY_SWITCH
}

static void binary_scalar_a(g_binary kind, int64_t n, const float *restrict a, const float *restrict b, float *restrict y)
{
    const int64_t sa = 0, sb = 1;
    G_BINARY_SWITCH
}

static void run_binary(g_binary kind, const g_val *va, const float *a, const g_val *vb, const float *b, const g_val *vy,
                       float *y)
{
    const int64_t n = vy->numel;
    if (va->numel == n && vb->numel == n) { /* same shape (broadcasting keeps numel only then) */
        binary_contiguous(kind, n, a, b, y);
        return;
    }
    if (vb->numel == 1 && va->numel == n) {
        binary_scalar_b(kind, n, a, b, y);
        return;
    }
    if (va->numel == 1 && vb->numel == n) {
        binary_scalar_a(kind, n, a, b, y);
        return;
    }
    int64_t s[3][G_MAX_RANK];
    broadcast_strides(va, vy->ndim, vy->d, s[0]);
    broadcast_strides(vb, vy->ndim, vy->d, s[1]);
    contiguous_strides(vy->ndim, vy->d, s[2]);
    g_iter it;
    iter_init(&it, vy->ndim, vy->d, 3, s);
    const int last = it.rank - 1;
    const int64_t rows = iter_rows(&it), len = it.n[last], sa = it.s[0][last], sb = it.s[1][last];
    int64_t idx[G_MAX_RANK] = {0}, off[3] = {0, 0, 0};
    for (int64_t r = 0; r < rows; r++) {
        /* Values are contiguous and size-1 axes are dropped, so along the innermost axis each
         * operand either walks (stride 1) or is broadcast (stride 0), and not both are broadcast
         * unless the run is a single element. */
        if (sa == 1 && sb == 1) binary_contiguous(kind, len, a + off[0], b + off[1], y + off[2]);
        else if (sb == 0) binary_scalar_b(kind, len, a + off[0], b + off[1], y + off[2]);
        else binary_scalar_a(kind, len, a + off[0], b + off[1], y + off[2]);
        iter_next(&it, idx, off);
    }
}

static void run_where(const g_val *vc, const float *c, const g_val *va, const float *a, const g_val *vb, const float *b,
                      const g_val *vy, float *y)
{
    int64_t s[4][G_MAX_RANK];
    broadcast_strides(vc, vy->ndim, vy->d, s[0]);
    broadcast_strides(va, vy->ndim, vy->d, s[1]);
    broadcast_strides(vb, vy->ndim, vy->d, s[2]);
    contiguous_strides(vy->ndim, vy->d, s[3]);
    g_iter it;
    iter_init(&it, vy->ndim, vy->d, 4, s);
    const int last = it.rank - 1;
    const int64_t rows = iter_rows(&it), len = it.n[last], sc = it.s[0][last], sa = it.s[1][last], sb = it.s[2][last];
    int64_t idx[G_MAX_RANK] = {0}, off[4] = {0, 0, 0, 0};
    for (int64_t r = 0; r < rows; r++) {
        const float *cr = c + off[0], *ar = a + off[1], *br = b + off[2];
        float *yr = y + off[3];
        for (int64_t i = 0; i < len; i++) yr[i] = cr[i * sc] != 0.0f ? ar[i * sa] : br[i * sb];
        iter_next(&it, idx, off);
    }
}

/* y (contiguous, shape dims) = x read with strides sx (a permuted or broadcast view). */
static void strided_copy(int rank, const int64_t *dims, const int64_t *sx, const float *x, float *y)
{
    int64_t s[2][G_MAX_RANK];
    memcpy(s[0], sx, (size_t)rank * sizeof(int64_t));
    contiguous_strides(rank, dims, s[1]);
    g_iter it;
    iter_init(&it, rank, dims, 2, s);
    const int last = it.rank - 1;
    const int64_t rows = iter_rows(&it), len = it.n[last], step = it.s[0][last];
    int64_t idx[G_MAX_RANK] = {0}, off[2] = {0, 0};
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + off[0];
        float *yr = y + off[1];
        if (step == 1) memcpy(yr, xr, (size_t)len * sizeof(float));
        else if (step == 0)
            for (int64_t i = 0; i < len; i++) yr[i] = xr[0];
        else
            for (int64_t i = 0; i < len; i++) yr[i] = xr[i * step];
        iter_next(&it, idx, off);
    }
}

static void run_reduce(g_reduce kind, const g_op *g, const g_val *vx, const float *x, const g_val *vy, float *y)
{
    /* output strides over the input's axes: 0 on reduced axes */
    int64_t s[2][G_MAX_RANK], ys[G_MAX_RANK], yd[G_MAX_RANK];
    int reduced[G_MAX_RANK] = {0};
    for (int k = 0; k < g->n_axes; k++) reduced[g->axes[k]] = 1;
    for (int a = 0; a < vx->ndim; a++) yd[a] = reduced[a] ? 1 : vx->d[a];
    contiguous_strides(vx->ndim, yd, ys);
    contiguous_strides(vx->ndim, vx->d, s[0]);
    for (int a = 0; a < vx->ndim; a++) s[1][a] = reduced[a] ? 0 : ys[a];
    const float init = kind == GR_AMAX ? -INFINITY : (kind == GR_AMIN ? INFINITY : 0.0f);
    for (int64_t i = 0; i < vy->numel; i++) y[i] = init;
    g_iter it;
    iter_init(&it, vx->ndim, vx->d, 2, s);
    const int last = it.rank - 1;
    const int64_t rows = iter_rows(&it), len = it.n[last], sy = it.s[1][last];
    int64_t idx[G_MAX_RANK] = {0}, off[2] = {0, 0};
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + off[0];
        float *yr = y + off[1];
        if (kind == GR_SUM || kind == GR_MEAN) {
            if (sy == 0) { /* a run of one reduction: summed in double */
                double acc = 0.0;
                for (int64_t i = 0; i < len; i++) acc += xr[i];
                yr[0] += (float)acc;
            } else {
                for (int64_t i = 0; i < len; i++) yr[i * sy] += xr[i];
            }
        } else if (kind == GR_AMAX) { /* NaN wins, as torch.amax */
            for (int64_t i = 0; i < len; i++) {
                const float v = xr[i], acc = yr[i * sy];
                yr[i * sy] = (v > acc || v != v) ? v : acc;
            }
        } else {
            for (int64_t i = 0; i < len; i++) {
                const float v = xr[i], acc = yr[i * sy];
                yr[i * sy] = (v < acc || v != v) ? v : acc;
            }
        }
        iter_next(&it, idx, off);
    }
    if (kind == GR_MEAN) {
        const float inv = (float)((double)vy->numel / (double)vx->numel);
        for (int64_t i = 0; i < vy->numel; i++) y[i] *= inv;
    }
}

/* torch.matmul of (..., n, k) and (..., k, m), batch dims broadcast. */
static void run_matmul(const g_val *va, const float *a, const g_val *vb, const float *b, const g_val *vy, float *y)
{
    const int ra = va->ndim, rb = vb->ndim, ry = vy->ndim;
    const int64_t n = va->d[ra - 2], k = va->d[ra - 1], m = vb->d[rb - 1];
    const int64_t batch = vy->numel / (n * m), a_batch = va->numel / (n * k), b_batch = vb->numel / (k * m);
    if (b_batch == 1 && a_batch == batch) { /* x @ W with W shared: one product over every row */
        co_gemm_nn(batch * n, m, k, a, k, b, m, 0.0f, y, m);
        return;
    }
    /* one product per batch matrix; matrix strides of each operand over the broadcast batch dims */
    const int nb = ry - 2;
    int64_t bd[G_MAX_RANK], sa[G_MAX_RANK], sb[G_MAX_RANK];
    for (int i = 0; i < nb; i++) bd[i] = vy->d[i];
    int64_t acc_a = n * k, acc_b = k * m;
    for (int i = nb - 1; i >= 0; i--) {
        const int ja = i - (nb - (ra - 2)), jb = i - (nb - (rb - 2));
        const int64_t da = ja >= 0 ? va->d[ja] : 1, db = jb >= 0 ? vb->d[jb] : 1;
        sa[i] = da == 1 ? 0 : acc_a;
        sb[i] = db == 1 ? 0 : acc_b;
        acc_a *= da;
        acc_b *= db;
    }
    int64_t idx[G_MAX_RANK] = {0}, oa = 0, ob = 0;
    for (int64_t t = 0; t < batch; t++) {
        co_gemm_nn(n, m, k, a + oa, k, b + ob, m, 0.0f, y + t * n * m, m);
        for (int i = nb - 1; i >= 0; i--) {
            oa += sa[i];
            ob += sb[i];
            if (++idx[i] < bd[i]) break;
            oa -= sa[i] * bd[i];
            ob -= sb[i] * bd[i];
            idx[i] = 0;
        }
    }
}

static void run_linear(const g_val *vx, const float *x, const g_val *vw, const float *w, const float *bias, float *y)
{
    const int64_t K = vw->d[1], N = vw->d[0], rows = vx->numel / K;
    if (bias) {
        for (int64_t r = 0; r < rows; r++) memcpy(y + r * N, bias, (size_t)N * sizeof(float));
        co_gemm_nt(rows, N, K, x, K, w, K, 1.0f, y, N);
    } else {
        co_gemm_nt(rows, N, K, x, K, w, K, 0.0f, y, N);
    }
}

/* Conv geometry as 3 spatial axes (missing leading ones are size 1, kernel 1, stride 1). */
typedef struct conv_geo {
    int64_t B, C, O, G, Cg, Og;
    int64_t in[3], k[3], out[3], s[3], p[3], dl[3];
    int64_t P, K; /* output positions, kernel taps */
    int direct;   /* 1x1, stride 1, no padding: the input is the column matrix */
} conv_geo;

static void conv_geometry(const g_op *g, const g_val *vx, const g_val *vw, const g_val *vy, conv_geo *c)
{
    const int lead = G_MAX_SP - g->n_sp;
    c->B = vx->d[0];
    c->C = vx->d[1];
    c->O = vw->d[0];
    c->G = g->groups;
    c->Cg = c->C / c->G;
    c->Og = c->O / c->G;
    c->P = 1;
    c->K = 1;
    c->direct = 1;
    for (int i = 0; i < G_MAX_SP; i++) {
        const int j = i - lead;
        c->in[i] = j >= 0 ? vx->d[2 + j] : 1;
        c->k[i] = j >= 0 ? vw->d[2 + j] : 1;
        c->out[i] = j >= 0 ? vy->d[2 + j] : 1;
        c->s[i] = j >= 0 ? g->stride[j] : 1;
        c->p[i] = j >= 0 ? g->pad[j] : 0;
        c->dl[i] = j >= 0 ? g->dil[j] : 1;
        c->P *= c->out[i];
        c->K *= c->k[i];
        if (c->k[i] != 1 || c->s[i] != 1 || c->p[i] != 0) c->direct = 0;
    }
}

/* Columns (Cg * K rows, P columns) of one batch item and group, zero outside the input. */
static void im2col(const conv_geo *c, const float *x, float *cols)
{
    for (int64_t ch = 0; ch < c->Cg; ch++) {
        const float *xc = x + ch * c->in[0] * c->in[1] * c->in[2];
        for (int64_t kd = 0; kd < c->k[0]; kd++)
            for (int64_t kh = 0; kh < c->k[1]; kh++)
                for (int64_t kw = 0; kw < c->k[2]; kw++) {
                    float *row = cols + (((ch * c->k[0] + kd) * c->k[1] + kh) * c->k[2] + kw) * c->P;
                    for (int64_t od = 0; od < c->out[0]; od++) {
                        const int64_t id = od * c->s[0] - c->p[0] + kd * c->dl[0];
                        for (int64_t oh = 0; oh < c->out[1]; oh++) {
                            const int64_t ih = oh * c->s[1] - c->p[1] + kh * c->dl[1];
                            float *r = row + (od * c->out[1] + oh) * c->out[2];
                            if (id < 0 || id >= c->in[0] || ih < 0 || ih >= c->in[1]) {
                                memset(r, 0, (size_t)c->out[2] * sizeof(float));
                                continue;
                            }
                            const float *xr = xc + (id * c->in[1] + ih) * c->in[2];
                            for (int64_t ow = 0; ow < c->out[2]; ow++) {
                                const int64_t iw = ow * c->s[2] - c->p[2] + kw * c->dl[2];
                                r[ow] = iw >= 0 && iw < c->in[2] ? xr[iw] : 0.0f;
                            }
                        }
                    }
                }
    }
}

static void run_conv(const g_op *g, const g_val *vx, const float *x, const g_val *vw, const float *w, const float *bias,
                     const g_val *vy, float *y, float *temp)
{
    conv_geo c;
    conv_geometry(g, vx, vw, vy, &c);
    const int64_t in_item = c.C * c.in[0] * c.in[1] * c.in[2], rows = c.Cg * c.K;
    for (int64_t bi = 0; bi < c.B; bi++)
        for (int64_t gi = 0; gi < c.G; gi++) {
            const float *xg = x + bi * in_item + gi * c.Cg * (in_item / c.C);
            float *yg = y + (bi * c.O + gi * c.Og) * c.P;
            const float *cols = xg;
            if (!c.direct) {
                im2col(&c, xg, temp);
                cols = temp;
            }
            float beta = 0.0f;
            if (bias) {
                for (int64_t o = 0; o < c.Og; o++)
                    for (int64_t q = 0; q < c.P; q++) yg[o * c.P + q] = bias[gi * c.Og + o];
                beta = 1.0f;
            }
            co_gemm_nn(c.Og, c.P, rows, w + gi * c.Og * rows, rows, cols, c.P, beta, yg, c.P);
        }
}

static void run_cat(const g_op *g, const g_val *const *vin, const float *const *xin, const g_val *vy, float *y)
{
    int64_t outer = 1, inner = 1;
    for (int a = 0; a < g->axis; a++) outer *= vy->d[a];
    for (int a = g->axis + 1; a < vy->ndim; a++) inner *= vy->d[a];
    const int64_t row = vy->d[g->axis] * inner;
    for (int64_t o = 0; o < outer; o++) {
        float *yo = y + o * row;
        for (int k = 0; k < g->n_in; k++) {
            const int64_t chunk = vin[k]->d[g->axis] * inner;
            memcpy(yo, xin[k] + o * chunk, (size_t)chunk * sizeof(float));
            yo += chunk;
        }
    }
}

static void run_slice(const g_op *g, const g_val *vx, const float *x, const g_val *vy, float *y)
{
    int64_t outer = 1, inner = 1;
    for (int a = 0; a < g->axis; a++) outer *= vx->d[a];
    for (int a = g->axis + 1; a < vx->ndim; a++) inner *= vx->d[a];
    const int64_t D = vx->d[g->axis], len = vy->d[g->axis];
    const int64_t start = g->start < D ? g->start : D; /* clamped as Python slices are */
    for (int64_t o = 0; o < outer; o++) {
        const float *xo = x + (o * D + start) * inner;
        float *yo = y + o * len * inner;
        if (g->step == 1) memcpy(yo, xo, (size_t)(len * inner) * sizeof(float));
        else
            for (int64_t j = 0; j < len; j++)
                memcpy(yo + j * inner, xo + j * g->step * inner, (size_t)inner * sizeof(float));
    }
}

/* ================================ running the graph ================================ */

static const float *val_ptr(const g_val *v, const float *in, float *out, float *scratch)
{
    switch (v->base) {
    case GV_INPUT: return in;
    case GV_OUTPUT: return out;
    case GV_CONST: return v->data;
    case GV_SCRATCH: break;
    }
    return scratch + v->off;
}

/* Runs every op on one frame `in`; the output value ends up in `out`. */
static void graph_run(const graph_params *p, const graph_rt *r, const float *in, float *out, float *scratch)
{
    float *temp = scratch + r->temp_off;
    for (int i = 0; i < p->n_ops; i++) {
        const g_op *g = &p->ops[i];
        const g_val *vy = &r->v[i + 1];
        if (g->kind == G_PARAM || g->kind == G_CONSTANT || g->alias) continue; /* nothing to compute */
        const g_val *vi[G_MAX_IN];
        const float *xi[G_MAX_IN];
        for (int k = 0; k < g->n_in; k++) {
            vi[k] = &r->v[g->in[k]];
            xi[k] = val_ptr(vi[k], in, out, scratch);
        }
        /* every computed value has storage of its own (never an input's): writable */
        float *y = (float *)val_ptr(vy, in, out, scratch);
        switch (g->kind) {
        case G_POINTWISE: co_pointwise_run(&g->pw, xi[0], y, vy->numel); break;
        case G_BINARY: run_binary((g_binary)g->sub, vi[0], xi[0], vi[1], xi[1], vy, y); break;
        case G_WHERE: run_where(vi[0], xi[0], vi[1], xi[1], vi[2], xi[2], vy, y); break;
        case G_MATMUL: run_matmul(vi[0], xi[0], vi[1], xi[1], vy, y); break;
        case G_LINEAR: run_linear(vi[0], xi[0], vi[1], xi[1], g->n_in > 2 ? xi[2] : NULL, y); break;
        case G_CONV: run_conv(g, vi[0], xi[0], vi[1], xi[1], g->n_in > 2 ? xi[2] : NULL, vy, y, temp); break;
        case G_SOFTMAX: {
            int64_t outer = 1, inner = 1;
            for (int a = 0; a < g->axis; a++) outer *= vy->d[a];
            for (int a = g->axis + 1; a < vy->ndim; a++) inner *= vy->d[a];
            co_softmax_run((co_softmax_kind)g->sub, outer, vy->d[g->axis], inner, xi[0], y, temp);
            break;
        }
        case G_REDUCE: run_reduce((g_reduce)g->sub, g, vi[0], xi[0], vy, y); break;
        case G_EXPAND: {
            int64_t s[G_MAX_RANK];
            broadcast_strides(vi[0], vy->ndim, vy->d, s);
            strided_copy(vy->ndim, vy->d, s, xi[0], y);
            break;
        }
        case G_PERMUTE: {
            int64_t own[G_MAX_RANK], s[G_MAX_RANK];
            contiguous_strides(vi[0]->ndim, vi[0]->d, own);
            for (int a = 0; a < vy->ndim; a++) s[a] = own[g->axes[a]];
            strided_copy(vy->ndim, vy->d, s, xi[0], y);
            break;
        }
        case G_CAT: run_cat(g, vi, xi, vy, y); break;
        case G_SLICE: run_slice(g, vi[0], xi[0], vy, y); break;
        case G_BATCH_NORM: {
            const int64_t C = vy->d[1], outer = vy->d[0], inner = vy->numel / (outer * C);
            co_channel_affine(outer, C, inner, g->data, g->data + C, xi[0], y);
            break;
        }
        case G_LAYER_NORM: {
            int64_t n = 1;
            for (int a = vy->ndim - g->ln_ndim; a < vy->ndim; a++) n *= vy->d[a];
            co_layer_norm_rows(vy->numel / n, n, (float)g->eps, g->n_in > 1 ? xi[1] : NULL, g->n_in > 2 ? xi[2] : NULL,
                               xi[0], y);
            break;
        }
        case G_PARAM:
        case G_CONSTANT:
        case G_RESHAPE: break;
        }
    }
    if (r->copy_out) {
        const g_val *vo = &r->v[p->output];
        memcpy(out, val_ptr(vo, in, out, scratch), (size_t)vo->numel * sizeof(float));
    }
}

static int graph_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out, float *scratch)
{
    (void)state;
    graph_run(op->params, rt->ext, in[0], out, scratch);
    return 1;
}

static co_status graph_clip(const co_op *op, const co_oprt *rt, const co_tshape *in_shapes, const float *const *in,
                            float *out, float *scratch)
{
    (void)in_shapes;
    const graph_rt *r = rt->ext;
    const int64_t T = r->T;
    float *fin = scratch + r->frame_in_off, *fout = scratch + r->frame_out_off;
    for (int64_t t = 0; t < T; t++) {
        for (int64_t q = 0; q < r->in_rows; q++)
            memcpy(fin + q * r->in_inner, in[0] + (q * T + t) * r->in_inner, (size_t)r->in_inner * sizeof(float));
        graph_run(op->params, r, fin, fout, scratch);
        for (int64_t q = 0; q < r->out_rows; q++)
            memcpy(out + (q * T + t) * r->out_inner, fout + q * r->out_inner, (size_t)r->out_inner * sizeof(float));
    }
    return CO_OK;
}

/* ================================ shape inference ================================ */

/* Right-aligned broadcast of values[0..n) into *y (torch's rule). */
static co_status infer_broadcast(const co_op *op, int i, int n, const g_val *const *v, g_val *y)
{
    int rank = 0;
    for (int k = 0; k < n; k++) rank = v[k]->ndim > rank ? v[k]->ndim : rank;
    y->ndim = rank;
    for (int a = 0; a < rank; a++) {
        int64_t d = 1;
        for (int k = 0; k < n; k++) {
            const int j = a - (rank - v[k]->ndim);
            const int64_t dk = j >= 0 ? v[k]->d[j] : 1;
            if (dk == 1) continue;
            if (d != 1 && dk != d) {
                char b0[160], b1[160];
                return op_error(op, i, "shapes %s and %s do not broadcast (axis %d of the result: %lld vs %lld)",
                                shape_str(v[0], b0, sizeof b0), shape_str(v[k], b1, sizeof b1), a, (long long)d,
                                (long long)dk);
            }
            d = dk;
        }
        y->d[a] = d;
    }
    return CO_OK;
}

/* Resolves the shape list of a reshape / expand against input x (expand: -1 keeps the axis). */
static co_status infer_shape_list(const co_op *op, int i, const g_op *g, int64_t batch, const g_val *x, g_val *y)
{
    char bx[160];
    y->ndim = g->n_shape;
    int free_axis = -1;
    for (int a = 0; a < g->n_shape; a++) {
        const g_dim *e = &g->shape[a];
        if (e->bd > 0) {
            if ((batch * e->bn) % e->bd != 0)
                return op_error(op, i, "shape entry %d is batch * %lld / %lld, but the batch %lld is not divisible by %lld",
                                a, (long long)e->bn, (long long)e->bd, (long long)batch, (long long)e->bd);
            y->d[a] = batch * e->bn / e->bd;
            if (y->d[a] < 1 || y->d[a] > G_MAX_DIM)
                return op_error(op, i, "shape entry %d (batch * %lld / %lld) is %lld, out of range", a, (long long)e->bn,
                                (long long)e->bd, (long long)y->d[a]);
        } else if (e->v == -1) {
            free_axis = a;
            y->d[a] = 1;
        } else {
            y->d[a] = e->v;
        }
    }
    if (g->kind == G_EXPAND) {
        if (x->ndim != g->n_shape)
            return op_error(op, i, "expand of %s to %d axes: the rank must stay the same", shape_str(x, bx, sizeof bx),
                            g->n_shape);
        for (int a = 0; a < g->n_shape; a++) {
            if (g->shape[a].bd == 0 && g->shape[a].v == -1) y->d[a] = x->d[a];
            if (x->d[a] != 1 && x->d[a] != y->d[a])
                return op_error(op, i, "cannot expand %s: axis %d has size %lld, the target %lld (only size-1 axes expand)",
                                shape_str(x, bx, sizeof bx), a, (long long)x->d[a], (long long)y->d[a]);
        }
        return CO_OK;
    }
    int64_t known = 1;
    for (int a = 0; a < g->n_shape; a++) {
        if (a == free_axis) continue;
        if (known > G_MAX_NUMEL / y->d[a]) return op_error(op, i, "target shape is too large");
        known *= y->d[a];
    }
    if (free_axis >= 0) {
        if (x->numel % known != 0)
            return op_error(op, i, "cannot reshape %s (%lld elements): the known axes hold %lld, which does not divide it",
                            shape_str(x, bx, sizeof bx), (long long)x->numel, (long long)known);
        y->d[free_axis] = x->numel / known;
    } else if (known != x->numel) {
        char by[160];
        for (int a = 0; a < g->n_shape; a++) y->d[a] = y->d[a] > 0 ? y->d[a] : 1;
        return op_error(op, i, "cannot reshape %s (%lld elements) to %s (%lld elements)", shape_str(x, bx, sizeof bx),
                        (long long)x->numel, shape_str(y, by, sizeof by), (long long)known);
    }
    return CO_OK;
}

/* Output shape of op i into *y, with MACs and temporary floats. */
static co_status infer_op(const co_op *op, int i, const g_val *vals, int64_t batch, g_val *y, int64_t *macs, int64_t *temp)
{
    const graph_params *p = op->params;
    const g_op *g = &p->ops[i];
    const g_val *v[G_MAX_IN];
    for (int k = 0; k < g->n_in; k++) v[k] = &vals[g->in[k]];
    char b0[160], b1[160], b2[160];
    co_status st = CO_OK;
    *temp = 0;
    switch (g->kind) {
    case G_PARAM:
    case G_CONSTANT:
        y->ndim = g->t_ndim;
        memcpy(y->d, g->t_shape, sizeof y->d);
        break;
    default: *y = *v[0]; break;
    }
    switch (g->kind) {
    case G_PARAM:
    case G_CONSTANT:
    case G_RESHAPE:
        break;
    case G_POINTWISE: break;
    case G_BINARY:
    case G_WHERE: st = infer_broadcast(op, i, g->n_in, v, y); break;
    case G_MATMUL: {
        const g_val *a = v[0], *b = v[1];
        if (a->ndim < 2 || b->ndim < 2)
            return op_error(op, i, "matmul needs operands of rank >= 2, got %s and %s", shape_str(a, b0, sizeof b0),
                            shape_str(b, b1, sizeof b1));
        if (a->d[a->ndim - 1] != b->d[b->ndim - 2])
            return op_error(op, i, "matmul of %s and %s: inner sizes %lld and %lld differ", shape_str(a, b0, sizeof b0),
                            shape_str(b, b1, sizeof b1), (long long)a->d[a->ndim - 1], (long long)b->d[b->ndim - 2]);
        g_val ba = *a, bb = *b; /* the batch parts */
        ba.ndim -= 2;
        bb.ndim -= 2;
        const g_val *bv[2] = {&ba, &bb};
        if ((st = infer_broadcast(op, i, 2, bv, y))) return st;
        y->d[y->ndim] = a->d[a->ndim - 2];
        y->d[y->ndim + 1] = b->d[b->ndim - 1];
        y->ndim += 2;
        break;
    }
    case G_LINEAR: {
        const g_val *x = v[0], *w = v[1];
        if (w->ndim != 2 || x->ndim < 1 || x->d[x->ndim - 1] != w->d[1])
            return op_error(op, i, "linear of %s with a weight %s: the weight must be (N, K) with K the last axis of x",
                            shape_str(x, b0, sizeof b0), shape_str(w, b1, sizeof b1));
        if (g->n_in > 2 && (v[2]->ndim != 1 || v[2]->d[0] != w->d[0]))
            return op_error(op, i, "linear bias %s must be (%lld)", shape_str(v[2], b2, sizeof b2), (long long)w->d[0]);
        y->d[y->ndim - 1] = w->d[0];
        break;
    }
    case G_CONV: {
        const g_val *x = v[0], *w = v[1];
        if (x->ndim != g->n_sp + 2 || w->ndim != g->n_sp + 2)
            return op_error(op, i, "a conv over %d spatial axes takes x (B, C, *S) and weight (O, C/groups, *k) of rank %d; got %s and %s",
                            g->n_sp, g->n_sp + 2, shape_str(x, b0, sizeof b0), shape_str(w, b1, sizeof b1));
        if (x->d[1] % g->groups != 0 || w->d[0] % g->groups != 0 || w->d[1] * g->groups != x->d[1])
            return op_error(op, i, "conv of %s with weight %s and groups %lld: channels do not match",
                            shape_str(x, b0, sizeof b0), shape_str(w, b1, sizeof b1), (long long)g->groups);
        if (g->n_in > 2 && (v[2]->ndim != 1 || v[2]->d[0] != w->d[0]))
            return op_error(op, i, "conv bias %s must be (%lld)", shape_str(v[2], b2, sizeof b2), (long long)w->d[0]);
        y->d[1] = w->d[0];
        int64_t cols = w->d[1], pos = 1;
        for (int s = 0; s < g->n_sp; s++) {
            const int64_t span = g->dil[s] * (w->d[2 + s] - 1) + 1, padded = x->d[2 + s] + 2 * g->pad[s];
            if (padded < span)
                return op_error(op, i, "conv of %s with weight %s: spatial axis %d (padded %lld) is smaller than the dilated kernel (%lld)",
                                shape_str(x, b0, sizeof b0), shape_str(w, b1, sizeof b1), s, (long long)padded, (long long)span);
            y->d[2 + s] = (padded - span) / g->stride[s] + 1;
            if (pos > G_MAX_NUMEL / y->d[2 + s]) return op_error(op, i, "conv output is too large");
            cols *= w->d[2 + s]; /* <= the weight's numel: bounded */
            pos *= y->d[2 + s];
        }
        int direct = 1;
        for (int s = 0; s < g->n_sp; s++)
            if (w->d[2 + s] != 1 || g->stride[s] != 1 || g->pad[s] != 0) direct = 0;
        if (!direct) {
            if (cols > G_MAX_NUMEL / pos) return op_error(op, i, "conv column matrix is too large");
            *temp = cols * pos;
        }
        *macs = count_mul(count_mul(x->d[0] * w->d[0], cols), pos); /* B, O <= 2^31: no overflow */
        break;
    }
    case G_SOFTMAX: {
        if (g->axis >= y->ndim)
            return op_error(op, i, "axis %d is out of range for %s", g->axis, shape_str(y, b0, sizeof b0));
        int64_t inner = 1;
        for (int a = g->axis + 1; a < y->ndim; a++) inner *= y->d[a];
        *temp = 2 * inner; /* co_softmax_run's running statistics */
        *macs = 3 * v[0]->numel;
        break;
    }
    case G_REDUCE: {
        int keep[G_MAX_RANK], r = 0;
        for (int a = 0; a < y->ndim; a++) keep[a] = 1;
        for (int k = 0; k < g->n_axes; k++) {
            if (g->axes[k] >= v[0]->ndim)
                return op_error(op, i, "axis %d is out of range for %s", g->axes[k], shape_str(v[0], b0, sizeof b0));
            keep[g->axes[k]] = 0;
        }
        for (int a = 0; a < v[0]->ndim; a++) {
            if (keep[a]) y->d[r++] = v[0]->d[a];
            else if (g->keepdim) y->d[r++] = 1;
        }
        y->ndim = r;
        break;
    }
    case G_EXPAND: st = infer_shape_list(op, i, g, batch, v[0], y); break;
    case G_PERMUTE:
        if (g->n_axes != v[0]->ndim)
            return op_error(op, i, "perm has %d axes, the input %s has %d", g->n_axes, shape_str(v[0], b0, sizeof b0),
                            v[0]->ndim);
        for (int a = 0; a < g->n_axes; a++) y->d[a] = v[0]->d[g->axes[a]];
        break;
    case G_CAT: {
        if (g->axis >= v[0]->ndim)
            return op_error(op, i, "axis %d is out of range for %s", g->axis, shape_str(v[0], b0, sizeof b0));
        for (int k = 1; k < g->n_in; k++) {
            int ok = v[k]->ndim == v[0]->ndim;
            for (int a = 0; ok && a < v[0]->ndim; a++) ok = a == g->axis || v[k]->d[a] == v[0]->d[a];
            if (!ok)
                return op_error(op, i, "cannot concatenate %s and %s along axis %d", shape_str(v[0], b0, sizeof b0),
                                shape_str(v[k], b1, sizeof b1), g->axis);
            y->d[g->axis] += v[k]->d[g->axis];
            if (y->d[g->axis] > G_MAX_DIM) return op_error(op, i, "concatenated axis is too large");
        }
        break;
    }
    case G_SLICE: {
        if (g->axis >= y->ndim)
            return op_error(op, i, "axis %d is out of range for %s", g->axis, shape_str(y, b0, sizeof b0));
        const int64_t D = y->d[g->axis];
        const int64_t start = g->start < D ? g->start : D, stop = g->stop < D ? g->stop : D;
        const int64_t len = stop > start ? (stop - start + g->step - 1) / g->step : 0;
        if (len < 1)
            return op_error(op, i, "slice %lld:%lld:%lld of axis %d of %s is empty", (long long)g->start,
                            (long long)g->stop, (long long)g->step, g->axis, shape_str(y, b0, sizeof b0));
        y->d[g->axis] = len;
        break;
    }
    case G_BATCH_NORM:
        if (v[0]->ndim < 2 || v[0]->d[1] != g->t_shape[0])
            return op_error(op, i, "batch_norm of %s with statistics of %lld channels (axis 1)",
                            shape_str(v[0], b0, sizeof b0), (long long)g->t_shape[0]);
        break;
    case G_LAYER_NORM: {
        if (g->ln_ndim > y->ndim)
            return op_error(op, i, "layer_norm over %d trailing axes of %s", g->ln_ndim, shape_str(y, b0, sizeof b0));
        for (int k = 1; k < g->n_in; k++) {
            int ok = v[k]->ndim == g->ln_ndim;
            for (int a = 0; ok && a < g->ln_ndim; a++) ok = v[k]->d[a] == y->d[y->ndim - g->ln_ndim + a];
            if (!ok)
                return op_error(op, i, "layer_norm %s %s must have the shape of the last %d axes of %s",
                                k == 1 ? "weight" : "bias", shape_str(v[k], b1, sizeof b1), g->ln_ndim,
                                shape_str(y, b0, sizeof b0));
        }
        break;
    }
    }
    if (st) return st;
    if (g->kind == G_RESHAPE && (st = infer_shape_list(op, i, g, batch, v[0], y))) return st;
    if (y->ndim > G_MAX_RANK) return op_error(op, i, "result has %d axes, at most %d are supported", y->ndim, G_MAX_RANK);
    y->numel = checked_numel(y->ndim, y->d);
    if (y->numel < 0) return op_error(op, i, "result %s is too large", shape_str(y, b0, sizeof b0));
    if (g->kind == G_MATMUL) {
        const g_val *a = v[0];
        *macs = count_mul(y->numel, a->d[a->ndim - 1]);
    } else if (g->kind == G_LINEAR) {
        *macs = count_mul(y->numel, v[1]->d[1]);
    } else if (g->kind != G_CONV && g->kind != G_SOFTMAX && g->kind != G_PARAM && g->kind != G_CONSTANT && !g->alias) {
        *macs = g->kind == G_REDUCE ? v[0]->numel : y->numel;
    }
    return CO_OK;
}

/* Scratch of the computed values: a value's region is free again once the last op that reads it
 * (or a view of it) has run, and is reused first fit; *used gets the peak. The output's producer
 * writes into `out`; views share their root's storage; param and constant data stay in the model. */
typedef struct g_span {
    int64_t off, len;
} g_span;

static int64_t span_take(g_span *fl, int *n, int64_t *top, int64_t len)
{
    for (int k = 0; k < *n; k++)
        if (fl[k].len >= len) {
            const int64_t off = fl[k].off;
            fl[k].off += len;
            fl[k].len -= len;
            if (fl[k].len == 0) {
                memmove(&fl[k], &fl[k + 1], (size_t)(*n - k - 1) * sizeof *fl);
                --*n;
            }
            return off;
        }
    const int64_t off = *top;
    *top += len;
    return off;
}

static void span_give(g_span *fl, int *n, int64_t *top, int64_t off, int64_t len)
{
    int k = 0;
    while (k < *n && fl[k].off < off) k++;
    memmove(&fl[k + 1], &fl[k], (size_t)(*n - k) * sizeof *fl);
    fl[k].off = off;
    fl[k].len = len;
    ++*n;
    if (k + 1 < *n && fl[k].off + fl[k].len == fl[k + 1].off) { /* merge with the next span */
        fl[k].len += fl[k + 1].len;
        memmove(&fl[k + 1], &fl[k + 2], (size_t)(*n - k - 2) * sizeof *fl);
        --*n;
    }
    if (k > 0 && fl[k - 1].off + fl[k - 1].len == fl[k].off) { /* and with the previous one */
        fl[k - 1].len += fl[k].len;
        memmove(&fl[k], &fl[k + 1], (size_t)(*n - k - 1) * sizeof *fl);
        --*n;
        k--;
    }
    if (fl[k].off + fl[k].len == *top) { /* the last span gives its room back to the top */
        *top = fl[k].off;
        --*n;
    }
}

static co_status assign_storage(const co_op *op, graph_rt *r, int out_root, int64_t *used)
{
    const graph_params *p = op->params;
    const int nv = p->n_ops + 1;
    int *root = co_alloc((size_t)nv * sizeof *root), *last = co_alloc((size_t)nv * sizeof *last);
    g_span *fl = co_alloc((size_t)(nv + 1) * sizeof *fl);
    if (!root || !last || !fl) {
        co_free(root);
        co_free(last);
        co_free(fl);
        return co_error(CO_ERR_OUT_OF_MEMORY, "%s (Graph): out of memory", node_name(op->path));
    }
    root[0] = 0;
    for (int v = 0; v < nv; v++) last[v] = v - 1; /* a value nobody reads is free after its own op */
    for (int i = 0; i < p->n_ops; i++) {
        const g_op *g = &p->ops[i];
        root[i + 1] = g->alias ? root[g->in[0]] : i + 1;
        for (int k = 0; k < g->n_in; k++) last[root[g->in[k]]] = i;
    }
    int n_free = 0;
    int64_t top = 0, peak = 0;
    co_status st = CO_OK;
    for (int i = 0; i < p->n_ops && !st; i++) {
        const g_op *g = &p->ops[i];
        g_val *vy = &r->v[i + 1];
        if (g->alias) {
            const g_val *x = &r->v[g->in[0]];
            vy->base = x->base;
            vy->off = x->off;
            vy->data = x->data;
        } else if (g->kind == G_PARAM || g->kind == G_CONSTANT) {
            vy->base = GV_CONST;
            vy->data = g->data;
        } else if (i + 1 == out_root) {
            vy->base = GV_OUTPUT;
        } else {
            vy->base = GV_SCRATCH;
            vy->off = span_take(fl, &n_free, &top, (vy->numel + 15) & ~(int64_t)15); /* 64-byte aligned */
            peak = top > peak ? top : peak;
            if (peak > G_MAX_SCRATCH)
                st = op_error(op, i, "the graph's live intermediate values exceed %lld floats", (long long)G_MAX_SCRATCH);
        }
        /* after op i: the scratch of every value it read for the last time is free, and its own
         * output's if nothing reads it (taken above, so an output never overlaps an input) */
        for (int k = 0; k <= g->n_in && !st; k++) {
            const int v = k < g->n_in ? root[g->in[k]] : i + 1;
            const g_val *x = &r->v[v];
            if (v > 0 && root[v] == v && last[v] == i && x->base == GV_SCRATCH) {
                span_give(fl, &n_free, &top, x->off, (x->numel + 15) & ~(int64_t)15);
                last[v] = -1; /* freed once, even when the op reads it twice */
            }
        }
    }
    co_free(root);
    co_free(last);
    co_free(fl);
    *used = peak;
    return st;
}

static co_status graph_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    const graph_params *p = op->params;
    const int t = in->has_time;
    char buf[160];
    graph_rt *r = co_calloc(1, sizeof *r);
    if (r) r->v = co_calloc((size_t)p->n_ops + 1, sizeof *r->v);
    if (!r || !r->v) {
        if (r) co_free(r);
        return co_error(CO_ERR_OUT_OF_MEMORY, "%s (Graph): out of memory", node_name(op->path));
    }
    co_status st = CO_OK;
    /* value 0: the frame; a clip without its time axis */
    g_val *v0 = &r->v[0];
    v0->ndim = in->ndim - t;
    for (int a = 0, j = 0; a < in->ndim; a++)
        if (!(t && a == 2)) v0->d[j++] = in->d[a];
    v0->numel = checked_numel(v0->ndim, v0->d);
    v0->base = GV_INPUT;
    if (v0->ndim < 1 || v0->numel < 0) {
        st = co_error(CO_ERR_SHAPE, "%s (Graph): input frame %s is out of range", node_name(op->path),
                      co_tshape_str(in, buf, sizeof buf));
        goto fail;
    }
    if (p->frame_ndim) {
        int same = v0->ndim == p->frame_ndim + 1;
        for (int i = 0; same && i < p->frame_ndim; i++) same = v0->d[i + 1] == p->frame[i];
        if (!same) {
            char want[160] = "(B";
            for (int i = 0; i < p->frame_ndim; i++)
                snprintf(want + strlen(want), sizeof want - strlen(want), ", %lld", (long long)p->frame[i]);
            snprintf(want + strlen(want), sizeof want - strlen(want), ")");
            st = co_error(CO_ERR_SHAPE,
                          "%s (Graph%s%s): traced for frames %s, gets %s; the traced code's reshapes hold for that "
                          "shape only: re-export with input_shape for this frame shape",
                          node_name(op->path), p->source ? " " : "", p->source ? p->source : "", want,
                          co_tshape_str(in, buf, sizeof buf));
            goto fail;
        }
    }
    const int64_t batch = v0->d[0];
    /* shapes */
    int64_t macs = 0, temp = 0;
    for (int i = 0; i < p->n_ops && !st; i++) {
        int64_t m = 0, tmp = 0;
        st = infer_op(op, i, r->v, batch, &r->v[i + 1], &m, &tmp);
        if (st) break;
        macs = macs > G_MACS_CAP - m ? G_MACS_CAP : macs + m;
        temp = tmp > temp ? tmp : temp;
    }
    if (st) goto fail;
    /* storage: the output value's producer writes into `out` unless it is a view or constant */
    int out_root = p->output;
    while (out_root > 0 && p->ops[out_root - 1].alias) out_root = p->ops[out_root - 1].in[0];
    const g_kind root_kind = out_root > 0 ? p->ops[out_root - 1].kind : G_PARAM;
    r->copy_out = out_root == 0 || root_kind == G_PARAM || root_kind == G_CONSTANT;
    int64_t used = 0;
    if ((st = assign_storage(op, r, out_root, &used))) goto fail;
    r->temp_off = used;
    used += (temp + 15) & ~(int64_t)15;
    const g_val *vo = &r->v[p->output];
    if (vo->ndim < 2 || vo->ndim > CO_MAX_DIMS - 1) {
        st = co_error(CO_ERR_SHAPE, "%s (Graph): the output (value %d) is %s; a graph must output (B, C, *S) with 2 to %d axes",
                      node_name(op->path), p->output, shape_str(vo, buf, sizeof buf), CO_MAX_DIMS - 1);
        goto fail;
    }
    rt->out.ndim = vo->ndim + t;
    rt->out.has_time = t;
    for (int a = 0, j = 0; a < rt->out.ndim; a++) rt->out.d[a] = t && a == 2 ? in->d[2] : vo->d[j++];
    r->has_time = t;
    if (t) {
        r->T = in->d[2];
        r->in_rows = v0->d[0] * v0->d[1];
        r->in_inner = v0->numel / r->in_rows;
        r->out_rows = vo->d[0] * vo->d[1];
        r->out_inner = vo->numel / r->out_rows;
        r->frame_in_off = used;
        used += (v0->numel + 15) & ~(int64_t)15;
        r->frame_out_off = used;
        used += (vo->numel + 15) & ~(int64_t)15;
        macs = count_mul(macs, r->T);
    }
    if (used > G_MAX_SCRATCH) {
        st = co_error(CO_ERR_SHAPE, "%s (Graph): needs %lld floats of scratch, more than %lld", node_name(op->path),
                      (long long)used, (long long)G_MAX_SCRATCH);
        goto fail;
    }
    rt->scratch_floats = (size_t)used;
    rt->macs = macs;
    rt->ext = r;
    return CO_OK;
fail:
    co_free(r->v);
    co_free(r);
    return st;
}

static const co_op_class k_graph = {
    .name = "graph",
    .resolve = graph_resolve,
    .step = graph_step,
    .clip = graph_clip,
    .destroy = graph_destroy,
    .release = graph_release,
};

/* ================================ building ================================ */

typedef struct claimed {
    const char *name; /* into the JSON, valid while building */
    int buffer, ndim;
    int64_t shape[G_MAX_RANK];
    const float *data;
} claimed;

typedef struct build_ctx {
    const char *path; /* the node's */
    graph_params *p;
    int index;        /* of the op being read */
    claimed *claims;  /* param tensors claimed so far */
    int n_claims;
    int batch_entries; /* a shape list names the batch with a divisor: the batch-1 check at load may not hold */
} build_ctx;

/* A list of ints (or, for shape lists, {"batch": [n, d]} objects) into out; *n gets the count.
 * allow_free: 0 no -1, 1 one -1 (reshape: inferred), 2 any number of -1 (expand: kept). */
static co_status read_dims(co_builder *b, const cJSON *obj, const char *opath, const char *key, int allow_free,
                           int allow_batch, g_dim *out, int *n, build_ctx *c)
{
    const cJSON *v = co_get_json(b, obj, key);
    if (!cJSON_IsArray(v)) return co_error(CO_ERR_NETWORK, "%s: '%s' must be a list", opath, key);
    const int count = cJSON_GetArraySize(v);
    if (count > G_MAX_RANK)
        return co_error(CO_ERR_NETWORK, "%s: '%s' has %d entries; at most %d axes are supported", opath, key, count, G_MAX_RANK);
    int k = 0, frees = 0;
    for (const cJSON *e = v->child; e; e = e->next, k++) {
        g_dim *d = &out[k];
        d->v = 0;
        d->bn = d->bd = 0;
        if (cJSON_IsNumber(e)) {
            const double x = e->valuedouble;
            if (floor(x) != x || !((x >= 1 && x <= (double)G_MAX_DIM) || (allow_free && x == -1)))
                return co_error(CO_ERR_NETWORK, "%s: '%s' entry %d must be a size in [1, 2^31]%s", opath, key, k,
                                allow_free ? " or -1" : "");
            d->v = (int64_t)x;
            frees += d->v == -1;
        } else if (allow_batch && cJSON_IsObject(e)) {
            const cJSON *bl = cJSON_GetObjectItemCaseSensitive(e, "batch");
            const cJSON *bn = cJSON_IsArray(bl) && cJSON_GetArraySize(bl) == 2 ? bl->child : NULL;
            if (!bn || cJSON_GetArraySize(e) != 1 || !cJSON_IsNumber(bn) || !cJSON_IsNumber(bn->next) ||
                floor(bn->valuedouble) != bn->valuedouble || floor(bn->next->valuedouble) != bn->next->valuedouble ||
                bn->valuedouble < 1 || bn->valuedouble > (double)G_MAX_DIM || bn->next->valuedouble < 1 ||
                bn->next->valuedouble > (double)G_MAX_DIM)
                return co_error(CO_ERR_NETWORK, "%s: '%s' entry %d must be {\"batch\": [n, d]} with n, d in [1, 2^31]",
                                opath, key, k);
            d->bn = (int64_t)bn->valuedouble;
            d->bd = (int64_t)bn->next->valuedouble;
            if (d->bd > 1) c->batch_entries = 1;
        } else {
            return co_error(CO_ERR_NETWORK, "%s: '%s' entry %d must be %s", opath, key, k,
                            allow_batch ? "an int or {\"batch\": [n, d]}" : "an int");
        }
    }
    if (frees > 1 && allow_free == 1) return co_error(CO_ERR_NETWORK, "%s: '%s' may hold -1 once only", opath, key);
    *n = count;
    return CO_OK;
}

/* The "shape" of a param or constant: 0..8 sizes >= 1. */
static co_status read_tensor_shape(co_builder *b, const cJSON *obj, const char *opath, g_op *g, build_ctx *c)
{
    g_dim d[G_MAX_RANK];
    int n = 0;
    co_status st = read_dims(b, obj, opath, "shape", 0, 0, d, &n, c);
    if (st) return st;
    g->t_ndim = n;
    for (int a = 0; a < n; a++) g->t_shape[a] = d[a].v;
    if (checked_numel(n, g->t_shape) < 0) return co_error(CO_ERR_NETWORK, "%s: 'shape' is too large", opath);
    return CO_OK;
}

/* A list of 1..max distinct axes in [0, G_MAX_RANK) (checked against ranks at resolve). */
static co_status read_axes(co_builder *b, const cJSON *obj, const char *opath, const char *key, int *axes, int *n)
{
    int64_t v[G_MAX_RANK];
    co_status st = co_get_int_list(b, obj, opath, key, G_MAX_RANK, 0, G_MAX_RANK - 1, v, n);
    if (st) return st;
    for (int k = 0; k < *n; k++) {
        axes[k] = (int)v[k];
        for (int j = 0; j < k; j++)
            if (axes[j] == axes[k]) return co_error(CO_ERR_NETWORK, "%s: '%s' names axis %d twice", opath, key, axes[k]);
    }
    return CO_OK;
}

/* A value `in[k]` that must come from a param or constant op of C floats (rank 1). */
static co_status folded_input(const build_ctx *c, const char *opath, const g_op *g, int k, int64_t C, const float **out)
{
    const int v = g->in[k];
    const g_op *src = v > 0 ? &c->p->ops[v - 1] : NULL;
    if (!src || (src->kind != G_PARAM && src->kind != G_CONSTANT) || src->t_ndim != 1 || (C > 0 && src->t_shape[0] != C))
        return co_error(CO_ERR_NETWORK,
                        "%s: batch_norm input %d (value %d) must be a param or constant of one axis%s (running statistics, "
                        "weight and bias are folded at load)",
                        opath, k, v, C > 0 ? " of the channel count" : "");
    *out = src->data;
    return CO_OK;
}

static co_status read_param(co_builder *b, const cJSON *obj, const char *opath, g_op *g, build_ctx *c)
{
    const char *name = NULL;
    int buffer = 0;
    co_status st;
    if ((st = co_get_string(b, obj, opath, "tensor", 1, NULL, G_MAX_TENSOR_NAME, &name)) ||
        (st = co_get_bool(b, obj, opath, "buffer", 0, 0, &buffer)) || (st = read_tensor_shape(b, obj, opath, g, c)))
        return st;
    for (int k = 0; k < c->n_claims; k++) {
        const claimed *cl = &c->claims[k];
        if (strcmp(cl->name, name) != 0) continue;
        int same = cl->ndim == g->t_ndim && cl->buffer == buffer;
        for (int a = 0; same && a < g->t_ndim; a++) same = cl->shape[a] == g->t_shape[a];
        if (!same)
            return co_error(CO_ERR_NETWORK, "%s: tensor '%s' is used by two param ops with different shapes or kinds", opath,
                            name);
        g->data = cl->data; /* the same tensor used twice: claimed once */
        return CO_OK;
    }
    st = buffer ? co_take_buffer(b, c->path, name, g->t_ndim, g->t_shape, 1, &g->data)
                : co_take_tensor(b, c->path, name, g->t_ndim, g->t_shape, 1, &g->data);
    if (st) return st;
    claimed *cl = &c->claims[c->n_claims++];
    cl->name = name;
    cl->buffer = buffer;
    cl->ndim = g->t_ndim;
    memcpy(cl->shape, g->t_shape, sizeof cl->shape);
    cl->data = g->data;
    return CO_OK;
}

static co_status read_constant(co_builder *b, const cJSON *obj, const char *opath, g_op *g, build_ctx *c)
{
    co_status st = read_tensor_shape(b, obj, opath, g, c);
    if (st) return st;
    const int64_t n = checked_numel(g->t_ndim, g->t_shape);
    const cJSON *data = co_get_json(b, obj, "data");
    if (n > G_MAX_CONST) return co_error(CO_ERR_NETWORK, "%s: an inline constant holds at most %d floats", opath, G_MAX_CONST);
    if (!cJSON_IsArray(data) || cJSON_GetArraySize(data) != n)
        return co_error(CO_ERR_NETWORK, "%s: 'data' must be a list of %lld numbers (the shape's element count)", opath,
                        (long long)n);
    g->owned = co_alloc((size_t)n * sizeof(float));
    if (!g->owned) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", opath);
    int64_t k = 0;
    for (const cJSON *e = data->child; e; e = e->next, k++) {
        if (!cJSON_IsNumber(e) || !(fabs(e->valuedouble) <= FLT_MAX))
            return co_error(CO_ERR_NETWORK, "%s: 'data' entry %lld must be a finite float32 number", opath, (long long)k);
        g->owned[k] = (float)e->valuedouble;
    }
    g->data = g->owned;
    return CO_OK;
}

static co_status read_conv(co_builder *b, const cJSON *obj, const char *opath, g_op *g)
{
    int64_t s[G_MAX_SP], p[G_MAX_SP], d[G_MAX_SP];
    int ns = 0, np = 0, nd = 0;
    co_status st;
    if ((st = co_get_int_list(b, obj, opath, "stride", G_MAX_SP, 1, 1 << 20, s, &ns)) ||
        (st = co_get_int_list(b, obj, opath, "padding", G_MAX_SP, 0, 1 << 20, p, &np)) ||
        (st = co_get_int_list(b, obj, opath, "dilation", G_MAX_SP, 1, 1 << 20, d, &nd)) ||
        (st = co_get_int(b, obj, opath, "groups", 0, 1, 1, 1 << 24, &g->groups)))
        return st;
    if (ns != np || ns != nd)
        return co_error(CO_ERR_NETWORK, "%s: 'stride', 'padding' and 'dilation' must list one value per spatial axis (%d, %d, %d given)",
                        opath, ns, np, nd);
    g->n_sp = ns;
    memcpy(g->stride, s, sizeof g->stride);
    memcpy(g->pad, p, sizeof g->pad);
    memcpy(g->dil, d, sizeof g->dil);
    return CO_OK;
}

/* Reads one op object (called through co_read_object, which then refuses unread keys). */
static co_status read_op(co_builder *b, const cJSON *obj, const char *opath, void *ctx)
{
    build_ctx *c = ctx;
    g_op *g = &c->p->ops[c->index];
    const int i = c->index;
    const char *name = NULL;
    co_status st = co_get_string(b, obj, opath, "op", 1, NULL, G_MAX_NAME - 1, &name);
    if (st) return st;
    snprintf(g->name, sizeof g->name, "%s", name);
    const cJSON *src = co_get_json(b, obj, "source");
    if (src && !cJSON_IsNull(src)) {
        if (!cJSON_IsString(src)) return co_error(CO_ERR_NETWORK, "%s: 'source' must be a string", opath);
        const size_t len = strlen(src->valuestring), keep = len < G_MAX_SOURCE ? len : G_MAX_SOURCE;
        g->source = co_alloc(keep + 1);
        if (!g->source) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", opath);
        memcpy(g->source, src->valuestring, keep);
        g->source[keep] = '\0';
    }
    /* the kind and its input count */
    int min_in = 1, max_in = 1, known = 0;
    for (size_t k = 0; k < sizeof k_ops / sizeof k_ops[0] && !known; k++)
        if (strcmp(k_ops[k].name, name) == 0) {
            g->kind = k_ops[k].kind;
            min_in = k_ops[k].min_in;
            max_in = k_ops[k].max_in;
            known = 1;
        }
    for (int k = 0; k_binary_names[k] && !known; k++)
        if (strcmp(k_binary_names[k], name) == 0) {
            g->kind = G_BINARY;
            g->sub = k;
            min_in = max_in = 2;
            known = 1;
        }
    for (int k = 0; k_reduce_names[k] && !known; k++)
        if (strcmp(k_reduce_names[k], name) == 0) {
            g->kind = G_REDUCE;
            g->sub = k;
            known = 1;
        }
    if (!known) g->kind = G_POINTWISE; /* co_read_pointwise refuses a name it does not know */
    /* inputs: ids of earlier values */
    const cJSON *ins = co_get_json(b, obj, "in");
    int n_in = 0;
    if (ins && !cJSON_IsArray(ins)) return co_error(CO_ERR_NETWORK, "%s: 'in' must be a list of value ids", opath);
    if (ins) n_in = cJSON_GetArraySize(ins);
    if (n_in < min_in || n_in > max_in)
        return min_in == max_in
                   ? co_error(CO_ERR_NETWORK, "%s: '%s' takes %d input%s, 'in' lists %d", opath, name, min_in,
                              min_in == 1 ? "" : "s", n_in)
                   : co_error(CO_ERR_NETWORK, "%s: '%s' takes %d to %d inputs, 'in' lists %d", opath, name, min_in,
                              max_in, n_in);
    int k = 0;
    if (ins)
        for (const cJSON *e = ins->child; e; e = e->next, k++) {
            if (!cJSON_IsNumber(e) || floor(e->valuedouble) != e->valuedouble || e->valuedouble < 0 || e->valuedouble > i)
                return co_error(CO_ERR_NETWORK, "%s: 'in' entry %d must be the id of an earlier value (0 to %d)", opath, k, i);
            g->in[k] = (int)e->valuedouble;
        }
    g->n_in = n_in;
    const double big = FLT_MAX;
    switch (g->kind) {
    case G_PARAM: return read_param(b, obj, opath, g, c);
    case G_CONSTANT: return read_constant(b, obj, opath, g, c);
    case G_POINTWISE:
        if ((st = co_read_pointwise(b, obj, opath, name, &g->pw))) return st;
        g->alias = g->pw.kind == CO_PW_IDENTITY;
        return CO_OK;
    case G_BINARY:
    case G_WHERE:
    case G_MATMUL:
    case G_LINEAR: return CO_OK;
    case G_CONV: return read_conv(b, obj, opath, g);
    case G_SOFTMAX: {
        int64_t axis = 0;
        g->sub = strcmp(name, "log_softmax") == 0 ? CO_LOG_SOFTMAX : CO_SOFTMAX;
        st = co_get_int(b, obj, opath, "axis", 1, 0, 0, G_MAX_RANK - 1, &axis);
        g->axis = (int)axis;
        return st;
    }
    case G_REDUCE:
        if ((st = read_axes(b, obj, opath, "axes", g->axes, &g->n_axes))) return st;
        return co_get_bool(b, obj, opath, "keepdim", 0, 0, &g->keepdim);
    case G_RESHAPE:
        g->alias = 1;
        return read_dims(b, obj, opath, "shape", 1, 1, g->shape, &g->n_shape, c);
    case G_EXPAND: return read_dims(b, obj, opath, "shape", 2, 1, g->shape, &g->n_shape, c);
    case G_PERMUTE: {
        if ((st = read_axes(b, obj, opath, "perm", g->axes, &g->n_axes))) return st;
        for (int a = 0; a < g->n_axes; a++)
            if (g->axes[a] >= g->n_axes)
                return co_error(CO_ERR_NETWORK, "%s: 'perm' is not a permutation of 0..%d", opath, g->n_axes - 1);
        return CO_OK;
    }
    case G_CAT: {
        int64_t axis = 0;
        st = co_get_int(b, obj, opath, "axis", 1, 0, 0, G_MAX_RANK - 1, &axis);
        g->axis = (int)axis;
        return st;
    }
    case G_SLICE: {
        int64_t axis = 0;
        if ((st = co_get_int(b, obj, opath, "axis", 1, 0, 0, G_MAX_RANK - 1, &axis)) ||
            (st = co_get_int(b, obj, opath, "start", 1, 0, 0, G_MAX_NUMEL, &g->start)) ||
            (st = co_get_int(b, obj, opath, "stop", 1, 0, 0, G_MAX_NUMEL, &g->stop)) ||
            (st = co_get_int(b, obj, opath, "step", 0, 1, 1, G_MAX_NUMEL, &g->step)))
            return st;
        g->axis = (int)axis;
        return CO_OK;
    }
    case G_BATCH_NORM: {
        if ((st = co_get_float(b, obj, opath, "eps", 0, 1e-5, 0.0, big, &g->eps))) return st;
        const float *mean = NULL, *var = NULL, *w = NULL, *bias = NULL;
        if ((st = folded_input(c, opath, g, 1, 0, &mean))) return st;
        const int64_t C = c->p->ops[g->in[1] - 1].t_shape[0];
        if ((st = folded_input(c, opath, g, 2, C, &var)) || (g->n_in > 3 && (st = folded_input(c, opath, g, 3, C, &w))) ||
            (g->n_in > 4 && (st = folded_input(c, opath, g, 4, C, &bias))))
            return st;
        g->owned = co_alloc((size_t)(2 * C) * sizeof(float));
        if (!g->owned) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", opath);
        for (int64_t ch = 0; ch < C; ch++) { /* y = (x - mean) / sqrt(var + eps) * w + b = x * scale + shift */
            const double scale = (w ? w[ch] : 1.0) / sqrt((double)var[ch] + g->eps);
            g->owned[ch] = (float)scale;
            g->owned[C + ch] = (float)((bias ? bias[ch] : 0.0) - mean[ch] * scale);
        }
        g->data = g->owned;
        g->t_ndim = 1;
        g->t_shape[0] = C;
        return CO_OK;
    }
    case G_LAYER_NORM: {
        int64_t nd = 1;
        if ((st = co_get_int(b, obj, opath, "ndim", 1, 1, 1, G_MAX_RANK, &nd)) ||
            (st = co_get_float(b, obj, opath, "eps", 0, 1e-5, 0.0, big, &g->eps)))
            return st;
        g->ln_ndim = (int)nd;
        return CO_OK;
    }
    }
    return CO_OK;
}

/* "unused": tensors of the traced module's state_dict that no op reads (num_batches_tracked, a
 * tied parameter's second name), claimed without being read so that every tensor of the file is
 * claimed once. A name that is absent is an error: the exporter lists only what it wrote. */
static co_status claim_unused(co_builder *b, const cJSON *node, const char *path)
{
    const cJSON *u = co_get_json(b, node, "unused");
    if (!u || cJSON_IsNull(u)) return CO_OK;
    if (!cJSON_IsArray(u) || cJSON_GetArraySize(u) > G_MAX_UNUSED)
        return co_error(CO_ERR_NETWORK, "%s (Graph): 'unused' must be a list of at most %d tensor names", node_name(path),
                        G_MAX_UNUSED);
    int k = 0;
    for (const cJSON *e = u->child; e; e = e->next, k++) {
        if (!cJSON_IsString(e) || strlen(e->valuestring) > G_MAX_TENSOR_NAME)
            return co_error(CO_ERR_NETWORK, "%s (Graph): 'unused' entry %d must be a tensor name of at most %d bytes",
                            node_name(path), k, G_MAX_TENSOR_NAME);
        /* an optional take of a 0-d buffer tells "absent" apart (and claims a 0-d float tensor) */
        const float *data = NULL;
        co_status st = co_take_buffer(b, path, e->valuestring, 0, NULL, 0, &data);
        if (!st && !data)
            return co_error(CO_ERR_TENSOR, "%s (Graph): tensor '%s' listed in 'unused' is not in the file", node_name(path),
                            e->valuestring);
        if (!st) continue;
        /* any other dtype or rank: co_skip_tensor claims it once its rank is named */
        for (int nd = 0; nd <= G_MAX_RANK && st; nd++) st = co_skip_tensor(b, path, e->valuestring, nd);
        if (st) return st;
    }
    return CO_OK;
}

/* ================================ rewrites at load ================================ */

/* Ops of p that read value v (the graph output counts as a reader). */
static int value_readers(const graph_params *p, int v)
{
    int n = p->output == v;
    for (int i = 0; i < p->n_ops; i++)
        for (int k = 0; k < p->ops[i].n_in; k++) n += p->ops[i].in[k] == v;
    return n;
}

/* x * sigmoid(x) (how X3D and others write Swish) becomes one SiLU op in product form
 * (CO_PW_SILU, a = 1: pointwise.h), where the sigmoid has no reader but the product: one pass
 * instead of two and no intermediate value, with the bits of sigmoid then multiply (the same
 * sigmoid loop, then one rounded product). The sigmoid op stays as an identity view that nobody
 * reads, so value ids do not move. */
static void fold_swish(graph_params *p)
{
    for (int i = 0; i < p->n_ops; i++) {
        g_op *m = &p->ops[i];
        if (m->kind != G_BINARY || m->sub != GB_MUL) continue;
        for (int k = 0; k < 2; k++) {
            const int s = m->in[k], x = m->in[1 - k];
            if (s < 1) continue;
            g_op *sg = &p->ops[s - 1];
            if (sg->kind != G_POINTWISE || sg->pw.kind != CO_PW_SIGMOID || sg->in[0] != x || value_readers(p, s) != 1)
                continue;
            m->kind = G_POINTWISE;
            m->pw = (co_pointwise){CO_PW_SILU, 1.0f, 0.0f, 0.0f};
            m->n_in = 1;
            m->in[0] = x;
            m->in[1] = 0;
            sg->pw = (co_pointwise){CO_PW_IDENTITY, 0.0f, 0.0f, 0.0f};
            sg->alias = 1;
            break;
        }
    }
}

/* A reshape that keeps the batch as axis 0 and fixes every other axis: 1 and the product of
 * those axes in *numel, else 0. */
static int batch_reshape(const g_op *g, int64_t *numel)
{
    if (g->n_shape < 1 || g->shape[0].bn != 1 || g->shape[0].bd != 1) return 0;
    int64_t n = 1;
    for (int a = 1; a < g->n_shape; a++) {
        if (g->shape[a].bd != 0 || g->shape[a].v < 1) return 0;
        n = count_mul(n, g->shape[a].v);
    }
    *numel = n;
    return 1;
}

/* Whether the graph is one element-wise function of its input with the input's shape (so that
 * the fusion pass may fold it into the op producing its input, src/core/fuse.c): one computed
 * op, a pointwise one, on value 0 seen through views; every other op a view; every reshape keeps
 * the batch and the traced frame's element count, and the one nearest the output gives the
 * traced frame back. A zoo Swish (reshape, x * sigmoid(x), reshape) is one once fold_swish ran.
 * Such a graph means the same at any frame shape, so folding it drops no needed shape check. */
static int graph_elementwise(const graph_params *p, co_pointwise *f)
{
    int e = -1;
    int64_t frame_numel = 1;
    for (int a = 0; a < p->frame_ndim; a++) frame_numel = count_mul(frame_numel, p->frame[a]);
    for (int i = 0; i < p->n_ops; i++) {
        const g_op *g = &p->ops[i];
        int64_t n = 0;
        if (g->kind == G_POINTWISE && !g->alias) {
            if (e >= 0) return 0;
            e = i;
        } else if (g->kind == G_RESHAPE) {
            if (!p->frame_ndim || !batch_reshape(g, &n) || n != frame_numel) return 0;
        } else if (!(g->kind == G_POINTWISE && g->alias)) {
            return 0;
        }
    }
    if (e < 0) return 0;
    int v = p->ops[e].in[0];
    while (v > 0 && p->ops[v - 1].alias) v = p->ops[v - 1].in[0];
    if (v != 0) return 0;
    int reshaped = 0;
    for (v = p->output; v > 0 && v != e + 1 && p->ops[v - 1].alias; v = p->ops[v - 1].in[0]) {
        const g_op *g = &p->ops[v - 1];
        if (g->kind != G_RESHAPE || reshaped) continue;
        reshaped = 1;
        int same = g->n_shape == p->frame_ndim + 1;
        for (int a = 0; same && a < p->frame_ndim; a++) same = g->shape[a + 1].v == p->frame[a];
        if (!same) return 0;
    }
    if (v != e + 1) return 0;
    /* no reshape after the function: the reshapes before it must then leave the frame as it was */
    if (!reshaped)
        for (int i = 0; i < e; i++)
            if (p->ops[i].kind == G_RESHAPE) return 0;
    *f = p->ops[e].pw;
    return 1;
}

int co_graph_pointwise(const co_op *op, co_pointwise *f)
{
    if (op->cls != &k_graph) return 0;
    const graph_params *p = op->params;
    if (!p->elementwise) return 0;
    *f = p->pw;
    return 1;
}

static co_status build_graph(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *props)
{
    if (in < 0)
        return co_error(CO_ERR_NETWORK, "%s (Graph): takes one stream but receives a list (from Broadcast/Parallel)",
                        node_name(path));
    const cJSON *ops = co_get_json(b, node, "ops");
    const cJSON *src = co_get_json(b, node, "source");
    const int n = cJSON_IsArray(ops) ? cJSON_GetArraySize(ops) : -1;
    if (n < 1 || n > G_MAX_OPS)
        return co_error(CO_ERR_NETWORK, "%s (Graph): 'ops' must be a list of 1 to %d ops", node_name(path), G_MAX_OPS);
    if (src && !cJSON_IsNull(src) && !cJSON_IsString(src))
        return co_error(CO_ERR_NETWORK, "%s (Graph): 'source' must be a string", node_name(path));
    int64_t output = 0, frame[G_MAX_RANK];
    int frame_ndim = 0;
    co_status st = co_get_int(b, node, path, "output", 1, 0, 1, n, &output);
    if (st) return st;
    const cJSON *fr = cJSON_GetObjectItemCaseSensitive(node, "frame");
    if (fr && !cJSON_IsNull(fr) &&
        (st = co_get_int_list(b, node, path, "frame", G_MAX_RANK - 1, 1, G_MAX_DIM, frame, &frame_ndim)))
        return st;
    graph_params *p = co_calloc(1, sizeof *p);
    claimed *claims = co_calloc((size_t)n, sizeof *claims);
    if (p) p->ops = co_calloc((size_t)n, sizeof *p->ops);
    if (!p || !p->ops || !claims) {
        if (p) co_free(p->ops);
        co_free(p);
        co_free(claims);
        return co_error(CO_ERR_OUT_OF_MEMORY, "%s (Graph): out of memory", node_name(path));
    }
    p->output = (int)output;
    p->frame_ndim = frame_ndim;
    for (int i = 0; i < frame_ndim; i++) p->frame[i] = frame[i];
    if (cJSON_IsString(src)) {
        const size_t len = strlen(src->valuestring), keep = len < G_MAX_SOURCE ? len : G_MAX_SOURCE;
        p->source = co_alloc(keep + 1);
        if (!p->source) st = co_error(CO_ERR_OUT_OF_MEMORY, "%s (Graph): out of memory", node_name(path));
        else {
            memcpy(p->source, src->valuestring, keep);
            p->source[keep] = '\0';
        }
    }
    build_ctx c = {path, p, 0, claims, 0, 0};
    int i = 0;
    for (const cJSON *e = ops->child; e && !st; e = e->next, i++) {
        char opath[1200];
        snprintf(opath, sizeof opath, "%s (Graph) op %d", node_name(path), i);
        c.index = i;
        p->n_ops = i + 1; /* so that destroy frees what this op owns, if reading it fails */
        st = co_read_object(b, e, opath, read_op, &c);
    }
    co_free(claims);
    if (!st) st = claim_unused(b, node, path);
    if (st) {
        co_op tmp;
        memset(&tmp, 0, sizeof tmp);
        tmp.params = p;
        graph_destroy(&tmp);
        return st;
    }
    if (c.batch_entries) co_mark_batch_bound(b); /* a batch entry with a divisor: batch 1 may not divide */
    fold_swish(p);
    p->elementwise = graph_elementwise(p, &p->pw);
    co_op *op = co_emit(b, &k_graph, path, 1, &in, p); /* frees p on failure */
    if (!op) return co_emit_failure(b);
    *out = op->out;
    co_props_frame_local(props);
    return CO_OK;
}

static const co_module_reg k_graph_modules[] = {{"Graph", build_graph, 0}};
CO_MODULE_LIST(co_graph_modules, k_graph_modules)
