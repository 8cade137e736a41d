#!/usr/bin/env bash
# tools/demo.sh — from a fresh Debian 12 checkout: install what is missing, build continual-c,
# and stream the bundled demo clip through the `continual` tool, checking the result against
# the output torch.nn computed for the same clip (examples/demo_expected.npy). No Python needed.
#
#   bash tools/demo.sh            (BUILD_DIR=build by default)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
JOBS="$(nproc 2>/dev/null || echo 2)"

# ---- dependencies (apt, only what is missing) ----
need=()
for pkg in cmake gcc make pkg-config libcjson-dev libopenblas-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "demo: installing ${need[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "demo: need root or sudo to install ${need[*]}" >&2; exit 1; }
    SUDO=sudo
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# ---- build ----
cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS" --target continual_cli
CLI="$BUILD_DIR/continual"

# ---- the demo ----
echo
echo "\$ continual info examples/demo.safetensors"
"$CLI" info "$ROOT/examples/demo.safetensors"
OUT="${TMPDIR:-/tmp}/continual_demo_out.$$.npy"
trap 'rm -f "$OUT"' EXIT
echo
echo "\$ continual run examples/demo.safetensors --input examples/demo_input.npy --output $OUT --pad-end"
"$CLI" run "$ROOT/examples/demo.safetensors" --input "$ROOT/examples/demo_input.npy" --output "$OUT" --pad-end
echo
echo "\$ continual compare $OUT examples/demo_expected.npy"
"$CLI" compare "$OUT" "$ROOT/examples/demo_expected.npy" --atol 1e-4 --rtol 1e-4
echo
echo "demo: OK — streaming the clip frame by frame reproduced torch.nn's output for the whole clip"
