'use strict';
// Shared by the tests: paths, child processes, polling.
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const PACKAGE_DIR = path.resolve(__dirname, '..');
const REPO = path.resolve(PACKAGE_DIR, '..', '..');
const WORKER = path.join(__dirname, 'fixtures', 'worker.js');
const C_WORKER = path.join(REPO, 'build', 'math_worker');

/** True while `pid` runs (a zombie counts as gone). */
function alive(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/**
 * Runs `node args...`; resolves with its exit and output. Killed after
 * `timeout` ms (then `timedOut` is true): a hang guard, not a speed limit.
 */
function runNode(args, { env, timeout = 60000, cwd, input } = {}) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeout);
    if (input !== undefined) child.stdin.end(input);
    else child.stdin.end();
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut, pid: child.pid });
    });
  });
}

/**
 * Polls `fn` until it returns a truthy value. `timeout` only guards against a
 * hang (generous, for a loaded machine); the error names what was awaited.
 */
async function waitFor(fn, { timeout = 30000, interval = 20, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** Resolves as `promise` does; rejects naming `what` if it has not settled after `timeout` ms (a hang guard). */
function within(promise, what, timeout = 60000) {
  let timer;
  const guard = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still waiting after ${timeout / 1000} s for ${what}`)), timeout);
  });
  return Promise.race([promise, guard]).finally(() => clearTimeout(timer));
}

module.exports = { PACKAGE_DIR, REPO, WORKER, C_WORKER, alive, runNode, waitFor, within };
