"""Exporter tests: the model file is checked in Python (no libcontinual needed)."""
import collections
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import continual_c
from continual_c import ExportError

pytestmark = pytest.mark.no_lib


def _export(module, tmp_path, **kw):
    path = os.path.join(str(tmp_path), "m.safetensors")
    continual_c.export(module, path, **kw)
    return path


def _raw_header(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    return raw, n, raw[8:8 + n]


# ---- file layout -------------------------------------------------------------------------------
def test_safetensors_layout_rules(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(), nn.Conv3d(4, 2, (3, 1, 1)))
    path = _export(net, tmp_path, input_shape=(3, 5, 6))
    raw, n, hb = _raw_header(path)
    assert n % 8 == 0 and 8 + n <= len(raw)
    assert hb[:1] == b"{"
    text = hb.decode("utf-8")
    assert text.rstrip(" ") == text.rstrip()  # padding is spaces only
    header = json.loads(text)
    meta = header.pop("__metadata__")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    assert meta["format"] == "continual-c" and meta["format_version"] == "1"
    assert json.loads(meta["frame_shape"]) == [3, 5, 6]
    json.loads(meta["network"])
    # entries tile the buffer from 0, no hole, no overlap, nothing after the last one
    spans = sorted(tuple(v["data_offsets"]) for v in header.values())
    pos = 0
    for b, e in spans:
        assert b == pos
        pos = e
    assert 8 + n + pos == len(raw)
    sd = net.state_dict()
    assert list(header) == list(sd)  # every entry, same names, state_dict order
    for k, v in header.items():
        t = sd[k]
        assert v["shape"] == list(t.shape)
        if k.endswith("num_batches_tracked"):
            assert v["dtype"] == "I64" and v["shape"] == []
        else:
            assert v["dtype"] == "F32"
        assert v["data_offsets"][1] - v["data_offsets"][0] == t.numel() * (8 if v["dtype"] == "I64" else 4)


def test_tensor_values_roundtrip(tmp_path):
    torch.manual_seed(1)
    bn = nn.BatchNorm1d(3)
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2)
    bn.num_batches_tracked.fill_(7)
    net = nn.Sequential(collections.OrderedDict([("conv", nn.Conv1d(2, 3, 3)), ("bn", bn)]))
    path = _export(net, tmp_path)
    _, fs, meta, tensors = continual_c.read_model_file(path)
    assert fs is None and "frame_shape" not in meta
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(tensors[k], v.numpy())
    assert tensors["bn.num_batches_tracked"].dtype == np.int64 and tensors["bn.num_batches_tracked"] == 7


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_float_dtypes_written_as_f32(tmp_path, dtype):
    net = nn.Sequential(nn.Conv1d(2, 3, 3), nn.LayerNorm(3)).to(dtype)
    path = _export(net, tmp_path)
    _, _, _, tensors = continual_c.read_model_file(path)
    for k, v in net.state_dict().items():
        assert tensors[k].dtype == np.float32
        np.testing.assert_array_equal(tensors[k], v.float().numpy())


def test_empty_state_dict(tmp_path):
    path = _export(nn.Sequential(nn.ReLU(), nn.Tanh()), tmp_path)
    raw, n, hb = _raw_header(path)
    assert len(raw) == 8 + n
    assert list(json.loads(hb)) == ["__metadata__"]


def test_write_safetensors_metadata_must_be_strings(tmp_path):
    with pytest.raises(ExportError):
        continual_c.write_safetensors(os.path.join(str(tmp_path), "x"), {}, {"a": 1})


