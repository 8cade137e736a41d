"""Helpers for the tests of issue 4 (pooling, recurrent, routing, utility modules, the reference's
composition examples): oracles built from torch or from the reference package `continual` (co).

Nothing here imports `continual` at module level: tests that need it call pytest.importorskip first."""
import numpy as np
import torch

from helpers import assert_close, check_modes, expected_step_index, frames, to_np

__all__ = ["co_steps", "co_steps_clip", "randomise_bn", "randomise_norms", "step_oracle_from", "check_steps_against",
           "window_oracle", "check_with_step_oracle", "differs"]


def randomise_bn(bn, gen=None):
    """Random running statistics and affine parameters (so eval-mode BN is not the identity)."""
    with torch.no_grad():
        bn.running_mean.normal_(generator=gen)
        bn.running_var.uniform_(0.5, 2.0, generator=gen)
        if bn.weight is not None:
            bn.weight.normal_(generator=gen)
            bn.bias.normal_(generator=gen)


def randomise_norms(net):
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            randomise_bn(m)
    return net


def co_steps(net, x):
    """The reference module's forward_step outputs frame by frame from a clean state (list, None kept)."""
    net.eval()
    net.clean_state()
    x = torch.as_tensor(x)
    with torch.no_grad():
        out = [net.forward_step(x[:, :, t]) for t in range(x.shape[2])]
    net.clean_state()
    return [None if o is None else to_np(o) for o in out]


def co_steps_clip(net, x, pad_end=False):
    net.eval()
    net.clean_state()
    with torch.no_grad():
        y = net.forward_steps(torch.as_tensor(x), pad_end=pad_end)
    net.clean_state()
    return None if y is None else to_np(y)


def step_oracle_from(outs):
    """steps_oracle(n) for check_modes from a list of per-step outputs (index n-1)."""
    return lambda n: outs[n - 1] if n - 1 < len(outs) else None


def check_steps_against(model, x, outs, tol=1e-5, what="step"):
    """Our stream, frame by frame from clean, emits exactly `outs` (None where None)."""
    x = to_np(x)
    s = model.stream(x.shape[0], tuple(x.shape[1:2]) + tuple(x.shape[3:]))
    for n, (f, e) in enumerate(zip(frames(x), outs), 1):
        y = s.forward_step(f)
        assert (y is None) == (e is None), "%s %d: expected %s, got %s" % (
            what, n, "None" if e is None else "an output", "None" if y is None else "an output")
        if e is not None:
            assert_close(y, e, tol, "%s %d" % (what, n))
    s.close()


def window_oracle(ref_steps, delay, stride):
    """steps_oracle(n) from a clip of step outputs aligned like a conv (output j at step delay+1+j*stride)."""
    ref_steps = to_np(ref_steps)

    def oracle(n):
        j = expected_step_index(n, delay, stride)
        if j is None or j >= ref_steps.shape[2]:
            return None
        return ref_steps[:, :, j]

    return oracle


def check_with_step_oracle(model, x, ref_forward, steps_oracle, pad_end_ref=None, tol=1e-5, **kw):
    """check_modes for modules whose forward and step outputs are different functions of the clip (adaptive
    pooling, Conditional, SE blocks): forward == ref_forward, steps == steps_oracle(n), and (when given)
    forward_steps(pad_end=True) == pad_end_ref."""
    stepped = check_modes(model, x, ref_forward, steps_oracle=steps_oracle, pad_end=False, tol=tol, **kw)
    if pad_end_ref is not None:
        s = model.stream(x.shape[0], tuple(x.shape[1:2]) + tuple(x.shape[3:]))
        got = s.forward_steps(to_np(x), pad_end=True)
        if pad_end_ref is False:
            assert got is None, "forward_steps(pad_end=True): expected no output"
        else:
            assert got is not None, "forward_steps(pad_end=True) gave no output"
            assert_close(got, pad_end_ref, tol, "forward_steps(pad_end=True)")
        s.close()
    return stepped


def differs(a, b, tol=1e-4):
    """True when a and b have different shapes or differ by more than tol somewhere (reference quirks)."""
    if a is None or b is None:
        return (a is None) != (b is None)
    a, b = to_np(a), to_np(b)
    if a.shape != b.shape:
        return True
    return not np.allclose(a, b, atol=tol, rtol=0, equal_nan=True)
