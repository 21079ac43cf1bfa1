'use strict';
// Cancellation end to end (issue #19): an AbortSignal on the parent's call,
// `this.signal` in the worker's handler, the core's grace and hang
// escalations, and one error class per status.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { getEventListeners } = require('node:events');
const mf = require('..');
const { ParentWorker, ChildWorker, CancelledError, WorkerExitedError, TimeoutError, Status } = mf;
const { REPO, WORKER, alive, waitFor } = require('./helpers');

// The registry (NOT_FOUND, ALREADY_RUNNING) lives under $HOME: a fresh one.
const HOME = fs.mkdtempSync(path.join(os.tmpdir(), 'mf-node-cancel-'));
process.env.HOME = HOME;
after(() => fs.rmSync(HOME, { recursive: true, force: true }));

/** A file the worker writes when a handler has started (so the test knows it runs). */
let marks = 0;
function mark() {
  return path.join(HOME, `started-${++marks}`);
}
const started = (file) => waitFor(() => fs.existsSync(file), { what: `handler start (${file})` });

/** The test worker with one call at a time in its handlers. */
function oneAtATime(options = {}) {
  return ParentWorker.spawn(WORKER, process.execPath, { args: ['--concurrency=1'], ...options });
}

describe('a cancelled call', () => {
  let worker;

  before(async () => {
    worker = oneAtATime();
    await worker.start();
  });

  after(() => worker.stop());

  it("rejects with CancelledError carrying the signal's reason; a cooperative handler stops", async () => {
    const controller = new AbortController();
    const file = mark();
    const call = worker.callFunction('waitForCancel', [600000, file], { signal: controller.signal });
    await started(file);
    const reason = new Error('user closed the dialog');
    const abortedAt = Date.now();
    controller.abort(reason);
    await assert.rejects(call, (e) => {
      assert.ok(e instanceof CancelledError, String(e));
      assert.equal(e.status, Status.MF_ERR_CANCELLED);
      assert.equal(e.code, 'MF_ERR_CANCELLED');
      assert.equal(e.message, "call to 'waitForCancel' was cancelled");
      assert.equal(e.cause, reason);
      return true;
    });
    // One handler at a time: this is answered only once waitForCancel has
    // returned (the timeout guards against a handler that never stops).
    const seen = await worker.callFunction('lastCancel', [], { timeout: 60000 });
    assert.equal(seen.reason, 'CancelledError: the call was cancelled');
    console.log(`# the handler saw its cancel ${seen.at - abortedAt} ms after abort()`);
    assert.equal(worker.metrics.cancels, 1);
  });

  it('through proxy.withOptions({ signal }) too', async () => {
    const controller = new AbortController();
    const file = mark();
    const call = worker.handle().call.withOptions({ signal: controller.signal }).waitForCancel(600000, file);
    await started(file);
    controller.abort();
    await assert.rejects(call, (e) => e instanceof CancelledError && e.cause === controller.signal.reason && e.cause.name === 'AbortError');
    assert.equal(await worker.call.add(1, 2), 3);
  });

  it("a timeout aborts the handler's signal as well", async () => {
    // A call whose time runs out before its handler starts never runs: then
    // try again with more time, until the handler ran when the time ran out.
    for (let timeout = 300; ; timeout *= 2) {
      const before = (await worker.call.lastCancel()).count;
      const file = mark();
      await assert.rejects(worker.callFunction('waitForCancel', [600000, file], { timeout }), TimeoutError);
      // Answered once waitForCancel returned, if it ran (one at a time).
      const after = await worker.call.lastCancel();
      if (!fs.existsSync(file)) continue;
      assert.equal(after.count, before + 1, 'the handler saw its cancel');
      assert.equal(after.reason, 'CancelledError: the call was cancelled');
      break;
    }
  });

  it('an aborted signal rejects at once without sending', async () => {
    const controller = new AbortController();
    controller.abort('too late');
    const sent = worker.metrics.requests_total;
    await assert.rejects(worker.callFunction('bump', [], { signal: controller.signal }), (e) => {
      assert.ok(e instanceof CancelledError, String(e));
      assert.equal(e.message, "call to 'bump' was cancelled");
      assert.equal(e.cause, 'too late');
      return true;
    });
    assert.equal(worker.metrics.requests_total, sent);
    assert.equal(await worker.call.bumped(), 0);
  });

  it('a signal that is not an AbortSignal is a TypeError', async () => {
    await assert.rejects(worker.callFunction('add', [1, 2], { signal: {} }), TypeError);
  });

  it('the abort listener is removed when the call ends (1000 calls, one signal)', async () => {
    const controller = new AbortController();
    for (let i = 0; i < 1000; i++) {
      assert.equal(await worker.callFunction('echo', [i], { signal: controller.signal }), i);
    }
    assert.equal(getEventListeners(controller.signal, 'abort').length, 0);
  });

  it('a call cancelled before its handler starts never runs', async () => {
    const before = await worker.call.bumped();
    const a = new AbortController();
    const b = new AbortController();
    const file = mark();
    const first = worker.callFunction('waitForCancel', [600000, file], { signal: a.signal });
    await started(file);
    // The one handler is busy with A: B waits in the worker's core.
    const second = worker.callFunction('bump', [], { signal: b.signal });
    b.abort();
    await assert.rejects(second, CancelledError);
    // The worker reads B's cancel before A can end, so B is dropped unrun.
    a.abort();
    await assert.rejects(first, CancelledError);
    assert.equal(await worker.call.bumped(), before);
    assert.equal(await worker.call.bump(), before + 1); // the side effect is real
  });

  it('a call whose time ran out while queued in the worker never runs', async () => {
    const before = await worker.call.bumped();
    const a = new AbortController();
    const file = mark();
    const first = worker.callFunction('waitForCancel', [600000, file], { signal: a.signal });
    await started(file);
    await assert.rejects(worker.callFunction('bump', [], { timeout: 200 }), TimeoutError);
    a.abort();
    await assert.rejects(first, CancelledError);
    assert.equal(await worker.call.bumped(), before);
  });

  it('this.signal after the first await is refused', async () => {
    await assert.rejects(worker.call.lateSignal(), (e) => {
      assert.ok(e instanceof mf.RemoteCallError, String(e));
      assert.match(e.message, /^Error: this\.signal is only available while a handler runs/);
      return true;
    });
  });
});

