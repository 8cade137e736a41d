/*
 * test_cli.c — runs the built `continual` tool on the bundled demo model: info, run (.npy in
 * and out, float64 input, --pad-end, raw frames through stdin/stdout), bench, compare, and the
 * error cases (each must exit non-zero — 2 for bad usage — with a message on stderr).
 *
 * usage: test_cli PATH/TO/continual PATH/TO/examples
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "cli/npy.h"
#include "testutil.h"

static const char *g_cli, *g_dir;
static char g_model[1024], g_input[1024], g_expected[1024];
static char g_out[256], g_err[256];
static char *g_stdout_text, *g_stderr_text;
static char g_last[4096];

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *n = 0;
        char *e = malloc(1);
        if (!e) exit(99);
        e[0] = 0;
        return e;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap + 1);
    if (!buf) exit(99);
    size_t got;
    while ((got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb) exit(99);
            buf = nb;
        }
    }
    fclose(f);
    buf[len] = 0;
    *n = len;
    return buf;
}

/* Runs `continual ARGS` (a shell fragment) with stdout/stderr captured; returns the exit code. */
static int cli(const char *fmt, ...)
{
    char args[4096], cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(g_last, sizeof g_last, "%s", args);
    snprintf(cmd, sizeof cmd, "'%s' %s > '%s' 2> '%s'", g_cli, args, g_out, g_err);
    int rc = system(cmd);
    free(g_stdout_text);
    free(g_stderr_text);
    size_t n;
    g_stdout_text = slurp(g_out, &n);
    g_stderr_text = slurp(g_err, &n);
    if (rc == -1 || !WIFEXITED(rc)) return -1000; /* killed by a signal: a crash */
    return WEXITSTATUS(rc);
}

#define EXPECT_EXIT(want, ...)                                                                                         \
    do {                                                                                                               \
        int rc_ = cli(__VA_ARGS__);                                                                                    \
        if (rc_ != (want))                                                                                             \
            tu_fail_at(__FILE__, __LINE__, "continual %s: exit %d, expected %d\nstdout: %s\nstderr: %s", g_last, rc_,   \
                       (want), g_stdout_text, g_stderr_text);                                                          \
    } while (0)

static void expect_in(const char *text, const char *needle, const char *where)
{
    TU_CHECK(strstr(text, needle) != NULL, "%s does not contain '%s':\n%s", where, needle, text);
}

/* max |a - b| of two .npy files (shape mismatch or read failure: INFINITY) */
static double npy_diff(const char *pa, const char *pb)
{
    npy_array a, b;
    char err[512];
    if (npy_read_f32(pa, &a, err, sizeof err)) {
        TU_CHECK(0, "cannot read %s: %s", pa, err);
        return INFINITY;
    }
    if (npy_read_f32(pb, &b, err, sizeof err)) {
        TU_CHECK(0, "cannot read %s: %s", pb, err);
        npy_free(&a);
        return INFINITY;
    }
    double d = 0;
    int same = a.ndim == b.ndim;
    for (int i = 0; same && i < a.ndim; i++) same = a.shape[i] == b.shape[i];
    if (!same) d = INFINITY;
    for (int64_t i = 0; same && i < a.numel; i++) {
        double e = fabs((double)a.data[i] - b.data[i]);
        if (!(e <= d)) d = e;
    }
    npy_free(&a);
    npy_free(&b);
    return d;
}

