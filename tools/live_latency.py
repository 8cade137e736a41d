"""When does `continual run --input - --output -` emit each output of a live stream?

Feeds raw float32 frames to the tool at a fixed rate through a pipe (stdin stays open between
frames, as from a camera) and prints the time each output frame comes out, next to the time its
input frame went in. Without a frame held back, output k comes right after the input frame that
completes it; the end padding's frames come when stdin closes.

usage: /usr/bin/python3 tools/live_latency.py [--cli build/continual] [--model examples/demo.safetensors]
                                              [--frames 8] [--rate 2] [--pad-end]
"""
import argparse
import math
import re
import struct
import subprocess
import threading
import time


def frame_sizes(cli, model):
    """Floats of one input frame and of one output frame, from `continual info` (batch 1)."""
    info = subprocess.run([cli, "info", model], check=True, capture_output=True, text=True).stdout
    dims = lambda key: [int(d) for d in re.search(key + r"\s+\(([\d, ]+)\)", info).group(1).split(",")]
    return math.prod(dims("input frame")), math.prod(dims("output frame"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cli", default="build/continual")
    ap.add_argument("--model", default="examples/demo.safetensors")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--rate", type=float, default=2.0, help="input frames per second")
    ap.add_argument("--pad-end", action="store_true")
    a = ap.parse_args()
    n_in, n_out = frame_sizes(a.cli, a.model)
    cmd = [a.cli, "run", a.model, "--input", "-", "--output", "-"] + (["--pad-end"] if a.pad_end else [])
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    sent = []
    start = time.monotonic()

    def feed():
        for i in range(a.frames):
            time.sleep(max(0.0, start + i / a.rate - time.monotonic()))
            frame = struct.pack("<%df" % n_in, *([math.sin(i + 0.1 * k) for k in range(n_in)]))
            sent.append(time.monotonic() - start)  # before the write: the tool may answer before it returns
            proc.stdin.write(frame)
        time.sleep(max(0.0, start + a.frames / a.rate - time.monotonic()))
        sent.append(time.monotonic() - start)  # end of input
        proc.stdin.close()

    writer = threading.Thread(target=feed)
    writer.start()
    got = []
    while True:
        buf = b""
        while len(buf) < 4 * n_out:
            chunk = proc.stdout.read(4 * n_out - len(buf))
            if not chunk:
                break
            buf += chunk
        if len(buf) < 4 * n_out:
            break
        got.append(time.monotonic() - start)
    writer.join()
    proc.wait()
    print("%s, %d frames at %g frames/s%s" % (a.model, a.frames, a.rate, ", --pad-end" if a.pad_end else ""))
    print("input frames sent at (s): " + " ".join("%.2f" % t for t in sent[:-1]) + "; stdin closed at %.2f" % sent[-1])
    for k, t in enumerate(got):
        last_in = max([i for i, s in enumerate(sent[:-1]) if s <= t], default=-1)
        print("  output %2d at %6.2f s  (%5.0f ms after input frame %d went in)" % (k, t, 1e3 * (t - sent[last_in]), last_in))
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
