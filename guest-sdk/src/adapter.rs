//! The glue between [`Generator`]s and the generated WIT bindings.

use std::cell::{Cell, RefCell};
use std::fmt::Display;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::bindings::exports::sandgen::generator::generator as wit;
use crate::bindings::exports::sandgen::generator::resume;
use crate::{Encoding, Error, Generator, IntoItem};

/// How long a batch may take before it is returned.
const BATCH_TIME: Duration = Duration::from_millis(1);

thread_local! {
    /// The encoding chosen by `initialize`; `None` until it was called.
    static ENCODING: Cell<Option<Encoding>> = const { Cell::new(None) };
}

/// The generators (and initializer) of one plugin; implemented by
/// [`export_plugin!`](crate::export_plugin).
pub trait Registry: 'static {
    /// Every generator of the plugin.
    const GENERATORS: &'static [Entry];

    /// Runs the plugin's initializer, if any.
    ///
    /// # Errors
    ///
    /// When the initializer fails or the config cannot be decoded.
    fn initialize(encoding: Encoding, config: &[u8]) -> Result<(), Error>;
}

/// One generator in a [`Registry`].
#[derive(Debug)]
pub struct Entry {
    name: &'static str,
    description: &'static str,
    create: CreateFn,
}

/// Decodes arguments and creates a generator's iterable.
type CreateFn = fn(Encoding, &[u8]) -> Result<Box<dyn ErasedIterable>, Error>;

impl Entry {
    /// The entry for generator `G`.
    pub const fn of<G: Generator>() -> Entry {
        Entry {
            name: G::NAME,
            description: G::DESCRIPTION,
            create: create::<G>,
        }
    }
}

/// Decodes the config and runs `init` with it.
///
/// # Errors
///
/// When the config cannot be decoded or `init` fails.
pub fn run_initializer<C: DeserializeOwned, E: Display>(
    encoding: Encoding,
    config: &[u8],
    init: impl FnOnce(C) -> Result<(), E>,
) -> Result<(), Error> {
    let config = encoding
        .decode_args(config)
        .map_err(|e| Error::msg(format!("invalid config: {e}")))?;
    init(config).map_err(Error::msg)
}

/// The initializer of a plugin that has none: accepts only an empty config.
///
/// # Errors
///
/// When a config was given.
pub fn no_initializer(_encoding: Encoding, config: &[u8]) -> Result<(), Error> {
    if config.is_empty() {
        Ok(())
    } else {
        Err(Error::msg(
            "this plugin has no initializer and takes no config, but a config was given",
        ))
    }
}

fn create<G: Generator>(encoding: Encoding, args: &[u8]) -> Result<Box<dyn ErasedIterable>, Error> {
    create_with::<G>(encoding, args, BATCH_TIME)
}

/// [`create`], with the time a batch may take (the unit tests use none, so
/// that their batches do not depend on the machine's speed).
fn create_with<G: Generator>(
    encoding: Encoding,
    args: &[u8],
    batch_time: Duration,
) -> Result<Box<dyn ErasedIterable>, Error> {
    let args = encoding
        .decode_args(args)
        .map_err(|e| Error::msg(format!("invalid arguments for generator {}: {e}", G::NAME)))?;
    let generator = G::create(args)?;
    Ok(Box::new(IterableState {
        generator,
        encoding,
        batch_time,
    }))
}

/// A created generator, with its type erased.
pub trait ErasedIterable {
    /// Starts a pass.
    fn iter(&mut self) -> Result<Box<dyn ErasedPass>, Error>;

    /// Runs `count` passes without producing their items, if it can.
    fn skip_passes(&mut self, count: u64) -> Result<bool, Error>;
}

/// One pass, with its type erased.
pub trait ErasedPass {
    /// Returns the next batch of frames (empty when the pass is over).
    fn next_batch(&mut self, max_items: u32, max_bytes: u32) -> Result<Vec<u8>, Error>;

    /// Drops up to `count` items, for about the time a batch may take:
    /// how many (0 once the pass is over).
    fn skip(&mut self, count: u64) -> Result<u64, Error>;
}

struct IterableState<G> {
    generator: G,
    encoding: Encoding,
    batch_time: Duration,
}

impl<G: Generator> ErasedIterable for IterableState<G> {
    fn iter(&mut self) -> Result<Box<dyn ErasedPass>, Error> {
        Ok(Box::new(Pass::<G> {
            iter: self.generator.iter()?,
            encoding: self.encoding,
            state: PassState::Running,
            capacity_hint: 256,
            batch_time: self.batch_time,
        }))
    }

    fn skip_passes(&mut self, count: u64) -> Result<bool, Error> {
        self.generator.skip_passes(count)
    }
}

