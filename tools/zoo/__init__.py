"""The seed papers' model zoo: each model at its paper configuration, written the way its authors
write it (custom modules under co.forward_stepping, anonymous co.Lambda reshapes, Conditional heads,
co.Linear with negative channel_dim, ...), plus small sizes for tests and each model's oracle.

    from tools.zoo import MODELS
    spec = MODELS["cox3d_s"]
    net = spec.build()            # paper configuration
    net = spec.build(small=True)  # test size
    spec.input_shape(small)       # frame shape (C, *S) for continual_c.export

`spec.paper_gflops` is the paper's FLOPs per step (GFLOPs = 1e9 multiply-accumulates as the papers
count them). For the temporally strided models (CoI3D stride 2; CoST-GCN, CoA-GCN, CoS-TR stride 4)
a step is one input frame, and two figures exist: the MACs per input frame averaged over one
stride period of `stride` steps (the layers after a stride run on every s-th frame only), and the
MACs of an emitting step (every layer runs once). The papers' figures are the emitting step (our
analytic counts match them within 2%); `python3 -m tools.zoo macs` prints both (macs.py,
common.macs_per_step). For stride-1 models the two are the same.
"""
from dataclasses import dataclass, field
from typing import Callable, Optional

from . import cooadtr, coresnet, cox3d, skeleton


@dataclass
class ModelSpec:
    name: str
    title: str
    builder: Callable
    paper: dict                      # builder kwargs of the paper configuration
    small: dict                      # builder kwargs of the test size
    frame: Callable                  # kwargs -> frame shape (C, *S)
    oracle: str                      # "steps" | "forward" | "windowed"
    paper_gflops: float              # paper FLOPs per step (see module doc)
    paper_note: str = ""
    source: str = ""
    stride: int = 1                  # temporal stride of the network (output every `stride` frames)
    small_frames: int = 0            # frames streamed in the test (>= delay + a few outputs)
    macs_clip: Callable = None       # kwargs -> clip length T for the MACs count
    blocks: Optional[int] = None     # CoOadTR

    def kwargs(self, small=False, **over):
        kw = dict(self.small if small else self.paper)
        kw.update(over)
        return kw

    def build(self, small=False, **over):
        return self.builder(**self.kwargs(small, **over))

    def input_shape(self, small=False, **over):
        return tuple(self.frame(self.kwargs(small, **over)))


def _video(kw):
    s = kw.get("image_size")
    return (3, s, s)


def _x3d_frame(size):
    def f(kw):
        s = kw.get("image_size") or cox3d.X3D_SIZES[size]["image_size"]
        return (3, s, s)
    return f


def _x3d_T(size):
    def f(kw):
        return kw.get("temporal_window_size") or cox3d.X3D_SIZES[size]["temporal_window_size"]
    return f


SKELETON_FRAME = (3, 25, 2)
_SKEL_SMALL = dict(width=16, num_classes=10, pool_size=4, pool_padding=0)
_VIDEO_SMALL_NOTE = "64x64 frames"

MODELS = {}


def _add(spec):
    MODELS[spec.name] = spec


for _size, _gf, _small_window, _frames in (("s", 0.17, 4, 20), ("m", 0.33, 5, 22), ("l", 1.25, 6, 24)):
    _add(ModelSpec(
        name=f"cox3d_{_size}", title=f"CoX3D-{_size.upper()}", builder=getattr(cox3d, f"build_{_size}"),
        paper={}, small=dict(image_size=64, temporal_window_size=_small_window, num_classes=10, conv5_dim=64,
                             depth_factor=1.0),
        frame=_x3d_frame(_size), oracle="steps", paper_gflops=_gf,
        paper_note="co3d Table (Kinetics-400), FLOPs per step",
        source="co3d paper + X3D configs models/x3d/hparams/%s.yaml" % _size,
        small_frames=_frames, macs_clip=_x3d_T(_size)))

_add(ModelSpec(
    name="coslow", title="CoSlow (Slow-8x8 R50)", builder=coresnet.build_slow,
    paper=dict(image_size=256, temporal_window_size=8),
    small=dict(image_size=64, temporal_window_size=4, num_classes=10, width_per_group=8),
    frame=_video, oracle="forward", paper_gflops=6.90, paper_note="co3d Table (Kinetics-400), FLOPs per step",
    source="co3d paper + models/coslow/hparams/slow_8x8_kinetics.yaml (256x256)", small_frames=16,
    macs_clip=lambda kw: kw.get("temporal_window_size", 8)))

_add(ModelSpec(
    name="coi3d", title="CoI3D (I3D R50)", builder=coresnet.build_i3d,
    paper=dict(image_size=224, temporal_window_size=8),
    small=dict(image_size=64, temporal_window_size=4, num_classes=10, width_per_group=8),
    frame=_video, oracle="forward", paper_gflops=5.68, stride=2,
    paper_note="co3d Table (Kinetics-400), FLOPs per step",
    source="co3d paper + SlowFast I3D_8x8_R50 config", small_frames=28,
    macs_clip=lambda kw: kw.get("temporal_window_size", 8)))

for _name, _title, _builder, _gf in (
        ("cost_gcn", "CoST-GCN", skeleton.build_cost_gcn, 0.16),
        ("coa_gcn", "CoA-GCN", skeleton.build_coa_gcn, 0.17),
        ("cos_tr", "CoS-TR", skeleton.build_cos_tr, 0.15)):
    _add(ModelSpec(
        name=_name, title=_title, builder=_builder, paper=dict(T=300, num_classes=60),
        small=dict(_SKEL_SMALL, **({"num_heads": 2} if _name == "cos_tr" else {})), frame=lambda kw: SKELETON_FRAME, oracle="forward", paper_gflops=_gf,
        stride=4, paper_note="continual-skeletons paper, NTU RGB+D 60, FLOPs of a step on which every layer runs",
        source="Co-ST-GCN paper (Hedegaard et al. 2023)", small_frames=104,
        macs_clip=lambda kw: kw.get("T", 300)))

_add(ModelSpec(
    name="cooadtr_b1", title="CoOadTR-b1", builder=cooadtr.build_b1, paper={},
    small=dict(feature_dim=32, embed_dim=16, num_heads=2, hidden_dim=16, seq_len=8, num_embeddings=8,
               num_classes=5),
    frame=lambda kw: (kw.get("feature_dim", 3072),), oracle="steps", paper_gflops=0.0096,
    paper_note="continual-transformers paper: ~0.01 G; 9.6 M = the reference's count (anchors)",
    source="continual-transformers paper + CoOadTR THUMOS config", small_frames=20, blocks=1,
    macs_clip=lambda kw: kw.get("seq_len", 64)))

_add(ModelSpec(
    name="cooadtr_b2", title="CoOadTR-b2", builder=cooadtr.build_b2, paper={},
    small=dict(feature_dim=32, embed_dim=16, num_heads=2, hidden_dim=16, seq_len=8, num_embeddings=8,
               num_classes=5),
    frame=lambda kw: (kw.get("feature_dim", 3072),), oracle="windowed", paper_gflops=0.347,
    paper_note="no paper figure per step used here: 0.347 G = analytic MACs of the reference's "
               "algorithm (anchors/results/reference-2026-11-22.md)",
    source="continual-transformers paper + CoOadTR THUMOS config", small_frames=30, blocks=2,
    macs_clip=lambda kw: kw.get("seq_len", 64)))
