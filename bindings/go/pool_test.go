package multifrost_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	multifrost "github.com/multifrost/libmultifrost/bindings/go"
)

// spawnPool starts a pool of program that is closed when the test ends.
func spawnPool(t *testing.T, program string, opts *multifrost.Options) *multifrost.Parent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := multifrost.Spawn(ctx, program, nil, opts)
	if err != nil {
		t.Fatalf("Spawn %d workers: %v", opts.Workers, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// poolPIDs are the pids of the pool's workers, in the stats' order.
func poolPIDs(t *testing.T, p *multifrost.Parent) []int {
	t.Helper()
	var pids []int
	for _, w := range stats(t, p).Workers {
		pids = append(pids, w.PID)
	}
	return pids
}

// alive says whether a process pid exists (a zombie too: it is not reaped).
func alive(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}

// callPIDs calls "pid" n times from each of g goroutines and counts the
// answers by pid.
func callPIDs(t *testing.T, p *multifrost.Parent, g, n int) map[int]int {
	t.Helper()
	var mu sync.Mutex
	byPID := map[int]int{}
	var wg sync.WaitGroup
	for range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				var pid int
				if err := p.Call(bg(t), "pid", &pid); err != nil {
					t.Errorf("pid: %v", err)
					return
				}
				mu.Lock()
				byPID[pid]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return byPID
}

func keys(m map[int]int) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func sorted(xs []int) []int {
	out := slices.Clone(xs)
	slices.Sort(out)
	return out
}

func TestPoolSpreadsCallsOverItsWorkers(t *testing.T) {
	p := spawnPool(t, workerBin, &multifrost.Options{Workers: 3})
	st := stats(t, p)
	if len(st.Workers) != 3 {
		t.Fatalf("stats of a pool of 3: %+v", st)
	}
	pids := poolPIDs(t, p)
	for _, w := range st.Workers {
		if w.PID <= 0 || !w.Healthy || w.InFlight != 0 || !alive(w.PID) {
			t.Errorf("a fresh worker: %+v", w)
		}
	}
	if len(slices.Compact(sorted(pids))) != 3 {
		t.Fatalf("three processes, three pids: %v", pids)
	}

	byPID := callPIDs(t, p, 30, 10)
	if !slices.Equal(keys(byPID), sorted(pids)) {
		t.Fatalf("the pids that answered %v, the pool's %v", byPID, pids)
	}
	for pid, n := range byPID {
		if n == 0 {
			t.Errorf("worker %d answered no call: %v", pid, byPID)
		}
	}
	// Each worker's count is its share of the total.
	st = stats(t, p)
	var sum uint64
	for _, w := range st.Workers {
		sum += w.RequestsTotal
		if w.RequestsTotal != uint64(byPID[w.PID]) {
			t.Errorf("worker %d counted %d calls, answered %d", w.PID, w.RequestsTotal, byPID[w.PID])
		}
	}
	if st.RequestsTotal != 300 || sum != 300 || st.RequestsSuccess != 300 || st.InFlight != 0 || !st.Healthy {
		t.Errorf("stats after 300 calls (workers' sum %d): %+v", sum, st)
	}
}

// Each worker holds two calls; killing one fails only its two, the others
// keep answering, and the killed one is restarted in its place.
func TestPoolKilledWorkerFailsOnlyItsCallsAndIsRestarted(t *testing.T) {
	p := spawnPool(t, workerBin, &multifrost.Options{Workers: 3, AutoRestart: 3})
	before := poolPIDs(t, p)
	gate := filepath.Join(t.TempDir(), "go")

	type outcome struct {
		pid int
		err error
	}
	outcomes := make(chan outcome, 6)
	for range 6 {
		go func() {
			var pid int
			err := p.Call(bg(t), "await_file", &pid, gate)
			outcomes <- outcome{pid, err}
		}()
	}
	settle(t, func() bool {
		for _, w := range stats(t, p).Workers {
			if w.InFlight != 2 {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("two calls in each worker: %+v", stats(t, p).Workers) })

	killed := before[0]
	if err := syscall.Kill(killed, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The calls of the other workers cannot end before the gate opens, so
	// the first two outcomes are the killed worker's.
	for range 2 {
		o := <-outcomes
		if !errors.Is(o.err, multifrost.ErrWorkerExited) {
			t.Fatalf("a call in the killed worker: pid %d, %v", o.pid, o.err)
		}
	}
	// Meanwhile the others answer.
	for range 20 {
		var pid int
		if err := p.Call(bg(t), "pid", &pid); err != nil || pid == killed {
			t.Fatalf("pid while one worker is down: %d, %v", pid, err)
		}
	}
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		o := <-outcomes
		if o.err != nil || (o.pid != before[1] && o.pid != before[2]) {
			t.Errorf("a call in a surviving worker (%v): pid %d, %v", before[1:], o.pid, o.err)
		}
	}

	settle(t, func() bool {
		w := stats(t, p).Workers[0]
		return w.Healthy && w.Restarts == 1 && w.PID > 0 && w.PID != killed
	}, func() string { return fmt.Sprintf("the killed worker never came back: %+v", stats(t, p)) })
	after := poolPIDs(t, p)
	if after[1] != before[1] || after[2] != before[2] {
		t.Errorf("the other workers were left alone: before %v, after %v", before, after)
	}
	if alive(killed) {
		t.Errorf("the killed worker %d was not reaped", killed)
	}
	if st := stats(t, p); st.Restarts != 1 || st.CircuitState != "closed" {
		t.Errorf("stats after the restart: %+v", st)
	}
	// All three take calls again.
	if byPID := callPIDs(t, p, 1, 30); !slices.Equal(keys(byPID), sorted(after)) {
		t.Errorf("the pids that answered %v, the pool's %v", byPID, after)
	}
}

// One worker recycled every 5 calls: the pids come in runs of 5.
func TestPoolRecyclesAWorkerAfterItsCalls(t *testing.T) {
	p := spawnPool(t, workerBin, &multifrost.Options{Workers: 1, MaxCallsPerWorker: 5})
	var runs []int
	last := 0
	for range 12 {
		var pid int
		if err := p.Call(bg(t), "pid", &pid); err != nil {
			t.Fatalf("pid: %v", err)
		}
		if pid != last {
			runs = append(runs, 0)
			last = pid
		}
		runs[len(runs)-1]++
	}
	if !slices.Equal(runs, []int{5, 5, 2}) {
		t.Errorf("runs of calls answered by one pid: %v", runs)
	}
	if st := stats(t, p); st.Recycles != 2 || st.Restarts != 0 || st.RequestsFailed != 0 || st.Workers[0].Recycles != 2 {
		t.Errorf("stats after two recycles: %+v", st)
	}
}

// Concurrent calls through a recycling pool: every call answers its own
// token, and every worker is replaced by a new process.
func TestPoolRecyclingLosesNoCall(t *testing.T) {
	p := spawnPool(t, workerBin, &multifrost.Options{Workers: 2, MaxCallsPerWorker: 5})
	before := poolPIDs(t, p)
	var wg sync.WaitGroup
	for g := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5 {
				token := fmt.Sprintf("token-%d-%d", g, i)
				var got string
				if err := p.Call(bg(t), "echo_string", &got, token); err != nil || got != token {
					t.Errorf("echo_string(%q): %q, %v", token, got, err)
				}
			}
		}()
	}
	wg.Wait()
	st := stats(t, p)
	if st.RequestsTotal != 100 || st.RequestsSuccess != 100 || st.RequestsFailed != 0 || st.Recycles == 0 {
		t.Errorf("stats after 100 calls: %+v", st)
	}
	var recycles uint64
	for i, w := range st.Workers {
		recycles += w.Recycles
		if w.Recycles == 0 {
			t.Errorf("worker %d was never recycled: %+v", i, st.Workers)
		}
	}
	if recycles != st.Recycles {
		t.Errorf("the workers' recycles add up to %d, the total is %d", recycles, st.Recycles)
	}
	settle(t, func() bool {
		for _, w := range stats(t, p).Workers {
			if !w.Healthy || w.PID <= 0 || slices.Contains(before, w.PID) {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("new pids (before %v): %+v", before, stats(t, p).Workers) })
	for _, pid := range before {
		if alive(pid) {
			t.Errorf("recycled worker %d was not reaped", pid)
		}
	}
}

func TestPoolCloseReapsEveryWorker(t *testing.T) {
	p := spawnPool(t, workerBin, &multifrost.Options{Workers: 3})
	pids := poolPIDs(t, p)
	for _, pid := range pids {
		if !alive(pid) {
			t.Fatalf("worker %d is not running before Close", pid)
		}
	}
	p.Close()
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("worker %d is still there after Close", pid)
		}
	}
}

// A Go parent with a pool of C workers.
func TestPoolOfCWorkers(t *testing.T) {
	if _, err := os.Stat(cTestWorker); err != nil {
		t.Fatalf("the C test worker is not built (make programs): %v", err)
	}
	p := spawnPool(t, cTestWorker, &multifrost.Options{Workers: 3})
	pids := poolPIDs(t, p)
	if byPID := callPIDs(t, p, 10, 6); !slices.Equal(keys(byPID), sorted(pids)) {
		t.Errorf("the pids that answered %v, the pool's %v", byPID, pids)
	}
	var sum int
	if err := p.Call(bg(t), "add", &sum, 2, 3); err != nil || sum != 5 {
		t.Errorf("add(2, 3) = %d, %v", sum, err)
	}
	var echoed string
	if err := p.Call(bg(t), "echo", &echoed, "from Go"); err != nil || echoed != "from Go" {
		t.Errorf("echo: %q, %v", echoed, err)
	}
}

func TestPoolWorkerCounts(t *testing.T) {
	// 0 keeps the default: one worker.
	p := spawn(t, &multifrost.Options{Workers: 0})
	if st := stats(t, p); len(st.Workers) != 1 || st.Workers[0].PID != st.WorkerPID {
		t.Errorf("stats of the default: %+v", st)
	}

	for _, c := range []struct {
		workers int
		text    string
	}{
		{257, "Options.Workers: workers must be 1..=256, got 257"},
		// Beyond uint32: the library is handed the largest uint32, not a
		// value that wrapped around into range.
		{math.MaxInt, fmt.Sprintf("Options.Workers: workers must be 1..=256, got %d", min(uint64(math.MaxInt), math.MaxUint32))},
		{-1, "Options.Workers must not be negative"},
	} {
		_, err := multifrost.Spawn(bg(t), workerBin, nil, &multifrost.Options{Workers: c.workers})
		var e *multifrost.Error
		if !errors.Is(err, multifrost.ErrInvalidArgument) || !errors.As(err, &e) || e.Message != c.text {
			t.Errorf("Workers %d: %v", c.workers, err)
		}
	}

	_, err := multifrost.Connect(bg(t), "some-service", &multifrost.Options{Workers: 2})
	if !errors.Is(err, multifrost.ErrInvalidArgument) || !strings.Contains(err.Error(), "a service id or an endpoint is one worker") {
		t.Errorf("Connect with 2 workers: %v", err)
	}
}
