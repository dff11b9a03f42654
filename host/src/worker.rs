//! The worker: one guest instance running SPDL's state machine
//! (Initialization → Stand By ⇄ Iteration), driven by [`Command`]s and
//! reporting [`Status`]es (design §2).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use tokio::sync::Notify;
use wasmtime::component::ResourceAny;
use wasmtime::{Store, Trap, UpdateDeadline, WasmBacktrace};

use crate::bindings::exports::sandgen::generator::generator as wit;
use crate::codec::{Batch, Encoding, validate_batch};
use crate::engine::ClockGuard;
use crate::output::{GuestOutput, OutputHandler, summarize_stderr};
use crate::process::ProcessWorker;
use crate::protocol::{Command, Status};
use crate::sandbox::{HostState, Options};
use crate::{Error, ErrorKind, GeneratorInfo, Plugin, bindings};

/// The most bytes asked of the guest in one `next` call (a larger single item
/// still comes whole).
pub(crate) const MAX_BATCH_BYTES: usize = 256 * 1024;
/// The most items asked of the guest in one `next` call.
const MAX_BATCH_ITEMS: usize = 4096;

/// What a worker runs.
pub(crate) struct Spec {
    pub(crate) plugin: Plugin,
    pub(crate) generator: String,
    pub(crate) encoding: Encoding,
    pub(crate) config: Vec<u8>,
    pub(crate) args: Vec<u8>,
    pub(crate) options: Options,
    pub(crate) output: OutputHandler,
}

/// Interrupts whatever the guest is doing: set once, never cleared.
#[derive(Default)]
pub(crate) struct Interrupt {
    set: AtomicBool,
    notify: Notify,
}

impl Interrupt {
    pub(crate) fn trigger(&self) {
        self.set.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }
}

/// Where a worker runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Isolation {
    /// A thread of this process, with its own wasm instance and store: the
    /// fastest start and hand-off.
    #[default]
    Thread,
    /// A child process running the same worker, talking over pipes: adds an
    /// OS process boundary against faults of the runtime itself, and the OS
    /// can kill it. Needs the compile cache and a worker program (see
    /// [`EngineBuilder`](crate::EngineBuilder)).
    Process,
}

/// The caller's handle on a worker, wherever it runs.
pub(crate) struct WorkerHandle {
    pub(crate) commands: Sender<Command>,
    pub(crate) statuses: Receiver<Status>,
    backend: Backend,
}

enum Backend {
    Thread {
        interrupt: Arc<Interrupt>,
        /// Disconnects when the worker thread ends.
        done: Receiver<()>,
        thread: Option<JoinHandle<()>>,
    },
    Process(ProcessWorker),
}

impl WorkerHandle {
    pub(crate) fn spawn(spec: Spec, isolation: Isolation) -> Result<WorkerHandle, Error> {
        match isolation {
            Isolation::Thread => Self::spawn_thread(spec),
            Isolation::Process => {
                let (commands, command_rx) = crossbeam_channel::unbounded();
                let (status_tx, statuses) = crossbeam_channel::unbounded();
                let process = ProcessWorker::spawn(spec, command_rx, status_tx)?;
                Ok(WorkerHandle {
                    commands,
                    statuses,
                    backend: Backend::Process(process),
                })
            }
        }
    }

    pub(crate) fn spawn_thread(spec: Spec) -> Result<WorkerHandle, Error> {
        let (commands, command_rx) = crossbeam_channel::unbounded();
        let (status_tx, statuses) = crossbeam_channel::unbounded();
        let (done_tx, done) = crossbeam_channel::bounded::<()>(0);
        let interrupt = Arc::new(Interrupt::default());
        let worker_interrupt = interrupt.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sandgen-{}", spec.generator))
            .spawn(move || {
                let _done = done_tx;
                run(spec, command_rx, status_tx, worker_interrupt);
            })
            .map_err(|e| {
                Error::new(
                    ErrorKind::WorkerDied,
                    format!("failed to start a worker thread: {e}"),
                )
            })?;
        Ok(WorkerHandle {
            commands,
            statuses,
            backend: Backend::Thread {
                interrupt,
                done,
                thread: Some(thread),
            },
        })
    }

    /// The worker process's id, in process isolation.
    pub(crate) fn process_id(&self) -> Option<u32> {
        match &self.backend {
            Backend::Thread { .. } => None,
            Backend::Process(process) => Some(process.pid()),
        }
    }

