"""Exporter for the transformer modules: the continual attentions, the internal blocks the
reference's encoder layers are made of, co.TransformerEncoder, co.RecyclingPositionalEncoding,
and -- from plain torch -- nn.MultiheadAttention, nn.TransformerEncoderLayer and
nn.TransformerEncoder. `_Walker.node` calls `node()` first; it returns a node dict, or None when
the module is not one of these.

Plain torch modules need two things torch does not record: the token window (`sequence_len`) and,
for attention, which continual attention to run. They are given with two small wrappers that
keep the wrapped module's state_dict names (they register the same parameters and children,
so `export(wrapper)` writes exactly the names of the torch module, and a wrapper placed inside a
bigger torch network keeps the names that module would have there):

    continual_c.ContinualAttention(mha, sequence_len, kind="single_output"|"retroactive",
                                   query_index=-1, single_output_forward=False)
    continual_c.transformer_encoder(encoder_or_layer, sequence_len)   # -> ContinualTransformerEncoder

An unwrapped nn.MultiheadAttention / nn.TransformerEncoder(Layer) is refused with a message
naming the wrapper. No keyword is added to `export()`.

Layout. Continual-c attentions act on (B, E, T) clips and (B, E) frames (the reference's own
transformer layout, batch_first=True + embed_dim_second=True); the wrappers define that layout
whatever the torch module's `batch_first` is (it only says how torch itself is called).

What the exported modules compute (N = sequence_len):

* ContinualAttention "single_output": a step emits the attention output of query `query_index`
  (default the newest token) over the last N tokens, (B, E); no output for the first N-1 steps.
  "retroactive": a step emits the updated outputs of all N window tokens, (B, E, N), oldest first.
  forward(clip): torch's attention over the whole clip, all T tokens (B, E, T); with
  single_output_forward=True (single_output only) only the token at query_index, (B, E, 1).
* transformer_encoder: a step emits the encoder output for the newest token computed over the
  last N tokens, (B, E) -- what the torch encoder gives for the window, last column. Built as the
  paper / semantics.md 4.8 describe: 1 layer = single-output layer; L >= 2 layers = a retroactive
  first layer, L-2 regular middle layers re-run over the (B, E, N) window at every step
  (RetroactiveLambda around a layer whose attention is SingleOutputMultiheadAttention with
  single_output_forward=false in clip mode = full attention), and a single-output last layer
  (RetroactiveLambda, single_output_forward=true) followed by SqueezeLast; then the final norm.
  Post-norm and norm_first layers, relu / gelu (functions or modules), any eps, with or without
  a final norm. forward(clip): 1 layer -> all T tokens, as the torch encoder; L >= 2 -> only the
  last token (B, E, 1), as the reference's co.TransformerEncoder (the wrapper's own forward() gives
  exactly what the exported model's forward gives).

Reference (continual 1.2.4) modules are exported as they are built (tensor names = their
state_dict): SingleOutput/RetroactiveMultiheadAttention (any batch_first / embed_dim_second: the
model file's clips are (B, E, T), steps (B, E)), SelectOrDelay, RetroactiveUnity, RetroactiveLambda, NaiveResidual
(-> BroadcastReduce sum of a transparent Identity and `fn`), BroadcastReduce(reduce=
sum_last_pairs), co.Lambda(nn.LayerNorm) (-> a Sequential named like the Lambda holding a
ChannelLayerNorm named `fn`, so its tensors stay `<path>.fn.weight`), co.Lambda(module,
takes_time=False) generally (the module sees one token: LayerNorm -> ChannelLayerNorm), the squeeze-last
Lambda of co.TransformerEncoder (-> SqueezeLast), Lambda(F.relu / F.gelu / ...) activations,
co.TransformerEncoder (1 and 2 layers: what the reference can build) and
RecyclingPositionalEncoding (learned and static). The exported network computes what the reference
intends; where the reference has a bug (Q2 RetroactiveUnity ring, Q6 unstabilised exp) the C
library computes the windowed torch result (docs/decisions.md).
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ContinualAttention", "ContinualTransformerEncoder", "transformer_encoder"]


# ---- errors (the ExportError class lives in _export; imported lazily to avoid a cycle) ------------
def _fail(m, path, why):
    from ._export import ExportError

    t = type(m)
    raise ExportError("cannot export %s.%s at %s: %s" % (t.__module__, t.__qualname__,
                                                          "'%s'" % path if path else "<root>", why))


def _join(prefix, name):
    if not name:
        return prefix
    return "%s.%s" % (prefix, name) if prefix else name


# ---- wrappers for plain torch modules ---------------------------------------------------------
_KINDS = ("single_output", "retroactive")


def _check_mha(mha, what="nn.MultiheadAttention"):
    if not isinstance(mha, nn.MultiheadAttention):
        raise TypeError("%s expected, got %s" % (what, type(mha).__name__))
    if not getattr(mha, "_qkv_same_embed_dim", True) or mha.kdim != mha.embed_dim or mha.vdim != mha.embed_dim:
        raise ValueError("kdim/vdim different from embed_dim are not supported: continual attention is "
                         "self-attention over one stream")
    if mha.bias_k is not None or mha.bias_v is not None:
        raise ValueError("add_bias_kv=True has no continual step (as in the reference)")
    if mha.add_zero_attn:
        raise ValueError("add_zero_attn=True has no continual step (as in the reference)")
    if mha.embed_dim % mha.num_heads:
        raise ValueError("embed_dim %d is not divisible by num_heads %d" % (mha.embed_dim, mha.num_heads))


def _mha_clip(mha, x, query_index=None):
    """torch's attention of a (B, E, T) clip, as (B, E, T) (or (B, E, 1) for one query)."""
    seq = x.transpose(1, 2)  # (B, T, E)
    q = seq if query_index is None else seq[:, query_index:query_index + 1] if query_index != -1 else seq[:, -1:]
    if not mha.batch_first:
        q, kv = q.transpose(0, 1), seq.transpose(0, 1)
    else:
        kv = seq
    y = mha(q, kv, kv, need_weights=False)[0]
    if not mha.batch_first:
        y = y.transpose(0, 1)
    return y.transpose(1, 2)


