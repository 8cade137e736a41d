/*
 * safetensors.c — strict safetensors parsing. Every check names what failed; nothing is read
 * outside [bytes, bytes + size).
 */
#include "io/safetensors.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>


static const struct { const char *name; int bits; } k_dtypes[CO_DT_COUNT] = {
    [CO_DT_BOOL] = {"BOOL", 8},    [CO_DT_U8] = {"U8", 8},          [CO_DT_I8] = {"I8", 8},
    [CO_DT_F8_E5M2] = {"F8_E5M2", 8}, [CO_DT_F8_E4M3] = {"F8_E4M3", 8}, [CO_DT_F8_E8M0] = {"F8_E8M0", 8},
    [CO_DT_I16] = {"I16", 16},     [CO_DT_U16] = {"U16", 16},       [CO_DT_F16] = {"F16", 16},
    [CO_DT_BF16] = {"BF16", 16},   [CO_DT_I32] = {"I32", 32},       [CO_DT_U32] = {"U32", 32},
    [CO_DT_F32] = {"F32", 32},     [CO_DT_F64] = {"F64", 64},       [CO_DT_I64] = {"I64", 64},
    [CO_DT_U64] = {"U64", 64},     [CO_DT_F4] = {"F4", 4},          [CO_DT_F6_E2M3] = {"F6_E2M3", 6},
    [CO_DT_F6_E3M2] = {"F6_E3M2", 6},
};

const char *co_dtype_name(co_dtype dt) { return (unsigned)dt < CO_DT_COUNT ? k_dtypes[dt].name : "?"; }

static int valid_utf8(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint32_t cp;
        if (c < 0x80) { i++; continue; }
        if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
        else return 0;
        if (i + len > n) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const co_st_tensor *)a)->name, ((const co_st_tensor *)b)->name);
}

static int cmp_offset(const void *a, const void *b)
{
    const co_st_tensor *x = *(const co_st_tensor *const *)a, *y = *(const co_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* A JSON number that is an exact non-negative integer ≤ 2^53. */
static int json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || floor(d) != d) return 0;
    *out = (uint64_t)d;
    return 1;
}

static co_status parse_entry(const cJSON *item, co_st_tensor *t)
{
    const char *name = item->string;
    if (!cJSON_IsObject(item)) return co_error(CO_ERR_FORMAT, "safetensors: entry '%s' is not an object", name);
    const cJSON *dt = NULL, *shape = NULL, *offs = NULL;
    for (const cJSON *f = item->child; f; f = f->next) {
        if (strcmp(f->string, "dtype") == 0 && !dt) dt = f;
        else if (strcmp(f->string, "shape") == 0 && !shape) shape = f;
        else if (strcmp(f->string, "data_offsets") == 0 && !offs) offs = f;
        else return co_error(CO_ERR_FORMAT, "safetensors: tensor '%s' has an unknown or repeated field '%s'", name, f->string);
    }
    if (!cJSON_IsString(dt)) return co_error(CO_ERR_FORMAT, "safetensors: tensor '%s' has no dtype string", name);
    t->dtype = CO_DT_COUNT;
    for (int i = 0; i < CO_DT_COUNT; i++)
        if (strcmp(dt->valuestring, k_dtypes[i].name) == 0) t->dtype = (co_dtype)i;
    if (t->dtype == CO_DT_COUNT)
        return co_error(CO_ERR_FORMAT, "safetensors: tensor '%s' has unknown dtype '%.32s'", name, dt->valuestring);
    if (!cJSON_IsArray(shape)) return co_error(CO_ERR_FORMAT, "safetensors: tensor '%s' has no shape list", name);
    int nd = cJSON_GetArraySize(shape);
    if (nd > CO_MAX_DIMS)
        return co_error(CO_ERR_FORMAT, "safetensors: tensor '%s' has rank %d > %d", name, nd, CO_MAX_DIMS);
    t->ndim = 0;
    uint64_t numel = 1;
    for (const cJSON *d = shape->child; d; d = d->next) {
        uint64_t v;
        if (!json_uint(d, &v)) return co_error(CO_ERR_FORMAT, "safetensors: tensor '%s' has a bad dimension", name);
        t->shape[t->ndim++] = (int64_t)v;
        if (v != 0 && numel > UINT64_MAX / v)
            return co_error(CO_ERR_FORMAT, "safetensors: tensor '%s': element count overflows", name);
        numel *= v;
    }
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || !json_uint(offs->child, &t->begin) ||
        !json_uint(offs->child->next, &t->end))
        return co_error(CO_ERR_FORMAT, "safetensors: tensor '%s' needs data_offsets [begin, end]", name);
    if (t->end < t->begin) return co_error(CO_ERR_FORMAT, "safetensors: tensor '%s' has end < begin", name);
    uint64_t bits = (uint64_t)k_dtypes[t->dtype].bits;
    if (numel > UINT64_MAX / bits) return co_error(CO_ERR_FORMAT, "safetensors: tensor '%s': byte size overflows", name);
    if ((numel * bits) % 8) return co_error(CO_ERR_FORMAT, "safetensors: tensor '%s' is not a whole number of bytes", name);
    if (t->end - t->begin != numel * bits / 8)
        return co_error(CO_ERR_FORMAT, "safetensors: tensor '%s' spans %llu bytes but dtype %s x shape needs %llu", name,
                        (unsigned long long)(t->end - t->begin), k_dtypes[t->dtype].name,
                        (unsigned long long)(numel * bits / 8));
    t->name = name;
    return CO_OK;
}

