/*
 * continual.h — public API of libcontinual, a C11 runtime for Continual Inference Networks.
 *
 * A network trained in PyTorch (torch.nn or the `continual` package) is exported to one
 * safetensors file (weights named as in the state_dict, the network as JSON in __metadata__).
 *
 *   co_model  : weights + the network compiled into a flat step plan. Read-only after
 *               co_model_load(); one model may be shared by any number of threads.
 *   co_stream : the state of one live stream (ring buffers, phase counters) and all scratch,
 *               in one arena allocated by co_stream_create(). Stepping allocates nothing.
 *
 * Tensors are float32, C-contiguous, in the PyTorch layout:
 *   clip  (B, C, T, *S)   — time is always dim 2
 *   frame (B, C, *S)      — one step: the clip with dim 2 removed
 *
 * Every call returns a co_status. On failure the call leaves a readable message, retrieved
 * with co_last_error() (per thread), and leaves the stream exactly as it was.
 * The library never aborts, never prints and never exits.
 */
#ifndef CONTINUAL_H
#define CONTINUAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(CO_BUILD_SHARED)
#define CO_API __declspec(dllexport)
#elif defined(__GNUC__)
#define CO_API __attribute__((visibility("default")))
#else
#define CO_API
#endif

#define CO_VERSION_MAJOR 0
#define CO_VERSION_MINOR 1
#define CO_VERSION_PATCH 0
/* The same as one number (MAJOR * 10000 + MINOR * 100 + PATCH) and as a string. */
#define CO_VERSION_NUMBER (CO_VERSION_MAJOR * 10000 + CO_VERSION_MINOR * 100 + CO_VERSION_PATCH)
#define CO_VERSION_STR_(a, b, c) #a "." #b "." #c
#define CO_VERSION_STR_EXPAND_(a, b, c) CO_VERSION_STR_(a, b, c)
#define CO_VERSION_STRING CO_VERSION_STR_EXPAND_(CO_VERSION_MAJOR, CO_VERSION_MINOR, CO_VERSION_PATCH)

/* Named values of the int flags that co_forward_step(s) and co_forward_step_streams take (plain
 * 0 / 1 stay valid): update_state is CO_UPDATE_STATE or CO_PEEK, pad_end is CO_PAD_END or
 * CO_NO_PAD_END. */
enum { CO_PEEK = 0, CO_UPDATE_STATE = 1 };
enum { CO_NO_PAD_END = 0, CO_PAD_END = 1 };

/* Largest tensor rank the library handles: (B, C, T, D, H, W) plus one spare. */
#define CO_MAX_DIMS 8

typedef enum co_status {
    CO_OK = 0,
    CO_ERR_INVALID_ARGUMENT = 1, /* NULL pointer, bad enum, wrong size argument */
    CO_ERR_OUT_OF_MEMORY = 2,    /* the allocator returned NULL */
    CO_ERR_IO = 3,               /* the file could not be opened or read */
    CO_ERR_FORMAT = 4,           /* the file is not a valid safetensors file */
    CO_ERR_NETWORK = 5,          /* the network JSON is invalid (unknown module, bad value) */
    CO_ERR_TENSOR = 6,           /* a weight is missing, unused, of the wrong shape or dtype */
    CO_ERR_SHAPE = 7,            /* an input shape does not fit the network */
    CO_ERR_BUFFER_TOO_SMALL = 8, /* a caller buffer is smaller than needed */
    CO_ERR_STATE = 9,            /* a saved state does not belong to this stream's model */
    CO_ERR_UNSUPPORTED = 10      /* valid, but not (yet) supported by this library */
} co_status;

/* Version of the library loaded at run time (which may differ from the header compiled against):
 * CO_VERSION_NUMBER and CO_VERSION_STRING of its build. Never fail; the string is static. */
CO_API int co_version(void);
CO_API const char *co_version_string(void);

/* Short name of a status code ("CO_ERR_SHAPE"); never NULL. */
CO_API const char *co_status_name(co_status status);

/* Message of the last failed call on this thread (empty if none). The string is owned by the
 * library and valid until the next call on this thread. */
CO_API const char *co_last_error(void);

/* ---- Allocator hook ------------------------------------------------------------------------
 * Every allocation of the library goes through this hook (default: malloc/free). The hook is
 * PROCESS-WIDE and not synchronised: set it once, before any other call of the library on any
 * thread (setting it while another thread loads a model or creates a stream is a data race);
 * objects must be freed with the allocator they were created with. `alloc` must return memory
 * aligned to at least 16 bytes (the library aligns its arenas itself to 64). Passing NULL restores
 * malloc/free. Statuses: CO_OK; CO_ERR_INVALID_ARGUMENT when only one of alloc and free is set. */
