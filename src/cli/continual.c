/*
 * continual.c — the `continual` command-line tool, written against include/continual.h only.
 *
 *   continual info    MODEL [--batch N] [--frame-shape C,...]
 *   continual run     MODEL --input CLIP.npy|- --output OUT.npy|- [--pad-end] [--batch N] [--frame-shape C,...]
 *   continual bench   MODEL [--batch N] [--frame-shape C,...] [--steps N] [--warmup N]
 *   continual compare A.npy B.npy [--atol X] [--rtol X]
 *
 * Exit status: 0 success, 1 failure (message on stderr), 2 bad usage.
 */
#define _POSIX_C_SOURCE 200809L
#include <continual.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/npy.h"
#ifdef CO_HAVE_NATS
#include "cli/serve.h"
#endif

#define EXIT_USAGE 2

static const char k_usage[] =
    "usage: continual <command> [options]\n"
    "\n"
    "commands:\n"
    "  info MODEL [--batch N] [--frame-shape C,...]\n"
    "      the module tree (params, receptive field, delay, stride, padding per node), the totals,\n"
    "      and the step plan for the frame shape (output frame, MACs/step, state and arena bytes)\n"
    "  run MODEL --input CLIP --output OUT [--pad-end] [--batch N] [--frame-shape C,...]\n"
    "      streams a clip (B, C, T, *S) frame by frame through the network and writes the outputs\n"
    "      that appear as (B, C', T_out, *S'). CLIP/OUT are float32/float64 .npy files, or '-':\n"
    "      raw float32 frames (B, C, *S) on stdin / output frames on stdout (shape from\n"
    "      --frame-shape or the model file, --batch, default 1). --pad-end flushes the end padding.\n"
    "  bench MODEL [--batch N] [--frame-shape C,...] [--steps N] [--warmup N]\n"
    "      times co_forward_step: median / p10 / p90 ms per step and steps/s\n"
    "  compare A.npy B.npy [--atol X] [--rtol X]\n"
    "      exit 0 if the arrays have one shape and |a - b| <= atol + rtol * |b| everywhere\n"
    "  serve MODEL [--nats URL[,URL...]] [--prefix P] [--max-streams N] [--checkpoint-every K] [--lease-ms L]\n"
    "        [--replicas R] [--name W] [--stats-ms M] [--dup-window-s S] [--checkpoint-history H] [--batch B] [--setup]\n"
    "      a worker of a pool serving live streams over NATS JetStream (docs/serve.md)\n"
    "  version\n";

/* ---- errors ---- */
static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("continual: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

/* A failed library call: what we tried, the status name and the library's message. */
static int fail_co(co_status st, const char *fmt, ...)
{
    const char *msg = co_last_error();
    va_list ap;
    va_start(ap, fmt);
    fputs("continual: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, ": %s: %s\n", co_status_name(st), msg && msg[0] ? msg : "(no message)");
    return 1;
}

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("continual: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (see 'continual help')\n", stderr);
    va_end(ap);
    return EXIT_USAGE;
}

/* ---- options ---- */
enum {
    OPT_BATCH = 1 << 0,
    OPT_FRAME = 1 << 1,
    OPT_INPUT = 1 << 2,
    OPT_OUTPUT = 1 << 3,
    OPT_PAD_END = 1 << 4,
    OPT_STEPS = 1 << 5,
    OPT_WARMUP = 1 << 6,
    OPT_ATOL = 1 << 7,
    OPT_RTOL = 1 << 8,
};

typedef struct options {
    unsigned given;
    const char *pos[3];
    int n_pos;
    int batch;
    co_shape frame;
    const char *input, *output;
    int pad_end;
    long steps, warmup;
    double atol, rtol;
} options;

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *s, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0) || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

/* "3,16,16" (brackets, parentheses and spaces are tolerated) */
static int parse_shape(const char *s, co_shape *out)
{
    out->ndim = 0;
    const char *p = s;
    while (*p) {
        if (*p == ',' || *p == ' ' || *p == '(' || *p == ')' || *p == '[' || *p == ']') {
            p++;
            continue;
        }
        if (*p < '0' || *p > '9') return -1;
        char *end = NULL;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (errno || v < 1 || v > (1LL << 24) || out->ndim >= CO_MAX_DIMS - 2) return -1;
        out->dims[out->ndim++] = v;
        p = end;
    }
    return out->ndim > 0 ? 0 : -1;
}

