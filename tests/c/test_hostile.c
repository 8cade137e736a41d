/*
 * test_hostile.c — hostile model files, generated here byte by byte. Each must fail with the
 * expected co_status and a message (naming the offending tensor / key / type where there is
 * one), from memory and from a file alike, and never crash. The valid file must load and
 * compute the right numbers.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static char g_tmp[256];

/* Loads `bytes` from memory and from a file; both must give `want` (and a message containing
 * `mention` if not NULL). A success must give a model. */
static void expect_load(const char *what, const unsigned char *bytes, size_t n, co_status want, const char *mention)
{
    for (int via_file = 0; via_file < 2; via_file++) {
        co_model *m = (co_model *)&m; /* must be reset to NULL on failure */
        co_status st;
        if (via_file) {
            if (tu_write_file(g_tmp, bytes, n)) {
                TU_CHECK(0, "%s: cannot write %s", what, g_tmp);
                continue;
            }
            st = co_model_load(g_tmp, &m);
        } else {
            st = co_model_load_memory(n ? bytes : (const unsigned char *)"", n, &m);
        }
        const char *how = via_file ? "file" : "memory";
        if (st != want) {
            TU_CHECK(0, "%s (%s): got %s, expected %s; message: %s", what, how, co_status_name(st), co_status_name(want),
                     co_last_error());
        } else if (st != CO_OK) {
            const char *msg = co_last_error();
            TU_CHECK(msg && msg[0], "%s (%s): empty co_last_error()", what, how);
            if (mention && msg) TU_CHECK(strstr(msg, mention) != NULL, "%s (%s): message '%s' does not mention '%s'", what, how, msg, mention);
            TU_CHECK(m == NULL, "%s (%s): *out not NULL after failure", what, how);
        } else {
            TU_CHECK(m != NULL, "%s (%s): CO_OK without a model", what, how);
        }
        if (st == CO_OK) co_model_free(m);
    }
}

static void expect_spec(const char *what, const tu_spec *s, co_status want, const char *mention)
{
    size_t n = 0;
    unsigned char *bytes = tu_build(s, &n);
    expect_load(what, bytes, n, want, mention);
    free(bytes);
}

/* A network JSON with Conv1d hyper-parameters replaced (printf format with one %s for the
 * Conv1d node's keys). */
static void expect_conv(const char *what, const char *conv_keys, co_status want, const char *mention)
{
    tu_str net = {0};
    tu_str_printf(&net,
                  "{\"type\":\"Sequential\",\"name\":\"\",\"children\":[{\"type\":\"Conv1d\",\"name\":\"0\",%s},"
                  "{\"type\":\"ReLU\",\"name\":\"1\"}]}",
                  conv_keys);
    tu_spec s;
    tu_small_spec(&s);
    s.network = net.s;
    expect_spec(what, &s, want, mention);
    tu_str_free(&net);
}

static void test_valid(void)
{
    tu_spec s;
    tu_small_spec(&s);
    size_t n = 0;
    unsigned char *bytes = tu_build(&s, &n);
    expect_load("valid small file", bytes, n, CO_OK, NULL);

    /* and it computes Conv1d(2,3,3,padding=1) + ReLU: output t uses inputs t-1, t, t+1 */
    co_model *m = NULL;
    TU_STATUS(co_model_load_memory(bytes, n, &m), CO_OK, "load valid");
    free(bytes);
    if (!m) return;
    TU_CHECK(co_model_param_count(m) == 21, "params %lld, expected 21", (long long)co_model_param_count(m));
    co_temporal t;
    TU_STATUS(co_model_temporal(m, &t), CO_OK, "temporal");
    TU_CHECK(t.receptive_field == 3 && t.delay == 1 && t.stride == 1 && t.padding == 1, "temporal rf %lld delay %lld",
             (long long)t.receptive_field, (long long)t.delay);
    TU_CHECK(co_model_node_count(m) == 3, "node count %d", co_model_node_count(m));
    co_node_info ni;
    TU_STATUS(co_model_node(m, 1, &ni), CO_OK, "node 1");
    TU_CHECK(strcmp(ni.path, "0") == 0 && strcmp(ni.type, "Conv1d") == 0 && ni.depth == 1 && ni.parent == 0, "node 1 is %s %s",
             ni.path, ni.type);
    TU_STATUS(co_model_node(m, 3, &ni), CO_ERR_INVALID_ARGUMENT, "node out of range");
    co_stream *st = NULL;
    TU_STATUS(co_stream_create(m, 1, &st), CO_OK, "stream");
    if (st) {
        enum { T = 6 };
        float x[T][2], y[3], w[3][2][3], b[3];
        for (int i = 0; i < 18; i++) (&w[0][0][0])[i] = tu_pattern(i);
        for (int i = 0; i < 3; i++) b[i] = tu_pattern(i + 7);
        tu_fill(&x[0][0], 2 * T, 5);
        int k = 0;
        for (int f = 0; f < T; f++) {
            int has = 0;
            TU_STATUS(co_forward_step(st, x[f], y, &has, 1), CO_OK, "step");
            if (!has) continue;
            /* output k is centred on input k */
            for (int o = 0; o < 3; o++) {
                double acc = b[o];
                for (int c = 0; c < 2; c++)
                    for (int j = 0; j < 3; j++) {
                        int ti = k - 1 + j;
                        if (ti >= 0 && ti < T) acc += (double)w[o][c][j] * x[ti][c];
                    }
                double want = acc > 0 ? acc : 0;
                TU_CHECK(fabs(y[o] - want) < 1e-5, "output %d channel %d: %g, expected %g", k, o, (double)y[o], want);
            }
            k++;
        }
        TU_CHECK(k == T - 1, "%d outputs from %d frames, expected %d", k, T, T - 1);
        co_stream_free(st);
    }
    co_model_free(m);
}

