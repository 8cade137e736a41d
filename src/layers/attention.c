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
 * Batches and streams (docs/decisions.md, "Attention at batch > 1"): every batch item and every
 * stream of co_forward_step_streams runs the same per-item algorithm; what they share is the
 * weight reads — the rows of all items go through each projection as one product with the
 * weights packed once at load (kernels/gemm.h). So the MACs per item do not depend on B.
 *
 * forward over a clip is torch.nn.MultiheadAttention's self-attention over the T tokens
 * (SingleOutput with single_output_forward: only the token at query_index).
 */
#include <math.h>
#include <string.h>

#include "core/build.h"
#include "kernels/attention_rows.h"
#include "kernels/gemm.h"
#include "kernels/threadpool.h"
#include "kernels/weights.h"

typedef struct mha_params {
    int retroactive;
    int64_t E, H, dh, N;
    int64_t lag;               /* single-output: steps the query lags the newest key */
    int64_t query_index;       /* for single_output_forward */
    int single_output_forward;
    float scale;               /* 1/sqrt(dh) */
    const float *w_in, *b_in, *w_out, *b_out; /* model-owned; biases may be NULL */
    /* the weights packed for co_gemm_packed at build (owned): Wq (E x E) and [Wk; Wv] (2E x E)
     * for X W^T, Wo, and (retroactive) per head h the block Wo[:, h dh .. (h+1) dh) (dh -> E) */
    void *w_q_packed, *w_kv_packed, *w_out_packed, **w_out_head_packed;
} mha_params;

/* ---- shared pieces ---- */
/* y (rows x n, row stride ldy) += bias, per row */
static void add_bias_rows(int64_t rows, int64_t n, const float *bias, float *y, int64_t ldy)
{
    if (!bias) return;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < n; j++) y[r * ldy + j] += bias[j];
}

/* queries of `rows` inputs (rows ldx floats apart): q (ldq) = x Wq^T + bq */
static void project_q(const mha_params *p, const float *x, int64_t rows, int64_t ldx, float *q, int64_t ldq)
{
    co_times_weights(rows, p->E, p->E, x, ldx, p->w_in, p->E, p->w_q_packed, q, ldq);
    add_bias_rows(rows, p->E, p->b_in, q, ldq);
}

/* keys and values: kv (ldkv; k in [0, E), v in [E, 2E)) = x [Wk; Wv]^T + [bk; bv] */
static void project_kv(const mha_params *p, const float *x, int64_t rows, int64_t ldx, float *kv, int64_t ldkv)
{
    co_times_weights(rows, 2 * p->E, p->E, x, ldx, p->w_in + p->E * p->E, p->E, p->w_kv_packed, kv, ldkv);
    add_bias_rows(rows, 2 * p->E, p->b_in ? p->b_in + p->E : NULL, kv, ldkv);
}

/* (rows, E) -> (rows, 3E): q, k, v of each row */
static void project_qkv(const mha_params *p, const float *x, int64_t rows, float *qkv)
{
    project_q(p, x, rows, p->E, qkv, 3 * p->E);
    project_kv(p, x, rows, p->E, qkv + p->E, 3 * p->E);
}

/* (rows, E) -> (rows, E): y = o Wo^T + bo */
static void out_project(const mha_params *p, const float *o, int64_t rows, float *y)
{
    co_times_weights(rows, p->E, p->E, o, p->E, p->w_out, p->E, p->w_out_packed, y, p->E);
    add_bias_rows(rows, p->E, p->b_out, y, p->E);
}

static inline float dot(const float *a, const float *b, int64_t n) { return co_rows_dot(a, b, n); }

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

/* ---- state layouts ----
 * head: pos (ring slot of the oldest token = next to overwrite), count (steps, capped at N),
 * qpos (single-output query ring); then B items' floats.
 *
 * Retroactive, per batch item: the window's keys K, scaled queries Q and values V (N x E
 * each, ring slots), per token i and head h the running logit maximum M, the softmax
 * denominator D and P (the largest D since the row was last computed exactly), and the
 * numerators A[i][h] = sum_j exp(q_i.k_j - M) u_j[h] in OUTPUT space, u_j[h] = Wo[:, h] v_j[h]
 * being the value already through its head's block of the output projection. A step then
 * updates each A row with the leaving and the entering u (O(N H E) adds, in one pass that also
 * sums the outputs) and never projects the N window outputs (no N x E x E product). The u of
 * the two tokens and the new token's exact row come from one product per head over the rows of
 * every item, so the weights are read once per step whatever B. */