static const char *opt_name(unsigned bit)
{
    switch (bit) {
    case OPT_BATCH: return "--batch";
    case OPT_FRAME: return "--frame-shape";
    case OPT_INPUT: return "--input";
    case OPT_OUTPUT: return "--output";
    case OPT_PAD_END: return "--pad-end";
    case OPT_STEPS: return "--steps";
    case OPT_WARMUP: return "--warmup";
    case OPT_ATOL: return "--atol";
    case OPT_RTOL: return "--rtol";
    default: return "?";
    }
}

/* Parses argv[first..argc) for `cmd`; `allowed` is a mask of OPT_*, `npos` the positionals needed.
 * Returns 0, or EXIT_USAGE after printing why. */
static int parse_options(const char *cmd, int argc, char **argv, int first, unsigned allowed, int npos, options *o)
{
    memset(o, 0, sizeof *o);
    o->batch = 1;
    o->steps = 200;
    o->warmup = 20;
    o->atol = 1e-4;
    o->rtol = 1e-4;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] == 0) { /* positional ('-' alone too) */
            if (o->n_pos >= npos) return usage_error("%s: unexpected argument '%s'", cmd, a);
            o->pos[o->n_pos++] = a;
            continue;
        }
        /* --name=value or --name value */
        char name[32];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        if (nlen >= sizeof name) return usage_error("%s: unknown option '%s'", cmd, a);
        memcpy(name, a, nlen);
        name[nlen] = 0;
        unsigned bit = 0;
        static const unsigned all[] = {OPT_BATCH, OPT_FRAME, OPT_INPUT, OPT_OUTPUT, OPT_PAD_END,
                                       OPT_STEPS, OPT_WARMUP, OPT_ATOL, OPT_RTOL};
        for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
            if (strcmp(name, opt_name(all[k])) == 0) bit = all[k];
        if (!bit || !(allowed & bit)) return usage_error("%s: unknown option '%s'", cmd, name);
        if (o->given & bit) return usage_error("%s: option %s given twice", cmd, name);
        o->given |= bit;
        if (bit == OPT_PAD_END) {
            if (eq) return usage_error("%s: %s takes no value", cmd, name);
            o->pad_end = 1;
            continue;
        }
        if (eq) val = eq + 1;
        else if (i + 1 < argc) val = argv[++i];
        else return usage_error("%s: option %s needs a value", cmd, name);
        long v = 0;
        switch (bit) {
        case OPT_BATCH:
            if (parse_long(val, 1, 1L << 20, &v)) return usage_error("%s: --batch '%s' is not an integer in [1, 2^20]", cmd, val);
            o->batch = (int)v;
            break;
        case OPT_FRAME:
            if (parse_shape(val, &o->frame))
                return usage_error("%s: --frame-shape '%s' is not a list of 1 to %d positive sizes like 3,16,16", cmd, val,
                                   CO_MAX_DIMS - 2);
            break;
        case OPT_INPUT: o->input = val; break;
        case OPT_OUTPUT: o->output = val; break;
        case OPT_STEPS:
            if (parse_long(val, 1, 100000000L, &v)) return usage_error("%s: --steps '%s' is not an integer >= 1", cmd, val);
            o->steps = v;
            break;
        case OPT_WARMUP:
            if (parse_long(val, 0, 100000000L, &v)) return usage_error("%s: --warmup '%s' is not an integer >= 0", cmd, val);
            o->warmup = v;
            break;
        case OPT_ATOL:
            if (parse_double(val, &o->atol)) return usage_error("%s: --atol '%s' is not a number >= 0", cmd, val);
            break;
        case OPT_RTOL:
            if (parse_double(val, &o->rtol)) return usage_error("%s: --rtol '%s' is not a number >= 0", cmd, val);
            break;
        default: break;
        }
    }
    if (o->n_pos < npos) return usage_error("%s: missing %s", cmd, npos - o->n_pos > 1 ? "arguments" : npos == 1 ? "MODEL" : "an argument");
    return 0;
}

