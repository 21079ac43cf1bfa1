'use strict';
// multifrost for Node: call functions in worker processes as if they were
// local, over libmultifrost (one Rust core for every language).

const { ParentWorker, ParentHandle } = require('./src/parent');
const { ChildWorker } = require('./src/child');
const errors = require('./src/errors');
const { native, libraryPath } = require('./src/native');

/** The version of the loaded libmultifrost ("MAJOR.MINOR.PATCH"). */
function libraryVersion() {
  return native().version();
}

module.exports = {
  ParentWorker,
  ParentHandle,
  ChildWorker,
  MultifrostError: errors.MultifrostError,
  LibraryNotFoundError: errors.LibraryNotFoundError,
  InvalidArgumentError: errors.InvalidArgumentError,
  TimeoutError: errors.TimeoutError,
  RemoteCallError: errors.RemoteCallError,
  CircuitOpenError: errors.CircuitOpenError,
  WorkerExitedError: errors.WorkerExitedError,
  NotFoundError: errors.NotFoundError,
  AlreadyRunningError: errors.AlreadyRunningError,
  ProtocolError: errors.ProtocolError,
  IoError: errors.IoError,
  ClosedError: errors.ClosedError,
  PanicError: errors.PanicError,
  CancelledError: errors.CancelledError,
  NoSuchFunctionError: errors.NoSuchFunctionError,
  Status: errors.Status,
  libraryPath,
  libraryVersion,
};
