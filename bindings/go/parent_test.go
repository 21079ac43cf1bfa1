package multifrost_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	multifrost "github.com/multifrost/libmultifrost/bindings/go"
)

type Point struct {
	X     int    `msgpack:"x"`
	Y     int    `msgpack:"y"`
	Label string `msgpack:"label,omitempty"`
}

// roundTrip calls fn(in) and decodes the answer into a new value of out's type.
func roundTrip[T any](t *testing.T, p *multifrost.Parent, fn string, in T) T {
	t.Helper()
	var out T
	if err := p.Call(bg(t), fn, &out, in); err != nil {
		t.Fatalf("%s(%#v): %v", fn, in, err)
	}
	return out
}

func TestRoundTripTypes(t *testing.T) {
	p := spawn(t, nil)

	t.Run("int", func(t *testing.T) {
		for _, v := range []int{0, 1, -1, 127, 128, -33, 65536, math.MaxInt64, math.MinInt64} {
			if got := roundTrip(t, p, "echo_int", v); got != v {
				t.Errorf("echo_int(%d) = %d", v, got)
			}
		}
	})
	t.Run("int64", func(t *testing.T) {
		for _, v := range []int64{math.MaxInt64, math.MinInt64, -9007199254740993} {
			if got := roundTrip(t, p, "echo_int64", v); got != v {
				t.Errorf("echo_int64(%d) = %d", v, got)
			}
			if got := roundTrip[any](t, p, "echo", v); got != any(v) {
				t.Errorf("echo(%d) = %#v", v, got)
			}
		}
	})
	t.Run("uint64 max", func(t *testing.T) {
		const v = uint64(math.MaxUint64)
		if got := roundTrip(t, p, "echo_uint64", v); got != v {
			t.Errorf("echo_uint64(max) = %d", got)
		}
		if got := roundTrip[any](t, p, "echo", v); got != any(v) {
			t.Errorf("echo(uint64 max) = %#v (%T)", got, got)
		}
	})
	t.Run("float64", func(t *testing.T) {
		for _, v := range []float64{0, 1.5, -2.25, math.Pi, 1e300, math.SmallestNonzeroFloat64} {
			if got := roundTrip(t, p, "echo_float", v); got != v {
				t.Errorf("echo_float(%v) = %v", v, got)
			}
			if got := roundTrip[any](t, p, "echo", v); got != any(v) {
				t.Errorf("echo(%v) = %#v", v, got)
			}
		}
		// An integer is accepted where a float64 parameter is expected.
		var f float64
		if err := p.Call(bg(t), "echo_float", &f, 3); err != nil || f != 3 {
			t.Errorf("echo_float(3) = %v, %v", f, err)
		}
	})
	t.Run("string", func(t *testing.T) {
		for _, v := range []string{"", "hello", "héllo ✓", strings.Repeat("x", 100000)} {
			if got := roundTrip(t, p, "echo_string", v); got != v {
				t.Errorf("echo_string(%.20q) = %.20q", v, got)
			}
			if got := roundTrip[any](t, p, "echo", v); got != any(v) {
				t.Errorf("echo(%.20q) = %#v", v, got)
			}
		}
	})
	t.Run("bytes", func(t *testing.T) {
		v := []byte{0, 1, 2, 0xff, 'a'}
		if got := roundTrip(t, p, "echo_bytes", v); !reflect.DeepEqual(got, v) {
			t.Errorf("echo_bytes = %#v", got)
		}
		// bin stays []byte through a generic value (not string).
		if got := roundTrip[any](t, p, "echo", v); !reflect.DeepEqual(got, v) {
			t.Errorf("echo(bytes) = %#v (%T)", got, got)
		}
		var kind string
		if err := p.Call(bg(t), "describe", &kind, v); err != nil || kind != "[]uint8" {
			t.Errorf("describe(bytes) = %q, %v", kind, err)
		}
	})
	t.Run("bool", func(t *testing.T) {
		for _, v := range []bool{true, false} {
			if got := roundTrip(t, p, "echo_bool", v); got != v {
				t.Errorf("echo_bool(%v) = %v", v, got)
			}
		}
	})
	t.Run("nil", func(t *testing.T) {
		got := any("not nil")
		if err := p.Call(bg(t), "echo", &got, nil); err != nil || got != nil {
			t.Errorf("echo(nil) = %#v, %v", got, err)
		}
		var ptr *int
		if err := p.Call(bg(t), "echo", &ptr, nil); err != nil || ptr != nil {
			t.Errorf("echo(nil) into *int = %v, %v", ptr, err)
		}
	})
	t.Run("list", func(t *testing.T) {
		v := []any{int64(1), "two", 3.5, nil, true, []byte{9}, []any{int64(-1)}}
		if got := roundTrip(t, p, "echo_list", v); !reflect.DeepEqual(got, v) {
			t.Errorf("echo_list = %#v", got)
		}
		if got := roundTrip[any](t, p, "echo", any(v)); !reflect.DeepEqual(got, any(v)) {
			t.Errorf("echo(list) = %#v", got)
		}
		ints := []int{3, 2, 1}
		if got := roundTrip(t, p, "echo", ints); !reflect.DeepEqual(got, ints) {
			t.Errorf("echo([]int) = %#v", got)
		}
	})
	t.Run("map", func(t *testing.T) {
		v := map[string]any{
			"a": int64(1), "b": "x", "c": []any{int64(1), 2.5}, "d": nil,
			"e": map[string]any{"nested": true, "big": uint64(math.MaxUint64)},
		}
		if got := roundTrip(t, p, "echo_map", v); !reflect.DeepEqual(got, v) {
			t.Errorf("echo_map = %#v", got)
		}
		if got := roundTrip[any](t, p, "echo", any(v)); !reflect.DeepEqual(got, any(v)) {
			t.Errorf("echo(map) = %#v", got)
		}
	})
	t.Run("struct", func(t *testing.T) {
		v := Point{X: 3, Y: -4, Label: "p"}
		if got := roundTrip(t, p, "echo_point", v); got != v {
			t.Errorf("echo_point = %#v", got)
		}
		var moved Point
		if err := p.Call(bg(t), "move", &moved, v, 10, 20); err != nil || moved != (Point{13, 16, "p"}) {
			t.Errorf("move = %#v, %v", moved, err)
		}
		// Tags name the map keys on the wire.
		var m map[string]any
		if err := p.Call(bg(t), "echo", &m, v); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{"x": int64(3), "y": int64(-4), "label": "p"}
		if !reflect.DeepEqual(m, want) {
			t.Errorf("echo(Point) as map = %#v", m)
		}
		// ... and a map decodes into the struct.
		var back Point
		if err := p.Call(bg(t), "echo", &back, want); err != nil || back != v {
			t.Errorf("echo(map) as Point = %#v, %v", back, err)
		}
	})
}

