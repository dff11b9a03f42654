//! The worker's side of the protocol: SPDL's state machine
//! (Initialization → Stand By ⇄ Iteration; ARCHITECTURE.md has the diagram)
//! around one [`Guest`], driven by [`Command`]s and reporting [`Status`]es.
//! Both flavours run exactly this code: a worker thread directly, a worker
//! process on a thread of its own.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, TryRecvError};
use sandgen_wire::Encoding;
use sandgen_wire::frame::validate_batch;
use wasmtime::component::ResourceAny;

use crate::bindings::exports::sandgen::generator::generator as wit;
use crate::error::{Error, ErrorKind};
use crate::guest::output::OutputHandler;
use crate::guest::{Guest, Interrupt, Linked, Stop, reported_error};
use crate::options::{Flow, Limits};
use crate::protocol::{Batch, Command, Status};
use crate::worker::task::{Reports, Task};

/// The most bytes asked of the guest in one `next` call (a larger single item
/// still comes whole).
pub(crate) const MAX_BATCH_BYTES: usize = 256 * 1024;
/// The most items asked of the guest in one `next` call.
pub(crate) const MAX_BATCH_ITEMS: usize = 4096;

/// Runs the worker until it ends; a panic (a bug in sandgen, not in the
/// guest) becomes a final status instead of a silent disconnect.
pub(crate) fn run(
    linked: &Linked,
    task: Task,
    output: OutputHandler,
    commands: &Receiver<Command>,
    statuses: &dyn Reports,
    interrupt: &Interrupt,
) {
    let generator = task.generator.clone();
    let initialized = AtomicBool::new(false);
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        Worker::run(
            linked,
            task,
            output,
            commands,
            statuses,
            interrupt,
            &initialized,
        );
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
        statuses.report(status);
    }
}

/// The worker's side of the protocol.
struct Worker<'a> {
    commands: &'a Receiver<Command>,
    statuses: &'a dyn Reports,
    interrupt: &'a Interrupt,
    guest: Guest,
    iterable: ResourceAny,
    limits: Limits,
    flow: Flow,
    plugin: Arc<str>,
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
        linked: &Linked,
        task: Task,
        output: OutputHandler,
        commands: &Receiver<Command>,
        statuses: &dyn Reports,
        interrupt: &Interrupt,
        initialized: &AtomicBool,
    ) {
        if !statuses.report(Status::Loaded) {
            return;
        }
        let (guest, iterable) = match Self::initialize(linked, &task, output, interrupt) {
            Ok(ready) => ready,
            Err(Stop::Quiet) => return,
            Err(Stop::Failed(error)) => {
                statuses.report(Status::InitializationFailed(error));
                return;
            }
        };
        initialized.store(true, Ordering::SeqCst);
        if !statuses.report(Status::InitializationSucceeded) {
            return;
        }
        let mut worker = Worker {
            commands,
            statuses,
            interrupt,
            guest,
            iterable,
            limits: task.limits,
            flow: task.flow,
            plugin: linked.name.clone(),
        };
        worker.stand_by();
    }

    /// Instantiate, `initialize`, `create`.
    fn initialize(
        linked: &Linked,
        task: &Task,
        output: OutputHandler,
        interrupt: &Interrupt,
    ) -> Result<(Guest, ResourceAny), Stop> {
        let mut guest = Guest::new(
            linked,
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
            Ok(iterable) => Ok((guest, iterable)),
            Err(message) => Err(Stop::Failed(reported_error(
                &guest.store,
                ErrorKind::CreateFailed,
                format_args!("create failed in generator {}", task.generator),
                message,
            ))),
        }
    }

    fn send(&self, status: Status) -> bool {
        self.statuses.report(status)
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
        if let Some(budget) = self.limits.fuel
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
        let started = Guest::call(
            &self.guest.runtime,
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
            let dropped = Guest::call(
                &self.guest.runtime,
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
        let again = Guest::call(
            &self.guest.runtime,
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
        let buffer_items = self.flow.buffer_size;
        let buffer_bytes = self.flow.buffer_bytes;
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
            let next = Guest::call(
                &self.guest.runtime,
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
                match validate_batch(&frames, max_items, max_bytes, self.limits.max_item_bytes) {
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
