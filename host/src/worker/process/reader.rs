//! The caller's reading side of a worker process: its reports into the
//! caller's status queue and output handler, checked as untrusted input
//! (batches against their count and the caller's credit, shared batches
//! against the region); at the end, the child reaped and its death
//! reported unless it ended with a final status.

use std::io::BufReader;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, ExitStatus};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use sandgen_wire::frame::validate_batch;

use crate::error::{Error, ErrorKind};
use crate::guest::output::{GuestStream, OutputHandler, OutputLine};
use crate::protocol::{Status, WorkerBatch};
#[cfg(target_os = "linux")]
use crate::worker::process::shared::Region;
use crate::worker::process::wire::{self, Preamble, Report};

/// How long a worker whose output broke off may take to exit by itself
/// before it is killed.
const GARBAGE_GRACE: Duration = Duration::from_millis(250);

/// The shared region of a worker process, where the platform has one.
#[cfg(target_os = "linux")]
pub(crate) type SharedRegion = Option<Region>;
#[cfg(not(target_os = "linux"))]
pub(crate) type SharedRegion = Option<std::convert::Infallible>;

/// Who a worker process is, for messages.
pub(crate) struct Origin {
    pub(crate) program: PathBuf,
    pub(crate) plugin: Arc<str>,
    pub(crate) generator: String,
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

fn invalid_data(what: impl Into<String>) -> Broken {
    Broken::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        what.into(),
    ))
}

/// How the reader thread takes in item batches.
pub(crate) struct Incoming {
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
    pub(crate) fn new(max_batch: usize, region: SharedRegion, spares: Receiver<Vec<u8>>) -> Self {
        Incoming {
            max_batch,
            region,
            spares,
        }
    }

    /// The batch a worker placed in the shared region, copied out of it
    /// after checking where the worker says it is.
    fn shared_batch(&mut self, offset: u64, len: u64, count: u32) -> std::io::Result<WorkerBatch> {
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
            Ok(WorkerBatch { frames, count })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (offset, count);
            match *region {}
        }
    }
}

/// The reports of one worker process, as they are read.
struct Reader<'a> {
    stdout: BufReader<ChildStdout>,
    statuses: &'a Sender<Status>,
    output: &'a OutputHandler,
    origin: &'a Origin,
    incoming: Incoming,
    credit: &'a Credit,
    /// It reported `InitializationSucceeded`.
    initialized: bool,
    /// It ended with a final status of its own.
    ended: bool,
}

impl Reader<'_> {
    /// Reads every report until the stream ends (`None`) or breaks.
    fn read_all(&mut self) -> Option<Broken> {
        match wire::read_preamble(&mut self.stdout) {
            Ok(Preamble::Matches) => {}
            Ok(Preamble::Ended | Preamble::Foreign(_)) => return Some(Broken::NoHandshake),
            Ok(Preamble::Version(version)) => return Some(Broken::Version(version)),
            Err(e) => return Some(Broken::Io(e)),
        }
        loop {
            match self.next_status() {
                Ok(Some(status)) => match self.accept(status) {
                    Ok(true) => {}
                    Ok(false) => return None,
                    Err(broken) => return Some(broken),
                },
                Ok(None) => return None,
                Err(broken) => return Some(broken),
            }
        }
    }

    /// The next status; output lines on the way go to the handler.
    fn next_status(&mut self) -> Result<Option<Status>, Broken> {
        loop {
            match wire::read_report(&mut self.stdout, self.incoming.max_batch) {
                Ok(Some(Report::Status(status))) => return Ok(Some(status)),
                Ok(Some(Report::Shared { offset, len, count })) => {
                    return match self.incoming.shared_batch(offset, len, count) {
                        Ok(batch) => Ok(Some(Status::Items(batch))),
                        Err(e) => Err(Broken::Io(e)),
                    };
                }
                Ok(Some(Report::Output { stderr, bytes })) => {
                    let stream = if stderr {
                        GuestStream::Stderr
                    } else {
                        GuestStream::Stdout
                    };
                    (self.output)(&OutputLine {
                        plugin: &self.origin.plugin,
                        generator: &self.origin.generator,
                        worker: 0,
                        stream,
                        text: &String::from_utf8_lossy(&bytes),
                        bytes: &bytes,
                    });
                }
                Ok(None) => return Ok(None),
                Err(e) => return Err(Broken::Io(e)),
            }
        }
    }

    /// Checks `status` and passes it on: `false` when the caller is gone.
    fn accept(&mut self, status: Status) -> Result<bool, Broken> {
        if let Status::Items(batch) = &status {
            // (An empty batch is a skipped pass's sign of progress.)
            if validate_batch(&batch.frames, u32::MAX, u32::MAX, u32::MAX) != Ok(batch.count) {
                // The worker validated this batch; a worker process that
                // sends one it would not have is not trusted further.
                return Err(invalid_data(
                    "an item batch whose frames do not match its count",
                ));
            }
            // A skipped pass's progress report costs one item.
            let items = u64::from(batch.count.max(1));
            if !self.credit.taken(items, batch.frames.len() as u64) {
                // A worker honours the caller's back-pressure; one that
                // streams on regardless would fill the caller's memory.
                return Err(invalid_data("more items than its caller had room for"));
            }
        }
        if matches!(status, Status::IterationStarted) {
            // A pass starts with the whole buffer free.
            self.credit.reset();
        }
        self.initialized |= matches!(status, Status::InitializationSucceeded);
        self.ended = matches!(
            status,
            Status::InitializationFailed(_)
                | Status::IteratorFailed(_)
                | Status::UnexpectedCommand(_)
        );
        Ok(self.statuses.send(status).is_ok())
    }
}

