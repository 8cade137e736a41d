"""Pure-Python checks of the zoo against the reference (no continual-c involved):

    python3 -m tools.zoo verify [NAME ...]

Per model, small size, random weights: the oracle is computed, and cross-checked with an
independent computation:
  steps    models: reference forward (clip) aligned by delay/stride, where that is the same
           function (CoSlow, CoI3D, CoOadTR-b1 windowed); CoX3D: forward differs by design
           (frame-wise SE), reported only
  forward  models: the reference's steps with its kernel-1 strided conv fixed (Q1) must equal
           the clip oracle
  windowed (CoOadTR-b2): the reference's steps equal it before step 2n-1 (Q2 after)
"""
import time

import numpy as np
import torch

from . import MODELS, oracles
from .common import randomize


def fix_q1(net):
    """Let kernel-1 strided continual convs keep their (empty-buffer) state between steps, so
    their phase counter runs: the reference's Q1 bug, fixed on this instance only."""
    from continual.conv import _ConvCoNd

    n = 0
    for m in net.modules():
        if isinstance(m, _ConvCoNd) and m.kernel_size[0] == 1 and m.stride[0] > 1:
            m._zoo_has_state = False

            def get_state(self=m):
                return (self.state_buffer, self.state_index, self.stride_index) if self._zoo_has_state else None

            def set_state(state, self=m):
                self.state_buffer, self.state_index, self.stride_index = state
                self._zoo_has_state = True

            def clean_state(self=m, orig=m.clean_state):
                orig()
                self._zoo_has_state = False

            m.get_state, m.set_state, m.clean_state = get_state, set_state, clean_state
            n += 1
    return n


def fix_linear_steps(net):
    """co.Linear with a negative channel_dim: in 1.2.4 its forward_step counts the dim against the
    step tensor (no time dim); count it against the clip instead (one dim less), this instance only."""
    import continual as co

    n = 0
    for m in net.modules():
        if isinstance(m, co.Linear) and m.channel_dim < -1:
            def step(x, *args, m=m, **kw):
                y = torch.nn.functional.linear(x.movedim(m.channel_dim + 1, -1), m.weight, m.bias)
                return y.movedim(-1, m.channel_dim + 1)

            m.forward_step = step
            n += 1
    return n


def fix_takes_time_squeeze(net):
    """The skeleton nets' last Lambda(squeeze(-1), takes_time=True) fails in 1.2.4's forward_step
    on the (N, classes) output; give it the identity for steps, this instance only."""
    import continual as co

    n = 0
    for m in net.modules():
        if isinstance(m, co.Lambda) and m.takes_time and m.forward_step_only_fn is None:
            m.forward_step_only_fn = lambda x: x
            n += 1
    return n


def small_clip(spec, seed=1):
    kw = spec.kwargs(small=True)
    shape = spec.input_shape(small=True)
    g = torch.Generator().manual_seed(seed)
    T = spec.small_frames
    return torch.randn(1, shape[0], T, *shape[1:], generator=g)


def build_small(spec, seed=0):
    torch.manual_seed(seed)
    net = spec.build(small=True)
    randomize(net, seed)
    return net.eval()


def _diff(a, b):
    keys = sorted(set(a) & set(b))
    if not keys:
        return float("nan"), 0
    return max(float(np.abs(a[k].reshape(b[k].shape) - b[k]).max()) for k in keys), len(keys)


def verify(name):
    spec = MODELS[name]
    t0 = time.time()
    net = build_small(spec)
    x = small_clip(spec)
    exp = oracles.oracle(spec, net, x)
    line = "%-11s delay %s stride %s: %d oracle outputs (steps %s..%s)" % (
        name, net.delay, tuple(net.stride), len(exp), min(exp) if exp else "-", max(exp) if exp else "-")
    if spec.oracle == "steps":
        if spec.blocks == 1:
            w = oracles.windowed(net, x, 1)
            d, k = _diff(exp, w)
            line += "; reference steps vs windowed torch.nn: %.2g over %d" % (d, k)
        else:
            f = oracles.reference_forward(net, x)
            d, k = _diff(exp, f)
            same = set(exp) == set(f)
            line += "; vs reference forward: %.2g over %d (emit pattern %s)%s" % (
                d, k, "same" if same else "differs", " [differs by design: frame-wise SE]" if "x3d" in name else "")
    elif spec.oracle == "forward":
        fixed = fix_q1(net) + fix_linear_steps(net) + fix_takes_time_squeeze(net)
        st = oracles.reference_steps(net, x)
        d, k = _diff(st, exp)
        line += "; reference steps with %d instance patches (Q1 convs, channel_dim -4 step, squeeze step) vs oracle: %.2g over %d, emit pattern %s" % (
            fixed, d, k, "same" if set(st) == set(exp) else "DIFFERS %s vs %s" % (sorted(st)[:4], sorted(exp)[:4]))
    else:
        st = oracles.reference_steps(net, x)
        n = spec.small["seq_len"]
        early = {k: v for k, v in st.items() if k < 2 * n - 1}
        late = {k: v for k, v in st.items() if k >= 2 * n - 1}
        d1, k1 = _diff(early, exp)
        d2, k2 = _diff(late, exp)
        line += "; reference steps vs windowed: %.2g before step %d (%d), %.2g after (%d, Q2)" % (
            d1, 2 * n - 1, k1, d2, k2)
    scale = max(float(np.abs(v).max()) for v in exp.values())
    print(line + "; max |out| %.3g; %.1f s" % (scale, time.time() - t0), flush=True)


def main(names):
    torch.set_num_threads(2)
    for n in names or list(MODELS):
        verify(n)
