/*
 * conv.c — continual Conv1d / Conv2d / Conv3d.
 *
 * Step mode keeps a ring of k accumulators, one per output window still open: when frame x_n
 * arrives, its spatial convolution with temporal tap j is added to the window that will end at
 * step n + (k-1-j). The window ending now is complete: it is emitted (plus bias) if the phase
 * says this step has an output, then cleared for reuse. That is k frames of state instead of
 * the reference's (k-1)^2 partial products, and one GEMM per tap.
 *
 * Start padding is the initial content of the ring: zeros, or (temporal_fill = replicate) the
 * contributions of k-1 virtual copies of the first frame. End padding is done by the executor,
 * which feeds `padding` fill frames when flushing.
 *
 * Clip mode is torch.nn's convolution: the same per-frame tap products, scattered into the
 * output frames they belong to, with temporal zero or replicate padding per padding_mode.
 */
#include <string.h>

#include "core/build.h"
#include "kernels/gemm.h"

typedef struct conv_params {
    int nsd;                 /* spatial dims: 0 (Conv1d), 1 (Conv2d), 2 (Conv3d) */
    int64_t cin, cout, groups;
    int64_t kt, st, pt;      /* temporal kernel, stride, padding */
    int64_t ks[2], ss[2], ps[2], ds[2]; /* spatial; unused dims are 1/1/0/1 */
    int replicate_pad;       /* padding_mode == replicate (spatial, and temporal in clip mode) */
    int64_t kcol;            /* (cin/groups) * ks[0] * ks[1]: GEMM inner size */
    const float *bias;       /* model-owned, or NULL */
    float *w;                /* [kt][cout][kcol], points just past this struct */
} conv_params;

/* rt->aux layout */
enum { A_H, A_W, A_HO, A_WO, A_SO, A_DIRECT };

/* ---- im2col of one group of one frame: (kcol x So), rows `ldcol` apart ---- */
static void im2col_ld(const conv_params *p, const co_oprt *rt, const float *src, int64_t chan_stride, int64_t cin_g,
                      float *col, int64_t ldcol)
{
    const int64_t H = rt->aux[A_H], W = rt->aux[A_W], Ho = rt->aux[A_HO], Wo = rt->aux[A_WO];
    int64_t row = 0;
    for (int64_t c = 0; c < cin_g; c++) {
        const float *plane = src + c * chan_stride;
        for (int64_t kh = 0; kh < p->ks[0]; kh++)
            for (int64_t kw = 0; kw < p->ks[1]; kw++, row++) {
                float *dst = col + row * ldcol;
                for (int64_t oh = 0; oh < Ho; oh++) {
                    int64_t ih = oh * p->ss[0] - p->ps[0] + kh * p->ds[0];
                    int hin = ih >= 0 && ih < H;
                    if (!hin && p->replicate_pad) { ih = ih < 0 ? 0 : H - 1; hin = 1; }
                    for (int64_t ow = 0; ow < Wo; ow++) {
                        int64_t iw = ow * p->ss[1] - p->ps[1] + kw * p->ds[1];
                        int win = iw >= 0 && iw < W;
                        if (!win && p->replicate_pad) { iw = iw < 0 ? 0 : W - 1; win = 1; }
                        dst[oh * Wo + ow] = (hin && win) ? plane[ih * W + iw] : 0.0f;
                    }
                }
            }
    }
}

static void im2col(const conv_params *p, const co_oprt *rt, const float *src, int64_t chan_stride, int64_t cin_g,
                   float *col)
{
    im2col_ld(p, rt, src, chan_stride, cin_g, col, rt->aux[A_SO]);
}

/* Depthwise (one input channel per group, one output per group): a direct loop, since a GEMM
 * per channel of a 1 x k*k matrix costs more in calls than in arithmetic. */
