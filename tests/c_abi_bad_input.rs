//! Every bad input is refused with the right status and a message naming the argument, and
//! changes nothing: no output written, nothing left allocated.

mod common;

use std::ffi::c_char;
use std::ptr;

use common::*;
use vram::*;

fn expect(s: vram_status, want: vram_status, arg: &str) {
    assert_eq!(s, want, "{}", last_error());
    let msg = last_error();
    assert!(msg.contains(arg), "message {msg:?} should name {arg:?}");
}

#[test]
fn ctx_new_rejects_bad_options() {
    let sentinel = 0x5a5a as *mut vram_ctx;
    let mut out = sentinel;
    let good = options(vram_backend::VRAM_BACKEND_HOST, &KEY);

    expect(
        vram_ctx_new(ptr::null(), &mut out),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "opts",
    );
    expect(
        vram_ctx_new(&good, ptr::null_mut()),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "out",
    );

    let mut o = good;
    o.struct_size -= 4; // neither this version's size nor an earlier one's
    expect(
        vram_ctx_new(&o, &mut out),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "struct_size",
    );
    o = good;
    o.struct_size = 0;
    expect(
        vram_ctx_new(&o, &mut out),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "struct_size",
    );
    o = good;
    o.backend = 3;
    expect(
        vram_ctx_new(&o, &mut out),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "opts->backend",
    );
    o = good;
    o.key_len = 31;
    expect(
        vram_ctx_new(&o, &mut out),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "key",
    );
    o = good;
    o.key_len = 0;
    expect(
        vram_ctx_new(&o, &mut out),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "key",
    );
    o = good;
    o.key = ptr::null();
    expect(
        vram_ctx_new(&o, &mut out),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "opts->key",
    );
    assert_eq!(out, sentinel, "no output on failure");
}

#[test]
fn seal_rejects_bad_arguments_and_changes_nothing() {
    let ctx = Ctx::new();
    let data = bytes(100, 1);
    let sentinel = 0x77 as *mut vram_shard;
    let mut out = sentinel;
    let p = data.as_ptr().cast();
    let id = c"model.layers.0.mlp.up_proj.weight".as_ptr();

    expect(
        vram_seal(ptr::null_mut(), id, p, 100, &mut out),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "ctx",
    );
    expect(
        vram_seal(ctx.0, ptr::null(), p, 100, &mut out),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "shard_id",
    );
    expect(
        vram_seal(ctx.0, id, ptr::null(), 100, &mut out),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "data",
    );
    expect(
        vram_seal(ctx.0, id, p, 0, &mut out),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "data",
    );
    expect(
        vram_seal(ctx.0, id, p, 100, ptr::null_mut()),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "out",
    );

    let long = format!("{}\0", "a".repeat(257));
    let bad_ids: [(&[u8], &str); 10] = [
        (b"\0", "empty"),
        (long.as_bytes(), "limit"),
        (b"\xff\xfeweights\0", "UTF-8"),
        (b"a\nb\0", "control"),
        (b"a\x7fb\0", "control"),
        (b"/etc/passwd\0", "starts with '/'"),
        (b"../secret\0", ".."),
        (b"a/../../b\0", ".."),
        (b"layers/..\0", ".."),
        (b"tab\there\0", "control"),
    ];
    for (bad, why) in bad_ids {
        let s = vram_seal(ctx.0, bad.as_ptr().cast::<c_char>(), p, 100, &mut out);
        assert_eq!(s, vram_status::VRAM_ERR_INVALID_ARGUMENT, "{bad:?}");
        let msg = last_error();
        assert!(msg.contains("shard_id") && msg.contains(why), "{msg}");
    }
    let opts = vram_seal_options {
        struct_size: size_of::<vram_seal_options>() as u32,
        leaf_size: 3000,
    };
    expect(
        vram_seal_ex(ctx.0, id, p, 100, &opts, &mut out),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "leaf_size",
    );
    let opts = vram_seal_options {
        struct_size: 4,
        leaf_size: 4096,
    };
    expect(
        vram_seal_ex(ctx.0, id, p, 100, &opts, &mut out),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "struct_size",
    );
    expect(
        vram_seal_ex(ctx.0, id, p, 100, ptr::null(), &mut out),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "opts",
    );

    assert_eq!(out, sentinel, "no output on failure");
    assert_eq!(ctx.used(), 0, "nothing allocated");
}

