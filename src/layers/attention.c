/*
 * attention.c — the continual multi-head attentions of Continual Transformers (Hedegaard et
 * al., ICLR 2023) on (B, E, T) clips / (B, E) frames:
 *
 *   SingleOutputMultiheadAttention: per step, one query (the newest, or one `delay` steps old)
 *     against the last N keys and values, kept in rings in the stream arena.
 *   RetroactiveMultiheadAttention: per step, the updated outputs of all N window tokens
 *     (B, E, N), oldest first. Each token's softmax sums are updated in O(d) when the oldest
 *     key leaves and the new one enters.
 *
 * Numerics (decision, semantics.md Q6): the reference keeps raw exp sums and overflows to
 * inf/NaN on logits of a few tens. Here every row keeps its sums relative to a running
 * maximum of its logits (rescaled when a larger logit arrives), so no exp exceeds 1; when the
 * key leaving the window held almost all of a row's mass (the subtraction would cancel), the
 * row is recomputed exactly over the window. Outputs match softmax attention over the window
 * to float precision at any logit scale.
 *
 * forward over a clip is torch.nn.MultiheadAttention's self-attention over the T tokens
 * (SingleOutput with single_output_forward: only the token at query_index).
 */
#include <math.h>
#include <string.h>

#include "core/build.h"
#include "kernels/gemm.h"

typedef struct mha_params {
    int retroactive;
    int64_t E, H, dh, N;
    int64_t lag;               /* single-output: steps the query lags the newest key */
    int64_t query_index;       /* for single_output_forward */
    int single_output_forward;
    float scale;               /* 1/sqrt(dh) */
    const float *w_in, *b_in, *w_out, *b_out; /* model-owned; biases may be NULL */
} mha_params;

/* ---- shared pieces ---- */
/* (rows, E) -> (rows, 3E): q, k, v of each row */
static void project_qkv(const mha_params *p, const float *x, int64_t rows, float *qkv)
{
    co_gemm_nt(rows, 3 * p->E, p->E, x, p->E, p->w_in, p->E, 0.0f, qkv, 3 * p->E);
    if (p->b_in)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < 3 * p->E; j++) qkv[r * 3 * p->E + j] += p->b_in[j];
}

static inline float dot(const float *a, const float *b, int64_t n)
{
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Softmax attention of one query over n keys/values (rows `stride` floats apart). */
static void attend(const float *q, const float *K, const float *V, int64_t n, int64_t stride, int64_t dh, float *w,
                   float *o)
{
    float mx = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        w[j] = dot(q, K + j * stride, dh);
        if (w[j] > mx) mx = w[j];
    }
    float den = 0.0f;
    for (int64_t j = 0; j < n; j++) den += (w[j] = expf(w[j] - mx));
    memset(o, 0, (size_t)dh * sizeof(float));
    for (int64_t j = 0; j < n; j++) {
        const float a = w[j] / den, *v = V + j * stride;
        for (int64_t i = 0; i < dh; i++) o[i] += a * v[i];
    }
}

enum { RETRO_FOLDED = 1 }; /* rt->aux[0] of a retroactive attention: numerators in output space */
static size_t retro_floats_per_item(const mha_params *p, int folded);

/* ---- resolve ---- */