static void test_container(void)
{
    /* raw byte sequences */
    expect_load("empty file", NULL, 0, CO_ERR_FORMAT, NULL);
    expect_load("7 bytes", (const unsigned char *)"\x10\0\0\0\0\0\0", 7, CO_ERR_FORMAT, NULL);
    size_t n = 0;
    unsigned char *b = tu_raw(100, "{}", 2, NULL, 0, &n);
    expect_load("header length past the end", b, n, CO_ERR_FORMAT, "header length");
    free(b);
    b = tu_raw(100000001ull, "{}", 2, NULL, 0, &n);
    expect_load("header length > 100,000,000", b, n, CO_ERR_FORMAT, "header length");
    free(b);
    b = tu_raw(UINT64_MAX, "{}", 2, NULL, 0, &n);
    expect_load("header length 2^64-1", b, n, CO_ERR_FORMAT, "header length");
    free(b);
    b = tu_raw(8, "{abc    ", 8, NULL, 0, &n);
    expect_load("header not JSON", b, n, CO_ERR_FORMAT, NULL);
    free(b);
    b = tu_raw(8, "[1, 2]  ", 8, NULL, 0, &n);
    expect_load("header not starting with '{'", b, n, CO_ERR_FORMAT, NULL);
    free(b);
    b = tu_raw(8, "  {}    ", 8, NULL, 0, &n);
    expect_load("header starting with a space", b, n, CO_ERR_FORMAT, NULL);
    free(b);
    b = tu_raw(8, "{}\0     ", 8, NULL, 0, &n);
    expect_load("header with a NUL byte", b, n, CO_ERR_FORMAT, NULL);
    free(b);
    b = tu_raw(8, "{\"\xff\":1}  ", 8, NULL, 0, &n);
    expect_load("header not UTF-8", b, n, CO_ERR_FORMAT, NULL);
    free(b);
    b = tu_raw(8, "{}  {}  ", 8, NULL, 0, &n);
    expect_load("header with bytes after its object", b, n, CO_ERR_FORMAT, NULL);
    free(b);
    b = tu_raw(2, "{}", 2, NULL, 0, &n);
    expect_load("empty header object (no metadata)", b, n, CO_ERR_FORMAT, "__metadata__");
    free(b);

    /* every prefix of a valid file fails cleanly */
    tu_spec s;
    tu_small_spec(&s);
    unsigned char *valid = tu_build(&s, &n);
    int bad = 0;
    for (size_t len = 0; len < n; len++) {
        co_model *m = NULL;
        unsigned char *copy = malloc(len ? len : 1); /* exact size, so ASan sees any over-read */
        if (len) memcpy(copy, valid, len);
        co_status st = co_model_load_memory(copy, len, &m);
        free(copy);
        if (st != CO_ERR_FORMAT || m != NULL || !co_last_error()[0]) {
            if (bad++ < 5) TU_CHECK(0, "prefix of %zu of %zu bytes: %s (%s)", len, n, co_status_name(st), co_last_error());
        }
        co_model_free(m);
    }
    TU_CHECK(bad == 0, "%d prefixes did not fail with CO_ERR_FORMAT", bad);
    /* one of them through the file path too */
    expect_load("truncated by one byte", valid, n - 1, CO_ERR_FORMAT, NULL);
    free(valid);
}

