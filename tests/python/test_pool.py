"""Pooling: torch.nn AvgPool/MaxPool 1d/2d/3d (exported as co.continual() converts them), the reference's
co pools, and co.Adaptive{Avg,Max}Pool{2,3}d, in all three modes against torch.

Decisions pinned here (docs/decisions.md): Q3 (temporal dilation: the ring spans d(k-1)+1 frames),
Q4 (max pooling pads with -inf), Q25 (temporal count_include_pad=False / divisor_override hold in steps;
a temporal ceil_mode window past the end comes from forward only), Q26 (adaptive pooling: forward pools
all T, steps pool kernel_size frames)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import continual_c
from co_helpers import check_with_step_oracle, co_steps, co_steps_clip, differs, window_oracle
from helpers import assert_close, check_modes, export_load, seed, to_np, torch_forward


def _data(shape, kind):
    x = torch.randn(*shape)
    if kind == "neg":  # every value negative: zero padding would win every padded max
        return -x.abs() - 0.5
    return x


def _fs(x):
    return tuple(x.shape[1:2]) + tuple(x.shape[3:])


# ---- torch.nn pools -----------------------------------------------------------------------------
POOLS_1D = [
    ("avg k3 s1 p1", lambda: nn.AvgPool1d(3, stride=1, padding=1)),
    ("avg k2 (stride = kernel)", lambda: nn.AvgPool1d(2)),
    ("avg k3 s2 p1 no-pad-count", lambda: nn.AvgPool1d(3, stride=2, padding=1, count_include_pad=False)),
    ("avg k4 s3 p2", lambda: nn.AvgPool1d(4, stride=3, padding=2)),
    ("avg k5 s1 p2 no-pad-count", lambda: nn.AvgPool1d(5, stride=1, padding=2, count_include_pad=False)),
    ("max k3 s1 p1", lambda: nn.MaxPool1d(3, stride=1, padding=1)),
    ("max k2 s1 d3", lambda: nn.MaxPool1d(2, stride=1, dilation=3)),
    ("max k3 s2 p1 d2", lambda: nn.MaxPool1d(3, stride=2, padding=1, dilation=2)),
    ("max k2 (stride = kernel) p1", lambda: nn.MaxPool1d(2, padding=1)),
    ("avg k2 s3 (stride > kernel)", lambda: nn.AvgPool1d(2, stride=3)),
    ("max k2 s3 p1 (stride > kernel)", lambda: nn.MaxPool1d(2, stride=3, padding=1)),
    ("avg k1 s2 (temporal decimation only)", lambda: nn.AvgPool1d(1, stride=2)),
]
POOLS_2D = [
    ("avg (3,3) s(1,2) p1 no-pad-count", lambda: nn.AvgPool2d((3, 3), stride=(1, 2), padding=(1, 1),
                                                              count_include_pad=False)),
    ("avg (2,3) p(1,0) divisor 5", lambda: nn.AvgPool2d((2, 3), stride=1, padding=(1, 0), divisor_override=5)),
    ("avg (3,2) s(1,2) spatial ceil", lambda: nn.AvgPool2d((3, 2), stride=(1, 2), ceil_mode=True)),
    ("avg (3,3) s(2,1) p1 divisor 4", lambda: nn.AvgPool2d(3, stride=(2, 1), padding=1, divisor_override=4)),
    ("max (3,3) s(1,2) p1 d(2,1)", lambda: nn.MaxPool2d((3, 3), stride=(1, 2), padding=(1, 1), dilation=(2, 1))),
    ("max (2,3) s(2,1) p1 spatial ceil", lambda: nn.MaxPool2d((2, 3), stride=(2, 2), padding=(1, 1), ceil_mode=True)),
    ("max (2,2) (stride = kernel)", lambda: nn.MaxPool2d(2)),
    ("max (1,3) s(1,2) spatial only", lambda: nn.MaxPool2d((1, 3), stride=(1, 2), padding=(0, 1))),
    ("avg (1,2) s(2,2) k1 temporal stride", lambda: nn.AvgPool2d((1, 2), stride=(2, 2))),
]
POOLS_3D = [
    ("avg (2,3,3) s(1,2,2) p1", lambda: nn.AvgPool3d((2, 3, 3), stride=(1, 2, 2), padding=(1, 1, 1))),
    ("avg (3,2,2) s(2,1,1) p(1,0,1) no-pad-count", lambda: nn.AvgPool3d((3, 2, 2), stride=(2, 1, 1), padding=(1, 0, 1),
                                                                        count_include_pad=False)),
    ("avg (2,2,2) s1 divisor 3", lambda: nn.AvgPool3d(2, stride=1, divisor_override=3)),
    ("max (3,3,3) s(1,2,2) p1 d(2,1,1)", lambda: nn.MaxPool3d(3, stride=(1, 2, 2), padding=1, dilation=(2, 1, 1))),
    ("max (2,3,3) s(2,1,1) p1 d(1,2,2)", lambda: nn.MaxPool3d((2, 3, 3), stride=(2, 1, 1), padding=1,
                                                              dilation=(1, 2, 2))),
]


def _cases():
    out = []
    for label, make in POOLS_1D:
        out.append(pytest.param(make, (3, 2, 13), id="1d " + label))
    for label, make in POOLS_2D:
        out.append(pytest.param(make, (2, 3, 11, 7), id="2d " + label))
    for label, make in POOLS_3D:
        out.append(pytest.param(make, (2, 2, 9, 5, 6), id="3d " + label))
    return out


@pytest.mark.parametrize("data", ["randn", "neg"])
@pytest.mark.parametrize("make, shape", _cases())
def test_torch_pool_all_modes(tmp_path, make, shape, data):
    """torch.nn pools, odd sizes, batch > 1: forward == torch, steps emit forward's outputs in order, pad_end,
    update_state=False and save/restore (check_modes). Negative data catches zero padding in max pools (Q4)."""
    seed(100)
    pool = make()
    x = _data(shape, data)
    model = export_load(pool, tmp_path, input_shape=_fs(x))
    kt, st, pt = (pool.kernel_size if isinstance(pool.kernel_size, tuple) else (pool.kernel_size,))[0], None, None
    dt = getattr(pool, "dilation", 1)
    dt = dt[0] if isinstance(dt, tuple) else dt
    st = pool.stride[0] if isinstance(pool.stride, tuple) else pool.stride
    pt = pool.padding[0] if isinstance(pool.padding, tuple) else pool.padding
    rf = dt * (kt - 1) + 1
    assert model.temporal == {"receptive_field": rf, "delay": rf - 1 - pt, "stride": st, "padding": pt}
    check_modes(model, x, torch_forward(pool, x))


def test_dilated_max_pool_non_monotone(tmp_path):
    """Q3: MaxPool1d(k=2, d=2) on a zig-zag: steps equal torch's dilated windows (the reference's ring wraps at k
    and mixes in the fill)."""
    x = torch.tensor([[[1.0, 5.0, 2.0, 8.0, 3.0, 0.0, 7.0, 4.0, 6.0, -1.0]]])
    pool = nn.MaxPool1d(2, stride=1, dilation=2)
    model = export_load(pool, tmp_path, input_shape=(1,))
    ref = torch_forward(pool, x)
    assert model.receptive_field == 3 and model.delay == 2
    check_modes(model, x, ref)


def test_dilated_max_pool_reference_differs(tmp_path):
    co = pytest.importorskip("continual")
    seed(101)
    net = co.MaxPool1d(3, stride=1, dilation=2, temporal_fill="neg_inf")
    x = torch.randn(2, 3, 12)
    model = export_load(net, tmp_path, input_shape=(3,))
    ref = torch_forward(nn.MaxPool1d(3, stride=1, dilation=2), x)
    check_modes(model, x, ref)
    # the reference: rf reported as d*k, and its step outputs are not torch's windows
    assert net.receptive_field == 6 and model.receptive_field == 5
    theirs = co_steps_clip(net, x)
    assert differs(theirs, ref), "the reference's dilated max pool now matches torch (Q3 fixed upstream?)"


def test_max_pool_negative_reference_differs(tmp_path):
    """Q4: co.MaxPool2d's default temporal fill is zeros; on negative data its padded outputs are 0, torch's are
    the window max. continual-c pads with -inf whatever the recorded fill."""
    co = pytest.importorskip("continual")
    seed(102)
    net = co.MaxPool2d((3, 3), stride=1, padding=(1, 1))
    x = _data((2, 2, 8, 5), "neg")
    model = export_load(net, tmp_path, input_shape=(2, 5))
    assert model.nodes[0]["type"] == "MaxPool2d"
    ref = torch_forward(nn.MaxPool2d((3, 3), stride=1, padding=(1, 1)), x)
    assert_close(to_np(net(x)), ref, 0, "co forward is torch's")
    check_modes(model, x, ref)
    assert differs(co_steps_clip(net, x, pad_end=True), ref), "reference pads max pooling with -inf now (Q4)?"


@pytest.mark.parametrize("kind", ["count_include_pad", "divisor_override"])
def test_avg_pool_divisor_reference_differs(tmp_path, kind):
    """Q25: temporal count_include_pad=False and divisor_override hold in step mode."""
    co = pytest.importorskip("continual")
    seed(103)
    if kind == "count_include_pad":
        net = co.AvgPool2d((3, 3), stride=1, padding=1, count_include_pad=False)
        tnet = nn.AvgPool2d((3, 3), stride=1, padding=1, count_include_pad=False)
        x = torch.randn(2, 2, 7, 5)
    else:
        net = co.AvgPool3d((2, 2, 2), stride=1, divisor_override=3)
        tnet = nn.AvgPool3d((2, 2, 2), stride=1, divisor_override=3)
        x = torch.randn(2, 2, 7, 4, 5)
    model = export_load(net, tmp_path, input_shape=_fs(x))
    ref = torch_forward(tnet, x)
    assert_close(to_np(net(x)), ref, 0, "co forward is torch's")
    check_modes(model, x, ref)
    assert differs(co_steps_clip(net, x, pad_end=True), ref)


@pytest.mark.parametrize("make, t", [(lambda: nn.AvgPool1d(2, stride=2, ceil_mode=True), 9),
                                     (lambda: nn.AvgPool1d(3, stride=2, padding=1, ceil_mode=True,
                                                           count_include_pad=False), 8),
                                     (lambda: nn.MaxPool1d(3, stride=2, ceil_mode=True), 8)],
                         ids=["avg", "avg padded", "max"])
def test_temporal_ceil_mode_window_past_end(tmp_path, make, t):
    """Q25 (kept): torch's ceil_mode adds a last window that starts inside the clip and runs past its end; only
    forward produces it. Every other output is produced by steps too."""
    seed(104)
    pool = make()
    x = torch.randn(2, 3, t)
    model = export_load(pool, tmp_path, input_shape=(3,))
    ref = torch_forward(pool, x)
    assert_close(model.forward(x), ref, 1e-6, "forward")
    s = model.stream(2, (3,))
    got = s.forward_steps(to_np(x), pad_end=True)
    assert ref.shape[2] == got.shape[2] + 1
    assert_close(got, ref[:, :, :-1], 1e-6, "forward_steps(pad_end=True)")
    check_with_step_oracle(model, x, ref, window_oracle(ref[:, :, :-1], model.delay, model.stride),
                           pad_end_ref=ref[:, :, :-1])


def test_pools_inside_sequential(tmp_path):
    """Convs and pools of several strides in one torch Sequential."""
    seed(105)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.MaxPool2d((2, 2)), nn.ReLU(),
                        nn.Conv2d(4, 3, (3, 1), padding=(1, 0)), nn.AvgPool2d(3, stride=(1, 1), padding=1),
                        nn.MaxPool2d((3, 1), stride=(1, 1), dilation=(2, 1)))
    x = torch.randn(2, 2, 20, 6)
    model = export_load(net, tmp_path, input_shape=(2, 6))
    check_modes(model, x, torch_forward(net, x))


# ---- the reference's co pools --------------------------------------------------------------------
CO_POOLS = [
    ("AvgPool1d", lambda co: co.AvgPool1d(3, padding=1, stride=1), (2, 3, 9)),
    ("AvgPool2d stride", lambda co: co.AvgPool2d((2, 2), stride=(2, 1)), (2, 2, 10, 5)),
    ("AvgPool3d", lambda co: co.AvgPool3d((3, 2, 2), stride=(1, 2, 2), padding=(1, 0, 0)), (1, 2, 8, 4, 5)),
    ("MaxPool1d neg_inf", lambda co: co.MaxPool1d(3, stride=1, padding=1), (2, 3, 9)),
    ("MaxPool2d", lambda co: co.MaxPool2d((2, 3), stride=(1, 2)), (2, 2, 9, 7)),
    ("MaxPool3d replicate", lambda co: co.MaxPool3d((3, 3, 3), stride=1, padding=(1, 1, 1), temporal_fill="replicate"),
     (1, 2, 7, 4, 4)),
    ("AvgPool1d replicate", lambda co: co.AvgPool1d(3, stride=1, padding=1, temporal_fill="replicate"), (2, 3, 9)),
]


@pytest.mark.parametrize("make, shape", [pytest.param(m, s, id=i) for i, m, s in CO_POOLS])
def test_co_pools_match_reference(tmp_path, make, shape):
    """co pools where the reference has no quirk: forward, every step and forward_steps (with and without
    pad_end) equal the reference's. The recorded temporal_fill is honoured: replicate start padding of an
    average pool differs from torch's zero padding, as in the reference."""
    co = pytest.importorskip("continual")
    seed(106)
    net = make(co)
    x = torch.randn(*shape)
    model = export_load(net, tmp_path, input_shape=_fs(x))
    replicate = net._make_padding is torch.clone
    assert continual_c.to_network(net)[0]["temporal_fill"] == ("replicate" if replicate else (
        "neg_inf" if isinstance(net, co.MaxPool1d) else "zeros"))
    with torch.no_grad():
        assert_close(model.forward(x), net(x), 1e-6, "forward vs co")
    theirs = co_steps(net, x)
    exact = not replicate or isinstance(net, co.MaxPool3d)  # replicate padding is exact for max pooling
    check_modes(model, x, torch_forward(net, x), steps_oracle=lambda n: theirs[n - 1], pad_end=exact)
    s = model.stream(x.shape[0], _fs(x))
    for pad_end in (False, True):
        s.clean_state()
        assert_close(s.forward_steps(to_np(x), pad_end=pad_end), co_steps_clip(net, x, pad_end=pad_end), 1e-5,
                     "forward_steps(pad_end=%s) vs co" % pad_end)


