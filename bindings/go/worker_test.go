package multifrost_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	multifrost "github.com/multifrost/libmultifrost/bindings/go"
)

func serviceID(t *testing.T) string {
	return fmt.Sprintf("go-test-%s-%d", strings.ToLower(t.Name()), os.Getpid())
}

// A Go worker with a service id, served in this process, reached by Connect.
func TestConnectToInProcessWorker(t *testing.T) {
	runtime.GC()
	baseHandles := multifrost.LiveHandles()
	baseGoroutines := goroutines()
	id := serviceID(t)

	w, err := multifrost.NewWorker(id)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	calls := 0
	must(t, w.Handle("add", func(a, b int) int {
		mu.Lock()
		calls++
		mu.Unlock()
		return a + b
	}))
	must(t, w.Handle("greet", func(ctx context.Context, name string) (string, error) {
		if name == "" {
			return "", errors.New("ValueError: empty name")
		}
		return "hello " + name, ctx.Err()
	}))
	must(t, w.SetConcurrency(4))

	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- w.Serve(ctx) }()

	p, err := multifrost.Connect(bg(t), id, &multifrost.Options{ConnectTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := p.Call(bg(t), "add", &n, 20, 22); err != nil || n != 42 {
		t.Errorf("add = %d, %v", n, err)
	}
	var s string
	if err := p.Call(bg(t), "greet", &s, "gopher"); err != nil || s != "hello gopher" {
		t.Errorf("greet = %q, %v", s, err)
	}
	var re *multifrost.RemoteError
	if err := p.Call(bg(t), "greet", &s, ""); !errors.As(err, &re) || re.Message != "ValueError: empty name" {
		t.Errorf("greet(\"\") = %v", err)
	}
	if err := p.Call(bg(t), "add", &n, "a", 1); !errors.As(err, &re) ||
		!strings.HasPrefix(re.Message, "TypeError: add expects (int, int)") {
		t.Errorf("add(\"a\", 1) = %v", err)
	}
	// Many goroutines through the in-process pair, under -race.
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var r int
			if err := p.Call(bg(t), "add", &r, g, g); err != nil || r != 2*g {
				t.Errorf("add(%d, %d) = %d, %v", g, g, r, err)
			}
		}()
	}
	wg.Wait()
	p.Close()

	stop()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(30 * time.Second): // a hang guard
		t.Fatal("Serve did not return after its ctx ended")
	}
	must(t, w.Close())
	must(t, w.Close())
	if err := w.Handle("x", func() {}); !errors.Is(err, multifrost.ErrClosed) {
		t.Errorf("Handle after Close: %v", err)
	}
	if err := w.Serve(context.Background()); !errors.Is(err, multifrost.ErrClosed) {
		t.Errorf("Serve after Close: %v", err)
	}
	// Serving ended, so the id is free again and no longer found.
	_, err = multifrost.Connect(bg(t), id, &multifrost.Options{ConnectTimeout: 300 * time.Millisecond})
	if !errors.Is(err, multifrost.ErrNotFound) {
		t.Errorf("Connect after the worker stopped: %v", err)
	}
	settle(t, func() bool {
		return multifrost.LiveHandles() == baseHandles && goroutines() <= baseGoroutines
	}, func() string {
		return fmt.Sprintf("leak: %d handles (was %d), %d goroutines (was %d)\n%s",
			multifrost.LiveHandles(), baseHandles, goroutines(), baseGoroutines, stacks())
	})
}

