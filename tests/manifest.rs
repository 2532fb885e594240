//! Model manifests through the C ABI: made from live shards, exported, imported, checked;
//! every way a manifest or a model can differ is caught and named; the independent Python
//! verifier agrees.

mod common;

use std::ffi::{CStr, CString, c_char};
use std::process::Command;
use std::ptr;

use common::*;
use vram::*;

const MIB: usize = 1 << 20;

struct Manifest(*mut vram_manifest);

impl Drop for Manifest {
    fn drop(&mut self) {
        vram_manifest_free(self.0);
    }
}

impl Manifest {
    fn export(&self) -> Vec<u8> {
        let mut n = 0;
        assert_eq!(
            vram_manifest_export(self.0, ptr::null_mut(), 0, &mut n),
            vram_status::VRAM_ERR_BUFFER_TOO_SMALL
        );
        let mut buf = vec![0u8; n];
        let mut m = 0;
        assert_eq!(
            vram_manifest_export(self.0, buf.as_mut_ptr(), n, &mut m),
            vram_status::VRAM_OK
        );
        assert_eq!(m, n);
        buf
    }
}

fn ptrs(shards: &[&Shard]) -> Vec<*const vram_shard> {
    shards.iter().map(|s| s.0.cast_const()).collect()
}

fn from_shards(ctx: &Ctx, model: &str, shards: &[&Shard], regions: bool) -> Manifest {
    let opts = vram_manifest_options {
        struct_size: size_of::<vram_manifest_options>() as u32,
        flags: if regions {
            VRAM_MANIFEST_REGION_ROOTS
        } else {
            0
        },
        dtypes: ptr::null(),
        shapes: ptr::null(),
        ranks: ptr::null(),
    };
    let name = CString::new(model).unwrap();
    let p = ptrs(shards);
    let mut out = ptr::null_mut();
    let s = vram_manifest_from_shards(ctx.0, name.as_ptr(), p.as_ptr(), p.len(), &opts, &mut out);
    assert_eq!(s, vram_status::VRAM_OK, "{}", last_error());
    Manifest(out)
}

fn import(ctx: &Ctx, bytes: &[u8]) -> Result<Manifest, vram_status> {
    let mut out = ptr::null_mut();
    match vram_manifest_import(ctx.0, bytes.as_ptr(), bytes.len(), &mut out) {
        vram_status::VRAM_OK => Ok(Manifest(out)),
        s => {
            assert!(out.is_null());
            Err(s)
        }
    }
}

fn check(
    ctx: &Ctx,
    m: &Manifest,
    shards: &[&Shard],
) -> (vram_status, Vec<vram_tensor_report>, vram_manifest_summary) {
    let n = vram_manifest_tensor_count(m.0);
    let mut reports = vec![vram_tensor_report::default(); n];
    let mut summary = vram_manifest_summary {
        struct_size: size_of::<vram_manifest_summary>() as u32,
        ..Default::default()
    };
    let p = ptrs(shards);
    let s = vram_manifest_check(
        ctx.0,
        m.0,
        p.as_ptr(),
        p.len(),
        reports.as_mut_ptr(),
        &mut summary,
    );
    (s, reports, summary)
}

fn model(ctx: &Ctx) -> Vec<(String, Vec<u8>, Shard)> {
    (0..4)
        .map(|i| {
            let name = format!("model.layers.{i}.self_attn.q_proj.weight");
            let data = bytes(MIB * (i + 1) + 17 * i, 60 + i as u64);
            let shard = ctx.seal(&name, &data);
            (name, data, shard)
        })
        .collect()
}

