//! The caller's side: building an [`Iterable`], its passes, and the
//! protocol as the caller speaks it (statuses in, commands out, the
//! inactivity timeout).

use std::marker::PhantomData;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use sandgen_wire::Encoding;
use sandgen_wire::frame::Frames;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::{Error, ErrorKind};
use crate::guest::output::{OutputHandler, OutputLine, stderr_handler};
use crate::options::{DirGrant, Flow, Grants, Limits};
use crate::protocol::{Command, Status};
use crate::runtime::Loaded;
use crate::worker::task::Task;
use crate::worker::{Isolation, WorkerHandle};

/// How long dropping an iterable waits for its worker thread to end.
const TEARDOWN_GRACE: Duration = Duration::from_secs(1);

/// Configures and creates an [`Iterable`]; made by [`Plugin::generator`](crate::Plugin::generator).
///
/// Defaults (each one secure or conservative):
///
/// | option | default |
/// |---|---|
/// | [`isolation`](Self::isolation) | [`Isolation::Thread`] |
/// | [`encoding`](Self::encoding) | [`Encoding::Bincode`] |
/// | [`args`](Self::args), [`config`](Self::config) | none (the plugin sees empty bytes) |
/// | [`buffer_size`](Self::buffer_size) | 1024 items ([`DEFAULT_BUFFER_SIZE`](crate::DEFAULT_BUFFER_SIZE)) |
/// | [`buffer_bytes`](Self::buffer_bytes) | 16 MiB ([`DEFAULT_BUFFER_BYTES`](crate::DEFAULT_BUFFER_BYTES)) |
/// | [`timeout`](Self::timeout) | none |
/// | [`memory_limit`](Self::memory_limit) | 1 GiB ([`DEFAULT_MEMORY_LIMIT`](crate::DEFAULT_MEMORY_LIMIT)) |
/// | [`fuel`](Self::fuel) | unlimited |
/// | [`max_item_bytes`](Self::max_item_bytes) | 1 GiB ([`DEFAULT_MAX_ITEM_BYTES`](crate::DEFAULT_MAX_ITEM_BYTES)) |
/// | [`env`](Self::env) | no environment variables (the host's never leak) |
/// | [`dir`](Self::dir) | no directories |
/// | network | none, and there is no option to grant it |
/// | stdin | empty |
/// | guest stdout and stderr | lines to the host's stderr as `[plugin/generator stream] line` ([`on_output`](Self::on_output)) |
///
/// ```no_run
/// # fn main() -> Result<(), sandgen::Error> {
/// use std::time::Duration;
///
/// let engine = sandgen::Engine::new()?;
/// let plugin = engine.load("plugin.wasm")?;
/// let iterable = plugin
///     .generator("range")
///     .args(&10u64)
///     .buffer_size(64)
///     .timeout(Duration::from_secs(5))
///     .build()?;
/// let items: Vec<u64> = iterable.iter()?.collect::<Result<_, _>>()?;
/// assert_eq!(items, (0..10).collect::<Vec<_>>());
/// # Ok(())
/// # }
/// ```
#[must_use = "an IterableBuilder does nothing until `build` is called"]
pub struct IterableBuilder {
    plugin: Arc<Loaded>,
    generator: String,
    encoding: Encoding,
    args: Payload,
    config: Payload,
    grants: Grants,
    limits: Limits,
    flow: Flow,
    timeout: Option<Duration>,
    isolation: Isolation,
    output: Option<OutputHandler>,
}

/// Arguments or config: raw, or encoded with a given encoding.
enum Payload {
    None,
    Raw(Vec<u8>),
    Encoded(Encoding, Result<Vec<u8>, Error>),
}

impl Payload {
    fn into_bytes(self, what: &str, encoding: Encoding) -> Result<Vec<u8>, Error> {
        match self {
            Payload::None => Ok(Vec::new()),
            Payload::Raw(bytes) => Ok(bytes),
            Payload::Encoded(used, bytes) => {
                if used != encoding {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        format!(
                            "the {what} were encoded as {used:?} but the iterable uses {encoding:?}; call `encoding` before `{what}`"
                        ),
                    ));
                }
                bytes.map_err(|e| e.context(format!("invalid {what}")))
            }
        }
    }
}

