// Type declarations for the `multifrost` package (Node binding of libmultifrost).

/** mf_status values of the C API; they never change meaning. */
export declare const Status: Readonly<{
  MF_OK: 0;
  MF_ERR_INVALID_ARGUMENT: 1;
  MF_ERR_TIMEOUT: 2;
  MF_ERR_REMOTE: 3;
  MF_ERR_CIRCUIT_OPEN: 4;
  MF_ERR_WORKER_EXITED: 5;
  MF_ERR_NOT_FOUND: 6;
  MF_ERR_ALREADY_RUNNING: 7;
  MF_ERR_PROTOCOL: 8;
  MF_ERR_IO: 9;
  MF_ERR_CLOSED: 10;
  MF_ERR_PANIC: 11;
  MF_ERR_CANCELLED: 12;
  MF_ERR_NO_SUCH_FUNCTION: 13;
}>;

/** Any value that crosses the wire: nil, bool, numbers (BigInt beyond ±2^53), strings, bytes, arrays, maps. */
export type Value =
  | null
  | undefined
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | Value[]
  | { [key: string]: Value };

/** Base class of every error the package throws; `status` is the mf_status, `code` its name. */
export declare class MultifrostError extends Error {
  constructor(message: string, status?: number);
  readonly status: number;
  readonly code: string;
}
/** libmultifrost could not be found or loaded (not a library status): the
 * message names MULTIFROST_LIB and every place looked at. */
export declare class LibraryNotFoundError extends Error {
  readonly code: 'ERR_MULTIFROST_LIBRARY_NOT_FOUND';
  /** The paths tried, in order. */
  readonly searched: string[];
}
/** A value the core refused: an option out of range, bad text (MF_ERR_INVALID_ARGUMENT). */
export declare class InvalidArgumentError extends MultifrostError {}
/** A call, the start-up or the connect wait ran out of time (MF_ERR_TIMEOUT). */
export declare class TimeoutError extends MultifrostError {}
/** The worker's handler failed; `message` is the worker's text ("RangeError: ...") (MF_ERR_REMOTE). */
export declare class RemoteCallError extends MultifrostError {
  /** The error type named at the start of the worker's text, if any. */
  readonly remoteType: string | null;
  readonly functionName: string | undefined;
}
/** The circuit breaker is open: refused without being sent (MF_ERR_CIRCUIT_OPEN). */
export declare class CircuitOpenError extends MultifrostError {}
/** The spawned worker exited or was stopped (hung, or a cancelled handler ran past the
 * cancel grace); the message has its exit code or signal and last stderr lines (MF_ERR_WORKER_EXITED). */
export declare class WorkerExitedError extends MultifrostError {}
/** A service id was not found in the registry (MF_ERR_NOT_FOUND). */
export declare class NotFoundError extends MultifrostError {}
/** A worker with this service id is already running (MF_ERR_ALREADY_RUNNING). */
export declare class AlreadyRunningError extends MultifrostError {}
/** The peer sent something that is not valid protocol, or a message over the size limit (MF_ERR_PROTOCOL). */
export declare class ProtocolError extends MultifrostError {}
/** An operating-system or socket failure, e.g. a program that cannot be started (MF_ERR_IO). */
export declare class IoError extends MultifrostError {}
/** The worker was stopped; also calls in flight at stop() (MF_ERR_CLOSED). */
export declare class ClosedError extends MultifrostError {}
/** An internal error of the library, caught at its boundary (MF_ERR_PANIC). */
export declare class PanicError extends MultifrostError {}
/** The call's AbortSignal aborted (MF_ERR_CANCELLED); `cause` is the signal's reason. */
export declare class CancelledError extends MultifrostError {
  readonly cause: unknown;
  readonly functionName: string | undefined;
}
/** The worker has no function of that name (MF_ERR_NO_SUCH_FUNCTION). */
export declare class NoSuchFunctionError extends MultifrostError {
  readonly functionName: string | undefined;
}

