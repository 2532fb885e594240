//! Sealing from pageable memory or files through a ring of page-locked staging slots.
//!
//! The DMA engine copies to the GPU at full speed only from page-locked memory, and one CPU
//! thread fills page-locked memory (a `memcpy`, or a `pread` from the page cache) far below
//! that speed. So worker threads fill the slots of a ring in parallel, each taking the next
//! chunk, while the calling thread queues each filled chunk's copy to the GPU in order, and
//! then the Merkle kernel over every 128 MiB copied (on a second stream, so hashing overlaps
//! the copies still to come). A slot is refilled only after its copy is done.
//!
//! Hand-over between threads goes through one mutex-guarded [`Board`]: a worker may fill chunk
//! `c` once chunk `c - SLOTS` (the slot's previous tenant) has been queued and its copy event
//! has passed; the calling thread queues chunk `c` once a worker has marked it filled.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use super::ffi::LvkJob;
use super::launch::{self, Dev};
use super::runtime::{DeviceScope, Event, PinnedHost, Stream, copy_to_device, copy_to_host};
use super::{to_usize, upload_jobs};
use crate::backend::ingest::{Source, Watch};
use crate::error::{ErrorKind, Result, VramError};
use crate::fallible::try_with_capacity;
use crate::seal::merkle::{Hash, TreeLayout};

/// Bytes of one staging slot: one chunk (a multiple of every region size). Small enough that
/// the first copy starts soon after the call, large enough that one copy runs at DMA speed.
pub(super) const SLOT_BYTES: u64 = 8 << 20;
/// Slots in the ring (192 MiB of page-locked memory in all).
const SLOTS: usize = 24;
/// Bytes of one shard the Merkle kernel hashes per launch (a multiple of `SLOT_BYTES`).
const HASH_BATCH: u64 = 128 << 20;
/// Most worker threads filling slots (one thread fills page-locked memory at 3–5 GB/s on the
/// H200 machine, the DMA engine empties it at 55 GB/s).
pub(super) const MAX_WORKERS: usize = 16;

/// The staging ring, made on first use and kept for the context's life.
pub(super) struct Ring {
    slots: Vec<PinnedHost>,
    /// Recorded after each slot's copy to the device is queued.
    copied: Vec<Event>,
}

// SAFETY: page-locked memory and events are process-wide resources usable from any thread;
// the ring is used by one pass at a time (its owner's mutex), and within a pass each slot is
// written by one thread at a time, as the board hands it out (see the module comment).
unsafe impl Send for Ring {}
// SAFETY: as for Send.
unsafe impl Sync for Ring {}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Ring({} slots of {} bytes)",
            self.slots.len(),
            SLOT_BYTES
        )
    }
}

impl Ring {
    pub(super) fn new() -> Result<Self> {
        let mut slots = Vec::with_capacity(SLOTS);
        let mut copied = Vec::with_capacity(SLOTS);
        for _ in 0..SLOTS {
            slots.push(PinnedHost::new(SLOT_BYTES as usize)?);
            copied.push(Event::new()?);
        }
        Ok(Self { slots, copied })
    }

    /// Slot `slot`'s first `len` bytes, writable.
    ///
    /// # Safety
    /// No other reference to the slot's bytes may exist (the board gives the slot to one
    /// thread), and no copy may be reading it (its `copied` event has passed).
    #[allow(clippy::mut_from_ref)]
    unsafe fn slot_mut(&self, slot: usize, len: usize) -> &mut [u8] {
        // SAFETY: the slot holds SLOT_BYTES >= len bytes (chunks are at most a slot); the rest
        // is the function's contract.
        unsafe { std::slice::from_raw_parts_mut(self.slots[slot].ptr(), len) }
    }

    /// Slot `slot`'s first `len` bytes, to read.
    ///
    /// # Safety
    /// No thread may be writing the slot (it is filled and not yet handed back).
    unsafe fn slot(&self, slot: usize, len: usize) -> &[u8] {
        // SAFETY: as `slot_mut`, read only.
        unsafe { std::slice::from_raw_parts(self.slots[slot].ptr(), len) }
    }
}

