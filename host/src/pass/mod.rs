//! Passes over an iterable's workers: [`Pass`] (decoded items),
//! [`RawPass`] (encoded items) and, through the iterable,
//! [`Batches`](crate::Batches) (whole batches) share one core (`core.rs`).

mod batch;
mod core;

use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::caller::Workers;
use crate::codec;
use crate::error::Error;
pub use crate::pass::batch::{Batch, BatchItems, NextBatch};
pub(crate) use crate::pass::core::PassCore;

/// What one worker has delivered to the caller in the current pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Items.
    pub items: u64,
    /// Bytes of encoded items.
    pub bytes: u64,
}

/// One pass over an [`Iterable`](crate::Iterable), yielding items decoded as `T`.
///
/// `next` blocks until a worker has produced the next item (or the
/// inactivity timeout passes). The iterator is fused: after the pass ends or
/// fails it yields `None`. Dropping it before the end stops the workers'
/// production at once.
pub struct Pass<'a, T> {
    core: PassCore<&'a Workers>,
    item: PhantomData<fn() -> T>,
}

impl<'a, T> Pass<'a, T> {
    pub(crate) fn start(workers: &'a Workers) -> Result<Self, Error> {
        Ok(Pass {
            core: PassCore::start(workers, true, false)?,
            item: PhantomData,
        })
    }
}

impl<T> std::fmt::Debug for Pass<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pass")
            .field("generator", &self.core.workers.generator())
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
        let encoding = self.core.workers.encoding();
        let item = match self.core.next_frame()? {
            Ok(bytes) => codec::decode_item(encoding, bytes),
            // The pass failed (and stopped) already.
            Err(error) => return Some(Err(error)),
        };
        if item.is_err() {
            // A failed decode ends the pass like any other error, its
            // position before the item.
            self.core.refuse_last();
        }
        Some(item)
    }
}

/// One pass over an [`Iterable`](crate::Iterable), yielding each item's encoded bytes.
///
/// [`next_item`](RawPass::next_item) lends the bytes without copying; the
/// [`Iterator`] implementation copies each into a `Vec<u8>`. Otherwise it
/// behaves as [`Pass`].
pub struct RawPass<'a> {
    core: PassCore<&'a Workers>,
}

impl<'a> RawPass<'a> {
    pub(crate) fn start(workers: &'a Workers) -> Result<Self, Error> {
        Ok(RawPass {
            core: PassCore::start(workers, true, false)?,
        })
    }

    /// The next item's encoded bytes, without copying them.
    pub fn next_item(&mut self) -> Option<Result<&[u8], Error>> {
        self.core.next_frame()
    }

    /// Ends the pass as failed at the item [`next_item`](Self::next_item)
    /// gave last, for a caller that cannot use it (it does not parse):
    /// the iterable's [`position`](crate::Iterable::position) is then
    /// before that item, as after the plugin's own error at it, and the
    /// workers stop producing.
    pub fn refuse_last(&mut self) {
        self.core.refuse_last();
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
            .field("generator", &self.core.workers.generator())
            .finish_non_exhaustive()
    }
}

impl Iterator for RawPass<'_> {
    type Item = Result<Vec<u8>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.next_item()?.map(<[u8]>::to_vec))
    }
}

#[cfg(test)]
mod tests;
