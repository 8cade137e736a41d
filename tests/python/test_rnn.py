"""Recurrent modules: co.RNN / co.GRU / co.LSTM and torch.nn.RNN / GRU / LSTM (exported as co.continual()
converts them: clips are (B, C, T) whatever batch_first says), in all three modes, against torch run
from a zero state, and against the reference's steps."""
import pytest
import torch
from torch import nn

import continual_c
from co_helpers import co_steps, co_steps_clip
from helpers import assert_close, check_modes, export_load, seed, to_np


def torch_ref(kind, kw, x, weights_from):
    """The torch.nn module of `kind` with the weights of `weights_from`, run over x (B, C, T) -> (B, H, T)."""
    cls = {"RNN": nn.RNN, "GRU": nn.GRU, "LSTM": nn.LSTM}[kind]
    t = cls(batch_first=True, **kw)
    t.load_state_dict({k: v for k, v in weights_from.state_dict().items()})
    t.eval()
    with torch.no_grad():
        return t(x.permute(0, 2, 1))[0].permute(0, 2, 1)


CONFIGS = [
    ("RNN", dict(input_size=3, hidden_size=5)),
    ("RNN", dict(input_size=3, hidden_size=4, num_layers=3, nonlinearity="relu")),
    ("RNN", dict(input_size=2, hidden_size=4, num_layers=2, bias=False)),
    ("GRU", dict(input_size=3, hidden_size=5)),
    ("GRU", dict(input_size=4, hidden_size=3, num_layers=3, bias=False)),
    ("LSTM", dict(input_size=3, hidden_size=5)),
    ("LSTM", dict(input_size=3, hidden_size=6, num_layers=2, proj_size=2)),
    ("LSTM", dict(input_size=2, hidden_size=4, num_layers=4, proj_size=3, bias=False)),
    ("LSTM", dict(input_size=3, hidden_size=4, num_layers=2, dropout=0.5)),
]


def _id(c):
    kind, kw = c
    return kind + "".join(" %s=%s" % (k, v) for k, v in kw.items() if k not in ("input_size", "hidden_size"))


@pytest.mark.parametrize("kind, kw", CONFIGS, ids=[_id(c) for c in CONFIGS])
def test_torch_rnn_all_modes(tmp_path, kind, kw):
    """torch.nn.RNN/GRU/LSTM (batch_first=False, as users build them): forward, steps from the zero state,
    forward_steps, update_state=False, save/restore mid-stream (check_modes)."""
    seed(200)
    rnn = {"RNN": nn.RNN, "GRU": nn.GRU, "LSTM": nn.LSTM}[kind](**kw)
    rnn.eval()
    x = torch.randn(3, kw["input_size"], 9)
    model = export_load(rnn, tmp_path, input_shape=(kw["input_size"],))
    assert model.temporal == {"receptive_field": 1, "delay": 0, "stride": 1, "padding": 0}
    assert model.param_count == sum(p.numel() for p in rnn.parameters())
    net = continual_c.to_network(rnn)[0]
    assert net["type"] == kind and net["batch_first"] is False
    check_modes(model, x, torch_ref(kind, kw, x, rnn))


@pytest.mark.parametrize("kind, kw", CONFIGS, ids=[_id(c) for c in CONFIGS])
def test_co_rnn_matches_reference(tmp_path, kind, kw):
    """co.RNN/GRU/LSTM: forward == torch == co.forward()[0]; steps == co.forward_step; forward_steps == co's."""
    co = pytest.importorskip("continual")
    seed(201)
    net = getattr(co, kind)(**kw)
    net.eval()
    x = torch.randn(2, kw["input_size"], 8)
    model = export_load(net, tmp_path, input_shape=(kw["input_size"],))
    ref = torch_ref(kind, kw, x, net)
    with torch.no_grad():
        assert_close(net(x)[0], ref, 1e-6, "co forward is torch's")
    theirs = co_steps(net, x)
    check_modes(model, x, ref, steps_oracle=lambda n: theirs[n - 1])
    s = model.stream(2, (kw["input_size"],))
    assert_close(s.forward_steps(to_np(x)), co_steps_clip(net, x), 1e-5, "forward_steps vs co")


