/*
 * rnn.c — RNN (tanh, relu), GRU and LSTM (with proj_size) on (B, C, T) clips, as the
 * reference's continual versions: one torch cell update per frame, the hidden (and cell)
 * state of every layer kept per stream. forward over a clip starts from zeros, like torch.nn
 * with hx=None. Dropout between layers is a training-time thing and ignored.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/build.h"
#include "kernels/gemm.h"
#include "kernels/pointwise.h"

enum cell { CELL_RNN_TANH, CELL_RNN_RELU, CELL_GRU, CELL_LSTM };

typedef struct rnn_layer {
    int64_t in;                    /* input features of this layer */
    const float *w_ih, *w_hh, *b_ih, *b_hh, *w_hr; /* model-owned; biases/w_hr may be NULL */
} rnn_layer;

typedef struct rnn_params {
    int cell, layers;
    int64_t input, hidden, out;    /* out = proj_size or hidden */
    int64_t gates;                 /* 1, 3 or 4 */
    rnn_layer l[];
} rnn_params;

static co_status rnn_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    const rnn_params *p = op->params;
    const int t = in->has_time;
    char buf[96];
    if (in->ndim != 2 + t || in->d[1] != p->input)
        return co_error(CO_ERR_SHAPE, "%s: expected %s (B, %lld%s), got %s", op->path, t ? "a clip" : "a frame",
                        (long long)p->input, t ? ", T" : "", co_tshape_str(in, buf, sizeof buf));
    const int64_t B = in->d[0], GH = p->gates * p->hidden, w = p->input > p->out ? p->input : p->out;
    rt->out = *in;
    rt->out.d[1] = p->out;
    int64_t macs = 0;
    for (int i = 0; i < p->layers; i++) macs += GH * (p->l[i].in + p->out) + (p->out != p->hidden ? p->out * p->hidden : 0);
    rt->macs = B * macs * (t ? in->d[2] : 1);
    /* scratch: gx, gh (B x GH), layer io x2 (B x w), cell tmp (B x hidden) */
    rt->scratch_floats = (size_t)(B * (2 * GH + 2 * w + p->hidden));
    /* clip mode keeps its h and c in scratch too */
    const size_t state_floats = (size_t)(p->layers * B * (p->out + (p->cell == CELL_LSTM ? p->hidden : 0)));
    if (t) rt->scratch_floats += state_floats + (size_t)(B * (p->input + p->out));
    else rt->state_bytes = state_floats * sizeof(float);
    return CO_OK;
}

static inline float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }

