//! The worker program's side of process isolation: read the preamble and
//! the handshake, load the compiled component (through the loader the entry
//! point passes in: a worker process never compiles), confine the process,
//! run the thread flavour, and pass its statuses and the guest's output
//! back over stdout.
//!
//! The process exits as soon as its stdin closes: when the caller drops the
//! iterable, and when the caller dies, even by SIGKILL (the kernel closes
//! the caller's end of it). No worker outlives its caller.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::sync::{Arc, Mutex};

use crate::cache::Entry;
use crate::error::Error;
use crate::guest::Linked;
use crate::guest::output::{OutputHandler, OutputLine};
use crate::protocol::{Command, Status};
use crate::worker::process::confine;
#[cfg(target_os = "linux")]
use crate::worker::process::shared::{MIN_SHARED_BATCH, Ring};
use crate::worker::process::wire::{self, Hello, Preamble, Report};
use crate::worker::task::Reports;
use crate::worker::thread::ThreadWorker;

/// Loads the compiled component a worker process was sent: its plugin's
/// name, the compiled file in the cache, and whether it is metered.
pub(crate) type LoadCompiled<'a> = &'a dyn Fn(&str, &Entry, bool) -> Result<Linked, Error>;

/// The writer of statuses and output lines, shared by the worker's thread
/// and the output handler.
type Out = Arc<Mutex<BufWriter<Box<dyn Write + Send>>>>;

/// Makes a SIGSEGV sent from outside (`kill -SEGV`) end this process, as it
/// ends any other.
///
/// wasmtime handles SIGSEGV to turn a guest's faulting access into a trap,
/// and passes other faults on to the handler that was there before it, or,
/// when there was none, restores the default action and returns, so that the
/// faulting instruction faults again and ends the process. A signal sent
/// from outside is not a fault: returning from it just goes on, and the
/// worker would live on. This handler, installed before wasmtime's, ends
/// the process for such a signal, and otherwise does what wasmtime would.
#[cfg(unix)]
fn die_on_segv_from_outside() {
    extern "C" fn handler(signum: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO
        // handler; restoring the default action and raising a signal are
        // async-signal-safe.
        unsafe {
            let sent = (*info).si_code <= 0;
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(signum, &default, std::ptr::null_mut());
            if sent {
                // Sent, not a fault: die of it now.
                libc::raise(signum);
            }
            // A fault: returning re-runs the instruction, which faults
            // again under the default action.
        }
    }
    // SAFETY: installs a handler for SIGSEGV before any other thread runs
    // (this is the worker process's first act); the handler only calls
    // async-signal-safe functions.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGSEGV, &action, std::ptr::null_mut());
    }
}