static void conv_taps_depthwise(const conv_params *p, const co_oprt *rt, int64_t batch, const float *src,
                                int64_t src_bstride, int64_t chan_stride, float *const *dst, int64_t dst_bstride, int64_t ldc)
{
    const int64_t H = rt->aux[A_H], W = rt->aux[A_W], Ho = rt->aux[A_HO], Wo = rt->aux[A_WO];
    for (int64_t b = 0; b < batch; b++)
        for (int64_t c = 0; c < p->cout; c++) {
            const float *plane = src + b * src_bstride + c * chan_stride;
            for (int64_t j = 0; j < p->kt; j++) {
                if (!dst[j]) continue;
                float *o = dst[j] + b * dst_bstride + c * ldc;
                const float *w = p->w + (j * p->cout + c) * p->kcol;
                for (int64_t kh = 0; kh < p->ks[0]; kh++)
                    for (int64_t kw = 0; kw < p->ks[1]; kw++) {
                        const float wv = w[kh * p->ks[1] + kw];
                        for (int64_t oh = 0; oh < Ho; oh++) {
                            int64_t ih = oh * p->ss[0] - p->ps[0] + kh * p->ds[0];
                            if (ih < 0 || ih >= H) {
                                if (!p->replicate_pad) continue;
                                ih = ih < 0 ? 0 : H - 1;
                            }
                            const float *row = plane + ih * W;
                            float *orow = o + oh * Wo;
                            const int64_t off = kw * p->ds[1] - p->ps[1];
                            /* columns whose input lies inside the row: a plain strided loop */
                            int64_t lo = off >= 0 ? 0 : (-off + p->ss[1] - 1) / p->ss[1];
                            int64_t hi = W - 1 - off < 0 ? -1 : (W - 1 - off) / p->ss[1];
                            if (hi > Wo - 1) hi = Wo - 1;
                            for (int64_t ow = lo; ow <= hi; ow++) orow[ow] += wv * row[ow * p->ss[1] + off];
                            if (p->replicate_pad)
                                for (int64_t ow = 0; ow < Wo; ow++) {
                                    if (ow >= lo && ow <= hi) continue;
                                    int64_t iw = ow * p->ss[1] + off;
                                    orow[ow] += wv * row[iw < 0 ? 0 : W - 1];
                                }
                        }
                    }
            }
        }
}

/* dst[j] (for taps j with dst[j] != NULL) += W_j * frame, for every batch item and group.
 * `src` is batch item 0's frame; items are `src_bstride` apart, channels `chan_stride` apart.
 * dst[j] is batch item 0's output frame; items are `dst_bstride` apart, rows `ldc` apart. */
static void conv_taps(const conv_params *p, const co_oprt *rt, int64_t batch, const float *src, int64_t src_bstride,
                      int64_t chan_stride, float *const *dst, int64_t dst_bstride, int64_t ldc, float *scratch)
{
    const int64_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups, So = rt->aux[A_SO];
    if (p->groups == p->cin && p->groups == p->cout && !rt->aux[A_DIRECT]) {
        conv_taps_depthwise(p, rt, batch, src, src_bstride, chan_stride, dst, dst_bstride, ldc);
        return;
    }
    if (So == 1 && chan_stride == 1 && ldc == 1 && p->groups == 1 && rt->aux[A_DIRECT]) {
        /* frames are feature vectors (Conv1d steps): one product per tap for the whole batch. Not
         * for a one-frame clip, whose input channels are also 1 apart but whose outputs are not */
        for (int64_t j = 0; j < p->kt; j++)
            if (dst[j])
                co_gemm_nt(batch, p->cout, p->kcol, src, src_bstride, p->w + j * p->cout * p->kcol, p->kcol, 1.0f, dst[j],
                           dst_bstride);
        return;
    }
    for (int64_t b = 0; b < batch; b++)
        for (int64_t g = 0; g < p->groups; g++) {
            const float *gsrc = src + b * src_bstride + g * cin_g * chan_stride;
            const float *col;
            int64_t ldb;
            if (rt->aux[A_DIRECT]) { /* 1x1 spatial kernel, stride 1, no padding: the frame is the column matrix */
                col = gsrc;
                ldb = chan_stride;
            } else {
                im2col(p, rt, gsrc, chan_stride, cin_g, scratch);
                col = scratch;
                ldb = So;
            }
            for (int64_t j = 0; j < p->kt; j++) {
                if (!dst[j]) continue;
                const float *wj = p->w + (j * p->cout + g * cout_g) * p->kcol;
                co_gemm_nn(cout_g, So, p->kcol, wj, p->kcol, col, ldb, 1.0f, dst[j] + b * dst_bstride + g * cout_g * ldc,
                           ldc);
            }
        }
}

