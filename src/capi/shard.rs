//! `vram_seal*`, `vram_verify*`, `vram_shard_*`, `vram_record_verify`: sealed shards.

use std::ffi::{c_char, c_int, c_void};
use std::sync::Arc;

use super::boundary::{
    arg_bytes, arg_cstr, arg_mut, arg_ref, check_struct_size, guard, guard_value,
};
use super::types::{
    vram_ctx, vram_seal_options, vram_shard, vram_status, vram_verify_report, vram_verify_ticket,
};
use crate::backend::StreamHandle;
use crate::context::{Outcome, VerifyReport};
use crate::error::{ErrorKind, Result, VramError};
use crate::seal::shard_id::MAX_SHARD_ID_LEN;
use crate::shard::Shard;

fn seal_into(
    ctx: *mut vram_ctx,
    shard_id: *const c_char,
    data: *const c_void,
    len: usize,
    leaf_size: Option<u32>,
    out: *mut *mut vram_shard,
) -> Result<()> {
    let ctx = arg_ref(ctx.cast_const(), "ctx")?;
    let id = arg_cstr(shard_id, MAX_SHARD_ID_LEN, "shard_id")?;
    let data = arg_bytes(data.cast::<u8>(), len, "data", false)?;
    let out = arg_mut(out, "out")?;
    let shard = ctx.inner.seal(id, data, leaf_size)?;
    *out = Box::into_raw(Box::new(vram_shard {
        inner: Arc::new(shard),
    }));
    Ok(())
}

/// Copies `len` bytes from `data` into the context's backend and seals them.
///
/// - `shard_id`: NUL-terminated UTF-8, 1–256 bytes, no control characters, no invisible,
///   bidirectional-control or separator characters (zero-width spaces and joiners, U+202A–202E,
///   U+2066–2069, U+2028, U+FEFF, whitespace other than the ASCII space, …), no leading `/`, no
///   `..` path segment (e.g. `model.layers.0.mlp.up_proj.weight`). Unique among the context's
///   live shards: an id sealed and not yet freed → ::VRAM_ERR_INVALID_ARGUMENT. Copied.
/// - `data`, `len`: the bytes, read during the call only; `len` must be > 0.
/// - `out`: on success receives a new shard owned by the caller (free with vram_shard_free());
///   untouched on failure.
///
/// NULL `ctx`, `shard_id`, `data` or `out` → ::VRAM_ERR_NULL_ARGUMENT. Errors:
/// ::VRAM_ERR_INVALID_ARGUMENT (bad or live id, `len == 0`), ::VRAM_ERR_OUT_OF_MEMORY (over the
/// context's capacity or out of memory), ::VRAM_ERR_DEVICE. On every error nothing stays
/// allocated and vram_ctx_usage() is unchanged.
///
/// Host backend: the copy's pages are made read-only once sealed (`mprotect`), so a stray
/// write through vram_shard_device_ptr() faults in the writer. CUDA backend: a seal of at least
/// 8 MiB from pageable memory is copied through a ring of 24 × 8 MiB of page-locked staging
/// that the context makes on first use and keeps until it is freed, filled by up to 16 threads
/// (`max_threads` in ::vram_ctx_options) while the DMA engine empties it, so the copy runs near
/// page-locked speed (one such seal at a time: others, and loads, wait for the ring or copy
/// directly).
///
/// Thread-safety: any number of threads may seal through one context at once.
#[unsafe(no_mangle)]
pub extern "C" fn vram_seal(
    ctx: *mut vram_ctx,
    shard_id: *const c_char,
    data: *const c_void,
    len: usize,
    out: *mut *mut vram_shard,
) -> vram_status {
    guard("vram_seal", || {
        seal_into(ctx, shard_id, data, len, None, out)
    })
}

