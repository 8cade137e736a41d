/*
 * build.h — how a module family turns its JSON node into ops (the compiler's interface).
 *
 * The compiler walks the network JSON. For each node it looks the "type" up in the registry
 * and calls the family's build function, which reads and range-checks its hyper-parameters,
 * claims its tensors, emits its op(s) and reports its temporal properties. Containers recurse
 * through co_build_node().
 *
 * The registry: each module family (one file in src/layers) owns ONE table of the types it
 * builds and exports it as a co_module_list function (co_conv_modules, ...); the core only lists
 * those functions (src/core/builder.c, k_families). Adding a type to a family touches that
 * family's file only; adding a family adds one line here and one in k_families.
 */
#ifndef CO_BUILD_H
#define CO_BUILD_H

#include <cjson/cJSON.h>

#include "op.h"
#include "kernels/pointwise.h"

typedef struct co_builder co_builder;

/* Temporal properties of a node, as the reference defines them (semantics.md §2). */
typedef struct co_props {
    int64_t receptive_field;
    int64_t delay;
    int64_t stride;
    int64_t padding;
} co_props;

/* Marks the model as one whose shapes depend on the batch size (a Reshape names the batch). */
void co_mark_batch_bound(co_builder *b);

/* Receptive field 1, delay 0, stride 1, padding 0: a module that sees one frame at a time. */
void co_props_frame_local(co_props *p);

/* Builds one node whose input is value `in`; sets *out (output value) and *props. */
typedef co_status (*co_build_fn)(co_builder *b, const cJSON *node, const char *path, int in, int *out,
                                 co_props *props);

/* ---- the registry ---- */
/* One module type of a family: its name in the file, its build function, and an int the build
 * function reads back with co_build_variant() (which of the family's types it is), so that it
 * does not re-parse the type string. */
typedef struct co_module_reg {
    const char *type; /* NULL: not a module type (a row of the family's table for other uses) */
    co_build_fn build;
    int variant;
} co_module_reg;

/* A family's table: entry i into *out and 1, or 0 past the end. */
typedef int (*co_module_list)(size_t i, co_module_reg *out);

/* Defines co_module_list `name` over a static array of co_module_reg. */
#define CO_MODULE_LIST(name, table)                                                                                    \
    int name(size_t i, co_module_reg *out)                                                                             \
    {                                                                                                                  \
        if (i >= sizeof(table) / sizeof((table)[0])) return 0;                                                         \
        *out = (table)[i];                                                                                             \
        return 1;                                                                                                      \
    }

/* The families' tables (src/layers/<family>.c). */
int co_conv_modules(size_t i, co_module_reg *out);
int co_linear_modules(size_t i, co_module_reg *out);
int co_activation_modules(size_t i, co_module_reg *out);
int co_norm_modules(size_t i, co_module_reg *out);
int co_pool_modules(size_t i, co_module_reg *out);
int co_rnn_modules(size_t i, co_module_reg *out);
int co_attention_modules(size_t i, co_module_reg *out);
int co_transformer_modules(size_t i, co_module_reg *out);
int co_delay_modules(size_t i, co_module_reg *out);
int co_container_modules(size_t i, co_module_reg *out);
int co_utility_modules(size_t i, co_module_reg *out);
int co_graph_modules(size_t i, co_module_reg *out);

/* The entry registered for `type` into *out; 0 if the type is unknown. */
int co_registry_find(const char *type, co_module_reg *out);
/* Every registered type, for tests and tools: count, and the i-th name (NULL past the end). */
size_t co_registry_count(void);
const char *co_registry_name(size_t i);
/* The variant of the registry entry of the node being built (-1 outside a build). */
int co_build_variant(const co_builder *b);

/* Recursion for containers: builds child `node` (its "name" appended to `path`). */
co_status co_build_node(co_builder *b, const cJSON *node, const char *parent_path, int in, int *out,
                        co_props *props);

/* For containers: the node's "children" list (required) and building one child at depth+1. */
co_status co_build_children(co_builder *b, const cJSON *node, const char *path, const cJSON **children, int *count);
co_status co_build_child(co_builder *b, const cJSON *child, const char *path, int in, int *out, co_props *props);

/* ---- reading hyper-parameters: each failure names the node path and the key ---- */
/* Integer `key`; if absent: `def` when !required, else an error. Must lie in [lo, hi]. */
co_status co_get_int(co_builder *b, const cJSON *node, const char *path, const char *key, int required,
                     int64_t def, int64_t lo, int64_t hi, int64_t *out);
co_status co_get_float(co_builder *b, const cJSON *node, const char *path, const char *key, int required,
                       double def, double lo, double hi, double *out);
co_status co_get_bool(co_builder *b, const cJSON *node, const char *path, const char *key, int required,
                      int def, int *out);
/* String among `choices` (NULL-terminated); *out = its index. */
co_status co_get_choice(co_builder *b, const cJSON *node, const char *path, const char *key, int required,
                        int def, const char *const *choices, int *out);
/* A string of at most `max` bytes; *out points into the JSON (valid while building). */
co_status co_get_string(co_builder *b, const cJSON *node, const char *path, const char *key, int required,
                        const char *def, size_t max, const char **out);
/* An int or a list of `n` ints (an int is repeated n times), each in [lo, hi]. */
co_status co_get_ints(co_builder *b, const cJSON *node, const char *path, const char *key, int required,
                      int64_t def, int n, int64_t lo, int64_t hi, int64_t *out);
/* A list of 1..max ints, each in [lo, hi]; *n gets the count. */
co_status co_get_int_list(co_builder *b, const cJSON *node, const char *path, const char *key, int max,
                          int64_t lo, int64_t hi, int64_t *out, int *n);