impl std::fmt::Debug for IterableBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IterableBuilder")
            .field("plugin", &self.plugin.name())
            .field("generator", &self.generator)
            .field("encoding", &self.encoding)
            .finish_non_exhaustive()
    }
}

impl IterableBuilder {
    pub(crate) fn new(plugin: Arc<Loaded>, generator: &str) -> Self {
        IterableBuilder {
            plugin,
            generator: generator.to_owned(),
            encoding: Encoding::default(),
            args: Payload::None,
            config: Payload::None,
            grants: Grants::default(),
            limits: Limits::default(),
            flow: Flow::default(),
            timeout: None,
            isolation: Isolation::default(),
            output: None,
        }
    }

    /// The encoding of arguments, config and items. Set it before
    /// [`args`](Self::args) and [`config`](Self::config), which encode with
    /// it.
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// The generator's arguments, encoded with the iterable's encoding.
    pub fn args<A: Serialize + ?Sized>(mut self, args: &A) -> Self {
        self.args = Payload::Encoded(self.encoding, codec::encode(self.encoding, args));
        self
    }

    /// The generator's arguments, already encoded (passed as they are).
    pub fn args_raw(mut self, args: impl Into<Vec<u8>>) -> Self {
        self.args = Payload::Raw(args.into());
        self
    }

    /// The config for the plugin's initializer, encoded with the iterable's
    /// encoding.
    pub fn config<C: Serialize + ?Sized>(mut self, config: &C) -> Self {
        self.config = Payload::Encoded(self.encoding, codec::encode(self.encoding, config));
        self
    }

    /// The config for the plugin's initializer, already encoded.
    pub fn config_raw(mut self, config: impl Into<Vec<u8>>) -> Self {
        self.config = Payload::Raw(config.into());
        self
    }

    /// Where the worker runs: a thread of this process (the default) or a
    /// child process. Both give the same items, statuses and errors.
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// How many items the worker may produce ahead of the caller: the
    /// back-pressure. With 1, the worker is in lock-step with the caller.
    /// Must be at least 1.
    pub fn buffer_size(mut self, items: usize) -> Self {
        self.flow.buffer_size = items;
        self
    }

    /// How many bytes of items the worker may produce ahead of the caller
    /// (one batch always fits, so a single large item is never refused).
    pub fn buffer_bytes(mut self, bytes: usize) -> Self {
        self.flow.buffer_bytes = bytes;
        self
    }

