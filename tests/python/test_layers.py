"""Frame-local layers (torch.nn oracle): Linear, activations, norms, dropouts, Identity."""
import os

import numpy as np
import pytest
import torch
from torch import nn

from helpers import check_modes, export_load, seed, to_np, torch_forward, write_model

import continual_c


def _act_cases():
    return [
        nn.ReLU(), nn.ReLU6(), nn.Sigmoid(), nn.Tanh(), nn.SiLU(), nn.Mish(), nn.Hardswish(), nn.Hardsigmoid(),
        nn.SELU(), nn.LogSigmoid(), nn.Softsign(), nn.Tanhshrink(), nn.GELU(), nn.GELU(approximate="tanh"),
        nn.ELU(), nn.ELU(alpha=0.5), nn.CELU(alpha=1.5), nn.LeakyReLU(), nn.LeakyReLU(0.2), nn.Hardtanh(),
        nn.Hardtanh(-0.5, 2.0), nn.Threshold(0.1, 20.0), nn.RReLU(), nn.RReLU(0.1, 0.3), nn.Hardshrink(),
        nn.Hardshrink(0.3), nn.Softshrink(), nn.Softshrink(0.7), nn.Softplus(), nn.Softplus(2.0, 5.0),
        nn.Softplus(0.5, 1.0), nn.PReLU(), nn.PReLU(4), nn.GLU(1), nn.GLU(-1), nn.GLU(3), nn.Softmax(1),
        nn.Softmax(-1), nn.Softmin(1), nn.Softmin(3), nn.LogSoftmax(1), nn.LogSoftmax(-1), nn.Softmax2d(),
    ]


ACTS = _act_cases()


@pytest.mark.parametrize("act", ACTS, ids=["%d-%s" % (i, repr(a)) for i, a in enumerate(ACTS)])
def test_activation(tmp_path, act):
    seed(10)
    if isinstance(act, nn.PReLU):
        with torch.no_grad():
            act.weight.uniform_(-0.5, 0.5)
    x = torch.randn(2, 4, 6, 6) * 3  # (B, C, T, H): values beyond the kinks/thresholds
    act.eval()
    model = export_load(act, tmp_path, input_shape=(4, 6))
    assert (model.receptive_field, model.delay, model.stride, model.padding) == (1, 0, 1, 0)
    check_modes(model, x, torch_forward(act, x), two_streams=False)


def test_activations_after_conv_in_sequential(tmp_path):
    seed(11)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GELU(), nn.Conv2d(4, 4, (2, 1)), nn.Hardswish(),
                        nn.PReLU(4), nn.Softmax(1))
    x = torch.randn(2, 3, 7, 5)
    model = export_load(net, tmp_path, input_shape=(3, 5))
    check_modes(model, x, torch_forward(net, x))


def test_linear_last_dim(tmp_path):
    """torch.nn.Linear (channel_dim -1) on (B, C, T, F): projects F, in every mode (frame-local)."""
    seed(12)
    lin = nn.Linear(5, 3)
    x = torch.randn(2, 4, 6, 5)
    model = export_load(lin, tmp_path, input_shape=(4, 5))
    check_modes(model, x, torch_forward(lin, x))
    lin = nn.Linear(5, 3, bias=False)
    model = export_load(lin, tmp_path, input_shape=(4, 5), name="nobias")
    check_modes(model, x, torch_forward(lin, x))


@pytest.mark.parametrize("bias", [True, False])
def test_linear_channel_dim_1(tmp_path, bias):
    """Linear with channel_dim 1 on (B, C, T) and (B, C, T, H): projects C (what co.Linear(channel_dim=1)
    does), written by hand so that no `continual` package is needed."""
    seed(13)
    lin = nn.Linear(4, 3, bias=bias)
    tensors = {"weight": lin.weight}
    if bias:
        tensors["bias"] = lin.bias
    net = {"type": "Linear", "name": "", "in_features": 4, "out_features": 3, "bias": bias, "channel_dim": 1}
    path = write_model(os.path.join(str(tmp_path), "lin.safetensors"), net, tensors, frame_shape=(4,))
    model = continual_c.load(path)
    for shape in [(2, 4, 7), (2, 4, 5, 3)]:
        x = torch.randn(*shape)
        ref = torch_forward(lin, x.movedim(1, -1)).movedim(-1, 1)
        check_modes(model, x, ref)


def _bn(cls, c, affine=True, **kw):
    m = cls(c, affine=affine, **kw)
    with torch.no_grad():
        m.running_mean.normal_()
        m.running_var.uniform_(0.3, 3.0)
        if affine:
            m.weight.normal_()
            m.bias.normal_()
    m.num_batches_tracked.fill_(3)
    return m.eval()


