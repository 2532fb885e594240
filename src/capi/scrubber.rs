//! The background scrubber (vram_scrubber_*): continuous checking of resident shards within a
//! budget, with a damage callback.

use std::ffi::{CString, c_char, c_void};
use std::sync::Arc;
use std::time::Duration;

use super::boundary::{
    arg_mut, arg_ref, check_struct_size, guard, guard_value, read_optional, status_of,
};
use super::types::{vram_ctx, vram_shard, vram_status};
use crate::scrub::{ScrubOptions, Scrubber};

/// Called from the scrubber's own thread when a shard's damage is confirmed by its seal
/// (SHA-256), once per change of its set of damaged regions (a shard found intact again, e.g.
/// after vram_shard_restore(), is re-armed).
///
/// - `shard`: a handle to the damaged shard, valid only during the call (it refers to the same
///   shard as the handle given to the scrubber, not the same pointer: pass it to
///   vram_shard_restore() or vram_verify_regions()). Do not free it.
/// - `shard_id`: the shard's identity from its seal, NUL-terminated, valid only during the call.
/// - `region_offsets`: the byte offset of every damaged region (1 MiB each), ascending;
///   `n_regions` of them, valid only during the call.
///
/// The callback may call any libvram function, including vram_scrubber_pause(),
/// vram_scrubber_stats() and vram_scrubber_remove() on its own scrubber, and
/// vram_scrubber_free() (the scrubber then stops once the callback returns). While it runs, the
/// scrubber does not scrub.
pub type vram_damage_callback = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        shard: *const vram_shard,
        shard_id: *const c_char,
        region_offsets: *const u64,
        n_regions: usize,
    ),
>;

/// ::vram_scrubber_options flag: create the scrubber paused (vram_scrubber_resume() starts it).
pub const VRAM_SCRUB_START_PAUSED: u32 = 1;

/// Options for vram_scrubber_new(). Zero-initialise, then set `struct_size`; all zeros is a
/// valid choice (2 SMs or 1 thread, no rate cap, passes back to back, no callback).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vram_scrubber_options {
    /// Must be `sizeof(vram_scrubber_options)`.
    pub struct_size: u32,
    /// CUDA backend: the scrub kernel's persistent grid has this many blocks, so it occupies at
    /// most this many SMs and the serving kernels keep the rest; 0 = 2; more than the GPU has =
    /// all of them.
    pub max_sms: u32,
    /// Host backend: at most this many threads hash (0 = 1).
    pub max_threads: u32,
    /// ::VRAM_SCRUB_START_PAUSED, or 0.
    pub flags: u32,
    /// At most this many bytes hashed per second (the scrubber's thread sleeps between steps
    /// of 256 MiB to keep the rate); 0 = no cap.
    pub max_bytes_per_second: u64,
    /// Target pass period in nanoseconds: a pass starts at most this often (the scrubber waits
    /// after a faster pass); 0 = passes back to back.
    pub pass_period_ns: u64,
    /// NULL (damage is then only counted and logged as `vram.scrub.damage`), or the damage
    /// callback (see ::vram_damage_callback).
    pub on_damage: vram_damage_callback,
    /// Passed back to `on_damage`; must be usable from the scrubber's thread.
    pub userdata: *mut c_void,
}

// SAFETY: repr(C), struct_size first, all-zero valid (integers, NULL pointer, no callback).
unsafe impl super::boundary::OptionsStruct for vram_scrubber_options {}

/// What a scrubber has done (vram_scrubber_stats()). Zero-initialise, then set `struct_size`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vram_scrub_stats {
    /// Must be `sizeof(vram_scrub_stats)`.
    pub struct_size: u32,
    /// SMs (CUDA backend) or threads (host backend) the scrubber may use.
    pub budget: u32,
    /// Full passes over every shard completed.
    pub passes: u64,
    /// Wall time of the last full pass, in nanoseconds (pacing and pauses included).
    pub last_pass_ns: u64,
    /// Bytes of the last full pass.
    pub bytes_per_pass: u64,
    /// Bytes hashed per second over the last full pass.
    pub bytes_per_second: u64,
    /// Shards scrubbed now.
    pub shards: u64,
    /// Damage callbacks made so far.
    pub damage_reports: u64,
    /// Damaged regions named by those callbacks.
    pub damaged_regions: u64,
    /// Fast-check mismatches that the seal found intact (the shard's fast digests were taken
    /// again; expected only when bytes changed and changed back while the shard was added).
    pub stale_digests: u64,
    /// Steps that failed (e.g. a GPU error); the scrubber carries on.
    pub errors: u64,
    /// The last such error's ::vram_status (::VRAM_OK when none).
    pub last_error: vram_status,
    /// 1 while paused.
    pub paused: u32,
}