    /// Stops the guest at once, wherever it is (a worker process is killed).
    pub(crate) fn interrupt(&self) {
        match &self.backend {
            Backend::Thread { interrupt, .. } => interrupt.trigger(),
            Backend::Process(process) => process.kill(),
        }
    }

    /// Ends the worker: Abort, then wait up to `grace` for it. A thread still
    /// running then (a guest stuck where no interrupt reaches) is left to end
    /// on its own; a process still running is killed.
    pub(crate) fn shutdown(&mut self, grace: Duration) {
        let _ = self.commands.send(Command::Abort);
        match &mut self.backend {
            Backend::Thread {
                interrupt,
                done,
                thread,
            } => {
                interrupt.trigger();
                if let Err(crossbeam_channel::RecvTimeoutError::Disconnected) =
                    done.recv_timeout(grace)
                    && let Some(thread) = thread.take()
                {
                    let _ = thread.join();
                }
            }
            Backend::Process(process) => process.shutdown(grace),
        }
    }
}

/// Runs the worker; a panic (a bug in sandgen, not in the guest) becomes a
/// final status instead of a silent disconnect.
fn run(
    spec: Spec,
    commands: Receiver<Command>,
    statuses: Sender<Status>,
    interrupt: Arc<Interrupt>,
) {
    let generator = spec.generator.clone();
    let initialized = Arc::new(AtomicBool::new(false));
    let flag = initialized.clone();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        Worker::run(spec, &commands, &statuses, &interrupt, &flag);
    }));
    if let Err(panic) = result {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let error = Error::new(
            ErrorKind::WorkerDied,
            format!(
                "the worker of generator {generator} died: sandgen panicked: {what} (please report this bug)"
            ),
        );
        let status = if initialized.load(Ordering::SeqCst) {
            Status::IteratorFailed(error)
        } else {
            Status::InitializationFailed(error)
        };
        let _ = statuses.send(status);
    }
}

/// Why a guest call did not return.
enum Fault {
    /// The caller interrupted it (teardown or timeout).
    Interrupted,
    /// It trapped or the host failed.
    Trap(wasmtime::Error),
}

/// Drives one guest call to completion unless interrupted first.
fn drive<R>(
    runtime: &tokio::runtime::Runtime,
    interrupt: &Interrupt,
    call: impl Future<Output = wasmtime::Result<R>>,
) -> Result<R, Fault> {
    if interrupt.is_set() {
        return Err(Fault::Interrupted);
    }
    runtime.block_on(async {
        tokio::select! {
            biased;
            () = interrupt.notify.notified() => Err(Fault::Interrupted),
            result = call => result.map_err(Fault::Trap),
        }
    })
}

/// How a phase ended when it did not succeed.
enum Stop {
    /// Interrupted by the caller: end quietly, nobody is listening.
    Quiet,
    /// Failed: report this error, then end.
    Failed(Error),
}

/// One instantiated guest.
struct Guest {
    /// `None` only while the guest is dropped.
    runtime: Option<tokio::runtime::Runtime>,
    store: Store<HostState>,
    instance: bindings::Plugin,
    output: GuestOutput,
    generator: String,
    _clock: ClockGuard,
}

