//! The host backend: shards in page-aligned host memory, hashed in parallel on the CPU cores.
//!
//! Work is split statically into one contiguous range of regions per thread (regions are all
//! 1 MiB but the last, so static ranges balance well) and run on scoped threads, which keeps
//! a verify call's heap use independent of the shard's size and leaves no thread pool behind
//! in the host process.

use std::sync::{Mutex, PoisonError};

use super::ingest::{Source, Watch};
use super::{CheckJob, Damage, PageBuf};
use crate::error::{Result, VramError};
use crate::fallible::try_with_capacity;
use crate::seal::ct::hash_eq;
use crate::seal::merkle::{Hash, TreeLayout, tree_root, zeroed_level};

/// Below this many bytes of work, hashing stays on the calling thread (spawning a thread
/// costs tens of microseconds; hashing 2 MiB on one core takes over a millisecond).
const PARALLEL_THRESHOLD: u64 = 2 << 20;
/// Regions a sealing worker copies and hashes at a time (2 MiB).
const QUEUE_CHUNK_REGIONS: usize = 2;

#[derive(Debug, Clone)]
pub struct HostBackend {
    threads: usize,
}

impl Default for HostBackend {
    fn default() -> Self {
        Self::with_max_threads(0)
    }
}

impl HostBackend {
    /// One thread per core, or at most `max` (0 = no bound beyond the cores).
    pub fn with_max_threads(max: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = if max == 0 { cores } else { cores.min(max) };
        Self { threads }
    }

    /// Threads one call uses at most.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

impl HostBackend {
    /// Fills fresh page-aligned memory for every shard from `src` and computes its kept level
    /// (one root per region) in the same pass: each worker fills a chunk (a copy, or a read
    /// from a file) and hashes it while it is still in cache. Returns each shard's bytes and
    /// level, in order; on error nothing is kept.
    pub fn ingest_many(
        &self,
        layouts: &[TreeLayout],
        src: &dyn Source,
        watch: &mut dyn Watch,
    ) -> Result<Vec<(PageBuf, Vec<Hash>)>> {
        let mut out = try_with_capacity(layouts.len(), "shards")?;
        let mut done = 0;
        for (job, layout) in layouts.iter().enumerate() {
            let len = usize::try_from(layout.len)
                .map_err(|_| VramError::out_of_memory("size exceeds the address space"))?;
            let mut buf = PageBuf::zeroed(len)?;
            let mut level = zeroed_level(layout.regions())?;
            self.fill_and_hash(&mut buf, job, src, *layout, &mut level)?;
            buf.seal_read_only()?;
            if watch.wants_bytes() {
                watch.bytes(job, buf.as_slice())?;
            }
            watch.hashed(job, &level)?;
            done += layout.len;
            watch.progress(done)?;
            out.push((buf, level));
        }
        Ok(out)
    }

    fn fill_and_hash(
        &self,
        buf: &mut PageBuf,
        job: usize,
        src: &dyn Source,
        layout: TreeLayout,
        level: &mut [Hash],
    ) -> Result<()> {
        let region = layout.region_size() as usize;
        let chunk_bytes = region * QUEUE_CHUNK_REGIONS;
        let threads = if layout.len < PARALLEL_THRESHOLD {
            1
        } else {
            self.threads.clamp(1, level.len().max(1))
        };
        let dst = buf
            .as_mut_slice()
            .ok_or_else(|| VramError::invalid("shard", "is already sealed"))?;
        let chunks = dst
            .chunks_mut(chunk_bytes)
            .enumerate()
            .zip(level.chunks_mut(QUEUE_CHUNK_REGIONS));
        // Each worker fills a chunk and hashes it while it is still in cache.
        crate::parallel::for_each(chunks, threads, |((i, dst), out)| {
            super::page_buf::populate(dst);
            src.fill(job, (i * chunk_bytes) as u64, dst)?;
            for (slot, bytes) in out.iter_mut().zip(dst.chunks(region)) {
                *slot = tree_root(bytes, layout.leaf_size);
            }
            Ok::<(), VramError>(())
        })
    }