/// vram_seal() with options (today: the Merkle leaf size).
///
/// `opts` is read during the call; NULL → ::VRAM_ERR_NULL_ARGUMENT. A wrong `struct_size` or a
/// leaf size that is not a power of two in [1024, 1048576] → ::VRAM_ERR_INVALID_ARGUMENT.
/// Everything else as vram_seal().
#[unsafe(no_mangle)]
pub extern "C" fn vram_seal_ex(
    ctx: *mut vram_ctx,
    shard_id: *const c_char,
    data: *const c_void,
    len: usize,
    opts: *const vram_seal_options,
    out: *mut *mut vram_shard,
) -> vram_status {
    guard("vram_seal_ex", || {
        let opts = arg_ref(opts, "opts")?;
        check_struct_size(opts.struct_size, size_of::<vram_seal_options>(), "opts")?;
        let leaf = (opts.leaf_size != 0).then_some(opts.leaf_size);
        seal_into(ctx, shard_id, data, len, leaf, out)
    })
}

/// The overall status of a batch: a bad seal outranks damage, damage outranks success.
fn batch_status(reports: &[VerifyReport]) -> Result<()> {
    let bad_seal = reports
        .iter()
        .filter(|r| r.outcome == Outcome::BadSeal)
        .count();
    let damaged = reports
        .iter()
        .filter(|r| r.outcome == Outcome::Damaged)
        .count();
    if bad_seal > 0 {
        return Err(VramError::new(
            ErrorKind::BadSeal,
            format!(
                "{bad_seal} shard(s) have a seal that does not authenticate under this context's key"
            ),
        ));
    }
    if damaged > 0 {
        let first = reports.iter().find(|r| r.outcome == Outcome::Damaged);
        return Err(VramError::new(
            ErrorKind::Integrity,
            format!(
                "{damaged} shard(s) damaged; first damage at byte offset {}",
                first.map_or(0, |r| r.first_damaged_offset)
            ),
        ));
    }
    Ok(())
}

/// Re-hashes the shard's bytes where they live and compares them with its seal in constant time.
///
/// - `report`: nullable; when not NULL it is written for ::VRAM_OK, ::VRAM_ERR_INTEGRITY and
///   ::VRAM_ERR_BAD_SEAL (it says which regions are damaged).
///
/// Returns ::VRAM_OK when intact, ::VRAM_ERR_INTEGRITY when bytes changed,
/// ::VRAM_ERR_BAD_SEAL when the shard's seal does not authenticate under `ctx`'s key,
/// ::VRAM_ERR_POLICY when the shard lives on another backend or device,
/// ::VRAM_ERR_NULL_ARGUMENT for a NULL `ctx` or `shard`.
///
/// Thread-safety: a shard may be verified by many threads at once.
#[unsafe(no_mangle)]
pub extern "C" fn vram_verify(
    ctx: *mut vram_ctx,
    shard: *const vram_shard,
    report: *mut vram_verify_report,
) -> vram_status {
    guard("vram_verify", || {
        let ctx = arg_ref(ctx.cast_const(), "ctx")?;
        let shard = arg_ref(shard, "shard")?;
        let r = ctx.inner.verify(&shard.inner)?;
        if let Ok(out) = arg_mut(report, "report") {
            *out = vram_verify_report::from(&r);
        }
        batch_status(std::slice::from_ref(&r))
    })
}

