//! Page-aligned host memory for the host backend's shards.
//!
//! Once sealed, a shard's pages are made read-only (`mprotect`), so a stray write from
//! anywhere in the process faults in the writer instead of silently changing sealed bytes.
//! Only the fault drill lifts the protection, for the one write it makes.

use std::ptr::NonNull;
use std::sync::{Mutex, PoisonError};

use crate::error::{Result, VramError};

pub(crate) const PAGE: usize = 4096;

/// Serialises fault drills: each lifts a buffer's protection, writes one byte and restores it,
/// and two drills on one buffer must not interleave.
static DRILL: Mutex<()> = Mutex::new(());
const HUGE_PAGE: usize = 2 << 20;

/// Supplies the pages under `dst` (part of a fresh [`PageBuf`], page-aligned) now, in one
/// call, rather than one fault at a time inside the copy or `pread` that fills them: measured
/// on a 2-core VM, faults taken inside `pread` cost several times more. Only advice: it
/// changes no bytes, and on kernels before 5.14 the pages simply fault in as before.
pub fn populate(dst: &mut [u8]) {
    if dst.is_empty() {
        return;
    }
    // SAFETY: advice on the pages under a slice this thread holds mutably; populating for
    // writing changes no contents.
    unsafe {
        libc::madvise(
            dst.as_mut_ptr().cast(),
            dst.len(),
            libc::MADV_POPULATE_WRITE,
        )
    };
}

/// An owned, page-aligned, immutable-after-creation copy of a caller's bytes.
pub struct PageBuf {
    ptr: NonNull<u8>,
    len: usize,
    /// Mapped bytes: `len` rounded up to whole pages.
    size: usize,
    read_only: bool,
}

// SAFETY: PageBuf owns its allocation exclusively; after construction the bytes are only read
// (and, in the fault drill, changed one byte at a time through a raw pointer), so sharing
// references across threads is as safe as sharing a `Box<[u8]>`.
unsafe impl Send for PageBuf {}
// SAFETY: see `Send` above; no method takes `&self` and hands out mutable access.
unsafe impl Sync for PageBuf {}

impl PageBuf {
    /// `len` (non-zero) zeroed bytes from an anonymous private mapping: page-aligned, zero
    /// pages supplied lazily by the kernel (so this costs no pass over the memory, and the
    /// first-touch faults happen in the parallel copy that follows), transparent huge pages
    /// advised to cut the number of faults. A failed mapping is `OutOfMemory`, never an abort.
    pub fn zeroed(len: usize) -> Result<Self> {
        let size = len
            .checked_next_multiple_of(PAGE)
            .filter(|&s| s > 0 && s <= isize::MAX as usize)
            .ok_or_else(|| VramError::invalid("len", "is zero or too large"))?;
        // SAFETY: an anonymous private mapping with no address hint touches no existing memory.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(VramError::out_of_memory(format!(
                "host allocation of {size} bytes failed: {}",
                std::io::Error::last_os_error()
            )));
        }
        if size >= HUGE_PAGE {
            // SAFETY: advice on a mapping we own; failure only means no huge pages.
            unsafe { libc::madvise(raw, size, libc::MADV_HUGEPAGE) };
        }
        let ptr = NonNull::new(raw.cast::<u8>())
            .ok_or_else(|| VramError::out_of_memory("host allocation returned NULL"))?;
        Ok(Self {
            ptr,
            len,
            size,
            read_only: false,
        })
    }

    /// The bytes, writable until [`PageBuf::seal_read_only`]; `None` after it.
    pub fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        if self.read_only {
            return None;
        }
        // SAFETY: `ptr` is valid for `len` initialised (zeroed) bytes, the pages are writable
        // (not yet sealed), and `&mut self` makes this the only reference.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) })
    }

    /// Makes the pages read-only for the rest of the buffer's life.
    pub fn seal_read_only(&mut self) -> Result<()> {
        self.protect(libc::PROT_READ)?;
        self.read_only = true;
        Ok(())
    }

    fn protect(&self, prot: libc::c_int) -> Result<()> {
        // SAFETY: `ptr`/`size` describe exactly the mapping this buffer owns.
        let rc = unsafe { libc::mprotect(self.ptr.as_ptr().cast(), self.size, prot) };
        if rc != 0 {
            return Err(VramError::out_of_memory(format!(
                "mprotect of a sealed shard failed: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `len` initialised bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes as f32 values (the layout of IBP weights), when the length allows.
    pub fn as_f32(&self) -> Option<&[f32]> {
        // SAFETY: every bit pattern is a valid f32, and align_to only yields the correctly
        // aligned middle part (the buffer is page-aligned, so the prefix is empty).
        let (pre, mid, post) = unsafe { self.as_slice().align_to::<f32>() };
        (pre.is_empty() && post.is_empty()).then_some(mid)
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Repair: writes `bytes` at `offset`, lifting the read-only protection for the write.
    /// The caller has checked that they are the sealed bytes, and that nothing else uses the
    /// buffer meanwhile.
    pub fn write_at(&self, offset: usize, bytes: &[u8]) -> Result<()> {
        let end = offset
            .checked_add(bytes.len())
            .filter(|&e| e <= self.len)
            .ok_or_else(|| VramError::invalid("data", "runs past the end of the shard"))?;
        let _drill = DRILL.lock().unwrap_or_else(PoisonError::into_inner);
        if self.read_only {
            self.protect(libc::PROT_READ | libc::PROT_WRITE)?;
        }
        // SAFETY: `offset..end` lies inside the allocation (checked above) and the pages are
        // writable (never sealed, or unprotected just above); the caller guarantees no other
        // reference reads these bytes during the repair.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(offset),
                end - offset,
            )
        };
        if self.read_only {
            self.protect(libc::PROT_READ)?;
        }
        Ok(())
    }

    /// Fault drill: flips one bit. The caller has checked `bit < 8 * len`.
    pub fn flip_bit(&self, bit: u64) -> Result<()> {
        let byte = usize::try_from(bit / 8)
            .ok()
            .filter(|&b| b < self.len)
            .ok_or_else(|| VramError::invalid("bit_index", "is past the end of the shard"))?;
        let mask = 1u8 << (bit % 8);
        let _drill = DRILL.lock().unwrap_or_else(PoisonError::into_inner);
        if self.read_only {
            self.protect(libc::PROT_READ | libc::PROT_WRITE)?;
        }
        // SAFETY: `byte < len`, so the address is inside the allocation, and the page is
        // writable (never sealed, or unprotected just above). Volatile access keeps the
        // compiler from assuming the bytes never change (they are also observed through the
        // pointer handed to C by vram_shard_device_ptr).
        unsafe {
            let p = self.ptr.as_ptr().add(byte);
            p.write_volatile(p.read_volatile() ^ mask);
        }
        if self.read_only {
            self.protect(libc::PROT_READ)?;
        }
        Ok(())
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`size` describe the mapping made in `zeroed`, unmapped exactly once here.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.size) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_aligns() {
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let mut b = PageBuf::zeroed(data.len()).unwrap();
        b.as_mut_slice().unwrap().copy_from_slice(&data);
        assert_eq!(b.as_slice(), &data[..]);
        assert_eq!(b.as_ptr() as usize % PAGE, 0);
        b.seal_read_only().unwrap();
        assert!(b.as_mut_slice().is_none());
        b.flip_bit(8 * 4999 + 7).unwrap();
        assert_ne!(b.as_slice()[4999], data[4999]);
        b.flip_bit(8 * 4999 + 7).unwrap();
        assert_eq!(b.as_slice(), &data[..]);
        assert!(b.flip_bit(8 * 5000).is_err());
    }
}
