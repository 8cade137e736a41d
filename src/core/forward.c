/*
 * forward.c — forward over a whole clip: every op's clip mode in plan order. This is
 * torch.nn's computation (temporal padding at both ends, full-clip statistics where the torch
 * module has them); it reads no stream state. Temporaries come from the allocator hook.
 */
#include <string.h>

#include "core/model.h"

static co_status clip_tshape(const co_shape *in, co_tshape *t)
{
    if (!in || in->ndim < 3 || in->ndim > CO_MAX_DIMS - 1)
        return co_error(CO_ERR_SHAPE, "forward: a clip is (B, C, T, *S): 3 to %d dims", CO_MAX_DIMS - 1);
    t->ndim = in->ndim;
    t->has_time = 1;
    for (int i = 0; i < in->ndim; i++) {
        if (in->dims[i] < 1 || in->dims[i] > (1 << 24))
            return co_error(CO_ERR_SHAPE, "forward: clip dim %d = %lld out of range [1, 2^24]", i, (long long)in->dims[i]);
        t->d[i] = in->dims[i];
    }
    if (co_tshape_numel(t) > ((int64_t)1 << 36)) return co_error(CO_ERR_SHAPE, "forward: clip is too large");
    return CO_OK;
}

typedef struct clip_plan {
    co_oprt *rt;
    co_tshape *values;
    co_tshape out;
    int resolved;
} clip_plan;

static co_status plan_clip(const co_model *m, const co_shape *in, clip_plan *p)
{
    co_tshape t;
    co_status st = clip_tshape(in, &t);
    if (st) return st;
    p->rt = co_calloc((size_t)m->n_ops + 1, sizeof *p->rt);
    p->values = co_calloc((size_t)m->n_values, sizeof *p->values);
    if (!p->rt || !p->values) return co_error(CO_ERR_OUT_OF_MEMORY, "forward: out of memory");
    st = co_plan_resolve(m, &t, p->rt, p->values, &p->out);
    p->resolved = st == CO_OK;
    return st;
}

co_status co_forward_shape(const co_model *m, const co_shape *in, co_shape *out)
{
    if (!m || !in || !out) return co_error(CO_ERR_INVALID_ARGUMENT, "co_forward_shape: NULL argument");
    clip_plan p = {0};
    co_status st = plan_clip(m, in, &p);
    if (!st) {
        out->ndim = p.out.ndim;
        for (int i = 0; i < p.out.ndim; i++) out->dims[i] = p.out.d[i];
    }
    if (p.resolved) co_ops_release(m->ops, m->n_ops, p.rt);
    co_free(p.rt);
    co_free(p.values);
    return st;
}

co_status co_forward(const co_model *m, const co_shape *in, const float *x, float *y, size_t y_capacity)
{
    if (!m || !in || !x || !y) return co_error(CO_ERR_INVALID_ARGUMENT, "co_forward: NULL argument");
    clip_plan p = {0};
    float **buf = NULL, *scratch = NULL;
    co_status st = plan_clip(m, in, &p);
    if (st) goto done;
    const int64_t n_out = co_tshape_numel(&p.out);
    if ((int64_t)y_capacity < n_out) {
        st = co_error(CO_ERR_BUFFER_TOO_SMALL, "co_forward: output holds %zu floats, needs %lld", y_capacity, (long long)n_out);
        goto done;
    }
    buf = co_calloc((size_t)m->n_values, sizeof *buf);
    size_t scratch_floats = 1;
    for (int i = 0; i < m->n_ops; i++)
        if (p.rt[i].scratch_floats > scratch_floats) scratch_floats = p.rt[i].scratch_floats;
    scratch = co_alloc(scratch_floats * sizeof(float));
    if (!buf || !scratch) {
        st = co_error(CO_ERR_OUT_OF_MEMORY, "forward: out of memory");
        goto done;
    }
    buf[0] = (float *)x; /* read only: ops never write their inputs */
    for (int i = 0; i < m->n_ops && !st; i++) {
        const co_op *op = &m->ops[i];
        buf[op->out] = co_alloc((size_t)co_tshape_numel(&p.rt[i].out) * sizeof(float));
        if (!buf[op->out]) {
            st = co_error(CO_ERR_OUT_OF_MEMORY, "forward: out of memory at %s", op->path);
            break;
        }
        const float *ins[8];
        co_tshape shapes[8];
        for (int k = 0; k < op->n_in; k++) {
            ins[k] = buf[op->in[k]];
            shapes[k] = p.values[op->in[k]];
        }
        st = co_op_clip(op, &p.rt[i], shapes, ins, buf[op->out], scratch);
    }
    if (!st) memcpy(y, buf[m->out_value], (size_t)n_out * sizeof(float));
done:
    if (buf)
        for (int v = 1; v < m->n_values; v++) co_free(buf[v]);
    co_free(buf);
    co_free(scratch);
    if (p.rt && p.resolved) co_ops_release(m->ops, m->n_ops, p.rt);
    co_free(p.rt);
    co_free(p.values);
    return st;
}
