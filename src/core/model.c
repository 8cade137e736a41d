/*
 * model.c — loading a model file: parse the safetensors container, check the metadata,
 * compile the network JSON into the flat plan, and insist every tensor found a module.
 */
#define _POSIX_C_SOURCE 200809L /* open, fstat, read */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/builder.h"
#include "core/fuse.h"
#include "io/safetensors.h"

#define CO_MAX_NETWORK_JSON (16u << 20)
#define CO_MAX_DESCRIPTION 4096
#define CO_MAX_FILE_BYTES ((uint64_t)64 << 30)

static void model_free_parts(co_model *m)
{
    for (int i = 0; i < m->n_ops; i++) {
        co_op *op = &m->ops[i];
        if (op->cls && op->cls->destroy) op->cls->destroy(op);
        else co_free(op->params);
        co_free(op->path);
    }
    co_free(m->ops);
    for (int i = 0; i < m->n_nodes; i++) {
        co_free(m->nodes[i].path);
        co_free(m->nodes[i].type);
    }
    co_free(m->nodes);
    for (int i = 0; i < m->n_weights; i++) co_free(m->weights[i]);
    co_free(m->weights);
    co_free(m->producer);
    co_free(m->description);
}

void co_model_free(co_model *m)
{
    if (!m) return;
    model_free_parts(m);
    co_free(m);
}

static co_status parse_frame_shape(const char *text, co_model *m)
{
    co_status st = CO_OK;
    co_json_error jerr;
    cJSON *j = co_json_parse(text, strlen(text), NULL, &jerr);
    if (jerr.status == CO_ERR_OUT_OF_MEMORY) return co_error(CO_ERR_OUT_OF_MEMORY, "out of memory parsing frame_shape");
    int n = j && cJSON_IsArray(j) ? cJSON_GetArraySize(j) : -1;
    if (n < 1 || n > CO_MAX_DIMS - 2) {
        st = co_error(CO_ERR_FORMAT, "metadata frame_shape must be a JSON list of 1 to %d sizes [C, *S]", CO_MAX_DIMS - 2);
    } else {
        int i = 0;
        m->frame_shape.ndim = n;
        for (const cJSON *e = j->child; e; e = e->next, i++) {
            if (!cJSON_IsNumber(e) || e->valuedouble < 1 || e->valuedouble > (double)(1 << 24) ||
                (double)(int64_t)e->valuedouble != e->valuedouble) {
                st = co_error(CO_ERR_FORMAT, "metadata frame_shape entry %d is not a size in [1, 2^24]", i);
                break;
            }
            m->frame_shape.dims[i] = (int64_t)e->valuedouble;
        }
        m->has_frame_shape = st == CO_OK;
    }
    co_json_delete(j);
    return st;
}

