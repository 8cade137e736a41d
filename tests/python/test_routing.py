"""Routing containers of the reference: Broadcast, Parallel, ParallelDispatch, Reduce, BroadcastReduce
(auto-delay), Residual with strided neighbours, Conditional (a Python predicate given as a callback), and
containers nested three deep, in all three modes."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import continual_c
from co_helpers import check_with_step_oracle, co_steps, step_oracle_from
from helpers import assert_close, check_modes, export_load, seed

co = pytest.importorskip("continual")

REDUCE = {
    "sum": lambda xs: sum(xs[1:], xs[0]),
    "mul": lambda xs: xs[0] * xs[1] if len(xs) == 2 else xs[0] * xs[1] * xs[2],
    "max": lambda xs: torch.stack(xs).max(0).values,
    "concat": lambda xs: torch.cat(xs, dim=1),
}


def _fs(x):
    return tuple(x.shape[1:2]) + tuple(x.shape[3:])


def _co_forward(net, x):
    net.eval()
    with torch.no_grad():
        return net(x)


# ---- Broadcast + Parallel + Reduce == BroadcastReduce ----------------------------------------------
@pytest.mark.parametrize("reduce", ["sum", "mul", "max", "concat"])
def test_broadcast_parallel_reduce_equals_broadcast_reduce(tmp_path, reduce):
    """The README's residual written three ways (Broadcast/Parallel/Reduce, BroadcastReduce, Residual) gives one
    result, the torch computation, in every mode."""
    seed(300)
    conv = co.Conv3d(2, 2, kernel_size=3, padding=1)
    r1 = co.Sequential(co.Broadcast(2), co.Parallel(conv, co.Delay(1)), co.Reduce(reduce))
    r2 = co.BroadcastReduce(conv, co.Delay(1), reduce=reduce)
    nets = [r1, r2]
    if reduce != "concat":  # Residual puts the residual first: same result for commutative reductions
        nets.append(co.Residual(conv, reduce=reduce))
    x = torch.randn(2, 2, 7, 4, 3)
    with torch.no_grad():
        ref = REDUCE[reduce]([F.conv3d(x, conv.weight, conv.bias, padding=1), x])
    got = []
    for i, net in enumerate(nets):
        assert net.delay == 1
        model = export_load(net, tmp_path, input_shape=(2, 4, 3), name="r%d.safetensors" % i)
        assert (model.delay, model.receptive_field, model.padding, model.stride) == (1, 3, 1, 1)
        assert_close(_co_forward(net, x), ref, 1e-5, "co forward")
        got.append(check_modes(model, x, ref))
    for g in got[1:]:
        np.testing.assert_allclose(g, got[0], rtol=0, atol=1e-6)
    assert continual_c.to_network(r1)[0]["children"][0] == {"type": "Broadcast", "name": "0", "num_streams": 2}


@pytest.mark.parametrize("reduce", ["sum", "max", "concat"])
def test_parallel_auto_delay_branches(tmp_path, reduce):
    """Branches of different delays meet in a Reduce: co.Parallel appends Delay(D - delay) to the shorter ones
    (as the reference builds it; the weights sit under '1.1.0.weight'); the sum is torch's in every mode."""
    seed(301)
    c5, c3, c1 = co.Conv2d(2, 3, (5, 3), padding=(2, 1)), co.Conv2d(2, 3, (3, 1), padding=(1, 0)), co.Conv2d(2, 3, 1)
    net = co.Sequential(co.Broadcast(), co.Parallel(c5, c3, c1), co.Reduce(reduce))
    sd = net.state_dict()
    assert "1.1.0.weight" in sd and "1.2.0.weight" in sd
    node = continual_c.to_network(net)[0]
    par = node["children"][1]
    assert [c["type"] for c in par["children"]] == ["Conv2d", "Sequential", "Sequential"]
    assert par["children"][1]["children"][1] == {"type": "Delay", "name": "1", "delay": 1, "temporal_fill": "zeros",
                                                 "auto_shrink": False}
    x = torch.randn(2, 2, 10, 4)
    model = export_load(net, tmp_path, input_shape=(2, 4))
    assert (model.receptive_field, model.delay, model.padding) == (5, 2, 2)
    with torch.no_grad():
        ref = REDUCE[reduce]([F.conv2d(x, c.weight, c.bias, padding=c.padding) for c in (c5, c3, c1)])
    check_modes(model, x, ref)


