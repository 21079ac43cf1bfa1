'use strict';
// Streams end to end (issue #20): `for await` over handle.stream.<fn>() on
// the parent, generator handlers on the worker.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { ParentWorker, RemoteCallError, WorkerExitedError, CancelledError, NoSuchFunctionError } = require('..');
const { REPO, WORKER, waitFor, within } = require('./helpers');

const CREDIT = 4;

async function collect(iterable) {
  const items = [];
  for await (const x of iterable) items.push(x);
  return items;
}

describe('a stream', () => {
  let worker;
  let handle;

  before(async () => {
    worker = ParentWorker.spawn(WORKER, process.execPath, { streamCredit: CREDIT });
    handle = worker.handle();
    await handle.start();
  });

  after(() => worker.stop());

  it('hands over the items in order and ends', async () => {
    assert.deepEqual(await within(collect(handle.stream.count(5)), 'count(5)'), [0, 1, 2, 3, 4]);
    assert.deepEqual(await within(collect(handle.stream.countSync(3)), 'countSync(3)'), [0, 10, 20]);
    assert.deepEqual(await within(collect(handle.stream.count(0)), 'count(0)'), []);
    // Items beyond the credit: the worker is granted more as they are taken.
    const many = await within(collect(handle.stream.count(50)), 'count(50)');
    assert.deepEqual(many, Array.from({ length: 50 }, (_, i) => i));
  });

  it('of a handler that does not yield ends with no item', async () => {
    assert.deepEqual(await within(collect(handle.stream.add(1, 2)), 'add as a stream'), []);
  });

  it('gets an error after the items sent before it', async () => {
    const items = [];
    await assert.rejects(
      within(
        (async () => {
          for await (const x of handle.stream.failAfter(2, 'bad row')) items.push(x);
        })(),
        'failAfter',
      ),
      // The core's text, the handler's message in it, on whichever thread the next ran.
      (e) => e instanceof RemoteCallError && /ValidationError: bad row/.test(e.message),
    );
    assert.deepEqual(items, ['item 0', 'item 1']);
  });

  it('of an unknown function rejects on the first next', async () => {
    await assert.rejects(within(collect(handle.stream.noSuchThing()), 'noSuchThing'), NoSuchFunctionError);
  });

  it('closed by leaving the loop stops the handler, whose finally runs', async () => {
    const before = (await handle.call.streamStats()).endless?.finished ?? 0;
    const seen = [];
    for await (const x of handle.stream.endless()) {
      seen.push(x);
      if (seen.length === 3) break;
    }
    assert.deepEqual(seen, [0, 1, 2]);
    const stats = await waitFor(
      async () => {
        const s = (await handle.call.streamStats()).endless;
        return s && s.finished > before ? s : null;
      },
      { what: "endless()'s finally after the break" },
    );
    assert.equal(stats.finished, before + 1);
    // The worker serves on.
    assert.equal(await handle.call.add(2, 3), 5);
  });

  it('closed by a throw in the loop stops the handler too', async () => {
    const before = (await handle.call.streamStats()).endless.finished;
    await assert.rejects(
      (async () => {
        for await (const x of handle.stream.endless()) if (x === 1) throw new Error('consumer gave up');
      })(),
      /consumer gave up/,
    );
    await waitFor(async () => (await handle.call.streamStats()).endless.finished > before, {
      what: "endless()'s finally after the throw",
    });
  });

  it('is closed by its AbortSignal', async () => {
    const before = (await handle.call.streamStats()).endless.finished;
    const controller = new AbortController();
    const seen = [];
    await assert.rejects(
      within(
        (async () => {
          for await (const x of handle.stream.withOptions({ signal: controller.signal }).endless()) {
            seen.push(x);
            if (x === 2) controller.abort(new Error('enough'));
          }
        })(),
        'aborted stream',
      ),
      (e) => e instanceof CancelledError && e.cause.message === 'enough',
    );
    assert.deepEqual(seen, [0, 1, 2]);
    await waitFor(async () => (await handle.call.streamStats()).endless.finished > before, {
      what: "endless()'s finally after the abort",
    });
  });

  it('is cancelled by its AbortSignal while it waits for an item', async () => {
    const started = path.join(fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'mf-')), 'started');
    const before = (await handle.call.lastCancel()).count;
    const controller = new AbortController();
    const stream = handle.stream.withOptions({ signal: controller.signal }).waitForCancel(600000, started);
    const next = stream[Symbol.asyncIterator]().next();
    await waitFor(() => fs.existsSync(started), { what: 'the handler to start' });
    const t0 = process.hrtime.bigint();
    controller.abort(new Error('no more waiting'));
    await assert.rejects(
      within(next, 'the wait to end'),
      (e) => e instanceof CancelledError && e.cause.message === 'no more waiting',
    );
    console.log(`abort to rejection: ${Number(process.hrtime.bigint() - t0) / 1e6} ms`);
    await waitFor(async () => (await handle.call.lastCancel()).count > before, {
      what: 'the handler to see its cancel',
    });
  });

  it('keeps a slow consumer at most the credit behind the worker', async () => {
    const it = handle.stream.endless()[Symbol.asyncIterator]();
    assert.deepEqual(await within(it.next(), 'first item'), { done: false, value: 0 });
    // The worker sends up to the credit ahead, then waits in its yield.
    const stats = await waitFor(
      async () => {
        const s = (await handle.call.streamStats()).endless;
        return s.sent >= CREDIT ? s : null;
      },
      { what: 'the worker to use its credit' },
    );
    await new Promise((r) => setTimeout(r, 300));
    const later = (await handle.call.streamStats()).endless;
    assert.ok(stats.sent <= 1 + CREDIT, `sent ${stats.sent} items with 1 taken and credit ${CREDIT}`);
    assert.ok(later.sent <= 1 + CREDIT, `sent ${later.sent} items with 1 taken and credit ${CREDIT}`);
    // Taking more lets it go on.
    for (let i = 1; i <= 10; i++) assert.deepEqual(await within(it.next(), `item ${i}`), { done: false, value: i });
    await it.return();
    assert.deepEqual(await it.next(), { done: true, value: undefined });
  });

  it('as a plain call answers the list of items', async () => {
    assert.deepEqual(await handle.call.count(4), [0, 1, 2, 3]);
    assert.deepEqual(await handle.call.countSync(2), [0, 10]);
    await assert.rejects(handle.call.failAfter(1, 'late'), (e) => e instanceof RemoteCallError);
  });
});

