//! Sealing and verification through the C ABI: roots, fault drills, records, batches, threads.

mod common;

use std::ptr;

use common::*;
use vram::*;

const MIB: usize = 1 << 20;

#[test]
fn root_is_rfc9162_over_4k_leaves() {
    let ctx = Ctx::new();
    for len in [1usize, 4095, 4096, 4097, 3 * MIB + 5] {
        let data = bytes(len, len as u64);
        let shard = ctx.seal("model.layers.0.mlp.up_proj.weight", &data);
        assert_eq!(shard.root(), reference_root(&data, 4096), "len {len}");
        assert_eq!(vram_shard_len(shard.0), len);
        let (s, r) = ctx.verify(&shard);
        assert_eq!(s, vram_status::VRAM_OK, "{}", last_error());
        assert_eq!(r.status, vram_status::VRAM_OK as u32);
        assert_eq!(r.total_leaves, len.div_ceil(4096) as u64);
        assert_eq!(r.region_size, MIB as u64);
        assert_eq!(r.total_regions, len.div_ceil(MIB) as u64);
        assert_eq!(r.damaged_regions, 0);
        assert_eq!(r.first_damaged_offset, u64::MAX);
    }
}

#[test]
fn leaf_size_option_changes_the_tree() {
    let ctx = Ctx::new();
    let data = bytes(70_000, 3);
    for leaf in [1024u32, 65536, 1 << 20] {
        let opts = vram_seal_options {
            struct_size: size_of::<vram_seal_options>() as u32,
            leaf_size: leaf,
        };
        let mut out = ptr::null_mut();
        let s = vram_seal_ex(
            ctx.0,
            c"w".as_ptr(),
            data.as_ptr().cast(),
            data.len(),
            &opts,
            &mut out,
        );
        assert_eq!(s, vram_status::VRAM_OK);
        let shard = Shard(out);
        assert_eq!(shard.root(), reference_root(&data, leaf as usize));
        let (s, r) = ctx.verify(&shard);
        assert_eq!(s, vram_status::VRAM_OK);
        assert_eq!(r.leaf_size, leaf);
    }
}

/// One flipped bit anywhere is detected and located to its region; flipping it back restores.
#[test]
fn single_bit_flips_are_detected_and_located() {
    let ctx = Ctx::new();
    let mut rng = 0x1234_5678u64;
    for len in [1usize, 4095, 4096, 4097, MIB + 3] {
        let data = bytes(len, 99 + len as u64);
        let shard = ctx.seal("t", &data);
        let bits = 8 * len as u64;
        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let mut positions = vec![0, 7, bits - 1, bits - 8, rng % bits];
        for boundary in [4095u64, 4096, MIB as u64 - 1, MIB as u64] {
            if boundary < len as u64 {
                positions.push(boundary * 8);
                positions.push(boundary * 8 + 7);
            }
        }
        for bit in positions {
            shard.flip(bit);
            let (s, r) = ctx.verify(&shard);
            assert_eq!(s, vram_status::VRAM_ERR_INTEGRITY, "len {len} bit {bit}");
            assert_eq!(r.status, vram_status::VRAM_ERR_INTEGRITY as u32);
            assert_eq!(r.damaged_regions, 1);
            let region = bit / 8 / MIB as u64;
            assert_eq!(
                r.first_damaged_offset,
                region * MIB as u64,
                "len {len} bit {bit}"
            );
            assert!(last_error().contains("damaged"), "{}", last_error());
            shard.flip(bit);
            assert_eq!(ctx.verify(&shard).0, vram_status::VRAM_OK);
        }
    }
}

#[test]
fn damage_in_several_regions_is_counted() {
    let ctx = Ctx::new();
    let data = bytes(8 * MIB + 100, 5);
    let shard = ctx.seal("big", &data);
    shard.flip(8 * (3 * MIB as u64) + 1);
    shard.flip(8 * (8 * MIB as u64 + 50));
    shard.flip(8 * (5 * MIB as u64 + 4096));
    let (s, r) = ctx.verify(&shard);
    assert_eq!(s, vram_status::VRAM_ERR_INTEGRITY);
    assert_eq!(r.damaged_regions, 3);
    assert_eq!(r.first_damaged_offset, 3 * MIB as u64);
}

