"""Where continual-c deliberately differs from the reference (semantics.md §6.1). Each test asserts our
behaviour from torch truth; where the `continual` package is importable, the reference's different
behaviour is shown next to it."""
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

import continual_c
from helpers import assert_close, check_modes, export_load, seed, stack, step_all, to_np, torch_forward, write_model


def _co():
    try:
        import continual
    except ImportError:
        return None
    return continual


# ---- Q27: temporal padding >= kernel ---------------------------------------------------------------
Q27 = [(3, 3, 1), (2, 3, 1), (3, 4, 2), (1, 1, 1), (2, 2, 2), (3, 5, 3)]


@pytest.mark.parametrize("k,p,s", Q27, ids=["k%d-p%d-s%d" % c for c in Q27])
def test_q27_padding_ge_kernel_loses_no_output(tmp_path, k, p, s):
    """Forward output j covers input frames j*s-p+1 .. j*s-p+k (1-based), so the window ends at frame
    e_j = j*s + k - p. continual-c emits output j at step e_j whenever e_j >= 1: from a clean state, the
    stepped outputs over T frames are exactly the forward outputs with 1 <= e_j <= T, and
    forward_steps(pad_end=True) is the suffix of forward's outputs with e_j >= 1 (only the outputs whose
    window ends before the first frame, i.e. made of padding only, cannot be produced by a stream).
    The reference loses more (its phase counter skips the first p-k+2 outputs, §1.6)."""
    seed(50)
    conv = nn.Conv1d(2, 3, k, stride=s, padding=p)
    T = 9
    x = torch.randn(2, 2, T)
    ref = to_np(torch_forward(conv, x))
    model = export_load(conv, tmp_path, input_shape=(2,))
    n_fwd = ref.shape[2]
    end = {j * s + k - p: j for j in range(n_fwd)}
    j0 = max(0, math.ceil((p - k + 1) / s))  # first j with e_j >= 1

    def oracle(n):
        return ref[:, :, end[n]] if n in end else None

    check_modes(model, x, ref, steps_oracle=oracle, pad_end=False)
    st = model.stream(2)
    assert_close(st.forward_steps(x, pad_end=True), ref[:, :, j0:], what="pad_end suffix")
    # split calls give the same suffix
    st.clean_state()
    a = st.forward_steps(x[:, :, :4])
    b = st.forward_steps(x[:, :, 4:], pad_end=True)
    got = np.concatenate([o for o in (a, b) if o is not None], axis=2)
    assert_close(got, ref[:, :, j0:], what="split pad_end suffix")

    co = _co()
    if co is not None and k > 1:
        cnet = co.Conv1d(2, 3, k, stride=s, padding=p)
        cnet.load_state_dict(conv.state_dict())
        with torch.no_grad():
            r = cnet.forward_steps(x, pad_end=True)
        # the reference's pad_end result is a (shorter or equal) suffix of ours
        n_ref = 0 if r is None else r.shape[2]
        assert n_ref <= n_fwd - j0
        if n_ref:
            assert_close(r, ref[:, :, n_fwd - n_ref:], what="reference suffix")


# ---- Q7: pad_end with update_state=False on a non-fresh stream -----------------------------------------
def test_q7_pad_end_without_update_pads_from_end_of_clip(tmp_path):
    """continual-c: forward_steps(clip, pad_end=True, update_state=False) on a stream that has seen frames
    flushes from the state reached at the end of the clip (the reference restarts from the stale state).
    So stepping the first frames and then peeking the rest with pad_end completes torch's forward, and the
    stream's state is untouched."""
    seed(51)
    net = nn.Sequential(nn.Conv1d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv1d(3, 2, 3, padding=1, stride=2))
    x = torch.randn(1, 2, 11)
    ref = to_np(torch_forward(net, x))
    model = export_load(net, tmp_path, input_shape=(2,))
    for h in (3, 4, 6):
        s = model.stream()
        first = s.forward_steps(x[:, :, :h])
        before = s.save_state()
        rest = s.forward_steps(x[:, :, h:], pad_end=True, update_state=False)
        assert s.save_state() == before
        got = np.concatenate([o for o in (first, rest) if o is not None], axis=2)
        assert_close(got, ref, what="h=%d" % h)
        # the same call with update_state=True gives the same outputs
        rest2 = s.forward_steps(x[:, :, h:], pad_end=True, update_state=True)
        np.testing.assert_array_equal(rest, rest2)

    co = _co()
    if co is not None:
        cnet = co.Sequential(co.Conv1d(2, 3, 3, padding=1), nn.ReLU(), co.Conv1d(3, 2, 3, padding=1, stride=2))
        cnet.load_state_dict(net.state_dict())
        with torch.no_grad():
            first = cnet.forward_steps(x[:, :, :4])
            rest = cnet.forward_steps(x[:, :, 4:], pad_end=True, update_state=False)
        got = torch.cat([first, rest], dim=2)
        # the reference's padded outputs differ (stale state); the unpadded ones agree
        assert got.shape[2] == ref.shape[2]
        assert not np.allclose(to_np(got)[:, :, -1], ref[:, :, -1], atol=1e-4)


