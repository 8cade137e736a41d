/*
 * conv.c — continual Conv1d / Conv2d / Conv3d.
 *
 * Step mode keeps a ring of k accumulators, one per output window still open: when frame x_n
 * arrives, its spatial convolution with temporal tap j is added to the window that will end at
 * step n + (k-1-j). The window ending now is complete: it is emitted (plus bias) if the phase
 * says this step has an output, then cleared for reuse. That is k frames of state instead of
 * the reference's (k-1)^2 partial products, and one GEMM for all taps.
 *
 * Start padding is the initial content of the ring: zeros, or (temporal_fill = replicate) the
 * contributions of k-1 virtual copies of the first frame. End padding is done by the executor,
 * which feeds `padding` fill frames when flushing.
 *
 * Clip mode is torch.nn's convolution over the whole clip (docs/kernels.md, "The clip path"):
 * per temporal tap one product of the tap's weights with the columns of every output frame it
 * feeds (im2col of a tile of frames, or the clip itself for 1x1 kernels), accumulated onto the
 * bias; temporal zero or replicate padding per padding_mode. Depthwise convolutions (one input
 * channel per group) use the tap kernel of kernels/conv_dw.h in both modes.
 */
#include <string.h>

#include "core/build.h"
#include "core/fuse.h"
#include "kernels/conv_dw.h"
#include "kernels/gemm.h"
#include "kernels/threadpool.h"
#include "kernels/weights.h"
#include "kernels/winograd.h"

typedef struct conv_params {
    int nsd;                 /* spatial dims: 0 (Conv1d), 1 (Conv2d), 2 (Conv3d) */
    int64_t cin, cout, groups;
    int64_t kt, st, pt;      /* temporal kernel, stride, padding */
    int64_t ks[2], ss[2], ps[2], ds[2]; /* spatial; unused dims are 1/1/0/1 */
    int replicate_pad;       /* padding_mode == replicate (spatial, and temporal in clip mode) */
    int64_t kcol;            /* (cin/groups) * ks[0] * ks[1]: GEMM inner size */
    const float *bias;       /* model-owned, or NULL; after folding a BatchNorm, just past w */
    float *w;                /* [kt][cout][kcol], points just past this struct */
    /* Winograd F(4x4, 3x3) (conv_winograd_eligible): for each of the 36 tile elements e, U_e
     * (rows tap-major j * cout + o, columns cin) packed as op(B) of co_gemm_packed (K = cin,
     * N = kt * cout), wino_bytes apart; NULL when the conv is not eligible. Same allocation. */
    unsigned char *wino;
    size_t wino_bytes;
    /* Conv1d with groups 1 (the vector form of a step): w (kt * cout x cin) packed as op(B) of
     * co_gemm_packed, used by every step whatever its item count — at batch > 1 the panels run
     * at about twice the small-M dots on the unpacked rows, and one path for all counts keeps a
     * stream stepped alone bit-identical to it in a multi-stream call; NULL otherwise. Same
     * allocation, after the Winograd weights. */
    unsigned char *wpack;
    size_t wpack_bytes;
    co_fused_act act;        /* an activation fused into the output pass (src/core/fuse.c) */
} conv_params;

/* rt->aux layout */
enum { A_H, A_W, A_HO, A_WO, A_SO, A_DIRECT, A_WINO };

/* Clip mode: floats of im2col columns per tile of output frames (bounds the scratch; a tile has
 * at least kt - 1 output frames, so that at temporal stride 1 the frames its taps share are
 * built at most twice). Depthwise: output channels per input channel up to which the tap kernel is
 * used instead of a product (more outputs per input make the product the faster). Tap kernel
 * calls take at most CONV_DW_TAPS taps at once. A depthwise step is cut into at most
 * CONV_DW_TASKS tasks (each with its own padded plane of scratch) of at least
 * CONV_DW_TASK_MIN_MACS, and only from CONV_DW_PARALLEL_MIN_MACS (below, a hand-off to the pool
 * costs more than it saves; docs/kernels.md, "Depthwise steps"). The builder bounds kt to
 * CONV_MAX_KT. */
enum { CONV_CLIP_COLUMN_FLOATS = 1 << 18, CONV_DW_MAX_MULTIPLIER = 4, CONV_DW_TAPS = 64, CONV_MAX_KT = 64 };
enum { CONV_DW_TASKS = 16, CONV_DW_TASK_MIN_MACS = 1 << 15, CONV_DW_PARALLEL_MIN_MACS = 1 << 17 };

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* The input columns [lo, hi] of an output row whose input column is ow * stride + off lie inside
 * the row of W columns (lo > hi: none). Columns left of lo are before the row, right of hi after. */
static void inside_columns(int64_t W, int64_t Wo, int64_t stride, int64_t off, int64_t *lo, int64_t *hi)
{
    *lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
    *hi = W - 1 - off < 0 ? -1 : (W - 1 - off) / stride;
    if (*hi > Wo - 1) *hi = Wo - 1;
}

/* ---- im2col of one group of one frame, output rows [oh0, oh1): (kcol x (oh1 - oh0) Wo), rows
 * `ldcol` apart ---- */
static void im2col_rows(const conv_params *p, const co_oprt *rt, const float *src, int64_t chan_stride, int64_t cin_g,
                        int64_t oh0, int64_t oh1, float *col, int64_t ldcol)
{
    const int64_t H = rt->aux[A_H], W = rt->aux[A_W], Wo = rt->aux[A_WO];
    int64_t row = 0;
    for (int64_t c = 0; c < cin_g; c++) {
        const float *plane = src + c * chan_stride;
        for (int64_t kh = 0; kh < p->ks[0]; kh++)
            for (int64_t kw = 0; kw < p->ks[1]; kw++, row++) {
                float *dst = col + row * ldcol;
                const int64_t off = kw * p->ds[1] - p->ps[1];
                int64_t lo, hi;
                inside_columns(W, Wo, p->ss[1], off, &lo, &hi);
                for (int64_t oh = oh0; oh < oh1; oh++) {
                    float *d = dst + (oh - oh0) * Wo;
                    int64_t ih = oh * p->ss[0] - p->ps[0] + kh * p->ds[0];
                    if (ih < 0 || ih >= H) {
                        if (!p->replicate_pad) {
                            memset(d, 0, (size_t)Wo * sizeof(float));
                            continue;
                        }
                        ih = ih < 0 ? 0 : H - 1;
                    }
                    const float *r = plane + ih * W;
                    const float left = p->replicate_pad ? r[0] : 0.0f, right = p->replicate_pad ? r[W - 1] : 0.0f;
                    const int64_t lend = min64(lo, Wo);
                    for (int64_t ow = 0; ow < lend; ow++) d[ow] = left;
                    if (p->ss[1] == 1) {
                        if (hi >= lo) memcpy(d + lo, r + lo + off, (size_t)(hi - lo + 1) * sizeof(float));
                    } else {
                        for (int64_t ow = lo; ow <= hi; ow++) d[ow] = r[ow * p->ss[1] + off];
                    }
                    for (int64_t ow = max64(hi + 1, lend); ow < Wo; ow++) d[ow] = right;
                }
            }
    }
}

static void im2col_ld(const conv_params *p, const co_oprt *rt, const float *src, int64_t chan_stride, int64_t cin_g,
                      float *col, int64_t ldcol)
{
    im2col_rows(p, rt, src, chan_stride, cin_g, 0, rt->aux[A_HO], col, ldcol);
}

/* ---- depthwise: one input channel per group, few outputs per group ----
 * Each input plane is laid out once as a padded plane (spatial padding written out: zeros or
 * replicated edges; a strided row split into its `stride` phases), so that every spatial tap of
 * an output row is one contiguous run, and the row's taps (all temporal taps too, in clip mode)
 * are summed by co_dw_taps in registers. A plane that needs neither padding nor a column stride
 * is used as it is; a 1x1 kernel at stride 1 makes the whole frame one row. */
static int conv_depthwise(const conv_params *p, const co_oprt *rt)
{
    (void)rt;
    return p->cin == p->groups && p->cout / p->groups <= CONV_DW_MAX_MULTIPLIER;
}

typedef struct dw_geom {
    int padded;              /* planes are rewritten (padding or a column stride) */
    int64_t hp, wq, wrow;    /* padded plane: rows, columns per phase, floats per row */
    int64_t rows, row_len;   /* output rows per frame, floats per output row */
} dw_geom;

static dw_geom dw_geometry(const conv_params *p, const co_oprt *rt)
{
    const int64_t H = rt->aux[A_H], W = rt->aux[A_W];
    dw_geom g;
    g.padded = p->ps[0] || p->ps[1] || p->ss[1] > 1;
    if (g.padded) {
        const int64_t wp = W + 2 * p->ps[1];
        g.hp = H + 2 * p->ps[0];
        g.wq = (wp + p->ss[1] - 1) / p->ss[1];
        g.wrow = g.wq * p->ss[1];
    } else {
        g.hp = H;
        g.wq = g.wrow = W;
    }
    g.rows = rt->aux[A_DIRECT] ? 1 : rt->aux[A_HO];
    g.row_len = rt->aux[A_DIRECT] ? rt->aux[A_SO] : rt->aux[A_WO];
    return g;
}

static int64_t dw_plane_floats(const dw_geom *g) { return g->padded ? g->hp * g->wrow : 0; }

