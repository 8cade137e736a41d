"""ctypes binding over libcontinual (include/continual.h).

The shared library is looked for, in this order, at $CONTINUAL_LIB, inside the installed package
(continual_c/_native/lib, put there by `pip install ./python`), and at <repo>/build/libcontinual.so
(a source checkout built with CMake). It is loaded on first use, so the exporter works without it.

Inputs: the library computes in float32 on C-contiguous arrays. float32 arrays and tensors are
passed as they are (a non-contiguous one is copied); float16 and bfloat16 are widened (exactly);
float64 is narrowed to float32 with a PrecisionWarning (make it an error with
``warnings.simplefilter("error", continual_c.PrecisionWarning)``); any other dtype (ints, bools,
complex, objects) is refused with a TypeError. ``out=`` arrays are never converted: they must be
float32, C-contiguous, writable and of the documented shape (TypeError / ValueError otherwise).
"""
from __future__ import annotations

import ctypes as C
import glob
import os
import threading
import warnings
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

if TYPE_CHECKING:  # only for the annotations; the binding never imports torch
    import torch

__all__ = ["Error", "PrecisionWarning", "Model", "Stream", "MultiStream", "load", "load_memory", "library_path",
           "library_available", "library", "library_version"]

#: What the compute calls take: a numpy array or a torch tensor (or anything np.asarray takes).
ArrayLike = Union[np.ndarray, "torch.Tensor", Sequence[Any]]
Shape = Tuple[int, ...]

CO_MAX_DIMS = 8
_STATUS_NAMES = {
    0: "CO_OK", 1: "CO_ERR_INVALID_ARGUMENT", 2: "CO_ERR_OUT_OF_MEMORY", 3: "CO_ERR_IO", 4: "CO_ERR_FORMAT",
    5: "CO_ERR_NETWORK", 6: "CO_ERR_TENSOR", 7: "CO_ERR_SHAPE", 8: "CO_ERR_BUFFER_TOO_SMALL", 9: "CO_ERR_STATE",
    10: "CO_ERR_UNSUPPORTED",
}
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_BUNDLED_LIB_DIR = os.path.join(_PACKAGE_DIR, "_native", "lib")


class Error(RuntimeError):
    """A libcontinual call failed. `.status` is the co_status code, `.status_name` its name
    ("CO_ERR_SHAPE"), `.message` the library's co_last_error() text."""

    def __init__(self, status: int, status_name: str, message: str):
        self.status = int(status)
        self.status_name = status_name
        self.message = message
        super().__init__("%s: %s" % (status_name, message))


class PrecisionWarning(UserWarning):
    """An input was narrowed to float32 (float64 data: the library computes in float32)."""


class _Shape(C.Structure):
    _fields_ = [("ndim", C.c_int), ("dims", C.c_int64 * CO_MAX_DIMS)]


class _Temporal(C.Structure):
    _fields_ = [("receptive_field", C.c_int64), ("delay", C.c_int64), ("stride", C.c_int64), ("padding", C.c_int64)]


class _NodeInfo(C.Structure):
    _fields_ = [("path", C.c_char_p), ("type", C.c_char_p), ("depth", C.c_int), ("parent", C.c_int),
                ("params", C.c_int64), ("temporal", _Temporal)]


class _PlanInfo(C.Structure):
    _fields_ = [("output_frame", _Shape), ("macs_per_step", C.c_int64), ("state_bytes", C.c_size_t),
                ("arena_bytes", C.c_size_t), ("num_ops", C.c_int)]


_PREDICATE_FN = C.CFUNCTYPE(C.c_int, C.POINTER(C.c_float), C.POINTER(_Shape), C.c_void_p)
_LAMBDA_FN = C.CFUNCTYPE(None, C.POINTER(C.c_float), C.POINTER(_Shape), C.POINTER(C.c_float), C.c_void_p)


class _Callback(C.Structure):
    _fields_ = [("name", C.c_char_p), ("predicate", _PREDICATE_FN), ("lambda_", _LAMBDA_FN), ("user", C.c_void_p)]


class _LoadOptions(C.Structure):
    _fields_ = [("callbacks", C.POINTER(_Callback)), ("n_callbacks", C.c_int), ("max_arena_bytes", C.c_size_t),
                ("flags", C.c_uint)]


_LOAD_DIRECT_CONV = 1  # CO_LOAD_DIRECT_CONV


_lib = None
_lib_lock = threading.Lock()


_MAX_THREADS = 256  # CO_MAX_THREADS


def _bundled_library() -> Optional[str]:
    """The library inside the installed package (libcontinual.so.<major>), or None."""
    found = sorted(glob.glob(os.path.join(_BUNDLED_LIB_DIR, "libcontinual.so*")))
    return found[0] if found else None


def library_path() -> str:
    """Where the shared library is looked for: $CONTINUAL_LIB, else the one inside the installed
    package (continual_c/_native/lib), else <repo>/build/libcontinual.so."""
    env = os.environ.get("CONTINUAL_LIB")
    if env:
        return env
    bundled = _bundled_library()
    if bundled:
        return bundled
    repo = os.path.dirname(os.path.dirname(_PACKAGE_DIR))
    return os.path.join(repo, "build", "libcontinual.so")