/// A running scrubber (vram_scrubber_new()); freed with vram_scrubber_free(). Safe to use from
/// many threads at once.
pub struct vram_scrubber {
    inner: Scrubber,
}

/// The caller's callback and pointer, carried to the scrubber's thread.
struct DamageCallback {
    f: unsafe extern "C" fn(*mut c_void, *const vram_shard, *const c_char, *const u64, usize),
    userdata: *mut c_void,
}

// SAFETY: the options' contract: the callback and its userdata may be used from the
// scrubber's thread (it is the only thread that calls them).
unsafe impl Send for DamageCallback {}
// SAFETY: as for Send; only the scrubber's thread calls the callback.
unsafe impl Sync for DamageCallback {}

impl DamageCallback {
    fn call(&self, shard: &crate::shard::SharedShard, offsets: &[u64]) {
        let handle = vram_shard {
            inner: Arc::clone(shard),
        };
        // Shard ids are checked at seal time (no NUL inside); an empty string is the fallback.
        let id = CString::new(shard.id()).unwrap_or_default();
        // SAFETY: the caller's callback with its own userdata; the handle, the id and the
        // offsets outlive the call (documented as valid only during it).
        unsafe {
            (self.f)(
                self.userdata,
                &handle,
                id.as_ptr(),
                offsets.as_ptr(),
                offsets.len(),
            )
        };
    }
}

/// Starts a scrubber over `n` shards of `ctx`: a thread of its own (and, on the CUDA backend,
/// a stream of its own) sweeps them continuously within the options' budget, checking every
/// 1 MiB region with a keyed fast hash (docs/threat-model.md: a random 61-bit key per scrubber,
/// never stored) and confirming every mismatch with a SHA-256 verify against the seal before
/// the damage callback hears of it.
///
/// Before it starts, each shard's fast digests are taken and the shard is verified against
/// its seal: a damaged shard → ::VRAM_ERR_INTEGRITY, a seal that does not authenticate →
/// ::VRAM_ERR_BAD_SEAL (restore first; nothing starts).
///
/// - `ctx`: borrowed; the scrubber keeps what it needs alive (the context may be freed first).
/// - `shards`: `n` shard handles of `ctx`'s backend and device (NULL only when `n` is 0; a
///   scrubber may start empty and get shards with vram_scrubber_add()); each shard is kept alive
///   by the scrubber until removed or the scrubber is freed. A shard listed twice →
///   ::VRAM_ERR_INVALID_ARGUMENT; one of another backend or device → ::VRAM_ERR_POLICY.
/// - `opts`: NULL for the defaults, or options with `struct_size` set.
/// - `out`: receives the scrubber, owned by the caller; written only on success.
///
/// The scrubber never waits on or synchronises the caller's streams or the device: it waits
/// only for its own stream. Errors: ::VRAM_ERR_NULL_ARGUMENT, ::VRAM_ERR_INVALID_ARGUMENT,
/// ::VRAM_ERR_POLICY, ::VRAM_ERR_INTEGRITY, ::VRAM_ERR_BAD_SEAL, ::VRAM_ERR_OUT_OF_MEMORY,
/// ::VRAM_ERR_DEVICE. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_scrubber_new(
    ctx: *const vram_ctx,
    shards: *const *const vram_shard,
    n: usize,
    opts: *const vram_scrubber_options,
    out: *mut *mut vram_scrubber,
) -> vram_status {
    guard("vram_scrubber_new", || {
        let ctx = arg_ref(ctx, "ctx")?;
        let out = arg_mut(out, "out")?;
        let list = super::shard::shard_list(shards, n)?;
        let o = read_optional(opts, "opts")?;
        let options = o.map_or_else(ScrubOptions::default, |o| ScrubOptions {
            max_sms: o.max_sms,
            max_threads: o.max_threads,
            bytes_per_second: o.max_bytes_per_second,
            pass_period: Duration::from_nanos(o.pass_period_ns),
            start_paused: o.flags & VRAM_SCRUB_START_PAUSED != 0,
        });
        if let Some(o) = o {
            if o.flags & !VRAM_SCRUB_START_PAUSED != 0 {
                return Err(crate::error::VramError::invalid(
                    "opts->flags",
                    format!("{:#x} has unknown bits", o.flags),
                ));
            }
        }
        let callback = o.and_then(|o| {
            o.on_damage.map(|f| DamageCallback {
                f,
                userdata: o.userdata,
            })
        });
        let sink: crate::scrub::DamageSink = Box::new(move |shard, offsets| {
            if let Some(cb) = &callback {
                cb.call(shard, offsets);
            }
        });
        let inner = Scrubber::new(Arc::clone(&ctx.inner), list, options, sink)?;
        *out = Box::into_raw(Box::new(vram_scrubber { inner }));
        Ok(())
    })
}

