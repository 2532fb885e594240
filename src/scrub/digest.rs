//! The scrubber's fast detection tier: a keyed polynomial hash of each 1 MiB region, evaluated
//! modulo the Mersenne prime p = 2^61 − 1 at a secret point r.
//!
//! A region's bytes, zero-padded to a whole number of 4 KiB chunks, are read as N
//! little-endian 32-bit words w_0 … w_{N−1}; its digest is
//!
//! ```text
//! D = Σ_i w_i · r^(N−i)  mod p          (Horner: acc = (acc + w_i) · r)
//! ```
//!
//! Why this hash: two different regions of the same length collide only when r is a root of
//! the nonzero polynomial Σ (w_i − w'_i) x^(N−i), which has at most N ≤ 2^18 roots, so for a
//! uniformly random secret r ∈ [1, p−1] any given corruption is missed with probability at
//! most 2^18 / (2^61 − 2) < 2^−42, whoever chose it, as long as they do not know r. An error
//! inside one 32-bit word (every single-bit flip, every burst within an aligned word) is never
//! missed: it changes the digest by e · r^k with 0 < |e| < 2^32 < p and r ≠ 0. A burst of up to
//! 64 bits touches at most 3 consecutive words and is missed only when r is one of the ≤ 2
//! roots of a quadratic: probability ≤ 2 / (p − 1) < 2^−59. docs/threat-model.md has the
//! whole argument. The SHA-256 Merkle root stays the record and the proof: a digest mismatch
//! only triggers a SHA-256 verify of the shard.
//!
//! The GPU kernel (cuda/scrub.cu) evaluates the same sum in parallel (lanes × chunks, with
//! the powers from [`PowerTable`]); tests check both against this Horner form.

use crate::error::{Result, VramError};

/// p = 2^61 − 1.
pub const P: u64 = (1 << 61) - 1;
/// Digests are taken over whole chunks of this many bytes (the tail zero-padded).
pub const CHUNK_BYTES: usize = 4096;
/// Words per chunk.
pub const CHUNK_WORDS: usize = CHUNK_BYTES / 4;
/// Chunks per region (a region is 1 MiB).
pub const REGION_CHUNKS: usize = (crate::seal::merkle::REGION_BYTES as usize) / CHUNK_BYTES;

/// Reduces a value below 2^125 modulo p.
fn reduce(x: u128) -> u64 {
    let folded = (x as u64 & P) as u128 + (x >> 61);
    let folded = (folded as u64 & P) + (folded >> 61) as u64;
    if folded >= P { folded - P } else { folded }
}

/// a · b mod p for a, b < p.
pub fn mul(a: u64, b: u64) -> u64 {
    reduce(u128::from(a) * u128::from(b))
}

/// a + b mod p for a, b < p.
pub fn add(a: u64, b: u64) -> u64 {
    let s = a + b;
    if s >= P { s - P } else { s }
}

/// The secret evaluation point. Never leaves the process (the kernel gets only its powers).
#[derive(Clone, Copy)]
pub struct FastKey {
    r: u64,
    /// r^0 … r^8: the weights of a 32-byte block and the step between blocks.
    block: [u64; 9],
}

impl std::fmt::Debug for FastKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FastKey(..)")
    }
}

impl FastKey {
    /// A fresh key from the operating system's random source.
    pub fn random() -> Result<Self> {
        loop {
            let mut b = [0u8; 8];
            // SAFETY: getrandom writes at most b.len() bytes into the valid buffer.
            let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
            if n != b.len() as isize {
                return Err(VramError::new(
                    crate::error::ErrorKind::Device,
                    "scrubber: the operating system's random source failed (getrandom)",
                ));
            }
            // Uniform on [0, 2^61) by masking; rejecting 0 and values ≥ p leaves it uniform on
            // [1, p − 1].
            if let Some(key) = Self::from_point(u64::from_le_bytes(b) & P) {
                return Ok(key);
            }
        }
    }

    /// A fixed key, for tests and reference computations.
    pub fn from_point(r: u64) -> Option<Self> {
        if r == 0 || r >= P {
            return None;
        }
        let mut key = Self { r, block: [1; 9] };
        for k in 1..9 {
            key.block[k] = mul(key.block[k - 1], r);
        }
        Some(key)
    }

