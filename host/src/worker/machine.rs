//! The worker's side of the protocol: SPDL's state machine
//! (Initialization → Stand By ⇄ Iteration; ARCHITECTURE.md has the diagram)
//! around one [`Guest`], driven by [`Command`]s and reporting [`Status`]es.
//! Both flavours run exactly this code: a worker thread directly, a worker
//! process on a thread of its own.
//!
//! The machine owns everything it works with, so that it can run on any
//! thread and move between them: a worker thread may run its first steps on
//! the caller's own thread (`thread.rs`), with [`Machine::run_inline`], and
//! the rest on a thread of its own, with [`Machine::run`].

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

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

/// A worker: its queues, and where it is in the protocol.
pub(crate) struct Machine {
    commands: Receiver<Command>,
    statuses: Box<dyn Reports + Send>,
    interrupt: Arc<Interrupt>,
    /// The generator's name, for the message of a panic.
    generator: String,
    stage: Stage,
}

/// Where a worker is in the protocol.
enum Stage {
    /// Nothing reported yet.
    Fresh(Box<Start>),
    /// `Loaded` reported: initialization is next.
    Loaded(Box<Start>),
    /// Initialized, waiting for a command.
    StandBy(Box<Ready>),
    /// In a pass.
    Passing(Box<Ready>, Flowing),
    /// The end of a pass was reported; the pass's iterator is dropped next
    /// (a step of its own: inline, the caller has what it waited for, and
    /// the drop counts against the next wait, as on a thread).
    Finishing(Box<Ready>, ResourceAny),
    /// Ended: nothing more to do.
    Ended,
}

/// What a worker is initialized from.
struct Start {
    linked: Linked,
    task: Task,
    output: OutputHandler,
}

/// An initialized worker: its guest and the guest's iterable.
struct Ready {
    guest: Guest,
    iterable: ResourceAny,
    limits: Limits,
    flow: Flow,
    plugin: Arc<str>,
}

/// A pass in progress: the guest's iterator and the flow control's state.
struct Flowing {
    iterator: ResourceAny,
    /// Items and bytes produced that the caller has not consumed yet.
    items_ahead: usize,
    bytes_ahead: usize,
    /// How many items the next `next` call asks for (slow start).
    batch_items: usize,
}

/// What one step of the machine did.
enum Step {
    /// It moved on without reporting anything the caller waits for.
    Moved,
    /// It reported `Loaded`.
    Started,
    /// It reported the end of initialization (success).
    Initialized,
    /// It reported a batch of items.
    Produced,
    /// It reported the end of a pass: back to Stand By.
    PassEnded,
    /// It needs a command, and none is queued (only when not blocking).
    Waiting,
    /// The worker ended.
    Ended,
}

/// Where [`Machine::run_inline`] stopped.
pub(crate) enum Inline {
    /// At a point where it waits for the caller (started, initialized, or
    /// at Stand By): the caller may run it inline again.
    Waiting,
    /// A pass produces: the machine should go on on a thread of its own,
    /// producing while the caller consumes.
    Producing,
    /// The worker ended.
    Ended,
}

impl Machine {
    pub(crate) fn new(
        linked: Linked,
        task: Task,
        output: OutputHandler,
        commands: Receiver<Command>,
        statuses: Box<dyn Reports + Send>,
        interrupt: Arc<Interrupt>,
    ) -> Machine {
        Machine {
            commands,
            statuses,
            interrupt,
            generator: task.generator.clone(),
            stage: Stage::Fresh(Box::new(Start {
                linked,
                task,
                output,
            })),
        }
    }

    /// Runs the worker until it ends, waiting for commands as needed.
    pub(crate) fn run(mut self) {
        while !matches!(self.guarded_step(true), Step::Ended) {}
    }

    /// Ends the worker with `error`, reported as its last status (the
    /// machine could not go on: no thread to run it).
    pub(crate) fn abandon(&mut self, error: Error) {
        let initialized = self.initialized();
        self.stage = Stage::Ended;
        self.report_end(initialized, error);
    }

    fn initialized(&self) -> bool {
        matches!(
            self.stage,
            Stage::StandBy(_) | Stage::Passing(..) | Stage::Finishing(..)
        )
    }

    /// Reports the error that ends the worker, as the status of the phase
    /// it is in.
    fn report_end(&self, initialized: bool, error: Error) {
        self.statuses.report(if initialized {
            Status::IteratorFailed(error)
        } else {
            Status::InitializationFailed(error)
        });
    }

    /// Runs the worker without ever waiting for a command, until it has
    /// reported what the caller needs next (`Loaded`, the end of
    /// initialization, the first batch of a pass, or the end of a pass), or
    /// until it needs a command that is not queued yet.
    pub(crate) fn run_inline(&mut self) -> Inline {
        loop {
            match self.guarded_step(false) {
                Step::Moved => {}
                Step::Started | Step::Initialized | Step::PassEnded | Step::Waiting => {
                    return Inline::Waiting;
                }
                Step::Produced => return Inline::Producing,
                Step::Ended => return Inline::Ended,
            }
        }
    }

