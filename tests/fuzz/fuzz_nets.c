/*
 * fuzz_nets.c — differential libFuzzer target over random networks (issue "Reliability", B1).
 *
 * The bytes choose a network of 1-d temporal modules over 2 channels — convolutions with any
 * kernel, stride and padding (padding ≥ kernel included), average and max pools, delays, tanh and
 * residuals around a same-length convolution, nested in Sequentials — its weights, a batch and a
 * clip. From a clean stream:
 *   forward_steps(pad_end) must be co_forward without its first `lost` outputs, `lost` computed here
 *   from the layers (docs/decisions.md Q27, B1: windows made only of start padding cannot be
 *   stepped, nor windows that need them), and
 *   stepping frame by frame must equal forward_steps without pad_end.
 * A network the loader refuses or a clip too short for forward is skipped, not a failure.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <continual.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { C = 2, MAX_LAYERS = 8, MAX_TENSORS = 32, MAX_T = 24, JSON_CAP = 16384 };

typedef struct bytes {
    const uint8_t *p;
    size_t n, i;
} bytes;
static unsigned take(bytes *b, unsigned mod) { return b->i < b->n ? b->p[b->i++] % mod : 0; }

typedef struct tensor {
    char name[64];
    int ndim;
    int64_t shape[3];
} tensor;

typedef struct gen {
    bytes in;
    char json[JSON_CAP];
    size_t len;
    tensor t[MAX_TENSORS];
    int nt;
    int ok;
} gen;

static void put(gen *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(gen *g, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(g->json + g->len, JSON_CAP - g->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= JSON_CAP - g->len) g->ok = 0;
    else g->len += (size_t)n;
}

static void add_tensor(gen *g, const char *path, const char *leaf, int ndim, int64_t a, int64_t b, int64_t c)
{
    if (g->nt == MAX_TENSORS) {
        g->ok = 0;
        return;
    }
    tensor *t = &g->t[g->nt++];
    snprintf(t->name, sizeof t->name, "%s%s%s", path, path[0] ? "." : "", leaf);
    t->ndim = ndim;
    t->shape[0] = a;
    t->shape[1] = b;
    t->shape[2] = c;
}

/* The first window a step can emit (docs/decisions.md Q27, B1), written out here independently of
 * the library: with a complete input stream the first that ends at or after frame 0, else the first
 * that starts at or after the first frame the stream has. It is the op's count of lost outputs. */
static int64_t first_window(int64_t lost, int64_t stride, int64_t pad, int64_t span)
{
    if (lost == 0) return pad - (span - 1) <= 0 ? 0 : (pad - (span - 1) + stride - 1) / stride;
    return (lost + pad + stride - 1) / stride;
}

static void conv(gen *g, const char *name, const char *path, unsigned k, unsigned s, unsigned p)
{
    put(g, "{\"type\":\"Conv1d\",\"name\":\"%s\",\"in_channels\":%d,\"out_channels\":%d,\"kernel_size\":[%u],"
           "\"stride\":[%u],\"padding\":[%u],\"dilation\":[1],\"groups\":1,\"bias\":true,\"padding_mode\":\"zeros\","
           "\"temporal_fill\":\"zeros\"}", name, C, C, k, s, p);
    add_tensor(g, path, "weight", 3, C, C, k);
    add_tensor(g, path, "bias", 1, C, 0, 0);
}