/* The padded plane of `plane` (H x W) into dst (hp rows of wrow floats, phase q of a row at q * wq). */
static void dw_pad_plane(const conv_params *p, const co_oprt *rt, const dw_geom *g, const float *plane, float *dst)
{
    const int64_t H = rt->aux[A_H], W = rt->aux[A_W], sw = p->ss[1], pw = p->ps[1], wp = W + 2 * pw;
    for (int64_t r = 0; r < g->hp; r++) {
        float *d = dst + r * g->wrow;
        int64_t ih = r - p->ps[0];
        if (ih < 0 || ih >= H) {
            if (!p->replicate_pad) {
                memset(d, 0, (size_t)g->wrow * sizeof(float));
                continue;
            }
            ih = ih < 0 ? 0 : H - 1;
        }
        const float *row = plane + ih * W;
        const float left = p->replicate_pad ? row[0] : 0.0f, right = p->replicate_pad ? row[W - 1] : 0.0f;
        if (sw == 1) {
            for (int64_t x = 0; x < pw; x++) d[x] = left;
            memcpy(d + pw, row, (size_t)W * sizeof(float));
            for (int64_t x = pw + W; x < g->wrow; x++) d[x] = right;
            continue;
        }
        for (int64_t q = 0; q < sw; q++) {
            /* padded column x = q + sw * i reads input column x - pw: inside for i in [i0, i1) */
            float *dq = d + q * g->wq;
            const int64_t i0 = min64(g->wq, (pw - q + sw - 1) / sw), i1 = max64(i0, min64(g->wq, (W + pw - q + sw - 1) / sw));
            for (int64_t i = 0; i < i0; i++) dq[i] = left;
            const float *rq = row + q + sw * i0 - pw;
            for (int64_t i = i0; i < i1; i++) dq[i] = rq[sw * (i - i0)];
            for (int64_t i = i1; i < g->wq; i++) dq[i] = q + sw * i >= wp ? 0.0f : right;
        }
    }
}

/* Offset in a padded plane of spatial tap (kh, kw) of output row 0: padded column kw * ds1 is
 * phase (kw * ds1) % ss1, column (kw * ds1) / ss1 of that phase. */
static int64_t dw_tap_offset(const conv_params *p, const dw_geom *g, int64_t kh, int64_t kw)
{
    const int64_t col = kw * p->ds[1];
    return kh * p->ds[0] * g->wrow + (col % p->ss[1]) * g->wq + col / p->ss[1];
}

/* Taps of one output frame (its first row; the rows follow at a fixed stride in the padded
 * planes) gathered for co_dw_taps, flushed CONV_DW_TAPS at a time (clip mode: one output, the
 * taps of several input frames). */
typedef struct dw_frame {
    const float *src[CONV_DW_TAPS];
    float w[CONV_DW_TAPS];
    int n, accumulate;
    float init;
    float *dst;
} dw_frame;

static void dw_flush(dw_frame *a, const conv_params *p, const dw_geom *g)
{
    co_dw_taps(g->rows, g->row_len, a->n, a->src, p->ss[0] * g->wrow, 1, a->w, 0, &a->init, a->accumulate, &a->dst,
               g->row_len);
    a->n = 0;
    a->accumulate = 1;
}

/* Adds the spatial taps (weights w[kh * ks1 + kw]) over padded plane `base`. */
static void dw_add_plane(dw_frame *a, const conv_params *p, const dw_geom *g, const float *base, const float *w)
{
    for (int64_t kh = 0; kh < p->ks[0]; kh++)
        for (int64_t kw = 0; kw < p->ks[1]; kw++) {
            if (a->n == CONV_DW_TAPS) dw_flush(a, p, g);
            a->src[a->n] = base + dw_tap_offset(p, g, kh, kw);
            a->w[a->n++] = w[kh * p->ks[1] + kw];
        }
}

/* Step mode, one input plane (padded): dst[k] += temporal tap j0 + k of it for output channel c,
 * k < n_out, all in one pass of co_dw_taps per CONV_DW_TAPS spatial taps (tap j's weights are
 * cout * kcol floats after tap j-1's). The dst[k] must be distinct windows. */
static void dw_plane_step(const conv_params *p, const dw_geom *g, const float *plane, int64_t j0, int64_t c, int n_out,
                          float *const *dst)
{
    const int64_t n_sp = p->ks[0] * p->ks[1];
    const float *src[CONV_DW_TAPS];
    for (int64_t t0 = 0; t0 < n_sp; t0 += CONV_DW_TAPS) {
        const int nt = (int)min64(CONV_DW_TAPS, n_sp - t0);
        for (int t = 0; t < nt; t++) src[t] = plane + dw_tap_offset(p, g, (t0 + t) / p->ks[1], (t0 + t) % p->ks[1]);
        co_dw_taps(g->rows, g->row_len, nt, src, p->ss[0] * g->wrow, n_out, p->w + (j0 * p->cout + c) * p->kcol + t0,
                   p->cout * p->kcol,
                   NULL, 1, dst, g->row_len);
    }
}

/* Step mode: the work of conv_taps_depthwise, cut into tasks of consecutive (item, channel)
 * planes; task k uses scratch slice k (one padded plane). The cut depends only on the shapes,
 * and each output is computed by one task in one order, so any thread count gives the same
 * bits. */
typedef struct dw_step_job {
    const conv_params *p;
    const co_oprt *rt;
    dw_geom g;
    const float *src;
    int64_t src_bstride, chan_stride, dst_bstride, ldc, planes, per_task;
    float *const *dst;
    int64_t j0;
    int n_out;
    float *scratch;
} dw_step_job;

static void dw_step_task(void *ctx, int task)
{
    const dw_step_job *jb = ctx;
    const conv_params *p = jb->p;
    const int64_t mult = p->cout / p->groups;
    float *pad = jb->scratch + task * dw_plane_floats(&jb->g);
    const int64_t lo = task * jb->per_task, hi = min64(jb->planes, lo + jb->per_task);
    for (int64_t k = lo; k < hi; k++) {
        const int64_t b = k / p->cin, ci = k % p->cin;
        const float *plane = jb->src + b * jb->src_bstride + ci * jb->chan_stride;
        if (jb->g.padded) {
            dw_pad_plane(p, jb->rt, &jb->g, plane, pad);
            plane = pad;
        }
        for (int64_t c = ci * mult; c < (ci + 1) * mult; c++) {
            float *d[CONV_MAX_KT];
            for (int j = 0; j < jb->n_out; j++) d[j] = jb->dst[j] + b * jb->dst_bstride + c * jb->ldc;
            dw_plane_step(p, &jb->g, plane, jb->j0, c, jb->n_out, d);
        }
    }
}

/* Tasks a depthwise step over `planes` input planes is cut into (1: too small to hand off). */
static int64_t dw_step_tasks(const conv_params *p, const co_oprt *rt, int64_t planes)
{
    const int64_t macs = planes * (p->cout / p->groups) * p->kt * p->kcol * rt->aux[A_SO];
    if (macs < CONV_DW_PARALLEL_MIN_MACS) return 1;
    return min64(min64(CONV_DW_TASKS, planes), max64(1, macs / CONV_DW_TASK_MIN_MACS));
}

/* Step mode: dst[k] += tap j0 + k of the frame (k < n_out; distinct windows), every batch item
 * and channel. `src` is batch item 0's frame (items src_bstride apart, channels chan_stride
 * apart); dst[k] is item 0's output frame (items dst_bstride apart, channels ldc apart). Large
 * ones run on the current thread pool (co_pool_current). */
static void conv_taps_depthwise(const conv_params *p, const co_oprt *rt, int64_t batch, const float *src,
                                int64_t src_bstride, int64_t chan_stride, int64_t j0, int n_out, float *const *dst,
                                int64_t dst_bstride, int64_t ldc, float *scratch)
{
    dw_step_job jb = {.p = p, .rt = rt, .g = dw_geometry(p, rt), .src = src, .src_bstride = src_bstride,
                      .chan_stride = chan_stride, .dst_bstride = dst_bstride, .ldc = ldc, .planes = batch * p->cin,
                      .dst = dst, .j0 = j0, .n_out = n_out, .scratch = scratch};
    const int64_t tasks = dw_step_tasks(p, rt, jb.planes);
    jb.per_task = (jb.planes + tasks - 1) / tasks;
    /* no pool or one task: co_pool_run runs it on this thread */
    co_pool_run(co_pool_current(), (int)((jb.planes + jb.per_task - 1) / jb.per_task), dw_step_task, &jb);
}

/* ---- depthwise steps in the channel-vector form (kernels/conv_dw.h, co_dw_pixels) ----
 * On planes with short rows (CoX3D-S: 10 x 10, 5 x 5 with 216 / 432 channels) the row form runs
 * on one masked vector per row. A conv that keeps the frame size (stride 1, "same" padding) with
 * one output per input channel instead keeps the last kt input frames in its ring, pixel-major
 * (each pixel's C channels contiguous): the same floats as kt output windows, so the state size
 * is unchanged. A step writes its frame into the ring (one transpose) and, when it emits, sums
 * each output pixel over all kt x kh x kw taps at once on vectors of channels, adds the bias,
 * transposes the frame back and runs the fused activation: no window to clear, no bias pass, and
 * windows that are never emitted (temporal stride) are never computed. The taps are summed onto 0
 * in the order the ring form adds them (frame by frame, spatial taps in order), bias last, so both
 * forms give the same bits (up to the portable loop's rounding, as for co_dw_taps). Rows wider
 * than CONV_DW_PIXELS_MAX_ROW keep the row form (the transposes cost more than the tails). */
enum { CONV_DW_PIXELS_MAX_ROW = 16 };

static int conv_packs_weights(const conv_params *p);

static int dw_pixels_form(const conv_params *p, const co_oprt *rt)
{
    /* wpack holds the pixel-major weights unless it holds a Conv1d's product panels */
    return conv_depthwise(p, rt) && p->wpack && !conv_packs_weights(p) && p->cout == p->cin && p->ss[0] == 1 && p->ss[1] == 1 &&
           rt->aux[A_HO] == rt->aux[A_H] && rt->aux[A_WO] == rt->aux[A_W] &&
           p->kt * p->ks[0] * p->ks[1] <= CONV_DW_TAPS && rt->aux[A_WO] <= CONV_DW_PIXELS_MAX_ROW;
}

/* Scratch of a pixel-form step of B items: a zero pixel, the output frame pixel-major. */
static int64_t dw_pixels_scratch(const conv_params *p, const co_oprt *rt, int64_t B)
{
    const int64_t f = p->cin + B * rt->aux[A_H] * rt->aux[A_W] * p->cin;
    return (f + 15) / 16 * 16; /* whole cache lines: what follows in the arena keeps its alignment */
}

/* One emitting pixel-form step: output rows (item, row) of the frame, cut into tasks by a
 * partition that depends only on the shapes; each output pixel is one co_dw_pixels call's. */
