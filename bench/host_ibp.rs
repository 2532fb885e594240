//! Sound IBP on the CPU (host backend) against a plain NumPy float64 IBP measured in the same
//! run on the same machine (bench/ibp_numpy.py; not sound), on ACAS Xu 1_1: median time per
//! call at batch 1, 64, 4096. Python with NumPy: `VRAM_PYTHON` (default `python3`); without it
//! the baseline is reported missing, never invented.
//!
//! `cargo bench --bench host_ibp`

#[path = "host_common.rs"]
mod host_common;

use std::ffi::CString;
use std::ptr;
use std::time::Instant;

use vram::*;

fn main() {
    let dir = std::env::var("VRAM_ACASXU_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/acasxu").into());
    let nnet = format!("{dir}/nnet/ACASXU_experimental_v2a_1_1.nnet");
    if !std::path::Path::new(&nnet).is_file() {
        println!("SKIPPED host_ibp: {nnet} not found (set VRAM_ACASXU_DIR)");
        return;
    }
    let ctx = host_common::host_ctx();
    let mut m = ptr::null_mut();
    let c = CString::new(nnet.clone()).unwrap();
    assert_eq!(
        ibp_model_from_nnet(ctx, c.as_ptr(), &mut m),
        vram_status::VRAM_OK
    );
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("host_ibp: ACAS Xu 1_1 (5-50x6-5), {threads} cores, median ms per call");
    let batches = [1usize, 64, 4096];
    let mut ours = Vec::new();
    for &batch in &batches {
        // Physical boxes across the input range (the loader clips and normalises).
        let (lo, hi): (Vec<f32>, Vec<f32>) = (0..batch * 5)
            .map(|i| {
                let t = ((i * 7919) % 1000) as f32 / 1000.0;
                let c = -0.5 + t;
                (c - 0.01, c + 0.01)
            })
            .unzip();
        let (mut ol, mut oh) = (vec![0f32; batch * 5], vec![0f32; batch * 5]);
        let reps = (20_000 / batch).clamp(20, 5000);
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            let t = Instant::now();
            let s = ibp_propagate(
                m,
                batch,
                lo.as_ptr(),
                hi.as_ptr(),
                ol.as_mut_ptr(),
                oh.as_mut_ptr(),
            );
            times.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(s, vram_status::VRAM_OK);
        }
        times.sort_by(f64::total_cmp);
        let med = times[times.len() / 2];
        ours.push(med);
        println!("libvram_sound {batch} {med:.4}");
    }
    let python = std::env::var("VRAM_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/ibp_numpy.py");
    let out = std::process::Command::new(&python)
        .arg(script)
        .arg(&nnet)
        .args(batches.iter().map(|b| b.to_string()))
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            print!("{text}");
            for (line, (&batch, ours)) in text.lines().zip(batches.iter().zip(&ours)) {
                if let Some(ms) = line
                    .split_whitespace()
                    .nth(2)
                    .and_then(|v| v.parse::<f64>().ok())
                {
                    println!(
                        "batch {batch}: libvram {ours:.4} ms, numpy f64 {ms:.4} ms: {:.2} x numpy's speed",
                        ms / ours
                    );
                }
            }
        }
        _ => println!("numpy baseline: not measured ({python} with numpy not available)"),
    }
    ibp_model_free(m);
    vram_ctx_free(ctx);
}