/* A .npy file with a hand-written header and raw data. */
static void write_npy_raw(const char *path, const char *dict, const void *data, size_t n)
{
    size_t dn = strlen(dict), hlen = dn + 1;
    while ((10 + hlen) % 64) hlen++;
    tu_str s = {0};
    char pre[10] = {(char)0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (char)(hlen & 0xff), (char)(hlen >> 8)};
    tu_str_addn(&s, pre, 10);
    tu_str_add(&s, dict);
    while (s.n < 10 + hlen - 1) tu_str_add(&s, " ");
    tu_str_add(&s, "\n");
    tu_str_addn(&s, data, n);
    TU_CHECK(tu_write_file(path, s.s, s.n) == 0, "cannot write %s", path);
    tu_str_free(&s);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: test_cli PATH/TO/continual PATH/TO/examples\n");
        return 2;
    }
    g_cli = argv[1];
    g_dir = argv[2];
    snprintf(g_model, sizeof g_model, "%s/demo.safetensors", g_dir);
    snprintf(g_input, sizeof g_input, "%s/demo_input.npy", g_dir);
    snprintf(g_expected, sizeof g_expected, "%s/demo_expected.npy", g_dir);
    tu_temp_path("cli", "stdout", g_out, sizeof g_out);
    tu_temp_path("cli", "stderr", g_err, sizeof g_err);
    char out_npy[256], frames[256], tmp_npy[256], bad_model[256];
    tu_temp_path("cli_out", "npy", out_npy, sizeof out_npy);
    tu_temp_path("cli_frames", "raw", frames, sizeof frames);
    tu_temp_path("cli_tmp", "npy", tmp_npy, sizeof tmp_npy);
    tu_temp_path("cli_bad", "safetensors", bad_model, sizeof bad_model);

    /* ---- info ---- */
    EXPECT_EXIT(0, "info '%s'", g_model);
    expect_in(g_stdout_text, "Conv3d", "info");
    expect_in(g_stdout_text, "BatchNorm3d", "info");
    expect_in(g_stdout_text, "receptive field", "info");
    expect_in(g_stdout_text, "MACs/step", "info");
    expect_in(g_stdout_text, "arena bytes", "info");
    EXPECT_EXIT(0, "info '%s' --batch 3 --frame-shape 3,20,20", g_model);
    expect_in(g_stdout_text, "(3, 3, 20, 20)", "info --batch 3 --frame-shape");
    expect_in(g_stdout_text, "(3, 4, 20, 20)", "info --batch 3 --frame-shape");

    /* ---- run: .npy in and out ---- */
    EXPECT_EXIT(0, "run '%s' --input '%s' --output '%s' --pad-end", g_model, g_input, out_npy);
    TU_CHECK(npy_diff(out_npy, g_expected) < 1e-4, "run --pad-end differs from demo_expected.npy");
    EXPECT_EXIT(0, "run '%s' --input='%s' --output='%s'", g_model, g_input, out_npy);
    TU_CHECK(npy_diff(out_npy, g_expected) < 1e-4, "run differs from demo_expected.npy");

    /* float64 input, and raw frames through stdin / stdout */
    npy_array in;
    char err[512];
    if (npy_read_f32(g_input, &in, err, sizeof err) == 0) {
        double *d = malloc((size_t)in.numel * sizeof(double));
        if (!d) return 99;
        for (int64_t i = 0; i < in.numel; i++) d[i] = in.data[i];
        char dict[256];
        snprintf(dict, sizeof dict, "{'descr': '<f8', 'fortran_order': False, 'shape': (%lld, %lld, %lld, %lld, %lld), }",
                 (long long)in.shape[0], (long long)in.shape[1], (long long)in.shape[2], (long long)in.shape[3],
                 (long long)in.shape[4]);
        write_npy_raw(tmp_npy, dict, d, (size_t)in.numel * sizeof(double));
        free(d);
        EXPECT_EXIT(0, "run '%s' --input '%s' --output '%s' --pad-end", g_model, tmp_npy, out_npy);
        TU_CHECK(npy_diff(out_npy, g_expected) < 1e-4, "run on float64 input differs from demo_expected.npy");

        /* (B, C, T, H, W) -> frames (T, B, C, H, W) */
        const int64_t B = in.shape[0], Cc = in.shape[1], T = in.shape[2], S = in.shape[3] * in.shape[4];
        float *fr = malloc((size_t)in.numel * sizeof(float));
        if (!fr) return 99;
        for (int64_t t = 0; t < T; t++)
            for (int64_t r = 0; r < B * Cc; r++) memcpy(fr + (t * B * Cc + r) * S, in.data + (r * T + t) * S, (size_t)S * 4);
        TU_CHECK(tu_write_file(frames, fr, (size_t)in.numel * 4) == 0, "write frames");
        EXPECT_EXIT(0, "run '%s' --batch %lld --input - --output '%s' --pad-end < '%s'", g_model, (long long)B, out_npy, frames);
        TU_CHECK(npy_diff(out_npy, g_expected) < 1e-4, "run --input - (pad-end) differs from demo_expected.npy");
        EXPECT_EXIT(0, "run '%s' --batch %lld --input - --output '%s' < '%s'", g_model, (long long)B, out_npy, frames);
        TU_CHECK(npy_diff(out_npy, g_expected) < 1e-4, "run --input - differs from demo_expected.npy");
        /* raw out: (T_out, B, C', H, W) */
        EXPECT_EXIT(0, "run '%s' --batch %lld --input - --output - < '%s'", g_model, (long long)B, frames);
        size_t nraw = 0;
        char *raw = slurp(g_out, &nraw);
        npy_array ex;
        if (npy_read_f32(g_expected, &ex, err, sizeof err) == 0) {
            TU_CHECK(nraw == (size_t)ex.numel * 4, "raw output has %zu bytes, expected %lld", nraw, (long long)ex.numel * 4);
            if (nraw == (size_t)ex.numel * 4) {
                const int64_t To = ex.shape[2], rows = ex.shape[0] * ex.shape[1], So = ex.numel / (To * rows);
                double dmax = 0;
                for (int64_t t = 0; t < To; t++)
                    for (int64_t r = 0; r < rows; r++)
                        for (int64_t k = 0; k < So; k++) {
                            float v;
                            memcpy(&v, raw + ((t * rows + r) * So + k) * 4, 4);
                            double e = fabs((double)v - ex.data[(r * To + t) * So + k]);
                            if (!(e <= dmax)) dmax = e;
                        }
                TU_CHECK(dmax < 1e-4, "raw output frames differ from demo_expected.npy: %g", dmax);
            }
            npy_free(&ex);
        }
        free(raw);
        /* a partial frame on stdin */
        TU_CHECK(tu_write_file(frames, fr, (size_t)(B * Cc * S) * 4 + 6) == 0, "write frames");
        EXPECT_EXIT(1, "run '%s' --batch %lld --input - --output - < '%s'", g_model, (long long)B, frames);
        expect_in(g_stderr_text, "inside frame", "partial frame");
        free(fr);

        /* a clip with 4 channels: the model takes 3 */
        char dict4[256];
        snprintf(dict4, sizeof dict4, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4, 2, 12, 12), }");
        write_npy_raw(tmp_npy, dict4, in.data, 4 * 2 * 144 * 4);
        EXPECT_EXIT(1, "run '%s' --input '%s' --output '%s'", g_model, tmp_npy, out_npy);
        expect_in(g_stderr_text, "CO_ERR_SHAPE", "wrong channel count");
        npy_free(&in);
    } else {
        TU_CHECK(0, "cannot read %s: %s", g_input, err);
    }

    /* ---- bench, compare, version ---- */
    EXPECT_EXIT(0, "bench '%s' --steps 5 --warmup 1", g_model);
    expect_in(g_stdout_text, "median ms", "bench");
    expect_in(g_stdout_text, "steps/s", "bench");
    EXPECT_EXIT(0, "bench '%s' --steps 3 --warmup 0 --batch 2 --frame-shape 3,8,8", g_model);
    EXPECT_EXIT(0, "compare '%s' '%s'", g_expected, g_expected);
    EXPECT_EXIT(1, "compare '%s' '%s'", g_input, g_expected);
    expect_in(g_stderr_text, "shapes differ", "compare");
    EXPECT_EXIT(0, "version");
    EXPECT_EXIT(0, "help");

    /* ---- usage errors: exit 2 ---- */
    EXPECT_EXIT(2, "%s", "");
    expect_in(g_stderr_text, "usage", "no command");
    EXPECT_EXIT(2, "frobnicate");
    expect_in(g_stderr_text, "unknown command", "unknown command");
    EXPECT_EXIT(2, "info");
    EXPECT_EXIT(2, "info '%s' extra", g_model);
    EXPECT_EXIT(2, "info '%s' --bogus", g_model);
    expect_in(g_stderr_text, "--bogus", "unknown option");
    EXPECT_EXIT(2, "info '%s' --batch 0", g_model);
    EXPECT_EXIT(2, "info '%s' --batch", g_model);
    EXPECT_EXIT(2, "info '%s' --frame-shape 3,x", g_model);
    EXPECT_EXIT(2, "run '%s' --output '%s'", g_model, out_npy);
    expect_in(g_stderr_text, "--input", "run without --input");
    EXPECT_EXIT(2, "run '%s' --input '%s'", g_model, g_input);
    EXPECT_EXIT(2, "run '%s' --input '%s' --output '%s' --pad-end=1", g_model, g_input, out_npy);
    EXPECT_EXIT(2, "bench '%s' --steps 0", g_model);
    EXPECT_EXIT(2, "bench '%s' --pad-end", g_model);

    /* ---- runtime errors: exit 1 with the status name and the library's message ---- */
    EXPECT_EXIT(1, "info /nonexistent/model.safetensors");
    expect_in(g_stderr_text, "CO_ERR_IO", "missing model");
    expect_in(g_stderr_text, "/nonexistent/model.safetensors", "missing model");
    size_t mn = 0;
    char *model_bytes = slurp(g_model, &mn);
    TU_CHECK(mn > 100, "cannot read %s", g_model);
    TU_CHECK(tu_write_file(bad_model, model_bytes, mn / 2) == 0, "write truncated model");
    free(model_bytes);
    EXPECT_EXIT(1, "info '%s'", bad_model);
    expect_in(g_stderr_text, "CO_ERR_FORMAT", "truncated model");
    EXPECT_EXIT(1, "bench '%s'", bad_model);
    EXPECT_EXIT(1, "run '%s' --input '%s' --output '%s'", bad_model, g_input, out_npy);
    expect_in(g_stderr_text, "CO_ERR_FORMAT", "truncated model");

    const float data[24] = {0};
    write_npy_raw(tmp_npy, "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 3, 2, 2, 2), }", data, 96);
    EXPECT_EXIT(1, "run '%s' --input '%s' --output '%s'", g_model, tmp_npy, out_npy);
    expect_in(g_stderr_text, "Fortran", "fortran-order input");
    write_npy_raw(tmp_npy, "{'descr': '<i8', 'fortran_order': False, 'shape': (1, 3, 2, 2), }", data, 96);
    EXPECT_EXIT(1, "run '%s' --input '%s' --output '%s'", g_model, tmp_npy, out_npy);
    expect_in(g_stderr_text, "<i8", "int64 input");
    write_npy_raw(tmp_npy, "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 6), }", data, 96);
    EXPECT_EXIT(1, "run '%s' --input '%s' --output '%s'", g_model, tmp_npy, out_npy);
    expect_in(g_stderr_text, "(B, C, T", "2-d input");
    write_npy_raw(tmp_npy, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 2, 2, 2), }", data, 90);
    EXPECT_EXIT(1, "run '%s' --input '%s' --output '%s'", g_model, tmp_npy, out_npy);
    expect_in(g_stderr_text, "data bytes", "truncated input");
    EXPECT_EXIT(1, "run '%s' --input '%s' --output '%s'", g_model, g_model, out_npy);
    EXPECT_EXIT(1, "run '%s' --input /nonexistent/in.npy --output '%s'", g_model, out_npy);
    EXPECT_EXIT(1, "run '%s' --input '%s' --output /nonexistent/dir/out.npy", g_model, g_input);
    expect_in(g_stderr_text, "/nonexistent/dir/out.npy", "unwritable output");
    EXPECT_EXIT(1, "run '%s' --batch 3 --input '%s' --output '%s'", g_model, g_input, out_npy);
    expect_in(g_stderr_text, "--batch", "batch mismatch");
    EXPECT_EXIT(1, "info '%s' --frame-shape 5,12,12", g_model);
    expect_in(g_stderr_text, "CO_ERR_SHAPE", "frame shape with 5 channels");

    remove(g_out);
    remove(g_err);
    remove(out_npy);
    remove(frames);
    remove(tmp_npy);
    remove(bad_model);
    free(g_stdout_text);
    free(g_stderr_text);
    return tu_finish("test_cli");
}
