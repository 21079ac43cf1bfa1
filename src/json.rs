//! The JSON convenience mapping: JSON text ⇄ MessagePack bytes.
//!
//! JSON → MessagePack: null, true/false, integers as the smallest exact
//! msgpack integer (any value in i64 ∪ u64; larger integers are refused, never
//! rounded), numbers with a fraction or exponent as float64, strings as str,
//! arrays and objects as array and map (keys str, order kept).
//!
//! MessagePack → JSON: integers exactly (i64/u64 text), floats as JSON numbers
//! (NaN and ±Infinity as `null`: JSON has no spelling for them), str as
//! strings, bin as a base64 string (RFC 4648, with padding), maps as objects
//! whose non-string scalar keys are written as their JSON text (`1` → `"1"`),
//! array/map keys and ext values are refused (no JSON form), strings that are not UTF-8 are refused.

use crate::codec::{self, Limits};
use crate::error::{Error, Result};
use rmp::Marker;
use serde_json::Value;
use std::fmt::Write as _;

/// Parses JSON text and encodes it as one MessagePack value.
pub fn to_msgpack(json: &str) -> Result<Vec<u8>> {
    let value: Value =
        serde_json::from_str(json).map_err(|e| Error::invalid(format!("invalid JSON: {e}")))?;
    let mut out = Vec::with_capacity(json.len());
    write_value(&mut out, &value, 0)?;
    Ok(out)
}

/// Parses a JSON array (call arguments) and encodes it as a MessagePack array.
pub fn args_to_msgpack(json: &str) -> Result<Vec<u8>> {
    let value: Value =
        serde_json::from_str(json).map_err(|e| Error::invalid(format!("invalid JSON: {e}")))?;
    if !value.is_array() {
        return Err(Error::invalid("arguments must be a JSON array"));
    }
    let mut out = Vec::with_capacity(json.len());
    write_value(&mut out, &value, 0)?;
    Ok(out)
}

fn write_value(out: &mut Vec<u8>, value: &Value, depth: usize) -> Result<()> {
    // The same rule as the codec's: containers may nest 100 deep.
    let container = matches!(value, Value::Array(_) | Value::Object(_));
    if container && depth >= Limits::default().max_depth {
        return Err(Error::invalid(
            "JSON nesting exceeds the depth limit of 100",
        ));
    }
    // Writes into a Vec cannot fail; the encoder's Result is for io::Write in general.
    match value {
        Value::Null => {
            let _ = rmp::encode::write_nil(out);
        }
        Value::Bool(b) => {
            let _ = rmp::encode::write_bool(out, *b);
        }
        Value::Number(n) => write_number(out, n)?,
        Value::String(s) => {
            let _ = rmp::encode::write_str(out, s);
        }
        Value::Array(items) => {
            let _ = rmp::encode::write_array_len(out, len32(items.len())?);
            for item in items {
                write_value(out, item, depth + 1)?;
            }
        }
        Value::Object(map) => {
            let _ = rmp::encode::write_map_len(out, len32(map.len())?);
            for (k, v) in map {
                let _ = rmp::encode::write_str(out, k);
                write_value(out, v, depth + 1)?;
            }
        }
    }
    Ok(())
}

fn len32(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::invalid("JSON container too large"))
}

fn write_number(out: &mut Vec<u8>, n: &serde_json::Number) -> Result<()> {
    if let Some(i) = n.as_i64() {
        let _ = rmp::encode::write_sint(out, i);
    } else if let Some(u) = n.as_u64() {
        let _ = rmp::encode::write_uint(out, u);
    } else {
        let text = n.to_string();
        if !text.contains(['.', 'e', 'E']) {
            return Err(Error::invalid(format!(
                "integer {text} is outside the 64-bit range msgpack can carry"
            )));
        }
        let f = n
            .as_f64()
            .filter(|f| f.is_finite())
            .ok_or_else(|| Error::invalid(format!("number {text} is not a finite float64")))?;
        let _ = rmp::encode::write_f64(out, f);
    }
    Ok(())
}

/// Converts one MessagePack value to JSON text.
pub fn from_msgpack(buf: &[u8]) -> Result<String> {
    codec::validate_value(buf, Limits::default()).map_err(|e| {
        Error::new(
            crate::error::ErrorKind::Protocol,
            format!("invalid msgpack: {e}"),
        )
    })?;
    let mut out = String::with_capacity(buf.len() * 2);
    let mut pos = 0;
    write_json(buf, &mut pos, &mut out)?;
    Ok(out)
}

