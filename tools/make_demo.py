#!/usr/bin/env python3
"""Builds the bundled demo: examples/demo.safetensors, examples/demo_input.npy and
examples/demo_expected.npy (committed, so that tools/demo.sh and the C tests need no Python).

    /usr/bin/python3 tools/make_demo.py [--out-dir examples]

The network is a small 3D CNN (torch.nn modules; continual-c runs them as their continual
counterparts), built with a fixed seed:

    Conv3d(3, 8, 3, padding=1) -> BatchNorm3d(8) -> ReLU
    -> Conv3d(8, 8, (3, 1, 1), stride=(2, 1, 1)) -> ReLU
    -> Conv3d(8, 4, (1, 3, 3), padding=(0, 1, 1))

The input is a clip (B=2, C=3, T=16, 12, 12); the expected output is torch.nn's forward of the
whole clip, (2, 4, 7, 12, 12), which `continual run --pad-end` reproduces frame by frame.
Needs only torch, numpy and the exporter (python/continual_c). If libcontinual is built
(build/libcontinual.so or $CONTINUAL_LIB), the result is also checked through the binding.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "python"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import continual_c  # noqa: E402

SEED = 20240601
FRAME_SHAPE = (3, 12, 12)
BATCH, T = 2, 16


def build():
    torch.manual_seed(SEED)
    net = nn.Sequential(
        nn.Conv3d(3, 8, 3, padding=1),
        nn.BatchNorm3d(8),
        nn.ReLU(),
        nn.Conv3d(8, 8, (3, 1, 1), stride=(2, 1, 1)),
        nn.ReLU(),
        nn.Conv3d(8, 4, (1, 3, 3), padding=(0, 1, 1)),
    )
    bn = net[1]
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.1, 0.1)
        bn.num_batches_tracked.fill_(100)
    return net.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", default=os.path.join(REPO, "examples"))
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    net = build()
    g = torch.Generator().manual_seed(SEED + 1)
    clip = torch.rand((BATCH,) + FRAME_SHAPE[:1] + (T,) + FRAME_SHAPE[1:], generator=g) * 2 - 1
    with torch.no_grad():
        expected = net(clip)
    model_path = os.path.join(args.out_dir, "demo.safetensors")
    continual_c.export(net, model_path, input_shape=FRAME_SHAPE)
    np.save(os.path.join(args.out_dir, "demo_input.npy"), clip.numpy().astype("<f4"))
    np.save(os.path.join(args.out_dir, "demo_expected.npy"), expected.numpy().astype("<f4"))
    total = 0
    for name in ("demo.safetensors", "demo_input.npy", "demo_expected.npy"):
        size = os.path.getsize(os.path.join(args.out_dir, name))
        total += size
        print("wrote %-40s %8d bytes" % (os.path.join(args.out_dir, name), size))
    print("input %s -> expected %s; %d bytes in all" % (tuple(clip.shape), tuple(expected.shape), total))

    if continual_c.library_available():  # sanity check through libcontinual, if built
        model = continual_c.load(model_path)
        s = model.stream(batch_size=BATCH)
        y = s.forward_steps(clip.numpy(), pad_end=True)
        err = float(np.abs(np.asarray(y) - expected.numpy()).max())
        print("libcontinual forward_steps(pad_end=True): max |diff| = %.3g" % err)
        if err > 1e-4:
            sys.exit("libcontinual disagrees with torch.nn")
    else:
        print("libcontinual not built: skipped the check through the binding")


if __name__ == "__main__":
    main()
