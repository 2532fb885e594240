//! Sound linear bounds on the GPU (cuda/crown.cu) for ACAS Xu 1_1 from ONNX: median time of one
//! `linear_bounds` call (boxes in host memory, copies and launch included) per batch size, and
//! the same boxes' interval bounds on the GPU for scale. The slope over batch sizes is the
//! kernel's cost per box; the time at batch 1 is the fixed cost of a call.
//!
//! The second column is the intersected relaxation (what `IBP_METHOD_LINEAR` and the certify
//! search run); the fourth, the guarded one (`IBP_METHOD_LINEAR_GUARDED`: a second pass where
//! the intersection changed a bound). The last three columns are what a PyTorch or CUDA
//! caller gets: `ibp_propagate_ex` on boxes already in device memory (IBP, the linear bounds,
//! the narrowing to f32; no copies) with `IBP_METHOD_LINEAR`, `IBP_METHOD_LINEAR_GUARDED` and
//! `IBP_METHOD_LINEAR_BOTH` (the intersected relaxation and textbook CROWN, the better bound
//! of each row).
//!
//! `cargo bench --bench gpu_linear` (needs a GPU; says SKIPPED without one)

use std::sync::Arc;
use std::time::Instant;

use vram::backend::BackendChoice;
use vram::context::{Context, ContextOptions};
use vram::ibp::crown::{Linear, Relaxation};
use vram::ibp::gpu_entry;

#[path = "../tests/common/cuda.rs"]
mod cuda;

/// Median milliseconds of `reps` calls of `f`, after one warm-up call.
fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let dir = std::env::var("VRAM_ACASXU_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/acasxu").into());
    let onnx = format!("{dir}/onnx/ACASXU_experimental_v2a_1_1.onnx");
    if !std::path::Path::new(&onnx).is_file() {
        println!("SKIPPED gpu_linear: {onnx} not found (set VRAM_ACASXU_DIR)");
        return;
    }
    let opts = ContextOptions {
        backend: BackendChoice::Cuda,
        device: 0,
        secret: &[7u8; 32],
        capacity_bytes: 0,
        allow_fault_drills: false,
        max_threads: 0,
    };
    let ctx = match Context::new(&opts) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            println!("SKIPPED gpu_linear: no usable GPU ({e})");
            return;
        }
    };
    let m = vram::ibp::onnx::load(ctx, std::path::Path::new(&onnx), None).expect("model");
    // Output bounds: rows +e_j and -e_j.
    let mut rows = vec![0.0; 50];
    for j in 0..5 {
        rows[j * 5 + j] = 1.0;
        rows[25 + j * 5 + j] = -1.0;
    }
    println!("gpu_linear: ACAS Xu 1_1 (ONNX, 5-50x6-5), boxes of half-width 0.01, 10 output rows");
    println!(
        "| boxes | linear bounds, intersected (ms) | per box (us) | the same, guarded (ms) | interval bounds (ms) | ibp_propagate, linear method (ms) | the same, boxes in device memory (ms) | guarded, device memory (ms) | both relaxations, device memory (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    // VRAM_GPU_LINEAR_BATCH=N: that batch size only (to profile one size's kernel).
    let only: Option<usize> = std::env::var("VRAM_GPU_LINEAR_BATCH")
        .ok()
        .and_then(|v| v.parse().ok());
    let batches = only.map_or(vec![1usize, 256, 4096, 16384, 65536], |n| vec![n]);
    for batch in batches {
        let (mut lo, mut hi) = (Vec::with_capacity(batch * 5), Vec::with_capacity(batch * 5));
        for _ in 0..batch * 5 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let c = -0.4 + 0.8 * ((s >> 11) as f64 / (1u64 << 53) as f64);
            lo.push(c - 0.01);
            hi.push(c + 0.01);
        }
        let reps = if batch >= 16384 { 5 } else { 11 };
        let kernel_ms = |relax: Relaxation| {
            median_ms(reps, || {
                let b = gpu_entry::linear_bounds(&m, &lo, &hi, &rows, 10, false, None, relax, None)
                    .expect("bounds");
                assert_eq!(b.lower.len(), batch * 10);
            })
        };
        let ms = kernel_ms(Relaxation::Intersected);
        let guarded_ms = kernel_ms(Relaxation::Guarded);
        let (flo, fhi): (Vec<f32>, Vec<f32>) = (
            lo.iter().map(|&v| v as f32).collect(),
            hi.iter().map(|&v| v as f32).collect(),
        );
        let (mut ol, mut oh) = (vec![0f32; batch * 5], vec![0f32; batch * 5]);
        let req = vram::ibp::Request {
            batch,
            in_lo: &flo,
            in_hi: &fhi,
            spec: None,
        };
        let ibp_ms = median_ms(reps, || {
            gpu_entry::propagate_host_boxes(&m, &req, &mut ol, &mut oh, None).expect("ibp");
        });
        // What ibp_propagate with IBP_METHOD_LINEAR runs: f32 boxes, IBP first, then the
        // linear bounds of the output rows, narrowed to f32.
        let user_ms = median_ms(reps, || {
            gpu_entry::linear_host_boxes(&m, &req, &mut ol, &mut oh, Linear::Intersected, None)
                .expect("linear");
        });
        let (dl, dh) = (cuda::DevMem::from_f32(&flo), cuda::DevMem::from_f32(&fhi));
        let (dol, doh) = (
            cuda::DevMem::new(batch * 5 * 4),
            cuda::DevMem::new(batch * 5 * 4),
        );
        let on_device = |method: Linear| {
            median_ms(reps, || {
                // SAFETY: device buffers of batch × 5 floats each, alive for the call.
                unsafe {
                    gpu_entry::propagate_device(
                        &m,
                        batch,
                        [dl.0.cast(), dh.0.cast()],
                        [dol.0.cast(), doh.0.cast()],
                        None,
                        Some(method),
                        None,
                    )
                }
                .expect("linear, device boxes");
            })
        };
        let both_ms = on_device(Linear::Both);
        let (both_lo, both_hi) = (dol.f32s(batch * 5), doh.f32s(batch * 5));
        let guarded_dev_ms = on_device(Linear::Guarded);
        let (guard_lo, guard_hi) = (dol.f32s(batch * 5), doh.f32s(batch * 5));
        let device_ms = on_device(Linear::Intersected);
        // The same bounds, up to the last f32 step of the narrowing (directed on the device,
        // one step past round-to-nearest on the host).
        let same = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= 1e-6 * (1.0 + y.abs()))
        };
        let (dev_lo, dev_hi) = (dol.f32s(batch * 5), doh.f32s(batch * 5));
        assert!(same(&dev_lo, &ol) && same(&dev_hi, &oh));
        // Both relaxations, and the guarded one: never wider than the intersected one alone.
        assert!(both_lo.iter().zip(&dev_lo).all(|(b, o)| b >= o));
        assert!(both_hi.iter().zip(&dev_hi).all(|(b, o)| b <= o));
        assert!(guard_lo.iter().zip(&dev_lo).all(|(b, o)| b >= o));
        assert!(guard_hi.iter().zip(&dev_hi).all(|(b, o)| b <= o));
        println!(
            "| {batch} | {ms:.3} | {:.2} | {guarded_ms:.3} | {ibp_ms:.3} | {user_ms:.3} | {device_ms:.3} | {guarded_dev_ms:.3} | {both_ms:.3} |",
            1e3 * ms / batch as f64
        );
    }
}
