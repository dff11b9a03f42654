//! Compiling a plugin, bounded: wasmtime's engine settings (one place, so
//! that a compilation made anywhere fits the engines that load it), and a
//! compilation in a child process under a deadline and an address-space
//! limit, so that a component made to be slow or large to compile cannot
//! hold or exhaust the caller.
//!
//! The child is the worker program (the `sandgen` binary, or a program that
//! calls [`run_worker_if_requested`](crate::run_worker_if_requested)) run as
//! `PROGRAM __sandgen-compile FUEL MEMORY TIMEOUT_MS CALLER_PID`, in a
//! process group of its own: it reads the component on stdin and writes on
//! stdout a header (a magic with the protocol version, and the SHA-256 of
//! the component it read), then the serialized compilation. The caller
//! checks the header before it deserializes anything.
//!
//! The child never outlives its caller, nor its bounds, whatever happens to
//! the caller (Ctrl-C, `kill -9`, a stopped process): it closes every
//! descriptor it inherited beyond its pipes, dies with its caller (a
//! parent-death signal, checked against the caller's pid), keeps its own
//! deadline (it exits when the load timeout has passed) and its own CPU
//! limit (`RLIMIT_CPU`: the timeout's seconds times its threads), and it
//! compiles the untrusted component confined as a worker process is
//! (no-new-privs, no capabilities, Landlock with no directory, the seccomp
//! allow-list).

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use crate::error::{Error, ErrorKind};
use crate::program::WorkerProgram;

/// The exit code of a compiling child that ran out of its memory.
const OUT_OF_MEMORY: i32 = 4;
/// The exit code of a compiling child for a component that does not
/// compile (its message on stderr).
const DOES_NOT_COMPILE: i32 = 3;
/// The exit code of a compiling child that went past its own deadline.
const TIMED_OUT: i32 = 5;
/// What a compiling child's output starts with (then the SHA-256 of its
/// input): this protocol, version 1.
const MAGIC: &[u8; 16] = b"sandgen-compile1";

/// The first argument that makes a program a compiling child.
pub(crate) const COMPILE_ARG: &str = "__sandgen-compile";

/// The default deadline for compiling one plugin.
pub const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// The default address space for compiling one plugin: 4 GiB.
pub const DEFAULT_LOAD_MEMORY: u64 = 4 << 30;

/// The bounds on compiling one plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LoadLimits {
    pub(crate) timeout: Duration,
    pub(crate) memory: u64,
}

impl Default for LoadLimits {
    fn default() -> Self {
        LoadLimits {
            timeout: DEFAULT_LOAD_TIMEOUT,
            memory: DEFAULT_LOAD_MEMORY,
        }
    }
}

/// A wasmtime engine with sandgen's settings, with or without fuel
/// metering.
pub(crate) fn engine(fuel: bool) -> Result<wasmtime::Engine, Error> {
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    config.consume_fuel(fuel);
    // A profiling aid (BENCHMARKS.md): name JIT-compiled guest code for
    // `perf` in /tmp/perf-PID.map.
    if std::env::var_os("SANDGEN_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    wasmtime::Engine::new(&config).map_err(|e| {
        Error::new(
            ErrorKind::Load,
            format!("failed to set up the wasm engine: {e:#}"),
        )
    })
}

/// Compiles `bytes` in this process (no bounds).
pub(crate) fn in_process(
    engine: &wasmtime::Engine,
    origin: &str,
    bytes: &[u8],
) -> Result<Component, Error> {
    Component::new(engine, bytes).map_err(|e| {
        Error::new(
            ErrorKind::Load,
            format!("failed to compile plugin `{origin}`: {e:#}"),
        )
    })
}

/// Feeds a component's bytes, in chunks, to the sink it is given (the
/// compile cache's `Source::stream`): an error from the sink is passed on,
/// and a source that changed meanwhile fails after its last chunk.
pub(crate) type Feed<'a> =
    &'a (dyn Fn(&mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> Result<(), Error> + Sync);

