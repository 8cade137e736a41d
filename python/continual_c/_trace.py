"""Tracer: frame-local user code -> a `Graph` node of primitive ops (docs/format.md, "Graph nodes").

What is traced (the walker calls in here when it meets code it has no table entry for):

* a custom nn.Module (anywhere in the tree, also a torch class subclass with its own forward), and
  the module inside `co.forward_stepping(m)`: the reference's step is `m(x.unsqueeze(2)).squeeze(2)`,
  so `m.forward` is traced on a (B, C, 1, *S) input; the graph starts with a `reshape` (unsqueeze of
  axis 2) and ends with the squeeze of axis 2;
* the function of a `co.Lambda`: takes_time=False -> traced on the frame (B, C, *S);
  takes_time=True -> as forward_stepping (unsqueeze / squeeze around).

How. `torch.fx` records the code (`_Tracer`: the torch modules the exporter knows are leaves, the
rest is inlined; `torch.autograd.Function.apply` is patched for the time of the trace so that custom
autograd functions are traced through their `forward`). The fx graph is then interpreted with
CONCRETE tensors three times, at graph-input batch b, 2b and 3b (b = the batch the module saw when
the exporter ran the network once, `capture_inputs`), with the model's real parameters:

* ints / tuples / torch.Size values ("shape values") are plain Python values in each run; shapes
  given to `reshape` / `expand` are read from the concrete results of the three runs, per axis a
  constant or `{"batch": [n, d]}` (v(kb) = k v(b)); anything else is refused;
* every tensor node becomes primitive ops; each emitted op is evaluated by `_prim` (this file's own
  implementation of docs/format.md's op table) in the three runs and compared with what torch
  computed for the fx node, and the whole graph's output with the module's real output: a wrong
  lowering fails loudly at export time, never silently in C.

`run_graph(node, frame, tensors, path)` evaluates a Graph node in Python (tests use it as the
oracle of the C side's Graph).
"""
import contextlib
import fractions
import math
import operator
import re
import types

import numpy as np
import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

from ._export import CALLBACK_FIX as _CALLBACK_FIX, ExportError, _cls, _where

__all__ = ["capture_inputs", "module_graph", "function_graph", "run_graph", "is_forward_stepping",
           "unwrap_forward", "MAX_OPS", "INLINE_CONST"]

MAX_OPS = 4096
INLINE_CONST = 4096  # elements: larger constants are written as tensors "<path>.__graph_const<k>"
_TOL = 1e-4

_TORCH_DIR = None


def _torch_dir():
    global _TORCH_DIR
    if _TORCH_DIR is None:
        import os

        _TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
    return _TORCH_DIR


# ---- forward_stepping ----------------------------------------------------------------------------
def _callmode_inner(f):
    func = getattr(f, "__func__", f)
    code = getattr(func, "__code__", None)
    if code is not None and code.co_name == "forward_with_callmode" and "orig_forward" in code.co_freevars \
            and func.__closure__:
        return func.__closure__[code.co_freevars.index("orig_forward")].cell_contents
    return None


def unwrap_forward(m):
    """(callable f(x), wrapped): m's own forward, through co.forward_stepping's call-mode wrappers
    (on the instance, or on the class when a class was passed to forward_stepping, as co3d's Swish)."""
    f = m.__dict__.get("forward")
    if f is None:
        f = types.MethodType(type(m).forward, m)
    wrapped = False
    for _ in range(16):
        inner = _callmode_inner(f)
        if inner is None:
            break
        wrapped = True
        if isinstance(inner, types.FunctionType):
            inner = types.MethodType(inner, m)
        f = inner
    return f, wrapped


def is_forward_stepping(m):
    return unwrap_forward(m)[1]


# ---- shape capture -------------------------------------------------------------------------------
def _known_torch_types():
    from . import _export as E

    names = list(E._ACT) + E._DROPOUT + list(E._NORM_KEYS) + ["Sequential", "ModuleList", "ModuleDict", "Linear",
                                                            "Conv1d", "Conv2d", "Conv3d", "RNN", "GRU", "LSTM"]
    names += ["%sPool%dd" % (k, n) for k in ("Avg", "Max") for n in (1, 2, 3)]
    return {getattr(nn, n) for n in names if getattr(nn, n, None) is not None}


_KNOWN_TORCH = None


def _may_be_traced(mod):
    """Whether the exporter may trace `mod` (so capture_inputs must keep its input): not a torch.nn
    class the exporter writes as its own node (exact type: a subclass may have its own forward), and
    not a continual class other than the ones whose code or branches are traced."""
    global _KNOWN_TORCH
    if _KNOWN_TORCH is None:
        _KNOWN_TORCH = _known_torch_types()
    t = type(mod)
    if t in _KNOWN_TORCH:
        return False
    if (t.__module__ or "").startswith("continual."):
        return t.__name__ in ("Lambda", "Conditional", "RetroactiveLambda")
    return True


def capture_inputs(root, input_shape, co=None, seed=0):
    """Run `root` once (eval, no_grad, forward mode) on a small random clip (1, C, T, *S) and record
    the first input of every submodule: {id(module): tensor}. T starts at the receptive field (+ two
    strides, so that strided parts still see two frames) and doubles while the network refuses it."""
    rf = getattr(root, "receptive_field", 1)
    try:
        rf = int(rf)
    except (TypeError, ValueError):
        rf = 1
    st = getattr(root, "stride", (1,))
    try:
        st = int(st[0] if isinstance(st, (tuple, list)) else st)
    except (TypeError, ValueError):
        st = 1
    T = max(1, rf) + 2 * max(1, st)
    rec = {}

    def pre(mod, inp):
        if id(mod) not in rec and inp and isinstance(inp[0], torch.Tensor):
            rec[id(mod)] = inp[0].detach().clone()

    mods = list(root.modules())
    training = [(mm, mm.training) for mm in mods]
    # Only modules that may be traced keep their input: a copy of every module's clip is what
    # made a paper-size CoX3D-L export need more than 24 GB.
    hooks = [mm.register_forward_pre_hook(pre) for mm in mods if _may_be_traced(mm)]
    ctx = contextlib.nullcontext()
    if co is not None and hasattr(co, "call_mode"):
        try:
            ctx = co.call_mode("forward")
        except Exception:
            ctx = contextlib.nullcontext()
    gen = torch.Generator().manual_seed(seed)
    last = None
    try:
        root.eval()
        with torch.no_grad(), ctx:
            for _attempt in range(4):
                rec.clear()
                x = torch.randn((1, int(input_shape[0]), T) + tuple(int(d) for d in input_shape[1:]), generator=gen)
                try:
                    root(x)
                    last = None
                    break
                except Exception as e:  # too short a clip for some temporal kernel: try a longer one
                    last = e
                    T *= 2
            if last is None and co is not None:
                # branches a Conditional did not take: run them on the Conditional's input
                cond = getattr(co, "Conditional", None)
                for mm in mods:
                    if cond is not None and isinstance(mm, cond) and id(mm) in rec:
                        for child in mm._modules.values():
                            if child is not None and id(child) not in rec:
                                try:
                                    child(rec[id(mm)])
                                except Exception:
                                    pass
    finally:
        for h in hooks:
            h.remove()
        for mm, tr in training:
            mm.training = tr
    if last is not None:
        raise ExportError("cannot record the frame shapes the traced modules see: running the network on a "
                          "random clip of frame shape %s failed: %s: %s" % (tuple(input_shape), type(last).__name__,
                                                                           last))
    return rec


# ---- the tracer ----------------------------------------------------------------------------------
_ACT_MODULES = {
    "ReLU": ("relu", []), "ReLU6": ("relu6", []), "Sigmoid": ("sigmoid", []), "Tanh": ("tanh", []),
    "SiLU": ("silu", []), "Mish": ("mish", []), "Hardswish": ("hardswish", []), "Hardsigmoid": ("hardsigmoid", []),
    "SELU": ("selu", []), "LogSigmoid": ("logsigmoid", []), "Softsign": ("softsign", []),
    "Tanhshrink": ("tanhshrink", []), "GELU": ("gelu", ["approximate"]), "ELU": ("elu", ["alpha"]),
    "CELU": ("celu", ["alpha"]), "LeakyReLU": ("leaky_relu", ["negative_slope"]),
    "Hardtanh": ("hardtanh", ["min_val", "max_val"]), "Threshold": ("threshold", ["threshold", "value"]),
    "Hardshrink": ("hardshrink", ["lambd"]), "Softshrink": ("softshrink", ["lambd"]),
    "Softplus": ("softplus", ["beta", "threshold"]),
}
_OTHER_LEAVES = ["RReLU", "PReLU", "GLU", "Softmax", "Softmin", "LogSoftmax", "Softmax2d", "Identity", "Dropout",
                 "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout", "BatchNorm1d",
                 "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "LayerNorm",
                 "GroupNorm", "Flatten", "Unflatten", "Conv1d", "Conv2d", "Conv3d", "Linear"]


def _leaf_classes():
    out = {}
    for n in list(_ACT_MODULES) + _OTHER_LEAVES:
        c = getattr(nn, n, None)
        if c is not None:
            out[c] = n
    return out


_LEAVES = _leaf_classes()


def _leaf_kind(m):
    """Name of the torch class m is (or subclasses without its own forward), else None."""
    t = type(m)
    if t in _LEAVES:
        return _LEAVES[t]
    for base in t.__mro__[1:]:
        if base in _LEAVES:
            return _LEAVES[base] if t.forward is base.forward else None
    return None


def _is_co_module(m):
    try:
        import continual as co
    except Exception:
        return False
    return isinstance(m, co.CoModule)


class _Tracer(torch.fx.Tracer):
    record_stack_traces = True

    def is_leaf_module(self, m, qualname):
        paths = getattr(self, "submodule_paths", None)
        if paths is not None and m not in paths:
            return False  # created inside forward: trace through it
        return _leaf_kind(m) is not None or _is_co_module(m)


class _Root(nn.Module):
    """fx root: `m` (so that names resolve as "m.<state_dict name>") and the callable to trace."""

    def __init__(self, m, fn):
        super().__init__()
        if m is not None:
            self.m = m
        object.__setattr__(self, "_trace_fn", fn)

    def forward(self, x):
        return self._trace_fn(x)


class _Ctx:
    """ctx of a custom autograd.Function while it is traced: saving is a no-op."""

    def __init__(self):
        self.saved_tensors = ()
        self.needs_input_grad = ()
        self.materialize_grads = True

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors

    @property
    def saved_variables(self):
        return self.saved_tensors

    def mark_dirty(self, *a):
        pass

    def mark_non_differentiable(self, *a):
        pass

    def set_materialize_grads(self, v):
        pass


def _proxy_iter(self):
    """torch.fx's Proxy.__iter__ for tuple unpacking (`N, C, T, V = x.shape`), finding the calling
    instruction by its offset (fx 1.13 indexes the instruction list by f_lasti // 2, which is wrong on
    Python >= 3.11, where inline caches follow instructions)."""
    import dis
    import inspect

    frame = inspect.currentframe().f_back
    inst = None
    for i in dis.get_instructions(frame.f_code):
        if i.offset == frame.f_lasti:
            inst = i
            break
    if inst is not None and inst.opname == "UNPACK_SEQUENCE":
        return (self[i] for i in range(inst.argval))
    raise torch.fx.proxy.TraceError("Proxy object cannot be iterated (only tuple unpacking such as "
                                    "`a, b = x.shape` or `a, b = x.chunk(2)` is traced)")


_METHOD_FORM = ("reshape", "permute", "broadcast_to", "tile", "narrow", "movedim", "flatten", "squeeze",
                "unsqueeze", "transpose", "select")


def _method_form(fname, orig):
    def f(input, *args, **kwargs):
        if isinstance(input, torch.fx.Proxy):
            return getattr(input, fname)(*args, **kwargs)
        return orig(input, *args, **kwargs)

    f.__name__ = fname
    f.__wrapped__ = orig
    return f