func TestCallShapes(t *testing.T) {
	p := spawn(t, nil)
	ctx := bg(t)
	var n int
	if err := p.Call(ctx, "add", &n, 1, 2); err != nil || n != 3 {
		t.Fatalf("add(1, 2) = %d, %v", n, err)
	}
	if err := p.Call(ctx, "add", nil, 1, 2); err != nil {
		t.Errorf("add with a nil result: %v", err)
	}
	if err := p.Call(ctx, "sum", &n); err != nil || n != 0 {
		t.Errorf("sum() = %d, %v", n, err)
	}
	if err := p.Call(ctx, "sum", &n, 1, 2, 3, 4); err != nil || n != 10 {
		t.Errorf("sum(1, 2, 3, 4) = %d, %v", n, err)
	}
	var r any = "x"
	if err := p.Call(ctx, "nothing", &r); err != nil || r != nil {
		t.Errorf("nothing() = %#v, %v", r, err)
	}
	// A result of the wrong type names it.
	var s string
	err := p.Call(ctx, "add", &s, 1, 2)
	if err == nil || !strings.Contains(err.Error(), "*string") {
		t.Errorf("add into *string: %v", err)
	}
	// A non-pointer result is refused.
	if err := p.Call(ctx, "add", n, 1, 2); err == nil {
		t.Error("add into a non-pointer: no error")
	}
	// Arguments msgpack cannot encode.
	err = p.Call(ctx, "echo", nil, make(chan int))
	if !errors.Is(err, multifrost.ErrInvalidArgument) {
		t.Errorf("echo(chan): %v", err)
	}
	// A string that is not UTF-8 would reach a peer as a str it cannot
	// decode: it is refused unsent, wherever it is in the arguments.
	before, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	const notUTF8 = "string is not valid UTF-8; pass []byte for bytes"
	for _, c := range []struct {
		arg  any
		want string
	}{
		{"\xff", `multifrost: call "echo": argument 1 (string): ` + notUTF8},
		{map[string]int{"k\xc3": 1}, `multifrost: call "echo": argument 1 (map[string]int): ` + notUTF8},
		{[]any{1, map[string]any{"ok": []string{"a", "\xed\xa0\x80"}}}, `multifrost: call "echo": argument 1 ([]interface {}): ` + notUTF8},
		{Point{Label: "\x80"}, `multifrost: call "echo": argument 1 (multifrost_test.Point): ` + notUTF8},
	} {
		err := p.Call(ctx, "echo", nil, c.arg)
		if !errors.Is(err, multifrost.ErrInvalidArgument) || err.Error() != c.want {
			t.Errorf("echo(%#v): %v, want ErrInvalidArgument %q", c.arg, err, c.want)
		}
	}
	if after, err := p.Stats(); err != nil || after.RequestsTotal != before.RequestsTotal {
		t.Errorf("calls with strings that are not UTF-8 were sent: requests_total %d, then %d (%v)",
			before.RequestsTotal, after.RequestsTotal, err)
	}
	// The same bytes as []byte travel as bin.
	var b []byte
	if err := p.Call(ctx, "echo_bytes", &b, []byte("\xff")); err != nil || string(b) != "\xff" {
		t.Errorf("echo_bytes(ff) = %x, %v", b, err)
	}
	// A Go worker's result is checked the same way.
	var re *multifrost.RemoteError
	err = p.Call(ctx, "bytes_as_string", nil, []byte("\xff"))
	if !errors.As(err, &re) || re.Message != "TypeError: bytes_as_string returned a string that cannot be encoded: "+notUTF8 {
		t.Errorf("bytes_as_string(ff): %v", err)
	}
	// Function names: refused before the call, or passed whole, however long.
	for _, c := range []struct{ fn, want string }{
		{"", "function name must not be empty"},
		{"add\x00sum", "the function name contains a NUL byte"},
	} {
		err := p.Call(ctx, c.fn, &n, 1, 2)
		if !errors.Is(err, multifrost.ErrInvalidArgument) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("call %q: %v, want ErrInvalidArgument with %q", c.fn, err, c.want)
		}
	}
	long := strings.Repeat("f", 300)
	var e *multifrost.Error
	if err := p.Call(ctx, long, nil); !errors.Is(err, multifrost.ErrNoSuchFunction) || !errors.As(err, &e) ||
		e.Message != "Function '"+long+"' not found" {
		t.Errorf("call of a 300-byte name: %v", err)
	}
}

