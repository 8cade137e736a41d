/*
 * threads.c — owning a thread pool (threads.h), the public thread options of streams and
 * multi-stream contexts live with their objects in stream.c; the threaded clip is here.
 */
#include "core/threads.h"

#include <stdint.h>

#include "core/op.h"

enum { POOL_ALIGN = 64 };

co_status co_threads_set(co_threads *t, int n_threads, const char *who)
{
    if (n_threads < 1 || n_threads > CO_MAX_THREADS)
        return co_error(CO_ERR_INVALID_ARGUMENT, "%s: %d threads, expected 1 to %d", who, n_threads, CO_MAX_THREADS);
    co_threads fresh = {NULL, NULL};
    if (n_threads > 1) {
        fresh.mem = co_alloc(co_pool_bytes(n_threads) + POOL_ALIGN);
        if (!fresh.mem) return co_error(CO_ERR_OUT_OF_MEMORY, "%s: out of memory for a pool of %d threads", who, n_threads);
        void *aligned = (void *)(((uintptr_t)fresh.mem + POOL_ALIGN - 1) & ~(uintptr_t)(POOL_ALIGN - 1));
        fresh.pool = co_pool_init(aligned, n_threads);
        if (!fresh.pool) {
            co_free(fresh.mem);
            return co_error(CO_ERR_OUT_OF_MEMORY, "%s: the system refused to start %d worker threads", who, n_threads - 1);
        }
    }
    co_threads_clear(t);
    *t = fresh;
    return CO_OK;
}

void co_threads_clear(co_threads *t)
{
    co_pool_destroy(t->pool);
    co_free(t->mem);
    t->pool = NULL;
    t->mem = NULL;
}

co_status co_forward_threaded(const co_model *model, int n_threads, const co_shape *in, const float *x, float *y,
                              size_t y_capacity)
{
    co_threads t = {NULL, NULL};
    co_status st = co_threads_set(&t, n_threads, "co_forward_threaded");
    if (st) return st;
    co_pool *const outer = co_pool_enter(t.pool);
    st = co_forward(model, in, x, y, y_capacity);
    co_pool_leave(outer);
    co_threads_clear(&t);
    return st;
}