@contextlib.contextmanager
def _autograd_functions_traced():
    """While tracing: custom autograd.Functions run their forward (traced through), and Proxy
    unpacking works on this Python."""
    fcls = torch.autograd.Function
    had = "apply" in fcls.__dict__
    old = fcls.__dict__.get("apply")
    old_iter = torch.fx.Proxy.__dict__.get("__iter__")

    def apply(cls, *args, **kwargs):
        return cls.forward(_Ctx(), *args, **kwargs)

    fcls.apply = classmethod(apply)
    torch.fx.Proxy.__iter__ = _proxy_iter
    # torch functions whose int-list arguments torch 1.13's argument parser refuses when they hold
    # traced values (`torch.reshape(x, (B, C, T, V))` with B = x.size(0)): the method form is traced
    saved = {}
    for fname in _METHOD_FORM:
        orig = getattr(torch, fname, None)
        if orig is not None:
            saved[fname] = orig
            setattr(torch, fname, _method_form(fname, orig))
    try:
        yield
    finally:
        for fname, orig in saved.items():
            setattr(torch, fname, orig)
        if had:
            fcls.apply = old
        else:
            del fcls.apply
        if old_iter is not None:
            torch.fx.Proxy.__iter__ = old_iter
        else:
            del torch.fx.Proxy.__iter__


_FRAME_RE = re.compile(r'File "([^"]+)", line (\d+), in ([^\n]+)\n(?:    ([^\n]*)\n)?')


def _user_line(stack_text):
    """'file:line: code' of the innermost user frame of an fx stack trace (or a traceback)."""
    if not stack_text:
        return None
    here = __file__.replace(".pyc", ".py")
    for fn, line, func, code in _FRAME_RE.findall(stack_text):
        if fn.startswith(_torch_dir()) or fn == here or fn.endswith(("continual/convert.py", "continual/closure.py",
                                                                     "continual/module.py")):
            continue
        return "%s:%s: %s" % (fn, line, (code or "").strip())
    return None


def _tb_user_line(exc):
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    text = "".join('File "%s", line %d, in %s\n    %s\n' % (f.filename, f.lineno, f.name, f.line or "")
                   for f in reversed(frames))
    return _user_line(text)


# ---- names of functions (for messages) ---------------------------------------------------------
_FN_NAMES = None


def _fn_name(target):
    global _FN_NAMES
    if isinstance(target, str):
        return "Tensor.%s" % target
    if _FN_NAMES is None:
        names = {}
        import torch.fft
        import torch.linalg
        import torch.special

        for prefix, mod in (("operator", operator), ("math", math), ("torch.special", torch.special),
                            ("torch.linalg", torch.linalg), ("torch.fft", torch.fft), ("torch.nn.functional", F),
                            ("torch", torch)):
            for k in dir(mod):
                if k.startswith("__"):
                    continue
                try:
                    v = getattr(mod, k)
                except Exception:
                    continue
                if callable(v):
                    names[id(v)] = "%s.%s" % (prefix, k)
        for k in dir(torch.Tensor):
            try:
                v = getattr(torch.Tensor, k)
            except Exception:
                continue
            names.setdefault(id(v), "Tensor.%s" % k)
        _FN_NAMES = names
    n = _FN_NAMES.get(id(target))
    if n:
        return n
    mod = getattr(target, "__module__", None) or ""
    return ("%s.%s" % (mod, getattr(target, "__qualname__", getattr(target, "__name__", repr(target))))).lstrip(".")


# ---- primitive evaluator (docs/format.md's op table, in torch) ---------------------------------------
def _resolve_shape(shape, batch):
    out = []
    for d in shape:
        if isinstance(d, dict):
            n, q = d["batch"]
            if (batch * n) % q:
                raise ValueError("batch %d is not divisible by %d" % (batch, q))
            out.append(batch * n // q)
        else:
            out.append(int(d))
    return out


_UNARY = {
    "relu": torch.relu, "relu6": F.relu6, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "silu": F.silu,
    "mish": F.mish, "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid, "selu": F.selu,
    "logsigmoid": F.logsigmoid, "softsign": F.softsign, "tanhshrink": F.tanhshrink, "exp": torch.exp,
    "log": torch.log, "abs": torch.abs, "neg": torch.neg, "square": torch.square, "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt, "reciprocal": torch.reciprocal, "sin": torch.sin, "cos": torch.cos, "erf": torch.erf,
    "expm1": torch.expm1, "log1p": torch.log1p, "floor": torch.floor, "ceil": torch.ceil, "round": torch.round,
    "sign": torch.sign, "identity": lambda x: x.clone(), "logical_not": lambda x: (x == 0).float(),
}
_UNARY_ATTR = {
    "gelu": lambda x, o: F.gelu(x, approximate=o.get("approximate", "none")),
    "elu": lambda x, o: F.elu(x, o.get("alpha", 1.0)),
    "celu": lambda x, o: F.celu(x, o.get("alpha", 1.0)),
    "leaky_relu": lambda x, o: F.leaky_relu(x, o.get("negative_slope", 0.01)),
    "hardtanh": lambda x, o: F.hardtanh(x, o.get("min_val", -1.0), o.get("max_val", 1.0)),
    "threshold": lambda x, o: F.threshold(x, o["threshold"], o["value"]),
    "hardshrink": lambda x, o: F.hardshrink(x, o.get("lambd", 0.5)),
    "softshrink": lambda x, o: F.softshrink(x, o.get("lambd", 0.5)),
    "softplus": lambda x, o: F.softplus(x, o.get("beta", 1.0), o.get("threshold", 20.0)),
    "clamp": lambda x, o: torch.clamp(x, o.get("min"), o.get("max")),
}
_BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "pow": torch.pow,
    "maximum": torch.maximum, "minimum": torch.minimum,
    "eq": lambda a, b: (a == b).float(), "ne": lambda a, b: (a != b).float(), "lt": lambda a, b: (a < b).float(),
    "le": lambda a, b: (a <= b).float(), "gt": lambda a, b: (a > b).float(), "ge": lambda a, b: (a >= b).float(),
    "logical_and": lambda a, b: ((a != 0) & (b != 0)).float(),
    "logical_or": lambda a, b: ((a != 0) | (b != 0)).float(),
}
POINTWISE = sorted(list(_UNARY) + list(_UNARY_ATTR))
BINARY = sorted(_BINARY)


def _prim(op, ins, batch, tensor_of):
    """Output of one op (torch float32 tensors in, out); `tensor_of(name)` gives a param's tensor."""
    n = op["op"]
    if n == "param":
        return tensor_of(op["tensor"]).detach().to(torch.float32).reshape(op["shape"]).clone()
    if n == "constant":
        return torch.tensor(op["data"], dtype=torch.float32).reshape(op["shape"])
    if n in _UNARY:
        return _UNARY[n](ins[0])
    if n in _UNARY_ATTR:
        return _UNARY_ATTR[n](ins[0], op)
    if n in _BINARY:
        return _BINARY[n](ins[0], ins[1]).to(torch.float32)
    if n == "where":
        return torch.where(ins[0] != 0, ins[1], ins[2])
    if n == "matmul":
        assert ins[0].dim() >= 2 and ins[1].dim() >= 2
        return torch.matmul(ins[0], ins[1])
    if n == "linear":
        return F.linear(ins[0], ins[1], ins[2] if len(ins) > 2 else None)
    if n == "conv":
        nd = len(op["stride"])
        assert ins[0].dim() == nd + 2
        fn = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
        return fn(ins[0], ins[1], ins[2] if len(ins) > 2 else None, op["stride"], op["padding"], op["dilation"],
                  op["groups"])
    if n == "softmax":
        return torch.softmax(ins[0], op["axis"])
    if n == "log_softmax":
        return torch.log_softmax(ins[0], op["axis"])
    if n in ("sum", "mean", "amax", "amin"):
        fn = {"sum": torch.sum, "mean": torch.mean, "amax": torch.amax, "amin": torch.amin}[n]
        return fn(ins[0], dim=tuple(op["axes"]), keepdim=bool(op["keepdim"]))
    if n == "reshape":
        shape = _resolve_shape(op["shape"], batch)
        return ins[0].reshape(shape).clone()
    if n == "expand":
        shape = _resolve_shape(op["shape"], batch)
        assert len(shape) == ins[0].dim()
        return ins[0].expand(shape).clone()
    if n == "permute":
        return ins[0].permute(op["perm"]).contiguous()
    if n == "cat":
        return torch.cat(list(ins), op["axis"])
    if n == "slice":
        ax = op["axis"]
        idx = [slice(None)] * ins[0].dim()
        idx[ax] = slice(op["start"], op["stop"], op["step"])
        return ins[0][tuple(idx)].contiguous()
    if n == "batch_norm":
        w = ins[3] if len(ins) > 3 else None
        b = ins[4] if len(ins) > 4 else None
        return F.batch_norm(ins[0], ins[1], ins[2], w, b, False, 0.0, op["eps"])
    if n == "layer_norm":
        nd = op["ndim"]
        return F.layer_norm(ins[0], tuple(ins[0].shape[ins[0].dim() - nd:]), ins[1] if len(ins) > 1 else None,
                            ins[2] if len(ins) > 2 else None, op["eps"])
    raise ValueError("unknown graph op %r" % n)


def run_graph(node, frame, tensors, path=""):
    """Evaluate a Graph node (dict) on `frame` (B, C, *S); tensors: {full name: array or tensor}."""
    x = torch.as_tensor(np.asarray(frame), dtype=torch.float32)
    vals = [x]
    batch = x.shape[0]

    def tensor_of(name):
        full = "%s.%s" % (path, name) if path else name
        return torch.as_tensor(np.array(tensors[full]))

    for op in node["ops"]:
        vals.append(_prim(op, [vals[i] for i in op["in"]], batch, tensor_of))
    return vals[node["output"]].numpy()


# ---- values during lowering ----------------------------------------------------------------------
class _T:
    """A tensor of the graph: value id, or (const) a constant emitted on first use."""
    __slots__ = ("id", "const")

    def __init__(self, id=None, const=None):
        self.id = id
        self.const = const


class _P:
    """A Python value (int, float, tuple, torch.Size, None, ...) in each of the three runs."""
    __slots__ = ("cs",)

    def __init__(self, cs):
        self.cs = cs


class _Seq:
    """A tuple of tensors (split/chunk/unbind results, max(dim)): items are thunks -> value."""
    __slots__ = ("items", "cache")

    def __init__(self, items):
        self.items = items
        self.cache = {}

    def get(self, i):
        if i not in self.cache:
            self.cache[i] = self.items[i]()
        return self.cache[i]


class _Unsupported(Exception):
    def __init__(self, what, why=""):
        super().__init__(what)
        self.what = what
        self.why = why


def _is_num(v):
    return isinstance(v, (int, float, bool)) and not isinstance(v, torch.Tensor)


