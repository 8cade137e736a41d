"""Against the reference package `continual` (co), in all three modes. Skipped when it is not importable
(put /tmp/ref/ci on PYTHONPATH)."""
import numpy as np
import pytest
import torch
from torch import nn

from helpers import assert_close, check_modes, export_load, seed, torch_forward

co = pytest.importorskip("continual")


def _co_steps(net, x):
    net.clean_state()
    with torch.no_grad():
        return [net.forward_step(x[:, :, t]) for t in range(x.shape[2])]


def compare_with_co(net, model, x, *, tol=1e-5, pad_end=True, forward=True):
    """forward, forward_step (frame by frame from clean), forward_steps (with and without pad_end, and split
    into steps + step) of our model against the reference module `net`."""
    net.eval()
    x = torch.as_tensor(x)
    if forward:
        with torch.no_grad():
            assert_close(model.forward(x), net.forward(x), tol, "forward vs co")
    # forward_step
    ref = _co_steps(net, x)
    s = model.stream(x.shape[0], tuple(x.shape[1:2]) + tuple(x.shape[3:]))
    for n, r in enumerate(ref, 1):
        y = s.forward_step(x[:, :, n - 1])
        assert (y is None) == (r is None), "step %d: co %s, continual-c %s" % (
            n, "None" if r is None else "output", "None" if y is None else "output")
        if r is not None:
            assert_close(y, r, tol, "forward_step %d vs co" % n)
    # forward_steps
    for pe in ([False, True] if pad_end else [False]):
        net.clean_state()
        s.clean_state()
        with torch.no_grad():
            r = net.forward_steps(x, pad_end=pe)
        y = s.forward_steps(x, pad_end=pe)
        assert (y is None) == (r is None)
        if r is not None:
            assert_close(y, r, tol, "forward_steps(pad_end=%s) vs co" % pe)
    # steps for the first part, then single steps
    h = x.shape[2] // 2
    net.clean_state()
    s.clean_state()
    with torch.no_grad():
        r = net.forward_steps(x[:, :, :h])
    y = s.forward_steps(x[:, :, :h])
    assert (y is None) == (r is None)
    if r is not None:
        assert_close(y, r, tol, "forward_steps(first half) vs co")
    for t in range(h, x.shape[2]):
        with torch.no_grad():
            r = net.forward_step(x[:, :, t])
        y = s.forward_step(x[:, :, t])
        assert (y is None) == (r is None)
        if r is not None:
            assert_close(y, r, tol, "forward_step %d after forward_steps vs co" % (t + 1))
    net.clean_state()


def _randomise_bn(bn):
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()


def test_user_network_matches_co(tmp_path):
    """The brief's network: co.Sequential(co.Conv3d(3,16,3,padding=1), nn.BatchNorm3d(16), nn.ReLU(),
    co.Conv3d(16,8,(3,1,1),stride=(2,1,1))), random weights and BN statistics."""
    seed(40)
    net = co.Sequential(co.Conv3d(3, 16, 3, padding=1), nn.BatchNorm3d(16), nn.ReLU(),
                        co.Conv3d(16, 8, (3, 1, 1), stride=(2, 1, 1)))
    _randomise_bn(net[1])
    net.eval()
    model = export_load(net, tmp_path, input_shape=(3, 6, 6))
    assert (model.receptive_field, model.delay, model.stride, model.padding) == (
        net.receptive_field, net.delay, net.stride[0], net.padding[0])
    for T in (9, 10):
        x = torch.randn(2, 3, T, 6, 6)
        compare_with_co(net, model, x)
    # and the same network from torch.nn only, against torch.nn forward
    tnet = nn.Sequential(nn.Conv3d(3, 16, 3, padding=1), nn.BatchNorm3d(16), nn.ReLU(),
                         nn.Conv3d(16, 8, (3, 1, 1), stride=(2, 1, 1)))
    tnet.load_state_dict(net.state_dict())
    tnet.eval()
    tmodel = export_load(tnet, tmp_path, input_shape=(3, 6, 6), name="torch.safetensors")
    x = torch.randn(2, 3, 9, 6, 6)
    check_modes(tmodel, x, torch_forward(tnet, x))
    np.testing.assert_array_equal(tmodel.forward(x), model.forward(x))


@pytest.mark.parametrize("padding_mode,fill", [("zeros", "replicate"), ("replicate", "zeros"),
                                               ("replicate", "replicate"), ("zeros", "zeros")])
def test_co_conv_temporal_fill(tmp_path, padding_mode, fill):
    """co conv whose temporal_fill differs from padding_mode (reference quirk Q5): forward is torch's, the
    step modes follow temporal_fill at both ends, as the reference does."""
    seed(41)
    net = co.Conv2d(3, 4, 3, padding=1, padding_mode=padding_mode, temporal_fill=fill)
    x = torch.randn(2, 3, 7, 5) + 1.0
    model = export_load(net, tmp_path, input_shape=(3, 5))
    compare_with_co(net, model, x)


