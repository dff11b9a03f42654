//! Compiling a plugin, bounded: wasmtime's engine settings (one place, so
//! that a compilation made anywhere fits the engines that load it), and a
//! compilation in a child process under a deadline and an address-space
//! limit, so that a component made to be slow or large to compile cannot
//! hold or exhaust the caller.
//!
//! The child is the worker program (the `sandgen` binary, or a program that
//! calls [`run_worker_if_requested`](crate::run_worker_if_requested)) run as
//! `PROGRAM __sandgen-compile FUEL`: it reads the component on stdin and
//! writes the serialized compilation on stdout.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use wasmtime::component::Component;

use crate::error::{Error, ErrorKind};

/// The exit code of a compiling child that ran out of its address space.
const OUT_OF_MEMORY: i32 = 4;

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

/// Compiles `bytes` in a child process running `program`, within `limits`;
/// returns the serialized compilation.
pub(crate) fn in_child(
    program: &Path,
    fuel: bool,
    origin: &str,
    bytes: &[u8],
    limits: LoadLimits,
) -> Result<Vec<u8>, Error> {
    let died = |how: String| {
        Error::new(
            ErrorKind::Load,
            format!("failed to compile plugin `{origin}`: the compiling process {how}"),
        )
    };
    let mut child = Command::new(program)
        .arg(COMPILE_ARG)
        .arg(if fuel { "fuel" } else { "plain" })
        .arg(limits.memory.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| died(format!("could not start (`{}`: {e})", program.display())))?;
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(died("has no pipes".into()));
    };
    let (done_tx, done) = crossbeam_channel::bounded(1);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let _ = stdin.write_all(bytes);
        });
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
                let _ = child.kill();
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
        let said = String::from_utf8_lossy(&err);
        let said = said.trim();
        match result {
            (Ok(compiled), Ok(status)) if status.success() => Ok(compiled),
            (_, Ok(status)) if out_of_memory(status, said) => Err(Error::new(
                ErrorKind::LoadLimit,
                format!(
                    "compiling plugin `{origin}` needed more than its load memory of {} MiB; \
                     raise it with `--load-memory MIB` (`EngineBuilder::load_memory`)",
                    limits.memory >> 20
                ),
            )),
            (_, Ok(status)) if status.code() == Some(3) => Err(Error::new(
                ErrorKind::Load,
                said.replacen("`(stdin)`", &format!("`{origin}`"), 1),
            )),
            (_, Ok(status)) => Err(died(format!("ended ({status}): {said}"))),
            (_, Err(e)) => Err(died(format!("could not be waited for ({e})"))),
        }
    })
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

/// Whether a compiling child ran out of its address space: it says so with
/// its exit code, or an allocation failure aborted it (Rust's handler says
/// so on stderr).
fn out_of_memory(status: std::process::ExitStatus, stderr: &str) -> bool {
    if status.code() == Some(OUT_OF_MEMORY) {
        return true;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if status.signal() == Some(6) {
            return true;
        }
    }
    !status.success() && stderr.contains("memory allocation")
}

/// The compiling child: `FUEL MEMORY` arguments, the component on stdin,
/// the serialized compilation on stdout. Exit code 3: the component does
/// not compile (the message on stderr).
pub(crate) fn child_main(args: &[std::ffi::OsString]) -> i32 {
    let fuel = args.first().is_some_and(|a| a == "fuel");
    let memory: Option<u64> = args.get(1).and_then(|a| a.to_str()?.parse().ok());
    #[cfg(target_os = "linux")]
    if let Some(memory) = memory {
        use rustix::process::{Resource, Rlimit, setrlimit};
        let limit = Rlimit {
            current: Some(memory),
            maximum: Some(memory),
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
    let compiled = engine(fuel)
        .and_then(|engine| in_process(&engine, "(stdin)", &bytes))
        .and_then(|component| {
            component.serialize().map_err(|e| {
                Error::new(
                    ErrorKind::Load,
                    format!("cannot serialize a compilation: {e:#}"),
                )
            })
        });
    match compiled {
        Ok(compiled) => match std::io::stdout().lock().write_all(&compiled) {
            Ok(()) => 0,
            Err(_) => 2,
        },
        Err(error) => {
            eprintln!("{error}");
            let text = error.to_string();
            if text.contains("out of memory") || text.contains("Cannot allocate memory") {
                OUT_OF_MEMORY
            } else {
                3
            }
        }
    }
}
