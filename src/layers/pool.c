/*
 * pool.c — continual AvgPool / MaxPool (1d, 2d, 3d) and AdaptiveAvgPool / AdaptiveMaxPool
 * (2d, 3d).
 *
 * Step mode pools each frame spatially, keeps the pooled frames in a ring of the temporal
 * window's span L = d(k-1)+1, and pools the window's k taps temporally when the phase says
 * the step has an output (same phase rule as the convolution). Average pooling keeps spatial
 * sums and divides once per output, so every torch divisor rule (count_include_pad,
 * divisor_override) holds exactly; a flag per ring slot tells padding from real frames.
 *
 * Decisions against the reference (semantics.md §3.2, Q3/Q4/Q25): the ring spans the dilated
 * window (the reference wraps at k, so dilation was wrong); receptive_field = d(k-1)+1; max
 * pooling pads with -inf (torch's padding) even when the exported temporal_fill is "zeros";
 * count_include_pad=False and divisor_override hold in time too. Left as the reference: a
 * temporal ceil_mode window that runs past the end of the clip is only produced by forward.
 */
#include <math.h>
#include <string.h>

#include "core/build.h"
#include "kernels/threadpool.h"

typedef struct pool_params {
    int is_max, adaptive, nsd;
    int64_t kt, st, pt, dt;               /* temporal kernel, stride, padding, dilation */
    int64_t ks[2], ss[2], ps[2], ds[2];   /* spatial; unused dims 1/1/0/1 */
    int64_t aout[2];                      /* adaptive: spatial output sizes (unused dims 1) */
    int ceil_mode, count_include_pad;
    int64_t divisor;                      /* divisor_override, 0 if none */
} pool_params;

enum { A_H, A_W, A_HO, A_WO, A_SPAN };

static int64_t out_size(int64_t L, int64_t k, int64_t s, int64_t p, int64_t d, int ceil_mode)
{
    int64_t num = L + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
    if (num < 0) return 0;
    int64_t o = num / s + 1;
    if (ceil_mode && (o - 1) * s >= L + p) o--;
    return o;
}

/* Adaptive window [start, end) of output i of O over L. */
static void adaptive_range(int64_t i, int64_t O, int64_t L, int64_t *start, int64_t *end)
{
    *start = (i * L) / O;
    *end = ((i + 1) * L + O - 1) / O;
}

static co_status pool_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    const pool_params *p = op->params;
    const int t = in->has_time;
    char buf[96];
    if (in->ndim != 2 + t + p->nsd)
        return co_error(CO_ERR_SHAPE, "%s: expected %d spatial dims, got %s", op->path, p->nsd, co_tshape_str(in, buf, sizeof buf));
    int64_t sp[2] = {1, 1}, so[2] = {1, 1};
    for (int i = 0; i < p->nsd; i++) sp[2 - p->nsd + i] = in->d[2 + t + i];
    for (int i = 0; i < 2; i++) {
        if (p->adaptive) {
            so[i] = p->aout[i];
            continue;
        }
        if (p->ps[i] * 2 > p->ks[i])
            return co_error(CO_ERR_NETWORK, "%s: padding %lld must be at most half the kernel %lld", op->path,
                            (long long)p->ps[i], (long long)p->ks[i]);
        so[i] = out_size(sp[i], p->ks[i], p->ss[i], p->ps[i], p->ds[i], p->ceil_mode);
        if (so[i] < 1)
            return co_error(CO_ERR_SHAPE, "%s: spatial size %lld is too small for the kernel", op->path, (long long)sp[i]);
    }
    rt->aux[A_H] = sp[0]; rt->aux[A_W] = sp[1]; rt->aux[A_HO] = so[0]; rt->aux[A_WO] = so[1];
    const int64_t span = p->dt * (p->kt - 1) + 1;
    rt->aux[A_SPAN] = span;
    rt->out = *in;
    for (int i = 0; i < p->nsd; i++) rt->out.d[2 + t + i] = so[2 - p->nsd + i];
    const int64_t rows = in->d[0] * in->d[1], So = so[0] * so[1];
    if (t) {
        int64_t To = p->adaptive ? 1 : out_size(in->d[2], p->kt, p->st, p->pt, p->dt, p->ceil_mode);
        if (To < 1)
            return co_error(CO_ERR_SHAPE, "%s: clip of %lld frames is shorter than the pooling window", op->path,
                            (long long)in->d[2]);
        rt->out.d[2] = To;
        rt->macs = co_tshape_numel(in);
    } else {
        rt->macs = co_tshape_numel(in) + p->kt * rows * So;
        /* head, one real-frame flag per slot, ring of pooled frames */
        rt->state_bytes = 3 * sizeof(int64_t) + (size_t)((span + 7) / 8 * 8) + (size_t)(span * rows * So) * sizeof(float);
        rt->scratch_floats = (size_t)(rows * So);
    }
    return CO_OK;
}