    /// The kept level (one root per region) of bytes in host memory, hashed in parallel.
    pub fn level_of(&self, data: &[u8], layout: TreeLayout) -> Result<Vec<Hash>> {
        let mut level = zeroed_level(layout.regions())?;
        let region = layout.region_size() as usize;
        let threads = if layout.len < PARALLEL_THRESHOLD {
            1
        } else {
            self.threads.clamp(1, level.len().max(1))
        };
        let parts = data
            .chunks(region * QUEUE_CHUNK_REGIONS)
            .zip(level.chunks_mut(QUEUE_CHUNK_REGIONS));
        let Ok(()) = crate::parallel::for_each(parts, threads, |(bytes, out)| {
            for (slot, r) in out.iter_mut().zip(bytes.chunks(region)) {
                *slot = tree_root(r, layout.leaf_size);
            }
            Ok::<(), std::convert::Infallible>(())
        });
        Ok(level)
    }

    /// Re-hashes every region of every job (in parallel) and compares each with the kept level.
    /// Heap use does not grow with the shards' size: only damaged regions are listed.
    pub fn check(&self, jobs: &[CheckJob<'_>], bytes: &[&[u8]], damage: &mut [Damage]) {
        // Per job, the damaged regions found by any worker (no allocation while intact).
        let found: Vec<Mutex<Vec<u64>>> = jobs.iter().map(|_| Mutex::new(Vec::new())).collect();
        // Global region index space: job j owns [starts[j], starts[j] + regions_j).
        let mut starts = Vec::with_capacity(jobs.len());
        let mut total: u64 = 0;
        let mut total_bytes: u64 = 0;
        for job in jobs {
            starts.push(total);
            total += job.layout.regions();
            total_bytes += job.layout.len;
        }
        let threads = if total_bytes < PARALLEL_THRESHOLD {
            1
        } else {
            (self.threads as u64).min(total).max(1)
        };
        let per = total.div_ceil(threads);
        let run = |from: u64| {
            let to = (from + per).min(total);
            check_range(jobs, bytes, &starts, &found, from, to);
        };
        std::thread::scope(|scope| {
            for t in 1..threads {
                let from = t * per;
                if std::thread::Builder::new()
                    .spawn_scoped(scope, move || run(from))
                    .is_err()
                {
                    run(from);
                }
            }
            run(0);
        });
        for (d, f) in damage.iter_mut().zip(found) {
            let mut regions = f.into_inner().unwrap_or_else(PoisonError::into_inner);
            regions.sort_unstable();
            for r in regions {
                d.add(r);
            }
        }
    }
}

fn check_range(
    jobs: &[CheckJob<'_>],
    bytes: &[&[u8]],
    starts: &[u64],
    found: &[Mutex<Vec<u64>>],
    from: u64,
    to: u64,
) {
    if from >= to {
        return;
    }
    // The job holding global region `from`.
    let mut j = starts.partition_point(|&s| s <= from).saturating_sub(1);
    let mut g = from;
    while g < to && j < jobs.len() {
        let job = &jobs[j];
        let local_end = (starts[j] + job.layout.regions()).min(to);
        while g < local_end {
            let r = g - starts[j];
            let (s, e) = job.layout.region_range(r);
            let fresh = bytes
                .get(j)
                .and_then(|b| b.get(s as usize..e as usize))
                .map(|region| tree_root(region, job.layout.leaf_size));
            let same = match (fresh, job.level.get(r as usize)) {
                (Some(f), Some(x)) => hash_eq(&f, x),
                _ => false,
            };
            if !same {
                found[j]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(r);
            }
            g += 1;
        }
        j += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_threads_bounds_the_workers() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(HostBackend::with_max_threads(0).threads(), cores);
        assert_eq!(HostBackend::with_max_threads(1).threads(), 1);
        assert_eq!(HostBackend::with_max_threads(10_000).threads(), cores);
    }
}
