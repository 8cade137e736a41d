"""CoSlow (Slow-8x8 R50) and CoI3D (I3D R50), the continual 3D ResNets of the co3d paper
(Hedegaard & Iosifidis, ECCV 2022), written from the paper and SlowFast's public Kinetics configs:
a 7x7 stem with a spatial max pool, four bottleneck stages (3, 4, 6, 3 blocks for depth 50) whose
first 1x1x1 conv carries the temporal kernel (Slow: only res4/res5 have kt=3; I3D: kt=5 stem,
alternating 3/1 kernels and a 2x1x1 temporal max pool after res2), and the head
AvgPool3d -> Dropout -> co.Linear(2048, classes, channel_dim=-4) -> Conditional(not training,
Softmax) -> Lambda(view).
"""
from collections import OrderedDict

from torch import nn

import continual as co

STAGE_DEPTH = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}

# temporal kernels: stem, then one pattern per stage (repeated over the stage's blocks)
TEMPORAL_KERNELS = {
    "slow": ([1], [[1], [1], [3], [3]]),
    "i3d": ([5], [[3], [3, 1], [3, 1], [1, 3]]),
}
TEMPORAL_POOL = {"slow": [1, 1, 1], "i3d": [2, 1, 1]}


def bottleneck(c_in, c_out, c_inner, kt, stride):
    return co.Sequential(OrderedDict([
        ("conv_a", co.Conv3d(c_in, c_inner, kernel_size=(kt, 1, 1), padding=(kt // 2, 0, 0), bias=False)),
        ("norm_a", co.forward_stepping(nn.BatchNorm3d(c_inner))),
        ("relu_a", nn.ReLU(inplace=True)),
        ("conv_b", co.Conv3d(c_inner, c_inner, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                             padding=(0, 1, 1), bias=False)),
        ("norm_b", co.forward_stepping(nn.BatchNorm3d(c_inner))),
        ("relu_b", nn.ReLU(inplace=True)),
        ("conv_c", co.Conv3d(c_inner, c_out, kernel_size=1, bias=False)),
        ("norm_c", co.forward_stepping(nn.BatchNorm3d(c_out))),
    ]))


def res_block(c_in, c_out, c_inner, kt, stride):
    main = co.Sequential(OrderedDict([("branch2", bottleneck(c_in, c_out, c_inner, kt, stride))]))
    if c_in == c_out and stride == 1:
        shortcut = co.Delay(main.delay)
    else:
        shortcut = co.Sequential(OrderedDict([
            ("branch1", co.Conv3d(c_in, c_out, kernel_size=1, stride=(1, stride, stride), bias=False)),
            ("branch1_bn", nn.BatchNorm3d(c_out)),
        ]))
    return co.Sequential(co.BroadcastReduce(shortcut, main, reduce="sum"), nn.ReLU())


def stage(c_in, c_out, c_inner, kernels, n_blocks, stride):
    kts = (kernels * n_blocks)[:n_blocks]
    return co.Sequential(OrderedDict(
        (f"pathway0_res{i}", res_block(c_in if i == 0 else c_out, c_out, c_inner, kts[i], stride if i == 0 else 1))
        for i in range(n_blocks)
    ))


def head(c_in, num_classes, pool_size, dropout_rate, act="softmax"):
    modules = [("avg_pool", co.AvgPool3d(pool_size, stride=1))]
    if dropout_rate > 0:
        modules.append(("dropout", nn.Dropout(dropout_rate)))
    modules.append(("projection", co.Linear(c_in, num_classes, bias=True, channel_dim=-4)))

    def not_training(module, *args):
        return not module.training

    final = {"softmax": nn.Softmax(dim=1), "sigmoid": nn.Sigmoid()}[act]
    modules.append(("act", co.Conditional(not_training, final)))

    def view(x):
        return x.view(x.shape[0], -1)

    modules.append(("view", co.Lambda(view)))
    return co.Sequential(OrderedDict(modules))


def CoResNet(arch, image_size=224, temporal_window_size=8, num_classes=400, depth=50, width_per_group=64,
             num_groups=1, dropout_rate=0.5, stage_depths=None):
    stem_kt, stage_kts = TEMPORAL_KERNELS[arch]
    pool = TEMPORAL_POOL[arch]
    d2, d3, d4, d5 = stage_depths or STAGE_DEPTH[depth]
    w = width_per_group
    inner = num_groups * width_per_group
    s1 = co.Sequential(OrderedDict([
        ("conv", co.Conv3d(3, w, kernel_size=stem_kt + [7, 7], stride=[1, 2, 2],
                           padding=[stem_kt[0] // 2, 3, 3], bias=False)),
        ("norm", nn.BatchNorm3d(w)),
        ("relu", nn.ReLU(True)),
        ("pool_layer", nn.MaxPool3d(kernel_size=[1, 3, 3], stride=[1, 2, 2], padding=[0, 1, 1])),
    ]))
    s2 = stage(w, 4 * w, inner, stage_kts[0], d2, 1)
    s3 = stage(4 * w, 8 * w, 2 * inner, stage_kts[1], d3, 2)
    s4 = stage(8 * w, 16 * w, 4 * inner, stage_kts[2], d4, 2)
    s5 = stage(16 * w, 32 * w, 8 * inner, stage_kts[3], d5, 2)
    pool_size = (temporal_window_size // pool[0], image_size // 32 // pool[1], image_size // 32 // pool[2])
    return co.Sequential(OrderedDict([
        ("0", s1),
        ("1", s2),
        ("pathway0_pool", co.MaxPool3d(kernel_size=pool, stride=pool, padding=[0, 0, 0])),
        ("2", s3),
        ("3", s4),
        ("4", s5),
        ("5", head(32 * w, num_classes, pool_size, dropout_rate)),
    ]))


def build_slow(**kw):
    """CoSlow: Slow-8x8 R50 (8-frame window; the paper's Kinetics config is 256x256)."""
    return CoResNet("slow", **kw)


def build_i3d(**kw):
    """CoI3D: I3D R50 (8-frame window, 224x224)."""
    return CoResNet("i3d", **kw)
