/*
 * json.h — JSON parsing for the model file (header and network), per call and through the
 * library's allocator hook: libcjson's global hooks and error pointer are never touched, so
 * concurrent loads and a host program's own use of cJSON do not interfere. The tree is made of
 * cJSON nodes, read with cJSON's accessors; free it with co_json_delete only.
 */
#ifndef CO_JSON_H
#define CO_JSON_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "continual.h"

/* Deepest nesting accepted (the network's own limit, 64 levels of modules, is checked later). */
#define CO_JSON_MAX_DEPTH 1000
/* Most values (objects, arrays, strings, numbers, literals) in one document: bounds the memory
 * a hostile header can make a load allocate (about 100 bytes a value). */
#define CO_JSON_MAX_VALUES 4000000

typedef struct co_json_error {
    co_status status;  /* CO_OK, CO_ERR_FORMAT (syntax, limits) or CO_ERR_OUT_OF_MEMORY */
    int64_t offset;    /* byte offset where parsing stopped */
    const char *what;  /* static text naming the syntax error, NULL on success */
} co_json_error;

/* Parses one JSON value from text[0 .. len). With `end` NULL the whole text must be that value
 * (trailing white space allowed); otherwise *end gets the first byte after it. Returns the tree
 * (owned by the caller, free with co_json_delete) or NULL, with *err (may be NULL) saying why. */
cJSON *co_json_parse(const char *text, size_t len, const char **end, co_json_error *err);

/* Frees a tree from co_json_parse (NULL is fine). */
void co_json_delete(cJSON *item);

#endif /* CO_JSON_H */
