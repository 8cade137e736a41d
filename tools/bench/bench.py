#!/usr/bin/env python3
"""Side-by-side speed comparison: continual-c, the reference (continual-inference 1.2.4 on torch)
and ONNX Runtime (onnxruntime-node, the reference's forward_step exported with continual.onnx),
on the models of the table, interleaved in one run, against the machine's measured peaks.

    /usr/bin/python3 tools/bench/bench.py [--quick] [--rounds 3] [--threads 1,2] [--rows a,b]
        [--clip-frames 80] [--no-ort] [--json OUT.json]

Per round, per row and batch: the reference, ORT and continual-c in turn (1 thread each); then
continual-c at the other thread counts; then 8 independent streams in one call vs one lockstep
batch of 8; then the whole-clip forward of CoX3D-S. Cells are the median over rounds of each
round's median ms per step. Before the rounds every system's outputs are checked against the
reference on the same input (the reference's steady state, K steps); a system off by more than
1e-3 of the output scale is marked "wrong". Not run in CI. See tools/bench/README.md.
"""
import argparse
import hashlib
import json
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import models  # noqa: E402  (no torch at import)
import worker  # noqa: E402  (numpy only at import; PREP_FORMAT)

PY = "/usr/bin/python3"
ORT_VERSION = "1.30.0"
REF_DEFAULT = os.path.join(REPO, "..", "shared", "reference", "continual-inference-1.2.4")
CHECK_STEPS = 6                 # steps compared after the warm-up
SEED = 7
WRONG_REL = 1e-3                # max |system - reference| / max |reference| above this is "wrong"
STREAMS = 8                     # independent streams vs a lockstep batch of this size


