"""Depthwise steps in the channel-vector form (conv.c: dw_pixels_form; kernels/conv_dw.h,
co_dw_pixels): stride-1 "same" convs with short rows keep a ring of input frames, pixel-major, and
sum all temporal and spatial taps of an output at once. Against torch.nn in every mode: channel
counts around the vector widths (masked tails, blocks of several vectors), edge pixels, dilation,
replicate padding (spatial and temporal fill), temporal stride, no bias, batch > 1, Conv1d /
Conv2d / Conv3d."""
import pytest
import torch
from torch import nn

from helpers import check_modes, export_load, seed, torch_forward


def _id(c):
    return "-".join("%s%s" % kv for kv in c.items())


CASES = [
    dict(c=37, k=(3, 3, 3), p=(1, 1, 1), hw=(5, 5)),
    dict(c=64, k=(3, 3, 3), p=(1, 1, 1), hw=(10, 10)),
    dict(c=19, k=(3, 3, 3), p=(1, 1, 1), hw=(3, 16)),
    dict(c=33, k=(3, 3, 3), p=(2, 2, 2), dil=(1, 2, 2), hw=(6, 7)),
    dict(c=20, k=(3, 3, 3), p=(1, 1, 1), hw=(5, 6), mode="replicate"),
    dict(c=24, k=(3, 3, 3), p=(0, 1, 1), s=(2, 1, 1), hw=(4, 5), bias=False),
    dict(c=17, k=(2, 1, 3), p=(1, 0, 1), s=(2, 1, 1), hw=(2, 9)),
    dict(c=40, k=(3, 5, 5), p=(1, 2, 2), hw=(5, 5)),
    dict(c=9, k=(3, 3, 3), p=(1, 1, 1), hw=(1, 1)),
]


@pytest.mark.parametrize("cfg", CASES, ids=[_id(c) for c in CASES])
def test_depthwise_pixels_conv3d(tmp_path, cfg):
    seed(21)
    c, (h, w) = cfg["c"], cfg["hw"]
    conv = nn.Conv3d(c, c, cfg["k"], stride=cfg.get("s", 1), padding=cfg["p"], dilation=cfg.get("dil", 1), groups=c,
                     bias=cfg.get("bias", True), padding_mode=cfg.get("mode", "zeros"))
    x = torch.randn(2, c, 9, h, w)
    model = export_load(conv, tmp_path, input_shape=(c, h, w))
    check_modes(model, x, torch_forward(conv, x))


@pytest.mark.parametrize("nd", [1, 2])
def test_depthwise_pixels_conv1d_conv2d(tmp_path, nd):
    seed(22)
    c = 35
    cls = nn.Conv1d if nd == 1 else nn.Conv2d
    conv = cls(c, c, 3, padding=1, groups=c)
    x = torch.randn(3, c, 10) if nd == 1 else torch.randn(2, c, 10, 7)
    model = export_load(conv, tmp_path, input_shape=(c,) if nd == 1 else (c, 7))
    check_modes(model, x, torch_forward(conv, x))
