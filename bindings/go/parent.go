package multifrost

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// Parent is a connection to one worker, spawned (Spawn) or reached
// (Connect). It is safe for concurrent use by any number of goroutines.
// Close it when done; a finalizer closes a Parent that is dropped unclosed.
type Parent struct {
	*handle
	done   *completions // apart, so the queue's goroutine does not keep the Parent alive
	label  string
	closed chan struct{} // closed when Close has finished
	once   sync.Once
}

// handle is the library's parent handle. mu orders the start of calls
// against Close: the C API forbids mf_parent_close concurrently with them.
type handle struct {
	mu sync.RWMutex
	c  *C.mf_parent // nil once closed
}

// Stats are the parent's metrics (mf_parent_stats_json).
type Stats struct {
	Worker              string  `json:"worker"`
	RequestsTotal       uint64  `json:"requests_total"`
	RequestsSuccess     uint64  `json:"requests_success"`
	RequestsFailed      uint64  `json:"requests_failed"`
	RemoteErrors        uint64  `json:"remote_errors"`
	Timeouts            uint64  `json:"timeouts"`
	Cancels             uint64  `json:"cancels"`
	Escalations         uint64  `json:"escalations"` // workers stopped: a cancelled call's handler ran past Options.CancelGrace
	Hangs               uint64  `json:"hangs"`       // workers stopped: Heartbeat.MaxMisses missed in a row
	InFlight            int64   `json:"in_flight"`
	LatencyAvgMs        float64 `json:"latency_avg_ms"`
	LatencyP50Ms        float64 `json:"latency_p50_ms"`
	LatencyP95Ms        float64 `json:"latency_p95_ms"`
	LatencyP99Ms        float64 `json:"latency_p99_ms"`
	HeartbeatRTTLastMs  float64 `json:"heartbeat_rtt_last_ms"`
	HeartbeatRTTAvgMs   float64 `json:"heartbeat_rtt_avg_ms"`
	HeartbeatMisses     uint64  `json:"heartbeat_misses"`
	Healthy             bool    `json:"healthy"`
	CircuitState        string  `json:"circuit_state"` // "closed", "open" or "half_open"
	CircuitTrips        uint64  `json:"circuit_trips"`
	ConsecutiveFailures uint64  `json:"consecutive_failures"`
	Restarts            uint64  `json:"restarts"`
	DroppedMalformed    uint64  `json:"dropped_malformed"`
	DroppedUnknown      uint64  `json:"dropped_unknown"`
	WorkerPID           int     `json:"worker_pid"` // 0 when there is none
	Transport           string  `json:"transport"`  // "link" over the private link, else "zmq"
	// Recycles counts workers replaced after Options.MaxCallsPerWorker calls.
	Recycles uint64 `json:"recycles"`
	// Workers has one entry per worker of the pool (Options.Workers), in
	// a fixed order: a restarted or recycled worker keeps its place.
	Workers []WorkerStats `json:"workers"`
}

// WorkerStats are one pool worker's metrics (Stats.Workers).
type WorkerStats struct {
	PID                int     `json:"pid"` // 0 while it is not running
	InFlight           int64   `json:"in_flight"`
	RequestsTotal      uint64  `json:"requests_total"`
	Restarts           uint64  `json:"restarts"`
	Recycles           uint64  `json:"recycles"`
	Healthy            bool    `json:"healthy"`
	HeartbeatRTTLastMs float64 `json:"heartbeat_rtt_last_ms"`
}

// pendingCall is what a call's cgo.Handle stands for: the channel its
// completion is delivered to (buffered, so a late completion never blocks).
type pendingCall struct {
	done chan completion
}

type completion struct {
	status  Status
	data    []byte
	message string
}

type startResult struct {
	c   *C.mf_parent
	err error
}

