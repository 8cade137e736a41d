"""The whole-clip convolution (conv.c: products over tiles of output frames) and the depthwise tap
kernel (kernels/conv_dw.*) in step and clip mode, against torch.nn: odd sizes, spatial and temporal
strides, dilation, groups, depthwise multipliers, padding modes, batch > 1, clips long enough to
need several column tiles."""
import pytest
import torch
from torch import nn

from helpers import check_modes, export_load, seed, torch_forward


def _id(c):
    return "-".join("%s%s" % kv for kv in c.items())


# Depthwise (groups == in_channels): multiplier 1 and 2 use the tap kernel, 5 the products.
DEPTHWISE3D = [
    dict(c=5, m=1, k=(3, 3, 3), p=(1, 1, 1)),
    dict(c=5, m=1, k=(3, 3, 3), p=(1, 1, 1), s=(1, 2, 2)),
    dict(c=3, m=1, k=(3, 3, 5), p=(1, 2, 1), s=(1, 3, 2), dil=(1, 2, 1)),
    dict(c=4, m=2, k=(2, 3, 3), p=(1, 1, 1), s=(2, 1, 2), mode="replicate"),
    dict(c=3, m=1, k=(5, 1, 1), p=(2, 0, 0)),  # CoX3D's stem: the whole frame is one row
    dict(c=3, m=1, k=(3, 1, 1), p=(0, 0, 0), s=(2, 1, 1), bias=False),
    dict(c=3, m=1, k=(1, 3, 3), p=(0, 0, 0), s=(1, 2, 1)),  # no padding, row stride only
    dict(c=4, m=1, k=(3, 3, 3), p=(2, 1, 0), mode="replicate"),
    dict(c=2, m=5, k=(3, 3, 3), p=(1, 1, 1), s=(1, 2, 2)),
]


@pytest.mark.parametrize("cfg", DEPTHWISE3D, ids=[_id(c) for c in DEPTHWISE3D])
def test_depthwise_conv3d(tmp_path, cfg):
    seed(11)
    c = cfg["c"]
    conv = nn.Conv3d(c, c * cfg["m"], cfg["k"], stride=cfg.get("s", 1), padding=cfg["p"], dilation=cfg.get("dil", 1),
                     groups=c, bias=cfg.get("bias", True), padding_mode=cfg.get("mode", "zeros"))
    x = torch.randn(2, c, 9, 11, 13)  # odd sizes; batch 2
    model = export_load(conv, tmp_path, input_shape=(c, 11, 13))
    check_modes(model, x, torch_forward(conv, x))


DEPTHWISE12D = [
    dict(nd=1, k=3, p=1), dict(nd=1, k=4, p=2, s=3, mode="replicate"), dict(nd=1, k=3, p=0, m=2),
    dict(nd=2, k=(3, 5), p=(1, 2), s=(1, 2)), dict(nd=2, k=(2, 3), p=(0, 1), dil=(1, 3), mode="replicate"),
]


@pytest.mark.parametrize("cfg", DEPTHWISE12D, ids=[_id(c) for c in DEPTHWISE12D])
def test_depthwise_conv1d_conv2d(tmp_path, cfg):
    seed(12)
    c, m = 6, cfg.get("m", 1)
    cls = nn.Conv1d if cfg["nd"] == 1 else nn.Conv2d
    conv = cls(c, c * m, cfg["k"], stride=cfg.get("s", 1), padding=cfg["p"], dilation=cfg.get("dil", 1), groups=c,
               padding_mode=cfg.get("mode", "zeros"))
    x = torch.randn(3, c, 10) if cfg["nd"] == 1 else torch.randn(2, c, 10, 17)
    model = export_load(conv, tmp_path, input_shape=(c,) if cfg["nd"] == 1 else (c, 17))
    check_modes(model, x, torch_forward(conv, x))


# The products' paths: 1x1 spatial kernels read the clip itself (stride 1) or gather per tap
# (temporal stride); other kernels go through im2col tiles; groups; replicate padding.
CLIP3D = [
    dict(k=(3, 1, 1), p=(1, 0, 0)),
    dict(k=(3, 1, 1), p=(2, 0, 0), mode="replicate"),
    dict(k=(3, 1, 1), p=(1, 0, 0), s=(2, 1, 1)),
    dict(k=(4, 1, 1), p=(2, 0, 0), s=(3, 1, 1), mode="replicate"),
    dict(k=(3, 3, 3), p=(2, 1, 1), s=(2, 2, 1), groups=3),
    dict(k=(2, 3, 2), p=(1, 0, 1), dil=(1, 2, 2), s=(1, 1, 2), mode="replicate"),
    dict(k=(1, 1, 1), p=(0, 0, 0), s=(1, 2, 2)),
]


@pytest.mark.parametrize("cfg", CLIP3D, ids=[_id(c) for c in CLIP3D])
def test_conv3d_clip_paths(tmp_path, cfg):
    seed(13)
    conv = nn.Conv3d(6, 9, cfg["k"], stride=cfg.get("s", 1), padding=cfg["p"], dilation=cfg.get("dil", 1),
                     groups=cfg.get("groups", 1), padding_mode=cfg.get("mode", "zeros"))
    x = torch.randn(2, 6, 10, 7, 9)
    model = export_load(conv, tmp_path, input_shape=(6, 7, 9))
    check_modes(model, x, torch_forward(conv, x))


@pytest.mark.parametrize("cfg", [dict(s=1), dict(s=2), dict(s=1, mode="replicate")], ids=["s1", "s2", "replicate"])
def test_conv3d_clip_several_tiles(tmp_path, cfg):
    """Frames of 8 x 9 x 41 x 43 columns (127 K floats; a tile holds 256 K): at stride 1 a frame's
    rows take two tiles, at stride 2 a tile holds two frames."""
    seed(14)
    conv = nn.Conv3d(8, 5, 3, stride=(cfg["s"], 1, 1), padding=1, padding_mode=cfg.get("mode", "zeros"))
    x = torch.randn(1, 8, 70, 41, 43)
    model = export_load(conv, tmp_path, input_shape=(8, 41, 43))
    check_modes(model, x, torch_forward(conv, x), peek=False, save_restore=False, two_streams=False)
