/*
 * fuse.c — folds BatchNorm and activation ops into their producers (what and why: fuse.h).
 * Runs once per model load over the finished plan: an op whose only reader is a foldable op
 * absorbs it, repeatedly (conv -> BatchNorm -> ReLU becomes one conv); the absorbed ops stay
 * in the plan as "folded" entries that run nothing.
 */
#include "core/fuse.h"

#include <string.h>

#include "core/model.h"

int co_fused_act_set(co_fused_act *slot, const co_pointwise *f)
{
    if (slot->on) return 0;
    slot->on = 1;
    slot->f = *f;
    return 1;
}

void co_fused_act_run(const co_fused_act *slot, float *y, int64_t n)
{
    if (slot->on) co_pointwise_run(&slot->f, y, y, n);
}

/* A folded op keeps its place in the plan (so co_model_plan_ops still lists every module, as
 * kind "folded" with no MACs, state or scratch) but computes nothing: its readers read the
 * value of the op it was folded into, and its own output value is read by nobody. */
static co_status folded_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    (void)op;
    rt->out = in[0];
    return CO_OK;
}

static int folded_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out,
                       float *scratch)
{
    (void)op, (void)rt, (void)state, (void)in, (void)out, (void)scratch;
    return 1;
}

static co_status folded_clip(const co_op *op, const co_oprt *rt, const co_tshape *in_shapes, const float *const *in,
                             float *out, float *scratch)
{
    (void)op, (void)rt, (void)in_shapes, (void)in, (void)out, (void)scratch;
    return CO_OK;
}

static const co_op_class k_folded = {.name = "folded", .resolve = folded_resolve, .step = folded_step,
                                     .clip = folded_clip};

/* Readers of value v: ops that read it (folded ones aside), plus 1 for the network output;
 * *only gets the last. */
static int readers(const co_model *m, int v, int *only)
{
    int n = v == m->out_value;
    for (int i = 0; i < m->n_ops; i++)
        for (int k = 0; k < m->ops[i].n_in && m->ops[i].cls != &k_folded; k++)
            if (m->ops[i].in[k] == v) {
                n++;
                *only = i;
            }
    return n;
}

/* Folds `reader` into `producer` if it can: 1 done, 0 not, -1 out of memory. */
static int fold_into(co_op *producer, const co_op *reader)
{
    int clip_rank;
    int64_t channels;
    const float *scale, *shift;
    co_pointwise act;
    if (co_affine_coefs(reader, &clip_rank, &channels, &scale, &shift))
        return co_conv_fold_affine(producer, clip_rank, channels, scale, shift);
    if (co_op_pointwise(reader, &act) || co_graph_pointwise(reader, &act))
        return co_conv_fuse_pointwise(producer, &act) || co_affine_fuse_pointwise(producer, &act) ||
               co_reduce_fuse_pointwise(producer, &act);
    return 0;
}

/* Marks ops[j] (folded into the producer of its input `into`) as folded: its readers read `into`. */
static void fold_op(co_model *m, int j, int into)
{
    co_op *op = &m->ops[j];
    const int v = op->out;
    for (int i = 0; i < m->n_ops; i++)
        for (int k = 0; k < m->ops[i].n_in; k++)
            if (m->ops[i].in[k] == v) m->ops[i].in[k] = into;
    if (m->out_value == v) m->out_value = into;
    if (op->cls->destroy)
        op->cls->destroy(op);
    else
        co_free(op->params);
    op->params = NULL;
    op->cls = &k_folded;
}

co_status co_fuse_plan(co_model *m)
{
    for (int i = 0; i < m->n_ops; i++)
        for (;;) {
            co_op *op = &m->ops[i];
            int j = -1;
            if (op->cls == &k_folded || readers(m, op->out, &j) != 1 || j < 0) break;
            const co_op *rd = &m->ops[j];
            /* a plain one-input op of the same stream: runs exactly when its producer emits */
            if (rd->n_in != 1 || rd->any_of || rd->end_pad || rd->lost_out != op->lost_out) break;
            const int r = fold_into(op, rd);
            if (r < 0) return co_error(CO_ERR_OUT_OF_MEMORY, "out of memory folding %s into %s", rd->path, op->path);
            if (r == 0) break;
            fold_op(m, j, op->out);
        }
    return CO_OK;
}
