//! Positions in a run (design section 14): where an iterable stands, to
//! resume it exactly, and what the position belongs to.

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};

/// The version of the position format this sandgen writes and reads.
pub const POSITION_FORMAT: u32 = 1;

/// Where a run stands, to resume it exactly: the pass it is in, the items
/// each worker delivered in that pass, and what it belongs to (the plugin's
/// content, the generator, its arguments and config, the seed, the number
/// of workers, the order and the sharding).
///
/// Take one with [`Iterable::position`](crate::Iterable::position) between
/// items (during a pass or between passes), keep it (it is `serde`: JSON
/// with [`to_json`](Position::to_json)), and give it to
/// [`IterableBuilder::resume`](crate::IterableBuilder::resume) to get
/// exactly the items an uninterrupted run would have given from there on:
/// the same sequence in order, the same multiset unordered. Resuming with a
/// different plugin, generator, arguments, config, seed, number of workers,
/// order or sharding is an [`ErrorKind::InvalidInput`] error naming what
/// differs.
///
/// ```
/// let text = r#"{"format": 99, "pass": 0}"#;
/// let error = sandgen::Position::from_json(text).unwrap_err();
/// assert_eq!(error.kind(), sandgen::ErrorKind::InvalidInput);
/// assert!(error.to_string().contains("newer sandgen"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    /// [`POSITION_FORMAT`] when it was written.
    format: u32,
    /// Passes begun before the one it is in (0: the first pass).
    pass: u64,
    /// Items each worker delivered in that pass, by worker index.
    delivered: Vec<u64>,
    /// In order, the worker whose item comes next.
    next_worker: usize,
    /// What the position belongs to.
    binding: Binding,
    /// A checksum of the rest (hex), so that an edited position is refused.
    check: String,
}

/// What a position belongs to: everything that decides the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Binding {
    /// The plugin's content: `xxh3-128:<hash>:<length>`.
    pub(crate) plugin: String,
    pub(crate) generator: String,
    /// `json` or `bincode`: the encoding of arguments, config and items.
    pub(crate) encoding: String,
    /// XXH3-128 of each worker's arguments (hex).
    pub(crate) args: String,
    /// XXH3-128 of the config (hex).
    pub(crate) config: String,
    /// The caller's seed.
    pub(crate) seed: Option<u64>,
    /// The seed the iterable drew for items sharding without the caller's.
    pub(crate) drawn: Option<u64>,
    pub(crate) workers: usize,
    pub(crate) in_order: bool,
    /// `plugin` or `items`.
    pub(crate) sharding: String,
    /// This iterable's shard and the number of shards.
    pub(crate) shard: (usize, usize),
}

impl Binding {
    /// The first field in which `other` (this iterable's) differs from
    /// `self` (the position's): its name, and what to do.
    pub(crate) fn difference(&self, other: &Binding) -> Option<String> {
        let show = |what: &str, saved: String, now: String, fix: &str| {
            Some(format!(
                "the position was saved with {what} {saved}, this iterable has {now}; {fix}"
            ))
        };
        if self.plugin != other.plugin {
            return show(
                "another plugin:",
                self.plugin.clone(),
                other.plugin.clone(),
                "load the plugin it was saved with",
            );
        }
        if self.generator != other.generator {
            return show(
                "generator",
                format!("{:?}", crate::text::cut_text(&self.generator, 64)),
                format!("{:?}", crate::text::cut_text(&other.generator, 64)),
                "resume the same generator",
            );
        }
        if self.encoding != other.encoding {
            let fix = "resume with the same encoding";
            return show(
                "encoding",
                self.encoding.clone(),
                other.encoding.clone(),
                fix,
            );
        }
        // Before the arguments: each worker has its own.
        if self.workers != other.workers {
            let fix = "resume with the same number of workers";
            return show(
                "workers:",
                self.workers.to_string(),
                other.workers.to_string(),
                fix,
            );
        }
        if self.args != other.args {
            return Some(
                "the position was saved with other args; resume with the same args".into(),
            );
        }
        if self.config != other.config {
            return Some(
                "the position was saved with another config; resume with the same config".into(),
            );
        }
        if self.seed != other.seed {
            let seed =
                |s: Option<u64>| s.map_or_else(|| "no seed".to_owned(), |s| format!("seed {s}"));
            return Some(format!(
                "the position was saved with {}, this iterable has {}; resume with the same seed",
                seed(self.seed),
                seed(other.seed)
            ));
        }
        if self.in_order != other.in_order {
            let order = |o: bool| if o { "in order" } else { "unordered" }.to_owned();
            return show(
                "items",
                order(self.in_order),
                order(other.in_order),
                "resume in the same order",
            );
        }
        if self.sharding != other.sharding {
            let fix = "resume with the same sharding";
            return show(
                "sharding",
                self.sharding.clone(),
                other.sharding.clone(),
                fix,
            );
        }
        if self.shard != other.shard {
            let ((i, n), (j, m)) = (self.shard, other.shard);
            return Some(format!(
                "the position was saved as shard {i} of {n}, this iterable is shard {j} of {m}; \
                 resume the same shard"
            ));
        }
        None
    }
}

