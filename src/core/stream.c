/*
 * stream.c — one live stream: the arena, and the executor of the step plan.
 *
 * Every value of the plan has a frame buffer in the arena and a "valid" flag per tick. An op
 * runs when all its inputs are valid; otherwise its output is invalid too. That one rule gives
 * the reference's container semantics: a Sequential stops at the first "no output", a
 * BroadcastReduce reduces only when every branch produced.
 *
 * End padding (forward_steps with pad_end) is a drain: after the last real frame, each op with
 * `end_pad` > 0 is fed that many fill frames once everything upstream of it has drained — so
 * downstream ops see upstream padding outputs before their own padding, as the reference's
 * layer-by-layer forward_steps does. The drain runs on a shadow copy of the state, which is
 * then dropped (the stream continues as if no padding happened). update_state = 0 runs the
 * whole call on the shadow. co_stream_finish runs the same drain on the live state, then cleans it.
 *
 * What the drain needs to know about the past is part of the state (so that it is saved, restored
 * and peeked with everything else): which ops have seen a frame since the stream was clean (an op
 * that never had one does not pad), and, for ops whose padding repeats their last input
 * (CO_FILL_REPLICATE), a copy of that input. That "executor tail" follows the ops' own states.
 */
#include <math.h>
#include <string.h>

#include "core/inspect.h"
#include "core/model.h"
#include "core/threads.h"

#define CO_ALIGN 64
/* Carving a creation's one block into its tables: points ptr at the next n elements at the cursor
 * (an unsigned char *) and moves the cursor past them. */
#define TAKE(cursor, ptr, n) ((ptr) = (void *)(cursor), (cursor) += (n) * sizeof *(ptr))
/* The state format's version is in its magic. 2: the executor tail (seen flags, last inputs);
 * 3: depthwise convs on small stride-1 frames keep their last k input frames pixel-major instead
 * of k partial outputs (same size, other meaning: a version-2 state is refused, not misread). */
#define CO_STATE_MAGIC "COSTATE3"
#define CO_STATE_MAGIC_FAMILY "COSTATE" /* the magic without its version digit */

struct co_stream {
    const co_model *m;
    int batch;
    co_tshape in_shape, out_shape;
    co_oprt *rt;          /* per op */
    size_t *state_off;    /* per op, into a state region */
    float **vbuf;         /* per value: its buffer in the arena */
    const float **vptr;   /* per value: where its current frame is (value 0 may be the caller's) */
    int64_t *vnumel;      /* per value */
    uint8_t *valid;       /* per value, this tick */
    uint8_t *done;        /* per op, for the drain */
    size_t seen_off;      /* into a state region: n_ops flags, "has had a frame since clean" */
    size_t *last_in_off;  /* per op: into a state region, the copy of its last input (REPLICATE fill), or 0 */
    int64_t *pads_left;   /* per op */
    unsigned char *arena_raw;
    unsigned char *state, *shadow;
    size_t state_bytes, arena_bytes;
    float *scratch, *fill_zero, *fill_neginf;
    int64_t macs;
    int64_t *profile_ns; /* per op, caller-owned (co_stream_set_profile); NULL: off */
    co_threads threads; /* co_stream_set_threads; none by default */
};

typedef struct state_header {
    char magic[8];
    uint64_t fingerprint;
    uint64_t state_bytes;
    uint32_t batch, ndim;
    int64_t dims[CO_MAX_DIMS];
} state_header;

static size_t align_up(size_t n) { return (n + CO_ALIGN - 1) & ~(size_t)(CO_ALIGN - 1); }

/* Sizes of every region for this input shape (rt/values/state_off/vnumel are filled). */
typedef struct layout {
    size_t state, seen, values, scratch, fill, arena;
    int64_t macs, max_numel;
    co_tshape out;
} layout;

static co_status compute_layout(const co_model *m, const co_tshape *in, co_oprt *rt, co_tshape *values, size_t *state_off,
                                size_t *last_in_off, int64_t *vnumel, layout *L)
{
    memset(L, 0, sizeof *L);
    co_status st = co_plan_resolve(m, in, rt, values, &L->out);
    if (st) return st;
    size_t scratch = 0;
    for (int i = 0; i < m->n_ops; i++) {
        state_off[i] = L->state;
        L->state += align_up(rt[i].state_bytes);
        if (rt[i].scratch_floats > scratch) scratch = rt[i].scratch_floats;
        L->macs += rt[i].macs;
    }
    for (int v = 0; v < m->n_values; v++) {
        vnumel[v] = co_tshape_numel(&values[v]);
        if (vnumel[v] > L->max_numel) L->max_numel = vnumel[v];
        L->values += align_up((size_t)vnumel[v] * sizeof(float));
    }
    /* the executor tail (see the top of the file) */
    L->seen = L->state;
    L->state += align_up((size_t)m->n_ops);
    for (int i = 0; i < m->n_ops; i++) {
        last_in_off[i] = 0;
        if (m->ops[i].fill != CO_FILL_REPLICATE || m->ops[i].n_in != 1) continue;
        last_in_off[i] = L->state;
        L->state += align_up((size_t)vnumel[m->ops[i].in[0]] * sizeof(float));
    }
    L->scratch = align_up(scratch * sizeof(float));
    L->fill = 2 * align_up((size_t)L->max_numel * sizeof(float));
    L->arena = 2 * L->state + L->values + L->scratch + L->fill;
    return CO_OK;
}