static const char *meta_string(const co_st_file *f, const char *key)
{
    const cJSON *v = f->metadata ? cJSON_GetObjectItemCaseSensitive(f->metadata, key) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static co_status compile(co_model *m, co_st_file *file, const co_load_options *options)
{
    const char *format = meta_string(file, "format"), *version = meta_string(file, "format_version");
    const char *network = meta_string(file, "network"), *frame = meta_string(file, "frame_shape");
    if (!file->metadata) return co_error(CO_ERR_FORMAT, "no __metadata__: not a continual-c model file");
    if (!format || strcmp(format, "continual-c") != 0)
        return co_error(CO_ERR_FORMAT, "__metadata__ format is '%.40s', expected 'continual-c'", format ? format : "(missing)");
    if (!version || strcmp(version, "1") != 0)
        return co_error(CO_ERR_FORMAT, "__metadata__ format_version '%.20s' is not supported (this library reads '1')",
                        version ? version : "(missing)");
    if (!network) return co_error(CO_ERR_FORMAT, "__metadata__ has no 'network'");
    size_t nlen = strlen(network);
    if (nlen > CO_MAX_NETWORK_JSON) return co_error(CO_ERR_FORMAT, "network JSON of %zu bytes is too large", nlen);
    if (frame) {
        co_status st = parse_frame_shape(frame, m);
        if (st) return st;
    }
    const char *description = meta_string(file, "description");
    if (description) {
        const size_t dl = strlen(description);
        if (dl > CO_MAX_DESCRIPTION)
            return co_error(CO_ERR_FORMAT, "metadata description of %zu bytes is longer than %d", dl, CO_MAX_DESCRIPTION);
        if (!(m->description = co_strdup(description)))
            return co_error(CO_ERR_OUT_OF_MEMORY, "out of memory for the description");
    }
    m->fingerprint = 1469598103934665603ull;
    for (size_t i = 0; i < nlen; i++) m->fingerprint = (m->fingerprint ^ (uint8_t)network[i]) * 1099511628211ull;

    co_json_error jerr;
    cJSON *root = co_json_parse(network, nlen, NULL, &jerr);
    if (!root && jerr.status == CO_ERR_OUT_OF_MEMORY)
        return co_error(CO_ERR_OUT_OF_MEMORY, "out of memory parsing the network JSON");
    if (!root)
        return co_error(CO_ERR_NETWORK, "network is not valid JSON: %s at byte %lld", jerr.what, (long long)jerr.offset);
    co_builder *b = co_calloc(1, sizeof *b);
    if (!b) {
        co_json_delete(root);
        return co_error(CO_ERR_OUT_OF_MEMORY, "out of memory compiling the network");
    }
    b->m = m;
    b->options = options;
    m->max_arena = options && options->max_arena_bytes ? options->max_arena_bytes : CO_DEFAULT_MAX_ARENA_BYTES;
    b->file = file;
    b->depth = 0;
    b->cur_node = -1;
    m->n_values = 1;
    co_props props;
    int out = 0;
    co_status st = co_build_node(b, root, "", 0, &out, &props);
    co_free(b);
    co_json_delete(root);
    if (st) return st;
    if (out < 0) return co_error(CO_ERR_NETWORK, "the network ends in a list of streams; end it with a Reduce");
    m->out_value = out;
    if ((st = co_fuse_plan(m))) return st;
    for (int i = 0; i < file->n_tensors; i++)
        if (!file->tensors[i].claimed)
            return co_error(CO_ERR_TENSOR, "unused tensor '%s': no module of the network takes it", file->tensors[i].name);
    m->producer = co_alloc((size_t)m->n_values * sizeof *m->producer);
    if (!m->producer) return co_error(CO_ERR_OUT_OF_MEMORY, "out of memory compiling the network");
    for (int v = 0; v < m->n_values; v++) m->producer[v] = -1;
    for (int i = 0; i < m->n_ops; i++) {
        m->producer[m->ops[i].out] = i;
        m->total_end_pad += m->ops[i].end_pad;
    }
    if (m->has_frame_shape && !m->batch_bound) { /* fail at load, not at stream creation, if the shape does not fit */
        co_plan_info info;
        if ((st = co_model_plan_info(m, 1, NULL, &info))) return st;
    }
    return CO_OK;
}

co_status co_model_load_memory(const void *data, size_t size, co_model **out)
{
    return co_model_load_memory_ex(data, size, NULL, out);
}

/* Options a load cannot honour are refused before any work (a flag of a newer library). */
static co_status check_load_options(const co_load_options *options)
{
    if (options && (options->flags & ~CO_LOAD_KNOWN_FLAGS))
        return co_error(CO_ERR_INVALID_ARGUMENT, "co_load_options.flags: unknown bits 0x%x (known: 0x%x, CO_LOAD_*)",
                        options->flags & ~CO_LOAD_KNOWN_FLAGS, CO_LOAD_KNOWN_FLAGS);
    return CO_OK;
}

co_status co_model_load_memory_ex(const void *data, size_t size, const co_load_options *options, co_model **out)
{
    if (out) *out = NULL;
    if (!data || !out) return co_error(CO_ERR_INVALID_ARGUMENT, "co_model_load_memory: NULL argument");
    co_status bad = check_load_options(options);
    if (bad) return bad;
    const uint16_t probe = 1;
    if (*(const uint8_t *)&probe != 1) return co_error(CO_ERR_UNSUPPORTED, "big-endian hosts are not supported");
    co_clear_error();
    co_st_file file;
    co_status st = co_st_parse(data, size, &file);
    if (st) return st;
    co_model *m = co_calloc(1, sizeof *m);
    if (!m) {
        co_st_free(&file);
        return co_error(CO_ERR_OUT_OF_MEMORY, "out of memory for the model");
    }
    st = compile(m, &file, options);
    co_st_free(&file);
    if (st) {
        co_model_free(m);
        return st;
    }
    *out = m;
    return CO_OK;
}

co_status co_model_load(const char *path, co_model **out)
{
    return co_model_load_ex(path, NULL, out);
}

/* Reads exactly n bytes at the current offset; 0 on success, else errno (EIO at end of file). */
static int read_exact(int fd, uint8_t *buf, size_t n)
{
    while (n) {
        const ssize_t got = read(fd, buf, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return got < 0 ? errno : EIO;
        buf += got;
        n -= (size_t)got;
    }
    return 0;
}

co_status co_model_load_ex(const char *path, const co_load_options *options, co_model **out)
{
    if (out) *out = NULL;
    if (!path || !out) return co_error(CO_ERR_INVALID_ARGUMENT, "co_model_load: NULL argument");
    co_status bad = check_load_options(options);
    if (bad) return bad;
    /* O_NONBLOCK: opening a FIFO with no writer must not hang; fstat then refuses anything that
     * is not a regular file (FIFOs, directories, devices such as /dev/zero) before reading. */
    const int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return co_error(CO_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        const int e = errno;
        close(fd);
        return co_error(CO_ERR_IO, "cannot stat '%s': %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return co_error(CO_ERR_IO, "'%s' is not a regular file (%s); give the path of a model file", path,
                        S_ISDIR(sb.st_mode) ? "a directory" : S_ISFIFO(sb.st_mode) ? "a FIFO" :
                        S_ISCHR(sb.st_mode) || S_ISBLK(sb.st_mode) ? "a device" : "a special file");
    }
    const uint64_t size = (uint64_t)sb.st_size;
    if (size > CO_MAX_FILE_BYTES || size > SIZE_MAX) {
        close(fd);
        return co_error(CO_ERR_FORMAT, "'%s' is %llu bytes, larger than supported", path, (unsigned long long)size);
    }
    /* The header length first: a file whose first bytes cannot start a model is refused before
     * the rest of it is read. */
    uint8_t prefix[9] = {0};
    const size_t np = size < sizeof prefix ? (size_t)size : sizeof prefix;
    int e = read_exact(fd, prefix, np);
    co_status st = e ? co_error(CO_ERR_IO, "cannot read '%s': %s", path, strerror(e)) : co_st_check_prefix(prefix, np, size);
    if (st) {
        close(fd);
        return st;
    }
    uint8_t *buf = co_alloc((size_t)size);
    if (!buf) {
        close(fd);
        return co_error(CO_ERR_OUT_OF_MEMORY, "out of memory reading '%s' (%llu bytes)", path, (unsigned long long)size);
    }
    memcpy(buf, prefix, np);
    e = read_exact(fd, buf + np, (size_t)size - np);
    close(fd);
    if (e) {
        co_free(buf);
        return co_error(CO_ERR_IO, "cannot read '%s': %s", path, e == EIO ? "short read (file changed?)" : strerror(e));
    }
    st = co_model_load_memory_ex(buf, (size_t)size, options, out);
    co_free(buf);
    return st;
}

co_status co_model_temporal(const co_model *m, co_temporal *out)
{
    if (!m || !out) return co_error(CO_ERR_INVALID_ARGUMENT, "co_model_temporal: NULL argument");
    const co_props *p = &m->nodes[0].props;
    out->receptive_field = p->receptive_field;
    out->delay = p->delay;
    out->stride = p->stride;
    out->padding = p->padding;
    return CO_OK;
}

co_status co_model_frame_shape(const co_model *m, co_shape *frame_shape)
{
    if (!m || !frame_shape) return co_error(CO_ERR_INVALID_ARGUMENT, "co_model_frame_shape: NULL argument");
    if (!m->has_frame_shape)
        return co_error(CO_ERR_SHAPE, "the model file records no frame shape; pass one (co_stream_create_shaped)");
    *frame_shape = m->frame_shape;
    return CO_OK;
}

const char *co_model_description(const co_model *m) { return m && m->description ? m->description : ""; }
int64_t co_model_param_count(const co_model *m) { return m ? m->params : 0; }
int co_model_node_count(const co_model *m) { return m ? m->n_nodes : 0; }

co_status co_model_node(const co_model *m, int index, co_node_info *out)
{
    if (!m || !out) return co_error(CO_ERR_INVALID_ARGUMENT, "co_model_node: NULL argument");
    if (index < 0 || index >= m->n_nodes)
        return co_error(CO_ERR_INVALID_ARGUMENT, "co_model_node: index %d out of range [0, %d)", index, m->n_nodes);
    const co_node *n = &m->nodes[index];
    out->path = n->path;
    out->type = n->type;
    out->depth = n->depth;
    out->parent = n->parent;
    out->params = n->params;
    out->temporal.receptive_field = n->props.receptive_field;
    out->temporal.delay = n->props.delay;
    out->temporal.stride = n->props.stride;
    out->temporal.padding = n->props.padding;
    return CO_OK;
}

co_status co_plan_resolve(const co_model *m, const co_tshape *in, co_oprt *rt, co_tshape *values, co_tshape *out)
{
    return co_ops_resolve(m->ops, m->n_ops, m->out_value, in, rt, values, out);
}

co_status co_op_clip(const co_op *op, const co_oprt *rt, const co_tshape *in_shapes, const float *const *in, float *out,
                     float *scratch)
{
    if (op->cls->clip) return op->cls->clip(op, rt, in_shapes, in, out, scratch);
    op->cls->step(op, rt, NULL, in, out, scratch);
    return CO_OK;
}

void co_ops_release(const co_op *ops, int n_ops, co_oprt *rt)
{
    for (int i = 0; i < n_ops; i++)
        if (ops[i].cls->release && rt[i].ext) {
            ops[i].cls->release(&ops[i], &rt[i]);
            rt[i].ext = NULL;
        }
}

co_status co_ops_resolve(const co_op *ops, int n_ops, int out_value, const co_tshape *in, co_oprt *rt, co_tshape *values,
                         co_tshape *out)
{
    values[0] = *in;
    for (int i = 0; i < n_ops; i++) {
        const co_op *op = &ops[i];
        co_tshape ins[8];
        for (int k = 0; k < op->n_in; k++) ins[k] = values[op->in[k]];
        memset(&rt[i], 0, sizeof rt[i]);
        co_status st = op->cls->resolve(op, ins, &rt[i]);
        if (!st && co_tshape_numel(&rt[i].out) > ((int64_t)1 << 40))
            st = co_error(CO_ERR_SHAPE, "%s: output of %lld elements is too large", op->path,
                          (long long)co_tshape_numel(&rt[i].out));
        if (st) {
            co_ops_release(ops, i + 1, rt);
            return st;
        }
        values[op->out] = rt[i].out;
    }
    *out = values[out_value];
    return CO_OK;
}
