#!/usr/bin/env python3
"""Times one forward_step in continual-c and in the reference `continual` package (PyTorch), on
the same machine, in the same run, with 1 thread, and prints a table of median ms per step.

    /usr/bin/python3 tools/bench_step.py [NETWORK ...] [--steps N] [--warmup N] [--batch N]

Each NETWORK is either
  * a Python expression with `co` (continual), `nn` (torch.nn) and `torch` in scope and the
    frame shape after '@', e.g.  "co.Sequential(co.Conv3d(3, 16, 3, padding=1), nn.ReLU())@3,32,32"
    (timed in both: exported with continual_c.export for the C side), or
  * a continual-c model file (.safetensors; C side only, the reference has no module for it).
The bundled demo (tools/make_demo.py) is always timed first, unless --no-demo.

The C side is timed with the `continual bench` tool (pure C: clock_gettime around each
co_forward_step) and, for reference, through the ctypes binding (which adds Python overhead).
The reference is timed with forward_step under torch.no_grad(). If the `continual` package
cannot be imported (it is looked for on sys.path and in /tmp/ref/ci), its columns say so.

Environment: CONTINUAL_LIB (libcontinual.so), CONTINUAL_CLI (the `continual` tool); defaults
are <repo>/build/libcontinual.so and <repo>/build/continual.
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy / torch load
    os.environ[_v] = "1"

import argparse  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "python"))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import continual_c  # noqa: E402

torch.set_num_threads(1)


def import_reference():
    try:
        import continual as co
        return co, None
    except Exception as e:  # noqa: BLE001
        first = e
    if os.path.isdir("/tmp/ref/ci"):
        sys.path.insert(0, "/tmp/ref/ci")
        try:
            import continual as co
            return co, None
        except Exception as e:  # noqa: BLE001
            first = e
    return None, "reference `continual` not importable (%s: %s)" % (type(first).__name__, first)


def cli_path():
    return os.environ.get("CONTINUAL_CLI") or os.path.join(REPO, "build", "continual")


def time_cli(model_path, batch, frame_shape, steps, warmup):
    """Median/p10/p90 ms per co_forward_step from `continual bench`, or (None, reason)."""
    cli = cli_path()
    if not os.path.exists(cli):
        return None, "no `continual` tool at %s (build it, or set CONTINUAL_CLI)" % cli
    cmd = [cli, "bench", model_path, "--batch", str(batch), "--steps", str(steps), "--warmup", str(warmup),
           "--frame-shape", ",".join(str(d) for d in frame_shape)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return None, "`continual bench` failed: %s" % r.stderr.strip()
    vals = {}
    for key in ("median ms", "p10 ms", "p90 ms"):
        m = re.search(r"^\s*%s\s+([0-9.eE+-]+)\s*$" % re.escape(key), r.stdout, re.M)
        if not m:
            return None, "cannot parse `continual bench` output:\n" + r.stdout
        vals[key] = float(m.group(1))
    return vals, None


def time_calls(fn, frames, steps, warmup):
    for i in range(warmup):
        fn(frames[i % len(frames)])
    times = []
    for i in range(steps):
        x = frames[i % len(frames)]
        t0 = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {"median ms": statistics.median(times), "p10 ms": times[len(times) // 10],
            "p90 ms": times[(len(times) * 9) // 10]}


def time_binding(model_path, batch, frame_shape, steps, warmup):
    if not continual_c.library_available():
        return None, "libcontinual not loadable from %s" % continual_c.library_path()
    model = continual_c.load(model_path)
    s = model.stream(batch_size=batch, frame_shape=tuple(frame_shape))
    rng = np.random.default_rng(0)
    frames = [rng.uniform(-1, 1, (batch,) + tuple(frame_shape)).astype(np.float32) for _ in range(4)]
    return time_calls(s.forward_step, frames, steps, warmup), None


def time_reference(module, batch, frame_shape, steps, warmup):
    rng = np.random.default_rng(0)
    frames = [torch.from_numpy(rng.uniform(-1, 1, (batch,) + tuple(frame_shape)).astype(np.float32))
              for _ in range(4)]
    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return time_calls(module.forward_step, frames, steps, warmup), None


def networks(args, co):
    """(name, model_path, frame_shape, reference module or None, why none)"""
    tmp = tempfile.mkdtemp(prefix="bench_step_")
    out = []
    if not args.no_demo:
        import make_demo
        net = make_demo.build()
        path = os.path.join(REPO, "examples", "demo.safetensors")
        if not os.path.exists(path):
            path = os.path.join(tmp, "demo.safetensors")
            continual_c.export(net, path, input_shape=make_demo.FRAME_SHAPE)
        ref, why = (co.continual(net), None) if co is not None else (None, "reference not importable")
        out.append(("demo (tools/make_demo.py)", path, tuple(make_demo.FRAME_SHAPE), ref, why))
    for i, spec in enumerate(args.networks):
        if spec.endswith(".safetensors") and "@" not in spec:
            m = continual_c.load(spec)
            out.append((os.path.basename(spec), spec, tuple(m.frame_shape), None, "model file: C only"))
            continue
        if "@" not in spec:
            sys.exit("network %r: give the frame shape after '@', e.g. 'co.Conv3d(3, 8, 3)@3,16,16'" % spec)
        expr, shape = spec.rsplit("@", 1)
        frame_shape = tuple(int(d) for d in shape.replace(" ", "").split(",") if d)
        if co is None:
            out.append((expr, None, frame_shape, None, "reference not importable: cannot build the network"))
            continue
        torch.manual_seed(i)
        module = eval(expr, {"co": co, "nn": nn, "torch": torch})  # noqa: S307 (a developer tool)
        module = module.eval()
        path = os.path.join(tmp, "net%d.safetensors" % i)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            continual_c.export(module, path, input_shape=frame_shape)
        out.append((expr, path, frame_shape, module, None))
    return out


def fmt(v):
    return "%.4f" % v if v is not None else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("networks", nargs="*", help="EXPR@C,H,W or MODEL.safetensors")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--no-demo", action="store_true", help="do not time the bundled demo")
    args = ap.parse_args()

    co, co_why = import_reference()
    if co is None:
        print("note: %s; timing continual-c only" % co_why)
    rows, notes = [], []
    for name, path, frame_shape, ref, why in networks(args, co):
        c_cli = c_bind = r = None
        if path is not None:
            c_cli, e = time_cli(path, args.batch, frame_shape, args.steps, args.warmup)
            if e:
                notes.append("%s: %s" % (name, e))
            c_bind, e = time_binding(path, args.batch, frame_shape, args.steps, args.warmup)
            if e:
                notes.append("%s: %s" % (name, e))
        if ref is not None:
            r, e = time_reference(ref, args.batch, frame_shape, args.steps, args.warmup)
        elif why:
            notes.append("%s: reference skipped (%s)" % (name, why))
        rows.append((name, frame_shape, c_cli, c_bind, r))

    print("\nforward_step, batch %d, 1 thread, %d steps after %d warmup (median ms per step; p10-p90)\n"
          % (args.batch, args.steps, args.warmup))
    head = ("network", "frame", "C (continual bench)", "C via ctypes", "reference co", "ref / C")
    table = []
    for name, fs, c_cli, c_bind, r in rows:
        c = c_cli or c_bind
        ratio = "%.1fx" % (r["median ms"] / c["median ms"]) if (r and c and c["median ms"] > 0) else "-"

        def cell(v):
            return "%s (%s-%s)" % (fmt(v["median ms"]), fmt(v["p10 ms"]), fmt(v["p90 ms"])) if v else "-"
        short = name if len(name) <= 48 else name[:45] + "..."
        table.append((short, "x".join(str(d) for d in fs), cell(c_cli), cell(c_bind), cell(r), ratio))
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)))
    for n in notes:
        print("note:", n)


if __name__ == "__main__":
    main()
