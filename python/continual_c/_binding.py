"""ctypes binding over libcontinual (include/continual.h).

The shared library is found through the environment variable CONTINUAL_LIB, else at
<repo>/build/libcontinual.so. It is loaded on first use, so the exporter works without it.
"""
import ctypes as C
import os
import threading

import numpy as np

__all__ = ["Error", "Model", "Stream", "load", "load_memory", "library_path", "library_available", "library"]

CO_MAX_DIMS = 8
_STATUS_NAMES = {
    0: "CO_OK", 1: "CO_ERR_INVALID_ARGUMENT", 2: "CO_ERR_OUT_OF_MEMORY", 3: "CO_ERR_IO", 4: "CO_ERR_FORMAT",
    5: "CO_ERR_NETWORK", 6: "CO_ERR_TENSOR", 7: "CO_ERR_SHAPE", 8: "CO_ERR_BUFFER_TOO_SMALL", 9: "CO_ERR_STATE",
    10: "CO_ERR_UNSUPPORTED",
}


class Error(RuntimeError):
    """A libcontinual call failed. `.status` is the co_status code, `.status_name` its name
    ("CO_ERR_SHAPE"), `.message` the library's co_last_error() text."""

    def __init__(self, status, status_name, message):
        self.status = int(status)
        self.status_name = status_name
        self.message = message
        super().__init__("%s: %s" % (status_name, message))


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


_lib = None
_lib_lock = threading.Lock()


def library_path():
    """Where the shared library is looked for: $CONTINUAL_LIB, else <repo>/build/libcontinual.so."""
    env = os.environ.get("CONTINUAL_LIB")
    if env:
        return env
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(repo, "build", "libcontinual.so")


def _declare(lib):
    P, I, I64, SZ = C.c_void_p, C.c_int, C.c_int64, C.c_size_t
    sig = {
        "co_status_name": (C.c_char_p, [I]),
        "co_last_error": (C.c_char_p, []),
        "co_model_load": (I, [C.c_char_p, C.POINTER(P)]),
        "co_model_load_memory": (I, [P, SZ, C.POINTER(P)]),
        "co_model_free": (None, [P]),
        "co_model_temporal": (I, [P, C.POINTER(_Temporal)]),
        "co_model_frame_shape": (I, [P, C.POINTER(_Shape)]),
        "co_model_param_count": (I64, [P]),
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
        "co_stream_state_size": (SZ, [P]),
        "co_stream_save": (I, [P, P, SZ, C.POINTER(SZ)]),
        "co_stream_restore": (I, [P, P, SZ]),
    }
    for name, (res, args) in sig.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args


def library():
    """The loaded ctypes.CDLL (loads it on first call; OSError if it cannot be loaded)."""
    global _lib
    with _lib_lock:
        if _lib is None:
            path = library_path()
            if not os.path.exists(path):
                raise OSError("libcontinual not found at %s (build it, or set CONTINUAL_LIB)" % path)
            lib = C.CDLL(path)
            _declare(lib)
            _lib = lib
        return _lib


def library_available():
    try:
        library()
        return True
    except OSError:
        return False


def _check(status):
    if status != 0:
        lib = library()
        name = lib.co_status_name(status)
        name = name.decode() if name else _STATUS_NAMES.get(status, "CO_ERR_%d" % status)
        msg = lib.co_last_error()
        raise Error(status, name, msg.decode("utf-8", "replace") if msg else "")


def _shape(dims):
    dims = [int(d) for d in dims]
    if len(dims) > CO_MAX_DIMS:
        raise Error(7, "CO_ERR_SHAPE", "shape %r has more than %d dims" % (tuple(dims), CO_MAX_DIMS))
    s = _Shape()
    s.ndim = len(dims)
    for i, d in enumerate(dims):
        s.dims[i] = d
    return s


def _tuple(s):
    return tuple(int(s.dims[i]) for i in range(s.ndim))


