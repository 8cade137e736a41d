/*
 * npy.c — strict .npy reading and writing (see npy.h). Never reads outside what it was given;
 * every size is checked before it is used.
 */
#include "cli/npy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPY_MAX_HEADER (1u << 20) /* a header larger than 1 MiB is not a plain array */

static int fail(char *err, size_t size, const char *fmt, ...)
{
    if (err && size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, size, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* ---- header dictionary ---- */
typedef struct hdr_info {
    int ndim;
    int64_t shape[NPY_MAX_DIMS];
    int itemsize;  /* 4 or 8 */
    int swap;      /* big-endian data */
    uint64_t nbytes;
    int64_t numel;
} hdr_info;

typedef struct cursor {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static int accept(cursor *c, char ch)
{
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

/* A quoted Python string without escapes into buf (NUL-terminated). */
static int parse_str(cursor *c, char *buf, size_t size)
{
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return 0;
    char q = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\' || n + 1 >= size) return 0;
        buf[n++] = *c->p++;
    }
    if (c->p >= c->end) return 0;
    c->p++;
    buf[n] = 0;
    return 1;
}

static int parse_word(cursor *c, const char *w)
{
    skip_ws(c);
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) >= n && memcmp(c->p, w, n) == 0) {
        c->p += n;
        return 1;
    }
    return 0;
}

static int parse_shape(cursor *c, hdr_info *h, char *err, size_t es)
{
    if (!accept(c, '(')) return fail(err, es, "npy header: 'shape' is not a tuple");
    h->ndim = 0;
    for (;;) {
        if (accept(c, ')')) break;
        skip_ws(c);
        if (c->p >= c->end || *c->p < '0' || *c->p > '9') return fail(err, es, "npy header: bad size in 'shape'");
        uint64_t v = 0;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            v = v * 10 + (uint64_t)(*c->p++ - '0');
            if (v > (uint64_t)INT64_MAX / 16) return fail(err, es, "npy header: a size in 'shape' is too large");
        }
        if (c->p < c->end && *c->p == 'L') c->p++; /* Python 2 long */
        if (h->ndim >= NPY_MAX_DIMS) return fail(err, es, "npy header: 'shape' has more than %d dims", NPY_MAX_DIMS);
        h->shape[h->ndim++] = (int64_t)v;
        if (accept(c, ',')) continue;
        if (accept(c, ')')) break;
        return fail(err, es, "npy header: malformed 'shape' tuple");
    }
    return 0;
}

static int parse_dict(const char *text, size_t len, hdr_info *h, char *err, size_t es)
{
    cursor c = {text, text + len};
    int have_descr = 0, have_order = 0, have_shape = 0, fortran = 0;
    char descr[32] = "", key[32];
    if (!accept(&c, '{')) return fail(err, es, "npy header: not a dictionary");
    for (;;) {
        if (accept(&c, '}')) break;
        if (!parse_str(&c, key, sizeof key)) return fail(err, es, "npy header: expected a quoted key");
        if (!accept(&c, ':')) return fail(err, es, "npy header: expected ':' after '%s'", key);
        if (strcmp(key, "descr") == 0 && !have_descr) {
            if (!parse_str(&c, descr, sizeof descr))
                return fail(err, es, "npy header: 'descr' is not a simple dtype string (structured arrays are not supported)");
            have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0 && !have_order) {
            if (parse_word(&c, "True")) fortran = 1;
            else if (parse_word(&c, "False")) fortran = 0;
            else return fail(err, es, "npy header: 'fortran_order' must be True or False");
            have_order = 1;
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            if (parse_shape(&c, h, err, es)) return -1;
            have_shape = 1;
        } else {
            return fail(err, es, "npy header: unknown or repeated key '%s'", key);
        }
        if (accept(&c, ',')) continue;
        if (accept(&c, '}')) break;
        return fail(err, es, "npy header: expected ',' or '}'");
    }
    skip_ws(&c);
    if (c.p != c.end) return fail(err, es, "npy header: unexpected bytes after the dictionary");
    if (!have_descr || !have_order || !have_shape)
        return fail(err, es, "npy header: needs 'descr', 'fortran_order' and 'shape'");
    if (fortran) return fail(err, es, "npy array is in Fortran order; save it in C order (np.ascontiguousarray)");
    if (strcmp(descr, "<f4") == 0) { h->itemsize = 4; h->swap = 0; }
    else if (strcmp(descr, "<f8") == 0) { h->itemsize = 8; h->swap = 0; }
    else if (strcmp(descr, ">f4") == 0) { h->itemsize = 4; h->swap = 1; }
    else if (strcmp(descr, ">f8") == 0) { h->itemsize = 8; h->swap = 1; }
    else return fail(err, es, "npy dtype '%s' is not supported: need float32 ('<f4') or float64 ('<f8')", descr);
    uint64_t numel = 1;
    for (int i = 0; i < h->ndim; i++) {
        uint64_t d = (uint64_t)h->shape[i];
        if (d && numel > ((uint64_t)INT64_MAX / 8) / d) return fail(err, es, "npy shape: element count overflows");
        numel *= d;
    }
    if (numel > (uint64_t)SIZE_MAX / 8) return fail(err, es, "npy shape: array too large for this machine");
    h->numel = (int64_t)numel;
    h->nbytes = numel * (uint64_t)h->itemsize;
    return 0;
}