static void test_offsets(void)
{
    tu_spec s;
    /* 0.weight: 72 bytes at [0, 72); 0.bias: 12 bytes at [72, 84) */
    tu_small_spec(&s);
    s.explicit_offsets = 1;
    s.t[0].begin = 0, s.t[0].end = 72;
    s.t[1].begin = 68, s.t[1].end = 80;
    s.data_size = 84;
    expect_spec("overlapping offsets", &s, CO_ERR_FORMAT, "0.bias");

    tu_small_spec(&s);
    s.explicit_offsets = 1;
    s.t[0].begin = 0, s.t[0].end = 72;
    s.t[1].begin = 76, s.t[1].end = 88;
    s.data_size = 88;
    expect_spec("gapped offsets", &s, CO_ERR_FORMAT, "0.bias");

    tu_small_spec(&s);
    s.explicit_offsets = 1;
    s.t[0].begin = 0, s.t[0].end = 72;
    s.t[1].begin = 84, s.t[1].end = 72;
    s.data_size = 84;
    expect_spec("end < begin", &s, CO_ERR_FORMAT, "0.bias");

    tu_small_spec(&s);
    s.explicit_offsets = 1;
    s.t[0].begin = 0, s.t[0].end = 72;
    s.t[1].begin = 72, s.t[1].end = (int64_t)1 << 60;
    s.data_size = 84;
    expect_spec("end far past the buffer", &s, CO_ERR_FORMAT, "0.bias");

    tu_small_spec(&s);
    s.explicit_offsets = 1;
    s.t[0].begin = 12, s.t[0].end = 84;
    s.t[1].begin = 0, s.t[1].end = 12;
    s.data_size = 84;
    expect_spec("offsets out of header order (valid)", &s, CO_OK, NULL);

    tu_small_spec(&s);
    s.trailing = 4;
    expect_spec("trailing bytes", &s, CO_ERR_FORMAT, "trailing");

    tu_small_spec(&s);
    s.t[1].nbytes = 8; /* 3 floats need 12 */
    expect_spec("byte size does not fit dtype x shape", &s, CO_ERR_FORMAT, "0.bias");

    tu_small_spec(&s);
    s.t[1].dtype = "F64"; /* 3 doubles need 24, 12 given */
    expect_spec("byte size does not fit F64 x shape", &s, CO_ERR_FORMAT, "0.bias");

    tu_small_spec(&s);
    s.t[1].dtype = "F33";
    expect_spec("unknown dtype", &s, CO_ERR_FORMAT, "F33");

    tu_small_spec(&s);
    s.t[1].dtype = "I32"; /* valid safetensors, but a weight must be a float */
    expect_spec("integer weight dtype", &s, CO_ERR_TENSOR, "0.bias");

    tu_small_spec(&s);
    s.t[1].ndim = 1, s.t[1].shape[0] = -3;
    s.t[1].nbytes = 12;
    expect_spec("negative dimension", &s, CO_ERR_FORMAT, "0.bias");

    tu_small_spec(&s);
    s.t[1].ndim = 2, s.t[1].shape[0] = (int64_t)1 << 40, s.t[1].shape[1] = (int64_t)1 << 40;
    s.t[1].nbytes = 12;
    expect_spec("element count overflow", &s, CO_ERR_FORMAT, "0.bias");

    tu_small_spec(&s);
    s.n = 3;
    s.t[2] = s.t[1];
    expect_spec("duplicate tensor name", &s, CO_ERR_FORMAT, "0.bias");
}

static void test_tensors(void)
{
    tu_spec s;
    tu_small_spec(&s);
    s.n = 1;
    expect_spec("missing tensor", &s, CO_ERR_TENSOR, "0.bias");

    tu_small_spec(&s);
    s.n = 3;
    s.t[2] = (tu_tensor){.name = "extra.weight", .ndim = 1, .shape = {4}};
    expect_spec("extra (unused) tensor", &s, CO_ERR_TENSOR, "extra.weight");

    tu_small_spec(&s);
    s.t[0].shape[2] = 2; /* (3, 2, 2) instead of (3, 2, 3) */
    expect_spec("wrong tensor shape", &s, CO_ERR_TENSOR, "0.weight");

    tu_small_spec(&s);
    s.t[0].ndim = 2, s.t[0].shape[0] = 3, s.t[0].shape[1] = 6;
    expect_spec("wrong tensor rank", &s, CO_ERR_TENSOR, "0.weight");

    tu_small_spec(&s);
    s.t[0].dtype = "F64", s.t[0].nbytes = 18 * 8;
    expect_spec("F64 weight (converted)", &s, CO_OK, NULL);
}

