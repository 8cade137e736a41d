/*
 * builder.c — compiling the network JSON into ops: the helpers module families use to read
 * hyper-parameters and tensors (each failure names the node and the key), the registry (the
 * list of the families' tables of module types), and the recursion over nodes.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/builder.h"

#define CO_MAX_DEPTH CO_BUILDER_MAX_DEPTH
#define CO_MAX_KEYS CO_BUILDER_MAX_KEYS

void co_mark_batch_bound(co_builder *b) { b->m->batch_bound = 1; }

void co_props_frame_local(co_props *p)
{
    p->receptive_field = 1;
    p->delay = 0;
    p->stride = 1;
    p->padding = 0;
}

/* ---- registry ---- */
/* The families' tables (each family file owns the table of its types, see build.h), in the
 * order they are searched. A type must be registered once (tests/c/test_registry.c checks). */
static const co_module_list k_families[] = {
    co_container_modules, co_utility_modules,   co_conv_modules, co_linear_modules, co_delay_modules,
    co_transformer_modules, co_attention_modules, co_rnn_modules, co_pool_modules,   co_activation_modules,
    co_norm_modules,        co_graph_modules,
};
enum { K_FAMILIES = sizeof k_families / sizeof k_families[0] };

int co_registry_find(const char *type, co_module_reg *out)
{
    co_module_reg r;
    for (size_t f = 0; type && f < K_FAMILIES; f++)
        for (size_t i = 0; k_families[f](i, &r); i++)
            if (r.type && strcmp(r.type, type) == 0) {
                *out = r;
                return 1;
            }
    return 0;
}

size_t co_registry_count(void)
{
    size_t n = 0;
    co_module_reg r;
    for (size_t f = 0; f < K_FAMILIES; f++)
        for (size_t i = 0; k_families[f](i, &r); i++) n += r.type != NULL;
    return n;
}

const char *co_registry_name(size_t k)
{
    co_module_reg r;
    for (size_t f = 0; f < K_FAMILIES; f++)
        for (size_t i = 0; k_families[f](i, &r); i++)
            if (r.type && k-- == 0) return r.type;
    return NULL;
}

int co_build_variant(const co_builder *b)
{
    co_module_reg r;
    if (b->cur_node < 0 || b->cur_node >= b->m->n_nodes || !co_registry_find(b->m->nodes[b->cur_node].type, &r))
        return -1;
    return r.variant;
}

/* ---- keys: every key a node has must be read by its builder ---- */
static void touch(co_builder *b, const cJSON *item)
{
    int d = b->depth;
    if (d < CO_MAX_DEPTH && b->n_touched[d] < CO_MAX_KEYS) b->touched[d][b->n_touched[d]++] = item;
}

static const cJSON *get_key(co_builder *b, const cJSON *node, const char *key)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(node, key);
    if (item) touch(b, item);
    return item;
}

const cJSON *co_get_json(co_builder *b, const cJSON *node, const char *key) { return get_key(b, node, key); }

co_status co_read_object(co_builder *b, const cJSON *obj, const char *path, co_object_fn fn, void *ctx)
{
    if (!cJSON_IsObject(obj)) return co_error(CO_ERR_NETWORK, "%s: must be a JSON object", path);
    const int d = b->depth; /* the object's keys are recorded one level down, where a child's would be */
    if (d + 1 >= CO_MAX_DEPTH) return co_error(CO_ERR_NETWORK, "%s: nests deeper than %d levels", path, CO_MAX_DEPTH);
    b->depth = d + 1;
    b->n_touched[d + 1] = 0;
    co_status st = fn(b, obj, path, ctx);
    for (const cJSON *k = obj->child; k && !st; k = k->next) {
        int seen = 0;
        for (int i = 0; i < b->n_touched[d + 1] && !seen; i++) seen = b->touched[d + 1][i] == k;
        if (!seen) st = co_error(CO_ERR_NETWORK, "%s: unknown key '%.64s'", path, k->string ? k->string : "?");
    }
    b->depth = d;
    return st;
}

