//! Page-locked host memory of the calling thread, which a GPU propagation's kernels read and
//! write in place: the input-check flag always, and a host call's boxes when they are small.
//! A batch-1 call then needs no copies at all: the input conversion reads the caller's boxes
//! from here, the output conversion writes the bounds and the flag here, and the call's one
//! synchronisation makes them visible (three pageable copies, each a synchronisation of its
//! own, were most of a small call's fixed cost).

use std::cell::RefCell;

use crate::backend::cuda::launch::Dev;
use crate::backend::cuda::runtime::{PinnedHost, Stream};
use crate::error::{ErrorKind, Result, VramError};

/// Boxes up to this many bytes (inputs and outputs together) are staged here; larger ones are
/// copied, where the copy engines' bandwidth matters more than a copy's fixed cost.
const BOX_BYTES_MAX: usize = 256 << 10;

/// Whether boxes of `bytes` (lower and upper bounds together) pass through the staging memory.
pub fn stages(bytes: usize) -> bool {
    bytes <= BOX_BYTES_MAX
}

/// Bytes before the boxes: the flag, padded so that the boxes stay 256-byte aligned.
pub const FLAG_BYTES: usize = 256;

thread_local! {
    static STAGE: RefCell<Option<PinnedHost>> = const { RefCell::new(None) };
}

/// This thread's staging memory, at least `len` bytes of it.
pub struct Stage<'a> {
    mem: &'a PinnedHost,
}

impl Stage<'_> {
    /// The flag the output conversion writes: the first bad input element, all ones if none.
    pub fn flag(&self) -> Result<Dev<'_, u64>> {
        self.mem.view(0, 1)
    }

    /// `n` f32 values starting `at` f32 values after the flag.
    pub fn floats(&self, at: usize, n: usize) -> Result<Dev<'_, f32>> {
        let start = at
            .checked_mul(4)
            .and_then(|b| b.checked_add(FLAG_BYTES))
            .ok_or_else(|| VramError::invalid("batch", "boxes too large to stage"))?;
        self.mem
            .view(start, n)
            .map_err(|_| VramError::invalid("batch", "boxes too large to stage"))
    }

    /// Reads the flag; the stream must have been synchronised after the kernel that wrote it.
    pub fn read_flag(&self) -> u64 {
        // SAFETY: the first 8 bytes of a live, 256-byte aligned allocation; volatile because
        // the GPU wrote them behind the compiler's back.
        unsafe { std::ptr::read_volatile(self.mem.ptr().cast::<u64>()) }
    }
}

/// Synchronises a stream when dropped while armed: on an error, or while unwinding.
struct SyncOnDrop<'a> {
    stream: &'a Stream,
    armed: bool,
}

impl Drop for SyncOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.stream.sync(); // the error or panic that armed it says what went wrong
        }
    }
}

/// Runs `f` with this thread's staging memory of at least `len` bytes. If `f` fails (or
/// panics) after queuing work that uses the memory, `stream` is synchronised before the
/// memory can serve another call, so no kernel still reads or writes it then.
pub fn with_stage<R>(
    len: usize,
    stream: &Stream,
    f: impl FnOnce(&Stage<'_>) -> Result<R>,
) -> Result<R> {
    STAGE.with(|cell| {
        let mut slot = cell
            .try_borrow_mut()
            .map_err(|_| VramError::new(ErrorKind::Device, "staging memory already in use"))?;
        if slot.as_ref().is_none_or(|m| m.size() < len) {
            *slot = None; // the old block goes back before a bigger one is taken
            *slot = Some(PinnedHost::new(
                len.max(FLAG_BYTES).next_multiple_of(64 << 10),
            )?);
        }
        let Some(mem) = slot.as_ref() else {
            return Err(VramError::new(ErrorKind::Device, "staging memory missing"));
        };
        let mut sync = SyncOnDrop {
            stream,
            armed: true,
        };
        let out = f(&Stage { mem });
        sync.armed = out.is_err();
        out
    })
}
