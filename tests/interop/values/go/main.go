// Command value_parent echoes the value cases through a worker and prints
// what came back: `<case> <canonical form>` or `<case> error:<text>`, the
// canonical form described in tests/interop/test_matrix.py (CANONICAL).
// With --stream it streams the worker's `count` instead (STREAM_LINES
// there).
//
//	value_parent [--stream] <worker-program> [args...]
package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	multifrost "github.com/multifrost/libmultifrost/bindings/go"
)

func deep(n int) any {
	v := []any{}
	for i := 0; i < n-1; i++ {
		v = []any{v}
	}
	return v
}

var cases = []struct {
	name  string
	value any
}{
	{"emoji", "😀𝄞"},
	{"empty_str", ""},
	{"empty_bin", []byte{}},
	{"empty_array", []any{}},
	{"empty_map", map[string]any{}},
	{"int64_min", int64(math.MinInt64)},
	{"int64_max", int64(math.MaxInt64)},
	{"uint64_max", uint64(math.MaxUint64)},
	{"nan", math.NaN()},
	{"inf", math.Inf(1)},
	{"neg_inf", math.Inf(-1)},
	{"neg_zero", math.Copysign(0, -1)},
	// A UTF-16 surrogate in UTF-8 form: not UTF-8, so not a msgpack str.
	{"lone_surrogate", "\xed\xa0\x80"},
	// The decoder's limit (PROTOCOL §7) counts the arguments array: a value
	// nested 99 deep travels as 100 levels, the most allowed; one more is refused.
	{"deep_at_limit", deep(99)},
	{"deep_over_limit", deep(100)},
}

func canon(v any) string {
	switch x := v.(type) {
	case nil:
		return "nil"
	case bool:
		return strconv.FormatBool(x)
	case int64:
		return "int:" + strconv.FormatInt(x, 10)
	case uint64:
		return "int:" + strconv.FormatUint(x, 10)
	case int8, int16, int32, int, uint8, uint16, uint32, uint:
		return fmt.Sprintf("int:%d", x)
	case float32:
		return canon(float64(x))
	case float64:
		switch {
		case math.IsNaN(x):
			return "float:nan"
		case math.IsInf(x, 1):
			return "float:inf"
		case math.IsInf(x, -1):
			return "float:-inf"
		case x == 0 && math.Signbit(x):
			return "float:-0"
		}
		return "float:" + strconv.FormatFloat(x, 'g', -1, 64)
	case string:
		return "str:" + hex.EncodeToString([]byte(x))
	case []byte:
		return "bin:" + hex.EncodeToString(x)
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = canon(e)
		}
		return "[" + strings.Join(parts, ",") + "]"
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = canon(k) + ":" + canon(x[k])
		}
		return "{" + strings.Join(parts, ",") + "}"
	}
	return fmt.Sprintf("?%T", v)
}

// stream reads count(5) to its end and count(1e9) for 3 items (leaving the
// loop closes it), then polls counted() until the worker saw the close (30
// s: a hang guard).
func stream(ctx context.Context, p *multifrost.Parent) {
	ended := true
	for item, err := range p.Stream(ctx, "count", 5) {
		if err == nil {
			var v any
			if v, err = item.Value(); err == nil {
				fmt.Printf("item %s\n", canon(v))
				continue
			}
		}
		fmt.Printf("error:%s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		ended = false
		break
	}
	if ended {
		fmt.Println("end")
	}
	i := 0
	for item, err := range p.Stream(ctx, "count", 1_000_000_000) {
		if err != nil {
			fmt.Printf("error:%s\n", err)
			break
		}
		v, _ := item.Value()
		fmt.Printf("half %s\n", canon(v))
		if i++; i == 3 {
			break
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	closed := int64(-1)
	for closed < 1 && time.Now().Before(deadline) {
		var counted []int64
		if err := p.Call(ctx, "counted", &counted); err != nil {
			fmt.Printf("error:%s\n", err)
			return
		}
		if len(counted) == 2 {
			closed = counted[1]
		}
		if closed < 1 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	fmt.Printf("closed %s\n", canon(closed))
}

func main() {
	args := os.Args[1:]
	streaming := len(args) > 0 && args[0] == "--stream"
	if streaming {
		args = args[1:]
	}
	if len(args) < 1 {
		fmt.Fprintln(os.Stderr, "usage: value_parent [--stream] <worker-program> [args...]")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := multifrost.Spawn(ctx, args[0], args[1:], nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "value_parent:", err)
		os.Exit(1)
	}
	defer p.Close()
	if streaming {
		stream(ctx, p)
		return
	}
	for _, c := range cases {
		var got any
		if err := p.Call(ctx, "echo", &got, c.value); err != nil {
			fmt.Printf("%s error:%s\n", c.name, strings.ReplaceAll(err.Error(), "\n", " "))
			continue
		}
		fmt.Printf("%s %s\n", c.name, canon(got))
	}
}