// Spawn starts program (a path, or a name looked up in PATH) with args as a
// worker and returns once it has answered a heartbeat. A script worker is
// started through its interpreter: Spawn(ctx, "python3", []string{"worker.py", "--worker"}, nil).
//
// ctx bounds the wait (its deadline caps Options.StartTimeout); if ctx ends
// first, Spawn returns its error and the worker, once started, is stopped.
// The worker is stopped by Close, or when this process dies.
func Spawn(ctx context.Context, program string, args []string, opts *Options) (*Parent, error) {
	op := "spawn " + program
	return start(ctx, op, program, opts, func(o *C.mf_options) startResult {
		cprog := C.CString(program)
		defer C.free(unsafe.Pointer(cprog))
		cargs := make([]*C.char, len(args)+1) // NULL-terminated, in C memory
		argv := (**C.char)(C.calloc(C.size_t(len(cargs)), C.size_t(unsafe.Sizeof(cargs[0]))))
		defer C.free(unsafe.Pointer(argv))
		slots := unsafe.Slice(argv, len(cargs))
		for i, a := range args {
			slots[i] = C.CString(a)
			defer C.free(unsafe.Pointer(slots[i]))
		}
		var out *C.mf_parent
		var cerr *C.char
		if st := C.mfgo_spawn(cprog, argv, o, &out, &cerr); st != C.MF_OK {
			return startResult{err: newError(Status(st), op, takeError(cerr))}
		}
		return startResult{c: out}
	})
}

// Connect reaches a running worker: target is a service id (looked up in
// $HOME/.multifrost/services.json) or an endpoint "tcp://host:port". It
// returns once the worker has answered a heartbeat. ctx bounds the wait
// (its deadline caps Options.ConnectTimeout). Errors: ErrNotFound (no live
// service with that id), ErrTimeout (nobody answered in time).
func Connect(ctx context.Context, target string, opts *Options) (*Parent, error) {
	op := "connect " + target
	return start(ctx, op, target, opts, func(o *C.mf_options) startResult {
		ct := C.CString(target)
		defer C.free(unsafe.Pointer(ct))
		var out *C.mf_parent
		var cerr *C.char
		if st := C.mfgo_connect(ct, o, &out, &cerr); st != C.MF_OK {
			return startResult{err: newError(Status(st), op, takeError(cerr))}
		}
		return startResult{c: out}
	})
}

// start runs a blocking mf_spawn/mf_connect so that ctx can end the wait.
func start(ctx context.Context, op, label string, opts *Options, run func(*C.mf_options) startResult) (*Parent, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	if err := ctx.Err(); err != nil {
		return nil, contextError(op, err, "")
	}
	left, hasDeadline := untilDeadline(ctx)
	if hasDeadline && left <= 0 {
		return nil, contextError(op, context.DeadlineExceeded, "")
	}
	o, err := opts.cOptions(left, op)
	if err != nil {
		return nil, err
	}
	done := make(chan startResult, 1)
	go func() {
		defer C.mf_options_free(o)
		done <- run(o)
	}()
	select {
	case r := <-done:
		if r.err != nil {
			if e, ok := r.err.(*Error); ok && e.Status == StatusTimeout && hasDeadline && time.Now().After(deadlineOf(ctx)) {
				e.ctxErr = context.DeadlineExceeded
			}
			return nil, r.err
		}
		p, err := newParent(r.c, label)
		if err != nil {
			C.mf_parent_close(r.c)
			return nil, err
		}
		return p, nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.c != nil {
				C.mf_parent_close(r.c)
			}
		}()
		return nil, contextError(op, ctx.Err(), "")
	}
}

func deadlineOf(ctx context.Context) time.Time {
	dl, _ := ctx.Deadline()
	return dl
}

func newParent(c *C.mf_parent, label string) (*Parent, error) {
	done, err := newCompletions()
	if err != nil {
		return nil, err
	}
	p := &Parent{handle: &handle{c: c}, done: done, label: label, closed: make(chan struct{})}
	runtime.SetFinalizer(p, func(p *Parent) {
		// Closing waits for the worker to stop; keep the finalizer
		// goroutine free.
		go p.Close()
	})
	return p, nil
}

