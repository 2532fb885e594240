//! RFC 9162 (Certificate Transparency v2) Merkle Tree Hash over a byte buffer.
//!
//! Leaves are `leaf_size`-byte slices of the buffer (the last may be shorter); a leaf hashes to
//! `SHA-256(0x00 ‖ leaf)` and an inner node to `SHA-256(0x01 ‖ left ‖ right)`, where a node of
//! `n` leaves splits at the largest power of two below `n`.
//!
//! libvram keeps one upper level of that tree: the roots of aligned *regions* of
//! `region_leaves` leaves (a power of two, so each region is a node of the tree). The root is
//! the same RFC 9162 hash taken over the region roots (see [`root_from_level`]), which is what
//! lets a failed verify name the damaged regions.

use sha2::{Digest, Sha256};

/// A SHA-256 value.
pub type Hash = [u8; 32];

/// Bytes per region of the kept level: the granularity at which damage is located.
pub const REGION_BYTES: u64 = 1 << 20;
pub const MIN_LEAF_SIZE: u32 = 1 << 10;
pub const MAX_LEAF_SIZE: u32 = 1 << 20;
pub const DEFAULT_LEAF_SIZE: u32 = 4096;

/// `SHA-256(0x00 ‖ leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(leaf);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// How a shard's bytes are cut into leaves and regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeLayout {
    pub len: u64,
    pub leaf_size: u32,
}

impl TreeLayout {
    /// `len` must be > 0 and `leaf_size` a power of two in [1 KiB, 1 MiB]; callers check both
    /// (see [`check_leaf_size`]).
    pub fn new(len: u64, leaf_size: u32) -> Self {
        Self { len, leaf_size }
    }

    pub fn leaves(&self) -> u64 {
        self.len.div_ceil(u64::from(self.leaf_size))
    }

    /// Bytes per region: 1 MiB, or one leaf when leaves are larger (they never are today).
    pub fn region_size(&self) -> u64 {
        REGION_BYTES.max(u64::from(self.leaf_size))
    }

    pub fn region_leaves(&self) -> u64 {
        self.region_size() / u64::from(self.leaf_size)
    }

    pub fn regions(&self) -> u64 {
        self.len.div_ceil(self.region_size())
    }

    /// Byte range `[start, end)` of region `i` (i < regions()).
    pub fn region_range(&self, i: u64) -> (u64, u64) {
        let start = i.saturating_mul(self.region_size());
        let end = start.saturating_add(self.region_size()).min(self.len);
        (start, end)
    }
}

/// A zeroed kept level of `regions` hashes; a failed allocation is `OutOfMemory`, never an
/// abort.
pub fn zeroed_level(regions: u64) -> crate::error::Result<Vec<Hash>> {
    use crate::error::VramError;
    let n =
        usize::try_from(regions).map_err(|_| VramError::out_of_memory("region level too large"))?;
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| VramError::out_of_memory("host allocation of the region level failed"))?;
    v.resize(n, [0u8; 32]);
    Ok(v)
}

/// Checks a caller's leaf size.
pub fn check_leaf_size(leaf_size: u32) -> Result<(), String> {
    if !leaf_size.is_power_of_two() || !(MIN_LEAF_SIZE..=MAX_LEAF_SIZE).contains(&leaf_size) {
        return Err(format!(
            "{leaf_size} is not a power of two between {MIN_LEAF_SIZE} and {MAX_LEAF_SIZE}"
        ));
    }
    Ok(())
}

/// Streaming RFC 9162 tree hash: push the hashes of consecutive subtrees whose sizes never
/// grow from left to right (leaves, or equal-sized aligned regions), then `finish`.
///
/// Uses a fixed stack of 64 entries: no heap, whatever the number of leaves.
pub struct TreeHasher {
    stack: [(Hash, u64); 65],
    depth: usize,
}

impl Default for TreeHasher {
    fn default() -> Self {
        Self {
            stack: [([0u8; 32], 0); 65],
            depth: 0,
        }
    }
}

