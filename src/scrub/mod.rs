//! The background scrubber: keeps checking resident shards while they serve, within a budget.
//!
//! One thread per scrubber sweeps its shards pass after pass. Each step hashes up to
//! [`STEP_REGIONS`] regions with the fast tier ([`digest`]: a keyed polynomial hash, computed
//! where the bytes live within the budget) and compares them with the digests taken when the
//! shard was added. A mismatch is never reported on the fast tier's word: the shard is
//! verified with SHA-256 against its seal, and only regions that the seal confirms as damaged
//! reach the damage callback (once per change of the damaged set; a shard found intact again,
//! e.g. after a restore, is re-armed). A mismatch the seal does not confirm means the bytes
//! changed between the digest and the seal check when the shard was added: its digests are
//! taken again (counted as a stale digest), so the tier never drifts from the seal.
//!
//! Pacing: a byte rate (the thread sleeps after a step until the pass's bytes fit the rate)
//! and a pass period (a pass starts at most every period). Pause waits until no scrub work is
//! on the device; stop (drop) joins the thread.

pub mod digest;

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crate::backend::scrub::{FastEngine, ScrubPiece};
use crate::context::{Context, Outcome};
use crate::error::{ErrorKind, Result, VramError};
use crate::events::{self, Level, names};
use crate::seal::merkle::REGION_BYTES;
use crate::shard::SharedShard;
use digest::FastKey;

/// Regions hashed per step (256 MiB): bounds how long a pause or a stop waits.
pub const STEP_REGIONS: u64 = 256;
/// SMs when the caller sets no budget.
pub const DEFAULT_SMS: u32 = 2;
/// Wait after a failed step before the next one.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// How hard the scrubber may work.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScrubOptions {
    /// CUDA: at most this many SMs (blocks of the persistent grid); 0 = [`DEFAULT_SMS`];
    /// more than the GPU has = all of them.
    pub max_sms: u32,
    /// Host backend: at most this many threads; 0 = 1.
    pub max_threads: u32,
    /// At most this many bytes hashed per second; 0 = no rate cap.
    pub bytes_per_second: u64,
    /// A pass starts at most this often; zero = passes back to back.
    pub pass_period: Duration,
    /// Start paused (resume to begin).
    pub start_paused: bool,
}

/// Called from the scrubber's thread with a shard whose seal confirms damage and the byte
/// offset of every damaged region.
pub type DamageSink = Box<dyn Fn(&SharedShard, &[u64]) + Send + Sync>;

/// What the scrubber has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubStats {
    pub passes: u64,
    pub last_pass: Duration,
    /// Bytes of the last full pass.
    pub bytes_per_pass: u64,
    /// Bytes hashed per second over the last full pass (pacing and pauses included).
    pub bytes_per_second: u64,
    /// SMs (CUDA) or threads (host) the fast tier may use.
    pub budget: u32,
    pub shards: u64,
    /// Damage callbacks made.
    pub damage_reports: u64,
    /// Damaged regions named in those callbacks.
    pub damaged_regions: u64,
    /// Fast-tier mismatches that the seal found intact (digests taken again).
    pub stale_digests: u64,
    /// Steps that failed (device errors); the scrubber carries on.
    pub errors: u64,
    pub last_error: Option<ErrorKind>,
    pub paused: bool,
}

struct Entry {
    shard: SharedShard,
    digests: Arc<Vec<u64>>,
    /// Offsets last given to the callback (empty: none outstanding).
    reported: Vec<u64>,
}

struct State {
    entries: Vec<Entry>,
    paused: bool,
    stop: bool,
    /// A step (or a confirmation) is on the device.
    busy: bool,
    stats: ScrubStats,
}

struct Shared {
    ctx: Arc<Context>,
    key: FastKey,
    engine: Mutex<FastEngine>,
    budget: u32,
    rate: u64,
    period: Duration,
    sink: DamageSink,
    state: Mutex<State>,
    wake: Condvar,
}