it('1000 calls, half cancelled at random, each settle once with their value or CancelledError', async () => {
  const worker = ParentWorker.spawn(WORKER, process.execPath);
  await worker.start();
  try {
    const N = 1000;
    const settled = new Array(N).fill(0);
    const outcome = new Array(N);
    const controllers = [];
    const calls = [];
    let preAborted = 0;
    for (let i = 0; i < N; i++) {
      const cancel = Math.random() < 0.5;
      const controller = cancel ? new AbortController() : null;
      controllers.push(controller);
      if (cancel && Math.random() < 0.1) {
        controller.abort();
        preAborted++;
      }
      const options = controller ? { signal: controller.signal } : {};
      const call = worker.callFunction('slow', [Math.floor(Math.random() * 200)], options).then(
        (v) => {
          settled[i]++;
          outcome[i] = { value: v };
        },
        (e) => {
          settled[i]++;
          outcome[i] = { error: e };
        },
      );
      calls.push(call);
      if (cancel && !controller.signal.aborted) {
        setTimeout(() => controller.abort(), Math.floor(Math.random() * 200));
      }
    }
    await Promise.all(calls);
    // A late second settle would be lost by the promise: give it a chance to show.
    await new Promise((r) => setTimeout(r, 100));
    let cancelled = 0;
    for (let i = 0; i < N; i++) {
      assert.equal(settled[i], 1, `call ${i} settled ${settled[i]} times`);
      const { value, error } = outcome[i];
      if (error) {
        assert.ok(controllers[i], `call ${i} without a signal failed: ${error}`);
        assert.ok(error instanceof CancelledError, `call ${i}: ${error}`);
        assert.equal(error.cause, controllers[i].signal.reason);
        cancelled++;
      } else {
        assert.equal(typeof value, 'number');
      }
    }
    console.log(`# ${cancelled} of ${N} calls ended cancelled (${preAborted} before sending), the others with their value`);
    await waitFor(() => worker.metrics.in_flight === 0, { what: 'no call in flight' });
    const m = worker.metrics;
    assert.equal(m.requests_total, N - preAborted);
    assert.equal(m.cancels, cancelled - preAborted);
  } finally {
    await worker.stop();
  }
});

