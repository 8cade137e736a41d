/*
 * test_step_threads.c — intra-step threads (co_stream_set_threads and friends) give the same
 * outputs as 1 thread, bit for bit: co_forward_step (steps and peeks), co_stream_finish,
 * co_forward_steps (with and without end padding), co_forward_step_streams (a context of 3 threads against one of 1), and
 * co_forward_threaded against co_forward, for 2, 3 and 4 threads, on models whose products are
 * large enough to be split (a Conv3d stack and a Conv1d + Linear stack, batch 8) and on the
 * model files given, and on the continual attentions (batch 1, 3, 8). The products themselves: co_gemm_nn / nt / packed split over a pool against
 * the same call on one thread, over shapes with row, column and K tails; the pool alone (every
 * task once, workers busy or asleep, no nesting). Stepping with threads
 * allocates nothing (counting allocator); the option's statuses (range, NULL, back to 1).
 * Linked against the static library (it calls kernels/gemm.h and kernels/threadpool.h).
 *
 * usage: test_step_threads [MODEL.safetensors ...]
 */
#define _POSIX_C_SOURCE 200809L
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cpu.h"
#include "kernels/gemm.h"
#include "kernels/threadpool.h"
#include "testutil.h"

static atomic_long g_allocs;
static void *count_alloc(size_t size, void *user)
{
    (void)user;
    atomic_fetch_add(&g_allocs, 1);
    return malloc(size ? size : 1);
}
static void count_free(void *ptr, void *user)
{
    (void)user;
    free(ptr);
}

static const int k_threads[] = {2, 3, 4};
enum { N_THREADS = sizeof k_threads / sizeof k_threads[0], T = 7, MAXS = 4 };

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) exit(99);
    return p;
}

/* ---- the pool alone: every task runs exactly once, after busy and after sleeping workers ---- */
enum { POOL_RUNS = 6000, POOL_MAX_TASKS = 37 };
typedef struct pool_job {
    int hits[POOL_MAX_TASKS];
    atomic_int nested; /* tasks that saw a current pool (must be none) */
} pool_job;

static void count_task(void *ctx, int t)
{
    pool_job *j = ctx;
    j->hits[t]++;
    if (co_pool_current()) atomic_fetch_add(&j->nested, 1);
}