/* ---- step mode: the frames of every batch item (and of every stream, step_multi) times ALL
 * taps as one product, [kt*cout x kcol] x [kcol x items*So] (the weights are stored tap-major,
 * so that is one matrix), in chunks of at most CONV_COLS columns; tap j's slice of each item is
 * then added to the window it belongs to, in that item's own ring at its own phase. Depthwise
 * convolutions keep their direct loop (conv_taps). */
enum { CONV_COLS = 512 };

/* state layout: int64 pos, countdown, started; then the float ring */
typedef struct conv_state_head { int64_t pos, countdown, started; } conv_state_head;

static int conv_depthwise(const conv_params *p, const co_oprt *rt)
{
    return p->groups == p->cin && p->groups == p->cout && !rt->aux[A_DIRECT];
}

/* Frames are feature vectors (Conv1d): items are the rows of X, the product is X W^T. */
static int conv_vector_form(const conv_params *p, const co_oprt *rt)
{
    return rt->aux[A_SO] == 1 && rt->aux[A_H] * rt->aux[A_W] == 1 && p->groups == 1 && rt->aux[A_DIRECT];
}

static int64_t conv_chunk_items(const co_oprt *rt, int64_t items)
{
    int64_t c = CONV_COLS / rt->aux[A_SO];
    if (c < 1) c = 1;
    return c < items ? c : items;
}

/* Scratch floats of one step over `items` frames (batch items of all streams). */
static size_t conv_step_scratch(const conv_params *p, const co_oprt *rt, int64_t items)
{
    const int64_t ch = conv_chunk_items(rt, items);
    if (conv_depthwise(p, rt)) return 0;
    if (conv_vector_form(p, rt)) return (size_t)(ch * (p->cin + p->kt * p->cout));
    return (size_t)(ch * rt->aux[A_SO] * (p->kcol + p->kt * p->cout));
}

/* dst (cout x So, contiguous) += rows of P (row c at P + c * ld) */
static void conv_add_tap(const conv_params *p, int64_t So, float *dst, const float *P, int64_t ld)
{
    if (So == 1 && ld == 1) { /* feature vectors: one contiguous row */
        for (int64_t c = 0; c < p->cout; c++) dst[c] += P[c];
        return;
    }
    for (int64_t c = 0; c < p->cout; c++) {
        float *d = dst + c * So;
        const float *s = P + c * ld;
        for (int64_t i = 0; i < So; i++) d[i] += s[i];
    }
}

/* Adds every tap of the frames of n streams (stream i's B items at src[i]) to their windows:
 * states[i]'s ring at its phase, or (states NULL: k = 1, no ring) out[i]. A stream whose
 * replicate start padding is pending gets the virtual first frames too. Phases are not moved. */
