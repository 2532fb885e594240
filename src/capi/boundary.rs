//! The panic boundary, the thread-local last error, and checked conversions of C arguments.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::misc::VRAM_MAX_ERROR_MESSAGE;
use super::types::vram_status;
use crate::error::{ErrorKind, Result, VramError};

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// `message` cut to at most [`VRAM_MAX_ERROR_MESSAGE`] bytes on a character boundary, marked when cut.
fn capped(mut message: String) -> String {
    const MARK: &str = " [...]";
    if message.len() > VRAM_MAX_ERROR_MESSAGE {
        let mut end = VRAM_MAX_ERROR_MESSAGE - MARK.len();
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(MARK);
    }
    message
}

pub(crate) fn set_last_error(message: String) {
    let message = capped(message);
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
}

pub(crate) fn with_last_error<R>(f: impl FnOnce(&str) -> R) -> R {
    LAST_ERROR.with(|e| f(&e.borrow()))
}

pub(crate) fn status_of(kind: ErrorKind) -> vram_status {
    match kind {
        ErrorKind::NullArgument => vram_status::VRAM_ERR_NULL_ARGUMENT,
        ErrorKind::InvalidArgument => vram_status::VRAM_ERR_INVALID_ARGUMENT,
        ErrorKind::OutOfMemory => vram_status::VRAM_ERR_OUT_OF_MEMORY,
        ErrorKind::NoDevice => vram_status::VRAM_ERR_NO_DEVICE,
        ErrorKind::Device => vram_status::VRAM_ERR_DEVICE,
        ErrorKind::Integrity => vram_status::VRAM_ERR_INTEGRITY,
        ErrorKind::BadSeal => vram_status::VRAM_ERR_BAD_SEAL,
        ErrorKind::Policy => vram_status::VRAM_ERR_POLICY,
        ErrorKind::Unsupported => vram_status::VRAM_ERR_UNSUPPORTED,
        ErrorKind::BufferTooSmall => vram_status::VRAM_ERR_BUFFER_TOO_SMALL,
        ErrorKind::Cancelled => vram_status::VRAM_ERR_CANCELLED,
    }
}

fn panic_message(p: &(dyn Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("unknown panic payload")
}

/// Runs the body of a status-returning export: errors become their status with the message
/// (prefixed by the function's name) kept as the thread's last error; a panic becomes
/// `VRAM_ERR_PANIC` and never unwinds into C.
pub(crate) fn guard(function: &str, body: impl FnOnce() -> Result<()>) -> vram_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => vram_status::VRAM_OK,
        Ok(Err(e)) => {
            set_last_error(format!("{function}: {}", e.message));
            status_of(e.kind)
        }
        Err(p) => {
            set_last_error(format!(
                "{function}: internal error (Rust panic: {}); no output was written",
                panic_message(p.as_ref())
            ));
            vram_status::VRAM_ERR_PANIC
        }
    }
}

/// Like [`guard`] for exports that return a value rather than a status: a panic gives
/// `fallback`.
pub(crate) fn guard_value<T>(function: &str, fallback: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(p) => {
            set_last_error(format!(
                "{function}: internal error (Rust panic: {})",
                panic_message(p.as_ref())
            ));
            fallback
        }
    }
}

/// A shared reference from a C pointer.
///
/// The caller of the export promises `p` is NULL or points to a live `T`.
pub(crate) fn arg_ref<'a, T>(p: *const T, name: &str) -> Result<&'a T> {
    // SAFETY: the export's documented contract: `p` is NULL or valid for reads for the call.
    unsafe { p.as_ref() }.ok_or_else(|| VramError::null(name))
}

/// A mutable reference from a C pointer (same contract as [`arg_ref`], exclusive access).
pub(crate) fn arg_mut<'a, T>(p: *mut T, name: &str) -> Result<&'a mut T> {
    // SAFETY: the export's documented contract: `p` is NULL or valid and unaliased for the call.
    unsafe { p.as_mut() }.ok_or_else(|| VramError::null(name))
}

/// A byte slice from a C `(pointer, length)` pair. `len == 0` is refused unless `allow_empty`.
pub(crate) fn arg_bytes<'a>(
    p: *const u8,
    len: usize,
    name: &str,
    allow_empty: bool,
) -> Result<&'a [u8]> {
    if len == 0 {
        if allow_empty {
            return Ok(&[]);
        }
        return Err(VramError::invalid(name, "length must be greater than 0"));
    }
    if p.is_null() {
        return Err(VramError::null(name));
    }
    if len > isize::MAX as usize {
        return Err(VramError::invalid(
            name,
            "length is larger than the address space",
        ));
    }
    // SAFETY: the export's documented contract: `p` is valid for reads of `len` bytes for the
    // duration of the call, and it is non-NULL with `len <= isize::MAX` (checked above).
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// The bytes of a NUL-terminated C string, without the NUL; reads at most `max + 1` bytes so
/// an over-long (or unterminated) string is refused rather than scanned.
pub(crate) fn arg_cstr<'a>(p: *const c_char, max: usize, name: &str) -> Result<&'a [u8]> {
    if p.is_null() {
        return Err(VramError::null(name));
    }
    // SAFETY: the contract says `p` is a NUL-terminated string; strnlen reads no further than
    // its terminator or `max + 1` bytes.
    let n = unsafe { libc::strnlen(p, max + 1) };
    if n > max {
        return Err(VramError::invalid(
            name,
            format!("is longer than the limit of {max} bytes"),
        ));
    }
    // SAFETY: strnlen found `n` readable bytes before the terminator.
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), n) })
}

