//! The CUDA backend: shards in device memory, hashed on the device where they live.
//!
//! Sealing copies the bytes to the GPU in chunks on one stream while a second stream hashes
//! the chunks already copied: directly from page-locked memory, otherwise through the
//! page-locked staging ring of [`pipeline`] (pageable memory and files). Verification hashes
//! every region of every shard of a batch in one kernel launch. Only region roots (32 bytes per
//! MiB) come back to the host, where they are compared with the kept level in constant time
//! and the root is finished.

mod ffi;
pub(crate) mod launch;
pub(crate) mod pipeline;
pub(crate) mod runtime;
pub(crate) mod scrub;

use std::ffi::{c_int, c_void};
use std::sync::Mutex;

use super::ingest::{Source, Watch};
use super::{CheckJob, Damage};
use crate::error::{ErrorKind, Result, VramError};
use crate::seal::ct::hash_eq;
use crate::seal::merkle::{Hash, TreeLayout, zeroed_level};
use ffi::{LvkJob, check};
use runtime::{DeviceAlloc, DeviceScope, Event, PinnedHost, Stream, copy_to_device, copy_to_host};

/// Bytes copied per step when sealing directly from page-locked memory (a multiple of every
/// region size).
const SEAL_CHUNK: u64 = 64 << 20;

/// Number of CUDA devices usable by this process; 0 when there is no driver or no GPU.
pub fn device_count() -> i32 {
    let mut n: c_int = 0;
    // SAFETY: writes one int through a valid pointer; failure leaves 0.
    let code = unsafe { ffi::lvk_device_count(&mut n) };
    if code == 0 { n } else { 0 }
}

/// The CUDA runtime version libvram was built with and the installed driver's (0 when none),
/// as CUDA numbers them (13000 = 13.0).
pub fn versions() -> (i32, i32) {
    let (mut runtime, mut driver): (c_int, c_int) = (0, 0);
    // SAFETY: writes two ints through valid pointers.
    unsafe { ffi::lvk_versions(&mut runtime, &mut driver) };
    (runtime, driver)
}

/// Why no GPU can be used, in words, when `device_count()` is 0.
pub fn unavailable_reason() -> String {
    let mut n: c_int = 0;
    // SAFETY: writes one int through a valid pointer.
    let code = unsafe { ffi::lvk_device_count(&mut n) };
    let (runtime, driver) = versions();
    match code {
        0 if n > 0 => format!("{n} GPU(s) are usable"),
        _ if driver == 0 => "no NVIDIA driver is installed (libcuda.so.1 was not found)".into(),
        0 | 100 => {
            "the driver sees no GPU (none installed, or hidden by CUDA_VISIBLE_DEVICES)".into()
        }
        35 => format!(
            "the NVIDIA driver (CUDA {}.{}) is older than this libvram's CUDA {}.{} runtime needs (driver 580 or newer for CUDA 13)",
            driver / 1000,
            driver % 1000 / 10,
            runtime / 1000,
            runtime % 1000 / 10
        ),
        other => format!("the CUDA runtime could not start (CUDA error {other})"),
    }
}

/// A CUDA stream handle from the caller (`cudaStream_t` as an address).
#[derive(Debug, Clone, Copy)]
pub struct CallerStream(pub usize);

#[derive(Debug)]
pub struct CudaBackend {
    device: i32,
    total_bytes: u64,
    /// Threads that fill the staging ring.
    workers: usize,
    /// Threads a CPU computation of one call may use: `max_threads`, or one per core.
    cpu_threads: usize,
    /// The page-locked staging ring, made on first use and kept for the context's life; one
    /// seal uses it at a time (a seal from memory that finds it busy copies directly).
    ring: Mutex<Option<pipeline::Ring>>,
}

/// Below this many bytes a seal from memory copies directly (staging would not pay for itself).
const STAGING_MIN_BYTES: usize = 8 << 20;

/// Device bytes of one shard: owned (allocated by libvram) or borrowed from the caller.
pub struct DeviceBuf {
    ptr: *mut u8,
    len: u64,
    device: i32,
    owned: bool,
}

// SAFETY: a device address is just a number on the host; the CUDA runtime is thread-safe and
// every use selects the buffer's device first. Bytes are only changed by the fault drill.
unsafe impl Send for DeviceBuf {}
// SAFETY: as for Send.
unsafe impl Sync for DeviceBuf {}

impl DeviceBuf {
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    pub fn device(&self) -> i32 {
        self.device
    }

    pub fn is_borrowed(&self) -> bool {
        !self.owned
    }