/* Writes one layer; returns the leading outputs its stream lacks given `lost` for its input. */
static int64_t layer(gen *g, const char *name, const char *parent, int depth, int64_t lost)
{
    char path[64];
    snprintf(path, sizeof path, "%s%s%s", parent, parent[0] ? "." : "", name);
    switch (take(&g->in, depth < 2 ? 7 : 5)) {
    case 0:
    case 1: {
        unsigned k = 1 + take(&g->in, 4), st = 1 + take(&g->in, 2), pd = take(&g->in, k + 2);
        conv(g, name, path, k, st, pd);
        return first_window(lost, st, pd, k);
    }
    case 2: {
        unsigned k = 2 + take(&g->in, 2);
        const int avg = take(&g->in, 2);
        const unsigned st = 1 + take(&g->in, 2), pd = take(&g->in, k / 2 + 1);
        put(g, "{\"type\":\"%sPool1d\",\"name\":\"%s\",\"kernel_size\":[%u],\"stride\":[%u],\"padding\":[%u],"
               "\"ceil_mode\":false,%s\"temporal_fill\":\"zeros\"}", avg ? "Avg" : "Max", name, k, st, pd,
            avg ? "\"count_include_pad\":true,\"divisor_override\":null," : "\"dilation\":[1],\"return_indices\":false,");
        return first_window(lost, st, pd, k);
    }
    case 3:
        put(g, "{\"type\":\"Delay\",\"name\":\"%s\",\"delay\":%u,\"temporal_fill\":\"zeros\",\"auto_shrink\":false}",
            name, take(&g->in, 3));
        return lost;
    case 4:
        put(g, "{\"type\":\"Tanh\",\"name\":\"%s\"}", name);
        return lost;
    case 5: { /* residual: Delay(k/2) beside conv(k, padding k/2) */
        unsigned k = 1 + 2 * take(&g->in, 3);
        char cpath[80];
        snprintf(cpath, sizeof cpath, "%s.1", path);
        put(g, "{\"type\":\"BroadcastReduce\",\"name\":\"%s\",\"reduce\":\"sum\",\"children\":["
               "{\"type\":\"Delay\",\"name\":\"0\",\"delay\":%u,\"temporal_fill\":\"zeros\",\"auto_shrink\":false},",
            name, k / 2);
        conv(g, "1", cpath, k, 1, k / 2);
        put(g, "]}");
        const int64_t branch = first_window(lost, 1, k / 2, k); /* the reduction starts at the later branch */
        return branch > lost ? branch : lost;
    }
    default: { /* nested Sequential */
        unsigned n = 1 + take(&g->in, 3);
        put(g, "{\"type\":\"Sequential\",\"name\":\"%s\",\"children\":[", name);
        for (unsigned i = 0; i < n; i++) {
            char child[8];
            snprintf(child, sizeof child, "%u", i);
            if (i) put(g, ",");
            lost = layer(g, child, path, depth + 1, lost);
        }
        put(g, "]}");
        return lost;
    }
    }
}

