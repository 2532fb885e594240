//! A sealed shard: bytes in a backend, the kept level of region roots, and the seal record.

use std::sync::Arc;

use crate::backend::Storage;
use crate::context::Reservation;
use crate::error::{ErrorKind, VramError};
use crate::events::{self, Level, names};
use crate::seal::merkle::{Hash, TreeLayout};
use crate::seal::record::SealRecord;

/// An immutable sealed shard. Shared freely between threads (`Arc<Shard>`).
pub struct Shard {
    pub(crate) record: SealRecord,
    pub(crate) encoded_record: Vec<u8>,
    pub(crate) layout: TreeLayout,
    /// One root per region of `REGION_BYTES`; the root of the tree over them is `record.root`.
    pub(crate) level: Vec<Hash>,
    pub(crate) storage: Storage,
    /// Whether the context that sealed it allowed the fault drill.
    pub(crate) fault_drills: bool,
    pub(crate) _reservation: Reservation,
}

impl Shard {
    pub fn id(&self) -> &str {
        &self.record.shard_id
    }

    pub fn len(&self) -> u64 {
        self.record.byte_len
    }

    pub fn is_empty(&self) -> bool {
        self.record.byte_len == 0
    }

    pub fn root(&self) -> Hash {
        self.record.root
    }

    pub fn record(&self) -> &SealRecord {
        &self.record
    }

    /// The canonical record bytes with their MAC.
    pub fn encoded_record(&self) -> &[u8] {
        &self.encoded_record
    }

    pub fn layout(&self) -> TreeLayout {
        self.layout
    }

    /// Address of the bytes (host or device memory, as the record's residency says).
    pub fn data_ptr(&self) -> *const u8 {
        self.storage.as_ptr()
    }

    pub(crate) fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Fault drill: flips one stored bit, as a memory fault or an attacker would. Refused
    /// (`Policy`) unless the sealing context allowed fault drills.
    pub fn debug_flip_bit(&self, bit: u64) -> crate::error::Result<()> {
        if !self.fault_drills {
            let msg = format!(
                "shard '{}': fault drills are disabled; create the context with VRAM_CTX_ALLOW_FAULT_DRILLS to use them",
                self.id()
            );
            events::emit(Level::Warn, names::POLICY_VIOLATION, &msg);
            return Err(VramError::new(ErrorKind::Policy, msg));
        }
        let bits = self.len().saturating_mul(8);
        if bit >= bits {
            return Err(VramError::invalid(
                "bit_index",
                format!("{bit} is past the shard's last bit ({bits} bits)"),
            ));
        }
        self.storage.flip_bit(bit)?;
        events::emit(
            Level::Warn,
            names::FAULT_DRILL,
            &format!(
                "shard '{}': bit {bit} flipped by the fault drill",
                self.id()
            ),
        );
        Ok(())
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        events::emit(
            Level::Debug,
            names::FREE,
            &format!("shard '{}' ({} bytes) freed", self.id(), self.len()),
        );
    }
}

/// A shard handle as callers hold it.
pub type SharedShard = Arc<Shard>;
