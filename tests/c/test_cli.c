/*
 * test_cli.c — runs the built `continual` tool on the bundled demo model: info, run (.npy in
 * and out, float64 input, --pad-end, raw frames through stdin/stdout), bench, compare, and the
 * error cases (each must exit non-zero — 2 for bad usage — with a message on stderr); info --ops and
 * profile list every op of the plan; run --input - on a pipe emits each output before the input
 * ends and the end padding's frames once it ends (tests/fuzz/tiny.safetensors has end padding).
 *
 * usage: test_cli PATH/TO/continual PATH/TO/examples
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* ---- info --ops, profile: one line per op of the plan ---- */

/* The integer after `key` in `text` (-1 if absent). */
static long long value_after(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    return p ? strtoll(p + strlen(key), NULL, 10) : -1;
}

/* Splits `line` (modified) into at most `max` space-separated tokens. */
static int tokens(char *line, char **tok, int max)
{
    int n = 0;
    for (char *t = strtok(line, " "); t && n < max; t = strtok(NULL, " ")) tok[n++] = t;
    return n;
}

/* info --ops on `model`: one row per op (indices 0..ops-1 in order), the MACs of the rows sum to
 * MACs/step, their state bytes to at most the plan's state bytes, output frames have the batch. */
static void check_info_ops(const char *model, int batch)
{
    EXPECT_EXIT(0, "info '%s' --ops --batch %d", model, batch);
    const long long n_ops = value_after(g_stdout_text, "\n  ops           ");
    const long long macs = value_after(g_stdout_text, "MACs/step     ");
    const long long state = value_after(g_stdout_text, "state bytes   ");
    TU_CHECK(n_ops > 0 && macs > 0 && state >= 0, "info --ops: no plan totals:\n%s", g_stdout_text);
    const char *table = strstr(g_stdout_text, "ops (in step order)\n");
    TU_CHECK(table != NULL, "info --ops prints no op table:\n%s", g_stdout_text);
    if (!table) return;
    char *copy = strdup(strchr(table, '\n') + 1);
    if (!copy) exit(99);
    long long rows = 0, mac_sum = 0, state_sum = 0;
    char *save = NULL;
    int header = 1;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (header) { /* column names */
            expect_in(line, "MACs/step", "info --ops header");
            header = 0;
            continue;
        }
        char *tok[32];
        const int nt = tokens(line, tok, 32);
        TU_CHECK(nt >= 8, "info --ops row '%s' has %d fields", line, nt);
        if (nt < 8) break;
        TU_CHECK(strtoll(tok[0], NULL, 10) == rows, "info --ops row %lld has index %s", rows, tok[0]);
        char want[32];
        snprintf(want, sizeof want, "(%d,", batch);
        TU_CHECK(strcmp(tok[4], want) == 0, "info --ops row %lld: output frame starts '%s', not with the batch", rows, tok[4]);
        const long long m = strtoll(tok[nt - 3], NULL, 10), sb = strtoll(tok[nt - 2], NULL, 10),
                        sf = strtoll(tok[nt - 1], NULL, 10);
        TU_CHECK(m >= 0 && sb >= 0 && sf >= 0, "info --ops row %lld: negative sizes", rows);
        mac_sum += m;
        state_sum += sb;
        rows++;
    }
    free(copy);
    TU_CHECK(rows == n_ops, "info --ops lists %lld ops, the plan has %lld", rows, n_ops);
    TU_CHECK(mac_sum == macs, "info --ops: the ops' MACs sum to %lld, MACs/step is %lld", mac_sum, macs);
    TU_CHECK(state_sum > 0 && state_sum <= state, "info --ops: the ops' state bytes sum to %lld, the plan's state is %lld",
             state_sum, state);

    /* profile: the same ops, each once, sorted by time */
    EXPECT_EXIT(0, "profile '%s' --batch %d --steps 40 --warmup 2", model, batch);
    const char *ptable = strstr(g_stdout_text, "cum %");
    TU_CHECK(ptable != NULL, "profile prints no table:\n%s", g_stdout_text);
    if (!ptable) return;
    copy = strdup(strchr(ptable, '\n') + 1);
    if (!copy) exit(99);
    char *seen = calloc((size_t)n_ops, 1);
    if (!seen) exit(99);
    long long prows = 0;
    double last_ms = INFINITY, cum = 0;
    for (char *line = strtok_r(copy, "\n", &save); line && line[0]; line = strtok_r(NULL, "\n", &save)) {
        char *tok[32];
        const int nt = tokens(line, tok, 32);
        if (nt >= 1 && strcmp(tok[0], "ops") == 0) break; /* the footer */
        TU_CHECK(nt >= 9, "profile row '%s' has %d fields", line, nt);
        if (nt < 9) break;
        const long long i = strtoll(tok[0], NULL, 10);
        const double ms = strtod(tok[1], NULL);
        cum = strtod(tok[4], NULL);
        TU_CHECK(i >= 0 && i < n_ops && !seen[i], "profile row %lld names op %lld twice or out of range", prows, i);
        if (i >= 0 && i < n_ops) seen[i] = 1;
        TU_CHECK(ms >= 0 && ms <= last_ms, "profile rows are not sorted by time (%g after %g ms)", ms, last_ms);
        last_ms = ms;
        prows++;
    }
    free(copy);
    free(seen);
    TU_CHECK(prows == n_ops, "profile lists %lld ops, the plan has %lld", prows, n_ops);
    TU_CHECK(fabs(cum - 100.0) < 0.5, "profile: the shares add up to %g %%", cum);
    TU_CHECK(value_after(g_stdout_text, "\n  ops ") == n_ops, "profile footer names another op count:\n%s", g_stdout_text);
}

