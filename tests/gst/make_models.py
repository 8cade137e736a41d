#!/usr/bin/env python3
"""Exports the small models the GStreamer tests stream (tests/gst/CMakeLists.txt runs this once,
as a fixture, into the build folder):

    /usr/bin/python3 tests/gst/make_models.py OUT_DIR

  gray.safetensors    video, frame (1, 8, 10) (GRAY8, a width whose rows GStreamer pads to 4 bytes)
                      Conv3d(1, 4, 3, padding=1) -> ReLU -> Conv3d(4, 2, (2, 3, 3), padding=(0, 1, 1)); delay 2
  stereo.safetensors  audio, frame (2, 16): stereo, 16 samples per frame
                      Conv2d(2, 4, (3, 5), padding=(1, 0)) -> Tanh -> Conv2d(4, 3, (3, 1), stride=(2, 1), padding=(1, 0))
  mono.safetensors    audio, frame (1,): one sample per frame
                      Conv1d(1, 3, 5, padding=2) -> ReLU -> Conv1d(3, 2, 3)

(The RGB/BGR tests use the bundled examples/demo.safetensors, frame (3, 12, 12), delay 3, stride 2.)
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "python"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import continual_c  # noqa: E402

SEED = 11


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(SEED)
    models = {
        "gray": (nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(),
                               nn.Conv3d(4, 2, (2, 3, 3), padding=(0, 1, 1))), (1, 8, 10)),
        "stereo": (nn.Sequential(nn.Conv2d(2, 4, (3, 5), padding=(1, 0)), nn.Tanh(),
                                 nn.Conv2d(4, 3, (3, 1), stride=(2, 1), padding=(1, 0))), (2, 16)),
        "mono": (nn.Sequential(nn.Conv1d(1, 3, 5, padding=2), nn.ReLU(), nn.Conv1d(3, 2, 3)), (1,)),
    }
    for name, (net, frame_shape) in models.items():
        continual_c.export(net.eval(), os.path.join(out_dir, name + ".safetensors"), input_shape=frame_shape)


if __name__ == "__main__":
    main()
