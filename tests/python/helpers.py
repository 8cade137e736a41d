"""Shared helpers of the continual_c test suite: export + load, tolerances, and the checks of the
three forward modes against an oracle computed with torch."""
import json
import os

import numpy as np
import torch

import continual_c

TOL = 1e-5


def seed(n=0):
    torch.manual_seed(n)
    np.random.seed(n)


def to_np(t):
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().float().numpy()
    return np.asarray(t, dtype=np.float32)


def assert_close(actual, expected, tol=TOL, what=""):
    """|actual - expected| <= tol * max(1, max|expected|), shapes equal."""
    a = to_np(actual)
    e = to_np(expected)
    assert a.shape == e.shape, "%s: shape %s != expected %s" % (what, a.shape, e.shape)
    if a.size == 0:
        return
    assert np.all(np.isfinite(a) == np.isfinite(e)), "%s: non-finite values differ" % what
    fin = np.isfinite(e)
    scale = max(1.0, float(np.abs(e[fin]).max())) if fin.any() else 1.0
    err = float(np.abs(a[fin] - e[fin]).max()) if fin.any() else 0.0
    assert err <= tol * scale, "%s: max abs error %.3g > %.3g (scale %.3g)" % (what, err, tol * scale, scale)


def torch_forward(module, x):
    module.eval()
    with torch.no_grad():
        return module(x)


def export_load(module, tmp_path, input_shape=None, name="model.safetensors", mutate=None):
    """Export `module`, optionally edit the network JSON (mutate(net) -> net), and load it."""
    path = os.path.join(str(tmp_path), name)
    # a network that is rewritten afterwards may not run as first written: the load check waits
    continual_c.export(module, path, input_shape=input_shape, check=mutate is None)
    if mutate is not None:
        rewrite_network(path, mutate)
    return continual_c.load(path)


def rewrite_network(path, mutate):
    net, fs, meta, tensors = continual_c.read_model_file(path)
    net = mutate(net)
    meta = dict(meta)
    meta["network"] = json.dumps(net)
    continual_c.write_safetensors(path, tensors, meta)


def write_model(path, network, tensors=None, frame_shape=None):
    """A model file written by hand (network dict, {name: array})."""
    meta = {"format": "continual-c", "format_version": "1", "network": json.dumps(network)}
    if frame_shape is not None:
        meta["frame_shape"] = json.dumps(list(frame_shape))
    arrays = {}
    for k, v in (tensors or {}).items():
        v = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
        arrays[k] = v.astype(np.float32) if v.dtype.kind == "f" else v.astype(np.int64)
    continual_c.write_safetensors(path, arrays, meta)
    return path


def frames(x):
    return [x[:, :, t] for t in range(x.shape[2])]


def step_all(stream, x):
    """Feed x frame by frame; list of (n (1-based), output or None)."""
    return [(n + 1, stream.forward_step(f)) for n, f in enumerate(frames(x))]


def stack(outs):
    outs = [o for o in outs if o is not None]
    return np.stack(outs, axis=2) if outs else None


def expected_step_index(n, delay, stride):
    """Index j of the forward output that step n (1-based) emits, or None (conv-like alignment:
    outputs at steps delay + 1 + j * stride)."""
    m = n - delay - 1
    if m < 0 or m % stride:
        return None
    return m // stride


