/*
 * utility.c — the reference's small utilities: Skip, Reshape, and the closures Add, Multiply,
 * Constant, Zero, One and Lambda (a named built-in element-wise function, or a C callback
 * given at load). All are stateless but Skip.
 */
#include <string.h>

#include "core/build.h"
#include "kernels/pointwise.h"

enum util_kind { U_SKIP, U_RESHAPE, U_ADD, U_MUL, U_CONST, U_LAMBDA };
/* the registry's variants: which type a node is */
enum util_type { T_SKIP, T_RESHAPE, T_ADD, T_MULTIPLY, T_CONSTANT, T_ZERO, T_ONE, T_LAMBDA };
/* Lambda's built-in functions (docs/format.md): torch functional names, whose formulas are
 * co_read_pointwise's (one implementation, NaN handled as torch) */
static const char *const k_builtins[] = {"identity", "relu", "sigmoid", "tanh", "exp", "log", "abs", "neg", "square",
                                         "sqrt", "sin", "cos", NULL};

typedef struct util_params {
    int kind;
    int64_t steps;      /* Skip */
    float value;        /* Add / Multiply / Constant */
    int builtin;        /* Lambda: a built-in, whose formula is `pw` */
    co_pointwise pw;
    int takes_time;     /* Lambda: the callback sees whole clips in forward */
    co_lambda_fn fn;
    void *user;
    int ndim;           /* Reshape */
    int64_t shape[CO_MAX_DIMS];
} util_params;

static co_status util_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    const util_params *p = op->params;
    const int t = in->has_time;
    rt->out = *in;
    const int64_t n = co_tshape_numel(in);
    rt->macs = n;
    switch (p->kind) {
    case U_SKIP:
        if (t) {
            if (in->d[2] <= p->steps)
                return co_error(CO_ERR_SHAPE, "%s: clip of %lld frames is not longer than Skip(%lld)", op->path,
                                (long long)in->d[2], (long long)p->steps);
            rt->out.d[2] = in->d[2] - p->steps;
        } else {
            rt->state_bytes = sizeof(int64_t);
        }
        break;
    case U_RESHAPE: {
        const int64_t frame = t ? n / in->d[2] : n;
        int64_t known = 1;
        int free_dim = -1;
        for (int i = 0; i < p->ndim; i++) {
            if (p->shape[i] == -1) free_dim = i;
            else known *= p->shape[i];
        }
        co_tshape o = {p->ndim + t, t, {0}};
        for (int i = 0, j = 0; i < p->ndim; i++, j++) {
            if (t && i == 2) o.d[j++] = in->d[2]; /* time goes back to dim 2 */
            o.d[j] = p->shape[i] == -1 ? (known ? frame / known : 0) : p->shape[i];
        }
        if (t && p->ndim == 2) o.d[2] = in->d[2];
        if ((free_dim < 0 && known != frame) || (free_dim >= 0 && (known == 0 || frame % known)) || p->ndim < 2)
            return co_error(CO_ERR_SHAPE, "%s: a frame of %lld elements cannot be reshaped to the given shape", op->path,
                            (long long)frame);
        rt->out = o;
        rt->scratch_floats = t ? (size_t)frame : 0;
        break;
    }
    case U_LAMBDA:
        if (p->fn && t && !p->takes_time) rt->scratch_floats = (size_t)(2 * (n / in->d[2]));
        break;
    default:
        break;
    }
    return CO_OK;
}

static void to_shape(const co_tshape *t, co_shape *s)
{
    s->ndim = t->ndim;
    for (int i = 0; i < t->ndim; i++) s->dims[i] = t->d[i];
}

static void elementwise(const util_params *p, const float *x, float *y, int64_t n)
{
    const float v = p->value;
    switch (p->kind) {
    case U_ADD: for (int64_t i = 0; i < n; i++) y[i] = x[i] + v; return;
    case U_MUL: for (int64_t i = 0; i < n; i++) y[i] = x[i] * v; return;
    case U_CONST: for (int64_t i = 0; i < n; i++) y[i] = v; return;
    default: break;
    }
    if (p->builtin) co_pointwise_run(&p->pw, x, y, n);
    else memcpy(y, x, (size_t)n * sizeof(float));
}