typedef struct co_allocator {
    void *(*alloc)(size_t size, void *user);
    void (*free)(void *ptr, void *user);
    void *user;
} co_allocator;
CO_API co_status co_set_allocator(const co_allocator *allocator);

/* ---- Shapes --------------------------------------------------------------------------------- */
typedef struct co_shape {
    int ndim;
    int64_t dims[CO_MAX_DIMS];
} co_shape;

/* ---- Model -------------------------------------------------------------------------------- */
typedef struct co_model co_model;

/* Loads and compiles a model file. On success *out is a new model owned by the caller
 * (free with co_model_free). On failure *out is NULL and nothing is left allocated.
 * Statuses: CO_ERR_INVALID_ARGUMENT (NULL path or out), CO_ERR_IO (cannot open or read; not a
 * regular file: a directory, FIFO or device is refused without blocking), CO_ERR_FORMAT (not a
 * valid safetensors / continual-c file: header length, JSON, metadata), CO_ERR_NETWORK (unknown
 * module type, bad or unknown key, a callback the file names but the options do not give),
 * CO_ERR_TENSOR (a tensor missing, of the wrong shape or dtype, or unused), CO_ERR_UNSUPPORTED
 * (valid but not supported, e.g. a recurrence after outputs lost to padding), CO_ERR_OUT_OF_MEMORY. */
CO_API co_status co_model_load(const char *path, co_model **out);
/* Callbacks a model file may name (Conditional predicates, Lambda functions). They are looked
 * up by name at load: a file naming one that is not given fails with CO_ERR_NETWORK.
 * A predicate returns non-zero for "true"; it sees one frame (B, C, *S) in step mode or the
 * clip (B, C, T, *S) in forward. A lambda maps x to y of the same shape, element-wise or
 * frame-wise; it must be pure (it may be called again for peeks and end padding). */
typedef int (*co_predicate_fn)(const float *x, const co_shape *shape, void *user);
typedef void (*co_lambda_fn)(const float *x, const co_shape *shape, float *y, void *user);
typedef struct co_callback {
    const char *name;          /* as recorded by the exporter */
    co_predicate_fn predicate; /* set one of the two */
    co_lambda_fn lambda;
    void *user;                /* passed back to the function; owned by the caller */
} co_callback;
typedef struct co_load_options {
    const co_callback *callbacks; /* copied by the model at load */
    int n_callbacks;
    /* Largest arena a stream of this model may request (state, shadow, buffers, scratch), in
     * bytes; 0: CO_DEFAULT_MAX_ARENA_BYTES. co_stream_create refuses a bigger one with
     * CO_ERR_SHAPE naming both sizes, so a file's frame shape cannot make it allocate any size. */
    size_t max_arena_bytes;
    /* CO_LOAD_* bits (0: the defaults). An unknown bit is CO_ERR_INVALID_ARGUMENT. */
    unsigned flags;
} co_load_options;
/* Convolutions by the direct method only. By default a dense 3x3 spatial convolution (stride 1,
 * dilation 1, groups 1, zero padding, >= 16 channels in and out) uses Winograd F(4x4, 3x3): about
 * 4x fewer multiplies, at a rounding error that grows with the input channels (relative to the
 * largest output, against a float64 convolution: ~5e-6 at 64 channels, ~1.3e-5 at 512, where
 * torch.nn's direct float32 convolution gives ~5e-7). This flag keeps torch's rounding. */
#define CO_LOAD_DIRECT_CONV 1u
#define CO_LOAD_KNOWN_FLAGS CO_LOAD_DIRECT_CONV
#define CO_DEFAULT_MAX_ARENA_BYTES ((size_t)4 << 30)
/* As co_model_load / co_model_load_memory with options (NULL: none); same statuses. */
CO_API co_status co_model_load_ex(const char *path, const co_load_options *options, co_model **out);
CO_API co_status co_model_load_memory_ex(const void *data, size_t size, const co_load_options *options,
                                         co_model **out);

/* Same, from a memory buffer (the model copies what it keeps; `data` stays the caller's). Same
 * statuses but CO_ERR_IO. */
