//! GPU-only tests of the CUDA backend, through the C ABI. On a machine without a GPU (or a
//! build without CUDA) every test prints why it is skipped and passes.

mod common;
#[cfg(vram_cuda)]
#[path = "common/cuda.rs"]
mod cuda;

#[cfg(not(vram_cuda))]
#[test]
fn gpu_tests_skipped_without_cuda_build() {
    println!("SKIPPED: libvram was built without CUDA (VRAM_CUDA=off or no nvcc)");
}

#[cfg(vram_cuda)]
mod on_gpu {
    use std::ffi::c_void;
    use std::ptr;

    use super::common::*;
    use super::cuda::*;
    use vram::*;

    const MIB: usize = 1 << 20;

    fn have_gpu(test: &str) -> bool {
        if gpus() == 0 {
            println!("SKIPPED {test}: no GPU on this machine");
            return false;
        }
        true
    }

    fn cuda_ctx() -> Ctx {
        Ctx::with_options(&options(vram_backend::VRAM_BACKEND_CUDA, &KEY))
    }

    fn host_ctx() -> Ctx {
        Ctx::with_options(&options(vram_backend::VRAM_BACKEND_HOST, &KEY))
    }

    fn seal_device(ctx: &Ctx, id: &str, p: *const u8, len: usize) -> Result<Shard, vram_status> {
        let id = std::ffi::CString::new(id).unwrap();
        let mut out = ptr::null_mut();
        match vram_seal_device(ctx.0, id.as_ptr(), p.cast(), len, &mut out) {
            vram_status::VRAM_OK => Ok(Shard(out)),
            s => {
                assert!(out.is_null());
                Err(s)
            }
        }
    }

    #[test]
    fn auto_and_cuda_use_the_gpu_and_records_say_so() {
        if !have_gpu("auto_and_cuda_use_the_gpu") {
            return;
        }
        let auto = Ctx::with_options(&options(vram_backend::VRAM_BACKEND_AUTO, &KEY));
        assert_eq!(
            vram_ctx_backend(auto.0),
            vram_backend::VRAM_BACKEND_CUDA as u32
        );
        let ctx = cuda_ctx();
        let shard = ctx.seal("x", b"abc");
        let record = shard.record();
        let at = 16 + 1 + 8 + 4 + 32;
        assert_eq!(record[at], 1, "residency kind 1 = CUDA");
        assert_eq!(&record[at + 1..at + 5], &0i32.to_be_bytes());
        // A CUDA shard is refused by a host context and the other way round.
        let host = host_ctx();
        assert_eq!(host.verify(&shard).0, vram_status::VRAM_ERR_POLICY);
        let hs = host.seal("h", b"abc");
        assert_eq!(ctx.verify(&hs).0, vram_status::VRAM_ERR_POLICY);
        let mut bad = options(vram_backend::VRAM_BACKEND_CUDA, &KEY);
        bad.device = 64;
        let mut out = ptr::null_mut();
        assert_eq!(
            vram_ctx_new(&bad, &mut out),
            vram_status::VRAM_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("device: ordinal"), "{}", last_error());
    }

