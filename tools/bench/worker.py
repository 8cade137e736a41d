#!/usr/bin/env python3
"""One measuring process of tools/bench: `worker.py ref` (the reference, continual 1.2.4 on torch)
or `worker.py c` (continual-c through its ctypes binding). It reads one JSON request per line on
stdin and answers one JSON line on stdout; anything else printed goes to stderr. The driver
(bench.py) starts it with the thread variables set to 1, gives each request a timeout, and
restarts a worker that died or ran past it.

Networks, streams and ONNX-free reference streams are kept between requests, so a stream stays
in steady state from one round to the next (warm-up to a full receptive field is paid once).
"""
import os
import sys

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy / torch load
    os.environ.setdefault(_v, "1")

import ctypes  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "python"))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

# Distinct input frames cycled while timing (the step must not see one frame over and over).
TIMING_POOL = 4
# Check streams start after receptive field + this many frames.
WARM_PAST_RECEPTIVE_FIELD = 8
# Version of what Reference.prep writes: bench.py reuses cached check streams and ONNX graphs made
# with the same version and the same model sources (bump it when prep changes).
PREP_FORMAT = 1


def frame(seed, t, shape):
    """Input frame t of the check stream: the same numbers in every worker."""
    return np.random.default_rng([seed, t]).standard_normal(shape, dtype=np.float32)


def stats(ms):
    v = sorted(ms)
    q = lambda p: v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))]  # noqa: E731
    return {"n": len(v), "median": statistics.median(v), "p10": q(0.1), "p90": q(0.9), "min": v[0]}


def time_loop(call, warmup, steps, max_s, min_steps):
    """ms per call: `warmup` untimed calls, then `steps` timed ones, stopping early once `max_s`
    seconds have passed and at least `min_steps` were timed (a slow system cannot stall a round)."""
    clock = time.perf_counter
    for i in range(warmup):
        call(i)
    ts = []
    t_begin = clock()
    for i in range(steps):
        t0 = clock()
        call(i)
        t1 = clock()
        ts.append((t1 - t0) * 1e3)
        if len(ts) >= min_steps and t1 - t_begin > max_s:
            break
    return ts


def compare(got, ref):
    got = np.asarray(got, dtype=np.float64).reshape(-1)
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    if got.size != ref.size:
        raise ValueError("output has %d values, the reference %d" % (got.size, ref.size))
    return {"max_abs_diff": float(np.max(np.abs(got - ref))) if ref.size else 0.0,
            "max_abs_ref": float(np.max(np.abs(ref))) if ref.size else 0.0}