func TestRemoteErrors(t *testing.T) {
	p := spawn(t, nil)
	ctx := bg(t)
	cases := []struct {
		fn   string
		args []any
		want string // the exact remote text, or a prefix ending in "…"
	}{
		{"fail", []any{"ValueError: bad value"}, "ValueError: bad value"},
		{"divide", []any{1, 0}, "ZeroDivisionError: division by zero"},
		{"boom", nil, "RuntimeError: boom panicked: boom"},
		{"add", []any{1, 2, 3}, "TypeError: add expects (int, int), got 3 arguments"},
		{"add", []any{1}, "TypeError: add expects (int, int), got 1 argument"},
		{"add", []any{1, "x"}, "TypeError: add expects (int, int), got (int, string): argument 2: cannot use string as int"},
		{"add", []any{1.5, 2}, "TypeError: add expects (int, int), got (float, int): argument 1: 1.5 is not an integer that fits int"},
		{"add", []any{nil, 2}, "TypeError: add expects (int, int), got (nil, int): argument 1: cannot use nil as int"},
		{"echo_uint64", []any{-1}, "TypeError: echo_uint64 expects (uint64), got (int): argument 1: -1 is out of range for uint64"},
		{"echo_int64", []any{uint64(math.MaxUint64)}, "TypeError: echo_int64 expects (int64), got (int): argument 1: 18446744073709551615 is out of range for int64"},
		{"echo_point", []any{"x"}, "TypeError: echo_point expects (main.Point), got (string): argument 1: cannot decode into main.Point…"},
		{"sum", []any{1, "2"}, "TypeError: sum expects (...int), got (int, string): argument 2: cannot use string as int"},
		{"_private", nil, "Cannot call private method '_private'"},
	}
	for _, c := range cases {
		err := p.Call(ctx, c.fn, nil, c.args...)
		var re *multifrost.RemoteError
		if !errors.As(err, &re) {
			t.Errorf("%s%v: want a RemoteError, got %v", c.fn, c.args, err)
			continue
		}
		if !errors.Is(err, multifrost.ErrRemote) {
			t.Errorf("%s%v: errors.Is(err, ErrRemote) is false", c.fn, c.args)
		}
		if prefix, ok := strings.CutSuffix(c.want, "…"); ok {
			if !strings.HasPrefix(re.Message, prefix) {
				t.Errorf("%s%v: message %q, want prefix %q", c.fn, c.args, re.Message, prefix)
			}
		} else if re.Message != c.want {
			t.Errorf("%s%v: message %q, want %q", c.fn, c.args, re.Message, c.want)
		}
	}
	// The worker kept serving through all of it.
	var n int
	if err := p.Call(ctx, "add", &n, 40, 2); err != nil || n != 42 {
		t.Fatalf("add after errors = %d, %v", n, err)
	}
}