impl TreeHasher {
    /// Appends a subtree of `weight` leaves (a power of two, except possibly the last push).
    pub fn push(&mut self, hash: Hash, weight: u64) {
        let mut cur = (hash, weight);
        // Merge with the previous entry while it has the same size: that pair is a full
        // subtree of the RFC 9162 tree because everything to its left is a multiple of its size.
        while self.depth > 0 {
            let (top_hash, top_weight) = self.stack[self.depth - 1];
            if top_weight != cur.1 {
                break;
            }
            self.depth -= 1;
            cur = (node_hash(&top_hash, &cur.0), top_weight + cur.1);
        }
        if self.depth < self.stack.len() {
            self.stack[self.depth] = cur;
            self.depth += 1;
        }
    }

    /// The root; `None` when nothing was pushed.
    pub fn finish(&self) -> Option<Hash> {
        // The remaining entries have strictly decreasing sizes; RFC 9162 joins them right to left.
        let mut acc: Option<Hash> = None;
        for i in (0..self.depth).rev() {
            let (h, _) = self.stack[i];
            acc = Some(match acc {
                None => h,
                Some(right) => node_hash(&h, &right),
            });
        }
        acc
    }
}

/// RFC 9162 root of `bytes` cut into `leaf_size` leaves. `bytes` must not be empty.
pub fn tree_root(bytes: &[u8], leaf_size: u32) -> Hash {
    let mut t = TreeHasher::default();
    for leaf in bytes.chunks(leaf_size as usize) {
        t.push(leaf_hash(leaf), 1);
    }
    t.finish().unwrap_or_else(|| leaf_hash(&[]))
}

/// The root over a kept level of region roots (every region full except perhaps the last).
pub fn root_from_level(level: &[Hash]) -> Option<Hash> {
    let mut t = TreeHasher::default();
    for h in level {
        t.push(*h, 1);
    }
    t.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC 9162 definition, recursively, as the reference.
    fn mth_reference(leaves: &[&[u8]]) -> Hash {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => leaf_hash(leaves[0]),
            n => {
                let k = largest_pow2_below(n);
                node_hash(&mth_reference(&leaves[..k]), &mth_reference(&leaves[k..]))
            }
        }
    }

    fn largest_pow2_below(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    #[test]
    fn streaming_root_matches_recursive_definition() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 31 % 251) as u8).collect();
        for n in [1usize, 2, 3, 4, 5, 7, 8, 9, 13, 16, 17, 31, 33, 48] {
            let bytes = &data[..n * 1024 - 3];
            let leaves: Vec<&[u8]> = bytes.chunks(1024).collect();
            assert_eq!(tree_root(bytes, 1024), mth_reference(&leaves), "n = {n}");
        }
    }

    #[test]
    fn root_over_regions_equals_root_over_leaves() {
        let len = 5 * (1 << 20) + 12_345;
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let layout = TreeLayout::new(len as u64, 4096);
        let level: Vec<Hash> = (0..layout.regions())
            .map(|i| {
                let (s, e) = layout.region_range(i);
                tree_root(&data[s as usize..e as usize], 4096)
            })
            .collect();
        assert_eq!(root_from_level(&level), Some(tree_root(&data, 4096)));
    }

    #[test]
    fn rfc9162_empty_leaf_vector() {
        // RFC 9162 test vector style: the hash of one empty leaf is SHA-256(0x00).
        let expected = Sha256::digest([0u8]);
        assert_eq!(leaf_hash(&[]).as_slice(), expected.as_slice());
    }

    #[test]
    fn leaf_size_rules() {
        assert!(check_leaf_size(4096).is_ok());
        assert!(check_leaf_size(1024).is_ok());
        assert!(check_leaf_size(1 << 20).is_ok());
        assert!(check_leaf_size(512).is_err());
        assert!(check_leaf_size(3000).is_err());
        assert!(check_leaf_size(2 << 20).is_err());
    }
}
