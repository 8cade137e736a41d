/*
 * test_oom.c — allocation-failure injection. An allocator that fails the n-th allocation is
 * installed, for n = 1, 2, ... until loading the model and creating a stream succeed. Every
 * failure must be CO_ERR_OUT_OF_MEMORY with a message, return NULL objects, and free whatever
 * was allocated before it (checked by counting; ASan checks the rest). The same for co_forward
 * and co_model_plan_info, which allocate temporaries.
 *
 * usage: test_oom [MODEL.safetensors ...]   (plus two models generated here)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

typedef struct failing {
    long count;   /* allocations so far */
    long fail_at; /* the allocation that returns NULL (1-based); 0: never */
    long live;
} failing;

static void *fail_alloc(size_t size, void *user)
{
    failing *f = user;
    if (++f->count == f->fail_at) return NULL;
    void *p = malloc(size ? size : 1);
    if (p) f->live++;
    return p;
}

static void fail_free(void *ptr, void *user)
{
    failing *f = user;
    if (!ptr) return;
    f->live--;
    free(ptr);
}

/* What the test loads: a generated file (bytes) or a path. */
typedef struct source {
    const char *name;
    const unsigned char *bytes;
    size_t size;
    const char *path;
} source;

static co_status load(const source *src, co_model **m)
{
    return src->path ? co_model_load(src->path, m) : co_model_load_memory(src->bytes, src->size, m);
}

static void check_source(const source *src)
{
    failing f = {0, 0, 0};
    co_allocator a = {fail_alloc, fail_free, &f};
    TU_STATUS(co_set_allocator(&a), CO_OK, "set allocator");
    long n, failures = 0, wrong = 0, limit = 200000;
    int done = 0;
    for (n = 1; n < limit && !done; n++) {
        f.count = 0;
        f.fail_at = n;
        f.live = 0;
        co_model *m = (co_model *)&m;
        co_stream *s = (co_stream *)&s;
        co_status st = load(src, &m);
        if (st == CO_OK) {
            st = co_stream_create(m, 2, &s);
            if (st != CO_OK) {
                TU_CHECK(s == NULL, "%s: n=%ld: stream not NULL after a failed create", src->name, n);
                s = NULL;
            }
        } else {
            TU_CHECK(m == NULL, "%s: n=%ld: model not NULL after a failed load", src->name, n);
            m = NULL;
            s = NULL;
        }
        if (st == CO_OK) {
            done = f.count < n; /* nothing failed: every allocation up to the last one was tried */
            if (!done) TU_CHECK(0, "%s: n=%ld: succeeded although allocation %ld failed", src->name, n, n);
        } else {
            failures++;
            if ((st != CO_ERR_OUT_OF_MEMORY || !co_last_error()[0]) && ++wrong <= 8)
                TU_CHECK(0, "%s: allocation %ld of %ld failed: got %s (%s), expected CO_ERR_OUT_OF_MEMORY", src->name, n,
                         f.count, co_status_name(st), co_last_error());
        }
        co_stream_free(s);
        co_model_free(m);
        if (f.live != 0) TU_CHECK(0, "%s: n=%ld: %ld allocation(s) leaked", src->name, n, f.live);
    }
    TU_CHECK(wrong == 0, "%s: %ld of %ld failed allocations were not reported as CO_ERR_OUT_OF_MEMORY (first 8 shown)",
             src->name, wrong, failures);
    TU_CHECK(done, "%s: load + create did not succeed within %ld allocations", src->name, limit);
    printf("%s: load + create: %ld allocation failures injected, %ld not reported as CO_ERR_OUT_OF_MEMORY\n", src->name,
           failures, wrong);

    /* co_forward and co_model_plan_info under failing allocations */
    f.fail_at = 0;
    co_model *m = NULL;
    TU_STATUS(load(src, &m), CO_OK, src->name);
    if (m) {
        co_shape frame, clip, yshape;
        TU_STATUS(co_model_frame_shape(m, &frame), CO_OK, "frame shape");
        clip.ndim = frame.ndim + 2;
        clip.dims[0] = 2;
        clip.dims[1] = frame.dims[0];
        clip.dims[2] = 8;
        for (int i = 1; i < frame.ndim; i++) clip.dims[2 + i] = frame.dims[i];
        TU_STATUS(co_forward_shape(m, &clip, &yshape), CO_OK, "forward shape");
        int64_t xn = tu_numel(&clip), yn = tu_numel(&yshape);
        float *x = malloc((size_t)xn * sizeof(float)), *y = malloc((size_t)(yn ? yn : 1) * sizeof(float));
        if (!x || !y) exit(99);
        tu_fill(x, xn, 9);
        for (int which = 0; which < 2; which++) {
            int ok = 0;
            for (n = 1; n < limit && !ok; n++) {
                f.count = 0;
                f.fail_at = n;
                long live0 = f.live;
                co_plan_info pi;
                co_status st = which == 0 ? co_forward(m, &clip, x, y, (size_t)yn) : co_model_plan_info(m, 2, NULL, &pi);
                if (st == CO_OK) ok = f.count < n;
                else if (st != CO_ERR_OUT_OF_MEMORY) {
                    TU_CHECK(0, "%s: %s with allocation %ld failing: %s (%s)", src->name, which ? "plan_info" : "co_forward", n,
                             co_status_name(st), co_last_error());
                    break;
                }
                if (f.live != live0) TU_CHECK(0, "%s: %s leaked with allocation %ld failing", src->name, which ? "plan_info" : "co_forward", n);
            }
            TU_CHECK(ok, "%s: %s never succeeded", src->name, which ? "plan_info" : "co_forward");
        }
        f.fail_at = 0;
        free(x);
        free(y);
        co_model_free(m);
    }
    TU_STATUS(co_set_allocator(NULL), CO_OK, "restore allocator");
}

int main(int argc, char **argv)
{
    for (int which = 0; which < 2; which++) {
        tu_spec s;
        if (which == 0) tu_small_spec(&s);
        else tu_medium_spec(&s);
        size_t n = 0;
        unsigned char *bytes = tu_build(&s, &n);
        source src = {which ? "medium model" : "small model", bytes, n, NULL};
        check_source(&src);
        free(bytes);
    }
    for (int i = 1; i < argc; i++) {
        source src = {argv[i], NULL, 0, argv[i]};
        check_source(&src);
    }
    return tu_finish("test_oom");
}