fn unrepresentable(what: &str) -> Error {
    Error::new(
        crate::error::ErrorKind::Protocol,
        format!("{what} has no JSON form"),
    )
}

/// Reads a big-endian unsigned integer of `n` bytes (bounds already validated).
fn be(buf: &[u8], pos: &mut usize, n: usize) -> u64 {
    let v = buf[*pos..*pos + n]
        .iter()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    *pos += n;
    v
}

fn write_json(buf: &[u8], pos: &mut usize, out: &mut String) -> Result<()> {
    let marker = Marker::from_u8(buf[*pos]);
    *pos += 1;
    match marker {
        Marker::Null => out.push_str("null"),
        Marker::True => out.push_str("true"),
        Marker::False => out.push_str("false"),
        Marker::FixPos(v) => {
            let _ = write!(out, "{v}");
        }
        Marker::FixNeg(v) => {
            let _ = write!(out, "{v}");
        }
        Marker::U8 | Marker::U16 | Marker::U32 | Marker::U64 => {
            let n = match marker {
                Marker::U8 => 1,
                Marker::U16 => 2,
                Marker::U32 => 4,
                _ => 8,
            };
            let _ = write!(out, "{}", be(buf, pos, n));
        }
        Marker::I8 => {
            let _ = write!(out, "{}", be(buf, pos, 1) as u8 as i8);
        }
        Marker::I16 => {
            let _ = write!(out, "{}", be(buf, pos, 2) as u16 as i16);
        }
        Marker::I32 => {
            let _ = write!(out, "{}", be(buf, pos, 4) as u32 as i32);
        }
        Marker::I64 => {
            let _ = write!(out, "{}", be(buf, pos, 8) as i64);
        }
        Marker::F32 => write_float(out, f64::from(f32::from_bits(be(buf, pos, 4) as u32))),
        Marker::F64 => write_float(out, f64::from_bits(be(buf, pos, 8))),
        Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => {
            let n = match marker {
                Marker::FixStr(n) => usize::from(n),
                Marker::Str8 => be(buf, pos, 1) as usize,
                Marker::Str16 => be(buf, pos, 2) as usize,
                _ => be(buf, pos, 4) as usize,
            };
            let s = std::str::from_utf8(&buf[*pos..*pos + n])
                .map_err(|_| unrepresentable("a msgpack str that is not UTF-8"))?;
            *pos += n;
            write_json_string(out, s);
        }
        Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
            let n = match marker {
                Marker::Bin8 => be(buf, pos, 1) as usize,
                Marker::Bin16 => be(buf, pos, 2) as usize,
                _ => be(buf, pos, 4) as usize,
            };
            out.push('"');
            base64(&buf[*pos..*pos + n], out);
            out.push('"');
            *pos += n;
        }
        Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
            let n = match marker {
                Marker::FixArray(n) => usize::from(n),
                Marker::Array16 => be(buf, pos, 2) as usize,
                _ => be(buf, pos, 4) as usize,
            };
            out.push('[');
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                write_json(buf, pos, out)?;
            }
            out.push(']');
        }
        Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => {
            let n = match marker {
                Marker::FixMap(n) => usize::from(n),
                Marker::Map16 => be(buf, pos, 2) as usize,
                _ => be(buf, pos, 4) as usize,
            };
            out.push('{');
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                write_key(buf, pos, out)?;
                out.push(':');
                write_json(buf, pos, out)?;
            }
            out.push('}');
        }
        _ => return Err(unrepresentable("a msgpack ext value")),
    }
    Ok(())
}

/// A map key: strings as they are, other scalars as their JSON text in a
/// string; array and map keys are refused.
fn write_key(buf: &[u8], pos: &mut usize, out: &mut String) -> Result<()> {
    match Marker::from_u8(buf[*pos]) {
        Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => {
            write_json(buf, pos, out)
        }
        // Written as text, a container key would be escaped again at every
        // level, doubling the output per level.
        Marker::FixArray(_)
        | Marker::Array16
        | Marker::Array32
        | Marker::FixMap(_)
        | Marker::Map16
        | Marker::Map32 => Err(unrepresentable("a map key that is an array or a map")),
        _ => {
            let mut key = String::new();
            write_json(buf, pos, &mut key)?;
            write_json_string(out, &key);
            Ok(())
        }
    }
}

