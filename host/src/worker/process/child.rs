//! The worker program's side of process isolation: read the preamble and
//! the handshake, load the compiled component from the cache (a worker
//! process never compiles), run the thread flavour, and pass its statuses
//! and the guest's output back over stdout.
//!
//! The process exits as soon as its stdin closes: when the caller drops the
//! iterable, and when the caller dies, even by SIGKILL (the kernel closes
//! its pipes). No worker outlives its caller.

use std::io::{BufReader, BufWriter, Write};
use std::sync::Arc;

use crate::guest::output::{OutputHandler, OutputLine};
use crate::protocol::{Command, Status};
use crate::runtime::Shared;
use crate::worker::process::wire::{self, Hello, Preamble, Report, WORKER_ARG};
use crate::worker::task::queues;
use crate::worker::thread::ThreadWorker;

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
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == WORKER_ARG)
    {
        std::process::exit(worker_main());
    }
}

/// The worker process: the exit code.
fn worker_main() -> i32 {
    let mut out = BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    // This side's preamble goes first, so that a caller of another version
    // learns it at once.
    if wire::write_preamble(&mut out)
        .and_then(|()| out.flush())
        .is_err()
    {
        return 0;
    }
    let mut input = BufReader::new(std::io::stdin());
    match wire::read_preamble(&mut input) {
        Ok(Preamble::Matches) => {}
        Ok(Preamble::Ended) => return 0,
        Ok(other) => {
            eprintln!(
                "sandgen worker: the caller speaks another worker protocol ({other:?}; this program speaks version {}): use the same sandgen version for both",
                wire::PROTOCOL
            );
            return 3;
        }
        Err(e) => {
            eprintln!("sandgen worker: cannot read the caller's preamble: {e}");
            return 2;
        }
    }
    let hello: Hello = match wire::read(&mut input) {
        Ok(Some(hello)) => hello,
        Ok(None) => return 0,
        Err(e) => {
            eprintln!("sandgen worker: cannot read its task: {e}");
            return 2;
        }
    };
    let (lines_tx, lines) = crossbeam_channel::unbounded::<Report>();
    let handler: OutputHandler = Arc::new(move |line: &OutputLine<'_>| {
        let _ = lines_tx.send(Report::output(line.stream, line.text));
    });
    let fuel = hello.task.limits.fuel.is_some();
    let (queues, worker_queues) = queues();
    let worker = Shared::new(None, None)
        .and_then(|shared| shared.load_compiled(&hello.plugin, &hello.compiled, fuel))
        .and_then(|linked| ThreadWorker::spawn(linked, hello.task, handler, worker_queues));
    let _worker = match worker {
        Ok(worker) => worker,
        Err(error) => {
            let failed = Report::Status(Status::InitializationFailed(error));
            let _ = wire::write_report(&mut out, failed).and_then(|()| out.flush());
            return 0;
        }
    };
    // Commands: stdin → worker. The end of stdin (the caller dropped the
    // iterable, or died) ends this process at once.
    let commands = queues.commands.clone();
    let reader = std::thread::Builder::new()
        .name("sandgen-commands".into())
        .spawn(move || {
            while let Ok(Some(command)) = wire::read::<Command>(&mut input) {
                if commands.send(command).is_err() {
                    break;
                }
            }
            std::process::exit(0);
        });
    if reader.is_err() {
        return 2;
    }
    // Statuses and output lines: worker → stdout, until the worker ends.
    let statuses = queues.statuses;
    loop {
        let report = crossbeam_channel::select! {
            recv(statuses) -> status => match status {
                Ok(status) => Report::Status(status),
                Err(_) => break,
            },
            recv(lines) -> line => match line {
                Ok(line) => line,
                // The worker is ending: pass on its last statuses.
                Err(_) => {
                    for status in statuses.iter() {
                        let _ = wire::write_report(&mut out, Report::Status(status));
                    }
                    break;
                }
            },
        };
        // Flush once nothing else is waiting to be written.
        let idle = lines.is_empty() && statuses.is_empty();
        if wire::write_report(&mut out, report).is_err() || (idle && out.flush().is_err()) {
            return 0;
        }
    }
    // Lines printed last (a panic message) still go out.
    for line in lines.try_iter() {
        let _ = wire::write_report(&mut out, line);
    }
    let _ = out.flush();
    0
}
