'use strict';
// The serving side. The core serves on its own thread and hands calls out by
// pull (mf_worker_next): one waits on the libuv threadpool through koffi's
// async form, the rest of a burst are taken without waiting, and every
// handler runs on the JS thread. No library thread ever calls into JS: a
// handler hears of its cancel through an event on the process's completion
// queue (mf_reply_on_cancel_queue), which the event loop drains.

const { native, copyBytes, lastError } = require('./native');
const { pack, unpack } = require('./codec');
const { getCompletions } = require('./completions');
const { Status, statusName, errorFor } = require('./errors');

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

/** A generator's (sync or async) iterator: its handler streams. */
function isGenerator(v) {
  if (v === null || typeof v !== 'object') return false;
  const tag = v[Symbol.toStringTag];
  return (tag === 'Generator' || tag === 'AsyncGenerator') && typeof v.next === 'function' && typeof v.return === 'function';
}

/** One call being answered: its reply and, once a handler asked for it, the
 * AbortController its cancel aborts. */
class Call {
  constructor(reply) {
    this.reply = reply;
    this.answered = false;
    this.controller = null;
    this.token = 0; // its cancel event's token on the completion queue, 0 = none
  }

  /** The call's AbortSignal, made on first use: the cancel is watched only
   * for handlers that look at it. Only before the reply is answered. */
  signal() {
    if (this.controller) return this.controller.signal;
    const controller = new AbortController();
    this.controller = controller;
    const lib = native();
    if (lib.replyCancelled(this.reply)) {
      controller.abort(errorFor(Status.MF_ERR_CANCELLED, 'the call was cancelled'));
      return controller.signal;
    }
    const completions = getCompletions();
    this.token = completions.add({
      done: (status, message) => controller.abort(errorFor(status, message)),
    });
    const status = lib.replyOnCancelQueue(this.reply, completions.queue, this.token);
    if (status !== Status.MF_OK) {
      completions.forget(this.token);
      this.token = 0;
      throw errorFor(status, lastError(lib, status));
    }
    return controller.signal;
  }

  /** The reply was answered: no cancel event can come any more. */
  settled() {
    this.answered = true;
    if (this.token) getCompletions().forget(this.token);
  }
}

/**
 * Subclass it and add methods; `new MyWorker().run()` serves them.
 * Methods whose names start with `_` are private and cannot be called.
 * A method may return a value or a Promise; `this.signal`, read before its
 * first `await`, is an AbortSignal that aborts when the caller cancels the
 * call (or its time runs out).
 */
