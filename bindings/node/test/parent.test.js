'use strict';
// Parent side against real worker processes: a Node worker (test/fixtures/worker.js)
// and the C example worker (build/math_worker).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const {
  ParentWorker,
  ParentHandle,
  RemoteCallError,
  TimeoutError,
  CircuitOpenError,
  WorkerExitedError,
  ClosedError,
  NoSuchFunctionError,
  MultifrostError,
  Status,
} = require('..');
const { WORKER, C_WORKER, alive, waitFor, within } = require('./helpers');

describe('a spawned Node worker', () => {
  let worker;
  let handle;

  before(async () => {
    // cancelGrace 0: a timed-out parked handler goes on running (the timeout
    // test checks it does), and the worker is not stopped for it.
    worker = ParentWorker.spawn(WORKER, process.execPath, { cancelGrace: 0 });
    handle = worker.handle();
    assert.ok(handle instanceof ParentHandle);
    await handle.start();
  });

  after(async () => {
    await handle.stop();
  });

  it('calls through the proxy and callFunction', async () => {
    assert.equal(await handle.call.add(1, 2), 3);
    assert.equal(await handle.callFunction('add', [20, 22]), 42);
    assert.equal(await handle.callFunction('add', [0.5, 0.25], { timeout: 30000 }), 0.75);
    assert.equal(await worker.call.add(2, 3), 5); // the worker has the proxy too
    assert.equal(await handle.call.nothing(), null); // undefined answers nil
    assert.equal(await handle.call.sum(1, 2, 3, 4), 10); // rest parameters take any count
  });

  it('a thenable check on the proxy does not make a remote call', async () => {
    assert.equal(handle.call.then, undefined);
    const same = await Promise.resolve(handle.call); // would hang or call 'then' otherwise
    assert.equal(typeof same.add, 'function');
  });

  it('runs async handlers concurrently', async () => {
    // Each call waits for all five to be running: one at a time, the first
    // would give up after 10 s having seen only itself.
    const results = await Promise.all([1, 2, 3, 4, 5].map(() => handle.call.gather(5)));
    assert.deepEqual(results, [5, 5, 5, 5, 5]);
  });

  it('carries a 1 MiB binary value both ways intact', async () => {
    // Arguments and results are copied out of library memory on each side.
    const big = Buffer.alloc(1 << 20);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7 + 3) & 0xff;
    const back = await handle.call.echo(big);
    assert.equal(back.length, big.length);
    assert.ok(Buffer.from(back).equals(big), 'the echoed bytes differ');
  });

  it('echoes values of every portable type', async () => {
    const value = {
      text: 'héllo ✓',
      list: [1, -1, 2.5, null, true, false],
      nested: { deep: [[[]]], empty: {} },
      bytes: Buffer.from([0, 1, 254, 255]),
      big: 2 ** 40,
      negative: -(2 ** 40),
    };
    assert.deepEqual(await handle.call.echo(value), value);
  });

  it('round-trips 64-bit integers as BigInt', async () => {
    for (const v of [2n ** 63n - 1n, 2n ** 64n - 1n, -(2n ** 63n)]) {
      const back = await handle.call.echo(v);
      assert.equal(typeof back, 'bigint');
      assert.equal(back, v);
    }
    // Within ±2^53 a number comes back, even if sent as a BigInt.
    assert.equal(await handle.call.echo(5n), 5);
    assert.equal(await handle.call.echo(Number.MAX_SAFE_INTEGER), Number.MAX_SAFE_INTEGER);
  });

  it('refuses integers beyond 64 bits before sending', async () => {
    await assert.rejects(handle.call.echo(2n ** 64n), RangeError);
  });

  it('a handler exception becomes RemoteCallError "<Name>: <message>"', async () => {
    await assert.rejects(handle.call.fail('boom'), (e) => {
      assert.ok(e instanceof RemoteCallError);
      assert.ok(e instanceof MultifrostError);
      assert.equal(e.message, 'RangeError: boom');
      assert.equal(e.remoteType, 'RangeError');
      assert.equal(e.status, Status.MF_ERR_REMOTE);
      assert.equal(e.code, 'MF_ERR_REMOTE');
      return true;
    });
    // An async handler's rejection, with a subclass of Error named by its class.
    await assert.rejects(handle.call.failLater('later'), { name: 'RemoteCallError', message: 'ValidationError: later' });
  });

  it('results and failures started together each reach their own call', async () => {
    // Completions arrive in batches; each event is read out of the batch by its place in it.
    const calls = [];
    for (let i = 0; i < 200; i++) calls.push(i % 3 === 0 ? handle.call.fail(`no ${i}`) : handle.call.add(i, 1));
    const outcomes = await Promise.allSettled(calls);
    outcomes.forEach((o, i) => {
      if (i % 3 === 0) {
        assert.equal(o.status, 'rejected', `call ${i}`);
        assert.ok(o.reason instanceof RemoteCallError);
        assert.equal(o.reason.message, `RangeError: no ${i}`);
      } else {
        assert.equal(o.status, 'fulfilled', `call ${i}`);
        assert.equal(o.value, i + 1);
      }
    });
  });

  it('wrong argument counts and types come back with the worker message', async () => {
    await assert.rejects(handle.call.add(1), {
      name: 'RemoteCallError',
      message: 'TypeError: add() takes 2 arguments but 1 was given',
    });
    await assert.rejects(handle.call.add(1, 2, 3), {
      name: 'RemoteCallError',
      message: 'TypeError: add() takes 2 arguments but 3 were given',
    });
    await assert.rejects(handle.call.add('x', {}), {
      name: 'RemoteCallError',
      message: 'TypeError: add expects two numbers, got string and object',
    });
  });

  it('private and unknown functions are refused by the worker', async () => {
    await assert.rejects(handle.call._secret(), (e) => e instanceof RemoteCallError && /Cannot call private method '_secret'/.test(e.message));
    await assert.rejects(handle.call.nosuch(), (e) => e instanceof NoSuchFunctionError && e.message === "Function 'nosuch' not found");
  });

  it('a per-call timeout rejects with TimeoutError', async () => {
    // The parked call never answers on its own: the rejection comes from the
    // timer, while the handler still runs, and not before the 100 ms asked.
    const started = performance.now();
    await assert.rejects(handle.callFunction('park', ['timeout'], { timeout: 100 }), (e) => {
      assert.ok(e instanceof TimeoutError);
      assert.equal(e.status, Status.MF_ERR_TIMEOUT);
      return true;
    });
    const took = performance.now() - started;
    assert.ok(took >= 90, `timed out after ${took} ms`);
    assert.equal(await handle.call.parked('timeout'), 1, 'the handler is still running');
    await assert.rejects(handle.call.withOptions({ timeout: 50 }).park('timeout'), TimeoutError);
    assert.equal(await handle.call.unpark('timeout'), 2);
    assert.equal(await handle.call.withOptions({ timeout: 30000 }).slow(10), 10);
  });

  it('1000 concurrent calls leave the event loop live', async () => {
    // Half of them stay parked in the worker until the test lets them go.
    // The other half, timers (waitFor polls on one) and more calls must all
    // complete meanwhile: a loop blocked until the parked calls answered
    // would never get here to let them go.
    const calls = [];
    for (let i = 0; i < 1000; i++) calls.push(i % 2 ? handle.call.add(i, 1) : handle.call.park('many'));
    const adds = await Promise.all(calls.filter((_, i) => i % 2));
    adds.forEach((sum, k) => assert.equal(sum, 2 * k + 2));
    await waitFor(async () => (await handle.call.parked('many')) === 500, { what: '500 calls parked in the worker' });
    assert.equal(worker.metrics.in_flight, 500, 'the parked calls are still in flight');
    assert.equal(await handle.call.unpark('many'), 500);
    const results = await Promise.all(calls);
    for (let i = 0; i < 1000; i++) assert.equal(results[i], i % 2 ? i + 1 : 'many');
  });

  it('metrics come from the core', async () => {
    const m = worker.metrics;
    assert.equal(m.circuit_state, 'closed');
    assert.ok(m.requests_total > 1000);
    assert.equal(m.worker_pid, await handle.call.pid());
    assert.equal(worker.isHealthy, true);
    assert.equal(worker.circuitOpen, false);
    assert.equal(worker.state, 'running');
  });
});

