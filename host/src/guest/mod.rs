//! One guest: a plugin instantiated in a store of its own, with its WASI
//! state, output capture and limits, and the means to drive its calls to
//! completion unless interrupted. Everything above (the worker state
//! machine, generator listing) talks to a plugin through a [`Guest`].

pub(crate) mod list;
pub(crate) mod output;
pub(crate) mod state;
mod trap;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;
use wasmtime::component::{ResourceAny, TypedFunc};
use wasmtime::{Store, UpdateDeadline};

use crate::bindings;
use crate::clock::{Clock, ClockGuard};
use crate::error::{Error, ErrorKind};
use crate::guest::output::{GuestOutput, OutputHandler};
use crate::guest::state::HostState;
use crate::options::{Grants, Limits};

pub(crate) use crate::guest::trap::{Fault, Stop, reported_error};

/// A component linked in its engine: what a guest is instantiated from.
/// Cheap to clone; shared by every worker of a plugin in this process.
#[derive(Clone)]
pub(crate) struct Linked {
    /// The plugin's name, for messages and output prefixes.
    pub(crate) name: Arc<str>,
    pub(crate) pre: bindings::PluginPre<HostState>,
    pub(crate) engine: wasmtime::Engine,
    /// Keeps the epoch clock running while a guest of this plugin lives.
    pub(crate) clock: Clock,
}

/// Interrupts whatever the guest is doing: set once, never cleared. Also
/// holds the deadline of the guest's calls while the caller runs them on
/// its own thread (`worker/thread.rs`), which nobody else would enforce.
#[derive(Default)]
pub(crate) struct Interrupt {
    set: AtomicBool,
    notify: Notify,
    deadline: Mutex<Option<Instant>>,
    /// A call was stopped at the deadline.
    timed_out: AtomicBool,
}

impl Interrupt {
    pub(crate) fn trigger(&self) {
        self.set.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// Calls from now on stop when `deadline` passes (`None`: no deadline).
    pub(crate) fn set_deadline(&self, deadline: Option<Instant>) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = deadline;
    }

    fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call was stopped at its deadline.
    pub(crate) fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::SeqCst)
    }
}

/// One instantiated guest.
pub(crate) struct Guest {
    /// `None` only while the guest is dropped; pass it to [`Guest::call`].
    pub(crate) runtime: Option<tokio::runtime::Runtime>,
    pub(crate) store: Store<HostState>,
    pub(crate) instance: bindings::Plugin,
    /// The plugin's fast path of resuming (`wit/resume.wit`), if it
    /// exports it.
    pub(crate) resume: Option<ResumeExports>,
    output: GuestOutput,
    pub(crate) generator: String,
    _clock: ClockGuard,
}

impl Guest {
    /// Passes on what the guest printed without a line ending yet.
    pub(crate) fn flush_output(&self) {
        self.output.flush();
    }

    /// Instantiates the plugin in a fresh store.
    pub(crate) fn new(
        linked: &Linked,
        generator: &str,
        grants: &Grants,
        limits: &Limits,
        output: OutputHandler,
        interrupt: &Interrupt,
    ) -> Result<Guest, Stop> {
        let output = GuestOutput::new(&linked.name, generator, output);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| {
                Stop::Failed(Error::new(
                    ErrorKind::WorkerDied,
                    format!("failed to start a worker runtime: {e}"),
                ))
            })?;
        let state = HostState::new(grants, limits, &output).map_err(Stop::Failed)?;
        let mut store = Store::new(&linked.engine, state);
        store.limiter(|state| &mut state.limiter);
        if let Some(budget) = limits.fuel {
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
        let clock = linked.clock.activate().map_err(|e| {
            Stop::Failed(Error::new(
                ErrorKind::WorkerDied,
                format!("cannot start the epoch thread that interrupts guests: {e}"),
            ))
        })?;
        let instance = drive(
            &runtime,
            interrupt,
            linked.pre.instance_pre().instantiate_async(&mut store),
        )
        .map_err(|fault| {
            trap::fault_stop(
                &store,
                &output,
                generator,
                "while instantiating the plugin",
                fault,
            )
        })?;
        let resume = ResumeExports::find(&mut store, &instance, &linked.name)?;
        let instance = bindings::Plugin::new(&mut store, &instance).map_err(|e| {
            Stop::Failed(Error::new(
                ErrorKind::Incompatible,
                format!(
                    "plugin {} does not export the generator interface: {e:#}",
                    linked.name
                ),
            ))
        })?;
        Ok(Guest {
            runtime: Some(runtime),
            store,
            instance,
            resume,
            output,
            generator: generator.to_owned(),
            _clock: clock,
        })
    }

