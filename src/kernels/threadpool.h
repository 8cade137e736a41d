/*
 * threadpool.h — the intra-step thread pool: n - 1 worker threads plus the calling thread run
 * the tasks of one parallel loop (a product split into column or row blocks).
 *
 * Lifetime: the pool is created outside the step (co_stream_set_threads and friends) in memory
 * the caller provides (co_pool_bytes), so this file allocates nothing itself and depends on no
 * other layer; running a loop allocates nothing. Between loops the workers spin for a short while
 * (CO_POOL_SPIN_ROUNDS pauses, a fraction of a millisecond, so that the next product of the same
 * step finds them awake) and then sleep on a condition variable: an idle pool burns no core.
 *
 * How a product reaches the pool: the executor makes a pool "current" on its own thread for
 * the duration of one call (co_pool_enter / co_pool_leave, a thread-local pointer), and
 * co_gemm_* read co_pool_current(). While a loop runs, the current pool of the calling thread is
 * NULL and workers never have one, so a task that calls a product again runs it on its own
 * thread: no nesting, no deadlock. A pool serves one calling thread at a time (a stream or a
 * multi-stream context is used by one thread at a time, and each owns its pool).
 */
#ifndef CO_THREADPOOL_H
#define CO_THREADPOOL_H

#include <stddef.h>

typedef struct co_pool co_pool;
typedef void (*co_pool_task_fn)(void *ctx, int task);

/* Most threads a pool has (the calling thread included). */
#define CO_POOL_MAX_THREADS 256

/* Bytes a pool of n_threads (2 .. CO_POOL_MAX_THREADS) needs; the memory must be aligned to 64. */
size_t co_pool_bytes(int n_threads);
/* Starts n_threads - 1 workers in `mem` (co_pool_bytes(n_threads) bytes, 64-aligned). Returns
 * the pool, or NULL when a thread (or mutex) could not be created; then nothing is left running
 * and `mem` may be freed. */
co_pool *co_pool_init(void *mem, int n_threads);
/* Stops and joins the workers (NULL: no-op); `mem` may then be freed. */
void co_pool_destroy(co_pool *pool);
/* Threads of the pool, the caller included (1 for NULL). */
int co_pool_threads(const co_pool *pool);

/* Runs fn(ctx, t) for every t in [0, n_tasks), spread over the pool's threads (the caller takes
 * tasks too), and returns when all have finished; everything the tasks wrote is then visible to
 * the caller. Tasks must be independent. pool NULL or n_tasks 1: all on the calling thread. */
void co_pool_run(co_pool *pool, int n_tasks, co_pool_task_fn fn, void *ctx);

/* The calling thread's current pool (NULL: none; products then run on this thread). */
co_pool *co_pool_current(void);
/* Makes `pool` current on this thread and returns the previous one, for co_pool_leave. */
co_pool *co_pool_enter(co_pool *pool);
void co_pool_leave(co_pool *previous);

#endif /* CO_THREADPOOL_H */
