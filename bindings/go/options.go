package multifrost

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"math"
	"time"
	"unsafe"
)

// Options configure a parent (Spawn, Connect). The zero value of every field
// keeps the library's default, shown in brackets.
type Options struct {
	// DefaultTimeout limits calls whose ctx has no deadline [30 s].
	DefaultTimeout time.Duration
	// Namespace is sent with every call; workers drop calls for another
	// namespace ["default"].
	Namespace string
	// Heartbeat settings [every 5 s, 3 s to answer, 3 misses]; nil = defaults.
	Heartbeat *Heartbeat
	// Breaker settings [5 failures, 5 s cool-down]; nil = defaults.
	Breaker *Breaker
	// AutoRestart restarts a spawned worker that exited, up to this many
	// times, with back-off [0 = off].
	AutoRestart int
	// StartTimeout limits how long Spawn waits for the worker's first
	// answer [10 s]; a ctx deadline that comes sooner wins.
	StartTimeout time.Duration
	// ConnectTimeout limits how long Connect looks for the service and its
	// answer [5 s]; a ctx deadline that comes sooner wins.
	ConnectTimeout time.Duration
	// ShutdownGrace is the SIGTERM → SIGKILL delay when closing [2 s].
	ShutdownGrace time.Duration
	// CancelGrace is how long the handler of a cancelled or timed-out call
	// may run on in a spawned worker before the worker is stopped (its
	// other calls in flight end with ErrWorkerExited; AutoRestart restarts
	// it) [2 s]; negative: never stopped.
	CancelGrace time.Duration
	// Name is the worker's name in log lines [the program's file name].
	Name string
	// BindHost is the interface a spawning parent binds ["127.0.0.1"].
	BindHost string
	// MaxMessageSize is the largest message accepted from the worker [64 MiB].
	MaxMessageSize int64
	// DisablePrivateLink stops offering a spawned worker the private link
	// (a Unix socket pair made at spawn): a worker built on this library
	// then uses the protocol's TCP connection like any other worker
	// [false = offered].
	DisablePrivateLink bool
	// Workers is how many copies of the program Spawn runs, 1..256: a
	// pool behind this one Parent. Each call goes to the worker with the
	// fewest calls in flight; each worker is supervised on its own (a
	// crash fails only the calls that were in it, AutoRestart restarts
	// it); the breaker judges the pool as a whole. Connect refuses more
	// than 1 (one service per id) [1].
	Workers int
	// MaxCallsPerWorker recycles a spawned worker after this many calls:
	// it takes no new call, its calls in flight finish, then it is
	// replaced by a new process; no call fails for it [0 = never].
	MaxCallsPerWorker uint64
}

// Heartbeat settings. Zero Interval/Timeout/MaxMisses keep their defaults
// (5 s, 3 s, 3); Off turns heartbeats off.
type Heartbeat struct {
	Interval  time.Duration
	Timeout   time.Duration
	MaxMisses int
	Off       bool
}

// Breaker settings: the circuit opens after Threshold consecutive failures
// (worker exits, heartbeat loss; remote errors only with CountRemoteErrors;
// never timeouts or cancels) and lets one probe through after Cooldown. Zero fields
// keep their defaults (5, 5 s).
type Breaker struct {
	Threshold         int
	Cooldown          time.Duration
	CountRemoteErrors bool
}

// millis converts a duration to whole milliseconds, rounding a positive
// sub-millisecond value up so it never becomes "use the default".
func millis(d time.Duration) int64 {
	ms := d.Milliseconds()
	if d > 0 && d%time.Millisecond != 0 {
		ms++
	}
	return ms
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// untilDeadline is the time left before ctx's deadline, if it has one.
func untilDeadline(ctx context.Context) (time.Duration, bool) {
	dl, ok := ctx.Deadline()
	if !ok {
		return 0, false
	}
	return time.Until(dl), true
}

// cOptions builds an mf_options (free with mf_options_free). wait, when
// positive, caps the start-up and connect waits (the ctx deadline).
func (o *Options) cOptions(wait time.Duration, op string) (*C.mf_options, error) {
	var in C.mfgo_options
	var frees []unsafe.Pointer
	defer func() {
		for _, p := range frees {
			C.free(p)
		}
	}()
	cstr := func(s string) *C.char {
		if s == "" {
			return nil
		}
		p := C.CString(s)
		frees = append(frees, unsafe.Pointer(p))
		return p
	}
	var opts Options
	if o != nil {
		opts = *o
	}
	start := orDefault(opts.StartTimeout, 10*time.Second)
	connect := orDefault(opts.ConnectTimeout, 5*time.Second)
	if wait > 0 {
		start = min(start, wait)
		connect = min(connect, wait)
	}
	in.default_timeout_ms = C.int64_t(millis(opts.DefaultTimeout))
	in.ns = cstr(opts.Namespace)
	if hb := opts.Heartbeat; hb != nil {
		in.set_heartbeat = 1
		if !hb.Off {
			in.hb_interval_ms = C.uint32_t(millis(orDefault(hb.Interval, 5*time.Second)))
			in.hb_timeout_ms = C.uint32_t(millis(orDefault(hb.Timeout, 3*time.Second)))
			in.hb_max_misses = 3
			if hb.MaxMisses != 0 {
				in.hb_max_misses = C.uint32_t(hb.MaxMisses)
			}
		}
	}
	if br := opts.Breaker; br != nil {
		in.set_breaker = 1
		in.breaker_threshold = 5
		if br.Threshold != 0 {
			in.breaker_threshold = C.uint32_t(br.Threshold)
		}
		in.breaker_cooldown_ms = C.uint32_t(millis(orDefault(br.Cooldown, 5*time.Second)))
		if br.CountRemoteErrors {
			in.breaker_counts_remote = 1
		}
	}
	for _, c := range []struct {
		name string
		bad  bool
	}{
		{"AutoRestart", opts.AutoRestart < 0},
		{"Workers", opts.Workers < 0},
		{"Heartbeat.MaxMisses", opts.Heartbeat != nil && opts.Heartbeat.MaxMisses < 0},
		{"Breaker.Threshold", opts.Breaker != nil && opts.Breaker.Threshold < 0},
	} {
		if c.bad {
			return nil, &Error{Status: StatusInvalidArgument, Op: op, Message: "Options." + c.name + " must not be negative"}
		}
	}
	in.auto_restart = C.uint32_t(opts.AutoRestart)
	in.start_timeout_ms = C.int64_t(millis(start))
	in.connect_timeout_ms = C.int64_t(millis(connect))
	in.shutdown_grace_ms = C.int64_t(millis(opts.ShutdownGrace))
	if opts.CancelGrace != 0 {
		in.set_cancel_grace = 1
		in.cancel_grace_ms = C.int64_t(max(millis(opts.CancelGrace), 0))
	}
	in.name = cstr(opts.Name)
	in.bind_host = cstr(opts.BindHost)
	in.max_message_size = C.int64_t(opts.MaxMessageSize)
	if opts.DisablePrivateLink {
		in.no_private_link = 1
	}
	// Above the C type's range the library still sees a value it refuses
	// (and names), not one that wrapped around into range.
	in.workers = C.uint32_t(min(uint64(opts.Workers), math.MaxUint32))
	in.max_calls_per_worker = C.uint64_t(opts.MaxCallsPerWorker)

	var out *C.mf_options
	var cerr *C.char
	if st := C.mfgo_options_build(&in, &out, &cerr); st != C.MF_OK {
		return nil, &Error{Status: Status(st), Op: op, Message: "Options." + takeError(cerr)}
	}
	return out, nil
}