typedef struct dw_pixels_job {
    const conv_params *p;
    const co_oprt *rt;
    const float *ring, *w, *zero;
    int64_t slot, pos, rows, per_task;
    float *out;
} dw_pixels_job;

/* Tap pointers of output pixel (ho, wo) of item frame `b` (the interior pixels after it follow
 * at src_step[t]: C, or 0 for a tap on a zero-padding row). */
static int dw_pixel_taps(const dw_pixels_job *jb, int64_t b, int64_t ho, int64_t wo, const float **src, int64_t *step)
{
    const conv_params *p = jb->p;
    const int64_t H = jb->rt->aux[A_H], W = jb->rt->aux[A_W], C = p->cin;
    int t = 0;
    for (int64_t j = 0; j < p->kt; j++) {
        /* tap j reads the frame of k-1-j steps ago: ring slot pos - (k-1-j) */
        const float *frame = jb->ring + ((jb->pos + 1 + j) % p->kt) * jb->slot + b * H * W * C;
        for (int64_t kh = 0; kh < p->ks[0]; kh++) {
            int64_t ih = ho - p->ps[0] + kh * p->ds[0];
            const int row_pad = ih < 0 || ih >= H;
            if (row_pad) ih = ih < 0 ? 0 : H - 1;
            for (int64_t kw = 0; kw < p->ks[1]; kw++, t++) {
                int64_t iw = wo - p->ps[1] + kw * p->ds[1];
                const int col_pad = iw < 0 || iw >= W;
                if (col_pad) iw = iw < 0 ? 0 : W - 1;
                if ((row_pad || col_pad) && !p->replicate_pad) {
                    src[t] = jb->zero;
                    step[t] = 0;
                } else {
                    src[t] = frame + (ih * W + iw) * C;
                    step[t] = C;
                }
            }
        }
    }
    return t;
}

static void dw_pixels_task(void *ctx, int task)
{
    const dw_pixels_job *jb = ctx;
    const conv_params *p = jb->p;
    const int64_t H = jb->rt->aux[A_H], W = jb->rt->aux[A_W], C = p->cin;
    /* columns whose every tap is inside the row ("same" padding: ps[1] on each side) */
    const int64_t lo = min64(W, p->ps[1]), hi = max64(lo, W - p->ps[1]);
    const float *src[CONV_DW_TAPS];
    int64_t step[CONV_DW_TAPS];
    const int64_t r0 = task * jb->per_task, r1 = min64(jb->rows, r0 + jb->per_task);
    for (int64_t r = r0; r < r1; r++) {
        const int64_t b = r / H, ho = r % H;
        float *dst = jb->out + (b * H + ho) * W * C;
        for (int64_t wo = 0; wo < W; wo++) {
            if (wo == lo && hi > lo) {
                const int n = dw_pixel_taps(jb, b, ho, wo, src, step);
                co_dw_pixels(hi - lo, C, n, src, step, jb->w, p->bias, dst + wo * C);
                wo = hi - 1;
                continue;
            }
            const int n = dw_pixel_taps(jb, b, ho, wo, src, step);
            co_dw_pixels(1, C, n, src, step, jb->w, p->bias, dst + wo * C);
        }
    }
}

/* Clip mode: every output frame as the sum of all its taps (temporal and spatial), onto the bias. */
static void conv_clip_depthwise(const conv_params *p, const co_oprt *rt, int64_t B, int64_t T, int64_t To,
                                const float *x, float *out, float *scratch)
{
    const dw_geom g = dw_geometry(p, rt);
    const int64_t S = rt->aux[A_H] * rt->aux[A_W], So = rt->aux[A_SO], mult = p->cout / p->groups;
    const int64_t pstride = g.padded ? dw_plane_floats(&g) : S;
    for (int64_t b = 0; b < B; b++)
        for (int64_t ci = 0; ci < p->cin; ci++) {
            const float *planes = x + (b * p->cin + ci) * T * S;
            if (g.padded) {
                for (int64_t t = 0; t < T; t++) dw_pad_plane(p, rt, &g, planes + t * S, scratch + t * pstride);
                planes = scratch;
            }
            for (int64_t c = ci * mult; c < (ci + 1) * mult; c++) {
                const float bias = p->bias ? p->bias[c] : 0.0f;
                for (int64_t o = 0; o < To; o++) {
                    dw_frame a = {.init = bias, .dst = out + ((b * p->cout + c) * To + o) * So};
                    for (int64_t j = 0; j < p->kt; j++) {
                        int64_t tv = o * p->st - p->pt + j;
                        if (tv < 0 || tv >= T) {
                            if (!p->replicate_pad) continue; /* zero padding contributes nothing */
                            tv = tv < 0 ? 0 : T - 1;
                        }
                        dw_add_plane(&a, p, &g, planes + tv * pstride, p->w + (j * p->cout + c) * p->kcol);
                    }
                    dw_flush(&a, p, &g);
                }
            }
        }
}

/* ---- step mode: the frames of every batch item (and of every stream, step_multi) times ALL
 * taps as one product, [kt*cout x kcol] x [kcol x items*So] (the weights are stored tap-major,
 * so that is one matrix), in chunks of at most CONV_COLS columns; tap j's slice of each item is
 * then added to the window it belongs to, in that item's own ring at its own phase. Depthwise
 * convolutions keep their tap kernel (conv_taps_depthwise). */
enum { CONV_COLS = 512 };

/* state layout: int64 pos, countdown, started; then the float ring */
typedef struct conv_state_head { int64_t pos, countdown, started; } conv_state_head;

/* ---- Winograd F(4x4, 3x3) (kernels/winograd.h; docs/kernels.md, "Winograd convolutions") ----
 * For dense 3x3 spatial kernels at spatial stride 1 (conv_winograd_eligible): each 4x4 tile of
 * an output frame is A^T [U .* V] A, V = B^T d B of the 6x6 input tile, so the products over
 * input channels become 36 products, one per tile element e:
 *     P_e (tiles x kt*cout) = V_e (tiles x cin) x U_e^T (cin x kt*cout, packed at build),
 * which give every temporal tap at once (U's columns are tap-major like the weights). The
 * inverse transform adds each tap's tiles into the window that tap feeds (step: the ring, which
 * stays in the spatial domain, so state, save/restore and finish are unchanged; clip: the
 * output frame). Work is cut into chunks of tiles (items x positions), each with its own part of
 * the scratch; the chunks are fixed by the shapes alone, and each output pixel is written by one
 * chunk per input frame in frame order, so results do not depend on the thread count. */
enum {
    CONV_WINO_MIN_CHANNELS = 16,  /* below this cin or cout the products are too thin to pay */
    /* outputs per tile at least this (the direct method does 9 MACs per output and channel
     * pair, Winograd 36 per tile): 6 of 16 is a 1.5x gain in multiplies, the least that pays
     * for the transforms */
    CONV_WINO_MIN_TILE_OUTPUTS = 6,
    CONV_WINO_CHUNK_FLOATS = 1 << 18, /* scratch of one chunk (V and P): 1 MiB, L2-sized */
    CONV_WINO_MIN_TILES = 8,     /* tiles per chunk at least (rows of the packed kernel's tile) */
    CONV_WINO_MAX_SLICES = 8,    /* parallel slices of the work (fixed: not the thread count) */
    CONV_WINO_ALIGN_FLOATS = 16, /* slices of the scratch start 64 bytes apart */
    /* transformed weights (4x the weights: 36 floats per kernel instead of 9) at most 256 MiB
     * per conv; larger convs keep the direct products rather than quadruple their memory */
    CONV_WINO_MAX_WEIGHT_FLOATS = 1 << 26
};

/* Parameters alone: dense 3x3 spatial kernel, stride 1, dilation 1, zero padding, wide enough
 * (and not so large that the transformed weights would be too). */
static int conv_winograd_eligible(const conv_params *p)
{
    return p->nsd == 2 && p->ks[0] == CO_WINO_KERNEL && p->ks[1] == CO_WINO_KERNEL && p->ss[0] == 1 &&
           p->ss[1] == 1 && p->ds[0] == 1 && p->ds[1] == 1 && p->groups == 1 && !p->replicate_pad &&
           p->cin >= CONV_WINO_MIN_CHANNELS && p->cout >= CONV_WINO_MIN_CHANNELS &&
           CO_WINO_ELEMS * p->kt * p->cout * p->cin <= CONV_WINO_MAX_WEIGHT_FLOATS;
}

typedef struct wino_geom {
    int64_t ntx, tpi;        /* tiles per output row, per frame */
    int64_t pslice, n_pchunks; /* positions (tiles of a frame) per chunk; chunks across a frame */
    int64_t ipc;             /* items (frames) per chunk */
    int64_t chunk_tiles;     /* pslice * ipc: most tiles of a chunk */
    int64_t slice_floats;    /* scratch of one chunk: V then P */
} wino_geom;

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

static wino_geom wino_geometry(const conv_params *p, const co_oprt *rt)
{
    wino_geom g;
    const int64_t per_tile = CO_WINO_ELEMS * (p->cin + p->kt * p->cout);
    const int64_t target = max64(CONV_WINO_MIN_TILES, CONV_WINO_CHUNK_FLOATS / per_tile);
    g.ntx = ceil_div(rt->aux[A_WO], CO_WINO_OUT);
    g.tpi = ceil_div(rt->aux[A_HO], CO_WINO_OUT) * g.ntx;
    g.n_pchunks = ceil_div(g.tpi, target);
    g.pslice = ceil_div(g.tpi, g.n_pchunks); /* even chunks across a frame */
    g.ipc = max64(1, target / g.pslice);
    g.chunk_tiles = g.pslice * g.ipc;
    g.slice_floats = ceil_div(g.chunk_tiles * per_tile, CONV_WINO_ALIGN_FLOATS) * CONV_WINO_ALIGN_FLOATS;
    return g;
}

/* Resolved: eligible, and the frame is large enough for the tiles to pay. */
static int conv_winograd_pays(const conv_params *p, const co_oprt *rt)
{
    if (!p->wino) return 0;
    const wino_geom g = wino_geometry(p, rt);
    return rt->aux[A_SO] >= CONV_WINO_MIN_TILE_OUTPUTS * g.tpi;
}

