//! Passes over an [`Iterable`]: the items of its workers, merged in order
//! (round-robin by worker index, one item from each worker that has not
//! finished) or as they come (whole batches), with the back-pressure of
//! each worker kept and every wait bounded by the inactivity timeout.

use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sandgen_wire::Encoding;
use sandgen_wire::frame::{Frames, FramesView};
use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::Error;
use crate::iterable::Iterable;
use crate::protocol::{Command, Status};

/// What one worker has delivered to the caller in the current pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Items.
    pub items: u64,
    /// Bytes of encoded items.
    pub bytes: u64,
}

/// One worker's share of a pass.
#[derive(Default)]
struct LaneState {
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
}

impl LaneState {
    /// Whether the worker will give no more items in this pass.
    fn exhausted(&self) -> bool {
        self.finished && self.frames.left() == 0
    }
}

/// The state shared by [`Pass`], [`RawPass`] and [`Batches`]: `I` is how
/// the pass holds its iterable (borrowed, or shared for [`Batches`]).
struct PassCore<I: Deref<Target = Iterable>> {
    iterable: I,
    lanes: Vec<LaneState>,
    /// In order: the worker whose item comes next. Unordered: the worker
    /// whose batch is being read.
    cursor: usize,
    /// The pass ended, failed or was stopped.
    done: bool,
    /// When the current wait for the workers began (the inactivity timeout
    /// counts the time the caller waits, across short waits).
    waiting_since: Option<Instant>,
    /// What each worker delivered so far in this pass.
    delivered: Vec<Delivered>,
    /// An error met while the pass started, for the first wait.
    pending: Option<Error>,
}

/// What a wait for a worker's next batch found.
enum Filled {
    /// The lane has a batch.
    Batch(usize),
    /// Every worker's pass ended.
    End,
    /// Nothing in the time given.
    Pending,
}

impl<I: Deref<Target = Iterable>> PassCore<I> {
    /// Starts a pass. With `inline`, a parked worker (`worker/thread.rs`)
    /// runs on this thread up to its pass's first batch, as the caller
    /// will wait for it without a bound of its own; otherwise it starts on
    /// a thread, producing while the caller goes on.
    fn start(iterable: I, inline: bool) -> Result<Self, Error> {
        iterable.begin_pass()?;
        let lanes = iterable
            .lanes
            .iter()
            .map(|lane| {
                let _ = lane.worker.queues.commands.send(Command::StartIteration);
                LaneState {
                    ordinal: lane.starts_sent.fetch_add(1, Ordering::SeqCst) + 1,
                    last_heard: Some(Instant::now()),
                    ..LaneState::default()
                }
            })
            .collect();
        let workers = iterable.lanes.len();
        let pending = (0..workers).find_map(|lane| iterable.start_parked(lane, inline).err());
        Ok(PassCore {
            iterable,
            lanes,
            cursor: 0,
            done: false,
            waiting_since: None,
            delivered: vec![Delivered::default(); workers],
            pending,
        })
    }

    /// The next item's bytes, `None` at the end of the pass or after an
    /// error.
    fn next_frame(&mut self) -> Option<Result<&[u8], Error>> {
        let lane = match self.next_lane(None) {
            Ok(Filled::Batch(lane)) => lane,
            Ok(Filled::End | Filled::Pending) => return None,
            Err(error) => return Some(Err(error)),
        };
        Some(Ok(self.take_item(lane)))
    }

    /// Takes the next item of `lane`, which has one, and moves on.
    fn take_item(&mut self, lane: usize) -> &[u8] {
        if self.lanes[lane].frames.left() == 1 {
            // The last item of the batch leaves the queue now: the worker
            // may produce that much more.
            self.consumed(lane);
        }
        if self.iterable.in_order {
            self.cursor = (lane + 1) % self.lanes.len();
        }
        let item = self.lanes[lane]
            .frames
            .next_frame()
            .expect("the lane has an item");
        let delivered = &mut self.delivered[lane];
        delivered.items += 1;
        delivered.bytes += item.len() as u64;
        item
    }