def test_co_pool_fill_recorded():
    co = pytest.importorskip("continual")
    assert continual_c.to_network(co.MaxPool1d(2))[0]["temporal_fill"] == "neg_inf"
    assert continual_c.to_network(co.MaxPool2d(2))[0]["temporal_fill"] == "zeros"
    assert continual_c.to_network(co.AvgPool3d(2, temporal_fill="replicate"))[0]["temporal_fill"] == "replicate"
    assert continual_c.to_network(co.continual(nn.MaxPool1d(2)))[0]["temporal_fill"] == "zeros"
    assert continual_c.to_network(nn.MaxPool1d(2))[0]["temporal_fill"] == "zeros"


# ---- adaptive pools ---------------------------------------------------------------------------------
def _adaptive_step_ref(x, kind, out_spatial, k, s, p, d):
    """Spatial adaptive pooling of every frame, then temporal pooling of k frames (zero start padding for
    average, -inf for max): the clip of step outputs, aligned like a conv."""
    nd = x.dim() - 3
    t = x.shape[2]
    if nd == 1:
        fn = F.adaptive_avg_pool2d if kind == "avg" else F.adaptive_max_pool2d
    else:
        fn = F.adaptive_avg_pool3d if kind == "avg" else F.adaptive_max_pool3d
    sp = fn(x, (t,) + tuple(out_spatial))  # time untouched (output size T over T frames)
    ones = (1,) * nd
    zeros = (0,) * nd
    if kind == "avg":
        pool = F.avg_pool2d if nd == 1 else F.avg_pool3d
        assert d == 1
        return pool(sp, (k,) + ones, (s,) + ones, (p,) + zeros, count_include_pad=True)
    pool = F.max_pool2d if nd == 1 else F.max_pool3d
    return pool(sp, (k,) + ones, (s,) + ones, (p,) + zeros, (d,) + ones)


