/*
 * conv_dw_impl.h — the one body of the wide co_dw_taps kernels, instantiated by conv_dw_avx512.c
 * and conv_dw_avx2.c (each compiled with its own -m flags), the way gemm_impl.h separates the
 * kernel sets: the file that includes it defines the vector type and operations, this file the
 * loop. Not installed; not for the layers.
 *
 * The including file defines, before including:
 *   DW_VL               lanes per vector
 *   DW_VEC, DW_MASK     vector type and the type of a lane mask
 *   DW_SET1(x)          broadcast
 *   DW_MASK_FOR(k)      mask of the first k lanes, 0 <= k <= DW_VL
 *   DW_LOADU(p), DW_STOREU(p, v)   unaligned load and store of a whole vector
 *   DW_LOAD(m, p)       masked load (lanes outside m read as 0 and are not accessed)
 *   DW_STORE(p, m, v)   masked store
 *   DW_FMA(a, b, c)     a * b + c, fused
 *   DW_TAPS_FN          the function's name (co_dw_taps_<isa>)
 *
 * Register blocking: a block of DW_NV vectors of lanes times up to DW_MAX_OUT outputs is summed
 * over all taps in registers (one load of each input vector serves every output); the block
 * sizes keep at least 4 independent FMA chains and at most 8 accumulators. Every lane of an
 * output is the same FMA chain in tap order whatever the block, so results do not depend on
 * how outputs are grouped or rows are cut.
 */
#include "kernels/conv_dw.h"

enum { DW_MAX_OUT = 4 };

#if defined(__GNUC__)
#define DW_INLINE static inline __attribute__((always_inline))
#else
#define DW_INLINE static inline
#endif

/* Lanes [i, i + nv * DW_VL) of one row for no outputs: whole vectors (full) or masked to n. no,
 * nv and full are constants at every call site, so the accumulators stay in registers. */
DW_INLINE void dw_block(const int no, const int nv, const int full, int64_t i, int64_t n, int n_taps, const float *const *src,
                        int64_t off, const float *w, int64_t w_ld, const float *init, int accumulate, float *const *dst, int64_t doff)
{
    DW_VEC acc[DW_MAX_OUT][4];
    DW_MASK m[4];
    for (int v = 0; v < nv && !full; v++) {
        const int64_t left = n - i - v * DW_VL;
        m[v] = DW_MASK_FOR(left <= 0 ? 0 : left >= DW_VL ? DW_VL : left);
    }
#define DW_GET(v, p) (full ? DW_LOADU(p) : DW_LOAD(m[v], p))
    for (int o = 0; o < no; o++)
        for (int v = 0; v < nv; v++)
            acc[o][v] = accumulate ? DW_GET(v, dst[o] + doff + i + v * DW_VL) : DW_SET1(init[o]);
    for (int t = 0; t < n_taps; t++) {
        const float *s = src[t] + off + i;
        DW_VEC x[4];
        for (int v = 0; v < nv; v++) x[v] = DW_GET(v, s + v * DW_VL);
        for (int o = 0; o < no; o++) {
            const DW_VEC wt = DW_SET1(w[o * w_ld + t]);
            for (int v = 0; v < nv; v++) acc[o][v] = DW_FMA(wt, x[v], acc[o][v]);
        }
    }
    for (int o = 0; o < no; o++)
        for (int v = 0; v < nv; v++) {
            if (full)
                DW_STOREU(dst[o] + doff + i + v * DW_VL, acc[o][v]);
            else
                DW_STORE(dst[o] + doff + i + v * DW_VL, m[v], acc[o][v]);
        }
#undef DW_GET
}

/* One row for no (constant) outputs: full blocks of nv vectors, then one masked vector at a time. */
DW_INLINE void dw_row(const int no, const int nv, int64_t n, int n_taps, const float *const *src, int64_t off,
                      const float *w, int64_t w_ld, const float *init, int accumulate, float *const *dst, int64_t doff)
{
    int64_t i = 0;
    for (; i + nv * DW_VL <= n; i += nv * DW_VL)
        dw_block(no, nv, 1, i, n, n_taps, src, off, w, w_ld, init, accumulate, dst, doff);
    for (; i + DW_VL <= n; i += DW_VL) dw_block(no, 1, 1, i, n, n_taps, src, off, w, w_ld, init, accumulate, dst, doff);
    if (i < n) dw_block(no, 1, 0, i, n, n_taps, src, off, w, w_ld, init, accumulate, dst, doff);
}

void DW_TAPS_FN(CO_DW_TAPS_ARGS)
{
    for (int o0 = 0; o0 < n_out; o0 += DW_MAX_OUT) {
        const int no = n_out - o0 < DW_MAX_OUT ? n_out - o0 : DW_MAX_OUT;
        const float *wo = w + o0 * w_ld, *io = init ? init + o0 : init;
        float *const *d = dst + o0;
        for (int64_t r = 0; r < rows; r++) {
            const int64_t off = r * src_ld, doff = r * dst_ld;
            switch (no) {
            case 1: dw_row(1, 4, n, n_taps, src, off, wo, w_ld, io, accumulate, d, doff); break;
            case 2: dw_row(2, 4, n, n_taps, src, off, wo, w_ld, io, accumulate, d, doff); break;
            case 3: dw_row(3, 2, n, n_taps, src, off, wo, w_ld, io, accumulate, d, doff); break;
            default: dw_row(4, 2, n, n_taps, src, off, wo, w_ld, io, accumulate, d, doff); break;
            }
        }
    }
}