typedef struct mha_head { int64_t pos, count, qpos, pad; } mha_head;

typedef struct retro_layout { int64_t K, Q, V, M, D, P, A, floats; } retro_layout;

static retro_layout retro_layout_of(const mha_params *p)
{
    const int64_t N = p->N, E = p->E, H = p->H;
    retro_layout L;
    L.K = 0;
    L.Q = N * E;
    L.V = 2 * N * E;
    L.M = 3 * N * E;
    L.D = L.M + N * H;
    L.P = L.D + N * H;
    L.A = L.P + N * H;
    L.floats = L.A + N * H * E;
    return L;
}

/* Threads (docs/kernels.md, "Threads in the attention steps"): the loops of a step around the
 * products run as tasks of the current pool by a partition fixed by the shapes alone — one task
 * per item for the new token's exact row (retroactive) and the attention of the query (single
 * output), one task per item and block of RETRO_COLUMNS_PER_TASK window outputs for the
 * retroactive row updates — so every float is computed by the same operations in the same
 * order whatever the thread count, and each task works in its own slice of the scratch. */
enum { RETRO_COLUMNS_PER_TASK = 16 };

static int64_t retro_blocks(const mha_params *p)
{
    return (p->N + RETRO_COLUMNS_PER_TASK - 1) / RETRO_COLUMNS_PER_TASK;
}

/* Floats of one task's scratch slice: for the new token's row the logits (N H); for a block of
 * window outputs the update coefficients of one row (3 H), one head's logits (N), a value-space
 * row (E) and the block's outputs (RETRO_COLUMNS_PER_TASK E). */
static int64_t retro_task_floats(const mha_params *p)
{
    const int64_t E = p->E, H = p->H, N = p->N;
    const int64_t row = N * H, block = 3 * H + N + E + RETRO_COLUMNS_PER_TASK * E;
    return row > block ? row : block;
}

/* Scratch of one step of R = (streams x B) items: gathered inputs X (R E), projections (3 R E),
 * the per-head product's input rows G = [v_new; v_old; exact new row] (3 R E) and output U
 * (3 R H E), the leaving keys (R E); then one slice per task (R x blocks of them). */
static size_t retro_scratch_floats(const mha_params *p, int64_t R)
{
    const int64_t E = p->E, H = p->H;
    return (size_t)(R * (E + 3 * E + 3 * E + 3 * H * E + E) + R * retro_blocks(p) * retro_task_floats(p));
}

/* Single-output scratch for R items: gathered inputs (R E), projections (3 R E), attention
 * outputs and their projection (2 R E), the logits of each item's task (R N). */
static size_t so_scratch_floats(const mha_params *p, int64_t R)
{
    return (size_t)(R * 6 * p->E + R * p->N);
}

/* ---- resolve ---- */

static co_status mha_resolve(const co_op *op, const co_tshape *in, co_oprt *rt)
{
    const mha_params *p = op->params;
    const int t = in->has_time;
    char buf[96];
    if (in->ndim != 2 + t || in->d[1] != p->E)
        return co_error(CO_ERR_SHAPE, "%s: attention takes %s (B, E=%lld%s), got %s", op->path, t ? "clips" : "frames",
                        (long long)p->E, t ? ", T" : "", co_tshape_str(in, buf, sizeof buf));
    const int64_t B = in->d[0], E = p->E, N = p->N, H = p->H;
    rt->out = *in;
    if (t) {
        const int64_t T = in->d[2], Tq = p->single_output_forward ? 1 : T;
        if (p->single_output_forward && (p->query_index >= T || p->query_index < -T))
            return co_error(CO_ERR_SHAPE, "%s: query_index %lld is outside a clip of %lld tokens", op->path,
                            (long long)p->query_index, (long long)T);
        rt->out.d[2] = Tq;
        rt->scratch_floats = (size_t)(B * T * 4 * E + B * T + 2 * B * Tq * E);
        rt->macs = B * ((p->single_output_forward ? 2 * T + 1 : 3 * T) * E * E + 2 * Tq * T * E + Tq * E * E);
        return CO_OK;
    }
    if (p->retroactive) {
        rt->out.ndim = 3;
        rt->out.d[2] = N;
        rt->state_bytes = sizeof(mha_head) + (size_t)(B * retro_layout_of(p).floats) * sizeof(float);
        rt->scratch_floats = retro_scratch_floats(p, B);
        /* projections 3E^2, the u of two tokens and the new row through Wo 3E^2, the new row's
         * logits and sums 2NE, the other rows' two logits 2NE, row updates 3NHE, outputs NHE */
        rt->macs = B * (6 * E * E + 4 * N * E + 4 * N * H * E);
    } else {
        rt->state_bytes = sizeof(mha_head) + (size_t)(B * (2 * N + p->lag) * E) * sizeof(float);
        rt->scratch_floats = so_scratch_floats(p, B);
        rt->macs = B * (3 * E * E + 2 * N * E + E * E);
    }
    return CO_OK;
}

