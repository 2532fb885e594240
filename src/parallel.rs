//! One way to spread independent parts of a job over scoped threads: workers take parts from a
//! shared queue, so a thread that cannot be spawned only means fewer workers, never a part left
//! undone, and no thread outlives the call (nothing is left behind in the host process).

use std::sync::{Mutex, PoisonError};

/// Runs `work` on every item of `parts`, on the calling thread and up to `threads - 1` more.
/// Returns the first error any part gave (the remaining parts may or may not have run).
pub fn for_each<I, E>(
    parts: I,
    threads: usize,
    work: impl Fn(I::Item) -> Result<(), E> + Sync,
) -> Result<(), E>
where
    I: Iterator + Send,
    E: Send,
{
    let queue = Mutex::new(parts);
    let failed = Mutex::new(None);
    let worker = || {
        loop {
            let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
            let Some(part) = next else { break };
            if let Err(e) = work(part) {
                failed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(e);
                break;
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads.max(1) {
            // A failed spawn leaves the parts to the other workers (see above).
            let _ = std::thread::Builder::new().spawn_scoped(scope, worker);
        }
        worker();
    });
    match failed.into_inner().unwrap_or_else(PoisonError::into_inner) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_part_runs_once_and_errors_come_back() {
        let seen = AtomicUsize::new(0);
        let r: Result<(), ()> = super::for_each(0..1000usize, 4, |i| {
            seen.fetch_add(i, Ordering::Relaxed);
            Ok(())
        });
        assert!(r.is_ok());
        assert_eq!(seen.load(Ordering::Relaxed), 999 * 1000 / 2);
        let r = super::for_each(0..100usize, 3, |i| if i == 42 { Err(i) } else { Ok(()) });
        assert_eq!(r, Err(42));
    }
}
