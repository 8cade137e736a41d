/*
 * test_inspect.c — the plan op by op (co_model_plan_ops) and per-op profiling
 * (co_stream_set_profile), through the public API:
 *   - one entry per op; their MACs sum to co_plan_info.macs_per_step, their state bytes to at most
 *     its state_bytes; output frames carry the batch; the last op's is the stream's output frame;
 *   - refused calls: NULL arguments, a batch out of range, too small a table (nothing written),
 *     a frame shape the network cannot take;
 *   - profiling: stepping (and finishing) with it on gives bit-identical outputs and states to not,
 *     allocates nothing, adds time to the ops that ran and never clears the caller's array;
 *     NULL turns it off (the array no longer moves).
 *
 * usage: test_inspect MODEL.safetensors ...
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static long g_allocs;
static void *count_alloc(size_t size, void *user)
{
    (void)user;
    g_allocs++;
    return malloc(size ? size : 1);
}
static void count_free(void *ptr, void *user)
{
    (void)user;
    free(ptr);
}

enum { BATCH = 2, STEPS = 24, SENTINEL = 77 };

static int same_shape(const co_shape *a, const co_shape *b)
{
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->dims[i] != b->dims[i]) return 0;
    return 1;
}

static void check_plan_ops(const co_model *m)
{
    co_plan_info pi;
    TU_STATUS(co_model_plan_info(m, BATCH, NULL, &pi), CO_OK, "co_model_plan_info");
    const int n = pi.num_ops;
    TU_CHECK(n > 0, "the plan has %d ops", n);
    co_op_info *ops = calloc((size_t)n + 1, sizeof *ops);
    if (!ops) exit(99);
    TU_STATUS(co_model_plan_ops(m, BATCH, NULL, ops, n), CO_OK, "co_model_plan_ops");
    int64_t macs = 0;
    size_t state = 0;
    for (int i = 0; i < n; i++) {
        TU_CHECK(ops[i].kind && ops[i].kind[0], "op %d has no kind", i);
        TU_CHECK(ops[i].type && ops[i].path, "op %d has a NULL type or path", i);
        TU_CHECK(ops[i].output_frame.ndim >= 2 && ops[i].output_frame.dims[0] == BATCH, "op %d: output frame without batch",
                 i);
        TU_CHECK(ops[i].macs >= 0 && ops[i].end_pad >= 0, "op %d: negative MACs or end padding", i);
        macs += ops[i].macs;
        state += ops[i].state_bytes;
    }
    TU_CHECK(macs == pi.macs_per_step, "ops' MACs sum to %lld, macs_per_step is %lld", (long long)macs,
             (long long)pi.macs_per_step);
    TU_CHECK(state > 0 && state <= pi.state_bytes, "ops' state sums to %zu, the plan's is %zu", state, pi.state_bytes);
    TU_CHECK(same_shape(&ops[n - 1].output_frame, &pi.output_frame), "the last op's output is not the plan's output frame");
    int typed = 0;
    for (int i = 0; i < n; i++) typed += ops[i].type[0] != 0;
    TU_CHECK(typed == n, "%d of %d ops name their module type", typed, n);

    /* refusals */
    memset(ops, SENTINEL, sizeof *ops);
    TU_STATUS(co_model_plan_ops(m, BATCH, NULL, ops, n - 1), CO_ERR_BUFFER_TOO_SMALL, "a table of n - 1 ops");
    unsigned char first = *(unsigned char *)ops;
    TU_CHECK(first == SENTINEL, "a refused co_model_plan_ops wrote to the table");
    TU_STATUS(co_model_plan_ops(NULL, BATCH, NULL, ops, n), CO_ERR_INVALID_ARGUMENT, "NULL model");
    TU_STATUS(co_model_plan_ops(m, BATCH, NULL, NULL, n), CO_ERR_INVALID_ARGUMENT, "NULL table");
    TU_STATUS(co_model_plan_ops(m, 0, NULL, ops, n), CO_ERR_INVALID_ARGUMENT, "batch 0");
    TU_STATUS(co_model_plan_ops(m, (1 << 20) + 1, NULL, ops, n), CO_ERR_INVALID_ARGUMENT, "batch 2^20 + 1");
    co_shape bad = {0};
    co_model_frame_shape(m, &bad);
    bad.dims[0] += 2; /* channels the first layer does not take */
    TU_STATUS(co_model_plan_ops(m, BATCH, &bad, ops, n), CO_ERR_SHAPE, "a frame shape with other channels");
    TU_CHECK(co_last_error()[0] != 0, "a refused co_model_plan_ops leaves no message");
    TU_CHECK(co_kernel_backend() && co_kernel_backend()[0], "co_kernel_backend is empty");
    free(ops);
}