/* ---- small helpers ---- */
static char *fmt_dims(const int64_t *d, int n, char *buf, size_t size)
{
    size_t at = 0;
    at += (size_t)snprintf(buf + at, size - at, "(");
    for (int i = 0; i < n && at < size; i++)
        at += (size_t)snprintf(buf + at, size - at, "%s%lld", i ? ", " : "", (long long)d[i]);
    if (at < size) snprintf(buf + at, size - at, ")");
    return buf;
}

static char *fmt_shape(const co_shape *s, char *buf, size_t size) { return fmt_dims(s->dims, s->ndim, buf, size); }

static int64_t numel_of(const co_shape *s)
{
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++) n *= s->dims[i];
    return n;
}

static char *fmt_bytes(size_t n, char *buf, size_t size)
{
    if (n >= (size_t)1 << 20) snprintf(buf, size, "%zu (%.2f MiB)", n, (double)n / (1 << 20));
    else if (n >= 1024) snprintf(buf, size, "%zu (%.1f KiB)", n, (double)n / 1024);
    else snprintf(buf, size, "%zu", n);
    return buf;
}

static int load_model(const char *path, co_model **m)
{
    co_status st = co_model_load(path, m);
    if (st) return fail_co(st, "cannot load model '%s'", path);
    return 0;
}

/* The frame shape to use: --frame-shape, else the file's. */
static int pick_frame(const co_model *m, const options *o, co_shape *frame, const char *model_path)
{
    if (o->given & OPT_FRAME) {
        *frame = o->frame;
        return 0;
    }
    co_status st = co_model_frame_shape(m, frame);
    if (st) return fail("'%s' records no frame shape: pass --frame-shape C,... (%s)", model_path, co_status_name(st));
    return 0;
}

/* ---- info ---- */
static int cmd_info(int argc, char **argv)
{
    options o;
    int rc = parse_options("info", argc, argv, 2, OPT_BATCH | OPT_FRAME, 1, &o);
    if (rc) return rc;
    co_model *m = NULL;
    if (load_model(o.pos[0], &m)) return 1;
    const int n = co_model_node_count(m);
    char buf[256], buf2[256];
    printf("model         %s\n", o.pos[0]);
    printf("nodes         %d\n\n", n);
    int width = 6;
    for (int i = 0; i < n; i++) {
        co_node_info ni;
        co_status st = co_model_node(m, i, &ni);
        if (st) {
            co_model_free(m);
            return fail_co(st, "co_model_node(%d)", i);
        }
        int w = 2 * ni.depth + (int)strlen(ni.path[0] ? ni.path : "(root)");
        if (w > width) width = w;
    }
    if (width > 60) width = 60;
    printf("  %-*s  %-20s %12s %6s %6s %6s %8s\n", width, "path", "type", "params", "rf", "delay", "stride", "padding");
    for (int i = 0; i < n; i++) {
        co_node_info ni;
        co_model_node(m, i, &ni);
        int indent = 2 * ni.depth;
        printf("  %*s%-*s  %-20s %12lld %6lld %6lld %6lld %8lld\n", indent, "", width - indent,
               ni.path[0] ? ni.path : "(root)", ni.type, (long long)ni.params, (long long)ni.temporal.receptive_field,
               (long long)ni.temporal.delay, (long long)ni.temporal.stride, (long long)ni.temporal.padding);
    }
    co_temporal t;
    co_status st = co_model_temporal(m, &t);
    if (st) {
        co_model_free(m);
        return fail_co(st, "co_model_temporal");
    }
    if (co_model_description(m)[0]) printf("\ndescription   %s\n", co_model_description(m));
    printf("\ntotals        params %lld, receptive field %lld, delay %lld, stride %lld, padding %lld\n",
           (long long)co_model_param_count(m), (long long)t.receptive_field, (long long)t.delay, (long long)t.stride,
           (long long)t.padding);
    co_shape frame;
    const char *from = "from --frame-shape";
    if (o.given & OPT_FRAME) frame = o.frame;
    else if (co_model_frame_shape(m, &frame) == CO_OK) from = "recorded in the file";
    else {
        printf("frame shape   none recorded in the file; pass --frame-shape C,... to see the step plan\n");
        co_model_free(m);
        return 0;
    }
    printf("frame shape   %s (%s)\n", fmt_shape(&frame, buf, sizeof buf), from);
    co_plan_info pi;
    st = co_model_plan_info(m, o.batch, &frame, &pi);
    if (st) {
        co_model_free(m);
        return fail_co(st, "no step plan for batch %d and frame shape %s", o.batch, fmt_shape(&frame, buf, sizeof buf));
    }
    co_shape in = {frame.ndim + 1, {0}};
    in.dims[0] = o.batch;
    for (int i = 0; i < frame.ndim; i++) in.dims[1 + i] = frame.dims[i];
    printf("\nplan          batch %d\n", o.batch);
    printf("  input frame   %s\n", fmt_shape(&in, buf, sizeof buf));
    printf("  output frame  %s\n", fmt_shape(&pi.output_frame, buf, sizeof buf));
    printf("  MACs/step     %lld (%.2f M)\n", (long long)pi.macs_per_step, (double)pi.macs_per_step / 1e6);
    printf("                multiply-accumulates of one step once every op runs (steady state, after\n"
           "                the first output), as continual-c computes it: weight products, attention\n"
           "                updates and reductions; element-wise work counts one per element\n");
    printf("  state bytes   %s\n", fmt_bytes(pi.state_bytes, buf2, sizeof buf2));
    printf("  arena bytes   %s\n", fmt_bytes(pi.arena_bytes, buf2, sizeof buf2));
    printf("  ops           %d\n", pi.num_ops);
    co_model_free(m);
    return 0;
}

