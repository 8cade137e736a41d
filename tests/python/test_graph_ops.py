"""Graph nodes (traced frame-local code, docs/format.md "Graph nodes"), written by hand: every
primitive against torch computing the same function, in the three modes (forward_step per frame,
forward_steps, forward), with broadcasting, batch > 1, batch-dependent shapes, graphs that change
the batch, odd shapes, and hostile files (refused with a message, never a crash)."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import continual_c
from helpers import assert_close, check_modes, seed, write_model

TOL = 2e-5


# ---- building graphs by hand ----
def op(name, *ins, **attrs):
    d = {"op": name, "in": list(ins)}
    d.update(attrs)
    return d


def graph(ops, output=None, name="g", **extra):
    node = {"type": "Graph", "name": name, "ops": ops, "output": len(ops) if output is None else output}
    node.update(extra)
    return node


def const(shape, data):
    return op("constant", shape=list(shape), data=[float(v) for v in np.asarray(data, dtype=np.float32).ravel()])


def param(tensor, shape, buffer=False):
    d = op("param", tensor=tensor, shape=list(shape))
    if buffer:
        d["buffer"] = True
    return d


def per_frame(fn, x):
    """torch reference of a frame-local function over a clip (B, C, T, *S): fn of each frame,
    stacked at axis 2 of the result."""
    x = torch.as_tensor(x)
    with torch.no_grad():
        return torch.stack([fn(x[:, :, t]) for t in range(x.shape[2])], dim=2)


def load(tmp_path, network, tensors=None, frame_shape=None, name="g.safetensors"):
    path = write_model(os.path.join(str(tmp_path), name), network, tensors, frame_shape)
    return continual_c.load(path)


def run(tmp_path, network, fn, x, tensors=None, tol=TOL, name="g.safetensors", **kw):
    """Loads the network and checks every mode against per_frame(fn, x)."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    fs = (x.shape[1],) + tuple(x.shape[3:])
    model = load(tmp_path, network, tensors, fs, name=name)
    ref = per_frame(fn, x)
    check_modes(model, x, ref, delay=0, stride=1, tol=tol, **kw)
    return model


def clip(*shape, positive=False):
    x = torch.randn(*shape) * 2
    if positive:
        x = x.abs() + 0.1
    return x.numpy()


# ---- pointwise ----
POINTWISE = [
    ("relu", {}, F.relu, False),
    ("relu6", {}, F.relu6, False),
    ("sigmoid", {}, torch.sigmoid, False),
    ("tanh", {}, torch.tanh, False),
    ("silu", {}, F.silu, False),
    ("mish", {}, F.mish, False),
    ("hardswish", {}, F.hardswish, False),
    ("hardsigmoid", {}, F.hardsigmoid, False),
    ("selu", {}, F.selu, False),
    ("logsigmoid", {}, F.logsigmoid, False),
    ("softsign", {}, F.softsign, False),
    ("tanhshrink", {}, F.tanhshrink, False),
    ("gelu", {}, F.gelu, False),
    ("gelu", {"approximate": "tanh"}, lambda x: F.gelu(x, approximate="tanh"), False),
    ("elu", {"alpha": 0.7}, lambda x: F.elu(x, 0.7), False),
    ("celu", {"alpha": 1.3}, lambda x: F.celu(x, 1.3), False),
    ("leaky_relu", {"negative_slope": 0.2}, lambda x: F.leaky_relu(x, 0.2), False),
    ("hardtanh", {"min_val": -0.5, "max_val": 2.0}, lambda x: F.hardtanh(x, -0.5, 2.0), False),
    ("threshold", {"threshold": 0.3, "value": -1.0}, lambda x: F.threshold(x, 0.3, -1.0), False),
    ("hardshrink", {"lambd": 0.8}, lambda x: F.hardshrink(x, 0.8), False),
    ("softshrink", {"lambd": 0.8}, lambda x: F.softshrink(x, 0.8), False),
    ("softplus", {"beta": 2.0, "threshold": 3.0}, lambda x: F.softplus(x, 2.0, 3.0), False),
    ("exp", {}, torch.exp, False),
    ("log", {}, torch.log, True),
    ("abs", {}, torch.abs, False),
    ("neg", {}, torch.neg, False),
    ("square", {}, torch.square, False),
    ("sqrt", {}, torch.sqrt, True),
    ("rsqrt", {}, torch.rsqrt, True),
    ("reciprocal", {}, torch.reciprocal, True),
    ("sin", {}, torch.sin, False),
    ("cos", {}, torch.cos, False),
    ("erf", {}, torch.erf, False),
    ("expm1", {}, torch.expm1, False),
    ("log1p", {}, torch.log1p, True),
    ("floor", {}, torch.floor, False),
    ("ceil", {}, torch.ceil, False),
    ("round", {}, torch.round, False),
    ("sign", {}, torch.sign, False),
    ("logical_not", {}, lambda x: torch.logical_not(x).float(), False),
    ("identity", {}, lambda x: x, False),
    ("clamp", {"min": -0.5, "max": 1.5}, lambda x: torch.clamp(x, -0.5, 1.5), False),
    ("clamp", {"min": None, "max": 0.25}, lambda x: torch.clamp(x, max=0.25), False),
    ("clamp", {"min": -0.25}, lambda x: torch.clamp(x, min=-0.25), False),
]