/// A running scrubber; dropping it stops and joins its thread.
pub struct Scrubber {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    thread_id: Option<ThreadId>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Scrubber {
    /// Takes each shard's fast digests, verifies it against its seal (a damaged or forged one
    /// is refused: nothing starts), then starts the thread.
    pub fn new(
        ctx: Arc<Context>,
        shards: Vec<SharedShard>,
        opts: ScrubOptions,
        sink: DamageSink,
    ) -> Result<Self> {
        let key = FastKey::random()?;
        let engine = FastEngine::new(ctx.backend(), &key)?;
        let budget = match ctx.residency() {
            crate::seal::record::Residency::Host => opts.max_threads.max(1),
            _ => match opts.max_sms {
                0 => DEFAULT_SMS,
                n => n,
            },
        }
        .min(engine.max_budget());
        let shared = Arc::new(Shared {
            ctx,
            key,
            engine: Mutex::new(engine),
            budget,
            rate: opts.bytes_per_second,
            period: opts.pass_period,
            sink,
            state: Mutex::new(State {
                entries: Vec::new(),
                paused: opts.start_paused,
                stop: false,
                busy: false,
                stats: ScrubStats {
                    budget,
                    paused: opts.start_paused,
                    ..ScrubStats::default()
                },
            }),
            wake: Condvar::new(),
        });
        for (i, s) in shards.iter().enumerate() {
            if shards[..i].iter().any(|t| Arc::ptr_eq(s, t)) {
                return Err(VramError::invalid(
                    &format!("shards[{i}]"),
                    format!("shard '{}' is listed twice", s.id()),
                ));
            }
        }
        let mut entries = Vec::with_capacity(shards.len());
        for s in shards {
            entries.push(shared.baseline(s)?);
        }
        {
            let mut st = lock(&shared.state);
            st.stats.shards = entries.len() as u64;
            st.entries = entries;
        }
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("vram-scrubber".into())
            .spawn(move || {
                // A bug must not end scrubbing silently: it shows in the stats and the log.
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run()));
                if run.is_err() {
                    worker.record_error(&VramError::new(
                        ErrorKind::Device,
                        "scrubber: internal error (panic); scrubbing stopped",
                    ));
                }
            })
            .map_err(|e| {
                VramError::new(
                    ErrorKind::OutOfMemory,
                    format!("scrubber: could not start its thread: {e}"),
                )
            })?;
        let thread_id = Some(thread.thread().id());
        Ok(Self {
            shared,
            thread: Some(thread),
            thread_id,
        })
    }

    /// Adds a shard (verified first, as in [`Scrubber::new`]); it is swept from the next pass.
    pub fn add(&self, shard: SharedShard) -> Result<()> {
        if lock(&self.shared.state)
            .entries
            .iter()
            .any(|e| Arc::ptr_eq(&e.shard, &shard))
        {
            return Err(VramError::invalid(
                "shard",
                format!("shard '{}' is already scrubbed", shard.id()),
            ));
        }
        let entry = self.shared.baseline(shard)?;
        let mut st = lock(&self.shared.state);
        if st
            .entries
            .iter()
            .any(|e| Arc::ptr_eq(&e.shard, &entry.shard))
        {
            return Err(VramError::invalid(
                "shard",
                "was added by another thread meanwhile",
            ));
        }
        st.entries.push(entry);
        st.stats.shards = st.entries.len() as u64;
        Ok(())
    }

    /// Stops scrubbing a shard: no damage callback starts for it after this returns (one
    /// already running may finish). `InvalidArgument` when it is not scrubbed.
    pub fn remove(&self, shard: &SharedShard) -> Result<()> {
        let mut st = lock(&self.shared.state);
        let before = st.entries.len();
        st.entries.retain(|e| !Arc::ptr_eq(&e.shard, shard));
        if st.entries.len() == before {
            return Err(VramError::invalid(
                "shard",
                format!("shard '{}' is not scrubbed by this scrubber", shard.id()),
            ));
        }
        st.stats.shards = st.entries.len() as u64;
        Ok(())
    }

    /// Pauses: returns once no scrub work is on the device, and none starts until resume.
    /// From the damage callback it returns at once (the thread is in the callback, not on the
    /// device).
    pub fn pause(&self) {
        let mut st = lock(&self.shared.state);
        st.paused = true;
        st.stats.paused = true;
        if Some(std::thread::current().id()) == self.thread_id {
            return;
        }
        while st.busy {
            st = self
                .shared
                .wake
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    pub fn resume(&self) {
        let mut st = lock(&self.shared.state);
        st.paused = false;
        st.stats.paused = false;
        self.shared.wake.notify_all();
    }

    pub fn stats(&self) -> ScrubStats {
        lock(&self.shared.state).stats
    }
}

impl Drop for Scrubber {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            // From the scrubber's own thread (its damage callback) the thread cannot be
            // joined: it exits on its own once the callback returns, and the last reference
            // to the shared state goes with it.
            if Some(std::thread::current().id()) != self.thread_id {
                let _ = t.join();
            }
        }
    }
}