/* ---- run ---- */

/* A growing list of output frames, each `frame_n` floats. */
typedef struct frames {
    float *data;
    int64_t n, cap, frame_n;
} frames;

static int frames_push(frames *f, const float *x)
{
    if (f->n == f->cap) {
        int64_t cap = f->cap ? 2 * f->cap : 16;
        if ((uint64_t)cap * (uint64_t)f->frame_n > SIZE_MAX / sizeof(float)) return -1;
        float *d = realloc(f->data, (size_t)(cap * f->frame_n) * sizeof(float));
        if (!d) return -1;
        f->data = d;
        f->cap = cap;
    }
    memcpy(f->data + f->n * f->frame_n, x, (size_t)f->frame_n * sizeof(float));
    f->n++;
    return 0;
}

/* frames (T, B*C', S') -> clip (B*C', T, S') and writes it as (B, C', T, *S'). */
static int write_clip_npy(const char *path, const frames *f, const co_shape *out_frame)
{
    const int64_t rows = out_frame->dims[0] * out_frame->dims[1];
    const int64_t S = rows ? f->frame_n / rows : 0;
    float *clip = NULL;
    if (f->n * f->frame_n > 0) {
        clip = malloc((size_t)(f->n * f->frame_n) * sizeof(float));
        if (!clip) return fail("out of memory writing '%s'", path);
        for (int64_t t = 0; t < f->n; t++)
            for (int64_t r = 0; r < rows; r++)
                memcpy(clip + (r * f->n + t) * S, f->data + t * f->frame_n + r * S, (size_t)S * sizeof(float));
    }
    int64_t shape[CO_MAX_DIMS + 1];
    int nd = 0;
    shape[nd++] = out_frame->dims[0];
    shape[nd++] = out_frame->dims[1];
    shape[nd++] = f->n;
    for (int i = 2; i < out_frame->ndim; i++) shape[nd++] = out_frame->dims[i];
    char err[512];
    int rc = npy_write_f32(path, nd, shape, clip, err, sizeof err);
    free(clip);
    if (rc) return fail("%s", err);
    return 0;
}

static int emit_frame(const options *o, frames *acc, const float *y)
{
    if (strcmp(o->output, "-") == 0) {
        if (fwrite(y, sizeof(float), (size_t)acc->frame_n, stdout) != (size_t)acc->frame_n || fflush(stdout) != 0)
            return fail("error writing an output frame to stdout: %s", strerror(errno));
        acc->n++;
        return 0;
    }
    if (frames_push(acc, y)) return fail("out of memory collecting output frames");
    return 0;
}

