//! The core of every pass: each worker's batch in hand, merged in order
//! (round-robin by worker index, one item from each worker that has not
//! finished) or as they come (whole batches from whichever worker has one),
//! with each worker's back-pressure returned as its batches leave, and
//! every wait bounded by the inactivity timeout. Batches, not items, cross
//! threads.

use std::ops::Deref;
use std::time::{Duration, Instant};

use sandgen_wire::frame::Frames;

use crate::caller::{FailedAt, Workers};
use crate::error::{Error, ErrorKind};
use crate::failure::{Failure, OnFailure, item_failure, restartable};
use crate::pass::{Batch, Delivered, NextBatch};
use crate::protocol::{Command, Status};

/// One worker's share of a pass.
#[derive(Default)]
struct WorkerPass {
    /// The ordinal of this pass's `StartIteration` for the worker.
    ordinal: u64,
    /// The worker's current batch.
    frames: Frames,
    batch_items: u32,
    /// The worker's `IterationStarted` of this pass arrived.
    started: bool,
    /// The worker's pass ended (its last batch may still have items).
    finished: bool,
    /// When the worker last sent anything (or the pass began): the longest
    /// silent is named when every worker was silent for the whole timeout.
    last_heard: Option<Instant>,
    /// Where its last `next` call failed (`FailedAt`): the stream's item,
    /// how many it asked for, and whether it was dropping items before
    /// where it resumed.
    failed_at: Option<FailedAt>,
    /// A restarted worker passes over the stream's items before this one.
    past: u64,
}

impl WorkerPass {
    /// Whether the worker will give no more items in this pass.
    fn exhausted(&self) -> bool {
        self.finished && self.frames.left() == 0
    }
}

/// The state shared by every kind of pass ([`Pass`](crate::Pass),
/// [`RawPass`](crate::RawPass), [`Batches`](crate::Batches)): `W` is how
/// the pass holds its workers (borrowed, or shared for `Batches`).
pub(crate) struct PassCore<W: Deref<Target = Workers>> {
    pub(crate) workers: W,
    passes: Vec<WorkerPass>,
    /// In order: the worker whose item comes next. Unordered: the worker
    /// whose batch is being read.
    cursor: usize,
    /// The pass ended, failed or was stopped.
    done: bool,
    /// When the current wait for the workers began (the inactivity timeout
    /// counts the time the caller waits, across short waits).
    waiting_since: Option<Instant>,
    /// What each worker delivered so far in this pass.
    pub(crate) delivered: Vec<Delivered>,
    /// An error met while the pass started (and its worker), for the first
    /// wait.
    pending: Option<(usize, Error)>,
    /// The worker of the item taken last, one by one.
    last: Option<usize>,
    /// The pass runs without its items (`SkipIteration`).
    skip: bool,
    /// This pass, counted from 0 over the iterable's life.
    pass: u64,
    /// Workers restarted in this pass.
    restarts: u32,
}

/// What a wait for a worker's next batch found.
enum Filled {
    /// The worker has a batch.
    Batch(usize),
    /// Every worker's pass ended.
    End,
    /// Nothing in the time given.
    Pending,
}