# ---- ParallelDispatch ---------------------------------------------------------------------------------
def test_parallel_dispatch_copy_and_swap(tmp_path):
    """Broadcast -> Parallel(conv k3, conv k1 (+ auto Delay)) -> ParallelDispatch([1, 0, 0]) -> Parallel(Multiply,
    ReLU, Add) -> Reduce(sum): 2b + relu(a) + a + 1."""
    seed(302)
    ca, cb = co.Conv1d(2, 3, 3, padding=1), co.Conv1d(2, 3, 1)
    net = co.Sequential(
        co.Broadcast(2),
        co.Parallel(ca, cb),
        co.ParallelDispatch([1, 0, 0]),
        co.Parallel(co.Multiply(2.0), co.continual(nn.ReLU()), co.Add(1.0)),
        co.Reduce("sum"),
    )
    x = torch.randn(3, 2, 9)
    with torch.no_grad():
        a, b = ca(x), F.conv1d(x, cb.weight, cb.bias)
        ref = 2 * b + torch.relu(a) + a + 1
    assert_close(_co_forward(net, x), ref, 1e-6, "co forward")
    model = export_load(net, tmp_path, input_shape=(2,))
    assert continual_c.to_network(net)[0]["children"][2] == {"type": "ParallelDispatch", "name": "2",
                                                             "mapping": [1, 0, 0]}
    check_modes(model, x, ref)


def test_parallel_dispatch_swap_order_matters(tmp_path):
    """[1, 0] before a concat swaps the channel blocks."""
    seed(303)
    ca, cb = co.Conv1d(2, 3, 3, padding=1), co.Conv1d(2, 2, 3, padding=1)
    net = co.Sequential(co.Broadcast(2), co.Parallel(ca, cb), co.ParallelDispatch([1, 0]), co.Reduce("concat"))
    x = torch.randn(2, 2, 8)
    with torch.no_grad():
        ref = torch.cat([cb(x), ca(x)], dim=1)
    model = export_load(net, tmp_path, input_shape=(2,))
    assert model.forward(x).shape == (2, 5, 8)
    check_modes(model, x, ref)


def test_parallel_dispatch_reference_example(tmp_path):
    """The reference docstring's copy example, on (B, C, T) clips: max(x + 1 + 0, x + 1 + 2, x) = x + 3."""
    net = co.Sequential(
        co.Broadcast(2),
        co.Parallel(co.Add(1), co.Identity()),
        co.ParallelDispatch([0, 0, 1]),
        co.Parallel(co.Identity(), co.Add(2), co.Identity()),
        co.Reduce("max"),
    )
    x = torch.randn(2, 3, 5)
    model = export_load(net, tmp_path, input_shape=(3,))
    check_modes(model, x, x + 3)


@pytest.mark.no_lib
def test_routing_export_errors():
    with pytest.raises(continual_c.ExportError, match=r"ParallelDispatch at '2'.*grouping"):
        continual_c.to_network(co.Sequential(co.Broadcast(2), co.Parallel(co.Identity(), co.Identity()),
                                             co.ParallelDispatch([[0, 1], 1])))
    with pytest.raises(continual_c.ExportError, match=r"Broadcast at '0'.*num_streams"):
        continual_c.to_network(co.Sequential(co.Broadcast(), co.Reduce("sum")))
    with pytest.raises(continual_c.ExportError, match=r"custom reduce"):
        continual_c.to_network(co.Sequential(co.Broadcast(2), co.Parallel(co.Identity(), co.Identity()),
                                             co.Reduce(lambda xs: xs[0])))

    with pytest.raises(continual_c.ExportError, match=r"predicate.*__name__"):  # reads x: needs a named callback
        continual_c.to_network(co.Conditional(lambda m, x: bool(x.mean() > 0), co.Identity()))


def test_broadcast_count_mismatch_is_a_load_error(tmp_path):
    net = co.Sequential(co.Broadcast(3), co.Parallel(co.Identity(), co.Identity()), co.Reduce("sum"))
    with pytest.raises(continual_c.Error) as e:
        export_load(net, tmp_path, input_shape=(2,))
    assert e.value.status_name == "CO_ERR_NETWORK" and "Parallel" in e.value.message


