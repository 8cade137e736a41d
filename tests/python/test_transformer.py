"""Continual transformers: attentions, encoders (torch.nn and the reference's), positional encoding,
CoOadTR. The oracle is the paper's maths in torch: at each step, torch.nn attention / encoder layers
over the current window of N tokens equal the step output (single-output: the query token;
retroactive: all N window outputs; encoders: the newest token). Streams are >= 10 windows long, which
covers the reference's RetroactiveUnity bug region (Q2, from step 2N-1 on). Tests that need the
reference package `continual` (co) skip without it."""
import os
import sys

import numpy as np
import pytest
import torch
from torch import nn

import continual_c
from continual_c._export import ExportError
from continual_c._export_transformer import ContinualAttention, transformer_encoder
from helpers import assert_close, check_modes, export_load, seed

ZOO = "/work/shared/anchors/zoo"


def _co():
    try:
        import continual

        return continual
    except Exception:
        return None


needs_co = pytest.mark.skipif(_co() is None, reason="the reference package `continual` is not importable")


def window_oracle(fn, x, N):
    """steps_oracle for check_modes: step n (1-based) -> fn(clip of frames n-N+1..n) as numpy, or None
    before the window is full."""
    x = torch.as_tensor(x)

    def oracle(n):
        if n < N:
            return None
        with torch.no_grad():
            return fn(x[:, :, n - N:n]).numpy()

    return oracle


def randomise(module, scale=0.5):
    """Random weights everywhere (LayerNorm affines too, so they are not the identity)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * scale)
        for m in module.modules():
            if isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                m.weight.add_(1.0)
    return module.eval()


def tensor_names(path):
    net, fs, meta, tensors = continual_c.read_model_file(path)
    return set(tensors)


# ---- attentions from torch.nn.MultiheadAttention ---------------------------------------------------
@pytest.mark.parametrize("query_index", [-1, 0, 2, -3])
def test_single_output_attention(tmp_path, query_index):
    seed(1)
    E, H, N, B, T = 10, 2, 5, 3, 55  # head dim 5
    mha = randomise(nn.MultiheadAttention(E, H, batch_first=bool(query_index % 2)))
    w = ContinualAttention(mha, N, "single_output", query_index=query_index).eval()
    model = export_load(w, tmp_path)
    assert tensor_names(model.path) == set(mha.state_dict())
    x = torch.randn(B, E, T)
    with torch.no_grad():
        ref = w(x)
    check_modes(model, x, ref, pad_end=False,
                steps_oracle=window_oracle(lambda c: w(c)[:, :, query_index], x, N))


def test_single_output_forward_one_token(tmp_path):
    seed(2)
    E, H, N, B, T = 6, 3, 4, 2, 40
    mha = randomise(nn.MultiheadAttention(E, H, bias=False, batch_first=True))
    w = ContinualAttention(mha, N, "single_output", query_index=1, single_output_forward=True).eval()
    model = export_load(w, tmp_path)
    x = torch.randn(B, E, T)
    with torch.no_grad():
        ref = w(x)
    assert ref.shape == (B, E, 1)
    full = ContinualAttention(mha, N, "single_output", query_index=1)
    check_modes(model, x, ref, pad_end=False, steps_oracle=window_oracle(lambda c: full(c)[:, :, 1], x, N))


@pytest.mark.parametrize("bias", [True, False])
def test_retroactive_attention(tmp_path, bias):
    seed(3)
    E, H, N, B, T = 9, 3, 4, 2, 45  # head dim 3
    mha = randomise(nn.MultiheadAttention(E, H, bias=bias))
    w = ContinualAttention(mha, N, "retroactive").eval()
    model = export_load(w, tmp_path)
    assert tensor_names(model.path) == set(mha.state_dict())
    x = torch.randn(B, E, T)
    with torch.no_grad():
        ref = w(x)
    # tol 1e-4: the running sums of the retroactive kernel lose ~1e-5 (relative) in some rows; see the report
    stepped = check_modes(model, x, ref, tol=1e-4, pad_end=False, steps_oracle=window_oracle(w, x, N))
    assert stepped.shape == (B, E, T - N + 1, N)


def test_retroactive_attention_large_logits(tmp_path):
    """Logits of several hundred: ours finite and equal to torch's softmax over the window; the
    reference's raw-exp kernel (Q6) gives inf/NaN."""
    seed(4)
    E, H, N, B, T = 8, 2, 6, 2, 66
    mha = randomise(nn.MultiheadAttention(E, H, batch_first=True), scale=1.0)
    with torch.no_grad():
        mha.in_proj_weight[:2 * E] *= 6.0  # queries and keys
    w = ContinualAttention(mha, N, "retroactive").eval()
    model = export_load(w, tmp_path)
    x = torch.randn(B, E, T) * 4.0
    with torch.no_grad():
        q = torch.einsum("bet,fe->btf", x, mha.in_proj_weight[:E])
        k = torch.einsum("bet,fe->btf", x, mha.in_proj_weight[E:2 * E])
        logits = (q[..., :4] @ k[..., :4].transpose(1, 2)) / 2.0
    assert logits.abs().max() > 300, "the test needs large logits"
    s = model.stream(B, (E,))
    for n in range(1, T + 1):
        y = s.forward_step(x[:, :, n - 1])
        if n < N:
            assert y is None
            continue
        assert np.all(np.isfinite(y)), "step %d: non-finite output" % n
        with torch.no_grad():
            ref = w(x[:, :, n - N:n])
        assert_close(y, ref, 1e-4, "step %d" % n)
    co = _co()
    if co is not None:
        ref_mha = co.RetroactiveMultiheadAttention.build_from(mha, N, batch_first=True, embed_dim_second=True,
                                                              forward_returns_attn_mask=False).eval()
        outs = []
        with torch.no_grad():
            for t in range(T):
                r = ref_mha.forward_step(x[:, :, t])
                if r is not None:
                    outs.append(r)
        assert not all(torch.isfinite(o).all() for o in outs), "the reference was expected to overflow (Q6)"


