//! The scrubber's fast tier on a GPU: a stream of its own (non-blocking, so it never orders
//! itself after the caller's work or the legacy default stream), the key's powers kept in
//! device memory, and a persistent grid of at most the budgeted number of blocks.

use super::DeviceBuf;
use super::ffi::{self, LvkJob};
use super::launch::{Dev, fast_digests};
use super::runtime::{DeviceAlloc, DeviceScope, Stream, copy_to_device, copy_to_host, sm_count};
use crate::error::{ErrorKind, Result, VramError};
use crate::scrub::digest::{POWER_TABLE_LEN, PowerTable};
use crate::seal::merkle::REGION_BYTES;

/// One run of consecutive regions of a buffer.
pub struct Piece<'a> {
    pub buf: &'a DeviceBuf,
    pub len: u64,
    pub first_region: u64,
    pub regions: u64,
}

pub struct FastScrub {
    device: i32,
    stream: Stream,
    powers: *mut u8,
    sms: u32,
}

// SAFETY: the stream and the device address of the powers are process-wide CUDA handles, usable
// from any thread once the device is selected (every method enters the device's scope); the
// scrubber uses one FastScrub from one thread at a time (behind a mutex).
unsafe impl Send for FastScrub {}

impl FastScrub {
    /// Resources on `device` for a scrubber with this key.
    pub fn new(device: i32, table: &PowerTable) -> Result<Self> {
        let _scope = DeviceScope::enter(device)?;
        let sms = sm_count()?;
        let stream = Stream::new()?;
        let bytes = table.as_bytes();
        let powers = DeviceAlloc::new(bytes.len(), &stream, "scrubber key powers")?;
        // SAFETY: the destination was allocated above with the source's length; the source
        // outlives the synchronisation below.
        unsafe { copy_to_device(powers.ptr(), &bytes, &stream) }?;
        stream.sync()?;
        let powers = powers.release();
        Ok(Self {
            device,
            stream,
            powers,
            sms: sms.max(1),
        })
    }

    /// Multiprocessors of the device.
    pub fn sm_count(&self) -> u32 {
        self.sms
    }

