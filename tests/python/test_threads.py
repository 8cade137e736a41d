"""threads= (co_stream_set_threads, co_multistream_set_threads, co_forward_threaded): 1 and 3 threads
give bit-identical outputs — steps, peeks, forward_steps with end padding, the clip, multi-stream —
on models whose products are large enough to be split at batch 8; bad thread counts are refused."""
import numpy as np
import pytest
import torch
from torch import nn

import continual_c
from continual_c._export_transformer import ContinualAttention, transformer_encoder
from continual_c import Error

co = pytest.importorskip("continual")


def _encoder():
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(128, 4, 256, batch_first=True), 2,
                                enable_nested_tensor=False)
    return co.TransformerEncoder.build_from(enc, 8), (128,)


def _cox3d_small():
    """CoX3D-S at the zoo's small size: depthwise 3x3x3 convs (split by planes), folded
    BatchNorms and fused ReLUs, the squeeze-excitation's broadcast product and the residual sums
    (split by runs), Swish (a traced graph), all large enough at batch 8 to be split."""
    import os
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if repo not in sys.path:
        sys.path.insert(0, repo)
    from tools.zoo import MODELS
    from tools.zoo.verify import build_small
    spec = MODELS["cox3d_s"]
    return build_small(spec), spec.input_shape(small=True)


NETS = [
    ("conv3d", lambda: (co.Sequential(co.Conv3d(16, 32, 3, padding=1), nn.ReLU(), co.Conv3d(32, 32, 3)),
                        (16, 10, 10))),
    ("conv1d", lambda: (co.Sequential(co.Conv1d(64, 128, 5, padding=2), nn.ReLU(), co.Conv1d(128, 128, 5),
                                      co.Linear(128, 64, channel_dim=1)), (64,))),
    # the pooled feature-vector step (items split over threads) after a serial replicate start,
    # and a strided conv whose windows are not all emitted
    ("conv1d_replicate_stride", lambda: (co.Sequential(
        co.Conv1d(64, 128, 5, padding=2, padding_mode="replicate"), nn.ReLU(),
        co.Conv1d(128, 96, 3, stride=2)), (64,))),
    ("encoder", _encoder),
    ("cox3d_small", _cox3d_small),
]


def _same(a, b, what):
    assert (a is None) == (b is None), what
    if a is not None:
        assert a.shape == b.shape and np.array_equal(a, b), what


@pytest.mark.parametrize("name,make", NETS, ids=[n[0] for n in NETS])
def test_threads_bit_identical(tmp_path, name, make):
    torch.manual_seed(0)
    net, shape = make()
    path = str(tmp_path / (name + ".safetensors"))
    continual_c.export(net.eval(), path, input_shape=shape)
    m = continual_c.load(path)
    B, T = 8, 12
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, shape[0], T) + shape[1:]).astype(np.float32)
    one, three = m.stream(B), m.stream(B, threads=3)
    assert one.threads == 1 and three.threads == 3
    for t in range(T):
        frame = np.ascontiguousarray(x[:, :, t])
        _same(one.forward_step(frame, update_state=False), three.forward_step(frame, update_state=False),
              "peek %d" % t)
        _same(one.forward_step(frame), three.forward_step(frame), "step %d" % t)
    one.clean_state()
    three.clean_state()
    _same(one.forward_steps(x, pad_end=True), three.forward_steps(x, pad_end=True), "forward_steps")
    three.threads = 2
    assert three.threads == 2
    _same(one.forward_steps(x), three.forward_steps(x), "forward_steps on 2 threads")
    _same(m.forward(x), m.forward(x, threads=3), "forward")
    # multi-stream: a context of 3 threads against one of 1, streams at different positions
    n = 3
    c1, c3 = m.multistream(n, batch_size=2), m.multistream(n, batch_size=2, threads=3)
    assert c1.threads == 1 and c3.threads == 3
    s1 = [m.stream(2) for _ in range(n)]
    s3 = [m.stream(2) for _ in range(n)]
    for t in range(T):
        k = 1 + t % n
        frames = [np.ascontiguousarray(x[2 * i:2 * i + 2, :, (t + i) % T]) for i in range(k)]
        for i, (a, b) in enumerate(zip(c1.forward_step(s1[:k], frames), c3.forward_step(s3[:k], frames))):
            _same(a, b, "multistream tick %d stream %d" % (t, i))