@pytest.mark.parametrize("name,attrs,fn,positive", POINTWISE,
                         ids=["%s%d" % (p[0], i) for i, p in enumerate(POINTWISE)])
def test_pointwise(tmp_path, name, attrs, fn, positive):
    seed(1)
    x = clip(2, 3, 5, 4, positive=positive)
    if name == "logical_not":
        x[:, :, :, 0] = 0.0
    # the function of a function of the input: also checks that ops chain
    net = graph([op(name, 0, **attrs), op("neg", 1)])
    run(tmp_path, net, lambda f: -fn(f), x)


def test_identity_output_is_a_copy_of_the_input(tmp_path):
    seed(2)
    x = clip(2, 3, 4)
    run(tmp_path, graph([op("identity", 0)]), lambda f: f, x)
    run(tmp_path, graph([op("reshape", 0, shape=[-1, 3]), op("identity", 1)]), lambda f: f.reshape(-1, 3), x,
        name="b")


# ---- binary with broadcasting ----
BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "pow": torch.pow,
    "maximum": torch.maximum, "minimum": torch.minimum,
    "eq": lambda a, b: torch.eq(a, b).float(), "ne": lambda a, b: torch.ne(a, b).float(),
    "lt": lambda a, b: torch.lt(a, b).float(), "le": lambda a, b: torch.le(a, b).float(),
    "gt": lambda a, b: torch.gt(a, b).float(), "ge": lambda a, b: torch.ge(a, b).float(),
    "logical_and": lambda a, b: torch.logical_and(a, b).float(),
    "logical_or": lambda a, b: torch.logical_or(a, b).float(),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("other_shape", [None, (), (5,), (3, 1), (1, 3, 1), (2, 3, 5)],
                         ids=["same", "scalar", "last", "col", "mid", "full"])
def test_binary_broadcast(tmp_path, name, other_shape):
    seed(3)
    B = 2
    x = clip(B, 3, 6, 5)
    if name == "pow":
        x = np.abs(x) + 0.5
    if name in ("eq", "ne", "le", "ge", "logical_and", "logical_or"):
        x = np.round(x)  # equal values happen
    fn = BINARY[name]
    if other_shape is None:  # x op floor(x): same shape, both computed
        net = graph([op("floor", 0), op(name, 0, 1)])
        run(tmp_path, net, lambda f: fn(f, torch.floor(f)), x)
        return
    other = torch.randn(tuple(other_shape))
    if name in ("eq", "ne", "le", "ge", "logical_and", "logical_or"):
        other = torch.round(other)
    if name == "pow":
        other = other.clamp(-2, 2)
    tensors = {"g.k": other}
    # the other operand on the left too, for the scalar-first and strided-first paths
    net = graph([param("k", other_shape), op(name, 0, 1), op(name, 1, 0), op("add", 2, 3)])
    run(tmp_path, net, lambda f: fn(f, other) + fn(other, f), x, tensors)


def test_binary_both_broadcast(tmp_path):
    seed(4)
    # (B, 3, 1, 4) * (B, 1, 5, 1) → (B, 3, 5, 4): both operands broadcast, as a general strided loop
    x = clip(2, 3, 7, 5, 4)
    net = graph([op("amax", 0, axes=[2], keepdim=True), op("sum", 0, axes=[1, 3], keepdim=True), op("mul", 1, 2)])
    run(tmp_path, net, lambda f: f.amax(2, keepdim=True) * f.sum((1, 3), keepdim=True), x)


def test_where(tmp_path):
    seed(5)
    x = clip(2, 3, 4, 6)
    c = (torch.randn(6) > 0).float()
    # ops: 1 const 0.5, 2 gt(x, 0.5), 3 param c (6,), 4 neg x, 5 where(c, x, -x), 6 where(gt, 5, 4)
    ops = [const([], [0.5]), op("gt", 0, 1), param("c", [6]), op("neg", 0), op("where", 3, 0, 4),
           op("where", 2, 5, 4)]
    run(tmp_path, graph(ops), lambda f: torch.where(f > 0.5, torch.where(c != 0, f, -f), -f), x, {"g.c": c})
    # a condition broadcast against both branches of other shapes: (3, 1) ? (B, 3, 4, 6) : ()
    cond = torch.tensor([[1.0], [0.0], [1.0]])
    ops = [const([3, 1], cond), const([], [-2.0]), op("where", 1, 0, 2)]
    run(tmp_path, graph(ops), lambda f: torch.where(cond != 0, f, torch.tensor(-2.0)), x, name="b")


# ---- products ----
def test_matmul_shared_right_operand(tmp_path):
    seed(6)
    w = torch.randn(5, 7)
    x = clip(3, 4, 5, 5)
    run(tmp_path, graph([param("w", [5, 7]), op("matmul", 0, 1)]), lambda f: f @ w, x, {"g.w": w})