impl Shared {
    /// A new entry: the fast digests of every region at full speed, then a SHA-256 verify
    /// against the seal (so the digests describe sealed bytes; see the module comment for a
    /// change that lands between the two).
    fn baseline(&self, shard: SharedShard) -> Result<Entry> {
        if shard.storage().residency() != self.ctx.residency() {
            return Err(VramError::new(
                ErrorKind::Policy,
                format!(
                    "shard '{}' lives on {:?}, not on the context's {:?}",
                    shard.id(),
                    shard.storage().residency(),
                    self.ctx.residency()
                ),
            ));
        }
        let digests = {
            let engine = lock(&self.engine);
            let full = engine.full_budget();
            engine.digests(&self.key, &[whole(&shard)], full)?
        };
        let report = self.ctx.verify(&shard)?;
        match report.outcome {
            Outcome::Intact => Ok(Entry {
                shard,
                digests: Arc::new(digests),
                reported: Vec::new(),
            }),
            Outcome::Damaged => Err(VramError::new(
                ErrorKind::Integrity,
                format!(
                    "shard '{}' is damaged ({} region(s)); restore it before scrubbing it",
                    shard.id(),
                    report.damaged_regions
                ),
            )),
            Outcome::BadSeal => Err(VramError::bad_seal(format!(
                "shard '{}': its seal does not authenticate under the context's key",
                shard.id()
            ))),
        }
    }

    fn run(&self) {
        let mut next_pass = Instant::now();
        loop {
            if !self.sleep_until(next_pass) {
                return;
            }
            let Some(snapshot) = self.snapshot() else {
                return;
            };
            let start = Instant::now();
            next_pass = after(start, self.period);
            let (bytes, complete) = match self.pass(&snapshot, start) {
                Some(v) => v,
                None => return,
            };
            if complete {
                let took = start.elapsed();
                let mut st = lock(&self.state);
                st.stats.passes += 1;
                st.stats.last_pass = took;
                st.stats.bytes_per_pass = bytes;
                st.stats.bytes_per_second =
                    (bytes as f64 / took.as_secs_f64().max(1e-9)).min(u64::MAX as f64) as u64;
            }
            if snapshot.is_empty() {
                // Nothing to scrub: wait for an add, a resume or a stop instead of spinning.
                let st = lock(&self.state);
                if !st.stop && st.entries.is_empty() {
                    let _ = self.wake.wait_timeout(st, Duration::from_millis(100));
                }
            }
        }
    }

    /// Calls the damage callback unless the scrubber stopped (false) or the shard was removed
    /// meanwhile.
    fn report(&self, shard: &SharedShard, offsets: &[u64]) -> bool {
        {
            let st = lock(&self.state);
            if st.stop {
                return false;
            }
            if !st.entries.iter().any(|e| Arc::ptr_eq(&e.shard, shard)) {
                return true;
            }
        }
        (self.sink)(shard, offsets);
        true
    }