def _as_f32(x):
    """numpy array or torch tensor (any float dtype) -> C-contiguous float32 numpy array."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().float().contiguous().numpy()
    x = np.asarray(x)
    if x.dtype != np.float32 or not x.flags.c_contiguous:
        x = np.ascontiguousarray(x, dtype=np.float32)
    return x


def _ptr(a):
    return a.ctypes.data_as(C.c_void_p)


def _temporal_dict(t):
    return {"receptive_field": int(t.receptive_field), "delay": int(t.delay), "stride": int(t.stride),
            "padding": int(t.padding)}


class _Owner:
    """Owns a co_model* for a Model and its Streams. The C model is freed only once the Model is closed
    (or collected) and every Stream on it has freed its co_stream*: finalizers of objects in one garbage
    cycle run in any order, so a Stream's reference to its Model alone does not guarantee that."""

    __slots__ = ("h", "lib", "streams", "closed", "lock")

    def __init__(self, h, lib):
        self.h, self.lib, self.streams, self.closed = h, lib, 0, False
        self.lock = threading.Lock()

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


class Model:
    """A loaded, compiled model (read-only; may be shared by any number of streams)."""

    def __init__(self, handle, path=None):
        self._lib = library()
        self._owner = _Owner(handle, self._lib)
        self.path = path

    @property
    def _handle(self):
        o = self._owner
        if o.closed or not o.h:
            raise Error(1, "CO_ERR_INVALID_ARGUMENT", "the model was closed")
        return o.h

    def close(self):
        """Release the model. Streams created from it keep working; the C object is freed with the last."""
        o = getattr(self, "_owner", None)
        if o is not None and not o.closed:
            o.release(model=True)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- properties ----
    def _temporal(self):
        t = _Temporal()
        _check(self._lib.co_model_temporal(self._handle, C.byref(t)))
        return t

    @property
    def temporal(self):
        return _temporal_dict(self._temporal())

    @property
    def receptive_field(self):
        return int(self._temporal().receptive_field)

    @property
    def delay(self):
        return int(self._temporal().delay)

    @property
    def stride(self):
        return int(self._temporal().stride)

    @property
    def padding(self):
        return int(self._temporal().padding)

    @property
    def frame_shape(self):
        """The frame shape (C, *S) recorded in the file, or None."""
        s = _Shape()
        st = self._lib.co_model_frame_shape(self._handle, C.byref(s))
        if st == 7:  # CO_ERR_SHAPE: the file records none
            return None
        _check(st)
        return _tuple(s)

    @property
    def param_count(self):
        return int(self._lib.co_model_param_count(self._handle))

    @property
    def nodes(self):
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

    def plan_info(self, batch=1, frame_shape=None):
        info = _PlanInfo()
        fs = C.byref(_shape(frame_shape)) if frame_shape is not None else None
        _check(self._lib.co_model_plan_info(self._handle, int(batch), fs, C.byref(info)))
        return {"output_frame": _tuple(info.output_frame), "macs_per_step": int(info.macs_per_step),
                "state_bytes": int(info.state_bytes), "arena_bytes": int(info.arena_bytes),
                "num_ops": int(info.num_ops)}

    # ---- compute ----
    def forward_shape(self, clip_shape):
        out = _Shape()
        _check(self._lib.co_forward_shape(self._handle, C.byref(_shape(clip_shape)), C.byref(out)))
        return _tuple(out)

    def forward(self, clip):
        """The whole clip (B, C, T, *S) at once: what torch.nn gives for it. numpy float32."""
        x = _as_f32(clip)
        ins = _shape(x.shape)
        outs = _Shape()
        _check(self._lib.co_forward_shape(self._handle, C.byref(ins), C.byref(outs)))
        y = np.empty(_tuple(outs), dtype=np.float32)
        _check(self._lib.co_forward(self._handle, C.byref(ins), _ptr(x), _ptr(y), y.size))
        return y

    __call__ = forward

    def stream(self, batch_size=1, frame_shape=None):
        return Stream(self, batch_size, frame_shape)