def test_threads_refused(tmp_path):
    path = str(tmp_path / "small.safetensors")
    continual_c.export(co.Sequential(co.Conv1d(2, 3, 3)).eval(), path, input_shape=(2,))
    m = continual_c.load(path)
    with pytest.raises(ValueError):
        m.stream(1, threads=0)
    with pytest.raises(ValueError):
        m.stream(1, threads=257)
    with pytest.raises(TypeError):
        m.stream(1, threads="2")
    with pytest.raises(ValueError):
        m.forward(np.zeros((1, 2, 4), np.float32), threads=0)
    s = m.stream(1)
    with pytest.raises(ValueError):
        s.threads = -1
    assert s.threads == 1
    ctx = m.multistream(2)
    ctx.close()
    with pytest.raises(Error):
        ctx.threads = 2


ATTENTIONS = [
    # N = 20: one full block of 16 window outputs per task and a tail block of 4
    ("retroactive", lambda: ContinualAttention(nn.MultiheadAttention(64, 4, batch_first=True), 20, "retroactive")),
    ("single_output", lambda: ContinualAttention(nn.MultiheadAttention(64, 4, batch_first=True), 20,
                                                 "single_output", query_index=5)),
    # retroactive, regular (a RetroactiveLambda: attention, LayerNorm over the window in clip mode) and
    # single-output layers, the residual windows (RetroactiveUnity)
    ("encoder3", lambda: transformer_encoder(
        nn.TransformerEncoder(nn.TransformerEncoderLayer(64, 4, 128, batch_first=True), 3,
                              enable_nested_tensor=False), 20)),
]


@pytest.mark.parametrize("kind,make", ATTENTIONS, ids=[a[0] for a in ATTENTIONS])
@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_attention_threads_bit_identical(tmp_path, kind, make, batch, scale):
    """The attention steps split their per-item / per-block loops over the pool by a partition fixed by
    the shapes: 1, 2 and 3 threads give the same bits, at batch 1, 3 and 8, stepping and peeking, and
    for independent streams at different positions in one call (scale 30: large logits, so rows are
    recomputed exactly inside the tasks too)."""
    torch.manual_seed(3)
    path = str(tmp_path / (kind + ".safetensors"))
    continual_c.export(make().eval(), path, input_shape=(64,))
    m = continual_c.load(path)
    T = 45
    rng = np.random.default_rng(2)
    x = (scale * rng.standard_normal((batch, 64, T))).astype(np.float32)
    streams = [m.stream(batch, threads=t) for t in (1, 2, 3)]
    for t in range(T):
        frame = np.ascontiguousarray(x[:, :, t])
        if t % 5 == 4:
            peeks = [s.forward_step(frame, update_state=False) for s in streams]
            for k in (1, 2):
                _same(peeks[0], peeks[k], "peek %d, %d threads" % (t, k + 1))
        ys = [s.forward_step(frame) for s in streams]
        for k in (1, 2):
            _same(ys[0], ys[k], "step %d, %d threads" % (t, k + 1))
    # independent streams joining at different times, stepped in one call on 1 and 3 threads
    n = 4
    c1, c3 = m.multistream(n, batch_size=batch), m.multistream(n, batch_size=batch, threads=3)
    s1 = [m.stream(batch) for _ in range(n)]
    s3 = [m.stream(batch) for _ in range(n)]
    for t in range(T):
        k = min(n, 1 + t // 7)
        frames = [np.ascontiguousarray(x[:, :, (t + 11 * i) % T]) for i in range(k)]
        for i, (a, b) in enumerate(zip(c1.forward_step(s1[:k], frames), c3.forward_step(s3[:k], frames))):
            _same(a, b, "multistream tick %d stream %d" % (t, i))