    /// Drives one call of this guest to completion unless interrupted first.
    /// `runtime` is the guest's [`runtime`](Guest::runtime) field (a field,
    /// so that the store can be borrowed beside it).
    pub(crate) fn call<R>(
        runtime: &Option<tokio::runtime::Runtime>,
        interrupt: &Interrupt,
        call: impl Future<Output = wasmtime::Result<R>>,
    ) -> Result<R, Fault> {
        let runtime = runtime
            .as_ref()
            .expect("the runtime lives until the guest is dropped");
        drive(runtime, interrupt, call)
    }

    /// Turns a failed call into a [`Stop`].
    pub(crate) fn stop(&self, phase: &str, fault: Fault) -> Stop {
        trap::fault_stop(&self.store, &self.output, &self.generator, phase, fault)
    }
}

/// The functions of `wit/resume.wit`, which a plugin may export.
#[derive(Clone, Copy)]
pub(crate) struct ResumeExports {
    /// `skip(borrow<iterator>, count) -> result<u64, string>`.
    pub(crate) skip: TypedFunc<(ResourceAny, u64), (Result<u64, String>,)>,
    /// `skip-passes(borrow<iterable>, count) -> result<bool, string>`.
    pub(crate) skip_passes: TypedFunc<(ResourceAny, u64), (Result<bool, String>,)>,
}

/// The name of the resume interface among a plugin's exports.
const RESUME_INTERFACE: &str = "sandgen:generator/resume@0.1.0";

impl ResumeExports {
    /// The resume functions of `instance`: `None` when it does not export
    /// the interface; an error when it exports it with other types.
    fn find(
        store: &mut Store<HostState>,
        instance: &wasmtime::component::Instance,
        plugin: &str,
    ) -> Result<Option<ResumeExports>, Stop> {
        let Some(interface) = instance.get_export_index(&mut *store, None, RESUME_INTERFACE) else {
            return Ok(None);
        };
        let wrong = |what: &str, e: wasmtime::Error| {
            Stop::Failed(Error::new(
                ErrorKind::Incompatible,
                format!(
                    "plugin {plugin} exports {RESUME_INTERFACE} with a wrong `{what}` ({e:#}): \
                     build it against wit/resume.wit of this sandgen, or leave the interface out"
                ),
            ))
        };
        let mut func = |name: &str| {
            instance
                .get_export_index(&mut *store, Some(&interface), name)
                .ok_or_else(|| wrong(name, wasmtime::Error::msg("the function is missing")))
        };
        let (skip, skip_passes) = (func("skip")?, func("skip-passes")?);
        let skip = instance
            .get_typed_func(&mut *store, skip)
            .map_err(|e| wrong("skip", e))?;
        let skip_passes = instance
            .get_typed_func(&mut *store, skip_passes)
            .map_err(|e| wrong("skip-passes", e))?;
        Ok(Some(ResumeExports { skip, skip_passes }))
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

/// Drives one guest call to completion unless interrupted first, or
/// stopped at the interrupt's deadline (which counts as an interrupt).
fn drive<R>(
    runtime: &tokio::runtime::Runtime,
    interrupt: &Interrupt,
    call: impl Future<Output = wasmtime::Result<R>>,
) -> Result<R, Fault> {
    if interrupt.is_set() {
        return Err(Fault::Interrupted);
    }
    let deadline = interrupt.deadline();
    runtime.block_on(async {
        let expiry = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = interrupt.notify.notified() => Err(Fault::Interrupted),
            () = expiry => {
                interrupt.timed_out.store(true, Ordering::SeqCst);
                Err(Fault::Interrupted)
            }
            result = call => result.map_err(Fault::Trap),
        }
    })
}