# ---- network JSON ---------------------------------------------------------------------------------
def test_network_sequential_names_and_conv(tmp_path):
    net = nn.Sequential(collections.OrderedDict([
        ("stem", nn.Conv3d(3, 4, (3, 3, 3), stride=(1, 2, 2), padding=(1, 1, 1), dilation=(1, 2, 1), groups=1,
                           bias=False, padding_mode="replicate")),
        ("body", nn.Sequential(nn.Conv2d(4, 4, 3, padding="same", groups=2), nn.Conv1d(4, 2, 1, padding="valid"))),
    ]))
    net_json = continual_c.export(net, os.path.join(str(tmp_path), "m"))
    assert net_json["type"] == "Sequential" and net_json["name"] == ""
    stem, body = net_json["children"]
    assert stem == {"type": "Conv3d", "name": "stem", "in_channels": 3, "out_channels": 4, "kernel_size": [3, 3, 3],
                    "stride": [1, 2, 2], "padding": [1, 1, 1], "dilation": [1, 2, 1], "groups": 1, "bias": False,
                    "padding_mode": "replicate", "temporal_fill": "replicate"}
    assert body["name"] == "body" and [c["name"] for c in body["children"]] == ["0", "1"]
    c2, c1 = body["children"]
    assert c2["type"] == "Conv2d" and c2["padding"] == [1, 1] and c2["groups"] == 2 and c2["bias"] is True
    assert c2["temporal_fill"] == "zeros" and c2["padding_mode"] == "zeros"
    assert c1["type"] == "Conv1d" and c1["padding"] == [0] and c1["kernel_size"] == [1]
    # the file holds the same JSON
    _, _, meta, _ = continual_c.read_model_file(os.path.join(str(tmp_path), "m"))
    assert json.loads(meta["network"]) == net_json


def test_network_shared_module_appears_twice(tmp_path):
    relu = nn.ReLU()
    conv = nn.Conv1d(2, 2, 3)
    net = nn.Sequential(conv, relu, conv, relu)
    j = continual_c.export(net, os.path.join(str(tmp_path), "m"))
    assert [c["name"] for c in j["children"]] == ["0", "1", "2", "3"]
    assert [c["type"] for c in j["children"]] == ["Conv1d", "ReLU", "Conv1d", "ReLU"]


ACTS = [
    (nn.ReLU(), {}), (nn.ReLU6(), {}), (nn.Sigmoid(), {}), (nn.Tanh(), {}), (nn.SiLU(), {}), (nn.Mish(), {}),
    (nn.Hardswish(), {}), (nn.Hardsigmoid(), {}), (nn.SELU(), {}), (nn.LogSigmoid(), {}), (nn.Softsign(), {}),
    (nn.Tanhshrink(), {}), (nn.Softmax2d(), {}),
    (nn.GELU(), {"approximate": "none"}), (nn.GELU(approximate="tanh"), {"approximate": "tanh"}),
    (nn.ELU(alpha=0.5), {"alpha": 0.5}), (nn.CELU(alpha=1.5), {"alpha": 1.5}),
    (nn.LeakyReLU(0.2), {"negative_slope": 0.2}), (nn.Hardtanh(-0.5, 2.0), {"min_val": -0.5, "max_val": 2.0}),
    (nn.Threshold(0.1, 20.0), {"threshold": 0.1, "value": 20.0}),
    (nn.RReLU(0.1, 0.3), {"lower": 0.1, "upper": 0.3}),
    (nn.Hardshrink(0.3), {"lambd": 0.3}), (nn.Softshrink(0.7), {"lambd": 0.7}),
    (nn.Softplus(2.0, 5.0), {"beta": 2.0, "threshold": 5.0}),
    (nn.PReLU(3), {"num_parameters": 3}), (nn.GLU(1), {"dim": 1}),
    (nn.Softmax(1), {"dim": 1}), (nn.Softmin(-1), {"dim": -1}), (nn.LogSoftmax(3), {"dim": 3}),
]


@pytest.mark.parametrize("module,keys", ACTS, ids=[type(m).__name__ + str(i) for i, (m, _) in enumerate(ACTS)])
def test_network_activations(tmp_path, module, keys):
    j = continual_c.export(nn.Sequential(module), os.path.join(str(tmp_path), "m"))
    node = j["children"][0]
    assert node == dict({"type": type(module).__name__, "name": "0"}, **keys)


