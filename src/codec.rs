//! The wire codec of `comlink_ipc_v4` (PROTOCOL.md §4 and §7).
//!
//! Decoding borrows from the received frame: a [`Message`] holds slices into
//! the payload, and user values (`args`, `result`) stay raw MessagePack, so a
//! 1 MiB result is never copied or rebuilt as a value tree on the way through.
//! Every byte is bounds-checked and every container counted against
//! [`Limits`]; malformed input yields a [`DecodeError`], never a panic.

use rmp::Marker;
use std::fmt;

/// The application id every message carries.
pub const APP_ID: &str = "comlink_ipc_v4";
/// The namespace a call goes to when it names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Ceilings enforced while decoding (PROTOCOL.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest str, bin or ext payload, in bytes.
    pub max_bytes: usize,
    /// Most items in one array or entries in one map.
    pub max_items: usize,
    /// Deepest nesting of arrays and maps inside one user value.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 10 * 1024 * 1024,
            max_items: 100_000,
            max_depth: 100,
        }
    }
}

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end in the middle of a value.
    Truncated,
    /// A byte that starts no MessagePack value (0xc1).
    Reserved,
    /// Bytes left after the value.
    Trailing,
    /// The payload is not a map.
    NotAMap,
    /// `app` is missing or not `comlink_ipc_v4`.
    WrongApp,
    /// A known field has the wrong type.
    Field(&'static str),
    /// A map key is not a string.
    Key,
    /// A string is not UTF-8.
    Utf8,
    /// A str/bin/ext longer than the limit.
    TooLong(usize),
    /// An array or map with more items than the limit.
    TooMany(usize),
    /// Nesting deeper than the limit.
    TooDeep,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("truncated msgpack"),
            DecodeError::Reserved => f.write_str("invalid msgpack byte 0xc1"),
            DecodeError::Trailing => f.write_str("trailing bytes after the msgpack value"),
            DecodeError::NotAMap => f.write_str("payload is not a map"),
            DecodeError::WrongApp => write!(f, "'app' is not '{APP_ID}'"),
            DecodeError::Field(name) => write!(f, "field '{name}' has the wrong type"),
            DecodeError::Key => f.write_str("map key is not a string"),
            DecodeError::Utf8 => f.write_str("string is not valid UTF-8"),
            DecodeError::TooLong(n) => write!(f, "string or binary of {n} bytes exceeds the limit"),
            DecodeError::TooMany(n) => write!(f, "container of {n} items exceeds the limit"),
            DecodeError::TooDeep => f.write_str("nesting exceeds the depth limit"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The message types of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Call,
    Response,
    Error,
    Stdout,
    Stderr,
    Heartbeat,
    Shutdown,
    /// This library's extension: the caller gave up on call `id`.
    Cancel,
    /// This library's extension: one item of call `id`'s stream.
    Stream,
    /// This library's extension: the caller takes `credit` more items of
    /// call `id`'s stream.
    Credit,
    /// A type this version does not know; receivers ignore it.
    Unknown,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Call => "call",
            Kind::Response => "response",
            Kind::Error => "error",
            Kind::Stdout => "stdout",
            Kind::Stderr => "stderr",
            Kind::Heartbeat => "heartbeat",
            Kind::Shutdown => "shutdown",
            Kind::Cancel => "cancel",
            Kind::Stream => "stream",
            Kind::Credit => "credit",
            Kind::Unknown => "unknown",
        }
    }

    fn parse(s: &[u8]) -> Kind {
        match s {
            b"call" => Kind::Call,
            b"response" => Kind::Response,
            b"error" => Kind::Error,
            b"stdout" => Kind::Stdout,
            b"stderr" => Kind::Stderr,
            b"heartbeat" => Kind::Heartbeat,
            b"shutdown" => Kind::Shutdown,
            b"cancel" => Kind::Cancel,
            b"stream" => Kind::Stream,
            b"credit" => Kind::Credit,
            _ => Kind::Unknown,
        }
    }
}

/// What an `error` reply's `metadata.error_kind` says failed (this
/// library's extension; other workers send none, and their text is read
/// instead, see `Parent`'s routing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKindName {
    /// The worker has no function of the name called.
    NoSuchFunction,
    /// The call was cancelled before its handler started, which then never ran.
    Cancelled,
    /// The call's time ran out before its handler started, which then never ran.
    Timeout,
}

