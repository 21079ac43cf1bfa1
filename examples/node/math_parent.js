'use strict';
// Spawns a math worker, calls each of its functions and prints the results.
//   node examples/node/math_parent.js <worker-program-or-script> [args...]
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
  const target = process.argv[2] || path.join(__dirname, 'math_worker.js');
  const worker = ParentWorker.spawn(target, executableFor(target), { args: process.argv.slice(3) });
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
  } finally {
    await handle.stop();
  }
}

main().catch((err) => {
  console.error(`math_parent: ${err.message}`);
  process.exitCode = 1;
});