@pytest.mark.parametrize("kind,B", [("retroactive", 3), ("retroactive", 5), ("single_output", 3),
                                     ("single_output", 7)])
def test_attention_odd_batches(tmp_path, kind, B):
    """Batch > 1 with odd sizes (E 15, 5 heads of 3, window 7): every item of every step (each
    window position, over 6 windows) equals torch over that item's window; the items carry
    different data, so one item's state leaking into another shows."""
    seed(20 + B)
    E, H, N, T = 15, 5, 7, 45
    mha = randomise(nn.MultiheadAttention(E, H, batch_first=True))
    qi = -2 if kind == "single_output" else -1
    w = ContinualAttention(mha, N, kind, **({"query_index": qi} if kind == "single_output" else {})).eval()
    model = export_load(w, tmp_path)
    x = torch.randn(B, E, T) * torch.linspace(0.5, 2.0, B).view(B, 1, 1)
    with torch.no_grad():
        ref = w(x)
    fn = w if kind == "retroactive" else (lambda c: w(c)[:, :, qi])
    check_modes(model, x, ref, tol=1e-4, pad_end=False, steps_oracle=window_oracle(fn, x, N))


# ---- encoders from torch.nn.TransformerEncoder ---------------------------------------------------
ENC_CASES = [  # (num_layers, norm_first, activation, final norm)
    (1, False, "relu", True),
    (1, True, "gelu", False),
    (2, False, "gelu", True),
    (2, True, "relu", True),
    (4, False, "relu", False),
    (4, True, "gelu", True),
]