co_status co_get_int(co_builder *b, const cJSON *node, const char *path, const char *key, int required, int64_t def,
                     int64_t lo, int64_t hi, int64_t *out)
{
    const cJSON *v = get_key(b, node, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return co_error(CO_ERR_NETWORK, "%s: missing required '%s'", path[0] ? path : "<root>", key);
        *out = def;
        return CO_OK;
    }
    if (!cJSON_IsNumber(v) || floor(v->valuedouble) != v->valuedouble || fabs(v->valuedouble) > 9.0e15)
        return co_error(CO_ERR_NETWORK, "%s: '%s' must be an integer", path[0] ? path : "<root>", key);
    int64_t x = (int64_t)v->valuedouble;
    if (x < lo || x > hi)
        return co_error(CO_ERR_NETWORK, "%s: '%s' = %lld is out of range [%lld, %lld]", path[0] ? path : "<root>", key,
                        (long long)x, (long long)lo, (long long)hi);
    *out = x;
    return CO_OK;
}

co_status co_get_float(co_builder *b, const cJSON *node, const char *path, const char *key, int required, double def,
                       double lo, double hi, double *out)
{
    const cJSON *v = get_key(b, node, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return co_error(CO_ERR_NETWORK, "%s: missing required '%s'", path[0] ? path : "<root>", key);
        *out = def;
        return CO_OK;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return co_error(CO_ERR_NETWORK, "%s: '%s' must be a finite number", path[0] ? path : "<root>", key);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return co_error(CO_ERR_NETWORK, "%s: '%s' = %g is out of range [%g, %g]", path[0] ? path : "<root>", key,
                        v->valuedouble, lo, hi);
    *out = v->valuedouble;
    return CO_OK;
}

co_status co_get_bool(co_builder *b, const cJSON *node, const char *path, const char *key, int required, int def, int *out)
{
    const cJSON *v = get_key(b, node, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return co_error(CO_ERR_NETWORK, "%s: missing required '%s'", path[0] ? path : "<root>", key);
        *out = def;
        return CO_OK;
    }
    if (!cJSON_IsBool(v)) return co_error(CO_ERR_NETWORK, "%s: '%s' must be true or false", path[0] ? path : "<root>", key);
    *out = cJSON_IsTrue(v);
    return CO_OK;
}

co_status co_get_choice(co_builder *b, const cJSON *node, const char *path, const char *key, int required, int def,
                        const char *const *choices, int *out)
{
    const cJSON *v = get_key(b, node, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return co_error(CO_ERR_NETWORK, "%s: missing required '%s'", path[0] ? path : "<root>", key);
        *out = def;
        return CO_OK;
    }
    if (cJSON_IsString(v))
        for (int i = 0; choices[i]; i++)
            if (strcmp(v->valuestring, choices[i]) == 0) {
                *out = i;
                return CO_OK;
            }
    char list[256] = "";
    for (int i = 0; choices[i]; i++) {
        strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, choices[i], sizeof list - strlen(list) - 1);
    }
    return co_error(CO_ERR_NETWORK, "%s: '%s' must be one of: %s", path[0] ? path : "<root>", key, list);
}

co_status co_get_string(co_builder *b, const cJSON *node, const char *path, const char *key, int required,
                        const char *def, size_t max, const char **out)
{
    const cJSON *v = get_key(b, node, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return co_error(CO_ERR_NETWORK, "%s: missing required '%s'", path[0] ? path : "<root>", key);
        *out = def;
        return CO_OK;
    }
    if (!cJSON_IsString(v) || strlen(v->valuestring) > max)
        return co_error(CO_ERR_NETWORK, "%s: '%s' must be a string of at most %zu bytes", path[0] ? path : "<root>", key, max);
    *out = v->valuestring;
    return CO_OK;
}

