/*
 * attention_rows.h — the row kernels of the retroactive attention's step (layers/attention.c):
 * a dot product and the one pass over a row's numerators that updates them and sums the row's
 * output. The widest set the CPU runs is picked at run time (kernels/cpu.h); results may differ
 * from the portable loops by summation order only. Nothing here allocates.
 */
#ifndef CO_ATTENTION_ROWS_H
#define CO_ATTENTION_ROWS_H

#include <stdint.h>

/* sum_i a[i] b[i] */
float co_rows_dot(const float *a, const float *b, int64_t n);

/* For i < n: a[i] = a[i] s + c_old u_old[i] + c_new u_new[i]; o[i] += a[i] inv. */
void co_rows_update_sum(int64_t n, float s, float c_old, float c_new, float inv, const float *u_old,
                        const float *u_new, float *a, float *o);

/* For i < n: o[i] += a[i] inv. */
void co_rows_sum(int64_t n, float inv, const float *a, float *o);

#endif /* CO_ATTENTION_ROWS_H */