// The worker binary in connect mode, reached by Connect, stopped by SIGTERM.
func TestConnectToWorkerProcess(t *testing.T) {
	id := serviceID(t)
	cmd := exec.Command(workerBin, id)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })

	p, err := multifrost.Connect(bg(t), id, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var pid int
	if err := p.Call(bg(t), "pid", &pid); err != nil || pid != cmd.Process.Pid {
		t.Errorf("pid = %d, %v (process %d)", pid, err, cmd.Process.Pid)
	}
	// The id is taken by a live process.
	if w, err := multifrost.NewWorker(id); !errors.Is(err, multifrost.ErrAlreadyRunning) ||
		!strings.Contains(err.Error(), fmt.Sprintf("already running (pid %d", cmd.Process.Pid)) {
		t.Errorf("NewWorker(%q) while another process serves it: %v", id, err)
		if w != nil {
			w.Close()
		}
	}
	var m map[string]any
	if err := p.Call(bg(t), "echo_map", &m, map[string]any{"k": []any{"v"}}); err != nil || m["k"].([]any)[0] != "v" {
		t.Errorf("echo_map = %v, %v", m, err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("worker exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second): // a hang guard
		t.Fatal("the worker did not exit on SIGTERM")
	}
	_, err = multifrost.Connect(bg(t), id, &multifrost.Options{ConnectTimeout: 300 * time.Millisecond})
	if !errors.Is(err, multifrost.ErrNotFound) {
		t.Errorf("Connect after SIGTERM: %v (the entry should be gone)", err)
	}
}

func TestConnectNotFound(t *testing.T) {
	start := time.Now()
	_, err := multifrost.Connect(bg(t), "no-such-service", &multifrost.Options{ConnectTimeout: 300 * time.Millisecond})
	if !errors.Is(err, multifrost.ErrNotFound) || !strings.Contains(err.Error(), "no-such-service") {
		t.Errorf("Connect(no-such-service): %v", err)
	}
	// It waited for the service as long as it was asked to.
	if d := time.Since(start); d < 290*time.Millisecond {
		t.Errorf("gave up after %v, before the 300 ms connect timeout", d)
	}
	// A ctx deadline caps the wait too, here under a 10-minute connect
	// timeout: whichever notices first, the library or the ctx, says so.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	connected := make(chan error, 1)
	go func() {
		_, err := multifrost.Connect(ctx, "no-such-service", &multifrost.Options{ConnectTimeout: 10 * time.Minute})
		connected <- err
	}()
	select {
	case err = <-connected:
		if !errors.Is(err, multifrost.ErrNotFound) && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Connect with a 300 ms ctx: %v, want ErrNotFound or context.DeadlineExceeded", err)
		}
	case <-time.After(60 * time.Second): // a hang guard
		t.Fatal("Connect with a 300 ms ctx was still waiting after 60 s")
	}
}

func TestSpawnFailures(t *testing.T) {
	_, err := multifrost.Spawn(bg(t), "/nonexistent/worker", nil, nil)
	if !errors.Is(err, multifrost.ErrIO) || !strings.Contains(err.Error(), "/nonexistent/worker") {
		t.Errorf("Spawn(/nonexistent/worker): %v", err)
	}
	// A program that exits at once: its status comes back, not a timeout.
	_, err = multifrost.Spawn(bg(t), "sh", []string{"-c", "echo broken >&2; exit 3"}, nil)
	if !errors.Is(err, multifrost.ErrWorkerExited) || !strings.Contains(err.Error(), "broken") {
		t.Errorf("Spawn(exit 3): %v", err)
	}
	// A program that never answers, bounded by the ctx.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = multifrost.Spawn(ctx, "sleep", []string{"30"}, nil)
	if !errors.Is(err, multifrost.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Spawn(sleep 30) with a 300 ms ctx: %v", err)
	}
	// Bad options are refused with the setter's name.
	_, err = multifrost.Spawn(bg(t), workerBin, nil, &multifrost.Options{DefaultTimeout: -time.Second})
	if !errors.Is(err, multifrost.ErrInvalidArgument) || !strings.Contains(err.Error(), "DefaultTimeout") {
		t.Errorf("negative DefaultTimeout: %v", err)
	}
}

func TestWorkerExitFailsCalls(t *testing.T) {
	p := spawn(t, nil)
	// Noticed when the worker exits: a call that waited out its deadline
	// would fail with ErrTimeout instead.
	err := p.Call(bg(t), "exit", nil, 7)
	if !errors.Is(err, multifrost.ErrWorkerExited) || !strings.Contains(err.Error(), "7") {
		t.Errorf("exit(7): %v", err)
	}
	// At once, with no pause: the core marks the parent dead before it
	// fails the calls in flight (tests/supervision.rs pins it), so this call
	// cannot be sent to nobody and wait for a timeout.
	if err := p.Call(bg(t), "add", nil, 1, 2); !errors.Is(err, multifrost.ErrWorkerExited) {
		t.Errorf("call after the worker exited: %v", err)
	}
}

func TestOptions(t *testing.T) {
	p := spawn(t, &multifrost.Options{
		DefaultTimeout: 300 * time.Millisecond,
		Heartbeat:      &multifrost.Heartbeat{Interval: 100 * time.Millisecond, Timeout: time.Second, MaxMisses: 2},
		Breaker:        &multifrost.Breaker{Threshold: 2, Cooldown: time.Minute, CountRemoteErrors: true},
		AutoRestart:    1,
		StartTimeout:   10 * time.Second,
		ShutdownGrace:  500 * time.Millisecond,
		CancelGrace:    -1, // never stopped
		Name:           "options-worker",
		BindHost:       "127.0.0.1",
		MaxMessageSize: 1 << 20,
	})
	// DefaultTimeout applies to a ctx without a deadline: the message names
	// it (the library's own default is 30 s).
	err := p.Call(context.Background(), "park", nil, "options")
	if !errors.Is(err, multifrost.ErrTimeout) || !strings.Contains(err.Error(), "300 ms") {
		t.Errorf("park with DefaultTimeout 300 ms: %v", err)
	}
	_ = p.Call(context.Background(), "park", nil, "options")
	// Timeouts are no breaker failures: two in a row leave it closed.
	st, err := p.Stats()
	if err != nil || st.CircuitState != "closed" || st.ConsecutiveFailures != 0 || st.Timeouts != 2 {
		t.Errorf("stats after two timeouts: %+v, %v", st, err)
	}
	// Two remote errors in a row open it (threshold 2, counted): refused at once.
	for range 2 {
		if err := p.Call(context.Background(), "fail", nil, "ValueError: counted"); !errors.Is(err, multifrost.ErrRemote) {
			t.Errorf("fail: %v", err)
		}
	}
	err = p.Call(context.Background(), "add", nil, 1, 2)
	if !errors.Is(err, multifrost.ErrCircuitOpen) {
		t.Errorf("call with the breaker open: %v", err)
	}
	settle(t, func() bool {
		st, err = p.Stats()
		return err == nil && st.HeartbeatRTTAvgMs > 0
	}, func() string { return fmt.Sprintf("no heartbeat answered at a 100 ms interval: %+v, %v", st, err) })
	if st.Worker != "options-worker" || st.CircuitState != "open" || st.CircuitTrips != 1 ||
		st.Timeouts != 2 || st.RemoteErrors != 2 {
		t.Errorf("stats: %+v", st)
	}
}

// A worker drops a call for another namespace: no answer, and its handler
// never runs (the worker is asked through a parent in its own namespace).
func TestAnotherNamespaceIsDroppedUnrun(t *testing.T) {
	id := serviceID(t)
	w, err := multifrost.NewWorker(id)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var adds atomic.Int64
	must(t, w.Handle("add", func(a, b int) int { adds.Add(1); return a + b }))
	must(t, w.Handle("adds", func() int64 { return adds.Load() }))
	must(t, w.SetNamespace("maths"))
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- w.Serve(ctx) }()
	defer func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	maths, err := multifrost.Connect(bg(t), id, &multifrost.Options{Namespace: "maths", ConnectTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer maths.Close()
	plain, err := multifrost.Connect(bg(t), id, &multifrost.Options{ConnectTimeout: 5 * time.Second}) // namespace "default"
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()

	var n int64
	if err := maths.Call(bg(t), "add", &n, 1, 2); err != nil || n != 3 {
		t.Errorf("add in the worker's namespace = %d, %v", n, err)
	}
	short, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := plain.Call(short, "add", nil, 1, 2); !errors.Is(err, multifrost.ErrTimeout) {
		t.Errorf("call in another namespace: %v", err)
	}
	if err := maths.Call(bg(t), "adds", &n); err != nil || n != 1 {
		t.Errorf("the worker ran add %d times (%v); only the call in its namespace should run", n, err)
	}
}

func TestWorkerServeWithoutParent(t *testing.T) {
	// Spawn mode needs COMLINK_ZMQ_PORT, which this process does not have.
	w, err := multifrost.NewWorker("")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	err = w.Serve(bg(t))
	if !errors.Is(err, multifrost.ErrInvalidArgument) || !strings.Contains(err.Error(), "COMLINK_ZMQ_PORT") {
		t.Errorf("Serve without COMLINK_ZMQ_PORT: %v", err)
	}
}

func TestHandleValidation(t *testing.T) {
	w, err := multifrost.NewWorker("")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, fn := range []any{nil, 42, func() (int, int) { return 1, 2 }, func(chan int) {}, func() (int, int, error) { return 0, 0, nil }} {
		if err := w.Handle("f", fn); !errors.Is(err, multifrost.ErrInvalidArgument) {
			t.Errorf("Handle(%T): %v", fn, err)
		}
	}
	if err := w.Handle("", func() {}); !errors.Is(err, multifrost.ErrInvalidArgument) {
		t.Errorf("Handle with an empty name: %v", err)
	}
	if err := w.SetConcurrency(0); !errors.Is(err, multifrost.ErrInvalidArgument) {
		t.Errorf("SetConcurrency(0): %v", err)
	}
	if err := w.SetNamespace(""); !errors.Is(err, multifrost.ErrInvalidArgument) {
		t.Errorf("SetNamespace(\"\"): %v", err)
	}
}

func TestLogHandler(t *testing.T) {
	events := make(chan multifrost.LogEvent, 100)
	multifrost.SetLogHandler(func(e multifrost.LogEvent) {
		select {
		case events <- e:
		default:
		}
	})
	defer multifrost.SetLogHandler(testLog)
	p := spawn(t, &multifrost.Options{DefaultTimeout: 100 * time.Millisecond})
	_ = p.Call(context.Background(), "park", nil, "log")
	timeout := time.After(30 * time.Second) // a hang guard
	for {
		select {
		case e := <-events:
			if e.Event == "request_timeout" {
				if e.Level == "" || e.Message == "" || e.Fields["event"] != "request_timeout" {
					t.Errorf("event: %+v", e)
				}
				return
			}
		case <-timeout:
			t.Fatal("no request_timeout event")
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
