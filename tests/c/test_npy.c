/*
 * test_npy.c — the CLI's .npy reader/writer (src/cli/npy.c) on valid and hostile files:
 * round trips, float64 / big-endian conversion, v2.0 headers, and rejection (never a crash)
 * of bad magic, every truncation, bad header lengths, Fortran order, other dtypes, malformed
 * or overflowing shapes, and data of the wrong size.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/npy.h"
#include "testutil.h"

/* A .npy file: version, header dict (padded to 64 with spaces + '\n'), data. */
static unsigned char *make_npy(int major, const char *dict, const void *data, size_t data_n, size_t *size)
{
    size_t pre = major == 1 ? 10 : 12, dn = strlen(dict);
    size_t hlen = dn + 1;
    while ((pre + hlen) % 64) hlen++;
    *size = pre + hlen + data_n;
    unsigned char *b = malloc(*size);
    if (!b) exit(99);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (unsigned char)major;
    b[7] = 0;
    for (size_t i = 0; i < pre - 8; i++) b[8 + i] = (unsigned char)(hlen >> (8 * i));
    memcpy(b + pre, dict, dn);
    memset(b + pre + dn, ' ', hlen - dn - 1);
    b[pre + hlen - 1] = '\n';
    if (data_n) memcpy(b + pre + hlen, data, data_n);
    return b;
}

static char g_tmp[256];

/* Parses from memory and from a file; both must agree with `ok`; the error must mention `mention`. */
static void expect(const char *what, const unsigned char *b, size_t n, int ok, const char *mention, npy_array *keep)
{
    for (int via_file = 0; via_file < 2; via_file++) {
        npy_array a;
        char err[512] = "";
        int rc;
        if (via_file) {
            if (tu_write_file(g_tmp, b, n)) {
                TU_CHECK(0, "cannot write %s", g_tmp);
                continue;
            }
            rc = npy_read_f32(g_tmp, &a, err, sizeof err);
        } else {
            unsigned char *copy = malloc(n ? n : 1); /* exact size for ASan */
            if (!copy) exit(99);
            if (n) memcpy(copy, b, n);
            rc = npy_parse_f32(copy, n, &a, err, sizeof err);
            free(copy);
        }
        const char *how = via_file ? "file" : "memory";
        if (ok) {
            TU_CHECK(rc == 0, "%s (%s): rejected: %s", what, how, err);
        } else {
            TU_CHECK(rc != 0, "%s (%s): accepted", what, how);
            TU_CHECK(err[0] != 0, "%s (%s): no message", what, how);
            if (mention) TU_CHECK(strstr(err, mention) != NULL, "%s (%s): message '%s' does not mention '%s'", what, how, err, mention);
        }
        if (rc == 0 && keep && !via_file) *keep = a;
        else if (rc == 0) npy_free(&a);
    }
}

