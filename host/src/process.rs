//! Process isolation: the worker runs in a child process (the `sandgen`
//! binary, or any program that calls [`run_worker_if_requested`]), speaking
//! the same protocol over its stdin and stdout. Inside the child the very
//! same thread worker runs; the parent feeds the same status queue that a
//! thread worker feeds, so everything on the caller's side is shared.
//!
//! - The child loads the compiled component from the compile cache: it never
//!   compiles.
//! - The child exits as soon as its stdin closes: when the parent drops the
//!   iterable, and when the parent dies, even by SIGKILL (the kernel closes
//!   its pipes). No orphan outlives its parent.
//! - The parent's reader thread sees the child's stdout close the moment the
//!   child dies, reaps it, and reports its exit status or signal at once.

use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command as Process, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};

use crate::codec::{Encoding, validate_batch};
use crate::output::{GuestStream, OutputHandler, OutputLine};
use crate::protocol::wire::{self, Report};
use crate::protocol::{Command, Status};
use crate::sandbox::Options;
use crate::worker::{MAX_BATCH_BYTES, Spec, WorkerHandle};
use crate::{Engine, Error, ErrorKind};

/// The capacity asked for the pipe from a worker process.
#[cfg(target_os = "linux")]
const PIPE_SIZE: usize = 1024 * 1024;

/// The first argument that makes a program a worker process.
pub(crate) const WORKER_ARG: &str = "__sandgen-worker";

/// What the parent sends first: everything the worker needs.
#[derive(Serialize, Deserialize)]
struct Setup {
    plugin: String,
    compiled: PathBuf,
    generator: String,
    encoding: Encoding,
    #[serde(with = "serde_bytes")]
    config: Vec<u8>,
    #[serde(with = "serde_bytes")]
    args: Vec<u8>,
    options: Options,
}

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
    let mut input = BufReader::new(std::io::stdin());
    let setup: Setup = match wire::read(&mut input) {
        Ok(Some(setup)) => setup,
        Ok(None) => return 0,
        Err(e) => {
            eprintln!("sandgen worker: cannot read its setup: {e}");
            return 2;
        }
    };
    let (lines_tx, lines) = crossbeam_channel::unbounded::<Report>();
    let handler: OutputHandler = Arc::new(move |line: &OutputLine<'_>| {
        let _ = lines_tx.send(Report::output(line.stream, line.text));
    });
    let mut out = BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let fuel = setup.options.fuel.is_some();
    let worker = Engine::builder()
        .no_cache()
        .build()
        .and_then(|engine| engine.load_compiled(&setup.plugin, &setup.compiled, fuel))
        .and_then(|plugin| {
            WorkerHandle::spawn_thread(Spec {
                plugin,
                generator: setup.generator,
                encoding: setup.encoding,
                config: setup.config,
                args: setup.args,
                options: setup.options,
                output: handler,
            })
        });
    let worker = match worker {
        Ok(worker) => worker,
        Err(error) => {
            let failed = Report::Status(Status::InitializationFailed(error));
            let _ = wire::write_report(&mut out, failed).and_then(|()| out.flush());
            return 0;
        }
    };
    // Commands: stdin → worker. The end of stdin (the parent dropped the
    // iterable, or died) ends this process at once.
    let commands = worker.commands.clone();
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
    let statuses = worker.statuses.clone();
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

/// The parent's side of a worker process.
pub(crate) struct ProcessWorker {
    child: Arc<Mutex<Child>>,
    pid: u32,
    /// Disconnects when the reader thread has reaped the child.
    reaped: Receiver<()>,
}

