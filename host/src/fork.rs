//! Which process this is, as far as `fork` goes: a number that changes in
//! the child of every `fork`. The threads of a process are not copied by
//! `fork` (only the one that called it), so state that stands for a thread
//! (the epoch clock's, the pool of waiting worker threads) must be made
//! again in a forked child, as a PyTorch `DataLoader` forks its workers
//! after the main process may have run plugins itself.

use std::sync::atomic::{AtomicU64, Ordering};

static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The current generation: 0 in the process that loaded sandgen, and one
/// more in each forked child (and grandchild).
pub(crate) fn generation() -> u64 {
    watch();
    GENERATION.load(Ordering::SeqCst)
}

/// Registers the handler that counts forks, once.
fn watch() {
    #[cfg(unix)]
    {
        static WATCHING: std::sync::Once = std::sync::Once::new();
        extern "C" fn forked() {
            // Only an atomic add: async-signal-safe, as a fork handler must be.
            GENERATION.fetch_add(1, Ordering::SeqCst);
        }
        WATCHING.call_once(|| {
            // SAFETY: registers a child handler that only adds to an atomic.
            unsafe {
                libc::pthread_atfork(None, None, Some(forked));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    /// A forked child sees another generation; the parent keeps its own.
    #[cfg(unix)]
    #[test]
    fn a_forked_child_is_another_generation() {
        let before = super::generation();
        // SAFETY: the child only reads an atomic and exits at once, without
        // running destructors or touching locks.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = if super::generation() == before + 1 {
                0
            } else {
                1
            };
            // SAFETY: ends the forked child at once.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert_eq!(super::generation(), before);
    }
}
