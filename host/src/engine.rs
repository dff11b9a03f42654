use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{Component, Linker};

use crate::bindings;
use crate::cache::Cache;
use crate::sandbox::HostState;
use crate::{Error, ErrorKind, IterableBuilder};

/// How often the engine's epoch advances while workers run: the granularity
/// at which a running guest notices an interrupt (teardown or timeout).
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How long listing a plugin's generators may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// Compiles plugins and runs their workers; cheap to clone.
///
/// One engine holds the compiler settings and a clock thread that lets busy
/// guests be interrupted; the clock runs only while workers are alive. Create
/// one per process and share it.
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
    inner: Arc<EngineInner>,
}

struct EngineInner {
    cache: Option<Cache>,
    worker_program: Option<PathBuf>,
    flavors: Arc<Flavors>,
    ticker: Ticker,
}

/// The engines, each set up on first use (a worker process needs one).
#[derive(Default)]
struct Flavors {
    /// For guests without a fuel budget.
    plain: OnceLock<Result<Flavor, Error>>,
    /// For guests with a fuel budget: fuel metering is compiled into the
    /// code, so such plugins are compiled a second time, on first use.
    fueled: OnceLock<Result<Flavor, Error>>,
}

impl Flavors {
    fn get(&self, fuel: bool) -> Result<&Flavor, Error> {
        let slot = if fuel { &self.fueled } else { &self.plain };
        slot.get_or_init(|| Flavor::new(fuel))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The engines set up so far.
    fn engines(&self) -> impl Iterator<Item = &wasmtime::Engine> {
        [&self.plain, &self.fueled]
            .into_iter()
            .filter_map(|slot| slot.get()?.as_ref().ok())
            .map(|flavor| &flavor.engine)
    }
}

/// A component compiled and linked for one flavor.
struct Prepared {
    pre: bindings::PluginPre<HostState>,
    /// The compiled component in the cache, for worker processes.
    file: Option<PathBuf>,
}

/// A wasmtime engine and its WASI linker.
struct Flavor {
    engine: wasmtime::Engine,
    linker: Linker<HostState>,
}

impl Flavor {
    fn new(fuel: bool) -> Result<Flavor, Error> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(fuel);
        // A profiling aid (BENCHMARKS.md): name JIT-compiled guest code for
        // `perf` in /tmp/perf-PID.map.
        if std::env::var_os("SANDGEN_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = wasmtime::Engine::new(&config).map_err(|e| {
            Error::new(
                ErrorKind::Load,
                format!("failed to set up the wasm engine: {e:#}"),
            )
        })?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| Error::new(ErrorKind::Load, format!("failed to link WASI: {e:#}")))?;
        Ok(Flavor { engine, linker })
    }

    /// Compiles (or loads from the cache) and links a component.
    fn prepare(
        &self,
        origin: &str,
        bytes: &[u8],
        cache: Option<&Cache>,
    ) -> Result<Prepared, Error> {
        let (component, file) = match cache {
            Some(cache) => {
                let compiled = cache.load_or_compile(&self.engine, origin, bytes)?;
                (compiled.component, compiled.file)
            }
            None => {
                let component = Component::new(&self.engine, bytes).map_err(|e| {
                    Error::new(
                        ErrorKind::Load,
                        format!("failed to compile plugin `{origin}`: {e:#}"),
                    )
                })?;
                (component, None)
            }
        };
        Ok(Prepared {
            pre: self.link(origin, &component)?,
            file,
        })
    }

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
            cache: Some(crate::cache::default_dir()),
            worker_program: None,
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
        let bytes = std::fs::read(path).map_err(|e| {
            Error::new(
                ErrorKind::Load,
                format!("failed to read plugin `{}`: {e}", path.display()),
            )
        })?;
        let name = path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        self.load_bytes_named(&name, &path.display().to_string(), &bytes)
    }

    /// Loads a plugin from the bytes of a component; `name` is used in
    /// messages and in the prefix of the guest's output.
    ///
    /// # Errors
    ///
    /// As for [`Engine::load`].
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<Plugin, Error> {
        self.load_bytes_named(name, name, bytes)
    }

    fn load_bytes_named(&self, name: &str, origin: &str, bytes: &[u8]) -> Result<Plugin, Error> {
        check_header(origin, bytes)?;
        let plugin = Plugin {
            inner: Arc::new(PluginInner {
                engine: self.clone(),
                name: name.to_owned(),
                origin: origin.to_owned(),
                bytes: bytes.into(),
                plain: OnceLock::new(),
                fueled: OnceLock::new(),
            }),
        };
        // Compile now, so that load errors come from `load`.
        plugin.prepared(false)?;
        Ok(plugin)
    }

    pub(crate) fn wasmtime(&self, fuel: bool) -> Result<&wasmtime::Engine, Error> {
        Ok(&self.inner.flavors.get(fuel)?.engine)
    }

    /// The program to start worker processes with.
    pub(crate) fn worker_program(&self) -> Result<PathBuf, Error> {
        match &self.inner.worker_program {
            Some(program) => Ok(program.clone()),
            None => std::env::current_exe().map_err(|e| {
                Error::new(
                    ErrorKind::WorkerDied,
                    format!("cannot find this program to start a worker process: {e}; set `EngineBuilder::worker_program`"),
                )
            }),
        }
    }

    /// Loads a compiled component that this host wrote to its cache (in a
    /// worker process).
    pub(crate) fn load_compiled(
        &self,
        name: &str,
        file: &Path,
        fuel: bool,
    ) -> Result<Plugin, Error> {
        let flavor = self.inner.flavors.get(fuel)?;
        let component = crate::cache::load(&flavor.engine, file)?;
        let prepared = Prepared {
            pre: flavor.link(name, &component)?,
            file: Some(file.to_owned()),
        };
        let (plain, fueled) = (OnceLock::new(), OnceLock::new());
        let _ = if fuel { &fueled } else { &plain }.set(Ok(prepared));
        // Without the component's bytes the other flavor cannot be compiled;
        // a worker process only ever uses the one it was started for.
        Ok(Plugin {
            inner: Arc::new(PluginInner {
                engine: self.clone(),
                name: name.to_owned(),
                origin: file.display().to_string(),
                bytes: Arc::from(Vec::new()),
                plain,
                fueled,
            }),
        })
    }

    /// Keeps the epoch clock running while the guard lives.
    pub(crate) fn clock(&self) -> ClockGuard {
        self.inner.ticker.activate()
    }
}

