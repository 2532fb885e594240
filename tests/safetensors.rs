//! Models loaded and sealed straight from safetensors files, through the C ABI: one file, a
//! sharded checkpoint, an expected manifest, progress and cancel, and malformed files refused
//! with nothing kept (seeded mutations included).

mod common;

use std::ffi::{CStr, CString, c_int, c_void};
use std::path::{Path, PathBuf};
use std::ptr;

use common::*;
use vram::*;

const MIB: usize = 1 << 20;

/// A tensor to write: name, dtype, shape, bytes.
struct T(&'static str, &'static str, Vec<u64>, Vec<u8>);

/// The bytes of a safetensors file holding `tensors` in order (the format: an 8-byte
/// little-endian header length, the JSON header, the data).
fn file_bytes(tensors: &[T]) -> Vec<u8> {
    let mut header = String::from("{");
    let mut off = 0usize;
    for (i, T(name, dtype, shape, data)) in tensors.iter().enumerate() {
        if i > 0 {
            header.push(',');
        }
        let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
        header += &format!(
            "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{off},{}]}}",
            dims.join(","),
            off + data.len()
        );
        off += data.len();
    }
    header.push('}');
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    for t in tensors {
        out.extend_from_slice(&t.3);
    }
    out
}

fn sample() -> Vec<T> {
    vec![
        T(
            "model.embed_tokens.weight",
            "F16",
            vec![64, 8192],
            bytes(64 * 8192 * 2, 1),
        ),
        T(
            "model.layers.0.mlp.up_proj.weight",
            "BF16",
            vec![3, 200_000],
            bytes(3 * 200_000 * 2, 2),
        ),
        T("model.norm.bias", "F32", vec![7], bytes(28, 3)),
        T("model.empty", "U8", vec![0, 5], vec![]),
        T("lm_head.scale", "I64", vec![], bytes(8, 4)),
    ]
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vram-st-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Model(*mut vram_model);

impl Drop for Model {
    fn drop(&mut self) {
        vram_model_free(self.0);
    }
}

fn opts() -> vram_load_options {
    vram_load_options {
        struct_size: size_of::<vram_load_options>() as u32,
        flags: VRAM_MANIFEST_REGION_ROOTS,
        expected: ptr::null(),
        progress: None,
        userdata: ptr::null_mut(),
        model_name: ptr::null(),
        model_signing: ptr::null(),
        model_signing_len: 0,
    }
}

fn load(ctx: &Ctx, path: &Path, o: &vram_load_options) -> Result<Model, vram_status> {
    let p = CString::new(path.to_str().unwrap()).unwrap();
    let mut out = ptr::null_mut();
    match vram_load_safetensors(ctx.0, p.as_ptr(), o, &mut out) {
        vram_status::VRAM_OK => Ok(Model(out)),
        s => {
            assert!(out.is_null(), "model written on failure");
            Err(s)
        }
    }
}

fn info(m: &Model, i: usize) -> vram_model_tensor_info {
    let mut info = vram_model_tensor_info {
        struct_size: size_of::<vram_model_tensor_info>() as u32,
        name: ptr::null(),
        dtype: ptr::null(),
        shape: ptr::null(),
        rank: 0,
        byte_len: 0,
        shard: ptr::null(),
        data: ptr::null(),
    };
    assert_eq!(vram_model_tensor(m.0, i, &mut info), vram_status::VRAM_OK);
    info
}

fn manifest_bytes(ctx: &Ctx, m: &Model) -> Vec<u8> {
    let mut man = ptr::null_mut();
    assert_eq!(
        vram_model_manifest(ctx.0, m.0, &mut man),
        vram_status::VRAM_OK
    );
    let mut n = 0;
    vram_manifest_export(man, ptr::null_mut(), 0, &mut n);
    let mut buf = vec![0u8; n];
    assert_eq!(
        vram_manifest_export(man, buf.as_mut_ptr(), n, &mut n),
        vram_status::VRAM_OK
    );
    vram_manifest_free(man);
    buf
}

#[test]
fn a_file_loads_sealed_with_its_manifest() {
    let dir = tmp("one");
    let tensors = sample();
    let path = dir.join("model.safetensors");
    std::fs::write(&path, file_bytes(&tensors)).unwrap();
    let ctx = Ctx::new();
    let m = load(&ctx, &path, &opts()).unwrap();
    assert_eq!(vram_model_tensor_count(m.0), tensors.len());
    for (i, T(name, dtype, shape, data)) in tensors.iter().enumerate() {
        let t = info(&m, i);
        // SAFETY: strings and shapes owned by the model.
        unsafe {
            assert_eq!(CStr::from_ptr(t.name).to_str().unwrap(), *name);
            assert_eq!(CStr::from_ptr(t.dtype).to_str().unwrap(), *dtype);
            let got: &[u64] = if t.rank == 0 {
                &[]
            } else {
                std::slice::from_raw_parts(t.shape, t.rank)
            };
            assert_eq!(got, &shape[..]);
        }
        assert_eq!(t.byte_len, data.len() as u64);
        if data.is_empty() {
            assert!(
                t.shard.is_null() && t.data.is_null(),
                "an empty tensor has no shard"
            );
        } else {
            let mut root = [0u8; 32];
            assert_eq!(
                vram_shard_root(t.shard, root.as_mut_ptr()),
                vram_status::VRAM_OK
            );
            assert_eq!(root, reference_root(data, 4096), "{name}");
            assert_eq!(vram_shard_device_ptr(t.shard), t.data);
        }
        let mut idx = usize::MAX;
        let cname = CString::new(*name).unwrap();
        assert_eq!(
            vram_model_find(m.0, cname.as_ptr(), &mut idx),
            vram_status::VRAM_OK
        );
        assert_eq!(idx, i);
    }
    let mut summary = vram_manifest_summary {
        struct_size: size_of::<vram_manifest_summary>() as u32,
        ..Default::default()
    };
    assert_eq!(
        vram_model_verify(ctx.0, m.0, ptr::null_mut(), &mut summary),
        vram_status::VRAM_OK
    );
    assert_eq!((summary.tensors, summary.intact), (5, 5));
    // The manifest names the model after the file and lists the empty tensor.
    let text = String::from_utf8(manifest_bytes(&ctx, &m)).unwrap();
    assert!(text.contains("\"model\":\"model\""), "{text}");
    assert!(text.contains("\"name\":\"model.empty\""), "{text}");
    // A flipped bit in a loaded tensor is named by the model's verify.
    let t1 = info(&m, 1);
    assert_eq!(
        vram_debug_flip_bit(t1.shard.cast_mut(), 8 * (MIB as u64 + 3)),
        vram_status::VRAM_OK
    );
    let mut reports = vec![vram_tensor_report::default(); 5];
    assert_eq!(
        vram_model_verify(ctx.0, m.0, reports.as_mut_ptr(), ptr::null_mut()),
        vram_status::VRAM_ERR_INTEGRITY
    );
    assert_eq!(
        reports[1].verdict,
        vram_tensor_verdict::VRAM_TENSOR_DAMAGED as u32
    );
    assert_eq!(reports[1].first_damaged_offset, MIB as u64);
    drop(m);
    assert_eq!(ctx.used(), 0);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_sharded_checkpoint_loads_through_its_index() {
    let dir = tmp("sharded");
    let mut tensors = sample();
    let second: Vec<T> = tensors.split_off(2);
    std::fs::write(
        dir.join("model-00001-of-00002.safetensors"),
        file_bytes(&tensors),
    )
    .unwrap();
    std::fs::write(
        dir.join("model-00002-of-00002.safetensors"),
        file_bytes(&second),
    )
    .unwrap();
    let map: Vec<String> = tensors
        .iter()
        .map(|t| format!("\"{}\":\"model-00001-of-00002.safetensors\"", t.0))
        .chain(
            second
                .iter()
                .map(|t| format!("\"{}\":\"model-00002-of-00002.safetensors\"", t.0)),
        )
        .collect();
    let index = format!(
        "{{\"metadata\":{{\"total_size\":1}},\"weight_map\":{{{}}}}}",
        map.join(",")
    );
    std::fs::write(dir.join("model.safetensors.index.json"), &index).unwrap();
    let ctx = Ctx::new();
    // The index, or the directory.
    let m = load(&ctx, &dir.join("model.safetensors.index.json"), &opts()).unwrap();
    assert_eq!(vram_model_tensor_count(m.0), 5);
    assert_eq!(
        vram_model_verify(ctx.0, m.0, ptr::null_mut(), ptr::null_mut()),
        vram_status::VRAM_OK
    );
    drop(m);
    let m = load(&ctx, &dir, &opts()).unwrap();
    assert_eq!(vram_model_tensor_count(m.0), 5);
    drop(m);
    // An index that lies about a tensor's file, or names a path outside its directory.
    let lying = index.replacen(
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        1,
    );
    std::fs::write(dir.join("lying.index.json"), lying).unwrap();
    assert_eq!(
        load(&ctx, &dir.join("lying.index.json"), &opts()).err(),
        Some(vram_status::VRAM_ERR_INVALID_ARGUMENT)
    );
    assert!(
        last_error().contains("does not hold it"),
        "{}",
        last_error()
    );
    let escape = index.replace(
        "model-00002-of-00002.safetensors",
        "../model-00002-of-00002.safetensors",
    );
    std::fs::write(dir.join("escape.index.json"), escape).unwrap();
    assert_eq!(
        load(&ctx, &dir.join("escape.index.json"), &opts()).err(),
        Some(vram_status::VRAM_ERR_INVALID_ARGUMENT)
    );
    assert!(last_error().contains("plain file name"), "{}", last_error());
    assert_eq!(ctx.used(), 0);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_expected_manifest_fails_fast_naming_the_tensor_and_region() {
    let dir = tmp("expected");
    let tensors = sample();
    let good = dir.join("good.safetensors");
    std::fs::write(&good, file_bytes(&tensors)).unwrap();
    let ctx = Ctx::new();
    let published = {
        let m = load(&ctx, &good, &opts()).unwrap();
        manifest_bytes(&ctx, &m)
    };
    // Another process, same secret: import the publisher's manifest and load against it.
    let server = Ctx::new();
    let mut expected = ptr::null_mut();
    assert_eq!(
        vram_manifest_import(server.0, published.as_ptr(), published.len(), &mut expected),
        vram_status::VRAM_OK
    );
    let mut o = opts();
    o.expected = expected;
    let m = load(&server, &good, &o).unwrap();
    assert_eq!(
        vram_model_verify(server.0, m.0, ptr::null_mut(), ptr::null_mut()),
        vram_status::VRAM_OK
    );
    drop(m);
    // One flipped byte in a tensor's data: named, with its 1 MiB region; nothing kept.
    let mut bad = file_bytes(&tensors);
    let data_start = 8 + u64::from_le_bytes(bad[..8].try_into().unwrap()) as usize;
    let at = data_start + tensors[0].3.len() + MIB + 10;
    bad[at] ^= 1;
    let badp = dir.join("bad.safetensors");
    std::fs::write(&badp, &bad).unwrap();
    assert_eq!(
        load(&server, &badp, &o).err(),
        Some(vram_status::VRAM_ERR_INTEGRITY)
    );
    let msg = last_error();
    assert!(msg.contains("model.layers.0.mlp.up_proj.weight"), "{msg}");
    assert!(msg.contains("region at byte offset 1048576"), "{msg}");
    assert_eq!(server.used(), 0, "a refused load kept shards");
    // A file missing a tensor of the manifest, or holding one more.
    let fewer: Vec<T> = sample().into_iter().take(4).collect();
    std::fs::write(dir.join("fewer.safetensors"), file_bytes(&fewer)).unwrap();
    assert_eq!(
        load(&server, &dir.join("fewer.safetensors"), &o).err(),
        Some(vram_status::VRAM_ERR_INTEGRITY)
    );
    assert!(last_error().contains("lm_head.scale"), "{}", last_error());
    let mut more = sample();
    more.push(T("extra.weight", "U8", vec![4], vec![1, 2, 3, 4]));
    std::fs::write(dir.join("more.safetensors"), file_bytes(&more)).unwrap();
    assert_eq!(
        load(&server, &dir.join("more.safetensors"), &o).err(),
        Some(vram_status::VRAM_ERR_INTEGRITY)
    );
    assert!(last_error().contains("extra.weight"), "{}", last_error());
    assert_eq!(server.used(), 0);
    vram_manifest_free(expected);
    std::fs::remove_dir_all(&dir).ok();
}

extern "C" fn count_then_cancel(userdata: *mut c_void, done: u64, total: u64) -> c_int {
    // SAFETY: the test passes a Vec<(u64, u64)> it keeps alive for the call.
    let seen = unsafe { &mut *(userdata as *mut Vec<(u64, u64)>) };
    seen.push((done, total));
    i32::from(seen.len() == 2)
}

extern "C" fn count(userdata: *mut c_void, done: u64, total: u64) -> c_int {
    // SAFETY: as above.
    let seen = unsafe { &mut *(userdata as *mut Vec<(u64, u64)>) };
    seen.push((done, total));
    0
}

#[test]
fn progress_is_reported_and_a_cancel_keeps_nothing() {
    let dir = tmp("progress");
    let tensors = sample();
    let path = dir.join("p.safetensors");
    std::fs::write(&path, file_bytes(&tensors)).unwrap();
    let total: u64 = tensors.iter().map(|t| t.3.len() as u64).sum();
    let ctx = Ctx::new();
    let mut seen: Vec<(u64, u64)> = Vec::new();
    let mut o = opts();
    o.progress = Some(count);
    o.userdata = (&mut seen as *mut Vec<(u64, u64)>).cast();
    o.model_name = c"my-model".as_ptr();
    let m = load(&ctx, &path, &o).unwrap();
    assert_eq!(seen.len(), tensors.len());
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));
    assert_eq!(seen.last(), Some(&(total, total)));
    assert!(
        String::from_utf8(manifest_bytes(&ctx, &m))
            .unwrap()
            .contains("\"model\":\"my-model\"")
    );
    drop(m);
    let mut seen: Vec<(u64, u64)> = Vec::new();
    o.progress = Some(count_then_cancel);
    o.userdata = (&mut seen as *mut Vec<(u64, u64)>).cast();
    assert_eq!(
        load(&ctx, &path, &o).err(),
        Some(vram_status::VRAM_ERR_CANCELLED)
    );
    assert_eq!(seen.len(), 2);
    assert_eq!(ctx.used(), 0, "a cancelled load kept shards");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn malformed_files_are_refused_naming_the_problem() {
    let dir = tmp("malformed");
    let ctx = Ctx::new();
    let good = file_bytes(&sample());
    let hlen = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(good[8..8 + hlen].to_vec()).unwrap();
    let with_header = |h: &str, data: &[u8]| {
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out
    };
    let data = &good[8 + hlen..];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "header length past the file",
            {
                let mut b = good.clone();
                b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
                b
            },
            "header length",
        ),
        ("shorter than 8 bytes", vec![1, 2, 3], "8-byte"),
        (
            "JSON error",
            with_header("{\"a\":", data),
            "malformed header",
        ),
        (
            "overlapping offsets",
            with_header(&header.replacen("[0,", "[2,", 1), data),
            "malformed header",
        ),
        (
            "out-of-file offsets",
            with_header(&header, &data[..data.len() - 1]),
            "data bytes",
        ),
        (
            "trailing data",
            {
                let mut b = good.clone();
                b.push(0);
                b
            },
            "data bytes",
        ),
        (
            "shape disagrees with length",
            with_header(&header.replacen("[64,8192]", "[64,8191]", 1), data),
            "malformed header",
        ),
        (
            "unknown dtype",
            with_header(&header.replacen("\"F16\"", "\"F17\"", 1), data),
            "malformed header",
        ),
        (
            "duplicate name",
            with_header(
                &format!(
                    "{},\"model.norm.bias\":{{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}}}",
                    &header[..header.len() - 1]
                ),
                data,
            ),
            "appears twice",
        ),
        (
            "not UTF-8",
            with_header("{\"\u{fffd}\"", data)
                .into_iter()
                .map(|b| if b == 0xbd { 0xff } else { b })
                .collect(),
            "header",
        ),
    ];
    for (what, bytes, says) in cases {
        let p = dir.join("bad.safetensors");
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(
            load(&ctx, &p, &opts()).err(),
            Some(vram_status::VRAM_ERR_INVALID_ARGUMENT),
            "{what}"
        );
        let msg = last_error();
        assert!(msg.contains(says), "{what}: {msg}");
        assert_eq!(ctx.used(), 0, "{what}: shards kept");
    }
    // A FIFO, a directory without a checkpoint, a missing file.
    let fifo = dir.join("pipe.safetensors");
    let c = CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: creates a FIFO in this test's directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert_eq!(
        load(&ctx, &fifo, &opts()).err(),
        Some(vram_status::VRAM_ERR_INVALID_ARGUMENT)
    );
    assert!(
        last_error().contains("not a regular file"),
        "{}",
        last_error()
    );
    let empty_dir = tmp("empty-dir");
    assert_eq!(
        load(&ctx, &empty_dir, &opts()).err(),
        Some(vram_status::VRAM_ERR_INVALID_ARGUMENT)
    );
    assert_eq!(
        load(&ctx, &dir.join("nope.safetensors"), &opts()).err(),
        Some(vram_status::VRAM_ERR_INVALID_ARGUMENT)
    );
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&empty_dir).ok();
}

