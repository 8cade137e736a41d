"""Traced frame-local code (python/continual_c/_trace.py, docs/format.md "Graph nodes"): custom
nn.Modules, the module inside co.forward_stepping, and co.Lambda functions are recorded with torch.fx
and written as `Graph` nodes of primitive ops.

Two kinds of tests:
* `no_lib`: the exporter only -- the Graph JSON it writes, its tensors, its errors, and the graph
  evaluated in Python (`_trace.run_graph`, the op table of docs/format.md) against torch on frames at
  batch 1 and 3 (the exporter's own self-check runs too: it refuses a lowering whose ops do not
  reproduce torch);
* the rest: the model file loaded into libcontinual and run in the three modes (forward, steps,
  forward_steps) against torch / the reference, at batch 1 and > 1 (helpers.check_modes).
"""
import json
import os
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import continual_c
from continual_c import _trace
from helpers import rewrite_network, assert_close, check_modes, export_load, seed, to_np

co = pytest.importorskip("continual")

ZOO = "/work/shared/anchors/zoo"
if os.path.isdir(ZOO) and ZOO not in sys.path:
    sys.path.insert(0, ZOO)

THIS = os.path.abspath(__file__)


# ---- helpers ---------------------------------------------------------------------------------
def graphs(node, out=None, path=""):
    """[(path, node)] of the Graph nodes of a network JSON."""
    out = [] if out is None else out
    p = path if not node.get("name") else (path + "." + node["name"] if path else node["name"])
    if node["type"] == "Graph":
        out.append((p, node))
    for c in node.get("children", []):
        graphs(c, out, p)
    return out


def export_file(net, tmp_path, input_shape, name="m.safetensors", **kw):
    path = os.path.join(str(tmp_path), name)
    continual_c.export(net, path, input_shape=input_shape, **kw)
    return path


def fw(net, x):
    net.eval()
    with torch.no_grad():
        return net(torch.as_tensor(x))


def co_steps(net, x):
    net.eval()
    net.clean_state()
    with torch.no_grad():
        out = [net.forward_step(torch.as_tensor(x)[:, :, t]) for t in range(x.shape[2])]
    net.clean_state()
    return out


def lambda_frames(fn, x, takes_time=False):
    """What co.Lambda(fn) computes per frame (B, C, T, *S) -> stacked (B', C', T, *S')."""
    with torch.no_grad():
        if takes_time:
            return torch.stack([fn(x[:, :, t].unsqueeze(2)).squeeze(2) for t in range(x.shape[2])], 2)
        return torch.stack([fn(x[:, :, t]) for t in range(x.shape[2])], 2)


def check_root_graph(net, tmp_path, input_shape, per_frame, batches=(1, 3), T=3, tol=1e-5):
    """Export `net` (its root is one Graph), check the JSON and evaluate the graph in Python on frames
    at several batches against per_frame(frame)."""
    path = export_file(net, tmp_path, input_shape)
    netj, fs, meta, tensors = continual_c.read_model_file(path)
    assert netj["type"] == "Graph", netj["type"]
    assert 1 <= len(netj["ops"]) <= 4096 and 1 <= netj["output"] <= len(netj["ops"])
    for i, op in enumerate(netj["ops"]):
        assert all(0 <= j <= i for j in op["in"]), op
    json.dumps(netj, allow_nan=False)
    for b in batches:
        x = torch.randn((b,) + tuple(input_shape[:1]) + tuple(input_shape[1:]))
        got = _trace.run_graph(netj, x.numpy(), tensors)
        with torch.no_grad():
            ref = per_frame(x)
        assert_close(got, ref, tol, "graph at batch %d" % b)
    return netj, tensors


# ---- op families: co.Lambda(fn) on frames (B, C, V) --------------------------------------------
_W = torch.randn(5, 5)
_BIG = torch.randn(70, 70)  # > 4096 elements: written as a tensor of the file
_V = torch.randn(5)


def _safe(x):
    return x.abs() + 0.5


