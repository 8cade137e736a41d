"""Analytic MACs per step of the zoo models at their paper configuration, against the papers.

    python3 -m tools.zoo macs [NAME ...] [--small]

Runs each model's `forward` on clips of T and T + stride frames (batch 1) with hooks on the conv
and linear leaves and on the custom spatial units (their own `zoo_macs` formula: graph products,
adaptive graphs, joint attention), and reports the difference / stride: the steady-state MACs per
input frame, averaged over a stride period (common.macs_per_step). CoOadTR uses the matrix-product
formula of cooadtr.analytic_macs (the continual attention's own algorithm). Paper sizes take a
few seconds to a minute each on 2 cores (CoSlow and CoI3D are R50s over 8-9 frames of 224x224).
"""
import time

import torch

from . import MODELS, cooadtr
from .common import macs_per_step


def model_macs(spec, small=False, emitting=False):
    """MACs per step (averaged over a stride period; emitting=True: a step on which every layer
    runs once)."""
    kw = spec.kwargs(small)
    if spec.blocks:
        return cooadtr.analytic_macs(spec.blocks, **{**cooadtr.THUMOS, **kw})
    net = spec.build(small=small).eval()
    T = spec.macs_clip(kw)
    return macs_per_step(net, spec.input_shape(small), T, period=spec.stride, emitting=emitting)


def report(names, small=False):
    torch.set_num_threads(2)
    print("| model | analytic GMACs/step (stride-period average) | emitting step | paper GFLOPs/step |")
    print("|---|---:|---:|---:|")
    for n in names:
        spec = MODELS[n]
        t0 = time.time()
        m = model_macs(spec, small)
        e = model_macs(spec, small, emitting=True) if spec.stride > 1 else m
        print("| %s | %.4g | %.4g | %.4g |  (%.0f s)" % (spec.title, m / 1e9, e / 1e9, spec.paper_gflops,
                                                        time.time() - t0), flush=True)
