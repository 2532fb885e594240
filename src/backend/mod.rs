//! Where a shard's bytes live and how they are hashed there.
//!
//! One enum per concept rather than trait objects: there are exactly two places bytes can
//! live (host memory, a CUDA device), and each operation must know both the backend and the
//! storage it is handed, so a `match` on the pair is the clearest dispatch.

pub mod host;
pub mod page_buf;

use crate::error::{ErrorKind, Result, VramError};
use crate::seal::merkle::{Hash, TreeLayout};
use crate::seal::record::Residency;
pub use host::HostBackend;
pub use page_buf::PageBuf;

/// The backend a caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    Auto,
    Cuda,
    Host,
}

/// A backend in use by a context.
#[derive(Debug)]
pub enum Backend {
    Host(HostBackend),
}

/// Bytes of one shard, where they live.
pub enum Storage {
    Host(PageBuf),
}

/// One shard to re-hash: its layout and the kept level of region roots to compare against.
pub struct CheckJob<'a> {
    pub storage: &'a Storage,
    pub layout: TreeLayout,
    pub level: &'a [Hash],
}

/// What a check found in one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    pub damaged_regions: u64,
    /// Index of the first damaged region, `u64::MAX` when none.
    pub first_damaged_region: u64,
}

impl Default for Damage {
    fn default() -> Self {
        Self {
            damaged_regions: 0,
            first_damaged_region: u64::MAX,
        }
    }
}

impl Backend {
    /// Opens the backend a caller chose. `Cuda` never falls back to host memory.
    pub fn open(choice: BackendChoice, device: i32) -> Result<Self> {
        let _ = device;
        match choice {
            BackendChoice::Host | BackendChoice::Auto => Ok(Backend::Host(HostBackend::default())),
            BackendChoice::Cuda => Err(VramError::new(
                ErrorKind::NoDevice,
                "backend: CUDA was requested but this libvram was built without CUDA support",
            )),
        }
    }

    pub fn residency(&self) -> Residency {
        match self {
            Backend::Host(_) => Residency::Host,
        }
    }

    /// Copies `data` into new storage of this backend and computes its kept level (one root
    /// per region; `level.len() == layout.regions()`), overlapping the copy with the hashing.
    pub fn ingest(&self, data: &[u8], layout: TreeLayout, level: &mut [Hash]) -> Result<Storage> {
        match self {
            Backend::Host(h) => Ok(Storage::Host(h.ingest(data, layout, level)?)),
        }
    }

    /// Re-hashes every job's regions in one batch and reports the damage of each.
    pub fn check(&self, jobs: &[CheckJob<'_>]) -> Result<Vec<Damage>> {
        let mut damage = vec![Damage::default(); jobs.len()];
        match self {
            Backend::Host(h) => {
                let mut bytes = Vec::with_capacity(jobs.len());
                for job in jobs {
                    match job.storage {
                        Storage::Host(buf) => bytes.push(buf.as_slice()),
                    }
                }
                h.check(jobs, &bytes, &mut damage);
            }
        }
        Ok(damage)
    }
}

impl Storage {
    pub fn residency(&self) -> Residency {
        match self {
            Storage::Host(_) => Residency::Host,
        }
    }

    /// The address of the first byte, for the caller's own kernels.
    pub fn as_ptr(&self) -> *const u8 {
        match self {
            Storage::Host(b) => b.as_ptr(),
        }
    }

    pub fn flip_bit(&self, bit: u64) -> Result<()> {
        match self {
            Storage::Host(b) => b.flip_bit(bit),
        }
    }
}

impl Backend {
    /// The capacity a context gets: the caller's cap; for the host backend 0 means no cap.
    pub fn effective_capacity(&self, requested: u64) -> Result<u64> {
        match self {
            Backend::Host(_) => Ok(requested),
        }
    }
}