#[test]
fn writes_through_the_data_pointer_fault_or_are_caught() {
    if test_backend() != vram_backend::VRAM_BACKEND_HOST {
        return; // The GPU suite covers device-side writes with cudaMemcpy.
    }
    let ctx = Ctx::new();
    let data = bytes(2 * MIB, 8);
    let shard = ctx.seal("w", &data);
    let p = vram_shard_device_ptr(shard.0) as *mut u8;
    assert!(!p.is_null());
    // A stray write into a sealed host shard faults in the writer (its pages are read-only):
    // done in a child process, which must die of SIGSEGV.
    // SAFETY: the child only writes (and faults) or exits; it allocates nothing.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: the address is inside the shard; the write is expected to fault.
        unsafe {
            p.add(MIB + 17).write_volatile(0x40);
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waits for the child created above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV,
        "the stray write did not fault (status {status:#x})"
    );
    assert_eq!(ctx.verify(&shard).0, vram_status::VRAM_OK);

    // An attacker who lifts the protection first is still caught, and located, by verify.
    let page = (p as usize + MIB) & !4095;
    // SAFETY: the page lies inside the shard's mapping; this test plays the attacker.
    unsafe {
        assert_eq!(
            libc::mprotect(
                page as *mut libc::c_void,
                4096,
                libc::PROT_READ | libc::PROT_WRITE
            ),
            0
        );
        *p.add(MIB + 17) ^= 0x40;
    }
    let (s, r) = ctx.verify(&shard);
    assert_eq!(s, vram_status::VRAM_ERR_INTEGRITY);
    assert_eq!(r.first_damaged_offset, MIB as u64);
}

#[test]
fn verify_many_reports_each_shard() {
    let ctx = Ctx::new();
    let shards: Vec<Shard> = (0..40)
        .map(|i| {
            ctx.seal(
                &format!("layers.{i}.attn.q_proj.weight"),
                &bytes(1000 + i * 37_000, i as u64),
            )
        })
        .collect();
    let ptrs: Vec<*const vram_shard> = shards.iter().map(|s| s.0.cast_const()).collect();
    let mut reports = vec![vram_verify_report::default(); ptrs.len()];
    let s = vram_verify_many(ctx.0, ptrs.as_ptr(), ptrs.len(), reports.as_mut_ptr());
    assert_eq!(s, vram_status::VRAM_OK);
    assert!(reports.iter().all(|r| r.status == 0 && r.total_leaves > 0));

    shards[17].flip(12345);
    shards[39].flip(0);
    let s = vram_verify_many(ctx.0, ptrs.as_ptr(), ptrs.len(), reports.as_mut_ptr());
    assert_eq!(s, vram_status::VRAM_ERR_INTEGRITY);
    for (i, r) in reports.iter().enumerate() {
        let damaged = i == 17 || i == 39;
        assert_eq!(
            r.status == vram_status::VRAM_ERR_INTEGRITY as u32,
            damaged,
            "shard {i}"
        );
        assert_eq!(r.damaged_regions, u64::from(damaged));
    }
    // n == 0 is documented as a no-op, NULL array allowed.
    assert_eq!(
        vram_verify_many(ctx.0, ptr::null(), 0, ptr::null_mut()),
        vram_status::VRAM_OK
    );
    // A NULL entry rejects the whole call and writes nothing.
    let with_null = [ptrs[0], ptr::null()];
    let mut untouched = [vram_verify_report {
        status: 77,
        ..Default::default()
    }; 2];
    let s = vram_verify_many(ctx.0, with_null.as_ptr(), 2, untouched.as_mut_ptr());
    assert_eq!(s, vram_status::VRAM_ERR_NULL_ARGUMENT);
    assert!(last_error().contains("shards[1]"));
    assert!(untouched.iter().all(|r| r.status == 77));
}

#[test]
fn records_round_trip_and_any_altered_byte_is_rejected() {
    let ctx = Ctx::new();
    let shard = ctx.seal("model.embed_tokens.weight", &bytes(10_000, 1));
    let record = shard.record();
    assert_eq!(
        vram_record_verify(ctx.0, record.as_ptr(), record.len(), shard.0),
        vram_status::VRAM_OK
    );
    for i in 0..record.len() {
        let mut r = record.clone();
        r[i] ^= 0x01;
        assert_eq!(
            vram_record_verify(ctx.0, r.as_ptr(), r.len(), shard.0),
            vram_status::VRAM_ERR_BAD_SEAL,
            "byte {i}"
        );
    }
    for n in 1..record.len() {
        assert_eq!(
            vram_record_verify(ctx.0, record.as_ptr(), n, shard.0),
            vram_status::VRAM_ERR_BAD_SEAL,
            "truncated to {n}"
        );
        assert!(last_error().starts_with("vram_record_verify: record:"));
    }
}

