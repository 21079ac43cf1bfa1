// Command bench_go is the Go binding benchmark: what a Go caller of
// libmultifrost sees.
//
// Cases (against build/benches/bench_worker, the same raw-msgpack worker as
// the C API suite):
//
//	call_seq     p.Call(ctx, "add", &out, 1, 2) one after the other   (µs/call)
//	goroutines64 64 goroutines calling p.Call("add", i, k) at once,
//	             several rounds (median)                             (calls/s)
//
// Every call checks its result; a wrong result or a failed call prints
// "bench_go: FAILED: ..." and exits 1. The results are one JSON object on
// stdout (format in benches/README.md); progress goes to stderr.
//
//	bench_go [--worker build/benches/bench_worker] [--cases a,b] [--scale F]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	multifrost "github.com/multifrost/libmultifrost/bindings/go"
)

type metric struct {
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Better string  `json:"better"`
	Label  string  `json:"label"`
}

var (
	metrics     = map[string]metric{}
	metricOrder []string // the table lists metrics in the order they were measured
	info        = map[string]any{}
	scale       = 1.0
)

func setMetric(name string, m metric) {
	if _, ok := metrics[name]; !ok {
		metricOrder = append(metricOrder, name)
	}
	metrics[name] = m
}

// result is the suite's JSON object, metrics in measuring order.
func result() ([]byte, error) {
	var b strings.Builder
	b.WriteString(`{"suite": "go", "metrics": {`)
	for i, name := range metricOrder {
		m, err := json.Marshal(metrics[name])
		if err != nil {
			return nil, err
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q: %s", name, m)
	}
	in, err := json.Marshal(info)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(&b, `}, "info": %s}`, in)
	return []byte(b.String()), nil
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench_go: FAILED: "+format+"\n", args...)
	os.Exit(1)
}

func scaled(n int, min int) int {
	v := int(float64(n)*scale + 0.5)
	if v < min {
		return min
	}
	return v
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

func add(ctx context.Context, p *multifrost.Parent, a, b int64) {
	var out int64
	if err := p.Call(ctx, "add", &out, a, b); err != nil {
		fail("add(%d, %d): %v", a, b, err)
	}
	if out != a+b {
		fail("add(%d, %d) returned %d", a, b, out)
	}
}

func caseCallSeq(ctx context.Context, p *multifrost.Parent) {
	warmup, n := 300, scaled(5000, 10)
	lat := make([]float64, 0, n)
	var start time.Time
	for i := 0; i < warmup+n; i++ {
		if i == warmup {
			start = time.Now()
		}
		t := time.Now()
		var out int64
		if err := p.Call(ctx, "add", &out, 1, 2); err != nil {
			fail("add(1, 2) #%d: %v", i, err)
		}
		if out != 3 {
			fail("add(1, 2) #%d returned %d", i, out)
		}
		if i >= warmup {
			lat = append(lat, float64(time.Since(t).Nanoseconds())/1e3)
		}
	}
	mean := float64(time.Since(start).Nanoseconds()) / 1e3 / float64(n)
	setMetric("call_seq_p50_us", metric{median(lat), "us", "lower", "p.Call add(1, 2) sequential (median)"})
	setMetric("call_seq_mean_us", metric{mean, "us", "lower", "p.Call add(1, 2) sequential (mean)"})
	info["call_seq_calls"] = n
}

// goroutinesRun: `g` goroutines, each making `per` calls one after the other.
func goroutinesRun(ctx context.Context, p *multifrost.Parent, g, per int) float64 {
	var wg sync.WaitGroup
	ready := make(chan struct{})
	for i := 0; i < g; i++ {
		wg.Add(1)
		go func(base int64) {
			defer wg.Done()
			<-ready
			for k := int64(0); k < int64(per); k++ {
				add(ctx, p, base, k)
			}
		}(int64(i) * 1000000)
	}
	start := time.Now()
	close(ready)
	wg.Wait()
	return float64(g*per) / time.Since(start).Seconds()
}

func caseGoroutines64(ctx context.Context, p *multifrost.Parent) {
	const g, per = 64, 250 // 16 000 calls a round
	rounds := scaled(6, 1)
	goroutinesRun(ctx, p, g, 30) // warm-up
	rates := make([]float64, rounds)
	for r := range rates {
		rates[r] = goroutinesRun(ctx, p, g, per)
	}
	setMetric("goroutines64_calls_per_s", metric{median(rates), "call/s", "higher",
		"64 goroutines calling p.Call add at once (median round)"})
	info["goroutines64_calls_per_round"] = g * per
	info["goroutines64_rounds"] = rounds
	rounded := make([]int, rounds)
	for i, r := range rates {
		rounded[i] = int(r + 0.5)
	}
	info["goroutines64_rates"] = rounded
}

var cases = []struct {
	name string
	run  func(context.Context, *multifrost.Parent)
}{
	{"call_seq", caseCallSeq},
	{"goroutines64", caseGoroutines64},
}

func main() {
	worker := flag.String("worker", "build/benches/bench_worker", "the bench worker program")
	only := flag.String("cases", "", "comma-separated cases (default: all)")
	flag.Float64Var(&scale, "scale", 1.0, "multiplies the iteration counts")
	flag.Parse()
	if scale <= 0 {
		fail("--scale must be > 0")
	}
	want := map[string]bool{}
	for _, c := range strings.Split(*only, ",") {
		if c != "" {
			want[c] = true
		}
	}
	for c := range want {
		found := false
		for _, k := range cases {
			found = found || k.name == c
		}
		if !found {
			fail("unknown case %q", c)
		}
	}

	ctx := context.Background()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	p, err := multifrost.Spawn(sctx, *worker, nil, nil)
	cancel()
	if err != nil {
		fail("spawn %s: %v", *worker, err)
	}
	for _, c := range cases {
		if len(want) > 0 && !want[c.name] {
			continue
		}
		fmt.Fprintf(os.Stderr, "bench_go: %s\n", c.name)
		c.run(ctx, p)
	}
	p.Close()
	info["go"] = runtime.Version()
	info["gomaxprocs"] = runtime.GOMAXPROCS(0)
	out, err := result()
	if err != nil {
		fail("json: %v", err)
	}
	fmt.Println(string(out))
}
