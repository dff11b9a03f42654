//! The caller's side: building an [`Iterable`], its passes, and the
//! protocol as the caller speaks it (statuses in, commands out, the
//! inactivity timeout).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use sandgen_wire::Encoding;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::{Error, ErrorKind};
use crate::guest::output::{OutputHandler, OutputLine, stderr_handler};
use crate::options::{DirGrant, Flow, Grants, Limits, SeededRandom};
use crate::pass::{Batches, Pass, RawPass};
use crate::protocol::{Command, Status};
use crate::runtime::Loaded;
use crate::worker::task::Task;
use crate::worker::{Isolation, Parked, WorkerHandle};

/// How long dropping an iterable waits for its worker thread to end.
const TEARDOWN_GRACE: Duration = Duration::from_secs(1);

/// Configures and creates an [`Iterable`]; made by [`Plugin::generator`](crate::Plugin::generator).
///
/// Defaults (each one secure or conservative):
///
/// | option | default |
/// |---|---|
/// | [`isolation`](Self::isolation) | [`Isolation::Thread`] |
/// | [`workers`](Self::workers) | 1 |
/// | [`in_order`](Self::in_order) | `true`: round-robin by worker |
/// | [`seed`](Self::seed) | none: random sources are real |
/// | [`encoding`](Self::encoding) | [`Encoding::Bincode`] |
/// | [`args`](Self::args), [`config`](Self::config) | none (the plugin sees empty bytes) |
/// | [`buffer_size`](Self::buffer_size) | 1024 items ([`DEFAULT_BUFFER_SIZE`](crate::DEFAULT_BUFFER_SIZE)) |
/// | [`buffer_bytes`](Self::buffer_bytes) | 16 MiB ([`DEFAULT_BUFFER_BYTES`](crate::DEFAULT_BUFFER_BYTES)) |
/// | [`timeout`](Self::timeout) | none |
/// | [`memory_limit`](Self::memory_limit) | 1 GiB ([`DEFAULT_MEMORY_LIMIT`](crate::DEFAULT_MEMORY_LIMIT)) |
/// | [`fuel`](Self::fuel) | unlimited |
/// | [`max_item_bytes`](Self::max_item_bytes) | 1 GiB ([`DEFAULT_MAX_ITEM_BYTES`](crate::DEFAULT_MAX_ITEM_BYTES)) |
/// | [`env`](Self::env) | none but the worker's own `SANDGEN_WORKER_ID` and `SANDGEN_NUM_WORKERS` (the host's never leak) |
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
    workers: usize,
    in_order: bool,
    seed: Option<u64>,
    worker_args: Option<Vec<Payload>>,
    shard: Option<(usize, usize)>,
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
            workers: 1,
            in_order: true,
            seed: None,
            worker_args: None,
            shard: None,
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

    /// Runs `n` workers of the generator (default 1), each a full worker
    /// with its own instance, limits and timeout, in the iterable's
    /// isolation mode, alive across passes; a pass runs one pass on every
    /// worker. Each sees `SANDGEN_WORKER_ID` (0-based) and
    /// `SANDGEN_NUM_WORKERS` in its environment, to shard its input by (see
    /// [`worker_args`](Self::worker_args) to give each its own arguments
    /// instead). Must be between 1 and [`MAX_WORKERS`](crate::MAX_WORKERS).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), sandgen::Error> {
    /// let plugin = sandgen::Engine::new()?.load("plugin.wasm")?;
    /// let iterable = plugin
    ///     .generator("range")
    ///     .workers(2)
    ///     .worker_args(&[3u64, 2])
    ///     .build()?;
    /// let items: Vec<u64> = iterable.iter()?.collect::<Result<_, _>>()?;
    /// // Round-robin by worker: worker 0's first item, worker 1's first, ...
    /// assert_eq!(items, [0, 0, 1, 1, 2]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// With several workers: `true` (the default) gives items round-robin,
    /// one from each worker that has not finished, by worker index, so the
    /// same workers give the same stream; `false` gives them in the order
    /// they are produced (whole batches at a time), for throughput.
    pub fn in_order(mut self, in_order: bool) -> Self {
        self.in_order = in_order;
        self
    }

    /// Makes every random source the guest can reach through WASI
    /// (`wasi:random` random, insecure and insecure-seed, and so also
    /// hash-map keys and a language's own seeding from them) a
    /// deterministic stream derived from `seed` and the worker's index: the
    /// same plugin, arguments, seed and worker count give the same items on
    /// any machine, in either isolation mode. Workers also see
    /// `SANDGEN_SEED`. Clocks stay real.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// One arguments value per worker, encoded with the iterable's encoding,
    /// instead of [`args`](Self::args) for all: worker `i` gets `args[i]`.
    /// Their number must be the number of [`workers`](Self::workers).
    pub fn worker_args<A: Serialize>(mut self, args: &[A]) -> Self {
        self.worker_args = Some(
            args.iter()
                .map(|a| Payload::Encoded(self.encoding, codec::encode(self.encoding, a)))
                .collect(),
        );
        self
    }

    /// Makes this iterable shard `index` of `count` run by a scheduler
    /// above sandgen (a Ray read task per shard, say): its workers are
    /// numbered after those of the shards before it, so worker `k` sees
    /// `SANDGEN_WORKER_ID` `index * workers + k` and `SANDGEN_NUM_WORKERS`
    /// `count * workers`, and a seed gives every shard its own streams.
    /// `index` must be below `count`.
    pub fn shard(mut self, index: usize, count: usize) -> Self {
        self.shard = Some((index, count));
        self
    }

    /// As [`worker_args`](Self::worker_args), each already encoded.
    pub fn worker_args_raw(mut self, args: impl IntoIterator<Item = Vec<u8>>) -> Self {
        self.worker_args = Some(args.into_iter().map(Payload::Raw).collect());
        self
    }

    /// Handles each line the guest prints, instead of writing it to the
    /// host's stderr. Called on the thread that runs the guest: the
    /// worker's own thread, or the caller's for a single worker thread's
    /// initializer and first batch (see [`build`](Self::build) and
    /// [`Iterable::iter`]). It should not block: a blocked handler holds
    /// the guest where no timeout reaches.
    pub fn on_output(mut self, handler: impl Fn(&OutputLine<'_>) + Send + Sync + 'static) -> Self {
        self.output = Some(Arc::new(handler));
        self
    }

    /// Starts the workers and waits until the plugin is initialized and the
    /// iterable created in each. The initializer and `create` have run
    /// exactly once per worker when this returns. A single worker thread
    /// ([`Isolation::Thread`], one worker) runs them on the calling thread,
    /// bounded by the [`timeout`](Self::timeout); several workers start
    /// side by side on threads of their own.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for bad options or arguments that cannot
    /// be encoded; [`ErrorKind::InitializerFailed`] or
    /// [`ErrorKind::CreateFailed`] with the plugin's message; a trap or
    /// limit kind when the guest failed; [`ErrorKind::Timeout`]. With
    /// several workers, the message names the worker that failed.
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
        let workers = self.workers;
        if workers == 0 || workers > MAX_WORKERS {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("the number of workers must be between 1 and {MAX_WORKERS}, not {workers}"),
            ));
        }
        for (key, _) in &self.grants.env {
            if WORKER_ENV.contains(&key.as_str()) {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "environment variable {key} is set by sandgen for each worker; choose another name"
                    ),
                ));
            }
        }
        let args = match self.worker_args {
            Some(per_worker) => {
                if !matches!(self.args, Payload::None) {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        "give either args (for every worker) or worker_args (one per worker), not both",
                    ));
                }
                if per_worker.len() != workers {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        format!(
                            "worker_args has {} values for {workers} worker(s); give exactly one per worker",
                            per_worker.len()
                        ),
                    ));
                }
                per_worker
                    .into_iter()
                    .enumerate()
                    .map(|(i, payload)| {
                        payload.into_bytes(&format!("args of worker {i}"), self.encoding)
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            None => vec![self.args.into_bytes("args", self.encoding)?; workers],
        };
        let (shard, shards) = self.shard.unwrap_or((0, 1));
        if shards == 0
            || shard >= shards
            || shards
                .checked_mul(workers)
                .is_none_or(|all| all > u32::MAX as usize)
        {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("invalid shard {shard} of {shards}: the index must be below the count"),
            ));
        }
        let config = self.config.into_bytes("config", self.encoding)?;
        let output = self.output.unwrap_or_else(stderr_handler);
        let mut lanes = Vec::with_capacity(workers);
        for (index, args) in args.into_iter().enumerate() {
            let mut grants = self.grants.clone();
            // This worker among all the workers of all the shards.
            let global = shard * workers + index;
            grants
                .env
                .push((WORKER_ENV[0].to_owned(), global.to_string()));
            grants
                .env
                .push((WORKER_ENV[1].to_owned(), (shards * workers).to_string()));
            if let Some(seed) = self.seed {
                grants
                    .env
                    .push((WORKER_ENV[2].to_owned(), seed.to_string()));
                grants.random = Some(SeededRandom {
                    seed,
                    worker: global as u32,
                });
            }
            let task = Task {
                generator: self.generator.clone(),
                encoding: self.encoding,
                args,
                config: config.clone(),
                grants,
                limits: self.limits.clone(),
                flow: self.flow,
            };
            // One worker thread starts parked: its first steps run on the
            // caller's thread, when the caller waits for them (no hand-off
            // between threads before the first item). Several workers start
            // side by side on threads of their own.
            let park = self.isolation == Isolation::Thread && workers == 1;
            let worker =
                WorkerHandle::spawn(&self.plugin, task, output.clone(), self.isolation, park)
                    .map_err(|e| name_worker(e, index, workers))?;
            lanes.push(Lane {
                worker,
                starts_sent: AtomicU64::new(0),
                starts_seen: AtomicU64::new(0),
            });
        }
        let iterable = Iterable {
            lanes,
            generator: self.generator,
            encoding: self.encoding,
            timeout: self.timeout,
            in_order: self.in_order,
            pass_active: AtomicBool::new(false),
            failure: Mutex::new(None),
            closed: AtomicBool::new(false),
        };
        // Start-up (a worker process starts and reads its compiled
        // component) is sandgen's time, bounded by the load timeout; from
        // `Loaded` on, the inactivity timeout counts the plugin's own time.
        // The workers start side by side; they are awaited in order.
        let start_up = self.plugin.load_timeout();
        for lane in 0..workers {
            match iterable.recv_within(lane, Some(start_up), "start-up")? {
                Status::Loaded => {}
                Status::InitializationFailed(error) => return Err(iterable.named(lane, error)),
                other => return Err(iterable.protocol_error(lane, &other, "start-up")),
            }
        }
        // One deadline for all the workers' initialization, not one each.
        let deadline = iterable
            .timeout
            .and_then(|timeout| Instant::now().checked_add(timeout));
        for lane in 0..workers {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match iterable.recv_within(lane, left, "initialization")? {
                Status::InitializationSucceeded => {}
                Status::InitializationFailed(error) => return Err(iterable.named(lane, error)),
                other => return Err(iterable.protocol_error(lane, &other, "initialization")),
            }
        }
        Ok(iterable)
    }
}