impl Guest {
    /// Instantiates the plugin in a fresh store.
    fn new(
        plugin: &Plugin,
        generator: &str,
        options: &Options,
        output: OutputHandler,
        interrupt: &Interrupt,
    ) -> Result<Guest, Stop> {
        let output = GuestOutput::new(plugin.name(), generator, output);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| {
                Stop::Failed(Error::new(
                    ErrorKind::WorkerDied,
                    format!("failed to start a worker runtime: {e}"),
                ))
            })?;
        let state = HostState::new(options, &output).map_err(Stop::Failed)?;
        let fuel = options.fuel.is_some();
        let pre = plugin.pre(fuel).map_err(Stop::Failed)?;
        let engine = plugin.engine().wasmtime(fuel).map_err(Stop::Failed)?;
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limiter);
        if let Some(budget) = options.fuel {
            // The budget also covers instantiation, the initializer and
            // `create`; each pass gets it afresh.
            store.set_fuel(budget).map_err(|e| {
                Stop::Failed(Error::new(
                    ErrorKind::InvalidInput,
                    format!("cannot set the fuel budget: {e:#}"),
                ))
            })?;
        }
        // At every epoch tick, yield to the runtime so that an interrupt is
        // seen even while the guest spins in wasm code.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        let clock = plugin.engine().clock();
        let instance =
            drive(&runtime, interrupt, pre.instantiate_async(&mut store)).map_err(|fault| {
                fault_stop(
                    &store,
                    &output,
                    generator,
                    "while instantiating the plugin",
                    fault,
                )
            })?;
        Ok(Guest {
            runtime: Some(runtime),
            store,
            instance,
            output,
            generator: generator.to_owned(),
            _clock: clock,
        })
    }

    /// Turns a failed call into a [`Stop`].
    fn stop(&self, phase: &str, fault: Fault) -> Stop {
        fault_stop(&self.store, &self.output, &self.generator, phase, fault)
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.output.flush();
        // Never wait for a host call still blocked on the runtime's thread
        // pool (a read from a pipe in a granted directory, say).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The guest's runtime, which lives until the guest is dropped.
fn rt(runtime: &Option<tokio::runtime::Runtime>) -> &tokio::runtime::Runtime {
    runtime
        .as_ref()
        .expect("the runtime lives until the guest is dropped")
}

fn fault_stop(
    store: &Store<HostState>,
    output: &GuestOutput,
    generator: &str,
    phase: &str,
    fault: Fault,
) -> Stop {
    match fault {
        Fault::Interrupted => Stop::Quiet,
        Fault::Trap(error) => Stop::Failed(trap_error(store, output, generator, phase, &error)),
    }
}

/// An error that the plugin reported from a call. When the limiter refused
/// memory during that same call, the plugin's error is its reaction to the
/// limit (Python's `MemoryError`, a failed `try_reserve`): it is reported as
/// [`ErrorKind::MemoryLimit`], with the plugin's message kept.
fn reported_error(
    store: &Store<HostState>,
    kind: ErrorKind,
    context: impl std::fmt::Display,
    message: String,
) -> Error {
    let limiter = &store.data().limiter;
    match limiter.denied {
        Some(asked) => Error::plugin(
            ErrorKind::MemoryLimit,
            format_args!(
                "{context} after hitting its memory limit of {} MiB (it asked for {} MiB)",
                limiter.max_bytes() / (1024 * 1024),
                asked.div_ceil(1024 * 1024)
            ),
            message,
        ),
        None => Error::plugin(kind, context, message),
    }
}

/// Classifies a trap (or host failure) of a guest call into an [`Error`]
/// with the guest's stderr tail and backtrace attached.
fn trap_error(
    store: &Store<HostState>,
    output: &GuestOutput,
    generator: &str,
    phase: &str,
    error: &wasmtime::Error,
) -> Error {
    output.flush();
    let stderr = output.stderr_tail();
    let said = stderr.as_deref().and_then(summarize_stderr);
    let said = said
        .map(|s| format!(" (guest stderr: {s})"))
        .unwrap_or_default();
    let trap = error.downcast_ref::<Trap>().copied();
    let limiter = &store.data().limiter;
    let (kind, message) = match (trap, limiter.denied) {
        (Some(Trap::StackOverflow), _) => (
            ErrorKind::StackOverflow,
            format!(
                "generator {generator} exhausted its stack {phase} (unbounded recursion?){said}"
            ),
        ),
        (Some(Trap::OutOfFuel), _) => (
            ErrorKind::FuelExhausted,
            format!(
                "generator {generator} ran out of fuel {phase} (its budget is {} units per pass){said}",
                store.data().fuel.unwrap_or_default()
            ),
        ),
        (_, Some(asked)) => (
            ErrorKind::MemoryLimit,
            format!(
                "generator {generator} hit its memory limit of {} MiB {phase} (it asked for {} MiB){said}",
                limiter.max_bytes() / (1024 * 1024),
                asked.div_ceil(1024 * 1024)
            ),
        ),
        (Some(trap), None) => (
            ErrorKind::Trap,
            format!("generator {generator} trapped {phase}: {trap}{said}"),
        ),
        (None, None) => match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => (
                ErrorKind::Trap,
                format!(
                    "generator {generator} exited with status {} {phase}; a plugin must return or report errors instead of exiting{said}",
                    exit.0
                ),
            ),
            None => {
                let cause = error.root_cause().to_string();
                let cause = cause.lines().next().unwrap_or_default();
                (
                    ErrorKind::Trap,
                    format!("generator {generator} failed {phase}: {cause}{said}"),
                )
            }
        },
    };
    let backtrace = error.downcast_ref::<WasmBacktrace>().map(format_backtrace);
    Error::new(kind, message)
        .with_guest_stderr(stderr)
        .with_backtrace(backtrace)
}