/// Child → parent: reports into the caller's queue and output handler; at
/// the end, reaps the child and reports its death unless it ended with a
/// final status.
pub(crate) fn read_reports(
    stdout: ChildStdout,
    statuses: &Sender<Status>,
    output: &OutputHandler,
    origin: &Origin,
    incoming: Incoming,
    credit: &Credit,
    child: &Mutex<Child>,
) {
    let mut reader = Reader {
        stdout: BufReader::with_capacity(256 * 1024, stdout),
        statuses,
        output,
        origin,
        incoming,
        credit,
        initialized: false,
        ended: false,
    };
    let broken = reader.read_all();
    // A child that speaks garbage is not trusted to end by itself; one whose
    // output broke off because it is exiting gets a moment to finish, so
    // that it is reported as it ended (`/bin/false`: status 1), not as
    // killed by us.
    if broken.is_some() {
        let_it_exit(child);
    }
    let status = reap(child);
    if reader.ended {
        return;
    }
    let error = death(origin, broken, status);
    let _ = statuses.send(if reader.initialized {
        Status::IteratorFailed(error)
    } else {
        Status::InitializationFailed(error)
    });
}

/// Gives a child whose output broke off [`GARBAGE_GRACE`] to exit by
/// itself, then kills it.
fn let_it_exit(child: &Mutex<Child>) {
    let deadline = std::time::Instant::now() + GARBAGE_GRACE;
    loop {
        let mut guard = child.lock().unwrap_or_else(|e| e.into_inner());
        match guard.try_wait() {
            Ok(None) if std::time::Instant::now() < deadline => {}
            Ok(None) => {
                let _ = guard.kill();
                return;
            }
            Ok(Some(_)) | Err(_) => return,
        }
        drop(guard);
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The error that reports how a worker process ended without a final
/// status of its own.
fn death(origin: &Origin, broken: Option<Broken>, status: std::io::Result<ExitStatus>) -> Error {
    let generator = &origin.generator;
    let program = origin.program.display();
    // A signal other than our SIGKILL: it died by itself (its stream broke
    // off as it died), and is reported as it died.
    let exited_by_itself = status
        .as_ref()
        .is_ok_and(|status| !killed_by_sigkill(*status));
    let died = |how: String| {
        Error::new(
            ErrorKind::WorkerDied,
            format!("the worker process of generator {generator} died: it {how}"),
        )
    };
    match (broken, status) {
        (Some(Broken::Version(version)), _) => Error::new(
            ErrorKind::WorkerDied,
            format!(
                "the worker program `{program}` speaks worker protocol version {version}, this sandgen \
                 speaks version {}: use a worker program of the same sandgen version \
                 (`EngineBuilder::worker_program`)",
                wire::PROTOCOL
            ),
        ),
        (Some(Broken::NoHandshake), status) => died(format!(
            "{} before the worker handshake: `{program}` is not a sandgen worker program; use the \
             `sandgen` binary or a program that calls `sandgen::run_worker_if_requested()` \
             first thing in `main`",
            status.map_or_else(|e| format!("could not be waited for ({e})"), describe),
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
    }
}

/// The caller's room for items, as the parent sees it: what the worker may
/// have sent and the caller not yet taken off its queue. The parent counts
/// credit as returned when it forwards it, before the worker can see it, so
/// an honest worker never looks over its limits.
pub(crate) struct Credit {
    items: AtomicU64,
    bytes: AtomicU64,
    max_items: u64,
    max_bytes: u64,
}

impl Credit {
    pub(crate) fn new(max_items: u64, max_bytes: u64) -> Self {
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
    pub(crate) fn returned(&self, items: u64, bytes: u64) {
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
