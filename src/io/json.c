/*
 * json.c — a strict RFC 8259 JSON parser that builds cJSON trees through the library's
 * allocator hook.
 *
 * Why not cJSON's own parser: it allocates through process-global hooks (so the library would
 * have to take over libcjson's hooks, which a host program may also use or reset) and reports
 * errors through a process-global pointer (so concurrent failing loads read each other's
 * positions). This parser keeps everything per call. The nodes are plain `cJSON` structs, so the
 * rest of the library reads them with cJSON's accessors (which never allocate); trees must be
 * freed with co_json_delete, never cJSON_Delete.
 *
 * Limits (each failure is reported with its byte offset): nesting depth CO_JSON_MAX_DEPTH,
 * at most CO_JSON_MAX_VALUES values per document, strings are valid UTF-8 with escapes decoded
 * (\u surrogate pairs joined; a lone surrogate or a NUL escape is refused), numbers follow the
 * JSON grammar exactly and are converted independently of the C locale.
 */
#include "io/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/op.h"

typedef struct parser {
    const char *s, *end, *p;
    int depth;
    int64_t values;
    co_status status; /* CO_ERR_OUT_OF_MEMORY, or CO_ERR_FORMAT for a syntax error */
    const char *what; /* the syntax error, a static string */
} parser;

static int fail(parser *ps, const char *what)
{
    if (ps->status == CO_OK) {
        ps->status = CO_ERR_FORMAT;
        ps->what = what;
    }
    return 0;
}

static int oom(parser *ps)
{
    ps->status = CO_ERR_OUT_OF_MEMORY;
    ps->what = "out of memory";
    return 0;
}

static void skip_ws(parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static cJSON *new_item(parser *ps, int type)
{
    if (++ps->values > CO_JSON_MAX_VALUES) {
        fail(ps, "too many JSON values");
        return NULL;
    }
    cJSON *it = co_calloc(1, sizeof *it);
    if (!it) {
        oom(ps);
        return NULL;
    }
    it->type = type;
    return it;
}

static int hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        const char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence at p (< end), 0 if invalid (overlong, surrogate, > U+10FFFF). */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    const unsigned c = p[0];
    size_t n;
    unsigned cp;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) { n = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { n = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { n = 4; cp = c & 0x07; }
    else return 0;
    if ((size_t)(end - p) < n) return 0;
    for (size_t k = 1; k < n; k++) {
        if ((p[k] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (p[k] & 0x3F);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

/* A string at ps->p (on the opening quote): a NUL-terminated copy, escapes decoded. */
static char *parse_string(parser *ps)
{
    const char *q = ps->p + 1;
    while (q < ps->end && *q != '"') { /* find the end first: the decoded string is never longer */
        if (*q == '\\') {
            if (q + 1 >= ps->end) break;
            q++;
        }
        q++;
    }
    if (q >= ps->end) {
        fail(ps, "unterminated string");
        return NULL;
    }
    char *out = co_alloc((size_t)(q - ps->p));
    if (!out) {
        oom(ps);
        return NULL;
    }
    size_t o = 0;
    const char *p = ps->p + 1;
    while (p < q) {
        const unsigned char c = (unsigned char)*p;
        if (c < 0x20) {
            ps->p = p;
            co_free(out);
            fail(ps, "control character in a string");
            return NULL;
        }
        if (c != '\\') {
            const size_t n = utf8_len((const unsigned char *)p, (const unsigned char *)q);
            if (!n) {
                ps->p = p;
                co_free(out);
                fail(ps, "invalid UTF-8 in a string");
                return NULL;
            }
            memcpy(out + o, p, n);
            o += n;
            p += n;
            continue;
        }
        const char e = p[1];
        p += 2;
        switch (e) {
        case '"': out[o++] = '"'; break;
        case '\\': out[o++] = '\\'; break;
        case '/': out[o++] = '/'; break;
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (q - p < 4 || !hex4(p, &cp)) goto bad_escape;
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) { /* a high surrogate must be followed by a low one */
                if (q - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                    goto bad_escape;
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if ((cp >= 0xDC00 && cp <= 0xDFFF) || cp == 0) { /* lone low surrogate; NUL would cut the string */
                goto bad_escape;
            }
            o += put_utf8(out + o, cp);
            break;
        }
        default:
            goto bad_escape;
        }
    }
    out[o] = '\0';
    ps->p = q + 1;
    return out;
bad_escape:
    ps->p = p;
    co_free(out);
    fail(ps, "invalid escape in a string");
    return NULL;
}

/* A number by the JSON grammar; converted with the C locale's decimal point replaced. */
static int parse_number(parser *ps, double *out)
{
    const char *p = ps->p, *start = p;
    if (p < ps->end && *p == '-') p++;
    if (p >= ps->end) return fail(ps, "invalid number");
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9')
        while (p < ps->end && *p >= '0' && *p <= '9') p++;
    else return fail(ps, "invalid number");
    if (p < ps->end && *p == '.') {
        p++;
        if (p >= ps->end || *p < '0' || *p > '9') return fail(ps, "invalid number");
        while (p < ps->end && *p >= '0' && *p <= '9') p++;
    }
    if (p < ps->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < ps->end && (*p == '+' || *p == '-')) p++;
        if (p >= ps->end || *p < '0' || *p > '9') return fail(ps, "invalid number");
        while (p < ps->end && *p >= '0' && *p <= '9') p++;
    }
    char buf[64];
    const size_t n = (size_t)(p - start);
    if (n >= sizeof buf) return fail(ps, "number too long");
    memcpy(buf, start, n);
    buf[n] = '\0';
    /* strtod reads the locale's decimal point: give it that character in place of '.' */
    char point[8];
    snprintf(point, sizeof point, "%.1f", 0.5);
    char *dot = strchr(buf, '.');
    if (dot) *dot = point[1];
    char *e = NULL;
    const double v = strtod(buf, &e);
    if (e != buf + n) return fail(ps, "invalid number");
    *out = v;
    ps->p = p;
    return 1;
}

static int literal(parser *ps, const char *word)
{
    const size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) return fail(ps, "invalid literal");
    ps->p += n;
    return 1;
}

static cJSON *parse_value(parser *ps);

/* Appends `it` to `parent`'s children (cJSON's layout: child->prev is the last child). */
static void append(cJSON *parent, cJSON *it)
{
    if (!parent->child) {
        parent->child = it;
        it->prev = it;
        return;
    }
    cJSON *last = parent->child->prev;
    last->next = it;
    it->prev = last;
    parent->child->prev = it;
}

static cJSON *parse_container(parser *ps, int object)
{
    if (++ps->depth > CO_JSON_MAX_DEPTH) {
        fail(ps, "nesting too deep");
        return NULL;
    }
    cJSON *c = new_item(ps, object ? cJSON_Object : cJSON_Array);
    if (!c) return NULL;
    const char close = object ? '}' : ']';
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        ps->depth--;
        return c;
    }
    for (;;) {
        char *key = NULL;
        skip_ws(ps);
        if (object) {
            if (ps->p >= ps->end || *ps->p != '"') {
                fail(ps, "expected a string key");
                break;
            }
            if (!(key = parse_string(ps))) break;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') {
                co_free(key);
                fail(ps, "expected ':'");
                break;
            }
            ps->p++;
        }
        cJSON *v = parse_value(ps);
        if (!v) {
            co_free(key);
            break;
        }
        v->string = key;
        append(c, v);
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == close) {
            ps->p++;
            ps->depth--;
            return c;
        }
        fail(ps, object ? "expected ',' or '}'" : "expected ',' or ']'");
        break;
    }
    co_json_delete(c);
    return NULL;
}

