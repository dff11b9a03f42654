//! The caller's side of a worker process: start it, send it the
//! handshake and the commands, read its reports into the caller's status
//! queue and output handler, and when it ends, reap it and report how it
//! died unless it ended with a final status. The reader thread sees the
//! child's stdout close the moment the child dies, so a death is reported at
//! once, with its exit status or signal.

use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use sandgen_wire::frame::validate_batch;

use crate::error::{Error, ErrorKind};
use crate::guest::output::{GuestStream, OutputHandler, OutputLine};
use crate::protocol::{Command, Status};
use crate::runtime::Loaded;
use crate::worker::machine::{MAX_BATCH_BYTES, MAX_BATCH_ITEMS};
#[cfg(target_os = "linux")]
use crate::worker::process::shared::{self, Region};
use crate::worker::process::wire::{self, Hello, Preamble, Report, WORKER_ARG};
use crate::worker::task::{Task, WorkerQueues, thread_name};

/// The capacity asked for the pipe from a worker process.
#[cfg(target_os = "linux")]
const PIPE_SIZE: usize = 1024 * 1024;

/// Who a worker process is, for messages.
struct Origin<'a> {
    program: &'a Path,
    plugin: &'a str,
    generator: &'a str,
}

/// Why the reports from a worker process stopped making sense.
enum Broken {
    /// It never opened with the handshake: not a sandgen worker program.
    NoHandshake,
    /// It speaks another version of the protocol.
    Version(u32),
    /// A malformed message, or a read that failed.
    Io(std::io::Error),
}

/// The shared region of a worker process, where the platform has one.
#[cfg(target_os = "linux")]
type SharedRegion = Option<Region>;
#[cfg(not(target_os = "linux"))]
type SharedRegion = Option<std::convert::Infallible>;

/// The size of the shared region, for the worker.
#[cfg(target_os = "linux")]
fn shared_size(region: &SharedRegion) -> Option<u64> {
    region.as_ref().map(|region| region.size() as u64)
}
#[cfg(not(target_os = "linux"))]
fn shared_size(_: &SharedRegion) -> Option<u64> {
    None
}

/// The largest shared region made for a worker process: batches larger
/// than it (single huge items) go over the pipe.
#[cfg(target_os = "linux")]
const MAX_REGION: usize = 1 << 30;

/// How many read batch buffers a worker process's caller keeps for reuse,
/// and the largest it keeps.
const SPARE_BUFFERS: usize = 4;
const MAX_SPARE_BUFFER: usize = 2 << 20;

/// The parent's side of a worker process.
pub(crate) struct ProcessWorker {
    child: Arc<Mutex<Child>>,
    pid: u32,
    /// Buffers of batches the caller has read, for the reader thread.
    spare: Sender<Vec<u8>>,
    /// Disconnects when the reader thread has reaped the child.
    reaped: Receiver<()>,
}