/// The worker process, its component loaded by `load`: the exit code. Its
/// caller (`run_worker_from_args`) has closed the descriptors it inherited.
pub(crate) fn serve(load: LoadCompiled<'_>) -> i32 {
    #[cfg(unix)]
    die_on_segv_from_outside();
    let Ok(stdout) = raw_stdout() else {
        return 2;
    };
    let mut out = BufWriter::with_capacity(64 * 1024, stdout);
    // This side's preamble goes first, so that a caller of another version
    // learns it at once.
    if wire::write_preamble(&mut out)
        .and_then(|()| out.flush())
        .is_err()
    {
        return 0;
    }
    let (mut input, hello, to_caller) = match handshake(out) {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let out = to_caller.out.clone();
    let handler = output_handler(&out);
    let (commands, worker_commands) = crossbeam_channel::unbounded();
    let fuel = hello.task.limits.fuel.is_some();
    let worker = load(&hello.plugin, &hello.compiled, fuel).and_then(|linked| {
        // The component is loaded (its cache entry was opened) and the
        // backend set up; no guest code has run and no thread of ours has
        // started (the epoch thread starts with the first guest): Landlock
        // holds for this thread and every thread it starts.
        confine::confine(&hello.task.grants)?;
        // Landlock holds only for threads started from now on: a thread
        // this program kept from before (its own thread workers) must not
        // run the guest.
        crate::worker::pool::forget_idle();
        #[cfg(debug_assertions)]
        probe_confinement();
        // On a thread of its own, started now (never parked: this thread
        // is not the guest's).
        ThreadWorker::spawn(
            linked,
            hello.task,
            handler,
            worker_commands,
            to_caller,
            false,
        )
    });
    let worker = match worker {
        Ok(worker) => worker,
        Err(error) => {
            let failed = Report::Status(Status::InitializationFailed(error));
            let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
            let _ = wire::write_report(&mut *out, failed).and_then(|()| out.flush());
            return 0;
        }
    };
    // Commands: stdin → worker. The end of stdin (the caller dropped the
    // iterable, or died) ends this process at once.
    let reader = std::thread::Builder::new()
        .name("sandgen-commands".into())
        .spawn(move || {
            // A worker that has ended takes no more commands; its last
            // statuses may still be being written, so this thread only
            // reads on. Only the end of stdin (the caller is gone) ends the
            // process from here.
            while let Ok(Some(command)) = wire::read::<Command>(&mut input) {
                let _ = commands.send(command);
            }
            std::process::exit(0);
        });
    if reader.is_err() {
        return 2;
    }
    // The worker reports by itself; the process ends with it.
    worker.wait();
    let _ = out.lock().unwrap_or_else(|e| e.into_inner()).flush();
    0
}

/// Reads the caller's preamble (and on Linux the shared region's
/// descriptor with it) and the handshake; the rest of stdin, the task, and
/// where the worker's statuses go. `Err`: the exit code.
fn handshake(
    out: BufWriter<Box<dyn Write + Send>>,
) -> Result<(Box<dyn BufRead + Send>, Hello, ToCaller), i32> {
    #[cfg_attr(
        not(target_os = "linux"),
        expect(unused_mut, reason = "filled on Linux only")
    )]
    let mut first = [0u8; 12];
    #[cfg(target_os = "linux")]
    let (got, region_fd) = {
        use std::os::fd::AsFd as _;
        match crate::worker::process::shared::receive_region(std::io::stdin().as_fd(), &mut first) {
            Ok(received) => received,
            Err(e) => {
                eprintln!("sandgen worker: cannot read the caller's preamble: {e}");
                return Err(2);
            }
        }
    };
    #[cfg(not(target_os = "linux"))]
    let got = 0;
    let mut input = BufReader::new(std::io::Read::chain(
        std::io::Cursor::new(first[..got].to_vec()),
        std::io::stdin(),
    ));
    match wire::read_preamble(&mut input) {
        Ok(Preamble::Matches) => {}
        Ok(Preamble::Ended) => return Err(0),
        Ok(other) => {
            eprintln!(
                "sandgen worker: the caller speaks another worker protocol ({other:?}; this program speaks version {}): use the same sandgen version for both",
                wire::PROTOCOL
            );
            return Err(3);
        }
        Err(e) => {
            eprintln!("sandgen worker: cannot read the caller's preamble: {e}");
            return Err(2);
        }
    }
    let hello: Hello = match wire::read(&mut input) {
        Ok(Some(hello)) => hello,
        Ok(None) => return Err(0),
        Err(e) => {
            eprintln!("sandgen worker: cannot read its task: {e}");
            return Err(2);
        }
    };
    // Large batches go through the caller's shared region, mapped before
    // confinement; without it (none given, or it cannot be mapped), through
    // the pipe.
    #[cfg(target_os = "linux")]
    let ring = hello
        .shared
        .and_then(|size| usize::try_from(size).ok())
        .zip(region_fd)
        .and_then(|(size, fd)| Ring::from_fd(fd, size).ok());
    // One writer for statuses and the guest's output lines, both written
    // (and flushed) on the worker's thread as they come, so that they reach
    // the caller in the order the guest produced them, and a guest that
    // prints or produces faster than the caller reads is held back by the
    // pipe instead of filling a queue. (A thread of its own for the writing
    // would let the guest go on meanwhile, but the hand-off of every batch
    // costs more than it saves on two cores; BENCHMARKS.md.)
    let to_caller = ToCaller {
        out: Arc::new(Mutex::new(out)),
        #[cfg(target_os = "linux")]
        ring: Mutex::new(ring),
    };
    Ok((Box::new(input), hello, to_caller))
}

