//! [`GuestSession`]: the [`Session`] the worker state machine drives in
//! production, one guest's generator object through the WIT calls
//! (`initialize`, `create`, `iter`, `next`, dropping the iterator).

use std::sync::Arc;

use sandgen_wire::Encoding;
use sandgen_wire::frame::validate_batch;
use wasmtime::component::ResourceAny;

use crate::bindings::exports::sandgen::generator::generator as wit;
use crate::error::{Error, ErrorKind};
use crate::guest::output::OutputHandler;
use crate::guest::{Guest, Interrupt, Linked, Stop, reported_error};
use crate::options::{Flow, Limits};
use crate::protocol::WorkerBatch;
use crate::worker::machine::Session;
use crate::worker::task::Task;

/// What a guest session is started from.
pub(crate) struct GuestStart {
    pub(crate) linked: Linked,
    pub(crate) task: Task,
    pub(crate) output: OutputHandler,
}

/// An initialized guest: the guest's iterable, and its iterator while a
/// pass runs.
pub(crate) struct GuestSession {
    guest: Guest,
    iterable: ResourceAny,
    iterator: Option<ResourceAny>,
    limits: Limits,
    flow: Flow,
    plugin: Arc<str>,
}

impl Session for GuestSession {
    type Start = GuestStart;

    /// Instantiate, `initialize`, `create`.
    fn initialize(start: GuestStart, interrupt: &Interrupt) -> Result<GuestSession, Stop> {
        let GuestStart {
            linked,
            task,
            output,
        } = start;
        let mut guest = Guest::new(
            &linked,
            &task.generator,
            &task.grants,
            &task.limits,
            output,
            interrupt,
        )?;
        let encoding = match task.encoding {
            Encoding::Bincode => wit::Encoding::Bincode,
            Encoding::Json => wit::Encoding::Json,
        };
        let exports = guest.instance.sandgen_generator_generator();
        guest.store.data_mut().limiter.forget();
        let initialized = Guest::call(
            &guest.runtime,
            interrupt,
            exports.call_initialize(&mut guest.store, encoding, &task.config),
        )
        .map_err(|fault| guest.stop("in the initializer", fault))?;
        if let Err(message) = initialized {
            return Err(Stop::Failed(reported_error(
                &guest.store,
                ErrorKind::InitializerFailed,
                format_args!("initializer failed in plugin {}", linked.name),
                message,
            )));
        }
        guest.store.data_mut().limiter.forget();
        let created = Guest::call(
            &guest.runtime,
            interrupt,
            exports.call_create(&mut guest.store, &task.generator, &task.args),
        )
        .map_err(|fault| guest.stop("while creating the iterable", fault))?;
        match created {
            Ok(iterable) => Ok(GuestSession {
                guest,
                iterable,
                iterator: None,
                limits: task.limits,
                flow: task.flow,
                plugin: linked.name.clone(),
            }),
            Err(message) => Err(Stop::Failed(reported_error(
                &guest.store,
                ErrorKind::CreateFailed,
                format_args!("create failed in generator {}", task.generator),
                message,
            ))),
        }
    }

    fn flow(&self) -> Flow {
        self.flow
    }

    /// Starts a pass: the fuel budget afresh, then `iter`.
    fn begin_pass(&mut self, interrupt: &Interrupt) -> Result<(), Stop> {
        self.refuel()?;
        let exports = self.guest.instance.sandgen_generator_generator();
        self.guest.store.data_mut().limiter.forget();
        let started = Guest::call(
            &self.guest.runtime,
            interrupt,
            exports
                .iterable()
                .call_iter(&mut self.guest.store, self.iterable),
        );
        match started {
            Ok(Ok(iterator)) => {
                self.iterator = Some(iterator);
                Ok(())
            }
            Ok(Err(message)) => Err(Stop::Failed(self.iteration_error(message))),
            Err(fault) => Err(self.guest.stop("while starting a pass", fault)),
        }
    }

