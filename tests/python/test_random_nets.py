"""Differential test over random networks (issue "Reliability", B1 and Q27 in general).

Each seed builds a random co network of convolutions (any padding >= 0, including padding >= kernel),
strides, pools, delays, residuals and nested Sequentials over (B, C, T) clips, exports it, and checks
three properties of continual-c on a random clip:

  1. forward == the network's torch forward (the reference's forward is torch.nn's computation);
  2. forward_steps(pad_end=True) from a clean state is forward[:, :, lost:], where `lost` (computed
     here over the module tree, expected_lost) counts the leading outputs no step can deliver
     (docs/decisions.md Q27/B1: windows made only of start padding, and downstream windows that
     would need those);
  3. stepping frame by frame equals forward_steps without pad_end.

The count of networks checked is printed (pytest -s) and asserted, so a generator that silently
builds nothing fails.
"""
import random

import numpy as np
import pytest
import torch
from torch import nn

import continual_c
from helpers import assert_close, export_load, frames

co = pytest.importorskip("continual")

N_NETS = 120


def _conv(rng, c_in, c_out):
    k = rng.choice([1, 1, 2, 3, 3, 4])
    pad = rng.choice([0, 0, 1, k // 2, k - 1, k, k + 1])
    stride = rng.choice([1, 1, 1, 2])
    return co.Conv1d(c_in, c_out, k, padding=pad, stride=stride)


def _pool(rng):
    k = rng.choice([2, 3])
    pad = rng.choice([0, k // 2])
    stride = rng.choice([1, 2])
    if rng.random() < 0.5:
        return co.AvgPool1d(k, stride=stride, padding=pad)
    return co.MaxPool1d(k, stride=stride, padding=pad)


def _block(rng, c, depth):
    r = rng.random()
    if r < 0.45:
        return _conv(rng, c, c)
    if r < 0.6:
        return _pool(rng)
    if r < 0.7:
        return co.Delay(rng.choice([1, 2]))
    if r < 0.8:
        return rng.choice([nn.Tanh(), nn.ReLU(), nn.Sigmoid()])
    if r < 0.92 and depth < 2:  # a residual around a stride-1 branch (the reference requires equal shapes)
        k = rng.choice([1, 3, 5])
        branch = co.Sequential(co.Conv1d(c, c, k, padding=rng.choice([0, k // 2])), nn.Tanh())
        return co.Residual(branch, residual_shrink=True)
    if depth < 2:
        return co.Sequential(*[_block(rng, c, depth + 1) for _ in range(rng.randint(1, 3))])
    return co.Identity()


def random_net(seed):
    rng = random.Random(seed)
    c_in, c = rng.choice([1, 3]), rng.choice([2, 4])
    layers = [_conv(rng, c_in, c), nn.Tanh()]
    layers += [_block(rng, c, 0) for _ in range(rng.randint(1, 4))]
    return co.Sequential(*layers).eval(), c_in


def _first_window(lost_in, stride, padding, span):
    """The first window of a conv/pool a step can emit (docs/decisions.md Q27 and B1): with a complete
    input stream, the first that ends at or after frame 0; when the input stream lacks its first
    lost_in frames, the first that starts at or after frame lost_in."""
    if lost_in == 0:
        need = padding - (span - 1)
        return 0 if need <= 0 else -(-need // stride)
    return -(-(lost_in + padding) // stride)


def expected_lost(m, lost=0):
    """Leading forward outputs that steps cannot deliver, computed over the module tree."""
    if isinstance(m, (co.Conv1d, co.AvgPool1d, co.MaxPool1d)):
        k, s, p = (int(v[0]) if isinstance(v, tuple) else int(v) for v in (m.kernel_size, m.stride, m.padding))
        return _first_window(lost, s, p, k)
    if isinstance(m, co.BroadcastReduce):  # branches run in step; the reduction starts at the latest
        return max(expected_lost(c, lost) for c in m)
    if isinstance(m, co.Sequential):
        for c in m:
            lost = expected_lost(c, lost)
        return lost
    return lost  # frame-local modules and delays keep the count


def clip_length(m, T):
    """Frames of the module's forward output for a clip of T frames; None if the clip is too short.
    (Computed rather than tried: torch's refusal is a C++ exception, which the ASan job, with the
    sanitizer runtime preloaded into python, cannot unwind.)"""
    if T is None:
        return None
    if isinstance(m, (co.Conv1d, co.AvgPool1d, co.MaxPool1d)):
        k, s, p = (int(v[0]) if isinstance(v, tuple) else int(v) for v in (m.kernel_size, m.stride, m.padding))
        return (T + 2 * p - k) // s + 1 if T + 2 * p >= k else None
    if isinstance(m, co.BroadcastReduce):  # the residuals here shrink to the shorter branch
        lens = [clip_length(c, T) for c in m]
        return None if None in lens else min(lens)
    if isinstance(m, co.Sequential):
        for c in m:
            T = clip_length(c, T)
        return T if T else None
    return T


def _randomise(net, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.7)


def _check_one(seed, tmp_path):
    net, c_in = random_net(seed)
    _randomise(net, seed)
    B, T = 2, 14
    x = torch.randn(B, c_in, T, generator=torch.Generator().manual_seed(1000 + seed))
    if not clip_length(net, T):  # the clip is too short for this network
        return "skipped"
    with torch.no_grad():
        ref = net(x)
    assert ref.shape[2] == clip_length(net, T)
    model = export_load(net, tmp_path, input_shape=(c_in,), name="net%d.safetensors" % seed)
    what = "seed %d: %s" % (seed, net)
    # 1. forward
    assert_close(model.forward(x), ref, 1e-5, what + " forward")
    # 2. forward_steps with pad_end: a suffix of forward
    s = model.stream(B, (c_in,))
    got = s.forward_steps(x, pad_end=True)
    lost = min(expected_lost(net), ref.shape[2])
    n = 0 if got is None else got.shape[2]
    assert n == ref.shape[2] - lost, "%s: %d step outputs, forward has %d of which %d cannot be stepped" % (
        what, n, ref.shape[2], lost)
    if n:
        assert_close(got, ref[:, :, lost:], 1e-5, what + " forward_steps(pad_end) vs forward[lost:]")
    # 3. step by step == forward_steps without pad_end
    s.clean_state()
    outs = [s.forward_step(f) for f in frames(x.numpy())]
    outs = [o for o in outs if o is not None]
    s.clean_state()
    steps = s.forward_steps(x, pad_end=False)
    if not outs:
        assert steps is None, what + ": forward_steps gave outputs where steps gave none"
    else:
        assert_close(np.stack(outs, axis=2), steps, 1e-6, what + " steps vs forward_steps")
    return "checked"


def test_random_networks(tmp_path):
    counts = {"checked": 0, "skipped": 0}
    for seed in range(N_NETS):
        counts[_check_one(seed, tmp_path)] += 1
    print("random networks: %(checked)d checked, %(skipped)d skipped (clip too short)" % counts)
    assert counts["checked"] >= N_NETS * 2 // 3, counts


def test_b1_padding_past_the_kernel_then_stride(tmp_path):
    """B1: after a conv whose padding >= its kernel, a strided conv was misaligned (step outputs matched
    no alignment of torch's). Now its phase follows the leading output the first conv cannot emit:
    forward_steps(pad_end) == forward[:, :, 1:], as the reference's forward_steps."""
    torch.manual_seed(11)
    net = co.Sequential(co.Conv1d(3, 5, 3, padding=3), nn.Tanh(), co.Conv1d(5, 2, 2, stride=2)).eval()
    x = torch.randn(1, 3, 10)
    with torch.no_grad():
        ref = net(x)
        net.clean_state()
        theirs = net.forward_steps(x, pad_end=True)
    assert expected_lost(net) == 1
    model = export_load(net, tmp_path, input_shape=(3,))
    got = model.stream(1, (3,)).forward_steps(x, pad_end=True)
    assert_close(got, ref[:, :, 1:], 1e-5, "B1 steps")
    assert_close(got, theirs, 1e-5, "the reference's forward_steps")


def test_recurrence_after_lost_outputs_is_refused(tmp_path):
    """An LSTM after a conv whose first output is made of padding only: torch's forward feeds the LSTM
    that output, no step has it, so the load refuses the network instead of computing other numbers."""
    net = co.Sequential(co.Conv1d(2, 3, 1, padding=1), co.LSTM(3, 4)).eval()
    with pytest.raises(continual_c.Error) as e:
        export_load(net, tmp_path, input_shape=(2,))
    assert e.value.status_name == "CO_ERR_UNSUPPORTED" and "padding" in e.value.message