it('a handler deaf to its cancel is stopped after the grace, and restarted', async () => {
  // Two at a time: a handler in progress in the same worker when it is stopped.
  // (A call still queued in the worker is answered by the worker's core with
  // MF_ERR_REMOTE instead: see the report of issue #19.)
  const worker = ParentWorker.spawn(WORKER, process.execPath, {
    args: ['--concurrency=2'],
    cancelGrace: 300,
    shutdownGrace: 500,
    autoRestart: 1,
  });
  await worker.start();
  try {
    const first = await worker.call.pid();
    const otherFile = mark();
    const other = worker.callFunction('waitForCancel', [600000, otherFile]);
    await started(otherFile);
    const controller = new AbortController();
    const file = mark();
    const spin = worker.callFunction('spin', [600000, file], { signal: controller.signal });
    await started(file);
    controller.abort();
    await assert.rejects(spin, CancelledError);
    await assert.rejects(other, (e) => {
      assert.ok(e instanceof WorkerExitedError, String(e));
      assert.match(e.message, /^worker stopped: a handler of 'spin' ran on \d+ ms after its call was cancelled or timed out/);
      return true;
    });
    const second = await waitFor(() => worker.call.pid().catch(() => null), { interval: 100, what: 'the restarted worker' });
    assert.notEqual(second, first);
    await waitFor(() => !alive(first), { what: `worker ${first} to be gone` });
    assert.equal(worker.metrics.escalations, 1);
    assert.equal(await worker.call.add(2, 3), 5);
  } finally {
    await worker.stop();
  }
});

it('a hung worker is restarted after max_misses heartbeats and its calls fail', async () => {
  const worker = ParentWorker.spawn(WORKER, process.execPath, {
    heartbeat: { interval: 200, timeout: 1000, maxMisses: 2 },
    autoRestart: 1,
    shutdownGrace: 500,
  });
  await worker.start();
  const first = await worker.call.pid();
  try {
    const inFlight = worker.call.slow(600000);
    process.kill(first, 'SIGSTOP');
    await assert.rejects(inFlight, (e) => {
      assert.ok(e instanceof WorkerExitedError, String(e));
      assert.match(e.message, /^worker stopped: it missed 2 heartbeats in a row \(hung\)/);
      return true;
    });
    const second = await waitFor(() => worker.call.pid().catch(() => null), { interval: 100, what: 'the restarted worker' });
    assert.notEqual(second, first);
    assert.equal(worker.metrics.hangs, 1);
  } finally {
    if (alive(first)) process.kill(first, 'SIGKILL');
    await worker.stop();
  }
});

