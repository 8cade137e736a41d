/*
 * inspect.h — what the plan inspection and profiling (inspect.c) share with the executor.
 */
#ifndef CO_INSPECT_H
#define CO_INSPECT_H

#include <stdint.h>

/* CLOCK_MONOTONIC in nanoseconds: the clock of co_stream_set_profile. */
int64_t co_clock_ns(void);

#endif /* CO_INSPECT_H */
