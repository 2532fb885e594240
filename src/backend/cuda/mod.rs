//! The CUDA backend: shards in device memory, hashed on the device where they live.
//!
//! Sealing from host memory copies in 64 MiB chunks on one stream while a second stream hashes
//! the chunks already copied; verification hashes every region of every shard of a batch in
//! one kernel launch. Only region roots (32 bytes per MiB) come back to the host, where they
//! are compared with the kept level in constant time and the root is finished.

pub(crate) mod ffi;
pub(crate) mod runtime;

use std::ffi::{c_int, c_void};
use std::sync::Mutex;

use super::{CheckJob, Damage};
use crate::error::{ErrorKind, Result, VramError};
use crate::seal::ct::hash_eq;
use crate::seal::merkle::{Hash, TreeLayout, zeroed_level};
use ffi::{LvkJob, check};
use runtime::{DeviceAlloc, DeviceScope, Event, PinnedHost, Stream, copy_to_device, copy_to_host};

/// Bytes copied per step when sealing from host memory (a multiple of every region size).
const SEAL_CHUNK: u64 = 64 << 20;

/// Number of CUDA devices usable by this process; 0 when there is no driver or no GPU.
pub fn device_count() -> i32 {
    let mut n: c_int = 0;
    // SAFETY: writes one int through a valid pointer; failure leaves 0.
    let code = unsafe { ffi::lvk_device_count(&mut n) };
    if code == 0 { n } else { 0 }
}

/// A CUDA stream handle from the caller (`cudaStream_t` as an address).
#[derive(Debug, Clone, Copy)]
pub struct CallerStream(pub usize);

#[derive(Debug)]
pub struct CudaBackend {
    device: i32,
    total_bytes: u64,
    /// Page-locked staging for seals from pageable memory, made on first use and kept for the
    /// context's life; one seal uses it at a time (others copy directly).
    staging: Mutex<Option<SealStaging>>,
}

/// Buffers a seal from pageable memory passes through: the CPU copies chunk i into buffer
/// i mod N (on several threads) while the DMA engine moves the chunks before it to the GPU, so
/// the copy to the device runs at page-locked speed instead of the driver's pageable path.
struct SealStaging {
    bufs: Vec<PinnedHost>,
    /// Recorded after each buffer's copy to the device: the buffer may be refilled once done.
    done: Vec<Event>,
}

// SAFETY: page-locked host memory and an event are process-wide resources, usable from any
// thread; the mutex around the staging gives one seal at a time exclusive use.
unsafe impl Send for SealStaging {}

impl std::fmt::Debug for SealStaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealStaging({} buffers)", self.bufs.len())
    }
}

/// Staging buffers in flight.
const STAGING_BUFFERS: usize = 3;
/// Below this many bytes a seal copies directly (staging would not pay for itself).
const STAGING_MIN_BYTES: usize = 8 << 20;

impl SealStaging {
    fn new() -> Result<Self> {
        let mut bufs = Vec::with_capacity(STAGING_BUFFERS);
        let mut done = Vec::with_capacity(STAGING_BUFFERS);
        for _ in 0..STAGING_BUFFERS {
            bufs.push(PinnedHost::new(SEAL_CHUNK as usize)?);
            done.push(Event::new()?);
        }
        Ok(Self { bufs, done })
    }
}

/// Copies `src` into `dst` on up to 8 threads (one CPU thread copies far below the DMA rate),
/// 1 MiB parts at a time.
fn parallel_copy(dst: &mut [u8], src: &[u8]) {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let parts = dst.chunks_mut(1 << 20).zip(src.chunks(1 << 20));
    let Ok(()) = crate::parallel::for_each(parts, threads, |(d, s)| {
        d.copy_from_slice(s);
        Ok::<(), std::convert::Infallible>(())
    });
}

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
        // SAFETY: the offset is inside the buffer (checked above); the kernel XORs one byte.
        check(
            unsafe { ffi::lvk_flip_byte(self.ptr.cast(), bit / 8, 1u8 << (bit % 8), stream.raw()) },
            "fault drill kernel",
        )?;
        stream.sync()
    }
}