CO_API co_status co_model_load_memory(const void *data, size_t size, co_model **out);
CO_API void co_model_free(co_model *model); /* NULL is a no-op; free its streams first */

/* Temporal properties of the whole network (as the reference's properties of the root). */
typedef struct co_temporal {
    int64_t receptive_field;
    int64_t delay;   /* rf - 1 - padding unless the module defines otherwise */
    int64_t stride;
    int64_t padding;
} co_temporal;
/* Statuses: CO_ERR_INVALID_ARGUMENT (NULL argument). */
CO_API co_status co_model_temporal(const co_model *model, co_temporal *out);

/* The frame shape (C, *S) recorded in the file by the exporter, without batch.
 * Statuses: CO_ERR_INVALID_ARGUMENT (NULL argument), CO_ERR_SHAPE if the file records none (then
 * use co_stream_create_shaped). */
CO_API co_status co_model_frame_shape(const co_model *model, co_shape *frame_shape);

/* Number of parameters (float weights) and the network's node tree.
 * Nodes are numbered in pre-order; node 0 is the root. */
/* The file's free-text description (metadata "description", e.g. what the model is and the
 * figures its paper gives), or "" when it has none. Owned by the model. Never NULL. */
CO_API const char *co_model_description(const co_model *model);
CO_API int64_t co_model_param_count(const co_model *model);
CO_API int co_model_node_count(const co_model *model);
typedef struct co_node_info {
    const char *path;  /* state_dict prefix, "" for the root; owned by the model */
    const char *type;  /* "Conv3d", "Sequential", ... ; owned by the model */
    int depth;         /* 0 for the root */
    int parent;        /* -1 for the root */
    int64_t params;    /* parameters of this node and its children */
    co_temporal temporal;
} co_node_info;
/* Statuses: CO_ERR_INVALID_ARGUMENT (NULL argument, index outside [0, co_model_node_count)). */
CO_API co_status co_model_node(const co_model *model, int index, co_node_info *out);

/* Description of the plan for `batch` streams of the given frame shape (C, *S); pass
 * frame_shape NULL for the file's. Any pointer may be NULL. */
typedef struct co_plan_info {
    co_shape output_frame;  /* (B, C', *S') of one step's output */
    int64_t macs_per_step;  /* multiply-accumulates of one step in steady state, all ops */
    size_t state_bytes;     /* stream state (what save/restore moves), without header */
    size_t arena_bytes;     /* whole per-stream arena: state, its shadow, buffers, scratch */
    int num_ops;
} co_plan_info;
/* Statuses: CO_ERR_INVALID_ARGUMENT (NULL model or out, batch outside [1, 2^20]), CO_ERR_SHAPE
 * (a frame shape the network cannot take, or none recorded and none given), CO_ERR_UNSUPPORTED,
 * CO_ERR_OUT_OF_MEMORY (its temporaries). */
CO_API co_status co_model_plan_info(const co_model *model, int batch, const co_shape *frame_shape,
                                    co_plan_info *out);

/* forward: the whole clip (B, C, T, *S) at once; exactly what torch.nn gives for the clip.
 * Reads and writes no stream state. Allocates its temporaries through the allocator hook.
 * Statuses: CO_ERR_INVALID_ARGUMENT (NULL argument), CO_ERR_SHAPE (a clip the network cannot
 * take, e.g. shorter than a kernel), CO_ERR_BUFFER_TOO_SMALL (y_capacity below the output's
 * size, co_forward_shape), CO_ERR_UNSUPPORTED, CO_ERR_OUT_OF_MEMORY. */
CO_API co_status co_forward_shape(const co_model *model, const co_shape *in, co_shape *out);
CO_API co_status co_forward(const co_model *model, const co_shape *in, const float *x, float *y,
                            size_t y_capacity /* floats */);

/* ---- Streams ------------------------------------------------------------------------------ */
typedef struct co_stream co_stream;

/* A stream of `batch` parallel sequences, frame shape from the file. *out owned by the caller
 * (free with co_stream_free, before the model); NULL on failure.
 * Statuses: CO_ERR_INVALID_ARGUMENT (NULL argument, batch outside [1, 2^20]), CO_ERR_SHAPE (no
 * frame shape recorded; a frame shape the network cannot take; an arena above
 * co_load_options.max_arena_bytes), CO_ERR_UNSUPPORTED, CO_ERR_OUT_OF_MEMORY. */
