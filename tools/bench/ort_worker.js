#!/usr/bin/env node
// The ONNX Runtime process of tools/bench: one JSON request per line on stdin, one JSON answer per
// line on stdout. Graphs are the reference's forward_step exported with continual.onnx (state as
// explicit inputs/outputs, see worker.py prep); each step's state outputs are fed back as the next
// step's state inputs, as ../shared/anchors/ort/bench_ort.js does. Sessions and their stream state
// are kept between requests, so later rounds continue the same stream.
//
//   {"cmd":"check","dir":D,"threads":1}  -> max |ORT - reference| over the K steps of D/meta.json
//   {"cmd":"time","dir":D,"threads":1,"warmup":W,"steps":N,"max_s":S,"min_steps":M} -> ms per step
'use strict';

const fs = require('fs');
const path = require('path');
const readline = require('readline');
const ort = require('onnxruntime-node');

const TYPED = { float32: Float32Array, int64: BigInt64Array, int32: Int32Array, float64: Float64Array };
const TIMING_POOL = 4;

function readRaw(dir, rec) {
  const buf = fs.readFileSync(path.join(dir, rec.file));
  const T = TYPED[rec.dtype];
  if (!T) throw new Error(`state dtype ${rec.dtype} not handled`);
  const data = new T(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  return new ort.Tensor(rec.dtype, data, rec.shape);
}

function randTensor(shape, seed) {
  let s = seed >>> 0 || 1;
  const n = shape.reduce((x, y) => x * y, 1);
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; d[i] = s / 4294967296 * 2 - 1; }
  return new ort.Tensor('float32', d, shape);
}

function stats(ms) {
  const v = [...ms].sort((x, y) => x - y);
  const q = (p) => v[Math.min(v.length - 1, Math.floor(p * (v.length - 1) + 0.5))];
  const mid = v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
  return { n: v.length, median: mid, p10: q(0.1), p90: q(0.9), min: v[0] };
}

const now = () => Number(process.hrtime.bigint()) / 1e6;
const sessions = new Map();

async function session(dir, threads) {
  const key = `${dir}|${threads}`;
  if (!sessions.has(key)) {
    const meta = JSON.parse(fs.readFileSync(path.join(dir, 'meta.json'), 'utf8'));
    const s = await ort.InferenceSession.create(path.join(dir, meta.onnx), {
      executionProviders: ['cpu'], graphOptimizationLevel: 'all', intraOpNumThreads: threads,
      interOpNumThreads: 1, executionMode: 'sequential',
    });
    const feeds = {};
    meta.state_inputs.forEach((n, i) => { feeds[n] = readRaw(dir, meta.states[i]); });
    const inputs = [];
    for (let i = 0; i < TIMING_POOL; i++) inputs.push(randTensor(meta.input_shape, 12345 + i));
    sessions.set(key, { s, meta, feeds, inputs, warmed: false });
  }
  return sessions.get(key);
}

async function step(e, x) {
  e.feeds.input = x;
  const out = await e.s.run(e.feeds);
  e.meta.state_inputs.forEach((n, i) => { e.feeds[n] = out[e.meta.state_outputs[i]]; });
  return out.output;
}

async function check(req) {
  const e = await session(req.dir, req.threads || 1);
  // from the traced state, on a copy of the feeds (the timing stream is left as it is)
  const saved = e.feeds;
  e.feeds = {};
  e.meta.state_inputs.forEach((n, i) => { e.feeds[n] = readRaw(req.dir, e.meta.states[i]); });
  let maxDiff = 0; let maxRef = 0;
  try {
    for (const st of e.meta.steps) {
      const y = readRaw(req.dir, st.y).data;
      const o = (await step(e, readRaw(req.dir, st.x))).data;
      if (o.length !== y.length) throw new Error(`output has ${o.length} values, the reference ${y.length}`);
      for (let i = 0; i < y.length; i++) {
        maxDiff = Math.max(maxDiff, Math.abs(o[i] - y[i]));
        maxRef = Math.max(maxRef, Math.abs(y[i]));
      }
      if (Number.isNaN(o[0])) maxDiff = Infinity;
    }
  } finally { e.feeds = saved; }
  return { max_abs_diff: maxDiff, max_abs_ref: maxRef };
}

async function time(req) {
  const e = await session(req.dir, req.threads || 1);
  const warm = e.warmed ? req.warmup : Math.max(req.warmup, 8);
  for (let i = 0; i < warm; i++) await step(e, e.inputs[i % TIMING_POOL]);
  e.warmed = true;
  const ts = [];
  const t0 = now();
  for (let i = 0; i < req.steps; i++) {
    const a = now();
    await step(e, e.inputs[i % TIMING_POOL]);
    const b = now();
    ts.push(b - a);
    if (ts.length >= req.min_steps && (b - t0) / 1000 > req.max_s) break;
  }
  return { ms: stats(ts), warmup: warm };
}

async function main() {
  const rl = readline.createInterface({ input: process.stdin });
  const handlers = { check, time, version: async () => ({ version: ort.env.versions.node || ort.env.versions.common }) };
  for await (const line of rl) {
    if (!line.trim()) continue;
    let res;
    try {
      const req = JSON.parse(line);
      const h = handlers[req.cmd];
      if (!h) throw new Error(`unknown request ${req.cmd}`);
      res = await h(req);
      res.ok = true;
    } catch (err) {
      res = { ok: false, error: String(err && err.message ? err.message : err).split('\n')[0].slice(0, 400) };
    }
    process.stdout.write(JSON.stringify(res) + '\n');
  }
}

main().catch((err) => { console.error(err); process.exit(1); });
