//! The few CUDA runtime calls the GPU tests and benchmark make themselves (the runtime is
//! linked statically into libvram's rlib, so these resolve without a CUDA toolkit at run time).
#![allow(dead_code)]

use std::ffi::{c_int, c_void};

pub const H2D: c_int = 1;
pub const D2H: c_int = 2;
pub const D2D: c_int = 3;

unsafe extern "C" {
    pub fn cudaMalloc(ptr: *mut *mut c_void, size: usize) -> c_int;
    pub fn cudaFree(ptr: *mut c_void) -> c_int;
    pub fn cudaMallocHost(ptr: *mut *mut c_void, size: usize) -> c_int;
    pub fn cudaFreeHost(ptr: *mut c_void) -> c_int;
    pub fn cudaMallocManaged(ptr: *mut *mut c_void, size: usize, flags: u32) -> c_int;
    pub fn cudaMemcpy(dst: *mut c_void, src: *const c_void, n: usize, kind: c_int) -> c_int;
    pub fn cudaDeviceSynchronize() -> c_int;
    pub fn cudaGetDeviceCount(n: *mut c_int) -> c_int;
    pub fn cudaSetDevice(d: c_int) -> c_int;
    pub fn cudaGetDevice(d: *mut c_int) -> c_int;
    pub fn cudaMemGetInfo(free: *mut usize, total: *mut usize) -> c_int;
    pub fn cudaStreamCreate(s: *mut *mut c_void) -> c_int;
    pub fn cudaStreamDestroy(s: *mut c_void) -> c_int;
    pub fn cudaEventCreate(e: *mut *mut c_void) -> c_int;
    pub fn cudaEventDestroy(e: *mut c_void) -> c_int;
    pub fn cudaEventRecord(e: *mut c_void, s: *mut c_void) -> c_int;
    pub fn cudaEventSynchronize(e: *mut c_void) -> c_int;
    pub fn cudaEventElapsedTime(ms: *mut f32, a: *mut c_void, b: *mut c_void) -> c_int;
}

/// Asserts a CUDA call succeeded.
pub fn ok(code: c_int, what: &str) {
    assert_eq!(code, 0, "{what} failed with CUDA error {code}");
}

pub fn gpus() -> i32 {
    let mut n = 0;
    // SAFETY: writes one int.
    if unsafe { cudaGetDeviceCount(&mut n) } != 0 {
        return 0;
    }
    n
}

/// Device memory freed on drop.
pub struct DevMem(pub *mut u8, pub usize);

impl DevMem {
    pub fn new(size: usize) -> Self {
        let mut p = std::ptr::null_mut();
        // SAFETY: writes one pointer.
        ok(unsafe { cudaMalloc(&mut p, size) }, "cudaMalloc");
        Self(p.cast(), size)
    }

    pub fn upload(&self, offset: usize, data: &[u8]) {
        assert!(offset + data.len() <= self.1);
        // SAFETY: the destination range lies inside this allocation.
        ok(
            unsafe {
                cudaMemcpy(
                    self.0.add(offset).cast(),
                    data.as_ptr().cast(),
                    data.len(),
                    H2D,
                )
            },
            "cudaMemcpy H2D",
        );
    }
}

impl DevMem {
    /// Device memory holding `v`.
    pub fn from_f32(v: &[f32]) -> Self {
        let m = Self::new(v.len() * 4);
        m.upload(
            0,
            &v.iter().flat_map(|x| x.to_ne_bytes()).collect::<Vec<u8>>(),
        );
        m
    }

    /// The first `n` f32 values.
    pub fn f32s(&self, n: usize) -> Vec<f32> {
        download_f32(self.0, n)
    }
}

/// Options of ibp_propagate_ex() for boxes in device memory on `stream` (NULL: libvram's
/// own), with no specification.
pub fn device_options(stream: *mut c_void) -> vram::ibp_propagate_options {
    vram::ibp_propagate_options {
        struct_size: size_of::<vram::ibp_propagate_options>() as u32,
        memory: vram::ibp_memory::IBP_MEMORY_DEVICE as u32,
        stream,
        spec_rows: 0,
        spec_c: std::ptr::null(),
        spec_d: std::ptr::null(),
        flags: 0,
    }
}

/// `n` f32 values copied from device memory at `src`.
pub fn download_f32(src: *const u8, n: usize) -> Vec<f32> {
    let mut b = vec![0u8; n * 4];
    // SAFETY: the caller's `src` holds n floats of device memory; `b` holds n * 4 bytes.
    ok(
        unsafe { cudaMemcpy(b.as_mut_ptr().cast(), src.cast(), b.len(), D2H) },
        "cudaMemcpy D2H",
    );
    b.chunks_exact(4)
        .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl Drop for DevMem {
    fn drop(&mut self) {
        // SAFETY: allocated by cudaMalloc, freed once.
        unsafe { cudaFree(self.0.cast()) };
    }
}