def _torch_encoder(E, H, F, L, norm_first, activation, final_norm, batch_first=True):
    layer = nn.TransformerEncoderLayer(E, H, F, dropout=0.1, activation=activation, batch_first=batch_first,
                                       norm_first=norm_first)
    enc = nn.TransformerEncoder(layer, L, norm=nn.LayerNorm(E) if final_norm else None, enable_nested_tensor=False)
    return randomise(enc)


@pytest.mark.parametrize("L,norm_first,activation,final_norm", ENC_CASES)
def test_torch_encoder(tmp_path, L, norm_first, activation, final_norm):
    seed(10 + L)
    E, H, F, N, B = 15, 3, 14, 5, 2  # head dim 5
    T = 10 * N
    enc = _torch_encoder(E, H, F, L, norm_first, activation, final_norm, batch_first=(L != 2))
    w = transformer_encoder(enc, N).eval()
    model = export_load(w, tmp_path)
    assert tensor_names(model.path) == set(enc.state_dict())
    x = torch.randn(B, E, T)
    with torch.no_grad():
        ref = w(x)
    assert ref.shape == ((B, E, T) if L == 1 else (B, E, 1))
    check_modes(model, x, ref, tol=1e-4, pad_end=False,
                steps_oracle=window_oracle(lambda c: w(c)[:, :, -1], x, N))


def test_torch_encoder_layer_alone_and_module_activation(tmp_path):
    """A bare nn.TransformerEncoderLayer (names: self_attn.*, linear1.*, ...), activation given as a module."""
    seed(20)
    E, H, F, N, B, T = 8, 4, 12, 6, 3, 60
    layer = randomise(nn.TransformerEncoderLayer(E, H, F, activation=nn.GELU(), batch_first=True))
    w = transformer_encoder(layer, N).eval()
    model = export_load(w, tmp_path)
    assert tensor_names(model.path) == set(layer.state_dict())
    x = torch.randn(B, E, T)
    with torch.no_grad():
        ref = w(x)
    check_modes(model, x, ref, tol=1e-4, pad_end=False, steps_oracle=window_oracle(lambda c: w(c)[:, :, -1], x, N))


def test_wrappers_inside_a_torch_network(tmp_path):
    """Wrappers compose with other modules and keep the names the torch modules have in the network."""
    seed(21)
    C, E, H, N, B, T = 5, 6, 2, 4, 2, 40
    enc = _torch_encoder(E, H, 10, 2, False, "relu", True)
    mha = randomise(nn.MultiheadAttention(E, H, batch_first=True))
    net = nn.Sequential(nn.Conv1d(C, E, 1), transformer_encoder(enc, N), nn.ReLU()).eval()
    torch_net = nn.Sequential(net[0], enc)
    names = set(torch_net.state_dict())
    model = export_load(net, tmp_path)
    assert tensor_names(model.path) == names
    x = torch.randn(B, C, T)
    s = model.stream(B, (C,))
    for n in range(1, T + 1):
        y = s.forward_step(x[:, :, n - 1])
        if n < N:
            assert y is None
            continue
        with torch.no_grad():
            ref = net(x[:, :, n - N:n])[:, :, -1]
        assert_close(y, ref, 1e-4, "step %d" % n)
    # two attentions in sequence: single-output after single-output (each over its own window)
    net2 = nn.Sequential(ContinualAttention(mha, N), nn.Tanh()).eval()
    model2 = export_load(net2, tmp_path, name="m2.safetensors")
    assert tensor_names(model2.path) == {"0." + k for k in mha.state_dict()}


