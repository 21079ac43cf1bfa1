package multifrost

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"reflect"
	"runtime"
	"runtime/cgo"
	"sync"
	"syscall"
	"unsafe"
)

// Worker serves Go functions to parents. Create it with NewWorker, add
// functions with Handle, then Serve. Handlers run on the library's handler
// threads, one at a time unless SetConcurrency says more, so by default they
// need not be safe for concurrent use. Heartbeats are answered by the library
// while a handler runs.
type Worker struct {
	mu      sync.Mutex
	c       *C.mf_worker // nil once closed
	state   *workerState
	handles []cgo.Handle
	serving chan struct{} // non-nil while Serve runs; closed when it returns
	signals bool
}

// workerState is shared by the worker's handlers; it does not point back to
// the Worker, so a dropped Worker can still be finalized.
type workerState struct {
	mu  sync.Mutex
	ctx context.Context // handed to handlers that take a context.Context
}

func (s *workerState) context() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ctx
}

// NewWorker creates a worker. serviceID "" is spawn mode: Serve connects to
// the parent named by COMLINK_ZMQ_PORT, so any parent speaking the protocol
// (ours or another implementation's) can spawn the program. A service id is
// connect mode: the worker binds a free port on 127.0.0.1 now and registers
// it under the id in $HOME/.multifrost/services.json (ErrAlreadyRunning if a
// live process holds the id); the entry is removed when Serve returns or the
// worker is closed. "tcp://host:port" binds that endpoint without the registry.
func NewWorker(serviceID string) (*Worker, error) {
	op := "new worker"
	var cid *C.char
	if serviceID != "" {
		op = "new worker " + serviceID
		cid = C.CString(serviceID)
		defer C.free(unsafe.Pointer(cid))
	}
	var c *C.mf_worker
	var cerr *C.char
	if st := C.mfgo_worker_new(cid, &c, &cerr); st != C.MF_OK {
		return nil, newError(Status(st), op, takeError(cerr))
	}
	w := &Worker{
		c:       c,
		state:   &workerState{ctx: context.Background()},
		signals: true,
	}
	runtime.SetFinalizer(w, (*Worker).Close)
	return w, nil
}

// Handle registers fn under name (replacing an earlier one). fn is any
// function; its parameters are decoded from the call's arguments and its
// results are the answer:
//
//	func(a A, b B) R            // the value R
//	func(a A, b B) (R, error)   // a non-nil error answers with its text
//	func(a A) error, func(a A)  // the answer is nil
//	func(xs ...int) R           // variadic
//	func(ctx context.Context, a A) R  // ctx ends when the call is cancelled or Serve returns
//	func(yield Yield, a A) error      // a stream: each yield(v) sends one item (see Yield);
//	                                  // yield may also be declared func(any) error
//	func(ctx context.Context, yield Yield, a A) error
//
// A call with the wrong number or types of arguments is answered with
// "TypeError: <name> expects (<types>), ..."; a handler that panics is
// answered with "RuntimeError: <name> panicked: <value>"; the worker keeps
// serving in both cases. By convention error texts read "<ErrorType>: <message>",
// e.g. errors.New("ValueError: factorial of a negative number"). Names
// starting with '_' are private: callers get "Cannot call private method".
//
// A handler's ctx is cancelled when its caller cancels the call or the
// call's timeout passes (context.Cause(ctx) is then ErrCancelled), or when
// Serve returns. A long handler should watch ctx.Done() and return (any
// answer: the caller has gone): a spawned worker whose handler runs on
// past the parent's Options.CancelGrace is stopped.
func (w *Worker) Handle(name string, fn any) error {
	op := "handle " + name
	h, err := newHandler(name, fn)
	if err != nil {
		return &Error{Status: StatusInvalidArgument, Op: op, Message: err.Error()}
	}
	h.state = w.state
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.c == nil {
		return &Error{Status: StatusClosed, Op: op, Message: "the worker is closed"}
	}
	handle := newHandle(h)
	var cerr *C.char
	if st := C.mfgo_worker_register(w.c, cname, C.uintptr_t(handle), &cerr); st != C.MF_OK {
		deleteHandle(handle)
		return newError(Status(st), op, takeError(cerr))
	}
	// A replaced handler may still be running: its handle lives until Close.
	w.handles = append(w.handles, handle)
	return nil
}