# ---- Conditional ----------------------------------------------------------------------------------------
def positive_mean(module, x):
    """The predicate (reference signature): the mean of the input is positive."""
    return bool(x.mean() > 0)


def _cb(pred):
    """A reference predicate as a continual_c callback (it gets a numpy array, no module)."""
    return lambda a: pred(None, torch.from_numpy(a))


def _alternating(shape, seed_):
    """Frames whose means change sign often (so both branches run in steps)."""
    g = torch.Generator().manual_seed(seed_)
    x = torch.randn(*shape, generator=g)
    sign = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0, 1.0, -1.0, 1.0, -1.0, -1.0, 1.0, -1.0])[: shape[2]]
    return x.abs() * sign.view(1, 1, -1, *([1] * (x.dim() - 3))) + 0.1 * x


def test_conditional_stateless_branches(tmp_path):
    """Conditional(pred, Multiply(2), ReLU): forward applies pred to the clip, steps to each frame (the
    reference's semantics); update_state=False, save/restore and two streams (check_modes)."""
    net = co.Conditional(positive_mean, co.Multiply(2.0), nn.Sigmoid())
    x = _alternating((2, 3, 10), 304)
    path = tmp_path / "cond.safetensors"
    continual_c.export(net, str(path), input_shape=(3,))
    model = continual_c.load(str(path), callbacks={"positive_mean": _cb(positive_mean)})
    assert continual_c.to_network(net)[0]["predicate"] == "positive_mean"
    theirs = co_steps(net, x)
    assert {positive_mean(None, x[:, :, t]) for t in range(10)} == {True, False}
    steps = np.stack(theirs, axis=2)
    check_with_step_oracle(model, x, _co_forward(net, x), step_oracle_from(theirs), pad_end_ref=steps)
    neg = -x.abs() - 1
    assert_close(model.forward(neg), torch.sigmoid(neg), 1e-6, "forward, predicate false")


def test_conditional_branches_with_delays(tmp_path):
    """Conditional(pred, conv k3 p1, conv k1): the reference puts Delay(1) before the k1 branch; each branch's
    state advances only on the frames it gets. Steps equal the reference's forward_step one by one."""
    seed(305)
    net = co.Conditional(positive_mean, co.Conv1d(3, 2, 3, padding=1), co.Conv1d(3, 2, 1))
    assert net.delay == 1
    node = continual_c.to_network(net)[0]
    assert [c["type"] for c in node["children"]] == ["Conv1d", "Sequential"]
    assert node["children"][1]["children"][0]["type"] == "Delay"
    x = _alternating((2, 3, 12), 305)
    path = tmp_path / "cond.safetensors"
    continual_c.export(net, str(path), input_shape=(3,))
    model = continual_c.load(str(path), callbacks={"positive_mean": _cb(positive_mean)})
    theirs = co_steps(net, x)
    assert any(t is None for t in theirs[1:]), "no branch switch produced a warm-up None; pick other data"
    check_with_step_oracle(model, x, _co_forward(net, x), step_oracle_from(theirs))
    k1 = net._modules["1"][1]
    assert_close(model.forward(-x.abs()), F.conv1d(-x.abs(), k1.weight, k1.bias), 1e-5, "forward, predicate false")


def test_conditional_single_branch_is_identity_when_false(tmp_path):
    """Conditional without on_false: the input passes unchanged (and undelayed) when the predicate is false
    (CHANGELOG 1.0.4: single-option Conditional)."""
    seed(306)
    net = co.Conditional(positive_mean, co.Sequential(co.Conv1d(2, 2, 3, padding=1), nn.ReLU()))
    x = _alternating((1, 2, 10), 306)
    path = tmp_path / "cond1.safetensors"
    continual_c.export(net, str(path), input_shape=(2,))
    model = continual_c.load(str(path), callbacks={"positive_mean": _cb(positive_mean)})
    theirs = co_steps(net, x)
    check_with_step_oracle(model, x, _co_forward(net, x), step_oracle_from(theirs))


def not_training(module, x):
    return not module.training