class ContinualAttention(nn.Module):
    """A torch nn.MultiheadAttention to be exported as a continual attention over a window of
    `sequence_len` tokens.

    kind="single_output": a step emits the output of query `query_index` (default -1: the newest
    token; q >= 0 counts from the oldest token of the window) over the last N tokens, (B, E).
    kind="retroactive": a step emits the updated outputs of all N tokens, (B, E, N), oldest first.
    forward(x (B, E, T)) is torch's self-attention over the clip (all tokens, (B, E, T)); with
    single_output_forward=True (single_output only) the query_index token only, (B, E, 1).

    The wrapper registers the attention's own parameters (in_proj_weight, in_proj_bias,
    out_proj), so its state_dict names are those of the wrapped module."""

    def __init__(self, mha, sequence_len, kind="single_output", query_index=-1, single_output_forward=False):
        super().__init__()
        _check_mha(mha)
        sequence_len = int(sequence_len)
        if sequence_len < 1:
            raise ValueError("sequence_len must be >= 1, got %d" % sequence_len)
        if kind not in _KINDS:
            raise ValueError("kind must be one of %s, got %r" % (_KINDS, kind))
        query_index = int(query_index)
        if kind == "retroactive" and (query_index != -1 or single_output_forward):
            raise ValueError("query_index / single_output_forward apply to kind='single_output' only")
        if not -sequence_len <= query_index < sequence_len:
            raise ValueError("query_index %d out of range for sequence_len %d" % (query_index, sequence_len))
        object.__setattr__(self, "mha", mha)  # not a child: the names stay the attention's own
        self.in_proj_weight = mha.in_proj_weight
        if mha.in_proj_bias is not None:
            self.in_proj_bias = mha.in_proj_bias
        self.out_proj = mha.out_proj
        self.sequence_len = sequence_len
        self.kind = kind
        self.query_index = query_index
        self.single_output_forward = bool(single_output_forward)

    def extra_repr(self):
        return "embed_dim=%d, num_heads=%d, sequence_len=%d, kind=%r, query_index=%d" % (
            self.mha.embed_dim, self.mha.num_heads, self.sequence_len, self.kind, self.query_index)

    def forward(self, x):
        if self.single_output_forward:
            return _mha_clip(self.mha, x, self.query_index)
        return _mha_clip(self.mha, x)