CO_API co_status co_stream_create(const co_model *model, int batch, co_stream **out);
/* Same for an explicit frame shape (C, *S), without batch; same statuses. */
CO_API co_status co_stream_create_shaped(const co_model *model, int batch, const co_shape *frame_shape,
                                         co_stream **out);
/* Free every stream of a model before the model (a stream reads the model it was made from). */
CO_API void co_stream_free(co_stream *stream); /* NULL is a no-op; before freeing its model */

CO_API const co_model *co_stream_model(const co_stream *stream);
/* Shapes of one input frame (B, C, *S) and one output frame (B, C', *S').
 * Statuses: CO_ERR_INVALID_ARGUMENT (NULL argument). */
CO_API co_status co_stream_input_shape(const co_stream *stream, co_shape *out);
CO_API co_status co_stream_output_shape(const co_stream *stream, co_shape *out);

/* One frame in (B, C, *S) → `y` gets one output frame when *has_output is set to 1.
 * `y` must hold co_stream_output_shape() floats. With update_state = 0 the call is a pure
 * peek: same output, the state is left bit-identical. Allocates nothing.
 * Statuses: CO_ERR_INVALID_ARGUMENT (NULL argument; the stream is then untouched). */
CO_API co_status co_forward_step(co_stream *stream, const float *x, float *y, int *has_output,
                                 int update_state);

/* A clip (B, C, T, *S) stepped frame by frame; the outputs that appear are written to `y` as a
 * clip (B, C', T_out, *S') and T_out to *t_out (0: no output). With pad_end the end padding of
 * every module is flushed (so that, from a clean state, the result equals co_forward); the state
 * reached while flushing is discarded. `y_frames` is the capacity of `y` in output frames and
 * must be at least co_steps_max_output(), which is -1 when t is too large for any buffer.
 * Statuses: CO_ERR_INVALID_ARGUMENT (NULL stream, t_out or y where frames may appear, x NULL with
 * t > 0, t < 0 or too large), CO_ERR_BUFFER_TOO_SMALL (y_frames below co_steps_max_output); a
 * refused call leaves the stream as it was. Allocates nothing. */
CO_API int64_t co_steps_max_output(const co_stream *stream, int64_t t, int pad_end);
CO_API co_status co_forward_steps(co_stream *stream, const float *x, int64_t t, float *y,
                                  int64_t y_frames, int64_t *t_out, int pad_end, int update_state);

/* End of input of a live stream. Flushes the end padding of every module from the stream's
 * current state — what co_forward_steps(..., CO_PAD_END, ...) adds after the frames stepped so far,
 * whether they came one at a time (co_forward_step, co_forward_step_streams) or in clips, and also
 * after a co_stream_restore — and writes the frames that appear to `y` as a clip (B, C', t_out, *S')
 * (laid out with a capacity of y_frames, then compacted to t_out frames, as co_forward_steps does).
 * Then the stream is clean (as after co_stream_clean), ready for a new sequence: save the state
 * before this call to keep it. After a clean stream (no frame since), nothing appears (t_out 0).
 * `y` is owned by the caller and must hold y_frames >= co_stream_finish_max_output(stream) output
 * frames (0 for a network without end padding; y may then be NULL).
 * Statuses: CO_ERR_INVALID_ARGUMENT (NULL stream or t_out, NULL y where frames may appear),
 * CO_ERR_BUFFER_TOO_SMALL (y_frames too small); a refused call leaves the stream as it was.
 * Runs on the stream's threads (co_stream_set_threads). Allocates nothing. */
CO_API int64_t co_stream_finish_max_output(const co_stream *stream); /* 0 for a NULL stream */
CO_API co_status co_stream_finish(co_stream *stream, float *y, int64_t y_frames, int64_t *t_out);

/* Back to the state of a fresh stream. Statuses: CO_ERR_INVALID_ARGUMENT (NULL stream). */
CO_API co_status co_stream_clean(co_stream *stream);

/* Save / restore: a header (model fingerprint, batch, frame shape, sizes) and the raw state.
 * Portable between processes of the same build; a state of another model, batch or shape is
 * rejected with CO_ERR_STATE and the stream is left as it was. co_stream_state_size is the
 * bytes co_stream_save writes (0 for a NULL stream).
 * co_stream_save statuses (written may be NULL): CO_ERR_INVALID_ARGUMENT (NULL stream or buf),
 * CO_ERR_BUFFER_TOO_SMALL (size below co_stream_state_size). co_stream_restore statuses:
 * CO_ERR_INVALID_ARGUMENT (NULL argument), CO_ERR_STATE (another model, batch or shape, a wrong
 * size, or indices out of range: every op validates its part before anything is copied). */
