/*
 * model.h — the compiled model (internal). Immutable after co_model_load.
 */
#ifndef CO_MODEL_H
#define CO_MODEL_H

#include "core/build.h"

typedef struct co_node {
    char *path;
    char *type;
    int depth, parent;
    int64_t params;
    co_props props;
} co_node;

struct co_model {
    co_op *ops;        /* topological order */
    int n_ops, cap_ops;
    int n_values;      /* value 0 is the network input */
    int out_value;
    int *producer;     /* per value: index of the op writing it, -1 for the input */
    co_node *nodes;    /* pre-order */
    int n_nodes, cap_nodes;
    float **weights;   /* float32 copies of the file's tensors, owned */
    int n_weights, cap_weights;
    int has_frame_shape;
    co_shape frame_shape; /* (C, *S) without batch */
    int64_t params;
    int batch_bound;       /* some op's shape names the batch (Reshape): no batch-1 check at load */
    int64_t total_end_pad; /* sum of op end paddings: bounds the frames a flush emits */
    uint64_t fingerprint;  /* network JSON + weights; saved states carry it */
    char *description;     /* metadata "description", owned; NULL if none */
    size_t max_arena;      /* co_load_options.max_arena_bytes, or the default */
};

/* Resolves every op for an input of shape `in` (frame or clip). rt: n_ops entries. Returns the
 * output shape of the network in *out. */
co_status co_plan_resolve(const co_model *m, const co_tshape *in, co_oprt *rt, co_tshape *value_shapes, co_tshape *out);

#endif