    /// Inactivity timeout: when the worker reports nothing for this long
    /// (during initialization or a pass), it is stopped and the caller gets
    /// an [`ErrorKind::Timeout`] error. It restarts with every batch of
    /// items, so a slow but steady generator is never stopped.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The cap on the guest's linear memory, in bytes. Growth beyond it fails
    /// inside the guest; a guest that aborts on it gives an
    /// [`ErrorKind::MemoryLimit`] error.
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.limits.memory = bytes;
        self
    }

    /// A CPU budget, in wasmtime fuel units (about one per wasm
    /// instruction), for initialization and then for each pass. Running out
    /// is an [`ErrorKind::FuelExhausted`] error. Plugins run with fuel are
    /// compiled with fuel metering (a second compilation, on first use, and
    /// slower code), so leave it unset unless it is needed.
    pub fn fuel(mut self, units: u64) -> Self {
        self.limits.fuel = Some(units);
        self
    }

    /// The largest item, in encoded bytes, that the plugin may return; a
    /// larger one is an [`ErrorKind::Protocol`] error. Default 1 GiB
    /// ([`DEFAULT_MAX_ITEM_BYTES`](crate::DEFAULT_MAX_ITEM_BYTES)).
    pub fn max_item_bytes(mut self, bytes: u32) -> Self {
        self.limits.max_item_bytes = bytes;
        self
    }

    /// Sets an environment variable that the guest sees. The host's own
    /// environment is never visible.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.grants.env.push((key.into(), value.into()));
        self
    }

    /// Grants the guest read-only access to the host directory `host`, which
    /// it sees at `guest`.
    pub fn dir(mut self, host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        self.grants.dirs.push(DirGrant {
            host: host.into(),
            guest: guest.into(),
        });
        self
    }

    /// Handles each line the guest prints, instead of writing it to the
    /// host's stderr. Called on the worker's thread.
    pub fn on_output(mut self, handler: impl Fn(&OutputLine<'_>) + Send + Sync + 'static) -> Self {
        self.output = Some(Arc::new(handler));
        self
    }

    /// Starts the worker and waits until the plugin is initialized and the
    /// iterable created. The initializer and `create` have run exactly once
    /// when this returns.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for bad options or arguments that cannot
    /// be encoded; [`ErrorKind::InitializerFailed`] or
    /// [`ErrorKind::CreateFailed`] with the plugin's message; a trap or
    /// limit kind when the guest failed; [`ErrorKind::Timeout`].
    pub fn build(self) -> Result<Iterable, Error> {
        self.flow.validate()?;
        self.limits.validate()?;
        self.grants.validate()?;
        if self.timeout == Some(Duration::ZERO) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "timeout must be longer than zero",
            ));
        }
        let task = Task {
            generator: self.generator.clone(),
            encoding: self.encoding,
            args: self.args.into_bytes("args", self.encoding)?,
            config: self.config.into_bytes("config", self.encoding)?,
            grants: self.grants,
            limits: self.limits,
            flow: self.flow,
        };
        let output = self.output.unwrap_or_else(stderr_handler);
        let worker = WorkerHandle::spawn(&self.plugin, task, output, self.isolation)?;
        let timeout = self.timeout;
        let start_up = self.plugin.load_timeout();
        let iterable = Iterable {
            worker,
            generator: self.generator,
            encoding: self.encoding,
            timeout,
            pass_active: AtomicBool::new(false),
            starts_sent: AtomicU64::new(0),
            starts_seen: AtomicU64::new(0),
            failure: Mutex::new(None),
            closed: AtomicBool::new(false),
        };
        // Start-up (a worker process starts and reads its compiled
        // component) is sandgen's time, bounded by the load timeout; from
        // `Loaded` on, the inactivity timeout counts the plugin's own time.
        match iterable.recv_within(Some(start_up), "start-up")? {
            Status::Loaded => {}
            Status::InitializationFailed(error) => return Err(error),
            other => return Err(iterable.protocol_error(&other, "start-up")),
        }
        match iterable.recv("initialization")? {
            Status::InitializationSucceeded => Ok(iterable),
            Status::InitializationFailed(error) => Err(error),
            other => Err(iterable.protocol_error(&other, "initialization")),
        }
    }
}

/// A generator's iterable, living in a sandboxed worker: iterate it any
/// number of times, one pass at a time.
///
/// Each call to [`iter`](Iterable::iter) (or [`iter_raw`](Iterable::iter_raw))
/// starts a new full pass over the same guest object, whose state persists
/// across passes.
///
/// - Only one pass may be live at a time; starting another while one lives
///   gives an [`ErrorKind::Busy`] error.
/// - Dropping a pass early stops the worker's production at once; the next
///   pass is a full new one.
/// - After an error (the plugin's, a trap, a timeout) the worker is gone and
///   every later pass fails with [`ErrorKind::Closed`].
/// - Dropping the iterable ends the worker within milliseconds, whether it
///   is idle or busy.
pub struct Iterable {
    worker: WorkerHandle,
    generator: String,
    encoding: Encoding,
    timeout: Option<Duration>,
    pass_active: AtomicBool,
    /// `StartIteration` commands sent; a pass's `IterationStarted` is the
    /// status with the same ordinal, so leftovers of earlier passes are told
    /// apart without a pass id on the wire.
    starts_sent: AtomicU64,
    starts_seen: AtomicU64,
    failure: Mutex<Option<Error>>,
    /// Set by [`Iterable::close`].
    closed: AtomicBool,
}

impl std::fmt::Debug for Iterable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iterable")
            .field("generator", &self.generator)
            .field("encoding", &self.encoding)
            .finish_non_exhaustive()
    }
}

impl Iterable {
    /// The generator's name.
    pub fn generator(&self) -> &str {
        &self.generator
    }

    /// The encoding of items.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The id of the worker process, in [`Isolation::Process`]; `None` for a
    /// worker thread.
    pub fn worker_process_id(&self) -> Option<u32> {
        self.worker.process_id()
    }

