"""Checks `continual bench --json` (read from stdin) against the README's description: one JSON
object with the run's settings, the step-time quantiles in order, and positive sizes.

usage: continual bench MODEL --json --steps N --warmup W | python3 check_bench_json.py N W
"""
import json
import sys

STEPS, WARMUP = int(sys.argv[1]), int(sys.argv[2])
text = sys.stdin.read()
d = json.loads(text)  # the whole of stdout is one object
assert isinstance(d, dict), text

for key, kind in [("model", str), ("version", str), ("backend", str), ("threads", int), ("batch", int),
                  ("input_frame", list), ("output_frame", list), ("steps", int), ("warmup", int),
                  ("first_step_ms", float), ("ms", dict), ("steps_per_s", float), ("macs_per_step", int),
                  ("gmac_per_s", float), ("state_bytes", int), ("arena_bytes", int), ("peak_rss_bytes", int)]:
    assert key in d, "missing %r in %s" % (key, text)
    value = d[key]
    if kind is float:
        assert isinstance(value, (int, float)), (key, value)
    else:
        assert isinstance(value, kind), (key, value)

assert d["steps"] == STEPS and d["warmup"] == WARMUP, d
assert d["threads"] >= 1 and d["batch"] >= 1, d
assert d["backend"] in ("avx512", "avx2", "portable", "openblas"), d["backend"]
assert d["version"].count(".") == 2, d["version"]
assert d["input_frame"][0] == d["batch"] and d["output_frame"][0] == d["batch"], d
ms = d["ms"]
order = [ms[k] for k in ("min", "p10", "p50", "p90", "p99", "max")]
assert all(v >= 0 for v in order) and order == sorted(order), ms
assert ms["min"] <= ms["mean"] <= ms["max"], ms
assert d["first_step_ms"] > 0 and d["steps_per_s"] > 0, d
assert d["macs_per_step"] > 0 and d["arena_bytes"] >= d["state_bytes"] > 0, d
assert d["peak_rss_bytes"] >= d["arena_bytes"], d
print("bench --json ok: p50 %.4f ms, p99 %.4f ms, backend %s, threads %d" % (ms["p50"], ms["p99"], d["backend"],
                                                                          d["threads"]))