impl ErrorKindName {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKindName::NoSuchFunction => "no_such_function",
            ErrorKindName::Cancelled => "cancelled",
            ErrorKindName::Timeout => "timeout",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorKindName> {
        [
            ErrorKindName::NoSuchFunction,
            ErrorKindName::Cancelled,
            ErrorKindName::Timeout,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One decoded message. User values (`args`, `result`) are raw MessagePack
/// slices of the payload; strings are borrowed.
#[derive(Debug, Clone, PartialEq)]
pub struct Message<'a> {
    pub kind: Kind,
    pub id: Option<&'a str>,
    pub timestamp: Option<f64>,
    pub function: Option<&'a str>,
    pub namespace: Option<&'a str>,
    /// The raw `args` array.
    pub args: Option<&'a [u8]>,
    /// The raw `result` value (present, possibly nil, on a response).
    pub result: Option<&'a [u8]>,
    pub error: Option<&'a str>,
    pub output: Option<&'a str>,
    pub client_name: Option<&'a str>,
    /// `metadata.hb_timestamp` of a heartbeat.
    pub hb_timestamp: Option<f64>,
    /// `metadata.hb_response` of a heartbeat echo.
    pub hb_response: bool,
    /// `metadata.remaining_ms` of a call: the time its caller still waits
    /// for it, when it was sent (this library's extension).
    pub remaining_ms: Option<u64>,
    /// `metadata.error_kind` of an error: what failed, in a word this
    /// library's workers use (see [`ErrorKindName`]).
    pub error_kind: Option<&'a str>,
    /// `metadata.stream` of a call: it asks for a stream, and the worker
    /// may send this many items before it is granted more.
    pub stream_credit: Option<u64>,
    /// `seq` and the raw `item` of a `stream` message.
    pub seq: Option<u64>,
    pub item: Option<&'a [u8]>,
    /// `credit` of a `credit` message.
    pub credit: Option<u64>,
}

impl<'a> Message<'a> {
    fn empty(kind: Kind) -> Self {
        Message {
            kind,
            id: None,
            timestamp: None,
            function: None,
            namespace: None,
            args: None,
            result: None,
            error: None,
            output: None,
            client_name: None,
            hb_timestamp: None,
            hb_response: false,
            remaining_ms: None,
            error_kind: None,
            stream_credit: None,
            seq: None,
            item: None,
            credit: None,
        }
    }
}

/// Bytes a `call` or `response` takes besides its variable strings and
/// values (keys, markers, `app`, type, timestamps): at most 134.
const ENVELOPE: usize = 160;

/// A cursor over a MessagePack byte string that never reads out of bounds.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    limits: Limits,
}

/// What a marker says about the value it starts.
enum Head {
    Nil,
    Bool,
    Int(i128),
    Float(f64),
    Str(usize),
    Bin(usize),
    Ext(usize),
    Array(usize),
    Map(usize),
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], limits: Limits) -> Self {
        Reader {
            buf,
            pos: 0,
            limits,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn head(&mut self) -> Result<Head, DecodeError> {
        let byte = *self.take(1)?.first().ok_or(DecodeError::Truncated)?;
        let head = match Marker::from_u8(byte) {
            Marker::FixPos(v) => Head::Int(i128::from(v)),
            Marker::FixNeg(v) => Head::Int(i128::from(v)),
            Marker::Null => Head::Nil,
            Marker::True | Marker::False => Head::Bool,
            Marker::U8 => Head::Int(i128::from(self.be(1)?)),
            Marker::U16 => Head::Int(i128::from(self.be(2)?)),
            Marker::U32 => Head::Int(i128::from(self.be(4)?)),
            Marker::U64 => Head::Int(i128::from(self.be(8)?)),
            Marker::I8 => Head::Int(i128::from(self.be(1)? as u8 as i8)),
            Marker::I16 => Head::Int(i128::from(self.be(2)? as u16 as i16)),
            Marker::I32 => Head::Int(i128::from(self.be(4)? as u32 as i32)),
            Marker::I64 => Head::Int(i128::from(self.be(8)? as i64)),
            Marker::F32 => Head::Float(f64::from(f32::from_bits(self.be(4)? as u32))),
            Marker::F64 => Head::Float(f64::from_bits(self.be(8)?)),
            Marker::FixStr(n) => Head::Str(usize::from(n)),
            Marker::Str8 => Head::Str(self.be(1)? as usize),
            Marker::Str16 => Head::Str(self.be(2)? as usize),
            Marker::Str32 => Head::Str(self.be(4)? as usize),
            Marker::Bin8 => Head::Bin(self.be(1)? as usize),
            Marker::Bin16 => Head::Bin(self.be(2)? as usize),
            Marker::Bin32 => Head::Bin(self.be(4)? as usize),
            Marker::FixArray(n) => Head::Array(usize::from(n)),
            Marker::Array16 => Head::Array(self.be(2)? as usize),
            Marker::Array32 => Head::Array(self.be(4)? as usize),
            Marker::FixMap(n) => Head::Map(usize::from(n)),
            Marker::Map16 => Head::Map(self.be(2)? as usize),
            Marker::Map32 => Head::Map(self.be(4)? as usize),
            Marker::FixExt1 => Head::Ext(1),
            Marker::FixExt2 => Head::Ext(2),
            Marker::FixExt4 => Head::Ext(4),
            Marker::FixExt8 => Head::Ext(8),
            Marker::FixExt16 => Head::Ext(16),
            Marker::Ext8 => Head::Ext(self.be(1)? as usize),
            Marker::Ext16 => Head::Ext(self.be(2)? as usize),
            Marker::Ext32 => Head::Ext(self.be(4)? as usize),
            Marker::Reserved => return Err(DecodeError::Reserved),
        };
        match head {
            Head::Str(n) | Head::Bin(n) | Head::Ext(n) if n > self.limits.max_bytes => {
                Err(DecodeError::TooLong(n))
            }
            Head::Array(n) | Head::Map(n) if n > self.limits.max_items => {
                Err(DecodeError::TooMany(n))
            }
            // Every item takes at least one byte: a count larger than what is
            // left cannot be honest, so refuse it before looping over it.
            Head::Array(n) if n > self.remaining() => Err(DecodeError::Truncated),
            Head::Map(n) if n.saturating_mul(2) > self.remaining() => Err(DecodeError::Truncated),
            h => Ok(h),
        }
    }

    /// Whether `bytes` come next (then they are read).
    #[inline]
    fn known(&mut self, bytes: &[u8]) -> bool {
        let end = self.pos + bytes.len();
        if self.buf.get(self.pos..end) == Some(bytes) {
            self.pos = end;
            return true;
        }
        false
    }

    /// A string of at most 31 bytes (a fixstr: keys, ids, names) read
    /// straight from its marker; `None`, reading nothing, for anything else.
    #[inline]
    fn fixstr(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        match self.buf.get(self.pos) {
            Some(&b) if b & 0xe0 == 0xa0 => {
                let n = usize::from(b & 0x1f);
                if n > self.limits.max_bytes {
                    return Err(DecodeError::TooLong(n));
                }
                self.pos += 1;
                self.take(n).map(Some)
            }
            _ => Ok(None),
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Skips one complete value; `depth` is the nesting it starts at.
    fn skip(&mut self, depth: usize) -> Result<(), DecodeError> {
        match self.head()? {
            Head::Str(n) | Head::Bin(n) => {
                self.take(n)?;
            }
            Head::Ext(n) => {
                self.take(n + 1)?;
            }
            Head::Array(n) => {
                if depth >= self.limits.max_depth {
                    return Err(DecodeError::TooDeep);
                }
                self.skip_items(n, depth + 1)?;
            }
            Head::Map(n) => {
                if depth >= self.limits.max_depth {
                    return Err(DecodeError::TooDeep);
                }
                self.skip_items(n * 2, depth + 1)?;
            }
            Head::Nil | Head::Bool | Head::Int(_) | Head::Float(_) => {}
        }
        Ok(())
    }

    /// Skips the `count` items of an array or map at `depth`; numbers, nil,
    /// booleans and fixext values (most arguments) by their marker alone.
    fn skip_items(&mut self, count: usize, depth: usize) -> Result<(), DecodeError> {
        for _ in 0..count {
            match self.buf.get(self.pos).map(|&b| SCALAR_LEN[usize::from(b)]) {
                Some(n @ 1..) => {
                    self.take(usize::from(n))?;
                }
                _ => self.skip(depth)?,
            }
        }
        Ok(())
    }

    /// Skips one value and returns its raw bytes.
    fn raw(&mut self, depth: usize) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        self.skip(depth)?;
        Ok(&self.buf[start..self.pos])
    }

    fn str(&mut self, field: &'static str) -> Result<Option<&'a str>, DecodeError> {
        self.str_bytes(field)?.map(utf8).transpose()
    }

    /// A str (or nil) field's bytes, for fields compared with known ASCII
    /// values: bytes that match one are valid UTF-8, and others are refused.
    fn str_bytes(&mut self, field: &'static str) -> Result<Option<&'a [u8]>, DecodeError> {
        if let Some(s) = self.fixstr()? {
            return Ok(Some(s));
        }
        match self.head()? {
            Head::Nil => Ok(None),
            Head::Str(n) => self.take(n).map(Some),
            _ => Err(DecodeError::Field(field)),
        }
    }

    fn float(&mut self, field: &'static str) -> Result<Option<f64>, DecodeError> {
        if self.buf.get(self.pos) == Some(&0xcb) {
            self.pos += 1;
            return Ok(Some(f64::from_bits(self.be(8)?)));
        }
        match self.head()? {
            Head::Nil => Ok(None),
            Head::Float(v) => Ok(Some(v)),
            Head::Int(v) => Ok(Some(v as f64)),
            _ => Err(DecodeError::Field(field)),
        }
    }

    /// A non-negative whole number: an integer, or a float rounded down;
    /// a negative one is 0 (a time already passed).
    fn uint(&mut self, field: &'static str) -> Result<Option<u64>, DecodeError> {
        match self.head()? {
            Head::Nil => Ok(None),
            Head::Int(v) => Ok(Some(v.clamp(0, i128::from(u64::MAX)) as u64)),
            Head::Float(v) if !v.is_nan() => Ok(Some(v.max(0.0) as u64)),
            _ => Err(DecodeError::Field(field)),
        }
    }

    /// A map key's bytes; callers match them against known (ASCII) names
    /// and check any other key with `utf8`.
    fn key(&mut self) -> Result<&'a [u8], DecodeError> {
        if let Some(s) = self.fixstr()? {
            return Ok(s);
        }
        match self.head()? {
            Head::Str(n) => self.take(n),
            _ => Err(DecodeError::Key),
        }
    }
}

/// Checks a str's bytes; protocol strings are mostly short ASCII (ids,
/// names), which a word-at-a-time check settles without the full decoder.
fn utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    match crate::sys::os::ascii_str(bytes) {
        Some(s) => Ok(s),
        None => std::str::from_utf8(bytes).map_err(|_| DecodeError::Utf8),
    }
}

/// Decodes one payload. Unknown fields are skipped (after validation).
pub fn decode(buf: &[u8], limits: Limits) -> Result<Message<'_>, DecodeError> {
    let mut r = Reader::new(buf, limits);
    let entries = match r.head()? {
        Head::Map(n) => n,
        _ => return Err(DecodeError::NotAMap),
    };
    let mut msg = Message::empty(Kind::Unknown);
    let mut app_ok = false;
    let mut kind = None;
    // The start every message of ours (and of most peers) has: app, id,
    // type, timestamp, in that order and as fixstr keys. Each one found is
    // read as the loop below would read it; the loop takes the rest.
    let mut done = 0;
    'usual: {
        // The keys and `app`'s value are not held to the length limit here.
        if limits.max_bytes < APP_ID.len() {
            break 'usual;
        }
        if done == entries || !r.known(APP_ENTRY) {
            break 'usual;
        }
        app_ok = true;
        done += 1;
        if done == entries || !r.known(b"\xa2id") {
            break 'usual;
        }
        msg.id = r.str("id")?;
        done += 1;
        if done == entries || !r.known(b"\xa4type") {
            break 'usual;
        }
        kind = r.str_bytes("type")?;
        done += 1;
        if done == entries || !r.known(b"\xa9timestamp") {
            break 'usual;
        }
        msg.timestamp = r.float("timestamp")?;
        done += 1;
    }
    for _ in done..entries {
        match r.key()? {
            b"app" => {
                let app = r.str_bytes("app")?;
                app_ok = app == Some(APP_ID.as_bytes());
                if !app_ok {
                    app.map(utf8).transpose()?;
                }
            }
            b"id" => msg.id = r.str("id")?,
            b"type" => kind = r.str_bytes("type")?,
            b"timestamp" => msg.timestamp = r.float("timestamp")?,
            b"function" => msg.function = r.str("function")?,
            b"namespace" => msg.namespace = r.str("namespace")?,
            b"error" => msg.error = r.str("error")?,
            b"output" => msg.output = r.str("output")?,
            b"client_name" => msg.client_name = r.str("client_name")?,
            b"args" => {
                let raw = r.raw(0)?;
                match Marker::from_u8(raw[0]) {
                    Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => msg.args = Some(raw),
                    Marker::Null => {}
                    _ => return Err(DecodeError::Field("args")),
                }
            }
            b"result" => msg.result = Some(r.raw(0)?),
            b"item" => msg.item = Some(r.raw(0)?),
            b"seq" => msg.seq = r.uint("seq")?,
            b"credit" => msg.credit = r.uint("credit")?,
            b"metadata" => decode_metadata(&mut r, &mut msg)?,
            other => {
                utf8(other)?;
                r.skip(1)?
            }
        }
    }
    if r.pos != buf.len() {
        return Err(DecodeError::Trailing);
    }
    if !app_ok {
        return Err(DecodeError::WrongApp);
    }
    msg.kind = kind.map_or(Kind::Unknown, Kind::parse);
    if msg.kind == Kind::Unknown {
        kind.map(utf8).transpose()?;
    }
    Ok(msg)
}

