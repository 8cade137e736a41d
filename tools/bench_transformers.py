#!/usr/bin/env python3
"""Per-step latency of the continual transformers in continual-c, beside the reference (continual 1.2.4).

    PYTHONPATH=/tmp/ref/ci /usr/bin/python3 tools/bench_transformers.py [--steps 200] [--b8-steps 100]
        [--threads 1 2] [--models cooadtr_b1,cooadtr_b2,retroactive_mha,single_output_mha] [--no-reference]

Models (random weights, seed 0, as /work/shared/anchors/bench_reference.py builds them):
  cooadtr_b1, cooadtr_b2   CoOadTR, THUMOS config (zoo/cooadtr.py; needs `continual` to build)
  retroactive_mha          RetroactiveMultiheadAttention, E=1024, 16 heads, n=64 (from nn.MultiheadAttention)
  single_output_mha        SingleOutputMultiheadAttention, same sizes

Measured: wall time of one forward_step (state kept in the stream), median over --steps steps at
batch 1 and --b8-steps at batch 8, after a warm-up of >= 0.3 s and n + 16 steps. Each (implementation,
thread count) runs in its own process with OMP/OPENBLAS/MKL_NUM_THREADS (and torch.set_num_threads for
the reference) set to the thread count. continual-c is called through ctypes with preallocated buffers
(co_forward_step directly; ~1-2 us of call overhead). The reference modules are timed in the same run
when `continual` is importable; otherwise the figures of
/work/shared/anchors/results/reference-2026-11-22.{md,json} are printed, marked as such (another run,
same machine type: compare with care). Library: $CONTINUAL_LIB, else build/libcontinual.so.
Prints a markdown table. Runtime ~2 minutes with the reference (2 cores; about half without).
"""
import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ZOO = "/work/shared/anchors/zoo"
ANCHOR_JSON = "/work/shared/anchors/results/reference-2026-11-22.json"
sys.path.insert(0, os.path.join(REPO, "python"))
sys.path.insert(0, HERE)

MODELS = ["cooadtr_b1", "cooadtr_b2", "retroactive_mha", "single_output_mha"]
TITLES = {"cooadtr_b1": "CoOadTR-b1", "cooadtr_b2": "CoOadTR-b2",
          "retroactive_mha": "RetroactiveMHA E1024 h16 n64", "single_output_mha": "SingleOutputMHA E1024 h16 n64"}
E, H, N = 1024, 16, 64


def have_continual():
    try:
        import continual  # noqa: F401
        return True
    except Exception:
        return False


# ---- model construction (both sides use the same builders) ------------------------------------
def build_mha_torch():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.MultiheadAttention(E, H, dropout=0.0, batch_first=True).eval()


def build_reference(name):
    """The reference co module, as the anchors benchmark builds it."""
    import continual as co

    if name.startswith("cooadtr"):
        import cooadtr as tool  # tools/cooadtr.py

        net, _, _ = tool.build(int(name[-1]), seed=0)
        return net, 3072, N
    reg = build_mha_torch()
    cls = co.RetroactiveMultiheadAttention if name == "retroactive_mha" else co.SingleOutputMultiheadAttention
    return cls.build_from(reg, sequence_len=N).eval(), E, N


def export_c(name, out_dir):
    import continual_c
    from continual_c._export_transformer import ContinualAttention

    path = os.path.join(out_dir, name + ".safetensors")
    if name.startswith("cooadtr"):
        import cooadtr as tool

        net, _, cfg = tool.build(int(name[-1]), seed=0)
        continual_c.export(net, path, input_shape=(cfg["dim_feature"],))
        return path
    kind = "retroactive" if name == "retroactive_mha" else "single_output"
    continual_c.export(ContinualAttention(build_mha_torch(), N, kind), path, input_shape=(E,))
    return path


