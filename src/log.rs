//! Structured log events: one JSON object per event, delivered to the sink
//! the application installed (or, without one, worker output and warnings
//! are written to stderr so nothing a worker prints is lost silently).

use crate::sync::RwLock;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Severity of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Receives each event as one line of JSON.
pub type Sink = Arc<dyn Fn(&str) + Send + Sync>;

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

/// Installs (Some) or removes (None) the process-wide sink.
pub fn set_sink(sink: Option<Sink>) {
    *SINK.write() = sink;
}

/// Emits one event. `fields` are added to the object beside the standard
/// `event`, `level`, `message` and `timestamp`.
pub fn emit(level: Level, event: &str, message: &str, fields: &[(&str, Value)]) {
    let sink = SINK.read().clone();
    match sink {
        Some(sink) => {
            let mut obj = Map::with_capacity(4 + fields.len());
            obj.insert("event".into(), event.into());
            obj.insert("level".into(), level.as_str().into());
            obj.insert("message".into(), message.into());
            obj.insert("timestamp".into(), crate::codec::now_seconds().into());
            for (k, v) in fields {
                obj.insert((*k).to_owned(), v.clone());
            }
            sink(&Value::Object(obj).to_string());
        }
        None if event == "worker_output" || level >= Level::Warn => {
            eprintln!("{message}");
        }
        None => {}
    }
}

/// A line a worker printed, as `[name STDOUT]: text`.
pub fn worker_output(worker: &str, stream: &str, pid: Option<u32>, line: &str) {
    let message = format!("[{worker} {}]: {line}", stream.to_ascii_uppercase());
    let mut fields = vec![
        ("worker", Value::from(worker)),
        ("stream", Value::from(stream)),
        ("line", Value::from(line)),
    ];
    if let Some(pid) = pid {
        fields.push(("pid", Value::from(pid)));
    }
    emit(Level::Info, "worker_output", &message, &fields);
}