def test_conditional_reference_example(tmp_path):
    """The reference docstring: softmax only at inference."""
    seed(307)
    net = co.Sequential(co.Conv1d(3, 4, 3, padding=1), co.Conditional(not_training, nn.Softmax(dim=1)))
    net.eval()
    x = torch.randn(2, 3, 8)
    path = tmp_path / "sm.safetensors"
    continual_c.export(net, str(path), input_shape=(3,))
    # the predicate reads only module.training: resolved at export, no callback at load
    assert "predicate" not in continual_c.to_network(net)[0]["children"][1]
    model = continual_c.load(str(path))
    check_modes(model, x, _co_forward(net, x))


def test_conditional_needs_its_callback(tmp_path):
    path = tmp_path / "c.safetensors"
    continual_c.export(co.Conditional(positive_mean, co.Multiply(2.0)), str(path), input_shape=(2,))
    with pytest.raises(continual_c.Error) as e:
        continual_c.load(str(path))
    assert e.value.status_name == "CO_ERR_NETWORK" and "positive_mean" in e.value.message
    with pytest.raises(continual_c.Error) as e:
        continual_c.load(str(path), callbacks={"other": lambda a: True})
    assert "positive_mean" in e.value.message
    # a predicate that raises: the exception comes back from the call that ran it
    def broken(a):
        raise ZeroDivisionError("no")

    model = continual_c.load(str(path), callbacks={"positive_mean": broken})
    with pytest.raises(continual_c.Error, match="ZeroDivisionError"):
        model.forward(np.ones((1, 2, 3), np.float32))
    s = model.stream(1, (2,))
    with pytest.raises(continual_c.Error, match="ZeroDivisionError"):
        s.forward_step(np.ones((1, 2), np.float32))
    # load_memory takes callbacks too
    m2 = continual_c.load_memory(path.read_bytes(), callbacks={"positive_mean": lambda a: True})
    np.testing.assert_allclose(m2.forward(np.ones((1, 2, 3), np.float32)), 2 * np.ones((1, 2, 3)))


# ---- nesting and strides ------------------------------------------------------------------------------------
def test_containers_nested_three_deep(tmp_path):
    """Sequential > BroadcastReduce > Sequential > Residual > Sequential > Residual, then Broadcast/Parallel/
    Reduce(concat), with random weights: forward == the reference's (torch) forward, all modes."""
    seed(308)
    inner = co.Residual(co.Conv1d(4, 4, 3, padding=1))
    mid = co.Sequential(co.Conv1d(4, 4, 3, padding=1), nn.ReLU(), inner)
    other = co.Sequential(co.Conv1d(4, 4, 1),
                          co.Residual(co.Sequential(co.Conv1d(4, 4, 3, padding=1), nn.Tanh(),
                                                    co.Residual(co.Conv1d(4, 4, 3, padding=1)))))
    net = co.Sequential(
        co.Conv1d(2, 4, 1),
        co.BroadcastReduce(mid, other, reduce="sum"),
        co.Sequential(co.Broadcast(2),
                      co.Parallel(co.Conv1d(4, 3, 3, padding=1), co.Sequential(co.Conv1d(4, 3, 1), nn.Tanh())),
                      co.Reduce("concat")),
    )
    x = torch.randn(2, 2, 12)
    model = export_load(net, tmp_path, input_shape=(2,))
    assert max(n["depth"] for n in model.nodes) >= 6
    assert model.delay == net.delay and model.receptive_field == net.receptive_field
    check_modes(model, x, _co_forward(net, x))


def test_residuals_around_a_strided_conv(tmp_path):
    """Residuals before and after a stride-2 conv, and a centred residual after it."""
    seed(309)
    net = co.Sequential(
        co.Conv1d(3, 4, 3, padding=1),
        co.Residual(co.Conv1d(4, 4, 3, padding=1)),
        co.Conv1d(4, 4, 3, stride=2, padding=1),
        co.Residual(co.Sequential(co.Conv1d(4, 4, 3, padding=1), nn.ReLU())),
        co.Residual(co.Conv1d(4, 4, 5), residual_shrink="centered"),
    )
    x = torch.randn(2, 3, 21)
    model = export_load(net, tmp_path, input_shape=(3,))
    assert model.stride == 2
    check_modes(model, x, _co_forward(net, x))