    /// One step; a panic (a bug in sandgen, not in the guest) becomes a
    /// final status instead of a silent disconnect.
    fn guarded_step(&mut self, block: bool) -> Step {
        let initialized = self.initialized();
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.step(block))) {
            Ok(step) => step,
            Err(panic) => {
                // Whatever the stage held is dropped with it.
                self.stage = Stage::Ended;
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                let error = Error::new(
                    ErrorKind::WorkerDied,
                    format!(
                        "the worker of generator {} died: sandgen panicked: {what} (please report this bug)",
                        self.generator
                    ),
                );
                self.report_end(initialized, error);
                Step::Ended
            }
        }
    }

    fn step(&mut self, block: bool) -> Step {
        match std::mem::replace(&mut self.stage, Stage::Ended) {
            Stage::Fresh(start) => {
                if self.statuses.report(Status::Loaded) {
                    self.stage = Stage::Loaded(start);
                    Step::Started
                } else {
                    Step::Ended
                }
            }
            Stage::Loaded(start) => {
                let ready = match Ready::initialize(*start, &self.interrupt) {
                    Ok(ready) => ready,
                    Err(Stop::Quiet) => return Step::Ended,
                    Err(Stop::Failed(error)) => {
                        self.statuses.report(Status::InitializationFailed(error));
                        return Step::Ended;
                    }
                };
                if !self.statuses.report(Status::InitializationSucceeded) {
                    return Step::Ended;
                }
                self.stage = Stage::StandBy(Box::new(ready));
                Step::Initialized
            }
            Stage::StandBy(mut ready) => {
                let command = if block {
                    self.commands.recv().map_err(|_| TryRecvError::Disconnected)
                } else {
                    self.commands.try_recv()
                };
                let command = match command {
                    Ok(command) => command,
                    Err(TryRecvError::Empty) => {
                        self.stage = Stage::StandBy(ready);
                        return Step::Waiting;
                    }
                    Err(TryRecvError::Disconnected) => return Step::Ended,
                };
                match command {
                    Command::StartIteration => {
                        if !self.statuses.report(Status::IterationStarted) {
                            return Step::Ended;
                        }
                        match ready.begin_pass(&self.interrupt) {
                            Ok(flowing) => {
                                self.stage = Stage::Passing(ready, flowing);
                                Step::Moved
                            }
                            Err(stop) => self.fail(stop),
                        }
                    }
                    // Leftovers of a pass that already ended.
                    Command::StopIteration | Command::Consumed { .. } => {
                        self.stage = Stage::StandBy(ready);
                        Step::Moved
                    }
                    Command::Abort => Step::Ended,
                }
            }
            Stage::Passing(mut ready, mut flowing) => {
                let produced = ready.produce(
                    &mut flowing,
                    &self.commands,
                    &*self.statuses,
                    &self.interrupt,
                    block,
                );
                match produced {
                    Ok(Produced::Batch) => {
                        self.stage = Stage::Passing(ready, flowing);
                        Step::Produced
                    }
                    Ok(Produced::Nothing) => {
                        self.stage = Stage::Passing(ready, flowing);
                        Step::Moved
                    }
                    Ok(Produced::Full) => {
                        self.stage = Stage::Passing(ready, flowing);
                        Step::Waiting
                    }
                    Ok(Produced::Finished) => {
                        if !self.statuses.report(Status::IterationFinished) {
                            return Step::Ended;
                        }
                        self.stage = Stage::Finishing(ready, flowing.iterator);
                        Step::PassEnded
                    }
                    Ok(Produced::Exit) => Step::Ended,
                    Err(stop) => self.fail(stop),
                }
            }
            Stage::Finishing(mut ready, iterator) => {
                // Back to Stand By once the pass's iterator is gone.
                let dropped = Guest::call(
                    &ready.guest.runtime,
                    &self.interrupt,
                    iterator.resource_drop_async(&mut ready.guest.store),
                );
                if let Err(fault) = dropped {
                    return self.fail(ready.guest.stop("while ending a pass", fault));
                }
                self.stage = Stage::StandBy(ready);
                Step::Moved
            }
            Stage::Ended => Step::Ended,
        }
    }

    /// Reports a failure that ends the worker.
    fn fail(&mut self, stop: Stop) -> Step {
        if let Stop::Failed(error) = stop {
            self.statuses.report(Status::IteratorFailed(error));
        }
        Step::Ended
    }
}

/// What one turn of a pass's loop did.
enum Produced {
    /// It reported a batch.
    Batch,
    /// It took a command that leaves the pass going (credit came back).
    Nothing,
    /// The caller has no room, and no command is queued (only when not
    /// blocking).
    Full,
    /// The pass is over (the generator ended, or the caller stopped it).
    Finished,
    /// The worker ends (Abort, the caller gone, or a broken protocol
    /// already reported).
    Exit,
}