/* The input rows/columns [h0, h1) step hs, [w0, w1) step ws that spatial output (oh, ow) pools
 * (may reach into the padding, which the callers skip). */
typedef struct spatial_window { int64_t h0, h1, hs, w0, w1, ws; } spatial_window;

static spatial_window window_of(const pool_params *p, const co_oprt *rt, int64_t oh, int64_t ow)
{
    spatial_window w = {0, 0, 1, 0, 0, 1};
    if (p->adaptive) {
        adaptive_range(oh, rt->aux[A_HO], rt->aux[A_H], &w.h0, &w.h1);
        adaptive_range(ow, rt->aux[A_WO], rt->aux[A_W], &w.w0, &w.w1);
        return w;
    }
    w.h0 = oh * p->ss[0] - p->ps[0];
    w.h1 = w.h0 + p->ds[0] * (p->ks[0] - 1) + 1;
    w.hs = p->ds[0];
    w.w0 = ow * p->ss[1] - p->ps[1];
    w.w1 = w.w0 + p->ds[1] * (p->ks[1] - 1) + 1;
    w.ws = p->ds[1];
    return w;
}

/* torch's max: a NaN wins over any number */
static inline float pool_max(float acc, float v) { return (v > acc || isnan(v)) ? v : acc; }

/* Folds the in-range values of `plane` (H x W) in window `w` into acc: max, or sum (avg). */
static float pool_plane(const pool_params *p, const co_oprt *rt, const float *plane, spatial_window w, float acc)
{
    const int64_t H = rt->aux[A_H], W = rt->aux[A_W];
    for (int64_t h = w.h0; h < w.h1; h += w.hs) {
        if (h < 0 || h >= H) continue;
        for (int64_t c = w.w0; c < w.w1; c += w.ws) {
            if (c < 0 || c >= W) continue;
            const float v = plane[h * W + c];
            if (p->is_max) acc = pool_max(acc, v);
            else acc += v;
        }
    }
    return acc;
}

/* ---- spatial pooling of one frame: (rows, H*W) -> (rows, Ho*Wo): max, or sum (avg) ---- */

/* Global pooling (one output per plane: the SE's average pool) takes POOL_PLANES planes at a
 * time, each in its own accumulator: the same additions in the same order as pool_plane (so
 * the same bits), but POOL_PLANES independent chains instead of one long dependent one. Frames of
 * at least POOL_PARALLEL_MIN floats run on the current pool in tasks of a whole number of plane
 * groups fixed by the shape alone (about POOL_TASK_FLOATS each), so results do not depend on the
 * thread count. */
enum { POOL_PLANES = 8, POOL_TASK_FLOATS = 1 << 14, POOL_PARALLEL_MIN = 1 << 15 };

typedef struct global_job {
    int is_max;
    const float *x;
    int64_t rows, row_stride, S, rows_per_task;
    float *y;
} global_job;