enum PassState {
    Running,
    /// The iterator failed after items that still had to be returned.
    Failed(Error),
    Finished,
    Dead,
}

struct Pass<G: Generator> {
    iter: G::Iter,
    encoding: Encoding,
    state: PassState,
    /// The size of the previous batch: the next one likely needs as much.
    capacity_hint: usize,
    /// How long a batch may take before it is returned.
    batch_time: Duration,
}

impl<G: Generator> ErasedPass for Pass<G> {
    fn next_batch(&mut self, max_items: u32, max_bytes: u32) -> Result<Vec<u8>, Error> {
        match std::mem::replace(&mut self.state, PassState::Dead) {
            PassState::Running => {}
            PassState::Failed(error) => return Err(error),
            PassState::Finished => {
                self.state = PassState::Finished;
                return Ok(Vec::new());
            }
            PassState::Dead => {
                return Err(Error::msg("the pass already failed; its iterator is dead"));
            }
        }
        if max_items == 0 {
            return Err(Error::msg(
                "`next` was called with max-items 0; it must be at least 1",
            ));
        }
        let mut buf = Vec::with_capacity(self.capacity_hint);
        let mut count = 0u32;
        self.state = PassState::Running;
        let started = Instant::now();
        while count < max_items && buf.len() < max_bytes as usize {
            // Close the batch after about BATCH_TIME, so that a slow
            // generator's items are not held back. The clock is read after
            // 1, 2, 4, 8, ... items: a handful of reads per batch.
            if count.is_power_of_two() && started.elapsed() >= self.batch_time {
                break;
            }
            let Some(next) = self.iter.next() else {
                self.state = PassState::Finished;
                break;
            };
            let start = buf.len();
            match next
                .into_item()
                .and_then(|item| self.encode_frame(&item, &mut buf))
            {
                Ok(()) => count += 1,
                Err(error) => {
                    buf.truncate(start);
                    if count == 0 {
                        self.state = PassState::Dead;
                        return Err(error);
                    }
                    self.state = PassState::Failed(error);
                    break;
                }
            }
        }
        self.capacity_hint = buf.len().max(64);
        Ok(buf)
    }

    fn skip(&mut self, count: u64) -> Result<u64, Error> {
        self.skip_items(count)
    }
}

impl<G: Generator> Pass<G> {
    /// [`ErasedPass::skip`]: the generator's skip, from where the pass is,
    /// in steps of 1, 2, 4, ... items until `count` or until it took
    /// [`BATCH_TIME`] (a slow generator answers promptly).
    fn skip_items(&mut self, count: u64) -> Result<u64, Error> {
        match std::mem::replace(&mut self.state, PassState::Dead) {
            PassState::Running => {}
            PassState::Failed(error) => return Err(error),
            PassState::Finished => {
                self.state = PassState::Finished;
                return Ok(0);
            }
            PassState::Dead => {
                return Err(Error::msg("the pass already failed; its iterator is dead"));
            }
        }
        self.state = PassState::Running;
        let started = Instant::now();
        let (mut dropped, mut step) = (0u64, 1u64);
        while dropped < count {
            let take = step.min(count - dropped);
            if !G::skip(&mut self.iter, take) {
                // Some of `take` were dropped; the next call says it ended.
                self.state = PassState::Finished;
                break;
            }
            dropped += take;
            step = step.saturating_mul(2);
            if started.elapsed() >= self.batch_time {
                break;
            }
        }
        Ok(dropped)
    }

    /// Appends one frame: a 4-byte little-endian length, then the item.
    fn encode_frame(&self, item: &G::Item, buf: &mut Vec<u8>) -> Result<(), Error> {
        sandgen_wire::frame::push(buf, |buf| {
            self.encoding.encode_into(item, buf).map_err(|e| {
                Error::msg(
                    e.message()
                        .replacen("cannot encode", "cannot encode an item", 1),
                )
            })
        })
    }
}

/// The `iterable` resource of the WIT contract.
pub struct IterableImpl {
    inner: RefCell<Box<dyn ErasedIterable>>,
}

/// The `iterator` resource of the WIT contract.
pub struct IteratorImpl {
    inner: RefCell<Box<dyn ErasedPass>>,
}

impl std::fmt::Debug for IterableImpl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IterableImpl").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for IteratorImpl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IteratorImpl").finish_non_exhaustive()
    }
}

impl wit::GuestIterable for IterableImpl {
    fn iter(&self) -> Result<wit::Iterator, String> {
        let pass = self
            .inner
            .borrow_mut()
            .iter()
            .map_err(Error::into_message)?;
        Ok(wit::Iterator::new(IteratorImpl {
            inner: RefCell::new(pass),
        }))
    }
}