static co_status int_item(const cJSON *v, const char *path, const char *key, int64_t lo, int64_t hi, int64_t *out)
{
    if (!cJSON_IsNumber(v) || floor(v->valuedouble) != v->valuedouble || fabs(v->valuedouble) > 9.0e15)
        return co_error(CO_ERR_NETWORK, "%s: '%s' must hold integers", path[0] ? path : "<root>", key);
    int64_t x = (int64_t)v->valuedouble;
    if (x < lo || x > hi)
        return co_error(CO_ERR_NETWORK, "%s: '%s' value %lld is out of range [%lld, %lld]", path[0] ? path : "<root>",
                        key, (long long)x, (long long)lo, (long long)hi);
    *out = x;
    return CO_OK;
}

co_status co_get_ints(co_builder *b, const cJSON *node, const char *path, const char *key, int required, int64_t def,
                      int n, int64_t lo, int64_t hi, int64_t *out)
{
    const cJSON *v = get_key(b, node, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return co_error(CO_ERR_NETWORK, "%s: missing required '%s'", path[0] ? path : "<root>", key);
        for (int i = 0; i < n; i++) out[i] = def;
        return CO_OK;
    }
    if (cJSON_IsNumber(v)) {
        co_status st = int_item(v, path, key, lo, hi, &out[0]);
        for (int i = 1; i < n; i++) out[i] = out[0];
        return st;
    }
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != n)
        return co_error(CO_ERR_NETWORK, "%s: '%s' must be an integer or a list of %d integers", path[0] ? path : "<root>",
                        key, n);
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        co_status st = int_item(e, path, key, lo, hi, &out[i]);
        if (st) return st;
    }
    return CO_OK;
}

co_status co_get_int_list(co_builder *b, const cJSON *node, const char *path, const char *key, int max, int64_t lo,
                          int64_t hi, int64_t *out, int *n)
{
    const cJSON *v = get_key(b, node, key);
    if (!v) return co_error(CO_ERR_NETWORK, "%s: missing required '%s'", path[0] ? path : "<root>", key);
    if (cJSON_IsNumber(v)) {
        *n = 1;
        return int_item(v, path, key, lo, hi, &out[0]);
    }
    int count = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
    if (count < 1 || count > max)
        return co_error(CO_ERR_NETWORK, "%s: '%s' must be a list of 1 to %d integers", path[0] ? path : "<root>", key, max);
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        co_status st = int_item(e, path, key, lo, hi, &out[i]);
        if (st) return st;
    }
    *n = count;
    return CO_OK;
}

/* ---- tensors ---- */
static void full_name(char *buf, size_t size, const char *path, const char *name)
{
    snprintf(buf, size, "%s%s%s", path, path[0] ? "." : "", name);
}

static int is_float_dtype(co_dtype dt)
{
    return dt == CO_DT_F32 || dt == CO_DT_F64 || dt == CO_DT_F16 || dt == CO_DT_BF16;
}

void co_count_params(co_builder *b, int64_t n)
{
    for (int i = b->cur_node; i >= 0; i = b->m->nodes[i].parent) b->m->nodes[i].params += n;
    b->m->params += n;
}