def _encoder_layers(module):
    if isinstance(module, nn.TransformerEncoder):
        return list(module.layers), module.norm
    if isinstance(module, nn.TransformerEncoderLayer):
        return [module], None
    raise TypeError("nn.TransformerEncoder or nn.TransformerEncoderLayer expected, got %s" % type(module).__name__)


class ContinualTransformerEncoder(nn.Module):
    """A torch nn.TransformerEncoder (or one nn.TransformerEncoderLayer) to be exported as a
    continual encoder over a window of `sequence_len` tokens (see the module docstring).

    Registers the wrapped module's children under their own names (`layers`, `norm` for an
    encoder; `self_attn`, `linear1`, ... for a layer), so the state_dict names are the torch
    module's. forward(x (B, E, T)): 1 layer -> torch's output for all T tokens (B, E, T);
    >= 2 layers -> torch's output for the last token only, (B, E, 1) (what the exported model's
    forward computes, as the reference's co.TransformerEncoder)."""

    def __init__(self, module, sequence_len):
        super().__init__()
        layers, norm = _encoder_layers(module)
        if not layers:
            raise ValueError("the encoder has no layers")
        sequence_len = int(sequence_len)
        if sequence_len < 1:
            raise ValueError("sequence_len must be >= 1, got %d" % sequence_len)
        for layer in layers:
            if not isinstance(layer, nn.TransformerEncoderLayer):
                raise TypeError("encoder layers must be nn.TransformerEncoderLayer, got %s" % type(layer).__name__)
            _check_mha(layer.self_attn, "self_attn")
        object.__setattr__(self, "module", module)
        self.is_layer = isinstance(module, nn.TransformerEncoderLayer)
        for cname, child in module._modules.items():
            if child is not None:
                self.add_module(cname, child)
        self.sequence_len = sequence_len
        self.num_layers = len(layers)

    def encoder_layers(self):
        return _encoder_layers(self.module)

    def extra_repr(self):
        return "num_layers=%d, sequence_len=%d" % (self.num_layers, self.sequence_len)

    def forward(self, x):
        layers, norm = _encoder_layers(self.module)
        batch_first = layers[0].self_attn.batch_first
        h = x.permute(0, 2, 1) if batch_first else x.permute(2, 0, 1)
        y = self.module(h)
        y = y.permute(0, 2, 1) if batch_first else y.permute(1, 2, 0)
        return y if self.num_layers == 1 else y[:, :, -1:]


def transformer_encoder(module, sequence_len):
    """Wrap a torch nn.TransformerEncoder / nn.TransformerEncoderLayer for export as a continual
    encoder over `sequence_len` tokens (a ContinualTransformerEncoder)."""
    return ContinualTransformerEncoder(module, sequence_len)


# ---- node builders ------------------------------------------------------------------------------
def _seq(name, children):
    return {"type": "Sequential", "name": name, "children": children}