def test_network_norms_dropouts(tmp_path):
    net = nn.Sequential(
        nn.BatchNorm1d(3, eps=1e-3), nn.BatchNorm2d(3, affine=False), nn.BatchNorm3d(3),
        nn.InstanceNorm1d(3, affine=True, track_running_stats=True), nn.InstanceNorm3d(3, track_running_stats=True),
        nn.GroupNorm(1, 3, eps=1e-4), nn.GroupNorm(3, 3, affine=False), nn.LayerNorm([4, 5]),
        nn.LayerNorm(5, elementwise_affine=False), nn.Identity(), nn.Dropout(0.3), nn.Dropout1d(), nn.Dropout2d(),
        nn.Dropout3d(), nn.AlphaDropout(), nn.FeatureAlphaDropout(),
    )
    path = os.path.join(str(tmp_path), "m")
    j = continual_c.export(net, path)
    ch = j["children"]
    assert ch[0] == {"type": "BatchNorm1d", "name": "0", "num_features": 3, "eps": 1e-3, "affine": True,
                     "track_running_stats": True}
    assert ch[1]["affine"] is False and ch[1]["type"] == "BatchNorm2d"
    assert ch[3] == {"type": "InstanceNorm1d", "name": "3", "num_features": 3, "eps": 1e-5, "affine": True,
                     "track_running_stats": True}
    assert ch[4]["affine"] is False
    assert ch[5] == {"type": "GroupNorm", "name": "5", "num_groups": 1, "num_channels": 3, "eps": 1e-4, "affine": True}
    assert ch[6]["affine"] is False
    assert ch[7] == {"type": "LayerNorm", "name": "7", "normalized_shape": [4, 5], "eps": 1e-5,
                     "elementwise_affine": True}
    assert ch[8]["normalized_shape"] == [5] and ch[8]["elementwise_affine"] is False
    assert [c["type"] for c in ch[9:]] == ["Identity", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d",
                                           "AlphaDropout", "FeatureAlphaDropout"]
    assert all(set(c) == {"type", "name"} for c in ch[9:])
    _, _, _, tensors = continual_c.read_model_file(path)
    assert set(tensors) == set(net.state_dict())
    assert "1.weight" not in tensors and "1.running_mean" in tensors and "4.running_var" in tensors


def test_network_linear(tmp_path):
    j = continual_c.export(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2, bias=False)), os.path.join(str(tmp_path), "m"))
    assert j["children"][0] == {"type": "Linear", "name": "0", "in_features": 4, "out_features": 3, "bias": True,
                                "channel_dim": -1}
    assert j["children"][1]["bias"] is False


def test_root_leaf_and_subclass(tmp_path):
    j = continual_c.export(nn.Conv1d(2, 2, 3), os.path.join(str(tmp_path), "m"))
    assert j["type"] == "Conv1d" and j["name"] == ""

    class MySeq(nn.Sequential):
        pass

    class MyReLU(nn.ReLU):
        pass

    j = continual_c.export(MySeq(MyReLU()), os.path.join(str(tmp_path), "m"))
    assert j["type"] == "Sequential" and j["children"][0]["type"] == "ReLU"


def test_input_shape_int_and_invalid(tmp_path):
    path = os.path.join(str(tmp_path), "m")
    continual_c.export(nn.Conv1d(2, 2, 3), path, input_shape=2)
    assert continual_c.read_model_file(path)[1] == [2]
    with pytest.raises(ExportError):
        continual_c.export(nn.Conv1d(2, 2, 3), path, input_shape=(0, 3))


# ---- errors ---------------------------------------------------------------------------------------
def _err(module, tmp_path):
    with pytest.raises(ExportError) as e:
        continual_c.export(module, os.path.join(str(tmp_path), "m"))
    return str(e.value)


def test_unsupported_module_names_class_and_path(tmp_path):
    net = nn.Sequential(nn.Conv1d(2, 2, 3),
                        nn.Sequential(collections.OrderedDict([("rnn", nn.LSTM(2, 2, bidirectional=True))])))
    msg = _err(net, tmp_path)
    assert "LSTM" in msg and "'1.rnn'" in msg
    msg = _err(nn.Sequential(nn.MaxPool1d(2, return_indices=True)), tmp_path)
    assert "MaxPool1d" in msg and "'0'" in msg
    msg = _err(nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1)), tmp_path)
    assert "AdaptiveAvgPool2d" in msg and "'1'" in msg
    msg = _err(nn.Flatten(), tmp_path)
    assert "Flatten" in msg and "<root>" in msg


