'use strict';
// Echoes the value cases through a worker and prints what came back.
//   node value_parent.js [--stream] <worker-program> [args...]
// One line per case: `<case> <canonical form>` or `<case> error:<text>`; the
// canonical form is described in tests/interop/test_matrix.py (CANONICAL).
// With --stream it streams the worker's `count` instead (STREAM_LINES there).
const { ParentWorker } = require('../../../bindings/node');

function deep(n) {
  let v = [];
  for (let i = 0; i < n - 1; i++) v = [v];
  return v;
}

const CASES = [
  ['emoji', '😀𝄞'],
  ['empty_str', ''],
  ['empty_bin', Buffer.alloc(0)],
  ['empty_array', []],
  ['empty_map', {}],
  ['int64_min', -(2n ** 63n)],
  ['int64_max', 2n ** 63n - 1n],
  ['uint64_max', 2n ** 64n - 1n],
  ['nan', NaN],
  ['inf', Infinity],
  ['neg_inf', -Infinity],
  ['neg_zero', -0],
  // The decoder's limit (PROTOCOL §7) counts the arguments array: a value
  // nested 99 deep travels as 100 levels, the most allowed; one more is refused.
  ['deep_at_limit', deep(99)],
  ['deep_over_limit', deep(100)],
  ['lone_surrogate', '\ud800'], // not valid Unicode: JS strings are UTF-16
];

function canon(v) {
  if (v === null || v === undefined) return 'nil';
  if (typeof v === 'boolean') return String(v);
  if (typeof v === 'bigint') return `int:${v}`;
  if (typeof v === 'number') {
    if (Number.isNaN(v)) return 'float:nan';
    if (v === Infinity) return 'float:inf';
    if (v === -Infinity) return 'float:-inf';
    if (Object.is(v, -0)) return 'float:-0';
    // JS has one number type: an integral number is an integer here.
    return Number.isInteger(v) ? `int:${v}` : `float:${v}`;
  }
  if (typeof v === 'string') return `str:${Buffer.from(v, 'utf8').toString('hex')}`;
  if (v instanceof Uint8Array) return `bin:${Buffer.from(v).toString('hex')}`;
  if (Array.isArray(v)) return `[${v.map(canon).join(',')}]`;
  if (typeof v === 'object') return `{${Object.entries(v).map(([k, x]) => `${canon(k)}:${canon(x)}`).join(',')}}`;
  return `?${typeof v}`;
}

// count(5) to its end; count(1e9) closed after 3 items, then counted()
// polled until the worker saw the close (30 s: a hang guard).
async function stream(worker) {
  try {
    for await (const x of worker.stream.count(5)) console.log(`item ${canon(x)}`);
    console.log('end');
  } catch (err) {
    console.log(`error:${err.name}(${err.code}): ${err.message}`);
  }
  let i = 0;
  for await (const x of worker.stream.count(1e9)) {
    console.log(`half ${canon(x)}`);
    if (++i === 3) break;
  }
  const deadline = Date.now() + 30000;
  let closed = (await worker.call.counted())[1];
  while (closed < 1 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    closed = (await worker.call.counted())[1];
  }
  console.log(`closed ${canon(closed)}`);
}

async function main() {
  let argv = process.argv.slice(2);
  const streaming = argv[0] === '--stream';
  if (streaming) argv = argv.slice(1);
  const [program, ...args] = argv;
  const worker = ParentWorker.spawn(program, null, { args, timeout: 10000 });
  await worker.start();
  try {
    if (streaming) {
      await stream(worker);
      return;
    }
    for (const [name, value] of CASES) {
      try {
        console.log(`${name} ${canon(await worker.call.echo(value))}`);
      } catch (err) {
        console.log(`${name} error:${err.name}(${err.code}): ${String(err.message).replace(/\n/g, ' ')}`);
      }
    }
  } finally {
    await worker.stop();
  }
}

main().catch((err) => {
  console.error(`value_parent: ${err.stack}`);
  process.exitCode = 1;
});