    #[test]
    fn gpu_roots_equal_host_roots_from_1_byte_to_4_gib_plus_3() {
        if !have_gpu("gpu_roots_equal_host_roots") {
            return;
        }
        let gpu = cuda_ctx();
        let host = host_ctx();
        let sizes = [
            1usize,
            2,
            63,
            64,
            65,
            1023,
            1024,
            1025,
            4095,
            4096,
            4097,
            65_537,
            MIB - 1,
            MIB,
            MIB + 3,
            3 * MIB + 17,
            64 * MIB + 5,
            300 * MIB + 4097,
        ];
        for len in sizes {
            let data = bytes(len, len as u64);
            let g = gpu.seal("g", &data);
            let h = host.seal("h", &data);
            assert_eq!(g.root(), h.root(), "len {len}");
            if len <= 4 * MIB {
                assert_eq!(g.root(), reference_root(&data, 4096), "len {len}");
            }
            assert_eq!(gpu.verify(&g).0, vram_status::VRAM_OK, "len {len}");
        }
        // Other leaf sizes.
        let data = bytes(5 * MIB + 333, 9);
        for leaf in [1024u32, 2048, 65536, 1 << 20] {
            let opts = vram_seal_options {
                struct_size: size_of::<vram_seal_options>() as u32,
                leaf_size: leaf,
            };
            let (mut a, mut b) = (ptr::null_mut(), ptr::null_mut());
            assert_eq!(
                vram_seal_ex(
                    gpu.0,
                    c"l".as_ptr(),
                    data.as_ptr().cast(),
                    data.len(),
                    &opts,
                    &mut a
                ),
                vram_status::VRAM_OK
            );
            assert_eq!(
                vram_seal_ex(
                    host.0,
                    c"l".as_ptr(),
                    data.as_ptr().cast(),
                    data.len(),
                    &opts,
                    &mut b
                ),
                vram_status::VRAM_OK
            );
            let (a, b) = (Shard(a), Shard(b));
            assert_eq!(a.root(), b.root(), "leaf {leaf}");
            assert_eq!(gpu.verify(&a).0, vram_status::VRAM_OK);
        }
        // 4 GiB + 3 bytes: over 2^32, so any 32-bit offset arithmetic would show.
        let len = (4usize << 30) + 3;
        let mut big = vec![0u8; len];
        for (i, chunk) in big.chunks_mut(MIB).enumerate() {
            chunk.fill((i * 131 % 251) as u8);
            chunk[0] = (i >> 8) as u8;
        }
        let g = gpu.seal("big", &big);
        let h = host.seal("big", &big);
        assert_eq!(g.root(), h.root(), "4 GiB + 3");
        let (s, r) = gpu.verify(&g);
        assert_eq!(s, vram_status::VRAM_OK);
        assert_eq!(r.total_regions, 4097);
        g.flip(8 * (len as u64 - 1));
        let (s, r) = gpu.verify(&g);
        assert_eq!(s, vram_status::VRAM_ERR_INTEGRITY);
        assert_eq!(r.first_damaged_offset, 4096 * MIB as u64);
    }