static void conv_accumulate(const co_op *op, const co_oprt *rt, int64_t n, const float *const *src, void *const *states,
                            float *const *out, float *scratch)
{
    const conv_params *p = op->params;
    const int64_t B = rt->out.d[0], So = rt->aux[A_SO], S_in = rt->aux[A_H] * rt->aux[A_W];
    const int64_t kt = p->kt, M = kt * p->cout, win = p->cout * So, slot = B * win;
    const int64_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups, fstride = p->cin * S_in;
    const int64_t items = n * B, chunk = conv_chunk_items(rt, items);
    const int vec = conv_vector_form(p, rt), direct = (int)rt->aux[A_DIRECT];
    const int replicate = states && op->fill == CO_FILL_REPLICATE;
    float *col = scratch;
    float *prod = scratch + (vec ? chunk * p->cin : chunk * So * p->kcol);
    for (int64_t f0 = 0; f0 < items; f0 += chunk) {
        const int64_t nf = items - f0 < chunk ? items - f0 : chunk, N = nf * So;
        if (vec) {
            const float *X = col;
            if (f0 / B == (f0 + nf - 1) / B) {
                X = src[f0 / B] + (f0 % B) * fstride; /* one stream's items are already rows */
            } else {
                for (int64_t f = 0; f < nf; f++)
                    memcpy(col + f * p->cin, src[(f0 + f) / B] + ((f0 + f) % B) * fstride, (size_t)p->cin * sizeof(float));
            }
            co_gemm_nt(nf, M, p->cin, X, p->cin, p->w, p->kcol, 0.0f, prod, M);
        } else {
            for (int64_t g = 0; g < p->groups; g++) {
                const float *cm = col;
                int64_t ldb = N;
                if (nf == 1 && direct) { /* 1x1 spatial kernel, stride 1, no padding: the frame is the column matrix */
                    cm = src[f0 / B] + (f0 % B) * fstride + g * cin_g * S_in;
                    ldb = S_in;
                } else {
                    for (int64_t f = 0; f < nf; f++) {
                        const float *gsrc = src[(f0 + f) / B] + ((f0 + f) % B) * fstride + g * cin_g * S_in;
                        if (direct)
                            for (int64_t c = 0; c < cin_g; c++)
                                memcpy(col + c * N + f * So, gsrc + c * S_in, (size_t)So * sizeof(float));
                        else
                            im2col_ld(p, rt, gsrc, S_in, cin_g, col + f * So, N);
                    }
                }
                if (p->groups == 1)
                    co_gemm_nn(M, N, p->kcol, p->w, p->kcol, cm, ldb, 0.0f, prod, N);
                else
                    for (int64_t j = 0; j < kt; j++) {
                        const int64_t r = j * p->cout + g * cout_g;
                        co_gemm_nn(cout_g, N, p->kcol, p->w + r * p->kcol, p->kcol, cm, ldb, 0.0f, prod + r * N, N);
                    }
            }
        }
        /* row r = j * cout + c of item f: at P + r * ld */
        const int64_t ld = vec ? 1 : N;
        for (int64_t f = 0; f < nf; f++) {
            const int64_t i = (f0 + f) / B, b = (f0 + f) % B;
            conv_state_head *h = states ? states[i] : NULL;
            float *ring = h ? (float *)(h + 1) : out[i];
            const int64_t pos = h ? h->pos : 0;
            const float *P = vec ? prod + f * M : prod + f * So;
            if (replicate && !h->started)
                /* window ending at step m (1..k-1) already holds virtual frames 2-k..0, all equal to x_1:
                 * taps 0..k-1-m of it */
                for (int64_t m = 1; m < kt; m++) {
                    float *d = ring + ((pos + m - 1) % kt) * slot + b * win;
                    for (int64_t j = 0; j <= kt - 1 - m; j++) conv_add_tap(p, So, d, P + j * p->cout * ld, ld);
                }
            /* tap j of this frame belongs to the window ending k-1-j steps from now */
            for (int64_t j = 0; j < kt; j++)
                conv_add_tap(p, So, ring + ((pos + kt - 1 - j) % kt) * slot + b * win, P + j * p->cout * ld, ld);
        }
    }
}