/// Compiles the component that `feed` gives in a child process running
/// `program`, within `limits`; returns the serialized compilation. The
/// component is passed on in chunks: the caller never holds all of a
/// plugin file.
pub(crate) fn in_child(
    program: &WorkerProgram,
    fuel: bool,
    origin: &str,
    feed: Feed<'_>,
    limits: LoadLimits,
) -> Result<Vec<u8>, Error> {
    let died = |how: String| {
        Error::new(
            ErrorKind::Load,
            format!("failed to compile plugin `{origin}`: the compiling process {how}"),
        )
    };
    let mut command = program.command();
    // A process group of its own: a deadline kills all of it, should the
    // program hand the work to a child of its own.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        // Few malloc arenas: each reserves address space, which the memory
        // bound counts, and a compiler thread per core would take one each.
        .env("MALLOC_ARENA_MAX", "2")
        .arg(COMPILE_ARG)
        .arg(if fuel { "fuel" } else { "plain" })
        .arg(limits.memory.to_string())
        .arg(limits.timeout.as_micros().div_ceil(1000).to_string())
        .arg(std::process::id().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            died(format!(
                "could not start (`{}`: {e})",
                program.program.display()
            ))
        })?;
    let (Some(stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(died("has no pipes".into()));
    };
    let (done_tx, done) = crossbeam_channel::bounded(1);
    std::thread::scope(|scope| {
        let sent = scope.spawn(move || send(feed, stdin));
        let err = scope.spawn(move || {
            let mut text = Vec::new();
            let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut text);
            text
        });
        scope.spawn(move || {
            let mut compiled = Vec::new();
            let read = stdout.read_to_end(&mut compiled).map(|_| compiled);
            let _ = done_tx.send(read);
        });
        let result = match done.recv_timeout(limits.timeout) {
            Ok(read) => {
                let status = child.wait();
                (read, status)
            }
            Err(_) => {
                kill_group(&mut child);
                let _ = child.wait();
                return Err(Error::new(
                    ErrorKind::LoadLimit,
                    format!(
                        "compiling plugin `{origin}` took longer than its load timeout of {:?}; \
                         raise it with `--load-timeout SECONDS` (`EngineBuilder::load_timeout`)",
                        limits.timeout
                    ),
                ));
            }
        };
        let err = err.join().unwrap_or_default();
        let (sent, closed) = sent.join().unwrap_or_else(|_| {
            let failed = "failed to pass the plugin to the compiling process";
            (Err(Error::new(ErrorKind::Load, failed.to_owned())), false)
        });
        let compiled = outcome(
            program,
            origin,
            sent.as_ref().ok(),
            limits,
            result,
            &String::from_utf8_lossy(&err),
        );
        if closed {
            // The child stopped reading: it failed, and says why.
            return compiled;
        }
        // A source that changed while it was sent fails the compilation.
        sent.and(compiled)
    })
}

/// Sends the component that `feed` gives to a compiling child: its SHA-256,
/// or why it could not all be sent, and whether the child stopped reading
/// (then it failed, and its outcome says why).
fn send(feed: Feed<'_>, mut stdin: impl Write) -> (Result<[u8; 32], Error>, bool) {
    let mut hasher = Sha256::new();
    let mut closed = false;
    let fed = feed(&mut |chunk| {
        hasher.update(chunk);
        stdin.write_all(chunk).inspect_err(|_| closed = true)
    });
    (fed.map(|()| <[u8; 32]>::from(hasher.finalize())), closed)
}

