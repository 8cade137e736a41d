"""One regression test per bug class of the reference's CHANGELOG (/tmp/ref/ci/CHANGELOG.md), on the modules
continual-c implements:

* 0.8.0  "Bugs in forward_step(s) with update_state=False"        -> test_update_state_false_*
* 0.8.1  "Bug in clean_state"                                       -> test_clean_state_*
* 0.14.0 / 0.15.0 "padding / delay property in sequence"            -> test_sequential_properties
* 0.4.0  "Handling of initialization and strides in containers"     -> test_strided_sequential_outputs
* 0.14.0 "Assertion error in BroadcastReduce for different delays"  -> test_broadcast_reduce_different_delays
* 1.1.2  "Residual centred residual and Delay auto_delay forward_step" -> test_residual_shrink_*, test_delay_auto_shrink
* 0.5.0  "Support for zero-delay in co.Delay"                       -> test_zero_delay
* 0.7.0  "Replicate padding in co._ConvNd"                          -> test_replicate_conv
* 1.0.4  "co.Conditional support for single-option config"         -> test_routing.py
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import continual_c
from co_helpers import co_steps, co_steps_clip, differs
from helpers import assert_close, check_modes, export_load, frames, seed, to_np

co = pytest.importorskip("continual")


def _fw(net, x):
    net.eval()
    with torch.no_grad():
        return net(x)


def first_positive(module, x):
    return bool(x.flatten()[0] > 0)


STATEFUL = [
    ("conv k3 p1", lambda: co.Conv1d(3, 3, 3, padding=1)),
    ("conv k3 s2", lambda: co.Conv1d(3, 3, 3, stride=2)),
    ("conv k1 s2 (Q1)", lambda: co.Conv1d(3, 3, 1, stride=2)),
    ("avg pool k3 p1", lambda: co.AvgPool1d(3, stride=1, padding=1)),
    ("max pool k2 d2", lambda: co.MaxPool1d(2, stride=1, dilation=2)),
    ("adaptive pool k3", lambda: co.Sequential(co.Reshape(2, 3, 1), co.AdaptiveAvgPool2d((1, 1), kernel_size=3),
                                               co.Reshape(2, 3))),
    ("delay 2", lambda: co.Delay(2)),
    ("delay 2 shrink", lambda: co.Delay(2, auto_shrink=True)),
    ("delay 2 lagging", lambda: co.Delay(2, auto_shrink="lagging")),
    ("skip 2", lambda: co.Skip(2)),
    ("rnn", lambda: co.RNN(3, 3)),
    ("gru 2 layers", lambda: co.GRU(3, 3, num_layers=2)),
    ("lstm proj", lambda: co.LSTM(3, 4, proj_size=3)),
    ("residual", lambda: co.Residual(co.Conv1d(3, 3, 3, padding=1))),
    ("conditional", lambda: co.Conditional(first_positive, co.Conv1d(3, 3, 3, padding=1), co.Conv1d(3, 3, 1))),
]


def _load(net, tmp_path):
    path = tmp_path / "m.safetensors"
    continual_c.export(net, str(path))
    return continual_c.load(str(path),
                            callbacks={"first_positive": lambda a: first_positive(None, torch.from_numpy(a))})


@pytest.mark.parametrize("make", [m for _, m in STATEFUL], ids=[i for i, _ in STATEFUL])
def test_update_state_false_every_stateful_module(tmp_path, make):
    """0.8.0: a peek (update_state=False) after n real steps returns the real step's output and changes nothing:
    the stream continues exactly as one that never peeked; forward_steps(update_state=False), with and without
    pad_end, on a used stream, likewise (and pad_end continues from the current state, Q7)."""
    seed(600)
    net = make()
    model = _load(net, tmp_path)
    x = to_np(torch.randn(2, 3, 9))
    a, b = model.stream(2, (3,)), model.stream(2, (3,))
    for n, f in enumerate(frames(x), 1):
        before = a.save_state()
        peek = a.forward_step(f * 3.0 - 1.0, update_state=False)  # another frame: must leave no trace
        peek_same = a.forward_step(f, update_state=False)
        assert a.save_state() == before, "step %d: a peek changed the state" % n
        ya, yb = a.forward_step(f), b.forward_step(f)
        assert (ya is None) == (yb is None) == (peek_same is None), "step %d" % n
        if ya is not None:
            np.testing.assert_array_equal(ya, yb)
            np.testing.assert_array_equal(peek_same, ya)
        del peek
        if n == 5:
            before = a.save_state()
            r1 = a.forward_steps(x, update_state=False)
            r2 = a.forward_steps(x, pad_end=True, update_state=False)
            assert a.save_state() == before
            r3 = b.forward_steps(x, pad_end=True)  # real: from the same state
            b.load_state(before)
            if r2 is None:
                assert r3 is None
            else:
                np.testing.assert_array_equal(r2, r3)
            assert (r1 is None) or r1.shape[2] <= r2.shape[2]


@pytest.mark.parametrize("make", [m for _, m in STATEFUL], ids=[i for i, _ in STATEFUL])
def test_clean_state_every_stateful_module(tmp_path, make):
    """0.8.1 (and Q10 for Conditional branches): clean_state() returns a used stream to the fresh state, byte for
    byte, and the outputs repeat."""
    seed(601)
    model = _load(make(), tmp_path)
    x = to_np(torch.randn(2, 3, 8))
    fresh = model.stream(2, (3,))
    s = model.stream(2, (3,))
    first = [s.forward_step(f) for f in frames(x)]
    assert s.save_state() != fresh.save_state() or all(o is not None for o in first)
    s.clean_state()
    assert s.save_state() == fresh.save_state()
    again = [s.forward_step(f) for f in frames(x)]
    for n, (p, q) in enumerate(zip(first, again), 1):
        assert (p is None) == (q is None), "step %d" % n
        if p is not None:
            np.testing.assert_array_equal(p, q)


SEQ_TABLE = [  # (k, p, s) per conv -> (rf, stride, padding, delay): semantics.md §2.2
    ([(9, 0, 1)] * 10, (81, 1, 0, 80)),
    ([(3, 0, 1), (3, 0, 2), (3, 0, 3), (3, 0, 1)], (21, 6, 0, 20)),
    ([(3, 1, 1), (3, 1, 2), (3, 1, 3), (3, 1, 1)], (21, 6, 10, 10)),
    ([(3, 2, 2), (3, 0, 1)], (7, 2, 2, 4)),
    ([(3, 1, 2), (3, 1, 2)], (7, 4, 3, 3)),
    ([(3, 0, 2), (3, 0, 2)], (7, 4, 0, 6)),
    ([(5, 2, 1), (3, 0, 3)], (7, 3, 2, 4)),
]


@pytest.mark.parametrize("convs, props", SEQ_TABLE, ids=[str(c) for c, _ in SEQ_TABLE])
def test_sequential_properties(tmp_path, convs, props):
    """0.14.0/0.15.0: receptive field, stride, padding and delay of Sequentials (the reference's values), and
    forward's output length ceil((T - (rf - 1) + 2 padding) / stride)."""
    net = co.Sequential(*[co.Conv1d(1, 1, k, padding=p, stride=s) for k, p, s in convs])
    assert (net.receptive_field, net.stride[0], net.padding[0], net.delay) == props
    model = export_load(net, tmp_path, input_shape=(1,))
    assert (model.receptive_field, model.stride, model.padding, model.delay) == props
    rf, s, p, _ = props
    t = rf + 2 * s + 1
    assert model.forward_shape((1, 1, t)) == (1, 1, -(-(t - (rf - 1) + 2 * p) // s))


def test_sequential_properties_with_pool(tmp_path):
    """conv(3,1,1), maxpool(2,0,2), conv(3,1,2): rf 8, stride 4, padding 3, delay 4 (semantics.md §2.2)."""
    net = co.Sequential(co.Conv1d(1, 1, 3, padding=1), co.MaxPool1d(2), co.Conv1d(1, 1, 3, padding=1, stride=2))
    model = export_load(net, tmp_path, input_shape=(1,))
    assert (model.receptive_field, model.stride, model.padding, model.delay) == (8, 4, 3, 4)
    seed(602)
    x = torch.randn(2, 1, 17)
    check_modes(model, x, _fw(net, x))


@pytest.mark.parametrize("convs", [c for c, _ in SEQ_TABLE[1:]], ids=[str(c) for c, _ in SEQ_TABLE[1:]])
def test_strided_sequential_outputs(tmp_path, convs):
    """0.4.0: initialisation and strides in containers: the stepped outputs of the stride/padding chains are
    forward's, at steps delay + 1 + j * stride, in every mode."""
    seed(603)
    net = co.Sequential(*[co.Conv1d(2, 2, k, padding=p, stride=s) for k, p, s in convs])
    x = torch.randn(2, 2, 31)
    model = export_load(net, tmp_path, input_shape=(2,))
    check_modes(model, x, _fw(net, x))


def test_broadcast_reduce_different_delays(tmp_path):
    """0.14.0: BroadcastReduce of branches with delays 2, 1, 0 (auto-delay): rf 5, padding 2, delay 2, and the
    reference's explicit numbers [4, 10, 18, 27, 36, 38, 32]... computed here for ones-weights convs."""
    c5, c3, c1 = (co.Conv1d(1, 1, k, padding=k // 2, bias=False) for k in (5, 3, 1))
    for c in (c5, c3, c1):
        nn.init.ones_(c.weight)
    net = co.BroadcastReduce(c5, c3, c1, reduce="sum")
    model = export_load(net, tmp_path, input_shape=(1,))
    assert (model.receptive_field, model.padding, model.delay) == (5, 2, 2)
    x = torch.arange(1.0, 8.0).reshape(1, 1, 7)
    ref = _fw(net, x)
    c5_ = F.conv1d(x, torch.ones(1, 1, 5), padding=2)
    c3_ = F.conv1d(x, torch.ones(1, 1, 3), padding=1)
    assert_close(ref, c5_ + c3_ + x, 0, "co forward")
    check_modes(model, x, ref)


# ---- Residual shrink and Delay auto_shrink (1.1.2) ------------------------------------------------------
@pytest.mark.parametrize("shrink, expected", [
    (True, [8, 12, 16, 20, 24]),
    ("centered", [8, 12, 16, 20, 24]),
    ("lagging", [7, 11, 15, 19, 23]),
    ("leading", [9, 13, 17, 21, 25]),
])
def test_residual_shrink_values(tmp_path, shrink, expected):
    """Residual(conv k3 ones, no padding) over x = 1..7 (semantics.md §2.4, verified values); all modes,
    forward_steps(pad_end=True) included (Q23 fixed)."""
    conv = co.Conv1d(1, 1, 3, bias=False)
    nn.init.ones_(conv.weight)
    net = co.Residual(conv, residual_shrink=shrink)
    x = torch.arange(1.0, 8.0).reshape(1, 1, 7)
    ref = _fw(net, x)
    assert ref.flatten().tolist() == expected
    model = export_load(net, tmp_path, input_shape=(1,))
    delay = 2
    check_modes(model, x, ref, delay=delay)
    theirs = co_steps(net, x)
    assert [t is None for t in theirs] == [True] * delay + [False] * 5


@pytest.mark.parametrize("shrink", [True, "centered", "lagging", "leading"])
def test_residual_shrink_random(tmp_path, shrink):
    seed(604)
    net = co.Residual(co.Sequential(co.Conv2d(3, 3, (5, 3), padding=(0, 1)), nn.ReLU(), co.Conv2d(3, 3, 1)),
                      residual_shrink=shrink, reduce="mul" if shrink == "lagging" else "sum")
    x = torch.randn(2, 3, 11, 4)
    model = export_load(net, tmp_path, input_shape=(3, 4))
    check_modes(model, x, _fw(net, x), delay=4)


@pytest.mark.parametrize("shrink", [True, "centered", "lagging"])
def test_delay_auto_shrink(tmp_path, shrink):
    """1.1.2 (and Q22): a stand-alone Delay(2, auto_shrink) steps to its forward and pads to it. The reference's
    "centered" steps start at d+1 (not forward), and its True flushes extra frames on pad_end."""
    seed(605)
    net = co.Delay(2, auto_shrink=shrink)
    x = torch.randn(2, 3, 9)
    ref = _fw(net, x)
    model = export_load(net, tmp_path, input_shape=(3,))
    d = 2 if shrink == "lagging" else 4
    check_modes(model, x, ref, delay=d)
    if shrink == "centered":
        assert differs(co_steps_clip(net, x), ref)
    if shrink is True:
        assert differs(co_steps_clip(net, x, pad_end=True), ref)


def test_zero_delay(tmp_path):
    """0.5.0: Delay(0) is the identity in every mode; a Residual around a k1 conv uses one."""
    seed(606)
    x = torch.randn(2, 3, 5)
    model = export_load(co.Delay(0), tmp_path, input_shape=(3,))
    assert model.temporal == {"receptive_field": 1, "delay": 0, "stride": 1, "padding": 0}
    check_modes(model, x, x)
    net = co.Residual(co.Conv1d(3, 3, 1))
    assert continual_c.to_network(net)[0]["children"][0]["delay"] == 0
    model = export_load(net, tmp_path, input_shape=(3,), name="r.safetensors")
    check_modes(model, x, _fw(net, x))


def test_replicate_conv(tmp_path):
    """0.7.0: replicate padding. co.continual(nn.Conv) takes the torch padding_mode as temporal fill, so steps
    with pad_end equal forward."""
    seed(607)
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode="replicate")
    net = co.Sequential(co.continual(conv), nn.ReLU())
    assert continual_c.to_network(net)[0]["children"][0]["temporal_fill"] == "replicate"
    x = torch.randn(2, 2, 8, 5)
    model = export_load(net, tmp_path, input_shape=(2, 5))
    with torch.no_grad():
        ref = torch.relu(conv(x))
    check_modes(model, x, ref)
    assert_close(to_np(co_steps_clip(net, x, pad_end=True)), ref, 1e-5, "the reference agrees")


# ---- issue "Reliability": B5, B8, B9 ------------------------------------------------------------------
def test_b5_b8_forward_steps_argument_errors(tmp_path):
    """B5: T near INT64_MAX overflowed the output-size check (then a segfault); B8: y == NULL was reported as a
    too-small buffer. Both are invalid arguments now, and co_steps_max_output says -1 for an impossible T."""
    import ctypes as C

    model = export_load(nn.Sequential(nn.Conv1d(2, 2, 3, padding=1)), tmp_path, input_shape=(2,))
    s = model.stream(1)
    lib = s._lib
    assert lib.co_steps_max_output(s._handle, 2 ** 63 - 1, 1) == -1  # + the end padding overflows
    x = np.zeros((1, 2, 4), np.float32)
    t_out = C.c_int64(0)
    st = lib.co_forward_steps(s._handle, x.ctypes.data_as(C.c_void_p), 2 ** 63 - 2, None, 2 ** 62, C.byref(t_out), 1, 1)
    assert st == 1  # CO_ERR_INVALID_ARGUMENT
    st = lib.co_forward_steps(s._handle, x.ctypes.data_as(C.c_void_p), 4, None, 64, C.byref(t_out), 1, 1)
    assert st == 1  # CO_ERR_INVALID_ARGUMENT, not CO_ERR_BUFFER_TOO_SMALL


def test_b9_binding_checks_int_ranges(tmp_path):
    """B9: batch sizes went through ctypes unchecked: batch_size=2**32 + 1 made a batch-1 stream."""
    model = export_load(nn.Sequential(nn.Conv1d(2, 2, 1)), tmp_path, input_shape=(2,))
    for bad in (2 ** 32 + 1, 0, -1):
        with pytest.raises(ValueError, match="batch_size"):
            model.stream(batch_size=bad)
    with pytest.raises(TypeError, match="batch_size"):
        model.stream(batch_size=1.5)
    assert model.stream(batch_size=3).input_shape == (3, 2)


def test_arena_cap_from_load_options(tmp_path):
    """A file's frame shape could make co_stream_create allocate and zero any size; co_load_options'
    max_arena_bytes caps it, and the refusal names both sizes."""
    path = str(tmp_path / "big.safetensors")
    continual_c.export(nn.Sequential(nn.Conv3d(3, 4, (1, 3, 3), padding=(0, 1, 1))), path, input_shape=(3, 64, 64))
    small = continual_c.load(path, max_arena_bytes=100_000)
    with pytest.raises(continual_c.Error) as e:
        small.stream(1)
    assert e.value.status_name == "CO_ERR_SHAPE" and "100000" in e.value.message and "max_arena_bytes" in e.value.message
    big = continual_c.load(path)  # the default cap (4 GiB) is far above this model's arena
    assert big.stream(1).input_shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="max_arena_bytes"):
        continual_c.load(path, max_arena_bytes=-1)
