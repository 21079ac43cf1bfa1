'use strict';
// The Node binding benchmark: what a Node caller of libmultifrost sees.
//
// Cases (against build/benches/bench_worker, the same raw-msgpack worker as
// the C API suite):
//   call_seq       await handle.call.add(1, 2) one after the other      (µs/call)
//   concurrent5000 5 000 handle.call.add(i, 1) at once (Promise.all),
//                  several batches                                     (calls/s)
//   stream_small   for await (const x of handle.stream.items(n, 0)): one
//                  stream of 100 000 small integers                    (items/s)
//
// Every call checks its result; a wrong result or a failed call prints
// "bench_node: FAILED: ..." and exits 1. The results are one JSON object on
// stdout (format in benches/README.md); progress goes to stderr.
//
//   node benches/bench_node.js [--worker build/benches/bench_worker] [--cases a,b] [--scale F]
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const { ParentWorker } = require(path.join(ROOT, 'bindings', 'node'));

function fail(msg) {
  process.stderr.write(`bench_node: FAILED: ${msg}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const a = { worker: path.join(ROOT, 'build', 'benches', 'bench_worker'), cases: null, scale: 1 };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    if (argv[i] === '--worker') a.worker = v;
    else if (argv[i] === '--cases') a.cases = v.split(',').filter(Boolean);
    else if (argv[i] === '--scale') a.scale = Number(v);
    else fail(`unknown argument ${argv[i]} (use --worker, --cases, --scale)`);
    i++;
  }
  if (!(a.scale > 0)) fail('--scale must be > 0');
  return a;
}

const scaled = (n, scale, min) => Math.max(min, Math.round(n * scale));
const nowUs = () => Number(process.hrtime.bigint()) / 1e3;

function median(v) {
  const s = Float64Array.from(v).sort();
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function caseCallSeq(handle, scale, metrics, info) {
  const warmup = 300;
  const n = scaled(5000, scale, 10);
  const lat = new Float64Array(n);
  let start = 0;
  for (let i = 0; i < warmup + n; i++) {
    if (i === warmup) start = nowUs();
    const t = nowUs();
    const v = await handle.call.add(1, 2);
    if (v !== 3) fail(`add(1, 2) #${i} returned ${v}`);
    if (i >= warmup) lat[i - warmup] = nowUs() - t;
  }
  const mean = (nowUs() - start) / n;
  metrics.call_seq_p50_us = { value: median(lat), unit: 'us', better: 'lower', label: 'await handle.call.add(1, 2) sequential (median)' };
  metrics.call_seq_mean_us = { value: mean, unit: 'us', better: 'lower', label: 'await handle.call.add(1, 2) sequential (mean)' };
  info.call_seq_calls = n;
}

async function batch(handle, base, size) {
  const calls = new Array(size);
  for (let k = 0; k < size; k++) calls[k] = handle.call.add(base + k, 1);
  const results = await Promise.all(calls);
  for (let k = 0; k < size; k++) {
    if (results[k] !== base + k + 1) fail(`add(${base + k}, 1) returned ${results[k]}`);
  }
}

async function caseConcurrent5000(handle, scale, metrics, info) {
  const size = 5000;
  const batches = scaled(10, scale, 1);
  await batch(handle, 0, size); // warm-up
  const rates = [];
  for (let b = 0; b < batches; b++) {
    const t = nowUs();
    await batch(handle, (b + 1) * size, size);
    rates.push(size / ((nowUs() - t) / 1e6));
  }
  metrics.concurrent5000_calls_per_s = {
    value: median(rates), unit: 'call/s', better: 'higher', label: '5000 handle.call.add at once, Promise.all (median batch)',
  };
  info.concurrent5000_batches = batches;
  info.concurrent5000_rates = rates.map(Math.round);
}

async function readItems(handle, n) {
  let i = 0;
  for await (const x of handle.stream.items(n, 0)) {
    if (x !== i) fail(`item #${i} is ${x}`);
    i++;
  }
  if (i !== n) fail(`the stream of items(${n}, 0) ended after ${i} items`);
}

async function caseStreamSmall(handle, scale, metrics) {
  const n = scaled(100000, scale, 100);
  await readItems(handle, 1000); // warm-up
  const t = nowUs();
  await readItems(handle, n);
  metrics.stream_small_items_per_s = {
    value: n / ((nowUs() - t) / 1e6), unit: 'item/s', better: 'higher', label: 'for await over handle.stream.items: 100 000 small integers',
  };
}

const CASES = { call_seq: caseCallSeq, concurrent5000: caseConcurrent5000, stream_small: caseStreamSmall };

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const names = args.cases || Object.keys(CASES);
  for (const n of names) if (!CASES[n]) fail(`unknown case ${n} (have: ${Object.keys(CASES).join(', ')})`);
  const metrics = {};
  const info = { node: process.version };
  const worker = ParentWorker.spawn(args.worker, null, { timeout: 30000 });
  const handle = worker.handle();
  await handle.start();
  try {
    for (const n of names) {
      process.stderr.write(`bench_node: ${n}\n`);
      await CASES[n](handle, args.scale, metrics, info);
    }
  } finally {
    await handle.stop();
  }
  process.stdout.write(`${JSON.stringify({ suite: 'node', metrics, info })}\n`);
}

main().catch((err) => fail(`${err.name}: ${err.message}`));