/// The innermost frames of a guest backtrace, one per line.
fn format_backtrace(backtrace: &WasmBacktrace) -> String {
    const FRAMES: usize = 12;
    let mut lines: Vec<String> = backtrace
        .frames()
        .iter()
        .take(FRAMES)
        .map(|frame| {
            let name = frame.func_name().unwrap_or("<unnamed>");
            match frame.module().name() {
                Some(module) => format!("{module}!{name}"),
                None => name.to_owned(),
            }
        })
        .collect();
    if backtrace.frames().len() > FRAMES {
        lines.push(format!(
            "... {} more frames",
            backtrace.frames().len() - FRAMES
        ));
    }
    lines.join("\n")
}

/// Lists a plugin's generators in a fresh instance, on a thread of its own,
/// for at most `timeout`.
pub(crate) fn list_generators(
    plugin: &Plugin,
    timeout: Duration,
) -> Result<Vec<GeneratorInfo>, Error> {
    let interrupt = Arc::new(Interrupt::default());
    let (done, result) = crossbeam_channel::bounded(1);
    let (lister, stop) = (plugin.clone(), interrupt.clone());
    std::thread::Builder::new()
        .name("sandgen-list".into())
        .spawn(move || {
            let _ = done.send(list_in_guest(&lister, &stop));
        })
        .map_err(|e| {
            Error::new(
                ErrorKind::WorkerDied,
                format!("failed to start a thread to list generators: {e}"),
            )
        })?;
    match result.recv_timeout(timeout) {
        Ok(listed) => listed,
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
            interrupt.trigger();
            Err(timed_out_listing(plugin, timeout))
        }
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(Error::new(
            ErrorKind::WorkerDied,
            format!(
                "the thread listing the generators of plugin {} died",
                plugin.name()
            ),
        )),
    }
}

fn timed_out_listing(plugin: &Plugin, timeout: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!(
            "plugin {} timed out listing its generators (after {timeout:?})",
            plugin.name()
        ),
    )
}

fn list_in_guest(plugin: &Plugin, interrupt: &Interrupt) -> Result<Vec<GeneratorInfo>, Error> {
    let stop = |stop: Stop| match stop {
        Stop::Failed(error) => error,
        Stop::Quiet => timed_out_listing(plugin, Duration::ZERO),
    };
    let mut guest = Guest::new(
        plugin,
        "generators",
        &Options::default(),
        crate::output::stderr_handler(),
        interrupt,
    )
    .map_err(stop)?;
    let exports = guest.instance.sandgen_generator_generator();
    let infos = drive(
        rt(&guest.runtime),
        interrupt,
        exports.call_generators(&mut guest.store),
    )
    .map_err(|fault| stop(guest.stop("while listing its generators", fault)))?;
    Ok(infos
        .into_iter()
        .map(|info| GeneratorInfo {
            name: info.name,
            description: info.description,
        })
        .collect())
}

/// The worker's side of the protocol.
struct Worker<'a> {
    commands: &'a Receiver<Command>,
    statuses: &'a Sender<Status>,
    interrupt: &'a Interrupt,
    guest: Guest,
    iterable: ResourceAny,
    options: Options,
    plugin: String,
}

/// How a pass ended.
enum PassEnd {
    /// Back to Stand By.
    StandBy,
    /// The worker ends (Abort, an error already reported, or a broken
    /// protocol).
    Exit,
}

