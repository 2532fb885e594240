//! RAII over the CUDA runtime: the calling thread's current device, streams, events and
//! stream-ordered allocations. Everything is released on every path, errors included.

use std::ffi::{c_int, c_void};

use super::ffi::*;
use super::launch::Dev;
use crate::error::{Result, VramError};

/// Makes `device` current for the calling thread and restores the previous one on drop, so
/// libvram never changes the host server's notion of its current device.
pub struct DeviceScope {
    previous: c_int,
}

impl DeviceScope {
    pub fn enter(device: i32) -> Result<Self> {
        let mut previous: c_int = 0;
        // SAFETY: writes one int through a valid pointer.
        check(unsafe { lvk_get_device(&mut previous) }, "cudaGetDevice")?;
        // SAFETY: plain call; an invalid ordinal is reported as an error code.
        check(unsafe { lvk_set_device(device) }, "cudaSetDevice")?;
        Ok(Self { previous })
    }
}

impl Drop for DeviceScope {
    fn drop(&mut self) {
        // SAFETY: restores an ordinal the runtime itself reported.
        unsafe { lvk_set_device(self.previous) };
    }
}

/// A non-blocking stream on the current device (or a caller's stream, not owned).
pub struct Stream {
    raw: *mut c_void,
    owned: bool,
}

impl Stream {
    pub fn new() -> Result<Self> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: writes one handle through a valid pointer.
        check(unsafe { lvk_stream_create(&mut raw) }, "cudaStreamCreate")?;
        Ok(Self { raw, owned: true })
    }

    /// This thread's own stream on `device` (the current device), created on first use and
    /// kept until the thread exits: creating and destroying a stream per call cost more than a
    /// whole small IBP call's launches. The returned handle does not own it.
    pub fn of_this_thread(device: i32) -> Result<Self> {
        thread_local! {
            static OWN: std::cell::RefCell<Vec<(i32, Stream)>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        OWN.with(|own| {
            let mut own = own.borrow_mut();
            if let Some((_, s)) = own.iter().find(|(d, _)| *d == device) {
                // SAFETY: this thread's own stream, kept until the thread exits.
                return Ok(unsafe { Self::borrowed(s.raw) });
            }
            let s = Self::new()?;
            let raw = s.raw;
            own.push((device, s));
            // SAFETY: as above: the stream just stored for this thread.
            Ok(unsafe { Self::borrowed(raw) })
        })
    }

    /// Wraps a caller's `cudaStream_t`; libvram enqueues on it and never destroys it.
    ///
    /// # Safety
    /// `raw` must be NULL (the legacy default stream) or a live stream of the current device
    /// that outlives the returned handle.
    pub unsafe fn borrowed(raw: *mut c_void) -> Self {
        Self { raw, owned: false }
    }

    pub fn raw(&self) -> *mut c_void {
        self.raw
    }

    pub fn sync(&self) -> Result<()> {
        // SAFETY: `raw` is a live stream handle.
        check(
            unsafe { lvk_stream_sync(self.raw) },
            "cudaStreamSynchronize",
        )
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: an owned stream created by `new`, destroyed once; pending work still
            // completes (the runtime releases the stream afterwards).
            unsafe { lvk_stream_destroy(self.raw) };
        }
    }
}

pub struct Event(*mut c_void);

impl Event {
    pub fn new() -> Result<Self> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: writes one handle through a valid pointer.
        check(unsafe { lvk_event_create(&mut raw) }, "cudaEventCreate")?;
        Ok(Self(raw))
    }

    /// Marks everything queued so far on `stream`.
    pub fn record(&self, stream: &Stream) -> Result<()> {
        // SAFETY: live event and stream handles.
        check(
            unsafe { lvk_event_record(self.0, stream.raw()) },
            "cudaEventRecord",
        )
    }

    /// Waits on the host until the work marked by the last `record` is done.
    pub fn sync(&self) -> Result<()> {
        // SAFETY: a live event handle.
        check(unsafe { lvk_event_sync(self.0) }, "cudaEventSynchronize")
    }

    /// Whether the work marked by the last `record` is done, without waiting.
    pub fn query(&self) -> Result<bool> {
        // SAFETY: a live event handle.
        match unsafe { lvk_event_query(self.0) } {
            0 => Ok(true),
            NOT_READY => Ok(false),
            code => check(code, "cudaEventQuery").map(|()| false),
        }
    }

    /// Makes `waiter` wait for everything queued so far on `signaller`.
    pub fn order(&self, waiter: &Stream, signaller: &Stream) -> Result<()> {
        // SAFETY: live stream and event handles.
        check(
            unsafe { lvk_stream_after(waiter.raw(), signaller.raw(), self.0) },
            "cudaStreamWaitEvent",
        )
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: an event created by `new`, destroyed once.
        unsafe { lvk_event_destroy(self.0) };
    }
}

