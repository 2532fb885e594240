//! A libvram context: one backend, one seal key, one capacity budget.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use subtle::ConstantTimeEq;

use crate::backend::{
    Backend, BackendChoice, CheckJob, SliceSource, Source, StreamHandle, Unwatched, Watch,
};
use crate::error::{ErrorKind, Result, VramError};
use crate::events::{self, Level, names};
use crate::fallible::try_with_capacity;
use crate::seal::key::SealKey;
use crate::seal::merkle::{
    DEFAULT_LEAF_SIZE, Hash, TreeLayout, check_leaf_size, root_from_level, zeroed_level,
};
use crate::seal::record::{Residency, SealRecord};
use crate::seal::shard_id::check_shard_id;
use crate::shard::Shard;

/// How a context is opened.
pub struct ContextOptions<'a> {
    pub backend: BackendChoice,
    pub device: i32,
    pub secret: &'a [u8],
    /// 0 = no cap (host) or the whole device (CUDA).
    pub capacity_bytes: u64,
    /// Whether the fault drills (`debug_flip_bit`) may change this context's shards.
    pub allow_fault_drills: bool,
    /// Host backend: most threads one call hashes with (0 = one per core).
    pub max_threads: usize,
}

/// Host bookkeeping of one shard beyond its bytes (the handle, the record, the id), counted
/// against the capacity with 32 bytes per region root, so that many tiny shards cannot hold
/// far more memory than the cap says.
pub const SHARD_BOOKKEEPING_BYTES: u64 = 512;

/// Bytes held by a context's shards, against its cap, and the ids of its live shards. Shared
/// with every shard so a shard freed after its context still returns its bytes (and its id)
/// to the right context.
#[derive(Debug)]
pub struct Accounting {
    capacity: u64,
    used: AtomicU64,
    live_ids: Mutex<HashSet<String>>,
}

/// Bytes and the id reserved for one shard; both returned when dropped.
#[derive(Debug)]
pub struct Reservation {
    accounting: Arc<Accounting>,
    bytes: u64,
    id: String,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.accounting.used.fetch_sub(self.bytes, Ordering::AcqRel);
        self.accounting
            .live_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl Accounting {
    /// Reserves `bytes` and the id `id`. An id that is sealed and live in this context is
    /// refused: two live shards of one name would make their records ambiguous.
    fn reserve(self: &Arc<Self>, id: &str, bytes: u64) -> Result<Reservation> {
        let mut live = self.live_ids.lock().unwrap_or_else(PoisonError::into_inner);
        if live.contains(id) {
            return Err(VramError::invalid(
                "shard_id",
                format!(
                    "'{id}' is already sealed and live in this context (free that shard first, or choose another id)"
                ),
            ));
        }
        live.try_reserve(1)
            .map_err(|_| VramError::out_of_memory("shard ids: host memory exhausted"))?;
        let reservation = self.reserve_bytes(bytes, id)?;
        live.insert(id.to_string());
        Ok(reservation)
    }

    fn reserve_bytes(self: &Arc<Self>, bytes: u64, id: &str) -> Result<Reservation> {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            let new = used
                .checked_add(bytes)
                .filter(|&n| self.capacity == 0 || n <= self.capacity)
                .ok_or_else(|| {
                    VramError::out_of_memory(format!(
                        "len: {bytes} bytes (the shard and its bookkeeping) do not fit: {used} of the context's capacity of {} bytes are in use",
                        self.capacity
                    ))
                })?;
            match self
                .used
                .compare_exchange_weak(used, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Ok(Reservation {
                        accounting: Arc::clone(self),
                        bytes,
                        id: id.to_string(),
                    });
                }
                Err(actual) => used = actual,
            }
        }
    }
}

/// One shard to seal with [`Context::seal_many`].
pub struct SealItem<'a> {
    pub id: &'a [u8],
    pub len: u64,
    /// `None`: the default leaf size.
    pub leaf_size: Option<u32>,
}

/// The outcome of verifying one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Intact,
    /// The bytes no longer hash to the sealed root.
    Damaged,
    /// The shard's seal itself does not authenticate under this context's key.
    BadSeal,
}