ADAPTIVE = [
    ("avg2d (1,3) k4", "avg", 2, (1, 3), dict(kernel_size=4), (2, 3, 9, 7)),
    ("avg2d (1,1) k3 s2 p1", "avg", 2, (1, 1), dict(kernel_size=3, stride=2, padding=1), (2, 2, 10, 5)),
    ("avg3d (1,2,2) k3", "avg", 3, (1, 2, 2), dict(kernel_size=3), (2, 2, 8, 5, 4)),
    ("avg3d (1,1,1) k5 s1 p2", "avg", 3, (1, 1, 1), dict(kernel_size=5, padding=2), (1, 3, 9, 3, 3)),
    ("max2d (1,2) k3 d2", "max", 2, (1, 2), dict(kernel_size=3, dilation=2), (2, 3, 11, 5)),
    ("max3d (1,2,3) k2 s2", "max", 3, (1, 2, 3), dict(kernel_size=2, stride=2), (2, 2, 9, 5, 7)),
    ("max3d (1,1,1) k3 p1", "max", 3, (1, 1, 1), dict(kernel_size=3, padding=1), (1, 2, 8, 3, 4)),
]


@pytest.mark.parametrize("data", ["randn", "neg"])
@pytest.mark.parametrize("kind, nd, out, kw, shape", [pytest.param(*a[1:], id=a[0]) for a in ADAPTIVE])
def test_adaptive_pool(tmp_path, kind, nd, out, kw, shape, data):
    """Q26: forward pools all T (torch's adaptive pool); step n pools the last kernel_size frames (with the
    given stride / padding / dilation); forward_steps(pad_end=True) is the clip of every step window."""
    co = pytest.importorskip("continual")
    seed(107)
    cls = getattr(co, "Adaptive%sPool%dd" % (kind.capitalize(), nd))
    net = cls(out, **kw)
    x = _data(shape, data)
    model = export_load(net, tmp_path, input_shape=_fs(x))
    k, s, p, d = kw["kernel_size"], kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1)
    assert model.temporal == {"receptive_field": d * (k - 1) + 1, "delay": d * (k - 1) - p, "stride": s, "padding": p}
    tfn = getattr(F, "adaptive_%s_pool%dd" % (kind, nd))
    ref_forward = tfn(x, out)
    with torch.no_grad():
        assert_close(to_np(net(x)), ref_forward, 0, "co forward is torch's")
    steps = _adaptive_step_ref(x, kind, out[1:], k, s, p, d)
    check_with_step_oracle(model, x, ref_forward, window_oracle(steps, d * (k - 1) - p, s), pad_end_ref=steps)
    if p == 0 and d == 1 and data == "randn":  # no quirk involved: the reference's steps agree
        theirs = co_steps(net, x)
        for n, r in enumerate(theirs, 1):
            e = window_oracle(steps, k - 1, s)(n)
            assert (r is None) == (e is None)
            if r is not None:
                assert_close(r, e, 1e-5, "reference step %d" % n)


