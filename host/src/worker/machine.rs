//! The worker's side of the protocol: SPDL's state machine
//! (Initialization → Stand By ⇄ Iteration; ARCHITECTURE.md has the diagram)
//! around one [`Session`] (in production a guest: `session.rs`), driven by
//! [`Command`]s and reporting [`Status`]es, with the caller's credit as the
//! back-pressure. Both flavours run exactly this code: a worker thread
//! directly, a worker process on a thread of its own.
//!
//! The machine owns everything it works with, so that it can run on any
//! thread and move between them: a worker thread may run its first steps on
//! the caller's own thread (`thread.rs`), with [`Machine::run_inline`], and
//! the rest on a thread of its own, with [`Machine::run`].

mod credit;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use crossbeam_channel::{Receiver, TryRecvError};

use crate::error::{Error, ErrorKind};
use crate::guest::{Interrupt, Stop};
use crate::options::Flow;
use crate::protocol::{Command, Status, WorkerBatch};
use crate::worker::machine::credit::Credit;
use crate::worker::task::Reports;

/// The most bytes asked of the guest in one `next` call (a larger single item
/// still comes whole).
pub(crate) const MAX_BATCH_BYTES: usize = 256 * 1024;
/// The most items asked of the guest in one `next` call.
pub(crate) const MAX_BATCH_ITEMS: usize = 4096;

/// What the machine drives: one generator object, initialized once and
/// iterated pass after pass.
pub(crate) trait Session: Sized {
    /// What it is started from.
    type Start;
    /// Instantiates and initializes it (the initializer and `create`).
    fn initialize(start: Self::Start, interrupt: &Interrupt) -> Result<Self, Stop>;
    /// How far it may run ahead of the caller.
    fn flow(&self) -> Flow;
    /// Starts a pass.
    fn begin_pass(&mut self, interrupt: &Interrupt) -> Result<(), Stop>;
    /// The pass's next batch, of at most `max_items` items and (but for a
    /// single larger item) `max_bytes` bytes; `None` when the pass is over.
    fn next_batch(
        &mut self,
        max_items: u32,
        max_bytes: u32,
        interrupt: &Interrupt,
    ) -> Result<Option<WorkerBatch>, Stop>;
    /// Ends the pass (its end was reported already).
    fn end_pass(&mut self, interrupt: &Interrupt) -> Result<(), Stop>;

    /// Drops up to `count` items of the pass inside the plugin, without
    /// producing them (its fast path, `wit/resume.wit`): `Some(n)`, how
    /// many (it may stop early to answer promptly; 0 once the pass is
    /// over), or `None` when the plugin has no fast path (the caller then
    /// replays).
    fn skip_items(&mut self, count: u64, interrupt: &Interrupt) -> Result<Option<u64>, Stop> {
        let _ = (count, interrupt);
        Ok(None)
    }

    /// Runs one whole pass inside the plugin without producing its items
    /// (its fast path): `false` when the plugin has none.
    fn skip_whole_pass(&mut self, interrupt: &Interrupt) -> Result<bool, Stop> {
        let _ = interrupt;
        Ok(false)
    }
}

/// A worker: its queues, and where it is in the protocol.
pub(crate) struct Machine<S: Session> {
    commands: Receiver<Command>,
    statuses: Box<dyn Reports + Send>,
    interrupt: Arc<Interrupt>,
    /// The generator's name, for the message of a panic.
    generator: String,
    stage: Stage<S>,
}