    /// Finds the worker that gives the next item and makes sure it has a
    /// batch in hand, waiting for it up to `wait` (`None`: as long as the
    /// inactivity timeout allows).
    fn next_lane(&mut self, wait: Option<Duration>) -> Result<Filled, Error> {
        if let Some(error) = self.pending.take() {
            return Err(self.failed(error));
        }
        if self.done {
            return Ok(Filled::End);
        }
        // The per-item path: the worker at the cursor has an item in hand.
        if self.lanes[self.cursor].frames.left() > 0 {
            return Ok(Filled::Batch(self.cursor));
        }
        let deadline = wait.map(|wait| Instant::now() + wait);
        let left = |deadline: Option<Instant>| {
            deadline.map(|d: Instant| d.saturating_duration_since(Instant::now()))
        };
        loop {
            if self.lanes.iter().all(LaneState::exhausted) {
                self.done = true;
                return Ok(Filled::End);
            }
            let waiting_on: Vec<usize> = if self.iterable.in_order {
                let lane = self.cursor;
                if self.lanes[lane].frames.left() > 0 {
                    return Ok(Filled::Batch(lane));
                }
                if self.lanes[lane].finished {
                    self.cursor = (lane + 1) % self.lanes.len();
                    continue;
                }
                vec![lane]
            } else {
                if self.lanes[self.cursor].frames.left() > 0 {
                    return Ok(Filled::Batch(self.cursor));
                }
                let mut lanes: Vec<usize> = (0..self.lanes.len())
                    .filter(|&lane| !self.lanes[lane].finished)
                    .collect();
                // The longest silent first: it is the one named if all
                // stay silent.
                lanes.sort_by_key(|&lane| self.lanes[lane].last_heard);
                lanes
            };
            let since = *self.waiting_since.get_or_insert_with(Instant::now);
            let received =
                self.iterable
                    .recv_any_for(&waiting_on, left(deadline), since, "iteration");
            let (lane, status) = match received {
                Ok(Some(received)) => received,
                Ok(None) => return Ok(Filled::Pending),
                Err(error) => return Err(self.failed(error)),
            };
            self.waiting_since = Some(Instant::now());
            self.lanes[lane].last_heard = self.waiting_since;
            match self.take(lane, status) {
                Ok(true) => {
                    self.waiting_since = None;
                    if !self.iterable.in_order {
                        self.cursor = lane;
                    }
                    // In order, the loop finds the batch at the cursor (a
                    // worker that was waited for is at the cursor).
                }
                Ok(false) => {}
                Err(error) => return Err(self.failed(error)),
            }
        }
    }

    /// Handles one status of worker `lane`: `true` when it brought a batch.
    fn take(&mut self, lane: usize, status: Status) -> Result<bool, Error> {
        let iterable = &*self.iterable;
        let state = &mut self.lanes[lane];
        match status {
            Status::IterationStarted => {
                let seen = iterable.lanes[lane]
                    .starts_seen
                    .fetch_add(1, Ordering::SeqCst)
                    + 1;
                state.started = seen == state.ordinal;
                Ok(false)
            }
            // Leftovers of an earlier pass that was stopped early.
            Status::Items(_) | Status::IterationFinished if !state.started => Ok(false),
            Status::Items(batch) => {
                state.batch_items = batch.count;
                let read =
                    std::mem::replace(&mut state.frames, Frames::new(batch.frames, batch.count));
                iterable.lanes[lane].worker.recycle(read.into_buf());
                Ok(state.frames.left() > 0)
            }
            Status::IterationFinished => {
                state.finished = true;
                Ok(false)
            }
            // A worker that was closed under a live pass may report its own
            // end (a killed process): the pass was closed.
            Status::IteratorFailed(_) if iterable.is_closed() => Err(iterable.closed_error()),
            Status::IteratorFailed(error) => {
                let error = iterable.named(lane, error);
                iterable.fail(&error);
                Err(error)
            }
            other => Err(iterable.protocol_error(lane, &other, "iteration")),
        }
    }

    /// Ends the pass with `error`: the other workers stop producing.
    fn failed(&mut self, error: Error) -> Error {
        self.stop();
        error
    }

    /// Tells worker `lane` that its current batch left the queue.
    fn consumed(&self, lane: usize) {
        let state = &self.lanes[lane];
        let _ = self.iterable.lanes[lane]
            .worker
            .queues
            .commands
            .send(Command::Consumed {
                items: state.batch_items,
                bytes: state.frames.bytes() as u64,
            });
    }

