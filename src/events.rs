//! Security-relevant events. Each has a stable name; messages never hold key material or raw
//! device addresses. Events go to `tracing` and to the one sink a host may install (the C log
//! callback, see `capi::log`).

use std::sync::RwLock;

/// Severity, numbered as in the C API (1 = error … 5 = trace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

/// Stable event names.
pub mod names {
    pub const SEAL: &str = "vram.seal";
    pub const VERIFY_OK: &str = "vram.verify.ok";
    pub const VERIFY_FAILED: &str = "vram.verify.failed";
    pub const RECORD_REJECTED: &str = "vram.record.rejected";
    pub const FREE: &str = "vram.free";
    pub const POLICY_VIOLATION: &str = "vram.policy.violation";
    pub const FAULT_DRILL: &str = "vram.fault_drill";
}

type SinkFn = Box<dyn Fn(Level, &str, &str) + Send + Sync>;

struct Sink {
    f: SinkFn,
    max_level: u32,
}

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

/// Installs (or, with `None`, removes) the sink; events above `max_level` are not delivered.
pub fn set_sink(f: Option<SinkFn>, max_level: u32) {
    let mut guard = SINK.write().unwrap_or_else(|e| e.into_inner());
    *guard = f.map(|f| Sink { f, max_level });
}

/// Emits one event.
pub fn emit(level: Level, name: &'static str, message: &str) {
    match level {
        Level::Error => tracing::error!(event = name, "{message}"),
        Level::Warn => tracing::warn!(event = name, "{message}"),
        Level::Info => tracing::info!(event = name, "{message}"),
        Level::Debug => tracing::debug!(event = name, "{message}"),
        Level::Trace => tracing::trace!(event = name, "{message}"),
    }
    let guard = SINK.read().unwrap_or_else(|e| e.into_inner());
    if let Some(sink) = guard.as_ref() {
        if (level as u32) <= sink.max_level {
            (sink.f)(level, name, message);
        }
    }
}
