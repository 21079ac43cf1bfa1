'use strict';
// Spawns a math worker, calls each of its functions and prints the results
// and the transport the calls took.
//   node examples/node/math_parent.js [--no-private-link] [--workers N] <worker-program-or-script> [args...]
//   node examples/node/math_parent.js --connect <service-id-or-tcp-endpoint>
// A .js worker runs with node, a .py worker with python3, anything else directly.
// --workers N runs a pool of N copies of the worker and then also prints
// `pool: N workers, pids <pid> ...`.
const path = require('node:path');
// In your own project: require('multifrost'); here, the package in this repository.
const { ParentWorker, RemoteCallError } = require('../../bindings/node');

function executableFor(target) {
  if (/\.(c|m)?js$/.test(target)) return process.execPath;
  if (target.endsWith('.py')) return 'python3';
  return null; // a compiled worker runs directly
}

async function main() {
  let argv = process.argv.slice(2);
  let worker;
  let workers;
  if (argv[0] === '--connect') {
    worker = await ParentWorker.connect(argv[1]);
  } else {
    let privateLink = true; // off: every byte over ZeroMQ
    for (;;) {
      if (argv[0] === '--no-private-link') {
        privateLink = false;
        argv = argv.slice(1);
      } else if (argv[0] === '--workers') {
        workers = Number(argv[1]);
        argv = argv.slice(2);
      } else {
        break;
      }
    }
    const target = argv[0] || path.join(__dirname, 'math_worker.js');
    worker = ParentWorker.spawn(target, executableFor(target), { args: argv.slice(1), privateLink, workers });
  }
  const handle = worker.handle();
  await handle.start();
  try {
    console.log(`add(1, 2) = ${await handle.call.add(1, 2)}`);
    console.log(`multiply(6, 7) = ${await handle.call.multiply(6, 7)}`);
    console.log(`factorial(10) = ${await handle.call.factorial(10)}`);
    try {
      const r = await handle.call.factorial(-1);
      console.log(`factorial(-1) = ${r} (expected an error)`);
      process.exitCode = 1;
    } catch (err) {
      if (!(err instanceof RemoteCallError)) throw err;
      console.log(`factorial(-1) failed: ${err.message}`);
    }
    const text = 'héllo ✓';
    console.log(`echo(${JSON.stringify(text)}) = ${JSON.stringify(await handle.call.echo(text))}`);
    console.log(`transport: ${worker.metrics.transport}`);
    if (workers !== undefined) {
      const pids = worker.metrics.workers.map((w) => w.pid);
      console.log(`pool: ${pids.length} workers, pids ${pids.join(' ')}`);
    }
  } finally {
    await handle.stop();
  }
}

main().catch((err) => {
  console.error(`math_parent: ${err.message}`);
  process.exitCode = 1;
});