/// Re-hashes the shard where it lives, as vram_verify(), and lists the byte offset of **every**
/// damaged region, ascending (regions are 1 MiB: `report.region_size` of vram_verify()).
///
/// - `offsets`: the caller's array of `cap` entries; NULL only when `cap` is 0.
/// - `count`: required; receives the number of damaged regions (0 when intact).
///
/// Returns ::VRAM_OK when intact (`count` = 0); ::VRAM_ERR_INTEGRITY when bytes changed, with
/// `*count` offsets written to `offsets`; ::VRAM_ERR_BUFFER_TOO_SMALL when `cap < *count` (then
/// only `*count` is written: call with `cap` 0 to learn it, then again — each call re-hashes,
/// so damage that grew in between is reported again as too small); ::VRAM_ERR_BAD_SEAL
/// (`count` = 0) when the shard's seal does not authenticate; ::VRAM_ERR_POLICY,
/// ::VRAM_ERR_NULL_ARGUMENT as vram_verify().
///
/// Thread-safety: as vram_verify().
#[unsafe(no_mangle)]
pub extern "C" fn vram_verify_regions(
    ctx: *mut vram_ctx,
    shard: *const vram_shard,
    offsets: *mut u64,
    cap: usize,
    count: *mut usize,
) -> vram_status {
    guard("vram_verify_regions", || {
        let ctx = arg_ref(ctx.cast_const(), "ctx")?;
        let shard = arg_ref(shard, "shard")?;
        let count = arg_mut(count, "count")?;
        if cap > 0 && offsets.is_null() {
            return Err(VramError::null("offsets"));
        }
        let (report, found) = ctx.inner.damaged_regions(&shard.inner)?;
        *count = found.len();
        if found.len() > cap {
            return Err(VramError::new(
                ErrorKind::BufferTooSmall,
                format!("offsets: {} damaged regions, room for {cap}", found.len()),
            ));
        }
        if !found.is_empty() {
            // SAFETY: caller's contract: `offsets` is writable for `cap` >= found.len() entries
            // (non-NULL, checked above).
            unsafe { std::ptr::copy_nonoverlapping(found.as_ptr(), offsets, found.len()) };
        }
        batch_status(std::slice::from_ref(&report))
    })
}

/// Repairs a damaged shard **in place** from replacement bytes, so its address never changes
/// (CUDA graphs and kernel arguments that hold it stay valid).
///
/// - `data`, `len`: the replacement bytes in host memory (e.g. re-read from the model file),
///   exactly the shard's length; borrowed for the call.
///
/// First hashes `data` and refuses it unless its Merkle root equals the sealed root
/// (::VRAM_ERR_INTEGRITY, **nothing written**). Then re-hashes the shard where it lives, writes
/// only the regions that are damaged now (at the same address; for a shard sealed in place with
/// vram_seal_device(), into the caller's memory), and verifies again: ::VRAM_OK when the shard
/// is intact afterwards (also when it was intact already: nothing written), ::VRAM_ERR_INTEGRITY
/// when rewritten regions still differ (a persistent fault, or a concurrent writer).
/// A `vram.restored` warning names the shard and the regions rewritten.
///
/// Errors: ::VRAM_ERR_NULL_ARGUMENT; ::VRAM_ERR_INVALID_ARGUMENT (`len` is not the shard's);
/// ::VRAM_ERR_BAD_SEAL (the shard's own seal does not authenticate: nothing written);
/// ::VRAM_ERR_POLICY (the shard lives on another backend or device); ::VRAM_ERR_DEVICE.
///
/// Thread-safety: no other call may use this shard (and no kernel read it) during the call;
/// other shards are unaffected.
#[unsafe(no_mangle)]
pub extern "C" fn vram_shard_restore(
    ctx: *mut vram_ctx,
    shard: *mut vram_shard,
    data: *const c_void,
    len: usize,
) -> vram_status {
    guard("vram_shard_restore", || {
        let ctx = arg_ref(ctx.cast_const(), "ctx")?;
        let shard = arg_ref(shard.cast_const(), "shard")?;
        let data = arg_bytes(data.cast::<u8>(), len, "data", false)?;
        ctx.inner.restore(&shard.inner, data).map(|_| ())
    })
}