/* clip (rows, T, S) of `t` frames -> emit frame by frame */
static int emit_clip(const options *o, frames *acc, const float *clip, int64_t t, int64_t rows, float *tmp)
{
    const int64_t S = acc->frame_n / rows;
    for (int64_t k = 0; k < t; k++) {
        for (int64_t r = 0; r < rows; r++) memcpy(tmp + r * S, clip + (r * t + k) * S, (size_t)S * sizeof(float));
        if (emit_frame(o, acc, tmp)) return 1;
    }
    return 0;
}

typedef struct run_ctx {
    co_model *m;
    co_stream *s;
    npy_array in;
    float *x, *y, *ybuf, *prev;
    frames acc;
} run_ctx;

static void run_free(run_ctx *c)
{
    co_stream_free(c->s);
    co_model_free(c->m);
    npy_free(&c->in);
    free(c->x);
    free(c->y);
    free(c->ybuf);
    free(c->prev);
    free(c->acc.data);
}

/* Streams stdin (raw float32 frames) through the stream. */
static int run_stdin(const options *o, run_ctx *c, int64_t in_n, int64_t rows_out)
{
    int64_t t_in = 0, t_out_max = 1 + co_steps_max_output(c->s, 1, 1);
    c->x = malloc((size_t)in_n * sizeof(float));
    c->prev = malloc((size_t)in_n * sizeof(float));
    c->ybuf = malloc((size_t)(t_out_max * c->acc.frame_n) * sizeof(float));
    if (!c->x || !c->prev || !c->ybuf) return fail("out of memory for frames of %lld floats", (long long)in_n);
    int have_prev = 0;
    co_status st;
    for (;;) {
        const size_t want = (size_t)in_n * sizeof(float);
        size_t got = fread(c->x, 1, want, stdin);
        if (got == 0 && feof(stdin)) break;
        if (got != want) {
            if (ferror(stdin)) return fail("error reading stdin: %s", strerror(errno));
            return fail("stdin ended inside frame %lld: got %zu of %zu bytes (frame shape and --batch must match the data)",
                        (long long)t_in, got, want);
        }
        t_in++;
        const float *step_in = c->x;
        if (o->pad_end) { /* hold one frame back: the last one is stepped with the end padding */
            if (!have_prev) {
                float *tmp = c->prev; c->prev = c->x; c->x = tmp;
                have_prev = 1;
                continue;
            }
            float *tmp = c->prev; c->prev = c->x; c->x = tmp; /* x: the held frame, prev: the new one */
            step_in = c->x;
        }
        int has = 0;
        if ((st = co_forward_step(c->s, step_in, c->y, &has, 1))) return fail_co(st, "co_forward_step at frame %lld", (long long)t_in - 1);
        if (has && emit_frame(o, &c->acc, c->y)) return 1;
    }
    if (o->pad_end && have_prev) {
        int64_t t_out = 0;
        if ((st = co_forward_steps(c->s, c->prev, 1, c->ybuf, t_out_max, &t_out, 1, 1)))
            return fail_co(st, "co_forward_steps (last frame with end padding)");
        if (emit_clip(o, &c->acc, c->ybuf, t_out, rows_out, c->y)) return 1;
    }
    return 0;
}

/* Streams a whole .npy clip. */
static int run_clip(const options *o, run_ctx *c, int64_t T, int64_t in_n, int64_t rows_in, int64_t rows_out)
{
    co_status st;
    if (o->pad_end) {
        int64_t cap = co_steps_max_output(c->s, T, 1);
        c->ybuf = malloc((size_t)((cap ? cap : 1) * c->acc.frame_n) * sizeof(float));
        if (!c->ybuf) return fail("out of memory for %lld output frames", (long long)cap);
        int64_t t_out = 0;
        if ((st = co_forward_steps(c->s, c->in.data, T, c->ybuf, cap, &t_out, 1, 1)))
            return fail_co(st, "co_forward_steps over %lld frames with end padding", (long long)T);
        return emit_clip(o, &c->acc, c->ybuf, t_out, rows_out, c->y);
    }
    c->x = malloc((size_t)in_n * sizeof(float));
    if (!c->x) return fail("out of memory");
    const int64_t S = in_n / rows_in;
    for (int64_t t = 0; t < T; t++) {
        for (int64_t r = 0; r < rows_in; r++) /* frame t out of (B, C, T, *S): time is dim 2 */
            memcpy(c->x + r * S, c->in.data + (r * T + t) * S, (size_t)S * sizeof(float));
        int has = 0;
        if ((st = co_forward_step(c->s, c->x, c->y, &has, 1))) return fail_co(st, "co_forward_step at frame %lld", (long long)t);
        if (has && emit_frame(o, &c->acc, c->y)) return 1;
    }
    return 0;
}

