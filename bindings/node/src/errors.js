'use strict';
// Error classes: one per status a caller may want to catch, each with
// `.status` (the mf_status number) and `.code` (its name, e.g. 'MF_ERR_TIMEOUT').

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

/** The call, the start-up or the connect wait ran out of time. */
class TimeoutError extends MultifrostError {
  constructor(message) {
    super(message, Status.MF_ERR_TIMEOUT);
  }
}

/** The circuit breaker is open: the call was refused without being sent. */
class CircuitOpenError extends MultifrostError {
  constructor(message) {
    super(message, Status.MF_ERR_CIRCUIT_OPEN);
  }
}

/** The spawned worker exited (the message has its exit code or signal). */
class WorkerExitedError extends MultifrostError {
  constructor(message) {
    super(message, Status.MF_ERR_WORKER_EXITED);
  }
}

/** The handle was stopped (also: calls in flight when it was stopped). */
class ClosedError extends MultifrostError {
  constructor(message) {
    super(message, Status.MF_ERR_CLOSED);
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

/** The error object for a failed status and its text. */
function errorFor(status, message, functionName) {
  switch (status) {
    case Status.MF_ERR_REMOTE:
      return new RemoteCallError(message, functionName);
    case Status.MF_ERR_TIMEOUT:
      return new TimeoutError(message);
    case Status.MF_ERR_CIRCUIT_OPEN:
      return new CircuitOpenError(message);
    case Status.MF_ERR_WORKER_EXITED:
      return new WorkerExitedError(message);
    case Status.MF_ERR_CLOSED:
      return new ClosedError(message);
    case Status.MF_ERR_NOT_FOUND:
      return new NotFoundError(message);
    case Status.MF_ERR_ALREADY_RUNNING:
      return new AlreadyRunningError(message);
    default:
      return new MultifrostError(message, status);
  }
}

module.exports = {
  Status,
  statusName,
  errorFor,
  MultifrostError,
  LibraryNotFoundError,
  RemoteCallError,
  TimeoutError,
  CircuitOpenError,
  WorkerExitedError,
  ClosedError,
  NotFoundError,
  AlreadyRunningError,
};