class ChildWorker {
  #serviceId;
  #namespace;
  #handleSignals;
  #exitOnStop;
  #concurrency;
  #stopRequested = false;
  #waiting = false; // an mf_worker_next is outstanding on the threadpool
  #taking = false; // inside its completion, which arms the next wait itself
  #current = null; // the Call whose handler is running synchronously
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
   * exit the process shortly after run() resolved instead of waiting for them;
   * `concurrency` (default Infinity): how many calls may be in their handlers
   * at once; the others wait in the core, where a call cancelled or out of
   * time before its turn is answered without running.
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
    const c = o.concurrency ?? Infinity;
    if (!(c === Infinity || (Number.isInteger(c) && c >= 1))) {
      throw new TypeError('concurrency must be a positive integer or Infinity');
    }
    this.#concurrency = c;
  }

  /**
   * The AbortSignal of the call whose handler is running: it aborts when the
   * caller cancels the call or its time runs out (reason: a CancelledError).
   * Read it in the handler's synchronous part (`const { signal } = this;`
   * before the first `await`): after that another call's handler may be
   * running, so reading it then throws. A handler that never yields to the
   * event loop (a busy loop) cannot hear of a cancel.
   */
  get signal() {
    const call = this.#current;
    if (!call) {
      throw new Error('this.signal is only available while a handler runs: read it before the handler\'s first await');
    }
    return call.signal();
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
    if (this.#closed) throw errorFor(Status.MF_ERR_CLOSED, 'this worker was stopped before it ran');
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

  /** Waits for the next call on the threadpool, unless one waits already,
   * serving ended, or `concurrency` handlers are running. */
  #arm() {
    if (this.#waiting || this.#taking || this.#closed || this.#inFlight >= this.#concurrency) return;
    const lib = native();
    this.#waiting = true;
    lib.workerNext.async(this.#worker, -1, this.#incoming, (err, status) => {
      this.#waiting = false;
      if (err) {
        process.emitWarning(`multifrost: mf_worker_next failed: ${err.message}`);
        this.#done();
        return;
      }
      if (status === Status.MF_ERR_CLOSED) {
        this.#done();
        return;
      }
      // #incoming is this wait's: handlers that answer now must not arm another.
      this.#taking = true;
      try {
        if (status === Status.MF_OK) {
          this.#take();
          // A burst: take what is already there without going back to the threadpool.
          for (
            let i = 0;
            i < DRAIN && this.#inFlight < this.#concurrency && lib.workerNext(this.#worker, 0, this.#incoming) === Status.MF_OK;
            i++
          ) {
            this.#take();
          }
        }
      } finally {
        this.#taking = false;
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
    const call = new Call(reply);
    const ok = (value) => {
      if (call.answered) return;
      let packed;
      try {
        packed = pack(value);
      } catch (e) {
        fail(new TypeError(`cannot send the result of ${name}(): ${e.message}`));
        return;
      }
      call.settled();
      const lib = native();
      if (lib.replyOk(reply, packed, packed.length) !== Status.MF_OK) {
        lib.replyError(reply, `TypeError: the result of ${name}() is not one msgpack value`);
      }
      this.#settled();
    };
    const fail = (err) => {
      if (call.answered) return;
      call.settled();
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
      let result;
      this.#current = call;
      try {
        result = entry.fn.apply(this, args);
      } finally {
        this.#current = null;
      }
      if (isGenerator(result)) {
        this.#stream(name, result, call).then(ok, fail);
      } else if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
        result.then(ok, fail);
      } else {
        ok(result);
      }
    } catch (e) {
      fail(e);
    }
  }

  /**
   * Sends what a generator handler yields as the stream's items; resolves
   * with the final answer (nil) once it ends, rejects with what it threw.
   * mf_reply_yield blocks while the caller has no credit, so it runs through
   * koffi's async form on the libuv threadpool: the loop runs on meanwhile
   * (other handlers, this one's cancel). Once the caller closed the stream,
   * the yield says MF_ERR_CANCELLED: the generator is closed (its finally
   * blocks run) and the call answered.
   */
  async #stream(name, gen, call) {
    const lib = native();
    for (;;) {
      let step;
      this.#current = call; // `this.signal` in the generator's synchronous part
      try {
        step = gen.next();
      } finally {
        this.#current = null;
      }
      step = await step;
      if (step.done) return null;
      // A sync generator may yield promises, as `for await` would take them.
      let { value } = step;
      if (value !== null && typeof value === 'object' && typeof value.then === 'function') value = await value;
      let packed;
      try {
        packed = pack(value);
      } catch (e) {
        await gen.return();
        throw new TypeError(`cannot send an item of ${name}(): ${e.message}`);
      }
      const status = await new Promise((resolve, reject) => {
        lib.replyYield.async(call.reply, packed, packed.length, (err, res) => (err ? reject(err) : resolve(res)));
      });
      if (status === Status.MF_ERR_CANCELLED) {
        await gen.return();
        throw errorFor(status, `the stream of ${name}() was closed by its caller`);
      }
      if (status !== Status.MF_OK) {
        await gen.return();
        throw errorFor(status, `cannot send an item of ${name}(): ${statusName(status)}`);
      }
    }
  }

  #settled() {
    this.#inFlight--;
    if (this.#closed) {
      if (this.#inFlight === 0) this.#release();
    } else {
      this.#arm(); // a handler's turn is free
    }
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
