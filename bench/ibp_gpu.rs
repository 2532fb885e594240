//! IBP benchmark on the GPU through the C API (boxes in device memory, as PyTorch's would be):
//! median time of ibp_propagate_ex per network and batch, beside the weight-read floor
//! (weight bytes ÷ device copy bandwidth, measured in the same run). Writes each network's
//! weights, boxes and our bounds as raw f32 files under $VRAM_IBP_BENCH_DIR (default
//! /tmp/ibpbench) for bench/ibp_pytorch.py, which times PyTorch on the same data and counts
//! PyTorch bounds that fail to enclose ours.
//!
//! `cargo bench --bench ibp_gpu` — skips, saying so, without a GPU.

#[path = "../tests/common/mod.rs"]
mod common;
#[cfg(vram_cuda)]
#[path = "../tests/common/cuda.rs"]
mod cuda;

#[cfg(not(vram_cuda))]
fn main() {
    println!("SKIPPED: libvram was built without CUDA");
}

#[cfg(vram_cuda)]
fn main() {
    bench::run();
}

#[cfg(vram_cuda)]
mod bench {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::ptr;
    use std::time::Instant;

    use super::common::*;
    use super::cuda::*;
    use vram::*;

    struct Rng(u64);
    impl Rng {
        fn unit(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
    }