@pytest.mark.parametrize("kind", ["Avg", "Max"])
def test_adaptive_pool_t_equals_kernel(tmp_path, kind):
    """T == kernel_size: forward, the single step output and forward_steps(pad_end=True) all agree (the
    reference's own test of adaptive pools)."""
    co = pytest.importorskip("continual")
    seed(108)
    net = getattr(co, "Adaptive%sPool3d" % kind)((1, 2, 2), kernel_size=5)
    x = torch.randn(2, 3, 5, 4, 6)
    model = export_load(net, tmp_path, input_shape=(3, 4, 6))
    with torch.no_grad():
        ref = net(x)
    check_modes(model, x, ref)
    with torch.no_grad():
        assert_close(model.forward(x), net.forward_steps(x), 1e-5, "vs co forward_steps")


# ---- what the exporter refuses ----------------------------------------------------------------------
@pytest.mark.no_lib
def test_pool_export_errors():
    co = pytest.importorskip("continual")
    with pytest.raises(continual_c.ExportError, match=r"AvgPool1d.*dilation"):
        continual_c.to_network(co.AvgPool1d(2, dilation=2))
    with pytest.raises(continual_c.ExportError, match=r"AdaptiveAvgPool2d.*kernel_size"):
        continual_c.to_network(nn.Sequential(nn.Conv2d(1, 1, 1), nn.AdaptiveAvgPool2d(1)))
    with pytest.raises(continual_c.ExportError, match=r"return_indices"):
        continual_c.to_network(nn.MaxPool2d(2, return_indices=True))
    with pytest.raises(continual_c.ExportError, match=r"'1'.*None"):
        continual_c.to_network(co.Sequential(co.Conv3d(1, 1, 1), co.AdaptiveAvgPool3d((1, None, 2), kernel_size=2)))


