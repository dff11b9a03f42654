//! Worker threads are kept a while after their worker ended, for the next
//! one: starting an iterable then costs a hand-off to a waiting thread, not
//! a thread start (a large share of a small plugin's whole start;
//! BENCHMARKS.md "Start-up" has the figures).

use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender};

/// What a thread runs: work, which may hand back something to drop once the
/// thread waits for work again.
pub(crate) type Work = Box<dyn FnOnce() -> Box<dyn Send> + Send>;

/// Work, and the name of the thread that runs it (for messages and tools).
type Job = (String, Work);

/// How many threads wait for work at most, and for how long each.
const MAX_IDLE: usize = 8;
const IDLE_FOR: Duration = Duration::from_secs(10);

/// The threads waiting for work, newest last, and the fork generation they
/// belong to (a forked child has none of them: `fork.rs`).
static IDLE: Mutex<(u64, Vec<Sender<Option<Job>>>)> = Mutex::new((0, Vec::new()));

/// The threads of this process waiting for work.
fn idle() -> impl std::ops::DerefMut<Target = Vec<Sender<Option<Job>>>> {
    struct Idle(MutexGuard<'static, (u64, Vec<Sender<Option<Job>>>)>);
    impl std::ops::Deref for Idle {
        type Target = Vec<Sender<Option<Job>>>;
        fn deref(&self) -> &Self::Target {
            &self.0.1
        }
    }
    impl std::ops::DerefMut for Idle {
        fn deref_mut(&mut self) -> &mut Self::Target {
            &mut self.0.1
        }
    }
    let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
    let generation = crate::fork::generation();
    if idle.0 != generation {
        // Forked: those threads were not copied. Their channels are left
        // as they are (nothing here may wait on them).
        std::mem::forget(std::mem::take(&mut idle.1));
        idle.0 = generation;
    }
    Idle(idle)
}

/// Ends the threads waiting for work: work from now on runs on threads
/// started from now on.
pub(crate) fn forget_idle() {
    for thread in idle().drain(..) {
        let _ = thread.send(None);
    }
}

/// Runs `work` on a waiting thread, or on a new one named `name`. What the
/// work hands back is dropped once the thread waits for work again (or
/// ends), so that whoever waits for that drop can start more work at once
/// on the same thread.
pub(crate) fn run(name: String, work: Work) -> std::io::Result<()> {
    let mut job = Some((name, work));
    // A thread taken off the list always receives: it removes itself from
    // the list before it stops waiting.
    if let Some(thread) = idle().pop()
        && let Err(e) = thread.send(job.take())
    {
        job = e.into_inner();
    }
    let Some((name, work)) = job else {
        return Ok(());
    };
    std::thread::Builder::new()
        .name(name)
        .spawn(move || serve(work))
        .map(drop)
}

/// A pool thread: runs its work, then waits for more a while.
fn serve(mut work: Work) {
    loop {
        // A worker reports its own panics; this only keeps the thread.
        let handed_back = std::panic::catch_unwind(AssertUnwindSafe(work));
        let (offer, jobs) = crossbeam_channel::bounded::<Option<Job>>(1);
        {
            let mut idle = idle();
            if idle.len() >= MAX_IDLE {
                return;
            }
            idle.push(offer.clone());
        }
        drop(handed_back);
        let (name, next) = match jobs.recv_timeout(IDLE_FOR) {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(RecvTimeoutError::Timeout) => {
                let mut idle = idle();
                if let Some(at) = idle.iter().position(|s| s.same_channel(&offer)) {
                    // Still on the list: nobody will send; stop.
                    idle.swap_remove(at);
                    return;
                }
                drop(idle);
                // Taken off the list just now: its job (or its end) is on
                // the way.
                match jobs.recv() {
                    Ok(Some(job)) => job,
                    Ok(None) | Err(_) => return,
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        set_name(&name);
        work = next;
    }
}

/// Names the current thread (Linux: at most 15 bytes are kept).
fn set_name(name: &str) {
    #[cfg(target_os = "linux")]
    {
        let mut bytes: Vec<u8> = name.bytes().filter(|&b| b != 0).take(15).collect();
        // Cut at a character boundary, as the name is shown as text.
        while std::str::from_utf8(&bytes).is_err() {
            bytes.pop();
        }
        if let Ok(name) = std::ffi::CString::new(bytes) {
            // SAFETY: names the calling thread with a NUL-terminated string
            // of at most 16 bytes, as the call requires.
            unsafe {
                libc::pthread_setname_np(libc::pthread_self(), name.as_ptr());
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = name;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each job runs, and what it hands back is dropped, once its thread
    /// waits again: jobs one after another reuse the same thread.
    #[test]
    fn jobs_run_once_on_reused_threads() {
        let (done, finished) = crossbeam_channel::unbounded();
        let threads = std::sync::Arc::new(Mutex::new(std::collections::HashSet::new()));
        for i in 0..200u32 {
            let (done, threads) = (done.clone(), threads.clone());
            run(
                format!("sandgen-test-{i}"),
                Box::new(move || {
                    threads.lock().unwrap().insert(std::thread::current().id());
                    Box::new(OnDrop(done, i))
                }),
            )
            .unwrap();
            // One at a time, as iterables opened one after another.
            assert_eq!(finished.recv_timeout(Duration::from_secs(10)), Ok(i));
        }
        // One thread here; a few more if other tests' work shares the pool.
        let used = threads.lock().unwrap().len();
        assert!(
            used <= MAX_IDLE,
            "{used} threads for 200 jobs one after another"
        );
    }

    /// Sends its number when dropped.
    struct OnDrop(crossbeam_channel::Sender<u32>, u32);

    impl Drop for OnDrop {
        fn drop(&mut self) {
            let _ = self.0.send(self.1);
        }
    }
}
