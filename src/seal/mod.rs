//! Sealing: the Merkle tree over a shard's bytes, the seal key, the seal record, the model
//! manifest and the rules on shard ids. Plain safe Rust; no C types, no device code.

pub mod ct;
pub mod key;
pub mod manifest;
pub mod merkle;
pub mod record;
pub mod shard_id;

pub use key::SealKey;
pub use merkle::{Hash, TreeLayout};
pub use record::{Residency, SealRecord};