@pytest.mark.no_lib
def test_pool_json_keys():
    """Exactly the keys of docs/format.md."""
    avg = continual_c.to_network(nn.AvgPool2d(3, stride=(1, 2), padding=1, divisor_override=2))[0]
    assert avg == {"type": "AvgPool2d", "name": "", "kernel_size": [3, 3], "stride": [1, 2], "padding": [1, 1],
                   "ceil_mode": False, "count_include_pad": True, "divisor_override": 2, "temporal_fill": "zeros"}
    mx = continual_c.to_network(nn.MaxPool3d((2, 3, 3), dilation=(2, 1, 1)))[0]
    assert mx == {"type": "MaxPool3d", "name": "", "kernel_size": [2, 3, 3], "stride": [2, 3, 3], "padding": [0, 0, 0],
                  "ceil_mode": False, "dilation": [2, 1, 1], "return_indices": False, "temporal_fill": "zeros"}


def test_max_pool_padding_is_minus_inf_from_c(tmp_path):
    """A hand-checked value: MaxPool1d(3, 1, 1) on -1..-6 (semantics.md Q4): first/last outputs -1/-5."""
    x = -torch.arange(1.0, 7.0).reshape(1, 1, 6)
    model = export_load(nn.MaxPool1d(3, stride=1, padding=1), tmp_path, input_shape=(1,))
    s = model.stream(1, (1,))
    np.testing.assert_array_equal(s.forward_steps(to_np(x), pad_end=True)[0, 0], [-1, -1, -2, -3, -4, -5])
    np.testing.assert_array_equal(model.forward(x)[0, 0], [-1, -1, -2, -3, -4, -5])


