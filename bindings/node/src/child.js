'use strict';
// The serving side. The core serves on its own thread and hands calls out by
// pull (mf_worker_next): one waits on the libuv threadpool through koffi's
// async form, the rest of a burst are taken without waiting, and every
// handler runs on the JS thread. No library thread ever calls into JS.

const { native, copyBytes, lastError } = require('./native');
const { pack, unpack } = require('./codec');
const { Status, errorFor, MultifrostError } = require('./errors');

const DRAIN = 256; // calls taken without waiting after each wake-up

// Workers serving now. At exit libuv joins its threadpool threads, so a
// thread still waiting in mf_worker_next would hold process.exit() (say, from
// a handler) for ever: stop them so it returns.
const serving = new Set();
let exitHook = false;
function watchExit(w) {
  serving.add(w);
  if (exitHook) return;
  exitHook = true;
  process.once('exit', () => {
    const lib = native();
    for (const ptr of serving) lib.workerStop(ptr);
  });
}

/** "<ErrorName>: <message>", the text the caller's RemoteCallError carries. */
function errorText(err) {
  let text;
  if (err instanceof Error) {
    let name = err.name;
    if (!name || name === 'Error') {
      const ctor = err.constructor && err.constructor.name;
      name = ctor && ctor !== 'Object' ? ctor : 'Error';
    }
    text = `${name}: ${err.message}`;
  } else {
    text = `Error: ${typeof err === 'string' ? err : safeString(err)}`;
  }
  return typeof text.toWellFormed === 'function' ? text.toWellFormed() : text;
}

function safeString(v) {
  try {
    return typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v);
  } catch {
    return Object.prototype.toString.call(v);
  }
}

/** Largest argument count a function takes: Infinity for rest parameters,
 * defaults, `arguments`, or anything this small parser is not sure about. */
function maxArgs(fn) {
  let src;
  try {
    src = Function.prototype.toString.call(fn);
  } catch {
    return Infinity;
  }
  if (/\barguments\b/.test(src) || src.includes('[native code]')) return Infinity;
  const open = src.indexOf('(');
  const arrow = src.indexOf('=>');
  if (arrow >= 0 && (open < 0 || arrow < open)) {
    // `x => ...`: exactly one parameter
    return /^\s*(async\s+)?[A-Za-z_$][\w$]*\s*=>/.test(src) ? 1 : Infinity;
  }
  if (open < 0) return Infinity;
  let depth = 0;
  let end = -1;
  for (let i = open; i < src.length; i++) {
    const c = src[i];
    if (c === '(' || c === '[' || c === '{') depth++;
    else if (c === ')' || c === ']' || c === '}') {
      depth--;
      if (depth === 0) {
        end = i;
        break;
      }
    } else if (c === '"' || c === "'" || c === '`' || c === '/') return Infinity;
  }
  if (end < 0) return Infinity;
  const params = src.slice(open + 1, end);
  if (params.includes('...') || params.includes('=')) return Infinity;
  if (!params.trim()) return 0;
  let count = 1;
  depth = 0;
  for (const c of params) {
    if (c === '(' || c === '[' || c === '{') depth++;
    else if (c === ')' || c === ']' || c === '}') depth--;
    else if (c === ',' && depth === 0) count++;
  }
  if (/,\s*$/.test(params)) count--; // trailing comma
  return count;
}

/**
 * Subclass it and add methods; `new MyWorker().run()` serves them.
 * Methods whose names start with `_` are private and cannot be called.
 * A method may return a value or a Promise.
 */
class ChildWorker {
  #serviceId;
  #namespace;
  #handleSignals;
  #exitOnStop;
  #stopRequested = false;
  #worker = null; // mf_worker *
  #incoming = null; // stable memory for mf_incoming
  #functions = new Map(); // name -> { fn, min, max }
  #running = null;
  #finish = null;
  #closed = false;
  #inFlight = 0;

  /**
   * `new MyWorker()`: spawn mode (started by a parent, COMLINK_ZMQ_PORT).
   * `new MyWorker('math-service')` or `{ serviceId }`: connect mode, registered
   * under that id; `'tcp://127.0.0.1:5555'` binds that endpoint.
   * Options: `namespace` (default 'default'), `handleSignals` (default true:
   * SIGINT/SIGTERM stop serving and run() resolves), `exitOnStop` (default
   * true in spawn mode): when the parent's shutdown or a signal ends serving
   * while handlers are still running (their answers can no longer be sent),
   * exit the process shortly after run() resolved instead of waiting for them.
   */
  constructor(serviceIdOrOptions) {
    const o =
      typeof serviceIdOrOptions === 'string'
        ? { serviceId: serviceIdOrOptions }
        : serviceIdOrOptions && typeof serviceIdOrOptions === 'object'
          ? serviceIdOrOptions
          : {};
    this.#serviceId = o.serviceId ?? o.service_id ?? null;
    this.#namespace = o.namespace ?? null;
    this.#handleSignals = o.handleSignals ?? true;
    this.#exitOnStop = o.exitOnStop ?? this.#serviceId === null;
  }

  /** The public methods a parent can call. */
  listFunctions() {
    const names = new Set();
    for (let proto = Object.getPrototypeOf(this); proto && proto !== ChildWorker.prototype && proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) {
      for (const name of Object.getOwnPropertyNames(proto)) {
        if (name === 'constructor' || name.startsWith('_')) continue;
        const d = Object.getOwnPropertyDescriptor(proto, name);
        if (d && typeof d.value === 'function') names.add(name);
      }
    }
    for (const name of Object.keys(this)) {
      if (!name.startsWith('_') && typeof this[name] === 'function') names.add(name);
    }
    return [...names].sort();
  }