/// What a verify found in one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReport {
    pub outcome: Outcome,
    pub leaf_size: u32,
    pub total_leaves: u64,
    pub region_size: u64,
    pub total_regions: u64,
    pub damaged_regions: u64,
    /// Byte offset of the first damaged region; `u64::MAX` when none.
    pub first_damaged_offset: u64,
}

/// A context: safe to share between threads.
#[derive(Debug)]
pub struct Context {
    backend: Backend,
    key: SealKey,
    accounting: Arc<Accounting>,
    allow_fault_drills: bool,
}

impl Context {
    pub fn new(opts: &ContextOptions<'_>) -> Result<Self> {
        let key = SealKey::derive(opts.secret)?;
        let backend = Backend::open(opts.backend, opts.device, opts.max_threads)?;
        let capacity = backend.effective_capacity(opts.capacity_bytes)?;
        Ok(Self {
            backend,
            key,
            accounting: Arc::new(Accounting {
                capacity,
                used: AtomicU64::new(0),
                live_ids: Mutex::new(HashSet::new()),
            }),
            allow_fault_drills: opts.allow_fault_drills,
        })
    }

    pub fn residency(&self) -> Residency {
        self.backend.residency()
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The public identifier of this context's key.
    pub fn key_id(&self) -> [u8; 16] {
        self.key.key_id()
    }

    /// This context's seal key (manifests are authenticated under it).
    pub(crate) fn key(&self) -> &SealKey {
        &self.key
    }

    /// Bytes held by live shards of this context, bookkeeping included.
    pub fn used_bytes(&self) -> u64 {
        self.accounting.used.load(Ordering::Acquire)
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.accounting.capacity
    }

    /// Seals a copy of `data` (non-empty) in this context's backend.
    pub fn seal(&self, shard_id: &[u8], data: &[u8], leaf_size: Option<u32>) -> Result<Shard> {
        let item = SealItem {
            id: shard_id,
            len: data.len() as u64,
            leaf_size,
        };
        let mut shards = self.seal_many(&[item], &SliceSource(data), &mut Unwatched)?;
        shards
            .pop()
            .ok_or_else(|| VramError::invalid("len", "nothing was sealed"))
    }

    /// Seals every item (non-empty, distinct ids) with its bytes from `src`, in one pass that
    /// streams them into the backend (see [`crate::backend::Backend::ingest_many`]), telling
    /// `watch` as it goes. All or nothing: on any error no shard is kept.
    pub fn seal_many(
        &self,
        items: &[SealItem<'_>],
        src: &dyn Source,
        watch: &mut dyn Watch,
    ) -> Result<Vec<Shard>> {
        let mut planned = try_with_capacity(items.len(), "shards")?;
        for item in items {
            let id = check_shard_id(item.id)?;
            if item.len == 0 {
                return Err(VramError::invalid("len", "must be greater than 0"));
            }
            let leaf_size = item.leaf_size.unwrap_or(DEFAULT_LEAF_SIZE);
            check_leaf_size(leaf_size).map_err(|e| VramError::invalid("leaf_size", e))?;
            let layout = TreeLayout::new(item.len, leaf_size);
            let reservation = self.accounting.reserve(
                id,
                self.backend
                    .held_bytes(item.len)
                    .saturating_add(bookkeeping(layout)),
            )?;
            planned.push((id, layout, reservation));
        }
        let layouts: Vec<TreeLayout> = planned.iter().map(|(_, l, _)| *l).collect();
        let stored = self.backend.ingest_many(&layouts, src, watch)?;
        let mut shards = try_with_capacity(items.len(), "shards")?;
        for ((id, layout, reservation), (storage, level)) in planned.into_iter().zip(stored) {
            shards.push(self.finish_seal(id, layout, level, storage, reservation)?);
        }
        Ok(shards)
    }

    fn finish_seal(
        &self,
        id: &str,
        layout: TreeLayout,
        level: Vec<Hash>,
        storage: crate::backend::Storage,
        reservation: Reservation,
    ) -> Result<Shard> {
        let len = layout.len;
        let leaf_size = layout.leaf_size;
        let root = root_from_level(&level)
            .ok_or_else(|| VramError::invalid("len", "must be greater than 0"))?;
        let record = SealRecord {
            shard_id: id.to_string(),
            byte_len: len,
            leaf_size,
            root,
            residency: storage.residency(),
            seal_time_unix_ns: unix_time_ns(),
            key_id: self.key.key_id(),
        };
        let encoded_record = record.encode(&self.key);
        events::emit(
            Level::Info,
            names::SEAL,
            &format!(
                "shard '{id}' sealed: {len} bytes, {} regions",
                layout.regions()
            ),
        );
        Ok(Shard {
            record,
            encoded_record,
            layout,
            level,
            storage,
            fault_drills: self.allow_fault_drills,
            _reservation: reservation,
        })
    }

    /// Seals `len` bytes of device memory the caller owns, in place: libvram never frees it,
    /// and the shard must be freed before the memory is. CUDA backend only.
    ///
    /// # Safety
    /// `device_ptr` must stay allocated, as the same allocation, for as long as the returned
    /// shard lives: every verify re-reads it. (The range itself is checked against the
    /// driver's allocation records here.)
    pub unsafe fn seal_device(
        &self,
        shard_id: &[u8],
        device_ptr: usize,
        len: u64,
        leaf_size: Option<u32>,
    ) -> Result<Shard> {
        let id = check_shard_id(shard_id)?;
        if len == 0 {
            return Err(VramError::invalid("len", "must be greater than 0"));
        }
        let leaf_size = leaf_size.unwrap_or(DEFAULT_LEAF_SIZE);
        check_leaf_size(leaf_size).map_err(|e| VramError::invalid("leaf_size", e))?;
        let layout = TreeLayout::new(len, leaf_size);
        // Borrowed bytes are the caller's allocation: only the bookkeeping is reserved.
        let reservation = self.accounting.reserve(id, bookkeeping(layout))?;
        let mut level = zeroed_level(layout.regions())?;
        // SAFETY: this function's contract, passed on.
        let storage =
            unsafe { self.backend.adopt(device_ptr, layout, &mut level) }.inspect_err(|e| {
                if e.kind == ErrorKind::Policy {
                    events::emit(Level::Warn, names::POLICY_VIOLATION, &e.message);
                }
            })?;
        self.finish_seal(id, layout, level, storage, reservation)
    }

    /// Verifies one shard; see [`Context::verify_many`].
    pub fn verify(&self, shard: &Shard) -> Result<VerifyReport> {
        let mut reports = self.verify_many(&[shard], None)?;
        reports
            .pop()
            .ok_or_else(|| VramError::invalid("shard", "nothing was verified"))
    }

    /// Re-hashes every shard where it lives, in one batch, and compares against the seal.
    ///
    /// A shard on another backend or device is a policy error for the whole call (nothing is
    /// hashed). A shard whose seal does not authenticate under this context's key is reported
    /// as [`Outcome::BadSeal`] (its bytes are hashed all the same). On the CUDA backend, `stream` (a
    /// caller's `cudaStream_t`) orders the work after the caller's; the host backend ignores it.
    pub fn verify_many(
        &self,
        shards: &[&Shard],
        stream: Option<StreamHandle>,
    ) -> Result<Vec<VerifyReport>> {
        Ok(self
            .verify_detailed(shards, stream)?
            .into_iter()
            .map(|(r, _)| r)
            .collect())
    }

    /// Verifies one shard and lists the byte offset of every damaged region, ascending (empty
    /// when intact or when the seal itself does not authenticate).
    pub fn damaged_regions(&self, shard: &Shard) -> Result<(VerifyReport, Vec<u64>)> {
        self.verify_detailed(&[shard], None)?
            .pop()
            .ok_or_else(|| VramError::invalid("shard", "nothing was verified"))
    }

    /// [`Context::verify_many`], with each shard's damaged region offsets.
    fn verify_detailed(
        &self,
        shards: &[&Shard],
        stream: Option<StreamHandle>,
    ) -> Result<Vec<(VerifyReport, Vec<u64>)>> {
        self.check_residency(shards)?;
        let jobs = check_jobs(shards);
        // Authenticating each shard's own seal (record MAC, kept level against the root) is
        // host work: it runs while the device hashes the bytes.
        let mut authentic = vec![false; shards.len()];
        let authenticated = std::cell::Cell::new(false);
        let mut authenticate = || {
            for (a, s) in authentic.iter_mut().zip(shards) {
                *a = self.seal_authenticates(s);
            }
            authenticated.set(true);
        };
        let damage = self.backend.check(&jobs, stream, &mut authenticate)?;
        if !authenticated.get() {
            // A backend that did not run it must not turn every shard into a bad seal.
            authenticate();
        }
        Ok(build_reports(shards, &authentic, damage))
    }

    /// Starts verifying `shards` without waiting: on the CUDA backend the hashing is queued on
    /// `stream` (the caller's, ordered after its work; else libvram's own) and this returns at
    /// once; on the host backend the check runs in this call. The shards are kept alive until
    /// the result is dropped.
    pub fn verify_many_async(
        &self,
        shards: Vec<crate::shard::SharedShard>,
        stream: Option<StreamHandle>,
    ) -> Result<PendingVerify> {
        let refs: Vec<&Shard> = shards.iter().map(|s| s.as_ref()).collect();
        self.check_residency(&refs)?;
        let pending = self.backend.check_async(&check_jobs(&refs), stream)?;
        let authentic = refs.iter().map(|s| self.seal_authenticates(s)).collect();
        Ok(PendingVerify {
            shards,
            pending,
            authentic,
        })
    }

    /// A policy error when any shard lives on another backend or device.
    fn check_residency(&self, shards: &[&Shard]) -> Result<()> {
        for (i, s) in shards.iter().enumerate() {
            if s.storage().residency() != self.residency() {
                let msg = format!(
                    "shards[{i}] ('{}') lives on {:?}, not on this context's {:?}",
                    s.id(),
                    s.storage().residency(),
                    self.residency()
                );
                events::emit(Level::Warn, names::POLICY_VIOLATION, &msg);
                return Err(VramError::new(ErrorKind::Policy, msg));
            }
        }
        Ok(())
    }

    /// Repairs `shard` in place from `data` (host memory, the shard's length): hashes `data`
    /// first and refuses it (`Integrity`, nothing written) unless its root is the sealed root;
    /// then writes only the regions that are damaged now, at the same address, and verifies
    /// again. Returns how many regions were written (0 when the shard was intact). No other call
    /// may use the shard meanwhile.
    pub fn restore(&self, shard: &Shard, data: &[u8]) -> Result<u64> {
        if shard.storage().residency() != self.residency() {
            return Err(VramError::new(
                ErrorKind::Policy,
                format!(
                    "shard '{}' lives on {:?}, not on this context's {:?}",
                    shard.id(),
                    shard.storage().residency(),
                    self.residency()
                ),
            ));
        }
        if data.len() as u64 != shard.len() {
            return Err(VramError::invalid(
                "len",
                format!(
                    "{} bytes given, the shard '{}' has {}",
                    data.len(),
                    shard.id(),
                    shard.len()
                ),
            ));
        }
        if !self.seal_authenticates(shard) {
            return Err(VramError::new(
                ErrorKind::BadSeal,
                format!(
                    "shard '{}': its seal does not authenticate under this key; nothing written",
                    shard.id()
                ),
            ));
        }
        let layout = shard.layout();
        let level = crate::backend::HostBackend::default().level_of(data, layout)?;
        let root = root_from_level(&level).unwrap_or([0; 32]);
        if !bool::from(root.ct_eq(&shard.root())) {
            let msg = format!(
                "shard '{}': the replacement bytes' Merkle root differs from the sealed root; nothing was written",
                shard.id()
            );
            events::emit(Level::Error, names::VERIFY_FAILED, &msg);
            return Err(VramError::new(ErrorKind::Integrity, msg));
        }
        let (_, damaged) = self.damaged_regions(shard)?;
        for &offset in &damaged {
            let (start, end) = layout.region_range(offset / layout.region_size());
            let bytes = data
                .get(start as usize..end as usize)
                .ok_or_else(|| VramError::invalid("len", "region outside the data"))?;
            shard.storage().write_at(start, bytes)?;
        }
        if damaged.is_empty() {
            return Ok(0);
        }
        let (after, still) = self.damaged_regions(shard)?;
        if after.outcome != Outcome::Intact {
            let msg = format!(
                "shard '{}': {} region(s) rewritten with the sealed bytes, but {} still differ (a persistent fault, or a concurrent writer)",
                shard.id(),
                damaged.len(),
                still.len()
            );
            events::emit(Level::Error, names::VERIFY_FAILED, &msg);
            return Err(VramError::new(ErrorKind::Integrity, msg));
        }
        events::emit(
            Level::Warn,
            names::RESTORED,
            &format!(
                "shard '{}': {} damaged region(s) restored in place from verified bytes",
                shard.id(),
                damaged.len()
            ),
        );
        Ok(damaged.len() as u64)
    }

    /// Authenticates a record under this context's key, with no live shard: `BadSeal` when it
    /// is altered, forged, truncated or of another key.
    pub fn record_open(&self, record: &[u8]) -> Result<SealRecord> {
        SealRecord::decode(record, &self.key).inspect_err(|e| {
            events::emit(Level::Warn, names::RECORD_REJECTED, &e.message);
        })
    }

    /// Authenticates an exported record under this context's key (`BadSeal` if it does not),
    /// then checks that it describes `shard`'s bytes: the same id, length, leaf size and root
    /// (`Integrity` if not). Seal time and residency may differ: a record from another process
    /// or another backend describes re-sealed identical bytes. Does not re-hash the bytes
    /// (that is `verify`).
    pub fn record_verify(&self, record: &[u8], shard: &Shard) -> Result<()> {
        let r = self.record_open(record)?;
        let theirs = shard.record();
        let differs = if r.shard_id != theirs.shard_id {
            Some(format!(
                "names tensor '{}', not '{}'",
                r.shard_id, theirs.shard_id
            ))
        } else if r.byte_len != theirs.byte_len || r.leaf_size != theirs.leaf_size {
            Some(format!(
                "describes {} bytes in leaves of {}, the shard has {} in leaves of {}",
                r.byte_len, r.leaf_size, theirs.byte_len, theirs.leaf_size
            ))
        } else if !bool::from(r.root.ct_eq(&theirs.root)) {
            Some("describes other bytes (its Merkle root differs from the shard's)".into())
        } else {
            None
        };
        match differs {
            None => Ok(()),
            Some(why) => {
                let msg = format!("record: authentic, but {why}");
                events::emit(Level::Warn, names::RECORD_REJECTED, &msg);
                Err(VramError::new(ErrorKind::Integrity, msg))
            }
        }
    }

    /// A manifest's canonical bytes with their MAC under this context's key.
    pub fn encode_manifest(&self, m: &crate::seal::manifest::Manifest) -> Result<Vec<u8>> {
        m.encode(&self.key)
    }

    /// Authenticates a manifest under this context's key (`BadSeal` if it is not authentic,
    /// `Unsupported` for another format version).
    pub fn open_manifest(&self, bytes: &[u8]) -> Result<crate::seal::manifest::Manifest> {
        crate::seal::manifest::Manifest::decode(bytes, &self.key)
    }

    /// Seals `data` and keeps it only if its root is `expected` (compared in constant time):
    /// otherwise `Integrity`, and nothing stays sealed.
    pub fn seal_expect(
        &self,
        shard_id: &[u8],
        data: &[u8],
        expected: &Hash,
        leaf_size: Option<u32>,
    ) -> Result<Shard> {
        let shard = self.seal(shard_id, data, leaf_size)?;
        expect_root(shard, expected)
    }

    /// [`Context::seal_device`] against an expected root, as [`Context::seal_expect`].
    ///
    /// # Safety
    /// As [`Context::seal_device`].
    pub unsafe fn seal_device_expect(
        &self,
        shard_id: &[u8],
        device_ptr: usize,
        len: u64,
        expected: &Hash,
    ) -> Result<Shard> {
        // SAFETY: this function's contract, passed on.
        let shard = unsafe { self.seal_device(shard_id, device_ptr, len, None) }?;
        expect_root(shard, expected)
    }

    /// The shard's own record authenticates under this key and its kept level hashes to the
    /// sealed root (guards against the in-memory seal state itself being altered).
    pub(crate) fn seal_authenticates(&self, shard: &Shard) -> bool {
        let Ok(decoded) = SealRecord::decode(shard.encoded_record(), &self.key) else {
            return false;
        };
        let level_root = root_from_level(&shard.level).unwrap_or([0u8; 32]);
        decoded == *shard.record()
            && bool::from(level_root.ct_eq(&decoded.root))
            && shard.level.len() as u64 == shard.layout().regions()
    }
}

/// A verify started by [`Context::verify_many_async`]: the shards it holds alive, the check in
/// flight, and whether each shard's seal authenticated.
pub struct PendingVerify {
    shards: Vec<crate::shard::SharedShard>,
    pending: crate::backend::PendingCheck,
    authentic: Vec<bool>,
}

impl PendingVerify {
    /// Whether the device has finished (never blocks).
    pub fn is_done(&self) -> Result<bool> {
        self.pending.is_done()
    }

    /// Waits for the check, then each shard's report (callable again: the same reports).
    pub fn wait(&self) -> Result<Vec<VerifyReport>> {
        let refs: Vec<&Shard> = self.shards.iter().map(|s| s.as_ref()).collect();
        let damage = self.pending.finish(&check_jobs(&refs))?;
        let reports: Vec<VerifyReport> = build_reports(&refs, &self.authentic, damage)
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        Ok(reports)
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }
}

fn check_jobs<'a>(shards: &[&'a Shard]) -> Vec<CheckJob<'a>> {
    shards
        .iter()
        .map(|s| CheckJob {
            storage: s.storage(),
            layout: s.layout(),
            level: &s.level,
        })
        .collect()
}