def test_subclass_with_own_forward_rejected(tmp_path):
    class Weird(nn.ReLU):
        def forward(self, x):
            return x * 2

    class WeirdSeq(nn.Sequential):
        def forward(self, x):
            return x

    assert "Weird" in _err(nn.Sequential(Weird()), tmp_path)
    assert "WeirdSeq" in _err(WeirdSeq(nn.ReLU()), tmp_path)


@pytest.mark.parametrize("mode", ["reflect", "circular"])
def test_conv_padding_mode_rejected(tmp_path, mode):
    msg = _err(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, padding_mode=mode)), tmp_path)
    assert mode in msg and "'0'" in msg and "Conv2d" in msg


def test_conv_temporal_dilation_rejected(tmp_path):
    msg = _err(nn.Sequential(nn.Identity(), nn.Conv3d(2, 2, 3, dilation=(2, 1, 1))), tmp_path)
    assert "dilation" in msg and "'1'" in msg
    continual_c.export(nn.Conv3d(2, 2, 3, dilation=(1, 2, 2)), os.path.join(str(tmp_path), "ok"))


def test_conv_same_padding_asymmetric_rejected(tmp_path):
    assert "same" in _err(nn.Conv1d(2, 2, 4, padding="same"), tmp_path)


def test_norm_without_running_stats_rejected(tmp_path):
    assert "track_running_stats" in _err(nn.Sequential(nn.BatchNorm2d(2, track_running_stats=False)), tmp_path)
    assert "InstanceNorm3d" in _err(nn.Sequential(nn.InstanceNorm3d(2)), tmp_path)


def test_softmax_without_dim_rejected(tmp_path):
    assert "dim" in _err(nn.Softmax(), tmp_path)


def test_extra_parameters_rejected(tmp_path):
    conv = nn.Conv1d(2, 2, 3)
    conv.register_buffer("extra", torch.zeros(2))
    assert "0.extra" in _err(nn.Sequential(conv), tmp_path)


def test_not_a_module(tmp_path):
    with pytest.raises(ExportError):
        continual_c.export(lambda x: x, os.path.join(str(tmp_path), "m"))


def test_continual_package_is_optional(tmp_path):
    """A plain torch.nn network exports in a process where `import continual` fails."""
    code = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "continual" or name.startswith("continual."):
            raise ImportError("blocked for the test")
        return None