/* Preamble: magic, version, header length. Returns the preamble size (10 or 12), or -1. */
static int parse_preamble(const unsigned char *b, size_t avail, uint64_t *hlen, char *err, size_t es)
{
    static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
    if (avail < 10 || memcmp(b, magic, 6) != 0) return fail(err, es, "not a .npy file (bad magic)");
    if (b[6] == 1) {
        *hlen = (uint64_t)b[8] | ((uint64_t)b[9] << 8);
        return 10;
    }
    if (b[6] == 2 || b[6] == 3) {
        if (avail < 12) return fail(err, es, "truncated .npy preamble");
        *hlen = (uint64_t)b[8] | ((uint64_t)b[9] << 8) | ((uint64_t)b[10] << 16) | ((uint64_t)b[11] << 24);
        return 12;
    }
    return fail(err, es, ".npy format version %d.%d is not supported (1.0, 2.0, 3.0 are)", b[6], b[7]);
}

static void convert(const unsigned char *src, const hdr_info *h, float *dst)
{
    for (int64_t i = 0; i < h->numel; i++) {
        unsigned char tmp[8];
        memcpy(tmp, src + (size_t)i * (size_t)h->itemsize, (size_t)h->itemsize);
        if (h->swap)
            for (int a = 0, b = h->itemsize - 1; a < b; a++, b--) {
                unsigned char t = tmp[a];
                tmp[a] = tmp[b];
                tmp[b] = t;
            }
        if (h->itemsize == 4) memcpy(&dst[i], tmp, 4);
        else {
            double d;
            memcpy(&d, tmp, 8);
            dst[i] = (float)d;
        }
    }
}

static int fill_out(const hdr_info *h, npy_array *out)
{
    out->ndim = h->ndim;
    for (int i = 0; i < h->ndim; i++) out->shape[i] = h->shape[i];
    out->numel = h->numel;
    out->src_bytes = h->itemsize;
    out->data = NULL;
    return 0;
}

int npy_parse_f32(const unsigned char *bytes, size_t size, npy_array *out, char *err, size_t es)
{
    memset(out, 0, sizeof *out);
    uint64_t hlen = 0;
    int pre = parse_preamble(bytes, size, &hlen, err, es);
    if (pre < 0) return -1;
    if (hlen > NPY_MAX_HEADER) return fail(err, es, "npy header length %llu is too large", (unsigned long long)hlen);
    if (hlen > size - (size_t)pre) return fail(err, es, "npy header length %llu runs past the end of the file", (unsigned long long)hlen);
    hdr_info h;
    memset(&h, 0, sizeof h);
    if (parse_dict((const char *)bytes + pre, (size_t)hlen, &h, err, es)) return -1;
    size_t data_at = (size_t)pre + (size_t)hlen;
    if (size - data_at != h.nbytes)
        return fail(err, es, "npy file holds %zu data bytes but its shape and dtype need %llu", size - data_at,
                    (unsigned long long)h.nbytes);
    fill_out(&h, out);
    if (h.numel) {
        out->data = malloc((size_t)h.numel * sizeof(float));
        if (!out->data) return fail(err, es, "out of memory for %lld floats", (long long)h.numel);
        convert(bytes + data_at, &h, out->data);
    }
    return 0;
}

