/*
 * threadpool.c — see threadpool.h.
 *
 * One loop at a time. The caller publishes a job (fn, ctx, n_tasks) under the mutex with a new
 * generation number and wakes sleeping workers. The tasks are dealt out in contiguous ranges, one
 * per thread (thread r owns [n r / T, n (r + 1) / T)), each range with its own 64-bit atomic that
 * holds (generation << 32 | next task): a claim is a compare-and-swap that succeeds only for the
 * generation the thread copied, so a worker that wakes late can never take a task of a later job.
 * A thread runs its own range first and then takes what is left of the others'. Why ranges: the
 * products split by shape only, so a layer's task t covers the same weight columns every step, and
 * with a fixed owner those columns stay in that core's L2 (a Conv1d stack's 1.3 MB of weights fit
 * in one L2; with one shared counter the halves changed cores from step to step and came back from
 * L3 each time). Stealing keeps what dynamic claiming gave: a worker the OS preempted simply runs
 * fewer tasks; on a loaded machine the caller does the rest. Which thread runs a task never
 * changes a result (tasks are independent). Every finished task increments `done` (release); the
 * caller, after claiming what is left itself, waits (acquire) until done == n_tasks.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include "kernels/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

/* Pauses a worker spins on the generation before it sleeps (a pause is ~10-150 cycles: a
 * fraction of a millisecond in all), and pauses the caller spins on `done` between yields. */
enum { CO_POOL_SPIN_ROUNDS = 1 << 14, CO_POOL_WAIT_YIELD_ROUNDS = 1 << 10 };
#define TASK_BITS 32
#define TASK_MASK ((UINT64_C(1) << TASK_BITS) - 1)

/* One claim counter per thread, each on its own cache line. */
typedef struct claim_slot {
    _Alignas(64) atomic_uint_least64_t claim; /* (generation << 32) | next task of this thread's range */
} claim_slot;

typedef struct worker {
    claim_slot slot;
    co_pool *pool;
    pthread_t thread;
    int index; /* 1 .. n_threads - 1; the calling thread is 0 */
} worker;

struct co_pool {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    /* the job, written by the caller and copied by workers under `lock` */
    co_pool_task_fn fn;
    void *ctx;
    int n_tasks;
    uint32_t job_gen; /* under lock */
    int sleepers;     /* under lock */
    int stop;         /* under lock */
    atomic_uint gen;  /* the latest job's generation, for spinning without the lock */
    claim_slot caller_slot;
    _Alignas(64) atomic_int done;
    int n_threads;
    worker workers[]; /* n_threads - 1 */
};

static _Thread_local co_pool *t_current;

co_pool *co_pool_current(void) { return t_current; }

co_pool *co_pool_enter(co_pool *pool)
{
    co_pool *prev = t_current;
    t_current = pool;
    return prev;
}

void co_pool_leave(co_pool *previous) { t_current = previous; }

int co_pool_threads(const co_pool *pool) { return pool ? pool->n_threads : 1; }

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static atomic_uint_least64_t *claim_of(co_pool *p, int thread)
{
    return thread == 0 ? &p->caller_slot.claim : &p->workers[thread - 1].slot.claim;
}

/* First task of thread r's range when n tasks are dealt to t threads. */
static inline uint64_t range_start(int n, int t, int r) { return (uint64_t)n * (uint64_t)r / (uint64_t)t; }

/* Claims and runs tasks of generation g (n tasks) until none is left: first those of this
 * thread's own range, then, stealing, those left in the other threads' ranges. */
static void run_tasks(co_pool *p, int self, uint32_t g, co_pool_task_fn fn, void *ctx, int n)
{
    const int t_count = p->n_threads;
    for (int i = 0; i < t_count; i++) {
        const int r = (self + i) % t_count;
        atomic_uint_least64_t *claim = claim_of(p, r);
        const uint64_t end = range_start(n, t_count, r + 1);
        uint_least64_t s = atomic_load_explicit(claim, memory_order_acquire);
        for (;;) {
            if ((uint32_t)(s >> TASK_BITS) != g) return; /* a later job: this one is over */
            const uint64_t t = s & TASK_MASK;
            if (t >= end) break;
            if (!atomic_compare_exchange_weak_explicit(claim, &s, s + 1, memory_order_acq_rel, memory_order_acquire))
                continue; /* s now holds the current value */
            fn(ctx, (int)t);
            atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
            s = atomic_load_explicit(claim, memory_order_acquire);
        }
    }
}