static co_status mha_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    const mha_params *p = op->params;
    const int t = in->has_time;
    char buf[96];
    if (in->ndim != 2 + t || in->d[1] != p->E)
        return co_error(CO_ERR_SHAPE, "%s: attention takes %s (B, E=%lld%s), got %s", op->path, t ? "clips" : "frames",
                        (long long)p->E, t ? ", T" : "", co_tshape_str(in, buf, sizeof buf));
    const int64_t B = in->d[0], E = p->E, N = p->N;
    rt->out = *in;
    if (t) {
        const int64_t T = in->d[2], Tq = p->single_output_forward ? 1 : T;
        if (p->single_output_forward && (p->query_index >= T || p->query_index < -T))
            return co_error(CO_ERR_SHAPE, "%s: query_index %lld is outside a clip of %lld tokens", op->path,
                            (long long)p->query_index, (long long)T);
        rt->out.d[2] = Tq;
        rt->scratch_floats = (size_t)(T * 3 * E + T * E + T + 2 * Tq * E);
        rt->macs = B * ((p->single_output_forward ? 2 * T + 1 : 3 * T) * E * E + 2 * Tq * T * E + Tq * E * E);
        return CO_OK;
    }
    if (p->retroactive) {
        rt->out.ndim = 3;
        rt->out.d[2] = N;
        const int folded = B == 1; /* see retro_step: which layout of the numerators */
        rt->aux[0] = folded;
        rt->state_bytes = 4 * sizeof(int64_t) + (size_t)B * retro_floats_per_item(p, folded) * sizeof(float);
        rt->scratch_floats = (size_t)(B * 3 * E + (folded ? B * p->H * E : 2 * B * N * E) + (N > E ? N : E) + 2 * E);
        rt->macs = folded ? B * (3 * E * E + E * E + 2 * N * E + 3 * N * p->H * E)
                          : B * (3 * E * E + 6 * N * E + N * E * E);
    } else {
        rt->state_bytes = 4 * sizeof(int64_t) + (size_t)(B * (2 * N + p->lag) * E) * sizeof(float);
        rt->scratch_floats = (size_t)(B * 3 * E + N + B * E);
        rt->macs = B * (3 * E * E + 2 * N * E + E * E);
    }
    return CO_OK;
}

/* state head: pos (ring slot of the oldest token = next to overwrite), count (steps, capped
 * at N), qpos (single-output query ring) */
typedef struct mha_head { int64_t pos, count, qpos, pad; } mha_head;

static void mha_reset(const co_op *op, const co_oprt *rt, void *state)
{
    const mha_params *p = op->params;
    memset(state, 0, rt->state_bytes);
    if (p->retroactive) { /* zero tokens: every row attends N zero keys, sum exp(0) = N */
        const int64_t B = rt->out.d[0], N = p->N, E = p->E, H = p->H;
        float *base = (float *)((mha_head *)state + 1);
        for (int64_t b = 0; b < B; b++) {
            float *den = base + (size_t)b * retro_floats_per_item(p, rt->aux[0] == RETRO_FOLDED) + 2 * N * E + N * H;
            for (int64_t i = 0; i < N * H; i++) den[i] = (float)N;
        }
    }
}

static co_status mha_check_state(const co_op *op, const co_oprt *rt, const void *state)
{
    const mha_params *p = op->params;
    const mha_head *h = state;
    if (h->pos < 0 || h->pos >= p->N || h->count < 0 || h->count > p->N || h->qpos < 0 ||
        h->qpos >= (p->lag > 0 ? p->lag : 1))
        return co_error(CO_ERR_STATE, "%s: saved state has an out-of-range ring index", op->path);
    return CO_OK;
}

static void out_project(const mha_params *p, const float *o, int64_t rows, float *y)
{
    co_gemm_nt(rows, p->E, p->E, o, p->E, p->w_out, p->E, 0.0f, y, p->E);
    if (p->b_out)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < p->E; j++) y[r * p->E + j] += p->b_out[j];
}

/* ---- single output ---- */
static int so_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out, float *scratch)
{
    const mha_params *p = op->params;
    mha_head *h = state;
    const int64_t B = rt->out.d[0], E = p->E, N = p->N, dh = p->dh;
    float *K = (float *)(h + 1), *V = K + B * N * E, *Q = V + B * N * E;
    float *qkv = scratch, *w = qkv + B * 3 * E, *o = w + N;
    project_qkv(p, in[0], B, qkv);
    for (int64_t b = 0; b < B; b++) {
        float *q = qkv + b * 3 * E;
        for (int64_t i = 0; i < E; i++) q[i] *= p->scale;
        memcpy(K + (b * N + h->pos) * E, q + E, (size_t)E * sizeof(float));
        memcpy(V + (b * N + h->pos) * E, q + 2 * E, (size_t)E * sizeof(float));
        if (p->lag > 0) { /* the query used is `lag` steps old; the new one waits in the ring */
            float *slot = Q + (b * p->lag + h->qpos) * E;
            for (int64_t i = 0; i < E; i++) {
                float t = slot[i];
                slot[i] = q[i];
                q[i] = t;
            }
        }
    }
    if (p->lag > 0) h->qpos = (h->qpos + 1) % p->lag;
    h->pos = (h->pos + 1) % N;
    if (h->count < N) h->count++;
    if (h->count < N) return 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t hh = 0; hh < p->H; hh++)
            attend(qkv + b * 3 * E + hh * dh, K + b * N * E + hh * dh, V + b * N * E + hh * dh, N, E, dh, w,
                   o + b * E + hh * dh);
    out_project(p, o, B, out);
    return 1;
}

