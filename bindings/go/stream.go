package multifrost

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"unsafe"
)

// Item is one item of a stream: one msgpack value, decoded on demand with
// the same rules as Call's result.
type Item struct {
	data []byte
}

// Decode decodes the item into out, a pointer, as Call decodes a result.
func (it Item) Decode(out any) error {
	if err := decodeInto(it.data, out); err != nil {
		return &Error{Status: StatusInvalidArgument, Op: "decode item",
			Message: fmt.Sprintf("cannot decode the item into %T: %v", out, err)}
	}
	return nil
}

// Value is the item decoded into an any (int64, float64, string, []byte,
// []any, map[string]any, ...), as Call decodes into *any.
func (it Item) Value() (any, error) {
	var v any
	err := it.Decode(&v)
	return v, err
}

// Stream calls function on the worker as a stream: the handler yields
// items (see Yield), which the range loop receives in order. At most the
// parent's stream window of items (16, more when they are small) is sent ahead of what the loop has
// taken; the handler waits for more.
//
//	for item, err := range p.Stream(ctx, "count", 5) {
//		if err != nil { return err }
//		var n int
//		if err := item.Decode(&n); err != nil { return err }
//	}
//
// The iteration ends when the handler returns. An error (the handler's,
// ErrWorkerExited, ErrTimeout, ErrClosed, ... as for Call) is yielded once
// as (Item{}, err), after the items sent before it, and ends the iteration.
// Breaking out of the loop closes the stream: the handler's next yield
// returns ErrCancelled. ctx as for Call: its deadline limits the wait for
// the first item and then between items (an error matching ErrTimeout and
// context.DeadlineExceeded); its cancellation cancels the stream at once,
// also while the loop waits for an item, and yields an error matching
// ErrCancelled and context.Canceled.
//
// Each wait for an item blocks an OS thread in the library
// (mf_stream_next), as a cgo call does; the goroutine running the loop
// holds it. A cancelled ctx wakes that wait: the library's mf_stream_cancel
// may run on another thread while one waits.
func (p *Parent) Stream(ctx context.Context, function string, args ...any) iter.Seq2[Item, error] {
	return func(yield func(Item, error) bool) {
		defer runtime.KeepAlive(p)
		if ctx == nil {
			ctx = context.Background()
		}
		op := func() string { return "stream " + strconv.Quote(function) }
		s, timeoutMs, err := p.openStream(ctx, op, function, args)
		if err != nil {
			yield(Item{}, err)
			return
		}
		stopCancel := cancelStreamOnDone(ctx, s, timeoutMs)
		defer func() {
			stopCancel()
			C.mf_stream_close(s)
		}()
		for {
			var buf C.mf_buffer
			var end C.bool
			var cerr *C.char
			st := Status(C.mfgo_stream_next(s, -1, &buf, &end, &cerr))
			msg := takeError(cerr)
			if err := ctx.Err(); err != nil && (st != StatusOK || !end) {
				if st == StatusOK {
					C.mf_buffer_free(buf)
				}
				if st == StatusTimeout && timeoutMs > 0 {
					// The library's timeout is the ctx deadline.
					yield(Item{}, &Error{Status: StatusTimeout, Op: op(), Message: msg, ctxErr: err})
					return
				}
				yield(Item{}, contextError(op(), err, ""))
				return
			}
			switch {
			case st != StatusOK:
				yield(Item{}, callError(ctx, op(), completion{status: st, message: msg}, timeoutMs))
				return
			case bool(end):
				return
			}
			item := Item{data: goBytes(buf.data, buf.len)}
			C.mf_buffer_free(buf)
			if !yield(item, nil) {
				return
			}
		}
	}
}

// cancelStreamOnDone cancels s (mf_stream_cancel, from the goroutine
// context.AfterFunc starts) once ctx is cancelled: a waiting mf_stream_next
// returns MF_ERR_CANCELLED at once. A ctx that reached its deadline is left
// to the library, whose timeout for the stream is that deadline (as
// ctxEnded does for a call). The returned stop, called once before
// mf_stream_close, makes sure no mf_stream_cancel runs after it.
func cancelStreamOnDone(ctx context.Context, s *C.mf_stream, timeoutMs int64) (stop func()) {
	done := make(chan struct{})
	stopAfter := context.AfterFunc(ctx, func() {
		defer close(done)
		if timeoutMs > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return
		}
		C.mf_stream_cancel(s)
	})
	return func() {
		if !stopAfter() {
			<-done // it started: let its mf_stream_cancel return first
		}
	}
}