/// Device memory allocated on a stream, freed on that stream when dropped (unless released).
pub struct DeviceAlloc<'s> {
    ptr: *mut c_void,
    len: usize,
    stream: &'s Stream,
}

type AllocFn = unsafe extern "C" fn(*mut *mut c_void, usize, *mut c_void) -> c_int;

impl<'s> DeviceAlloc<'s> {
    pub fn new(size: usize, stream: &'s Stream, what: &str) -> Result<Self> {
        Self::with(lvk_malloc_async, size, stream, what)
    }

    /// Scratch for one call (IBP workspaces) from libvram's pool, which keeps up to 1 GiB per
    /// GPU mapped between calls rather than remapping it every time.
    pub fn scratch(size: usize, stream: &'s Stream, what: &str) -> Result<Self> {
        Self::with(lvk_scratch_malloc_async, size, stream, what)
    }

    fn with(alloc: AllocFn, size: usize, stream: &'s Stream, what: &str) -> Result<Self> {
        let mut ptr = std::ptr::null_mut();
        // SAFETY: writes one pointer through a valid pointer; size > 0 is checked by lvk.
        check(unsafe { alloc(&mut ptr, size, stream.raw()) }, what)?;
        Ok(Self {
            ptr,
            len: size,
            stream,
        })
    }

    pub fn ptr(&self) -> *mut u8 {
        self.ptr.cast()
    }

    /// `len` values of `T` starting `at` bytes into the allocation, for the launchers; the
    /// view cannot outlive the allocation.
    pub fn view<T>(&self, at: usize, len: usize) -> Result<Dev<'_, T>> {
        view_of(self.ptr.cast(), self.len, at, len)
    }

    /// Hands the memory to the caller, who now frees it.
    pub fn release(mut self) -> *mut u8 {
        std::mem::replace(&mut self.ptr, std::ptr::null_mut()).cast()
    }
}

/// A checked view into `size` bytes at `base`: inside them and aligned for `T`.
fn view_of<'a, T>(base: *mut u8, size: usize, at: usize, len: usize) -> Result<Dev<'a, T>> {
    let end = len
        .checked_mul(size_of::<T>())
        .and_then(|b| b.checked_add(at))
        .filter(|&end| end <= size);
    let ptr = base.wrapping_add(at);
    if end.is_none() || (ptr as usize) % align_of::<T>() != 0 {
        return Err(VramError::new(
            crate::error::ErrorKind::Device,
            "a device view past its allocation or misaligned",
        ));
    }
    // SAFETY: inside the live allocation (checked above), which the view's lifetime borrows.
    Ok(unsafe { Dev::from_raw(ptr.cast(), len) })
}

/// Device memory that outlives any one stream (a model's plan, a search's node store): freed
/// at once, on its device, when dropped.
pub struct DeviceMem {
    ptr: *mut u8,
    len: usize,
    device: i32,
}

// SAFETY: a device address is a number on the host; what the memory holds is guarded by its
// users (read-only tables, or slots handed out one owner at a time).
unsafe impl Send for DeviceMem {}
// SAFETY: as for Send.
unsafe impl Sync for DeviceMem {}

impl DeviceMem {
    /// `bytes` of the current device (which must be `device`), holding `init` at its start
    /// (copied and waited for).
    pub fn new(device: i32, bytes: usize, init: &[u8], what: &str) -> Result<Self> {
        if init.len() > bytes {
            return Err(VramError::invalid(
                what,
                "more initial bytes than the allocation",
            ));
        }
        let stream = Stream::new()?;
        let mem = DeviceAlloc::new(bytes.max(1), &stream, what)?;
        if !init.is_empty() {
            // SAFETY: the destination holds `bytes >= init.len()`; `init` outlives the
            // synchronisation below.
            unsafe { copy_to_device(mem.ptr(), init, &stream) }?;
        }
        let mem = Self {
            ptr: mem.release(),
            len: bytes,
            device,
        };
        stream.sync()?;
        Ok(mem)
    }

    /// `len` values of `T` starting `at` bytes in.
    pub fn view<T>(&self, at: usize, len: usize) -> Result<Dev<'_, T>> {
        view_of(self.ptr, self.len, at, len)
    }
}

impl Drop for DeviceMem {
    fn drop(&mut self) {
        // SAFETY: memory from lvk_malloc_async on `device`, freed once; every call that
        // queued work on it waited for that work before returning.
        unsafe { free_now(self.device, self.ptr.cast()) };
    }
}

