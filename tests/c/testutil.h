/*
 * testutil.h — helpers shared by the C tests: the checks of check.h and TU_STATUS, a writer of
 * safetensors bytes, and the small valid model Sequential(Conv1d(2, 3, 3, padding=1), ReLU) the
 * tests build their hostile files from.
 * Only the public API (continual.h) is used.
 */
#ifndef CO_TESTUTIL_H
#define CO_TESTUTIL_H

#include <continual.h>
#include <stddef.h>
#include <stdint.h>

#include "check.h"

/* Checks `st == want`; on mismatch prints both names and co_last_error(). */
#define TU_STATUS(st, want, what)                                                                                      \
    do {                                                                                                               \
        co_status tu_st_ = (st), tu_want_ = (want);                                                                    \
        if (tu_st_ != tu_want_)                                                                                        \
            tu_fail_at(__FILE__, __LINE__, "%s: got %s, expected %s (%s)", (what), co_status_name(tu_st_),            \
                       co_status_name(tu_want_), co_last_error());                                                     \
    } while (0)

/* ---- growable strings ---- */
typedef struct tu_str {
    char *s;
    size_t n, cap;
} tu_str;
void tu_str_add(tu_str *b, const char *text);
void tu_str_addn(tu_str *b, const char *text, size_t n);
void tu_str_printf(tu_str *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* `text` as the body of a JSON string (quotes and backslashes escaped). */
void tu_str_add_escaped(tu_str *b, const char *text);
void tu_str_free(tu_str *b);

/* ---- safetensors ---- */
#define TU_MAX_TENSORS 16
typedef struct tu_tensor {
    const char *name;
    const char *dtype;     /* NULL: "F32" */
    int ndim;
    int64_t shape[CO_MAX_DIMS];
    const float *values;   /* F32 values (numel); NULL: a fixed pseudo-random pattern */
    int64_t begin, end;    /* data_offsets written when the spec has explicit_offsets */
    int64_t nbytes;        /* bytes put into the data buffer; 0: numel * 4 (F32) */
} tu_tensor;

typedef struct tu_spec {
    const char *network;        /* network JSON text, written escaped into __metadata__ */
    const char *frame_shape;    /* e.g. "[2]"; NULL: none */
    const char *format;         /* NULL: "continual-c" */
    const char *format_version; /* NULL: "1" */
    int no_metadata;            /* write no __metadata__ at all */
    const char *extra_header;   /* raw JSON members appended to the header object */
    int explicit_offsets;       /* use the tensors' begin/end instead of packing them */
    size_t trailing;            /* zero bytes appended after the data */
    size_t data_size;           /* if non-zero: the data buffer has exactly this many bytes */
    float weight_scale;         /* multiplies the pattern values (0: 1) */
    int n;
    tu_tensor t[TU_MAX_TENSORS];
} tu_spec;

/* The network JSON of the small valid model. */
extern const char tu_small_network[];
/* Fills `s` with the small valid model: Sequential(Conv1d(2,3,3,padding=1), ReLU), frame [2]. */
void tu_small_spec(tu_spec *s);
/* A richer valid model (frame [2]): Sequential(Conv1d(2,4,3,stride=2,padding=1), BatchNorm1d(4),
 * ReLU, BroadcastReduce(Conv1d(4,4,3,padding=1), Delay(1), sum), Conv1d(4,3,1)). */
void tu_medium_spec(tu_spec *s);
/* The bytes of a file (malloc'ed; *size set). */
unsigned char *tu_build(const tu_spec *s, size_t *size);
/* 8-byte little-endian `header_len` + header text + data (malloc'ed). */
unsigned char *tu_raw(uint64_t header_len, const char *header, size_t header_bytes, const void *data, size_t data_n,
                      size_t *size);
/* The pattern value the builder writes for element i of a tensor with no `values`. */
float tu_pattern(int64_t i);

/* Writes bytes to `path`; returns 0 on success. */
int tu_write_file(const char *path, const void *data, size_t n);
/* A per-process temporary file name in the working directory: "<stem>.<pid>.<suffix>". */
const char *tu_temp_path(const char *stem, const char *suffix, char *buf, size_t size);

/* Loads from memory; fails the test (and returns NULL) if that fails. */
co_model *tu_load_spec(const tu_spec *s);

/* Deterministic pseudo-random floats in [-1, 1). */
void tu_fill(float *x, int64_t n, uint32_t seed);
int64_t tu_numel(const co_shape *s);

#endif