static void check_profile(const co_model *m)
{
    co_stream *a = NULL, *b = NULL;
    TU_STATUS(co_stream_create(m, BATCH, &a), CO_OK, "stream a");
    TU_STATUS(co_stream_create(m, BATCH, &b), CO_OK, "stream b");
    if (!a || !b) return;
    co_plan_info pi;
    co_model_plan_info(m, BATCH, NULL, &pi);
    const int n = pi.num_ops;
    co_shape in, out;
    co_stream_input_shape(a, &in);
    co_stream_output_shape(a, &out);
    const int64_t in_n = tu_numel(&in), out_n = tu_numel(&out);
    const int64_t cap = co_steps_max_output(a, STEPS, CO_PAD_END);
    float *x = malloc((size_t)(in_n * STEPS) * sizeof(float));
    float *ya = malloc((size_t)(out_n * (cap + 1)) * sizeof(float));
    float *yb = malloc((size_t)(out_n * (cap + 1)) * sizeof(float));
    int64_t *ns = calloc((size_t)n, sizeof *ns);
    int64_t *ns_before = calloc((size_t)n, sizeof *ns);
    const size_t state_n = co_stream_state_size(a);
    unsigned char *sa = malloc(state_n), *sb = malloc(state_n);
    if (!x || !ya || !yb || !ns || !ns_before || !sa || !sb) exit(99);
    tu_fill(x, in_n * STEPS, 5);

    TU_STATUS(co_stream_set_profile(NULL, ns), CO_ERR_INVALID_ARGUMENT, "co_stream_set_profile(NULL)");
    TU_STATUS(co_stream_set_profile(a, ns), CO_OK, "co_stream_set_profile");
    const long allocs = g_allocs;
    int outputs = 0;
    for (int t = 0; t < STEPS; t++) {
        int ha = 0, hb = 0;
        TU_STATUS(co_forward_step(a, x + t * in_n, ya, &ha, CO_UPDATE_STATE), CO_OK, "profiled step");
        TU_STATUS(co_forward_step(b, x + t * in_n, yb, &hb, CO_UPDATE_STATE), CO_OK, "plain step");
        TU_CHECK(ha == hb, "step %d: has_output %d profiled, %d not", t, ha, hb);
        if (ha && hb) TU_CHECK(memcmp(ya, yb, (size_t)out_n * sizeof(float)) == 0, "step %d: outputs differ", t);
        outputs += ha;
    }
    TU_CHECK(outputs > 0, "no output in %d steps", STEPS);
    int64_t t_a = 0, t_b = 0; /* a clip with end padding, profiled and not */
    TU_STATUS(co_forward_steps(a, x, STEPS, ya, cap, &t_a, CO_PAD_END, CO_UPDATE_STATE), CO_OK, "profiled forward_steps");
    TU_STATUS(co_forward_steps(b, x, STEPS, yb, cap, &t_b, CO_PAD_END, CO_UPDATE_STATE), CO_OK, "plain forward_steps");
    TU_CHECK(t_a == t_b && memcmp(ya, yb, (size_t)(t_a * out_n) * sizeof(float)) == 0, "forward_steps outputs differ");
    co_stream_save(a, sa, state_n, NULL);
    co_stream_save(b, sb, state_n, NULL);
    TU_CHECK(memcmp(sa, sb, state_n) == 0, "profiling changed the stream state");
    /* the end of input, profiled and not */
    const int64_t fcap = co_stream_finish_max_output(a);
    TU_CHECK(fcap <= cap, "co_stream_finish_max_output %lld above co_steps_max_output %lld", (long long)fcap, (long long)cap);
    TU_STATUS(co_stream_finish(a, ya, fcap, &t_a), CO_OK, "profiled finish");
    TU_STATUS(co_stream_finish(b, yb, fcap, &t_b), CO_OK, "plain finish");
    TU_CHECK(t_a == t_b && memcmp(ya, yb, (size_t)(t_a * out_n) * sizeof(float)) == 0, "finish outputs differ");
    TU_CHECK(g_allocs == allocs, "profiled stepping allocated %ld times", g_allocs - allocs);
    int timed = 0;
    for (int i = 0; i < n; i++) {
        TU_CHECK(ns[i] >= 0, "op %d: negative time", i);
        timed += ns[i] > 0;
    }
    TU_CHECK(timed > 0, "no op was timed");

    /* clean keeps the setting; NULL turns it off */
    TU_STATUS(co_stream_clean(a), CO_OK, "clean");
    memcpy(ns_before, ns, (size_t)n * sizeof *ns);
    int has = 0;
    co_forward_step(a, x, ya, &has, CO_UPDATE_STATE);
    int moved = 0;
    for (int i = 0; i < n; i++) {
        TU_CHECK(ns[i] >= ns_before[i], "op %d: profiling cleared the caller's time", i);
        moved += ns[i] != ns_before[i];
    }
    TU_CHECK(moved > 0, "after co_stream_clean, profiling stopped");
    TU_STATUS(co_stream_set_profile(a, NULL), CO_OK, "co_stream_set_profile(NULL)");
    memcpy(ns_before, ns, (size_t)n * sizeof *ns);
    for (int t = 0; t < STEPS; t++) co_forward_step(a, x + t * in_n, ya, &has, CO_UPDATE_STATE);
    TU_CHECK(memcmp(ns, ns_before, (size_t)n * sizeof *ns) == 0, "profiling off, yet the array moved");
    free(x);
    free(ya);
    free(yb);
    free(ns);
    free(ns_before);
    free(sa);
    free(sb);
    co_stream_free(a);
    co_stream_free(b);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_inspect MODEL.safetensors ...\n");
        return 2;
    }
    const co_allocator counting = {count_alloc, count_free, NULL};
    co_set_allocator(&counting);
    for (int i = 1; i < argc; i++) {
        co_model *m = NULL;
        TU_STATUS(co_model_load(argv[i], &m), CO_OK, argv[i]);
        if (m) {
            check_plan_ops(m);
            check_profile(m);
        }
        co_model_free(m);
    }
    co_set_allocator(NULL);
    return tu_finish("test_inspect");
}
