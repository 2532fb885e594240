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
    pub fn cudaHostRegister(ptr: *mut c_void, size: usize, flags: u32) -> c_int;
    pub fn cudaHostUnregister(ptr: *mut c_void) -> c_int;
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
    pub fn cudaMallocAsync(ptr: *mut *mut c_void, size: usize, stream: *mut c_void) -> c_int;
    pub fn cudaFreeAsync(ptr: *mut c_void, stream: *mut c_void) -> c_int;
    pub fn cudaStreamSynchronize(stream: *mut c_void) -> c_int;
    pub fn cudaGetDriverEntryPointByVersion(
        symbol: *const std::ffi::c_char,
        func: *mut *mut c_void,
        cuda_version: u32,
        flags: u64,
        status: *mut c_int,
    ) -> c_int;
}

/// The CUDA driver's virtual memory management API, found through the runtime (the tests link
/// no libcuda): a reserved range with `mapped` physical chunks of the minimum granularity
/// mapped back to back at its start, readable and writable by `device`. Unmapped and freed on
/// drop.
pub struct Vmm {
    pub base: u64,
    pub granularity: usize,
    reserved: usize,
    handles: Vec<u64>,
    fns: VmmFns,
}

#[repr(C)]
struct MemLocation {
    kind: c_int,
    id: c_int,
}

#[repr(C)]
struct AllocProp {
    kind: c_int,
    handle_types: c_int,
    location: MemLocation,
    win32: *mut c_void,
    compression: u8,
    rdma: u8,
    usage: u16,
    reserved: [u8; 4],
}

#[repr(C)]
struct AccessDesc {
    location: MemLocation,
    flags: c_int,
}

struct VmmFns {
    granularity: unsafe extern "C" fn(*mut usize, *const AllocProp, c_int) -> c_int,
    create: unsafe extern "C" fn(*mut u64, usize, *const AllocProp, u64) -> c_int,
    reserve: unsafe extern "C" fn(*mut u64, usize, usize, u64, u64) -> c_int,
    map: unsafe extern "C" fn(u64, usize, usize, u64, u64) -> c_int,
    set_access: unsafe extern "C" fn(u64, usize, *const AccessDesc, usize) -> c_int,
    unmap: unsafe extern "C" fn(u64, usize) -> c_int,
    release: unsafe extern "C" fn(u64) -> c_int,
    address_free: unsafe extern "C" fn(u64, usize) -> c_int,
}

/// The driver's function `name` as `F`.
///
/// # Safety
/// `F` must be the function pointer type of the symbol's C signature.
unsafe fn driver_fn<F>(name: &str) -> F {
    assert_eq!(size_of::<F>(), size_of::<*mut c_void>());
    let c = std::ffi::CString::new(name).unwrap();
    let (mut f, mut status) = (std::ptr::null_mut(), 0);
    // SAFETY: looks up a driver symbol; writes a pointer and a status.
    ok(
        unsafe { cudaGetDriverEntryPointByVersion(c.as_ptr(), &mut f, 12000, 0, &mut status) },
        name,
    );
    assert!(
        !f.is_null() && status == 0,
        "driver symbol {name} not found"
    );
    // SAFETY: a non-NULL function address, reinterpreted as the caller's declared type.
    unsafe { std::mem::transmute_copy::<*mut c_void, F>(&f) }
}

impl Vmm {
    pub fn new(device: c_int, mapped: usize, reserved_chunks: usize) -> Self {
        // SAFETY: each pointer is the driver's function of the named symbol, whose C signature
        // the field's type spells out (cuda.h, CUDA 12.0 versions).
        let fns = unsafe {
            VmmFns {
                granularity: driver_fn("cuMemGetAllocationGranularity"),
                create: driver_fn("cuMemCreate"),
                reserve: driver_fn("cuMemAddressReserve"),
                map: driver_fn("cuMemMap"),
                set_access: driver_fn("cuMemSetAccess"),
                unmap: driver_fn("cuMemUnmap"),
                release: driver_fn("cuMemRelease"),
                address_free: driver_fn("cuMemAddressFree"),
            }
        };
        // SAFETY: makes the runtime's primary context current for the driver calls below.
        ok(unsafe { cudaFree(std::ptr::null_mut()) }, "cudaFree(0)");
        let prop = AllocProp {
            kind: 1, // CU_MEM_ALLOCATION_TYPE_PINNED
            handle_types: 0,
            location: MemLocation {
                kind: 1,
                id: device,
            }, // CU_MEM_LOCATION_TYPE_DEVICE
            win32: std::ptr::null_mut(),
            compression: 0,
            rdma: 0,
            usage: 0,
            reserved: [0; 4],
        };
        let mut g = 0usize;
        // SAFETY: driver calls with valid out-pointers and the property above.
        unsafe {
            ok(
                (fns.granularity)(&mut g, &prop, 0),
                "cuMemGetAllocationGranularity",
            );
            let reserved = g * reserved_chunks;
            let mut base = 0u64;
            ok(
                (fns.reserve)(&mut base, reserved, 0, 0, 0),
                "cuMemAddressReserve",
            );
            let mut handles = Vec::new();
            for k in 0..mapped {
                let mut h = 0u64;
                ok((fns.create)(&mut h, g, &prop, 0), "cuMemCreate");
                ok((fns.map)(base + (k * g) as u64, g, 0, h, 0), "cuMemMap");
                handles.push(h);
            }
            let access = AccessDesc {
                location: MemLocation {
                    kind: 1,
                    id: device,
                },
                flags: 3, // CU_MEM_ACCESS_FLAGS_PROT_READWRITE
            };
            ok(
                (fns.set_access)(base, g * mapped, &access, 1),
                "cuMemSetAccess",
            );
            Self {
                base,
                granularity: g,
                reserved,
                handles,
                fns,
            }
        }
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let g = self.granularity;
        // SAFETY: unmaps and frees exactly what `new` mapped and reserved.
        unsafe {
            (self.fns.unmap)(self.base, g * self.handles.len());
            for &h in &self.handles {
                (self.fns.release)(h);
            }
            (self.fns.address_free)(self.base, self.reserved);
        }
    }
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

    pub fn download(&self, offset: usize, out: &mut [u8]) {
        assert!(offset + out.len() <= self.1);
        // SAFETY: the source range lies inside this allocation.
        ok(
            unsafe {
                cudaMemcpy(
                    out.as_mut_ptr().cast(),
                    self.0.add(offset).cast_const().cast(),
                    out.len(),
                    D2H,
                )
            },
            "cudaMemcpy D2H",
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
        method: 0,
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
