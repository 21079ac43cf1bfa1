package multifrost_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	multifrost "github.com/multifrost/libmultifrost/bindings/go"
)

// workerBin is the test worker (internal/testworker), built by TestMain.
var workerBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "multifrost-go-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	workerBin = filepath.Join(tmp, "testworker")
	args := []string{"build", "-o", workerBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./internal/testworker")
	cmd := exec.Command("go", args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the test worker:", err)
		return 1
	}

	// Connect-mode tests register services: keep them out of the real
	// registry. Set only after `go build`, whose module cache and build
	// cache default to places under HOME. The library reads HOME through
	// the C environment, which os.Setenv updates in a cgo program.
	home := filepath.Join(tmp, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Setenv("HOME", home)
	// A race-enabled worker otherwise sleeps 1 s at exit (so that
	// other goroutines can report races), which would slow every Close.
	os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	multifrost.SetLogHandler(testLog)
	return m.Run()
}

// testLog shows the library's log events only with -v.
func testLog(e multifrost.LogEvent) {
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "[multifrost %s] %s\n", e.Level, e.Message)
	}
}

// spawn starts a test worker that is closed when the test ends.
func spawn(t testing.TB, opts *multifrost.Options) *multifrost.Parent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := multifrost.Spawn(ctx, workerBin, nil, opts)
	if err != nil {
		t.Fatalf("Spawn: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func bg(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// settle waits until cond holds (goroutines and handles wind down
// asynchronously after Close), failing with what() after a deadline that
// only guards against a hang.
func settle(t testing.TB, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(what())
		}
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
	}
}

// goroutines counts goroutines, leaving out os/signal's loop: the runtime
// starts it at the first signal.Notify (Worker.Serve) and keeps it forever.
func goroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.HasPrefix(g, "goroutine ") && !strings.Contains(g, "os/signal.loop") {
			count++
		}
	}
	return count
}

// parked asks the test worker how many calls of park(tag) it has had: a
// parked call answers only after unpark(tag), so it is in flight for as long
// as a test needs, with no time in it.
func parked(t testing.TB, p *multifrost.Parent, tag string) int {
	t.Helper()
	var n int
	if err := p.Call(bg(t), "parked", &n, tag); err != nil {
		t.Fatalf("parked(%q): %v", tag, err)
	}
	return n
}

// unpark lets the calls parked under tag answer; it returns how many there were.
func unpark(t testing.TB, p *multifrost.Parent, tag string) int {
	t.Helper()
	var n int
	if err := p.Call(bg(t), "unpark", &n, tag); err != nil {
		t.Fatalf("unpark(%q): %v", tag, err)
	}
	return n
}

// cancelWhenParked calls cancel once the worker has a call parked under tag
// (or after 30 s, a hang guard): a cancellation while the call is in flight.
func cancelWhenParked(p *multifrost.Parent, tag string, cancel context.CancelFunc) {
	defer cancel()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		var n int
		if err := p.Call(context.Background(), "parked", &n, tag); err != nil || n > 0 {
			return
		}
	}
}