    /// Starts a pass whose items are decoded as `T`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Busy`] while another pass lives; [`ErrorKind::Closed`]
    /// after the worker failed. Errors of the pass itself come from the
    /// iterator.
    pub fn iter<T: DeserializeOwned>(&self) -> Result<Pass<'_, T>, Error> {
        Ok(Pass {
            core: PassCore::start(self)?,
            item: PhantomData,
        })
    }

    /// Starts a pass that yields each item's encoded bytes.
    ///
    /// # Errors
    ///
    /// As for [`Iterable::iter`].
    pub fn iter_raw(&self) -> Result<RawPass<'_>, Error> {
        Ok(RawPass {
            core: PassCore::start(self)?,
        })
    }

    /// Starts a pass that yields whole batches of encoded items, as the
    /// worker made them, and that owns its share of the iterable (so it can
    /// be kept and moved freely, as a language binding needs). Batches are
    /// the cheapest way to move many small items: one wait and one hand-over
    /// per batch, not per item.
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
        Ok(Batches {
            core: PassCore::start(Arc::clone(self))?,
        })
    }

    /// Ends the worker now, as dropping the iterable does, and waits for it
    /// (up to a second, then a worker process is killed). A pass that is
    /// live ends with [`ErrorKind::Closed`], and so does every later pass.
    /// Closing twice does nothing more.
    pub fn close(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            self.worker.interrupt();
            self.worker.shutdown(TEARDOWN_GRACE);
        }
    }

    /// Whether [`close`](Iterable::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn closed_error(&self) -> Error {
        Error::new(
            ErrorKind::Closed,
            format!(
                "the iterable of generator {} was closed; create a new iterable to iterate again",
                self.generator
            ),
        )
    }

    fn check_startable(&self) -> Result<(), Error> {
        if self.is_closed() {
            return Err(self.closed_error());
        }
        if let Some(error) = self.failed() {
            return Err(Error::new(
                ErrorKind::Closed,
                format!(
                    "cannot start a pass over generator {}: its worker shut down after an earlier error ({error}); create a new iterable",
                    self.generator
                ),
            ));
        }
        if self.pass_active.swap(true, Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "a pass over generator {} is already in progress; finish or drop it before starting another",
                    self.generator
                ),
            ));
        }
        Ok(())
    }

    fn failed(&self) -> Option<Error> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Remembers the error that ended the worker, and makes sure it ends.
    fn fail(&self, error: &Error) {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| error.clone());
        self.worker.interrupt();
    }

    /// Waits for the next status, up to the inactivity timeout.
    fn recv(&self, phase: &str) -> Result<Status, Error> {
        self.recv_within(self.timeout, phase)
    }

    /// Waits up to `wait` for the next status; `Ok(None)` when none came
    /// and the pass has not been idle for longer than the inactivity timeout
    /// (counted from `idle_since`).
    fn recv_for(
        &self,
        wait: Duration,
        idle_since: Instant,
        phase: &str,
    ) -> Result<Option<Status>, Error> {
        let (wait, final_wait) = match self.timeout {
            Some(timeout) => {
                let left = timeout.saturating_sub(idle_since.elapsed());
                if left <= wait {
                    (left, true)
                } else {
                    (wait, false)
                }
            }
            None => (wait, false),
        };
        match self.worker.queues.statuses.recv_timeout(wait) {
            Ok(status) => Ok(Some(status)),
            Err(RecvTimeoutError::Timeout) if !final_wait => Ok(None),
            Err(e) => Err(self.recv_failed(e, self.timeout, phase)),
        }
    }

    /// Waits for the next status, up to `deadline`.
    fn recv_within(&self, deadline: Option<Duration>, phase: &str) -> Result<Status, Error> {
        let received = match deadline {
            Some(timeout) => self.worker.queues.statuses.recv_timeout(timeout),
            None => self
                .worker
                .queues
                .statuses
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
        };
        received.map_err(|e| self.recv_failed(e, deadline, phase))
    }

    /// The error of a wait that timed out or found the worker gone.
    fn recv_failed(&self, e: RecvTimeoutError, deadline: Option<Duration>, phase: &str) -> Error {
        if self.is_closed() {
            return self.closed_error();
        }
        {
            let error = match e {
                RecvTimeoutError::Timeout => Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "generator {} timed out during {phase}: no data from its worker for {:?}",
                        self.generator,
                        deadline.unwrap_or_default()
                    ),
                ),
                RecvTimeoutError::Disconnected => Error::new(
                    ErrorKind::WorkerDied,
                    format!(
                        "the worker of generator {} died during {phase} without reporting why",
                        self.generator
                    ),
                ),
            };
            self.fail(&error);
            error
        }
    }

    fn protocol_error(&self, status: &Status, phase: &str) -> Error {
        let error = match status {
            Status::UnexpectedCommand(command) => Error::new(
                ErrorKind::Protocol,
                format!(
                    "the worker of generator {} received an unexpected command during {phase}: {command:?}",
                    self.generator
                ),
            ),
            other => Error::new(
                ErrorKind::Protocol,
                format!(
                    "the worker of generator {} sent an unexpected status during {phase}: {other:?}",
                    self.generator
                ),
            ),
        };
        self.fail(&error);
        error
    }
}