/* The raw JSON of `key` (NULL if absent), marked as read: for values the helpers above do not
 * cover (lists of objects, lists mixing ints and objects). */
const cJSON *co_get_json(co_builder *b, const cJSON *node, const char *key);
/* Reads `obj`, an object inside the current node (e.g. one op of a Graph's "ops" list), with `fn`
 * and the co_get_* helpers; then refuses any key of obj that fn did not read, as for nodes. */
typedef co_status (*co_object_fn)(co_builder *b, const cJSON *obj, const char *path, void *ctx);
co_status co_read_object(co_builder *b, const cJSON *obj, const char *path, co_object_fn fn, void *ctx);

/* ---- tensors ---- */
/* Claims tensor "<path>.<name>" (or "<name>" at the root), which must have exactly the given
 * shape; returns float32 data owned by the model (converted from the file's dtype).
 * If !required and absent: *out = NULL and CO_OK. */
co_status co_take_tensor(co_builder *b, const char *path, const char *name, int ndim, const int64_t *shape,
                         int required, const float **out);
/* Same for a buffer (running statistics): not counted as a parameter. */
co_status co_take_buffer(co_builder *b, const char *path, const char *name, int ndim, const int64_t *shape,
                         int required, const float **out);
/* Claims a tensor whose values are ignored (e.g. BatchNorm's num_batches_tracked): any dtype,
 * shape must have `ndim` dims. Absent is fine. */
co_status co_skip_tensor(co_builder *b, const char *path, const char *name, int ndim);
/* Counts parameters into the current node (called by co_take_tensor for learnable tensors). */
void co_count_params(co_builder *b, int64_t n);

/* ---- lists of streams (Broadcast, Parallel, ...): a negative handle in place of a value ---- */
#define CO_MAX_LIST 8
/* Makes a list of n values; returns its handle (< 0), or 0 with an error set. */
int co_list_make(co_builder *b, const char *path, int n, const int *values);
/* Values of list `handle` into values[CO_MAX_LIST]; returns the count, or 0 if not a list. */
int co_list_get(const co_builder *b, int handle, int *values);

/* A sub-plan: a child network compiled into its own op list, run by an op in clip mode
 * (RetroactiveLambda runs a layer over the window of tokens at every step). */
typedef struct co_subplan {
    co_op *ops;
    int n_ops, cap_ops, n_values, out_value;
} co_subplan;
co_status co_build_subplan(co_builder *b, const cJSON *child, const char *path, co_subplan **out, co_props *props);
void co_subplan_free(co_subplan *sp);

/* The CO_LOAD_* flags of the load (co_load_options.flags; 0 without options). */
unsigned co_load_flags(const co_builder *b);

/* A callback given at load (co_load_options), by name; NULL if absent. */
const co_callback *co_find_callback(const co_builder *b, const char *name);

/* ---- ops and values ---- */
/* Appends an op of `cls` reading values in[0..n_in), writing a new value (op->out).
 * NULL (with message) on failure. `params` becomes the op's (freed on failure too, through
 * cls->destroy when the class has one). */
co_op *co_emit(co_builder *b, const co_op_class *cls, const char *path, int n_in, const int *in,
               void *params);
/* Windowed ops (conv, pool) and the leading outputs their stream loses (docs/decisions.md Q27,
 * B1): window j of torch's output covers input frames [j*stride - padding, j*stride - padding +
 * span - 1]. Given that the op's input stream lacks its first lost_in frames (op->lost_in), this is
 * the first window a step can emit: with lost_in = 0 the first that ends at or after frame 0; else
 * the first that starts at or after frame lost_in (an earlier one would need frames the stream
 * never had). It is also the op's lost_out. The step that emits it is the
 * (j*stride - padding + span - lost_in)-th of the op. */
int64_t co_first_emitted_window(int64_t lost_in, int64_t stride, int64_t padding, int64_t span);

/* The status of the last failed co_emit (its message is already set). */
co_status co_emit_failure(const co_builder *b);

/* Module families (one file each in src/layers). */
co_status co_build_conv(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *p);
co_status co_build_linear(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *p);
co_status co_build_activation(co_builder *b, const cJSON *node, const char *path, int in, int *out,
                              co_props *p);
co_status co_build_norm(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *p);
co_status co_build_pool(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *p);
co_status co_build_rnn(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *p);
co_status co_build_attention(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *p);
co_status co_build_transformer_part(co_builder *b, const cJSON *node, const char *path, int in, int *out,
                                    co_props *p);
co_status co_build_delay(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *p);
co_status co_build_sequential(co_builder *b, const cJSON *node, const char *path, int in, int *out,
                              co_props *p);
co_status co_build_broadcast(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *p);
co_status co_build_parallel(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *p);
co_status co_build_parallel_dispatch(co_builder *b, const cJSON *node, const char *path, int in, int *out,
                                     co_props *p);
co_status co_build_reduce(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *p);
co_status co_build_conditional(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *p);
co_status co_build_utility(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *p);
co_status co_build_broadcast_reduce(co_builder *b, const cJSON *node, const char *path, int in, int *out,
                                    co_props *p);

/* ---- element-wise functions by their torch functional name (Graph ops, Lambda built-ins) ---- */
/* The formula of functional `fn` (docs/format.md, "Graph nodes": relu, gelu, clamp, ...) with its
 * constants read from `node` (e.g. "alpha", "negative_slope"; defaults as torch). CO_ERR_NETWORK
 * naming `path` for an unknown name or a bad key. The names and the activation module types
 * share one table (src/layers/activation.c). */
co_status co_read_pointwise(co_builder *b, const cJSON *node, const char *path, const char *fn, co_pointwise *out);

#endif /* CO_BUILD_H */