/* ---- retroactive ----
 * Per batch item the state holds the window's keys K and scaled queries Q (N x E each), and per
 * token i and head h the running logit maximum M, the softmax denominator D and P (the largest D
 * since the row was last computed exactly), plus the numerators, in one of two layouts:
 *
 *   folded (batch 1): A[i][h] = sum_j exp(q_i.k_j - M) u_j[h] in output space, where
 *     u_j[h] = Wo[:, h] v_j[h] is the value already through its head's block of the output
 *     projection (U caches it). A step then costs O(N H E) adds and no N x E x E projection.
 *   per head (batch > 1): AV[i] = sum_j exp(q_i.k_j - M) v_j (N x E, like V), and the N outputs
 *     of every batch item go through the output projection in one GEMM: (B N x E) x (E x E).
 *     The folded state is N H E floats twice per item — at batch 8 its memory traffic costs
 *     more than the shared GEMM. */
static size_t retro_floats_per_item(const mha_params *p, int folded)
{
    const size_t common = (size_t)(2 * p->N * p->E + 3 * p->N * p->H);
    return common + (folded ? (size_t)(2 * p->N * p->H * p->E) : (size_t)(2 * p->N * p->E));
}

/* Exact sums of row q (head h) over the window: X rows `stride` apart, `width` floats from `off`. */
static void retro_row_exact(const mha_params *p, const float *q, const float *K, const float *X, int64_t stride,
                            int64_t off, int64_t width, int64_t h, float *m, float *den, float *a, float *w)
{
    const int64_t N = p->N, E = p->E, dh = p->dh;
    float mx = -INFINITY;
    for (int64_t j = 0; j < N; j++) {
        w[j] = dot(q, K + j * E + h * dh, dh);
        if (w[j] > mx) mx = w[j];
    }
    float d = 0.0f;
    memset(a, 0, (size_t)width * sizeof(float));
    for (int64_t j = 0; j < N; j++) {
        const float e = expf(w[j] - mx), *x = X + j * stride + off;
        d += e;
        for (int64_t i = 0; i < width; i++) a[i] += e * x[i];
    }
    *m = mx;
    *den = d;
}

/* One row's update: key k_old (value x_old) leaves, k_new (x_new) enters. Returns 0 when the
 * running sums cancelled too far and the row must be recomputed exactly (D is then -1). */
static int retro_row_update(const float *q, const float *k_old, const float *x_old, const float *k_new,
                            const float *x_new, int64_t dh, int64_t width, float *m, float *d, float *pk, float *a)
{
    const float before = *d, e_old = expf(dot(q, k_old, dh) - *m);
    const float s = dot(q, k_new, dh);
    float scale_old = 1.0f;
    if (s > *m) { /* a larger logit: move the reference point, so no exp exceeds 1 */
        scale_old = expf(*m - s);
        *m = s;
    }
    const float e_new = expf(s - *m), e_out = e_old * scale_old;
    *d = (*d - e_old) * scale_old + e_new;
    /* the error of the running sums is relative to the largest denominator since the last exact
     * computation (P): recompute once the mass left is below 1/32 of it */
    *pk *= scale_old;
    if (before * scale_old > *pk) *pk = before * scale_old;
    if (!((*d - e_new) > *pk * (1.0f / 32.0f)) || !isfinite(*d)) {
        *d = -1.0f;
        return 0;
    }
    for (int64_t i = 0; i < width; i++) a[i] = a[i] * scale_old - e_out * x_old[i] + e_new * x_new[i];
    return 1;
}

