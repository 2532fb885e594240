//! Host-backend scrubber benchmark: a scrubber over 1 GiB of sealed shards (host memory) at
//! 1 thread and at every core, through the C ABI, beside single-thread SHA-256 (the `sha2`
//! crate) over the same bytes in the same run. Reports the scrubber's own pass time and rate.
//!
//! `cargo bench --bench host_scrub -- [MiB]` (default 1024). Not a test: it asserts nothing
//! about speed; results are recorded in bench/results/.

use std::ptr;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use vram::*;

#[path = "host_common.rs"]
mod host_common;

fn stats(s: *const vram_scrubber) -> vram_scrub_stats {
    // SAFETY: all-zero is a valid vram_scrub_stats.
    let mut st: vram_scrub_stats = unsafe { std::mem::zeroed() };
    st.struct_size = size_of::<vram_scrub_stats>() as u32;
    assert_eq!(vram_scrubber_stats(s, &mut st), vram_status::VRAM_OK);
    st
}

fn main() {
    let mib: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1024);
    let shard_mib = 64usize.min(mib);
    let shards_n = mib / shard_mib;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..shard_mib << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ctx = host_common::host_ctx();
    let mut shards = Vec::new();
    for i in 0..shards_n {
        let id = std::ffi::CString::new(format!("t.{i}")).unwrap();
        let mut s = ptr::null_mut();
        assert_eq!(
            vram_seal(ctx, id.as_ptr(), data.as_ptr().cast(), data.len(), &mut s),
            vram_status::VRAM_OK
        );
        shards.push(s.cast_const());
    }
    // The median of five: one timing of 64 MiB is at the mercy of the VM's neighbours.
    let mut sha: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(Sha256::digest(&data));
            data.len() as f64 / 1e9 / t.elapsed().as_secs_f64()
        })
        .collect();
    sha.sort_by(f64::total_cmp);
    let sha = sha[2];

    println!("# Host scrubber, {mib} MiB in {shards_n} shards, {cores} cores\n");
    println!("single-thread SHA-256 (sha2) on the same bytes, median of 5: {sha:.2} GB/s\n");
    println!("| threads | pass (s) | scrub GB/s | per thread ÷ single-thread SHA-256 |");
    println!("|---|---|---|---|");
    for threads in [1, cores] {
        // SAFETY: all-zero is a valid vram_scrubber_options.
        let mut o: vram_scrubber_options = unsafe { std::mem::zeroed() };
        o.struct_size = size_of::<vram_scrubber_options>() as u32;
        o.max_threads = threads as u32;
        let mut s = ptr::null_mut();
        assert_eq!(
            vram_scrubber_new(ctx, shards.as_ptr(), shards.len(), &o, &mut s),
            vram_status::VRAM_OK
        );
        // The first pass warms up; then the mean of three.
        while stats(s).passes < 1 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let (p0, t0) = (stats(s).passes, Instant::now());
        while stats(s).passes < p0 + 3 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let pass = t0.elapsed().as_secs_f64() / 3.0;
        let rate = (shards_n * data.len()) as f64 / 1e9 / pass;
        println!(
            "| {threads} | {pass:.3} | {rate:.2} | {:.2} |",
            rate / threads as f64 / sha
        );
        vram_scrubber_free(s);
    }
    for s in shards {
        vram_shard_free(s.cast_mut());
    }
    vram_ctx_free(ctx);
}