    #[test]
    fn seal_device_refuses_a_len_past_the_allocation() {
        if !have_gpu("seal_device_refuses_a_len_past_the_allocation") {
            return;
        }
        let ctx = cuda_ctx();
        let used = ctx.used();
        // cudaMalloc: the exact length and any sub-range are accepted, one byte more is not.
        let len = 5 * MIB + 3;
        let data = bytes(len, 21);
        let dev = DevMem::new(len);
        dev.upload(0, &data);
        let whole = seal_device(&ctx, "malloc.whole", dev.0, len).unwrap();
        assert_eq!(whole.root(), reference_root(&data, 4096));
        let tail = seal_device(&ctx, "malloc.tail", dev.0.wrapping_add(MIB), len - MIB).unwrap();
        assert_eq!(tail.root(), reference_root(&data[MIB..], 4096));
        let mut wrong = Vec::new();
        for (off, n) in [
            (0, len + 1),
            (MIB, len - MIB + 1),
            (0, 1 << 40),
            (len - 1, 2),
        ] {
            let r = seal_device(&ctx, "malloc.past", dev.0.wrapping_add(off), n);
            let msg = last_error();
            println!(
                "cudaMalloc of {len} bytes, offset {off}, len {n}: {:?} ({msg})",
                r.as_ref().err()
            );
            if r.as_ref().err() != Some(&vram_status::VRAM_ERR_INVALID_ARGUMENT)
                || !msg.contains("run past the allocation")
            {
                wrong.push((off, n));
            }
        }
        assert!(wrong.is_empty(), "accepted past the allocation: {wrong:?}");
        println!("cudaMalloc: exact and sub-ranges accepted; len past the end refused");
        drop((whole, tail));

        // cudaMallocAsync (a stream-ordered pool).
        let mut stream = ptr::null_mut();
        // SAFETY: a CUDA runtime call on this test's own stream and memory.
        ok(unsafe { cudaStreamCreate(&mut stream) }, "cudaStreamCreate");
        let mut pooled: *mut c_void = ptr::null_mut();
        // SAFETY: a CUDA runtime call on this test's own stream and memory.
        ok(
            unsafe { cudaMallocAsync(&mut pooled, len, stream) },
            "cudaMallocAsync",
        );
        // SAFETY: a CUDA runtime call on this test's own stream and memory.
        ok(
            unsafe { cudaStreamSynchronize(stream) },
            "cudaStreamSynchronize",
        );
        // SAFETY: a CUDA runtime call on this test's own stream and memory.
        ok(
            unsafe { cudaMemcpy(pooled, data.as_ptr().cast(), len, H2D) },
            "cudaMemcpy",
        );
        let p = seal_device(&ctx, "pool.whole", pooled.cast(), len).unwrap();
        assert_eq!(p.root(), reference_root(&data, 4096));
        assert_eq!(ctx.verify(&p).0, vram_status::VRAM_OK);
        drop(p);
        let past = seal_device(&ctx, "pool.past", pooled.cast(), 1 << 40).err();
        assert_eq!(
            past,
            Some(vram_status::VRAM_ERR_INVALID_ARGUMENT),
            "{}",
            last_error()
        );
        // How far the driver's record of a pool allocation reaches (recorded, not asserted:
        // a pool may report its whole segment).
        let one_more = seal_device(&ctx, "pool.plus1", pooled.cast(), len + 1);
        println!(
            "cudaMallocAsync: exact length accepted; 1 TiB refused; len + 1 -> {:?}",
            one_more.as_ref().err()
        );
        drop(one_more);
        // SAFETY: a CUDA runtime call on this test's own stream and memory.
        ok(unsafe { cudaFreeAsync(pooled, stream) }, "cudaFreeAsync");
        // SAFETY: a CUDA runtime call on this test's own stream and memory.
        ok(
            unsafe { cudaStreamSynchronize(stream) },
            "cudaStreamSynchronize",
        );
        // SAFETY: a CUDA runtime call on this test's own stream and memory.
        ok(unsafe { cudaStreamDestroy(stream) }, "cudaStreamDestroy");

        // The VMM API (cuMemCreate + cuMemMap), as PyTorch's expandable segments: two physical
        // chunks mapped back to back in a reserved range of three. A range across both
        // mappings is accepted; one reaching the unmapped third chunk is refused.
        let vmm = Vmm::new(0, 2, 3);
        let g = vmm.granularity;
        let vdata = bytes(2 * g, 22);
        // SAFETY: a CUDA runtime call on this test's own stream and memory.
        ok(
            unsafe { cudaMemcpy(vmm.base as *mut c_void, vdata.as_ptr().cast(), 2 * g, H2D) },
            "cudaMemcpy (VMM)",
        );
        let both = seal_device(&ctx, "vmm.both", vmm.base as *const u8, 2 * g).unwrap();
        assert_eq!(both.root(), reference_root(&vdata, 4096));
        assert_eq!(ctx.verify(&both).0, vram_status::VRAM_OK);
        let mid = seal_device(&ctx, "vmm.mid", (vmm.base + g as u64 / 2) as *const u8, g).unwrap();
        assert_eq!(mid.root(), reference_root(&vdata[g / 2..g / 2 + g], 4096));
        let past = seal_device(&ctx, "vmm.past", vmm.base as *const u8, 2 * g + 1).err();
        assert_eq!(
            past,
            Some(vram_status::VRAM_ERR_INVALID_ARGUMENT),
            "{}",
            last_error()
        );
        println!(
            "VMM: {} MiB granularity; a range across two mappings accepted, one into the unmapped third refused: {}",
            g / MIB,
            last_error()
        );
        drop((both, mid));
        drop(vmm);
        assert_eq!(ctx.used(), used, "refused seals left bookkeeping counted");
        // The device is still healthy: no sticky error was left behind.
        let after = cuda_ctx();
        let s = after.seal("after", &bytes(4096, 1));
        assert_eq!(after.verify(&s).0, vram_status::VRAM_OK);
    }

