//! Property tests of the wire codec and of the JSON ⇄ MessagePack mapping
//! (issue 7 item 2), with `proptest`.
//!
//! - Generated MessagePack values (nil, bool, integers over the whole
//!   i64 ∪ u64 range in every width, f32/f64 of any bit pattern, str, bin,
//!   ext, arrays and maps nested up to depth 5) travel through
//!   `Encoder::call` / `Encoder::response` + `decode` and come back as the
//!   very same bytes.
//! - `decode`, `validate_value`, `validate_args`, `array_len` and
//!   `json::from_msgpack` never panic, on arbitrary bytes and on mutated
//!   valid messages.
//! - Generated JSON values (integers over i64 ∪ u64, finite floats,
//!   strings with escapes and any Unicode, nested arrays and objects)
//!   round-trip exactly through `json::to_msgpack` / `json::from_msgpack`.
//!
//! Case counts are modest so the file runs in a few seconds; raise them
//! with `PROPTEST_CASES=10000 cargo test --release --test properties`.
//!
//! Three deterministic tests at the end guard against bugs these
//! properties found (each says what it was):
//! `metadata_values_and_keys_are_skipped_whole`,
//! `from_msgpack_output_grows_linearly_with_its_input` and
//! `json_depth_limit_agrees_with_the_codec`.

use multifrost::codec::{self, DecodeError, Encoder, Kind, Limits};
use multifrost::json;
use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::Value;

/// `cases` unless PROPTEST_CASES says otherwise; failures are not written
/// to a regressions file in the source tree.
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c.failure_persistence = None;
    c
}

// ---------------------------------------------------------------------------
// Generated MessagePack values
// ---------------------------------------------------------------------------

/// A MessagePack value together with the width its encoder must use, so
/// non-canonical (wider than needed) encodings are generated too: other
/// implementations write them, and the codec must carry them byte for byte.
#[derive(Debug, Clone)]
enum Mp {
    Nil,
    Bool(bool),
    /// A signed integer and whether to force the 8-byte form.
    Int(i64, bool),
    /// An unsigned integer and whether to force the 8-byte form.
    UInt(u64, bool),
    F32(u32),
    F64(u64),
    /// A string and a forced header width (0 = smallest, 1, 2, 4 bytes).
    Str(String, u8),
    Bin(Vec<u8>),
    Ext(i8, Vec<u8>),
    Array(Vec<Mp>),
    Map(Vec<(Mp, Mp)>),
}

fn write_mp(out: &mut Vec<u8>, v: &Mp) {
    use rmp::encode::*;
    match v {
        Mp::Nil => write_nil(out).unwrap(),
        Mp::Bool(b) => write_bool(out, *b).unwrap(),
        Mp::Int(i, false) => {
            write_sint(out, *i).unwrap();
        }
        Mp::Int(i, true) => write_i64(out, *i).unwrap(),
        Mp::UInt(u, false) => {
            write_uint(out, *u).unwrap();
        }
        Mp::UInt(u, true) => write_u64(out, *u).unwrap(),
        Mp::F32(bits) => write_f32(out, f32::from_bits(*bits)).unwrap(),
        Mp::F64(bits) => write_f64(out, f64::from_bits(*bits)).unwrap(),
        Mp::Str(s, width) => {
            let n = s.len();
            match width {
                1 if n < 256 => out.extend([0xd9, n as u8]),
                2 if n < 65536 => {
                    out.push(0xda);
                    out.extend((n as u16).to_be_bytes());
                }
                4 => {
                    out.push(0xdb);
                    out.extend((n as u32).to_be_bytes());
                }
                _ => write_str_len(out, n as u32).map(|_| ()).unwrap(),
            }
            out.extend_from_slice(s.as_bytes());
        }
        Mp::Bin(b) => write_bin(out, b).unwrap(),
        Mp::Ext(ty, data) => {
            write_ext_meta(out, data.len() as u32, *ty).unwrap();
            out.extend_from_slice(data);
        }
        Mp::Array(items) => {
            write_array_len(out, items.len() as u32).unwrap();
            for i in items {
                write_mp(out, i);
            }
        }
        Mp::Map(entries) => {
            write_map_len(out, entries.len() as u32).unwrap();
            for (k, v) in entries {
                write_mp(out, k);
                write_mp(out, v);
            }
        }
    }
}