describe('spawn forms', () => {
  it('a compiled worker path alone runs directly (C math worker)', async () => {
    const worker = ParentWorker.spawn(C_WORKER);
    const handle = worker.handle();
    await handle.start();
    try {
      assert.equal(await handle.call.add(1, 2), 3);
      assert.equal(await handle.call.factorial(10), 3628800);
      await assert.rejects(handle.call.factorial(-1), (e) => e instanceof RemoteCallError && /negative/.test(e.message));
      // Wrong types and counts reach the C worker and come back with its message.
      await assert.rejects(handle.call.add('x', 2), { name: 'RemoteCallError', message: 'TypeError: expected two numbers' });
      // 64-bit integers through the C worker's JSON path.
      assert.equal(await handle.call.echo(2n ** 63n - 1n), 2n ** 63n - 1n);
      assert.equal(await handle.call.echo(2n ** 64n - 1n), 2n ** 64n - 1n);
      assert.equal(await handle.call.echo(-(2 ** 40)), -(2 ** 40));
      assert.equal(await handle.call.add(2 ** 40, 1), 2 ** 40 + 1); // integers, not floats
    } finally {
      await handle.stop();
    }
  });

  it('a .js script alone runs with node; options as the second argument', async () => {
    const worker = ParentWorker.spawn(WORKER, { timeout: 30000, name: 'alone' });
    await worker.start();
    try {
      assert.equal(await worker.call.add(4, 5), 9);
      assert.equal(worker.metrics.worker, 'alone');
    } finally {
      await worker.close();
    }
  });

  it('metrics say transport "link" by default and "zmq" with privateLink: false', async () => {
    for (const [options, transport] of [
      [{}, 'link'],
      [{ privateLink: false }, 'zmq'],
    ]) {
      const worker = ParentWorker.spawn(WORKER, process.execPath, options);
      await worker.start();
      try {
        assert.equal(worker.metrics.transport, transport);
        assert.equal(await worker.call.add(1, 2), 3);
      } finally {
        await worker.stop();
      }
    }
  });

  it('an unknown option is a TypeError', () => {
    assert.throws(() => ParentWorker.spawn(WORKER, process.execPath, { timout: 5 }), /unknown option 'timout'/);
  });

  it('a missing program or script fails naming it', async () => {
    await assert.rejects(ParentWorker.spawn('/nonexistent/worker').handle().start(), (e) => {
      assert.ok(e instanceof MultifrostError);
      assert.equal(e.status, Status.MF_ERR_IO);
      assert.match(e.message, /\/nonexistent\/worker/);
      return true;
    });
    await assert.rejects(ParentWorker.spawn('/nonexistent/worker.js', process.execPath).handle().start(), /nonexistent\/worker\.js/);
  });

  it('a worker that exits at start fails with WorkerExitedError and its last stderr lines', async () => {
    const script = path.join(__dirname, 'fixtures', 'exits_at_start.js');
    await assert.rejects(ParentWorker.spawn(script, process.execPath).handle().start(), (e) => {
      assert.ok(e instanceof WorkerExitedError, String(e));
      assert.equal(e.message, 'worker exited (code 4); last stderr lines:\nexits_at_start: giving up');
      return true;
    });
  });

  it('the namespace option reaches the worker; other namespaces are dropped', async () => {
    process.env.TEST_WORKER_NAMESPACE = 'maths'; // the spawned worker serves namespace 'maths'
    const worker = ParentWorker.spawn(WORKER, process.execPath, { namespace: 'maths' });
    const other = ParentWorker.spawn(WORKER, process.execPath); // namespace 'default'
    try {
      await Promise.all([worker.start(), other.start()]);
    } finally {
      delete process.env.TEST_WORKER_NAMESPACE;
    }
    try {
      assert.equal(await worker.call.add(1, 1), 2);
      // The worker drops a call for another namespace without a reply.
      await assert.rejects(other.callFunction('add', [1, 1], { timeout: 300 }), TimeoutError);
    } finally {
      await Promise.all([worker.stop(), other.stop()]);
    }
  });
});