static co_status frame_tshape(const co_model *m, int batch, const co_shape *frame, co_tshape *out)
{
    if (!frame) {
        if (!m->has_frame_shape)
            return co_error(CO_ERR_SHAPE, "the model file records no frame shape; pass one (co_stream_create_shaped)");
        frame = &m->frame_shape;
    }
    if (batch < 1 || batch > (1 << 20)) return co_error(CO_ERR_INVALID_ARGUMENT, "batch %d out of range [1, 2^20]", batch);
    if (frame->ndim < 1 || frame->ndim > CO_MAX_DIMS - 2)
        return co_error(CO_ERR_SHAPE, "frame shape must have 1 to %d dims (C, *S), has %d", CO_MAX_DIMS - 2, frame->ndim);
    out->ndim = frame->ndim + 1;
    out->has_time = 0;
    out->d[0] = batch;
    for (int i = 0; i < frame->ndim; i++) {
        if (frame->dims[i] < 1 || frame->dims[i] > (1 << 24))
            return co_error(CO_ERR_SHAPE, "frame shape dim %d = %lld out of range [1, 2^24]", i, (long long)frame->dims[i]);
        out->d[1 + i] = frame->dims[i];
    }
    if (co_tshape_numel(out) > ((int64_t)1 << 36)) return co_error(CO_ERR_SHAPE, "frame of batch x shape is too large");
    return CO_OK;
}

co_status co_model_plan_info(const co_model *m, int batch, const co_shape *frame_shape, co_plan_info *out)
{
    if (!m) return co_error(CO_ERR_INVALID_ARGUMENT, "co_model_plan_info: NULL model");
    co_tshape in;
    co_status st = frame_tshape(m, batch, frame_shape, &in);
    if (st) return st;
    co_oprt *rt = co_calloc((size_t)m->n_ops + 1, sizeof *rt);
    co_tshape *values = co_calloc((size_t)m->n_values, sizeof *values);
    size_t *off = co_calloc(2 * ((size_t)m->n_ops + 1), sizeof *off);
    int64_t *vn = co_calloc((size_t)m->n_values, sizeof *vn);
    layout L;
    if (!rt || !values || !off || !vn) st = co_error(CO_ERR_OUT_OF_MEMORY, "out of memory");
    else st = compute_layout(m, &in, rt, values, off, off + m->n_ops + 1, vn, &L);
    if (!st) co_ops_release(m->ops, m->n_ops, rt);
    if (!st && out) {
        memset(out, 0, sizeof *out);
        out->output_frame.ndim = L.out.ndim;
        for (int i = 0; i < L.out.ndim; i++) out->output_frame.dims[i] = L.out.d[i];
        out->macs_per_step = L.macs;
        out->state_bytes = L.state;
        out->arena_bytes = L.arena;
        out->num_ops = m->n_ops;
    }
    co_free(rt);
    co_free(values);
    co_free(off);
    co_free(vn);
    return st;
}

/* ---- creation ---- */
static void reset_state(co_stream *s, unsigned char *base)
{
    const co_model *m = s->m;
    memset(base, 0, s->state_bytes);
    for (int i = 0; i < m->n_ops; i++)
        if (m->ops[i].cls->reset && s->rt[i].state_bytes) m->ops[i].cls->reset(&m->ops[i], &s->rt[i], base + s->state_off[i]);
}

