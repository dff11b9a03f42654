//! The wasmtime side of loading a plugin: one wasmtime engine and linker per
//! metering (with or without fuel), each set up on first use and shared by
//! every [`Engine`](crate::Engine) of the process; components compiled (or
//! loaded from the compile cache) and linked into [`Linked`]s, whose
//! `InstancePre` every worker and iterable of the plugin instantiates; and
//! the epoch clock that lets busy guests be interrupted.
//!
//! [`EngineCore`] is what an [`Engine`](crate::Engine) is; [`PluginCore`] is
//! what a [`Plugin`](crate::Plugin) is. Both are shared by every worker of the
//! process.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};

use crate::bindings;
use crate::cache::{self, Cache, Entry, Source};
use crate::clock::Clock;
use crate::compile::{self, Artifact, LoadLimits};
use crate::error::{Error, ErrorKind};
use crate::guest::Linked;
use crate::guest::state::HostState;
use crate::program::WorkerProgram;
use crate::worker::task::Task;
use crate::worker::{Isolation, Placement, ProcessSpec, process};

/// A wasmtime engine with sandgen's settings, and its linker.
struct Backend {
    engine: wasmtime::Engine,
    linker: Linker<HostState>,
}

impl Backend {
    fn new(fuel: bool) -> Result<Backend, Error> {
        let engine = compile::engine(fuel)?;
        let mut linker = Linker::new(&engine);
        crate::imports::add_to_linker(&mut linker).map_err(|e| {
            Error::new(
                ErrorKind::Load,
                format!("failed to link the host's imports: {e:#}"),
            )
        })?;
        Ok(Backend { engine, linker })
    }

    /// Links a compiled component: the imports it needs must be ones the
    /// host provides, and it must export the generator interface.
    fn link(
        &self,
        origin: &str,
        component: &Component,
    ) -> Result<bindings::PluginPre<HostState>, Error> {
        let pre = self.linker.instantiate_pre(component).map_err(|e| {
            let cause = format!("{e:#}");
            // componentize-js imports wasi:http unless told not to.
            let hint = if cause.contains("wasi:http/") {
                "; there is no network, so build without wasi:http (componentize-js: `-d http -d fetch-event`)"
            } else {
                ""
            };
            Error::new(
                ErrorKind::Incompatible,
                format!("plugin `{origin}` needs imports that sandgen does not provide (only WASI 0.2 is): {cause}{hint}"),
            )
        })?;
        bindings::PluginPre::new(pre).map_err(|e| {
            Error::new(
                ErrorKind::Incompatible,
                format!(
                    "`{origin}` is not a sandgen plugin: it does not export `sandgen:generator/generator@0.1.0` \
                     as wit/generator.wit defines it ({e:#})"
                ),
            )
        })
    }
}

/// The backends, each set up on first use (a worker process needs one).
#[derive(Default)]
struct Backends {
    /// For guests without a fuel budget.
    plain: OnceLock<Result<Backend, Error>>,
    /// For guests with a fuel budget: fuel metering is compiled into the
    /// code, so such plugins are compiled a second time, on first use.
    fueled: OnceLock<Result<Backend, Error>>,
}

impl Backends {
    fn get(&self, fuel: bool) -> Result<&Backend, Error> {
        let slot = if fuel { &self.fueled } else { &self.plain };
        slot.get_or_init(|| Backend::new(fuel))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Advances the epoch of every engine set up so far.
    fn tick(&self) {
        for slot in [&self.plain, &self.fueled] {
            if let Some(Ok(backend)) = slot.get() {
                backend.engine.increment_epoch();
            }
        }
    }
}

/// The backends and the epoch clock of this process: set up once (each
/// backend on first use) and shared by every engine, so that every plugin
/// loaded in the process uses the same wasmtime engines and linkers, and
/// one thread ticks their epochs.
fn process_backends() -> Result<(Arc<Backends>, Clock), Error> {
    static PROCESS: OnceLock<Result<(Arc<Backends>, Clock), Error>> = OnceLock::new();
    PROCESS
        .get_or_init(|| {
            let backends = Arc::new(Backends::default());
            let ticking = backends.clone();
            let clock = Clock::start(move || ticking.tick()).map_err(|e| {
                Error::new(
                    ErrorKind::Load,
                    format!("failed to start the epoch thread: {e}"),
                )
            })?;
            Ok((backends, clock))
        })
        .clone()
}

/// Everything an engine holds: the compile cache, the worker program, and
/// the process's backends and epoch clock.
pub(crate) struct EngineCore {
    cache: Option<Cache>,
    worker_program: Option<WorkerProgram>,
    load: LoadLimits,
    /// Refuse worker processes that cannot be fully confined.
    require_confinement: bool,
    backends: Arc<Backends>,
    clock: Clock,
}

impl EngineCore {
    pub(crate) fn new(
        cache: Option<PathBuf>,
        worker_program: Option<WorkerProgram>,
        load: LoadLimits,
    ) -> Result<EngineCore, Error> {
        let (backends, clock) = process_backends()?;
        Ok(EngineCore {
            cache: cache.map(Cache::new),
            worker_program,
            load,
            require_confinement: false,
            backends,
            clock,
        })
    }