#[test]
fn a_manifest_round_trips_and_checks_an_intact_model() {
    let ctx = Ctx::new();
    let tensors = model(&ctx);
    let shards: Vec<&Shard> = tensors.iter().map(|t| &t.2).collect();
    let m = from_shards(&ctx, "demo-model", &shards, true);
    let bytes = m.export();
    let back = import(&ctx, &bytes).unwrap();
    assert_eq!(back.export(), bytes);
    // SAFETY: the accessor returns a NUL-terminated string owned by the manifest.
    assert_eq!(
        unsafe { CStr::from_ptr(vram_manifest_model(back.0)) }
            .to_str()
            .unwrap(),
        "demo-model"
    );
    assert_eq!(vram_manifest_tensor_count(back.0), 4);
    for (i, (name, data, _)) in tensors.iter().enumerate() {
        let mut info = vram_manifest_tensor_info {
            struct_size: size_of::<vram_manifest_tensor_info>() as u32,
            leaf_size: 0,
            name: ptr::null(),
            dtype: ptr::null(),
            shape: ptr::null(),
            rank: 0,
            byte_len: 0,
            root: [0; 32],
            region_count: 0,
        };
        assert_eq!(
            vram_manifest_tensor(back.0, i, &mut info),
            vram_status::VRAM_OK
        );
        // SAFETY: pointers owned by the manifest, alive until it is freed.
        unsafe {
            assert_eq!(CStr::from_ptr(info.name).to_str().unwrap(), name);
            assert_eq!(CStr::from_ptr(info.dtype).to_str().unwrap(), "U8");
            assert_eq!(*info.shape, data.len() as u64);
        }
        assert_eq!(info.byte_len, data.len() as u64);
        assert_eq!(info.root, reference_root(data, 4096));
        assert_eq!(info.region_count, data.len().div_ceil(MIB) as u64);
    }
    let mut info = vram_manifest_tensor_info {
        struct_size: size_of::<vram_manifest_tensor_info>() as u32,
        leaf_size: 0,
        name: ptr::null(),
        dtype: ptr::null(),
        shape: ptr::null(),
        rank: 0,
        byte_len: 0,
        root: [0; 32],
        region_count: 0,
    };
    assert_eq!(
        vram_manifest_tensor(back.0, 4, &mut info),
        vram_status::VRAM_ERR_INVALID_ARGUMENT
    );
    let (s, reports, summary) = check(&ctx, &back, &shards);
    assert_eq!(s, vram_status::VRAM_OK, "{}", last_error());
    assert!(
        reports
            .iter()
            .all(|r| r.verdict == vram_tensor_verdict::VRAM_TENSOR_INTACT as u32)
    );
    assert_eq!((summary.tensors, summary.intact, summary.extra), (4, 4, 0));
    // Order of the live shards does not matter (matched by name).
    let reversed: Vec<&Shard> = shards.iter().rev().copied().collect();
    assert_eq!(check(&ctx, &back, &reversed).0, vram_status::VRAM_OK);
}

#[test]
fn every_change_to_a_manifest_makes_it_unauthentic() {
    let ctx = Ctx::new();
    let tensors = model(&ctx);
    let shards: Vec<&Shard> = tensors.iter().map(|t| &t.2).collect();
    let bytes = from_shards(&ctx, "demo-model", &shards, false).export();
    let text = String::from_utf8(bytes.clone()).unwrap();
    // A flipped byte anywhere; truncation; another key.
    for i in (0..bytes.len()).step_by(5) {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        assert!(import(&ctx, &b).is_err(), "byte {i}");
    }
    assert_eq!(
        import(&ctx, &bytes[..bytes.len() - 1]).err(),
        Some(vram_status::VRAM_ERR_BAD_SEAL)
    );
    assert_eq!(
        import(&Ctx::with_key(&OTHER_KEY), &bytes).err(),
        Some(vram_status::VRAM_ERR_BAD_SEAL)
    );
    // Missing, renamed and reordered tensors, re-signed by nobody: the MAC fails.
    let v = serde_like::Doc::parse(&text);
    let removed = v.without_tensor(1);
    assert_eq!(
        import(&ctx, removed.as_bytes()).err(),
        Some(vram_status::VRAM_ERR_BAD_SEAL)
    );
    let renamed = text.replace("layers.2.", "layers.9.");
    assert_eq!(
        import(&ctx, renamed.as_bytes()).err(),
        Some(vram_status::VRAM_ERR_BAD_SEAL)
    );
    let reordered = v.swapped(0, 1);
    assert_eq!(
        import(&ctx, reordered.as_bytes()).err(),
        Some(vram_status::VRAM_ERR_BAD_SEAL)
    );
    // Re-formatted (pretty-printed) is not canonical.
    let spaced = text.replacen(",\"model\"", ", \"model\"", 1);
    assert_eq!(
        import(&ctx, spaced.as_bytes()).err(),
        Some(vram_status::VRAM_ERR_BAD_SEAL)
    );
    assert!(last_error().contains("canonical"), "{}", last_error());
    // Another format version: refused as unsupported, clearly.
    let v2 = text.replace("\"version\":1", "\"version\":2");
    assert_eq!(
        import(&ctx, v2.as_bytes()).err(),
        Some(vram_status::VRAM_ERR_UNSUPPORTED)
    );
    assert!(
        last_error().contains("version 2 is not supported"),
        "{}",
        last_error()
    );
    assert_eq!(
        import(&ctx, b"not json").err(),
        Some(vram_status::VRAM_ERR_BAD_SEAL)
    );
}

/// Minimal edits of the canonical text by tensor object, without a JSON library (the test
/// crate has none): tensors are the `{...}` items between `"tensors":[` and `]`.
mod serde_like {
    pub struct Doc {
        head: String,
        items: Vec<String>,
        tail: String,
    }