static co_status take(co_builder *b, const char *path, const char *name, int ndim, const int64_t *shape, int required,
                      const float **out, int learnable)
{
    char full[512], want[160], got[160];
    full_name(full, sizeof full, path, name);
    *out = NULL;
    co_st_tensor *t = co_st_find(b->file, full);
    if (!t) {
        if (!required) return CO_OK;
        return co_error(CO_ERR_TENSOR, "missing tensor '%s' (needed by %s)", full, path[0] ? path : "the root module");
    }
    if (t->claimed) return co_error(CO_ERR_TENSOR, "tensor '%s' is claimed by two modules (duplicate child names?)", full);
    if (!is_float_dtype(t->dtype))
        return co_error(CO_ERR_TENSOR, "tensor '%s' has dtype %s; weights must be F32, F64, F16 or BF16", full,
                        co_dtype_name(t->dtype));
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        co_tshape a = {ndim, 0, {0}}, c = {t->ndim, 0, {0}};
        for (int i = 0; i < ndim; i++) a.d[i] = shape[i];
        for (int i = 0; i < t->ndim; i++) c.d[i] = t->shape[i];
        return co_error(CO_ERR_TENSOR, "tensor '%s' has shape %s, expected %s", full, co_tshape_str(&c, got, sizeof got),
                        co_tshape_str(&a, want, sizeof want));
    }
    co_model *m = b->m;
    if (m->n_weights == m->cap_weights) {
        int cap = m->cap_weights ? 2 * m->cap_weights : 16;
        float **w = co_calloc((size_t)cap, sizeof *w);
        if (!w) return co_error(CO_ERR_OUT_OF_MEMORY, "out of memory loading '%s'", full);
        if (m->weights) memcpy(w, m->weights, (size_t)m->n_weights * sizeof *w);
        co_free(m->weights);
        m->weights = w;
        m->cap_weights = cap;
    }
    int64_t numel = co_st_numel(t);
    float *data = co_alloc((size_t)(numel ? numel : 1) * sizeof(float));
    if (!data) return co_error(CO_ERR_OUT_OF_MEMORY, "out of memory loading '%s'", full);
    co_status st = co_st_to_f32(b->file, t, data);
    if (st) {
        co_free(data);
        return st;
    }
    m->weights[m->n_weights++] = data;
    t->claimed = 1;
    /* fingerprint: FNV-1a over names and values, so a state of other weights is refused */
    for (const char *c = full; *c; c++) m->fingerprint = (m->fingerprint ^ (uint8_t)*c) * 1099511628211ull;
    const uint32_t *words = (const uint32_t *)data;
    for (int64_t i = 0; i < numel; i++) m->fingerprint = (m->fingerprint ^ words[i]) * 1099511628211ull;
    if (learnable) co_count_params(b, numel);
    *out = data;
    return CO_OK;
}

co_status co_take_tensor(co_builder *b, const char *path, const char *name, int ndim, const int64_t *shape, int required,
                         const float **out)
{
    return take(b, path, name, ndim, shape, required, out, 1);
}

co_status co_take_buffer(co_builder *b, const char *path, const char *name, int ndim, const int64_t *shape, int required,
                         const float **out)
{
    return take(b, path, name, ndim, shape, required, out, 0);
}

co_status co_skip_tensor(co_builder *b, const char *path, const char *name, int ndim)
{
    char full[512];
    full_name(full, sizeof full, path, name);
    co_st_tensor *t = co_st_find(b->file, full);
    if (!t) return CO_OK;
    if (t->claimed) return co_error(CO_ERR_TENSOR, "tensor '%s' is claimed by two modules", full);
    if (t->ndim != ndim) return co_error(CO_ERR_TENSOR, "tensor '%s' must have %d dims, has %d", full, ndim, t->ndim);
    t->claimed = 1;
    return CO_OK;
}

/* ---- lists ---- */
int co_list_make(co_builder *b, const char *path, int n, const int *values)
{
    if (n < 1 || n > CO_MAX_LIST) {
        co_error(CO_ERR_UNSUPPORTED, "%s: lists of 1 to %d streams are supported, not %d", path, CO_MAX_LIST, n);
        return 0;
    }
    if (b->n_lists >= 256) {
        co_error(CO_ERR_UNSUPPORTED, "%s: more than 256 stream lists in one network", path);
        return 0;
    }
    for (int i = 0; i < n; i++)
        if (values[i] < 0) {
            co_error(CO_ERR_UNSUPPORTED, "%s: nested lists of streams are not supported", path);
            return 0;
        }
    b->list_len[b->n_lists] = n;
    memcpy(b->lists[b->n_lists], values, (size_t)n * sizeof(int));
    return -(++b->n_lists);
}

