package multifrost

import (
	"bytes"
	"fmt"
	"math"
	"reflect"
	"strings"

	"github.com/vmihailenco/msgpack/v5"
)

// splitArgs splits a msgpack array into its encoded elements.
func splitArgs(args []byte) ([]msgpack.RawMessage, error) {
	if len(args) == 0 {
		return nil, nil
	}
	dec := msgpack.NewDecoder(bytes.NewReader(args))
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return nil, err
	}
	out := make([]msgpack.RawMessage, 0, max(n, 0))
	for i := 0; i < n; i++ {
		raw, err := dec.DecodeRaw()
		if err != nil {
			return nil, err
		}
		out = append(out, raw)
	}
	return out, nil
}

// describeArgs lists the wire types of the arguments: "(int, string)".
func describeArgs(raws []msgpack.RawMessage) string {
	kinds := make([]string, len(raws))
	for i, raw := range raws {
		v, err := decodeAny(raw)
		if err != nil {
			kinds[i] = "?"
		} else {
			kinds[i] = kindOf(v)
		}
	}
	return "(" + strings.Join(kinds, ", ") + ")"
}

// convertArg decodes one argument into a value of type t. Scalars are
// checked strictly (msgpack alone would wrap 2^64-1 into an int64 and turn
// nil into 0); other types go through msgpack.
func convertArg(raw []byte, t reflect.Type) (reflect.Value, error) {
	v := reflect.New(t).Elem()
	switch t.Kind() {
	case reflect.Bool, reflect.String,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64:
		if implementsDecoder(t) {
			break
		}
		x, err := decodeAny(raw)
		if err != nil {
			return v, err
		}
		return v, setScalar(v, x)
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 && !implementsDecoder(t) {
			x, err := decodeAny(raw)
			if err != nil {
				return v, err
			}
			switch b := x.(type) {
			case []byte:
				v.SetBytes(b)
			case string:
				v.SetBytes([]byte(b))
			case nil:
			default:
				return v, fmt.Errorf("cannot use %s as %s", kindOf(x), typeName(t))
			}
			return v, nil
		}
	}
	ptr := reflect.New(t)
	if err := decodeInto(raw, ptr.Interface()); err != nil {
		return v, fmt.Errorf("cannot decode into %s: %v", typeName(t), err)
	}
	return ptr.Elem(), nil
}

var (
	customDecoderType = reflect.TypeFor[msgpack.CustomDecoder]()
	unmarshalerType   = reflect.TypeFor[msgpack.Unmarshaler]()
)

// implementsDecoder reports whether t decodes itself (then msgpack decides).
func implementsDecoder(t reflect.Type) bool {
	p := reflect.PointerTo(t)
	return p.Implements(customDecoderType) || p.Implements(unmarshalerType)
}

func setScalar(v reflect.Value, x any) error {
	t := v.Type()
	mismatch := func() error { return fmt.Errorf("cannot use %s as %s", kindOf(x), typeName(t)) }
	switch t.Kind() {
	case reflect.Bool:
		b, ok := x.(bool)
		if !ok {
			return mismatch()
		}
		v.SetBool(b)
	case reflect.String:
		s, ok := x.(string)
		if !ok {
			return mismatch()
		}
		v.SetString(s)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var n int64
		switch y := x.(type) {
		case int64:
			n = y
		case uint64:
			return fmt.Errorf("%d is out of range for %s", y, typeName(t))
		case float64:
			if y != math.Trunc(y) || y < math.MinInt64 || y >= math.MaxInt64 {
				return fmt.Errorf("%v is not an integer that fits %s", y, typeName(t))
			}
			n = int64(y)
		default:
			return mismatch()
		}
		if v.OverflowInt(n) {
			return fmt.Errorf("%d is out of range for %s", n, typeName(t))
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		var n uint64
		switch y := x.(type) {
		case int64:
			if y < 0 {
				return fmt.Errorf("%d is out of range for %s", y, typeName(t))
			}
			n = uint64(y)
		case uint64:
			n = y
		case float64:
			if y != math.Trunc(y) || y < 0 || y >= math.MaxUint64 {
				return fmt.Errorf("%v is not an integer that fits %s", y, typeName(t))
			}
			n = uint64(y)
		default:
			return mismatch()
		}
		if v.OverflowUint(n) {
			return fmt.Errorf("%d is out of range for %s", n, typeName(t))
		}
		v.SetUint(n)
	case reflect.Float32, reflect.Float64:
		switch y := x.(type) {
		case float64:
			v.SetFloat(y)
		case int64:
			v.SetFloat(float64(y))
		case uint64:
			v.SetFloat(float64(y))
		default:
			return mismatch()
		}
	}
	return nil
}
