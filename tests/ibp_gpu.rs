//! IBP on the GPU: bounds agree with the CPU path to within rounding and enclose the exact
//! bounds, on both linear kernels (small-batch GEMV, large-batch tiles), with boxes in host and
//! device memory. Without a GPU every test says it is skipped.

mod common;
#[path = "common/ibp.rs"]
mod ibp;

#[cfg(not(vram_cuda))]
#[test]
fn ibp_gpu_skipped_without_cuda_build() {
    println!("SKIPPED: libvram was built without CUDA");
}

#[cfg(vram_cuda)]
#[path = "common/cuda.rs"]
mod cuda;

#[cfg(vram_cuda)]
mod on_gpu {
    use std::ptr;

    use super::common::*;
    use super::cuda::*;
    use super::ibp::*;
    use vram::*;

    fn rng(seed: &mut u64) -> f32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn net(seed: &mut u64, dims: &[usize]) -> Net {
        let mut layers = Vec::new();
        for k in 0..dims.len() - 1 {
            let (i, o) = (dims[k], dims[k + 1]);
            let scale = 1.0 / (i as f32).sqrt();
            layers.push(Layer::Linear {
                out: o,
                w: (0..i * o).map(|_| rng(seed) * scale).collect(),
                b: (0..o).map(|_| rng(seed) * 0.1).collect(),
            });
            if k + 2 < dims.len() {
                layers.push(
                    [Layer::Relu, Layer::Leaky(0.05), Layer::Tanh, Layer::Sigmoid][k % 4].clone(),
                );
            }
        }
        Net {
            input: vec![dims[0] as u64],
            layers,
        }
    }

    /// `ibp_propagate` on host boxes, which must succeed.
    fn bounds(
        m: *mut ibp_model,
        batch: usize,
        lo: &[f32],
        hi: &[f32],
        what: &str,
    ) -> (Vec<f32>, Vec<f32>) {
        let out = batch * ibp_model_output_size(m);
        let (mut l, mut h) = (vec![0f32; out], vec![0f32; out]);
        let s = ibp_propagate(
            m,
            batch,
            lo.as_ptr(),
            hi.as_ptr(),
            l.as_mut_ptr(),
            h.as_mut_ptr(),
        );
        assert_eq!(s, vram_status::VRAM_OK, "{what}: {}", last_error());
        (l, h)
    }

    /// GPU bounds agree with CPU bounds to within rounding.
    fn assert_agree(gpu: [&[f32]; 2], cpu: [&[f32]; 2], what: &str) {
        let ([gl, gh], [cl, ch]) = (gpu, cpu);
        for i in 0..cl.len() {
            let w = f64::from(ch[i] - cl[i]).max(1e-3);
            assert!(
                (f64::from(gl[i]) - f64::from(cl[i])).abs() <= 1e-5 * w + 1e-6
                    && (f64::from(gh[i]) - f64::from(ch[i])).abs() <= 1e-5 * w + 1e-6,
                "{what} output {i}: gpu [{}, {}] cpu [{}, {}]",
                gl[i],
                gh[i],
                cl[i],
                ch[i]
            );
        }
    }

    /// Bounds of `n` for the given boxes from a GPU and a CPU model, checked to agree to
    /// within rounding; returns the GPU's.
    fn gpu_and_cpu(
        gpu: &Ctx,
        cpu: &Ctx,
        n: &Net,
        batch: usize,
        lo: &[f32],
        hi: &[f32],
        what: &str,
    ) -> (Vec<f32>, Vec<f32>) {
        let (mg, mc) = (build(gpu.0, "g", n), build(cpu.0, "c", n));
        let (gl, gh) = bounds(mg, batch, lo, hi, what);
        let (cl, ch) = bounds(mc, batch, lo, hi, what);
        assert_agree([&gl, &gh], [&cl, &ch], what);
        ibp_model_free(mg);
        ibp_model_free(mc);
        (gl, gh)
    }