co_status co_st_check_prefix(const uint8_t *bytes, size_t avail, uint64_t size)
{
    if (size < 8)
        return co_error(CO_ERR_FORMAT, "safetensors: file of %llu bytes is shorter than its 8-byte header length",
                        (unsigned long long)size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | bytes[i];
    if (n > CO_ST_MAX_HEADER)
        return co_error(CO_ERR_FORMAT, "safetensors: header length %llu exceeds the limit of %llu", (unsigned long long)n,
                        (unsigned long long)CO_ST_MAX_HEADER);
    if (n > size - 8)
        return co_error(CO_ERR_FORMAT, "safetensors: header length %llu runs past the end of the file (%llu bytes)",
                        (unsigned long long)n, (unsigned long long)size);
    if (n < 2 || (avail > 8 && bytes[8] != '{'))
        return co_error(CO_ERR_FORMAT, "safetensors: header does not start with '{'");
    return CO_OK;
}

co_status co_st_parse(const uint8_t *bytes, size_t size, co_st_file *out)
{
    memset(out, 0, sizeof *out);
    co_status pst = co_st_check_prefix(bytes, size, size);
    if (pst) return pst;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | bytes[i];
    const uint8_t *hdr = bytes + 8;
    if (!valid_utf8(hdr, (size_t)n)) return co_error(CO_ERR_FORMAT, "safetensors: header is not valid UTF-8");
    if (memchr(hdr, 0, (size_t)n)) return co_error(CO_ERR_FORMAT, "safetensors: header contains a NUL byte");

    const char *end = NULL;
    co_json_error jerr;
    cJSON *root = co_json_parse((const char *)hdr, (size_t)n, &end, &jerr);
    if (!root && jerr.status == CO_ERR_OUT_OF_MEMORY)
        return co_error(CO_ERR_OUT_OF_MEMORY, "safetensors: out of memory parsing the header");
    if (!root)
        return co_error(CO_ERR_FORMAT, "safetensors: header is not valid JSON: %s at byte %lld", jerr.what,
                        (long long)jerr.offset);
    for (const char *p = end; p < (const char *)hdr + n; p++)
        if (*p != ' ' && *p != '\n' && *p != '\t' && *p != '\r') {
            co_json_delete(root);
            return co_error(CO_ERR_FORMAT, "safetensors: header has bytes after its JSON object");
        }
    if (!cJSON_IsObject(root)) {
        co_json_delete(root);
        return co_error(CO_ERR_FORMAT, "safetensors: header is not a JSON object");
    }
    out->header = root;
    int count = 0;
    for (const cJSON *it = root->child; it; it = it->next) count++;
    out->tensors = co_calloc((size_t)(count ? count : 1), sizeof *out->tensors);
    co_st_tensor **by_offset = co_calloc((size_t)(count ? count : 1), sizeof *by_offset);
    co_status st = CO_OK;
    if (!out->tensors || !by_offset) {
        st = co_error(CO_ERR_OUT_OF_MEMORY, "safetensors: out of memory for %d entries", count);
        goto fail;
    }
    int n_meta = 0;
    for (const cJSON *it = root->child; it; it = it->next) {
        if (strcmp(it->string, "__metadata__") == 0) {
            if (n_meta++) { st = co_error(CO_ERR_FORMAT, "safetensors: duplicate __metadata__"); goto fail; }
            if (!cJSON_IsObject(it)) { st = co_error(CO_ERR_FORMAT, "safetensors: __metadata__ is not an object"); goto fail; }
            for (const cJSON *m = it->child; m; m = m->next)
                if (!cJSON_IsString(m)) {
                    st = co_error(CO_ERR_FORMAT, "safetensors: __metadata__ value '%s' is not a string", m->string);
                    goto fail;
                }
            out->metadata = it;
            continue;
        }
        co_st_tensor *t = &out->tensors[out->n_tensors];
        if ((st = parse_entry(it, t)) != CO_OK) goto fail;
        by_offset[out->n_tensors++] = t;
    }
    /* no holes, no overlaps: sorted by offset, each begins where the previous ended */
    qsort(by_offset, (size_t)out->n_tensors, sizeof *by_offset, cmp_offset);
    uint64_t pos = 0;
    for (int i = 0; i < out->n_tensors; i++) {
        if (by_offset[i]->begin != pos) {
            st = co_error(CO_ERR_FORMAT, "safetensors: tensor '%s' begins at byte %llu, expected %llu (%s)", by_offset[i]->name,
                          (unsigned long long)by_offset[i]->begin, (unsigned long long)pos,
                          by_offset[i]->begin > pos ? "hole" : "overlap");
            goto fail;
        }
        pos = by_offset[i]->end;
    }
    if (pos != (uint64_t)(size - 8 - n)) {
        st = co_error(CO_ERR_FORMAT, "safetensors: tensors cover %llu bytes but the buffer has %llu (%s)", (unsigned long long)pos,
                      (unsigned long long)(size - 8 - n), pos < size - 8 - n ? "trailing bytes" : "truncated");
        goto fail;
    }
    qsort(out->tensors, (size_t)out->n_tensors, sizeof *out->tensors, cmp_name);
    for (int i = 1; i < out->n_tensors; i++)
        if (strcmp(out->tensors[i - 1].name, out->tensors[i].name) == 0) {
            st = co_error(CO_ERR_FORMAT, "safetensors: duplicate tensor name '%s'", out->tensors[i].name);
            goto fail;
        }
    co_free(by_offset);
    out->data = hdr + n;
    out->data_size = size - 8 - n;
    return CO_OK;
fail:
    co_free(by_offset);
    co_st_free(out);
    return st;
}

void co_st_free(co_st_file *f)
{
    if (!f) return;
    co_free(f->tensors);
    if (f->header) {
        co_json_delete(f->header);
    }
    memset(f, 0, sizeof *f);
}

co_st_tensor *co_st_find(co_st_file *f, const char *name)
{
    int lo = 0, hi = f->n_tensors - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(f->tensors[mid].name, name);
        if (c == 0) return &f->tensors[mid];
        if (c < 0) lo = mid + 1; else hi = mid - 1;
    }
    return NULL;
}