def check_modes(model, x, ref, *, delay=None, stride=None, tol=TOL, pad_end=True, batch=None, steps_oracle=None,
                peek=True, save_restore=True, two_streams=True):
    """The full protocol on one clip:
    (a) forward == ref; (b) steps from a clean stream emit ref[:, :, j] at step delay+1+j*stride and None
    elsewhere (steps_oracle(n) -> expected output or None overrides this); (c) forward_steps: with pad_end
    == ref (when pad_end), without pad_end == the stacked steps, and split into two calls likewise;
    (d) update_state=False leaves the state bit-identical and gives the output of the real step;
    (e) save/restore mid-stream continues identically (other stream and same stream);
    (f) two streams of one model interleaved do not interfere."""
    x = to_np(x)
    ref = to_np(ref)
    B = x.shape[0]
    frame_shape = tuple(x.shape[1:2]) + tuple(x.shape[3:])
    T = x.shape[2]
    delay = model.delay if delay is None else delay
    stride = model.stride if stride is None else stride

    # (a)
    assert_close(model.forward(x), ref, tol, "forward")

    def oracle(n):
        if steps_oracle is not None:
            return steps_oracle(n)
        j = expected_step_index(n, delay, stride)
        if j is None:
            return None
        assert j < ref.shape[2], "step %d would emit forward output %d of %d" % (n, j, ref.shape[2])
        return ref[:, :, j]

    # (b)
    s = model.stream(B, frame_shape)
    outs = step_all(s, x)
    for n, y in outs:
        e = oracle(n)
        if e is None:
            assert y is None, "step %d: expected no output, got one" % n
        else:
            assert y is not None, "step %d: expected an output, got None" % n
            assert_close(y, e, tol, "step %d" % n)
    stepped = stack([y for _, y in outs])

    # (c)
    s.clean_state()
    ys = s.forward_steps(x, pad_end=False)
    if stepped is None:
        assert ys is None
    else:
        assert ys is not None
        assert_close(ys, stepped, tol, "forward_steps")
    if pad_end:
        s.clean_state()
        assert_close(s.forward_steps(x, pad_end=True), ref, tol, "forward_steps(pad_end=True)")
        # split: first part without, second part with end padding
        if T >= 2:
            s.clean_state()
            h = T // 2
            a = s.forward_steps(x[:, :, :h])
            b = s.forward_steps(x[:, :, h:], pad_end=True)
            got = stack([p[:, :, i] for p in (a, b) if p is not None for i in range(p.shape[2])])
            assert_close(got, ref, tol, "split forward_steps")
        # end of input after single steps (co_stream_finish): the steps' outputs, then the flushed
        # tail, are the padded forward; the stream is clean afterwards
        s.clean_state()
        clean = s.save_state()
        got = [y for y in (s.forward_step(f) for f in frames(x)) if y is not None]
        tail = s.finish()
        got += [] if tail is None else [tail[:, :, i] for i in range(tail.shape[2])]
        assert_close(stack(got), ref, tol, "forward_step x T, then finish()")
        assert s.save_state() == clean, "finish() did not leave the stream clean"
        # ... and after a save mid-stream restored into another stream (fail-over)
        if T >= 2:
            h = T // 2
            got = [y for y in (s.forward_step(f) for f in frames(x)[:h]) if y is not None]
            s2 = model.stream(B, frame_shape)
            s2.load_state(s.save_state())
            got += [y for y in (s2.forward_step(f) for f in frames(x)[h:]) if y is not None]
            tail = s2.finish()
            got += [] if tail is None else [tail[:, :, i] for i in range(tail.shape[2])]
            assert_close(stack(got), ref, tol, "steps, save, restore elsewhere, steps, finish()")
            s2.close()
            s.clean_state()
        # the end padding is discarded: the state after pad_end=True is the state after pad_end=False
        s.clean_state()
        s.forward_steps(x, pad_end=False)
        after_plain = s.save_state()
        s.clean_state()
        s.forward_steps(x, pad_end=True)
        assert s.save_state() == after_plain, "forward_steps(pad_end=True) kept state from the end padding"
    s.clean_state()

    # (d) peek
    if peek:
        s.clean_state()
        for n, f in enumerate(frames(x), 1):
            before = s.save_state()
            yp = s.forward_step(f, update_state=False)
            assert s.save_state() == before, "step %d: update_state=False changed the state" % n
            y = s.forward_step(f)
            if y is None:
                assert yp is None, "step %d: peek gave an output, the real step none" % n
            else:
                assert yp is not None, "step %d: peek gave none, the real step an output" % n
                np.testing.assert_array_equal(yp, y)
        before = s.save_state()
        r1 = s.forward_steps(x, update_state=False)
        r2 = s.forward_steps(x, pad_end=True, update_state=False)
        assert s.save_state() == before, "forward_steps(update_state=False) changed the state"
        r3 = s.forward_steps(x, update_state=True)
        if r1 is None:
            assert r3 is None
        else:
            np.testing.assert_array_equal(r1, r3)
        assert r2 is None or r2.shape[2] >= (0 if r1 is None else r1.shape[2])

    # (e) save / restore mid-stream
    if save_restore:
        s.clean_state()
        h = max(1, T // 2)
        for f in frames(x)[:h]:
            s.forward_step(f)
        saved = s.save_state()
        rest = [s.forward_step(f) for f in frames(x)[h:]]
        s2 = model.stream(B, frame_shape)
        s2.load_state(saved)
        assert s2.save_state() == saved
        rest2 = [s2.forward_step(f) for f in frames(x)[h:]]
        s.load_state(saved)
        rest3 = [s.forward_step(f) for f in frames(x)[h:]]
        for i, (a, b, c) in enumerate(zip(rest, rest2, rest3)):
            assert (a is None) == (b is None) == (c is None), "restored stream differs at step %d" % (h + i + 1)
            if a is not None:
                np.testing.assert_array_equal(a, b)
                np.testing.assert_array_equal(a, c)
        s2.close()

    # (f) two streams interleaved
    if two_streams:
        x2 = np.ascontiguousarray(x[::-1] * -0.5 + 0.25)
        sa = model.stream(B, frame_shape)
        sb = model.stream(B, frame_shape)
        solo_b = [sb.forward_step(f) for f in frames(x2)]
        sb.clean_state()
        inter_a, inter_b = [], []
        for fa, fb in zip(frames(x), frames(x2)):
            inter_a.append(sa.forward_step(fa))
            inter_b.append(sb.forward_step(fb))
        for (n, y), ya in zip(outs, inter_a):
            assert (y is None) == (ya is None)
            if y is not None:
                np.testing.assert_array_equal(y, ya)
        for yb, ysb in zip(solo_b, inter_b):
            assert (yb is None) == (ysb is None)
            if yb is not None:
                np.testing.assert_array_equal(yb, ysb)
    return stepped


# ---- temporal properties of torch networks (semantics.md §2), an oracle independent of the C side --
def temporal_props(m):
    """(receptive_field, stride, padding, delay) of a torch.nn network of convs / frame-local modules."""
    from torch import nn

    if isinstance(m, nn.Sequential):
        rf, s, p = 1, 1, 0
        first = True
        for c in m:
            r_i, s_i, p_i, _ = temporal_props(c)
            if first:
                rf, s, p = r_i, s_i, p_i
                first = False
            else:
                rf = rf + (r_i - 1) * s
                p = p + p_i * s
                s = s * s_i
        return rf, s, p, rf - 1 - p
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        k, s, p = m.kernel_size[0], m.stride[0], m.padding[0]
        return k, s, p, k - 1 - p
    return 1, 1, 0, 0