impl<W: Deref<Target = Workers>> PassCore<W> {
    /// Starts a pass. With `inline`, a parked worker (`worker/thread.rs`)
    /// runs on this thread up to its pass's first batch, as the caller
    /// will wait for it without a bound of its own; otherwise it starts on
    /// a thread, producing while the caller goes on. With `skip`, the
    /// workers run the pass without sending its items: it yields none.
    ///
    /// The first pass of a resumed iterable starts where its position was:
    /// each worker past the items it had delivered, in order at the worker
    /// that was next (a skipped pass runs whole all the same).
    pub(crate) fn start(workers: W, inline: bool, skip: bool) -> Result<Self, Error> {
        workers.begin_pass()?;
        let count = workers.len();
        let resume = workers.progress().begin().filter(|_| !skip);
        let before = |worker: usize| resume.as_ref().map_or(0, |r| r.delivered[worker]);
        let passes = (0..count)
            .map(|worker| WorkerPass {
                ordinal: workers.start_pass(worker, skip, before(worker)),
                last_heard: Some(Instant::now()),
                ..WorkerPass::default()
            })
            .collect();
        let delivered = (0..count)
            .map(|worker| Delivered {
                items: before(worker),
                bytes: 0,
            })
            .collect();
        let cursor = resume.as_ref().map_or(0, |r| r.next_worker);
        let pending = (0..count).find_map(|worker| {
            let started = workers.start_parked(worker, inline);
            started.err().map(|error| (worker, error))
        });
        let pass = workers.progress().pass();
        Ok(PassCore {
            workers,
            passes,
            cursor,
            done: false,
            waiting_since: None,
            delivered,
            pending,
            last: None,
            skip,
            pass,
            restarts: 0,
        })
    }

    /// The next item's bytes, `None` at the end of the pass or after an
    /// error.
    pub(crate) fn next_frame(&mut self) -> Option<Result<&[u8], Error>> {
        let worker = match self.next_worker(None) {
            Ok(Filled::Batch(worker)) => worker,
            Ok(Filled::End | Filled::Pending) => return None,
            Err(error) => return Some(Err(error)),
        };
        Some(Ok(self.take_item(worker)))
    }

    /// Takes the next item of `worker`, which has one, and moves on.
    fn take_item(&mut self, worker: usize) -> &[u8] {
        if self.passes[worker].frames.left() == 1 {
            // The last item of the batch leaves the queue now: the worker
            // may produce that much more.
            self.consumed(worker);
        }
        if self.workers.in_order() {
            self.cursor = (worker + 1) % self.passes.len();
        }
        let item = self.passes[worker]
            .frames
            .next_frame()
            .expect("the worker has an item");
        let delivered = &mut self.delivered[worker];
        delivered.items += 1;
        delivered.bytes += item.len() as u64;
        let items = delivered.items;
        self.workers
            .progress()
            .delivered(worker, items, self.cursor);
        self.last = Some(worker);
        item
    }

    /// Finds the worker that gives the next item and makes sure it has a
    /// batch in hand, waiting for it up to `wait` (`None`: as long as the
    /// inactivity timeout allows).
    fn next_worker(&mut self, wait: Option<Duration>) -> Result<Filled, Error> {
        if let Some((worker, error)) = self.pending.take()
            && let Err(error) = self.recover(worker, error)
        {
            return Err(self.failed(error));
        }
        if self.done {
            return Ok(Filled::End);
        }
        // The per-item path: the worker at the cursor has an item in hand.
        if self.passes[self.cursor].frames.left() > 0 {
            return Ok(Filled::Batch(self.cursor));
        }
        let deadline = wait.map(|wait| Instant::now() + wait);
        let left = |deadline: Option<Instant>| {
            deadline.map(|d: Instant| d.saturating_duration_since(Instant::now()))
        };
        loop {
            if self.passes.iter().all(WorkerPass::exhausted) {
                self.done = true;
                return Ok(Filled::End);
            }
            let waiting_on: Vec<usize> = if self.workers.in_order() {
                let worker = self.cursor;
                if self.passes[worker].frames.left() > 0 {
                    return Ok(Filled::Batch(worker));
                }
                if self.passes[worker].finished {
                    self.cursor = (worker + 1) % self.passes.len();
                    continue;
                }
                vec![worker]
            } else {
                if self.passes[self.cursor].frames.left() > 0 {
                    return Ok(Filled::Batch(self.cursor));
                }
                let mut waiting: Vec<usize> = (0..self.passes.len())
                    .filter(|&worker| !self.passes[worker].finished)
                    .collect();
                // The longest silent first: it is the one named if all
                // stay silent.
                waiting.sort_by_key(|&worker| self.passes[worker].last_heard);
                waiting
            };
            let since = *self.waiting_since.get_or_insert_with(Instant::now);
            let received =
                self.workers
                    .recv_any_for(&waiting_on, left(deadline), since, "iteration");
            let (worker, status) = match received {
                Ok(Some(received)) => received,
                Ok(None) => return Ok(Filled::Pending),
                Err((worker, error)) => match self.recover(worker, error) {
                    Ok(()) => continue,
                    Err(error) => return Err(self.failed(error)),
                },
            };
            self.waiting_since = Some(Instant::now());
            self.passes[worker].last_heard = self.waiting_since;
            match self.take(worker, status) {
                Ok(true) => {
                    self.waiting_since = None;
                    if !self.workers.in_order() {
                        self.cursor = worker;
                    }
                    // In order, the loop finds the batch at the cursor (a
                    // worker that was waited for is at the cursor).
                }
                Ok(false) => {}
                Err(error) => match self.recover(worker, error) {
                    Ok(()) => {}
                    Err(error) => return Err(self.failed(error)),
                },
            }
        }
    }

