"""Winograd F(4x4, 3x3) convolutions (conv.c, kernels/winograd.*): dense Conv3d with a 3x3 spatial
kernel at spatial stride 1, groups 1, zero padding and at least 16 input and output channels take
that path in step, forward_steps and forward. Against torch.nn: tile tails (odd frame sizes,
frames smaller than a tile), spatial padding 0/1/2, temporal kernels 1/2/3, temporal stride and
padding, replicate temporal fill, batch 1/3/8, several streams at different positions in one
call, save/restore mid-stream, and shapes just outside the path (still correct). The errors vs
torch are printed with -s."""
import numpy as np
import pytest
import torch
from torch import nn

import continual_c
from helpers import assert_close, check_modes, export_load, frames, seed, to_np, torch_forward


def _id(c):
    return "-".join("%s%s" % kv for kv in c.items())


def _report(what, got, ref):
    got, ref = to_np(got), to_np(ref)
    err = float(np.abs(got - ref).max())
    print("%s: max abs error %.3g, max |ref| %.3g, relative %.3g" % (what, err, float(np.abs(ref).max()),
                                                                    err / max(1e-30, float(np.abs(ref).max()))))


WINO = [
    dict(hw=(7, 9), k=3, p=(1, 1, 1)),
    dict(hw=(13, 5), k=3, p=(0, 0, 0)),
    dict(hw=(1, 1), k=3, p=(1, 2, 2)),           # a 1x1 frame: 3x3 output from the padding only
    dict(hw=(16, 16), k=3, p=(1, 0, 0)),          # the bench row's shape (64 -> 64 there)
    dict(hw=(9, 10), k=2, p=(1, 1, 2)),
    dict(hw=(11, 8), k=1, p=(0, 1, 1)),           # kt 1: no ring (the stateless step)
    dict(hw=(10, 12), k=3, p=(2, 1, 1), s=2),     # temporal stride and padding
    dict(hw=(12, 12), k=3, p=(1, 1, 1), cin=40, cout=24, bias=False),
]


def _conv(cfg):
    cin, cout = cfg.get("cin", 16), cfg.get("cout", 32)
    return nn.Conv3d(cin, cout, (cfg["k"], 3, 3), stride=(cfg.get("s", 1), 1, 1), padding=cfg["p"],
                     bias=cfg.get("bias", True))


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("cfg", WINO, ids=[_id(c) for c in WINO])
def test_winograd_modes(tmp_path, cfg, batch):
    seed(21)
    conv = _conv(cfg)
    x = torch.randn(batch, conv.in_channels, 9, *cfg["hw"])
    model = export_load(conv, tmp_path, input_shape=(conv.in_channels,) + cfg["hw"])
    ref = torch_forward(conv, x)
    check_modes(model, x, ref)
    _report("forward", model.forward(to_np(x)), ref)


def test_winograd_replicate_fill(tmp_path):
    """temporal_fill replicate: the start windows hold virtual copies of the first frame."""
    co = pytest.importorskip("continual")
    from co_helpers import check_steps_against, co_steps
    seed(25)
    net = co.Conv3d(16, 24, 3, padding=(2, 1, 1), temporal_fill="replicate")
    x = torch.randn(3, 16, 8, 7, 9)
    path = str(tmp_path / "m.safetensors")
    continual_c.export(net.eval(), path, input_shape=(16, 7, 9))
    check_steps_against(continual_c.load(path), x, co_steps(net, x))


def test_winograd_batch8_and_long_clip(tmp_path):
    """Batch 8 (several chunks of tiles in a step) and a 64-channel clip of 32x32 frames (several
    chunks of positions in forward), the bench rows' sizes."""
    seed(22)
    conv = nn.Conv3d(64, 64, 3, padding=1)
    x = torch.randn(8, 64, 5, 16, 16)
    model = export_load(conv, tmp_path, input_shape=(64, 16, 16))
    ref = torch_forward(conv, x)
    check_modes(model, x, ref, peek=False, two_streams=False)
    _report("64->64 16x16 b8 forward", model.forward(to_np(x)), ref)
    x = torch.randn(1, 64, 12, 32, 32)
    got = model.forward(to_np(x))
    ref = torch_forward(conv, x)
    assert_close(got, ref, what="64->64 32x32 clip")
    _report("64->64 32x32 clip", got, ref)


