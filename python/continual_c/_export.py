"""Exporter: a torch.nn / continual network -> one continual-c model file (docs/format.md).

The file is a safetensors file written here directly (no `safetensors` package): the whole
`state_dict()` of the root module as tensors, and the network as JSON in `__metadata__`.

The `continual` package (continual-inference) is optional: it is imported lazily, and plain
torch.nn networks export without it.
"""
import functools
import json
import math
import os
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


# What the errors for unsupported code tell the user to do (appended to the reason).
CALLBACK_FIX = ("co.Lambda(fn) exported with export(..., callbacks=[fn]) and loaded with "
                "continual_c.load(path, callbacks={fn.__name__: fn})")
UNSUPPORTED_MODULE_FIX = (
    "what to do: docs/format.md lists the modules and graph ops continual-c runs; frame-local code (no state "
    "across frames) is traced into a graph when it is a custom nn.Module or wrapped as co.forward_stepping(module) "
    "(pass export(..., input_shape=(C, *S))); a function that cannot be traced runs as a Python callback: "
    + CALLBACK_FIX)
# ... and for a subclass of a module with a temporal window or a recurrence that overrides forward()
SUBCLASS_FORWARD_FIX = (
    "what to do: keep the stock %s for the part that spans frames and move the extra code into a module of its "
    "own next to it (frame-local code is traced into a graph; see docs/format.md)")


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


# ---- pooling -----------------------------------------------------------------------------------
def _ntuple_int(v, nd, m, path, what):
    if isinstance(v, (list, tuple)):
        if len(v) == 1 and nd > 1:
            v = list(v) * nd
        if len(v) != nd:
            _fail(m, path, "%s %r does not have %d entries" % (what, tuple(v), nd))
        out = []
        for i in v:
            if i is None:
                _fail(m, path, "%s %r holds None" % (what, tuple(v)))
            out.append(int(i))
        return out
    if v is None:
        _fail(m, path, "%s is None" % what)
    return [int(v)] * nd


def _fill_name(m, path, default="zeros"):
    """The temporal fill of a continual module: its `_make_padding` function (pools, Delay), or a
    `t_padding_mode`/`temporal_fill` attribute; `default` when it has none (plain torch modules)."""
    mk = getattr(m, "_make_padding", None)
    if mk is None:
        fill = getattr(m, "t_padding_mode", None)
        if fill is None:
            fill = getattr(m, "temporal_fill", None)
        if fill is None:
            return default
        fill = getattr(fill, "value", fill)
        if fill not in ("zeros", "replicate", "neg_inf"):
            _fail(m, path, "unknown temporal fill %r" % (fill,))
        return fill
    if mk is torch.zeros_like:
        return "zeros"
    if mk is torch.clone:
        return "replicate"
    if getattr(mk, "__name__", "") == "neginf_like" and (getattr(mk, "__module__", "") or "").startswith("continual"):
        return "neg_inf"
    _fail(m, path, "unknown temporal fill function %r" % (mk,))


def _pool_node(m, name, path, kind, nd, fill):
    """AvgPoolNd / MaxPoolNd (torch or continual) -> node. kind: "Avg" or "Max"."""
    ks = _ntuple_int(m.kernel_size, nd, m, path, "kernel_size")
    stride = m.stride
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        stride = ks
    stride = _ntuple_int(stride, nd, m, path, "stride")
    padding = _ntuple_int(m.padding, nd, m, path, "padding")
    for k, p in zip(ks, padding):
        if 2 * p > k:
            _fail(m, path, "padding %s must be at most half the kernel %s" % (tuple(padding), tuple(ks)))
    node = {"type": "%sPool%dd" % (kind, nd), "name": name, "kernel_size": ks, "stride": stride, "padding": padding,
            "ceil_mode": bool(getattr(m, "ceil_mode", False))}
    if kind == "Avg":
        dil = getattr(m, "dilation", None)  # continual avg pools take a temporal dilation torch's forward ignores
        if dil is not None and any(d != 1 for d in _ntuple_int(dil, nd, m, path, "dilation")):
            _fail(m, path, "average pooling with dilation %r is not supported (torch's AvgPool has no dilation: "
                  "forward ignores it while the reference's steps use it)" % (dil,))
        node["count_include_pad"] = bool(getattr(m, "count_include_pad", True))
        div = getattr(m, "divisor_override", None)
        if div is not None and int(div) <= 0:
            _fail(m, path, "divisor_override=%r must be positive" % (div,))
        node["divisor_override"] = None if div is None else int(div)
    else:
        node["dilation"] = _ntuple_int(getattr(m, "dilation", 1), nd, m, path, "dilation")
        if getattr(m, "return_indices", False):
            _fail(m, path, "return_indices=True is not supported")
        node["return_indices"] = False
    node["temporal_fill"] = fill
    return node


