//! [`IterableBuilder`]: an iterable's options, checked before any worker
//! starts, and the start of its workers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sandgen_wire::Encoding;
use serde::Serialize;

use crate::caller::{Respawn, Setup, Workers, name_worker};
use crate::codec;
use crate::error::{Error, ErrorKind};
use crate::failure::{DEFAULT_MAX_RESTARTS, OnFailure};
use crate::guest::output::{OutputHandler, OutputLine, for_worker, stderr_handler};
use crate::iterable::Iterable;
use crate::loader::PluginCore;
use crate::options::{DirGrant, Flow, Grants, Limits, SeededRandom, Sharding, Stride};
use crate::position::Position;
use crate::worker::task::Task;
use crate::worker::{Isolation, WorkerHandle};

mod checks;
mod failures;
mod resume;

/// Configures and creates an [`Iterable`]; made by [`Plugin::generator`](crate::Plugin::generator).
///
/// Defaults (each one secure or conservative):
///
/// | option | default |
/// |---|---|
/// | [`isolation`](Self::isolation) | [`Isolation::Thread`] |
/// | [`workers`](Self::workers) | 1 |
/// | [`in_order`](Self::in_order) | `true`: round-robin by worker |
/// | [`sharding`](Self::sharding) | [`Sharding::Plugin`]: the plugin shards its stream by worker |
/// | [`seed`](Self::seed) | none: random sources are real |
/// | [`encoding`](Self::encoding) | [`Encoding::Bincode`] |
/// | [`args`](Self::args), [`config`](Self::config) | none (the plugin sees empty bytes) |
/// | [`buffer_size`](Self::buffer_size) | 1024 items ([`DEFAULT_BUFFER_SIZE`](crate::DEFAULT_BUFFER_SIZE)) |
/// | [`buffer_bytes`](Self::buffer_bytes) | 16 MiB ([`DEFAULT_BUFFER_BYTES`](crate::DEFAULT_BUFFER_BYTES)) |
/// | [`timeout`](Self::timeout) | none |
/// | [`on_failure`](Self::on_failure) | [`OnFailure::Stop`]: a worker's failure ends the pass |
/// | [`max_restarts`](Self::max_restarts) | 3 per pass ([`DEFAULT_MAX_RESTARTS`](crate::DEFAULT_MAX_RESTARTS)) |
/// | [`memory_limit`](Self::memory_limit) | 1 GiB ([`DEFAULT_MEMORY_LIMIT`](crate::DEFAULT_MEMORY_LIMIT)) |
/// | [`fuel`](Self::fuel) | unlimited |
/// | [`max_item_bytes`](Self::max_item_bytes) | 1 GiB ([`DEFAULT_MAX_ITEM_BYTES`](crate::DEFAULT_MAX_ITEM_BYTES)) |
/// | [`env`](Self::env) | none but the worker's own `SANDGEN_WORKER_ID` and `SANDGEN_NUM_WORKERS` (the host's never leak) |
/// | [`dir`](Self::dir) | no directories |
/// | network | none, and there is no option to grant it |
/// | stdin | empty |
/// | guest stdout and stderr | lines to the host's stderr as `[plugin/generator stream] line`, control characters escaped ([`escape_text`](crate::escape_text); [`on_output`](Self::on_output) gets them raw) |
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
    plugin: Arc<PluginCore>,
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
    sharding: Sharding,
    resume: Option<Position>,
    on_failure: OnFailure,
    max_restarts: u32,
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
    pub(crate) fn new(plugin: Arc<PluginCore>, generator: &str) -> Self {
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
            sharding: Sharding::Plugin,
            resume: None,
            on_failure: OnFailure::Stop,
            max_restarts: DEFAULT_MAX_RESTARTS,
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

    /// Who splits the stream among the workers (and the shards): the plugin
    /// ([`Sharding::Plugin`], the default: each worker sees its index and
    /// yields its share) or sandgen ([`Sharding::Items`]: every worker runs
    /// the whole stream as the only worker and keeps every `n`-th item, so
    /// each item comes exactly once whether or not the plugin shards
    /// itself, at the cost of every worker running the whole stream).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), sandgen::Error> {
    /// let plugin = sandgen::Engine::new()?.load("plugin.wasm")?;
    /// // `range` does not shard itself: with items sharding, 3 workers give
    /// // 0..10 once, in order.
    /// let iterable = plugin
    ///     .generator("range")
    ///     .args(&10u64)
    ///     .workers(3)
    ///     .sharding(sandgen::Sharding::Items)
    ///     .build()?;
    /// let items: Vec<u64> = iterable.iter()?.collect::<Result<_, _>>()?;
    /// assert_eq!(items, (0..10).collect::<Vec<_>>());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// With items sharding the workers must produce the same stream: their
    /// random sources are one stream, of the [`seed`](Self::seed) or of
    /// one drawn for the iterable; [`worker_args`](Self::worker_args) are
    /// refused; and several [`shard`](Self::shard)s need a seed (each shard
    /// is built apart, so only a seed makes their streams the same).
    pub fn sharding(mut self, sharding: Sharding) -> Self {
        self.sharding = sharding;
        self
    }

    /// Resumes the run that `position` was taken of
    /// ([`Iterable::position`]): the iterable's next pass gives exactly the
    /// items that run would have given after the position (the same
    /// sequence in order, the same multiset unordered), and later passes
    /// go on counting from there. The plugin, generator, arguments, config,
    /// seed, encoding, number of workers, order, sharding and shard must be
    /// those of the run (a position names the plugin by the fingerprint of
    /// its contents, and the arguments and config by theirs); without a
    /// seed of its own the iterable takes the position's.
    ///
    /// `build` runs the passes before the position's in the workers
    /// without sending their items (as [`Iterable::skip_pass`]), so that
    /// what a plugin carries from pass to pass is as it was; the workers
    /// then produce and drop the items of that pass they had delivered,
    /// before they encode them for the caller. A plugin that is not
    /// deterministic for its arguments and seed (one that reads the clock
    /// or real random numbers) gets no such promise.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), sandgen::Error> {
    /// let plugin = sandgen::Engine::new()?.load("plugin.wasm")?;
    /// let first = plugin.generator("shuffled").seed(7).build()?;
    /// let mut pass = first.iter::<u64>()?;
    /// let head: Vec<u64> = pass.by_ref().take(3).collect::<Result<_, _>>()?;
    /// let saved = first.position().to_json(); // in pass 0, after 3 items
    /// drop(pass);
    ///
    /// let position = sandgen::Position::from_json(&saved)?;
    /// let again = plugin.generator("shuffled").resume(position).build()?;
    /// let tail: Vec<u64> = again.iter()?.collect::<Result<_, _>>()?; // pass 0, from item 3
    /// # let _ = (head, tail);
    /// # Ok(())
    /// # }
    /// ```
    pub fn resume(mut self, position: Position) -> Self {
        self.resume = Some(position);
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
    pub fn build(mut self) -> Result<Iterable, Error> {
        self.validate()?;
        let position = self.resume.take().map(Position::checked).transpose()?;
        if let Some(position) = &position {
            self.adopt_seed(position);
        }
        let workers = self.workers;
        let args = self.args_per_worker()?;
        let (shard, shards) = self.shard_numbers()?;
        let config = std::mem::replace(&mut self.config, Payload::None)
            .into_bytes("config", self.encoding)?;
        let drawn = position
            .as_ref()
            .and_then(|p| p.binding().drawn)
            .unwrap_or_else(drawn_seed);
        let binding = self.binding(&args, &config, drawn, (shard, shards));
        if let Some(position) = &position {
            self.check_position(position, &binding)?;
        }
        let output = self.output.clone().unwrap_or_else(stderr_handler);
        // One worker thread starts parked: its first steps run on the
        // caller's thread, when the caller waits for them (no hand-off
        // between threads before the first item). Several workers start
        // side by side on threads of their own.
        let park = self.isolation == Isolation::Thread && workers == 1;
        let mut handles = Vec::with_capacity(workers);
        let mut respawn = Vec::with_capacity(workers);
        for (index, args) in args.into_iter().enumerate() {
            // This worker among all the workers of all the shards.
            let global = shard * workers + index;
            let task = self.task(global, shards * workers, drawn, args, config.clone());
            let output = for_worker(&output, index);
            let placement = self
                .plugin
                .placement(self.isolation, &task)
                .map_err(|e| name_worker(e, index, workers))?;
            let handle = WorkerHandle::spawn(&placement, task.clone(), Arc::clone(&output), park)
                .map_err(|e| name_worker(e, index, workers))?;
            handles.push(handle);
            if self.on_failure != OnFailure::Stop {
                respawn.push(Respawn {
                    placement,
                    task,
                    output,
                });
            }
        }
        let setup = Setup {
            generator: self.generator,
            encoding: self.encoding,
            timeout: self.timeout,
            in_order: self.in_order,
            on_failure: self.on_failure,
            max_restarts: self.max_restarts,
            start_up: self.plugin.load_timeout(),
        };
        let workers = Workers::new(handles, setup).with_respawn(respawn);
        // Start-up (a worker process starts and reads its compiled
        // component) is sandgen's time, bounded by the load timeout; from
        // `Loaded` on, the inactivity timeout counts the plugin's own time.
        workers.await_initialized(self.plugin.load_timeout())?;
        let iterable = Iterable::new(workers, binding, self.plugin.source());
        if let Some(position) = &position {
            resume::replay(&iterable, position)?;
        }
        Ok(iterable)
    }

    /// What worker `global` of `all` (counted over every shard) runs: the
    /// iterable's grants plus its worker information and seeded random
    /// sources, and with items sharding the share of the stream it keeps.
    /// `drawn` is the iterable's own seed for items sharding without one.
    fn task(&self, global: usize, all: usize, drawn: u64, args: Vec<u8>, config: Vec<u8>) -> Task {
        let mut grants = self.grants.clone();
        let mut flow = self.flow;
        // Items sharding: every worker is the only one, and all produce one
        // stream (one random stream), of which each keeps its share.
        let (id, count, random) = match self.sharding {
            Sharding::Plugin => (global, all, self.seed.map(|seed| (seed, global as u32))),
            Sharding::Items => {
                if all > 1 {
                    // Worker `index` of shard `shard` keeps the items
                    // `index * shards + shard` (mod all): the shards take
                    // turns item by item, so a scheduler that takes one item
                    // from each shard in turn (DataLoader's workers) yields
                    // the stream in its order.
                    let (shard, index) = (global / self.workers, global % self.workers);
                    let shards = all / self.workers;
                    flow.keep = Some(Stride {
                        offset: (index * shards + shard) as u64,
                        step: all as u64,
                    });
                }
                (0, 1, Some((self.seed.unwrap_or(drawn), 0)))
            }
        };
        grants.env.push((WORKER_ENV[0].to_owned(), id.to_string()));
        grants
            .env
            .push((WORKER_ENV[1].to_owned(), count.to_string()));
        if let Some(seed) = self.seed {
            grants
                .env
                .push((WORKER_ENV[2].to_owned(), seed.to_string()));
        }
        grants.random = random.map(|(seed, worker)| SeededRandom { seed, worker });
        Task {
            generator: self.generator.clone(),
            encoding: self.encoding,
            args,
            config,
            grants,
            limits: self.limits.clone(),
            flow,
        }
    }
}

/// A seed drawn for one iterable (items sharding without a seed of the
/// caller's): from the standard library's randomly keyed hasher, which the
/// system's random source keys.
fn drawn_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// The most workers one iterable may run.
pub const MAX_WORKERS: usize = 256;

/// The longest generator name asked for (a longer one is refused at once).
const MAX_GENERATOR_NAME: usize = 1024;

/// The environment variables sandgen sets for each worker: its index, the
/// number of workers, and the seed when there is one.
const WORKER_ENV: [&str; 3] = ["SANDGEN_WORKER_ID", "SANDGEN_NUM_WORKERS", "SANDGEN_SEED"];
