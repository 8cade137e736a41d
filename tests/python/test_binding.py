"""The ctypes binding: loading, errors, properties, input conversion, object lifetimes."""
import gc
import os

import numpy as np
import pytest
import torch
from torch import nn

import continual_c
from continual_c import Error
from helpers import export_load, rewrite_network, seed, torch_forward, write_model


def _conv_net():
    seed(30)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, (3, 1), stride=(2, 1))).eval()


def test_error_is_runtime_error_with_status(tmp_path):
    with pytest.raises(Error) as e:
        continual_c.load(os.path.join(str(tmp_path), "missing.safetensors"))
    assert isinstance(e.value, RuntimeError)
    assert e.value.status == 3 and e.value.status_name == "CO_ERR_IO"
    assert str(e.value).startswith("CO_ERR_IO: ") and e.value.message


def test_load_garbage_is_format_error(tmp_path):
    p = os.path.join(str(tmp_path), "bad")
    with open(p, "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(Error) as e:
        continual_c.load(p)
    assert e.value.status_name == "CO_ERR_FORMAT"
    with open(p, "wb") as f:
        f.write(b"\x01\x02")
    with pytest.raises(Error) as e:
        continual_c.load(p)
    assert e.value.status_name == "CO_ERR_FORMAT"


def test_load_unknown_module_is_network_error(tmp_path):
    p = write_model(os.path.join(str(tmp_path), "m"), {"type": "Sequential", "name": "", "children": [
        {"type": "ReLU", "name": "0"}, {"type": "FancyLayer", "name": "1"}]})
    with pytest.raises(Error) as e:
        continual_c.load(p)
    assert e.value.status_name == "CO_ERR_NETWORK" and "FancyLayer" in e.value.message


def test_load_tensor_errors(tmp_path):
    net = _conv_net()
    p = os.path.join(str(tmp_path), "m")
    continual_c.export(net, p)
    _, _, meta, tensors = continual_c.read_model_file(p)
    t = dict(tensors)
    del t["0.bias"]
    continual_c.write_safetensors(p, t, meta)
    with pytest.raises(Error) as e:
        continual_c.load(p)
    assert e.value.status_name == "CO_ERR_TENSOR" and "0.bias" in e.value.message
    t = dict(tensors)
    t["stray"] = np.zeros(3, np.float32)
    continual_c.write_safetensors(p, t, meta)
    with pytest.raises(Error) as e:
        continual_c.load(p)
    assert e.value.status_name == "CO_ERR_TENSOR" and "stray" in e.value.message
    t = dict(tensors)
    t["0.weight"] = np.zeros((4, 3, 3, 2), np.float32)
    continual_c.write_safetensors(p, t, meta)
    with pytest.raises(Error) as e:
        continual_c.load(p)
    assert e.value.status_name == "CO_ERR_TENSOR"


def test_load_bad_hyper_parameter(tmp_path):
    p = os.path.join(str(tmp_path), "m")
    continual_c.export(_conv_net(), p)

    def mutate(net):
        net["children"][0]["bogus"] = 1
        return net

    rewrite_network(p, mutate)
    with pytest.raises(Error) as e:
        continual_c.load(p)
    assert e.value.status_name == "CO_ERR_NETWORK" and "bogus" in e.value.message


def test_properties_nodes_plan(tmp_path):
    net = _conv_net()
    model = export_load(net, tmp_path, input_shape=(3, 5))
    assert model.frame_shape == (3, 5)
    assert (model.receptive_field, model.delay, model.stride, model.padding) == (5, 3, 2, 1)
    assert model.temporal == {"receptive_field": 5, "delay": 3, "stride": 2, "padding": 1}
    assert model.param_count == sum(p.numel() for p in net.parameters())
    nodes = model.nodes
    assert [(n["path"], n["type"], n["depth"], n["parent"]) for n in nodes] == [
        ("", "Sequential", 0, -1), ("0", "Conv2d", 1, 0), ("1", "ReLU", 1, 0), ("2", "Conv2d", 1, 0)]
    assert nodes[1]["params"] == 4 * 3 * 9 + 4 and nodes[0]["params"] == model.param_count
    assert (nodes[3]["receptive_field"], nodes[3]["stride"], nodes[3]["delay"]) == (3, 2, 2)
    info = model.plan_info(2)
    assert info["output_frame"] == (2, 2, 5)
    assert info["state_bytes"] > 0 and info["arena_bytes"] >= info["state_bytes"] and info["num_ops"] >= 3
    assert info["macs_per_step"] > 0
    assert model.plan_info(1, (3, 7))["output_frame"] == (1, 2, 7)
    s = model.stream(3)
    assert s.input_shape == (3, 3, 5) and s.output_shape == (3, 2, 5)


def test_no_frame_shape_in_file(tmp_path):
    model = export_load(_conv_net(), tmp_path)
    assert model.frame_shape is None
    with pytest.raises(Error) as e:
        model.stream()
    assert e.value.status_name == "CO_ERR_SHAPE"
    with pytest.raises(Error):
        model.plan_info(1)
    s = model.stream(1, (3, 6))
    assert s.input_shape == (1, 3, 6)


def test_input_conversion(tmp_path):
    net = _conv_net()
    model = export_load(net, tmp_path, input_shape=(3, 5))
    x = torch.randn(2, 3, 8, 5)
    ref = torch_forward(net, x).numpy()
    y = model.forward(x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    np.testing.assert_allclose(y, ref, atol=1e-5)
    np.testing.assert_allclose(model.forward(x.double()), ref, atol=1e-5)
    np.testing.assert_allclose(model.forward(x.numpy().astype(np.float64)), ref, atol=1e-5)
    xt = x.transpose(1, 3).contiguous().transpose(1, 3)  # non-contiguous tensor
    assert not xt.is_contiguous()
    np.testing.assert_allclose(model.forward(xt), ref, atol=1e-5)
    xn = np.asfortranarray(x.numpy())
    np.testing.assert_allclose(model.forward(xn), ref, atol=1e-5)
    s = model.stream(2)
    outs = [s.forward_step(x[:, :, t].half().float()) for t in range(4)]
    assert outs[3] is not None and outs[3].dtype == np.float32


def test_shape_errors(tmp_path):
    model = export_load(_conv_net(), tmp_path, input_shape=(3, 5))
    with pytest.raises(Error) as e:
        model.forward(np.zeros((2, 4, 8, 5), np.float32))
    assert e.value.status_name == "CO_ERR_SHAPE"
    s = model.stream(2)
    before = s.save_state()
    for bad in [np.zeros((1, 3, 5)), np.zeros((2, 3, 6)), np.zeros((2, 3, 5, 1))]:
        with pytest.raises(Error) as e:
            s.forward_step(bad)
        assert e.value.status_name == "CO_ERR_SHAPE"
    with pytest.raises(Error):
        s.forward_steps(np.zeros((2, 3, 5)))
    with pytest.raises(Error):
        s.forward_steps(np.zeros((2, 2, 4, 5)))
    assert s.save_state() == before


def test_state_errors(tmp_path):
    m1 = export_load(_conv_net(), tmp_path, input_shape=(3, 5), name="a")
    seed(31)
    m2 = export_load(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)), tmp_path, input_shape=(3, 5), name="b")
    s1 = m1.stream(2)
    s1.forward_step(np.ones((2, 3, 5)))
    st = s1.save_state()
    with pytest.raises(Error) as e:
        m2.stream(2).load_state(st)
    assert e.value.status_name == "CO_ERR_STATE"
    with pytest.raises(Error) as e:
        m1.stream(1).load_state(st)
    assert e.value.status_name == "CO_ERR_STATE"
    with pytest.raises(Error) as e:
        m1.stream(2, (3, 6)).load_state(st)
    assert e.value.status_name == "CO_ERR_STATE"
    s3 = m1.stream(2)
    fresh = s3.save_state()
    with pytest.raises(Error):
        s3.load_state(st[:-4])
    assert s3.save_state() == fresh  # left as it was
    s3.load_state(st)
    assert s3.save_state() == st


