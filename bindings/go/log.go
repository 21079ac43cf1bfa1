package multifrost

/*
#include "shim.h"
*/
import "C"

import (
	"encoding/json"
	"sync"
	"sync/atomic"
)

// LogEvent is one structured event of the library, e.g. a worker's output
// line ("worker_output", "[math_worker STDOUT]: hi"), "worker_exit",
// "circuit_open" or "heartbeat_missed". Fields holds the whole JSON object.
type LogEvent struct {
	Event     string         `json:"event"`
	Level     string         `json:"level"`
	Message   string         `json:"message"`
	Timestamp float64        `json:"timestamp"`
	Fields    map[string]any `json:"-"`
}

var (
	logMu   sync.Mutex
	logFunc atomic.Pointer[func(LogEvent)]
)

// SetLogHandler sends the library's log events (for the whole process) to
// fn; nil restores the default (worker output and warnings to stderr). fn
// runs on library threads, possibly several at once: it must be safe for
// concurrent use, return quickly, and not close a Parent.
func SetLogHandler(fn func(LogEvent)) {
	logMu.Lock()
	defer logMu.Unlock()
	if fn == nil {
		C.mfgo_set_log(0)
		logFunc.Store(nil)
		return
	}
	logFunc.Store(&fn)
	C.mfgo_set_log(1)
}

func deliverLog(line string) {
	fn := logFunc.Load()
	if fn == nil {
		return
	}
	var ev LogEvent
	if json.Unmarshal([]byte(line), &ev) != nil {
		ev = LogEvent{Event: "log", Level: "info", Message: line}
	}
	_ = json.Unmarshal([]byte(line), &ev.Fields)
	(*fn)(ev)
}