# ---- exporter errors (no library needed) ----------------------------------------------------------
@pytest.mark.no_lib
def test_export_refusals(tmp_path):
    p = os.path.join(str(tmp_path), "x.safetensors")
    with pytest.raises(ExportError, match="ContinualAttention"):
        continual_c.export(nn.MultiheadAttention(4, 2), p)
    with pytest.raises(ExportError, match="transformer_encoder"):
        continual_c.export(nn.TransformerEncoder(nn.TransformerEncoderLayer(4, 2, 8), 2), p)
    with pytest.raises(ExportError, match="transformer_encoder"):
        continual_c.export(nn.Sequential(nn.TransformerEncoderLayer(4, 2, 8)), p)
    with pytest.raises(ValueError, match="kdim"):
        ContinualAttention(nn.MultiheadAttention(4, 2, kdim=3, vdim=3), 5)
    with pytest.raises(ValueError, match="add_bias_kv"):
        ContinualAttention(nn.MultiheadAttention(4, 2, add_bias_kv=True), 5)
    with pytest.raises(ValueError, match="kind"):
        ContinualAttention(nn.MultiheadAttention(4, 2), 5, kind="regular")
    with pytest.raises(ValueError, match="query_index"):
        ContinualAttention(nn.MultiheadAttention(4, 2), 5, query_index=5)
    layer = nn.TransformerEncoderLayer(4, 2, 8, activation=lambda t: t * 2)
    with pytest.raises(ExportError, match="activation"):
        continual_c.export(transformer_encoder(layer, 3), p)


def _to_bet(y, batch_first, embed_dim_second):
    """A reference attention clip in its own layout -> (B, E, T)."""
    if isinstance(y, tuple):  # (output, attention weights)
        y = y[0]
    if embed_dim_second:
        return y
    return y.permute(0, 2, 1) if batch_first else y.permute(1, 2, 0)


@pytest.mark.parametrize("batch_first,embed_dim_second", [(True, False), (False, False), (True, True)])
def test_attention_layouts_transposed_at_the_boundary(tmp_path, batch_first, embed_dim_second):
    """co.SingleOutputMultiheadAttention.build_from(nn.MultiheadAttention(E, h, batch_first=...), n) and the
    reference's other layouts export as built: steps are (B, E) frames in every layout, and the model
    file's clips are (B, E, T), i.e. the reference's (B, T, E) / (T, B, E) clips transposed."""
    co = pytest.importorskip("continual")
    seed(61)
    E, h, n, T, B = 8, 2, 4, 9, 2
    kw = dict(embed_dim_second=embed_dim_second) if embed_dim_second else {}
    so = co.SingleOutputMultiheadAttention.build_from(nn.MultiheadAttention(E, h, batch_first=batch_first),
                                                      sequence_len=n, **kw).eval()
    x = torch.randn(B, E, T)
    x_ref = x if embed_dim_second else (x.permute(0, 2, 1) if batch_first else x.permute(2, 0, 1))
    with torch.no_grad():
        fwd = _to_bet(so(x_ref), batch_first, embed_dim_second)
        so.clean_state()
        steps = [so.forward_step(x[:, :, t]) for t in range(T)]
    model = export_load(so, tmp_path, input_shape=(E,))
    assert_close(model.forward(x), fwd, 1e-5, "forward")
    s = model.stream(B, (E,))
    for t in range(T):
        y = s.forward_step(x[:, :, t].numpy())
        if steps[t] is None:
            assert y is None, "step %d" % (t + 1)
        else:
            assert_close(y, steps[t], 1e-5, "step %d" % (t + 1))
    ra = co.RetroactiveMultiheadAttention(E, h, sequence_len=n, batch_first=batch_first, **kw).eval()
    with torch.no_grad():
        fwd = _to_bet(ra(x_ref), batch_first, embed_dim_second)
    model = export_load(ra, tmp_path, input_shape=(E,), name="ra.safetensors")
    assert_close(model.forward(x), fwd, 1e-5, "retroactive forward")