/// One slot's worth of one shard.
struct Chunk {
    job: usize,
    off: u64,
    len: u64,
    /// The hash batch this chunk completes, if it completes one.
    ends_batch: Option<usize>,
    ends_job: bool,
}

/// The state threads hand chunks over through.
struct State {
    /// Chunks taken by workers so far.
    claimed: usize,
    /// Chunks whose copy the calling thread has queued so far (in order).
    queued: usize,
    /// The chunk each slot holds, filled.
    filled: Vec<Option<usize>>,
    stop: bool,
    error: Option<VramError>,
}

struct Board {
    state: Mutex<State>,
    changed: Condvar,
}

impl Board {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(g).unwrap_or_else(PoisonError::into_inner)
    }

    /// The next chunk for a worker, once its slot's previous tenant is queued; `None` when
    /// every chunk is taken or the pass stopped.
    fn claim(&self, chunks: usize) -> Option<usize> {
        let mut s = self.lock();
        if s.stop || s.claimed >= chunks {
            return None;
        }
        let c = s.claimed;
        s.claimed += 1;
        while !s.stop && c >= s.queued + SLOTS {
            s = self.wait(s);
        }
        (!s.stop).then_some(c)
    }

    fn filled(&self, slot: usize, chunk: usize) {
        self.lock().filled[slot] = Some(chunk);
        self.changed.notify_all();
    }

    fn fail(&self, e: VramError) {
        let mut s = self.lock();
        s.error.get_or_insert(e);
        s.stop = true;
        drop(s);
        self.changed.notify_all();
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }

    /// Waits until chunk `chunk` is in slot `slot`, or a worker failed.
    fn wait_filled(&self, slot: usize, chunk: usize) -> Result<()> {
        let mut s = self.lock();
        loop {
            if let Some(e) = s.error.take() {
                return Err(e);
            }
            if s.filled[slot] == Some(chunk) {
                return Ok(());
            }
            s = self.wait(s);
        }
    }

    fn queued(&self, chunks: usize) {
        self.lock().queued = chunks;
        self.changed.notify_all();
    }
}

/// Where the pass puts its results: each shard's device bytes, and every region root.
pub(super) struct Targets<'a> {
    pub dsts: &'a [*mut u8],
    /// Region roots of all shards, shard after shard, on the device.
    pub roots_dev: Dev<'a, u8>,
    /// The same, copied back to page-locked host memory shard by shard.
    pub roots_host: &'a PinnedHost,
    /// Each shard's first region in the roots.
    pub first_region: &'a [u64],
}

/// One pass: copies every shard's bytes from `src` to `targets.dsts` through the ring and
/// hashes them into `targets.roots_dev`, reporting to `watch`. On error the streams may still
/// hold work: the caller synchronises them before freeing anything.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    ring: &Ring,
    device: i32,
    workers: usize,
    layouts: &[TreeLayout],
    src: &dyn Source,
    watch: &mut dyn Watch,
    targets: &Targets<'_>,
    copy: &Stream,
    hash: &Stream,
) -> Result<()> {
    let (chunks, batches) = plan(layouts, targets)?;
    let jobs_dev = upload_jobs(&batches, hash)?;
    let board = Board {
        state: Mutex::new(State {
            claimed: 0,
            queued: 0,
            filled: vec![None; SLOTS],
            stop: false,
            error: None,
        }),
        changed: Condvar::new(),
    };
    let n = chunks.len();
    let fill = |c: usize| -> Result<()> {
        let slot = c % SLOTS;
        if c >= SLOTS {
            ring.copied[slot].sync()?;
        }
        let ch = &chunks[c];
        // SAFETY: the board gave chunk `c`, and with it the slot, to this thread alone: the
        // slot's previous tenant was queued and its copy has just been waited for, and its next
        // tenant cannot be claimed before this chunk is queued.
        let dst = unsafe { ring.slot_mut(slot, ch.len as usize) };
        src.fill(ch.job, ch.off, dst)
    };
    let worker = || {
        let _scope = match DeviceScope::enter(device) {
            Ok(s) => s,
            Err(e) => return board.fail(e),
        };
        while let Some(c) = board.claim(n) {
            match fill(c) {
                Ok(()) => board.filled(c % SLOTS, c),
                Err(e) => return board.fail(e),
            }
        }
    };
    std::thread::scope(|scope| {
        let mut spawned = 0;
        for _ in 0..workers.clamp(1, MAX_WORKERS) {
            if std::thread::Builder::new()
                .spawn_scoped(scope, worker)
                .is_ok()
            {
                spawned += 1;
            }
        }
        // With no worker thread the calling thread fills each chunk itself (slowly, but done).
        let fill_here: Option<&dyn Fn(usize) -> Result<()>> =
            if spawned == 0 { Some(&fill) } else { None };
        let run = queue_all(
            ring, &chunks, &jobs_dev, layouts, watch, targets, copy, hash, &board, fill_here,
        );
        board.stop();
        run
    })
}

