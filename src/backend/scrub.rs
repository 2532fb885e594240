//! The scrubber's fast tier on each backend: the keyed region digests of
//! [`crate::scrub::digest`], computed where the bytes live within a budget (GPU: blocks of a
//! persistent grid, so at most that many SMs; host: threads).

use super::{Backend, Storage};
use crate::error::{Result, VramError};
use crate::parallel;
use crate::scrub::digest::FastKey;
use crate::seal::merkle::REGION_BYTES;

/// Consecutive regions of one shard's bytes.
pub struct ScrubPiece<'a> {
    pub storage: &'a Storage,
    pub len: u64,
    pub first_region: u64,
    pub regions: u64,
}

/// What computes the digests: owned by one scrubber.
pub enum FastEngine {
    Host,
    #[cfg(vram_cuda)]
    Cuda(super::cuda::scrub::FastScrub),
}

impl FastEngine {
    pub fn new(backend: &Backend, key: &FastKey) -> Result<Self> {
        let _ = key;
        match backend {
            Backend::Host(_) => Ok(FastEngine::Host),
            #[cfg(vram_cuda)]
            Backend::Cuda(c) => Ok(FastEngine::Cuda(super::cuda::scrub::FastScrub::new(
                c.device(),
                &key.power_table(),
            )?)),
        }
    }

    /// Units of budget at full speed: the GPU's SMs (one block fills one), or the cores.
    pub fn full_budget(&self) -> u32 {
        match self {
            FastEngine::Host => std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
            #[cfg(vram_cuda)]
            FastEngine::Cuda(c) => c.sm_count(),
        }
    }

    /// Largest budget that means something: SMs, or cores.
    pub fn max_budget(&self) -> u32 {
        match self {
            FastEngine::Host => self.full_budget(),
            #[cfg(vram_cuda)]
            FastEngine::Cuda(c) => c.sm_count(),
        }
    }

    /// Every region's digest, piece by piece, using at most `budget` blocks or threads.
    pub fn digests(
        &self,
        key: &FastKey,
        pieces: &[ScrubPiece<'_>],
        budget: u32,
    ) -> Result<Vec<u64>> {
        match self {
            FastEngine::Host => host_digests(key, pieces, budget),
            #[cfg(vram_cuda)]
            FastEngine::Cuda(c) => {
                let mut gpu = Vec::with_capacity(pieces.len());
                for p in pieces {
                    match p.storage {
                        Storage::Cuda(buf) => gpu.push(super::cuda::scrub::Piece {
                            buf,
                            len: p.len,
                            first_region: p.first_region,
                            regions: p.regions,
                        }),
                        Storage::Host(_) => return Err(super::wrong_backend()),
                    }
                }
                c.digests(&gpu, budget)
            }
        }
    }
}

fn host_digests(key: &FastKey, pieces: &[ScrubPiece<'_>], threads: u32) -> Result<Vec<u64>> {
    let mut regions: Vec<&[u8]> = Vec::new();
    for p in pieces {
        let bytes = match p.storage {
            Storage::Host(buf) => buf.as_slice(),
            #[cfg(vram_cuda)]
            Storage::Cuda(_) => return Err(super::wrong_backend()),
        };
        for r in p.first_region..p.first_region.saturating_add(p.regions) {
            let start = r.saturating_mul(REGION_BYTES).min(p.len) as usize;
            let end = (r.saturating_add(1))
                .saturating_mul(REGION_BYTES)
                .min(p.len) as usize;
            let region = bytes
                .get(start..end)
                .filter(|b| !b.is_empty())
                .ok_or_else(|| VramError::invalid("regions", "lie past the end of the shard"))?;
            regions.push(region);
        }
    }
    let mut out = vec![0u64; regions.len()];
    parallel::for_each(
        out.iter_mut().zip(regions),
        threads.max(1) as usize,
        |(slot, bytes)| -> Result<()> {
            *slot = key.digest(bytes);
            Ok(())
        },
    )?;
    Ok(out)
}