OPS = {
    "arith": lambda x: (x * 2.0 + 1) - x / 3 + x ** 2 - 0.5 * x,
    "rsub_neg_pow": lambda x: (1 - x) + (-x) + torch.pow(_safe(x), 1.5) + 2 ** x.clamp(-2, 2) + torch.rsub(x, 3.0),
    "broadcast": lambda x: x * _V + x.mean(1, keepdim=True) - x[:, :1] + _V.view(1, 5) / (x.sum(-1, keepdim=True) ** 2 + 1),
    "add_alpha": lambda x: torch.add(x, x * x, alpha=0.5) + torch.sub(x, 1.0, alpha=2),
    "compare_where": lambda x: torch.where(x > 0, x, 0.1 * x) + (x >= 0.5).float() * x + torch.where(x < -0.2, -x, x * x)
    + (x == x).float() + (x != 0).float() + (x <= 0.1).float(),
    "logical": lambda x: ((x > 0) & (x < 1)).float() + ((x < -1) | (x > 1)).float() + (~(x > 0)).float(),
    "clamp": lambda x: x.clamp(min=-0.5) + torch.clip(x, -1, 0.5) + x.clamp_max(0.3) + x.clamp_min(-0.1)
    + torch.clamp(x, max=0.2) + torch.maximum(x, x * 0.3) + torch.minimum(x, _V),
    "act_fn": lambda x: F.gelu(x) + F.gelu(x, approximate="tanh") + F.silu(x) + F.leaky_relu(x, 0.2) + F.elu(x, 0.7)
    + F.hardtanh(x, -0.5, 0.5) + F.softplus(x, beta=2) + F.relu6(4 * x) + F.hardswish(x) + F.hardsigmoid(x)
    + F.mish(x) + F.relu(x) + F.selu(x) + F.celu(x, 0.5) + F.logsigmoid(x) + F.softsign(x) + F.tanhshrink(x)
    + F.hardshrink(x, 0.3) + F.softshrink(x, 0.2) + F.threshold(x, 0.1, -1.0) + torch.sigmoid(x) + torch.tanh(x)
    + torch.relu(x),
    "act_method": lambda x: x.sigmoid() + x.tanh() + x.relu() + x.exp() * 0.1 + x.abs() + x.neg() + x.square(),
    "unary_math": lambda x: torch.exp(x) + torch.log(_safe(x)) + torch.sqrt(_safe(x)) + torch.rsqrt(_safe(x))
    + torch.abs(x) + torch.square(x) + torch.sin(x) + torch.cos(x) + torch.erf(x) + torch.reciprocal(x + 3)
    + torch.floor(3 * x) + torch.ceil(3 * x) + torch.round(3 * x) + torch.sign(x) + torch.expm1(x)
    + torch.log1p(_safe(x)),
    "matmul": lambda x: (x @ x.transpose(1, 2)) @ x + torch.matmul(x, _W) + torch.bmm(x, x.transpose(-1, -2)).sum(-1, keepdim=True),
    "big_const": lambda x: torch.matmul(x.repeat(1, 1, 14), _BIG)[:, :, :5],
    "einsum": lambda x: torch.einsum("bcv,vw->bcw", x, _W) + torch.einsum("bcv,bdv->bcd", x, x) @ x
    + torch.einsum("bcv->bvc", x).transpose(1, 2),
    "linear_conv": lambda x: F.linear(x, _W, _V) + F.conv1d(x, torch.randn(4, 4, 3, generator=torch.Generator().manual_seed(1)),
                                                            None, padding=1)
    + F.conv1d(x, torch.ones(4, 1, 3) / 3, torch.zeros(4), padding="same", groups=4),
    "softmax": lambda x: torch.softmax(x, -1) + F.softmax(x, dim=1) + F.log_softmax(x, -2) + x.softmax(dim=-1)
    + F.softmin(x, 1) + x.log_softmax(1),
    "reduce": lambda x: x.sum(-1, keepdim=True) + x.mean((1, 2), keepdim=True) + x.amax(-1, keepdim=True)
    + torch.amin(x, 1, keepdim=True) + x.max(dim=1, keepdim=True)[0] + x.min(-1, keepdim=True).values
    + torch.max(x, x * 0.5) + x.sum(1).unsqueeze(1) + x.var(-1, keepdim=True) + x.std(1, keepdim=True)
    + torch.logsumexp(x, -1, keepdim=True),
    "shape": lambda x: x.contiguous().view(x.shape[0], -1).reshape(x.size(0), x.size(1), -1) + x.flatten(1).view(-1, 4, 5)
    + x.unsqueeze(1).squeeze(1) + x.permute(0, 2, 1).contiguous().transpose(1, 2) + x[:, :1].expand(-1, 4, -1)
    + x[:, :, :1].expand_as(x) + x.unsqueeze(-1).flatten(2) + x.mT.transpose(-1, -2),
    "getitem": lambda x: torch.cat([x[:, 1:3], x[:, None, 0, ::2].expand(-1, 2, -1).repeat(1, 1, 2)[..., :5],
                                    x[:, -1:, ...], x[:, 0:1, 0:1].expand(-1, 2, 5), x[:, 0:1]], 1),
    "norms": lambda x: F.layer_norm(x, (5,), _V, _V * 0.1, 1e-3) + F.batch_norm(
        x, torch.zeros(4) + 0.1, torch.ones(4) * 2, torch.ones(4) * 0.5, torch.zeros(4) + 0.2, False, 0.1, 1e-4)
    + F.normalize(x, dim=1) + F.group_norm(x, 2, torch.ones(4), torch.zeros(4)),
}


def _cat_split(x):
    a, b = x.split(2, dim=1)
    c, d, e, f, g = x.chunk(5, -1)
    u = x.unbind(1)
    return torch.cat([x, x * 2], 1)[:, ::2] + torch.stack([x, -x], -1).sum(-1) + torch.cat([b, a], 1) \
        + torch.cat([g, f, e, d, c], -1) + torch.stack([u[0], u[1], u[2], u[3]], 1)


def _split_unpack(x):
    a, b = x.chunk(2, dim=1)
    return a * b.sigmoid()


def _misc(x):
    y = F.pad(x, (1, 2)) [:, :, 1:6] + F.pad(x, (0, 0, 1, -1), value=0.5)
    y = y + F.adaptive_avg_pool1d(x, 1) + F.adaptive_max_pool1d(x, 1) + nn.functional.adaptive_avg_pool1d(x, (1,))
    return y.masked_fill(x > 0.5, -1.0) + x.new_zeros(x.shape) + torch.zeros_like(x) + torch.ones_like(x) * 2