describe('a long stream of small items', () => {
  let worker;

  before(async () => {
    // The default window, which widens for small items: many are there at
    // once when the consumer comes back for them.
    worker = ParentWorker.spawn(WORKER, process.execPath);
    await worker.start();
  });

  after(() => worker?.stop());

  it('arrives complete and in order, read at once and after pauses alike', async () => {
    const n = 20000;
    const items = [];
    await within(
      (async () => {
        for await (const x of worker.stream.count(n)) {
          items.push(x);
          // A consumer that now and then awaits something else: the worker
          // fills the window meanwhile, and those items are taken without a
          // wait; between the pauses the consumer outruns the worker and
          // waits for each item.
          if (x % 1000 === 999) await new Promise((r) => setTimeout(r, 20));
          else if (x % 250 === 0) assert.equal(await worker.call.add(x, 1), x + 1);
        }
      })(),
      `count(${n})`,
    );
    assert.equal(items.length, n);
    for (let i = 0; i < n; i++) if (items[i] !== i) assert.fail(`item #${i} is ${items[i]}`);
    assert.deepEqual(await worker.call.counted(), [n, 0]);
  });
});

describe('a stream whose worker dies', () => {
  it('ends the iteration with WorkerExitedError after the items sent', async () => {
    const worker = ParentWorker.spawn(WORKER, process.execPath);
    await worker.start();
    try {
      const items = [];
      await assert.rejects(
        within(
          (async () => {
            for await (const x of worker.stream.dieAfter(3)) items.push(x);
          })(),
          'dieAfter',
        ),
        WorkerExitedError,
      );
      assert.deepEqual(items, [0, 1, 2]);
    } finally {
      await worker.stop();
    }
  });
});

const C_TEST_WORKER = path.join(REPO, 'build', 'tests', 'c', 'c_test_worker');

describe('a stream from the C test worker', { skip: !fs.existsSync(C_TEST_WORKER) && `${C_TEST_WORKER} not built` }, () => {
  let worker;

  before(async () => {
    worker = ParentWorker.spawn(C_TEST_WORKER);
    await worker.start();
  });

  after(() => worker?.stop());

  it('hands over count(n) in order, and a break closes it', async () => {
    assert.deepEqual(await within(collect(worker.stream.count(6)), 'C count(6)'), [0, 1, 2, 3, 4, 5]);
    const [, closedBefore] = await worker.call.counted();
    for await (const x of worker.stream.count(1000)) if (x === 2) break;
    await waitFor(async () => (await worker.call.counted())[1] > closedBefore, {
      what: 'the C worker to see the stream closed',
    });
  });

  it('whose items are always there already still lets timers run: a timed abort closes it', async () => {
    const n = 50000;
    const controller = new AbortController();
    let timer = null;
    let seen = 0;
    try {
      await assert.rejects(
        within(
          (async () => {
            for await (const x of worker.stream.withOptions({ signal: controller.signal }).count(n)) {
              if (x !== seen) assert.fail(`item #${seen} is ${x}`);
              seen++;
              if (!timer) timer = setTimeout(() => controller.abort(new Error('time is up')), 50);
              // Some work per item (0.1 ms, 5 s for all of them), so the C
              // worker keeps ahead and the items are taken without a wait:
              // the loop must still turn for the timer.
              const until = process.hrtime.bigint() + 100000n;
              while (process.hrtime.bigint() < until);
            }
          })(),
          `count(${n}) with a timed abort`,
        ),
        (e) => e instanceof CancelledError && e.cause.message === 'time is up',
      );
    } finally {
      clearTimeout(timer);
    }
    assert.ok(seen < n, `all ${n} items came before the abort`);
  });
});
