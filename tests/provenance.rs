//! Records that outlive the process that sealed them: a second process authenticates
//! yesterday's records, and new bytes are sealed against an expected root.

mod common;

use std::ffi::CString;
use std::path::PathBuf;
use std::process::Command;
use std::ptr;

use common::*;
use vram::*;

const MIB: usize = 1 << 20;
/// Set in the child process: the folder holding the parent's records and tensors.
const CHILD_DIR: &str = "VRAM_PROVENANCE_CHILD_DIR";

fn open(ctx: &Ctx, record: &[u8]) -> Result<vram_record_info, vram_status> {
    let mut info = vram_record_info {
        struct_size: size_of::<vram_record_info>() as u32,
        leaf_size: 0,
        byte_len: 0,
        root: [0; 32],
        backend: 0,
        device: 0,
        seal_time_unix_ns: 0,
        key_id: [0; 16],
        shard_id: [0; 257],
    };
    match vram_record_open(ctx.0, record.as_ptr(), record.len(), &mut info) {
        vram_status::VRAM_OK => Ok(info),
        s => {
            assert_eq!(info.byte_len, 0, "info written on failure");
            Err(s)
        }
    }
}

fn id_of(info: &vram_record_info) -> String {
    let bytes: Vec<u8> = info
        .shard_id
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8(bytes).unwrap()
}

fn seal_expect(ctx: &Ctx, id: &str, data: &[u8], root: &[u8; 32]) -> Result<Shard, vram_status> {
    let id = CString::new(id).unwrap();
    let mut out = ptr::null_mut();
    match vram_seal_expect(
        ctx.0,
        id.as_ptr(),
        data.as_ptr().cast(),
        data.len(),
        root.as_ptr(),
        &mut out,
    ) {
        vram_status::VRAM_OK => Ok(Shard(out)),
        s => {
            assert!(out.is_null(), "output written on failure");
            Err(s)
        }
    }
}

fn tensors() -> Vec<(String, Vec<u8>)> {
    (0..3)
        .map(|i| {
            (
                format!("model.layers.{i}.mlp.up_proj.weight"),
                bytes(MIB + 4097 * i, 40 + i as u64),
            )
        })
        .collect()
}

#[test]
fn a_record_opens_with_no_live_shard() {
    let ctx = Ctx::new();
    let data = bytes(3 * MIB + 11, 7);
    let shard = ctx.seal("model.embed_tokens.weight", &data);
    let record = shard.record();
    let info = open(&ctx, &record).unwrap();
    assert_eq!(id_of(&info), "model.embed_tokens.weight");
    assert_eq!(info.byte_len, data.len() as u64);
    assert_eq!(info.leaf_size, 4096);
    assert_eq!(info.root, reference_root(&data, 4096));
    assert_eq!(info.root, shard.root());
    match test_backend() {
        vram_backend::VRAM_BACKEND_HOST => {
            assert_eq!(
                (info.backend, info.device),
                (vram_backend::VRAM_BACKEND_HOST as u32, -1)
            )
        }
        _ => assert_eq!(info.backend, vram_backend::VRAM_BACKEND_CUDA as u32),
    }
    assert!(info.seal_time_unix_ns > 1_700_000_000_000_000_000);
    drop(shard);
    // Still opens once the shard is gone.
    assert_eq!(
        open(&ctx, &record).unwrap().root,
        reference_root(&data, 4096)
    );

    // Not authentic: every altered byte, every truncation, another key.
    for i in (0..record.len()).step_by(7) {
        let mut r = record.clone();
        r[i] ^= 0x20;
        assert_eq!(
            open(&ctx, &r).err(),
            Some(vram_status::VRAM_ERR_BAD_SEAL),
            "byte {i}"
        );
    }
    assert_eq!(
        open(&ctx, &record[..record.len() - 1]).err(),
        Some(vram_status::VRAM_ERR_BAD_SEAL)
    );
    let other = Ctx::with_key(&OTHER_KEY);
    assert_eq!(
        open(&other, &record).err(),
        Some(vram_status::VRAM_ERR_BAD_SEAL)
    );
    assert!(last_error().contains("another key"), "{}", last_error());

    // Bad arguments.
    let mut info = open(&ctx, &record).unwrap();
    info.struct_size = 8;
    assert_eq!(
        vram_record_open(ctx.0, record.as_ptr(), record.len(), &mut info),
        vram_status::VRAM_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        vram_record_open(ctx.0, ptr::null(), 5, &mut info),
        vram_status::VRAM_ERR_NULL_ARGUMENT
    );
    assert_eq!(
        vram_record_open(ctx.0, record.as_ptr(), record.len(), ptr::null_mut()),
        vram_status::VRAM_ERR_NULL_ARGUMENT
    );
}

#[test]
fn records_check_against_resealed_bytes_and_say_why_not() {
    let ctx = Ctx::new();
    let data = bytes(2 * MIB, 3);
    let first = ctx.seal("w", &data);
    let record = first.record();
    drop(first);
    // The same bytes sealed again (another seal time): the record still describes them.
    let again = ctx.seal("w", &data);
    assert_eq!(
        vram_record_verify(ctx.0, record.as_ptr(), record.len(), again.0),
        vram_status::VRAM_OK,
        "{}",
        last_error()
    );
    drop(again);
    // Other bytes under the same name: authentic record, other bytes.
    let mut changed = data.clone();
    changed[MIB + 5] ^= 1;
    let other = ctx.seal("w", &changed);
    assert_eq!(
        vram_record_verify(ctx.0, record.as_ptr(), record.len(), other.0),
        vram_status::VRAM_ERR_INTEGRITY
    );
    assert!(
        last_error().contains("Merkle root differs"),
        "{}",
        last_error()
    );
    let shorter = ctx.seal("w2", &data[..MIB]);
    let mut r2 = shorter.record();
    assert_eq!(
        vram_record_verify(ctx.0, r2.as_ptr(), r2.len(), other.0),
        vram_status::VRAM_ERR_INTEGRITY
    );
    r2[20] ^= 1;
    assert_eq!(
        vram_record_verify(ctx.0, r2.as_ptr(), r2.len(), shorter.0),
        vram_status::VRAM_ERR_BAD_SEAL
    );
}