impl Drop for Iterable {
    fn drop(&mut self) {
        self.worker.shutdown(TEARDOWN_GRACE);
    }
}

/// The state shared by [`Pass`], [`RawPass`] and [`Batches`]: `I` is how
/// the pass holds its iterable (borrowed, or shared for [`Batches`]).
struct PassCore<I: Deref<Target = Iterable>> {
    iterable: I,
    ordinal: u64,
    frames: Frames,
    batch_items: u32,
    started: bool,
    done: bool,
    /// When the pass last heard from its worker (for the inactivity timeout
    /// across [`Batches::next_batch_within`] calls).
    idle_since: Instant,
}

impl<I: Deref<Target = Iterable>> PassCore<I> {
    fn start(iterable: I) -> Result<Self, Error> {
        iterable.check_startable()?;
        let _ = iterable
            .worker
            .queues
            .commands
            .send(Command::StartIteration);
        let ordinal = iterable.starts_sent.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(PassCore {
            iterable,
            ordinal,
            frames: Frames::default(),
            batch_items: 0,
            started: false,
            done: false,
            idle_since: Instant::now(),
        })
    }

    /// The next item's bytes, `None` at the end of the pass or after an
    /// error.
    fn next_frame(&mut self) -> Option<Result<&[u8], Error>> {
        if self.frames.left() == 0 {
            if self.done {
                return None;
            }
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(error) => return Some(Err(error)),
            }
        }
        if self.frames.left() == 1 {
            // The last item of the batch leaves the queue now: the worker may
            // produce that much more.
            self.consumed(self.frames.bytes());
        }
        self.frames.next_frame().map(Ok)
    }

    /// Receives statuses until a batch arrives (`true`) or the pass ends
    /// (`false`).
    fn fill(&mut self) -> Result<bool, Error> {
        loop {
            let status = self
                .iterable
                .recv("iteration")
                .inspect_err(|_| self.done = true)?;
            if let Some(filled) = self.take(status)? {
                return Ok(filled);
            }
        }
    }

    /// As [`fill`](Self::fill), waiting up to `wait`: `None` when nothing
    /// came in that time.
    fn fill_within(&mut self, wait: Duration) -> Result<Option<bool>, Error> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let status = self
                .iterable
                .recv_for(left, self.idle_since, "iteration")
                .inspect_err(|_| self.done = true)?;
            let Some(status) = status else {
                return Ok(None);
            };
            self.idle_since = Instant::now();
            if let Some(filled) = self.take(status)? {
                return Ok(Some(filled));
            }
        }
    }

    /// Handles one status of the pass: `Some(true)` when it brought a batch,
    /// `Some(false)` at the end of the pass, `None` to read on.
    fn take(&mut self, status: Status) -> Result<Option<bool>, Error> {
        let iterable = &*self.iterable;
        {
            match status {
                Status::IterationStarted => {
                    let seen = iterable.starts_seen.fetch_add(1, Ordering::SeqCst) + 1;
                    self.started = seen == self.ordinal;
                    Ok(None)
                }
                // Leftovers of an earlier pass that was stopped early.
                Status::Items(_) | Status::IterationFinished if !self.started => Ok(None),
                Status::Items(batch) => {
                    self.batch_items = batch.count;
                    self.frames = Frames::new(batch.frames, batch.count);
                    Ok(Some(true))
                }
                Status::IterationFinished => {
                    self.done = true;
                    Ok(Some(false))
                }
                // A worker that was closed under a live pass may report
                // its own end (a killed process): the pass was closed.
                Status::IteratorFailed(_) if iterable.is_closed() => {
                    self.done = true;
                    Err(iterable.closed_error())
                }
                Status::IteratorFailed(error) => {
                    self.done = true;
                    iterable.fail(&error);
                    Err(error)
                }
                other => {
                    self.done = true;
                    Err(iterable.protocol_error(&other, "iteration"))
                }
            }
        }
    }

    /// Hands the whole current batch to the caller: it has left the queue,
    /// so the worker may produce that much more.
    fn take_batch(&mut self) -> Batch {
        let frames = std::mem::take(&mut self.frames);
        if frames.left() > 0 {
            self.consumed(frames.bytes());
        }
        Batch { frames }
    }

    fn consumed(&self, bytes: usize) {
        let _ = self
            .iterable
            .worker
            .queues
            .commands
            .send(Command::Consumed {
                items: self.batch_items,
                bytes: bytes as u64,
            });
    }
}