    /// Hands the whole current batch of `lane` to the caller.
    fn take_batch(&mut self, lane: usize) -> Batch {
        if self.lanes[lane].frames.left() > 0 {
            self.consumed(lane);
            let delivered = &mut self.delivered[lane];
            delivered.items += u64::from(self.lanes[lane].frames.left());
            delivered.bytes += self.lanes[lane].frames.bytes() as u64;
        }
        Batch {
            frames: std::mem::take(&mut self.lanes[lane].frames),
        }
    }

    /// In order with several workers: as many items as the workers' batches
    /// in hand give round-robin, waiting only for the first; copied into
    /// one batch.
    fn take_merged(&mut self, first: usize) -> Batch {
        let mut buf = Vec::new();
        let mut count = 0u32;
        let mut lane = first;
        loop {
            if self.lanes[lane].frames.left() == 0 {
                if self.lanes[lane].finished && !self.lanes.iter().all(LaneState::exhausted) {
                    // A finished worker is passed over.
                    lane = (lane + 1) % self.lanes.len();
                    self.cursor = lane;
                    continue;
                }
                break;
            }
            let item = self.take_item(lane);
            buf.extend_from_slice(&(item.len() as u32).to_le_bytes());
            buf.extend_from_slice(item);
            count += 1;
            lane = self.cursor;
        }
        Batch {
            frames: Frames::new(buf, count),
        }
    }

    /// The next batch for [`Batches`].
    fn next_batch(&mut self, wait: Option<Duration>) -> Result<NextBatch, Error> {
        match self.next_lane(wait)? {
            Filled::End => Ok(NextBatch::End),
            Filled::Pending => Ok(NextBatch::Pending),
            Filled::Batch(lane) if self.iterable.in_order && self.lanes.len() > 1 => {
                Ok(NextBatch::Batch(self.take_merged(lane)))
            }
            Filled::Batch(lane) => Ok(NextBatch::Batch(self.take_batch(lane))),
        }
    }

    /// Ends the pass from the caller's side: the workers stop producing.
    fn stop(&mut self) {
        if !self.done {
            self.done = true;
            for (lane, state) in self.lanes.iter().enumerate() {
                if !state.finished {
                    let _ = self.iterable.lanes[lane]
                        .worker
                        .queues
                        .commands
                        .send(Command::StopIteration);
                }
            }
        }
        for state in &mut self.lanes {
            state.frames = Frames::default();
        }
    }
}

impl<I: Deref<Target = Iterable>> Drop for PassCore<I> {
    fn drop(&mut self) {
        self.stop();
        self.iterable.end_pass();
    }
}

/// One pass over an [`Iterable`], yielding items decoded as `T`.
///
/// `next` blocks until a worker has produced the next item (or the
/// inactivity timeout passes). The iterator is fused: after the pass ends or
/// fails it yields `None`. Dropping it before the end stops the workers'
/// production at once.
pub struct Pass<'a, T> {
    core: PassCore<&'a Iterable>,
    item: PhantomData<fn() -> T>,
}

impl<'a, T> Pass<'a, T> {
    pub(crate) fn start(iterable: &'a Iterable) -> Result<Self, Error> {
        Ok(Pass {
            core: PassCore::start(iterable, true)?,
            item: PhantomData,
        })
    }
}

impl<T> std::fmt::Debug for Pass<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pass")
            .field("generator", &self.core.iterable.generator())
            .finish_non_exhaustive()
    }
}

impl<T> Pass<'_, T> {
    /// What each worker delivered so far in this pass, by worker index
    /// (for progress reports).
    pub fn delivered(&self) -> &[Delivered] {
        &self.core.delivered
    }
}

impl<T: DeserializeOwned> Iterator for Pass<'_, T> {
    type Item = Result<T, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let encoding = self.core.iterable.encoding();
        let item = match self.core.next_frame()? {
            Ok(bytes) => codec::decode_item(encoding, bytes),
            Err(error) => Err(error),
        };
        if item.is_err() {
            // A failed decode ends the pass like any other error.
            self.core.stop();
        }
        Some(item)
    }
}

/// One pass over an [`Iterable`], yielding each item's encoded bytes.
///
/// [`next_item`](RawPass::next_item) lends the bytes without copying; the
/// [`Iterator`] implementation copies each into a `Vec<u8>`. Otherwise it
/// behaves as [`Pass`].
pub struct RawPass<'a> {
    core: PassCore<&'a Iterable>,
}