OPS["cat_split"] = _cat_split
OPS["misc"] = _misc
OPS["split_unpack"] = _split_unpack


@pytest.mark.no_lib
@pytest.mark.parametrize("name", sorted(OPS))
def test_op_family_graph(name, tmp_path):
    seed(1)
    fn = OPS[name]
    net = co.Lambda(fn)
    netj, tensors = check_root_graph(net, tmp_path, (4, 5), fn, tol=1e-4)
    if name == "big_const":
        big = [k for k in tensors if "__graph_const" in k]
        assert big == ["__graph_const0"] and tensors[big[0]].shape == (70, 70)
        np.testing.assert_array_equal(tensors[big[0]], _BIG.numpy())


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_family_modes(name, tmp_path):
    """In a co.Sequential after a temporal conv: forward / steps / forward_steps against the reference,
    batch 1 and 2."""
    seed(2)
    fn = OPS[name]
    # frames (B, 4, 5): a Conv2d with a (3, 1) kernel keeps V
    net = co.Sequential(co.Conv2d(4, 4, (3, 1), padding=(1, 0)), co.Lambda(fn))
    model = export_load(net, tmp_path, input_shape=(4, 5))
    for b in (1, 2):
        x = torch.randn(b, 4, 6, 5)
        check_modes(model, x, fw(net, x), tol=1e-4)


# ---- op families on frames (B, C, H, W) ----------------------------------------------------------
_G = torch.Generator().manual_seed(3)
_W2 = torch.randn(3, 4, 3, 2, generator=_G)
_B2 = torch.randn(3, generator=_G)
_A = torch.randn(6, 4, generator=_G)
_AK = torch.randn(2, 6, 3, generator=_G)

OPS4 = {
    "conv2d": lambda x: F.conv2d(x, _W2, _B2, stride=(1, 2), padding=(1, 0)),
    "einsum_nctv": lambda x: torch.einsum("nctv,vw->nctw", x, _A),
    "einsum_nkctv": lambda x: torch.einsum("nkctv,kvw->nctw", x.reshape(x.shape[0], 2, 2, 5, 6), _AK),
    "bn_2d": lambda x: F.batch_norm(x, torch.linspace(-1, 1, 4), torch.linspace(0.5, 2, 4), None, None, False, 0.1,
                                    1e-5) + F.instance_norm(x, eps=1e-5),
    "softmax_neg_dims": lambda x: torch.softmax(x, -3) * F.log_softmax(x, dim=-2) + x.amax((-1, -2), keepdim=True),
}
OPS4["conv2d_same"] = lambda x: F.conv2d(x, torch.ones(4, 1, 3, 3) / 9, None, padding="same", groups=4) \
    + F.conv2d(x, _W2[:, :, :1, :1], padding="valid").sum(1, keepdim=True)


@pytest.mark.no_lib
@pytest.mark.parametrize("name", sorted(OPS4))
def test_op_family_4d_graph(name, tmp_path):
    fn = OPS4[name]
    check_root_graph(co.Lambda(fn), tmp_path, (4, 5, 6), fn, tol=1e-4)


@pytest.mark.parametrize("name", sorted(OPS4))
def test_op_family_4d_modes(name, tmp_path):
    seed(12)
    fn = OPS4[name]
    net = co.Sequential(co.Conv3d(4, 4, (3, 1, 1), padding=(1, 0, 0)), co.Lambda(fn))
    model = export_load(net, tmp_path, input_shape=(4, 5, 6))
    for b in (1, 2):
        x = torch.randn(b, 4, 5, 5, 6)
        check_modes(model, x, fw(net, x), tol=1e-4)


# ---- batch-independent shapes ------------------------------------------------------------------
@pytest.mark.no_lib
def test_shape_from_batch_json(tmp_path):
    fn = lambda x: x.contiguous().view(x.shape[0], -1)  # noqa: E731
    netj, _ = check_root_graph(co.Lambda(fn), tmp_path, (3, 4), fn, batches=(1, 2, 3))
    shapes = [op["shape"] for op in netj["ops"] if op["op"] == "reshape"]
    assert shapes == [[{"batch": [1, 1]}, 12]]


def test_traced_at_batch_1_runs_at_batch_3(tmp_path):
    net = co.Sequential(co.Conv2d(3, 3, (3, 1), padding=(1, 0)), co.Lambda(lambda x: x.contiguous().view(x.shape[0], -1)))
    model = export_load(net, tmp_path, input_shape=(3, 4))
    x = torch.randn(3, 3, 5, 4)
    check_modes(model, x, fw(net, x))


# ---- co3d's Swish (an autograd.Function) inside co.forward_stepping -------------------------------
def _swish():
    pytest.importorskip("co3d.models.cox3d.modules.activation")
    from co3d.models.cox3d.modules.activation import Swish

    return Swish


@pytest.mark.no_lib
def test_swish_graph(tmp_path):
    Swish = _swish()
    m = co.forward_stepping(Swish())
    netj, _ = check_root_graph(m, tmp_path, (3, 4, 4), lambda x: x * torch.sigmoid(x))
    assert [op["op"] for op in netj["ops"]] == ["reshape", "sigmoid", "mul", "reshape"]
    assert "Swish" in netj["source"]
    assert torch.autograd.Function.apply is not None and "apply" not in torch.autograd.Function.__dict__