co_status co_stream_create_shaped(const co_model *m, int batch, const co_shape *frame_shape, co_stream **out)
{
    if (out) *out = NULL;
    if (!m || !out) return co_error(CO_ERR_INVALID_ARGUMENT, "co_stream_create: NULL argument");
    co_tshape in;
    co_status st = frame_tshape(m, batch, frame_shape, &in);
    if (st) return st;
    const size_t nv = (size_t)m->n_values, no = (size_t)m->n_ops + 1;
    /* one block for the stream and its per-op / per-value tables */
    size_t bytes = sizeof(co_stream) + no * (sizeof(co_oprt) + 2 * sizeof(size_t) + 1 + sizeof(int64_t)) +
                   nv * (sizeof(float *) + sizeof(float *) + sizeof(int64_t) + 1) + nv * sizeof(co_tshape) + 64;
    unsigned char *blk = co_calloc(1, bytes);
    if (!blk) return co_error(CO_ERR_OUT_OF_MEMORY, "out of memory creating a stream");
    co_stream *s = (co_stream *)blk;
    unsigned char *p = blk + sizeof *s;
    TAKE(p, s->rt, no);
    TAKE(p, s->pads_left, no);
    TAKE(p, s->vnumel, nv);
    TAKE(p, s->state_off, no);
    TAKE(p, s->last_in_off, no);
    TAKE(p, s->vbuf, nv);
    TAKE(p, s->vptr, nv);
    co_tshape *values;
    TAKE(p, values, nv);
    TAKE(p, s->valid, nv);
    TAKE(p, s->done, no);
    s->m = m;
    s->batch = batch;
    s->in_shape = in;
    layout L;
    if ((st = compute_layout(m, &in, s->rt, values, s->state_off, s->last_in_off, s->vnumel, &L))) {
        co_free(blk);
        return st;
    }
    if (L.arena > m->max_arena) {
        char buf[96];
        co_ops_release(m->ops, m->n_ops, s->rt);
        co_free(blk);
        return co_error(CO_ERR_SHAPE,
                        "a stream of input %s needs an arena of %zu bytes, above the cap of %zu bytes "
                        "(co_load_options.max_arena_bytes); use a smaller batch or frame shape, or raise the cap",
                        co_tshape_str(&in, buf, sizeof buf), L.arena, m->max_arena);
    }
    s->out_shape = L.out;
    s->state_bytes = L.state;
    s->seen_off = L.seen;
    s->macs = L.macs;
    s->arena_bytes = L.arena;
    s->arena_raw = co_alloc(L.arena + CO_ALIGN);
    if (!s->arena_raw) {
        co_ops_release(m->ops, m->n_ops, s->rt);
        co_free(blk);
        return co_error(CO_ERR_OUT_OF_MEMORY, "out of memory for a stream arena of %zu bytes", L.arena);
    }
    unsigned char *a = (unsigned char *)(((uintptr_t)s->arena_raw + CO_ALIGN - 1) & ~(uintptr_t)(CO_ALIGN - 1));
    memset(a, 0, L.arena);
    s->state = a;
    a += L.state;
    s->shadow = a;
    a += L.state;
    for (int v = 0; v < m->n_values; v++) {
        s->vbuf[v] = (float *)a;
        s->vptr[v] = s->vbuf[v];
        a += align_up((size_t)s->vnumel[v] * sizeof(float));
    }
    s->scratch = (float *)a;
    a += L.scratch;
    s->fill_zero = (float *)a;
    a += align_up((size_t)L.max_numel * sizeof(float));
    s->fill_neginf = (float *)a;
    for (int64_t i = 0; i < L.max_numel; i++) s->fill_neginf[i] = -INFINITY;
    reset_state(s, s->state);
    *out = s;
    return CO_OK;
}

co_status co_stream_create(const co_model *m, int batch, co_stream **out)
{
    return co_stream_create_shaped(m, batch, NULL, out);
}

void co_stream_free(co_stream *s)
{
    if (!s) return;
    co_threads_clear(&s->threads);
    co_ops_release(s->m->ops, s->m->n_ops, s->rt);
    co_free(s->arena_raw);
    co_free(s);
}

const co_model *co_stream_model(const co_stream *s) { return s ? s->m : NULL; }

static void to_shape(const co_tshape *t, co_shape *out)
{
    out->ndim = t->ndim;
    for (int i = 0; i < t->ndim; i++) out->dims[i] = t->d[i];
}

co_status co_stream_input_shape(const co_stream *s, co_shape *out)
{
    if (!s || !out) return co_error(CO_ERR_INVALID_ARGUMENT, "co_stream_input_shape: NULL argument");
    to_shape(&s->in_shape, out);
    return CO_OK;
}

co_status co_stream_output_shape(const co_stream *s, co_shape *out)
{
    if (!s || !out) return co_error(CO_ERR_INVALID_ARGUMENT, "co_stream_output_shape: NULL argument");
    to_shape(&s->out_shape, out);
    return CO_OK;
}

/* ---- execution ---- */
static int inputs_drained(const co_stream *s, const co_op *op)
{
    for (int k = 0; k < op->n_in; k++) {
        int p = s->m->producer[op->in[k]];
        if (p >= 0 && !s->done[p]) return 0;
    }
    return 1;
}

/* Whether op `op` runs this tick for stream s (all inputs valid; for a merge, any of the leading
 * ones); *any: some input is valid. */
static int op_ready(const co_stream *s, const co_op *op, int *any_out)
{
    int all = 1, any = 0, any_lead = 0;
    for (int k = 0; k < op->n_in; k++) {
        if (s->valid[op->in[k]]) {
            any = 1;
            if (k < op->any_of) any_lead = 1;
        } else if (k >= op->any_of) {
            all = 0;
        }
    }
    if (op->any_of && !any_lead) all = 0;
    if (any_out) *any_out = any;
    return all;
}

static void op_inputs(const co_stream *s, const co_op *op, const float **ins)
{
    for (int k = 0; k < op->n_in; k++) ins[k] = s->valid[op->in[k]] ? s->vptr[op->in[k]] : NULL;
}

/* After op i stepped a real frame on state region `base`: it has been seen, and an op whose
 * padding repeats its last input keeps that input. */