    #[test]
    fn gpu_agrees_with_cpu_and_encloses() {
        if gpus() == 0 {
            println!("SKIPPED gpu_agrees_with_cpu: no GPU");
            return;
        }
        let gpu = Ctx::with_options(&options(vram_backend::VRAM_BACKEND_CUDA, &KEY));
        let cpu = Ctx::with_options(&options(vram_backend::VRAM_BACKEND_HOST, &KEY));
        let mut seed = 99u64;
        for (dims, batch) in [
            (vec![7usize, 33, 65, 3], 1usize),
            (vec![64, 128, 128, 10], 8),
            (vec![37, 100, 70, 5], 77),
            (vec![256, 512, 256, 10], 130),
            (vec![2048, 256, 10], 24), // a long sum: the four-warp tiles
        ] {
            let n = net(&mut seed, &dims);
            let lo: Vec<f32> = (0..batch * dims[0]).map(|_| rng(&mut seed)).collect();
            let hi: Vec<f32> = lo
                .iter()
                .enumerate()
                .map(|(i, l)| l + if i % 5 == 0 { 0.0 } else { 0.05 })
                .collect();
            let (gl, gh) = gpu_and_cpu(
                &gpu,
                &cpu,
                &n,
                batch,
                &lo,
                &hi,
                &format!("{dims:?} b{batch}"),
            );
            if n.layers
                .iter()
                .all(|l| !matches!(l, Layer::Tanh | Layer::Sigmoid))
            {
                let m = dims[0];
                let (el, eh) = exact(&n, &lo[..m], &hi[..m]);
                let k = dims[dims.len() - 1];
                for i in 0..k {
                    assert!(
                        q(gl[i]) <= el[i] && q(gh[i]) >= eh[i],
                        "GPU bound {i} does not enclose the exact one"
                    );
                }
            }
        }
    }

    /// Host boxes from several threads at once, each call on the thread's own staging memory:
    /// small outputs are written there by the kernels, large ones (here batch >= 9: over
    /// 256 KiB) copied through device scratch; sizes change between calls so that the staging
    /// memory grows. Every result agrees with the CPU's, and a bad box fails on its own thread
    /// without disturbing the others.
    #[test]
    fn host_boxes_from_many_threads() {
        if gpus() == 0 {
            println!("SKIPPED host_boxes_from_many_threads: no GPU");
            return;
        }
        let gpu = Ctx::with_options(&options(vram_backend::VRAM_BACKEND_CUDA, &KEY));
        let cpu = Ctx::with_options(&options(vram_backend::VRAM_BACKEND_HOST, &KEY));
        let mut seed = 31u64;
        let n = net(&mut seed, &[8, 64, 4096]);
        let (mg, mc) = (build(gpu.0, "g", &n), build(cpu.0, "c", &n));
        // (batch, input box, the CPU's output bounds)
        type Case = (usize, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);
        let cases: Vec<Case> = [1usize, 9, 2, 40]
            .iter()
            .map(|&batch| {
                let lo: Vec<f32> = (0..batch * 8).map(|_| rng(&mut seed)).collect();
                let hi: Vec<f32> = lo.iter().map(|l| l + 0.02).collect();
                let (cl, ch) = bounds(mc, batch, &lo, &hi, "CPU");
                (batch, lo, hi, cl, ch)
            })
            .collect();
        let model = SendPtr(mg);
        std::thread::scope(|sc| {
            for t in 0..4usize {
                let (cases, model) = (&cases, &model);
                sc.spawn(move || {
                    for round in 0..6 {
                        let (batch, lo, hi, cl, ch) = &cases[(t + round) % cases.len()];
                        if round == 3 {
                            let (mut gl, mut gh) = (vec![0f32; cl.len()], vec![0f32; ch.len()]);
                            let mut bad = lo.clone();
                            bad[0] = f32::NAN;
                            let s = ibp_propagate(
                                model.0,
                                *batch,
                                bad.as_ptr(),
                                hi.as_ptr(),
                                gl.as_mut_ptr(),
                                gh.as_mut_ptr(),
                            );
                            assert_eq!(s, vram_status::VRAM_ERR_INVALID_ARGUMENT);
                            continue;
                        }
                        let what = format!("thread {t} batch {batch}");
                        let (gl, gh) = bounds(model.0, *batch, lo, hi, &what);
                        assert_agree([&gl, &gh], [cl, ch], &what);
                    }
                });
            }
        });
        ibp_model_free(mg);
        ibp_model_free(mc);
    }

    /// A model handle shared by the threads of a test (models may be used from many threads).
    struct SendPtr(*mut ibp_model);
    // SAFETY: ibp_model is immutable after build and documented as usable from many threads.
    unsafe impl Sync for SendPtr {}