impl wit::GuestIterator for IteratorImpl {
    fn next(&self, max_items: u32, max_bytes: u32) -> Result<Vec<u8>, String> {
        self.inner
            .borrow_mut()
            .next_batch(max_items, max_bytes)
            .map_err(Error::into_message)
    }
}

impl<R: Registry> resume::Guest for R {
    fn skip(it: wit::IteratorBorrow<'_>, count: u64) -> Result<u64, String> {
        it.get::<IteratorImpl>()
            .inner
            .borrow_mut()
            .skip(count)
            .map_err(Error::into_message)
    }

    fn skip_passes(it: wit::IterableBorrow<'_>, count: u64) -> Result<bool, String> {
        it.get::<IterableImpl>()
            .inner
            .borrow_mut()
            .skip_passes(count)
            .map_err(Error::into_message)
    }
}

impl<R: Registry> wit::Guest for R {
    type Iterable = IterableImpl;
    type Iterator = IteratorImpl;

    fn generators() -> Vec<wit::GeneratorInfo> {
        R::GENERATORS
            .iter()
            .map(|entry| wit::GeneratorInfo {
                name: entry.name.to_owned(),
                description: entry.description.to_owned(),
            })
            .collect()
    }

    fn initialize(encoding: wit::Encoding, config: Vec<u8>) -> Result<(), String> {
        let encoding = match encoding {
            wit::Encoding::Bincode => Encoding::Bincode,
            wit::Encoding::Json => Encoding::Json,
        };
        if ENCODING.get().is_some() {
            return Err("`initialize` was called twice; it runs once per instance".to_owned());
        }
        ENCODING.set(Some(encoding));
        R::initialize(encoding, &config).map_err(Error::into_message)
    }

