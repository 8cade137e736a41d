"""Folding at load (src/core/fuse.c): an eval BatchNorm into the conv before it, an element-wise
activation into the conv, BatchNorm or residual sum that produces its input. Each network is
checked against torch in every mode (forward, steps, forward_steps with and without end padding,
peeks, save/restore: helpers.check_modes), and the plan (`continual info --ops`) says what was
folded — and, where the conv's (or the norm's) output has a second reader, that nothing was."""
import os
import subprocess

import numpy as np
import pytest
import torch
from torch import nn

from co_helpers import randomise_norms
import continual_c
from helpers import check_modes, export_load, seed, torch_forward

co = pytest.importorskip("continual")

def live_ops(path, batch, shape):
    """Kinds of the plan's ops that run (`continual info --ops`), the folded ones aside, and the
    number of folded ones."""
    cli = os.path.join(os.path.dirname(continual_c.library_path()), "continual")
    if not os.path.exists(cli):
        pytest.skip("the continual command is not built next to the library")
    out = subprocess.run([cli, "info", path, "--ops", "--batch", str(batch), "--frame-shape",
                          ",".join(str(d) for d in shape)], check=True, capture_output=True, text=True).stdout
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["op", "kind"])  # the plan table
    kinds = [ln.split()[1] for ln in lines[start + 1:] if ln.split() and ln.split()[0].isdigit()]
    return [k for k in kinds if k != "folded"], kinds.count("folded")


# (name, network, frame shape, ops in the plan that run after folding)
CASES = [
    ("conv3d_bn_relu", lambda: co.Sequential(co.Conv3d(4, 6, 3, padding=1), nn.BatchNorm3d(6), nn.ReLU()),
     (4, 7, 9), 1),
    ("conv3d_nobias_bn", lambda: co.Sequential(co.Conv3d(4, 6, (3, 1, 3), padding=(2, 0, 1), bias=False),
                                               nn.BatchNorm3d(6)), (4, 5, 6), 1),
    ("depthwise_strided_bn_sigmoid", lambda: co.Sequential(
        co.Conv3d(6, 6, 3, padding=1, stride=(1, 2, 2), groups=6, bias=False), nn.BatchNorm3d(6), nn.Sigmoid()),
     (6, 9, 11), 1),
    ("pointwise_bn_relu", lambda: co.Sequential(co.Conv3d(4, 8, 1, bias=False), nn.BatchNorm3d(8), nn.ReLU()),
     (4, 5, 5), 1),
    ("conv1d_strided_bn_relu6", lambda: co.Sequential(co.Conv1d(8, 8, 3, padding=1, stride=2), nn.BatchNorm1d(8),
                                                      nn.ReLU6()), (8,), 1),
    # a conv on the Winograd path (dense 3x3, >= 16 channels): its transformed weights are made
    # again from the folded ones
    ("winograd_conv3d_bn_relu", lambda: co.Sequential(co.Conv3d(16, 24, 3, padding=1), nn.BatchNorm3d(24),
                                                      nn.ReLU()), (16, 7, 9), 1),
    # BatchNorm without a conv before it keeps its op and takes the activation
    ("bn_relu", lambda: co.Sequential(nn.BatchNorm2d(3), nn.ReLU()), (3, 5), 1),
    # residual: conv (+BN folded), delay, sum with the ReLU fused into it
    ("residual_relu", lambda: co.Sequential(
        co.Residual(co.Sequential(co.Conv3d(4, 4, 3, padding=1), nn.BatchNorm3d(4))), nn.ReLU()), (4, 5, 5), 3),
    # second reader of the conv's output: the BatchNorm is not folded (conv, norm, sum)
    ("bn_second_reader", lambda: co.Sequential(
        co.Conv3d(4, 6, 3, padding=1), co.BroadcastReduce(co.Sequential(nn.BatchNorm3d(6)), co.Identity(), reduce="sum")),
     (4, 5, 5), 3),
    # second reader of the (folded) norm's output: the ReLU is not fused (conv+BN, relu, sum)
    ("act_second_reader", lambda: co.Sequential(
        co.Conv3d(4, 6, 3, padding=1), nn.BatchNorm3d(6), co.BroadcastReduce(co.Sequential(nn.ReLU()), co.Identity(),
                                                                     reduce="sum")),
     (4, 5, 5), 3),
    # the network's output is a second reader too: a conv whose output leaves the network keeps it
    ("output_is_reader", lambda: co.Sequential(
        co.Conv3d(4, 6, 1), co.BroadcastReduce(co.Sequential(co.forward_stepping(nn.BatchNorm3d(6)),
                                                             co.forward_stepping(nn.ReLU())), co.Identity(),
                                               reduce="mul")), (4, 5, 5), 3),
]


