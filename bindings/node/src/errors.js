'use strict';
// Error classes: one per failed status, each with `.status` (the mf_status
// number) and `.code` (its name, e.g. 'MF_ERR_TIMEOUT'). Their messages are
// the core's own text, so the same event reads the same in every binding.

/** mf_status values (include/multifrost.h). They never change meaning. */
const Status = Object.freeze({
  MF_OK: 0,
  MF_ERR_INVALID_ARGUMENT: 1,
  MF_ERR_TIMEOUT: 2,
  MF_ERR_REMOTE: 3,
  MF_ERR_CIRCUIT_OPEN: 4,
  MF_ERR_WORKER_EXITED: 5,
  MF_ERR_NOT_FOUND: 6,
  MF_ERR_ALREADY_RUNNING: 7,
  MF_ERR_PROTOCOL: 8,
  MF_ERR_IO: 9,
  MF_ERR_CLOSED: 10,
  MF_ERR_PANIC: 11,
  MF_ERR_CANCELLED: 12,
  MF_ERR_NO_SUCH_FUNCTION: 13,
});

const NAMES = Object.fromEntries(Object.entries(Status).map(([k, v]) => [v, k]));

function statusName(status) {
  return NAMES[status] || `MF_STATUS_${status}`;
}

/** Base class of every error this package throws. */
class MultifrostError extends Error {
  constructor(message, status = Status.MF_ERR_INVALID_ARGUMENT) {
    super(message);
    this.name = new.target.name;
    this.status = status;
    this.code = statusName(status);
  }
}

/** A NULL, bad text, malformed JSON or msgpack, or a value out of range
 * (e.g. an option the core refuses). */
class InvalidArgumentError extends MultifrostError {
  constructor(message) {
    super(message, Status.MF_ERR_INVALID_ARGUMENT);
  }
}

/** The call, the start-up or the connect wait ran out of time. */
class TimeoutError extends MultifrostError {
  constructor(message) {
    super(message, Status.MF_ERR_TIMEOUT);
  }
}

/** The worker's handler failed; `message` is the worker's text, e.g.
 * "RangeError: factorial of a negative number". */
class RemoteCallError extends MultifrostError {
  constructor(message, functionName) {
    super(message, Status.MF_ERR_REMOTE);
    /** The error type the worker named ("RangeError"), if its text has one. */
    const m = /^([A-Za-z_][\w.]*): /.exec(message);
    this.remoteType = m ? m[1] : null;
    this.functionName = functionName;
  }
}

/** The circuit breaker is open: the call was refused without being sent. */
class CircuitOpenError extends MultifrostError {
  constructor(message) {
    super(message, Status.MF_ERR_CIRCUIT_OPEN);
  }
}

/** The spawned worker exited (the message has its exit code or signal and
 * its last stderr lines), also when it was stopped as hung. */
class WorkerExitedError extends MultifrostError {
  constructor(message) {
    super(message, Status.MF_ERR_WORKER_EXITED);
  }
}

/** A service id was not found in the registry. */
class NotFoundError extends MultifrostError {
  constructor(message) {
    super(message, Status.MF_ERR_NOT_FOUND);
  }
}

/** A worker with this service id is already running. */
class AlreadyRunningError extends MultifrostError {
  constructor(message) {
    super(message, Status.MF_ERR_ALREADY_RUNNING);
  }
}

/** The peer sent something that is not valid protocol (or too large). */
class ProtocolError extends MultifrostError {
  constructor(message) {
    super(message, Status.MF_ERR_PROTOCOL);
  }
}

/** An operating-system or socket failure (e.g. a program that cannot be started). */
class IoError extends MultifrostError {
  constructor(message) {
    super(message, Status.MF_ERR_IO);
  }
}

/** The handle was stopped (also: calls in flight when it was stopped). */
class ClosedError extends MultifrostError {
  constructor(message) {
    super(message, Status.MF_ERR_CLOSED);
  }
}

/** An internal error of the library, caught at its boundary. */
class PanicError extends MultifrostError {
  constructor(message) {
    super(message, Status.MF_ERR_PANIC);
  }
}

/** The caller cancelled the call (its AbortSignal aborted); `cause` is the
 * signal's reason. */
class CancelledError extends MultifrostError {
  constructor(message, functionName, options) {
    super(message, Status.MF_ERR_CANCELLED);
    this.functionName = functionName;
    if (options && 'cause' in options) this.cause = options.cause;
  }
}

/** The worker has no function of that name; the message names it. */
class NoSuchFunctionError extends MultifrostError {
  constructor(message, functionName) {
    super(message, Status.MF_ERR_NO_SUCH_FUNCTION);
    this.functionName = functionName;
  }
}

/** libmultifrost itself could not be found or loaded: not a status of the
 * library (it never ran), so not a MultifrostError. The message names
 * MULTIFROST_LIB and every place looked at; `searched` lists them. */
class LibraryNotFoundError extends Error {
  constructor(message, searched) {
    super(message);
    this.name = 'LibraryNotFoundError';
    this.code = 'ERR_MULTIFROST_LIBRARY_NOT_FOUND';
    this.searched = searched;
  }
}

const CLASSES = {
  [Status.MF_ERR_INVALID_ARGUMENT]: InvalidArgumentError,
  [Status.MF_ERR_TIMEOUT]: TimeoutError,
  [Status.MF_ERR_REMOTE]: RemoteCallError,
  [Status.MF_ERR_CIRCUIT_OPEN]: CircuitOpenError,
  [Status.MF_ERR_WORKER_EXITED]: WorkerExitedError,
  [Status.MF_ERR_NOT_FOUND]: NotFoundError,
  [Status.MF_ERR_ALREADY_RUNNING]: AlreadyRunningError,
  [Status.MF_ERR_PROTOCOL]: ProtocolError,
  [Status.MF_ERR_IO]: IoError,
  [Status.MF_ERR_CLOSED]: ClosedError,
  [Status.MF_ERR_PANIC]: PanicError,
  [Status.MF_ERR_CANCELLED]: CancelledError,
  [Status.MF_ERR_NO_SUCH_FUNCTION]: NoSuchFunctionError,
};

/** The error object for a failed status and its text (the core's). A status
 * this binding does not know yet (a newer library) is a plain MultifrostError. */
function errorFor(status, message, functionName) {
  const Class = CLASSES[status];
  return Class ? new Class(message, functionName) : new MultifrostError(message, status);
}

module.exports = {
  Status,
  statusName,
  errorFor,
  MultifrostError,
  LibraryNotFoundError,
  InvalidArgumentError,
  TimeoutError,
  RemoteCallError,
  CircuitOpenError,
  WorkerExitedError,
  NotFoundError,
  AlreadyRunningError,
  ProtocolError,
  IoError,
  ClosedError,
  PanicError,
  CancelledError,
  NoSuchFunctionError,
};