/* The safetensors file: header (network as an escaped string) + the tensors' values. */
static uint8_t *make_file(gen *g, size_t *size)
{
    static char header[2 * JSON_CAP + 4096];
    size_t h = 0, off = 0;
    h += (size_t)snprintf(header + h, sizeof header - h,
                          "{\"__metadata__\":{\"format\":\"continual-c\",\"format_version\":\"1\",\"frame_shape\":\"[%d]\","
                          "\"network\":\"", C);
    for (size_t i = 0; i < g->len && h + 2 < sizeof header; i++) {
        if (g->json[i] == '"') header[h++] = '\\';
        header[h++] = g->json[i];
    }
    h += (size_t)snprintf(header + h, sizeof header - h, "\"}");
    for (int i = 0; i < g->nt; i++) {
        const tensor *t = &g->t[i];
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= (size_t)t->shape[d];
        h += (size_t)snprintf(header + h, sizeof header - h, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[", t->name);
        for (int d = 0; d < t->ndim; d++)
            h += (size_t)snprintf(header + h, sizeof header - h, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        h += (size_t)snprintf(header + h, sizeof header - h, "],\"data_offsets\":[%zu,%zu]}", off, off + 4 * numel);
        off += 4 * numel;
    }
    h += (size_t)snprintf(header + h, sizeof header - h, "}");
    if (h >= sizeof header - 16) return NULL;
    while (h % 8) header[h++] = ' ';
    uint8_t *f = malloc(8 + h + off);
    if (!f) return NULL;
    for (int i = 0; i < 8; i++) f[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(f + 8, header, h);
    /* weights in (-1.25, 1.25) / fan-in, so values keep their magnitude through the layers and a
     * 1e-4 relative tolerance measures the computation, not float32 rounding of a blown-up sum */
    float *w = (float *)(f + 8 + h);
    for (int i = 0, at = 0; i < g->nt; i++) {
        const tensor *t = &g->t[i];
        const size_t numel = t->ndim == 3 ? (size_t)(t->shape[0] * t->shape[1] * t->shape[2]) : (size_t)t->shape[0];
        const float fan_in = t->ndim == 3 ? (float)(t->shape[1] * t->shape[2]) : 1.0f;
        for (size_t j = 0; j < numel; j++, at++) w[at] = ((float)take(&g->in, 251) - 125.0f) / 100.0f / fan_in;
    }
    *size = 8 + h + off;
    return f;
}

static int close_enough(float a, float b) { return fabsf(a - b) <= 1e-4f * (1.0f + fabsf(b)); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static gen g;
    memset(&g, 0, sizeof g);
    g.in = (bytes){data, size, 0};
    g.ok = 1;
    put(&g, "{\"type\":\"Sequential\",\"name\":\"\",\"children\":[");
    const unsigned n = 1 + take(&g.in, MAX_LAYERS);
    int64_t lost = 0;
    for (unsigned i = 0; i < n; i++) {
        char name[8];
        snprintf(name, sizeof name, "%u", i);
        if (i) put(&g, ",");
        lost = layer(&g, name, "", 0, lost);
    }
    put(&g, "]}");
    if (!g.ok) return 0;
    const int B = 1 + (int)take(&g.in, 2);
    const int64_t T = 4 + take(&g.in, MAX_T - 3);
    size_t fsize = 0;
    uint8_t *file = make_file(&g, &fsize);
    if (!file) return 0;
    co_model *m = NULL;
    const co_status lst = co_model_load_memory(file, fsize, &m);
    free(file);
    if (lst != CO_OK) return 0; /* e.g. a residual whose branches the loader refuses */
    float x[2 * C * MAX_T];
    for (int64_t i = 0; i < B * C * T; i++) x[i] = ((float)take(&g.in, 255) - 127.0f) / 64.0f;
    co_shape clip = {3, {B, C, T}}, fo;
    if (co_forward_shape(m, &clip, &fo) != CO_OK) {
        co_model_free(m);
        return 0;
    }
    const int64_t Tf = fo.dims[2];
    float *yf = malloc((size_t)(B * C * (Tf ? Tf : 1)) * sizeof *yf);
    co_stream *s = NULL;
    co_shape frame = {1, {C}};
    if (!yf || co_forward(m, &clip, x, yf, (size_t)(B * C * Tf)) != CO_OK ||
        co_stream_create_shaped(m, B, &frame, &s) != CO_OK)
        abort();
    const int64_t cap = co_steps_max_output(s, T, 1);
    float *ys = malloc((size_t)(B * C * (cap > 0 ? cap : 1)) * sizeof *ys);
    int64_t got = 0;
    if (!ys || cap < 0 || co_forward_steps(s, x, T, ys, cap, &got, 1, 1) != CO_OK) abort();
    /* exactly the outputs no step misses; or none at all when the clip is so short that an inner
     * stream delivers no frame (then the windows made of its end padding alone are not produced
     * either: an op that never received a frame does not pad, as the untaken branch of a
     * Conditional must not; docs/decisions.md Q27) */
    if (got != (Tf > lost ? Tf - lost : 0) && got != 0) {
        fprintf(stderr, "fuzz_nets: %lld step outputs, forward has %lld of which %lld cannot be stepped\nnetwork: %s\n",
                (long long)got, (long long)Tf, (long long)lost, g.json);
        abort();
    }
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            for (int64_t t = 0; t < got; t++)
                if (!close_enough(ys[(b * C + c) * got + t], yf[(b * C + c) * Tf + (Tf - got) + t])) {
                    fprintf(stderr, "fuzz_nets: step output %lld (b %d, c %d) is not forward's %lld: %g vs %g\nnetwork: %s\n",
                            (long long)t, b, c, (long long)(Tf - got + t), ys[(b * C + c) * got + t],
                            yf[(b * C + c) * Tf + (Tf - got) + t], g.json);
                    abort();
                }
    /* frame by frame == forward_steps without pad_end */
    co_stream_clean(s);
    float frame_x[2 * C], frame_y[2 * C];
    int64_t k = 0;
    const int64_t cap2 = co_steps_max_output(s, T, 0);
    float *ys2 = malloc((size_t)(B * C * (cap2 > 0 ? cap2 : 1)) * sizeof *ys2);
    float *stepped = malloc((size_t)(B * C * T) * sizeof *stepped);
    if (!ys2 || !stepped) abort();
    for (int64_t t = 0; t < T; t++) {
        for (int r = 0; r < B * C; r++) frame_x[r] = x[r * T + t];
        int has = 0;
        if (co_forward_step(s, frame_x, frame_y, &has, 1) != CO_OK) abort();
        if (has) {
            for (int r = 0; r < B * C; r++) stepped[r * T + k] = frame_y[r];
            k++;
        }
    }
    co_stream_clean(s);
    int64_t got2 = 0;
    if (co_forward_steps(s, x, T, ys2, cap2, &got2, 0, 1) != CO_OK || got2 != k) abort();
    for (int r = 0; r < B * C; r++)
        for (int64_t t = 0; t < k; t++)
            if (ys2[r * got2 + t] != stepped[r * T + t]) abort();
    free(ys2);
    free(stepped);
    free(ys);
    free(yf);
    co_stream_free(s);
    co_model_free(m);
    return 0;
}