/* One time step through every layer. x: (B, input); y: (B, out); h: (L, B, out); c: (L, B, hidden). */
static void rnn_cell_step(const rnn_params *p, int64_t B, const float *x, float *y, float *h, float *c, float *scratch)
{
    const int64_t H = p->hidden, GH = p->gates * H, w = p->input > p->out ? p->input : p->out;
    float *gx = scratch, *gh = gx + B * GH, *io0 = gh + B * GH, *io1 = io0 + B * w, *tmp = io1 + B * w;
    const float *cur = x;
    for (int li = 0; li < p->layers; li++) {
        const rnn_layer *L = &p->l[li];
        float *hl = h + li * B * p->out, *cl = c ? c + li * B * H : NULL;
        float *nxt = li == p->layers - 1 ? y : (li % 2 ? io1 : io0);
        co_gemm_nt(B, GH, L->in, cur, L->in, L->w_ih, L->in, 0.0f, gx, GH);
        co_gemm_nt(B, GH, p->out, hl, p->out, L->w_hh, p->out, 0.0f, gh, GH);
        for (int64_t b = 0; b < B; b++) {
            float *ax = gx + b * GH, *ah = gh + b * GH;
            for (int64_t j = 0; j < GH; j++) {
                if (L->b_ih) ax[j] += L->b_ih[j];
                if (L->b_hh) ah[j] += L->b_hh[j];
            }
            float *hb = hl + b * p->out;
            switch (p->cell) {
            case CELL_RNN_TANH:
                for (int64_t j = 0; j < H; j++) hb[j] = tanhf(ax[j] + ah[j]);
                break;
            case CELL_RNN_RELU: { /* the shared relu: NaN stays NaN, as torch */
                static const co_pointwise k_relu = {CO_PW_RELU, 0.0f, 0.0f, 0.0f};
                for (int64_t j = 0; j < H; j++) hb[j] = ax[j] + ah[j];
                co_pointwise_run(&k_relu, hb, hb, H);
                break;
            }
            case CELL_GRU: /* gates r, z, n */
                for (int64_t j = 0; j < H; j++) {
                    float r = sigm(ax[j] + ah[j]), z = sigm(ax[H + j] + ah[H + j]);
                    float n = tanhf(ax[2 * H + j] + r * ah[2 * H + j]);
                    hb[j] = (1.0f - z) * n + z * hb[j];
                }
                break;
            case CELL_LSTM: { /* gates i, f, g, o */
                float *cb = cl + b * H, *hh = tmp + b * H;
                for (int64_t j = 0; j < H; j++) {
                    float ig = sigm(ax[j] + ah[j]), fg = sigm(ax[H + j] + ah[H + j]);
                    float gg = tanhf(ax[2 * H + j] + ah[2 * H + j]), og = sigm(ax[3 * H + j] + ah[3 * H + j]);
                    cb[j] = fg * cb[j] + ig * gg;
                    hh[j] = og * tanhf(cb[j]);
                }
                if (!L->w_hr) memcpy(hb, hh, (size_t)H * sizeof(float));
                break;
            }
            }
        }
        if (p->cell == CELL_LSTM && L->w_hr) co_gemm_nt(B, p->out, H, tmp, H, L->w_hr, H, 0.0f, hl, p->out);
        memcpy(nxt, hl, (size_t)(B * p->out) * sizeof(float));
        cur = nxt;
    }
}

static int rnn_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out, float *scratch)
{
    const rnn_params *p = op->params;
    const int64_t B = rt->out.d[0];
    float *h = state, *c = p->cell == CELL_LSTM ? h + p->layers * B * p->out : NULL;
    rnn_cell_step(p, B, in[0], out, h, c, scratch);
    return 1;
}

static co_status rnn_clip(const co_op *op, const co_oprt *rt, const co_tshape *in_shapes, const float *const *in,
                          float *out, float *scratch)
{
    const rnn_params *p = op->params;
    const int64_t B = rt->out.d[0], T = in_shapes[0].d[2], GH = p->gates * p->hidden;
    const int64_t w = p->input > p->out ? p->input : p->out;
    /* scratch: the cell's own, then h, c, one input frame and one output frame */
    float *h = scratch + B * (2 * GH + 2 * w + p->hidden);
    float *c = p->cell == CELL_LSTM ? h + p->layers * B * p->out : NULL;
    float *xt = (c ? c + p->layers * B * p->hidden : h + p->layers * B * p->out), *yt = xt + B * p->input;
    memset(h, 0, (size_t)(p->layers * B * (p->out + (c ? p->hidden : 0))) * sizeof(float));
    for (int64_t t = 0; t < T; t++) {
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < p->input; i++) xt[b * p->input + i] = in[0][(b * p->input + i) * T + t];
        rnn_cell_step(p, B, xt, yt, h, c, scratch);
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < p->out; i++) out[(b * p->out + i) * T + t] = yt[b * p->out + i];
    }
    return CO_OK;
}

static const co_op_class k_rnn = {"rnn", rnn_resolve, NULL, NULL, rnn_step, rnn_clip, NULL, .whole_stream = 1};