static co_status conv_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    const conv_params *p = op->params;
    const int t = in->has_time;
    char buf[96];
    if (in->ndim != 2 + t + p->nsd || in->d[1] != p->cin)
        return co_error(CO_ERR_SHAPE, "%s (Conv%dd): expected %s (B, %lld%s), got %s", op->path, p->nsd + 1,
                        t ? "a clip" : "a frame", (long long)p->cin,
                        p->nsd == 0 ? (t ? ", T" : "") : p->nsd == 1 ? (t ? ", T, L" : ", L") : (t ? ", T, H, W" : ", H, W"),
                        co_tshape_str(in, buf, sizeof buf));
    int64_t sp[2] = {1, 1}, so[2] = {1, 1};
    for (int i = 0; i < p->nsd; i++) sp[2 - p->nsd + i] = in->d[2 + t + i];
    for (int i = 0; i < 2; i++) {
        int64_t span = p->ds[i] * (p->ks[i] - 1) + 1;
        if (sp[i] + 2 * p->ps[i] < span)
            return co_error(CO_ERR_SHAPE, "%s: spatial size %lld (+2x padding %lld) is smaller than the kernel span %lld",
                            op->path, (long long)sp[i], (long long)p->ps[i], (long long)span);
        so[i] = (sp[i] + 2 * p->ps[i] - span) / p->ss[i] + 1;
    }
    rt->aux[A_H] = sp[0]; rt->aux[A_W] = sp[1]; rt->aux[A_HO] = so[0]; rt->aux[A_WO] = so[1];
    rt->aux[A_SO] = so[0] * so[1];
    rt->aux[A_DIRECT] = p->ks[0] == 1 && p->ks[1] == 1 && p->ss[0] == 1 && p->ss[1] == 1 && p->ps[0] == 0 && p->ps[1] == 0;
    rt->out = *in;
    rt->out.d[1] = p->cout;
    for (int i = 0; i < p->nsd; i++) rt->out.d[2 + t + i] = so[2 - p->nsd + i];
    int64_t T_out = 1;
    if (t) {
        int64_t T = in->d[2];
        if (T + 2 * p->pt < p->kt)
            return co_error(CO_ERR_SHAPE, "%s: clip of %lld frames (+2x padding %lld) is shorter than the kernel (%lld)",
                            op->path, (long long)T, (long long)p->pt, (long long)p->kt);
        T_out = (T + 2 * p->pt - p->kt) / p->st + 1;
        rt->out.d[2] = T_out;
    }
    rt->scratch_floats = t ? (rt->aux[A_DIRECT] ? 0 : (size_t)(p->kcol * rt->aux[A_SO])) : conv_step_scratch(p, rt, in->d[0]);
    const int64_t B = in->d[0];
    if (t) {
        rt->macs = B * T_out * p->kt * p->cout * p->kcol * rt->aux[A_SO];
        rt->state_bytes = 0;
    } else {
        rt->macs = B * p->kt * p->cout * p->kcol * rt->aux[A_SO];
        /* ring of kt windows + pos, countdown, started */
        rt->state_bytes = (size_t)(p->kt * B * p->cout * rt->aux[A_SO]) * sizeof(float) + 3 * sizeof(int64_t);
    }
    return CO_OK;
}


/* Steps before the first window a step can emit (windows ending before the first frame, or
 * needing frames the input stream lost, cannot be: co_first_emitted_window). */
static int64_t first_countdown(const co_op *op)
{
    const conv_params *p = op->params;
    const int64_t j0 = co_first_emitted_window(op->lost_in, p->st, p->pt, p->kt);
    return j0 * p->st - p->pt + p->kt - 1 - op->lost_in;
}

static void conv_reset(const co_op *op, const co_oprt *rt, void *state)
{
    conv_state_head *h = state;
    h->pos = 0;
    h->countdown = first_countdown(op);
    h->started = 0;
    memset(h + 1, 0, rt->state_bytes - sizeof *h);
}

static co_status conv_check_state(const co_op *op, const co_oprt *rt, const void *state)
{
    const conv_params *p = op->params;
    const conv_state_head *h = state;
    int64_t max_cd = p->st - 1 > first_countdown(op) ? p->st - 1 : first_countdown(op);
    if (h->pos < 0 || h->pos >= p->kt || h->countdown < 0 || h->countdown > max_cd || (h->started != 0 && h->started != 1))
        return co_error(CO_ERR_STATE, "%s: saved state has out-of-range ring index or phase", op->path);
    return CO_OK;
}

/* After conv_accumulate: emits the window ending now (plus bias) if the phase says so, clears
 * it for reuse and moves the phase. */
static int conv_finish(const co_op *op, const co_oprt *rt, void *state, float *out)
{
    const conv_params *p = op->params;
    conv_state_head *h = state;
    const int64_t B = rt->out.d[0], So = rt->aux[A_SO], win = p->cout * So, slot = B * win;
    float *ring = (float *)(h + 1);
    h->started = 1;
    float *done = ring + h->pos * slot;
    int emit = h->countdown == 0;
    if (emit) {
        for (int64_t b = 0; b < B; b++)
            for (int64_t c = 0; c < p->cout; c++) {
                const float bias = p->bias ? p->bias[c] : 0.0f;
                const float *s = done + b * win + c * So;
                float *o = out + b * win + c * So;
                for (int64_t i = 0; i < So; i++) o[i] = s[i] + bias;
            }
    }
    memset(done, 0, (size_t)slot * sizeof(float));
    h->pos = (h->pos + 1) % p->kt;
    h->countdown = emit ? p->st - 1 : h->countdown - 1;
    return emit;
}