def test_swish_modes(tmp_path):
    Swish = _swish()
    seed(3)
    net = co.Sequential(co.Conv3d(2, 3, 3, padding=(1, 1, 1)), co.forward_stepping(Swish()), co.Conv3d(3, 2, 1))
    model = export_load(net, tmp_path, input_shape=(2, 4, 4))
    for b in (1, 2):
        x = torch.randn(b, 2, 5, 4, 4)
        check_modes(model, x, fw(net, x), tol=1e-5)


# ---- CoST-GCN: GraphConv, and the reshape Lambdas ---------------------------------------------------
def _cost_gcn():
    pytest.importorskip("cost_gcn")
    import cost_gcn

    return cost_gcn


def _small_adjacency(V=5):
    A = np.zeros((3, V, V), np.float32)
    A[0] = np.eye(V)
    for i in range(V - 1):
        A[1, i + 1, i] = 1.0
        A[2, i, i + 1] = 0.5
    return A


def _randomise(net):
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                if m.weight is not None:
                    m.weight.normal_(generator=g)
                    m.bias.normal_(generator=g)
        for n, p in net.named_parameters():
            if n.endswith("graph_attn"):
                p.uniform_(0.5, 1.5, generator=g)
    return net


@pytest.mark.no_lib
def test_graphconv_json(tmp_path):
    cg = _cost_gcn()
    gcn = _randomise(cg.GraphConv(3, 4, _small_adjacency())).eval()
    m = co.forward_stepping(gcn)
    netj, tensors = check_root_graph(m, tmp_path, (3, 5), lambda x: gcn(x.unsqueeze(2)).squeeze(2), batches=(1, 2))
    names = sorted(op["tensor"] for op in netj["ops"] if op["op"] == "param")
    sd = sorted(gcn.state_dict())
    assert sorted(names + netj.get("unused", [])) == sd  # every tensor claimed exactly once
    assert "bn.num_batches_tracked" in netj["unused"]
    assert "g_conv.0.weight" in names and "A" in names and "graph_attn" in names
    assert len([n for n in names if n == "A"]) == 1  # a parameter used three times is one tensor


def _gcn_block(cg, c_in, c_out):
    return co.Sequential(
        co.forward_stepping(cg.GraphConv(c_in, c_out, _small_adjacency())),
        co.Conv2d(c_out, c_out, (3, 1), padding=(1, 0)),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


def test_graphconv_modes_vs_reference(tmp_path):
    cg = _cost_gcn()
    seed(4)
    net = _randomise(co.Sequential(_gcn_block(cg, 3, 4), _gcn_block(cg, 4, 4))).eval()
    model = export_load(net, tmp_path, input_shape=(3, 5))
    for b in (1, 2):
        x = torch.randn(b, 3, 8, 5)
        check_modes(model, x, fw(net, x), tol=1e-4)
        # the reference's steps and forward_steps
        ref_steps = co_steps(net, x)
        s = model.stream(b, (3, 5))
        for t, e in enumerate(ref_steps):
            y = s.forward_step(to_np(x[:, :, t]))
            assert (y is None) == (e is None)
            if e is not None:
                assert_close(y, e, 1e-4, "step %d" % t)
        net.clean_state()
        with torch.no_grad():
            ref = net.forward_steps(x, pad_end=False)
        net.clean_state()
        s.clean_state()
        assert_close(s.forward_steps(to_np(x)), ref, 1e-4, "forward_steps vs reference")


def _skeleton_net(cg, M=2, V=5, C=3):
    def to_vector(x):  # (N, C, V, M) -> (N, M*V*C)
        return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)

    def to_nodes(x):  # (N, M*V*C) -> (N*M, C, V)
        return x.view(-1, M, V, C).permute(0, 1, 3, 2).reshape(-1, C, V)

    def spatial_pool(x):  # (N*M, C', V) -> (N, C')
        return x.view(-1, M, x.shape[1], V).mean(3).mean(1)

    from collections import OrderedDict

    return co.Sequential(OrderedDict([
        ("reshape1", co.Lambda(to_vector)),
        ("data_bn", nn.BatchNorm1d(M * V * C)),
        ("reshape2", co.Lambda(to_nodes)),
        ("layers", co.Sequential(_gcn_block(cg, C, 4))),
        ("spatial_pool", co.Lambda(spatial_pool)),
        ("fc", co.Linear(4, 6, channel_dim=1)),
    ]))


@pytest.mark.no_lib
def test_skeleton_lambdas_json(tmp_path):
    cg = _cost_gcn()
    seed(5)
    net = _randomise(_skeleton_net(cg)).eval()
    path = export_file(net, tmp_path, (3, 5, 2))
    netj = continual_c.read_model_file(path)[0]
    g = dict(graphs(netj))
    assert set(g) == {"reshape1", "reshape2", "layers.0.0", "spatial_pool"}
    # to_nodes folds M into the batch, spatial_pool unfolds it
    shapes = [op["shape"] for op in g["reshape2"]["ops"] if op["op"] == "reshape"]
    assert shapes[-1] == [{"batch": [2, 1]}, 3, 5]
    shapes = [op["shape"] for op in g["spatial_pool"]["ops"] if op["op"] == "reshape"]
    assert shapes[0][0] == {"batch": [1, 2]}
    assert "to_nodes" in g["reshape2"]["source"]


