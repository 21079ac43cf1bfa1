'use strict';
// Pools (issue #21): `workers` copies of a worker behind one ParentWorker,
// of Node workers (test/fixtures/worker.js) and of C workers
// (build/tests/c/c_test_worker).

const { it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { ParentWorker, WorkerExitedError, InvalidArgumentError } = require('..');
const { REPO, WORKER, waitFor, within } = require('./helpers');

const C_TEST_WORKER = path.join(REPO, 'build', 'tests', 'c', 'c_test_worker');

/** True once `pid` was reaped (a zombie still has its /proc entry). */
const gone = (pid) => !fs.existsSync(`/proc/${pid}`);
const pids = (worker) => worker.metrics.workers.map((w) => w.pid);
const inFlight = (worker) => worker.metrics.workers.map((w) => w.in_flight);

/** How many times each value occurs, as an object keyed by value. */
function tally(values) {
  const counts = {};
  for (const v of values) counts[v] = (counts[v] || 0) + 1;
  return counts;
}

/** A file the test creates to let the pidWhen calls answer. */
function releaseFile(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mf-pool-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, 'release');
}

it('calls spread over the workers of a pool', async (t) => {
  const release = releaseFile(t);
  const pool = ParentWorker.spawn(WORKER, process.execPath, { workers: 3 });
  await pool.start();
  try {
    const first = pids(pool);
    assert.equal(new Set(first).size, 3);
    assert.equal(pool.pid, first[0]);
    assert.ok(pool.metrics.workers.every((w) => w.healthy));
    // Nine calls held in the workers: the fewest-in-flight rule puts three in each.
    const held = Array.from({ length: 9 }, () => pool.call.pidWhen(release));
    await waitFor(() => pool.metrics.in_flight === 9, { what: '9 calls in flight' });
    assert.deepEqual(inFlight(pool), [3, 3, 3]);
    fs.writeFileSync(release, '');
    assert.deepEqual(tally(await within(Promise.all(held), 'the held calls')), tally([...first, ...first, ...first]));
    // One after another, equal loads take turns.
    const served = [];
    for (let i = 0; i < 30; i++) served.push(await pool.call.pid());
    assert.deepEqual(tally(served), tally(Array(10).fill(first).flat()));
    const sums = await Promise.all(Array.from({ length: 50 }, (_, i) => pool.call.add(i, 1)));
    assert.deepEqual(sums, Array.from({ length: 50 }, (_, i) => i + 1));
    const m = pool.metrics;
    assert.equal(m.requests_total, 9 + 30 + 50);
    assert.equal(m.workers.reduce((n, w) => n + w.requests_total, 0), m.requests_total);
    assert.equal(m.recycles, 0);
  } finally {
    await pool.stop();
  }
});

it('a killed worker fails only its calls and is restarted', async (t) => {
  const release = releaseFile(t);
  const pool = ParentWorker.spawn(WORKER, process.execPath, { workers: 3, autoRestart: true });
  await pool.start();
  try {
    const first = pids(pool);
    const outcomes = Array(6).fill(null);
    const held = Array.from({ length: 6 }, (_, i) =>
      pool.call.pidWhen(release).then(
        (pid) => (outcomes[i] = { pid }),
        (error) => (outcomes[i] = { error }),
      ));
    await waitFor(() => inFlight(pool).join() === '2,2,2', { what: 'two calls in each worker' });
    const victim = first[1];
    process.kill(victim, 'SIGKILL');
    await waitFor(() => outcomes.filter(Boolean).length === 2, { what: "the killed worker's calls to end" });
    const failed = outcomes.filter(Boolean);
    assert.ok(failed.every((o) => o.error instanceof WorkerExitedError), String(failed.map((o) => o.error)));
    // The others answer meanwhile.
    for (let i = 0; i < 10; i++) assert.equal(await pool.call.add(i, i), 2 * i);
    assert.equal(outcomes.filter(Boolean).length, 2);
    fs.writeFileSync(release, '');
    await within(Promise.all(held), 'the held calls');
    const answered = outcomes.filter((o) => !o.error).map((o) => o.pid);
    assert.deepEqual(tally(answered), tally([first[0], first[0], first[2], first[2]]));
    await waitFor(
      () => {
        const ws = pool.metrics.workers;
        return ws.every((w) => w.healthy) && ![0, victim].includes(ws[1].pid) && ws[1].restarts === 1;
      },
      { timeout: 60000, what: 'the killed worker to be restarted and healthy' },
    );
    const after = pids(pool);
    assert.equal(after[0], first[0]);
    assert.equal(after[2], first[2]);
    assert.ok(!first.includes(after[1]));
    const served = new Set();
    for (let i = 0; i < 30; i++) served.add(await pool.call.pid());
    assert.deepEqual([...served].sort(), [...after].sort());
    assert.equal(pool.metrics.restarts, 1);
    assert.ok(gone(victim));
  } finally {
    await pool.stop();
  }
});