impl ProcessWorker {
    /// Starts the worker process and the threads that connect it to the
    /// caller's queues.
    pub(crate) fn spawn(
        spec: Spec,
        commands: Receiver<Command>,
        statuses: Sender<Status>,
    ) -> Result<ProcessWorker, Error> {
        let fuel = spec.options.fuel.is_some();
        let payload = spec.args.len() + spec.config.len();
        if payload > wire::MAX_MESSAGE - (1 << 20) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "args and config of {payload} bytes are more than a worker process accepts ({} bytes); \
                     pass large inputs as files in a granted directory",
                    wire::MAX_MESSAGE - (1 << 20)
                ),
            ));
        }
        let engine = spec.plugin.engine();
        let program = engine.worker_program()?;
        let compiled = spec.plugin.compiled_file(fuel)?.to_owned();
        let max_batch = MAX_BATCH_BYTES + spec.options.max_item_bytes as usize + 64;
        let mut child = Process::new(&program)
            .arg(WORKER_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                Error::new(
                    ErrorKind::WorkerDied,
                    format!(
                        "failed to start the worker process `{}`: {e}; set `EngineBuilder::worker_program` \
                         to the sandgen binary",
                        program.display()
                    ),
                )
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::new(
                ErrorKind::WorkerDied,
                "the worker process has no pipes",
            ));
        };
        // Batches are up to 256 KiB: a pipe that holds whole batches saves
        // both processes many wake-ups. Best effort (the system's limit may
        // be lower).
        #[cfg(target_os = "linux")]
        let _ = rustix::pipe::fcntl_setpipe_size(&stdout, PIPE_SIZE);
        let setup = Setup {
            plugin: spec.plugin.name().to_owned(),
            compiled,
            generator: spec.generator.clone(),
            encoding: spec.encoding,
            config: spec.config,
            args: spec.args,
            options: spec.options,
        };
        let pid = child.id();
        let child = Arc::new(Mutex::new(child));
        let (reaped_tx, reaped) = crossbeam_channel::bounded::<()>(0);
        let worker = ProcessWorker {
            child: child.clone(),
            pid,
            reaped,
        };
        let generator = spec.generator;
        let plugin = spec.plugin.name().to_owned();
        let writer = std::thread::Builder::new()
            .name(format!("sandgen-to-{generator}"))
            .spawn(move || forward_commands(stdin, &setup, &commands));
        let reader = std::thread::Builder::new()
            .name(format!("sandgen-from-{generator}"))
            .spawn(move || {
                let _reaped = reaped_tx;
                read_reports(
                    stdout,
                    &statuses,
                    &spec.output,
                    &plugin,
                    &generator,
                    max_batch,
                    &child,
                );
            });
        if writer.is_err() || reader.is_err() {
            worker.kill();
            if reader.is_err() {
                // Nobody else will reap it.
                let _ = worker
                    .child
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .wait();
            }
            return Err(Error::new(
                ErrorKind::WorkerDied,
                "failed to start the threads of a worker process",
            ));
        }
        Ok(worker)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Stops the worker at once.
    pub(crate) fn kill(&self) {
        let _ = self.child.lock().unwrap_or_else(|e| e.into_inner()).kill();
    }

    /// Waits up to `grace` for the process to end by itself (it was told to
    /// abort), then kills it; either way it is reaped.
    pub(crate) fn shutdown(&self, grace: Duration) {
        if let Err(crossbeam_channel::RecvTimeoutError::Timeout) = self.reaped.recv_timeout(grace) {
            self.kill();
            let _ = self.reaped.recv();
        }
    }
}

/// Parent → child: the setup, then every command. When the caller's side
/// is gone, dropping stdin ends the child.
fn forward_commands(stdin: ChildStdin, setup: &Setup, commands: &Receiver<Command>) {
    let mut stdin = BufWriter::new(stdin);
    if wire::write(&mut stdin, setup)
        .and_then(|()| stdin.flush())
        .is_err()
    {
        return;
    }
    for command in commands {
        let abort = command == Command::Abort;
        if wire::write(&mut stdin, &command)
            .and_then(|()| stdin.flush())
            .is_err()
            || abort
        {
            return;
        }
    }
}

/// Child → parent: reports into the caller's queue and output handler; at
/// the end, reaps the child and reports its death unless it ended with a
/// final status.
fn read_reports(
    stdout: ChildStdout,
    statuses: &Sender<Status>,
    output: &OutputHandler,
    plugin: &str,
    generator: &str,
    max_batch: usize,
    child: &Mutex<Child>,
) {
    let mut stdout = BufReader::with_capacity(256 * 1024, stdout);
    let mut ended = false;
    let mut initialized = false;
    let broken = loop {
        match wire::read_report(&mut stdout, max_batch) {
            Ok(Some(Report::Output { stderr, text })) => {
                let stream = if stderr {
                    GuestStream::Stderr
                } else {
                    GuestStream::Stdout
                };
                output(&OutputLine {
                    plugin,
                    generator,
                    stream,
                    text: &text,
                });
            }
            Ok(Some(Report::Status(Status::Items(batch))))
                if validate_batch(&batch.frames, u32::MAX, u32::MAX, u32::MAX)
                    != Ok(batch.count)
                    || batch.count == 0 =>
            {
                // The worker validated this batch; a worker process that
                // sends one it would not have is not trusted further.
                break Some(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "an item batch whose frames do not match its count",
                ));
            }
            Ok(Some(Report::Status(status))) => {
                initialized |= matches!(status, Status::InitializationSucceeded);
                ended = matches!(
                    status,
                    Status::InitializationFailed(_)
                        | Status::IteratorFailed(_)
                        | Status::UnexpectedCommand(_)
                );
                if statuses.send(status).is_err() {
                    break None;
                }
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    if broken.is_some() {
        // A child that speaks garbage is not trusted to end by itself.
        let _ = child.lock().unwrap_or_else(|e| e.into_inner()).kill();
    }
    let status = child.lock().unwrap_or_else(|e| e.into_inner()).wait();
    if ended {
        return;
    }
    let how = match (&broken, status) {
        (Some(e), _) => format!("sent a malformed message ({e}) and was killed"),
        (None, Ok(status)) => describe(status),
        (None, Err(e)) => format!("could not be waited for ({e})"),
    };
    let error = Error::new(
        ErrorKind::WorkerDied,
        format!("the worker process of generator {generator} died: it {how}"),
    );
    let _ = statuses.send(if initialized {
        Status::IteratorFailed(error)
    } else {
        Status::InitializationFailed(error)
    });
}

/// "exited with status 17", "was killed by signal 9 (SIGKILL)".
fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(signal) = status.signal() {
            let name = match signal {
                6 => " (SIGABRT)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                15 => " (SIGTERM)",
                _ => "",
            };
            return format!("was killed by signal {signal}{name}");
        }
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => format!("ended ({status})"),
    }
}