def test_skeleton_lambdas_modes(tmp_path):
    cg = _cost_gcn()
    seed(6)
    net = _randomise(_skeleton_net(cg)).eval()
    model = export_load(net, tmp_path, input_shape=(3, 5, 2))
    for b in (1, 3):
        x = torch.randn(b, 3, 7, 5, 2)
        check_modes(model, x, fw(net, x), tol=1e-4)
        ref_steps = co_steps(net, x)
        s = model.stream(b, (3, 5, 2))
        for t, e in enumerate(ref_steps):
            y = s.forward_step(to_np(x[:, :, t]))
            assert (y is None) == (e is None)
            if e is not None:
                assert_close(y, e, 1e-4, "step %d" % t)


def test_anonymous_lambda(tmp_path):
    seed(7)
    net = co.Sequential(co.Conv2d(3, 4, (3, 1), padding=(1, 0)),
                        co.Lambda(lambda x: x.permute(0, 2, 1).reshape(x.shape[0], -1)),
                        co.Conv1d(20, 3, 2))
    model = export_load(net, tmp_path, input_shape=(3, 5))
    assert model is not None
    for b in (1, 2):
        x = torch.randn(b, 3, 6, 5)
        check_modes(model, x, fw(net, x), tol=1e-5)


@pytest.mark.no_lib
def test_anonymous_lambda_json(tmp_path):
    fn = lambda x: x.permute(0, 2, 1).reshape(x.shape[0], -1, 2)  # noqa: E731
    netj, _ = check_root_graph(co.Lambda(fn), tmp_path, (4, 5), fn)
    assert [op["op"] for op in netj["ops"]] == ["permute", "reshape"]
    assert netj["ops"][0]["perm"] == [0, 2, 1]
    assert "<lambda>" in netj["source"]


@pytest.mark.no_lib
def test_takes_time_lambda_json(tmp_path):
    def f(x):
        return x.mean(1, keepdim=True) * x

    netj, _ = check_root_graph(co.Lambda(f, takes_time=True), tmp_path, (3, 4), f)
    ops = [op["op"] for op in netj["ops"]]
    assert ops[0] == "reshape" and ops[-1] == "reshape"
    assert netj["ops"][0]["shape"] == [{"batch": [1, 1]}, 3, 1, 4]


def test_takes_time_lambda_modes(tmp_path):
    def f(x):
        return torch.sigmoid(x.sum(1, keepdim=True)) * x

    net = co.Sequential(co.Conv2d(2, 3, (2, 1)), co.Lambda(f, takes_time=True))
    model = export_load(net, tmp_path, input_shape=(2, 4))
    x = torch.randn(2, 2, 6, 4)
    check_modes(model, x, fw(net, x))


# ---- CoA-GCN adaptive graph -------------------------------------------------------------------
class AdaptiveGraph(nn.Module):
    """softmax(a(x)^T b(x) / n, dim=-2) with a, b 1x1 convs, applied to x over the joints, then a
    1x1 conv (CoA-GCN's adaptive adjacency; in the reference's forward it mixes the clip's frames)."""

    def __init__(self, c, e=4):
        super().__init__()
        self.a = nn.Conv2d(c, e, 1)
        self.b = nn.Conv2d(c, e, 1)
        self.d = nn.Conv2d(c, c, 1)

    def forward(self, x):
        N, C, T, V = x.size()
        a = self.a(x).permute(0, 3, 1, 2).contiguous().view(N, V, -1)
        b = self.b(x).view(N, -1, V)
        A = torch.softmax(torch.matmul(a, b) / a.size(-1), dim=-2)
        return self.d(torch.matmul(x.view(N, C * T, V), A).view(N, C, T, V))


def test_adaptive_graph(tmp_path):
    seed(8)
    m = co.forward_stepping(AdaptiveGraph(3))
    net = co.Sequential(co.Conv2d(3, 3, (3, 1), padding=(1, 0)), m)
    model = export_load(net, tmp_path, input_shape=(3, 5))
    for b in (1, 2):
        x = torch.randn(b, 3, 6, 5)
        # steps: as the reference's steps (the graph of each frame)
        ref_steps = co_steps(net, x)
        # forward: frame by frame (the reference's forward mixes the clip's frames: deliberate)
        with torch.no_grad():
            z = net[0](x)
            per_frame = torch.stack([m.forward_step(z[:, :, t]) for t in range(z.shape[2])], 2)
            ref_fw = net(x)
        assert not torch.allclose(per_frame, ref_fw, atol=1e-3), "the reference's forward is expected to mix frames"
        check_modes(model, x, per_frame, tol=1e-4)
        s = model.stream(b, (3, 5))
        for t, e in enumerate(ref_steps):
            y = s.forward_step(to_np(x[:, :, t]))
            assert (y is None) == (e is None)
            if e is not None:
                assert_close(y, e, 1e-4, "step %d" % t)


@pytest.mark.no_lib
def test_adaptive_graph_json(tmp_path):
    seed(8)
    g = AdaptiveGraph(3).eval()
    netj, _ = check_root_graph(co.forward_stepping(g), tmp_path, (3, 5), lambda x: g(x.unsqueeze(2)).squeeze(2),
                               batches=(1, 2, 4))
    ops = [op["op"] for op in netj["ops"]]
    assert "softmax" in ops and ops.count("matmul") == 2