/// Each shard's report and damaged region offsets from the check's damage and the seals'
/// authentication, logged.
fn build_reports(
    shards: &[&Shard],
    authentic: &[bool],
    damage: Vec<crate::backend::Damage>,
) -> Vec<(VerifyReport, Vec<u64>)> {
    let reports: Vec<(VerifyReport, Vec<u64>)> = shards
        .iter()
        .zip(authentic.iter().zip(damage))
        .map(|(s, (&authentic, d))| {
            let layout = s.layout();
            let (outcome, damaged) = if !authentic {
                (Outcome::BadSeal, 0)
            } else if d.damaged_regions > 0 {
                (Outcome::Damaged, d.damaged_regions)
            } else {
                (Outcome::Intact, 0)
            };
            let report = VerifyReport {
                outcome,
                leaf_size: layout.leaf_size,
                total_leaves: layout.leaves(),
                region_size: layout.region_size(),
                total_regions: layout.regions(),
                damaged_regions: damaged,
                first_damaged_offset: if damaged > 0 {
                    d.first_damaged_region.saturating_mul(layout.region_size())
                } else {
                    u64::MAX
                },
            };
            let offsets = if damaged > 0 {
                d.regions
                    .iter()
                    .map(|r| r.saturating_mul(layout.region_size()))
                    .collect()
            } else {
                Vec::new()
            };
            (report, offsets)
        })
        .collect();
    for (s, (r, _)) in shards.iter().zip(&reports) {
        log_outcome(s, r);
    }
    reports
}