fn verify_batch(
    ctx: *mut vram_ctx,
    shards: *const *const vram_shard,
    n: usize,
    reports: *mut vram_verify_report,
    stream: Option<StreamHandle>,
) -> Result<()> {
    let ctx = arg_ref(ctx.cast_const(), "ctx")?;
    if n == 0 {
        return Ok(());
    }
    if shards.is_null() {
        return Err(VramError::null("shards"));
    }
    if n > isize::MAX as usize / size_of::<*const vram_shard>() {
        return Err(VramError::invalid("n", "is larger than the address space"));
    }
    // SAFETY: caller's contract: `shards` points to `n` readable pointers (n > 0, non-NULL,
    // size checked above).
    let ptrs = unsafe { std::slice::from_raw_parts(shards, n) };
    let mut list: Vec<&Shard> = Vec::with_capacity(n);
    for (i, &p) in ptrs.iter().enumerate() {
        list.push(&arg_ref(p, &format!("shards[{i}]"))?.inner);
    }
    let rs = ctx.inner.verify_many(&list, stream)?;
    if !reports.is_null() {
        // SAFETY: caller's contract: a non-NULL `reports` has room for `n` reports.
        let out = unsafe { std::slice::from_raw_parts_mut(reports, n) };
        for (o, r) in out.iter_mut().zip(&rs) {
            *o = vram_verify_report::from(r);
        }
    }
    batch_status(&rs)
}

/// Verifies `n` shards in one batch (one pass over all their bytes; on the GPU, one kernel
/// launch: many small shards verify as fast as one large one).
///
/// - `shards`: array of `n` non-NULL shard pointers (NULL entry → ::VRAM_ERR_NULL_ARGUMENT,
///   nothing verified). May be NULL only when `n == 0`, which returns ::VRAM_OK.
/// - `reports`: nullable; else an array of `n` reports, written (entry i for shard i) when the
///   call returns ::VRAM_OK, ::VRAM_ERR_INTEGRITY or ::VRAM_ERR_BAD_SEAL.
///
/// Returns ::VRAM_ERR_BAD_SEAL if any shard's seal fails, else ::VRAM_ERR_INTEGRITY if any
/// shard is damaged, else ::VRAM_OK; ::VRAM_ERR_POLICY when any shard lives on another backend
/// or device (nothing verified); ::VRAM_ERR_DEVICE on a GPU error. Thread-safe as vram_verify().
#[unsafe(no_mangle)]
pub extern "C" fn vram_verify_many(
    ctx: *mut vram_ctx,
    shards: *const *const vram_shard,
    n: usize,
    reports: *mut vram_verify_report,
) -> vram_status {
    guard("vram_verify_many", || {
        verify_batch(ctx, shards, n, reports, None)
    })
}

/// vram_verify_many() with its GPU work enqueued on the caller's CUDA stream, so verification
/// is ordered with (and can overlap) the caller's other work: `stream` is a `cudaStream_t` of
/// the context's GPU (NULL = the legacy default stream). The call waits on that stream before
/// it returns, so the reports are ready. The host backend ignores `stream`. Everything else as
/// vram_verify_many().
#[unsafe(no_mangle)]
pub extern "C" fn vram_verify_many_on_stream(
    ctx: *mut vram_ctx,
    shards: *const *const vram_shard,
    n: usize,
    reports: *mut vram_verify_report,
    stream: *mut c_void,
) -> vram_status {
    guard("vram_verify_many_on_stream", || {
        verify_batch(ctx, shards, n, reports, Some(StreamHandle(stream as usize)))
    })
}