@pytest.mark.parametrize("is_max", [False, True])
def test_global_pool_plane_groups_and_threads(tmp_path, is_max):
    """A pool with one output per plane (the SE's average pool) runs several planes at a time and,
    on large frames, on the stream's threads: 8 + 8 + 3 planes (a group tail) per item against
    numpy in steps, and the same bits at 1 and 3 threads and for batch 1 inside batch 3 (the large
    frame, 19 x 48 x 48, crosses the threading threshold)."""
    co = pytest.importorskip("continual")
    seed(11)
    for frame in ((19, 7, 6), (19, 48, 48)):
        pool = (co.AdaptiveMaxPool3d if is_max else co.AdaptiveAvgPool3d)(output_size=(1, 1, 1), kernel_size=1)
        model = export_load(co.Sequential(pool), tmp_path, input_shape=frame, name="p%d.safetensors" % frame[1])
        x = torch.randn(3, frame[0], 4, *frame[1:]).numpy()
        one, three = model.stream(3), model.stream(3, threads=3)
        y1, y3 = one.forward_steps(x), three.forward_steps(x)
        assert np.array_equal(y1, y3)
        assert np.array_equal(model.stream(1).forward_steps(np.ascontiguousarray(x[1:2])), y1[1:2])
        want = x.max(axis=(3, 4), keepdims=True) if is_max else x.mean(axis=(3, 4), keepdims=True)
        assert_close(y1, want)
