package multifrost

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
)

// Values cross the wire as MessagePack through vmihailenco/msgpack/v5:
//   - integers are sent in their smallest form; float64 stays float64;
//     string is str and []byte is bin; a str must be UTF-8 (PROTOCOL.md §7),
//     so a string that is not is refused before anything is sent
//     (errInvalidUTF8) instead of failing in a peer's decoder;
//   - structs are maps keyed by the `msgpack` tag, else the `json` tag,
//     else the field name;
//   - decoded into `any` (also inside []any, map[string]any and struct
//     fields of type any), integers become int64 (uint64 above MaxInt64),
//     floats float64, str string, bin []byte, arrays []any, maps
//     map[string]any (map[any]any if a key is not a string).

// encoding is an encoder with its buffer, reused across calls: a call's
// arguments live only until the library has copied them.
type encoding struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
}

var encodings = sync.Pool{New: func() any {
	e := &encoding{}
	e.enc = msgpack.NewEncoder(&e.buf)
	return e
}}

// newEncoding returns an empty encoding; give it back with release once its
// bytes are no longer used.
func newEncoding() *encoding {
	e := encodings.Get().(*encoding)
	e.buf.Reset()
	e.enc.Reset(&e.buf) // also clears the options
	e.enc.UseCompactInts(true)
	e.enc.SetCustomStructTag("json")
	return e
}

func (e *encoding) release() {
	if e.buf.Cap() <= 64<<10 { // a huge one is left to the collector
		encodings.Put(e)
	}
}

// encodeArgs encodes the arguments as one msgpack array, into an encoding
// the caller releases after use.
func encodeArgs(args []any) (*encoding, error) {
	e := newEncoding()
	if err := e.enc.EncodeArrayLen(len(args)); err != nil {
		e.release()
		return nil, err
	}
	for i, a := range args {
		start := e.buf.Len()
		err := e.enc.Encode(a)
		if err == nil {
			err = checkStrings(e.buf.Bytes()[start:])
		}
		if err != nil {
			e.release()
			return nil, fmt.Errorf("argument %d (%T): %w", i+1, a, err)
		}
	}
	return e, nil
}

// encodeValue encodes one value into a slice of its own: the encoding's
// buffer goes with it, and the encoding is not reused.
func encodeValue(v any) ([]byte, error) {
	e := newEncoding()
	err := e.enc.Encode(v)
	if err == nil {
		err = checkStrings(e.buf.Bytes())
	}
	if err != nil {
		e.release()
		return nil, err
	}
	return e.buf.Bytes(), nil
}

var errInvalidUTF8 = errors.New("string is not valid UTF-8; pass []byte for bytes")

// checkStrings returns errInvalidUTF8 if a str in the encoded msgpack b is
// not UTF-8. It reads the bytes the encoder wrote, not the Go value, so it
// sees every string however it got there: map keys, struct fields, named
// string types, custom encoders. Containers need no bookkeeping: their
// elements simply follow their headers.
func checkStrings(b []byte) error {
	for i := 0; i < len(b); {
		c := b[i]
		i++
		var skip, n int // bytes to skip, then bytes of data (a str's are checked)
		switch {
		case c <= 0x9f || c >= 0xe0 || (c >= 0xc0 && c <= 0xc3):
			// fixint, fixmap and fixarray headers, nil, (unused), bool
		case c&0xe0 == 0xa0:
			n = int(c & 0x1f)
		case c == 0xd9 || c == 0xc4 || c == 0xc7: // str 8, bin 8, ext 8
			n = int(sized(b, i, 1))
			i++
		case c == 0xda || c == 0xc5 || c == 0xc8: // str 16, bin 16, ext 16
			n = int(sized(b, i, 2))
			i += 2
		case c == 0xdb || c == 0xc6 || c == 0xc9: // str 32, bin 32, ext 32
			n = int(sized(b, i, 4))
			i += 4
		case c == 0xcc || c == 0xd0:
			skip = 1
		case c == 0xcd || c == 0xd1 || c == 0xdc || c == 0xde:
			skip = 2 // also the array 16 and map 16 headers
		case c == 0xca || c == 0xce || c == 0xd2 || c == 0xdd || c == 0xdf:
			skip = 4 // also the array 32 and map 32 headers
		case c == 0xcb || c == 0xcf || c == 0xd3:
			skip = 8
		case c >= 0xd4 && c <= 0xd8: // fixext 1, 2, 4, 8, 16 and their type byte
			skip = 1 + 1<<(c-0xd4)
		}
		if c >= 0xc7 && c <= 0xc9 {
			skip = 1 // the ext type byte, before the data
		}
		i += skip
		if i > len(b) || n > len(b)-i {
			return nil // cut short: not written by our encoder, nothing to check
		}
		isStr := c&0xe0 == 0xa0 || (c >= 0xd9 && c <= 0xdb)
		if isStr && !utf8.Valid(b[i:i+n]) {
			return errInvalidUTF8
		}
		i += n
	}
	return nil
}

// sized reads the n-byte big-endian length at b[i:] (0 if b is too short).
func sized(b []byte, i, n int) uint32 {
	if i+n > len(b) {
		return 0
	}
	var v uint32
	for _, x := range b[i : i+n] {
		v = v<<8 | uint32(x)
	}
	return v
}

// decoding is a decoder with its reader, reused across calls.
type decoding struct {
	r   bytes.Reader
	dec *msgpack.Decoder
}

var decodings = sync.Pool{New: func() any {
	d := &decoding{}
	d.dec = msgpack.NewDecoder(&d.r)
	return d
}}