def _declare(lib):
    P, I, I64, SZ = C.c_void_p, C.c_int, C.c_int64, C.c_size_t
    sig = {
        "co_status_name": (C.c_char_p, [I]),
        "co_last_error": (C.c_char_p, []),
        "co_model_load": (I, [C.c_char_p, C.POINTER(P)]),
        "co_model_load_memory": (I, [P, SZ, C.POINTER(P)]),
        "co_model_load_ex": (I, [C.c_char_p, C.POINTER(_LoadOptions), C.POINTER(P)]),
        "co_model_load_memory_ex": (I, [P, SZ, C.POINTER(_LoadOptions), C.POINTER(P)]),
        "co_model_free": (None, [P]),
        "co_model_temporal": (I, [P, C.POINTER(_Temporal)]),
        "co_model_frame_shape": (I, [P, C.POINTER(_Shape)]),
        "co_model_param_count": (I64, [P]),
        "co_model_description": (C.c_char_p, [P]),
        "co_model_node_count": (I, [P]),
        "co_model_node": (I, [P, I, C.POINTER(_NodeInfo)]),
        "co_model_plan_info": (I, [P, I, C.POINTER(_Shape), C.POINTER(_PlanInfo)]),
        "co_forward_shape": (I, [P, C.POINTER(_Shape), C.POINTER(_Shape)]),
        "co_forward": (I, [P, C.POINTER(_Shape), P, P, SZ]),
        "co_stream_create": (I, [P, I, C.POINTER(P)]),
        "co_stream_create_shaped": (I, [P, I, C.POINTER(_Shape), C.POINTER(P)]),
        "co_stream_free": (None, [P]),
        "co_stream_input_shape": (I, [P, C.POINTER(_Shape)]),
        "co_stream_output_shape": (I, [P, C.POINTER(_Shape)]),
        "co_forward_step": (I, [P, P, P, C.POINTER(I), I]),
        "co_steps_max_output": (I64, [P, I64, I]),
        "co_forward_steps": (I, [P, P, I64, P, I64, C.POINTER(I64), I, I]),
        "co_stream_clean": (I, [P]),
        "co_stream_finish_max_output": (I64, [P]),
        "co_stream_finish": (I, [P, P, I64, C.POINTER(I64)]),
        "co_version": (I, []),
        "co_version_string": (C.c_char_p, []),
        "co_stream_state_size": (SZ, [P]),
        "co_stream_save": (I, [P, P, SZ, C.POINTER(SZ)]),
        "co_stream_restore": (I, [P, P, SZ]),
        "co_multistream_create": (I, [P, I, I, C.POINTER(_Shape), C.POINTER(P)]),
        "co_multistream_free": (None, [P]),
        "co_forward_step_streams": (I, [P, C.POINTER(P), I, C.POINTER(P), C.POINTER(P), C.POINTER(I), I]),
        "co_stream_set_threads": (I, [P, I]),
        "co_stream_threads": (I, [P]),
        "co_multistream_set_threads": (I, [P, I]),
        "co_multistream_threads": (I, [P]),
        "co_forward_threaded": (I, [P, I, C.POINTER(_Shape), P, P, SZ]),
    }
    for name, (res, args) in sig.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args


def library() -> C.CDLL:
    """The loaded ctypes.CDLL (loads it on first call; OSError if it cannot be loaded)."""
    global _lib
    with _lib_lock:
        if _lib is None:
            path = library_path()
            if not os.path.exists(path):
                raise OSError("libcontinual not found at %s: install the package with `pip install ./python` "
                              "(from the repository root), or build the library with CMake and set "
                              "CONTINUAL_LIB to its path" % path)
            lib = C.CDLL(path)
            _declare(lib)
            _lib = lib
        return _lib


def library_available() -> bool:
    """Whether the shared library can be loaded (see library_path())."""
    try:
        library()
        return True
    except OSError:
        return False


def library_version() -> str:
    """The loaded library's co_version_string() ("MAJOR.MINOR.PATCH"); continual_c.__version__ is
    the package's (the same macros, unless the library comes from another build: $CONTINUAL_LIB).
    OSError if the library cannot be loaded."""
    return library().co_version_string().decode("ascii")


def _check(status):
    if status != 0:
        lib = library()
        name = lib.co_status_name(status)
        name = name.decode() if name else _STATUS_NAMES.get(status, "CO_ERR_%d" % status)
        msg = lib.co_last_error()
        raise Error(status, name, msg.decode("utf-8", "replace") if msg else "")


