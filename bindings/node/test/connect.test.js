'use strict';
// Connect mode: Node workers registered under a service id in a temporary
// HOME (this process and every child use it), reached by id or by endpoint.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const HOME = fs.mkdtempSync(path.join(os.tmpdir(), 'mf-node-home-'));
process.env.HOME = HOME; // before the library reads it: the registry lives in $HOME/.multifrost

const { ParentWorker, NotFoundError, ClosedError, RemoteCallError, TimeoutError, Status } = require('..');
const { WORKER, C_WORKER, alive, waitFor } = require('./helpers');

const REGISTRY = path.join(HOME, '.multifrost', 'services.json');

function registry() {
  try {
    return JSON.parse(fs.readFileSync(REGISTRY, 'utf8'));
  } catch {
    return {};
  }
}

/** Starts a worker process serving `target`; resolves once it is registered (or bound). */
function startWorker(program, args, isRegistered, env = {}) {
  const child = spawn(program, args, { env: { ...process.env, HOME, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  child.output = '';
  child.stdout.on('data', (d) => (child.output += d));
  child.stderr.on('data', (d) => (child.output += d));
  child.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return waitFor(() => isRegistered(child), { what: `${args.join(' ')} to register` }).then(() => child);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

after(() => fs.rmSync(HOME, { recursive: true, force: true }));

describe('connect mode', () => {
  let child;

  before(async () => {
    child = await startWorker(process.execPath, [WORKER, 'node-svc'], () => registry()['node-svc']?.pid > 0);
  });

  after(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });

  it('registers the Node worker under its service id in $HOME/.multifrost', () => {
    const entry = registry()['node-svc'];
    assert.equal(entry.pid, child.pid);
    assert.ok(entry.port >= 1024);
  });

  it('ParentWorker.connect reaches it by id; the pinned handle form works too', async () => {
    const remote = await ParentWorker.connect('node-svc');
    assert.equal(remote.state, 'running');
    const handle = remote.handle();
    await handle.start(); // already connected: a no-op
    assert.equal(await handle.call.add(1, 2), 3);
    assert.equal(await handle.call.slow(20), 20);
    assert.equal(await handle.call.echo(2n ** 64n - 1n), 2n ** 64n - 1n);
    await assert.rejects(handle.call.fail('remote'), { name: 'RemoteCallError', message: 'RangeError: remote' });
    assert.equal(remote.pid, 0); // not ours to supervise
    await handle.stop();
    await assert.rejects(handle.call.add(1, 2), ClosedError);
    assert.ok(alive(child.pid), 'closing a connect-mode parent leaves the service running');
  });

  it('several parents share one service', async () => {
    const parents = await Promise.all([1, 2, 3].map(() => ParentWorker.connect('node-svc', 5000)));
    try {
      const sums = await Promise.all(parents.map((p, i) => p.call.add(i, 10)));
      assert.deepEqual(sums, [10, 11, 12]);
    } finally {
      await Promise.all(parents.map((p) => p.stop()));
    }
  });

  it('a second worker with the same id fails with AlreadyRunningError', async () => {
    const second = spawn(process.execPath, [WORKER, 'node-svc'], { env: { ...process.env, HOME }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    second.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise((resolve) => second.on('exit', resolve));
    assert.equal(code, 2);
    assert.match(stderr, /AlreadyRunningError: service 'node-svc' already running \(pid \d+, port \d+\)/);
    assert.equal(registry()['node-svc'].pid, child.pid);
  });

  it('SIGTERM stops the worker cleanly: run() resolves, exit 0, entry removed', async () => {
    child.kill('SIGTERM');
    const { code, signal } = await child.exited;
    assert.equal(signal, null, `killed by ${signal}: the core's signal handling did not run`);
    assert.equal(code, 0, child.output);
    assert.match(child.output, /worker stopped cleanly/);
    assert.equal(registry()['node-svc'], undefined);
  });

  it('SIGINT does the same', async () => {
    const w = await startWorker(process.execPath, [WORKER, 'node-svc-int'], () => registry()['node-svc-int']);
    const remote = await ParentWorker.connect('node-svc-int');
    assert.equal(await remote.call.add(2, 2), 4);
    w.kill('SIGINT');
    const { code, signal } = await w.exited;
    assert.deepEqual({ code, signal }, { code: 0, signal: null });
    assert.equal(registry()['node-svc-int'], undefined);
    await remote.stop();
  });

  it('a call for another namespace is dropped: no answer, and the method never runs', async () => {
    const w = await startWorker(process.execPath, [WORKER, 'node-svc-ns'], () => registry()['node-svc-ns'], {
      TEST_WORKER_NAMESPACE: 'maths',
    });
    const maths = await ParentWorker.connect('node-svc-ns', { namespace: 'maths' });
    const plain = await ParentWorker.connect('node-svc-ns'); // namespace 'default'
    try {
      assert.equal(await maths.call.add(1, 1), 2);
      await assert.rejects(plain.callFunction('add', [1, 1], { timeout: 1000 }), TimeoutError);
      assert.equal(await maths.call.adds(), 1, 'the call for namespace default ran');
    } finally {
      await Promise.all([maths.stop(), plain.stop()]);
      w.kill('SIGTERM');
      await w.exited;
    }
  });

  it('a missing service fails with NotFoundError after the connect timeout', async () => {
    const started = performance.now();
    await assert.rejects(ParentWorker.connect('no-such-service', { connectTimeout: 300 }), (e) => {
      assert.ok(e instanceof NotFoundError, String(e));
      assert.equal(e.status, Status.MF_ERR_NOT_FOUND);
      assert.match(e.message, /no-such-service/);
      return true;
    });
    // It waited for the service to appear, for as long as it was asked to.
    const took = performance.now() - started;
    assert.ok(took >= 290, `gave up after ${took} ms`);
  });

  it('a worker bound to a tcp:// endpoint is reached by that endpoint', async () => {
    const port = await freePort();
    const endpoint = `tcp://127.0.0.1:${port}`;
    const w = await startWorker(process.execPath, [WORKER, endpoint], () => true);
    try {
      const remote = await ParentWorker.connect(endpoint, { connectTimeout: 5000 });
      assert.equal(await remote.call.add(40, 2), 42);
      await remote.stop();
    } finally {
      w.kill('SIGTERM');
      assert.deepEqual(await w.exited, { code: 0, signal: null });
    }
  });

  it('the C worker in connect mode, called from Node', async () => {
    const w = await startWorker(C_WORKER, ['c-svc'], () => registry()['c-svc']);
    try {
      const remote = await ParentWorker.connect('c-svc');
      assert.equal(await remote.call.multiply(6, 7), 42);
      await assert.rejects(remote.call.factorial(-1), (e) => e instanceof RemoteCallError && /negative/.test(e.message));
      await remote.stop();
    } finally {
      w.kill('SIGTERM');
      await w.exited;
    }
  });
});