static void note_stepped(const co_stream *s, unsigned char *base, int i, const float *const *ins)
{
    base[s->seen_off + (size_t)i] = 1;
    if (s->last_in_off[i])
        memcpy(base + s->last_in_off[i], ins[0], (size_t)s->vnumel[s->m->ops[i].in[0]] * sizeof(float));
}

/* One tick over all ops. In a drain tick the network input is exhausted and ops may pad. */
static void run_tick(co_stream *s, unsigned char *state, int draining)
{
    const co_model *m = s->m;
    for (int i = 0; i < m->n_ops; i++) {
        const co_op *op = &m->ops[i];
        int any = 0;
        const int all = op_ready(s, op, &any);
        const float *ins[8];
        int produced = 0;
        const int64_t started_ns = s->profile_ns ? co_clock_ns() : 0;
        if (all) {
            op_inputs(s, op, ins);
            note_stepped(s, state, i, ins);
            produced = op->cls->step(op, &s->rt[i], state + s->state_off[i], ins, s->vbuf[op->out], s->scratch);
        } else if (draining && !any && !s->done[i] && inputs_drained(s, op)) {
            if (s->pads_left[i] > 0 && state[s->seen_off + (size_t)i]) {
                for (int k = 0; k < op->n_in; k++)
                    ins[k] = s->last_in_off[i] ? (const float *)(state + s->last_in_off[i])
                             : op->fill == CO_FILL_NEG_INF ? s->fill_neginf
                                                           : s->fill_zero;
                produced = (op->cls->step_pad ? op->cls->step_pad : op->cls->step)(
                    op, &s->rt[i], state + s->state_off[i], ins, s->vbuf[op->out], s->scratch);
                s->pads_left[i]--;
            } else {
                s->done[i] = 1;
            }
        }
        s->valid[op->out] = (uint8_t)produced;
        if (produced) s->vptr[op->out] = s->vbuf[op->out];
        if (s->profile_ns) s->profile_ns[i] += co_clock_ns() - started_ns;
    }
}

co_status co_stream_set_profile(co_stream *s, int64_t *ns_per_op)
{
    if (!s) return co_error(CO_ERR_INVALID_ARGUMENT, "co_stream_set_profile: NULL stream");
    s->profile_ns = ns_per_op;
    return CO_OK;
}

static void begin_tick(co_stream *s, const float *frame)
{
    memset(s->valid, 0, (size_t)s->m->n_values);
    if (frame) {
        s->vptr[0] = frame;
        s->valid[0] = 1;
    }
}

co_status co_forward_step(co_stream *s, const float *x, float *y, int *has_output, int update_state)
{
    if (!s || !x || !y || !has_output) return co_error(CO_ERR_INVALID_ARGUMENT, "co_forward_step: NULL argument");
    unsigned char *state = s->state;
    if (!update_state) {
        memcpy(s->shadow, s->state, s->state_bytes);
        state = s->shadow;
    }
    co_pool *const outer = co_pool_enter(s->threads.pool);
    begin_tick(s, x);
    run_tick(s, state, 0);
    co_pool_leave(outer);
    const int out = s->m->out_value;
    *has_output = s->valid[out];
    if (*has_output) memcpy(y, s->vptr[out], (size_t)s->vnumel[out] * sizeof(float));
    s->vptr[0] = s->vbuf[0]; /* never keep the caller's pointer */
    return CO_OK;
}

int64_t co_steps_max_output(const co_stream *s, int64_t t, int pad_end)
{
    if (!s || t < 0) return 0;
    const int64_t pad = pad_end ? s->m->total_end_pad : 0;
    if (t > INT64_MAX - pad) return -1; /* no buffer can hold that many frames (B5) */
    return t + pad;
}

/* Output frame `o` into a clip laid out (B, C', cap, *S') — compacted to T_out at the end. */
static void scatter_output(const co_stream *s, const float *frame, float *y, int64_t cap, int64_t o)
{
    const int64_t rows = s->out_shape.d[0] * s->out_shape.d[1];
    const int64_t S = s->vnumel[s->m->out_value] / rows;
    for (int64_t r = 0; r < rows; r++) memcpy(y + (r * cap + o) * S, frame + r * S, (size_t)S * sizeof(float));
}

/* The end-padding drain on state region `state`: output frames go to y from index n on; returns
 * the new count. */
static int64_t drain(co_stream *s, unsigned char *state, float *y, int64_t y_frames, int64_t n)
{
    const co_model *m = s->m;
    const int out = m->out_value;
    for (int i = 0; i < m->n_ops; i++) {
        s->done[i] = 0;
        s->pads_left[i] = m->ops[i].end_pad;
    }
    /* each productive drain tick consumes a pad, so this bounds the loop */
    for (int64_t guard = m->total_end_pad + m->n_ops + 2; guard > 0; guard--) {
        begin_tick(s, NULL);
        run_tick(s, state, 1);
        if (s->valid[out] && n < y_frames) scatter_output(s, s->vptr[out], y, y_frames, n++);
        int all_done = 1;
        for (int i = 0; i < m->n_ops && all_done; i++) all_done = s->done[i];
        if (all_done) break;
    }
    return n;
}