# ---- the reference (continual 1.2.4, torch) --------------------------------------------------------
class Reference:
    def __init__(self):
        import torch

        torch.set_num_threads(1)
        self.torch = torch
        self.nets = {}      # (row, batch) -> [net, warmed]
        self.clip_out = {}

    def net(self, row, batch):
        import models

        key = (row, batch)
        if key not in self.nets:
            self.nets[key] = [models.ROW_BY_KEY[row].build(), False]
        return self.nets[key]

    def export_c(self, req):
        import models

        row = models.ROW_BY_KEY[req["row"]]
        net = row.build()
        t0 = time.time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row.export(net, req["path"])
        return {"export_s": time.time() - t0}

    def prep(self, req):
        """The check stream of (row, batch): W warm-up frames then K checked ones, stepped with the
        explicit-state step (the function the ONNX graph is traced from); writes the K reference
        outputs (ref_y.npy) and, for ORT, the state after W frames, the K frames and outputs
        (meta.json + .bin, the layout of ../shared/anchors/ort/export_models.py) and the graph
        exported there with the reference's continual.onnx."""
        import continual as co
        import models
        import torch
        from continual.utils import flatten

        row = models.ROW_BY_KEY[req["row"]]
        B, K, seed, out = req["batch"], req["k"], req["seed"], req["dir"]
        os.makedirs(out, exist_ok=True)
        net = row.build()
        if not isinstance(net, co.Sequential):
            # continual.onnx's wrapper passes the state positionally, which an attention module
            # takes as its `key`; inside a Sequential it is passed by name (the same function).
            net = co.Sequential(net)
        # every buffer full and every index past its start-up (as the ORT anchors trace)
        W = req["warm"] or int(getattr(net, "receptive_field", 1)) + WARM_PAST_RECEPTIVE_FIELD
        shape = (B,) + tuple(row.frame)
        state = None
        t0 = time.time()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for t in range(W):
                _, state = net._forward_step(torch.from_numpy(frame(seed, t, shape)), state)
            flat = [s.clone() for s in flatten(state)]
            ys = []
            from continual.onnx import _shape_list

            st, _ = _shape_list([s.clone() for s in flat], net._state_shape)
            for t in range(W, W + K):
                y, st = net._forward_step(torch.from_numpy(frame(seed, t, shape)), st)
                ys.append(y.detach().numpy().copy())
        ref_y = np.stack(ys)
        np.save(os.path.join(out, "ref_y.npy"), ref_y)
        res = {"prep_s": time.time() - t0, "out_shape": list(ref_y.shape[1:]), "warm": W,
               "onnx_requested": bool(req.get("onnx", True)),
               "max_abs_ref": float(np.max(np.abs(ref_y)))}
        if not req.get("onnx", True):
            return res
        # ---- ORT: the graph and its reference stream ----
        meta = {"input_shape": list(shape), "states": [], "steps": []}
        dtypes = {torch.float32: "float32", torch.int64: "int64", torch.int32: "int32", torch.float64: "float64",
                  torch.bool: "bool"}

        def save_raw(name, t):
            t = t.detach().contiguous()
            with open(os.path.join(out, name), "wb") as f:
                f.write(t.numpy().tobytes())
            return {"file": name, "dtype": dtypes[t.dtype], "shape": list(t.shape)}

        try:
            from continual.onnx import OnnxWrapper

            ow = OnnxWrapper(net)
            meta["state_inputs"], meta["state_outputs"] = ow.state_input_names, ow.state_output_names
            for i, s in enumerate(flat):
                meta["states"].append(save_raw("state_%d.bin" % i, s))
            for k in range(K):
                x = torch.from_numpy(frame(seed, W + k, shape))
                meta["steps"].append({"x": save_raw("x_%d.bin" % k, x), "y": save_raw("y_%d.bin" % k,
                                                                                        torch.from_numpy(ys[k]))})
            onnx_path = os.path.join(out, "step.onnx")
            t1 = time.time()

            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                co.onnx.export(net, (torch.from_numpy(frame(seed, W, shape)), *[s.clone() for s in flat]), onnx_path,
                               input_names=["input"], output_names=["output"], do_constant_folding=True,
                               opset_version=14)
            meta["onnx"] = "step.onnx"
            with open(os.path.join(out, "meta.json"), "w") as f:
                json.dump(meta, f, indent=1)
            res["onnx_export_s"] = time.time() - t1
        except Exception as e:  # the ORT column then says why
            res["onnx_error"] = "%s: %s" % (type(e).__name__, str(e).strip().splitlines()[0][:300] if str(e) else "")
        return res

    def time(self, req):
        import models

        row = models.ROW_BY_KEY[req["row"]]
        B = req["batch"]
        entry = self.net(req["row"], B)
        net = entry[0]
        shape = (B,) + tuple(row.frame)
        pool = [self.torch.from_numpy(frame(req["seed"] + 1, i, shape)) for i in range(TIMING_POOL)]
        warm = req["warmup"] if entry[1] else max(req["warmup"], req["warm"])
        with self.torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ts = time_loop(lambda i: net.forward_step(pool[i % TIMING_POOL]), warm, req["steps"], req["max_s"],
                           req["min_steps"])
        entry[1] = True
        return {"ms": stats(ts), "warmup": warm}

    def forward(self, req):
        import models

        row = models.ROW_BY_KEY[req["row"]]
        key = (req["row"], "forward")
        if key not in self.nets:
            self.nets[key] = [row.build(), True]
        net = self.nets[key][0]
        clip = self.torch.from_numpy(clip_input(req["seed"], row.frame, req["frames"]))
        last = {}
        with self.torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ts = time_loop(lambda i: last.update(y=net.forward(clip)), 0, req["reps"], req["max_s"], 1)
        y = last["y"]
        np.save(req["out"], y.numpy())
        return {"ms": stats(ts), "out_shape": list(y.shape)}