/// What a compiling child's run gave: its output and how it ended, with
/// what it said on stderr.
fn outcome(
    program: &WorkerProgram,
    origin: &str,
    sent: Option<&[u8; 32]>,
    limits: LoadLimits,
    result: (
        std::io::Result<Vec<u8>>,
        std::io::Result<std::process::ExitStatus>,
    ),
    said: &str,
) -> Result<Vec<u8>, Error> {
    let died = |how: String| {
        Error::new(
            ErrorKind::Load,
            format!("failed to compile plugin `{origin}`: the compiling process {how}"),
        )
    };
    let said = said.trim();
    match result {
        (Ok(output), Ok(status)) if status.success() => {
            checked(&output, sent).map(<[u8]>::to_vec).ok_or_else(|| {
                died(format!(
                    "wrote no compilation of this component: is `{}` a sandgen program of this version?",
                    program.program.display()
                ))
            })
        }
        (_, Ok(status)) if timed_out(status) => Err(Error::new(
            ErrorKind::LoadLimit,
            format!(
                "compiling plugin `{origin}` took longer than its load timeout of {:?}; \
                 raise it with `--load-timeout SECONDS` (`EngineBuilder::load_timeout`)",
                limits.timeout
            ),
        )),
        (_, Ok(status)) if status.code() == Some(DOES_NOT_COMPILE) => Err(Error::new(
            ErrorKind::Load,
            said.replacen("`(stdin)`", &format!("`{origin}`"), 1),
        )),
        (_, Ok(status)) if out_of_memory(status, said) => Err(Error::new(
            ErrorKind::LoadLimit,
            format!(
                "compiling plugin `{origin}` needed more than its load memory of {} MiB; \
                 raise it with `--load-memory MIB` (`EngineBuilder::load_memory`)",
                limits.memory >> 20
            ),
        )),
        (_, Ok(status)) => Err(died(format!("ended ({status}): {said}"))),
        (_, Err(e)) => Err(died(format!("could not be waited for ({e})"))),
    }
}

/// A compilation: made here, or serialized by a compiling child.
pub(crate) enum Artifact {
    Component(Component),
    Serialized(Vec<u8>),
}

impl Artifact {
    /// The component, and its serialized form when there is one already.
    pub(crate) fn into_component(
        self,
        engine: &wasmtime::Engine,
    ) -> Result<(Component, Option<Vec<u8>>), Error> {
        match self {
            Artifact::Component(component) => Ok((component, None)),
            Artifact::Serialized(bytes) => {
                // SAFETY: these bytes are what `Component::serialize` wrote
                // in a child process running this host's code on the very
                // component being loaded; wasmtime checks that they fit this
                // engine's settings.
                let component = unsafe { Component::deserialize(engine, &bytes) }.map_err(|e| {
                    Error::new(
                        ErrorKind::Load,
                        format!("cannot load a compilation made by the compiling process: {e:#}"),
                    )
                })?;
                Ok((component, Some(bytes)))
            }
        }
    }
}

/// The compilation in a child's output, when its header says it is one of
/// the input whose SHA-256 is `sent`, made by this protocol.
fn checked<'a>(output: &'a [u8], sent: Option<&[u8; 32]>) -> Option<&'a [u8]> {
    let rest = output.strip_prefix(MAGIC.as_slice())?;
    let (digest, compiled) = rest.split_at_checked(32)?;
    (digest == sent?.as_slice()).then_some(compiled)
}

/// Kills a compiling child and its process group.
fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
}

/// Whether a compiling child went past its own deadline, or used up the
/// CPU time its deadline allows (SIGXCPU, or SIGKILL at the hard limit, which
/// the caller does not send otherwise before its own deadline).
fn timed_out(status: std::process::ExitStatus) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        status.code() == Some(TIMED_OUT) || status.signal() == Some(libc::SIGXCPU)
    }
    #[cfg(not(unix))]
    {
        status.code() == Some(TIMED_OUT)
    }
}

/// Whether a compiling child ran out of its memory: it says so with its exit
/// code, or an allocation failed and aborted it (Rust's handler says so on
/// stderr).
fn out_of_memory(status: std::process::ExitStatus, stderr: &str) -> bool {
    status.code() == Some(OUT_OF_MEMORY)
        || stderr
            .lines()
            .any(|line| line.starts_with("memory allocation of "))
}

/// Whether a compilation failed for want of memory: an out-of-memory I/O
/// error (ENOMEM from the system) anywhere in its chain.
fn for_want_of_memory(error: &wasmtime::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::OutOfMemory)
    })
}

/// Confines a compiling child as a worker process is (the entry point
/// passes it in, from the workers' layer).
pub(crate) type Confine<'a> = &'a dyn Fn() -> Result<(), Error>;