def test_winograd_streams_at_different_positions(tmp_path):
    """co_forward_step_streams: streams that started at different times, with a save/restore in
    the middle, give what each stream gives stepped alone (to rounding) and what torch gives."""
    seed(23)
    conv = nn.Conv3d(16, 24, 3, padding=(1, 1, 1))
    B, fs, T = 2, (16, 9, 7), 10
    model = export_load(conv, tmp_path, input_shape=fs)
    xs = [to_np(torch.randn(B, 16, T, 9, 7)) for _ in range(3)]
    starts = [0, 2, 5]
    alone = []
    for x in xs:
        s = model.stream(B, fs)
        alone.append([s.forward_step(f) for f in frames(x)])
        s.close()
    ctx = model.multistream(3, batch_size=B)
    streams = [model.stream(B, fs) for _ in range(3)]
    got = [[] for _ in range(3)]
    for r in range(T + max(starts)):
        idx = [i for i in range(3) if starts[i] <= r < starts[i] + T]
        if r == 6:  # save stream 1 mid-stream and continue it in a fresh stream
            fresh = model.stream(B, fs)
            fresh.load_state(streams[1].save_state())
            streams[1] = fresh
        ys = ctx.forward_step([streams[i] for i in idx], [frames(xs[i])[r - starts[i]] for i in idx])
        for i, y in zip(idx, ys):
            got[i].append(y)
    for i in range(3):
        assert len(got[i]) == T
        for n, (a, b) in enumerate(zip(got[i], alone[i]), 1):
            assert (a is None) == (b is None), "stream %d step %d" % (i, n)
            if a is not None:
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * max(1.0, np.abs(b).max()))
        ref = to_np(torch_forward(conv, torch.as_tensor(xs[i])))
        emitted = [y for y in got[i] if y is not None]
        assert_close(np.stack(emitted, axis=2), ref[:, :, :len(emitted)], what="stream %d vs torch" % i)


def test_winograd_threads(tmp_path):
    """Threads split the Winograd chunks by a fixed partition: bit-identical to one thread."""
    seed(26)
    conv = nn.Conv3d(32, 32, 3, padding=1)
    model = export_load(conv, tmp_path, input_shape=(32, 13, 11))
    x = to_np(torch.randn(8, 32, 6, 13, 11))
    one = model.stream(8, (32, 13, 11)).forward_steps(x, pad_end=True)
    for n in (2, 3):
        got = model.stream(8, (32, 13, 11), threads=n).forward_steps(x, pad_end=True)
        np.testing.assert_array_equal(got, one)
    assert_close(one, torch_forward(conv, torch.as_tensor(x)), what="threads vs torch")


WINO_OUTSIDE = [
    dict(s=(1, 2, 2)), dict(dil=(1, 2, 2)), dict(groups=2), dict(mode="replicate"), dict(cin=8),
]


@pytest.mark.parametrize("cfg", WINO_OUTSIDE, ids=[_id(c) for c in WINO_OUTSIDE])
def test_just_outside_winograd(tmp_path, cfg):
    seed(24)
    cin = cfg.get("cin", 16)
    conv = nn.Conv3d(cin, 32, 3, stride=cfg.get("s", 1), padding=1, dilation=cfg.get("dil", 1),
                     groups=cfg.get("groups", 1), padding_mode=cfg.get("mode", "zeros"))
    x = torch.randn(2, cin, 7, 11, 9)
    model = export_load(conv, tmp_path, input_shape=(cin, 11, 9))
    check_modes(model, x, torch_forward(conv, x))


def test_direct_conv_flag(tmp_path):
    """load(winograd=False) (CO_LOAD_DIRECT_CONV) runs the same conv by the direct method: closer
    to a float64 convolution than the Winograd path (whose rounding grows with the input
    channels), in steps and forward; an unknown flag bit is refused at load."""
    seed(22)
    conv = nn.Conv3d(128, 64, (3, 3, 3), padding=(1, 1, 1))
    x = torch.randn(2, 128, 6, 12, 12)
    path = str(tmp_path / "conv.safetensors")
    continual_c.export(conv, path, input_shape=(128, 12, 12))
    with torch.no_grad():
        ref64 = nn.functional.conv3d(x.double(), conv.weight.double(), conv.bias.double(), padding=1).numpy()
    scale = float(np.abs(ref64).max())
    fast, direct = continual_c.load(path), continual_c.load(path, winograd=False)
    err_fast = float(np.abs(fast.forward(to_np(x)) - ref64).max()) / scale
    err_direct = float(np.abs(direct.forward(to_np(x)) - ref64).max()) / scale
    print("relative error vs float64: winograd %.3g, direct %.3g" % (err_fast, err_direct))
    assert err_fast < 3e-5
    assert err_direct < 2e-6
    assert err_direct < err_fast  # the flag did change the algorithm
    check_modes(direct, x, torch_forward(conv, x))
    with open(path, "rb") as f:
        mem = continual_c.load_memory(f.read(), winograd=False)
    np.testing.assert_array_equal(mem.forward(to_np(x)), direct.forward(to_np(x)))
    with pytest.raises(TypeError):
        continual_c.load(path, winograd="no")


def test_unknown_load_flag(tmp_path):
    import ctypes

    from continual_c import _binding

    path = str(tmp_path / "conv.safetensors")
    continual_c.export(nn.Conv3d(16, 16, 3), path, input_shape=(16, 8, 8))
    lib = _binding.library()
    opts = _binding._LoadOptions()
    opts.flags = 0x80
    h = ctypes.c_void_p()
    st = lib.co_model_load_ex(path.encode(), ctypes.byref(opts), ctypes.byref(h))
    assert st != 0 and not h.value
    assert b"unknown bits 0x80" in lib.co_last_error()