co_status co_build_rnn(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *props)
{
    const char *type = cJSON_GetObjectItemCaseSensitive(node, "type")->valuestring;
    static const char *const k_nonlin[] = {"tanh", "relu", NULL};
    int64_t input, hidden, layers, proj = 0;
    int bias, batch_first, bidir, nonlin = 0;
    double dropout;
    co_status st;
    if ((st = co_get_int(b, node, path, "input_size", 1, 0, 1, 1 << 20, &input)) ||
        (st = co_get_int(b, node, path, "hidden_size", 1, 0, 1, 1 << 20, &hidden)) ||
        (st = co_get_int(b, node, path, "num_layers", 0, 1, 1, 64, &layers)) ||
        (st = co_get_bool(b, node, path, "bias", 0, 1, &bias)) ||
        (st = co_get_bool(b, node, path, "batch_first", 0, 1, &batch_first)) ||
        (st = co_get_bool(b, node, path, "bidirectional", 0, 0, &bidir)) ||
        (st = co_get_float(b, node, path, "dropout", 0, 0.0, 0.0, 1.0, &dropout)))
        return st;
    int cell = co_build_variant(b); /* CELL_RNN_TANH (RNN), CELL_GRU or CELL_LSTM */
    if (cell < 0) return co_error(CO_ERR_NETWORK, "%s: not a recurrent type", path);
    if (cell == CELL_RNN_TANH && (st = co_get_choice(b, node, path, "nonlinearity", 0, 0, k_nonlin, &nonlin))) return st;
    if (nonlin == 1) cell = CELL_RNN_RELU;
    if (cell == CELL_LSTM && (st = co_get_int(b, node, path, "proj_size", 0, 0, 0, hidden - 1, &proj))) return st;
    if (bidir) return co_error(CO_ERR_UNSUPPORTED, "%s: a bidirectional %s needs the future and cannot stream", path, type);
    rnn_params *p = co_calloc(1, sizeof *p + (size_t)layers * sizeof(rnn_layer));
    if (!p) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    p->cell = cell;
    p->layers = (int)layers;
    p->input = input;
    p->hidden = hidden;
    p->out = proj ? proj : hidden;
    p->gates = cell == CELL_GRU ? 3 : cell == CELL_LSTM ? 4 : 1;
    const int64_t GH = p->gates * hidden;
    for (int i = 0; i < p->layers && !st; i++) {
        rnn_layer *L = &p->l[i];
        char name[64];
        L->in = i == 0 ? input : p->out;
        int64_t s_ih[2] = {GH, L->in}, s_hh[2] = {GH, p->out}, s_hr[2] = {p->out, hidden};
        snprintf(name, sizeof name, "weight_ih_l%d", i);
        if ((st = co_take_tensor(b, path, name, 2, s_ih, 1, &L->w_ih))) break;
        snprintf(name, sizeof name, "weight_hh_l%d", i);
        if ((st = co_take_tensor(b, path, name, 2, s_hh, 1, &L->w_hh))) break;
        if (bias) {
            snprintf(name, sizeof name, "bias_ih_l%d", i);
            if ((st = co_take_tensor(b, path, name, 1, &GH, 1, &L->b_ih))) break;
            snprintf(name, sizeof name, "bias_hh_l%d", i);
            if ((st = co_take_tensor(b, path, name, 1, &GH, 1, &L->b_hh))) break;
        }
        if (proj) {
            snprintf(name, sizeof name, "weight_hr_l%d", i);
            if ((st = co_take_tensor(b, path, name, 2, s_hr, 1, &L->w_hr))) break;
        }
    }
    if (st) {
        co_free(p);
        return st;
    }
    co_op *op = co_emit(b, &k_rnn, path, 1, &in, p);
    if (!op) return co_emit_failure(b);
    *out = op->out;
    co_props_frame_local(props);
    return CO_OK;
}

/* ---- this family's module types (the registry, build.h); variant: the cell ---- */
static const co_module_reg k_rnn_modules[] = {
    {"RNN", co_build_rnn, CELL_RNN_TANH},
    {"GRU", co_build_rnn, CELL_GRU},
    {"LSTM", co_build_rnn, CELL_LSTM},
};
CO_MODULE_LIST(co_rnn_modules, k_rnn_modules)