CO_API size_t co_stream_state_size(const co_stream *stream);
CO_API co_status co_stream_save(const co_stream *stream, void *buf, size_t size, size_t *written);
CO_API co_status co_stream_restore(co_stream *stream, const void *buf, size_t size);

/* ---- Many independent streams in one call ---------------------------------------------------
 * A server holds many streams of one model that started at different times. co_forward_step_streams
 * steps n of them by one frame each in one call: every stream keeps its own position, state and
 * phase (and its own save / restore / clean, which work as on any stream), but the products of
 * each op are computed for all of them at once, so that the weights are read once per op and the
 * cost approaches that of one lockstep batch of n x B. What the call needs besides the streams
 * (tables and the scratch of the batched products) is a multi-stream context, created once. */
typedef struct co_multistream co_multistream;

/* Creates a context for calls over up to `max_streams` (1 .. 65536) streams of `model`, each
 * created with `batch` and `frame_shape` (C, *S) (NULL: the file's), i.e. each taking input frames
 * of shape (batch, C, *S). Its scratch is what one step of a lockstep batch of max_streams x batch
 * needs for the ops that batch their products (convolutions, Linear); models whose shapes name the
 * batch (a Reshape over it) get no such scratch and step each op stream by stream.
 * On success *out is a new context owned by the caller (free with co_multistream_free, before
 * the model; its streams may be freed at any time). On failure *out is NULL.
 * Statuses: CO_ERR_INVALID_ARGUMENT (NULL model or out, max_streams or batch out of range),
 * CO_ERR_SHAPE (frame shape invalid for the model, or none recorded and none given),
 * CO_ERR_OUT_OF_MEMORY. A context may be used by one thread at a time; one context per thread
 * serves any number of disjoint sets of streams. */
CO_API co_status co_multistream_create(const co_model *model, int max_streams, int batch,
                                       const co_shape *frame_shape, co_multistream **out);
CO_API void co_multistream_free(co_multistream *ctx); /* NULL is a no-op */

/* Steps streams[0 .. n) by one frame each: stream i reads x[i] (its input frame, (B, C, *S) as
 * co_stream_input_shape) and, when has_output[i] is set to 1, its output frame is written to
 * y[i] (co_stream_output_shape floats; left untouched when has_output[i] is 0). For each stream the
 * result is what co_forward_step(streams[i], x[i], y[i], &has_output[i], update_state) gives, to
 * float rounding (the products are the same, their summation order may differ by a few ulps).
 * With update_state = 0 every stream is peeked: its state is left bit-identical.
 * Contract: 0 <= n <= the context's max_streams (n = 0 does nothing); every stream was created
 * from the context's model with its batch and frame shape; no stream appears twice; no pointer
 * is NULL; the y[i] do not overlap each other or any x[j] (x[i] may be shared). The streams must
 * not be used by another thread during the call. Ownership: nothing is kept; the caller's
 * buffers are read and written only during the call.
 * Everything is checked before any stream is touched: a refused call leaves every stream
 * bit-identical. Statuses: CO_ERR_INVALID_ARGUMENT (NULL pointer, n out of range, a stream of
 * another model, a duplicate stream), CO_ERR_SHAPE (a stream of another batch or frame shape).
 * Allocates nothing. */
CO_API co_status co_forward_step_streams(co_multistream *ctx, co_stream *const *streams, int n,
                                         const float *const *x, float *const *y, int *has_output,
                                         int update_state);

/* ---- Inspecting and profiling the step plan (src/core/inspect.c) ----------------------------
 * The plan is the flat list of ops a model compiles into (co_plan_info.num_ops of them, the same
 * for every batch and frame shape); op i here is op i of every stream of the model, in the order
 * a step runs them. */

/* Name of the matrix-product kernels in use: "avx512", "avx2", "portable" (continual-c's own,
 * chosen at run time for this CPU) or "openblas" (built with -DCO_BLAS=openblas). Static string,
 * never NULL. */
CO_API const char *co_kernel_backend(void);

