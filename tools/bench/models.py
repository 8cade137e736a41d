"""The rows of the speed comparison: each builds the reference network (a `continual` module, eval,
random weights from a fixed seed) and writes the same network as a continual-c model file.

The builders follow what the measured anchors used (../shared/anchors/bench_reference.py,
../shared/anchors/ort/export_models.py) and the zoo (tools/zoo, paper configurations).
"""
import os
import sys
from dataclasses import dataclass
from typing import Callable, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Retroactive attention at CoOadTR's size (the anchors' "retroactive_mha"): embed 1024, 16 heads,
# a 64-token window.
MHA_EMBED, MHA_HEADS, MHA_TOKENS = 1024, 16, 64

# Which roofline a row is held to (see the targets in README.md, "Speed comparison"):
# compute-bound steps against the sgemm peak, weight-streaming steps against the read bandwidth.
COMPUTE, MEMORY, NEITHER = "compute", "memory", "-"


@dataclass
class Row:
    key: str
    title: str
    frame: Tuple[int, ...]            # frame shape (C, *S) without the batch
    batches: Tuple[int, ...]          # full run
    build: Callable                   # () -> reference continual module (eval)
    export: Callable                  # (module, path) -> writes the continual-c model file
    bound_b1: str = NEITHER           # roofline of the batch-1 step (every batch-8 step is COMPUTE)
    quick: bool = False               # part of --quick
    # continual-c's output frame -> the reference's layout, where they differ (numpy in, numpy out)
    to_reference_layout: Callable = None


def _seeded(fn, seed=0):
    def build():
        import torch

        torch.manual_seed(seed)
        return fn().eval()
    return build


def _zoo(name):
    def build():
        import torch

        if REPO not in sys.path:
            sys.path.insert(0, REPO)
        from tools.zoo import MODELS
        from tools.zoo.common import randomize

        spec = MODELS[name]
        torch.manual_seed(0)
        net = spec.build()
        randomize(net, 0)
        return net.eval()
    return build


def _export_plain(frame):
    def export(net, path):
        import continual_c

        continual_c.export(net, path, input_shape=frame)
    return export


def _mha():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.MultiheadAttention(MHA_EMBED, MHA_HEADS, dropout=0.0, batch_first=True).eval()


def _retro_reference():
    import continual as co

    return co.RetroactiveMultiheadAttention.build_from(_mha(), sequence_len=MHA_TOKENS).eval()


def _retro_export(net, path):
    # The C side is built from the same torch.nn attention (same seed, same weights).
    import continual_c
    from continual_c._export_transformer import ContinualAttention

    continual_c.export(ContinualAttention(_mha(), MHA_TOKENS, "retroactive"), path, input_shape=(MHA_EMBED,))


def _conv3d_single():
    import continual as co

    return co.Conv3d(64, 64, 3)


def _conv3d_stack():
    import continual as co
    from torch import nn

    return co.Sequential(co.Conv3d(3, 64, 3, padding=1), nn.ReLU(), co.Conv3d(64, 64, 3, padding=1), nn.ReLU(),
                         co.AdaptiveAvgPool3d((1, 1, 1), kernel_size=16))


def _conv1d_stack():
    import continual as co
    from torch import nn

    layers = []
    for _ in range(4):
        layers += [co.Conv1d(128, 128, 5, padding=2), nn.ReLU()]
    return co.Sequential(*layers)


ROWS = [
    Row("cooadtr_b1", "CoOadTR-b1", (3072,), (1, 8), _zoo("cooadtr_b1"), _export_plain((3072,)), MEMORY),
    Row("cooadtr_b2", "CoOadTR-b2", (3072,), (8, 1), _zoo("cooadtr_b2"), _export_plain((3072,))),
    # continual-c emits the retroactive window as (B, E, N) (ContinualAttention), the reference as
    # batch_first (B, N, E)
    Row("retro_mha", "Retroactive MHA E1024 h16 n64", (MHA_EMBED,), (8, 1), _retro_reference, _retro_export,
        MEMORY, quick=True, to_reference_layout=lambda y: y.swapaxes(1, 2)),
    Row("conv3d_single", "co.Conv3d(64,64,3) 16x16", (64, 16, 16), (8, 1), _seeded(_conv3d_single),
        _export_plain((64, 16, 16)), quick=True),
    Row("conv3d_stack", "conv3d stack (anchors/ort) 32x32", (3, 32, 32), (8, 1), _seeded(_conv3d_stack),
        _export_plain((3, 32, 32))),
    Row("cox3d_s", "CoX3D-S 160x160", (3, 160, 160), (1, 8), _zoo("cox3d_s"), _export_plain((3, 160, 160)),
        COMPUTE),
    Row("conv1d_stack", "Conv1d stack 4x(128,k5)", (128,), (8, 1), _seeded(_conv1d_stack), _export_plain((128,)),
        quick=True),
]
ROW_BY_KEY = {r.key: r for r in ROWS}

# The whole-clip comparison (continual-c forward vs the reference's forward, i.e. torch.nn).
FORWARD_ROW = "cox3d_s"


def bound(row, batch):
    """The roofline a (row, batch) step is held to."""
    return COMPUTE if batch > 1 else row.bound_b1