# canonical names of call_function targets and methods
def _canon_tables():
    fn = {}

    def put(name, *objs):
        for o in objs:
            if o is not None:
                fn[id(o)] = (o, name)

    T = torch.Tensor
    g = lambda mod, n: getattr(mod, n, None)  # noqa: E731
    for n in ["add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge",
              "logical_and", "logical_or", "logical_not", "where", "clamp", "sigmoid", "tanh", "relu", "exp", "log",
              "abs", "neg", "square", "sqrt", "rsqrt", "reciprocal", "sin", "cos", "erf", "expm1", "log1p", "floor",
              "ceil", "round", "sign", "matmul", "mm", "bmm", "einsum", "softmax", "log_softmax", "sum", "mean",
              "amax", "amin", "max", "min", "var", "std", "logsumexp", "reshape", "flatten", "squeeze", "unsqueeze",
              "permute", "transpose", "swapaxes", "swapdims", "t", "cat", "concat", "stack", "split", "chunk",
              "unbind", "narrow", "select", "clone", "detach", "zeros_like", "ones_like", "full_like", "movedim",
              "broadcast_to", "true_divide", "floor_divide", "remainder", "rsub", "selu", "celu", "clip",
              "batch_norm", "layer_norm", "prelu", "hardshrink", "threshold", "flip", "addmm", "masked_fill"]:
        put(n, g(torch, n), g(T, n))
    put("add", operator.add, operator.iadd, g(T, "add_"), g(T, "__add__"), g(T, "__iadd__"))
    put("radd", g(T, "__radd__"))
    put("sub", operator.sub, operator.isub, g(T, "sub_"), g(T, "__sub__"))
    put("rsub", g(T, "__rsub__"))
    put("mul", operator.mul, operator.imul, g(T, "mul_"), g(T, "__mul__"), g(torch, "multiply"))
    put("rmul", g(T, "__rmul__"))
    put("div", operator.truediv, operator.itruediv, g(T, "div_"), g(T, "__truediv__"), g(torch, "divide"))
    put("rdiv", g(T, "__rtruediv__"))
    put("floor_divide", operator.floordiv, g(T, "__floordiv__"))
    put("remainder", operator.mod, g(T, "__mod__"))
    put("pow", operator.pow, g(T, "__pow__"))
    put("rpow", g(T, "__rpow__"))
    put("neg", operator.neg, g(T, "__neg__"), g(torch, "negative"))
    put("identity", operator.pos)
    put("logical_not", operator.invert)
    put("logical_and", operator.and_)
    put("logical_or", operator.or_)
    put("ne", operator.xor)
    put("matmul", operator.matmul, g(T, "__matmul__"))
    put("eq", operator.eq)
    put("ne", operator.ne)
    put("lt", operator.lt, g(torch, "less"))
    put("le", operator.le, g(torch, "less_equal"))
    put("gt", operator.gt, g(torch, "greater"))
    put("ge", operator.ge, g(torch, "greater_equal"))
    put("getitem", operator.getitem)
    put("abs", g(torch, "absolute"))
    put("sigmoid", g(F, "sigmoid"), g(torch.special, "expit"))
    put("tanh", g(F, "tanh"))
    put("erf", g(torch.special, "erf"))
    put("expm1", g(torch.special, "expm1"))
    put("log1p", g(torch.special, "log1p"))
    for n in ["relu", "relu6", "silu", "mish", "hardswish", "hardsigmoid", "selu", "logsigmoid", "softsign",
              "tanhshrink", "gelu", "elu", "celu", "leaky_relu", "hardtanh", "threshold", "hardshrink", "softshrink",
              "softplus", "softmax", "log_softmax", "softmin", "linear", "conv1d", "conv2d", "conv3d", "batch_norm",
              "layer_norm", "instance_norm", "group_norm", "normalize", "glu", "prelu", "rrelu", "dropout",
              "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout", "pad",
              "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
              "adaptive_max_pool2d", "adaptive_max_pool3d"]:
        put(n, g(F, n))
    put("relu", g(F, "relu_"), g(torch, "relu_"))
    put("elu", g(F, "elu_"))
    put("leaky_relu", g(F, "leaky_relu_"))
    put("hardtanh", g(F, "hardtanh_"))
    put("threshold", g(F, "threshold_"))
    put("getattr", getattr)
    return fn


_CANON = None


def _canon(target):
    global _CANON
    if _CANON is None:
        _CANON = _canon_tables()
    hit = _CANON.get(id(target))
    if hit is not None and hit[0] is target:
        return hit[1]
    return None


_METHOD_ALIAS = {
    "__add__": "add", "__radd__": "radd", "__iadd__": "add", "__sub__": "sub", "__rsub__": "rsub",
    "__mul__": "mul", "__rmul__": "rmul", "__truediv__": "div", "__rtruediv__": "rdiv", "__pow__": "pow",
    "__rpow__": "rpow", "__matmul__": "matmul", "__neg__": "neg", "__floordiv__": "floor_divide",
    "__mod__": "remainder", "multiply": "mul", "divide": "div", "true_divide": "div", "absolute": "abs",
    "negative": "neg", "clip": "clamp", "clip_": "clamp", "swapaxes": "transpose", "swapdims": "transpose",
    "concat": "cat", "greater": "gt", "less": "lt", "greater_equal": "ge", "less_equal": "le",
    "arccos": None,
}
_IDENTITY_METHODS = {"contiguous", "clone", "detach", "float", "double", "to", "type_as", "requires_grad_", "cpu", "cuda",
                     "detach_", "view_as_real_dummy"}


# ---- the lowering --------------------------------------------------------------------------------
class _Lowering:
    def __init__(self, owner, path, where_fn, root, gm, sd_names, buffers, prefix, inputs, is_lambda):
        self.owner = owner          # module named in messages
        self.path = path
        self.where_fn = where_fn    # function name (Lambda) for messages, or None
        self.root = root            # the fx root (_Root)
        self.gm = gm
        self.sd_names = sd_names    # state_dict names of the traced module (relative to it)
        self.buffers = buffers      # names among them that are buffers
        self.prefix = prefix        # prepended to those names in the file, relative to the node path
        self.inputs = inputs        # three graph inputs (frames)
        self.is_lambda = is_lambda
        self.ops = []
        self.pv = [list(inputs)]    # value id -> three prim values
        self.batch = [int(t.shape[0]) for t in inputs]
        self.params = {}            # tensor name -> value id
        self.extra = {}             # const name -> numpy array
        self.cur = None             # fx node being lowered (messages)
        self.used_tensors = set()

    # ---- messages ----
    def fail(self, why, node=None):
        node = node if node is not None else self.cur
        line = _user_line(node.stack_trace) if node is not None else None
        what = self.where_fn or "%s.forward" % type(self.owner).__qualname__
        msg = "cannot export %s at %s: %s (in %s%s)" % (_cls(self.owner), _where(self.path), why, what,
                                                         ", at %s" % line if line else "")
        if self.is_lambda:
            msg += "; a C callback given at load (co_load_options) is the alternative for such a function"
            msg += ": " + _CALLBACK_FIX
        else:
            msg += "; what to do: write it with the ops docs/format.md lists (\"Graph nodes\"), or move it into " \
                   "a co.Lambda function and keep that as a callback: " + _CALLBACK_FIX
        raise ExportError(msg)

    def source(self):
        return _user_line(self.cur.stack_trace) if self.cur is not None else None

    # ---- emission ----
    def emit(self, op, ins=(), **attrs):
        d = {"op": op, "in": [int(i) for i in ins]}
        d.update(attrs)
        src = self.source()
        if src:
            d["source"] = src[:300]
        outs = []
        for r in range(3):
            try:
                outs.append(_prim(d, [self.pv[i][r] for i in ins], self.batch[r], self._tensor_of))
            except Exception as e:
                self.fail("internal error: the lowering produced an op %s that does not evaluate (%s: %s)"
                          % (op, type(e).__name__, e))
        if len(self.ops) >= MAX_OPS:
            self.fail("the traced graph has more than %d ops" % MAX_OPS)
        self.ops.append(d)
        self.pv.append(outs)
        return len(self.ops)

    def _tensor_of(self, name):
        if name in self.extra:
            return torch.as_tensor(self.extra[name])
        return self._sd()[name[len(self.prefix):]]

    def _sd(self):
        if not hasattr(self, "_sd_cache"):
            self._sd_cache = self.root.m.state_dict() if hasattr(self.root, "m") else {}
        return self._sd_cache

    def shape(self, vid, r=0):
        return tuple(self.pv[vid][r].shape)

    def rank(self, vid):
        return self.pv[vid][0].dim()

    def param(self, rel):
        """value id of state_dict tensor `rel` (relative to the traced module)."""
        if rel not in self.params:
            t = self._sd()[rel]
            name = self.prefix + rel
            self.params[rel] = self.emit("param", (), tensor=name, shape=[int(s) for s in t.shape],
                                         buffer=rel in self.buffers)
            self.used_tensors.add(rel)
        return self.params[rel]

    def const(self, t):
        t = torch.as_tensor(t).detach().to(torch.float32)
        if not torch.isfinite(t).all() and t.numel() > INLINE_CONST:
            pass
        if t.numel() <= INLINE_CONST:
            data = [float(v) for v in t.reshape(-1).tolist()]
            if any(not math.isfinite(v) for v in data):
                # JSON has no inf/nan: build them (1/0, -1/0, 0/0) -- only for 0-d scalars
                if t.dim() == 0:
                    v = data[0]
                    num = self.emit("constant", (), shape=[], data=[0.0 if math.isnan(v) else (1.0 if v > 0 else -1.0)])
                    zero = self.emit("constant", (), shape=[], data=[0.0])
                    return self.emit("div", (num, zero))
                self.fail("a constant tensor holds inf/nan values")
            return self.emit("constant", (), shape=[int(s) for s in t.shape], data=data)
        k = len(self.extra)
        name = "__graph_const%d" % k
        self.extra[name] = t.contiguous().numpy().astype("<f4")
        return self.emit("param", (), tensor=name, shape=[int(s) for s in t.shape], buffer=True)

    def tid(self, v):
        """value id of a tensor operand (a _T, or a Python number -> 0-d constant)."""
        if isinstance(v, _T):
            if v.id is None:
                v.id = self.const(v.const)
            return v.id
        if isinstance(v, _P):
            c = v.cs
            if all(_is_num(x) for x in c) and c[0] == c[1] == c[2]:
                return self.const(torch.tensor(float(c[0])))
            if all(_is_num(x) for x in c):
                self.fail("a number used as a tensor operand depends on the batch size (%r)" % (c,))
            self.fail("expected a tensor operand, got %r" % (c[0],))
        if _is_num(v):
            return self.const(torch.tensor(float(v)))
        if isinstance(v, torch.Tensor):
            return self.const(v)
        self.fail("expected a tensor operand, got %r" % (v,))

    def shape_list(self, shapes):
        """Per-axis sizes (three runs) -> a format shape list (ints / {"batch": [n, d]})."""
        if not (len(shapes[0]) == len(shapes[1]) == len(shapes[2])):
            self.fail("the rank of a value depends on the batch size")
        out = []
        for a in range(len(shapes[0])):
            v = [int(s[a]) for s in shapes]
            if v[0] == v[1] == v[2]:
                if v[0] < 1:
                    self.fail("a value has an empty axis (size %d)" % v[0])
                out.append(v[0])
                continue
            b = self.batch
            if v[0] > 0 and all(v[r] * b[0] == v[0] * b[r] for r in range(3)):
                f = fractions.Fraction(v[0], b[0])
                out.append({"batch": [f.numerator, f.denominator]})
                continue
            self.fail("a size (%s at batch %s) is neither a constant nor proportional to the batch"
                      % (v, self.batch))
        return out

    def reshape(self, vid, shapes):
        if all(self.shape(vid, r) == tuple(shapes[r]) for r in range(3)):
            return vid
        return self.emit("reshape", (vid,), shape=self.shape_list(shapes))

    def permute(self, vid, perm):
        perm = [int(p) for p in perm]
        if perm == list(range(len(perm))):
            return vid
        return self.emit("permute", (vid,), perm=perm)

    def slice(self, vid, axis, starts, stops, step=1):
        """x[..., start:stop:step, ...] with per-run bounds (must agree)."""
        sizes = [self.shape(vid, r)[axis] for r in range(3)]
        if step == 1 and all(starts[r] == 0 and stops[r] == sizes[r] for r in range(3)):
            return vid
        if not (starts[0] == starts[1] == starts[2] and stops[0] == stops[1] == stops[2]):
            self.fail("a slice's bounds depend on the batch size (slicing the batch axis?)")
        if stops[0] <= starts[0]:
            self.fail("an empty slice")
        return self.emit("slice", (vid,), axis=int(axis), start=int(starts[0]), stop=int(stops[0]), step=int(step))

    def axis(self, d, rank):
        d = int(d)
        if d < -rank or d >= max(rank, 1):
            self.fail("dim %d out of range for rank %d" % (d, rank))
        return d + rank if d < 0 else d

    # ---- the run ----
    def run(self, out_fn):
        env = {}
        cv = {}
        nodes = list(self.gm.graph.nodes)
        result = None
        for node in nodes:
            self.cur = node
            if node.op == "placeholder":
                env[node] = _T(id=0 if out_fn is None else out_fn[0])
                cv[node] = [self.pv[env[node].id][r] for r in range(3)]
                continue
            if node.op == "output":
                result = node.args[0]
                break
            concrete = [self._exec(node, cv, r) for r in range(3)]
            cv[node] = concrete
            val = self._lower(node, env, cv, concrete)
            env[node] = val
            if isinstance(val, _T) and val.id is not None:
                self._check(node, val.id, concrete)
        self.cur = None
        return result, env, cv

    def _exec(self, node, cv, r):
        def get(a):
            return cv[a][r]

        args = torch.fx.node.map_arg(node.args, get)
        kwargs = torch.fx.node.map_arg(node.kwargs, get)
        inplace = (node.op == "call_method" and node.target.endswith("_") and not node.target.endswith("__")) or \
            kwargs.get("inplace") is True
        if node.op == "call_module":
            mod = self.root.get_submodule(node.target)
            inplace = inplace or getattr(mod, "inplace", False) is True
        if inplace:
            args = torch.fx.node.map_aggregate(args, lambda a: a.clone() if isinstance(a, torch.Tensor) else a)
        try:
            with torch.no_grad():
                if node.op == "get_attr":
                    obj = self.root
                    for part in node.target.split("."):
                        obj = getattr(obj, part)
                    return obj
                if node.op == "call_function":
                    return node.target(*args, **kwargs)
                if node.op == "call_method":
                    return getattr(args[0], node.target)(*args[1:], **kwargs)
                if node.op == "call_module":
                    f, _ = unwrap_forward(mod)
                    return f(*args, **kwargs)
        except _Unsupported:
            raise
        except ExportError:
            raise
        except Exception as e:
            self.cur = node
            self.fail("running the traced code at batch %d failed (%s: %s); a traced graph must run at any batch "
                      "size" % (self.batch[r], type(e).__name__, e))
        raise AssertionError(node.op)

    def _check(self, node, vid, concrete):
        for r in range(3):
            c = concrete[r]
            if not isinstance(c, torch.Tensor):
                self.fail("internal error: a tensor op gave %r" % (type(c),), node)
            p = self.pv[vid][r]
            c = c.detach().to(torch.float32)
            if tuple(p.shape) != tuple(c.shape):
                self.fail("internal error: lowering of %s gives shape %s, torch %s" % (self._what(node), tuple(p.shape),
                                                                                        tuple(c.shape)), node)
            if not _close(p, c):
                self.fail("internal error: lowering of %s differs from torch (max error %.3g)"
                          % (self._what(node), float((p - c).abs().nan_to_num(0).max())), node)

    def _what(self, node):
        if node.op == "call_module":
            return "module %s (%s)" % (node.target, _cls(self.root.get_submodule(node.target)))
        if node.op in ("call_function",):
            return _fn_name(node.target)
        if node.op == "call_method":
            return "Tensor.%s" % node.target
        return "%s %s" % (node.op, node.target)

    # ---- one fx node ----
    def _lower(self, node, env, cv, concrete):
        def val(a):
            return env[a]

        args = torch.fx.node.map_arg(node.args, val)
        kwargs = torch.fx.node.map_arg(node.kwargs, val)
        # values that do not depend on the input or a parameter: Python values, or folded constants
        deps = []
        torch.fx.node.map_arg((node.args, node.kwargs), lambda a: deps.append(env[a]))
        dynamic = any(isinstance(d, _Seq) or (isinstance(d, _T) and d.const is None) for d in deps)
        if node.op == "get_attr":
            return self._get_attr(node, concrete)
        c0 = concrete[0]
        if not dynamic:
            if isinstance(c0, torch.Tensor):
                if all(isinstance(c, torch.Tensor) and c.shape == c0.shape and torch.equal(c, c0) for c in concrete):
                    return _T(const=c0.detach().clone())
                return self._batch_const(node, args, kwargs, concrete)
            if isinstance(c0, (tuple, list)) and any(isinstance(c, torch.Tensor) for c in c0):
                if all(isinstance(c, torch.Tensor) for c in c0):
                    return _Seq([(lambda c=c: _T(const=c.detach().clone())) for c in c0])
            return _P(concrete)
        if not isinstance(c0, torch.Tensor) and not (isinstance(c0, (tuple, list)) and
                                                     any(isinstance(e, torch.Tensor) for e in c0)):
            return _P(concrete)  # x.shape, x.size(-1), x.dim(), arithmetic on them
        if node.op == "call_module":
            return self._module(node, args, kwargs, concrete)
        name = None
        if node.op == "call_function":
            name = _canon(node.target)
            if name is None:
                meth = getattr(node.target, "__name__", None)
                if getattr(node.target, "__objclass__", None) is torch.Tensor and meth:
                    name = meth
        else:
            name = node.target
        if name is not None:
            name = _METHOD_ALIAS.get(name, name)
        if name is not None and name not in _ALL_HANDLED and name.endswith("_") and not name.endswith("__"):
            name = _METHOD_ALIAS.get(name[:-1], name[:-1])
        if name is None or name not in _ALL_HANDLED:
            self.fail("%s is not supported in traced code (docs/format.md lists the graph ops)"
                      % _fn_name(node.target))
        res = _Handlers.dispatch(self, name, node, args, kwargs, concrete)
        # in-place methods and inplace=True: later uses of the first argument see the result
        if isinstance(res, _T) and node.args and isinstance(node.args[0], torch.fx.Node) and (
                (node.op == "call_method" and node.target.endswith("_") and not node.target.endswith("__"))
                or node.kwargs.get("inplace") is True or node.target in (operator.iadd, operator.isub, operator.imul,
                                                                         operator.itruediv)):
            env[node.args[0]] = res
            cv[node.args[0]] = concrete
        return res

    def _get_attr(self, node, concrete):
        target = node.target
        c0 = concrete[0]
        if not isinstance(c0, torch.Tensor):
            return _P(concrete)
        if target.startswith("m."):
            rel = target[2:]
            if rel in self.sd_names:
                return _T(id=self.param(rel))
        return _T(const=c0.detach().clone())  # not in the state_dict: a constant

    def _batch_const(self, node, args, kwargs, concrete):
        """A tensor that depends on the batch only through its shape: zeros/ones/full(...)."""
        c = concrete
        flat = [t.reshape(-1) for t in c]
        v0 = flat[0][0].item() if flat[0].numel() else 0.0
        if all(bool((f == v0).all()) for f in flat):
            k = self.const(torch.tensor(float(v0)).reshape([1] * c[0].dim()))
            return _T(id=self.emit("expand", (k,), shape=self.shape_list([t.shape for t in c])))
        self.fail("%s makes a tensor whose values depend on the batch size" % _fn_name(node.target))

    def _module(self, node, args, kwargs, concrete):
        mod = self.root.get_submodule(node.target)
        if _is_co_module(mod):
            self.fail("the continual module %s (%s) inside traced code is not supported (continual modules keep "
                      "state; put them in the continual container around the traced module)" % (node.target,
                                                                                                 _cls(mod)))
        kind = _leaf_kind(mod)
        rel = node.target[2:] if node.target.startswith("m.") else None
        if len(args) != 1 or kwargs:
            self.fail("module %s called with more than one input" % node.target)
        x = args[0]

        def p(name):
            if rel is None or getattr(mod, name, None) is None:
                t = getattr(mod, name)
                return self.const(t)
            return self.param(rel + "." + name)

        return _T(id=_Handlers.module(self, kind, mod, x, p, concrete))