    /// `next`, validated; `None` once the pass is over (checked by asking
    /// once more).
    fn next_batch(
        &mut self,
        max_items: u32,
        max_bytes: u32,
        interrupt: &Interrupt,
    ) -> Result<Option<WorkerBatch>, Stop> {
        let iterator = self.iterator.ok_or_else(|| {
            Stop::Failed(Error::new(
                ErrorKind::Protocol,
                "the worker asked for items outside a pass (please report this bug)",
            ))
        })?;
        let exports = self.guest.instance.sandgen_generator_generator();
        self.guest.store.data_mut().limiter.forget();
        let next = Guest::call(
            &self.guest.runtime,
            interrupt,
            exports
                .iterator()
                .call_next(&mut self.guest.store, iterator, max_items, max_bytes),
        );
        let frames = match next {
            Ok(Ok(frames)) => frames,
            Ok(Err(message)) => {
                self.guest.flush_output();
                return Err(Stop::Failed(self.iteration_error(message)));
            }
            Err(fault) => return Err(self.guest.stop("while iterating", fault)),
        };
        if frames.is_empty() {
            self.check_pass_is_over(iterator, interrupt)?;
            // What the pass printed last without a line ending goes out
            // before its end is reported: a worker process may be killed
            // once the caller has the end.
            self.guest.flush_output();
            return Ok(None);
        }
        let count = validate_batch(&frames, max_items, max_bytes, self.limits.max_item_bytes)
            .map_err(|detail| Stop::Failed(self.contract_error(&detail)))?;
        Ok(Some(WorkerBatch { frames, count }))
    }

    /// Drops the pass's iterator.
    fn end_pass(&mut self, interrupt: &Interrupt) -> Result<(), Stop> {
        let Some(iterator) = self.iterator.take() else {
            return Ok(());
        };
        let dropped = Guest::call(
            &self.guest.runtime,
            interrupt,
            iterator.resource_drop_async(&mut self.guest.store),
        );
        dropped.map_err(|fault| self.guest.stop("while ending a pass", fault))
    }

    /// `skip` of `wit/resume.wit`, where the plugin exports it.
    fn skip_items(&mut self, count: u64, interrupt: &Interrupt) -> Result<Option<u64>, Stop> {
        let (Some(resume), Some(iterator)) = (self.guest.resume, self.iterator) else {
            return Ok(None);
        };
        self.guest.store.data_mut().limiter.forget();
        let skipped = Guest::call(
            &self.guest.runtime,
            interrupt,
            resume
                .skip
                .call_async(&mut self.guest.store, (iterator, count)),
        );
        match skipped {
            Ok((Ok(dropped),)) => Ok(Some(dropped)),
            Ok((Err(message),)) => {
                self.guest.flush_output();
                Err(Stop::Failed(self.iteration_error(message)))
            }
            Err(fault) => Err(self.guest.stop("while skipping items to resume", fault)),
        }
    }

    /// `skip-passes` of `wit/resume.wit` for one pass, where the plugin
    /// exports it and can (`false`: it cannot); the fuel budget afresh, as
    /// for a pass.
    fn skip_whole_pass(&mut self, interrupt: &Interrupt) -> Result<bool, Stop> {
        let Some(resume) = self.guest.resume else {
            return Ok(false);
        };
        self.refuel()?;
        self.guest.store.data_mut().limiter.forget();
        let skipped = Guest::call(
            &self.guest.runtime,
            interrupt,
            resume
                .skip_passes
                .call_async(&mut self.guest.store, (self.iterable, 1)),
        );
        self.guest.flush_output();
        match skipped {
            Ok((Ok(done),)) => Ok(done),
            Ok((Err(message),)) => Err(Stop::Failed(self.iteration_error(message))),
            Err(fault) => Err(self.guest.stop("while skipping a pass", fault)),
        }
    }
}

impl GuestSession {
    /// The fuel budget afresh, as each pass has it.
    fn refuel(&mut self) -> Result<(), Stop> {
        if let Some(budget) = self.limits.fuel
            && let Err(e) = self.guest.store.set_fuel(budget)
        {
            return Err(Stop::Failed(Error::new(
                ErrorKind::InvalidInput,
                format!("cannot set the fuel budget: {e:#}"),
            )));
        }
        Ok(())
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
    fn check_pass_is_over(
        &mut self,
        iterator: ResourceAny,
        interrupt: &Interrupt,
    ) -> Result<(), Stop> {
        let exports = self.guest.instance.sandgen_generator_generator();
        self.guest.store.data_mut().limiter.forget();
        let again = Guest::call(
            &self.guest.runtime,
            interrupt,
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
}
