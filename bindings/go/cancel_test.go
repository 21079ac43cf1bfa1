package multifrost_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	multifrost "github.com/multifrost/libmultifrost/bindings/go"
)

// spawnOne starts a test worker with one handler thread: a call is
// answered only once the handler before it has returned.
func spawnOne(t *testing.T, opts *multifrost.Options) *multifrost.Parent {
	t.Helper()
	t.Setenv("MF_TEST_CONCURRENCY", "1") // also for a restarted worker
	return spawn(t, opts)
}

// waitFile waits until a handler has written path (a hang guard, not a bound).
func waitFile(t *testing.T, path string) []byte {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was never written", path)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// callAsync makes a call on its own goroutine; its error arrives on the channel.
func callAsync(ctx context.Context, p *multifrost.Parent, fn string, args ...any) <-chan error {
	errc := make(chan error, 1)
	go func() { errc <- p.Call(ctx, fn, nil, args...) }()
	return errc
}

func wantCancelled(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, multifrost.ErrCancelled) || !errors.Is(err, context.Canceled) ||
		errors.Is(err, multifrost.ErrTimeout) || errors.Is(err, multifrost.ErrClosed) {
		t.Errorf("%s: %v, want ErrCancelled and context.Canceled only", what, err)
	}
}

func stats(t *testing.T, p *multifrost.Parent) multifrost.Stats {
	t.Helper()
	st, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func pidOf(t *testing.T, p *multifrost.Parent) int {
	t.Helper()
	var pid int
	if err := p.Call(bg(t), "pid", &pid); err != nil {
		t.Fatalf("pid: %v", err)
	}
	return pid
}

// A handler that watches its ctx sees the cancel and stops: with one
// handler thread, the next call is answered only because it did.
func TestCancelStopsACooperativeHandler(t *testing.T) {
	p := spawnOne(t, nil)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	errc := callAsync(ctx, p, "wait_cancel", dir)
	waitFile(t, filepath.Join(dir, "started"))
	cancelledAt := time.Now()
	cancel()
	err := <-errc
	wantCancelled(t, "wait_cancel", err)
	if want := `multifrost: call "wait_cancel": call to 'wait_cancel' was cancelled`; err == nil || err.Error() != want {
		t.Errorf("text %q, want %q", err, want)
	}

	var n int
	if err := p.Call(bg(t), "add", &n, 1, 2); err != nil || n != 3 {
		t.Fatalf("add after the cancel = %d, %v", n, err)
	}
	seen, err := strconv.ParseInt(string(waitFile(t, filepath.Join(dir, "seen"))), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the handler saw the cancel %v after ctx was cancelled", time.Unix(0, seen).Sub(cancelledAt))
	st := stats(t, p)
	if st.Cancels != 1 || st.Escalations != 0 || st.CircuitState != "closed" || st.InFlight != 0 {
		t.Errorf("stats: %+v", st)
	}
}

// A handler that ignores the cancel is stopped with its worker after the
// cancel grace; a call running beside it ends with the worker's exit, and
// the restarted worker answers the next call.
func TestHandlerIgnoringCancelIsStopped(t *testing.T) {
	t.Setenv("MF_TEST_CONCURRENCY", "2") // the spinner's thread and its neighbour's
	p := spawn(t, &multifrost.Options{
		CancelGrace:   300 * time.Millisecond,
		ShutdownGrace: 500 * time.Millisecond,
		AutoRestart:   1,
	})
	pid := pidOf(t, p)
	spinning, beside := t.TempDir(), t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	spin := callAsync(ctx, p, "spin_ms", spinning, 120000)
	waitFile(t, filepath.Join(spinning, "started"))
	ctxBeside, cancelBeside := context.WithTimeout(context.Background(), time.Minute)
	defer cancelBeside()
	running := callAsync(ctxBeside, p, "wait_cancel", beside)
	waitFile(t, filepath.Join(beside, "started"))

	cancel()
	wantCancelled(t, "spin_ms", <-spin)
	err := <-running
	if !errors.Is(err, multifrost.ErrWorkerExited) ||
		!strings.Contains(err.Error(), "worker stopped: a handler of 'spin_ms' ran on ") {
		t.Errorf("the call running beside the spinner: %v, want ErrWorkerExited naming spin_ms", err)
	}
	if again := pidOf(t, p); again == pid {
		t.Errorf("the worker answering after the escalation is the old one (pid %d)", pid)
	}
	st := stats(t, p)
	if st.Escalations != 1 || st.Restarts != 1 || st.Cancels != 1 {
		t.Errorf("stats: %+v", st)
	}
}

// A call cancelled while it waits in the worker for the one thread never
// runs. The worker reads B's cancel before A's, and A ends only on its own.
func TestCallCancelledBeforeItsHandlerStartsNeverRuns(t *testing.T) {
	p := spawnOne(t, nil)
	dir := t.TempDir()
	ctxA, cancelA := context.WithCancel(context.Background())
	a := callAsync(ctxA, p, "wait_cancel", dir)
	waitFile(t, filepath.Join(dir, "started"))
	ctxB, cancelB := context.WithCancel(context.Background())
	b := callAsync(ctxB, p, "bump")
	settle(t, func() bool { return stats(t, p).InFlight == 2 }, func() string { return "bump never got in flight" })

	cancelB()
	wantCancelled(t, "bump", <-b)
	cancelA()
	wantCancelled(t, "wait_cancel", <-a)

	var bumps int64
	if err := p.Call(bg(t), "bump", &bumps); err != nil || bumps != 1 {
		t.Errorf("bump = %d, %v; want 1: the cancelled bump must not have run", bumps, err)
	}
}

// A call whose timeout passed while it waited in the worker never runs.
func TestCallPastItsDeadlineInTheWorkerNeverRuns(t *testing.T) {
	// The library's timer, not the ctx's, ends bump (its ctx has none).
	p := spawnOne(t, &multifrost.Options{DefaultTimeout: 300 * time.Millisecond})
	dir := t.TempDir()
	ctxA, cancelA := context.WithTimeout(context.Background(), time.Minute)
	defer cancelA()
	a := callAsync(ctxA, p, "wait_cancel", dir)
	waitFile(t, filepath.Join(dir, "started"))

	err := p.Call(context.Background(), "bump", nil)
	var e *multifrost.Error
	if !errors.Is(err, multifrost.ErrTimeout) || !errors.As(err, &e) || e.Status != multifrost.StatusTimeout {
		t.Errorf("bump behind a busy thread: %v, want ErrTimeout", err)
	}
	cancelA()
	wantCancelled(t, "wait_cancel", <-a)

	var bumps int64
	if err := p.Call(bg(t), "bump", &bumps); err != nil || bumps != 1 {
		t.Errorf("bump = %d, %v; want 1: the timed-out bump must not have run", bumps, err)
	}
	if st := stats(t, p); st.Timeouts != 1 || st.CircuitState != "closed" {
		t.Errorf("stats: %+v", st)
	}
}

// Calls cancelled at random, many at once and one at a time: each ends
// exactly once, with its own value or cancelled, and the library's
// counters agree (every call it took either succeeded or was cancelled).
func TestManyCallsCancelledAtRandomEndOnce(t *testing.T) {
	p := spawn(t, nil)
	runtime.GC()
	baseHandles := multifrost.LiveHandles()
	rng := rand.New(rand.NewPCG(19, uint64(time.Now().UnixNano())))
	var values, cancelled, unasked int
	var mu sync.Mutex
	one := func(i int, cancelIt bool, delay time.Duration) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if cancelIt {
			time.AfterFunc(delay, cancel)
		}
		var v int
		err := p.Call(ctx, "echo_after", &v, i%4, i)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil && v == i:
			values++
		case err == nil:
			t.Errorf("call %d answered %d", i, v)
		case cancelIt && errors.Is(err, multifrost.ErrCancelled) && errors.Is(err, context.Canceled):
			cancelled++
		default:
			t.Errorf("call %d (cancelled: %v): %v", i, cancelIt, err)
		}
	}
	const together, alone = 1000, 200
	var wg sync.WaitGroup
	for i := range together {
		cancelIt, delay := rng.IntN(2) == 0, time.Duration(rng.IntN(4000))*time.Microsecond
		wg.Add(1)
		go func() {
			defer wg.Done()
			one(i, cancelIt, delay)
		}()
	}
	wg.Wait()
	for i := range alone {
		one(together+i, rng.IntN(2) == 0, time.Duration(rng.IntN(4000))*time.Microsecond)
	}
	if values+cancelled != together+alone {
		t.Fatalf("%d values + %d cancelled, want %d calls", values, cancelled, together+alone)
	}
	st := stats(t, p)
	// A ctx cancelled before its call started never reached the library.
	unasked = together + alone - int(st.RequestsTotal)
	if st.InFlight != 0 || st.RequestsSuccess != uint64(values) ||
		st.Cancels != uint64(cancelled-unasked) || st.RequestsTotal != st.RequestsSuccess+st.Cancels {
		t.Errorf("%d values, %d cancelled (%d before they started); stats %+v", values, cancelled, unasked, st)
	}
	t.Logf("%d values, %d cancelled, %d of them before they started", values, cancelled, unasked)
	if cancelled-unasked == 0 {
		t.Error("no call was cancelled in flight")
	}
	settle(t, func() bool { return multifrost.LiveHandles() == baseHandles }, func() string {
		return "handles left: " + strconv.FormatInt(multifrost.LiveHandles()-baseHandles, 10)
	})
}

