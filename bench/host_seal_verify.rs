//! Host-backend benchmark: seal and verify GB/s through the C ABI, beside single-thread
//! SHA-256 (the `sha2` crate) over the same bytes, all in one run.
//!
//! `cargo bench --bench host_seal_verify -- [MiB]` (default 1024). Not a test: it asserts
//! nothing about speed; results are recorded in bench/results/.

use std::ptr;
use std::time::Instant;

use sha2::{Digest, Sha256};
use vram::*;

#[path = "host_common.rs"]
mod host_common;

fn fill(buf: &mut [u8], mut state: u64) {
    for chunk in buf.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let b = state.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mib: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1024);
    let len = mib << 20;
    let gb = len as f64 / 1e9;
    let mut data = vec![0u8; len];
    fill(&mut data, 0x9e37_79b9_7f4a_7c15);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let ctx = host_common::host_ctx();

    let runs = 5;
    let mut sha = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let d = Sha256::digest(&data);
        std::hint::black_box(d);
        sha.push(gb / t.elapsed().as_secs_f64());
    }
    let mut seal = Vec::new();
    let mut shard: *mut vram_shard = ptr::null_mut();
    for _ in 0..runs {
        if !shard.is_null() {
            vram_shard_free(shard);
        }
        let t = Instant::now();
        let s = vram_seal(
            ctx,
            c"bench.weight".as_ptr(),
            data.as_ptr().cast(),
            len,
            &mut shard,
        );
        seal.push(gb / t.elapsed().as_secs_f64());
        assert_eq!(s, vram_status::VRAM_OK);
    }
    let mut verify = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let s = vram_verify(ctx, shard, ptr::null_mut());
        verify.push(gb / t.elapsed().as_secs_f64());
        assert_eq!(s, vram_status::VRAM_OK);
    }
    vram_shard_free(shard);

    // vram_load_safetensors of the same bytes as one tensor of a file in the page cache.
    let dir = std::env::temp_dir().join(format!("vram-host-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    let header = format!(
        "{{\"bench.weight\":{{\"dtype\":\"U8\",\"shape\":[{len}],\"data_offsets\":[0,{len}]}}}}"
    );
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&data);
    std::fs::write(&path, &file).unwrap();
    drop(file);
    let _ = std::fs::read(&path).map(|b| b.len()); // into the page cache
    let cpath = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let mut load = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let mut model = ptr::null_mut();
        let s = vram_load_safetensors(ctx, cpath.as_ptr(), ptr::null(), &mut model);
        load.push(gb / t.elapsed().as_secs_f64());
        assert_eq!(s, vram_status::VRAM_OK);
        vram_model_free(model);
    }
    std::fs::remove_dir_all(&dir).ok();
    vram_ctx_free(ctx);
    let load = median(load);

    let sha = median(sha);
    let seal = median(seal);
    let verify = median(verify);
    let target = 0.8 * cores as f64 * sha;
    println!("libvram host backend, {mib} MiB shard, {cores} cores, median of {runs} runs");
    println!("| what | GB/s |");
    println!("|---|---|");
    println!("| single-thread SHA-256 (sha2), same bytes | {sha:.2} |");
    println!("| vram_seal (copy + hash) | {seal:.2} |");
    println!("| vram_verify | {verify:.2} |");
    println!(
        "| vram_load_safetensors (file in the page cache, read into the shard + hash) | {load:.2} |"
    );
    println!("| target: 0.8 x cores x single-thread | {target:.2} |");
    println!(
        "load / (cores x single-thread) = {:.2} (target >= 0.8)",
        load / (cores as f64 * sha)
    );
    println!(
        "verify / (cores x single-thread) = {:.2}",
        verify / (cores as f64 * sha)
    );
}
