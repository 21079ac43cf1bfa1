'use strict';
// A stream's consumer end (docs/protocol.md §9): an async iterator over the
// items a worker's handler yields. The worker runs up to the stream's window
// ahead of the consumer, so the core usually holds the next item already: a
// next first takes it with mf_stream_next_ex and a wait of 0, which never
// blocks, on the loop's thread, and only when nothing is there yet waits for
// it through koffi's async form on the libuv threadpool, never on the loop.
// Either way at most one next per stream runs at a time (the core's
// mf_stream is used by one thread at a time), and mf_stream_close, which does
// not block, runs on the loop only while no next is on the threadpool; an
// abort meanwhile ends that wait with mf_stream_cancel.

const { native, copyBytes, takeString } = require('./native');
const { unpack } = require('./codec');
const { Status, statusName, errorFor, CancelledError } = require('./errors');

// Streams dropped unfinished (an iterator abandoned without return()) are
// closed, which cancels their call. A stream with a next outstanding is still
// reachable from that call's callback, so this never races a next.
const finalizer = new FinalizationRegistry((s) => native().streamClose(s));

const DONE = Object.freeze({ done: true, value: undefined });

// Items taken on the loop's thread in a row before a next lets the event loop
// turn once (setImmediate): a worker that yields as fast as the consumer
// takes would otherwise keep a `for await` in microtasks, starving timers and
// I/O (an AbortSignal on a timer, other calls' completions) for the stream's
// whole length.
const BURST = 64;

class Stream {
  #name;
  #open; // () => Promise<mf_stream *>
  #owner; // keeps the worker alive (no finalizer close) while the stream is
  #signal;
  #onAbort = null;
  #aborted = false;
  #ptr = null;
  #waiting = false; // a next is outstanding on the threadpool
  #burst = 0; // items taken on the loop's thread since the loop last turned
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
      // With no next outstanding the stream closes at once; otherwise its
      // call is cancelled (mf_stream_cancel may run while another thread
      // waits in next), which ends that wait at once, and the next closes it.
      this.#onAbort = () => {
        this.#aborted = true;
        if (!this.#waiting) this.#close();
        else native().streamCancel(this.#ptr);
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
    if (this.#burst >= BURST) {
      this.#burst = 0;
      await new Promise(setImmediate);
      // An abort while the loop turned closed the stream already.
      if (this.#aborted) {
        this.#close();
        throw this.#cancelled();
      }
    }
    const item = {};
    const end = [false];
    const error = [null];
    let status = lib.streamNextEx(this.#ptr, 0, item, end, error);
    if (status === Status.MF_ERR_TIMEOUT && !end[0]) {
      // Nothing there yet, the stream still open: wait off the loop. The
      // text of this 0 ms timeout is not the user's.
      takeString(lib, error[0]);
      error[0] = null;
      this.#burst = 0;
      this.#waiting = true;
      try {
        status = await new Promise((resolve, reject) => {
          lib.streamNextEx.async(this.#ptr, -1, item, end, error, (err, res) => (err ? reject(err) : resolve(res)));
        });
      } finally {
        this.#waiting = false;
      }
    } else {
      this.#burst++;
    }
    const text = takeString(lib, error[0]);
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
      throw errorFor(status, text || `stream '${this.#name}' failed: ${statusName(status)}`, this.#name);
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