def _mha_node(walker, m, name, path, kind, sequence_len, query_index=-1, single_output_forward=True,
              batch_first=True, embed_dim_second=True):
    """One attention node; declares its tensors (the state_dict names of `m` under `path`)."""
    try:
        _check_mha(m, "attention")
    except ValueError as e:
        _fail(m, path, str(e))
    bias = m.in_proj_bias is not None
    if bias != (m.out_proj.bias is not None):
        _fail(m, path, "in_proj_bias and out_proj.bias must both exist or both be absent")
    E = int(m.embed_dim)
    node = {"type": "SingleOutputMultiheadAttention" if kind == "single_output" else "RetroactiveMultiheadAttention",
            "name": name, "embed_dim": E, "num_heads": int(m.num_heads), "sequence_len": int(sequence_len),
            "bias": bool(bias), "dropout": float(m.dropout), "batch_first": bool(batch_first),
            "embed_dim_second": bool(embed_dim_second), "add_bias_kv": False, "add_zero_attn": False,
            "kdim": E, "vdim": E}
    if kind == "single_output":
        node["query_index"] = int(query_index)
        node["single_output_forward"] = bool(single_output_forward)
    walker._leaf_tensors(path, ["in_proj_weight"] + (["in_proj_bias"] if bias else []) + ["out_proj.weight"]
                         + (["out_proj.bias"] if bias else []))
    return node


def _cln_node(walker, ln, name, path):
    """nn.LayerNorm over the embedding of each token -> ChannelLayerNorm."""
    shape = [int(s) for s in ln.normalized_shape]
    if len(shape) != 1:
        _fail(ln, path, "a LayerNorm on tokens must normalise one dim (the embedding), got normalized_shape %s"
              % (tuple(shape),))
    eps = float(ln.eps)
    if not math.isfinite(eps) or eps < 0:
        _fail(ln, path, "eps %r is not a finite non-negative number" % eps)
    affine = bool(ln.elementwise_affine)
    has_bias = affine and getattr(ln, "bias", None) is not None
    node = {"type": "ChannelLayerNorm", "name": name, "normalized_shape": shape, "eps": eps,
            "elementwise_affine": affine, "bias": bool(has_bias) if affine else True}
    walker._leaf_tensors(path, (["weight"] if affine else []) + (["bias"] if has_bias else []))
    return node


def _activation_fn_node(fn, name):
    """A node for an activation given as a function (F.relu, torch.tanh, ...), or None."""
    table = [
        ((F.relu, torch.relu), {"type": "ReLU"}),
        ((F.gelu,), {"type": "GELU", "approximate": "none"}),
        ((torch.sigmoid, getattr(F, "sigmoid", None)), {"type": "Sigmoid"}),
        ((torch.tanh, getattr(F, "tanh", None)), {"type": "Tanh"}),
        ((F.silu,), {"type": "SiLU"}),
        ((getattr(F, "mish", None),), {"type": "Mish"}),
        ((F.hardswish,), {"type": "Hardswish"}),
        ((F.hardsigmoid,), {"type": "Hardsigmoid"}),
        ((F.relu6,), {"type": "ReLU6"}),
        ((F.selu, torch.selu), {"type": "SELU"}),
        ((F.elu,), {"type": "ELU", "alpha": 1.0}),
        ((F.leaky_relu,), {"type": "LeakyReLU", "negative_slope": 0.01}),
        ((F.logsigmoid,), {"type": "LogSigmoid"}),
        ((F.softsign,), {"type": "Softsign"}),
        ((F.tanhshrink,), {"type": "Tanhshrink"}),
    ]
    for fns, node in table:
        if any(f is not None and fn is f for f in fns):
            out = dict(node)
            out["name"] = name
            return out
    return None


def _is_squeeze_last(lam):
    """co.TransformerEncoder's last Lambda: identity in forward, squeeze(-1) in steps."""
    fs, fss = lam.forward_step_only_fn, lam.forward_steps_only_fn
    if fs is None or fss is None or lam.forward_only_fn is not None or not lam.takes_time:
        return False
    try:
        g = torch.Generator().manual_seed(1)
        x = torch.randn(2, 3, 5, generator=g)
        w = torch.randn(2, 3, 1, generator=g)
        s = torch.randn(2, 3, 4, 1, generator=g)
        with torch.no_grad():
            return (torch.equal(lam.fn(x), x) and torch.equal(fs(w), w.squeeze(-1))
                    and torch.equal(fss(s), s.squeeze(-1)))
    except Exception:
        return False


