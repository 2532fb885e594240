//! Sealing many shards in one pass: where their bytes come from (a [`Source`]: memory or files)
//! and what the caller is told as the pass goes (a [`Watch`]).
//!
//! Backends pull bytes from the source straight into their own memory (the host backend's
//! shard pages, or the CUDA backend's page-locked staging ring), so a file is read once, by
//! several threads, with no intermediate buffer.

use crate::error::Result;
use crate::seal::merkle::Hash;

/// The bytes of the shards being sealed; shared by the backend's worker threads.
pub trait Source: Sync {
    /// Writes shard `job`'s bytes from `offset` into `dst` (all of it, or an error).
    fn fill(&self, job: usize, offset: u64, dst: &mut [u8]) -> Result<()>;

    /// Shard `job`'s bytes when they already lie in this process's memory (a backend may then
    /// copy them directly, e.g. from page-locked memory).
    fn in_memory(&self, job: usize) -> Option<&[u8]> {
        let _ = job;
        None
    }
}

/// One shard's bytes in memory.
pub struct SliceSource<'a>(pub &'a [u8]);

impl Source for SliceSource<'_> {
    fn fill(&self, _job: usize, offset: u64, dst: &mut [u8]) -> Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|o| self.0.get(o..o.checked_add(dst.len())?))
            .ok_or_else(|| crate::error::VramError::invalid("len", "chunk outside the data"))?;
        dst.copy_from_slice(src);
        Ok(())
    }

    fn in_memory(&self, _job: usize) -> Option<&[u8]> {
        Some(self.0)
    }
}

/// Told on the calling thread while shards are sealed. An error from any method stops the
/// pass: nothing is kept, and the error is the pass's.
pub trait Watch {
    /// Whether [`Watch::bytes`] must see every byte (it costs a pass on the calling thread).
    fn wants_bytes(&self) -> bool {
        false
    }

    /// Shard `job`'s next bytes, in order (shards in order, each from its start).
    fn bytes(&mut self, job: usize, bytes: &[u8]) -> Result<()> {
        let _ = (job, bytes);
        Ok(())
    }

    /// Shard `job`'s region roots are known (shards in order).
    fn hashed(&mut self, job: usize, level: &[Hash]) -> Result<()> {
        let _ = (job, level);
        Ok(())
    }

    /// Bytes of all shards moved so far, after each shard.
    fn progress(&mut self, done: u64) -> Result<()> {
        let _ = done;
        Ok(())
    }
}

/// A watch that wants nothing.
pub struct Unwatched;

impl Watch for Unwatched {}
