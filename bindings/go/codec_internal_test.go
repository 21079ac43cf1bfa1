package multifrost

import (
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

type node struct {
	Children []node `msgpack:"children"`
	Value    any    `msgpack:"value"`
}

type plain struct {
	Next *plain
	N    int
}

func TestHasInterface(t *testing.T) {
	for _, c := range []struct {
		v    any
		want bool
	}{
		{0, false}, {"", false}, {[]int{}, false}, {plain{}, false},
		{[]any{}, true}, {map[string]any{}, true}, {node{}, true}, {[]node{}, true},
		{map[string][]node{}, true}, {&plain{}, false},
	} {
		if got := hasInterface(reflect.TypeOf(c.v)); got != c.want {
			t.Errorf("hasInterface(%T) = %v", c.v, got)
		}
	}
}

// Numbers decoded into `any`, also deep inside typed values, come out as
// int64 / uint64 / float64.
func TestDecodeNormalizes(t *testing.T) {
	in := node{Value: uint8(7), Children: []node{{Value: []any{int16(-3), float32(1.5), uint64(math.MaxUint64)}}}}
	b, err := encodeValue(in)
	if err != nil {
		t.Fatal(err)
	}
	var out node
	if err := decodeInto(b, &out); err != nil {
		t.Fatal(err)
	}
	want := node{Value: int64(7), Children: []node{{Value: []any{int64(-3), 1.5, uint64(math.MaxUint64)}}}}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("got %#v", out)
	}
	var m map[string][]any
	b, _ = encodeValue(map[string][]any{"k": {int8(1), map[string]any{"n": uint16(2)}}})
	if err := decodeInto(b, &m); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m, map[string][]any{"k": {int64(1), map[string]any{"n": int64(2)}}}) {
		t.Errorf("got %#v", m)
	}
}

func TestArgsEncoding(t *testing.T) {
	e, err := encodeArgs(nil)
	if err != nil || !reflect.DeepEqual(e.buf.Bytes(), []byte{0x90}) {
		t.Errorf("no arguments: %v", err)
	}
	e.release()
	// A reused encoding starts empty, with its options set again.
	for range 3 {
		e, _ = encodeArgs([]any{1, "a"})
		if !reflect.DeepEqual(e.buf.Bytes(), []byte{0x92, 0x01, 0xa1, 'a'}) {
			t.Errorf("(1, \"a\"): % x", e.buf.Bytes())
		}
		e.release()
	}
}

// Every str form is checked, wherever it is; bin and ext data, which may
// hold any bytes, are skipped.
func TestCheckStrings(t *testing.T) {
	bad := "\xff"
	for _, c := range []struct {
		name string
		v    any
		want error
	}{
		{"fixstr", bad, errInvalidUTF8},
		{"str 8", strings.Repeat("x", 40) + bad, errInvalidUTF8},
		{"str 16", strings.Repeat("x", 300) + bad, errInvalidUTF8},
		{"str 32", strings.Repeat("x", 70000) + bad, errInvalidUTF8},
		{"after a float and an int", []any{1.5, int64(-1 << 40), bad}, errInvalidUTF8},
		{"map key", map[string]any{bad: 1}, errInvalidUTF8},
		{"valid text", []any{"héllo ✓", "😀𝄞", map[string]any{"k": "v"}}, nil},
		{"bin with any bytes", []any{[]byte(bad), []byte(strings.Repeat(bad, 300)), "ok"}, nil},
		{"ext with any bytes", []any{time.Unix(1, 0xff), "ok"}, nil},
	} {
		b, err := encodeValue(c.v)
		if err != c.want {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if err == nil && len(b) == 0 {
			t.Errorf("%s: nothing encoded", c.name)
		}
	}
}