def test_matmul_batched_broadcast(tmp_path):
    seed(7)
    w = torch.randn(4, 6, 2)  # batch (4,) against the frame's (B, 4)
    x = clip(2, 4, 3, 5, 6)
    net = graph([param("w", [4, 6, 2]), op("matmul", 0, 1)])
    run(tmp_path, net, lambda f: torch.matmul(f, w), x, {"g.w": w})
    # the left operand broadcast: (3, 5) @ (B, 4, 5, 2)
    a = torch.randn(3, 5)
    x2 = clip(2, 4, 3, 5, 2)
    net = graph([param("a", [3, 5]), op("matmul", 1, 0)])
    run(tmp_path, net, lambda f: torch.matmul(a, f), x2, {"g.a": a}, name="b")


def test_matmul_of_two_computed_values(tmp_path):
    seed(8)
    x = clip(2, 3, 4, 5)
    net = graph([op("permute", 0, perm=[0, 2, 1]), op("matmul", 0, 1), op("softmax", 2, axis=2), op("matmul", 3, 0)])
    run(tmp_path, net, lambda f: torch.softmax(f @ f.transpose(1, 2), 2) @ f, x)


def test_matmul_4d_both_batched(tmp_path):
    seed(9)
    x = clip(2, 3, 3, 4, 5)
    w = torch.randn(1, 3, 5, 6)
    net = graph([param("w", [1, 3, 5, 6]), op("matmul", 0, 1)])
    run(tmp_path, net, lambda f: torch.matmul(f, w), x, {"g.w": w})


@pytest.mark.parametrize("bias", [True, False])
def test_linear(tmp_path, bias):
    seed(10)
    w, b = torch.randn(6, 5), torch.randn(6)
    x = clip(2, 3, 4, 5)
    ops = [param("w", [6, 5])] + ([param("b", [6])] if bias else [])
    ops.append(op("linear", 0, 1, 2) if bias else op("linear", 0, 1))
    tensors = {"g.w": w, "g.b": b} if bias else {"g.w": w}
    run(tmp_path, graph(ops), lambda f: F.linear(f, w, b if bias else None), x, tensors)


CONVS = [
    # (frame shape without batch, weight shape, stride, padding, dilation, groups)
    ((4, 9), (6, 4, 3), [1], [1], [1], 1),
    ((4, 11), (6, 2, 3), [2], [2], [2], 2),
    ((4, 7), (8, 4, 1), [1], [0], [1], 1),  # 1x1: a plain gemm
    ((3, 7, 6), (5, 3, 3, 2), [2, 1], [1, 0], [1, 2], 1),
    ((6, 5, 5), (6, 1, 3, 3), [1, 1], [1, 1], [1, 1], 6),  # depthwise
    ((4, 5, 6), (2, 4, 1, 1), [1, 1], [0, 0], [1, 1], 1),  # 1x1 2d
    ((4, 5, 6), (2, 4, 1, 1), [2, 2], [0, 0], [1, 1], 1),  # 1x1 but strided: im2col
    ((2, 4, 5, 3), (3, 2, 2, 3, 1), [1, 2, 1], [1, 0, 0], [1, 1, 1], 1),
]


@pytest.mark.parametrize("case", CONVS, ids=[str(i) for i in range(len(CONVS))])
@pytest.mark.parametrize("bias", [True, False])
def test_conv(tmp_path, case, bias):
    seed(11)
    fs, ws, stride, padding, dilation, groups = case
    w, b = torch.randn(*ws), torch.randn(ws[0])
    x = clip(2, fs[0], 3, *fs[1:])
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(stride)]
    ops = [param("weight", ws)] + ([param("bias", [ws[0]])] if bias else [])
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    ops.append(op("conv", 0, 1, 2, **attrs) if bias else op("conv", 0, 1, **attrs))
    tensors = {"g.weight": w, "g.bias": b} if bias else {"g.weight": w}
    run(tmp_path, graph(ops), lambda f: conv(f, w, b if bias else None, stride, padding, dilation, groups), x, tensors,
        tol=5e-5)


# ---- softmax, reductions ----
@pytest.mark.parametrize("axis", [0, 1, 2, 3])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_any_axis(tmp_path, name, axis):
    seed(12)
    x = clip(2, 3, 4, 5, 6)
    fn = torch.softmax if name == "softmax" else torch.log_softmax
    run(tmp_path, graph([op(name, 0, axis=axis)]), lambda f: fn(f, axis), x)


REDUCE = {"sum": lambda f, a, k: f.sum(a, keepdim=k), "mean": lambda f, a, k: f.mean(a, keepdim=k),
          "amax": lambda f, a, k: f.amax(a, keepdim=k), "amin": lambda f, a, k: f.amin(a, keepdim=k)}


@pytest.mark.parametrize("name", sorted(REDUCE))
@pytest.mark.parametrize("axes", [[3], [2], [1, 3], [2, 3], [1, 2, 3], [0]])
@pytest.mark.parametrize("keepdim", [False, True])
def test_reduce(tmp_path, name, axes, keepdim):
    seed(13)
    x = clip(2, 3, 4, 5, 6)
    fn = REDUCE[name]
    ops = [op(name, 0, axes=axes, keepdim=keepdim)]
    if 4 - (0 if keepdim else len(axes)) < 2:  # a graph outputs rank >= 2: (B,) back to (B, 1)
        ops.append(op("reshape", 1, shape=[{"batch": [1, 1]}, -1]))
        run(tmp_path, graph(ops), lambda f: fn(f, axes, keepdim).reshape(f.shape[0], -1), x)
    else:  # axes [0] without keepdim: the output's batch is the frame's C
        run(tmp_path, graph(ops), lambda f: fn(f, axes, keepdim), x)