func TestContextTimeout(t *testing.T) {
	p := spawn(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := p.Call(ctx, "park", nil, "deadline")
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, multifrost.ErrTimeout) {
		t.Fatalf("park with a 200 ms deadline: %v", err)
	}
	// Both hold, whichever of the two timers fired first.
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, multifrost.ErrTimeout) {
		t.Errorf("err %v should match both DeadlineExceeded and ErrTimeout", err)
	}
	// The deadline ended it, not an answer: the call was parked.
	if n := parked(t, p, "deadline"); n != 1 {
		t.Errorf("%d calls parked after the deadline, want 1", n)
	}
	unpark(t, p, "deadline")
	// A deadline is the call's timeout in the library, counted as one.
	if st, err := p.Stats(); err != nil || st.Timeouts != 1 || st.Cancels != 0 || st.InFlight != 0 {
		t.Errorf("stats after the deadline: %+v, %v", st, err)
	}
	// An expired ctx fails before sending.
	if err := p.Call(ctx, "add", nil, 1, 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("call with an expired ctx: %v", err)
	}
	// The parent stays usable.
	var n int
	if err := p.Call(bg(t), "add", &n, 1, 2); err != nil || n != 3 {
		t.Errorf("add after a timeout = %d, %v", n, err)
	}
}