static int64_t wino_slices(int64_t chunks) { return min64(CONV_WINO_MAX_SLICES, chunks); }

/* One Winograd run: items f (frames) from `src` (step: stream f / B, item f % B) or the clip x
 * (item b * T + t), into the rings / out (step) or the output clip y (clip). */
typedef struct wino_job {
    const conv_params *p;
    const co_oprt *rt;
    wino_geom g;
    int clip;
    int64_t items, n_chunks, n_slices;
    float *scratch;
    /* step */
    int64_t B;
    const float *const *src;
    void *const *states;
    float *const *out;
    int replicate;
    /* clip */
    const float *x;
    float *y;
    int64_t T, To;
} wino_job;

/* Item f's frame (channel 0) and the floats between its channels. */
static const float *wino_source(const wino_job *job, int64_t f, int64_t *chan_stride)
{
    const conv_params *p = job->p;
    const int64_t S = job->rt->aux[A_H] * job->rt->aux[A_W];
    if (job->clip) {
        *chan_stride = job->T * S;
        return job->x + (f / job->T) * p->cin * job->T * S + (f % job->T) * S;
    }
    *chan_stride = S;
    return job->src[f / job->B] + (f % job->B) * p->cin * S;
}

/* The frames (channel 0; channels *chan_stride apart) that tap j of item f is added to: d[0..n). */
static int wino_dests(const wino_job *job, int64_t f, int64_t j, float **d, int64_t *chan_stride)
{
    const conv_params *p = job->p;
    const int64_t kt = p->kt, So = job->rt->aux[A_SO], win = p->cout * So;
    if (job->clip) {
        const int64_t t = f % job->T, num = t + p->pt - j;
        *chan_stride = job->To * So;
        if (num < 0 || num % p->st) return 0;
        if (num / p->st >= job->To) return 0;
        d[0] = job->y + (f / job->T) * p->cout * job->To * So + (num / p->st) * So;
        return 1;
    }
    const int64_t i = f / job->B, b = f % job->B, slot = job->B * win;
    conv_state_head *h = job->states ? job->states[i] : NULL;
    float *ring = h ? (float *)(h + 1) : job->out[i];
    const int64_t pos = h ? h->pos : 0;
    int n = 0;
    *chan_stride = So;
    /* tap j of this frame belongs to the window ending k-1-j steps from now */
    d[n++] = ring + ((pos + kt - 1 - j) % kt) * slot + b * win;
    if (job->replicate && !h->started)
        /* window ending at step m (1..k-1) already holds virtual frames 2-k..0, all equal to x_1:
         * taps 0..k-1-m of it */
        for (int64_t m = 1; m <= kt - 1 - j; m++) d[n++] = ring + ((pos + m - 1) % kt) * slot + b * win;
    return n;
}

/* Tiles of items [f0, f1) x positions [p0, p1): transform, 36 products, inverse into the dests. */
static void wino_chunk(const wino_job *job, float *scratch, int64_t f0, int64_t f1, int64_t p0, int64_t p1)
{
    const conv_params *p = job->p;
    const co_oprt *rt = job->rt;
    const int64_t H = rt->aux[A_H], W = rt->aux[A_W], Ho = rt->aux[A_HO], Wo = rt->aux[A_WO];
    const int64_t cin = p->cin, cout = p->cout, M = p->kt * cout, np = p1 - p0, n = (f1 - f0) * np;
    const int64_t ntx = job->g.ntx;
    float *V = scratch, *P = scratch + CO_WINO_ELEMS * n * cin;
    float patch[CO_WINO_ELEMS * CO_WINO_LANES], y[CO_WINO_PIXELS * CO_WINO_LANES];

    for (int64_t f = f0; f < f1; f++) {
        int64_t cs;
        const float *frame = wino_source(job, f, &cs);
        for (int64_t q = p0; q < p1; q++) {
            const int64_t row = (f - f0) * np + (q - p0);
            const int64_t iy0 = (q / ntx) * CO_WINO_OUT - p->ps[0], ix0 = (q % ntx) * CO_WINO_OUT - p->ps[1];
            const int64_t a_lo = max64(0, -iy0), a_hi = min64(CO_WINO_IN, H - iy0);
            const int64_t b_lo = max64(0, -ix0), b_hi = min64(CO_WINO_IN, W - ix0);
            const int border = a_lo > 0 || b_lo > 0 || a_hi < CO_WINO_IN || b_hi < CO_WINO_IN;
            for (int64_t c0 = 0; c0 < cin; c0 += CO_WINO_LANES) {
                const int64_t nl = min64(CO_WINO_LANES, cin - c0);
                if (border) {
                    memset(patch, 0, sizeof patch);
                    for (int64_t l = 0; l < nl; l++) {
                        const float *plane = frame + (c0 + l) * cs + iy0 * W + ix0;
                        for (int64_t a = a_lo; a < a_hi; a++)
                            for (int64_t bb = b_lo; bb < b_hi; bb++)
                                patch[(a * CO_WINO_IN + bb) * CO_WINO_LANES + l] = plane[a * W + bb];
                    }
                } else { /* the whole tile inside: fixed trip counts, unrolled */
                    for (int64_t l = 0; l < nl; l++) {
                        const float *plane = frame + (c0 + l) * cs + iy0 * W + ix0;
                        for (int a = 0; a < CO_WINO_IN; a++)
                            for (int bb = 0; bb < CO_WINO_IN; bb++)
                                patch[(a * CO_WINO_IN + bb) * CO_WINO_LANES + l] = plane[a * W + bb];
                    }
                }
                co_wino_input(nl, patch, CO_WINO_LANES, V + row * cin + c0, n * cin);
            }
        }
    }
    for (int64_t e = 0; e < CO_WINO_ELEMS; e++)
        co_gemm_packed(n, M, cin, V + e * n * cin, cin, p->wino + e * p->wino_bytes, 0.0f, P + e * n * M, M);
    for (int64_t f = f0; f < f1; f++)
        for (int64_t j = 0; j < p->kt; j++) {
            float *d[64]; /* the builder bounds kt to 64; a tap feeds at most kt windows */
            int64_t cs;
            const int nd = wino_dests(job, f, j, d, &cs);
            if (!nd) continue;
            for (int64_t q = p0; q < p1; q++) {
                const int64_t row = (f - f0) * np + (q - p0);
                const int64_t oy = (q / ntx) * CO_WINO_OUT, ox = (q % ntx) * CO_WINO_OUT;
                const int64_t hy = min64(CO_WINO_OUT, Ho - oy), wx = min64(CO_WINO_OUT, Wo - ox);
                for (int64_t c0 = 0; c0 < cout; c0 += CO_WINO_LANES) {
                    const int64_t nl = min64(CO_WINO_LANES, cout - c0);
                    if (hy == CO_WINO_OUT && wx == CO_WINO_OUT) { /* a whole tile: added by rows of 4 */
                        float *o[64];
                        for (int k = 0; k < nd; k++) o[k] = d[k] + c0 * cs + oy * Wo + ox;
                        co_wino_output_add(nl, P + row * M + j * cout + c0, n * M, o, nd, cs, Wo);
                        continue;
                    }
                    co_wino_output(nl, P + row * M + j * cout + c0, n * M, y, CO_WINO_LANES);
                    for (int k = 0; k < nd; k++)
                        for (int64_t l = 0; l < nl; l++) {
                            float *o = d[k] + (c0 + l) * cs + oy * Wo + ox;
                            for (int64_t py = 0; py < hy; py++)
                                for (int64_t px = 0; px < wx; px++)
                                    o[py * Wo + px] += y[(py * CO_WINO_OUT + px) * CO_WINO_LANES + l];
                        }
                }
            }
        }
}

/* Step: chunk c covers items [ic * ipc, ...) x positions [pc * pslice, ...). */
static void wino_step_task(void *ctx, int slice)
{
    const wino_job *job = ctx;
    const wino_geom *g = &job->g;
    float *scratch = job->scratch + slice * g->slice_floats;
    for (int64_t c = slice; c < job->n_chunks; c += job->n_slices) {
        const int64_t ic = c / g->n_pchunks, pc = c % g->n_pchunks;
        wino_chunk(job, scratch, ic * g->ipc, min64(job->items, (ic + 1) * g->ipc), pc * g->pslice,
                   min64(g->tpi, (pc + 1) * g->pslice));
    }
}

/* Clip: slice s takes positions chunks s, s + slices, ... over every frame in order (frames of
 * one output pixel are then added by one task, in frame order). */
static void wino_clip_task(void *ctx, int slice)
{
    const wino_job *job = ctx;
    const wino_geom *g = &job->g;
    float *scratch = job->scratch + slice * g->slice_floats;
    const int64_t Bn = job->items / job->T;
    for (int64_t pc = slice; pc < g->n_pchunks; pc += job->n_slices)
        for (int64_t b = 0; b < Bn; b++)
            for (int64_t t0 = 0; t0 < job->T; t0 += g->ipc)
                wino_chunk(job, scratch, b * job->T + t0, b * job->T + min64(job->T, t0 + g->ipc), pc * g->pslice,
                           min64(g->tpi, (pc + 1) * g->pslice));
}

/* One slice runs on the calling thread, so that its products may use the pool; more are spread. */
static void wino_run(wino_job *job, co_pool_task_fn fn)
{
    if (job->n_slices == 1)
        fn(job, 0);
    else
        co_pool_run(co_pool_current(), (int)job->n_slices, fn, job);
}

/* Scratch floats of a step over `items` frames / of the clip. */
static size_t wino_step_scratch(const conv_params *p, const co_oprt *rt, int64_t items)
{
    const wino_geom g = wino_geometry(p, rt);
    return (size_t)(wino_slices(ceil_div(items, g.ipc) * g.n_pchunks) * g.slice_floats);
}

static size_t wino_clip_scratch(const conv_params *p, const co_oprt *rt)
{
    const wino_geom g = wino_geometry(p, rt);
    return (size_t)(wino_slices(g.n_pchunks) * g.slice_floats);
}