#[test]
fn mutated_files_never_crash_or_leak() {
    let dir = tmp("fuzz");
    let ctx = Ctx::new();
    let small = vec![
        T("a", "F32", vec![3, 4], bytes(48, 1)),
        T("b", "U8", vec![0], vec![]),
        T("c", "BF16", vec![5], bytes(10, 2)),
    ];
    let base = file_bytes(&small);
    let mut rng = Rng(0x5afe_7e45);
    let p = dir.join("f.safetensors");
    let (mut ok, mut refused) = (0, 0);
    for i in 0..2000 {
        let mut b = base.clone();
        match rng.below(3) {
            0 => {
                for _ in 0..1 + rng.below(3) {
                    let k = rng.index(b.len());
                    b[k] ^= 1 << rng.below(8);
                }
            }
            1 => b.truncate(rng.index(b.len())),
            _ => {
                let k = rng.index(8);
                b[k] = rng.next() as u8;
            }
        }
        std::fs::write(&p, &b).unwrap();
        match load(&ctx, &p, &opts()) {
            Ok(m) => {
                ok += 1;
                assert_eq!(
                    vram_model_verify(ctx.0, m.0, ptr::null_mut(), ptr::null_mut()),
                    vram_status::VRAM_OK
                );
            }
            Err(s) => {
                refused += 1;
                assert!(
                    matches!(
                        s,
                        vram_status::VRAM_ERR_INVALID_ARGUMENT
                            | vram_status::VRAM_ERR_OUT_OF_MEMORY
                            | vram_status::VRAM_ERR_UNSUPPORTED
                    ),
                    "mutation {i}: {s:?}: {}",
                    last_error()
                );
            }
        }
        assert_eq!(ctx.used(), 0, "mutation {i} left shards");
    }
    println!("2000 mutated safetensors files: {ok} loaded, {refused} refused, 0 crashes");
    std::fs::remove_dir_all(&dir).ok();
}