impl Drop for DeviceBuf {
    fn drop(&mut self) {
        if !self.owned {
            return; // Borrowed: the caller frees it, after freeing the shard.
        }
        let Ok(_scope) = DeviceScope::enter(self.device) else {
            return;
        };
        if let Ok(stream) = Stream::new() {
            // SAFETY: memory allocated by lvk_malloc_async in `ingest`, freed exactly once.
            unsafe { ffi::lvk_free_async(self.ptr.cast(), stream.raw()) };
            let _ = stream.sync();
        }
    }
}

impl CudaBackend {
    /// Opens device `device`; `NoDevice` when the process has no usable GPU.
    pub fn open(device: i32) -> Result<Self> {
        let count = device_count();
        if count == 0 {
            return Err(VramError::new(
                ErrorKind::NoDevice,
                "backend: CUDA was requested but no usable GPU was found (no driver or no device)",
            ));
        }
        if device < 0 || device >= count {
            return Err(VramError::invalid(
                "opts->device",
                format!("ordinal {device} does not exist ({count} GPU(s) visible)"),
            ));
        }
        let _scope = DeviceScope::enter(device)?;
        let (_, total) = mem_info()?;
        Ok(Self {
            device,
            total_bytes: total,
            staging: Mutex::new(None),
        })
    }