    #[test]
    fn async_verify_on_a_caller_stream_returns_before_the_gpu_is_done() {
        if !have_gpu("async_verify_on_a_caller_stream") {
            return;
        }
        let ctx = cuda_ctx();
        let big = ctx.seal("async.big", &vec![7u8; 512 * MIB]);
        let small = ctx.seal("async.small", &bytes(3 * MIB, 4));
        small.flip(8 * (2 * MIB as u64) + 5);
        let mut stream = ptr::null_mut();
        // SAFETY: writes one handle.
        assert_eq!(unsafe { cudaStreamCreate(&mut stream) }, 0);
        let list = [big.0.cast_const(), small.0.cast_const()];
        let mut ticket = ptr::null_mut();
        let t = std::time::Instant::now();
        assert_eq!(
            vram_verify_many_async(ctx.0, list.as_ptr(), 2, stream, &mut ticket),
            vram_status::VRAM_OK,
            "{}",
            last_error()
        );
        let launched = t.elapsed();
        let mut done = 0;
        assert_eq!(
            vram_verify_ticket_query(ticket, &mut done),
            vram_status::VRAM_OK
        );
        let mut reports = [vram_verify_report::default(); 2];
        assert_eq!(
            vram_verify_ticket_wait(ticket, reports.as_mut_ptr()),
            vram_status::VRAM_ERR_INTEGRITY
        );
        let waited = t.elapsed();
        println!(
            "async verify of 515 MiB: returned after {:.3} ms (done then: {done}), reports after {:.3} ms",
            launched.as_secs_f64() * 1e3,
            waited.as_secs_f64() * 1e3
        );
        assert_eq!(reports[0].status, vram_status::VRAM_OK as u32);
        assert_eq!(reports[1].first_damaged_offset, 2 * MIB as u64);
        vram_verify_ticket_free(ticket);
        // SAFETY: the stream created above; the ticket's work on it is done.
        assert_eq!(unsafe { cudaStreamDestroy(stream) }, 0);
    }

    #[test]
    fn cudamemcpy_damage_to_memory_sealed_in_place_is_found_and_restored_in_place() {
        if !have_gpu("cudamemcpy_damage_is_found_and_restored_in_place") {
            return;
        }
        let ctx = cuda_ctx();
        let len = 6 * MIB + 333;
        let data = bytes(len, 77);
        let dev = DevMem::new(len);
        dev.upload(0, &data);
        let shard = seal_device(&ctx, "in-place", dev.0, len).unwrap();
        // Damage written with cudaMemcpy, not the debug API: two regions.
        for at in [2 * MIB + 17, 5 * MIB + 1] {
            dev.upload(at, &[data[at] ^ 0x10]);
        }
        let mut offsets = [0u64; 8];
        let mut n = 0;
        assert_eq!(
            vram_verify_regions(ctx.0, shard.0, offsets.as_mut_ptr(), 8, &mut n),
            vram_status::VRAM_ERR_INTEGRITY
        );
        assert_eq!(&offsets[..n], &[2 * MIB as u64, 5 * MIB as u64]);
        // Wrong replacement bytes: nothing written (the damage is still exactly there).
        let mut wrong = data.clone();
        wrong[0] ^= 1;
        assert_eq!(
            vram_shard_restore(ctx.0, shard.0, wrong.as_ptr().cast(), len),
            vram_status::VRAM_ERR_INTEGRITY
        );
        assert_eq!(
            vram_verify_regions(ctx.0, shard.0, offsets.as_mut_ptr(), 8, &mut n),
            vram_status::VRAM_ERR_INTEGRITY
        );
        assert_eq!(n, 2);
        // The sealed bytes: rewritten into the caller's memory, same address, intact.
        assert_eq!(
            vram_shard_restore(ctx.0, shard.0, data.as_ptr().cast(), len),
            vram_status::VRAM_OK,
            "{}",
            last_error()
        );
        assert_eq!(vram_shard_device_ptr(shard.0), dev.0.cast_const().cast());
        assert_eq!(ctx.verify(&shard).0, vram_status::VRAM_OK);
        let mut back = vec![0u8; len];
        dev.download(0, &mut back);
        assert!(
            back == data,
            "the caller's memory holds the sealed bytes again"
        );
        drop(shard);
    }

    type Reports = std::sync::Mutex<Vec<(String, Vec<u64>)>>;