def test_rnn_state_continues_across_calls(tmp_path):
    """The hidden state carries over: forward_steps on the first part, then steps, then forward_steps again
    equal one torch run over the whole clip; the state saved mid-stream resumes it in another stream; a clean
    stream starts from zeros again."""
    seed(202)
    lstm = nn.LSTM(3, 5, num_layers=2, proj_size=2)
    x = torch.randn(2, 3, 12)
    ref = to_np(torch_ref("LSTM", dict(input_size=3, hidden_size=5, num_layers=2, proj_size=2), x, lstm))
    model = export_load(lstm, tmp_path, input_shape=(3,))
    s = model.stream(2, (3,))
    a = s.forward_steps(to_np(x[:, :, :4]))
    b = [s.forward_step(to_np(x[:, :, t])) for t in range(4, 7)]
    saved = s.save_state()
    c = s.forward_steps(to_np(x[:, :, 7:]))
    assert_close(a, ref[:, :, :4], 1e-5, "first forward_steps")
    for i, y in enumerate(b):
        assert_close(y, ref[:, :, 4 + i], 1e-5, "step %d" % (5 + i))
    assert_close(c, ref[:, :, 7:], 1e-5, "second forward_steps")
    s2 = model.stream(2, (3,))
    s2.load_state(saved)
    assert_close(s2.forward_steps(to_np(x[:, :, 7:])), ref[:, :, 7:], 1e-5, "restored stream")
    s2.clean_state()
    assert_close(s2.forward_steps(to_np(x)), ref, 1e-5, "after clean_state")
    # a peek does not advance the recurrence
    s2.clean_state()
    p1 = s2.forward_step(to_np(x[:, :, 0]), update_state=False)
    p2 = s2.forward_step(to_np(x[:, :, 0]), update_state=False)
    assert_close(p1, p2, 0, "peeks")
    assert_close(s2.forward_step(to_np(x[:, :, 0])), ref[:, :, 0], 1e-5, "first real step")


def test_rnn_json_keys():
    """Exactly the keys of docs/format.md: nonlinearity only for RNN, proj_size only for LSTM."""
    assert continual_c.to_network(nn.RNN(2, 3, nonlinearity="relu"))[0] == {
        "type": "RNN", "name": "", "input_size": 2, "hidden_size": 3, "num_layers": 1, "bias": True,
        "batch_first": False, "bidirectional": False, "dropout": 0.0, "nonlinearity": "relu"}
    assert continual_c.to_network(nn.GRU(2, 3, batch_first=True))[0] == {
        "type": "GRU", "name": "", "input_size": 2, "hidden_size": 3, "num_layers": 1, "bias": True,
        "batch_first": True, "bidirectional": False, "dropout": 0.0}
    assert continual_c.to_network(nn.LSTM(2, 3, proj_size=1))[0]["proj_size"] == 1


def test_rnn_export_errors():
    with pytest.raises(continual_c.ExportError, match=r"LSTM.*'1'.*bidirectional"):
        continual_c.to_network(nn.Sequential(nn.Conv1d(2, 2, 1), nn.LSTM(2, 3, bidirectional=True)))

    class MyGRU(nn.GRU):
        def forward(self, x, h=None):
            return super().forward(x, h)

    with pytest.raises(continual_c.ExportError, match="own forward"):
        continual_c.to_network(MyGRU(2, 3))


def test_rnn_weights_shape_checked(tmp_path):
    """A file whose LSTM weights do not match the recorded sizes is refused with a named error."""
    lstm = nn.LSTM(2, 3)
    model_ok = export_load(lstm, tmp_path, input_shape=(2,))
    assert model_ok.param_count == sum(p.numel() for p in lstm.parameters())

    def mutate(net):
        net["hidden_size"] = 4
        return net

    with pytest.raises(continual_c.Error) as e:
        export_load(lstm, tmp_path, input_shape=(2,), name="bad.safetensors", mutate=mutate)
    assert e.value.status_name == "CO_ERR_TENSOR" and "weight_ih_l0" in e.value.message


test_rnn_json_keys = pytest.mark.no_lib(test_rnn_json_keys)
test_rnn_export_errors = pytest.mark.no_lib(test_rnn_export_errors)
