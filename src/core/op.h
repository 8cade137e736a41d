/*
 * op.h — the internal interface every module implements (one "op class" per module family).
 *
 * A model is compiled into a flat plan: an array of ops in topological order over numbered
 * values (value 0 is the network input). Containers (Sequential, BroadcastReduce, ...) dissolve
 * into the wiring; only leaves and reductions become ops.
 *
 * Each op runs in two modes over the same parameters:
 *   step  — one frame (B, C, *S) per value; the op may keep state in the stream arena and may
 *           produce no output (returns 0).
 *   clip  — the whole clip (B, C, T, *S); exactly torch.nn's forward; no state.
 * Shapes are resolved per mode by `resolve`, which fills a co_oprt (per-op runtime facts).
 */
#ifndef CO_OP_H
#define CO_OP_H

#include <stddef.h>
#include <stdint.h>

#include "continual.h"

typedef enum co_fill { CO_FILL_ZEROS = 0, CO_FILL_REPLICATE = 1, CO_FILL_NEG_INF = 2 } co_fill;

/* Shape of a value: a frame (B, C, *S) when has_time == 0, a clip (B, C, T, *S) otherwise. */
typedef struct co_tshape {
    int ndim;
    int has_time;
    int64_t d[CO_MAX_DIMS];
} co_tshape;

/* Facts an op resolves for given input shapes. Lives in the stream (or in a forward call). */
typedef struct co_oprt {
    co_tshape out;
    size_t state_bytes;    /* step mode: bytes of state (8-byte aligned by the planner) */
    size_t scratch_floats; /* floats of scratch the op needs during one call */
    int64_t macs;          /* multiply-accumulates of one call (step: per step) */
    int64_t aux[16];       /* op-specific resolved integers */
    void *ext;             /* op-specific resolved data, allocated by resolve, freed by release */
} co_oprt;

typedef struct co_op co_op;

typedef struct co_op_class {
    const char *name;
    /* Output shape and sizes for inputs of shapes in[0 .. op->n_in). On failure sets a message
     * with co_error(...) and returns its status. */
    co_status (*resolve)(const co_op *op, const co_tshape *in, co_oprt *rt);
    /* Step mode (NULL for stateless ops): state to the clean state. */
    void (*reset)(const co_op *op, const co_oprt *rt, void *state);
    /* Step mode (NULL if nothing to check): validates a restored state, CO_ERR_STATE if it
     * could make the op read out of bounds. */
    co_status (*check_state)(const co_op *op, const co_oprt *rt, const void *state);
    /* One frame; returns 1 when `out` was written, 0 for "no output this step" — and then
     * `out` is left untouched (the executor relies on a value buffer holding its last output). */
    int (*step)(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out,
                float *scratch);
    /* Whole clip (inputs and output shaped as resolved with has_time = 1). NULL when `step`,
     * given the clip's shapes, computes the clip too (frame-local, stateless ops). */
    co_status (*clip)(const co_op *op, const co_oprt *rt, const co_tshape *in_shapes,
                      const float *const *in, float *out, float *scratch);
    void (*destroy)(co_op *op); /* frees op->params (NULL: co_free(op->params)) */
    /* Optional: an end-padding frame (forward_steps with pad_end). NULL: `step` is called with
     * a fill frame. Ops that must know a frame is padding (average pooling that does not count
     * padding) set it. */
    int (*step_pad)(const co_op *op, const co_oprt *rt, void *state, const float *const *fill, float *out,
                    float *scratch);
    /* Optional: frees rt->ext (ops that resolve more than fits in aux). */
    void (*release)(const co_op *op, co_oprt *rt);
    /* Optional: one frame of each of n >= 1 independent streams (co_forward_step_streams), so
     * that their products share the weight reads. Stream i has state states[i], inputs
     * in[i * op->n_in + k] (NULL where `step` would get NULL) and output buffer out[i]; it gets
     * what `step` would give it alone (to rounding: same values, possibly another summation
     * order) and produced[i] = what `step` would return. `rt` is the resolution every stream
     * shares (same batch B and frame shape). `scratch` holds at least the op's scratch_floats
     * resolved for a batch of n * B, plus n * (the floats of all its inputs and of its output,
     * per stream), 64-byte aligned. Touches no state but states[0..n). NULL: the executor
     * calls `step` per stream. */
    void (*step_multi)(const co_op *op, const co_oprt *rt, int n, void *const *states, const float *const *in,
                       float *const *out, int *produced, float *scratch);
    /* Set for ops whose steps depend on every earlier frame of the stream (recurrences, token
     * windows, position counters): they cannot run after a module that loses leading outputs
     * (lost_in > 0), since torch's forward feeds them frames the stream never has; co_emit
     * refuses that with CO_ERR_UNSUPPORTED instead of computing other numbers. */
    int whole_stream;
} co_op_class;

struct co_op {
    const co_op_class *cls;
    char *path;     /* node path, for messages; owned by the op */
    int n_in;
    int in[8];      /* value ids; reductions of more branches chain ops (planner's job) */
    int out;        /* value id */
    int any_of;     /* 0: runs when every input is valid. k > 0: runs when any of in[0..k) and
                     * all of in[k..n_in) are valid; invalid inputs are passed as NULL */
    int end_pad;    /* frames fed when flushing (forward_steps with pad_end) */
    co_fill fill;   /* what those frames are */
    void *params;   /* class-specific, owned by the op */
    /* Leading outputs of torch's clip computation that the step stream never delivers
     * (docs/decisions.md Q27): windows made only of start padding cannot be emitted by a step, so
     * after a conv or pool whose padding is at least its window, the stream starts later than
     * torch's output. lost_in is that count for the op's inputs (set by co_emit), lost_out for its
     * output (lost_in unless the op's build function sets it); windowed ops align their phase
     * to it (B1). */
    int64_t lost_in, lost_out;
};

/* Resolves ops[0..n_ops) in order for network input `in` (value 0); values[] gets every value's
 * shape and *out the shape of value `out_value`. On failure releases what it resolved. */
co_status co_ops_resolve(const co_op *ops, int n_ops, int out_value, const co_tshape *in, co_oprt *rt, co_tshape *values,
                         co_tshape *out);
/* Runs an op in clip mode (its clip function, or its step over the clip's shapes). */
co_status co_op_clip(const co_op *op, const co_oprt *rt, const co_tshape *in_shapes, const float *const *in, float *out,
                     float *scratch);
/* Calls release on every resolved op that has one. */
void co_ops_release(const co_op *ops, int n_ops, co_oprt *rt);

/* ---- helpers shared by op implementations (src/core/util.c) ---- */
void *co_alloc(size_t size);
void *co_calloc(size_t n, size_t size);
void co_free(void *p);
char *co_strdup(const char *s);
/* Records the message of the failing call (printf-style) and returns `status`. */
co_status co_error(co_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void co_clear_error(void);

int64_t co_tshape_numel(const co_tshape *s);
/* Elements of one batch item per channel-free position: product of d[2..ndim). */
int64_t co_tshape_inner(const co_tshape *s);
/* Human-readable "(1, 3, 8, 8)" into buf. */
const char *co_tshape_str(const co_tshape *s, char *buf, size_t size);

/* Maps a torch `dim` argument (relative to the clip layout (B, C, T, *S), negative allowed,
 * clip rank = frame ndim + 1) to an axis of `s`. Returns -1 for the batch or time axis or an
 * out-of-range dim (which a frame-local op cannot act on). */
int co_clip_dim_to_axis(int dim, const co_tshape *s);

#endif /* CO_OP_H */