/* ---- run --input -: outputs as soon as they exist, the tail at the end of the input ---- */

/* Writes the first k frames of `fr` (k frames of n_in floats each) as a clip (1, C, k, S) .npy. */
static void write_prefix_clip(const char *path, const float *fr, int64_t k, int64_t C, int64_t S)
{
    float *clip = malloc((size_t)(k * C * S + 1) * sizeof(float));
    if (!clip) exit(99);
    for (int64_t t = 0; t < k; t++)
        for (int64_t c = 0; c < C; c++) memcpy(clip + (c * k + t) * S, fr + (t * C + c) * S, (size_t)S * sizeof(float));
    char dict[256];
    snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, %lld, %lld, %lld), }", (long long)C,
             (long long)k, (long long)S);
    write_npy_raw(path, dict, clip, (size_t)(k * C * S) * sizeof(float));
    free(clip);
}

/* `continual run --input FILE` on the first k frames: its output clip (B=1, C', n, S'). */
static int run_prefix(const char *model, const float *fr, int64_t k, int64_t C, int64_t S, int pad_end, const char *clip_path,
                      const char *out_path, npy_array *out)
{
    write_prefix_clip(clip_path, fr, k, C, S);
    EXPECT_EXIT(0, "run '%s' --input '%s' --output '%s'%s", model, clip_path, out_path, pad_end ? " --pad-end" : "");
    char err[512];
    if (npy_read_f32(out_path, out, err, sizeof err)) {
        TU_CHECK(0, "cannot read %s: %s", out_path, err);
        return -1;
    }
    return 0;
}

/* Reads exactly n bytes from fd, waiting at most timeout_ms for each chunk; -1 on EOF or timeout. */
static int read_within(int fd, void *buf, size_t n, int timeout_ms)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, timeout_ms) <= 0) return -1;
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

/* Output frame t of a clip (1, C', n, S') against raw frame `raw` (C' * S' floats). */
static double frame_diff(const npy_array *clip, int64_t t, const float *raw)
{
    const int64_t Co = clip->shape[1], n = clip->shape[2], So = clip->numel / (Co * n);
    double d = 0;
    for (int64_t c = 0; c < Co; c++)
        for (int64_t k = 0; k < So; k++) {
            double e = fabs((double)raw[c * So + k] - clip->data[(c * n + t) * So + k]);
            if (!(e <= d)) d = e;
        }
    return d;
}

/* The live frames raw (n frames of n_out floats) against co_forward_steps with CO_PAD_END over the
 * same LIVE_FRAMES input frames, called here through the library (not through the tool). */
static void check_against_library(const char *model, const float *fr, int64_t C, int64_t S, const float *raw, int64_t n,
                                  int64_t n_out);

#define LIVE_TIMEOUT_MS 60000 /* a loaded machine; a held-back frame never arrives at all */
#define LIVE_MAX_FIRST 64