impl<'a> RawPass<'a> {
    pub(crate) fn start(iterable: &'a Iterable) -> Result<Self, Error> {
        Ok(RawPass {
            core: PassCore::start(iterable, true)?,
        })
    }

    /// The next item's encoded bytes, without copying them.
    pub fn next_item(&mut self) -> Option<Result<&[u8], Error>> {
        self.core.next_frame()
    }

    /// What each worker delivered so far in this pass, by worker index
    /// (for progress reports).
    pub fn delivered(&self) -> &[Delivered] {
        &self.core.delivered
    }
}

impl std::fmt::Debug for RawPass<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawPass")
            .field("generator", &self.core.iterable.generator())
            .finish_non_exhaustive()
    }
}

impl Iterator for RawPass<'_> {
    type Item = Result<Vec<u8>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.next_item()?.map(<[u8]>::to_vec))
    }
}

/// One pass over an [`Iterable`], yielding whole batches of encoded items;
/// made by [`Iterable::batches`].
///
/// It holds its share of the iterable, so it may outlive the caller's
/// handle; [`Iterable::close`] ends it with
/// [`ErrorKind::Closed`](crate::ErrorKind::Closed). Dropping it before the
/// end stops the workers' production at once, as for [`Pass`].
pub struct Batches {
    core: PassCore<Arc<Iterable>>,
}

impl std::fmt::Debug for Batches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches")
            .field("generator", &self.core.iterable.generator())
            .finish_non_exhaustive()
    }
}

/// What [`Batches::next_batch_within`] found.
#[derive(Debug)]
pub enum NextBatch {
    /// A batch of items.
    Batch(Batch),
    /// The pass ended.
    End,
    /// Nothing arrived in the time given; the pass goes on (ask again).
    Pending,
}

impl Batches {
    pub(crate) fn start(iterable: Arc<Iterable>) -> Result<Self, Error> {
        Ok(Batches {
            core: PassCore::start(iterable, false)?,
        })
    }

    /// The next batch, waiting as long as the inactivity timeout allows;
    /// `None` at the end of the pass or after an error.
    pub fn next_batch(&mut self) -> Option<Result<Batch, Error>> {
        match self.core.next_batch(None) {
            Ok(NextBatch::Batch(batch)) => Some(Ok(batch)),
            Ok(NextBatch::End | NextBatch::Pending) => None,
            Err(error) => Some(Err(error)),
        }
    }

    /// The next batch, waiting at most `wait` for it (less when the
    /// inactivity timeout ends first, which is an
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) error as in
    /// [`next_batch`](Self::next_batch)). The inactivity timeout counts the
    /// time spent waiting, across calls. For callers that must look up
    /// between waits (a language binding checking for a user's interrupt).
    ///
    /// # Errors
    ///
    /// The errors of the pass, as for [`Iterable::iter`].
    pub fn next_batch_within(&mut self, wait: Duration) -> Result<NextBatch, Error> {
        self.core.next_batch(Some(wait))
    }

    /// Ends the pass early, as dropping it does: the workers stop producing.
    pub fn stop(&mut self) {
        self.core.stop();
    }

    /// The iterable this pass runs over.
    pub fn iterable(&self) -> &Iterable {
        &self.core.iterable
    }

    /// The encoding of the items.
    pub fn encoding(&self) -> Encoding {
        self.core.iterable.encoding()
    }
}

/// One batch of encoded items, in the order they are delivered.
#[derive(Debug, Default)]
pub struct Batch {
    frames: Frames,
}

impl Batch {
    /// How many items the batch holds.
    pub fn len(&self) -> usize {
        self.frames.left() as usize
    }

    /// Whether the batch holds no item.
    pub fn is_empty(&self) -> bool {
        self.frames.left() == 0
    }

    /// The batch's size in bytes, framing included.
    pub fn bytes(&self) -> usize {
        self.frames.bytes()
    }

    /// Each item's encoded bytes, without copying them.
    pub fn items(&self) -> BatchItems<'_> {
        BatchItems {
            frames: self.frames.view(),
        }
    }
}

/// The items of a [`Batch`]; made by [`Batch::items`].
#[derive(Debug)]
pub struct BatchItems<'a> {
    frames: FramesView<'a>,
}

impl<'a> Iterator for BatchItems<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        self.frames.next_frame()
    }
}