    impl Doc {
        pub fn parse(text: &str) -> Self {
            let start = text.find("\"tensors\":[").unwrap() + "\"tensors\":[".len();
            let end = text.rfind("]").unwrap();
            let items = text[start..end]
                .split("},{")
                .map(|s| s.trim_start_matches('{').trim_end_matches('}').to_string())
                .collect();
            Self {
                head: text[..start].to_string(),
                items,
                tail: text[end..].to_string(),
            }
        }

        fn render(&self, items: &[String]) -> String {
            let body: Vec<String> = items.iter().map(|i| format!("{{{i}}}")).collect();
            format!("{}{}{}", self.head, body.join(","), self.tail)
        }

        pub fn without_tensor(&self, i: usize) -> String {
            let mut items = self.items.clone();
            items.remove(i);
            self.render(&items)
        }

        pub fn swapped(&self, a: usize, b: usize) -> String {
            let mut items = self.items.clone();
            items.swap(a, b);
            self.render(&items)
        }
    }
}

#[test]
fn a_model_check_names_missing_extra_different_and_damaged_tensors() {
    let ctx = Ctx::new();
    let tensors = model(&ctx);
    let shards: Vec<&Shard> = tensors.iter().map(|t| &t.2).collect();
    let m = from_shards(&ctx, "demo-model", &shards, true);

    // Missing tensor 1, and an extra shard.
    let extra = ctx.seal("lm_head.weight", &bytes(5000, 1));
    let live = [shards[0], shards[2], shards[3], &extra];
    let (s, r, sum) = check(&ctx, &m, &live);
    assert_eq!(s, vram_status::VRAM_ERR_INTEGRITY);
    let msg = last_error();
    assert!(
        msg.contains("'model.layers.1.self_attn.q_proj.weight' missing"),
        "{msg}"
    );
    assert!(
        msg.contains("'lm_head.weight' not in the manifest"),
        "{msg}"
    );
    assert_eq!(
        r[1].verdict,
        vram_tensor_verdict::VRAM_TENSOR_MISSING as u32
    );
    assert_eq!(r[1].shard_index, usize::MAX);
    assert_eq!(
        (sum.missing, sum.extra, sum.first_extra, sum.intact),
        (1, 1, 3, 3)
    );

    // Tensor 2 re-sealed over other bytes: different, located to its region by the manifest.
    let (name2, data2, _) = &tensors[2];
    let mut other = data2.clone();
    other[2 * MIB + 99] ^= 4;
    let ctx2 = Ctx::new();
    let resealed = ctx2.seal(name2, &other);
    let m2 = import(&ctx2, &m.export()).unwrap();
    let s0 = ctx2.seal(&tensors[0].0, &tensors[0].1);
    let s1 = ctx2.seal(&tensors[1].0, &tensors[1].1);
    let s3 = ctx2.seal(&tensors[3].0, &tensors[3].1);
    let (s, r, _) = check(&ctx2, &m2, &[&s0, &s1, &resealed, &s3]);
    assert_eq!(s, vram_status::VRAM_ERR_INTEGRITY);
    assert_eq!(
        r[2].verdict,
        vram_tensor_verdict::VRAM_TENSOR_DIFFERENT as u32
    );
    assert_eq!(r[2].first_damaged_offset, 2 * MIB as u64);

    // Tensor 3's bytes damaged after sealing.
    tensors[3].2.flip(8 * (3 * MIB + 5) as u64);
    let (s, r, sum) = check(&ctx, &m, &shards);
    assert_eq!(s, vram_status::VRAM_ERR_INTEGRITY);
    assert_eq!(
        r[3].verdict,
        vram_tensor_verdict::VRAM_TENSOR_DAMAGED as u32
    );
    assert_eq!(r[3].first_damaged_offset, 3 * MIB as u64);
    assert_eq!(sum.damaged, 1);
    tensors[3].2.flip(8 * (3 * MIB + 5) as u64);
    assert_eq!(check(&ctx, &m, &shards).0, vram_status::VRAM_OK);

    // Two shards of one name: refused, nothing checked.
    let (s, _, _) = check(&ctx, &m, &[shards[0], shards[0]]);
    assert_eq!(s, vram_status::VRAM_ERR_INVALID_ARGUMENT);
}