impl<I: Deref<Target = Iterable>> PassCore<I> {
    /// Ends the pass from the caller's side: the worker stops producing.
    fn stop(&mut self) {
        if !self.done {
            self.done = true;
            let _ = self
                .iterable
                .worker
                .queues
                .commands
                .send(Command::StopIteration);
        }
        self.frames = Frames::default();
    }
}

impl<I: Deref<Target = Iterable>> Drop for PassCore<I> {
    fn drop(&mut self) {
        self.stop();
        self.iterable.pass_active.store(false, Ordering::SeqCst);
    }
}

/// One pass over an [`Iterable`], yielding items decoded as `T`.
///
/// `next` blocks until the worker has produced the next item (or the
/// inactivity timeout passes). The iterator is fused: after the pass ends or
/// fails it yields `None`. Dropping it before the end stops the worker's
/// production at once.
pub struct Pass<'a, T> {
    core: PassCore<&'a Iterable>,
    item: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Pass<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pass")
            .field("generator", &self.core.iterable.generator)
            .finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned> Iterator for Pass<'_, T> {
    type Item = Result<T, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let encoding = self.core.iterable.encoding;
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

impl std::fmt::Debug for RawPass<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawPass")
            .field("generator", &self.core.iterable.generator)
            .finish_non_exhaustive()
    }
}

impl RawPass<'_> {
    /// The next item's encoded bytes, without copying them.
    pub fn next_item(&mut self) -> Option<Result<&[u8], Error>> {
        self.core.next_frame()
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
/// handle; [`Iterable::close`] ends it with [`ErrorKind::Closed`]. Dropping it
/// before the end stops the worker's production at once, as for [`Pass`].
pub struct Batches {
    core: PassCore<Arc<Iterable>>,
}

impl std::fmt::Debug for Batches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches")
            .field("generator", &self.core.iterable.generator)
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
    /// The next batch, waiting as long as the inactivity timeout allows;
    /// `None` at the end of the pass or after an error.
    pub fn next_batch(&mut self) -> Option<Result<Batch, Error>> {
        if self.core.done {
            return None;
        }
        match self.core.fill() {
            Ok(true) => Some(Ok(self.core.take_batch())),
            Ok(false) => None,
            Err(error) => Some(Err(error)),
        }
    }

    /// The next batch, waiting at most `wait` for it (less when the
    /// inactivity timeout ends first, which is an [`ErrorKind::Timeout`]
    /// error as in [`next_batch`](Self::next_batch)); the inactivity timeout
    /// counts across calls. For callers that must look up between waits (a
    /// language binding checking for a user's interrupt).
    ///
    /// # Errors
    ///
    /// The errors of the pass, as for [`Iterable::iter`].
    pub fn next_batch_within(&mut self, wait: Duration) -> Result<NextBatch, Error> {
        if self.core.done {
            return Ok(NextBatch::End);
        }
        match self.core.fill_within(wait)? {
            Some(true) => Ok(NextBatch::Batch(self.core.take_batch())),
            Some(false) => Ok(NextBatch::End),
            None => Ok(NextBatch::Pending),
        }
    }

    /// Ends the pass early, as dropping it does: the worker stops producing.
    pub fn stop(&mut self) {
        self.core.stop();
    }

    /// The iterable this pass runs over.
    pub fn iterable(&self) -> &Iterable {
        &self.core.iterable
    }
}

/// One batch of encoded items, in the order the worker produced them.
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
    frames: sandgen_wire::frame::FramesView<'a>,
}

impl<'a> Iterator for BatchItems<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        self.frames.next_frame()
    }
}