/* Depthwise: the direct loop per tap (conv_taps). */
static int conv_step_depthwise(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out,
                               float *scratch)
{
    const conv_params *p = op->params;
    conv_state_head *h = state;
    const int64_t B = rt->out.d[0], So = rt->aux[A_SO], win = p->cout * So, slot = B * win;
    const int64_t S_in = rt->aux[A_H] * rt->aux[A_W];
    float *ring = (float *)(h + 1);
    float *d[64]; /* the builder bounds kt to 64 */

    if (!h->started) {
        if (op->fill == CO_FILL_REPLICATE) {
            /* window ending at step n (1..k-1) already holds virtual frames 2-k..0, all equal to x_1:
             * taps 0..k-1-n of it */
            for (int64_t j = 0; j < p->kt; j++) d[j] = NULL;
            for (int64_t n = 1; n < p->kt; n++) {
                for (int64_t j = 0; j < p->kt; j++) d[j] = j <= p->kt - 1 - n ? ring + ((h->pos + n - 1) % p->kt) * slot : NULL;
                conv_taps(p, rt, B, in[0], p->cin * S_in, S_in, d, win, So, scratch);
            }
        }
        h->started = 1;
    }
    /* tap j of this frame belongs to the window ending k-1-j steps from now */
    for (int64_t j = 0; j < p->kt; j++) d[j] = ring + ((h->pos + p->kt - 1 - j) % p->kt) * slot;
    conv_taps(p, rt, B, in[0], p->cin * S_in, S_in, d, win, So, scratch);
    return conv_finish(op, rt, state, out);
}

static int conv_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out, float *scratch)
{
    if (conv_depthwise(op->params, rt)) return conv_step_depthwise(op, rt, state, in, out, scratch);
    void *states[1] = {state};
    conv_accumulate(op, rt, 1, in, states, &out, scratch);
    return conv_finish(op, rt, state, out);
}

/* n streams: one product for all their frames (in[i]: stream i's frame). */
static void conv_step_multi(const co_op *op, const co_oprt *rt, int n, void *const *states, const float *const *in,
                            float *const *out, int *produced, float *scratch)
{
    if (conv_depthwise(op->params, rt)) {
        for (int i = 0; i < n; i++) produced[i] = conv_step_depthwise(op, rt, states[i], in + i, out[i], scratch);
        return;
    }
    conv_accumulate(op, rt, n, in, states, out, scratch);
    for (int i = 0; i < n; i++) produced[i] = conv_finish(op, rt, states[i], out[i]);
}

static void conv_add_bias(const conv_params *p, int64_t B, int64_t So, float *out)
{
    const int64_t win = p->cout * So;
    if (p->bias)
        for (int64_t b = 0; b < B; b++)
            for (int64_t c = 0; c < p->cout; c++)
                for (int64_t i = 0; i < So; i++) out[b * win + c * So + i] += p->bias[c];
}

/* Stateless case (k=1, s=1, p=0): one product per frame, no ring. */
static int conv_step_stateless(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out,
                               float *scratch)
{
    const conv_params *p = op->params;
    const int64_t B = rt->out.d[0], So = rt->aux[A_SO], win = p->cout * So;
    const int64_t S_in = rt->aux[A_H] * rt->aux[A_W];
    memset(out, 0, (size_t)(B * win) * sizeof(float));
    if (conv_depthwise(p, rt)) {
        float *d[1] = {out};
        conv_taps(p, rt, B, in[0], p->cin * S_in, S_in, d, win, So, scratch);
    } else {
        conv_accumulate(op, rt, 1, in, NULL, &out, scratch);
    }
    conv_add_bias(p, B, So, out);
    return 1;
}

