"""The continual skeleton networks of Hedegaard, Heidari & Iosifidis, "Continual Spatio-Temporal
Graph Convolutional Networks" (Pattern Recognition 2023): CoST-GCN, CoA-GCN and CoS-TR on NTU
RGB+D 60 (frames of C=3 coordinates x V=25 joints x M=2 bodies, clips (N, 3, T, 25, 2), T=300).

Written from the paper (and the ST-GCN / 2s-AGCN / ST-TR papers): ten spatio-temporal blocks
(64x4, 128x3, 256x3 channels; temporal stride 2 in blocks 5 and 8; 9-tap temporal convs with
"equal" padding 4), each a frame-local spatial unit wrapped in co.forward_stepping, a continual
temporal conv + BN, and a residual (identity, or a strided kernel-1 temporal conv + BN aligned by a
Delay). Around them the authors' anonymous co.Lambda reshapes, a data BatchNorm1d, spatial pooling,
a continual AvgPool1d over the clip's output frames and co.Linear(channel_dim=1). The spatial
units:
  GraphConvolution            sum_k conv_k(x A_k * M_k), BN, + residual, ReLU       (CoST-GCN)
  AdaptiveGraphConvolution    A_k + M_k + softmax(a_k(x)^T b_k(x) / n, dim=-2)      (CoA-GCN)
  GcnUnitAttention            multi-head self-attention over the joints of a frame (CoS-TR,
                              layers 4-10; layers 1-3 keep the graph convolution)
"""
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

import continual as co

from .common import ntu_graph

# (in, out, stride, residual) per block, before width scaling
BLOCKS = [
    (3, 64, 1, False), (64, 64, 1, True), (64, 64, 1, True), (64, 64, 1, True),
    (64, 128, 2, True), (128, 128, 1, True), (128, 128, 1, True),
    (128, 256, 2, True), (256, 256, 1, True), (256, 256, 1, True),
]


class GraphConvolution(nn.Module):
    """Spatial graph convolution with a learned multiplicative edge mask (ST-GCN)."""

    def __init__(self, in_channels, out_channels, A, bn_momentum=0.1):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        A = torch.as_tensor(A, dtype=torch.float32)
        self.graph_attn = nn.Parameter(torch.ones_like(A))
        self.A = nn.Parameter(A.clone(), requires_grad=False)
        self.num_subset = A.shape[0]
        self.g_conv = nn.ModuleList([nn.Conv2d(in_channels, out_channels, 1) for _ in range(self.num_subset)])
        if in_channels != out_channels:
            self.gcn_residual = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1),
                                              nn.BatchNorm2d(out_channels, momentum=bn_momentum))
        else:
            self.gcn_residual = lambda x: x
        self.bn = nn.BatchNorm2d(out_channels, momentum=bn_momentum)
        self.relu = nn.ReLU()

    def forward(self, x):
        N, C, T, V = x.size()
        A = self.A * self.graph_attn
        sum_ = None
        for i in range(self.num_subset):
            x_a = x.view(N, C * T, V)
            z = self.g_conv[i](torch.matmul(x_a, A[i]).view(N, C, T, V))
            sum_ = z + sum_ if sum_ is not None else z
        sum_ = self.bn(sum_)
        sum_ += self.gcn_residual(x)
        return self.relu(sum_)

    def zoo_randomize(self, g):
        """Test weights: a multiplicative edge mask around 1."""
        self.graph_attn.data.copy_(torch.rand(self.graph_attn.shape, generator=g) + 0.5)

    def zoo_macs(self, x, out):
        N, C, T, V = x.shape
        macs = self.num_subset * (C * T * V * V + C * self.out_channels * T * V)
        if self.in_channels != self.out_channels:
            macs += C * self.out_channels * T * V
        return N * macs