    /// The digest of every region of every piece, in order, from a grid of at most `blocks`
    /// blocks. Blocks this thread until its own stream has run the kernel; never synchronises
    /// the device or another stream.
    pub fn digests(&self, pieces: &[Piece<'_>], blocks: u32) -> Result<Vec<u64>> {
        let _scope = DeviceScope::enter(self.device)?;
        let mut jobs = Vec::with_capacity(pieces.len());
        let mut total = 0u64;
        for p in pieces {
            if p.buf.device() != self.device {
                return Err(VramError::new(
                    ErrorKind::Policy,
                    "scrubber: a shard lives on another GPU",
                ));
            }
            let start = p.first_region.saturating_mul(REGION_BYTES);
            let end = start
                .saturating_add(p.regions.saturating_mul(REGION_BYTES))
                .min(p.len);
            if p.regions == 0 || start >= end {
                return Err(VramError::invalid(
                    "regions",
                    "lie past the end of the shard",
                ));
            }
            jobs.push(LvkJob {
                data: p.buf.as_ptr().wrapping_add(start as usize),
                len: end - start,
                first_region: total,
                leaf_size: 0,
                region_leaves: 0,
            });
            total += p.regions;
        }
        let mut out =
            vec![0u64; usize::try_from(total).map_err(|_| VramError::out_of_memory("digests"))?];
        if jobs.is_empty() {
            return Ok(out);
        }
        let table_bytes = size_of_val(jobs.as_slice());
        let jobs_dev = DeviceAlloc::new(table_bytes, &self.stream, "scrub job table")?;
        let digests_dev = DeviceAlloc::new(8 * out.len(), &self.stream, "scrub digests")?;
        // SAFETY: LvkJob is plain old data; viewing the table as bytes reads initialised memory.
        let raw = unsafe { std::slice::from_raw_parts(jobs.as_ptr().cast::<u8>(), table_bytes) };
        // SAFETY: the destination was allocated above with the table's length; both outlive
        // the synchronisation of the stream below.
        unsafe { copy_to_device(jobs_dev.ptr(), raw, &self.stream) }?;
        // SAFETY: the powers were copied to the device in `new` (POWER_TABLE_LEN values) and
        // live as long as `self`.
        let powers = unsafe { Dev::from_raw(self.powers.cast::<u64>(), POWER_TABLE_LEN) };
        // SAFETY: every job's bytes lie inside a live shard buffer (the caller holds the
        // shards for the call); the table and the digests are views of the allocations above,
        // which outlive the synchronisation below.
        unsafe {
            fast_digests(
                jobs_dev.view::<LvkJob>(0, jobs.len())?,
                total,
                powers,
                digests_dev.view::<u64>(0, out.len())?,
                blocks,
                &self.stream,
            )
        }?;
        // SAFETY: the source holds 8 bytes per region (allocated above); the destination is
        // the same size and outlives the synchronisation.
        unsafe { copy_to_host(bytemuck_u64(&mut out), digests_dev.ptr(), &self.stream) }?;
        self.stream.sync()?;
        Ok(out)
    }
}

/// A u64 slice as its bytes (the device writes native-order u64 values).
fn bytemuck_u64(v: &mut [u64]) -> &mut [u8] {
    // SAFETY: u64 has no padding and every byte pattern is a valid u64; the length covers the
    // same memory.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), 8 * v.len()) }
}

impl Drop for FastScrub {
    fn drop(&mut self) {
        let Ok(_scope) = DeviceScope::enter(self.device) else {
            return;
        };
        // SAFETY: memory from lvk_malloc_async, freed once on the scrubber's own stream (its
        // last kernel was synchronised before `digests` returned).
        unsafe { ffi::lvk_free_async(self.powers.cast(), self.stream.raw()) };
        let _ = self.stream.sync();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendChoice, Storage};
    use crate::context::{Context, ContextOptions};
    use crate::scrub::digest::FastKey;

    /// The kernel's digests equal the CPU reference (Horner) for whole, partial and tiny last
    /// regions, at several grid sizes. Skipped (with a message) without a GPU.
    #[test]
    fn gpu_digests_equal_the_reference() {
        if super::super::device_count() == 0 {
            println!("SKIPPED gpu_digests_equal_the_reference: no GPU on this machine");
            return;
        }
        let ctx = Context::new(&ContextOptions {
            secret: &[7u8; 32],
            backend: BackendChoice::Cuda,
            device: 0,
            capacity_bytes: 0,
            allow_fault_drills: false,
            max_threads: 0,
        })
        .unwrap();
        let key = FastKey::random().unwrap();
        let engine = FastScrub::new(0, &key.power_table()).unwrap();
        for (n, len) in [
            (0u64, 1usize),
            (1, 4095),
            (2, (3 << 20) + 4096 + 5),
            (3, 5 << 20),
        ] {
            let mut x = n + 1;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (x >> 56) as u8
                })
                .collect();
            let shard = ctx
                .seal(format!("digest.{n}").as_bytes(), &data, None)
                .unwrap();
            let Storage::Cuda(buf) = shard.storage() else {
                panic!("not on the GPU")
            };
            let regions = shard.layout().regions();
            let want: Vec<u64> = data.chunks(1 << 20).map(|r| key.digest(r)).collect();
            for blocks in [1, 3, 264] {
                let piece = Piece {
                    buf,
                    len: len as u64,
                    first_region: 0,
                    regions,
                };
                assert_eq!(engine.digests(&[piece], blocks).unwrap(), want, "len {len}");
            }
            if regions > 1 {
                let tail = Piece {
                    buf,
                    len: len as u64,
                    first_region: 1,
                    regions: regions - 1,
                };
                assert_eq!(engine.digests(&[tail], 2).unwrap(), want[1..].to_vec());
            }
        }
    }
}