#define LIVE_FRAMES 24
#define LIVE_ATOL 1e-6 /* the same products in the same order: equal up to float rounding at most */
static void check_against_library(const char *model, const float *fr, int64_t C, int64_t S, const float *raw, int64_t n,
                                  int64_t n_out)
{
    co_model *m = NULL;
    co_stream *s = NULL;
    TU_STATUS(co_model_load(model, &m), CO_OK, model);
    if (m) TU_STATUS(co_stream_create(m, 1, &s), CO_OK, "stream of batch 1");
    const int64_t cap = s ? co_steps_max_output(s, LIVE_FRAMES, CO_PAD_END) : 0;
    float *clip = malloc((size_t)(LIVE_FRAMES * C * S) * sizeof(float)), *y = malloc((size_t)((cap + 1) * n_out) * sizeof(float));
    if (!clip || !y) exit(99);
    for (int64_t t = 0; t < LIVE_FRAMES; t++) /* frames (T, C, S) -> clip (1, C, T, S) */
        for (int64_t c = 0; c < C; c++) memcpy(clip + (c * LIVE_FRAMES + t) * S, fr + (t * C + c) * S, (size_t)S * sizeof(float));
    int64_t t_out = -1;
    if (s) TU_STATUS(co_forward_steps(s, clip, LIVE_FRAMES, y, cap, &t_out, CO_PAD_END, CO_UPDATE_STATE), CO_OK, "forward_steps");
    TU_CHECK(t_out == n, "the tool gave %lld frames live, co_forward_steps with CO_PAD_END %lld", (long long)n, (long long)t_out);
    if (s && t_out == n) {
        co_shape out;
        co_stream_output_shape(s, &out);
        const int64_t Co = out.dims[1], So = n_out / Co;
        double d = 0;
        for (int64_t t = 0; t < n; t++) /* y is (1, C', n, S'), raw frame t is (1, C', S') */
            for (int64_t c = 0; c < Co; c++)
                for (int64_t k = 0; k < So; k++) {
                    const double e = fabs((double)y[(c * n + t) * So + k] - raw[t * n_out + c * So + k]);
                    if (!(e <= d)) d = e;
                }
        TU_CHECK(d <= LIVE_ATOL, "live frames differ from co_forward_steps with CO_PAD_END by %g", d);
    }
    free(clip);
    free(y);
    co_stream_free(s);
    co_model_free(m);
}