static int cmd_run(int argc, char **argv)
{
    options o;
    int rc = parse_options("run", argc, argv, 2, OPT_BATCH | OPT_FRAME | OPT_INPUT | OPT_OUTPUT | OPT_PAD_END, 1, &o);
    if (rc) return rc;
    if (!o.input) return usage_error("run: --input CLIP.npy (or -) is required");
    if (!o.output) return usage_error("run: --output OUT.npy (or -) is required");
    run_ctx c;
    memset(&c, 0, sizeof c);
    char buf[256], buf2[256], err[512];
    const int from_stdin = strcmp(o.input, "-") == 0;
    co_shape frame;
    int batch = o.batch;
    int64_t T = 0;
    if (from_stdin) {
        if (load_model(o.pos[0], &c.m)) return 1;
        if (pick_frame(c.m, &o, &frame, o.pos[0])) {
            run_free(&c);
            return 1;
        }
    } else {
        if (npy_read_f32(o.input, &c.in, err, sizeof err)) return fail("cannot read --input: %s", err);
        if (c.in.ndim < 3 || c.in.ndim > CO_MAX_DIMS - 1) {
            fail("'%s' has shape %s: a clip must be (B, C, T, *S) with 3 to %d dims", o.input,
                 fmt_dims(c.in.shape, c.in.ndim, buf, sizeof buf), CO_MAX_DIMS - 1);
            run_free(&c);
            return 1;
        }
        if (c.in.shape[0] < 1 || c.in.shape[0] > (1 << 20) || c.in.shape[1] < 1) {
            fail("'%s' has shape %s: batch and channels must be >= 1", o.input, fmt_dims(c.in.shape, c.in.ndim, buf, sizeof buf));
            run_free(&c);
            return 1;
        }
        if ((o.given & OPT_BATCH) && o.batch != c.in.shape[0]) {
            fail("--batch %d does not match the clip's batch %lld", o.batch, (long long)c.in.shape[0]);
            run_free(&c);
            return 1;
        }
        batch = (int)c.in.shape[0];
        T = c.in.shape[2];
        frame.ndim = c.in.ndim - 2;
        frame.dims[0] = c.in.shape[1];
        for (int i = 3; i < c.in.ndim; i++) frame.dims[i - 2] = c.in.shape[i];
        if ((o.given & OPT_FRAME) && fmt_shape(&o.frame, buf, sizeof buf) && strcmp(buf, fmt_shape(&frame, buf2, sizeof buf2)) != 0) {
            fail("--frame-shape %s does not match the clip's frame shape %s", buf, buf2);
            run_free(&c);
            return 1;
        }
        if (load_model(o.pos[0], &c.m)) {
            run_free(&c);
            return 1;
        }
    }
    co_status st = co_stream_create_shaped(c.m, batch, &frame, &c.s);
    if (st) {
        fail_co(st, "cannot stream frames of shape %s with batch %d through '%s'", fmt_shape(&frame, buf, sizeof buf), batch,
                o.pos[0]);
        run_free(&c);
        return 1;
    }
    co_shape in_shape, out_shape;
    co_stream_input_shape(c.s, &in_shape);
    co_stream_output_shape(c.s, &out_shape);
    const int64_t in_n = numel_of(&in_shape), out_n = numel_of(&out_shape);
    c.acc.frame_n = out_n;
    c.y = malloc((size_t)(out_n ? out_n : 1) * sizeof(float));
    if (!c.y) {
        run_free(&c);
        return fail("out of memory");
    }
    const int64_t rows_in = in_shape.dims[0] * in_shape.dims[1], rows_out = out_shape.dims[0] * out_shape.dims[1];
    rc = from_stdin ? run_stdin(&o, &c, in_n, rows_out) : run_clip(&o, &c, T, in_n, rows_in, rows_out);
    if (!rc && strcmp(o.output, "-") != 0) {
        rc = write_clip_npy(o.output, &c.acc, &out_shape);
        if (!rc) {
            co_shape oc = out_shape; /* (B, C', T_out, *S') */
            oc.ndim = out_shape.ndim + 1;
            for (int i = out_shape.ndim; i > 2; i--) oc.dims[i] = out_shape.dims[i - 1];
            oc.dims[2] = c.acc.n;
            fprintf(stderr, "continual: wrote %s %s (%lld output frames)\n", o.output, fmt_shape(&oc, buf, sizeof buf),
                    (long long)c.acc.n);
        }
    }
    run_free(&c);
    return rc;
}