    /// Handles one status of worker `worker`: `true` when it brought a batch.
    fn take(&mut self, worker: usize, status: Status) -> Result<bool, Error> {
        let workers = &*self.workers;
        let state = &mut self.passes[worker];
        match status {
            Status::IterationStarted => {
                state.started = workers.pass_started(worker) == state.ordinal;
                Ok(false)
            }
            // Leftovers of an earlier pass that was stopped early.
            Status::Items(_) | Status::IterationFinished if !state.started => Ok(false),
            Status::Items(batch) if batch.count == 0 => {
                // A skipped pass's sign of progress: its one item of credit
                // goes back at once.
                workers.send(worker, Command::Consumed { items: 1, bytes: 0 });
                Ok(false)
            }
            Status::Items(batch) => {
                state.batch_items = batch.count;
                let read =
                    std::mem::replace(&mut state.frames, Frames::new(batch.frames, batch.count));
                workers.recycle(worker, read.into_buf());
                Ok(state.frames.left() > 0)
            }
            Status::IterationFinished => {
                state.finished = true;
                Ok(false)
            }
            // A worker that was closed under a live pass may report its own
            // end (a killed process): the pass was closed.
            Status::IteratorFailed(_) if workers.is_closed() => Err(workers.closed_error()),
            Status::IteratorFailed(error) => Err(workers.named(worker, error)),
            Status::FailedAt {
                item,
                asked,
                dropping,
            } => {
                if state.started {
                    state.failed_at = Some((item, asked, dropping));
                }
                Ok(false)
            }
            other => Err(workers.protocol_error(worker, &other, "iteration")),
        }
    }

    /// Worker `worker` failed with `error`: as the iterable's
    /// [`OnFailure`] says and its restarts allow, a fresh worker takes its
    /// place, resumed where it stood (or past the item that failed), and
    /// the failure is recorded; otherwise the error that ends the pass. A
    /// restart that fails is a failure of its own, within the same bound.
    fn recover(&mut self, worker: usize, mut error: Error) -> Result<(), Error> {
        loop {
            let (command, past) = self.plan_restart(worker, error)?;
            let workers = &*self.workers;
            let budget = workers.max_restarts().saturating_sub(self.restarts);
            let skip_failed = workers.on_failure() == OnFailure::Skip;
            match workers.restart(worker, self.pass, command, budget, skip_failed) {
                Ok((ordinal, used)) => {
                    self.restarts += used;
                    self.passes[worker] = WorkerPass {
                        ordinal,
                        last_heard: Some(Instant::now()),
                        past,
                        ..WorkerPass::default()
                    };
                    self.waiting_since = None;
                    return Ok(());
                }
                Err((failed, used)) => {
                    // The new worker failed: what is known of where the
                    // old one failed no longer holds.
                    self.restarts += used;
                    let state = &mut self.passes[worker];
                    state.failed_at = None;
                    state.past = past;
                    error = failed;
                }
            }
        }
    }