def _close(p, c, tol=_TOL):
    if p.numel() == 0:
        return True
    fp, fc = torch.isfinite(p), torch.isfinite(c)
    if not torch.equal(fp, fc):
        return False
    if not torch.equal(p[~fp].nan_to_num(0), c[~fc].nan_to_num(0)):
        return False
    if not fp.any():
        return True
    scale = max(1.0, float(c[fc].abs().max()))
    return float((p[fp] - c[fc]).abs().max()) <= tol * scale


# ---- the handlers -----------------------------------------------------------------------------------
def _arg(args, kwargs, i, name, default=None):
    if name in kwargs:
        return kwargs[name]
    if len(args) > i:
        return args[i]
    return default


def _num(L, v, what):
    """A constant Python number (same in the three runs)."""
    if v is None:
        return None
    if isinstance(v, _P):
        c = v.cs
        if not all(_is_num(x) for x in c) or not (c[0] == c[1] == c[2]):
            L.fail("%s must be a constant number, got %r" % (what, c))
        return c[0]
    if _is_num(v):
        return v
    L.fail("%s must be a number, got a tensor" % what)


def _pyval(v, r=0):
    """Concrete Python structure of an argument (run r)."""
    if isinstance(v, _P):
        return v.cs[r]
    if isinstance(v, slice):
        return slice(_pyval(v.start, r), _pyval(v.stop, r), _pyval(v.step, r))
    if isinstance(v, (list, tuple)):
        return type(v)(_pyval(x, r) for x in v)
    return v


def _const_py(L, v, what):
    c = [_pyval(v, r) for r in range(3)]
    if not (c[0] == c[1] == c[2]):
        L.fail("%s depends on the batch size (%r)" % (what, c))
    return c[0]


_ALL_HANDLED = set()


class _Handlers:
    table = {}

    @classmethod
    def dispatch(cls, L, name, node, args, kwargs, concrete):
        if name in _IDENTITY_METHODS:
            x = args[0]
            if name in ("to", "type") and any(isinstance(a, _P) and isinstance(a.cs[0], torch.dtype) and
                                              not a.cs[0].is_floating_point for a in list(args[1:]) +
                                              list(kwargs.values())):
                L.fail("Tensor.%s to an integer dtype is not supported" % name)
            if name in ("float",) or isinstance(x, _T):
                return x if isinstance(x, _T) else _T(id=L.tid(x))
        h = cls.table.get(name)
        if h is None:
            L.fail("%s is not supported in traced code" % _fn_name(node.target))
        return h(L, name, node, args, kwargs, concrete)

    @staticmethod
    def module(L, kind, mod, x, p, concrete):
        xi = L.tid(x)
        shapes = [c.shape for c in concrete]
        if kind in _ACT_MODULES:
            op, attrs = _ACT_MODULES[kind]
            a = {}
            for k in attrs:
                v = getattr(mod, k)
                a[k] = str(v) if k == "approximate" else float(v)
            return L.emit(op, (xi,), **a)
        if kind in ("Identity", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout",
                    "FeatureAlphaDropout"):
            return xi
        if kind == "RReLU":
            return L.emit("leaky_relu", (xi,), negative_slope=(float(mod.lower) + float(mod.upper)) / 2.0)
        if kind == "PReLU":
            return _prelu(L, xi, p("weight"))
        if kind == "GLU":
            return _glu(L, xi, mod.dim)
        if kind in ("Softmax", "Softmin", "LogSoftmax", "Softmax2d"):
            if kind == "Softmax2d":
                ax = L.rank(xi) - 3
            else:
                if mod.dim is None:
                    L.fail("%s with dim=None (implicit dim) is not supported" % kind)
                ax = L.axis(mod.dim, L.rank(xi))
            if kind == "Softmin":
                xi = L.emit("neg", (xi,))
            return L.emit("log_softmax" if kind == "LogSoftmax" else "softmax", (xi,), axis=ax)
        if kind in ("Flatten", "Unflatten"):
            return L.reshape(xi, shapes)
        if kind in ("Conv1d", "Conv2d", "Conv3d"):
            if mod.padding_mode != "zeros":
                L.fail("a %s with padding_mode=%r inside traced code is not supported" % (kind, mod.padding_mode))
            nd = int(kind[4])
            pad = _conv_pad(L, mod.padding, nd, mod.kernel_size, mod.dilation)
            ins = [xi, p("weight")] + ([p("bias")] if mod.bias is not None else [])
            return L.emit("conv", ins, stride=[int(s) for s in mod.stride], padding=pad,
                          dilation=[int(d) for d in mod.dilation], groups=int(mod.groups))
        if kind == "Linear":
            ins = [xi, p("weight")] + ([p("bias")] if mod.bias is not None else [])
            return L.emit("linear", ins)
        if kind.startswith("BatchNorm") or kind.startswith("InstanceNorm"):
            if mod.training or not mod.track_running_stats or mod.running_mean is None:
                if kind.startswith("InstanceNorm") and not mod.track_running_stats:
                    return _instance_norm(L, xi, p("weight") if mod.affine else None,
                                          p("bias") if mod.affine else None, float(mod.eps))
                L.fail("%s without running statistics (or in training mode) inside traced code is not supported"
                       % kind)
            ins = [xi, p("running_mean"), p("running_var")]
            if mod.affine:
                ins += [p("weight"), p("bias")]
            return _batch_norm(L, ins, float(mod.eps))
        if kind == "LayerNorm":
            ins = [xi] + ([p("weight"), p("bias")] if mod.elementwise_affine else [])
            return L.emit("layer_norm", ins, ndim=len(mod.normalized_shape), eps=float(mod.eps))
        if kind == "GroupNorm":
            return _group_norm(L, xi, int(mod.num_groups), p("weight") if mod.affine else None,
                               p("bias") if mod.affine else None, float(mod.eps))
        L.fail("module %s is not supported in traced code" % kind)