// SetConcurrency sets how many handlers may run at once (1..1024, default 1).
// With more than one, handlers must be safe for concurrent use. It takes
// effect at the next Serve.
func (w *Worker) SetConcurrency(n int) error {
	if n < 1 || n > 1024 {
		return &Error{Status: StatusInvalidArgument, Op: "set concurrency",
			Message: fmt.Sprintf("concurrency must be 1..1024, got %d", n)}
	}
	return w.with("set concurrency", func(c *C.mf_worker, cerr **C.char) C.mf_status {
		return C.mfgo_worker_set_concurrency(c, C.uint32_t(n), cerr)
	})
}

// SetNamespace sets the namespace served (default "default"); calls for
// another namespace are dropped without a reply.
func (w *Worker) SetNamespace(ns string) error {
	cns := C.CString(ns)
	defer C.free(unsafe.Pointer(cns))
	return w.with("set namespace", func(c *C.mf_worker, cerr **C.char) C.mf_status {
		return C.mfgo_worker_set_namespace(c, cns, cerr)
	})
}

// SetHandleSignals sets whether Serve returns on SIGINT and SIGTERM
// (default true; handled through os/signal while Serve runs).
func (w *Worker) SetHandleSignals(on bool) {
	w.mu.Lock()
	w.signals = on
	w.mu.Unlock()
}

func (w *Worker) with(op string, f func(*C.mf_worker, **C.char) C.mf_status) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.c == nil {
		return &Error{Status: StatusClosed, Op: op, Message: "the worker is closed"}
	}
	var cerr *C.char
	if st := f(w.c, &cerr); st != C.MF_OK {
		return newError(Status(st), op, takeError(cerr))
	}
	return nil
}

type serveResult struct {
	status Status
	msg    string
}

// Serve answers calls until ctx ends, a parent sends shutdown, or the
// process gets SIGINT/SIGTERM (see SetHandleSignals); it returns nil then.
// In connect mode the service id is unregistered when it returns. Errors:
// in spawn mode without a valid COMLINK_ZMQ_PORT, ErrInvalidArgument at
// once; ErrClosed after Close; ErrInvalidArgument if already serving.
func (w *Worker) Serve(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	w.mu.Lock()
	if w.c == nil {
		w.mu.Unlock()
		return &Error{Status: StatusClosed, Op: "serve", Message: "the worker is closed"}
	}
	if w.serving != nil {
		w.mu.Unlock()
		return &Error{Status: StatusInvalidArgument, Op: "serve", Message: "the worker is already serving"}
	}
	serving := make(chan struct{})
	w.serving = serving
	c := w.c
	handleSignals := w.signals
	w.mu.Unlock()

	hctx, cancel := context.WithCancel(ctx)
	w.state.mu.Lock()
	w.state.ctx = hctx
	w.state.mu.Unlock()
	defer func() {
		cancel()
		w.mu.Lock()
		w.serving = nil
		w.mu.Unlock()
		close(serving)
	}()

	var sig chan os.Signal
	if handleSignals {
		sig = make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		defer signal.Stop(sig)
	}
	done := make(chan serveResult, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var cerr *C.char
		st := C.mfgo_serve(c, &cerr)
		done <- serveResult{Status(st), takeError(cerr)}
	}()
	ctxDone := ctx.Done()
	for {
		select {
		case r := <-done:
			if r.status != StatusOK {
				return newError(r.status, "serve", r.msg)
			}
			return nil
		case <-ctxDone:
			ctxDone = nil
			C.mf_worker_stop(c)
		case <-sig:
			C.mf_worker_stop(c)
		}
	}
}

// Close stops Serve (waiting for it to return), unregisters a service id
// and releases the worker. Safe to call more than once.
func (w *Worker) Close() error {
	w.mu.Lock()
	c := w.c
	if c == nil {
		w.mu.Unlock()
		return nil
	}
	runtime.SetFinalizer(w, nil)
	if s := w.serving; s != nil {
		C.mf_worker_stop(c)
		w.mu.Unlock()
		<-s
		w.mu.Lock()
	}
	w.c = nil
	handles := w.handles
	w.handles = nil
	w.mu.Unlock()
	// mf_serve has returned: its handler threads take no new calls, so the
	// handles can go (a handler still running has resolved its own).
	C.mf_worker_free(c)
	for _, h := range handles {
		deleteHandle(h)
	}
	return nil
}

// handler is a registered Go function and what reflection learned about it.
type handler struct {
	name       string
	fn         reflect.Value
	params     []reflect.Type // without the leading context.Context and Yield
	variadic   bool
	takesCtx   bool
	takesYield bool // a Yield parameter, first or after the context.Context
	hasResult  bool
	hasErr     bool
	signature  string // "(int, int)"
	state      *workerState
}

