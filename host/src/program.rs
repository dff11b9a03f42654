//! The program that runs worker and compiling processes, and whether this
//! program is one: set by the entry points (`entry.rs`), read by whoever
//! starts such a process.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// The program that runs worker (and compiling) processes, with the
/// arguments it needs before sandgen's marker.
#[derive(Clone, Debug)]
pub(crate) struct WorkerProgram {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<std::ffi::OsString>,
}

impl WorkerProgram {
    pub(crate) fn plain(program: PathBuf) -> WorkerProgram {
        WorkerProgram {
            program,
            args: Vec::new(),
        }
    }

    /// A command that runs this program with its own arguments.
    pub(crate) fn command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(&self.program);
        command.args(&self.args);
        command
    }
}

/// Set by [`run_worker_if_requested`](crate::run_worker_if_requested):
/// this program can be started as a worker (or compiling) process.
static IS_WORKER_PROGRAM: AtomicBool = AtomicBool::new(false);

/// Records that this program can be started as a worker or compiling
/// process (it handles sandgen's markers first thing in `main`).
pub(crate) fn mark_worker_program() {
    IS_WORKER_PROGRAM.store(true, Ordering::Relaxed);
}

/// Whether this program can be started as a worker or compiling process.
pub(crate) fn is_worker_program() -> bool {
    IS_WORKER_PROGRAM.load(Ordering::Relaxed)
}