/* (B, C', cap, *S') -> (B, C', n, *S'); destinations never pass sources. */
static void compact_output(const co_stream *s, float *y, int64_t cap, int64_t n)
{
    if (n <= 0 || n >= cap) return;
    const int64_t orows = s->out_shape.d[0] * s->out_shape.d[1], oS = s->vnumel[s->m->out_value] / orows;
    for (int64_t r = 1; r < orows; r++) memmove(y + r * n * oS, y + r * cap * oS, (size_t)(n * oS) * sizeof(float));
}

co_status co_forward_steps(co_stream *s, const float *x, int64_t t, float *y, int64_t y_frames, int64_t *t_out,
                           int pad_end, int update_state)
{
    if (!s || !t_out || (t > 0 && !x) || t < 0)
        return co_error(CO_ERR_INVALID_ARGUMENT, "co_forward_steps: NULL argument or negative T");
    const int64_t need = co_steps_max_output(s, t, pad_end);
    if (need < 0 || t > INT64_MAX / (s->vnumel[0] ? s->vnumel[0] : 1))
        return co_error(CO_ERR_INVALID_ARGUMENT, "co_forward_steps: T = %lld frames is more than any buffer holds",
                        (long long)t);
    if (need > 0 && !y) return co_error(CO_ERR_INVALID_ARGUMENT, "co_forward_steps: y is NULL");
    if (y_frames < need)
        return co_error(CO_ERR_BUFFER_TOO_SMALL, "co_forward_steps: output holds %lld frames, up to %lld may appear",
                        (long long)y_frames, (long long)need);
    const co_model *m = s->m;
    unsigned char *state = s->state;
    if (!update_state) {
        memcpy(s->shadow, s->state, s->state_bytes);
        state = s->shadow;
    }
    co_pool *const outer = co_pool_enter(s->threads.pool);
    const int out = m->out_value;
    const int64_t rows = s->in_shape.d[0] * s->in_shape.d[1], S = s->vnumel[0] / rows;
    int64_t n = 0;
    for (int64_t f = 0; f < t; f++) {
        float *frame = s->vbuf[0]; /* gather frame f out of (B, C, T, *S) */
        for (int64_t r = 0; r < rows; r++) memcpy(frame + r * S, x + (r * t + f) * S, (size_t)S * sizeof(float));
        begin_tick(s, frame);
        run_tick(s, state, 0);
        if (s->valid[out]) scatter_output(s, s->vptr[out], y, y_frames, n++);
    }
    if (pad_end) {
        if (state == s->state) {
            memcpy(s->shadow, s->state, s->state_bytes);
            state = s->shadow;
        }
        n = drain(s, state, y, y_frames, n);
    }
    compact_output(s, y, y_frames, n);
    co_pool_leave(outer);
    *t_out = n;
    s->vptr[0] = s->vbuf[0];
    return CO_OK;
}

int64_t co_stream_finish_max_output(const co_stream *s) { return s ? s->m->total_end_pad : 0; }

co_status co_stream_finish(co_stream *s, float *y, int64_t y_frames, int64_t *t_out)
{
    if (!s || !t_out) return co_error(CO_ERR_INVALID_ARGUMENT, "co_stream_finish: NULL stream or t_out");
    const int64_t need = s->m->total_end_pad;
    if (need > 0 && !y) return co_error(CO_ERR_INVALID_ARGUMENT, "co_stream_finish: y is NULL");
    if (y_frames < need)
        return co_error(CO_ERR_BUFFER_TOO_SMALL,
                        "co_stream_finish: output holds %lld frames, up to %lld may appear (co_stream_finish_max_output)",
                        (long long)y_frames, (long long)need);
    co_pool *const outer = co_pool_enter(s->threads.pool);
    const int64_t n = drain(s, s->state, y, y_frames, 0);
    co_pool_leave(outer);
    compact_output(s, y, y_frames, n);
    *t_out = n;
    reset_state(s, s->state);
    return CO_OK;
}

co_status co_stream_clean(co_stream *s)
{
    if (!s) return co_error(CO_ERR_INVALID_ARGUMENT, "co_stream_clean: NULL stream");
    reset_state(s, s->state);
    return CO_OK;
}

/* ---- save / restore ---- */
size_t co_stream_state_size(const co_stream *s) { return s ? sizeof(state_header) + s->state_bytes : 0; }

static void fill_header(const co_stream *s, state_header *h)
{
    memset(h, 0, sizeof *h);
    memcpy(h->magic, CO_STATE_MAGIC, 8);
    h->fingerprint = s->m->fingerprint;
    h->state_bytes = s->state_bytes;
    h->batch = (uint32_t)s->batch;
    h->ndim = (uint32_t)s->in_shape.ndim;
    for (int i = 0; i < s->in_shape.ndim; i++) h->dims[i] = s->in_shape.d[i];
}