sys.meta_path.insert(0, Block())
sys.path.insert(0, sys.argv[1])
import torch.nn as nn, continual_c
continual_c.export(nn.Sequential(nn.Conv1d(2, 2, 3), nn.ReLU()), sys.argv[2], input_shape=(2,))
assert "continual" not in sys.modules
print("ok")
"""
    repo_python = os.path.dirname(os.path.dirname(continual_c.__file__))
    out = subprocess.run([sys.executable, "-c", code, repo_python, os.path.join(str(tmp_path), "m")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# ---- continual (reference package) modules ------------------------------------------------------
def test_co_modules_json(tmp_path):
    co = pytest.importorskip("continual")
    net = co.Sequential(
        co.Conv3d(3, 4, 3, padding=(1, 1, 1), padding_mode="zeros", temporal_fill="replicate"),
        nn.BatchNorm3d(4),
        co.Conv3d(4, 4, (3, 1, 1), stride=(2, 1, 1)),
        co.Linear(4, 5, channel_dim=1),
        co.Delay(2),
        co.Delay(1, auto_shrink=True),
        co.Delay(1, auto_shrink="centered", temporal_fill="replicate"),
        co.Delay(2, auto_shrink="lagging"),
        co.Identity(),
    )
    j = continual_c.export(net, os.path.join(str(tmp_path), "m"))
    ch = j["children"]
    assert ch[0]["type"] == "Conv3d" and ch[0]["temporal_fill"] == "replicate" and ch[0]["padding_mode"] == "zeros"
    assert ch[1]["type"] == "BatchNorm3d"
    assert ch[2]["stride"] == [2, 1, 1] and ch[2]["temporal_fill"] == "zeros"
    assert ch[3] == {"type": "Linear", "name": "3", "in_features": 4, "out_features": 5, "bias": True, "channel_dim": 1}
    assert ch[4] == {"type": "Delay", "name": "4", "delay": 2, "temporal_fill": "zeros", "auto_shrink": False}
    assert ch[5]["auto_shrink"] is True
    assert ch[6]["auto_shrink"] == "centered" and ch[6]["temporal_fill"] == "replicate"
    assert ch[7]["auto_shrink"] == "lagging"
    assert ch[8] == {"type": "Identity", "name": "8"}


def test_co_converted_sequential_linear_keeps_channel_dim(tmp_path):
    co = pytest.importorskip("continual")
    net = co.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Linear(3, 4))  # converted by co
    j = continual_c.export(net, os.path.join(str(tmp_path), "m"))
    assert [c["type"] for c in j["children"]] == ["Conv1d", "ReLU", "Linear"]
    assert j["children"][2]["channel_dim"] == -1


@pytest.mark.parametrize("reduce", ["sum", "mul", "max", "concat"])
def test_co_broadcast_reduce_json(tmp_path, reduce):
    co = pytest.importorskip("continual")
    net = co.BroadcastReduce(co.Conv1d(2, 2, 5, padding=2), co.Conv1d(2, 2, 3, padding=1), co.Conv1d(2, 2, 1),
                             reduce=reduce)
    path = os.path.join(str(tmp_path), "m")
    j = continual_c.export(net, path)
    assert j["type"] == "BroadcastReduce" and j["reduce"] == reduce
    b0, b1, b2 = j["children"]
    assert b0["type"] == "Conv1d"
    # auto-delay wrapped the faster branches: Sequential(branch, Delay)
    assert b1["type"] == "Sequential" and [c["type"] for c in b1["children"]] == ["Conv1d", "Delay"]
    assert b1["children"][1]["delay"] == 1 and b2["children"][1]["delay"] == 2
    _, _, _, tensors = continual_c.read_model_file(path)
    assert set(tensors) == set(net.state_dict()) and "1.0.weight" in tensors


@pytest.mark.parametrize("shrink,delay,auto", [(False, 1, False), ("centered", 1, "centered"), ("lagging", 2, "lagging")])
def test_co_residual_json(tmp_path, shrink, delay, auto):
    co = pytest.importorskip("continual")
    conv = co.Conv1d(2, 2, 3, padding=1 if shrink is False else 0)
    j = continual_c.export(co.Residual(conv, residual_shrink=shrink), os.path.join(str(tmp_path), "m"))
    assert j["type"] == "BroadcastReduce" and j["reduce"] == "sum"
    res, mod = j["children"]
    assert res["type"] == "Delay" and res["delay"] == delay and res["auto_shrink"] == auto
    assert mod["type"] == "Conv1d" and mod["name"] == "1"


def test_co_errors(tmp_path):
    co = pytest.importorskip("continual")
    # custom reduce
    msg = _err(co.BroadcastReduce(co.Conv1d(2, 2, 1), co.Conv1d(2, 2, 1), reduce=lambda xs: xs[0]), tmp_path)
    assert "reduce" in msg and "<root>" in msg
    # an anonymous Lambda has no name a C callback could be registered under
    assert "Lambda" in _err(co.Sequential(co.Lambda(lambda x: x)), tmp_path)
    # grouping dispatch
    msg = _err(co.Sequential(co.Broadcast(2), co.ParallelDispatch([[0, 1], 1])), tmp_path)
    assert "ParallelDispatch" in msg and "'1'" in msg


def test_description_is_stored_and_shown(tmp_path):
    """export(description=...) is kept in the file, given back by the binding and by `continual info`."""
    import subprocess

    path = str(tmp_path / "d.safetensors")
    continual_c.export(nn.Sequential(nn.Conv1d(2, 3, 1)), path, input_shape=(2,), description="paper: 0.17 GFLOPs")
    assert continual_c.load(path).description == "paper: 0.17 GFLOPs"
    cli = os.path.join(os.path.dirname(continual_c.library_path()), "continual")
    if os.path.exists(cli):
        out = subprocess.run([cli, "info", path], capture_output=True, text=True, check=True).stdout
        assert "description   paper: 0.17 GFLOPs" in out
    with pytest.raises(continual_c.ExportError, match="description"):
        continual_c.export(nn.Conv1d(2, 3, 1), path, description="x" * 5000)
