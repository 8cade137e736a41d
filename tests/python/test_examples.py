"""The reference's composition examples (README, tests/continual/test_example.py), a CoX3D-style block stack
and a recurrent head over conv features: exported with random weights and matched in all three modes.

Where a network pools all T in forward but a window in steps (adaptive pooling in squeeze-and-excitation),
forward is compared with torch and every step with the reference's forward_step (which is also the torch
computation over the step's window: checked below for the SE block)."""
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from co_helpers import check_with_step_oracle, co_steps, co_steps_clip, randomise_norms, step_oracle_from
from helpers import assert_close, check_modes, export_load, seed, to_np

co = pytest.importorskip("continual")


def _fw(net, x):
    net.eval()
    with torch.no_grad():
        return net(x)


def _fs(x):
    return tuple(x.shape[1:2]) + tuple(x.shape[3:])


def test_paper_example(tmp_path):
    net = co.Sequential(
        co.Conv1d(in_channels=1, out_channels=1, kernel_size=3, stride=2, padding=2),
        co.Conv1d(in_channels=1, out_channels=1, kernel_size=3, stride=1, padding=0),
    )
    model = export_load(net, tmp_path, input_shape=(1,))
    assert (model.receptive_field, model.padding, model.delay, model.stride) == (7, 2, 4, 2)
    seed(500)
    x = torch.randn(2, 1, 13)
    check_modes(model, x, _fw(net, x))


def test_readme_example(tmp_path):
    """co.Conv3d as a drop-in for nn.Conv3d: forward exact; forward_steps on the first frames then one step."""
    seed(501)
    example = torch.randn((1, 1, 5, 3, 3))
    co_conv = co.Conv3d(in_channels=1, out_channels=1, kernel_size=(3, 3, 3))
    nn_conv = nn.Conv3d(in_channels=1, out_channels=1, kernel_size=(3, 3, 3))
    co_conv.load_state_dict(nn_conv.state_dict())
    model = export_load(co_conv, tmp_path, input_shape=(1, 3, 3))
    nn_output = _fw(nn_conv, example)
    s = model.stream(1, (1, 3, 3))
    firsts = s.forward_steps(to_np(example[:, :, :4]))
    last = s.forward_step(to_np(example[:, :, 4]))
    assert_close(firsts, nn_output[:, :, : co_conv.delay], 1e-6, "firsts")
    assert_close(last, nn_output[:, :, co_conv.delay], 1e-6, "last")
    assert (model.receptive_field, model.delay) == (3, 2)
    check_modes(model, example, nn_output)


def test_residual_three_ways(tmp_path):
    seed(502)
    x = torch.randn((1, 2, 5, 3, 3))
    conv = co.Conv3d(2, 2, kernel_size=3, padding=1)
    nets = [
        co.Sequential(co.Broadcast(2), co.Parallel(conv, co.Delay(1)), co.Reduce("sum")),
        co.BroadcastReduce(conv, co.Delay(1), reduce="sum"),
        co.Residual(conv, reduce="sum"),
    ]
    ref = _fw(nets[0], x)
    outs = []
    for i, net in enumerate(nets):
        model = export_load(net, tmp_path, input_shape=(2, 3, 3), name="r%d.safetensors" % i)
        outs.append(model.forward(x))
        check_modes(model, x, ref)
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=0, atol=1e-6)


