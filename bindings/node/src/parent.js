'use strict';
// The calling side. Calls are started on the JS thread with mf_call_queued
// (it never blocks) and their completions are taken in batches from the
// process-wide completion queue, which the event loop itself drains
// (./completions). Blocking C calls (spawn, connect, close) run through
// koffi's async form on the libuv threadpool: the loop never waits.

const path = require('node:path');
const { native, takeString, lastError } = require('./native');
const { pack } = require('./codec');
const { getCompletions, existingCompletions } = require('./completions');
const { Status, errorFor, ClosedError } = require('./errors');
const { Stream } = require('./stream');

/** Runs a koffi function on the threadpool; resolves with its return value. */
function runAsync(fn, ...args) {
  return new Promise((resolve, reject) => {
    fn.async(...args, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

// Handles dropped without stop() are closed on the threadpool (never blocking the loop).
const finalizer = new FinalizationRegistry((p) => {
  const c = existingCompletions();
  if (c) c.lib.parentClose.async(p, () => {});
});

const OPTION_KEYS = new Set([
  'timeout',
  'namespace',
  'heartbeat',
  'breaker',
  'autoRestart',
  'startTimeout',
  'connectTimeout',
  'shutdownGrace',
  'name',
  'bindHost',
  'maxMessageSize',
  'privateLink',
  'cancelGrace',
  'streamCredit',
  'workers',
  'maxCallsPerWorker',
  'args',
]);

// The core's text names the option in its words ("heartbeat timeout must be > 0 ms").
function checkStatus(lib, status) {
  if (status !== Status.MF_OK) throw errorFor(status, lastError(lib, status));
}

function ms(value, what) {
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new TypeError(`option ${what} must be a number of milliseconds, got ${String(value)}`);
  }
  return Math.round(value);
}

/** A whole number >= 0 for an unsigned option (koffi would wrap a negative one). */
function count(value, what, max = Number.MAX_SAFE_INTEGER) {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new TypeError(`option ${what} must be a whole number >= 0, got ${String(value)}`);
  }
  return value;
}

/** Builds an mf_options from the JS options object; the caller frees it. */
function buildOptions(lib, options) {
  const o = lib.optionsNew();
  try {
    if (options.timeout !== undefined && options.timeout !== null) {
      checkStatus(lib, lib.optionsSetDefaultTimeout(o, ms(options.timeout, 'timeout')));
    }
    if (options.namespace !== undefined) {
      checkStatus(lib, lib.optionsSetNamespace(o, String(options.namespace)));
    }
    if (options.heartbeat !== undefined) {
      const hb = options.heartbeat;
      if (hb === false || hb === 0) {
        checkStatus(lib, lib.optionsSetHeartbeat(o, 0, 0, 0));
      } else if (typeof hb === 'object' && hb !== null) {
        checkStatus(
          lib,
          lib.optionsSetHeartbeat(
            o,
            ms(hb.interval ?? 5000, 'heartbeat.interval'),
            ms(hb.timeout ?? 3000, 'heartbeat.timeout'),
            hb.maxMisses ?? 3,
          ));
      } else if (hb !== true) {
        throw new TypeError('option heartbeat must be false or { interval, timeout, maxMisses }');
      }
    }
    if (options.breaker !== undefined) {
      const b = options.breaker;
      if (typeof b !== 'object' || b === null) {
        throw new TypeError('option breaker must be { threshold, cooldown, countRemoteErrors }');
      }
      checkStatus(lib, lib.optionsSetBreaker(o, b.threshold ?? 5, ms(b.cooldown ?? 5000, 'breaker.cooldown')));
      if (b.countRemoteErrors !== undefined) {
        checkStatus(lib, lib.optionsSetBreakerCountsRemoteErrors(o, !!b.countRemoteErrors));
      }
    }
    if (options.autoRestart !== undefined) {
      const r = options.autoRestart;
      const max = r === true ? 5 : r === false ? 0 : r;
      if (!Number.isInteger(max) || max < 0) {
        throw new TypeError('option autoRestart must be a boolean or a number of restarts');
      }
      checkStatus(lib, lib.optionsSetAutoRestart(o, max));
    }
    if (options.startTimeout !== undefined) {
      checkStatus(lib, lib.optionsSetStartTimeout(o, ms(options.startTimeout, 'startTimeout')));
    }
    if (options.connectTimeout !== undefined) {
      checkStatus(lib, lib.optionsSetConnectTimeout(o, ms(options.connectTimeout, 'connectTimeout')));
    }
    if (options.shutdownGrace !== undefined) {
      checkStatus(lib, lib.optionsSetShutdownGrace(o, ms(options.shutdownGrace, 'shutdownGrace')));
    }
    if (options.name !== undefined) checkStatus(lib, lib.optionsSetName(o, String(options.name)));
    if (options.bindHost !== undefined) {
      checkStatus(lib, lib.optionsSetBindHost(o, String(options.bindHost)));
    }
    if (options.maxMessageSize !== undefined) {
      checkStatus(lib, lib.optionsSetMaxMessageSize(o, options.maxMessageSize));
    }
    if (options.cancelGrace !== undefined) {
      checkStatus(lib, lib.optionsSetCancelGrace(o, ms(options.cancelGrace, 'cancelGrace')));
    }
    if (options.streamCredit !== undefined) {
      checkStatus(lib, lib.optionsSetStreamCredit(o, options.streamCredit));
    }
    if (options.privateLink !== undefined) {
      checkStatus(lib, lib.optionsSetPrivateLink(o, !!options.privateLink));
    }
    if (options.workers !== undefined) {
      // The core checks the range (1..=256) and says so in its words.
      checkStatus(lib, lib.optionsSetWorkers(o, count(options.workers, 'workers', 0xffffffff)));
    }
    if (options.maxCallsPerWorker !== undefined) {
      checkStatus(lib, lib.optionsSetMaxCallsPerWorker(o, count(options.maxCallsPerWorker, 'maxCallsPerWorker')));
    }
    return o;
  } catch (e) {
    lib.optionsFree(o);
    throw e;
  }
}

function checkOptions(options) {
  if (options === undefined || options === null) return {};
  if (typeof options !== 'object') throw new TypeError('options must be an object');
  for (const key of Object.keys(options)) {
    if (!OPTION_KEYS.has(key)) {
      throw new TypeError(`unknown option '${key}' (known: ${[...OPTION_KEYS].join(', ')})`);
    }
  }
  return { ...options };
}

/** The interpreter for a script given without one: Node for .js, Python for .py. */
function defaultExecutable(script) {
  if (/\.(c|m)?js$/i.test(script)) return process.execPath;
  if (/\.py$/i.test(script)) return 'python3';
  return null;
}

/**
 * One worker: how to reach it (spawn or connect) and, once started, the
 * connection. `handle()` gives the API to start, call and stop it.
 */
class ParentWorker {
  /**
   * Describes a worker to spawn; nothing runs until `handle().start()`.
   * `ParentWorker.spawn('worker.py', 'python3')` runs `python3 worker.py --worker`;
   * `ParentWorker.spawn('./build/math_worker')` runs the program itself
   * (a .js or .py script alone runs with Node or python3).
   */
  static spawn(script, executable, options) {
    if (typeof script !== 'string' || !script) throw new TypeError('spawn: script must be a non-empty string');
    if (executable !== undefined && executable !== null && typeof executable === 'object') {
      options = executable;
      executable = undefined;
    }
    if (executable !== undefined && executable !== null && typeof executable !== 'string') {
      throw new TypeError('spawn: executable must be a string');
    }
    const w = new ParentWorker(ParentWorker.#token);
    w.#mode = 'spawn';
    w.#script = script;
    w.#executable = executable || defaultExecutable(script);
    w.#options = checkOptions(options);
    return w;
  }

  /**
   * Connects to a running worker by service id (looked up in
   * `$HOME/.multifrost/services.json`) or by endpoint `tcp://host:port`.
   * Resolves with a started worker. A number as second argument is the
   * connect timeout in milliseconds.
   */
  static async connect(target, options) {
    if (typeof target !== 'string' || !target) throw new TypeError('connect: target must be a non-empty string');
    if (typeof options === 'number') options = { connectTimeout: options };
    const w = new ParentWorker(ParentWorker.#token);
    w.#mode = 'connect';
    w.#target = target;
    w.#options = checkOptions(options);
    await w.#start();
    return w;
  }

  static #token = Symbol('ParentWorker');
  #mode = null;
  #script = null;
  #executable = null;
  #target = null;
  #options = {};
  #parent = null; // mf_parent *, once started
  #state = 'new'; // new | starting | running | stopping | stopped
  #starting = null;
  #stopping = null;
  #handle = null;

  /** Use ParentWorker.spawn() or ParentWorker.connect(). */
  constructor(token) {
    if (token !== ParentWorker.#token) {
      throw new TypeError('use ParentWorker.spawn(script, executable) or ParentWorker.connect(serviceId)');
    }
  }

  /** The API to start, call and stop this worker. Cheap; every handle shares the worker. */
  handle() {
    return new ParentHandle(this);
  }

  /** Proxy: `await worker.call.add(1, 2)` (same as on a handle). */
  get call() {
    if (!this.#handle) this.#handle = this.handle();
    return this.#handle.call;
  }

  /** Proxy: `for await (const x of worker.stream.count(5))` (same as on a handle). */
  get stream() {
    if (!this.#handle) this.#handle = this.handle();
    return this.#handle.stream;
  }

  start() {
    return this.#start();
  }

  stop() {
    return this.#stop();
  }

  /** Same as stop(). */
  close() {
    return this.#stop();
  }

  callFunction(name, args = [], options = {}) {
    return this.#call(name, args, options);
  }

  /** Calls `name` as a stream: an async iterable of the items its handler
   * yields (see ParentHandle.stream). */
  streamFunction(name, args = [], options = {}) {
    const { timeoutMs, signal } = callOptions(name, args, options);
    return new Stream(name, () => this.#openStream(name, args, timeoutMs), this, signal);
  }

  /** 'new', 'starting', 'running', 'stopping' or 'stopped'. */
  get state() {
    return this.#state;
  }

  /** The parent's metrics (mf_parent_stats_json), or null before start / after stop. */
  get metrics() {
    if (this.#state !== 'running') return null;
    const lib = native();
    const text = takeString(lib, lib.parentStatsJson(this.#parent));
    return text ? JSON.parse(text) : null;
  }

  get isHealthy() {
    const m = this.metrics;
    return !!(m && m.healthy);
  }

  get circuitOpen() {
    const m = this.metrics;
    return !!(m && m.circuit_state === 'open');
  }

  get lastHeartbeatRttMs() {
    const m = this.metrics;
    return m ? m.heartbeat_rtt_last_ms : null;
  }

  /** The spawned worker's process id (of a pool, the first worker's; 0 in
   * connect mode), or null when not running. `metrics.workers` has them all. */
  get pid() {
    const m = this.metrics;
    return m ? m.worker_pid : null;
  }

  #describe() {
    return this.#mode === 'spawn' ? `worker '${this.#script}'` : `service '${this.#target}'`;
  }

  #start() {
    if (this.#state === 'running') return Promise.resolve();
    if (this.#state === 'starting') return this.#starting;
    if (this.#state !== 'new') {
      return Promise.reject(new ClosedError(`${this.#describe()} was stopped; create a new ParentWorker to start it again`));
    }
    this.#state = 'starting';
    this.#starting = this.#open().then(
      (p) => {
        this.#parent = p;
        this.#state = 'running';
        finalizer.register(this, p, this);
      },
      (e) => {
        this.#state = 'stopped';
        throw e;
      },
    );
    return this.#starting;
  }

  async #open() {
    const lib = native();
    getCompletions(); // the queue exists before the first call
    const options = { ...this.#options };
    let program;
    let args;
    if (this.#mode === 'spawn') {
      const extra = (options.args || []).map(String);
      if (this.#executable) {
        program = this.#executable;
        args = [this.#script, '--worker', ...extra];
        if (options.name === undefined) options.name = path.basename(this.#script);
      } else {
        program = this.#script;
        args = extra;
      }
    }
    delete options.args;
    const opts = buildOptions(lib, options);
    const error = [null];
    const out = [null];
    let status;
    try {
      status =
        this.#mode === 'spawn'
          ? await runAsync(lib.spawnEx, program, [...args, null], opts, error, out)
          : await runAsync(lib.connectEx, this.#target, opts, error, out);
    } finally {
      lib.optionsFree(opts);
    }
    // The core's text: for a worker that exited, its exit status and last stderr lines.
    const text = takeString(lib, error[0]);
    if (status !== Status.MF_OK) throw errorFor(status, text || `cannot ${this.#mode} ${this.#describe()}`);
    return out[0];
  }

  #stop() {
    if (this.#state === 'stopped') return Promise.resolve();
    if (this.#state === 'stopping') return this.#stopping;
    if (this.#state === 'new') {
      this.#state = 'stopped';
      return Promise.resolve();
    }
    const wasStarting = this.#state === 'starting' ? this.#starting : null;
    this.#state = 'stopping';
    this.#stopping = (async () => {
      if (wasStarting) {
        try {
          await wasStarting;
        } catch {
          // start failed: nothing to close
        }
      }
      const p = this.#parent;
      this.#parent = null;
      this.#state = 'stopped';
      if (p) {
        finalizer.unregister(this);
        // Calls in flight end with MF_ERR_CLOSED through the queue; close blocks
        // (shutdown, SIGTERM, reap), so it runs on the threadpool.
        await runAsync(native().parentClose, p);
      }
    })();
    return this.#stopping;
  }

  /** Opens the stream's call once the worker runs; resolves with its mf_stream. */
  async #openStream(name, args, timeoutMs) {
    if (this.#state === 'starting') {
      try {
        await this.#starting;
      } catch {
        // reported below as not running
      }
    }
    this.#checkRunning(name);
    const lib = native();
    const argsBuffer = pack(args);
    const out = [null];
    // mf_stream_open sends and returns: it does not block the loop.
    const status = lib.streamOpen(this.#parent, name, argsBuffer, argsBuffer.length, timeoutMs, out);
    if (status !== Status.MF_OK) throw errorFor(status, lastError(lib, status), name);
    return out[0];
  }

  // Not async: a call on a running worker makes one promise, not two.
  #call(name, args, options) {
    try {
      const { timeoutMs, signal } = callOptions(name, args, options);
      if (this.#state === 'starting') return this.#callOnceStarted(name, args, timeoutMs, signal);
      return this.#send(name, args, timeoutMs, signal);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  async #callOnceStarted(name, args, timeoutMs, signal) {
    try {
      await this.#starting;
    } catch {
      // reported by #send as not running
    }
    return this.#send(name, args, timeoutMs, signal);
  }

  /** Starts the call now; throws if the worker is not running. */
  #send(name, args, timeoutMs, signal) {
    this.#checkRunning(name);
    if (!signal) return getCompletions().start(this.#parent, this, name, pack(args), timeoutMs);
    return getCompletions().start(this.#parent, this, name, pack(args), timeoutMs, signal, (id) => this.#cancel(id));
  }

  #checkRunning(name) {
    if (this.#state !== 'running') {
      if (this.#state === 'new') {
        throw errorFor(Status.MF_ERR_INVALID_ARGUMENT, `call '${name}': ${this.#describe()} is not started (await handle.start() first)`);
      }
      throw new ClosedError(`call '${name}': ${this.#describe()} is stopped`);
    }
  }

  // Once stop() has taken the handle (#parent is null) its close may be
  // freeing it on the threadpool: the call then ends with ClosedError.
  #cancel(id) {
    if (this.#parent) native().cancel(this.#parent, id);
  }
}

/** Checks a call's name, arguments and options; returns the timeout for
 * the core (0: the default, -1: none) and the signal. */
function callOptions(name, args, options) {
  if (typeof name !== 'string' || !name) throw new TypeError('function name must be a non-empty string');
  if (!Array.isArray(args)) throw new TypeError('args must be an array');
  const { timeout, signal } = options || {};
  if (signal !== undefined && signal !== null && !isAbortSignal(signal)) {
    throw new TypeError('signal must be an AbortSignal');
  }
  let timeoutMs = 0;
  if (timeout !== undefined && timeout !== null) {
    if (typeof timeout !== 'number' || Number.isNaN(timeout)) throw new TypeError('timeout must be a number of milliseconds');
    timeoutMs = timeout === Infinity || timeout < 0 ? -1 : timeout === 0 ? 0 : Math.max(1, Math.round(timeout));
  }
  return { timeoutMs, signal };
}

function isAbortSignal(s) {
  return typeof s === 'object' && typeof s.aborted === 'boolean' && typeof s.addEventListener === 'function';
}

/** What a call proxy refuses to treat as a remote function name. */
const NOT_REMOTE = new Set(['then', 'catch', 'finally', 'constructor', 'toJSON', 'inspect', 'valueOf', 'toString']);

function callProxy(call, options) {
  return new Proxy(Object.create(null), {
    get(_, prop) {
      if (typeof prop === 'symbol' || NOT_REMOTE.has(prop)) return undefined;
      if (prop === 'withOptions') return (more) => callProxy(call, { ...options, ...more });
      return (...args) => call(prop, args, options);
    },
  });
}

/** The runtime API of a ParentWorker: start, call, stop. */
class ParentHandle {
  #worker;

  constructor(worker) {
    this.#worker = worker;
    /** `await handle.call.add(1, 2)`; `handle.call.withOptions({ timeout: 500, signal }).slow(1000)`. */
    this.call = callProxy((name, args, options) => worker.callFunction(name, args, options), {});
    /**
     * `for await (const x of handle.stream.count(5))`: the items a
     * generator handler yields, in order. Leaving the loop early (break,
     * throw) closes the stream and the handler is told;
     * `handle.stream.withOptions({ timeout, signal })` as for `call`.
     */
    this.stream = callProxy((name, args, options) => worker.streamFunction(name, args, options), {});
  }

  get worker() {
    return this.#worker;
  }

  /** Spawns (or connects); resolves once the worker has answered a heartbeat. */
  start() {
    return this.#worker.start();
  }

  /** Closes: calls in flight reject with ClosedError, a spawned worker is stopped and reaped. */
  stop() {
    return this.#worker.stop();
  }

  /** Calls `name` as a stream (see `stream`). */
  streamFunction(name, args = [], options = {}) {
    return this.#worker.streamFunction(name, args, options);
  }

  /** Calls `name` with the `args` array; `options.timeout` in ms (negative:
   * none), `options.signal` an AbortSignal that cancels the call. */
  callFunction(name, args = [], options = {}) {
    return this.#worker.callFunction(name, args, options);
  }
}

module.exports = { ParentWorker, ParentHandle };
