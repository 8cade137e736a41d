"""Exporter: a torch.nn / continual network -> one continual-c model file (docs/format.md).

The file is a safetensors file written here directly (no `safetensors` package): the whole
`state_dict()` of the root module as tensors, and the network as JSON in `__metadata__`.

The `continual` package (continual-inference) is optional: it is imported lazily, and plain
torch.nn networks export without it.
"""
import json
import math
import struct

import numpy as np
import torch
from torch import nn

__all__ = ["ExportError", "export", "to_network", "write_safetensors", "read_safetensors", "read_model_file"]

FORMAT = "continual-c"
FORMAT_VERSION = "1"
PRODUCER = "continual_c.export 0.1.0"


class ExportError(ValueError):
    """The module (or one of its children) cannot be written to a continual-c model file."""


def _co():
    """The `continual` package if importable, else None (it is optional)."""
    try:
        import continual  # noqa: F401
    except Exception:  # ImportError, or a broken install: treat as absent
        return None
    return continual


def _where(path):
    return "'%s'" % path if path else "<root>"


def _cls(m):
    t = type(m)
    return "%s.%s" % (t.__module__, t.__qualname__)


def _fail(m, path, why):
    raise ExportError("cannot export %s at %s: %s" % (_cls(m), _where(path), why))


def _join(prefix, name):
    return "%s.%s" % (prefix, name) if prefix else name