// A shutdown grace no test outlasts (ms): with it, a worker that is gone after
// stop() left by itself.
const NO_SIGKILL = 10 * 60 * 1000;

describe('lifecycle', () => {
  it('calls before start reject, calls after stop reject with ClosedError', async () => {
    // A grace that no test outlasts: stop() returns only if the worker leaves
    // by itself, never by the SIGKILL after the grace.
    const worker = ParentWorker.spawn(WORKER, process.execPath, { shutdownGrace: NO_SIGKILL });
    const handle = worker.handle();
    await assert.rejects(handle.call.add(1, 2), /not started/);
    await handle.start();
    await handle.start(); // idempotent
    const pid = await handle.call.pid();
    assert.ok(alive(pid));
    const inFlight = assert.rejects(handle.call.park('stop'), (e) => e instanceof ClosedError && e.status === Status.MF_ERR_CLOSED);
    await waitFor(() => worker.metrics.in_flight === 1, { what: 'the parked call in flight' });
    await within(handle.stop(), 'stop(): the worker did not leave by itself');
    assert.equal(alive(pid), false, 'the worker process is gone after stop()');
    await inFlight;
    await assert.rejects(handle.call.add(1, 2), (e) => {
      assert.ok(e instanceof ClosedError);
      assert.match(e.message, /stopped/);
      return true;
    });
    await handle.stop(); // idempotent
    await assert.rejects(handle.start(), ClosedError);
    assert.equal(worker.metrics, null);
  });

  it('stop() ends a Node worker with handlers in flight, every time', async () => {
    for (let i = 0; i < 4; i++) {
      const worker = ParentWorker.spawn(WORKER, process.execPath, { shutdownGrace: NO_SIGKILL });
      const handle = worker.handle();
      await handle.start();
      const pid = await handle.call.pid();
      // Handlers that never end: a worker that waited for them would never leave.
      const calls = [1, 2, 3].map(() => assert.rejects(handle.call.park('stop'), ClosedError));
      await waitFor(() => worker.metrics.in_flight === 3, { what: 'three calls in flight' });
      await within(handle.stop(), `stop() #${i + 1}: the worker did not leave by itself`);
      assert.equal(alive(pid), false);
      await Promise.all(calls);
    }
  });

  it('calls made while starting wait for the start', async () => {
    const handle = ParentWorker.spawn(WORKER, process.execPath).handle();
    const starting = handle.start();
    const sum = handle.call.add(2, 2);
    await starting;
    assert.equal(await sum, 4);
    await handle.stop();
  });

  it('a crashing worker fails the call with WorkerExitedError promptly', async () => {
    for (const how of ['exit', 'abort']) {
      const handle = ParentWorker.spawn(WORKER, process.execPath).handle();
      await handle.start();
      // Noticed when the worker exits, not when the call's 30 s default
      // timeout passes: that would be a TimeoutError.
      await assert.rejects(handle.call.crash(how), (e) => {
        assert.ok(e instanceof WorkerExitedError, String(e));
        assert.equal(e.status, Status.MF_ERR_WORKER_EXITED);
        assert.match(e.message, how === 'exit' ? /code 3/ : /SIGABRT/);
        return true;
      });
      await assert.rejects(handle.call.add(1, 2), WorkerExitedError);
      await handle.stop();
    }
  });

  it('autoRestart brings a crashed worker back', async () => {
    const worker = ParentWorker.spawn(WORKER, process.execPath, { autoRestart: 2 });
    await worker.start();
    try {
      const first = await worker.call.pid();
      await assert.rejects(worker.call.crash('exit'), WorkerExitedError);
      const second = await waitFor(() => worker.call.pid().catch(() => null), { interval: 100, what: 'the restarted worker' });
      assert.notEqual(second, first);
      assert.equal(worker.metrics.restarts, 1);
    } finally {
      await worker.stop();
    }
  });

  it('the circuit breaker opens, refuses at once, and closes after a probe', async () => {
    // Timeouts and cancels are not breaker failures; remote errors are when counted.
    const worker = ParentWorker.spawn(WORKER, process.execPath, { breaker: { threshold: 2, cooldown: 400, countRemoteErrors: true } });
    const handle = worker.handle();
    await handle.start();
    try {
      for (let i = 0; i < 2; i++) {
        await assert.rejects(handle.call.fail('x'), RemoteCallError);
      }
      assert.equal(worker.circuitOpen, true);
      const sent = worker.metrics.requests_total;
      await assert.rejects(handle.call.add(1, 2), (e) => {
        assert.ok(e instanceof CircuitOpenError, String(e));
        assert.equal(e.status, Status.MF_ERR_CIRCUIT_OPEN);
        return true;
      });
      // Refused without being sent: the parent counts every call it sends.
      assert.equal(worker.metrics.requests_total, sent, 'refused without being sent');
      // Refused until the cool-down has passed; then one call goes as the probe.
      const probe = () =>
        handle.call.add(1, 2).catch((e) => {
          if (e instanceof CircuitOpenError) return null;
          throw e;
        });
      assert.equal(await waitFor(probe, { interval: 50, what: 'the half-open probe' }), 3);
      assert.equal(worker.metrics.requests_total, sent + 1, 'only the probe was sent');
      assert.equal(worker.metrics.circuit_state, 'closed');
      assert.equal(worker.metrics.circuit_trips, 1);
    } finally {
      await handle.stop();
    }
  });

  it('remote errors do not count for the breaker unless asked', async () => {
    const worker = ParentWorker.spawn(WORKER, process.execPath, { breaker: { threshold: 1, cooldown: 10000, countRemoteErrors: true } });
    await worker.start();
    try {
      await assert.rejects(worker.call.fail('x'), RemoteCallError);
      await assert.rejects(worker.call.add(1, 2), CircuitOpenError);
    } finally {
      await worker.stop();
    }
  });
});

it('C worker binary exists for these tests', () => {
  assert.ok(fs.existsSync(C_WORKER), `${C_WORKER} is missing: cmake -S . -B build -G Ninja && cmake --build build`);
});
