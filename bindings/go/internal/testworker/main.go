// Command testworker is the Go worker the binding's tests spawn. With no
// argument (or "--worker") it serves in spawn mode; with a service id or a
// tcp:// endpoint it serves in connect mode. MF_TEST_CONCURRENCY sets the
// number of handler threads (default 4).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	multifrost "github.com/multifrost/libmultifrost/bindings/go"
)

// Point round-trips as a map {"x": .., "y": .., "label": ..}.
type Point struct {
	X     int    `msgpack:"x"`
	Y     int    `msgpack:"y"`
	Label string `msgpack:"label,omitempty"`
}

func main() {
	id := ""
	if len(os.Args) > 1 && os.Args[1] != "--worker" {
		id = os.Args[1]
	}
	w, err := multifrost.NewWorker(id)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testworker:", err)
		os.Exit(2)
	}
	concurrency := 4
	if s := os.Getenv("MF_TEST_CONCURRENCY"); s != "" {
		concurrency, _ = strconv.Atoi(s)
	}
	must(w.SetConcurrency(concurrency))

	must(w.Handle("add", func(a, b int) int { return a + b }))
	must(w.Handle("echo", func(v any) any { return v }))
	must(w.Handle("echo_int", func(v int) int { return v }))
	must(w.Handle("echo_int64", func(v int64) int64 { return v }))
	must(w.Handle("echo_uint64", func(v uint64) uint64 { return v }))
	must(w.Handle("echo_float", func(v float64) float64 { return v }))
	must(w.Handle("echo_string", func(v string) string { return v }))
	must(w.Handle("echo_bytes", func(v []byte) []byte { return v }))
	must(w.Handle("bytes_as_string", func(v []byte) string { return string(v) }))
	must(w.Handle("echo_bool", func(v bool) bool { return v }))
	must(w.Handle("echo_list", func(v []any) []any { return v }))
	must(w.Handle("echo_map", func(v map[string]any) map[string]any { return v }))
	must(w.Handle("echo_point", func(p Point) Point { return p }))
	must(w.Handle("move", func(p Point, dx, dy int) Point {
		return Point{X: p.X + dx, Y: p.Y + dy, Label: p.Label}
	}))
	must(w.Handle("sum", func(xs ...int) int {
		t := 0
		for _, x := range xs {
			t += x
		}
		return t
	}))
	must(w.Handle("describe", func(v any) string { return fmt.Sprintf("%T", v) }))
	must(w.Handle("divide", func(a, b float64) (float64, error) {
		if b == 0 {
			return 0, errors.New("ZeroDivisionError: division by zero")
		}
		return a / b, nil
	}))
	must(w.Handle("fail", func(msg string) error { return errors.New(msg) }))
	must(w.Handle("boom", func() int { panic("boom") }))
	must(w.Handle("nothing", func() {}))
	must(w.Handle("pid", os.Getpid))
	must(w.Handle("exit", func(code int) int { os.Exit(code); return 0 }))
	// sleep_ms stops when its call is cancelled (or the worker stops).
	must(w.Handle("sleep_ms", func(ctx context.Context, ms int) (int, error) {
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			return ms, nil
		case <-ctx.Done():
			return 0, stopped(ctx)
		}
	}))
	// park(tag) answers only after unpark(tag) (or when the worker stops): a
	// call in flight for as long as a test needs, with no time in it. It
	// holds one handler thread while it waits.
	var mu sync.Mutex
	gates := map[string]chan struct{}{}
	parked := map[string]int{}
	gate := func(tag string) chan struct{} {
		if gates[tag] == nil {
			gates[tag] = make(chan struct{})
		}
		return gates[tag]
	}
	must(w.Handle("park", func(ctx context.Context, tag string) (string, error) {
		mu.Lock()
		g := gate(tag)
		parked[tag]++
		mu.Unlock()
		select {
		case <-g:
			return tag, nil
		case <-ctx.Done():
			return "", stopped(ctx)
		}
	}))
	must(w.Handle("parked", func(tag string) int {
		mu.Lock()
		defer mu.Unlock()
		return parked[tag]
	}))
	must(w.Handle("unpark", func(tag string) int {
		mu.Lock()
		defer mu.Unlock()
		close(gate(tag))
		delete(gates, tag)
		n := parked[tag]
		delete(parked, tag)
		return n
	}))
	// echo_after answers v after ms, or stops when cancelled.
	must(w.Handle("echo_after", func(ctx context.Context, ms, v int) (int, error) {
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			return v, nil
		case <-ctx.Done():
			return 0, stopped(ctx)
		}
	}))
	// wait_cancel writes dir/started when it runs, waits for its cancel
	// and writes the time it saw it (Unix ns) to dir/seen.
	must(w.Handle("wait_cancel", func(ctx context.Context, dir string) error {
		if err := os.WriteFile(filepath.Join(dir, "started"), nil, 0o600); err != nil {
			return err
		}
		<-ctx.Done()
		seen := strconv.FormatInt(time.Now().UnixNano(), 10)
		if err := os.WriteFile(filepath.Join(dir, "seen"), []byte(seen), 0o600); err != nil {
			return err
		}
		return stopped(ctx)
	}))
	// spin_ms writes dir/started, then keeps a thread busy for ms,
	// ignoring any cancel.
	must(w.Handle("spin_ms", func(dir string, ms int) (int, error) {
		if err := os.WriteFile(filepath.Join(dir, "started"), nil, 0o600); err != nil {
			return 0, err
		}
		for end := time.Now().Add(time.Duration(ms) * time.Millisecond); time.Now().Before(end); {
		}
		return ms, nil
	}))
	// await_file answers this worker's pid once path exists (or stops
	// when cancelled): a call in flight until the test creates the file,
	// which releases such calls in every worker of a pool at once.
	must(w.Handle("await_file", func(ctx context.Context, path string) (int, error) {
		for {
			if _, err := os.Stat(path); err == nil {
				return os.Getpid(), nil
			}
			select {
			case <-time.After(5 * time.Millisecond):
			case <-ctx.Done():
				return 0, stopped(ctx)
			}
		}
	}))
	// bump is a side effect: it returns how many times it has run.
	var bumps atomic.Int64
	must(w.Handle("bump", func() int64 { return bumps.Add(1) }))

	// Streams: count yields 0..n-1; counted returns [items yielded,
	// streams that saw their caller close them].
	var yielded, closed atomic.Int64
	count := func(yield multifrost.Yield, n int) error {
		for i := range n {
			if err := yield(i); err != nil {
				if errors.Is(err, multifrost.ErrCancelled) {
					closed.Add(1)
				}
				return err
			}
			yielded.Add(1)
		}
		return nil
	}
	must(w.Handle("count", count))
	// count_plain declares its yield as a plain func type.
	must(w.Handle("count_plain", func(yield func(any) error, n int) error { return count(yield, n) }))
	must(w.Handle("counted", func() []int64 { return []int64{yielded.Load(), closed.Load()} }))
	// count_fail yields 0..n-1, then fails.
	must(w.Handle("count_fail", func(yield multifrost.Yield, n int) error {
		if err := count(yield, n); err != nil {
			return err
		}
		return fmt.Errorf("ValueError: stopped after %d", n)
	}))
	// count_slow yields 0..n-1, ms apart.
	must(w.Handle("count_slow", func(ctx context.Context, yield multifrost.Yield, n, ms int) error {
		for i := range n {
			select {
			case <-ctx.Done():
				return stopped(ctx)
			case <-time.After(time.Duration(ms) * time.Millisecond):
			}
			if err := yield(i); err != nil {
				return err
			}
		}
		return nil
	}))
	// count_then_wait yields 0..n-1, then waits for its cancel (counted
	// as a close) without yielding again: the caller waits for an item
	// that never comes.
	must(w.Handle("count_then_wait", func(ctx context.Context, yield multifrost.Yield, n int) error {
		if err := count(yield, n); err != nil {
			return err
		}
		<-ctx.Done()
		if context.Cause(ctx) == multifrost.ErrCancelled {
			closed.Add(1)
		}
		return stopped(ctx)
	}))
	// count_exit yields 0..n-1, then the worker exits.
	must(w.Handle("count_exit", func(ctx context.Context, yield multifrost.Yield, n int) error {
		if err := count(yield, n); err != nil {
			return err
		}
		os.Exit(3)
		return nil
	}))

	if err := w.Serve(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "testworker:", err)
		os.Exit(2)
	}
	must(w.Close())
}

// stopped is a handler's answer once its ctx has ended.
func stopped(ctx context.Context) error {
	if context.Cause(ctx) == multifrost.ErrCancelled {
		return errors.New("CancelledError: the call was cancelled")
	}
	return errors.New("CancelledError: the worker is stopping")
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "testworker:", err)
		os.Exit(2)
	}
}
