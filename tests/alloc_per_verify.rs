//! A verify call's heap use does not grow with the shard: counted with a global allocator.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use vram::*;

struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn measure(ctx: &Ctx, shard: &Shard) -> (u64, u64) {
    ALLOCS.store(0, Ordering::SeqCst);
    BYTES.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let (s, _) = ctx.verify(shard);
    COUNTING.store(false, Ordering::SeqCst);
    assert_eq!(s, vram_status::VRAM_OK);
    (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst))
}

#[test]
fn verify_allocates_the_same_for_8_mib_and_512_mib() {
    if test_backend() != vram_backend::VRAM_BACKEND_HOST {
        return; // The bound is a host-backend promise.
    }
    let ctx = Ctx::new();
    let small = ctx.seal("small", &bytes(8 << 20, 1));
    let big_data = vec![0x5au8; 512 << 20];
    let big = ctx.seal("big", &big_data);
    drop(big_data);
    measure(&ctx, &small); // warm-up: thread-local state of this test thread
    let (n_small, b_small) = measure(&ctx, &small);
    let (n_big, b_big) = measure(&ctx, &big);
    println!("8 MiB: {n_small} allocations, {b_small} B; 512 MiB: {n_big} allocations, {b_big} B");
    assert_eq!(
        n_small, n_big,
        "allocation count must not depend on the shard size"
    );
    assert!(
        b_big <= b_small + 64,
        "bytes allocated must not grow with the shard"
    );
    assert!(
        b_big < 16 * 1024,
        "{b_big} bytes is more than a constant few"
    );
}
