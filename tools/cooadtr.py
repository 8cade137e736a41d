#!/usr/bin/env python3
"""CoOadTR-b1 / CoOadTR-b2 (THUMOS config) as continual-c model files, optionally checked step by step.

    PYTHONPATH=/tmp/ref/ci /usr/bin/python3 tools/cooadtr.py OUT_DIR [--blocks 1 2] [--check]
        [--steps 1000] [--reference]

Builds the networks exactly as the reference benchmark does (/work/shared/anchors/zoo/cooadtr.py,
continual 1.2.4 modules; torch.manual_seed(0) then build_cooadtr(L)): 3072-d features -> Linear ->
learned recycling positional encoding (64) -> 1 single-output block (b1) or a retroactive +
single-output stack (b2), E=1024, 8 heads, FF 1024, 64 tokens, MHA without biases -> LayerNorm ->
Linear (22 classes). Writes OUT_DIR/cooadtr_b1.safetensors and/or cooadtr_b2.safetensors (38 / 63
MB; not examples, do not commit them) with frame_shape [3072].

--check streams --steps random feature frames (batch 1) through libcontinual (the binding;
$CONTINUAL_LIB or build/libcontinual.so) and compares every output (from step 64 on) with the
windowed torch.nn computation: RegularOadTR (zoo) over the last 64 frames, its positional
encoding starting at the window's first token's index. Prints the max abs difference.
--reference also streams the reference module itself and prints its difference (b2: the
RetroactiveUnity bug Q2 makes it wrong from step 127 on).

Needs the reference package `continual` (the zoo builds from its modules): put /tmp/ref/ci on
PYTHONPATH.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ZOO = "/work/shared/anchors/zoo"
sys.path.insert(0, os.path.join(REPO, "python"))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _zoo():
    try:
        import continual  # noqa: F401
    except Exception as e:
        sys.exit("tools/cooadtr.py needs the reference package `continual` (PYTHONPATH=/tmp/ref/ci): %s" % e)
    # loaded under its own name: this tool is called cooadtr.py too
    import importlib.util

    mod = sys.modules.get("_zoo_cooadtr")
    if mod is None:
        spec = importlib.util.spec_from_file_location("_zoo_cooadtr", os.path.join(ZOO, "cooadtr.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules["_zoo_cooadtr"] = mod
        spec.loader.exec_module(mod)
    return mod


def build(blocks, seed=0):
    """(continual network, RegularOadTR with the same weights, cfg), as the reference benchmark."""
    oad = _zoo()
    torch.manual_seed(seed)
    net = oad.build_cooadtr(blocks).eval()
    reg = oad.build_regular(net, blocks).eval()
    return net, reg, oad.CFG


def export(blocks, out_dir, seed=0):
    import continual_c

    net, reg, cfg = build(blocks, seed)
    path = os.path.join(out_dir, "cooadtr_b%d.safetensors" % blocks)
    continual_c.export(net, path, input_shape=(cfg["dim_feature"],))
    return path, net, reg, cfg


def windowed(reg, x, cfg, first, last):
    """RegularOadTR over the window ending at each step n in [first, last] (1-based) of x (1, D, T):
    {n: (classes,) numpy}. Windows sharing a positional offset run as one batch."""
    N, M = cfg["n"], cfg["num_embeds"]
    by_offset = {}
    for n in range(first, last + 1):
        by_offset.setdefault((n - N) % M, []).append(n)
    out = {}
    seq = x[0].transpose(0, 1)  # (T, D)
    with torch.no_grad():
        for off, ns in by_offset.items():
            for i in range(0, len(ns), 32):
                chunk = ns[i:i + 32]
                clips = torch.stack([seq[n - N:n] for n in chunk])  # (b, N, D)
                y = reg(clips, offset=off).numpy()
                for n, row in zip(chunk, y):
                    out[n] = row
    return out


def check(blocks, path, net, reg, cfg, steps, reference=False, seed=1):
    import continual_c

    N = cfg["n"]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, cfg["dim_feature"], steps, generator=g)
    model = continual_c.load(path)
    s = model.stream(1)
    ys, t0 = {}, time.perf_counter()
    for n in range(1, steps + 1):
        y = s.forward_step(x[:, :, n - 1])
        if (y is None) != (n < N):
            raise SystemExit("b%d step %d: %s output" % (blocks, n, "unexpected" if y is not None else "missing"))
        if y is not None:
            ys[n] = y[0]
    c_ms = (time.perf_counter() - t0) * 1e3 / steps
    ref = windowed(reg, x, cfg, N, steps)
    diffs = {n: float(np.abs(ys[n] - ref[n]).max()) for n in ys}
    worst = max(diffs, key=diffs.get)
    amax = max(float(np.abs(r).max()) for r in ref.values())
    print("CoOadTR-b%d: %d steps, %d outputs compared with the windowed torch.nn computation: max abs diff %.3g "
          "(step %d; max abs output %.3g); continual-c %.2f ms/step incl. Python" %
          (blocks, steps, len(diffs), diffs[worst], worst, amax, c_ms))
    if reference:
        net.clean_state()
        rd = {}
        with torch.no_grad():
            for n in range(1, steps + 1):
                r = net.forward_step(x[:, :, n - 1])
                if r is not None:
                    rd[n] = float(np.abs(r[0].numpy() - ref[n]).max())
        w = max(rd, key=rd.get)
        early = [v for n, v in rd.items() if n < 2 * N - 1]
        print("  reference co module: max abs diff %.3g (step %d); steps %d..%d: %.3g" %
              (rd[w], w, N, 2 * N - 2, max(early) if early else float("nan")))
    return diffs[worst]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", help="directory for cooadtr_b1/b2.safetensors (created)")
    ap.add_argument("--blocks", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    ap.add_argument("--seed", type=int, default=0, help="weight seed (the reference benchmark uses 0)")
    ap.add_argument("--check", action="store_true", help="stream through libcontinual and compare every step")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--reference", action="store_true", help="with --check: also stream the reference module")
    ap.add_argument("--tol", type=float, default=1e-4, help="with --check: exit 1 above this max abs diff")
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    bad = False
    for L in a.blocks:
        t0 = time.time()
        path, net, reg, cfg = export(L, a.out_dir, a.seed)
        print("wrote %s (%.1f MB) in %.1f s" % (path, os.path.getsize(path) / 1e6, time.time() - t0))
        if a.check:
            bad |= check(L, path, net, reg, cfg, a.steps, a.reference) > a.tol
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
