//! Where a shard's bytes live and how they are hashed there.
//!
//! One enum per concept rather than trait objects: there are exactly two places bytes can
//! live (host memory, a CUDA device), and each operation must know both the backend and the
//! storage it is handed, so a `match` on the pair is the clearest dispatch.

/// The CUDA backend (internal: its launcher declarations are not part of vram.h).
///
/// cbindgen:ignore
#[cfg(vram_cuda)]
pub mod cuda;
pub mod host;
pub mod ingest;
pub mod page_buf;
pub mod scrub;

use crate::error::{ErrorKind, Result, VramError};
use crate::seal::merkle::{Hash, TreeLayout};
use crate::seal::record::Residency;
pub use host::HostBackend;
pub use ingest::{SliceSource, Source, Unwatched, Watch};
pub use page_buf::PageBuf;

/// The backend a caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    Auto,
    Cuda,
    Host,
}

/// A caller's CUDA stream (`cudaStream_t` as an address); ignored by the host backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHandle(pub usize);

/// A backend in use by a context.
#[derive(Debug)]
pub enum Backend {
    Host(HostBackend),
    #[cfg(vram_cuda)]
    Cuda(cuda::CudaBackend),
}

/// Bytes of one shard, where they live.
pub enum Storage {
    Host(PageBuf),
    #[cfg(vram_cuda)]
    Cuda(cuda::DeviceBuf),
}

/// One shard to re-hash: its layout and the kept level of region roots to compare against.
pub struct CheckJob<'a> {
    pub storage: &'a Storage,
    pub layout: TreeLayout,
    pub level: &'a [Hash],
}

/// What a check found in one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub damaged_regions: u64,
    /// Index of the first damaged region, `u64::MAX` when none.
    pub first_damaged_region: u64,
    /// Every damaged region's index, ascending (8 bytes each: bounded by the shard's regions).
    pub regions: Vec<u64>,
}

impl Default for Damage {
    fn default() -> Self {
        Self {
            damaged_regions: 0,
            first_damaged_region: u64::MAX,
            regions: Vec::new(),
        }
    }
}

impl Damage {
    /// Records region `r` as damaged.
    pub fn add(&mut self, r: u64) {
        self.damaged_regions += 1;
        self.first_damaged_region = self.first_damaged_region.min(r);
        self.regions.push(r);
    }
}

/// Why this process cannot use a GPU, in words.
pub fn no_gpu_reason() -> String {
    #[cfg(vram_cuda)]
    {
        cuda::unavailable_reason()
    }
    #[cfg(not(vram_cuda))]
    {
        "this libvram was built without CUDA (VRAM_CUDA=off, or VRAM_CUDA=auto with no nvcc)".into()
    }
}

/// CUDA facts of this build and machine: (compiled in, runtime version, driver version);
/// versions as CUDA numbers them (13000 = 13.0), 0 when absent.
pub fn cuda_build() -> (bool, i32, i32) {
    #[cfg(vram_cuda)]
    {
        let (runtime, driver) = cuda::versions();
        (true, runtime, driver)
    }
    #[cfg(not(vram_cuda))]
    {
        (false, 0, 0)
    }
}

/// Whether this build can use a GPU at all, and how many this process sees.
pub fn gpu_count() -> i32 {
    #[cfg(vram_cuda)]
    {
        cuda::device_count()
    }
    #[cfg(not(vram_cuda))]
    {
        0
    }
}

impl Backend {
    /// Opens the backend a caller chose. `Cuda` never falls back to host memory; `Auto` takes
    /// the GPU when one is usable.
    /// `max_threads` bounds the host backend's threads per call (0 = one per core).
    pub fn open(choice: BackendChoice, device: i32, max_threads: usize) -> Result<Self> {
        let host = || Backend::Host(HostBackend::with_max_threads(max_threads));
        match choice {
            BackendChoice::Host => Ok(host()),
            BackendChoice::Auto if gpu_count() == 0 => {
                crate::events::emit(
                    crate::events::Level::Warn,
                    crate::events::names::BACKEND_FALLBACK,
                    &format!(
                        "VRAM_BACKEND_AUTO: sealing in host memory, not on a GPU: {}",
                        no_gpu_reason()
                    ),
                );
                Ok(host())
            }
            BackendChoice::Auto | BackendChoice::Cuda => Self::open_cuda(device, max_threads),
        }
    }

    #[cfg(vram_cuda)]
    fn open_cuda(device: i32, max_threads: usize) -> Result<Self> {
        Ok(Backend::Cuda(cuda::CudaBackend::open(device, max_threads)?))
    }