def check_fold(tmp_path, make, shape, n_ops, rng_seed):
    """Exports make(), checks that n_ops ops stay live (the folded ones still listed in the plan)
    and the model against torch in every mode; returns the live ops' kinds."""
    seed(rng_seed)
    net = randomise_norms(make()).eval()
    x = torch.randn(2, shape[0], 8, *shape[1:])
    model = export_load(net, tmp_path, input_shape=shape)
    live, folded = live_ops(str(tmp_path / "model.safetensors"), 2, shape)
    assert len(live) == n_ops, live
    assert model.plan_info(2, shape)["num_ops"] == n_ops + folded  # folded ops stay listed
    check_modes(model, x, torch_forward(net, x))
    return live


@pytest.mark.parametrize("name,make,shape,n_ops", CASES, ids=[c[0] for c in CASES])
def test_fold_matches_torch(tmp_path, name, make, shape, n_ops):
    check_fold(tmp_path, make, shape, n_ops, 3)


def test_fold_is_bit_stable_across_streams_and_batches(tmp_path):
    """The folded model gives each batch item what a batch-1 stream gives it (no state leaks
    between the folded ops' items) and the same bits on every load."""
    seed(4)
    net = randomise_norms(co.Sequential(co.Conv3d(4, 6, 3, padding=1, groups=2), nn.BatchNorm3d(6), nn.ReLU(),
                                        co.Conv3d(6, 6, 3, padding=1, groups=6), nn.BatchNorm3d(6), nn.SiLU())).eval()
    x = torch.randn(3, 4, 6, 7, 7).numpy()
    a = export_load(net, tmp_path, input_shape=(4, 7, 7), name="a.safetensors")
    b = export_load(net, tmp_path, input_shape=(4, 7, 7), name="b.safetensors")
    ya, yb = a.stream(3).forward_steps(x, pad_end=True), b.stream(3).forward_steps(x, pad_end=True)
    assert np.array_equal(ya, yb)
    for i in range(3):
        yi = a.stream(1).forward_steps(np.ascontiguousarray(x[i:i + 1]), pad_end=True)
        np.testing.assert_allclose(yi[0], ya[i], rtol=0, atol=1e-6)