def test_mobilenet_v2_inverted_residual(tmp_path):
    seed(503)
    example = torch.randn((1, 32, 7, 5, 5))
    mb_conv = co.Residual(
        co.Sequential(
            co.Conv3d(32, 64, kernel_size=(1, 1, 1)),
            nn.BatchNorm3d(64),
            nn.ReLU6(),
            co.Conv3d(64, 64, kernel_size=(3, 3, 3), padding=(1, 1, 1), groups=64),
            nn.ReLU6(),
            co.Conv3d(64, 32, kernel_size=(1, 1, 1)),
            nn.BatchNorm3d(32),
        )
    )
    randomise_norms(mb_conv)
    mb_conv.eval()
    model = export_load(mb_conv, tmp_path, input_shape=(32, 5, 5))
    assert (model.receptive_field, model.delay) == (3, 1)
    ref = _fw(mb_conv, example)
    check_modes(model, example, ref)
    # the reference test: forward_steps of the first 6 frames, then one step
    s = model.stream(1, (32, 5, 5))
    firsts = s.forward_steps(to_np(example[:, :, :6]))
    last = s.forward_step(to_np(example[:, :, 6]))
    assert_close(firsts, ref[:, :, : -mb_conv.padding[0] - mb_conv.delay], 1e-5, "firsts")
    assert_close(last, ref[:, :, -mb_conv.padding[0] - mb_conv.delay], 1e-5, "last")
    x2 = torch.randn((2, 32, 9, 5, 5))
    check_modes(model, x2, _fw(mb_conv, x2))


def _se(channels, reduced, k):
    return co.Residual(
        co.Sequential(OrderedDict([
            ("pool", co.AdaptiveAvgPool3d((1, 1, 1), kernel_size=k)),
            ("down", co.Conv3d(channels, reduced, kernel_size=1)),
            ("act1", nn.ReLU()),
            ("up", co.Conv3d(reduced, channels, kernel_size=1)),
            ("act2", nn.Sigmoid()),
        ])),
        reduce="mul",
    )


@pytest.mark.parametrize("t", [7, 11])
def test_squeeze_and_excitation(tmp_path, t):
    """The README's SE block (reduce="mul" of x with a gate over an adaptive pool of kernel_size 7).
    forward gates with the mean over all T (torch). Step n (n >= 7) emits x_{n-6} gated by the mean of frames
    n-6..n, i.e. the first frame of forward over that 7-frame window; forward_steps(pad_end=True) is the clip of
    those steps (the reference's layer-wise forward_steps(pad_end=True) broadcasts its single gate over the
    Delay's flushed frames when T == 7, which a stream cannot do)."""
    seed(504)
    example = torch.randn((1, 256, t, 5, 5))
    se = _se(256, 16, 7)
    se.eval()
    model = export_load(se, tmp_path, input_shape=(256, 5, 5))
    assert (model.receptive_field, model.delay) == (7, 6)
    ref = _fw(se, example)
    windows = [None] * 6 + [to_np(_fw(se, example[:, :, n - 7:n]))[:, :, 0] for n in range(7, t + 1)]
    theirs = co_steps(se, example)
    for n, (w, r) in enumerate(zip(windows, theirs), 1):
        assert (w is None) == (r is None)
        if w is not None:
            assert_close(r, w, 1e-5, "reference step %d is the window forward" % n)
    check_with_step_oracle(model, example, ref, step_oracle_from(windows), pad_end_ref=np.stack(windows[6:], axis=2))
    if t == 7:  # the reference test's comparison: one window, one output, forward's first frame
        with torch.no_grad():
            assert_close(se.forward_steps(example, pad_end=True), ref, 1e-5, "the reference's own check")
        assert_close(model.stream(1, (256, 5, 5)).forward_steps(to_np(example), pad_end=True), ref[:, :, :1], 1e-5,
                     "continual-c pad_end")


def _norm_relu(module, channels):
    return co.Sequential(module, nn.BatchNorm3d(channels), nn.ReLU())