/// The compiling child (which has closed the descriptors it inherited):
/// `FUEL MEMORY TIMEOUT_MS CALLER_PID` arguments, the component on stdin,
/// the header and the serialized compilation on stdout. Exit code
/// [`DOES_NOT_COMPILE`]: the component does not compile (the message on
/// stderr); [`OUT_OF_MEMORY`]: it needed more memory than it may have.
pub(crate) fn child_main(args: &[std::ffi::OsString], confine: Confine<'_>) -> i32 {
    let number = |at: usize| -> Option<u64> { args.get(at)?.to_str()?.parse().ok() };
    let fuel = args.first().is_some_and(|a| a == "fuel");
    let memory = number(1);
    if let Err(code) = bound_self(number(2).map(Duration::from_millis), number(3)) {
        return code;
    }
    #[cfg(target_os = "linux")]
    if let Some(memory) = memory {
        // The address space (the limit every kernel and sandbox enforces;
        // the data-segment limit is not enforced everywhere), within the
        // hard limit this process inherited. Reservations count too, so
        // the caller limits malloc's per-thread arenas (MALLOC_ARENA_MAX).
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let hard = getrlimit(Resource::As).maximum;
        let memory = hard.map_or(memory, |hard| memory.min(hard));
        let limit = Rlimit {
            current: Some(memory),
            maximum: hard,
        };
        if let Err(e) = setrlimit(Resource::As, limit) {
            eprintln!("sandgen compile: cannot limit its memory: {e}");
            return 2;
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = memory;
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        eprintln!("sandgen compile: cannot read the component: {e}");
        return if e.kind() == std::io::ErrorKind::OutOfMemory {
            OUT_OF_MEMORY
        } else {
            2
        };
    }
    let engine = match engine(fuel) {
        Ok(engine) => engine,
        Err(error) => {
            eprintln!("{error}");
            return 2;
        }
    };
    // Nothing of the untrusted component has been parsed yet.
    if let Err(error) = confine() {
        eprintln!("sandgen compile: {error}");
        return 2;
    }
    let compiled = match Component::new(&engine, &bytes).and_then(|c| c.serialize()) {
        Ok(compiled) => compiled,
        Err(error) => {
            eprintln!("failed to compile plugin `(stdin)`: {error:#}");
            return if for_want_of_memory(&error) {
                OUT_OF_MEMORY
            } else {
                DOES_NOT_COMPILE
            };
        }
    };
    let mut out = std::io::stdout().lock();
    let written = out
        .write_all(MAGIC)
        .and_then(|()| out.write_all(&Sha256::digest(&bytes)))
        .and_then(|()| out.write_all(&compiled))
        .and_then(|()| out.flush());
    if written.is_ok() { 0 } else { 2 }
}

/// A compiling child's own bounds, whatever becomes of its caller: it dies
/// with `caller` (its pid), exits with [`TIMED_OUT`] once `timeout` has
/// passed, and may use at most the CPU time that `timeout` allows its
/// threads. `Err(code)`: exit at once with it.
fn bound_self(timeout: Option<Duration>, caller: Option<u64>) -> Result<(), i32> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl and getppid take and return plain values.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                eprintln!(
                    "sandgen compile: cannot ask to die with its caller: {}",
                    std::io::Error::last_os_error()
                );
                return Err(2);
            }
            // The caller died before the signal was asked for.
            if caller.is_some_and(|caller| u64::try_from(libc::getppid()).ok() != Some(caller)) {
                return Err(2);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = caller;
    let Some(timeout) = timeout.filter(|t| t.as_secs() < 1 << 32) else {
        return Ok(());
    };
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let seconds = timeout.as_secs_f64().ceil() as u64 * threads + 1;
        let hard = getrlimit(Resource::Cpu).maximum;
        let soft = hard.map_or(seconds, |hard| seconds.min(hard));
        let limit = Rlimit {
            current: Some(soft),
            maximum: Some(hard.map_or(soft + 1, |hard| (soft + 1).min(hard))),
        };
        if let Err(e) = setrlimit(Resource::Cpu, limit) {
            eprintln!("sandgen compile: cannot limit its CPU time: {e}");
            return Err(2);
        }
    }
    std::thread::Builder::new()
        .name("sandgen-compile-deadline".into())
        .spawn(move || {
            std::thread::sleep(timeout);
            eprintln!("sandgen compile: the load timeout of {timeout:?} has passed");
            std::process::exit(TIMED_OUT);
        })
        .map(drop)
        .map_err(|e| {
            eprintln!("sandgen compile: cannot keep its deadline: {e}");
            2
        })
}
