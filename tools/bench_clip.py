#!/usr/bin/env python3
"""Times `forward` over a whole clip in continual-c (co_forward through the ctypes binding) and in
torch (the same network's forward: the reference `continual` modules, which run torch.nn's
convolutions on the clip), on the same machine, in the same run, both at 1 thread, and prints a
table of the fastest call per network, in wall-clock and in CPU seconds of the process (rounds
interleave the two sides; on a shared machine the fastest call is the one that was not preempted,
and the CPU time is the steadier figure: both sides run one thread). Not run in CI.

    /usr/bin/python3 tools/bench_clip.py [--rounds N] [--frames T] [--size S] [--only NAME ...]

Networks:
  cox3d_s      CoX3D-S (tools/zoo, paper configuration, seed 0) at S x S (default 160) over T
               frames (default 80); exported to a temporary file (about a minute).
  conv3d       the ONNX Runtime anchor's conv3d stack (../shared/anchors/ort/export_models.py:
               Conv3d(3, 64, 3, padding=1), ReLU, Conv3d(64, 64, 3, padding=1), ReLU, pool) at 32 x 32
               over T frames.
  dw3d         a depthwise Conv3d(96, 96, 3, stride (1, 2, 2), padding 1, groups 96) at S/2 x S/2
               (CoX3D's stage-2 bottleneck conv) over T frames.
Each row also reports the largest difference between the two outputs (relative to the largest
torch output), so a fast wrong answer shows.

Environment: CONTINUAL_LIB (libcontinual.so; default <repo>/build/libcontinual.so); the
reference package on PYTHONPATH (../shared/reference/continual-inference-1.2.4).
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy / torch load
    os.environ[_v] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "python"))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import continual as co  # noqa: E402
import continual_c  # noqa: E402

torch.set_num_threads(1)


def conv3d_stack():
    return co.Sequential(
        co.Conv3d(3, 64, 3, padding=1), nn.ReLU(),
        co.Conv3d(64, 64, 3, padding=1), nn.ReLU(),
        co.AdaptiveAvgPool3d((1, 1, 1), kernel_size=16),
    )


def networks(args, tmp):
    """(name, torch module, model file, clip shape) per network."""
    out = []
    T, S = args.frames, args.size
    if "cox3d_s" in args.only:
        from tools.zoo import MODELS
        torch.manual_seed(0)
        net = MODELS["cox3d_s"].build().eval()
        path = os.path.join(tmp, "cox3d_s.safetensors")
        print("exporting CoX3D-S (about a minute) ...", file=sys.stderr)
        continual_c.export(net, path, input_shape=(3, 160, 160))
        out.append(("CoX3D-S %dx%d, T=%d" % (S, S, T), net, path, (1, 3, T, S, S)))
    if "conv3d" in args.only:
        torch.manual_seed(0)
        net = conv3d_stack().eval()
        path = os.path.join(tmp, "conv3d.safetensors")
        continual_c.export(net, path, input_shape=(3, 32, 32))
        out.append(("conv3d stack 32x32, T=%d" % T, net, path, (1, 3, max(T, 16), 32, 32)))
    if "dw3d" in args.only:
        torch.manual_seed(0)
        net = co.Conv3d(96, 96, 3, stride=(1, 2, 2), padding=1, groups=96, bias=False).eval()
        path = os.path.join(tmp, "dw3d.safetensors")
        continual_c.export(net, path, input_shape=(96, S // 2, S // 2))
        out.append(("depthwise 96 k3 s(1,2,2) %dx%d, T=%d" % (S // 2, S // 2, T), net, path, (1, 96, T, S // 2, S // 2)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--frames", type=int, default=80)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--only", nargs="*", default=["cox3d_s", "conv3d", "dw3d"])
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        nets = networks(args, tmp)
        loaded = []
        for name, net, path, shape in nets:
            x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
            loaded.append((name, net, continual_c.load(path), x, x.numpy().copy()))
        best = {name: [float("inf")] * 4 for name, *_ in loaded}  # wall C, wall torch, cpu C, cpu torch
        diff = {}
        for _ in range(args.rounds):
            for name, net, model, x, xn in loaded:
                t0, c0 = time.perf_counter(), time.process_time()
                y_c = model.forward(xn)
                t1, c1 = time.perf_counter(), time.process_time()
                with torch.no_grad():
                    y_t = net(x)
                t2, c2 = time.perf_counter(), time.process_time()
                for i, v in enumerate((t1 - t0, t2 - t1, c1 - c0, c2 - c1)):
                    best[name][i] = min(best[name][i], v)
                y_t = y_t.numpy()
                if y_t.shape != y_c.shape:
                    diff[name] = "shapes %s vs %s" % (y_c.shape, y_t.shape)
                else:
                    diff[name] = "%.1e" % (np.abs(y_c - y_t).max() / max(np.abs(y_t).max(), 1e-30))
        for name, *_ in loaded:
            rows.append((name, *best[name], diff[name]))
    print("| network | continual-c wall (s) | torch wall (s) | continual-c CPU (s) | torch CPU (s) "
          "| torch / continual-c (CPU) | max rel diff |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for name, wc, wt, cc, ct, d in rows:
        print("| %s | %.3f | %.3f | %.3f | %.3f | %.2f | %s |" % (name, wc, wt, cc, ct, ct / cc, d))
    print("\n1 thread each (OMP_NUM_THREADS=1, torch.set_num_threads(1)); fastest of %d interleaved rounds" % args.rounds)


if __name__ == "__main__":
    main()