    pub(crate) fn requiring_confinement(mut self, required: bool) -> EngineCore {
        self.require_confinement = required;
        self
    }

    /// The program to compile in, within the load limits: the worker
    /// program when one was set, or this program when it is one (it called
    /// `run_worker_if_requested`); `None` compiles in this process, without
    /// bounds.
    fn compiler(&self) -> Option<WorkerProgram> {
        self.worker_program.clone().or_else(|| {
            crate::program::is_worker_program()
                .then(|| std::env::current_exe().ok())
                .flatten()
                .map(WorkerProgram::plain)
        })
    }

    /// The most memory compiling a plugin may take, which also bounds the
    /// size of a plugin file.
    pub(crate) fn load_memory(&self) -> u64 {
        self.load.memory
    }

    /// Whether plugin files are found through the compile cache (and read
    /// only when they must be compiled).
    pub(crate) fn has_cache(&self) -> bool {
        self.cache.is_some()
    }

    /// Checks (by its first bytes, `head`), compiles (or loads from the
    /// cache) and links a component.
    pub(crate) fn load(
        self: &Arc<Self>,
        name: &str,
        origin: &str,
        head: &[u8],
        source: Source,
    ) -> Result<PluginCore, Error> {
        check_header(origin, head)?;
        let loaded = PluginCore {
            engine: self.clone(),
            name: name.into(),
            origin: origin.to_owned(),
            source,
            plain: OnceLock::new(),
            fueled: OnceLock::new(),
            compiling: Mutex::new(Duration::ZERO),
        };
        // Compile now, so that load errors come from loading.
        loaded.prepared(false)?;
        Ok(loaded)
    }

    /// Loads a compiled component that a sandgen host wrote to its cache (in
    /// a worker process, which never compiles).
    pub(crate) fn load_compiled(
        &self,
        name: &str,
        entry: &Entry,
        fuel: bool,
    ) -> Result<Linked, Error> {
        let backend = self.backends.get(fuel)?;
        let component = cache::load(&backend.engine, entry)?;
        Ok(Linked {
            name: name.into(),
            pre: backend.link(name, &component)?,
            engine: backend.engine.clone(),
            clock: self.clock.clone(),
        })
    }
}

fn check_header(origin: &str, bytes: &[u8]) -> Result<(), Error> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(Error::new(
            ErrorKind::Load,
            format!(
                "`{origin}` is not WebAssembly (no `\\0asm` header); a plugin is a component, \
                 e.g. built with `cargo build --target wasm32-wasip2`"
            ),
        ));
    }
    if bytes[6..8] == [0, 0] {
        return Err(Error::new(
            ErrorKind::Load,
            format!(
                "`{origin}` is a core WebAssembly module, not a component; build the plugin for \
                 `wasm32-wasip2` or wrap the module with `wasm-tools component new`"
            ),
        ));
    }
    Ok(())
}

/// A component linked for one metering, and its compiled file in the cache.
struct Prepared {
    linked: Linked,
    /// The compiled component in the cache, for worker processes.
    entry: Option<Entry>,
}

/// A loaded plugin: its bytes, and its compilations, each made on first use.
pub(crate) struct PluginCore {
    engine: Arc<EngineCore>,
    name: Arc<str>,
    origin: String,
    /// The component (or its file), to compile it for the fuel engine on
    /// demand.
    source: Source,
    plain: OnceLock<Result<Prepared, Error>>,
    fueled: OnceLock<Result<Prepared, Error>>,
    /// The time spent compiling it in this process, so far (a compile-cache
    /// hit costs none).
    compiling: Mutex<Duration>,
}

