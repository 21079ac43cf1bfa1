// Command math_parent spawns a math worker, calls its functions and prints
// the results and the transport the calls took. With --workers N it spawns
// a pool of N copies of the worker and prints their pids.
//
//	math_parent [--no-private-link] [--workers N] <worker-program> [args...]
//	math_parent --connect <service-id-or-tcp-endpoint>
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	multifrost "github.com/multifrost/libmultifrost/bindings/go"
)

func main() {
	args := os.Args[1:]
	connect := len(args) == 2 && args[0] == "--connect"
	opts := &multifrost.Options{}
	for !connect && len(args) > 0 {
		if args[0] == "--no-private-link" {
			opts.DisablePrivateLink = true // every byte over ZeroMQ
			args = args[1:]
		} else if args[0] == "--workers" && len(args) > 1 {
			n, err := strconv.Atoi(args[1])
			if err != nil {
				fmt.Fprintln(os.Stderr, "math_parent: --workers takes a number, not", args[1])
				os.Exit(2)
			}
			opts.Workers = n // out of range: Spawn says why
			args = args[2:]
		} else {
			break
		}
	}
	if len(args) < 1 {
		fmt.Fprintln(os.Stderr, "usage: math_parent [--no-private-link] [--workers N] <worker-program> [args...]")
		fmt.Fprintln(os.Stderr, "       math_parent --connect <service-id-or-tcp-endpoint>")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var p *multifrost.Parent
	var err error
	if connect {
		p, err = multifrost.Connect(ctx, args[1], opts)
	} else {
		p, err = multifrost.Spawn(ctx, args[0], args[1:], opts)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "math_parent:", err)
		os.Exit(1)
	}
	defer p.Close() // stops and reaps the worker

	var n int64
	must(p.Call(ctx, "add", &n, 1, 2))
	fmt.Printf("add(1, 2) = %d\n", n)
	must(p.Call(ctx, "multiply", &n, 6, 7))
	fmt.Printf("multiply(6, 7) = %d\n", n)
	must(p.Call(ctx, "factorial", &n, 10))
	fmt.Printf("factorial(10) = %d\n", n)

	var remote *multifrost.RemoteError
	if err := p.Call(ctx, "factorial", &n, -1); errors.As(err, &remote) {
		fmt.Printf("factorial(-1) failed: %s\n", remote.Message)
	} else {
		must(fmt.Errorf("factorial(-1): want a remote error, got %v (result %d)", err, n))
	}

	var s string
	must(p.Call(ctx, "echo", &s, "héllo ✓"))
	fmt.Printf("echo(%q) = %q\n", "héllo ✓", s)

	stats, err := p.Stats()
	must(err)
	fmt.Printf("transport: %s\n", stats.Transport)
	if opts.Workers != 0 {
		pids := ""
		for _, w := range stats.Workers {
			pids += " " + strconv.Itoa(w.PID)
		}
		fmt.Printf("pool: %d workers, pids%s\n", len(stats.Workers), pids)
	}
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "math_parent:", err)
		os.Exit(1)
	}
}