/// What the start of a message too large to read says about it: enough to
/// answer or fail the call it belongs to (see [`peek`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peek<'a> {
    pub kind: Kind,
    pub id: Option<&'a str>,
    pub function: Option<&'a str>,
    pub namespace: Option<&'a str>,
}

/// Reads the fields of a message from its first bytes (`prefix`, the rest
/// cut off), up to the first value that does not fit. Our peers write `app`,
/// `id` and `type` before any user value (see [`Encoder`]'s header), so a
/// prefix of a few KiB names the message; a peer that writes its large value
/// first leaves them unseen here. `None` when the prefix does not start a
/// map, or `app` is not among what it holds or is wrong: a message that is
/// not ours to answer.
pub fn peek(prefix: &[u8]) -> Option<Peek<'_>> {
    let mut r = Reader::new(prefix, Limits::default());
    // The entry count as written: `head` would refuse it for the bytes cut off.
    r.pos = 1;
    let n = match Marker::from_u8(*prefix.first()?) {
        Marker::FixMap(n) => usize::from(n),
        Marker::Map16 => r.be(2).ok()? as usize,
        Marker::Map32 => r.be(4).ok()? as usize,
        _ => return None,
    };
    let mut app_ok = false;
    let mut kind = None;
    let mut msg = Peek {
        kind: Kind::Unknown,
        id: None,
        function: None,
        namespace: None,
    };
    for _ in 0..n {
        let step = (|| -> Result<(), DecodeError> {
            match r.key()? {
                b"app" => app_ok = r.str_bytes("app")? == Some(APP_ID.as_bytes()),
                b"id" => msg.id = r.str("id")?,
                b"type" => kind = r.str_bytes("type")?,
                b"function" => msg.function = r.str("function")?,
                b"namespace" => msg.namespace = r.str("namespace")?,
                _ => r.skip(1)?,
            }
            Ok(())
        })();
        if step.is_err() {
            break;
        }
    }
    msg.kind = kind.map_or(Kind::Unknown, Kind::parse);
    app_ok.then_some(msg)
}