    fn write(path: &Path, v: &[f32]) {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(path, bytes).unwrap();
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// Times ibp_propagate_ex on device boxes; returns (median ms, host copies of the bounds).
    fn time(
        model: *mut ibp_model,
        batch: usize,
        lo: &[f32],
        hi: &[f32],
        runs: usize,
    ) -> (f64, Vec<f32>, Vec<f32>) {
        let n_out = batch * ibp_model_output_size(model);
        let (dl, dh) = (DevMem::from_f32(lo), DevMem::from_f32(hi));
        let (ol, oh) = (DevMem::new(n_out * 4), DevMem::new(n_out * 4));
        let opts = device_options(ptr::null_mut());
        let go = || {
            let s = ibp_propagate_ex(
                model,
                batch,
                dl.0.cast(),
                dh.0.cast(),
                ol.0.cast(),
                oh.0.cast(),
                &opts,
            );
            assert_eq!(s, vram_status::VRAM_OK, "{}", last_error());
        };
        go();
        let mut ms = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            go();
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        if batch == 1 {
            call_overhead(
                model,
                [dl.0.cast(), dh.0.cast()],
                [ol.0.cast(), oh.0.cast()],
                [lo, hi],
                median(ms.clone()),
            );
        }
        (median(ms), ol.f32s(n_out), oh.f32s(n_out))
    }

    /// Where a batch-1 call's time goes: the host-timed call on libvram's own stream (given),
    /// the same on a caller's stream, and the GPU's span between events recorded on that
    /// stream just before and after the call (the rest is host work at the call's two ends);
    /// then the same call with boxes in host memory (plain `ibp_propagate`, C's default).
    fn call_overhead(
        model: *mut ibp_model,
        inp: [*const f32; 2],
        out: [*mut f32; 2],
        host_in: [&[f32]; 2],
        own_ms: f64,
    ) {
        let mut s = ptr::null_mut();
        let (mut a, mut b) = (ptr::null_mut(), ptr::null_mut());
        // SAFETY: each call writes one handle.
        unsafe {
            ok(cudaStreamCreate(&mut s), "cudaStreamCreate");
            ok(cudaEventCreate(&mut a), "cudaEventCreate");
            ok(cudaEventCreate(&mut b), "cudaEventCreate");
        }
        let opts = device_options(s);
        let (mut host, mut gpu) = (Vec::new(), Vec::new());
        for _ in 0..21 {
            let t = Instant::now();
            // SAFETY: live stream and events of this function.
            unsafe { ok(cudaEventRecord(a, s), "cudaEventRecord") };
            let st = ibp_propagate_ex(model, 1, inp[0], inp[1], out[0], out[1], &opts);
            assert_eq!(st, vram_status::VRAM_OK, "{}", last_error());
            let mut ms = 0f32;
            // SAFETY: as above.
            unsafe {
                ok(cudaEventRecord(b, s), "cudaEventRecord");
                ok(cudaEventSynchronize(b), "cudaEventSynchronize");
                ok(cudaEventElapsedTime(&mut ms, a, b), "cudaEventElapsedTime");
            }
            host.push(t.elapsed().as_secs_f64() * 1e3);
            gpu.push(f64::from(ms));
        }
        // SAFETY: created above, destroyed once.
        unsafe {
            cudaEventDestroy(a);
            cudaEventDestroy(b);
            cudaStreamDestroy(s);
        }
        let n_out = ibp_model_output_size(model);
        let (mut hl, mut hh) = (vec![0f32; n_out], vec![0f32; n_out]);
        let mut host_boxes = Vec::new();
        for _ in 0..21 {
            let t = Instant::now();
            let st = ibp_propagate(
                model,
                1,
                host_in[0].as_ptr(),
                host_in[1].as_ptr(),
                hl.as_mut_ptr(),
                hh.as_mut_ptr(),
            );
            assert_eq!(st, vram_status::VRAM_OK, "{}", last_error());
            host_boxes.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let dev_lo = download_f32(out[0].cast(), n_out);
        let same = hl
            .iter()
            .map(|x| x.to_bits())
            .eq(dev_lo.iter().map(|x| x.to_bits()));
        assert!(same, "host-box and device-box bounds differ");
        eprintln!(
            "call overhead, batch 1: own stream {own_ms:.4} ms; caller's stream {:.4} ms, of which GPU span {:.4} ms; boxes in host memory {:.4} ms",
            median(host),
            median(gpu),
            median(host_boxes)
        );
    }

    fn boxes(r: &mut Rng, batch: usize, n: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
        let c: Vec<f32> = (0..batch * n).map(|_| r.unit()).collect();
        (
            c.iter().map(|v| v - eps).collect(),
            c.iter().map(|v| v + eps).collect(),
        )
    }

    // The ACAS Xu input bounds below are the NNet file's own (written to 6 digits), not π.
    #[allow(clippy::approx_constant)]
    pub fn run() {
        if gpus() == 0 {
            println!("SKIPPED: no GPU on this machine");
            return;
        }
        let root = PathBuf::from(
            std::env::var("VRAM_IBP_BENCH_DIR").unwrap_or_else(|_| "/tmp/ibpbench".into()),
        );
        std::fs::create_dir_all(&root).unwrap();
        let ctx = Ctx::with_options(&options(vram_backend::VRAM_BACKEND_CUDA, &KEY));

        // Copy bandwidth (bytes read + written per second), for the batch-1 floor.
        let (a, b) = (DevMem::new(1 << 30), DevMem::new(1 << 30));
        let mut v = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            ok(
                unsafe { cudaMemcpy(b.0.cast(), a.0.cast(), 1 << 30, D2D) },
                "D2D",
            );
            ok(unsafe { cudaDeviceSynchronize() }, "sync");
            v.push(2.0 * (1u64 << 30) as f64 / t.elapsed().as_secs_f64());
        }
        let copy_bw = median(v);
        drop((a, b));
        let mut table = vec![
            "| network | batch | libvram ibp_propagate (ms) | weight-read floor (ms) |".to_string(),
            "|---|---|---|---|".into(),
        ];
        let mut meta = String::from("[");

        for (name, width, depth, batches) in [
            ("mlp8x4096", 4096usize, 8usize, vec![1usize, 64, 1024]),
            ("mlp6x1024", 1024, 6, vec![1, 4096]),
        ] {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let mut r = Rng(0x9e37_79b9 + width as u64);
            let mut bld = ptr::null_mut();
            let cname = std::ffi::CString::new(name).unwrap();
            assert_eq!(
                ibp_builder_new(ctx.0, cname.as_ptr(), [width as u64].as_ptr(), 1, &mut bld),
                vram_status::VRAM_OK
            );
            let scale = 1.0 / (width as f32).sqrt();
            for l in 0..depth {
                let w: Vec<f32> = (0..width * width).map(|_| r.unit() * scale).collect();
                let bias: Vec<f32> = (0..width).map(|_| r.unit() * 0.01).collect();
                write(&dir.join(format!("w{l}.bin")), &w);
                write(&dir.join(format!("b{l}.bin")), &bias);
                assert_eq!(
                    ibp_builder_add_linear(
                        bld,
                        IBP_PREV,
                        width as u64,
                        w.as_ptr(),
                        bias.as_ptr(),
                        ptr::null_mut()
                    ),
                    vram_status::VRAM_OK
                );
                if l + 1 < depth {
                    assert_eq!(
                        ibp_builder_add_relu(bld, IBP_PREV, ptr::null_mut()),
                        vram_status::VRAM_OK
                    );
                }
            }
            let mut model = ptr::null_mut();
            assert_eq!(
                ibp_builder_build(bld, &mut model),
                vram_status::VRAM_OK,
                "{}",
                last_error()
            );
            let weight_bytes = (depth * width * width * 4) as f64;
            for &batch in &batches {
                let (lo, hi) = boxes(&mut r, batch, width, 0.001);
                let (ms, ol, oh) = time(model, batch, &lo, &hi, if batch >= 1024 { 5 } else { 20 });
                let floor = if batch == 1 {
                    format!("{:.3}", weight_bytes / copy_bw * 1e3)
                } else {
                    "—".into()
                };
                table.push(format!("| {name} | {batch} | {ms:.3} | {floor} |"));
                for (f, v) in [("lo", &lo), ("hi", &hi), ("ours_lo", &ol), ("ours_hi", &oh)] {
                    write(&dir.join(format!("{f}_{batch}.bin")), v);
                }
                meta.push_str(&format!("{{\"name\":\"{name}\",\"kind\":\"mlp\",\"width\":{width},\"depth\":{depth},\"batch\":{batch},\"ms\":{ms}}},"));
            }
            ibp_model_free(model);
        }

        // ACAS Xu from its NNet file, batch 16384 random sub-boxes of the input domain.
        let nnet = std::env::var("VRAM_ACASXU_NNET")
            .unwrap_or_else(|_| ".gpu/acasxu/ACASXU_experimental_v2a_1_1.nnet".into());
        if Path::new(&nnet).exists() {
            let mut model = ptr::null_mut();
            let c = std::ffi::CString::new(nnet.clone()).unwrap();
            assert_eq!(
                ibp_model_from_nnet(ctx.0, c.as_ptr(), &mut model),
                vram_status::VRAM_OK,
                "{}",
                last_error()
            );
            let batch = 16384;
            let (mins, maxs) = (
                [0.0f32, -3.141593, -3.141593, 100.0, 0.0],
                [60760.0f32, 3.141593, 3.141593, 1200.0, 1200.0],
            );
            let mut r = Rng(77);
            let mut lo = Vec::with_capacity(batch * 5);
            let mut hi = Vec::with_capacity(batch * 5);
            for _ in 0..batch {
                for i in 0..5 {
                    let span = maxs[i] - mins[i];
                    let c = mins[i] + (r.unit() * 0.5 + 0.5) * span;
                    lo.push(c - 0.01 * span);
                    hi.push(c + 0.01 * span);
                }
            }
            let (ms, ol, oh) = time(model, batch, &lo, &hi, 20);
            table.push(format!("| ACAS Xu 1_1 (NNet) | {batch} | {ms:.3} | — |"));
            let dir = root.join("acasxu");
            std::fs::create_dir_all(&dir).unwrap();
            for (f, v) in [("lo", &lo), ("hi", &hi), ("ours_lo", &ol), ("ours_hi", &oh)] {
                write(&dir.join(format!("{f}_{batch}.bin")), v);
            }
            meta.push_str(&format!("{{\"name\":\"acasxu\",\"kind\":\"nnet\",\"path\":\"{nnet}\",\"batch\":{batch},\"ms\":{ms}}},"));
            ibp_model_free(model);
        } else {
            table.push(format!("| ACAS Xu | 16384 | not run: {nnet} missing | — |"));
        }
        // CIFAR-style: conv 3→32 and 32→64 (3×3, stride 2, pad 1), then linear 4096→512→10.
        {
            let name = "cifar_conv";
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let mut r = Rng(0xc1fa);
            let mut bld = ptr::null_mut();
            let shape = [3u64, 32, 32];
            assert_eq!(
                ibp_builder_new(ctx.0, c"cifar_conv".as_ptr(), shape.as_ptr(), 3, &mut bld),
                vram_status::VRAM_OK
            );
            for (k, (cin, cout)) in [(3usize, 32usize), (32, 64)].into_iter().enumerate() {
                let fan = (cin * 9) as f32;
                let w: Vec<f32> = (0..cout * cin * 9).map(|_| r.unit() / fan.sqrt()).collect();
                let b: Vec<f32> = (0..cout).map(|_| r.unit() * 0.01).collect();
                write(&dir.join(format!("conv{k}_w.bin")), &w);
                write(&dir.join(format!("conv{k}_b.bin")), &b);
                let p = ibp_conv2d_params {
                    struct_size: size_of::<ibp_conv2d_params>() as u32,
                    out_channels: cout as u64,
                    kernel_h: 3,
                    kernel_w: 3,
                    stride_h: 2,
                    stride_w: 2,
                    pad_h: 1,
                    pad_w: 1,
                    dilation_h: 1,
                    dilation_w: 1,
                    groups: 1,
                };
                assert_eq!(
                    ibp_builder_add_conv2d(
                        bld,
                        IBP_PREV,
                        &p,
                        w.as_ptr(),
                        b.as_ptr(),
                        ptr::null_mut()
                    ),
                    vram_status::VRAM_OK
                );
                assert_eq!(
                    ibp_builder_add_relu(bld, IBP_PREV, ptr::null_mut()),
                    vram_status::VRAM_OK
                );
            }
            assert_eq!(
                ibp_builder_add_flatten(bld, IBP_PREV, ptr::null_mut()),
                vram_status::VRAM_OK
            );
            for (k, (fi, fo)) in [(4096usize, 512usize), (512, 10)].into_iter().enumerate() {
                let w: Vec<f32> = (0..fi * fo)
                    .map(|_| r.unit() / (fi as f32).sqrt())
                    .collect();
                let b: Vec<f32> = (0..fo).map(|_| r.unit() * 0.01).collect();
                write(&dir.join(format!("fc{k}_w.bin")), &w);
                write(&dir.join(format!("fc{k}_b.bin")), &b);
                assert_eq!(
                    ibp_builder_add_linear(
                        bld,
                        IBP_PREV,
                        fo as u64,
                        w.as_ptr(),
                        b.as_ptr(),
                        ptr::null_mut()
                    ),
                    vram_status::VRAM_OK
                );
                if k == 0 {
                    assert_eq!(
                        ibp_builder_add_relu(bld, IBP_PREV, ptr::null_mut()),
                        vram_status::VRAM_OK
                    );
                }
            }
            let mut model = ptr::null_mut();
            assert_eq!(
                ibp_builder_build(bld, &mut model),
                vram_status::VRAM_OK,
                "{}",
                last_error()
            );
            let batch = 1024;
            let (lo, hi) = boxes(&mut r, batch, 3 * 32 * 32, 0.001);
            let (ms, ol, oh) = time(model, batch, &lo, &hi, 10);
            table.push(format!("| {name} | {batch} | {ms:.3} | — |"));
            for (f, v) in [("lo", &lo), ("hi", &hi), ("ours_lo", &ol), ("ours_hi", &oh)] {
                write(&dir.join(format!("{f}_{batch}.bin")), v);
            }
            meta.push_str(&format!(
                "{{\"name\":\"{name}\",\"kind\":\"cifar\",\"batch\":{batch},\"ms\":{ms}}},"
            ));
            ibp_model_free(model);
        }
        meta.pop();
        meta.push(']');
        std::fs::write(root.join("meta.json"), meta).unwrap();
        println!(
            "device copy bandwidth (read + write): {:.0} GB/s",
            copy_bw / 1e9
        );
        let mut out = std::io::stdout();
        for line in table {
            writeln!(out, "{line}").ok();
        }
    }
}