/// Splits every shard into slot-sized chunks and its hash batches (one kernel job each).
fn plan(layouts: &[TreeLayout], targets: &Targets<'_>) -> Result<(Vec<Chunk>, Vec<LvkJob>)> {
    let count: u64 = layouts.iter().map(|l| l.len.div_ceil(SLOT_BYTES)).sum();
    let mut chunks = try_with_capacity(count as usize, "staging chunks")?;
    let mut batches = try_with_capacity(
        layouts
            .iter()
            .map(|l| l.len.div_ceil(HASH_BATCH) as usize)
            .sum(),
        "hash batches",
    )?;
    for (job, (layout, &dst)) in layouts.iter().zip(targets.dsts).enumerate() {
        if HASH_BATCH % layout.region_size() != 0 || SLOT_BYTES % layout.region_size() != 0 {
            return Err(VramError::new(
                ErrorKind::Device,
                "staging: a region does not divide the chunk size",
            ));
        }
        let mut off = 0;
        while off < layout.len {
            let len = (layout.len - off).min(SLOT_BYTES);
            let end = off + len;
            let ends_batch = (end % HASH_BATCH == 0 || end == layout.len).then(|| {
                let start = (end - 1) / HASH_BATCH * HASH_BATCH;
                // One job per launch: its `first_region` is 0 (the kernel numbers regions
                // within the launch); where its roots go is the pointer handed to the launch.
                batches.push(LvkJob {
                    data: dst.wrapping_add(start as usize),
                    len: end - start,
                    first_region: 0,
                    leaf_size: layout.leaf_size,
                    region_leaves: layout.region_leaves() as u32,
                });
                batches.len() - 1
            });
            chunks.push(Chunk {
                job,
                off,
                len,
                ends_batch,
                ends_job: end == layout.len,
            });
            off = end;
        }
    }
    Ok((chunks, batches))
}

