'use strict';
// A math worker in Node: add, multiply, factorial and echo.
// Spawned by a parent it runs as `node math_worker.js --worker` (spawn mode).
// Given a service id (or tcp:// endpoint) it serves in connect mode:
//   node examples/node/math_worker.js math-service
// In your own project: require('multifrost'); here, the package in this repository.
const { ChildWorker } = require('../../bindings/node');

class MathWorker extends ChildWorker {
  add(a, b) {
    return a + b;
  }

  multiply(a, b) {
    return a * b;
  }

  factorial(n) {
    if (!Number.isInteger(n)) throw new TypeError('factorial needs an integer');
    if (n < 0) throw new RangeError('factorial of a negative number');
    let result = 1n;
    for (let i = 2n; i <= BigInt(n); i++) result *= i;
    // Exact either way: a number while it fits, a BigInt (int64 on the wire) beyond.
    return result <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(result) : result;
  }

  echo(value) {
    return value;
  }
}

const arg = process.argv[2];
const serviceId = arg && arg !== '--worker' ? arg : undefined;
new MathWorker(serviceId).run().catch((err) => {
  console.error(`math_worker: ${err.message}`);
  process.exitCode = 2;
});