static void test_network(void)
{
    tu_spec s;
    tu_small_spec(&s);
    s.network = "{\"type\":\"Sequential\",\"name\":\"\",\"children\":[{\"type\":\"Conv9d\",\"name\":\"0\"}]}";
    expect_spec("unknown module type", &s, CO_ERR_NETWORK, "Conv9d");

    tu_small_spec(&s);
    s.network = "{\"type\":\"Sequential\",\"name\":\"\",\"children\":[{\"type\":\"ReLU\",\"name\":\"0\",\"bogus\":1}]}";
    s.n = 0;
    expect_spec("unknown key", &s, CO_ERR_NETWORK, "bogus");

    tu_small_spec(&s);
    s.network = "not json";
    expect_spec("network not JSON", &s, CO_ERR_NETWORK, NULL);

    tu_small_spec(&s);
    s.network = "[]";
    expect_spec("network not an object", &s, CO_ERR_NETWORK, NULL);

    tu_small_spec(&s);
    s.network = NULL;
    expect_spec("no network in metadata", &s, CO_ERR_FORMAT, "network");

    /* nested 10,000 deep: inside the network string, and in the header itself */
    enum { DEEP = 10000 };
    tu_str net = {0};
    for (int i = 0; i < DEEP; i++) tu_str_printf(&net, "{\"type\":\"Sequential\",\"name\":\"%s\",\"children\":[", i ? "a" : "");
    tu_str_add(&net, "{\"type\":\"ReLU\",\"name\":\"r\"}");
    for (int i = 0; i < DEEP; i++) tu_str_add(&net, "]}");
    tu_small_spec(&s);
    s.network = net.s;
    s.n = 0;
    expect_spec("network nested 10,000 deep", &s, CO_ERR_NETWORK, NULL);
    tu_str_free(&net);

    /* deeper than the loader's module limit but well within cJSON's */
    for (int i = 0; i < 100; i++) tu_str_printf(&net, "{\"type\":\"Sequential\",\"name\":\"%s\",\"children\":[", i ? "a" : "");
    tu_str_add(&net, "{\"type\":\"ReLU\",\"name\":\"r\"}");
    for (int i = 0; i < 100; i++) tu_str_add(&net, "]}");
    s.network = net.s;
    expect_spec("network nested 100 modules deep", &s, CO_ERR_NETWORK, NULL);
    tu_str_free(&net);

    tu_str deep = {0};
    tu_str_add(&deep, "\"x\":");
    for (int i = 0; i < DEEP; i++) tu_str_add(&deep, "[");
    for (int i = 0; i < DEEP; i++) tu_str_add(&deep, "]");
    tu_small_spec(&s);
    s.extra_header = deep.s;
    expect_spec("header nested 10,000 deep", &s, CO_ERR_FORMAT, NULL);
    tu_str_free(&deep);

    tu_str_add(&deep, "\"x\":");
    for (int i = 0; i < DEEP; i++) tu_str_add(&deep, "{\"a\":");
    tu_str_add(&deep, "1");
    for (int i = 0; i < DEEP; i++) tu_str_add(&deep, "}");
    tu_small_spec(&s);
    s.extra_header = deep.s;
    expect_spec("header objects nested 10,000 deep", &s, CO_ERR_FORMAT, NULL);
    tu_str_free(&deep);

    /* hyper-parameters out of range */
    static const char base[] = "\"in_channels\":2,\"out_channels\":3,\"padding\":[1],\"bias\":true";
    char keys[512];
    snprintf(keys, sizeof keys, "%s,\"kernel_size\":[-3]", base);
    expect_conv("negative kernel", keys, CO_ERR_NETWORK, "kernel_size");
    snprintf(keys, sizeof keys, "%s,\"kernel_size\":[0]", base);
    expect_conv("zero kernel", keys, CO_ERR_NETWORK, "kernel_size");
    snprintf(keys, sizeof keys, "%s,\"kernel_size\":[1000000000]", base);
    expect_conv("huge kernel", keys, CO_ERR_NETWORK, "kernel_size");
    snprintf(keys, sizeof keys, "%s,\"kernel_size\":[1e300]", base);
    expect_conv("kernel 1e300", keys, CO_ERR_NETWORK, "kernel_size");
    snprintf(keys, sizeof keys, "%s,\"kernel_size\":[2.5]", base);
    expect_conv("fractional kernel", keys, CO_ERR_NETWORK, "kernel_size");
    snprintf(keys, sizeof keys, "%s,\"kernel_size\":[\"3\"]", base);
    expect_conv("kernel as a string", keys, CO_ERR_NETWORK, "kernel_size");
    snprintf(keys, sizeof keys, "%s,\"kernel_size\":[3,3]", base);
    expect_conv("kernel list too long", keys, CO_ERR_NETWORK, "kernel_size");
    expect_conv("zero channels",
                "\"in_channels\":0,\"out_channels\":3,\"kernel_size\":[3],\"padding\":[1]", CO_ERR_NETWORK, "in_channels");
    expect_conv("negative out_channels",
                "\"in_channels\":2,\"out_channels\":-3,\"kernel_size\":[3],\"padding\":[1]", CO_ERR_NETWORK, "out_channels");
    expect_conv("groups not dividing channels",
                "\"in_channels\":2,\"out_channels\":3,\"kernel_size\":[3],\"padding\":[1],\"groups\":2", CO_ERR_NETWORK, "groups");
    expect_conv("groups 0", "\"in_channels\":2,\"out_channels\":3,\"kernel_size\":[3],\"padding\":[1],\"groups\":0",
                CO_ERR_NETWORK, "groups");
    expect_conv("stride 0", "\"in_channels\":2,\"out_channels\":3,\"kernel_size\":[3],\"padding\":[1],\"stride\":[0]",
                CO_ERR_NETWORK, "stride");
    expect_conv("negative padding", "\"in_channels\":2,\"out_channels\":3,\"kernel_size\":[3],\"padding\":[-1]",
                CO_ERR_NETWORK, "padding");
    expect_conv("unknown padding_mode",
                "\"in_channels\":2,\"out_channels\":3,\"kernel_size\":[3],\"padding\":[1],\"padding_mode\":\"circular\"",
                CO_ERR_NETWORK, "padding_mode");
    expect_conv("missing kernel_size", "\"in_channels\":2,\"out_channels\":3,\"padding\":[1]", CO_ERR_NETWORK, "kernel_size");
    expect_conv("in_channels not matching the weight",
                "\"in_channels\":1,\"out_channels\":3,\"kernel_size\":[3],\"padding\":[1]", CO_ERR_TENSOR, "0.weight");
    expect_conv("same hyper-parameters, defaults", "\"in_channels\":2,\"out_channels\":3,\"kernel_size\":3,\"padding\":1",
                CO_OK, NULL);
}

