//! What a hostile caller or file can send, through the C ABI: each case returns its documented
//! status with a message naming the parameter, leaves vram_ctx_usage() as it was, and never
//! aborts, hangs or returns VRAM_ERR_PANIC.

mod common;

use std::ffi::{CString, c_char};
use std::ptr;
use std::time::{Duration, Instant};

use common::*;
use vram::*;

fn expect(s: vram_status, want: vram_status, arg: &str) {
    assert_eq!(s, want, "{}", last_error());
    let msg = last_error();
    assert!(msg.contains(arg), "message {msg:?} should name {arg:?}");
}

fn host_ctx(flags: u32) -> Ctx {
    let mut o = options(vram_backend::VRAM_BACKEND_HOST, &KEY);
    o.flags = flags;
    Ctx::with_options(&o)
}

fn builder(ctx: &Ctx, name: &str, shape: &[u64]) -> *mut ibp_builder {
    let name = CString::new(name).unwrap();
    let mut b = ptr::null_mut();
    assert_eq!(
        ibp_builder_new(ctx.0, name.as_ptr(), shape.as_ptr(), shape.len(), &mut b),
        vram_status::VRAM_OK,
        "{}",
        last_error()
    );
    b
}

#[test]
fn fault_drills_are_off_unless_the_context_allows_them() {
    let ctx = host_ctx(0);
    let data = bytes(3 * 4096, 5);
    let shard = ctx.seal("w", &data);
    let root = shard.root();
    expect(
        vram_debug_flip_bit(shard.0, 17),
        vram_status::VRAM_ERR_POLICY,
        "VRAM_CTX_ALLOW_FAULT_DRILLS",
    );
    assert_eq!(ctx.verify(&shard).0, vram_status::VRAM_OK);
    assert_eq!(shard.root(), root);

    let b = builder(&ctx, "net", &[2]);
    let w = [1.0f32, 2.0, 3.0, 4.0];
    assert_eq!(
        ibp_builder_add_linear(b, IBP_PREV, 2, w.as_ptr(), ptr::null(), ptr::null_mut()),
        vram_status::VRAM_OK
    );
    let mut m = ptr::null_mut();
    assert_eq!(ibp_builder_build(b, &mut m), vram_status::VRAM_OK);
    expect(
        ibp_model_debug_flip_bit(m, 1, 3),
        vram_status::VRAM_ERR_POLICY,
        "fault drills are disabled",
    );
    assert_eq!(
        ibp_model_verify(ctx.0, m, ptr::null_mut()),
        vram_status::VRAM_OK
    );
    ibp_model_free(m);

    // With the flag the drill works, and a bit past the end is refused.
    let drills = host_ctx(VRAM_CTX_ALLOW_FAULT_DRILLS);
    let s = drills.seal("w", &data);
    s.flip(17);
    assert_eq!(drills.verify(&s).0, vram_status::VRAM_ERR_INTEGRITY);
    s.flip(17);
    assert_eq!(drills.verify(&s).0, vram_status::VRAM_OK);
    expect(
        vram_debug_flip_bit(s.0, 8 * data.len() as u64),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "bit_index",
    );
}

#[test]
fn context_options_accept_the_earlier_size_and_refuse_unknown_flags() {
    let mut o = options(vram_backend::VRAM_BACKEND_HOST, &KEY);
    o.struct_size = std::mem::offset_of!(vram_ctx_options, flags) as u32;
    o.flags = VRAM_CTX_ALLOW_FAULT_DRILLS; // beyond the earlier struct: never read
    let ctx = Ctx::with_options(&o);
    let s = ctx.seal("x", b"abc");
    expect(
        vram_debug_flip_bit(s.0, 0),
        vram_status::VRAM_ERR_POLICY,
        "fault drills",
    );

    let mut o = options(vram_backend::VRAM_BACKEND_HOST, &KEY);
    o.flags = 0x80;
    let mut out = 0x5a5a as *mut vram_ctx;
    expect(
        vram_ctx_new(&o, &mut out),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "opts->flags",
    );
    assert_eq!(out as usize, 0x5a5a);
}