/* conv_accumulate for Winograd convs. */
static void wino_accumulate(const co_op *op, const co_oprt *rt, int64_t n, const float *const *src, void *const *states,
                            float *const *out, float *scratch)
{
    wino_job job = {.p = op->params, .rt = rt, .g = wino_geometry(op->params, rt), .scratch = scratch,
                    .B = rt->out.d[0], .src = src, .states = states, .out = out,
                    .replicate = states && op->fill == CO_FILL_REPLICATE};
    job.items = n * job.B;
    job.n_chunks = ceil_div(job.items, job.g.ipc) * job.g.n_pchunks;
    job.n_slices = wino_slices(job.n_chunks);
    wino_run(&job, wino_step_task);
}

/* Whole clip onto the bias (already in y). */
static void wino_clip(const conv_params *p, const co_oprt *rt, int64_t B, int64_t T, int64_t To, const float *x,
                      float *y, float *scratch)
{
    wino_job job = {.p = p, .rt = rt, .g = wino_geometry(p, rt), .clip = 1, .scratch = scratch, .x = x, .y = y,
                    .T = T, .To = To};
    job.items = B * T;
    job.n_slices = wino_slices(job.g.n_pchunks);
    wino_run(&job, wino_clip_task);
}

/* At build: U_e = G g G^T of every (tap, output, input) kernel, packed per element. tmp holds
 * 36 * kt * cout * cin floats (U_e is M x cin at tmp + e * M * cin). */
static void wino_pack_weights(conv_params *p, float *tmp)
{
    const int64_t M = p->kt * p->cout, cin = p->cin, ksp = CO_WINO_KERNEL * CO_WINO_KERNEL;
    for (int64_t r = 0; r < M; r++)
        for (int64_t c = 0; c < cin; c++) co_wino_weight(p->w + r * p->kcol + c * ksp, tmp + r * cin + c, M * cin);
    for (int64_t e = 0; e < CO_WINO_ELEMS; e++) co_gemm_pack_b(1, cin, M, tmp + e * M * cin, cin, p->wino + e * p->wino_bytes);
}

/* Frames are feature vectors (Conv1d): items are the rows of X, the product is X W^T. */
static int conv_vector_form(const conv_params *p, const co_oprt *rt)
{
    return rt->aux[A_SO] == 1 && rt->aux[A_H] * rt->aux[A_W] == 1 && p->groups == 1 && rt->aux[A_DIRECT];
}

/* At build: whether w gets packed panels (p->wpack) — Conv1d with groups 1, whose every step is
 * in the vector form (no spatial dims). */
static int conv_packs_weights(const conv_params *p) { return p->nsd == 0 && p->groups == 1; }

/* Depthwise with one output per channel and at most CONV_DW_TAPS taps (the steps that may take
 * the channel-vector form, dw_pixels_form): wpack holds w pixel-major instead, tap t = (j, kh,
 * kw) of channel c at t * cin + c. */
static int conv_packs_pixel_weights(const conv_params *p)
{
    return p->groups == p->cin && p->cout == p->cin && p->kt * p->ks[0] * p->ks[1] <= CONV_DW_TAPS;
}

static size_t conv_pack_bytes(const conv_params *p)
{
    if (conv_packs_weights(p)) return co_gemm_pack_size(p->cin, p->kt * p->cout);
    if (conv_packs_pixel_weights(p)) return (size_t)(p->kt * p->cout * p->kcol) * sizeof(float);
    return 0;
}

static void conv_pack_weights(conv_params *p)
{
    if (conv_packs_weights(p)) {
        co_gemm_pack_b(1, p->cin, p->kt * p->cout, p->w, p->kcol, p->wpack);
        return;
    }
    float *wp = (float *)p->wpack;
    const int64_t n_sp = p->ks[0] * p->ks[1], C = p->cin;
    for (int64_t j = 0; j < p->kt; j++)
        for (int64_t t = 0; t < n_sp; t++)
            for (int64_t c = 0; c < C; c++) wp[(j * n_sp + t) * C + c] = p->w[(j * p->cout + c) * p->kcol + t];
}

static int64_t conv_chunk_items(const co_oprt *rt, int64_t items)
{
    int64_t c = CONV_COLS / rt->aux[A_SO];
    if (c < 1) c = 1;
    return c < items ? c : items;
}

/* Scratch floats of one chunk of items (columns and products), 64-byte multiples. */
static int64_t conv_chunk_floats(const conv_params *p, const co_oprt *rt, int64_t items)
{
    const int64_t ch = conv_chunk_items(rt, items);
    const int64_t f = conv_vector_form(p, rt) ? ch * (p->cin + p->kt * p->cout)
                                               : ch * rt->aux[A_SO] * (p->kcol + p->kt * p->cout);
    return ceil_div(f, CONV_WINO_ALIGN_FLOATS) * CONV_WINO_ALIGN_FLOATS;
}

/* Parallel slices of a step's chunks: fixed by the shapes (not the thread count), at most
 * CONV_STEP_MAX_SLICES, and one where a chunk's scratch is large (then its products, large
 * too, are split by the pool instead). */
enum { CONV_STEP_MAX_SLICES = 4, CONV_STEP_SLICE_MAX_FLOATS = 1 << 20 };

static int64_t conv_step_slices(const conv_params *p, const co_oprt *rt, int64_t items)
{
    if (conv_chunk_floats(p, rt, items) > CONV_STEP_SLICE_MAX_FLOATS) return 1;
    return min64(CONV_STEP_MAX_SLICES, ceil_div(items, conv_chunk_items(rt, items)));
}