    fn create(name: String, args: Vec<u8>) -> Result<wit::Iterable, String> {
        let Some(encoding) = ENCODING.get() else {
            return Err("`create` was called before `initialize`".to_owned());
        };
        let Some(entry) = R::GENERATORS.iter().find(|entry| entry.name == name) else {
            let known: Vec<&str> = R::GENERATORS.iter().map(|entry| entry.name).collect();
            return Err(format!(
                "this plugin has no generator named `{name}`; it has: {}",
                known.join(", ")
            ));
        };
        let iterable = (entry.create)(encoding, &args).map_err(Error::into_message)?;
        Ok(wit::Iterable::new(IterableImpl {
            inner: RefCell::new(iterable),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter {
        n: u32,
        fail_at: Option<u32>,
        passes: u32,
    }

    impl Generator for Counter {
        const NAME: &'static str = "counter";
        const DESCRIPTION: &'static str = "yields 0..n, failing at fail_at";
        type Args = (u32, Option<u32>);
        type Item = u32;
        type Iter = Box<dyn Iterator<Item = Result<u32, String>>>;

        fn create((n, fail_at): Self::Args) -> Result<Self, Error> {
            if n > 1000 {
                return Err(Error::msg("n is too large"));
            }
            Ok(Counter {
                n,
                fail_at,
                passes: 0,
            })
        }

        fn iter(&mut self) -> Result<Self::Iter, Error> {
            self.passes += 1;
            let fail_at = self.fail_at;
            Ok(Box::new((0..self.n).map(move |i| {
                if Some(i) == fail_at {
                    Err(format!("boom at {i}"))
                } else {
                    Ok(i)
                }
            })))
        }
    }

    fn frames(buf: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut rest = buf;
        while !rest.is_empty() {
            let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            out.push(&rest[4..4 + len]);
            rest = &rest[4 + len..];
        }
        out
    }

    /// A counter whose batches close only on max-items and max-bytes.
    fn iterable(encoding: Encoding, args: &[u8]) -> Box<dyn ErasedIterable> {
        create_with::<Counter>(encoding, args, Duration::MAX).unwrap()
    }

    #[test]
    fn batches_honour_max_items() {
        let mut it = iterable(Encoding::Json, b"[5, null]");
        let mut pass = it.iter().unwrap();
        let b = pass.next_batch(2, u32::MAX).unwrap();
        assert_eq!(frames(&b), [b"0", b"1"]);
        let b = pass.next_batch(10, u32::MAX).unwrap();
        assert_eq!(frames(&b), [b"2", b"3", b"4"]);
        assert!(pass.next_batch(10, u32::MAX).unwrap().is_empty());
        assert!(pass.next_batch(10, u32::MAX).unwrap().is_empty());
    }

    #[test]
    fn batches_honour_max_bytes() {
        let mut it = iterable(Encoding::Json, b"[5, null]");
        let mut pass = it.iter().unwrap();
        // Each frame is 5 bytes: no item is added once 6 bytes are reached.
        let b = pass.next_batch(100, 6).unwrap();
        assert_eq!(frames(&b), [b"0", b"1"]);
        // An item larger than max-bytes still comes, alone.
        let b = pass.next_batch(100, 1).unwrap();
        assert_eq!(frames(&b), [b"2"]);
    }

    #[test]
    fn error_after_partial_batch_comes_on_the_next_call() {
        let mut it = iterable(Encoding::Json, b"[5, 3]");
        let mut pass = it.iter().unwrap();
        let b = pass.next_batch(100, u32::MAX).unwrap();
        assert_eq!(frames(&b), [b"0", b"1", b"2"]);
        assert_eq!(
            pass.next_batch(100, u32::MAX).unwrap_err().message(),
            "boom at 3"
        );
        assert_eq!(
            pass.next_batch(100, u32::MAX).unwrap_err().message(),
            "the pass already failed; its iterator is dead"
        );
    }

    #[test]
    fn error_first_comes_at_once() {
        let mut it = iterable(Encoding::Json, b"[5, 0]");
        let mut pass = it.iter().unwrap();
        assert_eq!(
            pass.next_batch(100, u32::MAX).unwrap_err().message(),
            "boom at 0"
        );
    }

    #[test]
    fn skip_drops_items_unwritten_and_says_how_many() {
        let mut it = iterable(Encoding::Json, b"[10, null]");
        let mut pass = it.iter().unwrap();
        assert_eq!(pass.skip(4).unwrap(), 4);
        let b = pass.next_batch(2, u32::MAX).unwrap();
        assert_eq!(frames(&b), [b"4", b"5"]);
        // Past the end: the items there were, then 0 (the pass is over).
        assert!(pass.skip(100).unwrap() <= 4);
        assert_eq!(pass.skip(1).unwrap(), 0);
        assert!(pass.next_batch(10, u32::MAX).unwrap().is_empty());
        // No more than asked for, up to the last item.
        let mut pass = it.iter().unwrap();
        assert_eq!(pass.skip(9).unwrap(), 9);
        assert_eq!(frames(&pass.next_batch(10, u32::MAX).unwrap()), [b"9"]);
    }

    #[test]
    fn skip_of_a_failed_pass_fails_as_next_does() {
        let mut it = iterable(Encoding::Json, b"[5, 3]");
        let mut pass = it.iter().unwrap();
        // `nth` does not look at the items: the error at 3 is dropped too.
        assert_eq!(pass.skip(4).unwrap(), 4);
        assert_eq!(frames(&pass.next_batch(10, u32::MAX).unwrap()), [b"4"]);
        let mut pass = it.iter().unwrap();
        let b = pass.next_batch(100, u32::MAX).unwrap();
        assert_eq!(frames(&b), [b"0", b"1", b"2"]);
        assert_eq!(pass.skip(1).unwrap_err().message(), "boom at 3");
        assert_eq!(
            pass.skip(1).unwrap_err().message(),
            "the pass already failed; its iterator is dead"
        );
    }

    #[test]
    fn skip_passes_is_declined_unless_the_generator_can() {
        let mut it = iterable(Encoding::Json, b"[3, null]");
        assert!(!it.skip_passes(2).unwrap());
    }

    #[test]
    fn bincode_items_and_args() {
        let args = bincode::serde::encode_to_vec((3u32, None::<u32>), bincode::config::standard())
            .unwrap();
        let mut it = iterable(Encoding::Bincode, &args);
        let b = it.iter().unwrap().next_batch(100, u32::MAX).unwrap();
        assert_eq!(frames(&b), [[0u8].as_slice(), &[1], &[2]]);
    }

    #[test]
    fn create_errors_keep_the_message() {
        let err = create::<Counter>(Encoding::Json, b"[5000, null]")
            .err()
            .unwrap();
        assert_eq!(err.message(), "n is too large");
        let err = create::<Counter>(Encoding::Json, b"{").err().unwrap();
        assert!(
            err.message()
                .starts_with("invalid arguments for generator counter: invalid JSON: "),
            "{}",
            err.message()
        );
    }

    #[test]
    fn state_lives_across_passes() {
        let mut state = IterableState {
            generator: Counter::create((2, None)).unwrap(),
            encoding: Encoding::Json,
            batch_time: Duration::MAX,
        };
        for _ in 0..3 {
            let mut pass = state.iter().unwrap();
            assert_eq!(
                frames(&pass.next_batch(10, u32::MAX).unwrap()),
                [b"0", b"1"]
            );
        }
        assert_eq!(state.generator.passes, 3);
    }

    #[test]
    fn max_items_zero_is_refused() {
        let mut it = iterable(Encoding::Json, b"[5, null]");
        assert!(it.iter().unwrap().next_batch(0, 100).is_err());
    }
}
