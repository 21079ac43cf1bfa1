package multifrost

/*
#include "shim.h"
*/
import "C"

import (
	"os"
	"runtime/cgo"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// queueBatch is how many completions one mf_queue_next may hand over.
const queueBatch = 128

// completions is how a parent's calls learn their outcome, with no
// thread of the library ever calling into Go. Every call is started with
// mf_call_queued_start (its id is for mf_cancel), in one of two lanes:
//
//   - a call made while no other is in flight waits on a queue of its own
//     in the library (Parent.callAlone): the library's thread wakes the
//     caller's thread directly, with no goroutine and no poller in
//     between, which is the fastest path for calls made one at a time;
//   - any other call goes to the parent's queue, q, its token a cgo.Handle
//     of its pendingCall. Go's network poller waits on a dup of q's
//     descriptor (mf_queue_fd) and one goroutine delivers each batch to the
//     callers' channels, so any number of calls in flight cost no thread.
//
// Invariant: every call started on q (inFlight) is delivered exactly once,
// by the goroutine while the parent is open, or by finish after
// mf_parent_close; q is freed only when none is left.
type completions struct {
	q        *C.mf_queue
	events   *C.mf_event // queueBatch slots in C memory: the library writes them
	file     *os.File    // our copy of the descriptor, in Go's poller
	conn     syscall.RawConn
	inFlight atomic.Int64  // calls on this queue
	alone    atomic.Bool   // a call is waiting on a queue of its own (Parent.callAlone)
	ended    chan struct{} // closed when the goroutine has returned
}

// newCompletions makes the parent's queue and starts its goroutine.
func newCompletions() (*completions, error) {
	q := C.mf_queue_new()
	var fd C.int
	var cerr *C.char
	if st := C.mfgo_queue_fd(q, &fd, &cerr); st != C.MF_OK {
		C.mf_queue_free(q)
		return nil, newError(Status(st), "completion queue", takeError(cerr))
	}
	// The descriptor stays the queue's: the poller gets its own copy.
	own, err := syscall.Dup(int(fd))
	if err != nil {
		C.mf_queue_free(q)
		return nil, &Error{Status: StatusIO, Op: "completion queue", Message: "dup: " + err.Error()}
	}
	syscall.CloseOnExec(own)
	if err := syscall.SetNonblock(own, true); err != nil {
		syscall.Close(own)
		C.mf_queue_free(q)
		return nil, &Error{Status: StatusIO, Op: "completion queue", Message: err.Error()}
	}
	file := os.NewFile(uintptr(own), "multifrost-queue")
	conn, err := file.SyscallConn()
	if err != nil {
		file.Close()
		C.mf_queue_free(q)
		return nil, &Error{Status: StatusIO, Op: "completion queue", Message: err.Error()}
	}
	c := &completions{
		q:      q,
		events: (*C.mf_event)(C.calloc(queueBatch, C.size_t(unsafe.Sizeof(C.mf_event{})))),
		file:   file,
		conn:   conn,
		ended:  make(chan struct{}),
	}
	go c.run()
	return c, nil
}

// run is the queue's goroutine: each time the descriptor is readable,
// reset it and deliver what is queued. It ends when finish closes the file.
func (c *completions) run() {
	defer close(c.ended)
	var buf [64]byte
	_ = c.conn.Read(func(fd uintptr) bool {
		for {
			_, err := syscall.Read(int(fd), buf[:])
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				// EAGAIN: nothing new; only a completion that finds the
				// queue empty makes the descriptor readable, and the last
				// take below emptied it.
				return false
			}
			break
		}
		for c.take(0) == queueBatch {
		}
		return false // wait until readable again
	})
}

// take takes up to queueBatch completions (waiting up to timeoutMs for the
// first; < 0: no limit) and delivers them; how many it took, or -1 when
// the queue is closed.
func (c *completions) take(timeoutMs int64) int {
	var n C.size_t
	switch C.mf_queue_next(c.q, C.int64_t(timeoutMs), c.events, queueBatch, &n) {
	case C.MF_OK:
	case C.MF_ERR_TIMEOUT:
		return 0
	default:
		return -1
	}
	events := unsafe.Slice(c.events, int(n))
	for i := range events {
		ev := &events[i]
		h := cgo.Handle(ev.token)
		pc := h.Value().(*pendingCall)
		deleteHandle(h)
		pc.done <- eventCompletion(ev) // buffered: never waits for its caller
	}
	c.inFlight.Add(-int64(n))
	return int(n)
}

// finish delivers the calls still in flight on q and frees it; after
// mf_parent_close, when no call can start any more. (A lone call in
// flight ends on its own queue, which mf_parent_close completed too.)
func (c *completions) finish() {
	// Waits for the goroutine: closing a file in the poller waits until
	// its Read has returned.
	c.file.Close()
	<-c.ended
	// mf_parent_close failed every call in flight; wait for each one.
	for c.inFlight.Load() > 0 {
		if c.take(-1) < 0 {
			break
		}
	}
	C.mf_queue_free(c.q)
	C.free(unsafe.Pointer(c.events))
}

// eventCompletion copies a queued completion out of library memory (valid
// until the next mf_queue_next on its queue).
func eventCompletion(ev *C.mf_event) completion {
	out := completion{status: Status(ev.status)}
	if out.status == StatusOK {
		out.data = goBytes(ev.result, ev.result_len)
	} else if ev.error_message != nil {
		out.message = C.GoString(ev.error_message)
	}
	return out
}