    /// Whether and how worker `worker`, failed with `error`, is restarted:
    /// the command that resumes its replacement and what it passes over,
    /// the failure recorded (and an item passed over counted); or the
    /// error that ends the pass.
    fn plan_restart(&mut self, worker: usize, error: Error) -> Result<(Command, u64), Error> {
        let workers = &*self.workers;
        if error.kind() == ErrorKind::Closed {
            return Err(error);
        }
        // Closed meanwhile (from another thread): whatever a worker that
        // was being ended said, the pass ends as closed.
        if workers.is_closed() {
            return Err(workers.closed_error());
        }
        let on_failure = workers.on_failure();
        if on_failure == OnFailure::Stop
            || !restartable(error.kind())
            || !workers.can_restart(worker)
        {
            return Err(workers.restarts_spent(error, self.restarts));
        }
        let state = &self.passes[worker];
        let position = self.delivered[worker].items;
        // It failed while dropping the items before where it resumed: not
        // at a new item.
        let dropping = state.failed_at.is_some_and(|(_, _, dropping)| dropping);
        if self.restarts >= workers.max_restarts() {
            let error = if dropping && state.past > 0 {
                error.hint(format!(
                    "it failed again while passing over item {}: a plugin passes over an item without producing it only with the `skip` of wit/resume.wit",
                    state.past - 1
                ))
            } else {
                error
            };
            return Err(workers.restarts_spent(error, self.restarts));
        }
        // What was passed over stays passed over.
        let (mut past, mut careful, mut skipped) = (state.past, 0, None);
        if on_failure == OnFailure::Skip && item_failure(error.kind()) && !dropping {
            match state.failed_at {
                // Items before a plugin's error come in the call before; a
                // trap in a call that asked for one item is at that item.
                Some((item, asked, _))
                    if asked == 1 || error.kind() == ErrorKind::IterationFailed =>
                {
                    past = past.max(item.saturating_add(1));
                    skipped = Some(item);
                }
                // A trap in a call that asked for several: the new worker
                // asks for one at a time up to there, to find the item.
                Some((item, asked, _)) => careful = item.saturating_add(u64::from(asked)),
                None => {}
            }
        }
        self.restarts += 1;
        if let Some(item) = skipped
            && !self.skip
            && workers.keeps(worker, item)
        {
            // An item of its own passed over counts as delivered: positions
            // count the worker's items of the stream, and a resume from one
            // passes over it too. In order, it takes its turn (the worker
            // failed at its turn): the rest comes as in an undisturbed pass.
            if workers.in_order() {
                self.cursor = (worker + 1) % self.passes.len();
            }
            let delivered = &mut self.delivered[worker].items;
            *delivered += 1;
            workers
                .progress()
                .delivered(worker, *delivered, self.cursor);
        }
        let delivered = self.delivered[worker].items;
        workers.record(Failure {
            worker,
            pass: self.pass,
            position,
            skipped,
            error,
            resumed: (delivered, past),
        });
        let command = if self.skip {
            // Nothing of a skipped pass was delivered: it runs again from
            // its start, past what was passed over.
            Command::SkipIteration {
                delivered,
                past,
                careful,
            }
        } else {
            Command::ResumeIteration {
                delivered,
                past,
                careful,
            }
        };
        Ok((command, past))
    }

    /// The caller could not use the item it took last (it does not
    /// decode): the pass fails there, and its position is before that
    /// item, as after a plugin's error at it.
    pub(crate) fn refuse_last(&mut self) {
        match self.last.take() {
            Some(worker) => self.refuse(&[(worker, 1)]),
            None => self.refuse(&[]),
        }
    }