def clip_input(seed, frame_shape, frames):
    """(1, C, T, *S): the clip of the whole-clip comparison."""
    return np.random.default_rng([seed, 999]).standard_normal((1, frame_shape[0], frames) + tuple(frame_shape[1:]),
                                                              dtype=np.float32)


# ---- continual-c, through the ctypes binding ---------------------------------------------------------
class ContinualC:
    """Steps are timed around one direct ctypes call of co_forward_step on preallocated buffers (the
    binding's own Stream.forward_step adds numpy allocations and checks per call); `overhead`
    measures what the same call path costs around a trivial C function."""

    def __init__(self):
        import continual_c

        self.cc = continual_c
        self.models = {}
        self.streams = {}
        self.multi = {}
        self.has_threads = "threads" in inspect.signature(continual_c.Model.stream).parameters

    def model(self, path):
        if path not in self.models:
            self.models[path] = self.cc.load(path)
        return self.models[path]

    def info(self, req):
        m = self.model(req["model"])
        pi = m.plan_info(batch=req["batch"])
        return {"macs_per_step": pi["macs_per_step"], "params": m.param_count, "state_bytes": pi["state_bytes"],
                "has_threads": self.has_threads,
                "library": self.cc.library_path()}

    def new_stream(self, m, batch, threads):
        if self.has_threads:  # explicit even for 1: the library's default may be more
            return m.stream(batch_size=batch, threads=threads)
        if threads != 1:
            raise RuntimeError("the library has no thread option (no threads= in continual_c Model.stream)")
        return m.stream(batch_size=batch)

    def check(self, req):
        import models

        layout = models.ROW_BY_KEY[req["row"]].to_reference_layout or (lambda y: y)
        m = self.model(req["model"])
        B, W, K, seed = req["batch"], req["warm"], req["k"], req["seed"]
        s = m.stream(batch_size=B)
        ref_y = np.load(os.path.join(req["dir"], "ref_y.npy"))
        worst = {"max_abs_diff": 0.0, "max_abs_ref": 0.0}
        for t in range(W + K):
            y = s.forward_step(frame(seed, t, s.input_shape))
            if t >= W:
                if y is None:
                    raise RuntimeError("no output at step %d (the reference has one)" % t)
                c = compare(layout(y), ref_y[t - W])
                worst = {k: max(worst[k], c[k]) for k in worst}
        s.close()
        return worst

    def time(self, req):
        m = self.model(req["model"])
        B, threads = req["batch"], req.get("threads", 1)
        key = (req["model"], B, threads)
        fresh = key not in self.streams
        if fresh:
            s = self.new_stream(m, B, threads)
            pool = [np.ascontiguousarray(frame(req["seed"] + 1, i, s.input_shape)) for i in range(TIMING_POOL)]
            y = np.empty(s.output_shape, dtype=np.float32)
            self.streams[key] = (s, pool, y)
        s, pool, y = self.streams[key]
        lib, h = s._lib, s._handle
        ptrs = [p.ctypes.data_as(ctypes.c_void_p) for p in pool]
        yp = y.ctypes.data_as(ctypes.c_void_p)
        has = ctypes.c_int(0)
        hp = ctypes.byref(has)
        fn = lib.co_forward_step

        def call(i):
            if fn(h, ptrs[i % TIMING_POOL], yp, hp, 1):
                raise RuntimeError("co_forward_step: %s" % lib.co_last_error())

        warm = max(req["warmup"], req["warm"]) if fresh else req["warmup"]
        ts = time_loop(call, warm, req["steps"], req["max_s"], req["min_steps"])
        return {"ms": stats(ts), "warmup": warm}

    def overhead(self, req):
        """µs of the timing path around a C call that does nothing (co_stream_state_size)."""
        m = self.model(req["model"])
        s = m.stream(batch_size=1)
        fn, h = s._lib.co_stream_state_size, s._handle
        ts = time_loop(lambda i: fn(h), 100, 5000, 5.0, 100)
        s.close()
        return {"us": stats([t * 1e3 for t in ts])}

    def multistream(self, req):
        """n independent batch-1 streams (each at its own position) in one co_forward_step_streams call,
        and one lockstep batch-n stream, timed in alternation."""
        m = self.model(req["model"])
        n = req["n"]
        key = (req["model"], n)
        fresh = key not in self.multi
        if fresh:
            lock = self.new_stream(m, n, 1)
            ctx = m.multistream(n)
            streams = [self.new_stream(m, 1, 1) for _ in range(n)]
            xs = np.ascontiguousarray(frame(req["seed"] + 2, 0, (n,) + lock.input_shape[1:]))
            ys = np.empty((n,) + lock.output_shape[1:], dtype=np.float32)
            # different positions: stream i starts i frames ahead
            for i, st in enumerate(streams):
                for _ in range(i):
                    st.forward_step(xs[i:i + 1])
            self.multi[key] = (lock, ctx, streams, xs, ys)
        lock, ctx, streams, xs, ys = self.multi[key]
        lib = lock._lib
        row_in, row_out = xs[0].nbytes, ys[0].nbytes
        hs = (ctypes.c_void_p * n)(*[st._handle for st in streams])
        xp = (ctypes.c_void_p * n)(*[xs.ctypes.data + i * row_in for i in range(n)])
        yp = (ctypes.c_void_p * n)(*[ys.ctypes.data + i * row_out for i in range(n)])
        has = (ctypes.c_int * n)()
        one = ctypes.c_int(0)
        lock_h, ctx_h = lock._handle, ctx._h
        x0, y0 = xs.ctypes.data_as(ctypes.c_void_p), ys.ctypes.data_as(ctypes.c_void_p)

        def step_lock(i):
            if lib.co_forward_step(lock_h, x0, y0, ctypes.byref(one), 1):
                raise RuntimeError("co_forward_step: %s" % lib.co_last_error())

        def step_multi(i):
            if lib.co_forward_step_streams(ctx_h, hs, n, xp, yp, has, 1):
                raise RuntimeError("co_forward_step_streams: %s" % lib.co_last_error())

        warm = max(req["warmup"], req["warm"]) if fresh else req["warmup"]
        t_lock, t_multi = [], []
        per = max(1, req["steps"] // 5)  # alternate in 5 blocks so both see the same machine load
        for _ in range(5):
            t_lock += time_loop(step_lock, warm, per, req["max_s"] / 10, req["min_steps"] // 5 + 1)
            t_multi += time_loop(step_multi, warm, per, req["max_s"] / 10, req["min_steps"] // 5 + 1)
            warm = req["warmup"]
        return {"lockstep": stats(t_lock), "streams": stats(t_multi)}

    def forward(self, req):
        import models

        row = models.ROW_BY_KEY[req["row"]]
        m = self.model(req["model"])
        clip = clip_input(req["seed"], row.frame, req["frames"])
        last = {}
        ts = time_loop(lambda i: last.update(y=m.forward(clip)), 0, req["reps"], req["max_s"], 1)
        res = {"ms": stats(ts)}
        if req.get("compare") and os.path.exists(req["compare"]):
            res["check"] = compare(last["y"], np.load(req["compare"]))
        return res


def main():
    role = sys.argv[1]
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints (warnings, libraries) go to stderr, never into the protocol
    sys.stdout = sys.stderr
    impl = None
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            if impl is None:
                impl = Reference() if role == "ref" else ContinualC()
            res = getattr(impl, req["cmd"])(req)
            res["ok"] = True
        except Exception as e:  # reported, the worker stays up
            traceback.print_exc()
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            res = {"ok": False, "error": ("%s: %s" % (type(e).__name__, msg))[:400]}
        proto.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
