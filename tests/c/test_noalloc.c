/*
 * test_noalloc.c — stepping allocates nothing. A counting allocator is installed with
 * co_set_allocator before loading; after the model and the stream exist, the counter must not
 * move across co_forward_step, co_forward_steps (pad_end 0/1, update_state 0/1),
 * co_stream_clean, co_stream_save and co_stream_restore, on 1 thread and on 3 (co_stream_set_threads:
 * the pool is made before, stepping with it allocates nothing). Also: everything the library
 * allocated is freed again (allocations == frees at the end).
 *
 * usage: test_noalloc [MODEL.safetensors ...]   (plus three models generated here)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

typedef struct counter {
    long allocs, frees;
    long live;
} counter;

static void *count_alloc(size_t size, void *user)
{
    counter *c = user;
    c->allocs++;
    c->live++;
    return malloc(size ? size : 1);
}

static void count_free(void *ptr, void *user)
{
    counter *c = user;
    if (!ptr) return;
    c->frees++;
    c->live--;
    free(ptr);
}

static void check_model(const char *what, co_model *m, counter *c, int threads)
{
    co_stream *s = NULL;
    TU_STATUS(co_stream_create(m, 2, &s), CO_OK, what);
    if (!s) return;
    TU_STATUS(co_stream_set_threads(s, threads), CO_OK, what);
    co_shape in, out;
    co_stream_input_shape(s, &in);
    co_stream_output_shape(s, &out);
    const int64_t in_n = tu_numel(&in), out_n = tu_numel(&out);
    enum { T = 9, ROUNDS = 3 };
    const int64_t cap = co_steps_max_output(s, T, 1);
    float *x = malloc((size_t)(in_n * T) * sizeof(float));
    float *y = malloc((size_t)(out_n * (cap + 1)) * sizeof(float));
    size_t state_n = co_stream_state_size(s);
    unsigned char *state = malloc(state_n);
    if (!x || !y || !state) exit(99);
    tu_fill(x, in_n * T, 3);

    const long before = c->allocs;
    int has = 0;
    int64_t t_out = 0;
    size_t written = 0;
    for (int r = 0; r < ROUNDS; r++) {
        for (int f = 0; f < 2 * T; f++) {
            TU_STATUS(co_forward_step(s, x + (f % T) * in_n, y, &has, 1), CO_OK, "step");
            TU_STATUS(co_forward_step(s, x + (f % T) * in_n, y, &has, 0), CO_OK, "peek");
        }
        for (int pad = 0; pad < 2; pad++)
            for (int upd = 0; upd < 2; upd++) {
                TU_STATUS(co_forward_steps(s, x, T, y, cap, &t_out, pad, upd), CO_OK, "steps");
                TU_STATUS(co_forward_steps(s, x, 1, y, cap, &t_out, pad, upd), CO_OK, "steps T=1");
                TU_STATUS(co_forward_steps(s, x, 0, y, cap, &t_out, pad, upd), CO_OK, "steps T=0");
            }
        TU_STATUS(co_stream_save(s, state, state_n, &written), CO_OK, "save");
        TU_STATUS(co_forward_step(s, x, y, &has, 1), CO_OK, "step");
        TU_STATUS(co_stream_restore(s, state, state_n), CO_OK, "restore");
        TU_STATUS(co_stream_restore(s, state, state_n - 1), CO_ERR_STATE, "restore (short)");
        TU_STATUS(co_stream_clean(s), CO_OK, "clean");
        /* query functions too */
        co_shape sh;
        co_stream_input_shape(s, &sh);
        co_stream_output_shape(s, &sh);
        (void)co_steps_max_output(s, T, 1);
        (void)co_stream_state_size(s);
    }
    TU_CHECK(c->allocs == before, "%s: %ld allocation(s) while stepping on %d thread(s)", what, c->allocs - before,
             threads);
    co_stream_free(s);
    free(x);
    free(y);
    free(state);
}

/* A Conv3d on the Winograd path (conv.c: dense 3x3 spatial kernel, >= 16 channels): its
 * transforms and products must run in the stream's scratch too. */
static const char k_winograd_network[] =
    "{\"type\":\"Conv3d\",\"name\":\"\",\"in_channels\":16,\"out_channels\":16,\"kernel_size\":[3,3,3],"
    "\"padding\":[1,1,1]}";

static void winograd_spec(tu_spec *s)
{
    memset(s, 0, sizeof *s);
    s->network = k_winograd_network;
    s->frame_shape = "[16,9,7]";
    s->weight_scale = 0.05f;
    s->n = 2;
    s->t[0] = (tu_tensor){.name = "weight", .ndim = 5, .shape = {16, 16, 3, 3, 3}};
    s->t[1] = (tu_tensor){.name = "bias", .ndim = 1, .shape = {16}};
}

enum { GENERATED_MODELS = 3 };

int main(int argc, char **argv)
{
    counter c = {0, 0, 0};
    co_allocator a = {count_alloc, count_free, &c};
    TU_STATUS(co_set_allocator(&a), CO_OK, "set allocator");

    for (int which = 0; which < GENERATED_MODELS + argc - 1; which++) {
        co_model *m = NULL;
        char what[512];
        c.allocs = c.frees = c.live = 0;
        if (which < GENERATED_MODELS) {
            static const char *const k_names[GENERATED_MODELS] = {"small", "medium", "Winograd Conv3d"};
            tu_spec s;
            if (which == 0) tu_small_spec(&s);
            else if (which == 1) tu_medium_spec(&s);
            else winograd_spec(&s);
            snprintf(what, sizeof what, "%s model", k_names[which]);
            m = tu_load_spec(&s);
        } else {
            const char *path = argv[which - GENERATED_MODELS + 1];
            snprintf(what, sizeof what, "%s", path);
            TU_STATUS(co_model_load(path, &m), CO_OK, what);
        }
        if (!m) continue;
        TU_CHECK(c.allocs > 0, "%s: the counting allocator saw no allocation (hook not used?)", what);
        check_model(what, m, &c, 1);
        check_model(what, m, &c, 3);
        co_model_free(m);
        TU_CHECK(c.live == 0, "%s: %ld allocation(s) not freed (%ld allocs, %ld frees)", what, c.live, c.allocs, c.frees);
        printf("%s: %ld allocations at load/create, all freed\n", what, c.allocs);
    }
    TU_STATUS(co_set_allocator(NULL), CO_OK, "restore allocator");
    return tu_finish("test_noalloc");
}
