/*
 * builder.h — state of one compilation (internal to src/core).
 */
#ifndef CO_BUILDER_H
#define CO_BUILDER_H

#include "core/model.h"
#include "io/safetensors.h"

#define CO_BUILDER_MAX_DEPTH 64
#define CO_BUILDER_MAX_KEYS 32

struct co_builder {
    co_model *m;
    const co_load_options *options;
    co_status emit_status; /* of the last failed co_emit */
    int n_lists;
    int list_len[256];
    int lists[256][8];
    co_st_file *file;
    int depth;    /* depth of the node being built (root 0) */
    int cur_node; /* index in m->nodes of the node being built, -1 before the root */
    int n_touched[CO_BUILDER_MAX_DEPTH];
    const cJSON *touched[CO_BUILDER_MAX_DEPTH][CO_BUILDER_MAX_KEYS];
};

#endif