fn log_outcome(s: &Shard, r: &VerifyReport) {
    match r.outcome {
        Outcome::Intact => events::emit(
            Level::Debug,
            names::VERIFY_OK,
            &format!("shard '{}' verified: {} bytes intact", s.id(), s.len()),
        ),
        Outcome::Damaged => events::emit(
            Level::Error,
            names::VERIFY_FAILED,
            &format!(
                "shard '{}': {} damaged region(s) of {} bytes, first at byte offset {}",
                s.id(),
                r.damaged_regions,
                r.region_size,
                r.first_damaged_offset
            ),
        ),
        Outcome::BadSeal => events::emit(
            Level::Error,
            names::VERIFY_FAILED,
            &format!(
                "shard '{}': its seal does not authenticate under this key",
                s.id()
            ),
        ),
    }
}

/// `shard` if its root is `expected`; otherwise `Integrity` (the shard is dropped: its bytes,
/// capacity and id are released).
fn expect_root(shard: Shard, expected: &Hash) -> Result<Shard> {
    if bool::from(shard.root().ct_eq(expected)) {
        return Ok(shard);
    }
    let msg = format!(
        "shard '{}': the bytes' Merkle root differs from expected_root; nothing was kept",
        shard.id()
    );
    events::emit(Level::Error, names::VERIFY_FAILED, &msg);
    Err(VramError::new(ErrorKind::Integrity, msg))
}

/// Host bytes of a shard's bookkeeping: see [`SHARD_BOOKKEEPING_BYTES`].
fn bookkeeping(layout: TreeLayout) -> u64 {
    SHARD_BOOKKEEPING_BYTES.saturating_add(layout.regions().saturating_mul(32))
}

fn unix_time_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
