/*
 * testutil.c — see testutil.h.
 */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- strings ---- */
void tu_str_addn(tu_str *b, const char *text, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            fprintf(stderr, "testutil: out of memory\n");
            exit(99);
        }
        b->s = s;
        b->cap = cap;
    }
    memcpy(b->s + b->n, text, n);
    b->n += n;
    b->s[b->n] = 0;
}

void tu_str_add(tu_str *b, const char *text) { tu_str_addn(b, text, strlen(text)); }

void tu_str_printf(tu_str *b, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) {
        tu_str_addn(b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) exit(99);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    tu_str_addn(b, big, (size_t)n);
    free(big);
}

void tu_str_add_escaped(tu_str *b, const char *text)
{
    for (const char *p = text; *p; p++) {
        if (*p == '"' || *p == '\\') tu_str_addn(b, "\\", 1);
        tu_str_addn(b, p, 1);
    }
}

void tu_str_free(tu_str *b)
{
    free(b->s);
    memset(b, 0, sizeof *b);
}

/* ---- safetensors ---- */
const char tu_small_network[] =
    "{\"type\":\"Sequential\",\"name\":\"\",\"children\":["
    "{\"type\":\"Conv1d\",\"name\":\"0\",\"in_channels\":2,\"out_channels\":3,\"kernel_size\":[3],\"stride\":[1],"
    "\"padding\":[1],\"dilation\":[1],\"groups\":1,\"bias\":true,\"padding_mode\":\"zeros\",\"temporal_fill\":\"zeros\"},"
    "{\"type\":\"ReLU\",\"name\":\"1\"}]}";

void tu_small_spec(tu_spec *s)
{
    memset(s, 0, sizeof *s);
    s->network = tu_small_network;
    s->frame_shape = "[2]";
    s->n = 2;
    s->t[0] = (tu_tensor){.name = "0.weight", .ndim = 3, .shape = {3, 2, 3}};
    s->t[1] = (tu_tensor){.name = "0.bias", .ndim = 1, .shape = {3}};
}

static const char k_medium_network[] =
    "{\"type\":\"Sequential\",\"name\":\"\",\"children\":["
    "{\"type\":\"Conv1d\",\"name\":\"0\",\"in_channels\":2,\"out_channels\":4,\"kernel_size\":[3],\"stride\":[2],"
    "\"padding\":[1]},"
    "{\"type\":\"BatchNorm1d\",\"name\":\"1\",\"num_features\":4,\"eps\":1e-05,\"affine\":true,"
    "\"track_running_stats\":true},"
    "{\"type\":\"ReLU\",\"name\":\"2\"},"
    "{\"type\":\"BroadcastReduce\",\"name\":\"3\",\"reduce\":\"sum\",\"children\":["
    "{\"type\":\"Conv1d\",\"name\":\"0\",\"in_channels\":4,\"out_channels\":4,\"kernel_size\":[3],\"padding\":[1]},"
    "{\"type\":\"Delay\",\"name\":\"1\",\"delay\":1}]},"
    "{\"type\":\"Conv1d\",\"name\":\"4\",\"in_channels\":4,\"out_channels\":3,\"kernel_size\":[1]}]}";

static const float k_positive4[4] = {0.5f, 1.25f, 0.75f, 2.0f};

void tu_medium_spec(tu_spec *s)
{
    memset(s, 0, sizeof *s);
    s->network = k_medium_network;
    s->frame_shape = "[2]";
    s->n = 10;
    s->t[0] = (tu_tensor){.name = "0.weight", .ndim = 3, .shape = {4, 2, 3}};
    s->t[1] = (tu_tensor){.name = "0.bias", .ndim = 1, .shape = {4}};
    s->t[2] = (tu_tensor){.name = "1.weight", .ndim = 1, .shape = {4}};
    s->t[3] = (tu_tensor){.name = "1.bias", .ndim = 1, .shape = {4}};
    s->t[4] = (tu_tensor){.name = "1.running_mean", .ndim = 1, .shape = {4}};
    s->t[5] = (tu_tensor){.name = "1.running_var", .ndim = 1, .shape = {4}, .values = k_positive4};
    s->t[6] = (tu_tensor){.name = "3.0.weight", .ndim = 3, .shape = {4, 4, 3}};
    s->t[7] = (tu_tensor){.name = "3.0.bias", .ndim = 1, .shape = {4}};
    s->t[8] = (tu_tensor){.name = "4.weight", .ndim = 3, .shape = {3, 4, 1}};
    s->t[9] = (tu_tensor){.name = "4.bias", .ndim = 1, .shape = {3}};
}

float tu_pattern(int64_t i) { return (float)((i * 37 + 11) % 23 - 11) / 8.0f; }