/// The guest's output lines, written to the caller in turn with statuses.
fn output_handler(out: &Out) -> OutputHandler {
    let lines = out.clone();
    Arc::new(move |line: &OutputLine<'_>| {
        let mut out = lines.lock().unwrap_or_else(|e| e.into_inner());
        let _ = wire::write_report(&mut *out, Report::output(line.stream, line.bytes))
            .and_then(|()| out.flush());
    })
}

/// The worker's statuses, straight to the caller from the worker's thread:
/// large item batches through the shared region when it has room, all else
/// over the pipe.
struct ToCaller {
    out: Out,
    #[cfg(target_os = "linux")]
    ring: Mutex<Option<Ring>>,
}

impl Reports for ToCaller {
    fn report(&self, status: Status) -> bool {
        // One lock over placing a batch in the ring and writing where it is:
        // the caller releases ring space in the order of the pipe, so the
        // two orders must be the same whoever reports.
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        #[cfg(target_os = "linux")]
        let report = match status {
            Status::Items(batch) if batch.frames.len() >= MIN_SHARED_BATCH => {
                let placed = self
                    .ring
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_mut()
                    .and_then(|ring| ring.put(&batch.frames));
                match placed {
                    Some(offset) => Report::Shared {
                        offset,
                        len: batch.frames.len() as u64,
                        count: batch.count,
                    },
                    None => Report::Status(Status::Items(batch)),
                }
            }
            status => Report::Status(status),
        };
        #[cfg(not(target_os = "linux"))]
        let report = Report::Status(status);
        wire::write_report(&mut *out, report)
            .and_then(|()| out.flush())
            .is_ok()
    }
}

/// Stdout as a plain file where the platform allows: item batches are
/// binary, and std's stdout is line-buffered (it would flush at every
/// newline byte of an item).
fn raw_stdout() -> std::io::Result<Box<dyn Write + Send>> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd as _;
        let fd = std::io::stdout().as_fd().try_clone_to_owned()?;
        Ok(Box::new(std::fs::File::from(fd)))
    }
    #[cfg(not(unix))]
    {
        Ok(Box::new(std::io::stdout()))
    }
}

