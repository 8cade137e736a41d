"""MultiStream.forward_step (co_forward_step_streams): independent streams in one call equal each
stream stepped alone, at different positions, with peeks, save/load/clean between calls; refused
calls leave the streams as they were."""
import numpy as np
import pytest
import torch

import continual_c
from continual_c import Error

co = pytest.importorskip("continual")


def _model(tmp_path, net, shape, name):
    path = str(tmp_path / name)
    continual_c.export(net.eval(), path, input_shape=shape)
    return continual_c.load(path)


NETS = [
    ("conv3d", lambda: co.Sequential(co.Conv3d(3, 4, 3, padding=1), torch.nn.ReLU(), co.Conv3d(4, 2, 3, stride=2)),
     (3, 6, 6)),
    ("conv1d", lambda: co.Sequential(co.Conv1d(5, 6, 3, padding=1), co.Conv1d(6, 6, 1),
                                     co.Linear(6, 4, channel_dim=1)), (5,)),
]


@pytest.mark.parametrize("name,make,shape", NETS, ids=[n[0] for n in NETS])
@pytest.mark.parametrize("batch", [1, 2])
def test_matches_alone(tmp_path, name, make, shape, batch):
    torch.manual_seed(0)
    m = _model(tmp_path, make(), shape, name + ".safetensors")
    n = 4
    ctx = m.multistream(n, batch_size=batch)
    ms = [m.stream(batch) for _ in range(n)]
    ref = [m.stream(batch) for _ in range(n)]
    rng = np.random.default_rng(0)
    for i in range(n):  # different positions
        for _ in range(2 * i):
            x = rng.standard_normal((batch,) + shape).astype(np.float32)
            ms[i].forward_step(x)
            ref[i].forward_step(x)
    compared = 0
    for r in range(24):
        k = 1 + r % n
        idx = [(r + j) % n for j in range(k)][::-1]
        update = r % 5 != 4
        xs = [rng.standard_normal((batch,) + shape).astype(np.float32) for _ in idx]
        got = ctx.forward_step([ms[i] for i in idx], xs, update_state=update)
        for j, i in enumerate(idx):
            want = ref[i].forward_step(xs[j], update_state=update)
            assert (got[j] is None) == (want is None)
            if want is not None:
                np.testing.assert_allclose(got[j], want, rtol=1e-6, atol=1e-6 * max(1.0, np.abs(want).max()))
                compared += 1
        if r % 6 == 3:
            st = ms[0].save_state()
            ms[2].load_state(st)
            ref[2].load_state(ref[0].save_state())
        if r % 9 == 7:
            ms[1].clean_state()
            ref[1].clean_state()
    assert compared > 0


def _attention(kind):
    """Odd sizes (E 9, 3 heads of 3, window 5)."""
    from continual_c._export_transformer import ContinualAttention

    mha = torch.nn.MultiheadAttention(9, 3, batch_first=True)
    return ContinualAttention(mha, 5, kind)


ATTENTION_NETS = [
    ("retroactive_attention", lambda: _attention("retroactive"), (9,)),
    ("single_output_attention", lambda: _attention("single_output"), (9,)),
]


@pytest.mark.parametrize("name,make,shape", ATTENTION_NETS, ids=[n[0] for n in ATTENTION_NETS])
@pytest.mark.parametrize("batch", [1, 3])
def test_attention_matches_alone(tmp_path, name, make, shape, batch):
    """The attentions' own multi-stream steps (one product for every stream's rows): streams two
    steps apart, so in one call some are in their start-up (no output) while others emit."""
    test_matches_alone(tmp_path, name, make, shape, batch)


def test_refused_calls_leave_streams(tmp_path):
    m = _model(tmp_path, NETS[1][1](), NETS[1][2], "a.safetensors")
    ctx = m.multistream(2)
    a, b = m.stream(1), m.stream(1)
    x = np.ones((1, 5), np.float32)
    ctx.forward_step([a, b], [x, x])
    before = (a.save_state(), b.save_state())
    with pytest.raises(Error) as e:
        ctx.forward_step([a, a], [x, x])
    assert e.value.status_name == "CO_ERR_INVALID_ARGUMENT"
    with pytest.raises(Error):
        ctx.forward_step([a, b, m.stream(1)], [x, x, x])  # more than max_streams
    with pytest.raises(Error) as e:
        ctx.forward_step([a, m.stream(2)], [x, np.ones((2, 5), np.float32)])
    assert e.value.status_name == "CO_ERR_SHAPE"
    other = _model(tmp_path, NETS[1][1](), NETS[1][2], "b.safetensors")
    with pytest.raises(Error):
        ctx.forward_step([a, other.stream(1)], [x, x])
    assert (a.save_state(), b.save_state()) == before
    ctx.close()