// A worker that stops answering heartbeats (SIGSTOP) is stopped after
// MaxMisses and restarted; its call in flight ends with its exit.
func TestHungWorkerIsRestarted(t *testing.T) {
	p := spawn(t, &multifrost.Options{
		Heartbeat:     &multifrost.Heartbeat{Interval: 200 * time.Millisecond, Timeout: time.Second, MaxMisses: 2},
		AutoRestart:   1,
		ShutdownGrace: 500 * time.Millisecond,
	})
	pid := pidOf(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inFlight := callAsync(ctx, p, "sleep_ms", 60000)
	settle(t, func() bool { return stats(t, p).InFlight == 1 }, func() string { return "sleep_ms never got in flight" })
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	err := <-inFlight
	if !errors.Is(err, multifrost.ErrWorkerExited) ||
		!strings.Contains(err.Error(), "worker stopped: it missed 2 heartbeats in a row (hung)") {
		t.Errorf("the call in flight in the hung worker: %v, want ErrWorkerExited for the hang", err)
	}
	if again := pidOf(t, p); again == pid {
		t.Errorf("the hung worker (pid %d) still answers", pid)
	}
	if st := stats(t, p); st.Hangs != 1 || st.Restarts != 1 {
		t.Errorf("stats: %+v", st)
	}
}

// Each status reaches the caller as its own sentinel, matching no other;
// real calls produce every status they can.
func TestEachStatusHasItsSentinel(t *testing.T) {
	sentinels := map[multifrost.Status]error{
		multifrost.StatusInvalidArgument: multifrost.ErrInvalidArgument,
		multifrost.StatusTimeout:         multifrost.ErrTimeout,
		multifrost.StatusRemote:          multifrost.ErrRemote,
		multifrost.StatusCircuitOpen:     multifrost.ErrCircuitOpen,
		multifrost.StatusWorkerExited:    multifrost.ErrWorkerExited,
		multifrost.StatusNotFound:        multifrost.ErrNotFound,
		multifrost.StatusAlreadyRunning:  multifrost.ErrAlreadyRunning,
		multifrost.StatusProtocol:        multifrost.ErrProtocol,
		multifrost.StatusIO:              multifrost.ErrIO,
		multifrost.StatusClosed:          multifrost.ErrClosed,
		multifrost.StatusPanic:           multifrost.ErrPanic,
		multifrost.StatusCancelled:       multifrost.ErrCancelled,
		multifrost.StatusNoSuchFunction:  multifrost.ErrNoSuchFunction,
	}
	// The Go names and values are the header's.
	for s := multifrost.StatusOK; s <= multifrost.StatusNoSuchFunction; s++ {
		if s.String() != multifrost.CStatusName(s) {
			t.Errorf("Status(%d) is %s in Go, %s in the library", int(s), s, multifrost.CStatusName(s))
		}
		if s != multifrost.StatusOK && s.Sentinel() != sentinels[s] {
			t.Errorf("%s.Sentinel() = %v", s, s.Sentinel())
		}
	}
	if len(sentinels) != int(multifrost.StatusNoSuchFunction) {
		t.Errorf("%d sentinels for %d failure statuses", len(sentinels), int(multifrost.StatusNoSuchFunction))
	}

	p := spawn(t, &multifrost.Options{DefaultTimeout: 300 * time.Millisecond})
	tripped := spawn(t, &multifrost.Options{Breaker: &multifrost.Breaker{Threshold: 1, Cooldown: time.Minute, CountRemoteErrors: true}})
	_ = tripped.Call(bg(t), "fail", nil, "ValueError: trip")
	exited := spawn(t, nil)
	closed := spawn(t, nil)
	closed.Close()
	ctx, cancel := context.WithCancel(context.Background())
	running := callAsync(ctx, p, "sleep_ms", 60000)
	settle(t, func() bool { return stats(t, p).InFlight == 1 }, func() string { return "sleep_ms never got in flight" })
	cancel()
	cancelled := <-running
	id := serviceID(t)
	w, err := multifrost.NewWorker(id)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	_, alreadyRunning := multifrost.NewWorker(id)
	_, notFound := multifrost.Connect(bg(t), "no-such-service", &multifrost.Options{ConnectTimeout: 300 * time.Millisecond})
	_, ioErr := multifrost.Spawn(bg(t), "/nonexistent/worker", nil, nil)

	for _, c := range []struct {
		status multifrost.Status
		err    error
		text   string // what err.Error() starts with
	}{
		{multifrost.StatusInvalidArgument, p.Call(bg(t), "", nil), `multifrost: call "": `},
		{multifrost.StatusTimeout, p.Call(context.Background(), "sleep_ms", nil, 5000), `multifrost: call "sleep_ms": `},
		{multifrost.StatusRemote, p.Call(bg(t), "fail", nil, "ValueError: bad"), "remote error: ValueError: bad"},
		{multifrost.StatusCircuitOpen, tripped.Call(bg(t), "add", nil, 1, 2), `multifrost: call "add": `},
		{multifrost.StatusWorkerExited, exited.Call(bg(t), "exit", nil, 3), `multifrost: call "exit": `},
		{multifrost.StatusNotFound, notFound, "multifrost: connect no-such-service: "},
		{multifrost.StatusAlreadyRunning, alreadyRunning, "multifrost: new worker " + id + ": "},
		{multifrost.StatusIO, ioErr, "multifrost: spawn /nonexistent/worker: "},
		{multifrost.StatusClosed, closed.Call(bg(t), "add", nil, 1, 2), `multifrost: call "add": the parent is closed`},
		{multifrost.StatusCancelled, cancelled, `multifrost: call "sleep_ms": call to 'sleep_ms' was cancelled`},
		{multifrost.StatusNoSuchFunction, p.Call(bg(t), "nosuch", nil), `multifrost: call "nosuch": Function 'nosuch' not found`},
	} {
		if c.err == nil || !strings.HasPrefix(c.err.Error(), c.text) {
			t.Errorf("%s: %v, want a text starting %q", c.status, c.err, c.text)
			continue
		}
		t.Logf("%-24s %s", c.status, c.err)
		for s, sentinel := range sentinels {
			if got := errors.Is(c.err, sentinel); got != (s == c.status) {
				t.Errorf("%s: errors.Is(%v, %v) = %v", c.status, c.err, sentinel, got)
			}
		}
		var e *multifrost.Error
		var re *multifrost.RemoteError
		if c.status == multifrost.StatusRemote {
			if !errors.As(c.err, &re) {
				t.Errorf("%s: %T, want a *RemoteError", c.status, c.err)
			}
		} else if !errors.As(c.err, &e) || e.Status != c.status {
			t.Errorf("%s: %#v, want an *Error with that status", c.status, c.err)
		}
	}
}
