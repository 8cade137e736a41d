/*
 * delay.c — Delay(d): the frame of d steps ago. With auto_shrink the clip forward drops the
 * frames a centred (d from both ends) or lagging (d from the end) residual has no partner for.
 *
 * Decisions (semantics.md Q22): auto_shrink true and "centered" behave the same (start-up of
 * 2d steps, so steps == forward); only auto_shrink=false flushes d frames with pad_end, so that
 * forward_steps(pad_end) == forward for every variant.
 */
#include <string.h>

#include "core/build.h"
#include "kernels/threadpool.h"

enum shrink { SHRINK_NONE, SHRINK_CENTERED, SHRINK_LAGGING };
typedef struct delay_params { int64_t d; int shrink; } delay_params;
typedef struct delay_head { int64_t count, pos; } delay_head;

static co_status delay_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    const delay_params *p = op->params;
    rt->out = *in;
    if (in->has_time) {
        int64_t cut = p->shrink == SHRINK_CENTERED ? 2 * p->d : p->shrink == SHRINK_LAGGING ? p->d : 0;
        if (in->d[2] - cut < 1)
            return co_error(CO_ERR_SHAPE, "%s: clip of %lld frames is too short for Delay(%lld) with auto_shrink",
                            op->path, (long long)in->d[2], (long long)p->d);
        rt->out.d[2] = in->d[2] - cut;
        rt->state_bytes = 0;
    } else {
        rt->state_bytes = sizeof(delay_head) + (size_t)(p->d * co_tshape_numel(in)) * sizeof(float);
    }
    return CO_OK;
}

static void delay_reset(const co_op *op, const co_oprt *rt, void *state)
{
    memset(state, 0, rt->state_bytes);
}

static int64_t startup(const delay_params *p) { return p->shrink == SHRINK_CENTERED ? 2 * p->d : p->d; }

static co_status delay_check_state(const co_op *op, const co_oprt *rt, const void *state)
{
    const delay_params *p = op->params;
    const delay_head *h = state;
    if (h->pos < 0 || h->pos >= p->d || h->count < 0 || h->count > startup(p))
        return co_error(CO_ERR_STATE, "%s: saved state has an out-of-range ring index", op->path);
    return CO_OK;
}

/* A step moves the oldest frame out and the new one into its slot. Both copies run chunk by
 * chunk (DELAY_CHUNK_FLOATS), so the slot is read and rewritten while it is in cache: one pass
 * over the ring instead of two. Frames of at least DELAY_PARALLEL_MIN floats spread their
 * chunks over the current pool (copies: the bits cannot depend on who copies what). */
enum { DELAY_CHUNK_FLOATS = 1 << 13, DELAY_CHUNKS_PER_TASK = 2, DELAY_PARALLEL_MIN = 1 << 15 };

typedef struct delay_job {
    const float *in;
    float *slot, *out; /* out NULL: nothing is emitted this step */
    int64_t n;
} delay_job;

static void delay_move(const delay_job *j, int64_t c0, int64_t c1)
{
    for (int64_t at = c0; at < c1; at += DELAY_CHUNK_FLOATS) {
        const int64_t len = c1 - at < DELAY_CHUNK_FLOATS ? c1 - at : DELAY_CHUNK_FLOATS;
        if (j->out) memcpy(j->out + at, j->slot + at, (size_t)len * sizeof(float));
        memcpy(j->slot + at, j->in + at, (size_t)len * sizeof(float));
    }
}

static void delay_task(void *ctx, int task)
{
    const delay_job *j = ctx;
    const int64_t span = (int64_t)DELAY_CHUNK_FLOATS * DELAY_CHUNKS_PER_TASK, c0 = task * span;
    delay_move(j, c0, c0 + span < j->n ? c0 + span : j->n);
}

static int delay_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out, float *scratch)
{
    (void)scratch;
    const delay_params *p = op->params;
    delay_head *h = state;
    const int64_t n = co_tshape_numel(&rt->out);
    int emit = h->count >= startup(p);
    delay_job j = {in[0], (float *)(h + 1) + h->pos * n, emit ? out : NULL, n};
    co_pool *pool = n >= DELAY_PARALLEL_MIN ? co_pool_current() : NULL;
    const int64_t span = (int64_t)DELAY_CHUNK_FLOATS * DELAY_CHUNKS_PER_TASK;
    if (pool) co_pool_run(pool, (int)((n + span - 1) / span), delay_task, &j);
    else delay_move(&j, 0, n);
    h->pos = (h->pos + 1) % p->d;
    if (!emit) h->count++;
    return emit;
}

static co_status delay_clip(const co_op *op, const co_oprt *rt, const co_tshape *in_shapes, const float *const *in,
                            float *out, float *scratch)
{
    const delay_params *p = op->params;
    const int64_t T = in_shapes[0].d[2], To = rt->out.d[2], S = co_tshape_inner(&rt->out) / To;
    const int64_t rows = rt->out.d[0] * rt->out.d[1], first = p->shrink == SHRINK_CENTERED ? p->d : 0;
    for (int64_t r = 0; r < rows; r++)
        memcpy(out + r * To * S, in[0] + r * T * S + first * S, (size_t)(To * S) * sizeof(float));
    return CO_OK;
}

static const co_op_class k_delay = {"delay", delay_resolve, delay_reset, delay_check_state, delay_step, delay_clip, NULL};

co_status co_build_delay(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *props)
{
    static const char *const k_fills[] = {"zeros", "replicate", NULL};
    static const char *const k_shrinks[] = {"centered", "lagging", NULL};
    int64_t d;
    int fill, shrink = SHRINK_NONE;
    co_status st;
    if ((st = co_get_int(b, node, path, "delay", 1, 0, 0, 1 << 20, &d)) ||
        (st = co_get_choice(b, node, path, "temporal_fill", 0, 0, k_fills, &fill)))
        return st;
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(node, "auto_shrink");
    if (s && (cJSON_IsBool(s) || cJSON_IsNull(s))) {
        int flag;
        if ((st = co_get_bool(b, node, path, "auto_shrink", 0, 0, &flag))) return st;
        shrink = flag ? SHRINK_CENTERED : SHRINK_NONE;
    } else if (s) {
        int which;
        if ((st = co_get_choice(b, node, path, "auto_shrink", 1, 0, k_shrinks, &which))) return st;
        shrink = which == 0 ? SHRINK_CENTERED : SHRINK_LAGGING;
    }
    props->receptive_field = d + 1;
    props->delay = d;
    props->stride = 1;
    props->padding = 0;
    if (d == 0) { /* every mode returns the input */
        *out = in;
        return CO_OK;
    }
    delay_params *p = co_alloc(sizeof *p);
    if (!p) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    p->d = d;
    p->shrink = shrink;
    co_op *op = co_emit(b, &k_delay, path, 1, &in, p);
    if (!op) return co_emit_failure(b);
    op->end_pad = shrink == SHRINK_NONE ? (int)d : 0;
    op->fill = CO_FILL_ZEROS; /* never reaches an output */
    *out = op->out;
    return CO_OK;
}

/* ---- this family's module types (the registry, build.h); variant unused: the build reads "type" */
static const co_module_reg k_delay_modules[] = {
    {"Delay", co_build_delay, 0},
};
CO_MODULE_LIST(co_delay_modules, k_delay_modules)
