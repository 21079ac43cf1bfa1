'use strict';
// Whole processes: they must exit by themselves, take their workers along,
// pass worker output to the log, and explain a missing library.

const { it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { PACKAGE_DIR, REPO, WORKER, alive, runNode, waitFor } = require('./helpers');

const PKG = JSON.stringify(PACKAGE_DIR);
const W = JSON.stringify(WORKER);

/** A Node program that spawns the test worker as `worker`, then runs `body` in an async function. */
const parentScript = (body) => `const { ParentWorker } = require(${PKG});
  (async () => {
    const worker = ParentWorker.spawn(${W}, process.execPath);
    ${body}
  })();`;

it('the process exits by itself after stop()', async () => {
  const r = await runNode(
    [
      '-e',
      parentScript(`
        const handle = worker.handle();
        await handle.start();
        console.log('sum', await handle.call.add(1, 2));
        console.log('pid', await handle.call.pid());
        await handle.stop();
        console.log('stopped');
      `),
    ],
  );
  assert.equal(r.timedOut, false, `hung at exit: ${r.stdout} ${r.stderr}`);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /sum 3\npid \d+\nstopped\n$/);
  const pid = Number(/pid (\d+)/.exec(r.stdout)[1]);
  assert.equal(alive(pid), false);
});

it('process.exit() with calls in flight does not hang', async () => {
  // The calls never answer: an exit that waited for them would never end.
  const r = await runNode([
    '-e',
    parentScript(`
        await worker.start();
        for (let i = 0; i < 50; i++) worker.call.park('exit').catch(() => {});
        while (worker.metrics.in_flight < 50) await new Promise((resolve) => setTimeout(resolve, 10));
        process.exit(7);
      `),
  ]);
  assert.equal(r.timedOut, false, `hung at exit: ${r.stderr}`);
  assert.equal(r.code, 7, r.stderr);
});

it('calls in flight leave the libuv threadpool free', async () => {
  // One pool thread: a call that waited for its completion on it would hold
  // this file read back until the parked call is let go, which is never.
  const r = await runNode(
    [
      '-e',
      parentScript(`
        await worker.start();
        let parkedDone = false;
        const parked = worker.call.park('pool').then(() => { parkedDone = true; });
        while (worker.metrics.in_flight < 1) await new Promise((resolve) => setTimeout(resolve, 10));
        await require('node:fs/promises').readFile(require('node:path').join(${PKG}, 'package.json'));
        console.log('read while the call was in flight:', !parkedDone);
        await worker.call.unpark('pool');
        await parked;
        await worker.stop();
      `),
    ],
    { env: { UV_THREADPOOL_SIZE: '1' } },
  );
  assert.equal(r.timedOut, false, r.stderr);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'read while the call was in flight: true\n');
});

it('without stop() the process still exits, and its worker dies with it', async () => {
  const r = await runNode(
    [
      '-e',
      parentScript(`
        await worker.start();
        console.log(await worker.call.pid());
      `),
    ],
  );
  assert.equal(r.timedOut, false);
  assert.equal(r.code, 0, r.stderr);
  const pid = Number(r.stdout.trim());
  await waitFor(() => !alive(pid), { what: `worker ${pid} to die with its parent` });
});

