//! An [`Iterable`]: a generator's iterable living in its workers, made by
//! an [`IterableBuilder`] (`builder.rs`), iterated by passes (`pass/`, and
//! the owned [`Batches`] of `batches.rs`).

mod batches;
mod builder;

use std::sync::Arc;

use sandgen_wire::Encoding;
use serde::de::DeserializeOwned;

use crate::cache::Source;
use crate::caller::Workers;
use crate::error::Error;
use crate::failure::Failure;
pub use crate::iterable::batches::Batches;
pub use crate::iterable::builder::{IterableBuilder, MAX_WORKERS};
use crate::pass::{NextBatch, Pass, PassCore, RawPass};
use crate::position::{Binding, Position};

/// A generator's iterable, living in sandboxed workers: iterate it any
/// number of times, one pass at a time.
///
/// Each call to [`iter`](Iterable::iter) (or [`iter_raw`](Iterable::iter_raw),
/// [`batches`](Iterable::batches)) starts a new full pass over the same
/// guest objects (one per worker), whose state persists across passes.
///
/// - Only one pass may be live at a time; starting another while one lives
///   gives an [`ErrorKind::Busy`](crate::ErrorKind::Busy) error.
/// - Dropping a pass early stops every worker's production at once; the
///   next pass is a full new one.
/// - After an error (the plugin's, a trap, a timeout) the workers are gone
///   and every later pass fails with [`ErrorKind::Closed`](crate::ErrorKind::Closed).
/// - Dropping the iterable ends the workers within milliseconds, whether
///   they are idle or busy.
pub struct Iterable {
    workers: Workers,
    /// What its positions bind to (but the plugin's id).
    binding: Binding,
    /// The plugin's component, for its id (not the plugin: an iterable
    /// outlives its plugin and engine).
    source: Source,
}