static int64_t tensor_numel(const tu_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

static int64_t tensor_bytes(const tu_tensor *t) { return t->nbytes ? t->nbytes : tensor_numel(t) * 4; }

unsigned char *tu_raw(uint64_t header_len, const char *header, size_t header_bytes, const void *data, size_t data_n,
                      size_t *size)
{
    size_t n = 8 + header_bytes + data_n;
    unsigned char *out = malloc(n ? n : 1);
    if (!out) exit(99);
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)(header_len >> (8 * i));
    if (header_bytes) memcpy(out + 8, header, header_bytes);
    if (data_n) memcpy(out + 8 + header_bytes, data, data_n);
    *size = n;
    return out;
}

unsigned char *tu_build(const tu_spec *s, size_t *size)
{
    tu_str h = {0};
    tu_str_add(&h, "{");
    int first = 1;
    if (!s->no_metadata) {
        tu_str_add(&h, "\"__metadata__\":{\"format\":\"");
        tu_str_add_escaped(&h, s->format ? s->format : "continual-c");
        tu_str_add(&h, "\",\"format_version\":\"");
        tu_str_add_escaped(&h, s->format_version ? s->format_version : "1");
        tu_str_add(&h, "\"");
        if (s->network) {
            tu_str_add(&h, ",\"network\":\"");
            tu_str_add_escaped(&h, s->network);
            tu_str_add(&h, "\"");
        }
        if (s->frame_shape) {
            tu_str_add(&h, ",\"frame_shape\":\"");
            tu_str_add_escaped(&h, s->frame_shape);
            tu_str_add(&h, "\"");
        }
        tu_str_add(&h, ",\"producer\":\"testutil\"}");
        first = 0;
    }
    int64_t off = 0;
    for (int i = 0; i < s->n; i++) {
        const tu_tensor *t = &s->t[i];
        int64_t b = s->explicit_offsets ? t->begin : off, e = s->explicit_offsets ? t->end : off + tensor_bytes(t);
        tu_str_printf(&h, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", first ? "" : ",", t->name, t->dtype ? t->dtype : "F32");
        for (int d = 0; d < t->ndim; d++) tu_str_printf(&h, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        tu_str_printf(&h, "],\"data_offsets\":[%lld,%lld]}", (long long)b, (long long)e);
        off += tensor_bytes(t);
        first = 0;
    }
    if (s->extra_header) {
        if (!first) tu_str_add(&h, ",");
        tu_str_add(&h, s->extra_header);
    }
    tu_str_add(&h, "}");
    while (h.n % 8) tu_str_add(&h, " ");
    /* data: each tensor's bytes in order (pattern values as float32, cut or zero-extended) */
    size_t data_n = s->data_size ? s->data_size : (size_t)off + s->trailing;
    unsigned char *data = calloc(data_n ? data_n : 1, 1);
    if (!data) exit(99);
    size_t at = 0;
    const float scale = s->weight_scale != 0 ? s->weight_scale : 1.0f;
    for (int i = 0; i < s->n; i++) {
        const tu_tensor *t = &s->t[i];
        int64_t nb = tensor_bytes(t);
        for (int64_t k = 0; k < nb && at < data_n; k += 4) {
            float v = (t->values ? t->values[k / 4] : tu_pattern(k / 4 + 7 * i)) * scale;
            unsigned char bytes[4];
            memcpy(bytes, &v, 4);
            for (int j = 0; j < 4 && k + j < nb && at < data_n; j++) data[at++] = bytes[j];
        }
    }
    unsigned char *out = tu_raw((uint64_t)h.n, h.s, h.n, data, data_n, size);
    free(data);
    tu_str_free(&h);
    return out;
}

int tu_write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = (n == 0 || fwrite(data, 1, n, f) == n);
    if (fclose(f) != 0) ok = 0;
    return ok ? 0 : -1;
}

const char *tu_temp_path(const char *stem, const char *suffix, char *buf, size_t size)
{
    snprintf(buf, size, "%s.%ld.%s", stem, (long)getpid(), suffix);
    return buf;
}

co_model *tu_load_spec(const tu_spec *s)
{
    size_t n = 0;
    unsigned char *bytes = tu_build(s, &n);
    co_model *m = NULL;
    co_status st = co_model_load_memory(bytes, n, &m);
    free(bytes);
    TU_STATUS(st, CO_OK, "loading a generated model");
    return m;
}

void tu_fill(float *x, int64_t n, uint32_t seed)
{
    uint32_t r = seed * 2654435761u + 1u;
    for (int64_t i = 0; i < n; i++) {
        r = r * 1664525u + 1013904223u;
        x[i] = (float)(r >> 8) / 8388608.0f - 1.0f;
    }
}

int64_t tu_numel(const co_shape *s)
{
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++) n *= s->dims[i];
    return n;
}