/* Scratch floats of one step over `items` frames (batch items of all streams). */
static size_t conv_step_scratch(const conv_params *p, const co_oprt *rt, int64_t items)
{
    if (rt->aux[A_WINO]) return wino_step_scratch(p, rt, items);
    if (conv_depthwise(p, rt)) {
        const dw_geom g = dw_geometry(p, rt);
        const int64_t rows = dw_step_tasks(p, rt, items * p->cin) * dw_plane_floats(&g);
        /* both forms' (a stateless conv steps in the row form whatever the shape) */
        return (size_t)(dw_pixels_form(p, rt) ? max64(rows, dw_pixels_scratch(p, rt, items)) : rows);
    }
    return (size_t)(conv_step_slices(p, rt, items) * conv_chunk_floats(p, rt, items));
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

typedef struct conv_job {
    const co_op *op;
    const co_oprt *rt;
    int64_t n, items, chunk, n_chunks, n_slices, slice_floats;
    const float *const *src;
    void *const *states;
    float *const *out;
    float *scratch;
} conv_job;

/* Items [f0, f0 + nf): columns, one product for all taps, the tap adds. */
static void conv_accumulate_chunk(const conv_job *job, int64_t f0, int64_t nf, float *scratch)
{
    const co_op *op = job->op;
    const co_oprt *rt = job->rt;
    const conv_params *p = op->params;
    const float *const *src = job->src;
    void *const *states = job->states;
    const int64_t B = rt->out.d[0], So = rt->aux[A_SO], S_in = rt->aux[A_H] * rt->aux[A_W];
    const int64_t kt = p->kt, M = kt * p->cout, win = p->cout * So, slot = B * win;
    const int64_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups, fstride = p->cin * S_in;
    const int vec = conv_vector_form(p, rt), direct = (int)rt->aux[A_DIRECT];
    const int replicate = states && op->fill == CO_FILL_REPLICATE;
    const int64_t N = nf * So;
    float *col = scratch;
    float *prod = scratch + (vec ? job->chunk * p->cin : job->chunk * So * p->kcol);
    if (vec) {
        const float *X = col;
        if (f0 / B == (f0 + nf - 1) / B) {
            X = src[f0 / B] + (f0 % B) * fstride; /* one stream's items are already rows */
        } else {
            for (int64_t f = 0; f < nf; f++)
                memcpy(col + f * p->cin, src[(f0 + f) / B] + ((f0 + f) % B) * fstride, (size_t)p->cin * sizeof(float));
        }
        /* Packed panels for every item count, 1 included: a stream stepped alone and the same
         * stream inside a multi-stream call must sum in the same order (bit-identical). */
        if (conv_packs_weights(p)) co_gemm_packed(nf, M, p->cin, X, p->cin, p->wpack, 0.0f, prod, M);
        else co_gemm_nt(nf, M, p->cin, X, p->cin, p->w, p->kcol, 0.0f, prod, M);
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
        float *ring = h ? (float *)(h + 1) : job->out[i];
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

/* Slice s takes chunks s, s + slices, ... with its own part of the scratch. */
static void conv_accumulate_task(void *ctx, int slice)
{
    const conv_job *job = ctx;
    float *scratch = job->scratch + slice * job->slice_floats;
    for (int64_t c = slice; c < job->n_chunks; c += job->n_slices)
        conv_accumulate_chunk(job, c * job->chunk, min64(job->chunk, job->items - c * job->chunk), scratch);
}

/* Adds every tap of the frames of n streams (stream i's B items at src[i]) to their windows:
 * states[i]'s ring at its phase, or (states NULL: k = 1, no ring) out[i]. A stream whose
 * replicate start padding is pending gets the virtual first frames too. Phases are not moved.
 * Chunks of items run in parallel slices (conv_step_slices: fixed by the shapes; each item is
 * written by one chunk), a single slice on the calling thread with its products split. */
static void conv_accumulate(const co_op *op, const co_oprt *rt, int64_t n, const float *const *src, void *const *states,
                            float *const *out, float *scratch)
{
    if (rt->aux[A_WINO]) {
        wino_accumulate(op, rt, n, src, states, out, scratch);
        return;
    }
    conv_job job = {.op = op, .rt = rt, .n = n, .items = n * rt->out.d[0], .src = src, .states = states, .out = out,
                    .scratch = scratch};
    job.chunk = conv_chunk_items(rt, job.items);
    job.n_chunks = ceil_div(job.items, job.chunk);
    job.slice_floats = conv_chunk_floats(op->params, rt, job.items);
    job.n_slices = conv_step_slices(op->params, rt, job.items);
    if (job.n_slices == 1)
        conv_accumulate_task(&job, 0);
    else
        co_pool_run(co_pool_current(), (int)job.n_slices, conv_accumulate_task, &job);
}

/* ---- clip mode: tiles of output frames ---- */

/* Floats of im2col columns one output frame needs (0: the clip itself is the column matrix). */
static int64_t conv_clip_frame_columns(const conv_params *p, const co_oprt *rt)
{
    return rt->aux[A_DIRECT] && p->st == 1 ? 0 : p->kcol * rt->aux[A_SO];
}

/* Output frames per tile: at stride 1 the tile's columns hold its input frames (tile + kt - 1,
 * shared by all taps), else one tap's frames at a time. */
static int64_t conv_clip_tile(const conv_params *p, const co_oprt *rt, int64_t To)
{
    const int64_t per_frame = conv_clip_frame_columns(p, rt);
    if (!per_frame) return To;
    const int64_t tile = CONV_CLIP_COLUMN_FLOATS / per_frame - (p->st == 1 ? p->kt - 1 : 0);
    return min64(max64(tile, 1), To);
}

/* Output rows per tile at temporal stride 1: all of a frame, or (frames whose columns exceed
 * the budget) as many rows as fit, one output frame per tile. */
static int64_t conv_clip_rows(const conv_params *p, const co_oprt *rt)
{
    const int64_t Ho = rt->aux[A_HO], per_row = p->kcol * rt->aux[A_WO];
    if (p->st != 1 || rt->aux[A_DIRECT] || per_row * Ho * p->kt <= CONV_CLIP_COLUMN_FLOATS) return Ho;
    return min64(Ho, max64(1, CONV_CLIP_COLUMN_FLOATS / (per_row * p->kt)));
}

static size_t conv_clip_scratch(const conv_params *p, const co_oprt *rt, int64_t T, int64_t To)
{
    if (rt->aux[A_WINO]) return wino_clip_scratch(p, rt);
    if (conv_depthwise(p, rt)) {
        const dw_geom g = dw_geometry(p, rt);
        return (size_t)(T * dw_plane_floats(&g));
    }
    const int64_t tile = conv_clip_tile(p, rt, To), rows = conv_clip_rows(p, rt);
    const int64_t per_frame = conv_clip_frame_columns(p, rt) / rt->aux[A_HO] * rows;
    return (size_t)(per_frame * (tile + (p->st == 1 ? p->kt - 1 : 0)));
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
    rt->aux[A_WINO] = conv_winograd_pays(p, rt);
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
    rt->scratch_floats = t ? conv_clip_scratch(p, rt, in->d[2], T_out) : conv_step_scratch(p, rt, in->d[0]);
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

/* ---- element-wise passes over a frame's rows (B x cout rows of So floats) ----
 * The window emit (plus bias, fused activation, then the clear), a stateless step's clear before
 * its product and its bias + activation after. On one thread they were a quarter of a CoX3D-S
 * batch-8 step left serial beside split products; now they are cut into row ranges fixed by the
 * shapes and run on the pool. Every element is computed alone, in the same operations, so the
 * bits are those of one pass on any thread count. */
typedef enum conv_rows_pass { CONV_ROWS_EMIT, CONV_ROWS_SKIP, CONV_ROWS_CLEAR, CONV_ROWS_BIAS_ACT } conv_rows_pass;
enum { CONV_ROWS_TASK_FLOATS = 1 << 14, CONV_ROWS_PARALLEL_MIN = 1 << 15 }; /* as the element-wise passes */

/* Rows [r0, r1): EMIT: out = done + bias, activated, done cleared; SKIP: done cleared (a window
 * a temporal stride does not emit); CLEAR: out cleared; BIAS_ACT: out += bias (if any),
 * activated. */
static void conv_rows_range(const conv_params *p, int64_t So, conv_rows_pass pass, float *done, float *out, int64_t r0,
                            int64_t r1)
{
    const int64_t n = (r1 - r0) * So;
    if (pass == CONV_ROWS_CLEAR) {
        memset(out + r0 * So, 0, (size_t)n * sizeof(float));
        return;
    }
    if (pass == CONV_ROWS_EMIT || (pass == CONV_ROWS_BIAS_ACT && p->bias))
        for (int64_t r = r0; r < r1; r++) {
            const int64_t c = r % p->cout;
            const float bias = p->bias ? p->bias[c] : 0.0f;
            float *o = out + r * So;
            const float *s = pass == CONV_ROWS_EMIT ? done + r * So : o;
            for (int64_t i = 0; i < So; i++) o[i] = s[i] + bias;
        }
    /* once over the range, not per row: feature vectors (So = 1) would pay a call per float */
    if (pass != CONV_ROWS_SKIP) co_fused_act_run(&p->act, out + r0 * So, n);
    if (pass == CONV_ROWS_EMIT || pass == CONV_ROWS_SKIP) memset(done + r0 * So, 0, (size_t)n * sizeof(float));
}

typedef struct conv_rows_job {
    const conv_params *p;
    int64_t So, rows, rows_per_task;
    conv_rows_pass pass;
    float *done, *out;
} conv_rows_job;

static void conv_rows_task(void *ctx, int task)
{
    const conv_rows_job *j = ctx;
    const int64_t r0 = (int64_t)task * j->rows_per_task;
    conv_rows_range(j->p, j->So, j->pass, j->done, j->out, r0, min64(j->rows, r0 + j->rows_per_task));
}

/* `pass` over all B x cout rows, on the pool where the frame is large enough. */
static void conv_rows(const conv_params *p, int64_t B, int64_t So, conv_rows_pass pass, float *done, float *out)
{
    const int64_t rows = B * p->cout;
    co_pool *pool = co_pool_current();
    if (!pool || rows * So < CONV_ROWS_PARALLEL_MIN) {
        conv_rows_range(p, So, pass, done, out, 0, rows);
        return;
    }
    conv_rows_job j = {.p = p, .So = So, .rows = rows, .pass = pass, .done = done, .out = out,
                       .rows_per_task = max64(1, CONV_ROWS_TASK_FLOATS / So)};
    co_pool_run(pool, (int)ceil_div(rows, j.rows_per_task), conv_rows_task, &j);
}

/* Moves the phase after a step; returns whether the step emitted. */
static int conv_advance(const conv_params *p, conv_state_head *h)
{
    const int emit = h->countdown == 0;
    h->started = 1;
    h->pos = (h->pos + 1) % p->kt;
    h->countdown = emit ? p->st - 1 : h->countdown - 1;
    return emit;
}

/* After conv_accumulate: emits the window ending now (plus bias) if the phase says so, clears
 * it for reuse and moves the phase. */
static int conv_finish(const co_op *op, const co_oprt *rt, void *state, float *out)
{
    const conv_params *p = op->params;
    conv_state_head *h = state;
    const int64_t B = rt->out.d[0], So = rt->aux[A_SO];
    float *ring = (float *)(h + 1);
    conv_rows(p, B, So, h->countdown == 0 ? CONV_ROWS_EMIT : CONV_ROWS_SKIP, ring + h->pos * B * p->cout * So, out);
    return conv_advance(p, h);
}

/* ---- feature-vector steps on a pool: blocks of items, each from product to output ----
 * A vector-form step (Conv1d, packed weights) is one product X (items x cin) times the kt x cout
 * columns of every tap, one add per column into a ring window, then the window ending now is
 * emitted and cleared. With the product split by columns (the general path) the rest ran on the
 * calling thread, and the product's blocks, the ring and the output crossed between cores every
 * step: a Conv1d stack at batch 8 ran 1.18x on 2 threads. Here a pool task owns a block of items
 * (batch rows, of one or more streams) from product to output: its rows of the product against
 * all the weights, its rows' tap adds, emit and clear. The pool gives task t to the same thread
 * each step, so an item's ring and output stay in one core's cache, and so does the next layer's
 * input; only the weights are read by every core (read-only: a copy in each L2). Fewer rows per
 * product cost little: 4-row tiles still keep the FMA ports busy. The bits are the serial path's:
 * each product element is the same sum for any row count, each ring element gets one add per
 * frame, the emit comes after its window's last add. Not for a pending replicate start (its
 * virtual frames: serial path, once per stream). The phases are moved by the caller. */
#define CONV_VEC_PARALLEL_MIN_MACS 65536.0 /* as the products: below it a hand-off costs more */

typedef struct conv_vec_job {
    const co_op *op;
    int64_t n, B, items_per_task;
    const float *X; /* n B items x cin */
    float *prod;    /* n B items x (kt cout) */
    void *const *states;
    float *const *out;
} conv_vec_job;

static void conv_vec_task(void *ctx, int task)
{
    const conv_vec_job *v = ctx;
    const conv_params *p = v->op->params;
    const int64_t B = v->B, items = v->n * B, M = p->kt * p->cout, win = p->cout, slot = B * win;
    const int64_t f0 = (int64_t)task * v->items_per_task, f1 = min64(items, f0 + v->items_per_task);
    co_gemm_packed(f1 - f0, M, p->cin, v->X + f0 * p->cin, p->cin, p->wpack, 0.0f, v->prod + f0 * M, M);
    for (int64_t f = f0; f < f1;) { /* the block's items of stream i: b0 .. b1 */
        const int64_t i = f / B, b0 = f % B, b1 = min64(B, b0 + f1 - f);
        conv_state_head *h = v->states[i];
        float *ring = (float *)(h + 1);
        for (int64_t b = b0; b < b1; b++) {
            const float *P = v->prod + (i * B + b) * M;
            /* tap j of this frame belongs to the window ending k-1-j steps from now */
            for (int64_t j = 0; j < p->kt; j++)
                conv_add_tap(p, 1, ring + ((h->pos + p->kt - 1 - j) % p->kt) * slot + b * win, P + j * p->cout, 1);
        }
        conv_rows_range(p, 1, h->countdown == 0 ? CONV_ROWS_EMIT : CONV_ROWS_SKIP, ring + h->pos * slot, v->out[i],
                        b0 * p->cout, b1 * p->cout);
        f += b1 - b0;
    }
}

/* Runs the accumulation and emit of n streams' vector-form step as conv_vec_task blocks when
 * that pays (phases not moved); 0: not taken, nothing done. */
static int conv_step_vec_split(const co_op *op, const co_oprt *rt, int64_t n, const float *const *src,
                               void *const *states, float *const *out, float *scratch)
{
    const conv_params *p = op->params;
    co_pool *pool = co_pool_current();
    const int threads = co_pool_threads(pool);
    const int64_t B = rt->out.d[0], items = n * B, M = p->kt * p->cout;
    if (threads < 2 || items < 2 || !conv_packs_weights(p) || !conv_vector_form(p, rt) || conv_chunk_items(rt, items) < items)
        return 0;
    if ((double)items * (double)M * (double)p->cin < CONV_VEC_PARALLEL_MIN_MACS) return 0;
    if (op->fill == CO_FILL_REPLICATE)
        for (int64_t i = 0; i < n; i++)
            if (!((const conv_state_head *)states[i])->started) return 0;
    /* one block per thread: the products keep their widest row tiles */
    const int64_t tasks = min64(items, threads);
    /* scratch as conv_accumulate_chunk's for one chunk of all items: rows, then products */
    conv_vec_job v = {.op = op, .n = n, .B = B, .prod = scratch + items * p->cin, .states = states, .out = out,
                      .items_per_task = ceil_div(items, tasks)};
    if (n == 1) {
        v.X = src[0];
    } else {
        for (int64_t f = 0; f < items; f++)
            memcpy(scratch + f * p->cin, src[f / B] + (f % B) * p->cin, (size_t)p->cin * sizeof(float));
        v.X = scratch;
    }
    co_pool_run(pool, (int)ceil_div(items, v.items_per_task), conv_vec_task, &v);
    return 1;
}

/* Depthwise: the tap kernel per tap (conv_taps_depthwise). */
static int conv_step_depthwise(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out,
                               float *scratch)
{
    const conv_params *p = op->params;
    conv_state_head *h = state;
    const int64_t B = rt->out.d[0], So = rt->aux[A_SO], win = p->cout * So, slot = B * win;
    const int64_t S_in = rt->aux[A_H] * rt->aux[A_W];
    float *ring = (float *)(h + 1);
    float *d[CONV_MAX_KT];

    if (!h->started) {
        if (op->fill == CO_FILL_REPLICATE) {
            /* window ending at step n (1..k-1) already holds virtual frames 2-k..0, all equal to x_1:
             * taps 0..k-1-n of it */
            for (int64_t n = 1; n < p->kt; n++)
                for (int64_t j = 0; j <= p->kt - 1 - n; j++) { /* one tap a call: they all add to one window */
                    float *w1[1] = {ring + ((h->pos + n - 1) % p->kt) * slot};
                    conv_taps_depthwise(p, rt, B, in[0], p->cin * S_in, S_in, j, 1, w1, win, So, scratch);
                }
        }
        h->started = 1;
    }
    /* tap j of this frame belongs to the window ending k-1-j steps from now */
    for (int64_t j = 0; j < p->kt; j++) d[j] = ring + ((h->pos + p->kt - 1 - j) % p->kt) * slot;
    conv_taps_depthwise(p, rt, B, in[0], p->cin * S_in, S_in, 0, (int)p->kt, d, win, So, scratch);
    return conv_finish(op, rt, state, out);
}

/* Depthwise in the channel-vector form (dw_pixels_form): the ring holds the last kt input
 * frames, pixel-major; the output is computed only when a window is emitted. */
static int conv_step_dw_pixels(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out,
                               float *scratch)
{
    const conv_params *p = op->params;
    conv_state_head *h = state;
    const int64_t B = rt->out.d[0], C = p->cin, S = rt->aux[A_H] * rt->aux[A_W], slot = B * C * S;
    float *ring = (float *)(h + 1), *frame = ring + h->pos * slot;
    for (int64_t b = 0; b < B; b++) co_dw_transpose(C, S, in[0] + b * C * S, S, frame + b * C * S, C);
    if (!h->started) {
        /* replicate: the k-1 virtual frames before the first are copies of it (zeros: the reset ring) */
        if (op->fill == CO_FILL_REPLICATE)
            for (int64_t m = 1; m < p->kt; m++) memcpy(ring + ((h->pos + m) % p->kt) * slot, frame, (size_t)slot * sizeof(float));
        h->started = 1;
    }
    const int emit = h->countdown == 0;
    if (emit) {
        float *zero = scratch, *hwc = zero + C;
        memset(zero, 0, (size_t)C * sizeof(float));
        dw_pixels_job jb = {.p = p, .rt = rt, .ring = ring, .w = (const float *)p->wpack, .zero = zero, .slot = slot, .pos = h->pos,
                            .rows = B * rt->aux[A_H], .out = hwc};
        const int64_t tasks = min64(jb.rows, dw_step_tasks(p, rt, B * C));
        jb.per_task = (jb.rows + tasks - 1) / tasks;
        co_pool_run(co_pool_current(), (int)((jb.rows + jb.per_task - 1) / jb.per_task), dw_pixels_task, &jb);
        for (int64_t b = 0; b < B; b++) co_dw_transpose(S, C, hwc + b * S * C, C, out + b * C * S, S);
        co_fused_act_run(&p->act, out, slot);
    }
    return conv_advance(p, h);
}

static int conv_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out, float *scratch)
{
    if (dw_pixels_form(op->params, rt)) return conv_step_dw_pixels(op, rt, state, in, out, scratch);
    if (conv_depthwise(op->params, rt)) return conv_step_depthwise(op, rt, state, in, out, scratch);
    void *states[1] = {state};
    if (conv_step_vec_split(op, rt, 1, in, states, &out, scratch)) return conv_advance(op->params, state);
    conv_accumulate(op, rt, 1, in, states, &out, scratch);
    return conv_finish(op, rt, state, out);
}

/* n streams: one product for all their frames (in[i]: stream i's frame). */
static void conv_step_multi(const co_op *op, const co_oprt *rt, int n, void *const *states, const float *const *in,
                            float *const *out, int *produced, float *scratch)
{
    if (dw_pixels_form(op->params, rt)) {
        for (int i = 0; i < n; i++) produced[i] = conv_step_dw_pixels(op, rt, states[i], in + i, out[i], scratch);
        return;
    }
    if (conv_depthwise(op->params, rt)) {
        for (int i = 0; i < n; i++) produced[i] = conv_step_depthwise(op, rt, states[i], in + i, out[i], scratch);
        return;
    }
    if (conv_step_vec_split(op, rt, n, in, states, out, scratch)) {
        for (int i = 0; i < n; i++) produced[i] = conv_advance(op->params, states[i]);
        return;
    }
    conv_accumulate(op, rt, n, in, states, out, scratch);
    for (int i = 0; i < n; i++) produced[i] = conv_finish(op, rt, states[i], out[i]);
}

/* The fused activation, if any, over n outputs. */
static void conv_activate(const conv_params *p, float *out, int64_t n) { co_fused_act_run(&p->act, out, n); }

/* Stateless case (k=1, s=1, p=0): one product per frame, no ring. */
static int conv_step_stateless(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out,
                               float *scratch)
{
    const conv_params *p = op->params;
    const int64_t B = rt->out.d[0], So = rt->aux[A_SO], win = p->cout * So;
    const int64_t S_in = rt->aux[A_H] * rt->aux[A_W];
    conv_rows(p, B, So, CONV_ROWS_CLEAR, NULL, out);
    if (conv_depthwise(p, rt)) {
        float *d[1] = {out};
        conv_taps_depthwise(p, rt, B, in[0], p->cin * S_in, S_in, 0, 1, d, win, So, scratch);
    } else {
        conv_accumulate(op, rt, 1, in, NULL, &out, scratch);
    }
    conv_rows(p, B, So, CONV_ROWS_BIAS_ACT, NULL, out);
    return 1;
}

static void conv_step_multi_stateless(const co_op *op, const co_oprt *rt, int n, void *const *states,
                                      const float *const *in, float *const *out, int *produced, float *scratch)
{
    const conv_params *p = op->params;
    const int64_t B = rt->out.d[0], So = rt->aux[A_SO];
    if (conv_depthwise(p, rt)) {
        for (int i = 0; i < n; i++) produced[i] = conv_step_stateless(op, rt, NULL, in + i, out[i], scratch);
        return;
    }
    for (int i = 0; i < n; i++) conv_rows(p, B, So, CONV_ROWS_CLEAR, NULL, out[i]);
    conv_accumulate(op, rt, n, in, NULL, out, scratch);
    for (int i = 0; i < n; i++) {
        conv_rows(p, B, So, CONV_ROWS_BIAS_ACT, NULL, out[i]);
        produced[i] = 1;
    }
}

/* Output frames [lo, hi) within [o0, o1) whose tap j reads a frame inside the clip (all of them
 * with replicate padding, which reads the nearest edge frame instead). */
static void conv_tap_outputs(const conv_params *p, int64_t T, int64_t j, int64_t o0, int64_t o1, int64_t *lo,
                             int64_t *hi)
{
    if (p->replicate_pad) {
        *lo = o0;
        *hi = o1;
        return;
    }
    const int64_t first = p->pt - j <= 0 ? 0 : (p->pt - j + p->st - 1) / p->st, last_num = T - 1 + p->pt - j;
    *lo = max64(o0, first);
    *hi = min64(o1, last_num < 0 ? 0 : last_num / p->st + 1);
}

/* The input frame tap j of output frame o reads (edge frame for replicate padding). */
static int64_t conv_tap_frame(const conv_params *p, int64_t T, int64_t j, int64_t o)
{
    const int64_t tv = o * p->st - p->pt + j;
    return tv < 0 ? 0 : tv >= T ? T - 1 : tv;
}

/* Whole-clip convolution through products: the output starts as the bias; for each batch item,
 * group, tile of output frames and temporal tap, one product W_j (cout_g x kcol) x columns of the
 * tile's frames (kcol x frames * So) accumulates onto it. */
static void conv_clip_gemm(const conv_params *p, const co_oprt *rt, int64_t B, int64_t T, int64_t To, const float *x,
                           float *out, float *scratch)
{
    const int64_t S = rt->aux[A_H] * rt->aux[A_W], So = rt->aux[A_SO], cin_g = p->cin / p->groups;
    const int64_t cout_g = p->cout / p->groups, kt = p->kt, ldc = To * So, lda = p->kcol;
    const int direct = (int)rt->aux[A_DIRECT];
    const int64_t tile = conv_clip_tile(p, rt, To);
    for (int64_t r = 0; r < B * p->cout; r++) {
        const float bias = p->bias ? p->bias[r % p->cout] : 0.0f;
        float *o = out + r * ldc;
        for (int64_t i = 0; i < ldc; i++) o[i] = bias;
    }
    if (rt->aux[A_WINO]) {
        wino_clip(p, rt, B, T, To, x, out, scratch);
        return;
    }
    for (int64_t b = 0; b < B; b++)
        for (int64_t g = 0; g < p->groups; g++) {
            const float *xg = x + (b * p->cin + g * cin_g) * T * S; /* channels T * S apart */
            float *og = out + (b * p->cout + g * cout_g) * ldc;
            const float *wg = p->w + g * cout_g * lda;
            for (int64_t o0 = 0; o0 < To; o0 += tile) {
                const int64_t o1 = min64(To, o0 + tile);
                if (p->st == 1 && direct) { /* tap j of frames [lo, hi) is the clip from frame lo - pt + j */
                    for (int64_t j = 0; j < kt; j++) {
                        int64_t lo, hi;
                        conv_tap_outputs(p, T, j, o0, o1, &lo, &hi);
                        if (p->replicate_pad) { /* edge frames: the frames inside, then one product per edge frame */
                            lo = max64(o0, p->pt - j);
                            hi = max64(lo, min64(o1, T + p->pt - j));
                            for (int64_t o = o0; o < o1; o++)
                                if (o < lo || o >= hi)
                                    co_gemm_nn(cout_g, So, lda, wg + j * p->cout * lda, lda,
                                               xg + conv_tap_frame(p, T, j, o) * S, T * S, 1.0f, og + o * So, ldc);
                        }
                        if (hi > lo)
                            co_gemm_nn(cout_g, (hi - lo) * So, lda, wg + j * p->cout * lda, lda, xg + (lo - p->pt + j) * S,
                                       T * S, 1.0f, og + lo * So, ldc);
                    }
                } else if (p->st == 1) { /* the tile's input frames once; tap j reads them from lo - pt + j */
                    const int64_t f_lo = o0 - p->pt, slots = o1 - o0 + kt - 1, Ho = rt->aux[A_HO], Wo = rt->aux[A_WO];
                    const int64_t rows = conv_clip_rows(p, rt); /* < Ho: one output frame per tile */
                    for (int64_t r0 = 0; r0 < Ho; r0 += rows) {
                        const int64_t r1 = min64(Ho, r0 + rows), nloc = (r1 - r0) * Wo, ldb = slots * nloc;
                        for (int64_t s = 0; s < slots; s++) {
                            const int64_t f = f_lo + s;
                            if ((f < 0 || f >= T) && !p->replicate_pad) continue; /* never read */
                            const float *src = xg + (f < 0 ? 0 : f >= T ? T - 1 : f) * S;
                            im2col_rows(p, rt, src, T * S, cin_g, r0, r1, scratch + s * nloc, ldb);
                        }
                        for (int64_t j = 0; j < kt; j++) {
                            int64_t lo, hi;
                            conv_tap_outputs(p, T, j, o0, o1, &lo, &hi);
                            if (hi > lo)
                                co_gemm_nn(cout_g, (hi - lo) * nloc, lda, wg + j * p->cout * lda, lda,
                                           scratch + (lo - p->pt + j - f_lo) * nloc, ldb, 1.0f, og + lo * So + r0 * Wo, ldc);
                        }
                    }
                } else { /* temporal stride: tap j's frames gathered per tap */
                    for (int64_t j = 0; j < kt; j++) {
                        int64_t lo, hi;
                        conv_tap_outputs(p, T, j, o0, o1, &lo, &hi);
                        if (hi <= lo) continue;
                        const int64_t ldb = (hi - lo) * So;
                        for (int64_t o = lo; o < hi; o++) {
                            const float *src = xg + conv_tap_frame(p, T, j, o) * S;
                            if (direct)
                                for (int64_t c = 0; c < cin_g; c++)
                                    memcpy(scratch + c * ldb + (o - lo) * So, src + c * T * S, (size_t)So * sizeof(float));
                            else
                                im2col_ld(p, rt, src, T * S, cin_g, scratch + (o - lo) * So, ldb);
                        }
                        co_gemm_nn(cout_g, ldb, lda, wg + j * p->cout * lda, lda, scratch, ldb, 1.0f, og + lo * So, ldc);
                    }
                }
            }
        }
}

static co_status conv_clip(const co_op *op, const co_oprt *rt, const co_tshape *in_shapes, const float *const *in,
                           float *out, float *scratch)
{
    const conv_params *p = op->params;
    const int64_t B = in_shapes[0].d[0], T = in_shapes[0].d[2], To = rt->out.d[2];
    if (conv_depthwise(p, rt))
        conv_clip_depthwise(p, rt, B, T, To, in[0], out, scratch);
    else
        conv_clip_gemm(p, rt, B, T, To, in[0], out, scratch);
    conv_activate(p, out, co_tshape_numel(&rt->out));
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
    conv_params q = {0};
    q.nsd = nd - 1;
    q.cin = cin; q.cout = cout; q.groups = groups;
    q.kt = k[0]; q.st = s[0]; q.pt = pd[0];
    for (int i = 0; i < 2; i++) { q.ks[i] = 1; q.ss[i] = 1; q.ps[i] = 0; q.ds[i] = 1; }
    for (int i = 0; i < q.nsd; i++) {
        int j = 2 - q.nsd + i;
        q.ks[j] = k[1 + i]; q.ss[j] = s[1 + i]; q.ps[j] = pd[1 + i]; q.ds[j] = dl[1 + i];
    }
    q.replicate_pad = pad_mode == 1;
    q.kcol = kcol;
    q.bias = bias;
    const int winograd = conv_winograd_eligible(&q) && !(co_load_flags(b) & CO_LOAD_DIRECT_CONV);
    const size_t wino_bytes = winograd ? co_gemm_pack_size(cin, k[0] * cout) : 0;
    const size_t wpack_bytes = conv_pack_bytes(&q);
    conv_params *p = co_alloc(sizeof *p + wfloats * sizeof(float) + CO_WINO_ELEMS * wino_bytes + wpack_bytes);
    if (!p) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory for weights", path);
    *p = q;
    p->w = (float *)(p + 1);
    /* torch (cout, cin/g, kt, *ks) -> per tap (kt, cout, cin/g * ks) */
    const int64_t ksp = kcol / (cin / groups);
    for (int64_t o = 0; o < cout; o++)
        for (int64_t c = 0; c < cin / groups; c++)
            for (int64_t j = 0; j < k[0]; j++)
                memcpy(p->w + (j * cout + o) * kcol + c * ksp, w + ((o * (cin / groups) + c) * k[0] + j) * ksp,
                       (size_t)ksp * sizeof(float));
    if (wino_bytes) {
        float *tmp = co_alloc((size_t)(CO_WINO_ELEMS * k[0] * cout * cin) * sizeof(float));
        if (!tmp) {
            co_free(p);
            return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory for weights", path);
        }
        p->wino = (unsigned char *)(p->w + wfloats);
        p->wino_bytes = wino_bytes;
        wino_pack_weights(p, tmp);
        co_free(tmp);
    }
    if (wpack_bytes) {
        p->wpack = (unsigned char *)(p->w + wfloats) + CO_WINO_ELEMS * wino_bytes;
        p->wpack_bytes = wpack_bytes;
        conv_pack_weights(p);
    }
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

/* ---- fusion hooks (src/core/fuse.h) ---- */

int co_conv_fold_affine(co_op *op, int clip_rank, int64_t channels, const float *scale, const float *shift)
{
    if (op->cls != &k_conv && op->cls != &k_conv_stateless) return 0;
    const conv_params *p = op->params;
    if (p->act.on || channels != p->cout || clip_rank != p->nsd + 3) return 0;
    const int64_t wfloats = p->kt * p->cout * p->kcol;
    /* the Winograd weights are transforms of w: made again from the folded w, in the new block */
    const size_t wino_total = p->wino ? CO_WINO_ELEMS * p->wino_bytes : 0;
    float *tmp = NULL;
    if (p->wino && !(tmp = co_alloc((size_t)(CO_WINO_ELEMS * p->kt * p->cout * p->cin) * sizeof(float)))) return -1;
    conv_params *q = co_alloc(sizeof *q + (size_t)(wfloats + p->cout) * sizeof(float) + wino_total + p->wpack_bytes);
    if (!q) {
        co_free(tmp);
        return -1;
    }
    *q = *p;
    q->w = (float *)(q + 1);
    float *bias = q->w + wfloats;
    for (int64_t j = 0; j < p->kt; j++)
        for (int64_t c = 0; c < p->cout; c++) {
            const float *src = p->w + (j * p->cout + c) * p->kcol;
            float *dst = q->w + (j * p->cout + c) * p->kcol;
            for (int64_t i = 0; i < p->kcol; i++) dst[i] = src[i] * scale[c];
        }
    for (int64_t c = 0; c < p->cout; c++) bias[c] = (p->bias ? p->bias[c] : 0.0f) * scale[c] + shift[c];
    q->bias = bias;
    if (p->wino) {
        q->wino = (unsigned char *)(bias + p->cout);
        wino_pack_weights(q, tmp);
        co_free(tmp);
    }
    if (p->wpack) {
        q->wpack = (unsigned char *)(bias + p->cout) + wino_total;
        conv_pack_weights(q);
    }
    co_free(op->params);
    op->params = q;
    return 1;
}

int co_conv_fuse_pointwise(co_op *op, const co_pointwise *act)
{
    if (op->cls != &k_conv && op->cls != &k_conv_stateless) return 0;
    return co_fused_act_set(&((conv_params *)op->params)->act, act);
}
