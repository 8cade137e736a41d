/*
 * safetensors.h — a strict parser of the safetensors container (see docs/format.md).
 * Checks what the reference implementation checks, plus duplicate names and rank bounds.
 */
#ifndef CO_SAFETENSORS_H
#define CO_SAFETENSORS_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "core/op.h"
#include "io/json.h"

typedef enum co_dtype {
    CO_DT_BOOL, CO_DT_U8, CO_DT_I8, CO_DT_F8_E5M2, CO_DT_F8_E4M3, CO_DT_F8_E8M0, CO_DT_I16, CO_DT_U16,
    CO_DT_F16, CO_DT_BF16, CO_DT_I32, CO_DT_U32, CO_DT_F32, CO_DT_F64, CO_DT_I64, CO_DT_U64, CO_DT_F4,
    CO_DT_F6_E2M3, CO_DT_F6_E3M2, CO_DT_COUNT
} co_dtype;

typedef struct co_st_tensor {
    const char *name;     /* points into the parsed header (owned by co_st_file) */
    co_dtype dtype;
    int ndim;
    int64_t shape[CO_MAX_DIMS];
    uint64_t begin, end;  /* byte offsets into the data buffer */
    int claimed;          /* set by the model builder */
} co_st_tensor;

typedef struct co_st_file {
    const uint8_t *data;  /* start of the byte buffer (inside the caller's bytes) */
    uint64_t data_size;
    co_st_tensor *tensors; /* sorted by name; owned */
    int n_tensors;
    cJSON *header;        /* owned */
    const cJSON *metadata; /* __metadata__ object inside header, or NULL */
} co_st_file;

/* Largest header safetensors allows (the reference implementation's limit). */
#define CO_ST_MAX_HEADER 100000000ull

/* Checks the first `avail` bytes of a file of `size` bytes (avail >= 8 unless size < 8): the
 * header length against the limit and the file size, and, when avail > 8, the header's first
 * byte. The loader calls it before reading the rest of a file; co_st_parse calls it too. */
co_status co_st_check_prefix(const uint8_t *bytes, size_t avail, uint64_t size);

/* Parses `bytes` (kept by the caller while the file is used). On failure, nothing to free. */
co_status co_st_parse(const uint8_t *bytes, size_t size, co_st_file *out);
void co_st_free(co_st_file *f);
co_st_tensor *co_st_find(co_st_file *f, const char *name);
const char *co_dtype_name(co_dtype dt);
/* Converts a tensor of a float dtype to float32 into dst (numel floats). CO_ERR_TENSOR otherwise. */
co_status co_st_to_f32(const co_st_file *f, const co_st_tensor *t, float *dst);
int64_t co_st_numel(const co_st_tensor *t);

#endif
