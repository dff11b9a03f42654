//! The public entry point: an [`Engine`] compiles plugins (through the
//! compile cache) and is shared by everything loaded from it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::compile::LoadLimits;
use crate::error::{Error, ErrorKind};
use crate::loader::EngineCore;
use crate::plugin::Plugin;
use crate::program::WorkerProgram;
use crate::text::{ECHO, cut_text};

/// Compiles plugins and runs their workers; cheap to clone.
///
/// An engine holds the compile cache, the worker program and the load
/// limits. The wasmtime engines, linkers and the clock thread that lets busy
/// guests be interrupted are set up once per process and shared by every
/// engine (the clock ticks only while guests run), so engines with other
/// options cost little; plugins loaded from one engine share it.
///
/// ```no_run
/// # fn main() -> Result<(), sandgen::Error> {
/// let engine = sandgen::Engine::new()?;
/// let plugin = engine.load("plugin.wasm")?;
/// for info in plugin.generators()? {
///     println!("{}\t{}", info.name, info.description);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Engine {
    core: Arc<EngineCore>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    /// Creates an engine with sandgen's settings and the default compile
    /// cache; see [`EngineBuilder`] for the options.
    ///
    /// # Errors
    ///
    /// When wasmtime cannot be set up on this machine.
    pub fn new() -> Result<Engine, Error> {
        Engine::builder().build()
    }

    /// Starts configuring an engine.
    pub fn builder() -> EngineBuilder {
        EngineBuilder {
            cache: crate::cache::default_dir(),
            worker_program: None,
            require_confinement: false,
            load: LoadLimits::default(),
        }
    }

    /// Loads a plugin from a `.wasm` component file.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Load`] when the file cannot be read, is not WebAssembly,
    /// is a core module rather than a component, or does not compile;
    /// [`ErrorKind::Incompatible`] when it is not a sandgen plugin.
    pub fn load(&self, path: impl AsRef<Path>) -> Result<Plugin, Error> {
        let path = path.as_ref();
        let failed = |e: std::io::Error| {
            Error::new(
                ErrorKind::Load,
                format!(
                    "failed to read plugin `{}`: {e}",
                    cut_text(&path.display().to_string(), ECHO)
                ),
            )
        };
        let mut file = std::fs::File::open(path).map_err(failed)?;
        let meta = file.metadata().map_err(failed)?;
        // Never more than the load memory: a component larger than that
        // cannot be compiled within it, and the caller reads no more.
        let memory = self.core.load_memory();
        let too_large = |len: u64| {
            Error::new(
                ErrorKind::LoadLimit,
                format!(
                    "plugin `{}` is {} MiB, more than its load memory of {} MiB can compile; \
                     raise it with `--load-memory MIB` (`EngineBuilder::load_memory`)",
                    cut_text(&path.display().to_string(), ECHO),
                    len.div_ceil(1 << 20),
                    memory >> 20
                ),
            )
        };
        if meta.is_file() && meta.len() > memory {
            return Err(too_large(meta.len()));
        }
        // With a compile cache, a regular file is read in chunks for its
        // fingerprint, never held whole, and found by it; it is kept open,
        // so that a compilation needed later (for fuel metering) reads this
        // very file, and must find the same contents.
        let (head, source) = if meta.is_file() && self.core.has_cache() {
            let mut head = Vec::with_capacity(8);
            std::io::Read::read_to_end(&mut std::io::Read::take(&mut file, 8), &mut head)
                .map_err(failed)?;
            let fingerprint = crate::cache::Fingerprint::of(&file).map_err(failed)?;
            if fingerprint.len > memory {
                return Err(too_large(fingerprint.len));
            }
            let source = crate::cache::Source::File {
                file: Arc::new(file),
                path: path.to_owned(),
                fingerprint,
            };
            (head, source)
        } else {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(&mut file, memory + 1), &mut bytes)
                .map_err(failed)?;
            if bytes.len() as u64 > memory {
                return Err(too_large(bytes.len() as u64));
            }
            let bytes: Arc<[u8]> = bytes.into();
            (
                bytes[..bytes.len().min(8)].to_vec(),
                crate::cache::Source::Bytes(bytes),
            )
        };
        let name = path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        let core = self.core.load(
            &name,
            &cut_text(&path.display().to_string(), ECHO),
            &head,
            source,
        )?;
        Ok(Plugin::new(core))
    }

    /// Loads a plugin from the bytes of a component; `name` is used in
    /// messages and in the prefix of the guest's output.
    ///
    /// # Errors
    ///
    /// As for [`Engine::load`].
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<Plugin, Error> {
        let source = crate::cache::Source::Bytes(bytes.into());
        Ok(Plugin::new(self.core.load(name, name, bytes, source)?))
    }
}

