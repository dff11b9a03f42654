//! The entry points of the processes sandgen starts: a worker process
//! (which loads a compiled component and serves one worker over its stdin
//! and stdout) and a compiling process (which compiles one component within
//! the load limits). They sit above everything else: a worker process
//! needs the loading layer (to load its component) and the worker layer
//! (to run it).

use crate::cache::Entry;
use crate::compile::{self, COMPILE_ARG};
use crate::error::Error;
use crate::guest::Linked;
use crate::loader::EngineCore;
use crate::program;
use crate::worker::process::{WORKER_ARG, child, confine};

/// Runs this process as a sandgen worker process when it was started as one
/// (its first argument is sandgen's worker marker), and then exits; returns
/// at once otherwise.
///
/// A program that embeds sandgen and uses [`Isolation::Process`](crate::Isolation::Process)
/// without setting [`EngineBuilder::worker_program`](crate::EngineBuilder::worker_program)
/// starts its own executable as the worker, so it must call this first thing
/// in `main`, before anything else:
///
/// ```no_run
/// sandgen::run_worker_if_requested();
/// // ... the program itself
/// ```
pub fn run_worker_if_requested() {
    program::mark_worker_program();
    if let Some(code) = run_worker_from_args(std::env::args_os().skip(1)) {
        std::process::exit(code);
    }
}

/// Runs a sandgen worker (or compiling) process when `args` (the program's
/// arguments after its own, see
/// [`EngineBuilder::worker_command`](crate::EngineBuilder::worker_command))
/// ask for one, and returns the status the process must then exit with;
/// returns `None` at once otherwise. For worker programs that cannot use
/// [`run_worker_if_requested`], such as an interpreter running a script.
///
/// ```no_run
/// let args = std::env::args_os().skip(2); // the interpreter's script, then sandgen's
/// if let Some(code) = sandgen::run_worker_from_args(args) {
///     std::process::exit(code);
/// }
/// ```
pub fn run_worker_from_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Option<i32> {
    let mut args = args.into_iter();
    let role = args.next()?;
    if role != WORKER_ARG && role != COMPILE_ARG {
        return None;
    }
    // Either role: before anything is read, the descriptors inherited from
    // the caller (all but the pipes) are closed.
    confine::close_inherited();
    if role == WORKER_ARG {
        Some(child::serve(&load_compiled))
    } else {
        let rest: Vec<_> = args.collect();
        Some(compile::child_main(&rest, &confine::confine_compiler))
    }
}

/// A worker process's loader: a compiled component from the cache (never
/// compiled here), linked in this process's backend.
fn load_compiled(plugin: &str, compiled: &Entry, fuel: bool) -> Result<Linked, Error> {
    EngineCore::new(None, None, Default::default())?.load_compiled(plugin, compiled, fuel)
}