    extern "C" fn record_damage(
        userdata: *mut c_void,
        _shard: *const vram_shard,
        id: *const std::ffi::c_char,
        offsets: *const u64,
        n: usize,
    ) {
        // SAFETY: userdata is the test's Reports, alive until the scrubber is freed; id and
        // offsets are valid during the call (the callback's contract).
        let (reports, id, offsets) = unsafe {
            (
                &*(userdata as *const Reports),
                std::ffi::CStr::from_ptr(id).to_string_lossy().into_owned(),
                std::slice::from_raw_parts(offsets, n).to_vec(),
            )
        };
        reports.lock().unwrap().push((id, offsets));
    }

    fn scrub_stats(s: *const vram_scrubber) -> vram_scrub_stats {
        // SAFETY: all-zero is a valid vram_scrub_stats.
        let mut st: vram_scrub_stats = unsafe { std::mem::zeroed() };
        st.struct_size = size_of::<vram_scrub_stats>() as u32;
        assert_eq!(vram_scrubber_stats(s, &mut st), vram_status::VRAM_OK);
        st
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let start = std::time::Instant::now();
        while !done() {
            assert!(
                start.elapsed().as_secs() < 30,
                "timed out waiting for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// The scrubber on the GPU: shards sealed in place (one at an odd address), damage written
    /// with cudaMemcpy reaches the callback naming the shard and region, restore puts the bytes
    /// back at the same address and the next passes are clean; the budget is the SMs asked for.
    #[test]
    fn scrubber_finds_cudamemcpy_damage_and_restore_clears_it() {
        if !have_gpu("scrubber_finds_cudamemcpy_damage_and_restore_clears_it") {
            return;
        }
        let ctx = cuda_ctx();
        let len = 9 * MIB + 77;
        let a = bytes(len, 5);
        let b = bytes(len, 6);
        let dev = DevMem::new(2 * len + 64);
        dev.upload(0, &a);
        dev.upload(len + 3, &b);
        let sa = seal_device(&ctx, "scrub.a", dev.0, len).unwrap();
        // SAFETY: inside the allocation (len + 3 + len < 2 len + 64).
        let sb = seal_device(&ctx, "scrub.b", unsafe { dev.0.add(len + 3) }, len).unwrap();
        let reports = Reports::default();
        // SAFETY: all-zero is a valid vram_scrubber_options.
        let mut o: vram_scrubber_options = unsafe { std::mem::zeroed() };
        o.struct_size = size_of::<vram_scrubber_options>() as u32;
        o.max_sms = 3;
        o.on_damage = Some(record_damage);
        o.userdata = (&reports as *const Reports).cast_mut().cast();
        let list = [sa.0.cast_const(), sb.0.cast_const()];
        let mut s = ptr::null_mut();
        assert_eq!(
            vram_scrubber_new(ctx.0, list.as_ptr(), 2, &o, &mut s),
            vram_status::VRAM_OK,
            "{}",
            last_error()
        );
        assert_eq!(scrub_stats(s).budget, 3);
        let p = scrub_stats(s).passes;
        wait_for("two clean passes", || scrub_stats(s).passes >= p + 2);
        assert!(reports.lock().unwrap().is_empty());
        // One bit in region 7 of the odd-address shard, with cudaMemcpy.
        let at = len + 3 + 7 * MIB + 12345;
        dev.upload(at, &[b[7 * MIB + 12345] ^ 0x04]);
        wait_for("the damage callback", || {
            !reports.lock().unwrap().is_empty()
        });
        assert_eq!(
            reports.lock().unwrap()[0],
            ("scrub.b".to_string(), vec![7 * MIB as u64])
        );
        assert_eq!(
            vram_shard_restore(ctx.0, sb.0, b.as_ptr().cast(), len),
            vram_status::VRAM_OK
        );
        // SAFETY: as above.
        assert_eq!(
            vram_shard_device_ptr(sb.0),
            unsafe { dev.0.add(len + 3) }.cast_const().cast()
        );
        let p = scrub_stats(s).passes;
        wait_for("two passes after the restore", || {
            scrub_stats(s).passes >= p + 2
        });
        let st = scrub_stats(s);
        // A pass that read the region's damaged bytes before the restore wrote them back
        // finds its fast digest stale and the seal intact: at most once, and never a report.
        assert_eq!((st.damage_reports, st.errors), (1, 0));
        assert!(st.stale_digests <= 1, "{} stale digests", st.stale_digests);
        assert_eq!(reports.lock().unwrap().len(), 1);
        assert_eq!(vram_scrubber_pause(s), vram_status::VRAM_OK);
        assert_eq!(vram_scrubber_resume(s), vram_status::VRAM_OK);
        vram_scrubber_free(s);
        drop((sa, sb));
    }

    #[test]
    fn seal_device_expect_keeps_only_the_expected_bytes() {
        if !have_gpu("seal_device_expect_keeps_only_the_expected_bytes") {
            return;
        }
        let ctx = cuda_ctx();
        let len = 2 * MIB + 9;
        let data = bytes(len, 31);
        let dev = DevMem::new(len);
        dev.upload(0, &data);
        let root = reference_root(&data, 4096);
        let mut wrong = root;
        wrong[0] ^= 1;
        let used = ctx.used();
        let seal = |root: &[u8; 32]| {
            let mut out = ptr::null_mut();
            let s = vram_seal_device_expect(
                ctx.0,
                c"expected".as_ptr(),
                dev.0.cast(),
                len,
                root.as_ptr(),
                &mut out,
            );
            (s, out)
        };
        let (s, out) = seal(&wrong);
        assert_eq!(s, vram_status::VRAM_ERR_INTEGRITY, "{}", last_error());
        assert!(out.is_null());
        assert_eq!(ctx.used(), used, "a refused tensor stayed counted");
        let (s, out) = seal(&root);
        assert_eq!(s, vram_status::VRAM_OK, "{}", last_error());
        let shard = Shard(out);
        assert_eq!(shard.root(), root);
        assert_eq!(ctx.verify(&shard).0, vram_status::VRAM_OK);
    }

    #[test]
    fn seals_from_pageable_memory_through_the_staging_are_exact() {
        if !have_gpu("seals_from_pageable_memory_through_the_staging_are_exact") {
            return;
        }
        let ctx = std::sync::Arc::new(cuda_ctx());
        // Four threads at once: one holds the page-locked staging, the others copy directly;
        // every root must be the reference one either way.
        let workers: Vec<_> = (0..4u64)
            .map(|t| {
                let ctx = std::sync::Arc::clone(&ctx);
                std::thread::spawn(move || {
                    let data = bytes(200 * MIB + 5 + t as usize, 90 + t);
                    let shard = ctx.seal(&format!("pageable.{t}"), &data);
                    assert_eq!(shard.root(), reference_root(&data, 4096), "thread {t}");
                    assert_eq!(ctx.verify(&shard).0, vram_status::VRAM_OK);
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
    }

    #[test]
    fn seal_device_accepts_only_plain_memory_of_this_gpu() {
        if !have_gpu("seal_device") {
            return;
        }
        let ctx = cuda_ctx();
        let len = 3 * MIB + 5;
        let data = bytes(len, 77);
        let dev = DevMem::new(len + 64);
        dev.upload(0, &data);
        let shard = seal_device(&ctx, "borrowed", dev.0, len).unwrap();
        assert_eq!(shard.root(), reference_root(&data, 4096));
        assert_eq!(vram_shard_device_ptr(shard.0), dev.0.cast_const().cast());
        assert_eq!(
            ctx.used(),
            512 + 32 * 4,
            "borrowed memory is not counted against capacity, only the bookkeeping"
        );
        assert_eq!(ctx.verify(&shard).0, vram_status::VRAM_OK);

        // Unaligned device pointer: still correct (byte-wise path).
        let other = DevMem::new(len + 64);
        other.upload(1, &data);
        let odd = seal_device(&ctx, "odd", other.0.wrapping_add(1), len).unwrap();
        assert_eq!(odd.root(), reference_root(&data, 4096));
        assert_eq!(ctx.verify(&odd).0, vram_status::VRAM_OK);

        // The caller's own cudaMemcpy into the buffer is tampering: caught and located.
        dev.upload(2 * MIB + 100, &[data[2 * MIB + 100] ^ 0xff]);
        let (s, r) = ctx.verify(&shard);
        assert_eq!(s, vram_status::VRAM_ERR_INTEGRITY);
        assert_eq!(r.first_damaged_offset, 2 * MIB as u64);
        drop(odd);
        drop(shard);

        let host_mem = vec![1u8; 4096];
        assert_eq!(
            seal_device(&ctx, "h", host_mem.as_ptr(), 4096).err(),
            Some(vram_status::VRAM_ERR_POLICY)
        );
        assert!(last_error().contains("device_ptr"), "{}", last_error());

        let mut pinned: *mut c_void = ptr::null_mut();
        ok(
            unsafe { cudaMallocHost(&mut pinned, 4096) },
            "cudaMallocHost",
        );
        assert_eq!(
            seal_device(&ctx, "p", pinned.cast(), 4096).err(),
            Some(vram_status::VRAM_ERR_POLICY)
        );
        assert!(last_error().contains("pinned host"), "{}", last_error());
        // SAFETY: allocated above.
        unsafe { cudaFreeHost(pinned) };

        let mut managed: *mut c_void = ptr::null_mut();
        ok(
            unsafe { cudaMallocManaged(&mut managed, 4096, 1) },
            "cudaMallocManaged",
        );
        assert_eq!(
            seal_device(&ctx, "m", managed.cast(), 4096).err(),
            Some(vram_status::VRAM_ERR_POLICY)
        );
        assert!(last_error().contains("managed"), "{}", last_error());
        // SAFETY: allocated above.
        unsafe { cudaFree(managed) };

        assert_eq!(
            seal_device(&ctx, "n", ptr::null(), 10).err(),
            Some(vram_status::VRAM_ERR_NULL_ARGUMENT)
        );
        assert_eq!(
            seal_device(&ctx, "z", dev.0, 0).err(),
            Some(vram_status::VRAM_ERR_INVALID_ARGUMENT)
        );
        let host = host_ctx();
        assert_eq!(
            seal_device(&host, "x", dev.0, 10).err(),
            Some(vram_status::VRAM_ERR_UNSUPPORTED)
        );

        if gpus() >= 2 {
            let mut o = options(vram_backend::VRAM_BACKEND_CUDA, &KEY);
            o.device = 1;
            let other = Ctx::with_options(&o);
            assert_eq!(
                seal_device(&other, "g0", dev.0, 4096).err(),
                Some(vram_status::VRAM_ERR_POLICY)
            );
            assert!(last_error().contains("GPU 0"), "{}", last_error());
        } else {
            println!("SKIPPED other-GPU pointer check: only one GPU");
        }
    }

    #[test]
    fn drill_flips_on_the_device_are_located() {
        if !have_gpu("drill") {
            return;
        }
        let ctx = cuda_ctx();
        for len in [1usize, 4095, 4096, 4097, MIB + 3, 9 * MIB] {
            let shard = ctx.seal("d", &bytes(len, 5));
            for bit in [0u64, 8 * len as u64 - 1, 8 * (len as u64 / 2) + 3] {
                shard.flip(bit);
                let (s, r) = ctx.verify(&shard);
                assert_eq!(s, vram_status::VRAM_ERR_INTEGRITY, "len {len} bit {bit}");
                assert_eq!(r.first_damaged_offset, bit / 8 / MIB as u64 * MIB as u64);
                shard.flip(bit);
                assert_eq!(ctx.verify(&shard).0, vram_status::VRAM_OK);
            }
        }
    }

    #[test]
    fn out_of_vram_is_rejected_and_leaves_nothing() {
        if !have_gpu("out_of_vram") {
            return;
        }
        let ctx = cuda_ctx();
        let (mut free, mut total) = (0usize, 0usize);
        ok(
            unsafe { cudaMemGetInfo(&mut free, &mut total) },
            "cudaMemGetInfo",
        );
        // A host region larger than the GPU's free memory, reserved but never touched: the
        // free-memory check must refuse it before reading a byte.
        let len = free + (1 << 30);
        // SAFETY: an anonymous, never-written, no-reserve mapping; unmapped below.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let mut out = ptr::null_mut();
        let s = vram_seal(ctx.0, c"huge".as_ptr(), p.cast_const(), len, &mut out);
        // SAFETY: mapped above.
        unsafe { libc::munmap(p, len) };
        assert_eq!(s, vram_status::VRAM_ERR_OUT_OF_MEMORY, "{}", last_error());
        assert!(out.is_null());
        assert_eq!(ctx.used(), 0);
        let (mut free2, mut total2) = (0usize, 0usize);
        ok(
            unsafe { cudaMemGetInfo(&mut free2, &mut total2) },
            "cudaMemGetInfo",
        );
        assert!(
            free2 + (64 << 20) >= free,
            "nothing stayed allocated: {free} -> {free2}"
        );
        // Capacity cap on the CUDA backend.
        let mut o = options(vram_backend::VRAM_BACKEND_CUDA, &KEY);
        o.capacity_bytes = 2 * MIB as u64;
        let capped = Ctx::with_options(&o);
        let _a = capped.seal("a", &bytes(MIB, 1));
        assert_eq!(
            capped.try_seal("b", &bytes(2 * MIB, 2)).err(),
            Some(vram_status::VRAM_ERR_OUT_OF_MEMORY)
        );
    }

    #[test]
    fn verify_many_on_a_caller_stream() {
        if !have_gpu("verify_many_on_stream") {
            return;
        }
        let ctx = cuda_ctx();
        let shards: Vec<Shard> = (0..64)
            .map(|i| ctx.seal(&format!("t.{i}"), &bytes(1000 + i * 50_000, i as u64)))
            .collect();
        let ptrs: Vec<*const vram_shard> = shards.iter().map(|s| s.0.cast_const()).collect();
        let mut stream = ptr::null_mut();
        ok(unsafe { cudaStreamCreate(&mut stream) }, "cudaStreamCreate");
        let mut reports = vec![vram_verify_report::default(); ptrs.len()];
        let s = vram_verify_many_on_stream(
            ctx.0,
            ptrs.as_ptr(),
            ptrs.len(),
            reports.as_mut_ptr(),
            stream,
        );
        assert_eq!(s, vram_status::VRAM_OK, "{}", last_error());
        shards[40].flip(77);
        let s = vram_verify_many_on_stream(
            ctx.0,
            ptrs.as_ptr(),
            ptrs.len(),
            reports.as_mut_ptr(),
            stream,
        );
        assert_eq!(s, vram_status::VRAM_ERR_INTEGRITY);
        assert_eq!(reports.iter().filter(|r| r.status != 0).count(), 1);
        assert_eq!(reports[40].damaged_regions, 1);
        // SAFETY: created above.
        unsafe { cudaStreamDestroy(stream) };
    }

    #[test]
    fn calls_restore_the_callers_current_device() {
        if !have_gpu("current_device") {
            return;
        }
        let n = gpus();
        let target = n - 1;
        ok(unsafe { cudaSetDevice(target) }, "cudaSetDevice");
        let ctx = cuda_ctx(); // device 0
        let s = ctx.seal("x", &bytes(10, 1));
        assert_eq!(ctx.verify(&s).0, vram_status::VRAM_OK);
        let mut d = -1;
        ok(unsafe { cudaGetDevice(&mut d) }, "cudaGetDevice");
        assert_eq!(
            d, target,
            "libvram left the caller's current device changed"
        );
        if n >= 2 {
            let mut o = options(vram_backend::VRAM_BACKEND_CUDA, &KEY);
            o.device = 1;
            let c1 = Ctx::with_options(&o);
            let s1 = c1.seal("y", &bytes(10, 2));
            assert_eq!(c1.verify(&s1).0, vram_status::VRAM_OK);
            assert_eq!(
                ctx.verify(&s1).0,
                vram_status::VRAM_ERR_POLICY,
                "shard of GPU 1 on a GPU 0 context"
            );
        } else {
            println!("SKIPPED two-GPU contexts: only one GPU");
        }
    }
}
