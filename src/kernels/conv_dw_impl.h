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
 *   DW_ADD(a, b)        a + b
 *   DW_TAPS_FN          the function's name (co_dw_taps_<isa>)
 *   DW_PIXELS_FN        the channel-vector form's name (co_dw_pixels_<isa>)
 *   DW_INDEX, DW_STRIDES(ld), DW_GATHER(m, p, idx)   lane offsets 0, ld, 2 ld, ... and a masked
 *                       gather of p[idx] (lanes outside m read as 0 and are not accessed)
 *   DW_TRANSPOSE_FN     the transpose's name (co_dw_transpose_<isa>)
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

/* ---- the channel-vector form (co_dw_pixels): np pixels x nv vectors of channels from c (one
 * vector masked to m when !full) summed over all taps in registers; each tap's weight vectors are
 * loaded once for the np pixels. np * nv >= 4 keeps enough independent FMA chains (a lone pixel
 * takes 4 channel vectors). Every lane is the same FMA chain in tap order whatever the block. */
enum { DW_PX_ACC = 8 };

DW_INLINE void dw_px_block(const int np, const int nv, const int full, DW_MASK m, int64_t i, int64_t c, int64_t C,
                           int n_taps, const float *const *src, const int64_t *src_step, const float *w,
                           const float *bias, float *dst)
{
#define DW_GET(p) (full ? DW_LOADU(p) : DW_LOAD(m, p))
    DW_VEC acc[DW_PX_ACC];
    for (int a = 0; a < np * nv; a++) acc[a] = DW_SET1(0.0f);
    for (int t = 0; t < n_taps; t++) {
        const int64_t st = src_step[t];
        const float *s = src[t] + i * st + c, *wt = w + t * C + c;
        for (int v = 0; v < nv; v++) {
            const DW_VEC wv = DW_GET(wt + v * DW_VL);
            for (int q = 0; q < np; q++) acc[q * nv + v] = DW_FMA(wv, DW_GET(s + q * st + v * DW_VL), acc[q * nv + v]);
        }
    }
    for (int v = 0; v < nv; v++) {
        const DW_VEC b = bias ? DW_GET(bias + c + v * DW_VL) : DW_SET1(0.0f);
        for (int q = 0; q < np; q++) {
            float *d = dst + (i + q) * C + c + v * DW_VL;
            if (full)
                DW_STOREU(d, DW_ADD(acc[q * nv + v], b));
            else
                DW_STORE(d, m, DW_ADD(acc[q * nv + v], b));
        }
    }
#undef DW_GET
}

/* Pixels [i, i + np) (np constant), all channels: blocks of nv full vectors, then single
 * vectors, then the masked tail. */
DW_INLINE void dw_px_pixels(const int np, const int nv, int64_t i, CO_DW_PIXELS_ARGS)
{
    const DW_MASK all = DW_MASK_FOR(DW_VL);
    int64_t c = 0;
    for (; c + nv * DW_VL <= C; c += nv * DW_VL) dw_px_block(np, nv, 1, all, i, c, C, n_taps, src, src_step, w, bias, dst);
    for (; c + DW_VL <= C; c += DW_VL) dw_px_block(np, 1, 1, all, i, c, C, n_taps, src, src_step, w, bias, dst);
    if (c < C) dw_px_block(np, 1, 0, DW_MASK_FOR(C - c), i, c, C, n_taps, src, src_step, w, bias, dst);
}

void DW_PIXELS_FN(CO_DW_PIXELS_ARGS)
{
    int64_t i = 0;
    for (; i + 8 <= n_px; i += 8) dw_px_pixels(8, 1, i, n_px, C, n_taps, src, src_step, w, bias, dst);
    for (; i + 4 <= n_px; i += 4) dw_px_pixels(4, 2, i, n_px, C, n_taps, src, src_step, w, bias, dst);
    for (; i + 2 <= n_px; i += 2) dw_px_pixels(2, 4, i, n_px, C, n_taps, src, src_step, w, bias, dst);
    for (; i < n_px; i++) dw_px_pixels(1, 4, i, n_px, C, n_taps, src, src_step, w, bias, dst);
}

/* Transpose: each output run of DW_VL floats is one gather down a column of src. */
void DW_TRANSPOSE_FN(CO_DW_TRANSPOSE_ARGS)
{
    const DW_INDEX idx = DW_STRIDES(src_ld);
    const DW_MASK all = DW_MASK_FOR(DW_VL);
    for (int64_t j = 0; j < cols; j++) {
        float *d = dst + j * dst_ld;
        int64_t i = 0;
        for (; i + DW_VL <= rows; i += DW_VL) DW_STOREU(d + i, DW_GATHER(all, src + i * src_ld + j, idx));
        if (i < rows) {
            const DW_MASK m = DW_MASK_FOR(rows - i);
            DW_STORE(d + i, m, DW_GATHER(m, src + i * src_ld + j, idx));
        }
    }
}