def test_reduce_nan_propagates(tmp_path):
    x = np.random.RandomState(0).randn(1, 2, 3, 4).astype(np.float32)
    x[0, 1, 1, 2] = np.nan
    model = load(tmp_path, graph([op("amax", 0, axes=[2], keepdim=True), op("amin", 0, axes=[2], keepdim=True),
                                  op("add", 1, 2)]), frame_shape=(2, 4))
    y = model.forward(x)
    ref = per_frame(lambda f: f.amax(2, keepdim=True) + f.amin(2, keepdim=True), x).numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    assert_close(y, ref)


# ---- shape ops ----
def test_reshape_with_batch_runs_at_any_batch(tmp_path):
    seed(14)
    # (B, 6, 4) -> (B, 2, 3, 4) -> (B*2, 3, 4) -> softmax -> (B, 24)
    net = graph([op("reshape", 0, shape=[{"batch": [1, 1]}, 2, 3, 4]),
                 op("reshape", 1, shape=[{"batch": [2, 1]}, 3, -1]),
                 op("softmax", 2, axis=1),
                 op("reshape", 3, shape=[{"batch": [1, 1]}, -1])])

    def fn(f):
        return torch.softmax(f.reshape(f.shape[0] * 2, 3, 4), 1).reshape(f.shape[0], -1)

    for B in (1, 3):
        x = clip(B, 6, 5, 4)
        run(tmp_path, net, fn, x, name="b%d" % B)
    # one model file, streams of two batch sizes
    model = load(tmp_path, net, frame_shape=(6, 4), name="both")
    for B in (1, 3):
        x = clip(B, 6, 5, 4)
        assert_close(model.forward(x), per_frame(fn, x), TOL, "batch %d" % B)
        s = model.stream(B)
        assert_close(s.forward_step(x[:, :, 0]), fn(torch.as_tensor(x[:, :, 0])), TOL, "step at batch %d" % B)


def test_reshape_batch_divisor(tmp_path):
    """{"batch": [1, 2]}: the batch halves; batch 4 works, batch 3 is a shape error naming the op."""
    seed(15)
    net = graph([op("reshape", 0, shape=[{"batch": [1, 2]}, -1, 3], source="x.view(x.shape[0] // 2, -1, 3)")])
    model = load(tmp_path, net, frame_shape=(3, 2))  # the batch-1 check at load does not apply
    x = clip(4, 3, 2, 2)
    assert_close(model.forward(x), per_frame(lambda f: f.reshape(2, -1, 3), x))
    with pytest.raises(continual_c.Error) as e:
        model.stream(3)
    msg = str(e.value)
    assert "CO_ERR_SHAPE" in msg and "divisible" in msg and "op 0 'reshape'" in msg and "x.view" in msg, msg


def test_expand_permute_cat_slice(tmp_path):
    seed(16)
    x = clip(2, 3, 4, 1, 5)
    ops = [op("expand", 0, shape=[-1, -1, 4, -1]),             # 1 (B, 3, 4, 5)
           op("permute", 1, perm=[0, 3, 1, 2]),                # 2 (B, 5, 3, 4)
           op("slice", 2, axis=1, start=1, stop=5, step=2),    # 3 (B, 2, 3, 4)
           op("slice", 2, axis=3, start=0, stop=3, step=1),    # 4 (B, 5, 3, 3)
           op("reshape", 4, shape=[{"batch": [1, 1]}, 3, 5, 3]),  # 5 (B, 3, 5, 3)
           op("permute", 3, perm=[0, 2, 1, 3]),                # 6 (B, 3, 2, 4)
           op("slice", 6, axis=3, start=1, stop=4, step=1),    # 7 (B, 3, 2, 3)
           op("cat", 5, 7, 5, axis=2)]                         # 8 (B, 3, 12, 3)

    def fn(f):
        a = f.expand(-1, -1, 4, -1).permute(0, 3, 1, 2)
        s1 = a[:, 1:5:2]
        s2 = a[:, :, :, 0:3].reshape(f.shape[0], 3, 5, 3)
        s3 = s1.permute(0, 2, 1, 3)[:, :, :, 1:4]
        return torch.cat([s2, s3, s2], 2)

    run(tmp_path, graph(ops), fn, x)


def test_stack_as_unsqueeze_and_cat(tmp_path):
    seed(17)
    x = clip(2, 3, 4, 5)
    ops = [op("reshape", 0, shape=[{"batch": [1, 1]}, 1, 3, 5]), op("sin", 1), op("cat", 1, 2, axis=1)]
    run(tmp_path, graph(ops), lambda f: torch.stack([f, torch.sin(f)], 1), x)


