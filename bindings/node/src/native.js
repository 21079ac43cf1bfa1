'use strict';
// The one place that knows the C API: finds and loads libmultifrost and
// declares its functions through koffi. Everything else calls `native()`.

const fs = require('node:fs');
const path = require('node:path');
const koffi = require('koffi');
const { errorFor, LibraryNotFoundError, Status } = require('./errors');

const PACKAGE_DIR = path.resolve(__dirname, '..');
const LIB_NAME = 'libmultifrost.so';
/** The installed library's SONAME: `make install` puts it where the dynamic
 * loader looks (after ldconfig), so a package without lib/ still finds it. */
const SYSTEM_NAME = 'libmultifrost.so.0';

/** Where the library is looked for, in order, with the reason for each. */
function candidates() {
  const list = [];
  const env = process.env.MULTIFROST_LIB;
  if (env) list.push({ file: path.resolve(env), why: 'MULTIFROST_LIB', explicit: true });
  list.push({ file: path.join(PACKAGE_DIR, 'lib', LIB_NAME), why: 'copy inside the package' });
  list.push({
    file: path.resolve(PACKAGE_DIR, '..', '..', 'target', 'release', LIB_NAME),
    why: 'repository build',
  });
  list.push({ file: SYSTEM_NAME, why: "installed library, by the dynamic loader's search (make install)", system: true });
  return list;
}

/** The path of the library that is (or would be) loaded, or null if there
 * is none; the installed library counts once it has been loaded. */
function libraryPath() {
  if (loaded) return loaded.path;
  for (const c of candidates()) {
    if (c.explicit || (!c.system && fs.existsSync(c.file))) return c.file;
  }
  return null;
}

let loaded = null;

/** Loads the library once and returns its declared functions. Throws a
 * LibraryNotFoundError naming MULTIFROST_LIB and every place looked at when
 * it cannot be found or loaded. */
function native() {
  if (loaded) return loaded;
  const list = candidates();
  const searched = list.map((c) => c.file);
  let chosen = null;
  let lib = null;
  for (const c of list) {
    if (c.system) {
      try {
        lib = koffi.load(c.file); // found only through the loader's own search
        chosen = c;
        break;
      } catch {
        continue;
      }
    }
    if (c.explicit || fs.existsSync(c.file)) {
      chosen = c;
      break;
    }
  }
  if (!chosen) {
    const looked = list.map((c) => `  ${c.file} (${c.why})`).join('\n');
    throw new LibraryNotFoundError(
      `libmultifrost not found. Set MULTIFROST_LIB to the path of ${LIB_NAME} ` +
        `(MULTIFROST_LIB is not set), install the library (\`make install\` in the repository, ` +
        `then ldconfig), use a package that carries it (npm pack in bindings/node puts it in lib/), ` +
        `or build it with \`cargo build --release\` in the repository. Looked in:\n${looked}`,
      searched,
    );
  }
  try {
    if (chosen.explicit && !fs.existsSync(chosen.file)) throw new Error('no such file');
    if (!lib) lib = koffi.load(chosen.file);
  } catch (e) {
    const hint = chosen.explicit
      ? `MULTIFROST_LIB=${process.env.MULTIFROST_LIB} (only that path is tried while it is set)`
      : `${chosen.file} (${chosen.why}; set MULTIFROST_LIB to use another)`;
    throw new LibraryNotFoundError(`cannot load libmultifrost from ${hint}: ${e.message}`, chosen.explicit ? [chosen.file] : searched);
  }
  try {
    loaded = declare(lib);
  } catch (e) {
    throw errorFor(
      Status.MF_ERR_IO,
      `${chosen.file} does not have the functions this binding needs (${e.message}); ` +
        `it is probably older than the binding: rebuild it, or point MULTIFROST_LIB at a current build`,
    );
  }
  loaded.path = chosen.file;
  return loaded;
}