@pytest.mark.no_lib
def test_export_structure():
    """The JSON of a 3-layer encoder: retroactive first layer, a regular middle layer in a transparent
    RetroactiveLambda (full attention in clip mode), a single-output last layer, SqueezeLast, norm."""
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(4, 2, 8), 3, norm=nn.LayerNorm(4),
                                enable_nested_tensor=False)
    net, expected = continual_c.to_network(transformer_encoder(enc, 7))
    assert set(expected) == set(enc.state_dict())
    layers = net["children"][0]
    assert layers["name"] == "layers"
    l0, l1, l2, sq = layers["children"]
    assert l0["children"][0]["children"][1]["type"] == "RetroactiveMultiheadAttention"
    assert l0["children"][0]["children"][0] == {"type": "RetroactiveUnity", "name": "", "delay": 6}
    assert l1["type"] == l2["type"] == "RetroactiveLambda" and l1["name"] == l2["name"] == ""
    a1 = l1["children"][0]["children"][0]["children"][1]
    a2 = l2["children"][0]["children"][0]["children"][1]
    assert a1["single_output_forward"] is False and a2["single_output_forward"] is True
    assert sq["type"] == "SqueezeLast"
    assert net["children"][1]["type"] == "ChannelLayerNorm" and net["children"][1]["name"] == "norm"


# ---- the reference's modules (co) -----------------------------------------------------------------
@needs_co
@pytest.mark.parametrize("L", [1, 2])
def test_co_transformer_encoder(tmp_path, L):
    """co.TransformerEncoder.build_from(nn.TransformerEncoder): ours equals the torch window at every
    step of a 10-window stream; the reference's 2-layer encoder is wrong from step 2N-1 (Q2)."""
    co = _co()
    seed(30 + L)
    E, H, F, N, B = 10, 2, 16, 5, 2
    T = 10 * N
    enc = _torch_encoder(E, H, F, L, False, "relu", True)
    cenc = co.TransformerEncoder.build_from(enc, N).eval()
    model = export_load(cenc, tmp_path)
    assert tensor_names(model.path) == set(cenc.state_dict())
    x = torch.randn(B, E, T)

    def win(c):
        return enc(c.transpose(1, 2)).transpose(1, 2)[:, :, -1]

    with torch.no_grad():
        ref = cenc.forward(x)
    check_modes(model, x, ref, tol=1e-4, pad_end=False, steps_oracle=window_oracle(win, x, N))
    # the reference against the same oracle
    cenc.clean_state()
    errs = {}
    with torch.no_grad():
        for n in range(1, T + 1):
            r = cenc.forward_step(x[:, :, n - 1])
            if n >= N:
                errs[n] = float((r - win(x[:, :, n - N:n])).abs().max())
    assert max(errs[n] for n in range(N, 2 * N - 1)) < 1e-3
    if L == 1:
        assert max(errs.values()) < 1e-4
    else:
        assert max(errs[n] for n in range(2 * N - 1, T + 1)) > 1e-2, "expected the reference's Q2 error"


@needs_co
@pytest.mark.parametrize("retro", [False, True])
def test_co_attention_modules(tmp_path, retro):
    co = _co()
    seed(40)
    E, H, N, B, T = 7, 1, 4, 2, 44
    cls = co.RetroactiveMultiheadAttention if retro else co.SingleOutputMultiheadAttention
    kw = {} if retro else {"query_index": 1, "single_output_forward": False}
    m = cls(E, H, sequence_len=N, batch_first=True, embed_dim_second=True, forward_returns_attn_mask=False, **kw)
    m = randomise(m)
    model = export_load(m, tmp_path)
    x = torch.randn(B, E, T)
    with torch.no_grad():
        ref = m.forward(x)
        full = nn.MultiheadAttention(E, H, batch_first=True)
        full.load_state_dict(m.state_dict())
        full.eval()

    def win(c):
        y = full(c.transpose(1, 2), c.transpose(1, 2), c.transpose(1, 2), need_weights=False)[0].transpose(1, 2)
        return y if retro else y[:, :, 1]

    check_modes(model, x, ref, tol=1e-4 if retro else 1e-5, pad_end=False, steps_oracle=window_oracle(win, x, N))


