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

/// Parts smaller than this run on the calling thread: spawning costs more than they do.
const MIN_PARALLEL: usize = 256;

/// `f` of every item, in order, the items split into a few contiguous chunks over up to
/// `threads` threads (all on the calling thread when there are fewer than [`MIN_PARALLEL`]).
/// For many small pieces of work (a chunk per worker, not a lock per item).
pub fn map_owned<T: Send, R: Send>(
    items: Vec<T>,
    threads: usize,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let n = items.len();
    if threads <= 1 || n < MIN_PARALLEL {
        return items.into_iter().map(f).collect();
    }
    let chunk = n.div_ceil(threads * 4);
    let mut it = items.into_iter();
    let chunks: Vec<Mutex<(Vec<T>, Vec<R>)>> = std::iter::from_fn(|| {
        let c: Vec<T> = it.by_ref().take(chunk).collect();
        (!c.is_empty()).then(|| Mutex::new((c, Vec::new())))
    })
    .collect();
    // Every chunk runs (the work cannot fail), on a spawned worker or on this thread.
    let _ = for_each(chunks.iter(), threads, |c| {
        let mut c = c.lock().unwrap_or_else(PoisonError::into_inner);
        let (todo, done) = &mut *c;
        done.extend(std::mem::take(todo).into_iter().map(&f));
        Ok::<(), std::convert::Infallible>(())
    });
    chunks
        .into_iter()
        .flat_map(|c| c.into_inner().unwrap_or_else(PoisonError::into_inner).1)
        .collect()
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
        for (n, threads) in [(0, 4), (10, 4), (1000, 1), (1000, 3), (4099, 16)] {
            let v: Vec<String> = (0..n).map(|i: usize| i.to_string()).collect();
            let out = super::map_owned(v, threads, |s| s.parse::<usize>().map_or(0, |i| 2 * i));
            assert_eq!(
                out,
                (0..n).map(|i| 2 * i).collect::<Vec<_>>(),
                "{n} on {threads}"
            );
        }
    }
}