#[test]
fn record_from_another_key_or_shard_is_rejected() {
    let ctx = Ctx::new();
    let other = Ctx::with_key(&OTHER_KEY);
    let data = bytes(5000, 2);
    let mine = ctx.seal("a", &data);
    let theirs = other.seal("a", &data);
    assert_eq!(
        mine.root(),
        theirs.root(),
        "the root does not depend on the key"
    );
    let r = theirs.record();
    assert_eq!(
        vram_record_verify(ctx.0, r.as_ptr(), r.len(), mine.0),
        vram_status::VRAM_ERR_BAD_SEAL
    );
    assert!(last_error().contains("another key"), "{}", last_error());
    // An authentic record of this key that describes another shard: not a forgery, but not
    // these bytes either.
    let b = ctx.seal("b", &data);
    let rb = b.record();
    assert_eq!(
        vram_record_verify(ctx.0, rb.as_ptr(), rb.len(), mine.0),
        vram_status::VRAM_ERR_INTEGRITY
    );
    assert!(
        last_error().contains("authentic, but names tensor 'b'"),
        "{}",
        last_error()
    );
    // Verifying a shard sealed under another key: its seal does not authenticate.
    let (s, rep) = ctx.verify(&theirs);
    assert_eq!(s, vram_status::VRAM_ERR_BAD_SEAL);
    assert_eq!(rep.status, vram_status::VRAM_ERR_BAD_SEAL as u32);
}

#[test]
fn record_says_host_residency() {
    if test_backend() != vram_backend::VRAM_BACKEND_HOST {
        return;
    }
    let ctx = Ctx::new();
    assert_eq!(
        vram_ctx_backend(ctx.0),
        vram_backend::VRAM_BACKEND_HOST as u32
    );
    let record = ctx.seal("x", b"abc").record();
    // Layout (docs/seal-format.md): 16 + id + 8 + 4 + 32, then residency kind and ordinal.
    let at = 16 + 1 + 8 + 4 + 32;
    assert_eq!(record[at], 0, "residency kind 0 = host");
    assert_eq!(&record[at + 1..at + 5], &(-1i32).to_be_bytes());
}

#[test]
fn sixteen_threads_seal_verify_and_free_at_once() {
    let ctx = Ctx::new();
    std::thread::scope(|s| {
        for t in 0..16u64 {
            let ctx = &ctx;
            s.spawn(move || {
                for round in 0..6u64 {
                    let len = 1 + ((t * 7919 + round * 104_729) % (3 * MIB as u64)) as usize;
                    let data = bytes(len, t * 100 + round);
                    let shard = ctx.seal(&format!("t{t}/r{round}"), &data);
                    assert_eq!(shard.root(), reference_root(&data, 4096));
                    assert_eq!(ctx.verify(&shard).0, vram_status::VRAM_OK);
                    if round % 2 == 0 {
                        shard.flip(8 * (len as u64 - 1));
                        let (st, r) = ctx.verify(&shard);
                        assert_eq!(st, vram_status::VRAM_ERR_INTEGRITY);
                        assert_eq!(r.first_damaged_offset, ((len - 1) / MIB * MIB) as u64);
                    }
                }
            });
        }
    });
    assert_eq!(ctx.used(), 0, "every shard was freed");
}

#[test]
fn one_shard_verified_from_many_threads() {
    let ctx = Ctx::new();
    let shard = ctx.seal("shared", &bytes(6 * MIB + 1, 4));
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                for _ in 0..4 {
                    assert_eq!(ctx.verify(&shard).0, vram_status::VRAM_OK);
                }
            });
        }
    });
}

#[test]
fn shard_outlives_its_context() {
    let ctx = Ctx::new();
    let shard = ctx.seal("keep", &bytes(4097, 6));
    let root = shard.root();
    drop(ctx);
    assert_eq!(shard.root(), root);
    assert_eq!(vram_shard_len(shard.0), 4097);
    let again = Ctx::new();
    assert_eq!(
        again.verify(&shard).0,
        vram_status::VRAM_OK,
        "same key verifies it"
    );
}