fn statement(files: &[(&str, &[u8])], algorithm: &str) -> String {
    use sha2::{Digest, Sha256};
    let resources: Vec<String> = files
        .iter()
        .map(|(name, bytes)| {
            let d: String = Sha256::digest(bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("{{\"algorithm\":\"{algorithm}\",\"digest\":\"{d}\",\"name\":\"{name}\"}}")
        })
        .collect();
    format!(
        "{{\"_type\":\"https://in-toto.io/Statement/v1\",\"subject\":[{{\"name\":\"m\",\"digest\":{{\"sha256\":\"00\"}}}}],\"predicateType\":\"https://model_signing/signature/v1.0\",\"predicate\":{{\"serialization\":{{\"method\":\"files\",\"hash_type\":\"sha256\"}},\"resources\":[{}]}}}}",
        resources.join(",")
    )
}

#[test]
fn model_signing_digests_are_checked_in_the_same_read() {
    let dir = tmp("signing");
    let bytes = file_bytes(&sample());
    let path = dir.join("model.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let ctx = Ctx::new();
    let run = |stmt: &str| {
        let mut o = opts();
        o.model_signing = stmt.as_ptr();
        o.model_signing_len = stmt.len();
        load(&ctx, &path, &o)
    };
    // The signed digest of the file (a config.json beside it is listed and ignored).
    let good = statement(
        &[("model.safetensors", &bytes), ("config.json", b"{}")],
        "sha256",
    );
    assert!(run(&good).is_ok(), "{}", last_error());
    // The file changed after signing: named, nothing kept.
    let mut other = bytes.clone();
    let last = other.len() - 1;
    other[last] ^= 1;
    let stale = statement(&[("model.safetensors", &other)], "sha256");
    assert_eq!(run(&stale).err(), Some(vram_status::VRAM_ERR_INTEGRITY));
    assert!(
        last_error().contains("file 'model.safetensors': its SHA-256 differs"),
        "{}",
        last_error()
    );
    // Not covered by the statement.
    let elsewhere = statement(&[("other.safetensors", &bytes)], "sha256");
    assert_eq!(run(&elsewhere).err(), Some(vram_status::VRAM_ERR_INTEGRITY));
    assert!(last_error().contains("not covered"), "{}", last_error());
    // The sharded serialization is not supported; a payload that is not a statement is refused.
    let sharded = statement(&[("model.safetensors", &bytes)], "sha256-sharded-8");
    assert_eq!(run(&sharded).err(), Some(vram_status::VRAM_ERR_UNSUPPORTED));
    assert_eq!(
        run("{}").err(),
        Some(vram_status::VRAM_ERR_INVALID_ARGUMENT)
    );
    assert_eq!(ctx.used(), 0);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn mutated_model_signing_payloads_never_crash() {
    let dir = tmp("signing-fuzz");
    let small = vec![T("a", "F32", vec![3], bytes(12, 1))];
    let file = file_bytes(&small);
    let path = dir.join("model.safetensors");
    std::fs::write(&path, &file).unwrap();
    let good = statement(&[("model.safetensors", &file)], "sha256").into_bytes();
    let ctx = Ctx::new();
    let mut rng = Rng(0x51_6e_ed);
    for i in 0..3000 {
        let mut b = good.clone();
        for _ in 0..1 + rng.below(3) {
            let k = rng.index(b.len());
            b[k] ^= 1 << rng.below(8);
        }
        if rng.below(4) == 0 {
            b.truncate(rng.index(b.len()) + 1);
        }
        let mut o = opts();
        o.model_signing = b.as_ptr();
        o.model_signing_len = b.len();
        match load(&ctx, &path, &o) {
            // A flip that leaves the digest of this file intact (e.g. in another field).
            Ok(_) => {}
            Err(s) => assert!(
                matches!(
                    s,
                    vram_status::VRAM_ERR_INVALID_ARGUMENT
                        | vram_status::VRAM_ERR_UNSUPPORTED
                        | vram_status::VRAM_ERR_INTEGRITY
                ),
                "mutation {i}: {s:?}: {}",
                last_error()
            ),
        }
        assert_eq!(ctx.used(), 0, "mutation {i} left shards");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Tensors of every size around the staging chunk (8 MiB) and the GPU's hash batch (128 MiB),
/// an empty one and 150 tiny ones, in one file: what streams through the backend back to back.
fn streamed(prefix: &str) -> Vec<T> {
    let name = |n: String| -> &'static str { Box::leak(n.into_boxed_str()) };
    let mut t = Vec::new();
    for (i, len) in [
        8 * MIB - 1,
        8 * MIB,
        8 * MIB + 1,
        1,
        0,
        130 * MIB + 17,
        3000,
    ]
    .into_iter()
    .enumerate()
    {
        t.push(T(
            name(format!("{prefix}.big.{i}")),
            "U8",
            vec![len as u64],
            bytes(len, 40 + i as u64),
        ));
    }
    for i in 0..150 {
        t.push(T(
            name(format!("{prefix}.tiny.{i}")),
            "U8",
            vec![100],
            bytes(100, 1000 + i),
        ));
    }
    t
}

#[test]
fn tensors_stream_back_to_back_with_exact_roots_and_refusals() {
    let dir = tmp("streamed");
    let tensors = streamed("s");
    let path = dir.join("model.safetensors");
    let file = file_bytes(&tensors);
    std::fs::write(&path, &file).unwrap();
    let ctx = Ctx::new();
    let m = load(&ctx, &path, &opts()).unwrap();
    for (i, t) in tensors.iter().enumerate() {
        let shard = info(&m, i).shard;
        if t.3.is_empty() {
            assert!(shard.is_null());
            continue;
        }
        let mut root = [0u8; 32];
        assert_eq!(
            vram_shard_root(shard, root.as_mut_ptr()),
            vram_status::VRAM_OK
        );
        assert_eq!(root, reference_root(&t.3, 4096), "{}", t.0);
    }
    // The same file on the host backend gives the same manifest, byte for byte (region roots
    // included): the CUDA pipeline and the host's parallel reads agree.
    let published = manifest_bytes(&ctx, &m);
    let host = Ctx::with_options(&options(vram_backend::VRAM_BACKEND_HOST, &KEY));
    assert_eq!(
        manifest_bytes(&host, &load(&host, &path, &opts()).unwrap()),
        published
    );
    drop(m);
    // One changed byte deep in the 130 MiB tensor (region 100): refused against the manifest,
    // naming the tensor and region, with nothing kept, whether or not later tensors were read.
    let mut expected = ptr::null_mut();
    assert_eq!(
        vram_manifest_import(ctx.0, published.as_ptr(), published.len(), &mut expected),
        vram_status::VRAM_OK
    );
    let data_start = 8 + u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let before: usize = tensors[..5].iter().map(|t| t.3.len()).sum();
    let mut bad = file.clone();
    bad[data_start + before + 100 * MIB + 5] ^= 0x80;
    let badp = dir.join("bad.safetensors");
    std::fs::write(&badp, &bad).unwrap();
    let mut o = opts();
    o.expected = expected;
    assert_eq!(
        load(&ctx, &badp, &o).err(),
        Some(vram_status::VRAM_ERR_INTEGRITY)
    );
    let msg = last_error();
    assert!(
        msg.contains("s.big.5") && msg.contains("byte offset 104857600"),
        "{msg}"
    );
    assert_eq!(ctx.used(), 0, "a refused load kept shards");
    // A cancel in the middle keeps nothing either.
    let mut seen: Vec<(u64, u64)> = Vec::new();
    o.progress = Some(count_then_cancel);
    o.userdata = (&mut seen as *mut Vec<(u64, u64)>).cast();
    assert_eq!(
        load(&ctx, &path, &o).err(),
        Some(vram_status::VRAM_ERR_CANCELLED)
    );
    assert_eq!(ctx.used(), 0, "a cancelled load kept shards");
    vram_manifest_free(expected);
    // Three loads at once on one context (one at a time holds the GPU's staging ring, the
    // others wait for it), and with one filling thread.
    let ctx = std::sync::Arc::new(ctx);
    let loads: Vec<_> = (0..3)
        .map(|k| {
            let tensors = streamed(&format!("c{k}"));
            let p = dir.join(format!("c{k}.safetensors"));
            std::fs::write(&p, file_bytes(&tensors)).unwrap();
            let ctx = std::sync::Arc::clone(&ctx);
            std::thread::spawn(move || {
                let m = load(&ctx, &p, &opts()).unwrap();
                assert_eq!(
                    vram_model_verify(ctx.0, m.0, ptr::null_mut(), ptr::null_mut()),
                    vram_status::VRAM_OK
                );
                let mut root = [0u8; 32];
                vram_shard_root(info(&m, 5).shard, root.as_mut_ptr());
                assert_eq!(root, reference_root(&tensors[5].3, 4096), "load {k}");
            })
        })
        .collect();
    for l in loads {
        l.join().unwrap();
    }
    let mut one = options(test_backend(), &KEY);
    one.max_threads = 1;
    let one = Ctx::with_options(&one);
    assert_eq!(
        manifest_bytes(&one, &load(&one, &path, &opts()).unwrap()),
        published
    );
    std::fs::remove_dir_all(&dir).ok();
}
