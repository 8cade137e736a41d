"""Convolutions (torch.nn oracle): all three modes, state handling, against torch.nn forward."""
import numpy as np
import pytest
import torch
from torch import nn

from helpers import assert_close, check_modes, export_load, seed, temporal_props, torch_forward

CONV1D = [
    dict(k=3, p=1), dict(k=3, p=0), dict(k=5, p=2), dict(k=3, p=1, s=2), dict(k=3, p=0, s=2), dict(k=4, p=0, s=3),
    dict(k=2, p=1, s=2), dict(k=3, p=2), dict(k=1, p=0), dict(k=1, p=0, s=2), dict(k=2, p=1),
    dict(k=3, p=1, groups=2), dict(k=3, p=1, bias=False), dict(k=3, p=1, mode="replicate"),
    dict(k=4, p=2, s=2, mode="replicate"),
]


def _id(c):
    return "-".join("%s%s" % kv for kv in c.items())


@pytest.mark.parametrize("cfg", CONV1D, ids=[_id(c) for c in CONV1D])
def test_conv1d(tmp_path, cfg):
    seed(1)
    conv = nn.Conv1d(4, 6, cfg["k"], stride=cfg.get("s", 1), padding=cfg["p"], groups=cfg.get("groups", 1),
                     bias=cfg.get("bias", True), padding_mode=cfg.get("mode", "zeros"))
    x = torch.randn(2, 4, 11)
    model = export_load(conv, tmp_path, input_shape=(4,))
    rf, s, p, d = temporal_props(conv)
    assert (model.receptive_field, model.stride, model.padding, model.delay) == (rf, s, p, d)
    check_modes(model, x, torch_forward(conv, x))


CONV2D = [
    dict(k=(3, 3), p=(1, 1)),
    dict(k=(3, 3), p=(1, 0), s=(1, 2)),
    dict(k=(2, 3), p=(0, 2), dil=(1, 2), groups=2),
    dict(k=(3, 1), p=(2, 0), s=(2, 1), bias=False),
    dict(k=(3, 3), p=(1, 1), mode="replicate"),
    dict(k=(1, 3), p=(0, 1), s=(2, 2)),
]


@pytest.mark.parametrize("cfg", CONV2D, ids=[_id(c) for c in CONV2D])
def test_conv2d(tmp_path, cfg):
    seed(2)
    conv = nn.Conv2d(4, 4, cfg["k"], stride=cfg.get("s", 1), padding=cfg["p"], dilation=cfg.get("dil", 1),
                     groups=cfg.get("groups", 1), bias=cfg.get("bias", True), padding_mode=cfg.get("mode", "zeros"))
    x = torch.randn(3, 4, 9, 7)
    model = export_load(conv, tmp_path, input_shape=(4, 7))
    check_modes(model, x, torch_forward(conv, x))


CONV3D = [
    dict(k=(3, 3, 3), p=(1, 1, 1)),
    dict(k=(3, 2, 3), p=(0, 1, 0), s=(1, 2, 1)),
    dict(k=(2, 3, 3), p=(1, 1, 1), s=(2, 1, 2), dil=(1, 2, 1), groups=2, mode="replicate"),
    dict(k=(3, 3, 3), p=(2, 0, 1), bias=False),
    dict(k=(5, 1, 1), p=(2, 0, 0), s=(2, 1, 1)),
    dict(k=(1, 3, 3), p=(0, 1, 1), s=(2, 1, 1)),  # k_t = 1 with temporal stride (reference quirk Q1)
]


@pytest.mark.parametrize("cfg", CONV3D, ids=[_id(c) for c in CONV3D])
def test_conv3d(tmp_path, cfg):
    seed(3)
    conv = nn.Conv3d(2, 4, cfg["k"], stride=cfg.get("s", 1), padding=cfg["p"], dilation=cfg.get("dil", 1),
                     groups=cfg.get("groups", 1), bias=cfg.get("bias", True), padding_mode=cfg.get("mode", "zeros"))
    x = torch.randn(2, 2, 8, 5, 7)
    model = export_load(conv, tmp_path, input_shape=(2, 5, 7))
    check_modes(model, x, torch_forward(conv, x))