func TestContextCancel(t *testing.T) {
	p := spawn(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	go cancelWhenParked(p, "cancel", cancel)
	err := p.Call(ctx, "park", nil, "cancel")
	if !errors.Is(err, context.Canceled) || !errors.Is(err, multifrost.ErrCancelled) {
		t.Fatalf("cancelled park: %v, want context.Canceled and ErrCancelled", err)
	}
	if errors.Is(err, multifrost.ErrTimeout) || errors.Is(err, multifrost.ErrClosed) {
		t.Errorf("a cancellation should not match ErrTimeout or ErrClosed: %v", err)
	}
	// The library ended the call at once and told the worker, whose park
	// stopped: nothing is left in flight, and the breaker is untouched.
	st, err := p.Stats()
	if err != nil || st.InFlight != 0 || st.Cancels != 1 || st.CircuitState != "closed" {
		t.Errorf("stats after the cancel: %+v, %v", st, err)
	}
	if err := p.Call(ctx, "add", nil, 1, 2); !errors.Is(err, context.Canceled) || !errors.Is(err, multifrost.ErrCancelled) {
		t.Errorf("call with a cancelled ctx: %v", err)
	}
}

// A call made while another is in flight completes through the parent's
// shared queue (a lone call waits on a queue of its own): its ctx must end
// it just as promptly.
func TestContextEndsACallWithCompany(t *testing.T) {
	p := spawn(t, nil)
	first := make(chan error, 1)
	go func() { first <- p.Call(context.Background(), "park", nil, "first") }()
	settle(t, func() bool {
		st, err := p.Stats()
		return err == nil && st.InFlight == 1
	}, func() string { return "the first call never got in flight" })

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := p.Call(ctx, "park", nil, "deadline")
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, multifrost.ErrTimeout) {
		t.Errorf("a call with company past its deadline: %v, want DeadlineExceeded and ErrTimeout", err)
	}
	if n := parked(t, p, "deadline"); n != 1 {
		t.Errorf("%d calls parked after the deadline, want 1 (ended by the deadline, not an answer)", n)
	}
	unpark(t, p, "deadline")

	ctx2, cancel2 := context.WithCancel(context.Background())
	go cancelWhenParked(p, "cancel", cancel2)
	if err := p.Call(ctx2, "park", nil, "cancel"); !errors.Is(err, context.Canceled) || !errors.Is(err, multifrost.ErrCancelled) {
		t.Errorf("a cancelled call with company: %v, want context.Canceled and ErrCancelled", err)
	}
	unpark(t, p, "cancel")

	p.Close()
	if err := <-first; !errors.Is(err, multifrost.ErrClosed) {
		t.Errorf("the lone call in flight at Close: %v, want ErrClosed", err)
	}
}

func TestConcurrentCalls(t *testing.T) {
	p := spawn(t, nil)
	const goroutines, calls = 64, 25
	ctx := bg(t)
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*calls)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				var n int
				if err := p.Call(ctx, "add", &n, g, i*1000); err != nil {
					errs <- err
					return
				}
				if n != g+i*1000 {
					errs <- errors.New("wrong sum")
					return
				}
				var s string
				want := strings.Repeat("é", g) + "✓"
				if err := p.Call(ctx, "echo_string", &s, want); err != nil || s != want {
					errs <- errors.Join(errors.New("wrong echo"), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.RequestsSuccess < goroutines*calls*2 || st.InFlight != 0 {
		t.Errorf("stats after the storm: %+v", st)
	}
}

func TestStats(t *testing.T) {
	p := spawn(t, &multifrost.Options{Name: "stats-worker"})
	ctx := bg(t)
	var pid int
	if err := p.Call(ctx, "pid", &pid); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := p.Call(ctx, "add", nil, i, i); err != nil {
			t.Fatal(err)
		}
	}
	_ = p.Call(ctx, "fail", nil, "ValueError: counted")
	st, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Worker != "stats-worker" || st.RequestsTotal != 7 || st.RequestsSuccess != 6 ||
		st.RequestsFailed != 1 || st.RemoteErrors != 1 || st.Timeouts != 0 || st.InFlight != 0 {
		t.Errorf("counters: %+v", st)
	}
	if !st.Healthy || st.CircuitState != "closed" || st.CircuitTrips != 0 || st.WorkerPID != pid {
		t.Errorf("health: %+v (worker pid %d)", st, pid)
	}
	if st.LatencyP50Ms <= 0 || st.LatencyP99Ms < st.LatencyP50Ms || st.LatencyAvgMs <= 0 {
		t.Errorf("latency: %+v", st)
	}
	if st.HeartbeatRTTLastMs <= 0 {
		t.Errorf("heartbeat rtt: %+v", st)
	}
}

func TestStatsTransportIsLinkByDefaultAndZMQWithDisablePrivateLink(t *testing.T) {
	for _, c := range []struct {
		opts      *multifrost.Options
		transport string
	}{
		{nil, "link"},
		{&multifrost.Options{DisablePrivateLink: true}, "zmq"},
	} {
		p := spawn(t, c.opts)
		st, err := p.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Transport != c.transport {
			t.Errorf("options %+v: transport %q, want %q", c.opts, st.Transport, c.transport)
		}
		var sum int
		if err := p.Call(bg(t), "add", &sum, 1, 2); err != nil || sum != 3 {
			t.Errorf("options %+v: add(1, 2) = %d, %v", c.opts, sum, err)
		}
		p.Close()
	}
}