/* ---- bench ---- */
static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double quantile(const double *sorted, long n, double q)
{
    double pos = q * (double)(n - 1);
    long i = (long)pos;
    double f = pos - (double)i;
    return i + 1 < n ? sorted[i] * (1 - f) + sorted[i + 1] * f : sorted[n - 1];
}

static int cmd_bench(int argc, char **argv)
{
    options o;
    int rc = parse_options("bench", argc, argv, 2, OPT_BATCH | OPT_FRAME | OPT_STEPS | OPT_WARMUP, 1, &o);
    if (rc) return rc;
    co_model *m = NULL;
    co_stream *s = NULL;
    float *x = NULL, *y = NULL;
    double *times = NULL;
    char buf[256], buf2[256];
    co_shape frame, in_shape, out_shape;
    co_status st;
    enum { NX = 4 }; /* a few distinct input frames, cycled */
    if (load_model(o.pos[0], &m)) return 1;
    rc = 1;
    if (pick_frame(m, &o, &frame, o.pos[0])) goto done;
    if ((st = co_stream_create_shaped(m, o.batch, &frame, &s))) {
        fail_co(st, "cannot create a stream of batch %d, frame shape %s", o.batch, fmt_shape(&frame, buf, sizeof buf));
        goto done;
    }
    co_stream_input_shape(s, &in_shape);
    co_stream_output_shape(s, &out_shape);
    const int64_t in_n = numel_of(&in_shape), out_n = numel_of(&out_shape);
    x = malloc((size_t)(NX * in_n) * sizeof(float));
    y = malloc((size_t)(out_n ? out_n : 1) * sizeof(float));
    times = malloc((size_t)o.steps * sizeof(double));
    if (!x || !y || !times) {
        fail("out of memory");
        goto done;
    }
    uint32_t seed = 12345u;
    for (int64_t i = 0; i < NX * in_n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((seed >> 8) & 0xFFFF) / 32768.0f - 1.0f;
    }
    int has = 0;
    for (long i = 0; i < o.warmup; i++)
        if ((st = co_forward_step(s, x + (i % NX) * in_n, y, &has, 1))) {
            fail_co(st, "co_forward_step (warmup %ld)", i);
            goto done;
        }
    double total0 = now_ms();
    for (long i = 0; i < o.steps; i++) {
        double t0 = now_ms();
        st = co_forward_step(s, x + (i % NX) * in_n, y, &has, 1);
        times[i] = now_ms() - t0;
        if (st) {
            fail_co(st, "co_forward_step (step %ld)", i);
            goto done;
        }
    }
    double total = now_ms() - total0;
    qsort(times, (size_t)o.steps, sizeof *times, cmp_double);
    const double med = quantile(times, o.steps, 0.5);
    co_plan_info pi;
    memset(&pi, 0, sizeof pi);
    co_model_plan_info(m, o.batch, &frame, &pi);
    printf("continual bench  %s\n", o.pos[0]);
    printf("  input frame %s -> output frame %s, %ld steps after %ld warmup\n\n", fmt_shape(&in_shape, buf, sizeof buf),
           fmt_shape(&out_shape, buf2, sizeof buf2), o.steps, o.warmup);
    printf("  %-16s %14s\n", "metric", "value");
    printf("  %-16s %14.4f\n", "median ms", med);
    printf("  %-16s %14.4f\n", "p10 ms", quantile(times, o.steps, 0.1));
    printf("  %-16s %14.4f\n", "p90 ms", quantile(times, o.steps, 0.9));
    printf("  %-16s %14.4f\n", "min ms", times[0]);
    printf("  %-16s %14.4f\n", "mean ms", total / (double)o.steps);
    printf("  %-16s %14.1f\n", "steps/s", med > 0 ? 1000.0 / med : 0.0);
    printf("  %-16s %14lld\n", "MACs/step", (long long)pi.macs_per_step);
    printf("  %-16s %14.3f\n", "GMAC/s", med > 0 ? (double)pi.macs_per_step / (med * 1e6) : 0.0);
    rc = 0;
done:
    free(x);
    free(y);
    free(times);
    co_stream_free(s);
    co_model_free(m);
    return rc;
}