static int retro_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out, float *scratch)
{
    const mha_params *p = op->params;
    mha_head *h = state;
    const int folded = rt->aux[0] == RETRO_FOLDED;
    const int64_t B = rt->out.d[0], E = p->E, N = p->N, H = p->H, dh = p->dh, wmax = N > E ? N : E;
    /* scratch: projections, then folded: new values in output space, or per head: outputs O and Y */
    float *qkv_all = scratch, *extra = qkv_all + B * 3 * E;
    float *un_all = extra, *O = extra, *Y = O + B * N * E;
    float *w = folded ? un_all + B * H * E : Y + B * N * E, *x_old = w + wmax, *k_old = x_old + E;
    const int64_t width = folded ? E : dh;
    const int64_t slot = h->pos;
    const int emit = h->count + 1 >= N;
    project_qkv(p, in[0], B, qkv_all); /* the whole batch in one pass over the weights */
    if (folded)
        for (int64_t hh = 0; hh < H; hh++) /* un[b][h] = Wo[:, h] v[b][h] */
            co_gemm_nt(B, E, dh, qkv_all + 2 * E + hh * dh, 3 * E, p->w_out + hh * dh, E, 0.0f, un_all + hh * E, H * E);
    for (int64_t b = 0; b < B; b++) {
        float *K = (float *)(h + 1) + b * retro_floats_per_item(p, folded), *Q = K + N * E, *M = Q + N * E,
              *D = M + N * H, *P = D + N * H, *X = P + N * H; /* X: U (folded) or V */
        float *A = folded ? X + N * H * E : X + N * E;
        const int64_t xstride = folded ? H * E : E;
        float *qkv = qkv_all + b * 3 * E;
        for (int64_t i = 0; i < E; i++) qkv[i] *= p->scale;
        const float *qn = qkv, *kn = qkv + E, *xn = folded ? un_all + b * H * E : qkv + 2 * E;
        for (int64_t hh = 0; hh < H; hh++) {
            const int64_t c = hh * dh, xoff = folded ? hh * E : c;
            memcpy(k_old, K + slot * E + c, (size_t)dh * sizeof(float));
            memcpy(x_old, X + slot * xstride + xoff, (size_t)width * sizeof(float));
            for (int64_t r = 0; r < N; r++)
                if (r != slot)
                    retro_row_update(Q + r * E + c, k_old, x_old, kn + c, xn + xoff, dh, width, &M[r * H + hh],
                                     &D[r * H + hh], &P[r * H + hh], A + r * xstride + xoff);
        }
        memcpy(K + slot * E, kn, (size_t)E * sizeof(float));
        memcpy(Q + slot * E, qn, (size_t)E * sizeof(float));
        memcpy(X + slot * xstride, xn, (size_t)(folded ? H * E : E) * sizeof(float));
        for (int64_t r = 0; r < N; r++)
            for (int64_t hh = 0; hh < H; hh++)
                if (r == slot || D[r * H + hh] < 0.0f) {
                    const int64_t xoff = folded ? hh * E : hh * dh;
                    retro_row_exact(p, Q + r * E + hh * dh, K, X, xstride, xoff, width, hh, &M[r * H + hh],
                                    &D[r * H + hh], A + r * xstride + xoff, w);
                    P[r * H + hh] = D[r * H + hh];
                }
        if (!emit) continue;
        for (int64_t r = 0; r < N; r++) { /* window outputs, oldest token first */
            const int64_t sl = (slot + 1 + r) % N;
            if (folded) {
                float *o = w, *y = out + b * E * N;
                for (int64_t i = 0; i < E; i++) o[i] = p->b_out ? p->b_out[i] : 0.0f;
                for (int64_t hh = 0; hh < H; hh++) {
                    const float inv = 1.0f / D[sl * H + hh], *a = A + (sl * H + hh) * E;
                    for (int64_t i = 0; i < E; i++) o[i] += a[i] * inv;
                }
                for (int64_t i = 0; i < E; i++) y[i * N + r] = o[i];
            } else {
                float *o = O + (b * N + r) * E;
                for (int64_t hh = 0; hh < H; hh++) {
                    const float inv = 1.0f / D[sl * H + hh], *a = A + sl * E + hh * dh;
                    for (int64_t i = 0; i < dh; i++) o[hh * dh + i] = a[i] * inv;
                }
            }
        }
    }
    if (emit && !folded) {
        out_project(p, O, B * N, Y);
        for (int64_t b = 0; b < B; b++)
            for (int64_t r = 0; r < N; r++)
                for (int64_t j = 0; j < E; j++) out[(b * E + j) * N + r] = Y[(b * N + r) * E + j];
    }
    h->pos = (h->pos + 1) % N;
    if (h->count < N) h->count++;
    return emit;
}