static void pool_global_rows(const global_job *j, int64_t r0, int64_t r1)
{
    const float init = j->is_max ? -INFINITY : 0.0f;
    int64_t r = r0;
    for (; r + POOL_PLANES <= r1; r += POOL_PLANES) {
        const float *x = j->x + r * j->row_stride;
        float acc[POOL_PLANES];
        for (int k = 0; k < POOL_PLANES; k++) acc[k] = init;
        if (j->is_max)
            for (int64_t i = 0; i < j->S; i++)
                for (int k = 0; k < POOL_PLANES; k++) {
                    const float v = x[k * j->row_stride + i];
                    acc[k] = pool_max(acc[k], v);
                }
        else
            for (int64_t i = 0; i < j->S; i++)
                for (int k = 0; k < POOL_PLANES; k++) acc[k] += x[k * j->row_stride + i];
        for (int k = 0; k < POOL_PLANES; k++) j->y[r + k] = acc[k];
    }
    for (; r < r1; r++) {
        const float *x = j->x + r * j->row_stride;
        float acc = init;
        for (int64_t i = 0; i < j->S; i++) {
            const float v = x[i];
            if (j->is_max) acc = pool_max(acc, v);
            else acc += v;
        }
        j->y[r] = acc;
    }
}

static void pool_global_task(void *ctx, int task)
{
    const global_job *j = ctx;
    const int64_t r0 = (int64_t)task * j->rows_per_task, r1 = r0 + j->rows_per_task;
    pool_global_rows(j, r0, r1 < j->rows ? r1 : j->rows);
}

static void pool_global(const pool_params *p, const float *x, int64_t rows, int64_t row_stride, int64_t S, float *y)
{
    global_job j = {p->is_max, x, rows, row_stride, S, rows, y};
    co_pool *pool = rows * S >= POOL_PARALLEL_MIN ? co_pool_current() : NULL;
    if (pool) {
        const int64_t groups = (POOL_TASK_FLOATS + POOL_PLANES * S - 1) / (POOL_PLANES * S);
        j.rows_per_task = groups * POOL_PLANES;
    }
    const int tasks = (int)((rows + j.rows_per_task - 1) / j.rows_per_task);
    if (tasks > 1) co_pool_run(pool, tasks, pool_global_task, &j);
    else pool_global_rows(&j, 0, rows);
}

static void pool_frame(const pool_params *p, const co_oprt *rt, const float *x, int64_t rows, int64_t row_stride, float *y)
{
    const int64_t Ho = rt->aux[A_HO], Wo = rt->aux[A_WO], H = rt->aux[A_H], W = rt->aux[A_W];
    if (Ho == 1 && Wo == 1) {
        const spatial_window w = window_of(p, rt, 0, 0);
        if (w.h0 == 0 && w.h1 == H && w.hs == 1 && w.w0 == 0 && w.w1 == W && w.ws == 1) { /* the whole plane */
            pool_global(p, x, rows, row_stride, H * W, y);
            return;
        }
    }
    for (int64_t r = 0; r < rows; r++) {
        const float *plane = x + r * row_stride;
        for (int64_t oh = 0; oh < Ho; oh++)
            for (int64_t ow = 0; ow < Wo; ow++) {
                y[r * Ho * Wo + oh * Wo + ow] =
                    pool_plane(p, rt, plane, window_of(p, rt, oh, ow), p->is_max ? -INFINITY : 0.0f);
            }
    }
}

/* Spatial part of the average divisor at output (oh, ow), as torch computes it. */
static int64_t spatial_count(const pool_params *p, const co_oprt *rt, int64_t oh, int64_t ow)
{
    const int64_t L[2] = {rt->aux[A_H], rt->aux[A_W]}, o[2] = {oh, ow}, O[2] = {rt->aux[A_HO], rt->aux[A_WO]};
    int64_t n = 1;
    for (int i = 0; i < 2; i++) {
        int64_t a, b;
        if (p->adaptive) {
            adaptive_range(o[i], O[i], L[i], &a, &b);
            n *= b - a;
            continue;
        }
        a = o[i] * p->ss[i] - p->ps[i];
        b = a + p->ks[i] < L[i] + p->ps[i] ? a + p->ks[i] : L[i] + p->ps[i];
        if (!p->count_include_pad) {
            a = a < 0 ? 0 : a;
            b = b < L[i] ? b : L[i];
        }
        n *= b - a;
    }
    return n;
}

/* ---- step mode ---- */
typedef struct pool_head { int64_t pos, countdown, started; } pool_head;