@pytest.mark.parametrize("affine", [0, 1, 2])
def test_batch_norm(tmp_path, affine):
    seed(18)
    C = 4
    mean, var, w, b = torch.randn(C), torch.rand(C) + 0.5, torch.randn(C), torch.randn(C)
    x = clip(3, C, 4, 5)
    ops = [param("running_mean", [C], buffer=True), param("running_var", [C], buffer=True)]
    tensors = {"g.running_mean": mean, "g.running_var": var}
    ins = [0, 1, 2]
    if affine >= 1:
        ops.append(param("weight", [C]))
        tensors["g.weight"] = w
        ins.append(3)
    if affine >= 2:
        ops.append(param("bias", [C]))
        tensors["g.bias"] = b
        ins.append(4)
    ops.append(op("batch_norm", *ins, eps=1e-3))
    fn = lambda f: F.batch_norm(f, mean, var, w if affine >= 1 else None, b if affine >= 2 else None, False, 0.0, 1e-3)
    run(tmp_path, graph(ops), fn, x, tensors)


@pytest.mark.parametrize("ndim,affine", [(1, 2), (2, 2), (2, 1), (1, 0), (3, 2)])
def test_layer_norm(tmp_path, ndim, affine):
    seed(19)
    x = clip(2, 3, 4, 5, 6)
    shape = [3, 5, 6][3 - ndim:]
    w, b = torch.randn(*shape), torch.randn(*shape)
    ops = []
    tensors = {}
    ins = [0]
    if affine >= 1:
        ops.append(param("weight", shape))
        tensors["g.weight"] = w
        ins.append(len(ops))
    if affine >= 2:
        ops.append(param("bias", shape))
        tensors["g.bias"] = b
        ins.append(len(ops))
    ops.append(op("layer_norm", *ins, ndim=ndim, eps=1e-5))
    fn = lambda f: F.layer_norm(f, shape, w if affine >= 1 else None, b if affine >= 2 else None, 1e-5)
    run(tmp_path, graph(ops), fn, x, tensors, tol=5e-5)


def test_param_used_twice_and_constants(tmp_path):
    seed(20)
    k = torch.randn(5)
    x = clip(2, 3, 4, 5)
    ops = [param("k", [5]), op("mul", 0, 1), param("k", [5]), op("add", 2, 3), const([1, 5], np.arange(5) * 0.5),
           op("sub", 4, 5), const([], [2.0]), op("div", 6, 7)]
    run(tmp_path, graph(ops), lambda f: ((f * k + k) - torch.arange(5.0).reshape(1, 5) * 0.5) / 2.0, x, {"g.k": k})


def test_unused_tensors_are_claimed(tmp_path):
    """"unused": state_dict entries no op reads (an I64 num_batches_tracked, a parameter the code
    never uses) are claimed without being read."""
    seed(25)
    k = torch.randn(4)
    tensors = {"g.k": k, "g.bn.num_batches_tracked": np.array(7, dtype=np.int64), "g.spare": torch.randn(3, 2),
               "g.scalar": np.array(1.5, dtype=np.float32)}
    net = graph([param("k", [4]), op("add", 0, 1)], unused=["bn.num_batches_tracked", "spare", "scalar"])
    run(tmp_path, net, lambda f: f + k, clip(2, 3, 4, 4), tensors)
    for unused, words in [(["spare", "absent"], ["'absent'", "not in the file"]),
                          (["k", "spare", "scalar", "bn.num_batches_tracked"], ["claimed by two"]),
                          ("spare", ["'unused' must be a list"]),
                          ([3], ["'unused' entry 0"])]:
        net = graph([param("k", [4]), op("add", 0, 1)], unused=unused)
        where, msg = refused(tmp_path, net, tensors, frame_shape=(3, 4))
        for w in words:
            assert w in msg, msg


def test_output_is_a_constant_or_a_param(tmp_path):
    w = torch.randn(1, 3)
    run(tmp_path, graph([const([1, 2], [1.0, 2.0])]), lambda f: torch.tensor([[1.0, 2.0]]), clip(2, 3, 3))
    run(tmp_path, graph([param("w", [1, 3]), op("reshape", 1, shape=[3, 1])]), lambda f: w.reshape(3, 1),
        clip(2, 3, 3), {"g.w": w}, name="b")


def test_odd_shapes(tmp_path):
    seed(21)
    w = torch.randn(7, 11)
    x = clip(3, 5, 7, 13, 7)
    ops = [param("w", [7, 11]), op("matmul", 0, 1), op("permute", 2, perm=[0, 3, 2, 1]),
           op("mean", 3, axes=[3], keepdim=False), op("tanh", 4)]
    run(tmp_path, graph(ops), lambda f: torch.tanh((f @ w).permute(0, 3, 2, 1).mean(3)), x, {"g.w": w})


