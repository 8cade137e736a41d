#!/usr/bin/env bash
# tests/nats/cluster_test.sh — `continual serve` on a 3-node JetStream cluster (loopback only),
# bounded in time, every process it starts killed at the end (also on failure):
#
#   3 nats-server nodes (R3 streams and KV buckets), 3 workers, 20 streams of the demo model fed by
#   tests/nats/natsctl at 10 frames/s each (15 s); while they run: kill -9 of a worker (a fresh one joins),
#   SIGSTOP of another past its lease then SIGCONT (fencing), kill -9 and restart of one NATS node.
#   Then every stream's outputs, collected from <P>_OUT, must equal `continual run --pad-end` over
#   the same frames byte for byte, each output index exactly once; every checkpoint revision must
#   be written by the worker whose claim precedes it; the paused worker must publish no output of
#   a frame it had not stepped before the pause. Prints the fail-over figures.
#
#   bash tests/nats/cluster_test.sh [BUILD_DIR]     (needs nats-server; BUILD_DIR=build)
#   CO_NATS_KEEP=1 keeps the work folder (logs, frames, outputs) for a look.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="$(cd "${1:-$ROOT/build}" && pwd)"
CLI="$BUILD/continual"
CTL="$BUILD/tests/natsctl"
MODEL="$ROOT/examples/demo.safetensors"
PY=/usr/bin/python3
STREAMS=20 FRAMES=150 RATE_HZ=10 LEASE_MS=2000 CKPT_EVERY=8
export LD_LIBRARY_PATH="$BUILD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
command -v nats-server >/dev/null || { echo "cluster_test: nats-server not installed" >&2; exit 1; }
test -x "$CLI" && test -x "$CTL" || { echo "cluster_test: build $CLI and $CTL first (libnats-dev)" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/co_nats.XXXXXX")"
BASE="${CO_NATS_PORT_BASE:-$((21000 + RANDOM % 20000))}"
declare -A PID=()
cleanup() {
  local rc=$?
  for name in "${!PID[@]}"; do kill -CONT "${PID[$name]}" 2>/dev/null || true; kill -9 "${PID[$name]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    echo "cluster_test: FAILED (rc $rc); last log lines:" >&2
    for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 8 "$f" >&2; }; done
  fi
  [ "${CO_NATS_KEEP:-0}" = 1 ] && echo "cluster_test: work folder kept: $WORK" >&2 || rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
now_ms() { date +%s%3N; }

URLS="nats://127.0.0.1:$((BASE + 1)),nats://127.0.0.1:$((BASE + 2)),nats://127.0.0.1:$((BASE + 3))"
ROUTES="nats-route://127.0.0.1:$((BASE + 11)),nats-route://127.0.0.1:$((BASE + 12)),nats-route://127.0.0.1:$((BASE + 13))"
for i in 1 2 3; do
  mkdir -p "$WORK/n$i"
  cat > "$WORK/n$i.conf" <<EOF
server_name: n$i
listen: 127.0.0.1:$((BASE + i))
jetstream { store_dir: "$WORK/n$i", max_memory_store: 64MB, max_file_store: 1GB }
cluster { name: co_test, listen: 127.0.0.1:$((BASE + 10 + i)), routes: [ ${ROUTES//,/, } ] }
EOF
done
start_node() { nats-server -c "$WORK/n$1.conf" >> "$WORK/n$1.log" 2>&1 & PID[n$1]=$!; }
for i in 1 2 3; do start_node "$i"; done

SERVE=("$CLI" serve "$MODEL" --nats "$URLS" --prefix ct --replicas 3 --lease-ms "$LEASE_MS"
       --checkpoint-every "$CKPT_EVERY" --max-streams "$STREAMS" --checkpoint-history 64 --stats-ms 2000)
ok=0
for _ in $(seq 1 40); do # the cluster elects its JetStream leader, then the streams and buckets are made
  if "${SERVE[@]}" --setup > "$WORK/setup.log" 2>&1; then ok=1; break; fi
  sleep 0.5
done
[ "$ok" = 1 ] || { cat "$WORK/setup.log" >&2; exit 1; }
echo "cluster_test: 3 nodes up on 127.0.0.1:$((BASE + 1))-$((BASE + 3)); $(tail -n 1 "$WORK/setup.log")"

start_worker() { "${SERVE[@]}" --name "$1" > "$WORK/$1.log" 2>&1 & PID[$1]=$!; }
for w in w1 w2 w3; do start_worker "$w"; done
sleep 1

"$CTL" publish "$MODEL" --nats "$URLS" --prefix ct --streams "$STREAMS" --frames "$FRAMES" --rate-hz "$RATE_HZ" \
  --dir "$WORK" > "$WORK/publish.log" 2>&1 & PID[publisher]=$!
T0=$(now_ms)
sleep 2.5
T_KILL=$(now_ms); kill -9 "${PID[w1]}"; unset 'PID[w1]'
echo "cluster_test: kill -9 w1 at +$((T_KILL - T0)) ms"
sleep 1
start_worker w4
sleep 2.5
T_STOP=$(now_ms); kill -STOP "${PID[w2]}"
echo "cluster_test: SIGSTOP w2 at +$((T_STOP - T0)) ms"
sleep 4.5
T_CONT=$(now_ms); kill -CONT "${PID[w2]}"
echo "cluster_test: SIGCONT w2 at +$((T_CONT - T0)) ms ($((T_CONT - T_STOP)) ms paused, lease $LEASE_MS ms)"
sleep 0.5
T_NODE=$(now_ms); kill -9 "${PID[n3]}"; wait "${PID[n3]}" 2>/dev/null || true
echo "cluster_test: kill -9 NATS node n3 at +$((T_NODE - T0)) ms"
sleep 2
start_node 3
echo "cluster_test: NATS node n3 restarted at +$(($(now_ms) - T0)) ms"
timeout 120 tail --pid="${PID[publisher]}" -f /dev/null
wait "${PID[publisher]}"; unset 'PID[publisher]'
cat "$WORK/publish.log"

timeout 150 "$CTL" collect --nats "$URLS" --prefix ct --streams "$STREAMS" --dir "$WORK" --timeout-s 120 | tee "$WORK/collect.txt"
"$CTL" history --nats "$URLS" --prefix ct --streams "$STREAMS" > "$WORK/history.tsv"
for w in w2 w3 w4; do kill -TERM "${PID[$w]}"; done
for w in w2 w3 w4; do timeout 20 tail --pid="${PID[$w]}" -f /dev/null || true; unset "PID[$w]"; done

same=0
for i in $(seq 0 $((STREAMS - 1))); do
  id=$(printf 's%02d' "$i")
  "$CLI" run "$MODEL" --input - --output - --pad-end < "$WORK/$id.in.f32" > "$WORK/$id.ref.f32"
  if cmp -s "$WORK/$id.ref.f32" "$WORK/$id.out.f32"; then same=$((same + 1)); else echo "cluster_test: $id differs from continual run" >&2; fi
done
echo "cluster_test: $same of $STREAMS streams equal continual run --pad-end byte for byte"

LEASE_MS=$LEASE_MS CKPT_EVERY=$CKPT_EVERY "$PY" - "$WORK" "$T_KILL" "$T_STOP" "$T_CONT" "$STREAMS" "$same" <<'EOF'
import re, sys, glob, os
work, t_kill, t_stop, t_cont, streams, same = sys.argv[1], *map(int, sys.argv[2:])
fails = []
events = []  # (time, worker, kind, stream, seq)
takes = []   # (time, worker, stream, output index of the checkpoint)
pat = re.compile(r"serve\[(\w+)\] (\d+): (.*)")
for path in glob.glob(os.path.join(work, "w*.log")):
    for line in open(path):
        m = pat.match(line)
        if not m: continue
        w, t, msg = m.group(1), int(m.group(2)), m.group(3)
        mm = re.search(r"take-over of '(\w+)' from '\w*' at seq \d+, output (\d+)", msg)
        if mm: takes.append((t, w, mm.group(1), int(mm.group(2))))
        for kind, rx in (("take", r"take-over of '(\w+)' from '\w*' at seq (\d+)"), ("serve", r"serving '(\w+)' from seq (\d+)"),
                         ("drop", r"(?:lost the lease of|fenced: the checkpoint of|publishing for) '(\w+)'.*dropped at seq (\d+)")):
            mm = re.search(rx, msg)
            if mm: events.append((t, w, kind, mm.group(1), int(mm.group(2))))
events.sort()
# 1. checkpoints: every revision is written by the owner of the latest claim before it
hist = {}
for line in open(os.path.join(work, "history.tsv")):
    sid, rev, owner, flags, seq, out, t = line.split("\t")
    hist.setdefault(sid, []).append((int(rev), owner, int(flags), int(seq), int(t)))
revs = claims = 0
for sid, rows in hist.items():
    rows.sort()
    holder = None
    for rev, owner, flags, seq, t in rows:
        revs += 1
        if flags & 2: holder, claims = owner, claims + 1
        elif owner != holder: fails.append(f"{sid}: revision {rev} written by {owner} while {holder} held the claim")
print(f"cluster_test: fencing: {revs} checkpoint revisions of {len(hist)} streams, {claims} claims; every write by the claim holder: {'yes' if not fails else 'NO'}")
# 2. the paused worker: streams it held at SIGSTOP, taken over while it slept
held = {}
for t, w, kind, sid, seq in events:
    if t > t_stop: break
    if w == "w2": held[sid] = kind != "drop"
held = {s for s, h in held.items() if h}
taken = {sid for t, w, kind, sid, seq in events if kind == "take" and w != "w2" and t_stop < t <= t_cont + 500 and sid in held}
if not held or not taken: fails.append(f"the SIGSTOP case was vacuous (w2 held {sorted(held)}, taken over: {sorted(taken)})")
drops = {sid: (t, seq) for t, w, kind, sid, seq in events if w == "w2" and kind == "drop" and t >= t_cont and sid in held}
late = 0
for line in open(os.path.join(work, "outputs.tsv")):
    sid, idx, seq, w, t = line.split("\t")[:5]
    if w != "w2" or int(t) <= t_cont or sid not in held: continue
    again = [e for e in events if e[1] == "w2" and e[3] == sid and e[2] in ("take", "serve") and e[0] >= t_cont and e[0] <= int(t)]
    if again: continue
    if sid not in drops or int(seq) > drops[sid][1]:
        late += 1
        fails.append(f"{sid}: w2 published the output of seq {seq} at {t} after its pause")
print(f"cluster_test: SIGSTOP: w2 held {len(held)} streams, {len(taken)} taken over while it was stopped; after SIGCONT it dropped {len(drops)} and published {late} outputs of frames it had not stepped before the pause")
# 3. fail-over figures
kill_takes = [(t, sid, seq) for t, w, kind, sid, seq in events if kind == "take" and t_kill < t < t_stop]
if kill_takes:
    print(f"cluster_test: kill -9: {len(kill_takes)} streams taken over, first {kill_takes[0][0] - t_kill} ms and last {kill_takes[-1][0] - t_kill} ms after the kill (lease {os.environ.get('LEASE_MS', '2000')} ms)")
else:
    fails.append("no take-over after kill -9")
# outputs the previous owner had stored past the checkpoint a take-over resumed from: the new
# owner computes them again and JetStream drops them as duplicates
rows = [l.split("\t") for l in open(os.path.join(work, "outputs.tsv"))]
redone = []
for t, w, sid, first in takes:
    redone.append(sum(1 for r in rows if r[0] == sid and r[3] != w and int(r[1]) >= first and int(r[4]) <= t))
if redone:
    print(f"cluster_test: {len(takes)} take-overs in all (kill -9, SIGSTOP, node restart); outputs computed again per take-over "
          f"(de-duplicated): mean {sum(redone) / len(redone):.1f}, max {max(redone)} (checkpoint every {os.environ.get('CKPT_EVERY', '?')} frames)")
if same != streams: fails.append(f"{streams - same} streams differ from continual run")
for f in fails: print("cluster_test: FAIL:", f, file=sys.stderr)
sys.exit(1 if fails else 0)
EOF
grep -h "final:" "$WORK"/w*.log | sed 's/^/cluster_test: /'
echo "cluster_test: 1 passed, 0 failed"