/// Adds a shard to a running scrubber: its fast digests are taken and it is verified against
/// its seal first (as in vram_scrubber_new()); it is swept from the next pass. The scrubber
/// keeps it alive until removed. Already scrubbed → ::VRAM_ERR_INVALID_ARGUMENT; NULL →
/// ::VRAM_ERR_NULL_ARGUMENT; other errors as vram_scrubber_new(). Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_scrubber_add(
    scrubber: *const vram_scrubber,
    shard: *const vram_shard,
) -> vram_status {
    guard("vram_scrubber_add", || {
        let s = arg_ref(scrubber, "scrubber")?;
        let shard = arg_ref(shard, "shard")?;
        s.inner.add(Arc::clone(&shard.inner))
    })
}

/// Stops scrubbing a shard (any handle to it) and releases the scrubber's hold on it. No
/// damage callback for it starts after this returns (one already running may finish). Not
/// scrubbed → ::VRAM_ERR_INVALID_ARGUMENT; NULL → ::VRAM_ERR_NULL_ARGUMENT. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_scrubber_remove(
    scrubber: *const vram_scrubber,
    shard: *const vram_shard,
) -> vram_status {
    guard("vram_scrubber_remove", || {
        let s = arg_ref(scrubber, "scrubber")?;
        let shard = arg_ref(shard, "shard")?;
        s.inner.remove(&shard.inner)
    })
}

/// Pauses a scrubber (e.g. for a latency-critical phase): returns once none of its work is on
/// the device (at most one step of 256 MiB), and none starts until vram_scrubber_resume().
/// Called from the damage callback it returns at once. NULL → ::VRAM_ERR_NULL_ARGUMENT.
/// Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_scrubber_pause(scrubber: *const vram_scrubber) -> vram_status {
    guard("vram_scrubber_pause", || {
        arg_ref(scrubber, "scrubber")?.inner.pause();
        Ok(())
    })
}

/// Resumes a paused scrubber (no-op when running). NULL → ::VRAM_ERR_NULL_ARGUMENT.
/// Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_scrubber_resume(scrubber: *const vram_scrubber) -> vram_status {
    guard("vram_scrubber_resume", || {
        arg_ref(scrubber, "scrubber")?.inner.resume();
        Ok(())
    })
}

/// Writes what the scrubber has done so far into `stats` (caller-owned, `struct_size` set;
/// written only on success). NULL → ::VRAM_ERR_NULL_ARGUMENT; a wrong `struct_size` →
/// ::VRAM_ERR_INVALID_ARGUMENT. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_scrubber_stats(
    scrubber: *const vram_scrubber,
    stats: *mut vram_scrub_stats,
) -> vram_status {
    guard("vram_scrubber_stats", || {
        let s = arg_ref(scrubber, "scrubber")?;
        let out = arg_mut(stats, "stats")?;
        check_struct_size(out.struct_size, size_of::<vram_scrub_stats>(), "stats")?;
        let st = s.inner.stats();
        *out = vram_scrub_stats {
            struct_size: out.struct_size,
            budget: st.budget,
            passes: st.passes,
            last_pass_ns: u64::try_from(st.last_pass.as_nanos()).unwrap_or(u64::MAX),
            bytes_per_pass: st.bytes_per_pass,
            bytes_per_second: st.bytes_per_second,
            shards: st.shards,
            damage_reports: st.damage_reports,
            damaged_regions: st.damaged_regions,
            stale_digests: st.stale_digests,
            errors: st.errors,
            last_error: st.last_error.map_or(vram_status::VRAM_OK, status_of),
            paused: u32::from(st.paused),
        };
        Ok(())
    })
}

/// Stops a scrubber and frees it: waits for its current step (at most 256 MiB of hashing) and
/// joins its thread, then releases its shards. Called from its own damage callback, it stops
/// the scrubber without waiting (the thread ends when the callback returns). NULL is a no-op.
/// The caller must ensure no other thread uses `scrubber` during or after this call.
#[unsafe(no_mangle)]
pub extern "C" fn vram_scrubber_free(scrubber: *mut vram_scrubber) {
    guard_value("vram_scrubber_free", (), || {
        if !scrubber.is_null() {
            // SAFETY: a non-NULL scrubber came from vram_scrubber_new (Box::into_raw) and is
            // freed once (the caller's contract).
            drop(unsafe { Box::from_raw(scrubber) });
        }
    })
}
