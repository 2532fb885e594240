//! The independent Python verifier (tests/verify_record.py, hashlib + hmac only) accepts a
//! record exported through the C API and rejects altered data, records and keys.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn run(dir: &Path, record: &[u8], data: &[u8], key: &[u8]) -> (bool, String) {
    let rec = dir.join("record.bin");
    let dat = dir.join("data.bin");
    std::fs::write(&rec, record).unwrap();
    std::fs::write(&dat, data).unwrap();
    let script = source_dir().join("tests/verify_record.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&rec)
        .arg(&dat)
        .arg(hex(key))
        .output()
        .expect("python3 is needed to run the independent record verifier");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vram-pyverify-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn python_verifier_agrees_with_libvram() {
    let dir = tmpdir("agree");
    let ctx = Ctx::new();
    for len in [1usize, 4096, 4097, (1 << 20) + 3] {
        let data = bytes(len, len as u64);
        let shard = ctx.seal("model.layers.0.mlp.up_proj.weight", &data);
        let record = shard.record();
        let (ok, out) = run(&dir, &record, &data, &KEY);
        assert!(ok, "len {len}: {out}");
        assert!(out.contains(&hex(&shard.root())), "{out}");
        assert!(
            out.contains("residency: host")
                || test_backend() != vram::vram_backend::VRAM_BACKEND_HOST
        );

        let mut bad_data = data.clone();
        bad_data[len / 2] ^= 1;
        let (ok, out) = run(&dir, &record, &bad_data, &KEY);
        assert!(!ok && out.contains("data does not match"), "{out}");

        let mut bad_record = record.clone();
        let last = bad_record.len() - 40;
        bad_record[last] ^= 0x10;
        let (ok, _) = run(&dir, &bad_record, &data, &KEY);
        assert!(!ok);

        let (ok, out) = run(&dir, &record, &data, &OTHER_KEY);
        assert!(!ok && out.contains("another key"), "{out}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