@pytest.mark.parametrize("k,p,s", [(3, 1, 1), (3, 0, 2), (5, 2, 1), (2, 1, 2), (4, 0, 3), (3, 2, 1)])
def test_co_conv1d_patterns(tmp_path, k, p, s):
    seed(42)
    net = co.Conv1d(2, 3, k, stride=s, padding=p)
    model = export_load(net, tmp_path, input_shape=(2,))
    compare_with_co(net, model, torch.randn(1, 2, 12))


def test_co_linear_channel_dim_1(tmp_path):
    seed(43)
    net = co.Sequential(co.Conv3d(2, 4, (3, 1, 1), padding=(1, 0, 0)), nn.ReLU(), co.Linear(4, 3, channel_dim=1))
    model = export_load(net, tmp_path, input_shape=(2, 3, 3))
    compare_with_co(net, model, torch.randn(2, 2, 6, 3, 3))


@pytest.mark.parametrize("d", [1, 2])
def test_co_delay_steps(tmp_path, d):
    """Delay without shrink, with True and with "lagging": steps and forward as the reference (pad_end too
    for False; the reference's pad_end flushes extra frames for True, Q22, and for "lagging")."""
    seed(44)
    x = torch.randn(1, 2, 7)
    for shrink in (False, True, "lagging"):
        net = co.Delay(d, auto_shrink=shrink)
        model = export_load(net, tmp_path, input_shape=(2,), name="d%s" % shrink)
        compare_with_co(net, model, x, pad_end=shrink is False)


@pytest.mark.parametrize("shrink", [False, True, "lagging"])
@pytest.mark.parametrize("reduce", ["sum", "mul"])
def test_co_residual(tmp_path, shrink, reduce):
    """co.Residual (equal padding, centred, lagging): all modes as the reference (pad_end only where the
    reference supports it: equal padding, Q23)."""
    seed(45)
    conv = co.Conv2d(3, 3, 3, padding=(1, 1) if shrink is False else (0, 1))
    net = co.Residual(conv, residual_shrink=shrink, reduce=reduce)
    model = export_load(net, tmp_path, input_shape=(3, 4))
    assert model.delay == net.delay and model.receptive_field == net.receptive_field
    compare_with_co(net, model, torch.randn(2, 3, 8, 4), pad_end=shrink is False)


@pytest.mark.parametrize("reduce", ["sum", "mul", "max", "concat"])
def test_co_broadcast_reduce_auto_delay(tmp_path, reduce):
    seed(46)
    net = co.BroadcastReduce(co.Conv1d(2, 3, 5, padding=2), co.Conv1d(2, 3, 3, padding=1), co.Conv1d(2, 3, 1),
                             reduce=reduce)
    model = export_load(net, tmp_path, input_shape=(2,))
    assert (model.receptive_field, model.delay, model.padding) == (net.receptive_field, net.delay, net.padding[0])
    compare_with_co(net, model, torch.randn(2, 2, 9))


def test_co_mobilenet_like_block(tmp_path):
    """A residual inverted-bottleneck block (README example style) with BN and activations."""
    seed(47)
    block = co.Residual(co.Sequential(
        co.Conv3d(4, 8, 1), nn.BatchNorm3d(8), nn.ReLU6(),
        co.Conv3d(8, 8, 3, padding=1, groups=8), nn.BatchNorm3d(8), nn.ReLU6(),
        co.Conv3d(8, 4, 1), nn.BatchNorm3d(4)))
    for i in (1, 4, 7):
        _randomise_bn(block[1][i])
    block.eval()
    model = export_load(block, tmp_path, input_shape=(4, 4, 4))
    compare_with_co(block, model, torch.randn(1, 4, 7, 4, 4))


def test_co_norms_in_sequential(tmp_path):
    """The frame-local norms of the reference's test_norm (GroupNorm is left out: not frame-local, Q11)."""
    seed(48)
    inorm = nn.InstanceNorm3d(2, affine=True, track_running_stats=True)
    bn = nn.BatchNorm3d(2)
    for m in (inorm, bn):
        _randomise_bn(m)
    net = co.Sequential(bn, co.Conv3d(2, 2, 3, padding=(0, 1, 1)), inorm, nn.LayerNorm([3, 3]),
                        co.Conv3d(2, 2, 3, padding=(1, 1, 1)))
    net.eval()
    model = export_load(net, tmp_path, input_shape=(2, 3, 3))
    compare_with_co(net, model, torch.randn(1, 2, 8, 3, 3))


def test_co_activations_forward_stepping(tmp_path):
    seed(49)
    net = co.Sequential(co.Conv2d(2, 4, 3, padding=1), nn.GELU(), nn.PReLU(4), nn.Softmax(1), nn.Dropout(0.3),
                        co.Conv2d(4, 4, 1), nn.GLU(1))
    model = export_load(net, tmp_path, input_shape=(2, 5))
    compare_with_co(net, model, torch.randn(2, 2, 6, 5))