/// Starts verifying `n` shards without blocking the calling thread: on the CUDA backend the
/// hashing (one batched kernel launch) is queued on `stream` — a `cudaStream_t` of the
/// context's GPU, ordered after the caller's work on it; NULL: libvram's own stream — and the
/// call returns at once. The host backend verifies within the call (the ticket is then ready).
///
/// - `shards`: as vram_verify_many(); each shard is kept alive by the ticket (freeing a shard
///   meanwhile is allowed).
/// - `out`: receives a ticket owned by the caller: poll it with vram_verify_ticket_query(),
///   collect the reports with vram_verify_ticket_wait(), free it with vram_verify_ticket_free().
///
/// libvram never synchronises the device or waits on the caller's stream in this call.
/// Errors (nothing started, `out` untouched): ::VRAM_ERR_NULL_ARGUMENT, ::VRAM_ERR_POLICY (a
/// shard of another backend or device), ::VRAM_ERR_OUT_OF_MEMORY, ::VRAM_ERR_DEVICE.
/// Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_verify_many_async(
    ctx: *mut vram_ctx,
    shards: *const *const vram_shard,
    n: usize,
    stream: *mut c_void,
    out: *mut *mut vram_verify_ticket,
) -> vram_status {
    guard("vram_verify_many_async", || {
        let ctx = arg_ref(ctx.cast_const(), "ctx")?;
        let out = arg_mut(out, "out")?;
        let list = shard_list(shards, n)?;
        let stream = (!stream.is_null()).then_some(StreamHandle(stream as usize));
        let pending = ctx.inner.verify_many_async(list, stream)?;
        *out = Box::into_raw(Box::new(vram_verify_ticket { inner: pending }));
        Ok(())
    })
}

/// Whether a ticket's verify has finished, without blocking: `*done` = 1 when
/// vram_verify_ticket_wait() would return at once, else 0.
///
/// NULL `ticket` or `done` → ::VRAM_ERR_NULL_ARGUMENT; ::VRAM_ERR_DEVICE on a GPU error.
/// Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_verify_ticket_query(
    ticket: *const vram_verify_ticket,
    done: *mut c_int,
) -> vram_status {
    guard("vram_verify_ticket_query", || {
        let ticket = arg_ref(ticket, "ticket")?;
        let done = arg_mut(done, "done")?;
        *done = c_int::from(ticket.inner.is_done()?);
        Ok(())
    })
}

/// Waits for a ticket's verify (only for its own work, not the whole device) and writes its
/// reports: `reports` (nullable) has room for the `n` given to vram_verify_many_async().
/// Returns as vram_verify_many() would have: ::VRAM_ERR_BAD_SEAL if any seal fails, else
/// ::VRAM_ERR_INTEGRITY if any shard is damaged, else ::VRAM_OK. May be called again (the same
/// result). NULL `ticket` → ::VRAM_ERR_NULL_ARGUMENT. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_verify_ticket_wait(
    ticket: *const vram_verify_ticket,
    reports: *mut vram_verify_report,
) -> vram_status {
    guard("vram_verify_ticket_wait", || {
        let ticket = arg_ref(ticket, "ticket")?;
        let rs = ticket.inner.wait()?;
        if !reports.is_null() {
            // SAFETY: caller's contract: a non-NULL `reports` has room for the ticket's `n`
            // reports (rs.len() == n).
            let out = unsafe { std::slice::from_raw_parts_mut(reports, rs.len()) };
            for (o, r) in out.iter_mut().zip(&rs) {
                *o = vram_verify_report::from(r);
            }
        }
        batch_status(&rs)
    })
}

/// Frees a ticket: waits for its verify if it still runs (its memory is in use until then),
/// then releases it and its hold on the shards. NULL is a no-op. The caller must ensure no other
/// thread uses `ticket` during or after this call.
#[unsafe(no_mangle)]
pub extern "C" fn vram_verify_ticket_free(ticket: *mut vram_verify_ticket) {
    guard_value("vram_verify_ticket_free", (), || {
        if !ticket.is_null() {
            // SAFETY: a non-NULL ticket came from vram_verify_many_async (Box::into_raw) and is
            // freed once (the caller's contract).
            drop(unsafe { Box::from_raw(ticket) });
        }
    })
}