/* Steps before the first window a step can emit (co_first_emitted_window). */
static int64_t first_countdown(const co_op *op, int64_t span)
{
    const pool_params *p = op->params;
    const int64_t j0 = co_first_emitted_window(op->lost_in, p->st, p->pt, span);
    return j0 * p->st - p->pt + span - 1 - op->lost_in;
}

static void pool_reset(const co_op *op, const co_oprt *rt, void *state)
{
    pool_head *h = state;
    memset(state, 0, rt->state_bytes);
    h->countdown = first_countdown(op, rt->aux[A_SPAN]);
}

static co_status pool_check_state(const co_op *op, const co_oprt *rt, const void *state)
{
    const pool_params *p = op->params;
    const pool_head *h = state;
    const int64_t span = rt->aux[A_SPAN], fc = first_countdown(op, span);
    if (h->pos < 0 || h->pos >= span || h->countdown < 0 || h->countdown > (fc > p->st - 1 ? fc : p->st - 1) ||
        (h->started != 0 && h->started != 1))
        return co_error(CO_ERR_STATE, "%s: saved state has an out-of-range ring index or phase", op->path);
    return CO_OK;
}

static int pool_step_common(const co_op *op, const co_oprt *rt, void *state, const float *x, float *out, float *scratch,
                            int real)
{
    const pool_params *p = op->params;
    pool_head *h = state;
    const int64_t span = rt->aux[A_SPAN], rows = rt->out.d[0] * rt->out.d[1];
    const int64_t So = rt->aux[A_HO] * rt->aux[A_WO], n = rows * So, Sin = rt->aux[A_H] * rt->aux[A_W];
    uint8_t *is_real = (uint8_t *)(h + 1);
    float *ring = (float *)(is_real + (span + 7) / 8 * 8);
    float *slot = ring + h->pos * n;
    pool_frame(p, rt, x, rows, Sin, slot);
    if (!h->started) { /* start padding: the slots before frame 1 */
        for (int64_t k = 1; k < span; k++) {
            float *v = ring + ((h->pos + span - k) % span) * n;
            if (op->fill == CO_FILL_REPLICATE) memcpy(v, slot, (size_t)n * sizeof(float));
            else for (int64_t i = 0; i < n; i++) v[i] = p->is_max ? -INFINITY : 0.0f;
            is_real[(h->pos + span - k) % span] = 0;
        }
        h->started = 1;
    }
    is_real[h->pos] = (uint8_t)real;
    int emit = h->countdown == 0;
    if (emit) {
        int64_t n_real = 0;
        for (int64_t j = 0; j < p->kt; j++) {
            int64_t sl = (h->pos + span - (p->kt - 1 - j) * p->dt) % span;
            const float *v = ring + sl * n;
            n_real += is_real[sl];
            if (j == 0) memcpy(scratch, v, (size_t)n * sizeof(float));
            else if (p->is_max)
                for (int64_t i = 0; i < n; i++) scratch[i] = pool_max(scratch[i], v[i]);
            else
                for (int64_t i = 0; i < n; i++) scratch[i] += v[i];
        }
        if (p->is_max) {
            memcpy(out, scratch, (size_t)n * sizeof(float));
        } else {
            const int64_t tcount = p->count_include_pad || p->adaptive ? p->kt : (n_real ? n_real : 1);
            const int64_t Wo = rt->aux[A_WO];
            for (int64_t s = 0; s < So; s++) {
                const float div = p->divisor ? (float)p->divisor : (float)(tcount * spatial_count(p, rt, s / Wo, s % Wo));
                for (int64_t r = 0; r < rows; r++) out[r * So + s] = scratch[r * So + s] / div;
            }
        }
    }
    h->pos = (h->pos + 1) % span;
    h->countdown = emit ? p->st - 1 : h->countdown - 1;
    return emit;
}

static int pool_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out, float *scratch)
{
    return pool_step_common(op, rt, state, in[0], out, scratch, 1);
}

static int pool_step_pad(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out, float *scratch)
{
    return pool_step_common(op, rt, state, in[0], out, scratch, 0);
}