#[test]
fn a_live_shard_id_cannot_be_sealed_twice() {
    let ctx = Ctx::new();
    let a = ctx.seal("model.embed.weight", b"first bytes");
    let used = ctx.used();
    assert_eq!(
        ctx.try_seal("model.embed.weight", b"second bytes").err(),
        Some(vram_status::VRAM_ERR_INVALID_ARGUMENT)
    );
    assert!(last_error().contains("already sealed"), "{}", last_error());
    assert_eq!(ctx.used(), used);
    drop(a);
    let _again = ctx.seal("model.embed.weight", b"second bytes");
    // Another context keeps its own ids.
    let other = Ctx::new();
    let _b = other.seal("model.embed.weight", b"x");
}

#[test]
fn ids_that_could_spoof_a_log_line_are_refused() {
    let ctx = Ctx::new();
    for id in [
        "model.\u{202E}thgiew",
        "a\u{200B}b",
        "\u{FEFF}w",
        "a\u{2028}b",
        "a\u{2066}b\u{2069}",
        "w\u{00A0}x",
    ] {
        assert_eq!(
            ctx.try_seal(id, b"x").err(),
            Some(vram_status::VRAM_ERR_INVALID_ARGUMENT),
            "{id:?}"
        );
        assert!(last_error().contains("shard_id"), "{}", last_error());
    }
    assert_eq!(ctx.used(), 0);
}

#[test]
fn every_failed_seal_and_builder_call_leaves_usage_unchanged() {
    let mut o = options(vram_backend::VRAM_BACKEND_HOST, &KEY);
    o.capacity_bytes = 64 << 10;
    let ctx = Ctx::with_options(&o);
    let keep = ctx.seal("keep", &bytes(5000, 1));
    let base = ctx.used();
    let same = |what: &str| assert_eq!(ctx.used(), base, "usage changed by {what}");

    // Seal paths.
    let _ = ctx.try_seal("over", &bytes(70 << 10, 2));
    same("a seal over capacity");
    let _ = ctx.try_seal("", b"x");
    same("an empty id");
    let _ = ctx.try_seal("keep", b"x");
    same("a live id");
    let mut out = ptr::null_mut();
    let id = c"e";
    assert_eq!(
        vram_seal(ctx.0, id.as_ptr(), b"x".as_ptr().cast(), 0, &mut out),
        vram_status::VRAM_ERR_INVALID_ARGUMENT
    );
    same("len 0");
    let bad_leaf = vram_seal_options {
        struct_size: size_of::<vram_seal_options>() as u32,
        leaf_size: 1000,
    };
    assert_eq!(
        vram_seal_ex(
            ctx.0,
            id.as_ptr(),
            b"x".as_ptr().cast(),
            1,
            &bad_leaf,
            &mut out
        ),
        vram_status::VRAM_ERR_INVALID_ARGUMENT
    );
    same("a bad leaf size");

    // Builder paths: each failure after a weight could have been sealed.
    let b = builder(&ctx, "net", &[2, 4, 4]);
    let before = ctx.used();
    let conv = |out_channels: u64, k: u64, pad: u64| ibp_conv2d_params {
        struct_size: size_of::<ibp_conv2d_params>() as u32,
        out_channels,
        kernel_h: k,
        kernel_w: k,
        stride_h: 1,
        stride_w: 1,
        pad_h: pad,
        pad_w: pad,
        dilation_h: 1,
        dilation_w: 1,
        groups: 1,
    };
    let w = vec![0.5f32; 1 << 16];
    for _ in 0..200 {
        // Output too big (4096 channels × 4096² pixels): refused before any weight is read.
        let p = conv(4096, 1, 2046);
        expect(
            ibp_builder_add_conv2d(b, IBP_PREV, &p, w.as_ptr(), ptr::null(), ptr::null_mut()),
            vram_status::VRAM_ERR_INVALID_ARGUMENT,
            "output shape",
        );
    }
    assert_eq!(ctx.used(), before, "failed conv2d adds leaked capacity");
    // The weight fits the capacity, the bias does not: neither stays.
    let big = vec![0.25f32; 14 << 10];
    let p = conv(1, 1, 0);
    let mut tight = options(vram_backend::VRAM_BACKEND_HOST, &KEY);
    tight.capacity_bytes = 4096 + 512 + 32 + 100;
    let tctx = Ctx::with_options(&tight);
    let tb = builder(&tctx, "tight", &[1024]);
    expect(
        ibp_builder_add_linear(tb, IBP_PREV, 1, big.as_ptr(), big.as_ptr(), ptr::null_mut()),
        vram_status::VRAM_ERR_OUT_OF_MEMORY,
        "capacity",
    );
    assert_eq!(
        tctx.used(),
        0,
        "the weight of a failed linear add stayed counted"
    );
    ibp_builder_free(tb);
    let _ = p;
    // Non-finite weights, bad batchnorm, bad pools: all refused with nothing left.
    let nan = [f32::NAN; 2];
    expect(
        ibp_builder_add_batchnorm(
            b,
            IBP_PREV,
            nan.as_ptr(),
            nan.as_ptr(),
            nan.as_ptr(),
            nan.as_ptr(),
            1e-5,
            ptr::null_mut(),
        ),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "gamma",
    );
    let pool = ibp_pool2d_params {
        struct_size: size_of::<ibp_pool2d_params>() as u32,
        kernel_h: 1 << 32,
        kernel_w: 2,
        stride_h: 0,
        stride_w: 0,
        pad_h: 1 << 31,
        pad_w: 0,
    };
    expect(
        ibp_builder_add_maxpool2d(b, IBP_PREV, &pool, ptr::null_mut()),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "params",
    );
    assert_eq!(ctx.used(), before);
    ibp_builder_free(b);
    same("a freed builder");
    drop(keep);
    assert_eq!(ctx.used(), 0);
}