/// Configures an [`Engine`].
///
/// | option | default |
/// |---|---|
/// | [`cache_dir`](Self::cache_dir) | `$SANDGEN_CACHE_DIR`, else `$XDG_CACHE_HOME/sandgen`, else `~/.cache/sandgen` |
/// | [`worker_program`](Self::worker_program) | this process's own executable, which must then call [`run_worker_if_requested`](crate::run_worker_if_requested) first thing in `main` |
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
    worker_program: Option<PathBuf>,
}

impl EngineBuilder {
    /// Keeps compiled components in `dir` (created private to the user), so
    /// that only the first load of a plugin pays for compilation and worker
    /// processes never compile.
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
        self.worker_program = Some(program.into());
        self
    }

    /// Creates the engine.
    ///
    /// # Errors
    ///
    /// When wasmtime cannot be set up on this machine.
    pub fn build(self) -> Result<Engine, Error> {
        let flavors = Arc::new(Flavors::default());
        let ticker = Ticker::start(flavors.clone())?;
        Ok(Engine {
            inner: Arc::new(EngineInner {
                cache: self.cache.map(Cache::new),
                worker_program: self.worker_program,
                flavors,
                ticker,
            }),
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

/// A loaded plugin: a compiled component, ready to instantiate; cheap to
/// clone.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    engine: Engine,
    name: String,
    origin: String,
    /// The component, kept to compile it for the fuel engine on demand.
    bytes: Arc<[u8]>,
    /// Compiled for the engine without fuel, and with it; each on first use.
    plain: OnceLock<Result<Prepared, Error>>,
    fueled: OnceLock<Result<Prepared, Error>>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

/// A generator that a plugin exports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratorInfo {
    /// The name to pass to [`Plugin::generator`].
    pub name: String,
    /// What it yields, and from which arguments.
    pub description: String,
}

impl Plugin {
    /// The plugin's name: its file name without extension, or the name given
    /// to [`Engine::load_bytes`].
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Lists the generators the plugin exports (in a fresh, sandboxed
    /// instance, for at most 10 seconds).
    ///
    /// # Errors
    ///
    /// When the plugin cannot be instantiated, traps, or takes longer than
    /// 10 seconds ([`ErrorKind::Timeout`]).
    pub fn generators(&self) -> Result<Vec<GeneratorInfo>, Error> {
        self.generators_with_timeout(LIST_TIMEOUT)
    }

    /// Like [`generators`](Self::generators), for at most `timeout`.
    ///
    /// # Errors
    ///
    /// As for [`generators`](Self::generators).
    pub fn generators_with_timeout(&self, timeout: Duration) -> Result<Vec<GeneratorInfo>, Error> {
        crate::worker::list_generators(self, timeout)
    }

    /// Starts building an iterable over generator `name`; see
    /// [`IterableBuilder`].
    pub fn generator(&self, name: &str) -> IterableBuilder {
        IterableBuilder::new(self.clone(), name)
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The linked component for the engine with or without fuel metering.
    pub(crate) fn pre(&self, fuel: bool) -> Result<&bindings::PluginPre<HostState>, Error> {
        Ok(&self.prepared(fuel)?.pre)
    }

    /// The compiled component's cache file, for a worker process.
    pub(crate) fn compiled_file(&self, fuel: bool) -> Result<&Path, Error> {
        self.prepared(fuel)?.file.as_deref().ok_or_else(|| {
            Error::new(
                ErrorKind::Load,
                format!(
                    "plugin `{}` has no compiled file for a worker process: the compile cache is \
                     disabled or not writable (see `EngineBuilder::cache_dir`)",
                    self.inner.origin
                ),
            )
        })
    }

    fn prepared(&self, fuel: bool) -> Result<&Prepared, Error> {
        let inner = &self.inner;
        let engine = &inner.engine.inner;
        let slot = if fuel { &inner.fueled } else { &inner.plain };
        slot.get_or_init(|| {
            let flavor = engine.flavors.get(fuel)?;
            flavor.prepare(&inner.origin, &inner.bytes, engine.cache.as_ref())
        })
        .as_ref()
        .map_err(Clone::clone)
    }
}

/// A thread that advances the engines' epochs every [`EPOCH_TICK`] while at
/// least one [`ClockGuard`] lives, and sleeps otherwise.
struct Ticker {
    shared: Arc<TickerShared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct TickerShared {
    state: Mutex<TickerState>,
    wake: Condvar,
}

#[derive(Default)]
struct TickerState {
    active: usize,
    shutdown: bool,
}

impl TickerShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, TickerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Ticker {
    fn start(flavors: Arc<Flavors>) -> Result<Ticker, Error> {
        let shared = Arc::new(TickerShared::default());
        let clock = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sandgen-epoch".into())
            .spawn(move || {
                loop {
                    let mut state = clock.lock();
                    while state.active == 0 && !state.shutdown {
                        state = clock.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                    }
                    if state.shutdown {
                        return;
                    }
                    drop(state);
                    std::thread::sleep(EPOCH_TICK);
                    for engine in flavors.engines() {
                        engine.increment_epoch();
                    }
                }
            })
            .map_err(|e| {
                Error::new(
                    ErrorKind::Load,
                    format!("failed to start the epoch thread: {e}"),
                )
            })?;
        Ok(Ticker {
            shared,
            thread: Some(thread),
        })
    }

    fn activate(&self) -> ClockGuard {
        self.shared.lock().active += 1;
        self.shared.wake.notify_one();
        ClockGuard {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Keeps the epoch clock running; see [`Engine::clock`].
pub(crate) struct ClockGuard {
    shared: Arc<TickerShared>,
}

impl Drop for ClockGuard {
    fn drop(&mut self) {
        self.shared.lock().active -= 1;
    }
}