def test_strided_branches_aligned(tmp_path):
    """BroadcastReduce of two stride-2 branches aligned by hand (Delay before the unpadded k1 branch):
    forward == torch, steps emit forward's outputs."""
    seed(310)
    ca, cb = co.Conv1d(3, 4, 3, stride=2, padding=1), co.Conv1d(3, 4, 1, stride=2)
    net = co.BroadcastReduce(ca, co.Sequential(co.Delay(1), cb), auto_delay=False)
    x = torch.randn(2, 3, 11)
    with torch.no_grad():
        ref = ca(x) + F.conv1d(x, cb.weight, cb.bias, stride=2)
    model = export_load(net, tmp_path, input_shape=(3,))
    assert (model.stride, model.delay) == (2, 1)
    check_modes(model, x, ref)


def test_strided_pool_and_conv_residual_2d(tmp_path):
    """Conv2d (3,3) stride 2 next to Delay -> AvgPool2d (1,3) stride 2, multiplied."""
    seed(311)
    conv = co.Conv2d(2, 2, 3, stride=2, padding=1)
    pool = co.AvgPool2d((1, 3), stride=(2, 2), padding=(0, 1))
    net = co.BroadcastReduce(conv, co.Sequential(co.Delay(1), pool), reduce="mul", auto_delay=False)
    x = torch.randn(2, 2, 9, 7)
    with torch.no_grad():
        ref = conv(x) * F.avg_pool2d(x, (1, 3), (2, 2), (0, 1))
    model = export_load(net, tmp_path, input_shape=(2, 7))
    check_modes(model, x, ref)


@pytest.mark.parametrize("k, p", [(3, 1), (5, 2)], ids=["k3 p1 + k1 (never emits)", "k5 p2 + k1 (misaligned)"])
def test_auto_delay_after_strided_branch_q12(tmp_path, k, p):
    """co.BroadcastReduce(conv k s2 p, conv k1 s2): auto-delay appends Delay(k//2) after the k1 branch, counted in
    input steps. The reference's steps equal forward's outputs only because its k1 conv does not decimate (Q1).
    continual-c decimates (Q1 fixed), so the exporter moves an auto-delay Delay in front of a strided branch,
    where it counts input steps (decisions.md Q12): steps == forward == the reference's steps."""
    seed(312)
    ca, cb = co.Conv1d(3, 4, k, stride=2, padding=p), co.Conv1d(3, 4, 1, stride=2)
    net = co.BroadcastReduce(ca, cb)
    assert isinstance(net[1], co.Sequential) and isinstance(net[1][1], co.Delay)
    x = torch.randn(2, 3, 12)
    with torch.no_grad():
        ref = ca(x) + F.conv1d(x, cb.weight, cb.bias, stride=2)
    theirs = co_steps(net, x)
    outs_theirs = np.stack([t for t in theirs if t is not None], 2)
    assert_close(outs_theirs, ref[:, :, :outs_theirs.shape[2]], 1e-5, "the reference's steps are forward's outputs")
    model = export_load(net, tmp_path, input_shape=(3,))
    assert_close(model.forward(x), ref, 1e-5, "forward")
    check_modes(model, x, ref, steps_oracle=step_oracle_from(theirs), pad_end=False)


def test_conditional_nested_in_containers(tmp_path):
    """A Conditional inside a BroadcastReduce inside a Sequential, followed by a stateful conv: steps equal the
    reference's one by one (branch warm-up Nones propagate through the reduce and the next conv)."""
    seed(313)
    net = co.Sequential(
        co.Conv1d(2, 3, 3, padding=1),
        co.BroadcastReduce(co.Conditional(positive_mean, co.Conv1d(3, 3, 3, padding=1), co.Multiply(-1.0)),
                           co.Delay(1), reduce="sum"),
        co.Conv1d(3, 2, 3, padding=1),
    )
    x = _alternating((2, 2, 12), 313)
    path = tmp_path / "nested.safetensors"
    continual_c.export(net, str(path), input_shape=(2,))
    model = continual_c.load(str(path), callbacks={"positive_mean": _cb(positive_mean)})
    theirs = co_steps(net, x)
    assert sum(t is not None for t in theirs) >= 4
    check_with_step_oracle(model, x, _co_forward(net, x), step_oracle_from(theirs))


