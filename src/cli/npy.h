/*
 * npy.h — a small, strict reader/writer of NumPy .npy files (format versions 1.0, 2.0, 3.0),
 * for float32 / float64 arrays in C order. Used by the `continual` command-line tool.
 *
 * The reader validates everything it reads: the magic, the header length (bounded, and within
 * the file), the header dictionary (exactly 'descr', 'fortran_order', 'shape'), the dtype, the
 * shape (non-negative sizes whose product, times the item size, must not overflow) and the file
 * size (the data must be exactly the shape's bytes). On failure it returns -1 with a message in
 * `err`, and leaves nothing to free.
 */
#ifndef CO_CLI_NPY_H
#define CO_CLI_NPY_H

#include <stddef.h>
#include <stdint.h>

#define NPY_MAX_DIMS 32

typedef struct npy_array {
    int ndim;
    int64_t shape[NPY_MAX_DIMS];
    int64_t numel;
    float *data;   /* numel floats (float64 files are converted), malloc'ed; NULL if numel == 0 */
    int src_bytes; /* item size in the file: 4 (float32) or 8 (float64) */
} npy_array;

/* Reads `path` as float32 (converting float64). Returns 0, or -1 with a message in err. */
int npy_read_f32(const char *path, npy_array *out, char *err, size_t err_size);
/* Same from memory (the bytes of a whole .npy file). */
int npy_parse_f32(const unsigned char *bytes, size_t size, npy_array *out, char *err, size_t err_size);
void npy_free(npy_array *a);

/* Writes a float32 C-order array ('<f4'). Returns 0, or -1 with a message in err. */
int npy_write_f32(const char *path, int ndim, const int64_t *shape, const float *data, char *err, size_t err_size);

#endif