// Call calls function on the worker with args (encoded as one msgpack
// array) and decodes its result into result, a pointer (nil discards it).
//
// ctx's end ends the call at once. A cancelled ctx cancels it in the
// library (mf_cancel): Call returns an error matching both ErrCancelled and
// context.Canceled. A deadline is the call's timeout in the library (without
// one, Options.DefaultTimeout applies): a passed one returns an error
// matching both ErrTimeout and context.DeadlineExceeded. Either way the
// worker is told, so a handler that watches its own ctx stops, and the call
// is no circuit-breaker failure.
//
// Errors: *RemoteError (the handler failed; errors.As), ErrNoSuchFunction
// (the worker has no such function), ErrTimeout, ErrCancelled,
// ErrCircuitOpen, ErrWorkerExited, ErrClosed (also for calls in flight
// when Close runs), ErrInvalidArgument (an argument msgpack cannot encode,
// or a string in one that is not UTF-8: pass []byte for bytes; nothing is sent),
// and an error naming the result type when the result cannot be decoded.
func (p *Parent) Call(ctx context.Context, function string, result any, args ...any) error {
	// The caller may hold p only through this call: keep the finalizer
	// from closing it while the call is in flight.
	defer runtime.KeepAlive(p)
	// Named only when an error needs it: building it costs an allocation.
	op := func() string { return "call " + strconv.Quote(function) }
	if ctx == nil {
		ctx = context.Background()
	}
	if err := ctx.Err(); err != nil {
		return contextError(op(), err, "")
	}
	payload, err := encodeArgs(args)
	if err != nil {
		return &Error{Status: StatusInvalidArgument, Op: op(), Message: err.Error()}
	}
	defer payload.release() // the library copies the arguments before returning
	var timeoutMs int64     // 0: the parent's default
	if left, ok := untilDeadline(ctx); ok {
		if left <= 0 {
			return contextError(op(), context.DeadlineExceeded, "")
		}
		timeoutMs = millis(left)
	}
	if strings.IndexByte(function, 0) >= 0 {
		// C would see the name end at the NUL, and call another function.
		return &Error{Status: StatusInvalidArgument, Op: op(), Message: "the function name contains a NUL byte"}
	}

	ptr, n := cBytes(payload.buf.Bytes())
	fn := (*C.char)(unsafe.Pointer(unsafe.StringData(function))) // no Go pointers in it: cgo may take it
	var c completion
	if p.done.inFlight.Load() == 0 && p.done.alone.CompareAndSwap(false, true) {
		c, err = p.callAlone(ctx, op, fn, C.size_t(len(function)), ptr, n, timeoutMs)
		p.done.alone.Store(false)
	} else {
		c, err = p.callShared(ctx, op, fn, C.size_t(len(function)), ptr, n, timeoutMs)
	}
	if err != nil {
		return err
	}
	if c.status != StatusOK {
		return callError(ctx, op(), c, timeoutMs)
	}
	if result == nil {
		return nil
	}
	if err := decodeInto(c.data, result); err != nil {
		return &Error{Status: StatusInvalidArgument, Op: op(),
			Message: fmt.Sprintf("cannot decode the result into %T: %v", result, err)}
	}
	return nil
}

// callError is the error of a call that ended with status c.status.
func callError(ctx context.Context, op string, c completion, timeoutMs int64) error {
	switch {
	case c.status == StatusCancelled && ctx.Err() != nil:
		// This package cancels a call only when its ctx has ended.
		message := c.message
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			message = "" // the ctx's deadline, not a cancel, ended it
		}
		return contextError(op, ctx.Err(), message)
	case c.status == StatusTimeout && timeoutMs > 0:
		// The library's timeout was the ctx deadline, whose own timer
		// may not have fired yet.
		return &Error{Status: StatusTimeout, Op: op, Message: c.message, ctxErr: context.DeadlineExceeded}
	}
	return newError(c.status, op, c.message)
}

// ctxEnded ends call id in the library when its ctx has ended: a
// cancelled ctx cancels it (mf_cancel), whose completion (MF_ERR_CANCELLED,
// or how the call ended if that came first) is queued before mf_cancel
// returns; the worker is told, and the call is no breaker failure. A ctx
// that reached its deadline is left to the library, whose timer for the
// call is that same deadline: the call ends as a timeout, counted as one.
// Once the parent is closed, mf_parent_close ends the call instead.
func (p *Parent) ctxEnded(ctx context.Context, id C.uint64_t, timeoutMs int64) {
	if timeoutMs > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.c != nil {
		C.mf_cancel(p.c, id)
	}
}