co_status co_stream_save(const co_stream *s, void *buf, size_t size, size_t *written)
{
    if (!s || !buf) return co_error(CO_ERR_INVALID_ARGUMENT, "co_stream_save: NULL argument");
    const size_t need = co_stream_state_size(s);
    if (size < need) return co_error(CO_ERR_BUFFER_TOO_SMALL, "co_stream_save: buffer of %zu bytes, need %zu", size, need);
    state_header h;
    fill_header(s, &h);
    memcpy(buf, &h, sizeof h);
    memcpy((unsigned char *)buf + sizeof h, s->state, s->state_bytes);
    if (written) *written = need;
    return CO_OK;
}

co_status co_stream_restore(co_stream *s, const void *buf, size_t size)
{
    if (!s || !buf) return co_error(CO_ERR_INVALID_ARGUMENT, "co_stream_restore: NULL argument");
    state_header h, mine;
    if (size < sizeof h) return co_error(CO_ERR_STATE, "saved state of %zu bytes is shorter than its header", size);
    memcpy(&h, buf, sizeof h);
    fill_header(s, &mine);
    if (memcmp(h.magic, CO_STATE_MAGIC_FAMILY, 7) == 0 && h.magic[7] >= '0' && h.magic[7] <= '9' &&
        h.magic[7] != CO_STATE_MAGIC[7])
        return co_error(CO_ERR_STATE, "saved state is format %c, this library reads format %c: save it again with "
                        "this library (states do not carry over between state formats)", h.magic[7], CO_STATE_MAGIC[7]);
    if (memcmp(h.magic, CO_STATE_MAGIC, 8) != 0) return co_error(CO_ERR_STATE, "not a continual-c stream state");
    if (h.fingerprint != mine.fingerprint)
        return co_error(CO_ERR_STATE, "saved state belongs to another model (network or weights differ)");
    if (h.batch != mine.batch || h.ndim != mine.ndim || memcmp(h.dims, mine.dims, sizeof h.dims) != 0)
        return co_error(CO_ERR_STATE, "saved state is for another batch size or frame shape");
    if (h.state_bytes != s->state_bytes || size != sizeof h + s->state_bytes)
        return co_error(CO_ERR_STATE, "saved state has %zu bytes, this stream needs %zu", size, co_stream_state_size(s));
    /* validate on the shadow first, so a bad state leaves the stream untouched */
    memcpy(s->shadow, (const unsigned char *)buf + sizeof h, s->state_bytes);
    const co_model *m = s->m;
    for (int i = 0; i < m->n_ops; i++)
        if (m->ops[i].cls->check_state && s->rt[i].state_bytes) {
            co_status st = m->ops[i].cls->check_state(&m->ops[i], &s->rt[i], s->shadow + s->state_off[i]);
            if (st) return st;
        }
    memcpy(s->state, s->shadow, s->state_bytes);
    return CO_OK;
}

/* ---- many independent streams in one call ----
 * The context holds what one call needs besides the streams themselves: the tables of the
 * streams each op runs for, and the scratch of step_multi (sized by resolving the plan for one
 * lockstep batch of max_streams x B). Each op of the plan is visited once per call: the streams
 * whose inputs are valid this tick go through its step_multi together (their states, rings and
 * phases stay each stream's own), or through its step one by one when it has none. */
enum { CO_MULTI_MAX_STREAMS = 1 << 16 };

struct co_multistream {
    const co_model *m;
    int max_streams;
    int multi;                /* step_multi may be used (the plan resolves for max_streams x B) */
    co_tshape in_shape;       /* every stream's input frame (B, C, *S) */
    size_t scratch_floats;
    float *scratch;           /* 64-byte aligned, inside scratch_raw */
    unsigned char *scratch_raw;
    unsigned char **base;     /* per stream of the call: the state region stepped (live or shadow) */
    int *act;                 /* per op: the call's streams it runs for */
    void **states;
    const float **ins;        /* 8 per stream */
    float **outs;
    int *produced;
    const co_stream **sorted; /* duplicate check */
    co_threads threads;       /* co_multistream_set_threads; none by default */
};