    /// The digest of one region (or any byte string). Horner's rule over 32-byte blocks: the
    /// 8 words of a block are weighted independently (r^8 … r^1) and only the step between
    /// blocks (× r^8) is a chain, which a CPU runs several times faster than one multiply per
    /// word. Equal to [`FastKey::digest_by_words`] (tested).
    pub fn digest(&self, bytes: &[u8]) -> u64 {
        let mut acc = 0u64;
        let mut blocks = bytes.chunks_exact(32);
        for b in &mut blocks {
            let mut v = 0u128;
            for (q, w) in b.chunks_exact(4).enumerate() {
                let w = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                v += u128::from(w) * u128::from(self.block[8 - q]);
            }
            acc = add(mul(acc, self.block[8]), reduce(v));
        }
        self.finish(acc, blocks.remainder(), bytes.len() / 32 * 8)
    }

    /// The digest by the definition's Horner rule, one word at a time (the reference).
    pub fn digest_by_words(&self, bytes: &[u8]) -> u64 {
        self.finish(0, bytes, 0)
    }

    /// Continues Horner's rule from `acc` (over `done` words) with the words of `bytes`, then
    /// pads with zero words to the chunk boundary.
    fn finish(&self, mut acc: u64, bytes: &[u8], done: usize) -> u64 {
        let mut words = bytes.chunks_exact(4);
        for w in &mut words {
            let w = u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
            acc = mul(add(acc, w), self.r);
        }
        let tail = words.remainder();
        let mut n = done + bytes.len() / 4;
        if !tail.is_empty() {
            let mut last = [0u8; 4];
            last[..tail.len()].copy_from_slice(tail);
            acc = mul(add(acc, u64::from(u32::from_le_bytes(last))), self.r);
            n += 1;
        }
        // Zero words up to the chunk boundary only multiply by r.
        let padded = n.div_ceil(CHUNK_WORDS).max(1) * CHUNK_WORDS;
        mul(acc, self.pow((padded - n) as u64))
    }

    /// r^e mod p.
    pub fn pow(&self, mut e: u64) -> u64 {
        let (mut base, mut acc) = (self.r, 1u64);
        while e > 0 {
            if e & 1 == 1 {
                acc = mul(acc, base);
            }
            base = mul(base, base);
            e >>= 1;
        }
        acc
    }

    /// The powers the GPU kernel needs (see [`PowerTable`]).
    pub fn power_table(&self) -> PowerTable {
        let mut t = [0u64; POWER_TABLE_LEN];
        for (k, v) in t.iter_mut().take(LANE_POWERS).enumerate() {
            *v = self.pow(k as u64);
        }
        let step = self.pow(CHUNK_WORDS as u64);
        let mut p = 1u64;
        for v in t.iter_mut().skip(LANE_POWERS) {
            *v = p;
            p = mul(p, step);
        }
        PowerTable(t)
    }
}

/// r^0 … r^128 (a lane's word weights and the stride between a lane's loads).
pub const LANE_POWERS: usize = 129;
/// Then r^(1024·k) for k = 0 … 255: each chunk's weight within its region.
pub const POWER_TABLE_LEN: usize = LANE_POWERS + REGION_CHUNKS;

/// Powers of the key laid out as cuda/scrub.cu reads them.
pub struct PowerTable(pub [u64; POWER_TABLE_LEN]);