// callAlone makes a call while no other is in flight: its completion goes
// to a queue of its own, which this goroutine waits on in the library
// (mf_queue_next), woken by the library's thread with no Go scheduler in
// between; one thread blocked in C is what a lone call costs, and only one
// call at a time goes this way. ctx's end ends the call (ctxEnded, from a
// goroutine context.AfterFunc starts only then), which queues its
// completion and so ends the wait.
func (p *Parent) callAlone(ctx context.Context, op func() string, fn *C.char, fnLen C.size_t,
	args *C.uint8_t, n C.size_t, timeoutMs int64) (completion, error) {
	q := C.mf_queue_new()
	var id C.uint64_t
	var cerr *C.char
	p.mu.RLock()
	if p.c == nil {
		p.mu.RUnlock()
		C.mf_queue_free(q)
		return completion{}, &Error{Status: StatusClosed, Op: op(), Message: "the parent is closed"}
	}
	st := C.mfgo_call_queued_start(p.c, fn, fnLen, args, n, C.int64_t(timeoutMs), q, 0, &id, &cerr)
	p.mu.RUnlock()
	if st != C.MF_OK {
		C.mf_queue_free(q)
		return completion{}, newError(Status(st), op(), takeError(cerr))
	}
	var stop func() bool
	var cancelled chan struct{}
	if ctx.Done() != nil {
		cancelled = make(chan struct{})
		stop = context.AfterFunc(ctx, func() {
			p.ctxEnded(ctx, id, timeoutMs)
			close(cancelled)
		})
	}
	ev := new(C.mf_event) // no Go pointers in it: the library fills it
	st = C.mfgo_queue_wait(q, ev)
	var c completion
	if st == C.MF_OK {
		c = eventCompletion(ev)
	}
	if stop != nil && !stop() {
		<-cancelled // no goroutine of this call outlives it
	}
	C.mf_queue_free(q)
	if st != C.MF_OK {
		// Nothing closes q: every started call is completed once.
		return completion{}, &Error{Status: Status(st), Op: op(), Message: "the call's queue ended without its completion"}
	}
	return c, nil
}

// callShared makes a call while others are in flight: its completion goes
// to the parent's queue, which the queue's goroutine delivers (a cgo.Handle
// of the call's pendingCall is its token). ctx's end ends the call
// (ctxEnded), whose completion then arrives the same way.
func (p *Parent) callShared(ctx context.Context, op func() string, fn *C.char, fnLen C.size_t,
	args *C.uint8_t, n C.size_t, timeoutMs int64) (completion, error) {
	pc := &pendingCall{done: make(chan completion, 1)}
	h := newHandle(pc)
	var id C.uint64_t
	var cerr *C.char
	p.mu.RLock()
	if p.c == nil {
		p.mu.RUnlock()
		deleteHandle(h)
		return completion{}, &Error{Status: StatusClosed, Op: op(), Message: "the parent is closed"}
	}
	p.done.inFlight.Add(1)
	st := C.mfgo_call_queued_start(p.c, fn, fnLen, args, n, C.int64_t(timeoutMs), p.done.q, C.uint64_t(h), &id, &cerr)
	p.mu.RUnlock()
	if st != C.MF_OK {
		// Not started: nothing will be queued.
		p.done.inFlight.Add(-1)
		deleteHandle(h)
		return completion{}, newError(Status(st), op(), takeError(cerr))
	}
	done := ctx.Done()
	if done == nil {
		return <-pc.done, nil // a ctx that never ends: no select
	}
	select {
	case c := <-pc.done:
		return c, nil
	case <-done:
		p.ctxEnded(ctx, id, timeoutMs)
		return <-pc.done, nil
	}
}

// Stats returns the parent's metrics. ErrClosed after Close.
func (p *Parent) Stats() (Stats, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.c == nil {
		return Stats{}, &Error{Status: StatusClosed, Op: "stats", Message: "the parent is closed"}
	}
	var cerr *C.char
	s := C.mfgo_stats(p.c, &cerr)
	if s == nil {
		return Stats{}, &Error{Status: StatusPanic, Op: "stats", Message: takeError(cerr)}
	}
	defer C.mf_string_free(s)
	var out Stats
	if err := json.Unmarshal([]byte(C.GoString(s)), &out); err != nil {
		return Stats{}, &Error{Status: StatusProtocol, Op: "stats", Message: err.Error()}
	}
	return out, nil
}

// Close ends calls in flight with ErrClosed, stops a spawned worker (a
// shutdown message, SIGTERM, SIGKILL after Options.ShutdownGrace) and
// releases the connection. Later calls return ErrClosed. Close may be
// called more than once and from any goroutine; every call returns nil
// once the first one has finished.
func (p *Parent) Close() error {
	p.once.Do(func() {
		runtime.SetFinalizer(p, nil)
		p.mu.Lock()
		c := p.c
		p.c = nil
		p.mu.Unlock()
		// No call can start any more, so closing outside the lock is
		// allowed, and calls waiting in Call are not held up meanwhile.
		C.mf_parent_close(c)
		p.done.finish()
		close(p.closed)
	})
	<-p.closed
	return nil
}

// String names the parent for logs, e.g. "multifrost.Parent(./worker)".
func (p *Parent) String() string { return "multifrost.Parent(" + p.label + ")" }