co_status co_multistream_create(const co_model *m, int max_streams, int batch, const co_shape *frame_shape,
                                co_multistream **out)
{
    if (out) *out = NULL;
    if (!m || !out) return co_error(CO_ERR_INVALID_ARGUMENT, "co_multistream_create: NULL argument");
    if (max_streams < 1 || max_streams > CO_MULTI_MAX_STREAMS)
        return co_error(CO_ERR_INVALID_ARGUMENT, "co_multistream_create: max_streams %d out of range [1, %d]", max_streams,
                        CO_MULTI_MAX_STREAMS);
    co_tshape in;
    co_status st = frame_tshape(m, batch, frame_shape, &in);
    if (st) return st;
    const size_t no = (size_t)m->n_ops + 1, nv = (size_t)m->n_values, ns = (size_t)max_streams;
    co_oprt *rt = co_calloc(no, sizeof *rt);
    co_tshape *values = co_calloc(nv, sizeof *values);
    size_t *off = co_calloc(2 * no, sizeof *off);
    int64_t *vn = co_calloc(nv, sizeof *vn);
    co_multistream *c = NULL;
    layout L;
    if (!rt || !values || !off || !vn) {
        st = co_error(CO_ERR_OUT_OF_MEMORY, "out of memory creating a multi-stream context");
        goto done;
    }
    if ((st = compute_layout(m, &in, rt, values, off, off + no, vn, &L))) goto done; /* the streams' own plan */
    co_ops_release(m->ops, m->n_ops, rt);
    /* step_multi's scratch: each op's scratch for a batch of max_streams x B, plus room to gather
     * its inputs and output for max_streams streams */
    int multi = 0;
    size_t scratch = 0;
    for (int i = 0; i < m->n_ops; i++) multi |= m->ops[i].cls->step_multi != NULL;
    co_tshape big = in;
    big.d[0] = in.d[0] * max_streams;
    if (multi && (m->batch_bound || max_streams < 2 || co_tshape_numel(&big) > ((int64_t)1 << 36))) multi = 0;
    if (multi) {
        co_tshape big_out;
        memset(rt, 0, no * sizeof *rt);
        if (co_plan_resolve(m, &big, rt, values, &big_out) != CO_OK) {
            multi = 0; /* e.g. a shape that names the batch: every op then steps stream by stream */
            co_clear_error();
        } else {
            for (int i = 0; i < m->n_ops; i++) {
                const co_op *op = &m->ops[i];
                if (!op->cls->step_multi) continue;
                int64_t per = vn[op->out];
                for (int k = 0; k < op->n_in; k++) per += vn[op->in[k]];
                size_t need = rt[i].scratch_floats + (size_t)per * ns;
                if (need > scratch) scratch = need;
            }
            co_ops_release(m->ops, m->n_ops, rt);
        }
    }
    size_t bytes = sizeof *c + ns * (sizeof(unsigned char *) + sizeof(int) + sizeof(void *) + 8 * sizeof(float *) +
                                     sizeof(float *) + sizeof(int) + sizeof(co_stream *)) + 64;
    unsigned char *blk = co_calloc(1, bytes);
    if (!blk) {
        st = co_error(CO_ERR_OUT_OF_MEMORY, "out of memory creating a multi-stream context");
        goto done;
    }
    c = (co_multistream *)blk;
    unsigned char *p = blk + sizeof *c;
    p = (unsigned char *)(((uintptr_t)p + 15) & ~(uintptr_t)15);
    TAKE(p, c->base, ns);
    TAKE(p, c->states, ns);
    TAKE(p, c->ins, 8 * ns);
    TAKE(p, c->outs, ns);
    TAKE(p, c->sorted, ns);
    TAKE(p, c->act, ns);
    TAKE(p, c->produced, ns);
    c->m = m;
    c->max_streams = max_streams;
    c->multi = multi;
    c->in_shape = in;
    c->scratch_floats = scratch;
    if (scratch) {
        c->scratch_raw = co_alloc(align_up(scratch * sizeof(float)) + CO_ALIGN);
        if (!c->scratch_raw) {
            st = co_error(CO_ERR_OUT_OF_MEMORY, "out of memory for a multi-stream scratch of %zu bytes",
                          scratch * sizeof(float));
            co_free(blk);
            c = NULL;
            goto done;
        }
        c->scratch = (float *)(((uintptr_t)c->scratch_raw + CO_ALIGN - 1) & ~(uintptr_t)(CO_ALIGN - 1));
    }
    *out = c;
done:
    co_free(rt);
    co_free(values);
    co_free(off);
    co_free(vn);
    return st;
}

void co_multistream_free(co_multistream *c)
{
    if (!c) return;
    co_threads_clear(&c->threads);
    co_free(c->scratch_raw);
    co_free(c);
}

static int same_tshape(const co_tshape *a, const co_tshape *b)
{
    if (a->ndim != b->ndim || a->has_time != b->has_time) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->d[i] != b->d[i]) return 0;
    return 1;
}

/* heapsort of stream pointers by address (no allocation; qsort may allocate) */
static void sift_down(const co_stream **a, int root, int n)
{
    for (;;) {
        int child = 2 * root + 1;
        if (child >= n) return;
        if (child + 1 < n && (uintptr_t)a[child + 1] > (uintptr_t)a[child]) child++;
        if ((uintptr_t)a[root] >= (uintptr_t)a[child]) return;
        const co_stream *t = a[root];
        a[root] = a[child];
        a[child] = t;
        root = child;
    }
}

static void sort_streams(const co_stream **a, int n)
{
    for (int i = n / 2 - 1; i >= 0; i--) sift_down(a, i, n);
    for (int end = n - 1; end > 0; end--) {
        const co_stream *t = a[0];
        a[0] = a[end];
        a[end] = t;
        sift_down(a, 0, end);
    }
}