/* ---- clip mode: torch's pooling over (T, H, W) ---- */
static co_status pool_clip(const co_op *op, const co_oprt *rt, const co_tshape *in_shapes, const float *const *in,
                           float *out, float *scratch)
{
    const pool_params *p = op->params;
    const int64_t T = in_shapes[0].d[2], To = rt->out.d[2], rows = rt->out.d[0] * rt->out.d[1];
    const int64_t H = rt->aux[A_H], W = rt->aux[A_W], Ho = rt->aux[A_HO], Wo = rt->aux[A_WO];
    for (int64_t r = 0; r < rows; r++) {
        const float *x = in[0] + r * T * H * W;
        for (int64_t ot = 0; ot < To; ot++) {
            int64_t t0, t1, ts = 1, tsz;
            if (p->adaptive) { t0 = 0; t1 = T; tsz = T; }
            else {
                t0 = ot * p->st - p->pt; t1 = t0 + p->dt * (p->kt - 1) + 1; ts = p->dt;
                tsz = (t0 + p->kt < T + p->pt ? t0 + p->kt : T + p->pt) - t0;
                if (!p->count_include_pad) tsz = (t0 + p->kt < T ? t0 + p->kt : T) - (t0 < 0 ? 0 : t0);
            }
            for (int64_t oh = 0; oh < Ho; oh++)
                for (int64_t ow = 0; ow < Wo; ow++) {
                    const spatial_window win = window_of(p, rt, oh, ow);
                    float acc = p->is_max ? -INFINITY : 0.0f;
                    for (int64_t t = t0; t < t1; t += ts)
                        if (t >= 0 && t < T) acc = pool_plane(p, rt, x + t * H * W, win, acc);
                    if (!p->is_max) {
                        float div = p->divisor ? (float)p->divisor : (float)(tsz * spatial_count(p, rt, oh, ow));
                        acc /= div;
                    }
                    out[((r * To + ot) * Ho + oh) * Wo + ow] = acc;
                }
        }
    }
    return CO_OK;
}

static const co_op_class k_pool = {"pool", pool_resolve, pool_reset, pool_check_state, pool_step, pool_clip, NULL,
                                   pool_step_pad};