/* ---- clip: torch self-attention over the T tokens of (B, E, T) ---- */
static co_status mha_clip(const co_op *op, const co_oprt *rt, const co_tshape *in_shapes, const float *const *in,
                          float *out, float *scratch)
{
    const mha_params *p = op->params;
    const int64_t B = in_shapes[0].d[0], T = in_shapes[0].d[2], E = p->E, dh = p->dh, Tq = rt->out.d[2];
    float *qkv = scratch, *X = qkv + T * 3 * E, *w = X + T * E, *o = w + T, *y = o + Tq * E;
    const int64_t q0 = p->single_output_forward ? (p->query_index < 0 ? p->query_index + T : p->query_index) : 0;
    for (int64_t b = 0; b < B; b++) {
        const float *xb = in[0] + b * E * T;
        for (int64_t t = 0; t < T; t++)
            for (int64_t j = 0; j < E; j++) X[t * E + j] = xb[j * T + t];
        if (p->single_output_forward) { /* keys and values of every token, the query of one */
            co_gemm_nt(T, 2 * E, E, X, E, p->w_in + E * E, E, 0.0f, qkv + E, 3 * E);
            co_gemm_nt(1, E, E, X + q0 * E, E, p->w_in, E, 0.0f, qkv + q0 * 3 * E, 3 * E);
            if (p->b_in) {
                for (int64_t t = 0; t < T; t++)
                    for (int64_t j = E; j < 3 * E; j++) qkv[t * 3 * E + j] += p->b_in[j];
                for (int64_t j = 0; j < E; j++) qkv[q0 * 3 * E + j] += p->b_in[j];
            }
        } else {
            project_qkv(p, X, T, qkv);
        }
        for (int64_t r = 0; r < Tq; r++) {
            float *q = qkv + (q0 + r) * 3 * E;
            for (int64_t i = 0; i < E; i++) q[i] *= p->scale;
            for (int64_t hh = 0; hh < p->H; hh++)
                attend(q + hh * dh, qkv + E + hh * dh, qkv + 2 * E + hh * dh, T, 3 * E, dh, w, o + r * E + hh * dh);
        }
        out_project(p, o, Tq, y);
        float *ob = out + b * E * Tq;
        for (int64_t r = 0; r < Tq; r++)
            for (int64_t j = 0; j < E; j++) ob[j * Tq + r] = y[r * E + j];
    }
    return CO_OK;
}

static const co_op_class k_single_output = {"single_output_mha", mha_resolve, mha_reset, mha_check_state, so_step, mha_clip,
                                            NULL, .whole_stream = 1};
static const co_op_class k_retroactive = {"retroactive_mha", mha_resolve, mha_reset, mha_check_state, retro_step, mha_clip,
                                          NULL, .whole_stream = 1};