class _TokenScope:
    """While active, plain nn.LayerNorm modules act on single tokens (frames (B, E)): the fn of a
    co.Lambda(takes_time=False) / RetroactiveLambda(takes_time=False) sees one token at a time."""

    def __init__(self, walker, on=True):
        self.walker, self.on = walker, on

    def __enter__(self):
        self.prev = getattr(self.walker, "_tr_token_scope", False)
        self.walker._tr_token_scope = self.on

    def __exit__(self, *exc):
        self.walker._tr_token_scope = self.prev


def _in_token_scope(walker):
    return getattr(walker, "_tr_token_scope", False)


# ---- plain torch encoder layers -----------------------------------------------------------------
def _layer_activation(walker, layer, path):
    act = layer.activation
    if isinstance(act, nn.Module):
        return walker.node(act, "activation", _join(path, "activation"))
    node = _activation_fn_node(act, "")
    if node is None:
        _fail(layer, path, "activation %r is not supported (give relu, gelu or a torch activation module)" % (act,))
    return node


def _layer_ff(walker, layer, path, act):
    """linear1 -> activation -> linear2 (dropouts are identity at inference)."""
    return [walker.node(layer.linear1, "linear1", _join(path, "linear1")), act,
            walker.node(layer.linear2, "linear2", _join(path, "linear2"))]


def _torch_layer(walker, layer, name, path, role, N):
    """One nn.TransformerEncoderLayer as a node named `name` (its children keep their names).
    role: "single_output" (alone: clip = all tokens), "retroactive" (first of >= 2),
    "regular" (middle: clip = full attention; runs inside a RetroactiveLambda),
    "last" (last of >= 2: clip = the newest token only; runs inside a RetroactiveLambda)."""
    if not isinstance(layer, nn.TransformerEncoderLayer):
        _fail(layer, path, "encoder layers must be nn.TransformerEncoderLayer")
    if type(layer).forward is not nn.TransformerEncoderLayer.forward:
        _fail(layer, path, "subclass of nn.TransformerEncoderLayer with its own forward() is not supported")
    norm_first = bool(getattr(layer, "norm_first", False))
    sa_path = _join(path, "self_attn")
    if role == "retroactive":
        attn = _mha_node(walker, layer.self_attn, "self_attn", sa_path, "retroactive", N)
        residual = {"type": "RetroactiveUnity", "name": "", "delay": N - 1}
        reduce = "sum"
    else:
        attn = _mha_node(walker, layer.self_attn, "self_attn", sa_path, "single_output", N, query_index=-1,
                         single_output_forward=(role == "last"))
        # clip mode: "last" keeps the newest token only; the others keep all tokens
        residual = {"type": "SelectOrDelay", "name": "", "delay": 0} if role == "last" else {"type": "Identity",
                                                                                             "name": ""}
        reduce = "sum_last_pairs" if role == "last" else "sum"
    norm1 = _cln_node(walker, layer.norm1, "norm1", _join(path, "norm1"))
    norm2 = _cln_node(walker, layer.norm2, "norm2", _join(path, "norm2"))
    act = _layer_activation(walker, layer, path)
    ff = _layer_ff(walker, layer, path, act)
    if norm_first:
        sa_block = {"type": "BroadcastReduce", "name": "", "reduce": reduce,
                    "children": [residual, _seq("", [norm1, attn])]}
        ff_block = {"type": "BroadcastReduce", "name": "", "reduce": "sum",
                    "children": [{"type": "Identity", "name": ""}, _seq("", [norm2] + ff)]}
        token_part = [ff_block]
    else:
        sa_block = {"type": "BroadcastReduce", "name": "", "reduce": reduce, "children": [residual, attn]}
        ff_block = {"type": "BroadcastReduce", "name": "", "reduce": "sum",
                    "children": [{"type": "Identity", "name": ""}, _seq("", ff)]}
        token_part = [norm1, ff_block, norm2]
    if role == "retroactive":
        # the per-token part runs over the (B, E, N) window of updated tokens at every step
        return _seq(name, [sa_block, {"type": "RetroactiveLambda", "name": "", "takes_time": False,
                                      "children": [_seq("", token_part)]}])
    return _seq(name, [sa_block] + token_part)


