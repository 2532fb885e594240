//! GPU benchmark for the CUDA backend, everything measured in one run on one GPU:
//! verify GB/s for one shard of 256 MiB … 32 GiB and for a 300-shard model (vram_verify_many),
//! seal GB/s from pinned and pageable host memory, and beside them the device-to-device copy
//! bandwidth, the pinned host-to-device bandwidth, and the seed design's path (copy to host,
//! then a single-thread RFC 9162 hash) on the same bytes.
//!
//! `cargo bench --bench gpu_seal_verify` (prints a Markdown table). Skips, saying so, without
//! a GPU. Not a test: it asserts only correctness (every verify must return VRAM_OK).

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
    use std::ffi::c_void;
    use std::ptr;
    use std::time::Instant;

    use super::common::*;
    use super::cuda::*;
    use vram::seal::merkle::tree_root;
    use vram::*;

    const GIB: usize = 1 << 30;
    const MIB: usize = 1 << 20;

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// Median GB/s of `runs` timed calls of `f` over `bytes` bytes, after one warm-up.
    fn rate(bytes: usize, runs: usize, mut f: impl FnMut()) -> f64 {
        f();
        let mut v = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            f();
            v.push(bytes as f64 / 1e9 / t.elapsed().as_secs_f64());
        }
        median(v)
    }

    fn seal_device(ctx: &Ctx, id: &str, p: *const u8, len: usize) -> Shard {
        let id = std::ffi::CString::new(id).unwrap();
        let mut out = ptr::null_mut();
        let s = vram_seal_device(ctx.0, id.as_ptr(), p.cast(), len, &mut out);
        assert_eq!(s, vram_status::VRAM_OK, "{}", last_error());
        Shard(out)
    }

    /// Fills device memory with pseudo-random bytes (never zeros), 1 GiB of pattern at a time.
    fn fill(dev: &DevMem, pattern: &mut [u8]) {
        let mut off = 0;
        let mut i = 0u64;
        while off < dev.1 {
            let n = pattern.len().min(dev.1 - off);
            pattern[..8].copy_from_slice(&i.to_le_bytes());
            dev.upload(off, &pattern[..n]);
            off += n;
            i += 1;
        }
    }

    pub fn run() {
        if gpus() == 0 {
            println!("SKIPPED: no GPU on this machine");
            return;
        }
        let ctx = Ctx::with_options(&options(vram_backend::VRAM_BACKEND_CUDA, &KEY));
        let mut pattern = bytes(GIB, 42);
        let mut rows: Vec<(String, f64)> = Vec::new();

        // Baselines: device-to-device copy (bytes read + written) and pinned H2D.
        let a = DevMem::new(GIB);
        let b = DevMem::new(GIB);
        fill(&a, &mut pattern);
        let d2d = 2.0
            * rate(GIB, 10, || {
                ok(
                    unsafe { cudaMemcpy(b.0.cast(), a.0.cast(), GIB, D2D) },
                    "D2D",
                );
                ok(unsafe { cudaDeviceSynchronize() }, "sync");
            });
        let mut pinned: *mut c_void = ptr::null_mut();
        ok(
            unsafe { cudaMallocHost(&mut pinned, GIB) },
            "cudaMallocHost",
        );
        // SAFETY: `pinned` holds GIB bytes.
        unsafe { ptr::copy_nonoverlapping(pattern.as_ptr(), pinned.cast::<u8>(), GIB) };
        let h2d_pinned = rate(GIB, 5, || {
            ok(
                unsafe { cudaMemcpy(a.0.cast(), pinned, GIB, H2D) },
                "H2D pinned",
            );
        });
        drop(b);
        // A study for pageable seals: page-locking the caller's (touched) memory in place with
        // cudaHostRegister, copying from it, and unlocking it, instead of staging.
        let register = {
            let t = std::time::Instant::now();
            let p = pattern.as_mut_ptr().cast::<c_void>();
            ok(unsafe { cudaHostRegister(p, GIB, 0) }, "cudaHostRegister");
            let reg = t.elapsed().as_secs_f64();
            ok(
                unsafe { cudaMemcpy(a.0.cast(), p, GIB, H2D) },
                "H2D registered",
            );
            let copy = t.elapsed().as_secs_f64() - reg;
            ok(unsafe { cudaHostUnregister(p) }, "cudaHostUnregister");
            let total = t.elapsed().as_secs_f64();
            (
                GIB as f64 / reg / 1e9,
                GIB as f64 / copy / 1e9,
                GIB as f64 / total / 1e9,
            )
        };

        // The seed design: copy the shard back to the host, hash it on one core.
        let mut host = vec![0u8; GIB];
        let mut seed_root = [0u8; 32];
        let seed = rate(GIB, 3, || {
            ok(
                unsafe { cudaMemcpy(host.as_mut_ptr().cast(), a.0.cast(), GIB, D2H) },
                "D2H",
            );
            seed_root = tree_root(&host, 4096);
        });
        drop(host);
        let shard = seal_device(&ctx, "seed-check", a.0, GIB);
        assert_eq!(
            shard.root(),
            seed_root,
            "GPU root equals the host root of the same bytes"
        );
        drop(shard);
        drop(a);

        // Verify one shard of each size (sealed in place from device memory).
        for size in [256 * MIB, GIB, 8 * GIB, 32 * GIB] {
            let dev = DevMem::new(size);
            fill(&dev, &mut pattern);
            let shard = seal_device(&ctx, "one", dev.0, size);
            let r = rate(size, 10, || {
                assert_eq!(
                    vram_verify(ctx.0, shard.0, ptr::null_mut()),
                    vram_status::VRAM_OK
                );
            });
            rows.push((format!("vram_verify, one shard of {} MiB", size / MIB), r));
        }

        // A model: 300 shards of 1–200 MB (mixed), about 8 GiB, verified in one call.
        let mut sizes = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = |lo: usize, hi: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            lo + (x % (hi - lo) as u64) as usize
        };
        for i in 0..300 {
            sizes.push(match i % 25 {
                0 => next(100_000_000, 200_000_000),
                1..=8 => next(10_000_000, 100_000_000),
                _ => next(1_000_000, 10_000_000),
            });
        }
        let raw: usize = sizes.iter().sum();
        let scale = (8 * GIB) as f64 / raw as f64;
        for s in sizes.iter_mut() {
            *s = ((*s as f64 * scale) as usize).clamp(1_000_000, 200_000_000);
        }
        let total: usize = sizes.iter().map(|s| s.next_multiple_of(256)).sum();
        let model = DevMem::new(total);
        fill(&model, &mut pattern);
        let mut shards = Vec::new();
        let mut off = 0;
        for (i, s) in sizes.iter().enumerate() {
            shards.push(seal_device(
                &ctx,
                &format!("model.layers.{i}.weight"),
                model.0.wrapping_add(off),
                *s,
            ));
            off += s.next_multiple_of(256);
        }
        let ptrs: Vec<*const vram_shard> = shards.iter().map(|s| s.0.cast_const()).collect();
        let model_bytes: usize = sizes.iter().sum();
        let r = rate(model_bytes, 10, || {
            let s = vram_verify_many(ctx.0, ptrs.as_ptr(), ptrs.len(), ptr::null_mut());
            assert_eq!(s, vram_status::VRAM_OK);
        });
        let (lo, hi) = (
            sizes.iter().min().copied().unwrap_or(0),
            sizes.iter().max().copied().unwrap_or(0),
        );
        rows.push((
            format!(
                "vram_verify_many, 300 shards of {:.1}–{:.1} MB, {:.2} GiB in all",
                lo as f64 / 1e6,
                hi as f64 / 1e6,
                model_bytes as f64 / GIB as f64
            ),
            r,
        ));
        drop(shards);
        drop(model);

        // Seal from host memory (copy + hash overlapped), pinned and pageable, 1 GiB.
        let mut seal_rate = |src: *const u8, name: &str| {
            let r = rate(GIB, 5, || {
                let mut out = ptr::null_mut();
                let s = vram_seal(ctx.0, c"sealed".as_ptr(), src.cast(), GIB, &mut out);
                assert_eq!(s, vram_status::VRAM_OK, "{}", last_error());
                vram_shard_free(out);
            });
            rows.push((format!("vram_seal from {name} host memory, 1 GiB"), r));
            r
        };
        let seal_pinned = seal_rate(pinned.cast_const().cast(), "pinned");
        let seal_pageable = seal_rate(pattern.as_ptr(), "pageable");
        ok(unsafe { cudaFreeHost(pinned) }, "cudaFreeHost");

        // Loading a safetensors model of 8 GiB (32 tensors of 256 MiB) from the page cache into
        // GPU memory, sealed: the file is written and read once first, so it is cached.
        let (load, read, by_threads) = load_rate(&ctx, &pattern);
        rows.push((
            "vram_load_safetensors, 8 GiB file from the page cache, sealed".into(),
            load,
        ));
        for (threads, load, seal) in by_threads {
            rows.push((
                format!("  with max_threads = {threads}: vram_load_safetensors, 8 GiB"),
                load,
            ));
            rows.push((
                format!("  with max_threads = {threads}: seal 1 GiB from pageable"),
                seal,
            ));
        }

        println!("| what | GB/s |");
        println!("|---|---|");
        for (what, r) in &rows {
            println!("| {what} | {r:.1} |");
        }
        println!("| baseline: device-to-device copy, 1 GiB (bytes read + written) | {d2d:.1} |");
        println!("| baseline: host-to-device copy from pinned memory, 1 GiB | {h2d_pinned:.1} |");
        println!(
            "| study: cudaHostRegister of 1 GiB pageable memory (GB/s locked) / the copy from it / register + copy + unregister | {:.1} / {:.1} / {:.1} |",
            register.0, register.1, register.2
        );
        println!(
            "| baseline: reading the 8 GiB file from the page cache, 12 threads, 8 MiB reads into reused buffers | {read:.1} |"
        );
        println!(
            "| baseline: seed design, copy to host + single-thread RFC 9162 hash, 1 GiB | {seed:.2} |"
        );
        println!();
        let v8 = rows
            .iter()
            .find(|(w, _)| w.contains("8192 MiB"))
            .map_or(0.0, |r| r.1);
        let model_rate = rows
            .iter()
            .find(|(w, _)| w.contains("300 shards"))
            .map_or(0.0, |r| r.1);
        println!("single-shard verify at 8 GiB: {v8:.1} GB/s (target >= 750)");
        println!("300-shard model verify: {model_rate:.1} GB/s (target >= 600)");
        println!(
            "seal from pinned / pinned copy bandwidth: {:.0} % (target >= 80 %); from pageable: {seal_pageable:.1} GB/s",
            100.0 * seal_pinned / h2d_pinned
        );
        println!(
            "verify at 8 GiB / seed design: {:.0} x (target >= 500 x)",
            v8 / seed
        );
        println!(
            "seal from pageable / pinned copy bandwidth: {:.0} % (target >= 80 %)",
            100.0 * seal_pageable / h2d_pinned
        );
        println!(
            "safetensors load (8 GiB, page cache) / pinned copy bandwidth: {:.0} % (target >= 90 %)",
            100.0 * load / h2d_pinned
        );
    }

    /// GB/s of vram_load_safetensors on an 8 GiB file in the page cache (best of 3 loads), and
    /// of reading that file alone as the load's workers do (the CPU side's ceiling).
    /// Also, for contexts bounded to fewer filling threads: (threads, load GB/s, pageable seal GB/s).
    fn load_rate(ctx: &Ctx, pattern: &[u8]) -> (f64, f64, Vec<(u32, f64, f64)>) {
        const TENSORS: usize = 32;
        const EACH: usize = 256 * MIB;
        let dir = std::env::temp_dir().join(format!("vram-bench-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.safetensors");
        let mut header = String::from("{");
        for i in 0..TENSORS {
            header += &format!(
                "{}\"layers.{i}.weight\":{{\"dtype\":\"BF16\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
                if i > 0 { "," } else { "" },
                EACH / 2,
                i * EACH,
                (i + 1) * EACH
            );
        }
        header.push('}');
        {
            use std::io::Write;
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
            f.write_all(header.as_bytes()).unwrap();
            for _ in 0..TENSORS {
                f.write_all(&pattern[..EACH]).unwrap();
            }
        }
        let _ = std::fs::read(&path).map(|b| b.len()); // into the page cache
        let read = {
            use std::os::unix::fs::FileExt;
            let file = std::fs::File::open(&path).unwrap();
            let data_start = 8 + header.len() as u64;
            let next = std::sync::atomic::AtomicU64::new(0);
            let parts = (TENSORS * EACH / (8 * MIB)) as u64;
            let t = std::time::Instant::now();
            std::thread::scope(|s| {
                for _ in 0..12 {
                    s.spawn(|| {
                        let mut buf = vec![0u8; 8 * MIB];
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if i >= parts {
                                break;
                            }
                            file.read_exact_at(&mut buf, data_start + i * (8 * MIB) as u64)
                                .unwrap();
                        }
                    });
                }
            });
            (TENSORS * EACH) as f64 / t.elapsed().as_secs_f64() / 1e9
        };
        // A study: page-lock the file's page-cache pages in place (a read-only shared mapping
        // registered read-only) and copy from them, instead of reading into staging.
        {
            use std::os::fd::AsRawFd;
            let file = std::fs::File::open(&path).unwrap();
            let len = file.metadata().unwrap().len() as usize;
            let t = std::time::Instant::now();
            // SAFETY: a fresh read-only shared mapping of a file this process just wrote.
            let map = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_SHARED | libc::MAP_POPULATE,
                    file.as_raw_fd(),
                    0,
                )
            };
            assert_ne!(map, libc::MAP_FAILED);
            let mapped = t.elapsed().as_secs_f64();
            let code = unsafe {
                cudaHostRegister(map, len, 8 /* cudaHostRegisterReadOnly */)
            };
            let registered = t.elapsed().as_secs_f64();
            if code == 0 {
                let dev = DevMem::new(len);
                ok(
                    unsafe { cudaMemcpy(dev.0.cast(), map, len, H2D) },
                    "H2D from file pages",
                );
                let copied = t.elapsed().as_secs_f64();
                ok(unsafe { cudaHostUnregister(map) }, "cudaHostUnregister");
                let total = t.elapsed().as_secs_f64();
                println!(
                    "study: 8 GiB file mmap+populate {:.1} ms, cudaHostRegister read-only {:.1} ms, copy {:.1} ms ({:.1} GB/s), unregister {:.1} ms; all together {:.1} GB/s",
                    mapped * 1e3,
                    (registered - mapped) * 1e3,
                    (copied - registered) * 1e3,
                    len as f64 / (copied - registered) / 1e9,
                    (total - copied) * 1e3,
                    len as f64 / total / 1e9
                );
            } else {
                println!(
                    "study: cudaHostRegister of the file's mapping failed with CUDA error {code}"
                );
            }
            // SAFETY: the mapping made above, unmapped once.
            unsafe { libc::munmap(map, len) };
        }
        let cpath = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        let best_load = |ctx: &Ctx| {
            let mut best = 0.0f64;
            for _ in 0..3 {
                let t = std::time::Instant::now();
                let mut model = ptr::null_mut();
                let s = vram_load_safetensors(ctx.0, cpath.as_ptr(), ptr::null(), &mut model);
                assert_eq!(s, vram_status::VRAM_OK, "{}", last_error());
                let gbs = (TENSORS * EACH) as f64 / t.elapsed().as_secs_f64() / 1e9;
                best = best.max(gbs);
                vram_model_free(model);
            }
            best
        };
        let best = best_load(ctx);
        let mut by_threads = Vec::new();
        for threads in [4u32, 8, 12] {
            let mut o = options(vram_backend::VRAM_BACKEND_CUDA, &KEY);
            o.max_threads = threads;
            let bounded = Ctx::with_options(&o);
            let load = best_load(&bounded);
            let seal = rate(GIB, 5, || {
                let mut out = ptr::null_mut();
                let s = vram_seal(
                    bounded.0,
                    c"sealed".as_ptr(),
                    pattern.as_ptr().cast(),
                    GIB,
                    &mut out,
                );
                assert_eq!(s, vram_status::VRAM_OK, "{}", last_error());
                vram_shard_free(out);
            });
            by_threads.push((threads, load, seal));
        }
        std::fs::remove_dir_all(&dir).ok();
        (best, read, by_threads)
    }
}