static void check_live_stream(const char *model)
{
    char clip_path[256], out_path[256];
    tu_temp_path("cli_live_in", "npy", clip_path, sizeof clip_path);
    tu_temp_path("cli_live_out", "npy", out_path, sizeof out_path);
    EXPECT_EXIT(0, "info '%s'", model);
    /* the model's frame (C, S) from info: "frame shape   (C, S)" */
    long long C = 0, S = 0;
    const char *fs = strstr(g_stdout_text, "frame shape   (");
    TU_CHECK(fs && sscanf(fs, "frame shape   (%lld, %lld)", &C, &S) == 2, "no 2-d frame shape in info of %s", model);
    if (C < 1 || S < 1) return;
    const int64_t n_in = C * S;
    float *fr = malloc((size_t)(LIVE_MAX_FIRST * n_in) * sizeof(float));
    if (!fr) exit(99);
    for (int64_t i = 0; i < LIVE_MAX_FIRST * n_in; i++) fr[i] = (float)sin(0.37 * (double)i) + 0.25f * (float)(i % 7);

    /* the first frame k after which an output exists, from runs on files */
    int64_t first = 0;
    npy_array ref;
    for (int64_t k = 1; k <= LIVE_MAX_FIRST && !first; k++) {
        if (run_prefix(model, fr, k, C, S, 0, clip_path, out_path, &ref)) break;
        if (ref.shape[2] > 0) first = k;
        npy_free(&ref);
    }
    TU_CHECK(first > 0 && first < LIVE_FRAMES, "no output within %d frames of %s", LIVE_MAX_FIRST, model);
    npy_array plain, padded;
    if (first == 0 || first >= LIVE_FRAMES || run_prefix(model, fr, LIVE_FRAMES, C, S, 0, clip_path, out_path, &plain)) goto out;
    if (run_prefix(model, fr, LIVE_FRAMES, C, S, 1, clip_path, out_path, &padded)) {
        npy_free(&plain);
        goto out;
    }
    const int64_t n_plain = plain.shape[2], n_padded = padded.shape[2];
    TU_CHECK(n_padded > n_plain, "%s has no end padding to flush (%lld vs %lld frames)", model, (long long)n_padded,
             (long long)n_plain);
    const int64_t n_out = plain.numel / (n_plain ? n_plain : 1);
    float *raw = malloc((size_t)(n_padded * n_out + 1) * sizeof(float));
    if (!raw) exit(99);

    /* the tool on a pipe: stdin stays open while we read what must already be out */
    int to_child[2], from_child[2];
    TU_CHECK(pipe(to_child) == 0 && pipe(from_child) == 0, "pipe: %s", strerror(errno));
    signal(SIGPIPE, SIG_IGN);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(to_child[0], 0);
        dup2(from_child[1], 1);
        close(to_child[0]);
        close(to_child[1]);
        close(from_child[0]);
        close(from_child[1]);
        execl(g_cli, g_cli, "run", model, "--input", "-", "--output", "-", "--pad-end", (char *)NULL);
        _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    const size_t in_bytes = (size_t)n_in * sizeof(float), out_bytes = (size_t)n_out * sizeof(float);
    /* frames up to the first output: that output must come while stdin is still open */
    TU_CHECK(write(to_child[1], fr, (size_t)first * in_bytes) == (ssize_t)((size_t)first * in_bytes), "write to the tool");
    TU_CHECK(read_within(from_child[0], raw, out_bytes, LIVE_TIMEOUT_MS) == 0,
             "run --input - --pad-end: no output within %d ms after %lld frames (held back?)", LIVE_TIMEOUT_MS, (long long)first);
    /* the rest: every output of the plain run must be out before the end of the input */
    const size_t rest = (size_t)(LIVE_FRAMES - first) * in_bytes;
    TU_CHECK(write(to_child[1], fr + first * n_in, rest) == (ssize_t)rest, "write to the tool");
    TU_CHECK(n_plain < 2 || read_within(from_child[0], raw + n_out, (size_t)(n_plain - 1) * out_bytes, LIVE_TIMEOUT_MS) == 0,
             "run --input - --pad-end: fewer than %lld outputs before the end of the input", (long long)n_plain);
    close(to_child[1]); /* end of input: the tail follows */
    TU_CHECK(read_within(from_child[0], raw + n_plain * n_out, (size_t)(n_padded - n_plain) * out_bytes, LIVE_TIMEOUT_MS) == 0,
             "run --input - --pad-end: the %lld tail frames did not come", (long long)(n_padded - n_plain));
    char extra;
    TU_CHECK(read_within(from_child[0], &extra, 1, LIVE_TIMEOUT_MS) != 0, "run --input - wrote more than %lld frames",
             (long long)n_padded);
    close(from_child[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    TU_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "run --input - --pad-end exited with status %d", status);
    check_against_library(model, fr, C, S, raw, n_padded, n_out);
    for (int64_t t = 0; t < n_padded; t++) {
        TU_CHECK(frame_diff(&padded, t, raw + t * n_out) == 0, "live frame %lld differs from run on a file --pad-end",
                 (long long)t);
        if (t < n_plain)
            TU_CHECK(frame_diff(&plain, t, raw + t * n_out) == 0, "live frame %lld differs from run on a file", (long long)t);
    }
    free(raw);
    npy_free(&plain);
    npy_free(&padded);
out:
    free(fr);
    remove(clip_path);
    remove(out_path);
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

    /* ---- info --ops, profile, live streams ---- */
    char tiny[1024];
    snprintf(tiny, sizeof tiny, "%s/../tests/fuzz/tiny.safetensors", g_dir);
    check_info_ops(g_model, 1);
    check_info_ops(g_model, 2);
    check_info_ops(tiny, 1);
    check_live_stream(tiny);
    EXPECT_EXIT(2, "profile '%s' --ops", g_model);
    EXPECT_EXIT(2, "profile '%s' --steps 0", g_model);
    EXPECT_EXIT(2, "info '%s' --ops=1", g_model);

    /* ---- bench, compare, version ---- */
    EXPECT_EXIT(0, "bench '%s' --steps 5 --warmup 1", g_model);
    expect_in(g_stdout_text, "median ms", "bench");
    expect_in(g_stdout_text, "steps/s", "bench");
    expect_in(g_stdout_text, "first step ms", "bench");
    expect_in(g_stdout_text, "p99 ms", "bench");
    expect_in(g_stdout_text, "max ms", "bench");
    expect_in(g_stdout_text, "threads", "bench");
    expect_in(g_stdout_text, "kernels", "bench");
    expect_in(g_stdout_text, "peak RSS bytes", "bench");
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