# ---- leaf tables ------------------------------------------------------------------------------
# type name -> list of (json key, attribute, kind); kind: "f" float, "i" int, "s" str, "b" bool, "l" int list
_ACT = {
    "ReLU": [], "ReLU6": [], "Sigmoid": [], "Tanh": [], "SiLU": [], "Mish": [], "Hardswish": [],
    "Hardsigmoid": [], "SELU": [], "LogSigmoid": [], "Softsign": [], "Tanhshrink": [],
    "GELU": [("approximate", "approximate", "s")],
    "ELU": [("alpha", "alpha", "f")],
    "CELU": [("alpha", "alpha", "f")],
    "LeakyReLU": [("negative_slope", "negative_slope", "f")],
    "Hardtanh": [("min_val", "min_val", "f"), ("max_val", "max_val", "f")],
    "Threshold": [("threshold", "threshold", "f"), ("value", "value", "f")],
    "RReLU": [("lower", "lower", "f"), ("upper", "upper", "f")],
    "Hardshrink": [("lambd", "lambd", "f")],
    "Softshrink": [("lambd", "lambd", "f")],
    "Softplus": [("beta", "beta", "f"), ("threshold", "threshold", "f")],
    "PReLU": [("num_parameters", "num_parameters", "i")],
    "GLU": [("dim", "dim", "i")],
    "Softmax": [("dim", "dim", "i")],
    "Softmin": [("dim", "dim", "i")],
    "LogSoftmax": [("dim", "dim", "i")],
    "Softmax2d": [],
}
_DROPOUT = ["Identity", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"]
_BN = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"]
_NORM_KEYS = {
    "GroupNorm": [("num_groups", "num_groups", "i"), ("num_channels", "num_channels", "i"), ("eps", "eps", "f"),
                  ("affine", "affine", "b")],
    "LayerNorm": [("normalized_shape", "normalized_shape", "l"), ("eps", "eps", "f"),
                  ("elementwise_affine", "elementwise_affine", "b")],
}
for _n in _BN:
    _NORM_KEYS[_n] = [("num_features", "num_features", "i"), ("eps", "eps", "f"), ("affine", "affine", "b"),
                      ("track_running_stats", "track_running_stats", "b")]


def _torch_leaf_classes():
    """torch class -> format type name, for the frame-local leaves (activations, norms, dropouts)."""
    table = {}
    for name in list(_ACT) + _DROPOUT + list(_NORM_KEYS):
        cls = getattr(nn, name, None)
        if cls is not None:  # every name exists in torch >= 1.12; be lenient with older ones
            table[cls] = name
    return table


def _value(m, path, attr, kind):
    v = getattr(m, attr)
    if kind == "f":
        v = float(v)
        if not math.isfinite(v):
            _fail(m, path, "hyper-parameter '%s' = %r is not finite" % (attr, v))
        return v
    if kind == "i":
        if v is None:
            _fail(m, path, "hyper-parameter '%s' is None; give an explicit value" % attr)
        return int(v)
    if kind == "b":
        return bool(v)
    if kind == "s":
        return str(v)
    if kind == "l":
        return [int(i) for i in v]
    raise AssertionError(kind)


def _find_torch_type(m, table):
    """Format type for `m`: exact class first; a user subclass is accepted when it keeps the
    torch class's forward (otherwise it computes something we do not know)."""
    t = type(m)
    if t in table:
        return table[t]
    for base in t.__mro__[1:]:
        if base in table:
            if getattr(t, "forward", None) is getattr(base, "forward", None):
                return table[base]
            return None
    return None


# ---- conv ------------------------------------------------------------------------------------
def _conv_padding(m, path, nd):
    pad = m.padding
    if isinstance(pad, str):
        if pad == "valid":
            return [0] * nd
        if pad == "same":
            out = []
            for k, d in zip(m.kernel_size, m.dilation):
                total = d * (k - 1)
                if total % 2:
                    _fail(m, path, "padding='same' is asymmetric for kernel %s / dilation %s"
                          % (tuple(m.kernel_size), tuple(m.dilation)))
                out.append(total // 2)
            return out
        _fail(m, path, "unknown padding %r" % pad)
    return [int(p) for p in pad]


def _conv_node(m, name, path, nd, temporal_fill):
    if getattr(m, "transposed", False):
        _fail(m, path, "transposed convolutions are not supported")
    padding_mode = m.padding_mode
    if padding_mode not in ("zeros", "replicate"):
        _fail(m, path, "padding_mode=%r is not supported (only 'zeros' and 'replicate'; "
              "reflect/circular padding cannot be streamed)" % padding_mode)
    if temporal_fill not in ("zeros", "replicate"):
        _fail(m, path, "temporal_fill=%r is not supported (only 'zeros' and 'replicate')" % temporal_fill)
    dilation = [int(d) for d in m.dilation]
    if dilation[0] != 1:
        _fail(m, path, "temporal dilation %d is not supported (dilation[0] must be 1; spatial dilation is fine)"
              % dilation[0])
    ks = [int(k) for k in m.kernel_size]
    stride = [int(s) for s in m.stride]
    if not (len(ks) == len(stride) == len(dilation) == nd):
        _fail(m, path, "expected %d-d kernel/stride/dilation" % nd)
    return {
        "type": "Conv%dd" % nd, "name": name,
        "in_channels": int(m.in_channels), "out_channels": int(m.out_channels),
        "kernel_size": ks, "stride": stride, "padding": _conv_padding(m, path, nd), "dilation": dilation,
        "groups": int(m.groups), "bias": m.bias is not None,
        "padding_mode": padding_mode, "temporal_fill": temporal_fill,
    }, ["weight"] + (["bias"] if m.bias is not None else [])


# ---- the walk --------------------------------------------------------------------------------
class _Walker:
    def __init__(self):
        self.co = _co()
        self.leaf = _torch_leaf_classes()
        self.torch_conv = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
        self.expected = []  # state_dict names the network needs (params and buffers)

    def _co_reduce_name(self, m, path):
        co = self.co
        fn = m.reduce
        seen = set()
        while hasattr(fn, "__wrapped__") and id(fn) not in seen:  # co wraps with nonempty()
            seen.add(id(fn))
            fn = fn.__wrapped__
        known = {}
        cont = getattr(co, "container", None)
        for key in ("sum", "mul", "max", "concat"):
            ref = getattr(cont, "reduce_" + key, None) if cont is not None else None
            if ref is not None:
                known[id(ref)] = key
        if id(fn) in known:
            return known[id(fn)]
        mod = getattr(fn, "__module__", "") or ""
        nm = getattr(fn, "__name__", "")
        if mod.startswith("continual") and nm in ("reduce_sum", "reduce_mul", "reduce_max", "reduce_concat"):
            return nm[len("reduce_"):]
        _fail(m, path, "custom reduce function %r is not supported (only sum, mul, max, concat)"
              % (getattr(fn, "__qualname__", None) or fn))

    def _children(self, m, path):
        kids = []
        for cname, child in m._modules.items():
            if child is None:
                continue
            kids.append(self.node(child, cname, _join(path, cname)))
        return kids

    def _leaf_tensors(self, path, names):
        for n in names:
            self.expected.append(_join(path, n))

    def node(self, m, name, path):
        co = self.co
        # transformer modules (attention, encoder layers, positional encoding) live in their own file
        from . import _export_transformer
        handled = _export_transformer.node(self, m, name, path)
        if handled is not None:
            return handled
        if co is not None and isinstance(m, co.CoModule):
            return self._co_node(m, name, path)
        # ---- plain torch ----
        if type(m) is nn.Sequential or (isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward):
            return {"type": "Sequential", "name": name, "children": self._children(m, path)}
        for cls, nd in self.torch_conv.items():
            if isinstance(m, cls):
                if type(m).forward is not cls.forward:
                    _fail(m, path, "subclass of %s with its own forward() is not supported" % cls.__name__)
                node, tens = _conv_node(m, name, path, nd, m.padding_mode)
                self._leaf_tensors(path, tens)
                return node
        if isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward:
            return self._linear(m, name, path, -1)
        t = _find_torch_type(m, self.leaf)
        if t is None:
            _fail(m, path, "module type not supported by continual-c (see docs/format.md for the supported list)")
        return self._torch_leaf(m, name, path, t)

    def _linear(self, m, name, path, channel_dim):
        node = {"type": "Linear", "name": name, "in_features": int(m.in_features),
                "out_features": int(m.out_features), "bias": m.bias is not None, "channel_dim": int(channel_dim)}
        self._leaf_tensors(path, ["weight"] + (["bias"] if m.bias is not None else []))
        return node

    def _torch_leaf(self, m, name, path, t):
        node = {"type": t, "name": name}
        if t in _ACT:
            for key, attr, kind in _ACT[t]:
                node[key] = _value(m, path, attr, kind)
            if t in ("Softmax", "Softmin", "LogSoftmax") and m.dim is None:
                _fail(m, path, "dim=None (implicit softmax dim) is not supported; give dim explicitly")
            if t == "PReLU":
                self._leaf_tensors(path, ["weight"])
            return node
        if t in _DROPOUT:
            return node
        for key, attr, kind in _NORM_KEYS[t]:
            node[key] = _value(m, path, attr, kind)
        if t in _BN:
            if not m.track_running_stats or m.running_mean is None:
                _fail(m, path, "track_running_stats=False is not supported: inference must use running "
                      "statistics (batch/instance statistics over the clip are not frame-local)")
            names = (["weight", "bias"] if m.affine else []) + ["running_mean", "running_var", "num_batches_tracked"]
        elif t == "GroupNorm":
            names = ["weight", "bias"] if m.affine else []
        else:  # LayerNorm
            names = ["weight", "bias"] if m.elementwise_affine else []
        self._leaf_tensors(path, names)
        return node

    def _co_node(self, m, name, path):
        co = self.co
        if isinstance(m, co.BroadcastReduce):
            return {"type": "BroadcastReduce", "name": name, "children": self._children(m, path),
                    "reduce": self._co_reduce_name(m, path)}
        if type(m) is co.Sequential:
            return {"type": "Sequential", "name": name, "children": self._children(m, path)}
        for nd in (1, 2, 3):
            cls = getattr(co, "Conv%dd" % nd, None)
            if cls is not None and isinstance(m, cls):
                fill = getattr(m, "t_padding_mode", "zeros")
                fill = getattr(fill, "value", fill)
                node, tens = _conv_node(m, name, path, nd, fill)
                self._leaf_tensors(path, tens)
                return node
        if isinstance(m, co.Linear):
            return self._linear(m, name, path, getattr(m, "channel_dim", -1))
        if isinstance(m, co.Delay):
            mk = getattr(m, "_make_padding", torch.zeros_like)
            if mk is torch.zeros_like:
                fill = "zeros"
            elif mk is torch.clone:
                fill = "replicate"
            else:
                _fail(m, path, "unknown temporal fill %r" % (mk,))
            shrink = m.auto_shrink
            if not (shrink is False or shrink is True or shrink in ("centered", "lagging")):
                _fail(m, path, "unknown auto_shrink %r" % (shrink,))
            return {"type": "Delay", "name": name, "delay": int(m.delay), "temporal_fill": fill,
                    "auto_shrink": shrink}
        lam = getattr(co, "Lambda", None)
        if lam is not None and isinstance(m, lam):
            closure = getattr(co, "closure", None)
            unity = getattr(closure, "_unity", None)
            if unity is not None and getattr(m, "fn", None) is unity:  # co.Identity()
                return {"type": "Identity", "name": name}
            _fail(m, path, "co.Lambda with an arbitrary function cannot be exported")
        _fail(m, path, "continual module type not supported by continual-c (see docs/format.md)")


def to_network(module):
    """The network JSON (as a Python dict) and the list of state_dict names it uses."""
    if not isinstance(module, nn.Module):
        raise ExportError("export() needs a torch.nn.Module, got %s" % type(module).__name__)
    w = _Walker()
    net = w.node(module, "", "")
    return net, w.expected


# ---- safetensors ------------------------------------------------------------------------------
_DT = {np.dtype("<f4"): "F32", np.dtype("<i8"): "I64", np.dtype("<f8"): "F64", np.dtype("<f2"): "F16",
       np.dtype("<i4"): "I32", np.dtype("u1"): "U8", np.dtype("i1"): "I8", np.dtype("bool"): "BOOL"}
_DT_INV = {v: k for k, v in _DT.items()}


def write_safetensors(path, tensors, metadata=None):
    """Write `tensors` (an ordered mapping name -> numpy array) to `path` as safetensors.
    Header: JSON padded with spaces to a multiple of 8; data contiguous, in the given order."""
    header = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ExportError("safetensors __metadata__ must map strings to strings (%r: %r)" % (k, v))
        header["__metadata__"] = dict(metadata)
    blobs = []
    off = 0
    for name, arr in tensors.items():
        if name == "__metadata__":
            raise ExportError("a tensor may not be named __metadata__")
        arr = np.asarray(arr)
        if not arr.flags.c_contiguous:
            arr = arr.copy(order="C")  # (np.ascontiguousarray would turn a 0-d array into 1-d)
        dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        if dt not in _DT:
            raise ExportError("tensor %r: dtype %s cannot be written" % (name, arr.dtype))
        data = arr.astype(dt, copy=False).tobytes()
        header[name] = {"dtype": _DT[dt], "shape": [int(s) for s in arr.shape], "data_offsets": [off, off + len(data)]}
        off += len(data)
        blobs.append(data)
    hb = json.dumps(header, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    hb += b" " * ((-len(hb)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """(metadata dict, {name: numpy array}) of a safetensors file; checks the layout rules."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError("file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError("header length %d runs past the end of the file" % n)
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    buf = raw[8 + n:]
    spans = sorted((v["data_offsets"][0], v["data_offsets"][1], k) for k, v in header.items())
    pos = 0
    for b, e, k in spans:
        if b != pos:
            raise ValueError("tensor %r starts at %d, expected %d (hole or overlap)" % (k, b, pos))
        pos = e
    if pos != len(buf):
        raise ValueError("tensor data ends at %d but the buffer has %d bytes" % (pos, len(buf)))
    tensors = {}
    for k, v in header.items():
        dt = _DT_INV[v["dtype"]]
        b, e = v["data_offsets"]
        shape = tuple(v["shape"])
        if (e - b) != int(np.prod(shape, dtype=np.int64)) * dt.itemsize:
            raise ValueError("tensor %r: byte size does not match its shape" % k)
        tensors[k] = np.frombuffer(buf[b:e], dtype=dt).reshape(shape)
    return meta, tensors


def read_model_file(path):
    """(network dict, frame_shape or None, metadata, tensors) of a continual-c model file."""
    meta, tensors = read_safetensors(path)
    net = json.loads(meta["network"])
    fs = json.loads(meta["frame_shape"]) if "frame_shape" in meta else None
    return net, fs, meta, tensors


# ---- export -----------------------------------------------------------------------------------
def _tensor_to_numpy(name, t):
    t = t.detach().cpu()
    if t.is_complex():
        raise ExportError("tensor %r is complex; not supported" % name)
    if t.is_floating_point():
        return t.to(torch.float32).contiguous().numpy().astype("<f4", copy=False)
    return t.to(torch.int64).contiguous().numpy().astype("<i8", copy=False)


def export(module, path, input_shape=None):
    """Write `module` (torch.nn or continual) to `path` as a continual-c model file.

    input_shape: optional per-frame shape without batch and time, e.g. (3, 16, 16) for clips
    (B, 3, T, 16, 16); stored as "frame_shape" so that streams can be created without a shape.
    Returns the network JSON (a dict). Raises ExportError for unsupported modules, naming the
    class and its dotted path in the network.
    """
    net, expected = to_network(module)
    sd = module.state_dict()
    names = list(sd.keys())
    missing = [n for n in expected if n not in sd]
    if missing:
        raise ExportError("state_dict lacks tensors the network needs: %s" % ", ".join(missing))
    exp = set(expected)
    extra = [n for n in names if n not in exp]
    if extra:
        raise ExportError("state_dict holds tensors no exported module uses (a module with extra parameters or "
                          "buffers, e.g. a parametrization, is not supported): %s" % ", ".join(extra))
    tensors = {}
    for n in names:
        tensors[n] = _tensor_to_numpy(n, sd[n])
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "network": json.dumps(net, separators=(",", ":"), allow_nan=False),
        "producer": "%s (torch %s)" % (PRODUCER, torch.__version__),
    }
    if input_shape is not None:
        if isinstance(input_shape, int):
            input_shape = (input_shape,)
        fs = [int(d) for d in input_shape]
        if not fs or any(d < 1 for d in fs):
            raise ExportError("input_shape must be the per-frame shape (C, *S) of positive ints, got %r"
                              % (tuple(input_shape),))
        meta["frame_shape"] = json.dumps(fs)
    write_safetensors(path, tensors, meta)
    return net