    /// The caller cannot use the last items it was handed, `unused` (runs
    /// of `(worker, items)` in delivery order): the pass fails there, its
    /// position before them.
    pub(crate) fn refuse(&mut self, unused: &[(usize, usize)]) {
        let progress = self.workers.progress();
        // In order, the first unused item comes next again.
        let first = unused
            .iter()
            .find(|&&(w, n)| n > 0 && w < self.delivered.len());
        let next = first.map_or(self.cursor, |&(worker, _)| worker);
        for &(worker, items) in unused {
            if let Some(delivered) = self.delivered.get_mut(worker) {
                delivered.items = delivered.items.saturating_sub(items as u64);
                progress.delivered(worker, delivered.items, next);
            }
        }
        progress.fail();
        self.stop();
    }

    /// Ends the pass with `error`: the workers end.
    fn failed(&mut self, error: Error) -> Error {
        self.workers.fail(&error);
        // The position stays where the pass failed.
        self.workers.progress().fail();
        self.stop();
        error
    }

    /// Tells worker `worker` that its current batch left the queue.
    fn consumed(&self, worker: usize) {
        let state = &self.passes[worker];
        self.workers.send(
            worker,
            Command::Consumed {
                items: state.batch_items,
                bytes: state.frames.bytes() as u64,
            },
        );
    }

    /// Hands the whole current batch of `worker` to the caller.
    fn take_batch(&mut self, worker: usize) -> Batch {
        if self.passes[worker].frames.left() > 0 {
            self.consumed(worker);
            let delivered = &mut self.delivered[worker];
            delivered.items += u64::from(self.passes[worker].frames.left());
            delivered.bytes += self.passes[worker].frames.bytes() as u64;
            let items = delivered.items;
            self.workers
                .progress()
                .delivered(worker, items, self.cursor);
        }
        let frames = std::mem::take(&mut self.passes[worker].frames);
        Batch::returning(worker, frames, self.workers.recycler(worker))
    }

    /// In order with several workers: as many items as the workers' batches
    /// in hand give round-robin, waiting only for the first; copied into
    /// one batch.
    fn take_merged(&mut self, first: usize) -> Batch {
        let mut buf = Vec::new();
        let mut count = 0u32;
        let mut runs: Vec<(usize, usize)> = Vec::new();
        let mut worker = first;
        loop {
            if self.passes[worker].frames.left() == 0 {
                if self.passes[worker].finished && !self.passes.iter().all(WorkerPass::exhausted) {
                    // A finished worker is passed over.
                    worker = (worker + 1) % self.passes.len();
                    self.cursor = worker;
                    continue;
                }
                break;
            }
            let item = self.take_item(worker);
            buf.extend_from_slice(&(item.len() as u32).to_le_bytes());
            buf.extend_from_slice(item);
            count += 1;
            match runs.last_mut() {
                Some((last, items)) if *last == worker => *items += 1,
                _ => runs.push((worker, 1)),
            }
            worker = self.cursor;
        }
        Batch::merged(Frames::new(buf, count), runs)
    }

    /// The next batch for [`Batches`].
    pub(crate) fn next_batch(&mut self, wait: Option<Duration>) -> Result<NextBatch, Error> {
        match self.next_worker(wait)? {
            Filled::End => Ok(NextBatch::End),
            Filled::Pending => Ok(NextBatch::Pending),
            Filled::Batch(worker) if self.workers.in_order() && self.passes.len() > 1 => {
                Ok(NextBatch::Batch(self.take_merged(worker)))
            }
            Filled::Batch(worker) => Ok(NextBatch::Batch(self.take_batch(worker))),
        }
    }

    /// Ends the pass from the caller's side: the workers stop producing.
    pub(crate) fn stop(&mut self) {
        if !self.done {
            self.done = true;
            for (worker, state) in self.passes.iter().enumerate() {
                if !state.finished {
                    self.workers.send(worker, Command::StopIteration);
                }
            }
        }
        for state in &mut self.passes {
            state.frames = Frames::default();
        }
    }
}

impl<W: Deref<Target = Workers>> Drop for PassCore<W> {
    fn drop(&mut self) {
        self.stop();
        self.workers.progress().end();
        self.workers.end_pass();
    }
}