/// The shards of a C array (`n` > 0 non-NULL pointers; NULL array only when `n` is 0),
/// shared.
pub(crate) fn shard_list(
    shards: *const *const vram_shard,
    n: usize,
) -> Result<Vec<crate::shard::SharedShard>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if shards.is_null() {
        return Err(VramError::null("shards"));
    }
    if n > isize::MAX as usize / size_of::<*const vram_shard>() {
        return Err(VramError::invalid("n", "is larger than the address space"));
    }
    // SAFETY: caller's contract: `shards` points to `n` readable pointers (n > 0, non-NULL,
    // size checked above).
    let ptrs = unsafe { std::slice::from_raw_parts(shards, n) };
    let mut list = Vec::with_capacity(n);
    for (i, &p) in ptrs.iter().enumerate() {
        list.push(Arc::clone(&arg_ref(p, &format!("shards[{i}]"))?.inner));
    }
    Ok(list)
}

/// Seals `len` bytes of GPU memory that the caller already owns, in place, without copying.
///
/// - `device_ptr`: plain device memory of the context's GPU: from cudaMalloc, from
///   cudaMallocAsync (a memory pool), or mapped with the virtual memory management API
///   (cuMemCreate + cuMemMap, as PyTorch's expandable segments do). Host, pinned, managed or
///   unregistered memory, or memory of another GPU → ::VRAM_ERR_POLICY. Borrowed: libvram never
///   frees it; free the shard before the memory. The caller must not write to it while sealed
///   (a write is tampering, caught by verify).
/// - `len`: > 0, and `[device_ptr, device_ptr + len)` must lie inside one allocation, checked
///   with the driver's address-range query before anything is read: a `len` that runs past it
///   → ::VRAM_ERR_INVALID_ARGUMENT (the message says how many bytes belong to the allocation).
///   VMM memory may span consecutive mappings of one reserved range, each of them device
///   memory of the context's GPU; a range reaching anything else → ::VRAM_ERR_POLICY. A driver
///   that cannot answer the query → ::VRAM_ERR_UNSUPPORTED (nothing is read unchecked).
/// - `shard_id`, `out`: as vram_seal().
///
/// Errors: ::VRAM_ERR_UNSUPPORTED on a host-backend context; ::VRAM_ERR_NULL_ARGUMENT,
/// ::VRAM_ERR_INVALID_ARGUMENT, ::VRAM_ERR_DEVICE. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_seal_device(
    ctx: *mut vram_ctx,
    shard_id: *const c_char,
    device_ptr: *const c_void,
    len: usize,
    out: *mut *mut vram_shard,
) -> vram_status {
    guard("vram_seal_device", || {
        let ctx = arg_ref(ctx.cast_const(), "ctx")?;
        let id = arg_cstr(shard_id, MAX_SHARD_ID_LEN, "shard_id")?;
        if device_ptr.is_null() {
            return Err(VramError::null("device_ptr"));
        }
        let out = arg_mut(out, "out")?;
        // SAFETY: the export's documented contract: the memory stays allocated until the
        // shard is freed.
        let shard = unsafe {
            ctx.inner
                .seal_device(id, device_ptr as usize, len as u64, None)
        }?;
        *out = Box::into_raw(Box::new(vram_shard {
            inner: Arc::new(shard),
        }));
        Ok(())
    })
}

/// Copies the shard's 32-byte Merkle root (RFC 9162 tree hash) to `out_root`.
///
/// NULL `shard` or `out_root` → ::VRAM_ERR_NULL_ARGUMENT. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_shard_root(shard: *const vram_shard, out_root: *mut u8) -> vram_status {
    guard("vram_shard_root", || {
        let shard = arg_ref(shard, "shard")?;
        let out = arg_mut(out_root.cast::<[u8; 32]>(), "out_root")?;
        *out = shard.inner.root();
        Ok(())
    })
}

/// The shard's length in bytes; 0 when `shard` is NULL. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_shard_len(shard: *const vram_shard) -> usize {
    guard_value("vram_shard_len", 0, || {
        // SAFETY: `shard` is NULL or a live shard (caller's contract).
        unsafe { shard.as_ref() }
            .map_or(0, |s| usize::try_from(s.inner.len()).unwrap_or(usize::MAX))
    })
}