var (
	errorType   = reflect.TypeFor[error]()
	contextType = reflect.TypeFor[context.Context]()
	yieldType   = reflect.TypeFor[Yield]()
	yieldFunc   = reflect.TypeFor[func(any) error]() // Yield spelled out
)

func newHandler(name string, fn any) (*handler, error) {
	if name == "" {
		return nil, errors.New("the function name must not be empty")
	}
	v := reflect.ValueOf(fn)
	if !v.IsValid() || v.Kind() != reflect.Func || v.IsNil() {
		return nil, fmt.Errorf("fn must be a function, not %T", fn)
	}
	t := v.Type()
	h := &handler{name: name, fn: v, variadic: t.IsVariadic()}
	for i := 0; i < t.NumIn(); i++ {
		p := t.In(i)
		if i == 0 && p == contextType {
			h.takesCtx = true
			continue
		}
		if (p == yieldType || p == yieldFunc) && len(h.params) == 0 && !h.takesYield {
			h.takesYield = true
			continue
		}
		if !decodable(p) {
			return nil, fmt.Errorf("parameter %d has type %s, which cannot be decoded from msgpack", i+1, typeName(p))
		}
		h.params = append(h.params, p)
	}
	switch t.NumOut() {
	case 0:
	case 1:
		if t.Out(0) == errorType {
			h.hasErr = true
		} else {
			h.hasResult = true
		}
	case 2:
		if t.Out(1) != errorType {
			return nil, fmt.Errorf("the second result of fn must be error, not %s", typeName(t.Out(1)))
		}
		h.hasResult, h.hasErr = true, true
	default:
		return nil, fmt.Errorf("fn must return R, (R, error), error or nothing; it returns %d values", t.NumOut())
	}
	names := make([]byte, 0, 32)
	names = append(names, '(')
	for i, p := range h.params {
		if i > 0 {
			names = append(names, ", "...)
		}
		if h.variadic && i == len(h.params)-1 {
			names = append(names, "..."+typeName(p.Elem())...)
		} else {
			names = append(names, typeName(p)...)
		}
	}
	h.signature = string(append(names, ')'))
	return h, nil
}

func decodable(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Chan, reflect.Func, reflect.UnsafePointer, reflect.Complex64, reflect.Complex128:
		return false
	}
	return true
}

// invoke decodes args, runs the function and encodes its result; errText
// is the reply error when the call fails.
func (h *handler) invoke(ctx context.Context, y Yield, args []byte) (result []byte, errText string) {
	defer func() {
		if r := recover(); r != nil {
			result, errText = nil, fmt.Sprintf("RuntimeError: %s panicked: %v", h.name, r)
		}
	}()
	in, errText := h.decodeArgs(args)
	if errText != "" {
		return nil, errText
	}
	if h.takesYield {
		in = append([]reflect.Value{reflect.ValueOf(y)}, in...)
	}
	if h.takesCtx {
		in = append([]reflect.Value{reflect.ValueOf(ctx)}, in...)
	}
	out := h.fn.Call(in)
	if h.hasErr {
		if e := out[len(out)-1]; !e.IsNil() {
			err := e.Interface().(error)
			text := err.Error()
			if text == "" {
				text = fmt.Sprintf("Error: %s failed (%T)", h.name, err)
			}
			return nil, text
		}
	}
	var value any
	if h.hasResult {
		value = out[0].Interface()
	}
	b, err := encodeValue(value)
	if err != nil {
		return nil, fmt.Sprintf("TypeError: %s returned a %T that cannot be encoded: %v", h.name, value, err)
	}
	return b, ""
}

func (h *handler) decodeArgs(args []byte) ([]reflect.Value, string) {
	raws, err := splitArgs(args)
	if err != nil {
		return nil, fmt.Sprintf("TypeError: %s: the arguments are not a msgpack array: %v", h.name, err)
	}
	fixed := len(h.params)
	if h.variadic {
		fixed--
	}
	if len(raws) < fixed || (!h.variadic && len(raws) != fixed) {
		return nil, fmt.Sprintf("TypeError: %s expects %s, got %d argument%s", h.name, h.signature, len(raws), plural(len(raws)))
	}
	in := make([]reflect.Value, len(raws))
	for i, raw := range raws {
		var t reflect.Type
		if i < fixed {
			t = h.params[i]
		} else {
			t = h.params[fixed].Elem()
		}
		v, err := convertArg(raw, t)
		if err != nil {
			return nil, fmt.Sprintf("TypeError: %s expects %s, got %s: argument %d: %v",
				h.name, h.signature, describeArgs(raws), i+1, err)
		}
		in[i] = v
	}
	return in, ""
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