co_status co_build_pool(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *props)
{
    const char *type = cJSON_GetObjectItemCaseSensitive(node, "type")->valuestring;
    pool_params *p = co_calloc(1, sizeof *p);
    if (!p) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    p->adaptive = strncmp(type, "Adaptive", 8) == 0;
    const char *base = p->adaptive ? type + 8 : type;
    p->is_max = strncmp(base, "Max", 3) == 0;
    const int nd = base[7] - '0'; /* "AvgPool2d" / "MaxPool2d" */
    p->nsd = nd - 1;
    static const char *const k_fills[] = {"zeros", "replicate", "neg_inf", NULL};
    int64_t k[3], s[3], pd[3], dl[3] = {1, 1, 1}, aout[3];
    int fill, ceil_mode = 0, cip = 1, ret_idx = 0;
    int64_t divisor = 0;
    co_status st;
    for (int i = 0; i < 2; i++) { p->ks[i] = 1; p->ss[i] = 1; p->ps[i] = 0; p->ds[i] = 1; p->aout[i] = 1; }
    if (p->adaptive) {
        if ((st = co_get_ints(b, node, path, "output_size", 1, 1, nd, 1, 1 << 16, aout)) ||
            (st = co_get_int(b, node, path, "kernel_size", 1, 1, 1, 1 << 12, &k[0])) ||
            (st = co_get_int(b, node, path, "stride", 0, 1, 1, 1 << 12, &s[0])) ||
            (st = co_get_int(b, node, path, "padding", 0, 0, 0, 1 << 12, &pd[0])) ||
            (st = co_get_int(b, node, path, "dilation", 0, 1, 1, 1 << 12, &dl[0])) ||
            (st = co_get_bool(b, node, path, "return_indices", 0, 0, &ret_idx)))
            goto fail;
        if (aout[0] != 1) {
            st = co_error(CO_ERR_NETWORK, "%s: the temporal output size of a continual adaptive pool must be 1", path);
            goto fail;
        }
        for (int i = 0; i < p->nsd; i++) p->aout[2 - p->nsd + i] = aout[1 + i];
    } else {
        if ((st = co_get_ints(b, node, path, "kernel_size", 1, 1, nd, 1, 1 << 12, k))) goto fail;
        const cJSON *sv = cJSON_GetObjectItemCaseSensitive(node, "stride");
        if ((st = co_get_ints(b, node, path, "stride", 0, 0, nd, 1, 1 << 12, s))) goto fail;
        if (!sv || cJSON_IsNull(sv) || (cJSON_IsArray(sv) && cJSON_GetArraySize(sv) == 0))
            for (int i = 0; i < nd; i++) s[i] = k[i]; /* torch: stride defaults to the kernel */
        if ((st = co_get_ints(b, node, path, "padding", 0, 0, nd, 0, 1 << 12, pd)) ||
            (st = co_get_bool(b, node, path, "ceil_mode", 0, 0, &ceil_mode)))
            goto fail;
        if (p->is_max) {
            if ((st = co_get_ints(b, node, path, "dilation", 0, 1, nd, 1, 1 << 12, dl)) ||
                (st = co_get_bool(b, node, path, "return_indices", 0, 0, &ret_idx)))
                goto fail;
        } else {
            if ((st = co_get_bool(b, node, path, "count_include_pad", 0, 1, &cip)) ||
                (st = co_get_int(b, node, path, "divisor_override", 0, 0, 0, 1 << 30, &divisor)))
                goto fail;
        }
        for (int i = 0; i < p->nsd; i++) {
            int j = 2 - p->nsd + i;
            p->ks[j] = k[1 + i]; p->ss[j] = s[1 + i]; p->ps[j] = pd[1 + i]; p->ds[j] = dl[1 + i];
        }
        if (pd[0] * 2 > k[0]) {
            st = co_error(CO_ERR_NETWORK, "%s: temporal padding %lld must be at most half the kernel %lld", path,
                          (long long)pd[0], (long long)k[0]);
            goto fail;
        }
    }
    if ((st = co_get_choice(b, node, path, "temporal_fill", 0, 0, k_fills, &fill))) goto fail;
    if (ret_idx) {
        st = co_error(CO_ERR_UNSUPPORTED, "%s: return_indices is not supported", path);
        goto fail;
    }
    p->kt = k[0]; p->st = s[0]; p->pt = pd[0]; p->dt = dl[0];
    p->ceil_mode = ceil_mode;
    p->count_include_pad = cip;
    p->divisor = divisor;
    co_op *op = co_emit(b, &k_pool, path, 1, &in, p);
    if (!op) return co_emit_failure(b);
    op->end_pad = (int)p->pt;
    op->lost_out = co_first_emitted_window(op->lost_in, p->st, p->pt, p->dt * (p->kt - 1) + 1);
    op->fill = fill == 1 ? CO_FILL_REPLICATE : (p->is_max || fill == 2) ? CO_FILL_NEG_INF : CO_FILL_ZEROS;
    *out = op->out;
    props->receptive_field = p->dt * (p->kt - 1) + 1;
    props->stride = p->st;
    props->padding = p->pt;
    props->delay = props->receptive_field - 1 - p->pt;
    return CO_OK;
fail:
    co_free(p);
    return st;
}

/* ---- this family's module types (the registry, build.h); variant unused: the build reads "type" */
static const co_module_reg k_pool_modules[] = {
    {"AvgPool1d", co_build_pool, 0},         {"AvgPool2d", co_build_pool, 0},
    {"AvgPool3d", co_build_pool, 0},         {"MaxPool1d", co_build_pool, 0},
    {"MaxPool2d", co_build_pool, 0},         {"MaxPool3d", co_build_pool, 0},
    {"AdaptiveAvgPool2d", co_build_pool, 0}, {"AdaptiveAvgPool3d", co_build_pool, 0},
    {"AdaptiveMaxPool2d", co_build_pool, 0}, {"AdaptiveMaxPool3d", co_build_pool, 0},
};
CO_MODULE_LIST(co_pool_modules, k_pool_modules)