/// The address of the shard's bytes, for the caller's own kernels: device memory on the CUDA
/// backend, host memory on the host backend (see vram_ctx_backend()). NULL when `shard` is NULL.
///
/// Read-only: on the host backend the pages are write-protected while the shard lives (a
/// write faults in the writer); in GPU memory, read-only by contract: any write is tampering
/// and the next verify reports it. Valid until vram_shard_free(). Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_shard_device_ptr(shard: *const vram_shard) -> *const c_void {
    guard_value("vram_shard_device_ptr", std::ptr::null(), || {
        // SAFETY: `shard` is NULL or a live shard (caller's contract).
        unsafe { shard.as_ref() }.map_or(std::ptr::null(), |s| s.inner.data_ptr().cast())
    })
}

/// Exports the shard's seal record (format: docs/seal-format.md) into `buf`.
///
/// - `out_len`: required; receives the record's length on success, and also — the one
///   exception to "outputs only on success" — the size needed when `buf` is NULL or `len` is
///   too small, with ::VRAM_ERR_BUFFER_TOO_SMALL.
///
/// NULL `shard` or `out_len` → ::VRAM_ERR_NULL_ARGUMENT. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_shard_record(
    shard: *const vram_shard,
    buf: *mut u8,
    len: usize,
    out_len: *mut usize,
) -> vram_status {
    guard("vram_shard_record", || {
        let shard = arg_ref(shard, "shard")?;
        let out_len = arg_mut(out_len, "out_len")?;
        let record = shard.inner.encoded_record();
        if buf.is_null() || len < record.len() {
            *out_len = record.len();
            return Err(VramError::new(
                ErrorKind::BufferTooSmall,
                format!("buf: {len} bytes given, {} needed", record.len()),
            ));
        }
        // SAFETY: caller's contract: `buf` is writable for `len >= record.len()` bytes and
        // does not overlap the shard's record.
        unsafe { std::ptr::copy_nonoverlapping(record.as_ptr(), buf, record.len()) };
        *out_len = record.len();
        Ok(())
    })
}

/// Fault drill: flips bit `bit_index` (0 = lowest bit of byte 0) of the stored bytes, as a
/// memory fault or an attacker would, so a server can prove its verification catches it.
/// Flipping the same bit again restores the shard.
///
/// Opt-in: only for shards of a context created with ::VRAM_CTX_ALLOW_FAULT_DRILLS; otherwise
/// ::VRAM_ERR_POLICY and nothing changes. On the host backend the shard's pages are read-only
/// while sealed; the drill lifts that for its one write and restores it.
///
/// NULL `shard` → ::VRAM_ERR_NULL_ARGUMENT; `bit_index >= 8 * len` → ::VRAM_ERR_INVALID_ARGUMENT.
/// Not to be called while another thread verifies or reads the same shard.
#[unsafe(no_mangle)]
pub extern "C" fn vram_debug_flip_bit(shard: *mut vram_shard, bit_index: u64) -> vram_status {
    guard("vram_debug_flip_bit", || {
        let shard = arg_ref(shard.cast_const(), "shard")?;
        shard.inner.debug_flip_bit(bit_index)
    })
}

/// Frees a shard handle; the bytes are released when no model still uses them. NULL is a no-op.
///
/// The caller must ensure no other thread uses this handle during or after the call.
#[unsafe(no_mangle)]
pub extern "C" fn vram_shard_free(shard: *mut vram_shard) {
    guard_value("vram_shard_free", (), || {
        if !shard.is_null() {
            // SAFETY: a non-NULL `shard` came from vram_seal*() and is freed once (contract).
            drop(unsafe { Box::from_raw(shard) });
        }
    })
}