/// Free and total bytes of the current device.
pub fn mem_info() -> Result<(usize, usize)> {
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: writes two integers through valid pointers.
    check(
        unsafe { lvk_mem_info(&mut free, &mut total) },
        "cudaMemGetInfo",
    )?;
    Ok((free, total))
}

/// Multiprocessors of the current device.
pub fn sm_count() -> Result<u32> {
    let mut sms: c_int = 0;
    // SAFETY: writes one int through a valid pointer.
    check(unsafe { lvk_sm_count(&mut sms) }, "cudaDeviceGetAttribute")?;
    u32::try_from(sms)
        .map_err(|_| VramError::new(crate::error::ErrorKind::Device, "no multiprocessors"))
}

impl Drop for DeviceAlloc<'_> {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: memory from lvk_malloc_async, freed once, stream-ordered.
            unsafe { lvk_free_async(self.ptr, self.stream.raw()) };
        }
    }
}

/// Frees device memory of `device` at once (on a fresh stream, waited for), best effort: for
/// owners dropped outside any stream's order (sealed shards, the linear bounds' node store).
///
/// # Safety
/// `ptr` must come from `lvk_malloc_async` on `device`, be freed exactly once, and no queued
/// work may still use it.
pub unsafe fn free_now(device: i32, ptr: *mut c_void) {
    let Ok(_scope) = DeviceScope::enter(device) else {
        return;
    };
    if let Ok(stream) = Stream::new() {
        // SAFETY: the function's contract.
        unsafe { lvk_free_async(ptr, stream.raw()) };
        let _ = stream.sync();
    }
}

/// Page-locked host memory that kernels on every GPU read and write in place (mapped and
/// portable; with unified addressing the host address is the device address).
pub struct PinnedHost {
    ptr: *mut u8,
    len: usize,
}

impl PinnedHost {
    pub fn new(len: usize) -> Result<Self> {
        let mut ptr = std::ptr::null_mut();
        // SAFETY: writes one pointer through a valid pointer; len > 0 is checked by lvk.
        check(
            unsafe { lvk_host_alloc(&mut ptr, len) },
            "cudaHostAlloc (page-locked staging)",
        )?;
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn size(&self) -> usize {
        self.len
    }

    /// `len` values of `T` starting `at` bytes in, as kernels see them (mapped memory).
    pub fn view<T>(&self, at: usize, len: usize) -> Result<Dev<'_, T>> {
        view_of(self.ptr, self.len, at, len)
    }
}

impl Drop for PinnedHost {
    fn drop(&mut self) {
        // SAFETY: memory from lvk_host_alloc, freed once; its users synchronise before they
        // give it up.
        unsafe { lvk_host_free(self.ptr.cast()) };
    }
}

/// Queues a copy of `src` to device memory at `dst` on `stream`.
///
/// # Safety
/// `dst` must be device memory (or mapped page-locked memory) writable for `src.len()` bytes,
/// and both `dst` and `src` must stay allocated, and `src` unchanged, until `stream` is
/// synchronised.
pub unsafe fn copy_to_device(dst: *mut u8, src: &[u8], stream: &Stream) -> Result<()> {
    // SAFETY: the function's contract.
    check(
        unsafe { lvk_memcpy_h2d_async(dst.cast(), src.as_ptr().cast(), src.len(), stream.raw()) },
        "cudaMemcpyAsync (host to device)",
    )
}

/// Queues a copy of `dst.len()` bytes from device memory at `src` into `dst` on `stream`.
///
/// # Safety
/// `src` must be device memory readable for `dst.len()` bytes, and both must stay allocated
/// (and `dst` otherwise untouched) until `stream` is synchronised.
pub unsafe fn copy_to_host(dst: &mut [u8], src: *const u8, stream: &Stream) -> Result<()> {
    // SAFETY: the function's contract.
    check(
        unsafe {
            lvk_memcpy_d2h_async(dst.as_mut_ptr().cast(), src.cast(), dst.len(), stream.raw())
        },
        "cudaMemcpyAsync (device to host)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_of_an_allocation_are_checked() {
        // 64 bytes at an address aligned for f64 (never dereferenced).
        let base = std::ptr::NonNull::<f64>::dangling().as_ptr().cast::<u8>();
        assert_eq!(
            view_of::<f64>(base, 64, 0, 8).map(|v| v.len()).ok(),
            Some(8)
        );
        assert!(
            view_of::<f64>(base, 64, 8, 8).is_err(),
            "one value past the end"
        );
        assert!(view_of::<f64>(base, 64, 4, 1).is_err(), "misaligned");
        assert!(
            view_of::<f64>(base, 64, 0, usize::MAX).is_err(),
            "overflowing length"
        );
        assert_eq!(
            view_of::<u8>(base, 64, 64, 0).map(|v| v.len()).ok(),
            Some(0)
        );
    }
}
