//! What an iterable's workers get, by concern: what the sandbox grants
//! ([`Grants`]), what it limits ([`Limits`]) and how items flow back
//! ([`Flow`]). Each travels only to where it is used: grants to the guest's
//! WASI context, limits to its store and the batch validator, flow to the
//! worker's production loop. The inactivity timeout is none of these: it
//! stays with the caller (`caller/`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};
use crate::text::{ECHO, cut_text};

/// The default cap on a guest's memory: 1 GiB.
pub const DEFAULT_MEMORY_LIMIT: u64 = 1024 * 1024 * 1024;
/// The default number of items a worker may run ahead of the caller.
pub const DEFAULT_BUFFER_SIZE: usize = 1024;
/// The default number of bytes a worker may run ahead of the caller (at
/// least one batch always fits).
pub const DEFAULT_BUFFER_BYTES: usize = 16 * 1024 * 1024;
/// The default largest item a plugin may return: 1 GiB.
pub const DEFAULT_MAX_ITEM_BYTES: u32 = 1 << 30;

/// What the sandbox grants the guest beyond nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Grants {
    /// Environment variables, in the order given.
    pub(crate) env: Vec<(String, String)>,
    /// Host directories, read-only.
    pub(crate) dirs: Vec<DirGrant>,
    /// Deterministic random sources instead of real ones.
    pub(crate) random: Option<SeededRandom>,
}

/// The random sources of one worker of a seeded iterable: streams derived
/// from the seed and the worker's index, the same on every machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SeededRandom {
    pub(crate) seed: u64,
    pub(crate) worker: u32,
}

/// The streams of a [`SeededRandom`], one per WASI random interface.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RandomStream {
    /// `wasi:random/random`.
    Random = 1,
    /// `wasi:random/insecure`.
    Insecure = 2,
    /// `wasi:random/insecure-seed`.
    InsecureSeed = 3,
}

impl SeededRandom {
    /// The 64-bit seed of `stream`: a hash of the tuple (seed, worker,
    /// stream), each part mixed in after the parts before it were mixed
    /// (SplitMix64's finalizer), so that no two tuples share a stream by
    /// arithmetic (worker 1's `random` is not worker 0's `insecure`, and
    /// seed 43 is not seed 42 one worker on).
    pub(crate) fn stream_seed(&self, stream: RandomStream) -> u64 {
        let mut hash = mix(self.seed ^ 0x5a4e_4447_454e_0001);
        hash = mix(hash.wrapping_add(u64::from(self.worker)) ^ 0x9e37_79b9_7f4a_7c15);
        mix(hash.wrapping_add(stream as u64) ^ 0xd1b5_4a32_d192_ed03)
    }
}

/// SplitMix64's finalizer: a bijection of u64 that spreads every input bit
/// over the output.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A host directory granted to the guest, read-only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DirGrant {
    pub(crate) host: PathBuf,
    pub(crate) guest: String,
}

/// What the guest may use up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Limits {
    /// Bytes of linear memory.
    pub(crate) memory: u64,
    /// Fuel units per pass (and for initialization), if metered.
    pub(crate) fuel: Option<u64>,
    /// The largest encoded item.
    pub(crate) max_item_bytes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: DEFAULT_MEMORY_LIMIT,
            fuel: None,
            max_item_bytes: DEFAULT_MAX_ITEM_BYTES,
        }
    }
}

/// How items flow back from a worker: how far it may run ahead of its
/// caller (the back-pressure), and which of its stream's items it keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Flow {
    pub(crate) buffer_size: usize,
    pub(crate) buffer_bytes: usize,
    /// With [`Sharding::Items`] and several workers: this worker's share of
    /// each pass's stream; `None`: every item.
    pub(crate) keep: Option<Stride>,
}

impl Default for Flow {
    fn default() -> Self {
        Flow {
            buffer_size: DEFAULT_BUFFER_SIZE,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            keep: None,
        }
    }
}

