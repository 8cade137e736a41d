"""CoOadTR-b1 / -b2 (Hedegaard, Bakhtiarnia & Iosifidis, "Continual Transformers: Redundancy-Free
Attention for Online Inference", ICLR 2023): OadTR's encoder for online action detection made
continual. THUMOS'14 config: 3072-d TSN features per frame -> co.Linear(3072, 1024) -> learned
recycling positional encoding (64 positions) -> one continual encoder block of 1024 dims, 8 heads,
feed-forward 1024, 64 tokens, attention without biases (b1: one single-output block; b2: a
retroactive block then a single-output block) -> LayerNorm -> co.Linear(1024, 22).

The blocks are post-norm (x = LN(x + MHA(x)); x = LN(x + FF(x))) with GELU, built from
continual 1.2.4's attention modules and transformer helpers. `RegularOadTR` is the same function
as plain torch.nn over a 64-frame window (the oracle of b2).
"""
from collections import OrderedDict

import torch
from torch import nn

import continual as co
from continual.transformer import NaiveResidual, RetroactiveLambda, RetroactiveUnity, SelectOrDelay, sum_last_pairs

THUMOS = dict(feature_dim=3072, embed_dim=1024, num_heads=8, hidden_dim=1024, seq_len=64,
              num_embeddings=64, num_classes=22, dropout=0.1)


def feed_forward(E, F, dropout, container=co.Sequential):
    return container(co.Linear(E, F, channel_dim=1), nn.GELU(), nn.Dropout(dropout),
                     co.Linear(F, E, channel_dim=1), nn.Dropout(dropout))


def single_output_block(E, H, F, n, dropout):
    attn = co.SingleOutputMultiheadAttention(
        embed_dim=E, num_heads=H, dropout=dropout, bias=False, batch_first=True, embed_dim_second=True,
        query_index=-1, sequence_len=n, forward_returns_attn_mask=False, single_output_forward=True)
    return co.Sequential(
        co.BroadcastReduce(SelectOrDelay(attn.delay), attn, reduce=sum_last_pairs, auto_delay=False),
        co.Lambda(nn.LayerNorm(E), takes_time=False),
        co.Residual(feed_forward(E, F, dropout)),
        co.Lambda(nn.LayerNorm(E), takes_time=False),
    )


def retroactive_block(E, H, F, n, dropout):
    attn = co.RetroactiveMultiheadAttention(
        embed_dim=E, num_heads=H, dropout=dropout, bias=False, batch_first=True, embed_dim_second=True,
        sequence_len=n, forward_returns_attn_mask=False)
    return co.Sequential(
        co.BroadcastReduce(RetroactiveUnity(attn.delay), attn, reduce="sum", auto_delay=False),
        RetroactiveLambda(nn.Sequential(nn.LayerNorm(E), NaiveResidual(feed_forward(E, F, dropout, nn.Sequential)),
                                        nn.LayerNorm(E))),
    )


def CoOadTR(blocks=1, feature_dim=3072, embed_dim=1024, num_heads=8, hidden_dim=1024, seq_len=64,
            num_embeddings=64, num_classes=22, dropout=0.1):
    E, H, F, n = embed_dim, num_heads, hidden_dim, seq_len
    if blocks == 1:
        encoder = single_output_block(E, H, F, n, dropout)
    elif blocks == 2:
        encoder = co.Sequential(
            retroactive_block(E, H, F, n, dropout),
            RetroactiveLambda(single_output_block(E, H, F, n, dropout), takes_time=True),
            co.Lambda(lambda x: x, None, lambda x: x.squeeze(-1), lambda x: x.squeeze(-1), takes_time=True),
        )
    else:
        raise ValueError("CoOadTR is built with 1 or 2 blocks")
    return co.Sequential(OrderedDict([
        ("linear_encoding", co.Linear(feature_dim, E, channel_dim=1)),
        ("position_encoding", co.RecyclingPositionalEncoding(E, num_embeddings, learned=True,
                                                             forward_update_index_steps=1)),
        ("pe_dropout", nn.Dropout(dropout)),
        ("encoder", encoder),
        ("pre_head_ln", co.Lambda(nn.LayerNorm(E), takes_time=False)),
        ("mlp_head", co.Linear(E, num_classes, channel_dim=1)),
    ]))


