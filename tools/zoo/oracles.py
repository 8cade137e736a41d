"""Oracles: what the continual-c stream must emit at each step n (1-based) of a clip.

  steps     the reference's own forward_step outputs (CoX3D, CoOadTR-b1: the reference is right
            there; CoX3D's frame-wise SE makes its clip forward a different function, so steps
            are the oracle, not forward)
  forward   the reference's forward on the whole clip, output j expected at step
            delay + 1 + j * stride (CoST-GCN, CoA-GCN, CoS-TR: the reference's *steps* are
            wrong there: its kernel-1 strided residual convs never decimate, semantics.md Q1;
            CoSlow, CoI3D: the reference's step of co.Linear(2048, 400, channel_dim=-4) counts
            -4 against the 4-d step tensor (N, C, 1, 1), i.e. the batch dim, and fails; its
            forward counts it against the clip, the channel dim, which is what continual-c does).
            CoA-GCN's adaptive graph is built over all frames it is given; a step sees one frame,
            so its clip oracle builds the graph per frame (skeleton.frame_wise_adaptive_graphs).
  windowed  plain torch.nn over the last n frames (CoOadTR-b2: the reference's retroactive
            residual ring is wrong from step 2n-1 on, Q2)

Each oracle returns {n: numpy array (N, ...)} for the steps that emit, and the steps that do
not emit are absent.
"""
import numpy as np
import torch

from . import cooadtr, skeleton


def reference_steps(net, x):
    out = {}
    net.clean_state()
    with torch.no_grad():
        for t in range(x.shape[2]):
            y = net.forward_step(x[:, :, t])
            if isinstance(y, torch.Tensor):
                out[t + 1] = y.numpy().copy()
    net.clean_state()
    return out


def reference_forward(net, x, frame_wise_agcn=False):
    with torch.no_grad():
        if frame_wise_agcn:
            with skeleton.frame_wise_adaptive_graphs(net):
                y = net.forward(x)
        else:
            y = net.forward(x)
    if y.dim() == 2:
        y = y.unsqueeze(-1)
    delay = int(net.delay)
    stride = int(net.stride[0]) if isinstance(net.stride, (tuple, list)) else int(net.stride)
    out = {}
    for j in range(y.shape[2]):
        n = delay + 1 + j * stride
        if n <= x.shape[2]:
            out[n] = y[:, :, j].numpy().copy()
    return out


def windowed(net, x, blocks):
    reg = cooadtr.RegularOadTR(net, blocks).eval()
    n = net.encoder[0][0][1].sequence_len if blocks == 2 else net.encoder[0][1].sequence_len
    M = reg.pe.shape[0]
    seq = x[0].transpose(0, 1)  # (T, D)
    out = {}
    with torch.no_grad():
        for t in range(n, x.shape[2] + 1):
            clip = x[:, :, t - n:t].transpose(1, 2)  # (N, n, D)
            out[t] = reg(clip, offset=(t - n) % M).numpy()
    return out


def oracle(spec, net, x):
    if spec.oracle == "steps":
        return reference_steps(net, x)
    if spec.oracle == "forward":
        return reference_forward(net, x, frame_wise_agcn=(spec.name == "coa_gcn"))
    if spec.oracle == "windowed":
        return windowed(net, x, spec.blocks)
    raise ValueError(spec.oracle)


def compare(outs, expected):
    """outs: {n: array or None} from the stream. Returns (max relative-scaled abs diff, report).
    Every step must agree on emitting; values compared where the oracle has one."""
    bad = []
    worst, scale = 0.0, 1.0
    for n, y in outs.items():
        e = expected.get(n)
        if e is None:
            continue
        if y is None:
            bad.append("step %d: no output, oracle has one" % n)
            continue
        y = np.asarray(y).reshape(e.shape)
        scale = max(scale, float(np.abs(e).max()))
        worst = max(worst, float(np.abs(y - e).max()))
    return worst, scale, bad