    /// Repair: writes host `bytes` at `offset` of the buffer (owned or the caller's, sealed in
    /// place: the address never changes). The caller has checked that they are the sealed bytes.
    pub fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        if offset
            .checked_add(bytes.len() as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(VramError::invalid("data", "runs past the end of the shard"));
        }
        let _scope = DeviceScope::enter(self.device)?;
        let stream = Stream::new()?;
        // SAFETY: the range lies inside the buffer (checked above); `bytes` outlives the
        // synchronisation below.
        unsafe { copy_to_device(self.ptr.wrapping_add(offset as usize), bytes, &stream) }?;
        stream.sync()
    }

    /// Fault drill: flips one bit with a one-thread kernel.
    pub fn flip_bit(&self, bit: u64) -> Result<()> {
        if bit / 8 >= self.len {
            return Err(VramError::invalid(
                "bit_index",
                "is past the end of the shard",
            ));
        }
        let _scope = DeviceScope::enter(self.device)?;
        let stream = Stream::new()?;
        // SAFETY: the buffer is this device's memory; the drill is the only work on the
        // stream, waited for below.
        unsafe { launch::flip_byte(self.bytes()?, bit / 8, 1u8 << (bit % 8), &stream) }?;
        stream.sync()
    }

    /// The buffer's bytes as the kernels see them (its device must be the current one).
    pub fn bytes(&self) -> Result<launch::Dev<'_, u8>> {
        let len = usize::try_from(self.len).map_err(|_| VramError::invalid("len", "too large"))?;
        // SAFETY: `len` bytes of device memory of `device`, allocated (or the caller's,
        // registered) for the buffer's life, which the view borrows.
        Ok(unsafe { launch::Dev::from_raw(self.ptr, len) })
    }

    /// The buffer as f32 values (whole values only).
    pub fn floats(&self) -> Result<launch::Dev<'_, f32>> {
        let len =
            usize::try_from(self.len / 4).map_err(|_| VramError::invalid("len", "too large"))?;
        if (self.ptr as usize) % align_of::<f32>() != 0 {
            return Err(VramError::new(
                ErrorKind::Device,
                "a shard not aligned for f32 values",
            ));
        }
        // SAFETY: as for `bytes`, whole values only, aligned (checked above).
        Ok(unsafe { launch::Dev::from_raw(self.ptr.cast(), len) })
    }
}

impl Drop for DeviceBuf {
    fn drop(&mut self) {
        if !self.owned {
            return; // Borrowed: the caller frees it, after freeing the shard.
        }
        // SAFETY: memory allocated by lvk_malloc_async in `ingest`, freed exactly once; every
        // verification that read it was waited for.
        unsafe { runtime::free_now(self.device, self.ptr.cast()) };
    }
}

impl CudaBackend {
    /// Opens device `device`; `NoDevice` when the process has no usable GPU. `max_threads`
    /// bounds the threads that fill the staging ring (0 = one per core but one, at most 16).
    pub fn open(device: i32, max_threads: usize) -> Result<Self> {
        let count = device_count();
        if count == 0 {
            return Err(VramError::new(
                ErrorKind::NoDevice,
                "backend: CUDA was requested but no usable GPU was found (no driver or no device)",
            ));
        }
        if device < 0 || device >= count {
            return Err(VramError::invalid(
                "device",
                format!("ordinal {device} does not exist ({count} GPU(s) visible)"),
            ));
        }
        let _scope = DeviceScope::enter(device)?;
        let (_, total) = mem_info()?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = match max_threads {
            0 => cores.saturating_sub(1),
            n => n,
        }
        .clamp(1, pipeline::MAX_WORKERS);
        Ok(Self {
            device,
            total_bytes: total,
            workers,
            cpu_threads: match max_threads {
                0 => cores,
                n => n.min(cores),
            },
            ring: Mutex::new(None),
        })
    }

    pub fn device(&self) -> i32 {
        self.device
    }