class AdaptiveGraphConvolution(nn.Module):
    """2s-AGCN's adaptive graph convolution: per subset, the fixed graph plus a learned additive
    mask plus a data-dependent graph softmax(a(x)^T b(x) / n) over the joints."""

    def __init__(self, in_channels, out_channels, A, bn_momentum=0.1, coff_embedding=4):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.inter_c = out_channels // coff_embedding
        A = torch.as_tensor(A, dtype=torch.float32)
        self.graph_attn = nn.Parameter(torch.ones_like(A))
        self.A = nn.Parameter(A.clone(), requires_grad=False)
        self.num_subset = A.shape[0]
        self.g_conv = nn.ModuleList()
        self.a_conv = nn.ModuleList()
        self.b_conv = nn.ModuleList()
        for _ in range(self.num_subset):
            self.g_conv.append(nn.Conv2d(in_channels, out_channels, 1))
            self.a_conv.append(nn.Conv2d(in_channels, self.inter_c, 1))
            self.b_conv.append(nn.Conv2d(in_channels, self.inter_c, 1))
        if in_channels != out_channels:
            self.gcn_residual = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1),
                                              nn.BatchNorm2d(out_channels, momentum=bn_momentum))
        else:
            self.gcn_residual = lambda x: x
        self.bn = nn.BatchNorm2d(out_channels, momentum=bn_momentum)
        self.relu = nn.ReLU()
        self.soft = nn.Softmax(-2)

    def forward(self, x):
        N, C, T, V = x.size()
        A = self.A + self.graph_attn
        hidden_ = None
        for i in range(self.num_subset):
            A1 = self.a_conv[i](x).permute(0, 3, 1, 2).contiguous().view(N, V, self.inter_c * T)
            A2 = self.b_conv[i](x).view(N, self.inter_c * T, V)
            # over all the frames it is given: one frame per step; the whole clip in forward
            A1 = self.soft(torch.matmul(A1, A2) / A1.size(-1))  # N V V
            A1 = A1 + A[i]
            x_a = x.view(N, C * T, V)
            z = self.g_conv[i](torch.matmul(x_a, A1).view(N, C, T, V))
            hidden_ = z + hidden_ if hidden_ is not None else z
        hidden_ = self.bn(hidden_)
        hidden_ += self.gcn_residual(x)
        return self.relu(hidden_)

    def zoo_randomize(self, g):
        """Test weights: a small additive edge mask (the authors' all-ones start makes every
        joint talk to every joint and activations grow ~75x per layer with random weights)."""
        self.graph_attn.data.copy_(torch.randn(self.graph_attn.shape, generator=g) * 0.05)

    def zoo_macs(self, x, out):
        N, C, T, V = x.shape
        ic, oc = self.inter_c, self.out_channels
        per_subset = (2 * C * ic * T * V      # a, b embeddings
                      + V * V * ic * T        # a^T b (per frame in steps)
                      + C * T * V * V         # x A
                      + C * oc * T * V)       # g_conv
        macs = self.num_subset * per_subset
        if self.in_channels != self.out_channels:
            macs += C * oc * T * V
        return N * macs