/** Options of a parent (times in milliseconds). Every field is optional. */
export interface ParentOptions {
  /** Default call timeout (30000). */
  timeout?: number;
  /** Sent with every call; workers drop other namespaces ('default'). */
  namespace?: string;
  /** `false` turns heartbeats off; defaults 5000 / 3000 / 3. */
  heartbeat?: false | { interval?: number; timeout?: number; maxMisses?: number };
  /** Consecutive failures that open the breaker (5), probe after `cooldown` (5000). */
  breaker?: { threshold?: number; cooldown?: number; countRemoteErrors?: boolean };
  /** Restart an exited spawned worker up to N times (true = 5; default off). */
  autoRestart?: boolean | number;
  /** How long start() waits for a spawned worker's first answer (10000). */
  startTimeout?: number;
  /** How long connect() looks for the service and its answer (5000). */
  connectTimeout?: number;
  /** SIGTERM → SIGKILL delay when stopping a spawned worker (2000). */
  shutdownGrace?: number;
  /** The worker's name in log lines (default: the script's file name). */
  name?: string;
  /** Interface of the spawn-mode port ('127.0.0.1'). */
  bindHost?: string;
  /** Largest message accepted from the worker, bytes (64 MiB). */
  maxMessageSize?: number;
  /** How long a cancelled or timed-out call's handler may run on before its spawned worker is stopped (2000; 0 = never). */
  cancelGrace?: number;
  /** Offer a spawned worker the private link (default on); off makes a spawned worker of this library use the protocol's TCP connection like any other worker. */
  privateLink?: boolean;
  /** How many items of a stream the worker may send ahead of what the consumer took (16). */
  streamCredit?: number;
  /** How many copies of the spawned program run behind this one parent (1; at most 256): a pool. Each call goes to the copy with the fewest calls in flight; each copy is supervised and restarted on its own; the breaker judges the pool as a whole. Spawn only. */
  workers?: number;
  /** Replace a spawned worker after this many calls (0 = never): it finishes its calls in flight and is started again; no call fails. */
  maxCallsPerWorker?: number;
  /** Extra arguments for the spawned program (after `script --worker` for scripts). */
  args?: string[];
}

export interface CallOptions {
  /** Milliseconds; undefined or 0 = the worker's default timeout, negative or Infinity = no limit. */
  timeout?: number;
  /** Aborting it cancels the call: it rejects with CancelledError (`cause`: the signal's reason) and the worker's handler is told. An aborted signal rejects at once without sending. */
  signal?: AbortSignal;
}

/** `proxy.add(1, 2)` calls the remote `add`; `proxy.withOptions({ timeout, signal })` sets options for calls through it. */
export type CallProxy = {
  withOptions(options: CallOptions): CallProxy;
} & {
  [name: string]: (...args: any[]) => Promise<any>;
};

/**
 * A stream's items, for `for await`. Leaving the loop early (break, throw:
 * `return()`) closes the stream and the handler is told. Items come in
 * order; the call's error rejects the next after the items sent before it.
 */
export interface Stream<T = any> extends AsyncIterableIterator<T> {
  next(): Promise<IteratorResult<T, undefined>>;
  return(value?: any): Promise<IteratorResult<T, any>>;
}

/** `proxy.count(5)` streams the remote `count` (`for await (const x of proxy.count(5))`); `withOptions({ timeout, signal })` as for calls: the timeout limits the wait for each item, the signal closes the stream (the next rejects with CancelledError). */
export type StreamProxy = {
  withOptions(options: CallOptions): StreamProxy;
} & {
  [name: string]: (...args: any[]) => Stream;
};

/** One worker of a parent (of a pool, one entry per copy). */
export interface WorkerMetrics {
  pid: number;
  in_flight: number;
  requests_total: number;
  restarts: number;
  /** Times this worker was replaced after maxCallsPerWorker calls. */
  recycles: number;
  healthy: boolean;
  heartbeat_rtt_last_ms: number;
}

/** Parent metrics, from the core's stats JSON; of a pool, the counters are totals over its workers. */
export interface Metrics {
  requests_total: number;
  requests_success: number;
  requests_failed: number;
  remote_errors: number;
  timeouts: number;
  cancels: number;
  /** Spawned workers stopped because a cancelled or timed-out call's handler ran past the cancel grace. */
  escalations: number;
  /** Spawned workers stopped after missing maxMisses heartbeats in a row. */
  hangs: number;
  in_flight: number;
  latency_avg_ms: number;
  latency_p50_ms: number;
  latency_p95_ms: number;
  latency_p99_ms: number;
  heartbeat_rtt_last_ms: number;
  heartbeat_rtt_avg_ms: number;
  heartbeat_misses: number;
  healthy: boolean;
  circuit_state: 'closed' | 'open' | 'half_open';
  circuit_trips: number;
  consecutive_failures: number;
  restarts: number;
  /** Workers replaced after maxCallsPerWorker calls. */
  recycles: number;
  dropped_malformed: number;
  dropped_unknown: number;
  /** The first worker's pid. */
  worker_pid: number;
  /** One entry per worker (one unless the `workers` option). */
  workers: WorkerMetrics[];
  /** 'link' when the worker is reached over the private link, 'zmq' otherwise. */
  transport: 'link' | 'zmq';
  [key: string]: unknown;
}