    pub fn cpu_threads(&self) -> usize {
        self.cpu_threads
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Copies every shard's bytes from `src` to new device memory and computes its kept level,
    /// overlapping the copies with the hashing; returns each shard's buffer and level, in order.
    /// On error nothing is kept.
    pub fn ingest_many(
        &self,
        layouts: &[TreeLayout],
        src: &dyn Source,
        watch: &mut dyn Watch,
    ) -> Result<Vec<(DeviceBuf, Vec<Hash>)>> {
        let _scope = DeviceScope::enter(self.device)?;
        let total: u64 = layouts.iter().map(|l| l.len).sum();
        let (free, _) = mem_info()?;
        if total > free {
            return Err(VramError::out_of_memory(format!(
                "len: {total} bytes do not fit: {free} bytes are free on GPU {}",
                self.device
            )));
        }
        let copy = Stream::new()?;
        let hash = Stream::new()?;
        let mut dsts = Vec::with_capacity(layouts.len());
        for l in layouts {
            dsts.push(
                DeviceAlloc::new(to_usize(l.len)?, &copy, "allocating the shard on the GPU")
                    .map_err(|e| annotate_oom(e, l.len, self.device))?,
            );
        }
        let filled = self.fill_all(layouts, src, watch, &dsts, &copy, &hash);
        if filled.is_err() {
            // Drain both streams before anything is freed: they may still read it.
            let _ = hash.sync();
            let _ = copy.sync();
        }
        let levels = filled?;
        Ok(dsts
            .into_iter()
            .zip(layouts)
            .zip(levels)
            .map(|((d, l), level)| {
                let buf = DeviceBuf {
                    ptr: d.release(),
                    len: l.len,
                    device: self.device,
                    owned: true,
                };
                (buf, level)
            })
            .collect())
    }

    /// Fills and hashes every shard: directly when the bytes lie in page-locked memory (or are
    /// small, or the ring is busy), else through the staging ring.
    fn fill_all(
        &self,
        layouts: &[TreeLayout],
        src: &dyn Source,
        watch: &mut dyn Watch,
        dsts: &[DeviceAlloc<'_>],
        copy: &Stream,
        hash: &Stream,
    ) -> Result<Vec<Vec<Hash>>> {
        let in_memory: Option<Vec<&[u8]>> = (0..layouts.len()).map(|j| src.in_memory(j)).collect();
        let staged = |data: &[u8]| {
            data.len() >= STAGING_MIN_BYTES
                && !matches!(pointer_kind(data.as_ptr() as usize), Ok((ffi::PTR_HOST, _)))
        };
        let mut guard = match &in_memory {
            // Bytes in memory never wait for the ring: if it is busy they are copied directly.
            Some(all) if all.iter().any(|d| staged(d)) => self.ring.try_lock().ok(),
            Some(_) => None,
            None => Some(
                self.ring
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            ),
        };
        if let Some(slot) = guard.as_mut() {
            if slot.is_none() {
                **slot = Some(pipeline::Ring::new()?);
            }
        }
        match (guard.as_ref().and_then(|g| g.as_ref()), in_memory) {
            (Some(ring), _) => self.fill_staged(ring, layouts, src, watch, dsts, copy, hash),
            (None, Some(all)) => {
                let mut levels = Vec::with_capacity(layouts.len());
                let mut done = 0;
                for (j, ((data, layout), dst)) in all.iter().zip(layouts).zip(dsts).enumerate() {
                    let mut level = zeroed_level(layout.regions())?;
                    self.copy_and_hash(data, *layout, &mut level, dst.ptr(), copy, hash)?;
                    if watch.wants_bytes() {
                        watch.bytes(j, data)?;
                    }
                    watch.hashed(j, &level)?;
                    done += layout.len;
                    watch.progress(done)?;
                    levels.push(level);
                }
                Ok(levels)
            }
            (None, None) => Err(VramError::new(
                ErrorKind::Device,
                "staging: no page-locked staging ring for a file",
            )),
        }
    }

    /// Through the staging ring: see [`pipeline`].
    #[allow(clippy::too_many_arguments)]
    fn fill_staged(
        &self,
        ring: &pipeline::Ring,
        layouts: &[TreeLayout],
        src: &dyn Source,
        watch: &mut dyn Watch,
        dsts: &[DeviceAlloc<'_>],
        copy: &Stream,
        hash: &Stream,
    ) -> Result<Vec<Vec<Hash>>> {
        let mut first_region = Vec::with_capacity(layouts.len());
        let mut regions = 0u64;
        for l in layouts {
            first_region.push(regions);
            regions += l.regions();
        }
        let roots_dev = DeviceAlloc::new(to_usize(32 * regions.max(1))?, hash, "region roots")?;
        let roots_host = PinnedHost::new(to_usize(32 * regions.max(1))?)?;
        let ptrs: Vec<*mut u8> = dsts.iter().map(DeviceAlloc::ptr).collect();
        let targets = pipeline::Targets {
            dsts: &ptrs,
            roots_dev: roots_dev.view(0, to_usize(32 * regions.max(1))?)?,
            roots_host: &roots_host,
            first_region: &first_region,
        };
        let run = pipeline::run(
            ring,
            self.device,
            self.workers,
            layouts,
            src,
            watch,
            &targets,
            copy,
            hash,
        );
        // Whatever happened, no copy may still read the ring or write the roots after this.
        let drained = hash.sync().and(copy.sync());
        run?;
        drained?;
        // SAFETY: the page-locked roots hold `regions` roots, all written (both streams are
        // synchronised); `Hash` is a byte array, so any alignment will do.
        let all = unsafe {
            std::slice::from_raw_parts(roots_host.ptr().cast::<Hash>(), regions as usize)
        };
        let mut levels = Vec::with_capacity(layouts.len());
        for (l, &first) in layouts.iter().zip(&first_region) {
            let mut level = zeroed_level(l.regions())?;
            level.copy_from_slice(&all[first as usize..(first + l.regions()) as usize]);
            levels.push(level);
        }
        Ok(levels)
    }

    /// Copies `data` (in memory) to `dst` in chunks on `copy`, each chunk hashed on `hash` once
    /// copied, and brings the level back.
    fn copy_and_hash(
        &self,
        data: &[u8],
        layout: TreeLayout,
        level: &mut [Hash],
        dst: *mut u8,
        copy: &Stream,
        hash: &Stream,
    ) -> Result<()> {
        let copied = Event::new()?;
        let region = layout.region_size();
        let chunks: Vec<LvkJob> = (0..layout.len.div_ceil(SEAL_CHUNK))
            .map(|c| {
                let off = c * SEAL_CHUNK;
                LvkJob {
                    data: dst.wrapping_add(off as usize),
                    len: (layout.len - off).min(SEAL_CHUNK),
                    first_region: 0,
                    leaf_size: layout.leaf_size,
                    region_leaves: layout.region_leaves() as u32,
                }
            })
            .collect();
        let jobs_dev = upload_jobs(&chunks, hash)?;
        let level_dev = DeviceAlloc::new(to_usize(32 * layout.regions())?, hash, "region roots")?;
        for (c, job) in chunks.iter().enumerate() {
            let off = c as u64 * SEAL_CHUNK;
            let src = data
                .get(off as usize..(off + job.len) as usize)
                .ok_or_else(|| VramError::invalid("len", "chunk outside the data"))?;
            // SAFETY: the destination has room for the whole shard, and both it and the source
            // outlive the synchronisation of the stream.
            unsafe { copy_to_device(job.data.cast_mut(), src, copy) }?;
            copied.order(hash, copy)?;
            let first_region = off / region;
            let regions = job.len.div_ceil(region);
            let job_dev = jobs_dev.view::<LvkJob>(0, chunks.len())?.part(c, 1)?;
            let roots =
                level_dev.view::<u8>(to_usize(32 * first_region)?, to_usize(32 * regions)?)?;
            // SAFETY: chunk `c`'s bytes lie in `dst`, copied on `copy`, which `hash` waits
            // for; the table and the roots are views of allocations alive until the streams
            // are synchronised.
            unsafe {
                launch::region_roots(job_dev, regions, layout.region_leaves() as u32, roots, hash)
            }?;
        }
        // SAFETY: the source was allocated above with the destination's length, and both outlive the synchronisation of the stream.
        unsafe { copy_to_host(level.as_flattened_mut(), level_dev.ptr(), hash) }?;
        hash.sync()?;
        copy.sync()
    }

    /// Seals device memory the caller owns (borrowed, never freed by libvram). Only plain
    /// device memory of this context's GPU is accepted, within one allocation.
    ///
    /// # Safety
    /// `ptr` must stay allocated for as long as the returned buffer lives.
    pub unsafe fn adopt(
        &self,
        ptr: usize,
        layout: TreeLayout,
        level: &mut [Hash],
    ) -> Result<DeviceBuf> {
        let _scope = DeviceScope::enter(self.device)?;
        let (kind, device) = pointer_kind(ptr)?;
        let policy = |what: &str| {
            Err(VramError::new(
                ErrorKind::Policy,
                format!(
                    "device_ptr: {what}; only plain device memory of GPU {} can be sealed in place",
                    self.device
                ),
            ))
        };
        match kind {
            ffi::PTR_DEVICE if device == self.device => {}
            ffi::PTR_DEVICE => return policy(&format!("is memory of GPU {device}")),
            ffi::PTR_MANAGED => return policy("is managed (unified) memory"),
            ffi::PTR_HOST => return policy("is pinned host memory"),
            _ => return policy("is not memory known to CUDA (host or unregistered)"),
        }
        check_range(ptr, layout.len, self.device)?;
        let buf = DeviceBuf {
            ptr: ptr as *mut u8,
            len: layout.len,
            device: self.device,
            owned: false,
        };
        let stream = Stream::new()?;
        let fresh = self.region_roots(&[(&buf, layout)], &stream, &mut || {})?;
        level.copy_from_slice(&fresh);
        Ok(buf)
    }

    /// Re-hashes every job's regions in one launch and compares them with the kept levels.
    pub fn check(
        &self,
        jobs: &[CheckJob<'_>],
        bufs: &[&DeviceBuf],
        stream: Option<CallerStream>,
        meanwhile: &mut dyn FnMut(),
    ) -> Result<Vec<Damage>> {
        let _scope = DeviceScope::enter(self.device)?;
        let stream = match stream {
            // SAFETY: the caller's stream of this GPU (vram_verify_many_on_stream's contract).
            Some(s) => unsafe { Stream::borrowed(s.0 as *mut c_void) },
            None => Stream::new()?,
        };
        let pairs: Vec<(&DeviceBuf, TreeLayout)> = bufs
            .iter()
            .copied()
            .zip(jobs.iter().map(|j| j.layout))
            .collect();
        let fresh = self.region_roots(&pairs, &stream, meanwhile)?;
        Ok(compare(jobs, &fresh))
    }

    /// Queues the Merkle kernel over every buffer on `stream` (the caller's, or a stream of
    /// its own) and returns without waiting; the roots come back into page-locked memory.
    pub fn check_async(
        &self,
        items: &[(&DeviceBuf, TreeLayout)],
        stream: Option<CallerStream>,
    ) -> Result<PendingCheck> {
        let _scope = DeviceScope::enter(self.device)?;
        let own = match stream {
            Some(_) => None,
            None => Some(Stream::new()?),
        };
        let borrowed;
        let stream = match (&own, stream) {
            (Some(s), _) => s,
            (None, Some(s)) => {
                // SAFETY: the caller's stream of this GPU (vram_verify_many_async's contract).
                borrowed = unsafe { Stream::borrowed(s.0 as *mut c_void) };
                &borrowed
            }
            (None, None) => return Err(VramError::new(ErrorKind::Device, "no stream")),
        };
        let (jobs, total, max_leaves) = self.job_table(items)?;
        let roots_host = PinnedHost::new(to_usize(32 * total.max(1))?)?;
        let done = Event::new()?;
        if jobs.is_empty() {
            done.record(stream)?;
            return Ok(PendingCheck::new(
                self.device,
                own,
                None,
                None,
                roots_host,
                done,
                total,
            ));
        }
        // SAFETY: the buffers belong to shards the caller keeps alive until the check is
        // dropped, and the drop waits for the event recorded below before anything is freed.
        let (jobs_dev, roots_dev) = unsafe { queue_roots(&jobs, total, max_leaves, stream) }?;
        // SAFETY: the page-locked destination holds 32 × total bytes and is owned by the
        // pending check, which outlives the copy (its drop waits for the event).
        let host = unsafe { std::slice::from_raw_parts_mut(roots_host.ptr(), 32 * total as usize) };
        // SAFETY: as above; the source was allocated above with this length.
        unsafe { copy_to_host(host, roots_dev.ptr(), stream) }?;
        done.record(stream)?;
        let (jobs_ptr, roots_ptr) = (jobs_dev.release(), roots_dev.release());
        Ok(PendingCheck::new(
            self.device,
            own,
            Some(jobs_ptr),
            Some(roots_ptr),
            roots_host,
            done,
            total,
        ))
    }

    /// The kernel's job table for these buffers: (jobs, regions in all, most leaves per region).
    fn job_table(&self, items: &[(&DeviceBuf, TreeLayout)]) -> Result<(Vec<LvkJob>, u64, u32)> {
        let mut jobs = Vec::with_capacity(items.len());
        let mut total: u64 = 0;
        let mut max_leaves: u32 = 1;
        for (buf, layout) in items {
            if buf.device != self.device {
                return Err(VramError::new(
                    ErrorKind::Policy,
                    format!(
                        "shard lives on GPU {}, not on this context's GPU {}",
                        buf.device, self.device
                    ),
                ));
            }
            let region_leaves = layout.region_leaves() as u32;
            max_leaves = max_leaves.max(region_leaves);
            jobs.push(LvkJob {
                data: buf.ptr,
                len: layout.len,
                first_region: total,
                leaf_size: layout.leaf_size,
                region_leaves,
            });
            total += layout.regions();
        }
        Ok((jobs, total, max_leaves))
    }

    /// Region roots of every buffer, in order, from one kernel launch; `meanwhile` runs on the
    /// host while the kernel does.
    fn region_roots(
        &self,
        items: &[(&DeviceBuf, TreeLayout)],
        stream: &Stream,
        meanwhile: &mut dyn FnMut(),
    ) -> Result<Vec<Hash>> {
        let (jobs, total, max_leaves) = self.job_table(items)?;
        let mut fresh = zeroed_level(total)?;
        if jobs.is_empty() {
            meanwhile();
            return Ok(fresh);
        }
        // SAFETY: the shards' buffers are alive (their handles are borrowed for the call), and
        // the stream is synchronised below before any of them can go.
        let (_jobs_dev, roots_dev) = unsafe { queue_roots(&jobs, total, max_leaves, stream) }?;
        // The launch returned at once; the host work overlaps the kernel.
        meanwhile();
        // SAFETY: the source was allocated above with the destination's length, and both outlive the synchronisation of the stream.
        unsafe { copy_to_host(fresh.as_flattened_mut(), roots_dev.ptr(), stream) }?;
        stream.sync()?;
        Ok(fresh)
    }
}

/// Each job's damage: the fresh region roots (all jobs', in order) against its kept level,
/// compared in constant time.
pub fn compare(jobs: &[CheckJob<'_>], fresh: &[Hash]) -> Vec<Damage> {
    let mut damage = vec![Damage::default(); jobs.len()];
    let mut at = 0usize;
    for (job, d) in jobs.iter().zip(damage.iter_mut()) {
        for (r, expected) in job.level.iter().enumerate() {
            let same = fresh.get(at + r).is_some_and(|f| hash_eq(f, expected));
            if !same {
                d.add(r as u64);
            }
        }
        at += job.level.len();
    }
    damage
}

/// A batch check queued by [`CudaBackend::check_async`]: the device memory it uses, the
/// page-locked roots it fills, and the event recorded after them.
pub struct PendingCheck {
    device: i32,
    /// libvram's own stream when the caller gave none (kept until the check is dropped).
    _own: Option<Stream>,
    jobs_dev: Option<*mut u8>,
    roots_dev: Option<*mut u8>,
    roots_host: PinnedHost,
    done: Event,
    total: u64,
}

// SAFETY: device addresses, page-locked memory, events and streams are process-wide CUDA
// resources usable from any thread; the roots are read only after the event has passed.
unsafe impl Send for PendingCheck {}
// SAFETY: as for Send; every method takes `&self` and only reads after the event.
unsafe impl Sync for PendingCheck {}

impl PendingCheck {
    fn new(
        device: i32,
        own: Option<Stream>,
        jobs_dev: Option<*mut u8>,
        roots_dev: Option<*mut u8>,
        roots_host: PinnedHost,
        done: Event,
        total: u64,
    ) -> Self {
        Self {
            device,
            _own: own,
            jobs_dev,
            roots_dev,
            roots_host,
            done,
            total,
        }
    }

    pub fn is_done(&self) -> Result<bool> {
        self.done.query()
    }

    /// Waits for the device, then every region root, in order.
    pub fn fresh(&self) -> Result<&[Hash]> {
        self.done.sync()?;
        // SAFETY: the page-locked roots hold `total` roots, all written once the event has
        // passed; `Hash` is a byte array, so any alignment will do.
        Ok(unsafe {
            std::slice::from_raw_parts(self.roots_host.ptr().cast::<Hash>(), self.total as usize)
        })
    }
}

impl Drop for PendingCheck {
    fn drop(&mut self) {
        // The kernel and the copy may still run: wait for them before freeing what they use.
        let _ = self.done.sync();
        let Ok(_scope) = DeviceScope::enter(self.device) else {
            return;
        };
        if let Ok(stream) = Stream::new() {
            for p in [self.jobs_dev.take(), self.roots_dev.take()]
                .into_iter()
                .flatten()
            {
                // SAFETY: memory from lvk_malloc_async, no longer used (the event passed),
                // freed once.
                unsafe { ffi::lvk_free_async(p.cast(), stream.raw()) };
            }
            let _ = stream.sync();
        }
    }
}

/// Uploads the job table, allocates the roots (32 bytes per region) and queues the Merkle
/// kernel over every job on `stream`; returns the table and the roots, which must outlive it.
///
/// # Safety
/// Every job's buffer must hold its `len` bytes and stay allocated until the stream has run
/// the kernel.
unsafe fn queue_roots<'s>(
    jobs: &[LvkJob],
    total: u64,
    max_leaves: u32,
    stream: &'s Stream,
) -> Result<(DeviceAlloc<'s>, DeviceAlloc<'s>)> {
    let jobs_dev = upload_jobs(jobs, stream)?;
    let roots_dev = DeviceAlloc::new(to_usize(32 * total)?, stream, "region roots")?;
    let (table, roots) = (
        jobs_dev.view::<LvkJob>(0, jobs.len())?,
        roots_dev.view::<u8>(0, to_usize(32 * total)?)?,
    );
    // SAFETY: the table and the roots are views of the allocations above; the jobs' buffers
    // are the caller's contract.
    unsafe { launch::region_roots(table, total, max_leaves, roots, stream) }?;
    Ok((jobs_dev, roots_dev))
}

fn upload_jobs<'s>(jobs: &[LvkJob], stream: &'s Stream) -> Result<DeviceAlloc<'s>> {
    let bytes = size_of_val(jobs);
    let dev = DeviceAlloc::new(bytes, stream, "job table")?;
    // SAFETY: LvkJob is plain old data; viewing the slice as bytes reads initialised memory.
    let raw = unsafe { std::slice::from_raw_parts(jobs.as_ptr().cast::<u8>(), bytes) };
    // SAFETY: the destination was allocated above with room for the source, and both outlive the synchronisation of the stream.
    unsafe { copy_to_device(dev.ptr(), raw, stream) }?;
    Ok(dev)
}

fn mem_info() -> Result<(u64, u64)> {
    let (free, total) = runtime::mem_info()?;
    Ok((free as u64, total as u64))
}

fn pointer_kind(ptr: usize) -> Result<(c_int, c_int)> {
    let (mut kind, mut device) = (0, -1);
    // SAFETY: cudaPointerGetAttributes only inspects the address.
    let code = unsafe { ffi::lvk_pointer_kind(ptr as *const c_void, &mut kind, &mut device) };
    if code != 0 {
        return Ok((0, -1)); // unknown to CUDA: treated as unregistered host memory
    }
    Ok((kind, device))
}

/// Refuses a `len` that runs past the caller's allocation (hashing it would read memory that
/// is not the caller's tensor, or fault and leave a sticky error in the caller's context).
fn check_range(ptr: usize, len: u64, device: i32) -> Result<()> {
    let (mut verdict, mut valid) = (ffi::RANGE_PAST_END, 0usize);
    // SAFETY: the query only inspects the address range; both out-pointers are valid.
    check(
        unsafe {
            ffi::lvk_device_range(
                ptr as *const c_void,
                to_usize(len)?,
                device,
                &mut verdict,
                &mut valid,
            )
        },
        "address range query",
    )?;
    let refuse = |kind: ErrorKind, why: String| Err(VramError::new(kind, format!("len: {why}")));
    match verdict {
        ffi::RANGE_OK => Ok(()),
        ffi::RANGE_PAST_END => refuse(
            ErrorKind::InvalidArgument,
            format!("{len} bytes run past the allocation at device_ptr: only {valid} bytes from it belong to one allocation (or to consecutive mappings of one virtual range)"),
        ),
        ffi::RANGE_FOREIGN => refuse(
            ErrorKind::Policy,
            format!("the range reaches memory that is not device memory of GPU {device}, {valid} bytes after device_ptr"),
        ),
        _ => refuse(
            ErrorKind::Unsupported,
            "the driver cannot report allocation ranges (cuMemGetAddressRange), so the range cannot be checked".into(),
        ),
    }
}

fn annotate_oom(e: VramError, len: u64, device: i32) -> VramError {
    if e.kind == ErrorKind::OutOfMemory {
        VramError::out_of_memory(format!(
            "len: {len} bytes could not be allocated on GPU {device} ({})",
            e.message
        ))
    } else {
        e
    }
}

fn to_usize(n: u64) -> Result<usize> {
    usize::try_from(n).map_err(|_| VramError::out_of_memory("size exceeds the address space"))
}

/// The device layer's error paths. Run on the GPU machine; without a GPU they say so and pass.
#[cfg(test)]
mod tests {
    use super::*;

    fn gpu_or_skip(test: &str) -> bool {
        if device_count() == 0 {
            println!("SKIPPED {test}: no GPU on this machine");
            return false;
        }
        true
    }

    #[test]
    fn device_layer_reports_every_error() {
        if !gpu_or_skip("device_layer_reports_every_error") {
            return;
        }
        let _scope = DeviceScope::enter(0).unwrap();
        let stream = Stream::new().unwrap();
        // Allocation: zero size and an impossible size are errors, the out-pointer stays NULL.
        let mut p = std::ptr::dangling_mut::<c_void>();
        // SAFETY: the launcher validates its arguments; `p` is a valid out-pointer.
        assert_ne!(unsafe { ffi::lvk_malloc_async(&mut p, 0, stream.raw()) }, 0);
        let code = unsafe { ffi::lvk_malloc_async(&mut p, 1 << 50, stream.raw()) };
        assert!(p.is_null());
        assert_eq!(
            check(code, "huge").unwrap_err().kind,
            ErrorKind::OutOfMemory
        );
        // SAFETY: NULL out-pointer must be refused, not written.
        assert_ne!(
            unsafe { ffi::lvk_malloc_async(std::ptr::null_mut(), 16, stream.raw()) },
            0
        );
        // Free of NULL is a no-op.
        // SAFETY: NULL is documented as a no-op.
        assert_eq!(
            unsafe { ffi::lvk_free_async(std::ptr::null_mut(), stream.raw()) },
            0
        );
        // Copies: NULL pointers, zero size and address overflow are refused.
        let dev = DeviceAlloc::new(64, &stream, "test").unwrap();
        let host = [0u8; 64];
        // SAFETY: invalid arguments are rejected before any copy.
        unsafe {
            assert_ne!(
                ffi::lvk_memcpy_h2d_async(
                    std::ptr::null_mut(),
                    host.as_ptr().cast(),
                    64,
                    stream.raw()
                ),
                0
            );
            assert_ne!(
                ffi::lvk_memcpy_h2d_async(dev.ptr().cast(), std::ptr::null(), 64, stream.raw()),
                0
            );
            assert_ne!(
                ffi::lvk_memcpy_h2d_async(dev.ptr().cast(), host.as_ptr().cast(), 0, stream.raw()),
                0
            );
            assert_ne!(
                ffi::lvk_memcpy_d2h_async(
                    usize::MAX as *mut c_void,
                    dev.ptr().cast(),
                    64,
                    stream.raw()
                ),
                0
            );
        }
        // SAFETY: the destination was allocated above with room for the source, and both outlive the synchronisation of the stream.
        unsafe { copy_to_device(dev.ptr(), &host, &stream).unwrap() };
        drop(dev);
        stream.sync().unwrap();
        // Device selection: an ordinal that does not exist is an error, and the scope restores.
        assert!(DeviceScope::enter(1 << 20).is_err());
        let mut d = -1;
        // SAFETY: writes one int.
        unsafe { ffi::lvk_get_device(&mut d) };
        assert_eq!(d, 0);
        // Pointer kinds and memory info.
        let (mut kind, mut dev_ord) = (9, 9);
        // SAFETY: NULL is refused.
        assert_ne!(
            unsafe { ffi::lvk_pointer_kind(std::ptr::null(), &mut kind, &mut dev_ord) },
            0
        );
        let (free, total) = mem_info().unwrap();
        assert!(free > 0 && total >= free);
        // Kernel launch argument checks.
        // SAFETY: invalid arguments are rejected before launch.
        unsafe {
            assert_ne!(
                ffi::lvk_region_roots(
                    std::ptr::null(),
                    1,
                    1,
                    256,
                    std::ptr::null_mut(),
                    stream.raw()
                ),
                0
            );
            assert_ne!(
                ffi::lvk_flip_byte(std::ptr::null_mut(), 0, 1, stream.raw()),
                0
            );
        }
        // Opening a device that does not exist.
        assert_eq!(
            CudaBackend::open(1 << 20, 0).unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            CudaBackend::open(-1, 0).unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
    }

    /// Bytes that fail to arrive at one offset (a file cut short under the load).
    struct Failing {
        fail_at: u64,
    }

    impl Source for Failing {
        fn fill(&self, _job: usize, offset: u64, dst: &mut [u8]) -> Result<()> {
            if (offset..offset + dst.len() as u64).contains(&self.fail_at) {
                return Err(VramError::invalid("path", "the file ended early"));
            }
            for (i, b) in dst.iter_mut().enumerate() {
                *b = ((offset + i as u64) % 251) as u8;
            }
            Ok(())
        }
    }

    #[test]
    fn the_staging_ring_fails_cleanly_and_serves_again() {
        if !gpu_or_skip("the_staging_ring_fails_cleanly_and_serves_again") {
            return;
        }
        for max_threads in [0, 1, 3] {
            let backend = CudaBackend::open(0, max_threads).unwrap();
            let layouts = [
                TreeLayout::new(100 << 20, 4096),
                TreeLayout::new(3, 4096),
                TreeLayout::new((8 << 20) + 1, 4096),
            ];
            let _scope = DeviceScope::enter(0).unwrap();
            let (free_before, _) = mem_info().unwrap();
            // Offsets are per shard: the first chunk of every shard; the twelfth chunk of the
            // first shard (after eleven were queued); the second chunk of the first and last.
            for fail_at in [0, 90 << 20, (8 << 20)] {
                let src = Failing { fail_at };
                let e = backend
                    .ingest_many(&layouts, &src, &mut super::super::Unwatched)
                    .err()
                    .map(|e| e.kind);
                assert_eq!(e, Some(ErrorKind::InvalidArgument), "fail_at {fail_at}");
            }
            let ok = Failing { fail_at: u64::MAX };
            let out = backend
                .ingest_many(&layouts, &ok, &mut super::super::Unwatched)
                .unwrap();
            assert_eq!(out.len(), 3);
            // The roots equal the host's over the same bytes.
            for ((buf, level), layout) in out.iter().zip(&layouts) {
                let mut bytes = vec![0u8; layout.len as usize];
                ok.fill(0, 0, &mut bytes).unwrap();
                let mut want = zeroed_level(layout.regions()).unwrap();
                for (r, w) in want.iter_mut().enumerate() {
                    let (s, e) = layout.region_range(r as u64);
                    *w = crate::seal::merkle::tree_root(&bytes[s as usize..e as usize], 4096);
                }
                assert_eq!(level, &want, "max_threads {max_threads}");
                assert_eq!(buf.len, layout.len);
            }
            drop(out);
            let (free_after, _) = mem_info().unwrap();
            // Nothing kept by the failed passes (the pool may round by a few MiB).
            assert!(
                free_after + (64 << 20) >= free_before,
                "{free_before} free before, {free_after} after"
            );
        }
    }

    #[test]
    fn no_gpu_means_no_device_error() {
        if device_count() > 0 {
            println!("SKIPPED no_gpu_means_no_device_error: this machine has a GPU");
            return;
        }
        assert_eq!(
            CudaBackend::open(0, 0).unwrap_err().kind,
            ErrorKind::NoDevice
        );
    }
}
