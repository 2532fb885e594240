//! Allocations whose size a caller or a file decides. The global allocator aborts the process
//! when an allocation fails; inside someone else's server that is never acceptable, so every
//! such buffer is reserved with `try_reserve` and its size first checked against the memory
//! the machine has (on Linux a reservation far beyond it would succeed on overcommit and the
//! first touch would summon the OOM killer instead).

use crate::error::{Result, VramError};

/// Physical memory of this machine in bytes; `u64::MAX` when it cannot be read. Read once per
/// process (a system call each time cost more than a small bound computation).
pub fn physical_memory() -> u64 {
    static MEMORY: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *MEMORY.get_or_init(read_physical_memory)
}

fn read_physical_memory() -> u64 {
    // SAFETY: sysconf only reads system configuration.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    match (u64::try_from(pages), u64::try_from(page)) {
        (Ok(n), Ok(p)) if n > 0 && p > 0 => n.saturating_mul(p),
        _ => u64::MAX,
    }
}

/// Refuses a host allocation of `bytes` that could never fit this machine's memory.
pub fn check_host_bytes(bytes: u64, what: &str) -> Result<()> {
    let have = physical_memory();
    if bytes > have {
        return Err(VramError::out_of_memory(format!(
            "{what}: {bytes} bytes of host memory needed, more than this machine's {have}"
        )));
    }
    Ok(())
}

/// `n` copies of `value`, or `OutOfMemory` naming `what`; never aborts.
pub fn try_vec<T: Clone>(n: usize, value: T, what: &str) -> Result<Vec<T>> {
    let bytes = (n as u64).saturating_mul(size_of::<T>() as u64);
    check_host_bytes(bytes, what)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        VramError::out_of_memory(format!(
            "{what}: {bytes} bytes of host memory could not be allocated"
        ))
    })?;
    v.resize(n, value);
    Ok(v)
}

/// An empty vector with room for `n` elements, or `OutOfMemory` naming `what`.
pub fn try_with_capacity<T>(n: usize, what: &str) -> Result<Vec<T>> {
    let bytes = (n as u64).saturating_mul(size_of::<T>() as u64);
    check_host_bytes(bytes, what)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        VramError::out_of_memory(format!(
            "{what}: {bytes} bytes of host memory could not be allocated"
        ))
    })?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn impossible_sizes_are_errors_not_aborts() {
        let e = try_vec(usize::MAX / 2, 0u64, "test").unwrap_err();
        assert_eq!(e.kind, ErrorKind::OutOfMemory);
        assert!(e.message.starts_with("test:"), "{}", e.message);
        let e = try_with_capacity::<f64>(1 << 60, "big").unwrap_err();
        assert_eq!(e.kind, ErrorKind::OutOfMemory);
        assert_eq!(try_vec(3, 1u8, "small").unwrap(), vec![1, 1, 1]);
        assert!(physical_memory() > 1 << 20);
    }
}