def _c_int(v, what, lo=1, hi=2 ** 31 - 1):
    """v as a C int in [lo, hi], or a Python error saying what was expected (ctypes would wrap
    2**32 + 1 to 1 silently)."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError("%s must be an int, got %r" % (what, v))
    v = int(v)
    if not lo <= v <= hi:
        raise ValueError("%s must be in [%d, %d], got %d" % (what, lo, hi, v))
    return v


def _shape(dims):
    dims = [int(d) for d in dims]
    if len(dims) > CO_MAX_DIMS:
        raise Error(7, "CO_ERR_SHAPE", "shape %r has more than %d dims" % (tuple(dims), CO_MAX_DIMS))
    for d in dims:
        if not 0 <= d < 2 ** 63:
            raise ValueError("shape %r: sizes must be in [0, 2**63)" % (tuple(dims),))
    s = _Shape()
    s.ndim = len(dims)
    for i, d in enumerate(dims):
        s.dims[i] = d
    return s


def _tuple(s):
    return tuple(int(s.dims[i]) for i in range(s.ndim))


_WIDENED_EXACTLY = ("float16", "bfloat16")  # every value is a float32 value


def _as_f32(x, what="input", narrow_ok=False):
    """numpy array or torch tensor -> C-contiguous float32 numpy array, by the dtype policy in the
    module docstring: float32 as is, float16/bfloat16 widened, float64 narrowed with a
    PrecisionWarning (silently with narrow_ok: a callback's own result), anything else a TypeError.
    `what` names the argument in the messages ("Model.forward: clip")."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        dtype = str(x.dtype).replace("torch.", "")
        if not x.is_floating_point():
            _refuse_dtype(what, dtype, "x.float()")
        if dtype != "float32" and dtype not in _WIDENED_EXACTLY and not narrow_ok:
            _warn_narrowing(what, dtype, "x.float()")
        return x.detach().cpu().float().contiguous().numpy()
    x = np.asarray(x)
    if x.dtype.kind != "f":
        _refuse_dtype(what, str(x.dtype), "x.astype(np.float32)")
    if x.dtype != np.float32 and x.dtype.name not in _WIDENED_EXACTLY and not narrow_ok:
        _warn_narrowing(what, str(x.dtype), "x.astype(np.float32)")
    if x.dtype != np.float32 or not x.flags.c_contiguous:
        x = np.ascontiguousarray(x, dtype=np.float32)
    return x


# stacklevel of the warning: _warn_narrowing <- _as_f32 <- the public method <- the caller's line
_CALLER_STACKLEVEL = 4


def _warn_narrowing(what, dtype, fix):
    warnings.warn("%s is %s: narrowed to float32, the library's type (pass float32, e.g. %s, to skip the copy; "
                  "warnings.simplefilter('error', continual_c.PrecisionWarning) makes this an error)"
                  % (what, dtype, fix), PrecisionWarning, stacklevel=_CALLER_STACKLEVEL)


def _refuse_dtype(what, dtype, fix):
    raise TypeError("%s has dtype %s; the library takes floating-point data (float32; float16, bfloat16 and "
                    "float64 are converted): convert it first, e.g. %s" % (what, dtype, fix))


def _out_array(out, shape, what):
    """`out` checked as a destination of `shape`: float32, C-contiguous, writable (never converted)."""
    if not isinstance(out, np.ndarray):
        raise TypeError("%s: out must be a numpy.ndarray, got %s" % (what, type(out).__name__))
    if out.dtype != np.float32:
        raise TypeError("%s: out has dtype %s; it must be float32 (e.g. np.empty(%r, np.float32))"
                        % (what, out.dtype, tuple(shape)))
    if not out.flags.c_contiguous:
        raise ValueError("%s: out must be C-contiguous (np.ascontiguousarray, or a fresh np.empty)" % what)
    if not out.flags.writeable:
        raise ValueError("%s: out is read-only" % what)
    if tuple(out.shape) != tuple(shape):
        raise ValueError("%s: out has shape %r, the result has shape %r" % (what, tuple(out.shape), tuple(shape)))
    return out


def _ptr(a):
    return a.ctypes.data_as(C.c_void_p)


def _temporal_dict(t):
    return {"receptive_field": int(t.receptive_field), "delay": int(t.delay), "stride": int(t.stride),
            "padding": int(t.padding)}


class _Owner:
    """Owns a co_model* for a Model and its Streams. The C model is freed only once the Model is closed
    (or collected) and every Stream on it has freed its co_stream*: finalizers of objects in one garbage
    cycle run in any order, so a Stream's reference to its Model alone does not guarantee that."""

    __slots__ = ("h", "lib", "streams", "closed", "lock", "callbacks")

    def __init__(self, h, lib, callbacks=None):
        self.h, self.lib, self.streams, self.closed = h, lib, 0, False
        self.lock = threading.Lock()
        self.callbacks = callbacks  # _Callbacks: the C model calls into them until it is freed

    def add_stream(self):
        with self.lock:
            self.streams += 1

    def release(self, stream=False, model=False):
        with self.lock:
            if stream:
                self.streams -= 1
            if model:
                self.closed = True
            h = self.h if (self.closed and self.streams == 0) else None
            if h:
                self.h = None
        if h:
            self.lib.co_model_free(h)
            self.callbacks = None


class _Closable:
    """close() on garbage collection and at the end of a `with` block."""

    def close(self):
        raise NotImplementedError

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Model(_Closable):
    """A loaded, compiled model (read-only; may be shared by any number of streams and threads).

    Made by load() / load_memory(); a `with` block or close() frees it (streams created from it
    keep it alive until they are closed too)."""

    def __init__(self, handle, path=None, callbacks=None):
        self._lib = library()
        self._owner = _Owner(handle, self._lib, callbacks)
        self.path: Optional[str] = path

    @property
    def _handle(self):
        o = self._owner
        if o.closed or not o.h:
            raise Error(1, "CO_ERR_INVALID_ARGUMENT", "the model was closed")
        return o.h

    def close(self) -> None:
        """Release the model. Streams created from it keep working; the C object is freed with the last."""
        o = getattr(self, "_owner", None)
        if o is not None and not o.closed:
            o.release(model=True)

    # ---- properties ----
    def _temporal(self):
        t = _Temporal()
        _check(self._lib.co_model_temporal(self._handle, C.byref(t)))
        return t

    @property
    def temporal(self) -> Dict[str, int]:
        """{"receptive_field", "delay", "stride", "padding"} of the whole network, in frames."""
        return _temporal_dict(self._temporal())

    @property
    def receptive_field(self) -> int:
        """Input frames one output frame depends on."""
        return int(self._temporal().receptive_field)

    @property
    def delay(self) -> int:
        """Steps before the first output frame appears."""
        return int(self._temporal().delay)

    @property
    def stride(self) -> int:
        """Input frames per output frame."""
        return int(self._temporal().stride)

    @property
    def padding(self) -> int:
        """Temporal padding of the whole network (frames flushed by pad_end)."""
        return int(self._temporal().padding)

    @property
    def frame_shape(self) -> Optional[Shape]:
        """The frame shape (C, *S) recorded in the file, or None."""
        s = _Shape()
        st = self._lib.co_model_frame_shape(self._handle, C.byref(s))
        if st == 7:  # CO_ERR_SHAPE: the file records none
            return None
        _check(st)
        return _tuple(s)

    @property
    def param_count(self) -> int:
        """Number of weights (parameters and buffers) of the network."""
        return int(self._lib.co_model_param_count(self._handle))

    @property
    def description(self) -> str:
        """The file's free-text description ("" if none)."""
        return (self._lib.co_model_description(self._handle) or b"").decode("utf-8", "replace")

    @property
    def nodes(self) -> List[Dict[str, Any]]:
        """The module tree, parents first: index, path, type, depth, parent, params and the node's
        receptive_field, delay, stride, padding (what `continual info` prints)."""
        out = []
        n = self._lib.co_model_node_count(self._handle)
        for i in range(n):
            info = _NodeInfo()
            _check(self._lib.co_model_node(self._handle, i, C.byref(info)))
            d = {"index": i, "path": (info.path or b"").decode(), "type": (info.type or b"").decode(),
                 "depth": int(info.depth), "parent": int(info.parent), "params": int(info.params)}
            d.update(_temporal_dict(info.temporal))
            out.append(d)
        return out

    def plan_info(self, batch: int = 1, frame_shape: Optional[Sequence[int]] = None) -> Dict[str, Any]:
        """The step plan for `batch` and frame shape (C, *S) (default: the file's): output_frame,
        macs_per_step, state_bytes, arena_bytes, num_ops. Error CO_ERR_SHAPE if the shape does not fit."""
        info = _PlanInfo()
        fs = C.byref(_shape(frame_shape)) if frame_shape is not None else None
        _check(self._lib.co_model_plan_info(self._handle, _c_int(batch, "batch"), fs, C.byref(info)))
        return {"output_frame": _tuple(info.output_frame), "macs_per_step": int(info.macs_per_step),
                "state_bytes": int(info.state_bytes), "arena_bytes": int(info.arena_bytes),
                "num_ops": int(info.num_ops)}

    # ---- compute ----
    def forward_shape(self, clip_shape: Sequence[int]) -> Shape:
        """The shape forward() returns for a clip of shape (B, C, T, *S)."""
        out = _Shape()
        _check(self._lib.co_forward_shape(self._handle, C.byref(_shape(clip_shape)), C.byref(out)))
        return _tuple(out)

    def forward(self, clip: ArrayLike, out: Optional[np.ndarray] = None, threads: int = 1) -> np.ndarray:
        """The whole clip (B, C, T, *S) at once: what torch.nn gives for it (stateless).

        clip: numpy array or torch tensor (dtype policy: module docstring). out: optional float32
        C-contiguous array of shape forward_shape(clip.shape) to write into (returned); else a new
        array. threads > 1 runs its large products on that many threads (bit-identical results).
        Error CO_ERR_SHAPE if the clip does not fit the network."""
        threads = _c_int(threads, "threads", hi=_MAX_THREADS)
        x = _as_f32(clip, "Model.forward: clip")
        ins = _shape(x.shape)
        outs = _Shape()
        _check(self._lib.co_forward_shape(self._handle, C.byref(ins), C.byref(outs)))
        if out is None:
            y = np.empty(_tuple(outs), dtype=np.float32)
        else:
            y = _out_array(out, _tuple(outs), "Model.forward")
        if threads == 1:
            st = self._lib.co_forward(self._handle, C.byref(ins), _ptr(x), _ptr(y), y.size)
        else:
            st = self._lib.co_forward_threaded(self._handle, threads, C.byref(ins), _ptr(x), _ptr(y), y.size)
        _raise_callback_error(self._owner)
        _check(st)
        return y

    __call__ = forward

    def stream(self, batch_size: int = 1, frame_shape: Optional[Sequence[int]] = None, threads: int = 1) -> "Stream":
        """A new stream (one live sequence, or `batch_size` of them in lockstep) of frame shape
        (C, *S) (default: the file's); threads > 1 runs each step's large products on that many
        threads (bit-identical results)."""
        return Stream(self, batch_size, frame_shape, threads)

    def multistream(self, max_streams: int, batch_size: int = 1,
                    frame_shape: Optional[Sequence[int]] = None, threads: int = 1) -> "MultiStream":
        """A context stepping up to `max_streams` independent streams (each of `batch_size`) in one call."""
        return MultiStream(self, max_streams, batch_size, frame_shape, threads)


class Stream(_Closable):
    """The state of one live stream over a Model (ring buffers, phases; one arena). Holds a
    reference to the model. `input_shape` (B, C, *S) and `output_shape` (B, C', *S') are the
    frame shapes it takes and gives."""

    def __init__(self, model: Model, batch_size: int = 1, frame_shape: Optional[Sequence[int]] = None,
                 threads: int = 1):
        self.model = model
        self._lib = model._lib
        self._h = None
        self._owner = None
        h = C.c_void_p()
        batch_size = _c_int(batch_size, "batch_size")
        if frame_shape is None:
            _check(self._lib.co_stream_create(model._handle, batch_size, C.byref(h)))
        else:
            fs = _shape(frame_shape)
            _check(self._lib.co_stream_create_shaped(model._handle, batch_size, C.byref(fs), C.byref(h)))
        self._h = h.value
        self._owner = model._owner  # keeps the C model alive until this stream is freed
        self._owner.add_stream()
        s = _Shape()
        _check(self._lib.co_stream_input_shape(self._h, C.byref(s)))
        self.input_shape: Shape = _tuple(s)
        _check(self._lib.co_stream_output_shape(self._h, C.byref(s)))
        self.output_shape: Shape = _tuple(s)
        self.batch_size = int(batch_size)
        if threads != 1:
            self.threads = threads

    @property
    def threads(self):
        """Threads of each step (co_stream_set_threads); 1 by default. Settable."""
        return int(self._lib.co_stream_threads(self._handle))

    @threads.setter
    def threads(self, n):
        _check(self._lib.co_stream_set_threads(self._handle, _c_int(n, "threads", hi=_MAX_THREADS)))

    @property
    def _handle(self):
        if not self._h:
            raise Error(1, "CO_ERR_INVALID_ARGUMENT", "the stream was closed")
        return self._h

    def close(self) -> None:
        """Free the stream (also on garbage collection and at the end of a `with` block)."""
        h, self._h = getattr(self, "_h", None), None
        if h:
            self._lib.co_stream_free(h)
            owner, self._owner = self._owner, None
            if owner is not None:
                owner.release(stream=True)

    def forward_step(self, x: ArrayLike, update_state: bool = True,
                     out: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
        """One frame (B, C, *S) -> one output frame (B, C', *S'), or None while the network
        fills up (its delay) or between strided outputs.

        update_state=False peeks: the output the frame would give, the stream left as it was.
        out: optional float32 C-contiguous array of shape output_shape to write into (returned
        when a frame appears; its contents are unspecified when None is returned)."""
        x = _as_f32(x, "Stream.forward_step: x")
        if tuple(x.shape) != self.input_shape:
            raise Error(7, "CO_ERR_SHAPE", "forward_step: frame shape %r, the stream takes %r"
                        % (tuple(x.shape), self.input_shape))
        if out is None:
            y = np.empty(self.output_shape, dtype=np.float32)
        else:
            y = _out_array(out, self.output_shape, "Stream.forward_step")
        has = C.c_int(0)
        st = self._lib.co_forward_step(self._handle, _ptr(x), _ptr(y), C.byref(has), 1 if update_state else 0)
        _raise_callback_error(self._owner)
        _check(st)
        return y if has.value else None

    def steps_max_output(self, t: int, pad_end: bool = False) -> int:
        """The most output frames forward_steps can give for a clip of `t` frames from the stream's
        current state: the time length an `out` array for it needs."""
        cap = int(self._lib.co_steps_max_output(self._handle, _c_int(t, "t", 0, 2 ** 63 - 1), 1 if pad_end else 0))
        if cap < 0:
            _check(7)
        return cap

    def _clip_result(self, y, n, out):
        """The (B, C', n, *S') clip the C side wrote compacted at the start of y's buffer: as a new
        array, or moved into place as out[:, :, :n] when the caller gave `out`."""
        if n == 0:
            return None
        o = self.output_shape
        rows, frame = int(np.prod(o[:2])), int(np.prod(o[2:]))
        flat = y.reshape(-1)
        if out is None:
            return flat[: rows * frame * n].reshape(o[:2] + (n,) + o[2:]).copy()
        cap = y.shape[2]
        if n < cap:  # each (b, c) row moves from offset r*n*frame to r*cap*frame (numpy copies overlaps safely)
            flat[: rows * cap * frame].reshape(rows, cap * frame)[:, : n * frame] = \
                flat[: rows * n * frame].reshape(rows, n * frame)
        return y[:, :, :n]

    def forward_steps(self, x: ArrayLike, pad_end: bool = False, update_state: bool = True,
                      out: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
        """A clip (B, C, T, *S) stepped frame by frame -> the output frames that appear,
        (B, C', T_out, *S'), or None if none does. pad_end=True also flushes the end padding, so
        that a fresh stream gives what forward() gives.

        out: optional float32 C-contiguous array (B, C', T_cap, *S') with
        T_cap == steps_max_output(T, pad_end); the result is then the view out[:, :, :T_out]."""
        x = _as_f32(x, "Stream.forward_steps: x")
        ins = self.input_shape
        if x.ndim != len(ins) + 1 or tuple(x.shape[:2]) != ins[:2] or tuple(x.shape[3:]) != ins[2:]:
            raise Error(7, "CO_ERR_SHAPE", "forward_steps: clip shape %r, the stream takes (%s) with T at dim 2"
                        % (tuple(x.shape), ", ".join(str(d) for d in ins[:2] + ("T",) + ins[2:])))
        t = int(x.shape[2])
        cap = self.steps_max_output(t, pad_end)
        o = self.output_shape
        if out is None:
            y = np.empty(o[:2] + (max(cap, 1),) + o[2:], dtype=np.float32)
        else:
            y = _out_array(out, o[:2] + (cap,) + o[2:], "Stream.forward_steps")
        t_out = C.c_int64(0)
        st = self._lib.co_forward_steps(self._handle, _ptr(x), t, _ptr(y), cap, C.byref(t_out),
                                        1 if pad_end else 0, 1 if update_state else 0)
        _raise_callback_error(self._owner)
        _check(st)
        return self._clip_result(y, int(t_out.value), out)

    def finish_max_output(self) -> int:
        """The most output frames finish() can give from the stream's current state."""
        return int(self._lib.co_stream_finish_max_output(self._handle))

    def finish(self, out: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
        """End of input (co_stream_finish): flushes the end padding from the current state (after any
        mix of forward_step / forward_steps / load_state) and returns the output frames that appear,
        (B, C', T_out, *S'), or None; the stream is then clean, ready for a new sequence.
        out: as for forward_steps, with T_cap == finish_max_output()."""
        cap = self.finish_max_output()
        o = self.output_shape
        if out is None:
            y = np.empty(o[:2] + (max(cap, 1),) + o[2:], dtype=np.float32)
        else:
            y = _out_array(out, o[:2] + (cap,) + o[2:], "Stream.finish")
        t_out = C.c_int64(0)
        st = self._lib.co_stream_finish(self._handle, _ptr(y), cap, C.byref(t_out))
        _raise_callback_error(self._owner)
        _check(st)
        return self._clip_result(y, int(t_out.value), out)

    def clean_state(self) -> None:
        """Forget everything stepped so far (as a fresh stream)."""
        _check(self._lib.co_stream_clean(self._handle))

    def state_size(self) -> int:
        """Bytes save_state() returns."""
        return int(self._lib.co_stream_state_size(self._handle))

    def save_state(self) -> bytes:
        """The stream's state as bytes, for load_state() on a stream of the same model, batch and shape."""
        n = self.state_size()
        buf = C.create_string_buffer(max(n, 1))
        written = C.c_size_t(0)
        _check(self._lib.co_stream_save(self._handle, buf, n, C.byref(written)))
        return buf.raw[: written.value]

    def load_state(self, data: bytes) -> None:
        """Restore a state from save_state(); Error CO_ERR_STATE if it belongs to another model,
        batch or shape (the stream is then left as it was)."""
        data = bytes(data)
        buf = C.create_string_buffer(data, max(len(data), 1))
        _check(self._lib.co_stream_restore(self._handle, buf, len(data)))


class MultiStream(_Closable):
    """Steps many independent Streams of one model in one call (co_forward_step_streams): each keeps
    its own position and state (and its own save/load/clean), the products are shared. Holds a
    reference to the model."""

    def __init__(self, model: Model, max_streams: int, batch_size: int = 1,
                 frame_shape: Optional[Sequence[int]] = None, threads: int = 1):
        self.model = model
        self._lib = model._lib
        self._h = None
        self._owner = None
        h = C.c_void_p()
        fs = C.byref(_shape(frame_shape)) if frame_shape is not None else None
        _check(self._lib.co_multistream_create(model._handle, _c_int(max_streams, "max_streams"),
                                               _c_int(batch_size, "batch_size"), fs, C.byref(h)))
        self._h = h.value
        self._owner = model._owner
        self._owner.add_stream()
        self.max_streams = int(max_streams)
        self.batch_size = int(batch_size)
        if threads != 1:
            self.threads = threads

    @property
    def threads(self):
        """Threads of each call (co_multistream_set_threads); 1 by default. Settable."""
        if not self._h:
            raise Error(1, "CO_ERR_INVALID_ARGUMENT", "the context was closed")
        return int(self._lib.co_multistream_threads(self._h))

    @threads.setter
    def threads(self, n):
        if not self._h:
            raise Error(1, "CO_ERR_INVALID_ARGUMENT", "the context was closed")
        _check(self._lib.co_multistream_set_threads(self._h, _c_int(n, "threads", hi=_MAX_THREADS)))

    def close(self) -> None:
        """Free the context (the streams stay usable on their own)."""
        h, self._h = getattr(self, "_h", None), None
        if h:
            self._lib.co_multistream_free(h)
            owner, self._owner = self._owner, None
            if owner is not None:
                owner.release(stream=True)

    def forward_step(self, streams: Sequence[Stream], frames: Union[Sequence[ArrayLike], np.ndarray],
                     update_state: bool = True, out: Optional[Sequence[np.ndarray]] = None
                     ) -> List[Optional[np.ndarray]]:
        """Stream i of `streams` takes frames[i] ((B, C, *S); `frames` a sequence, or one array
        (n, B, C, *S)); returns a list with stream i's output frame or None. out: optional
        sequence of float32 C-contiguous arrays, out[i] of streams[i].output_shape, written into."""
        if not self._h:
            raise Error(1, "CO_ERR_INVALID_ARGUMENT", "the multi-stream context was closed")
        streams = list(streams)
        n = len(streams)
        if len(frames) != n:
            raise Error(1, "CO_ERR_INVALID_ARGUMENT", "forward_step: %d streams, %d frames" % (n, len(frames)))
        if out is not None and len(out) != n:
            raise ValueError("MultiStream.forward_step: %d streams, %d out arrays" % (n, len(out)))
        xs, ys = [], []
        for i, (s, f) in enumerate(zip(streams, frames)):
            if not isinstance(s, Stream):
                raise Error(1, "CO_ERR_INVALID_ARGUMENT", "forward_step: item %d is not a Stream" % i)
            x = _as_f32(f, "MultiStream.forward_step: frame %d" % i)
            if tuple(x.shape) != s.input_shape:
                raise Error(7, "CO_ERR_SHAPE", "forward_step: frame %d has shape %r, its stream takes %r"
                            % (i, tuple(x.shape), s.input_shape))
            xs.append(x)
            if out is None:
                ys.append(np.empty(s.output_shape, dtype=np.float32))
            else:
                ys.append(_out_array(out[i], s.output_shape, "MultiStream.forward_step: out[%d]" % i))
        hs = (C.c_void_p * max(n, 1))(*[s._handle for s in streams])
        xp = (C.c_void_p * max(n, 1))(*[x.ctypes.data for x in xs])
        yp = (C.c_void_p * max(n, 1))(*[y.ctypes.data for y in ys])
        has = (C.c_int * max(n, 1))()
        st = self._lib.co_forward_step_streams(self._h, hs, n, xp, yp, has, 1 if update_state else 0)
        _raise_callback_error(self._owner)
        _check(st)
        return [ys[i] if has[i] else None for i in range(n)]


class _Callbacks:
    """ctypes trampolines for the Python callbacks a model file names (Conditional predicates, Lambda
    functions). Held by the model's owner for as long as the C model lives. An exception raised by a
    callback is kept and re-raised by the Model/Stream call that ran it (the C call itself goes on: a
    failed predicate counts as false, a failed lambda writes NaN)."""

    def __init__(self, callbacks, roles):
        self.error = None
        self._keep = []
        entries = []
        for name, fn in callbacks.items():
            if not isinstance(name, str) or not name:
                raise TypeError("callback names must be non-empty strings, got %r" % (name,))
            if not callable(fn):
                raise TypeError("callback %r is not callable" % name)
            role = roles.get(name) if roles is not None else {"predicate", "lambda"}
            if not role:
                continue  # the file does not name it
            pred = _PREDICATE_FN(self._predicate(name, fn)) if "predicate" in role else _PREDICATE_FN()
            lam = _LAMBDA_FN(self._lambda(name, fn)) if "lambda" in role else _LAMBDA_FN()
            bname = name.encode("utf-8")
            self._keep += [pred, lam, bname]
            entries.append((bname, pred, lam))
        self.array = (_Callback * max(1, len(entries)))()
        for i, (bname, pred, lam) in enumerate(entries):
            self.array[i].name = bname
            self.array[i].predicate = pred
            self.array[i].lambda_ = lam
            self.array[i].user = None
        self.options = _LoadOptions(C.cast(self.array, C.POINTER(_Callback)), len(entries))

    def _fail(self, name, e):
        if self.error is None:
            self.error = (name, e)

    def _predicate(self, name, fn):
        def call(x, shape, user):
            try:
                dims = tuple(int(shape[0].dims[i]) for i in range(shape[0].ndim))
                arr = np.ctypeslib.as_array(x, shape=dims).copy() if dims else np.zeros((), np.float32)
                return 1 if fn(arr) else 0
            except BaseException as e:  # noqa: B036 -- nothing may unwind through C
                self._fail(name, e)
                return 0
        return call

    def _lambda(self, name, fn):
        def call(x, shape, y, user):
            dims = ()
            try:
                dims = tuple(int(shape[0].dims[i]) for i in range(shape[0].ndim))
                arr = np.ctypeslib.as_array(x, shape=dims).copy()
                out = _as_f32(fn(arr), "callback %r's result" % name, narrow_ok=True)
                if tuple(out.shape) != dims:
                    raise ValueError("callback %r returned shape %r for an input of shape %r (a Lambda keeps the "
                                     "shape)" % (name, tuple(out.shape), dims))
                np.ctypeslib.as_array(y, shape=dims)[...] = out
            except BaseException as e:  # noqa: B036
                self._fail(name, e)
                try:
                    if dims:
                        np.ctypeslib.as_array(y, shape=dims)[...] = np.nan
                except Exception:
                    pass
        return call


def _raise_callback_error(owner):
    cbs = owner.callbacks if owner is not None else None
    if cbs is not None and cbs.error is not None:
        name, e = cbs.error
        cbs.error = None
        raise Error(1, "CO_ERR_CALLBACK", "callback %r raised %s: %s" % (name, type(e).__name__, e)) from e


def _callback_roles(header_bytes):
    """{name: {"predicate", "lambda"}} for the callbacks the network JSON names, or None if unreadable."""
    import json
    try:
        import struct
        (n,) = struct.unpack("<Q", header_bytes[:8])
        header = json.loads(header_bytes[8:8 + n].decode("utf-8"))
        net = json.loads(header["__metadata__"]["network"])
    except Exception:
        return None
    roles = {}
    stack = [net]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        t = node.get("type")
        if t == "Conditional" and isinstance(node.get("predicate"), str):
            roles.setdefault(node["predicate"], set()).add("predicate")
        if t == "Lambda" and isinstance(node.get("function"), str):
            roles.setdefault(node["function"], set()).add("lambda")
        kids = node.get("children")
        if isinstance(kids, list):
            stack.extend(kids)
    return roles


def _file_header(path):
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return head
        import struct
        (n,) = struct.unpack("<Q", head)
        if n > 100000000:
            return head
        return head + f.read(n)


def load(path: Union[str, "os.PathLike[str]"], callbacks: Optional[Mapping[str, Callable[[np.ndarray], Any]]] = None,
         max_arena_bytes: int = 0, winograd: bool = True) -> Model:
    """Load and compile a model file.

    callbacks: {name: python function} for the functions the file names (the exporter records a
    function's __name__): a Conditional's predicate is called as fn(x) -> truthy (the reference's
    predicate takes (module, x): pass e.g. `lambda x: pred(None, torch.from_numpy(x))`), a Lambda's
    function as fn(x) -> array (numpy or torch) of x's shape. x is a float32 numpy array (a copy):
    one frame (B, C, *S) in step mode (no time dim, even for takes_time=True), the clip
    (B, C, T, *S) in forward (a Lambda without takes_time gets each frame instead). Callbacks must be
    pure: they may be called again for update_state=False peeks and for end padding. An exception in
    a callback is re-raised (as Error "CO_ERR_CALLBACK") by the forward/step call that ran it.
    max_arena_bytes: the largest arena a stream may request (0: the library's default, 4 GiB).
    winograd: False runs every convolution by the direct method (CO_LOAD_DIRECT_CONV): torch.nn's
    rounding, where the default Winograd F(4x4, 3x3) of dense 3x3 convolutions is ~4x fewer
    multiplies at a relative error of ~5e-6 (64 input channels) to ~1.3e-5 (512).
    Raises Error (CO_ERR_IO, CO_ERR_FORMAT, CO_ERR_NETWORK, ...) naming what is wrong with the file."""
    lib = library()
    h = C.c_void_p()
    p = os.fspath(path)
    cap = _c_int(max_arena_bytes, "max_arena_bytes", 0, 2 ** 63 - 1)
    flags = _load_flags(winograd)
    if callbacks or cap or flags:
        try:
            roles = _callback_roles(_file_header(p)) if callbacks else None
        except OSError:
            roles = None
        cbs = _Callbacks(dict(callbacks or {}), roles)
        cbs.options.max_arena_bytes = cap
        cbs.options.flags = flags
        _check(lib.co_model_load_ex(os.fsencode(p), C.byref(cbs.options), C.byref(h)))
        return Model(h.value, p, cbs)
    _check(lib.co_model_load(os.fsencode(p), C.byref(h)))
    return Model(h.value, p)


def _load_flags(winograd) -> int:
    if not isinstance(winograd, (bool, np.bool_)):
        raise TypeError("winograd must be a bool, got %r" % (winograd,))
    return 0 if winograd else _LOAD_DIRECT_CONV


def load_memory(data: bytes, callbacks: Optional[Mapping[str, Callable[[np.ndarray], Any]]] = None,
                winograd: bool = True) -> Model:
    """Load and compile a model file held in memory (bytes); callbacks and winograd as for load(). Raises
    Error (CO_ERR_FORMAT, CO_ERR_NETWORK, CO_ERR_TENSOR, ...) naming what is wrong with the file."""
    lib = library()
    data = bytes(data)
    buf = C.create_string_buffer(data, max(len(data), 1))
    h = C.c_void_p()
    flags = _load_flags(winograd)
    if callbacks or flags:
        cbs = _Callbacks(dict(callbacks or {}), _callback_roles(data) if callbacks else None)
        cbs.options.flags = flags
        _check(lib.co_model_load_memory_ex(buf, len(data), C.byref(cbs.options), C.byref(h)))
        return Model(h.value, None, cbs)
    _check(lib.co_model_load_memory(buf, len(data), C.byref(h)))
    return Model(h.value)