def test_parallel_after_parallel_with_missing_entries_q15(tmp_path):
    """Q15: the reference crashes when a Parallel's output list holds a None (a branch still warming up) and
    feeds another Parallel. Here each branch runs when its own input is present: steps give
    relu(x_{n-1}) + relu(x_n) from step 2 on, forward gives 2 relu(x)."""
    seed(314)
    net = co.Sequential(co.Broadcast(2), co.Parallel(co.Delay(1), co.Identity(), auto_delay=False),
                        co.Parallel(co.continual(nn.ReLU()), co.continual(nn.ReLU())),
                        co.Reduce("sum"))
    x = torch.randn(2, 3, 9)
    model = export_load(net, tmp_path, input_shape=(3,))
    assert_close(model.forward(x), 2 * torch.relu(x), 1e-6, "forward")
    s = model.stream(2, (3,))
    outs = [s.forward_step(x[:, :, t]) for t in range(9)]
    assert outs[0] is None
    for t in range(1, 9):
        assert_close(outs[t], torch.relu(x[:, :, t - 1]) + torch.relu(x[:, :, t]), 1e-6, "step %d" % t)
    with pytest.raises(Exception):  # the reference's failure mode, documented
        net.clean_state()
        for t in range(2):
            net.forward_step(x[:, :, t])


# ---- Conditional resolved at export ------------------------------------------------------------------
@pytest.mark.parametrize("training_branch", [False, True])
def test_conditional_resolved_at_export(tmp_path, training_branch):
    """A predicate that does not read its input is evaluated when exporting: the branch the eval-mode
    module takes is written (tensor names kept), the other branch's tensors are left out, and the model
    loads with no callback. on_true = softmax (eval), on_false = a conv (taken when the predicate is
    inverted), which has tensors that must then be the only ones in the file."""
    seed(306)
    pred = (lambda m, *a: m.training) if training_branch else not_training
    net = co.Sequential(co.Conv1d(3, 4, 3, padding=1),
                        co.Conditional(pred, nn.Softmax(dim=1), co.Conv1d(4, 2, 1))).eval()
    node = continual_c.to_network(net)[0]["children"][1]
    assert node["type"] == "Sequential" and "predicate" not in node
    assert node["children"][0]["name"] == ("1" if training_branch else "0")
    path = tmp_path / "cond_resolved.safetensors"
    continual_c.export(net, str(path), input_shape=(3,))
    _, _, _, tensors = continual_c.read_model_file(str(path))
    assert any(k.startswith("1.1.") for k in tensors) == training_branch
    model = continual_c.load(str(path))  # no callback needed
    x = torch.randn(2, 3, 9)
    theirs = co_steps(net, x)
    check_with_step_oracle(model, x, _co_forward(net, x), step_oracle_from(theirs),
                           pad_end_ref=_co_forward(net, x))


def test_conditional_false_without_on_false_is_identity():
    net = co.Conditional(lambda m, *a: m.training, nn.Softmax(dim=1)).eval()
    assert continual_c.to_network(net)[0] == {"type": "Identity", "name": ""}


@pytest.mark.parametrize("reduce", ["sum", "mul", "max"])
def test_broadcast_reduce_broadcasting_branches(tmp_path, reduce):
    """Branches whose outputs broadcast against each other (numpy rules), in the patterns the
    reduction's run-wise broadcast handles: x (B, C, *), a channel mean (B, 1, *), a max over H
    (B, C, ..., 1, W: the run is W only) and a per-channel gate (B, C, 1, 1), in every mode."""
    seed(320)
    chan = co.Lambda(lambda x: x.mean(dim=1, keepdim=True), takes_time=True)
    over_h = co.Lambda(lambda x: x.amax(dim=-2, keepdim=True), takes_time=True)
    gate = co.Lambda(lambda x: torch.sigmoid(x.mean(dim=(-1, -2), keepdim=True)), takes_time=True)
    net = co.BroadcastReduce(co.Identity(), chan, over_h, gate, reduce=reduce, auto_delay=False)
    x = torch.randn(3, 5, 6, 4, 7)
    with torch.no_grad():
        parts = torch.broadcast_tensors(x, x.mean(dim=1, keepdim=True), x.amax(dim=-2, keepdim=True),
                                        torch.sigmoid(x.mean(dim=(-1, -2), keepdim=True)))
        ref = {"sum": lambda: sum(parts[1:], parts[0]), "mul": lambda: parts[0] * parts[1] * parts[2] * parts[3],
               "max": lambda: torch.stack(parts).max(0).values}[reduce]()
    model = export_load(net, tmp_path, input_shape=(5, 4, 7))
    check_modes(model, x, ref)
