package multifrost_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	multifrost "github.com/multifrost/libmultifrost/bindings/go"
)

// counted asks the test worker for [items yielded, streams closed by their caller].
func counted(t testing.TB, p *multifrost.Parent) [2]int64 {
	t.Helper()
	var c []int64
	if err := p.Call(bg(t), "counted", &c); err != nil || len(c) != 2 {
		t.Fatalf("counted: %v, %v", c, err)
	}
	return [2]int64{c[0], c[1]}
}

func TestStreamItemsInOrder(t *testing.T) {
	p := spawn(t, nil)
	var got []int
	for item, err := range p.Stream(bg(t), "count", 40) {
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		var n int
		if err := item.Decode(&n); err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
	}
	if len(got) != 40 {
		t.Fatalf("got %d items: %v", len(got), got)
	}
	for i, n := range got {
		if n != i {
			t.Fatalf("item %d is %d: %v", i, n, got)
		}
	}
	st, err := p.Stats()
	if err != nil || st.InFlight != 0 {
		t.Errorf("stats after the stream: %+v, %v", st, err)
	}
}

// Items that take a while to come, with a ctx that can be cancelled (a
// cancel would wake the wait) and with one that cannot.
func TestStreamSlowItems(t *testing.T) {
	p := spawn(t, nil)
	for _, ctx := range []context.Context{bg(t), context.Background()} {
		var got []int
		for n, err := range multifrost.StreamOf[int](ctx, p, "count_slow", 3, 150) {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, n)
		}
		if !reflect.DeepEqual(got, []int{0, 1, 2}) {
			t.Fatalf("count_slow: %v", got)
		}
	}
}

func TestStreamYieldAsPlainFunc(t *testing.T) {
	p := spawn(t, nil)
	var got []int
	for n, err := range multifrost.StreamOf[int](bg(t), p, "count_plain", 3) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
	}
	if !reflect.DeepEqual(got, []int{0, 1, 2}) {
		t.Fatalf("count_plain: %v", got)
	}
}

func TestStreamOf(t *testing.T) {
	p := spawn(t, nil)
	var got []int
	for n, err := range multifrost.StreamOf[int](bg(t), p, "count", 3) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
	}
	if !reflect.DeepEqual(got, []int{0, 1, 2}) {
		t.Fatalf("got %v", got)
	}
	// An item that does not fit T ends the iteration with an error.
	var errs int
	for _, err := range multifrost.StreamOf[string](bg(t), p, "count", 3) {
		if err == nil || !errors.Is(err, multifrost.ErrInvalidArgument) {
			t.Fatalf("decoding an int into a string: %v", err)
		}
		errs++
	}
	if errs != 1 {
		t.Fatalf("%d errors yielded, want 1", errs)
	}
}

func TestStreamNoItems(t *testing.T) {
	p := spawn(t, nil)
	for item, err := range p.Stream(bg(t), "count", 0) {
		t.Fatalf("count(0) yielded %v, %v", item, err)
	}
	// A handler that does not yield: the stream ends with no item.
	for item, err := range p.Stream(bg(t), "add", 1, 2) {
		t.Fatalf("add yielded %v, %v", item, err)
	}
}

func TestStreamErrorAfterItems(t *testing.T) {
	p := spawn(t, nil)
	var got []any
	var final error
	for item, err := range p.Stream(bg(t), "count_fail", 3) {
		if err != nil {
			if final != nil {
				t.Fatalf("a second error: %v", err)
			}
			final = err
			continue
		}
		v, err := item.Value()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
	}
	if !reflect.DeepEqual(got, []any{int64(0), int64(1), int64(2)}) {
		t.Errorf("items %v", got)
	}
	var re *multifrost.RemoteError
	if !errors.As(final, &re) || re.Message != "ValueError: stopped after 3" {
		t.Fatalf("final error %v", final)
	}
}

func TestStreamUnknownFunction(t *testing.T) {
	p := spawn(t, nil)
	n := 0
	for _, err := range p.Stream(bg(t), "no_such_function") {
		if !errors.Is(err, multifrost.ErrNoSuchFunction) {
			t.Fatalf("err = %v", err)
		}
		n++
	}
	if n != 1 {
		t.Fatalf("%d errors yielded", n)
	}
}

