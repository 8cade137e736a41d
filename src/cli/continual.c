/*
 * continual.c — the `continual` command-line tool, written against include/continual.h only.
 *
 *   continual info    MODEL [--batch N] [--frame-shape C,...] [--ops]
 *   continual run     MODEL --input CLIP.npy|- --output OUT.npy|- [--pad-end] [--batch N] [--frame-shape C,...] [--threads N] [--direct-conv]
 *   continual bench   MODEL [--batch N] [--frame-shape C,...] [--steps N] [--warmup N] [--threads N] [--direct-conv] [--json]
 *   continual profile MODEL [--batch N] [--frame-shape C,...] [--steps N] [--warmup N] [--threads N] [--direct-conv] [--json]
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
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "cli/npy.h"
#ifdef CO_HAVE_NATS
#include "cli/serve.h"
#endif

#define EXIT_USAGE 2

static const char k_usage[] =
    "usage: continual <command> [options]\n"
    "\n"
    "commands:\n"
    "  info MODEL [--batch N] [--frame-shape C,...] [--ops]\n"
    "      the module tree (params, receptive field, delay, stride, padding per node), the totals,\n"
    "      and the step plan for the frame shape (output frame, MACs/step, state and arena bytes);\n"
    "      --ops: the plan one op a line (kind, type, path, output frame, MACs, state, scratch)\n"
    "  run MODEL --input CLIP --output OUT [--pad-end] [--batch N] [--frame-shape C,...] [--threads N] [--direct-conv]\n"
    "      streams a clip (B, C, T, *S) frame by frame through the network and writes the outputs\n"
    "      that appear as (B, C', T_out, *S'). CLIP/OUT are float32/float64 .npy files, or '-':\n"
    "      raw float32 frames (B, C, *S) on stdin / output frames on stdout (shape from\n"
    "      --frame-shape or the model file, --batch, default 1); each output frame is written and\n"
    "      flushed as soon as it exists. --pad-end flushes the end padding at the end of the input.\n"
    "      --threads N: each step's large products on N threads (same results; default 1)\n"
    "      --direct-conv: no Winograd for 3x3 convolutions (torch's rounding; CO_LOAD_DIRECT_CONV)\n"
    "  bench MODEL [--batch N] [--frame-shape C,...] [--steps N] [--warmup N] [--threads N] [--direct-conv] [--json]\n"
    "      times co_forward_step: first step, p10 / p50 / p90 / p99 / max ms per step, steps/s,\n"
    "      threads, kernel backend, peak memory; --json: one JSON object instead of the table\n"
    "  profile MODEL [--batch N] [--frame-shape C,...] [--steps N] [--warmup N] [--threads N] [--direct-conv] [--json]\n"
    "      times every op of the plan over the steps and prints them sorted by time\n"
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
    OPT_JSON = 1 << 9,
    OPT_OPS = 1 << 10,
    OPT_THREADS = 1 << 11,
    OPT_DIRECT_CONV = 1 << 12,
};
/* options that take no value */
#define OPT_FLAGS (OPT_PAD_END | OPT_JSON | OPT_OPS | OPT_DIRECT_CONV)
/* what bench reports as its threads until the library has a thread option: one thread steps */
#define CLI_THREADS_DEFAULT 1

typedef struct options {
    unsigned given;
    const char *pos[3];
    int n_pos;
    int batch;
    co_shape frame;
    const char *input, *output;
    int pad_end, json, ops;
    int direct_conv; /* --direct-conv: load with CO_LOAD_DIRECT_CONV */
    long steps, warmup;
    int threads; /* --threads: intra-step threads of the stream (co_stream_set_threads) */
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
    case OPT_JSON: return "--json";
    case OPT_OPS: return "--ops";
    case OPT_THREADS: return "--threads";
    case OPT_DIRECT_CONV: return "--direct-conv";
    default: return "?";
    }
}

/* Parses argv[first..argc) for `cmd`; `allowed` is a mask of OPT_*, `npos` the positionals needed.
 * Returns 0, or EXIT_USAGE after printing why. */
