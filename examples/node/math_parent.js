'use strict';
// Spawns a math worker, calls each of its functions and prints the results
// and the transport the calls took.
//   node examples/node/math_parent.js [--no-private-link] <worker-program-or-script> [args...]
//   node examples/node/math_parent.js --connect <service-id-or-tcp-endpoint>
// A .js worker runs with node, a .py worker with python3, anything else directly.
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
  if (argv[0] === '--connect') {
    worker = await ParentWorker.connect(argv[1]);
  } else {
    const privateLink = argv[0] !== '--no-private-link'; // off: every byte over ZeroMQ
    if (!privateLink) argv = argv.slice(1);
    const target = argv[0] || path.join(__dirname, 'math_worker.js');
    worker = ParentWorker.spawn(target, executableFor(target), { args: argv.slice(1), privateLink });
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
  } finally {
    await handle.stop();
  }
}

main().catch((err) => {
  console.error(`math_parent: ${err.message}`);
  process.exitCode = 1;
});
