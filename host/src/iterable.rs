//! The caller's side: building an [`Iterable`], its passes, and the
//! protocol as the caller speaks it (statuses in, commands out, the
//! inactivity timeout).

use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
            core: self.start()?,
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
            core: self.start()?,
        })
    }

    fn start(&self) -> Result<PassCore<'_>, Error> {
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
        let _ = self.worker.queues.commands.send(Command::StartIteration);
        let ordinal = self.starts_sent.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(PassCore {
            iterable: self,
            ordinal,
            frames: Frames::default(),
            batch_items: 0,
            started: false,
            done: false,
        })
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
        received.map_err(|e| {
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
        })
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

/// The state shared by [`Pass`] and [`RawPass`].
struct PassCore<'a> {
    iterable: &'a Iterable,
    ordinal: u64,
    frames: Frames,
    batch_items: u32,
    started: bool,
    done: bool,
}

impl PassCore<'_> {
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
            let _ = self
                .iterable
                .worker
                .queues
                .commands
                .send(Command::Consumed {
                    items: self.batch_items,
                    bytes: self.frames.bytes() as u64,
                });
        }
        self.frames.next_frame().map(Ok)
    }

    /// Receives statuses until a batch arrives (`true`) or the pass ends
    /// (`false`).
    fn fill(&mut self) -> Result<bool, Error> {
        let iterable = self.iterable;
        loop {
            let status = iterable
                .recv("iteration")
                .inspect_err(|_| self.done = true)?;
            match status {
                Status::IterationStarted => {
                    let seen = iterable.starts_seen.fetch_add(1, Ordering::SeqCst) + 1;
                    self.started = seen == self.ordinal;
                }
                // Leftovers of an earlier pass that was stopped early.
                Status::Items(_) | Status::IterationFinished if !self.started => {}
                Status::Items(batch) => {
                    self.batch_items = batch.count;
                    self.frames = Frames::new(batch.frames, batch.count);
                    return Ok(true);
                }
                Status::IterationFinished => {
                    self.done = true;
                    return Ok(false);
                }
                Status::IteratorFailed(error) => {
                    self.done = true;
                    iterable.fail(&error);
                    return Err(error);
                }
                other => {
                    self.done = true;
                    return Err(iterable.protocol_error(&other, "iteration"));
                }
            }
        }
    }
}

impl PassCore<'_> {
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

impl Drop for PassCore<'_> {
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
    core: PassCore<'a>,
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
    core: PassCore<'a>,
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