def _adaptive_pool_node(m, name, path, kind, nd, fill):
    out = m.output_size
    out = list(out) if isinstance(out, (list, tuple)) else [out] * nd
    if len(out) != nd or any(o is None for o in out):
        _fail(m, path, "output_size %r must give every dim explicitly (None is not supported)" % (m.output_size,))
    out = [int(o) for o in out]
    if out[0] != 1:
        _fail(m, path, "output_size[0] (time) must be 1, got %d" % out[0])
    if getattr(m, "return_indices", False):
        _fail(m, path, "return_indices=True is not supported")

    def first(attr, default):
        v = getattr(m, attr, default)
        if isinstance(v, (list, tuple)):
            v = v[0]
        if v is None:
            _fail(m, path, "temporal %s is None" % attr)
        return int(v)

    return {"type": "Adaptive%sPool%dd" % (kind, nd), "name": name, "output_size": out,
            "kernel_size": first("kernel_size", None), "stride": first("stride", 1), "padding": first("padding", 0),
            "dilation": first("dilation", 1), "temporal_fill": fill}


# ---- recurrent -----------------------------------------------------------------------------------
_RNN_MODES = {"RNN_TANH": ("RNN", "tanh"), "RNN_RELU": ("RNN", "relu"), "GRU": ("GRU", None), "LSTM": ("LSTM", None)}


def _rnn_node(m, name, path):
    mode = getattr(m, "mode", None)
    if mode not in _RNN_MODES:
        _fail(m, path, "unknown recurrent mode %r" % (mode,))
    t, nonlin = _RNN_MODES[mode]
    if m.bidirectional:
        _fail(m, path, "bidirectional=True is not supported (the backward direction needs the future)")
    proj = int(getattr(m, "proj_size", 0) or 0)
    if proj and t != "LSTM":
        _fail(m, path, "proj_size is an LSTM option")
    node = {"type": t, "name": name, "input_size": int(m.input_size), "hidden_size": int(m.hidden_size),
            "num_layers": int(m.num_layers), "bias": bool(m.bias), "batch_first": bool(m.batch_first),
            "bidirectional": False, "dropout": float(m.dropout)}
    if t == "RNN":
        node["nonlinearity"] = nonlin
    if t == "LSTM":
        node["proj_size"] = proj
    names = []
    for k in range(int(m.num_layers)):
        names += ["weight_ih_l%d" % k, "weight_hh_l%d" % k]
        if m.bias:
            names += ["bias_ih_l%d" % k, "bias_hh_l%d" % k]
        if proj:
            names.append("weight_hr_l%d" % k)
    return node, names


# ---- closures and functions ------------------------------------------------------------------------
def _builtin_functions():
    """Python/torch function object -> built-in Lambda function name of docs/format.md."""
    import torch.nn.functional as F

    table = {}
    cands = {
        "relu": [torch.relu, F.relu, getattr(torch.Tensor, "relu", None)],
        "sigmoid": [torch.sigmoid, getattr(F, "sigmoid", None), getattr(torch.Tensor, "sigmoid", None)],
        "tanh": [torch.tanh, getattr(F, "tanh", None), getattr(torch.Tensor, "tanh", None)],
        "exp": [torch.exp, getattr(torch.Tensor, "exp", None)],
        "log": [torch.log, getattr(torch.Tensor, "log", None)],
        "abs": [torch.abs, getattr(torch, "absolute", None), getattr(torch.Tensor, "abs", None)],
        "neg": [torch.neg, getattr(torch, "negative", None), getattr(torch.Tensor, "neg", None)],
        "square": [torch.square, getattr(torch.Tensor, "square", None)],
        "sqrt": [torch.sqrt, getattr(torch.Tensor, "sqrt", None)],
        "sin": [torch.sin, getattr(torch.Tensor, "sin", None)],
        "cos": [torch.cos, getattr(torch.Tensor, "cos", None)],
        "identity": [],
    }
    for key, fns in cands.items():
        for f in fns:
            if f is not None:
                table[id(f)] = (f, key)
    return table