static void test_metadata(void)
{
    tu_spec s;
    tu_small_spec(&s);
    s.no_metadata = 1;
    expect_spec("missing __metadata__", &s, CO_ERR_FORMAT, "__metadata__");

    tu_small_spec(&s);
    s.format_version = "2";
    expect_spec("wrong format_version", &s, CO_ERR_FORMAT, "format_version");

    tu_small_spec(&s);
    s.format = "something-else";
    expect_spec("wrong format", &s, CO_ERR_FORMAT, "format");

    tu_small_spec(&s);
    s.frame_shape = "[0]";
    expect_spec("frame_shape with a zero", &s, CO_ERR_FORMAT, "frame_shape");

    tu_small_spec(&s);
    s.frame_shape = "nonsense";
    expect_spec("frame_shape not JSON", &s, CO_ERR_FORMAT, "frame_shape");

    tu_small_spec(&s);
    s.frame_shape = "[5]"; /* Conv1d takes 2 channels */
    expect_spec("frame_shape that does not fit the network", &s, CO_ERR_SHAPE, NULL);

    tu_small_spec(&s);
    s.frame_shape = NULL;
    expect_spec("no frame_shape (valid)", &s, CO_OK, NULL);
}

int main(void)
{
    tu_temp_path("hostile", "safetensors", g_tmp, sizeof g_tmp);
    test_valid();
    test_container();
    test_offsets();
    test_tensors();
    test_network();
    test_metadata();
    co_model *m = (co_model *)&m;
    TU_STATUS(co_model_load("/nonexistent/dir/model.safetensors", &m), CO_ERR_IO, "nonexistent path");
    TU_CHECK(m == NULL, "model not NULL after a failed load");
    TU_CHECK(strstr(co_last_error(), "/nonexistent/dir/model.safetensors") != NULL, "IO message does not name the path");
    TU_STATUS(co_model_load(NULL, &m), CO_ERR_INVALID_ARGUMENT, "NULL path");
    TU_STATUS(co_model_load_memory(NULL, 10, &m), CO_ERR_INVALID_ARGUMENT, "NULL data");
    remove(g_tmp);
    return tu_finish("test_hostile");
}