int64_t co_st_numel(const co_st_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else { /* subnormal: value = man * 2^-24 */
            float v = (float)man * 5.9604644775390625e-8f;
            return sign ? -v : v;
        }
    } else if (exp == 31) bits = sign | 0x7F800000u | (man << 13);
    else bits = sign | ((exp + 112) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

co_status co_st_to_f32(const co_st_file *f, const co_st_tensor *t, float *dst)
{
    const uint8_t *src = f->data + t->begin;
    int64_t n = co_st_numel(t);
    /* little-endian file; this library targets little-endian hosts (checked at load) */
    switch (t->dtype) {
    case CO_DT_F32: memcpy(dst, src, (size_t)n * 4); return CO_OK;
    case CO_DT_F64:
        for (int64_t i = 0; i < n; i++) { double d; memcpy(&d, src + 8 * i, 8); dst[i] = (float)d; }
        return CO_OK;
    case CO_DT_F16:
        for (int64_t i = 0; i < n; i++) { uint16_t h; memcpy(&h, src + 2 * i, 2); dst[i] = half_to_float(h); }
        return CO_OK;
    case CO_DT_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h; uint32_t b; memcpy(&h, src + 2 * i, 2); b = (uint32_t)h << 16; memcpy(&dst[i], &b, 4);
        }
        return CO_OK;
    default:
        return co_error(CO_ERR_TENSOR, "tensor '%s' has dtype %s; weights must be F32, F64, F16 or BF16", t->name,
                        co_dtype_name(t->dtype));
    }
}