static void mha_reset(const co_op *op, const co_oprt *rt, void *state)
{
    const mha_params *p = op->params;
    memset(state, 0, rt->state_bytes);
    if (p->retroactive) { /* zero tokens: every row attends N zero keys, sum exp(0) = N */
        const int64_t B = rt->out.d[0], NH = p->N * p->H;
        const retro_layout L = retro_layout_of(p);
        float *base = (float *)((mha_head *)state + 1);
        for (int64_t b = 0; b < B; b++) {
            float *den = base + b * L.floats + L.D;
            for (int64_t i = 0; i < NH; i++) den[i] = (float)p->N;
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

/* The rows of n streams' inputs (B rows of E each) as one block: in place for one stream,
 * else gathered into X. */
static const float *gather_rows(int n, const float *const *in, int64_t stream_floats, float *X)
{
    if (n == 1) return in[0];
    for (int i = 0; i < n; i++) memcpy(X + (size_t)i * (size_t)stream_floats, in[i], (size_t)stream_floats * sizeof(float));
    return X;
}

/* ---- single output: n streams of B items each (n = 1: a plain step) ---- */

/* What the attention tasks of one single-output step read: item t (stream t / B, item t % B)
 * attends with its query in qkv to its window and writes its emitting row of o. */
typedef struct so_job {
    const mha_params *p;
    int64_t B;
    void *const *states;
    const int *produced;
    const float *qkv;
    float *o, *w; /* w: N logits per task */
} so_job;

static void so_attend_task(void *ctx, int t)
{
    const so_job *j = ctx;
    const mha_params *p = j->p;
    const int64_t B = j->B, E = p->E, N = p->N, dh = p->dh, b = t % B;
    const int i = (int)(t / B);
    if (!j->produced[i]) return;
    int64_t row = b; /* the item's row among the emitting items, stream by stream */
    for (int k = 0; k < i; k++)
        if (j->produced[k]) row += B;
    const mha_head *h = j->states[i];
    const float *K = (const float *)(h + 1) + b * N * E, *V = K + B * N * E, *q = j->qkv + t * 3 * E;
    for (int64_t hh = 0; hh < p->H; hh++)
        attend(q + hh * dh, K + hh * dh, V + hh * dh, N, E, dh, j->w + t * N, j->o + row * E + hh * dh);
}

static void so_steps(const co_op *op, const co_oprt *rt, int n, void *const *states, const float *const *in,
                     float *const *out, int *produced, float *scratch)
{
    const mha_params *p = op->params;
    const int64_t B = rt->out.d[0], E = p->E, N = p->N, R = n * B;
    float *X = scratch, *qkv = X + R * E, *o = qkv + 3 * R * E, *y = o + R * E, *w = y + R * E;
    project_qkv(p, gather_rows(n, in, B * E, X), R, qkv); /* every item in one pass over the weights */
    int64_t emitting = 0; /* items with an output this step */
    for (int i = 0; i < n; i++) {
        mha_head *h = states[i];
        float *K = (float *)(h + 1), *V = K + B * N * E, *Q = V + B * N * E;
        for (int64_t b = 0; b < B; b++) {
            float *q = qkv + (i * B + b) * 3 * E;
            for (int64_t c = 0; c < E; c++) q[c] *= p->scale;
            memcpy(K + (b * N + h->pos) * E, q + E, (size_t)E * sizeof(float));
            memcpy(V + (b * N + h->pos) * E, q + 2 * E, (size_t)E * sizeof(float));
            if (p->lag > 0) { /* the query used is `lag` steps old; the new one waits in the ring */
                float *slot = Q + (b * p->lag + h->qpos) * E;
                for (int64_t c = 0; c < E; c++) {
                    float t = slot[c];
                    slot[c] = q[c];
                    q[c] = t;
                }
            }
        }
        if (p->lag > 0) h->qpos = (h->qpos + 1) % p->lag;
        h->pos = (h->pos + 1) % N;
        if (h->count < N) h->count++;
        produced[i] = h->count >= N;
        if (produced[i]) emitting += B;
    }
    if (!emitting) return;
    so_job job = {p, B, states, produced, qkv, o, w};
    co_pool_run(co_pool_current(), (int)R, so_attend_task, &job); /* one task per item */
    if (n == 1) {
        out_project(p, o, B, out[0]);
        return;
    }
    out_project(p, o, emitting, y); /* the emitting items of every stream in one product */
    for (int i = 0, k = 0; i < n; i++)
        if (produced[i]) memcpy(out[i], y + (size_t)(k++) * (size_t)(B * E), (size_t)(B * E) * sizeof(float));
}

static int so_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out, float *scratch)
{
    int produced = 0;
    so_steps(op, rt, 1, &state, in, &out, &produced, scratch);
    return produced;
}

/* ---- retroactive ---- */

/* Exact sums of row q over the window for heads [h0, h1), in value space: per head h the logit
 * maximum m[h], the denominator den[h] and av[h dh ..] = sum_j exp(q.k_j - m) v_j[h] (dh floats
 * per head). Keys and values are walked token by token (each token's heads are contiguous, a
 * token is E floats from the next); w holds N (h1 - h0) logits. */
static void retro_row_exact(const mha_params *p, const float *q, const float *K, const float *V, int64_t h0, int64_t h1,
                            float *m, float *den, float *av, float *w)
{
    const int64_t N = p->N, E = p->E, dh = p->dh, nh = h1 - h0;
    for (int64_t h = h0; h < h1; h++) m[h] = -INFINITY;
    for (int64_t j = 0; j < N; j++)
        for (int64_t h = h0; h < h1; h++) {
            const float l = w[j * nh + h - h0] = dot(q + h * dh, K + j * E + h * dh, dh);
            if (l > m[h]) m[h] = l;
        }
    for (int64_t h = h0; h < h1; h++) den[h] = 0.0f;
    memset(av + h0 * dh, 0, (size_t)(nh * dh) * sizeof(float));
    for (int64_t j = 0; j < N; j++)
        for (int64_t h = h0; h < h1; h++) {
            const float e = expf(w[j * nh + h - h0] - m[h]), *v = V + j * E + h * dh;
            float *a = av + h * dh;
            den[h] += e;
            for (int64_t i = 0; i < dh; i++) a[i] += e * v[i];
        }
}

/* coefficient triple of a row whose numerators are already exact (kept as they are) */
enum { RETRO_COEFS = 3 };
static const float k_retro_keep = -1.0f; /* in coef[0], which is a scale in (0, 1] otherwise */

/* One row's scalars when key k_old leaves and k_new enters: updates M, D, P and gives the
 * numerators' update A <- A c[0] + c[1] u_old + c[2] u_new. Returns 0 when the running sums
 * cancelled too far and the row must be recomputed exactly. */
static int retro_row_scalars(const float *q, const float *k_old, const float *k_new, int64_t dh, float *m, float *d,
                             float *pk, float *c)
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
    if (!((*d - e_new) > *pk * (1.0f / 32.0f)) || !isfinite(*d)) return 0;
    c[0] = scale_old;
    c[1] = -e_out;
    c[2] = e_new;
    return 1;
}

/* One pass over a row's numerators (H blocks of E): each block updated with its coefficients
 * (or kept), and the row's output o = sum_h A[h] / D[h] accumulated on the way. */
static void retro_row_pass(int64_t H, int64_t E, const float *coef, const float *D, const float *u_old,
                           const float *u_new, float *A, float *o)
{
    for (int64_t h = 0; h < H; h++) {
        const float *c = coef + h * RETRO_COEFS, inv = 1.0f / D[h], *uo = u_old + h * E, *un = u_new + h * E;
        float *a = A + h * E;
        if (c[0] == k_retro_keep) co_rows_sum(E, inv, a, o);
        else co_rows_update_sum(E, c[0], c[1], c[2], inv, uo, un, a, o);
    }
}

/* What the tasks of one retroactive step share. Item t is item t % B of stream t / B. */
typedef struct retro_job {
    const mha_params *p;
    retro_layout L;
    int64_t B, R, blocks, task_floats;
    void *const *states;
    float *const *out;
    float *qkv, *G, *U, *kold, *slices; /* slices: task_floats per task */
} retro_job;

/* Item t's state block (S) and its stream's ring head. */
static float *retro_item(const retro_job *j, int64_t t, const mha_head **head)
{
    *head = j->states[t / j->B];
    return (float *)(*head + 1) + (t % j->B) * j->L.floats;
}

/* Task t: the new token of item t into its window, its exact row (value space) and both
 * tokens' values into G. */
static void retro_enter_task(void *ctx, int t)
{
    const retro_job *j = ctx;
    const mha_params *p = j->p;
    const int64_t E = p->E, H = p->H, R = j->R;
    const mha_head *h;
    float *S = retro_item(j, t, &h), *K = S + j->L.K, *Q = S + j->L.Q, *V = S + j->L.V;
    float *M = S + j->L.M, *D = S + j->L.D, *P = S + j->L.P, *q = j->qkv + t * 3 * E;
    const int64_t slot = h->pos;
    for (int64_t c = 0; c < E; c++) q[c] *= p->scale;
    memcpy(j->kold + t * E, K + slot * E, (size_t)E * sizeof(float));
    memcpy(j->G + (R + t) * E, V + slot * E, (size_t)E * sizeof(float));
    memcpy(j->G + t * E, q + 2 * E, (size_t)E * sizeof(float));
    memcpy(K + slot * E, q + E, (size_t)E * sizeof(float));
    memcpy(Q + slot * E, q, (size_t)E * sizeof(float));
    memcpy(V + slot * E, q + 2 * E, (size_t)E * sizeof(float));
    retro_row_exact(p, q, K, V, 0, H, M + slot * H, D + slot * H, j->G + (2 * R + t) * E,
                    j->slices + t * j->blocks * j->task_floats);
    memcpy(P + slot * H, D + slot * H, (size_t)H * sizeof(float));
}

/* Task (t, k): the rows of item t whose window outputs are columns [k C, (k + 1) C) of its
 * (E, N) output, C = RETRO_COLUMNS_PER_TASK: each row's sums updated for the leaving and the
 * entering token (or recomputed exactly), its numerators updated in the pass that sums its
 * output, and the block's outputs written to the item's output when it emits. */
static void retro_update_task(void *ctx, int task)
{
    const retro_job *j = ctx;
    const mha_params *p = j->p;
    const int64_t E = p->E, N = p->N, H = p->H, dh = p->dh, R = j->R, HE = H * E;
    const int64_t t = task / j->blocks, c0 = (task % j->blocks) * RETRO_COLUMNS_PER_TASK;
    const int64_t c1 = c0 + RETRO_COLUMNS_PER_TASK < N ? c0 + RETRO_COLUMNS_PER_TASK : N;
    const mha_head *h;
    float *S = retro_item(j, t, &h), *K = S + j->L.K, *Q = S + j->L.Q, *V = S + j->L.V;
    float *M = S + j->L.M, *D = S + j->L.D, *P = S + j->L.P, *A = S + j->L.A;
    float *coef = j->slices + task * j->task_floats, *w = coef + RETRO_COEFS * H, *av = w + N, *ob = av + E;
    const float *u_new = j->U + t * HE, *u_old = j->U + (R + t) * HE, *ko = j->kold + t * E;
    const int64_t slot = h->pos;
    for (int64_t col = c0; col < c1; col++) { /* window outputs oldest token first: column col is row r */
        const int64_t r = (col + slot + 1) % N;
        if (r == slot) memcpy(A + slot * HE, j->U + (2 * R + t) * HE, (size_t)HE * sizeof(float));
        for (int64_t hh = 0; hh < H; hh++) {
            const int64_t i = r * H + hh;
            float *c = coef + hh * RETRO_COEFS;
            if (r == slot) {
                c[0] = k_retro_keep;
            } else if (!retro_row_scalars(Q + r * E + hh * dh, ko + hh * dh, K + slot * E + hh * dh, dh, &M[i], &D[i],
                                          &P[i], c)) {
                retro_row_exact(p, Q + r * E, K, V, hh, hh + 1, M + r * H, D + r * H, av, w);
                P[i] = D[i];
                co_gemm_packed(1, E, dh, av + hh * dh, dh, p->w_out_head_packed[hh], 0.0f, A + i * E, E);
                c[0] = k_retro_keep;
            }
        }
        float *orow = ob + (col - c0) * E;
        for (int64_t c = 0; c < E; c++) orow[c] = p->b_out ? p->b_out[c] : 0.0f;
        retro_row_pass(H, E, coef, D + r * H, u_old, u_new, A + r * HE, orow);
    }
    if (h->count + 1 < N) return; /* no output this step */
    float *y = j->out[t / j->B] + (t % j->B) * E * N; /* (E, N) */
    for (int64_t c = 0; c < E; c++)
        for (int64_t col = c0; col < c1; col++) y[c * N + col] = ob[(col - c0) * E + c];
}

/* n streams of B items each (n = 1: a plain step). */
static void retro_steps(const co_op *op, const co_oprt *rt, int n, void *const *states, const float *const *in,
                        float *const *out, int *produced, float *scratch)
{
    const mha_params *p = op->params;
    const int64_t B = rt->out.d[0], E = p->E, H = p->H, dh = p->dh, R = n * B, HE = H * E;
    float *X = scratch, *qkv = X + R * E, *G = qkv + 3 * R * E, *U = G + 3 * R * E, *kold = U + 3 * R * HE;
    retro_job job = {p, retro_layout_of(p), B, R, retro_blocks(p), retro_task_floats(p), states, out,
                     qkv, G, U, kold, kold + R * E};
    co_pool *pool = co_pool_current();
    project_qkv(p, gather_rows(n, in, B * E, X), R, qkv); /* every item in one pass over the weights */
    co_pool_run(pool, (int)R, retro_enter_task, &job);
    /* through each head's block of Wo: u_new, u_old and the new row's numerators of every item */
    for (int64_t hh = 0; hh < H; hh++)
        co_gemm_packed(3 * R, E, dh, G + hh * dh, E, p->w_out_head_packed[hh], 0.0f, U + hh * E, HE);
    co_pool_run(pool, (int)(R * job.blocks), retro_update_task, &job);
    for (int i = 0; i < n; i++) {
        mha_head *h = states[i];
        produced[i] = h->count + 1 >= p->N;
        h->pos = (h->pos + 1) % p->N;
        if (h->count < p->N) h->count++;
    }
}

static int retro_step(const co_op *op, const co_oprt *rt, void *state, const float *const *in, float *out, float *scratch)
{
    int produced = 0;
    retro_steps(op, rt, 1, &state, in, &out, &produced, scratch);
    return produced;
}

/* ---- clip: torch self-attention over the T tokens of (B, E, T) ---- */

/* What the tasks of a clip share; every task is one batch item (fixed by the shape). */
typedef struct clip_job {
    const mha_params *p;
    int64_t T, Tq, q0;
    const float *x;
    float *X, *qkv, *w, *o, *y, *out; /* w: T logits per item */
} clip_job;

/* Item b's tokens as rows: X[b] (T x E) from x[b] (E x T). */
static void clip_rows_task(void *ctx, int b)
{
    const clip_job *j = ctx;
    const int64_t E = j->p->E, T = j->T;
    const float *xb = j->x + b * E * T;
    float *Xb = j->X + b * T * E;
    for (int64_t c = 0; c < E; c++)
        for (int64_t t = 0; t < T; t++) Xb[t * E + c] = xb[c * T + t];
}

/* Item b's Tq queries against its T keys and values. */
static void clip_attend_task(void *ctx, int b)
{
    const clip_job *j = ctx;
    const mha_params *p = j->p;
    const int64_t E = p->E, dh = p->dh, T = j->T, Tq = j->Tq;
    float *qb = j->qkv + b * T * 3 * E;
    for (int64_t r = 0; r < Tq; r++) {
        float *q = qb + (j->q0 + r) * 3 * E;
        for (int64_t i = 0; i < E; i++) q[i] *= p->scale;
        for (int64_t hh = 0; hh < p->H; hh++)
            attend(q + hh * dh, qb + E + hh * dh, qb + 2 * E + hh * dh, T, 3 * E, dh, j->w + b * T,
                   j->o + (b * Tq + r) * E + hh * dh);
    }
}

/* Item b's outputs back to channels first: out[b] (E x Tq) from y[b] (Tq x E). */
static void clip_out_task(void *ctx, int b)
{
    const clip_job *j = ctx;
    const int64_t E = j->p->E, Tq = j->Tq;
    float *ob = j->out + b * E * Tq;
    const float *yb = j->y + b * Tq * E;
    for (int64_t r = 0; r < Tq; r++)
        for (int64_t c = 0; c < E; c++) ob[c * Tq + r] = yb[r * E + c];
}

static co_status mha_clip(const co_op *op, const co_oprt *rt, const co_tshape *in_shapes, const float *const *in,
                          float *out, float *scratch)
{
    const mha_params *p = op->params;
    const int64_t B = in_shapes[0].d[0], T = in_shapes[0].d[2], E = p->E, Tq = rt->out.d[2];
    float *X = scratch, *qkv = X + B * T * E, *w = qkv + B * T * 3 * E, *o = w + B * T, *y = o + B * Tq * E;
    const int64_t q0 = p->single_output_forward ? (p->query_index < 0 ? p->query_index + T : p->query_index) : 0;
    clip_job job = {p, T, Tq, q0, in[0], X, qkv, w, o, y, out};
    co_pool *pool = co_pool_current();
    co_pool_run(pool, (int)B, clip_rows_task, &job); /* tokens as rows, every item's in one block */
    if (p->single_output_forward) { /* keys and values of every token, the query of one per item */
        project_kv(p, X, B * T, E, qkv + E, 3 * E);
        project_q(p, X + q0 * E, B, T * E, qkv + q0 * 3 * E, T * 3 * E);
    } else {
        project_qkv(p, X, B * T, qkv);
    }
    co_pool_run(pool, (int)B, clip_attend_task, &job);
    out_project(p, o, B * Tq, y);
    co_pool_run(pool, (int)B, clip_out_task, &job);
    return CO_OK;
}

static void mha_destroy(co_op *op)
{
    mha_params *p = op->params;
    if (!p) return;
    co_free(p->w_q_packed);
    co_free(p->w_kv_packed);
    co_free(p->w_out_packed);
    if (p->w_out_head_packed)
        for (int64_t h = 0; h < p->H; h++) co_free(p->w_out_head_packed[h]);
    co_free(p->w_out_head_packed);
    co_free(p);
}

/* Packs W (rows x cols, row stride ld) as op(B) of X W^T into a new buffer; NULL when out of memory. */
static void *pack_rows(const float *W, int64_t rows, int64_t cols, int64_t ld)
{
    void *buf = co_alloc(co_gemm_pack_size(cols, rows));
    if (buf) co_gemm_pack_b(1, cols, rows, W, ld, buf);
    return buf;
}

static co_status mha_pack(mha_params *p)
{
    const int64_t E = p->E;
    p->w_q_packed = pack_rows(p->w_in, E, E, E);
    p->w_kv_packed = pack_rows(p->w_in + E * E, 2 * E, E, E);
    p->w_out_packed = pack_rows(p->w_out, E, E, E);
    if (!p->w_q_packed || !p->w_kv_packed || !p->w_out_packed) return CO_ERR_OUT_OF_MEMORY;
    if (!p->retroactive) return CO_OK;
    if (!(p->w_out_head_packed = co_calloc((size_t)p->H, sizeof *p->w_out_head_packed))) return CO_ERR_OUT_OF_MEMORY;
    for (int64_t h = 0; h < p->H; h++)
        if (!(p->w_out_head_packed[h] = pack_rows(p->w_out + h * p->dh, E, p->dh, E))) return CO_ERR_OUT_OF_MEMORY;
    return CO_OK;
}

static const co_op_class k_single_output = {"single_output_mha", mha_resolve, mha_reset, mha_check_state, so_step, mha_clip,
                                            mha_destroy, .step_multi = so_steps, .whole_stream = 1};
static const co_op_class k_retroactive = {"retroactive_mha", mha_resolve, mha_reset, mha_check_state, retro_step, mha_clip,
                                          mha_destroy, .step_multi = retro_steps, .whole_stream = 1};

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
    if (mha_pack(p) != CO_OK) { /* the weights in the layout the product kernels read, once per model */
        co_op tmp = {.params = p};
        mha_destroy(&tmp);
        return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory packing the attention weights", path);
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