static void check_pool(void)
{
    void *mem = aligned_alloc(64, (co_pool_bytes(4) + 63) / 64 * 64);
    if (!mem) exit(99);
    co_pool *pool = co_pool_init(mem, 4);
    TU_CHECK(pool != NULL, "co_pool_init(4) failed");
    if (!pool) return;
    pool_job job;
    atomic_init(&job.nested, 0);
    int bad = 0;
    co_pool *outer = co_pool_enter(pool);
    for (int r = 0; r < POOL_RUNS && !bad; r++) {
        const int n = 1 + r % POOL_MAX_TASKS;
        memset(job.hits, 0, sizeof job.hits);
        co_pool_run(pool, n, count_task, &job);
        for (int t = 0; t < n; t++) bad |= job.hits[t] != 1;
        TU_CHECK(!bad, "run %d of %d tasks: a task ran %d times", r, n, job.hits[0]);
        TU_CHECK(co_pool_current() == pool, "co_pool_run did not restore the current pool");
        if (r % 1000 == 999) { /* let the workers fall asleep: the next run wakes them */
            struct timespec ts = {0, 5 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    co_pool_leave(outer);
    TU_CHECK(atomic_load(&job.nested) == 0, "%d task(s) saw a current pool", atomic_load(&job.nested));
    co_pool_destroy(pool);
    free(mem);
}

/* ---- the products, directly ---- */
static void check_gemm(void)
{
    enum { MAXD = 300 };
    /* (M, N, K): row / column tails, N = 1, M <= 8 (the nt dot path), large enough to split */
    static const int64_t shapes[][3] = {{64, 256, 576}, {8, 1024, 128},  {8, 131, 257},  {3, 3000, 70},
                                        {197, 1, 300},  {300, 45, 100}, {13, 300, 300}, {200, 200, 9},
                                        {1, 2000, 300}, {33, 97, 1000}};
    const size_t nshapes = sizeof shapes / sizeof shapes[0];
    float *A = xmalloc(3000 * 1000 * sizeof(float)), *B = xmalloc(3000 * 1000 * sizeof(float));
    float *C1 = xmalloc(3000 * 310 * sizeof(float)), *C2 = xmalloc(3000 * 310 * sizeof(float));
    tu_fill(A, 3000 * 1000, 11);
    tu_fill(B, 3000 * 1000, 12);
    void *mem = aligned_alloc(64, (co_pool_bytes(3) + 63) / 64 * 64);
    if (!mem) exit(99);
    co_pool *pool = co_pool_init(mem, 3);
    TU_CHECK(pool != NULL, "co_pool_init(3) failed");
    if (!pool) return;
    TU_CHECK(co_pool_threads(pool) == 3, "pool has %d threads", co_pool_threads(pool));
    for (int isa = (int)co_cpu_isa(); isa >= 0; isa--) {
        if (!co_gemm_force_isa(isa)) continue;
        for (size_t s = 0; s < nshapes; s++)
            for (int kind = 0; kind < 3; kind++)
                for (int beta = 0; beta < 2; beta++) {
                    const int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2], ldc = N + 5;
                    void *packed = NULL;
                    if (kind == 2) {
                        packed = xmalloc(co_gemm_pack_size(K, N));
                        co_gemm_pack_b(1, K, N, B, K, packed);
                    }
                    for (int run = 0; run < 2; run++) {
                        float *C = run ? C2 : C1;
                        tu_fill(C, M * ldc, 13); /* beta 1 adds to it; columns past N must stay */
                        co_pool *outer = co_pool_enter(run ? pool : NULL);
                        if (kind == 0) co_gemm_nn(M, N, K, A, K, B, N + 3, (float)beta, C, ldc);
                        else if (kind == 1) co_gemm_nt(M, N, K, A, K + 1, B, K, (float)beta, C, ldc);
                        else co_gemm_packed(M, N, K, A, K, packed, (float)beta, C, ldc);
                        co_pool_leave(outer);
                    }
                    TU_CHECK(memcmp(C1, C2, (size_t)(M * ldc) * sizeof(float)) == 0,
                             "%s %s M=%lld N=%lld K=%lld beta=%d: 3 threads differ from 1", co_isa_name((co_isa)isa),
                             kind == 0 ? "nn" : kind == 1 ? "nt" : "packed", (long long)M, (long long)N, (long long)K,
                             beta);
                    free(packed);
                }
    }
    co_gemm_force_isa(-1);
    TU_CHECK(co_pool_current() == NULL, "a pool is left current");
    co_pool_destroy(pool);
    free(mem);
    free(A);
    free(B);
    free(C1);
    free(C2);
}

/* ---- models ---- */
static const char k_conv3d_network[] =
    "{\"type\":\"Sequential\",\"name\":\"\",\"children\":["
    "{\"type\":\"Conv3d\",\"name\":\"0\",\"in_channels\":16,\"out_channels\":32,\"kernel_size\":[3,3,3],"
    "\"padding\":[1,1,1]},"
    "{\"type\":\"ReLU\",\"name\":\"1\"},"
    "{\"type\":\"Conv3d\",\"name\":\"2\",\"in_channels\":32,\"out_channels\":32,\"kernel_size\":[3,3,3],"
    "\"padding\":[0,1,1]}]}";

static void conv3d_spec(tu_spec *s)
{
    memset(s, 0, sizeof *s);
    s->network = k_conv3d_network;
    s->frame_shape = "[16,12,12]";
    s->weight_scale = 0.05f;
    s->n = 4;
    s->t[0] = (tu_tensor){.name = "0.weight", .ndim = 5, .shape = {32, 16, 3, 3, 3}};
    s->t[1] = (tu_tensor){.name = "0.bias", .ndim = 1, .shape = {32}};
    s->t[2] = (tu_tensor){.name = "2.weight", .ndim = 5, .shape = {32, 32, 3, 3, 3}};
    s->t[3] = (tu_tensor){.name = "2.bias", .ndim = 1, .shape = {32}};
}

/* Both convs take the Winograd path (conv.c: dense 3x3 spatial kernels, >= 16 channels): tile
 * tails (9 x 13 frames, asymmetric padding), a temporal stride, kt 2 and 3; at batch 8 the step
 * is cut into several chunks of tiles run as parallel slices. */
static const char k_winograd_network[] =
    "{\"type\":\"Sequential\",\"name\":\"\",\"children\":["
    "{\"type\":\"Conv3d\",\"name\":\"0\",\"in_channels\":16,\"out_channels\":32,\"kernel_size\":[2,3,3],"
    "\"stride\":[2,1,1],\"padding\":[1,2,0]},"
    "{\"type\":\"ReLU\",\"name\":\"1\"},"
    "{\"type\":\"Conv3d\",\"name\":\"2\",\"in_channels\":32,\"out_channels\":24,\"kernel_size\":[3,3,3],"
    "\"padding\":[1,1,1]}]}";

static void winograd_spec(tu_spec *s)
{
    memset(s, 0, sizeof *s);
    s->network = k_winograd_network;
    s->frame_shape = "[16,9,13]";
    s->weight_scale = 0.05f;
    s->n = 4;
    s->t[0] = (tu_tensor){.name = "0.weight", .ndim = 5, .shape = {32, 16, 2, 3, 3}};
    s->t[1] = (tu_tensor){.name = "0.bias", .ndim = 1, .shape = {32}};
    s->t[2] = (tu_tensor){.name = "2.weight", .ndim = 5, .shape = {24, 32, 3, 3, 3}};
    s->t[3] = (tu_tensor){.name = "2.bias", .ndim = 1, .shape = {24}};
}

static const char k_conv1d_network[] =
    "{\"type\":\"Sequential\",\"name\":\"\",\"children\":["
    "{\"type\":\"Conv1d\",\"name\":\"0\",\"in_channels\":64,\"out_channels\":128,\"kernel_size\":[5],"
    "\"padding\":[2]},"
    "{\"type\":\"ReLU\",\"name\":\"1\"},"
    "{\"type\":\"Conv1d\",\"name\":\"2\",\"in_channels\":128,\"out_channels\":128,\"kernel_size\":[3]},"
    "{\"type\":\"Linear\",\"name\":\"3\",\"in_features\":128,\"out_features\":96,\"channel_dim\":1}]}";

static void conv1d_spec(tu_spec *s)
{
    memset(s, 0, sizeof *s);
    s->network = k_conv1d_network;
    s->frame_shape = "[64]";
    s->weight_scale = 0.05f;
    s->n = 6;
    s->t[0] = (tu_tensor){.name = "0.weight", .ndim = 3, .shape = {128, 64, 5}};
    s->t[1] = (tu_tensor){.name = "0.bias", .ndim = 1, .shape = {128}};
    s->t[2] = (tu_tensor){.name = "2.weight", .ndim = 3, .shape = {128, 128, 3}};
    s->t[3] = (tu_tensor){.name = "2.bias", .ndim = 1, .shape = {128}};
    s->t[4] = (tu_tensor){.name = "3.weight", .ndim = 2, .shape = {96, 128}};
    s->t[5] = (tu_tensor){.name = "3.bias", .ndim = 1, .shape = {96}};
}

/* The continual attentions (embed 64, 4 heads): their steps split the per-item and per-block
 * loops over the pool by a fixed partition (layers/attention.c). sequence_len 20 has a full and a
 * tail block of window outputs per item; the pattern weights at scale 1 give logits of several
 * units, so rows are also recomputed exactly inside the tasks. */
enum { ATTN_E = 64 };
static char g_attention_network[512];

static void attention_spec(tu_spec *s, int retroactive, int sequence_len, int query_index)
{
    memset(s, 0, sizeof *s);
    char extra[64] = "";
    if (!retroactive) snprintf(extra, sizeof extra, ",\"query_index\":%d,\"single_output_forward\":false", query_index);
    snprintf(g_attention_network, sizeof g_attention_network,
             "{\"type\":\"%sMultiheadAttention\",\"name\":\"\",\"embed_dim\":%d,\"num_heads\":4,"
             "\"sequence_len\":%d,\"bias\":true,\"batch_first\":true,\"embed_dim_second\":true%s}",
             retroactive ? "Retroactive" : "SingleOutput", ATTN_E, sequence_len, extra);
    s->network = g_attention_network;
    s->frame_shape = "[64]";
    s->weight_scale = 1.0f;
    s->n = 4;
    s->t[0] = (tu_tensor){.name = "in_proj_weight", .ndim = 2, .shape = {3 * ATTN_E, ATTN_E}};
    s->t[1] = (tu_tensor){.name = "in_proj_bias", .ndim = 1, .shape = {3 * ATTN_E}};
    s->t[2] = (tu_tensor){.name = "out_proj.weight", .ndim = 2, .shape = {ATTN_E, ATTN_E}};
    s->t[3] = (tu_tensor){.name = "out_proj.bias", .ndim = 1, .shape = {ATTN_E}};
}

static int same(const float *a, const float *b, int64_t n) { return memcmp(a, b, (size_t)n * sizeof(float)) == 0; }

/* Steps, peeks and clips of a stream of `threads` threads against a stream of 1. */
static void check_stream(const char *what, co_model *m, int batch, int threads)
{
    co_stream *ref = NULL, *s = NULL;
    TU_STATUS(co_stream_create(m, batch, &ref), CO_OK, what);
    TU_STATUS(co_stream_create(m, batch, &s), CO_OK, what);
    if (!ref || !s) goto out;
    TU_STATUS(co_stream_set_threads(s, threads), CO_OK, what);
    TU_CHECK(co_stream_threads(s) == threads, "%s: co_stream_threads %d, set %d", what, co_stream_threads(s), threads);
    co_shape in, out;
    co_stream_input_shape(s, &in);
    co_stream_output_shape(s, &out);
    const int64_t in_n = tu_numel(&in), out_n = tu_numel(&out), cap = co_steps_max_output(s, T, 1);
    float *x = xmalloc((size_t)(in_n * T) * sizeof(float));
    float *y1 = xmalloc((size_t)(out_n * cap) * sizeof(float)), *y2 = xmalloc((size_t)(out_n * cap) * sizeof(float));
    tu_fill(x, in_n * T, (uint32_t)(7 + threads));
    const long allocs = atomic_load(&g_allocs);
    for (int f = 0; f < 2 * T; f++)
        for (int upd = 0; upd < 2; upd++) {
            int h1 = -1, h2 = -1;
            memset(y1, 0, (size_t)out_n * sizeof(float));
            memset(y2, 0, (size_t)out_n * sizeof(float));
            TU_STATUS(co_forward_step(ref, x + (f % T) * in_n, y1, &h1, upd), CO_OK, "step (1 thread)");
            TU_STATUS(co_forward_step(s, x + (f % T) * in_n, y2, &h2, upd), CO_OK, "step (threads)");
            TU_CHECK(h1 == h2 && (!h1 || same(y1, y2, out_n)), "%s, %d threads: step %d (update_state %d) differs", what,
                     threads, f, upd);
        }
    for (int pad = 0; pad < 2; pad++)
        for (int upd = 0; upd < 2; upd++) {
            int64_t t1 = -1, t2 = -2;
            TU_STATUS(co_forward_steps(ref, x, T, y1, cap, &t1, pad, upd), CO_OK, "steps (1 thread)");
            TU_STATUS(co_forward_steps(s, x, T, y2, cap, &t2, pad, upd), CO_OK, "steps (threads)");
            TU_CHECK(t1 == t2 && same(y1, y2, out_n * t1), "%s, %d threads: forward_steps (pad %d, update %d) differs",
                     what, threads, pad, upd);
        }
    /* end of input (co_stream_finish) after the steps above, on the stream's threads */
    {
        const int64_t fcap = co_stream_finish_max_output(s);
        int64_t t1 = -1, t2 = -2;
        if (fcap <= cap) {
            TU_STATUS(co_stream_finish(ref, y1, fcap, &t1), CO_OK, "finish (1 thread)");
            TU_STATUS(co_stream_finish(s, y2, fcap, &t2), CO_OK, "finish (threads)");
            TU_CHECK(t1 == t2 && same(y1, y2, out_n * t1), "%s, %d threads: co_stream_finish differs", what, threads);
        }
    }
    TU_CHECK(atomic_load(&g_allocs) == allocs, "%s, %d threads: %ld allocation(s) while stepping", what, threads,
             atomic_load(&g_allocs) - allocs);
    /* the clip */
    co_shape clip = in;
    clip.ndim = in.ndim + 1;
    for (int i = in.ndim; i > 2; i--) clip.dims[i] = in.dims[i - 1];
    clip.dims[2] = T;
    co_shape cout;
    if (co_forward_shape(m, &clip, &cout) == CO_OK) {
        const int64_t n = tu_numel(&cout);
        float *c1 = xmalloc((size_t)n * sizeof(float)), *c2 = xmalloc((size_t)n * sizeof(float));
        TU_STATUS(co_forward(m, &clip, x, c1, (size_t)n), CO_OK, "forward");
        TU_STATUS(co_forward_threaded(m, threads, &clip, x, c2, (size_t)n), CO_OK, "forward_threaded");
        TU_CHECK(same(c1, c2, n), "%s, %d threads: co_forward_threaded differs from co_forward", what, threads);
        free(c1);
        free(c2);
    }
    /* back to one thread: same results again */
    TU_STATUS(co_stream_set_threads(s, 1), CO_OK, "set_threads 1");
    TU_CHECK(co_stream_threads(s) == 1, "%s: back to 1 thread reports %d", what, co_stream_threads(s));
    free(x);
    free(y1);
    free(y2);
out:
    co_stream_free(ref);
    co_stream_free(s);
}

/* A context of 3 threads against one of 1, streams at different positions, peeks and steps. */
static void check_multistream(const char *what, co_model *m, int batch)
{
    co_multistream *c1 = NULL, *c3 = NULL;
    co_stream *a[MAXS] = {0}, *b[MAXS] = {0};
    TU_STATUS(co_multistream_create(m, MAXS, batch, NULL, &c1), CO_OK, what);
    TU_STATUS(co_multistream_create(m, MAXS, batch, NULL, &c3), CO_OK, what);
    if (!c1 || !c3) goto out;
    TU_STATUS(co_multistream_set_threads(c3, 3), CO_OK, "multistream threads");
    TU_CHECK(co_multistream_threads(c3) == 3 && co_multistream_threads(c1) == 1, "%s: multistream thread counts",
             what);
    for (int i = 0; i < MAXS; i++) {
        TU_STATUS(co_stream_create(m, batch, &a[i]), CO_OK, what);
        TU_STATUS(co_stream_create(m, batch, &b[i]), CO_OK, what);
        if (!a[i] || !b[i]) goto out;
    }
    co_shape in, out;
    co_stream_input_shape(a[0], &in);
    co_stream_output_shape(a[0], &out);
    const int64_t in_n = tu_numel(&in), out_n = tu_numel(&out);
    float *x = xmalloc((size_t)(in_n * MAXS * 2) * sizeof(float));
    float *y = xmalloc((size_t)(out_n * MAXS * 2) * sizeof(float));
    tu_fill(x, in_n * MAXS * 2, 21);
    const float *xs[MAXS];
    float *ya[MAXS], *yb[MAXS];
    int ha[MAXS], hb[MAXS];
    const long allocs = atomic_load(&g_allocs);
    for (int r = 0; r < 3 * T; r++) {
        const int n = 1 + r % MAXS; /* the first n streams; stream i joined r - i rounds ago */
        for (int i = 0; i < n; i++) {
            xs[i] = x + ((r + i) % (2 * MAXS)) * in_n;
            ya[i] = y + i * out_n;
            yb[i] = y + (MAXS + i) * out_n;
        }
        const int upd = r % 3 != 2;
        TU_STATUS(co_forward_step_streams(c1, a, n, xs, ya, ha, upd), CO_OK, "streams (1 thread)");
        TU_STATUS(co_forward_step_streams(c3, b, n, xs, yb, hb, upd), CO_OK, "streams (3 threads)");
        for (int i = 0; i < n; i++)
            TU_CHECK(ha[i] == hb[i] && (!ha[i] || same(ya[i], yb[i], out_n)),
                     "%s: multistream round %d stream %d: 3 threads differ from 1", what, r, i);
    }
    TU_CHECK(atomic_load(&g_allocs) == allocs, "%s: allocation(s) in co_forward_step_streams with threads", what);
    free(x);
    free(y);
out:
    for (int i = 0; i < MAXS; i++) {
        co_stream_free(a[i]);
        co_stream_free(b[i]);
    }
    co_multistream_free(c1);
    co_multistream_free(c3);
}

static void check_model(const char *what, co_model *m, int batch)
{
    for (int i = 0; i < N_THREADS; i++) check_stream(what, m, batch, k_threads[i]);
    check_multistream(what, m, batch > 2 ? 2 : batch);
}

static void check_statuses(co_model *m)
{
    co_stream *s = NULL;
    co_multistream *c = NULL;
    TU_STATUS(co_stream_set_threads(NULL, 2), CO_ERR_INVALID_ARGUMENT, "NULL stream");
    TU_STATUS(co_multistream_set_threads(NULL, 2), CO_ERR_INVALID_ARGUMENT, "NULL context");
    TU_CHECK(co_stream_threads(NULL) == 1 && co_multistream_threads(NULL) == 1, "NULL objects report 1 thread");
    TU_STATUS(co_stream_create(m, 1, &s), CO_OK, "stream");
    TU_STATUS(co_multistream_create(m, 2, 1, NULL, &c), CO_OK, "context");
    if (!s || !c) return;
    TU_CHECK(co_stream_threads(s) == 1 && co_multistream_threads(c) == 1, "the default is 1 thread");
    TU_STATUS(co_stream_set_threads(s, 0), CO_ERR_INVALID_ARGUMENT, "0 threads");
    TU_STATUS(co_stream_set_threads(s, CO_MAX_THREADS + 1), CO_ERR_INVALID_ARGUMENT, "too many threads");
    TU_STATUS(co_multistream_set_threads(c, -1), CO_ERR_INVALID_ARGUMENT, "-1 threads");
    TU_STATUS(co_stream_set_threads(s, 2), CO_OK, "2 threads");
    TU_STATUS(co_stream_set_threads(s, 0), CO_ERR_INVALID_ARGUMENT, "0 threads");
    TU_CHECK(co_stream_threads(s) == 2, "a refused co_stream_set_threads changed the count to %d", co_stream_threads(s));
    TU_STATUS(co_stream_set_threads(s, 4), CO_OK, "2 -> 4 threads");
    TU_CHECK(co_stream_threads(s) == 4, "4 threads reported as %d", co_stream_threads(s));
    TU_STATUS(co_multistream_set_threads(c, 2), CO_OK, "context 2 threads");
    co_shape clip = {3, {1, 2, 4}};
    float x[8] = {0}, y[64];
    TU_STATUS(co_forward_threaded(m, 0, &clip, x, y, 64), CO_ERR_INVALID_ARGUMENT, "forward_threaded 0 threads");
    co_stream_free(s); /* frees the pools, joining their workers */
    co_multistream_free(c);
}

int main(int argc, char **argv)
{
    co_allocator a = {count_alloc, count_free, NULL};
    TU_STATUS(co_set_allocator(&a), CO_OK, "set allocator");
    check_pool();
    check_gemm();
    tu_spec spec;
    tu_small_spec(&spec);
    co_model *m = tu_load_spec(&spec);
    if (m) {
        check_statuses(m);
        check_model("small model", m, 2);
        co_model_free(m);
    }
    conv3d_spec(&spec);
    if ((m = tu_load_spec(&spec))) {
        check_model("Conv3d stack", m, 8);
        co_model_free(m);
    }
    winograd_spec(&spec);
    if ((m = tu_load_spec(&spec))) {
        check_model("Winograd Conv3d stack", m, 8);
        co_model_free(m);
    }
    conv1d_spec(&spec);
    if ((m = tu_load_spec(&spec))) {
        check_model("Conv1d + Linear stack", m, 8);
        co_model_free(m);
    }
    static const struct { const char *what; int retroactive, sequence_len, query_index, batch; } k_attentions[] = {
        {"retroactive attention N20 b8", 1, 20, 0, 8},  {"retroactive attention N20 b1", 1, 20, 0, 1},
        {"retroactive attention N5 b3", 1, 5, 0, 3},    {"single-output attention N20 b1", 0, 20, 5, 1},
        {"single-output attention N5 b3", 0, 5, 1, 3},  {"single-output attention N5 b8", 0, 5, -1, 8},
    };
    for (size_t i = 0; i < sizeof k_attentions / sizeof k_attentions[0]; i++) {
        attention_spec(&spec, k_attentions[i].retroactive, k_attentions[i].sequence_len, k_attentions[i].query_index);
        if ((m = tu_load_spec(&spec))) {
            check_model(k_attentions[i].what, m, k_attentions[i].batch);
            co_model_free(m);
        }
    }
    for (int i = 1; i < argc; i++) {
        TU_STATUS(co_model_load(argv[i], &m), CO_OK, argv[i]);
        if (!m) continue;
        check_model(argv[i], m, 4);
        co_model_free(m);
    }
    TU_STATUS(co_set_allocator(NULL), CO_OK, "restore allocator");
    return tu_finish("test_step_threads");
}