#[test]
fn overflowing_parameters_are_invalid_arguments_not_panics() {
    let ctx = Ctx::new();
    let b = builder(&ctx, "net", &[3, 8, 8]);
    let huge = [1u64 << 63, u64::MAX, 1 << 32, 1 << 31];
    for &v in &huge {
        let pool = ibp_pool2d_params {
            struct_size: size_of::<ibp_pool2d_params>() as u32,
            kernel_h: 2,
            kernel_w: 2,
            stride_h: 0,
            stride_w: 0,
            pad_h: v,
            pad_w: 0,
        };
        expect(
            ibp_builder_add_avgpool2d(b, IBP_PREV, &pool, ptr::null_mut()),
            vram_status::VRAM_ERR_INVALID_ARGUMENT,
            "params",
        );
        let conv = ibp_conv2d_params {
            struct_size: size_of::<ibp_conv2d_params>() as u32,
            out_channels: 1,
            kernel_h: 1,
            kernel_w: 1,
            stride_h: 1,
            stride_w: 1,
            pad_h: 0,
            pad_w: 0,
            dilation_h: v,
            dilation_w: 1,
            groups: 1,
        };
        let w = [1.0f32; 3];
        expect(
            ibp_builder_add_conv2d(b, IBP_PREV, &conv, w.as_ptr(), ptr::null(), ptr::null_mut()),
            vram_status::VRAM_ERR_INVALID_ARGUMENT,
            "dilation",
        );
    }
    ibp_builder_free(b);
}

