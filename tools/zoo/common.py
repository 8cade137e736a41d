"""Pieces shared by the zoo families: the Swish activation, weight randomisation for tests,
the NTU skeleton graph, and the analytic multiply-accumulate counter."""
import math

import numpy as np
import torch
from torch import nn


class Swish(nn.Module):
    """x * sigmoid(x), as X3D writes its inner activation (a module of its own, not nn.SiLU)."""

    def forward(self, x):
        return x * torch.sigmoid(x)


def randomize(net, seed=0):
    """Random weights everywhere and non-trivial BN statistics (X3D/ResNet zero-initialise the
    last BN of each block, which would make residual branches vanish)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                if m.weight is not None:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            elif hasattr(m, "zoo_randomize"):  # learned graph masks etc.
                m.zoo_randomize(g)
            if isinstance(m, nn.LayerNorm) and m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return net


# ---------------------------------------------------------------------------------------------
# NTU RGB+D: 25 joints; bones as (joint, parent), 1-based, as in the dataset's description.
NTU_BONES = [
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
    (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
    (20, 19), (22, 23), (23, 8), (24, 25), (25, 12),
]
NUM_JOINTS = 25


def ntu_graph():
    """The spatial partitioning of ST-GCN: (3, V, V) = identity, normalised inward and outward
    adjacency (each column divided by its in-degree)."""
    V = NUM_JOINTS

    def to_matrix(pairs):
        a = np.zeros((V, V))
        for i, j in pairs:
            a[j, i] = 1.0
        return a

    def normalise(a):
        deg = a.sum(0)
        scale = np.where(deg > 0, 1.0 / np.maximum(deg, 1e-12), 0.0)
        return a * scale[None, :]

    inward = [(i - 1, j - 1) for i, j in NTU_BONES]
    outward = [(j, i) for i, j in inward]
    identity = [(i, i) for i in range(V)]
    return np.stack([to_matrix(identity), normalise(to_matrix(inward)), normalise(to_matrix(outward))])


# ---------------------------------------------------------------------------------------------
# Analytic MACs per step: the multiply-accumulates of conv, linear and the matrix products of
# the custom layers (norms, activations, pooling, softmax and additions are not counted; the
# papers' FLOPs count the same layers, give or take those elementwise terms). A step's cost is
# taken as the steady-state cost per input frame: count the MACs of `forward` on clips of T and
# T + P frames (P = the network's temporal stride) and divide the difference by P. For a
# strided network this is the average over a stride period of P steps (some steps run only the
# layers before the stride); for stride 1 it is exactly one step. With emitting=True each layer
# counts once (its cost per output frame): the cost of a step on which every layer runs, which is
# what the papers' "FLOPs per step" of the strided models (CoI3D, CoST-GCN, CoA-GCN, CoS-TR) are.
# Each layer is counted as the window computation does (one output frame = the whole temporal
# kernel), which is also what a continual step computes per new frame.

def clip_macs(net, clip, per_layer=False):
    """MACs of net(clip) (whole batch): conv/linear leaves by shape, modules defining
    `zoo_macs(inp, out)` by their own formula (their children are not counted again).
    per_layer=True: {module id: (MACs, output frames)} instead of the total."""
    try:
        from continual.conv import _ConvCoNd as co_conv
    except ImportError:  # pragma: no cover
        co_conv = None
    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d) + ((co_conv,) if co_conv else ())
    inside = set()
    for m in net.modules():
        if hasattr(m, "zoo_macs"):
            inside.update(id(c) for c in m.modules() if c is not m)
    rows = {}

    def hook(mod, inp, out):
        if id(mod) in inside or not isinstance(out, torch.Tensor):
            return
        if hasattr(mod, "zoo_macs"):
            macs = int(mod.zoo_macs(inp[0], out))
        elif isinstance(mod, convs):
            macs = out.numel() * (mod.in_channels // mod.groups) * int(np.prod(mod.kernel_size))
        elif isinstance(mod, nn.Linear):
            macs = out.numel() * mod.in_features
        else:
            return
        t_out = out.shape[2] if out.dim() >= 3 else 1
        m0, t0 = rows.get(id(mod), (0, 0))
        rows[id(mod)] = (m0 + macs, t0 + t_out)

    hooks = [m.register_forward_hook(hook) for m in net.modules()
             if hasattr(m, "zoo_macs") or isinstance(m, convs + (nn.Linear,))]
    try:
        with torch.no_grad():
            net.eval()
            net(clip)
    finally:
        for h in hooks:
            h.remove()
    return rows if per_layer else sum(m for m, _ in rows.values())


def macs_per_step(net, frame_shape, T, period=1, emitting=False):
    """Steady-state MACs per input frame (averaged over `period` frames), batch 1.
    emitting=True: the MACs of a step on which every layer runs once (one output frame of each
    layer), i.e. each layer's cost per output frame, not divided by its cumulative stride."""
    a = clip_macs(net, torch.randn(1, frame_shape[0], T, *frame_shape[1:]), per_layer=True)
    b = clip_macs(net, torch.randn(1, frame_shape[0], T + period, *frame_shape[1:]), per_layer=True)
    total = 0.0
    for k, (mb, tb) in b.items():
        ma, ta = a.get(k, (0, 0))
        if emitting:
            total += (mb - ma) / max(1, tb - ta) if tb > ta else 0.0
        else:
            total += (mb - ma) / period
    return total