# ---- CoS-TR joint self-attention ------------------------------------------------------------------
class JointAttention(nn.Module):
    """Self-attention over the V joints of each frame: qkv 1x1 conv, heads, q k^T scaled, softmax, v."""

    def __init__(self, c, heads=2, use_einsum=False):
        super().__init__()
        self.h = heads
        self.d = c // heads
        self.scale = self.d ** -0.5
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.out = nn.Conv2d(c, c, 1)
        self.use_einsum = use_einsum

    def forward(self, x):
        N, C, T, V = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=1)

        def heads(t):  # (N, C, T, V) -> (N*T, H, V, D)
            return t.view(N, self.h, self.d, T, V).permute(0, 3, 1, 4, 2).reshape(N * T, self.h, V, self.d)

        q, k, v = heads(q), heads(k), heads(v)
        if self.use_einsum:
            att = torch.einsum("bhqd,bhkd->bhqk", q, k) * self.scale
        else:
            att = q @ k.transpose(-2, -1) * self.scale
        att = att.softmax(dim=-1)
        y = att @ v  # (N*T, H, V, D)
        y = y.view(N, T, self.h, V, self.d).permute(0, 2, 4, 1, 3).reshape(N, C, T, V)
        return self.out(y) + x


@pytest.mark.parametrize("use_einsum", [False, True])
def test_joint_attention_modes(tmp_path, use_einsum):
    seed(9)
    att = JointAttention(4, 2, use_einsum)
    # a plain torch network: the custom module is frame-local (checked on the exporter's clip)
    net = nn.Sequential(nn.Conv2d(3, 4, (3, 1), padding=(1, 0)), att, nn.ReLU())
    model = export_load(net, tmp_path, input_shape=(3, 5))
    for b in (1, 2):
        x = torch.randn(b, 3, 6, 5)
        check_modes(model, x, fw(net, x), tol=1e-4)
    # inside forward_stepping in a co.Sequential: as the reference's steps
    net2 = co.Sequential(co.Conv2d(3, 4, (3, 1), padding=(1, 0)), co.forward_stepping(JointAttention(4, 2, use_einsum)))
    model2 = export_load(net2, tmp_path, input_shape=(3, 5), name="b.safetensors")
    x = torch.randn(2, 3, 6, 5)
    check_modes(model2, x, fw(net2, x), tol=1e-4)


@pytest.mark.no_lib
@pytest.mark.parametrize("use_einsum", [False, True])
def test_joint_attention_json(tmp_path, use_einsum):
    seed(9)
    att = JointAttention(4, 2, use_einsum).eval()
    netj, _ = check_root_graph(co.forward_stepping(att), tmp_path, (4, 5),
                               lambda x: att(x.unsqueeze(2)).squeeze(2), batches=(1, 3), tol=1e-4)
    assert "softmax" in [op["op"] for op in netj["ops"]]
    assert any(isinstance(d, dict) for op in netj["ops"] if op["op"] == "reshape" for d in op["shape"])


# ---- custom modules in plain torch networks -----------------------------------------------------
class MyConv(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * 2.0


class Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 5)

    def forward(self, x):
        return F.gelu(self.lin(x))


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Inner()
        self.bn = nn.BatchNorm2d(3)
        self.register_buffer("offset", torch.linspace(-1, 1, 5))

    def forward(self, x):
        return self.bn(self.inner(x)) + self.offset


@pytest.mark.no_lib
def test_nested_custom_modules_json(tmp_path):
    seed(10)
    net = nn.Sequential(nn.Conv2d(3, 3, (2, 1)), Outer(), MyConv(3, 2, 1))
    _randomise(net)
    path = export_file(net, tmp_path, (3, 5))
    netj, fs, meta, tensors = continual_c.read_model_file(path)
    types = [c["type"] for c in netj["children"]]
    assert types == ["Conv2d", "Graph", "Graph"]
    g1 = netj["children"][1]
    names = [op["tensor"] for op in g1["ops"] if op["op"] == "param"]
    assert "inner.lin.weight" in names and "offset" in names and "bn.running_var" in names
    assert set(tensors) == set(net.state_dict())


def test_nested_custom_modules_modes(tmp_path):
    seed(10)
    net = _randomise(nn.Sequential(nn.Conv2d(3, 3, (2, 1)), Outer(), MyConv(3, 2, 1))).eval()
    model = export_load(net, tmp_path, input_shape=(3, 5))
    for b in (1, 2):
        x = torch.randn(b, 3, 6, 5)
        check_modes(model, x, fw(net, x))


