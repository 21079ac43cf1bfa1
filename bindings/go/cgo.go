package multifrost

// The library comes from pkg-config, as installed by `make install` (its
// multifrost.pc carries an rpath, so an installed library needs no
// environment variable at run time). If the build stops with "Package
// multifrost was not found in the pkg-config search path", libmultifrost is
// not installed: run `make install` (or `make install PREFIX=$HOME/.local`)
// in a clone of the repository, and for a prefix outside pkg-config's path
// set PKG_CONFIG_PATH=<prefix>/lib/pkgconfig. The repository's own tests
// point PKG_CONFIG_PATH at build/pkgconfig, whose multifrost.pc names the
// checkout's include/ and target/release instead (see the Makefile).

/*
#cgo pkg-config: multifrost
#include "shim.h"
*/
import "C"

import (
	"context"
	"runtime/cgo"
	"sync/atomic"
	"unsafe"
)

// liveHandles counts the cgo.Handles this package holds, so tests can
// prove that nothing is left behind after Close.
var liveHandles atomic.Int64

func newHandle(v any) cgo.Handle {
	liveHandles.Add(1)
	return cgo.NewHandle(v)
}

func deleteHandle(h cgo.Handle) {
	h.Delete()
	liveHandles.Add(-1)
}

// takeError converts and frees an error text a shim handed back.
func takeError(p *C.char) string {
	if p == nil {
		return ""
	}
	s := C.GoString(p)
	C.free(unsafe.Pointer(p))
	return s
}

// cBytes borrows a Go byte slice for the duration of one cgo call (the
// library copies arguments and results before returning).
func cBytes(b []byte) (*C.uint8_t, C.size_t) {
	if len(b) == 0 {
		return nil, 0
	}
	return (*C.uint8_t)(unsafe.Pointer(&b[0])), C.size_t(len(b))
}

// goBytes copies library-owned bytes that are valid only during a callback.
func goBytes(p *C.uint8_t, n C.size_t) []byte {
	if p == nil || n == 0 {
		return []byte{}
	}
	out := make([]byte, int(n))
	copy(out, unsafe.Slice((*byte)(unsafe.Pointer(p)), int(n)))
	return out
}

// multifrostGoHandle runs a registered Go handler on a worker handler thread.
//
//export multifrostGoHandle
func multifrostGoHandle(user C.uintptr_t, args *C.uint8_t, n C.size_t, reply *C.mf_reply) {
	h := lookupHandler(cgo.Handle(user))
	if h == nil {
		replyError(reply, "RuntimeError: the worker is closed")
		return
	}
	var ctx context.Context
	if h.takesCtx {
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(h.state.context())
		// The library calls the hook until the reply is answered, never
		// after (an answer waits for a hook that is running): the handle
		// may go once answer has returned.
		hook := newHandle(cancel)
		defer func() {
			deleteHandle(hook)
			cancel(nil)
		}()
		C.mfgo_reply_on_cancel(reply, C.uintptr_t(hook))
	}
	var y Yield
	var yw *yielder
	if h.takesYield {
		yw = &yielder{reply: reply, name: h.name}
		y = yw.yield
	}
	result, errText := h.invoke(ctx, y, goBytes(args, n))
	if yw != nil {
		yw.answered()
	}
	answer(reply, h, result, errText)
}

// multifrostGoCancel runs when a call whose handler takes a ctx is
// cancelled (by its caller, or by its timeout): on the worker's driver
// thread, so it only cancels the ctx.
//
//export multifrostGoCancel
func multifrostGoCancel(hook C.uintptr_t) {
	cgo.Handle(hook).Value().(context.CancelCauseFunc)(ErrCancelled)
}

// answer answers the reply with a handler's result or error text.
func answer(reply *C.mf_reply, h *handler, result []byte, errText string) {
	if errText != "" {
		replyError(reply, errText)
		return
	}
	p, l := cBytes(result)
	var cerr *C.char
	if C.mfgo_reply_ok(reply, p, l, &cerr) != C.MF_OK {
		// The reply is not consumed when the result is refused.
		replyError(reply, "TypeError: "+h.name+" returned a value that cannot be sent: "+takeError(cerr))
	}
}

// lookupHandler resolves a handler's handle; a handle deleted by Close
// while the library was about to run it yields nil instead of a panic.
func lookupHandler(h cgo.Handle) (out *handler) {
	defer func() {
		if recover() != nil {
			out = nil
		}
	}()
	return h.Value().(*handler)
}

func replyError(reply *C.mf_reply, text string) {
	if text == "" {
		text = "Error: (no message)"
	}
	msg := C.CString(toValidUTF8(text))
	defer C.free(unsafe.Pointer(msg))
	var cerr *C.char
	if C.mfgo_reply_error(reply, msg, &cerr) != C.MF_OK {
		// Only a NULL reply or bad UTF-8 can fail, and neither can happen
		// here; the library answers an unanswered reply with an error.
		_ = takeError(cerr)
	}
}

// multifrostGoLog receives one log event on a library thread.
//
//export multifrostGoLog
func multifrostGoLog(json *C.char) {
	deliverLog(C.GoString(json))
}

// cStatusName is the library's name of a status (mf_status_name).
func cStatusName(s Status) string {
	return C.GoString(C.mf_status_name(C.int(s)))
}