func TestCloseWithCallsInFlight(t *testing.T) {
	p := spawn(t, nil)
	const n = 8
	errs := make(chan error, n)
	for range n {
		// Never answered: only Close can end them (and 30 s, the default
		// timeout, would end them with ErrTimeout).
		go func() { errs <- p.Call(context.Background(), "park", nil, "close") }()
	}
	settle(t, func() bool {
		st, err := p.Stats()
		return err == nil && st.InFlight == n
	}, func() string { return "the calls never got in flight" })
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := <-errs; !errors.Is(err, multifrost.ErrClosed) {
			t.Errorf("in-flight call: %v, want ErrClosed", err)
		}
	}
}

func TestCallsAfterClose(t *testing.T) {
	p := spawn(t, nil)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	err := p.Call(bg(t), "add", nil, 1, 2)
	if !errors.Is(err, multifrost.ErrClosed) {
		t.Errorf("call after Close: %v", err)
	}
	var e *multifrost.Error
	if !errors.As(err, &e) || e.Status != multifrost.StatusClosed {
		t.Errorf("call after Close: %#v", err)
	}
	if _, err := p.Stats(); !errors.Is(err, multifrost.ErrClosed) {
		t.Errorf("Stats after Close: %v", err)
	}
}

func TestNoLeaksAfterClose(t *testing.T) {
	runtime.GC()
	baseGoroutines := goroutines()
	baseHandles := multifrost.LiveHandles()

	for range 3 {
		p := spawn(t, nil)
		var n int
		if err := p.Call(bg(t), "add", &n, 1, 2); err != nil {
			t.Fatal(err)
		}
		// A call whose ctx ends is cancelled in the library at once.
		ctx, cancel := context.WithCancel(context.Background())
		go cancelWhenParked(p, "abandoned", cancel)
		if err := p.Call(ctx, "park", nil, "abandoned"); !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		_ = p.Call(bg(t), "fail", nil, "ValueError: x")
		// Calls in flight together (their completions come through the
		// parent's queue) when Close runs: they end with ErrClosed.
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := p.Call(bg(t), "park", nil, "closing"); !errors.Is(err, multifrost.ErrClosed) {
					t.Errorf("a call in flight at Close: %v", err)
				}
			}()
		}
		settle(t, func() bool {
			st, err := p.Stats()
			return err == nil && st.InFlight == 4
		}, func() string { return "the four calls did not start" })
		p.Close()
		wg.Wait()
	}
	settle(t, func() bool {
		return multifrost.LiveHandles() == baseHandles && goroutines() <= baseGoroutines
	}, func() string {
		return fmt.Sprintf("leak: %d handles (was %d), %d goroutines (was %d)\n%s",
			multifrost.LiveHandles(), baseHandles, goroutines(), baseGoroutines, stacks())
	})
}

func stacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// A ctx that ends just as the reply arrives: the call returns either the
// right result or the ctx's error, never a wrong value, a hang or a crash,
// alone and with company.
func TestContextEndRacesTheReply(t *testing.T) {
	// Most of these calls time out or are cancelled, which never opens
	// the breaker: the default one stays closed.
	p := spawn(t, nil)
	for _, company := range []int{0, 3} {
		var wg sync.WaitGroup
		for g := range company + 1 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 300 {
					d := time.Duration(i%40) * 5 * time.Microsecond
					ctx, cancel := context.WithTimeout(context.Background(), d+time.Millisecond)
					if i%2 == 1 {
						cancel() // half end by cancel, maybe before the call starts
						ctx, cancel = context.WithCancel(context.Background())
						time.AfterFunc(d, cancel)
					}
					var n int
					err := p.Call(ctx, "add", &n, g, i)
					cancel()
					switch {
					case err == nil:
						if n != g+i {
							t.Errorf("add(%d, %d) = %d", g, i, n)
						}
					case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
					default:
						t.Errorf("add(%d, %d): %v", g, i, err)
					}
				}
			}()
		}
		wg.Wait()
	}
	var n int
	if err := p.Call(bg(t), "add", &n, 2, 2); err != nil || n != 4 {
		t.Fatalf("add after the races = %d, %v", n, err)
	}
}