#[test]
fn capacity_overflow_is_out_of_memory_and_leaves_nothing() {
    let mut opts = options(test_backend(), &KEY);
    opts.capacity_bytes = held(test_backend(), 3 * MIB);
    let ctx = Ctx::with_options(&opts);
    let a = ctx.seal("a", &bytes(2 * MIB, 1));
    assert_eq!(
        ctx.try_seal("b", &bytes(2 * MIB, 2)).err(),
        Some(vram_status::VRAM_ERR_OUT_OF_MEMORY)
    );
    assert!(last_error().contains("capacity"), "{}", last_error());
    assert_eq!(ctx.used(), held(test_backend(), 2 * MIB));
    drop(a);
    assert_eq!(ctx.used(), 0);
    let _b = ctx.seal("b", &bytes(3 * MIB, 2));
    let mut cap = 0;
    assert_eq!(
        vram_ctx_usage(ctx.0, ptr::null_mut(), &mut cap),
        vram_status::VRAM_OK
    );
    assert_eq!(cap, held(test_backend(), 3 * MIB));
}

#[test]
fn every_damaged_region_is_listed() {
    let ctx = Ctx::new();
    let mib = 1u64 << 20;
    let shard = ctx.seal("listed", &bytes(10 * mib as usize + 77, 5));
    let intact = ctx.seal("intact", &bytes(3 * mib as usize, 6));
    let mut count = usize::MAX;
    assert_eq!(
        vram_verify_regions(ctx.0, intact.0, ptr::null_mut(), 0, &mut count),
        vram_status::VRAM_OK
    );
    assert_eq!(count, 0);
    // Three regions damaged, the last one partial (the shard's tail), out of order.
    for region in [9u64, 1, 4, 10] {
        shard.flip(8 * (region * mib + 3) + 1);
    }
    assert_eq!(
        vram_verify_regions(ctx.0, shard.0, ptr::null_mut(), 0, &mut count),
        vram_status::VRAM_ERR_BUFFER_TOO_SMALL
    );
    assert_eq!(count, 4);
    let mut offsets = vec![u64::MAX; 8];
    assert_eq!(
        vram_verify_regions(ctx.0, shard.0, offsets.as_mut_ptr(), 3, &mut count),
        vram_status::VRAM_ERR_BUFFER_TOO_SMALL
    );
    assert!(
        offsets.iter().all(|&o| o == u64::MAX),
        "written while too small"
    );
    assert_eq!(
        vram_verify_regions(
            ctx.0,
            shard.0,
            offsets.as_mut_ptr(),
            offsets.len(),
            &mut count
        ),
        vram_status::VRAM_ERR_INTEGRITY
    );
    assert_eq!(&offsets[..count], &[mib, 4 * mib, 9 * mib, 10 * mib]);
    assert_eq!(offsets[count], u64::MAX);
    // Bad input.
    assert_eq!(
        vram_verify_regions(ctx.0, shard.0, ptr::null_mut(), 4, &mut count),
        vram_status::VRAM_ERR_NULL_ARGUMENT
    );
    assert_eq!(
        vram_verify_regions(ctx.0, shard.0, offsets.as_mut_ptr(), 8, ptr::null_mut()),
        vram_status::VRAM_ERR_NULL_ARGUMENT
    );
    assert_eq!(
        vram_verify_regions(
            ptr::null_mut(),
            shard.0,
            offsets.as_mut_ptr(),
            8,
            &mut count
        ),
        vram_status::VRAM_ERR_NULL_ARGUMENT
    );
}

#[test]
fn restore_rewrites_damaged_regions_in_place_and_only_with_the_sealed_bytes() {
    let ctx = Ctx::new();
    let mib = 1u64 << 20;
    let data = bytes(5 * mib as usize + 999, 11);
    let shard = ctx.seal("restored", &data);
    let at = vram_shard_device_ptr(shard.0);
    // Intact: nothing to write.
    let restore = |d: &[u8]| vram_shard_restore(ctx.0, shard.0, d.as_ptr().cast(), d.len());
    assert_eq!(restore(&data), vram_status::VRAM_OK);
    shard.flip(8 * (mib + 7));
    shard.flip(8 * (3 * mib + 5 * 4096) + 6);
    // Wrong bytes (one byte off, in an undamaged region): refused, nothing written.
    let mut wrong = data.clone();
    wrong[4 * mib as usize] ^= 1;
    assert_eq!(restore(&wrong), vram_status::VRAM_ERR_INTEGRITY);
    assert!(
        last_error().contains("nothing was written"),
        "{}",
        last_error()
    );
    let mut offsets = [0u64; 4];
    let mut n = 0;
    assert_eq!(
        vram_verify_regions(ctx.0, shard.0, offsets.as_mut_ptr(), 4, &mut n),
        vram_status::VRAM_ERR_INTEGRITY
    );
    assert_eq!(&offsets[..n], &[mib, 3 * mib], "the damage is untouched");
    // Bad input changes nothing either.
    assert_eq!(
        restore(&data[..data.len() - 1]),
        vram_status::VRAM_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        vram_shard_restore(ctx.0, shard.0, ptr::null(), data.len()),
        vram_status::VRAM_ERR_NULL_ARGUMENT
    );
    assert_eq!(
        vram_shard_restore(ptr::null_mut(), shard.0, data.as_ptr().cast(), data.len()),
        vram_status::VRAM_ERR_NULL_ARGUMENT
    );
    // The sealed bytes: the damaged regions are rewritten at the same address.
    assert_eq!(restore(&data), vram_status::VRAM_OK);
    assert_eq!(ctx.verify(&shard).0, vram_status::VRAM_OK);
    assert_eq!(vram_shard_device_ptr(shard.0), at, "restored in place");
    // A context of another key cannot restore (the seal does not authenticate under it).
    let other = Ctx::with_key(&OTHER_KEY);
    shard.flip(9);
    assert_eq!(
        vram_shard_restore(other.0, shard.0, data.as_ptr().cast(), data.len()),
        vram_status::VRAM_ERR_BAD_SEAL
    );
    assert_eq!(restore(&data), vram_status::VRAM_OK);
}

