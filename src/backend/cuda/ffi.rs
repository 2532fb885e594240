//! Declarations of the launchers in cuda/ (see cuda/lvk.h) and the mapping of their CUDA
//! error codes to libvram errors. Private to the CUDA backend: everything else reaches the
//! kernels through [`super::launch`] and the runtime through [`super::runtime`].

use std::ffi::{c_char, c_int, c_void};

use crate::error::{ErrorKind, Result, VramError};

pub const PTR_DEVICE: c_int = 2;
pub const PTR_MANAGED: c_int = 3;
pub const PTR_HOST: c_int = 1;
pub const RANGE_OK: c_int = 0;
pub const RANGE_PAST_END: c_int = 1;
pub const RANGE_FOREIGN: c_int = 2;
/// `lvk_event_query`: the work before the event is still running (cudaErrorNotReady).
pub const NOT_READY: c_int = 600;

/// One shard of a Merkle batch (mirrors `lvk_job`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LvkJob {
    pub data: *const u8,
    pub len: u64,
    pub first_region: u64,
    pub leaf_size: u32,
    pub region_leaves: u32,
}

/// One layer of a dense chain for the linear-bounds kernel (mirrors `lvk_crown_layer`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LvkCrownLayer {
    pub w: *const f32,
    pub bias: *const f32,
    pub gamma: f64,
    pub in_f: u32,
    pub out_f: u32,
    pub relu: u32,
    pub offset: u32,
    pub colmax_at: u32,
    pub reserved: u32,
}

/// Node bounds kept on the device between linear-bounds calls (mirrors `lvk_crown_store`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LvkCrownStore {
    pub nodes: *mut f64,
    pub slots: u32,
    pub total_out: u32,
    pub outer_slot: *const u32,
    pub self_slot: *const u32,
}