def test_fold_with_replicate_temporal_fill(tmp_path):
    """temporal_fill="replicate" (start padding made of copies of the first frame, which torch's
    forward does not have): the folded conv+BN+ReLU steps are the conv's own steps, normalised and
    rectified afterwards."""
    seed(5)
    conv = co.Conv3d(3, 5, 3, padding=1, temporal_fill="replicate")
    bn = nn.BatchNorm3d(5)
    net = randomise_norms(co.Sequential(conv, bn, nn.ReLU())).eval()
    x = torch.randn(2, 3, 7, 6, 6).numpy()
    fused = export_load(net, tmp_path, input_shape=(3, 6, 6), name="fused.safetensors")
    alone = export_load(co.Sequential(conv).eval(), tmp_path, input_shape=(3, 6, 6), name="alone.safetensors")
    assert live_ops(str(tmp_path / "fused.safetensors"), 2, (3, 6, 6)) == (["conv"], 2)
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    shift = bn.bias.detach().numpy() - bn.running_mean.numpy() * scale
    for pad_end in (False, True):
        y = alone.stream(2).forward_steps(x, pad_end=pad_end)
        want = np.maximum(y * scale[None, :, None, None, None] + shift[None, :, None, None, None], 0)
        got = fused.stream(2).forward_steps(x, pad_end=pad_end)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ---- Swish written as x * sigmoid(x) (a traced Graph, as the zoo's X3D writes it) ----------------
class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class SwishSigmoidReadTwice(nn.Module):
    """The sigmoid has a second reader: the product cannot replace it (nothing is folded)."""

    def forward(self, x):
        s = torch.sigmoid(x)
        return x * s + s


def swish():
    return co.forward_stepping(Swish())


# (name, network, frame shape, ops in the plan that run after folding)
SWISH_CASES = [
    ("conv3d_swish", lambda: co.Sequential(co.Conv3d(4, 6, 3, padding=1), swish()), (4, 7, 9), 1),
    ("conv3d_bn_swish", lambda: co.Sequential(co.Conv3d(4, 6, 3, padding=1, bias=False), nn.BatchNorm3d(6), swish()),
     (4, 5, 6), 1),
    ("depthwise_bn_swish", lambda: co.Sequential(co.Conv3d(6, 6, 3, padding=1, groups=6, bias=False),
                                                 nn.BatchNorm3d(6), swish()), (6, 6, 7), 1),
    ("bn_swish", lambda: co.Sequential(nn.BatchNorm2d(3), swish()), (3, 5), 1),
    # residual sum then Swish: the reduction takes it (conv + BN, delay, sum)
    ("residual_swish", lambda: co.Sequential(
        co.Residual(co.Sequential(co.Conv3d(4, 4, 3, padding=1), nn.BatchNorm3d(4))), swish()), (4, 5, 5), 3),
    # the sigmoid has another reader: the graph stays (conv, graph)
    ("sigmoid_second_reader", lambda: co.Sequential(co.Conv3d(4, 6, 3, padding=1),
                                                    co.forward_stepping(SwishSigmoidReadTwice())), (4, 5, 5), 2),
    # the conv's output has another reader: the Swish stays a graph (conv, graph, sum)
    ("swish_second_reader", lambda: co.Sequential(
        co.Conv3d(4, 6, 3, padding=1), co.BroadcastReduce(co.Sequential(swish()), co.Identity(), reduce="sum")),
     (4, 5, 5), 3),
]


@pytest.mark.parametrize("name,make,shape,n_ops", SWISH_CASES, ids=[c[0] for c in SWISH_CASES])
def test_swish_graph_fold_matches_torch(tmp_path, name, make, shape, n_ops):
    live = check_fold(tmp_path, make, shape, n_ops, 6)
    assert ("graph" in live) == name.endswith("second_reader"), live


def test_swish_fold_is_sigmoid_then_multiply_bit_for_bit(tmp_path):
    """The folded Swish gives the bits of the library's sigmoid followed by one float32 product: the
    conv alone, then a Sigmoid model, then numpy's product (IEEE single rounding) — in steps, in
    forward_steps and in forward, at batch 1 and 3."""
    seed(7)
    conv = co.Conv3d(4, 6, 3, padding=1)
    fused = export_load(co.Sequential(conv, swish()).eval(), tmp_path, input_shape=(4, 6, 6), name="fused.st")
    assert live_ops(str(tmp_path / "fused.st"), 1, (4, 6, 6)) == (["conv"], 1)
    alone = export_load(co.Sequential(conv).eval(), tmp_path, input_shape=(4, 6, 6), name="conv.st")
    sig = export_load(co.Sequential(nn.Sigmoid()), tmp_path, input_shape=(6, 6, 6), name="sig.st")
    for B in (1, 3):
        x = (torch.randn(B, 4, 7, 6, 6) * 4).numpy()
        y = alone.stream(B).forward_steps(x, pad_end=True)
        want = y * sig.forward(y)
        assert np.array_equal(fused.stream(B).forward_steps(x, pad_end=True), want)
        assert np.array_equal(fused.forward(x), alone.forward(x) * sig.forward(alone.forward(x)))
        s_f, s_a = fused.stream(B), alone.stream(B)
        for t in range(x.shape[2]):
            yf, ya = s_f.forward_step(np.ascontiguousarray(x[:, :, t])), s_a.forward_step(np.ascontiguousarray(x[:, :, t]))
            assert (yf is None) == (ya is None)
            if ya is not None:
                assert np.array_equal(yf, ya * sig.forward(ya[:, :, None])[:, :, 0])
