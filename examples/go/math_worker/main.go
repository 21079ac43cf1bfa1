// Command math_worker serves add, multiply, factorial and echo.
//
// Started by a parent (spawn mode) it reaches the parent through
// COMLINK_ZMQ_PORT, so any parent speaking the protocol can spawn it. Given
// a service id (or a tcp:// endpoint) as its argument it serves in connect
// mode: math_worker math-service
package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"

	multifrost "github.com/multifrost/libmultifrost/bindings/go"
)

func main() {
	serviceID := "" // spawn mode
	if len(os.Args) > 1 && os.Args[1] != "--worker" {
		serviceID = os.Args[1]
	}
	w, err := multifrost.NewWorker(serviceID)
	if err != nil {
		fmt.Fprintln(os.Stderr, "math_worker:", err)
		os.Exit(2)
	}
	defer w.Close()
	for name, fn := range map[string]any{
		"add":       func(a, b any) (any, error) { return arith(a, b, false) },
		"multiply":  func(a, b any) (any, error) { return arith(a, b, true) },
		"factorial": factorial,
		"echo":      func(v any) any { return v },
	} {
		if err := w.Handle(name, fn); err != nil {
			fmt.Fprintln(os.Stderr, "math_worker:", err)
			os.Exit(2)
		}
	}
	// Until a parent sends shutdown, or SIGINT/SIGTERM.
	if err := w.Serve(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "math_worker:", err)
		os.Exit(2)
	}
}

func factorial(n int64) (int64, error) {
	if n < 0 {
		return 0, errors.New("ValueError: factorial of a negative number")
	}
	if n > 20 {
		return 0, errors.New("OverflowError: factorial above 20 does not fit in 64 bits")
	}
	r := int64(1)
	for i := int64(2); i <= n; i++ {
		r *= i
	}
	return r, nil
}

// arith adds or multiplies two numbers: integers exactly (an overflow is an
// error, never a wrap), anything else as float64. Arguments decoded into
// `any` are int64, uint64 (above MaxInt64 only) or float64.
func arith(a, b any, multiply bool) (any, error) {
	x, xInt := a.(int64)
	y, yInt := b.(int64)
	if xInt && yInt {
		if multiply {
			p := x * y
			if x != 0 && (p/x != y || (x == -1 && y == math.MinInt64)) {
				return nil, errors.New("OverflowError: result does not fit in 64 bits")
			}
			return p, nil
		}
		s := x + y
		if (s > x) != (y > 0) {
			return nil, errors.New("OverflowError: result does not fit in 64 bits")
		}
		return s, nil
	}
	fx, ok1 := float(a)
	fy, ok2 := float(b)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("TypeError: expected two numbers, got %T and %T", a, b)
	}
	if multiply {
		return fx * fy, nil
	}
	return fx + fy, nil
}

func float(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case uint64:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}
