#!/usr/bin/env python3
"""Intra-step threads: median ms per co_forward_step at batch 8 on 1 and on 2 (or more) threads,
for the rows of issue 9 item 4, with the `continual bench --threads N` tool (pure C).

    PYTHONPATH=/tmp/ref/ci /usr/bin/python3 tools/bench_threads.py [--threads 1,2] [--batch 8]
        [--rounds 5] [--steps 40] [--models a,b] [--dir DIR]

Models (random weights, seed 0; exported once into --dir, default a temporary directory):
  cooadtr_b1, cooadtr_b2  CoOadTR with 1 / 2 encoder blocks (tools/cooadtr.py, the anchors' zoo)
  retroactive_mha         co.RetroactiveMultiheadAttention E1024 h16 n64 (build_from nn.MultiheadAttention)
  conv3d_single           co.Conv3d(64, 64, 3) on 16x16 frames
  conv3d_stack            co.Conv3d(3,64,3,p1), ReLU, co.Conv3d(64,64,3,p1), ReLU, AdaptiveAvgPool3d
                          on 32x32 frames (anchors/ort's co_conv3d_stack)
  conv1d_stack            4 x (co.Conv1d(128, 128, 5, padding=2), ReLU)

Rounds interleave the thread counts (round r runs every model at every count); each cell is the
median over rounds of each run's median. On a shared machine compare the ratios of one run.
Environment: CONTINUAL_CLI (default <repo>/build/continual).
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "python"))
sys.path.insert(0, HERE)


def _nets():
    import torch
    from torch import nn
    import continual as co

    def mha():
        torch.manual_seed(0)
        reg = nn.MultiheadAttention(1024, 16, dropout=0.0, batch_first=True).eval()
        return co.RetroactiveMultiheadAttention.build_from(reg, sequence_len=64), (1024,)

    def conv3d_single():
        torch.manual_seed(0)
        return co.Conv3d(64, 64, 3), (64, 16, 16)

    def conv3d_stack():
        torch.manual_seed(0)
        return co.Sequential(co.Conv3d(3, 64, 3, padding=1), nn.ReLU(), co.Conv3d(64, 64, 3, padding=1), nn.ReLU(),
                             co.AdaptiveAvgPool3d((1, 1, 1), kernel_size=16)), (3, 32, 32)

    def conv1d_stack():
        torch.manual_seed(0)
        layers = []
        for _ in range(4):
            layers += [co.Conv1d(128, 128, 5, padding=2), nn.ReLU()]
        return co.Sequential(*layers), (128,)

    return {"retroactive_mha": mha, "conv3d_single": conv3d_single, "conv3d_stack": conv3d_stack,
            "conv1d_stack": conv1d_stack}


ORDER = ["cooadtr_b1", "cooadtr_b2", "retroactive_mha", "conv3d_single", "conv3d_stack", "conv1d_stack"]


def export_all(names, out_dir):
    import continual_c

    paths = {}
    nets = _nets()
    for name in names:
        path = os.path.join(out_dir, name + ".safetensors")
        if not os.path.exists(path):
            if name.startswith("cooadtr_b"):
                import cooadtr

                cooadtr.export(int(name[-1]), out_dir)
            else:
                net, shape = nets[name]()
                continual_c.export(net.eval(), path, input_shape=shape)
        paths[name] = path
    return paths


def bench(cli, path, batch, threads, steps):
    out = subprocess.run([cli, "bench", path, "--batch", str(batch), "--threads", str(threads), "--steps", str(steps),
                          "--warmup", str(max(steps // 4, 70))], check=True, capture_output=True, text=True).stdout
    return float(re.search(r"median ms\s+([0-9.]+)", out).group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--models", default=",".join(ORDER))
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    names = [n for n in a.models.split(",") if n]
    counts = [int(t) for t in a.threads.split(",")]
    cli = os.environ.get("CONTINUAL_CLI", os.path.join(REPO, "build", "continual"))
    out_dir = a.dir or tempfile.mkdtemp(prefix="co_bench_threads_")
    os.makedirs(out_dir, exist_ok=True)
    paths = export_all(names, out_dir)
    times = {(n, t): [] for n in names for t in counts}
    for r in range(a.rounds):
        for n in names:
            for t in counts:
                times[(n, t)].append(bench(cli, paths[n], a.batch, t, a.steps))
        print("round %d/%d done" % (r + 1, a.rounds), file=sys.stderr)
    print("nproc %d, load average %s, batch %d, %d rounds x %d steps" % (
        os.cpu_count(), " ".join("%.1f" % v for v in os.getloadavg()), a.batch, a.rounds, a.steps))
    head = "| model | " + " | ".join("%d thread%s ms" % (t, "" if t == 1 else "s") for t in counts)
    head += " | " + " | ".join("x%d" % t for t in counts[1:]) + " |"
    print(head)
    print("|---|" + "--:|" * (2 * len(counts) - 1))
    for n in names:
        med = [statistics.median(times[(n, t)]) for t in counts]
        print("| %s | %s | %s |" % (n, " | ".join("%.3f" % m for m in med),
                                    " | ".join("%.2f" % (med[0] / m) for m in med[1:])))


if __name__ == "__main__":
    main()
