//! The seal record: a canonical, versioned, length-prefixed encoding of a shard's identity,
//! followed by HMAC-SHA256 over it. Byte layout: docs/seal-format.md.

use subtle::ConstantTimeEq;

use super::key::SealKey;
use super::merkle::{Hash, check_leaf_size};
use super::shard_id::check_shard_id;
use crate::error::{Result, VramError};

pub const MAGIC: &[u8; 8] = b"VRAMSEAL";
pub const FORMAT_VERSION: u16 = 1;
const MAC_LEN: usize = 32;
/// Fixed part of the body after the id: len, leaf size, root, residency, ordinal, time, key id.
const FIXED_AFTER_ID: usize = 8 + 4 + 32 + 1 + 4 + 8 + 16;
const HEADER_LEN: usize = 8 + 2 + 4;

/// Where a shard's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Residency {
    Host,
    Cuda { device: i32 },
}

impl Residency {
    fn encode(self) -> (u8, i32) {
        match self {
            Residency::Host => (0, -1),
            Residency::Cuda { device } => (1, device),
        }
    }

    fn decode(kind: u8, device: i32) -> Result<Self> {
        match (kind, device) {
            (0, -1) => Ok(Residency::Host),
            (1, d) if d >= 0 => Ok(Residency::Cuda { device: d }),
            _ => Err(VramError::bad_seal(format!(
                "unknown residency {kind} on device {device}"
            ))),
        }
    }
}

/// Everything that identifies a sealed shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealRecord {
    pub shard_id: String,
    pub byte_len: u64,
    pub leaf_size: u32,
    pub root: Hash,
    pub residency: Residency,
    pub seal_time_unix_ns: u64,
    pub key_id: [u8; 16],
}

