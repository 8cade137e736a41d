/*
 * forward.c — forward over a whole clip: every op's clip mode in plan order. This is
 * torch.nn's computation (temporal padding at both ends, full-clip statistics where the torch
 * module has them); it reads no stream state. Temporaries come from the allocator hook; a value's
 * buffer goes back to a free list once its last reader has run and is reused by a later value
 * that fits (so a deep network touches fresh memory — page faults — only for its widest cut).
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

/* Value buffers of one forward call: those in use and those free for reuse (smallest fit). */
typedef struct buffer_pool {
    float **ptr;
    size_t *cap; /* floats */
    int *in_use;
    int n;
} buffer_pool;

static float *pool_take(buffer_pool *bp, size_t floats)
{
    int best = -1;
    for (int i = 0; i < bp->n; i++)
        if (!bp->in_use[i] && bp->cap[i] >= floats && (best < 0 || bp->cap[i] < bp->cap[best])) best = i;
    if (best < 0) {
        float *p = co_alloc(floats * sizeof(float));
        if (!p) return NULL;
        best = bp->n++;
        bp->ptr[best] = p;
        bp->cap[best] = floats;
    }
    bp->in_use[best] = 1;
    return bp->ptr[best];
}

static void pool_give(buffer_pool *bp, const float *p)
{
    for (int i = 0; i < bp->n; i++)
        if (bp->ptr[i] == p) bp->in_use[i] = 0;
}

co_status co_forward(const co_model *m, const co_shape *in, const float *x, float *y, size_t y_capacity)
{
    if (!m || !in || !x || !y) return co_error(CO_ERR_INVALID_ARGUMENT, "co_forward: NULL argument");
    clip_plan p = {0};
    float **buf = NULL, *scratch = NULL;
    int *last_use = NULL;
    buffer_pool bp = {0};
    co_status st = plan_clip(m, in, &p);
    if (st) goto done;
    const int64_t n_out = co_tshape_numel(&p.out);
    if ((int64_t)y_capacity < n_out) {
        st = co_error(CO_ERR_BUFFER_TOO_SMALL, "co_forward: output holds %zu floats, needs %lld", y_capacity, (long long)n_out);
        goto done;
    }
    buf = co_calloc((size_t)m->n_values, sizeof *buf);
    last_use = co_calloc((size_t)m->n_values, sizeof *last_use);
    bp.ptr = co_calloc((size_t)m->n_ops + 1, sizeof *bp.ptr);
    bp.cap = co_calloc((size_t)m->n_ops + 1, sizeof *bp.cap);
    bp.in_use = co_calloc((size_t)m->n_ops + 1, sizeof *bp.in_use);
    size_t scratch_floats = 1;
    for (int i = 0; i < m->n_ops; i++)
        if (p.rt[i].scratch_floats > scratch_floats) scratch_floats = p.rt[i].scratch_floats;
    scratch = co_alloc(scratch_floats * sizeof(float));
    if (!buf || !last_use || !bp.ptr || !bp.cap || !bp.in_use || !scratch) {
        st = co_error(CO_ERR_OUT_OF_MEMORY, "forward: out of memory");
        goto done;
    }
    /* op index after which a value is read no more (its producer's, if nothing reads it) */
    for (int i = 0; i < m->n_ops; i++) {
        last_use[m->ops[i].out] = i;
        for (int k = 0; k < m->ops[i].n_in; k++) last_use[m->ops[i].in[k]] = i;
    }
    last_use[m->out_value] = m->n_ops; /* kept to the end */
    buf[0] = (float *)x; /* read only: ops never write their inputs */
    for (int i = 0; i < m->n_ops && !st; i++) {
        const co_op *op = &m->ops[i];
        buf[op->out] = pool_take(&bp, (size_t)co_tshape_numel(&p.rt[i].out));
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
        for (int k = 0; k < op->n_in; k++)
            if (op->in[k] != 0 && last_use[op->in[k]] == i && buf[op->in[k]]) {
                pool_give(&bp, buf[op->in[k]]);
                buf[op->in[k]] = NULL;
            }
        if (last_use[op->out] == i) {
            pool_give(&bp, buf[op->out]);
            buf[op->out] = NULL;
        }
    }
    if (!st) memcpy(y, buf[m->out_value], (size_t)n_out * sizeof(float));
done:
    for (int i = 0; i < bp.n; i++) co_free(bp.ptr[i]);
    co_free(bp.ptr);
    co_free(bp.cap);
    co_free(bp.in_use);
    co_free(buf);
    co_free(last_use);
    co_free(scratch);
    if (p.rt && p.resolved) co_ops_release(m->ops, m->n_ops, p.rt);
    co_free(p.rt);
    co_free(p.values);
    return st;
}