impl ProcessWorker {
    /// Starts the worker process and the threads that connect it to the
    /// caller's queues.
    pub(crate) fn spawn(
        plugin: &Loaded,
        task: Task,
        output: OutputHandler,
        queues: WorkerQueues,
    ) -> Result<ProcessWorker, Error> {
        let fuel = task.limits.fuel.is_some();
        let payload = task.args.len() + task.config.len();
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
        crate::worker::process::confine::check(plugin.require_confinement())?;
        let program = plugin.worker_program()?;
        let compiled = plugin.compiled(fuel)?.clone();
        let max_batch = MAX_BATCH_BYTES + task.limits.max_item_bytes as usize + 64;
        // What the worker may have in flight: its buffer, and one more batch
        // (it checks the caller's credit before each batch).
        let batch_items = (task.flow.buffer_size / 2).clamp(1, MAX_BATCH_ITEMS);
        let credit = Arc::new(Credit::new(
            task.flow.buffer_size.saturating_add(batch_items) as u64,
            task.flow.buffer_bytes.saturating_add(max_batch) as u64,
        ));
        let returned = credit.clone();
        // The worker's stdin: on Linux a socket, which also carries the
        // shared region's descriptor (no `fork` needed to place it in the
        // child); elsewhere a pipe.
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
        // The region for large batches: the iterable's buffer and one more
        // batch, as much as the worker may have in flight. Without one (the
        // system refused a memfd), batches go over the pipe.
        #[cfg(target_os = "linux")]
        let (region, region_fd) = match Region::create(
            task.flow
                .buffer_bytes
                .saturating_add(MAX_BATCH_BYTES + 64)
                .min(MAX_REGION),
        ) {
            Ok((region, fd)) => (Some(region), Some(fd)),
            Err(_) => (None, None),
        };
        #[cfg(not(target_os = "linux"))]
        let (region, region_fd): (SharedRegion, Option<std::convert::Infallible>) = (None, None);
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
        let generator = task.generator.clone();
        let hello = Hello {
            plugin: plugin.name().to_owned(),
            compiled,
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
            spare,
            reaped,
        };
        let plugin = plugin.name().to_owned();
        let (commands, statuses) = (queues.commands, queues.statuses);
        let writer = std::thread::Builder::new()
            .name(thread_name("to-", &generator))
            .spawn(move || forward_commands(stdin, region_fd, &hello, &commands, &returned));
        let reader = std::thread::Builder::new()
            .name(thread_name("from-", &generator))
            .spawn(move || {
                let _reaped = reaped_tx;
                read_reports(
                    stdout,
                    &statuses,
                    &output,
                    &Origin {
                        program: &program.program,
                        plugin: &plugin,
                        generator: &generator,
                    },
                    Incoming {
                        max_batch,
                        region,
                        spares,
                    },
                    &credit,
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

    /// Keeps `buf` for the next shared batch, unless enough are kept or it
    /// is large.
    pub(crate) fn recycle(&self, buf: Vec<u8>) {
        if buf.capacity() <= MAX_SPARE_BUFFER {
            let _ = self.spare.try_send(buf);
        }
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

/// How the reader thread takes in item batches.
struct Incoming {
    /// The largest batch accepted.
    max_batch: usize,
    /// Where large batches arrive, if the worker has a region.
    region: SharedRegion,
    /// Buffers to copy them into (`ProcessWorker::recycle`).
    #[cfg_attr(
        not(target_os = "linux"),
        expect(dead_code, reason = "no region there")
    )]
    spares: Receiver<Vec<u8>>,
}

impl Incoming {
    /// The batch a worker placed in the shared region, copied out of it
    /// after checking where the worker says it is.
    fn shared_batch(
        &mut self,
        offset: u64,
        len: u64,
        count: u32,
    ) -> std::io::Result<crate::protocol::Batch> {
        let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        let Some(region) = &mut self.region else {
            return Err(invalid(
                "a shared batch, but it has no shared region".into(),
            ));
        };
        if len > self.max_batch as u64 {
            return Err(invalid(format!(
                "a {len}-byte batch is larger than the {} bytes allowed",
                self.max_batch
            )));
        }
        #[cfg(target_os = "linux")]
        {
            let spare = self.spares.try_recv().unwrap_or_default();
            let frames = region.copy_out(offset, len, spare).map_err(invalid)?;
            Ok(crate::protocol::Batch { frames, count })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (offset, count);
            match *region {}
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
    origin: &Origin<'_>,
    mut incoming: Incoming,
    credit: &Credit,
    child: &Mutex<Child>,
) {
    let Origin {
        plugin, generator, ..
    } = *origin;
    let mut stdout = BufReader::with_capacity(256 * 1024, stdout);
    let mut ended = false;
    let mut initialized = false;
    let broken = match wire::read_preamble(&mut stdout) {
        Ok(Preamble::Matches) => None,
        Ok(Preamble::Ended) => Some(Broken::NoHandshake),
        Ok(Preamble::Version(version)) => Some(Broken::Version(version)),
        Ok(Preamble::Foreign(_)) => Some(Broken::NoHandshake),
        Err(e) => Some(Broken::Io(e)),
    };
    let broken = broken.or_else(|| {
        loop {
            let status = match wire::read_report(&mut stdout, incoming.max_batch) {
                Ok(Some(Report::Status(status))) => status,
                Ok(Some(Report::Shared { offset, len, count })) => {
                    match incoming.shared_batch(offset, len, count) {
                        Ok(batch) => Status::Items(batch),
                        Err(e) => break Some(Broken::Io(e)),
                    }
                }
                Ok(Some(Report::Output { stderr, bytes })) => {
                    let stream = if stderr {
                        GuestStream::Stderr
                    } else {
                        GuestStream::Stdout
                    };
                    output(&OutputLine {
                        plugin,
                        generator,
                        stream,
                        text: &String::from_utf8_lossy(&bytes),
                        bytes: &bytes,
                    });
                    continue;
                }
                Ok(None) => break None,
                Err(e) => break Some(Broken::Io(e)),
            };
            match status {
                Status::Items(batch)
                    if validate_batch(&batch.frames, u32::MAX, u32::MAX, u32::MAX)
                        != Ok(batch.count)
                        || batch.count == 0 =>
                {
                    // The worker validated this batch; a worker process that
                    // sends one it would not have is not trusted further.
                    break Some(Broken::Io(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "an item batch whose frames do not match its count",
                    )));
                }
                Status::Items(batch)
                    if !credit.taken(u64::from(batch.count), batch.frames.len() as u64) =>
                {
                    // A worker honours the caller's back-pressure; one that
                    // streams on regardless would fill the caller's memory.
                    break Some(Broken::Io(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "more items than its caller had room for",
                    )));
                }
                status => {
                    if matches!(status, Status::IterationStarted) {
                        // A pass starts with the whole buffer free.
                        credit.reset();
                    }
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
            }
        }
    });
    // A child that speaks garbage is not trusted to end by itself; one whose
    // output broke off because it is exiting gets a moment to finish, so
    // that it is reported as it ended (`/bin/false`: status 1), not as
    // killed by us.
    if broken.is_some() {
        let deadline = std::time::Instant::now() + GARBAGE_GRACE;
        loop {
            let mut guard = child.lock().unwrap_or_else(|e| e.into_inner());
            match guard.try_wait() {
                Ok(None) if std::time::Instant::now() < deadline => {}
                Ok(None) => {
                    let _ = guard.kill();
                    break;
                }
                Ok(Some(_)) | Err(_) => break,
            }
            drop(guard);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let status = reap(child);
    // A signal other than our SIGKILL: it died by itself (its stream broke
    // off as it died), and is reported as it died.
    let exited_by_itself = status
        .as_ref()
        .is_ok_and(|status| !killed_by_sigkill(*status));
    if ended {
        return;
    }
    let died = |how: String| {
        Error::new(
            ErrorKind::WorkerDied,
            format!("the worker process of generator {generator} died: it {how}"),
        )
    };
    let error = match (broken, status) {
        (Some(Broken::Version(version)), _) => Error::new(
            ErrorKind::WorkerDied,
            format!(
                "the worker program `{}` speaks worker protocol version {version}, this sandgen \
                 speaks version {}: use a worker program of the same sandgen version \
                 (`EngineBuilder::worker_program`)",
                origin.program.display(),
                wire::PROTOCOL
            ),
        ),
        (Some(Broken::NoHandshake), status) => died(format!(
            "{} before the worker handshake: `{}` is not a sandgen worker program; use the \
             `sandgen` binary or a program that calls `sandgen::run_worker_if_requested()` \
             first thing in `main`",
            status.map_or_else(|e| format!("could not be waited for ({e})"), describe),
            origin.program.display(),
        )),
        // What it sent makes no sense: not a crash but a broken (or
        // compromised) worker, as a plugin that returns malformed frames.
        (Some(Broken::Io(e)), status) if e.kind() == std::io::ErrorKind::InvalidData => Error::new(
            ErrorKind::Protocol,
            format!(
                "the worker process of generator {generator} broke the worker protocol: it sent \
                     a malformed message ({e}), and {}",
                match status {
                    Ok(status) if exited_by_itself => describe(status),
                    _ => "was killed".to_owned(),
                }
            ),
        ),
        (Some(Broken::Io(e)), Ok(status)) if exited_by_itself => died(format!(
            "sent a malformed message ({e}), and {}",
            describe(status)
        )),
        (Some(Broken::Io(e)), _) => died(format!("sent a malformed message ({e}) and was killed")),
        (None, Ok(status)) => died(describe(status)),
        (None, Err(e)) => died(format!("could not be waited for ({e})")),
    };
    let _ = statuses.send(if initialized {
        Status::IteratorFailed(error)
    } else {
        Status::InitializationFailed(error)
    });
}

/// The caller's room for items, as the parent sees it: what the worker may
/// have sent and the caller not yet taken off its queue. The parent counts
/// credit as returned when it forwards it, before the worker can see it, so
/// an honest worker never looks over its limits.
struct Credit {
    items: AtomicU64,
    bytes: AtomicU64,
    max_items: u64,
    max_bytes: u64,
}

impl Credit {
    fn new(max_items: u64, max_bytes: u64) -> Self {
        Credit {
            items: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            max_items,
            max_bytes,
        }
    }

    fn reset(&self) {
        self.items.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
    }

    /// A batch arrived: whether it fits.
    fn taken(&self, items: u64, bytes: u64) -> bool {
        let items = self
            .items
            .fetch_add(items, Ordering::Relaxed)
            .saturating_add(items);
        let bytes = self
            .bytes
            .fetch_add(bytes, Ordering::Relaxed)
            .saturating_add(bytes);
        items <= self.max_items && bytes <= self.max_bytes
    }

    /// The caller took items off its queue.
    fn returned(&self, items: u64, bytes: u64) {
        let give_back = |counter: &AtomicU64, n: u64| {
            let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
        };
        give_back(&self.items, items);
        give_back(&self.bytes, bytes);
    }
}

/// Waits for the child to end, without holding its lock meanwhile (so that
/// it can be killed while this waits), then reaps it.
fn reap(child: &Mutex<Child>) -> std::io::Result<ExitStatus> {
    // Reaped already (the grace above): its pid may be another's by now.
    if let Ok(Some(status)) = child.lock().unwrap_or_else(|e| e.into_inner()).try_wait() {
        return Ok(status);
    }
    #[cfg(unix)]
    {
        let pid =
            rustix::process::Pid::from_child(&child.lock().unwrap_or_else(|e| e.into_inner()));
        // Wait until it has exited, leaving it waitable: `Child::wait`
        // below reaps it, so its pid cannot be reused while we still hold it.
        while let Err(rustix::io::Errno::INTR) = rustix::process::waitid(
            rustix::process::WaitId::Pid(pid),
            rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT,
        ) {}
    }
    child.lock().unwrap_or_else(|e| e.into_inner()).wait()
}

fn killed_by_sigkill(status: ExitStatus) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        status.signal() == Some(9)
    }
    #[cfg(not(unix))]
    {
        let _ = status;
        false
    }
}

/// How long a worker whose output broke off may take to exit by itself
/// before it is killed.
const GARBAGE_GRACE: Duration = Duration::from_millis(250);

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
                31 => {
                    " (SIGSYS: likely the seccomp filter, which kills a worker process that makes a system call it may not)"
                }
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