  /** Serves until stop(), a parent's shutdown, SIGINT or SIGTERM; then resolves. */
  run() {
    if (this.#running) return this.#running;
    this.#running = new Promise((resolve, reject) => {
      this.#finish = resolve;
      try {
        this.#open();
      } catch (e) {
        this.#release();
        reject(e);
        return;
      }
      this.#arm();
    });
    return this.#running;
  }

  /** Stops serving; run() resolves. Any time, also from a handler. */
  stop() {
    this.#stopRequested = true;
    if (this.#worker && !this.#closed) native().workerStop(this.#worker);
    else this.#closed = true;
  }

  #open() {
    const lib = native();
    if (this.#closed) throw new MultifrostError('this worker was stopped before it ran', Status.MF_ERR_CLOSED);
    const out = [null];
    let status = lib.workerNew(this.#serviceId, out);
    if (status !== Status.MF_OK) throw errorFor(status, lastError(lib, status));
    this.#worker = out[0];
    for (const name of this.listFunctions()) {
      const fn = this[name];
      this.#functions.set(name, { fn, min: fn.length, max: maxArgs(fn) });
      status = lib.workerRegisterPull(this.#worker, name);
      if (status !== Status.MF_OK) throw errorFor(status, `register '${name}': ${lastError(lib, status)}`);
    }
    if (this.#namespace !== null) {
      status = lib.workerSetNamespace(this.#worker, String(this.#namespace));
      if (status !== Status.MF_OK) throw errorFor(status, lastError(lib, status));
    }
    lib.workerSetHandleSignals(this.#worker, !!this.#handleSignals);
    status = lib.workerStart(this.#worker);
    if (status !== Status.MF_OK) throw errorFor(status, lastError(lib, status));
    watchExit(this.#worker);
    this.#incoming = lib.koffi.alloc(lib.incoming, 1);
  }

  #arm() {
    const lib = native();
    lib.workerNext.async(this.#worker, -1, this.#incoming, (err, status) => {
      if (err) {
        process.emitWarning(`multifrost: mf_worker_next failed: ${err.message}`);
        this.#done();
        return;
      }
      if (status === Status.MF_ERR_CLOSED) {
        this.#done();
        return;
      }
      if (status === Status.MF_OK) {
        this.#take();
        // A burst: take what is already there without going back to the threadpool.
        for (let i = 0; i < DRAIN && lib.workerNext(this.#worker, 0, this.#incoming) === Status.MF_OK; i++) {
          this.#take();
        }
      }
      this.#arm();
    });
  }

  #take() {
    const lib = native();
    const inc = lib.koffi.decode(this.#incoming, lib.incoming);
    // The arguments belong to the reply: copy them before anything can answer it.
    const bytes = copyBytes(lib, inc.args, inc.args_len);
    this.#dispatch(inc.function, bytes, inc.reply);
  }

  #dispatch(name, bytes, reply) {
    this.#inFlight++;
    let answered = false;
    const ok = (value) => {
      if (answered) return;
      let packed;
      try {
        packed = pack(value);
      } catch (e) {
        fail(new TypeError(`cannot send the result of ${name}(): ${e.message}`));
        return;
      }
      answered = true;
      const lib = native();
      if (lib.replyOk(reply, packed, packed.length) !== Status.MF_OK) {
        lib.replyError(reply, `TypeError: the result of ${name}() is not one msgpack value`);
      }
      this.#settled();
    };
    const fail = (err) => {
      if (answered) return;
      answered = true;
      const lib = native();
      if (lib.replyError(reply, errorText(err)) !== Status.MF_OK) {
        lib.replyError(reply, 'Error: the handler failed with a message that is not valid text');
      }
      this.#settled();
    };
    try {
      const entry = this.#functions.get(name);
      if (!entry) throw new Error(`Function '${name}' not found`);
      const args = unpack(bytes);
      if (!Array.isArray(args)) throw new TypeError('arguments must be an array');
      if (args.length < entry.min || args.length > entry.max) {
        const expects = entry.max === Infinity ? `at least ${entry.min}` : entry.min === entry.max ? `${entry.min}` : `${entry.min} to ${entry.max}`;
        throw new TypeError(`${name}() takes ${expects} argument${expects === '1' ? '' : 's'} but ${args.length} ${args.length === 1 ? 'was' : 'were'} given`);
      }
      const result = entry.fn.apply(this, args);
      if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
        result.then(ok, fail);
      } else {
        ok(result);
      }
    } catch (e) {
      fail(e);
    }
  }

  #settled() {
    this.#inFlight--;
    if (this.#closed && this.#inFlight === 0) this.#release();
  }

  #done() {
    this.#closed = true;
    if (this.#inFlight === 0) this.#release();
    const finish = this.#finish;
    this.#finish = null;
    // The core removed the service's registry entry before mf_worker_next
    // said MF_ERR_CLOSED (tests/worker.rs pins it): a process may leave now.
    if (finish) finish();
    if (this.#exitOnStop && !this.#stopRequested && this.#inFlight > 0) {
      // Stopped from outside (shutdown, SIGTERM, SIGINT) with handlers still
      // running: their timers would keep the process alive until the parent
      // kills it. Give run()'s continuations a moment, then leave. Unref'd:
      // a process with nothing else to do exits by itself before that.
      setTimeout(() => {
        if (this.#inFlight > 0) process.exit(process.exitCode ?? 0);
      }, 200).unref();
    }
  }

  #release() {
    if (this.#worker) {
      serving.delete(this.#worker);
      native().workerFree(this.#worker);
      this.#worker = null;
    }
    this.#closed = true;
  }
}

module.exports = { ChildWorker, errorText, maxArgs };