static co_status util_check_state(const co_op *op, const co_oprt *rt, const void *state)
{
    const util_params *p = op->params;
    int64_t c;
    memcpy(&c, state, sizeof c);
    if (c < 0 || c > p->steps) return co_error(CO_ERR_STATE, "%s: saved state has an out-of-range step count", op->path);
    return CO_OK;
}

static int util_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out, float *scratch)
{
    const util_params *p = op->params;
    const int64_t n = co_tshape_numel(&rt->out);
    if (p->kind == U_SKIP) {
        int64_t *count = state;
        if (*count < p->steps) {
            ++*count;
            return 0;
        }
    }
    if (p->kind == U_LAMBDA && p->fn) {
        co_shape s;
        to_shape(&rt->out, &s);
        p->fn(in[0], &s, out, p->user);
        return 1;
    }
    if (p->kind == U_SKIP || p->kind == U_RESHAPE) memcpy(out, in[0], (size_t)n * sizeof(float));
    else elementwise(p, in[0], out, n);
    return 1;
}

static co_status util_clip(const co_op *op, const co_oprt *rt, const co_tshape *in_shapes, const float *const *in,
                           float *out, float *scratch)
{
    const util_params *p = op->params;
    const co_tshape *is = &in_shapes[0];
    const int64_t T = is->d[2], rows = is->d[0] * is->d[1], S = co_tshape_inner(is) / T;
    switch (p->kind) {
    case U_SKIP:
        for (int64_t r = 0; r < rows; r++)
            memcpy(out + r * (T - p->steps) * S, in[0] + (r * T + p->steps) * S, (size_t)((T - p->steps) * S) * sizeof(float));
        return CO_OK;
    case U_RESHAPE: { /* frame by frame: out frame t (B', C', *S') = in frame t, reshaped */
        const int64_t orows = rt->out.d[0] * rt->out.d[1], oS = co_tshape_inner(&rt->out) / T;
        for (int64_t t = 0; t < T; t++) {
            for (int64_t r = 0; r < rows; r++) memcpy(scratch + r * S, in[0] + (r * T + t) * S, (size_t)S * sizeof(float));
            for (int64_t r = 0; r < orows; r++) memcpy(out + (r * T + t) * oS, scratch + r * oS, (size_t)oS * sizeof(float));
        }
        return CO_OK;
    }
    default:
        break;
    }
    if (p->kind == U_LAMBDA && p->fn) {
        co_shape s;
        if (p->takes_time) {
            to_shape(is, &s);
            p->fn(in[0], &s, out, p->user);
            return CO_OK;
        }
        co_tshape f = *is; /* the frame shape: time removed */
        for (int i = 2; i + 1 < f.ndim; i++) f.d[i] = f.d[i + 1];
        f.ndim--;
        f.has_time = 0;
        to_shape(&f, &s);
        float *xf = scratch, *yf = scratch + rows * S;
        for (int64_t t = 0; t < T; t++) {
            for (int64_t r = 0; r < rows; r++) memcpy(xf + r * S, in[0] + (r * T + t) * S, (size_t)S * sizeof(float));
            p->fn(xf, &s, yf, p->user);
            for (int64_t r = 0; r < rows; r++) memcpy(out + (r * T + t) * S, yf + r * S, (size_t)S * sizeof(float));
        }
        return CO_OK;
    }
    elementwise(p, in[0], out, co_tshape_numel(is));
    return CO_OK;
}

static const co_op_class k_util = {"utility", util_resolve, NULL, util_check_state, util_step, util_clip, NULL};
static const co_op_class k_util_stateless = {"utility", util_resolve, NULL, NULL, util_step, util_clip, NULL};