def cache_bytes(level):
    """cpu0's cache of this level (2: its L2, 3: the L3 it shares) in bytes, from sysfs (0 where the
    system does not say)."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for idx in sorted(os.listdir(base)):
            d = os.path.join(base, idx)
            with open(os.path.join(d, "level")) as f:
                if f.read().strip() != str(level):
                    continue
            with open(os.path.join(d, "size")) as f:
                txt = f.read().strip().upper()
            mult = {"K": 1 << 10, "M": 1 << 20}.get(txt[-1:], 1)
            return int(txt.rstrip("KM")) * mult
    except (OSError, ValueError):
        pass
    return 0


L2_BYTES = cache_bytes(2)
L3_BYTES = cache_bytes(3)
# The targets (README, "Speed comparison").
TARGET_VS_OTHERS = 0.5          # continual-c time / the faster correct other system
TARGET_COMPUTE = 0.5            # of the sgemm peak
TARGET_MEMORY = 0.7             # of the streaming read bandwidth
TARGET_STREAMS = 1.25           # n streams in one call / lockstep batch n
TARGET_THREADS = 1.7            # speed-up of 2 threads over 1 on batch-8 rows
TARGET_FORWARD = 1.0            # continual-c forward / torch.nn forward
TIMEOUT_PREP_S = 900
TIMEOUT_STEP_S = 900           # the first request of a stream includes its warm-up to the receptive field


# ---- workers ---------------------------------------------------------------------------------------
class Worker:
    """A child process answering one JSON line per request; restarted after a crash or a timeout."""

    def __init__(self, name, argv, env, log_path):
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.p = None
        self.lines = None
        self.dead_reason = None

    def start(self):
        log = open(self.log_path, "a")
        self.p = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                  env=self.env, text=True, bufsize=1, cwd=REPO)
        log.close()
        self.lines = queue.Queue()
        p, q = self.p, self.lines

        def pump():
            for line in p.stdout:
                q.put(line)
            q.put(None)
        threading.Thread(target=pump, daemon=True).start()

    def stop(self):
        if self.p is not None and self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.p = None

    def request(self, timeout, **req):
        if self.p is None or self.p.poll() is not None:
            self.start()
        try:
            self.p.stdin.write(json.dumps(req) + "\n")
            self.p.stdin.flush()
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            return {"ok": False, "error": "timed out after %d s (%s); worker restarted" % (timeout, req["cmd"])}
        except (BrokenPipeError, OSError) as e:
            self.stop()
            return {"ok": False, "error": "worker died: %s" % e}
        if line is None:
            rc = self.p.wait()
            self.p = None
            return {"ok": False, "error": "worker exited with status %d (see %s)" % (rc, self.log_path)}
        return json.loads(line)


def file_hash(paths, salt=""):
    h = hashlib.sha1(salt.encode())
    for p in sorted(paths):
        with open(p, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:12]


def py_files(folder):
    return [os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".py")]


# ---- setup ---------------------------------------------------------------------------------------
def measure_peak(cache, lib_dir, log):
    """Builds and runs peak.c against the static library; {} with a reason on failure."""
    exe = os.path.join(cache, "peak")
    static = os.path.join(lib_dir, "libcontinual.a")
    if not os.path.exists(static):
        return {"error": "no %s (build the library first)" % static}
    cc = os.environ.get("CC", "cc")
    try:
        cjson = subprocess.run(["pkg-config", "--libs", "libcjson"], capture_output=True, text=True).stdout.split()
    except OSError:
        cjson = ["-lcjson"]
    cmd = [cc, "-O2", "-std=c11", "-I" + os.path.join(REPO, "src"), "-I" + os.path.join(REPO, "include"),
           os.path.join(HERE, "peak.c"), static] + (cjson or ["-lcjson"]) + ["-lm", "-lpthread", "-o", exe]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        return {"error": "cannot build peak.c: %s" % r.stderr.strip()[:300]}
    log("measuring the peaks (sgemm, 256 MiB and 32 MiB reads) ...")
    try:
        r = subprocess.run([exe], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return {"error": "peak probe timed out"}
    out = {}
    for line in r.stdout.splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = float(v)
        except ValueError:
            out[k] = v
    return out


def ensure_ort(cache, log):
    """node_modules with onnxruntime-node in the cache folder; (NODE_PATH, None) or (None, reason)."""
    if not shutil.which("node") or not shutil.which("npm"):
        return None, "node/npm not installed (apt-get install nodejs npm)"
    d = os.path.join(cache, "ort")
    mods = os.path.join(d, "node_modules")
    pkg = os.path.join(mods, "onnxruntime-node", "package.json")
    if os.path.exists(pkg):
        with open(pkg) as f:
            if json.load(f).get("version") == ORT_VERSION:
                return mods, None
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "package.json"), "w") as f:
        json.dump({"name": "continual-c-bench-ort", "private": True}, f)
    log("npm install onnxruntime-node@%s into %s ..." % (ORT_VERSION, d))
    # --ignore-scripts: the package's postinstall would fetch CUDA/TensorRT providers; the CPU
    # backend is inside the tarball (../shared/anchors/ort/README.md).
    try:
        r = subprocess.run(["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund",
                            "onnxruntime-node@" + ORT_VERSION], cwd=d, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return None, "npm install timed out"
    if r.returncode or not os.path.exists(pkg):
        return None, "npm install failed: %s" % (r.stderr.strip().splitlines() or ["?"])[-1][:200]
    return mods, None


# ---- results -----------------------------------------------------------------------------------------
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def check_state(chk):
    """'ok' / 'wrong' / 'failed: ...' / None from a check answer."""
    if chk is None:
        return None
    if not chk.get("ok"):
        return "failed: " + chk.get("error", "?")
    scale = max(chk["max_abs_ref"], 1e-30)
    return "wrong" if not chk["max_abs_diff"] <= WRONG_REL * scale else "ok"


def fmt_ms(x):
    if x is None:
        return "–"
    return "%.3g" % x if x < 1000 else "%.0f" % x


def fmt_check(chk):
    st = check_state(chk)
    if st is None:
        return "–"
    if st.startswith("failed"):
        return "failed"
    return "%s %.1e/%.2g" % (st, chk["max_abs_diff"], chk["max_abs_ref"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: 3 small rows, few steps, a 16-frame clip")
    ap.add_argument("--rounds", type=int, default=None, help="rounds over every row (3; --quick 2)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per measurement (200; --quick 30)")
    ap.add_argument("--max-s", type=float, default=None, help="cap per measurement in s (3; --quick 0.7)")
    ap.add_argument("--min-steps", type=int, default=None, help="steps timed even past the cap (10; --quick 5)")
    ap.add_argument("--warmup", type=int, default=10, help="warm-up steps per measurement after the first")
    ap.add_argument("--rows", default=None, help="comma-separated row keys: " + ",".join(models.ROW_BY_KEY))
    ap.add_argument("--batches", default=None, help="only these batch sizes, e.g. 8")
    ap.add_argument("--threads", default="1,2", help="continual-c thread counts (batch-8 rows; 1 is always run)")
    ap.add_argument("--clip-frames", type=int, default=None, help="frames of the CoX3D-S forward clip (80; --quick 16)")
    ap.add_argument("--no-forward", action="store_true", help="skip the whole-clip forward comparison")
    ap.add_argument("--no-streams", action="store_true", help="skip the multi-stream comparison")
    ap.add_argument("--no-ort", action="store_true")
    ap.add_argument("--cache", default=os.path.join(HERE, ".cache"), help="models, graphs, node_modules (git-ignored)")
    ap.add_argument("--lib", default=os.environ.get("CONTINUAL_LIB", os.path.join(REPO, "build", "libcontinual.so")))
    ap.add_argument("--reference", default=os.environ.get("CO_REFERENCE_PYTHONPATH", REF_DEFAULT))
    ap.add_argument("--json", default=None, help="write all measurements here")
    a = ap.parse_args()
    q = a.quick
    rounds = a.rounds or (2 if q else 3)
    steps = a.steps or (30 if q else 200)
    max_s = a.max_s or (0.7 if q else 3.0)
    min_steps = a.min_steps or (5 if q else 10)
    clip_frames = a.clip_frames or (16 if q else 80)
    threads = sorted({int(t) for t in a.threads.split(",") if t.strip()} | {1})
    rows = [models.ROW_BY_KEY[k] for k in a.rows.split(",")] if a.rows else \
        [r for r in models.ROWS if r.quick or not q]
    only_b = {int(b) for b in a.batches.split(",")} if a.batches else None
    cells = [(r, b) for r in rows for b in (r.batches if not q else (1, 8)) if only_b is None or b in only_b]
    cache = os.path.abspath(a.cache)
    os.makedirs(cache, exist_ok=True)
    t_start = time.time()

    def log(msg):
        print("[%5.0f s] %s" % (time.time() - t_start, msg), file=sys.stderr, flush=True)

    lib = os.path.abspath(a.lib)
    if not os.path.exists(lib):
        sys.exit("no continual-c library at %s: build it first (README, 'Two commands') or pass --lib" % lib)
    ref_path = os.path.abspath(a.reference)
    if not os.path.isdir(os.path.join(ref_path, "continual")):
        sys.exit("the reference package is not at %s (--reference, or CO_REFERENCE_PYTHONPATH)" % ref_path)

    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = "1"  # 1 thread for torch/OpenBLAS (see ../shared/anchors/ort/README.md)
    env.pop("OMP_WAIT_POLICY", None)
    env["CONTINUAL_LIB"] = lib
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(REPO, "python"), ref_path, REPO])
    peak = measure_peak(cache, os.path.dirname(lib), log)
    node_path, ort_why = (None, "disabled (--no-ort)") if a.no_ort else ensure_ort(cache, log)
    ref = Worker("ref", [PY, os.path.join(HERE, "worker.py"), "ref"], env, os.path.join(cache, "worker-ref.log"))
    cw = Worker("c", [PY, os.path.join(HERE, "worker.py"), "c"], env, os.path.join(cache, "worker-c.log"))
    ort, ort_version = None, None
    if node_path:
        ort_env = dict(env, NODE_PATH=node_path)
        ort = Worker("ort", ["node", os.path.join(HERE, "ort_worker.js")], ort_env,
                     os.path.join(cache, "worker-ort.log"))
        v = ort.request(60, cmd="version")
        if not v.get("ok"):
            ort_why, ort = "onnxruntime-node does not load: %s" % v.get("error"), None
        else:
            ort_version = v["version"]
    notes = []

    # ---- models, reference streams, ONNX graphs (cached by the sources they come from) ----
    ref_src = file_hash(py_files(os.path.join(REPO, "tools", "zoo")) + [os.path.join(HERE, "models.py")],
                        salt="prep%d" % worker.PREP_FORMAT)
    c_src = file_hash(py_files(os.path.join(REPO, "python", "continual_c")) + [os.path.join(HERE, "models.py")])
    model_file, prep, info, checks = {}, {}, {}, {}
    for row in rows:
        path = os.path.join(cache, "models", "%s-%s.safetensors" % (row.key, c_src))
        if not os.path.exists(path):
            log("exporting %s to continual-c ..." % row.title)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            r = ref.request(TIMEOUT_PREP_S, cmd="export_c", row=row.key, path=path + ".tmp")
            if r.get("ok"):
                os.replace(path + ".tmp", path)
            else:
                notes.append("continual-c %s: export failed: %s" % (row.title, r.get("error")))
                path = None
        model_file[row.key] = path
    for row, B in cells:
        d = os.path.join(cache, "streams", "%s-b%d-%s" % (row.key, B, ref_src))
        done = os.path.join(d, "prep.json")
        p = None
        if os.path.exists(done):
            with open(done) as f:
                p = json.load(f)
            if ort is not None and not p.get("onnx_requested"):
                p = None  # made without the ONNX graph (--no-ort)
        if p is None:
            log("reference stream%s of %s, batch %d ..." % ("" if ort is None else " and ONNX graph", row.title, B))
            p = ref.request(TIMEOUT_PREP_S, cmd="prep", row=row.key, batch=B, warm=None, k=CHECK_STEPS, seed=SEED,
                            dir=d, onnx=ort is not None)
            if p.get("ok"):
                with open(done, "w") as f:
                    json.dump(p, f)
        p["dir"] = d
        prep[(row.key, B)] = p
        if not p.get("ok"):
            notes.append("reference %s b%d: cannot make the check stream: %s" % (row.title, B, p.get("error")))
        if model_file[row.key]:
            info[(row.key, B)] = cw.request(TIMEOUT_STEP_S, cmd="info", model=model_file[row.key], batch=B)
        log("checking %s, batch %d ..." % (row.title, B))
        if p.get("ok") and model_file[row.key]:
            checks[("c", row.key, B)] = cw.request(TIMEOUT_PREP_S, cmd="check", row=row.key, model=model_file[row.key],
                                                   batch=B, warm=p["warm"], k=CHECK_STEPS, seed=SEED, dir=d)
        if ort is not None and p.get("ok"):
            if "onnx_error" in p:
                checks[("ort", row.key, B)] = {"ok": False, "error": "export: " + p["onnx_error"]}
            else:
                checks[("ort", row.key, B)] = ort.request(TIMEOUT_PREP_S, cmd="check", dir=d, threads=1)
    has_threads = any(v.get("has_threads") for v in info.values() if v.get("ok"))
    extra_threads = [t for t in threads if t != 1]
    if extra_threads and not has_threads:
        notes.append("threads %s: skipped, the library has no thread option yet (no threads= keyword in "
                     "continual_c Model.stream)" % ",".join(map(str, extra_threads)))
        extra_threads = []
    overhead = cw.request(60, cmd="overhead", model=next(v for v in model_file.values() if v)) \
        if any(model_file.values()) else {"ok": False}

    # ---- rounds ----
    meas = {}  # (system, row, B, threads) -> [per-round median ms]

    def put(key, r):
        meas.setdefault(key, [])
        if r.get("ok"):
            meas[key].append(r["ms"]["median"])
        else:
            meas.setdefault(("error",) + key, r.get("error"))

    common = dict(steps=steps, warmup=a.warmup, max_s=max_s, min_steps=min_steps, seed=SEED)
    for rnd in range(1, rounds + 1):
        log("round %d/%d" % (rnd, rounds))
        for row, B in cells:
            p = prep[(row.key, B)]
            warm = p.get("warm", 0)
            put(("ref", row.key, B, 1), ref.request(TIMEOUT_STEP_S, cmd="time", row=row.key, batch=B, warm=warm,
                                                    **common))
            ck = checks.get(("ort", row.key, B))
            if ort is not None and ck is not None and ck.get("ok"):
                put(("ort", row.key, B, 1), ort.request(TIMEOUT_STEP_S, cmd="time", dir=p["dir"], threads=1,
                                                        **common))
            if model_file[row.key]:
                for t in [1] + (extra_threads if B > 1 else []):
                    put(("c", row.key, B, t), cw.request(TIMEOUT_STEP_S, cmd="time", model=model_file[row.key],
                                                         batch=B, threads=t, warm=warm, **common))
        if not a.no_streams:
            for row in rows:
                if not model_file[row.key]:
                    continue
                warm = prep.get((row.key, STREAMS), prep.get((row.key, 1), {})).get("warm", 0)
                r = cw.request(TIMEOUT_STEP_S, cmd="multistream", model=model_file[row.key], n=STREAMS, warm=warm,
                               **dict(common, max_s=2 * max_s))
                if r.get("ok"):
                    meas.setdefault(("lock", row.key), []).append(r["lockstep"]["median"])
                    meas.setdefault(("streams", row.key), []).append(r["streams"]["median"])
                else:
                    meas[("error", "streams", row.key)] = r.get("error")
        fr = models.ROW_BY_KEY[models.FORWARD_ROW]
        if not a.no_forward and model_file.get(fr.key) is None and fr.key not in [r.key for r in rows]:
            path = os.path.join(cache, "models", "%s-%s.safetensors" % (fr.key, c_src))
            if not os.path.exists(path):
                log("exporting %s to continual-c ..." % fr.title)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                r = ref.request(TIMEOUT_PREP_S, cmd="export_c", row=fr.key, path=path + ".tmp")
                if r.get("ok"):
                    os.replace(path + ".tmp", path)
            model_file[fr.key] = path if os.path.exists(path) else None
        if not a.no_forward and model_file.get(fr.key):
            out = os.path.join(cache, "forward-%s-%d.npy" % (fr.key, clip_frames))
            reps = 1 if clip_frames > 32 else 3
            r = ref.request(TIMEOUT_PREP_S, cmd="forward", row=fr.key, frames=clip_frames, seed=SEED, reps=reps,
                            max_s=max_s, out=out)
            put(("ref_fwd", fr.key), r)
            r = cw.request(TIMEOUT_PREP_S, cmd="forward", row=fr.key, model=model_file[fr.key], frames=clip_frames,
                           seed=SEED, reps=reps, max_s=max_s, compare=out if r.get("ok") else None)
            put(("c_fwd", fr.key), r)
            if r.get("check"):
                checks[("c_fwd", fr.key)] = dict(r["check"], ok=True)
    for w in (ref, cw, ort):
        if w is not None:
            w.stop()
    # The peaks again, the best of both: on a shared machine a probe may have been preempted.
    peak_end = measure_peak(cache, os.path.dirname(lib), log)
    for k, v in peak_end.items():
        if isinstance(v, float) and isinstance(peak.get(k), float) and k != "sgemm_size" and v > peak[k]:
            peak[k] = v
            if k == "sgemm_gflops":
                peak["sgemm_size"] = peak_end.get("sgemm_size")

    # ---- report ----
    res = {k: med(v) for k, v in meas.items() if k[0] != "error"}
    errs = {k[1:]: v for k, v in meas.items() if k[0] == "error"}
    sg, bw = peak.get("sgemm_gflops"), peak.get("stream_gbs")
    out = []
    pr = out.append
    pr("## continual-c vs the reference vs ONNX Runtime: ms per step, 1 thread, median of %d rounds" % rounds)
    pr("")
    pr("```")
    pr("host: %s %s, %d cpus, %s; loadavg at start/end %s / %s" % (
        platform.system(), platform.machine(), os.cpu_count(), cpu_name(), load_at_start, " ".join(
            "%.2f" % x for x in os.getloadavg())))
    lib_shown = os.path.relpath(lib, REPO) if lib.startswith(REPO + os.sep) else lib
    pr("continual-c %s (kernels %s); reference continual 1.2.4 on torch %s; onnxruntime-node %s" % (
        lib_shown, peak.get("kernel_set", "?"), torch_version(), ort_version if ort else "– (%s)" % ort_why))
    if "error" in peak:
        pr("peaks: not measured (%s)" % peak["error"])
    else:
        pr("peaks (1 core): sgemm %.1f GFLOP/s (continual-c's GEMM, %dx%d square); read %.1f GB/s (%d MiB buffer, %s)"
           % (sg, peak["sgemm_size"], peak["sgemm_size"], bw, peak["stream_mib"], peak["stream_isa"]))
        if isinstance(peak.get("cached_gbs"), float):
            pr("read from a %d MiB buffer, read again each pass (the last-level cache where it is that large): %.1f GB/s; "
               "L2 %s" % (peak["cached_mib"], peak["cached_gbs"],
                          "%d KiB per core" % (L2_BYTES >> 10) if L2_BYTES else "unknown"))
    if overhead.get("ok"):
        pr("continual-c timed through ctypes: %.2f us per call of timing overhead (a no-op C call, median)"
           % overhead["us"]["median"])
    pr("steps %d per measurement (capped at %.1f s, at least %d), warm-up to the receptive field once; %s; wall %.0f s"
       % (steps, max_s, min_steps, "--quick" if q else "full run", time.time() - t_start))
    pr("```")
    pr("")
    tcols = ["C %dt ms" % t for t in extra_threads] + ["1t/%dt" % t for t in extra_threads]
    head = ["model", "B", "reference", "ORT", "continual-c", "C / faster other", "GFLOP/s", "% sgemm",
            "GB/s weights", "% read bw", "weights+state ceiling", "roofline"] + tcols + ["check ref / ORT / C"]
    pr("| " + " | ".join(head) + " |")
    pr("|---|--:|" + "--:|" * (len(head) - 3) + "---|")
    summary = {k: [] for k in ("others", "roofline", "threads", "streams", "forward")}
    foot = []

    def cell(system, row, B):
        if system == "ort" and a.no_ort:
            return "–", None
        v = res.get((system, row.key, B, 1))
        e = errs.get((system, row.key, B, 1))
        chk = checks.get((system, row.key, B))
        st = check_state(chk)
        if st and st.startswith("failed"):
            foot.append("%s %s b%d: %s" % (system, row.title, B, st))
            return "failed[%d]" % len(foot), None
        if v is None:
            pp = prep.get((row.key, B), {})
            if e:
                why = e
            elif system == "ort" and ort is None:
                why = ort_why
            elif system == "ort" and not pp.get("ok"):
                why = "no reference stream to check it against (%s)" % pp.get("error")
            else:
                why = "not run"
            foot.append("%s %s b%d: failed: %s" % (system, row.title, B, why))
            return "failed[%d]" % len(foot), None
        return fmt_ms(v) + (" wrong" if st == "wrong" else ""), (v if st != "wrong" else None)

    for row, B in cells:
        t_ref, v_ref = cell("ref", row, B)
        t_ort, v_ort = cell("ort", row, B)
        t_c, v_c = cell("c", row, B)
        others = [v for v in (v_ref, v_ort) if v is not None]
        ratio = v_c / min(others) if (v_c and others) else None
        cinfo = info.get((row.key, B), {})
        macs, params, state = cinfo.get("macs_per_step"), cinfo.get("params"), cinfo.get("state_bytes") or 0
        gf = 2 * macs / (v_c * 1e6) if (v_c and macs) else None
        gbs = 4 * params / (v_c * 1e6) if (v_c and params) else None
        bnd = models.bound(row, B)
        psg = gf / sg if (gf and sg) else None
        pbw = gbs / bw if (gbs and bw) else None
        # The most of the sgemm peak a step can reach if its weights are read once and its state
        # read and written once per step (float32, the measured read bandwidth): rows whose
        # ceiling is under the compute target cannot meet it at any kernel speed unless that
        # memory stays in cache. The state term is exact for the retroactive attention (every
        # numerator is updated every step) and for conv rings (every window gets a tap), an
        # over-count for delay lines (one slot a step). Weights and state that fit in one core's
        # L2 are not streamed: no ceiling from memory then.
        moved = 4 * params + 2 * state if params else None
        # what fits in half the L3 (the other core's share aside) streams at the cached rate
        cached = peak.get("cached_gbs") if isinstance(peak.get("cached_gbs"), float) else None
        mbw = cached if (cached and moved and L3_BYTES and moved <= L3_BYTES // 2) else bw
        ceil = min(1.0, (2 * macs / moved) * mbw / sg) if (macs and moved and mbw and sg) else None
        in_l2 = bool(params and L2_BYTES and 4 * params + state <= L2_BYTES)
        if in_l2:
            ceil = None
        if ratio is not None:
            summary["others"].append((row, B, ratio, ratio <= TARGET_VS_OTHERS))
        roof = "–"
        if bnd == models.COMPUTE and psg is not None:
            roof = "compute %s" % ("ok" if psg >= TARGET_COMPUTE else "short")
            summary["roofline"].append((row, B, bnd, psg, ceil, psg >= TARGET_COMPUTE))
        elif bnd == models.MEMORY and pbw is not None:
            roof = "memory %s" % ("ok" if pbw >= TARGET_MEMORY else "short")
            summary["roofline"].append((row, B, bnd, pbw, None, pbw >= TARGET_MEMORY))
        tc = []
        for t in extra_threads:
            tc.append(fmt_ms(res.get(("c", row.key, B, t))) if B > 1 else "")
        for t in extra_threads:
            vt = res.get(("c", row.key, B, t))
            c1 = res.get(("c", row.key, B, 1))
            if B > 1 and vt and c1:
                tc.append("%.2fx" % (c1 / vt))
                summary["threads"].append((row, B, t, c1 / vt, c1 / vt >= TARGET_THREADS))
            else:
                tc.append("")
        chk = " / ".join(fmt_check(checks.get((s, row.key, B))) if s != "ref" else "ref" for s in ("ref", "ort", "c"))
        pr("| " + " | ".join([row.title, str(B), t_ref, t_ort, t_c,
                              ("%.2f" % ratio) if ratio is not None else "–",
                              "%.1f" % gf if gf else "–", "%.0f%%" % (100 * psg) if psg else "–",
                              "%.1f" % gbs if gbs else "–", "%.0f%%" % (100 * pbw) if pbw else "–",
                              ("%.0f%%" % (100 * ceil) if ceil else "in L2" if in_l2 else "–") if bnd == models.COMPUTE else "–",
                              roof]
                             + tc + [chk]) + " |")
    pr("")
    pr("C / faster other: continual-c's time over the faster of the reference and ORT among those whose outputs "
       "are right. GFLOP/s = 2 x MACs/step (continual-c's plan) / time; GB/s = 4 bytes x parameters / time. "
       "weights+state ceiling (compute-bound rows): min(100%%, 2 x MACs / (4 x parameters + 2 x state bytes) x "
       "read bw (the 32 MiB rate where they fit in half the L3) / sgemm peak), the share of the peak left when the weights stream from memory once per step and the "
       "stream's state is read and written once (none where both fit in one core's L2). "
       "check: max |system - reference| / max |reference| over %d steady-state steps (wrong above %.0e of "
       "the output scale)." % (CHECK_STEPS, WRONG_REL))
    if not a.no_streams:
        pr("")
        pr("### %d independent streams in one call vs one lockstep batch of %d (continual-c, ms per step of all)"
           % (STREAMS, STREAMS))
        pr("")
        pr("| model | lockstep batch %d | %d streams, one co_forward_step_streams | streams / lockstep |" % (
            STREAMS, STREAMS))
        pr("|---|--:|--:|--:|")
        for row in rows:
            lo, sm = res.get(("lock", row.key)), res.get(("streams", row.key))
            if lo and sm:
                summary["streams"].append((row, sm / lo, sm / lo <= TARGET_STREAMS))
                pr("| %s | %s | %s | %.2f |" % (row.title, fmt_ms(lo), fmt_ms(sm), sm / lo))
            else:
                pr("| %s | failed: %s | | |" % (row.title, errs.get(("streams", row.key), "not run")))
    if not a.no_forward:
        fr = models.ROW_BY_KEY[models.FORWARD_ROW]
        pr("")
        pr("### forward (whole clip, 1 x 3 x %d x 160 x 160) of %s, 1 thread" % (clip_frames, fr.title))
        pr("")
        rf, cf = res.get(("ref_fwd", fr.key)), res.get(("c_fwd", fr.key))
        chk = checks.get(("c_fwd", fr.key))
        st = check_state(chk) if chk else "not checked"
        pr("| torch.nn (reference forward) ms | continual-c forward ms | C / torch.nn | check C |")
        pr("|--:|--:|--:|---|")
        pr("| %s | %s | %s | %s |" % (
            fmt_ms(rf) if rf else "failed: %s" % errs.get(("ref_fwd", fr.key), "?"),
            fmt_ms(cf) if cf else "failed: %s" % errs.get(("c_fwd", fr.key), "?"),
            "%.2f" % (cf / rf) if (rf and cf) else "–", fmt_check(chk) if chk else st))
        if rf and cf:
            summary["forward"].append((fr, cf / rf, cf / rf <= TARGET_FORWARD and st != "wrong"))
    pr("")
    pr("### Targets")
    pr("")

    def line(name, items, fmt_item):
        if not items:
            pr("- %s: not measured" % name)
            return
        ok = [i for i in items if i[-1]]
        bad = [fmt_item(i) for i in items if not i[-1]]
        pr("- %s: %d/%d met%s" % (name, len(ok), len(items), ("; short: " + ", ".join(bad)) if bad else ""))

    line("continual-c <= %.1fx the faster of reference/ORT" % TARGET_VS_OTHERS, summary["others"],
         lambda i: "%s b%d %.2f" % (i[0].title, i[1], i[2]))
    line("roofline (compute-bound >= %.0f%% sgemm peak, memory-bound b1 >= %.0f%% read bw)" % (
        100 * TARGET_COMPUTE, 100 * TARGET_MEMORY), summary["roofline"],
        lambda i: "%s b%d %.0f%% %s%s" % (i[0].title, i[1], 100 * i[3], i[2],
                                          " (weights+state ceiling %.0f%%)" % (100 * i[4]) if i[4] else ""))
    if not a.no_streams:
        line("%d streams in one call <= %.2fx lockstep batch %d" % (STREAMS, TARGET_STREAMS, STREAMS),
             summary["streams"], lambda i: "%s %.2f" % (i[0].title, i[1]))
    if extra_threads:
        line("2 threads >= %.1fx 1 thread (batch-8 rows)" % TARGET_THREADS,
             [i for i in summary["threads"] if i[2] == 2], lambda i: "%s %.2fx" % (i[0].title, i[3]))
    else:
        pr("- 2 threads >= %.1fx 1 thread: skipped (%s)" % (
            TARGET_THREADS, "the library has no thread option yet" if 2 in threads else "--threads 1"))
    if not a.no_forward:
        line("forward of CoX3D-S <= torch.nn", summary["forward"], lambda i: "%.2f" % i[1])
    notes = notes + ["[%d] %s" % (i + 1, f) for i, f in enumerate(foot)]
    if notes:
        pr("")
        pr("Notes:")
        for n in notes:
            pr("- " + n)
    print("\n".join(out))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"peak": peak, "overhead": overhead, "prep": {"%s-b%d" % k: v for k, v in prep.items()},
                       "info": {"%s-b%d" % k: v for k, v in info.items()},
                       "checks": {"-".join(map(str, k)): v for k, v in checks.items()},
                       "measurements": {"-".join(map(str, k)): v for k, v in meas.items() if k[0] != "error"},
                       "errors": {"-".join(map(str, k)): v for k, v in errs.items()}}, f, indent=1)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def torch_version():
    try:
        r = subprocess.run([PY, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True,
                           timeout=60)
        return r.stdout.strip() or "?"
    except Exception:  # noqa: BLE001
        return "?"


load_at_start = " ".join("%.2f" % x for x in os.getloadavg())

if __name__ == "__main__":
    main()