#[test]
fn sealing_against_an_expected_root_keeps_only_the_right_bytes() {
    let ctx = Ctx::new();
    let data = bytes(3 * MIB + 1, 9);
    let root = reference_root(&data, 4096);
    let used = ctx.used();
    let mut wrong = data.clone();
    wrong[2 * MIB] ^= 0x80;
    assert_eq!(
        seal_expect(&ctx, "w", &wrong, &root).err(),
        Some(vram_status::VRAM_ERR_INTEGRITY)
    );
    assert!(
        last_error().contains("differs from expected_root"),
        "{}",
        last_error()
    );
    assert_eq!(ctx.used(), used, "a refused tensor stayed counted");
    // The id stayed free: the right bytes seal under it.
    let ok = seal_expect(&ctx, "w", &data, &root).unwrap();
    assert_eq!(ok.root(), root);
    assert_eq!(ctx.verify(&ok).0, vram_status::VRAM_OK);
    let id = c"x";
    let mut out = ptr::null_mut();
    assert_eq!(
        vram_seal_expect(
            ctx.0,
            id.as_ptr(),
            data.as_ptr().cast(),
            data.len(),
            ptr::null(),
            &mut out
        ),
        vram_status::VRAM_ERR_NULL_ARGUMENT
    );
    assert!(last_error().contains("expected_root"));
}

/// The child half of `a_second_process_authenticates_yesterdays_records`: runs only in the
/// process that test starts.
#[test]
fn child_process_checks_the_parents_records() {
    let Some(dir) = std::env::var_os(CHILD_DIR).map(PathBuf::from) else {
        return; // not the child
    };
    let ctx = Ctx::new();
    for (i, (name, data)) in tensors().into_iter().enumerate() {
        let record = std::fs::read(dir.join(format!("{i}.record"))).unwrap();
        let info = open(&ctx, &record).expect("yesterday's record authenticates");
        assert_eq!(id_of(&info), name);
        // Re-seal today's copy of the bytes against the record's root, then check the record.
        let shard = seal_expect(&ctx, &name, &data, &info.root).expect("same bytes, same root");
        assert_eq!(
            vram_record_verify(ctx.0, record.as_ptr(), record.len(), shard.0),
            vram_status::VRAM_OK,
            "{}",
            last_error()
        );
    }
    // Yesterday's manifest authenticates here and today's re-sealed shards match it.
    let bytes = std::fs::read(dir.join("manifest.json")).unwrap();
    let mut m = ptr::null_mut();
    assert_eq!(
        vram_manifest_import(ctx.0, bytes.as_ptr(), bytes.len(), &mut m),
        vram_status::VRAM_OK,
        "{}",
        last_error()
    );
    let resealed: Vec<Shard> = tensors().iter().map(|(n, d)| ctx.seal(n, d)).collect();
    let p: Vec<*const vram_shard> = resealed.iter().map(|s| s.0.cast_const()).collect();
    assert_eq!(
        vram_manifest_check(
            ctx.0,
            m,
            p.as_ptr(),
            p.len(),
            ptr::null_mut(),
            ptr::null_mut()
        ),
        vram_status::VRAM_OK,
        "{}",
        last_error()
    );
    vram_manifest_free(m);
    // A record altered on disk is not authentic in the child either.
    let mut r = std::fs::read(dir.join("0.record")).unwrap();
    r[30] ^= 4;
    assert_eq!(open(&ctx, &r).err(), Some(vram_status::VRAM_ERR_BAD_SEAL));
    println!(
        "child: {} records and the manifest authenticated",
        tensors().len()
    );
}

#[test]
fn a_second_process_authenticates_yesterdays_records() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return; // the child runs only its own half
    }
    let dir = std::env::temp_dir().join(format!("vram-provenance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    {
        let ctx = Ctx::new();
        let mut shards = Vec::new();
        for (i, (name, data)) in tensors().into_iter().enumerate() {
            let shard = ctx.seal(&name, &data);
            std::fs::write(dir.join(format!("{i}.record")), shard.record()).unwrap();
            shards.push(shard);
        }
        let p: Vec<*const vram_shard> = shards.iter().map(|s| s.0.cast_const()).collect();
        let mut m = ptr::null_mut();
        assert_eq!(
            vram_manifest_from_shards(
                ctx.0,
                c"provenance-model".as_ptr(),
                p.as_ptr(),
                p.len(),
                ptr::null(),
                &mut m
            ),
            vram_status::VRAM_OK
        );
        let mut n = 0;
        vram_manifest_export(m, ptr::null_mut(), 0, &mut n);
        let mut buf = vec![0u8; n];
        assert_eq!(
            vram_manifest_export(m, buf.as_mut_ptr(), n, &mut n),
            vram_status::VRAM_OK
        );
        std::fs::write(dir.join("manifest.json"), buf).unwrap();
        vram_manifest_free(m);
    } // this process's context and shards are gone
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_checks_the_parents_records",
            "--nocapture",
        ])
        .env(CHILD_DIR, &dir)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(
        text.contains("child: 3 records and the manifest authenticated"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