def build_b1(**kw):
    return CoOadTR(1, **kw)


def build_b2(**kw):
    return CoOadTR(2, **kw)


class _Layer(nn.Module):
    def __init__(self, E, H, F):
        super().__init__()
        # biases kept at zero: torch 1.13's inference fast path refuses bias=False
        self.attn = nn.MultiheadAttention(E, H, bias=True, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(E, F), nn.Linear(F, E)
        self.norm1, self.norm2 = nn.LayerNorm(E), nn.LayerNorm(E)

    def forward(self, x):
        x = self.norm1(x + self.attn(x, x, x, need_weights=False)[0])
        return self.norm2(x + self.linear2(nn.functional.gelu(self.linear1(x))))


class RegularOadTR(nn.Module):
    """The same network over one window (N, n, feature_dim) -> (N, classes), the prediction for the
    window's last token; `offset` is the recycling-PE index of the window's first token."""

    def __init__(self, co_net, blocks):
        super().__init__()
        lin = co_net.linear_encoding
        E = lin.out_features
        self.linear_encoding = nn.Linear(lin.in_features, E)
        self.linear_encoding.load_state_dict(lin.state_dict())
        self.pe = co_net.position_encoding.pe.weight.detach().clone()
        self.pre_head_ln = co_net.pre_head_ln.fn
        self.mlp_head = nn.Linear(E, co_net.mlp_head.out_features)
        self.mlp_head.load_state_dict(co_net.mlp_head.state_dict())
        enc = co_net.encoder
        if blocks == 1:
            parts = [("si", enc)]
        else:
            parts = [("re", enc[0]), ("si", enc[1].fn)]
        self.layers = nn.ModuleList()
        for kind, blk in parts:
            attn = blk[0][1]
            l1, l2 = self._ff(kind, blk)
            layer = _Layer(E, attn.num_heads, l1.out_features)
            with torch.no_grad():
                layer.attn.in_proj_weight.copy_(attn.in_proj_weight)
                layer.attn.out_proj.weight.copy_(attn.out_proj.weight)
                layer.attn.in_proj_bias.zero_()
                layer.attn.out_proj.bias.zero_()
            n1, n2 = self._norms(kind, blk)
            layer.linear1.load_state_dict(l1.state_dict())
            layer.linear2.load_state_dict(l2.state_dict())
            layer.norm1.load_state_dict(n1.state_dict())
            layer.norm2.load_state_dict(n2.state_dict())
            self.layers.append(layer)

    @staticmethod
    def _ff(kind, blk):
        ff = blk[2][1] if kind == "si" else blk[1].fn[1].fn
        return ff[0], ff[3]

    @staticmethod
    def _norms(kind, blk):
        if kind == "si":
            return blk[1].fn, blk[3].fn
        seq = blk[1].fn
        return seq[0], seq[2]

    def forward(self, x, offset=0):
        T = x.shape[1]
        pos = (torch.arange(T) + offset) % self.pe.shape[0]
        h = self.linear_encoding(x) + self.pe[pos]
        for layer in self.layers:
            h = layer(h)
        return self.mlp_head(self.pre_head_ln(h[:, -1]))


def analytic_macs(blocks, feature_dim=3072, embed_dim=1024, hidden_dim=1024, seq_len=64, num_classes=22, **_):
    """Matrix-product MACs of one step as the continual algorithms compute it: single-output
    block: QKV of the new token, q.K and a.V over n, output projection and FF of one token;
    retroactive block: QKV of one token, the retroactive attention updates (7 n E), output
    projection and FF of all n tokens; the single-output block after it runs over the n
    retroactive outputs (K, V of all n)."""
    E, F, n, D, C = embed_dim, hidden_dim, seq_len, feature_dim, num_classes
    si_step = 4 * E * E + 2 * n * E + 2 * E * F
    re_step = 3 * E * E + 7 * n * E + n * E * E + 2 * n * E * F
    si_over_window = 2 * E * E + 2 * n * E * E + 2 * n * E + 2 * E * F
    enc = si_step if blocks == 1 else re_step + si_over_window
    return D * E + enc + E * C