NORMS = [
    ("bn1d", lambda: _bn(nn.BatchNorm1d, 4), (2, 4, 7)),
    ("bn1d-noaffine-eps", lambda: _bn(nn.BatchNorm1d, 4, affine=False, eps=1e-2), (2, 4, 7)),
    ("bn2d", lambda: _bn(nn.BatchNorm2d, 4), (2, 4, 6, 5)),
    ("bn3d", lambda: _bn(nn.BatchNorm3d, 4), (2, 4, 5, 3, 4)),
    ("in1d", lambda: _bn(nn.InstanceNorm1d, 4, track_running_stats=True), (2, 4, 7)),
    ("in2d-affine", lambda: _bn(nn.InstanceNorm2d, 4, track_running_stats=True), (2, 4, 6, 5)),
    ("in3d-noaffine", lambda: _bn(nn.InstanceNorm3d, 4, affine=False, track_running_stats=True), (2, 4, 5, 3, 4)),
    ("ln-last", lambda: nn.LayerNorm(5), (2, 4, 6, 5)),
    ("ln-last2", lambda: nn.LayerNorm([3, 4], eps=1e-3), (2, 4, 5, 3, 4)),
    ("ln-noaffine", lambda: nn.LayerNorm(4, elementwise_affine=False), (2, 3, 6, 4)),
]


@pytest.mark.parametrize("name,make,shape", NORMS, ids=[n[0] for n in NORMS])
def test_norm_frame_local(tmp_path, name, make, shape):
    seed(14)
    m = make().eval()
    if isinstance(m, nn.LayerNorm) and m.elementwise_affine:
        with torch.no_grad():
            m.weight.normal_()
            m.bias.normal_()
    x = torch.randn(*shape) * 2 + 0.5
    model = export_load(m, tmp_path, input_shape=(shape[1],) + shape[3:])
    check_modes(model, x, torch_forward(m, x))


@pytest.mark.parametrize("groups,affine", [(1, True), (2, True), (4, False)])
def test_groupnorm(tmp_path, groups, affine):
    """GroupNorm is not frame-local (semantics Q11): forward normalises over (C/G, T, *S) like torch; a step
    normalises one frame (what the reference's forward_step does: torch on the 1-frame clip)."""
    seed(15)
    gn = nn.GroupNorm(groups, 4, affine=affine)
    if affine:
        with torch.no_grad():
            gn.weight.normal_()
            gn.bias.normal_()
    x = torch.randn(2, 4, 6, 5) * 2
    model = export_load(gn, tmp_path, input_shape=(4, 5))
    ref = torch_forward(gn, x)
    np.testing.assert_allclose(model.forward(x), to_np(ref), atol=1e-5, rtol=0)
    per_frame = to_np(torch.cat([torch_forward(gn, x[:, :, t:t + 1]) for t in range(x.shape[2])], dim=2))
    s = model.stream(2)
    for t in range(x.shape[2]):
        np.testing.assert_allclose(s.forward_step(x[:, :, t]), per_frame[:, :, t], atol=1e-5, rtol=0)
    # forward_steps is the clip stepped frame by frame (continual-c), so it normalises per frame as well
    s.clean_state()
    np.testing.assert_allclose(s.forward_steps(x, pad_end=True), per_frame, atol=1e-5, rtol=0)


@pytest.mark.parametrize("drop", [nn.Dropout(0.5), nn.Dropout1d(0.5), nn.Dropout2d(0.5), nn.Dropout3d(0.5),
                                  nn.AlphaDropout(0.5), nn.FeatureAlphaDropout(0.5), nn.Identity()],
                         ids=lambda m: type(m).__name__)
def test_dropout_identity(tmp_path, drop):
    seed(16)
    drop.eval()
    x = torch.randn(2, 3, 5) if isinstance(drop, nn.Dropout1d) else torch.randn(2, 3, 5, 4)
    model = export_load(drop, tmp_path, input_shape=(3,) + tuple(x.shape[3:]))
    check_modes(model, x, torch_forward(drop, x), two_streams=False)


@pytest.mark.parametrize("module,shape", [
    (nn.Softmax(2), (1, 3, 4, 2)), (nn.Softmax(-1), (1, 3, 4)), (nn.LogSoftmax(-1), (1, 3, 4)), (nn.GLU(2), (1, 4, 4)),
    (nn.Softmin(0), (2, 3, 4)), (nn.LayerNorm([4, 2]), (1, 3, 4, 2))],
    ids=["softmax-t", "softmax-neg-t", "logsoftmax-t", "glu-t", "softmin-batch", "layernorm-t"])
def test_not_frame_local_rejected(tmp_path, module, shape):
    """Modules acting over time (or batch) cannot run frame by frame: the clip shape is refused with
    CO_ERR_SHAPE (the file itself is valid) instead of computing something else."""
    model = export_load(module, tmp_path)
    with pytest.raises(continual_c.Error) as e:
        model.forward(torch.randn(*shape))
    assert e.value.status_name == "CO_ERR_SHAPE"
    with pytest.raises(continual_c.Error):
        model.stream(shape[0], shape[1:2] + shape[3:])