def test_inception_module(tmp_path):
    seed(505)
    example = torch.randn((1, 192, 7, 5, 5))
    inception = co.BroadcastReduce(
        co.Conv3d(192, 64, kernel_size=1),
        co.Sequential(
            _norm_relu(co.Conv3d(192, 96, kernel_size=1), 96),
            _norm_relu(co.Conv3d(96, 128, kernel_size=3, padding=1), 128),
        ),
        co.Sequential(
            _norm_relu(co.Conv3d(192, 16, kernel_size=1), 16),
            _norm_relu(co.Conv3d(16, 32, kernel_size=5, padding=2), 32),
        ),
        co.Sequential(
            co.MaxPool3d(kernel_size=(1, 3, 3), padding=(0, 1, 1), stride=1),
            _norm_relu(co.Conv3d(192, 32, kernel_size=1), 32),
        ),
        reduce="concat",
    )
    randomise_norms(inception)
    inception.eval()
    model = export_load(inception, tmp_path, input_shape=(192, 5, 5))
    ref = _fw(inception, example)
    assert ref.shape == (1, 64 + 128 + 32 + 32, 7, 5, 5)
    assert (model.delay, model.padding) == (2, 2)
    check_modes(model, example, ref)
    with torch.no_grad():
        theirs = inception.forward_steps(example, pad_end=True)
    assert_close(model.stream(1, (192, 5, 5)).forward_steps(to_np(example), pad_end=True), theirs, 1e-5, "vs co")


def test_inception_module_alt(tmp_path):
    seed(506)
    example = torch.randn((1, 192, 7, 5, 5))
    inception = co.Sequential(
        co.Broadcast(4),
        co.Parallel(
            co.Conv3d(192, 64, kernel_size=1),
            co.Sequential(
                _norm_relu(co.Conv3d(192, 96, kernel_size=1), 96),
                _norm_relu(co.Conv3d(96, 128, kernel_size=3, padding=1), 128),
            ),
            co.Sequential(
                _norm_relu(co.Conv3d(192, 16, kernel_size=1), 16),
                _norm_relu(co.Conv3d(16, 32, kernel_size=3, padding=1), 32),
            ),
            co.Sequential(
                co.MaxPool3d(kernel_size=(1, 3, 3), padding=(0, 1, 1), stride=1),
                _norm_relu(co.Conv3d(192, 32, kernel_size=1), 32),
            ),
        ),
        co.Reduce("concat"),
    )
    randomise_norms(inception)
    inception.eval()
    model = export_load(inception, tmp_path, input_shape=(192, 5, 5))
    ref = _fw(inception, example)
    assert ref.shape == (1, 256, 7, 5, 5)
    check_modes(model, example, ref)


def test_conv_adaptive_pool_linear(tmp_path):
    """The reference's test_linear, smaller: Conv3d -> AdaptiveAvgPool3d(kernel_size) -> Linear(channel_dim=1)."""
    seed(507)
    x = torch.randn(1, 3, 8, 12, 12)
    net = co.Sequential(co.Conv3d(3, 32, 3), co.AdaptiveAvgPool3d((1, 1, 1), 6), co.Linear(32, 10, channel_dim=1))
    model = export_load(net, tmp_path, input_shape=(3, 12, 12))
    ref = _fw(net, x)
    assert ref.shape == (1, 10, 1, 1, 1)
    theirs = co_steps(net, x)
    check_with_step_oracle(model, x, ref, step_oracle_from(theirs), pad_end_ref=co_steps_clip(net, x, pad_end=True))
    assert_close(theirs[-1], ref[:, :, 0], 1e-5, "T - 2 == kernel_size: the last step is forward")