int co_list_get(const co_builder *b, int handle, int *values)
{
    if (handle >= 0 || -handle > b->n_lists) return 0;
    int i = -handle - 1;
    memcpy(values, b->lists[i], (size_t)b->list_len[i] * sizeof(int));
    return b->list_len[i];
}

const co_callback *co_find_callback(const co_builder *b, const char *name)
{
    if (!b->options) return NULL;
    for (int i = 0; i < b->options->n_callbacks; i++)
        if (b->options->callbacks[i].name && strcmp(b->options->callbacks[i].name, name) == 0)
            return &b->options->callbacks[i];
    return NULL;
}

unsigned co_load_flags(const co_builder *b) { return b->options ? b->options->flags : 0u; }

/* ---- ops ---- */
/* Frees params the way the op would have (on a failed emit). */
static void drop_params(const co_op_class *cls, void *params)
{
    if (cls->destroy) {
        co_op tmp;
        memset(&tmp, 0, sizeof tmp);
        tmp.cls = cls;
        tmp.params = params;
        cls->destroy(&tmp);
    } else {
        co_free(params);
    }
}

/* Leading outputs value v loses (0 for the network input): its producer's lost_out. Ops are
 * emitted in order, so the producer is already in the list being built. */
static int64_t value_lost(const co_model *m, int v)
{
    for (int i = m->n_ops - 1; i >= 0; i--)
        if (m->ops[i].out == v) return m->ops[i].lost_out;
    return 0;
}

int64_t co_first_emitted_window(int64_t lost_in, int64_t stride, int64_t padding, int64_t span)
{
    if (lost_in == 0) { /* Q27: the first window that ends at or after the first frame */
        const int64_t need = padding - (span - 1); /* j * stride >= need */
        return need <= 0 ? 0 : (need + stride - 1) / stride;
    }
    /* the first window that starts at or after the first frame the stream has */
    return (lost_in + padding + stride - 1) / stride;
}

co_op *co_emit(co_builder *b, const co_op_class *cls, const char *path, int n_in, const int *in, void *params)
{
    co_model *m = b->m;
    if (n_in < 1 || n_in > 8) {
        drop_params(cls, params);
        b->emit_status = co_error(CO_ERR_UNSUPPORTED, "%s: an op reads at most 8 inputs", path);
        return NULL;
    }
    for (int i = 0; i < n_in; i++)
        if (in[i] < 0) {
            drop_params(cls, params);
            b->emit_status = co_error(CO_ERR_NETWORK, "%s: this module takes one stream but receives a list of %d (from Broadcast/Parallel)",
                     path, co_list_get(b, in[i], (int[CO_MAX_LIST]){0}));
            return NULL;
        }
    if (m->n_ops == m->cap_ops) {
        int cap = m->cap_ops ? 2 * m->cap_ops : 16;
        co_op *ops = co_calloc((size_t)cap, sizeof *ops);
        if (!ops) {
            drop_params(cls, params);
            b->emit_status = co_error(CO_ERR_OUT_OF_MEMORY, "out of memory compiling %s", path);
            return NULL;
        }
        if (m->ops) memcpy(ops, m->ops, (size_t)m->n_ops * sizeof *ops);
        co_free(m->ops);
        m->ops = ops;
        m->cap_ops = cap;
    }
    /* Leading outputs the inputs lose (Q27/B1). A window op emits output j at the tick its last
     * frame arrives whatever the loss, so branches stay aligned tick by tick and a reduction
     * (which runs only when every input is present) pairs equal indices; its stream starts at the
     * latest branch. */
    int64_t lost = 0;
    for (int i = 0; i < n_in; i++) {
        const int64_t li = value_lost(m, in[i]);
        if (li > lost) lost = li;
    }
    if (lost > 0 && cls->whole_stream) {
        drop_params(cls, params);
        b->emit_status = co_error(CO_ERR_UNSUPPORTED,
                                  "%s: follows a convolution or pool whose padding is at least its kernel, whose first "
                                  "%lld output(s) are made of padding only and never reach a step; this module depends "
                                  "on every earlier frame, so its steps could not equal torch's forward. Make that "
                                  "padding smaller than the kernel", path[0] ? path : "<root>", (long long)lost);
        return NULL;
    }
    char *p = co_strdup(path[0] ? path : "<root>"); /* messages name the module */
    if (!p) {
        drop_params(cls, params);
        b->emit_status = co_error(CO_ERR_OUT_OF_MEMORY, "out of memory compiling %s", path);
        return NULL;
    }
    co_op *op = &m->ops[m->n_ops++];
    memset(op, 0, sizeof *op);
    op->cls = cls;
    op->path = p;
    op->n_in = n_in;
    for (int i = 0; i < n_in; i++) op->in[i] = in[i];
    op->out = m->n_values++;
    op->params = params;
    op->lost_in = op->lost_out = lost;
    return op;
}

