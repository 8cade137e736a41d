/*
 * threads.h — the thread pool a stream, a multi-stream context or a threaded clip owns
 * (kernels/threadpool.h), allocated through the allocator hook. Internal.
 */
#ifndef CO_THREADS_H
#define CO_THREADS_H

#include <continual.h>

#include "kernels/threadpool.h"

typedef struct co_threads {
    co_pool *pool; /* NULL: one thread */
    void *mem;     /* what was allocated for it */
} co_threads;

/* Replaces t's pool by one of n_threads (1: none). On failure t is left as it was.
 * Statuses: CO_ERR_INVALID_ARGUMENT (n_threads outside [1, CO_MAX_THREADS]; `who` names the call),
 * CO_ERR_OUT_OF_MEMORY (the pool's memory, or the OS refused a thread). */
co_status co_threads_set(co_threads *t, int n_threads, const char *who);
/* Stops and frees t's pool; t is then one thread. */
void co_threads_clear(co_threads *t);

#endif /* CO_THREADS_H */
