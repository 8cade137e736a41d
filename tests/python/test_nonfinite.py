"""NaN and inf: for every module of the table, the positions of NaN, +inf and -inf in continual-c's
output equal torch's, in forward and in steps (issue "Reliability", B2: a module that maps NaN to 0
where torch keeps it, or stays finite where torch overflows, is a silent wrong number).

Each case is (name, torch module, frame shape); the clip holds ordinary values plus NaN, +inf, -inf,
a huge value (3e38, so that sums and squares overflow) and its negative at a few positions. The
modules are frame-local or stride-1 temporal, so forward and the stepped frames cover the same
outputs; the count of cases is asserted so that the table cannot silently shrink.
"""
import numpy as np
import pytest
import torch
from torch import nn

import continual_c
from helpers import export_load, frames, to_np

co = pytest.importorskip("continual")

_ACTIVATIONS = [
    nn.ReLU(), nn.ReLU6(), nn.Sigmoid(), nn.Tanh(), nn.SiLU(), nn.Mish(), nn.Hardswish(), nn.Hardsigmoid(),
    nn.SELU(), nn.LogSigmoid(), nn.Softsign(), nn.Tanhshrink(), nn.GELU(), nn.GELU(approximate="tanh"),
    nn.ELU(0.7), nn.CELU(1.3), nn.LeakyReLU(0.2), nn.Hardtanh(-2.0, 3.0), nn.Threshold(0.1, -4.0),
    nn.RReLU(0.1, 0.3), nn.Hardshrink(0.4), nn.Softshrink(0.4), nn.Softplus(2.0, 10.0), nn.PReLU(3),
    nn.GLU(dim=1), nn.Softmax(dim=1), nn.Softmin(dim=1), nn.LogSoftmax(dim=1),
]


def _bn(cls, c):
    m = cls(c)
    with torch.no_grad():
        m.running_mean.uniform_(-1, 1)
        m.running_var.uniform_(0.5, 2)
        if m.weight is not None:
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-1, 1)
    return m


def _cases():
    cases = [("act:%s" % type(a).__name__ + ("" if i == 0 else str(i)), a, (4,) if isinstance(a, nn.GLU) else (3,))
             for i, a in enumerate(_ACTIVATIONS)]
    cases += [
        ("BatchNorm1d", _bn(nn.BatchNorm1d, 3), (3,)),
        ("BatchNorm2d", _bn(nn.BatchNorm2d, 3), (3, 4)),
        ("InstanceNorm1d", _bn(lambda c: nn.InstanceNorm1d(c, affine=True, track_running_stats=True), 3), (3,)),
        ("GroupNorm", nn.GroupNorm(1, 3), (3,)),
        ("LayerNorm", nn.LayerNorm([4]), (3, 4)),
        ("Conv1d", co.Conv1d(3, 2, 3, padding=1), (3,)),
        ("Conv2d", co.Conv2d(3, 2, (2, 3), padding=(1, 1)), (3, 4)),
        ("Conv3d", co.Conv3d(3, 2, (1, 2, 2)), (3, 3, 3)),
        ("Linear", nn.Linear(3, 2), (3,)),
        ("AvgPool1d", co.AvgPool1d(2, stride=1), (3,)),
        ("MaxPool1d", co.MaxPool1d(2, stride=1), (3,)),
        ("AvgPool2d", co.AvgPool2d((1, 2)), (3, 4)),
        ("MaxPool2d", co.MaxPool2d((1, 2)), (3, 4)),
        ("AdaptiveAvgPool2d", co.AdaptiveAvgPool2d((1, 1), kernel_size=2), (3, 4)),
        ("AdaptiveMaxPool2d", co.AdaptiveMaxPool2d((1, 1), kernel_size=2), (3, 4)),
        ("RNN-tanh", nn.RNN(3, 4), (3,)),
        ("RNN-relu", nn.RNN(3, 4, nonlinearity="relu"), (3,)),
        ("GRU", nn.GRU(3, 4), (3,)),
        ("LSTM", nn.LSTM(3, 4), (3,)),
        ("Lambda-relu", co.Lambda(torch.relu), (3,)),
        ("Lambda-sqrt", co.Lambda(torch.sqrt), (3,)),
        ("Add", co.Add(2.0), (3,)),
        ("Multiply", co.Multiply(-3.0), (3,)),
    ]
    return cases


CASES = _cases()
_HUGE = 3.0e38


def _clip(frame_shape, T=6, B=2):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(B, frame_shape[0], T, *frame_shape[1:], generator=g)
    flat = x.view(-1)
    n = flat.numel()
    for pos, v in [(1, float("nan")), (n // 3, float("inf")), (n // 2, -float("inf")), (2 * n // 3, _HUGE),
                   (n - 2, -_HUGE)]:
        flat[pos] = v
    return x


class _TorchRNN(nn.Module):
    """(B, C, T) clips through a torch RNN (which takes (T, B, C))."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x.permute(2, 0, 1))[0].permute(1, 2, 0)


def _torch_forward(m, x):
    with torch.no_grad():
        if isinstance(m, nn.RNNBase):
            return _TorchRNN(m)(x)
        if isinstance(m, nn.Linear):
            return m(x.transpose(1, 2)).transpose(1, 2)
        return m(x)


def _kinds(a):
    a = to_np(a)
    return np.isnan(a), np.isposinf(a), np.isneginf(a)


def _same_nonfinite(got, want, what):
    for k, g, w in zip(("NaN", "+inf", "-inf"), _kinds(got), _kinds(want)):
        assert g.shape == w.shape, "%s: shape %s vs %s" % (what, g.shape, w.shape)
        assert (g == w).all(), "%s: %s at %d positions where torch has %d (%d differ)" % (
            what, k, int(g.sum()), int(w.sum()), int((g != w).sum()))


def test_table_is_complete():
    assert len(CASES) >= 50, len(CASES)


@pytest.mark.parametrize("name,module,frame_shape", CASES, ids=[c[0] for c in CASES])
def test_nonfinite_positions_match_torch(tmp_path, name, module, frame_shape):
    module.eval()
    x = _clip(frame_shape)
    want = _torch_forward(module, x)
    model = export_load(module, tmp_path, input_shape=frame_shape)
    _same_nonfinite(model.forward(x), want, name + " forward")
    # steps: the stepped outputs are forward's frames from the delay on (all modules here have stride 1)
    s = model.stream(x.shape[0], frame_shape)
    outs = [y for y in (s.forward_step(f) for f in frames(to_np(x))) if y is not None]
    assert outs, name + ": no step output"
    stepped = np.stack(outs, axis=2)
    if isinstance(module, nn.GroupNorm):  # Q11: a step normalises its own frame
        want = torch.stack([_torch_forward(module, x[:, :, t:t + 1])[:, :, 0] for t in range(x.shape[2])], dim=2)
    if isinstance(module, (co.AdaptiveAvgPool2d, co.AdaptiveMaxPool2d)):  # Q26: steps pool a window
        module.clean_state()
        with torch.no_grad():
            ref = [module.forward_step(x[:, :, t]) for t in range(x.shape[2])]
        want = torch.stack([r for r in ref if r is not None], dim=2)
    _same_nonfinite(stepped, to_np(want)[:, :, :stepped.shape[2]], name + " steps")  # stride 1: a prefix