fn bytes_of(v: &Mp) -> Vec<u8> {
    let mut out = Vec::new();
    write_mp(&mut out, v);
    out
}

/// Integers with the edges of every msgpack width weighted in.
fn any_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => any::<i64>(),
        2 => -40i64..200,
        1 => prop::sample::select(vec![
            i64::MIN, i64::MIN + 1, -2_147_483_649, -2_147_483_648, -32_769, -32_768,
            -129, -128, -33, -32, -1, 0, 127, 128, 255, 256, 65_535, 65_536,
            4_294_967_295, 4_294_967_296, i64::MAX - 1, i64::MAX,
        ]),
    ]
}

fn any_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => any::<u64>(),
        1 => (i64::MAX as u64)..=u64::MAX,
        1 => prop::sample::select(vec![
            0u64, 127, 128, 255, 256, 65_535, 65_536, 4_294_967_295, 4_294_967_296,
            i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX - 1, u64::MAX,
        ]),
    ]
}

/// Strings with escapes, control characters, quotes and any Unicode.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        2 => vec(
            prop::sample::select(vec![
                "a", "\"", "\\", "/", "\n", "\r", "\t", "\u{0}", "\u{1f}", "\u{7f}",
                "é", "€", "\u{2028}", "\u{2029}", "\u{feff}", "😀", "\u{10ffff}", " ",
                "\\u0041", "{", "]", ":", ",",
            ]),
            0..24,
        )
        .prop_map(|parts| parts.concat()),
    ]
}

fn mp_leaf() -> impl Strategy<Value = Mp> {
    prop_oneof![
        Just(Mp::Nil),
        any::<bool>().prop_map(Mp::Bool),
        (any_i64(), any::<bool>()).prop_map(|(i, w)| Mp::Int(i, w)),
        (any_u64(), any::<bool>()).prop_map(|(u, w)| Mp::UInt(u, w)),
        any::<u32>().prop_map(Mp::F32),
        any::<u64>().prop_map(Mp::F64),
        (any_text(), 0u8..5).prop_map(|(s, w)| Mp::Str(s, if w == 3 { 4 } else { w })),
        vec(any::<u8>(), 0..64).prop_map(Mp::Bin),
        (
            any::<i8>(),
            prop_oneof![
                Just(1usize),
                Just(2),
                Just(4),
                Just(8),
                Just(16),
                0usize..40
            ]
        )
            .prop_flat_map(|(ty, n)| vec(any::<u8>(), n).prop_map(move |d| Mp::Ext(ty, d))),
    ]
}

/// Nested values up to depth 5 (arrays and maps with any keys).
fn mp_value() -> impl Strategy<Value = Mp> {
    mp_leaf().prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Mp::Array),
            vec((inner.clone(), inner), 0..6).prop_map(Mp::Map),
        ]
    })
}

/// One msgpack array (call arguments).
fn mp_args() -> impl Strategy<Value = Vec<u8>> {
    vec(mp_value(), 0..6).prop_map(|items| bytes_of(&Mp::Array(items)))
}

/// A value without ext (which has no JSON form) and with str-only map keys.
fn has_ext(v: &Mp) -> bool {
    match v {
        Mp::Ext(..) => true,
        Mp::Array(items) => items.iter().any(has_ext),
        Mp::Map(entries) => entries.iter().any(|(k, v)| has_ext(k) || has_ext(v)),
        _ => false,
    }
}