    #[test]
    fn device_memory_boxes_and_bad_inputs() {
        if gpus() == 0 {
            println!("SKIPPED device_memory_boxes: no GPU");
            return;
        }
        let gpu = Ctx::with_options(&options(vram_backend::VRAM_BACKEND_CUDA, &KEY));
        let mut seed = 5u64;
        let n = net(&mut seed, &[16, 32, 4]);
        let m = build(gpu.0, "dev", &n);
        let batch = 3;
        let lo: Vec<f32> = (0..batch * 16).map(|_| rng(&mut seed)).collect();
        let hi: Vec<f32> = lo.iter().map(|l| l + 0.1).collect();
        let as_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_ne_bytes()).collect() };
        let (dl, dh, ol, oh) = (
            DevMem::from_f32(&lo),
            DevMem::from_f32(&hi),
            DevMem::new(batch * 16),
            DevMem::new(batch * 16),
        );
        let opts = device_options(ptr::null_mut());
        let s = ibp_propagate_ex(
            m,
            batch,
            dl.0.cast(),
            dh.0.cast(),
            ol.0.cast(),
            oh.0.cast(),
            &opts,
        );
        assert_eq!(s, vram_status::VRAM_OK, "{}", last_error());
        let dev_lo = ol.f32s(batch * 4);
        let (mut hl, mut hh) = (vec![0f32; batch * 4], vec![0f32; batch * 4]);
        assert_eq!(
            ibp_propagate(
                m,
                batch,
                lo.as_ptr(),
                hi.as_ptr(),
                hl.as_mut_ptr(),
                hh.as_mut_ptr()
            ),
            vram_status::VRAM_OK
        );
        assert_eq!(dev_lo, hl, "device and host boxes give the same bounds");
        // A NaN in device memory is found, and the outputs are left alone.
        let mut bad = lo.clone();
        bad[20] = f32::NAN;
        dl.upload(0, &as_bytes(&bad));
        ol.upload(0, &[0xAB; 48]);
        let s = ibp_propagate_ex(
            m,
            batch,
            dl.0.cast(),
            dh.0.cast(),
            ol.0.cast(),
            oh.0.cast(),
            &opts,
        );
        assert_eq!(s, vram_status::VRAM_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("element 20"), "{}", last_error());
        let mut after = vec![0u8; 48];
        ok(
            unsafe { cudaMemcpy(after.as_mut_ptr().cast(), ol.0.cast(), 48, D2H) },
            "D2H",
        );
        assert!(after.iter().all(|&b| b == 0xAB), "outputs untouched");
        ibp_model_free(m);
    }

    #[test]
    fn conv_pool_batchnorm_agree_with_cpu() {
        if gpus() == 0 {
            println!("SKIPPED conv_pool_batchnorm: no GPU");
            return;
        }
        let gpu = Ctx::with_options(&options(vram_backend::VRAM_BACKEND_CUDA, &KEY));
        let cpu = Ctx::with_options(&options(vram_backend::VRAM_BACKEND_HOST, &KEY));
        let mut seed = 31u64;
        let mut v = |n: usize, s: f32| -> Vec<f32> { (0..n).map(|_| rng(&mut seed) * s).collect() };
        for max in [true, false] {
            let n = Net {
                input: vec![3, 12, 12],
                layers: vec![
                    Layer::Conv {
                        cout: 4,
                        k: 3,
                        stride: 1,
                        pad: 1,
                        w: v(4 * 3 * 9, 0.3),
                        b: v(4, 0.1),
                    },
                    Layer::BatchNorm {
                        gamma: v(4, 1.0),
                        beta: v(4, 0.1),
                        mean: v(4, 0.1),
                        var: v(4, 1.0).iter().map(|x| x.abs() + 0.1).collect(),
                        eps: 1e-5,
                    },
                    Layer::Relu,
                    if max {
                        Layer::MaxPool { k: 2, stride: 2 }
                    } else {
                        Layer::AvgPool { k: 2, stride: 2 }
                    },
                    Layer::Conv {
                        cout: 5,
                        k: 3,
                        stride: 2,
                        pad: 0,
                        w: v(5 * 4 * 9, 0.3),
                        b: v(5, 0.1),
                    },
                    Layer::Flatten,
                    Layer::Linear {
                        out: 3,
                        w: v(3 * 5 * 2 * 2, 0.5),
                        b: v(3, 0.1),
                    },
                ],
            };
            let batch = 9;
            let lo: Vec<f32> = v(batch * 3 * 12 * 12, 1.0);
            let hi: Vec<f32> = lo.iter().map(|l| l + 0.02).collect();
            gpu_and_cpu(
                &gpu,
                &cpu,
                &n,
                batch,
                &lo,
                &hi,
                &format!("conv net, max pool {max}"),
            );
        }
    }
}