// decodeInto decodes one msgpack value into the pointer out and widens the
// numbers it put into interface values.
func decodeInto(data []byte, out any) error {
	rv := reflect.ValueOf(out)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("result must be a non-nil pointer, not %T", out)
	}
	if e := rv.Elem(); e.Kind() == reflect.Interface && !e.IsNil() {
		// Replace what an *any holds instead of decoding into it.
		e.SetZero()
	}
	d := decodings.Get().(*decoding)
	d.r.Reset(data)
	d.dec.Reset(&d.r) // also clears the options
	d.dec.SetCustomStructTag("json")
	err := d.dec.Decode(out)
	d.r.Reset(nil) // keep no reference to data
	decodings.Put(d)
	if err != nil {
		return err
	}
	normalizeValue(rv.Elem())
	return nil
}

// decodeAny decodes one msgpack value into the generic form.
func decodeAny(data []byte) (any, error) {
	var v any
	if err := decodeInto(data, &v); err != nil {
		return nil, err
	}
	return v, nil
}

// normalizeAny widens what msgpack's generic decoding produces (int8,
// uint16, float32, ...) to int64/uint64/float64, recursively.
func normalizeAny(x any) any {
	switch v := x.(type) {
	case int8:
		return int64(v)
	case int16:
		return int64(v)
	case int32:
		return int64(v)
	case int:
		return int64(v)
	case uint8:
		return int64(v)
	case uint16:
		return int64(v)
	case uint32:
		return int64(v)
	case uint:
		return widenUint(uint64(v))
	case uint64:
		return widenUint(v)
	case float32:
		return float64(v)
	case []any:
		for i := range v {
			v[i] = normalizeAny(v[i])
		}
		return v
	case map[string]any:
		for k, e := range v {
			v[k] = normalizeAny(e)
		}
		return v
	case map[any]any:
		out := make(map[any]any, len(v))
		for k, e := range v {
			switch k.(type) {
			case []any, map[string]any, map[any]any:
				// not hashable after all; cannot come out of the decoder
			default:
				k = normalizeAny(k)
			}
			out[k] = normalizeAny(e)
		}
		return out
	}
	if x == nil {
		return nil
	}
	rv := reflect.ValueOf(x)
	if hasInterface(rv.Type()) {
		// A typed value decoded by an extension: normalize a copy.
		cp := reflect.New(rv.Type()).Elem()
		cp.Set(rv)
		normalizeValue(cp)
		return cp.Interface()
	}
	return x
}

func widenUint(v uint64) any {
	if v <= math.MaxInt64 {
		return int64(v)
	}
	return v
}

// normalizeValue applies normalizeAny to every interface value reachable
// from v (which must be settable where it holds interfaces).
func normalizeValue(v reflect.Value) {
	if !v.IsValid() || !hasInterface(v.Type()) {
		return
	}
	switch v.Kind() {
	case reflect.Interface:
		if v.IsNil() || !v.CanSet() {
			return
		}
		n := normalizeAny(v.Interface())
		if n == nil {
			v.SetZero()
		} else {
			v.Set(reflect.ValueOf(n))
		}
	case reflect.Pointer:
		if !v.IsNil() {
			normalizeValue(v.Elem())
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if f := v.Field(i); f.CanSet() {
				normalizeValue(f)
			}
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			normalizeValue(v.Index(i))
		}
	case reflect.Map:
		if v.IsNil() {
			return
		}
		iter := v.MapRange()
		type kv struct{ k, v reflect.Value }
		var updates []kv
		for iter.Next() {
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(iter.Value())
			normalizeValue(e)
			updates = append(updates, kv{iter.Key(), e})
		}
		for _, u := range updates {
			v.SetMapIndex(u.k, u.v)
		}
	}
}

var interfaceTypes sync.Map // reflect.Type -> bool

// hasInterface reports whether values of t can hold an interface value
// somewhere inside (so normalizing them is not a no-op).
func hasInterface(t reflect.Type) bool {
	if v, ok := interfaceTypes.Load(t); ok {
		return v.(bool)
	}
	r := searchInterface(t, map[reflect.Type]bool{})
	interfaceTypes.Store(t, r)
	return r
}

// searchInterface is a depth-first search from t; a type already on the
// path counts as false, since any interface it holds is found through the
// path that reached it first.
func searchInterface(t reflect.Type, seen map[reflect.Type]bool) bool {
	if seen[t] {
		return false
	}
	seen[t] = true
	switch t.Kind() {
	case reflect.Interface:
		return true
	case reflect.Pointer, reflect.Slice, reflect.Array:
		return searchInterface(t.Elem(), seen)
	case reflect.Map:
		return searchInterface(t.Key(), seen) || searchInterface(t.Elem(), seen)
	case reflect.Struct:
		for i := 0; i < t.NumField(); i++ {
			if f := t.Field(i); f.IsExported() && searchInterface(f.Type, seen) {
				return true
			}
		}
	}
	return false
}

// kindOf names a generic value's wire type for error messages.
func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "nil"
	case bool:
		return "bool"
	case int64, uint64:
		return "int"
	case float64:
		return "float"
	case string:
		return "string"
	case []byte:
		return "bytes"
	case []any:
		return "list"
	case map[string]any, map[any]any:
		return "map"
	}
	return fmt.Sprintf("%T", v)
}

// typeName is a Go type as error messages show it ("any", not "interface {}").
func typeName(t reflect.Type) string {
	return anyRe.Replace(t.String())
}

var anyRe = strings.NewReplacer("interface {}", "any")
