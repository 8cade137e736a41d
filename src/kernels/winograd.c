/*
 * winograd.c — F(4x4, 3x3) transforms: the weight transform (double precision, at model build),
 * the portable lane loops, and the dispatch to the AVX-512 / AVX2 builds of the same loops.
 */
#include "kernels/winograd.h"

#include "kernels/cpu.h"

#define WINO_INPUT wino_input_portable
#define WINO_OUTPUT wino_output_portable
#define WINO_OUTPUT_ADD wino_output_add_portable
static void wino_input_portable(CO_WINO_INPUT_ARGS);
static void wino_output_portable(CO_WINO_OUTPUT_ARGS);
static void wino_output_add_portable(CO_WINO_OUTPUT_ADD_ARGS);
#include "kernels/winograd_impl.h"

/* G (6x3) of F(4, 3) with interpolation points 0, -1, 1, 1/2, -1/2 and infinity. */
static const double k_wino_g[CO_WINO_IN][CO_WINO_KERNEL] = {
    {1.0 / 4, 0, 0},
    {-1.0 / 6, -1.0 / 6, -1.0 / 6},
    {-1.0 / 6, 1.0 / 6, -1.0 / 6},
    {1.0 / 24, 1.0 / 12, 1.0 / 6},
    {1.0 / 24, -1.0 / 12, 1.0 / 6},
    {0, 0, 1},
};

void co_wino_weight(const float *g, float *u, int64_t u_stride)
{
    double gg[CO_WINO_IN][CO_WINO_KERNEL]; /* G g */
    for (int i = 0; i < CO_WINO_IN; i++)
        for (int c = 0; c < CO_WINO_KERNEL; c++) {
            double s = 0;
            for (int k = 0; k < CO_WINO_KERNEL; k++) s += k_wino_g[i][k] * g[k * CO_WINO_KERNEL + c];
            gg[i][c] = s;
        }
    for (int i = 0; i < CO_WINO_IN; i++)
        for (int j = 0; j < CO_WINO_IN; j++) {
            double s = 0;
            for (int k = 0; k < CO_WINO_KERNEL; k++) s += gg[i][k] * k_wino_g[j][k];
            u[(i * CO_WINO_IN + j) * u_stride] = (float)s;
        }
}

void co_wino_input(CO_WINO_INPUT_ARGS)
{
#if defined(CO_GEMM_X86)
    switch (co_cpu_isa()) {
    case CO_ISA_AVX512: co_wino_input_avx512(n, d, d_ld, v, v_ld); return;
    case CO_ISA_AVX2: co_wino_input_avx2(n, d, d_ld, v, v_ld); return;
    default: break;
    }
#endif
    wino_input_portable(n, d, d_ld, v, v_ld);
}

void co_wino_output(CO_WINO_OUTPUT_ARGS)
{
#if defined(CO_GEMM_X86)
    switch (co_cpu_isa()) {
    case CO_ISA_AVX512: co_wino_output_avx512(n, m, m_ld, y, y_ld); return;
    case CO_ISA_AVX2: co_wino_output_avx2(n, m, m_ld, y, y_ld); return;
    default: break;
    }
#endif
    wino_output_portable(n, m, m_ld, y, y_ld);
}

void co_wino_output_add(CO_WINO_OUTPUT_ADD_ARGS)
{
#if defined(CO_GEMM_X86)
    switch (co_cpu_isa()) {
    case CO_ISA_AVX512: co_wino_output_add_avx512(n, m, m_ld, dst, n_dst, chan_stride, row_stride); return;
    case CO_ISA_AVX2: co_wino_output_add_avx2(n, m, m_ld, dst, n_dst, chan_stride, row_stride); return;
    default: break;
    }
#endif
    wino_output_add_portable(n, m, m_ld, dst, n_dst, chan_stride, row_stride);
}