it('a parent killed with SIGKILL takes its Node worker along', async () => {
  const { spawn } = require('node:child_process');
  const parent = spawn(
    process.execPath,
    [
      '-e',
      parentScript(`
        await worker.start();
        console.log(await worker.call.pid());
        setInterval(() => {}, 1000);
      `),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  parent.stdout.on('data', (d) => (out += d));
  const pid = Number(await waitFor(() => /\d+\n/.test(out) && out.trim(), { what: 'the worker pid' }));
  assert.ok(alive(pid));
  parent.kill('SIGKILL');
  await waitFor(() => !alive(pid), { what: `worker ${pid} to die with its parent` });
});

it("a worker's console output reaches the parent's log line by line", async () => {
  const r = await runNode(
    [
      '-e',
      parentScript(`
        await worker.start();
        await worker.call.say('first line');
        await worker.call.say('second line');
        await worker.stop();
      `),
    ],
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /\[worker\.js STDOUT\]: first line\n/);
  assert.match(r.stderr, /\[worker\.js STDOUT\]: second line\n/);
  assert.match(r.stderr, /\[worker\.js STDERR\]: err: first line\n/);
});

it('a spawn-mode worker started without a parent explains why', async () => {
  const env = { ...process.env };
  delete env.COMLINK_ZMQ_PORT;
  const r = await runNode([WORKER], { env });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /COMLINK_ZMQ_PORT is not set/);
});

it('a missing library names MULTIFROST_LIB and where it looked', async () => {
  // A copy of the package away from the repository, so no build can be found.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mf-node-nolib-'));
  try {
    const pkg = path.join(dir, 'bindings', 'node'); // so the "repository build" would be <dir>/target/release
    fs.mkdirSync(pkg, { recursive: true });
    fs.cpSync(path.join(PACKAGE_DIR, 'index.js'), path.join(pkg, 'index.js'));
    fs.cpSync(path.join(PACKAGE_DIR, 'src'), path.join(pkg, 'src'), { recursive: true });
    fs.symlinkSync(path.join(PACKAGE_DIR, 'node_modules'), path.join(pkg, 'node_modules'));
    const env = { ...process.env };
    delete env.MULTIFROST_LIB;
    // Its own class: not NotFoundError (a service missing from the registry),
    // nor any MultifrostError (the library never ran); a worker gets it too.
    const script = `const mf = require(${JSON.stringify(pkg)});
      (async () => {
        await new (class extends mf.ChildWorker {})().run().catch((e) => {
          console.log('worker:', e.name, e instanceof mf.LibraryNotFoundError);
        });
        await mf.ParentWorker.spawn('x').handle().start().catch((e) => {
          console.log(e.name, e.code, e instanceof mf.LibraryNotFoundError, e instanceof mf.NotFoundError, e instanceof mf.MultifrostError);
          console.log(e.message);
        });
      })();`;
    const r = await runNode(['-e', script], { env });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^worker: LibraryNotFoundError true\nLibraryNotFoundError ERR_MULTIFROST_LIBRARY_NOT_FOUND true false false\n/);
    assert.match(r.stdout, /MULTIFROST_LIB/);
    assert.ok(r.stdout.includes(path.join(pkg, 'lib', 'libmultifrost.so')), r.stdout);
    assert.ok(r.stdout.includes(path.join(dir, 'target', 'release', 'libmultifrost.so')), r.stdout);

    assert.ok(r.stdout.includes("libmultifrost.so.0 (installed library, by the dynamic loader's search"), r.stdout);

    // An installed library (here: found through LD_LIBRARY_PATH, as the
    // loader would find one in /usr/local/lib after ldconfig) is used.
    const sys = path.join(dir, 'sys');
    fs.mkdirSync(sys);
    fs.symlinkSync(path.join(REPO, 'target', 'release', 'libmultifrost.so'), path.join(sys, 'libmultifrost.so.0'));
    const r3 = await runNode(['-e', `const mf = require(${JSON.stringify(pkg)}); console.log(mf.libraryVersion(), mf.libraryPath());`], {
      env: { ...env, LD_LIBRARY_PATH: sys },
    });
    assert.equal(r3.code, 0, r3.stderr);
    assert.match(r3.stdout, /^\d+\.\d+\.\d+ libmultifrost\.so\.0\n$/);

    // MULTIFROST_LIB pointing nowhere: named, with the loader's reason.
    const r2 = await runNode(['-e', script], { env: { MULTIFROST_LIB: '/nonexistent/libmultifrost.so' } });
    assert.match(r2.stdout, /^worker: LibraryNotFoundError true\nLibraryNotFoundError ERR_MULTIFROST_LIBRARY_NOT_FOUND true false false\n/);
    assert.match(r2.stdout, /MULTIFROST_LIB=\/nonexistent\/libmultifrost\.so/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