impl Position {
    pub(crate) fn new(
        pass: u64,
        delivered: Vec<u64>,
        next_worker: usize,
        binding: Binding,
    ) -> Position {
        let mut position = Position {
            format: POSITION_FORMAT,
            pass,
            delivered,
            next_worker,
            binding,
            check: String::new(),
        };
        position.check = position.checksum();
        position
    }

    /// Passes begun before the pass the position is in: `0` in the first
    /// pass (and before it), `k` in pass `k` (counted from 0), whether pass
    /// `k` has begun or not.
    pub fn pass(&self) -> u64 {
        self.pass
    }

    /// Items each worker delivered in that pass, by worker index: all zero
    /// between passes.
    pub fn delivered(&self) -> &[u64] {
        &self.delivered
    }

    /// The seed the run was given (`None`: none), which a resumed iterable
    /// without a seed of its own takes.
    pub fn seed(&self) -> Option<u64> {
        self.binding.seed
    }

    /// Items delivered in that pass, by every worker.
    pub fn items(&self) -> u64 {
        self.delivered
            .iter()
            .fold(0, |all, &n| all.saturating_add(n))
    }

    /// The position as JSON (one line).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a position is plain data")
    }

    /// A position written by [`to_json`](Position::to_json), checked: its
    /// format and its checksum.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] when it is not a position (cut short, not
    /// JSON), comes from a newer sandgen, or was edited.
    pub fn from_json(text: &str) -> Result<Position, Error> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| invalid(format!("it is not JSON ({e}): is the file cut short?")))?;
        let format = value.get("format").and_then(serde_json::Value::as_u64);
        match format {
            Some(f) if f > u64::from(POSITION_FORMAT) => {
                return Err(invalid(format!(
                    "it was saved by a newer sandgen (position format {f}; this sandgen reads \
                     format {POSITION_FORMAT}): resume with that sandgen or a newer one"
                )));
            }
            Some(_) => {}
            None => {
                return Err(invalid(
                    "it has no position format: is it a sandgen position?".into(),
                ));
            }
        }
        let position: Position = serde_json::from_value(value)
            .map_err(|e| invalid(format!("it is not a position of this sandgen: {e}")))?;
        position.checked()
    }

    /// The position if it is whole: its checksum matches, and its parts
    /// agree with each other.
    pub(crate) fn checked(self) -> Result<Position, Error> {
        if self.format > POSITION_FORMAT {
            return Err(invalid(format!(
                "it was saved by a newer sandgen (position format {}; this sandgen reads \
                 format {POSITION_FORMAT}): resume with that sandgen or a newer one",
                self.format
            )));
        }
        if self.check != self.checksum() {
            return Err(invalid(
                "its checksum does not match: it was edited or damaged; resume from a position \
                 as sandgen saved it"
                    .into(),
            ));
        }
        let workers = self.binding.workers;
        if self.delivered.len() != workers || (workers > 0 && self.next_worker >= workers) {
            return Err(invalid(format!(
                "its parts disagree (the items of {} workers in a run of {workers}, next worker \
                 {}): it was not saved by sandgen",
                self.delivered.len(),
                self.next_worker
            )));
        }
        Ok(self)
    }

    pub(crate) fn binding(&self) -> &Binding {
        &self.binding
    }

    pub(crate) fn next_worker(&self) -> usize {
        self.next_worker
    }

    /// XXH3-64 of every other field, in hex.
    fn checksum(&self) -> String {
        let mut unchecked = self.clone();
        unchecked.check.clear();
        let bytes = serde_json::to_vec(&unchecked).expect("a position is plain data");
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes))
    }
}

fn invalid(why: String) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!("cannot read the position: {why}"),
    )
}

/// XXH3-128 of `parts` (each length-prefixed), in hex: how a position
/// names arguments and config without keeping them.
pub(crate) fn digest<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    format!("{:032x}", hasher.digest128())
}

#[cfg(test)]
mod tests;