def _reg(*names):
    def deco(f):
        for n in names:
            _Handlers.table[n] = f
            _ALL_HANDLED.add(n)
        return f

    return deco


_ALL_HANDLED.update(_IDENTITY_METHODS)


def _batch_norm(L, ins, eps):
    x = ins[0]
    if L.rank(x) < 2:
        L.fail("batch_norm of a rank-%d tensor" % L.rank(x))
    return L.emit("batch_norm", ins, eps=float(eps))


def _prelu(L, x, w):
    r = L.rank(x)
    n = L.shape(w)[0] if L.pv[w][0].dim() else 1
    if n > 1:
        if r < 2:
            L.fail("prelu with several weights on a rank-%d tensor" % r)
        w = L.reshape(w, [[n] + [1] * (r - 2)] * 3)
    zero = L.const(torch.tensor(0.0))
    neg = L.emit("mul", (x, w))
    return L.emit("where", (L.emit("ge", (x, zero)), x, neg))


def _glu(L, x, dim):
    ax = L.axis(dim, L.rank(x))
    n = L.shape(x)[ax]
    if n % 2 or any(L.shape(x, r)[ax] != n for r in range(3)):
        L.fail("glu over an axis of odd or batch-dependent size")
    a = L.slice(x, ax, [0] * 3, [n // 2] * 3)
    b = L.slice(x, ax, [n // 2] * 3, [n] * 3)
    return L.emit("mul", (a, L.emit("sigmoid", (b,))))


def _group_norm(L, x, g, w, b, eps):
    shapes = [L.shape(x, r) for r in range(3)]
    if len(shapes[0]) < 2 or shapes[0][1] % g:
        L.fail("group_norm: channels not divisible by groups")
    y = L.reshape(x, [(s[0], g, int(np.prod(s[1:])) // g) for s in shapes])
    m = L.emit("mean", (y,), axes=[2], keepdim=True)
    d = L.emit("sub", (y, m))
    v = L.emit("mean", (L.emit("square", (d,)),), axes=[2], keepdim=True)
    y = L.emit("mul", (d, L.emit("rsqrt", (L.emit("add", (v, L.const(torch.tensor(float(eps))))),))))
    y = L.reshape(y, shapes)
    return _affine_c(L, y, w, b)


def _instance_norm(L, x, w, b, eps):
    r = L.rank(x)
    axes = list(range(2, r))
    if not axes:
        L.fail("instance_norm needs spatial axes")
    m = L.emit("mean", (x,), axes=axes, keepdim=True)
    d = L.emit("sub", (x, m))
    v = L.emit("mean", (L.emit("square", (d,)),), axes=axes, keepdim=True)
    y = L.emit("mul", (d, L.emit("rsqrt", (L.emit("add", (v, L.const(torch.tensor(float(eps))))),))))
    return _affine_c(L, y, w, b)


def _affine_c(L, y, w, b):
    r = L.rank(y)
    for t, op in ((w, "mul"), (b, "add")):
        if t is not None:
            c = L.shape(t)[0]
            y = L.emit(op, (y, L.reshape(t, [[c] + [1] * (r - 2)] * 3)))
    return y


def _conv_pad(L, pad, nd, ks, dil):
    ks = list(ks) if isinstance(ks, (list, tuple)) else [ks] * nd
    dil = list(dil) if isinstance(dil, (list, tuple)) else [dil] * nd
    if isinstance(pad, str):
        if pad == "valid":
            return [0] * nd
        if pad == "same":
            out = []
            for k, d in zip(ks, dil):
                tot = int(d) * (int(k) - 1)
                if tot % 2:
                    L.fail("padding='same' is asymmetric for kernel %s / dilation %s" % (ks, dil))
                out.append(tot // 2)
            return out
        L.fail("unknown padding %r" % pad)
    if isinstance(pad, (list, tuple)):
        if len(pad) == 1:
            pad = list(pad) * nd
        return [int(p) for p in pad]
    return [int(pad)] * nd


# -- element-wise --
_BIN_NAMES = {"add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge",
              "logical_and", "logical_or"}


@_reg("add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge", "logical_and",
      "logical_or", "radd", "rmul", "rdiv", "rpow", "rsub", "true_divide", "floor_divide", "remainder")
def _h_binary(L, name, node, args, kwargs, concrete):
    a = args[0]
    b = _arg(args, kwargs, 1, "other", None)
    if b is None:
        b = _arg(args, kwargs, 1, "exponent", None)
    if name in ("radd", "rmul", "rdiv", "rpow"):
        a, b = b, a
        name = name[1:]
    alpha = _num(L, kwargs.get("alpha", args[2] if len(args) > 2 and name in ("add", "sub", "rsub") else None),
                 "alpha")
    if name == "rsub":  # other - alpha * input
        a, b = b, a
        name = "sub"
        ai, bi = L.tid(a), L.tid(b)
        if alpha not in (None, 1):
            bi = L.emit("mul", (bi, L.const(torch.tensor(float(alpha)))))
        return _T(id=L.emit("sub", (ai, bi)))
    ai, bi = L.tid(a), L.tid(b)
    if alpha not in (None, 1):
        bi = L.emit("mul", (bi, L.const(torch.tensor(float(alpha)))))
    if name == "div":
        mode = kwargs.get("rounding_mode")
        mode = _const_py(L, mode, "rounding_mode") if mode is not None else None
        q = L.emit("div", (ai, bi))
        if mode == "floor":
            q = L.emit("floor", (q,))
        elif mode is not None:
            L.fail("div with rounding_mode=%r is not supported" % mode)
        return _T(id=q)
    if name == "floor_divide":
        return _T(id=L.emit("floor", (L.emit("div", (ai, bi)),)))
    if name == "remainder":  # a - floor(a / b) * b
        q = L.emit("floor", (L.emit("div", (ai, bi)),))
        return _T(id=L.emit("sub", (ai, L.emit("mul", (q, bi)))))
    return _T(id=L.emit(name, (ai, bi)))


_UNARY_ATTR_ARGS = {  # op -> [(attr, position after input, default)]
    "gelu": [("approximate", 99, "none")], "elu": [("alpha", 1, 1.0)], "celu": [("alpha", 1, 1.0)],
    "leaky_relu": [("negative_slope", 1, 0.01)], "hardtanh": [("min_val", 1, -1.0), ("max_val", 2, 1.0)],
    "threshold": [("threshold", 1, None), ("value", 2, None)], "hardshrink": [("lambd", 1, 0.5)],
    "softshrink": [("lambd", 1, 0.5)], "softplus": [("beta", 1, 1.0), ("threshold", 2, 20.0)],
}


@_reg(*(sorted(set(_UNARY) - {"identity"}) + list(_UNARY_ATTR_ARGS) + ["identity"]))
def _h_unary(L, name, node, args, kwargs, concrete):
    x = L.tid(args[0])
    if name == "identity":
        return _T(id=x)
    if name == "round" and _arg(args, kwargs, 1, "decimals", 0) not in (0, None):
        if _num(L, _arg(args, kwargs, 1, "decimals", 0), "decimals") != 0:
            L.fail("round(decimals=...) is not supported")
    attrs = {}
    for k, pos, dflt in _UNARY_ATTR_ARGS.get(name, []):
        v = _arg(args, kwargs, pos, k, dflt)
        if k == "approximate":
            attrs[k] = str(_const_py(L, v, k))
        else:
            v = _num(L, v, k)
            if v is None:
                L.fail("%s needs %s" % (name, k))
            attrs[k] = float(v)
    return _T(id=L.emit(name, (x,), **attrs))


@_reg("relu6", "silu", "mish", "hardswish", "hardsigmoid", "selu", "logsigmoid", "softsign", "tanhshrink")
def _h_unary_plain(L, name, node, args, kwargs, concrete):
    return _T(id=L.emit(name, (L.tid(args[0]),)))


@_reg("rrelu")
def _h_rrelu(L, name, node, args, kwargs, concrete):
    lo = _num(L, _arg(args, kwargs, 1, "lower", 1.0 / 8), "lower")
    up = _num(L, _arg(args, kwargs, 2, "upper", 1.0 / 3), "upper")
    if _const_py(L, _arg(args, kwargs, 3, "training", False), "training"):
        L.fail("rrelu in training mode")
    return _T(id=L.emit("leaky_relu", (L.tid(args[0]),), negative_slope=(lo + up) / 2.0))


@_reg("clamp", "clamp_min", "clamp_max")
def _h_clamp(L, name, node, args, kwargs, concrete):
    x = L.tid(args[0])
    if name == "clamp_min":
        lo, hi = _arg(args, kwargs, 1, "min"), None
    elif name == "clamp_max":
        lo, hi = None, _arg(args, kwargs, 1, "max")
    else:
        lo, hi = _arg(args, kwargs, 1, "min"), _arg(args, kwargs, 2, "max")
    if isinstance(lo, _T) or isinstance(hi, _T):
        y = x
        if lo is not None:
            y = L.emit("maximum", (y, L.tid(lo)))
        if hi is not None:
            y = L.emit("minimum", (y, L.tid(hi)))
        return _T(id=y)
    lo = _num(L, lo, "min")
    hi = _num(L, hi, "max")
    return _T(id=L.emit("clamp", (x,), min=None if lo is None else float(lo), max=None if hi is None else float(hi)))


@_reg("where")
def _h_where(L, name, node, args, kwargs, concrete):
    if len(args) + len(kwargs) < 3:
        L.fail("torch.where(condition) (indices) is not supported")
    c = _arg(args, kwargs, 0, "condition")
    a = _arg(args, kwargs, 1, "input")
    b = _arg(args, kwargs, 2, "other")
    return _T(id=L.emit("where", (L.tid(c), L.tid(a), L.tid(b))))


@_reg("logical_not")
def _h_not(L, name, node, args, kwargs, concrete):
    return _T(id=L.emit("logical_not", (L.tid(args[0]),)))


@_reg("bool")
def _h_bool(L, name, node, args, kwargs, concrete):
    return _T(id=L.emit("ne", (L.tid(args[0]), L.const(torch.tensor(0.0)))))


# -- softmax, reductions --
def _dim_arg(L, args, kwargs, i, name="dim"):
    return _const_py(L, _arg(args, kwargs, i, name), name)


@_reg("softmax", "log_softmax", "softmin")
def _h_softmax(L, name, node, args, kwargs, concrete):
    x = L.tid(args[0])
    d = _dim_arg(L, args, kwargs, 1)
    if d is None:
        L.fail("%s with dim=None (implicit dim) is not supported; give dim" % name)
    ax = L.axis(d, L.rank(x))
    if name == "softmin":
        x = L.emit("neg", (x,))
        name = "softmax"
    return _T(id=L.emit(name, (x,), axis=ax))


def _axes(L, d, rank):
    if d is None or (isinstance(d, (list, tuple)) and len(d) == 0):
        return list(range(rank))
    if isinstance(d, int):
        d = [d]
    out = sorted(set(L.axis(a, rank) for a in d))
    return out


@_reg("sum", "mean", "amax", "amin")
def _h_reduce(L, name, node, args, kwargs, concrete):
    x = L.tid(args[0])
    d = _dim_arg(L, args, kwargs, 1)
    keep = bool(_const_py(L, _arg(args, kwargs, 2, "keepdim", False), "keepdim"))
    r = L.rank(x)
    if r == 0:
        return _T(id=L.emit("identity", (x,)))
    return _T(id=L.emit(name, (x,), axes=_axes(L, d, r), keepdim=keep))


@_reg("max", "min")
def _h_maxmin(L, name, node, args, kwargs, concrete):
    x = args[0]
    other = _arg(args, kwargs, 1, "dim", None)
    if other is None:
        other = kwargs.get("other")
    if isinstance(other, _T):
        return _T(id=L.emit("maximum" if name == "max" else "minimum", (L.tid(x), L.tid(other))))
    xi = L.tid(x)
    red = "amax" if name == "max" else "amin"
    if other is None:  # all axes -> 0-d
        return _T(id=L.emit(red, (xi,), axes=list(range(L.rank(xi))), keepdim=False))
    d = _const_py(L, other, "dim")
    keep = bool(_const_py(L, _arg(args, kwargs, 2, "keepdim", False), "keepdim"))
    ax = L.axis(d, L.rank(xi))
    vals = _T(id=L.emit(red, (xi,), axes=[ax], keepdim=keep))

    def indices():
        raise _Unsupported("the indices of Tensor.%s(dim)" % name)

    return _Seq([lambda: vals, indices])


@_reg("var", "std")
def _h_var(L, name, node, args, kwargs, concrete):
    xi = L.tid(args[0])
    d = _arg(args, kwargs, 1, "dim")
    d = _const_py(L, d, "dim")
    unbiased = True
    if isinstance(d, bool):
        unbiased, d = d, None
    if "unbiased" in kwargs:
        unbiased = bool(_const_py(L, kwargs["unbiased"], "unbiased"))
    corr = 1 if unbiased else 0
    if "correction" in kwargs:
        corr = _const_py(L, kwargs["correction"], "correction")
        corr = 1 if corr is None else corr
    keep = bool(_const_py(L, _arg(args, kwargs, 3 if len(args) > 3 else 99, "keepdim", False), "keepdim"))
    axes = _axes(L, d, L.rank(xi))
    ns = [int(np.prod([L.shape(xi, r)[a] for a in axes])) for r in range(3)]
    if not ns[0] == ns[1] == ns[2]:
        L.fail("%s over the batch axis" % name)
    m = L.emit("mean", (xi,), axes=axes, keepdim=True)
    dv = L.emit("sub", (xi, m))
    v = L.emit("mean", (L.emit("square", (dv,)),), axes=axes, keepdim=keep)
    if corr:
        if ns[0] - corr <= 0:
            L.fail("%s over a single element" % name)
        v = L.emit("mul", (v, L.const(torch.tensor(ns[0] / float(ns[0] - corr)))))
    if name == "std":
        v = L.emit("sqrt", (v,))
    return _T(id=v)


@_reg("logsumexp")
def _h_lse(L, name, node, args, kwargs, concrete):
    xi = L.tid(args[0])
    axes = _axes(L, _dim_arg(L, args, kwargs, 1), L.rank(xi))
    keep = bool(_const_py(L, _arg(args, kwargs, 2, "keepdim", False), "keepdim"))
    m = L.emit("amax", (xi,), axes=axes, keepdim=True)
    s = L.emit("sum", (L.emit("exp", (L.emit("sub", (xi, m)),)),), axes=axes, keepdim=True)
    y = L.emit("add", (L.emit("log", (s,)), m))
    if not keep:
        y = L.reshape(y, [c.shape for c in concrete])
    return _T(id=y)


@_reg("normalize")
def _h_normalize(L, name, node, args, kwargs, concrete):
    xi = L.tid(args[0])
    p = _num(L, _arg(args, kwargs, 1, "p", 2.0), "p")
    d = _const_py(L, _arg(args, kwargs, 2, "dim", 1), "dim")
    eps = _num(L, _arg(args, kwargs, 3, "eps", 1e-12), "eps")
    axes = _axes(L, d, L.rank(xi))
    if p == 2:
        n = L.emit("sqrt", (L.emit("sum", (L.emit("square", (xi,)),), axes=axes, keepdim=True),))
    elif p == 1:
        n = L.emit("sum", (L.emit("abs", (xi,)),), axes=axes, keepdim=True)
    else:
        L.fail("normalize with p=%r (only 1 and 2)" % p)
    n = L.emit("maximum", (n, L.const(torch.tensor(float(eps)))))
    return _T(id=L.emit("div", (xi, n)))


# -- linear algebra --
@_reg("matmul", "mm", "bmm")
def _h_matmul(L, name, node, args, kwargs, concrete):
    a, b = L.tid(args[0]), L.tid(_arg(args, kwargs, 1, "other", _arg(args, kwargs, 1, "mat2")))
    return _T(id=_matmul(L, a, b, [c.shape for c in concrete]))


def _matmul(L, a, b, out_shapes):
    ra, rb = L.rank(a), L.rank(b)
    if ra == 0 or rb == 0:
        L.fail("matmul of a 0-d tensor")
    if ra == 1:
        a = L.reshape(a, [(1,) + L.shape(a, r) for r in range(3)])
    if rb == 1:
        b = L.reshape(b, [L.shape(b, r) + (1,) for r in range(3)])
    y = L.emit("matmul", (a, b))
    return L.reshape(y, out_shapes)


@_reg("addmm")
def _h_addmm(L, name, node, args, kwargs, concrete):
    c = L.tid(args[0])
    y = L.emit("matmul", (L.tid(args[1]), L.tid(args[2])))
    beta = _num(L, kwargs.get("beta", 1), "beta")
    alpha = _num(L, kwargs.get("alpha", 1), "alpha")
    if beta != 1 or alpha != 1:
        L.fail("addmm with alpha/beta")
    return _T(id=L.emit("add", (y, c)))


@_reg("linear")
def _h_linear(L, name, node, args, kwargs, concrete):
    x = L.tid(args[0])
    w = L.tid(_arg(args, kwargs, 1, "weight"))
    b = _arg(args, kwargs, 2, "bias")
    ins = [x, w] + ([L.tid(b)] if b is not None and not (isinstance(b, _P) and b.cs[0] is None) else [])
    return _T(id=L.emit("linear", ins))


@_reg("conv1d", "conv2d", "conv3d")
def _h_conv(L, name, node, args, kwargs, concrete):
    nd = int(_canon(node.target)[4])
    x = L.tid(args[0])
    w = L.tid(_arg(args, kwargs, 1, "weight"))
    b = _arg(args, kwargs, 2, "bias")
    stride = _const_py(L, _arg(args, kwargs, 3, "stride", 1), "stride")
    pad = _const_py(L, _arg(args, kwargs, 4, "padding", 0), "padding")
    dil = _const_py(L, _arg(args, kwargs, 5, "dilation", 1), "dilation")
    groups = _const_py(L, _arg(args, kwargs, 6, "groups", 1), "groups")
    ks = list(L.shape(w)[2:])
    tup = lambda v: [int(i) for i in (list(v) * nd if len(v) == 1 else v)] if isinstance(v, (list, tuple)) \
        else [int(v)] * nd  # noqa: E731
    if L.rank(x) != nd + 2:
        L.fail("conv%dd of a rank-%d input (unbatched inputs are not supported)" % (nd, L.rank(x)))
    ins = [x, w] + ([L.tid(b)] if b is not None and not (isinstance(b, _P) and b.cs[0] is None) else [])
    return _T(id=L.emit("conv", ins, stride=tup(stride), padding=_conv_pad(L, pad, nd, ks, tup(dil)),
                        dilation=tup(dil), groups=int(groups)))


def _opt_t(L, v):
    if v is None or (isinstance(v, _P) and v.cs[0] is None):
        return None
    return L.tid(v)


@_reg("batch_norm")
def _h_bn(L, name, node, args, kwargs, concrete):
    x = L.tid(args[0])
    rm, rv = _opt_t(L, _arg(args, kwargs, 1, "running_mean")), _opt_t(L, _arg(args, kwargs, 2, "running_var"))
    w, b = _opt_t(L, _arg(args, kwargs, 3, "weight")), _opt_t(L, _arg(args, kwargs, 4, "bias"))
    training = _const_py(L, _arg(args, kwargs, 5, "training", False), "training")
    eps = _num(L, _arg(args, kwargs, 7, "eps", 1e-5), "eps")
    if training or rm is None or rv is None:
        L.fail("batch_norm with batch statistics (training=True or no running stats) is not supported")
    c = L.shape(rm)[0]
    if b is not None and w is None:
        w = L.const(torch.ones(c))
    ins = [x, rm, rv] + ([w] if w is not None else []) + ([b] if b is not None else [])
    return _T(id=_batch_norm(L, ins, eps))


@_reg("instance_norm")
def _h_in(L, name, node, args, kwargs, concrete):
    x = L.tid(args[0])
    rm, rv = _opt_t(L, _arg(args, kwargs, 1, "running_mean")), _opt_t(L, _arg(args, kwargs, 2, "running_var"))
    w, b = _opt_t(L, _arg(args, kwargs, 3, "weight")), _opt_t(L, _arg(args, kwargs, 4, "bias"))
    use_input = _const_py(L, _arg(args, kwargs, 5, "use_input_stats", True), "use_input_stats")
    eps = _num(L, _arg(args, kwargs, 7, "eps", 1e-5), "eps")
    if not use_input and rm is not None:
        c = L.shape(rm)[0]
        if b is not None and w is None:
            w = L.const(torch.ones(c))
        ins = [x, rm, rv] + ([w] if w is not None else []) + ([b] if b is not None else [])
        return _T(id=_batch_norm(L, ins, eps))
    return _T(id=_instance_norm(L, x, w, b, eps))


@_reg("layer_norm")
def _h_ln(L, name, node, args, kwargs, concrete):
    x = L.tid(args[0])
    ns = _const_py(L, _arg(args, kwargs, 1, "normalized_shape"), "normalized_shape")
    ns = [ns] if isinstance(ns, int) else list(ns)
    w, b = _opt_t(L, _arg(args, kwargs, 2, "weight")), _opt_t(L, _arg(args, kwargs, 3, "bias"))
    eps = _num(L, _arg(args, kwargs, 4, "eps", 1e-5), "eps")
    if b is not None and w is None:
        w = L.const(torch.ones(ns))
    ins = [x] + ([w] if w is not None else []) + ([b] if b is not None else [])
    return _T(id=L.emit("layer_norm", ins, ndim=len(ns), eps=float(eps)))


@_reg("group_norm")
def _h_gn(L, name, node, args, kwargs, concrete):
    x = L.tid(args[0])
    g = _const_py(L, _arg(args, kwargs, 1, "num_groups"), "num_groups")
    w, b = _opt_t(L, _arg(args, kwargs, 2, "weight")), _opt_t(L, _arg(args, kwargs, 3, "bias"))
    eps = _num(L, _arg(args, kwargs, 4, "eps", 1e-5), "eps")
    return _T(id=_group_norm(L, x, int(g), w, b, eps))


@_reg("prelu")
def _h_prelu(L, name, node, args, kwargs, concrete):
    return _T(id=_prelu(L, L.tid(args[0]), L.tid(_arg(args, kwargs, 1, "weight"))))


@_reg("glu")
def _h_glu(L, name, node, args, kwargs, concrete):
    return _T(id=_glu(L, L.tid(args[0]), _const_py(L, _arg(args, kwargs, 1, "dim", -1), "dim")))


@_reg("dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout")
def _h_dropout(L, name, node, args, kwargs, concrete):
    default = name in ("dropout", "dropout1d", "dropout2d", "dropout3d")
    tr = _const_py(L, _arg(args, kwargs, 2, "training", default), "training")
    if tr:
        L.fail("dropout with training=True")
    return _T(id=L.tid(args[0]))


@_reg("einsum")
def _h_einsum(L, name, node, args, kwargs, concrete):
    eq = _const_py(L, args[0], "equation")
    ops = list(args[1:])
    if len(ops) == 1 and isinstance(ops[0], (list, tuple)):
        ops = list(ops[0])
    eq = eq.replace(" ", "")
    if "..." in eq:
        L.fail("einsum with '...' is not supported")
    if "->" in eq:
        lhs, out = eq.split("->")
    else:
        lhs = eq
        letters = lhs.replace(",", "")
        out = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    terms = lhs.split(",")
    if len(terms) != len(ops) or not ops:
        L.fail("einsum %r: %d operands" % (eq, len(ops)))
    vals = [L.tid(o) for o in ops]
    for t, v in zip(terms, vals):
        if len(set(t)) != len(t):
            L.fail("einsum %r: a repeated index within one operand (diagonals) is not supported" % eq)
        if len(t) != L.rank(v):
            L.fail("einsum %r: operand rank %d" % (eq, L.rank(v)))
    cur_v, cur_t = vals[0], terms[0]
    for k in range(1, len(vals)):
        later = "".join(terms[k + 1:]) + out
        cur_v, cur_t = _contract2(L, eq, cur_v, cur_t, vals[k], terms[k], later)
    # remaining: sum letters not in out, permute to out
    drop = [i for i, c in enumerate(cur_t) if c not in out]
    if drop:
        cur_v = L.emit("sum", (cur_v,), axes=drop, keepdim=False)
        cur_t = "".join(c for c in cur_t if c in out)
    if sorted(cur_t) != sorted(out):
        L.fail("einsum %r: output indices" % eq)
    return _T(id=L.permute(cur_v, [cur_t.index(c) for c in out]))


def _contract2(L, eq, a, ta, b, tb, later):
    # sum out letters only in one operand and not needed later
    def presum(v, t, other):
        drop = [i for i, c in enumerate(t) if c not in other and c not in later]
        if drop:
            v = L.emit("sum", (v,), axes=drop, keepdim=False)
            t = "".join(c for c in t if c not in [t[i] for i in drop])
        return v, t

    a, ta = presum(a, ta, tb)
    b, tb = presum(b, tb, ta)
    batch = [c for c in ta if c in tb and c in later]
    contr = [c for c in ta if c in tb and c not in later]
    akeep = [c for c in ta if c not in tb]
    bkeep = [c for c in tb if c not in ta]
    sa = [dict(zip(ta, L.shape(a, r))) for r in range(3)]
    sb = [dict(zip(tb, L.shape(b, r))) for r in range(3)]
    for c in contr:
        if any(sa[r][c] != sb[r][c] for r in range(3)):
            L.fail("einsum %r: contracted index %s has different sizes" % (eq, c))
    pa = L.permute(a, [ta.index(c) for c in batch + akeep + contr])
    pb = L.permute(b, [tb.index(c) for c in batch + contr + bkeep])
    prod = lambda d, cs: int(np.prod([d[c] for c in cs])) if cs else 1  # noqa: E731
    ra = L.reshape(pa, [tuple(sa[r][c] for c in batch) + (prod(sa[r], akeep), prod(sa[r], contr)) for r in range(3)])
    rb = L.reshape(pb, [tuple(sb[r][c] for c in batch) + (prod(sb[r], contr), prod(sb[r], bkeep)) for r in range(3)])
    y = L.emit("matmul", (ra, rb))
    outs = [tuple(L.shape(y, r)[:len(batch)]) + tuple(sa[r][c] for c in akeep) + tuple(sb[r][c] for c in bkeep)
            for r in range(3)]
    y = L.reshape(y, outs)
    return y, "".join(batch + akeep + bkeep)


# -- shapes --
@_reg("view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as", "ravel")
def _h_reshape(L, name, node, args, kwargs, concrete):
    x = L.tid(args[0])
    return _T(id=L.reshape(x, [c.shape for c in concrete]))


@_reg("expand", "expand_as", "broadcast_to")
def _h_expand(L, name, node, args, kwargs, concrete):
    x = L.tid(args[0])
    shapes = [c.shape for c in concrete]
    r = len(shapes[0])
    if L.rank(x) < r:
        x = L.reshape(x, [(1,) * (r - L.rank(x)) + L.shape(x, k) for k in range(3)])
    if all(L.shape(x, k) == tuple(shapes[k]) for k in range(3)):
        return _T(id=x)
    return _T(id=L.emit("expand", (x,), shape=L.shape_list(shapes)))


@_reg("repeat")
def _h_repeat(L, name, node, args, kwargs, concrete):
    x = L.tid(args[0])
    reps = [_pyval(a) for a in args[1:]]
    if len(reps) == 1 and isinstance(reps[0], (list, tuple, torch.Size)):
        reps = list(reps[0])
    reps = [_const_py(L, r, "repeats") for r in reps]
    n = len(reps)
    src = [(1,) * (n - L.rank(x)) + L.shape(x, k) for k in range(3)]
    inter = [tuple(v for s, rr in zip(src[k], reps) for v in (1, s)) for k in range(3)]
    y = L.reshape(x, inter)
    exp = [tuple(v for s, rr in zip(src[k], reps) for v in (rr, s)) for k in range(3)]
    y = L.emit("expand", (y,), shape=L.shape_list(exp))
    return _T(id=L.reshape(y, [c.shape for c in concrete]))


@_reg("permute", "transpose", "t", "movedim", "moveaxis")
def _h_permute(L, name, node, args, kwargs, concrete):
    x = L.tid(args[0])
    r = L.rank(x)
    if name == "permute":
        dims = [_const_py(L, a, "dims") for a in args[1:]] if "dims" not in kwargs else [_const_py(L, kwargs["dims"],
                                                                                                    "dims")]
        if len(dims) == 1 and isinstance(dims[0], (list, tuple, torch.Size)):
            dims = list(dims[0])
        perm = [L.axis(d, r) for d in dims]
    elif name == "transpose":
        a = L.axis(_const_py(L, _arg(args, kwargs, 1, "dim0"), "dim0"), r)
        b = L.axis(_const_py(L, _arg(args, kwargs, 2, "dim1"), "dim1"), r)
        perm = list(range(r))
        perm[a], perm[b] = perm[b], perm[a]
    elif name == "t":
        perm = list(range(r))[::-1] if r == 2 else list(range(r))
    else:  # movedim
        src = _const_py(L, _arg(args, kwargs, 1, "source"), "source")
        dst = _const_py(L, _arg(args, kwargs, 2, "destination"), "destination")
        src = [src] if isinstance(src, int) else list(src)
        dst = [dst] if isinstance(dst, int) else list(dst)
        src = [L.axis(s, r) for s in src]
        dst = [L.axis(d, r) for d in dst]
        rest = [i for i in range(r) if i not in src]
        perm = [None] * r
        for s, d in zip(src, dst):
            perm[d] = s
        it = iter(rest)
        perm = [p if p is not None else next(it) for p in perm]
    return _T(id=L.permute(x, perm))


@_reg("getattr")
def _h_getattr(L, name, node, args, kwargs, concrete):
    obj, attr = args[0], _const_py(L, args[1], "attribute")
    if isinstance(obj, _Seq):
        if attr == "values":
            return obj.get(0)
        if attr == "indices":
            return obj.get(1)
    if isinstance(obj, _T):
        if attr == "T":
            r = L.rank(L.tid(obj))
            return _T(id=L.permute(L.tid(obj), list(range(r))[::-1]))
        if attr == "mT":
            r = L.rank(L.tid(obj))
            perm = list(range(r))
            perm[-1], perm[-2] = perm[-2], perm[-1]
            return _T(id=L.permute(L.tid(obj), perm))
        if attr == "data":
            return obj
        if not isinstance(concrete[0], torch.Tensor):
            return _P(concrete)
    L.fail("attribute %r of a traced value is not supported" % attr)


@_reg("getitem")
def _h_getitem(L, name, node, args, kwargs, concrete):
    obj, idx = args[0], args[1]
    if isinstance(obj, _Seq):
        i = _const_py(L, idx, "index")
        if not isinstance(i, int):
            L.fail("slicing a tuple of tensors")
        try:
            return obj.get(i if i >= 0 else len(obj.items) + i)
        except _Unsupported as e:
            L.fail("%s is not supported in traced code" % e.what)
    if isinstance(obj, (list, tuple)):
        i = _const_py(L, idx, "index")
        return obj[i]
    if not isinstance(obj, _T):
        return _P(concrete)
    x = L.tid(obj)
    items = idx if isinstance(idx, tuple) else (idx,)
    if isinstance(idx, _P):
        c = idx.cs
        items = [tuple(ci) if isinstance(ci, tuple) else (ci,) for ci in c]
        if any(isinstance(e, torch.Tensor) for e in items[0]):
            L.fail("indexing with a tensor (advanced indexing) is not supported")
    else:
        items = [tuple(_pyval(e, r) if not isinstance(e, _T) else e for e in items) for r in range(3)]
        if any(isinstance(e, (_T, torch.Tensor)) for e in items[0]):
            L.fail("indexing with a tensor (advanced indexing) is not supported")
    rank = L.rank(x)
    n_real = sum(1 for e in items[0] if isinstance(e, (int, slice)) and not isinstance(e, bool))
    if sum(1 for e in items[0] if e is Ellipsis) > 1:
        L.fail("more than one Ellipsis")
    cur = x
    ax = 0
    need = False
    for k in range(len(items[0])):
        e = [items[r][k] for r in range(3)]
        if e[0] is None:
            need = True
            continue
        if e[0] is Ellipsis:
            ax += rank - n_real
            continue
        if isinstance(e[0], bool):
            L.fail("boolean indexing is not supported")
        if isinstance(e[0], int):
            sizes = [L.shape(cur, r)[ax] for r in range(3)]
            st = [ei + s if ei < 0 else ei for ei, s in zip(e, sizes)]
            cur = L.slice(cur, ax, st, [s + 1 for s in st])
            need = True
            ax += 1
            continue
        if isinstance(e[0], slice):
            bounds = [e[r].indices(L.shape(cur, r)[ax]) for r in range(3)]
            steps = set(b[2] for b in bounds)
            if len(steps) != 1 or bounds[0][2] < 1:
                L.fail("slice step %r" % (bounds[0][2],))
            starts = [b[0] for b in bounds]
            stops = [max(b[0], b[1]) for b in bounds]
            cur = L.slice(cur, ax, starts, stops, bounds[0][2])
            ax += 1
            continue
        L.fail("index %r is not supported" % (e[0],))
    if need or True:
        cur = L.reshape(cur, [c.shape for c in concrete])
    return _T(id=cur)


def _pieces(L, x, ax, concrete_list):
    """Thunks for contiguous pieces of x along ax, sizes read from the concrete results."""
    n = len(concrete_list[0])
    if any(len(c) != n for c in concrete_list):
        L.fail("the number of pieces depends on the batch size")
    thunks = []
    offs = [0, 0, 0]
    for i in range(n):
        sz = [int(concrete_list[r][i].shape[ax]) if concrete_list[r][i].dim() > ax else 1 for r in range(3)]
        st = list(offs)
        offs = [o + s for o, s in zip(offs, sz)]
        thunks.append((st, list(offs), i))
    return thunks


@_reg("split", "chunk", "unbind", "tensor_split")
def _h_split(L, name, node, args, kwargs, concrete):
    x = L.tid(args[0])
    r = L.rank(x)
    if name == "unbind":
        ax = L.axis(_const_py(L, _arg(args, kwargs, 1, "dim", 0), "dim"), r)
    elif name == "chunk":
        ax = L.axis(_const_py(L, _arg(args, kwargs, 2, "dim", 0), "dim"), r)
    elif name == "split":
        ax = L.axis(_const_py(L, _arg(args, kwargs, 2, "dim", 0), "dim"), r)
    else:
        L.fail("tensor_split is not supported")
    conc = [list(c) for c in concrete]
    items = []
    offs = [0, 0, 0]
    for i in range(len(conc[0])):
        if name == "unbind":
            sz = [1, 1, 1]
        else:
            sz = [int(conc[k][i].shape[ax]) for k in range(3)]
        st = list(offs)
        offs = [o + s for o, s in zip(offs, sz)]
        en = list(offs)
        shapes = [conc[k][i].shape for k in range(3)]

        def thunk(st=st, en=en, shapes=shapes):
            y = L.slice(x, ax, st, en)
            return _T(id=L.reshape(y, shapes))

        items.append(thunk)
    return _Seq(items)


@_reg("narrow")
def _h_narrow(L, name, node, args, kwargs, concrete):
    x = L.tid(args[0])
    ax = L.axis(_const_py(L, _arg(args, kwargs, 1, "dim"), "dim"), L.rank(x))
    s = _const_py(L, _arg(args, kwargs, 2, "start"), "start")
    n = _const_py(L, _arg(args, kwargs, 3, "length"), "length")
    if s < 0:
        s += L.shape(x)[ax]
    return _T(id=L.slice(x, ax, [s] * 3, [s + n] * 3))


@_reg("select")
def _h_select(L, name, node, args, kwargs, concrete):
    x = L.tid(args[0])
    ax = L.axis(_const_py(L, _arg(args, kwargs, 1, "dim"), "dim"), L.rank(x))
    i = _const_py(L, _arg(args, kwargs, 2, "index"), "index")
    st = [i + L.shape(x, r)[ax] if i < 0 else i for r in range(3)]
    y = L.slice(x, ax, st, [s + 1 for s in st])
    return _T(id=L.reshape(y, [c.shape for c in concrete]))


def _tensor_list(L, v):
    if isinstance(v, _Seq):
        return [v.get(i) for i in range(len(v.items))]
    if isinstance(v, (list, tuple)):
        return list(v)
    L.fail("expected a list of tensors")


@_reg("cat", "stack")
def _h_cat(L, name, node, args, kwargs, concrete):
    ts = _tensor_list(L, _arg(args, kwargs, 0, "tensors"))
    d = _const_py(L, _arg(args, kwargs, 1, "dim", 0), "dim")
    ids = [L.tid(t) for t in ts]
    if name == "stack":
        r = L.rank(ids[0]) + 1
        ax = L.axis(d, r)
        ids = [L.reshape(i, [L.shape(i, k)[:ax] + (1,) + L.shape(i, k)[ax:] for k in range(3)]) for i in ids]
    else:
        ax = L.axis(d, L.rank(ids[0]))
    if len(ids) == 1:
        return _T(id=ids[0])
    while len(ids) > 8:
        ids = [L.emit("cat", ids[:8], axis=ax)] + ids[8:]
    return _T(id=L.emit("cat", ids, axis=ax))


@_reg("zeros_like", "ones_like", "full_like", "new_zeros", "new_ones", "new_full")
def _h_like(L, name, node, args, kwargs, concrete):
    c = concrete
    v0 = float(c[0].reshape(-1)[0]) if c[0].numel() else 0.0
    k = L.const(torch.tensor(v0).reshape([1] * c[0].dim()))
    if all(tuple(L.shape(k, r)) == tuple(c[r].shape) for r in range(3)):
        return _T(id=k)
    return _T(id=L.emit("expand", (k,), shape=L.shape_list([t.shape for t in c])))


@_reg("masked_fill")
def _h_masked_fill(L, name, node, args, kwargs, concrete):
    x = L.tid(args[0])
    m = L.tid(_arg(args, kwargs, 1, "mask"))
    v = L.tid(_arg(args, kwargs, 2, "value"))
    return _T(id=L.emit("where", (m, v, x)))


@_reg("pad")
def _h_pad(L, name, node, args, kwargs, concrete):
    x = L.tid(args[0])
    pad = list(_const_py(L, _arg(args, kwargs, 1, "pad"), "pad"))
    mode = _const_py(L, _arg(args, kwargs, 2, "mode", "constant"), "mode")
    value = _num(L, _arg(args, kwargs, 3, "value", 0.0), "value")
    if mode != "constant":
        L.fail("F.pad with mode=%r is not supported (only 'constant')" % mode)
    value = 0.0 if value is None else float(value)
    r = L.rank(x)
    cur = x
    for k in range(len(pad) // 2):
        ax = r - 1 - k
        lo, hi = int(pad[2 * k]), int(pad[2 * k + 1])
        if lo < 0 or hi < 0:
            sizes = [L.shape(cur, q)[ax] for q in range(3)]
            cur = L.slice(cur, ax, [max(0, -lo)] * 3, [s - max(0, -hi) for s in sizes])
            lo, hi = max(lo, 0), max(hi, 0)
        parts = []
        for n in (lo, None, hi):
            if n is None:
                parts.append(cur)
            elif n > 0:
                k1 = L.const(torch.full([1] * r, value))
                shapes = [L.shape(cur, q)[:ax] + (n,) + L.shape(cur, q)[ax + 1:] for q in range(3)]
                parts.append(L.emit("expand", (k1,), shape=L.shape_list(shapes)))
        if len(parts) > 1:
            cur = L.emit("cat", parts, axis=ax)
    return _T(id=cur)


@_reg("adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
      "adaptive_max_pool2d", "adaptive_max_pool3d")
def _h_adaptive(L, name, node, args, kwargs, concrete):
    x = L.tid(args[0])
    nd = int(name[-2])
    out = _const_py(L, _arg(args, kwargs, 1, "output_size"), "output_size")
    out = [out] * nd if isinstance(out, int) else list(out)
    if any(o is not None and o != 1 for o in out) or _const_py(L, kwargs.get("return_indices", False), "x"):
        L.fail("%s is supported with output size 1 only" % name)
    r = L.rank(x)
    axes = [r - nd + i for i, o in enumerate(out) if o == 1]
    if not axes:
        return _T(id=x)
    return _T(id=L.emit("amax" if "max" in name else "mean", (x,), axes=axes, keepdim=True))


# ---- entry points --------------------------------------------------------------------------------
def _do_trace(owner, path, root, where_fn):
    tracer = _Tracer()
    try:
        with _autograd_functions_traced():
            graph = tracer.trace(root)
    except torch.fx.proxy.TraceError as e:
        line = _tb_user_line(e)
        if "iterated" in str(e):
            raise ExportError("cannot export %s at %s: the trace could not be made: the code iterates over a traced "
                              "value (a for loop over a tensor, or *x.shape / *x.chunk(n) as arguments); only tuple "
                              "unpacking such as `N, C, T, V = x.shape` is traced (in %s%s): torch.fx: %s"
                              % (_cls(owner), _where(path), where_fn, ", at %s" % line if line else "", e)) from None
        raise ExportError("cannot export %s at %s: the trace could not be made because of data-dependent control "
                          "flow (Python control flow on a traced tensor or its shape; in %s%s): torch.fx: %s"
                          % (_cls(owner), _where(path), where_fn, ", at %s" % line if line else "", e)) from None
    except ExportError:
        raise
    except Exception as e:
        line = _tb_user_line(e)
        raise ExportError("cannot export %s at %s: the code could not be traced with torch.fx (in %s%s): %s: %s"
                          % (_cls(owner), _where(path), where_fn, ", at %s" % line if line else "",
                             type(e).__name__, e)) from None
    return torch.fx.GraphModule(root, graph)


def _inputs(clip_or_frame, from_clip):
    """Three graph inputs (frames) at batch b, 2b, 3b from a recorded input."""
    t = clip_or_frame.detach().to(torch.float32)
    if from_clip:
        frames = [t[:, :, i] for i in range(t.shape[2])]
    else:
        frames = [t]
    f = lambda k: torch.cat([frames[(i) % len(frames)] for i in range(k)], 0).contiguous()  # noqa: E731
    return [f(1), f(2), f(3)]


def _build(owner, name, path, fn, mod, prefix, inputs, time_axis, where_fn, is_lambda, reference):
    """Trace fn (with `mod` providing the state_dict names), lower, check; returns (node, claimed, extra)."""
    root = _Root(mod, fn)
    root.eval()
    gm = _do_trace(owner, path, root, where_fn)
    sd_names = set(mod.state_dict().keys()) if mod is not None else set()
    buffers = set(k for k, _ in mod.named_buffers()) if mod is not None else set()
    L = _Lowering(owner, path, where_fn, root, gm, sd_names, buffers, prefix, inputs, is_lambda)
    first = None
    if time_axis:
        first = L.emit("reshape", (0,), shape=L.shape_list([tuple(t.shape[:2]) + (1,) + tuple(t.shape[2:])
                                                            for t in inputs]))
        first = (first,)
    try:
        result, env, cv = L.run(first)
    except _Unsupported as e:
        L.fail("%s is not supported in traced code" % e.what)
    L.cur = None
    out = env.get(result) if isinstance(result, torch.fx.Node) else None
    if not isinstance(out, _T):
        L.fail("the traced code must return one tensor (got %s)" % type(result).__name__)
    oid = L.tid(out)
    squeezed = False
    if time_axis:
        shp = [L.shape(oid, r) for r in range(3)]
        if is_lambda and len(shp[0]) == inputs[0].dim() and len(shp[0]) < 3:
            # a takes_time function that removed the size-1 time axis itself (`x.squeeze(-1)` on a
            # (N, C, 1) step): its output is the frame (the reference's own step would fail on the
            # squeeze(2) that follows; its forward squeezes a T = 1 clip)
            squeezed = True
        elif len(shp[0]) < 3 or any(s[2] != 1 for s in shp):
            L.fail("its output %s has no size-1 time axis 2 to squeeze (a per-frame step needs one)" % (shp[0],))
        else:
            oid = L.reshape(oid, [s[:2] + s[3:] for s in shp])
    if oid == 0:
        oid = L.emit("identity", (0,))
    if L.rank(oid) < 2:
        L.fail("its frame output has rank %d; the graph output must be (B, C, ...)" % L.rank(oid))
    # the whole graph against the module's real output
    for r in range(3):
        with torch.no_grad():
            ref = reference(inputs[r].clone())
            if time_axis and isinstance(ref, torch.Tensor) and not squeezed:
                ref = ref.squeeze(2)
        if not isinstance(ref, torch.Tensor) or tuple(ref.shape) != L.shape(oid, r) or \
                not _close(L.pv[oid][r], ref.detach().to(torch.float32)):
            L.fail("internal error: the traced graph's output differs from the module's (shape %s vs %s)"
                   % (L.shape(oid, r), tuple(getattr(ref, "shape", ()))))
    ops, out_id = _dce(L.ops, oid)
    used = set()
    for op in ops:
        if op["op"] == "param":
            used.add(op["tensor"])
    unused = sorted(prefix + n for n in sd_names if prefix + n not in used)
    extra = {k: v for k, v in L.extra.items() if k in used}
    node = {"type": "Graph", "name": name, "ops": ops, "output": out_id,
            "source": (where_fn or _cls(owner))[:200],
            "frame": [int(d) for d in L.shape(0, 0)[1:]]}  # the C side refuses another frame shape
    if unused:
        node["unused"] = unused
    claimed = sorted(used - set(extra)) + unused
    return node, claimed, extra


def _dce(ops, out):
    live = set([out])
    for i in range(len(ops), 0, -1):
        if i in live:
            live.update(ops[i - 1]["in"])
    remap = {0: 0}
    new = []
    for i in range(1, len(ops) + 1):
        if i in live:
            op = dict(ops[i - 1])
            op["in"] = [remap[j] for j in op["in"]]
            new.append(op)
            remap[i] = len(new)
    return new, remap[out]


def module_graph(m, name, path, recorded, token_scope=False, check_frame_local=None, prefix=""):
    """Graph node of module m (custom / forward_stepping). recorded: its clip input (B, C, T, *S)
    (or, in token scope, the frame it is applied to)."""
    fn, wrapped = unwrap_forward(m)
    where_fn = "%s.forward" % type(m).__qualname__
    if token_scope:
        inputs = _inputs(recorded, False)
        time_axis = False

        def reference(x):
            return fn(x)
    else:
        if recorded.dim() < 3:
            raise ExportError("cannot export %s at %s: it saw an input of shape %s, not a clip (B, C, T, ...)"
                              % (_cls(m), _where(path), tuple(recorded.shape)))
        inputs = _inputs(recorded, True)
        time_axis = True

        def reference(x):
            return fn(x.unsqueeze(2))
    was = m.training
    m.eval()
    try:
        node, claimed, extra = _build(m, name, path, fn, m, prefix, inputs, time_axis, where_fn, False, reference)
        if check_frame_local is None:
            check_frame_local = not wrapped
        if check_frame_local and not token_scope and recorded.shape[2] >= 2:
            with torch.no_grad():
                clip = recorded.detach().to(torch.float32)
                whole = fn(clip.clone())
                per = torch.stack([fn(clip[:, :, t].unsqueeze(2)).squeeze(2) for t in range(clip.shape[2])], 2)
            if not isinstance(whole, torch.Tensor) or whole.shape != per.shape or not _close(per, whole, 1e-4):
                raise ExportError(
                    "cannot export %s at %s: it is not frame-local (its output on a clip differs from its output "
                    "frame by frame); only frame-local code can be traced. Wrap it in co.forward_stepping(...) if "
                    "its per-frame computation is what the steps should compute" % (_cls(m), _where(path)))
    finally:
        m.train(was)
    return node, claimed, extra


def function_graph(lam, fn, name, path, recorded, takes_time, functor=None):
    """Graph node of a co.Lambda's function (recorded: the Lambda's clip input)."""
    where_fn = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    if functor is not None:
        call, _ = unwrap_forward(functor)
        mod, prefix = functor, "fn."
        where_fn = "%s.forward" % type(functor).__qualname__
    else:
        call, mod, prefix = fn, None, ""
    if isinstance(call, types.FunctionType) or isinstance(call, types.MethodType):
        target = call
    else:
        def target(x):
            return call(x)
    if recorded.dim() < 3:
        raise ExportError("cannot export %s at %s: it saw an input of shape %s, not a clip (B, C, T, ...)"
                          % (_cls(lam), _where(path), tuple(recorded.shape)))
    inputs = _inputs(recorded, True)
    if takes_time:
        def reference(x):
            return call(x.unsqueeze(2))
    else:
        def reference(x):
            return call(x)
    return _build(lam, name, path, target, mod, prefix, inputs, takes_time, where_fn, True, reference)