int main(void)
{
    tu_temp_path("npy", "npy", g_tmp, sizeof g_tmp);
    char err[512];

    /* round trips through the writer */
    static const int64_t shapes[][4] = {{2, 3, 4, 5}, {7, 0, 0, 0}, {2, 0, 3, 0}};
    static const int ndims[] = {4, 1, 3};
    for (int k = 0; k < 3; k++) {
        int64_t numel = 1;
        for (int i = 0; i < ndims[k]; i++) numel *= shapes[k][i];
        float *x = malloc((size_t)(numel ? numel : 1) * sizeof(float));
        if (!x) return 99;
        tu_fill(x, numel, (uint32_t)k);
        TU_CHECK(npy_write_f32(g_tmp, ndims[k], shapes[k], x, err, sizeof err) == 0, "write: %s", err);
        npy_array a;
        TU_CHECK(npy_read_f32(g_tmp, &a, err, sizeof err) == 0, "read back: %s", err);
        TU_CHECK(a.ndim == ndims[k] && a.numel == numel, "round trip %d: ndim %d numel %lld", k, a.ndim, (long long)a.numel);
        for (int i = 0; i < a.ndim && i < ndims[k]; i++) TU_CHECK(a.shape[i] == shapes[k][i], "round trip %d: dim %d", k, i);
        if (a.numel == numel && numel) TU_CHECK(memcmp(a.data, x, (size_t)numel * sizeof(float)) == 0, "round trip %d: data", k);
        npy_free(&a);
        free(x);
    }
    /* 0-d */
    float scalar = 3.5f;
    TU_CHECK(npy_write_f32(g_tmp, 0, NULL, &scalar, err, sizeof err) == 0, "write 0-d: %s", err);
    npy_array a0;
    TU_CHECK(npy_read_f32(g_tmp, &a0, err, sizeof err) == 0 && a0.ndim == 0 && a0.numel == 1 && a0.data[0] == 3.5f, "0-d: %s", err);
    npy_free(&a0);

    /* hand-made files */
    const float f4[6] = {1, 2, 3, 4, 5, 6};
    const double f8[6] = {1, 2, 3, 4, 5, 6.5};
    size_t n;
    unsigned char *b;
    npy_array got;
    memset(&got, 0, sizeof got);

    b = make_npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", f8, sizeof f8, &n);
    expect("float64", b, n, 1, NULL, &got);
    TU_CHECK(got.numel == 6 && got.data && got.data[5] == 6.5f && got.src_bytes == 8, "float64 converted");
    npy_free(&got);
    free(b);

    unsigned char be[24];
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 4; j++) be[4 * i + j] = ((const unsigned char *)&f4[i])[3 - j];
    b = make_npy(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (6,), }", be, sizeof be, &n);
    expect("big-endian float32", b, n, 1, NULL, &got);
    TU_CHECK(got.numel == 6 && got.data && got.data[3] == 4.0f, "big-endian converted");
    npy_free(&got);
    free(b);

    b = make_npy(2, "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (1, 2, 3)}", f4, sizeof f4, &n);
    expect("v2.0 header, double quotes, no trailing comma", b, n, 1, NULL, NULL);
    /* every prefix of it fails */
    int bad = 0;
    for (size_t len = 0; len < n; len++) {
        npy_array a;
        unsigned char *copy = malloc(len ? len : 1);
        if (!copy) return 99;
        if (len) memcpy(copy, b, len);
        if (npy_parse_f32(copy, len, &a, err, sizeof err) == 0) {
            bad++;
            npy_free(&a);
        }
        free(copy);
    }
    TU_CHECK(bad == 0, "%d truncated prefixes were accepted", bad);
    expect("truncated by one byte", b, n - 1, 0, "data bytes", NULL);
    free(b);

    b = make_npy(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", f4, sizeof f4, &n);
    expect("fortran order", b, n, 0, "Fortran", NULL);
    free(b);
    b = make_npy(1, "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", f8, 24, &n);
    expect("int64", b, n, 0, "<i8", NULL);
    free(b);
    b = make_npy(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (3,), }", f4, 6, &n);
    expect("float16", b, n, 0, "<f2", NULL);
    free(b);
    b = make_npy(1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }", f4, 12, &n);
    expect("structured dtype", b, n, 0, "structured", NULL);
    free(b);
    b = make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", f4, 20, &n);
    expect("data too short", b, n, 0, "data bytes", NULL);
    free(b);
    unsigned char more[32] = {0};
    b = make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", more, 28, &n);
    expect("trailing data", b, n, 0, "data bytes", NULL);
    free(b);
    b = make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4611686018427387904), }", f4, 8, &n);
    expect("shape product overflow", b, n, 0, NULL, NULL);
    free(b);
    b = make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }", f4, 8, &n);
    expect("huge size", b, n, 0, NULL, NULL);
    free(b);
    b = make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3), }", f4, 24, &n);
    expect("negative size", b, n, 0, "shape", NULL);
    free(b);
    b = make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, }", f4, 24, &n);
    expect("unclosed shape", b, n, 0, NULL, NULL);
    free(b);
    b = make_npy(1, "{'descr': '<f4', 'fortran_order': False, }", f4, 24, &n);
    expect("no shape", b, n, 0, "shape", NULL);
    free(b);
    b = make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'extra': 1, }", f4, 24, &n);
    expect("unknown key", b, n, 0, "extra", NULL);
    free(b);
    b = make_npy(1, "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", f4, 24, &n);
    expect("repeated key", b, n, 0, "descr", NULL);
    free(b);
    b = make_npy(1, "['descr', '<f4']", f4, 24, &n);
    expect("header not a dict", b, n, 0, NULL, NULL);
    free(b);
    b = make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), } junk", f4, 24, &n);
    expect("bytes after the dict", b, n, 0, NULL, NULL);
    free(b);
    tu_str many = {0};
    tu_str_add(&many, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < 40; i++) tu_str_add(&many, "1, ");
    tu_str_add(&many, "), }");
    b = make_npy(1, many.s, f4, 4, &n);
    expect("40 dims", b, n, 0, "dims", NULL);
    free(b);
    tu_str_free(&many);

    b = make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", f4, 24, &n);
    expect("valid", b, n, 1, NULL, NULL);
    b[0] = 'X';
    expect("bad magic", b, n, 0, "magic", NULL);
    b[0] = 0x93;
    b[6] = 9;
    expect("version 9", b, n, 0, "version", NULL);
    b[6] = 1;
    b[8] = 0xff, b[9] = 0xff;
    expect("header length past the end", b, n, 0, "header length", NULL);
    free(b);
    b = make_npy(2, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", f4, 24, &n);
    b[11] = 0x7f;
    expect("v2 header length 2 GiB", b, n, 0, "header length", NULL);
    free(b);
    expect("empty file", (const unsigned char *)"", 0, 0, NULL, NULL);

    npy_array none;
    TU_CHECK(npy_read_f32("/nonexistent/x.npy", &none, err, sizeof err) != 0 && strstr(err, "/nonexistent/x.npy"),
             "nonexistent file: %s", err);
    TU_CHECK(npy_write_f32("/nonexistent/dir/x.npy", 1, (const int64_t[]){1}, f4, err, sizeof err) != 0, "write to a bad path");
    remove(g_tmp);
    return tu_finish("test_npy");
}
