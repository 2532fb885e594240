//! Helpers for tests that drive libvram through its C ABI, as a C caller would.
#![allow(dead_code)]

use std::ffi::CString;
use std::ptr;

use vram::*;

/// The source tree: `VRAM_SOURCE_DIR` when the test binaries run away from the checkout they
/// were built in (the GPU machine), else the build's own checkout.
pub fn source_dir() -> std::path::PathBuf {
    std::env::var_os("VRAM_SOURCE_DIR")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

/// The ACAS Xu data beside the project (or under VRAM_ACASXU_DIR), when its ONNX files are
/// there.
pub fn acasxu_onnx_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("VRAM_ACASXU_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| source_dir().join("../shared/data/acasxu"));
    dir.join("onnx").is_dir().then_some(dir)
}

pub const KEY: [u8; 32] = *b"an example seal secret, 32 bytes";
pub const OTHER_KEY: [u8; 32] = *b"another seal secret of 32 bytes!";

pub fn options(backend: vram_backend, key: &[u8]) -> vram_ctx_options {
    vram_ctx_options {
        struct_size: size_of::<vram_ctx_options>() as u32,
        backend: backend as u32,
        device: 0,
        key: key.as_ptr(),
        key_len: key.len(),
        capacity_bytes: 0,
        // The suite exercises the fault drills; tests/hardening.rs checks they are off
        // without this flag.
        flags: VRAM_CTX_ALLOW_FAULT_DRILLS,
        max_threads: 0,
    }
}

/// Bytes a shard of `len` bytes holds against its context's capacity on `backend`: its bytes
/// (whole 4 KiB pages on the host backend) plus the bookkeeping, 512 bytes and 32 per MiB.
pub fn held(backend: vram_backend, len: usize) -> u64 {
    let bytes = match backend {
        vram_backend::VRAM_BACKEND_HOST => len.next_multiple_of(4096),
        _ => len,
    };
    (bytes + 512 + 32 * len.div_ceil(1 << 20)) as u64
}

/// The backend the test suite runs on: `VRAM_TEST_BACKEND=cuda` on the GPU machine, else host.
pub fn test_backend() -> vram_backend {
    match std::env::var("VRAM_TEST_BACKEND").as_deref() {
        Ok("cuda") => vram_backend::VRAM_BACKEND_CUDA,
        _ => vram_backend::VRAM_BACKEND_HOST,
    }
}

/// A host-backend context, even where the suite runs on the CUDA backend (what runs on the CPU
/// over host-sealed weights: linear bounds, the certify search).
/// A context on the CUDA backend where the suite runs on it (the GPU staging), else a visible
/// skip of `what` on the GPU (CI).
pub fn gpu_ctx(what: &str) -> Option<Ctx> {
    if test_backend() == vram_backend::VRAM_BACKEND_CUDA {
        Some(Ctx::new())
    } else {
        println!("SKIPPED {what} on the GPU: the suite runs on the host backend here");
        None
    }
}

pub fn host_ctx() -> Ctx {
    Ctx::with_options(&options(vram_backend::VRAM_BACKEND_HOST, &KEY))
}

/// An owned context, freed on drop.
pub struct Ctx(pub *mut vram_ctx);
// SAFETY: a vram_ctx is documented as safe to use from many threads at once.
unsafe impl Send for Ctx {}
// SAFETY: as above.
unsafe impl Sync for Ctx {}

impl Ctx {
    pub fn new() -> Self {
        Self::with_key(&KEY)
    }

    pub fn with_key(key: &[u8]) -> Self {
        Self::with_options(&options(test_backend(), key))
    }

    pub fn with_options(opts: &vram_ctx_options) -> Self {
        let mut ctx = ptr::null_mut();
        let s = vram_ctx_new(opts, &mut ctx);
        assert_eq!(s, vram_status::VRAM_OK, "vram_ctx_new: {}", last_error());
        Ctx(ctx)
    }

    pub fn used(&self) -> u64 {
        let mut used = u64::MAX;
        assert_eq!(
            vram_ctx_usage(self.0, &mut used, ptr::null_mut()),
            vram_status::VRAM_OK
        );
        used
    }

    pub fn seal(&self, id: &str, data: &[u8]) -> Shard {
        self.try_seal(id, data)
            .unwrap_or_else(|s| panic!("vram_seal({id}): {s:?}: {}", last_error()))
    }

    pub fn try_seal(&self, id: &str, data: &[u8]) -> Result<Shard, vram_status> {
        let id = CString::new(id).unwrap();
        let mut out = ptr::null_mut();
        match vram_seal(
            self.0,
            id.as_ptr(),
            data.as_ptr().cast(),
            data.len(),
            &mut out,
        ) {
            vram_status::VRAM_OK => Ok(Shard(out)),
            s => {
                assert!(out.is_null(), "output written on failure");
                Err(s)
            }
        }
    }

    pub fn verify(&self, shard: &Shard) -> (vram_status, vram_verify_report) {
        let mut r = vram_verify_report::default();
        let s = vram_verify(self.0, shard.0, &mut r);
        (s, r)
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        vram_ctx_free(self.0);
    }
}

/// An owned shard, freed on drop.
pub struct Shard(pub *mut vram_shard);
// SAFETY: shards are documented as immutable and shareable between threads.
unsafe impl Send for Shard {}
// SAFETY: as above.
unsafe impl Sync for Shard {}

impl Shard {
    pub fn record(&self) -> Vec<u8> {
        let mut n = 0usize;
        assert_eq!(
            vram_shard_record(self.0, ptr::null_mut(), 0, &mut n),
            vram_status::VRAM_ERR_BUFFER_TOO_SMALL
        );
        let mut buf = vec![0u8; n];
        let mut m = 0usize;
        assert_eq!(
            vram_shard_record(self.0, buf.as_mut_ptr(), buf.len(), &mut m),
            vram_status::VRAM_OK
        );
        assert_eq!(m, n);
        buf
    }

    pub fn root(&self) -> [u8; 32] {
        let mut r = [0u8; 32];
        assert_eq!(
            vram_shard_root(self.0, r.as_mut_ptr()),
            vram_status::VRAM_OK
        );
        r
    }

    pub fn flip(&self, bit: u64) {
        assert_eq!(vram_debug_flip_bit(self.0, bit), vram_status::VRAM_OK);
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        vram_shard_free(self.0);
    }
}

pub fn last_error() -> String {
    let n = vram_last_error_message(ptr::null_mut(), 0);
    let mut buf = vec![0u8; n + 1];
    let m = vram_last_error_message(buf.as_mut_ptr().cast(), buf.len());
    assert_eq!(m, n);
    buf.truncate(n);
    String::from_utf8(buf).unwrap()
}

/// A seeded xorshift generator: the same numbers every run, so fuzz cases are reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [0, n) (n = 0 is taken as 1).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// An index into something of `n` elements.
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.unit() * scale).collect()
    }
}

/// Deterministic pseudo-random bytes (xorshift), different for each seed.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

/// RFC 9162 root computed independently of libvram's own tree code (recursive definition).
pub fn reference_root(data: &[u8], leaf: usize) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    fn mth(leaves: &[&[u8]]) -> [u8; 32] {
        if leaves.len() == 1 {
            let mut h = Sha256::new();
            h.update([0u8]);
            h.update(leaves[0]);
            return h.finalize().into();
        }
        let mut k = 1;
        while k * 2 < leaves.len() {
            k *= 2;
        }
        let mut h = Sha256::new();
        h.update([1u8]);
        h.update(mth(&leaves[..k]));
        h.update(mth(&leaves[k..]));
        h.finalize().into()
    }
    let leaves: Vec<&[u8]> = data.chunks(leaf).collect();
    mth(&leaves)
}