/// Where a worker is in the protocol.
enum Stage<S: Session> {
    /// Nothing reported yet.
    Fresh(Box<S::Start>),
    /// `Loaded` reported: initialization is next.
    Loaded(Box<S::Start>),
    /// Initialized, waiting for a command.
    StandBy(Box<S>),
    /// In a pass.
    Passing(Box<S>, Credit),
    /// The end of a pass was reported; the session ends the pass next (a
    /// step of its own: inline, the caller has what it waited for, and the
    /// end counts against the next wait, as on a thread).
    Finishing(Box<S>),
    /// Ended: nothing more to do.
    Ended,
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

/// What one turn of a pass's loop did.
enum Turn {
    /// It reported a batch.
    Batch,
    /// It took a command that leaves the pass going (credit came back), or
    /// kept none of a batch's items.
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

impl<S: Session> Machine<S> {
    pub(crate) fn new(
        start: S::Start,
        generator: String,
        commands: Receiver<Command>,
        statuses: Box<dyn Reports + Send>,
        interrupt: Arc<Interrupt>,
    ) -> Machine<S> {
        Machine {
            commands,
            statuses,
            interrupt,
            generator,
            stage: Stage::Fresh(Box::new(start)),
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

    /// One step of the stage the machine is in.
    fn step(&mut self, block: bool) -> Step {
        match std::mem::replace(&mut self.stage, Stage::Ended) {
            Stage::Fresh(start) => self.start(start),
            Stage::Loaded(start) => self.initialize(*start),
            Stage::StandBy(session) => self.stand_by(session, block),
            Stage::Passing(session, credit) => self.pass(session, credit, block),
            Stage::Finishing(session) => self.finish(session),
            Stage::Ended => Step::Ended,
        }
    }

    /// Fresh: reports `Loaded`.
    fn start(&mut self, start: Box<S::Start>) -> Step {
        if self.statuses.report(Status::Loaded) {
            self.stage = Stage::Loaded(start);
            Step::Started
        } else {
            Step::Ended
        }
    }

    /// Loaded: initializes the session and reports how that went.
    fn initialize(&mut self, start: S::Start) -> Step {
        let session = match S::initialize(start, &self.interrupt) {
            Ok(session) => session,
            Err(Stop::Quiet) => return Step::Ended,
            Err(Stop::Failed(error)) => {
                self.statuses.report(Status::InitializationFailed(error));
                return Step::Ended;
            }
        };
        if !self.statuses.report(Status::InitializationSucceeded) {
            return Step::Ended;
        }
        self.stage = Stage::StandBy(Box::new(session));
        Step::Initialized
    }

    /// Stand By: takes the next command (waits for one when `block`).
    fn stand_by(&mut self, mut session: Box<S>, block: bool) -> Step {
        let command = if block {
            self.commands.recv().map_err(|_| TryRecvError::Disconnected)
        } else {
            self.commands.try_recv()
        };
        let command = match command {
            Ok(command) => command,
            Err(TryRecvError::Empty) => {
                self.stage = Stage::StandBy(session);
                return Step::Waiting;
            }
            Err(TryRecvError::Disconnected) => return Step::Ended,
        };
        match command {
            Command::StartIteration
            | Command::SkipIteration { .. }
            | Command::ResumeIteration { .. } => {
                if !self.statuses.report(Status::IterationStarted) {
                    return Step::Ended;
                }
                let credit = match command {
                    Command::ResumeIteration {
                        delivered,
                        past,
                        careful,
                    } => Credit::resuming(delivered, past, careful, session.flow()),
                    Command::SkipIteration {
                        delivered,
                        past,
                        careful,
                    } => {
                        let mut credit = Credit::resuming(delivered, past, careful, session.flow());
                        credit.skip = true;
                        credit
                    }
                    _ => Credit::new(false),
                };
                if credit.skip {
                    // The plugin's fast path runs the whole pass at once.
                    match session.skip_whole_pass(&self.interrupt) {
                        Ok(true) => {
                            if !self.statuses.report(Status::IterationFinished) {
                                return Step::Ended;
                            }
                            self.stage = Stage::Finishing(session);
                            return Step::PassEnded;
                        }
                        Ok(false) => {}
                        Err(stop) => return self.fail(stop),
                    }
                }
                match session.begin_pass(&self.interrupt) {
                    Ok(()) => {
                        self.stage = Stage::Passing(session, credit);
                        Step::Moved
                    }
                    Err(stop) => self.fail(stop),
                }
            }
            // Leftovers of a pass that already ended.
            Command::StopIteration | Command::Consumed { .. } => {
                self.stage = Stage::StandBy(session);
                Step::Moved
            }
            Command::Abort => Step::Ended,
        }
    }

    /// In a pass: one turn of producing.
    fn pass(&mut self, mut session: Box<S>, mut credit: Credit, block: bool) -> Step {
        match self.turn(&mut *session, &mut credit, block) {
            Ok(Turn::Batch) => {
                self.stage = Stage::Passing(session, credit);
                Step::Produced
            }
            Ok(Turn::Nothing) => {
                self.stage = Stage::Passing(session, credit);
                Step::Moved
            }
            Ok(Turn::Full) => {
                self.stage = Stage::Passing(session, credit);
                Step::Waiting
            }
            Ok(Turn::Finished) => {
                if !self.statuses.report(Status::IterationFinished) {
                    return Step::Ended;
                }
                self.stage = Stage::Finishing(session);
                Step::PassEnded
            }
            Ok(Turn::Exit) => Step::Ended,
            Err(stop) => self.fail(stop),
        }
    }

    /// Finishing: back to Stand By once the session ended its pass.
    fn finish(&mut self, mut session: Box<S>) -> Step {
        if let Err(stop) = session.end_pass(&self.interrupt) {
            return self.fail(stop);
        }
        self.stage = Stage::StandBy(session);
        Step::Moved
    }

    /// Reports a failure that ends the worker.
    fn fail(&mut self, stop: Stop) -> Step {
        if let Stop::Failed(error) = stop {
            self.statuses.report(Status::IteratorFailed(error));
        }
        Step::Ended
    }

    /// One turn of a pass: takes a command if one is queued (waits for one
    /// when the caller has no room and `block`), or asks the session for a
    /// batch while the caller has room and reports it.
    fn turn(&self, session: &mut S, credit: &mut Credit, block: bool) -> Result<Turn, Stop> {
        let flow = session.flow();
        // Commands first: they are checked between every two batches.
        let full = credit.full(flow);
        let command = if full && block {
            match self.commands.recv() {
                Ok(command) => Some(command),
                Err(_) => return Ok(Turn::Exit),
            }
        } else {
            match self.commands.try_recv() {
                Ok(command) => Some(command),
                Err(TryRecvError::Empty) if full => return Ok(Turn::Full),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return Ok(Turn::Exit),
            }
        };
        match command {
            Some(Command::Consumed { items, bytes }) => {
                credit.returned(items, bytes);
                return Ok(Turn::Nothing);
            }
            Some(Command::StopIteration) => return Ok(Turn::Finished),
            Some(Command::Abort) => return Ok(Turn::Exit),
            Some(
                command @ (Command::StartIteration
                | Command::SkipIteration { .. }
                | Command::ResumeIteration { .. }),
            ) => {
                self.statuses.report(Status::UnexpectedCommand(command));
                return Ok(Turn::Exit);
            }
            None => {}
        }
        if credit.to_skip > 0 {
            // A resumed pass drops the items delivered before its position,
            // never more: inside the plugin where it has the fast path (each
            // prompt answer reported as progress), else as the guest gives
            // them (at most the items asked for).
            let asked = u32::try_from(credit.to_skip).unwrap_or(u32::MAX);
            let skipped = session.skip_items(credit.to_skip, &self.interrupt);
            if let Some(dropped) = self.failed_at(credit, asked, skipped)? {
                if dropped > credit.to_skip {
                    return Err(Stop::Failed(Error::new(
                        ErrorKind::Protocol,
                        format!(
                            "the plugin broke the resume contract: `skip` of {} items said it \
                             dropped {dropped}",
                            credit.to_skip
                        ),
                    )));
                }
                // 0: the pass is over (the position was past its end).
                credit.to_skip = if dropped == 0 {
                    0
                } else {
                    credit.to_skip - dropped.min(credit.to_skip)
                };
                credit.seen += dropped;
                return Ok(self.dropped(credit, &WorkerBatch::default()));
            }
            let max_items = credit.to_skip.min(MAX_BATCH_ITEMS as u64) as u32;
            let max_bytes = MAX_BATCH_BYTES as u32;
            let batch = session.next_batch(max_items, max_bytes, &self.interrupt);
            let Some(batch) = self.failed_at(credit, max_items, batch)? else {
                return Ok(Turn::Finished);
            };
            credit.to_skip = credit.to_skip.saturating_sub(u64::from(batch.count));
            return Ok(self.dropped(credit, &batch));
        }
        let (max_items, max_bytes) = credit.next_bounds(flow);
        let batch = session.next_batch(max_items, max_bytes, &self.interrupt);
        let Some(batch) = self.failed_at(credit, max_items, batch)? else {
            return Ok(Turn::Finished);
        };
        if credit.skip {
            return Ok(self.dropped(credit, &batch));
        }
        let batch = match flow.keep {
            Some(stride) => credit.keep(stride, batch),
            None => {
                credit.seen += u64::from(batch.count);
                batch
            }
        };
        if batch.count == 0 {
            // None of these items is this worker's: on to the next batch.
            return Ok(Turn::Nothing);
        }
        credit.produced(&batch);
        if self.statuses.report(Status::Items(batch)) {
            Ok(Turn::Batch)
        } else {
            Ok(Turn::Exit)
        }
    }

    /// A `next` call that failed tells the caller where (`FailedAt`) before
    /// its `IteratorFailed`.
    fn failed_at<T>(
        &self,
        credit: &Credit,
        asked: u32,
        result: Result<T, Stop>,
    ) -> Result<T, Stop> {
        if let Err(Stop::Failed(_)) = &result {
            self.statuses.report(Status::FailedAt {
                item: credit.seen,
                asked,
                dropping: credit.to_skip > 0,
            });
        }
        result
    }

    /// Drops `batch` (a skipped pass's, or items before a resumed pass's
    /// position); an empty batch tells the caller the worker is busy (its
    /// inactivity timeout counts silence, not work). Each costs one item
    /// of the caller's credit, which the caller gives back as it takes it:
    /// the reports never pile up unread.
    fn dropped(&self, credit: &mut Credit, batch: &WorkerBatch) -> Turn {
        credit.seen += u64::from(batch.count);
        credit.items_ahead += 1;
        let progress = WorkerBatch {
            frames: Vec::new(),
            count: 0,
        };
        if self.statuses.report(Status::Items(progress)) {
            Turn::Batch
        } else {
            Turn::Exit
        }
    }
}

#[cfg(test)]
mod tests;