static cJSON *parse_value(parser *ps)
{
    skip_ws(ps);
    if (ps->p >= ps->end) {
        fail(ps, "unexpected end of text");
        return NULL;
    }
    cJSON *it;
    switch (*ps->p) {
    case '{': return parse_container(ps, 1);
    case '[': return parse_container(ps, 0);
    case '"': {
        if (!(it = new_item(ps, cJSON_String))) return NULL;
        if (!(it->valuestring = parse_string(ps))) {
            co_free(it);
            return NULL;
        }
        return it;
    }
    case 't':
    case 'f':
    case 'n': {
        const int kind = *ps->p == 't' ? cJSON_True : *ps->p == 'f' ? cJSON_False : cJSON_NULL;
        if (!literal(ps, kind == cJSON_True ? "true" : kind == cJSON_False ? "false" : "null")) return NULL;
        return new_item(ps, kind);
    }
    default: {
        double v = 0.0;
        if (!parse_number(ps, &v)) return NULL;
        if (!(it = new_item(ps, cJSON_Number))) return NULL;
        it->valuedouble = v;
        /* cJSON's saturating int view, for accessors that read it */
        it->valueint = v >= 2147483647.0 ? 2147483647 : v <= -2147483648.0 ? (-2147483647 - 1) : (int)v;
        return it;
    }
    }
}

cJSON *co_json_parse(const char *text, size_t len, const char **end, co_json_error *err)
{
    parser ps = {text, text + len, text, 0, 0, CO_OK, NULL};
    cJSON *root = parse_value(&ps);
    if (root && !end) { /* the whole text must be one value */
        skip_ws(&ps);
        if (ps.p != ps.end) {
            fail(&ps, "text after the JSON value");
            co_json_delete(root);
            root = NULL;
        }
    }
    if (end) *end = ps.p;
    if (err) {
        err->status = root ? CO_OK : ps.status;
        err->offset = (int64_t)(ps.p - text);
        err->what = root ? NULL : ps.what;
    }
    return root;
}

void co_json_delete(cJSON *item)
{
    while (item) { /* siblings iteratively; children recursively (depth is bounded at parse) */
        cJSON *next = item->next;
        if (item->child) co_json_delete(item->child);
        co_free(item->valuestring);
        co_free(item->string);
        co_free(item);
        item = next;
    }
}
