//! Page-aligned host memory for the host backend's shards.

use std::alloc::{Layout, alloc, dealloc};
use std::ptr::NonNull;

use crate::error::{Result, VramError};

const PAGE: usize = 4096;

/// An owned, page-aligned, immutable-after-creation copy of a caller's bytes.
pub struct PageBuf {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
}

// SAFETY: PageBuf owns its allocation exclusively; after construction the bytes are only read
// (and, in the fault drill, changed one byte at a time through a raw pointer), so sharing
// references across threads is as safe as sharing a `Box<[u8]>`.
unsafe impl Send for PageBuf {}
// SAFETY: see `Send` above; no method takes `&self` and hands out mutable access.
unsafe impl Sync for PageBuf {}

impl PageBuf {
    /// Copies `data` (non-empty) into fresh page-aligned memory. A failed allocation is
    /// `OutOfMemory`, never an abort.
    pub fn copy_from(data: &[u8]) -> Result<Self> {
        let size = data
            .len()
            .checked_next_multiple_of(PAGE)
            .filter(|&s| s > 0)
            .ok_or_else(|| VramError::invalid("len", "is zero or too large"))?;
        let layout = Layout::from_size_align(size, PAGE)
            .map_err(|_| VramError::out_of_memory("host allocation: size too large"))?;
        // SAFETY: `layout` has a non-zero size (checked above).
        let raw = unsafe { alloc(layout) };
        let ptr = NonNull::new(raw).ok_or_else(|| {
            VramError::out_of_memory(format!("host allocation of {size} bytes failed"))
        })?;
        // SAFETY: `ptr` is a fresh allocation of `size >= data.len()` bytes that cannot overlap
        // `data`; the tail past `data.len()` is zeroed so no uninitialised byte is ever read.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), ptr.as_ptr(), data.len());
            std::ptr::write_bytes(ptr.as_ptr().add(data.len()), 0, size - data.len());
        }
        Ok(Self {
            ptr,
            len: data.len(),
            layout,
        })
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `len` initialised bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
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

    /// Fault drill: flips one bit. The caller has checked `bit < 8 * len`.
    pub fn flip_bit(&self, bit: u64) -> Result<()> {
        let byte = usize::try_from(bit / 8)
            .ok()
            .filter(|&b| b < self.len)
            .ok_or_else(|| VramError::invalid("bit_index", "is past the end of the shard"))?;
        let mask = 1u8 << (bit % 8);
        // SAFETY: `byte < len`, so the address is inside the allocation. Volatile access keeps
        // the compiler from assuming the bytes never change (they are also observed through
        // the pointer handed to C by vram_shard_device_ptr).
        unsafe {
            let p = self.ptr.as_ptr().add(byte);
            p.write_volatile(p.read_volatile() ^ mask);
        }
        Ok(())
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` was returned by `alloc(self.layout)` and is freed exactly once here.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_aligns() {
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let b = PageBuf::copy_from(&data).unwrap();
        assert_eq!(b.as_slice(), &data[..]);
        assert_eq!(b.as_ptr() as usize % PAGE, 0);
        b.flip_bit(8 * 4999 + 7).unwrap();
        assert_ne!(b.as_slice()[4999], data[4999]);
        assert!(b.flip_bit(8 * 5000).is_err());
    }
}