fn decode_metadata<'a>(r: &mut Reader<'a>, msg: &mut Message<'a>) -> Result<(), DecodeError> {
    // What every call of ours carries, `{timestamp_sent: <float64>}` (which
    // nothing reads) and, with a timeout, `remaining_ms: <uint64>`: read by
    // their bytes (the keys within the length limit).
    const CALL_METADATA: &[u8] = b"\x81\xaetimestamp_sent\xcb";
    const TIMED_CALL_METADATA: &[u8] = b"\x82\xaetimestamp_sent\xcb";
    const REMAINING: &[u8] = b"\xacremaining_ms\xcf";
    if r.limits.max_bytes >= 14 {
        if r.known(CALL_METADATA) {
            r.take(8)?;
            return Ok(());
        }
        let start = r.pos;
        if r.known(TIMED_CALL_METADATA) {
            r.take(8)?;
            if r.known(REMAINING) {
                msg.remaining_ms = Some(r.be(8)?);
                return Ok(());
            }
            r.pos = start;
        }
    }
    let entries = match r.head()? {
        Head::Map(n) => n,
        Head::Nil => return Ok(()),
        _ => return Err(DecodeError::Field("metadata")),
    };
    for _ in 0..entries {
        // Metadata keys written by other peers are strings; a key of any
        // other kind is skipped whole, with its value, since metadata is advisory.
        let is_str = matches!(
            r.buf.get(r.pos).map(|&b| Marker::from_u8(b)),
            Some(Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32)
        );
        if !is_str {
            r.skip(2)?;
            r.skip(2)?;
            continue;
        }
        match r.key()? {
            b"hb_timestamp" => msg.hb_timestamp = r.float("metadata.hb_timestamp")?,
            b"hb_response" => msg.hb_response = r.raw(2)? == [0xc3],
            b"remaining_ms" => msg.remaining_ms = r.uint("metadata.remaining_ms")?,
            b"error_kind" => msg.error_kind = r.str("metadata.error_kind")?,
            b"stream" => msg.stream_credit = r.uint("metadata.stream")?,
            // Sent with every call and some responses; ASCII, so no UTF-8 check.
            b"timestamp_sent" | b"timestamp_received" => r.skip(2)?,
            other => {
                utf8(other)?;
                r.skip(2)?
            }
        }
    }
    Ok(())
}

/// Checks that `buf` is exactly one MessagePack value within `limits`.
pub fn validate_value(buf: &[u8], limits: Limits) -> Result<(), DecodeError> {
    let mut r = Reader::new(buf, limits);
    r.skip(0)?;
    if r.pos != buf.len() {
        return Err(DecodeError::Trailing);
    }
    Ok(())
}

/// Checks that `buf` is exactly one MessagePack array within `limits`.
pub fn validate_args(buf: &[u8], limits: Limits) -> Result<(), DecodeError> {
    match buf.first().map(|&b| Marker::from_u8(b)) {
        Some(Marker::FixArray(_) | Marker::Array16 | Marker::Array32) => {
            validate_value(buf, limits)
        }
        Some(_) => Err(DecodeError::Field("args")),
        None => Err(DecodeError::Truncated),
    }
}

/// The number of items of a raw MessagePack array (validated by the caller).
pub fn array_len(buf: &[u8]) -> Option<usize> {
    let mut r = Reader::new(buf, Limits::default());
    match r.head().ok()? {
        Head::Array(n) => Some(n),
        _ => None,
    }
}

/// The `app` entry every message starts with: "app" and [`APP_ID`], as msgpack.
const APP_ENTRY: &[u8] = b"\xa3app\xaecomlink_ipc_v4";

/// The whole length of a value that has a fixed size, by its first byte
/// (0: a string, binary, array, map or variable ext, read by `head`).
static SCALAR_LEN: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = match b as u8 {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 1,
            0xcc | 0xd0 => 2,
            0xcd | 0xd1 | 0xd4 => 3,
            0xd5 => 4,
            0xca | 0xce | 0xd2 => 5,
            0xd6 => 6,
            0xcb | 0xcf | 0xd3 => 9,
            0xd7 => 10,
            0xd8 => 18,
            _ => 0,
        };
        b += 1;
    }
    t
};

/// Writes messages into a reusable buffer.
pub struct Encoder<'b> {
    buf: &'b mut Vec<u8>,
    /// A fixed clock for reproducible bytes (tests); `None` reads the time.
    clock: Option<f64>,
}

/// The current time as float seconds since the Unix epoch.
pub fn now_seconds() -> f64 {
    crate::sys::os::realtime_seconds()
}

impl<'b> Encoder<'b> {
    pub fn new(buf: &'b mut Vec<u8>) -> Self {
        Encoder { buf, clock: None }
    }

    /// An encoder whose timestamps are all `seconds`, so its output is reproducible.
    pub fn at(buf: &'b mut Vec<u8>, seconds: f64) -> Self {
        Encoder {
            buf,
            clock: Some(seconds),
        }
    }

    fn now(&self) -> f64 {
        self.clock.unwrap_or_else(now_seconds)
    }

    // The writers below are inlined: for a constant key the marker is
    // chosen at compile time, and nothing goes through `io::Write`.

    /// A map header (messages have at most 15 entries: a fixmap).
    #[inline]
    fn map(&mut self, n: u32) {
        debug_assert!(n < 16);
        self.buf.push(0x80 | n as u8);
    }

    #[inline]
    fn str(&mut self, s: &str) {
        let n = s.len();
        if n < 32 {
            self.buf.push(0xa0 | n as u8);
        } else if let Ok(n) = u8::try_from(n) {
            self.buf.extend_from_slice(&[0xd9, n]);
        } else if let Ok(n) = u16::try_from(n) {
            self.buf.push(0xda);
            self.buf.extend_from_slice(&n.to_be_bytes());
        } else {
            // str32, msgpack's longest (4 GiB): far beyond any message a
            // peer accepts (each refuses frames over its size limit).
            self.buf.push(0xdb);
            self.buf.extend_from_slice(&(n as u32).to_be_bytes());
        }
        self.buf.extend_from_slice(s.as_bytes());
    }

    #[inline]
    fn f64(&mut self, v: f64) {
        self.buf.push(0xcb);
        self.buf.extend_from_slice(&v.to_bits().to_be_bytes());
    }

    fn entry_str(&mut self, key: &str, value: &str) {
        self.str(key);
        self.str(value);
    }

    /// The fields every message carries: app, id (when there is one), type,
    /// timestamp (`now`).
    fn header(&mut self, extra: u32, id: Option<&str>, kind: Kind, now: f64) {
        self.map(3 + u32::from(id.is_some()) + extra);
        self.buf.extend_from_slice(APP_ENTRY);
        if let Some(id) = id {
            self.entry_str("id", id);
        }
        self.entry_str("type", kind.as_str());
        self.str("timestamp");
        self.f64(now);
    }