def _torch_encoder(walker, w, name, path):
    layers, norm = w.encoder_layers()
    N = int(w.sequence_len)
    L = len(layers)
    if w.is_layer:
        return _torch_layer(walker, layers[0], name, path, "single_output", N)
    lpath = _join(path, "layers")
    if L == 1:
        kids = [_torch_layer(walker, layers[0], "0", _join(lpath, "0"), "single_output", N)]
    else:
        kids = [_torch_layer(walker, layers[0], "0", _join(lpath, "0"), "retroactive", N)]
        for i in range(1, L):
            role = "last" if i == L - 1 else "regular"
            kids.append({"type": "RetroactiveLambda", "name": "", "takes_time": True,
                         "children": [_torch_layer(walker, layers[i], str(i), _join(lpath, str(i)), role, N)]})
        kids.append({"type": "SqueezeLast", "name": ""})
    children = [_seq("layers", kids)]
    if norm is not None:
        if isinstance(norm, nn.LayerNorm):
            children.append(_cln_node(walker, norm, "norm", _join(path, "norm")))
        else:
            with _TokenScope(walker):
                children.append(walker.node(norm, "norm", _join(path, "norm")))
    return _seq(name, children)


# ---- entry point --------------------------------------------------------------------------------
def _reduce_fn(m):
    fn = m.reduce
    seen = set()
    while hasattr(fn, "__wrapped__") and id(fn) not in seen:
        seen.add(id(fn))
        fn = fn.__wrapped__
    return fn


def _co_transformer(walker):
    co = walker.co
    if co is None:
        return None
    try:
        import continual.transformer as ct
    except Exception:
        return None
    return ct


def _children(walker, m, path):
    return [walker.node(c, n, _join(path, n)) for n, c in m._modules.items() if c is not None]