co_status co_build_attention(co_builder *b, const cJSON *node, const char *path, int in, int *out, co_props *props)
{
    const char *type = cJSON_GetObjectItemCaseSensitive(node, "type")->valuestring;
    const int retro = strncmp(type, "Retroactive", 11) == 0;
    int64_t E, H, N, qi = -1;
    int bias, add_bias_kv, add_zero_attn, sof = 1, batch_first, eds;
    double dropout;
    co_status st;
    if ((st = co_get_int(b, node, path, "embed_dim", 1, 0, 1, 1 << 16, &E)) ||
        (st = co_get_int(b, node, path, "num_heads", 1, 0, 1, 1 << 12, &H)) ||
        (st = co_get_int(b, node, path, "sequence_len", 1, 0, 1, 1 << 14, &N)) ||
        (st = co_get_bool(b, node, path, "bias", 0, 1, &bias)) ||
        (st = co_get_bool(b, node, path, "add_bias_kv", 0, 0, &add_bias_kv)) ||
        (st = co_get_bool(b, node, path, "add_zero_attn", 0, 0, &add_zero_attn)) ||
        (st = co_get_bool(b, node, path, "batch_first", 0, 1, &batch_first)) ||
        (st = co_get_bool(b, node, path, "embed_dim_second", 0, 1, &eds)) ||
        (st = co_get_float(b, node, path, "dropout", 0, 0.0, 0.0, 1.0, &dropout)))
        return st;
    if (!retro && ((st = co_get_int(b, node, path, "query_index", 0, -1, -N, N - 1, &qi)) ||
                   (st = co_get_bool(b, node, path, "single_output_forward", 0, 1, &sof))))
        return st;
    if (E % H) return co_error(CO_ERR_NETWORK, "%s: embed_dim %lld is not divisible by num_heads %lld", path, (long long)E, (long long)H);
    if (add_bias_kv || add_zero_attn)
        return co_error(CO_ERR_UNSUPPORTED, "%s: add_bias_kv / add_zero_attn have no continual step (as in the reference)", path);
    const cJSON *kd = cJSON_GetObjectItemCaseSensitive(node, "kdim"), *vd = cJSON_GetObjectItemCaseSensitive(node, "vdim");
    int64_t kdim = E, vdim = E;
    if ((kd && (st = co_get_int(b, node, path, "kdim", 0, E, 1, 1 << 16, &kdim))) ||
        (vd && (st = co_get_int(b, node, path, "vdim", 0, E, 1, 1 << 16, &vdim))))
        return st;
    if (kdim != E || vdim != E)
        return co_error(CO_ERR_UNSUPPORTED, "%s: kdim/vdim different from embed_dim are not supported (self-attention only)", path);
    mha_params *p = co_calloc(1, sizeof *p);
    if (!p) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    p->retroactive = retro;
    p->E = E;
    p->H = H;
    p->dh = E / H;
    p->N = N;
    p->query_index = qi;
    p->lag = qi >= 0 ? N - qi - 1 : -qi - 1;
    p->single_output_forward = retro ? 0 : sof;
    p->scale = (float)(1.0 / sqrt((double)p->dh));
    int64_t s_in[2] = {3 * E, E}, s_b[1] = {3 * E}, s_out[2] = {E, E};
    if ((st = co_take_tensor(b, path, "in_proj_weight", 2, s_in, 1, &p->w_in)) ||
        (bias && (st = co_take_tensor(b, path, "in_proj_bias", 1, s_b, 1, &p->b_in))) ||
        (st = co_take_tensor(b, path, "out_proj.weight", 2, s_out, 1, &p->w_out)) ||
        (bias && (st = co_take_tensor(b, path, "out_proj.bias", 1, &E, 1, &p->b_out)))) {
        co_free(p);
        return st;
    }
    co_op *op = co_emit(b, retro ? &k_retroactive : &k_single_output, path, 1, &in, p);
    if (!op) return co_emit_failure(b);
    *out = op->out;
    props->receptive_field = N;
    props->stride = 1;
    props->padding = 0;
    props->delay = retro ? N - 1 : p->lag;
    return CO_OK;
}

/* ---- this family's module types (the registry, build.h); variant unused: the build reads "type" */
static const co_module_reg k_attention_modules[] = {
    {"SingleOutputMultiheadAttention", co_build_attention, 0},
    {"RetroactiveMultiheadAttention", co_build_attention, 0},
};
CO_MODULE_LIST(co_attention_modules, k_attention_modules)