#[test]
fn shard_functions_reject_null_and_out_of_range() {
    let ctx = Ctx::new();
    let shard = ctx.seal("s", &bytes(10, 1));
    let mut r = vram_verify_report {
        status: 99,
        ..Default::default()
    };
    expect(
        vram_verify(ptr::null_mut(), shard.0, &mut r),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "ctx",
    );
    expect(
        vram_verify(ctx.0, ptr::null(), &mut r),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "shard",
    );
    assert_eq!(r.status, 99, "report untouched");
    assert_eq!(
        vram_verify(ctx.0, shard.0, ptr::null_mut()),
        vram_status::VRAM_OK,
        "report is nullable"
    );

    let mut root = [0u8; 32];
    expect(
        vram_shard_root(ptr::null(), root.as_mut_ptr()),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "shard",
    );
    expect(
        vram_shard_root(shard.0, ptr::null_mut()),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "out_root",
    );
    assert_eq!(vram_shard_len(ptr::null()), 0);
    assert!(vram_shard_device_ptr(ptr::null()).is_null());

    let mut n = 0usize;
    expect(
        vram_shard_record(shard.0, ptr::null_mut(), 0, ptr::null_mut()),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "out_len",
    );
    let mut small = [0u8; 10];
    expect(
        vram_shard_record(shard.0, small.as_mut_ptr(), 10, &mut n),
        vram_status::VRAM_ERR_BUFFER_TOO_SMALL,
        "buf",
    );
    assert_eq!(n, shard.record().len(), "size needed is reported");
    assert_eq!(small, [0u8; 10], "nothing written to a small buffer");

    let rec = shard.record();
    expect(
        vram_record_verify(ctx.0, ptr::null(), 10, shard.0),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "record",
    );
    expect(
        vram_record_verify(ctx.0, rec.as_ptr(), 0, shard.0),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "record",
    );
    expect(
        vram_record_verify(ctx.0, rec.as_ptr(), rec.len(), ptr::null()),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "shard",
    );
    expect(
        vram_record_verify(ptr::null_mut(), rec.as_ptr(), rec.len(), shard.0),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "ctx",
    );

    expect(
        vram_debug_flip_bit(shard.0, 80),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "bit_index",
    );
    expect(
        vram_debug_flip_bit(shard.0, u64::MAX),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "bit_index",
    );
    expect(
        vram_debug_flip_bit(ptr::null_mut(), 0),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "shard",
    );
    assert_eq!(
        ctx.verify(&shard).0,
        vram_status::VRAM_OK,
        "rejected drills changed nothing"
    );

    expect(
        vram_ctx_usage(ptr::null(), ptr::null_mut(), ptr::null_mut()),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "ctx",
    );
    assert_eq!(
        vram_ctx_backend(ptr::null()),
        vram_backend::VRAM_BACKEND_AUTO as u32
    );
}

#[test]
fn free_functions_accept_null() {
    vram_ctx_free(ptr::null_mut());
    vram_shard_free(ptr::null_mut());
}

#[test]
fn status_strings_and_last_error_buffer() {
    for code in 0..=11u32 {
        // SAFETY: vram_status_str returns a static NUL-terminated string.
        let s = unsafe { std::ffi::CStr::from_ptr(vram_status_str(code)) }
            .to_str()
            .unwrap();
        assert!(s.starts_with("VRAM_"), "{s}");
    }
    // SAFETY: as above.
    let unknown = unsafe { std::ffi::CStr::from_ptr(vram_status_str(1000)) };
    assert_eq!(unknown.to_str().unwrap(), "unknown status");

    let mut out = ptr::null_mut();
    assert_eq!(
        vram_ctx_new(ptr::null(), &mut out),
        vram_status::VRAM_ERR_NULL_ARGUMENT
    );
    let full = vram_last_error_message(ptr::null_mut(), 0);
    assert!(full > 5);
    let mut buf = [0x55u8; 6];
    assert_eq!(
        vram_last_error_message(buf.as_mut_ptr().cast(), buf.len()),
        full
    );
    assert_eq!(buf[5], 0, "always NUL-terminated");
    assert_eq!(&buf[..5], &last_error().as_bytes()[..5]);
}

#[test]
fn last_error_is_per_thread() {
    let mut out = ptr::null_mut();
    assert_eq!(
        vram_ctx_new(ptr::null(), &mut out),
        vram_status::VRAM_ERR_NULL_ARGUMENT
    );
    let here = last_error();
    let there = std::thread::spawn(last_error).join().unwrap();
    assert!(here.contains("opts"));
    assert_eq!(there, "");
}

#[test]
fn cuda_without_gpu_is_no_device_and_auto_is_host() {
    if test_backend() == vram_backend::VRAM_BACKEND_CUDA {
        return; // The GPU machine has a device; this is the CPU-only contract.
    }
    let mut out = ptr::null_mut();
    let o = options(vram_backend::VRAM_BACKEND_CUDA, &KEY);
    expect(
        vram_ctx_new(&o, &mut out),
        vram_status::VRAM_ERR_NO_DEVICE,
        "CUDA",
    );
    assert!(out.is_null());
    let auto = Ctx::with_options(&options(vram_backend::VRAM_BACKEND_AUTO, &KEY));
    assert_eq!(
        vram_ctx_backend(auto.0),
        vram_backend::VRAM_BACKEND_HOST as u32
    );
}

#[test]
fn version_matches_cargo_and_header() {
    // SAFETY: vram_version returns a static NUL-terminated string.
    let v = unsafe { std::ffi::CStr::from_ptr(vram_version()) }
        .to_str()
        .unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
    let header =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/vram.h")).unwrap();
    for (name, value) in [
        ("MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        assert!(
            header.contains(&format!("#define VRAM_VERSION_{name} {value}\n")),
            "{name}"
        );
    }
}