func TestStreamBreakStopsHandler(t *testing.T) {
	p := spawn(t, nil)
	taken := 0
	for _, err := range p.Stream(bg(t), "count", 100000) {
		if err != nil {
			t.Fatal(err)
		}
		taken++
		if taken == 3 {
			break
		}
	}
	settle(t, func() bool { return counted(t, p)[1] == 1 },
		func() string { return fmt.Sprintf("the handler never saw the close: counted %v", counted(t, p)) })
	if c := counted(t, p); c[0] >= 100000 {
		t.Errorf("the handler yielded all its items: %v", c)
	}
	// The parent is still usable.
	var sum int
	if err := p.Call(bg(t), "add", &sum, 2, 3); err != nil || sum != 5 {
		t.Fatalf("add after the stream: %d, %v", sum, err)
	}
}

func TestStreamCtxCancel(t *testing.T) {
	p := spawn(t, nil)
	ctx, cancel := context.WithCancel(bg(t))
	defer cancel()
	var items int
	var final error
	for _, err := range p.Stream(ctx, "count", 100000) {
		if err != nil {
			final = err
			continue
		}
		items++
		if items == 2 {
			cancel()
		}
	}
	if !errors.Is(final, multifrost.ErrCancelled) || !errors.Is(final, context.Canceled) {
		t.Fatalf("final error %v", final)
	}
	settle(t, func() bool { return counted(t, p)[1] == 1 },
		func() string { return fmt.Sprintf("the handler never saw the cancel: counted %v", counted(t, p)) })
}

// A ctx cancelled while the loop waits for an item that never comes
// wakes the wait: the cancelled error, and the handler sees the cancel.
func TestStreamCtxCancelWakesTheWait(t *testing.T) {
	p := spawn(t, nil)
	ctx, cancel := context.WithCancel(bg(t))
	defer cancel()
	cancelledAt := make(chan time.Time, 1)
	var final error
	items := 0
	for _, err := range p.Stream(ctx, "count_then_wait", 1) {
		if err != nil {
			final = err
			continue
		}
		items++
		// The loop goes back to wait for an item the handler never sends.
		time.AfterFunc(100*time.Millisecond, func() {
			cancelledAt <- time.Now()
			cancel()
		})
	}
	if items != 1 {
		t.Fatalf("%d items, want 1 (final error %v)", items, final)
	}
	woke := time.Since(<-cancelledAt)
	if !errors.Is(final, multifrost.ErrCancelled) || !errors.Is(final, context.Canceled) {
		t.Fatalf("final error %v", final)
	}
	t.Logf("the cancel woke the wait for an item after %v", woke)
	settle(t, func() bool { return counted(t, p)[1] == 1 },
		func() string { return fmt.Sprintf("the handler never saw the cancel: counted %v", counted(t, p)) })
}

// A cancel that lands while the loop ends (its mf_stream_cancel racing
// the loop's mf_stream_close) is harmless: the loop waits for a cancel
// already started before it closes the stream.
func TestStreamCancelRacesTheEndOfTheLoop(t *testing.T) {
	p := spawn(t, nil)
	for i := range 200 {
		ctx, cancel := context.WithCancel(bg(t))
		taken := 0
		for _, err := range p.Stream(ctx, "count", 5) {
			if err != nil {
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("stream %d: %v", i, err)
				}
				break
			}
			taken++
			if taken == 1+i%5 {
				go cancel()
				if i%2 == 0 {
					break
				}
			}
		}
		cancel()
	}
	var sum int
	if err := p.Call(bg(t), "add", &sum, 2, 3); err != nil || sum != 5 {
		t.Fatalf("add after the streams: %d, %v", sum, err)
	}
	settle(t, func() bool { st, err := p.Stats(); return err == nil && st.InFlight == 0 },
		func() string { st, err := p.Stats(); return fmt.Sprintf("calls left in flight: %+v, %v", st, err) })
}