impl Ready {
    /// Instantiate, `initialize`, `create`.
    fn initialize(start: Start, interrupt: &Interrupt) -> Result<Ready, Stop> {
        let Start {
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
            Ok(iterable) => Ok(Ready {
                guest,
                iterable,
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

    /// Starts a pass: the fuel budget afresh, then `iter`.
    fn begin_pass(&mut self, interrupt: &Interrupt) -> Result<Flowing, Stop> {
        if let Some(budget) = self.limits.fuel
            && let Err(e) = self.guest.store.set_fuel(budget)
        {
            return Err(Stop::Failed(Error::new(
                ErrorKind::InvalidInput,
                format!("cannot set the fuel budget: {e:#}"),
            )));
        }
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
            Ok(Ok(iterator)) => Ok(Flowing {
                iterator,
                items_ahead: 0,
                bytes_ahead: 0,
                // Slow start: the first call of a pass asks for one item,
                // and each call twice as many as the last, so the first
                // items come at once.
                batch_items: 1,
            }),
            Ok(Err(message)) => Err(Stop::Failed(self.iteration_error(message))),
            Err(fault) => Err(self.guest.stop("while starting a pass", fault)),
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

    /// One turn of a pass: takes a command if one is queued (waits for one
    /// when the caller has no room and `block`), or calls `next` while the
    /// caller has room and reports the batch.
    fn produce(
        &mut self,
        flowing: &mut Flowing,
        commands: &Receiver<Command>,
        statuses: &dyn Reports,
        interrupt: &Interrupt,
        block: bool,
    ) -> Result<Produced, Stop> {
        let buffer_items = self.flow.buffer_size;
        let buffer_bytes = self.flow.buffer_bytes;
        // A batch is at most half of the buffer, so that two are in flight:
        // the worker produces while the caller consumes.
        let batch_cap = (buffer_items / 2).clamp(1, MAX_BATCH_ITEMS);
        let batch_bytes = (buffer_bytes / 2).clamp(1, MAX_BATCH_BYTES);
        // Commands first: they are checked between every two batches.
        let full = flowing.items_ahead >= buffer_items || flowing.bytes_ahead >= buffer_bytes;
        let command = if full && block {
            match commands.recv() {
                Ok(command) => Some(command),
                Err(_) => return Ok(Produced::Exit),
            }
        } else {
            match commands.try_recv() {
                Ok(command) => Some(command),
                Err(TryRecvError::Empty) if full => return Ok(Produced::Full),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return Ok(Produced::Exit),
            }
        };
        match command {
            Some(Command::Consumed { items, bytes }) => {
                flowing.items_ahead = flowing.items_ahead.saturating_sub(items as usize);
                flowing.bytes_ahead = flowing
                    .bytes_ahead
                    .saturating_sub(usize::try_from(bytes).unwrap_or(usize::MAX));
                return Ok(Produced::Nothing);
            }
            Some(Command::StopIteration) => return Ok(Produced::Finished),
            Some(Command::Abort) => return Ok(Produced::Exit),
            Some(command @ Command::StartIteration) => {
                statuses.report(Status::UnexpectedCommand(command));
                return Ok(Produced::Exit);
            }
            None => {}
        }
        let max_items = (buffer_items - flowing.items_ahead).min(flowing.batch_items) as u32;
        flowing.batch_items = (flowing.batch_items * 2).min(batch_cap);
        let max_bytes = (buffer_bytes - flowing.bytes_ahead).clamp(1, batch_bytes) as u32;
        let exports = self.guest.instance.sandgen_generator_generator();
        self.guest.store.data_mut().limiter.forget();
        let next = Guest::call(
            &self.guest.runtime,
            interrupt,
            exports.iterator().call_next(
                &mut self.guest.store,
                flowing.iterator,
                max_items,
                max_bytes,
            ),
        );
        let frames = match next {
            Ok(Ok(frames)) => frames,
            Ok(Err(message)) => return Err(Stop::Failed(self.iteration_error(message))),
            Err(fault) => return Err(self.guest.stop("while iterating", fault)),
        };
        if frames.is_empty() {
            self.check_pass_is_over(flowing.iterator, interrupt)?;
            return Ok(Produced::Finished);
        }
        let count = validate_batch(&frames, max_items, max_bytes, self.limits.max_item_bytes)
            .map_err(|detail| Stop::Failed(self.contract_error(&detail)))?;
        flowing.items_ahead += count as usize;
        flowing.bytes_ahead += frames.len();
        if statuses.report(Status::Items(Batch { frames, count })) {
            Ok(Produced::Batch)
        } else {
            Ok(Produced::Exit)
        }
    }
}