    /// Room for what `call` writes, so a large call is never reallocated
    /// (and copied) while it is encoded. An upper bound.
    pub fn call_capacity(id: &str, function: &str, args: &[u8], namespace: &str) -> usize {
        ENVELOPE + id.len() + function.len() + args.len() + namespace.len()
    }

    /// Room for what `response` writes (an upper bound).
    pub fn response_capacity(id: Option<&str>, result: &[u8]) -> usize {
        ENVELOPE + id.map_or(0, str::len) + result.len()
    }

    /// A `call`; `args` must already be one valid MessagePack array.
    /// `remaining_ms`: the time the caller will wait for it, if limited.
    pub fn call(
        &mut self,
        id: &str,
        function: &str,
        args: &[u8],
        namespace: &str,
        remaining_ms: Option<u64>,
    ) {
        self.call_with(id, function, args, namespace, remaining_ms, None);
    }

    /// A `call` that asks for a stream (this library's extension): the
    /// worker may send `credit` items before it is granted more.
    pub fn stream_call(
        &mut self,
        id: &str,
        function: &str,
        args: &[u8],
        namespace: &str,
        remaining_ms: Option<u64>,
        credit: u64,
    ) {
        self.call_with(id, function, args, namespace, remaining_ms, Some(credit));
    }

    fn call_with(
        &mut self,
        id: &str,
        function: &str,
        args: &[u8],
        namespace: &str,
        remaining_ms: Option<u64>,
        stream: Option<u64>,
    ) {
        // One reading of the clock for both times: it is sent at once.
        let now = self.now();
        self.header(4, Some(id), Kind::Call, now);
        self.entry_str("function", function);
        self.str("args");
        self.buf.extend_from_slice(args);
        self.entry_str("namespace", namespace);
        self.str("metadata");
        self.map(1 + u32::from(remaining_ms.is_some()) + u32::from(stream.is_some()));
        self.str("timestamp_sent");
        self.f64(now);
        if let Some(ms) = remaining_ms {
            self.str("remaining_ms");
            self.u64(ms);
        }
        if let Some(credit) = stream {
            self.str("stream");
            self.u64(credit);
        }
    }

    /// A `cancel` of call `id` (this library's extension).
    pub fn cancel(&mut self, id: &str) {
        self.header(0, Some(id), Kind::Cancel, self.now());
    }