impl PowerTable {
    /// The table as bytes (native order, as the device reads it).
    pub fn as_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|v| v.to_ne_bytes()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's evaluation order, on the CPU: per 4 KiB chunk, 32 lanes each weight their
    /// 4 consecutive words of every 512-byte step by r^(128 − 4·lane − q) and step by r^128
    /// (Horner over the 8 steps); the lanes' sums add to the chunk's value, which is weighted
    /// by r^(1024·(chunks − 1 − c)).
    fn kernel_model(key: &FastKey, bytes: &[u8]) -> u64 {
        let t = key.power_table().0;
        let chunks = bytes.len().div_ceil(CHUNK_BYTES).max(1);
        let word = |i: usize| -> u64 {
            let mut b = [0u8; 4];
            for (k, x) in b.iter_mut().enumerate() {
                *x = bytes.get(4 * i + k).copied().unwrap_or(0);
            }
            u64::from(u32::from_le_bytes(b))
        };
        let mut d = 0u64;
        for c in 0..chunks {
            let mut h = 0u64;
            for lane in 0..32 {
                let mut acc = 0u64;
                for step in 0..8 {
                    let mut v = 0u128;
                    for q in 0..4 {
                        let w = word(c * CHUNK_WORDS + 128 * step + 4 * lane + q);
                        v += u128::from(w) * u128::from(t[128 - 4 * lane - q]);
                    }
                    acc = add(mul(acc, t[128]), reduce(v));
                }
                h = add(h, acc);
            }
            d = add(d, mul(h, t[LANE_POWERS + chunks - 1 - c]));
        }
        d
    }

    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn block_form_equals_word_by_word() {
        let key = FastKey::random().unwrap();
        for n in [0, 1, 31, 32, 33, 4095, 4096, 4097, 70_001] {
            let b = bytes(n, 3 * n as u64);
            assert_eq!(key.digest(&b), key.digest_by_words(&b), "n = {n}");
        }
    }

    #[test]
    fn kernel_order_equals_horner() {
        let key = FastKey::from_point(0x0123_4567_89ab_cdef % P).unwrap();
        for n in [1, 3, 4, 4095, 4096, 4097, 3 * 4096 + 17, 1 << 20] {
            let b = bytes(n, n as u64);
            assert_eq!(kernel_model(&key, &b), key.digest(&b), "n = {n}");
        }
    }

    #[test]
    fn reference_against_big_integers() {
        use num_bigint::BigUint;
        let key = FastKey::from_point(P - 2).unwrap();
        let b = bytes(4096 + 8, 7);
        let p = BigUint::from(P);
        let r = BigUint::from(P - 2);
        let n = 2 * CHUNK_WORDS; // padded word count
        let mut d = BigUint::from(0u32);
        for i in 0..n {
            let mut w = [0u8; 4];
            for (k, x) in w.iter_mut().enumerate() {
                *x = b.get(4 * i + k).copied().unwrap_or(0);
            }
            let e = (n - i) as u32;
            d += BigUint::from(u32::from_le_bytes(w)) * r.modpow(&BigUint::from(e), &p);
        }
        d %= &p;
        assert_eq!(BigUint::from(key.digest(&b)), d);
    }

    /// Every single-bit flip and every burst of 2 to 64 bits (first and last bit flipped, the
    /// bits between random) at every bit position of a 512-byte message changes the digest,
    /// under fixed random-looking keys and a fresh random one. (The guarantee for bursts is over
    /// the random key: a key like r = p − 1 = −1 misses +1 in two neighbouring words, and a
    /// random key is that weak for a given burst with probability ≤ 2 / (p − 1).)
    #[test]
    fn every_single_bit_and_every_burst_up_to_64_bits_is_caught() {
        let msg = bytes(512, 99);
        let mut pattern = 0x9e37_79b9_7f4a_7c15u64;
        let fresh = FastKey::random().unwrap().r;
        for key in [0x0bad_c0de_1234_5679 % P, 0x1f00_dead_beef_0001 % P, fresh] {
            let key = FastKey::from_point(key).unwrap();
            let clean = key.digest(&msg);
            let bits = msg.len() * 8;
            for len in 1..=64usize {
                for start in 0..=bits - len {
                    pattern = pattern.rotate_left(7) ^ 0xa5a5_a5a5_a5a5_a5a5;
                    let mut m = msg.clone();
                    for k in 0..len {
                        let inner = k == 0 || k == len - 1 || (pattern >> (k % 64)) & 1 == 1;
                        if inner {
                            let bit = start + k;
                            m[bit / 8] ^= 1 << (bit % 8);
                        }
                    }
                    assert_ne!(key.digest(&m), clean, "burst of {len} bits at bit {start}");
                }
            }
        }
    }

    #[test]
    fn random_keys_are_in_range_and_differ() {
        let a = FastKey::random().unwrap();
        let b = FastKey::random().unwrap();
        assert!(a.r > 0 && a.r < P);
        assert_ne!(a.r, b.r);
        assert_eq!(format!("{a:?}"), "FastKey(..)");
    }
}
