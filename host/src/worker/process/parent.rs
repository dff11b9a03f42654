//! The caller's side of a worker process: start it, send it the handshake
//! and the commands (this file), and read its reports (`reader.rs`), which
//! also reaps it and reports how it died unless it ended with a final
//! status. The reader thread sees the child's stdout close the moment the
//! child dies, so a death is reported at once, with its exit status or
//! signal.

use std::io::{BufWriter, Write};
use std::process::{Child, ChildStdout, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::cache::Entry;
use crate::error::{Error, ErrorKind};
use crate::guest::output::OutputHandler;
use crate::program::WorkerProgram;
use crate::protocol::Command;
use crate::worker::machine::{MAX_BATCH_BYTES, MAX_BATCH_ITEMS};
use crate::worker::process::reader::{Credit, Incoming, Origin, SharedRegion, read_reports};
#[cfg(target_os = "linux")]
use crate::worker::process::shared::{self, Region};
use crate::worker::process::wire::{self, Hello, WORKER_ARG};
use crate::worker::task::{Task, WorkerQueues, thread_name};

/// The capacity asked for the pipe from a worker process.
#[cfg(target_os = "linux")]
const PIPE_SIZE: usize = 1024 * 1024;

/// The largest shared region made for a worker process: batches larger
/// than it (single huge items) go over the pipe.
#[cfg(target_os = "linux")]
const MAX_REGION: usize = 1 << 30;

/// How many read batch buffers a worker process's caller keeps for reuse,
/// and the largest it keeps.
const SPARE_BUFFERS: usize = 4;
const MAX_SPARE_BUFFER: usize = 2 << 20;

/// What a worker process starts from: the program to run and the compiled
/// component it loads (a worker process never compiles). Its start was
/// checked first ([`check_start`]).
#[derive(Clone, Debug)]
pub(crate) struct ProcessSpec {
    pub(crate) program: WorkerProgram,
    pub(crate) compiled: Entry,
    /// The plugin's name, for messages and output prefixes.
    pub(crate) plugin: Arc<str>,
}

/// The parent's side of a worker process.
pub(crate) struct ProcessWorker {
    child: Arc<Mutex<Child>>,
    pid: u32,
    /// Buffers of batches the caller has read, for the reader thread.
    spare: Recycler,
    /// Disconnects when the reader thread has reaped the child.
    reaped: Receiver<()>,
}

/// Where the buffers of read batches go back to: the spare buffers of a
/// worker process's reader thread, which copies its shared batches into
/// them (memory already in place: no page faults for a fresh one).
#[derive(Clone, Debug)]
pub(crate) struct Recycler(Sender<Vec<u8>>);

impl Recycler {
    /// Keeps `buf` for the next shared batch, unless enough are kept or it
    /// is large.
    pub(crate) fn recycle(&self, buf: Vec<u8>) {
        if buf.capacity() <= MAX_SPARE_BUFFER {
            let _ = self.0.try_send(buf);
        }
    }
}

/// The caller's end of a worker process's stdin.
#[cfg(target_os = "linux")]
type ToChild = std::os::unix::net::UnixStream;
#[cfg(not(target_os = "linux"))]
type ToChild = std::process::ChildStdin;

/// The shared region's descriptor, until it is sent.
#[cfg(target_os = "linux")]
type RegionFd = Option<std::os::fd::OwnedFd>;
#[cfg(not(target_os = "linux"))]
type RegionFd = Option<std::convert::Infallible>;

/// A started child and the ends of its stdin and stdout that the caller
/// keeps.
struct Started {
    child: Child,
    stdin: ToChild,
    stdout: ChildStdout,
}

impl ProcessWorker {
    /// Starts the worker process and the threads that connect it to the
    /// caller's queues.
    pub(crate) fn spawn(
        spec: &ProcessSpec,
        task: Task,
        output: OutputHandler,
        queues: WorkerQueues,
    ) -> Result<ProcessWorker, Error> {
        let max_batch = MAX_BATCH_BYTES + task.limits.max_item_bytes as usize + 64;
        // What the worker may have in flight: its buffer, and one more batch
        // (it checks the caller's credit before each batch).
        let batch_items = (task.flow.buffer_size / 2).clamp(1, MAX_BATCH_ITEMS);
        let credit = Arc::new(Credit::new(
            task.flow.buffer_size.saturating_add(batch_items) as u64,
            task.flow.buffer_bytes.saturating_add(max_batch) as u64,
        ));
        let (region, region_fd) = make_region(&task);
        let Started {
            child,
            stdin,
            stdout,
        } = start_child(&spec.program)?;
        let generator = task.generator.clone();
        let hello = Hello {
            plugin: spec.plugin.to_string(),
            compiled: spec.compiled.clone(),
            task,
            shared: shared_size(&region),
        };
        let pid = child.id();
        let child = Arc::new(Mutex::new(child));
        let (reaped_tx, reaped) = crossbeam_channel::bounded::<()>(0);
        let (spare, spares) = crossbeam_channel::bounded(SPARE_BUFFERS);
        let worker = ProcessWorker {
            child: child.clone(),
            pid,
            spare: Recycler(spare),
            reaped,
        };
        let (commands, statuses) = (queues.commands, queues.statuses);
        let returned = credit.clone();
        let writer = std::thread::Builder::new()
            .name(thread_name("to-", &generator))
            .spawn(move || forward_commands(stdin, region_fd, &hello, &commands, &returned));
        let origin = Origin {
            program: spec.program.program.clone(),
            plugin: spec.plugin.clone(),
            generator: generator.clone(),
        };
        let reader = std::thread::Builder::new()
            .name(thread_name("from-", &generator))
            .spawn(move || {
                let _reaped = reaped_tx;
                let incoming = Incoming::new(max_batch, region, spares);
                read_reports(
                    stdout, &statuses, &output, &origin, incoming, &credit, &child,
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

    /// Keeps `buf` for the next shared batch, unless enough are kept or it
    /// is large.
    pub(crate) fn recycle(&self, buf: Vec<u8>) {
        self.spare.recycle(buf);
    }

    /// Where a batch handed to the caller gives its buffer back.
    pub(crate) fn recycler(&self) -> Recycler {
        self.spare.clone()
    }

    /// Stops the worker at once.
    pub(crate) fn kill(&self) {
        let _ = self.child.lock().unwrap_or_else(|e| e.into_inner()).kill();
    }

    /// Waits up to `grace` for the process to end by itself (it was told to
    /// abort), then kills it and waits up to `grace` again for the reader
    /// thread to reap it (it does so as soon as the process is gone).
    pub(crate) fn shutdown(&self, grace: Duration) {
        if let Err(crossbeam_channel::RecvTimeoutError::Timeout) = self.reaped.recv_timeout(grace) {
            self.kill();
            let _ = self.reaped.recv_timeout(grace);
        }
    }
}

/// What is checked before a worker process is placed (and its plugin
/// compiled for it): args and config that fit the handshake, and the
/// confinement the engine requires.
pub(crate) fn check_start(task: &Task, require_confinement: bool) -> Result<(), Error> {
    check_payload(task)?;
    crate::worker::process::confine::check(require_confinement)
}

/// Refuses args and config too large for the handshake.
fn check_payload(task: &Task) -> Result<(), Error> {
    let payload = task.args.len() + task.config.len();
    let most = wire::MAX_MESSAGE - (1 << 20);
    if payload > most {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "args and config of {payload} bytes are more than a worker process accepts ({most} bytes); \
                 pass large inputs as files in a granted directory"
            ),
        ));
    }
    Ok(())
}

/// The region for large batches: the iterable's buffer and one more batch,
/// as much as the worker may have in flight. Without one (the system
/// refused a memfd), batches go over the pipe.
#[cfg(target_os = "linux")]
fn make_region(task: &Task) -> (SharedRegion, RegionFd) {
    let size = task
        .flow
        .buffer_bytes
        .saturating_add(MAX_BATCH_BYTES + 64)
        .min(MAX_REGION);
    match Region::create(size) {
        Ok((region, fd)) => (Some(region), Some(fd)),
        Err(_) => (None, None),
    }
}
#[cfg(not(target_os = "linux"))]
fn make_region(_: &Task) -> (SharedRegion, RegionFd) {
    (None, None)
}

/// The size of the shared region, for the worker.
#[cfg(target_os = "linux")]
fn shared_size(region: &SharedRegion) -> Option<u64> {
    region.as_ref().map(|region| region.size() as u64)
}
#[cfg(not(target_os = "linux"))]
fn shared_size(_: &SharedRegion) -> Option<u64> {
    None
}

/// Starts `program` as a worker process. Its stdin is, on Linux, a socket,
/// which also carries the shared region's descriptor (no `fork` needed to
/// place it in the child); elsewhere a pipe.
fn start_child(program: &WorkerProgram) -> Result<Started, Error> {
    #[cfg(target_os = "linux")]
    let (stdin, child_stdin) = {
        let (ours, theirs) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| {
            Error::new(
                ErrorKind::WorkerDied,
                format!("failed to make the socket to a worker process: {e}"),
            )
        })?;
        (
            std::os::unix::net::UnixStream::from(ours),
            Stdio::from(theirs),
        )
    };
    #[cfg(not(target_os = "linux"))]
    let child_stdin = Stdio::piped();
    let mut command = program.command();
    command
        .arg(WORKER_ARG)
        .stdin(child_stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let spawned = command.spawn();
    // The caller keeps no copy of the worker's end of its stdin, so that
    // writing to a worker that died fails instead of filling a buffer.
    drop(command);
    let mut child = spawned.map_err(|e| {
        Error::new(
            ErrorKind::WorkerDied,
            format!(
                "failed to start the worker process `{}`: {e}; set `EngineBuilder::worker_program` \
                 to the sandgen binary",
                program.program.display()
            ),
        )
    })?;
    #[cfg(not(target_os = "linux"))]
    let stdin = child.stdin.take();
    #[cfg(target_os = "linux")]
    let stdin = Some(stdin);
    let (Some(stdin), Some(stdout)) = (stdin, child.stdout.take()) else {
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
    Ok(Started {
        child,
        stdin,
        stdout,
    })
}

/// Parent → child: the preamble (with the shared region's descriptor) and
/// the handshake, then every command. When the caller's side is gone,
/// dropping stdin ends the child.
fn forward_commands(
    stdin: ToChild,
    region: RegionFd,
    hello: &Hello,
    commands: &Receiver<Command>,
    credit: &Credit,
) {
    let mut stdin = BufWriter::new(stdin);
    let opened = match region {
        #[cfg(target_os = "linux")]
        Some(region) => {
            use std::os::fd::AsFd as _;
            shared::send_with_region(stdin.get_ref().as_fd(), &wire::preamble(), region.as_fd())
        }
        _ => wire::write_preamble(&mut stdin),
    };
    if opened
        .and_then(|()| wire::write(&mut stdin, hello))
        .and_then(|()| stdin.flush())
        .is_err()
    {
        return;
    }
    for command in commands {
        if let Command::Consumed { items, bytes } = command {
            credit.returned(u64::from(items), bytes);
        }
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