# ---- graphs among other modules, and graphs that change the batch ----
def conv2d_node(name, cin, cout, k):
    return {"type": "Conv2d", "name": name, "in_channels": cin, "out_channels": cout, "kernel_size": list(k),
            "stride": [1, 1], "padding": [k[0] // 2, 0], "dilation": [1, 1], "groups": 1, "bias": True,
            "padding_mode": "zeros", "temporal_fill": "zeros"}


def test_batch_folding_graph_then_conv_then_unfolding_graph(tmp_path):
    """(N, M*V*C) → (N*M, C, V), a temporal Conv2d over (N*M, C, T, V), then (N*M, C', V) → (N, M*C'*V)."""
    seed(22)
    N, M, V, C, C2, T = 2, 3, 5, 4, 6, 7
    conv = torch.nn.Conv2d(C, C2, (3, 1), padding=(1, 0)).eval()
    fold = graph([op("reshape", 0, shape=[{"batch": [M, 1]}, V, C]), op("permute", 1, perm=[0, 2, 1])],
                 name="fold", source="FoldPersons")
    unfold = graph([op("reshape", 0, shape=[{"batch": [1, M]}, M, C2, V]), op("relu", 1),
                    op("reshape", 2, shape=[{"batch": [1, M]}, -1])], name="unfold")
    net = {"type": "Sequential", "name": "", "children": [fold, conv2d_node("conv", C, C2, (3, 1)), unfold]}
    tensors = {"conv.weight": conv.weight, "conv.bias": conv.bias}
    x = clip(N, M * V * C, T)
    with torch.no_grad():
        xt = torch.as_tensor(x)                                                   # (N, M*V*C, T)
        folded = xt.permute(0, 2, 1).reshape(N, T, M, V, C).permute(0, 2, 4, 1, 3).reshape(N * M, C, T, V)
        y = torch.relu(conv(folded))                                              # (N*M, C2, T, V)
        ref = y.reshape(N, M, C2, T, V).permute(0, 1, 2, 4, 3).reshape(N, M * C2 * V, T)
    model = load(tmp_path, net, tensors, (M * V * C,))
    check_modes(model, x, ref, delay=1, stride=1, tol=5e-5)
    # the output batch is the input's; stream at batch 1 too
    x1 = np.ascontiguousarray(x[:1])
    check_modes(model, x1, ref[:1], delay=1, stride=1, tol=5e-5)


def test_graph_folding_batch_then_graph(tmp_path):
    seed(23)
    N, M, V, C = 3, 2, 4, 5
    g1 = graph([op("reshape", 0, shape=[{"batch": [M, 1]}, V, C])], name="a")
    g2 = graph([op("softmax", 0, axis=2), op("reshape", 1, shape=[{"batch": [1, M]}, M * V, C])], name="b")
    net = {"type": "Sequential", "name": "", "children": [g1, g2]}
    x = clip(N, M * V * C, 4)
    fn = lambda f: torch.softmax(f.reshape(N * M, V, C), 2).reshape(N, M * V, C)
    run(tmp_path, net, fn, x)


def test_graph_inside_sequential_with_convs(tmp_path):
    seed(24)
    c1 = torch.nn.Conv1d(3, 4, 3).eval()
    w = torch.randn(4)
    g = graph([param("scale", [4]), op("reshape", 1, shape=[1, 4]), op("mul", 0, 2), op("sigmoid", 3)],
              name="1", source="Gate")
    net = {"type": "Sequential", "name": "", "children": [
        {"type": "Conv1d", "name": "0", "in_channels": 3, "out_channels": 4, "kernel_size": [3], "stride": [1],
         "padding": [0], "dilation": [1], "groups": 1, "bias": True, "padding_mode": "zeros", "temporal_fill": "zeros"},
        g]}
    x = clip(2, 3, 9)
    with torch.no_grad():
        ref = torch.sigmoid(c1(torch.as_tensor(x)) * w.reshape(1, 4, 1))
    model = load(tmp_path, net, {"0.weight": c1.weight, "0.bias": c1.bias, "1.scale": w}, (3,))
    check_modes(model, x, ref, delay=2, stride=1)


def test_long_graph_with_skips_reuses_scratch(tmp_path):
    """A chain of 400 ops with skip connections: right in every mode, and the scratch holds the
    live values only (a dead value's region is reused), not one region per op."""
    seed(26)
    torch_fns = {"sin": torch.sin, "tanh": torch.tanh, "add": torch.add, "mul": torch.mul}
    ops = []
    for j in range(400):
        last = len(ops)
        if j % 4 == 0:
            ops.append(op("sin", last))
        elif j % 4 == 1:
            ops.append(op("add", last, max(0, last - 3)))  # a skip over three values
        elif j % 4 == 2:
            ops.append(op("tanh", last))
        else:
            ops.append(op("mul", last, max(0, last - 5)))

    def fn(f):
        vals = [f]
        for o in ops:
            vals.append(torch_fns[o["op"]](*[vals[i] for i in o["in"]]))
        return vals[-1]

    x = clip(2, 8, 3, 16)
    model = run(tmp_path, graph(ops), fn, x)
    frame_bytes = 2 * 8 * 16 * 4  # one value: at most ~6 are live at once
    assert model.plan_info(batch=2)["arena_bytes"] < 16 * frame_bytes + 4096


def test_plan_info_counts_macs(tmp_path):
    w = torch.randn(5, 7)
    model = load(tmp_path, graph([param("w", [5, 7]), op("matmul", 0, 1), op("relu", 2)]), {"g.w": w}, (4, 5))
    info = model.plan_info(batch=2)
    assert info["macs_per_step"] == 2 * 4 * 5 * 7 + 2 * 4 * 7  # the matmul's products, then relu's elements
    assert info["output_frame"] == (2, 4, 7)


# ---- hostile files: refused with a message naming the problem ----
def refused(tmp_path, network, tensors=None, frame_shape=(3, 4), batch=2, where=None, name="h.safetensors"):
    """The error raised at load or at stream creation (plan for `batch` x frame_shape)."""
    path = write_model(os.path.join(str(tmp_path), name), network, tensors, frame_shape)
    try:
        model = continual_c.load(path)
    except continual_c.Error as e:
        return "load", str(e)
    try:
        model.stream(batch, frame_shape)
    except continual_c.Error as e:
        return "stream", str(e)
    try:
        model.forward(np.zeros((batch, frame_shape[0], 2) + tuple(frame_shape[1:]), np.float32))
    except continual_c.Error as e:
        return "forward", str(e)
    raise AssertionError("accepted: %s" % json.dumps(network)[:300])


HOSTILE = [
    # (network, tensors, expected words)
    (graph([op("relu", 1)]), None, ["'in' entry 0", "earlier value"]),
    (graph([op("relu", -1)]), None, ["earlier value"]),
    (graph([op("relu", 0.5)]), None, ["earlier value"]),
    (graph([op("relu", 0), op("add", 1, 2)]), None, ["earlier value"]),
    (graph([op("relu")]), None, ["takes 1 input,"]),
    (graph([op("add", 0)]), None, ["takes 2 inputs"]),
    (graph([op("cat", *([0] * 9), axis=1)]), None, ["inputs"]),
    (graph([op("frobnicate", 0)]), None, ["unknown element-wise function", "frobnicate"]),
    (graph([op("relu", 0, negative_slope=0.1)]), None, ["unknown key", "negative_slope"]),
    (graph([op("softmax", 0, axis=5)]), None, ["CO_ERR_SHAPE", "axis 5", "softmax"]),
    (graph([op("softmax", 0, axis=9)]), None, ["axis"]),
    (graph([op("softmax", 0)]), None, ["axis"]),
    (graph([op("sum", 0, axes=[1, 1])]), None, ["twice"]),
    (graph([op("sum", 0, axes=[3])]), None, ["out of range"]),
    (graph([op("sum", 0, axes=[])]), None, ["axes"]),
    (graph([op("permute", 0, perm=[0, 2])]), None, ["perm"]),
    (graph([op("permute", 0, perm=[0, 1, 5])]), None, ["permutation"]),
    (graph([op("reshape", 0, shape=[5, 7])]), None, ["cannot reshape"]),
    (graph([op("reshape", 0, shape=[-1, -1])]), None, ["-1 once"]),
    (graph([op("reshape", 0, shape=[0, 4])]), None, ["size"]),
    (graph([op("reshape", 0, shape=[{"batch": [1, 0]}, -1])]), None, ["batch"]),
    (graph([op("reshape", 0, shape=[{"batch": [1, 1], "x": 1}, -1])]), None, ["batch"]),
    (graph([op("reshape", 0, shape=[1] * 9)]), None, ["at most 8"]),
    (graph([op("reshape", 0, shape="abc")]), None, ["list"]),
    (graph([op("expand", 0, shape=[-1, 5, 4])]), None, ["cannot expand"]),
    (graph([op("expand", 0, shape=[-1, 3])]), None, ["rank"]),
    (graph([op("slice", 0, axis=2, start=4, stop=9, step=1)]), None, ["empty"]),
    (graph([op("slice", 0, axis=2, start=0, stop=2, step=0)]), None, ["step"]),
    (graph([op("cat", 0, 1, axis=1), op("sum", 0, axes=[2])], output=1), None, ["earlier value"]),
    (graph([op("sum", 0, axes=[2]), op("cat", 0, 1, axis=1)]), None, ["cannot concatenate"]),
    (graph([op("matmul", 0, 0)]), None, ["inner sizes"]),
    (graph([op("sum", 0, axes=[1, 2]), op("matmul", 1, 1), op("reshape", 2, shape=[1, -1])]), None, ["rank >= 2"]),
    (graph([op("add", 0, 1), const([5], [1, 2, 3, 4, 5])]), None, ["earlier value"]),
    (graph([const([5], [1, 2, 3, 4, 5]), op("add", 0, 1)]), None, ["do not broadcast"]),
    (graph([const([2], [1, 2, 3])]), None, ["'data'"]),
    (graph([op("constant", shape=[4097], data=[0.0] * 4097)]), None, ["at most 4096"]),
    (graph([op("constant", shape=[2], data=[0.0, "x"])]), None, ["'data'"]),
    (graph([param("w", [4, 2]), op("matmul", 0, 1)]), None, ["missing tensor", "g.w"]),
    (graph([param("w", [4, 3]), op("matmul", 0, 1)]), {"g.w": np.zeros((4, 2))}, ["shape"]),
    (graph([param("w", [4, 2]), param("w", [2, 4]), op("matmul", 0, 1)]), {"g.w": np.zeros((4, 2))},
     ["different shapes"]),
    (graph([op("relu", 0)]), {"g.extra": np.zeros(3)}, ["unused tensor"]),
    (graph([param("w", [6, 5]), op("linear", 0, 1)]), {"g.w": np.zeros((6, 5))}, ["linear"]),
    (graph([param("w", [2, 2, 3]), op("conv", 0, 1, stride=[1], padding=[0], dilation=[1], groups=1)]),
     {"g.w": np.zeros((2, 2, 3))}, ["channels do not match"]),
    (graph([param("w", [2, 3, 9]), op("conv", 0, 1, stride=[1], padding=[0], dilation=[1], groups=1)]),
     {"g.w": np.zeros((2, 3, 9))}, ["smaller than the dilated kernel"]),
    (graph([param("w", [2, 3, 3]), op("conv", 0, 1, stride=[1, 1], padding=[0], dilation=[1], groups=1)]),
     {"g.w": np.zeros((2, 3, 3))}, ["one value per spatial axis"]),
    (graph([op("batch_norm", 0, 0, 0)]), None, ["param or constant"]),
    (graph([const([3], [0, 0, 0]), const([2], [1, 1]), op("batch_norm", 0, 1, 2)]), None, ["param or constant"]),
    (graph([const([4], [0] * 4), const([4], [1] * 4), op("batch_norm", 0, 1, 2)]), None, ["channels"]),
    (graph([op("layer_norm", 0, ndim=4)]), None, ["layer_norm"]),
    (graph([const([3], [1, 1, 1]), op("layer_norm", 0, 1, ndim=1)]), None, ["weight"]),
    (graph([op("sum", 0, axes=[1, 2])]), None, ["2 to 7 axes"]),
    (graph([op("relu", 0)], output=2), None, ["output"]),
    (graph([op("relu", 0)], output=0), None, ["output"]),
    (graph([]), None, ["'ops'"]),
    ({"type": "Graph", "name": "g", "ops": "x", "output": 1}, None, ["'ops'"]),
    ({"type": "Graph", "name": "g", "ops": [op("relu", 0)]}, None, ["output"]),
    (graph([op("relu", 0)], frobnicate=1), None, ["unknown key", "frobnicate"]),
    (graph([op("relu", 0)], source=5), None, ["source"]),
    (graph([[1, 2]]), None, ["must be a JSON object"]),
    (graph([{"in": [0]}]), None, ["'op'"]),
    (graph([op("relu", 0, source=["x"])]), None, ["source"]),
    (graph([{"op": "relu", "in": 0}]), None, ["'in' must be a list"]),
    (graph([op("relu", 0)] * 4097), None, ["1 to 4096 ops"]),
    (graph([op("gelu", 0, approximate="maybe")]), None, ["approximate"]),
    (graph([op("reshape", 0, shape=[{"batch": [1, 1]}, 2 ** 31, 2 ** 31, 2 ** 31])]), None, ["reshape"]),
    (graph([op("reshape", 0, shape=[1, 1, -1]), op("expand", 1, shape=[2 ** 20, 2 ** 20, -1])]), None, ["too large"]),
    (graph([op("expand", 0, shape=[-1, -1, 8])]), None, ["cannot expand"]),
]


@pytest.mark.parametrize("case", range(len(HOSTILE)))
def test_hostile(tmp_path, case):
    network, tensors, words = HOSTILE[case]
    where, msg = refused(tmp_path, network, tensors)
    for w in words:
        assert w in msg, "%s error %r lacks %r" % (where, msg, w)


def test_hostile_shape_error_names_op_and_source(tmp_path):
    net = graph([op("relu", 0), op("matmul", 1, 0, source="y = torch.relu(x) @ x")], source="MyBlock")
    where, msg = refused(tmp_path, net)
    assert where == "load"  # the frame shape is recorded: the batch-1 plan is checked at load
    for w in ["CO_ERR_SHAPE", "g (Graph MyBlock)", "op 1 'matmul'", "y = torch.relu(x) @ x", "(1, 3, 4)"]:
        assert w in msg, msg


def test_hostile_random_mutations_never_crash(tmp_path):
    """Random edits of a valid graph: each loads and runs, or is refused with an error."""
    rng = np.random.RandomState(0)
    base = [param("w", [4, 4]), op("matmul", 0, 1), op("softmax", 2, axis=2), op("sum", 3, axes=[2], keepdim=True),
            op("reshape", 4, shape=[{"batch": [1, 1]}, -1, 1]), op("cat", 5, 5, axis=1), op("slice", 6, axis=1, start=0,
            stop=3, step=1), op("permute", 7, perm=[0, 2, 1]), op("expand", 8, shape=[-1, 2, -1]),
            op("mul", 9, 0)]
    w = np.eye(4, dtype=np.float32)
    values = [-1, 0, 1, 2, 3, 7, 8, 100, 2 ** 31, -2 ** 40, 0.5, None, "x", [], [1, 2], {"batch": [1, 2]}]
    for trial in range(150):
        ops = json.loads(json.dumps(base))
        for _ in range(rng.randint(1, 3)):
            o = ops[rng.randint(len(ops))]
            key = list(o.keys())[rng.randint(len(o))]
            v = values[rng.randint(len(values))]
            if isinstance(o[key], list) and o[key] and rng.rand() < 0.5:
                o[key][rng.randint(len(o[key]))] = v
            else:
                o[key] = v
        net = graph(ops)
        path = write_model(os.path.join(str(tmp_path), "m%d.safetensors" % trial), net, {"g.w": w}, (3, 4))
        try:
            model = continual_c.load(path)
            s = model.stream(2, (3, 4))
            s.forward_step(np.ones((2, 3, 4), np.float32))
            model.forward(np.ones((2, 3, 2, 4), np.float32))
        except continual_c.Error as e:
            assert str(e), "an error without a message"