/// Configures an [`Engine`].
///
/// | option | default |
/// |---|---|
/// | [`cache_dir`](Self::cache_dir) | `$SANDGEN_CACHE_DIR`, else `$XDG_CACHE_HOME/sandgen`, else `~/.cache/sandgen`, else none (plugins compile in memory) |
/// | [`worker_program`](Self::worker_program) | this process's own executable, which must then call [`run_worker_if_requested`](crate::run_worker_if_requested) first thing in `main` |
/// | [`load_timeout`](Self::load_timeout) | 120 s ([`DEFAULT_LOAD_TIMEOUT`](crate::DEFAULT_LOAD_TIMEOUT)) |
/// | [`load_memory`](Self::load_memory) | 4 GiB ([`DEFAULT_LOAD_MEMORY`](crate::DEFAULT_LOAD_MEMORY)) |
///
/// Loading a plugin that is not in the compile cache compiles it. Where a
/// worker program is known (set here, or this program called
/// [`run_worker_if_requested`](crate::run_worker_if_requested)), the
/// compilation runs in a child process within the load limits, so that a
/// component made to be slow or huge to compile cannot hold or exhaust the
/// caller; otherwise it runs in this process, without them.
///
/// ```no_run
/// # fn main() -> Result<(), sandgen::Error> {
/// let engine = sandgen::Engine::builder()
///     .cache_dir("/var/cache/my-loader")
///     .worker_program("/usr/local/bin/sandgen")
///     .build()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use = "an EngineBuilder does nothing until `build` is called"]
pub struct EngineBuilder {
    cache: Option<PathBuf>,
    worker_program: Option<WorkerProgram>,
    load: LoadLimits,
    require_confinement: bool,
}

impl EngineBuilder {
    /// Keeps compiled components in `dir` (created private to the user), so
    /// that only the first load of a plugin pays for compilation and worker
    /// processes never compile. A directory that is not the user's own, is
    /// writable by others or is a symbolic link is not used (one warning on
    /// stderr; plugins then compile in memory).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache = Some(dir.into());
        self
    }

    /// Compiles every plugin in memory on each load. Process isolation then
    /// cannot be used.
    pub fn no_cache(mut self) -> Self {
        self.cache = None;
        self
    }

    /// The program that runs worker processes ([`Isolation::Process`](crate::Isolation::Process)):
    /// the `sandgen` binary, or any program that calls
    /// [`run_worker_if_requested`](crate::run_worker_if_requested) at the
    /// start of its `main`.
    pub fn worker_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.worker_program = Some(WorkerProgram {
            program: program.into(),
            args: Vec::new(),
        });
        self
    }

    /// As [`worker_program`](Self::worker_program), for a program that
    /// needs arguments of its own before sandgen's (an interpreter and the
    /// script that runs the worker). The program passes what follows them
    /// to [`run_worker_from_args`](crate::run_worker_from_args).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), sandgen::Error> {
    /// let engine = sandgen::Engine::builder()
    ///     .worker_command("/usr/bin/python3", ["-I", "-m", "sandgen._worker"])
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn worker_command(
        mut self,
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Self {
        self.worker_program = Some(WorkerProgram {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
        });
        self
    }

    /// How long compiling one plugin may take; past it, loading fails with
    /// [`ErrorKind::LoadLimit`]. Must be longer than zero.
    pub fn load_timeout(mut self, timeout: Duration) -> Self {
        self.load.timeout = timeout;
        self
    }

    /// How much memory (address space, in bytes) compiling one plugin may
    /// use; past it, loading fails with [`ErrorKind::LoadLimit`].
    pub fn load_memory(mut self, bytes: u64) -> Self {
        self.load.memory = bytes;
        self
    }

    /// Refuses to start worker processes on a kernel that cannot confine
    /// them fully (Landlock ABI 6 and seccomp; see
    /// [`Confinement`](crate::Confinement)) instead of warning once and
    /// running them with what it has. Thread workers are not affected.
    pub fn require_confinement(mut self, required: bool) -> Self {
        self.require_confinement = required;
        self
    }

    /// Creates the engine.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for a zero load timeout or load memory;
    /// [`ErrorKind::Load`] when wasmtime cannot be set up on this machine.
    pub fn build(self) -> Result<Engine, Error> {
        if self.load.timeout.is_zero() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "the load timeout must be longer than zero",
            ));
        }
        if self.load.memory == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "the load memory must be at least 1 byte",
            ));
        }
        Ok(Engine {
            core: Arc::new(
                EngineCore::new(self.cache, self.worker_program, self.load)?
                    .requiring_confinement(self.require_confinement),
            ),
        })
    }
}