describe('each status has its error class', () => {
  const CLASSES = {
    MF_ERR_INVALID_ARGUMENT: 'InvalidArgumentError',
    MF_ERR_TIMEOUT: 'TimeoutError',
    MF_ERR_REMOTE: 'RemoteCallError',
    MF_ERR_CIRCUIT_OPEN: 'CircuitOpenError',
    MF_ERR_WORKER_EXITED: 'WorkerExitedError',
    MF_ERR_NOT_FOUND: 'NotFoundError',
    MF_ERR_ALREADY_RUNNING: 'AlreadyRunningError',
    MF_ERR_PROTOCOL: 'ProtocolError',
    MF_ERR_IO: 'IoError',
    MF_ERR_CLOSED: 'ClosedError',
    MF_ERR_PANIC: 'PanicError',
    MF_ERR_CANCELLED: 'CancelledError',
    MF_ERR_NO_SUCH_FUNCTION: 'NoSuchFunctionError',
  };

  /** Asserts `promise` rejects with the class of `code` (exported, a
   * MultifrostError with that status) and a message matching `text`. */
  async function rejectsAs(promise, code, text) {
    await assert.rejects(promise, (e) => {
      const Class = mf[CLASSES[code]];
      assert.ok(e instanceof Class, `${code}: got ${e.name}: ${e.message}`);
      assert.ok(e instanceof mf.MultifrostError);
      assert.equal(e.name, CLASSES[code]);
      assert.equal(e.code, code);
      assert.equal(e.status, Status[code]);
      assert.match(e.message, text);
      console.log(`# ${code} -> ${e.name}: ${e.message.split('\n')[0]}`);
      return true;
    });
  }

  it("the statuses are the header's, each with its own exported class", () => {
    const header = fs.readFileSync(path.join(REPO, 'include', 'multifrost.h'), 'utf8');
    const enumBody = /typedef enum mf_status \{([\s\S]*?)\} mf_status;/.exec(header)[1];
    const fromHeader = Object.fromEntries([...enumBody.matchAll(/\b(MF_\w+) = (\d+)/g)].map((m) => [m[1], Number(m[2])]));
    assert.deepEqual({ ...Status }, fromHeader);
    const names = Object.keys(fromHeader).filter((k) => k !== 'MF_OK');
    assert.deepEqual(Object.keys(CLASSES).sort(), names.sort());
    assert.equal(new Set(Object.values(CLASSES)).size, names.length);
    for (const name of Object.values(CLASSES)) assert.equal(typeof mf[name], 'function', name);
  });

  it('real calls', async () => {
    const worker = ParentWorker.spawn(WORKER, process.execPath, { maxMessageSize: 1024 });
    await worker.start();
    try {
      await rejectsAs(worker.callFunction('slow', [5000], { timeout: 100 }), 'MF_ERR_TIMEOUT', /^call to 'slow' timed out/);
      await rejectsAs(worker.call.fail('bad input'), 'MF_ERR_REMOTE', /^RangeError: bad input$/);
      await rejectsAs(worker.call.noSuchThing(1), 'MF_ERR_NO_SUCH_FUNCTION', /^Function 'noSuchThing' not found$/);
      await rejectsAs(worker.call.zeros(4096), 'MF_ERR_PROTOCOL', /1024/);
      const controller = new AbortController();
      const slow = worker.callFunction('slow', [5000], { signal: controller.signal });
      controller.abort();
      await rejectsAs(slow, 'MF_ERR_CANCELLED', /^call to 'slow' was cancelled$/);
      const closing = worker.call.slow(5000);
      const stopped = worker.stop();
      await rejectsAs(closing, 'MF_ERR_CLOSED', /./);
      await stopped;
    } finally {
      await worker.stop();
    }
  });

  it('start-up and options', async () => {
    await rejectsAs(ParentWorker.spawn(WORKER, process.execPath, { heartbeat: { timeout: 0 } }).start(), 'MF_ERR_INVALID_ARGUMENT', /heartbeat timeout/);
    await rejectsAs(ParentWorker.spawn('/nonexistent/worker').start(), 'MF_ERR_IO', /\/nonexistent\/worker/);
    // The core's start-up text has the worker's exit status and its last stderr lines.
    const script = path.join(__dirname, 'fixtures', 'exits_at_start.js');
    await rejectsAs(ParentWorker.spawn(script, process.execPath).start(), 'MF_ERR_WORKER_EXITED', /exits_at_start: giving up/);
    await rejectsAs(ParentWorker.connect('no-such-service', { connectTimeout: 300 }), 'MF_ERR_NOT_FOUND', /no-such-service/);
  });

  it('the breaker', async () => {
    const worker = ParentWorker.spawn(WORKER, process.execPath, { breaker: { threshold: 1, cooldown: 60000, countRemoteErrors: true } });
    await worker.start();
    try {
      await assert.rejects(worker.call.fail('x'), mf.RemoteCallError);
      await rejectsAs(worker.call.add(1, 2), 'MF_ERR_CIRCUIT_OPEN', /./);
    } finally {
      await worker.stop();
    }
  });

  it('worker crashes and a service id taken twice', async () => {
    const worker = ParentWorker.spawn(WORKER, process.execPath);
    await worker.start();
    try {
      await rejectsAs(worker.call.crash('exit'), 'MF_ERR_WORKER_EXITED', /exit/);
    } finally {
      await worker.stop();
    }
    class Service extends ChildWorker {
      ping() {
        return 'pong';
      }
    }
    const first = new Service({ serviceId: 'node-cancel-twice', handleSignals: false });
    const running = first.run();
    try {
      await rejectsAs(new Service({ serviceId: 'node-cancel-twice', handleSignals: false }).run(), 'MF_ERR_ALREADY_RUNNING', /already running/);
    } finally {
      first.stop();
      await running;
    }
  });

  it('a status only the library itself can produce maps as well', () => {
    const { errorFor } = require('../src/errors');
    const e = errorFor(Status.MF_ERR_PANIC, 'a panic was caught');
    assert.ok(e instanceof mf.PanicError);
    assert.equal(e.code, 'MF_ERR_PANIC');
  });
});
