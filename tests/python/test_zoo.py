"""The seed papers' model zoo (tools/zoo), small sizes: each model is built the way its authors
write it, given random weights and BN statistics, exported with continual_c.export, streamed
frame by frame through libcontinual and compared with its oracle (tools/zoo/oracles.py) at every
step: the same steps emit, and each output is within 1e-4 (relative to max(1, max|oracle|)); the
same clip through `continual run` (the C command-line tool) gives the stream's outputs exactly.

Plus co3d's own CoX3D (/work/shared/anchors/zoo/co3d, verbatim from the co3d repository, with its
SwishEfficient autograd Function and Conditional head) exported unmodified.

Needs the reference package `continual` 1.2.4 on sys.path (the zoo is built from its modules).
"""
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from helpers import assert_close

co = pytest.importorskip("continual")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import continual_c  # noqa: E402
from tools.zoo import MODELS, oracles  # noqa: E402
from tools.zoo.common import randomize  # noqa: E402
from tools.zoo.verify import build_small, small_clip  # noqa: E402

CO3D = "/work/shared/anchors/zoo/co3d"
TOL = 1e-4


def stream_and_compare(net, x, expected, path, input_shape, what):
    continual_c.export(net, path, input_shape=input_shape)
    model = continual_c.load(path)
    s = model.stream(x.shape[0])
    outs = {}
    for t in range(x.shape[2]):
        outs[t + 1] = s.forward_step(np.ascontiguousarray(x[:, :, t].numpy()))
    emitted = sorted(n for n, y in outs.items() if y is not None)
    assert emitted == sorted(expected), "%s: stream emits at steps %s, the oracle at %s" % (
        what, emitted, sorted(expected))
    worst = 0.0
    for n in emitted:
        e = expected[n]
        y = np.asarray(outs[n]).reshape(e.shape)
        assert_close(y, e, TOL, "%s step %d" % (what, n))
        worst = max(worst, float(np.abs(y - e).max()))
    s.close()
    model.close()
    # the same clip through the command-line tool (no Python at run time) gives the same outputs
    cli = os.path.join(os.path.dirname(continual_c.library_path()), "continual")
    if os.path.exists(cli):
        xin, yout = path + ".in.npy", path + ".out.npy"
        np.save(xin, np.ascontiguousarray(x.numpy(), dtype=np.float32))
        subprocess.run([cli, "run", path, "--input", xin, "--output", yout], check=True, capture_output=True)
        got = np.load(yout)
        want = np.stack([np.asarray(outs[n]).reshape(expected[n].shape) for n in emitted], axis=2)
        assert got.shape == want.shape, "%s: continual run gives %s, the stream %s" % (what, got.shape, want.shape)
        np.testing.assert_array_equal(got, want)
    return worst


@pytest.mark.parametrize("name", list(MODELS))
def test_zoo_model(name, tmp_path):
    spec = MODELS[name]
    t0 = time.time()
    torch.set_num_threads(2)
    net = build_small(spec)
    x = small_clip(spec)
    expected = oracles.oracle(spec, net, x)
    assert expected, "%s: the oracle has no output in %d frames" % (name, x.shape[2])
    worst = stream_and_compare(net, x, expected, str(tmp_path / (name + ".safetensors")),
                               spec.input_shape(small=True), name)
    print("%s: %d outputs vs %s oracle, max abs diff %.3g (%.1f s)" % (
        name, len(expected), spec.oracle, worst, time.time() - t0))


def test_co3d_cox3d_unmodified(tmp_path):
    """co3d's CoX3D as its repository writes it (models/cox3d/modules/x3d.py), small size."""
    if CO3D not in sys.path:
        sys.path.insert(0, CO3D)
    from models.cox3d.modules.x3d import CoX3D

    torch.manual_seed(0)
    net = CoX3D(
        dim_in=3, image_size=64, temporal_window_size=4, num_classes=10, x3d_conv1_dim=12,
        x3d_conv5_dim=64, x3d_num_groups=1, x3d_width_per_group=64, x3d_width_factor=2.0,
        x3d_depth_factor=1.0, x3d_bottleneck_factor=2.25, x3d_use_channelwise_3x3x3=1,
        x3d_dropout_rate=0.5, x3d_head_activation="softmax", x3d_head_batchnorm=0, x3d_fc_std_init=0.01,
        x3d_final_batchnorm_zero_init=1, temporal_fill="zeros", se_scope="frame",
    )
    randomize(net, 0)
    net.eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, int(net.delay) + 4, 64, 64, generator=g)
    expected = oracles.reference_steps(net, x)
    worst = stream_and_compare(net, x, expected, str(tmp_path / "co3d_cox3d.safetensors"), (3, 64, 64),
                               "co3d CoX3D")
    print("co3d CoX3D: %d outputs vs reference steps, max abs diff %.3g" % (len(expected), worst))