# ---- workers ----------------------------------------------------------------------------------------
def _stats(ts):
    ts = sorted(ts)
    return dict(median_ms=statistics.median(ts) * 1e3, p10_ms=ts[int(0.1 * (len(ts) - 1))] * 1e3,
                p90_ms=ts[int(0.9 * (len(ts) - 1))] * 1e3, n=len(ts))


def time_c(path, B, steps, warm):
    import numpy as np

    import continual_c

    model = continual_c.load(path)
    s = model.stream(B)
    lib, h = s._lib, s._handle
    rng = np.random.default_rng(5)
    pool = [np.ascontiguousarray(rng.standard_normal(s.input_shape, dtype=np.float32)) for _ in range(8)]
    ptrs = [p.ctypes.data_as(ctypes.c_void_p) for p in pool]
    y = np.empty(s.output_shape, dtype=np.float32)
    yp = y.ctypes.data_as(ctypes.c_void_p)
    has = ctypes.c_int(0)
    hp = ctypes.byref(has)
    fn = lib.co_forward_step
    clock = time.perf_counter
    t_end, i = clock() + 0.3, 0
    while i < warm or clock() < t_end:
        if fn(h, ptrs[i % 8], yp, hp, 1):
            raise RuntimeError("co_forward_step failed: %s" % lib.co_last_error())
        i += 1
    ts, none = [], 0
    for k in range(steps):
        t0 = clock()
        fn(h, ptrs[k % 8], yp, hp, 1)
        ts.append(clock() - t0)
        none += not has.value
    r = _stats(ts)
    r.update(batch=B, none_outputs=none, warmup_steps=i)
    s.close()
    model.close()
    return r


def time_reference(net, D, B, steps, warm):
    import torch

    g = torch.Generator().manual_seed(5)
    pool = [torch.randn(B, D, generator=g) for _ in range(8)]
    clock = time.perf_counter
    with torch.no_grad():
        net.clean_state()
        t_end, i = clock() + 0.3, 0
        while i < warm or clock() < t_end:
            net.forward_step(pool[i % 8])
            i += 1
        ts, none = [], 0
        for k in range(steps):
            t0 = clock()
            y = net.forward_step(pool[k % 8])
            ts.append(clock() - t0)
            none += y is None
        net.clean_state()
    r = _stats(ts)
    r.update(batch=B, none_outputs=none, warmup_steps=i)
    return r


def worker(a):
    out = {}
    if a.worker == "c":
        for item in a.paths.split(","):
            name, path = item.split("=", 1)
            out[name] = {"b1": time_c(path, 1, a.steps, N + 16), "b8": time_c(path, 8, a.b8_steps, N + 16)}
    else:
        import torch

        torch.set_num_threads(int(a.threads[0]))
        for name in a.models.split(","):
            net, D, n = build_reference(name)
            out[name] = {"b1": time_reference(net, D, 1, a.steps, n + 16),
                         "b8": time_reference(net, D, 8, a.b8_steps, n + 16)}
            del net
    with open(a.json_out, "w") as f:
        json.dump(out, f)