static void *worker_main(void *arg)
{
    co_pool *p = ((worker *)arg)->pool;
    const int self = ((worker *)arg)->index;
    uint32_t seen = 0;
    for (;;) {
        for (int r = 0; r < CO_POOL_SPIN_ROUNDS; r++) {
            if (atomic_load_explicit(&p->gen, memory_order_acquire) != seen) break;
            cpu_relax();
        }
        pthread_mutex_lock(&p->lock);
        while (p->job_gen == seen && !p->stop) {
            p->sleepers++;
            pthread_cond_wait(&p->wake, &p->lock);
            p->sleepers--;
        }
        if (p->stop) {
            pthread_mutex_unlock(&p->lock);
            return NULL;
        }
        const uint32_t g = p->job_gen;
        co_pool_task_fn fn = p->fn;
        void *ctx = p->ctx;
        const int n = p->n_tasks;
        pthread_mutex_unlock(&p->lock);
        seen = g;
        run_tasks(p, self, g, fn, ctx, n);
    }
}

size_t co_pool_bytes(int n_threads)
{
    if (n_threads < 2) n_threads = 2;
    return sizeof(co_pool) + (size_t)(n_threads - 1) * sizeof(worker);
}

co_pool *co_pool_init(void *mem, int n_threads)
{
    if (!mem || n_threads < 2 || n_threads > CO_POOL_MAX_THREADS) return NULL;
    co_pool *p = mem;
    memset(p, 0, co_pool_bytes(n_threads));
    if (pthread_mutex_init(&p->lock, NULL)) return NULL;
    if (pthread_cond_init(&p->wake, NULL)) {
        pthread_mutex_destroy(&p->lock);
        return NULL;
    }
    atomic_init(&p->gen, 0);
    atomic_init(&p->caller_slot.claim, 0);
    for (int i = 0; i < n_threads - 1; i++) atomic_init(&p->workers[i].slot.claim, 0);
    atomic_init(&p->done, 0);
    p->n_threads = 1;
    for (int i = 0; i < n_threads - 1; i++) {
        p->workers[i].pool = p;
        p->workers[i].index = i + 1;
        if (pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i])) {
            co_pool_destroy(p); /* joins the ones started */
            return NULL;
        }
        p->n_threads++;
    }
    return p;
}

void co_pool_destroy(co_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->n_threads - 1; i++) pthread_join(p->workers[i].thread, NULL);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
}

void co_pool_run(co_pool *p, int n_tasks, co_pool_task_fn fn, void *ctx)
{
    if (n_tasks <= 0) return;
    co_pool *const outer = co_pool_enter(NULL); /* tasks on this thread do not nest */
    if (!p || n_tasks == 1 || p->n_threads < 2) {
        for (int t = 0; t < n_tasks; t++) fn(ctx, t);
        co_pool_leave(outer);
        return;
    }
    pthread_mutex_lock(&p->lock);
    const uint32_t g = ++p->job_gen;
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    for (int r = 0; r < p->n_threads; r++)
        atomic_store_explicit(claim_of(p, r), (uint_least64_t)g << TASK_BITS | range_start(n_tasks, p->n_threads, r),
                              memory_order_release);
    atomic_store_explicit(&p->gen, g, memory_order_release);
    if (p->sleepers) pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);

    run_tasks(p, 0, g, fn, ctx, n_tasks);
    for (int r = 1; atomic_load_explicit(&p->done, memory_order_acquire) < n_tasks; r++) {
        if (r % CO_POOL_WAIT_YIELD_ROUNDS == 0) sched_yield(); /* a worker holding a task was preempted */
        else cpu_relax();
    }
    co_pool_leave(outer);
}