class LeafZoo(nn.Module):
    """The torch modules the tracer keeps as leaves, inside one custom module."""

    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv3d(c, c, 1, bias=False)
        self.gn = nn.GroupNorm(2, c)
        self.inorm = nn.InstanceNorm3d(c, affine=True)
        self.bn = nn.BatchNorm3d(c, affine=False)
        self.ln = nn.LayerNorm(6)
        self.prelu = nn.PReLU(c)
        self.glu = nn.GLU(dim=1)
        self.acts = nn.Sequential(nn.ELU(0.5), nn.Hardtanh(-2, 2), nn.LeakyReLU(0.1), nn.Softplus(2, 10),
                                  nn.RReLU(), nn.Threshold(0.1, 2.0), nn.GELU("tanh"), nn.Dropout(0.3), nn.Identity())
        self.sm = nn.Softmax(dim=-1)
        self.lsm = nn.LogSoftmax(dim=1)
        self.smin = nn.Softmin(dim=-2)
        self.flat = nn.Flatten(3)
        self.unflat = nn.Unflatten(3, (5, 6))
        self.lin = nn.Linear(6, 6)

    def forward(self, x):  # (N, C, T, H, W); a step gives it (N, C, 1, H, W)
        y = self.bn(self.inorm(self.gn(self.conv(x))))
        y = self.acts(self.prelu(self.ln(y)))
        y = self.sm(y) + self.lsm(y) + self.smin(y) + self.lin(y)
        y = torch.cat([self.glu(y), y[:, :2]], 1)
        return self.unflat(self.flat(y))


@pytest.mark.no_lib
def test_leaf_modules_graph(tmp_path):
    seed(13)
    m = _randomise(LeafZoo()).eval()
    netj, tensors = check_root_graph(co.forward_stepping(m), tmp_path, (4, 5, 6),
                                     lambda x: m(x.unsqueeze(2)).squeeze(2), batches=(1, 2), tol=1e-4)
    assert set(tensors) == set(m.state_dict())


def test_leaf_modules_modes(tmp_path):
    seed(13)
    net = co.Sequential(co.Conv3d(4, 4, (2, 1, 1)), co.forward_stepping(_randomise(LeafZoo()))).eval()
    model = export_load(net, tmp_path, input_shape=(4, 5, 6))
    for b in (1, 2):
        x = torch.randn(b, 4, 4, 5, 6)
        check_modes(model, x, torch.stack([to_torch_step(net, x, t) for t in range(1, 4)], 2), tol=1e-4)


def to_torch_step(net, x, t):
    """The reference's per-frame step of a conv (kernel 2) + forward_stepping module, frame t."""
    with torch.no_grad():
        z = net[0](x[:, :, t - 1:t + 1])[:, :, 0]
        return net[1].forward_step(z)


@pytest.mark.no_lib
def test_iteration_error(tmp_path):
    class Iterates(nn.Module):
        def forward(self, x):
            return x.view(*x.shape)

    with pytest.raises(continual_c.ExportError, match="iterates over a traced value") as e:
        continual_c.export(co.forward_stepping(Iterates()), str(tmp_path / "i.st"), input_shape=(2, 3))
    assert "Iterates" in str(e.value)


# ---- Lambda variants ----------------------------------------------------------------------------
@pytest.mark.no_lib
def test_builtin_lambda_unchanged(tmp_path):
    path = export_file(co.Sequential(co.Lambda(torch.exp), co.Lambda(torch.cos)), tmp_path, (2,))
    netj = continual_c.read_model_file(path)[0]
    assert [c["type"] for c in netj["children"]] == ["Lambda", "Lambda"]
    assert netj["children"][0]["function"] == "exp"


@pytest.mark.no_lib
def test_named_function_traced_or_callback(tmp_path):
    def twice(t):
        return t * 2

    path = export_file(co.Lambda(twice), tmp_path, (2,))
    assert continual_c.read_model_file(path)[0]["type"] == "Graph"
    path = export_file(co.Lambda(twice), tmp_path, (2,), name="cb.safetensors", callbacks=["twice"])
    assert continual_c.read_model_file(path)[0] == {"type": "Lambda", "name": "", "function": "twice",
                                                    "takes_time": False}


@pytest.mark.no_lib
def test_lambda_mode_specific_functions(tmp_path):
    def f(x):
        return x * 3

    path = export_file(co.Lambda(f, forward_step_only_fn=f), tmp_path, (2,))
    assert continual_c.read_model_file(path)[0]["type"] == "Graph"
    with pytest.raises(continual_c.ExportError, match="forward_step_only_fn"):
        continual_c.export(co.Lambda(f, forward_step_only_fn=torch.relu), str(tmp_path / "x.st"), input_shape=(2,))


@pytest.mark.no_lib
def test_lambda_functor_module(tmp_path):
    seed(11)
    inner = Inner().eval()
    # takes_time=False: the module sees frames (the Lambda is a Sequential holding its child "fn")
    net = co.Sequential(co.Conv2d(3, 3, (2, 1)), co.Lambda(inner))
    path = export_file(net, tmp_path, (3, 5))
    netj, fs, meta, tensors = continual_c.read_model_file(path)
    (p, g), = graphs(netj)
    assert p == "1.fn"
    assert sorted(op["tensor"] for op in g["ops"] if op["op"] == "param") == ["lin.bias", "lin.weight"]
    x = torch.randn(2, 3, 5)
    assert_close(_trace.run_graph(g, x.numpy(), tensors, "1.fn"), inner(x), 1e-5)
    # takes_time=True: the Lambda's own Graph, tensors "fn.*"
    net = co.Sequential(co.Conv2d(3, 3, (2, 1)), co.Lambda(inner, takes_time=True))
    path = export_file(net, tmp_path, (3, 5), name="b.safetensors")
    netj, fs, meta, tensors = continual_c.read_model_file(path)
    (p, g), = graphs(netj)
    assert p == "1"
    assert sorted(op["tensor"] for op in g["ops"] if op["op"] == "param") == ["fn.lin.bias", "fn.lin.weight"]
    assert_close(_trace.run_graph(g, x.numpy(), tensors, "1"), inner(x.unsqueeze(2)).squeeze(2), 1e-5)


