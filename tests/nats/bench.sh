#!/usr/bin/env bash
# tests/nats/bench.sh — throughput and frame-to-output latency of `continual serve` against the
# number of workers (not run in CI). A 3-node JetStream cluster on loopback (R3), then for each
# worker count W: W workers, STREAMS streams of the demo model at RATE_HZ frames/s each for FRAMES
# frames (RATE_HZ=0: as fast as the publisher is acknowledged), outputs collected from <P>_OUT.
#
#   bash tests/nats/bench.sh [BUILD_DIR]        WORKERS="1 2 3" STREAMS=40 FRAMES=100 RATE_HZ=0
#
# Prints one row per W: streams, input frames/s served in the steady state (each stream's outputs
# after its first 5, i.e. once a worker has taken it up), streams/s at that rate (frames/s / frames
# per stream), p50 / p99 latency from a frame's publication to its output's storage in <P>_OUT.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="$(cd "${1:-$ROOT/build}" && pwd)"
CLI="$BUILD/continual" CTL="$BUILD/tests/natsctl" MODEL="$ROOT/examples/demo.safetensors"
WORKERS="${WORKERS:-1 2 3}" STREAMS="${STREAMS:-40}" FRAMES="${FRAMES:-100}" RATE_HZ="${RATE_HZ:-0}"
export LD_LIBRARY_PATH="$BUILD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
WORK="$(mktemp -d "${TMPDIR:-/tmp}/co_nats_bench.XXXXXX")"
BASE="${CO_NATS_PORT_BASE:-$((21000 + RANDOM % 20000))}"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${CO_NATS_KEEP:-0}" = 1 ] && echo "bench: kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
URLS="nats://127.0.0.1:$((BASE + 1)),nats://127.0.0.1:$((BASE + 2)),nats://127.0.0.1:$((BASE + 3))"
ROUTES="nats-route://127.0.0.1:$((BASE + 11)), nats-route://127.0.0.1:$((BASE + 12)), nats-route://127.0.0.1:$((BASE + 13))"
for i in 1 2 3; do
  mkdir -p "$WORK/n$i"
  printf 'server_name: n%s\nlisten: 127.0.0.1:%s\njetstream { store_dir: "%s" }\ncluster { name: co_bench, listen: 127.0.0.1:%s, routes: [ %s ] }\n' \
    "$i" $((BASE + i)) "$WORK/n$i" $((BASE + 10 + i)) "$ROUTES" > "$WORK/n$i.conf"
  nats-server -c "$WORK/n$i.conf" > "$WORK/n$i.log" 2>&1 & PIDS+=($!)
done
printf '%-8s %-8s %-10s %-14s %-10s %-10s %-10s\n' workers streams frames "frames/s" "streams/s" "p50 ms" "p99 ms"
for W in $WORKERS; do
  P="bench$W"
  SERVE=("$CLI" serve "$MODEL" --nats "$URLS" --prefix "$P" --replicas 3 --max-streams "$STREAMS" --stats-ms 0)
  for _ in $(seq 1 40); do "${SERVE[@]}" --setup > "$WORK/setup.log" 2>&1 && break; sleep 0.5; done
  WPIDS=()
  for k in $(seq 1 "$W"); do "${SERVE[@]}" --name "b$W-$k" > "$WORK/$P-w$k.log" 2>&1 & WPIDS+=($!); PIDS+=($!); done
  sleep 2
  mkdir -p "$WORK/$P"
  "$CTL" publish "$MODEL" --nats "$URLS" --prefix "$P" --streams "$STREAMS" --frames "$FRAMES" --rate-hz "$RATE_HZ" \
    --dir "$WORK/$P" > "$WORK/$P-publish.log" 2>&1
  "$CTL" collect --nats "$URLS" --prefix "$P" --streams "$STREAMS" --dir "$WORK/$P" --timeout-s 300 > "$WORK/$P-collect.txt"
  for p in "${WPIDS[@]}"; do kill -TERM "$p"; done
  for p in "${WPIDS[@]}"; do wait "$p" || true; done
  "/usr/bin/python3" - "$WORK/$P/outputs.tsv" "$W" "$STREAMS" "$FRAMES" <<'EOF'
import sys
tsv, w, streams, frames = sys.argv[1], *map(int, sys.argv[2:])
# steady state: the outputs after each stream's first WARMUP (its discovery and take-up by a worker)
WARMUP = 5
rows = [l.split("\t") for l in open(tsv)]
steady = [r for r in rows if int(r[1]) >= WARMUP]
lat = sorted(float(r[5]) for r in steady)
t = sorted(int(r[4]) for r in steady)
span = (t[-1] - t[0]) / 1e3
out_per_stream = len(rows) / streams
fps = len(steady) / span * frames / out_per_stream  # input frames/s: outputs/s x inputs per output
print(f"{w:<8} {streams:<8} {streams * frames:<10} {fps:<14.0f} {fps / frames:<10.2f} {lat[len(lat) // 2]:<10.2f} {lat[int((len(lat) - 1) * 0.99)]:<10.2f}")
EOF
done