impl std::fmt::Debug for Iterable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iterable")
            .field("generator", &self.workers.generator())
            .field("encoding", &self.workers.encoding())
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Iterable {
    pub(crate) fn new(workers: Workers, binding: Binding, source: Source) -> Iterable {
        Iterable {
            workers,
            binding,
            source,
        }
    }

    /// The failures its passes survived, oldest first: each worker
    /// restarted (with [`OnFailure::Restart`](crate::OnFailure::Restart) or
    /// [`Skip`](crate::OnFailure::Skip)), with the worker, the pass, where
    /// it stood, the item passed over, and the error. A pass that fails
    /// for good returns its error as before; the failures it survived
    /// until then are here too.
    pub fn failures(&self) -> Vec<Failure> {
        self.workers.failures()
    }

    /// Where the run stands, to resume it exactly
    /// ([`IterableBuilder::resume`]): during a pass, after the items it
    /// delivered so far (take it between items, on the thread that
    /// iterates); between passes, before the next pass; after a pass that
    /// failed, where it failed. A pass that ended, or was dropped early, is
    /// over: the position is then at the start of the next pass, as the
    /// next pass of this iterable would start.
    ///
    /// A [`Batches`] pass counts a batch as delivered when it hands it
    /// over: a caller that hands its items on one by one (or stacks them)
    /// takes [`position_before`](Iterable::position_before) the items it
    /// still holds.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), sandgen::Error> {
    /// let plugin = sandgen::Engine::new()?.load("plugin.wasm")?;
    /// let iterable = plugin.generator("range").args(&10u64).build()?;
    /// let mut pass = iterable.iter::<u64>()?;
    /// pass.next();
    /// pass.next();
    /// let position = iterable.position();
    /// assert_eq!((position.pass(), position.items()), (0, 2));
    /// drop(pass);
    /// assert_eq!((iterable.position().pass(), iterable.position().items()), (1, 0));
    /// # Ok(())
    /// # }
    /// ```
    pub fn position(&self) -> Position {
        self.position_before(&[])
    }

    /// The [`position`](Iterable::position) before the last items of the
    /// pass that the caller was handed but has not used (read ahead, held
    /// in a buffer): `unused` names them as runs of `(worker, items)` in
    /// delivery order, as [`Batch::workers`](crate::Batch::workers) gives
    /// them. Resuming there gives those items again. Between passes no
    /// item is held, and `unused` is ignored.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), sandgen::Error> {
    /// let plugin = sandgen::Engine::new()?.load("plugin.wasm")?;
    /// let iterable = std::sync::Arc::new(plugin.generator("range").args(&10u64).build()?);
    /// let mut batches = iterable.batches()?;
    /// let batch = batches.next_batch().expect("a batch")?;
    /// // One item of the batch used, the rest held.
    /// let mut unused = batch.workers().to_vec();
    /// unused[0].1 -= 1;
    /// let position = iterable.position_before(&unused);
    /// assert_eq!(position.items(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn position_before(&self, unused: &[(usize, usize)]) -> Position {
        let (pass, delivered, next_worker) = self.workers.progress().snapshot_before(unused);
        let mut binding = self.binding.clone();
        binding.plugin = self.source.content_id();
        Position::new(pass, delivered, next_worker, binding)
    }

    /// The generator's name.
    pub fn generator(&self) -> &str {
        self.workers.generator()
    }

    /// The encoding of items.
    pub fn encoding(&self) -> Encoding {
        self.workers.encoding()
    }

    /// How many workers run the generator.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The id of the (first) worker process, in [`Isolation::Process`](crate::Isolation::Process);
    /// `None` for worker threads. (Python: `Iterable.worker_pid`.)
    pub fn worker_pid(&self) -> Option<u32> {
        self.workers.pids().first().copied()
    }

    /// The ids of every worker process, by worker index, in
    /// [`Isolation::Process`](crate::Isolation::Process); empty for worker threads. (Python:
    /// `Iterable.worker_pids`.)
    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers.pids()
    }

    /// The old name of [`worker_pid`](Self::worker_pid).
    #[deprecated(since = "0.1.0", note = "renamed to `worker_pid`, as in Python")]
    pub fn worker_process_id(&self) -> Option<u32> {
        self.worker_pid()
    }

    /// The old name of [`worker_pids`](Self::worker_pids).
    #[deprecated(since = "0.1.0", note = "renamed to `worker_pids`, as in Python")]
    pub fn worker_process_ids(&self) -> Vec<u32> {
        self.worker_pids()
    }

    /// Starts a pass whose items are decoded as `T`.
    ///
    /// The workers start producing at once, ahead of the caller. A single
    /// worker thread ([`Isolation::Thread`](crate::Isolation::Thread), one worker) makes its first
    /// batch during this call, on the calling thread (so the first item
    /// crosses no thread), and the rest on a thread of its own; the
    /// inactivity timeout of that first batch counts from this call, its
    /// errors still come from the iterator, and [`close`](Iterable::close)
    /// from another thread still stops it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Busy`](crate::ErrorKind::Busy) while another pass lives; [`ErrorKind::Closed`](crate::ErrorKind::Closed)
    /// after the worker failed. Errors of the pass itself come from the
    /// iterator.
    pub fn iter<T: DeserializeOwned>(&self) -> Result<Pass<'_, T>, Error> {
        Pass::start(&self.workers)
    }

    /// Starts a pass that yields each item's encoded bytes.
    ///
    /// # Errors
    ///
    /// As for [`Iterable::iter`].
    pub fn iter_raw(&self) -> Result<RawPass<'_>, Error> {
        RawPass::start(&self.workers)
    }

    /// Starts a pass that yields whole batches of encoded items, and that
    /// owns its share of the iterable (so it can be kept and moved freely,
    /// as a language binding needs). Batches are the cheapest way to move
    /// many small items: one wait and one hand-over per batch, not per item.
    /// With several workers in order, a batch holds the items of several
    /// workers' batches, interleaved (copied into one buffer); unordered,
    /// each is one worker's batch.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), sandgen::Error> {
    /// use std::sync::Arc;
    ///
    /// let plugin = sandgen::Engine::new()?.load("plugin.wasm")?;
    /// let iterable = Arc::new(plugin.generator("range").args(&10u64).build()?);
    /// let mut batches = iterable.batches()?;
    /// let mut count = 0;
    /// while let Some(batch) = batches.next_batch() {
    ///     count += batch?.items().count();
    /// }
    /// assert_eq!(count, 10);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`Iterable::iter`].
    pub fn batches(self: &Arc<Self>) -> Result<Batches, Error> {
        Batches::start(Arc::clone(self))
    }

    /// Runs the next pass to its end in the workers without sending its
    /// items to the caller. What the plugin carries from pass to pass (a
    /// shuffle drawn anew each pass, a pass counter) moves on as if the
    /// pass had been read; the workers still produce the pass, but nothing
    /// is moved or decoded. This is how a training loop starts at epoch `k`
    /// with the items it would have had after reading epochs `0..k`: skip
    /// `k` passes, then iterate.
    ///
    /// The inactivity timeout applies as in a pass: the workers report
    /// each batch they drop, so only a worker that produces nothing for
    /// that long times out.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), sandgen::Error> {
    /// let plugin = sandgen::Engine::new()?.load("plugin.wasm")?;
    /// let iterable = plugin.generator("shuffled").seed(7).build()?;
    /// iterable.skip_pass()?; // epoch 0, run but not read
    /// let epoch_1: Vec<u64> = iterable.iter()?.collect::<Result<_, _>>()?;
    /// # let _ = epoch_1;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`Iterable::iter`], and whatever error ends the pass (a trap,
    /// the plugin's error, the timeout), as a pass that is read reports it.
    pub fn skip_pass(&self) -> Result<(), Error> {
        let mut core = PassCore::start(&self.workers, true, true)?;
        loop {
            // No batch comes (the workers send none), and with no bound of
            // its own the wait ends only at the end of the pass or in error.
            if let NextBatch::End = core.next_batch(None)? {
                return Ok(());
            }
        }
    }

    /// As [`skip_pass`](Iterable::skip_pass), as [`Batches`] that a
    /// language binding waits on in bounded slices
    /// ([`Batches::next_batch_within`]): it yields no batch, and
    /// [`NextBatch::End`] once the pass was run.
    ///
    /// # Errors
    ///
    /// As for [`Iterable::iter`].
    pub fn skip_pass_batches(self: &Arc<Self>) -> Result<Batches, Error> {
        Batches::skip(Arc::clone(self))
    }

    /// Ends the workers now, as dropping the iterable does, and waits for
    /// them (up to a second, then a worker process is killed). A pass that
    /// is live ends with [`ErrorKind::Closed`](crate::ErrorKind::Closed), and so does every later
    /// pass. Closing twice does nothing more.
    pub fn close(&self) {
        self.workers.close();
    }

    /// Whether [`close`](Iterable::close) was called.
    pub fn is_closed(&self) -> bool {
        self.workers.is_closed()
    }

    /// The caller's side of the workers, for the passes.
    pub(crate) fn caller(&self) -> &Workers {
        &self.workers
    }
}