/// A path argument: a NUL-terminated UTF-8 string of at most 4096 bytes.
pub(crate) fn arg_path<'a>(p: *const c_char, name: &str) -> Result<&'a str> {
    std::str::from_utf8(arg_cstr(p, 4096, name)?)
        .map_err(|_| VramError::invalid(name, "is not UTF-8"))
}

/// An optional options struct: NULL is `None` (every default), else read as
/// [`read_options`] does.
pub(crate) fn read_optional<T: OptionsStruct>(p: *const T, name: &str) -> Result<Option<T>> {
    if p.is_null() {
        Ok(None)
    } else {
        read_options(p, name).map(Some)
    }
}

/// An options struct of the C API: starts with `uint32_t struct_size`, every field is an
/// integer, a float or a pointer.
///
/// # Safety
/// The all-zero bit pattern must be a valid value of the type (zero, 0.0 or NULL for every
/// field), and the type must be `#[repr(C)]` with `struct_size: u32` first.
pub(crate) unsafe trait OptionsStruct: Copy {
    /// The sizes of the struct's earlier versions, which are still accepted: their missing
    /// trailing fields read as zero.
    const EARLIER_SIZES: &'static [usize] = &[];
}

/// Reads a versioned options struct: `struct_size` must be the current size or an earlier
/// version's; the fields an earlier version lacks read as zero.
pub(crate) fn read_options<T: OptionsStruct>(p: *const T, name: &str) -> Result<T> {
    if p.is_null() {
        return Err(VramError::null(name));
    }
    // SAFETY: `p` is non-NULL and (caller's contract) points to an options struct, which
    // starts with its u32 `struct_size` (OptionsStruct's contract).
    let size = unsafe { p.cast::<u32>().read_unaligned() } as usize;
    if size != size_of::<T>() && !T::EARLIER_SIZES.contains(&size) {
        return Err(VramError::invalid(
            name,
            format!(
                "struct_size is {size}, expected {} (sizeof the struct in vram.h)",
                size_of::<T>()
            ),
        ));
    }
    let mut out = std::mem::MaybeUninit::<T>::zeroed();
    // SAFETY: the caller's struct holds `size <= size_of::<T>()` readable bytes (its own
    // struct_size says so); they are copied over a zeroed T, and all-zero is a valid T
    // (OptionsStruct's contract), as is any mix of the caller's field values and zeros.
    unsafe {
        std::ptr::copy_nonoverlapping(p.cast::<u8>(), out.as_mut_ptr().cast::<u8>(), size);
        Ok(out.assume_init())
    }
}

/// Checks an options struct's `struct_size` against the size this library knows.
pub(crate) fn check_struct_size(got: u32, expected: usize, name: &str) -> Result<()> {
    if got as usize != expected {
        return Err(VramError::invalid(
            name,
            format!("struct_size is {got}, expected {expected} (sizeof the struct in vram.h)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_becomes_status_and_message() {
        let s = guard("vram_test", || panic!("boom"));
        assert_eq!(s, vram_status::VRAM_ERR_PANIC);
        with_last_error(|m| {
            assert!(m.contains("vram_test"));
            assert!(m.contains("boom"));
        });
        assert_eq!(guard_value("vram_test", 7u32, || panic!("x")), 7);
    }

    #[test]
    fn long_messages_are_capped_on_a_char_boundary() {
        let s = guard("vram_x", || {
            Err(VramError::invalid("path", "é".repeat(5000)))
        });
        assert_eq!(s, vram_status::VRAM_ERR_INVALID_ARGUMENT);
        with_last_error(|m| {
            assert!(m.len() <= VRAM_MAX_ERROR_MESSAGE, "{}", m.len());
            assert!(m.ends_with(" [...]"));
            assert!(m.starts_with("vram_x: path: é"));
        });
    }

    #[test]
    fn errors_keep_their_message() {
        let s = guard("vram_x", || Err(VramError::null("out")));
        assert_eq!(s, vram_status::VRAM_ERR_NULL_ARGUMENT);
        with_last_error(|m| assert_eq!(m, "vram_x: out: must not be NULL"));
    }
}
