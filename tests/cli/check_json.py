"""Checks the JSON of `continual bench --json` or `continual profile --json` (read from stdin)
against the README's description: one JSON object with the run's settings and, for bench, the
step-time quantiles in order; for profile, every op once, slowest first.

usage: continual bench MODEL --json --steps N --warmup W | python3 check_json.py bench N W
       continual profile MODEL --json --steps N --warmup W | python3 check_json.py profile N W
"""
import json
import sys

WHAT, STEPS, WARMUP = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
text = sys.stdin.read()
d = json.loads(text)  # the whole of stdout is one object
assert isinstance(d, dict), text

NUMBER = (int, float)
COMMON = [("model", str), ("version", str), ("backend", str), ("threads", int), ("batch", int),
          ("input_frame", list), ("steps", int), ("warmup", int)]
BENCH = [("output_frame", list), ("first_step_ms", NUMBER), ("ms", dict), ("steps_per_s", NUMBER),
         ("macs_per_step", int), ("gmac_per_s", NUMBER), ("state_bytes", int), ("arena_bytes", int),
         ("peak_rss_bytes", int)]
PROFILE = [("step_ms", NUMBER), ("op_ms", NUMBER), ("ops", list)]
for key, kind in COMMON + (BENCH if WHAT == "bench" else PROFILE):
    assert key in d, "missing %r in %s" % (key, text)
    assert isinstance(d[key], kind), (key, d[key])

assert d["steps"] == STEPS and d["warmup"] == WARMUP, d
assert d["threads"] >= 1 and d["batch"] >= 1, d
assert d["backend"] in ("avx512", "avx2", "portable", "openblas"), d["backend"]
assert d["version"].count(".") == 2, d["version"]
assert d["input_frame"][0] == d["batch"], d

if WHAT == "bench":
    assert d["output_frame"][0] == d["batch"], d
    ms = d["ms"]
    order = [ms[k] for k in ("min", "p10", "p50", "p90", "p99", "max")]
    assert all(v >= 0 for v in order) and order == sorted(order), ms
    assert ms["min"] <= ms["mean"] <= ms["max"], ms
    assert d["first_step_ms"] > 0 and d["steps_per_s"] > 0, d
    assert d["macs_per_step"] > 0 and d["arena_bytes"] >= d["state_bytes"] > 0, d
    assert d["peak_rss_bytes"] >= d["arena_bytes"], d
    print("bench --json ok: p50 %.4f ms, p99 %.4f ms, backend %s, threads %d" % (ms["p50"], ms["p99"], d["backend"],
                                                                              d["threads"]))
else:
    ops = d["ops"]
    assert ops and sorted(o["op"] for o in ops) == list(range(len(ops))), [o["op"] for o in ops]
    times = [o["total_ms"] for o in ops]
    assert all(t >= 0 for t in times) and times == sorted(times, reverse=True), times
    assert abs(sum(times) - d["op_ms"]) <= 1e-3 * max(1.0, d["op_ms"]), (sum(times), d["op_ms"])
    assert 0 < d["op_ms"] <= d["step_ms"] * 1.01 + 1e-3, d
    for o in ops:
        assert isinstance(o["kind"], str) and o["kind"] and isinstance(o["path"], str), o
        assert o["output_frame"][0] == d["batch"] and o["macs_per_step"] >= 0, o
        assert abs(o["us_per_step"] * STEPS - o["total_ms"] * 1e3) <= 1e-2 * max(1.0, o["total_ms"] * 1e3), o
    print("profile --json ok: %d ops, %.3f of %.3f ms in the ops" % (len(ops), d["op_ms"], d["step_ms"]))