def test_clean_state_equals_fresh(tmp_path):
    model = export_load(_conv_net(), tmp_path, input_shape=(3, 5))
    s = model.stream(1)
    fresh = s.save_state()
    for t in range(5):
        s.forward_step(np.random.randn(1, 3, 5))
    assert s.save_state() != fresh
    s.clean_state()
    assert s.save_state() == fresh


def test_stream_keeps_model_alive(tmp_path):
    net = _conv_net()
    model = export_load(net, tmp_path, input_shape=(3, 5))
    s = model.stream(1)
    del model
    gc.collect()
    x = torch.randn(1, 3, 9, 5)
    y = s.forward_steps(x, pad_end=True)
    np.testing.assert_allclose(y, torch_forward(net, x).numpy(), atol=1e-5)


def test_close(tmp_path):
    model = export_load(_conv_net(), tmp_path, input_shape=(3, 5))
    with model.stream() as s:
        s.forward_step(np.zeros((1, 3, 5)))
    s.close()
    with pytest.raises(Error):
        s.forward_step(np.zeros((1, 3, 5)))
    model.close()
    model.close()
    with pytest.raises(Error):
        model.forward(np.zeros((1, 3, 4, 5)))


def test_load_memory(tmp_path):
    net = _conv_net()
    p = os.path.join(str(tmp_path), "m")
    continual_c.export(net, p, input_shape=(3, 5))
    model = continual_c.load_memory(open(p, "rb").read())
    x = torch.randn(1, 3, 6, 5)
    np.testing.assert_allclose(model.forward(x), torch_forward(net, x).numpy(), atol=1e-5)
    with pytest.raises(Error):
        continual_c.load_memory(b"12345678")


def test_no_output_returns_none(tmp_path):
    model = export_load(nn.Conv1d(2, 2, 5), tmp_path, input_shape=(2,))
    s = model.stream()
    assert s.forward_steps(np.zeros((1, 2, 4))) is None
    assert s.forward_step(np.zeros((1, 2))) is not None


def test_stream_survives_model_close_and_cycles(tmp_path):
    """Closing the model (or collecting it in a garbage cycle before its streams) never frees the C
    model under a live stream."""
    net = _conv_net()
    model = export_load(net, tmp_path, input_shape=(3, 5))
    s = model.stream(1)
    model.close()
    x = torch.randn(1, 3, 7, 5)
    np.testing.assert_allclose(s.forward_steps(x, pad_end=True), torch_forward(net, x).numpy(), atol=1e-5)
    with pytest.raises(Error):
        model.stream(1)
    s.close()
    for _ in range(20):
        m = continual_c.load(model.path)
        st = [m.stream(1) for _ in range(3)]
        cycle = [m, st]
        cycle.append(cycle)
        for k in st:
            k.cycle = cycle
        del m, st, cycle, k
        gc.collect()
