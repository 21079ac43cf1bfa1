package multifrost

/*
#include "shim.h"
*/
import "C"

import (
	"os"
	"sync/atomic"
	"syscall"
)

// watcher lets Go's network poller wait for the worker's replies while
// several calls are in flight (mf_parent_watch): a goroutine reads them
// with mf_parent_drive when the socket is readable, so their completions
// run on a thread that already holds a P, with no thread of the library
// between the socket and the callers. A completion delivered by the
// library's own thread must first get a P, and with every P busy running
// callers it waits, and with it every reply behind it.
//
// A lone call is left to the library's thread: after one reply the
// poller's path (a parked M woken through the nested epoll set) is slower
// than the library's, which blocks in poll on the socket itself.
//
// The library disarms the watch whenever another thread leads the socket
// for long (or the poller fell 20 ms behind); replies then reach their
// calls through the library's thread, and the next call with others in
// flight arms it again.
type watcher struct {
	file     *os.File
	conn     syscall.RawConn
	inFlight atomic.Int64
	armed    atomic.Bool   // the library was asked to watch (a hint: it may have disarmed)
	kick     chan struct{} // a token each time the watch is armed
}

// newWatcher makes the poller's copy of the parent's descriptor; nil when
// it cannot (calls then complete on the library's thread).
func newWatcher(c *C.mf_parent) *watcher {
	var fd C.int
	if C.mf_parent_watch(c, &fd) != C.MF_OK {
		return nil
	}
	// Watching starts with the first call that has company.
	C.mf_parent_unwatch(c)
	// The descriptor stays the library's: the poller gets its own copy.
	own, err := syscall.Dup(int(fd))
	if err != nil {
		return nil
	}
	syscall.CloseOnExec(own)
	if err := syscall.SetNonblock(own, true); err != nil {
		syscall.Close(own)
		return nil
	}
	file := os.NewFile(uintptr(own), "multifrost-watch")
	conn, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil
	}
	return &watcher{file: file, conn: conn, kick: make(chan struct{}, 1)}
}

// run is the watcher's goroutine: while armed, drive the parent each time
// its descriptor is readable. It ends when stop closes the file.
func (w *watcher) run(h *handle) {
	for range w.kick {
		err := w.conn.Read(func(uintptr) bool {
			// false: wait until the descriptor is readable, then again.
			return !h.drive(w)
		})
		if err != nil {
			return
		}
	}
}

// callStarts counts a call about to start and arms the watch when it has
// company. The caller holds h.mu for reading, and h.c is open.
func (w *watcher) callStarts(c *C.mf_parent) {
	if w.inFlight.Add(1) < 2 || w.armed.Load() || !w.armed.CompareAndSwap(false, true) {
		return
	}
	var fd C.int
	if C.mf_parent_watch(c, &fd) != C.MF_OK {
		w.armed.Store(false)
		return
	}
	select {
	case w.kick <- struct{}{}:
	default: // a token is waiting already
	}
}

// callEnds counts a call that ended (or never started) and hands the
// socket back to the library's thread when none is left in flight.
func (w *watcher) callEnds(h *handle) {
	if w.inFlight.Add(-1) != 0 || !w.armed.Load() {
		return
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.c != nil && w.inFlight.Load() == 0 && w.armed.CompareAndSwap(true, false) {
		// The goroutine stops at its next wake-up, when drive reports
		// the watch disarmed.
		C.mf_parent_unwatch(h.c)
	}
}

// drive reads what the worker sent and completes those calls on this
// thread; whether the watch is still armed.
func (h *handle) drive(w *watcher) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var armed C.int
	if h.c == nil || C.mf_parent_drive(h.c, &armed) != C.MF_OK || armed == 0 {
		w.armed.Store(false)
		return false
	}
	return true
}

// stop ends the goroutine; after the parent was closed.
func (w *watcher) stop() {
	w.file.Close()
	close(w.kick)
}