impl PluginCore {
    /// The plugin's name, for messages and output prefixes.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The time spent compiling the plugin in this process; zero when every
    /// compiled form it needed came from the compile cache.
    pub(crate) fn compile_time(&self) -> Duration {
        *self.compiling.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The component linked for the engine with or without fuel metering.
    pub(crate) fn linked(&self, fuel: bool) -> Result<&Linked, Error> {
        Ok(&self.prepared(fuel)?.linked)
    }

    /// The compiled component's cache entry, for a worker process.
    pub(crate) fn compiled(&self, fuel: bool) -> Result<&Entry, Error> {
        self.prepared(fuel)?.entry.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Load,
                format!(
                    "plugin `{}` has no compiled file for a worker process: the compile cache is \
                     disabled or not writable (see `EngineBuilder::cache_dir`)",
                    self.origin
                ),
            )
        })
    }

    /// The plugin's component, for what a position names it by
    /// ([`Source::content_id`]): held apart from the plugin, so that an
    /// iterable keeps neither the plugin nor its engine alive.
    pub(crate) fn source(&self) -> Source {
        self.source.clone()
    }

    /// Whether worker processes must be fully confined.
    pub(crate) fn require_confinement(&self) -> bool {
        self.engine.require_confinement
    }

    /// How long loading (and starting a worker of) this plugin may take.
    pub(crate) fn load_timeout(&self) -> std::time::Duration {
        self.engine.load.timeout
    }

    /// The program to start worker processes with.
    pub(crate) fn worker_program(&self) -> Result<WorkerProgram, Error> {
        match &self.engine.worker_program {
            Some(program) => Ok(program.clone()),
            None => std::env::current_exe().map(WorkerProgram::plain).map_err(|e| {
                Error::new(
                    ErrorKind::WorkerDied,
                    format!("cannot find this program to start a worker process: {e}; set `EngineBuilder::worker_program`"),
                )
            }),
        }
    }

    /// Where a new worker of this plugin running `task` runs, and what it
    /// starts from: the linked component for a worker thread; the compiled
    /// file and the worker program for a worker process, once `task` is
    /// known to fit one (before anything is compiled for it).
    pub(crate) fn placement(&self, isolation: Isolation, task: &Task) -> Result<Placement, Error> {
        let fuel = task.limits.fuel.is_some();
        match isolation {
            Isolation::Thread => Ok(Placement::Thread(self.linked(fuel)?.clone())),
            Isolation::Process => {
                process::check_start(task, self.require_confinement())?;
                Ok(Placement::Process(ProcessSpec {
                    program: self.worker_program()?,
                    compiled: self.compiled(fuel)?.clone(),
                    plugin: self.name.clone(),
                }))
            }
        }
    }

    fn prepared(&self, fuel: bool) -> Result<&Prepared, Error> {
        let slot = if fuel { &self.fueled } else { &self.plain };
        slot.get_or_init(|| {
            let backend = self.engine.backends.get(fuel)?;
            let compile = |source: &Source| {
                let started = Instant::now();
                let artifact = match self.engine.compiler() {
                    Some(program) => {
                        let feed = |sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>| {
                            source.stream(sink)
                        };
                        compile::in_child(&program, fuel, &self.origin, &feed, self.engine.load)
                            .map(Artifact::Serialized)
                    }
                    None => compile::in_process(&backend.engine, &self.origin, &source.bytes()?)
                        .map(Artifact::Component),
                };
                *self.compiling.lock().unwrap_or_else(|e| e.into_inner()) += started.elapsed();
                artifact
            };
            let (component, entry) = match &self.engine.cache {
                Some(cache) => {
                    let compiled = cache.load_or_compile(&backend.engine, &self.source, compile)?;
                    (compiled.component, compiled.entry)
                }
                None => (
                    compile(&self.source)?.into_component(&backend.engine)?.0,
                    None,
                ),
            };
            Ok(Prepared {
                linked: Linked {
                    name: self.name.clone(),
                    pre: backend.link(&self.origin, &component)?,
                    engine: backend.engine.clone(),
                    clock: self.engine.clock.clone(),
                },
                entry,
            })
        })
        .as_ref()
        .map_err(Clone::clone)
    }
}