function declare(lib) {
  // Opaque handles: koffi keeps their C type, so a worker can never be passed where a parent is expected.
  koffi.opaque('mf_parent');
  koffi.opaque('mf_worker');
  koffi.opaque('mf_options');
  koffi.opaque('mf_queue');
  koffi.opaque('mf_reply');
  koffi.opaque('mf_stream');
  const buffer = koffi.struct('mf_buffer', { data: 'void *', len: 'size_t' });
  const event = koffi.struct('mf_event', {
    token: 'uint64_t',
    status: 'int',
    result: 'void *',
    result_len: 'size_t',
    error_message: 'const char *',
  });
  const incoming = koffi.struct('mf_incoming', {
    function: 'const char *',
    args: 'void *',
    args_len: 'size_t',
    reply: 'mf_reply *',
  });
  const f = (proto) => lib.func(proto);
  return {
    koffi,
    event,
    incoming,
    buffer,
    version: f('const char *mf_version(void)'),
    lastError: f('const char *mf_last_error(void)'),
    statusName: f('const char *mf_status_name(int status)'),
    stringFree: f('void mf_string_free(void *s)'),
    // libc's, found through the library's own dependencies: a copy out of
    // library memory costs one foreign call instead of an external view.
    // The source is an address (a number), as read out of library memory.
    memcpy: f('void *memcpy(void *dst, uintptr_t src, size_t n)'),
    dup: f('int dup(int fd)'),

    optionsNew: f('mf_options *mf_options_new(void)'),
    optionsFree: f('void mf_options_free(mf_options *o)'),
    optionsSetDefaultTimeout: f('int mf_options_set_default_timeout(mf_options *o, int64_t ms)'),
    optionsSetNamespace: f('int mf_options_set_namespace(mf_options *o, const char *ns)'),
    optionsSetHeartbeat: f(
      'int mf_options_set_heartbeat(mf_options *o, uint32_t interval_ms, uint32_t timeout_ms, uint32_t max_misses)',
    ),
    optionsSetBreaker: f('int mf_options_set_breaker(mf_options *o, uint32_t threshold, uint32_t cooldown_ms)'),
    optionsSetBreakerCountsRemoteErrors: f(
      'int mf_options_set_breaker_counts_remote_errors(mf_options *o, bool on)',
    ),
    optionsSetAutoRestart: f('int mf_options_set_auto_restart(mf_options *o, uint32_t max_restarts)'),
    optionsSetStartTimeout: f('int mf_options_set_start_timeout(mf_options *o, int64_t ms)'),
    optionsSetConnectTimeout: f('int mf_options_set_connect_timeout(mf_options *o, int64_t ms)'),
    optionsSetShutdownGrace: f('int mf_options_set_shutdown_grace(mf_options *o, int64_t ms)'),
    optionsSetName: f('int mf_options_set_name(mf_options *o, const char *name)'),
    optionsSetBindHost: f('int mf_options_set_bind_host(mf_options *o, const char *host)'),
    optionsSetMaxMessageSize: f('int mf_options_set_max_message_size(mf_options *o, int64_t bytes)'),
    optionsSetPrivateLink: f('int mf_options_set_private_link(mf_options *o, bool on)'),
    optionsSetCancelGrace: f('int mf_options_set_cancel_grace(mf_options *o, int64_t ms)'),
    optionsSetStreamCredit: f('int mf_options_set_stream_credit(mf_options *o, uint32_t n)'),
    optionsSetWorkers: f('int mf_options_set_workers(mf_options *o, uint32_t n)'),
    optionsSetMaxCallsPerWorker: f('int mf_options_set_max_calls_per_worker(mf_options *o, uint64_t n)'),

    // The _ex forms hand the error text back (the blocking call runs on a
    // pool thread, whose mf_last_error the JS thread cannot read).
    spawnEx: f(
      'int mf_spawn_ex(const char *program, const char **args, const mf_options *opts, _Out_ void **error, _Out_ mf_parent **out)',
    ),
    connectEx: f('int mf_connect_ex(const char *target, const mf_options *opts, _Out_ void **error, _Out_ mf_parent **out)'),
    cancel: f('int mf_cancel(mf_parent *p, uint64_t call_id)'),
    parentStatsJson: f('void *mf_parent_stats_json(const mf_parent *p)'),
    parentClose: f('void mf_parent_close(mf_parent *p)'),

    queueNew: f('mf_queue *mf_queue_new(void)'),
    queueClose: f('void mf_queue_close(mf_queue *q)'),
    queueNext: f('int mf_queue_next(mf_queue *q, int64_t timeout_ms, mf_event *events, size_t capacity, size_t *out)'),
    queueFd: f('int mf_queue_fd(mf_queue *q, _Out_ int *out)'),
    callQueued: f(
      'int mf_call_queued(mf_parent *p, const char *function, const uint8_t *args, size_t args_len, int64_t timeout_ms, mf_queue *q, uint64_t token)',
    ),
    callQueuedStart: f(
      'int mf_call_queued_start(mf_parent *p, const char *function, const uint8_t *args, size_t args_len, int64_t timeout_ms, mf_queue *q, uint64_t token, _Out_ uint64_t *call_id)',
    ),

    streamOpen: f(
      'int mf_stream_open(mf_parent *p, const char *function, const uint8_t *args, size_t args_len, int64_t timeout_ms, _Out_ mf_stream **out)',
    ),
    // Blocks unless its wait is 0: called directly with 0, otherwise only
    // through koffi's async form (./stream). The _ex form, so that the text
    // of a failure is the same on either thread.
    streamNextEx: f(
      'int mf_stream_next_ex(mf_stream *s, int64_t timeout_ms, _Out_ mf_buffer *item, _Out_ bool *end, _Out_ void **error)',
    ),
    streamCancel: f('int mf_stream_cancel(mf_stream *s)'),
    streamClose: f('void mf_stream_close(mf_stream *s)'),
    bufferFree: f('void mf_buffer_free(mf_buffer buffer)'),

    workerNew: f('int mf_worker_new(const char *service_id, _Out_ mf_worker **out)'),
    workerRegisterPull: f('int mf_worker_register_pull(mf_worker *w, const char *name)'),
    workerSetNamespace: f('int mf_worker_set_namespace(mf_worker *w, const char *ns)'),
    workerSetHandleSignals: f('int mf_worker_set_handle_signals(mf_worker *w, bool on)'),
    workerStart: f('int mf_worker_start(mf_worker *w)'),
    workerNext: f('int mf_worker_next(mf_worker *w, int64_t timeout_ms, mf_incoming *out)'),
    workerStop: f('int mf_worker_stop(mf_worker *w)'),
    workerFree: f('void mf_worker_free(mf_worker *w)'),
    replyOk: f('int mf_reply_ok(mf_reply *r, const uint8_t *result, size_t len)'),
    replyError: f('int mf_reply_error(mf_reply *r, const char *message)'),
    // Blocks while the caller has no credit: only through koffi's async form (./child).
    replyYield: f('int mf_reply_yield(mf_reply *r, const uint8_t *item, size_t len)'),
    replyCancelled: f('bool mf_reply_cancelled(const mf_reply *r)'),
    replyOnCancelQueue: f('int mf_reply_on_cancel_queue(mf_reply *r, mf_queue *q, uint64_t token)'),
  };
}

/** Copies `len` bytes of library memory at `src` (an address, or a koffi
 * pointer) into a Buffer the JS side owns. */
function copyBytes(lib, src, len) {
  const out = Buffer.allocUnsafe(Number(len));
  if (out.length > 0) lib.memcpy(out, typeof src === 'number' ? src : Number(koffi.address(src)), out.length);
  return out;
}

/** Reads and frees a `char *` the library handed over. */
function takeString(lib, ptr) {
  if (!ptr) return null;
  try {
    return koffi.decode(ptr, 'char', -1);
  } finally {
    lib.stringFree(ptr);
  }
}

/** The library's text for the last failure of a *synchronous* call on this
 * thread (never use it after an async call: those run on other threads). */
function lastError(lib, status) {
  const text = lib.lastError();
  return text || `${lib.statusName(status)}`;
}

module.exports = { native, libraryPath, candidates, copyBytes, takeString, lastError, koffi };