#[test]
fn async_verify_returns_at_once_and_reports_like_verify_many() {
    let ctx = Ctx::new();
    let a = ctx.seal("async.a", &bytes(3 << 20, 1));
    let b = ctx.seal("async.b", &bytes(5 << 20, 2));
    let c = ctx.seal("async.c", &bytes(1000, 3));
    b.flip(8 * (4 << 20) + 2);
    let list = [a.0.cast_const(), b.0.cast_const(), c.0.cast_const()];
    let mut ticket = ptr::null_mut();
    assert_eq!(
        vram_verify_many_async(ctx.0, list.as_ptr(), 3, ptr::null_mut(), &mut ticket),
        vram_status::VRAM_OK
    );
    // The ticket holds the shards: freeing one meanwhile is allowed.
    drop(c);
    let mut done = 0;
    while done == 0 {
        assert_eq!(
            vram_verify_ticket_query(ticket, &mut done),
            vram_status::VRAM_OK
        );
    }
    let mut reports = [vram_verify_report::default(); 3];
    for _ in 0..2 {
        assert_eq!(
            vram_verify_ticket_wait(ticket, reports.as_mut_ptr()),
            vram_status::VRAM_ERR_INTEGRITY
        );
        assert_eq!(reports[0].status, vram_status::VRAM_OK as u32);
        assert_eq!(reports[1].status, vram_status::VRAM_ERR_INTEGRITY as u32);
        assert_eq!(reports[1].first_damaged_offset, 4 << 20);
        assert_eq!(reports[2].status, vram_status::VRAM_OK as u32);
    }
    vram_verify_ticket_free(ticket);
    // Freed while possibly still running, and an empty batch.
    let mut t2 = ptr::null_mut();
    assert_eq!(
        vram_verify_many_async(ctx.0, list.as_ptr(), 2, ptr::null_mut(), &mut t2),
        vram_status::VRAM_OK
    );
    vram_verify_ticket_free(t2);
    let mut t3 = ptr::null_mut();
    assert_eq!(
        vram_verify_many_async(ctx.0, ptr::null(), 0, ptr::null_mut(), &mut t3),
        vram_status::VRAM_OK
    );
    assert_eq!(
        vram_verify_ticket_wait(t3, ptr::null_mut()),
        vram_status::VRAM_OK
    );
    vram_verify_ticket_free(t3);
    // Bad input: nothing started, nothing written.
    let mut t4 = ptr::null_mut();
    assert_eq!(
        vram_verify_many_async(ptr::null_mut(), list.as_ptr(), 2, ptr::null_mut(), &mut t4),
        vram_status::VRAM_ERR_NULL_ARGUMENT
    );
    let holes = [a.0.cast_const(), ptr::null()];
    assert_eq!(
        vram_verify_many_async(ctx.0, holes.as_ptr(), 2, ptr::null_mut(), &mut t4),
        vram_status::VRAM_ERR_NULL_ARGUMENT
    );
    assert!(t4.is_null());
    assert_eq!(
        vram_verify_ticket_query(ptr::null(), &mut done),
        vram_status::VRAM_ERR_NULL_ARGUMENT
    );
    assert_eq!(
        vram_verify_ticket_wait(ptr::null(), reports.as_mut_ptr()),
        vram_status::VRAM_ERR_NULL_ARGUMENT
    );
    vram_verify_ticket_free(ptr::null_mut());
}