co_status co_forward_step_streams(co_multistream *c, co_stream *const *streams, int n, const float *const *x,
                                  float *const *y, int *has_output, int update_state)
{
    if (!c) return co_error(CO_ERR_INVALID_ARGUMENT, "co_forward_step_streams: NULL context");
    if (n < 0 || n > c->max_streams)
        return co_error(CO_ERR_INVALID_ARGUMENT, "co_forward_step_streams: %d streams, the context takes 0 to %d", n,
                        c->max_streams);
    if (n == 0) return CO_OK;
    if (!streams || !x || !y || !has_output)
        return co_error(CO_ERR_INVALID_ARGUMENT, "co_forward_step_streams: NULL argument");
    /* everything is checked before any stream is touched */
    for (int i = 0; i < n; i++) {
        const co_stream *s = streams[i];
        if (!s || !x[i] || !y[i])
            return co_error(CO_ERR_INVALID_ARGUMENT, "co_forward_step_streams: NULL %s for stream %d",
                            !s ? "stream" : !x[i] ? "input frame" : "output buffer", i);
        if (s->m != c->m)
            return co_error(CO_ERR_INVALID_ARGUMENT, "co_forward_step_streams: stream %d belongs to another model", i);
        if (!same_tshape(&s->in_shape, &c->in_shape)) {
            char a[96], b[96];
            return co_error(CO_ERR_SHAPE, "co_forward_step_streams: stream %d takes frames %s, the context %s", i,
                            co_tshape_str(&s->in_shape, a, sizeof a), co_tshape_str(&c->in_shape, b, sizeof b));
        }
        c->sorted[i] = s;
    }
    sort_streams(c->sorted, n);
    for (int i = 1; i < n; i++)
        if (c->sorted[i] == c->sorted[i - 1])
            return co_error(CO_ERR_INVALID_ARGUMENT, "co_forward_step_streams: a stream appears twice");

    const co_model *m = c->m;
    co_pool *const outer = co_pool_enter(c->threads.pool);
    for (int i = 0; i < n; i++) {
        co_stream *s = streams[i];
        c->base[i] = s->state;
        if (!update_state) {
            memcpy(s->shadow, s->state, s->state_bytes);
            c->base[i] = s->shadow;
        }
        begin_tick(s, x[i]);
    }
    for (int o = 0; o < m->n_ops; o++) {
        const co_op *op = &m->ops[o];
        int cnt = 0;
        for (int i = 0; i < n; i++) {
            co_stream *s = streams[i];
            if (op_ready(s, op, NULL)) {
                op_inputs(s, op, c->ins + (size_t)cnt * (size_t)op->n_in);
                c->act[cnt++] = i;
            } else {
                s->valid[op->out] = 0;
            }
        }
        if (!cnt) continue;
        for (int k = 0; k < cnt; k++)
            note_stepped(streams[c->act[k]], c->base[c->act[k]], o, c->ins + (size_t)k * (size_t)op->n_in);
        if (cnt > 1 && c->multi && op->cls->step_multi) {
            for (int k = 0; k < cnt; k++) {
                co_stream *s = streams[c->act[k]];
                c->states[k] = c->base[c->act[k]] + s->state_off[o];
                c->outs[k] = s->vbuf[op->out];
            }
            op->cls->step_multi(op, &streams[c->act[0]]->rt[o], cnt, c->states, c->ins, c->outs, c->produced, c->scratch);
        } else {
            for (int k = 0; k < cnt; k++) {
                co_stream *s = streams[c->act[k]];
                c->produced[k] = op->cls->step(op, &s->rt[o], c->base[c->act[k]] + s->state_off[o],
                                               c->ins + (size_t)k * (size_t)op->n_in, s->vbuf[op->out], s->scratch);
            }
        }
        for (int k = 0; k < cnt; k++) {
            co_stream *s = streams[c->act[k]];
            s->valid[op->out] = (uint8_t)(c->produced[k] != 0);
            if (c->produced[k]) s->vptr[op->out] = s->vbuf[op->out];
        }
    }
    const int out = m->out_value;
    for (int i = 0; i < n; i++) {
        co_stream *s = streams[i];
        has_output[i] = s->valid[out];
        if (has_output[i]) memcpy(y[i], s->vptr[out], (size_t)s->vnumel[out] * sizeof(float));
        s->vptr[0] = s->vbuf[0]; /* never keep the caller's pointer */
    }
    co_pool_leave(outer);
    return CO_OK;
}

/* ---- intra-step threads (continual.h; the pool: core/threads.h) ---- */
co_status co_stream_set_threads(co_stream *s, int n_threads)
{
    if (!s) return co_error(CO_ERR_INVALID_ARGUMENT, "co_stream_set_threads: NULL stream");
    return co_threads_set(&s->threads, n_threads, "co_stream_set_threads");
}

int co_stream_threads(const co_stream *s) { return s ? co_pool_threads(s->threads.pool) : 1; }

co_status co_multistream_set_threads(co_multistream *c, int n_threads)
{
    if (!c) return co_error(CO_ERR_INVALID_ARGUMENT, "co_multistream_set_threads: NULL context");
    return co_threads_set(&c->threads, n_threads, "co_multistream_set_threads");
}

int co_multistream_threads(const co_multistream *c) { return c ? co_pool_threads(c->threads.pool) : 1; }