static void conv_step_multi_stateless(const co_op *op, const co_oprt *rt, int n, void *const *states,
                                      const float *const *in, float *const *out, int *produced, float *scratch)
{
    const conv_params *p = op->params;
    const int64_t B = rt->out.d[0], So = rt->aux[A_SO], win = p->cout * So;
    if (conv_depthwise(p, rt)) {
        for (int i = 0; i < n; i++) produced[i] = conv_step_stateless(op, rt, NULL, in + i, out[i], scratch);
        return;
    }
    for (int i = 0; i < n; i++) memset(out[i], 0, (size_t)(B * win) * sizeof(float));
    conv_accumulate(op, rt, n, in, NULL, out, scratch);
    for (int i = 0; i < n; i++) {
        conv_add_bias(p, B, So, out[i]);
        produced[i] = 1;
    }
}

static co_status conv_clip(const co_op *op, const co_oprt *rt, const co_tshape *in_shapes, const float *const *in,
                           float *out, float *scratch)
{
    const conv_params *p = op->params;
    const int64_t B = in_shapes[0].d[0], T = in_shapes[0].d[2], T_out = rt->out.d[2];
    const int64_t S_in = rt->aux[A_H] * rt->aux[A_W], So = rt->aux[A_SO];
    memset(out, 0, (size_t)co_tshape_numel(&rt->out) * sizeof(float));
    float *dst[64];
    for (int64_t tv = -p->pt; tv < T + p->pt; tv++) {
        int64_t src_t = tv;
        if (tv < 0 || tv >= T) {
            if (!p->replicate_pad) continue; /* zero padding contributes nothing */
            src_t = tv < 0 ? 0 : T - 1;
        }
        int any = 0;
        for (int64_t j = 0; j < p->kt; j++) {
            int64_t num = tv + p->pt - j; /* = o * stride for the output o this tap feeds */
            dst[j] = NULL;
            if (num < 0 || num % p->st) continue;
            int64_t o = num / p->st;
            if (o >= T_out) continue;
            dst[j] = out + o * So;
            any = 1;
        }
        if (any)
            conv_taps(p, rt, B, in[0] + src_t * S_in, p->cin * T * S_in, T * S_in, dst, p->cout * T_out * So, T_out * So,
                      scratch);
    }
    if (p->bias)
        for (int64_t b = 0; b < B; b++)
            for (int64_t c = 0; c < p->cout; c++) {
                float *o = out + (b * p->cout + c) * T_out * So;
                for (int64_t i = 0; i < T_out * So; i++) o[i] += p->bias[c];
            }
    return CO_OK;
}

static const co_op_class k_conv = {"conv", conv_resolve, conv_reset, conv_check_state, conv_step, conv_clip, NULL,
                                   .step_multi = conv_step_multi};
static const co_op_class k_conv_stateless = {"conv", conv_resolve, NULL, NULL, conv_step_stateless, conv_clip, NULL,
                                             .step_multi = conv_step_multi_stateless};