fn write_float(out: &mut String, f: f64) {
    if f.is_finite() {
        // serde_json prints the shortest text that reads back to the same f64,
        // and always with a fraction or exponent, so it stays a float.
        out.push_str(&Value::from(f).to_string());
    } else {
        out.push_str("null");
    }
}

fn write_json_string(out: &mut String, s: &str) {
    out.push_str(&Value::from(s).to_string());
}

fn base64(bytes: &[u8], out: &mut String) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(json: &str) -> String {
        from_msgpack(&to_msgpack(json).unwrap()).unwrap()
    }

    #[test]
    fn every_json_kind_round_trips() {
        for json in [
            "null",
            "true",
            "false",
            "0",
            "-1",
            "127",
            "-33",
            "255",
            "65536",
            "9223372036854775807",
            "-9223372036854775808",
            "18446744073709551615",
            "-9007199254740993",
            "1.5",
            "-0.25",
            "1e+300",
            "\"\"",
            "\"h\\u00e9llo \\u2713 \\\"q\\\" \\n\"",
            "[]",
            "{}",
            "[1,\"a\",[2.5,null],{\"k\":{\"n\":[1,2]}}]",
        ] {
            let back: Value = serde_json::from_str(&round(json)).unwrap();
            let orig: Value = serde_json::from_str(json).unwrap();
            assert_eq!(back, orig, "{json}");
        }
        assert_eq!(round("-9007199254740993"), "-9007199254740993");
        assert_eq!(round("18446744073709551615"), "18446744073709551615");
        assert_eq!(round("{\"b\":1,\"a\":2}"), "{\"b\":1,\"a\":2}");
    }

    #[test]
    fn integers_pick_the_smallest_exact_encoding() {
        assert_eq!(to_msgpack("1").unwrap(), [0x01]);
        assert_eq!(to_msgpack("-1").unwrap(), [0xff]);
        assert_eq!(to_msgpack("200").unwrap(), [0xcc, 200]);
        assert_eq!(
            to_msgpack("18446744073709551615").unwrap(),
            [0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(to_msgpack("2.0").unwrap()[0], 0xcb);
    }

    #[test]
    fn out_of_range_integers_are_refused_not_rounded() {
        let e = to_msgpack("18446744073709551616").unwrap_err();
        assert!(e.message.contains("outside the 64-bit range"), "{e}");
        let e = to_msgpack("-9223372036854775809").unwrap_err();
        assert!(e.message.contains("outside the 64-bit range"), "{e}");
    }

    #[test]
    fn bad_json_and_non_arrays_are_invalid_arguments() {
        use crate::error::ErrorKind;
        assert_eq!(
            to_msgpack("[1,").unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            args_to_msgpack("{\"a\":1}").unwrap_err().message,
            "arguments must be a JSON array"
        );
        assert_eq!(args_to_msgpack("[1,2]").unwrap(), [0x92, 1, 2]);
        let deep = "[".repeat(150) + &"]".repeat(150);
        assert!(to_msgpack(&deep).is_err());
    }

    #[test]
    fn msgpack_only_kinds_map_as_documented() {
        // bin → base64
        assert_eq!(from_msgpack(&[0xc4, 3, 0, 1, 0xff]).unwrap(), "\"AAH/\"");
        assert_eq!(from_msgpack(&[0xc4, 1, b'M']).unwrap(), "\"TQ==\"");
        assert_eq!(from_msgpack(&[0xc4, 2, b'M', b'a']).unwrap(), "\"TWE=\"");
        // NaN and infinities → null
        let nan = [0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0];
        assert_eq!(from_msgpack(&nan).unwrap(), "null");
        let inf = [0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0];
        assert_eq!(from_msgpack(&inf).unwrap(), "null");
        // non-string keys → their JSON text
        assert_eq!(
            from_msgpack(&[0x81, 0x01, 0xa1, b'x']).unwrap(),
            "{\"1\":\"x\"}"
        );
        // ext → refused
        assert!(from_msgpack(&[0xd4, 1, 2]).is_err());
        // float32 keeps a float form
        assert_eq!(from_msgpack(&[0xca, 0x3f, 0xc0, 0, 0]).unwrap(), "1.5");
        // invalid msgpack → protocol error, not a panic
        assert!(from_msgpack(&[0x92, 0x01]).is_err());
        assert!(from_msgpack(&[0xa2, 0xff, 0xfe]).is_err());
    }
}
