/*
 * test_torch_demo.c — the C API against PyTorch: the demo network (Conv3d padding 1,
 * BatchNorm3d, ReLU, temporally strided Conv3d, ReLU, Conv3d; tools/make_demo.py) on the demo
 * clip, whose torch.nn output is committed as demo_expected.npy. All three forward modes must
 * match it to 1e-5 (relative to the output's scale):
 *   co_forward over the clip; co_forward_steps with pad_end; co_forward_step frame by frame,
 *   whose outputs are torch's output frames from the first one on (the last needs end padding).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/npy.h"
#include "testutil.h"

static double max_abs_diff(const float *a, const float *b, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || isnan(d)) m = isnan(d) ? INFINITY : d;
    }
    return m;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_torch_demo EXAMPLES_DIR\n");
        return 2;
    }
    char path[1024], err[256];
    npy_array x, e;
    snprintf(path, sizeof path, "%s/demo_input.npy", argv[1]);
    TU_CHECK(npy_read_f32(path, &x, err, sizeof err) == 0, "%s: %s", path, err);
    snprintf(path, sizeof path, "%s/demo_expected.npy", argv[1]);
    TU_CHECK(npy_read_f32(path, &e, err, sizeof err) == 0, "%s: %s", path, err);
    snprintf(path, sizeof path, "%s/demo.safetensors", argv[1]);
    co_model *m = NULL;
    TU_STATUS(co_model_load(path, &m), CO_OK, "load");
    if (tu_failures) return tu_finish("test_torch_demo");
    double scale = 0;
    for (int64_t i = 0; i < e.numel; i++) scale = fmax(scale, fabs(e.data[i]));
    const double tol = 1e-5 * fmax(1.0, scale);

    /* forward */
    co_shape in = {x.ndim, {0}}, out;
    for (int i = 0; i < x.ndim; i++) in.dims[i] = x.shape[i];
    TU_STATUS(co_forward_shape(m, &in, &out), CO_OK, "forward shape");
    int same = out.ndim == e.ndim;
    for (int i = 0; same && i < e.ndim; i++) same = out.dims[i] == e.shape[i];
    TU_CHECK(same, "forward shape differs from torch's");
    float *y = calloc((size_t)e.numel, sizeof *y);
    TU_STATUS(co_forward(m, &in, x.data, y, (size_t)e.numel), CO_OK, "forward");
    double d = max_abs_diff(y, e.data, e.numel);
    TU_CHECK(d <= tol, "forward: max abs diff %g > %g", d, tol);
    printf("forward            max abs diff %.3g\n", d);

    /* forward_steps with pad_end from a clean stream */
    const int B = (int)x.shape[0];
    const int64_t T = x.shape[2], To = e.shape[2], rows_in = x.shape[0] * x.shape[1], rows_out = e.shape[0] * e.shape[1];
    const int64_t S_in = x.numel / (rows_in * T), S_out = e.numel / (rows_out * To);
    co_shape frame = {x.ndim - 2, {0}}; /* (C, *S): the clip without batch and time */
    frame.dims[0] = x.shape[1];
    for (int i = 3; i < x.ndim; i++) frame.dims[i - 2] = x.shape[i];
    co_stream *s = NULL;
    TU_STATUS(co_stream_create_shaped(m, B, &frame, &s), CO_OK, "stream");
    if (!s) return tu_finish("test_torch_demo");
    const int64_t cap = co_steps_max_output(s, T, 1);
    float *ys = calloc((size_t)(rows_out * cap * S_out), sizeof *ys);
    int64_t n = 0;
    TU_STATUS(co_forward_steps(s, x.data, T, ys, cap, &n, 1, 1), CO_OK, "forward_steps");
    TU_CHECK(n == To, "forward_steps(pad_end) gave %lld frames, torch %lld", (long long)n, (long long)To);
    if (n == To) {
        d = max_abs_diff(ys, e.data, e.numel);
        TU_CHECK(d <= tol, "forward_steps: max abs diff %g > %g", d, tol);
        printf("forward_steps      max abs diff %.3g\n", d);
    }

    /* forward_step, frame by frame, from a clean stream */
    TU_STATUS(co_stream_clean(s), CO_OK, "clean");
    float *fx = malloc((size_t)(rows_in * S_in) * sizeof *fx), *fy = malloc((size_t)(rows_out * S_out) * sizeof *fy);
    int64_t k = 0;
    double worst = 0;
    for (int64_t t = 0; t < T; t++) {
        for (int64_t r = 0; r < rows_in; r++) memcpy(fx + r * S_in, x.data + (r * T + t) * S_in, (size_t)S_in * sizeof(float));
        int has = 0;
        TU_STATUS(co_forward_step(s, fx, fy, &has, 1), CO_OK, "forward_step");
        if (!has) continue;
        TU_CHECK(k < To, "more step outputs than torch frames");
        if (k >= To) break;
        for (int64_t r = 0; r < rows_out; r++)
            worst = fmax(worst, max_abs_diff(fy + r * S_out, e.data + (r * To + k) * S_out, S_out));
        k++;
    }
    TU_CHECK(k >= To - 1, "forward_step gave %lld outputs, expected at least %lld", (long long)k, (long long)(To - 1));
    TU_CHECK(worst <= tol, "forward_step: max abs diff %g > %g", worst, tol);
    printf("forward_step       max abs diff %.3g over %lld outputs\n", worst, (long long)k);

    free(fx);
    free(fy);
    free(ys);
    free(y);
    co_stream_free(s);
    co_model_free(m);
    npy_free(&x);
    npy_free(&e);
    return tu_finish("test_torch_demo");
}