typedef struct co_op_info {
    const char *kind;       /* the op's implementation ("conv", "linear", "pool", ...); static */
    const char *type;       /* module type of the node the op was compiled from ("Conv3d"; a
                             * container's for the reductions it adds), "" if none; owned by the model */
    const char *path;       /* that node's state_dict prefix ("" for the root); owned by the model */
    co_shape output_frame;  /* (B, C', *S') of the op's output frame */
    int64_t macs;           /* multiply-accumulates of one step of this op (as co_plan_info) */
    size_t state_bytes;     /* its share of the stream state (before alignment) */
    size_t scratch_floats;  /* floats of scratch one step of it needs (the arena holds the largest) */
    int64_t end_pad;        /* frames it is fed when the end of the input is flushed */
} co_op_info;

/* The plan for `batch` streams of frame shape (C, *S) (NULL: the file's), one entry per op:
 * ops[0 .. co_plan_info.num_ops) is written; n_ops is the capacity of `ops` in entries.
 * Ownership: `ops` is the caller's; the strings it gets point into the model (valid until
 * co_model_free) or are static. The sum of the ops' macs is co_plan_info.macs_per_step.
 * Statuses: CO_ERR_INVALID_ARGUMENT (NULL model or ops, batch outside [1, 2^20]),
 * CO_ERR_BUFFER_TOO_SMALL (n_ops below num_ops; nothing written), CO_ERR_SHAPE (a frame shape
 * the network cannot take, or none recorded and none given), CO_ERR_UNSUPPORTED,
 * CO_ERR_OUT_OF_MEMORY (its temporaries). */
CO_API co_status co_model_plan_ops(const co_model *model, int batch, const co_shape *frame_shape, co_op_info *ops,
                                   int n_ops);

/* Per-op profiling of a stream. With a non-NULL `ns_per_op` (co_plan_info.num_ops entries, owned
 * by the caller, who must keep it alive while it is set), every op that runs in co_forward_step,
 * co_forward_steps and co_stream_finish (end padding included) adds its wall time in nanoseconds
 * (CLOCK_MONOTONIC) to ns_per_op[op]; the library never clears it. NULL turns profiling off: an
 * unprofiled step costs one test per op. co_forward_step_streams does not profile. The setting is not part of the
 * saved state and co_stream_clean keeps it.
 * Statuses: CO_ERR_INVALID_ARGUMENT (NULL stream). */
CO_API co_status co_stream_set_profile(co_stream *stream, int64_t *ns_per_op);

/* ---- Intra-step threads ----------------------------------------------------------------------
 * A stream, a multi-stream context or one clip may spread the large matrix products of each step
 * (convolution taps, Linear, attention projections, Graph matmuls) over n threads: the calling
 * thread and n - 1 workers of a pool that these calls start (never a step). Each product is split
 * into blocks of output columns or rows, each computed in the order one thread uses, so results
 * are bit-identical to 1 thread; products too small to pay stay on the calling thread. Between
 * steps the workers spin for a fraction of a millisecond, then sleep (no core is kept busy).
 * The default is 1 thread: no pool, no thread is created. Stepping with a pool allocates nothing.
 *
 * co_stream_set_threads / co_multistream_set_threads replace the object's pool by one of
 * n_threads (its old workers are joined; 1 removes the pool). The pool is owned by the stream or
 * context and freed with it. Call it while no other call uses that object. Setting it allocates
 * through the allocator hook. Statuses: CO_ERR_INVALID_ARGUMENT (NULL object, n_threads outside
 * [1, CO_MAX_THREADS]), CO_ERR_OUT_OF_MEMORY (the pool's memory, or the system refused a thread);
 * on failure the object keeps its previous thread count. A multi-stream call runs on its context's
 * threads; the streams' own pools are not used then. */
#define CO_MAX_THREADS 256
CO_API co_status co_stream_set_threads(co_stream *stream, int n_threads);
CO_API int co_stream_threads(const co_stream *stream); /* threads of its steps; 1 for NULL */
CO_API co_status co_multistream_set_threads(co_multistream *ctx, int n_threads);
CO_API int co_multistream_threads(const co_multistream *ctx); /* 1 for NULL */
/* co_forward on n_threads (a pool started and joined inside the call); same results, same
 * statuses as co_forward, plus CO_ERR_INVALID_ARGUMENT for n_threads outside [1, CO_MAX_THREADS]
 * and CO_ERR_OUT_OF_MEMORY when a thread cannot be started. */
CO_API co_status co_forward_threaded(const co_model *model, int n_threads, const co_shape *in, const float *x,
                                     float *y, size_t y_capacity /* floats */);

#ifdef __cplusplus
}
#endif
#endif /* CONTINUAL_H */
