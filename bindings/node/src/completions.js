'use strict';
// The process-wide completion queue: one mf_queue whose descriptor (a
// socket, through net.Socket) the event loop watches, drained with
// mf_queue_next when it is readable: no thread between the library and JS.
// Two kinds of events land on it, each under a token of its own: a parent's
// calls ending (mf_call_queued, mf_call_queued_start) and a worker's
// handlers being cancelled (mf_reply_on_cancel_queue). The socket holds the
// loop open only while something waits on it, so an idle process exits by
// itself.
//
// Invariant: every token in `pending` is settled exactly once, by the first
// event that names it (a later one finds it gone), and its entry is gone
// after that; `forget` drops a token whose event may still come.

const net = require('node:net');
const os = require('node:os');
const { native, copyBytes, lastError } = require('./native');
const { unpack } = require('./codec');
const { Status, statusName, errorFor, CancelledError } = require('./errors');

const BATCH = 256;

/** A parent's call in flight: settles its promise from its completion. */
class PendingCall {
  constructor(name, owner, resolve, reject) {
    this.name = name;
    // `owner` keeps the worker alive (no finalizer close) while its calls are in flight.
    this.owner = owner;
    this.resolve = resolve;
    this.reject = reject;
    this.signal = null;
    this.onAbort = null;
  }

  done(status, value) {
    if (this.signal) this.signal.removeEventListener('abort', this.onAbort);
    if (status === Status.MF_OK) {
      let result;
      try {
        result = unpack(value);
      } catch (e) {
        this.reject(errorFor(Status.MF_ERR_PROTOCOL, `cannot decode the result of '${this.name}': ${e.message}`, this.name));
        return;
      }
      this.resolve(result);
    } else if (status === Status.MF_ERR_CANCELLED && this.signal) {
      this.reject(new CancelledError(value || statusName(status), this.name, { cause: this.signal.reason }));
    } else {
      this.reject(errorFor(status, value || statusName(status), this.name));
    }
  }
}

class Completions {
  constructor(lib) {
    this.lib = lib;
    this.queue = lib.queueNew();
    this.events = lib.koffi.alloc(lib.event, BATCH); // stable memory, read through a view
    this.count = lib.koffi.alloc('size_t', 1);
    // The events are read through one view made once, as 32-bit words:
    // decoding them as koffi structs builds an object per event, keys included.
    const { koffi, event } = lib;
    if (koffi.sizeof('void *') !== 8 || os.endianness() !== 'LE') {
      throw new Error('the Node binding reads mf_event as a 64-bit little-endian layout; this platform is not one');
    }
    const word = (field) => koffi.offsetof(event, field) / 4;
    this.layout = {
      stride: koffi.sizeof(event) / 4,
      token: word('token'),
      status: word('status'),
      result: word('result'),
      resultLen: word('result_len'),
    };
    this.words = new Uint32Array(koffi.view(this.events, BATCH * koffi.sizeof(event)));
    this.pending = new Map(); // token -> { done(status, value) }
    this.nextToken = 1;
    this.callId = [0]; // mf_call_queued_start's out-parameter
    const fd = [-1];
    const status = lib.queueFd(this.queue, fd);
    if (status !== Status.MF_OK) throw errorFor(status, lastError(lib, status), 'mf_queue_fd');
    // The queue keeps its descriptor; the socket closes a copy of it.
    this.socket = new net.Socket({ fd: lib.dup(fd[0]), readable: true, writable: false });
    this.socket.on('data', () => this.drain());
    this.socket.on('error', (e) => this.failAll(Status.MF_ERR_IO, `completion queue: ${e.message}`));
    this.socket.unref();
  }

  /** Waits for the event of a new token: `entry.done(status, value)` runs
   * once when it comes (value: the result bytes on MF_OK, else the text). */
  add(entry) {
    const token = this.nextToken++;
    if (this.pending.size === 0) this.socket.ref();
    this.pending.set(token, entry);
    return token;
  }

  /** Stops waiting for `token` (its event, if one still comes, is dropped). */
  forget(token) {
    if (this.pending.delete(token) && this.pending.size === 0) this.socket.unref();
  }