_ELEMENTWISE_FUNCTORS = [k for k, keys in _ACT.items() if not any(key == "dim" for key, _, _ in keys)
                         and k != "Softmax2d"]


def _scalar(m, path, v, what):
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            _fail(m, path, "%s is a tensor of shape %s; only scalars are supported" % (what, tuple(v.shape)))
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        try:
            v = float(v)
        except (TypeError, ValueError):
            _fail(m, path, "%s %r is not a number" % (what, v))
    v = float(v)
    if not math.isfinite(v) or abs(v) > 3.4e38:
        _fail(m, path, "%s %r is not a finite float32" % (what, v))
    return v


def _callback_name(m, path, fn, what):
    nm = getattr(fn, "__name__", None)
    if not isinstance(nm, str) or not nm or nm == "<lambda>" or len(nm) > 256:
        _fail(m, path, "%s %r has no usable __name__ (use a named def; the C side looks the function up by "
              "that name among the callbacks given at load)" % (what, fn))
    return nm


class _InputRead(Exception):
    """Raised by _UntouchedInput: a predicate looked at its input."""


class _UntouchedInput:
    """Stands in for the input when probing a Conditional's predicate: any use of it raises."""

    def __getattr__(self, name):
        raise _InputRead(name)

    def _touch(self, *args, **kwargs):
        raise _InputRead("operator")

    __bool__ = __len__ = __iter__ = __getitem__ = __float__ = __int__ = __index__ = _touch
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _touch
    __lt__ = __le__ = __gt__ = __ge__ = __eq__ = __ne__ = __neg__ = __abs__ = __pow__ = _touch
    __hash__ = None

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        raise _InputRead(getattr(func, "__name__", "torch function"))


def _predicate_without_input(m):
    """The branch a co.Conditional takes when its predicate does not read the input (it reads
    only module.training or constants): True / False; None when the predicate reads the input
    or fails without it (then it needs a C callback at load)."""
    try:
        v = m.predicate(m, _UntouchedInput())
    except Exception:  # _InputRead, or anything a predicate does with a missing input
        return None
    if isinstance(v, torch.Tensor):
        return None
    try:
        return bool(v)
    except Exception:
        return None