#[test]
fn sealing_a_manifest_tensor_keeps_only_its_bytes() {
    let ctx = Ctx::new();
    let tensors = model(&ctx);
    let shards: Vec<&Shard> = tensors.iter().map(|t| &t.2).collect();
    let m = from_shards(&ctx, "demo-model", &shards, true);
    let fresh = Ctx::new();
    let m2 = import(&fresh, &m.export()).unwrap();
    let (name, data, _) = &tensors[3];
    let cname = CString::new(name.as_str()).unwrap();
    let seal = |data: &[u8]| {
        let mut out = ptr::null_mut();
        let s = vram_manifest_seal(
            fresh.0,
            m2.0,
            cname.as_ptr(),
            data.as_ptr().cast(),
            data.len(),
            &mut out,
        );
        (s, out)
    };
    let mut wrong = data.clone();
    wrong[3 * MIB + 7] ^= 1;
    let (s, out) = seal(&wrong);
    assert_eq!(s, vram_status::VRAM_ERR_INTEGRITY);
    assert!(out.is_null());
    assert!(
        last_error().contains("region at byte offset 3145728"),
        "{}",
        last_error()
    );
    assert_eq!(fresh.used(), 0);
    let (s, _) = seal(&data[1..]);
    assert_eq!(s, vram_status::VRAM_ERR_INTEGRITY);
    assert!(
        last_error().contains("the manifest says"),
        "{}",
        last_error()
    );
    let (s, out) = seal(data);
    assert_eq!(s, vram_status::VRAM_OK, "{}", last_error());
    let shard = Shard(out);
    assert_eq!(shard.root(), reference_root(data, 4096));
    let unknown = c"not.in.model";
    let mut out = ptr::null_mut();
    assert_eq!(
        vram_manifest_seal(
            fresh.0,
            m2.0,
            unknown.as_ptr() as *const c_char,
            data.as_ptr().cast(),
            data.len(),
            &mut out
        ),
        vram_status::VRAM_ERR_INVALID_ARGUMENT
    );
}

#[test]
fn the_python_verifier_agrees_on_manifests_and_files() {
    let ctx = Ctx::new();
    let tensors = model(&ctx);
    let shards: Vec<&Shard> = tensors.iter().map(|t| &t.2).collect();
    let m = from_shards(&ctx, "demo-model", &shards, true);
    let dir = std::env::temp_dir().join(format!("vram-manifest-py-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mpath = dir.join("manifest.json");
    std::fs::write(&mpath, m.export()).unwrap();
    let hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
    let run = |args: &[String]| {
        let out = Command::new("python3")
            .arg(source_dir().join("tests/verify_manifest.py"))
            .arg(&mpath)
            .args(args)
            .output()
            .expect("python3 is needed to run the independent manifest verifier");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let mut args = vec![hex.clone()];
    for (i, (name, data, _)) in tensors.iter().enumerate() {
        let p = dir.join(format!("{i}.bin"));
        std::fs::write(&p, data).unwrap();
        args.push(name.clone());
        args.push(p.to_str().unwrap().to_string());
    }
    let (code, out) = run(&args);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("OK: manifest authentic and files match"),
        "{out}"
    );
    // A damaged file is named, with its region.
    let mut bad = tensors[2].1.clone();
    bad[MIB + 3] ^= 0x10;
    std::fs::write(dir.join("2.bin"), &bad).unwrap();
    let (code, out) = run(&args);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("layers.2.self_attn.q_proj.weight: bytes differ from the manifest's, first in the region at byte offset 1048576"), "{out}");
    // Another key.
    let other: String = OTHER_KEY.iter().map(|b| format!("{b:02x}")).collect();
    let (code, out) = run(&[other]);
    assert_eq!(code, Some(1), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn mutated_manifests_never_authenticate_or_crash() {
    let ctx = Ctx::new();
    let tensors = model(&ctx);
    let shards: Vec<&Shard> = tensors.iter().map(|t| &t.2).collect();
    let bytes = from_shards(&ctx, "demo-model", &shards, true).export();
    let mut rng = Rng(0x3a41_f00d);
    for i in 0..20_000 {
        let mut b = bytes.clone();
        match rng.below(4) {
            0 => {
                for _ in 0..1 + rng.below(4) {
                    let k = rng.index(b.len());
                    b[k] ^= 1 << rng.below(8);
                }
            }
            1 => b.truncate(rng.index(b.len())),
            2 => {
                let k = rng.index(b.len());
                let junk: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                b.splice(k..k, junk);
            }
            _ => {
                // Swap two bytes (reorders digits, keys, brackets).
                let (x, y) = (rng.index(b.len()), rng.index(b.len()));
                b.swap(x, y);
            }
        }
        if b == bytes || b.is_empty() {
            continue;
        }
        match import(&ctx, &b) {
            Ok(_) => panic!("mutation {i} authenticated"),
            Err(s) => assert!(
                matches!(
                    s,
                    vram_status::VRAM_ERR_BAD_SEAL
                        | vram_status::VRAM_ERR_UNSUPPORTED
                        | vram_status::VRAM_ERR_INVALID_ARGUMENT
                ),
                "mutation {i}: {s:?}: {}",
                last_error()
            ),
        }
    }
}