# ---- CoX3D-style stack ------------------------------------------------------------------------------------
def _x3d_block(cin, cout, inner, s, se_k):
    main = co.Sequential(OrderedDict([
        ("a", co.Conv3d(cin, inner, 1)), ("a_bn", nn.BatchNorm3d(inner)), ("a_relu", nn.ReLU()),
        ("b", co.Conv3d(inner, inner, 3, stride=(1, s, s), padding=1, groups=inner)), ("b_bn", nn.BatchNorm3d(inner)),
        ("se", _se(inner, max(2, inner // 4), se_k)),
        ("swish", nn.SiLU()),
        ("c", co.Conv3d(inner, cout, 1)), ("c_bn", nn.BatchNorm3d(cout)),
    ]))
    if cin == cout and s == 1:
        block = co.Residual(main)
    else:  # projection shortcut; auto-delay aligns it with the main branch
        block = co.BroadcastReduce(co.Sequential(co.Conv3d(cin, cout, 1, stride=(1, s, s)), nn.BatchNorm3d(cout)), main)
    return co.Sequential(block, nn.ReLU())


def _x3d_stack():
    return co.Sequential(OrderedDict([
        ("stem", co.Sequential(co.Conv3d(3, 8, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
                               co.Conv3d(8, 8, (3, 1, 1), padding=(1, 0, 0), groups=8), nn.BatchNorm3d(8), nn.ReLU())),
        ("block1", _x3d_block(8, 8, 16, 1, 3)),
        ("block2", _x3d_block(8, 12, 24, 2, 3)),
        ("block3", _x3d_block(12, 12, 24, 1, 2)),
        ("head", co.Sequential(co.Conv3d(12, 16, 1), nn.BatchNorm3d(16), nn.ReLU(),
                               co.AdaptiveAvgPool3d((1, 1, 1), kernel_size=4), co.Linear(16, 5, channel_dim=1))),
    ]))


def test_cox3d_block_stack(tmp_path):
    """Conv3d / BN / ReLU / depthwise conv / SE (adaptive pooling, reduce mul) / SiLU / residuals (identity and
    projection with auto-delay), random weights and BN statistics, batch 2: forward == torch (the reference's
    forward), every step == the reference's forward_step, forward_steps == the stacked steps; update_state=False,
    save/restore, two streams (check_modes), to 1e-5."""
    seed(508)
    net = randomise_norms(_x3d_stack())
    net.eval()
    x = torch.randn(2, 3, 16, 12, 12)
    model = export_load(net, tmp_path, input_shape=(3, 12, 12))
    assert model.delay == net.delay and model.receptive_field == net.receptive_field
    ref = _fw(net, x)
    theirs = co_steps(net, x)
    assert sum(t is not None for t in theirs) >= 3
    stepped = check_with_step_oracle(model, x, ref, step_oracle_from(theirs))
    assert_close(stepped, co_steps_clip(net, x), 1e-5, "forward_steps vs co")
    # end padding continues the stream: its first outputs are the steps
    s = model.stream(2, (3, 12, 12))
    padded = s.forward_steps(to_np(x), pad_end=True)
    assert padded.shape[2] >= stepped.shape[2]
    assert_close(padded[:, :, :stepped.shape[2]], stepped, 1e-5, "pad_end prefix")


def test_recurrent_head_on_conv_features(tmp_path):
    """co.Conv1d -> ReLU -> co.LSTM -> co.Linear(channel_dim=1), random weights: forward == the torch
    composition; steps == the reference's steps; all modes (check_modes, to 1e-5)."""
    seed(509)
    net = co.Sequential(
        co.Conv1d(4, 8, kernel_size=3, padding=1),
        nn.ReLU(),
        co.LSTM(8, 6, num_layers=2),
        co.Linear(6, 3, channel_dim=1),
    )
    net.eval()
    x = torch.randn(2, 4, 11)
    model = export_load(net, tmp_path, input_shape=(4,))
    with torch.no_grad():
        h = torch.relu(nn.functional.conv1d(x, net[0].weight, net[0].bias, padding=1))
        lstm = nn.LSTM(8, 6, num_layers=2, batch_first=True)
        lstm.load_state_dict(net[2].state_dict())
        h = lstm(h.permute(0, 2, 1))[0].permute(0, 2, 1)
        ref = nn.functional.linear(h.permute(0, 2, 1), net[3].weight, net[3].bias).permute(0, 2, 1)
        assert_close(net(x), ref, 1e-5, "co forward")
    assert model.delay == 1
    check_modes(model, x, ref)
    theirs = co_steps(net, x)
    assert theirs[0] is None
    for n, r in enumerate(theirs[1:], 2):
        assert_close(r, ref[:, :, n - 2], 1e-5, "reference step %d" % n)