@needs_co
@pytest.mark.parametrize("learned", [True, False])
def test_recycling_positional_encoding(tmp_path, learned):
    co = _co()
    seed(50)
    E, M, B = 7, 9, 2
    pe = co.RecyclingPositionalEncoding(E, M, learned=learned, forward_update_index_steps=0).eval()
    if learned:
        randomise(pe)
    model = export_load(pe, tmp_path)
    assert tensor_names(model.path) == set(pe.state_dict())
    assert model.delay == 0 and model.receptive_field == 1
    # forward: a fresh encoding (positions 0..T-1), T <= M as the reference asserts
    x = torch.randn(B, E, M)
    pe.clean_state()
    with torch.no_grad():
        ref = pe.forward(x)
    check_modes(model, x, ref)
    # a long stream (positions recycle modulo M) against the reference's forward_step
    x = torch.randn(B, E, 4 * M + 3)
    pe.clean_state()
    s = model.stream(B, (E,))
    with torch.no_grad():
        for t in range(x.shape[2]):
            assert_close(s.forward_step(x[:, :, t]), pe.forward_step(x[:, :, t]), 1e-6, "step %d" % (t + 1))


# ---- CoOadTR (small dims) ---------------------------------------------------------------------------
def _cooadtr():
    if _co() is None:
        pytest.skip("the reference package `continual` is not importable")
    if ZOO not in sys.path:
        sys.path.insert(0, ZOO)
    try:
        import cooadtr
    except Exception as e:  # pragma: no cover
        pytest.skip("zoo/cooadtr.py not importable: %s" % e)
    return cooadtr


SMALL = dict(dim_feature=12, E=16, H=2, F=16, n=8, num_embeds=8, classes=5, dropout=0.1)


@pytest.mark.parametrize("L", [1, 2])
def test_cooadtr_small(tmp_path, L):
    """CoOadTR-b1/-b2 as built in zoo/cooadtr.py (small dims) against the RegularOadTR windowed torch
    computation at every step of a 12-window stream, to 1e-4; the reference b2 is wrong there (Q2)."""
    oad = _cooadtr()
    seed(60 + L)
    cfg = SMALL
    net = randomise(oad.build_cooadtr(L, cfg), scale=0.3)
    reg = oad.build_regular(net, L, cfg).eval()
    model = export_load(net, tmp_path, input_shape=(cfg["dim_feature"],))
    assert tensor_names(model.path) == set(net.state_dict())
    N, M, B = cfg["n"], cfg["num_embeds"], 2
    T = 12 * N
    x = torch.randn(B, cfg["dim_feature"], T)

    def win_at(n):
        with torch.no_grad():
            return reg(x[:, :, n - N:n].transpose(1, 2), offset=(n - N) % M)

    def oracle(n):
        return None if n < N else win_at(n).numpy()

    with torch.no_grad():
        ref = reg(x.transpose(1, 2), offset=0).unsqueeze(2)  # forward: every token, positions from 0
    check_modes(model, x, ref, tol=1e-4, pad_end=False, steps_oracle=oracle)
    # the reference module itself
    net.clean_state()
    errs = []
    with torch.no_grad():
        for n in range(1, T + 1):
            r = net.forward_step(x[:, :, n - 1])
            if n >= N:
                errs.append(float((r - win_at(n)).abs().max()))
    if L == 1:
        assert max(errs) < 1e-4
    else:
        assert max(errs[:N - 1]) < 1e-3 and max(errs[N - 1:]) > 1e-2


@pytest.mark.no_lib
def test_reference_encoder_exports_select_or_delay():
    """The reference's 2-layer co.TransformerEncoder routes its residual through SelectOrDelay (the
    query lag of the single-output layer); the exporter writes that node as built."""
    co = pytest.importorskip("continual")
    enc = co.TransformerEncoder.build_from(
        nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 2), sequence_len=4)

    def types(node):
        yield node["type"]
        for c in node.get("children", []):
            yield from types(c)

    assert "SelectOrDelay" in set(types(continual_c.to_network(enc)[0]))
