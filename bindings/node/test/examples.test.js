'use strict';
// examples/node: the parent against the Node math worker and the C one.

const { it, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { REPO, C_WORKER, runNode, waitFor } = require('./helpers');

const EXAMPLES = path.join(REPO, 'examples', 'node');
const PARENT = path.join(EXAMPLES, 'math_parent.js');
const NODE_WORKER = path.join(EXAMPLES, 'math_worker.js');

function expected(negativeError) {
  return [
    'add(1, 2) = 3',
    'multiply(6, 7) = 42',
    'factorial(10) = 3628800',
    `factorial(-1) failed: ${negativeError}`,
    'echo("héllo ✓") = "héllo ✓"',
    'transport: link', // our own workers take the private link
    '',
  ].join('\n');
}

it('math_parent.js with math_worker.js prints the expected lines', async () => {
  const r = await runNode([PARENT, NODE_WORKER]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, expected('RangeError: factorial of a negative number'));
});

it('math_parent.js with the C example worker prints the expected lines', async () => {
  if (!fs.existsSync(C_WORKER)) {
    // Normally built by `make build` / CTest before this suite runs.
    execFileSync('cmake', ['-S', REPO, '-B', path.join(REPO, 'build'), '-G', 'Ninja'], { stdio: 'inherit' });
    execFileSync('cmake', ['--build', path.join(REPO, 'build'), '--target', 'math_worker'], { stdio: 'inherit' });
  }
  const r = await runNode([PARENT, C_WORKER]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.split('\n');
  assert.match(lines[3], /^factorial\(-1\) failed: .*negative/);
  assert.equal(r.stdout, expected(lines[3].slice('factorial(-1) failed: '.length)));
});

it('math_parent.js --workers 3 runs a pool and prints its pids', async () => {
  const r = await runNode([PARENT, '--workers', '3', NODE_WORKER]);
  assert.equal(r.code, 0, r.stderr);
  const want = expected('RangeError: factorial of a negative number');
  assert.ok(r.stdout.startsWith(want), r.stdout);
  const m = /^pool: 3 workers, pids (\d+) (\d+) (\d+)\n$/.exec(r.stdout.slice(want.length));
  assert.ok(m, r.stdout);
  const pids = m.slice(1).map(Number);
  assert.equal(new Set(pids).size, 3);
  assert.deepEqual(pids.filter((pid) => fs.existsSync(`/proc/${pid}`)), []);
});

const HOME = fs.mkdtempSync(path.join(os.tmpdir(), 'mf-node-example-'));
after(() => fs.rmSync(HOME, { recursive: true, force: true }));

it('math_worker.js serves in connect mode when given a service id', async () => {
  const env = { ...process.env, HOME };
  const worker = spawn(process.execPath, [NODE_WORKER, 'math-example'], { env, stdio: 'inherit' });
  const exited = new Promise((resolve) => worker.on('exit', (code, signal) => resolve({ code, signal })));
  try {
    const registry = path.join(HOME, '.multifrost', 'services.json');
    await waitFor(() => fs.existsSync(registry) && JSON.parse(fs.readFileSync(registry, 'utf8'))['math-example'], {
      what: 'math-example to register',
    });
    const script = `const { ParentWorker } = require(${JSON.stringify(path.join(REPO, 'bindings', 'node'))});
      (async () => {
        const remote = await ParentWorker.connect('math-example');
        const f20 = await remote.call.factorial(20);
        console.log(typeof f20, String(f20));
        await remote.call.factorial(25).catch((e) => console.log(e.name, e.message));
        await remote.stop();
      })();`;
    const r = await runNode(['-e', script], { env });
    assert.equal(r.code, 0, r.stderr);
    // 20! is past 2^53: exact as a BigInt. 25! does not fit 64 bits: refused, not rounded.
    const [first, second] = r.stdout.split('\n');
    assert.equal(first, 'bigint 2432902008176640000');
    assert.match(second, /^RemoteCallError TypeError: cannot send the result of factorial\(\): .*too large/);
  } finally {
    worker.kill('SIGTERM');
    assert.deepEqual(await exited, { code: 0, signal: null });
  }
});