class Stream:
    """The state of one live stream over a Model. Holds a reference to the model."""

    def __init__(self, model, batch_size=1, frame_shape=None):
        self.model = model
        self._lib = model._lib
        self._h = None
        self._owner = None
        h = C.c_void_p()
        if frame_shape is None:
            _check(self._lib.co_stream_create(model._handle, int(batch_size), C.byref(h)))
        else:
            fs = _shape(frame_shape)
            _check(self._lib.co_stream_create_shaped(model._handle, int(batch_size), C.byref(fs), C.byref(h)))
        self._h = h.value
        self._owner = model._owner  # keeps the C model alive until this stream is freed
        self._owner.add_stream()
        s = _Shape()
        _check(self._lib.co_stream_input_shape(self._h, C.byref(s)))
        self.input_shape = _tuple(s)
        _check(self._lib.co_stream_output_shape(self._h, C.byref(s)))
        self.output_shape = _tuple(s)
        self.batch_size = int(batch_size)

    @property
    def _handle(self):
        if not self._h:
            raise Error(1, "CO_ERR_INVALID_ARGUMENT", "the stream was closed")
        return self._h

    def close(self):
        h, self._h = getattr(self, "_h", None), None
        if h:
            self._lib.co_stream_free(h)
            owner, self._owner = self._owner, None
            if owner is not None:
                owner.release(stream=True)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def forward_step(self, x, update_state=True):
        """One frame (B, C, *S) -> one output frame (B, C', *S') or None."""
        x = _as_f32(x)
        if tuple(x.shape) != self.input_shape:
            raise Error(7, "CO_ERR_SHAPE", "forward_step: frame shape %r, the stream takes %r"
                        % (tuple(x.shape), self.input_shape))
        y = np.empty(self.output_shape, dtype=np.float32)
        has = C.c_int(0)
        _check(self._lib.co_forward_step(self._handle, _ptr(x), _ptr(y), C.byref(has), 1 if update_state else 0))
        return y if has.value else None

    def forward_steps(self, x, pad_end=False, update_state=True):
        """A clip (B, C, T, *S) stepped frame by frame -> (B, C', T_out, *S') or None."""
        x = _as_f32(x)
        ins = self.input_shape
        if x.ndim != len(ins) + 1 or tuple(x.shape[:2]) != ins[:2] or tuple(x.shape[3:]) != ins[2:]:
            raise Error(7, "CO_ERR_SHAPE", "forward_steps: clip shape %r, the stream takes (%s) with T at dim 2"
                        % (tuple(x.shape), ", ".join(str(d) for d in ins[:2] + ("T",) + ins[2:])))
        t = int(x.shape[2])
        cap = int(self._lib.co_steps_max_output(self._handle, t, 1 if pad_end else 0))
        if cap < 0:
            _check(7)
        o = self.output_shape
        y = np.empty(o[:2] + (max(cap, 1),) + o[2:], dtype=np.float32)
        t_out = C.c_int64(0)
        _check(self._lib.co_forward_steps(self._handle, _ptr(x), t, _ptr(y), cap, C.byref(t_out),
                                          1 if pad_end else 0, 1 if update_state else 0))
        n = int(t_out.value)
        if n == 0:
            return None
        # the C side writes a contiguous (B, C', T_out, *S') clip at the start of the buffer
        return y.reshape(-1)[: int(np.prod(o)) * n].reshape(o[:2] + (n,) + o[2:]).copy()

    def clean_state(self):
        _check(self._lib.co_stream_clean(self._handle))

    def state_size(self):
        return int(self._lib.co_stream_state_size(self._handle))

    def save_state(self):
        n = self.state_size()
        buf = C.create_string_buffer(max(n, 1))
        written = C.c_size_t(0)
        _check(self._lib.co_stream_save(self._handle, buf, n, C.byref(written)))
        return buf.raw[: written.value]

    def load_state(self, data):
        data = bytes(data)
        buf = C.create_string_buffer(data, max(len(data), 1))
        _check(self._lib.co_stream_restore(self._handle, buf, len(data)))


def load(path):
    """Load and compile a model file."""
    lib = library()
    h = C.c_void_p()
    _check(lib.co_model_load(os.fsencode(os.fspath(path)), C.byref(h)))
    return Model(h.value, os.fspath(path))


def load_memory(data):
    lib = library()
    data = bytes(data)
    buf = C.create_string_buffer(data, max(len(data), 1))
    h = C.c_void_p()
    _check(lib.co_model_load_memory(buf, len(data), C.byref(h)))
    return Model(h.value)