  /**
   * Starts one call; returns its promise. Throws (synchronously) if it could
   * not start. With an AbortSignal, aborting it cancels the call (`cancel`
   * gets the call's id and runs mf_cancel): the promise rejects with a
   * CancelledError whose `cause` is the signal's reason. An aborted signal
   * rejects at once without sending, as fetch() does.
   */
  start(parent, owner, name, argsBuffer, timeoutMs, signal, cancel) {
    if (signal && signal.aborted) {
      return Promise.reject(new CancelledError(`call to '${name}' was cancelled`, name, { cause: signal.reason }));
    }
    const token = this.nextToken++;
    const { lib } = this;
    const status = signal
      ? lib.callQueuedStart(parent, name, argsBuffer, argsBuffer.length, timeoutMs, this.queue, token, this.callId)
      : lib.callQueued(parent, name, argsBuffer, argsBuffer.length, timeoutMs, this.queue, token);
    if (status !== Status.MF_OK) {
      // Synchronous failure: the text is on this thread.
      throw errorFor(status, lastError(lib, status), name);
    }
    if (this.pending.size === 0) this.socket.ref();
    return new Promise((resolve, reject) => {
      const call = new PendingCall(name, owner, resolve, reject);
      if (signal) {
        const id = this.callId[0];
        call.signal = signal;
        // The call's event (MF_ERR_CANCELLED) is queued before mf_cancel returns;
        // the drain that follows settles it with the signal's reason.
        call.onAbort = () => cancel(id);
        signal.addEventListener('abort', call.onAbort, { once: true });
      }
      this.pending.set(token, call);
    });
  }

  /** On the loop, when the descriptor was readable (the socket read it): takes every event. */
  drain() {
    for (;;) {
      const status = this.lib.queueNext(this.queue, 0, this.events, BATCH, this.count);
      if (status === Status.MF_ERR_TIMEOUT) break;
      if (status !== Status.MF_OK) {
        this.failAll(status, `mf_queue_next: ${statusName(status)}`);
        break;
      }
      if (this.deliver() < BATCH) break; // empty now: the next event makes it readable again
    }
    if (this.pending.size === 0) this.socket.unref();
  }

  /** Settles the tokens of the batch mf_queue_next just took; returns its size. */
  deliver() {
    const { lib } = this;
    const { koffi } = lib;
    const { words } = this;
    const { stride, token: tokenAt, status: statusAt, result: resultAt, resultLen: lenAt } = this.layout;
    const u64 = (w) => words[w] + words[w + 1] * 2 ** 32; // exact: tokens and addresses stay below 2^53
    const n = Number(koffi.decode(this.count, 'size_t'));
    // Take everything out first: the library's pointers stay valid only until
    // the next mf_queue_next (which an entry's `done` may cause).
    const done = new Array(n);
    for (let i = 0; i < n; i++) {
      const w = i * stride;
      const status = words[w + statusAt] | 0;
      let value;
      if (status === Status.MF_OK) {
        value = copyBytes(lib, u64(w + resultAt), u64(w + lenAt));
      } else {
        value = koffi.decode(this.events, i * stride * 4, lib.event).error_message;
      }
      done[i] = { token: u64(w + tokenAt), status, value };
    }
    for (const { token, status, value } of done) {
      const entry = this.pending.get(token);
      if (!entry) continue;
      this.pending.delete(token);
      entry.done(status, value);
    }
    return n;
  }

  /** Ends everything waiting with `status` and `message` (the queue failed). */
  failAll(status, message) {
    const entries = [...this.pending.values()];
    this.pending.clear();
    this.socket.unref();
    for (const e of entries) e.done(status, message);
  }
}

let completions = null;

/** The process's completion queue, made on first use. */
function getCompletions() {
  if (!completions) completions = new Completions(native());
  return completions;
}

/** The queue if it was made (for finalizers, which must not make it). */
function existingCompletions() {
  return completions;
}

module.exports = { getCompletions, existingCompletions };