impl Worker<'_> {
    fn run(
        spec: Spec,
        commands: &Receiver<Command>,
        statuses: &Sender<Status>,
        interrupt: &Interrupt,
        initialized: &AtomicBool,
    ) {
        let plugin = spec.plugin.name().to_owned();
        let (guest, iterable) = match Self::initialize(&spec, interrupt) {
            Ok(ready) => ready,
            Err(Stop::Quiet) => return,
            Err(Stop::Failed(error)) => {
                let _ = statuses.send(Status::InitializationFailed(error));
                return;
            }
        };
        initialized.store(true, Ordering::SeqCst);
        if statuses.send(Status::InitializationSucceeded).is_err() {
            return;
        }
        let mut worker = Worker {
            commands,
            statuses,
            interrupt,
            guest,
            iterable,
            options: spec.options,
            plugin,
        };
        worker.stand_by();
    }

    /// Instantiate, `initialize`, `create`.
    fn initialize(spec: &Spec, interrupt: &Interrupt) -> Result<(Guest, ResourceAny), Stop> {
        let mut guest = Guest::new(
            &spec.plugin,
            &spec.generator,
            &spec.options,
            spec.output.clone(),
            interrupt,
        )?;
        let encoding = match spec.encoding {
            Encoding::Bincode => wit::Encoding::Bincode,
            Encoding::Json => wit::Encoding::Json,
        };
        let exports = guest.instance.sandgen_generator_generator();
        guest.store.data_mut().limiter.forget();
        let initialized = drive(
            rt(&guest.runtime),
            interrupt,
            exports.call_initialize(&mut guest.store, encoding, &spec.config),
        )
        .map_err(|fault| guest.stop("in the initializer", fault))?;
        if let Err(message) = initialized {
            return Err(Stop::Failed(reported_error(
                &guest.store,
                ErrorKind::InitializerFailed,
                format_args!("initializer failed in plugin {}", spec.plugin.name()),
                message,
            )));
        }
        guest.store.data_mut().limiter.forget();
        let created = drive(
            rt(&guest.runtime),
            interrupt,
            exports.call_create(&mut guest.store, &spec.generator, &spec.args),
        )
        .map_err(|fault| guest.stop("while creating the iterable", fault))?;
        match created {
            Ok(iterable) => Ok((guest, iterable)),
            Err(message) => Err(Stop::Failed(reported_error(
                &guest.store,
                ErrorKind::CreateFailed,
                format_args!("create failed in generator {}", spec.generator),
                message,
            ))),
        }
    }

    fn send(&self, status: Status) -> bool {
        self.statuses.send(status).is_ok()
    }

    /// Stand By: wait for a command.
    fn stand_by(&mut self) {
        loop {
            let Ok(command) = self.commands.recv() else {
                return;
            };
            match command {
                Command::StartIteration => {
                    if !self.send(Status::IterationStarted) {
                        return;
                    }
                    match self.iterate() {
                        PassEnd::StandBy => {}
                        PassEnd::Exit => return,
                    }
                }
                // Leftovers of a pass that already ended.
                Command::StopIteration | Command::Consumed { .. } => {}
                Command::Abort => return,
            }
        }
    }

    /// Reports a failure that ends the worker.
    fn fail(&self, stop: Stop) -> PassEnd {
        if let Stop::Failed(error) = stop {
            self.send(Status::IteratorFailed(error));
        }
        PassEnd::Exit
    }

    /// One pass: `iter`, then `next` until the pass ends, a command stops it,
    /// or it fails.
    fn iterate(&mut self) -> PassEnd {
        if let Some(budget) = self.options.fuel
            && let Err(e) = self.guest.store.set_fuel(budget)
        {
            let error = Error::new(
                ErrorKind::InvalidInput,
                format!("cannot set the fuel budget: {e:#}"),
            );
            return self.fail(Stop::Failed(error));
        }
        let exports = self.guest.instance.sandgen_generator_generator();
        self.guest.store.data_mut().limiter.forget();
        let started = drive(
            rt(&self.guest.runtime),
            self.interrupt,
            exports
                .iterable()
                .call_iter(&mut self.guest.store, self.iterable),
        );
        let iterator = match started {
            Ok(Ok(iterator)) => iterator,
            Ok(Err(message)) => return self.fail(Stop::Failed(self.iteration_error(message))),
            Err(fault) => return self.fail(self.guest.stop("while starting a pass", fault)),
        };
        let end = self.produce(iterator);
        if matches!(end, PassEnd::StandBy) {
            let dropped = drive(
                rt(&self.guest.runtime),
                self.interrupt,
                iterator.resource_drop_async(&mut self.guest.store),
            );
            if let Err(fault) = dropped {
                return self.fail(self.guest.stop("while ending a pass", fault));
            }
        }
        end
    }

    /// Reports the end of a pass: back to Stand By.
    fn finish_pass(&self) -> PassEnd {
        if self.send(Status::IterationFinished) {
            PassEnd::StandBy
        } else {
            PassEnd::Exit
        }
    }

    fn contract_error(&self, detail: &str) -> Error {
        Error::new(
            ErrorKind::Protocol,
            format!(
                "generator {} of plugin {} broke the plugin contract: {detail}",
                self.guest.generator, self.plugin
            ),
        )
    }

    /// After an empty buffer, asks once more: a plugin that then returns
    /// items has broken the contract (the pass was over). An error on this
    /// extra call is not held against it.
    fn check_pass_is_over(&mut self, iterator: ResourceAny) -> Result<(), Stop> {
        let exports = self.guest.instance.sandgen_generator_generator();
        self.guest.store.data_mut().limiter.forget();
        let again = drive(
            rt(&self.guest.runtime),
            self.interrupt,
            exports
                .iterator()
                .call_next(&mut self.guest.store, iterator, 1, 1),
        );
        match again {
            Ok(Ok(frames)) if !frames.is_empty() => Err(Stop::Failed(
                self.contract_error("it returned items after an empty buffer had ended the pass"),
            )),
            Ok(_) => Ok(()),
            Err(fault) => Err(self.guest.stop("after the end of a pass", fault)),
        }
    }

    fn iteration_error(&self, message: String) -> Error {
        reported_error(
            &self.guest.store,
            ErrorKind::IterationFailed,
            format_args!("iteration failed in generator {}", self.guest.generator),
            message,
        )
    }

    /// Calls `next` while the caller has room, and sends the batches.
    fn produce(&mut self, iterator: ResourceAny) -> PassEnd {
        let buffer_items = self.options.buffer_size;
        let buffer_bytes = self.options.buffer_bytes;
        let (mut items_ahead, mut bytes_ahead) = (0usize, 0usize);
        // Slow start: the first call of a pass asks for one item, and each
        // call twice as many as the last, so the first items come at once.
        let mut batch_items = 1usize;
        // A batch is at most half of the buffer, so that two are in
        // flight: the worker produces while the caller consumes.
        let batch_cap = (buffer_items / 2).clamp(1, MAX_BATCH_ITEMS);
        let batch_bytes = (buffer_bytes / 2).clamp(1, MAX_BATCH_BYTES);
        loop {
            // Commands first: they are checked between every two batches.
            let full = items_ahead >= buffer_items || bytes_ahead >= buffer_bytes;
            let command = if full {
                match self.commands.recv() {
                    Ok(command) => Some(command),
                    Err(_) => return PassEnd::Exit,
                }
            } else {
                match self.commands.try_recv() {
                    Ok(command) => Some(command),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => return PassEnd::Exit,
                }
            };
            match command {
                Some(Command::Consumed { items, bytes }) => {
                    items_ahead = items_ahead.saturating_sub(items as usize);
                    bytes_ahead =
                        bytes_ahead.saturating_sub(usize::try_from(bytes).unwrap_or(usize::MAX));
                    continue;
                }
                Some(Command::StopIteration) => return self.finish_pass(),
                Some(Command::Abort) => return PassEnd::Exit,
                Some(command @ Command::StartIteration) => {
                    self.send(Status::UnexpectedCommand(command));
                    return PassEnd::Exit;
                }
                None => {}
            }
            let max_items = (buffer_items - items_ahead).min(batch_items) as u32;
            batch_items = (batch_items * 2).min(batch_cap);
            let max_bytes = (buffer_bytes - bytes_ahead).clamp(1, batch_bytes) as u32;
            let exports = self.guest.instance.sandgen_generator_generator();
            self.guest.store.data_mut().limiter.forget();
            let next = drive(
                rt(&self.guest.runtime),
                self.interrupt,
                exports
                    .iterator()
                    .call_next(&mut self.guest.store, iterator, max_items, max_bytes),
            );
            let frames = match next {
                Ok(Ok(frames)) => frames,
                Ok(Err(message)) => return self.fail(Stop::Failed(self.iteration_error(message))),
                Err(fault) => return self.fail(self.guest.stop("while iterating", fault)),
            };
            if frames.is_empty() {
                if let Err(stop) = self.check_pass_is_over(iterator) {
                    return self.fail(stop);
                }
                return self.finish_pass();
            }
            let count =
                match validate_batch(&frames, max_items, max_bytes, self.options.max_item_bytes) {
                    Ok(count) => count,
                    Err(detail) => return self.fail(Stop::Failed(self.contract_error(&detail))),
                };
            items_ahead += count as usize;
            bytes_ahead += frames.len();
            if !self.send(Status::Items(Batch { frames, count })) {
                return PassEnd::Exit;
            }
        }
    }
}