#[test]
fn huge_pooling_windows_are_refused_and_accepted_ones_run_quickly() {
    let ctx = Ctx::new();
    let b = builder(&ctx, "pool", &[1, 1, 1]);
    let pool = |k: u64, pad: u64| ibp_pool2d_params {
        struct_size: size_of::<ibp_pool2d_params>() as u32,
        kernel_h: k,
        kernel_w: k,
        stride_h: 0,
        stride_w: 0,
        pad_h: pad,
        pad_w: pad,
    };
    // The window that once ran for minutes: refused by the window limit.
    expect(
        ibp_builder_add_avgpool2d(b, IBP_PREV, &pool(100_000, 50_000), ptr::null_mut()),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "kernel",
    );
    // The largest window the limits allow costs 2^24 taps per item: well under a second.
    assert_eq!(
        ibp_builder_add_avgpool2d(b, IBP_PREV, &pool(4096, 2048), ptr::null_mut()),
        vram_status::VRAM_OK,
        "{}",
        last_error()
    );
    let mut m = ptr::null_mut();
    assert_eq!(ibp_builder_build(b, &mut m), vram_status::VRAM_OK);
    let n = ibp_model_output_size(m);
    let (lo, hi) = ([-1.0f32], [1.0f32]);
    let (mut ol, mut oh) = (vec![0f32; n], vec![0f32; n]);
    let t = Instant::now();
    assert_eq!(
        ibp_propagate(
            m,
            1,
            lo.as_ptr(),
            hi.as_ptr(),
            ol.as_mut_ptr(),
            oh.as_mut_ptr()
        ),
        vram_status::VRAM_OK
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(ol.iter().zip(&oh).all(|(l, h)| l <= h));
    ibp_model_free(m);
}

#[test]
fn a_node_too_large_for_memory_is_out_of_memory_not_an_abort() {
    let ctx = Ctx::new();
    // 2^28 elements per item, batch 2^20: 2^48 × 16 bytes of CPU bounds.
    let b = builder(&ctx, "big", &[1 << 28]);
    assert_eq!(
        ibp_builder_add_relu(b, IBP_PREV, ptr::null_mut()),
        vram_status::VRAM_OK
    );
    let mut m = ptr::null_mut();
    assert_eq!(ibp_builder_build(b, &mut m), vram_status::VRAM_OK);
    let batch = 1usize << 20;
    // The boxes are never read: the size check comes first. One float stands for them.
    let x = [0.0f32];
    let mut o = [0.0f32];
    let s = ibp_propagate(
        m,
        batch,
        x.as_ptr(),
        x.as_ptr(),
        o.as_mut_ptr(),
        o.as_mut_ptr(),
    );
    // On a 64-bit host the boxes' own size is representable, so the verdict is OUT_OF_MEMORY.
    assert!(
        s == vram_status::VRAM_ERR_OUT_OF_MEMORY || s == vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "{s:?}: {}",
        last_error()
    );
    ibp_model_free(m);
}

#[test]
fn propagate_can_verify_the_weights_in_the_same_call() {
    let ctx = Ctx::new();
    let b = builder(&ctx, "checked", &[2]);
    let w = [1.0f32, -1.0, 0.5, 2.0];
    assert_eq!(
        ibp_builder_add_linear(b, IBP_PREV, 2, w.as_ptr(), ptr::null(), ptr::null_mut()),
        vram_status::VRAM_OK
    );
    let mut m = ptr::null_mut();
    assert_eq!(ibp_builder_build(b, &mut m), vram_status::VRAM_OK);
    let mut opts = ibp_propagate_options {
        struct_size: size_of::<ibp_propagate_options>() as u32,
        memory: 0,
        stream: ptr::null_mut(),
        spec_rows: 0,
        spec_c: ptr::null(),
        spec_d: ptr::null(),
        flags: IBP_PROPAGATE_VERIFY_WEIGHTS,
        method: 0,
    };
    let (lo, hi) = ([0.0f32, 0.0], [1.0f32, 1.0]);
    let (mut ol, mut oh) = ([7.0f32; 2], [7.0f32; 2]);
    let run = |opts: &ibp_propagate_options, ol: &mut [f32; 2], oh: &mut [f32; 2]| {
        ibp_propagate_ex(
            m,
            1,
            lo.as_ptr(),
            hi.as_ptr(),
            ol.as_mut_ptr(),
            oh.as_mut_ptr(),
            opts,
        )
    };
    assert_eq!(run(&opts, &mut ol, &mut oh), vram_status::VRAM_OK);
    // y0 = x0 − x1 ∈ [−1, 1], y1 = 0.5·x0 + 2·x1 ∈ [0, 2.5], rounded outward.
    for (k, (l, h)) in [(-1.0f32, 1.0f32), (0.0, 2.5)].into_iter().enumerate() {
        assert!(ol[k] <= l && oh[k] >= h && l - ol[k] < 1e-5 && oh[k] - h < 1e-5);
    }
    assert_eq!(ibp_model_debug_flip_bit(m, 1, 30), vram_status::VRAM_OK);
    let (mut ol, mut oh) = ([7.0f32; 2], [7.0f32; 2]);
    expect(
        run(&opts, &mut ol, &mut oh),
        vram_status::VRAM_ERR_INTEGRITY,
        "damaged region",
    );
    assert_eq!((ol, oh), ([7.0; 2], [7.0; 2]), "outputs written on failure");
    // Without the flag the call computes bounds for the weights as they are (documented).
    opts.flags = 0;
    assert_eq!(run(&opts, &mut ol, &mut oh), vram_status::VRAM_OK);
    opts.flags = 2;
    expect(
        run(&opts, &mut ol, &mut oh),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "opts->flags",
    );
    // The earlier struct (without flags) is still accepted.
    opts.struct_size = std::mem::offset_of!(ibp_propagate_options, flags) as u32;
    assert_eq!(run(&opts, &mut ol, &mut oh), vram_status::VRAM_OK);
    ibp_model_free(m);
}

fn load_nnet(ctx: &Ctx, path: &str) -> (vram_status, String) {
    let p = CString::new(path).unwrap();
    let mut m = ptr::null_mut();
    let s = ibp_model_from_nnet(ctx.0, p.as_ptr(), &mut m);
    let msg = last_error();
    if s == vram_status::VRAM_OK {
        ibp_model_free(m);
    } else {
        assert!(m.is_null());
    }
    (s, msg)
}

#[test]
fn the_nnet_reader_refuses_non_files_and_caps_what_it_quotes() {
    let ctx = Ctx::new();
    let dir = std::env::temp_dir().join(format!("vram-hardening-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A FIFO with no writer: refused at once instead of blocking the caller.
    let fifo = dir.join("pipe.nnet");
    let cfifo = CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: creates a FIFO at a path of this test's own directory.
    assert_eq!(
        unsafe { libc::mkfifo(cfifo.as_ptr() as *const c_char, 0o600) },
        0
    );
    let t = Instant::now();
    let (s, msg) = load_nnet(&ctx, fifo.to_str().unwrap());
    assert_eq!(s, vram_status::VRAM_ERR_INVALID_ARGUMENT);
    assert!(msg.contains("not a regular file"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(1));
    for dev in ["/dev/zero", "/dev/null", "/"] {
        let (s, msg) = load_nnet(&ctx, dev);
        assert_eq!(s, vram_status::VRAM_ERR_INVALID_ARGUMENT, "{dev}");
        assert!(msg.contains("not a regular file"), "{dev}: {msg}");
    }
    // A 10 MB bad token is quoted in at most 32 characters.
    let long = dir.join("long.nnet");
    let mut text = String::from("2,2,1,3,\n2,3,1,\n0,\n0,0,\n1,1,\n0,0,0,\n1,1,1,\n");
    text.push_str(&"9".repeat(10 << 20));
    text.push_str("x,1,\n");
    std::fs::write(&long, text).unwrap();
    let (s, msg) = load_nnet(&ctx, long.to_str().unwrap());
    assert_eq!(s, vram_status::VRAM_ERR_INVALID_ARGUMENT);
    assert!(msg.len() < 300, "{} bytes", msg.len());
    // A file declaring a 1000 × 10^7 layer in a few bytes: refused before allocating.
    let liar = dir.join("liar.nnet");
    std::fs::write(
        &liar,
        "1,1000,10000000,10000000,\n1000,10000000,\n0,\n0,\n1,\n0,0,\n1,1,\n",
    )
    .unwrap();
    let (s, msg) = load_nnet(&ctx, liar.to_str().unwrap());
    assert_eq!(s, vram_status::VRAM_ERR_INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("can hold"), "{msg}");
    assert_eq!(ctx.used(), 0);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn every_acas_xu_network_passes_the_strict_reader() {
    let dir = std::env::var_os("VRAM_ACASXU_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| source_dir().join("../shared/data/acasxu"))
        .join("nnet");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        println!(
            "SKIPPED every_acas_xu_network_passes_the_strict_reader: no {}",
            dir.display()
        );
        return;
    };
    let ctx = Ctx::new();
    let mut loaded = 0;
    for e in entries {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "nnet") {
            let (s, msg) = load_nnet(&ctx, path.to_str().unwrap());
            assert_eq!(s, vram_status::VRAM_OK, "{}: {msg}", path.display());
            loaded += 1;
        }
    }
    println!("{loaded} ACAS Xu networks loaded by the strict reader");
    assert!(loaded > 0);
}

#[test]
fn a_host_context_with_one_thread_seals_and_verifies() {
    let mut o = options(vram_backend::VRAM_BACKEND_HOST, &KEY);
    o.max_threads = 1;
    let ctx = Ctx::with_options(&o);
    let data = bytes(9 << 20, 12);
    let s = ctx.seal("big", &data);
    assert_eq!(s.root(), reference_root(&data, 4096));
    assert_eq!(ctx.verify(&s).0, vram_status::VRAM_OK);
}
