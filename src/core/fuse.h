/*
 * fuse.h — folding ops into their producers once the plan is built (src/core/fuse.c), and the
 * hooks the families implement for it. Internal to the library.
 *
 * What is folded (only where the producer's output has no other reader, so nothing else sees
 * the intermediate value, and only into an op that has no activation yet):
 *   conv -> BatchNorm (eval, running statistics: y = x * scale[c] + shift[c]):
 *       the conv's weights of output channel c times scale[c], its bias b[c] * scale[c] +
 *       shift[c]. Exact up to rounding (x (w s) instead of (x w) s).
 *   conv, BatchNorm or reduction of branches -> element-wise activation (ReLU, Sigmoid, ..., and a traced
 *       graph that is one element-wise function, such as Swish written x * sigmoid(x)): the activation is applied
 *       by the producer to each output row as it writes it. Exact (the same formula on the same
 *       values).
 * The folded op stays in the plan as kind "folded" (no MACs, no state, runs nothing), so the
 * plan still lists every module; its readers read the producer's value.
 */
#ifndef CO_FUSE_H
#define CO_FUSE_H

#include "core/build.h"

typedef struct co_model co_model;

/* Folds what it can in m's plan (before m->producer is computed). CO_ERR_OUT_OF_MEMORY on OOM. */
co_status co_fuse_plan(co_model *m);

/* An activation slot of an op that can take one (conv, channel affine, reduction). */
typedef struct co_fused_act {
    int on;
    co_pointwise f;
} co_fused_act;
/* Fills an empty slot with f: 1, or 0 when it already holds one. */
int co_fused_act_set(co_fused_act *slot, const co_pointwise *f);
/* Applies the slot's activation (if any) to y[0..n) in place. */
void co_fused_act_run(const co_fused_act *slot, float *y, int64_t n);

/* ---- hooks (each returns 1 when done, 0 when `op` is not of its kind or cannot take it) ---- */
/* norm.c: the per-channel affine map of an eval BatchNorm / InstanceNorm op without activation;
 * clip_rank is the rank of the clips it accepts. */
int co_affine_coefs(const co_op *op, int *clip_rank, int64_t *channels, const float **scale, const float **shift);
/* norm.c: the affine op applies `act` to its output. */
int co_affine_fuse_pointwise(co_op *op, const co_pointwise *act);
/* activation.c: the formula of an element-wise op. */
int co_op_pointwise(const co_op *op, co_pointwise *f);
/* graph.c: the formula of a traced graph that is one element-wise function of its input (a
 * Swish written x * sigmoid(x) among them: SiLU in product form). */
int co_graph_pointwise(const co_op *op, co_pointwise *f);
/* conv.c: folds y = x * scale[c] + shift[c] (over channels of clips of clip_rank) into the conv's
 * weights and bias; 0 also when the shapes do not match (the norm's own check then reports it).
 * -1: out of memory (the op is left as it was). */
int co_conv_fold_affine(co_op *op, int clip_rank, int64_t channels, const float *scale, const float *shift);
/* conv.c: the conv applies `act` to its output. */
int co_conv_fuse_pointwise(co_op *op, const co_pointwise *act);
/* containers.c: a reduction of branches (BroadcastReduce: a residual sum) applies `act` to its output. */
int co_reduce_fuse_pointwise(co_op *op, const co_pointwise *act);

#endif /* CO_FUSE_H */