static int parse_options(const char *cmd, int argc, char **argv, int first, unsigned allowed, int npos, options *o)
{
    memset(o, 0, sizeof *o);
    o->batch = 1;
    o->threads = CLI_THREADS_DEFAULT;
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
                                       OPT_STEPS, OPT_WARMUP, OPT_ATOL, OPT_RTOL, OPT_JSON, OPT_OPS, OPT_THREADS,
                                       OPT_DIRECT_CONV};
        for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
            if (strcmp(name, opt_name(all[k])) == 0) bit = all[k];
        if (!bit || !(allowed & bit)) return usage_error("%s: unknown option '%s'", cmd, name);
        if (o->given & bit) return usage_error("%s: option %s given twice", cmd, name);
        o->given |= bit;
        if (bit & OPT_FLAGS) {
            if (eq) return usage_error("%s: %s takes no value", cmd, name);
            if (bit == OPT_PAD_END) o->pad_end = 1;
            if (bit == OPT_JSON) o->json = 1;
            if (bit == OPT_OPS) o->ops = 1;
            if (bit == OPT_DIRECT_CONV) o->direct_conv = 1;
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
        case OPT_THREADS:
            if (parse_long(val, 1, CO_MAX_THREADS, &v))
                return usage_error("%s: --threads '%s' is not an integer in [1, %d]", cmd, val, CO_MAX_THREADS);
            o->threads = (int)v;
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

/* o NULL: the library's defaults (commands without load options) */
static int load_model(const char *path, const options *o, co_model **m)
{
    co_load_options lo = {0};
    lo.flags = o && o->direct_conv ? CO_LOAD_DIRECT_CONV : 0u;
    co_status st = co_model_load_ex(path, &lo, m);
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
static int max_int(int a, int b) { return a > b ? a : b; }
static const char *op_path(const co_op_info *op) { return op->path[0] ? op->path : "(root)"; }

/* The plan of `n_ops` ops, one a line: index, kind, module type, path, output frame, MACs per
 * step, state bytes, scratch floats. */
static int print_plan_ops(const co_model *m, int batch, const co_shape *frame, int n_ops)
{
    co_op_info *ops = calloc((size_t)(n_ops ? n_ops : 1), sizeof *ops);
    if (!ops) return fail("out of memory for %d ops", n_ops);
    co_status st = co_model_plan_ops(m, batch, frame, ops, n_ops);
    if (st) {
        free(ops);
        return fail_co(st, "co_model_plan_ops");
    }
    int kw = 4, tw = 4, pw = 4;
    for (int i = 0; i < n_ops; i++) {
        kw = max_int(kw, (int)strlen(ops[i].kind));
        tw = max_int(tw, (int)strlen(ops[i].type));
        pw = max_int(pw, (int)strlen(op_path(&ops[i])));
    }
    char buf[256];
    printf("\nops (in step order)\n");
    printf("  %4s  %-*s  %-*s  %-*s  %-22s %12s %10s %10s\n", "op", kw, "kind", tw, "type", pw, "path", "output frame",
           "MACs/step", "state B", "scratch F");
    for (int i = 0; i < n_ops; i++)
        printf("  %4d  %-*s  %-*s  %-*s  %-22s %12lld %10zu %10zu\n", i, kw, ops[i].kind, tw,
               ops[i].type[0] ? ops[i].type : "-", pw, op_path(&ops[i]), fmt_shape(&ops[i].output_frame, buf, sizeof buf),
               (long long)ops[i].macs, ops[i].state_bytes, ops[i].scratch_floats);
    free(ops);
    return 0;
}
static int cmd_info(int argc, char **argv)
{
    options o;
    int rc = parse_options("info", argc, argv, 2, OPT_BATCH | OPT_FRAME | OPT_OPS, 1, &o);
    if (rc) return rc;
    co_model *m = NULL;
    if (load_model(o.pos[0], NULL, &m)) return 1;
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
    rc = o.ops ? print_plan_ops(m, o.batch, &frame, pi.num_ops) : 0;
    co_model_free(m);
    return rc;
}

/* ---- timing, progress ---- */
static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* A progress line on stderr (frames done, frames/s, ETA) for runs that last, redrawn a few times
 * a second; only when stderr is a terminal, so pipes, files and tests never see it. */
#define PROGRESS_FIRST_MS 1000.0  /* runs shorter than this show nothing */
#define PROGRESS_EVERY_MS 200.0
typedef struct progress {
    int on, shown;
    int64_t total; /* 0: unknown (stdin) */
    double start_ms, last_ms;
    const char *what;
} progress;

static void progress_start(progress *p, const char *what, int64_t total)
{
    memset(p, 0, sizeof *p);
    p->on = isatty(STDERR_FILENO);
    p->total = total;
    p->what = what;
    p->start_ms = p->last_ms = now_ms();
}

static void progress_update(progress *p, int64_t done)
{
    if (!p->on) return;
    const double t = now_ms();
    if (t - p->start_ms < PROGRESS_FIRST_MS || t - p->last_ms < PROGRESS_EVERY_MS) return;
    p->last_ms = t;
    p->shown = 1;
    const double rate = (double)done * 1e3 / (t - p->start_ms);
    if (p->total > 0 && rate > 0)
        fprintf(stderr, "\r%s %lld/%lld  %.1f /s  ETA %.1f s   ", p->what, (long long)done, (long long)p->total, rate,
                (double)(p->total - done) / rate);
    else
        fprintf(stderr, "\r%s %lld  %.1f /s   ", p->what, (long long)done, rate);
    fflush(stderr);
}

static void progress_end(progress *p)
{
    if (p->shown) fputs("\r\033[K", stderr); /* erase the line */
    p->shown = 0;
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
    float *x, *y, *ybuf;
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
    free(c->acc.data);
}

/* End of input: the frames the end padding makes appear (co_stream_finish), emitted in order. */
static int run_finish(const options *o, run_ctx *c, int64_t rows_out)
{
    const int64_t cap = co_stream_finish_max_output(c->s);
    c->ybuf = malloc((size_t)((cap > 0 ? cap : 1) * c->acc.frame_n) * sizeof(float));
    if (!c->ybuf) return fail("out of memory for %lld output frames", (long long)cap);
    int64_t t_out = 0;
    co_status st = co_stream_finish(c->s, c->ybuf, cap, &t_out);
    if (st) return fail_co(st, "co_stream_finish (end padding)");
    return emit_clip(o, &c->acc, c->ybuf, t_out, rows_out, c->y);
}

/* Streams stdin (raw float32 frames) through the stream: each output is emitted as soon as its
 * frame is stepped, and with --pad-end the tail is flushed once stdin ends. */
static int run_stdin(const options *o, run_ctx *c, int64_t in_n, int64_t rows_out)
{
    int64_t t_in = 0;
    c->x = malloc((size_t)in_n * sizeof(float));
    if (!c->x) return fail("out of memory for frames of %lld floats", (long long)in_n);
    progress prog;
    progress_start(&prog, "run: frames", 0);
    co_status st;
    for (;;) {
        const size_t want = (size_t)in_n * sizeof(float);
        size_t got = fread(c->x, 1, want, stdin);
        if (got == 0 && feof(stdin)) break;
        if (got != want) {
            progress_end(&prog);
            if (ferror(stdin)) return fail("error reading stdin: %s", strerror(errno));
            return fail("stdin ended inside frame %lld: got %zu of %zu bytes (frame shape and --batch must match the data)",
                        (long long)t_in, got, want);
        }
        int has = 0;
        if ((st = co_forward_step(c->s, c->x, c->y, &has, CO_UPDATE_STATE))) {
            progress_end(&prog);
            return fail_co(st, "co_forward_step at frame %lld", (long long)t_in);
        }
        t_in++;
        if (has && emit_frame(o, &c->acc, c->y)) return 1;
        progress_update(&prog, t_in);
    }
    progress_end(&prog);
    return o->pad_end ? run_finish(o, c, rows_out) : 0;
}

/* Streams a whole .npy clip frame by frame, then flushes the end padding with --pad-end (the
 * same calls as a live stream, so both give the same frames). */
static int run_clip(const options *o, run_ctx *c, int64_t T, int64_t in_n, int64_t rows_in, int64_t rows_out)
{
    co_status st;
    c->x = malloc((size_t)in_n * sizeof(float));
    if (!c->x) return fail("out of memory");
    const int64_t S = in_n / rows_in;
    progress prog;
    progress_start(&prog, "run: frames", T);
    for (int64_t t = 0; t < T; t++) {
        for (int64_t r = 0; r < rows_in; r++) /* frame t out of (B, C, T, *S): time is dim 2 */
            memcpy(c->x + r * S, c->in.data + (r * T + t) * S, (size_t)S * sizeof(float));
        int has = 0;
        if ((st = co_forward_step(c->s, c->x, c->y, &has, CO_UPDATE_STATE))) {
            progress_end(&prog);
            return fail_co(st, "co_forward_step at frame %lld", (long long)t);
        }
        if (has && emit_frame(o, &c->acc, c->y)) return 1;
        progress_update(&prog, t + 1);
    }
    progress_end(&prog);
    return o->pad_end ? run_finish(o, c, rows_out) : 0;
}

static int cmd_run(int argc, char **argv)
{
    options o;
    int rc = parse_options("run", argc, argv, 2, OPT_BATCH | OPT_FRAME | OPT_INPUT | OPT_OUTPUT | OPT_PAD_END | OPT_THREADS | OPT_DIRECT_CONV, 1,
                           &o);
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
        if (load_model(o.pos[0], &o, &c.m)) return 1;
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
        if (load_model(o.pos[0], &o, &c.m)) {
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
    if ((st = co_stream_set_threads(c.s, o.threads))) {
        fail_co(st, "cannot run on %d threads", o.threads);
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

/* Peak resident set of this process in bytes (getrusage; Linux reports KiB). */
#define RUSAGE_MAXRSS_UNIT 1024
static long long peak_rss_bytes(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
    return (long long)ru.ru_maxrss * RUSAGE_MAXRSS_UNIT;
}

/* A JSON string literal (quotes, backslashes and control characters escaped). */
static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

static void json_dims(FILE *f, const co_shape *s)
{
    fputc('[', f);
    for (int i = 0; i < s->ndim; i++) fprintf(f, "%s%lld", i ? ", " : "", (long long)s->dims[i]);
    fputc(']', f);
}

/* A stream for bench and profile: model, frame shape, stream, NX distinct random input frames
 * (cycled) and an output buffer. */
enum { BENCH_INPUTS = 4 };
typedef struct bench_ctx {
    co_model *m;
    co_stream *s;
    co_shape frame, in_shape, out_shape;
    int64_t in_n;
    float *x, *y;
} bench_ctx;

static void bench_free(bench_ctx *b)
{
    free(b->x);
    free(b->y);
    co_stream_free(b->s);
    co_model_free(b->m);
}

static int bench_open(const options *o, bench_ctx *b)
{
    char buf[256];
    co_status st;
    memset(b, 0, sizeof *b);
    if (load_model(o->pos[0], o, &b->m)) return 1;
    if (pick_frame(b->m, o, &b->frame, o->pos[0])) return 1;
    if ((st = co_stream_create_shaped(b->m, o->batch, &b->frame, &b->s)))
        return fail_co(st, "cannot create a stream of batch %d, frame shape %s", o->batch, fmt_shape(&b->frame, buf, sizeof buf));
    if ((st = co_stream_set_threads(b->s, o->threads))) return fail_co(st, "cannot step on %d threads", o->threads);
    co_stream_input_shape(b->s, &b->in_shape);
    co_stream_output_shape(b->s, &b->out_shape);
    b->in_n = numel_of(&b->in_shape);
    const int64_t out_n = numel_of(&b->out_shape);
    b->x = malloc((size_t)(BENCH_INPUTS * b->in_n) * sizeof(float));
    b->y = malloc((size_t)(out_n ? out_n : 1) * sizeof(float));
    if (!b->x || !b->y) return fail("out of memory");
    uint32_t seed = 12345u; /* a fixed LCG: the same frames every run */
    for (int64_t i = 0; i < BENCH_INPUTS * b->in_n; i++) {
        seed = seed * 1664525u + 1013904223u;
        b->x[i] = (float)((seed >> 8) & 0xFFFF) / 32768.0f - 1.0f;
    }
    return 0;
}

/* Step i of the bench (input frame i mod BENCH_INPUTS). */
static co_status bench_step(bench_ctx *b, long i)
{
    int has = 0;
    return co_forward_step(b->s, b->x + (i % BENCH_INPUTS) * b->in_n, b->y, &has, CO_UPDATE_STATE);
}

/* ---- bench ---- */
static int cmd_bench(int argc, char **argv)
{
    options o;
    int rc = parse_options("bench", argc, argv, 2, OPT_BATCH | OPT_FRAME | OPT_STEPS | OPT_WARMUP | OPT_THREADS | OPT_DIRECT_CONV | OPT_JSON, 1, &o);
    if (rc) return rc;
    bench_ctx b;
    double *times = NULL;
    char buf[256], buf2[256];
    co_status st;
    rc = 1;
    if (bench_open(&o, &b)) goto done;
    times = malloc((size_t)o.steps * sizeof(double));
    if (!times) {
        fail("out of memory");
        goto done;
    }
    progress prog;
    progress_start(&prog, "bench: steps", o.warmup + o.steps);
    /* the first step of a fresh stream: what a new sequence's first frame costs (cold caches) */
    double t0 = now_ms();
    st = bench_step(&b, 0);
    const double first_ms = now_ms() - t0;
    if (st) {
        fail_co(st, "co_forward_step (first step)");
        goto done;
    }
    for (long i = 1; i < o.warmup; i++) {
        if ((st = bench_step(&b, i))) {
            fail_co(st, "co_forward_step (warmup %ld)", i);
            goto done;
        }
        progress_update(&prog, i);
    }
    double total0 = now_ms();
    for (long i = 0; i < o.steps; i++) {
        t0 = now_ms();
        st = bench_step(&b, i);
        times[i] = now_ms() - t0;
        if (st) {
            fail_co(st, "co_forward_step (step %ld)", i);
            goto done;
        }
        progress_update(&prog, o.warmup + i);
    }
    const double total = now_ms() - total0;
    progress_end(&prog);
    qsort(times, (size_t)o.steps, sizeof *times, cmp_double);
    const double p10 = quantile(times, o.steps, 0.1), p50 = quantile(times, o.steps, 0.5),
                 p90 = quantile(times, o.steps, 0.9), p99 = quantile(times, o.steps, 0.99);
    const double mean = total / (double)o.steps, steps_per_s = p50 > 0 ? 1000.0 / p50 : 0.0;
    co_plan_info pi;
    memset(&pi, 0, sizeof pi);
    co_model_plan_info(b.m, o.batch, &b.frame, &pi);
    const double gmacs = p50 > 0 ? (double)pi.macs_per_step / (p50 * 1e6) : 0.0;
    const long long rss = peak_rss_bytes();
    if (o.json) {
        printf("{\"model\": ");
        json_string(stdout, o.pos[0]);
        printf(", \"version\": ");
        json_string(stdout, co_version_string());
        printf(", \"backend\": ");
        json_string(stdout, co_kernel_backend());
        printf(", \"threads\": %d, \"batch\": %d, \"input_frame\": ", co_stream_threads(b.s), o.batch);
        json_dims(stdout, &b.in_shape);
        printf(", \"output_frame\": ");
        json_dims(stdout, &b.out_shape);
        printf(", \"steps\": %ld, \"warmup\": %ld, \"first_step_ms\": %.6f, \"ms\": {\"min\": %.6f, \"p10\": %.6f, "
               "\"p50\": %.6f, \"p90\": %.6f, \"p99\": %.6f, \"max\": %.6f, \"mean\": %.6f}, \"steps_per_s\": %.3f, "
               "\"macs_per_step\": %lld, \"gmac_per_s\": %.6f, \"state_bytes\": %zu, \"arena_bytes\": %zu, "
               "\"peak_rss_bytes\": %lld}\n",
               o.steps, o.warmup, first_ms, times[0], p10, p50, p90, p99, times[o.steps - 1], mean, steps_per_s,
               (long long)pi.macs_per_step, gmacs, pi.state_bytes, pi.arena_bytes, rss);
        rc = 0;
        goto done;
    }
    printf("continual bench  %s\n", o.pos[0]);
    printf("  input frame %s -> output frame %s, %ld steps after %ld warmup\n", fmt_shape(&b.in_shape, buf, sizeof buf),
           fmt_shape(&b.out_shape, buf2, sizeof buf2), o.steps, o.warmup);
    printf("  library %s, kernels %s, threads %d\n\n", co_version_string(), co_kernel_backend(), co_stream_threads(b.s));
    printf("  %-16s %14s\n", "metric", "value");
    printf("  %-16s %14.4f\n", "first step ms", first_ms);
    printf("  %-16s %14.4f\n", "median ms", p50);
    printf("  %-16s %14.4f\n", "p10 ms", p10);
    printf("  %-16s %14.4f\n", "p90 ms", p90);
    printf("  %-16s %14.4f\n", "p99 ms", p99);
    printf("  %-16s %14.4f\n", "min ms", times[0]);
    printf("  %-16s %14.4f\n", "max ms", times[o.steps - 1]);
    printf("  %-16s %14.4f\n", "mean ms", mean);
    printf("  %-16s %14.1f\n", "steps/s", steps_per_s);
    printf("  %-16s %14lld\n", "MACs/step", (long long)pi.macs_per_step);
    printf("  %-16s %14.3f\n", "GMAC/s", gmacs);
    printf("  %-16s %14zu\n", "arena bytes", pi.arena_bytes);
    printf("  %-16s %14lld\n", "peak RSS bytes", rss);
    rc = 0;
done:
    free(times);
    bench_free(&b);
    return rc;
}

/* ---- profile ---- */
static const int64_t *g_sort_ns; /* qsort has no context argument */
static int cmp_op_time(const void *a, const void *b)
{
    const int64_t x = g_sort_ns[*(const int *)a], y = g_sort_ns[*(const int *)b];
    if (x != y) return x > y ? -1 : 1; /* slowest first */
    return *(const int *)a - *(const int *)b;
}

/* profile --json: the run's settings and one object per op, slowest first. */
static void print_profile_json(const options *o, const bench_ctx *b, const co_op_info *ops, const int64_t *ns,
                               const int *order, int n, double total_ms)
{
    int64_t sum_ns = 0;
    for (int i = 0; i < n; i++) sum_ns += ns[i];
    printf("{\"model\": ");
    json_string(stdout, o->pos[0]);
    printf(", \"version\": ");
    json_string(stdout, co_version_string());
    printf(", \"backend\": ");
    json_string(stdout, co_kernel_backend());
    printf(", \"threads\": %d, \"batch\": %d, \"input_frame\": ", co_stream_threads(b->s), o->batch);
    json_dims(stdout, &b->in_shape);
    printf(", \"steps\": %ld, \"warmup\": %ld, \"step_ms\": %.6f, \"op_ms\": %.6f, \"ops\": [", o->steps, o->warmup,
           total_ms, (double)sum_ns * 1e-6);
    for (int r = 0; r < n; r++) {
        const int i = order[r];
        printf("%s\n  {\"op\": %d, \"kind\": ", r ? "," : "", i);
        json_string(stdout, ops[i].kind);
        printf(", \"type\": ");
        json_string(stdout, ops[i].type);
        printf(", \"path\": ");
        json_string(stdout, ops[i].path);
        printf(", \"output_frame\": ");
        json_dims(stdout, &ops[i].output_frame);
        printf(", \"macs_per_step\": %lld, \"total_ms\": %.6f, \"us_per_step\": %.4f}", (long long)ops[i].macs,
               (double)ns[i] * 1e-6, (double)ns[i] * 1e-3 / (double)o->steps);
    }
    printf("\n]}\n");
}

static int cmd_profile(int argc, char **argv)
{
    options o;
    int rc = parse_options("profile", argc, argv, 2, OPT_BATCH | OPT_FRAME | OPT_STEPS | OPT_WARMUP | OPT_THREADS | OPT_DIRECT_CONV | OPT_JSON, 1, &o);
    if (rc) return rc;
    bench_ctx b;
    co_op_info *ops = NULL;
    int64_t *ns = NULL;
    int *order = NULL;
    char buf[256], buf2[256];
    co_status st;
    rc = 1;
    if (bench_open(&o, &b)) goto done;
    co_plan_info pi;
    if ((st = co_model_plan_info(b.m, o.batch, &b.frame, &pi))) {
        fail_co(st, "co_model_plan_info");
        goto done;
    }
    const int n = pi.num_ops;
    ops = calloc((size_t)(n ? n : 1), sizeof *ops);
    ns = calloc((size_t)(n ? n : 1), sizeof *ns);
    order = calloc((size_t)(n ? n : 1), sizeof *order);
    if (!ops || !ns || !order) {
        fail("out of memory for %d ops", n);
        goto done;
    }
    if ((st = co_model_plan_ops(b.m, o.batch, &b.frame, ops, n))) {
        fail_co(st, "co_model_plan_ops");
        goto done;
    }
    progress prog;
    progress_start(&prog, "profile: steps", o.warmup + o.steps);
    for (long i = 0; i < o.warmup; i++) {
        if ((st = bench_step(&b, i))) {
            fail_co(st, "co_forward_step (warmup %ld)", i);
            goto done;
        }
        progress_update(&prog, i);
    }
    co_stream_set_profile(b.s, ns);
    const double t0 = now_ms();
    for (long i = 0; i < o.steps; i++) {
        if ((st = bench_step(&b, i))) {
            fail_co(st, "co_forward_step (step %ld)", i);
            goto done;
        }
        progress_update(&prog, o.warmup + i);
    }
    const double total_ms = now_ms() - t0;
    co_stream_set_profile(b.s, NULL);
    progress_end(&prog);
    int64_t sum_ns = 0;
    for (int i = 0; i < n; i++) {
        sum_ns += ns[i];
        order[i] = i;
    }
    g_sort_ns = ns;
    qsort(order, (size_t)n, sizeof *order, cmp_op_time);
    int kw = 4, tw = 4, pw = 4;
    for (int i = 0; i < n; i++) {
        kw = max_int(kw, (int)strlen(ops[i].kind));
        tw = max_int(tw, (int)strlen(ops[i].type));
        pw = max_int(pw, (int)strlen(op_path(&ops[i])));
    }
    if (o.json) {
        print_profile_json(&o, &b, ops, ns, order, n, total_ms);
        rc = 0;
        goto done;
    }
    printf("continual profile  %s\n", o.pos[0]);
    printf("  input frame %s -> output frame %s, %ld steps after %ld warmup; library %s, kernels %s, threads %d\n\n",
           fmt_shape(&b.in_shape, buf, sizeof buf), fmt_shape(&b.out_shape, buf2, sizeof buf2), o.steps, o.warmup,
           co_version_string(), co_kernel_backend(), co_stream_threads(b.s));
    printf("  %4s  %10s %10s %6s %6s  %-*s  %-*s  %-*s  %-22s %12s\n", "op", "total ms", "us/step", "%", "cum %", kw, "kind",
           tw, "type", pw, "path", "output frame", "MACs/step");
    double cum = 0;
    for (int r = 0; r < n; r++) {
        const int i = order[r];
        const double share = sum_ns > 0 ? 100.0 * (double)ns[i] / (double)sum_ns : 0.0;
        cum += share;
        printf("  %4d  %10.3f %10.2f %6.1f %6.1f  %-*s  %-*s  %-*s  %-22s %12lld\n", i, (double)ns[i] * 1e-6,
               (double)ns[i] * 1e-3 / (double)o.steps, share, cum, kw, ops[i].kind, tw, ops[i].type[0] ? ops[i].type : "-", pw,
               op_path(&ops[i]), fmt_shape(&ops[i].output_frame, buf, sizeof buf), (long long)ops[i].macs);
    }
    printf("\n  ops %d, op time %.3f ms, step time %.3f ms over %ld steps (%.1f%% outside the ops: the executor, copies\n"
           "  and the clock itself)\n",
           n, (double)sum_ns * 1e-6, total_ms, o.steps,
           total_ms > 0 ? 100.0 * (total_ms - (double)sum_ns * 1e-6) / total_ms : 0.0);
    rc = 0;
done:
    free(ops);
    free(ns);
    free(order);
    bench_free(&b);
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
    if (strcmp(cmd, "profile") == 0) return cmd_profile(argc, argv);
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
        /* the tool's own version (the header it was built with) and the library's it runs with */
        printf("continual %s (library %s, kernels %s)\n", CO_VERSION_STRING, co_version_string(), co_kernel_backend());
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        fputs(k_usage, stdout);
        return 0;
    }
    fprintf(stderr, "continual: unknown command '%s'\n\n%s", cmd, k_usage);
    return EXIT_USAGE;
}