unsafe extern "C" {
    pub fn lvk_device_count(count: *mut c_int) -> c_int;
    pub fn lvk_get_device(device: *mut c_int) -> c_int;
    pub fn lvk_set_device(device: c_int) -> c_int;
    pub fn lvk_mem_info(free: *mut usize, total: *mut usize) -> c_int;
    pub fn lvk_pointer_kind(ptr: *const c_void, kind: *mut c_int, device: *mut c_int) -> c_int;
    pub fn lvk_device_range(
        ptr: *const c_void,
        len: usize,
        device: c_int,
        verdict: *mut c_int,
        valid: *mut usize,
    ) -> c_int;
    pub fn lvk_error_string(code: c_int) -> *const c_char;
    pub fn lvk_stream_create(stream: *mut *mut c_void) -> c_int;
    pub fn lvk_stream_destroy(stream: *mut c_void) -> c_int;
    pub fn lvk_stream_sync(stream: *mut c_void) -> c_int;
    pub fn lvk_versions(runtime: *mut c_int, driver: *mut c_int) -> c_int;
    pub fn lvk_event_create(event: *mut *mut c_void) -> c_int;
    pub fn lvk_event_destroy(event: *mut c_void) -> c_int;
    pub fn lvk_event_record(event: *mut c_void, stream: *mut c_void) -> c_int;
    pub fn lvk_event_sync(event: *mut c_void) -> c_int;
    pub fn lvk_event_query(event: *mut c_void) -> c_int;
    pub fn lvk_malloc_async(ptr: *mut *mut c_void, size: usize, stream: *mut c_void) -> c_int;
    pub fn lvk_scratch_malloc_async(
        ptr: *mut *mut c_void,
        size: usize,
        stream: *mut c_void,
    ) -> c_int;
    pub fn lvk_free_async(ptr: *mut c_void, stream: *mut c_void) -> c_int;
    pub fn lvk_host_alloc(ptr: *mut *mut c_void, size: usize) -> c_int;
    pub fn lvk_host_free(ptr: *mut c_void) -> c_int;
    pub fn lvk_memcpy_h2d_async(
        dst: *mut c_void,
        src: *const c_void,
        n: usize,
        stream: *mut c_void,
    ) -> c_int;
    pub fn lvk_memcpy_d2h_async(
        dst: *mut c_void,
        src: *const c_void,
        n: usize,
        stream: *mut c_void,
    ) -> c_int;
    pub fn lvk_stream_after(
        waiter: *mut c_void,
        signaller: *mut c_void,
        event: *mut c_void,
    ) -> c_int;
    pub fn lvk_flip_byte(ptr: *mut c_void, offset: u64, mask: u8, stream: *mut c_void) -> c_int;
    pub fn lvk_ibp_to_f64(
        lo: *const f32,
        hi: *const f32,
        dlo: *mut f64,
        dhi: *mut f64,
        n: u64,
        first_bad: *mut u64,
        stream: *mut c_void,
    ) -> c_int;
    pub fn lvk_ibp_to_f32(
        dlo: *const f64,
        dhi: *const f64,
        lo: *mut f32,
        hi: *mut f32,
        n: u64,
        guard: *const u64,
        flag_out: *mut u64,
        stream: *mut c_void,
    ) -> c_int;
    pub fn lvk_ibp_normalize(
        params: *const f64,
        n: u32,
        total: u64,
        lo: *const f64,
        hi: *const f64,
        olo: *mut f64,
        ohi: *mut f64,
        stream: *mut c_void,
    ) -> c_int;
    pub fn lvk_ibp_activation(
        kind: c_int,
        alpha: f64,
        n: u64,
        lo: *const f64,
        hi: *const f64,
        olo: *mut f64,
        ohi: *mut f64,
        stream: *mut c_void,
    ) -> c_int;
    pub fn lvk_ibp_add(
        n: u64,
        alo: *const f64,
        ahi: *const f64,
        blo: *const f64,
        bhi: *const f64,
        olo: *mut f64,
        ohi: *mut f64,
        stream: *mut c_void,
    ) -> c_int;
    pub fn lvk_ibp_conv2d(
        w: *const f32,
        bias: *const f32,
        shape: *const u32,
        batch: u32,
        lo: *const f64,
        hi: *const f64,
        olo: *mut f64,
        ohi: *mut f64,
        relu: c_int,
        tensor_cores: c_int,
        stream: *mut c_void,
    ) -> c_int;
    pub fn lvk_ibp_pool(
        is_max: c_int,
        shape: *const u32,
        batch: u32,
        lo: *const f64,
        hi: *const f64,
        olo: *mut f64,
        ohi: *mut f64,
        stream: *mut c_void,
    ) -> c_int;
    pub fn lvk_ibp_batchnorm(
        params: *const f32,
        eps: f64,
        channels: u32,
        per_channel: u32,
        batch: u32,
        lo: *const f64,
        hi: *const f64,
        olo: *mut f64,
        ohi: *mut f64,
        stream: *mut c_void,
    ) -> c_int;
    pub fn lvk_ibp_linear(
        w: *const f32,
        bias: *const f32,
        in_f: u32,
        out_f: u32,
        batch: u32,
        lo: *const f64,
        hi: *const f64,
        olo: *mut f64,
        ohi: *mut f64,
        relu: c_int,
        tensor_cores: c_int,
        stream: *mut c_void,
    ) -> c_int;
    pub fn lvk_region_roots(
        jobs: *const LvkJob,
        n_jobs: u32,
        total_regions: u64,
        max_region_leaves: u32,
        roots: *mut u8,
        stream: *mut c_void,
    ) -> c_int;
    pub fn lvk_fast_digests(
        jobs: *const LvkJob,
        n_jobs: u32,
        total_regions: u64,
        powers: *const u64,
        digests: *mut u64,
        blocks: u32,
        stream: *mut c_void,
    ) -> c_int;
    pub fn lvk_sm_count(count: *mut c_int) -> c_int;
    pub fn lvk_crown_rows_per_pass(
        n_layers: u32,
        n_in: u32,
        width: u32,
        total_out: u32,
        textbook: u32,
        rp: *mut u32,
        smem: *mut usize,
    ) -> c_int;
    pub fn lvk_crown_colmax(
        layers: *const LvkCrownLayer,
        n_layers: u32,
        width: u32,
        colmax: *mut f64,
        stream: *mut c_void,
    ) -> c_int;
    pub fn lvk_crown_bounds(
        layers: *const LvkCrownLayer,
        n_layers: u32,
        n_in: u32,
        width: u32,
        total_out: u32,
        rp: u32,
        smem: usize,
        colmax: *const f64,
        batch: u32,
        lo: *const f64,
        hi: *const f64,
        rows: *const f64,
        n_rows: u32,
        lower: *mut f64,
        out_lo: *mut f64,
        out_hi: *mut f64,
        coeffs: *mut f64,
        offsets: *mut f64,
        store: *const LvkCrownStore,
        relaxation: u32,
        guard: *mut f64,
        guard_boxes: u32,
        stream: *mut c_void,
    ) -> c_int;
    pub fn lvk_crown_guard_bytes(total_out: u32, width: u32) -> usize;
    pub fn lvk_crown_narrow(
        box_lo: *const f64,
        box_hi: *const f64,
        n_in: u32,
        lower: *const f64,
        lower2: *const f64,
        d: *const f64,
        rows: u32,
        batch: u64,
        ibp_lo: *const f32,
        ibp_hi: *const f32,
        out_lo: *mut f32,
        out_hi: *mut f32,
        stream: *mut c_void,
    ) -> c_int;
}

/// `cudaErrorMemoryAllocation`
const ERR_MEMORY_ALLOCATION: c_int = 2;
/// `cudaErrorStubLibrary`, `cudaErrorInsufficientDriver`, `cudaErrorNoDevice`: no usable GPU.
const ERR_NO_GPU: [c_int; 3] = [34, 35, 100];

/// Turns a CUDA status into a result; `what` names the operation for the message.
pub fn check(code: c_int, what: &str) -> Result<()> {
    if code == 0 {
        return Ok(());
    }
    // SAFETY: lvk_error_string returns a static NUL-terminated string for any code.
    let text = unsafe { std::ffi::CStr::from_ptr(lvk_error_string(code)) }.to_string_lossy();
    let kind = if code == ERR_MEMORY_ALLOCATION {
        ErrorKind::OutOfMemory
    } else if ERR_NO_GPU.contains(&code) {
        ErrorKind::NoDevice
    } else {
        ErrorKind::Device
    };
    Err(VramError::new(
        kind,
        format!("{what}: CUDA error {code} ({text})"),
    ))
}