/** The runtime API of a ParentWorker: start, call, stop. */
export declare class ParentHandle {
  readonly worker: ParentWorker;
  /** `await handle.call.add(1, 2)` */
  readonly call: CallProxy;
  /** `for await (const x of handle.stream.count(5))` */
  readonly stream: StreamProxy;
  /** Spawns (or connects); resolves once the worker answered a heartbeat. Idempotent. */
  start(): Promise<void>;
  /** Calls in flight reject with ClosedError; a spawned worker is stopped and reaped. Idempotent. */
  stop(): Promise<void>;
  callFunction<T = any>(name: string, args?: Value[], options?: CallOptions): Promise<T>;
  streamFunction<T = any>(name: string, args?: Value[], options?: CallOptions): Stream<T>;
}

/** One worker: how to reach it and, once started, the connection. */
export declare class ParentWorker {
  /**
   * A worker to spawn (nothing runs until start()). With an executable:
   * `executable script --worker`; alone: the program itself (.js runs with
   * Node, .py with python3).
   */
  static spawn(script: string, executable?: string | null, options?: ParentOptions): ParentWorker;
  static spawn(script: string, options: ParentOptions): ParentWorker;
  /** Connects to a running worker by service id or `tcp://host:port`; resolves started. A number is the connect timeout. */
  static connect(target: string, options?: ParentOptions | number): Promise<ParentWorker>;

  handle(): ParentHandle;
  readonly call: CallProxy;
  readonly stream: StreamProxy;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Same as stop(). */
  close(): Promise<void>;
  callFunction<T = any>(name: string, args?: Value[], options?: CallOptions): Promise<T>;
  streamFunction<T = any>(name: string, args?: Value[], options?: CallOptions): Stream<T>;

  readonly state: 'new' | 'starting' | 'running' | 'stopping' | 'stopped';
  /** null unless running. */
  readonly metrics: Metrics | null;
  readonly isHealthy: boolean;
  readonly circuitOpen: boolean;
  readonly lastHeartbeatRttMs: number | null;
  /** The spawned worker's pid (of a pool, the first one's; 0 in connect mode), null unless running. */
  readonly pid: number | null;
}

export interface ChildOptions {
  /** Connect mode: register under this id (or bind a `tcp://host:port`). Default: spawn mode. */
  serviceId?: string;
  /** The namespace served ('default'). */
  namespace?: string;
  /** SIGINT/SIGTERM stop serving and run() resolves (default true). */
  handleSignals?: boolean;
  /**
   * Default true in spawn mode: when the parent's shutdown or a signal ends
   * serving while handlers are still running (their answers can no longer be
   * sent), exit the process 200 ms after run() resolved instead of waiting for them.
   */
  exitOnStop?: boolean;
  /** How many calls may be in their handlers at once (Infinity); the others wait in the core,
   * where one cancelled or out of time before its turn is answered without running. */
  concurrency?: number;
}

/**
 * Subclass it and add methods; `new MyWorker().run()` serves them. Methods
 * starting with `_` are private. Methods may be async.
 */
export declare class ChildWorker {
  constructor(serviceIdOrOptions?: string | ChildOptions);
  /** Serves until stop(), a parent's shutdown, SIGINT or SIGTERM; then resolves. */
  run(): Promise<void>;
  /** Stops serving; run() resolves. */
  stop(): void;
  /** The public methods a parent can call. */
  listFunctions(): string[];
  /**
   * The AbortSignal of the call whose handler is running; aborts when the caller
   * cancels it or its time runs out (reason: a CancelledError). Read it before the
   * handler's first `await` (`const { signal } = this;`); later it throws.
   */
  readonly signal: AbortSignal;
}

/** Path of the libmultifrost that would be loaded (MULTIFROST_LIB, lib/ in the package, the repository build), or null. */
export declare function libraryPath(): string | null;
/** Version of the loaded libmultifrost. */
export declare function libraryVersion(): string;