/// Debug builds only (never in a release build): after confinement, tries
/// what `SANDGEN_CONFINEMENT_PROBE` names, as an escaped guest would, and
/// says on stderr what happened: `open:PATH` (Landlock refuses it),
/// `socket` or `exec` (the seccomp filter kills the process),
/// `prlimit-other` and `prctl-dumpable` (the filter refuses them), and, for
/// Landlock alone (`SANDGEN_CONFINEMENT_WITHOUT=seccomp`), `connect:PORT`,
/// `bind:PORT`, `abstract:NAME` and `signal:PID`. The tests of the
/// confinement use it (`tests/all/confinement.rs`).
#[cfg(debug_assertions)]
fn probe_confinement() {
    let Ok(probe) = std::env::var("SANDGEN_CONFINEMENT_PROBE") else {
        return;
    };
    let outcome = if let Some(path) = probe.strip_prefix("open:") {
        match std::fs::File::open(path) {
            Ok(_) => "opened".to_owned(),
            Err(e) => format!("refused: {e}"),
        }
    } else if probe == "socket" {
        // SAFETY: a plain socket call; the descriptor is closed if made.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        if fd >= 0 {
            // SAFETY: closing the descriptor just made.
            unsafe { libc::close(fd) };
            "made a socket".to_owned()
        } else {
            format!("refused: {}", std::io::Error::last_os_error())
        }
    } else if probe == "prlimit-other" {
        // Read (or it could raise) another process's limits: init's.
        let mut old: libc::rlimit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit64 reads no new limit (null) and writes `old`.
        let done = unsafe { libc::prlimit(1, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
        if done == 0 {
            "read init's limits".to_owned()
        } else {
            format!("refused: {}", std::io::Error::last_os_error())
        }
    } else if probe == "prctl-dumpable" {
        // SAFETY: a prctl with values only.
        let done = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
        if done == 0 {
            "made itself dumpable".to_owned()
        } else {
            format!("refused: {}", std::io::Error::last_os_error())
        }
    } else if let Some(port) = probe.strip_prefix("connect:") {
        // A TCP connection to this machine (Landlock's network rule).
        match port.parse::<u16>() {
            Ok(port) => match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Ok(_) => "connected".to_owned(),
                Err(e) => format!("refused: {e}"),
            },
            Err(_) => format!("bad port `{port}`"),
        }
    } else if let Some(port) = probe.strip_prefix("bind:") {
        match port.parse::<u16>() {
            Ok(port) => match std::net::TcpListener::bind(("127.0.0.1", port)) {
                Ok(_) => "bound".to_owned(),
                Err(e) => format!("refused: {e}"),
            },
            Err(_) => format!("bad port `{port}`"),
        }
    } else if let Some(name) = probe.strip_prefix("abstract:") {
        // An abstract Unix socket outside the worker's domain (Landlock's
        // scope).
        use std::os::linux::net::SocketAddrExt as _;
        match std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| std::os::unix::net::UnixStream::connect_addr(&addr))
        {
            Ok(_) => "connected".to_owned(),
            Err(e) => format!("refused: {e}"),
        }
    } else if let Some(pid) = probe.strip_prefix("signal:") {
        // SIGCONT (harmless) to a process outside the worker's domain
        // (Landlock's scope).
        let done = match pid.parse::<i32>() {
            // SAFETY: kill with values only.
            Ok(pid) if pid > 0 => unsafe { libc::kill(pid, libc::SIGCONT) },
            _ => return eprintln!("sandgen worker probe {probe}: bad pid `{pid}`"),
        };
        if done == 0 {
            "signalled".to_owned()
        } else {
            format!("refused: {}", std::io::Error::last_os_error())
        }
    } else if probe == "exec" {
        match std::process::Command::new("/bin/true").status() {
            Ok(status) => format!("ran /bin/true: {status}"),
            Err(e) => format!("refused: {e}"),
        }
    } else {
        format!("unknown probe `{probe}`")
    };
    eprintln!("sandgen worker probe {probe}: {outcome}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::output::GuestStream;

    /// Every write, with the thread that made it.
    type Writes = Arc<Mutex<Vec<(std::thread::ThreadId, Vec<u8>)>>>;

    struct Recorder(Writes);

    impl Write for Recorder {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut writes = self.0.lock().unwrap();
            writes.push((std::thread::current().id(), bytes.to_vec()));
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A worker process writes each output line to its caller itself, on
    /// the guest's thread, before the guest goes on: a line can then never
    /// reach the caller after an item the guest yields later (end to end:
    /// `sandbox::output_lines_and_items_keep_their_order`, which sees an
    /// overtaking only when the scheduler makes one).
    #[test]
    fn output_lines_are_written_on_the_guests_thread_before_it_goes_on() {
        let writes = Writes::default();
        let out: Out = Arc::new(Mutex::new(BufWriter::new(Box::new(Recorder(
            writes.clone(),
        )))));
        let handler = output_handler(&out);
        let me = std::thread::current().id();
        for i in 0..100 {
            let text = format!("produced {i}");
            handler(&OutputLine {
                plugin: "p",
                generator: "g",
                worker: 0,
                stream: GuestStream::Stdout,
                text: &text,
                bytes: text.as_bytes(),
            });
            let writes = writes.lock().unwrap();
            let written: Vec<u8> = writes.iter().flat_map(|(_, b)| b.clone()).collect();
            assert!(
                written.windows(text.len()).any(|w| w == text.as_bytes()),
                "line {i} was not written when the handler returned"
            );
            assert!(
                writes.iter().all(|(thread, _)| *thread == me),
                "a line was written from another thread"
            );
        }
    }
}