/* ---- sub-plans ---- */
static void free_ops(co_op *ops, int n)
{
    for (int i = 0; i < n; i++) {
        if (ops[i].cls && ops[i].cls->destroy) ops[i].cls->destroy(&ops[i]);
        else co_free(ops[i].params);
        co_free(ops[i].path);
    }
    co_free(ops);
}

void co_subplan_free(co_subplan *sp)
{
    if (!sp) return;
    free_ops(sp->ops, sp->n_ops);
    co_free(sp);
}

co_status co_build_subplan(co_builder *b, const cJSON *child, const char *path, co_subplan **out, co_props *props)
{
    co_model *m = b->m;
    co_subplan *sp = co_calloc(1, sizeof *sp);
    if (!sp) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    /* emit into a fresh op list: swap the model's out and back */
    co_op *ops = m->ops;
    int n_ops = m->n_ops, cap = m->cap_ops, n_values = m->n_values;
    m->ops = NULL;
    m->n_ops = m->cap_ops = 0;
    m->n_values = 1;
    int v = 0;
    co_status st = co_build_child(b, child, path, 0, &v, props);
    sp->ops = m->ops;
    sp->n_ops = m->n_ops;
    sp->cap_ops = m->cap_ops;
    sp->n_values = m->n_values;
    sp->out_value = v;
    m->ops = ops;
    m->n_ops = n_ops;
    m->cap_ops = cap;
    m->n_values = n_values;
    if (!st && v < 0) st = co_error(CO_ERR_NETWORK, "%s: the wrapped network ends in a list of streams", path);
    if (st) {
        co_subplan_free(sp);
        return st;
    }
    *out = sp;
    return CO_OK;
}

co_status co_emit_failure(const co_builder *b) { return b->emit_status ? b->emit_status : CO_ERR_OUT_OF_MEMORY; }

/* ---- nodes ---- */
static co_status push_node(co_builder *b, const char *path, const char *type, int parent, int *index)
{
    co_model *m = b->m;
    if (m->n_nodes == m->cap_nodes) {
        int cap = m->cap_nodes ? 2 * m->cap_nodes : 16;
        co_node *nodes = co_calloc((size_t)cap, sizeof *nodes);
        if (!nodes) return co_error(CO_ERR_OUT_OF_MEMORY, "out of memory compiling %s", path);
        if (m->nodes) memcpy(nodes, m->nodes, (size_t)m->n_nodes * sizeof *nodes);
        co_free(m->nodes);
        m->nodes = nodes;
        m->cap_nodes = cap;
    }
    co_node *n = &m->nodes[m->n_nodes];
    memset(n, 0, sizeof *n);
    n->path = co_strdup(path);
    n->type = co_strdup(type);
    if (!n->path || !n->type) {
        co_free(n->path);
        co_free(n->type);
        return co_error(CO_ERR_OUT_OF_MEMORY, "out of memory compiling %s", path);
    }
    n->depth = b->depth;
    n->parent = parent;
    *index = m->n_nodes++;
    return CO_OK;
}

