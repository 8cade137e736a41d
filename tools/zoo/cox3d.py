"""CoX3D-S/M/L (Hedegaard & Iosifidis, "Continual 3D Convolutional Neural Networks for Real-time
Processing of Videos", ECCV 2022), written from the paper and X3D's public configs (co3d
models/x3d/hparams/{s,m,l}.yaml): X3D (Feichtenhofer 2020) with every Conv3d continual, a
frame-wise squeeze-excitation and a continual average pool over `temporal_window_size` frames.

Layout as the co3d authors write it: a stem (spatial 1x3x3 conv then depthwise temporal k=5
conv), four residual stages of bottlenecks (1x1x1 -> depthwise 3x3x3 [+SE on every other
block] -> Swish -> 1x1x1), and a head conv_5 -> pool -> lin_5 -> co.Linear(channel_dim=1) ->
Conditional(not training, Softmax) -> Lambda(view).
"""
import math
from collections import OrderedDict

import torch
from torch import nn

import continual as co

from .common import Swish

# (image size, temporal window) per size, from the X3D configs; depth factor 2.2 (S, M) / 5.0 (L)
X3D_SIZES = {
    "s": dict(image_size=160, temporal_window_size=13, depth_factor=2.2),
    "m": dict(image_size=224, temporal_window_size=16, depth_factor=2.2),
    "l": dict(image_size=312, temporal_window_size=16, depth_factor=5.0),
}


def round_width(width, multiplier, min_depth=8, divisor=8):
    width = width * multiplier
    w = max(min_depth, int(width + divisor / 2) // divisor * divisor)
    if w < 0.9 * width:
        w += divisor
    return int(w)


def round_repeats(repeats, multiplier):
    return int(math.ceil(multiplier * repeats))


def squeeze_excite(channels, ratio=0.0625):
    """SE over the current frame: pool H, W of one frame (kernel_size=1 in time), two 1x1 convs,
    sigmoid gate, multiplied back onto the input."""
    hidden = round_width(channels, ratio)
    return co.Residual(
        co.Sequential(OrderedDict([
            ("avg_pool", co.AdaptiveAvgPool3d(output_size=(1, 1, 1), kernel_size=1)),
            ("fc1", co.Conv3d(channels, hidden, 1, bias=True)),
            ("fc1_act", nn.ReLU()),
            ("fc2", co.Conv3d(hidden, channels, 1, bias=True)),
            ("fc2_sig", nn.Sigmoid()),
        ])),
        reduce="mul",
    )


def bottleneck(c_in, c_out, c_inner, kt, stride, use_se):
    layers = [
        ("a", co.Conv3d(c_in, c_inner, kernel_size=1, bias=False)),
        ("a_bn", co.forward_stepping(nn.BatchNorm3d(c_inner))),
        ("a_relu", nn.ReLU(inplace=True)),
        ("b", co.Conv3d(c_inner, c_inner, kernel_size=(kt, 3, 3), stride=(1, stride, stride),
                        padding=(kt // 2, 1, 1), groups=c_inner, bias=False)),
        ("b_bn", co.forward_stepping(nn.BatchNorm3d(c_inner))),
    ]
    if use_se:
        layers.append(("se", squeeze_excite(c_inner)))
    layers += [
        ("b_relu", co.forward_stepping(Swish())),
        ("c", co.Conv3d(c_inner, c_out, kernel_size=1, bias=False)),
        ("c_bn", co.forward_stepping(nn.BatchNorm3d(c_out))),
    ]
    return co.Sequential(OrderedDict(layers))


def res_block(c_in, c_out, c_inner, kt, stride, use_se):
    main = co.Sequential(OrderedDict([("branch2", bottleneck(c_in, c_out, c_inner, kt, stride, use_se))]))
    if c_in == c_out and stride == 1:
        shortcut = co.Delay(main.delay)
    else:
        shortcut = co.Sequential(OrderedDict([
            ("branch1", co.Conv3d(c_in, c_out, kernel_size=1, stride=(1, stride, stride), bias=False)),
            ("branch1_bn", nn.BatchNorm3d(c_out)),
        ]))
    return co.Sequential(co.BroadcastReduce(shortcut, main, reduce="sum"), nn.ReLU())


def head(c_in, c_inner, c_out, num_classes, pool_size, dropout_rate, act="softmax"):
    modules = [
        ("conv_5", co.Conv3d(c_in, c_inner, kernel_size=1, bias=False)),
        ("conv_5_bn", nn.BatchNorm3d(c_inner)),
        ("conv_5_relu", nn.ReLU(True)),
        ("avg_pool", co.AvgPool3d(pool_size, stride=1)),
        ("lin_5", co.Conv3d(c_inner, c_out, kernel_size=1, bias=False)),
        ("lin_5_relu", nn.ReLU(True)),
    ]
    if dropout_rate > 0:
        modules.append(("dropout", nn.Dropout(dropout_rate)))
    modules.append(("projection", co.Linear(c_out, num_classes, bias=True, channel_dim=1)))

    def not_training(module, *args):
        return not module.training

    final = {"softmax": nn.Softmax(dim=1), "sigmoid": nn.Sigmoid()}[act]
    modules.append(("act", co.Conditional(not_training, final)))

    def view(x):
        return x.view(x.shape[0], -1)

    modules.append(("view", co.Lambda(view)))
    return co.Sequential(OrderedDict(modules))


def CoX3D(size="s", image_size=None, temporal_window_size=None, num_classes=400, depth_factor=None,
          width_factor=2.0, bottleneck_factor=2.25, conv1_dim=12, conv5_dim=2048, dropout_rate=0.5):
    cfg = X3D_SIZES[size]
    image_size = image_size or cfg["image_size"]
    window = temporal_window_size or cfg["temporal_window_size"]
    depth_factor = depth_factor or cfg["depth_factor"]

    c_stem = round_width(conv1_dim, width_factor)
    stem = co.Sequential(OrderedDict([("pathway0_stem", co.Sequential(OrderedDict([
        ("conv_xy", co.Conv3d(3, c_stem, kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False)),
        ("conv", co.Conv3d(c_stem, c_stem, kernel_size=(5, 1, 1), padding=(2, 0, 0), groups=c_stem, bias=False)),
        ("bn", nn.BatchNorm3d(c_stem)),
        ("relu", nn.ReLU(True)),
    ])))]))
    modules = [("s1", stem)]

    # stage widths before the width factor: 12, 24, 48, 96 (x2 -> 24, 48, 96, 192)
    widths, w = [], conv1_dim
    for i in range(4):
        widths.append(w)
        w = round_width(w, 2.0)
    depths = [1, 2, 5, 3]
    c_in = c_stem
    c_inner = None
    for i, (w, d) in enumerate(zip(widths, depths)):
        c_out = round_width(w, width_factor)
        c_inner = int(bottleneck_factor * c_out)
        blocks = OrderedDict(
            (f"pathway0_res{j}", res_block(c_in if j == 0 else c_out, c_out, c_inner, 3,
                                           2 if j == 0 else 1, use_se=(j + 1) % 2 == 1))
            for j in range(round_repeats(d, depth_factor))
        )
        modules.append((f"s{i + 2}", co.Sequential(blocks)))
        c_in = c_out
    s = int(math.ceil(image_size / 32.0))
    modules.append(("head", head(c_in, c_inner, conv5_dim, num_classes, (window, s, s), dropout_rate)))
    return co.Sequential(OrderedDict(modules))


def build_s(**kw):
    return CoX3D("s", **kw)


def build_m(**kw):
    return CoX3D("m", **kw)


def build_l(**kw):
    return CoX3D("l", **kw)