// openStream starts the stream's call; timeoutMs is the ctx deadline's
// (0: the parent's default).
func (p *Parent) openStream(ctx context.Context, op func() string, function string, args []any) (*C.mf_stream, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, contextError(op(), err, "")
	}
	payload, err := encodeArgs(args)
	if err != nil {
		return nil, 0, &Error{Status: StatusInvalidArgument, Op: op(), Message: err.Error()}
	}
	defer payload.release() // the library copies the arguments before returning
	var timeoutMs int64
	if left, ok := untilDeadline(ctx); ok {
		if left <= 0 {
			return nil, 0, contextError(op(), context.DeadlineExceeded, "")
		}
		timeoutMs = millis(left)
	}
	if strings.IndexByte(function, 0) >= 0 {
		return nil, 0, &Error{Status: StatusInvalidArgument, Op: op(), Message: "the function name contains a NUL byte"}
	}
	ptr, n := cBytes(payload.buf.Bytes())
	fn := (*C.char)(unsafe.Pointer(unsafe.StringData(function))) // no Go pointers in it: cgo may take it
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.c == nil {
		return nil, 0, &Error{Status: StatusClosed, Op: op(), Message: "the parent is closed"}
	}
	var s *C.mf_stream
	var cerr *C.char
	if st := C.mfgo_stream_open(p.c, fn, C.size_t(len(function)), ptr, n, C.int64_t(timeoutMs), &s, &cerr); st != C.MF_OK {
		return nil, 0, newError(Status(st), op(), takeError(cerr))
	}
	return s, timeoutMs, nil
}

// StreamOf is Stream with each item decoded into a T; an item that cannot
// be decoded is yielded as an error and ends the iteration.
func StreamOf[T any](ctx context.Context, p *Parent, function string, args ...any) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		for item, err := range p.Stream(ctx, function, args...) {
			var v T
			if err == nil {
				err = item.Decode(&v)
				if err != nil {
					yield(v, err)
					return
				}
			}
			if !yield(v, err) {
				return
			}
		}
	}
}

// Yield sends one item of a stream from a handler: a handler that takes a
// Yield parameter (first, or after its context.Context) is a stream
// handler:
//
//	w.Handle("count", func(yield multifrost.Yield, n int) error {
//		for i := range n {
//			if err := yield(i); err != nil {
//				return err // the caller closed the stream
//			}
//		}
//		return nil
//	})
//
// A call of yield waits while the caller has all the items it asked for
// (the parent's stream credit) and returns an error matching ErrCancelled
// once the caller closed the stream or cancelled the call: the handler
// should then return (its answer goes nowhere). The handler's return ends
// the stream (an error reaches the caller after the items). A caller that
// did not ask for a stream (a plain Call, another implementation's parent)
// gets the items as one array instead of the handler's result. Call yield
// from the handler's goroutine, before the handler returns; afterwards it
// returns ErrClosed.
type Yield func(v any) error

// yielder sends a running handler's items through its reply; mu orders
// a yield against the answer, after which the reply is gone.
type yielder struct {
	mu    sync.Mutex
	reply *C.mf_reply // nil once answered
	name  string
}

func (y *yielder) yield(v any) error {
	b, err := encodeValue(v)
	if err != nil {
		return &Error{Status: StatusInvalidArgument, Op: "yield",
			Message: fmt.Sprintf("%s yielded a %T that cannot be encoded: %v", y.name, v, err)}
	}
	y.mu.Lock()
	defer y.mu.Unlock()
	if y.reply == nil {
		return &Error{Status: StatusClosed, Op: "yield", Message: "the handler has returned"}
	}
	p, l := cBytes(b)
	var cerr *C.char
	if st := Status(C.mfgo_reply_yield(y.reply, p, l, &cerr)); st != StatusOK {
		return newError(st, "yield", takeError(cerr))
	}
	return nil
}

// answered marks the reply as gone; a later yield returns ErrClosed.
func (y *yielder) answered() {
	y.mu.Lock()
	y.reply = nil
	y.mu.Unlock()
}
