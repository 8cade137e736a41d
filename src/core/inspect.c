/*
 * inspect.c — the step plan op by op (co_model_plan_ops), the clock of per-op profiling
 * (co_stream_set_profile; the hook itself is in stream.c's run_tick) and the kernel backend's name.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */

#include <string.h>
#include <time.h>

#include "core/inspect.h"
#include "core/model.h"
#include "kernels/gemm.h"

#define CO_NS_PER_S INT64_C(1000000000)
#define CO_MAX_BATCH (1 << 20)

int64_t co_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * CO_NS_PER_S + (int64_t)ts.tv_nsec;
}

const char *co_kernel_backend(void) { return co_gemm_backend(); }

/* The module type of the node an op was compiled from (the node whose path is the op's), or "". */
static const char *node_type_of(const co_model *m, const char *path)
{
    for (int i = 0; path && i < m->n_nodes; i++)
        if (strcmp(m->nodes[i].path, path) == 0) return m->nodes[i].type;
    return "";
}

co_status co_model_plan_ops(const co_model *m, int batch, const co_shape *frame_shape, co_op_info *ops, int n_ops)
{
    if (!m || !ops) return co_error(CO_ERR_INVALID_ARGUMENT, "co_model_plan_ops: NULL argument");
    if (batch < 1 || batch > CO_MAX_BATCH)
        return co_error(CO_ERR_INVALID_ARGUMENT, "co_model_plan_ops: batch %d out of range [1, 2^20]", batch);
    if (n_ops < m->n_ops)
        return co_error(CO_ERR_BUFFER_TOO_SMALL, "co_model_plan_ops: room for %d ops, the plan has %d", n_ops, m->n_ops);
    if (!frame_shape) {
        if (!m->has_frame_shape)
            return co_error(CO_ERR_SHAPE, "the model file records no frame shape; pass one to co_model_plan_ops");
        frame_shape = &m->frame_shape;
    }
    if (frame_shape->ndim < 1 || frame_shape->ndim > CO_MAX_DIMS - 2)
        return co_error(CO_ERR_SHAPE, "frame shape must have 1 to %d dims (C, *S), has %d", CO_MAX_DIMS - 2,
                        frame_shape->ndim);
    co_tshape in;
    memset(&in, 0, sizeof in);
    in.ndim = frame_shape->ndim + 1;
    in.d[0] = batch;
    for (int i = 0; i < frame_shape->ndim; i++) in.d[1 + i] = frame_shape->dims[i];
    /* co_model_plan_info checks the sizes the same way and reports them; reuse its verdict */
    co_plan_info plan;
    co_status st = co_model_plan_info(m, batch, frame_shape, &plan);
    if (st) return st;
    co_oprt *rt = co_calloc((size_t)m->n_ops + 1, sizeof *rt);
    co_tshape *values = co_calloc((size_t)m->n_values, sizeof *values);
    co_tshape out;
    if (!rt || !values) st = co_error(CO_ERR_OUT_OF_MEMORY, "co_model_plan_ops: out of memory");
    else st = co_plan_resolve(m, &in, rt, values, &out);
    if (!st) {
        for (int i = 0; i < m->n_ops; i++) {
            const co_op *op = &m->ops[i];
            co_op_info *info = &ops[i];
            memset(info, 0, sizeof *info);
            info->kind = op->cls->name;
            info->path = op->path ? op->path : "";
            info->type = node_type_of(m, op->path);
            info->output_frame.ndim = rt[i].out.ndim;
            for (int k = 0; k < rt[i].out.ndim; k++) info->output_frame.dims[k] = rt[i].out.d[k];
            info->macs = rt[i].macs;
            info->state_bytes = rt[i].state_bytes;
            info->scratch_floats = rt[i].scratch_floats;
            info->end_pad = op->end_pad;
        }
        co_ops_release(m->ops, m->n_ops, rt);
    }
    co_free(rt);
    co_free(values);
    return st;
}