def test_conv3d_batch1_and_larger_values(tmp_path):
    seed(4)
    conv = nn.Conv3d(3, 5, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(10)
    x = torch.randn(1, 3, 6, 4, 4) * 20
    model = export_load(conv, tmp_path, input_shape=(3, 4, 4))
    check_modes(model, x, torch_forward(conv, x))


def test_conv_chain_properties_and_modes(tmp_path):
    """The rows of semantics.md §2.2 built from torch.nn convs."""
    seed(5)
    rows = [
        ([(3, 0, 1), (3, 0, 2), (3, 0, 3), (3, 0, 1)], (21, 6, 0, 20)),
        ([(3, 1, 1), (3, 1, 2), (3, 1, 3), (3, 1, 1)], (21, 6, 10, 10)),
        ([(3, 2, 2), (3, 0, 1)], (7, 2, 2, 4)),
        ([(3, 1, 2), (3, 1, 2)], (7, 4, 3, 3)),
        ([(3, 0, 2), (3, 0, 2)], (7, 4, 0, 6)),
        ([(5, 2, 1), (3, 0, 3)], (7, 3, 2, 4)),
    ]
    for i, (layers, props) in enumerate(rows):
        net = nn.Sequential(*[nn.Conv1d(2, 2, k, stride=s, padding=p) for k, p, s in layers])
        model = export_load(net, tmp_path, input_shape=(2,), name="chain%d" % i)
        assert temporal_props(net) == props
        assert (model.receptive_field, model.stride, model.padding, model.delay) == props, layers
        x = torch.randn(2, 2, 30)
        check_modes(model, x, torch_forward(net, x), peek=False, two_streams=False)


def test_continuation_after_pad_end(tmp_path):
    """End padding is discarded: after forward_steps(pad_end=True) the stream goes on as if no padding
    happened (the next frame gives what stepping the longer clip gives)."""
    seed(6)
    conv = nn.Conv1d(3, 3, 3, padding=1)
    model = export_load(conv, tmp_path, input_shape=(3,))
    x = torch.randn(1, 3, 8).numpy()
    s = model.stream()
    s.forward_steps(x[:, :, :7], pad_end=True)
    y = s.forward_step(x[:, :, 7])
    ref = torch_forward(conv, torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, ref[:, :, 6], atol=1e-5)


@pytest.mark.parametrize("T", [1, 2, 3])
def test_short_clips(tmp_path, T):
    """Clips shorter than the receptive field: forward is torch's, steps emit nothing or little, pad_end
    completes the forward."""
    seed(7)
    net = nn.Sequential(nn.Conv1d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv1d(3, 2, 3, padding=1))
    x = torch.randn(2, 2, T)
    model = export_load(net, tmp_path, input_shape=(2,))
    check_modes(model, x, torch_forward(net, x))


def test_long_stream_chunks(tmp_path):
    """A long stream fed in uneven chunks of forward_steps and single steps equals torch's forward."""
    seed(8)
    net = nn.Sequential(nn.Conv2d(2, 3, (3, 3), padding=(1, 1)), nn.Tanh(), nn.Conv2d(3, 3, (4, 1), stride=(2, 1)),
                        nn.Conv2d(3, 2, (5, 1), padding=(2, 0)))
    x = torch.randn(1, 2, 61, 4)
    ref = torch_forward(net, x).numpy()
    model = export_load(net, tmp_path, input_shape=(2, 4))
    s = model.stream()
    outs, t = [], 0
    for i, c in enumerate([1, 5, 2, 13, 1, 1, 7, 31]):
        chunk = x[:, :, t:t + c]
        t += c
        if c == 1 and i % 2:
            y = s.forward_step(chunk[:, :, 0])
            if y is not None:
                outs.append(y[:, :, None])
        else:
            y = s.forward_steps(chunk, pad_end=(t == x.shape[2]))
            if y is not None:
                outs.append(y)
    assert t == x.shape[2]
    np.testing.assert_allclose(np.concatenate(outs, axis=2), ref, atol=1e-5 * max(1, np.abs(ref).max()), rtol=0)


def test_conv1d_one_frame_clip_with_padding(tmp_path):
    """Found by tests/fuzz/fuzz_nets: a one-frame clip (T = 1) of a Conv1d took the feature-vector
    product of steps, whose output rows are contiguous, and wrote the clip's outputs (channels
    T_out apart) on top of each other."""
    seed(31)
    conv = nn.Conv1d(2, 3, 3, padding=4)
    x = torch.randn(2, 2, 1)
    model = export_load(conv, tmp_path, input_shape=(2,))
    with torch.no_grad():
        assert_close(model.forward(x.numpy()), conv(x), 1e-5, "forward of a one-frame clip")