class SpatialAttention(nn.Module):
    """Multi-head self-attention among the joints of one frame (ST-TR's spatial transformer,
    without relative positions): qkv by a 1x1 conv, heads split, q k^T / sqrt(dk_h), softmax over
    the keys, times v, heads merged, a 1x1 output conv. Input (B, C, 1, V): one frame per row."""

    def __init__(self, in_channels, dk, dv, Nh, drop_connect=True):
        super().__init__()
        assert dk % Nh == 0 and dv % Nh == 0
        self.dk, self.dv, self.Nh = dk, dv, Nh
        self.drop_connect = drop_connect
        self.qkv_conv = nn.Conv2d(in_channels, 2 * dk + dv, kernel_size=1)
        self.attn_out = nn.Conv2d(dv, dv, kernel_size=1)

    def split_heads_2d(self, x, Nh):
        B, channels, T, V = x.size()
        return torch.reshape(x, (B, Nh, channels // Nh, T, V))

    def combine_heads_2d(self, x):
        B, Nh, dv, T, V = x.size()
        return torch.reshape(x, (B, Nh * dv, T, V))

    def forward(self, x):
        B, _, T, V = x.size()
        qkv = self.qkv_conv(x)
        q, k, v = torch.split(qkv, [self.dk, self.dk, self.dv], dim=1)
        q = self.split_heads_2d(q, self.Nh)
        k = self.split_heads_2d(k, self.Nh)
        v = self.split_heads_2d(v, self.Nh)
        dkh = self.dk // self.Nh
        q = q * (dkh ** -0.5)
        flat_q = torch.reshape(q, (B, self.Nh, dkh, T * V))
        flat_k = torch.reshape(k, (B, self.Nh, dkh, T * V))
        flat_v = torch.reshape(v, (B, self.Nh, self.dv // self.Nh, T * V))
        logits = torch.matmul(flat_q.transpose(2, 3), flat_k)
        weights = F.softmax(logits, dim=-1)
        if self.drop_connect and self.training:
            mask = torch.bernoulli(0.5 * torch.ones(B * self.Nh * V, device=x.device))
            mask = mask.reshape(B, self.Nh, V).unsqueeze(2).expand(B, self.Nh, V, V)
            weights = weights * mask
            weights = weights / (weights.sum(3, keepdim=True) + 1e-8)
        attn = torch.matmul(weights, flat_v.transpose(2, 3))
        attn = torch.reshape(attn, (B, self.Nh, T, V, self.dv // self.Nh))
        attn = attn.permute(0, 1, 4, 2, 3)
        attn = self.combine_heads_2d(attn)
        return self.attn_out(attn)


class GcnUnitAttention(nn.Module):
    """ST-TR's spatial self-attention unit ("only attention"): a per-frame data BN over the
    C x V features, attention over the joints of each frame, skip connection when the width is
    kept, BN, ReLU."""

    def __init__(self, in_channels, out_channels, A, bn_momentum=0.1, Nh=8, dk_factor=0.25,
                 num_point=25, data_normalization=True, skip_conn=True):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_point = num_point
        self.data_normalization = data_normalization
        self.skip_conn = skip_conn
        self.A = nn.Parameter(torch.as_tensor(A, dtype=torch.float32), requires_grad=False)
        self.data_bn = nn.BatchNorm1d(in_channels * num_point)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.attention_conv = SpatialAttention(in_channels, dk=int(out_channels * dk_factor),
                                               dv=int(out_channels), Nh=Nh)

    def forward(self, x):
        N, C, T, V = x.size()
        x_sum = x
        if self.data_normalization:
            x = x.permute(0, 1, 3, 2).reshape(N, C * V, T)
            x = self.data_bn(x)
            x = x.reshape(N, C, V, T).permute(0, 1, 3, 2)
        # N, C, T, V -> N T, C, 1, V: every frame attends over its own joints
        xa = x.permute(0, 2, 1, 3).reshape(-1, C, 1, V)
        attn_out = self.attention_conv(xa)
        attn_out = attn_out.reshape(N, T, -1, V).permute(0, 2, 1, 3)
        if self.skip_conn and self.in_channels == self.out_channels:
            y = attn_out + x_sum
        else:
            y = attn_out
        y = self.bn(y)
        return self.relu(y)

    def zoo_macs(self, x, out):
        N, C, T, V = x.shape
        a = self.attention_conv
        return N * (T * V * (C * (2 * a.dk + a.dv) + a.dv * a.dv) + T * V * V * (a.dk + a.dv))


def CoGraphConvolution(in_channels, out_channels, A, bn_momentum=0.1):
    return co.forward_stepping(GraphConvolution(in_channels, out_channels, A, bn_momentum))


def CoAdaptiveGraphConvolution(in_channels, out_channels, A, bn_momentum=0.1):
    return co.forward_stepping(AdaptiveGraphConvolution(in_channels, out_channels, A, bn_momentum))


def CoGcnUnitAttention(in_channels, out_channels, A, bn_momentum=0.1, Nh=8):
    return co.forward_stepping(GcnUnitAttention(in_channels, out_channels, A, bn_momentum, Nh=Nh,
                                                num_point=A.shape[-1]))


def CoTemporalConvolution(in_channels, out_channels, kernel_size=9, padding=0, stride=1):
    if padding == "equal":
        padding = int((kernel_size - 1) / 2)
    return co.Sequential(OrderedDict([
        ("t_conv", co.Conv2d(in_channels, out_channels, kernel_size=(kernel_size, 1), padding=(padding, 0),
                             stride=(stride, 1))),
        ("bn", nn.BatchNorm2d(out_channels)),
    ]))


def CoSpatioTemporalBlock(in_channels, out_channels, A, stride=1, residual=True, padding=0,
                          CoGraphConv=CoGraphConvolution, CoTempConv=CoTemporalConvolution):
    gcn = CoGraphConv(in_channels, out_channels, A, bn_momentum=0.1)
    tcn = CoTempConv(out_channels, out_channels, stride=stride, padding=padding)
    relu = nn.ReLU()
    if not residual:
        return co.Sequential(OrderedDict([("gcn", gcn), ("tcn", tcn), ("relu", relu)]))
    if in_channels == out_channels and stride == 1:
        return co.Sequential(
            co.Residual(co.Sequential(OrderedDict([("gcn", gcn), ("tcn", tcn)])), residual_shrink=True),
            relu,
        )
    res = CoTempConv(in_channels, out_channels, kernel_size=1, stride=stride)
    residual_shrink = tcn.receptive_field - 2 * tcn.padding[0] != 1
    delay = tcn.delay // stride
    if residual_shrink:
        delay = delay // 2
    return co.Sequential(
        co.BroadcastReduce(
            co.Sequential(OrderedDict([("residual", res), ("align", co.Delay(delay, auto_shrink=residual_shrink))])),
            co.Sequential(OrderedDict([("gcn", gcn), ("tcn", tcn)])),
            auto_delay=False,
        ),
        relu,
    )


def _skeleton_net(graph_convs, T=300, V=25, S=2, C_in=3, num_classes=60, width=64,
                  pool_size=-1, pool_padding=-1, squeeze="authors"):
    """graph_convs: the CoGraphConv factory of each of the ten blocks. width scales the channel
    plan (64 -> 64/128/256); T only sets the default pool size, as the authors' hparams do."""
    A = ntu_graph()
    scale = width / 64

    def ch(c):
        return c if c == 3 else int(c * scale)

    layers = co.Sequential(OrderedDict([
        (f"layer{i + 1}", CoSpatioTemporalBlock(C_in if i == 0 else ch(ci), ch(c), A, stride=s, residual=r,
                                                padding="equal", CoGraphConv=graph_convs[i]))
        for i, (ci, c, s, r) in enumerate(BLOCKS)
    ]))
    C_out = ch(256)

    reshape1 = co.Lambda(lambda x: x.permute(0, 3, 2, 1).contiguous().view(-1, S * V * C_in))
    data_bn = nn.BatchNorm1d(S * C_in * V)
    reshape2 = co.Lambda(lambda x: x.view(-1, S, V, C_in).permute(0, 1, 3, 2).contiguous().view(-1, C_in, V))
    spatial_pool = co.Lambda(lambda x: x.view(-1, S, C_out, V).mean(3).mean(1))

    rf, pad, stride = layers.receptive_field, layers.padding[0], layers.stride[0]
    if pool_size == -1:
        pool_size = math.ceil((T - rf + 2 * pad + 1) / stride)
    if pool_padding == -1:
        pool_padding = pool_size - math.ceil((T - rf + pad + 1) / stride)
    pool = co.AvgPool1d(pool_size, stride=1, padding=max(0, pool_padding))
    fc = co.Linear(C_out, num_classes, channel_dim=1)
    # as the authors write it (for continual 0.x). In continual 1.2.4 its forward_step fails on the
    # (N, classes) step output (takes_time: fn(x.unsqueeze(2)).squeeze(2)), so the reference's
    # steps cannot run this network as is; the oracles use its forward (verify.py patches it)
    # (squeeze="per_frame": a frame-wise Lambda, for experiments only: forward keeps the time axis)
    if squeeze == "authors":
        squeeze = co.Lambda(lambda x: x.squeeze(-1), takes_time=True)
    else:
        squeeze = co.Lambda(lambda x: x.squeeze(-1))
    return co.Sequential(OrderedDict([
        ("reshape1", reshape1),
        ("data_bn", data_bn),
        ("reshape2", reshape2),
        ("layers", layers),
        ("spatial_pool", spatial_pool),
        ("pool", pool),
        ("fc", fc),
        ("squeeze", squeeze),
    ]))


def build_cost_gcn(**kw):
    return _skeleton_net([CoGraphConvolution] * 10, **kw)


def build_coa_gcn(**kw):
    return _skeleton_net([CoAdaptiveGraphConvolution] * 10, **kw)


def build_cos_tr(num_heads=8, **kw):
    def attention(*args, **kwargs):
        return CoGcnUnitAttention(*args, Nh=num_heads, **kwargs)

    return _skeleton_net([CoGraphConvolution] * 3 + [attention] * 7, **kw)


class frame_wise_adaptive_graphs:
    """Context manager for the CoA-GCN oracle: inside it, every AdaptiveGraphConvolution's forward
    on a clip builds its data-dependent graph per frame (what a continual step computes) instead
    of over all frames (what the authors' forward does on a clip)."""

    def __init__(self, net):
        self.mods = [m for m in net.modules() if isinstance(m, AdaptiveGraphConvolution)]

    def __enter__(self):
        self.saved = [m.__dict__.get("forward") for m in self.mods]
        for m in self.mods:
            orig = type(m).forward

            def per_frame(x, m=m, orig=orig):
                N, C, T, V = x.shape
                y = orig(m, x.permute(0, 2, 1, 3).reshape(N * T, C, 1, V))
                return y.reshape(N, T, y.shape[1], V).permute(0, 2, 1, 3)

            m.forward = per_frame
        return self

    def __exit__(self, *exc):
        for m, f in zip(self.mods, self.saved):
            if f is None:
                del m.forward
            else:
                m.forward = f
        return False