/// Whether a map somewhere has an array or map as a key (no JSON form).
fn has_container_key(v: &Mp) -> bool {
    match v {
        Mp::Array(items) => items.iter().any(has_container_key),
        Mp::Map(entries) => entries.iter().any(|(k, v)| {
            matches!(k, Mp::Array(_) | Mp::Map(_)) || has_container_key(k) || has_container_key(v)
        }),
        _ => false,
    }
}

/// A valid message of any kind, for mutation.
fn any_message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (
            "[ -~]{0,40}",
            "[a-z_]{1,12}",
            mp_args(),
            "[a-z]{1,8}",
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(id, f, args, ns, remaining)| {
                let mut out = Vec::new();
                Encoder::at(&mut out, 1.7e9).call(&id, &f, &args, &ns, remaining);
                out
            }),
        (proptest::option::of("[ -~]{0,40}"), mp_value()).prop_map(|(id, v)| {
            let mut out = Vec::new();
            Encoder::at(&mut out, 1.7e9).response(id.as_deref(), &bytes_of(&v));
            out
        }),
        ("[ -~]{0,40}", any::<f64>(), any::<bool>()).prop_map(|(id, ts, r)| {
            let mut out = Vec::new();
            Encoder::at(&mut out, 1.7e9).heartbeat(&id, ts, r);
            out
        }),
        (proptest::option::of("[ -~]{0,40}"), any_text()).prop_map(|(id, t)| {
            let mut out = Vec::new();
            Encoder::at(&mut out, 1.7e9).error(id.as_deref(), &t, None);
            out
        }),
    ]
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
    /// Overwrite with a header that claims a huge length.
    Lie(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        (at, any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (at, 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (at, any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        at.prop_map(Mutation::Remove),
        at.prop_map(Mutation::Truncate),
        (
            at,
            prop::sample::select(vec![0xdb, 0xc6, 0xc9, 0xdd, 0xdf, 0xdc, 0xde, 0xda])
        )
            .prop_map(|(i, m)| Mutation::Lie(i, m)),
    ]
}

fn apply(buf: &mut Vec<u8>, m: &Mutation) {
    if buf.is_empty() {
        if let Mutation::Insert(_, b) = m {
            buf.push(*b);
        }
        return;
    }
    let n = buf.len();
    match *m {
        Mutation::Set(i, b) => buf[i % n] = b,
        Mutation::Flip(i, bit) => buf[i % n] ^= 1 << bit,
        Mutation::Insert(i, b) => buf.insert(i % (n + 1), b),
        Mutation::Remove(i) => {
            buf.remove(i % n);
        }
        Mutation::Truncate(i) => buf.truncate(i % n),
        Mutation::Lie(i, marker) => {
            let i = i % n;
            buf[i] = marker;
            for k in 1..5 {
                if i + k < n {
                    buf[i + k] = 0xff;
                }
            }
        }
    }
}

/// Everything that reads untrusted bytes; none of it may panic.
fn read_everything(buf: &[u8]) {
    let l = Limits::default();
    let _ = codec::decode(buf, l);
    let _ = codec::validate_value(buf, l);
    let _ = codec::validate_args(buf, l);
    let _ = json::from_msgpack(buf);
    // `array_len` is documented for validated input only, but must not panic.
    let _ = codec::array_len(buf);
    // Tight limits exercise the refusal paths.
    let tight = Limits {
        max_bytes: 8,
        max_items: 4,
        max_depth: 3,
    };
    let _ = codec::decode(buf, tight);
    let _ = codec::validate_value(buf, tight);
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn call_args_come_back_byte_for_byte(
        id in any_text(),
        function in any_text(),
        namespace in any_text(),
        args in mp_args(),
        remaining in proptest::option::of(any::<u64>()),
    ) {
        let mut buf = Vec::new();
        Encoder::new(&mut buf).call(&id, &function, &args, &namespace, remaining);
        let m = codec::decode(&buf, Limits::default()).unwrap();
        prop_assert_eq!(m.kind, Kind::Call);
        prop_assert_eq!(m.id, Some(id.as_str()));
        prop_assert_eq!(m.function, Some(function.as_str()));
        prop_assert_eq!(m.namespace, Some(namespace.as_str()));
        prop_assert_eq!(m.args, Some(&args[..]));
        prop_assert_eq!(m.remaining_ms, remaining);
        prop_assert!(m.timestamp.unwrap() > 1.7e9);
        prop_assert_eq!(codec::validate_args(&args, Limits::default()), Ok(()));
        // Re-encoding the decoded call at a fixed clock is byte-exact.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        Encoder::at(&mut a, 5.0).call(&id, &function, &args, &namespace, remaining);
        Encoder::at(&mut b, 5.0).call(
            m.id.unwrap(), m.function.unwrap(), m.args.unwrap(), m.namespace.unwrap(),
            m.remaining_ms);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn response_results_come_back_byte_for_byte(
        id in proptest::option::of(any_text()),
        value in mp_value(),
    ) {
        let result = bytes_of(&value);
        prop_assert_eq!(codec::validate_value(&result, Limits::default()), Ok(()));
        let mut buf = Vec::new();
        Encoder::new(&mut buf).response(id.as_deref(), &result);
        let m = codec::decode(&buf, Limits::default()).unwrap();
        prop_assert_eq!(m.kind, Kind::Response);
        prop_assert_eq!(m.id, id.as_deref());
        prop_assert_eq!(m.result, Some(&result[..]));
    }

    #[test]
    fn errors_and_heartbeats_round_trip(
        id in any_text(),
        text in any_text(),
        ts in any::<f64>(),
        echo in any::<bool>(),
    ) {
        let mut buf = Vec::new();
        Encoder::new(&mut buf).error(Some(&id), &text, None);
        let m = codec::decode(&buf, Limits::default()).unwrap();
        prop_assert_eq!((m.kind, m.id, m.error), (Kind::Error, Some(id.as_str()), Some(text.as_str())));
        let mut buf = Vec::new();
        Encoder::new(&mut buf).heartbeat(&id, ts, echo);
        let m = codec::decode(&buf, Limits::default()).unwrap();
        prop_assert_eq!(m.kind, Kind::Heartbeat);
        prop_assert_eq!(m.hb_timestamp.map(f64::to_bits), Some(ts.to_bits()));
        prop_assert_eq!(m.hb_response, echo);
    }

    /// Fields a foreign peer adds (anywhere in the map, any value, also in
    /// `metadata`) are skipped whole and change nothing else.
    #[test]
    fn unknown_fields_are_skipped_whole(
        args in mp_args(),
        extra in vec(("[a-z_]{1,10}", mp_value()), 0..4),
        meta in vec(("[a-z_]{1,10}", mp_value()), 0..4),
        at in any::<prop::sample::Index>(),
    ) {
        let s = |v: &str| bytes_of(&Mp::Str(v.to_owned(), 0));
        let known = ["app", "id", "type", "function", "args", "namespace", "metadata",
            "timestamp", "result", "error", "output", "client_name"];
        let mut entries: Vec<(String, Vec<u8>)> = vec![
            ("app".into(), s(codec::APP_ID)),
            ("id".into(), s("abc")),
            ("type".into(), s("call")),
            ("function".into(), s("add")),
            ("args".into(), args.clone()),
        ];
        let mut meta_map = Vec::new();
        for (k, v) in &meta {
            if k != "hb_timestamp" && k != "hb_response" {
                meta_map.push((Mp::Str(k.clone(), 0), v.clone()));
            }
        }
        entries.push(("metadata".into(), bytes_of(&Mp::Map(meta_map))));
        let pos = at.index(entries.len() + 1);
        for (k, v) in extra.iter().filter(|(k, _)| !known.contains(&k.as_str())) {
            entries.insert(pos.min(entries.len()), (k.clone(), bytes_of(v)));
        }
        let mut buf = Vec::new();
        rmp::encode::write_map_len(&mut buf, entries.len() as u32).unwrap();
        for (k, v) in &entries {
            buf.extend(s(k));
            buf.extend(v);
        }
        let m = codec::decode(&buf, Limits::default()).unwrap();
        prop_assert_eq!(m.kind, Kind::Call);
        prop_assert_eq!(m.id, Some("abc"));
        prop_assert_eq!(m.function, Some("add"));
        prop_assert_eq!(m.args, Some(&args[..]));
    }

    #[test]
    fn generated_values_validate_and_convert(value in mp_value()) {
        let bytes = bytes_of(&value);
        prop_assert_eq!(codec::validate_value(&bytes, Limits::default()), Ok(()));
        // A value followed by anything is one value too many.
        let mut more = bytes.clone();
        more.push(0xc0);
        prop_assert_eq!(codec::validate_value(&more, Limits::default()), Err(DecodeError::Trailing));
        // Every proper prefix is refused (never accepted as something else).
        for cut in [0, bytes.len() / 2, bytes.len() - 1] {
            prop_assert!(codec::validate_value(&bytes[..cut], Limits::default()).is_err());
        }
        // Without ext values or container keys, the JSON view exists and is valid JSON.
        if !has_ext(&value) && !has_container_key(&value) {
            let text = json::from_msgpack(&bytes).unwrap();
            prop_assert!(serde_json::from_str::<Value>(&text).is_ok(), "{}", text);
        } else {
            prop_assert!(json::from_msgpack(&bytes).is_err());
        }
    }
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn arbitrary_bytes_never_panic(buf in vec(any::<u8>(), 0..256)) {
        read_everything(&buf);
    }

    #[test]
    fn map_shaped_bytes_never_panic(
        n in 0u8..16,
        body in vec(prop_oneof![
            3 => any::<u8>(),
            1 => prop::sample::select(vec![0xa3, b'a', b'p', 0xa4, b't', b'y', b'e', 0x91, 0x81, 0xdf, 0xdb, 0xff]),
        ], 0..128),
    ) {
        let mut buf = vec![0x80 | n];
        buf.extend(body);
        read_everything(&buf);
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn mutated_messages_never_panic(
        msg in any_message(),
        edits in vec(mutation(), 1..6),
    ) {
        let mut buf = msg;
        for e in &edits {
            apply(&mut buf, e);
        }
        read_everything(&buf);
    }

    #[test]
    fn mutated_values_never_panic(value in mp_value(), edits in vec(mutation(), 1..4)) {
        let mut buf = bytes_of(&value);
        for e in &edits {
            apply(&mut buf, e);
        }
        read_everything(&buf);
    }
}

// ---------------------------------------------------------------------------
// JSON ⇄ MessagePack
// ---------------------------------------------------------------------------

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any_i64().prop_map(Value::from),
        any_u64().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop::sample::select(vec![
            0.0,
            -0.0,
            0.1,
            1e-300,
            5e-324,
            1e300,
            f64::MAX,
            f64::MIN,
            2.0,
            1e16,
            123456789.0
        ])
        .prop_map(Value::from),
        any_text().prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            vec((any_text(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn json_round_trips_exactly(value in json_value()) {
        let text = value.to_string();
        let mp = json::to_msgpack(&text).unwrap();
        prop_assert_eq!(codec::validate_value(&mp, Limits::default()), Ok(()));
        let back = json::from_msgpack(&mp).unwrap();
        // The same text (integers exact, floats shortest round-trip form,
        // strings with serde_json's escaping, object order kept)...
        prop_assert_eq!(&back, &text);
        // ...and so the same value.
        let parsed: Value = serde_json::from_str(&back).unwrap();
        prop_assert_eq!(parsed, value);
    }

    #[test]
    fn json_integers_use_exact_msgpack_integers(i in any_i64(), u in any_u64()) {
        let mp = json::to_msgpack(&i.to_string()).unwrap();
        prop_assert_eq!(rmp::decode::read_int::<i64, _>(&mut &mp[..]).unwrap(), i);
        prop_assert_eq!(json::from_msgpack(&mp).unwrap(), i.to_string());
        let mp = json::to_msgpack(&u.to_string()).unwrap();
        prop_assert_eq!(rmp::decode::read_int::<u64, _>(&mut &mp[..]).unwrap(), u);
        prop_assert_eq!(json::from_msgpack(&mp).unwrap(), u.to_string());
        // One past either end is refused, never rounded.
        let below = (i128::from(i64::MIN) - 1 - i128::from(u % 1000)).to_string();
        prop_assert!(json::to_msgpack(&below).is_err());
        let above = (i128::from(u64::MAX) + 1 + i128::from(u % 1000)).to_string();
        prop_assert!(json::to_msgpack(&above).is_err());
    }

    #[test]
    fn json_text_with_escapes_parses_to_the_same_string(s in any_text()) {
        // Every character written as a \u escape (surrogate pairs past the BMP).
        let mut text = String::from("\"");
        for unit in s.encode_utf16() {
            text.push_str(&format!("\\u{unit:04x}"));
        }
        text.push('"');
        let back = json::from_msgpack(&json::to_msgpack(&text).unwrap()).unwrap();
        prop_assert_eq!(serde_json::from_str::<String>(&back).unwrap(), s);
    }

    /// Any msgpack value converts without panicking; what converts is JSON.
    #[test]
    fn from_msgpack_of_generated_and_arbitrary_bytes(
        value in mp_value(),
        junk in vec(any::<u8>(), 0..64),
    ) {
        for buf in [bytes_of(&value), junk] {
            if let Ok(text) = json::from_msgpack(&buf) {
                prop_assert!(serde_json::from_str::<Value>(&text).is_ok(), "{}", text);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Deterministic edges found while writing the properties
// ---------------------------------------------------------------------------

/// A JSON value `to_msgpack` accepts must be one the rest of the library
/// accepts: `from_msgpack`, `validate_value` and a call's `args` all refuse
/// nesting past `Limits::max_depth` (100 containers).
#[test]
fn json_depth_limit_agrees_with_the_codec() {
    for depth in 95..=105 {
        let text = "[".repeat(depth) + &"]".repeat(depth);
        // The same nesting written directly as msgpack: fixarrays of one,
        // the innermost empty.
        let mut direct = vec![0x91; depth - 1];
        direct.push(0x90);
        let codec_says = codec::validate_value(&direct, Limits::default());
        match json::to_msgpack(&text) {
            Ok(mp) => {
                assert!(depth <= 100, "to_msgpack accepted {depth} nested arrays");
                assert_eq!(mp, direct, "{depth} nested arrays");
                assert_eq!(
                    codec_says,
                    Ok(()),
                    "the codec refuses {depth} nested arrays"
                );
                assert_eq!(json::from_msgpack(&mp).unwrap(), text);
            }
            Err(e) => {
                assert!(depth > 100, "to_msgpack refused {depth} nested arrays: {e}");
                assert!(e.to_string().contains("depth limit"), "{e}");
                assert_eq!(
                    codec_says,
                    Err(DecodeError::TooDeep),
                    "{depth} nested arrays"
                );
                let refused = json::from_msgpack(&direct).unwrap_err();
                assert!(refused.to_string().contains("depth limit"), "{refused}");
            }
        }
    }
}

/// Metadata is advisory: a value under `hb_response` that is not a bool,
/// or a key that is not a string, must be skipped whole. The decoder reads
/// used to read only the *header* of such a value (or key) and then parse
/// its body as if it were the next entries: a valid message was refused or,
/// worse, bytes hidden inside a string were read as top-level fields.
#[test]
fn metadata_values_and_keys_are_skipped_whole() {
    let s = |v: &str| bytes_of(&Mp::Str(v.to_owned(), 0));
    let call = |metadata: Vec<u8>| {
        let mut buf = vec![0x86];
        for (k, v) in [
            ("app", s(codec::APP_ID)),
            ("id", s("abc")),
            ("type", s("call")),
            ("metadata", metadata),
            ("function", s("add")),
            ("args", vec![0x92, 0x01, 0x02]),
        ] {
            buf.extend(s(k));
            buf.extend(v);
        }
        buf
    };
    let mut hb_str = vec![0x81];
    hb_str.extend(s("hb_response"));
    hb_str.extend(s("yes"));
    let mut hb_array = vec![0x81];
    hb_array.extend(s("hb_response"));
    hb_array.extend([0x92, 0xc3, 0xc3]);
    let bin_key = vec![0x81, 0xc4, 0x02, 0xa1, b'x', 0xc0];
    let array_key = vec![0x81, 0x92, 0x01, 0x02, 0xc0];
    for (name, metadata) in [
        ("hb_response as a str", hb_str),
        ("hb_response as an array", hb_array),
        ("a bin key", bin_key),
        ("an array key", array_key),
    ] {
        let buf = call(metadata);
        assert_eq!(codec::validate_value(&buf, Limits::default()), Ok(()));
        let m = codec::decode(&buf, Limits::default())
            .unwrap_or_else(|e| panic!("metadata with {name}: a valid call refused ({e})"));
        assert_eq!(m.function, Some("add"), "metadata with {name}");
        assert_eq!(
            m.args,
            Some(&[0x92, 0x01, 0x02][..]),
            "metadata with {name}"
        );
        assert!(!m.hb_response, "metadata with {name}");
    }

    // Smuggling: a message whose `app` is wrong, but whose metadata hides
    // an `app` and a `type` inside a bin, must stay refused. Read
    // honestly it is {metadata: {hb_response: <bin>}, app: "not_comlink",
    // type: "call", pad: nil}; the hidden bytes end with a key and an array
    // header that swallows the six real items that follow.
    let mut hidden = Vec::new();
    hidden.extend(s("app"));
    hidden.extend(s(codec::APP_ID));
    hidden.extend(s("type"));
    hidden.extend(s("shutdown"));
    hidden.extend(s("x"));
    hidden.push(0x96);
    let mut meta = vec![0x81];
    meta.extend(s("hb_response"));
    meta.extend(bytes_of(&Mp::Bin(hidden)));
    let mut buf = vec![0x84];
    buf.extend(s("metadata"));
    buf.extend(meta);
    buf.extend(s("app"));
    buf.extend(s("not_comlink"));
    buf.extend(s("type"));
    buf.extend(s("call"));
    buf.extend(s("pad"));
    buf.push(0xc0);
    assert_eq!(codec::validate_value(&buf, Limits::default()), Ok(()));
    let got = codec::decode(&buf, Limits::default()).map(|m| m.kind);
    assert_eq!(
        got,
        Err(DecodeError::WrongApp),
        "a foreign message was read as a {got:?} from bytes inside a bin"
    );
}

/// A map key that is not a string is written as its JSON text inside a
/// JSON string, and that text used to be escaped again at every level: `"`
/// became `\"`, then `\\\"`, ... so nested container keys doubled the
/// output per level (45 bytes of msgpack became 8 MiB of JSON). Since
/// `from_msgpack` runs on what a peer sends, a few hostile bytes could
/// exhaust memory; container keys are now refused. The output must grow at
/// most linearly with the input, or the value be refused.
#[test]
fn from_msgpack_output_grows_linearly_with_its_input() {
    for depth in [4usize, 12, 22] {
        // {{{...{nil: nil}...: nil}: nil}: nil}, keys nested `depth` deep.
        let mut buf = vec![0x81; depth];
        buf.extend(vec![0xc0; depth + 1]);
        match json::from_msgpack(&buf) {
            Err(_) => {}
            Ok(text) => assert!(
                text.len() <= 16 * buf.len() + 64,
                "{} bytes of msgpack (map keys nested {depth} deep) became {} bytes of JSON",
                buf.len(),
                text.len()
            ),
        }
    }
}