# ---- the walk --------------------------------------------------------------------------------
class _Walker:
    def __init__(self, root=None, input_shape=None, callbacks=()):
        self.co = _co()
        self.leaf = _torch_leaf_classes()
        self.torch_conv = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
        self.builtins = _builtin_functions()
        self.expected = []  # state_dict names the network needs (params and buffers)
        self.dropped = []  # module paths whose tensors the network does not use (untaken Conditional branches)
        # traced frame-local code (_trace.py): the root and frame shape to record the inputs each
        # module sees (lazily, on the first module that needs tracing), the Lambda functions to keep
        # as C callbacks instead, and the constant tensors the Graph nodes add to the file
        self.root = root
        self.input_shape = input_shape
        self.callbacks = set(callbacks or ())
        self.recorded = None
        self.extra_tensors = {}

    # ---- traced frame-local code (see _trace.py) ----
    def _recorded_input(self, m, path, what):
        from . import _trace

        if self.root is None or self.input_shape is None:
            _fail(m, path, "%s is traced into a Graph of primitive ops, which needs the frame shape: pass "
                  "input_shape=(C, *S) to export()" % what)
        if self.recorded is None:
            self.recorded = _trace.capture_inputs(self.root, self.input_shape, self.co)
        x = self.recorded.get(id(m))
        if x is None:
            _fail(m, path, "%s is traced into a Graph, but running the network once on a clip did not reach it "
                  "(its input shape is unknown)" % what)
        return x

    def _add_graph(self, path, node, claimed, extra):
        for n in claimed:
            self.expected.append(_join(path, n))
        for k, v in extra.items():
            full = _join(path, k)
            self.extra_tensors[full] = v
            self.expected.append(full)
        return node

    def _trace_module(self, m, name, path):
        from . import _trace
        from ._export_transformer import _in_token_scope

        x = self._recorded_input(m, path, "custom module code")
        node, claimed, extra = _trace.module_graph(m, name, path, x, token_scope=_in_token_scope(self))
        return self._add_graph(path, node, claimed, extra)

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

    def _branches(self, m, path):
        """Children of a BroadcastReduce / Parallel. The reference's auto-delay appends
        Delay(D - delay) after a branch; its delays count input steps, but a Delay after a branch
        of temporal stride s counts the branch's output steps (semantics.md Q12). For strided
        branches continual-c puts that Delay before the branch, where it counts input steps and
        aligns the branches as intended (decisions.md Q12). Tensor names do not change."""
        kids = self._children(m, path)
        co = self.co
        mods = [c for c in m._modules.values() if c is not None]
        delays = [int(getattr(c, "delay", 0)) for c in mods]
        for i, c in enumerate(mods):
            if not (co is not None and type(c) is co.Sequential and len(c) == 2 and isinstance(c[1], co.Delay)):
                continue
            inner, dl = c[0], c[1]
            stride = getattr(inner, "stride", (1,))
            stride = int(stride[0] if isinstance(stride, (tuple, list)) else stride)
            others = [delays[j] for j in range(len(mods)) if j != i]
            if stride > 1 and dl.auto_shrink is False and others and int(dl.delay) == max(others) - int(inner.delay):
                kids[i]["children"] = kids[i]["children"][::-1]
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
                    return self._trace_module(m, name, path)  # its own forward: traced
                node, tens = _conv_node(m, name, path, nd, m.padding_mode)
                self._leaf_tensors(path, tens)
                return node
        if isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward:
            return self._linear(m, name, path, -1)
        # pooling, as co.continual() converts it (temporal fill "zeros"; max pooling pads with -inf anyway)
        for kind in ("Avg", "Max"):
            for nd in (1, 2, 3):
                cls = getattr(nn, "%sPool%dd" % (kind, nd))
                if isinstance(m, cls):
                    if type(m).forward is not cls.forward:  # a temporal window: not frame-local code
                        _fail(m, path, "subclass of %s with its own forward() is not supported; %s"
                              % (cls.__name__, SUBCLASS_FORWARD_FIX % cls.__name__))
                    return _pool_node(m, name, path, kind, nd, "zeros")
        for kind in ("Avg", "Max"):
            for nd in (1, 2, 3):
                cls = getattr(nn, "Adaptive%sPool%dd" % (kind, nd), None)
                if cls is not None and isinstance(m, cls):
                    _fail(m, path, "a torch adaptive pool has no temporal window for step mode; use "
                          "co.Adaptive%sPool%dd(output_size, kernel_size=...) (1d adaptive pools are not "
                          "supported)" % (kind, nd))
        for cls in (nn.RNN, nn.GRU, nn.LSTM):
            if isinstance(m, cls):
                if type(m).forward is not cls.forward:  # recurrent state cannot be traced into a frame-local graph
                    _fail(m, path, "subclass of %s with its own forward() is not supported; %s"
                          % (cls.__name__, SUBCLASS_FORWARD_FIX % cls.__name__))
                node, tens = _rnn_node(m, name, path)
                self._leaf_tensors(path, tens)
                return node
        t = _find_torch_type(m, self.leaf)
        if t is None:
            # any other module (custom code, the module inside co.forward_stepping): traced with torch.fx
            # into a Graph of primitive ops (docs/format.md "Graph nodes"; _trace.py)
            return self._trace_module(m, name, path)
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
            return {"type": "BroadcastReduce", "name": name, "children": self._branches(m, path),
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
        for kind in ("Avg", "Max"):
            for nd in (2, 3):
                cls = getattr(co, "Adaptive%sPool%dd" % (kind, nd), None)
                if cls is not None and isinstance(m, cls):
                    return _adaptive_pool_node(m, name, path, kind, nd, _fill_name(m, path))
        for kind in ("Avg", "Max"):
            for nd in (1, 2, 3):
                cls = getattr(co, "%sPool%dd" % (kind, nd), None)
                if cls is not None and isinstance(m, cls):
                    return _pool_node(m, name, path, kind, nd, _fill_name(m, path))
        for t in ("RNN", "GRU", "LSTM"):
            cls = getattr(co, t, None)
            if cls is not None and isinstance(m, cls):
                node, tens = _rnn_node(m, name, path)
                self._leaf_tensors(path, tens)
                return node
        if isinstance(m, co.Broadcast):
            n = m.num_streams
            if not isinstance(n, int) or isinstance(n, bool):
                _fail(m, path, "num_streams is %r; give it explicitly or follow the Broadcast by a Parallel in a "
                      "co.Sequential (which infers it)" % (n,))
            if not 1 <= n <= 8:
                _fail(m, path, "num_streams=%d is not supported (1 to 8 streams)" % n)
            return {"type": "Broadcast", "name": name, "num_streams": int(n)}
        if isinstance(m, co.Parallel):
            return {"type": "Parallel", "name": name, "children": self._branches(m, path)}
        if isinstance(m, co.ParallelDispatch):
            mapping = m.dispatch_mapping
            flat = []
            for e in mapping:
                if isinstance(e, bool) or not isinstance(e, int):
                    _fail(m, path, "grouping mapping entry %r is not supported (only a flat list of stream "
                          "indices)" % (e,))
                flat.append(int(e))
            if not flat:
                _fail(m, path, "empty mapping")
            return {"type": "ParallelDispatch", "name": name, "mapping": flat}
        if isinstance(m, co.Reduce):
            return {"type": "Reduce", "name": name, "reduce": self._co_reduce_name(m, path)}
        if isinstance(m, co.Conditional):
            taken = _predicate_without_input(m)
            if taken is None:  # the predicate reads its input: decided per step by a C callback
                pred = _callback_name(m, path, m.predicate, "predicate")
                return {"type": "Conditional", "name": name, "predicate": pred, "children": self._children(m, path)}
            # Resolved here (e.g. `not module.training`): the branch the exported module takes,
            # under its own name so tensor names stay; the other branch's tensors are left out.
            pick = "0" if taken else "1"
            for key, child in m._modules.items():
                if key != pick and child is not None:
                    self.dropped.append(_join(path, key))
            child = m._modules.get(pick)
            if child is None:  # predicate false and no on_false: the input passes through
                return {"type": "Identity", "name": name}
            return {"type": "Sequential", "name": name, "children": [self.node(child, pick, _join(path, pick))]}
        skip = getattr(co, "Skip", None)
        if skip is not None and isinstance(m, skip):
            return {"type": "Skip", "name": name, "steps": int(m.steps)}
        reshape = getattr(co, "Reshape", None)
        if reshape is not None and isinstance(m, reshape):
            shape = [int(d) for d in m.shape]
            if sum(1 for d in shape if d == -1) > 1 or any(d == 0 or d < -1 for d in shape):
                _fail(m, path, "shape %r: sizes must be positive, with at most one -1" % (tuple(m.shape),))
            return {"type": "Reshape", "name": name, "shape": shape, "contiguous": bool(m.contiguous)}
        lam = getattr(co, "Lambda", None)
        if lam is not None and isinstance(m, lam):
            return self._lambda(m, name, path)
        _fail(m, path, "continual module type not supported by continual-c; " + UNSUPPORTED_MODULE_FIX)

    def _lambda(self, m, name, path):
        co = self.co
        fn = m.fn
        takes_time = bool(getattr(m, "takes_time", False))
        special = [(attr, getattr(m, attr, None)) for attr in ("forward_only_fn", "forward_step_only_fn",
                                                               "forward_steps_only_fn")]
        special = [(a, f) for a, f in special if f is not None]
        if special:
            # accepted only when every mode runs one function (then it is that function)
            fns = [f for _, f in special] + ([fn] if fn is not None else [])
            step_fn = dict(special).get("forward_step_only_fn", fn)
            if any(f is not fns[0] for f in fns) or (fn is None and len(special) < 3):
                _fail(m, path, "co.Lambda with a call-mode specific function (%s) is not supported (only when the "
                      "step and forward functions are the same function)" % ", ".join(a for a, _ in special))
            if takes_time and step_fn is not fn:
                takes_time = False  # the step function gets the frame as it is
            fn = fns[0]
        closure = getattr(co, "closure", None)
        if closure is not None:
            if fn is getattr(closure, "_unity", None):  # co.Identity()
                return {"type": "Identity", "name": name}
            if isinstance(fn, functools.partial) and not fn.args:
                kw = fn.keywords or {}
                if fn.func is getattr(closure, "_add", None) and set(kw) == {"constant"}:  # co.Add(c)
                    return {"type": "Add", "name": name, "constant": _scalar(m, path, kw["constant"], "constant")}
                if fn.func is getattr(closure, "_multiply", None) and set(kw) == {"factor"}:  # co.Multiply(c)
                    return {"type": "Multiply", "name": name, "factor": _scalar(m, path, kw["factor"], "factor")}
            code = getattr(fn, "__code__", None)
            const_fn = getattr(closure, "Constant", None)
            if code is not None and const_fn is not None and code in getattr(const_fn, "__code__").co_consts \
                    and "constant" in code.co_freevars and fn.__closure__:  # co.Constant(c)
                c = fn.__closure__[code.co_freevars.index("constant")].cell_contents
                return {"type": "Constant", "name": name, "constant": _scalar(m, path, c, "constant")}
        if fn is torch.zeros_like:  # co.Zero()
            return {"type": "Zero", "name": name}
        if fn is torch.ones_like:  # co.One()
            return {"type": "One", "name": name}
        if isinstance(fn, nn.Module):  # a functor, named "fn" in the state_dict
            t = _find_torch_type(fn, self.leaf)
            if t is not None and (t in _ELEMENTWISE_FUNCTORS or t in _DROPOUT):
                return {"type": "Sequential", "name": name,
                        "children": [self._torch_leaf(fn, "fn", _join(path, "fn"), t)]}
            return self._trace_lambda(m, name, path, fn, takes_time, functor=fn)  # other modules: traced
        hit = self.builtins.get(id(fn))
        if hit is not None and hit[0] is fn:
            return {"type": "Lambda", "name": name, "function": hit[1], "takes_time": takes_time}
        if not callable(fn):
            _fail(m, path, "co.Lambda without a function")
        nm = getattr(fn, "__name__", None)
        if isinstance(nm, str) and (nm in self.callbacks or fn in self.callbacks):
            # export(..., callbacks=[...]): kept as a C callback looked up by name at load
            return {"type": "Lambda", "name": name, "function": _callback_name(m, path, fn, "function"),
                    "takes_time": takes_time}
        return self._trace_lambda(m, name, path, fn, takes_time)

    def _trace_lambda(self, m, name, path, fn, takes_time, functor=None):
        from . import _trace

        x = self._recorded_input(m, path, "the co.Lambda function")
        node, claimed, extra = _trace.function_graph(m, fn, name, path, x, takes_time, functor=functor)
        return self._add_graph(path, node, claimed, extra)


def _walk(module, input_shape=None, callbacks=(), walker=None):
    """The network JSON (as a Python dict), the list of state_dict names it uses, and the module
    paths whose tensors it leaves out (Conditional branches resolved at export). `walker` (a list)
    receives the walker (its extra_tensors: the constants of traced Graph nodes)."""
    if not isinstance(module, nn.Module):
        raise ExportError("export() needs a torch.nn.Module, got %s" % type(module).__name__)
    w = _Walker(module, _frame_shape(input_shape), callbacks)
    if walker is not None:
        walker.append(w)
    net = w.node(module, "", "")
    return net, w.expected, w.dropped


def _frame_shape(input_shape):
    if input_shape is None:
        return None
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    fs = [int(d) for d in input_shape]
    if not fs or any(d < 1 for d in fs):
        raise ExportError("input_shape must be the per-frame shape (C, *S) of positive ints, got %r"
                          % (tuple(input_shape),))
    return fs


def to_network(module, input_shape=None, callbacks=()):
    """The network JSON (as a Python dict) and the list of state_dict names it uses (with the
    constants traced Graph nodes add). input_shape, callbacks: as for export()."""
    net, expected, _ = _walk(module, input_shape, callbacks)
    return net, expected


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


def export(module, path, input_shape=None, callbacks=(), description=None, check=True):
    """Write `module` (torch.nn or continual) to `path` as a continual-c model file.

    input_shape: optional per-frame shape without batch and time, e.g. (3, 16, 16) for clips
    (B, 3, T, 16, 16); stored as "frame_shape" so that streams can be created without a shape.
    It is required when the network holds code that is traced (custom modules, co.forward_stepping
    modules, co.Lambda functions: docs/format.md "Graph nodes"): the exporter runs the network once
    on a small clip to learn the frame shape each of them sees.
    callbacks: names (or functions) of co.Lambda functions kept as C callbacks given at load
    (co_load_options) instead of being traced.
    description: optional free text (at most 4096 bytes) stored in the file; `continual info` and
    co_model_description() show it (the model zoo records the paper's figures there).
    Returns the network JSON (a dict). Raises ExportError for unsupported modules, naming the
    class, its dotted path in the network and what to do instead.
    check: where the library can be loaded, the written file is loaded once; an input_shape the
    network cannot take raises ExportError with the library's reason and leaves no file behind.
    check=False writes the file as it is (for tools that rewrite the network afterwards).
    """
    walkers = []
    net, expected, dropped = _walk(module, input_shape, callbacks, walkers)
    sd = module.state_dict()
    graph_consts = walkers[0].extra_tensors  # constants of traced Graph nodes ("<path>.__graph_const<k>")
    clash = [n for n in graph_consts if n in sd]
    if clash:
        raise ExportError("traced graph constants clash with state_dict names: %s" % ", ".join(clash))
    names = list(sd.keys())
    missing = [n for n in expected if n not in sd and n not in graph_consts]
    if missing:
        raise ExportError("state_dict lacks tensors the network needs: %s" % ", ".join(missing))
    exp = set(expected)
    unused = tuple(p + "." for p in dropped)
    names = [n for n in names if n in exp or not n.startswith(unused)]  # untaken branches are not written
    extra = [n for n in names if n not in exp]
    if extra:
        raise ExportError("state_dict holds tensors no exported module uses (a module with extra parameters or "
                          "buffers, e.g. a parametrization, is not supported): %s" % ", ".join(extra))
    tensors = {}
    for n in names:
        tensors[n] = _tensor_to_numpy(n, sd[n])
    for n, v in graph_consts.items():
        tensors[n] = np.ascontiguousarray(v, dtype="<f4")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "network": json.dumps(net, separators=(",", ":"), allow_nan=False),
        "producer": "%s (torch %s)" % (PRODUCER, torch.__version__),
    }
    if description is not None:
        if not isinstance(description, str) or len(description.encode("utf-8")) > 4096:
            raise ExportError("description must be a string of at most 4096 bytes")
        meta["description"] = description
    if input_shape is not None:
        if isinstance(input_shape, int):
            input_shape = (input_shape,)
        fs = [int(d) for d in input_shape]
        if not fs or any(d < 1 for d in fs):
            raise ExportError("input_shape must be the per-frame shape (C, *S) of positive ints, got %r"
                              % (tuple(input_shape),))
        meta["frame_shape"] = json.dumps(fs)
    write_safetensors(path, tensors, meta)
    if input_shape is not None and check:
        _check_frame_shape_loads(path, tuple(fs))
    return net


def _unused_callback(x):
    return x


def _check_frame_shape_loads(path, frame_shape):
    """A file whose recorded frame shape the network cannot take loads nowhere (co_model_load checks
    it): where the library can be loaded, load the file once and, if it refuses the shape
    (CO_ERR_SHAPE), remove the file and raise ExportError with the library's reason. Other load
    errors are left to load() to report. The callbacks the file names get stand-ins (a load does
    not call them)."""
    from . import _binding

    if not _binding.library_available():
        return
    roles = _binding._callback_roles(_binding._file_header(path)) or {}
    try:
        _binding.load(path, callbacks={name: _unused_callback for name in roles} or None).close()
    except _binding.Error as e:
        if e.status_name != "CO_ERR_SHAPE":
            return
        os.remove(path)
        raise ExportError("input_shape %r does not fit the network (%s); nothing was written to %s. input_shape is "
                          "the shape of one frame without batch and time, (C, *S): (3, 16, 16) for clips "
                          "(B, 3, T, 16, 16), (64,) for (B, 64, T)" % (frame_shape, e.message, os.fspath(path))) from None