/// Items `offset`, `offset + step`, `offset + 2 * step`, ... of a pass's
/// stream (counted from 0 at the start of each pass).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stride {
    pub(crate) offset: u64,
    pub(crate) step: u64,
}

impl Stride {
    /// Whether the item at `index` of a pass is this worker's.
    pub(crate) fn keeps(&self, index: u64) -> bool {
        index % self.step == self.offset
    }
}

/// Who splits a stream among an iterable's workers (and among its shards,
/// [`IterableBuilder::shard`](crate::IterableBuilder::shard)).
///
/// Parses from and prints as `plugin` or `items`:
///
/// ```
/// use sandgen::Sharding;
///
/// assert_eq!("items".parse::<Sharding>().unwrap(), Sharding::Items);
/// assert_eq!(Sharding::default().to_string(), "plugin");
/// assert!("rows".parse::<Sharding>().is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Sharding {
    /// The plugin: each worker sees its index and the number of workers
    /// (`SANDGEN_WORKER_ID`, `SANDGEN_NUM_WORKERS`) and yields its own
    /// share; every item a worker yields is delivered.
    #[default]
    Plugin,
    /// The host: every worker runs as the only one (`SANDGEN_WORKER_ID` 0,
    /// `SANDGEN_NUM_WORKERS` 1) and produces the whole stream, and worker
    /// `i` of `n` keeps items `i`, `i + n`, `i + 2n`, ... of each pass,
    /// dropping the others before they leave it. Each item then comes
    /// exactly once whether or not the plugin shards itself, at the cost of
    /// every worker running the whole stream. The workers' random sources
    /// are one stream (of the seed, or of a seed drawn for the iterable),
    /// so that they all produce the same stream; a plugin whose stream
    /// depends on anything else that differs between workers (clocks, say)
    /// must not be sharded by items.
    Items,
}

impl Sharding {
    /// Every sharding mode, in the order the docs list them.
    pub const ALL: [Sharding; 2] = [Sharding::Plugin, Sharding::Items];
}

impl std::fmt::Display for Sharding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sharding::Plugin => "plugin",
            Sharding::Items => "items",
        })
    }
}

impl std::str::FromStr for Sharding {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Sharding::ALL
            .into_iter()
            .find(|mode| mode.to_string() == s)
            .ok_or_else(|| {
                let shown: String = s.chars().take(64).collect();
                invalid(format!(
                    "unknown sharding `{}`: use `plugin` or `items`",
                    crate::text::escape_text(shown.as_bytes())
                ))
            })
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, message)
}

impl Grants {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        for dir in &self.dirs {
            if !dir.host.is_dir() {
                return Err(invalid(format!(
                    "cannot grant directory `{}`: it is not a directory on the host",
                    cut_text(&dir.host.display().to_string(), ECHO)
                )));
            }
        }
        Ok(())
    }
}

impl Limits {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.fuel == Some(0) {
            return Err(invalid("fuel must be at least 1"));
        }
        Ok(())
    }
}

impl Flow {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.buffer_size == 0 {
            return Err(invalid("buffer size must be at least 1 item"));
        }
        if self.buffer_bytes == 0 {
            return Err(invalid("buffer bytes must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_worker_and_stream_has_a_stream_of_its_own() {
        // Neighbouring seeds, workers and streams are where an arithmetic
        // derivation collides (seed + worker + stream).
        let mut seen = std::collections::HashMap::new();
        for seed in (0..64).chain([u64::MAX - 1, u64::MAX]) {
            for worker in 0..16 {
                for stream in [
                    RandomStream::Random,
                    RandomStream::Insecure,
                    RandomStream::InsecureSeed,
                ] {
                    let value = SeededRandom { seed, worker }.stream_seed(stream);
                    if let Some(other) = seen.insert(value, (seed, worker, stream as u8)) {
                        panic!(
                            "{other:?} and {:?} share a stream",
                            (seed, worker, stream as u8)
                        );
                    }
                }
            }
        }
    }
}