co_status co_build_node(co_builder *b, const cJSON *node, const char *parent_path, int in, int *out, co_props *props)
{
    if (b->depth >= CO_MAX_DEPTH)
        return co_error(CO_ERR_NETWORK, "%s: network nests deeper than %d modules", parent_path[0] ? parent_path : "<root>",
                        CO_MAX_DEPTH);
    if (!cJSON_IsObject(node))
        return co_error(CO_ERR_NETWORK, "%s: a network node must be a JSON object", parent_path[0] ? parent_path : "<root>");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(node, "type");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(node, "name");
    if (!cJSON_IsString(type)) return co_error(CO_ERR_NETWORK, "%s: node without a \"type\" string", parent_path);
    if (!cJSON_IsString(name)) return co_error(CO_ERR_NETWORK, "%s: node without a \"name\" string", parent_path);
    const size_t plen = strlen(parent_path), nlen = strlen(name->valuestring);
    /* an empty name adds no component to the state_dict prefix: structural containers the
     * exporter inserts (a torch TransformerEncoderLayer's residual branches) are transparent */
    if (nlen > 128 || strchr(name->valuestring, '.'))
        return co_error(CO_ERR_NETWORK, "%s: child name '%.40s' must be at most 128 characters without '.'", parent_path,
                        name->valuestring);
    if (plen + nlen + 2 > 1024) return co_error(CO_ERR_NETWORK, "%s: module path too long", parent_path);
    char path[1024];
    memcpy(path, parent_path, plen);
    size_t at = plen;
    if (plen && nlen) path[at++] = '.';
    memcpy(path + at, name->valuestring, nlen + 1);
    co_module_reg reg;
    if (!co_registry_find(type->valuestring, &reg))
        return co_error(CO_ERR_NETWORK,
                        "%s: unknown module type '%.64s' (not supported by this version of continual-c: re-export the "
                        "model with the matching exporter, or see docs/format.md for the supported types)",
                        path[0] ? path : "<root>", type->valuestring);

    int index = 0, saved_node = b->cur_node;
    co_status st = push_node(b, path, type->valuestring, b->cur_node, &index);
    if (st) return st;
    const int d = b->depth; /* keys of this node are recorded at level d; children use d+1 */
    b->cur_node = index;
    b->n_touched[d] = 0;
    touch(b, type);
    touch(b, name);
    st = reg.build(b, node, path, in, out, props);
    b->depth = d;
    if (!st) {
        for (const cJSON *k = node->child; k; k = k->next) {
            int seen = 0;
            for (int i = 0; i < b->n_touched[d] && !seen; i++) seen = b->touched[d][i] == k;
            if (!seen) {
                st = co_error(CO_ERR_NETWORK, "%s (%s): unknown key '%.64s'", path[0] ? path : "<root>",
                              type->valuestring, k->string ? k->string : "?");
                break;
            }
        }
    }
    if (!st) b->m->nodes[index].props = *props;
    b->cur_node = saved_node;
    return st;
}

co_status co_build_children(co_builder *b, const cJSON *node, const char *path, const cJSON **children, int *count)
{
    const cJSON *c = get_key(b, node, "children");
    if (!cJSON_IsArray(c)) return co_error(CO_ERR_NETWORK, "%s: missing \"children\" list", path[0] ? path : "<root>");
    *children = c;
    *count = cJSON_GetArraySize(c);
    return CO_OK;
}

co_status co_build_child(co_builder *b, const cJSON *child, const char *path, int in, int *out, co_props *props)
{
    int d = b->depth;
    b->depth = d + 1;
    co_status st = co_build_node(b, child, path, in, out, props);
    b->depth = d;
    return st;
}