/// The most workers one iterable may run.
pub const MAX_WORKERS: usize = 256;

/// The environment variables sandgen sets for each worker: its index, the
/// number of workers, and the seed when there is one.
const WORKER_ENV: [&str; 3] = ["SANDGEN_WORKER_ID", "SANDGEN_NUM_WORKERS", "SANDGEN_SEED"];

/// `error` of worker `index` of `workers`, named when there are several.
fn name_worker(error: Error, index: usize, workers: usize) -> Error {
    if workers > 1 {
        error.context(format!("worker {index} of {workers}"))
    } else {
        error
    }
}

/// A generator's iterable, living in sandboxed workers: iterate it any
/// number of times, one pass at a time.
///
/// Each call to [`iter`](Iterable::iter) (or [`iter_raw`](Iterable::iter_raw),
/// [`batches`](Iterable::batches)) starts a new full pass over the same
/// guest objects (one per worker), whose state persists across passes.
///
/// - Only one pass may be live at a time; starting another while one lives
///   gives an [`ErrorKind::Busy`] error.
/// - Dropping a pass early stops every worker's production at once; the
///   next pass is a full new one.
/// - After an error (the plugin's, a trap, a timeout) the workers are gone
///   and every later pass fails with [`ErrorKind::Closed`].
/// - Dropping the iterable ends the workers within milliseconds, whether
///   they are idle or busy.
pub struct Iterable {
    pub(crate) lanes: Vec<Lane>,
    generator: String,
    encoding: Encoding,
    pub(crate) timeout: Option<Duration>,
    pub(crate) in_order: bool,
    pass_active: AtomicBool,
    failure: Mutex<Option<Error>>,
    /// Set by [`Iterable::close`].
    closed: AtomicBool,
}