/// The calling thread's part: queue each filled chunk's copy, its batch's hashing, each
/// shard's roots back to the host, and tell the watch.
#[allow(clippy::too_many_arguments)]
fn queue_all(
    ring: &Ring,
    chunks: &[Chunk],
    jobs_dev: &super::runtime::DeviceAlloc<'_>,
    layouts: &[TreeLayout],
    watch: &mut dyn Watch,
    targets: &Targets<'_>,
    copy: &Stream,
    hash: &Stream,
    board: &Board,
    fill_here: Option<&dyn Fn(usize) -> Result<()>>,
) -> Result<()> {
    let copied = Event::new()?;
    let wants_bytes = watch.wants_bytes();
    // Shards whose roots are on their way back, with the event that says they arrived.
    let mut pending: VecDeque<(usize, Event)> = VecDeque::new();
    let mut spare: Vec<Event> = Vec::new();
    let mut done = 0u64;
    let roots_of = |job: usize| -> &[Hash] {
        let first = targets.first_region[job] as usize;
        let count = layouts[job].regions() as usize;
        // SAFETY: the roots of shard `job` lie inside the page-locked copy (sized for all
        // regions), and their copy back has completed (its event passed), so nothing writes
        // them; `Hash` is a byte array, so any alignment will do.
        unsafe {
            std::slice::from_raw_parts(
                targets
                    .roots_host
                    .ptr()
                    .cast::<Hash>()
                    .add(first)
                    .cast_const(),
                count,
            )
        }
    };
    for (c, ch) in chunks.iter().enumerate() {
        let slot = c % SLOTS;
        match fill_here {
            Some(fill) => fill(c)?,
            None => board.wait_filled(slot, c)?,
        }
        // SAFETY: the chunk is filled and its slot not handed back until `queued` below.
        let bytes = unsafe { ring.slot(slot, ch.len as usize) };
        let dst = targets.dsts[ch.job].wrapping_add(ch.off as usize);
        // SAFETY: the shard's device buffer holds its whole length; the slot is not refilled
        // before the `copied` event recorded next has passed.
        unsafe { copy_to_device(dst, bytes, copy) }?;
        ring.copied[slot].record(copy)?;
        if wants_bytes {
            watch.bytes(ch.job, bytes)?;
        }
        board.queued(c + 1);
        if let Some(b) = ch.ends_batch {
            copied.order(hash, copy)?;
            let layout = &layouts[ch.job];
            let job = jobs_dev.view::<LvkJob>(b * size_of::<LvkJob>(), 1)?;
            let regions = batch_regions(chunks, c, layout);
            let first = batch_first_region(chunks, c, layout, targets);
            let roots = targets
                .roots_dev
                .part(to_usize(32 * first)?, to_usize(32 * regions)?)?;
            // SAFETY: batch `b`'s bytes were copied before the event the hash stream now waits
            // on, into a shard buffer that outlives the synchronisation of both streams; the
            // job and its roots are views of live allocations.
            unsafe {
                launch::region_roots(job, regions, layout.region_leaves() as u32, roots, hash)
            }?;
        }
        if ch.ends_job {
            let first = targets.first_region[ch.job] as usize;
            let count = layouts[ch.job].regions() as usize;
            // SAFETY: both ranges lie inside buffers sized for all regions, alive until the
            // streams are synchronised; nothing reads the host range before the event below.
            unsafe {
                let host = std::slice::from_raw_parts_mut(
                    targets.roots_host.ptr().add(32 * first),
                    32 * count,
                );
                copy_to_host(host, targets.roots_dev.as_ptr().add(32 * first), hash)?;
            }
            let ev = match spare.pop() {
                Some(e) => e,
                None => Event::new()?,
            };
            ev.record(hash)?;
            pending.push_back((ch.job, ev));
            done += layouts[ch.job].len;
            watch.progress(done)?;
        }
        while let Some((job, ev)) = pending.front() {
            if !ev.query()? {
                break;
            }
            watch.hashed(*job, roots_of(*job))?;
            if let Some((_, ev)) = pending.pop_front() {
                spare.push(ev);
            }
        }
    }
    for (job, ev) in pending {
        ev.sync()?;
        watch.hashed(job, roots_of(job))?;
    }
    Ok(())
}

/// Device address of batch `b`'s job in the uploaded table.
/// Index, among all shards' region roots, of the first region of the batch chunk `c` completes.
fn batch_first_region(
    chunks: &[Chunk],
    c: usize,
    layout: &TreeLayout,
    targets: &Targets<'_>,
) -> u64 {
    let end = chunks[c].off + chunks[c].len;
    let start = (end - 1) / HASH_BATCH * HASH_BATCH;
    targets.first_region[chunks[c].job] + start / layout.region_size()
}

/// Regions of the batch that chunk `c` completes.
fn batch_regions(chunks: &[Chunk], c: usize, layout: &TreeLayout) -> u64 {
    let end = chunks[c].off + chunks[c].len;
    let start = (end - 1) / HASH_BATCH * HASH_BATCH;
    (end - start).div_ceil(layout.region_size())
}