def run_worker(kind, threads, a, tmp, **extra):
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    if threads > 1:  # as the anchors: spinning OpenMP workers would fight OpenBLAS's threads
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    else:
        env.pop("OMP_WAIT_POLICY", None)
    out = os.path.join(tmp, "%s_t%d.json" % (kind, threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--threads", str(threads),
           "--steps", str(a.steps), "--b8-steps", str(a.b8_steps), "--json-out", out]
    for k, v in extra.items():
        cmd += ["--" + k, v]
    t0 = time.time()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if p.returncode != 0 or not os.path.exists(out):
        tail = "\n".join((p.stderr or "").strip().splitlines()[-8:])
        print("worker %s t%d failed (rc %d):\n%s" % (kind, threads, p.returncode, tail), file=sys.stderr)
        return None
    with open(out) as f:
        r = json.load(f)
    print("  %s, %d thread(s): %.0f s" % ("continual-c" if kind == "c" else "reference", threads, time.time() - t0),
          file=sys.stderr)
    return r


def anchor_figures():
    """{(model, threads): {"b1": ms, "b8": ms}} from the stored reference run."""
    try:
        with open(ANCHOR_JSON) as f:
            d = json.load(f)
    except Exception:
        return {}
    out = {}
    for r in d.get("results", []):
        m, t = r.get("model"), r.get("threads")
        if m in MODELS and t:
            out[(m, int(t))] = {"b1": (r.get("step_b1") or {}).get("median_ms"),
                                "b8": (r.get("step_b8") or {}).get("median_ms")}
    return out


def fmt(x):
    if x is None:
        return "–"
    return "%.3g" % x if x < 100 else "%.0f" % x


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200, help="timed steps at batch 1")
    ap.add_argument("--b8-steps", type=int, default=100, help="timed steps at batch 8")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--no-reference", action="store_true", help="do not time the reference in this run")
    ap.add_argument("--worker", choices=["c", "ref"], help=argparse.SUPPRESS)
    ap.add_argument("--paths", help=argparse.SUPPRESS)
    ap.add_argument("--json-out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)

    t_start = time.time()
    models = [m for m in a.models.split(",") if m]
    for m in models:
        if m not in MODELS:
            sys.exit("unknown model %r (known: %s)" % (m, ", ".join(MODELS)))
    co_ok = have_continual()
    if not co_ok and any(m.startswith("cooadtr") for m in models):
        print("`continual` is not importable: CoOadTR cannot be built (zoo/cooadtr.py uses its modules); "
              "timing the attentions only", file=sys.stderr)
        models = [m for m in models if not m.startswith("cooadtr")]
    import continual_c

    lib = continual_c.library_path()
    with tempfile.TemporaryDirectory(prefix="bench_tr_") as tmp:
        paths = {m: export_c(m, tmp) for m in models}
        c_res, r_res = {}, {}
        for t in a.threads:
            c_res[t] = run_worker("c", t, a, tmp, paths=",".join("%s=%s" % kv for kv in paths.items()))
        live = co_ok and not a.no_reference
        if live:
            for t in a.threads:
                r_res[t] = run_worker("ref", t, a, tmp, models=",".join(models))
    anchors = anchor_figures() if not live else {}

    src = "measured in this run" if live else "NOT measured here: figures from %s (marked *)" % ANCHOR_JSON
    print()
    print("continual-c forward_step latency, median ms (%s; %s); reference continual 1.2.4: %s"
          % (lib, time.strftime("%Y-%m-%d %H:%M"), src))
    print()
    cols = [(b, t) for b in ("b1", "b8") for t in a.threads]
    head = ["model"] + ["C %s %dt" % (b, t) for b, t in cols] + ["ref %s %dt" % (b, t) for b, t in cols] + \
           ["ref/C %s %dt" % (b, t) for b, t in cols]
    print("| " + " | ".join(head) + " |")
    print("|---" + "|---:" * (len(head) - 1) + "|")
    for m in models:
        row = [TITLES[m]]
        cv, rv = [], []
        for b, t in cols:
            c = ((c_res.get(t) or {}).get(m) or {}).get(b, {}).get("median_ms")
            cv.append(c)
        for b, t in cols:
            if live:
                r = ((r_res.get(t) or {}).get(m) or {}).get(b, {}).get("median_ms")
                rv.append((r, ""))
            else:
                r = (anchors.get((m, t)) or {}).get(b)
                rv.append((r, "*" if r is not None else ""))
        row += [fmt(c) for c in cv]
        row += [fmt(r) + mark for r, mark in rv]
        row += [("%.1fx" % (r / c) if (r and c) else "–") for c, (r, _) in zip(cv, rv)]
        print("| " + " | ".join(row) + " |")
    print()
    print("b8 = batch 8 (ms per step for all 8 streams). Steps: %d (b1), %d (b8); wall %.0f s."
          % (a.steps, a.b8_steps, time.time() - t_start))


if __name__ == "__main__":
    main()