// A ctx deadline while the loop waits is the stream's timeout.
func TestStreamCtxDeadlineWhileWaiting(t *testing.T) {
	p := spawn(t, nil)
	ctx, cancel := context.WithTimeout(bg(t), 300*time.Millisecond)
	defer cancel()
	var final error
	for _, err := range p.Stream(ctx, "count_then_wait", 1) {
		if err != nil {
			final = err
		}
	}
	if !errors.Is(final, multifrost.ErrTimeout) || !errors.Is(final, context.DeadlineExceeded) {
		t.Fatalf("final error %v", final)
	}
}

func TestStreamCtxCancelledBeforeStart(t *testing.T) {
	p := spawn(t, nil)
	ctx, cancel := context.WithCancel(bg(t))
	cancel()
	for _, err := range p.Stream(ctx, "count", 3) {
		if !errors.Is(err, multifrost.ErrCancelled) {
			t.Fatalf("err = %v", err)
		}
	}
	if c := counted(t, p); c[0] != 0 {
		t.Fatalf("the handler ran: %v", c)
	}
}

func TestStreamWorkerExits(t *testing.T) {
	p := spawn(t, nil)
	var got []int
	var final error
	for item, err := range p.Stream(bg(t), "count_exit", 3) {
		if err != nil {
			final = err
			continue
		}
		var n int
		if err := item.Decode(&n); err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
	}
	if !errors.Is(final, multifrost.ErrWorkerExited) {
		t.Fatalf("final error %v (items %v)", final, got)
	}
	for i, n := range got { // the items that made it before the exit, in order
		if n != i || i >= 3 {
			t.Fatalf("items %v", got)
		}
	}
}

func TestStreamPlainCallGetsList(t *testing.T) {
	p := spawn(t, nil)
	var got []int
	if err := p.Call(bg(t), "count", &got, 4); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []int{0, 1, 2, 3}) {
		t.Fatalf("count(4) as a call = %v", got)
	}
}

// A consumer that takes one item keeps the handler waiting once it has
// sent the stream credit (16) ahead.
func TestStreamSlowConsumerHoldsWorker(t *testing.T) {
	const credit = 16
	p := spawn(t, nil)
	next, stop := iter.Pull2(p.Stream(bg(t), "count", 1000))
	defer stop()
	if _, err, ok := next(); !ok || err != nil {
		t.Fatalf("first item: %v, %v", ok, err)
	}
	settle(t, func() bool { return counted(t, p)[0] >= credit },
		func() string { return fmt.Sprintf("the worker never filled the credit: %v", counted(t, p)) })
	// The handler now waits in yield: however often we look, it has
	// sent no more than the credit.
	for range 20 {
		if c := counted(t, p); c[0] > credit {
			t.Fatalf("the worker yielded %d items with one taken (credit %d)", c[0], credit)
		}
	}
	// Taking the rest lets it finish.
	got := 1
	for {
		_, err, ok := next()
		if !ok {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got++
	}
	if got != 1000 {
		t.Fatalf("%d items", got)
	}
}

// cTestWorker is the C test worker, built by `make programs` (CMake);
// MF_C_TEST_WORKER names another build of it.
var cTestWorker = cTestWorkerPath()

// A Go parent streams from the C worker's count, and closing the loop
// halfway reaches the C handler's yield.
func TestStreamFromCWorker(t *testing.T) {
	if _, err := os.Stat(cTestWorker); err != nil {
		t.Fatalf("the C test worker is not built (make programs): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := multifrost.Spawn(ctx, cTestWorker, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var got []int
	for n, err := range multifrost.StreamOf[int](bg(t), p, "count", 5) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
	}
	if !reflect.DeepEqual(got, []int{0, 1, 2, 3, 4}) {
		t.Fatalf("count(5) from C: %v", got)
	}
	for range p.Stream(bg(t), "count", 100000) {
		break
	}
	settle(t, func() bool { return counted(t, p)[1] == 1 },
		func() string { return fmt.Sprintf("the C handler never saw the close: counted %v", counted(t, p)) })
}

func cTestWorkerPath() string {
	if p := os.Getenv("MF_C_TEST_WORKER"); p != "" {
		return p
	}
	return filepath.Join("..", "..", "build", "tests", "c", "c_test_worker")
}