    /// Waits (paused, or until `at`); false when stopped.
    fn sleep_until(&self, at: Instant) -> bool {
        let mut st = lock(&self.state);
        loop {
            if st.stop {
                return false;
            }
            let now = Instant::now();
            if !st.paused && now >= at {
                return true;
            }
            let wait = if st.paused {
                Duration::from_secs(3600)
            } else {
                at - now
            };
            st = self
                .wake
                .wait_timeout(st, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn snapshot(&self) -> Option<Vec<(SharedShard, Arc<Vec<u64>>)>> {
        let st = lock(&self.state);
        if st.stop {
            return None;
        }
        Some(
            st.entries
                .iter()
                .map(|e| (Arc::clone(&e.shard), Arc::clone(&e.digests)))
                .collect(),
        )
    }

    /// One pass in steps. Returns (bytes hashed, whether every shard was covered), or None when
    /// stopped.
    fn pass(
        &self,
        snapshot: &[(SharedShard, Arc<Vec<u64>>)],
        start: Instant,
    ) -> Option<(u64, bool)> {
        let mut bytes = 0u64;
        let mut complete = true;
        let mut clean = vec![true; snapshot.len()];
        for step in plan(snapshot) {
            if !self.begin_step() {
                return None;
            }
            let pieces: Vec<ScrubPiece<'_>> = step
                .iter()
                .map(|&(i, first, n)| ScrubPiece {
                    storage: snapshot[i].0.storage(),
                    len: snapshot[i].0.len(),
                    first_region: first,
                    regions: n,
                })
                .collect();
            let fresh = lock(&self.engine).digests(&self.key, &pieces, self.budget);
            let fresh = match fresh {
                Ok(f) => f,
                Err(e) => {
                    self.end_step();
                    self.record_error(&e);
                    complete = false;
                    // A failing device must not turn the thread into a busy loop of errors.
                    if !self.sleep_until(Instant::now() + ERROR_BACKOFF) {
                        return None;
                    }
                    continue;
                }
            };
            let mut at = 0usize;
            let mut suspects = Vec::new();
            for &(i, first, n) in &step {
                let expected = &snapshot[i].1;
                let same =
                    (0..n as usize).all(|k| fresh.get(at + k) == expected.get(first as usize + k));
                if !same && !suspects.contains(&i) {
                    suspects.push(i);
                }
                at += n as usize;
                bytes += pieces_bytes(snapshot[i].0.len(), first, n);
            }
            let mut confirmed = Vec::new();
            for i in suspects {
                clean[i] = false;
                if let Some(offsets) = self.confirm(&snapshot[i].0) {
                    confirmed.push((i, offsets));
                }
            }
            self.end_step();
            // Not under the lock nor while busy: the callback may call the scrubber.
            for (i, offsets) in confirmed {
                if !self.report(&snapshot[i].0, &offsets) {
                    return None;
                }
            }
            if self.rate > 0 {
                let wait = Duration::try_from_secs_f64(bytes as f64 / self.rate as f64);
                let due = after(start, wait.unwrap_or(Duration::MAX));
                if !self.sleep_until(due) {
                    return None;
                }
            }
        }
        if complete {
            self.rearm(snapshot, &clean);
        }
        Some((bytes, complete))
    }

    /// Waits while paused; marks the device busy. False when stopped.
    fn begin_step(&self) -> bool {
        let mut st = lock(&self.state);
        while st.paused && !st.stop {
            st = self.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        if st.stop {
            return false;
        }
        st.busy = true;
        true
    }

    fn end_step(&self) {
        lock(&self.state).busy = false;
        self.wake.notify_all();
    }

    fn record_error(&self, e: &VramError) {
        {
            let mut st = lock(&self.state);
            st.stats.errors += 1;
            st.stats.last_error = Some(e.kind);
        }
        events::emit(Level::Error, names::SCRUB_ERROR, &format!("scrubber: {e}"));
    }

    /// A fast-tier mismatch: the seal decides. Returns the damaged regions' offsets when the
    /// seal confirms damage, the damaged set changed since the last report and the shard is
    /// still scrubbed; an unconfirmed mismatch refreshes the shard's digests.
    fn confirm(&self, shard: &SharedShard) -> Option<Vec<u64>> {
        let (report, offsets) = match self.ctx.damaged_regions(shard) {
            Ok(v) => v,
            Err(e) => {
                self.record_error(&e);
                return None;
            }
        };
        match report.outcome {
            Outcome::Damaged => {
                {
                    let mut st = lock(&self.state);
                    let entry = st
                        .entries
                        .iter_mut()
                        .find(|e| Arc::ptr_eq(&e.shard, shard))?;
                    if entry.reported == offsets {
                        return None; // already reported
                    }
                    entry.reported = offsets.clone();
                    st.stats.damage_reports += 1;
                    st.stats.damaged_regions += offsets.len() as u64;
                }
                events::emit(
                    Level::Error,
                    names::SCRUB_DAMAGE,
                    &format!(
                        "scrubber: shard '{}' is damaged: {} region(s) of {} bytes, first at byte {}",
                        shard.id(),
                        offsets.len(),
                        REGION_BYTES,
                        offsets.first().copied().unwrap_or(0)
                    ),
                );
                Some(offsets)
            }
            Outcome::Intact => {
                self.refresh(shard);
                None
            }
            Outcome::BadSeal => {
                self.record_error(&VramError::bad_seal(format!(
                    "shard '{}': its seal no longer authenticates",
                    shard.id()
                )));
                None
            }
        }
    }

    /// Takes a shard's digests again after the seal found it intact.
    fn refresh(&self, shard: &SharedShard) {
        let entry = match self.baseline(Arc::clone(shard)) {
            Ok(e) => e,
            Err(e) => return self.record_error(&e),
        };
        let mut st = lock(&self.state);
        st.stats.stale_digests += 1;
        if let Some(e) = st.entries.iter_mut().find(|e| Arc::ptr_eq(&e.shard, shard)) {
            e.digests = entry.digests;
            e.reported.clear();
        }
    }

    /// Shards that a whole pass found clean may be reported again if damaged later.
    fn rearm(&self, snapshot: &[(SharedShard, Arc<Vec<u64>>)], clean: &[bool]) {
        let mut st = lock(&self.state);
        for ((shard, _), ok) in snapshot.iter().zip(clean) {
            if *ok {
                if let Some(e) = st.entries.iter_mut().find(|e| Arc::ptr_eq(&e.shard, shard)) {
                    e.reported.clear();
                }
            }
        }
    }
}

/// `start + d`, or a century later when that is past what an `Instant` can hold (a caller's
/// period or rate may ask for any wait).
fn after(start: Instant, d: Duration) -> Instant {
    start
        .checked_add(d)
        .or_else(|| start.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(start)
}

/// Every region of a shard.
fn whole(shard: &SharedShard) -> ScrubPiece<'_> {
    ScrubPiece {
        storage: shard.storage(),
        len: shard.len(),
        first_region: 0,
        regions: shard.layout().regions(),
    }
}

fn pieces_bytes(len: u64, first: u64, n: u64) -> u64 {
    let start = first.saturating_mul(REGION_BYTES).min(len);
    let end = (first + n).saturating_mul(REGION_BYTES).min(len);
    end - start
}

/// A pass cut into steps of at most [`STEP_REGIONS`] regions: (snapshot index, first region,
/// regions) runs.
fn plan(snapshot: &[(SharedShard, Arc<Vec<u64>>)]) -> Vec<Vec<(usize, u64, u64)>> {
    let mut steps = Vec::new();
    let mut step = Vec::new();
    let mut room = STEP_REGIONS;
    for (i, (shard, _)) in snapshot.iter().enumerate() {
        let regions = shard.layout().regions();
        let mut first = 0;
        while first < regions {
            let n = (regions - first).min(room);
            step.push((i, first, n));
            first += n;
            room -= n;
            if room == 0 {
                steps.push(std::mem::take(&mut step));
                room = STEP_REGIONS;
            }
        }
    }
    if !step.is_empty() {
        steps.push(step);
    }
    steps
}