/// One worker of an iterable, as the caller sees it.
pub(crate) struct Lane {
    pub(crate) worker: WorkerHandle,
    /// `StartIteration` commands sent; a pass's `IterationStarted` is the
    /// status with the same ordinal, so leftovers of earlier passes are told
    /// apart without a pass id on the wire.
    pub(crate) starts_sent: AtomicU64,
    pub(crate) starts_seen: AtomicU64,
}

impl std::fmt::Debug for Iterable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iterable")
            .field("generator", &self.generator)
            .field("encoding", &self.encoding)
            .field("workers", &self.lanes.len())
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

    /// How many workers run the generator.
    pub fn workers(&self) -> usize {
        self.lanes.len()
    }

    /// The id of the (first) worker process, in [`Isolation::Process`];
    /// `None` for worker threads.
    pub fn worker_process_id(&self) -> Option<u32> {
        self.lanes[0].worker.process_id()
    }

    /// The ids of every worker process, by worker index, in
    /// [`Isolation::Process`]; empty for worker threads.
    pub fn worker_process_ids(&self) -> Vec<u32> {
        self.lanes
            .iter()
            .filter_map(|lane| lane.worker.process_id())
            .collect()
    }

    /// Starts a pass whose items are decoded as `T`.
    ///
    /// The workers start producing at once, ahead of the caller. A single
    /// worker thread ([`Isolation::Thread`], one worker) makes its first
    /// batch during this call, on the calling thread (so the first item
    /// crosses no thread), and the rest on a thread of its own; the
    /// inactivity timeout of that first batch counts from this call, its
    /// errors still come from the iterator, and [`close`](Iterable::close)
    /// from another thread still stops it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Busy`] while another pass lives; [`ErrorKind::Closed`]
    /// after the worker failed. Errors of the pass itself come from the
    /// iterator.
    pub fn iter<T: DeserializeOwned>(&self) -> Result<Pass<'_, T>, Error> {
        Pass::start(self)
    }

    /// Starts a pass that yields each item's encoded bytes.
    ///
    /// # Errors
    ///
    /// As for [`Iterable::iter`].
    pub fn iter_raw(&self) -> Result<RawPass<'_>, Error> {
        RawPass::start(self)
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

    /// Ends the workers now, as dropping the iterable does, and waits for
    /// them (up to a second, then a worker process is killed). A pass that
    /// is live ends with [`ErrorKind::Closed`], and so does every later
    /// pass. Closing twice does nothing more.
    pub fn close(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            for lane in &self.lanes {
                lane.worker.interrupt();
            }
            for lane in &self.lanes {
                lane.worker.shutdown(TEARDOWN_GRACE);
            }
        }
    }

    /// Whether [`close`](Iterable::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    pub(crate) fn closed_error(&self) -> Error {
        Error::new(
            ErrorKind::Closed,
            format!(
                "the iterable of generator {} was closed; create a new iterable to iterate again",
                self.generator
            ),
        )
    }

    /// Checks that a pass may start now, and marks one as live.
    pub(crate) fn begin_pass(&self) -> Result<(), Error> {
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

    /// Marks the live pass as over.
    pub(crate) fn end_pass(&self) {
        self.pass_active.store(false, Ordering::SeqCst);
    }

    fn failed(&self) -> Option<Error> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Remembers the error that ended the workers, and makes sure they end.
    pub(crate) fn fail(&self, error: &Error) {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| error.clone());
        for lane in &self.lanes {
            lane.worker.interrupt();
        }
    }

    /// `error` of worker `lane`, named when there are several.
    pub(crate) fn named(&self, lane: usize, error: Error) -> Error {
        name_worker(error, lane, self.lanes.len())
    }

    /// Waits up to `wait` for the next status of worker `lane`; `Ok(None)`
    /// when none came in that time and the wait, begun at `waiting_since`,
    /// has not lasted longer than the inactivity timeout.
    pub(crate) fn recv_for(
        &self,
        lane: usize,
        wait: Option<Duration>,
        waiting_since: Instant,
        phase: &str,
    ) -> Result<Option<Status>, Error> {
        // Waiting as long as the timeout allows: a parked worker may run
        // here, up to the end of the timeout.
        let deadline = self
            .timeout
            .and_then(|timeout| waiting_since.checked_add(timeout));
        self.run_parked(lane, wait.is_none(), deadline, self.timeout, phase)?;
        let (wait, last) = self.slice(wait, waiting_since);
        let statuses = &self.lanes[lane].worker.queues.statuses;
        let received = match wait {
            Some(wait) => statuses.recv_timeout(wait),
            None => statuses.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(status) => Ok(Some(status)),
            Err(RecvTimeoutError::Timeout) if !last => Ok(None),
            Err(e) => Err(self.recv_failed(lane, e, self.timeout, phase)),
        }
    }

    /// Waits up to `wait` for the next status of any worker in `lanes`;
    /// `Ok(None)` as for [`recv_for`](Self::recv_for).
    pub(crate) fn recv_any_for(
        &self,
        lanes: &[usize],
        wait: Option<Duration>,
        waiting_since: Instant,
        phase: &str,
    ) -> Result<Option<(usize, Status)>, Error> {
        if let [lane] = lanes {
            return Ok(self
                .recv_for(*lane, wait, waiting_since, phase)?
                .map(|status| (*lane, status)));
        }
        let (wait, last) = self.slice(wait, waiting_since);
        let mut select = crossbeam_channel::Select::new();
        for &lane in lanes {
            // Several workers are waited for at once: none runs here.
            self.run_parked(lane, false, None, self.timeout, phase)?;
            select.recv(&self.lanes[lane].worker.queues.statuses);
        }
        let ready = match wait {
            Some(wait) => select.select_timeout(wait).ok(),
            None => Some(select.select()),
        };
        let Some(operation) = ready else {
            if !last {
                return Ok(None);
            }
            // Every worker was silent for the whole timeout: the first is
            // named.
            return Err(self.recv_failed(lanes[0], RecvTimeoutError::Timeout, self.timeout, phase));
        };
        let lane = lanes[operation.index()];
        match operation.recv(&self.lanes[lane].worker.queues.statuses) {
            Ok(status) => Ok(Some((lane, status))),
            Err(_) => {
                Err(self.recv_failed(lane, RecvTimeoutError::Disconnected, self.timeout, phase))
            }
        }
    }

    /// How long the next wait may last: up to `wait` (`None`: unbounded),
    /// and up to the end of the inactivity timeout of a wait begun at
    /// `waiting_since`; `true` when that end is what bounds it.
    fn slice(&self, wait: Option<Duration>, waiting_since: Instant) -> (Option<Duration>, bool) {
        match (self.timeout, wait) {
            (Some(timeout), wait) => {
                let left = timeout.saturating_sub(waiting_since.elapsed());
                match wait {
                    Some(wait) if wait < left => (Some(wait), false),
                    _ => (Some(left), true),
                }
            }
            (None, wait) => (wait, false),
        }
    }

    /// Waits for the next status of worker `lane`, up to `deadline`.
    fn recv_within(
        &self,
        lane: usize,
        deadline: Option<Duration>,
        phase: &str,
    ) -> Result<Status, Error> {
        let until = deadline.and_then(|timeout| Instant::now().checked_add(timeout));
        self.run_parked(lane, true, until, deadline, phase)?;
        let statuses = &self.lanes[lane].worker.queues.statuses;
        let received = match deadline {
            Some(timeout) => statuses.recv_timeout(timeout),
            None => statuses.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        received.map_err(|e| self.recv_failed(lane, e, deadline, phase))
    }

    /// After a pass's `StartIteration` went to worker `lane`: a parked
    /// worker runs here (`inline`, up to the inactivity timeout) or starts
    /// on its thread. A timeout there is the pass's error, as if met in its
    /// first wait.
    pub(crate) fn start_parked(&self, lane: usize, inline: bool) -> Result<(), Error> {
        let deadline = self
            .timeout
            .and_then(|timeout| Instant::now().checked_add(timeout));
        let parked = self.lanes[lane].worker.pass_started(inline, deadline);
        self.parked_outcome(lane, parked, self.timeout, "iteration")
    }

    /// Before a wait for worker `lane`: a parked worker runs here (`inline`,
    /// up to `deadline`) or starts on its thread; a timeout there is the
    /// wait's.
    fn run_parked(
        &self,
        lane: usize,
        inline: bool,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
        phase: &str,
    ) -> Result<(), Error> {
        let parked = self.lanes[lane].worker.before_wait(inline, deadline);
        self.parked_outcome(lane, parked, timeout, phase)
    }

    /// The error, if any, of a parked worker's run (`timeout`: the wait's
    /// bound, for the message).
    fn parked_outcome(
        &self,
        lane: usize,
        parked: Parked,
        timeout: Option<Duration>,
        phase: &str,
    ) -> Result<(), Error> {
        match parked {
            Parked::No | Parked::Ran => Ok(()),
            Parked::TimedOut => {
                Err(self.recv_failed(lane, RecvTimeoutError::Timeout, timeout, phase))
            }
            Parked::Forked => {
                let error = self.named(
                    lane,
                    Error::new(
                        ErrorKind::WorkerDied,
                        format!(
                            "the worker thread of generator {} belongs to the process this one was forked from, and a forked process has none of its threads; create the iterable after the fork",
                            self.generator
                        ),
                    ),
                );
                self.fail(&error);
                Err(error)
            }
        }
    }

    /// The error of a wait on worker `lane` that timed out or found the
    /// worker gone.
    fn recv_failed(
        &self,
        lane: usize,
        e: RecvTimeoutError,
        deadline: Option<Duration>,
        phase: &str,
    ) -> Error {
        if self.is_closed() {
            return self.closed_error();
        }
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
        let error = self.named(lane, error);
        self.fail(&error);
        error
    }

    pub(crate) fn protocol_error(&self, lane: usize, status: &Status, phase: &str) -> Error {
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
        let error = self.named(lane, error);
        self.fail(&error);
        error
    }
}

impl Drop for Iterable {
    fn drop(&mut self) {
        // Interrupt every worker first, so that they end side by side.
        for lane in &self.lanes {
            let _ = lane.worker.queues.commands.send(Command::Abort);
        }
        for lane in &self.lanes {
            lane.worker.shutdown(TEARDOWN_GRACE);
        }
    }
}