impl SealRecord {
    /// The canonical body (everything the MAC covers).
    pub fn body(&self) -> Vec<u8> {
        let id = self.shard_id.as_bytes();
        let body_len = 2 + id.len() + FIXED_AFTER_ID;
        let mut out = Vec::with_capacity(HEADER_LEN + body_len + MAC_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        // Both lengths are bounded by the id limit (256), so these casts cannot truncate.
        out.extend_from_slice(&(body_len as u32).to_be_bytes());
        out.extend_from_slice(&(id.len() as u16).to_be_bytes());
        out.extend_from_slice(id);
        out.extend_from_slice(&self.byte_len.to_be_bytes());
        out.extend_from_slice(&self.leaf_size.to_be_bytes());
        out.extend_from_slice(&self.root);
        let (kind, device) = self.residency.encode();
        out.push(kind);
        out.extend_from_slice(&device.to_be_bytes());
        out.extend_from_slice(&self.seal_time_unix_ns.to_be_bytes());
        out.extend_from_slice(&self.key_id);
        out
    }

    /// Body followed by its MAC under `key`.
    pub fn encode(&self, key: &SealKey) -> Vec<u8> {
        let mut out = self.body();
        let tag = key.mac(&out);
        out.extend_from_slice(&tag);
        out
    }

    /// Parses and authenticates a record. Rejects anything not byte-for-byte canonical.
    pub fn decode(bytes: &[u8], key: &SealKey) -> Result<Self> {
        let (record, body, tag) = Self::parse(bytes)?;
        // Authenticate before trusting any field's meaning.
        if record.key_id.ct_eq(&key.key_id()).unwrap_u8() != 1 {
            return Err(VramError::bad_seal(
                "was sealed under another key (key identifier differs)",
            ));
        }
        if !key.verify_mac(body, tag) {
            return Err(VramError::bad_seal(
                "MAC does not match: the record was altered or forged",
            ));
        }
        Ok(record)
    }

    /// Parses a record's fields **without authenticating it** (for display by tools that do
    /// not hold the key): nothing it says can be trusted.
    pub fn peek(bytes: &[u8]) -> Result<Self> {
        Self::parse(bytes).map(|(r, _, _)| r)
    }

    /// The fields, the body the MAC covers and the MAC, with every structural rule checked.
    fn parse(bytes: &[u8]) -> Result<(Self, &[u8], &[u8])> {
        let mut r = Reader { bytes, pos: 0 };
        if r.take(8)? != MAGIC {
            return Err(VramError::bad_seal(
                "does not start with the VRAMSEAL magic",
            ));
        }
        let version = r.u16()?;
        if version != FORMAT_VERSION {
            return Err(VramError::bad_seal(format!(
                "format version {version} is not supported (expected {FORMAT_VERSION})"
            )));
        }
        let body_len = r.u32()? as usize;
        let expected_total = HEADER_LEN
            .checked_add(body_len)
            .and_then(|n| n.checked_add(MAC_LEN));
        if expected_total != Some(bytes.len()) {
            return Err(VramError::bad_seal(format!(
                "is {} bytes but its header declares {}",
                bytes.len(),
                expected_total
                    .map_or_else(|| "an impossible length".to_string(), |n| n.to_string())
            )));
        }
        let (body, tag) = bytes.split_at(HEADER_LEN + body_len);
        let id_len = usize::from(r.u16()?);
        if 2 + id_len + FIXED_AFTER_ID != body_len {
            return Err(VramError::bad_seal(
                "id length disagrees with the body length",
            ));
        }
        let id_bytes = r.take(id_len)?;
        let shard_id = check_shard_id(id_bytes)
            .map_err(|e| VramError::bad_seal(format!("invalid shard id ({e})")))?
            .to_string();
        let byte_len = r.u64()?;
        let leaf_size = r.u32()?;
        let mut root = [0u8; 32];
        root.copy_from_slice(r.take(32)?);
        let kind = r.take(1)?.first().copied().unwrap_or(u8::MAX);
        let device = r.u32()? as i32;
        let seal_time_unix_ns = r.u64()?;
        let mut key_id = [0u8; 16];
        key_id.copy_from_slice(r.take(16)?);
        if byte_len == 0 {
            return Err(VramError::bad_seal("declares a shard of 0 bytes"));
        }
        check_leaf_size(leaf_size).map_err(|e| VramError::bad_seal(format!("leaf size {e}")))?;
        let residency = Residency::decode(kind, device)?;
        let record = Self {
            shard_id,
            byte_len,
            leaf_size,
            root,
            residency,
            seal_time_unix_ns,
            key_id,
        };
        Ok((record, body, tag))
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| VramError::bad_seal("is truncated"))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16> {
        let mut b = [0u8; 2];
        b.copy_from_slice(self.take(2)?);
        Ok(u16::from_be_bytes(b))
    }
    fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(b))
    }
    fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (SealRecord, SealKey) {
        let key = SealKey::derive(&[9u8; 32]).unwrap();
        let rec = SealRecord {
            shard_id: "layers.0.weight".into(),
            byte_len: 4097,
            leaf_size: 4096,
            root: [0xab; 32],
            residency: Residency::Cuda { device: 1 },
            seal_time_unix_ns: 1_700_000_000_000_000_000,
            key_id: key.key_id(),
        };
        (rec, key)
    }

    #[test]
    fn round_trip() {
        let (rec, key) = sample();
        let bytes = rec.encode(&key);
        assert_eq!(bytes.len(), 121 + rec.shard_id.len());
        assert_eq!(SealRecord::decode(&bytes, &key).unwrap(), rec);
    }

    #[test]
    fn every_single_byte_change_is_rejected() {
        let (rec, key) = sample();
        let bytes = rec.encode(&key);
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                assert!(
                    SealRecord::decode(&b, &key).is_err(),
                    "byte {i} ^ {flip:#x}"
                );
            }
        }
    }

    #[test]
    fn truncation_and_extension_rejected() {
        let (rec, key) = sample();
        let bytes = rec.encode(&key);
        for n in 0..bytes.len() {
            assert!(SealRecord::decode(&bytes[..n], &key).is_err(), "len {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(SealRecord::decode(&longer, &key).is_err());
    }

    #[test]
    fn other_key_rejected() {
        let (rec, key) = sample();
        let other = SealKey::derive(&[8u8; 32]).unwrap();
        let err = SealRecord::decode(&rec.encode(&key), &other).unwrap_err();
        assert!(err.message.contains("another key"));
    }
}

/// The worked example of docs/seal-format.md, byte for byte (computed there with Python's
/// hashlib and hmac): if this test fails, the document or the format changed.
#[cfg(test)]
mod documented_example {
    use super::*;
    use crate::seal::merkle::tree_root;

    const RECORD_HEX: &str = "5652414d5345414c00010000004c000177000000000000000300001000\
        609f6e36d2405585188d5cfd761f407c7cc46a7d3f314c88270469dde315fcd100ffffffff18867251edfa\
        0000f70289e2f6150e1620feae00146971949b531ba16904b4bf8fbe691271725820487158c663c04edc64\
        877732004102cb";

    #[test]
    fn matches_the_document() {
        let key = SealKey::derive(b"an example seal secret, 32 bytes").unwrap();
        let rec = SealRecord {
            shard_id: "w".into(),
            byte_len: 3,
            leaf_size: 4096,
            root: tree_root(b"abc", 4096),
            residency: Residency::Host,
            seal_time_unix_ns: 1_767_225_600_000_000_000,
            key_id: key.key_id(),
        };
        let hex: String = rec
            .encode(&key)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, RECORD_HEX);
    }
}