co_status co_build_conv(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *props)
{
    const char *type = cJSON_GetObjectItemCaseSensitive(node, "type")->valuestring;
    const int nd = type[4] - '0'; /* "Conv1d" .. "Conv3d" */
    static const char *const k_pad_modes[] = {"zeros", "replicate", NULL};
    static const char *const k_fills[] = {"zeros", "replicate", NULL};
    int64_t cin, cout, groups, k[3], s[3], pd[3], dl[3];
    int has_bias, pad_mode, fill;
    co_status st;
    if ((st = co_get_int(b, node, path, "in_channels", 1, 0, 1, 1 << 20, &cin)) ||
        (st = co_get_int(b, node, path, "out_channels", 1, 0, 1, 1 << 20, &cout)) ||
        (st = co_get_ints(b, node, path, "kernel_size", 1, 0, nd, 1, 1 << 12, k)) ||
        (st = co_get_ints(b, node, path, "stride", 0, 1, nd, 1, 1 << 12, s)) ||
        (st = co_get_ints(b, node, path, "padding", 0, 0, nd, 0, 1 << 12, pd)) ||
        (st = co_get_ints(b, node, path, "dilation", 0, 1, nd, 1, 1 << 12, dl)) ||
        (st = co_get_int(b, node, path, "groups", 0, 1, 1, 1 << 20, &groups)) ||
        (st = co_get_bool(b, node, path, "bias", 0, 1, &has_bias)) ||
        (st = co_get_choice(b, node, path, "padding_mode", 0, 0, k_pad_modes, &pad_mode)) ||
        (st = co_get_choice(b, node, path, "temporal_fill", 0, 0, k_fills, &fill)))
        return st;
    if (cin % groups || cout % groups)
        return co_error(CO_ERR_NETWORK, "%s: groups=%lld must divide in_channels=%lld and out_channels=%lld", path,
                        (long long)groups, (long long)cin, (long long)cout);
    if (dl[0] != 1)
        return co_error(CO_ERR_NETWORK, "%s: temporal dilation %lld is not supported by continual convolutions", path,
                        (long long)dl[0]);
    if (k[0] > 64)
        return co_error(CO_ERR_NETWORK, "%s: temporal kernel %lld exceeds the supported 64", path, (long long)k[0]);
    if (pd[0] > 4 * k[0] + 64)
        return co_error(CO_ERR_NETWORK, "%s: temporal padding %lld is out of range for kernel %lld", path,
                        (long long)pd[0], (long long)k[0]);
    int64_t kcol = cin / groups;
    for (int i = 1; i < nd; i++) {
        kcol *= k[i];
        if (kcol > (int64_t)1 << 28) return co_error(CO_ERR_NETWORK, "%s: kernel is too large", path);
    }
    int64_t wshape[5] = {cout, cin / groups, k[0], nd > 1 ? k[1] : 1, nd > 2 ? k[2] : 1};
    const float *w = NULL, *bias = NULL;
    if ((st = co_take_tensor(b, path, "weight", 2 + nd, wshape, 1, &w))) return st;
    if (has_bias && (st = co_take_tensor(b, path, "bias", 1, &cout, 1, &bias))) return st;
    size_t wfloats = (size_t)(k[0] * cout * kcol);
    conv_params *p = co_alloc(sizeof *p + wfloats * sizeof(float));
    if (!p) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory for weights", path);
    memset(p, 0, sizeof *p);
    p->nsd = nd - 1;
    p->cin = cin; p->cout = cout; p->groups = groups;
    p->kt = k[0]; p->st = s[0]; p->pt = pd[0];
    for (int i = 0; i < 2; i++) { p->ks[i] = 1; p->ss[i] = 1; p->ps[i] = 0; p->ds[i] = 1; }
    for (int i = 0; i < p->nsd; i++) {
        int j = 2 - p->nsd + i;
        p->ks[j] = k[1 + i]; p->ss[j] = s[1 + i]; p->ps[j] = pd[1 + i]; p->ds[j] = dl[1 + i];
    }
    p->replicate_pad = pad_mode == 1;
    p->kcol = kcol;
    p->bias = bias;
    p->w = (float *)(p + 1);
    /* torch (cout, cin/g, kt, *ks) -> per tap (kt, cout, cin/g * ks) */
    const int64_t ksp = kcol / (cin / groups);
    for (int64_t o = 0; o < cout; o++)
        for (int64_t c = 0; c < cin / groups; c++)
            for (int64_t j = 0; j < k[0]; j++)
                memcpy(p->w + (j * cout + o) * kcol + c * ksp, w + ((o * (cin / groups) + c) * k[0] + j) * ksp,
                       (size_t)ksp * sizeof(float));
    const int stateless = k[0] == 1 && s[0] == 1 && pd[0] == 0;
    co_op *op = co_emit(b, stateless ? &k_conv_stateless : &k_conv, path, 1, &in, p);
    if (!op) return co_emit_failure(b);
    op->end_pad = (int)pd[0];
    op->lost_out = co_first_emitted_window(op->lost_in, s[0], pd[0], k[0]);
    op->fill = fill == 1 ? CO_FILL_REPLICATE : CO_FILL_ZEROS;
    *out = op->out;
    props->receptive_field = k[0];
    props->stride = s[0];
    props->padding = pd[0];
    props->delay = k[0] - 1 - pd[0];
    return CO_OK;
}

/* ---- this family's module types (the registry, build.h); variant unused: the build reads "type" */
static const co_module_reg k_conv_modules[] = {
    {"Conv1d", co_build_conv, 0},
    {"Conv2d", co_build_conv, 0},
    {"Conv3d", co_build_conv, 0},
};
CO_MODULE_LIST(co_conv_modules, k_conv_modules)
