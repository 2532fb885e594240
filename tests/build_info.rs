//! Build and run-time honesty: vram_build_info() says what was compiled in and what the
//! machine offers, and VRAM_BACKEND_AUTO warns (vram.backend.fallback) when it falls back to
//! host memory, saying why.

mod common;

use std::ffi::{CStr, c_char, c_void};
use std::ptr;
use std::sync::Mutex;

use common::*;
use vram::*;

static SEEN: Mutex<Vec<(u32, String, String)>> = Mutex::new(Vec::new());

extern "C" fn record(_: *mut c_void, level: u32, target: *const c_char, message: *const c_char) {
    // SAFETY: libvram passes valid NUL-terminated strings for the duration of the call.
    let (t, m) = unsafe { (CStr::from_ptr(target), CStr::from_ptr(message)) };
    SEEN.lock().unwrap().push((
        level,
        t.to_string_lossy().into(),
        m.to_string_lossy().into(),
    ));
}

fn info() -> vram_build_details {
    // SAFETY: an all-zero vram_build_details is valid (NULL pointers, zero numbers).
    let mut i: vram_build_details = unsafe { std::mem::zeroed() };
    i.struct_size = size_of::<vram_build_details>() as u32;
    assert_eq!(vram_build_info(&mut i), vram_status::VRAM_OK);
    i
}

#[test]
fn build_info_and_the_auto_fallback_warning() {
    // Bad input changes nothing.
    assert_eq!(
        vram_build_info(ptr::null_mut()),
        vram_status::VRAM_ERR_NULL_ARGUMENT
    );
    // SAFETY: as above.
    let mut short: vram_build_details = unsafe { std::mem::zeroed() };
    short.struct_size = 8;
    assert_eq!(
        vram_build_info(&mut short),
        vram_status::VRAM_ERR_INVALID_ARGUMENT
    );
    assert!(short.version.is_null(), "written on failure");

    let i = info();
    // SAFETY: static NUL-terminated strings owned by libvram.
    let (version, archs) = unsafe {
        (
            CStr::from_ptr(i.version).to_str().unwrap(),
            CStr::from_ptr(i.cuda_architectures).to_str().unwrap(),
        )
    };
    // SAFETY: as above.
    assert_eq!(
        version,
        unsafe { CStr::from_ptr(vram_version()) }.to_str().unwrap()
    );
    // SAFETY: a NUL-terminated array written by libvram.
    let reason = unsafe { CStr::from_ptr(i.no_gpu_reason.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    println!(
        "vram_build_info: version {version}, CUDA compiled {}, runtime {}, driver {}, GPUs {}, archs '{archs}', no-GPU reason '{reason}'",
        i.cuda_compiled, i.cuda_runtime_version, i.cuda_driver_version, i.gpu_count
    );
    if cfg!(vram_cuda) {
        assert_eq!(i.cuda_compiled, 1);
        assert!(
            i.cuda_runtime_version >= 13000,
            "{}",
            i.cuda_runtime_version
        );
        assert!(archs.contains("sm_90"), "{archs}");
    } else {
        assert_eq!((i.cuda_compiled, i.cuda_runtime_version), (0, 0));
        assert!(archs.is_empty());
    }
    assert_eq!(i.gpu_count, gpus_visible());
    assert_eq!(i.gpu_count == 0, !reason.is_empty(), "reason '{reason}'");

    // AUTO: a warning with that reason exactly when it falls back to host memory.
    vram_set_log_callback(Some(record), ptr::null_mut(), 5);
    let ctx = Ctx::with_options(&options(vram_backend::VRAM_BACKEND_AUTO, &KEY));
    vram_set_log_callback(None, ptr::null_mut(), 0);
    let fallbacks: Vec<_> = SEEN
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, t, _)| t == "vram.backend.fallback")
        .cloned()
        .collect();
    let shard = ctx.seal("probe", &[1, 2, 3]);
    let mut rec = vec![0u8; 4096];
    let mut n = 0;
    assert_eq!(
        vram_shard_record(shard.0, rec.as_mut_ptr(), rec.len(), &mut n),
        vram_status::VRAM_OK
    );
    // SAFETY: an all-zero vram_record_info is valid.
    let mut opened: vram_record_info = unsafe { std::mem::zeroed() };
    opened.struct_size = size_of::<vram_record_info>() as u32;
    assert_eq!(
        vram_record_open(ctx.0, rec.as_ptr(), n, &mut opened),
        vram_status::VRAM_OK
    );
    if i.gpu_count == 0 {
        assert_eq!(fallbacks.len(), 1, "{fallbacks:?}");
        let (level, _, message) = &fallbacks[0];
        assert_eq!(*level, 2, "a warning");
        assert!(message.contains(&reason), "{message}");
        // And every record says where the bytes were.
        assert_eq!(opened.backend, vram_backend::VRAM_BACKEND_HOST as u32);
    } else {
        assert!(fallbacks.is_empty(), "{fallbacks:?}");
        assert_eq!(opened.backend, vram_backend::VRAM_BACKEND_CUDA as u32);
    }
}

/// GPUs the CUDA runtime reports to this process (0 without a CUDA build).
fn gpus_visible() -> i32 {
    #[cfg(vram_cuda)]
    {
        #[path = "common/cuda.rs"]
        mod cuda;
        cuda::gpus()
    }
    #[cfg(not(vram_cuda))]
    {
        0
    }
}