    #[cfg(not(vram_cuda))]
    fn open_cuda(_device: i32, _max_threads: usize) -> Result<Self> {
        Err(VramError::new(
            ErrorKind::NoDevice,
            "backend: CUDA was requested but this libvram was built without CUDA support",
        ))
    }

    /// Threads a CPU computation of one call may use (the context's `max_threads`, or one per
    /// core; on the CUDA backend, the host's share of a GPU search).
    pub fn cpu_threads(&self) -> usize {
        match self {
            Backend::Host(h) => h.threads(),
            #[cfg(vram_cuda)]
            Backend::Cuda(c) => c.cpu_threads(),
        }
    }

    pub fn residency(&self) -> Residency {
        match self {
            Backend::Host(_) => Residency::Host,
            #[cfg(vram_cuda)]
            Backend::Cuda(c) => Residency::Cuda { device: c.device() },
        }
    }

    /// The capacity a context gets: for the host backend the caller's cap (0 = none); for
    /// CUDA the caller's cap, or the device's memory when 0.
    pub fn effective_capacity(&self, requested: u64) -> Result<u64> {
        match self {
            Backend::Host(_) => Ok(requested),
            #[cfg(vram_cuda)]
            Backend::Cuda(c) => Ok(if requested == 0 {
                c.total_bytes()
            } else {
                requested
            }),
        }
    }

    /// Bytes of this backend a shard of `len` bytes holds: host shards take whole pages.
    pub fn held_bytes(&self, len: u64) -> u64 {
        match self {
            Backend::Host(_) => {
                len.saturating_add(page_buf::PAGE as u64 - 1) & !(page_buf::PAGE as u64 - 1)
            }
            #[cfg(vram_cuda)]
            Backend::Cuda(_) => len,
        }
    }

    /// Copies every shard's bytes from `src` into new storage of this backend and computes its
    /// kept level (one root per region), in one pass that overlaps the copies with the hashing;
    /// returns each shard's storage and level, in order. On error nothing is kept.
    pub fn ingest_many(
        &self,
        layouts: &[TreeLayout],
        src: &dyn Source,
        watch: &mut dyn Watch,
    ) -> Result<Vec<(Storage, Vec<Hash>)>> {
        match self {
            Backend::Host(h) => Ok(h
                .ingest_many(layouts, src, watch)?
                .into_iter()
                .map(|(b, l)| (Storage::Host(b), l))
                .collect()),
            #[cfg(vram_cuda)]
            Backend::Cuda(c) => Ok(c
                .ingest_many(layouts, src, watch)?
                .into_iter()
                .map(|(b, l)| (Storage::Cuda(b), l))
                .collect()),
        }
    }

    /// Seals memory the caller already owns on the device, in place (borrowed).
    ///
    /// # Safety
    /// `device_ptr` must stay allocated for as long as the returned storage lives.
    pub unsafe fn adopt(
        &self,
        device_ptr: usize,
        layout: TreeLayout,
        level: &mut [Hash],
    ) -> Result<Storage> {
        let _ = (device_ptr, &layout, &level);
        match self {
            Backend::Host(_) => Err(VramError::new(
                ErrorKind::Unsupported,
                "ctx: sealing device memory in place needs the CUDA backend; this context uses host memory",
            )),
            #[cfg(vram_cuda)]
            // SAFETY: this function's contract, passed on.
            Backend::Cuda(c) => Ok(Storage::Cuda(unsafe {
                c.adopt(device_ptr, layout, level)
            }?)),
        }
    }

