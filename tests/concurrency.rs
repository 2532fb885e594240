//! The concurrency cases of the hardening work: a log callback that calls back into libvram
//! (verify, seal, replace itself), a callback replaced while other threads emit, and shards
//! freed while other threads verify other shards. Every case must finish (a deadlock would
//! hang the test, so each runs under a watchdog) and keep the documented guarantees.
//!
//! One test function: the log callback is process-wide, so the cases run one after another.

mod common;

use std::ffi::{c_char, c_void};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::Duration;

use common::*;
use vram::*;

/// Runs `f` on a thread and fails the test if it has not finished within `secs` seconds.
fn within(secs: u64, what: &str, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => h.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The closure panicked: surface its message.
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p)
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: still running after {secs} s (deadlock?)")
        }
    }
}

/// What a re-entrant callback works on: a context and a shard, through userdata.
struct Reentry {
    ctx: *mut vram_ctx,
    shard: *mut vram_shard,
    calls: AtomicUsize,
    replace: AtomicBool,
}

// SAFETY: the context and the shard are documented as usable from many threads at once; the
// rest is atomics.
unsafe impl Send for Reentry {}
// SAFETY: as above.
unsafe impl Sync for Reentry {}

extern "C" fn reentrant(userdata: *mut c_void, _level: u32, _t: *const c_char, _m: *const c_char) {
    // SAFETY: userdata is the Reentry the test keeps alive while the callback is installed.
    let r = unsafe { &*(userdata as *const Reentry) };
    r.calls.fetch_add(1, Ordering::SeqCst);
    // Nested calls raise events of their own: they must not deadlock or recurse.
    assert_eq!(
        vram_verify(r.ctx, r.shard, ptr::null_mut()),
        vram_status::VRAM_OK
    );
    let mut tmp = ptr::null_mut();
    let id = c"nested.seal";
    if vram_seal(r.ctx, id.as_ptr(), b"x".as_ptr().cast(), 1, &mut tmp) == vram_status::VRAM_OK {
        vram_shard_free(tmp);
    }
    if r.replace.load(Ordering::SeqCst) {
        vram_set_log_callback(None, ptr::null_mut(), 0);
    }
}

static GENERATION: AtomicU64 = AtomicU64::new(0);
static STALE_CALLS: AtomicU64 = AtomicU64::new(0);

extern "C" fn generational(userdata: *mut c_void, _l: u32, _t: *const c_char, _m: *const c_char) {
    // userdata carries the generation this callback was installed as; once a newer one has
    // been installed *and its installing call returned*, this one must never run again.
    if (userdata as u64) < GENERATION.load(Ordering::SeqCst) {
        STALE_CALLS.fetch_add(1, Ordering::SeqCst);
    }
    std::thread::yield_now();
}

#[test]
fn logging_and_freeing_under_concurrency() {
    // 1. A callback that verifies, seals, and finally removes itself, all from inside.
    within(20, "re-entrant callback", || {
        let ctx = Ctx::new();
        let shard = ctx.seal("layers.0.weight", &bytes(1 << 20, 3));
        let r = Box::new(Reentry {
            ctx: ctx.0,
            shard: shard.0,
            calls: AtomicUsize::new(0),
            replace: AtomicBool::new(false),
        });
        let ud = &*r as *const Reentry as *mut c_void;
        vram_set_log_callback(Some(reentrant), ud, 5);
        assert_eq!(ctx.verify(&shard).0, vram_status::VRAM_OK);
        let after_verify = r.calls.load(Ordering::SeqCst);
        assert!(after_verify >= 1, "the callback was not called");
        r.replace.store(true, Ordering::SeqCst);
        assert_eq!(ctx.verify(&shard).0, vram_status::VRAM_OK);
        let after_removal = r.calls.load(Ordering::SeqCst);
        // The callback removed itself: later events reach nobody.
        assert_eq!(ctx.verify(&shard).0, vram_status::VRAM_OK);
        assert_eq!(r.calls.load(Ordering::SeqCst), after_removal);
        vram_set_log_callback(None, ptr::null_mut(), 0);
        drop(shard);
    });

    // 2. Re-entrant callbacks on 8 threads while another thread replaces the callback.
    within(
        60,
        "replacement while callbacks call back into libvram",
        || {
            let ctx = Arc::new(Ctx::new());
            let shard = Arc::new(ctx.seal("shared", &bytes(64 << 10, 4)));
            let r = Arc::new(Reentry {
                ctx: ctx.0,
                shard: shard.0,
                calls: AtomicUsize::new(0),
                replace: AtomicBool::new(false),
            });
            let stop = Arc::new(AtomicBool::new(false));
            let ud = Arc::as_ptr(&r) as *mut c_void;
            let mut workers = Vec::new();
            for t in 0..8 {
                let (ctx, shard, stop) = (Arc::clone(&ctx), Arc::clone(&shard), Arc::clone(&stop));
                workers.push(std::thread::spawn(move || {
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        assert_eq!(ctx.verify(&shard).0, vram_status::VRAM_OK);
                        let s = ctx.seal(&format!("t{t}.{i}"), b"abc");
                        drop(s);
                        i += 1;
                    }
                }));
            }
            for k in 0..300 {
                if k % 2 == 0 {
                    vram_set_log_callback(Some(reentrant), ud, 5);
                    std::thread::sleep(Duration::from_micros(500));
                } else {
                    vram_set_log_callback(None, ptr::null_mut(), 0);
                }
            }
            vram_set_log_callback(None, ptr::null_mut(), 0);
            stop.store(true, Ordering::SeqCst);
            for w in workers {
                w.join().unwrap();
            }
            assert!(r.calls.load(Ordering::SeqCst) > 0);
        },
    );

    // 3. Once vram_set_log_callback returns, the replaced callback never runs again.
    within(60, "replacement is final", || {
        let ctx = Arc::new(Ctx::new());
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for t in 0..8 {
            let (ctx, stop) = (Arc::clone(&ctx), Arc::clone(&stop));
            workers.push(std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    drop(ctx.seal(&format!("g{t}.{i}"), b"x"));
                    i += 1;
                }
            }));
        }
        for g in 1..=2000u64 {
            vram_set_log_callback(Some(generational), g as *mut c_void, 5);
            // From here on, generation g - 1 must never be called.
            GENERATION.store(g, Ordering::SeqCst);
        }
        vram_set_log_callback(None, ptr::null_mut(), 0);
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(
            STALE_CALLS.load(Ordering::SeqCst),
            0,
            "a replaced callback ran"
        );
    });

    // 4. 16 threads: each frees its own shards while the others verify theirs.
    within(120, "free while others verify", || {
        let ctx = Arc::new(Ctx::new());
        let start = Arc::new(Barrier::new(16));
        let workers: Vec<_> = (0..16)
            .map(|t| {
                let (ctx, start) = (Arc::clone(&ctx), Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    for round in 0..40 {
                        let shards: Vec<Shard> = (0..4)
                            .map(|k| {
                                ctx.seal(&format!("t{t}.r{round}.{k}"), &bytes(8192 + k, t as u64))
                            })
                            .collect();
                        let ptrs: Vec<*const vram_shard> =
                            shards.iter().map(|s| s.0.cast_const()).collect();
                        assert_eq!(
                            vram_verify_many(ctx.0, ptrs.as_ptr(), ptrs.len(), ptr::null_mut()),
                            vram_status::VRAM_OK
                        );
                        drop(shards);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(ctx.used(), 0, "freed shards left bytes counted");
    });
}
