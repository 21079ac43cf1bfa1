'use strict';
// A stream's consumer end (docs/protocol.md §9): an async iterator over the
// items a worker's handler yields. mf_stream_next blocks its thread until an
// item, the end or the error comes, so it runs through koffi's async form on
// the libuv threadpool, never on the loop; at most one next per stream is
// outstanding (the core's mf_stream is used by one thread at a time), and
// mf_stream_close, which does not block, runs on the loop only while no next
// is outstanding.

const { native, copyBytes } = require('./native');
const { unpack } = require('./codec');
const { Status, statusName, errorFor, CancelledError } = require('./errors');

// Streams dropped unfinished (an iterator abandoned without return()) are
// closed, which cancels their call. A stream with a next outstanding is still
// reachable from that call's callback, so this never races a next.
const finalizer = new FinalizationRegistry((s) => native().streamClose(s));

const DONE = Object.freeze({ done: true, value: undefined });

class Stream {
  #name;
  #open; // () => Promise<mf_stream *>
  #owner; // keeps the worker alive (no finalizer close) while the stream is
  #signal;
  #onAbort = null;
  #aborted = false;
  #ptr = null;
  #waiting = false; // a next is outstanding on the threadpool
  #done = false;
  #chain = Promise.resolve();

  /** Made by ParentWorker.streamFunction(); `open` starts the call. */
  constructor(name, open, owner, signal) {
    this.#name = name;
    this.#open = open;
    this.#owner = owner;
    this.#signal = signal || null;
    if (this.#signal) {
      this.#aborted = this.#signal.aborted;
      // With no next outstanding the stream closes at once; otherwise the
      // next that is waiting closes it when it returns.
      this.#onAbort = () => {
        this.#aborted = true;
        if (!this.#waiting) this.#close();
      };
      this.#signal.addEventListener('abort', this.#onAbort, { once: true });
    }
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  /** The next item: `{ value, done: false }`, or `{ done: true }` once the
   * handler answered; rejects with the call's error after the items sent
   * before it. Calls are taken one after the other. */
  next() {
    return this.#queue(() => this.#next());
  }

  /** Closes the stream (a `break` out of `for await` calls it): an
   * unfinished stream's call is cancelled and its handler told. */
  return(value) {
    return this.#queue(() => {
      this.#close();
      return { done: true, value };
    });
  }

  /** Closes the stream and rejects with `err`. */
  throw(err) {
    return this.#queue(() => {
      this.#close();
      throw err;
    });
  }

  #queue(step) {
    const p = this.#chain.then(step);
    this.#chain = p.catch(() => {});
    return p;
  }

  #cancelled() {
    return new CancelledError(`stream '${this.#name}' was cancelled`, this.#name, { cause: this.#signal.reason });
  }

  async #next() {
    if (this.#aborted) {
      this.#close();
      throw this.#cancelled();
    }
    if (this.#done) return DONE;
    const lib = native();
    if (!this.#ptr) {
      try {
        this.#ptr = await this.#open();
      } catch (e) {
        this.#close();
        throw e;
      }
      finalizer.register(this, this.#ptr, this);
      if (this.#aborted) {
        this.#close();
        throw this.#cancelled();
      }
    }
    const item = {};
    const end = [false];
    this.#waiting = true;
    let status;
    try {
      status = await new Promise((resolve, reject) => {
        lib.streamNext.async(this.#ptr, -1, item, end, (err, res) => (err ? reject(err) : resolve(res)));
      });
    } finally {
      this.#waiting = false;
    }
    let value;
    let got = false;
    if (status === Status.MF_OK && !end[0]) {
      try {
        got = true;
        value = copyBytes(lib, item.data, item.len);
      } finally {
        lib.bufferFree(item);
      }
    }
    if (this.#aborted) {
      this.#close();
      throw this.#cancelled();
    }
    if (status !== Status.MF_OK) {
      this.#close();
      // The core's text for this failure is in mf_last_error of the pool
      // thread that ran the next, which this thread cannot read: the status
      // says what happened.
      throw errorFor(status, `stream '${this.#name}' failed: ${statusName(status)}`, this.#name);
    }
    if (!got) {
      this.#close();
      return DONE;
    }
    try {
      return { done: false, value: unpack(value) };
    } catch (e) {
      this.#close();
      throw errorFor(Status.MF_ERR_PROTOCOL, `cannot decode an item of '${this.#name}': ${e.message}`, this.#name);
    }
  }

  #close() {
    this.#done = true;
    if (this.#signal) this.#signal.removeEventListener('abort', this.#onAbort);
    const p = this.#ptr;
    this.#ptr = null;
    this.#owner = null;
    if (p) {
      finalizer.unregister(this);
      native().streamClose(p);
    }
  }
}

module.exports = { Stream };