    /// Re-hashes every job's regions in one batch and reports the damage of each. `meanwhile`
    /// runs on the calling thread while the device hashes (before hashing, on the host).
    pub fn check(
        &self,
        jobs: &[CheckJob<'_>],
        stream: Option<StreamHandle>,
        meanwhile: &mut dyn FnMut(),
    ) -> Result<Vec<Damage>> {
        let _ = stream;
        match self {
            Backend::Host(h) => {
                let mut bytes = Vec::with_capacity(jobs.len());
                for job in jobs {
                    match job.storage {
                        Storage::Host(buf) => bytes.push(buf.as_slice()),
                        #[cfg(vram_cuda)]
                        Storage::Cuda(_) => return Err(wrong_backend()),
                    }
                }
                meanwhile();
                let mut damage = vec![Damage::default(); jobs.len()];
                h.check(jobs, &bytes, &mut damage);
                Ok(damage)
            }
            #[cfg(vram_cuda)]
            Backend::Cuda(c) => {
                let mut bufs = Vec::with_capacity(jobs.len());
                for job in jobs {
                    match job.storage {
                        Storage::Cuda(b) => bufs.push(b),
                        Storage::Host(_) => return Err(wrong_backend()),
                    }
                }
                c.check(
                    jobs,
                    &bufs,
                    stream.map(|s| cuda::CallerStream(s.0)),
                    meanwhile,
                )
            }
        }
    }
}

/// A batch check in flight ([`Backend::check_async`]).
pub enum PendingCheck {
    /// Already done (the host backend checks in the call).
    Ready(Vec<Damage>),
    #[cfg(vram_cuda)]
    Cuda(cuda::PendingCheck),
}

impl PendingCheck {
    /// Whether the check has finished (never blocks).
    pub fn is_done(&self) -> Result<bool> {
        match self {
            PendingCheck::Ready(_) => Ok(true),
            #[cfg(vram_cuda)]
            PendingCheck::Cuda(p) => p.is_done(),
        }
    }

    /// Waits for the check and reports each job's damage (`jobs` as given to `check_async`).
    pub fn finish(&self, jobs: &[CheckJob<'_>]) -> Result<Vec<Damage>> {
        let _ = jobs;
        match self {
            PendingCheck::Ready(d) => Ok(d.clone()),
            #[cfg(vram_cuda)]
            PendingCheck::Cuda(p) => Ok(cuda::compare(jobs, p.fresh()?)),
        }
    }
}

impl Backend {
    /// Starts a batch check without waiting for the device: on the CUDA backend the hashing
    /// is queued on `stream` (or libvram's own) and this returns at once; the host backend
    /// checks in the call. The jobs' bytes must stay alive until the result is dropped.
    pub fn check_async(
        &self,
        jobs: &[CheckJob<'_>],
        stream: Option<StreamHandle>,
    ) -> Result<PendingCheck> {
        match self {
            Backend::Host(_) => Ok(PendingCheck::Ready(self.check(jobs, stream, &mut || {})?)),
            #[cfg(vram_cuda)]
            Backend::Cuda(c) => {
                let mut items = Vec::with_capacity(jobs.len());
                for job in jobs {
                    match job.storage {
                        Storage::Cuda(b) => items.push((b, job.layout)),
                        Storage::Host(_) => return Err(wrong_backend()),
                    }
                }
                Ok(PendingCheck::Cuda(c.check_async(
                    &items,
                    stream.map(|s| cuda::CallerStream(s.0)),
                )?))
            }
        }
    }
}

#[cfg(vram_cuda)]
fn wrong_backend() -> VramError {
    VramError::new(
        ErrorKind::Policy,
        "shards: a shard lives on another backend",
    )
}

impl Storage {
    pub fn residency(&self) -> Residency {
        match self {
            Storage::Host(_) => Residency::Host,
            #[cfg(vram_cuda)]
            Storage::Cuda(b) => Residency::Cuda { device: b.device() },
        }
    }

    /// The address of the first byte, for the caller's own kernels.
    pub fn as_ptr(&self) -> *const u8 {
        match self {
            Storage::Host(b) => b.as_ptr(),
            #[cfg(vram_cuda)]
            Storage::Cuda(b) => b.as_ptr(),
        }
    }

    /// The bytes as f32 values when they live in host memory (IBP weights on the CPU path).
    pub fn host_f32(&self) -> Option<&[f32]> {
        match self {
            Storage::Host(b) => b.as_f32(),
            #[cfg(vram_cuda)]
            Storage::Cuda(_) => None,
        }
    }

    /// Whether the bytes belong to the caller (sealed in place) rather than to libvram.
    pub fn is_borrowed(&self) -> bool {
        match self {
            Storage::Host(_) => false,
            #[cfg(vram_cuda)]
            Storage::Cuda(b) => b.is_borrowed(),
        }
    }

    /// Repair: writes `bytes` at `offset` in place (see `Context::restore`).
    pub fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        match self {
            Storage::Host(b) => b.write_at(
                usize::try_from(offset)
                    .map_err(|_| VramError::invalid("data", "offset past the address space"))?,
                bytes,
            ),
            #[cfg(vram_cuda)]
            Storage::Cuda(b) => b.write_at(offset, bytes),
        }
    }

    pub fn flip_bit(&self, bit: u64) -> Result<()> {
        match self {
            Storage::Host(b) => b.flip_bit(bit),
            #[cfg(vram_cuda)]
            Storage::Cuda(b) => b.flip_bit(bit),
        }
    }
}
