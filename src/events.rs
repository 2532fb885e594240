//! Security-relevant events. Each has a stable name; messages never hold key material or raw
//! device addresses. Events go to `tracing` and to the one sink a host may install (the C log
//! callback, see `capi::log`).
//!
//! The sink's guarantees, which the C header repeats:
//! - **No lock is held while the sink runs**, so a sink may call back into libvram (including
//!   [`set_sink`]) without deadlocking, and one thread replacing the sink never waits on a
//!   lock that a running sink holds.
//! - **No re-entry**: an event raised on a thread that is already inside the sink (because the
//!   sink called libvram) goes to `tracing` only, so a sink that logs by calling libvram cannot
//!   recurse without end.
//! - **Replacement is final**: when [`set_sink`] returns on a thread that is not itself inside
//!   the sink, every call of the old sink has returned and none will start. Called from inside
//!   the sink, it cannot wait for the sink it runs in: the replacement takes effect at once for
//!   new events, and calls of the old sink already running on other threads may still finish.

use std::cell::Cell;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

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
    pub const BACKEND_FALLBACK: &str = "vram.backend.fallback";
    pub const RESTORED: &str = "vram.restored";
    pub const SCRUB_DAMAGE: &str = "vram.scrub.damage";
    pub const SCRUB_ERROR: &str = "vram.scrub.error";
}

type SinkFn = Box<dyn Fn(Level, &str, &str) + Send + Sync>;

struct Sink {
    f: SinkFn,
    max_level: u32,
    /// Calls of this sink running now, on any thread.
    running: Mutex<usize>,
    idle: Condvar,
}

static SINK: Mutex<Option<Arc<Sink>>> = Mutex::new(None);

thread_local! {
    /// Whether this thread is inside the sink now.
    static IN_SINK: Cell<bool> = const { Cell::new(false) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether the calling thread is running inside the sink.
pub fn in_sink() -> bool {
    IN_SINK.with(Cell::get)
}

/// Installs (or, with `None`, removes) the sink; events above `max_level` are not delivered.
/// See the module documentation for what holds when it returns.
pub fn set_sink(f: Option<SinkFn>, max_level: u32) {
    let new = f.map(|f| {
        Arc::new(Sink {
            f,
            max_level,
            running: Mutex::new(0),
            idle: Condvar::new(),
        })
    });
    let old = std::mem::replace(&mut *lock(&SINK), new);
    if let Some(old) = old {
        if !in_sink() {
            let mut running = lock(&old.running);
            while *running > 0 {
                running = old
                    .idle
                    .wait(running)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
}

/// Marks one running call of a sink; the count drops (and waiters wake) even if the sink
/// unwinds.
struct Running<'a>(&'a Sink);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        IN_SINK.with(|f| f.set(false));
        let mut running = lock(&self.0.running);
        *running = running.saturating_sub(1);
        if *running == 0 {
            self.0.idle.notify_all();
        }
    }
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
    if in_sink() {
        return;
    }
    let sink = {
        let slot = lock(&SINK);
        match slot.as_ref() {
            Some(s) if (level as u32) <= s.max_level => {
                // Counted while the slot is locked, so a replacement either sees this call
                // running or has already taken the sink away.
                *lock(&s.running) += 1;
                Arc::clone(s)
            }
            _ => return,
        }
    };
    IN_SINK.with(|f| f.set(true));
    let _running = Running(&sink);
    (sink.f)(level, name, message);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn nested_events_and_replacement_from_inside_do_not_deadlock() {
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        set_sink(
            Some(Box::new(|_, _, message| {
                // Other unit tests emit events concurrently: only this test's event counts.
                if message != "outer" {
                    return;
                }
                CALLS.fetch_add(1, Ordering::SeqCst);
                emit(Level::Error, names::SEAL, "nested: not delivered");
                set_sink(None, 0);
            })),
            5,
        );
        emit(Level::Error, names::SEAL, "outer");
        emit(Level::Error, names::SEAL, "outer");
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);
        assert!(!in_sink());
    }
}