    #[inline]
    fn u64(&mut self, v: u64) {
        self.buf.push(0xcf);
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Room for what `stream_item` writes (an upper bound).
    pub fn stream_item_capacity(id: &str, item: &[u8]) -> usize {
        ENVELOPE + id.len() + item.len()
    }

    /// Item `seq` (from 0) of call `id`'s stream; `item` must already be
    /// one valid MessagePack value.
    pub fn stream_item(&mut self, id: &str, seq: u64, item: &[u8]) {
        self.header(2, Some(id), Kind::Stream, self.now());
        self.str("seq");
        self.u64(seq);
        self.str("item");
        self.buf.extend_from_slice(item);
    }

    /// `n` more items of call `id`'s stream may be sent.
    pub fn credit(&mut self, id: &str, n: u64) {
        self.header(1, Some(id), Kind::Credit, self.now());
        self.str("credit");
        self.u64(n);
    }

    /// A `response`; `result` must already be one valid MessagePack value.
    pub fn response(&mut self, id: Option<&str>, result: &[u8]) {
        self.response_head(id);
        self.buf.extend_from_slice(result);
    }

    /// A `response` up to its result: what goes before the result's bytes.
    pub fn response_head(&mut self, id: Option<&str>) {
        self.header(1, id, Kind::Response, self.now());
        self.str("result");
    }

    pub fn error(&mut self, id: Option<&str>, text: &str, kind: Option<ErrorKindName>) {
        self.header(1 + u32::from(kind.is_some()), id, Kind::Error, self.now());
        self.entry_str("error", text);
        if let Some(kind) = kind {
            self.str("metadata");
            self.map(1);
            self.entry_str("error_kind", kind.as_str());
        }
    }

    /// A heartbeat (from a parent) or its echo (`response = true`, from a worker).
    pub fn heartbeat(&mut self, id: &str, hb_timestamp: f64, response: bool) {
        self.header(1, Some(id), Kind::Heartbeat, self.now());
        self.str("metadata");
        self.map(1 + u32::from(response));
        self.str("hb_timestamp");
        self.f64(hb_timestamp);
        if response {
            self.str("hb_response");
            self.buf.push(0xc3);
        }
    }

    pub fn shutdown(&mut self, id: &str) {
        self.header(0, Some(id), Kind::Shutdown, self.now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(f: impl FnOnce(&mut Encoder)) -> Vec<u8> {
        let mut buf = Vec::new();
        f(&mut Encoder::new(&mut buf));
        buf
    }

    /// A map built by hand, the way another implementation would write it.
    fn foreign(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut buf = Vec::new();
        rmp::encode::write_map_len(&mut buf, entries.len() as u32).unwrap();
        for (k, v) in entries {
            rmp::encode::write_str(&mut buf, k).unwrap();
            buf.extend_from_slice(v);
        }
        buf
    }

    fn s(v: &str) -> Vec<u8> {
        let mut b = Vec::new();
        rmp::encode::write_str(&mut b, v).unwrap();
        b
    }

    const ARGS_1_2: &[u8] = &[0x92, 0x01, 0x02];

    #[test]
    fn call_round_trips() {
        let buf = encode(|e| e.call("id-1", "add", ARGS_1_2, "default", None));
        let m = decode(&buf, Limits::default()).unwrap();
        assert_eq!(m.kind, Kind::Call);
        assert_eq!(m.id, Some("id-1"));
        assert_eq!(m.function, Some("add"));
        assert_eq!(m.args, Some(ARGS_1_2));
        assert_eq!(m.namespace, Some("default"));
        assert!(m.timestamp.unwrap() > 1.7e9);
    }

    fn f(v: f64) -> Vec<u8> {
        let mut b = Vec::new();
        rmp::encode::write_f64(&mut b, v).unwrap();
        b
    }

    const T: f64 = 1_700_000_000.5;

    fn at(f: impl FnOnce(&mut Encoder)) -> Vec<u8> {
        let mut buf = Vec::new();
        f(&mut Encoder::at(&mut buf, T));
        buf
    }

    #[test]
    fn call_add_vector_is_byte_exact() {
        let mut meta = vec![0x81];
        meta.extend(s("timestamp_sent"));
        meta.extend(f(T));
        let expected = foreign(&[
            ("app", &s(APP_ID)),
            ("id", &s("id-1")),
            ("type", &s("call")),
            ("timestamp", &f(T)),
            ("function", &s("add")),
            ("args", ARGS_1_2),
            ("namespace", &s("default")),
            ("metadata", &meta),
        ]);
        let buf = at(|e| e.call("id-1", "add", ARGS_1_2, "default", None));
        assert_eq!(buf, expected);
        // Every shorter piece of it is refused, whichever path reads it.
        for end in 0..buf.len() {
            assert!(
                decode(&buf[..end], Limits::default()).is_err(),
                "{end} bytes"
            );
        }
        let m = decode(&buf, Limits::default()).unwrap();
        assert_eq!(
            at(|e| e.call(
                m.id.unwrap(),
                m.function.unwrap(),
                m.args.unwrap(),
                m.namespace.unwrap(),
                m.remaining_ms
            )),
            buf
        );
    }

    #[test]
    fn the_extensions_round_trip_and_say_what_a_v4_peer_may_ignore() {
        // A call with its time left: `metadata` gains `remaining_ms`.
        let mut meta = vec![0x82];
        meta.extend(s("timestamp_sent"));
        meta.extend(f(T));
        meta.extend(s("remaining_ms"));
        meta.extend([0xcf, 0, 0, 0, 0, 0, 0, 0x07, 0xd0]);
        let expected = foreign(&[
            ("app", &s(APP_ID)),
            ("id", &s("id-1")),
            ("type", &s("call")),
            ("timestamp", &f(T)),
            ("function", &s("add")),
            ("args", ARGS_1_2),
            ("namespace", &s("default")),
            ("metadata", &meta),
        ]);
        let buf = at(|e| e.call("id-1", "add", ARGS_1_2, "default", Some(2000)));
        assert_eq!(buf, expected);
        assert_eq!(
            decode(&buf, Limits::default()).unwrap().remaining_ms,
            Some(2000)
        );
        // Another peer may write it as any number; a negative one is 0.
        for (value, want) in [
            (vec![0x05], Some(5)),
            (vec![0xff], Some(0)),
            (f(12.9), Some(12)),
            (vec![0xc0], None),
        ] {
            let mut meta = vec![0x81];
            meta.extend(s("remaining_ms"));
            meta.extend(&value);
            let buf = foreign(&[
                ("app", &s(APP_ID)),
                ("id", &s("id-1")),
                ("type", &s("call")),
                ("function", &s("add")),
                ("metadata", &meta),
            ]);
            let m = decode(&buf, Limits::default()).unwrap();
            assert_eq!(m.remaining_ms, want, "{value:x?}");
        }
        // A cancel names the call it cancels.
        let expected = foreign(&[
            ("app", &s(APP_ID)),
            ("id", &s("id-1")),
            ("type", &s("cancel")),
            ("timestamp", &f(T)),
        ]);
        let buf = at(|e| e.cancel("id-1"));
        assert_eq!(buf, expected);
        let m = decode(&buf, Limits::default()).unwrap();
        assert_eq!((m.kind, m.id), (Kind::Cancel, Some("id-1")));
        // An error may say what failed.
        let mut meta = vec![0x81];
        meta.extend(s("error_kind"));
        meta.extend(s("no_such_function"));
        let expected = foreign(&[
            ("app", &s(APP_ID)),
            ("id", &s("id-1")),
            ("type", &s("error")),
            ("timestamp", &f(T)),
            ("error", &s("Function 'x' not found")),
            ("metadata", &meta),
        ]);
        let kind = Some(ErrorKindName::NoSuchFunction);
        let buf = at(|e| e.error(Some("id-1"), "Function 'x' not found", kind));
        assert_eq!(buf, expected);
        let m = decode(&buf, Limits::default()).unwrap();
        assert_eq!(m.error_kind.and_then(ErrorKindName::parse), kind);
        for k in [ErrorKindName::Cancelled, ErrorKindName::Timeout] {
            assert_eq!(ErrorKindName::parse(k.as_str()), Some(k));
        }
        assert_eq!(ErrorKindName::parse("something_else"), None);
    }

    #[test]
    fn response_three_vector_is_byte_exact() {
        let expected = foreign(&[
            ("app", &s(APP_ID)),
            ("id", &s("id-1")),
            ("type", &s("response")),
            ("timestamp", &f(T)),
            ("result", &[0x03]),
        ]);
        let buf = at(|e| e.response(Some("id-1"), &[0x03]));
        assert_eq!(buf, expected);
        let m = decode(&buf, Limits::default()).unwrap();
        assert_eq!(m.result, Some(&[0x03][..]));
        assert_eq!(at(|e| e.response(m.id, m.result.unwrap())), buf);
    }

    #[test]
    fn strings_of_every_length_get_the_marker_msgpack_gives_them() {
        // fixstr, str8, str16 and str32, at both edges of each.
        for n in [0, 31, 32, 255, 256, 65_535, 65_536] {
            let text = "e".repeat(n);
            let expected = foreign(&[
                ("app", &s(APP_ID)),
                ("id", &s("id-1")),
                ("type", &s("error")),
                ("timestamp", &f(T)),
                ("error", &s(&text)),
            ]);
            assert_eq!(
                at(|e| e.error(Some("id-1"), &text, None)),
                expected,
                "{n} bytes"
            );
        }
    }

    #[test]
    fn capacity_hints_cover_what_is_written() {
        let id = "x".repeat(300);
        for (id, function, ns, len) in [
            ("id-1", "f", "", 0),
            (id.as_str(), "a_long_function_name", "default", 70_000),
            ("", "g", "ns", 1 << 20),
        ] {
            let mut args = vec![0xdd];
            args.extend_from_slice(&1u32.to_be_bytes());
            args.push(0xc6);
            args.extend_from_slice(&(len as u32).to_be_bytes());
            args.resize(args.len() + len, 7);
            let mut buf = Vec::new();
            Encoder::new(&mut buf).call(id, function, &args, ns, None);
            assert!(buf.len() <= Encoder::call_capacity(id, function, &args, ns));
            buf.clear();
            Encoder::new(&mut buf).response(Some(id), &args[5..]);
            assert!(buf.len() <= Encoder::response_capacity(Some(id), &args[5..]));
        }
    }

    #[test]
    fn heartbeat_echo_vector_is_byte_exact() {
        let mut meta = vec![0x82];
        meta.extend(s("hb_timestamp"));
        meta.extend(f(1_700_000_000.25));
        meta.extend(s("hb_response"));
        meta.push(0xc3);
        let expected = foreign(&[
            ("app", &s(APP_ID)),
            ("id", &s("hb")),
            ("type", &s("heartbeat")),
            ("timestamp", &f(T)),
            ("metadata", &meta),
        ]);
        assert_eq!(at(|e| e.heartbeat("hb", 1_700_000_000.25, true)), expected);
    }

    #[test]
    fn error_without_id_leaves_the_field_out() {
        let expected = foreign(&[
            ("app", &s(APP_ID)),
            ("type", &s("error")),
            ("timestamp", &f(T)),
            ("error", &s("message missing 'function' field")),
        ]);
        assert_eq!(
            at(|e| e.error(None, "message missing 'function' field", None)),
            expected
        );
    }

    #[test]
    fn error_and_shutdown_round_trip() {
        let buf = encode(|e| e.error(Some("x"), "ValueError: bad", None));
        let m = decode(&buf, Limits::default()).unwrap();
        assert_eq!((m.kind, m.error), (Kind::Error, Some("ValueError: bad")));
        let buf = encode(|e| e.shutdown("s"));
        assert_eq!(
            decode(&buf, Limits::default()).unwrap().kind,
            Kind::Shutdown
        );
    }

    #[test]
    fn heartbeat_vector() {
        let buf = encode(|e| e.heartbeat("hb", 1_700_000_000.25, false));
        let m = decode(&buf, Limits::default()).unwrap();
        assert_eq!(m.kind, Kind::Heartbeat);
        assert_eq!(m.hb_timestamp, Some(1_700_000_000.25));
        assert!(!m.hb_response);
        let echo = encode(|e| e.heartbeat(m.id.unwrap(), m.hb_timestamp.unwrap(), true));
        let m = decode(&echo, Limits::default()).unwrap();
        assert_eq!(m.id, Some("hb"));
        assert_eq!(m.hb_timestamp, Some(1_700_000_000.25));
        assert!(m.hb_response);
    }

    #[test]
    fn foreign_message_with_unknown_fields_decodes() {
        let meta = {
            let mut b = vec![0x82];
            b.extend(s("timestamp_received"));
            b.extend([0xcb, 0x41, 0xd9, 0, 0, 0, 0, 0, 0]);
            b.extend(s("extra"));
            b.extend([0x93, 1, 2, 3]);
            b
        };
        let buf = foreign(&[
            ("type", &s("response")),
            ("app", &s(APP_ID)),
            ("id", &s("abc")),
            ("result", &[0x81, 0xa1, b'k', 0xc0]),
            ("metadata", &meta),
            ("unknown_field", &[0x92, 0xc3, 0xc2]),
            ("timestamp", &[0x05]),
        ]);
        let m = decode(&buf, Limits::default()).unwrap();
        assert_eq!(m.kind, Kind::Response);
        assert_eq!(m.result, Some(&[0x81, 0xa1, b'k', 0xc0][..]));
        assert_eq!(m.timestamp, Some(5.0));
    }

    #[test]
    fn the_usual_order_and_any_other_decode_alike() {
        let (app, id, kind, ts, function) = (s(APP_ID), s("id-7"), s("call"), f(T), s("add"));
        let entries: [(&str, &[u8]); 6] = [
            ("app", &app),
            ("id", &id),
            ("type", &kind),
            ("timestamp", &ts),
            ("function", &function),
            ("args", ARGS_1_2),
        ];
        let usual_buf = foreign(&entries);
        let usual = decode(&usual_buf, Limits::default()).unwrap();
        assert_eq!(
            (usual.id, usual.kind, usual.timestamp),
            (Some("id-7"), Kind::Call, Some(T))
        );
        let mut other = entries;
        for shift in 1..entries.len() {
            other.rotate_left(1);
            let buf = foreign(&other);
            assert_eq!(
                decode(&buf, Limits::default()),
                Ok(usual.clone()),
                "{shift}"
            );
        }
        // A field given twice keeps its last value, whichever path read the first.
        let id8 = s("id-8");
        let mut twice = entries.to_vec();
        twice.push(("id", &id8));
        let buf = foreign(&twice);
        assert_eq!(decode(&buf, Limits::default()).unwrap().id, Some("id-8"));
        // A map that ends inside the usual start.
        let buf = foreign(&entries[..2]);
        let short = decode(&buf, Limits::default()).unwrap();
        assert_eq!((short.id, short.kind), (Some("id-7"), Kind::Unknown));
    }

    #[test]
    fn call_without_function_decodes_with_none() {
        let buf = foreign(&[("app", &s(APP_ID)), ("id", &s("1")), ("type", &s("call"))]);
        let m = decode(&buf, Limits::default()).unwrap();
        assert_eq!((m.kind, m.function), (Kind::Call, None));
    }

    #[test]
    fn unknown_type_is_unknown() {
        let buf = foreign(&[("app", &s(APP_ID)), ("type", &s("gossip"))]);
        assert_eq!(decode(&buf, Limits::default()).unwrap().kind, Kind::Unknown);
    }

    #[test]
    fn malformed_payloads_are_refused() {
        let l = Limits::default();
        assert_eq!(decode(&[], l), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0xc1], l), Err(DecodeError::Reserved));
        assert_eq!(decode(&[0x93, 1, 2, 3], l), Err(DecodeError::NotAMap));
        let ok = foreign(&[("app", &s(APP_ID)), ("type", &s("shutdown"))]);
        let mut trailing = ok.clone();
        trailing.push(0);
        assert_eq!(decode(&trailing, l), Err(DecodeError::Trailing));
        assert_eq!(decode(&ok[..ok.len() - 2], l), Err(DecodeError::Truncated));
        let wrong_app = foreign(&[("app", &s("other")), ("type", &s("call"))]);
        assert_eq!(decode(&wrong_app, l), Err(DecodeError::WrongApp));
        let no_app = foreign(&[("type", &s("call"))]);
        assert_eq!(decode(&no_app, l), Err(DecodeError::WrongApp));
        let bad_id = foreign(&[("app", &s(APP_ID)), ("id", &[0x07])]);
        assert_eq!(decode(&bad_id, l), Err(DecodeError::Field("id")));
        let bad_args = foreign(&[("app", &s(APP_ID)), ("args", &[0x07])]);
        assert_eq!(decode(&bad_args, l), Err(DecodeError::Field("args")));
        let bad_utf8 = foreign(&[("app", &s(APP_ID)), ("id", &[0xa2, 0xff, 0xfe])]);
        assert_eq!(decode(&bad_utf8, l), Err(DecodeError::Utf8));
        // Known keys and values are matched as bytes; anything else is still checked.
        let bad = [0xa2, 0xff, 0xfe];
        let (app, call) = (s(APP_ID), s("call"));
        for fields in [
            [("app", &app[..]), ("type", &bad[..])],
            [("app", &bad[..]), ("type", &call[..])],
            [("app", &app[..]), ("function", &bad[..])],
        ] {
            assert_eq!(decode(&foreign(&fields), l), Err(DecodeError::Utf8));
        }
        let mut bad_key = foreign(&[("app", &s(APP_ID)), ("type", &s("call"))]);
        bad_key[0] += 1; // one more entry: key "\xff\xfe", value nil
        bad_key.extend_from_slice(&[0xa2, 0xff, 0xfe, 0xc0]);
        assert_eq!(decode(&bad_key, l), Err(DecodeError::Utf8));
        let mut text = String::from("héllo");
        text.push('✓');
        let non_ascii = foreign(&[("app", &s(APP_ID)), ("error", &s(&text))]);
        assert_eq!(decode(&non_ascii, l).unwrap().error, Some(text.as_str()));
        let int_key = [0x81, 0x01, 0x02];
        assert_eq!(decode(&int_key, l), Err(DecodeError::Key));
    }

    #[test]
    fn lying_headers_are_refused_before_allocation() {
        let l = Limits::default();
        // A map claiming 2^32-1 entries, a str claiming 4 GiB, a bin claiming 4 GiB.
        assert_eq!(
            decode(&[0xdf, 0xff, 0xff, 0xff, 0xff], l),
            Err(DecodeError::TooMany(u32::MAX as usize))
        );
        assert_eq!(
            validate_value(&[0xdb, 0xff, 0xff, 0xff, 0xff], l),
            Err(DecodeError::TooLong(u32::MAX as usize))
        );
        assert_eq!(
            validate_value(&[0xc6, 0xff, 0xff, 0xff, 0xff], l),
            Err(DecodeError::TooLong(u32::MAX as usize))
        );
        // Within limits but longer than the bytes there are.
        assert_eq!(
            validate_value(&[0xdc, 0x10, 0x00, 0x01], l),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        let l = Limits::default();
        let mut deep = vec![0x91; 200_000];
        deep.push(0xc0);
        assert_eq!(validate_value(&deep, l), Err(DecodeError::TooDeep));
        let mut ok = vec![0x91; 100];
        ok.push(0xc0);
        assert_eq!(validate_value(&ok, l), Ok(()));
        let mut too_deep = vec![0x91; 101];
        too_deep.push(0xc0);
        assert_eq!(validate_value(&too_deep, l), Err(DecodeError::TooDeep));
    }

    #[test]
    fn args_must_be_one_array() {
        let l = Limits::default();
        assert_eq!(validate_args(ARGS_1_2, l), Ok(()));
        assert_eq!(validate_args(&[0x90], l), Ok(()));
        assert_eq!(validate_args(&[0x01], l), Err(DecodeError::Field("args")));
        assert_eq!(validate_args(&[0x91, 1, 2], l), Err(DecodeError::Trailing));
        assert_eq!(validate_args(&[], l), Err(DecodeError::Truncated));
        assert_eq!(array_len(ARGS_1_2), Some(2));
    }

    #[test]
    fn every_scalar_kind_validates() {
        let l = Limits::default();
        for v in [
            &[0xc0][..],
            &[0xc3],
            &[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            &[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0],
            &[0xca, 0x3f, 0x80, 0, 0],
            &[0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0],
            &[0xc4, 0x02, 0x00, 0xff],
            &[0xd4, 0x01, 0x02],
            &[0xc7, 0x01, 0x05, 0xaa],
        ] {
            assert_eq!(validate_value(v, l), Ok(()), "{v:x?}");
        }
    }

    #[test]
    fn oversized_string_is_refused_by_limit() {
        let l = Limits {
            max_bytes: 4,
            ..Limits::default()
        };
        assert_eq!(
            validate_value(&[0xa5, 1, 2, 3, 4, 5], l),
            Err(DecodeError::TooLong(5))
        );
        assert_eq!(validate_value(&[0xa4, 1, 2, 3, 4], l), Ok(()));
        // Keys and string fields are held to it as well (`app`'s value first).
        let call = at(|e| e.call("id-1", "add", ARGS_1_2, "default", None));
        assert_eq!(decode(&call, l).err(), Some(DecodeError::TooLong(14)));
    }

    #[test]
    fn items_of_fixed_size_are_skipped_by_their_marker_as_the_general_path_reads_them() {
        let l = Limits::default();
        for b in 0..=255u8 {
            let n = usize::from(SCALAR_LEN[usize::from(b)]);
            if n == 0 {
                continue;
            }
            // The general reader (a value on its own) agrees on the length...
            let mut alone = vec![b];
            alone.resize(n, 1); // a length byte of 1 would show a variable size
            assert_eq!(validate_value(&alone, l), Ok(()), "{b:#x} alone");
            // ...and so do the items of arrays and maps, in place.
            let mut items = vec![0x92];
            items.extend_from_slice(&alone);
            items.extend_from_slice(&alone);
            assert_eq!(validate_args(&items, l), Ok(()), "{b:#x} in an array");
            let mut map = vec![0x81];
            map.extend_from_slice(&alone);
            map.extend_from_slice(&alone);
            assert_eq!(validate_value(&map, l), Ok(()), "{b:#x} in a map");
            // One byte short is truncated, one byte more is trailing.
            assert_eq!(
                validate_args(&items[..items.len() - 1], l),
                Err(DecodeError::Truncated),
                "{b:#x} cut"
            );
            items.push(0);
            assert_eq!(
                validate_args(&items, l),
                Err(DecodeError::Trailing),
                "{b:#x}"
            );
        }
    }

    #[test]
    fn the_start_of_a_large_message_names_its_call() {
        let id = "00000000-0000-4000-8000-00000000002a";
        let mut args = vec![0x91, 0xc6, 0, 1, 0, 0];
        args.resize(args.len() + 65536, b'x');
        let call = encode(|e| e.call(id, "echo", &args, "default", None));
        let p = peek(&call[..4096]).expect("a call of ours");
        assert_eq!(p.kind, Kind::Call);
        assert_eq!(p.id, Some(id));
        assert_eq!(p.function, Some("echo"));
        // Written after the arguments: cut off.
        assert_eq!(p.namespace, None);
        // Whole, it reads like `decode` reads it.
        assert_eq!(peek(&call).unwrap().namespace, Some("default"));

        let response = encode(|e| e.response(Some(id), &args[1..]));
        let p = peek(&response[..100]).expect("a response of ours");
        assert_eq!((p.kind, p.id), (Kind::Response, Some(id)));

        // Another order, the large value first: nothing past it is seen.
        let late = foreign(&[
            ("app", &s(APP_ID)),
            ("result", &args[1..]),
            ("id", &s(id)),
            ("type", &s("response")),
        ]);
        let p = peek(&late[..4096]).unwrap();
        assert_eq!((p.kind, p.id), (Kind::Unknown, None));
        // Not ours (or not seen to be ours): nothing to answer.
        let wrong = foreign(&[("app", &s("other")), ("id", &s(id))]);
        assert_eq!(peek(&wrong), None);
        // `app` cut one byte short.
        assert_eq!(peek(&late[..19]), None);
        for junk in [&b""[..], b"\x91\xc0", b"\xde", b"\xdf\x00", b"\xc1"] {
            assert_eq!(peek(junk), None, "{junk:?}");
        }
    }
}