def node(walker, m, name, path):
    # ---- wrappers of plain torch modules ----
    if isinstance(m, ContinualAttention):
        return _mha_node(walker, m.mha, name, path, m.kind, m.sequence_len, m.query_index, m.single_output_forward)
    if isinstance(m, ContinualTransformerEncoder):
        return _torch_encoder(walker, m, name, path)

    # ---- dim arguments of modules applied to single tokens (B, E): the file's dims count in the
    # clip (B, C, T, ...), where the token's dim 1 / -1 is the channel dim 1 ----
    if _in_token_scope(walker) and type(m) in (nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.GLU):
        dim = m.dim if m.dim is not None else -1
        if dim not in (1, -1):
            _fail(m, path, "dim=%r of a module applied to single tokens (B, E): only the embedding dim (1 or -1) "
                  "exists there" % (m.dim,))
        return {"type": type(m).__name__, "name": name, "dim": 1}

    co = walker.co
    ct = _co_transformer(walker)

    # ---- continual attentions (subclasses of nn.MultiheadAttention: test them first) ----
    if co is not None:
        so = getattr(co, "SingleOutputMultiheadAttention", None)
        ra = getattr(co, "RetroactiveMultiheadAttention", None)
        if (so is not None and isinstance(m, so)) or (ra is not None and isinstance(m, ra)):
            retro = ra is not None and isinstance(m, ra)
            # Any layout: a step is a (B, E) frame in every layout; clips are (B, E, T) in the model
            # file whatever the module's batch_first / embed_dim_second, i.e. the reference's
            # (B, T, E) or (T, B, E) clips are transposed at the boundary (decisions.md).
            if retro:
                return _mha_node(walker, m, name, path, "retroactive", m.sequence_len)
            return _mha_node(walker, m, name, path, "single_output", m.sequence_len, m.query_index,
                             m.single_output_forward)

    # ---- plain torch modules that need a wrapper ----
    if isinstance(m, nn.MultiheadAttention):
        _fail(m, path, "nn.MultiheadAttention needs a token window and an attention kind: wrap it in "
              "continual_c.ContinualAttention(mha, sequence_len, kind='single_output'|'retroactive')")
    if isinstance(m, (nn.TransformerEncoder, nn.TransformerEncoderLayer)):
        _fail(m, path, "a torch transformer encoder needs a token window: wrap it with "
              "continual_c.transformer_encoder(module, sequence_len)")

    # ---- LayerNorm on single tokens (inside co.Lambda / RetroactiveLambda without takes_time) ----
    if isinstance(m, nn.LayerNorm) and _in_token_scope(walker) and type(m).forward is nn.LayerNorm.forward:
        return _cln_node(walker, m, name, path)

    if co is None:
        return None

    # ---- the reference's transformer blocks ----
    if ct is not None:
        if isinstance(m, ct.SelectOrDelay):
            return {"type": "SelectOrDelay", "name": name, "delay": int(m.delay)}
        if isinstance(m, ct.RetroactiveUnity):
            if getattr(m, "time_dim", -1) != -1:
                _fail(m, path, "RetroactiveUnity with time_dim=%r: only -1 (window on the last axis)" % m.time_dim)
            return {"type": "RetroactiveUnity", "name": name, "delay": int(m.delay)}
        if isinstance(m, ct.RetroactiveLambda):
            if m.forward_only_fn is not None or m.forward_step_only_fn is not None or \
                    m.forward_steps_only_fn is not None:
                _fail(m, path, "RetroactiveLambda with per-mode functions is not supported")
            if not isinstance(m.fn, nn.Module):
                _fail(m, path, "RetroactiveLambda of a plain function cannot be exported (wrap a module)")
            with _TokenScope(walker, not m.takes_time):
                child = walker.node(m.fn, "fn", _join(path, "fn"))
            return {"type": "RetroactiveLambda", "name": name, "takes_time": bool(m.takes_time), "children": [child]}
        if isinstance(m, ct.NaiveResidual):
            return {"type": "BroadcastReduce", "name": name, "reduce": "sum",
                    "children": [{"type": "Identity", "name": ""}, walker.node(m.fn, "fn", _join(path, "fn"))]}
        tenc = getattr(ct, "TransformerEncoder", None)
        if tenc is not None and isinstance(m, tenc):
            return _seq(name, _children(walker, m, path))
        if isinstance(m, co.BroadcastReduce) and _reduce_fn(m) is ct.sum_last_pairs:
            return {"type": "BroadcastReduce", "name": name, "children": _children(walker, m, path),
                    "reduce": "sum_last_pairs"}

    rpe = getattr(co, "RecyclingPositionalEncoding", None)
    if rpe is not None and isinstance(m, rpe):
        learned = isinstance(m.pe, nn.Embedding)
        node = {"type": "RecyclingPositionalEncoding", "name": name, "embed_dim": int(m.pe.embedding_dim),
                "num_embeds": int(m.pe.num_embeddings), "learned": learned,
                "forward_update_index_steps": int(m.forward_update_index_steps)}
        if learned and m.pe.max_norm is not None:
            _fail(m, path, "nn.Embedding with max_norm renormalises its table on use; not supported")
        walker._leaf_tensors(path, ["pe.weight" if learned else "pe.pattern"])
        return node

    lam = getattr(co, "Lambda", None)
    if lam is not None and type(m) is lam:
        if _is_squeeze_last(m):
            return {"type": "SqueezeLast", "name": name}
        if m.forward_only_fn is None and m.forward_step_only_fn is None and m.forward_steps_only_fn is None:
            fn = m.fn
            act = _activation_fn_node(fn, name)
            if act is not None:  # element-wise: takes_time does not matter
                return act
            if isinstance(fn, nn.Module) and not m.takes_time:
                # fn sees one token (B, E) at a time: LayerNorm -> ChannelLayerNorm, Linear over E, ...
                # The module is the Lambda's child `fn`: a Sequential named like the Lambda keeps its names.
                # (takes_time=True: fn sees the clip; left to the walker, which takes element-wise modules.)
                with _TokenScope(walker):
                    return _seq(name, [walker.node(fn, "fn", _join(path, "fn"))])
    return None