# ---- errors -------------------------------------------------------------------------------------
def _line_of(text):
    with open(THIS) as f:
        for i, ln in enumerate(f, 1):
            if text in ln:
                return i
    raise AssertionError(text)


class UsesFFT(nn.Module):
    def forward(self, x):
        return torch.fft.rfft(x).abs()  # the unsupported line


class UsesSort(nn.Module):
    def forward(self, x):
        return torch.sort(x, dim=1)[0]  # sorting line


class DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


class MixesTime(nn.Module):
    def forward(self, x):
        return x - x.mean(2, keepdim=True)


@pytest.mark.no_lib
def test_unsupported_op_names_it_and_line(tmp_path):
    net = nn.Sequential(nn.Conv2d(2, 2, 1), UsesFFT())
    with pytest.raises(continual_c.ExportError) as e:
        continual_c.export(net, str(tmp_path / "f.st"), input_shape=(2, 8))
    msg = str(e.value)
    assert "torch.fft.rfft" in msg and "UsesFFT" in msg and "'1'" in msg
    assert "test_trace.py:%d" % _line_of("# the unsupported line") in msg
    with pytest.raises(continual_c.ExportError) as e:
        continual_c.export(co.forward_stepping(UsesSort()), str(tmp_path / "g.st"), input_shape=(2, 8))
    msg = str(e.value)
    assert "torch.sort" in msg and "test_trace.py:%d" % _line_of("# sorting line") in msg
    with pytest.raises(continual_c.ExportError, match="callback"):  # a Lambda: the alternative is a C callback
        continual_c.export(co.Lambda(lambda x: torch.fft.rfft(x).real), str(tmp_path / "h.st"), input_shape=(2, 8))


@pytest.mark.no_lib
def test_data_dependent_control_flow(tmp_path):
    with pytest.raises(continual_c.ExportError) as e:
        continual_c.export(nn.Sequential(nn.ReLU(), DataDependent()), str(tmp_path / "d.st"), input_shape=(2, 3))
    msg = str(e.value)
    assert "data-dependent control flow" in msg and "DataDependent" in msg and "'1'" in msg


@pytest.mark.no_lib
def test_not_frame_local(tmp_path):
    with pytest.raises(continual_c.ExportError, match="not frame-local"):
        continual_c.export(nn.Sequential(nn.Conv1d(2, 2, 1), MixesTime()), str(tmp_path / "t.st"), input_shape=(2,))
    # inside co.forward_stepping the per-frame computation is what the user asked for
    path = export_file(co.Sequential(co.Conv1d(2, 2, 1), co.forward_stepping(MixesTime())), tmp_path, (2,))
    assert continual_c.read_model_file(path)[0]["children"][1]["type"] == "Graph"


@pytest.mark.no_lib
def test_needs_input_shape(tmp_path):
    with pytest.raises(continual_c.ExportError, match="input_shape") as e:
        continual_c.export(nn.Sequential(nn.ReLU(), Outer()), str(tmp_path / "n.st"))
    assert "Outer" in str(e.value) and "'1'" in str(e.value)


@pytest.mark.no_lib
def test_no_squeezable_time_axis(tmp_path):
    class Flat(nn.Module):
        def forward(self, x):
            return x.flatten(1)

    with pytest.raises(continual_c.ExportError, match="time axis"):
        continual_c.export(co.forward_stepping(Flat()), str(tmp_path / "s.st"), input_shape=(2, 3))


# ---- the C side refuses what the exporter would never write (checks of the C loader) -------------
def test_graph_shape_error_names_source(tmp_path):
    """A graph traced for frames (4, 5) run on frames (4, 6): the C side's shape error names the op and the
    user's source line. (A graph is specialised to the traced frame shape; only the batch is free.)"""
    net = co.Lambda(lambda x: x.reshape(x.shape[0], 2, 10).sum(1))  # the reshape line
    path = export_file(net, tmp_path, (4, 5))
    model = continual_c.load(path)
    with pytest.raises(continual_c.Error) as e:  # the graph records the frame shape it was traced at
        model.stream(1, (4, 6))
    assert e.value.status_name == "CO_ERR_SHAPE" and "traced for frames (B, 4, 5)" in e.value.message
    # without that record, the op that cannot take the shape names itself and its source line
    rewrite_network(path, lambda n: {k: v for k, v in n.items() if k != "frame"})
    model = continual_c.load(path)
    with pytest.raises(continual_c.Error) as e:
        s = model.stream(1, (4, 6))
        s.forward_step(np.ones((1, 4, 6), np.float32))
    assert e.value.status_name == "CO_ERR_SHAPE"
    assert "reshape" in e.value.message and "test_trace.py:%d" % _line_of("# the reshape line") in e.value.message
    # the batch is free
    s = model.stream(3, (4, 5))
    x = np.random.rand(3, 4, 5).astype(np.float32)
    assert_close(s.forward_step(x), torch.from_numpy(x).reshape(3, 2, 10).sum(1))