it('recycling after n calls loses no call and changes the pid', async () => {
  const pool = ParentWorker.spawn(WORKER, process.execPath, { workers: 2, maxCallsPerWorker: 5 });
  await pool.start();
  let first;
  const seen = [];
  try {
    first = pids(pool);
    const tokens = Array.from({ length: 100 }, (_, i) => `token-${i}`);
    assert.deepEqual(await within(Promise.all(tokens.map((tok) => pool.call.echo(tok))), 'the echoes'), tokens);
    for (let i = 0; i < 30; i++) assert.equal(await pool.call.echo(`seq-${i}`), `seq-${i}`);
    for (let i = 0; i < 23; i++) seen.push(await pool.call.pid());
    const m = pool.metrics;
    assert.equal(m.requests_failed, 0);
    assert.equal(m.restarts, 0);
    assert.equal(m.recycles, m.workers.reduce((n, w) => n + w.recycles, 0));
    // The first two, and every pid seen that is not one of the last two, were recycled.
    const current = pids(pool);
    const replaced = new Set(seen.filter((pid) => !current.includes(pid))).size;
    assert.ok(m.recycles >= 2 + replaced, `recycles: ${m.recycles}`);
  } finally {
    await pool.stop();
  }
  assert.ok(!seen.some((pid) => first.includes(pid)), 'both first workers were replaced');
  assert.ok(Math.max(...Object.values(tally(seen))) <= 5);
  assert.ok(new Set(seen).size >= 4);
  assert.ok([...first, ...seen].every(gone));
});

it('stopping a pool reaps every worker', async () => {
  const pool = ParentWorker.spawn(WORKER, process.execPath, { workers: 3 });
  await pool.start();
  const all = pids(pool);
  assert.ok(all.every((pid) => !gone(pid)));
  await pool.stop();
  assert.deepEqual(all.filter((pid) => !gone(pid)), []);
});

it('a pool of C workers', async () => {
  assert.ok(fs.existsSync(C_TEST_WORKER), `${C_TEST_WORKER} is built by make programs`);
  const pool = ParentWorker.spawn(C_TEST_WORKER, { workers: 3 });
  await pool.start();
  let all;
  try {
    all = pids(pool);
    assert.equal(new Set(all).size, 3);
    const served = [];
    for (let i = 0; i < 9; i++) served.push(await pool.call.pid());
    assert.deepEqual(tally(served), tally([...all, ...all, ...all]));
    const sums = await Promise.all(Array.from({ length: 30 }, (_, i) => pool.call.add(i, 10)));
    assert.deepEqual(sums, Array.from({ length: 30 }, (_, i) => i + 10));
    assert.deepEqual(await pool.call.echo({ text: 'héllo', list: [1, 2.5, null] }), { text: 'héllo', list: [1, 2.5, null] });
  } finally {
    await pool.stop();
  }
  assert.ok(all.every(gone));
});

it('a worker count out of range is refused with the core text', async () => {
  for (const n of [0, 257]) {
    const w = ParentWorker.spawn(WORKER, process.execPath, { workers: n });
    await assert.rejects(w.start(), (e) => e instanceof InvalidArgumentError && e.message === `workers must be 1..=256, got ${n}`);
    assert.equal(w.state, 'stopped');
  }
  for (const options of [{ workers: -1 }, { workers: '2' }, { maxCallsPerWorker: -1 }, { maxCallsPerWorker: 1.5 }]) {
    await assert.rejects(ParentWorker.spawn(WORKER, process.execPath, options).start(), TypeError);
  }
});