co_status co_build_utility(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *props)
{
    const int type = co_build_variant(b);
    util_params *p = co_calloc(1, sizeof *p);
    if (!p) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    co_status st = CO_OK;
    double v = 0;
    co_props_frame_local(props);
    switch (type) {
    case T_SKIP:
        p->kind = U_SKIP;
        st = co_get_int(b, node, path, "steps", 1, 0, 1, 1 << 30, &p->steps);
        break;
    case T_RESHAPE: {
        p->kind = U_RESHAPE;
        co_mark_batch_bound(b);
        int n;
        int contiguous;
        if (!(st = co_get_int_list(b, node, path, "shape", CO_MAX_DIMS - 1, -1, 1 << 30, p->shape, &n)) &&
            !(st = co_get_bool(b, node, path, "contiguous", 0, 0, &contiguous))) {
            p->ndim = n;
            int frees = 0;
            for (int i = 0; i < n; i++) frees += p->shape[i] == -1 || p->shape[i] == 0 ? 1 : 0;
            for (int i = 0; i < n; i++)
                if (p->shape[i] == 0) st = co_error(CO_ERR_NETWORK, "%s: Reshape sizes must be positive or -1", path);
            if (!st && frees > 1) st = co_error(CO_ERR_NETWORK, "%s: Reshape may have one -1 only", path);
        }
        break;
    }
    case T_ADD:
    case T_CONSTANT:
        p->kind = type == T_ADD ? U_ADD : U_CONST;
        st = co_get_float(b, node, path, "constant", 1, 0, -3.4e38, 3.4e38, &v);
        p->value = (float)v;
        break;
    case T_MULTIPLY:
        p->kind = U_MUL;
        st = co_get_float(b, node, path, "factor", 1, 0, -3.4e38, 3.4e38, &v);
        p->value = (float)v;
        break;
    case T_ZERO:
    case T_ONE:
        p->kind = U_CONST;
        p->value = type == T_ONE ? 1.0f : 0.0f;
        break;
    case T_LAMBDA: {
        const char *fname;
        p->kind = U_LAMBDA;
        if (!(st = co_get_string(b, node, path, "function", 1, NULL, 256, &fname)) &&
            !(st = co_get_bool(b, node, path, "takes_time", 0, 0, &p->takes_time))) {
            for (int i = 0; k_builtins[i]; i++)
                if (strcmp(fname, k_builtins[i]) == 0) p->builtin = 1;
            if (p->builtin) {
                st = co_read_pointwise(b, node, path, fname, &p->pw); /* the built-ins have no keys */
            } else {
                const co_callback *cb = co_find_callback(b, fname);
                if (!cb || !cb->lambda)
                    st = co_error(CO_ERR_NETWORK,
                                  "%s: Lambda function '%.64s' is neither built in nor registered (co_load_options.callbacks)",
                                  path, fname);
                else {
                    p->fn = cb->lambda;
                    p->user = cb->user;
                }
            }
        }
        break;
    }
    default:
        st = co_error(CO_ERR_NETWORK, "%s: not a utility type", path);
        break;
    }
    if (st) {
        co_free(p);
        return st;
    }
    co_op *op = co_emit(b, p->kind == U_SKIP ? &k_util : &k_util_stateless, path, 1, &in, p);
    if (!op) return co_emit_failure(b);
    *out = op->out;
    return CO_OK;
}

/* ---- this family's module types (the registry, build.h) ---- */
static const co_module_reg k_utility_modules[] = {
    {"Skip", co_build_utility, T_SKIP},         {"Reshape", co_build_utility, T_RESHAPE},
    {"Add", co_build_utility, T_ADD},           {"Multiply", co_build_utility, T_MULTIPLY},
    {"Constant", co_build_utility, T_CONSTANT}, {"Zero", co_build_utility, T_ZERO},
    {"One", co_build_utility, T_ONE},           {"Lambda", co_build_utility, T_LAMBDA},
};
_Static_assert(sizeof k_utility_modules / sizeof k_utility_modules[0] == T_LAMBDA + 1, "one row per util_type");
CO_MODULE_LIST(co_utility_modules, k_utility_modules)