int npy_read_f32(const char *path, npy_array *out, char *err, size_t es)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return fail(err, es, "cannot open '%s': %s", path, strerror(errno));
    long long fsize = -1;
    if (fseek(f, 0, SEEK_END) == 0) fsize = ftell(f);
    if (fsize < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return fail(err, es, "cannot determine the size of '%s' (not a regular file?)", path);
    }
    unsigned char pre_buf[12];
    size_t got = fread(pre_buf, 1, sizeof pre_buf, f);
    uint64_t hlen = 0;
    int pre = parse_preamble(pre_buf, got, &hlen, err, es);
    if (pre < 0) {
        fclose(f);
        return -1;
    }
    if (hlen > NPY_MAX_HEADER || (long long)hlen > fsize - pre) {
        fclose(f);
        return fail(err, es, "npy header length %llu is too large or runs past the end of '%s'", (unsigned long long)hlen, path);
    }
    char *text = malloc((size_t)hlen + 1);
    if (!text) {
        fclose(f);
        return fail(err, es, "out of memory");
    }
    if (fseek(f, pre, SEEK_SET) != 0 || fread(text, 1, (size_t)hlen, f) != (size_t)hlen) {
        free(text);
        fclose(f);
        return fail(err, es, "short read on '%s'", path);
    }
    hdr_info h;
    memset(&h, 0, sizeof h);
    int rc = parse_dict(text, (size_t)hlen, &h, err, es);
    free(text);
    if (rc) {
        fclose(f);
        return -1;
    }
    uint64_t avail = (uint64_t)fsize - (uint64_t)pre - hlen;
    if (avail != h.nbytes) {
        fclose(f);
        return fail(err, es, "'%s' holds %llu data bytes but its shape and dtype need %llu", path, (unsigned long long)avail,
                    (unsigned long long)h.nbytes);
    }
    fill_out(&h, out);
    if (h.numel) {
        out->data = malloc((size_t)h.numel * sizeof(float));
        unsigned char *raw = h.itemsize == 4 && !h.swap ? (unsigned char *)out->data : malloc((size_t)h.nbytes);
        if (!out->data || !raw) {
            if (raw != (unsigned char *)out->data) free(raw);
            free(out->data);
            out->data = NULL;
            fclose(f);
            return fail(err, es, "out of memory for %lld elements of '%s'", (long long)h.numel, path);
        }
        if (fread(raw, 1, (size_t)h.nbytes, f) != (size_t)h.nbytes) {
            if (raw != (unsigned char *)out->data) free(raw);
            free(out->data);
            out->data = NULL;
            fclose(f);
            return fail(err, es, "short read on '%s'", path);
        }
        if (raw != (unsigned char *)out->data) {
            convert(raw, &h, out->data);
            free(raw);
        }
    }
    fclose(f);
    return 0;
}

void npy_free(npy_array *a)
{
    if (!a) return;
    free(a->data);
    a->data = NULL;
}

int npy_write_f32(const char *path, int ndim, const int64_t *shape, const float *data, char *err, size_t es)
{
    if (ndim < 0 || ndim > NPY_MAX_DIMS) return fail(err, es, "cannot write a %d-dim array", ndim);
    char dict[32 * 24 + 128];
    int n = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return fail(err, es, "negative size in the shape to write");
        if (shape[i] && numel > ((uint64_t)INT64_MAX / 4) / (uint64_t)shape[i]) return fail(err, es, "shape to write overflows");
        numel *= (uint64_t)shape[i];
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%lld,%s", (long long)shape[i], i + 1 < ndim ? " " : "");
    }
    n += snprintf(dict + n, sizeof dict - (size_t)n, "), }");
    /* v1.0: 10-byte preamble; header padded with spaces and ended by '\n' to a multiple of 64 */
    size_t total = 10 + (size_t)n + 1;
    size_t pad = (64 - total % 64) % 64;
    size_t hlen = (size_t)n + pad + 1;
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 0xFF), (unsigned char)(hlen >> 8)};
    FILE *f = fopen(path, "wb");
    if (!f) return fail(err, es, "cannot create '%s': %s", path, strerror(errno));
    int ok = fwrite(pre, 1, 10, f) == 10 && fwrite(dict, 1, (size_t)n, f) == (size_t)n;
    for (size_t i = 0; ok && i < pad; i++) ok = fputc(' ', f) != EOF;
    ok = ok && fputc('\n', f) != EOF;
    if (ok && numel) ok = fwrite(data, sizeof(float), (size_t)numel, f) == (size_t)numel;
    if (fclose(f) != 0) ok = 0;
    if (!ok) return fail(err, es, "error writing '%s': %s", path, strerror(errno));
    return 0;
}
