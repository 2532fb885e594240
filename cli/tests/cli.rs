//! The vram command as a user runs it: seal a safetensors model into a manifest, verify the
//! files (exit 0), a flipped byte (exit 6, naming the tensor and its 1 MiB region), a changed
//! or other-key manifest (exit 7), a truncated or lying file (exit 2), and inspect.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vram(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vram"))
        .args(args)
        .env_remove("VRAM_KEY_FILE")
        .output()
        .expect("runs the vram command")
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// A safetensors file of `(name, dtype, shape, bytes)` tensors.
fn safetensors(tensors: &[(&str, &str, Vec<u64>, Vec<u8>)]) -> Vec<u8> {
    let mut header = String::from("{");
    let mut off = 0;
    for (i, (name, dtype, shape, data)) in tensors.iter().enumerate() {
        let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
        header += &format!(
            "{}\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{off},{}]}}",
            if i > 0 { "," } else { "" },
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

fn pattern(n: usize, seed: u32) -> Vec<u8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as u8
        })
        .collect()
}

fn setup(name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("vram-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key");
    std::fs::write(&key, pattern(32, 7)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let model = safetensors(&[
        (
            "model.layers.0.mlp.up_proj.weight",
            "F16",
            vec![1536, 1024],
            pattern(3 << 20, 1),
        ),
        ("model.norm.weight", "F32", vec![4], pattern(16, 2)),
        ("model.empty", "U8", vec![0], vec![]),
    ]);
    std::fs::write(dir.join("model.safetensors"), &model).unwrap();
    (dir, key, model)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn seal_then_verify_catches_damage_forgery_and_bad_input() {
    let (dir, key, model) = setup("flow");
    let st = dir.join("model.safetensors");
    let manifest = dir.join("model.manifest.json");
    let o = vram(&[
        "seal",
        "--key-file",
        s(&key),
        "--backend",
        "host",
        "-o",
        s(&manifest),
        s(&st),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("sealed 3 tensors"), "{}", text(&o));

    // Unchanged files: exit 0 (the key also from VRAM_KEY_FILE).
    let o = Command::new(env!("CARGO_BIN_EXE_vram"))
        .args([
            "verify",
            "--backend",
            "host",
            "--manifest",
            s(&manifest),
            s(&st),
        ])
        .env("VRAM_KEY_FILE", &key)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("OK: all 3 tensors"), "{}", text(&o));

    // One flipped byte: exit 6, the tensor and its region named.
    let mut bad = model.clone();
    let data_start = 8 + u64::from_le_bytes(bad[..8].try_into().unwrap()) as usize;
    bad[data_start + (2 << 20) + 77] ^= 0x01;
    let bad_path = dir.join("bad.safetensors");
    std::fs::write(&bad_path, &bad).unwrap();
    let o = vram(&[
        "verify",
        "--key-file",
        s(&key),
        "--backend",
        "host",
        "--manifest",
        s(&manifest),
        s(&bad_path),
    ]);
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    assert!(
        text(&o).contains("DAMAGED  model.layers.0.mlp.up_proj.weight: first damaged 1 MiB region at byte offset 2097152"),
        "{}",
        text(&o)
    );

    // A manifest with one byte changed, or checked under another key: exit 7.
    let mut m = std::fs::read(&manifest).unwrap();
    let at = m.len() / 2;
    m[at] ^= 0x02;
    let changed = dir.join("changed.json");
    std::fs::write(&changed, &m).unwrap();
    let o = vram(&[
        "verify",
        "--key-file",
        s(&key),
        "--backend",
        "host",
        "--manifest",
        s(&changed),
        s(&st),
    ]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    let other = dir.join("other.key");
    std::fs::write(&other, pattern(40, 99)).unwrap();
    let o = vram(&[
        "verify",
        "--key-file",
        s(&other),
        "--backend",
        "host",
        "--manifest",
        s(&manifest),
        s(&st),
    ]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert!(
        text(&o).contains("readable by others"),
        "the world-readable key file draws a warning: {}",
        text(&o)
    );

    // A truncated file and a file whose header lies: exit 2.
    let trunc = dir.join("trunc.safetensors");
    std::fs::write(&trunc, &model[..model.len() / 2]).unwrap();
    let o = vram(&[
        "verify",
        "--key-file",
        s(&key),
        "--backend",
        "host",
        "--manifest",
        s(&manifest),
        s(&trunc),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let mut lying = model.clone();
    lying[0] = lying[0].wrapping_add(3);
    let liar = dir.join("liar.safetensors");
    std::fs::write(&liar, &lying).unwrap();
    let o = vram(&[
        "verify",
        "--key-file",
        s(&key),
        "--backend",
        "host",
        "--manifest",
        s(&manifest),
        s(&liar),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // Bad key files and missing files: exit 2.
    let short = dir.join("short.key");
    std::fs::write(&short, b"too short").unwrap();
    let o = vram(&[
        "verify",
        "--key-file",
        s(&short),
        "--manifest",
        s(&manifest),
        s(&st),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = vram(&[
        "verify",
        "--key-file",
        s(&key),
        "--manifest",
        s(&dir.join("nope.json")),
        s(&st),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn inspect_shows_manifests_with_and_without_the_key() {
    let (dir, key, _) = setup("inspect");
    let st = dir.join("model.safetensors");
    let manifest = dir.join("m.json");
    assert!(
        vram(&[
            "seal",
            "--key-file",
            s(&key),
            "--backend",
            "host",
            "--name",
            "tiny-llm",
            "-o",
            s(&manifest),
            s(&st)
        ])
        .status
        .success()
    );
    let o = vram(&["inspect", s(&manifest)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("NOT authenticated"), "{}", text(&o));
    assert!(text(&o).contains("model: tiny-llm"), "{}", text(&o));
    let o = vram(&["inspect", "--key-file", s(&key), "--json", s(&manifest)]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["authenticated"], true);
    assert_eq!(v["tensors"].as_array().unwrap().len(), 3);
    assert_eq!(v["tensors"][0]["region_roots"], 3);
    let other = dir.join("other.key");
    std::fs::write(&other, pattern(32, 5)).unwrap();
    let o = vram(&["inspect", "--key-file", s(&other), s(&manifest)]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    std::fs::remove_dir_all(&dir).ok();
}