# ---- Q14: Linear channel_dim=-1 in a (B, C, T) network ---------------------------------------------------
def test_q14_linear_last_dim_on_bct_is_per_frame(tmp_path):
    """channel_dim -1 means the last dim of the frame: on (B, C, T) clips continual-c projects C in every
    mode, so forward == steps (torch.nn.Linear on the clip would project T; the reference's co.Linear does
    that in forward only)."""
    seed(52)
    net = nn.Sequential(nn.Conv1d(4, 4, 3, padding=1), nn.Linear(4, 3))
    x = torch.randn(2, 4, 6)  # T = 6 != in_features
    model = export_load(net, tmp_path, input_shape=(4,))
    with torch.no_grad():
        h = net[0](x)
        ref = net[1](h.transpose(1, 2)).transpose(1, 2)  # projection over C, per frame
    check_modes(model, x, ref)
    co = _co()
    if co is not None:
        cl = co.Linear(4, 3)  # channel_dim -1
        cl.load_state_dict(net[1].state_dict())
        with torch.no_grad():
            y_step = torch.stack([cl.forward_step(h[:, :, t]) for t in range(6)], dim=2)
        assert_close(y_step, ref, what="reference forward_step projects C too")


def test_linear_negative_channel_dim_counts_against_the_clip(tmp_path):
    """co.Linear(8, 5, channel_dim=-4) on (B, 8, T, H, W) clips (CoResNet's head): the reference's forward
    reads -4 against the 5-d clip, i.e. the channel dim; continual-c does the same in every mode (where
    -4 would name the batch of a frame). The reference's own steps swap the batch axis and are not the
    oracle: the per-frame channel projection is."""
    seed(53)
    co = _co()
    if co is None:
        pytest.skip("reference package not found")
    net = co.Sequential(co.Conv3d(3, 8, (3, 1, 1), padding=(1, 0, 0)), co.Linear(8, 5, channel_dim=-4))
    x = torch.randn(2, 3, 5, 3, 2)
    with torch.no_grad():
        ref = net(x)  # the reference's forward: projection over dim 1
        h = net[0](x)
        per_frame = torch.einsum("bcthw,oc->bothw", h, net[1].weight) + net[1].bias.view(1, 5, 1, 1, 1)
    assert_close(ref, per_frame, 1e-5, "the reference's forward projects the channels")
    model = export_load(net, tmp_path, input_shape=(3, 3, 2))
    check_modes(model, x, ref)


# ---- Q22: Delay auto_shrink "centered" -------------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 2])
def test_q22_delay_centered_steps_equal_forward(tmp_path, d):
    """continual-c: Delay(d, auto_shrink="centered") stepped from clean emits exactly forward's
    x[:, :, d:-d] (first output at step 2d+1, like auto_shrink=True); the reference's "centered" starts at
    step d+1 and emits 2d extra leading frames."""
    seed(53)
    path = write_model(os.path.join(str(tmp_path), "d.safetensors"),
                       {"type": "Delay", "name": "", "delay": d, "temporal_fill": "zeros", "auto_shrink": "centered"},
                       frame_shape=(3,))
    model = continual_c.load(path)
    x = torch.randn(1, 3, 8)
    fwd = model.forward(x)
    assert_close(fwd, x[:, :, d:-d], what="forward")
    s = model.stream()
    outs = step_all(s, x.numpy())
    assert [n for n, y in outs if y is not None] == list(range(2 * d + 1, 9))
    assert_close(stack([y for _, y in outs]), fwd, what="steps == forward")
    co = _co()
    if co is not None:
        cd = co.Delay(d, auto_shrink="centered")
        with torch.no_grad():
            r = [cd.forward_step(x[:, :, t]) for t in range(8)]
        assert [n for n, y in enumerate(r, 1) if y is not None] == list(range(d + 1, 9))


# ---- Q1: temporal kernel 1 with stride in forward_step ----------------------------------------------------
def test_q1_kt1_strided_conv_decimates_in_step_mode(tmp_path):
    """continual-c: Conv with k_t=1, s_t=2 emits at steps 1, 3, 5, ... (torch's frames) in forward_step; the
    reference's forward_step re-initialises its phase each call and emits every step."""
    seed(54)
    conv = nn.Conv2d(2, 2, (1, 3), stride=(2, 1), padding=(0, 1))
    x = torch.randn(1, 2, 7, 4)
    model = export_load(conv, tmp_path, input_shape=(2, 4))
    outs = step_all(model.stream(), x.numpy())
    assert [n for n, y in outs if y is not None] == [1, 3, 5, 7]
    assert_close(stack([y for _, y in outs]), torch_forward(conv, x))
    co = _co()
    if co is not None:
        cc = co.Conv2d(2, 2, (1, 3), stride=(2, 1), padding=(0, 1))
        cc.load_state_dict(conv.state_dict())
        with torch.no_grad():
            r = [cc.forward_step(x[:, :, t]) for t in range(7)]
        assert all(y is not None for y in r)