/* ---- compare ---- */
static int cmd_compare(int argc, char **argv)
{
    options o;
    int rc = parse_options("compare", argc, argv, 2, OPT_ATOL | OPT_RTOL, 2, &o);
    if (rc) return rc;
    npy_array a, b;
    char err[512], buf[256], buf2[256];
    if (npy_read_f32(o.pos[0], &a, err, sizeof err)) return fail("cannot read '%s': %s", o.pos[0], err);
    if (npy_read_f32(o.pos[1], &b, err, sizeof err)) {
        npy_free(&a);
        return fail("cannot read '%s': %s", o.pos[1], err);
    }
    int same = a.ndim == b.ndim;
    for (int i = 0; same && i < a.ndim; i++) same = a.shape[i] == b.shape[i];
    if (!same) {
        fail("shapes differ: %s is %s, %s is %s", o.pos[0], fmt_dims(a.shape, a.ndim, buf, sizeof buf), o.pos[1],
             fmt_dims(b.shape, b.ndim, buf2, sizeof buf2));
        npy_free(&a);
        npy_free(&b);
        return 1;
    }
    double max_abs = 0, max_rel = 0;
    int64_t bad = 0, first_bad = -1;
    for (int64_t i = 0; i < a.numel; i++) {
        double x = a.data[i], y = b.data[i], d = fabs(x - y);
        int ok = (isnan(x) && isnan(y)) || x == y || d <= o.atol + o.rtol * fabs(y);
        if (!(d <= max_abs) && !isnan(d)) max_abs = d;
        if (y != 0 && d / fabs(y) > max_rel) max_rel = d / fabs(y);
        if (!ok) {
            if (first_bad < 0) first_bad = i;
            bad++;
        }
    }
    printf("compare  %s vs %s  shape %s: max |a-b| %.3g, max rel %.3g, %lld of %lld outside atol %g + rtol %g\n", o.pos[0],
           o.pos[1], fmt_dims(a.shape, a.ndim, buf, sizeof buf), max_abs, max_rel, (long long)bad, (long long)a.numel, o.atol,
           o.rtol);
    if (bad) {
        fail("arrays differ (first at flat index %lld: %.9g vs %.9g)", (long long)first_bad, (double)a.data[first_bad],
             (double)b.data[first_bad]);
        rc = 1;
    }
    npy_free(&a);
    npy_free(&b);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(k_usage, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "info") == 0) return cmd_info(argc, argv);
    if (strcmp(cmd, "run") == 0) return cmd_run(argc, argv);
    if (strcmp(cmd, "bench") == 0) return cmd_bench(argc, argv);
    if (strcmp(cmd, "compare") == 0) return cmd_compare(argc, argv);
    if (strcmp(cmd, "serve") == 0) {
#ifdef CO_HAVE_NATS
        return co_cli_serve(argc, argv);
#else
        fputs("continual: this build has no `serve` (configure with libnats-dev installed)\n", stderr);
        return 1;
#endif
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("continual %d.%d.%d\n", CO_VERSION_MAJOR, CO_VERSION_MINOR, CO_VERSION_PATCH);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        fputs(k_usage, stdout);
        return 0;
    }
    fprintf(stderr, "continual: unknown command '%s'\n\n%s", cmd, k_usage);
    return EXIT_USAGE;
}