    pub fn device(&self) -> i32 {
        self.device
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Copies host bytes to new device memory and computes the kept level, overlapping the
    /// copy of each chunk with the hashing of the chunks before it.
    pub fn ingest(&self, data: &[u8], layout: TreeLayout, level: &mut [Hash]) -> Result<DeviceBuf> {
        let _scope = DeviceScope::enter(self.device)?;
        let (free, _) = mem_info()?;
        if layout.len > free {
            return Err(VramError::out_of_memory(format!(
                "len: {} bytes do not fit: {free} bytes are free on GPU {}",
                layout.len, self.device
            )));
        }
        let copy = Stream::new()?;
        let hash = Stream::new()?;
        let dst = DeviceAlloc::new(
            to_usize(layout.len)?,
            &copy,
            "allocating the shard on the GPU",
        )
        .map_err(|e| annotate_oom(e, layout.len, self.device))?;

        // Pageable source bytes pass through the page-locked staging when it is free. The
        // guard is held until both streams are drained, on failure too.
        let pageable = data.len() >= STAGING_MIN_BYTES
            && !matches!(pointer_kind(data.as_ptr() as usize), Ok((ffi::PTR_HOST, _)));
        let mut guard = if pageable {
            self.staging.try_lock().ok()
        } else {
            None
        };
        if let Some(slot) = guard.as_mut() {
            if slot.is_none() {
                **slot = SealStaging::new().ok();
            }
        }
        let staging = guard.as_mut().and_then(|s| s.as_mut());
        let filled = self.fill_and_hash(data, layout, level, dst.ptr(), &copy, &hash, staging);
        if filled.is_err() {
            // Drain both streams before `dst` is freed: the hash stream may still read it.
            let _ = hash.sync();
            let _ = copy.sync();
        }
        filled?;
        Ok(DeviceBuf {
            ptr: dst.release(),
            len: layout.len,
            device: self.device,
            owned: true,
        })
    }

    /// The body of `ingest`: chunked copies on `copy` (through `staging` when given), each chunk
    /// hashed on `hash` once copied.
    #[allow(clippy::too_many_arguments)]
    fn fill_and_hash(
        &self,
        data: &[u8],
        layout: TreeLayout,
        level: &mut [Hash],
        dst: *mut u8,
        copy: &Stream,
        hash: &Stream,
        mut staging: Option<&mut SealStaging>,
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
            match staging.as_deref_mut() {
                Some(st) => {
                    let b = c % STAGING_BUFFERS;
                    // The buffer's previous copy to the device must be done before refilling.
                    if c >= STAGING_BUFFERS {
                        st.done[b].sync()?;
                    }
                    let buf = &st.bufs[b];
                    // SAFETY: the buffer holds SEAL_CHUNK >= src.len() bytes and no copy reads it
                    // now (its last one was waited for above); nothing else uses it (mutex).
                    let dst = unsafe { std::slice::from_raw_parts_mut(buf.ptr(), src.len()) };
                    parallel_copy(dst, src);
                    // SAFETY: the device chunk has room for the bytes; the staging buffer stays
                    // untouched until its `done` event (recorded next) has passed.
                    unsafe { copy_to_device(job.data.cast_mut(), dst, copy) }?;
                    st.done[b].record(copy)?;
                }
                None => {
                    // SAFETY: the destination was allocated above with room for the source, and
                    // both outlive the synchronisation of the stream.
                    unsafe { copy_to_device(job.data.cast_mut(), src, copy) }?;
                }
            }
            copied.order(hash, copy)?;
            let first_region = off / region;
            // SAFETY: chunk `c`'s job lies in the job table uploaded above, its bytes in `dst`,
            // and its roots in `level_dev`, all alive until the streams are synchronised.
            unsafe {
                launch(
                    jobs_dev.ptr().cast::<LvkJob>().wrapping_add(c),
                    1,
                    job.len.div_ceil(region),
                    layout.region_leaves() as u32,
                    level_dev.ptr().wrapping_add(32 * first_region as usize),
                    hash,
                )
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
        let mut damage = vec![Damage::default(); jobs.len()];
        let mut at = 0usize;
        for (job, d) in jobs.iter().zip(damage.iter_mut()) {
            for (r, expected) in job.level.iter().enumerate() {
                let same = fresh.get(at + r).is_some_and(|f| hash_eq(f, expected));
                if !same {
                    d.damaged_regions += 1;
                    d.first_damaged_region = d.first_damaged_region.min(r as u64);
                }
            }
            at += job.level.len();
        }
        Ok(damage)
    }

    /// Region roots of every buffer, in order, from one kernel launch; `meanwhile` runs on the
    /// host while the kernel does.
    fn region_roots(
        &self,
        items: &[(&DeviceBuf, TreeLayout)],
        stream: &Stream,
        meanwhile: &mut dyn FnMut(),
    ) -> Result<Vec<Hash>> {
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
        let mut fresh = zeroed_level(total)?;
        if jobs.is_empty() {
            meanwhile();
            return Ok(fresh);
        }
        let jobs_dev = upload_jobs(&jobs, stream)?;
        let roots_dev = DeviceAlloc::new(to_usize(32 * total)?, stream, "region roots")?;
        // SAFETY: the job table and the roots were allocated above for these jobs and regions;
        // the shards' buffers are alive (their handles are borrowed for the call), and the
        // stream is synchronised below before any of them can go.
        unsafe {
            launch(
                jobs_dev.ptr().cast(),
                jobs.len() as u32,
                total,
                max_leaves,
                roots_dev.ptr(),
                stream,
            )
        }?;
        // The launch returned at once; the host work overlaps the kernel.
        meanwhile();
        // SAFETY: the source was allocated above with the destination's length, and both outlive the synchronisation of the stream.
        unsafe { copy_to_host(fresh.as_flattened_mut(), roots_dev.ptr(), stream) }?;
        stream.sync()?;
        Ok(fresh)
    }
}

/// Queues the Merkle kernel over `n` jobs whose `regions` region roots go to `roots`.
///
/// # Safety
/// `jobs` must point to `n` jobs in device memory whose buffers hold `len` bytes each, and
/// `roots` must have room for 32 bytes per region; all of them must stay allocated until the
/// stream is synchronised.
unsafe fn launch(
    jobs: *const LvkJob,
    n: u32,
    regions: u64,
    max_leaves: u32,
    roots: *mut u8,
    stream: &Stream,
) -> Result<()> {
    // SAFETY: the function's contract.
    check(
        unsafe { ffi::lvk_region_roots(jobs, n, regions, max_leaves, roots, stream.raw()) },
        "Merkle kernel launch",
    )
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
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: writes two integers through valid pointers.
    check(
        unsafe { ffi::lvk_mem_info(&mut free, &mut total) },
        "cudaMemGetInfo",
    )?;
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
            CudaBackend::open(1 << 20).unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            CudaBackend::open(-1).unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn no_gpu_means_no_device_error() {
        if device_count() > 0 {
            println!("SKIPPED no_gpu_means_no_device_error: this machine has a GPU");
            return;
        }
        assert_eq!(CudaBackend::open(0).unwrap_err().kind, ErrorKind::NoDevice);
    }
}
